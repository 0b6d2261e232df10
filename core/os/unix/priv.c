/* Dropping root the way nginx and OpenSSH do: initgroups() while still
 * root (it needs /etc/group and the privilege), setgid() before setuid()
 * (afterwards the group could no longer be changed), and a final check that
 * setuid(0) fails, since a half-done switch is worse than none. */
#include "os/priv.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#include <sys/prctl.h>
#define PIER_SANITIZED 1
#endif

int os_is_root(void) { return geteuid() == 0; }

unsigned os_current_uid(void) { return (unsigned)getuid(); }

int os_account_lookup(const char *user, const char *group, os_account *out, char *err,
                      size_t len) {
  struct passwd *pw;
  struct group *gr;

  memset(out, 0, sizeof(*out));
  errno = 0;
  pw = getpwnam(user);
  if (!pw) {
    snprintf(err, len, "user \"%s\": %s", user, errno ? strerror(errno) : "no such user");
    return errno ? -errno : -ENOENT;
  }
  snprintf(out->user, sizeof(out->user), "%s", pw->pw_name);
  out->uid = (unsigned)pw->pw_uid;
  out->gid = (unsigned)pw->pw_gid;
  if (group) {
    errno = 0;
    gr = getgrnam(group);
    if (!gr) {
      snprintf(err, len, "group \"%s\": %s", group, errno ? strerror(errno) : "no such group");
      return errno ? -errno : -ENOENT;
    }
    out->gid = (unsigned)gr->gr_gid;
    snprintf(out->group, sizeof(out->group), "%s", gr->gr_name);
  } else {
    gr = getgrgid(pw->pw_gid);
    if (gr)
      snprintf(out->group, sizeof(out->group), "%s", gr->gr_name);
    else
      snprintf(out->group, sizeof(out->group), "%u", out->gid);
  }
  return 0;
}

int os_account_chown(const char *path, const os_account *a) {
  /* lchown: a path swapped for a link meanwhile gives away the link, never
   * what it points to. */
  return lchown(path, (uid_t)a->uid, (gid_t)a->gid) < 0 ? -errno : 0;
}

int os_account_become(const os_account *a, char *err, size_t len) {
  if (initgroups(a->user, (gid_t)a->gid) < 0) {
    snprintf(err, len, "initgroups(%s, %u): %s", a->user, a->gid, strerror(errno));
    return -errno;
  }
  if (setgid((gid_t)a->gid) < 0) {
    snprintf(err, len, "setgid(%u): %s", a->gid, strerror(errno));
    return -errno;
  }
  if (setuid((uid_t)a->uid) < 0) {
    snprintf(err, len, "setuid(%u): %s", a->uid, strerror(errno));
    return -errno;
  }
  if (a->uid != 0 && (setuid(0) == 0 || geteuid() == 0)) {
    snprintf(err, len, "setuid(0) still succeeds after switching to %s", a->user);
    return -EPERM;
  }
#ifdef PIER_SANITIZED
  /* The switch made the process undumpable: /proc/self is root's now, and
   * the sanitizers' exit checks cannot read it. Only in sanitizer builds: a
   * dumpable pierd could be traced by any process of the account, which
   * would see what root loaded (TLS keys). */
  (void)prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
#endif
  return 0;
}
