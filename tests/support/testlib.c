/* Test helpers: blocking client sockets with timeouts, a polling wait, temp
 * files and directories. The calls that differ between Linux and Windows sit
 * in the two platform sections below, behind the functions testlib.h
 * declares; everything after them is shared. */
#include "testlib.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _WIN32

#include <direct.h>
#include <fcntl.h>
#include <io.h>
#include <psapi.h>
#include <sys/stat.h>

const char *test_backend(int i) {
  (void)i;
  return "iocp";
}

/* A blocking socket (socket(), unlike os_sock_stream, makes one) whose
 * SO_RCVTIMEO and SO_SNDTIMEO are a DWORD of milliseconds. */
static int sock_blocking(int family) {
  DWORD ms = 10000;
  SOCKET s;
  int rc = os_net_init();

  if (rc < 0)
    return rc;
  s = socket(family, SOCK_STREAM, IPPROTO_TCP);
  if (s == INVALID_SOCKET)
    return -os_sock_errno();
  SetHandleInformation((HANDLE)s, HANDLE_FLAG_INHERIT, 0);
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, (const char *)&ms, sizeof(ms));
  setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, (const char *)&ms, sizeof(ms));
  return (int)s;
}

long test_sock_send(int fd, const void *data, size_t len) {
  int n = send((SOCKET)fd, data, len > INT_MAX ? INT_MAX : (int)len, 0);
  return n < 0 ? -os_sock_errno() : n;
}

long test_sock_recv(int fd, void *buf, size_t len) {
  int n = recv((SOCKET)fd, buf, len > INT_MAX ? INT_MAX : (int)len, 0);
  return n < 0 ? -os_sock_errno() : n;
}

int test_sock_nonblock(int fd) {
  u_long on = 1;
  return ioctlsocket((SOCKET)fd, FIONBIO, &on) != 0 ? -os_sock_errno() : 0;
}

int test_poll(struct pollfd *fds, unsigned n, int timeout_ms) {
  int rc = WSAPoll(fds, n, timeout_ms);
  return rc < 0 ? -os_sock_errno() : rc;
}

long test_rss_kib(void) {
  PROCESS_MEMORY_COUNTERS pmc;
  if (!GetProcessMemoryInfo(GetCurrentProcess(), &pmc, sizeof(pmc)))
    return -1;
  return (long)(pmc.WorkingSetSize / 1024);
}

void test_raise_fd_limit(void) {}

const char *test_tmpdir(void) {
  static char dir[MAX_PATH + 1];
  if (!dir[0]) {
    DWORD n = GetTempPathA(sizeof(dir), dir);
    if (n == 0 || n >= sizeof(dir))
      snprintf(dir, sizeof(dir), "C:/Windows/Temp");
    for (char *p = dir; *p; p++)
      if (*p == '\\')
        *p = '/';
    for (size_t len = strlen(dir); len > 3 && dir[len - 1] == '/'; len--)
      dir[len - 1] = '\0';
  }
  return dir;
}

int test_mkdir(const char *path) { return _mkdir(path) != 0 ? -errno : 0; }

/* _mktemp's names are only 26 per template and pattern; the clock, process
 * id and a counter give as many as needed. */
static void temp_name(char *out, size_t len, const char *prefix) {
  static unsigned counter;
  unsigned x = (unsigned)os_clock_ms() * 2654435761u ^ GetCurrentProcessId() * 40503u ^
               ++counter * 977u;
  snprintf(out, len, "%s/%s%06x", test_tmpdir(), prefix, x & 0xffffffu);
}

void test_mkdtemp(char *out, size_t len, const char *prefix) {
  for (int tries = 0; tries < 100; tries++) {
    temp_name(out, len, prefix);
    if (_mkdir(out) == 0)
      return;
    ck_assert_msg(errno == EEXIST, "mkdir %s: %s", out, os_strerror(errno));
  }
  ck_abort_msg("no free name for a temp directory %s/%sXXXXXX", test_tmpdir(), prefix);
}

static void temp_file(char *out, size_t len, const char *prefix) {
  for (int tries = 0; tries < 100; tries++) {
    int fd;
    temp_name(out, len, prefix);
    fd = _open(out, _O_CREAT | _O_EXCL | _O_RDWR | _O_BINARY, _S_IREAD | _S_IWRITE);
    if (fd >= 0) {
      _close(fd);
      return;
    }
    ck_assert_msg(errno == EEXIST, "create %s: %s", out, os_strerror(errno));
  }
  ck_abort_msg("no free name for a temp file %s/%sXXXXXX", test_tmpdir(), prefix);
}

