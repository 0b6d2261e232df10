/* The I/O backends a loop test runs on: this platform's (io_uring and epoll
 * on Linux, IOCP on Windows). tcase_add_loop_test(tc, fn, 0,
 * TEST_IO_NBACKENDS); test_io_backend(_i) names the one of the iteration. */
#ifndef PIER_TEST_BACKENDS_H
#define PIER_TEST_BACKENDS_H

#ifdef _WIN32
#define TEST_IO_NBACKENDS 1
static inline const char *test_io_backend(int i) {
  (void)i;
  return "iocp";
}
#else
#define TEST_IO_NBACKENDS 2
static inline const char *test_io_backend(int i) { return i == 0 ? "io_uring" : "epoll"; }
#endif

#endif
