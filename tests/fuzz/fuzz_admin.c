/* Fuzz target for the command parser behind the console and the admin socket
 * (core/daemon/console.c, core/daemon/admin.c), against a real running host:
 * one echo plugin and one listener on a free loopback port, started once per
 * process, so status, sessions, plugins, kick and reload run for real.
 *
 * The input is a byte stream fed twice, cut into reads at points drawn from
 * a hash of the input:
 *
 * 1. Through a pipe to console_read, as stdin is. Checked against a model of
 *    its line splitting: `quit` ends the run with CONSOLE_QUIT and nothing
 *    after it runs, every line of 1023 bytes or more answers exactly one
 *    "error: line too long", and the end of input gives CONSOLE_EOF.
 * 2. Through a unix socket to a fresh admin_open, as pierctl sends it, with
 *    console_exec as the command. Checked against the admin contract: the
 *    command is the input up to the first newline (within 1024 bytes, one
 *    trailing CR removed), run at most once, and the answer ends with "OK"
 *    or "ERR" as the command returned; a NUL in the line, no newline in 1024
 *    bytes or no newline before the end give one "error: ..." line and "ERR"
 *    without running anything; an empty connection gets no answer; `quit`
 *    makes admin_handle_ready return CONSOLE_QUIT. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "daemon/admin.h"
#include "daemon/console.h"
#include "fuzz.h"
#include "host/config.h"
#include "host/host.h"

#ifndef PIER_BINARY_DIR
#define PIER_BINARY_DIR "."
#endif

#define CONSOLE_LINE_MAX 1022 /* longest line console_read runs */
#define ADMIN_INPUT_MAX 16384 /* below admin.c's drain limit */

static struct {
  int ready;
  cfg_server *cfg;
  host *h;
  char dir[96];
  char sock[128];
} g;

static void teardown(void) {
  if (g.h) {
    host_stop(g.h);
    host_destroy(g.h);
  }
  cfg_free(g.cfg);
  unlink(g.sock);
  rmdir(g.dir);
  memset(&g, 0, sizeof(g));
}

static void setup(void) {
  const char *so = getenv("PIER_FUZZ_ECHO_SO"), *tmp;
  char text[4096], err[1024];
  int rc;

  if (g.ready)
    return;
  if (!so || !*so)
    so = PIER_BINARY_DIR "/plugins/echo.so";
  log_set_level(LOG_ERROR);
  signal(SIGPIPE, SIG_IGN);
  snprintf(text, sizeof(text),
           "{\"workers\": 1, \"io_backend\": \"epoll\", \"log_level\": \"error\","
           " \"plugins\": [{\"name\": \"echo\", \"path\": \"%s\"}],"
           " \"listeners\": [{\"port\": 0, \"plugin\": \"echo\"},"
           " {\"port\": 0, \"plugin\": \"echo\", \"framing\": \"u16_size_id\"}]}",
           so);
  rc = cfg_load_text(text, strlen(text), "fuzz_admin.json", NULL, &g.cfg, err, sizeof(err));
  FUZZ_CHECK(rc == 0, "setup: %s", err);
  rc = host_create(g.cfg, NULL, 0, &g.h);
  FUZZ_CHECK(rc == 0, "setup: host_create: %s (is %s built?)", strerror(-rc), so);
  rc = host_start(g.h);
  FUZZ_CHECK(rc == 0, "setup: host_start: %s", strerror(-rc));
  tmp = getenv("TMPDIR");
  if (!tmp || strlen(tmp) > 60) /* the socket path must fit sun_path */
    tmp = "/tmp";
  snprintf(g.dir, sizeof(g.dir), "%s/pier-fuzz-admin-XXXXXX", *tmp ? tmp : "/tmp");
  FUZZ_CHECK(mkdtemp(g.dir) != NULL, "setup: mkdtemp: %s", strerror(errno));
  snprintf(g.sock, sizeof(g.sock), "%s/admin.sock", g.dir);
  atexit(teardown);
  g.ready = 1;
}

/* Read sizes: mostly small, sometimes whole lines or more at once. */
static size_t piece(uint64_t *rng, size_t left) {
  static const size_t caps[] = {1, 3, 16, 100, 1024, 4096};
  uint32_t r = fuzz_rand(rng);
  size_t n = 1 + (size_t)(r >> 8) % caps[r % (sizeof(caps) / sizeof(caps[0]))];
  return n < left ? n : left;
}

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- console ---- */

static int is_blank(char ch) {
  return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\v' || ch == '\f' || ch == '\r';
}

/* Whether console_exec takes the line (up to its first NUL) as `quit`. */
static int is_quit(const char *line, size_t len) {
  const char *end = memchr(line, '\0', len);
  size_t n = end ? (size_t)(end - line) : len, i = 0, start;
  while (i < n && is_blank(line[i]))
    i++;
  start = i;
  while (i < n && !is_blank(line[i]))
    i++;
  if (i - start != 4 || memcmp(line + start, "quit", 4) != 0)
    return 0;
  while (i < n && is_blank(line[i]))
    i++;
  return i == n;
}

