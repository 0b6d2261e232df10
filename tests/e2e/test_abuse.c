/* Abusive clients against a real pierd: each case uses one limit from
 * server.json, checks that the offender is cut off and the counter in
 * `status` moved, and that a well-behaved client is still served. Echo (raw)
 * and chat (u16_size_id) listeners; every case on both backends. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon.h"
#include "testlib.h"

static uint16_t start(test_daemon *d, const char *backend, int max_sessions, const char *limits,
                      int *chat_port) {
  char config[2048];
  snprintf(config, sizeof(config),
           "{\"workers\": 2, \"max_sessions\": %d, \"limits\": {%s},"
           " \"plugins\": [{\"name\": \"echo\", \"path\": \"@PLUGINS@/echo.so\"},"
           " {\"name\": \"chat\", \"path\": \"@PLUGINS@/chat.so\", \"threading\": \"serial\"}],"
           " \"listeners\": [{\"port\": 0, \"plugin\": \"echo\"},"
           " {\"port\": 0, \"plugin\": \"chat\", \"framing\": \"u16_size_id\"}]}",
           max_sessions, limits);
  ck_assert_int_eq(test_daemon_start(d, config, backend), 0);
  ck_assert_int_eq(d->nports, 2);
  if (chat_port)
    *chat_port = d->ports[1];
  return d->ports[0];
}

/* A client that behaves: gets its bytes back. */
static void served(uint16_t port) {
  int fd = test_connect(port);
  char buf[6];
  test_send_all(fd, "normal", 6);
  ck_assert_int_eq(test_recv_exact(fd, buf, 6), 0);
  ck_assert_int_eq(memcmp(buf, "normal", 6), 0);
  close(fd);
}

static void status_has(test_daemon *d, const char *text) {
  test_daemon_command(d, "status");
  ck_assert_msg(test_daemon_wait_log(d, text, 5000), "status lacks \"%s\"", text);
}

static void stop(test_daemon *d) {
  ck_assert_int_eq(test_daemon_signal_wait(d, SIGTERM, 15000), 0);
  test_daemon_cleanup(d);
}

START_TEST(test_abuse_idle_timeout) {
  test_daemon d;
  uint16_t port = start(&d, test_backend(_i), 100, "\"idle_timeout_ms\": 300", NULL);
  int quiet = test_connect(port);
  size_t got;
  ck_assert_int_eq(test_recv_until_close(quiet, &got), 0); /* closed after ~300 ms */
  close(quiet);
  served(port);
  status_has(&d, " 1 idle,");
  ck_assert(test_daemon_wait_log(&d, "idle for ", 1000));
  stop(&d);
}
END_TEST

START_TEST(test_abuse_slowloris_partial_packet) {
  test_daemon d;
  int chat;
  uint16_t port = start(&d, test_backend(_i), 100, "\"packet_timeout_ms\": 400", &chat);
  int slow = test_connect((uint16_t)chat);
  size_t got;
  int rc;
  /* A 100-byte packet, one byte every 100 ms: never done in time. */
  test_send_all(slow, "\x64\x00", 2);
  for (int i = 0; i < 8; i++) {
    usleep(100000);
    if (send(slow, "x", 1, MSG_NOSIGNAL) != 1)
      break;
  }
  rc = test_recv_until_close(slow, &got);
  ck_assert_msg(rc == 0 || rc == -ECONNRESET, "slow client: %s", strerror(-rc));
  close(slow);
  served(port);
  status_has(&d, " 1 for slow packets,");
  stop(&d);
}
END_TEST

static int connect_from(const char *src, uint16_t port) {
  struct sockaddr_in local = {.sin_family = AF_INET}, to = {.sin_family = AF_INET};
  struct timeval tv = {10, 0};
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  inet_pton(AF_INET, src, &local.sin_addr);
  inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  to.sin_port = htons(port);
  ck_assert_int_eq(bind(fd, (struct sockaddr *)&local, sizeof(local)), 0);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ck_assert_int_eq(connect(fd, (struct sockaddr *)&to, sizeof(to)), 0);
  return fd;
}

