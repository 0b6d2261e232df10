/* pierd as a child process for end-to-end tests: this build's, or whatever
 * command the environment names (see daemon.h), e.g. pierd.exe under wine. */
#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef PIER_BINARY_DIR
#define PIER_BINARY_DIR "build"
#endif

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static const char *env_or(const char *name, const char *fallback) {
  const char *v = getenv(name);
  return v && *v ? v : fallback;
}

const char *test_daemon_plugin_dir(void) {
  return env_or("PIER_TEST_PLUGINS", PIER_BINARY_DIR "/plugins");
}

const char *test_daemon_test_plugin_dir(void) {
  return env_or("PIER_TEST_TESTPLUGINS", PIER_BINARY_DIR "/tests/plugins");
}

const char *test_daemon_plugin_ext(void) { return env_or("PIER_TEST_PLUGIN_EXT", ".so"); }

void test_daemon_native_path(const char *path, char *out, size_t cap) {
  const char *prefix = path[0] == '/' ? env_or("PIER_TEST_PATH_PREFIX", "") : "";
  snprintf(out, cap, "%s%s", prefix, path);
}

/* Splits the command in env (or fallback) into words, in place of a static
 * copy; returns how many went into argv (at most cap - 1). */
static int command_words(const char *env, const char *fallback, char **argv, int cap) {
  static char copies[2][1024];
  char *text = copies[strcmp(env, "PIER_TEST_DAEMON") == 0 ? 0 : 1];
  int n = 0;
  snprintf(text, sizeof(copies[0]), "%s", env_or(env, fallback));
  for (char *w = strtok(text, " \t"); w && n < cap - 1; w = strtok(NULL, " \t"))
    argv[n++] = w;
  argv[n] = NULL;
  return n;
}

static char *subst(const char *in) {
  char plugins[512], testplugins[512];
  const char *keys[] = {"@PLUGINS@", "@TESTPLUGINS@", "@EXT@"};
  const char *vals[] = {plugins, testplugins, test_daemon_plugin_ext()};
  size_t cap = strlen(in) * 4 + 4096, n = 0;
  char *out = malloc(cap);
  test_daemon_native_path(test_daemon_plugin_dir(), plugins, sizeof(plugins));
  test_daemon_native_path(test_daemon_test_plugin_dir(), testplugins, sizeof(testplugins));
  while (*in) {
    int hit = 0;
    for (int k = 0; k < 3; k++) {
      size_t kl = strlen(keys[k]);
      if (strncmp(in, keys[k], kl) == 0) {
        size_t vl = strlen(vals[k]);
        memcpy(out + n, vals[k], vl);
        n += vl;
        in += kl;
        hit = 1;
        break;
      }
    }
    if (!hit)
      out[n++] = *in++;
  }
  out[n] = '\0';
  return out;
}

static int write_config(test_daemon *d, const char *json) {
  char *text = subst(json);
  FILE *f;
  /* Run as root (a container, CI), pierd would drop to "nobody", who may
   * not read a checkout under /root: keep root unless the test asks for an
   * account itself. Only this build's pierd: the Windows one has no --user. */
  d->keep_root = geteuid() == 0 && !getenv("PIER_TEST_DAEMON") && !strstr(text, "\"user\"");
  snprintf(d->dir, sizeof(d->dir), "/tmp/pier-test-XXXXXX");
  if (!mkdtemp(d->dir)) {
    free(text);
    return -1;
  }
  snprintf(d->config, sizeof(d->config), "%s/server.json", d->dir);
  f = fopen(d->config, "w");
  if (!f) {
    free(text);
    return -1;
  }
  fputs(text, f);
  fclose(f);
  free(text);
  return 0;
}

/* Appends what the tailed log file gained since the last look. */
static void read_tail(test_daemon *d) {
  int fd = open(d->tail, O_RDONLY | O_CLOEXEC);
  ssize_t n;
  if (fd < 0)
    return;
  if (sizeof(d->log) - 1 - d->log_len < 4096) {
    size_t keep = d->log_len / 2;
    memmove(d->log, d->log + d->log_len - keep, keep);
    d->log_len = keep;
  }
  n = pread(fd, d->log + d->log_len, sizeof(d->log) - 1 - d->log_len, d->tail_off);
  if (n > 0) {
    if (write(STDERR_FILENO, d->log + d->log_len, (size_t)n) < 0) {
    }
    d->log_len += (size_t)n;
    d->tail_off += n;
  }
  d->log[d->log_len] = '\0';
  close(fd);
}

