/* The daemon's configuration: server.json parsed into typed structs. Every key
 * is checked (type, range, unknown and duplicate keys, cross references)
 * before anything starts, and every problem found is reported, up to
 * CFG_MAX_ERRORS, each as one line that names the file, the JSON path and
 * what was expected, in the order the values appear in the file. */
#ifndef PIER_HOST_CONFIG_H
#define PIER_HOST_CONFIG_H

#include <stddef.h>

/* Each enum is generated from its list so a new value cannot miss its name. */
#define CFG_BACKEND_MAP(XX)          \
  XX(CFG_BACKEND_AUTO, "auto")       \
  XX(CFG_BACKEND_IO_URING, "io_uring") \
  XX(CFG_BACKEND_EPOLL, "epoll")       \
  XX(CFG_BACKEND_IOCP, "iocp")

#define CFG_FRAMING_MAP(XX)   \
  XX(CFG_FRAMING_RAW, "raw")  \
  XX(CFG_FRAMING_U16_SIZE_ID, "u16_size_id")

#define CFG_TRANSPORT_MAP(XX)        \
  XX(CFG_TRANSPORT_TCP, "tcp")       \
  XX(CFG_TRANSPORT_WEBSOCKET, "websocket")

#define CFG_THREADING_MAP(XX)          \
  XX(CFG_THREADING_SESSION, "session") \
  XX(CFG_THREADING_SERIAL, "serial")

#define CFG_LOG_LEVEL_MAP(XX)  \
  XX(CFG_LOG_ERROR, "error")   \
  XX(CFG_LOG_WARN, "warn")     \
  XX(CFG_LOG_INFO, "info")     \
  XX(CFG_LOG_DEBUG, "debug")

#define CFG_LOG_FORMAT_MAP(XX)   \
  XX(CFG_LOG_FORMAT_TEXT, "text") \
  XX(CFG_LOG_FORMAT_JSON, "json")

#define CFG_ENUM_ID(id, str) id,
typedef enum { CFG_BACKEND_MAP(CFG_ENUM_ID) } cfg_backend;
typedef enum { CFG_FRAMING_MAP(CFG_ENUM_ID) } cfg_framing;
typedef enum { CFG_TRANSPORT_MAP(CFG_ENUM_ID) } cfg_transport;
typedef enum { CFG_THREADING_MAP(CFG_ENUM_ID) } cfg_threading;
typedef enum { CFG_LOG_LEVEL_MAP(CFG_ENUM_ID) } cfg_log_level;
typedef enum { CFG_LOG_FORMAT_MAP(CFG_ENUM_ID) } cfg_log_format;
#undef CFG_ENUM_ID

/* Largest server.json cfg_load_file accepts. */
#define CFG_MAX_FILE_SIZE (1024 * 1024)

/* Most problems one load reports one by one; past them, one more line says
 * "<file>: ... and N more errors". */
#define CFG_MAX_ERRORS 20
/* Longest line of a report, with its newline; a longer message is cut. */
#define CFG_ERR_LINE 1024
/* An err buffer this size always holds a whole report. */
#define CFG_ERR_LEN ((CFG_MAX_ERRORS + 1) * CFG_ERR_LINE)

typedef struct cfg_callbacks { /* exported symbol names, NULL when not given */
  char *on_load, *on_unload, *on_connected, *on_recv, *on_send,
      *on_disconnected, *on_tick, *on_message, *on_node;
} cfg_callbacks;

typedef struct cfg_plugin {
  char *name;          /* [A-Za-z0-9_-], 1..32 chars, unique among plugins */
  char *path;          /* as written in the file */
  char *resolved_path; /* absolute, or relative to the cwd: a relative path is
                          joined to the config file's directory */
  cfg_callbacks callbacks;
  char *config_json;       /* the plugin's "config" object as compact JSON
                              text; "{}" when absent */
  cfg_threading threading; /* default session */
  unsigned tick_ms;        /* 0 = no tick (default); else 1..3600000 */
  int watch;               /* bool, default 0 */
  const char *confine_dir; /* the server's plugin_dir with every link resolved
                              (owned by the cfg_server), NULL when not set:
                              the loader refuses a file that resolves outside */
} cfg_plugin;

