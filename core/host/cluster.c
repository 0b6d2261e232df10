/* The cluster: this pierd on a NATS bus with its peers (server.json
 * "cluster"). It gives plugins the bus entries of pier_host (publish,
 * subscribe, request, respond, node), namespaced per plugin, and keeps node
 * presence (heartbeats, the name claim, nodes gone silent).
 *
 * Threads. The bus client calls back on its own threads; those callbacks
 * never call plugin code: they copy the message into a job posted to worker
 * 0, which hands it to the plugin through the gate like any other event
 * (serial plugins: the strand; held during a reload). A thread of our own
 * (cluster_main) sends heartbeats, notices silent nodes and expires
 * requests. Plugin-facing state of one plugin (its subscriptions, its
 * requests) sits behind that plugin's mutex; the node table behind the
 * cluster's.
 *
 * Bounds. Every subscription counts the messages (and bytes) waiting for
 * its plugin, from the bus thread until the callback returned: past
 * cluster.max_pending (or max_pending_bytes) new ones are dropped, counted
 * and logged, as NATS does for a slow consumer. Subscriptions per plugin,
 * requests per plugin, nodes known and the size of what is parsed are
 * capped too. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cluster/bus.h"
#include "host/cluster.h"
#include "host/host_internal.h"

/* The start fails with this when the node name is held ("Name not unique
 * on network" where the C library has it). */
#ifdef ENOTUNIQ
#define CLUSTER_NAME_TAKEN ENOTUNIQ
#else
#define CLUSTER_NAME_TAKEN EEXIST
#endif

#define CLUSTER_NODES_MAX 1024
#define PRESENCE_MAX 1024  /* bytes of a presence message parsed at most */
#define WIRE_MAX 320       /* prefix (64) . plugin (32) . subject (200) */
#define REPLY_MAX 256
#define SLOW_LOG_MS 1000
#define TICK_MAX_MS 50

typedef enum { CS_LIVE, CS_ADDED, CS_REMOVED } csub_state;

/* One subscription of one plugin. References: the plugin's list (until it
 * is unsubscribed), the bus (until its done callback) and each message job
 * in flight; the last one frees it. */
typedef struct csub {
  struct csub *next;
  host_plugin *p;
  bus_sub *bs;
  csub_state state;  /* a reload's marks (the plugin's mu) */
  _Atomic int dead;  /* unsubscribed: drop what still comes */
  _Atomic int refs;
  _Atomic unsigned pending;
  _Atomic size_t pending_bytes;
  _Atomic uint64_t dropped;       /* since the last slow-consumer line */
  size_t strip;      /* bytes of "<prefix>.<plugin>." in front of the subject */
  char subject[];    /* as the plugin gave it */
} csub;

/* A request waiting for its reply. */
typedef struct creq {
  uint64_t seq; /* 0: free slot */
  unsigned gen;
  pier_reply_fn cb;
  void *arg;
  uint64_t deadline_ms;
  uint32_t prev, next; /* the deadline list (UINT32_MAX: none) */
} creq;

#define NIL UINT32_MAX

struct cluster_plugin {
  os_mutex mu;
  csub *subs;
  unsigned nsubs;
  int txn;            /* a reload is between begin and commit/rollback */
  creq *reqs;
  uint32_t cap, nreq;
  uint32_t *free_slots;
  uint32_t nfree;
  uint32_t dl_head, dl_tail; /* by deadline, earliest first */
  uint64_t next_seq;
  _Atomic size_t reply_bytes; /* reply payloads posted, not yet delivered */
  size_t index;               /* in h->plugins */
  char wire_prefix[100];      /* "<prefix>.<plugin>." */
  size_t wire_len;
};

typedef struct cnode {
  char name[33];
  char id[17];
  uint64_t last_ms;
  uint64_t sessions;
  int up;
} cnode;

struct cluster {
  host *h;
  const cfg_cluster *cfg;
  bus *b;
  char id[17];          /* this process */
  char inbox[96];       /* "_INBOX.<id>": replies to our requests */
  char presence_subj[WIRE_MAX];
  char claim_subj[WIRE_MAX];
  bus_sub *presence_sub, *claim_sub, *inbox_sub;
  os_mutex mu;          /* nodes */
  cnode nodes[CLUSTER_NODES_MAX];
  size_t nnodes;
  _Atomic int muted;    /* stopping: messages for plugins are dropped */
  _Atomic int stop;
  _Atomic int claimed;  /* the name is ours (claim done, or holding it) */
  _Atomic int refused;  /* the name was taken: this node stays off the bus */
  os_thread thr;
  int thread_running;
  _Atomic uint64_t msgs_in, msgs_out, dropped_in, dropped_out, reconnects, bad_presence;
  _Atomic unsigned node_jobs; /* node events posted, not yet run */
  os_mutex log_mu;
  log_rate conflict_rl, bad_rl, full_rl, claim_rl;
};

/* ---- subjects ---- */

/* A plugin's subject: 1..PIER_SUBJECT_MAX bytes, '.'-separated non-empty
 * tokens of visible ASCII; '*' and '>' only as whole tokens and only when
 * wild ('>' last). */
static int subject_ok(const char *s, int wild) {
  size_t n, tok = 0;
  if (!s)
    return 0;
  n = strnlen(s, PIER_SUBJECT_MAX + 1);
  if (n == 0 || n > PIER_SUBJECT_MAX)
    return 0;
  for (size_t i = 0; i <= n; i++) {
    char ch = s[i];
    if (ch == '.' || ch == '\0') {
      if (i == tok)
        return 0; /* empty token */
      if (memchr(s + tok, '*', i - tok) || memchr(s + tok, '>', i - tok)) {
        if (!wild || i - tok != 1)
          return 0;
        if (s[tok] == '>' && ch != '\0')
          return 0;
      }
      tok = i + 1;
    } else if ((unsigned char)ch <= 0x20 || (unsigned char)ch >= 0x7f) {
      return 0;
    }
  }
  return 1;
}

static int wire_subject(const struct cluster_plugin *cp, const char *subject, char *out) {
  size_t n = strlen(subject);
  if (cp->wire_len + n + 1 > WIRE_MAX)
    return -EINVAL;
  memcpy(out, cp->wire_prefix, cp->wire_len);
  memcpy(out + cp->wire_len, subject, n + 1);
  return 0;
}

/* ---- messages to plugins ---- */

