/* Hot reload as one state machine, on the main thread, one at a time:
 *
 *   load+check ──► quiesce ──► hand-off ──► resume
 *        │            │            │
 *        └─ refused   └─ timeout   └─ rollback ──► resume
 *
 * load+check: the new file is loaded from a private copy and its descriptor
 *   checked (ABI, and the same plugin name as the running version); on
 *   failure nothing was touched.
 * quiesce: the plugin is paused between two callbacks (events are held from
 *   now on, and their sessions stop being read past the backlog limits).
 * hand-off: the old version's on_unload fills a state blob; its timers are
 *   cancelled; the new version gets a generation never used before and its
 *   on_load gets the blob and the config text.
 * rollback (the new on_load failed): the new version's timers are cancelled
 *   and its image closed; the old image, its config text and its on_load
 *   come back (with the same blob and the next unused generation, so nothing
 *   queued under an earlier generation, nor by the failed one, ever runs).
 * resume: held events go to whichever version now serves. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/host_internal.h"

static int call_on_load(host_plugin *p, unsigned gen, const pier_state *st) {
  pier_load_args args = {.size = sizeof(args),
                         .host = &p->api,
                         .config_json = p->config_json,
                         .state = st->data,
                         .state_len = st->len,
                         .generation = gen};
  atomic_store(&p->generation, gen);
  atomic_store(&p->wants_send, p->img.cb.on_send != NULL);
  return p->img.cb.on_load ? p->img.cb.on_load(&args) : 0;
}

/* Counts one reload's outcome (main thread; /metrics reads it anywhere). */
static void count(_Atomic uint64_t *outcome) {
  atomic_fetch_add_explicit(outcome, 1, memory_order_relaxed);
}

/* How long a reload held p's events: from the start of the quiesce to the
 * resume. */
static void paused_since(host_plugin *p, uint64_t t0_ns) {
  stats_observe(&p->reload_pause, os_clock_ns() - t0_ns, 1);
}

static const char *rc_text(int rc) { return rc < 0 ? os_strerror(-rc) : "error"; }

/* Step 4 (failure): the old version and its config text come back. Returns
 * the old on_load's result. */
static int rollback(host_plugin *p, plugin_image *fresh, const plugin_image *old,
                    char *old_config, const pier_state *st, const pmetrics_mark *mk) {
  int rc;
  timer_cancel_match(p->h, p, TIMERS_OF_CODE); /* what the failed on_load started */
  cluster_reload_rollback(p); /* and the subscriptions it (or on_unload) changed */
  pmetrics_rollback(p, mk);   /* and the metrics and series it declared */
  p->img = *old;
  if (old_config != p->config_json) {
    free(p->config_json);
    p->config_json = old_config;
  }
  loader_close(fresh);
  rc = call_on_load(p, ++p->last_gen, st);
  stats_show_serving(p);
  return rc;
}

