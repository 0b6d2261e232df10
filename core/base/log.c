/* Log lines: "2026-11-28T03:31:02.123Z info  message", or the same as a JSON
 * object. Formatted into a stack buffer and written with one write(2) so
 * lines from different threads never interleave. A log file is one
 * descriptor number for the life of the process: a reopen dup2()s the new
 * file onto it, which the kernel does atomically, so a writer never sees it
 * closed or pointing nowhere. */
#include "base/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "os/file.h"
#include "os/os.h"

static _Atomic int current_level = LOG_INFO;
static _Atomic int log_json;
static _Atomic int log_fd = STDERR_FILENO;
static char file_path[4096]; /* set once, before threads; "" = stderr */

void log_set_json(int json) { atomic_store(&log_json, json ? 1 : 0); }

static int open_log(const char *path) { return os_file_open_append(path); }

int log_open_file(const char *path) {
  int fd;
  if (strlen(path) >= sizeof(file_path))
    return -ENAMETOOLONG;
  fd = open_log(path);
  if (fd < 0)
    return fd;
  snprintf(file_path, sizeof(file_path), "%s", path);
  atomic_store(&log_fd, fd);
  return 0;
}

int log_reopen(void) {
  int fd, rc = 0;
  if (!file_path[0])
    return -ENOENT;
  fd = open_log(file_path);
  if (fd < 0)
    return fd;
#ifdef _WIN32
  if (dup2(fd, atomic_load(&log_fd)) < 0)
    rc = -errno;
#else
  /* dup2() would clear close-on-exec on the log's descriptor. */
  if (dup3(fd, atomic_load(&log_fd), O_CLOEXEC) < 0)
    rc = -errno;
#endif
  close(fd);
  return rc;
}

const char *log_file_path(void) { return file_path[0] ? file_path : NULL; }

static const char *const level_names[] = {
#define XX(name, str) str,
    LOG_LEVEL_MAP(XX)
#undef XX
};

void log_set_level(log_level level) { atomic_store(&current_level, (int)level); }

log_level log_get_level(void) { return (log_level)atomic_load(&current_level); }

const char *log_level_name(log_level level) {
  if ((unsigned)level >= sizeof(level_names) / sizeof(level_names[0]))
    return "?";
  return level_names[level];
}

int log_level_parse(const char *name, log_level *out) {
  for (unsigned i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
    if (strcmp(name, level_names[i]) == 0) {
      *out = (log_level)i;
      return 0;
    }
  }
  return -EINVAL;
}

uint64_t clock_ms(void) { return os_clock_ms(); }

/* The length of s[0..n) without a UTF-8 sequence cut at its end (by a
 * truncation), so a cut JSON line stays valid UTF-8. */
static size_t utf8_whole(const char *s, size_t n) {
  size_t k = n, cont = 0;
  while (k > 0 && ((unsigned char)s[k - 1] & 0xc0) == 0x80 && cont < 3) {
    k--;
    cont++;
  }
  if (k > 0 && (unsigned char)s[k - 1] >= 0xc0) {
    unsigned char lead = (unsigned char)s[k - 1];
    size_t need = lead >= 0xf0 ? 3 : lead >= 0xe0 ? 2 : 1;
    return cont >= need ? n : k - 1;
  }
  return n;
}

/* Appends s to line (at n, capacity cap) as the inside of a JSON string. */
static size_t json_escape(char *line, size_t n, size_t cap, const char *s) {
  static const char hex[] = "0123456789abcdef";
  size_t start = n;
  for (; *s && n + 7 < cap; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\') {
      line[n++] = '\\';
      line[n++] = (char)ch;
    } else if (ch == '\n') {
      line[n++] = '\\';
      line[n++] = 'n';
    } else if (ch == '\t') {
      line[n++] = '\\';
      line[n++] = 't';
    } else if (ch < 0x20 || ch == 0x7f) {
      memcpy(line + n, "\\u00", 4);
      line[n + 4] = hex[ch >> 4];
      line[n + 5] = hex[ch & 15];
      n += 6;
    } else {
      line[n++] = (char)ch;
    }
  }
  return *s ? start + utf8_whole(line + start, n - start) : n;
}

static void vlog(log_level level, const char *prefix, const char *fmt, va_list ap) {
  char line[2048], ts[40], msg[1800];
  int64_t sec;
  int ms;
  struct tm tm;
  size_t n, k;
  int rc;

  os_clock_wall(&sec, &ms);
  os_gmtime(sec, &tm);
  k = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(ts + k, sizeof(ts) - k, ".%03dZ", ms);
  rc = snprintf(msg, sizeof(msg), "%s", prefix);
  k = rc > 0 ? (size_t)rc : 0;
  if (k < sizeof(msg) && vsnprintf(msg + k, sizeof(msg) - k, fmt, ap) >= (int)(sizeof(msg) - k))
    msg[utf8_whole(msg, strlen(msg))] = '\0';
  if (atomic_load(&log_json)) {
    n = (size_t)snprintf(line, sizeof(line), "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"", ts,
                         log_level_name(level));
    n = json_escape(line, n, sizeof(line) - 3, msg);
    line[n++] = '"';
    line[n++] = '}';
  } else {
    rc = snprintf(line, sizeof(line), "%s %-5s %s", ts, log_level_name(level), msg);
    n = rc > 0 ? (size_t)rc : 0;
    if (n > sizeof(line) - 2)
      n = sizeof(line) - 2;
  }
  line[n++] = '\n';
  /* A failed log write has nowhere to be reported. */
  if (write(atomic_load(&log_fd), line, n) < 0)
    return;
}

void log_msg(log_level level, const char *fmt, ...) {
  va_list ap;
  if ((int)level > atomic_load(&current_level))
    return;
  va_start(ap, fmt);
  vlog(level, "", fmt, ap);
  va_end(ap);
}

void log_limited(log_rate *rate, log_level level, const char *fmt, ...) {
  char prefix[64] = "";
  uint64_t now;
  va_list ap;

  if ((int)level > atomic_load(&current_level))
    return;
  now = clock_ms();
  if (now - rate->window_ms >= 1000) {
    if (rate->dropped)
      snprintf(prefix, sizeof(prefix), "(%u similar lines dropped) ", rate->dropped);
    rate->window_ms = now;
    rate->count = 0;
    rate->dropped = 0;
  }
  if (rate->count >= 10) {
    rate->dropped++;
    return;
  }
  rate->count++;
  va_start(ap, fmt);
  vlog(level, prefix, fmt, ap);
  va_end(ap);
}
