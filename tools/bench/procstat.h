/* CPU time and memory of processes as the system reports them: another
 * process's user+system time and resident set, and this process's own CPU
 * time from getrusage. pier-bench samples these at the edges of its
 * measured interval. */
#ifndef PIER_BENCH_PROCSTAT_H
#define PIER_BENCH_PROCSTAT_H

#include <stdint.h>
#include <sys/types.h>

/* User+system time of every thread of pid, in seconds: to the nanosecond
 * on Linux (the process's CPU-time clock; clock ticks from /proc/<pid>/stat
 * where that clock is not available), in 100 ns units on Windows. Returns 0
 * or a negative errno. */
int proc_cpu_seconds(pid_t pid, double *out);
/* VmRSS of pid in KiB. Returns 0 or a negative errno. */
int proc_rss_kib(pid_t pid, uint64_t *out);
/* This process's user+system CPU seconds. */
double self_cpu_seconds(void);
/* Monotonic nanoseconds. */
uint64_t now_ns(void);
/* Sleeps until now_ns() reaches t_ns (or a signal interrupts it). */
void sleep_until_ns(uint64_t t_ns);
/* Makes room for conns connections: on POSIX the soft descriptor limit
 * goes up to the hard one if needed, and too low a limit is an error with
 * a line on stderr; Windows has no such limit. Returns 0 or -EMFILE. */
int ensure_fds(unsigned conns);

#endif
