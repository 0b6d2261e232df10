/* The cluster bus (ABI 1.3) end to end, as a plugin and an operator see it:
 * each case starts its own nats-server on a free loopback port and one or
 * two real pierd nodes with a "cluster" section, loading the busprobe test
 * plugin (tests/plugins/busprobe.c), whose line commands call the bus
 * entries and push back what the bus brings. Expectations come from
 * include/pier/plugin.h (return codes, delivery, reloads) and the operator
 * texts pierd promises (log lines, status). Every case runs once per I/O
 * backend. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include "backends.h"
#include "daemon.h"
#include "pier/plugin.h"
#include "testlib.h"

#define NATS_SERVER "/usr/sbin/nats-server"

/* Short presence timings keep the node-loss cases quick. */
#define HEARTBEAT_MS 200
#define NODE_TIMEOUT_MS 1000

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- what a failed case leaves behind ----
 * A failing check ends the test process at once. pierd and nats-server die
 * with it (PR_SET_PDEATHSIG), but their directories stay, so every process
 * and directory is also recorded in memory shared with the runner, which
 * removes what a case could not. */

enum { LIVE_MAX = 6 };
typedef struct live {
  pid_t pid[LIVE_MAX];
  char dir[LIVE_MAX][128];
} live;

static live *g_live;

static void live_add(pid_t pid, const char *dir) {
  if (!g_live)
    return;
  for (int k = 0; k < LIVE_MAX; k++)
    if (g_live->pid[k] <= 0 && !g_live->dir[k][0]) {
      g_live->pid[k] = pid;
      snprintf(g_live->dir[k], sizeof(g_live->dir[k]), "%s", dir ? dir : "");
      return;
    }
}

static void live_drop(pid_t pid) {
  if (!g_live || pid <= 0)
    return;
  for (int k = 0; k < LIVE_MAX; k++)
    if (g_live->pid[k] == pid) {
      g_live->pid[k] = 0;
      g_live->dir[k][0] = '\0';
    }
}

static void reap_leftovers(void) {
  if (!g_live)
    return;
  for (int k = 0; k < LIVE_MAX; k++) {
    if (g_live->pid[k] > 0) {
      kill(g_live->pid[k], SIGKILL);
      waitpid(g_live->pid[k], NULL, WNOHANG);
    }
    if (strncmp(g_live->dir[k], "/tmp/pier-test-", 15) == 0)
      test_rm_rf(g_live->dir[k]);
  }
  memset(g_live, 0, sizeof(*g_live));
}

/* ---- nats-server ---- */

typedef struct nats {
  pid_t pid;
  uint16_t port;
  char url[64];
} nats;

/* 1 when something accepts TCP on port and says INFO (a NATS server). */
static int nats_answers(uint16_t port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  char buf[8];
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), ok = 0;
  struct timeval tv = {1, 0};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && recv(fd, buf, 4, MSG_WAITALL) == 4)
    ok = memcmp(buf, "INFO", 4) == 0;
  close(fd);
  return ok;
}

/* Starts nats-server on port (0: a free one) and waits until it serves. */
static void nats_start(nats *n, uint16_t port) {
  char portarg[16];
  uint64_t end;
  n->port = port ? port : test_unused_port();
  snprintf(n->url, sizeof(n->url), "nats://127.0.0.1:%u", (unsigned)n->port);
  snprintf(portarg, sizeof(portarg), "%u", (unsigned)n->port);
  n->pid = fork();
  ck_assert_int_ge(n->pid, 0);
  if (n->pid == 0) {
    int null = open("/dev/null", O_RDWR);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(null, STDIN_FILENO);
    dup2(null, STDOUT_FILENO);
    dup2(null, STDERR_FILENO);
    execl(NATS_SERVER, NATS_SERVER, "-a", "127.0.0.1", "-p", portarg, (char *)NULL);
    _exit(127);
  }
  live_add(n->pid, NULL);
  for (end = now_ms() + 10000; !nats_answers(n->port); usleep(20000)) {
    int status;
    ck_assert_msg(waitpid(n->pid, &status, WNOHANG) == 0, "nats-server on port %u exited",
                  (unsigned)n->port);
    ck_assert_msg(now_ms() < end, "nats-server on port %u does not answer", (unsigned)n->port);
  }
}

static void nats_kill(nats *n) {
  if (n->pid > 0) {
    kill(n->pid, SIGKILL);
    waitpid(n->pid, NULL, 0);
    live_drop(n->pid);
  }
  n->pid = 0;
}

/* ---- nodes ---- */

typedef struct node_opts {
  const char *name;      /* cluster.node */
  const char *threading; /* of busprobe (and busother) */
  const char *probe;     /* busprobe's "config" members, "" for none */
  const char *cluster;   /* more members of "cluster" (", \"max_pending\": 50") */
  const char *nats;      /* the "nats" array's members; NULL: the case's server */
  int other;             /* also load busother, on a second listener */
} node_opts;

static nats g_nats;
static test_daemon g_node[2];
static char g_text[2][4096]; /* the config each node was started with */

static void node_json(char *buf, size_t cap, const node_opts *o) {
  char urls[512];
  snprintf(urls, sizeof(urls), "\"%s\"", g_nats.url);
  snprintf(buf, cap,
           "{\"workers\": 2, \"limits\": {\"max_send_queue\": 8388608}, \"plugins\": [{\"name\": "
           "\"busprobe\", \"path\": \"@TESTPLUGINS@/busprobe@EXT@\", \"threading\": \"%s\", \"config\": {%s}}%s%s%s], "
           "\"listeners\": [{\"address\": \"127.0.0.1\", \"port\": 0, \"plugin\": \"busprobe\", "
           "\"framing\": \"raw\"}%s], \"cluster\": {\"nats\": [%s], \"node\": \"%s\", "
           "\"heartbeat_ms\": %d, \"node_timeout_ms\": %d%s}}",
           o->threading, o->probe ? o->probe : "",
           o->other ? ", {\"name\": \"busother\", \"path\": \"@TESTPLUGINS@/busother@EXT@\", "
                      "\"threading\": \""
                    : "",
           o->other ? o->threading : "", o->other ? "\"}" : "",
           o->other ? ", {\"address\": \"127.0.0.1\", \"port\": 0, \"plugin\": \"busother\", "
                      "\"framing\": \"raw\"}"
                    : "",
           o->nats ? o->nats : urls, o->name, HEARTBEAT_MS, NODE_TIMEOUT_MS,
           o->cluster ? o->cluster : "");
}

/* Starts node k and waits until it joined the bus (when wait_join). */
static test_daemon *node_start(int k, const node_opts *o, const char *backend, int wait_join) {
  test_daemon *d = &g_node[k];
  char want[256];
  int rc;
  node_json(g_text[k], sizeof(g_text[k]), o);
  rc = test_daemon_start(d, g_text[k], backend);
  live_add(d->pid, d->dir);
  ck_assert_msg(rc == 0, "node %s did not start:\n%s", o->name, d->log);
  ck_assert_int_eq(d->nports, o->other ? 2 : 1);
  if (wait_join) {
    snprintf(want, sizeof(want), "cluster: node \"%s\" joined the bus at %s\n", o->name,
             g_nats.url);
    ck_assert_msg(test_daemon_wait_log(d, want, 10000), "node %s: no \"%s\" in:\n%s", o->name,
                  want, d->log);
  }
  return d;
}

/* SIGTERM must end the node with status 0. */
static void node_stop(test_daemon *d) {
  pid_t pid = d->pid;
  int status = test_daemon_signal_wait(d, SIGTERM, 10000);
  ck_assert_msg(status == 0, "pierd exited %d:\n%s", status, d->log);
  live_drop(pid);
  test_daemon_cleanup(d);
}

static void node_kill(test_daemon *d) {
  pid_t pid = d->pid;
  test_daemon_signal_wait(d, SIGKILL, 5000);
  live_drop(pid);
}

/* Rewrites node k's server.json with another busprobe config (the rest as
 * it started) and sends SIGHUP, which reloads the plugin with it. */
static void node_reconfigure(int k, const node_opts *o) {
  FILE *f;
  char *text = malloc(8192), tmp[256];
  node_json(text, 8192, o);
  /* @TESTPLUGINS@ as test_daemon_start wrote it: take the path from the
   * file it wrote. */
  {
    char *at = strstr(text, "@TESTPLUGINS@");
    while (at) {
      char rest[8192];
      snprintf(rest, sizeof(rest), "%s", at + strlen("@TESTPLUGINS@"));
      snprintf(at, 8192 - (size_t)(at - text), "%s%s", test_daemon_test_plugin_dir(), rest);
      at = strstr(text, "@TESTPLUGINS@");
    }
    at = strstr(text, "@EXT@");
    while (at) {
      char rest[8192];
      snprintf(rest, sizeof(rest), "%s", at + strlen("@EXT@"));
      snprintf(at, 8192 - (size_t)(at - text), "%s%s", test_daemon_plugin_ext(), rest);
      at = strstr(text, "@EXT@");
    }
  }
  snprintf(tmp, sizeof(tmp), "%s.new", g_node[k].config);
  f = fopen(tmp, "w");
  ck_assert_ptr_nonnull(f);
  fputs(text, f);
  fclose(f);
  ck_assert_int_eq(rename(tmp, g_node[k].config), 0);
  free(text);
  kill(g_node[k].pid, SIGHUP);
}

/* ---- busprobe clients ---- */

typedef struct event {
  char head[600]; /* the line; for "msg" the part before the payload, without the space */
  char *data;     /* msg: its payload (malloc'd) */
  size_t len;
} event;

typedef struct client {
  const char *name;
  int fd;
  char *in; /* received, not yet parsed */
  size_t in_len, in_cap;
  event *ev; /* parsed, not yet taken, in arrival order */
  size_t nev, ev_cap;
} client;

static client connect_client(const char *name, uint16_t port) {
  client c = {.name = name, .fd = test_connect(port)};
  return c;
}

static void close_client(client *c) {
  if (c->fd >= 0)
    close(c->fd);
  c->fd = -1;
  for (size_t i = 0; i < c->nev; i++)
    free(c->ev[i].data);
  free(c->ev);
  free(c->in);
  memset(c, 0, sizeof(*c));
  c->fd = -1;
}

