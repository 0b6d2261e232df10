/* Private structures of the plugin host, shared by its files: host.c
 * (lifecycle and the net glue), gate.c (event delivery: the reload gate,
 * held queues, strands and the backlog that pauses reading), timer.c (plugin
 * timers), api.c (the pier_host table), reload.c (the reload state machine)
 * and view.c (console views). Nothing here is visible to plugins. */
#ifndef PIER_HOST_INTERNAL_H
#define PIER_HOST_INTERNAL_H

#include "os/os.h"
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "base/log.h"
#include "os/file.h"
#include "host/cluster.h"
#include "host/config.h"
#include "host/host.h"
#include "host/loader.h"
#include "host/strand.h"
#include "net/net.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* Posted jobs a plugin may have outstanding (not yet run): post() answers
 * -EAGAIN past this. */
#define HOST_POST_MAX 65536u
/* Timers a plugin may have (started, not yet ended): timer_start answers
 * -EAGAIN past this. */
#define HOST_TIMER_MAX 65536u
/* Chains of the id index of the host's timers (a power of two). */
#define HOST_TIMER_BUCKETS 4096u
/* How long a reload waits for a running callback to return. */
#define QUIESCE_TIMEOUT_MS 2000

typedef struct host_plugin host_plugin;
typedef struct host_timer host_timer;

typedef struct host_listener {
  host *h;
  host_plugin *p;
  const cfg_listener *cfg;
  net_endpoint ep;
  net_listener *nl;
  _Atomic long sessions;
  _Atomic uint64_t accepted; /* sessions that reached on_connected (next to sessions: one line) */
} host_listener;

typedef enum {
  EV_CONNECTED,
  EV_RECV,
  EV_SEND,
  EV_DISCONNECTED,
  EV_TICK,
  EV_TIMER,
  EV_POST,
  EV_MESSAGE, /* a bus message (arg: its subscription) */
  EV_REPLY,   /* a request's outcome */
  EV_NODE     /* a node came or went (data: its name, n: up) */
} ev_type;

/* One event for a plugin, as it happens (data valid during delivery only). */
typedef struct ev {
  ev_type type;
  unsigned gen;  /* EV_TIMER/EV_POST: generation whose code fn belongs to */
  pier_sid sid;
  session *s;    /* the session, for events made on its worker that pause reading */
  pier_reason reason;
  size_t n;      /* bytes of data, bytes sent, or the tick's time */
  const char *data;
  void *user;
  pier_timer_fn fn;
  void *arg;
  host_timer *timer;
  const char *subject;  /* EV_MESSAGE */
  const char *reply_to; /* EV_MESSAGE, or NULL */
  pier_reply_fn reply_fn; /* EV_REPLY, with arg */
  int status;             /* EV_REPLY */
} ev;

/* An event kept for later (held during a reload, or queued on a strand),
 * with its own copy of the data. Its bytes count in the plugin's backlog and,
 * when `paced`, in its session's, until it is released. */
typedef struct ev_job {
  strand_job base;
  struct ev_job *next_held;
  host_plugin *p;
  ev_type type;
  unsigned gen;
  pier_sid sid;
  pier_reason reason;
  size_t n;
  void *user;
  pier_timer_fn fn;
  void *arg;
  host_timer *timer;
  pier_reply_fn reply_fn;
  int status;
  uint32_t subj_off, reply_off; /* EV_MESSAGE: into data; reply_off 0 = none */
  size_t cost;
  int paced;
  char data[];
} ev_job;

/* Events of a "session" plugin held on one worker while the plugin is paused
 * for a reload; only that worker's thread touches head/tail. */
typedef struct held_q {
  ev_job *head, *tail;
  host_plugin *p;
  unsigned worker;
  io_job drain;             /* delivers what is held, on this worker */
  _Atomic int drain_posted; /* drain is in the worker's inbox */
} held_q;

/* Open sessions of one plugin on one worker: a dense array, so add and
 * remove are O(1) (host.reg_pos maps a slot to its index). */
typedef struct reg_list {
  os_mutex mu;
  pier_sid *sids;
  uint32_t n, cap;
} reg_list;

/* A latency histogram that readers on other threads sum (host_latency's
 * shape). Buckets are not cumulative; the last one is +Inf. */
typedef struct lat_hist {
  _Atomic uint64_t bucket[HOST_LAT_BUCKETS + 1];
  _Atomic uint64_t count;
  _Atomic uint64_t sum_ns;
} lat_hist;

