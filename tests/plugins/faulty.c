/* Test plugin that misbehaves on purpose, built three ways:
 * FAULT_SLEEP: on_recv sleeps 250 ms, then echoes;
 * FAULT_FAIL: on_recv reports a failure through the host, then echoes;
 * FAULT_CRASH: on_load writes through a wild pointer. */
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "pier/plugin.h"

static const pier_host *host;

static int faulty_load(const pier_load_args *a) {
#ifdef FAULT_CRASH
  /* A wild pointer rather than NULL, so the sanitizers' null checks do not
   * stop the process before the real SIGSEGV. */
  uintptr_t addr = 0x10;
  __asm__ volatile("" : "+r"(addr)); /* opaque to the compiler's bounds checks */
  *(volatile int *)addr = 1;
#endif
  host = a->host;
  return 0;
}

static void faulty_recv(pier_sid sid, const void *data, size_t len) {
#ifdef FAULT_SLEEP
  struct timespec ts = {0, 250 * 1000000};
  nanosleep(&ts, NULL);
#endif
#ifdef FAULT_FAIL
  if (host->size >= offsetof(pier_host, fail) + sizeof(host->fail) && host->fail)
    host->fail(host, "could not handle the packet");
#endif
  host->send(host, sid, data, len);
}

PIER_PLUGIN("faulty", "0.0.1", .on_load = faulty_load, .on_recv = faulty_recv);
