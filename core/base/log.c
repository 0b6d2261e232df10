/* Log lines: "2026-11-28T03:31:02.123Z info  message". Formatted into a stack
 * buffer and written with one write(2) so lines from different threads never
 * interleave. */
#include "base/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "os/os.h"

static _Atomic int current_level = LOG_INFO;

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

static void vlog(log_level level, const char *prefix, const char *fmt, va_list ap) {
  char line[2048];
  int64_t sec;
  int ms;
  struct tm tm;
  size_t n;
  int rc;

  os_clock_wall(&sec, &ms);
  os_gmtime(sec, &tm);
  n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
  rc = snprintf(line + n, sizeof(line) - n, ".%03dZ %-5s %s", ms,
                log_level_name(level), prefix);
  if (rc > 0)
    n += (size_t)rc;
  if (n < sizeof(line)) {
    rc = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    if (rc > 0)
      n += (size_t)rc;
  }
  if (n > sizeof(line) - 2)
    n = sizeof(line) - 2;
  line[n++] = '\n';
  /* A failed log write has nowhere to be reported. */
  if (write(STDERR_FILENO, line, n) < 0)
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