int host_reload(host *h, const char *name, const char *config_json, char *msg, size_t len) {
  host_plugin *p = host_find_plugin(h, name);
  plugin_image fresh, old;
  pier_state state = {NULL, 0};
  pmetrics_mark mk;
  char err[1024], oldver[64];
  char *old_config, *new_config = NULL;
  unsigned old_gen, gen;
  uint64_t t0, t1;
  size_t held;
  int rc, rc2;

  if (!p) {
    snprintf(msg, len, "reload %s: no such plugin", name);
    return -ENOENT;
  }
  if (!h->started || h->stopped) {
    snprintf(msg, len, "reload %s: the daemon is not running", name);
    return -ECANCELED;
  }
  old_gen = atomic_load(&p->generation);
  /* Step 1: the new file must load and pass every check before the running
   * version is touched. */
  rc = loader_open(p->cfg, &fresh, err, sizeof(err));
  if (rc == 0 && strcmp(fresh.name, p->img.name) != 0) {
    snprintf(err, sizeof(err), "%s: its descriptor names plugin \"%s\", not \"%s\"",
             p->cfg->resolved_path, fresh.name, p->img.name);
    loader_close(&fresh);
    rc = -EINVAL;
  }
  if (rc < 0) {
    snprintf(msg, len, "reload %s failed at load: %s; generation %u keeps serving", name, err,
             old_gen);
    snprintf(p->last_failure, sizeof(p->last_failure), "%s", msg);
    count(&p->reloads_failed);
    return rc;
  }
  if (config_json && strcmp(config_json, p->config_json) != 0 &&
      !(new_config = strdup(config_json))) {
    loader_close(&fresh);
    snprintf(msg, len, "reload %s failed at load: out of memory; generation %u keeps serving",
             name, old_gen);
    count(&p->reloads_failed);
    return -ENOMEM;
  }
  /* Step 2: quiesce at a callback boundary. */
  t0 = os_clock_ns();
  rc = gate_quiesce(p);
  if (rc < 0) {
    gate_resume(p);
    paused_since(p, t0);
    count(&p->reloads_failed);
    loader_close(&fresh);
    free(new_config);
    snprintf(msg, len,
             "reload %s failed at quiesce: a callback ran longer than %d ms; generation %u keeps "
             "serving",
             name, QUIESCE_TIMEOUT_MS, old_gen);
    snprintf(p->last_failure, sizeof(p->last_failure), "%s", msg);
    return rc;
  }
  /* Step 3: hand over. Timers and jobs of the old code end here. What the
   * two versions do to the plugin's bus subscriptions from here on holds
   * only if the reload succeeds. */
  cluster_reload_begin(p);
  if (p->img.cb.on_unload)
    p->img.cb.on_unload(&state);
  timer_cancel_match(h, p, TIMERS_OF_CODE);
  old = p->img;
  snprintf(oldver, sizeof(oldver), "%s", old.version);
  old_config = p->config_json;
  if (new_config)
    p->config_json = new_config;
  p->img = fresh; /* shown as serving once its on_load has returned 0 */
  gen = ++p->last_gen;
  pmetrics_mark_take(p, &mk);
  rc = call_on_load(p, gen, &state);
  if (rc != 0) {
    rc2 = rollback(p, &fresh, &old, old_config, &state, &mk);
    free(state.data);
    if (rc2 != 0) {
      char why[160];
      snprintf(why, sizeof(why), "its on_load failed (%d) when restored after a failed reload",
               rc2);
      gate_quarantine(p, why);
    }
    gate_resume(p);
    paused_since(p, t0);
    count(rc2 == 0 ? &p->reloads_rolled_back : &p->reloads_quarantined);
    snprintf(msg, len,
             "reload %s failed at on_load: the new version returned %d (%s); %s (version %s) "
             "restored as generation %u%s",
             name, rc, rc_text(rc), p->img.name, oldver, atomic_load(&p->generation),
             rc2 == 0 ? "" : ", but its own on_load failed too: quarantined");
    snprintf(p->last_failure, sizeof(p->last_failure), "%s", msg);
    return rc < 0 ? rc : -EINVAL;
  }
  cluster_reload_commit(p);
  stats_show_serving(p);
  if (old_config != p->config_json)
    free(old_config);
  loader_close(&old);
  free(state.data);
  (void)os_file_id_get(p->cfg->resolved_path, &p->file);
  p->last_failure[0] = '\0';
  if (atomic_exchange(&p->quarantined, 0))
    log_info("plugin \"%s\": quarantine lifted by the reload", name);
  atomic_store(&p->failures, 0);
  held = gate_resume(p);
  t1 = os_clock_ns();
  stats_observe(&p->reload_pause, t1 - t0, 1);
  count(&p->reloads_ok);
  snprintf(msg, len,
           "reloaded %s: generation %u, version %s (was %s), paused %.3f ms, %zu event%s held",
           name, gen, p->img.version, oldver, (double)(t1 - t0) / 1e6, held,
           held == 1 ? "" : "s");
  return 0;
}
