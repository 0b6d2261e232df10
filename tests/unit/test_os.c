/* Unit tests for the platform layer (core/os/os.h), run on every platform:
 * threads and their exit destructors, locks, once, the clocks, and the
 * socket calls with their errors in errno terms. */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "os/os.h"
#include "testlib.h"

#define COUNT_THREADS 4
#define COUNT_ROUNDS 100000

typedef struct counter {
  os_mutex mu;
  long value; /* under mu, deliberately not atomic */
} counter;

static void *count_up(void *arg) {
  counter *c = arg;
  for (int i = 0; i < COUNT_ROUNDS; i++) {
    os_mutex_lock(&c->mu);
    c->value++;
    os_mutex_unlock(&c->mu);
  }
  return NULL;
}

START_TEST(test_os_threads_and_mutex_count_every_increment) {
  counter c = {.value = 0};
  os_thread t[COUNT_THREADS];

  os_mutex_init(&c.mu);
  for (int i = 0; i < COUNT_THREADS; i++)
    ck_assert_int_eq(os_thread_create(&t[i], count_up, &c), 0);
  for (int i = 0; i < COUNT_THREADS; i++)
    os_thread_join(t[i]);
  ck_assert_int_eq(c.value, (long)COUNT_THREADS * COUNT_ROUNDS);
  os_mutex_destroy(&c.mu);
}
END_TEST

static os_thread seen_self;

static void *remember_self(void *arg) {
  seen_self = os_thread_self();
  return arg;
}

START_TEST(test_os_thread_self_tells_threads_apart) {
  os_thread t, me = os_thread_self();
  ck_assert(os_thread_equal(me, os_thread_self()));
  ck_assert_int_eq(os_thread_create(&t, remember_self, NULL), 0);
  os_thread_join(t);
  ck_assert(!os_thread_equal(me, seen_self));
}
END_TEST

static os_once_t once = OS_ONCE_INIT;
static atomic_int once_runs;

static void once_fn(void) { atomic_fetch_add(&once_runs, 1); }

static void *call_once(void *arg) {
  os_once(&once, once_fn);
  return arg;
}

START_TEST(test_os_once_runs_once_across_threads) {
  os_thread t[COUNT_THREADS];
  for (int i = 0; i < COUNT_THREADS; i++)
    ck_assert_int_eq(os_thread_create(&t[i], call_once, NULL), 0);
  for (int i = 0; i < COUNT_THREADS; i++)
    os_thread_join(t[i]);
  call_once(NULL);
  ck_assert_int_eq(atomic_load(&once_runs), 1);
}
END_TEST

/* Where malloc is glibc's own, os_heap_trim trims; behind a sanitizer's
 * allocator (whose glibc heap is never set up) or off glibc it does nothing,
 * from however many threads it is first called at once. */
#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define HEAP_TRIMS 1
#else
#define HEAP_TRIMS 0
#endif

static atomic_int heap_trims, heap_ready, heap_go;

static void *trim_heap(void *arg) {
  atomic_fetch_add(&heap_ready, 1);
  while (!atomic_load(&heap_go))
    os_yield();
  atomic_fetch_add(&heap_trims, os_heap_trim());
  return arg;
}

START_TEST(test_os_heap_trim_only_where_malloc_is_the_c_librarys) {
  os_thread t[COUNT_THREADS];
  for (int i = 0; i < COUNT_THREADS; i++)
    ck_assert_int_eq(os_thread_create(&t[i], trim_heap, NULL), 0);
  while (atomic_load(&heap_ready) < COUNT_THREADS)
    os_yield();
  atomic_store(&heap_go, 1);
  for (int i = 0; i < COUNT_THREADS; i++)
    os_thread_join(t[i]);
  ck_assert_int_eq(atomic_load(&heap_trims), COUNT_THREADS * HEAP_TRIMS);
  ck_assert_int_eq(os_heap_trim(), HEAP_TRIMS);
}
END_TEST

static os_key key;
static atomic_int dtor_runs;
static void *dtor_value;

static void key_dtor(void *value) {
  dtor_value = value;
  atomic_fetch_add(&dtor_runs, 1);
}

static int key_value;

static void *set_key(void *arg) {
  os_key_set(key, &key_value);
  return arg;
}

static void *leave_key(void *arg) { return arg; }

