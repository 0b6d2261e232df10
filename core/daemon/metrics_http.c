/* metrics_http.h on libmicrohttpd: one internal polling thread answers every
 * request; a /metrics answer is rendered into memory (os/memout.h) and handed
 * to the library, which frees it. The thread only reads the host's counters,
 * so however often Prometheus scrapes, no worker waits for it. */
#include "daemon/metrics_http.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <microhttpd.h>

#include "base/log.h"
#include "daemon/metrics.h"
#include "os/memout.h"
#include "os/os.h"

struct metrics_http {
  struct MHD_Daemon *d;
  host *h;
  log_rate rate; /* libmicrohttpd's own messages, from its one thread */
};

static void mhd_log(void *cls, const char *fmt, va_list ap) {
  metrics_http *m = cls;
  char line[256];
  size_t n;
  vsnprintf(line, sizeof(line), fmt, ap);
  n = strlen(line);
  while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
    line[--n] = '\0';
  log_limited(&m->rate, LOG_WARN, "metrics: %s", line);
}

/* Queues a short constant text answer. */
static enum MHD_Result answer_text(struct MHD_Connection *c, unsigned status, const char *text) {
  struct MHD_Response *r =
      MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
  enum MHD_Result rc;
  if (!r)
    return MHD_NO;
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
  if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
    MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
  rc = MHD_queue_response(c, status, r);
  MHD_destroy_response(r);
  return rc;
}

static enum MHD_Result answer_metrics(metrics_http *m, struct MHD_Connection *c) {
  os_memout mo;
  char *text;
  size_t len;
  struct MHD_Response *r;
  enum MHD_Result rc;
  FILE *f = os_memout_open(&mo);

  if (!f)
    return answer_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
  metrics_render(m->h, f);
  if (os_memout_close(&mo, &text, &len) < 0)
    return answer_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
  r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
  if (!r) {
    free(text);
    return MHD_NO;
  }
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, METRICS_CONTENT_TYPE);
  rc = MHD_queue_response(c, MHD_HTTP_OK, r);
  MHD_destroy_response(r);
  return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **req) {
  static int seen; /* marks a request whose headers were seen */
  metrics_http *m = cls;
  (void)version;
  (void)upload_data;

  /* The first call brings the headers only; answer on the next one, as
   * libmicrohttpd wants, and ignore any body. */
  if (!*req) {
    *req = &seen;
    return MHD_YES;
  }
  if (*upload_data_size) {
    *upload_data_size = 0;
    return MHD_YES;
  }
  if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
    return answer_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
  if (strcmp(url, "/metrics") == 0)
    return answer_metrics(m, c);
  if (strcmp(url, "/healthz") == 0)
    return answer_text(c, MHD_HTTP_OK, "ok\n");
  if (strcmp(url, "/readyz") == 0) {
    if (host_ready(m->h))
      return answer_text(c, MHD_HTTP_OK, "ready\n");
    return answer_text(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                       host_draining(m->h) ? "draining\n" : "starting\n");
  }
  return answer_text(c, MHD_HTTP_NOT_FOUND, "not found\n");
}

int metrics_http_start(host *h, const char *address, unsigned port, metrics_http **out) {
  struct sockaddr_storage ss;
  struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
  /* poll(), not select(), which cannot take a descriptor past FD_SETSIZE (a
   * daemon with a thousand sessions has those); a thread per connection
   * (at most METRICS_HTTP_MAX_CONNS), the mode in which the library keeps
   * the connection limits exactly when it polls. */
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                   MHD_USE_POLL | MHD_USE_ERROR_LOG;
  const union MHD_DaemonInfo *info;
  metrics_http *m;
  int ipv6 = strchr(address, ':') != NULL;

  *out = NULL;
  memset(&ss, 0, sizeof(ss));
  if (ipv6) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons((uint16_t)port);
    if (inet_pton(AF_INET6, address, &v6->sin6_addr) != 1)
      return -EINVAL; /* the config check let no such address through */
    flags |= MHD_USE_IPv6;
  } else {
    v4->sin_family = AF_INET;
    v4->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, address, &v4->sin_addr) != 1)
      return -EINVAL;
  }
  if (!(m = calloc(1, sizeof(*m)))) {
    log_error("metrics: out of memory");
    return -ENOMEM;
  }
  m->h = h;
  errno = 0;
  /* The logger first, or the library prints what comes before it itself. */
  m->d = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, m,
                          MHD_OPTION_EXTERNAL_LOGGER, mhd_log, m,
                          MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                          MHD_OPTION_CONNECTION_LIMIT, (unsigned)METRICS_HTTP_MAX_CONNS,
                          MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                          (unsigned)METRICS_HTTP_MAX_CONNS_PER_IP,
                          MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)METRICS_HTTP_TIMEOUT_S,
                          MHD_OPTION_END);
  if (!m->d) {
    int err = errno ? errno : EADDRINUSE;
    log_error("metrics: cannot listen on %s%s%s:%u: %s", ipv6 ? "[" : "", address,
              ipv6 ? "]" : "", port, os_strerror(err));
    free(m);
    return -err;
  }
  info = MHD_get_daemon_info(m->d, MHD_DAEMON_INFO_BIND_PORT);
  log_info("metrics on http://%s%s%s:%u/metrics", ipv6 ? "[" : "", address, ipv6 ? "]" : "",
           info ? (unsigned)info->port : port);
  *out = m;
  return 0;
}

void metrics_http_stop(metrics_http *m) {
  if (!m)
    return;
  MHD_stop_daemon(m->d);
  free(m);
}
