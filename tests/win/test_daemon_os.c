/* Checks of pierd's Windows platform parts, run under Wine (or on Windows)
 * by tests/win/run-daemon-os: the admin channel on a named pipe through the
 * shared protocol (core/daemon/admin.c) with a fake command, the stdin
 * reader, console control events and the directory watch.
 *
 *   test_daemon_os admin DIR   the admin pipe for DIR\admin.sock
 *   test_daemon_os conin       echoes each stdin line as "line: ...", then
 *                              "eof" at the end of input
 *   test_daemon_os ctrl        raises Ctrl+C (and Ctrl+Break) at itself
 *   test_daemon_os watch DIR   replaces DIR\plug.dll and checks the reports
 *
 * Prints "ok NAME" per check and "FAIL NAME: why" on failure; exits 0 only
 * when every check passed. */
#include <errno.h>
#include <aclapi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "daemon/admin.h"
#include "daemon/console.h"
#include "os/conin.h"
#include "os/fswatch.h"
#include "os/ipc.h"
#include "os/os.h"
#include "os/signals.h"
#include "os/wait.h"

static int failures;

#define CHECK(name, cond, ...)                                                                    \
  do {                                                                                            \
    if (cond) {                                                                                   \
      printf("ok %s\n", name);                                                                    \
    } else {                                                                                      \
      printf("FAIL %s: ", name);                                                                  \
      printf(__VA_ARGS__);                                                                        \
      printf("\n");                                                                               \
      failures++;                                                                                 \
    }                                                                                             \
    fflush(stdout);                                                                               \
  } while (0)

/* ---- admin ---- */

static char sock_path[512];
static volatile LONG execs;

/* The fake command set: "status" prints a line, "quit" quits, "big" prints
 * 200 KiB (more than the pipe buffer), anything else fails. */
static int fake_exec(void *ctx, const char *line, FILE *out) {
  (void)ctx;
  InterlockedIncrement(&execs);
  if (strcmp(line, "status") == 0) {
    fputs("uptime 1 s, fake backend", out);
    return 0;
  }
  if (strcmp(line, "quit") == 0)
    return CONSOLE_QUIT;
  if (strcmp(line, "big") == 0) {
    for (int i = 0; i < 200 * 1024 / 64; i++)
      fprintf(out, "%063d\n", i);
    return 0;
  }
  fprintf(out, "error: unknown command \"%s\" (type `help`)\n", line);
  return -1;
}

typedef struct req {
  const char *send;
  size_t sendlen;
  int delay_ms; /* before sending */
  char *answer;
  size_t len;
  int rc;
} req;

/* One pierctl-like exchange: connect, send, read to the end. */
static DWORD WINAPI client(void *arg) {
  req *r = arg;
  os_ipc_conn *c;
  size_t cap = 1 << 20;
  int at;

  r->answer = calloc(1, cap + 1);
  r->rc = os_ipc_dial(sock_path, 10000, &c, &at);
  if (r->rc < 0)
    return 0;
  if (r->delay_ms)
    Sleep((DWORD)r->delay_ms);
  if (r->sendlen && (r->rc = os_ipc_send_all(c, r->send, r->sendlen)) < 0) {
    os_ipc_conn_close(c);
    return 0;
  }
  for (;;) {
    long n = os_ipc_recv(c, r->answer + r->len, cap - r->len, 10000);
    if (n <= 0) {
      r->rc = n < 0 && n != -EPIPE ? (int)n : 0;
      break;
    }
    r->len += (size_t)n;
  }
  os_ipc_conn_close(c);
  return 0;
}

/* Serves a until every thread in t has ended or quit is asked; returns the
 * admin_handle_ready result that ended it. */
static int serve(admin *a, HANDLE *t, int nt, int ms) {
  ULONGLONG end = GetTickCount64() + (ULONGLONG)ms;
  while (GetTickCount64() < end) {
    os_wait_item it[OS_WAIT_MAX];
    int n = admin_wait_items(a, it, ADMIN_MAX_WAIT_ITEMS), to = admin_timeout_ms(a);
    if (nt > 0 && WaitForMultipleObjects((DWORD)nt, t, TRUE, 0) == WAIT_OBJECT_0)
      return 0;
    if (os_wait(it, n, to < 0 || to > 50 ? 50 : to) < 0)
      return -1;
    if (admin_handle_ready(a, it, n, fake_exec, NULL) == CONSOLE_QUIT)
      return CONSOLE_QUIT;
  }
  return -ETIMEDOUT;
}