START_TEST(test_abuse_max_conns_per_ip) {
  test_daemon d;
  uint16_t port = start(&d, test_backend(_i), 100, "\"max_conns_per_ip\": 3", NULL);
  int fd[3], extra, other;
  char buf[2];
  size_t got;
  for (int i = 0; i < 3; i++) {
    fd[i] = connect_from("127.0.0.1", port);
    test_send_all(fd[i], "hi", 2);
    ck_assert_int_eq(test_recv_exact(fd[i], buf, 2), 0);
  }
  extra = connect_from("127.0.0.1", port);
  int rc = test_recv_until_close(extra, &got);
  ck_assert(rc == 0 || rc == -ECONNRESET);
  close(extra);
  /* Another address is not affected. */
  other = connect_from("127.0.0.2", port);
  test_send_all(other, "ok", 2);
  ck_assert_int_eq(test_recv_exact(other, buf, 2), 0);
  status_has(&d, " 1 over max_conns_per_ip");
  /* A closed session frees its place. */
  close(fd[0]);
  usleep(100000);
  fd[0] = connect_from("127.0.0.1", port);
  test_send_all(fd[0], "ok", 2);
  ck_assert_int_eq(test_recv_exact(fd[0], buf, 2), 0);
  for (int i = 0; i < 3; i++)
    close(fd[i]);
  close(other);
  stop(&d);
}
END_TEST

/* A connection the server may refuse at once: its RST can reach the client
 * before connect() has returned (the handshake completes in the kernel, the
 * server's worker accepts and resets on the other core, and connect() then
 * reports the reset). Returns the fd, or -1 when connect saw the refusal. */
static int connect_refusable(uint16_t port) {
  struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
  struct timeval tv = {10, 0};
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (connect(fd, (struct sockaddr *)&to, sizeof(to)) == 0)
    return fd;
  ck_assert_msg(errno == ECONNRESET, "connect: %s", strerror(errno));
  close(fd);
  return -1;
}

START_TEST(test_abuse_connect_flood_past_max_sessions) {
  test_daemon d;
  uint16_t port = start(&d, test_backend(_i), 5, "\"idle_timeout_ms\": 0", NULL);
  int keep[5], flood[40];
  char buf[2];
  size_t got;
  for (int i = 0; i < 5; i++) {
    keep[i] = test_connect(port);
    test_send_all(keep[i], "k", 1);
    ck_assert_int_eq(test_recv_exact(keep[i], buf, 1), 0);
  }
  for (int i = 0; i < 40; i++)
    flood[i] = connect_refusable(port);
  for (int i = 0; i < 40; i++) {
    if (flood[i] < 0)
      continue; /* refused before connect() returned */
    int rc = test_recv_until_close(flood[i], &got);
    ck_assert(rc == 0 || rc == -ECONNRESET);
    close(flood[i]);
  }
  for (int i = 0; i < 5; i++) {
    test_send_all(keep[i], "k", 1);
    ck_assert_int_eq(test_recv_exact(keep[i], buf, 1), 0);
  }
  status_has(&d, " 40 refused (max_sessions 5)");
  for (int i = 0; i < 5; i++)
    close(keep[i]);
  stop(&d);
}
END_TEST

/* A client whose receive buffer is rcvbuf bytes from the start. Set after
 * connect, the buffer would shrink below the window already advertised (64
 * KiB, in segments of up to 64 KiB on loopback): the client then drops the
 * server's in-window data, discards as out-of-window the segments that carry
 * the server's ACKs and window updates, and both ends fall into exponential
 * backoff (RTO 13 s and more) after a few hundred KiB. Set before connect,
 * the window is sized to the buffer and simply closes when it is full. */
static int connect_rcvbuf(uint16_t port, int rcvbuf) {
  struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
  struct timeval tv = {10, 0};
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)), 0);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ck_assert_int_eq(connect(fd, (struct sockaddr *)&to, sizeof(to)), 0);
  return fd;
}

START_TEST(test_abuse_client_that_never_reads) {
  test_daemon d;
  uint16_t port = start(&d, test_backend(_i), 100,
                        "\"max_send_queue\": 65536, \"send_timeout_ms\": 1000", NULL);
  int hog = connect_rcvbuf(port, 4096);
  static char junk[1 << 16];
  size_t sent = 0;
  fcntl(hog, F_SETFL, O_NONBLOCK);
  /* Send up to 32 MiB of echo requests, never reading the echoes: pier
   * stops reading it once its queue is half full, and its sends then make
   * no progress. */
  for (int i = 0; i < 20000 && sent < (32u << 20); i++) {
    ssize_t n = send(hog, junk, sizeof(junk), MSG_NOSIGNAL);
    if (n > 0)
      sent += (size_t)n;
    else if (errno == EAGAIN)
      usleep(1000);
    else
      break; /* reset: the server gave up on us */
  }
  ck_assert(test_daemon_wait_log(&d, "no send progress for ", 10000));
  close(hog);
  served(port);
  status_has(&d, " 1 for no send progress,");
  status_has(&d, " 0 closed for send queue,");
  stop(&d);
}
END_TEST

