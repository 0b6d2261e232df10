/* Test plugin for the cluster bus (ABI 1.3, tests/e2e/test_bus.c): on a raw
 * listener a test client types line commands that call the bus entries, and
 * gets each call's result back as a line; what the bus brings (messages,
 * replies, nodes coming and going) is pushed to every connected client.
 *
 * Commands (one per line; a subject argument is %-decoded, so "a%20b" is
 * "a b" and "%00" the empty subject; DATA is the rest of the line after one
 * space, possibly empty):
 *   sub S / unsub S            rc sub S <rc>      / rc unsub S <rc>
 *   pub S DATA                 rc pub S <rc>
 *   pubx S HEX                 rc pubx S <rc>     (the payload in hex: binary)
 *   pubbig S LEN               rc pubbig S <rc>   (LEN bytes of 'x')
 *   req S TIMEOUT_MS DATA      rc req S <rc>, later "reply <status> <data>"
 *   reqbig S TIMEOUT_MS LEN    rc reqbig S <rc>
 *   respond REPLY_TO DATA      rc respond <rc>    (respond() as given)
 *   respond-on / respond-off   rc respond-on 0    (answer every message that
 *                              has a reply_to with "re:<data>")
 *   subn P N / unsubn P N      rc subn P <ok> <first error or 0>, for the
 *                              subjects P.0 .. P.<N-1>
 *   flood S N                  publishes "0" .. "<N-1>" to S: rc flood S <ok>
 *   reqn S N TIMEOUT_MS        N requests to S: rc reqn S <ok> <first error or 0>;
 *                              their outcomes are counted, not pushed
 *   replies                    rc replies <0> <-ETIMEDOUT> <other>: those counts
 *   sleep MS                   rc sleep 0 (each on_message sleeps MS ms)
 *   count                      rc count <messages on_message got in this image>
 *   self                       self <node() or ->
 *   ver                        ver <config "version"> gen=<generation>
 * Pushed: "msg <subject> <len> <reply_to or -> <len bytes>\n",
 *   "reply <status> <data>\n", "node <name> up|down\n".
 *
 * Config (compact JSON, string values unless said):
 *   "version"       what ver reports (default "1")
 *   "subs"          space-separated subjects on_load subscribes when it gets
 *                   no state (the first load)
 *   "reload_subs"   ... when it gets state (a reload; the version restored
 *                   after a failed one gets state too)
 *   "reload_unsub"  subjects on_load unsubscribes when it gets state
 *   "unload_unsub"  subjects on_unload unsubscribes
 *   "reload_pub"    a subject on_load publishes "held" to when it gets state,
 *                   then waits "load_sleep_ms" ms (the message comes back
 *                   while the reload holds events)
 *   "fail":1        on_load fails (-EINVAL) after doing the above
 *   "sleep_ms":N    each on_message sleeps N ms (a slow consumer)
 *   "respond":1     respond-on from the start
 * A reply callback with -ECANCELED (the daemon stopping) is logged:
 *   "busprobe: reply -125" (the number is -ECANCELED).
 * Every bus call of on_load and on_unload is logged:
 *   "busprobe gen=G: subscribe S: RC" (and unsubscribe).
 * Built as busprobe and, with another name, busother (namespacing). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pier/plugin.h"

#ifndef BUSPROBE_NAME
#define BUSPROBE_NAME "busprobe"
#endif

enum { LINE_CAP = 16384, SESSIONS_CAP = 256 };

static const pier_host *host;
static unsigned generation;
static char version[64] = "1";
static char unload_unsub[1024];
static atomic_int respond_on, sleep_ms;
static atomic_long received;

/* One session's partial command line: malloc'd, so it outlives a reload
 * (the next version has the same layout). */
typedef struct conn {
  size_t len;
  char buf[LINE_CAP];
} conn;

static int json_int(const char *json, const char *key) {
  char k[64];
  const char *p;
  snprintf(k, sizeof(k), "\"%s\":", key);
  p = strstr(json, k);
  return p ? atoi(p + strlen(k)) : 0;
}

/* The string value of key into out ("" when absent; no escapes). */
static void json_str(const char *json, const char *key, char *out, size_t cap) {
  char k[64];
  const char *p;
  size_t n = 0;
  snprintf(k, sizeof(k), "\"%s\":\"", key);
  p = strstr(json, k);
  if (p)
    for (p += strlen(k); *p && *p != '"' && n + 1 < cap; p++)
      out[n++] = *p;
  out[n] = '\0';
}

