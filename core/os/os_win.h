/* Windows types and inline wrappers for os.h. Sockets are kept in an int:
 * Windows handles, SOCKETs included, are 32-bit values even in 64-bit
 * processes (so that 32- and 64-bit processes can share them), so the
 * conversion loses nothing. */
#ifndef PIER_OS_OS_WIN_H
#define PIER_OS_OS_WIN_H

#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <winsock2.h>
#include <ws2tcpip.h>
#include <mswsock.h>
#include <windows.h>

#include <fcntl.h>

/* open(2) flags: what the core opens it reads as bytes (no CRLF
 * translation) and never hands to child processes. */
#ifndef O_CLOEXEC
#define O_CLOEXEC (_O_NOINHERIT | _O_BINARY)
#endif

typedef struct os_thread {
  HANDLE handle; /* NULL in what os_thread_self() returns */
  DWORD id;
} os_thread;
typedef SRWLOCK os_mutex;
typedef INIT_ONCE os_once_t;
typedef DWORD os_key;
#define OS_ONCE_INIT INIT_ONCE_STATIC_INIT

/* The layout of WSABUF (ULONG len, CHAR *buf), so that an iovec array built
 * by the send queue is handed to WSASend as it is. Fields are named as on
 * POSIX; code sets them by name, never by position. */
struct iovec {
  unsigned long iov_len;
  void *iov_base;
};

/* Threads are compared by id. */
static inline os_thread os_thread_self(void) { return (os_thread){NULL, GetCurrentThreadId()}; }
static inline int os_thread_equal(os_thread a, os_thread b) { return a.id == b.id; }
static inline void os_mutex_init(os_mutex *m) { InitializeSRWLock(m); }
static inline void os_mutex_destroy(os_mutex *m) { (void)m; }
static inline void os_mutex_lock(os_mutex *m) { AcquireSRWLockExclusive(m); }
static inline void os_mutex_unlock(os_mutex *m) { ReleaseSRWLockExclusive(m); }
void os_once(os_once_t *once, void (*fn)(void));

/* A Win32 or Winsock error code (GetLastError, WSAGetLastError, an
 * overlapped result) as a positive errno value; unknown codes map to EIO. */
int os_win_errno(unsigned long err);

/* Asks Windows to keep 64 KiB of the calling thread's stack for exception
 * handling (SetThreadStackGuarantee), room the crash report needs after a
 * stack overflow. Every thread os_thread_create starts calls it; so does
 * os_crash_install for its own. Wine ends an overflowing thread without
 * running the filter, so the overflow report is untested there. */
void os_win_stack_reserve(void);

#endif
