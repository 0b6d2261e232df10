/* Test helpers: blocking client sockets with timeouts and a polling wait. */
#include "testlib.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

const char *test_backend(int i) { return i == 0 ? "io_uring" : "epoll"; }

static int connect_sa(const struct sockaddr *sa, socklen_t len) {
  struct timeval tv = {.tv_sec = 10, .tv_usec = 0};
  int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
  ck_assert_int_ge(fd, 0);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  ck_assert_msg(connect(fd, sa, len) == 0, "connect: %s", strerror(errno));
  return fd;
}

int test_connect(uint16_t port) {
  struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(port)};
  in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return connect_sa((struct sockaddr *)&in, sizeof(in));
}

int test_connect6(uint16_t port) {
  struct sockaddr_in6 in6 = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
  in6.sin6_addr = in6addr_loopback;
  return connect_sa((struct sockaddr *)&in6, sizeof(in6));
}

void test_send_all(int fd, const void *data, size_t len) {
  const char *p = data;
  while (len > 0) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
    ck_assert_msg(n > 0, "send: %s", strerror(errno));
    p += n;
    len -= (size_t)n;
  }
}

int test_recv_exact(int fd, void *buf, size_t len) {
  char *p = buf;
  while (len > 0) {
    ssize_t n = recv(fd, p, len, 0);
    if (n <= 0)
      return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

int test_recv_until_close(int fd, size_t *got) {
  char buf[65536];
  size_t total = 0;
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n == 0)
      break;
    if (n < 0) {
      if (got)
        *got = total;
      return -errno;
    }
    total += (size_t)n;
  }
  if (got)
    *got = total;
  return 0;
}

int test_wait(int (*cond)(void *arg), void *arg, int timeout_ms) {
  for (int i = 0; i < timeout_ms; i++) {
    if (cond(arg))
      return 1;
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  return cond(arg);
}

int test_run(Suite *s) {
  SRunner *sr = srunner_create(s);
  int failed;
  signal(SIGPIPE, SIG_IGN);
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? 0 : 1;
}

void test_rec_init(test_rec *r) {
  int fd;
  snprintf(r->path, sizeof(r->path), "/tmp/pier-rec-XXXXXX");
  fd = mkstemp(r->path);
  ck_assert_int_ge(fd, 0);
  close(fd);
  r->text = NULL;
}

const char *test_rec_read(test_rec *r) {
  FILE *f = fopen(r->path, "r");
  long n;
  ck_assert_ptr_nonnull(f);
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fseek(f, 0, SEEK_SET);
  free(r->text);
  r->text = calloc(1, (size_t)n + 1);
  if (fread(r->text, 1, (size_t)n, f) != (size_t)n)
    ck_abort_msg("short read of %s", r->path);
  fclose(f);
  return r->text;
}

int test_count(const char *text, const char *needle) {
  int n = 0;
  for (const char *p = text; (p = strstr(p, needle)); p++)
    n++;
  return n;
}

int test_rec_wait(test_rec *r, const char *needle, int count, int timeout_ms) {
  for (int waited = 0;; waited += 10) {
    if (test_count(test_rec_read(r), needle) >= count)
      return 1;
    if (waited >= timeout_ms)
      return 0;
    usleep(10000);
  }
}

void test_rec_free(test_rec *r) {
  unlink(r->path);
  free(r->text);
}
