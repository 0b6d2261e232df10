/* The pieces of pier-bench's one-line JSON results that every mode shares:
 * a number (null when negative or not finite) and the CPU block. */
#ifndef PIER_BENCH_JSONOUT_H
#define PIER_BENCH_JSONOUT_H

#include <stdio.h>

/* "key": v, (no comma after it when last). */
void json_num(FILE *f, const char *key, double v, int last);
/* client_cpu_s, client_cpu_util, server_pid, server_cpu_s and
 * server_cpu_util over dt seconds; server_cpu < 0: not measured (null). */
void json_cpu(FILE *f, double client_cpu, long server_pid, double server_cpu, double dt);

#endif
