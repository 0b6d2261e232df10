/* The transport stack of a build without wslay and OpenSSL (the Windows
 * build today: Debian ships neither for mingw-w64). Plain TCP listeners
 * only: a WebSocket or TLS listener is refused when the config is checked,
 * with the reason, and no session ever has transport state. */
#include "net/xport.h"

#include <errno.h>
#include <stdio.h>

#include "net/net_internal.h"

int net_transport_available(net_transport t, int tls, char *why, size_t len) {
  if (t == NET_TRANSPORT_WEBSOCKET) {
    snprintf(why, len, "this build of pierd has no WebSocket support (built without wslay)");
    return -ENOTSUP;
  }
  if (tls) {
    snprintf(why, len, "this build of pierd has no TLS support (built without OpenSSL)");
    return -ENOTSUP;
  }
  if (len)
    why[0] = '\0';
  return 0;
}

int net_tls_check(const char *cert, const char *key, char *err, size_t errlen) {
  return net_transport_available(NET_TRANSPORT_TCP, 1, err, errlen);
}

int xport_site_new(const net_endpoint *ep, xport_site **out) {
  char why[128];
  int rc = net_transport_available(ep->transport, ep->tls_cert != NULL, why, sizeof(why));
  *out = NULL;
  if (rc < 0)
    log_error("%s", why);
  return rc;
}

void xport_site_free(xport_site *x) {}

int xport_site_reload_tls(xport_site *x, const char *cert, const char *key, char *err,
                          size_t errlen) {
  return net_tls_check(cert, key, err, errlen);
}

/* No site, so no session reaches these. */
int xport_attach(session *s) { return -ENOTSUP; }
void xport_start(session *s) {}
void xport_input(session *s, const char *data, size_t len) {}
int xport_write(session *s, const void *data, size_t len) { return -ENOTCONN; }
int xport_write_buf(session *s, sbuf *b) { return -ENOTCONN; }
void xport_pre_flush(session *s) {}
size_t xport_pending(const session *s) { return 0; }
void xport_close(session *s, pier_reason reason) {}
void xport_free(session *s) {}
sbuf *xport_shared_frame(const void *data, size_t len) { return sbuf_from(data, len); }