static void csub_unref(csub *s) {
  if (atomic_fetch_sub(&s->refs, 1) == 1)
    free(s);
}

typedef struct msg_job {
  io_job job;
  csub *s;
  size_t len;
  size_t subj_off, reply_off; /* into data; reply_off 0: none */
  char data[];
} msg_job;

void cluster_msg_done(void *sub, size_t len) {
  csub *s = sub;
  atomic_fetch_sub(&s->pending, 1);
  atomic_fetch_sub(&s->pending_bytes, len);
  csub_unref(s);
}

static void msg_run(io_job *job) {
  msg_job *j = container_of(job, msg_job, job);
  csub *s = j->s;
  host_plugin *p = s->p;
  int kept = 0;
  if (!p->h->stopped && !atomic_load(&s->dead)) {
    ev e = {.type = EV_MESSAGE,
            .data = j->data,
            .n = j->len,
            .subject = j->data + j->subj_off,
            .reply_to = j->reply_off ? j->data + j->reply_off : NULL,
            .arg = s};
    atomic_fetch_add(&p->h->cluster->msgs_in, 1);
    kept = gate_deliver(p, &e);
  }
  if (!kept)
    cluster_msg_done(s, j->len);
  free(j);
}

/* A message dropped for s: counted here, logged by the cluster thread. */
static void slow_consumer(csub *s) {
  atomic_fetch_add(&s->dropped, 1);
  atomic_fetch_add(&s->p->h->cluster->dropped_in, 1);
}

/* Cluster thread, once a second: one line per subscription that dropped
 * messages since the last one, with how many. */
static void log_slow_consumers(cluster *cl) {
  for (size_t i = 0; i < cl->h->nplugins; i++) {
    host_plugin *p = &cl->h->plugins[i];
    os_mutex_lock(&p->bus->mu);
    for (csub *s = p->bus->subs; s; s = s->next) {
      uint64_t n = atomic_exchange(&s->dropped, 0);
      if (n)
        log_warn("cluster: plugin \"%s\": subscription \"%s\" is a slow consumer: %" PRIu64
                 " messages dropped (max_pending %u)",
                 p->cfg->name, s->subject, n, cl->cfg->max_pending);
    }
    os_mutex_unlock(&p->bus->mu);
  }
}

/* Bus thread: copy, count, post; never the plugin's code. */
static void sub_msg(void *arg, const bus_msg *m) {
  csub *s = arg;
  cluster *cl = s->p->h->cluster;
  size_t slen = strlen(m->subject), rlen = m->reply ? strlen(m->reply) : 0;
  msg_job *j;

  if (atomic_load(&cl->muted) || atomic_load(&s->dead) || slen <= s->strip || rlen > REPLY_MAX)
    return;
  /* Both counts first, then the test: an undo must take back exactly what
   * was added. */
  unsigned before = atomic_fetch_add(&s->pending, 1);
  size_t bytes = atomic_fetch_add(&s->pending_bytes, m->len) + m->len;
  if (before >= cl->cfg->max_pending || bytes > cl->cfg->max_pending_bytes) {
    atomic_fetch_sub(&s->pending, 1);
    atomic_fetch_sub(&s->pending_bytes, m->len);
    slow_consumer(s);
    return;
  }
  j = malloc(sizeof(*j) + m->len + 1 + (slen - s->strip) + 1 + (rlen ? rlen + 1 : 0));
  if (!j) {
    atomic_fetch_sub(&s->pending, 1);
    atomic_fetch_sub(&s->pending_bytes, m->len);
    slow_consumer(s);
    return;
  }
  j->job.fn = msg_run;
  j->s = s;
  j->len = m->len;
  if (m->len)
    memcpy(j->data, m->data, m->len);
  j->data[m->len] = '\0';
  j->subj_off = m->len + 1;
  memcpy(j->data + j->subj_off, m->subject + s->strip, slen - s->strip + 1);
  j->reply_off = 0;
  if (rlen) {
    j->reply_off = j->subj_off + slen - s->strip + 1;
    memcpy(j->data + j->reply_off, m->reply, rlen + 1);
  }
  atomic_fetch_add(&s->refs, 1);
  net_post(s->p->h->net, 0, &j->job);
}

static void sub_done(void *arg) { csub_unref(arg); }

/* ---- the plugin API ---- */

#define PLUGIN(api) container_of(api, host_plugin, api)

static cluster *cluster_of(const pier_host *api) {
  host *h = PLUGIN(api)->h;
  return h->cluster;
}

/* -ENOTSUP without a cluster, -ECANCELED when stopping, -ENOTCONN when the
 * name was refused; else 0. */
static int usable(const pier_host *api) {
  host_plugin *p = PLUGIN(api);
  cluster *cl = p->h->cluster;
  if (!cl || !p->bus)
    return -ENOTSUP;
  if (p->h->stopped || atomic_load(&cl->muted))
    return -ECANCELED;
  if (atomic_load(&cl->refused))
    return -ENOTCONN;
  return 0;
}

static size_t payload_max(cluster *cl) {
  size_t m = bus_max_payload(cl->b);
  return m && m < PIER_BUS_PAYLOAD_MAX ? m : PIER_BUS_PAYLOAD_MAX;
}

static int publish_counted(cluster *cl, const char *subject, const char *reply, const void *data,
                           size_t len) {
  int rc = bus_publish(cl->b, subject, reply, data, len);
  if (rc == 0)
    atomic_fetch_add(&cl->msgs_out, 1);
  else if (rc == -ENOBUFS)
    atomic_fetch_add(&cl->dropped_out, 1);
  return rc;
}

static const char *api_node(const pier_host *api) {
  cluster *cl = cluster_of(api);
  return cl ? cl->cfg->node : NULL;
}

static int api_publish(const pier_host *api, const char *subject, const void *data, size_t len) {
  host_plugin *p = PLUGIN(api);
  char wire[WIRE_MAX];
  int rc = usable(api);
  if (rc < 0)
    return rc;
  if (!subject_ok(subject, 0) || (len && !data) || wire_subject(p->bus, subject, wire) < 0)
    return -EINVAL;
  if (len > payload_max(p->h->cluster))
    return -EMSGSIZE;
  return publish_counted(p->h->cluster, wire, NULL, data, len);
}

