/* Windows: a process keeps the token it was started with; run pierd.exe
 * under the account it should use (a service account). */
#include "os/priv.h"

#include <errno.h>
#include <stdio.h>

int os_is_root(void) { return 0; }

unsigned os_current_uid(void) { return 0; }

int os_account_lookup(const char *user, const char *group, os_account *out, char *err,
                      size_t len) {
  (void)user;
  (void)group;
  (void)out;
  snprintf(err, len, "switching users is not supported on Windows");
  return -ENOSYS;
}

int os_account_chown(const char *path, const os_account *a) {
  (void)path;
  (void)a;
  return -ENOSYS;
}

int os_account_become(const os_account *a, char *err, size_t len) {
  (void)a;
  snprintf(err, len, "switching users is not supported on Windows");
  return -ENOSYS;
}
