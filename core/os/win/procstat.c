/* os/procstat.h on Windows: the working set (Windows' resident set), the
 * handle count and GetProcessTimes. */
#include "os/procstat.h"

#include <string.h>

#include "os/os.h"

#include <psapi.h>

/* 100 ns units since 1601-01-01. */
static double filetime_seconds(FILETIME ft) {
  ULARGE_INTEGER u;
  u.LowPart = ft.dwLowDateTime;
  u.HighPart = ft.dwHighDateTime;
  return (double)u.QuadPart / 1e7;
}

void os_procstat_self(os_procstat *out) {
  HANDLE p = GetCurrentProcess();
  PROCESS_MEMORY_COUNTERS pmc;
  FILETIME created, exited, kernel, user;
  DWORD handles;

  memset(out, 0, sizeof(*out));
  if (GetProcessMemoryInfo(p, &pmc, sizeof(pmc))) {
    out->rss_bytes = (uint64_t)pmc.WorkingSetSize;
    out->has_rss = 1;
  }
  if (GetProcessHandleCount(p, &handles)) {
    out->open_fds = handles;
    out->has_fds = 1;
  }
  if (GetProcessTimes(p, &created, &exited, &kernel, &user)) {
    out->cpu_seconds = filetime_seconds(kernel) + filetime_seconds(user);
    out->has_cpu = 1;
    out->start_time = filetime_seconds(created) - 11644473600.0; /* 1601 -> 1970 */
    out->has_start = 1;
  }
}