static int run(admin *a, req *r, int ms) {
  HANDLE t = CreateThread(NULL, 0, client, r, 0, NULL);
  int rc = serve(a, &t, 1, ms);
  WaitForSingleObject(t, 15000);
  CloseHandle(t);
  return rc;
}

/* The names README.md and config/README.md promise. */
static void test_names(void) {
  static const struct {
    const char *path, *name;
  } cases[] = {
      {"C:\\pier\\config\\run\\pierd.sock", "\\\\.\\pipe\\pier-c--pier-config-run-pierd.sock"},
      {"C:\\pier\\config/run/pierd.sock", "\\\\.\\pipe\\pier-c--pier-config-run-pierd.sock"},
      {"\\\\.\\pipe\\My-Pier", "\\\\.\\pipe\\My-Pier"},
  };
  char name[300], what[80];
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    int rc = os_ipc_name(cases[i].path, name, sizeof(name));
    snprintf(what, sizeof(what), "pipe name of %s", cases[i].path);
    CHECK(what, rc == 0 && strcmp(name, cases[i].name) == 0, "rc %d, \"%s\"", rc, name);
  }
  {
    char longp[400];
    memset(longp, 'a', sizeof(longp));
    memcpy(longp, "C:\\", 3);
    longp[sizeof(longp) - 1] = '\0';
    CHECK("pipe name too long", os_ipc_name(longp, name, sizeof(name)) == -ENAMETOOLONG, "%s",
          name);
  }
}

