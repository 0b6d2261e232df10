/* Who the process runs as: look up an account, hand a file to it, and
 * switch to it for good (POSIX: initgroups + setgid + setuid, then a check
 * that root cannot be regained). pierd binds its listeners and opens its
 * files as root, then becomes the configured account before any plugin
 * code runs. Windows has no such switch for a running process: every call
 * returns -ENOSYS there and os_is_root() is 0. */
#ifndef PIER_OS_PRIV_H
#define PIER_OS_PRIV_H

#include <stddef.h>

typedef struct os_account {
  char user[64];
  char group[64];
  unsigned uid, gid;
} os_account;

/* 1 when the effective user is root. */
int os_is_root(void);
/* The uid of the real user, for the log. */
unsigned os_current_uid(void);
/* Looks up user (and group, or the user's primary group when NULL).
 * Returns 0, or a negative errno with the reason in err. */
int os_account_lookup(const char *user, const char *group, os_account *out, char *err,
                      size_t len);
/* Gives path to the account (owner and group); a symbolic link is not
 * followed (the link itself changes hands). Returns 0 or a negative errno. */
int os_account_chown(const char *path, const os_account *a);
/* Becomes the account: supplementary groups, group, user, in that order,
 * and verifies that setuid(0) now fails. Returns 0, or a negative errno
 * with the reason in err (the process may then be half switched: exit). */
int os_account_become(const os_account *a, char *err, size_t len);

#endif
