/* End-to-end scenarios for a pierd built for another platform, driven from
 * Linux over loopback: the Windows pierd.exe under wine with its .dll plugins
 * (tests/win/run-e2e sets that up), or, with no environment, this build's
 * pierd and .so plugins, so the suite itself is proven on Linux. Everything
 * the daemon is given goes through the environment daemon.h describes; the
 * backends to run each case on come from PIER_TEST_BACKENDS (comma list,
 * "default" for no --io-backend; io_uring,epoll when unset). Each case checks
 * what a user sees: echoed bytes, chat packets, console and pierctl text,
 * the lines the recorder test plugin writes. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "testlib.h"

/* ---- environment ---- */

static char backend_list[256];
static const char *backends[8];
static int nbackends;

static void parse_backends(void) {
  const char *env = getenv("PIER_TEST_BACKENDS");
  snprintf(backend_list, sizeof(backend_list), "%s", env && *env ? env : "io_uring,epoll");
  for (char *w = strtok(backend_list, ","); w && nbackends < 8; w = strtok(NULL, ","))
    backends[nbackends++] = strcmp(w, "default") == 0 ? NULL : w;
}

static const char *backend(int i) { return backends[i]; }

static uint64_t ms_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The file of plugin name: a content plugin, or a test plugin. */
static void plugin_file(char *buf, size_t cap, int test_plugin, const char *name) {
  snprintf(buf, cap, "%s/%s%s", test_plugin ? test_daemon_test_plugin_dir() : test_daemon_plugin_dir(),
           name, test_daemon_plugin_ext());
}

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  char *buf;
  ck_assert_msg(f != NULL, "open %s: %s", path, strerror(errno));
  fseek(f, 0, SEEK_END);
  *len = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  buf = malloc(*len ? *len : 1);
  ck_assert_uint_eq(fread(buf, 1, *len, f), *len);
  fclose(f);
  return buf;
}

/* Overwrites dst in place with the first len bytes of image, as `cp` does. */
static void write_file(const char *dst, const char *image, size_t len) {
  int fd = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ck_assert_msg(fd >= 0, "open %s: %s", dst, strerror(errno));
  ck_assert_int_eq(write(fd, image, len), (ssize_t)len);
  close(fd);
}

/* A private directory holding a copy of the echo plugin that a case may
 * replace, and a config serving it on one raw listener. */
typedef struct site {
  char dir[64];
  char file[128];   /* the copy, as this process sees it */
  char *image;      /* the plugin's bytes */
  size_t len;
  char config[1024];
} site;