static int test_admin(const char *dir) {
  char err[512], name[300], want[600], line[2000];
  admin *a, *b;
  int rc;

  test_names();
  snprintf(sock_path, sizeof(sock_path), "%s\\admin.sock", dir);
  rc = admin_open(sock_path, &a, err, sizeof(err));
  CHECK("admin_open", rc == 0, "rc %d: %s", rc, err);
  if (rc < 0)
    return 1;
  os_ipc_name(sock_path, name, sizeof(name));
  CHECK("pipe name", strncmp(name, "\\\\.\\pipe\\pier-", 14) == 0 && !strchr(name + 9, '\\') &&
                         !strchr(name + 9, ':'),
        "%s", name);

  /* A second server on the same path is refused, with the daemon's text. */
  rc = admin_open(sock_path, &b, err, sizeof(err));
  snprintf(want, sizeof(want), "admin pipe %s is in use by a running pierd", name);
  CHECK("second server refused", rc == -EADDRINUSE && strcmp(err, want) == 0, "rc %d: \"%s\"",
        rc, err);
  if (rc == 0)
    admin_close(b);

  {
    /* The pipe's access list: one entry, for the user running the server.
     * First the server takes the refused second server's probe (a client
     * that left at once) and offers a new instance. */
    serve(a, NULL, 0, 200);
    HANDLE h = CreateFileA(name, GENERIC_READ | GENERIC_WRITE | READ_CONTROL, 0, NULL,
                           OPEN_EXISTING, 0, NULL);
    DWORD open_err = h == INVALID_HANDLE_VALUE ? GetLastError() : 0;
    PACL dacl = NULL;
    PSECURITY_DESCRIPTOR sd = NULL;
    union {
      TOKEN_USER tu;
      char raw[256];
    } u;
    HANDLE tok;
    DWORD got;
    void *ace = NULL;
    int one_owner = 0;
    if (h != INVALID_HANDLE_VALUE &&
        GetSecurityInfo(h, SE_KERNEL_OBJECT, DACL_SECURITY_INFORMATION, NULL, NULL, &dacl, NULL,
                        &sd) == ERROR_SUCCESS &&
        dacl && OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &tok)) {
      if (GetTokenInformation(tok, TokenUser, &u, sizeof(u), &got) && dacl->AceCount == 1 &&
          GetAce(dacl, 0, &ace) && ((ACE_HEADER *)ace)->AceType == ACCESS_ALLOWED_ACE_TYPE)
        one_owner = EqualSid(&((ACCESS_ALLOWED_ACE *)ace)->SidStart, u.tu.User.Sid);
      CloseHandle(tok);
    }
    CHECK("access list: the user only", one_owner, "open error %lu, dacl %p, %d entries",
          open_err, (void *)dacl, dacl ? dacl->AceCount : -1);
    if (sd)
      LocalFree(sd);
    if (h != INVALID_HANDLE_VALUE)
      CloseHandle(h);
    serve(a, NULL, 0, 100); /* let the server see that client leave */
  }
  {
    req r = {.send = "status\n", .sendlen = 7};
    run(a, &r, 5000);
    CHECK("status OK", r.rc == 0 && strcmp(r.answer, "uptime 1 s, fake backend\nOK\n") == 0,
          "rc %d, \"%s\"", r.rc, r.answer);
    free(r.answer);
  }
  {
    req r = {.send = "status\r\n", .sendlen = 8};
    run(a, &r, 5000);
    CHECK("CRLF line", strcmp(r.answer, "uptime 1 s, fake backend\nOK\n") == 0, "\"%s\"",
          r.answer);
    free(r.answer);
  }
  {
    req r = {.send = "frobnicate now\n", .sendlen = 15};
    run(a, &r, 5000);
    CHECK("unknown ERR",
          strcmp(r.answer, "error: unknown command \"frobnicate now\" (type `help`)\nERR\n") == 0,
          "\"%s\"", r.answer);
    free(r.answer);
  }
  {
    req r = {.send = "big\n", .sendlen = 4};
    run(a, &r, 10000);
    CHECK("200 KiB answer", r.len == 200 * 1024 + 3 && strcmp(r.answer + r.len - 3, "OK\n") == 0,
          "%zu bytes", r.len);
    free(r.answer);
  }
  {
    LONG before = execs;
    memset(line, 'x', sizeof(line));
    req r = {.send = line, .sendlen = 1500};
    run(a, &r, 5000);
    CHECK("line cap",
          strcmp(r.answer,
                 "error: command line too long (at most 1024 bytes with its newline)\nERR\n") ==
                  0 &&
              execs == before,
          "\"%s\"", r.answer);
    free(r.answer);
  }
  {
    req r = {.send = "sta\0tus\n", .sendlen = 8};
    run(a, &r, 5000);
    CHECK("NUL byte", strcmp(r.answer, "error: the command line contains a NUL byte\nERR\n") == 0,
          "\"%s\"", r.answer);
    free(r.answer);
  }
  {
    req r = {.send = "stat", .sendlen = 4, .delay_ms = 0};
    ULONGLONG t0 = GetTickCount64();
    run(a, &r, 8000);
    CHECK("read timeout",
          strcmp(r.answer, "error: no complete command line within 2 s\nERR\n") == 0 &&
              GetTickCount64() - t0 >= 1900,
          "after %llu ms: \"%s\"", (unsigned long long)(GetTickCount64() - t0), r.answer);
    free(r.answer);
  }
  {
    /* More clients at once than ADMIN_MAX_CLIENTS: the rest wait for a free
     * instance (WaitNamedPipeW) and are all served. */
    enum { N = ADMIN_MAX_CLIENTS + 8 };
    req r[N];
    HANDLE t[N];
    int good = 0;
    memset(r, 0, sizeof(r));
    for (int i = 0; i < N; i++) {
      r[i].send = "status\n";
      r[i].sendlen = 7;
      r[i].delay_ms = 300; /* hold the slots a while */
      t[i] = CreateThread(NULL, 0, client, &r[i], 0, NULL);
    }
    serve(a, t, N, 20000);
    for (int i = 0; i < N; i++) {
      WaitForSingleObject(t[i], 15000);
      CloseHandle(t[i]);
      good += r[i].answer && strcmp(r[i].answer, "uptime 1 s, fake backend\nOK\n") == 0;
      free(r[i].answer);
    }
    CHECK("24 clients at once", good == N, "%d of %d answered", good, N);
  }
  {
    /* quit: handle_ready says so, and the client gets OK once the channel
     * closes. */
    req r = {.send = "quit\n", .sendlen = 5};
    HANDLE t = CreateThread(NULL, 0, client, &r, 0, NULL);
    rc = serve(a, &t, 1, 5000);
    admin_close(a);
    WaitForSingleObject(t, 15000);
    CloseHandle(t);
    CHECK("quit", rc == CONSOLE_QUIT && strcmp(r.answer, "OK\n") == 0, "rc %d, \"%s\"", rc,
          r.answer);
    free(r.answer);
  }
  {
    /* Closed: a client finds nothing; the name is free for a new server. */
    os_ipc_conn *c;
    int at;
    rc = os_ipc_dial(sock_path, 1000, &c, &at);
    CHECK("closed: nobody answers", rc == -ENOENT && at == OS_IPC_AT_CONNECT, "rc %d at %d", rc,
          at);
    rc = admin_open(sock_path, &b, err, sizeof(err));
    CHECK("reopen after close", rc == 0, "rc %d: %s", rc, err);
    if (rc == 0)
      admin_close(b);
    /* A pipe name given as such is used as it is. */
    rc = admin_open("\\\\.\\pipe\\pier-test-given-name", &b, err, sizeof(err));
    CHECK("pipe name as given", rc == 0, "rc %d: %s", rc, err);
    if (rc == 0) {
      rc = os_ipc_dial("\\\\.\\pipe\\pier-test-given-name", 1000, &c, &at);
      CHECK("dial the given name", rc == 0, "rc %d", rc);
      if (rc == 0)
        os_ipc_conn_close(c);
      admin_close(b);
    }
  }
  return failures != 0;
}

