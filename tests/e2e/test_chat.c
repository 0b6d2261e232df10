/* End-to-end tests of the chat plugin: a real pierd loads build/plugins/chat.so
 * and blocking loopback clients speak the u16_size_id chat protocol to it.
 * Every case runs once per I/O backend, with the plugin under "serial" and
 * again under "session" threading. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon.h"
#include "testlib.h"

enum { C_JOIN = 1, C_CHAT = 2, S_CHAT = 101, S_SYSTEM = 102 };

#define CONFIG                                                                         \
  "{\"workers\": 2, \"plugins\": [{\"name\": \"chat\", \"path\": \"@PLUGINS@/chat.so\", " \
  "\"threading\": \"%s\"}], \"listeners\": [{\"address\": \"127.0.0.1\", \"port\": 0, "   \
  "\"plugin\": \"chat\", \"framing\": \"u16_size_id\"}]}"

/* ---- daemon lifetime ----
 * A failing check ends the test process at once, so the daemon a test
 * started is also recorded in memory shared with the runner process, which
 * kills it (and removes its directory) if the test could not. */

typedef struct live_daemon {
  pid_t pid;
  char dir[128];
} live_daemon;

static live_daemon *g_live;

/* Kills and removes what a failed test left behind, if anything. */
static void reap_leftover(void) {
  static test_daemon d;
  if (!g_live || (g_live->pid <= 0 && !g_live->dir[0]))
    return;
  memset(&d, 0, sizeof(d));
  d.pid = g_live->pid;
  d.in_fd = d.err_fd = -1;
  memcpy(d.dir, g_live->dir, sizeof(d.dir));
  test_daemon_cleanup(&d);
  memset(g_live, 0, sizeof(*g_live));
}

/* Starts pierd with the chat plugin under threading on backend; returns the
 * chat listener's port. */
static uint16_t start(test_daemon *d, const char *backend, const char *threading) {
  char config[512];
  int rc;
  reap_leftover();
  snprintf(config, sizeof(config), CONFIG, threading);
  rc = test_daemon_start(d, config, backend);
  if (g_live) {
    g_live->pid = d->pid;
    memcpy(g_live->dir, d->dir, sizeof(g_live->dir));
  }
  ck_assert_msg(rc == 0, "pierd did not start (%s, %s)", backend, threading);
  ck_assert_int_eq(d->nports, 1);
  ck_assert_int_gt(d->ports[0], 0);
  return d->ports[0];
}

/* SIGTERM, which must end the daemon with status 0, then cleanup. */
static void stop(test_daemon *d) {
  int status = test_daemon_signal_wait(d, SIGTERM, 10000);
  test_daemon_cleanup(d);
  if (g_live)
    memset(g_live, 0, sizeof(*g_live));
  ck_assert_int_eq(status, 0);
}

/* ---- clients ---- */

typedef struct client {
  const char *name; /* for failure messages */
  int fd;
  pier_sid sid; /* learnt from the client's first join notice */
} client;

typedef struct packet {
  uint16_t id;
  size_t len;
  char body[65536];
} packet;

static client connect_client(uint16_t port, const char *name) {
  client c = {.name = name, .fd = test_connect(port)};
  return c;
}

static void send_packet(const client *c, uint16_t id, const void *body, size_t len) {
  uint8_t buf[4 + 1024];
  ck_assert_uint_le(len, sizeof(buf) - 4);
  buf[0] = (uint8_t)(len + 4);
  buf[1] = (uint8_t)((len + 4) >> 8);
  buf[2] = (uint8_t)id;
  buf[3] = (uint8_t)(id >> 8);
  if (len)
    memcpy(buf + 4, body, len);
  test_send_all(c->fd, buf, len + 4);
}

static void send_join(const client *c, const char *room) {
  send_packet(c, C_JOIN, room, strlen(room));
}

static void send_chat(const client *c, const char *text) {
  send_packet(c, C_CHAT, text, strlen(text));
}