typedef struct cfg_listener {
  char *address;       /* IPv4 or IPv6 literal, default "127.0.0.1" */
  unsigned port;       /* 0..65535; 0 = any free port */
  char *plugin;        /* names a plugin in plugins[] */
  size_t plugin_index; /* index of that plugin in plugins[] */
  cfg_framing framing; /* default raw */
  cfg_transport transport; /* default tcp */
  /* "tls": {"cert", "key"}: PEM files joined to the config file's
   * directory, loaded and matched when the config is checked; NULL: none. */
  char *tls_cert, *tls_key;
  unsigned handshake_timeout_ms; /* TLS and WebSocket: 1..600000, default 10000 */
  /* WebSocket only. */
  char *ws_path;        /* "path": "/..." (visible ASCII, no '?' or '#'), default "/" */
  char **origins;       /* "origins": allowed Origin values; NULL = any */
  size_t norigins;
  char *static_dir;     /* "static": joined to the config file's directory */
  char *static_root;    /* static_dir with every link resolved (a directory) */
  unsigned ping_interval_ms; /* 0 (off) or 100..3600000, default 30000 */
} cfg_listener;

typedef struct cfg_limits {
  unsigned max_packet_size; /* 4..65535, default 16384 */
  size_t max_send_queue;    /* bytes per session, 1024..1073741824,
                               default 1048576 */
  unsigned idle_timeout_ms; /* 0 = off (default); else 100..86400000 */
  unsigned packet_timeout_ms; /* a partial packet must complete within this;
                                 0 = off; default 10000; else 100..3600000 */
  unsigned max_conns_per_ip;  /* open sessions per remote address; 0 = no cap
                                 (default); else 1..1000000 */
  unsigned slow_callback_ms;  /* log plugin callbacks that run longer; 0 = off;
                                 default 100; else 1..600000 */
  unsigned quarantine_after;  /* failures (slow callbacks, pier_host.fail) before a
                                 plugin is quarantined; 0 = never (default) */
  unsigned send_timeout_ms;   /* a session with data queued that makes no send
                                 progress this long is closed; 0 = off;
                                 default 30000; else 100..3600000 */
  size_t recv_backlog;        /* bytes of one session's received data waiting
                                 for its plugin (held during a reload, queued
                                 for a busy serial plugin) before pier stops
                                 reading it; 4096..16777216, default 65536 */
  size_t plugin_backlog;      /* the same for all sessions of one plugin
                                 together; 65536..1073741824, default 16777216 */
} cfg_limits;

/* "cluster": joining other pierd nodes on a NATS bus (core/host/cluster.c).
 * Absent: this node runs alone (cfg_server.cluster is NULL). */
typedef struct cfg_cluster {
  char **nats;              /* 1..16 server URLs "nats://host[:port]" */
  size_t nnats;
  char *node;               /* [A-Za-z0-9_-], 1..32 chars: this node's name */
  char *subject_prefix;     /* tokens of [A-Za-z0-9_-] joined by '.', 1..64
                               chars; default "pier" */
  unsigned heartbeat_ms;    /* presence interval, 50..60000, default 1000 */
  unsigned node_timeout_ms; /* unheard this long = gone; heartbeat_ms+1..600000,
                               default 3000 */
  unsigned max_pending;     /* messages per subscription waiting for its
                               plugin, 1..10000000, default 65536 */
  size_t max_pending_bytes; /* the same in bytes, 1024..1073741824,
                               default 67108864 */
  size_t reconnect_buffer;  /* bytes published while disconnected and sent on
                               reconnect, 0..1073741824, default 8388608 */
} cfg_cluster;

