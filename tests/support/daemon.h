/* Runs a real pierd process for end-to-end tests: writes a config file,
 * starts the daemon on it with a chosen backend, waits for its "pierd ready"
 * line and collects the ports its listeners bound (config port 0 = any free
 * port). stderr of the daemon is captured so tests can assert log lines.
 *
 * By default the daemon is this build's pierd with its .so plugins. The
 * environment can point the same tests at another build of it, e.g. the
 * Windows pierd.exe under wine (tests/win/run-e2e sets these):
 *   PIER_TEST_DAEMON       the command, words split on spaces, before the
 *                          daemon's own arguments ("wine /x/build-win/pierd.exe")
 *   PIER_TEST_PIERCTL      the same for pierctl
 *   PIER_TEST_PLUGINS      directory of the content plugins (@PLUGINS@)
 *   PIER_TEST_TESTPLUGINS  directory of the test plugins (@TESTPLUGINS@)
 *   PIER_TEST_PLUGIN_EXT   the plugin file suffix, ".so" or ".dll" (@EXT@)
 *   PIER_TEST_PATH_PREFIX  prefixed to every absolute path handed to the
 *                          daemon ("Z:" makes /tmp/x the wine path Z:/tmp/x)
 *
 * Run as root, this build's pierd gets "--user root" unless the config text
 * names a "user" itself: pierd as root would otherwise drop to "nobody",
 * which may not read the build tree (a checkout under /root). */
#ifndef PIER_TEST_DAEMON_H
#define PIER_TEST_DAEMON_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct test_daemon {
  pid_t pid;
  int in_fd;            /* the daemon's stdin (console) */
  int err_fd;           /* read end of its stderr */
  char dir[128];        /* temp directory holding server.json */
  char config[192];     /* its path */
  uint16_t ports[16];   /* bound port of listeners[i], in config order */
  int nports;
  char admin[256];      /* see test_daemon_admin */
  char log[1 << 16];    /* everything read from stderr so far (no '\r') */
  size_t log_len;
  int keep_root;        /* "--user root" is passed (see above) */
  char tail[256];       /* a log file also read into log (see test_daemon_start_file) */
  long tail_off;
} test_daemon;

/* Writes config_json to a fresh temp dir and starts pierd with
 * --config <that file> --io-backend <backend> (no --io-backend when backend
 * is NULL or ""). Plugin paths in the config may use "@PLUGINS@", replaced by
 * the build's plugin directory, "@TESTPLUGINS@" for the test plugins and
 * "@EXT@" for the plugin suffix (".so"). Returns 0 once the daemon printed
 * "pierd ready", or -1 (the daemon's output is then in d->log). */
int test_daemon_start(test_daemon *d, const char *config_json, const char *backend);
/* As test_daemon_start for a config whose "log_file" is log_name (relative
 * names are resolved against the temp dir, as the daemon does): the lines
 * the daemon writes there are read into d->log as its stderr is. Clear
 * d->tail to stop that (e.g. before renaming the file). */
int test_daemon_start_file(test_daemon *d, const char *config_json, const char *backend,
                           const char *log_name);
/* Runs pierd with extra args and no wait (e.g. --check): returns its exit
 * status and its stderr in d->log. */
int test_daemon_run_to_exit(test_daemon *d, const char *config_json, const char *backend,
                            const char *extra_arg);
/* Writes a console line (newline added). */
void test_daemon_command(test_daemon *d, const char *line);
/* Reads stderr until text appears in the log or timeout_ms passes; 1 if seen.
 * A timeout of 0 takes in what is already there without waiting. */
int test_daemon_wait_log(test_daemon *d, const char *text, int timeout_ms);
/* Sends sig and waits for exit; returns the exit status (or 128+signal). */
int test_daemon_signal_wait(test_daemon *d, int sig, int timeout_ms);
/* Types `quit` on the console and waits for exit; returns the exit status,
 * or -1 when the daemon had to be killed after timeout_ms. Works for any
 * daemon command (a signal may not reach a program under wine). */
int test_daemon_quit(test_daemon *d, int timeout_ms);
/* The admin endpoint for `pierctl --socket`, as the daemon's "... ready
 * (pierctl)" log line names it, waiting up to timeout_ms for that line;
 * NULL if it did not come. */
const char *test_daemon_admin(test_daemon *d, int timeout_ms);
/* Kills (if still running) and removes the temp dir. */
void test_daemon_cleanup(test_daemon *d);

/* The directories and suffix @PLUGINS@, @TESTPLUGINS@ and @EXT@ stand for
 * (paths as this process sees them). */
const char *test_daemon_plugin_dir(void);
const char *test_daemon_test_plugin_dir(void);
const char *test_daemon_plugin_ext(void);
/* path as the daemon must be given it (PIER_TEST_PATH_PREFIX before an
 * absolute path); out is always terminated. */
void test_daemon_native_path(const char *path, char *out, size_t cap);

/* Runs pierctl (PIER_TEST_PIERCTL, else this build's) with args (NULL-
 * terminated), stdin from /dev/null, and collects stdout and stderr (without
 * '\r', each terminated, cut at cap). Returns the exit status, or -1 when it
 * was killed after timeout_ms. */
int test_daemon_pierctl(const char *const args[], char *out, size_t out_cap, char *err,
                        size_t err_cap, int timeout_ms);

#endif
