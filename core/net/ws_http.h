/* The HTTP/1.1 side of a WebSocket listener: one request head parsed (the
 * RFC 6455 Upgrade handshake, or a plain GET for a static file), the route
 * it takes, and the bytes of the response. Pure code, no sockets: the
 * session feeds it what arrived, the fuzz target drives it directly.
 *
 * A connection carries one request: after an error response or a file the
 * server closes it (Connection: close), after a 101 it speaks WebSocket. */
#ifndef PIER_NET_WS_HTTP_H
#define PIER_NET_WS_HTTP_H

#include <stddef.h>

/* Largest request head accepted (request line, headers, blank line). */
#define WS_HTTP_HEAD_MAX 8192
/* Largest static file served. */
#define WS_HTTP_FILE_MAX (4u * 1024u * 1024u)

typedef struct ws_http_str {
  const char *p; /* into the parsed buffer; NULL when absent */
  size_t len;
} ws_http_str;

typedef struct ws_http_req {
  ws_http_str method;  /* as sent, e.g. "GET" */
  ws_http_str target;  /* the request-target as sent */
  ws_http_str path;    /* target up to '?' or '#' (still percent-encoded) */
  int minor;           /* HTTP/1.<minor> */
  int upgrade;         /* "Upgrade" lists the token "websocket" (any case) */
  int conn_upgrade;    /* "Connection" lists the token "upgrade" (any case) */
  int version;         /* Sec-WebSocket-Version as a number; -1 absent, not a
                        * number or sent twice */
  ws_http_str key;     /* Sec-WebSocket-Key (surrounding blanks trimmed) */
  ws_http_str origin;  /* Origin */
  ws_http_str host;    /* Host */
  int extensions;      /* Sec-WebSocket-Extensions was sent (all are declined) */
} ws_http_req;

/* Parses the request head at the start of buf[0..len). Returns its length
 * (through the CRLF CRLF that ends it) when whole and well formed; 0 when
 * more bytes are needed and len < WS_HTTP_HEAD_MAX; -EMSGSIZE when no head
 * ends within WS_HTTP_HEAD_MAX bytes; -EPROTO when it is malformed: a bad
 * request line (method not a token, target not origin-form "/...", version
 * not HTTP/1.x), a header line without a colon, with a blank before it or
 * with a name that is not a token, a folded (obs-fold) line, a NUL or other
 * control byte outside HT, a bare LF, more than 100 header lines, or a
 * second Sec-WebSocket-Key, Host or Origin. A bad byte is refused as soon as
 * it arrives, a bad line once its CRLF has; an error within the first
 * WS_HTTP_HEAD_MAX bytes is -EPROTO even past them. *req points into buf. */
int ws_http_parse(const char *buf, size_t len, ws_http_req *req);

/* What one listener serves. */
typedef struct ws_http_site {
  const char *path;             /* the WebSocket path, e.g. "/chat" */
  const char *const *origins;   /* allowed Origin values (exact, ASCII case-insensitive) */
  size_t norigins;              /* 0: any origin */
  const char *static_root;      /* absolute directory with every link resolved, or NULL */
} ws_http_site;

typedef enum { WS_HTTP_UPGRADE, WS_HTTP_FILE, WS_HTTP_ERROR } ws_http_action;

typedef struct ws_http_reply {
  ws_http_action action;
  int head_only;            /* FILE: a HEAD request (send the head, not the body) */
  int status;               /* ERROR: 400, 403, 404, 405, 426, 500 */
  const char *why;          /* ERROR: one line for the server's log, no newline */
  char *body;               /* FILE: the file's bytes (malloc'd; the caller frees) */
  size_t body_len;
  const char *content_type; /* FILE: e.g. "text/html; charset=utf-8" */
} ws_http_reply;

/* Decides what a parsed request gets:
 * - an upgrade request (Upgrade lists websocket) for the site's path
 *   (exactly, ignoring the query): UPGRADE when the handshake is valid (GET,
 *   HTTP/1.1+, Connection upgrade, version 13, a key that is base64 of 16
 *   bytes, an allowed Origin -- a request without Origin, from a client that
 *   is not a browser, is allowed; checked in that order, the first failure
 *   decides); a version other than 13: 426 (the response names 13); any
 *   other bad handshake: 400; a disallowed Origin: 403; an upgrade request
 *   for another path: 404;
 * - otherwise, with a static_root, a GET or HEAD for a regular file under
 *   it: FILE ("/" and paths ending in "/" mean index.html; %XX decoded; a
 *   "." or ".." segment, a NUL, a backslash, or a path that resolves
 *   outside the root (a link) is 404; a file over max_file (at most
 *   WS_HTTP_FILE_MAX) or unreadable: 500); a method other than GET/HEAD:
 *   405; a GET or HEAD of the WebSocket path with no file there: 426;
 *   anything else 404 (without a static_root: 426 for the path, 404 for the
 *   rest).
 * Reads the file (blocking; static files are small). Returns 0, or -ENOMEM
 * (nothing allocated). */
int ws_http_route(const ws_http_site *site, const ws_http_req *req, size_t max_file,
                  ws_http_reply *out);
/* Frees out->body. */
void ws_http_reply_free(ws_http_reply *out);

/* The content type served for a file name (by extension, ASCII
 * case-insensitive): html htm js mjs css json svg png jpg jpeg gif ico wasm
 * txt map webp woff woff2; else "application/octet-stream". */
const char *ws_http_content_type(const char *name, size_t len);

/* Sec-WebSocket-Accept for key: base64(SHA-1(key + GUID)), 28 characters
 * and a NUL into out[29]. SHA-1 and base64 come from OpenSSL; when OpenSSL
 * fails (out of memory) out is "". */
void ws_http_accept_key(const char *key, size_t key_len, char out[29]);

/* Response heads, written into out[0..cap) (no NUL); each returns its
 * length, or 0 when cap is too small (the 101: or the digest failed). */
/* 101 Switching Protocols with Sec-WebSocket-Accept (no extension, no
 * subprotocol). */
size_t ws_http_write_upgrade(const ws_http_req *req, char *out, size_t cap);
/* An error: status line, Content-Type text/plain, Content-Length, Connection:
 * close (426 adds Sec-WebSocket-Version: 13 and Upgrade: websocket; 405 adds
 * Allow: GET, HEAD), and a one-line body naming the status. */
size_t ws_http_write_error(int status, char *out, size_t cap);
/* 200 OK for a file: Content-Type, Content-Length body_len, Connection:
 * close, Cache-Control: no-cache, X-Content-Type-Options: nosniff. */
size_t ws_http_write_file_head(const char *content_type, size_t body_len, char *out, size_t cap);

#endif