typedef struct cfg_server {
  char *path;              /* the file it came from, as given */
  char *base_dir;          /* directory of that file */
  unsigned workers;        /* 1..64, default 1 */
  cfg_backend io_backend;  /* default auto */
  unsigned max_sessions;   /* 1..1000000, default 10000 */
  cfg_log_level log_level; /* default info */
  cfg_log_format log_format; /* default text; json = one object per line */
  char *log_file;          /* resolved against base_dir; NULL = stderr. Opened
                              (appended) at start, reopened on SIGUSR1 */
  char *plugin_dir;        /* resolved against base_dir; NULL when not set. Every
                              plugin file must lie in it once links are resolved */
  char *plugin_dir_real;   /* plugin_dir after realpath(); NULL when not set */
  char *admin_socket;      /* resolved against base_dir like plugin paths;
                              default "run/pierd.sock" before resolving */
  char *user;              /* POSIX: account the plugins run as (privileges are
                              dropped after binding, before on_load); NULL when
                              not set: a root pierd then drops to "nobody" */
  char *group;             /* POSIX: its group; NULL = the user's own */
  unsigned drain_timeout_ms; /* 0..3600000, default 0: on a stop request, how
                                long open sessions may stay (listeners close
                                at once) before they are closed */
  /* "metrics": {"address", "port"}: the HTTP listener for /metrics, /healthz
   * and /readyz. Off (metrics_address NULL) when the key is absent. */
  char *metrics_address;   /* IPv4 or IPv6 literal, default "127.0.0.1" */
  unsigned metrics_port;   /* 0..65535, default 9100; 0 = any free port */
  cfg_limits limits;
  cfg_cluster *cluster;    /* NULL: no "cluster" section */
  cfg_plugin *plugins;
  size_t nplugins;
  cfg_listener *listeners;
  size_t nlisteners;
} cfg_server;

/* Reads, parses and validates the file at `path`. On success returns 0 and
 * *out owns everything (release with cfg_free); err gets "". On failure
 * returns a negative errno-style code (-ENOENT, -EACCES, ... when the file
 * cannot be read, -EFBIG when it exceeds CFG_MAX_FILE_SIZE, -ENOMEM; for
 * wrong content that of its first problem, -EINVAL but for a few: -EPERM for
 * a plugin outside plugin_dir, -ENOENT for a missing plugin_dir,
 * -ENAMETOOLONG for a path too long) and leaves *out NULL.
 *
 * The report goes to err (when err is non-NULL and errlen > 0): one line per
 * problem, "<path>: <json path>: <what was expected>, got <what was there>"
 * (or "<path>:<line>:<col>: ..." for a syntax error, which stops the check,
 * or "<path>: <what>" for the file as a whole), separated by '\n', with no
 * newline after the last. Lines come in the order of the values in the file;
 * at most CFG_MAX_ERRORS of them, then "<path>: ... and N more error(s)".
 * errlen >= CFG_ERR_LEN holds any report whole; a shorter buffer gets a
 * prefix of it, always NUL-terminated. Errors name the file by `path` as
 * given; base_dir is the directory part of `path`. */
int cfg_load_file(const char *path, cfg_server **out, char *err, size_t errlen);

/* Like cfg_load_file for `len` bytes of text already in memory (need not be
 * NUL-terminated). `name` is shown in errors and stored as cfg->path ("config"
 * when NULL); relative paths are resolved against `base_dir` ("." when NULL
 * or empty). */
int cfg_load_text(const char *text, size_t len, const char *name,
                  const char *base_dir, cfg_server **out, char *err,
                  size_t errlen);

/* Frees a configuration from cfg_load_*; NULL is ignored. */
void cfg_free(cfg_server *cfg);

/* Names as written in server.json ("auto", "raw", "info", ...); "unknown" for
 * a value outside the enum. The strings are static. */
const char *cfg_backend_name(cfg_backend backend);
const char *cfg_framing_name(cfg_framing framing);
const char *cfg_transport_name(cfg_transport transport);
const char *cfg_threading_name(cfg_threading threading);
const char *cfg_log_level_name(cfg_log_level level);

#endif
