/* Logging for every layer of pier: one line per event on stderr (or a log
 * file), with a UTC timestamp and a level, as text or as one JSON object per
 * line. Thread-safe (one write(2) per line). The level is a process-wide
 * setting; log_limited() drops repeats of one call site beyond a budget per
 * second so a flood of bad clients cannot flood the log. */
#ifndef PIER_BASE_LOG_H
#define PIER_BASE_LOG_H

#include <stdint.h>

/* printf checking against the printf pier formats with: on mingw that is
 * its C99 one (__USE_MINGW_ANSI_STDIO), and GCC's "printf" there would
 * check the old msvcrt rules (no %zu) instead. */
#ifdef __MINGW32__
#define LOG_PRINTF gnu_printf
#else
#define LOG_PRINTF printf
#endif

#define LOG_LEVEL_MAP(XX) \
  XX(ERROR, "error")      \
  XX(WARN, "warn")        \
  XX(INFO, "info")        \
  XX(DEBUG, "debug")

typedef enum {
#define XX(name, str) LOG_##name,
  LOG_LEVEL_MAP(XX)
#undef XX
} log_level;

typedef struct log_rate {
  uint64_t window_ms; /* start of the current one-second window */
  unsigned count;     /* lines logged in it */
  unsigned dropped;   /* lines dropped in it, reported with the next line */
} log_rate;

void log_set_level(log_level level);
log_level log_get_level(void);
const char *log_level_name(log_level level);
/* Returns 0 and sets *out for "error"/"warn"/"info"/"debug", else -EINVAL. */
int log_level_parse(const char *name, log_level *out);

/* Line format: text ("2026-11-28T03:31:02.123Z info  message") or JSON
 * ({"ts":"2026-11-28T03:31:02.123Z","level":"info","msg":"message"}, the
 * message escaped as a JSON string; bytes >= 0x80 are passed through, so a
 * line is valid JSON when the message is UTF-8). */
void log_set_json(int json);

/* Sends the lines to the file at path (created 0644, appended to) instead of
 * stderr. Call once, from main, before any thread logs. Returns 0 or a
 * negative errno; on failure the lines keep going where they went. */
int log_open_file(const char *path);
/* Opens the log file's path again (after a rotation renamed it) and puts
 * the new file in place of the old one: writers keep one descriptor
 * number, swapped with dup2(), so a line in flight lands whole in the old
 * file or the new one. Returns 0, -ENOENT when no log file is configured,
 * or a negative errno from open() (the old file is then kept). Any thread,
 * though the daemon calls it from its main loop. */
int log_reopen(void);
/* The configured log file, or NULL for stderr. */
const char *log_file_path(void);

void log_msg(log_level level, const char *fmt, ...)
    __attribute__((format(LOG_PRINTF, 2, 3)));
/* Like log_msg, but at most 10 lines per second per `rate` (one per call site);
 * the next line that passes says how many were dropped. `rate` must be used
 * from one thread (each worker keeps its own). */
void log_limited(log_rate *rate, log_level level, const char *fmt, ...)
    __attribute__((format(LOG_PRINTF, 3, 4)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

/* Monotonic milliseconds, for timers and rate limits. */
uint64_t clock_ms(void);

#endif
