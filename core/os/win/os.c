/* os.h on Windows: Win32 threads and SRW locks, QueryPerformanceCounter,
 * Winsock. */
#include "os/os.h"

#include <errno.h>
#include <process.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- threads ---- */

typedef struct thread_start {
  os_thread_fn fn;
  void *arg;
} thread_start;

void os_win_stack_reserve(void) {
  ULONG keep = 64 * 1024;
  SetThreadStackGuarantee(&keep);
}

static unsigned __stdcall thread_main(void *p) {
  thread_start st = *(thread_start *)p;
  free(p);
  os_win_stack_reserve();
  st.fn(st.arg);
  return 0;
}

int os_thread_create(os_thread *t, os_thread_fn fn, void *arg) {
  thread_start *st = malloc(sizeof(*st));
  unsigned id;
  uintptr_t h;

  if (!st)
    return -ENOMEM;
  st->fn = fn;
  st->arg = arg;
  /* _beginthreadex, not CreateThread: the C runtime sets up its per-thread
   * state (errno, strtok, ...) for the new thread. */
  h = _beginthreadex(NULL, 0, thread_main, st, 0, &id);
  if (!h) {
    int e = errno ? errno : EAGAIN;
    free(st);
    return -e;
  }
  t->handle = (HANDLE)h;
  t->id = id;
  return 0;
}

void os_thread_join(os_thread t) {
  WaitForSingleObject(t.handle, INFINITE);
  CloseHandle(t.handle);
}

static BOOL CALLBACK once_trampoline(PINIT_ONCE once, PVOID param, PVOID *ctx) {
  (void)once;
  (void)ctx;
  ((void (*)(void))param)();
  return TRUE;
}

void os_once(os_once_t *once, void (*fn)(void)) {
  InitOnceExecuteOnce(once, once_trampoline, (PVOID)fn, NULL);
}

/* Fiber-local storage: its callback runs when a thread that set a value
 * exits, as a pthread key destructor does. */
int os_key_create(os_key *key, void (*dtor)(void *value)) {
  DWORD k = FlsAlloc((PFLS_CALLBACK_FUNCTION)dtor);
  if (k == FLS_OUT_OF_INDEXES)
    return -EAGAIN;
  *key = k;
  return 0;
}

void os_key_set(os_key key, void *value) { FlsSetValue(key, value); }

/* ---- memory ---- */

void *os_aligned_alloc(size_t align, size_t size) { return _aligned_malloc(size, align); }

void os_aligned_free(void *p) { _aligned_free(p); }

int os_heap_trim(void) { return 0; }

/* ---- time ---- */

static uint64_t qpc_scaled(uint64_t per_second) {
  static LARGE_INTEGER freq;
  LARGE_INTEGER now;
  if (!freq.QuadPart)
    QueryPerformanceFrequency(&freq); /* fixed at boot; a racing second store writes the same */
  QueryPerformanceCounter(&now);
  return (uint64_t)(now.QuadPart / freq.QuadPart) * per_second +
         (uint64_t)(now.QuadPart % freq.QuadPart) * per_second / (uint64_t)freq.QuadPart;
}

uint64_t os_clock_ms(void) { return qpc_scaled(1000u); }

uint64_t os_clock_us(void) { return qpc_scaled(1000000u); }

uint64_t os_clock_ns(void) { return qpc_scaled(1000000000u); }

void os_clock_wall(int64_t *sec, int *ms) {
  FILETIME ft;
  ULARGE_INTEGER u;
  GetSystemTimePreciseAsFileTime(&ft);
  u.LowPart = ft.dwLowDateTime;
  u.HighPart = ft.dwHighDateTime;
  /* 100 ns units since 1601-01-01. */
  u.QuadPart -= 116444736000000000ull;
  *sec = (int64_t)(u.QuadPart / 10000000u);
  *ms = (int)(u.QuadPart % 10000000u / 10000u);
}

void os_gmtime(int64_t sec, struct tm *out) {
  __time64_t t = (__time64_t)sec;
  _gmtime64_s(out, &t);
}