/* Moves whole events from c->in to c->ev. */
static void parse(client *c) {
  size_t at = 0;
  for (;;) {
    char *p = c->in + at, *nl;
    size_t avail = c->in_len - at;
    event e = {0};
    if (avail >= 4 && memcmp(p, "msg ", 4) == 0) {
      /* msg SUBJECT LEN REPLY DATA\n */
      char *sp = p;
      int spaces = 0;
      size_t hl, len;
      while (sp < p + avail && spaces < 4) {
        if (*sp == ' ')
          spaces++;
        sp++;
      }
      if (spaces < 4)
        break;
      hl = (size_t)(sp - p - 1);
      {
        char tmp[600], *q;
        snprintf(tmp, sizeof(tmp), "%.*s", (int)hl, p);
        q = strchr(tmp + 4, ' ');
        len = q ? strtoull(q + 1, NULL, 10) : 0;
      }
      if (avail < hl + 1 + len + 1)
        break;
      ck_assert_msg(p[hl + 1 + len] == '\n', "%s: msg event not ended by a newline", c->name);
      snprintf(e.head, sizeof(e.head), "%.*s", (int)hl, p);
      e.data = malloc(len + 1);
      memcpy(e.data, p + hl + 1, len);
      e.data[len] = '\0';
      e.len = len;
      at += hl + 1 + len + 1;
    } else {
      nl = memchr(p, '\n', avail);
      if (!nl)
        break;
      snprintf(e.head, sizeof(e.head), "%.*s", (int)(nl - p), p);
      at += (size_t)(nl - p) + 1;
    }
    if (c->nev == c->ev_cap) {
      c->ev_cap = c->ev_cap ? c->ev_cap * 2 : 64;
      c->ev = realloc(c->ev, c->ev_cap * sizeof(event));
    }
    c->ev[c->nev++] = e;
  }
  memmove(c->in, c->in + at, c->in_len - at);
  c->in_len -= at;
}

/* Reads what arrives within timeout_ms (returns at the first data). */
static void pump(client *c, int timeout_ms) {
  struct pollfd p = {.fd = c->fd, .events = POLLIN};
  long n;
  if (poll(&p, 1, timeout_ms) <= 0)
    return;
  if (c->in_cap - c->in_len < 65536) {
    c->in_cap = c->in_cap ? c->in_cap * 2 : 1 << 20;
    c->in = realloc(c->in, c->in_cap);
  }
  n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
  ck_assert_msg(n > 0, "%s: the connection ended (%ld)", c->name, n);
  c->in_len += (size_t)n;
  parse(c);
}

