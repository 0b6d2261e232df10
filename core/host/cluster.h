/* The host's side of the cluster bus (cluster.c): the plugin entries of
 * pier_host, presence, and what the views show. Private to core/host and
 * the daemon's views. */
#ifndef PIER_HOST_CLUSTER_H
#define PIER_HOST_CLUSTER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct host host;
typedef struct host_plugin host_plugin;
typedef struct cluster cluster;

/* Allocates the cluster state when the config has "cluster" (else does
 * nothing); before any plugin's on_load. 0 or -ENOMEM. */
int cluster_create(host *h);
/* Connects, subscribes to presence and claims the node name. -EADDRINUSE
 * (logged) when another running node holds the name; 0 when no server
 * answers yet (it keeps trying). Before on_load. */
int cluster_start(host *h);
/* Starts the heartbeat thread; after on_load. */
int cluster_run(host *h);
/* Stop beginning: messages for plugins are dropped from now on. */
void cluster_mute(host *h);
/* The workers are gone: each request still waiting gets -ECANCELED. */
void cluster_cancel_requests(host *h);
/* Says goodbye, ends every subscription and closes the bus. */
void cluster_stop(host *h);
void cluster_destroy(host *h);

/* pier_host's bus entries for p. */
void cluster_fill_api(host_plugin *p);
/* A reload's subscription changes: begin before the old version's
 * on_unload; commit when the new version serves, rollback before the old
 * one's on_load runs again (what the failed version did is undone). */
void cluster_reload_begin(host_plugin *p);
void cluster_reload_commit(host_plugin *p);
void cluster_reload_rollback(host_plugin *p);
/* The gate released a message event of subscription sub (len bytes), or a
 * reply of len bytes. */
void cluster_msg_done(void *sub, size_t len);
void cluster_reply_done(host_plugin *p, size_t len);
/* The gate released a node event of p (NODE_JOBS_MAX counts them). */
void cluster_node_done(host_plugin *p);
/* 0 once sub is removed: its messages still on their way are not delivered. */
int cluster_sub_live(void *sub);

typedef struct cluster_stats {
  const char *node; /* NULL: no cluster */
  int connected;
  char url[256];
  uint64_t messages_in, messages_out; /* delivered to plugins, published by them */
  uint64_t dropped_in;  /* slow consumers */
  uint64_t dropped_out; /* publishes refused while the reconnect buffer was full */
  uint64_t reconnects;
  uint64_t nodes_up;    /* other nodes */
} cluster_stats;

void cluster_get_stats(host *h, cluster_stats *out);
/* The `cluster` command: text, or one line of JSON. 0 or -ENOMEM. */
int cluster_print(host *h, FILE *out, int json);

#endif
