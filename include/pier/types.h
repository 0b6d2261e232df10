/* Basic vocabulary shared by pier's SDK and its core: session ids and
 * disconnect reasons. Part of the plugin ABI: values only ever get added. */
#ifndef PIER_TYPES_H
#define PIER_TYPES_H

#include <stdint.h>

/* A session id: worker (8 bits), generation (24 bits), slot (32 bits). Zero is
 * never a valid id. A slot's generation advances each time the slot is handed
 * out, and a worker hands out the slot that has been free longest (first in,
 * first out), so an id repeats only after 2^24 x F sessions on that worker,
 * where F is the number of its free slots (max_sessions less those open):
 * with 1000 free slots, 16.7 billion sessions. */
typedef uint64_t pier_sid;

#define PIER_SID_WORKER(sid) ((unsigned)((sid) >> 56))
#define PIER_SID_GEN(sid) ((uint32_t)(((sid) >> 32) & 0xffffffu))
#define PIER_SID_SLOT(sid) ((uint32_t)((sid)&0xffffffffu))
#define PIER_SID_MAKE(worker, gen, slot) \
  (((uint64_t)(worker) << 56) | ((uint64_t)((gen)&0xffffffu) << 32) | (uint64_t)(uint32_t)(slot))

/* Why a session ended; each has a human-readable text (pier_reason_text). */
#define PIER_REASON_MAP(XX)                                              \
  XX(NONE, 0, "none")                                                    \
  XX(PEER_CLOSED, 1, "peer closed the connection")                       \
  XX(PEER_RESET, 2, "connection reset by peer")                          \
  XX(IO_ERROR, 3, "socket error")                                        \
  XX(CLOSED, 4, "closed by the server")                                  \
  XX(KICKED, 5, "kicked by an operator")                                 \
  XX(SEND_QUEUE_FULL, 6, "send queue over max_send_queue (peer not reading)") \
  XX(PACKET_TOO_SMALL, 7, "packet size below the 4-byte header")         \
  XX(PACKET_TOO_LARGE, 8, "packet size above max_packet_size")           \
  XX(IDLE_TIMEOUT, 9, "idle timeout")                                    \
  XX(SHUTDOWN, 10, "server shutting down")                               \
  XX(NO_MEMORY, 11, "out of memory")                                     \
  XX(FLUSH_TIMEOUT, 12, "pending data not sent before the close deadline") \
  XX(PLUGIN_ERROR, 13, "plugin failed")                                  \
  XX(PACKET_TIMEOUT, 14, "partial packet not completed within packet_timeout_ms") \
  XX(SEND_TIMEOUT, 15, "no send progress within send_timeout_ms (peer not reading)") \
  XX(PROTOCOL_ERROR, 16, "protocol error from the client")               \
  XX(INVALID_TEXT, 17, "invalid UTF-8 in a text message")                \
  XX(PING_TIMEOUT, 18, "no answer to keepalive ping")                    \
  XX(TLS_ERROR, 19, "TLS error")                                         \
  XX(HANDSHAKE_FAILED, 20, "handshake failed")                           \
  XX(HANDSHAKE_TIMEOUT, 21, "handshake not completed within handshake_timeout_ms")

typedef enum pier_reason {
#define XX(name, value, text) PIER_REASON_##name = value,
  PIER_REASON_MAP(XX)
#undef XX
} pier_reason;

#endif