static csub *find_sub(struct cluster_plugin *cp, const char *subject, csub ***link) {
  for (csub **pp = &cp->subs; *pp; pp = &(*pp)->next)
    if (strcmp((*pp)->subject, subject) == 0) {
      if (link)
        *link = pp;
      return *pp;
    }
  return NULL;
}

/* Ends s for good (the plugin's mu held; s unlinked). */
static void drop_sub(csub *s) {
  atomic_store(&s->dead, 1);
  bus_unsubscribe(s->bs);
  csub_unref(s); /* the list's reference */
}

static int api_subscribe(const pier_host *api, const char *subject) {
  host_plugin *p = PLUGIN(api);
  struct cluster_plugin *cp;
  char wire[WIRE_MAX];
  size_t n;
  csub *s;
  int rc = usable(api);
  if (rc < 0)
    return rc;
  cp = p->bus;
  if (!subject_ok(subject, 1) || wire_subject(cp, subject, wire) < 0)
    return -EINVAL;
  os_mutex_lock(&cp->mu);
  if ((s = find_sub(cp, subject, NULL))) {
    if (s->state == CS_REMOVED)
      s->state = CS_LIVE; /* unsubscribed and subscribed again within a reload */
    os_mutex_unlock(&cp->mu);
    return 0;
  }
  if (cp->nsubs >= PIER_SUBSCRIPTIONS_MAX) {
    os_mutex_unlock(&cp->mu);
    return -ENOSPC;
  }
  n = strlen(subject);
  s = calloc(1, sizeof(*s) + n + 1);
  if (!s) {
    os_mutex_unlock(&cp->mu);
    return -ENOMEM;
  }
  s->p = p;
  s->strip = cp->wire_len;
  s->state = cp->txn ? CS_ADDED : CS_LIVE;
  memcpy(s->subject, subject, n + 1);
  atomic_store(&s->refs, 2); /* the list and the bus */
  rc = bus_subscribe(p->h->cluster->b, wire, sub_msg, sub_done, s, &s->bs);
  if (rc < 0) {
    os_mutex_unlock(&cp->mu);
    free(s);
    return rc;
  }
  s->next = cp->subs;
  cp->subs = s;
  cp->nsubs++;
  os_mutex_unlock(&cp->mu);
  return 0;
}

static int api_unsubscribe(const pier_host *api, const char *subject) {
  host_plugin *p = PLUGIN(api);
  struct cluster_plugin *cp;
  csub *s, **link;
  int rc = usable(api);
  if (rc < 0)
    return rc;
  cp = p->bus;
  if (!subject_ok(subject, 1))
    return -EINVAL;
  os_mutex_lock(&cp->mu);
  s = find_sub(cp, subject, &link);
  if (!s || s->state == CS_REMOVED) {
    os_mutex_unlock(&cp->mu);
    return -ENOENT;
  }
  if (cp->txn && s->state == CS_LIVE) {
    s->state = CS_REMOVED; /* undone if the reload rolls back */
  } else {
    *link = s->next;
    cp->nsubs--;
    drop_sub(s);
  }
  os_mutex_unlock(&cp->mu);
  return 0;
}

/* ---- requests ---- */

typedef struct reply_job {
  io_job job;
  host_plugin *p;
  unsigned gen;
  pier_reply_fn cb;
  void *arg;
  int status;
  size_t len;
  char data[];
} reply_job;

void cluster_reply_done(host_plugin *p, size_t len) {
  atomic_fetch_sub(&p->bus->reply_bytes, len);
}

static void reply_run(io_job *job) {
  reply_job *j = container_of(job, reply_job, job);
  host_plugin *p = j->p;
  int kept = 0;
  if (!p->h->stopped) {
    ev e = {.type = EV_REPLY, .gen = j->gen, .reply_fn = j->cb, .arg = j->arg,
            .status = j->status, .data = j->status == 0 ? j->data : NULL, .n = j->len};
    kept = gate_deliver(p, &e);
  }
  if (!kept)
    cluster_reply_done(p, j->len);
  free(j);
}

/* Posts the outcome of request r (taken off the table) to its plugin. A
 * reply over the plugin's share of max_pending_bytes becomes -ENOBUFS. */
static void post_reply(host_plugin *p, const creq *r, int status, const void *data, size_t len) {
  struct cluster_plugin *cp = p->bus;
  reply_job *j;
  if (status == 0 &&
      atomic_fetch_add(&cp->reply_bytes, len) + len > p->h->cluster->cfg->max_pending_bytes) {
    atomic_fetch_sub(&cp->reply_bytes, len);
    status = -ENOBUFS;
  }
  if (status != 0)
    len = 0;
  j = malloc(sizeof(*j) + len + 1);
  if (!j) {
    atomic_fetch_sub(&cp->reply_bytes, len);
    log_error("cluster: plugin \"%s\": out of memory delivering a reply; its callback is not "
              "called",
              p->cfg->name);
    return;
  }
  j->job.fn = reply_run;
  j->p = p;
  j->gen = r->gen;
  j->cb = r->cb;
  j->arg = r->arg;
  j->status = status;
  j->len = len;
  if (len)
    memcpy(j->data, data, len);
  j->data[len] = '\0';
  net_post(p->h->net, 0, &j->job);
}

static void dl_unlink(struct cluster_plugin *cp, uint32_t i) {
  creq *r = &cp->reqs[i];
  if (r->prev != NIL)
    cp->reqs[r->prev].next = r->next;
  else
    cp->dl_head = r->next;
  if (r->next != NIL)
    cp->reqs[r->next].prev = r->prev;
  else
    cp->dl_tail = r->prev;
}

/* Frees slot i (mu held). */
static void req_free(struct cluster_plugin *cp, uint32_t i) {
  dl_unlink(cp, i);
  cp->reqs[i].seq = 0;
  cp->free_slots[cp->nfree++] = i;
  cp->nreq--;
}

static int req_alloc(struct cluster_plugin *cp, uint32_t *out) {
  if (cp->nfree == 0) {
    uint32_t cap = cp->cap ? cp->cap * 2 : 64;
    creq *reqs;
    uint32_t *fs;
    if (cp->cap >= PIER_REQUESTS_MAX)
      return -ENOSPC;
    if (cap > PIER_REQUESTS_MAX)
      cap = PIER_REQUESTS_MAX;
    reqs = realloc(cp->reqs, cap * sizeof(*reqs));
    if (!reqs)
      return -ENOMEM;
    cp->reqs = reqs;
    fs = realloc(cp->free_slots, cap * sizeof(*fs));
    if (!fs)
      return -ENOMEM;
    cp->free_slots = fs;
    for (uint32_t i = cap; i-- > cp->cap;) {
      reqs[i].seq = 0;
      fs[cp->nfree++] = i;
    }
    cp->cap = cap;
  }
  *out = cp->free_slots[--cp->nfree];
  cp->nreq++;
  return 0;
}