START_TEST(test_os_key_destructor_runs_when_a_thread_that_set_it_exits) {
  os_thread t;
  ck_assert_int_eq(os_key_create(&key, key_dtor), 0);
  ck_assert_int_eq(os_thread_create(&t, leave_key, NULL), 0);
  os_thread_join(t);
  ck_assert_int_eq(atomic_load(&dtor_runs), 0); /* never set: no call */
  ck_assert_int_eq(os_thread_create(&t, set_key, NULL), 0);
  os_thread_join(t);
  ck_assert_int_eq(atomic_load(&dtor_runs), 1);
  ck_assert_ptr_eq(dtor_value, &key_value);
}
END_TEST

START_TEST(test_os_clocks) {
  uint64_t a = os_clock_ms(), b;
  int64_t sec;
  int ms;
  struct tm tm;
  uint64_t us = os_clock_us(), ns = os_clock_ns(), m, n;

  os_sleep_ms(30);
  b = os_clock_ms();
  ck_assert_uint_ge(b - a, 30);
  ck_assert_uint_lt(b - a, 5000);
  /* One clock in three units. */
  ck_assert_uint_ge(os_clock_us() - us, 30000);
  ck_assert_uint_ge(os_clock_ns() - ns, 30000000);
  m = os_clock_ms();
  n = os_clock_ns() / 1000000;
  ck_assert_msg(n >= m && n - m < 2, "ms %llu, ns/1e6 %llu", (unsigned long long)m,
                (unsigned long long)n);
  os_clock_wall(&sec, &ms);
  ck_assert_int_ge(ms, 0);
  ck_assert_int_lt(ms, 1000);
  /* The wall clock agrees with the C library's within a few seconds. */
  ck_assert_int_lt(sec > (int64_t)time(NULL) ? sec - (int64_t)time(NULL)
                                             : (int64_t)time(NULL) - sec, 5);
  os_gmtime(86400 * 365 + 3600 + 61, &tm); /* 1971-01-01 01:01:01 */
  ck_assert_int_eq(tm.tm_year, 71);
  ck_assert_int_eq(tm.tm_yday, 0);
  ck_assert_int_eq(tm.tm_hour, 1);
  ck_assert_int_eq(tm.tm_min, 1);
  ck_assert_int_eq(tm.tm_sec, 1);
}
END_TEST

START_TEST(test_os_socket_errors_are_errno_values) {
  struct sockaddr_in sa;
  socklen_t len = sizeof(sa);
  int lfd, fd, rc;

  ck_assert_int_eq(os_net_init(), 0);
  ck_assert_int_eq(os_net_init(), 0); /* idempotent */
  /* A port that was bound and is now closed refuses connections. */
  lfd = os_sock_stream(AF_INET);
  ck_assert_int_ge(lfd, 0);
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ck_assert_int_eq(os_sock_reuse(lfd), 0);
  ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&sa, &len), 0);
  os_sock_close(lfd);

  fd = os_sock_stream(AF_INET);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(os_sock_nodelay(fd), 0);
  /* Nonblocking: the connect is in progress or refused at once, never a
   * blocking wait. */
  rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
  if (rc < 0) {
    int e = os_sock_errno();
    ck_assert_msg(e == EINPROGRESS || e == EAGAIN || e == ECONNREFUSED,
                  "connect: %d (%s)", e, os_strerror(e));
  }
  os_sock_close(fd);
  ck_assert_int_lt(os_sock_stream(12345), 0); /* no such family */
}
END_TEST

START_TEST(test_os_strerror_names_socket_errors) {
  ck_assert_str_eq(os_strerror(ECONNRESET), "Connection reset by peer");
  ck_assert_str_eq(os_strerror(ECONNREFUSED), "Connection refused");
  ck_assert_str_eq(os_strerror(ETIMEDOUT), "Connection timed out");
  ck_assert_str_eq(os_strerror(EADDRINUSE), "Address already in use");
  ck_assert_str_eq(os_strerror(ENOENT), "No such file or directory");
}
END_TEST

static Suite *os_suite(void) {
  Suite *s = suite_create("os");
  TCase *tc = tcase_create("os");
  tcase_add_test(tc, test_os_threads_and_mutex_count_every_increment);
  tcase_add_test(tc, test_os_thread_self_tells_threads_apart);
  tcase_add_test(tc, test_os_once_runs_once_across_threads);
  tcase_add_test(tc, test_os_key_destructor_runs_when_a_thread_that_set_it_exits);
  tcase_add_test(tc, test_os_heap_trim_only_where_malloc_is_the_c_librarys);
  tcase_add_test(tc, test_os_clocks);
  tcase_add_test(tc, test_os_socket_errors_are_errno_values);
  tcase_add_test(tc, test_os_strerror_names_socket_errors);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return test_run(os_suite()); }
