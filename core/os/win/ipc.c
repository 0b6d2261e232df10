/* The admin channel on Windows: a named pipe. The first instance is created
 * with FILE_FLAG_FIRST_PIPE_INSTANCE, so a second pierd (or anyone who took
 * the name first) is refused, and one instance is always kept waiting for a
 * client, so the name is held for as long as the server lives. Instances
 * carry a DACL that grants access to the current user only (not even to
 * administrators or SYSTEM) and reject remote clients. All server I/O is
 * overlapped with manual-reset events: a read or write that cannot finish
 * at once stays pending in the caller's buffer, and the same call made again
 * after the event is set collects its result. */
#include "base/log.h"
#include "os/ipc.h"
#include "os/os.h"

#include <errno.h>
#include <sddl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#define PIPE_PREFIX "\\\\.\\pipe\\"
#define NAME_MAX_CHARS 256 /* the whole pipe name, as Windows allows */
#define PIPE_OUT_BUF 65536
#define PIPE_IN_BUF 4096

const char os_ipc_noun[] = "admin pipe";

struct os_ipc_server {
  char name[NAME_MAX_CHARS + 1];
  wchar_t wname[NAME_MAX_CHARS + 1];
  PSECURITY_DESCRIPTOR sd;
  int instances; /* limit for all instances */
  HANDLE listen;  /* the instance waiting for a client, or NULL */
  OVERLAPPED ov;
  HANDLE ev;
  int connected; /* listen has a client */
};

typedef struct op {
  OVERLAPPED ov;
  HANDLE ev;
  int pending;
} op;