static void sleep_ms_now(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

/* To every open session of the plugin's listeners. */
static void push(const void *data, size_t len) {
  pier_sid sids[SESSIONS_CAP];
  size_t n = host->sessions(host, sids, SESSIONS_CAP);
  if (n > SESSIONS_CAP)
    n = SESSIONS_CAP;
  for (size_t i = 0; i < n; i++)
    host->send(host, sids[i], data, len);
}

static void reply_line(pier_sid sid, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply_line(pier_sid sid, const char *fmt, ...) {
  char line[512];
  va_list ap;
  int n;
  va_start(ap, fmt);
  n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
  va_end(ap);
  if (n < 0)
    return;
  if ((size_t)n > sizeof(line) - 2)
    n = (int)sizeof(line) - 2;
  line[n++] = '\n';
  host->send(host, sid, line, (size_t)n);
}

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* %XX-decodes in into out (a C string: "%00" ends it). */
static void decode(const char *in, char *out, size_t cap) {
  size_t n = 0;
  while (*in && n + 1 < cap) {
    if (in[0] == '%' && hexval(in[1]) >= 0 && hexval(in[2]) >= 0) {
      out[n++] = (char)(hexval(in[1]) << 4 | hexval(in[2]));
      in += 3;
    } else {
      out[n++] = *in++;
    }
  }
  out[n] = '\0';
}

/* The next space-separated word of *rest (NUL-terminated in place). */
static char *word(char **rest) {
  char *w = *rest, *sp;
  if (!w)
    return "";
  sp = strchr(w, ' ');
  if (sp) {
    *sp = '\0';
    *rest = sp + 1;
  } else {
    *rest = NULL;
  }
  return w;
}

/* Calls fn on each space-separated subject of list, logging each result. */
static void each_subject(const char *list, const char *what,
                         int (*fn)(const pier_host *, const char *)) {
  char copy[1024], *rest = copy;
  snprintf(copy, sizeof(copy), "%s", list);
  while (rest && *rest) {
    char *s = word(&rest);
    if (*s)
      host->log(host, PIER_LOG_INFO, BUSPROBE_NAME " gen=%u: %s %s: %d", generation, what, s,
                fn(host, s));
  }
}

static atomic_long counted_ok, counted_timeout, counted_other;

static void on_reply(void *arg, int status, const void *data, size_t len) {
  size_t cap = len + 64;
  char *line;
  int n;
  if (status == -ECANCELED)
    host->log(host, PIER_LOG_INFO, BUSPROBE_NAME ": reply %d", status);
  if (arg) { /* reqn: counted */
    atomic_fetch_add(status == 0 ? &counted_ok
                     : status == -ETIMEDOUT ? &counted_timeout
                                            : &counted_other,
                     1);
    return;
  }
  line = malloc(cap);
  if (!line)
    return;
  n = snprintf(line, cap, "reply %d ", status);
  if (data && len)
    memcpy(line + n, data, len);
  else
    len = 0;
  line[n + len] = '\n';
  push(line, (size_t)n + len + 1);
  free(line);
}

static void command(pier_sid sid, char *line) {
  char *rest = line, *cmd = word(&rest), subject[1024];
  if (strcmp(cmd, "sub") == 0 || strcmp(cmd, "unsub") == 0) {
    char *arg = word(&rest);
    decode(arg, subject, sizeof(subject));
    reply_line(sid, "rc %s %s %d", cmd, arg,
               cmd[0] == 's' ? host->subscribe(host, subject) : host->unsubscribe(host, subject));
  } else if (strcmp(cmd, "pub") == 0) {
    char *arg = word(&rest);
    decode(arg, subject, sizeof(subject));
    reply_line(sid, "rc pub %s %d", arg,
               host->publish(host, subject, rest ? rest : "", rest ? strlen(rest) : 0));
  } else if (strcmp(cmd, "pubx") == 0) {
    char *arg = word(&rest), *hex = rest ? rest : "";
    size_t n = strlen(hex) / 2;
    unsigned char *bin = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
      bin[i] = (unsigned char)(hexval(hex[2 * i]) << 4 | hexval(hex[2 * i + 1]));
    decode(arg, subject, sizeof(subject));
    reply_line(sid, "rc pubx %s %d", arg, host->publish(host, subject, bin, n));
    free(bin);
  } else if (strcmp(cmd, "pubbig") == 0 || strcmp(cmd, "reqbig") == 0) {
    char *arg = word(&rest);
    unsigned timeout = cmd[0] == 'r' ? (unsigned)strtoul(word(&rest), NULL, 10) : 0;
    size_t n = (size_t)strtoull(word(&rest), NULL, 10);
    char *big = malloc(n + 1);
    int rc;
    memset(big, 'x', n);
    decode(arg, subject, sizeof(subject));
    rc = cmd[0] == 'r' ? host->request(host, subject, big, n, timeout, on_reply, NULL)
                       : host->publish(host, subject, big, n);
    reply_line(sid, "rc %s %s %d", cmd, arg, rc);
    free(big);
  } else if (strcmp(cmd, "req") == 0) {
    char *arg = word(&rest);
    unsigned timeout = (unsigned)strtoul(word(&rest), NULL, 10);
    decode(arg, subject, sizeof(subject));
    reply_line(sid, "rc req %s %d", arg,
               host->request(host, subject, rest ? rest : "", rest ? strlen(rest) : 0, timeout,
                             on_reply, NULL));
  } else if (strcmp(cmd, "respond") == 0) {
    char *arg = word(&rest);
    decode(arg, subject, sizeof(subject));
    reply_line(sid, "rc respond %d",
               host->respond(host, subject, rest ? rest : "", rest ? strlen(rest) : 0));
  } else if (strcmp(cmd, "respond-on") == 0 || strcmp(cmd, "respond-off") == 0) {
    atomic_store(&respond_on, cmd[8] == 'o' && cmd[9] == 'n');
    reply_line(sid, "rc %s 0", cmd);
  } else if (strcmp(cmd, "subn") == 0 || strcmp(cmd, "unsubn") == 0) {
    char *prefix = word(&rest);
    long n = strtol(word(&rest), NULL, 10);
    int ok = 0, first = 0;
    for (long i = 0; i < n; i++) {
      int rc;
      snprintf(subject, sizeof(subject), "%s.%ld", prefix, i);
      rc = cmd[0] == 's' ? host->subscribe(host, subject) : host->unsubscribe(host, subject);
      if (rc == 0)
        ok++;
      else if (!first)
        first = rc;
    }
    reply_line(sid, "rc %s %s %d %d", cmd, prefix, ok, first);
  } else if (strcmp(cmd, "flood") == 0) {
    char *arg = word(&rest), num[32];
    long n = strtol(word(&rest), NULL, 10);
    int ok = 0;
    decode(arg, subject, sizeof(subject));
    for (long i = 0; i < n; i++) {
      int len = snprintf(num, sizeof(num), "%ld", i);
      ok += host->publish(host, subject, num, (size_t)len) == 0;
    }
    reply_line(sid, "rc flood %s %d", arg, ok);
  } else if (strcmp(cmd, "reqn") == 0) {
    char *arg = word(&rest);
    long n = strtol(word(&rest), NULL, 10);
    unsigned timeout = (unsigned)strtoul(word(&rest), NULL, 10);
    int ok = 0, first = 0;
    decode(arg, subject, sizeof(subject));
    for (long i = 0; i < n; i++) {
      int rc = host->request(host, subject, "r", 1, timeout, on_reply, &counted_ok);
      if (rc == 0)
        ok++;
      else if (!first)
        first = rc;
    }
    reply_line(sid, "rc reqn %s %d %d", arg, ok, first);
  } else if (strcmp(cmd, "replies") == 0) {
    reply_line(sid, "rc replies %ld %ld %ld", atomic_load(&counted_ok),
               atomic_load(&counted_timeout), atomic_load(&counted_other));
  } else if (strcmp(cmd, "sleep") == 0) {
    atomic_store(&sleep_ms, atoi(word(&rest)));
    reply_line(sid, "rc sleep 0");
  } else if (strcmp(cmd, "count") == 0) {
    reply_line(sid, "rc count %ld", atomic_load(&received));
  } else if (strcmp(cmd, "self") == 0) {
    const char *name = host->node(host);
    reply_line(sid, "self %s", name ? name : "-");
  } else if (strcmp(cmd, "ver") == 0) {
    reply_line(sid, "ver %s gen=%u", version, generation);
  } else {
    reply_line(sid, "error unknown command %s", cmd);
  }
}

static int busprobe_load(const pier_load_args *a) {
  char list[1024];
  host = a->host;
  generation = a->generation;
  if (host->size < offsetof(pier_host, respond) + sizeof(host->respond))
    return -ENOTSUP;
  json_str(a->config_json, "version", version, sizeof(version));
  if (!version[0])
    snprintf(version, sizeof(version), "1");
  atomic_store(&sleep_ms, json_int(a->config_json, "sleep_ms"));
  atomic_store(&respond_on, json_int(a->config_json, "respond") != 0);
  json_str(a->config_json, "unload_unsub", unload_unsub, sizeof(unload_unsub));
  host->log(host, PIER_LOG_INFO, BUSPROBE_NAME " gen=%u: version %s, state %s", generation,
            version, a->state ? "handed over" : "none");
  if (!a->state) {
    json_str(a->config_json, "subs", list, sizeof(list));
    each_subject(list, "subscribe", host->subscribe);
  } else {
    json_str(a->config_json, "reload_subs", list, sizeof(list));
    each_subject(list, "subscribe", host->subscribe);
    json_str(a->config_json, "reload_unsub", list, sizeof(list));
    each_subject(list, "unsubscribe", host->unsubscribe);
    json_str(a->config_json, "reload_pub", list, sizeof(list));
    if (list[0]) {
      host->log(host, PIER_LOG_INFO, BUSPROBE_NAME " gen=%u: publish %s: %d", generation, list,
                host->publish(host, list, "held", 4));
      sleep_ms_now(json_int(a->config_json, "load_sleep_ms"));
    }
  }
  return json_int(a->config_json, "fail") ? -EINVAL : 0;
}

static void busprobe_unload(pier_state *out) {
  static const char tag[] = "busprobe-state";
  each_subject(unload_unsub, "unsubscribe", host->unsubscribe);
  out->data = malloc(sizeof(tag));
  if (out->data) {
    memcpy(out->data, tag, sizeof(tag));
    out->len = sizeof(tag);
  }
}

static void busprobe_connected(pier_sid sid, const char *peer) {
  conn *c = calloc(1, sizeof(*c));
  (void)peer;
  host->set_user(host, sid, c);
}

static void busprobe_recv(pier_sid sid, const void *data, size_t len) {
  conn *c = host->get_user(host, sid);
  const char *p = data;
  if (!c)
    return;
  for (size_t i = 0; i < len; i++) {
    if (p[i] == '\n') {
      if (c->len && c->buf[c->len - 1] == '\r')
        c->len--;
      c->buf[c->len] = '\0';
      command(sid, c->buf);
      c->len = 0;
    } else if (c->len + 1 < sizeof(c->buf)) {
      c->buf[c->len++] = p[i];
    }
  }
}

static void busprobe_disconnected(pier_sid sid, pier_reason reason) {
  (void)reason;
  free(host->get_user(host, sid));
  host->set_user(host, sid, NULL);
}

static void busprobe_message(const char *subject, const void *data, size_t len,
                             const char *reply_to) {
  size_t cap = strlen(subject) + (reply_to ? strlen(reply_to) : 1) + len + 64;
  char *line = malloc(cap);
  int ms = atomic_load(&sleep_ms), n;
  atomic_fetch_add(&received, 1);
  if (ms)
    sleep_ms_now(ms);
  if (line) {
    n = snprintf(line, cap, "msg %s %zu %s ", subject, len, reply_to ? reply_to : "-");
    if (len)
      memcpy(line + n, data, len);
    line[(size_t)n + len] = '\n';
    push(line, (size_t)n + len + 1);
    free(line);
  }
  if (reply_to && atomic_load(&respond_on)) {
    char *re = malloc(len + 3);
    int rc;
    memcpy(re, "re:", 3);
    if (len)
      memcpy(re + 3, data, len);
    rc = host->respond(host, reply_to, re, len + 3);
    if (rc != 0)
      host->log(host, PIER_LOG_WARN, BUSPROBE_NAME ": respond to %s: %d", reply_to, rc);
    free(re);
  }
}

static void busprobe_node(const char *node, int up) {
  char line[128];
  int n = snprintf(line, sizeof(line), "node %s %s\n", node, up ? "up" : "down");
  host->log(host, PIER_LOG_INFO, BUSPROBE_NAME ": node %s %s", node, up ? "up" : "down");
  if (n > 0 && (size_t)n < sizeof(line))
    push(line, (size_t)n);
}

PIER_PLUGIN(BUSPROBE_NAME, "1.0.0", .on_load = busprobe_load, .on_unload = busprobe_unload,
            .on_connected = busprobe_connected, .on_recv = busprobe_recv,
            .on_disconnected = busprobe_disconnected, .on_message = busprobe_message,
            .on_node = busprobe_node);
