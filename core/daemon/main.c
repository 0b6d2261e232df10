/* pierd: the console daemon. Loads server.json, starts the plugin host
 * (dropping root between binding and the first on_load), tells a service
 * manager it is ready (sd_notify), then serves console commands on stdin,
 * the admin channel, the file watch and signals until told to stop:
 * SIGINT/SIGTERM (Ctrl+C, Ctrl+Break or closing the console on Windows) or
 * `quit` stop accepting, let open sessions finish for up to
 * drain_timeout_ms (a second request cuts that short), disconnect every
 * session (each plugin hears on_disconnected), flush pending sends up to a
 * deadline, unload the plugins and exit 0. The waiting itself is the
 * platform's (os/wait.h); what each source means is decided here. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifndef _WIN32
#include <unistd.h>
#endif

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
#include "os/notify.h"
#include "os/os.h"
#include "os/path.h"
#include "os/priv.h"
#include "os/signals.h"
#include "os/wait.h"

#define DEFAULT_CONFIG "config/server.json"

static void usage(FILE *out) {
  fprintf(out,
          "usage: pierd [--config PATH] [--check] [--io-backend B] [--user NAME] [--version]\n"
          "  --config PATH     server config (default " DEFAULT_CONFIG ")\n"
          "  --check           validate the config and plugins, then exit 0 or 1\n"
          "  --io-backend B    override the config's io_backend (%s)\n"
          "  --user NAME       override the config's user (POSIX)\n"
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

/* A stop request, and the drain it may start: the first one closes the
 * listeners (new connections are refused) and, with drain_timeout_ms, lets
 * open sessions go on until they end or the time is up; a second request
 * during the drain ends it at once. Returns 1 when serving should end now. */
typedef struct drain {
  int active;
  uint64_t deadline_ms;
} drain;

static int stop_requested(host *h, const cfg_server *cfg, drain *d) {
  net_stats st;
  if (d->active) {
    log_info("second stop request: ending the drain");
    return 1;
  }
  host_set_draining(h); /* not ready from now on */
  (void)os_notify("STOPPING=1");
  if (cfg->drain_timeout_ms == 0)
    return 1;
  (void)net_stop_accepting(host_net(h));
  net_get_stats(host_net(h), &st);
  if (st.sessions == 0)
    return 1;
  d->active = 1;
  d->deadline_ms = os_clock_ms() + cfg->drain_timeout_ms;
  log_info("draining: %" PRIu64 " session%s open, waiting up to %u ms for them to end "
           "(stop again to end it now)",
           st.sessions, st.sessions == 1 ? "" : "s", cfg->drain_timeout_ms);
  return 0;
}

/* During a drain: 1 once every session is gone or the time is up. */
static int drain_done(host *h, const drain *d) {
  net_stats st;
  if (!d->active)
    return 0;
  net_get_stats(host_net(h), &st);
  if (st.sessions == 0) {
    log_info("drain: every session ended");
    return 1;
  }
  if (os_clock_ms() >= d->deadline_ms) {
    log_info("drain: drain_timeout_ms reached with %" PRIu64 " session%s open; closing them",
             st.sessions, st.sessions == 1 ? "" : "s");
    return 1;
  }
  return 0;
}

/* While draining, how long the wait may last: sessions are counted again
 * every 100 ms (they end on the workers, which do not wake this thread). */
#define DRAIN_POLL_MS 100

/* Serves the console, the admin channel, the file watch and the signals
 * until one of them says quit (and a drain ended) or the wait itself fails.
 * Sends WATCHDOG=1 every os_notify_watchdog_ms() while it runs. */
static void serve(host *h, const cfg_server *cfg, admin *adm) {
  console con, ctl;
  os_conin *in = NULL;
  watch *wt = NULL;
  int quit = 0;
  drain dr = {0, 0};
  unsigned wd_ms = os_notify_watchdog_ms();
  uint64_t wd_next = os_clock_ms() + wd_ms;

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
    int tmo = min_timeout(watch_timeout_ms(wt), admin_timeout_ms(adm));
    if (wd_ms) {
      uint64_t now = os_clock_ms();
      tmo = min_timeout(tmo, now >= wd_next ? 0 : (int)(wd_next - now));
    }
    if (dr.active)
      tmo = min_timeout(tmo, DRAIN_POLL_MS);
    rc = os_wait(it, n, tmo);
    if (wd_ms && os_clock_ms() >= wd_next) {
      /* From this loop, not a thread of its own: a main loop that hangs
       * stops the pings, and the manager restarts pierd. */
      (void)os_notify("WATCHDOG=1");
      wd_next = os_clock_ms() + wd_ms;
    }
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
        quit = stop_requested(h, cfg, &dr);
      }
    }
    if (!quit && na > 0 &&
        admin_handle_ready(adm, it + ia, na, admin_exec, &ctl) == CONSOLE_QUIT) {
      log_info("quit (%s): shutting down", os_ipc_noun);
      quit = stop_requested(h, cfg, &dr);
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
        quit = stop_requested(h, cfg, &dr);
      }
    }
    if (!quit)
      quit = drain_done(h, &dr);
  }
  watch_close(wt);
  os_conin_close(in);
}

/* Who the plugins run as (POSIX): the account to become once the listeners
 * are bound, and the admin socket to hand to it first. */
typedef struct privs {
  const char *user;   /* --user, else the config's; NULL: none given */
  const cfg_server *cfg;
  os_account acct;
  int change;         /* become acct in the bound hook */
} privs;

