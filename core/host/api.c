/* The pier_host function table a plugin gets in on_load: each entry finds
 * its plugin with container_of and calls into core/net, the timers or the
 * gate. Every entry may be called from any thread; a stale session id fails
 * with -ENOTCONN and never reaches another session. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/host_internal.h"
#include "net/framing.h"

#define PLUGIN(api) container_of(api, host_plugin, api)

extern _Thread_local pier_sid host_tls_gone_sid;
extern _Thread_local void *host_tls_gone_user;

static int api_send(const pier_host *api, pier_sid sid, const void *data, size_t len) {
  return net_send(PLUGIN(api)->h->net, sid, data, len);
}

static int api_send_packet(const pier_host *api, pier_sid sid, uint16_t id, const void *body,
                           size_t len) {
  sbuf *b;
  int rc;
  if (len > 65535 - FRAME_HEADER) /* not len + 4 > 65535: that wraps for huge len */
    return -EMSGSIZE;
  b = sbuf_alloc(len + FRAME_HEADER);
  if (!b)
    return -ENOMEM;
  b->data[0] = (char)((len + FRAME_HEADER) & 0xff);
  b->data[1] = (char)((len + FRAME_HEADER) >> 8);
  b->data[2] = (char)(id & 0xff);
  b->data[3] = (char)(id >> 8);
  if (len)
    memcpy(b->data + FRAME_HEADER, body, len);
  b->len = (uint32_t)(len + FRAME_HEADER);
  rc = net_send_buf(PLUGIN(api)->h->net, sid, b);
  sbuf_release(b);
  return rc;
}

static size_t api_broadcast(const pier_host *api, const pier_sid *sids, size_t n, const void *data,
                            size_t len) {
  return net_broadcast(PLUGIN(api)->h->net, sids, n, data, len);
}

static int api_close(const pier_host *api, pier_sid sid, pier_reason reason) {
  return net_close(PLUGIN(api)->h->net, sid, reason);
}

static int api_set_user(const pier_host *api, pier_sid sid, void *user) {
  return net_set_user(PLUGIN(api)->h->net, sid, user);
}

static void *api_get_user(const pier_host *api, pier_sid sid) {
  if (sid != 0 && sid == host_tls_gone_sid)
    return host_tls_gone_user;
  return net_get_user(PLUGIN(api)->h->net, sid);
}

static int api_peer(const pier_host *api, pier_sid sid, char *buf, size_t len) {
  net_addr a;
  int rc = net_peer(PLUGIN(api)->h->net, sid, &a);
  if (rc == 0)
    net_addr_format(&a, buf, len);
  return rc;
}

static int api_timer_start(const pier_host *api, uint64_t after_ms, uint64_t repeat_ms,
                           pier_timer_fn fn, void *arg, uint64_t *id) {
  if (!fn)
    return -EINVAL;
  return timer_add(PLUGIN(api), after_ms, repeat_ms, fn, arg, id);
}

static int api_timer_cancel(const pier_host *api, uint64_t id) {
  host_plugin *p = PLUGIN(api);
  return id && id != TIMERS_OF_CODE && timer_cancel_match(p->h, p, id) > 0 ? 0 : -ENOENT;
}

static void api_log(const pier_host *api, pier_log_level level, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  if ((int)level > (int)log_get_level())
    return;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  log_msg((log_level)(level > PIER_LOG_DEBUG ? PIER_LOG_DEBUG : level), "[%s] %s",
          PLUGIN(api)->cfg->name, buf);
}

static size_t api_sessions(const pier_host *api, pier_sid *out, size_t max) {
  return host_plugin_sids(PLUGIN(api), out, out ? max : 0);
}

typedef struct post_job {
  io_job job;
  host_plugin *p;
  unsigned gen;
  pier_job_fn fn;
  void *arg;
} post_job;

static void post_run(io_job *job) {
  post_job *j = container_of(job, post_job, job);
  host_plugin *p = j->p;
  ev e = {.type = EV_POST, .gen = j->gen, .fn = j->fn, .arg = j->arg};
  /* A job that queues (strand, reload) keeps the count until it runs. */
  if (p->h->stopped || !gate_deliver(p, &e))
    atomic_fetch_sub(&p->posts, 1);
  free(j);
}

static int api_post(const pier_host *api, pier_job_fn fn, void *arg) {
  host_plugin *p = PLUGIN(api);
  post_job *j;
  if (!fn)
    return -EINVAL;
  if (p->h->stopped || !p->h->net)
    return -ECANCELED;
  if (atomic_fetch_add(&p->posts, 1) >= HOST_POST_MAX) {
    atomic_fetch_sub(&p->posts, 1);
    return -EAGAIN;
  }
  j = malloc(sizeof(*j));
  if (!j) {
    atomic_fetch_sub(&p->posts, 1);
    return -ENOMEM;
  }
  j->job.fn = post_run;
  j->p = p;
  j->gen = atomic_load(&p->generation);
  j->fn = fn;
  j->arg = arg;
  net_post(p->h->net, 0, &j->job);
  return 0;
}

static uint64_t api_now(const pier_host *api) {
  (void)api;
  return clock_ms();
}

static int api_fail(const pier_host *api, const char *reason) {
  char why[300];
  snprintf(why, sizeof(why), "reported failure: %s", reason ? reason : "(no reason)");
  gate_failed(PLUGIN(api), why);
  return 0;
}

static const char *api_reason_text(pier_reason reason) { return net_reason_text(reason); }

void api_fill(host_plugin *p) {
  pier_host *a = &p->api;
  a->size = sizeof(*a);
  a->abi_major = PIER_ABI_MAJOR;
  a->abi_minor = PIER_ABI_MINOR;
  a->send = api_send;
  a->send_packet = api_send_packet;
  a->broadcast = api_broadcast;
  a->close = api_close;
  a->set_user = api_set_user;
  a->get_user = api_get_user;
  a->peer = api_peer;
  a->timer_start = api_timer_start;
  a->timer_cancel = api_timer_cancel;
  a->log = api_log;
  a->sessions = api_sessions;
  a->post = api_post;
  a->now = api_now;
  a->reason_text = api_reason_text;
  a->fail = api_fail;
  a->metric_declare = pmetrics_declare;
  a->metric_series = pmetrics_series;
  a->metric_add = pmetrics_add;
  a->metric_set = pmetrics_set;
  a->metric_observe = pmetrics_observe;
  cluster_fill_api(p);
}