static void say(client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(client *c, const char *fmt, ...) {
  char line[8192];
  va_list ap;
  int n;
  va_start(ap, fmt);
  n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
  va_end(ap);
  ck_assert(n > 0 && (size_t)n < sizeof(line) - 1);
  line[n++] = '\n';
  test_send_all(c->fd, line, (size_t)n);
}

/* What c has not taken yet, for failure messages. */
static const char *pending(const client *c) {
  static char out[2048];
  size_t n = 0;
  out[0] = '\0';
  for (size_t i = 0; i < c->nev && n + 100 < sizeof(out); i++)
    n += (size_t)snprintf(out + n, sizeof(out) - n, "  [%s]%s%.40s\n", c->ev[i].head,
                          c->ev[i].data ? " " : "", c->ev[i].data ? c->ev[i].data : "");
  return n ? out : "  (nothing)\n";
}

static event g_taken;

/* Takes the first event whose head starts with prefix (exact: equals it),
 * waiting up to timeout_ms; NULL if none came. */
static event *take(client *c, const char *prefix, int exact, int timeout_ms) {
  uint64_t end = now_ms() + (uint64_t)timeout_ms;
  size_t pl = strlen(prefix);
  for (;;) {
    for (size_t i = 0; i < c->nev; i++) {
      const char *h = c->ev[i].head;
      if (exact ? strcmp(h, prefix) == 0 : strncmp(h, prefix, pl) == 0) {
        free(g_taken.data);
        g_taken = c->ev[i];
        memmove(c->ev + i, c->ev + i + 1, (c->nev - i - 1) * sizeof(event));
        c->nev--;
        return &g_taken;
      }
    }
    uint64_t now = now_ms();
    if (now >= end)
      return NULL;
    pump(c, (int)(end - now));
  }
}

/* Expects the line (exactly), within 5 s. */
#define expect_line(c, ...)                                                                  \
  do {                                                                                       \
    char want_[1024];                                                                        \
    snprintf(want_, sizeof(want_), __VA_ARGS__);                                             \
    ck_assert_msg(take((c), want_, 1, 5000), "%s: expected \"%s\"; pending:\n%s", (c)->name, \
                  want_, pending(c));                                                        \
  } while (0)

/* Types a command and expects its result line. */
#define call(c, want, ...)                                                                   \
  do {                                                                                       \
    say((c), __VA_ARGS__);                                                                   \
    expect_line((c), "%s", (want));                                                          \
  } while (0)

/* Expects a message on subject with exactly len bytes of data and no
 * reply address (reply NULL) or any (reply ""). */
static void expect_msg_at(client *c, const char *subject, const void *data, size_t len,
                          const char *reply, int line) {
  char head[512];
  event *e;
  if (reply && !*reply) {
    snprintf(head, sizeof(head), "msg %s %zu ", subject, len);
    e = take(c, head, 0, 5000);
  } else {
    snprintf(head, sizeof(head), "msg %s %zu %s", subject, len, reply ? reply : "-");
    e = take(c, head, 1, 5000);
  }
  ck_assert_msg(e, "line %d: %s: expected \"%s\"; pending:\n%s", line, c->name, head,
                pending(c));
  ck_assert_msg(e->len == len && (len == 0 || memcmp(e->data, data, len) == 0),
                "line %d: %s: %s: payload differs", line, c->name, head);
}
#define expect_msg(c, subject, text) \
  expect_msg_at((c), (subject), (text), strlen(text), NULL, __LINE__)

/* Nothing whose head starts with prefix is there or comes within ms. */
static void expect_none_at(client *c, const char *prefix, int ms, int line) {
  event *e = take(c, prefix, 0, ms);
  ck_assert_msg(!e, "line %d: %s: unexpected \"%s\" %s", line, c->name, e ? e->head : "",
                e && e->data ? e->data : "");
}
#define expect_none(c, prefix, ms) expect_none_at((c), (prefix), (ms), __LINE__)

/* Every subscription c's node made before it is in effect on the server:
 * c's own message to a fresh subject came back through it, and the
 * server handles one connection's commands in order. */
static void barrier(client *c) {
  static int seq;
  char s[64], want[128];
  snprintf(s, sizeof(s), "barrier.%d", ++seq);
  snprintf(want, sizeof(want), "rc sub %s 0", s);
  call(c, want, "sub %s", s);
  snprintf(want, sizeof(want), "rc pub %s 0", s);
  call(c, want, "pub %s b", s);
  expect_msg(c, s, "b");
  snprintf(want, sizeof(want), "rc unsub %s 0", s);
  call(c, want, "unsub %s", s);
}

/* ---- a raw NATS client (the wire format) ---- */

typedef struct raw {
  int fd;
  char buf[1 << 16];
  size_t len;
} raw;

static void raw_send(raw *r, const char *text) { test_send_all(r->fd, text, strlen(text)); }

/* PUB subject payload, with the byte count the protocol wants. */
static void raw_pub(raw *r, const char *subject, const char *payload) {
  char head[512];
  snprintf(head, sizeof(head), "PUB %s %zu\r\n", subject, strlen(payload));
  raw_send(r, head);
  raw_send(r, payload);
  raw_send(r, "\r\n");
}

static void raw_open(raw *r, uint16_t port, const char *subs) {
  memset(r, 0, sizeof(*r));
  r->fd = test_connect(port);
  raw_send(r, "CONNECT {\"verbose\":false,\"pedantic\":false}\r\n");
  raw_send(r, subs);
  raw_send(r, "PING\r\n");
}

/* The next MSG on the connection whose subject starts with prefix (others
 * skipped): 1 with subject and payload, 0 after timeout_ms. */
static int raw_msg(raw *r, const char *prefix, char *subject, size_t scap, char *data,
                   size_t dcap, size_t *dlen, int timeout_ms) {
  uint64_t end = now_ms() + (uint64_t)timeout_ms;
  for (;;) {
    char *nl;
    while ((nl = memmem(r->buf, r->len, "\r\n", 2))) {
      size_t ll = (size_t)(nl - r->buf) + 2;
      if (strncmp(r->buf, "MSG ", 4) == 0) {
        char line[1024], *w[5], *save = NULL;
        int nw = 0;
        size_t len;
        snprintf(line, sizeof(line), "%.*s", (int)(nl - r->buf), r->buf);
        for (char *t = strtok_r(line, " ", &save); t && nw < 5; t = strtok_r(NULL, " ", &save))
          w[nw++] = t;
        len = strtoull(w[nw - 1], NULL, 10);
        if (r->len < ll + len + 2)
          break;
        if (strncmp(w[1], prefix, strlen(prefix)) == 0) {
          snprintf(subject, scap, "%s", w[1]);
          *dlen = len < dcap ? len : dcap - 1;
          memcpy(data, r->buf + ll, *dlen);
          data[*dlen] = '\0';
          memmove(r->buf, r->buf + ll + len + 2, r->len - ll - len - 2);
          r->len -= ll + len + 2;
          return 1;
        }
        ll += len + 2;
      } else if (strncmp(r->buf, "PING", 4) == 0) {
        raw_send(r, "PONG\r\n");
      }
      memmove(r->buf, r->buf + ll, r->len - ll);
      r->len -= ll;
    }
    uint64_t now = now_ms();
    struct pollfd p = {.fd = r->fd, .events = POLLIN};
    if (now >= end)
      return 0;
    if (poll(&p, 1, (int)(end - now)) > 0) {
      long n = recv(r->fd, r->buf + r->len, sizeof(r->buf) - r->len, 0);
      ck_assert_int_gt(n, 0);
      r->len += (size_t)n;
    }
  }
}

/* ---- status ---- */

/* The value after "key": in the "cluster" object of `status --json`, up
 * to the next ',' or '}'. */
static const char *status_cluster_text(test_daemon *d, const char *key) {
  static char val[256];
  const char *sock = test_daemon_admin(d, 10000);
  static char out[65536], err[4096];
  char k[64];
  const char *p;
  ck_assert_ptr_nonnull(sock);
  const char *args[] = {"--socket", sock, "status", "--json", NULL};
  ck_assert_int_eq(test_daemon_pierctl(args, out, sizeof(out), err, sizeof(err), 10000), 0);
  p = strstr(out, "\"cluster\":");
  ck_assert_msg(p, "no \"cluster\" in status --json: %s", out);
  snprintf(k, sizeof(k), "\"%s\":", key);
  p = strstr(p, k);
  ck_assert_msg(p, "no %s in the cluster object of status --json: %s", k, out);
  p += strlen(k);
  snprintf(val, sizeof(val), "%.*s", (int)strcspn(p, ",}"), p);
  return val;
}

static long long status_cluster(test_daemon *d, const char *key) {
  const char *v = status_cluster_text(d, key);
  char *end;
  long long n = strtoll(v, &end, 10);
  ck_assert_msg(end != v && !*end, "cluster.%s in status --json is \"%s\"", key, v);
  return n;
}

/* Whether one line of log holds a, then b after it. */
static int log_line_has(const char *log, const char *a, const char *b) {
  if (!*b)
    return strstr(log, a) != NULL;
  for (const char *p = strstr(log, a); p; p = strstr(p + 1, a)) {
    const char *eol = strchr(p, '\n'), *q = strstr(p + strlen(a), b);
    if (q && (!eol || q <= eol))
      return 1;
  }
  return 0;
}

static void case_begin(void) {
  reap_leftovers();
  memset(&g_nats, 0, sizeof(g_nats));
}

/* ================= without "cluster" ================= */

START_TEST(test_bus_without_cluster_is_not_supported) {
  test_daemon *d = &g_node[0];
  client c;
  int rc;
  case_begin();
  rc = test_daemon_start(d,
                         "{\"workers\": 2, \"plugins\": [{\"name\": \"busprobe\", \"path\": "
                         "\"@TESTPLUGINS@/busprobe@EXT@\", \"config\": {\"subs\": \"a.b\"}}], "
                         "\"listeners\": [{\"address\": \"127.0.0.1\", \"port\": 0, \"plugin\": "
                         "\"busprobe\", \"framing\": \"raw\"}]}",
                         test_io_backend(_i));
  live_add(d->pid, d->dir);
  ck_assert_msg(rc == 0, "pierd did not start:\n%s", d->log);
  ck_assert(test_daemon_wait_log(d, "busprobe gen=1: subscribe a.b: -95", 5000));
  c = connect_client("solo", d->ports[0]);
  call(&c, "self -", "self");
  call(&c, "rc sub a.b -95", "sub a.b");
  call(&c, "rc sub a.* -95", "sub a.*");
  call(&c, "rc unsub a.b -95", "unsub a.b");
  call(&c, "rc pub a.b -95", "pub a.b data");
  call(&c, "rc pub a.b -95", "pub a.b");
  call(&c, "rc req a.b -95", "req a.b 100 data");
  call(&c, "rc respond -95", "respond _INBOX.x data");
  /* A call that fails never calls its callback. */
  expect_none(&c, "reply ", 400);
  test_daemon_command(d, "cluster");
  ck_assert_msg(test_daemon_wait_log(d, "cluster: not configured (this node runs alone)", 5000),
                "%s", d->log);
  ck_assert_ptr_null(strstr(d->log, "cluster: node"));
  close_client(&c);
  node_stop(d);
}
END_TEST

/* ================= config errors ================= */

static const struct {
  const char *cluster; /* the "cluster" value */
  const char *a, *b;   /* one error line holds a, then b */
} bad_configs[] = {
    {"{\"nats\": [\"nats://127.0.0.1:4222\"]}", ": cluster: missing required key \"node\"", ""},
    {"{\"node\": \"eu-1\"}", ": cluster: missing required key \"nats\"", ""},
    {"{\"nats\": [\"nats://127.0.0.1:4222\"], \"node\": \"eu 1\"}", ": cluster.node: expected ",
     ", got \"eu 1\"\n"},
    {"{\"nats\": [\"nats://127.0.0.1:4222\"], \"node\": \"eu.1\"}", ": cluster.node: expected ",
     ", got \"eu.1\"\n"},
    {"{\"nats\": [\"nats://127.0.0.1:4222\"], \"node\": \"\"}", ": cluster.node: expected ",
     ", got \"\"\n"},
    {"{\"nats\": [\"nats://127.0.0.1:4222\"], \"node\": \"abcdefghijklmnopqrstuvwxyz0123456\"}",
     ": cluster.node: expected ", ", got \"abcdefghijklmnopqrstuvwxyz0123456\"\n"},
    {"{\"nats\": [\"nats://127.0.0.1:4222\"], \"node\": 7}", ": cluster.node: expected ",
     ", got 7\n"},
    {"{\"nats\": [], \"node\": \"eu-1\"}", ": cluster.nats: expected ", ", got an empty array\n"},
    {"{\"nats\": \"nats://127.0.0.1:4222\", \"node\": \"eu-1\"}", ": cluster.nats: expected ",
     ", got \"nats://127.0.0.1:4222\"\n"},
    {"{\"nats\": [\"http://127.0.0.1:4222\"], \"node\": \"eu-1\"}",
     ": cluster.nats[0]: expected ", ", got \"http://127.0.0.1:4222\"\n"},
    {"{\"nats\": [\"nats://127.0.0.1:4222\", \"nats://127.0.0.1:99999\"], \"node\": \"eu-1\"}",
     ": cluster.nats[1]: expected ", ", got \"nats://127.0.0.1:99999\"\n"},
    {"{\"nats\": [\"nats://\"], \"node\": \"eu-1\"}", ": cluster.nats[0]: expected ",
     ", got \"nats://\"\n"},
    {"{\"nats\": [\"nats://a\",\"nats://a\",\"nats://a\",\"nats://a\",\"nats://a\",\"nats://a\","
     "\"nats://a\",\"nats://a\",\"nats://a\",\"nats://a\",\"nats://a\",\"nats://a\",\"nats://a\","
     "\"nats://a\",\"nats://a\",\"nats://a\",\"nats://a\"], \"node\": \"eu-1\"}",
     ": cluster.nats: expected ", ", got an array\n"},
    {"{\"nats\": [\"nats://127.0.0.1:4222\"], \"node\": \"eu-1\", \"subject_prefix\": \"a..b\"}",
     ": cluster.subject_prefix: expected ", ", got \"a..b\"\n"},
    {"{\"nats\": [\"nats://127.0.0.1:4222\"], \"node\": \"eu-1\", \"heartbeat_ms\": 49}",
     ": cluster.heartbeat_ms: expected an integer 50..60000, got 49\n", ""},
    {"{\"nats\": [\"nats://127.0.0.1:4222\"], \"node\": \"eu-1\", \"heartbeat_ms\": 500, "
     "\"node_timeout_ms\": 500}",
     ": cluster.node_timeout_ms: expected an integer ", ", got 500\n"},
    {"{\"nats\": [\"nats://127.0.0.1:4222\"], \"node\": \"eu-1\", \"max_pending\": 0}",
     ": cluster.max_pending: expected an integer 1..10000000, got 0\n", ""},
    {"{\"nats\": [\"nats://127.0.0.1:4222\"], \"node\": \"eu-1\", \"max_pending_bytes\": 1023}",
     ": cluster.max_pending_bytes: expected an integer 1024..1073741824, got 1023\n", ""},
    {"{\"nats\": [\"nats://127.0.0.1:4222\"], \"nodes\": \"eu-1\"}",
     ": cluster.nodes: unknown key (did you mean \"node\"?)\n", ""},
};

START_TEST(test_bus_config_errors_refuse_to_start) {
  test_daemon *d = &g_node[0];
  char *json = malloc(4096);
  case_begin();
  for (size_t k = 0; k < sizeof(bad_configs) / sizeof(bad_configs[0]); k++) {
    snprintf(json, 4096,
             "{\"plugins\": [{\"name\": \"busprobe\", \"path\": \"@TESTPLUGINS@/busprobe@EXT@\"}], "
             "\"listeners\": [{\"port\": 0, \"plugin\": \"busprobe\"}], \"cluster\": %s}",
             bad_configs[k].cluster);
    /* --check and a real start refuse alike, and nothing is served. */
    for (int check = 1; check >= 0; check--) {
      int rc = test_daemon_run_to_exit(d, json, test_io_backend(_i), check ? "--check" : NULL);
      ck_assert_msg(rc == 1, "case %zu (%s): exit %d\n%s", k, check ? "--check" : "start", rc,
                    d->log);
      ck_assert_msg(log_line_has(d->log, bad_configs[k].a, bad_configs[k].b),
                    "case %zu (%s): no line with \"%s\" ... \"%s\" in:\n%s", k,
                    check ? "--check" : "start", bad_configs[k].a, bad_configs[k].b, d->log);
      if (check)
        ck_assert_msg(strstr(d->log, "is invalid"), "case %zu: %s", k, d->log);
      ck_assert_ptr_null(strstr(d->log, "pierd ready"));
      test_daemon_cleanup(d);
    }
  }
  /* The same members, valid: --check accepts them (no server needed). */
  snprintf(json, 4096,
           "{\"plugins\": [{\"name\": \"busprobe\", \"path\": \"@TESTPLUGINS@/busprobe@EXT@\"}], "
           "\"listeners\": [{\"port\": 0, \"plugin\": \"busprobe\"}], \"cluster\": {\"nats\": "
           "[\"nats://127.0.0.1:4222\", \"nats://[::1]:4223\", \"nats://localhost\"], \"node\": "
           "\"Eu_1-abcdefghijklmnopqrstuvwxyz\", \"subject_prefix\": \"game.eu-west_2\", "
           "\"heartbeat_ms\": 50, \"node_timeout_ms\": 51, \"max_pending\": 1, "
           "\"max_pending_bytes\": 1024, \"reconnect_buffer\": 1024}}");
  ck_assert_msg(test_daemon_run_to_exit(d, json, test_io_backend(_i), "--check") == 0, "%s",
                d->log);
  test_daemon_cleanup(d);
  free(json);
}
END_TEST

/* ================= subjects, sizes, limits ================= */

START_TEST(test_bus_subject_and_size_errors) {
  const node_opts o = {.name = "solo", .threading = "session"};
  test_daemon *d;
  client c;
  char s200[201], s201[202], want[512];
  case_begin();
  nats_start(&g_nats, 0);
  d = node_start(0, &o, test_io_backend(_i), 1);
  c = connect_client("solo", d->ports[0]);
  call(&c, "self solo", "self");

  /* Valid subscriptions, wildcards included; again is a no-op that is 0. */
  static const char *const good_sub[] = {"a", "a.b", "a.*", "*", ">", "a.>", "a.*.c", "A-b_c.9",
                                         "x$y.{z}"};
  for (size_t k = 0; k < sizeof(good_sub) / sizeof(good_sub[0]); k++) {
    snprintf(want, sizeof(want), "rc sub %s 0", good_sub[k]);
    call(&c, want, "sub %s", good_sub[k]);
    call(&c, want, "sub %s", good_sub[k]);
  }
  for (size_t k = 0; k < sizeof(good_sub) / sizeof(good_sub[0]); k++) {
    snprintf(want, sizeof(want), "rc unsub %s 0", good_sub[k]);
    call(&c, want, "unsub %s", good_sub[k]);
    snprintf(want, sizeof(want), "rc unsub %s -2", good_sub[k]);
    call(&c, want, "unsub %s", good_sub[k]);
  }
  call(&c, "rc unsub never.subscribed -2", "unsub never.subscribed");

  /* Bad for every entry: empty, empty tokens, space, control and non-ASCII
   * bytes, '*' or '>' inside a token, '>' not last, over 200 bytes. */
  memset(s200, 'a', 200);
  s200[200] = '\0';
  for (int k = 1; k < 199; k += 2)
    s200[k] = '.';
  memcpy(s201, s200, 200);
  s201[200] = 'b';
  s201[201] = '\0';
  const char *const bad[] = {"%00", "a..b", ".a", "a.", ".", "a%20b", "%20", "a%09b",
                             "a%0Ab", "caf%C3%A9", "a%7Fb", "a*", "a.b*", "*a", "a>", "a.>.b",
                             ">.a", "a.**", s201};
  for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
    snprintf(want, sizeof(want), "rc sub %s -22", bad[k]);
    call(&c, want, "sub %s", bad[k]);
    snprintf(want, sizeof(want), "rc unsub %s -22", bad[k]);
    call(&c, want, "unsub %s", bad[k]);
    snprintf(want, sizeof(want), "rc pub %s -22", bad[k]);
    call(&c, want, "pub %s x", bad[k]);
    snprintf(want, sizeof(want), "rc req %s -22", bad[k]);
    call(&c, want, "req %s 1000 x", bad[k]);
  }
  /* Wildcards are for subscribe only. */
  const char *const wild[] = {"*", ">", "a.*", "a.>", "*.b", "a.*.c"};
  for (size_t k = 0; k < sizeof(wild) / sizeof(wild[0]); k++) {
    snprintf(want, sizeof(want), "rc pub %s -22", wild[k]);
    call(&c, want, "pub %s x", wild[k]);
    snprintf(want, sizeof(want), "rc req %s -22", wild[k]);
    call(&c, want, "req %s 1000 x", wild[k]);
  }
  /* 200 bytes is a subject; a request's timeout is 1..600000 ms. */
  snprintf(want, sizeof(want), "rc sub %s 0", s200);
  call(&c, want, "sub %s", s200);
  snprintf(want, sizeof(want), "rc pub %s 0", s200);
  call(&c, want, "pub %s long", s200);
  expect_msg(&c, s200, "long");
  snprintf(want, sizeof(want), "rc unsub %s 0", s200);
  call(&c, want, "unsub %s", s200);
  call(&c, "rc req t.x -22", "req t.x 0 x");
  call(&c, "rc req t.x -22", "req t.x 600001 x");
  call(&c, "rc respond -22", "respond %%00 x");
  call(&c, "rc respond -22", "respond a%%20b x");
  /* A callback that is never called: none of the refused requests replied. */
  expect_none(&c, "reply ", 300);

  /* Payloads: up to PIER_BUS_PAYLOAD_MAX (the server's default max_payload
   * is that too), one byte more is -EMSGSIZE. */
  call(&c, "rc sub big 0", "sub big");
  snprintf(want, sizeof(want), "rc pubbig big -%d", EMSGSIZE);
  call(&c, want, "pubbig big %d", PIER_BUS_PAYLOAD_MAX + 1);
  snprintf(want, sizeof(want), "rc reqbig big -%d", EMSGSIZE);
  call(&c, want, "reqbig big 1000 %d", PIER_BUS_PAYLOAD_MAX + 1);
  call(&c, "rc pubbig big 0", "pubbig big %d", PIER_BUS_PAYLOAD_MAX);
  {
    char head[64];
    event *e;
    snprintf(head, sizeof(head), "msg big %d -", PIER_BUS_PAYLOAD_MAX);
    e = take(&c, head, 1, 10000);
    ck_assert_msg(e, "no \"%s\"; pending:\n%s", head, pending(&c));
    for (size_t k = 0; k < e->len; k++)
      ck_assert_int_eq(e->data[k], 'x');
  }
  expect_none(&c, "msg big", 300); /* the refused ones never went out */
  call(&c, "rc unsub big 0", "unsub big");

  /* PIER_SUBSCRIPTIONS_MAX subscriptions; one more is -ENOSPC, one already
   * held is still a no-op; a free slot takes it. */
  snprintf(want, sizeof(want), "rc subn n %d 0", PIER_SUBSCRIPTIONS_MAX);
  call(&c, want, "subn n %d", PIER_SUBSCRIPTIONS_MAX);
  snprintf(want, sizeof(want), "rc sub one.more -%d", ENOSPC);
  call(&c, want, "sub one.more");
  call(&c, "rc sub n.7 0", "sub n.7");
  call(&c, "rc unsub n.0 0", "unsub n.0");
  call(&c, "rc sub one.more 0", "sub one.more");
  snprintf(want, sizeof(want), "rc sub two.more -%d", ENOSPC);
  call(&c, want, "sub two.more");
  /* They all work: the last one gets its message. */
  call(&c, "rc pub n.1023 0", "pub n.1023 last");
  expect_msg(&c, "n.1023", "last");
  snprintf(want, sizeof(want), "rc unsubn n %d -2", PIER_SUBSCRIPTIONS_MAX - 1);
  call(&c, want, "unsubn n %d", PIER_SUBSCRIPTIONS_MAX);
  call(&c, "rc sub two.more 0", "sub two.more");
  close_client(&c);
  node_stop(d);
  nats_kill(&g_nats);
}
END_TEST