int test_rm_rf(const char *path) {
  char pattern[MAX_PATH + 4], child[MAX_PATH + 1];
  WIN32_FIND_DATAA fd;
  HANDLE h;
  DWORD attrs = GetFileAttributesA(path);

  if (attrs == INVALID_FILE_ATTRIBUTES)
    return -os_win_errno(GetLastError());
  /* A link or junction to a directory is removed, not followed. */
  if ((attrs & FILE_ATTRIBUTE_DIRECTORY) && !(attrs & FILE_ATTRIBUTE_REPARSE_POINT)) {
    snprintf(pattern, sizeof(pattern), "%s/*", path);
    h = FindFirstFileA(pattern, &fd);
    if (h != INVALID_HANDLE_VALUE) {
      do {
        if (strcmp(fd.cFileName, ".") == 0 || strcmp(fd.cFileName, "..") == 0)
          continue;
        snprintf(child, sizeof(child), "%s/%s", path, fd.cFileName);
        test_rm_rf(child);
      } while (FindNextFileA(h, &fd));
      FindClose(h);
    }
  }
  if (attrs & FILE_ATTRIBUTE_DIRECTORY)
    return RemoveDirectoryA(path) ? 0 : -os_win_errno(GetLastError());
  return DeleteFileA(path) ? 0 : -os_win_errno(GetLastError());
}

static void platform_run_setup(void) {}

/* Wine's ntdll exports wine_get_version; Windows' does not. */
int test_under_wine(void) {
  HMODULE ntdll = GetModuleHandleA("ntdll.dll");
  return ntdll && GetProcAddress(ntdll, "wine_get_version") != NULL;
}

#else /* POSIX */

#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

const char *test_backend(int i) { return i == 0 ? "io_uring" : "epoll"; }

static int sock_blocking(int family) {
  struct timeval tv = {.tv_sec = 10, .tv_usec = 0};
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  return fd;
}

long test_sock_send(int fd, const void *data, size_t len) {
  ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
  return n < 0 ? -errno : (long)n;
}

long test_sock_recv(int fd, void *buf, size_t len) {
  ssize_t n = recv(fd, buf, len, 0);
  return n < 0 ? -errno : (long)n;
}

int test_sock_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  return fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ? -errno : 0;
}

int test_poll(struct pollfd *fds, unsigned n, int timeout_ms) {
  int rc = poll(fds, n, timeout_ms);
  return rc < 0 ? -errno : rc;
}

long test_rss_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kib = -1;
  while (f && fgets(line, sizeof(line), f))
    if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
      break;
  if (f)
    fclose(f);
  return kib;
}

void test_raise_fd_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

const char *test_tmpdir(void) { return "/tmp"; }

int test_mkdir(const char *path) { return mkdir(path, 0700) < 0 ? -errno : 0; }

void test_mkdtemp(char *out, size_t len, const char *prefix) {
  int n = snprintf(out, len, "%s/%sXXXXXX", test_tmpdir(), prefix);
  ck_assert_msg(n > 0 && (size_t)n < len, "temp directory name too long");
  ck_assert_msg(mkdtemp(out) != NULL, "mkdtemp %s: %s", out, strerror(errno));
}

static void temp_file(char *out, size_t len, const char *prefix) {
  int n = snprintf(out, len, "%s/%sXXXXXX", test_tmpdir(), prefix), fd;
  ck_assert_msg(n > 0 && (size_t)n < len, "temp file name too long");
  fd = mkstemp(out);
  ck_assert_msg(fd >= 0, "mkstemp %s: %s", out, strerror(errno));
  close(fd);
}

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw) {
  (void)st;
  (void)ftw;
  return (type == FTW_DP ? rmdir(path) : unlink(path)) < 0 ? -1 : 0;
}

/* Depth first, not following links (FTW_PHYS): a link to a directory goes,
 * what it points at stays. */
int test_rm_rf(const char *path) {
  return nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0 ? -errno : 0;
}

/* A send to a peer that reset would otherwise kill the test process. */
static void platform_run_setup(void) { signal(SIGPIPE, SIG_IGN); }

int test_under_wine(void) { return 0; }

#endif

void test_copy_file(const char *from, const char *to) {
  char tmp[1024], buf[65536];
  size_t n;
  FILE *in, *out;
  ck_assert_int_lt(snprintf(tmp, sizeof(tmp), "%s.new", to), (int)sizeof(tmp));
  in = fopen(from, "rb");
  out = fopen(tmp, "wb");
  ck_assert_msg(in != NULL, "cannot open %s", from);
  ck_assert_msg(out != NULL, "cannot create %s", tmp);
  while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
    ck_assert_uint_eq(fwrite(buf, 1, n, out), n);
  fclose(in);
  ck_assert_int_eq(fclose(out), 0);
#ifdef _WIN32
  (void)remove(to); /* rename does not replace a file there */
#endif
  ck_assert_int_eq(rename(tmp, to), 0);
}

/* ---- shared ---- */

static int connect_sa(const struct sockaddr *sa, socklen_t len, int rcvbuf) {
  int fd = sock_blocking(sa->sa_family), e;
  ck_assert_msg(fd >= 0, "socket: %s", os_strerror(-fd));
  if (rcvbuf > 0)
    ck_assert_int_eq(test_sock_rcvbuf(fd, rcvbuf), 0);
  os_sock_nodelay(fd);
  e = connect(fd, sa, len) == 0 ? 0 : os_sock_errno();
  ck_assert_msg(e == 0, "connect: %s", os_strerror(e));
  return fd;
}