/* Lines console_read should reject as too long before a `quit`, and whether
 * one comes. */
static void console_model(const uint8_t *data, size_t size, size_t *too_long, int *quit) {
  size_t start = 0;
  *too_long = 0;
  *quit = 0;
  for (;;) {
    const uint8_t *nl = memchr(data + start, '\n', size - start);
    if (!nl)
      return; /* an unterminated last line is never run */
    size_t len = (size_t)(nl - data) - start;
    if (len > CONSOLE_LINE_MAX) {
      (*too_long)++;
    } else {
      if (len > 0 && data[start + len - 1] == '\r')
        len--;
      if (is_quit((const char *)data + start, len)) {
        *quit = 1;
        return;
      }
    }
    start += (size_t)(nl - data) - start + 1;
  }
}

static size_t count_lines(const char *out, size_t len, const char *line) {
  size_t n = 0, ll = strlen(line);
  for (size_t i = 0; i + ll < len + 1; i++)
    if ((i == 0 || out[i - 1] == '\n') && strncmp(out + i, line, ll) == 0 &&
        (i + ll == len || out[i + ll] == '\n'))
      n++;
  return n;
}

static void run_console(const uint8_t *data, size_t size) {
  uint64_t rng = fuzz_hash(data, size);
  size_t off = 0, too_long, outlen = 0;
  char *out = NULL;
  int p[2], rc = CONSOLE_OK, quit;
  console con;
  FILE *o;

  console_model(data, size, &too_long, &quit);
  FUZZ_CHECK(pipe2(p, O_NONBLOCK | O_CLOEXEC) == 0, "pipe2: %s", strerror(errno));
  o = open_memstream(&out, &outlen);
  FUZZ_CHECK(o != NULL, "open_memstream: %s", strerror(errno));
  console_init(&con, g.h, "fuzz");

  while (off < size && rc != CONSOLE_QUIT) {
    size_t n = piece(&rng, size - off);
    FUZZ_CHECK(write(p[1], data + off, n) == (ssize_t)n, "pipe write: %s", strerror(errno));
    off += n;
    for (;;) {
      int avail = 0;
      FUZZ_CHECK(ioctl(p[0], FIONREAD, &avail) == 0, "FIONREAD: %s", strerror(errno));
      if (avail == 0)
        break;
      rc = console_read(&con, p[0], o);
      FUZZ_CHECK(rc == CONSOLE_OK || rc == CONSOLE_QUIT, "console_read returned %d", rc);
      FUZZ_CHECK(con.len < sizeof(con.buf) - 1, "console holds %zu bytes", con.len);
      if (rc == CONSOLE_QUIT)
        break;
    }
  }
  close(p[1]);
  if (rc != CONSOLE_QUIT) {
    rc = console_read(&con, p[0], o);
    FUZZ_CHECK(rc == CONSOLE_EOF, "console_read at the end of input returned %d", rc);
  }
  close(p[0]);
  FUZZ_CHECK(fclose(o) == 0, "memstream: %s", strerror(errno));
  FUZZ_CHECK((rc == CONSOLE_QUIT) == quit, "quit: got %d, expected %d", rc == CONSOLE_QUIT,
             quit);
  size_t got = count_lines(out, outlen, "error: line too long");
  FUZZ_CHECK(got == too_long, "%zu \"line too long\" answers, expected %zu", got, too_long);
  free(out);
}

/* ---- admin socket ---- */

typedef struct exec_rec {
  console con;
  int calls, rc;
  char *line;
} exec_rec;

static int exec_line(void *ctx, const char *line, FILE *out) {
  exec_rec *r = ctx;
  r->calls++;
  free(r->line);
  r->line = strdup(line);
  FUZZ_CHECK(r->line != NULL, "out of memory");
  r->rc = console_exec(&r->con, line, out);
  return r->rc;
}

static int pump(admin *a, exec_rec *r, int timeout_ms) {
  os_wait_item fds[ADMIN_MAX_WAIT_ITEMS];
  int n = admin_wait_items(a, fds, ADMIN_MAX_WAIT_ITEMS);
  FUZZ_CHECK(n > 0 && n <= ADMIN_MAX_WAIT_ITEMS, "admin_wait_items returned %d", n);
  if (poll(fds, (nfds_t)n, timeout_ms) < 0)
    FUZZ_CHECK(errno == EINTR, "poll: %s", strerror(errno));
  return admin_handle_ready(a, fds, n, exec_line, r);
}

static int ends_with(const char *s, size_t len, const char *tail) {
  size_t tl = strlen(tail);
  return len >= tl && memcmp(s + len - tl, tail, tl) == 0;
}

/* An answer of exactly one "error: ..." line and "ERR". */
static int is_error_answer(const char *ans, size_t len) {
  const char *nl = memchr(ans, '\n', len);
  return len > 7 && memcmp(ans, "error: ", 7) == 0 && nl && (size_t)(nl - ans) + 5 == len &&
         memcmp(nl, "\nERR\n", 5) == 0;
}