/* ================= the wire ================= */

/* A plugin's subject S is <prefix>.<plugin>.S on NATS, both ways; presence
 * is JSON on <prefix>.$pier.presence, "down" once at a clean stop. */
START_TEST(test_bus_wire_subjects_and_presence) {
  const node_opts o = {.name = "w1", .threading = "serial", .probe = "\"subs\": \"from.>\"",
                       .cluster = ", \"subject_prefix\": \"game.eu\""};
  test_daemon *d;
  client c;
  raw *r = malloc(sizeof(*r));
  char subject[256], data[1024];
  size_t len;
  case_begin();
  nats_start(&g_nats, 0);
  raw_open(r, g_nats.port, "SUB game.eu.> 1\r\n");
  /* Its INFO and PONG are read (and nothing is on the bus yet). */
  ck_assert(raw_msg(r, "", subject, sizeof(subject), data, sizeof(data), &len, 300) == 0);
  d = node_start(0, &o, test_io_backend(_i), 1);
  c = connect_client("w1", d->ports[0]);
  barrier(&c);
  call(&c, "rc pub x.y 0", "pub x.y hi there");
  ck_assert(raw_msg(r, "game.eu.busprobe.x", subject, sizeof(subject), data, sizeof(data), &len,
                    5000));
  ck_assert_str_eq(subject, "game.eu.busprobe.x.y");
  ck_assert_str_eq(data, "hi there");
  /* From the bus: the plugin sees the subject without prefix and name. */
  raw_send(r, "PUB game.eu.busprobe.from.raw 5\r\nab\r\nc\r\n");
  raw_send(r, "PUB game.eu.busother.from.raw 3\r\nnot\r\n");
  raw_send(r, "PUB game.eu.from.raw 3\r\nnot\r\n");
  raw_send(r, "PUB game.eu.busprobe.from.raw.end 3\r\nend\r\n");
  expect_msg(&c, "from.raw", "ab\r\nc");
  expect_msg(&c, "from.raw.end", "end");
  expect_none(&c, "msg ", 200);
  /* Presence: {"node":"w1","id":"<16 hex>","state":"up","sessions":N}. */
  ck_assert(raw_msg(r, "game.eu.$pier.presence", subject, sizeof(subject), data, sizeof(data),
                    &len, 3000));
  {
    const char *p = data;
    ck_assert_msg(strncmp(p, "{\"node\":\"w1\",\"id\":\"", 19) == 0, "presence: %s", data);
    p += 19;
    for (int k = 0; k < 16; k++, p++)
      ck_assert_msg(strchr("0123456789abcdef", *p) && *p, "presence id: %s", data);
    ck_assert_msg(strncmp(p, "\",\"state\":\"up\",\"sessions\":1}", 28) == 0 && !p[28],
                  "presence: %s", data);
  }
  close_client(&c);
  node_stop(d);
  /* The goodbye, then nothing more from it. */
  {
    int downs = 0;
    while (raw_msg(r, "game.eu.$pier.presence", subject, sizeof(subject), data, sizeof(data),
                   &len, 3 * HEARTBEAT_MS)) {
      if (strstr(data, "\"state\":\"down\""))
        downs++;
      else
        ck_assert_msg(downs == 0, "presence after the goodbye: %s", data);
    }
    ck_assert_int_eq(downs, 1);
  }
  close(r->fd);
  free(r);
  nats_kill(&g_nats);
}
END_TEST

/* ================= two nodes ================= */

