/* The platform layer. Everything the core needs from the operating system
 * that differs between POSIX and Windows goes through here: threads and
 * locks, the clocks, socket calls and their errors. One header per platform
 * (os_unix.h, os_win.h) holds the types and the inline wrappers that sit on
 * hot paths; one directory per platform (unix/, win/) holds the rest. The
 * core never includes <pthread.h>, <windows.h> or the socket headers itself.
 *
 * Conventions: functions return 0 or a negative errno value; socket errors
 * on Windows are translated to the same errno names (ECONNRESET, ...), so the
 * core compares and prints one set of codes on both platforms. */
#ifndef PIER_OS_OS_H
#define PIER_OS_OS_H

#include <stddef.h>
#include <stdint.h>

#ifdef _WIN32
#include "os/os_win.h"
#else
#include "os/os_unix.h"
#endif

/* ---- threads ---- */

typedef void *(*os_thread_fn)(void *arg);
/* Starts fn(arg) on a new thread. Returns 0 or a negative errno. */
int os_thread_create(os_thread *t, os_thread_fn fn, void *arg);
/* Waits for the thread to end and releases it. */
void os_thread_join(os_thread t);
/* (inline, per platform) os_thread_self(), os_thread_equal(a, b),
 * os_mutex_init/destroy/lock/unlock(os_mutex *), os_once(os_once_t *, fn)
 * with OS_ONCE_INIT. */

/* A per-thread slot whose destructor runs with the slot's value when a
 * thread that set it exits. Returns 0 or a negative errno. */
int os_key_create(os_key *key, void (*dtor)(void *value));
void os_key_set(os_key key, void *value);

/* ---- memory ---- */

/* size bytes aligned to align (a power of two); free with os_aligned_free
 * (Windows' C library cannot free such a block with free()). */
void *os_aligned_alloc(size_t align, size_t size);
void os_aligned_free(void *p);

/* Gives back to the system what the C library's allocator keeps of freed
 * memory (glibc's malloc_trim), from any thread. Only where malloc is the C
 * library's own: an allocator in front of it (a sanitizer, a preloaded
 * jemalloc) leaves that heap unused and uninitialised, and trimming it from
 * two threads at once crashes in its lazy setup. Returns 1 if it trimmed,
 * 0 where there is no such heap (other allocators, other systems). */
int os_heap_trim(void);

/* ---- time ---- */

/* Monotonic milliseconds (arbitrary origin). */
uint64_t os_clock_ms(void);
/* The same clock in microseconds and nanoseconds. */
uint64_t os_clock_us(void);
uint64_t os_clock_ns(void);
/* Wall clock: seconds since 1970 and the millisecond within. */
void os_clock_wall(int64_t *sec, int *ms);
/* Seconds since 1970 as UTC calendar time. */
struct tm;
void os_gmtime(int64_t sec, struct tm *out);
/* Sleeps at least ms milliseconds. */
void os_sleep_ms(unsigned ms);
/* A short pause while polling for another thread's progress: about us
 * microseconds on POSIX; on Windows, whose sleeps are whole timer ticks
 * (1-16 ms), a pause under a millisecond gives up the rest of the time
 * slice instead. */
void os_nap_us(unsigned us);
/* Lets another runnable thread have the CPU. */
void os_yield(void);

/* ---- sockets ---- */

/* Process-wide socket setup (WSAStartup on Windows); idempotent and
 * thread-safe. Returns 0 or a negative errno. */
int os_net_init(void);
/* A new nonblocking, non-inheritable TCP socket of this address family.
 * Returns it or a negative errno. */
int os_sock_stream(int family);
/* The last socket call's error on this thread, as a positive errno. */
int os_sock_errno(void);
void os_sock_close(int fd);
/* Makes the coming close send an RST rather than a FIN (linger 0). */
int os_sock_linger0(int fd);
/* Closes with an RST: for refused connections. */
void os_sock_abort(int fd);
int os_sock_nodelay(int fd);
/* For listeners: rebinding a port in TIME_WAIT (POSIX SO_REUSEADDR); on
 * Windows exclusive use instead, which is the safe equivalent there. */
int os_sock_reuse(int fd);
int os_sock_v6only(int fd);
/* Sends FIN; the socket stays open for reading. */
int os_sock_shutdown_wr(int fd);
/* A listening socket stops listening but stays open (its fd may still be
 * armed in a loop): Linux refuses new connections with an RST from then on,
 * resets those not yet accepted and ends a pending accept with EINVAL.
 * Windows has no such call: -ENOSYS, and the caller refuses each accepted
 * connection itself. */
int os_sock_stop_listen(int fd);

/* strerror for the codes above, including the socket ones Windows' C
 * library has no text for. Thread-safe (returns static text). */
const char *os_strerror(int err);

#endif
