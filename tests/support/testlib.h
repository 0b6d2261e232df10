/* Shared helpers for pier's tests: the backend each loop-test iteration runs
 * on, loopback client sockets with deadlines, polling for a condition that
 * another thread makes true, and the few process and file calls that differ
 * between Linux and Windows. Test files use these (and core/os/os.h), never
 * the platform's own calls, so one test source runs on both. */
#ifndef PIER_TESTLIB_H
#define PIER_TESTLIB_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* TEST_PRINTF(f, a) marks a printf-like test helper (format string at f,
 * arguments from a) for the C99 printf both platforms format with. */
#ifdef _WIN32
/* check.h declares its message functions format(printf), which GCC for
 * mingw-w64 reads as msvcrt's printf (no %jd or %zu); libcheck formats with
 * mingw's C99 printf, as pier does (__USE_MINGW_ANSI_STDIO), so the formats
 * are checked as that one's. The headers check.h includes come first. */
#include <float.h>
#include <math.h>
#include <string.h>
#include <sys/types.h>
#define printf gnu_printf
#include <check.h>
#undef printf
#define TEST_PRINTF(f, a) __attribute__((format(gnu_printf, f, a)))
#else
#include <check.h>
#define TEST_PRINTF(f, a) __attribute__((format(printf, f, a)))
#endif

#include "net/net.h"
#include "os/os.h"

#ifndef _WIN32
#include <poll.h>
#endif

/* tcase_add_loop_test(tc, fn, 0, TEST_NBACKENDS): _i picks the backend.
 * Linux has io_uring and epoll, Windows IOCP.
 *
 * TEST_SEP is the separator pier writes when it joins paths, TEST_DL_EXT
 * the extension of a plugin file: literals for expectations, so that a
 * wrong os_path_sep or os_dl_ext shows. */
#ifdef _WIN32
#define TEST_NBACKENDS 1
#define TEST_SEP "\\"
#define TEST_DL_EXT ".dll"
#else
#define TEST_NBACKENDS 2
#define TEST_SEP "/"
#define TEST_DL_EXT ".so"
#endif
const char *test_backend(int i);

/* ---- client sockets (ints, as in os.h; close with os_sock_close) ---- */

/* A blocking loopback TCP client connected to port (IPv4), with receive and
 * send timeouts of 10 s so a hung test fails instead of hanging, and
 * TCP_NODELAY. Fails the test on error. */
int test_connect(uint16_t port);
int test_connect6(uint16_t port);
/* The same with a receive buffer of rcvbuf bytes from the start (set before
 * connect, so the window it advertises fits the buffer). */
int test_connect_rcvbuf(uint16_t port, int rcvbuf);
void test_send_all(int fd, const void *data, size_t len);
/* Reads exactly len bytes; returns 0, or -1 on EOF/error/timeout. */
int test_recv_exact(int fd, void *buf, size_t len);
/* Reads until EOF or error; returns 0 on clean EOF, -errno on an error
 * (e.g. -ECONNRESET), discarding data; *got gets the byte count. */
int test_recv_until_close(int fd, size_t *got);
/* One send or recv: the byte count, or a negative errno (-EAGAIN when a
 * nonblocking socket has nothing to give or no room). A send to a closed
 * peer returns -EPIPE or -ECONNRESET, never raises SIGPIPE. */
long test_sock_send(int fd, const void *data, size_t len);
long test_sock_recv(int fd, void *buf, size_t len);
/* Makes the socket nonblocking; 0 or -errno. */
int test_sock_nonblock(int fd);
/* SO_RCVBUF; 0 or -errno. */
int test_sock_rcvbuf(int fd, int bytes);
/* SO_SNDBUF; 0 or -errno. */
int test_sock_sndbuf(int fd, int bytes);
/* Whether rc, from test_recv_until_close, is the reset (RST) of an abortive
 * close: -ECONNRESET. Under Wine also 0, a clean EOF: Wine 8 closes a
 * socket with SO_LINGER {1, 0} by FIN, not RST (checked with a bare Winsock
 * program), so there the peer cannot tell the two closes apart; on Linux and
 * on Windows itself only the reset counts. */
int test_is_reset(int rc);
/* Asserts test_is_reset(rc), naming what came instead. A macro, so that a
 * failure points at the caller's line. */
#define test_assert_reset(rc)                                                                  \
  do {                                                                                         \
    int rc_ = (rc);                                                                            \
    ck_assert_msg(test_is_reset(rc_), "expected a reset (RST), got %s",                        \
                  rc_ ? os_strerror(-rc_) : "a clean EOF (FIN)");                              \
  } while (0)
/* 1 when running under Wine rather than on Windows itself. */
int test_under_wine(void);
/* A loopback port that nobody listens on now (bound, read and released),
 * for connects that must be refused. */
uint16_t test_unused_port(void);
/* poll(2) over sockets (WSAPoll on Windows, which takes the same struct
 * pollfd and POLLIN/POLLOUT). Returns the ready count or -errno. */
int test_poll(struct pollfd *fds, unsigned n, int timeout_ms);

/* ---- process ---- */

/* Resident memory of this process in KiB (VmRSS; the working set on
 * Windows), or -1 if unknown. */
long test_rss_kib(void);
/* Raises the soft limit of open descriptors to the hard one (nothing to do
 * on Windows, which has no such limit for sockets). */
void test_raise_fd_limit(void);

/* ---- files ---- */

/* The directory for temporary files, '/'-separated, no trailing '/':
 * "/tmp" on Linux, the user's temp directory on Windows. */
const char *test_tmpdir(void);
/* Creates a new directory <test_tmpdir()>/<prefix>XXXXXX and writes its path
 * to out. Fails the test on error. */
void test_mkdtemp(char *out, size_t len, const char *prefix);
/* mkdir with mode 0700 (the mode is ignored on Windows); 0 or -errno. */
int test_mkdir(const char *path);
/* Removes path and everything below it; 0 or -errno. */
int test_rm_rf(const char *path);
/* Copies the file from into to, as a deploy would: written beside it
 * (to.new), then renamed over it. Fails the test on any error. */
void test_copy_file(const char *from, const char *to);

/* Polls cond(arg) every millisecond for up to timeout_ms; returns 1 when it
 * became true. */
int test_wait(int (*cond)(void *arg), void *arg, int timeout_ms);

/* Deterministic byte pattern: byte k of stream `seed`. */
static inline uint8_t test_pattern(uint32_t seed, size_t k) {
  uint32_t x = seed * 2654435761u + (uint32_t)k * 40503u + (uint32_t)(k >> 8) * 977u;
  return (uint8_t)(x ^ (x >> 13) ^ (x >> 21));
}

/* A file a test plugin records lines to ("out" in its config). */
typedef struct test_rec {
  char path[128]; /* a temp path: Windows user directories make it long */
  char *text; /* the last test_rec_read */
} test_rec;

void test_rec_init(test_rec *r);
/* The whole file now (owned by r, valid until the next read). */
const char *test_rec_read(test_rec *r);
/* How often needle occurs in text. */
int test_count(const char *text, const char *needle);
/* Waits until needle occurs count times in the file; 1 if it did. */
int test_rec_wait(test_rec *r, const char *needle, int count, int timeout_ms);
void test_rec_free(test_rec *r);

/* Runs the suite; returns the process exit status. With CK_FORK=no (always
 * on Windows, where Check cannot fork) every case runs in this one process,
 * so a case must leave no state behind that the next one would see. */
int test_run(Suite *s);

#endif