static void two_nodes(const char *backend, const char *threading, client *a, client *b,
                      client *ao, client *bo) {
  node_opts oa = {.name = "a", .threading = threading, .other = 1};
  node_opts ob = {.name = "b", .threading = threading, .other = 1};
  nats_start(&g_nats, 0);
  node_start(0, &oa, backend, 1);
  node_start(1, &ob, backend, 1);
  /* Each plugin has been told of the other node before its clients connect,
   * so no node event reaches them in the middle of a case. */
  ck_assert_msg(test_daemon_wait_log(&g_node[0], "busprobe: node b up", 10000), "%s",
                g_node[0].log);
  ck_assert_msg(test_daemon_wait_log(&g_node[1], "busprobe: node a up", 10000), "%s",
                g_node[1].log);
  if (ao || bo) {
    ck_assert_msg(test_daemon_wait_log(&g_node[0], "busother: node b up", 10000), "%s",
                  g_node[0].log);
    ck_assert_msg(test_daemon_wait_log(&g_node[1], "busother: node a up", 10000), "%s",
                  g_node[1].log);
  }
  *a = connect_client("a", g_node[0].ports[0]);
  *b = connect_client("b", g_node[1].ports[0]);
  if (ao)
    *ao = connect_client("a/busother", g_node[0].ports[1]);
  if (bo)
    *bo = connect_client("b/busother", g_node[1].ports[1]);
}

static void pubsub(const char *backend, const char *threading) {
  client a, b, ao, bo;
  unsigned char bin[259];
  char hex[sizeof(bin) * 2 + 1];
  case_begin();
  two_nodes(backend, threading, &a, &b, &ao, &bo);
  call(&a, "self a", "self");
  call(&b, "self b", "self");
  call(&bo, "self b", "self");

  call(&b, "rc sub t.one 0", "sub t.one");
  call(&b, "rc sub w.* 0", "sub w.*");
  call(&b, "rc sub w2.> 0", "sub w2.>");
  barrier(&b);

  /* Byte-exact across nodes: text, binary (every byte value, newlines,
   * NULs), empty. */
  call(&a, "rc pub t.one 0", "pub t.one hello there");
  expect_msg(&b, "t.one", "hello there");
  for (size_t k = 0; k < sizeof(bin); k++)
    bin[k] = k < 256 ? (unsigned char)(255 - k) : (unsigned char)"\n\r\0"[k - 256];
  for (size_t k = 0; k < sizeof(bin); k++)
    snprintf(hex + 2 * k, 3, "%02x", bin[k]);
  call(&a, "rc pubx t.one 0", "pubx t.one %s", hex);
  expect_msg_at(&b, "t.one", bin, sizeof(bin), NULL, __LINE__);
  call(&a, "rc pub t.one 0", "pub t.one");
  expect_msg_at(&b, "t.one", "", 0, NULL, __LINE__);
  /* The publisher is not subscribed: nothing came back to it. */
  expect_none(&a, "msg ", 100);

  /* Wildcards as NATS has them: '*' one token, '>' one or more. */
  call(&a, "rc pub w.a 0", "pub w.a 1");
  call(&a, "rc pub w.a.b 0", "pub w.a.b 2");
  call(&a, "rc pub w 0", "pub w 3");
  call(&a, "rc pub w2.a 0", "pub w2.a 4");
  call(&a, "rc pub w2.a.b.c 0", "pub w2.a.b.c 5");
  call(&a, "rc pub w2 0", "pub w2 6");
  call(&a, "rc pub wx.a 0", "pub wx.a 7");
  call(&a, "rc pub t.one 0", "pub t.one end");
  ck_assert_msg(take(&b, "msg t.one 3 -", 1, 5000), "b: no end marker; pending:\n%s",
                pending(&b));
  ck_assert_msg(b.nev == 3, "b: expected w.a, w2.a, w2.a.b.c; got:\n%s", pending(&b));
  expect_msg(&b, "w.a", "1");
  expect_msg(&b, "w2.a", "4");
  expect_msg(&b, "w2.a.b.c", "5");

  /* A plugin gets its own messages. */
  call(&a, "rc sub t.echo 0", "sub t.echo");
  barrier(&a);
  call(&a, "rc pub t.echo 0", "pub t.echo me");
  expect_msg(&a, "t.echo", "me");
  expect_none(&b, "msg t.echo", 100);

  /* Unsubscribe stops delivery: the message after it (same publisher) is
   * there, the one on the dropped subject is not. */
  call(&b, "rc unsub t.one 0", "unsub t.one");
  barrier(&b);
  call(&a, "rc pub t.one 0", "pub t.one gone");
  call(&a, "rc pub w.z 0", "pub w.z last");
  expect_msg(&b, "w.z", "last");
  expect_none(&b, "msg t.one", 0);

  /* Namespaces: busother's subjects never reach busprobe, nor the
   * reverse, even with '>' and the same subject. */
  call(&bo, "rc sub > 0", "sub >");
  call(&bo, "rc sub w.q 0", "sub w.q");
  barrier(&bo);
  call(&b, "rc sub > 0", "sub >");
  barrier(&b);
  call(&ao, "rc pub w.q 0", "pub w.q other");
  call(&a, "rc pub w.q 0", "pub w.q probe");
  /* busother's "w.q": one message per matching subscription is NATS's
   * way; at least one must come, and only busother's payload. */
  expect_msg(&bo, "w.q", "other");
  expect_msg(&b, "w.q", "probe");
  usleep(300000);
  pump(&b, 0);
  pump(&bo, 0);
  for (size_t k = 0; k < b.nev; k++)
    ck_assert_msg(!b.ev[k].data || strcmp(b.ev[k].data, "other") != 0,
                  "busprobe got busother's message: %s", b.ev[k].head);
  for (size_t k = 0; k < bo.nev; k++)
    ck_assert_msg(!bo.ev[k].data || strcmp(bo.ev[k].data, "probe") != 0,
                  "busother got busprobe's message: %s", bo.ev[k].head);
  close_client(&a);
  close_client(&b);
  close_client(&ao);
  close_client(&bo);
  node_stop(&g_node[0]);
  node_stop(&g_node[1]);
  nats_kill(&g_nats);
}

START_TEST(test_bus_pubsub_serial) { pubsub(test_io_backend(_i), "serial"); }
END_TEST

START_TEST(test_bus_pubsub_session) { pubsub(test_io_backend(_i), "session"); }
END_TEST

/* ================= request / respond ================= */

START_TEST(test_bus_request_respond) {
  client a, b;
  event *e;
  char inbox[256];
  uint64_t t0;
  case_begin();
  two_nodes(test_io_backend(_i), "session", &a, &b, NULL, NULL);
  call(&b, "rc sub svc.* 0", "sub svc.*");
  call(&b, "rc respond-on 0", "respond-on");
  barrier(&b);

  /* Across nodes: the responder sees a reply address, the caller the
   * answer, once. */
  call(&a, "rc req svc.echo 0", "req svc.echo 2000 ping");
  expect_msg_at(&b, "svc.echo", "ping", 4, "", __LINE__);
  ck_assert_str_ne(strrchr(g_taken.head, ' ') + 1, "-");
  expect_line(&a, "reply 0 re:ping");
  expect_none(&a, "reply ", 300);

  /* Nobody answers within the timeout: -ETIMEDOUT, once, not early. */
  call(&b, "rc respond-off 0", "respond-off");
  t0 = now_ms();
  call(&a, "rc req svc.slow 0", "req svc.slow 300 wait");
  expect_line(&a, "reply -%d ", ETIMEDOUT);
  ck_assert_uint_ge(now_ms() - t0, 290);
  ck_assert_uint_le(now_ms() - t0, 2000);
  expect_none(&a, "reply ", 300);

  /* Nobody subscribes: -EHOSTUNREACH, well before the timeout. */
  t0 = now_ms();
  call(&a, "rc req nobody.here 0", "req nobody.here 5000 x");
  expect_line(&a, "reply -%d ", EHOSTUNREACH);
  ck_assert_uint_lt(now_ms() - t0, 2500);

  /* An answer given later, from another callback: the reply address was
   * copied; a second answer is not a second reply. */
  call(&a, "rc req svc.later 0", "req svc.later 5000 manual");
  e = take(&b, "msg svc.later 6 ", 0, 5000);
  ck_assert_msg(e, "b: no request; pending:\n%s", pending(&b));
  snprintf(inbox, sizeof(inbox), "%s", strrchr(e->head, ' ') + 1);
  expect_none(&a, "reply ", 200);
  call(&b, "rc respond 0", "respond %s much later", inbox);
  expect_line(&a, "reply 0 much later");
  say(&b, "respond %s again", inbox);
  expect_none(&a, "reply ", 300);

  /* Two responders (b and a itself): the first reply, exactly once. */
  call(&a, "rc sub svc.* 0", "sub svc.*");
  call(&a, "rc respond-on 0", "respond-on");
  call(&b, "rc respond-on 0", "respond-on");
  barrier(&a);
  call(&a, "rc req svc.both 0", "req svc.both 2000 two");
  expect_line(&a, "reply 0 re:two");
  expect_none(&a, "reply ", 300);
  close_client(&a);
  close_client(&b);
  node_stop(&g_node[0]);
  node_stop(&g_node[1]);
  nats_kill(&g_nats);
}
END_TEST

/* Requests waiting at once are capped per plugin; each gets its outcome
 * exactly once; one still waiting when the node stops gets -ECANCELED. */
START_TEST(test_bus_requests_capped_and_cancelled) {
  client a, b;
  char want[128];
  case_begin();
  two_nodes(test_io_backend(_i), "session", &a, &b, NULL, NULL);
  call(&b, "rc sub sink 0", "sub sink"); /* subscribed, never answers */
  barrier(&b);
  snprintf(want, sizeof(want), "rc reqn sink %d %d", PIER_REQUESTS_MAX, -ENOSPC);
  call(&a, want, "reqn sink %d 2000", PIER_REQUESTS_MAX + 1);
  /* Once they timed out the table has room again. */
  for (int tries = 0;; tries++) {
    char line[128];
    snprintf(line, sizeof(line), "rc replies 0 %d 0", PIER_REQUESTS_MAX);
    say(&a, "replies");
    event *e = take(&a, "rc replies ", 0, 5000);
    ck_assert_msg(e, "no answer to replies; pending:\n%s", pending(&a));
    if (strcmp(e->head, line) == 0)
      break;
    ck_assert_msg(tries < 100, "after the timeouts: %s", e->head);
    usleep(100000);
  }
  call(&a, "rc reqn sink 1 0", "reqn sink 1 60000");
  close_client(&a);
  node_stop(&g_node[0]);
  ck_assert_msg(strstr(g_node[0].log, "busprobe: reply -" ) &&
                    log_line_has(g_node[0].log, "busprobe: reply ", "-125"),
                "no cancelled reply in:\n%s", g_node[0].log);
  ck_assert_int_eq(test_count(g_node[0].log, "busprobe: reply -"), 1);
  close_client(&b);
  node_stop(&g_node[1]);
  nats_kill(&g_nats);
}
END_TEST

