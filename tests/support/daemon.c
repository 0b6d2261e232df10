/* pierd as a child process for end-to-end tests. */
#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static char *subst(const char *in) {
  const char *keys[] = {"@PLUGINS@", "@TESTPLUGINS@"};
  const char *vals[] = {PIER_BINARY_DIR "/plugins", PIER_BINARY_DIR "/tests/plugins"};
  size_t cap = strlen(in) * 4 + 1024, n = 0;
  char *out = malloc(cap);
  while (*in) {
    int hit = 0;
    for (int k = 0; k < 2; k++) {
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

static void read_some(test_daemon *d, int timeout_ms) {
  struct pollfd p = {.fd = d->err_fd, .events = POLLIN};
  if (d->err_fd < 0 || poll(&p, 1, timeout_ms) <= 0)
    return;
  if (sizeof(d->log) - 1 - d->log_len < 4096) {
    /* Full: keep the newer half, so a read of 0 bytes always means EOF. */
    size_t keep = d->log_len / 2;
    memmove(d->log, d->log + d->log_len - keep, keep);
    d->log_len = keep;
    d->log[keep] = '\0';
  }
  ssize_t n = read(d->err_fd, d->log + d->log_len, sizeof(d->log) - 1 - d->log_len);
  if (n > 0) {
    d->log_len += (size_t)n;
    d->log[d->log_len] = '\0';
    /* Mirror the daemon's log so a failing test shows it. */
    if (write(STDERR_FILENO, d->log + d->log_len - n, (size_t)n) < 0) {
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
  pid = fork();
  if (pid == 0) {
    dup2(in[0], STDIN_FILENO);
    dup2(err[1], STDERR_FILENO);
    dup2(err[1], STDOUT_FILENO);
    execl(PIER_BINARY_DIR "/pierd", "pierd", "--config", d->config, "--io-backend", backend,
          extra, (char *)NULL);
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
  while (!strstr(d->log, text)) {
    uint64_t now = now_ms();
    if (now >= end || d->err_fd < 0)
      return strstr(d->log, text) != NULL;
    read_some(d, (int)(end - now));
  }
  return 1;
}

int test_daemon_start(test_daemon *d, const char *config_json, const char *backend) {
  const char *p;
  memset(d, 0, sizeof(*d));
  d->pid = -1;
  d->in_fd = d->err_fd = -1;
  if (write_config(d, config_json) < 0)
    return -1;
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
  return 0;
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

int test_daemon_signal_wait(test_daemon *d, int sig, int timeout_ms) {
  uint64_t end = now_ms() + (uint64_t)timeout_ms;
  int status;
  if (d->pid <= 0)
    return -1;
  kill(d->pid, sig);
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