/* Inserts slot i by deadline, from the tail: requests mostly come with one
 * timeout, so it stops at once. */
static void dl_insert(struct cluster_plugin *cp, uint32_t i) {
  creq *r = &cp->reqs[i];
  uint32_t at = cp->dl_tail;
  while (at != NIL && cp->reqs[at].deadline_ms > r->deadline_ms)
    at = cp->reqs[at].prev;
  r->prev = at;
  r->next = at == NIL ? cp->dl_head : cp->reqs[at].next;
  if (r->next != NIL)
    cp->reqs[r->next].prev = i;
  else
    cp->dl_tail = i;
  if (at != NIL)
    cp->reqs[at].next = i;
  else
    cp->dl_head = i;
}

static int api_request(const pier_host *api, const char *subject, const void *data, size_t len,
                       uint32_t timeout_ms, pier_reply_fn cb, void *arg) {
  host_plugin *p = PLUGIN(api);
  struct cluster_plugin *cp;
  cluster *cl;
  char wire[WIRE_MAX], reply[160];
  uint32_t slot;
  uint64_t seq;
  int rc = usable(api);
  if (rc < 0)
    return rc;
  cp = p->bus;
  cl = p->h->cluster;
  if (!cb || !subject_ok(subject, 0) || (len && !data) || timeout_ms < 1 ||
      timeout_ms > 600000 || wire_subject(cp, subject, wire) < 0)
    return -EINVAL;
  if (len > payload_max(cl))
    return -EMSGSIZE;
  os_mutex_lock(&cp->mu);
  rc = req_alloc(cp, &slot);
  if (rc < 0) {
    os_mutex_unlock(&cp->mu);
    return rc;
  }
  seq = ++cp->next_seq;
  cp->reqs[slot] = (creq){.seq = seq, .gen = atomic_load(&p->generation), .cb = cb, .arg = arg,
                          .deadline_ms = clock_ms() + timeout_ms};
  dl_insert(cp, slot);
  snprintf(reply, sizeof(reply), "%s.%zu.%" PRIu32 ".%" PRIu64, cl->inbox, cp->index, slot, seq);
  /* Published under mu, so the reply (on another thread) finds the slot
   * filled; a failure takes it back before anyone could see it. */
  rc = publish_counted(cl, wire, reply, data, len);
  if (rc < 0)
    req_free(cp, slot);
  os_mutex_unlock(&cp->mu);
  return rc;
}

static int api_respond(const pier_host *api, const char *reply_to, const void *data, size_t len) {
  cluster *cl;
  int rc = usable(api);
  if (rc < 0)
    return rc;
  cl = cluster_of(api);
  /* Only a request's inbox: respond must not become a way around the
   * plugin's namespace. */
  if (!reply_to || strncmp(reply_to, "_INBOX.", 7) != 0 || strlen(reply_to) > REPLY_MAX ||
      !subject_ok(reply_to, 0) || (len && !data))
    return -EINVAL;
  if (len > payload_max(cl))
    return -EMSGSIZE;
  return publish_counted(cl, reply_to, NULL, data, len);
}

/* Bus thread: "<inbox>.<plugin>.<slot>.<seq>". */
static void inbox_msg(void *arg, const bus_msg *m) {
  cluster *cl = arg;
  size_t n = strlen(cl->inbox);
  unsigned long long pi, slot, seq;
  char tail;
  host_plugin *p;
  struct cluster_plugin *cp;
  creq r;

  if (strncmp(m->subject, cl->inbox, n) != 0 || m->subject[n] != '.' ||
      sscanf(m->subject + n + 1, "%llu.%llu.%llu%c", &pi, &slot, &seq, &tail) != 3 ||
      pi >= cl->h->nplugins)
    return;
  p = &cl->h->plugins[pi];
  cp = p->bus;
  /* Muted is checked, and the reply posted, under cp->mu: cluster_mute waits
   * for it, so a reply is posted while the workers still run, or its request
   * stays for cluster_cancel_requests. */
  os_mutex_lock(&cp->mu);
  if (atomic_load(&cl->muted) || slot >= cp->cap || cp->reqs[slot].seq != seq || seq == 0) {
    os_mutex_unlock(&cp->mu); /* stopping, or a late reply (after the timeout or a first one) */
    return;
  }
  r = cp->reqs[slot];
  req_free(cp, (uint32_t)slot);
  post_reply(p, &r, m->no_responders ? -EHOSTUNREACH : 0, m->data, m->len);
  os_mutex_unlock(&cp->mu);
}

/* Cluster thread: requests past their deadline get -ETIMEDOUT. */
static void expire_requests(cluster *cl, uint64_t now) {
  for (size_t i = 0; i < cl->h->nplugins; i++) {
    host_plugin *p = &cl->h->plugins[i];
    struct cluster_plugin *cp = p->bus;
    os_mutex_lock(&cp->mu); /* as in inbox_msg */
    while (!atomic_load(&cl->muted) && cp->dl_head != NIL &&
           cp->reqs[cp->dl_head].deadline_ms <= now) {
      creq r = cp->reqs[cp->dl_head];
      req_free(cp, cp->dl_head);
      post_reply(p, &r, -ETIMEDOUT, NULL, 0);
    }
    os_mutex_unlock(&cp->mu);
  }
}

/* ---- reloads: subscriptions change only if the reload succeeds ---- */

void cluster_reload_begin(host_plugin *p) {
  if (!p->bus)
    return;
  os_mutex_lock(&p->bus->mu);
  p->bus->txn = 1;
  os_mutex_unlock(&p->bus->mu);
}

/* Ends the reload's marks: commit keeps what the new version did, rollback
 * puts back what was there before it. */
static void reload_end(host_plugin *p, int commit) {
  struct cluster_plugin *cp = p->bus;
  if (!cp)
    return;
  os_mutex_lock(&cp->mu);
  cp->txn = 0;
  for (csub **pp = &cp->subs; *pp;) {
    csub *s = *pp;
    if ((commit && s->state == CS_REMOVED) || (!commit && s->state == CS_ADDED)) {
      *pp = s->next;
      cp->nsubs--;
      drop_sub(s);
      continue;
    }
    s->state = CS_LIVE;
    pp = &s->next;
  }
  os_mutex_unlock(&cp->mu);
}

