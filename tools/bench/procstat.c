/* Process figures for pier-bench: another process's CPU time from its
 * CPU-time clock (or /proc/<pid>/stat), its resident set from
 * /proc/<pid>/status. /proc/<pid>/stat is read after the last ')' so a
 * command name with spaces or parentheses cannot shift the fields; utime and
 * stime are fields 14 and 15 of the line. */
#include "procstat.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "os/os.h"

static int read_text(const char *path, char *buf, size_t len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  ssize_t n;
  if (fd < 0)
    return -errno;
  n = read(fd, buf, len - 1);
  if (n < 0) {
    int rc = -errno;
    close(fd);
    return rc;
  }
  close(fd);
  buf[n] = '\0';
  return 0;
}

/* The kernel keeps a process's CPU time in nanoseconds and hands it out
 * through the process's CPU-time clock; /proc/<pid>/stat rounds the same
 * figure down to clock ticks (10 ms), 1.3 % of what a one-connection server
 * uses in a 2 s run. The tick figure is the fallback. */
int proc_cpu_seconds(pid_t pid, double *out) {
  char path[64], buf[4096], *p;
  unsigned long long ut, st;
  long tck = sysconf(_SC_CLK_TCK);
  clockid_t clk;
  struct timespec ts;
  int rc;

  if (clock_getcpuclockid(pid, &clk) == 0 && clock_gettime(clk, &ts) == 0) {
    *out = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    return 0;
  }
  snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
  rc = read_text(path, buf, sizeof(buf));
  if (rc < 0)
    return rc;
  p = strrchr(buf, ')');
  /* After ") ": state(3) ppid(4) pgrp(5) session(6) tty_nr(7) tpgid(8)
   * flags(9) minflt(10) cminflt(11) majflt(12) cmajflt(13) utime(14) stime(15) */
  if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
    return -EINVAL;
  *out = (double)(ut + st) / (double)(tck > 0 ? tck : 100);
  return 0;
}

int proc_rss_kib(pid_t pid, uint64_t *out) {
  char path[64], buf[8192], *p;
  int rc;

  snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
  rc = read_text(path, buf, sizeof(buf));
  if (rc < 0)
    return rc;
  p = strstr(buf, "\nVmRSS:");
  if (!p)
    return -EINVAL;
  *out = strtoull(p + 7, NULL, 10);
  return 0;
}

double self_cpu_seconds(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) < 0)
    return 0;
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

void sleep_until_ns(uint64_t t_ns) {
  struct timespec ts = {.tv_sec = (time_t)(t_ns / 1000000000ull),
                        .tv_nsec = (long)(t_ns % 1000000000ull)};
  (void)clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
}

int ensure_fds(unsigned conns) {
  struct rlimit rl;
  rlim_t need = (rlim_t)conns + 64;
  if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
    return -errno;
  if (rl.rlim_cur < need && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
  }
  if (rl.rlim_cur < need) {
    fprintf(stderr,
            "pier-bench: %u connections need %llu file descriptors; the limit is %llu "
            "(raise it with ulimit -n)\n",
            conns, (unsigned long long)need, (unsigned long long)rl.rlim_cur);
    return -EMFILE;
  }
  return 0;
}

uint64_t now_ns(void) { return os_clock_ns(); }