static void site_init(site *s) {
  char src[512], native[256];
  plugin_file(src, sizeof(src), 0, "echo");
  s->image = slurp(src, &s->len);
  snprintf(s->dir, sizeof(s->dir), "/tmp/pier-win-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(s->dir));
  snprintf(s->file, sizeof(s->file), "%s/echo%s", s->dir, test_daemon_plugin_ext());
  write_file(s->file, s->image, s->len);
  test_daemon_native_path(s->file, native, sizeof(native));
  snprintf(s->config, sizeof(s->config),
           "{\"workers\": 2, \"plugins\": [{\"name\": \"echo\", \"path\": \"%s\"}],"
           " \"listeners\": [{\"port\": 0, \"plugin\": \"echo\"}]}",
           native);
}

static void site_free(site *s) {
  char cmd[128];
  free(s->image);
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
  ck_assert_int_eq(system(cmd), 0);
}

static void start(test_daemon *d, const char *config, int _i) {
  ck_assert_msg(test_daemon_start(d, config, backend(_i)) == 0, "the daemon did not start:\n%s",
                d->log);
  ck_assert_int_ge(d->nports, 1);
}

/* `quit` on the console: the daemon must exit 0 by itself. */
static void stop(test_daemon *d) {
  int status = test_daemon_quit(d, 30000);
  ck_assert_msg(status == 0, "quit: exit status %d", status);
  test_daemon_cleanup(d);
}

static void console_expect(test_daemon *d, const char *command, const char *text) {
  test_daemon_command(d, command);
  ck_assert_msg(test_daemon_wait_log(d, text, 10000), "`%s` did not print \"%s\"", command, text);
}

static void echo_once(int fd, const char *text) {
  char buf[64];
  size_t n = strlen(text);
  test_send_all(fd, text, n);
  ck_assert_int_eq(test_recv_exact(fd, buf, n), 0);
  ck_assert_int_eq(memcmp(buf, text, n), 0);
}

static void served(uint16_t port) {
  int fd = test_connect(port);
  echo_once(fd, "served");
  close(fd);
}

/* The recorder's file without '\r' (a Windows plugin may write "\r\n"). */
static const char *rec_read(test_rec *r) {
  char *t = (char *)test_rec_read(r), *w = t;
  for (const char *p = t; *p; p++)
    if (*p != '\r')
      *w++ = *p;
  *w = '\0';
  return t;
}

static int rec_wait(test_rec *r, const char *needle, int count, int timeout_ms) {
  uint64_t end = ms_now() + (uint64_t)timeout_ms;
  for (;;) {
    if (test_count(rec_read(r), needle) >= count)
      return 1;
    if (ms_now() >= end)
      return 0;
    usleep(5000);
  }
}

/* ---- echo streams ----
 * Each stream sends byte k of test_pattern(seed) as byte k, verifies every
 * byte that comes back, and is done when all `limit` bytes returned (and, for
 * a half-closing stream, EOF came after them). */

typedef struct stream {
  int fd;
  uint32_t seed;
  size_t limit;      /* SIZE_MAX: until the driver sets it */
  size_t sent, got;
  int half_close;    /* shutdown(SHUT_WR) right after the last byte */
  int shut, eof;
} stream;

static int stream_done(const stream *s) {
  return s->limit != SIZE_MAX && s->got == s->limit && (!s->half_close || s->eof);
}

static void stream_open(stream *s, uint16_t port, uint32_t seed, size_t limit) {
  memset(s, 0, sizeof(*s));
  s->fd = test_connect(port);
  s->seed = seed;
  s->limit = limit;
  fcntl(s->fd, F_SETFL, O_NONBLOCK);
}

static void stream_write(stream *s, size_t chunk) {
  static char buf[16384];
  size_t n = s->limit - s->sent < chunk ? s->limit - s->sent : chunk;
  for (size_t k = 0; k < n; k++)
    buf[k] = (char)test_pattern(s->seed, s->sent + k);
  ssize_t w = send(s->fd, buf, n, MSG_NOSIGNAL);
  ck_assert_msg(w > 0 || errno == EAGAIN, "stream %u: send: %s", s->seed, strerror(errno));
  if (w > 0)
    s->sent += (size_t)w;
  if (s->half_close && s->sent == s->limit && !s->shut) {
    ck_assert_int_eq(shutdown(s->fd, SHUT_WR), 0);
    s->shut = 1;
  }
}

static void stream_read(stream *s) {
  static char buf[65536];
  ssize_t r = recv(s->fd, buf, sizeof(buf), 0);
  if (r < 0) {
    ck_assert_msg(errno == EAGAIN, "stream %u: recv after %zu bytes: %s", s->seed, s->got,
                  strerror(errno));
    return;
  }
  if (r == 0) {
    ck_assert_msg(s->half_close && s->got == s->limit,
                  "stream %u: EOF after %zu of %zu bytes sent", s->seed, s->got, s->sent);
    s->eof = 1;
    return;
  }
  ck_assert_msg(s->got + (size_t)r <= s->sent, "stream %u: %zu bytes back, only %zu sent", s->seed,
                s->got + (size_t)r, s->sent);
  for (ssize_t k = 0; k < r; k++)
    if ((uint8_t)buf[k] != test_pattern(s->seed, s->got + (size_t)k))
      ck_abort_msg("stream %u: byte %zu differs (lost, duplicated or reordered)", s->seed,
                   s->got + (size_t)k);
  s->got += (size_t)r;
}

/* Runs the streams until each is done and tick (if any) returns 0; tick runs
 * every round and may set limits. Fails past timeout_ms, naming a stream
 * that was not done. */
static void pump(stream *s, int n, size_t chunk, int timeout_ms, int (*tick)(void *), void *arg) {
  struct pollfd *p = calloc((size_t)n, sizeof(*p));
  uint64_t end = ms_now() + (uint64_t)timeout_ms;
  ck_assert_ptr_nonnull(p);
  for (;;) {
    int busy = tick ? tick(arg) : 0, pending = -1;
    for (int i = 0; i < n; i++) {
      p[i].fd = s[i].fd;
      p[i].events = (s[i].sent < s[i].limit ? POLLOUT : 0) | (s[i].eof ? 0 : POLLIN);
      if (pending < 0 && !stream_done(&s[i]))
        pending = i;
    }
    if (!busy && pending < 0)
      break;
    if (ms_now() >= end) {
      if (pending >= 0)
        ck_abort_msg("stream %d not done in %d ms: sent %zu, got %zu back%s", pending, timeout_ms,
                     s[pending].sent, s[pending].got, s[pending].half_close ? ", no EOF" : "");
      ck_abort_msg("streams done, but the driver was not within %d ms", timeout_ms);
    }
    ck_assert_int_ge(poll(p, (nfds_t)n, 10), 0);
    for (int i = 0; i < n; i++) {
      if ((p[i].revents & POLLOUT) && s[i].sent < s[i].limit)
        stream_write(&s[i], chunk);
      if (p[i].revents & (POLLIN | POLLHUP | POLLERR))
        stream_read(&s[i]);
    }
  }
  free(p);
}

static void streams_close(stream *s, int n) {
  for (int i = 0; i < n; i++)
    close(s[i].fd);
}

/* ---- echo: 100 sessions x 1 MiB ---- */

#define ECHO_SESSIONS 100
#define ECHO_BYTES (1u << 20)

START_TEST(test_win_echo_100_sessions_1mib_each) {
  test_daemon d;
  static stream s[ECHO_SESSIONS];
  char want[96];
  start(&d,
        "{\"workers\": 2, \"plugins\": [{\"name\": \"echo\", \"path\": \"@PLUGINS@/echo@EXT@\"}],"
        " \"listeners\": [{\"port\": 0, \"plugin\": \"echo\", \"framing\": \"raw\"}]}",
        _i);
  for (int i = 0; i < ECHO_SESSIONS; i++)
    stream_open(&s[i], d.ports[0], (uint32_t)i + 1, ECHO_BYTES);
  pump(s, ECHO_SESSIONS, 16384, 120000, NULL, NULL);
  snprintf(want, sizeof(want), "listener 127.0.0.1:%u raw plugin echo: %d sessions",
           (unsigned)d.ports[0], ECHO_SESSIONS);
  console_expect(&d, "status", want);
  streams_close(s, ECHO_SESSIONS);
  stop(&d);
  ck_assert(test_daemon_wait_log(&d, "pierd stopped: 100 sessions served", 0));
}
END_TEST

/* ---- chat: two rooms ---- */

enum { C_JOIN = 1, C_CHAT = 2, S_CHAT = 101, S_SYSTEM = 102 };

typedef struct chatter {
  const char *name;
  int fd;
  pier_sid sid;
  int room;         /* index into the case's rooms */
  int next_from[8]; /* per sender (index): the next message number expected */
} chatter;

typedef struct packet {
  uint16_t id;
  size_t len;
  char body[1024];
} packet;

static void chat_send(const chatter *c, uint16_t id, const char *text) {
  uint8_t buf[4 + 512];
  size_t len = strlen(text);
  ck_assert_uint_le(len, 512);
  buf[0] = (uint8_t)(len + 4);
  buf[1] = (uint8_t)((len + 4) >> 8);
  buf[2] = (uint8_t)id;
  buf[3] = (uint8_t)(id >> 8);
  memcpy(buf + 4, text, len);
  test_send_all(c->fd, buf, len + 4);
}

static void chat_recv(const chatter *c, packet *p) {
  uint8_t hdr[4];
  ck_assert_msg(test_recv_exact(c->fd, hdr, 4) == 0, "%s: no packet", c->name);
  size_t size = (size_t)(hdr[0] | hdr[1] << 8);
  ck_assert_msg(size >= 4 && size - 4 < sizeof(p->body), "%s: packet size %zu", c->name, size);
  p->id = (uint16_t)(hdr[2] | hdr[3] << 8);
  p->len = size - 4;
  ck_assert_msg(p->len == 0 || test_recv_exact(c->fd, p->body, p->len) == 0, "%s: short packet",
                c->name);
  p->body[p->len] = '\0';
}

static void expect_system(const chatter *c, const char *text) {
  packet p;
  chat_recv(c, &p);
  ck_assert_msg(p.id == S_SYSTEM && strcmp(p.body, text) == 0,
                "%s: expected notice \"%s\", got id %u \"%s\"", c->name, text, (unsigned)p.id,
                p.id == S_CHAT && p.len >= 8 ? p.body + 8 : p.body);
}

static void join(chatter *c, const char *room) {
  packet p;
  char *end, want[64];
  chat_send(c, C_JOIN, room);
  chat_recv(c, &p);
  ck_assert_msg(p.id == S_SYSTEM, "%s: expected its join notice, got id %u", c->name,
                (unsigned)p.id);
  c->sid = (pier_sid)strtoull(p.body, &end, 10);
  snprintf(want, sizeof(want), " joined %s", room);
  ck_assert_msg(c->sid != 0 && strcmp(end, want) == 0, "%s: join notice \"%s\"", c->name, p.body);
}

/* Reads one S_CHAT at c: returns the sender's index in who[] and the text. */
static int chat_from(const chatter *c, chatter *who, int n, packet *p) {
  pier_sid from = 0;
  chat_recv(c, p);
  ck_assert_msg(p->id == S_CHAT && p->len >= 8, "%s: expected a chat, got id %u \"%s\"", c->name,
                (unsigned)p->id, p->body);
  for (int b = 7; b >= 0; b--)
    from = from << 8 | (uint8_t)p->body[b];
  for (int k = 0; k < n; k++)
    if (who[k].sid == from)
      return k;
  ck_abort_msg("%s: chat from unknown session %" PRIu64, c->name, from);
  return -1;
}

#define CHAT_MSGS 5

START_TEST(test_win_chat_two_rooms_reach_exactly_their_members) {
  test_daemon d;
  static const char *const rooms[2] = {"red", "blue"};
  chatter c[6] = {{.name = "r1"}, {.name = "r2"}, {.name = "r3", .room = 0},
                  {.name = "b1", .room = 1}, {.name = "b2", .room = 1}, {.name = "lurker"}};
  const int n = 5; /* c[5] connects but joins no room */
  int members[2] = {0, 0};
  char text[64], notice[96];
  packet p;

  start(&d,
        "{\"workers\": 2, \"plugins\": [{\"name\": \"chat\", \"path\": \"@PLUGINS@/chat@EXT@\","
        " \"threading\": \"serial\"}], \"listeners\": [{\"port\": 0, \"plugin\": \"chat\","
        " \"framing\": \"u16_size_id\"}]}",
        _i);
  for (int i = 0; i < 6; i++)
    c[i].fd = test_connect(d.ports[0]);
  /* Joining: everyone already in the room hears about it, nobody else. */
  for (int i = 0; i < n; i++) {
    join(&c[i], rooms[c[i].room]);
    snprintf(notice, sizeof(notice), "%" PRIu64 " joined %s", c[i].sid, rooms[c[i].room]);
    for (int k = 0; k < i; k++)
      if (c[k].room == c[i].room)
        expect_system(&c[k], notice);
    members[c[i].room]++;
  }
  /* Everyone chats; each member gets every message of its room, each
   * sender's in order, and none of the other room's. */
  for (int m = 0; m < CHAT_MSGS; m++)
    for (int i = 0; i < n; i++) {
      snprintf(text, sizeof(text), "%s says %d", c[i].name, m);
      chat_send(&c[i], C_CHAT, text);
    }
  for (int i = 0; i < n; i++)
    for (int got = 0; got < CHAT_MSGS * members[c[i].room]; got++) {
      int k = chat_from(&c[i], c, n, &p);
      ck_assert_msg(c[k].room == c[i].room, "%s (%s) got \"%s\" from %s's room", c[i].name,
                    rooms[c[i].room], p.body + 8, rooms[c[k].room]);
      snprintf(text, sizeof(text), "%s says %d", c[k].name, c[i].next_from[k]++);
      ck_assert_msg(p.len - 8 == strlen(text) && memcmp(p.body + 8, text, p.len - 8) == 0,
                    "%s: got \"%s\", expected \"%s\"", c[i].name, p.body + 8, text);
    }
  /* Every message above was delivered before these were sent, so anything
   * that leaked to a room's members would arrive before its "end". */
  chat_send(&c[0], C_CHAT, "end");
  chat_send(&c[3], C_CHAT, "end");
  for (int i = 0; i < n; i++) {
    int k = chat_from(&c[i], c, n, &p);
    ck_assert_msg(k == (c[i].room == 0 ? 0 : 3) && strcmp(p.body + 8, "end") == 0,
                  "%s: expected its room's end, got \"%s\" from %s", c[i].name, p.body + 8,
                  c[k].name);
  }
  /* The lurker heard nothing at all: its first packet is its refusal. */
  chat_send(&c[5], C_CHAT, "anyone?");
  expect_system(&c[5], "join a room first");
  for (int i = 0; i < 6; i++)
    close(c[i].fd);
  stop(&d);
}
END_TEST

/* ---- hot reload of the plugin file under 200 streaming sessions ---- */

#define RELOAD_STREAMS 200
#define RELOADS 3

typedef struct reloader {
  test_daemon *d;
  site *s;
  stream *st;
  uint64_t start, asked, last_done;
  int done, waiting;
  char want[64];
} reloader;

/* Every 400 ms: a fresh copy of the plugin over its file, then `reload echo`
 * and its answer; after the last one, 300 ms more of traffic, then the
 * streams are told to finish. */
static int reload_tick(void *arg) {
  reloader *r = arg;
  uint64_t now = ms_now();
  if (r->waiting) {
    if (test_daemon_wait_log(r->d, r->want, 0)) {
      r->waiting = 0;
      r->done++;
      r->last_done = now;
    } else {
      ck_assert_msg(!strstr(r->d->log, "reload echo failed"), "a reload failed");
      ck_assert_msg(now < r->asked + 20000, "no \"%s\" in 20 s", r->want);
    }
    return 1;
  }
  if (r->done < RELOADS) {
    if (now >= r->start + 400 * (uint64_t)(r->done + 1)) {
      write_file(r->s->file, r->s->image, r->s->len);
      snprintf(r->want, sizeof(r->want), "reloaded echo: generation %d,", r->done + 2);
      test_daemon_command(r->d, "reload echo");
      r->asked = now;
      r->waiting = 1;
    }
    return 1;
  }
  if (now < r->last_done + 300)
    return 1;
  for (int i = 0; i < RELOAD_STREAMS; i++)
    if (r->st[i].limit == SIZE_MAX)
      r->st[i].limit = r->st[i].sent;
  return 0;
}

START_TEST(test_win_reload_under_200_streams_loses_nothing) {
  test_daemon d;
  site s;
  static stream st[RELOAD_STREAMS];
  char want[96];
  site_init(&s);
  start(&d, s.config, _i);
  for (int i = 0; i < RELOAD_STREAMS; i++)
    stream_open(&st[i], d.ports[0], 1000u + (uint32_t)i, SIZE_MAX);
  reloader r = {.d = &d, .s = &s, .st = st, .start = ms_now()};
  pump(st, RELOAD_STREAMS, 512, 120000, reload_tick, &r);
  for (int i = 0; i < RELOAD_STREAMS; i++)
    ck_assert_msg(st[i].sent > 0, "stream %d sent nothing", i);
  /* Nobody was disconnected, and the plugin is a newer generation. */
  snprintf(want, sizeof(want), "listener 127.0.0.1:%u raw plugin echo: %d sessions",
           (unsigned)d.ports[0], RELOAD_STREAMS);
  console_expect(&d, "status", want);
  snprintf(want, sizeof(want), "plugin echo: echo 1.0.0, generation %d, session", RELOADS + 1);
  console_expect(&d, "plugins", want);
  ck_assert_ptr_null(strstr(d.log, "last reload failed"));
  streams_close(st, RELOAD_STREAMS);
  stop(&d);
  site_free(&s);
}
END_TEST

/* ---- a truncated plugin file is refused; the old version serves on ---- */

START_TEST(test_win_truncated_plugin_refused_old_keeps_serving) {
  test_daemon d;
  site s;
  site_init(&s);
  start(&d, s.config, _i);
  int fd = test_connect(d.ports[0]);
  echo_once(fd, "before");

  write_file(s.file, s.image, s.len / 2);
  test_daemon_command(&d, "reload echo");
  ck_assert(test_daemon_wait_log(&d, "reload echo failed at load: plugin \"echo\" (", 10000));
  ck_assert(test_daemon_wait_log(&d, "; generation 1 keeps serving", 1000));
  echo_once(fd, "still here");
  served(d.ports[0]);
  console_expect(&d, "plugins", "plugin echo: last reload failed: reload echo failed at load:");
  ck_assert(test_daemon_wait_log(&d, "plugin echo: echo 1.0.0, generation 1, ", 1000));

  /* The whole file again: it loads. A file refused before any of its code
   * ran used no generation, so this is generation 2. */
  write_file(s.file, s.image, s.len);
  console_expect(&d, "reload echo", "reloaded echo: generation 2, version 1.0.0");
  echo_once(fd, "after");
  close(fd);
  stop(&d);
  site_free(&s);
}
END_TEST

/* ---- max_sessions ---- */

/* Connects; -1 when the refusal (a reset) came before connect returned. */
static int connect_refusable(uint16_t port) {
  struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
  struct timeval tv = {10, 0};
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (connect(fd, (struct sockaddr *)&to, sizeof(to)) == 0)
    return fd;
  ck_assert_msg(errno == ECONNRESET, "connect: %s", strerror(errno));
  close(fd);
  return -1;
}

/* The refused connection gets nothing back, then EOF or a reset. */
static void expect_refused(uint16_t port) {
  int fd = connect_refusable(port);
  size_t got = 0;
  if (fd < 0)
    return;
  if (send(fd, "x", 1, MSG_NOSIGNAL) < 0) {
  }
  int rc = test_recv_until_close(fd, &got);
  ck_assert_msg(rc != -EAGAIN, "the connection past max_sessions was kept open (no EOF or reset "
                               "in 10 s)");
  ck_assert_msg(rc == 0 || rc == -ECONNRESET, "refused connection: %s", strerror(-rc));
  ck_assert_msg(got == 0, "the connection past max_sessions got %zu bytes back", got);
  close(fd);
}

START_TEST(test_win_max_sessions_refuses_one_more) {
  test_daemon d;
  int keep[5];
  start(&d,
        "{\"workers\": 2, \"max_sessions\": 5, \"plugins\": [{\"name\": \"echo\", \"path\": "
        "\"@PLUGINS@/echo@EXT@\"}], \"listeners\": [{\"port\": 0, \"plugin\": \"echo\"}]}",
        _i);
  for (int i = 0; i < 5; i++) {
    keep[i] = test_connect(d.ports[0]);
    echo_once(keep[i], "in");
  }
  expect_refused(d.ports[0]);
  for (int i = 0; i < 5; i++)
    echo_once(keep[i], "still in");
  console_expect(&d, "status", "sessions 5 open, 5 accepted, 1 refused (max_sessions 5)");
  /* A place that frees up is taken again (once the daemon saw the close). */
  close(keep[0]);
  uint64_t end = ms_now() + 10000;
  for (;;) {
    test_daemon_command(&d, "status");
    if (test_daemon_wait_log(&d, "sessions 4 open", 200))
      break;
    ck_assert_msg(ms_now() < end, "the closed session was not counted out");
  }
  keep[0] = test_connect(d.ports[0]);
  echo_once(keep[0], "back in");
  for (int i = 0; i < 5; i++)
    close(keep[i]);
  stop(&d);
}
END_TEST

/* ---- half-close ---- */

START_TEST(test_win_half_close_gets_every_byte_then_eof) {
  test_daemon d;
  stream s[4];
  start(&d,
        "{\"workers\": 2, \"plugins\": [{\"name\": \"echo\", \"path\": \"@PLUGINS@/echo@EXT@\"}],"
        " \"listeners\": [{\"port\": 0, \"plugin\": \"echo\"}]}",
        _i);
  /* One small write, then bigger ones whose echo is mostly still in flight
   * when the FIN goes out. */
  const size_t sizes[4] = {11, 65536, 1u << 20, 3u << 20};
  for (int i = 0; i < 4; i++) {
    stream_open(&s[i], d.ports[0], 500u + (uint32_t)i, sizes[i]);
    s[i].half_close = 1;
  }
  pump(s, 4, 16384, 60000, NULL, NULL);
  streams_close(s, 4);
  served(d.ports[0]);
  stop(&d);
}
END_TEST

/* ---- exactly one on_disconnected per session ---- */

#define REC_SESSIONS 9

START_TEST(test_win_one_disconnect_per_session) {
  test_daemon d;
  test_rec r;
  char config[1024], out[256], recorder[512], line[96];
  int fd[REC_SESSIONS];
  unsigned long long sid[REC_SESSIONS];
  size_t got;

  test_rec_init(&r);
  test_daemon_native_path(r.path, out, sizeof(out));
  snprintf(config, sizeof(config),
           "{\"workers\": 2, \"plugins\": [{\"name\": \"rec\", \"path\": "
           "\"@TESTPLUGINS@/recorder@EXT@\", \"config\": {\"out\": \"%s\"}}],"
           " \"listeners\": [{\"port\": 0, \"plugin\": \"rec\"}]}",
           out);
  plugin_file(recorder, sizeof(recorder), 1, "recorder");
  ck_assert_msg(access(recorder, R_OK) == 0, "no test plugin %s", recorder);
  start(&d, config, _i);
  /* One at a time, so the n-th "connected" line is the n-th client's. */
  for (int i = 0; i < REC_SESSIONS; i++) {
    fd[i] = test_connect(d.ports[0]);
    ck_assert(rec_wait(&r, "\nconnected ", i + 1, 10000));
    const char *p = rec_read(&r);
    for (int k = 0; k <= i; k++)
      p = strstr(p, "\nconnected ") + 1;
    ck_assert_int_eq(sscanf(p + 10, "%llx", &sid[i]), 1);
    echo_once(fd[i], "hello");
  }
  /* Three close themselves, three are kicked, three stay until quit. */
  for (int i = 0; i < 3; i++)
    close(fd[i]);
  ck_assert(rec_wait(&r, "\ndisconnected ", 3, 10000));
  for (int i = 3; i < 6; i++) {
    snprintf(line, sizeof(line), "kick %llx", sid[i]);
    test_daemon_command(&d, line);
    ck_assert_int_eq(test_recv_until_close(fd[i], &got), 0);
    close(fd[i]);
  }
  ck_assert(rec_wait(&r, "\ndisconnected ", 6, 10000));
  ck_assert_int_eq(test_daemon_quit(&d, 30000), 0);
  for (int i = 6; i < REC_SESSIONS; i++) {
    int rc = test_recv_until_close(fd[i], &got);
    ck_assert_msg(rc == 0 && got == 0, "session %d at shutdown: %s, %zu bytes", i, strerror(-rc),
                  got);
    close(fd[i]);
  }
  const char *text = rec_read(&r);
  ck_assert_int_eq(test_count(text, "\nconnected "), REC_SESSIONS);
  ck_assert_int_eq(test_count(text, "\ndisconnected "), REC_SESSIONS);
  for (int i = 0; i < REC_SESSIONS; i++) {
    /* reasons: 1 closed by the peer, 5 kicked, 10 shutdown */
    int reason = i < 3 ? 1 : i < 6 ? 5 : 10;
    snprintf(line, sizeof(line), "disconnected %016llx ", sid[i]);
    ck_assert_msg(test_count(text, line) == 1, "session %016llx: %d on_disconnected", sid[i],
                  test_count(text, line));
    snprintf(line, sizeof(line), "disconnected %016llx %d\n", sid[i], reason);
    ck_assert_msg(strstr(text, line), "session %016llx: not disconnected with reason %d", sid[i],
                  reason);
  }
  /* on_unload once, after every on_disconnected. */
  ck_assert_int_eq(test_count(text, "\nunload\n"), 1);
  ck_assert_ptr_null(strstr(strstr(text, "\nunload\n"), "disconnected"));
  test_daemon_cleanup(&d);
  test_rec_free(&r);
}
END_TEST

/* ---- pierctl talking to the daemon ---- */

START_TEST(test_win_pierctl_status_and_quit) {
  test_daemon d;
  char out[8192], err[4096], want[96];
  start(&d,
        "{\"workers\": 2, \"plugins\": [{\"name\": \"echo\", \"path\": \"@PLUGINS@/echo@EXT@\"}],"
        " \"listeners\": [{\"port\": 0, \"plugin\": \"echo\"}]}",
        _i);
  const char *admin = test_daemon_admin(&d, 10000);
  ck_assert_msg(admin != NULL, "no \" ready (pierctl)\" line in the log");
  int fd = test_connect(d.ports[0]);
  echo_once(fd, "counted");

  const char *status[] = {"--socket", admin, "status", NULL};
  int rc = test_daemon_pierctl(status, out, sizeof(out), err, sizeof(err), 30000);
  ck_assert_msg(rc == 0, "pierctl status: exit %d\n%s%s", rc, out, err);
  snprintf(want, sizeof(want), "listener 127.0.0.1:%u raw plugin echo: 1 sessions\n",
           (unsigned)d.ports[0]);
  ck_assert_msg(strstr(out, want), "no \"%s\" in:\n%s", want, out);
  ck_assert_msg(strstr(out, "sessions 1 open, 1 accepted,"), "status:\n%s", out);
  ck_assert_msg(strstr(out, "plugin echo: echo 1.0.0, generation 1, "), "status:\n%s", out);
  ck_assert_msg(err[0] == '\0', "pierctl wrote to stderr: %s", err);
  /* The console's text without its final OK line, which became the exit status. */
  ck_assert_msg(!strstr(out, "OK\n"), "status:\n%s", out);

  const char *bad[] = {"--socket", admin, "kick", "zz", NULL};
  rc = test_daemon_pierctl(bad, out, sizeof(out), err, sizeof(err), 30000);
  ck_assert_msg(rc == 1, "pierctl kick zz: exit %d\n%s%s", rc, out, err);
  ck_assert_msg(strstr(err, "kick: \"zz\" is not a session id"), "kick zz said:\n%s%s", out, err);

  /* quit through pierctl returns once the daemon closed every session. */
  const char *quit[] = {"--socket", admin, "quit", NULL};
  rc = test_daemon_pierctl(quit, out, sizeof(out), err, sizeof(err), 30000);
  ck_assert_msg(rc == 0, "pierctl quit: exit %d\n%s%s", rc, out, err);
  size_t got;
  ck_assert_int_eq(test_recv_until_close(fd, &got), 0);
  close(fd);
  ck_assert_int_eq(test_daemon_signal_wait(&d, 0, 30000), 0);
  test_daemon_cleanup(&d);
}
END_TEST

/* A log_file, renamed away and reopened by the console command (there is no
 * SIGUSR1 on Windows); status --json through pierctl. */
START_TEST(test_win_log_file_reopen_and_json_status) {
  test_daemon d;
  char path[200], old[256], out[8192], err[4096];
  size_t len;
  char *text;
  cJSON *j;
  ck_assert_int_eq(
      test_daemon_start_file(&d,
                             "{\"log_file\": \"pierd.log\","
                             " \"plugins\": [{\"name\": \"echo\", \"path\": \"@PLUGINS@/echo@EXT@\"}],"
                             " \"listeners\": [{\"port\": 0, \"plugin\": \"echo\"}]}",
                             backend(_i), "pierd.log"),
      0);
  const char *admin = test_daemon_admin(&d, 10000);
  ck_assert_ptr_nonnull(admin);
  const char *status[] = {"--socket", admin, "status", "--json", NULL};
  ck_assert_int_eq(test_daemon_pierctl(status, out, sizeof(out), err, sizeof(err), 30000), 0);
  j = cJSON_Parse(out);
  ck_assert_msg(j != NULL, "not JSON: %s", out);
  ck_assert(cJSON_IsString(cJSON_GetObjectItem(j, "backend")));
  ck_assert_int_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "sessions"), "open")->valueint, 0);
  cJSON_Delete(j);

  snprintf(path, sizeof(path), "%s/pierd.log", d.dir);
  snprintf(old, sizeof(old), "%s/pierd.log.1", d.dir);
  ck_assert_int_eq(rename(path, old), 0);
  snprintf(d.tail, sizeof(d.tail), "%s", path);
  d.tail_off = 0;
  console_expect(&d, "reopen-log", "info  reopen-log (console): reopened ");
  text = slurp(old, &len);
  text = realloc(text, len + 1);
  text[len] = '\0';
  ck_assert_ptr_nonnull(strstr(text, "info  pierd ready: "));
  ck_assert_ptr_null(strstr(text, "reopen-log"));
  free(text);
  stop(&d);
}
END_TEST