void cluster_reload_commit(host_plugin *p) { reload_end(p, 1); }
void cluster_reload_rollback(host_plugin *p) { reload_end(p, 0); }

/* ---- presence ---- */

typedef struct node_job {
  io_job job;
  host_plugin *p;
  int up;
  char name[33];
} node_job;

/* Node events on their way to worker 0, all plugins together: a peer that
 * flaps (or forges presence) cannot queue more than this. */
#define NODE_JOBS_MAX 4096

/* An event counts against NODE_JOBS_MAX until it has run: queued for a
 * busy strand or held by a reload, it still counts. */
static void node_run(io_job *job) {
  node_job *j = container_of(job, node_job, job);
  int kept = 0;
  if (!j->p->h->stopped) {
    ev e = {.type = EV_NODE, .data = j->name, .n = (size_t)j->up};
    kept = gate_deliver(j->p, &e);
  }
  if (!kept)
    cluster_node_done(j->p);
  free(j);
}

void cluster_node_done(host_plugin *p) {
  if (p->h->cluster) /* NULL for what the teardown frees after cluster_destroy */
    atomic_fetch_sub(&p->h->cluster->node_jobs, 1);
}

int cluster_sub_live(void *sub) { return !atomic_load(&((csub *)sub)->dead); }

/* Tells every plugin that has on_node. */
static void node_event(cluster *cl, const char *name, int up) {
  if (atomic_load(&cl->muted))
    return;
  for (size_t i = 0; i < cl->h->nplugins; i++) {
    host_plugin *p = &cl->h->plugins[i];
    node_job *j;
    if (!p->img.cb.on_node)
      continue;
    if (atomic_fetch_add(&cl->node_jobs, 1) >= NODE_JOBS_MAX) {
      atomic_fetch_sub(&cl->node_jobs, 1);
      os_mutex_lock(&cl->log_mu);
      log_limited(&cl->full_rl, LOG_WARN,
                  "cluster: plugin \"%s\" not told that node \"%s\" %s: %d node events "
                  "already waiting",
                  p->cfg->name, name, up ? "is up" : "is gone", NODE_JOBS_MAX);
      os_mutex_unlock(&cl->log_mu);
      continue;
    }
    if (!(j = calloc(1, sizeof(*j)))) {
      atomic_fetch_sub(&cl->node_jobs, 1);
      log_error("cluster: out of memory telling plugin \"%s\" that node \"%s\" %s",
                p->cfg->name, name, up ? "is up" : "is gone");
      continue;
    }
    j->job.fn = node_run;
    j->p = p;
    j->up = up;
    snprintf(j->name, sizeof(j->name), "%s", name);
    net_post(cl->h->net, 0, &j->job);
  }
}

static int node_name_ok(const char *s) {
  size_t n = 0;
  for (; s[n]; n++)
    if (!((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= 'A' && s[n] <= 'Z') ||
          (s[n] >= '0' && s[n] <= '9') || s[n] == '_' || s[n] == '-'))
      return 0;
  return n >= 1 && n <= 32;
}

static int id_ok(const char *s) {
  size_t n = 0;
  for (; s[n]; n++)
    if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
      return 0;
  return n == 16;
}

static void bad_presence(cluster *cl, const char *why) {
  atomic_fetch_add(&cl->bad_presence, 1);
  os_mutex_lock(&cl->log_mu);
  log_limited(&cl->bad_rl, LOG_WARN, "cluster: ignored a presence message: %s", why);
  os_mutex_unlock(&cl->log_mu);
}

/* Bus thread: {"node","id","state","sessions"} from a peer. */
static void presence_msg(void *arg, const bus_msg *m) {
  cluster *cl = arg;
  cJSON *j, *jn, *ji, *js, *jc;
  const char *end = NULL;
  char name[33], id[17];
  int up, was = -1, now_up = 0, restarted = 0;
  cnode *n = NULL;

  if (atomic_load(&cl->muted))
    return;
  if (m->len > PRESENCE_MAX) {
    bad_presence(cl, "over 1024 bytes");
    return;
  }
  /* The whole payload is one JSON object (no NUL, nothing after it). */
  j = memchr(m->data, '\0', m->len) ? NULL : cJSON_ParseWithLengthOpts(m->data, m->len, &end, 0);
  if (j) {
    while (end < (const char *)m->data + m->len && (*end == ' ' || *end == '\n' ||
                                                    *end == '\r' || *end == '\t'))
      end++;
    if (end != (const char *)m->data + m->len) {
      cJSON_Delete(j);
      j = NULL;
    }
  }
  jn = cJSON_GetObjectItemCaseSensitive(j, "node");
  ji = cJSON_GetObjectItemCaseSensitive(j, "id");
  js = cJSON_GetObjectItemCaseSensitive(j, "state");
  jc = cJSON_GetObjectItemCaseSensitive(j, "sessions");
  if (!cJSON_IsString(jn) || !cJSON_IsString(ji) || !cJSON_IsString(js) ||
      !node_name_ok(jn->valuestring) || !id_ok(ji->valuestring) ||
      (strcmp(js->valuestring, "up") != 0 && strcmp(js->valuestring, "down") != 0) ||
      !cJSON_IsNumber(jc) || !(jc->valuedouble >= 0 && jc->valuedouble <= 1e12) ||
      jc->valuedouble != (double)(uint64_t)jc->valuedouble) {
    cJSON_Delete(j);
    bad_presence(cl, "not one {\"node\",\"id\",\"state\",\"sessions\"} object as pierd writes it");
    return;
  }
  snprintf(name, sizeof(name), "%s", jn->valuestring);
  snprintf(id, sizeof(id), "%s", ji->valuestring);
  up = strcmp(js->valuestring, "up") == 0;
  if (strcmp(name, cl->cfg->node) == 0) {
    if (strcmp(id, cl->id) != 0) {
      os_mutex_lock(&cl->log_mu);
      log_limited(&cl->conflict_rl, LOG_ERROR,
                  "cluster: another process (id %s) also calls itself node \"%s\"", id, name);
      os_mutex_unlock(&cl->log_mu);
    }
    cJSON_Delete(j);
    return;
  }
  os_mutex_lock(&cl->mu);
  for (size_t i = 0; i < cl->nnodes; i++)
    if (strcmp(cl->nodes[i].name, name) == 0) {
      n = &cl->nodes[i];
      was = n->up;
      break;
    }
  if (!n && up) {
    if (cl->nnodes == CLUSTER_NODES_MAX) {
      os_mutex_unlock(&cl->mu);
      cJSON_Delete(j);
      os_mutex_lock(&cl->log_mu);
      log_limited(&cl->full_rl, LOG_WARN,
                  "cluster: node \"%s\" ignored: this node already knows %d nodes", name,
                  CLUSTER_NODES_MAX);
      os_mutex_unlock(&cl->log_mu);
      return;
    }
    n = &cl->nodes[cl->nnodes++];
    memset(n, 0, sizeof(*n));
    snprintf(n->name, sizeof(n->name), "%s", name);
    was = 0;
  }
  if (n) {
    if (up) {
      restarted = was == 1 && strcmp(n->id, id) != 0;
      n->last_ms = clock_ms();
      n->sessions = (uint64_t)jc->valuedouble;
      snprintf(n->id, sizeof(n->id), "%s", id);
      n->up = 1;
    } else if (strcmp(n->id, id) == 0) {
      n->up = 0;
      n->last_ms = clock_ms();
    }
    now_up = n->up;
  }
  os_mutex_unlock(&cl->mu);
  cJSON_Delete(j);
  if (restarted) {
    /* Back within node_timeout_ms as another process: its players of
     * before are gone, whatever the new one has. */
    log_info("cluster: node \"%s\" restarted", name);
    node_event(cl, name, 0);
    node_event(cl, name, 1);
  } else if (n && was == 0 && now_up) {
    log_info("cluster: node \"%s\" is up", name);
    node_event(cl, name, 1);
  } else if (n && was == 1 && !now_up) {
    log_info("cluster: node \"%s\" left", name);
    node_event(cl, name, 0);
  }
}