/* Per thread that runs callbacks (workers, then one slot for any other
 * thread): the callback in progress, for the watchdog, and how long each
 * kind took, for /metrics. A worker's slot has one writer, its thread; the
 * last slot may have several and so takes locked adds. */
typedef struct cb_slot {
  _Atomic uint64_t start_us; /* 0 when no callback runs */
  _Atomic int type;
  uint64_t reported; /* watchdog thread only: start_us it already reported */
  lat_hist lat[HOST_CB_TYPES]; /* index: ev_type */
  char pad[64]; /* the next thread's slot starts on another cache line than these end on */
} cb_slot;

struct host_plugin {
  pier_host api; /* what the plugin gets; container_of leads back here */
  host *h;
  const cfg_plugin *cfg;
  plugin_image img;
  _Atomic unsigned generation; /* of the code that serves now */
  unsigned last_gen;           /* highest generation handed out (main thread) */
  /* What stats (so /metrics) show as serving, under h->img_mu: set when a
   * version has loaded, so a version whose on_load is running, and may be
   * refused, is never shown as the one serving. */
  char shown_version[64];
  unsigned shown_gen;
  int serial;
  int loaded;        /* on_load succeeded */
  char *config_json; /* what the running version's on_load got */
  os_file_id file;   /* identity of the file the image came from */
  char last_failure[HOST_MSG_MAX]; /* the last failed reload, "" after a good one */
  strand st;
  /* The reload gate of a "session" plugin: callbacks count themselves in
   * `active`; a reload sets `paused`, waits for active == 0; events arriving
   * meanwhile are held per worker and delivered there, in order, after it.
   * A serial plugin is paused by pausing its strand instead. */
  _Atomic int active;
  _Atomic int paused;
  held_q *held; /* one per worker */
  _Atomic size_t nheld;   /* events held since the last quiesce */
  _Atomic size_t backlog; /* bytes of events held or queued for the plugin */
  _Atomic unsigned posts; /* posted jobs not yet run */
  _Atomic unsigned ntimers; /* timers not yet freed */
  cb_slot *running;
  _Atomic unsigned failures;
  _Atomic unsigned slow_calls;
  _Atomic int quarantined;
  _Atomic int wants_send; /* the version loaded has on_send: skip the event otherwise */
  /* Reloads by outcome and how long each held events (main thread writes,
   * any thread reads). One outcome per reload: ok, failed (the old version
   * kept serving), rolled back (the new on_load failed, the old one was
   * restored) or quarantined (the restore failed too). */
  _Atomic uint64_t reloads_ok, reloads_failed, reloads_rolled_back, reloads_quarantined;
  lat_hist reload_pause;
  os_mutex fault_mu; /* the plugin's rate-limited fault log */
  log_rate fault_rl;
  reg_list *reg; /* one per worker */
  /* Its metrics (pmetrics.c): kept here, not in the image, so a reload
   * finds them again. Appended under h->metrics_mu, published by nmetrics
   * (release), freed by host_destroy, or after a failed reload hid them
   * (pmetrics_rollback) once no rendering can still read them. */
  pier_metric *metrics[PIER_METRICS_MAX];
  _Atomic size_t nmetrics;
  struct cluster_plugin *bus; /* its subscriptions and requests (cluster.c); NULL alone */
};

struct host {
  const cfg_server *cfg;
  os_thread watchdog;
  int watchdog_running;
  _Atomic int watchdog_stop;
  net *net;
  unsigned nworkers;
  host_plugin *plugins;
  size_t nplugins;
  host_listener *listeners;
  size_t nlisteners;
  uint32_t **reg_pos; /* per worker, per slot: index in its plugin's reg_list */
  uint64_t **conn_ms; /* per worker, per slot: clock_ms() at connect, for the log */
  log_rate *close_rl; /* per worker: the abnormal-close log lines */
  os_mutex timer_mu;
  /* Held by the main thread while it sets a plugin's shown version and
   * generation, and by readers on other threads (/metrics) copying them. */
  os_mutex img_mu;
  host_timer *timers;                        /* every listed timer, under timer_mu */
  host_timer *timer_ids[HOST_TIMER_BUCKETS]; /* the same, chained by id, under timer_mu */
  _Atomic uint64_t next_timer_id;
  uint64_t started_ms;
  int started;
  _Atomic int ready;    /* every listener open */
  _Atomic int draining; /* a stop request began: not ready again */
  int stopped; /* the workers are gone: no loop may be touched */
  host_bound_cb bound_cb; /* host_set_bound_hook */
  void *bound_arg;
  cluster *cluster;    /* NULL without "cluster" (cluster.c) */
  os_mutex metrics_mu; /* declaring plugin metrics and their series */
  log_rate metrics_rl; /* their refusals, under metrics_mu */
  /* What a failed reload declared, hidden from /metrics but freed only
   * while no rendering runs (it reads without the lock): under metrics_mu. */
  pier_metric *dead_metrics;
  pier_series *dead_series;
  _Atomic int metrics_renders; /* host_render_plugin_metrics calls under way */
};