static void run_admin(const uint8_t *data, size_t size) {
  uint64_t rng = fuzz_hash(data, size) ^ 0x5bd1e995u, deadline, started;
  struct sockaddr_un sa;
  char err[512], *ans = NULL;
  size_t off = 0, anslen = 0, anscap = 0;
  int fd, quit = 0, sending = 1, eof = 0, slow;
  exec_rec r;
  admin *a;

  if (size > ADMIN_INPUT_MAX)
    size = ADMIN_INPUT_MAX;
  memset(&r, 0, sizeof(r));
  console_init(&r.con, g.h, "fuzz");
  FUZZ_CHECK(admin_open(g.sock, &a, err, sizeof(err)) == 0, "admin_open: %s", err);
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  FUZZ_CHECK(fd >= 0, "socket: %s", strerror(errno));
  memset(&sa, 0, sizeof(sa));
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, g.sock, strlen(g.sock) + 1);
  FUZZ_CHECK(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect: %s",
             strerror(errno));
  started = now_ms();

  /* Send in pieces, letting the admin side run between them. */
  while (sending && off < size && !quit) {
    size_t n = piece(&rng, size - off);
    ssize_t k = send(fd, data + off, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k > 0)
      off += (size_t)k;
    else if (k < 0 && (errno == EPIPE || errno == ECONNRESET))
      sending = 0; /* answered and closed before the rest */
    else
      FUZZ_CHECK(k < 0 && (errno == EAGAIN || errno == EINTR), "send: %s", strerror(errno));
    quit = pump(a, &r, 0) == CONSOLE_QUIT;
  }
  shutdown(fd, SHUT_WR);
  /* A stall of the whole process near the admin read deadline (a loaded
   * machine) may change the answer legitimately: then it is not checked. */
  slow = now_ms() - started >= ADMIN_READ_TIMEOUT_MS / 2;

  /* Collect the answer until the connection ends. */
  deadline = now_ms() + 10000;
  while (!eof) {
    char buf[4096];
    ssize_t k;
    if (quit && a) {
      admin_close(a); /* as pierd does on quit: the held client sees the end */
      a = NULL;
    }
    while ((k = recv(fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0) {
      if (anslen + (size_t)k + 1 > anscap) {
        anscap = (anslen + (size_t)k + 1) * 2;
        ans = realloc(ans, anscap);
        FUZZ_CHECK(ans != NULL, "out of memory");
      }
      memcpy(ans + anslen, buf, (size_t)k);
      anslen += (size_t)k;
    }
    if (k == 0) {
      eof = 1;
      break;
    }
    FUZZ_CHECK(errno == EAGAIN || errno == EINTR, "recv: %s", strerror(errno));
    if (a)
      quit = pump(a, &r, 20) == CONSOLE_QUIT || quit;
    FUZZ_CHECK(now_ms() < deadline, "no end of the answer within 10 s (%zu bytes so far)",
               anslen);
  }
  close(fd);
  if (a)
    admin_close(a);
  if (ans)
    ans[anslen] = '\0';

  if (slow) {
    free(ans);
    free(r.line);
    return;
  }

  /* What the admin contract says should have happened. */
  size_t scan = size < ADMIN_MAX_LINE ? size : ADMIN_MAX_LINE;
  const uint8_t *nl = memchr(data, '\n', scan);
  if (nl) {
    size_t len = (size_t)(nl - data);
    if (len > 0 && data[len - 1] == '\r')
      len--;
    if (memchr(data, '\0', len)) {
      FUZZ_CHECK(r.calls == 0, "a line with a NUL byte ran");
      FUZZ_CHECK(is_error_answer(ans, anslen), "answer to a line with a NUL byte: \"%s\"",
                 ans ? ans : "");
    } else {
      FUZZ_CHECK(r.calls == 1, "the line ran %d times", r.calls);
      FUZZ_CHECK(strlen(r.line) == len && memcmp(r.line, data, len) == 0,
                 "ran \"%s\", expected the first %zu bytes of the input", r.line, len);
      const char *tail = r.rc < 0 ? "ERR\n" : "OK\n";
      FUZZ_CHECK(ends_with(ans, anslen, tail) &&
                     (anslen == strlen(tail) || ans[anslen - strlen(tail) - 1] == '\n'),
                 "command returned %d, answer \"%s\"", r.rc, ans ? ans : "");
      FUZZ_CHECK(quit == (r.rc == CONSOLE_QUIT), "quit %d for a command that returned %d", quit,
                 r.rc);
    }
  } else {
    FUZZ_CHECK(r.calls == 0, "a line without a newline ran");
    if (size == 0)
      FUZZ_CHECK(anslen == 0, "answer to an empty connection: \"%s\"", ans);
    else
      FUZZ_CHECK(is_error_answer(ans, anslen), "answer to %zu bytes without a newline: \"%s\"",
                 size, ans ? ans : "");
  }
  free(ans);
  free(r.line);
}

int FUZZ_ENTRY(const uint8_t *data, size_t size) {
  setup();
  run_console(data, size);
  run_admin(data, size);
  return 0;
}