/* ---- stdin ---- */

static int test_conin(void) {
  os_conin *in;
  char buf[OS_CONIN_CHUNK], line[4096];
  size_t len = 0;
  int rc = os_conin_open(&in);

  if (rc < 0) {
    printf("no stdin: %d\n", rc);
    return 0;
  }
  for (;;) {
    os_wait_item it;
    long n;
    os_conin_item(in, &it);
    if (os_wait(&it, 1, 10000) <= 0) {
      printf("FAIL conin: no input within 10 s\n");
      return 1;
    }
    n = os_conin_read(in, buf, sizeof(buf));
    if (n == -EAGAIN)
      continue;
    if (n == 0)
      break;
    for (long i = 0; i < n; i++) {
      if (buf[i] == '\n') {
        if (len && line[len - 1] == '\r')
          len--;
        printf("line: %.*s\n", (int)len, line);
        len = 0;
      } else if (len < sizeof(line)) {
        line[len++] = buf[i];
      }
    }
    fflush(stdout);
  }
  printf("eof\n");
  os_conin_close(in);
  return 0;
}

/* ---- console control events ---- */

static int test_ctrl(void) {
  static const DWORD ev[] = {CTRL_C_EVENT, CTRL_BREAK_EVENT};
  static const char *const names[] = {"Ctrl+C", "Ctrl+Break"};
  int rc = os_signals_open();

  CHECK("signals_open", rc == 0, "rc %d", rc);
  /* Started without a console (from a pipe, as under a test runner): make
   * one, so that console control events can be raised at all. */
  if (!GetConsoleWindow() && !AttachConsole(ATTACH_PARENT_PROCESS) && !AllocConsole())
    printf("no console: %lu\n", GetLastError());
  SetConsoleCtrlHandler(NULL, FALSE); /* Ctrl+C enabled for this process */
  for (int i = 0; i < 2; i++) {
    os_wait_item it;
    const char *name = "";
    int sig = OS_SIG_NONE, w;
    char what[40];
    snprintf(what, sizeof(what), "%s quits", names[i]);
    if (!GenerateConsoleCtrlEvent(ev[i], 0)) {
      printf("skip %s: GenerateConsoleCtrlEvent: %lu (no console)\n", names[i], GetLastError());
      continue;
    }
    os_signals_item(&it);
    w = os_wait(&it, 1, 5000);
    if (w > 0)
      sig = os_signals_take(&name);
    CHECK(what, w == 1 && sig == OS_SIG_QUIT && strcmp(name, names[i]) == 0,
          "wait %d, sig %d, name \"%s\"", w, sig, name);
    os_signals_item(&it);
    w = os_wait(&it, 1, 0);
    CHECK("taken once", w == 0, "wait %d after take", w);
  }
  os_signals_close();
  return failures != 0;
}