/* `pierctl metrics` on both platforms; the HTTP listener where the build
 * has one (Linux), and the line saying it has none where not (Windows). */
START_TEST(test_win_pierctl_metrics) {
  int windows = strcmp(test_daemon_plugin_ext(), ".dll") == 0;
  test_daemon d;
  char out[65536], err[4096], want[160];
  start(&d,
        "{\"metrics\": {\"port\": 0}, \"plugins\": [{\"name\": \"echo\", \"path\": "
        "\"@PLUGINS@/echo@EXT@\"}], \"listeners\": [{\"port\": 0, \"plugin\": \"echo\"}]}",
        _i);
  const char *admin = test_daemon_admin(&d, 10000);
  ck_assert_msg(admin != NULL, "no \" ready (pierctl)\" line in the log");
  if (windows)
    ck_assert_msg(strstr(d.log, "metrics: this build of pierd has no HTTP server (built without "
                                "libmicrohttpd): 127.0.0.1:0 is not served"),
                  "log:\n%s", d.log);
  else
    ck_assert_msg(strstr(d.log, "metrics on http://127.0.0.1:"), "log:\n%s", d.log);
  int fd = test_connect(d.ports[0]);
  echo_once(fd, "counted");

  const char *metrics[] = {"--socket", admin, "metrics", NULL};
  int rc = test_daemon_pierctl(metrics, out, sizeof(out), err, sizeof(err), 30000);
  ck_assert_msg(rc == 0, "pierctl metrics: exit %d\n%s%s", rc, out, err);
  snprintf(want, sizeof(want),
           "\npier_listener_sessions{listener=\"127.0.0.1:%u\",plugin=\"echo\",transport=\"tcp\"} 1\n",
           (unsigned)d.ports[0]);
  ck_assert_msg(strstr(out, want), "no \"%s\" in:\n%s", want + 1, out);
  ck_assert_msg(strstr(out, "\npier_received_bytes_total 7\n"), "metrics:\n%s", out);
  ck_assert_msg(strstr(out, "\npier_sent_bytes_total 7\n"), "metrics:\n%s", out);
  ck_assert_msg(strstr(out, "\n# TYPE process_resident_memory_bytes gauge\n"), "metrics:\n%s", out);
  ck_assert_msg(err[0] == '\0', "pierctl wrote to stderr: %s", err);
  close(fd);
  stop(&d);
}
END_TEST

