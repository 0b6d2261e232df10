/* The process's own resource use, for /metrics: resident memory, open
 * descriptors (handles on Windows), CPU time and start time. Linux reads
 * /proc/self; Windows asks GetProcessMemoryInfo, GetProcessHandleCount and
 * GetProcessTimes. Any thread; no allocation. */
#ifndef PIER_OS_PROCSTAT_H
#define PIER_OS_PROCSTAT_H

#include <stdint.h>

typedef struct os_procstat {
  /* Each has_ flag says whether its value could be read. */
  int has_rss, has_fds, has_cpu, has_start;
  uint64_t rss_bytes;  /* resident set (the working set on Windows) */
  uint64_t open_fds;   /* descriptors open now (handles on Windows) */
  double cpu_seconds;  /* user + system */
  double start_time;   /* seconds since the Unix epoch */
} os_procstat;

/* Fills out with what could be read (the has_ flags say what). */
void os_procstat_self(os_procstat *out);

#endif