/* ---- file watch ---- */

static int changed_count[2];

static void on_changed(void *ctx, int id) {
  (void)ctx;
  if (id >= 0 && id < 2)
    changed_count[id]++;
}

/* Waits up to ms for reports; returns how many items were ready. */
static int pump(os_fswatch *w, int ms) {
  ULONGLONG end = GetTickCount64() + (ULONGLONG)ms;
  int got = 0;
  while (GetTickCount64() < end) {
    os_wait_item it[OS_FSWATCH_MAX_DIRS];
    int n = os_fswatch_items(w, it, OS_FSWATCH_MAX_DIRS);
    if (os_wait(it, n, 100) > 0) {
      os_fswatch_read(w, on_changed, NULL);
      got++;
    }
  }
  return got;
}

static int write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  if (!f)
    return -1;
  fputs(text, f);
  return fclose(f);
}

static int test_watch(const char *dir) {
  char plug[600], other[600], tmp[600], wdir[600];
  os_fswatch *w;
  int rc;

  snprintf(plug, sizeof(plug), "%s\\plug.dll", dir);
  snprintf(other, sizeof(other), "%s\\other.dll", dir);
  snprintf(tmp, sizeof(tmp), "%s\\plug.dll.tmp", dir);
  write_file(plug, "v1");
  rc = os_fswatch_open(&w);
  CHECK("fswatch_open", rc == 0, "rc %d", rc);
  rc = os_fswatch_add(w, plug, 0, wdir, sizeof(wdir));
  CHECK("fswatch_add", rc == 0 && strcmp(wdir, dir) == 0, "rc %d, dir \"%s\"", rc, wdir);
  rc = os_fswatch_add(w, "C:\\no\\such\\dir\\x.dll", 1, wdir, sizeof(wdir));
  CHECK("missing directory", rc == -ENOENT && strcmp(wdir, "C:\\no\\such\\dir") == 0,
        "rc %d, dir \"%s\"", rc, wdir);

  pump(w, 300);
  changed_count[0] = 0;
  write_file(other, "x");
  pump(w, 500);
  CHECK("another file: no report", changed_count[0] == 0, "%d reports", changed_count[0]);

  write_file(tmp, "v2");
  pump(w, 300);
  changed_count[0] = 0;
  rc = MoveFileExA(tmp, plug, MOVEFILE_REPLACE_EXISTING) ? 0 : -1;
  pump(w, 500);
  CHECK("rename into place reported", rc == 0 && changed_count[0] >= 1, "rc %d, %d reports", rc,
        changed_count[0]);

  changed_count[0] = 0;
  write_file(plug, "v3, rewritten in place");
  pump(w, 500);
  CHECK("rewrite reported", changed_count[0] >= 1, "%d reports", changed_count[0]);

  /* Upper case in the event's name still matches (Windows names ignore
   * case). */
  changed_count[0] = 0;
  snprintf(tmp, sizeof(tmp), "%s\\PLUG.DLL", dir);
  write_file(tmp, "v4");
  pump(w, 500);
  CHECK("name without case", changed_count[0] >= 1, "%d reports", changed_count[0]);
  os_fswatch_close(w);
  return failures != 0;
}

int main(int argc, char **argv) {
  log_set_level(LOG_ERROR);
  if (argc == 3 && strcmp(argv[1], "admin") == 0)
    return test_admin(argv[2]);
  if (argc == 2 && strcmp(argv[1], "conin") == 0)
    return test_conin();
  if (argc == 2 && strcmp(argv[1], "ctrl") == 0)
    return test_ctrl();
  if (argc == 3 && strcmp(argv[1], "watch") == 0)
    return test_watch(argv[2]);
  fprintf(stderr, "usage: test_daemon_os admin DIR | conin | ctrl | watch DIR\n");
  return 2;
}