static uint64_t open_sessions(host *h) {
  uint64_t n = 0;
  for (size_t i = 0; i < h->nlisteners; i++)
    n += (uint64_t)atomic_load(&h->listeners[i].sessions);
  return n;
}

static void heartbeat(cluster *cl, const char *state) {
  char msg[160];
  int n = snprintf(msg, sizeof(msg), "{\"node\":\"%s\",\"id\":\"%s\",\"state\":\"%s\","
                   "\"sessions\":%" PRIu64 "}",
                   cl->cfg->node, cl->id, state, open_sessions(cl->h));
  (void)bus_publish(cl->b, cl->presence_subj, NULL, msg, (size_t)n);
}

/* Cluster thread: nodes unheard for node_timeout_ms are gone. The clock is
 * read under cl->mu, where presence_msg sets last_ms: a presence that came
 * after the loop's own reading is not older than now (which would wrap). */
static void sweep_nodes(cluster *cl) {
  char gone[CLUSTER_NODES_MAX][33];
  size_t ngone = 0;
  uint64_t now;
  os_mutex_lock(&cl->mu);
  now = clock_ms();
  for (size_t i = 0; i < cl->nnodes; i++) {
    cnode *n = &cl->nodes[i];
    if (n->up && now - n->last_ms > cl->cfg->node_timeout_ms) {
      n->up = 0;
      memcpy(gone[ngone++], n->name, sizeof(n->name));
    }
  }
  os_mutex_unlock(&cl->mu);
  for (size_t i = 0; i < ngone; i++) {
    log_warn("cluster: node \"%s\" is gone (not heard from for %u ms)", gone[i],
             cl->cfg->node_timeout_ms);
    node_event(cl, gone[i], 0);
  }
}

/* The name claim: asks whoever holds cluster.node. 1: ours, 0: taken, <0:
 * could not ask. */
static int claim(cluster *cl) {
  char answer[64];
  size_t n = sizeof(answer) - 1;
  int rc = bus_request(cl->b, cl->claim_subj, cl->id, strlen(cl->id), 1000, answer, &n);
  if (rc == -EHOSTUNREACH || rc == -ETIMEDOUT)
    return 1; /* nobody holds it */
  if (rc < 0)
    return rc;
  return 0;
}

/* Bus thread: someone asks for our name. */
static void claim_msg(void *arg, const bus_msg *m) {
  cluster *cl = arg;
  if (!m->reply || (m->len == strlen(cl->id) && memcmp(m->data, cl->id, m->len) == 0))
    return;
  (void)bus_publish(cl->b, m->reply, NULL, cl->id, strlen(cl->id));
  os_mutex_lock(&cl->log_mu);
  log_limited(&cl->claim_rl, LOG_WARN, "cluster: refused a second node named \"%s\"",
              cl->cfg->node);
  os_mutex_unlock(&cl->log_mu);
}

static int hold_name(cluster *cl) {
  int rc = bus_subscribe(cl->b, cl->claim_subj, claim_msg, NULL, cl, &cl->claim_sub);
  if (rc == 0)
    atomic_store(&cl->claimed, 1);
  return rc;
}

static void refuse_name(cluster *cl) {
  log_error("cluster: node name \"%s\" is already used by a running node; give this one "
            "another cluster.node",
            cl->cfg->node);
}

static void *cluster_main(void *arg) {
  cluster *cl = arg;
  uint64_t next_beat = 0, next_slow_log = clock_ms() + SLOW_LOG_MS;
  unsigned tick = cl->cfg->heartbeat_ms < TICK_MAX_MS ? cl->cfg->heartbeat_ms : TICK_MAX_MS;
  while (!atomic_load(&cl->stop)) {
    uint64_t now = clock_ms();
    if (!atomic_load(&cl->claimed) && !atomic_load(&cl->refused) && bus_connected(cl->b)) {
      int rc = claim(cl);
      if (rc == 0) {
        refuse_name(cl);
        log_error("cluster: this node stays off the bus; its own sessions carry on");
        atomic_store(&cl->refused, 1);
      } else if (rc > 0 && hold_name(cl) < 0) {
        log_warn("cluster: cannot hold the node name yet; trying again");
      }
    }
    if (atomic_load(&cl->claimed) && now >= next_beat) {
      heartbeat(cl, "up");
      next_beat = now + cl->cfg->heartbeat_ms;
    }
    sweep_nodes(cl);
    if (now >= next_slow_log) {
      log_slow_consumers(cl);
      next_slow_log = now + SLOW_LOG_MS;
    }
    /* Once muted (stopping), the requests still waiting are cancelled on
     * the main thread instead, as callbacks that still reach the plugin. */
    if (!atomic_load(&cl->muted))
      expire_requests(cl, now);
    os_sleep_ms(tick);
  }
  return NULL;
}

