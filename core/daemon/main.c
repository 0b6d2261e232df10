/* pierd: the console daemon. Loads server.json, starts the plugin host, then
 * serves console commands on stdin, the admin channel, the file watch and
 * signals until told to stop: SIGINT/SIGTERM (Ctrl+C, Ctrl+Break or closing
 * the console on Windows) or `quit` stop accepting, disconnect every session
 * (each plugin hears on_disconnected), flush pending sends up to a deadline,
 * unload the plugins and exit 0. The waiting itself is the platform's
 * (os/wait.h); what each source means is decided here. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "daemon/admin.h"
#include "daemon/console.h"
#include "daemon/crash.h"
#include "daemon/metrics_http.h"
#include "daemon/reconfig.h"
#include "daemon/watch.h"
#include "host/config.h"
#include "host/host.h"
#include "os/conin.h"
#include "os/fswatch.h"
#include "os/ipc.h"
#include "os/os.h"
#include "os/signals.h"
#include "os/wait.h"

#define DEFAULT_CONFIG "config/server.json"

static void usage(FILE *out) {
  fprintf(out,
          "usage: pierd [--config PATH] [--check] [--io-backend B] [--version]\n"
          "  --config PATH     server config (default " DEFAULT_CONFIG ")\n"
          "  --check           validate the config and plugins, then exit 0 or 1\n"
          "  --io-backend B    override the config's io_backend (%s)\n"
          "  --version         print \"pierd VERSION\" and exit\n"
          "  --help            this text\n"
          "Console commands on stdin: type `help` once running.\n",
          io_backend_names);
}

static int admin_exec(void *ctx, const char *line, FILE *out) {
  return console_exec(ctx, line, out);
}

/* The shorter of two wait limits (-1: none). */
static int min_timeout(int a, int b) {
  if (a < 0)
    return b;
  return b < 0 || a < b ? a : b;
}

/* Serves the console, the admin channel, the file watch and the signals
 * until one of them says quit or the wait itself fails. */
static void serve(host *h, const cfg_server *cfg, admin *adm) {
  console con, ctl;
  os_conin *in = NULL;
  watch *wt = NULL;
  int quit = 0;

  console_init(&con, h, "console");
  console_init(&ctl, h, "pierctl");
  if (os_conin_open(&in) < 0)
    in = NULL; /* no stdin at all: serve without a console */
  if (watch_open(cfg, &wt) < 0)
    log_error("watch: cannot start %s; plugin files are not watched", os_fswatch_name);
  while (!quit) {
    os_wait_item it[OS_WAIT_MAX];
    int n = 0, nw, na, isig, iin = -1, iw, ia, rc;

    isig = n;
    os_signals_item(&it[n++]);
    if (in) {
      iin = n;
      os_conin_item(in, &it[n++]);
    }
    iw = n;
    nw = watch_wait_items(wt, it + n, OS_WAIT_MAX - n - ADMIN_MAX_WAIT_ITEMS);
    n += nw;
    ia = n;
    na = admin_wait_items(adm, it + n, OS_WAIT_MAX - n);
    n += na;
    rc = os_wait(it, n, min_timeout(watch_timeout_ms(wt), admin_timeout_ms(adm)));
    if (rc == -EINTR)
      continue;
    if (rc < 0) {
      log_error(OS_WAIT_CALL ": %s", os_strerror(-rc));
      break;
    }
    if (os_wait_ready(&it[isig])) {
      const char *name;
      int sig = os_signals_take(&name);
      if (sig == OS_SIG_RECONFIG) {
        reconfig_apply(h, cfg);
      } else if (sig == OS_SIG_REOPEN) {
        console_reopen_log(name);
      } else if (sig == OS_SIG_QUIT) {
        log_info("%s: shutting down", name);
        quit = 1;
      }
    }
    if (!quit && na > 0 &&
        admin_handle_ready(adm, it + ia, na, admin_exec, &ctl) == CONSOLE_QUIT) {
      log_info("quit (%s): shutting down", os_ipc_noun);
      quit = 1;
    }
    for (int i = 0; i < nw; i++)
      if (os_wait_ready(&it[iw + i])) {
        watch_read(wt);
        break;
      }
    if (!quit)
      watch_run_due(wt, h);
    crash_note_plugins(h); /* generations may have changed */
    if (!quit && iin >= 0 && os_wait_ready(&it[iin])) {
      char buf[OS_CONIN_CHUNK];
      long r = os_conin_read(in, buf, sizeof(buf));
      if (r == 0) {
        os_conin_close(in); /* no console (e.g. started in the background): keep serving */
        in = NULL;
      } else if (r > 0 && console_feed(&con, buf, (size_t)r, stdout) == CONSOLE_QUIT) {
        log_info("quit: shutting down");
        quit = 1;
      }
    }
  }
  watch_close(wt);
  os_conin_close(in);
}