/* Reads one whole packet: 0, or -1 on EOF, error or the 10 s timeout. */
static int recv_packet(const client *c, packet *p) {
  uint8_t hdr[4];
  size_t size;
  if (test_recv_exact(c->fd, hdr, 4) < 0)
    return -1;
  size = (size_t)(hdr[0] | hdr[1] << 8);
  if (size < 4)
    return -1;
  p->id = (uint16_t)(hdr[2] | hdr[3] << 8);
  p->len = size - 4;
  if (p->len && test_recv_exact(c->fd, p->body, p->len) < 0)
    return -1;
  p->body[p->len] = '\0';
  return 0;
}

static packet g_pkt;

static void expect_system(const client *c, const char *text) {
  packet *p = &g_pkt;
  ck_assert_msg(recv_packet(c, p) == 0, "%s: no packet, expected S_SYSTEM \"%s\"", c->name,
                text);
  ck_assert_msg(p->id == S_SYSTEM && p->len == strlen(text) && memcmp(p->body, text, p->len) == 0,
                "%s: expected S_SYSTEM \"%s\", got id %u \"%s\"", c->name, text,
                (unsigned)p->id, p->body);
}

static void expect_chat(const client *c, pier_sid from, const char *text) {
  packet *p = &g_pkt;
  pier_sid got = 0;
  ck_assert_msg(recv_packet(c, p) == 0, "%s: no packet, expected S_CHAT \"%s\"", c->name, text);
  ck_assert_msg(p->id == S_CHAT && p->len >= 8, "%s: expected S_CHAT \"%s\", got id %u len %zu",
                c->name, text, (unsigned)p->id, p->len);
  for (int i = 7; i >= 0; i--)
    got = got << 8 | (uint8_t)p->body[i];
  ck_assert_msg(got == from, "%s: S_CHAT from %" PRIu64 ", expected %" PRIu64, c->name, got,
                from);
  ck_assert_msg(p->len - 8 == strlen(text) && memcmp(p->body + 8, text, p->len - 8) == 0,
                "%s: S_CHAT text \"%s\", expected \"%s\"", c->name, p->body + 8, text);
}

/* Nothing further arrives within 200 ms. */
static void expect_quiet(const client *c) {
  struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
  int rc = poll(&pfd, 1, 200);
  if (rc > 0) {
    packet *p = &g_pkt;
    if (recv_packet(c, p) == 0)
      ck_abort_msg("%s: unexpected packet id %u \"%s\"", c->name, (unsigned)p->id,
                   p->id == S_CHAT && p->len >= 8 ? p->body + 8 : p->body);
    ck_abort_msg("%s: unexpected EOF", c->name);
  }
  ck_assert_int_eq(rc, 0);
}

/* The server ends the session: EOF (or a reset) rather than a timeout. */
static void expect_closed(const client *c, int allow_reset) {
  size_t got = 0;
  int rc = test_recv_until_close(c->fd, &got);
  ck_assert_msg(rc == 0 || (allow_reset && rc == -ECONNRESET),
                "%s: expected the server to close, got %s", c->name, strerror(-rc));
}

static void notice(char *buf, size_t cap, pier_sid sid, const char *verb, const char *room) {
  snprintf(buf, cap, "%" PRIu64 " %s %s", sid, verb, room);
}

/* Joins room and reads c's own join notice, learning c's sid from it. */
static void join(client *c, const char *room) {
  packet *p = &g_pkt;
  char want[128], *end;
  unsigned long long sid;
  send_join(c, room);
  ck_assert_msg(recv_packet(c, p) == 0, "%s: no join notice for %s", c->name, room);
  ck_assert_msg(p->id == S_SYSTEM, "%s: expected S_SYSTEM, got id %u", c->name, (unsigned)p->id);
  errno = 0;
  sid = strtoull(p->body, &end, 10);
  ck_assert_msg(errno == 0 && end != p->body && sid != 0, "%s: bad join notice \"%s\"", c->name,
                p->body);
  snprintf(want, sizeof(want), " joined %s", room);
  ck_assert_msg(strcmp(end, want) == 0, "%s: bad join notice \"%s\"", c->name, p->body);
  if (c->sid)
    ck_assert_uint_eq(c->sid, sid);
  c->sid = (pier_sid)sid;
}

/* Expects "<who's sid> <verb> <room>" at c. */
static void expect_notice(const client *c, const client *who, const char *verb,
                          const char *room) {
  char text[128];
  notice(text, sizeof(text), who->sid, verb, room);
  expect_system(c, text);
}