/* ---- the suite ---- */

/* What a run against another build needs, checked once with a clear word
 * instead of eight identical failures. */
static int preflight(void) {
  const char *cmd = getenv("PIER_TEST_DAEMON");
  char file[512];
  plugin_file(file, sizeof(file), 0, "echo");
  if (access(file, R_OK) != 0) {
    fprintf(stderr, "test_win: no plugin %s\n", file);
    return -1;
  }
  fprintf(stderr, "test_win: daemon %s, plugins %s/*%s, backends %s\n",
          cmd && *cmd ? cmd : PIER_BINARY_DIR "/pierd", test_daemon_plugin_dir(),
          test_daemon_plugin_ext(), getenv("PIER_TEST_BACKENDS") ? getenv("PIER_TEST_BACKENDS") : "io_uring,epoll");
  return 0;
}

/* ---- one config for both platforms ---- */

/* A backend the daemon's platform lacks is refused by name, with the ones
 * it has; "auto" (the shipped config's) is what serves both. */
START_TEST(test_win_backend_of_the_other_platform_is_refused) {
  int windows = strcmp(test_daemon_plugin_ext(), ".dll") == 0; /* the daemon's platform */
  const char *other = windows ? "epoll" : "iocp";
  char config[1200], want[160];
  test_daemon d;
  site s;
  site_init(&s);
  snprintf(config, sizeof(config), "{\"io_backend\": \"%s\", %s", other, s.config + 1);
  ck_assert_int_eq(test_daemon_run_to_exit(&d, config, NULL, NULL), 1);
  snprintf(want, sizeof(want), "io_backend \"%s\" is not available on this platform (expected %s)",
           other, windows ? "auto or iocp" : "auto, io_uring or epoll");
  ck_assert_msg(strstr(d.log, want), "no \"%s\" in:\n%s", want, d.log);
  ck_assert_ptr_null(strstr(d.log, "pierd ready"));
  test_daemon_cleanup(&d);
  site_free(&s);
}
END_TEST