struct os_ipc_conn {
  HANDLE h;
  op rd, wr;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(LOG_PRINTF, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  if (!err || errlen == 0)
    return;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

int os_ipc_name(const char *path, char *name, size_t len) {
  char full[MAX_PATH * 2];
  size_t k = strlen(PIPE_PREFIX "pier-");
  DWORD n;

  if (_strnicmp(path, PIPE_PREFIX, strlen(PIPE_PREFIX)) == 0 ||
      _strnicmp(path, "//./pipe/", 9) == 0) {
    if (strlen(path) > NAME_MAX_CHARS || strlen(path) >= len)
      return -ENAMETOOLONG;
    snprintf(name, len, PIPE_PREFIX "%s", path + strlen(PIPE_PREFIX));
    return 0;
  }
  n = GetFullPathNameA(path, sizeof(full), full, NULL);
  if (n == 0)
    return -os_win_errno(GetLastError());
  if (n >= sizeof(full) || k + n > NAME_MAX_CHARS || k + n >= len)
    return -ENAMETOOLONG;
  memcpy(name, PIPE_PREFIX "pier-", k);
  for (DWORD i = 0; i < n; i++) {
    char ch = full[i];
    name[k++] = ch == '\\' || ch == '/' || ch == ':' ? '-'
                : ch >= 'A' && ch <= 'Z'             ? (char)(ch - 'A' + 'a')
                                                     : ch;
  }
  name[k] = '\0';
  return 0;
}

/* A security descriptor whose DACL allows the current user, and nobody
 * else. */
static int owner_only_sd(PSECURITY_DESCRIPTOR *out) {
  HANDLE tok;
  union {
    TOKEN_USER tu;
    char raw[256];
  } u;
  DWORD n;
  LPWSTR sid = NULL;
  wchar_t sddl[256];
  int rc = 0;

  if (!OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &tok))
    return -os_win_errno(GetLastError());
  if (!GetTokenInformation(tok, TokenUser, &u, sizeof(u), &n) ||
      !ConvertSidToStringSidW(u.tu.User.Sid, &sid))
    rc = -os_win_errno(GetLastError());
  CloseHandle(tok);
  if (rc < 0)
    return rc;
  /* P: protected, no inherited entries; GA: generic all, for this SID only. */
  _snwprintf(sddl, sizeof(sddl) / sizeof(sddl[0]), L"D:P(A;;GA;;;%ls)", sid);
  sddl[sizeof(sddl) / sizeof(sddl[0]) - 1] = 0;
  LocalFree(sid);
  if (!ConvertStringSecurityDescriptorToSecurityDescriptorW(sddl, SDDL_REVISION_1, out, NULL))
    return -os_win_errno(GetLastError());
  return 0;
}

/* Creates the next instance and starts waiting for its client. */
static int new_instance(os_ipc_server *s, int first) {
  SECURITY_ATTRIBUTES sa = {sizeof(sa), s->sd, FALSE};
  HANDLE h = CreateNamedPipeW(
      s->wname, PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED | (first ? FILE_FLAG_FIRST_PIPE_INSTANCE : 0),
      PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
      (DWORD)s->instances, PIPE_OUT_BUF, PIPE_IN_BUF, 0, &sa);
  if (h == INVALID_HANDLE_VALUE)
    return -os_win_errno(GetLastError());
  ResetEvent(s->ev);
  memset(&s->ov, 0, sizeof(s->ov));
  s->ov.hEvent = s->ev;
  s->connected = 0;
  if (!ConnectNamedPipe(h, &s->ov)) {
    DWORD e = GetLastError();
    if (e == ERROR_PIPE_CONNECTED) {
      s->connected = 1;
      SetEvent(s->ev);
    } else if (e != ERROR_IO_PENDING) {
      CloseHandle(h);
      return -os_win_errno(e);
    }
  } else {
    s->connected = 1;
  }
  s->listen = h;
  return 0;
}

/* Whether a server answers on the pipe: a client open that succeeds, finds
 * every instance busy or is refused access means the name is taken. Wine
 * does not refuse a second first instance, and a probe is what the unix side
 * does too; FILE_FLAG_FIRST_PIPE_INSTANCE still closes the race on Windows. */
static int in_use(const wchar_t *wname) {
  HANDLE h = CreateFileW(wname, GENERIC_READ | GENERIC_WRITE, 0, NULL, OPEN_EXISTING, 0, NULL);
  DWORD e;
  if (h != INVALID_HANDLE_VALUE) {
    CloseHandle(h); /* the server sees a client that left at once */
    return 1;
  }
  e = GetLastError();
  return e == ERROR_PIPE_BUSY || e == ERROR_ACCESS_DENIED;
}

int os_ipc_listen(const char *path, int backlog, os_ipc_server **out, char *err,
                  size_t errlen) {
  os_ipc_server *s;
  int rc;

  *out = NULL;
  s = calloc(1, sizeof(*s));
  if (!s) {
    set_err(err, errlen, "admin pipe for %s: out of memory", path);
    return -ENOMEM;
  }
  if ((rc = os_ipc_name(path, s->name, sizeof(s->name))) < 0) {
    set_err(err, errlen, "admin pipe for %s: %s", path,
            rc == -ENAMETOOLONG ? "path too long for a pipe name (at most 256 characters)"
                                : os_strerror(-rc));
    free(s);
    return rc;
  }
  if (!MultiByteToWideChar(CP_UTF8, 0, s->name, -1, s->wname, NAME_MAX_CHARS + 1)) {
    set_err(err, errlen, "admin pipe %s: the name is not valid UTF-8", s->name);
    free(s);
    return -EINVAL;
  }
  s->instances = backlog + 1;
  s->ev = CreateEventW(NULL, TRUE, FALSE, NULL);
  if (!s->ev) {
    rc = -os_win_errno(GetLastError());
    set_err(err, errlen, "admin pipe %s: %s", s->name, os_strerror(-rc));
    free(s);
    return rc;
  }
  if ((rc = owner_only_sd(&s->sd)) < 0) {
    set_err(err, errlen, "admin pipe %s: cannot make its access list: %s", s->name,
            os_strerror(-rc));
    CloseHandle(s->ev);
    free(s);
    return rc;
  }
  rc = in_use(s->wname) ? -EADDRINUSE : new_instance(s, 1);
  if (rc < 0) {
    if (rc == -EACCES || rc == -EBUSY || rc == -EADDRINUSE) {
      set_err(err, errlen, "admin pipe %s is in use by a running pierd", s->name);
      rc = -EADDRINUSE;
    } else {
      set_err(err, errlen, "admin pipe %s: cannot create: %s", s->name, os_strerror(-rc));
    }
    LocalFree(s->sd);
    CloseHandle(s->ev);
    free(s);
    return rc;
  }
  if (err && errlen)
    err[0] = '\0';
  *out = s;
  return 0;
}

const char *os_ipc_server_name(const os_ipc_server *s) { return s->name; }

int os_ipc_server_item(os_ipc_server *s, os_wait_item *item) {
  int rc = s->listen ? 0 : new_instance(s, 0);
  item->h = rc == 0 ? s->ev : NULL;
  item->ready = 0;
  return rc;
}

static int conn_new(HANDLE h, os_ipc_conn **out) {
  os_ipc_conn *c = calloc(1, sizeof(*c));
  if (!c)
    return -ENOMEM;
  c->h = h;
  c->rd.ev = CreateEventW(NULL, TRUE, FALSE, NULL);
  c->wr.ev = CreateEventW(NULL, TRUE, FALSE, NULL);
  if (!c->rd.ev || !c->wr.ev) {
    int rc = -os_win_errno(GetLastError());
    if (c->rd.ev)
      CloseHandle(c->rd.ev);
    if (c->wr.ev)
      CloseHandle(c->wr.ev);
    free(c);
    return rc;
  }
  *out = c;
  return 0;
}

int os_ipc_accept(os_ipc_server *s, os_ipc_conn **out) {
  DWORD n;
  int rc;

  *out = NULL;
  if (!s->listen && (rc = new_instance(s, 0)) < 0)
    return rc == -EBUSY ? -EAGAIN : rc;
  if (!s->connected) {
    if (!GetOverlappedResult(s->listen, &s->ov, &n, FALSE)) {
      DWORD e = GetLastError();
      if (e == ERROR_IO_INCOMPLETE)
        return -EAGAIN;
      /* The client left before it was taken: start over, the new instance
       * first so that the name is never free (the old one's connect has
       * ended, so its OVERLAPPED may be reused). */
      HANDLE old = s->listen;
      (void)e;
      s->listen = NULL;
      if (new_instance(s, 0) < 0) {
        CloseHandle(old); /* no instance left to spare: free this one, retry */
        (void)new_instance(s, 0);
      } else {
        CloseHandle(old);
      }
      return -ECONNABORTED;
    }
  }
  if ((rc = conn_new(s->listen, out)) < 0)
    return rc; /* the client stays connected to listen; tried again later */
  s->listen = NULL;
  s->connected = 0;
  /* The next instance at once, so that the name is never free. */
  (void)new_instance(s, 0);
  return 0;
}

void os_ipc_server_close(os_ipc_server *s) {
  if (!s)
    return;
  if (s->listen) {
    DWORD n;
    CancelIoEx(s->listen, &s->ov);
    GetOverlappedResult(s->listen, &s->ov, &n, TRUE);
    CloseHandle(s->listen);
  }
  CloseHandle(s->ev);
  LocalFree(s->sd);
  free(s);
}

/* The result of o's pending operation: bytes, -EAGAIN or a negative errno. */
static long collect(os_ipc_conn *c, op *o) {
  DWORD n;
  if (!GetOverlappedResult(c->h, &o->ov, &n, FALSE)) {
    DWORD e = GetLastError();
    if (e == ERROR_IO_INCOMPLETE)
      return -EAGAIN;
    o->pending = 0;
    return e == ERROR_BROKEN_PIPE || e == ERROR_PIPE_NOT_CONNECTED ? 0 : -os_win_errno(e);
  }
  o->pending = 0;
  return (long)n;
}

static void start(op *o) {
  ResetEvent(o->ev);
  memset(&o->ov, 0, sizeof(o->ov));
  o->ov.hEvent = o->ev;
}

long os_ipc_read(os_ipc_conn *c, void *buf, size_t cap) {
  DWORD n;
  if (c->rd.pending)
    return collect(c, &c->rd);
  start(&c->rd);
  if (ReadFile(c->h, buf, (DWORD)cap, &n, &c->rd.ov))
    return (long)n;
  if (GetLastError() == ERROR_IO_PENDING) {
    c->rd.pending = 1;
    return -EAGAIN;
  }
  {
    DWORD e = GetLastError();
    return e == ERROR_BROKEN_PIPE || e == ERROR_PIPE_NOT_CONNECTED ? 0 : -os_win_errno(e);
  }
}

long os_ipc_write(os_ipc_conn *c, const void *buf, size_t n) {
  DWORD k;
  long r;
  if (c->wr.pending) {
    r = collect(c, &c->wr);
    return r == 0 ? -EPIPE : r;
  }
  start(&c->wr);
  if (WriteFile(c->h, buf, (DWORD)n, &k, &c->wr.ov))
    return k > 0 ? (long)k : -EPIPE;
  if (GetLastError() == ERROR_IO_PENDING) {
    c->wr.pending = 1;
    return -EAGAIN;
  }
  {
    DWORD e = GetLastError();
    return e == ERROR_BROKEN_PIPE || e == ERROR_NO_DATA || e == ERROR_PIPE_NOT_CONNECTED
               ? -EPIPE
               : -os_win_errno(e);
  }
}

void os_ipc_conn_item(os_ipc_conn *c, int want_write, os_wait_item *item) {
  item->h = want_write ? c->wr.ev : c->rd.ev;
  item->ready = 0;
}

static void cancel(os_ipc_conn *c, op *o) {
  DWORD n;
  if (!o->pending)
    return;
  CancelIoEx(c->h, &o->ov);
  GetOverlappedResult(c->h, &o->ov, &n, TRUE);
  o->pending = 0;
}

void os_ipc_conn_close(os_ipc_conn *c) {
  if (!c)
    return;
  /* A pending read holds the caller's buffer, a pending write too: both
   * end before the handle and those buffers go. Closing (not disconnecting)
   * leaves what was written readable by the client. */
  cancel(c, &c->rd);
  cancel(c, &c->wr);
  CloseHandle(c->h);
  CloseHandle(c->rd.ev);
  CloseHandle(c->wr.ev);
  free(c);
}

/* ---- client ---- */

int os_ipc_dial(const char *path, int timeout_ms, os_ipc_conn **out, int *at) {
  char name[NAME_MAX_CHARS + 1];
  wchar_t wname[NAME_MAX_CHARS + 1];
  ULONGLONG deadline = GetTickCount64() + (ULONGLONG)timeout_ms;
  HANDLE h;
  int rc;

  *out = NULL;
  *at = OS_IPC_AT_NAME;
  if ((rc = os_ipc_name(path, name, sizeof(name))) < 0)
    return rc;
  if (!MultiByteToWideChar(CP_UTF8, 0, name, -1, wname, NAME_MAX_CHARS + 1))
    return -EINVAL;
  *at = OS_IPC_AT_CONNECT;
  for (;;) {
    ULONGLONG now;
    h = CreateFileW(wname, GENERIC_READ | GENERIC_WRITE, 0, NULL, OPEN_EXISTING,
                    FILE_FLAG_OVERLAPPED, NULL);
    if (h != INVALID_HANDLE_VALUE)
      break;
    if (GetLastError() != ERROR_PIPE_BUSY)
      return -os_win_errno(GetLastError());
    /* Every instance has a client: wait for one to be free, within the
     * deadline, as a unix client waits in the listen backlog. */
    now = GetTickCount64();
    if (now >= deadline || !WaitNamedPipeW(wname, (DWORD)(deadline - now))) {
      if (GetTickCount64() >= deadline)
        return -ETIMEDOUT;
    }
  }
  if ((rc = conn_new(h, out)) < 0) {
    CloseHandle(h);
    *at = OS_IPC_AT_SOCKET;
    return rc;
  }
  return 0;
}

/* Waits for o's pending operation up to timeout_ms. */
static long wait_op(os_ipc_conn *c, op *o, int timeout_ms) {
  DWORD r = WaitForSingleObject(o->ev, timeout_ms < 0 ? INFINITE : (DWORD)timeout_ms);
  if (r == WAIT_TIMEOUT) {
    cancel(c, o);
    return -ETIMEDOUT;
  }
  return collect(c, o);
}

int os_ipc_send_all(os_ipc_conn *c, const void *buf, size_t n) {
  for (size_t off = 0; off < n;) {
    long k = os_ipc_write(c, (const char *)buf + off, n - off);
    if (k == -EAGAIN)
      k = wait_op(c, &c->wr, 10000);
    if (k == 0)
      k = -EPIPE;
    if (k < 0)
      return (int)k;
    off += (size_t)k;
  }
  return 0;
}

long os_ipc_recv(os_ipc_conn *c, void *buf, size_t cap, int timeout_ms) {
  long k = os_ipc_read(c, buf, cap);
  if (k == -EAGAIN)
    k = wait_op(c, &c->rd, timeout_ms);
  return k;
}