/* Decides before anything starts, so a wrong account stops pierd early:
 * root without "user" drops to "nobody" (nginx's default) with a warning,
 * "root" keeps root only when asked for by name; not root, the only user
 * that works is the one pierd already is. Returns 0 or -1 (logged). */
static int privs_plan(privs *pv) {
  char err[256];
  const char *user = pv->user;
  if (!os_is_root()) {
    /* Only the account pierd already runs as "works" without root. */
    if (user && os_account_lookup(user, pv->cfg->group, &pv->acct, err, sizeof(err)) < 0) {
      log_error("pierd: not started: %s", err);
      return -1;
    }
    if (pv->cfg->group) {
      log_error("pierd: not started: cannot switch to group \"%s\": pierd is not running as "
                "root", pv->cfg->group);
      return -1;
    }
    if (user && pv->acct.uid != os_current_uid()) {
      log_error("pierd: not started: cannot switch to user \"%s\": pierd is not running as "
                "root", user);
      return -1;
    }
    return 0;
  }
  if (!user) {
    log_warn("running as root without \"user\" in the config: plugins will run as "
             "\"nobody\" (set \"user\", or \"user\": \"root\" to keep root)");
    user = "nobody";
  }
  if (os_account_lookup(user, pv->cfg->group, &pv->acct, err, sizeof(err)) < 0) {
    log_error("pierd: not started: %s", err);
    return -1;
  }
  if (pv->acct.uid == 0 && !pv->cfg->group) {
    log_warn("\"user\": \"root\": plugins run as root");
    return 0;
  }
  pv->change = 1;
  return 0;
}

static int privs_drop(void *arg) {
  privs *pv = arg;
  char err[256];
  int rc;
  if (!pv->change)
    return 0;
  /* The admin socket was made by root: pierctl run as the new user must
   * reach it. (Its directory stays root's, so the socket is left behind at
   * exit and cleared as stale at the next start.) */
  if (pv->cfg->admin_socket && (rc = os_account_chown(pv->cfg->admin_socket, &pv->acct)) < 0 &&
      rc != -ENOSYS && rc != -ENOENT)
    log_warn("cannot give %s to %s: %s", pv->cfg->admin_socket, pv->acct.user, os_strerror(-rc));
  /* The log file root opened: the account reopens it after a rotation. */
  if (pv->cfg->log_file && (rc = os_account_chown(pv->cfg->log_file, &pv->acct)) < 0 &&
      rc != -ENOSYS)
    log_warn("cannot give %s to %s: %s", pv->cfg->log_file, pv->acct.user, os_strerror(-rc));
  rc = os_account_become(&pv->acct, err, sizeof(err));
  if (rc < 0) {
    log_error("cannot drop privileges to %s: %s", pv->acct.user, err);
    return rc;
  }
  log_info("running as user %s (uid %u), group %s (gid %u)", pv->acct.user, pv->acct.uid,
           pv->acct.group, pv->acct.gid);
#ifndef _WIN32
  if (pv->cfg->log_file) {
    /* A reopen after a rename creates the file anew, as the account. */
    char dir[OS_PATH_MAX];
    size_t n = os_path_dir_len(pv->cfg->log_file);
    snprintf(dir, sizeof(dir), "%.*s", (int)n, n ? pv->cfg->log_file : ".");
    if (access(dir, W_OK | X_OK) < 0)
      log_warn("log_file: %s is not writable by %s: reopen-log after a rename will fail "
               "(give the directory to %s)", dir, pv->acct.user, pv->acct.user);
  }
#endif
  return 0;
}

int main(int argc, char **argv) {
  static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                       {"check", no_argument, NULL, 't'},
                                       {"io-backend", required_argument, NULL, 'b'},
                                       {"user", required_argument, NULL, 'u'},
                                       {"help", no_argument, NULL, 'h'},
                                       {"version", no_argument, NULL, 'V'},
                                       {NULL, 0, NULL, 0}};
  const char *config = DEFAULT_CONFIG, *backend = NULL, *user_opt = NULL;
  privs pv;
  int check = 0, c, rc;
  static char err[CFG_ERR_LEN];
  cfg_server *cfg;
  host *h;
  log_level lvl;
  admin *adm = NULL;
  metrics_http *mh = NULL;

  while ((c = getopt_long(argc, argv, "c:tb:u:h", opts, NULL)) != -1) {
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
    case 'u':
#ifdef _WIN32
      fprintf(stderr, "pierd: --user: not supported on Windows\n");
      return 1;
#endif
      user_opt = optarg;
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
  /* Before any plugin code, even a constructor run by dlopen: the manager's
   * variables leave the environment here. */
  (void)os_notify_open();

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
  memset(&pv, 0, sizeof(pv));
  pv.cfg = cfg;
  pv.user = user_opt ? user_opt : cfg->user;
  if (privs_plan(&pv) < 0) {
    host_destroy(h);
    cfg_free(cfg);
    return 1;
  }
  /* The admin socket first: a second pierd on the same config stops here,
   * before it runs any plugin code. */
  if (admin_open(cfg->admin_socket, &adm, err, sizeof(err)) < 0) {
    log_error("%s", err);
    host_destroy(h);
    cfg_free(cfg);
    return 1;
  }
  host_set_bound_hook(h, privs_drop, &pv);
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
  (void)os_notify("READY=1");

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
  os_notify_close();
  os_signals_close();
  return 0;
}