/* ---- the C++ example ---- */

/* Reads one line ('\n' included) and compares it with want. */
static void lobby_expect(int fd, const char *want) {
  char got[256];
  size_t n = 0;
  while (n + 1 < sizeof(got) && test_recv_exact(fd, got + n, 1) == 0 && got[n++] != '\n') {
  }
  got[n] = '\0';
  ck_assert_str_eq(got, want);
}

/* plugins/lobby (C++, pier/plugin.hpp, libstdc++ linked statically into
 * the .dll): welcome, a rename, a line to the others only, a departure. */
START_TEST(test_win_cpp_lobby_welcome_and_broadcast) {
  test_daemon d;
  start(&d,
        "{\"workers\": 2, \"plugins\": [{\"name\": \"lobby\", \"path\": "
        "\"@PLUGINS@/lobby@EXT@\", \"threading\": \"serial\"}], \"listeners\": [{\"port\": 0, "
        "\"plugin\": \"lobby\", \"framing\": \"raw\"}]}",
        _i);
  int a = test_connect(d.ports[0]);
  lobby_expect(a, "welcome guest-1\n");
  int b = test_connect(d.ports[0]);
  lobby_expect(b, "welcome guest-2\n");
  lobby_expect(a, "guest-2 joined\n");
  test_send_all(a, "/nick alice\n", 12);
  lobby_expect(a, "you are alice\n");
  lobby_expect(b, "guest-1 is now alice\n");
  test_send_all(a, "hello\n", 6);
  lobby_expect(b, "alice: hello\n");
  close(b);
  lobby_expect(a, "guest-2 left\n");
  close(a);
  stop(&d);
}
END_TEST

