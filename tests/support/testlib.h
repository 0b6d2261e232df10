/* Shared helpers for pier's tests: the backend each loop-test iteration runs
 * on, loopback client sockets with deadlines, and polling for a condition
 * that another thread makes true. */
#ifndef PIER_TESTLIB_H
#define PIER_TESTLIB_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

#include "net/net.h"

/* tcase_add_loop_test(tc, fn, 0, TEST_NBACKENDS): _i picks the backend. */
#define TEST_NBACKENDS 2
const char *test_backend(int i);

/* A blocking loopback TCP client connected to port (IPv4), with SO_RCVTIMEO
 * of 10 s so a hung test fails instead of hanging. Fails the test on error. */
int test_connect(uint16_t port);
int test_connect6(uint16_t port);
void test_send_all(int fd, const void *data, size_t len);
/* Reads exactly len bytes; returns 0, or -1 on EOF/error/timeout. */
int test_recv_exact(int fd, void *buf, size_t len);
/* Reads until EOF or error; returns 0 on clean EOF, -errno on an error
 * (e.g. -ECONNRESET), discarding data; *got gets the byte count. */
int test_recv_until_close(int fd, size_t *got);

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
  char path[64];
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

/* Runs the suite; returns the process exit status. */
int test_run(Suite *s);

#endif