static void read_some(test_daemon *d, int timeout_ms) {
  struct pollfd p = {.fd = d->err_fd, .events = POLLIN};
  if (d->tail[0]) {
    /* A file cannot be polled for growth: look at it every 20 ms. */
    read_tail(d);
    if (timeout_ms > 20)
      timeout_ms = 20;
  }
  if (d->err_fd < 0 || poll(&p, 1, timeout_ms) <= 0)
    return;
  if (sizeof(d->log) - 1 - d->log_len < 4096) {
    /* Full: keep the newer half, so a read of 0 bytes always means EOF. */
    size_t keep = d->log_len / 2;
    memmove(d->log, d->log + d->log_len - keep, keep);
    d->log_len = keep;
    d->log[keep] = '\0';
  }
  char *at = d->log + d->log_len;
  ssize_t n = read(d->err_fd, at, sizeof(d->log) - 1 - d->log_len);
  if (n > 0) {
    /* A Windows daemon's stdio writes "\r\n": keep the log in one form. */
    size_t kept = 0;
    for (ssize_t k = 0; k < n; k++)
      if (at[k] != '\r')
        at[kept++] = at[k];
    d->log_len += kept;
    d->log[d->log_len] = '\0';
    /* Mirror the daemon's log so a failing test shows it. */
    if (write(STDERR_FILENO, at, kept) < 0) {
    }
  } else if (n == 0) {
    close(d->err_fd);
    d->err_fd = -1;
  }
}