static void close_client(client *c) {
  if (c->fd >= 0)
    close(c->fd);
  c->fd = -1;
}

/* ---- scenarios ---- */

/* A and B in "red", C in "blue": notices, who hears which chat, switching. */
static void scenario_rooms(const char *backend, const char *threading) {
  test_daemon d;
  uint16_t port = start(&d, backend, threading);
  client a = connect_client(port, "A"), b = connect_client(port, "B"),
         c = connect_client(port, "C");

  join(&a, "red");
  join(&b, "red");
  expect_notice(&a, &b, "joined", "red");
  join(&c, "blue");
  ck_assert(a.sid != b.sid && b.sid != c.sid && a.sid != c.sid);
  expect_quiet(&a);
  expect_quiet(&b);

  send_chat(&a, "hello red");
  expect_chat(&a, a.sid, "hello red");
  expect_chat(&b, a.sid, "hello red");
  send_chat(&c, "hello blue");
  expect_chat(&c, c.sid, "hello blue"); /* and not A's chat before it */
  expect_quiet(&a);
  expect_quiet(&b);
  expect_quiet(&c);

  /* Two packets in one write, then one packet in two writes. */
  {
    const char two[] = "\x07\x00\x02\x00one\x07\x00\x02\x00two";
    test_send_all(b.fd, two, sizeof(two) - 1);
    expect_chat(&a, b.sid, "one");
    expect_chat(&a, b.sid, "two");
    expect_chat(&b, b.sid, "one");
    expect_chat(&b, b.sid, "two");
    test_send_all(a.fd, "\x09\x00\x02", 3);
    usleep(20000);
    test_send_all(a.fd, "\x00split", 6);
    expect_chat(&a, a.sid, "split");
    expect_chat(&b, a.sid, "split");
  }

  join(&b, "blue");
  expect_notice(&a, &b, "left", "red");
  expect_notice(&c, &b, "joined", "blue");
  send_chat(&b, "now blue");
  expect_chat(&b, b.sid, "now blue");
  expect_chat(&c, b.sid, "now blue");
  send_chat(&a, "alone");
  expect_chat(&a, a.sid, "alone");
  expect_quiet(&a);
  expect_quiet(&b);
  expect_quiet(&c);

  close_client(&a);
  close_client(&b);
  close_client(&c);
  stop(&d);
}

/* Polite refusals: each gets its S_SYSTEM text and the session goes on. */
static void scenario_refusals(const char *backend, const char *threading) {
  test_daemon d;
  uint16_t port = start(&d, backend, threading);
  client a = connect_client(port, "A");
  char name33[34], name32[33], text513[514], text512[513], already[64];

  memset(name33, 'r', 33);
  name33[33] = '\0';
  memset(name32, 'r', 32);
  name32[32] = '\0';
  memset(text513, 'm', 513);
  text513[513] = '\0';
  memset(text512, 'm', 512);
  text512[512] = '\0';

  send_chat(&a, "anyone?");
  expect_system(&a, "join a room first");
  send_join(&a, "");
  expect_system(&a, "room name must be 1..32 bytes");
  send_join(&a, name33);
  expect_system(&a, "room name must be 1..32 bytes");
  send_packet(&a, C_JOIN, "\xff\xfe", 2);
  expect_system(&a, "room name must be valid utf-8");
  join(&a, name32);
  snprintf(already, sizeof(already), "already in %s", name32);
  send_join(&a, name32);
  expect_system(&a, already);
  send_chat(&a, "");
  expect_system(&a, "message must be 1..512 bytes");
  send_chat(&a, text513);
  expect_system(&a, "message must be 1..512 bytes");
  send_packet(&a, C_CHAT, "bad \xc0\xaf", 6);
  expect_system(&a, "message must be valid utf-8");
  send_chat(&a, text512);
  expect_chat(&a, a.sid, text512);
  send_chat(&a, "h\xc3\xa9llo \xe2\x82\xac");
  expect_chat(&a, a.sid, "h\xc3\xa9llo \xe2\x82\xac");
  expect_quiet(&a);

  close_client(&a);
  stop(&d);
}

