/* os.h on POSIX: pthreads, clock_gettime and BSD sockets. */
#include "os/os.h"

#include <errno.h>
#ifdef __GLIBC__
#include <dlfcn.h>
#include <gnu/lib-names.h>
#include <malloc.h>
#endif
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int os_thread_create(os_thread *t, os_thread_fn fn, void *arg) {
  int rc = pthread_create(t, NULL, fn, arg);
  return rc ? -rc : 0;
}

void os_thread_join(os_thread t) { pthread_join(t, NULL); }

int os_key_create(os_key *key, void (*dtor)(void *value)) {
  int rc = pthread_key_create(key, dtor);
  return rc ? -rc : 0;
}

void os_key_set(os_key key, void *value) { pthread_setspecific(key, value); }

void *os_aligned_alloc(size_t align, size_t size) {
  return aligned_alloc(align, (size + align - 1) / align * align);
}

void os_aligned_free(void *p) { free(p); }

#ifdef __GLIBC__
static os_once_t heap_once = OS_ONCE_INIT;
static int heap_is_libc;

/* malloc as the program resolves it against the C library's own. */
static void heap_probe(void) {
  void *libc = dlopen(LIBC_SO, RTLD_LAZY | RTLD_NOLOAD);
  if (!libc)
    return;
  void *own = dlsym(libc, "malloc");
  heap_is_libc = own && own == dlsym(RTLD_DEFAULT, "malloc");
  dlclose(libc);
}

int os_heap_trim(void) {
  os_once(&heap_once, heap_probe);
  if (!heap_is_libc)
    return 0;
  malloc_trim(0);
  return 1;
}
#else
int os_heap_trim(void) { return 0; }
#endif

uint64_t os_clock_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t os_clock_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t os_clock_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void os_clock_wall(int64_t *sec, int *ms) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  *sec = (int64_t)ts.tv_sec;
  *ms = (int)(ts.tv_nsec / 1000000);
}

void os_gmtime(int64_t sec, struct tm *out) {
  time_t t = (time_t)sec;
  gmtime_r(&t, out);
}

void os_sleep_ms(unsigned ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

void os_nap_us(unsigned us) {
  struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (long)(us % 1000000) * 1000L};
  nanosleep(&ts, NULL);
}

void os_yield(void) { sched_yield(); }

int os_net_init(void) { return 0; }

int os_sock_stream(int family) {
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  return fd < 0 ? -errno : fd;
}

int os_sock_errno(void) { return errno; }

void os_sock_close(int fd) { close(fd); }

int os_sock_linger0(int fd) {
  struct linger lg = {.l_onoff = 1, .l_linger = 0};
  return setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) < 0 ? -errno : 0;
}

void os_sock_abort(int fd) {
  os_sock_linger0(fd);
  close(fd);
}

int os_sock_stop_listen(int fd) { return shutdown(fd, SHUT_RD) < 0 ? -errno : 0; }

int os_sock_nodelay(int fd) {
  int one = 1;
  return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ? -errno : 0;
}

int os_sock_reuse(int fd) {
  int one = 1;
  return setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ? -errno : 0;
}

int os_sock_v6only(int fd) {
  int one = 1;
  return setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0 ? -errno : 0;
}

int os_sock_shutdown_wr(int fd) { return shutdown(fd, SHUT_WR) < 0 ? -errno : 0; }

const char *os_strerror(int err) { return strerror(err); }
