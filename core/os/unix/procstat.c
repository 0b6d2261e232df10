/* os/procstat.h on Linux: /proc/self/statm, /proc/self/fd, /proc/self/stat
 * and the boot time in /proc/stat. */
#if !defined(_GNU_SOURCE) && !defined(_DEFAULT_SOURCE)
#define _DEFAULT_SOURCE
#endif
#include "os/procstat.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void read_rss(os_procstat *out) {
  unsigned long long size, resident;
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f)
    return;
  if (fscanf(f, "%llu %llu", &size, &resident) == 2) {
    out->rss_bytes = (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
    out->has_rss = 1;
  }
  fclose(f);
}

static void count_fds(os_procstat *out) {
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  uint64_t n = 0;
  if (!d)
    return;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  out->open_fds = n > 0 ? n - 1 : 0; /* not the one opendir holds */
  out->has_fds = 1;
}

/* Seconds since the epoch at which the system booted (/proc/stat btime). */
static int boot_time(unsigned long long *btime) {
  char line[256];
  int found = 0;
  FILE *f = fopen("/proc/stat", "r");
  if (!f)
    return -1;
  while (!found && fgets(line, sizeof(line), f))
    found = sscanf(line, "btime %llu", btime) == 1;
  fclose(f);
  return found ? 0 : -1;
}

/* utime, stime and starttime (fields 14, 15 and 22) of /proc/self/stat, in
 * clock ticks. The command name (field 2) may hold blanks and parentheses,
 * so the fields are counted from its last ')'. */
static void read_times(os_procstat *out) {
  char buf[1024], *p;
  unsigned long long utime, stime, start, btime;
  long tck = sysconf(_SC_CLK_TCK);
  size_t n;
  FILE *f = fopen("/proc/self/stat", "r");
  if (!f)
    return;
  n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  p = strrchr(buf, ')');
  if (!p || tck <= 0)
    return;
  /* After ") ": state (3), then fields 4..13, then 14 utime, 15 stime, 16..21, 22 starttime. */
  if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d "
                    "%*d %*d %llu",
             &utime, &stime, &start) != 3)
    return;
  out->cpu_seconds = (double)(utime + stime) / (double)tck;
  out->has_cpu = 1;
  if (boot_time(&btime) == 0) {
    out->start_time = (double)btime + (double)start / (double)tck;
    out->has_start = 1;
  }
}

void os_procstat_self(os_procstat *out) {
  memset(out, 0, sizeof(*out));
  read_rss(out);
  count_fds(out);
  read_times(out);
}