void os_sleep_ms(unsigned ms) { Sleep(ms); }

void os_nap_us(unsigned us) {
  if (us < 1000)
    SwitchToThread();
  else
    Sleep(us / 1000);
}

void os_yield(void) { SwitchToThread(); }

/* ---- sockets ---- */

static INIT_ONCE wsa_once = INIT_ONCE_STATIC_INIT;
static int wsa_rc;

static BOOL CALLBACK wsa_start(PINIT_ONCE once, PVOID param, PVOID *ctx) {
  WSADATA wd;
  int rc = WSAStartup(MAKEWORD(2, 2), &wd);
  (void)once;
  (void)param;
  (void)ctx;
  wsa_rc = rc ? -os_win_errno((unsigned long)rc) : 0;
  return TRUE;
}

int os_net_init(void) {
  InitOnceExecuteOnce(&wsa_once, wsa_start, NULL, NULL);
  return wsa_rc;
}

int os_win_errno(unsigned long err) {
  switch (err) {
  case 0:
    return 0;
  case WSAEWOULDBLOCK:
  case WSA_IO_PENDING:
    return EAGAIN;
  case WSAEINTR:
    return EINTR;
  case WSAEBADF:
  case WSAENOTSOCK:
  case ERROR_INVALID_HANDLE:
    return EBADF;
  case WSAEACCES:
  case ERROR_ACCESS_DENIED:
    return EACCES;
  case WSAEFAULT:
    return EFAULT;
  case WSAEINVAL:
  case ERROR_INVALID_PARAMETER:
    return EINVAL;
  case WSAEMFILE:
  case ERROR_TOO_MANY_OPEN_FILES:
    return EMFILE;
  case WSAEINPROGRESS:
    return EINPROGRESS;
  case WSAEALREADY:
    return EALREADY;
  case WSAEMSGSIZE:
    return EMSGSIZE;
  case WSAENOPROTOOPT:
    return ENOPROTOOPT;
  case WSAEPROTONOSUPPORT:
    return EPROTONOSUPPORT;
  case WSAEOPNOTSUPP:
    return EOPNOTSUPP;
  case WSAEAFNOSUPPORT:
  case WSAEPFNOSUPPORT:
    return EAFNOSUPPORT;
  case WSAEADDRINUSE:
    return EADDRINUSE;
  case WSAEADDRNOTAVAIL:
    return EADDRNOTAVAIL;
  case WSAENETDOWN:
    return ENETDOWN;
  case WSAENETUNREACH:
  case ERROR_NETWORK_UNREACHABLE:
    return ENETUNREACH;
  case WSAENETRESET:
  case ERROR_NETNAME_DELETED:
    return ECONNRESET;
  case WSAECONNABORTED:
  case ERROR_CONNECTION_ABORTED:
  case ERROR_REQUEST_ABORTED:
    return ECONNABORTED;
  case WSAECONNRESET:
    return ECONNRESET;
  case WSAENOBUFS:
    return ENOBUFS;
  case ERROR_NOT_ENOUGH_MEMORY:
  case ERROR_OUTOFMEMORY:
    return ENOMEM;
  case ERROR_PIPE_BUSY:
    return EBUSY;
  case ERROR_BROKEN_PIPE:
  case ERROR_NO_DATA:
  case ERROR_PIPE_NOT_CONNECTED:
    return EPIPE;
  case ERROR_ALREADY_EXISTS:
  case ERROR_FILE_EXISTS:
    return EEXIST;
  case WSAEISCONN:
    return EISCONN;
  case WSAENOTCONN:
    return ENOTCONN;
  case WSAESHUTDOWN:
    return EPIPE;
  case WSAETIMEDOUT:
  case ERROR_SEM_TIMEOUT:
    return ETIMEDOUT;
  case WSAECONNREFUSED:
  case ERROR_CONNECTION_REFUSED:
    return ECONNREFUSED;
  case WSAEHOSTUNREACH:
  case ERROR_HOST_UNREACHABLE:
    return EHOSTUNREACH;
  case ERROR_OPERATION_ABORTED:
    return ECANCELED;
  case ERROR_FILE_NOT_FOUND:
  case ERROR_PATH_NOT_FOUND:
  case ERROR_MOD_NOT_FOUND:
    return ENOENT;
  case ERROR_BAD_EXE_FORMAT:
    return ENOEXEC;
  case ERROR_FILENAME_EXCED_RANGE:
    return ENAMETOOLONG;
  default:
    return EIO;
  }
}