static void loopback4(struct sockaddr_in *in, uint16_t port) {
  memset(in, 0, sizeof(*in));
  in->sin_family = AF_INET;
  in->sin_port = htons(port);
  in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
}

int test_connect(uint16_t port) {
  struct sockaddr_in in;
  loopback4(&in, port);
  return connect_sa((struct sockaddr *)&in, sizeof(in), 0);
}

int test_connect6(uint16_t port) {
  struct sockaddr_in6 in6;
  memset(&in6, 0, sizeof(in6));
  in6.sin6_family = AF_INET6;
  in6.sin6_port = htons(port);
  in6.sin6_addr = in6addr_loopback;
  return connect_sa((struct sockaddr *)&in6, sizeof(in6), 0);
}

int test_connect_rcvbuf(uint16_t port, int rcvbuf) {
  struct sockaddr_in in;
  loopback4(&in, port);
  return connect_sa((struct sockaddr *)&in, sizeof(in), rcvbuf);
}

int test_sock_rcvbuf(int fd, int bytes) {
  return setsockopt(fd, SOL_SOCKET, SO_RCVBUF, (const void *)&bytes, sizeof(bytes)) != 0
             ? -os_sock_errno()
             : 0;
}

int test_sock_sndbuf(int fd, int bytes) {
  return setsockopt(fd, SOL_SOCKET, SO_SNDBUF, (const void *)&bytes, sizeof(bytes)) != 0
             ? -os_sock_errno()
             : 0;
}

uint16_t test_unused_port(void) {
  struct sockaddr_in in;
  socklen_t len = sizeof(in);
  int fd = sock_blocking(AF_INET);

  ck_assert_msg(fd >= 0, "socket: %s", os_strerror(-fd));
  loopback4(&in, 0);
  ck_assert_msg(bind(fd, (struct sockaddr *)&in, sizeof(in)) == 0, "bind: %s",
                os_strerror(os_sock_errno()));
  ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&in, &len), 0);
  os_sock_close(fd);
  return ntohs(in.sin_port);
}

void test_send_all(int fd, const void *data, size_t len) {
  const char *p = data;
  while (len > 0) {
    long n = test_sock_send(fd, p, len);
    ck_assert_msg(n > 0, "send: %s", n < 0 ? os_strerror((int)-n) : "nothing sent");
    p += n;
    len -= (size_t)n;
  }
}

int test_recv_exact(int fd, void *buf, size_t len) {
  char *p = buf;
  while (len > 0) {
    long n = test_sock_recv(fd, p, len);
    if (n <= 0)
      return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

int test_recv_until_close(int fd, size_t *got) {
  char buf[65536];
  size_t total = 0;
  long n;

  while ((n = test_sock_recv(fd, buf, sizeof(buf))) > 0)
    total += (size_t)n;
  if (got)
    *got = total;
  return n < 0 ? (int)n : 0;
}

int test_is_reset(int rc) { return rc == -ECONNRESET || (rc == 0 && test_under_wine()); }

int test_wait(int (*cond)(void *arg), void *arg, int timeout_ms) {
  uint64_t end = os_clock_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
  while (os_clock_ms() < end) {
    if (cond(arg))
      return 1;
    os_sleep_ms(1);
  }
  return cond(arg);
}

int test_run(Suite *s) {
  SRunner *sr = srunner_create(s);
  int failed;
  platform_run_setup();
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? 0 : 1;
}

void test_rec_init(test_rec *r) {
  temp_file(r->path, sizeof(r->path), "pier-rec-");
  r->text = NULL;
}

const char *test_rec_read(test_rec *r) {
  FILE *f = fopen(r->path, "rb");
  long n;
  ck_assert_msg(f != NULL, "%s: %s", r->path, os_strerror(errno));
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fseek(f, 0, SEEK_SET);
  free(r->text);
  r->text = calloc(1, (size_t)n + 1);
  ck_assert_ptr_nonnull(r->text);
  if (fread(r->text, 1, (size_t)n, f) != (size_t)n)
    ck_abort_msg("short read of %s", r->path);
  fclose(f);
  return r->text;
}

int test_count(const char *text, const char *needle) {
  int n = 0;
  for (const char *p = text; (p = strstr(p, needle)); p++)
    n++;
  return n;
}

int test_rec_wait(test_rec *r, const char *needle, int count, int timeout_ms) {
  for (int waited = 0;; waited += 10) {
    if (test_count(test_rec_read(r), needle) >= count)
      return 1;
    if (waited >= timeout_ms)
      return 0;
    os_sleep_ms(10);
  }
}

void test_rec_free(test_rec *r) {
  remove(r->path);
  free(r->text);
}