/* What another process puts on pier's own subjects: garbage is ignored
 * (and said), a well-formed stranger is a node like any other, one using
 * this node's name is reported; the operator sees it all in `cluster`,
 * `status` and `metrics`. */
START_TEST(test_bus_presence_from_elsewhere_and_views) {
  const node_opts o = {.name = "w1", .threading = "serial"};
  test_daemon *d;
  client c;
  raw *r = malloc(sizeof(*r));
  static char out[65536], err[4096];
  const char *sock;
  char big[2100], line[256];
  case_begin();
  nats_start(&g_nats, 0);
  d = node_start(0, &o, test_io_backend(_i), 1);
  c = connect_client("w1", d->ports[0]);
  barrier(&c);
  raw_open(r, g_nats.port, "");
  raw_pub(r, "pier.$pier.presence", "not json");
  raw_pub(r, "pier.$pier.presence", "{\"node\":\"x y\",\"id\":\"0123456789abcdef\",\"state\":\"up\"}");
  raw_pub(r, "pier.$pier.presence", "{\"node\":\"g\",\"id\":\"0123456789abcdeX\",\"state\":\"up\"}");
  memset(big, ' ', sizeof(big));
  snprintf(line, sizeof(line), "PUB pier.$pier.presence %zu\r\n", sizeof(big));
  raw_send(r, line);
  test_send_all(r->fd, big, sizeof(big));
  raw_send(r, "\r\n");
  raw_pub(r, "pier.$pier.presence", "{\"node\":\"neg\",\"id\":\"00000000000000dd\","
                                    "\"state\":\"up\",\"sessions\":-1}");
  raw_pub(r, "pier.$pier.presence", "{\"node\":\"str\",\"id\":\"00000000000000dd\","
                                    "\"state\":\"up\",\"sessions\":\"x\"}");
  raw_pub(r, "pier.$pier.presence", "{\"node\":\"tail\",\"id\":\"00000000000000dd\","
                                    "\"state\":\"up\",\"sessions\":1} {}");
  raw_pub(r, "pier.$pier.claim.w1", "abc"); /* no reply address: nothing to answer */
  ck_assert(test_daemon_wait_log(d, "cluster: ignored a presence message: not one {\"node\","
                                    "\"id\",\"state\",\"sessions\"} object as pierd writes it",
                                 5000));
  ck_assert(test_daemon_wait_log(d, "cluster: ignored a presence message: over 1024 bytes", 5000));
  expect_none(&c, "node ", 300);
  /* A stranger in pierd's format is a node: up, then gone when silent. */
  raw_pub(r, "pier.$pier.presence", "{\"node\":\"ghost\",\"id\":\"00000000000000aa\","
              "\"state\":\"up\",\"sessions\":7}");
  expect_line(&c, "node ghost up");
  sock = test_daemon_admin(d, 10000);
  ck_assert_ptr_nonnull(sock);
  {
    const char *args[] = {"--socket", sock, "cluster", NULL};
    ck_assert_int_eq(test_daemon_pierctl(args, out, sizeof(out), err, sizeof(err), 10000), 0);
    const char *want = "NODE                              STATE  SESSIONS  LAST SEEN\n"
                       "w1                                self          1  -\n"
                       "ghost                             up            7  ";
    ck_assert_msg(strncmp(out, want, strlen(want)) == 0,
                  "cluster:\n%s\n(stderr: %s)", out, err);
    ck_assert_msg(strstr(out, " s ago\n"), "cluster:\n%s", out);
  }
  {
    const char *args[] = {"--socket", sock, "metrics", NULL};
    ck_assert_int_eq(test_daemon_pierctl(args, out, sizeof(out), err, sizeof(err), 10000), 0);
    ck_assert_msg(strstr(out, "\npier_bus_connected 1\n") && strstr(out, "\npier_cluster_nodes_up 1\n") &&
                      strstr(out, "\npier_bus_reconnects_total 0\n") &&
                      strstr(out, "\npier_bus_dropped_total{direction=\"in\"} 0\n") &&
                      strstr(out, "\npier_bus_dropped_total{direction=\"out\"} 0\n"),
                  "metrics:\n%s", out);
  }
  /* The same name from another process: back as a new process, its old
   * self gone. */
  raw_pub(r, "pier.$pier.presence", "{\"node\":\"ghost\",\"id\":\"00000000000000bb\","
              "\"state\":\"up\",\"sessions\":1}");
  ck_assert(test_daemon_wait_log(d, "cluster: node \"ghost\" restarted", 5000));
  expect_line(&c, "node ghost down");
  expect_line(&c, "node ghost up");
  /* This node's own name from elsewhere. */
  raw_pub(r, "pier.$pier.presence", "{\"node\":\"w1\",\"id\":\"00000000000000cc\","
              "\"state\":\"up\",\"sessions\":0}");
  ck_assert(test_daemon_wait_log(
      d, "cluster: another process (id 00000000000000cc) also calls itself node \"w1\"", 5000));
  /* Silent: gone. */
  ck_assert(test_daemon_wait_log(d, "cluster: node \"ghost\" is gone (not heard from for 1000 ms)",
                                 NODE_TIMEOUT_MS + 3000));
  expect_line(&c, "node ghost down");
  {
    const char *args[] = {"--socket", sock, "cluster", "--json", NULL};
    ck_assert_int_eq(test_daemon_pierctl(args, out, sizeof(out), err, sizeof(err), 10000), 0);
    ck_assert_msg(strstr(out, "{\"node\":\"ghost\",\"state\":\"gone\",\"sessions\":1,"
                              "\"last_seen_ms\":"),
                  "cluster --json:\n%s", out);
  }
  /* The node served throughout; its numbers count the barrier's message
   * (one out, one in) and this one. */
  call(&c, "rc pub x 0", "pub x y");
  {
    const char *args[] = {"--socket", sock, "status", NULL};
    char want[256];
    ck_assert_int_eq(test_daemon_pierctl(args, out, sizeof(out), err, sizeof(err), 10000), 0);
    snprintf(want, sizeof(want), "cluster: node w1, bus connected to %s; 0 other nodes up; "
                                 "messages in 1, out 2, dropped 0; reconnects 0\n", g_nats.url);
    ck_assert_msg(strstr(out, want), "status (want %s):\n%s", want, out);
  }
  close(r->fd);
  free(r);
  close_client(&c);
  node_stop(d);
  nats_kill(&g_nats);
}
END_TEST

/* ================= presence ================= */

START_TEST(test_bus_presence_up_gone_left) {
  node_opts oa = {.name = "pa", .threading = "serial"};
  node_opts ob = {.name = "pb", .threading = "session"};
  const char *be = test_io_backend(_i);
  client b;
  uint64_t t0, dt;
  char want[256];
  case_begin();
  nats_start(&g_nats, 0);
  node_start(1, &ob, be, 1);
  b = connect_client("pb", g_node[1].ports[0]);
  node_start(0, &oa, be, 1);
  expect_line(&b, "node pa up");
  ck_assert(test_daemon_wait_log(&g_node[1], "cluster: node \"pa\" is up\n", 3000));
  ck_assert(test_daemon_wait_log(&g_node[0], "cluster: node \"pb\" is up\n", 3000));
  ck_assert(test_daemon_wait_log(&g_node[0], "busprobe: node pb up", 3000));
  /* Heard again and again, announced once; never about itself. */
  usleep(5 * HEARTBEAT_MS * 1000);
  expect_none(&b, "node ", 0);
  /* (A text that never comes, without waiting: takes in the log so far.) */
  test_daemon_wait_log(&g_node[0], "\x01", 0);
  test_daemon_wait_log(&g_node[1], "\x01", 0);
  ck_assert_int_eq(test_count(g_node[1].log, "cluster: node \"pa\" is up"), 1);
  ck_assert_ptr_null(strstr(g_node[1].log, "busprobe: node pb"));
  ck_assert_ptr_null(strstr(g_node[0].log, "busprobe: node pa"));

  /* `cluster` on pb: itself first, then pa up. */
  {
    const char *args[] = {"--socket", test_daemon_admin(&g_node[1], 5000), "cluster", "--json",
                          NULL};
    static char out[8192], err[1024];
    ck_assert_int_eq(test_daemon_pierctl(args, out, sizeof(out), err, sizeof(err), 10000), 0);
    ck_assert_msg(strncmp(out, "{\"node\":\"pb\",\"connected\":true,\"url\":\"", 37) == 0,
                  "cluster --json: %s", out);
    ck_assert_msg(strstr(out, "{\"node\":\"pa\",\"state\":\"up\",\"sessions\":0,\"last_seen_ms\":"),
                  "cluster --json: %s", out);
  }

  /* Killed: gone after node_timeout_ms (not before its last heartbeat
   * could have aged that much), with the log line. */
  t0 = now_ms();
  node_kill(&g_node[0]);
  expect_none(&b, "node pa down", NODE_TIMEOUT_MS - HEARTBEAT_MS - 100);
  ck_assert_msg(take(&b, "node pa down", 1, NODE_TIMEOUT_MS + 1000),
                "pb: no \"node pa down\" within %d ms of the kill; pending:\n%s",
                2 * NODE_TIMEOUT_MS, pending(&b));
  dt = now_ms() - t0;
  ck_assert_uint_le(dt, 2 * NODE_TIMEOUT_MS);
  snprintf(want, sizeof(want), "cluster: node \"pa\" is gone (not heard from for %d ms)\n",
           NODE_TIMEOUT_MS);
  ck_assert_msg(test_daemon_wait_log(&g_node[1], want, 1000), "no \"%s\":\n%s", want,
                g_node[1].log);
  test_daemon_cleanup(&g_node[0]);

  /* Back (the same name is free again): up once more; a clean stop says
   * goodbye at once. */
  node_start(0, &oa, be, 1);
  expect_line(&b, "node pa up");
  for (uint64_t end = now_ms() + 2000;
       test_count(g_node[1].log, "cluster: node \"pa\" is up") < 2 && now_ms() < end;)
    test_daemon_wait_log(&g_node[1], "\x01", 20);
  ck_assert_int_eq(test_count(g_node[1].log, "cluster: node \"pa\" is up"), 2);
  t0 = now_ms();
  node_stop(&g_node[0]);
  ck_assert_msg(take(&b, "node pa down", 1, NODE_TIMEOUT_MS - HEARTBEAT_MS),
                "pb: no prompt \"node pa down\" after a clean stop; pending:\n%s", pending(&b));
  ck_assert_msg(test_daemon_wait_log(&g_node[1], "cluster: node \"pa\" left\n", 1000), "%s",
                g_node[1].log);
  /* ... and is not declared gone later. */
  expect_none(&b, "node ", NODE_TIMEOUT_MS + HEARTBEAT_MS);
  test_daemon_wait_log(&g_node[1], "\x01", 0);
  ck_assert_int_eq(test_count(g_node[1].log, "is gone (not heard"), 1);
  close_client(&b);
  node_stop(&g_node[1]);
  nats_kill(&g_nats);
}
END_TEST