static void on_bus_event(void *arg, bus_event what, const char *url) {
  cluster *cl = arg;
  switch (what) {
  case BUS_UP:
    log_info("cluster: node \"%s\" joined the bus at %s", cl->cfg->node, url);
    break;
  case BUS_DOWN:
    log_warn("cluster: bus disconnected (%s): local sessions carry on; cross-node delivery "
             "resumes on reconnect",
             url);
    break;
  case BUS_BACK:
    atomic_fetch_add(&cl->reconnects, 1);
    log_info("cluster: bus reconnected to %s", url);
    break;
  }
}

/* ---- lifecycle ---- */

void cluster_fill_api(host_plugin *p) {
  pier_host *a = &p->api;
  a->node = api_node;
  a->publish = api_publish;
  a->subscribe = api_subscribe;
  a->unsubscribe = api_unsubscribe;
  a->request = api_request;
  a->respond = api_respond;
}

/* This process's id: a hash of its first inbox, which the client makes from
 * a random, process-unique NUID. */
static void make_id(cluster *cl) {
  uint64_t x = 0xcbf29ce484222325ull;
  for (const char *c = cl->inbox; *c; c++)
    x = (x ^ (unsigned char)*c) * 0x100000001b3ull;
  snprintf(cl->id, sizeof(cl->id), "%016" PRIx64, x);
}

int cluster_create(host *h) {
  const cfg_cluster *cfg = h->cfg->cluster;
  cluster *cl;
  if (!cfg)
    return 0;
  cl = calloc(1, sizeof(*cl));
  if (!cl)
    return -ENOMEM;
  cl->h = h;
  cl->cfg = cfg;
  os_mutex_init(&cl->mu);
  os_mutex_init(&cl->log_mu);
  snprintf(cl->presence_subj, sizeof(cl->presence_subj), "%s.$pier.presence",
           cfg->subject_prefix);
  snprintf(cl->claim_subj, sizeof(cl->claim_subj), "%s.$pier.claim.%s", cfg->subject_prefix,
           cfg->node);
  h->cluster = cl;
  for (size_t i = 0; i < h->nplugins; i++) {
    host_plugin *p = &h->plugins[i];
    struct cluster_plugin *cp = calloc(1, sizeof(*cp));
    if (!cp)
      return -ENOMEM;
    os_mutex_init(&cp->mu);
    cp->dl_head = cp->dl_tail = NIL;
    cp->index = i;
    cp->wire_len = (size_t)snprintf(cp->wire_prefix, sizeof(cp->wire_prefix), "%s.%s.",
                                    cfg->subject_prefix, p->cfg->name);
    p->bus = cp;
  }
  return 0;
}

int cluster_start(host *h) {
  cluster *cl = h->cluster;
  char err[256], name[64], wild[128];
  bus_opts o;
  int rc;
  if (!cl)
    return 0;
  snprintf(name, sizeof(name), "pierd %s", cl->cfg->node);
  o = (bus_opts){.urls = (const char *const *)cl->cfg->nats, .nurls = cl->cfg->nnats,
                 .name = name, .reconnect_buffer = cl->cfg->reconnect_buffer,
                 .on_event = on_bus_event, .arg = cl};
  rc = bus_open(&o, &cl->b, err, sizeof(err));
  if (rc < 0) {
    log_error("%s", err);
    return rc;
  }
  rc = bus_new_inbox(cl->b, cl->inbox, sizeof(cl->inbox));
  if (rc == 0) {
    make_id(cl);
    snprintf(wild, sizeof(wild), "%s.>", cl->inbox);
    rc = bus_subscribe(cl->b, wild, inbox_msg, NULL, cl, &cl->inbox_sub);
  }
  if (rc == 0)
    rc = bus_subscribe(cl->b, cl->presence_subj, presence_msg, NULL, cl, &cl->presence_sub);
  if (rc < 0) {
    log_error("cluster: cannot subscribe on the bus: %s", os_strerror(-rc));
    return rc;
  }
  if (!bus_connected(cl->b)) {
    char urls[512] = "";
    size_t n = 0;
    for (size_t i = 0; i < cl->cfg->nnats && n < sizeof(urls); i++)
      n += (size_t)snprintf(urls + n, sizeof(urls) - n, "%s%s", i ? ", " : "", cl->cfg->nats[i]);
    log_warn("cluster: no NATS server answers yet (%s): running alone until one does", urls);
    return 0; /* cluster_main claims the name once connected */
  }
  bus_url(cl->b, err, sizeof(err));
  log_info("cluster: node \"%s\" joined the bus at %s", cl->cfg->node, err);
  rc = claim(cl);
  if (rc == 0) {
    refuse_name(cl);
    return -CLUSTER_NAME_TAKEN;
  }
  if (rc > 0 && hold_name(cl) < 0)
    log_warn("cluster: cannot hold the node name yet; trying again");
  return 0;
}

int cluster_run(host *h) {
  cluster *cl = h->cluster;
  int rc;
  if (!cl)
    return 0;
  rc = os_thread_create(&cl->thr, cluster_main, cl);
  if (rc == 0)
    cl->thread_running = 1;
  return rc;
}

void cluster_mute(host *h) {
  if (!h->cluster)
    return;
  atomic_store(&h->cluster->muted, 1);
  /* A reply or timeout that saw muted clear is posted before this returns
   * (inbox_msg, expire_requests): none reaches a worker that has stopped. */
  for (size_t i = 0; i < h->nplugins; i++) {
    struct cluster_plugin *cp = h->plugins[i].bus;
    if (cp) {
      os_mutex_lock(&cp->mu);
      os_mutex_unlock(&cp->mu);
    }
  }
}

/* Main thread, the workers gone: requests still waiting get -ECANCELED,
 * as callbacks of their plugins (nothing else runs now). */