static pid_t spawn(test_daemon *d, const char *backend, const char *extra) {
  int in[2], err[2];
  pid_t pid;
  if (pipe2(in, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0)
    return -1;
  char *argv[24], config[256];
  int n = command_words("PIER_TEST_DAEMON", PIER_BINARY_DIR "/pierd", argv, 16);
  test_daemon_native_path(d->config, config, sizeof(config));
  argv[n++] = "--config";
  argv[n++] = config;
  if (backend && *backend) {
    argv[n++] = "--io-backend";
    argv[n++] = (char *)backend;
  }
  if (d->keep_root) {
    argv[n++] = "--user";
    argv[n++] = "root";
  }
  if (extra)
    argv[n++] = (char *)extra;
  argv[n] = NULL;
  pid = fork();
  if (pid == 0) {
    /* A test that fails ends its process at once: the daemon goes with it
     * instead of keeping its ports (and, under wine, the wineserver) busy. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(in[0], STDIN_FILENO);
    dup2(err[1], STDERR_FILENO);
    dup2(err[1], STDOUT_FILENO);
    execvp(argv[0], argv);
    _exit(127);
  }
  close(in[0]);
  close(err[1]);
  d->in_fd = in[1];
  d->err_fd = err[0];
  return pid;
}

int test_daemon_wait_log(test_daemon *d, const char *text, int timeout_ms) {
  uint64_t end = now_ms() + (uint64_t)timeout_ms;
  if (timeout_ms == 0) {
    /* Whatever is waiting in the pipe, without blocking. */
    size_t before;
    do {
      before = d->log_len;
      read_some(d, 0);
    } while (d->log_len != before && !strstr(d->log, text));
    return strstr(d->log, text) != NULL;
  }
  while (!strstr(d->log, text)) {
    uint64_t now = now_ms();
    if (now >= end || d->err_fd < 0)
      return strstr(d->log, text) != NULL;
    read_some(d, (int)(end - now));
  }
  return 1;
}

/* The admin endpoint is the last word before " ready (pierctl)" (a socket
 * path on Linux, whatever the Windows daemon names there). */
static void find_admin(test_daemon *d) {
  const char *end = strstr(d->log, " ready (pierctl)"), *p = end;
  if (!end)
    return;
  while (p > d->log && p[-1] != ' ' && p[-1] != '\n')
    p--;
  snprintf(d->admin, sizeof(d->admin), "%.*s", (int)(end - p), p);
}

static int start(test_daemon *d, const char *config_json, const char *backend,
                 const char *log_name) {
  const char *p;
  memset(d, 0, sizeof(*d));
  d->pid = -1;
  d->in_fd = d->err_fd = -1;
  if (write_config(d, config_json) < 0)
    return -1;
  if (log_name)
    snprintf(d->tail, sizeof(d->tail), "%s%s%s", log_name[0] == '/' ? "" : d->dir,
             log_name[0] == '/' ? "" : "/", log_name);
  d->pid = spawn(d, backend, NULL);
  if (d->pid < 0 || !test_daemon_wait_log(d, "pierd ready", 20000))
    return -1;
  for (p = d->log; (p = strstr(p, "listening on ")) && d->nports < 16; p++) {
    const char *colon = strchr(p, ' ') ? strstr(p, " (") : NULL;
    const char *q = p;
    if (!colon)
      break;
    for (q = colon; q > p && q[-1] != ':'; q--) {
    }
    d->ports[d->nports++] = (uint16_t)atoi(q);
  }
  find_admin(d);
  return 0;
}

int test_daemon_start(test_daemon *d, const char *config_json, const char *backend) {
  return start(d, config_json, backend, NULL);
}

int test_daemon_start_file(test_daemon *d, const char *config_json, const char *backend,
                           const char *log_name) {
  return start(d, config_json, backend, log_name);
}

const char *test_daemon_admin(test_daemon *d, int timeout_ms) {
  if (!d->admin[0] && test_daemon_wait_log(d, " ready (pierctl)", timeout_ms))
    find_admin(d);
  return d->admin[0] ? d->admin : NULL;
}

int test_daemon_run_to_exit(test_daemon *d, const char *config_json, const char *backend,
                            const char *extra_arg) {
  int status;
  memset(d, 0, sizeof(*d));
  d->pid = -1;
  d->in_fd = d->err_fd = -1;
  if (write_config(d, config_json) < 0)
    return -1;
  d->pid = spawn(d, backend, extra_arg);
  while (d->err_fd >= 0)
    read_some(d, 1000);
  waitpid(d->pid, &status, 0);
  d->pid = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void test_daemon_command(test_daemon *d, const char *line) {
  if (write(d->in_fd, line, strlen(line)) < 0 || write(d->in_fd, "\n", 1) < 0) {
  }
}

static int wait_exit(test_daemon *d, uint64_t end);

int test_daemon_signal_wait(test_daemon *d, int sig, int timeout_ms) {
  uint64_t end = now_ms() + (uint64_t)timeout_ms;
  if (d->pid <= 0)
    return -1;
  kill(d->pid, sig);
  return wait_exit(d, end);
}

/* Waits for the daemon to exit on its own, reading its log; kills it at end. */
static int wait_exit(test_daemon *d, uint64_t end) {
  int status;
  for (;;) {
    pid_t r = waitpid(d->pid, &status, WNOHANG);
    if (r == d->pid)
      break;
    if (now_ms() >= end) {
      kill(d->pid, SIGKILL);
      waitpid(d->pid, &status, 0);
      d->pid = -1;
      return -1;
    }
    read_some(d, 10);
  }
  while (d->err_fd >= 0)
    read_some(d, 100);
  d->pid = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int test_daemon_quit(test_daemon *d, int timeout_ms) {
  uint64_t end = now_ms() + (uint64_t)timeout_ms;
  if (d->pid <= 0)
    return -1;
  test_daemon_command(d, "quit");
  return wait_exit(d, end);
}

void test_daemon_cleanup(test_daemon *d) {
  char cmd[256];
  if (d->pid > 0) {
    kill(d->pid, SIGKILL);
    waitpid(d->pid, NULL, 0);
    d->pid = -1;
  }
  if (d->in_fd >= 0)
    close(d->in_fd);
  if (d->err_fd >= 0)
    close(d->err_fd);
  d->in_fd = d->err_fd = -1;
  if (d->dir[0] && strncmp(d->dir, "/tmp/pier-test-", 15) == 0) {
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d->dir);
    if (system(cmd) != 0) {
    }
  }
}

/* Appends what fd has to buf (len so far in *len, cut at cap - 1, '\r'
 * dropped); returns 0 at EOF or on an error, 1 while open. */
static int take(int fd, char *buf, size_t cap, size_t *len) {
  char chunk[4096];
  ssize_t n = read(fd, chunk, sizeof(chunk));
  if (n <= 0)
    return n < 0 && errno == EINTR;
  for (ssize_t k = 0; k < n; k++)
    if (chunk[k] != '\r' && *len + 1 < cap)
      buf[(*len)++] = chunk[k];
  buf[*len] = '\0';
  return 1;
}

int test_daemon_pierctl(const char *const args[], char *out, size_t out_cap, char *err,
                        size_t err_cap, int timeout_ms) {
  uint64_t end = now_ms() + (uint64_t)timeout_ms;
  char *argv[40];
  int o[2], e[2], status, n;
  size_t out_len = 0, err_len = 0;
  pid_t pid;
  n = command_words("PIER_TEST_PIERCTL", PIER_BINARY_DIR "/pierctl", argv, 16);
  for (int k = 0; args[k] && n < 39; k++)
    argv[n++] = (char *)args[k];
  argv[n] = NULL;
  out[0] = err[0] = '\0';
  if (pipe2(o, O_CLOEXEC) < 0 || pipe2(e, O_CLOEXEC) < 0)
    return -1;
  pid = fork();
  if (pid == 0) {
    int null = open("/dev/null", O_RDONLY);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(null, STDIN_FILENO);
    dup2(o[1], STDOUT_FILENO);
    dup2(e[1], STDERR_FILENO);
    execvp(argv[0], argv);
    _exit(127);
  }
  close(o[1]);
  close(e[1]);
  struct pollfd p[2] = {{.fd = o[0], .events = POLLIN}, {.fd = e[0], .events = POLLIN}};
  while ((p[0].fd >= 0 || p[1].fd >= 0) && now_ms() < end) {
    if (poll(p, 2, (int)(end - now_ms())) <= 0)
      continue;
    if (p[0].revents && !take(p[0].fd, out, out_cap, &out_len)) {
      close(p[0].fd);
      p[0].fd = -1;
    }
    if (p[1].revents && !take(p[1].fd, err, err_cap, &err_len)) {
      close(p[1].fd);
      p[1].fd = -1;
    }
  }
  for (int k = 0; k < 2; k++)
    if (p[k].fd >= 0)
      close(p[k].fd);
  if (now_ms() >= end) {
    if (waitpid(pid, &status, WNOHANG) != pid) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
  } else {
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