/* ================= a name used twice ================= */

START_TEST(test_bus_duplicate_node_name_refused) {
  node_opts o = {.name = "dup", .threading = "serial"};
  const char *be = test_io_backend(_i);
  test_daemon *second = &g_node[1];
  client a;
  int rc;
  case_begin();
  nats_start(&g_nats, 0);
  node_start(0, &o, be, 1);
  a = connect_client("dup", g_node[0].ports[0]);
  node_json(g_text[1], sizeof(g_text[1]), &o);
  rc = test_daemon_run_to_exit(second, g_text[1], be, NULL);
  ck_assert_msg(rc == 1, "the second \"dup\" exited %d:\n%s", rc, second->log);
  ck_assert_msg(strstr(second->log, "cluster: node name \"dup\" is already used by a running "
                                    "node; give this one another cluster.node\n"),
                "%s", second->log);
  ck_assert_ptr_null(strstr(second->log, "pierd ready"));
  test_daemon_cleanup(second);
  ck_assert_msg(test_daemon_wait_log(&g_node[0], "cluster: refused a second node named \"dup\"\n",
                                     3000),
                "%s", g_node[0].log);
  /* The holder goes on, and sees no node come or go. */
  call(&a, "self dup", "self");
  barrier(&a);
  expect_none(&a, "node ", NODE_TIMEOUT_MS + HEARTBEAT_MS);
  close_client(&a);
  node_stop(&g_node[0]);
  nats_kill(&g_nats);
}
END_TEST

/* ================= reloads ================= */

/* Subscriptions stay across a reload; what is published meanwhile reaches
 * the new version, in order, none lost; the old on_unload's and the new
 * on_load's changes apply. */
START_TEST(test_bus_reload_keeps_subscriptions) {
  const char *be = test_io_backend(_i);
  node_opts oa = {.name = "ra", .threading = "serial"};
  node_opts ob = {.name = "rb", .threading = "serial",
                  .probe = "\"version\": \"1\", \"subs\": \"r.in x.gone\", \"unload_unsub\": "
                           "\"x.gone\""};
  node_opts ob2 = ob;
  client a, b;
  enum { N = 300 };
  ob2.probe = "\"version\": \"2\", \"reload_subs\": \"x.added\"";
  case_begin();
  nats_start(&g_nats, 0);
  node_start(0, &oa, be, 1);
  node_start(1, &ob, be, 1);
  a = connect_client("ra", g_node[0].ports[0]);
  b = connect_client("rb", g_node[1].ports[0]);
  call(&b, "ver 1 gen=1", "ver");
  barrier(&b);
  for (int i = 0; i < N; i++) {
    char want[64];
    snprintf(want, sizeof(want), "rc pub r.in 0");
    call(&a, want, "pub r.in %d", i);
    if (i == 100)
      node_reconfigure(1, &ob2);
    usleep(2000);
  }
  for (int i = 0; i < N; i++) {
    char num[16];
    snprintf(num, sizeof(num), "%d", i);
    expect_msg(&b, "r.in", num);
  }
  ck_assert_msg(test_daemon_wait_log(&g_node[1], "SIGHUP: reloaded busprobe: generation 2", 5000),
                "%s", g_node[1].log);
  ck_assert(strstr(g_node[1].log, "busprobe gen=1: unsubscribe x.gone: 0"));
  ck_assert(strstr(g_node[1].log, "busprobe gen=2: subscribe x.added: 0"));
  call(&b, "ver 2 gen=2", "ver");
  barrier(&b);
  call(&a, "rc pub x.gone 0", "pub x.gone g");
  call(&a, "rc pub x.added 0", "pub x.added a");
  call(&a, "rc pub r.in 0", "pub r.in after");
  expect_msg(&b, "x.added", "a");
  expect_msg(&b, "r.in", "after");
  expect_none(&b, "msg ", 0);
  /* Subscribing again to what the plugin holds is a no-op. */
  call(&b, "rc sub r.in 0", "sub r.in");
  call(&b, "rc unsub r.in 0", "unsub r.in");
  call(&b, "rc unsub r.in -2", "unsub r.in");
  close_client(&a);
  close_client(&b);
  node_stop(&g_node[0]);
  node_stop(&g_node[1]);
  nats_kill(&g_nats);
}
END_TEST

/* A reload whose on_load fails: the subscriptions are exactly what they
 * were, whatever the old on_unload and the failed on_load did. */
START_TEST(test_bus_failed_reload_keeps_subscriptions) {
  const char *be = test_io_backend(_i);
  node_opts oa = {.name = "fa", .threading = "session"};
  node_opts ob = {.name = "fb", .threading = "session",
                  .probe = "\"version\": \"1\", \"subs\": \"a.keep b.keep\", \"unload_unsub\": "
                           "\"a.keep\""};
  node_opts bad = ob, good = ob;
  client a, b;
  /* The failing version's own message to c.new comes back while the reload
   * holds events: the version restored must not get it. */
  bad.probe = "\"version\": \"2\", \"fail\": 1, \"reload_subs\": \"c.new\", \"reload_unsub\": "
              "\"b.keep\", \"reload_pub\": \"c.new\", \"load_sleep_ms\": 300";
  good.probe = "\"version\": \"3\"";
  case_begin();
  nats_start(&g_nats, 0);
  node_start(0, &oa, be, 1);
  node_start(1, &ob, be, 1);
  a = connect_client("fa", g_node[0].ports[0]);
  b = connect_client("fb", g_node[1].ports[0]);
  barrier(&b);
  node_reconfigure(1, &bad);
  ck_assert_msg(test_daemon_wait_log(&g_node[1], "restored as generation 3", 10000), "%s",
                g_node[1].log);
  ck_assert(log_line_has(g_node[1].log, "SIGHUP: reload busprobe failed at on_load", ""));
  /* What each step did, as the plugin saw it. */
  ck_assert(strstr(g_node[1].log, "busprobe gen=1: unsubscribe a.keep: 0"));
  ck_assert(strstr(g_node[1].log, "busprobe gen=2: subscribe c.new: 0"));
  ck_assert(strstr(g_node[1].log, "busprobe gen=2: unsubscribe b.keep: 0"));
  ck_assert(strstr(g_node[1].log, "busprobe gen=2: publish c.new: 0"));
  call(&b, "ver 1 gen=3", "ver");
  barrier(&b);
  call(&a, "rc pub c.new 0", "pub c.new n");
  call(&a, "rc pub a.keep 0", "pub a.keep k1");
  call(&a, "rc pub b.keep 0", "pub b.keep k2");
  expect_msg(&b, "a.keep", "k1");
  expect_msg(&b, "b.keep", "k2");
  expect_none(&b, "msg ", 200);
  /* The restored version's state of things is the plugin's: it can drop
   * what it held before, and c.new was never its own. */
  call(&b, "rc unsub c.new -2", "unsub c.new");

  /* A reload that succeeds applies the old on_unload's unsubscribe. */
  node_reconfigure(1, &good);
  ck_assert_msg(test_daemon_wait_log(&g_node[1], "SIGHUP: reloaded busprobe: generation 4",
                                     10000),
                "%s", g_node[1].log);
  call(&b, "ver 3 gen=4", "ver");
  barrier(&b);
  call(&a, "rc pub a.keep 0", "pub a.keep k3");
  call(&a, "rc pub b.keep 0", "pub b.keep k4");
  expect_msg(&b, "b.keep", "k4");
  expect_none(&b, "msg ", 0);
  close_client(&a);
  close_client(&b);
  node_stop(&g_node[0]);
  node_stop(&g_node[1]);
  nats_kill(&g_nats);
}
END_TEST

/* ================= a slow consumer ================= */