void cluster_cancel_requests(host *h) {
  if (!h->cluster)
    return;
  for (size_t i = 0; i < h->nplugins; i++) {
    host_plugin *p = &h->plugins[i];
    struct cluster_plugin *cp = p->bus;
    for (;;) {
      creq r;
      os_mutex_lock(&cp->mu);
      if (cp->dl_head == NIL) {
        os_mutex_unlock(&cp->mu);
        break;
      }
      r = cp->reqs[cp->dl_head];
      req_free(cp, cp->dl_head);
      os_mutex_unlock(&cp->mu);
      ev e = {.type = EV_REPLY, .gen = r.gen, .reply_fn = r.cb, .arg = r.arg,
              .status = -ECANCELED};
      (void)gate_deliver(p, &e);
    }
  }
}

void cluster_stop(host *h) {
  cluster *cl = h->cluster;
  if (!cl || !cl->b)
    return;
  atomic_store(&cl->muted, 1);
  if (cl->thread_running) {
    atomic_store(&cl->stop, 1);
    os_thread_join(cl->thr);
    cl->thread_running = 0;
  }
  if (atomic_load(&cl->claimed))
    heartbeat(cl, "down");
  for (size_t i = 0; i < h->nplugins; i++) {
    struct cluster_plugin *cp = h->plugins[i].bus;
    os_mutex_lock(&cp->mu);
    while (cp->subs) {
      csub *s = cp->subs;
      cp->subs = s->next;
      cp->nsubs--;
      drop_sub(s);
    }
    os_mutex_unlock(&cp->mu);
  }
  bus_close(cl->b, 2000);
  cl->b = NULL;
}

void cluster_destroy(host *h) {
  cluster *cl = h->cluster;
  if (!cl)
    return;
  cluster_stop(h);
  for (size_t i = 0; i < h->nplugins; i++) {
    struct cluster_plugin *cp = h->plugins[i].bus;
    if (!cp)
      continue;
    os_mutex_destroy(&cp->mu);
    free(cp->reqs);
    free(cp->free_slots);
    free(cp);
    h->plugins[i].bus = NULL;
  }
  os_mutex_destroy(&cl->mu);
  os_mutex_destroy(&cl->log_mu);
  free(cl);
  h->cluster = NULL;
}

/* ---- views ---- */

void cluster_get_stats(host *h, cluster_stats *out) {
  cluster *cl = h->cluster;
  memset(out, 0, sizeof(*out));
  if (!cl)
    return;
  out->node = cl->cfg->node;
  out->connected = cl->b && bus_connected(cl->b) && !atomic_load(&cl->refused);
  if (cl->b)
    bus_url(cl->b, out->url, sizeof(out->url));
  out->messages_in = atomic_load(&cl->msgs_in);
  out->messages_out = atomic_load(&cl->msgs_out);
  out->dropped_in = atomic_load(&cl->dropped_in);
  out->dropped_out = atomic_load(&cl->dropped_out);
  out->reconnects = atomic_load(&cl->reconnects);
  os_mutex_lock(&cl->mu);
  for (size_t i = 0; i < cl->nnodes; i++)
    out->nodes_up += cl->nodes[i].up ? 1 : 0;
  os_mutex_unlock(&cl->mu);
}

static int node_cmp(const void *a, const void *b) {
  return strcmp(((const cnode *)a)->name, ((const cnode *)b)->name);
}

/* A copy of the node table: self first, then the others by name. */
static size_t nodes_copy(cluster *cl, cnode *out, uint64_t *now) {
  size_t n;
  memset(&out[0], 0, sizeof(out[0]));
  snprintf(out[0].name, sizeof(out[0].name), "%s", cl->cfg->node);
  out[0].sessions = open_sessions(cl->h);
  out[0].up = 2;
  os_mutex_lock(&cl->mu);
  memcpy(out + 1, cl->nodes, cl->nnodes * sizeof(*out));
  n = cl->nnodes + 1;
  os_mutex_unlock(&cl->mu);
  qsort(out + 1, n - 1, sizeof(*out), node_cmp);
  *now = clock_ms();
  return n;
}

static const char *state_name(int up) { return up == 2 ? "self" : up ? "up" : "gone"; }

int cluster_print(host *h, FILE *out, int json) {
  cluster *cl = h->cluster;
  cnode *nodes;
  uint64_t now;
  size_t n;
  if (!cl) {
    if (json)
      fputs("{\"node\":null,\"connected\":false,\"url\":null,\"nodes\":[]}\n", out);
    else
      fputs("cluster: not configured (this node runs alone)\n", out);
    return 0;
  }
  nodes = malloc((CLUSTER_NODES_MAX + 1) * sizeof(*nodes));
  if (!nodes)
    return -ENOMEM;
  n = nodes_copy(cl, nodes, &now);
  if (json) {
    cluster_stats st;
    cJSON *j = cJSON_CreateObject(), *arr;
    char *text;
    cluster_get_stats(h, &st);
    cJSON_AddStringToObject(j, "node", st.node);
    cJSON_AddBoolToObject(j, "connected", st.connected);
    if (st.url[0])
      cJSON_AddStringToObject(j, "url", st.url);
    else
      cJSON_AddNullToObject(j, "url");
    arr = cJSON_AddArrayToObject(j, "nodes");
    for (size_t i = 0; i < n && arr; i++) {
      cJSON *o = cJSON_CreateObject();
      cJSON_AddStringToObject(o, "node", nodes[i].name);
      cJSON_AddStringToObject(o, "state", state_name(nodes[i].up));
      cJSON_AddNumberToObject(o, "sessions", (double)nodes[i].sessions);
      if (nodes[i].up == 2)
        cJSON_AddNullToObject(o, "last_seen_ms");
      else
        cJSON_AddNumberToObject(o, "last_seen_ms", (double)(now - nodes[i].last_ms));
      cJSON_AddItemToArray(arr, o);
    }
    text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    free(nodes);
    if (!text)
      return -ENOMEM;
    fprintf(out, "%s\n", text);
    free(text);
    return 0;
  }
  fprintf(out, "%-32s  %-5s  %8s  %s\n", "NODE", "STATE", "SESSIONS", "LAST SEEN");
  for (size_t i = 0; i < n; i++) {
    char seen[32] = "-";
    if (nodes[i].up != 2)
      snprintf(seen, sizeof(seen), "%.1f s ago", (double)(now - nodes[i].last_ms) / 1000.0);
    fprintf(out, "%-32s  %-5s  %8" PRIu64 "  %s\n", nodes[i].name, state_name(nodes[i].up),
            nodes[i].sessions, seen);
  }
  free(nodes);
  return 0;
}
