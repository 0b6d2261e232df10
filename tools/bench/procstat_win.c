/* procstat.h on Windows: GetProcessTimes and the process's working set,
 * which is what Windows calls its resident set. */
#include "procstat.h"

#include <errno.h>

#include "os/os.h"

#include <psapi.h>

static double filetime_seconds(FILETIME ft) {
  ULARGE_INTEGER u;
  u.LowPart = ft.dwLowDateTime;
  u.HighPart = ft.dwHighDateTime;
  return (double)u.QuadPart / 1e7; /* 100 ns units */
}

static int process_cpu(HANDLE p, double *out) {
  FILETIME created, exited, kernel, user;
  if (!GetProcessTimes(p, &created, &exited, &kernel, &user))
    return -os_win_errno(GetLastError());
  *out = filetime_seconds(kernel) + filetime_seconds(user);
  return 0;
}

int proc_cpu_seconds(pid_t pid, double *out) {
  HANDLE p = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, (DWORD)pid);
  int rc;
  if (!p)
    return -os_win_errno(GetLastError());
  rc = process_cpu(p, out);
  CloseHandle(p);
  return rc;
}

int proc_rss_kib(pid_t pid, uint64_t *out) {
  HANDLE p = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, (DWORD)pid);
  PROCESS_MEMORY_COUNTERS pmc;
  int rc = 0;
  if (!p)
    return -os_win_errno(GetLastError());
  if (GetProcessMemoryInfo(p, &pmc, sizeof(pmc)))
    *out = (uint64_t)pmc.WorkingSetSize / 1024u;
  else
    rc = -os_win_errno(GetLastError());
  CloseHandle(p);
  return rc;
}

double self_cpu_seconds(void) {
  double s = 0;
  (void)process_cpu(GetCurrentProcess(), &s);
  return s;
}

void sleep_until_ns(uint64_t t_ns) {
  uint64_t now = now_ns();
  if (t_ns > now)
    Sleep((DWORD)((t_ns - now + 999999u) / 1000000u));
}

int ensure_fds(unsigned conns) {
  (void)conns;
  return 0;
}

uint64_t now_ns(void) { return os_clock_ns(); }