int main(int argc, char **argv) {
  static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                       {"check", no_argument, NULL, 't'},
                                       {"io-backend", required_argument, NULL, 'b'},
                                       {"help", no_argument, NULL, 'h'},
                                       {"version", no_argument, NULL, 'V'},
                                       {NULL, 0, NULL, 0}};
  const char *config = DEFAULT_CONFIG, *backend = NULL;
  int check = 0, c, rc;
  static char err[CFG_ERR_LEN];
  cfg_server *cfg;
  host *h;
  log_level lvl;
  admin *adm = NULL;
  metrics_http *mh = NULL;

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
      if (!io_backend_known(backend)) {
        fprintf(stderr, "pierd: --io-backend: expected %s, got \"%s\"\n", io_backend_names,
                backend);
        return 1;
      }
      break;
    case 'h':
      usage(stdout);
      return 0;
    case 'V':
      printf("pierd %s\n", PIER_VERSION);
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
  log_set_json(cfg->log_format == CFG_LOG_FORMAT_JSON);
  /* Here, before any thread and before privileges could be given up. The
   * config errors above went to stderr: the file was not known yet. */
  if (!check && cfg->log_file) {
    rc = log_open_file(cfg->log_file);
    if (rc < 0) {
      log_error("log_file %s: %s", cfg->log_file, os_strerror(-rc));
      cfg_free(cfg);
      return 1;
    }
    fprintf(stderr, "pierd: logging to %s\n", cfg->log_file);
  }

  /* Before any thread exists: signals (console control events) go to this
   * thread's wait loop; workers never see them. */
  (void)os_signals_open();

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
    log_error("pierd: not started: %s", os_strerror(-rc));
    admin_close(adm);
    host_destroy(h);
    cfg_free(cfg);
    return 1;
  }
  /* A metrics port that cannot be bound stops pierd as a listener's would;
   * a build without an HTTP server says so and serves on (-ENOTSUP). */
  if (cfg->metrics_address) {
    rc = metrics_http_start(h, cfg->metrics_address, cfg->metrics_port, &mh);
    if (rc < 0 && rc != -ENOTSUP) {
      log_error("pierd: not started: the metrics listener failed");
      host_stop(h);
      admin_close(adm);
      host_destroy(h);
      cfg_free(cfg);
      return 1;
    }
  }
  log_info("pierd ready: %zu listener%s, %zu plugin%s, %s backend, %u worker%s; type `help`",
           cfg->nlisteners, cfg->nlisteners == 1 ? "" : "s", cfg->nplugins,
           cfg->nplugins == 1 ? "" : "s", net_backend_name(host_net(h)), cfg->workers,
           cfg->workers == 1 ? "" : "s");

  serve(h, cfg, adm);
  metrics_http_stop(mh); /* scrapes see the drain; none runs once the host stops */
  host_stop(h);
  admin_close(adm); /* after the sessions are closed: `pierctl quit` returns when done */
  {
    net_stats st;
    net_get_stats(host_net(h), &st);
    log_info("pierd stopped: %" PRIu64 " session%s served", st.accepted, st.accepted == 1 ? "" : "s");
  }
  host_destroy(h);
  cfg_free(cfg);
  os_signals_close();
  return 0;
}