int os_sock_stream(int family) {
  u_long on = 1;
  SOCKET s = WSASocketW(family, SOCK_STREAM, IPPROTO_TCP, NULL, 0,
                        WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
  if (s == INVALID_SOCKET)
    return -os_win_errno((unsigned long)WSAGetLastError());
  if (ioctlsocket(s, FIONBIO, &on) != 0) {
    int e = os_win_errno((unsigned long)WSAGetLastError());
    closesocket(s);
    return -e;
  }
  return (int)s;
}

int os_sock_errno(void) { return os_win_errno((unsigned long)WSAGetLastError()); }

void os_sock_close(int fd) { closesocket((SOCKET)fd); }

int os_sock_linger0(int fd) {
  struct linger lg = {.l_onoff = 1, .l_linger = 0};
  if (setsockopt((SOCKET)fd, SOL_SOCKET, SO_LINGER, (const char *)&lg, sizeof(lg)) != 0)
    return -os_sock_errno();
  return 0;
}

void os_sock_abort(int fd) {
  os_sock_linger0(fd);
  closesocket((SOCKET)fd);
}

int os_sock_stop_listen(int fd) {
  (void)fd;
  return -ENOSYS; /* shutdown() of a listening socket is WSAENOTCONN there */
}

static int set_int_opt(int fd, int level, int name, int value) {
  if (setsockopt((SOCKET)fd, level, name, (const char *)&value, sizeof(value)) != 0)
    return -os_sock_errno();
  return 0;
}

int os_sock_nodelay(int fd) { return set_int_opt(fd, IPPROTO_TCP, TCP_NODELAY, 1); }

/* SO_REUSEADDR on Windows lets another socket take over a bound port; the
 * safe meaning, refusing a second listener, is SO_EXCLUSIVEADDRUSE. */
int os_sock_reuse(int fd) { return set_int_opt(fd, SOL_SOCKET, SO_EXCLUSIVEADDRUSE, 1); }

int os_sock_v6only(int fd) { return set_int_opt(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1); }

int os_sock_shutdown_wr(int fd) {
  return shutdown((SOCKET)fd, SD_SEND) != 0 ? -os_sock_errno() : 0;
}

/* The C runtime knows only the classic errno texts; the socket ones it
 * calls "Unknown error". */
const char *os_strerror(int err) {
  switch (err) {
  case EADDRINUSE: return "Address already in use";
  case EADDRNOTAVAIL: return "Cannot assign requested address";
  case EAFNOSUPPORT: return "Address family not supported by protocol";
  case EALREADY: return "Operation already in progress";
  case ECANCELED: return "Operation canceled";
  case ECONNABORTED: return "Software caused connection abort";
  case ECONNREFUSED: return "Connection refused";
  case ECONNRESET: return "Connection reset by peer";
  case EHOSTUNREACH: return "No route to host";
  case EINPROGRESS: return "Operation now in progress";
  case EISCONN: return "Transport endpoint is already connected";
  case EMSGSIZE: return "Message too long";
  case ENETDOWN: return "Network is down";
  case ENETUNREACH: return "Network is unreachable";
  case ENOBUFS: return "No buffer space available";
  case ENOPROTOOPT: return "Protocol not available";
  case ENOTCONN: return "Transport endpoint is not connected";
  case ENOTSOCK: return "Socket operation on non-socket";
  case ENOTSUP: return "Operation not supported";
  case EOPNOTSUPP: return "Operation not supported";
  case ETIMEDOUT: return "Connection timed out";
  case EWOULDBLOCK: return "Resource temporarily unavailable";
  case EPROTONOSUPPORT: return "Protocol not supported";
  default: return strerror(err);
  }
}