extern const char *const host_ev_callback[];

host_plugin *host_find_plugin(host *h, const char *name);

/* gate.c. Delivers e to p now, or queues it (strand, or held during a
 * reload). Returns 1 if a job now owns it, else 0. On a worker thread. */
int gate_deliver(host_plugin *p, const ev *e);
/* Pauses p at a callback boundary for a reload: returns 0 once no callback
 * of p runs (events are held from now on), or -ETIMEDOUT (then still paused:
 * call gate_resume). Main thread. */
int gate_quiesce(host_plugin *p);
/* Lets p's callbacks through again; what was held goes to the version loaded
 * now, on each session's worker (serial: on the strand), in order. Returns
 * how many events were held. */
size_t gate_resume(host_plugin *p);
void gate_init_held(host_plugin *p, unsigned worker);
/* Frees what is still held (the workers are gone). */
void gate_discard(host_plugin *p);
/* Counts a failure of p toward quarantine, with its reason logged. */
void gate_failed(host_plugin *p, const char *why);
/* Closes every session of p and refuses new ones until a reload. */
void gate_quarantine(host_plugin *p, const char *why);

/* stats.c. Counts one sample of ns nanoseconds in hist; shared: other
 * threads may write hist at the same time (else only the caller's does). */
void stats_observe(lat_hist *hist, uint64_t ns, int shared);
/* p's image and generation become what stats show as serving (main thread). */
void stats_show_serving(host_plugin *p);

/* timer.c. Timers run on worker 0; a canceled timer is reaped there. */
int timer_add(host_plugin *p, uint64_t after, uint64_t repeat, pier_timer_fn fn, void *arg,
              uint64_t *id);
/* Cancels p's timers: id, or 0 for all, or TIMERS_OF_CODE for all but the
 * host's tick. Returns how many. */
#define TIMERS_OF_CODE UINT64_MAX
int timer_cancel_match(host *h, host_plugin *p, uint64_t id);
/* Whether a firing of t may still run (not canceled); any thread. */
int timer_live(host_timer *t);
void timer_ref(host_timer *t);
void timer_unref(host_timer *t);
/* A queued firing of t was run or dropped: the next one may queue again
 * (a once-timer is done). */
void timer_unqueue(host_timer *t);
/* Reaps every timer (the workers are gone). */
void timer_reap_all(host *h);

/* api.c */
void api_fill(host_plugin *p);

/* pmetrics.c: the ABI 1.2 metric entries of pier_host (see plugin.h), and
 * freeing a plugin's metrics (host_destroy). */
int pmetrics_declare(const pier_host *api, const pier_metric_spec *spec, pier_metric **out);
int pmetrics_series(const pier_host *api, pier_metric *m, const char *const *values,
                    pier_series **out);
int pmetrics_add(const pier_host *api, pier_series *s, double v);
int pmetrics_set(const pier_host *api, pier_series *s, double v);
int pmetrics_observe(const pier_host *api, pier_series *s, double v);
void pmetrics_free(host_plugin *p);
/* The metrics and series a plugin has, taken before a new version's
 * on_load; pmetrics_rollback (its on_load failed) hides what was declared
 * and created since, so /metrics and the limits are as before the attempt
 * (values the attempt added to series that were there stay). Main thread. */
typedef struct pmetrics_mark {
  size_t nmetrics;
  size_t nseries[PIER_METRICS_MAX];
} pmetrics_mark;
void pmetrics_mark_take(host_plugin *p, pmetrics_mark *mk);
void pmetrics_rollback(host_plugin *p, const pmetrics_mark *mk);

/* host.c: the plugin's session list. */
size_t host_plugin_sids(host_plugin *p, pier_sid *out, size_t max);

#endif
