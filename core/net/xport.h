/* The transport stack between a session's socket and its framing: TLS
 * (tls.c) and WebSocket (ws_http.c for the HTTP handshake and static files,
 * ws.c for frames). session.c calls these only for a session with s->xp
 * set, so plain TCP pays one pointer test per hook.
 *
 * Input:  socket -> [TLS decrypt] -> [HTTP head | WebSocket frames] ->
 *         session_app_input (framing) or one packet per message.
 * Output: host send -> [WebSocket frame header] -> [TLS: plaintext queue,
 *         sealed into records when the session flushes] -> send queue.
 *
 * A build without wslay and OpenSSL (Windows today) has xport_none.c: no
 * site can be made and net_transport_available says why. */
#ifndef PIER_NET_XPORT_H
#define PIER_NET_XPORT_H

#include <stddef.h>

#include "net/net.h"

typedef struct session session;

/* Per listener: what its sessions share (the TLS context, the site). NULL
 * in *out for a plain TCP endpoint. Logs a failure (naming the file). */
int xport_site_new(const net_endpoint *ep, xport_site **out);
void xport_site_free(xport_site *x);
int xport_site_reload_tls(xport_site *x, const char *cert, const char *key, char *err,
                          size_t errlen);

/* Session hooks (the session's worker). */
int xport_attach(session *s);         /* 0 or -ENOMEM; s->ep->site is set */
void xport_start(session *s);         /* accepted: handshake deadline starts */
void xport_input(session *s, const char *data, size_t len);
int xport_write(session *s, const void *data, size_t len);
int xport_write_buf(session *s, sbuf *b);
/* Before a send is submitted: TLS seals queued plaintext into s->q. */
void xport_pre_flush(session *s);
/* Bytes waiting in the stack, not yet in s->q (TLS plaintext), plus 1 while
 * a close_notify is owed: a graceful close must flush this too. */
size_t xport_pending(const session *s);
/* A graceful close begins: the WebSocket close frame (code mapped from
 * reason) and TLS close_notify are queued. Not called for abortive closes. */
void xport_close(session *s, pier_reason reason);
void xport_free(session *s);

/* A broadcast's buffer: data[off..len) holds the payload and the ws_hlen
 * bytes before off the header of one unmasked binary WebSocket frame
 * carrying it (see sbuf.h). NULL on ENOMEM. */
sbuf *xport_shared_frame(const void *data, size_t len);

#endif
