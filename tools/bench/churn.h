/* pier-bench churn: connection turnover as players make it. Each of N
 * churners connects, sends one message, waits for its echo, closes and at
 * once starts over, so the server's accept, session setup and teardown are
 * what is measured. It runs on plain nonblocking sockets and epoll in
 * pier-bench's main thread rather than on pier's client service: a session
 * here costs the client about what it costs the server, and one thread of
 * sockets with nothing between them keeps the client (pinned to one CPU)
 * from being the bottleneck sooner than it must. Linux only. */
#ifndef PIER_BENCH_CHURN_H
#define PIER_BENCH_CHURN_H

#include <signal.h>

#include "net/addr.h"

typedef struct churn_opts {
  net_addr addr;      /* the server */
  const char *target; /* addr as text, for the report */
  unsigned conns;     /* concurrent churners */
  unsigned size;      /* bytes echoed per session */
  /* Source addresses, 127.0.0.1 up: connection i binds 127.0.0.(1 + i mod
   * sources) before connecting (IPv4 loopback targets only); 1: the kernel
   * picks, from 127.0.0.1. See churn.c on TIME_WAIT. */
  unsigned sources;
  double duration, warmup, drain;
  long server_pid; /* 0: none */
  int json;
  volatile sig_atomic_t *stop; /* set by a signal: end early, report, fail */
} churn_opts;

/* Non-zero where churn_run is available (Linux). */
extern const int churn_available;

/* Runs the workload for warmup + duration seconds, then lets the sessions
 * in progress finish (drain seconds at most) and prints the report (text or
 * one JSON object) on stdout. A session counts once its echo came back
 * whole and the server's close was seen after the client's own. Returns the
 * process exit status: 0 when nothing failed, 1 otherwise (reasons on
 * stderr). */
int churn_run(const churn_opts *o);

#endif
