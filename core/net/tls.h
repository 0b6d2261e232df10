/* TLS for a listener's sessions, on OpenSSL 3 and no socket of its own: the
 * session hands it the bytes that arrived (ciphertext) and gets plaintext
 * back through a callback; what TLS has to send (handshake, records,
 * alerts, close_notify) comes out through another callback, which the
 * session appends to its send queue. The I/O stays on the completion core
 * (io_uring, epoll, IOCP). A custom BIO reads straight from the bytes being
 * fed and writes straight into the output callback, so an idle connection
 * keeps no BIO buffers (and SSL_MODE_RELEASE_BUFFERS frees OpenSSL's own).
 *
 * TLS 1.2 is the minimum; the certificate chain and key come from PEM files
 * and can be re-read (a rotation) while sessions stay connected: sessions
 * made before keep the context they started with. */
#ifndef PIER_NET_TLS_H
#define PIER_NET_TLS_H

#include <stddef.h>
#include "os/os.h" /* struct iovec */

typedef struct tls_server tls_server;
typedef struct tls_conn tls_conn;

/* Loads cert (a PEM chain, leaf first) and key (PEM) into a new server
 * context. On failure returns a negative errno (e.g. -ENOENT, -EACCES, -EINVAL)
 * and writes one line into err naming the file and what is wrong, e.g.
 * `cannot load certificate "x.pem": no start line` or
 * `key "k.pem" does not match certificate "c.pem"`. */
int tls_server_new(const char *cert, const char *key, tls_server **out, char *err, size_t errlen);
/* Any thread. Re-reads cert and key; on success new connections use them,
 * on failure (same errors as tls_server_new) nothing changes. */
int tls_server_reload(tls_server *t, const char *cert, const char *key, char *err,
                      size_t errlen);
/* After every tls_conn made from it is freed. */
void tls_server_free(tls_server *t);
/* Only checks that cert and key load and match (the --check path). */
int tls_check_files(const char *cert, const char *key, char *err, size_t errlen);

/* Where a connection's output goes and its plaintext comes out. Both
 * return 0, or non-zero to stop (the session is closing); wire may be called
 * from every tls_conn_* call. */
typedef struct tls_io {
  int (*wire)(void *ctx, const char *data, size_t len);  /* bytes to send */
  int (*plain)(void *ctx, const char *data, size_t len); /* decrypted input */
  void *ctx;
} tls_io;

/* A server-side connection on t's current context; NULL on ENOMEM. Any
 * thread (the one that then uses it alone). */
tls_conn *tls_conn_new(tls_server *t);
void tls_conn_free(tls_conn *c);

/* Feeds received bytes: runs the handshake, then delivers plaintext through
 * io->plain, in order, as records complete. Returns 0 (more input wanted
 * or all delivered), 1 when io->plain or io->wire asked to stop (after a
 * stop from plain the rest of the input is dropped and later feeds return
 * 1, but tls_conn_write and tls_conn_shutdown still work: a closing
 * session sends its last bytes; after one from wire every call returns 1), or
 * -EPROTO when the peer broke the protocol or the handshake failed (an
 * alert may have gone out through io->wire; the connection is unusable):
 * then tls_conn_error() says why. After the peer's close_notify returns
 * -ESHUTDOWN (a clean end). */
int tls_conn_feed(tls_conn *c, const char *data, size_t len, const tls_io *io);
/* Whether the handshake has completed. */
int tls_conn_ready(const tls_conn *c);
/* Whether part of a record (or decrypted data not yet delivered) is held:
 * the peer has started something it has not finished. */
int tls_conn_partial(const tls_conn *c);
/* Bytes of a record received in part (its header included), 0 between
 * records: what a peer that stopped mid-record holds. */
size_t tls_conn_held(const tls_conn *c);
/* Encrypts the plaintext in iov[0..n) (after the handshake only), in
 * records of up to 16 KiB, coalescing small pieces; the records go out
 * through io->wire. Returns 0, 1 (wire asked to stop), or -EPROTO. */
int tls_conn_write(tls_conn *c, const struct iovec *iov, int n, const tls_io *io);
/* Sends close_notify through io->wire (once; later calls do nothing).
 * Returns 0 or -EPROTO. */
int tls_conn_shutdown(tls_conn *c, const tls_io *io);
/* The last failure, for the log: e.g. "http request" (the peer spoke plain
 * HTTP), "unsupported protocol" (TLS < 1.2); "" when none. */
const char *tls_conn_error(const tls_conn *c);
/* The negotiated protocol ("TLSv1.3"), or "" before the handshake. */
const char *tls_conn_version(const tls_conn *c);

#endif