START_TEST(test_bus_slow_consumer_drops_and_survives) {
  const char *be = test_io_backend(_i);
  node_opts oa = {.name = "sa", .threading = "session"};
  node_opts ob = {.name = "sb", .threading = "session",
                  .probe = "\"subs\": \"flood\", \"sleep_ms\": 10",
                  .cluster = ", \"max_pending\": 50"};
  client a, b;
  enum { N = 2000 };
  long delivered = 0, dropped, logged = 0, lines = 0, prev = -1;
  uint64_t t0, t1;
  case_begin();
  nats_start(&g_nats, 0);
  node_start(0, &oa, be, 1);
  node_start(1, &ob, be, 1);
  a = connect_client("sa", g_node[0].ports[0]);
  b = connect_client("sb", g_node[1].ports[0]);
  call(&b, "rc sleep 0", "sleep 0");
  barrier(&b);
  call(&b, "rc sleep 0", "sleep 10");
  t0 = now_ms();
  {
    char want[64];
    snprintf(want, sizeof(want), "rc flood flood %d", N);
    call(&a, want, "flood flood %d", N);
  }
  ck_assert_msg(test_daemon_wait_log(&g_node[1], "cluster: plugin \"busprobe\": subscription "
                                                 "\"flood\" is a slow consumer: ",
                                     5000),
                "%s", g_node[1].log);
  /* Delivered until it stops, in order, each once. */
  for (;;) {
    char num[16];
    event *e = take(&b, "msg flood ", 0, 1000);
    if (!e)
      break;
    snprintf(num, sizeof(num), "%ld", strtol(e->data, NULL, 10));
    ck_assert_str_eq(num, e->data);
    ck_assert_int_gt(strtol(e->data, NULL, 10), prev);
    prev = strtol(e->data, NULL, 10);
    delivered++;
  }
  t1 = now_ms();
  ck_assert_int_ge(delivered, 50);
  ck_assert_int_lt(delivered, N);
  dropped = (long)status_cluster(&g_node[1], "dropped");
  ck_assert_msg(dropped == N - delivered, "status says %ld dropped, %ld of %d were delivered",
                dropped, delivered, N);
  /* Logged once a second with that second's count and the limit: the lines
   * add up to every drop (the last one comes within a second of it). */
  for (int tries = 0;; tries++) {
    test_daemon_wait_log(&g_node[1], "\x01", 0);
    logged = lines = 0;
    for (const char *p = g_node[1].log;
         (p = strstr(p, "cluster: plugin \"busprobe\": subscription \"flood\" is a slow "
                        "consumer: "));
         p++) {
      long n = 0;
      char tail[64];
      const char *q = strstr(p, "consumer: ") + 10;
      ck_assert_int_eq(sscanf(q, "%ld messages dropped (max_pending 50%63[)]", &n, tail), 2);
      ck_assert_int_gt(n, 0);
      logged += n;
      lines++;
    }
    if (logged >= dropped || tries == 30)
      break;
    usleep(100000);
  }
  t1 = now_ms();
  ck_assert_int_ge(lines, 1);
  ck_assert_int_le(lines, (long)((t1 - t0) / 1000) + 1);
  ck_assert_int_eq(logged, dropped);
  /* It survived, and the subscription goes on. */
  call(&b, "rc sleep 0", "sleep 0");
  call(&a, "rc pub flood 0", "pub flood after");
  expect_msg(&b, "flood", "after");
  close_client(&a);
  close_client(&b);
  node_stop(&g_node[0]);
  node_stop(&g_node[1]);
  nats_kill(&g_nats);
}
END_TEST

/* ================= the server goes away ================= */

START_TEST(test_bus_nats_restart_resumes) {
  const char *be = test_io_backend(_i);
  node_opts oa = {.name = "na", .threading = "serial", .cluster = ", \"reconnect_buffer\": 4096"};
  node_opts ob = {.name = "nb", .threading = "session"};
  client a, b;
  char down[256], back[256], enobufs[640], more[640];
  uint16_t port;
  case_begin();
  nats_start(&g_nats, 0);
  port = g_nats.port;
  node_start(0, &oa, be, 1);
  node_start(1, &ob, be, 1);
  a = connect_client("na", g_node[0].ports[0]);
  b = connect_client("nb", g_node[1].ports[0]);
  call(&a, "rc sub t.r 0", "sub t.r");
  call(&b, "rc sub t.r 0", "sub t.r");
  barrier(&a);
  barrier(&b);
  call(&a, "rc pub t.r 0", "pub t.r before");
  expect_msg(&b, "t.r", "before");
  expect_msg(&a, "t.r", "before");

  nats_kill(&g_nats);
  snprintf(down, sizeof(down),
           "cluster: bus disconnected (%s): local sessions carry on; cross-node delivery "
           "resumes on reconnect\n",
           g_nats.url);
  snprintf(back, sizeof(back), "cluster: bus reconnected to %s\n", g_nats.url);
  ck_assert_msg(test_daemon_wait_log(&g_node[0], down, 5000), "%s", g_node[0].log);
  ck_assert_msg(test_daemon_wait_log(&g_node[1], down, 5000), "%s", g_node[1].log);
  /* Local work goes on; a publish is kept for the reconnect while the
   * buffer has room; once it is full, one is refused with -ENOBUFS and
   * counted. 8 KiB into a 4 KiB buffer: refused at once, or taken and
   * filling it, so that the next one is refused. */
  call(&a, "self na", "self");
  call(&a, "rc pub t.r 0", "pub t.r during");
  say(&a, "pubbig t.r 8192");
  ck_assert_ptr_nonnull(take(&a, "rc pubbig t.r ", 0, 5000));
  snprintf(enobufs, sizeof(enobufs), "%s", g_taken.head);
  say(&a, "pub t.r more");
  ck_assert_ptr_nonnull(take(&a, "rc pub t.r ", 0, 5000));
  snprintf(more, sizeof(more), "%s", g_taken.head);
  ck_assert_str_eq(status_cluster_text(&g_node[0], "connected"), "false");
  nats_start(&g_nats, port);
  ck_assert_msg(test_daemon_wait_log(&g_node[0], back, 15000), "%s", g_node[0].log);
  ck_assert_msg(test_daemon_wait_log(&g_node[1], back, 15000), "%s", g_node[1].log);
  /* The kept message went out: its own subscription is back before it. */
  expect_msg(&a, "t.r", "during");
  barrier(&b);
  barrier(&a);
  call(&a, "rc pub t.r 0", "pub t.r after");
  expect_msg(&b, "t.r", "after");
  expect_msg(&a, "t.r", "after");
  /* One line per transition. */
  usleep(1000000);
  for (int k = 0; k < 2; k++) {
    test_daemon_wait_log(&g_node[k], "\x01", 0);
    ck_assert_int_eq(test_count(g_node[k].log, down), 1);
    ck_assert_int_eq(test_count(g_node[k].log, back), 1);
    ck_assert_int_eq(status_cluster(&g_node[k], "reconnects"), 1);
  }
  /* Checked last, so that the rest is known however this goes. */
  ck_assert_msg((strcmp(enobufs, "rc pubbig t.r -105") == 0 && strcmp(more, "rc pub t.r 0") == 0) ||
                    (strcmp(enobufs, "rc pubbig t.r 0") == 0 &&
                     strcmp(more, "rc pub t.r -105") == 0),
                "with the reconnect buffer full, no -ENOBUFS: \"%s\", then \"%s\"", enobufs,
                more);
  ck_assert_int_eq(status_cluster(&g_node[0], "dropped"), 1);
  close_client(&a);
  close_client(&b);
  node_stop(&g_node[0]);
  node_stop(&g_node[1]);
  nats_kill(&g_nats);
}
END_TEST

/* No server at the start: pierd serves alone, says so, and joins when one
 * comes; of several URLs it takes one that answers. */
START_TEST(test_bus_late_server_and_second_url) {
  const char *be = test_io_backend(_i);
  uint16_t port = test_unused_port(), dead = test_unused_port();
  char urls[256], want[256];
  node_opts oa = {.name = "la", .threading = "serial"};
  node_opts ob = {.name = "lb", .threading = "serial", .nats = urls};
  client a;
  case_begin();
  snprintf(g_nats.url, sizeof(g_nats.url), "nats://127.0.0.1:%u", (unsigned)port);
  node_start(0, &oa, be, 0);
  snprintf(want, sizeof(want),
           "cluster: no NATS server answers yet (%s): running alone until one does\n",
           g_nats.url);
  ck_assert_msg(test_daemon_wait_log(&g_node[0], want, 5000), "%s", g_node[0].log);
  a = connect_client("la", g_node[0].ports[0]);
  call(&a, "self la", "self");
  call(&a, "rc sub t.l 0", "sub t.l");
  nats_start(&g_nats, port);
  snprintf(want, sizeof(want), "cluster: node \"la\" joined the bus at %s\n", g_nats.url);
  ck_assert_msg(test_daemon_wait_log(&g_node[0], want, 15000), "%s", g_node[0].log);
  barrier(&a);

  snprintf(urls, sizeof(urls), "\"nats://127.0.0.1:%u\", \"%s\"", (unsigned)dead, g_nats.url);
  node_start(1, &ob, be, 1);
  {
    client b = connect_client("lb", g_node[1].ports[0]);
    call(&b, "rc pub t.l 0", "pub t.l from lb");
    expect_msg(&a, "t.l", "from lb");
    close_client(&b);
  }
  close_client(&a);
  node_stop(&g_node[0]);
  node_stop(&g_node[1]);
  nats_kill(&g_nats);
}
END_TEST

int main(void) {
  Suite *s = suite_create("bus");
  TCase *tc = tcase_create("e2e");
  int rc;
  g_live = mmap(NULL, sizeof(*g_live), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (g_live == MAP_FAILED)
    g_live = NULL;
  else
    memset(g_live, 0, sizeof(*g_live));
  tcase_set_timeout(tc, 60);
  /* PIER_TEST_ONLY=part runs only the cases whose name has part in it. */
#define ADD(fn)                                                                              \
  if (!getenv("PIER_TEST_ONLY") || strstr(#fn, getenv("PIER_TEST_ONLY")))                   \
  tcase_add_loop_test(tc, fn, 0, TEST_IO_NBACKENDS)
  ADD(test_bus_without_cluster_is_not_supported);
  ADD(test_bus_config_errors_refuse_to_start);
  ADD(test_bus_subject_and_size_errors);
  ADD(test_bus_wire_subjects_and_presence);
  ADD(test_bus_pubsub_serial);
  ADD(test_bus_pubsub_session);
  ADD(test_bus_request_respond);
  ADD(test_bus_requests_capped_and_cancelled);
  ADD(test_bus_presence_from_elsewhere_and_views);
  ADD(test_bus_presence_up_gone_left);
  ADD(test_bus_duplicate_node_name_refused);
  ADD(test_bus_reload_keeps_subscriptions);
  ADD(test_bus_failed_reload_keeps_subscriptions);
  ADD(test_bus_slow_consumer_drops_and_survives);
  ADD(test_bus_nats_restart_resumes);
  ADD(test_bus_late_server_and_second_url);
  suite_add_tcase(s, tc);
  rc = test_run(s);
  reap_leftovers();
  return rc;
}
