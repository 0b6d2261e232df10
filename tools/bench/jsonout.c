/* jsonout.h */
#include "jsonout.h"

#include <math.h>

void json_num(FILE *f, const char *key, double v, int last) {
  if (v < 0 || !isfinite(v))
    fprintf(f, "\"%s\": null%s", key, last ? "" : ", ");
  else
    fprintf(f, "\"%s\": %.6g%s", key, v, last ? "" : ", ");
}

void json_cpu(FILE *f, double client_cpu, long server_pid, double server_cpu, double dt) {
  json_num(f, "client_cpu_s", client_cpu, 0);
  json_num(f, "client_cpu_util", client_cpu / dt, 0);
  if (server_pid)
    fprintf(f, "\"server_pid\": %ld, ", server_pid);
  else
    fprintf(f, "\"server_pid\": null, ");
  json_num(f, "server_cpu_s", server_cpu, 0);
  json_num(f, "server_cpu_util", server_cpu >= 0 ? server_cpu / dt : -1, 0);
}