typedef struct reader {
  int fd;
  size_t want, got;
  long bad_at;
} reader;

static void *read_all(void *arg) {
  reader *r = arg;
  static uint8_t buf[65536];
  while (r->got < r->want) {
    ssize_t n = recv(r->fd, buf, sizeof(buf), 0);
    if (n <= 0)
      break;
    for (ssize_t i = 0; i < n; i++)
      if (r->bad_at < 0 && buf[i] != test_pattern(7, r->got + (size_t)i))
        r->bad_at = (long)(r->got + (size_t)i);
    r->got += (size_t)n;
  }
  return NULL;
}

/* A burst of requests whose echoes are many times max_send_queue, from a
 * client that reads: it is slowed down (pier stops reading it while its
 * queue is full), never cut off, and gets every byte back in order. */
START_TEST(test_abuse_burst_past_the_send_queue_is_echoed) {
  test_daemon d;
  uint16_t port = start(&d, test_backend(_i), 100, "\"max_send_queue\": 65536", NULL);
  reader r = {.fd = test_connect(port), .want = 4u << 20, .bad_at = -1};
  uint8_t *out = malloc(r.want);
  pthread_t th;
  for (size_t i = 0; i < r.want; i++)
    out[i] = test_pattern(7, i);
  ck_assert_int_eq(pthread_create(&th, NULL, read_all, &r), 0);
  test_send_all(r.fd, out, r.want); /* one write: the kernel hands it over in big batches */
  pthread_join(th, NULL);
  ck_assert_msg(r.got == r.want, "sent %zu, got %zu back", r.want, r.got);
  ck_assert_msg(r.bad_at < 0, "byte %ld came back wrong", r.bad_at);
  close(r.fd);
  free(out);
  served(port);
  status_has(&d, " 0 closed for send queue,");
  stop(&d);
}
END_TEST

START_TEST(test_abuse_reset_mid_packet_and_garbage) {
  test_daemon d;
  int chat;
  uint16_t port = start(&d, test_backend(_i), 100, "\"max_packet_size\": 1024", &chat);
  struct linger lg = {1, 0};
  size_t got;
  /* Half a packet, then RST. */
  int rst = test_connect((uint16_t)chat);
  test_send_all(rst, "\x20\x00\x02\x00half", 8);
  usleep(50000);
  setsockopt(rst, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  close(rst);
  /* Random garbage on both listeners: the framed one closes the sender. */
  srand(1234);
  char junk[4096];
  for (size_t k = 0; k < sizeof(junk); k++)
    junk[k] = (char)(rand() & 0xff);
  junk[0] = '\x01'; /* size 0x??01 > 1024 or < 4: invalid either way */
  junk[1] = '\x7f';
  int g = test_connect((uint16_t)chat);
  send(g, junk, sizeof(junk), MSG_NOSIGNAL);
  int rc = test_recv_until_close(g, &got);
  ck_assert(rc == 0 || rc == -ECONNRESET);
  close(g);
  int raw = test_connect(port);
  test_send_all(raw, junk, sizeof(junk));
  char back[4096];
  ck_assert_int_eq(test_recv_exact(raw, back, sizeof(back)), 0);
  ck_assert_int_eq(memcmp(back, junk, sizeof(junk)), 0);
  close(raw);
  served(port);
  status_has(&d, " 1 for bad packets,");
  stop(&d);
}
END_TEST

START_TEST(test_abuse_half_close_gets_pending_echo) {
  test_daemon d;
  uint16_t port = start(&d, test_backend(_i), 100, "\"idle_timeout_ms\": 0", NULL);
  int fd = test_connect(port);
  char buf[64];
  size_t got;
  test_send_all(fd, "bye for now", 11);
  shutdown(fd, SHUT_WR);
  ck_assert_int_eq(test_recv_exact(fd, buf, 11), 0);
  ck_assert_int_eq(memcmp(buf, "bye for now", 11), 0);
  ck_assert_int_eq(test_recv_until_close(fd, &got), 0);
  close(fd);
  served(port);
  stop(&d);
}
END_TEST

int main(void) {
  Suite *s = suite_create("abuse");
  TCase *tc = tcase_create("daemon");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, test_abuse_idle_timeout, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_abuse_slowloris_partial_packet, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_abuse_max_conns_per_ip, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_abuse_client_that_never_reads, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_abuse_burst_past_the_send_queue_is_echoed, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_abuse_reset_mid_packet_and_garbage, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_abuse_half_close_gets_pending_echo, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_abuse_connect_flood_past_max_sessions, 0, TEST_NBACKENDS);
  suite_add_tcase(s, tc);
  return test_run(s);
}
