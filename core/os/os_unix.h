/* POSIX types and inline wrappers for os.h. */
#ifndef PIER_OS_OS_UNIX_H
#define PIER_OS_OS_UNIX_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/uio.h>

typedef pthread_t os_thread;
typedef pthread_mutex_t os_mutex;
typedef pthread_once_t os_once_t;
typedef pthread_key_t os_key;
#define OS_ONCE_INIT PTHREAD_ONCE_INIT

static inline os_thread os_thread_self(void) { return pthread_self(); }
static inline int os_thread_equal(os_thread a, os_thread b) { return pthread_equal(a, b); }
static inline void os_mutex_init(os_mutex *m) { pthread_mutex_init(m, NULL); }
static inline void os_mutex_destroy(os_mutex *m) { pthread_mutex_destroy(m); }
static inline void os_mutex_lock(os_mutex *m) { pthread_mutex_lock(m); }
static inline void os_mutex_unlock(os_mutex *m) { pthread_mutex_unlock(m); }
static inline void os_once(os_once_t *once, void (*fn)(void)) { pthread_once(once, fn); }

#endif
