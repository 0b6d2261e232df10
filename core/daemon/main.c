/* pierd: the console daemon. Loads server.json, starts the plugin host, then
 * serves console commands on stdin and signals until told to stop:
 * SIGINT/SIGTERM (or `quit`) stop accepting, disconnect every session (each
 * plugin hears on_disconnected), flush pending sends up to a deadline, unload
 * the plugins and exit 0. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "base/log.h"
#include "daemon/admin.h"
#include "daemon/console.h"
#include "daemon/crash.h"
#include "daemon/reconfig.h"
#include "daemon/watch.h"
#include "host/config.h"
#include "host/host.h"

#define DEFAULT_CONFIG "config/server.json"

static void usage(FILE *out) {
  fprintf(out,
          "usage: pierd [--config PATH] [--check] [--io-backend auto|io_uring|epoll]\n"
          "  --config PATH     server config (default " DEFAULT_CONFIG ")\n"
          "  --check           validate the config and plugins, then exit 0 or 1\n"
          "  --io-backend B    override the config's io_backend\n"
          "  --help            this text\n"
          "Console commands on stdin: type `help` once running.\n");
}

static int admin_exec(void *ctx, const char *line, FILE *out) {
  return console_exec(ctx, line, out);
}

int main(int argc, char **argv) {
  static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                       {"check", no_argument, NULL, 't'},
                                       {"io-backend", required_argument, NULL, 'b'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  const char *config = DEFAULT_CONFIG, *backend = NULL;
  int check = 0, c, rc, sfd, stdin_open = 1, quit = 0;
  static char err[CFG_ERR_LEN];
  cfg_server *cfg;
  host *h;
  sigset_t mask;
  log_level lvl;
  console con;
  watch *wt = NULL;
  admin *adm = NULL;

  while ((c = getopt_long(argc, argv, "c:tb:h", opts, NULL)) != -1) {
    switch (c) {
    case 'c':
      config = optarg;
      break;
    case 't':
      check = 1;
      break;
    case 'b':
      backend = optarg;
      if (strcmp(backend, "auto") && strcmp(backend, "io_uring") && strcmp(backend, "epoll")) {
        fprintf(stderr, "pierd: --io-backend: expected auto, io_uring or epoll, got \"%s\"\n",
                backend);
        return 1;
      }
      break;
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 1;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "pierd: unexpected argument \"%s\"\n", argv[optind]);
    usage(stderr);
    return 1;
  }

  crash_install();
  rc = cfg_load_file(config, &cfg, err, sizeof(err));
  if (rc < 0) {
    /* One log line per problem, as the config loader found them. */
    for (const char *line = err, *nl; *line; line = nl ? nl + 1 : "") {
      nl = strchr(line, '\n');
      log_error("%.*s", nl ? (int)(nl - line) : (int)strlen(line), line);
    }
    if (check)
      fprintf(stderr, "pierd: configuration %s is invalid\n", config);
    return 1;
  }
  if (log_level_parse(cfg_log_level_name(cfg->log_level), &lvl) == 0)
    log_set_level(lvl);

  /* Signals go to a signalfd read by this thread; workers never see them. */
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &mask, NULL);
  signal(SIGPIPE, SIG_IGN);
  sfd = signalfd(-1, &mask, SFD_CLOEXEC);

  rc = host_create(cfg, backend, check, &h);
  if (rc < 0) {
    if (check)
      fprintf(stderr, "pierd: configuration %s is invalid\n", config);
    cfg_free(cfg);
    return 1;
  }
  crash_note_plugins(h);
  if (check) {
    fprintf(stderr, "pierd: configuration %s is valid (%zu plugins, %zu listeners)\n", config,
            cfg->nplugins, cfg->nlisteners);
    host_destroy(h);
    cfg_free(cfg);
    return 0;
  }
  /* The admin socket first: a second pierd on the same config stops here,
   * before it runs any plugin code. */
  if (admin_open(cfg->admin_socket, &adm, err, sizeof(err)) < 0) {
    log_error("%s", err);
    host_destroy(h);
    cfg_free(cfg);
    return 1;
  }
  rc = host_start(h);
  if (rc < 0) {
    log_error("pierd: not started: %s", strerror(-rc));
    admin_close(adm);
    host_destroy(h);
    cfg_free(cfg);
    return 1;
  }
  log_info("pierd ready: %zu listener%s, %zu plugin%s, %s backend, %u worker%s; type `help`",
           cfg->nlisteners, cfg->nlisteners == 1 ? "" : "s", cfg->nplugins,
           cfg->nplugins == 1 ? "" : "s", net_backend_name(host_net(h)), cfg->workers,
           cfg->workers == 1 ? "" : "s");

  console_init(&con, h);
  if (watch_open(cfg, &wt) < 0)
    log_error("watch: cannot start inotify; plugin files are not watched");
  while (!quit) {
    struct pollfd p[3 + ADMIN_MAX_POLLFDS] = {{.fd = sfd, .events = POLLIN},
                                              {.fd = stdin_open ? 0 : -1, .events = POLLIN},
                                              {.fd = watch_fd(wt), .events = POLLIN}};
    int nadm = admin_pollfds(adm, p + 3, ADMIN_MAX_POLLFDS);
    if (poll(p, 3 + (nfds_t)nadm, watch_timeout_ms(wt)) < 0) {
      if (errno == EINTR)
        continue;
      log_error("poll: %s", strerror(errno));
      break;
    }
    if (p[0].revents & POLLIN) {
      struct signalfd_siginfo si;
      if (read(sfd, &si, sizeof(si)) == sizeof(si)) {
        if (si.ssi_signo == SIGHUP) {
          reconfig_apply(h, cfg);
        } else {
          log_info("%s: shutting down", si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
          quit = 1;
        }
      }
    }
    if (!quit && nadm > 0 &&
        admin_handle_ready(adm, p + 3, nadm, admin_exec, &con) == CONSOLE_QUIT) {
      log_info("quit (admin socket): shutting down");
      quit = 1;
    }
    if (p[2].revents & POLLIN)
      watch_read(wt);
    if (!quit)
      watch_run_due(wt, h);
    crash_note_plugins(h); /* generations may have changed */
    if (!quit && (p[1].revents & (POLLIN | POLLHUP))) {
      int r = console_read(&con, 0, stdout);
      if (r == CONSOLE_EOF)
        stdin_open = 0; /* no console (e.g. started in the background): keep serving */
      else if (r == CONSOLE_QUIT) {
        log_info("quit: shutting down");
        quit = 1;
      }
    }
  }
  watch_close(wt);
  host_stop(h);
  admin_close(adm); /* after the sessions are closed: `pierctl quit` returns when done */
  {
    net_stats st;
    net_get_stats(host_net(h), &st);
    log_info("pierd stopped: %" PRIu64 " session%s served", st.accepted, st.accepted == 1 ? "" : "s");
  }
  host_destroy(h);
  cfg_free(cfg);
  close(sfd);
  return 0;
}