int main(void) {
  Suite *s = suite_create("win");
  TCase *tc = tcase_create("daemon");
  parse_backends();
  if (preflight() < 0)
    return 1;
  tcase_set_timeout(tc, 300);
  tcase_add_loop_test(tc, test_win_echo_100_sessions_1mib_each, 0, nbackends);
  tcase_add_loop_test(tc, test_win_chat_two_rooms_reach_exactly_their_members, 0, nbackends);
  tcase_add_loop_test(tc, test_win_reload_under_200_streams_loses_nothing, 0, nbackends);
  tcase_add_loop_test(tc, test_win_truncated_plugin_refused_old_keeps_serving, 0, nbackends);
  tcase_add_loop_test(tc, test_win_max_sessions_refuses_one_more, 0, nbackends);
  tcase_add_loop_test(tc, test_win_half_close_gets_every_byte_then_eof, 0, nbackends);
  tcase_add_loop_test(tc, test_win_one_disconnect_per_session, 0, nbackends);
  tcase_add_loop_test(tc, test_win_pierctl_status_and_quit, 0, nbackends);
  tcase_add_loop_test(tc, test_win_log_file_reopen_and_json_status, 0, nbackends);
  tcase_add_loop_test(tc, test_win_pierctl_metrics, 0, nbackends);
  tcase_add_loop_test(tc, test_win_cpp_lobby_welcome_and_broadcast, 0, nbackends);
  tcase_add_test(tc, test_win_backend_of_the_other_platform_is_refused);
  suite_add_tcase(s, tc);
  return test_run(s);
}
