/* Runs a real pierd process for end-to-end tests: writes a config file,
 * starts build/pierd on it with a chosen backend, waits for its "pierd ready"
 * line and collects the ports its listeners bound (config port 0 = any free
 * port). stderr of the daemon is captured so tests can assert log lines. */
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
  char log[1 << 16];    /* everything read from stderr so far */
  size_t log_len;
} test_daemon;

/* Writes config_json to a fresh temp dir and starts pierd with
 * --config <that file> --io-backend <backend>. Plugin paths in the config may
 * use "@PLUGINS@", replaced by the build's plugin directory, and "@TESTPLUGINS@"
 * for the test plugins. Returns 0 once the daemon printed "pierd ready", or -1
 * (the daemon's output is then in d->log). */
int test_daemon_start(test_daemon *d, const char *config_json, const char *backend);
/* Runs pierd with extra args and no wait (e.g. --check): returns its exit
 * status and its stderr in d->log. */
int test_daemon_run_to_exit(test_daemon *d, const char *config_json, const char *backend,
                            const char *extra_arg);
/* Writes a console line (newline added). */
void test_daemon_command(test_daemon *d, const char *line);
/* Reads stderr until text appears in the log or timeout_ms passes; 1 if seen. */
int test_daemon_wait_log(test_daemon *d, const char *text, int timeout_ms);
/* Sends sig and waits for exit; returns the exit status (or 128+signal). */
int test_daemon_signal_wait(test_daemon *d, int sig, int timeout_ms);
/* Kills (if still running) and removes the temp dir. */
void test_daemon_cleanup(test_daemon *d);

#endif