/* An unknown id: the notice, then EOF; the room hears the leave. */
static void scenario_unknown_id(const char *backend, const char *threading) {
  test_daemon d;
  uint16_t port = start(&d, backend, threading);
  client a = connect_client(port, "A"), b = connect_client(port, "B");

  join(&a, "red");
  join(&b, "red");
  expect_notice(&a, &b, "joined", "red");
  send_packet(&b, 7, "x", 1);
  expect_system(&b, "unknown packet id 7");
  expect_closed(&b, 0);
  expect_notice(&a, &b, "left", "red");
  send_chat(&a, "still here");
  expect_chat(&a, a.sid, "still here");
  expect_quiet(&a);

  close_client(&a);
  close_client(&b);
  stop(&d);
}

/* A packet of size 2 closes only its sender; the others keep chatting. */
static void scenario_malformed(const char *backend, const char *threading) {
  test_daemon d;
  uint16_t port = start(&d, backend, threading);
  client a = connect_client(port, "A"), b = connect_client(port, "B"),
         c = connect_client(port, "C");

  join(&a, "red");
  join(&b, "red");
  expect_notice(&a, &b, "joined", "red");
  join(&c, "red");
  expect_notice(&a, &c, "joined", "red");
  expect_notice(&b, &c, "joined", "red");

  test_send_all(c.fd, "\x02\x00\x02\x00", 4);
  expect_closed(&c, 1);
  expect_notice(&a, &c, "left", "red");
  expect_notice(&b, &c, "left", "red");
  send_chat(&a, "after");
  expect_chat(&a, a.sid, "after");
  expect_chat(&b, a.sid, "after");
  send_chat(&b, "me too");
  expect_chat(&a, b.sid, "me too");
  expect_chat(&b, b.sid, "me too");
  expect_quiet(&a);
  expect_quiet(&b);

  close_client(&a);
  close_client(&b);
  close_client(&c);
  stop(&d);
}

/* Disconnects: the rest of the room hears "<sid> left <room>", one by one,
 * and the last member left can still chat. */
static void scenario_disconnect(const char *backend, const char *threading) {
  test_daemon d;
  uint16_t port = start(&d, backend, threading);
  client a = connect_client(port, "A"), b = connect_client(port, "B"),
         c = connect_client(port, "C");

  join(&a, "red");
  join(&b, "red");
  expect_notice(&a, &b, "joined", "red");
  join(&c, "red");
  expect_notice(&a, &c, "joined", "red");
  expect_notice(&b, &c, "joined", "red");

  close_client(&b);
  expect_notice(&a, &b, "left", "red");
  expect_notice(&c, &b, "left", "red");
  close_client(&c);
  expect_notice(&a, &c, "left", "red");
  send_chat(&a, "last one");
  expect_chat(&a, a.sid, "last one");
  expect_quiet(&a);

  close_client(&a);
  stop(&d);
}

#define CHAT_TESTS(scenario)                                        \
  START_TEST(test_chat_##scenario##_serial) {                       \
    scenario_##scenario(test_backend(_i), "serial");                \
  }                                                                 \
  END_TEST                                                          \
  START_TEST(test_chat_##scenario##_session) {                      \
    scenario_##scenario(test_backend(_i), "session");               \
  }                                                                 \
  END_TEST

CHAT_TESTS(rooms)
CHAT_TESTS(refusals)
CHAT_TESTS(unknown_id)
CHAT_TESTS(malformed)
CHAT_TESTS(disconnect)

int main(void) {
  Suite *s = suite_create("chat");
  TCase *tc = tcase_create("e2e");
  int rc;

  g_live = mmap(NULL, sizeof(*g_live), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (g_live == MAP_FAILED)
    g_live = NULL;
  else
    memset(g_live, 0, sizeof(*g_live));
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, test_chat_rooms_serial, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_chat_rooms_session, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_chat_refusals_serial, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_chat_refusals_session, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_chat_unknown_id_serial, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_chat_unknown_id_session, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_chat_malformed_serial, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_chat_malformed_session, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_chat_disconnect_serial, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_chat_disconnect_session, 0, TEST_NBACKENDS);
  suite_add_tcase(s, tc);
  rc = test_run(s);
  reap_leftover();
  return rc;
}
