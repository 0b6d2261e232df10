/* pier-bench: a load generator for pier servers, built on pier's own client
 * service. It opens many connections, drives echo or chat traffic (closed
 * loop with N messages in flight, or open loop at a fixed rate), verifies
 * every byte that comes back, and reports throughput, latency percentiles and
 * optionally the server's CPU time and memory, as text or one JSON object.
 * The connections are plain TCP, or TLS and/or WebSocket (tools/bench/wire.c),
 * or a Colyseus room's WebSocket protocol, for comparisons with other
 * servers. Chat connections may be spread over several ports, the nodes of a
 * cluster: then deliveries from other nodes (S_CHAT_REMOTE) are checked and
 * timed apart from those on the sender's node. Churn mode (tools/bench/churn.c)
 * measures connection turnover instead: connect, one echo, close, again. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "io/io.h"
#include "bench/churn.h"
#include "bench/hist.h"
#include "bench/jsonout.h"
#include "bench/load.h"
#include "bench/procstat.h"
#include "os/signals.h"

#define CONNECT_WINDOW 256     /* connects pending at once */
#define CONNECT_TIMEOUT_S 60.0
#define JOIN_TIMEOUT_S 60.0
#define SETTLE_MS 500          /* idle mode: before reading the server's memory */
#define MAX_DURATION_S 600.0

typedef struct bench_opts {
  bench_mode mode;
  const char *mode_name;
  const char *host;
  long port;                          /* the first of ports */
  unsigned ports[LOAD_MAX_TARGETS], nports;
  char *nodes[LOAD_MAX_TARGETS];      /* --nodes, split; NULL: not given */
  unsigned nnodes;
  unsigned conns, size, depth, rooms, workers, sources;
  int depth_given, rate_given, rooms_given, workers_given;
  double duration, warmup, rate, drain, pause;
  const char *backend;
  int json;
  long server_pid; /* 0: none */
  const char *ws_path, *origin, *ca, *colyseus;
  int tls;
} bench_opts;

/* One moment of the run, for differences. */
typedef struct sample {
  uint64_t t_ns;
  load_totals tot;
  double client_cpu;
  double server_cpu; /* -1: unknown */
} sample;

static volatile sig_atomic_t g_stop;

/* Runs in a signal handler (POSIX) or on the console's thread (Windows). */
static void on_stop(void) { g_stop = 1; }

static void usage(FILE *out) {
  fprintf(out,
          "usage: pier-bench echo|chat|idle|churn [options]\n"
          "  --host ADDR        server address literal (default 127.0.0.1)\n"
          "  --port N[,N...]    server port (default 7777 echo/idle, 7778 chat); chat: up\n"
          "                     to 16, connection i to the (i mod count)th\n"
          "  --nodes NAME,...   chat with several ports: the cluster node name behind\n"
          "                     each port, to match S_CHAT_REMOTE packets to senders\n"
          "  --conns N          connections (default 100); churn: concurrent churners\n"
          "  --size BYTES       echo: message size; chat: text bytes, 1..512 (default 128)\n"
          "  --depth N          messages in flight per connection (default 1; with --rate,\n"
          "                     the most allowed in flight, default 1024)\n"
          "  --duration S       measured seconds, at most 600 (default 5)\n"
          "  --warmup S         seconds of traffic before measuring (default 1)\n"
          "  --drain-timeout S  after the window, how long messages in flight may take to\n"
          "                     be answered before that is an error (default 5)\n"
          "  --pause S          echo, chat: hold the open connections idle for S seconds\n"
          "                     before the traffic and again after it has drained, with a\n"
          "                     line on stderr at each (for a profiler to start and stop)\n"
          "  --rate R           open loop: R messages/s in total, spread over connections;\n"
          "                     latency counts from each message's scheduled time\n"
          "  --rooms N          chat: rooms, joined round-robin (default 1)\n"
          "  --workers N        client worker threads (default 1)\n"
          "  --io-backend B     client backend: auto, io_uring or epoll; auto or iocp on\n"
          "                     Windows (default auto)\n"
          "  --server-pid PID   also report that process's CPU time and memory\n"
          "  --json             print one JSON object instead of the summary line\n"
          "  --ws PATH          WebSocket: the Upgrade to PATH, then one binary message per\n"
          "                     packet (chat) or message payloads as the stream (echo, idle)\n"
          "  --origin ORIGIN    with --ws: send this Origin header\n"
          "  --tls              TLS first (before the Upgrade, or before the plain traffic)\n"
          "  --ca FILE          with --tls: verify the server's certificate against FILE\n"
          "                     (PEM) and the --host address; default: no verification\n"
          "  --sources N        churn: spread connections over source addresses 127.0.0.1\n"
          "                     .. 127.0.0.N, 1..254 (default 1: the kernel picks)\n"
          "  --colyseus ROOM    chat through a Colyseus room: a matchmaking request\n"
          "                     (joinOrCreate ROOM) per connection, then its WebSocket\n"
          "                     protocol; packets travel as ROOM_DATA_BYTES, type = id\n"
          "modes: echo (raw bytes, verified), chat (the chat plugin's protocol),\n"
          "       idle (connect, one verified echo each, then hold the connections),\n"
          "       churn (each connection: connect, one verified echo, close, and again;\n"
          "       plain sockets, Linux only)\n");
}

static int parse_uint(const char *name, const char *s, unsigned long min, unsigned long max,
                      unsigned *out) {
  char *end;
  unsigned long v;
  errno = 0;
  v = strtoul(s, &end, 10);
  if (errno || end == s || *end || s[0] == '-' || v < min || v > max) {
    fprintf(stderr, "pier-bench: --%s: expected an integer %lu..%lu, got \"%s\"\n", name, min,
            max, s);
    return -EINVAL;
  }
  *out = (unsigned)v;
  return 0;
}

static int parse_double(const char *name, const char *s, double min, double max, double *out) {
  char *end;
  double v;
  errno = 0;
  v = strtod(s, &end);
  if (errno || end == s || *end || !isfinite(v) || v < min || v > max) {
    fprintf(stderr, "pier-bench: --%s: expected a number %g..%g, got \"%s\"\n", name, min, max,
            s);
    return -EINVAL;
  }
  *out = v;
  return 0;
}

/* A comma-separated --port (nodes = 0) or --nodes (1) list into o. */
static int parse_list(const char *name, const char *arg, bench_opts *o, int nodes) {
  char *copy = strdup(arg), *save = NULL, *tok;
  unsigned n = 0;
  int rc = 0;
  if (!copy)
    return -ENOMEM;
  for (tok = strtok_r(copy, ",", &save); tok && rc == 0; tok = strtok_r(NULL, ",", &save)) {
    if (n == LOAD_MAX_TARGETS) {
      fprintf(stderr, "pier-bench: --%s: at most %d entries\n", name, LOAD_MAX_TARGETS);
      rc = -EINVAL;
    } else if (nodes) {
      if (strlen(tok) > 255 || strpbrk(tok, "\"\\")) {
        fprintf(stderr, "pier-bench: --nodes: a name is at most 255 bytes, without quotes or "
                        "backslashes\n");
        rc = -EINVAL;
      } else if (!(o->nodes[n++] = strdup(tok)))
        rc = -ENOMEM;
    } else {
      rc = parse_uint(name, tok, 1, 65535, &o->ports[n++]);
    }
  }
  if (rc == 0 && n == 0) {
    fprintf(stderr, "pier-bench: --%s: expected a comma-separated list, got \"%s\"\n", name,
            arg);
    rc = -EINVAL;
  }
  if (nodes)
    o->nnodes = n;
  else {
    o->nports = n;
    o->port = o->ports[0];
  }
  free(copy);
  return rc;
}

static int parse_args(int argc, char **argv, bench_opts *o) {
  static const struct option opts[] = {
      {"host", required_argument, NULL, 'H'},     {"port", required_argument, NULL, 'p'},
      {"conns", required_argument, NULL, 'c'},    {"size", required_argument, NULL, 's'},
      {"depth", required_argument, NULL, 'd'},    {"duration", required_argument, NULL, 'D'},
      {"warmup", required_argument, NULL, 'W'},   {"rate", required_argument, NULL, 'r'},
      {"rooms", required_argument, NULL, 'R'},    {"workers", required_argument, NULL, 'w'},
      {"io-backend", required_argument, NULL, 'b'}, {"server-pid", required_argument, NULL, 'P'},
      {"json", no_argument, NULL, 'j'},           {"help", no_argument, NULL, 'h'},
      {"ws", required_argument, NULL, 'S'},       {"origin", required_argument, NULL, 'O'},
      {"tls", no_argument, NULL, 'T'},            {"ca", required_argument, NULL, 'A'},
      {"colyseus", required_argument, NULL, 'C'}, {"drain-timeout", required_argument, NULL, 'X'},
      {"nodes", required_argument, NULL, 'N'},    {"sources", required_argument, NULL, 'I'},
      {"pause", required_argument, NULL, 'Z'},
      {NULL, 0, NULL, 0}};
  unsigned pid = 0;
  int c, rc = 0;

  *o = (bench_opts){.host = "127.0.0.1", .conns = 100, .size = 128, .depth = 1, .rooms = 1,
                    .workers = 1, .duration = 5, .warmup = 1, .drain = 5, .backend = "auto",
                    .port = -1, .sources = 1};
  if (argc < 2 || argv[1][0] == '-') {
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
      usage(stdout);
      exit(0);
    }
    fprintf(stderr, "pier-bench: expected a mode first: echo, chat, idle or churn\n");
    usage(stderr);
    return -EINVAL;
  }
  o->mode_name = argv[1];
  if (!strcmp(argv[1], "echo"))
    o->mode = MODE_ECHO;
  else if (!strcmp(argv[1], "chat"))
    o->mode = MODE_CHAT;
  else if (!strcmp(argv[1], "idle"))
    o->mode = MODE_IDLE;
  else if (!strcmp(argv[1], "churn"))
    o->mode = MODE_CHURN;
  else {
    fprintf(stderr, "pier-bench: unknown mode \"%s\" (expected echo, chat, idle or churn)\n",
            argv[1]);
    return -EINVAL;
  }
  optind = 2;
  while (rc == 0 && (c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'H': o->host = optarg; break;
    case 'p': rc = parse_list("port", optarg, o, 0); break;
    case 'N': rc = parse_list("nodes", optarg, o, 1); break;
    case 'c': rc = parse_uint("conns", optarg, 1, 1000000, &o->conns); break;
    case 's': rc = parse_uint("size", optarg, 1, 1u << 20, &o->size); break;
    case 'd': rc = parse_uint("depth", optarg, 1, 65536, &o->depth); o->depth_given = 1; break;
    case 'D': rc = parse_double("duration", optarg, 0.1, MAX_DURATION_S, &o->duration); break;
    case 'W': rc = parse_double("warmup", optarg, 0, 60, &o->warmup); break;
    case 'r': rc = parse_double("rate", optarg, 0, 1e9, &o->rate); o->rate_given = 1; break;
    case 'R': rc = parse_uint("rooms", optarg, 1, 1000000, &o->rooms); o->rooms_given = 1; break;
    case 'w':
      rc = parse_uint("workers", optarg, 1, 64, &o->workers);
      o->workers_given = 1;
      break;
    case 'I': rc = parse_uint("sources", optarg, 1, 254, &o->sources); break;
    case 'Z': rc = parse_double("pause", optarg, 0, 600, &o->pause); break;
    case 'b':
      o->backend = optarg;
      if (!io_backend_known(optarg)) {
        fprintf(stderr, "pier-bench: --io-backend: expected %s, got \"%s\"\n", io_backend_names,
                optarg);
        rc = -EINVAL;
      }
      break;
    case 'P': rc = parse_uint("server-pid", optarg, 1, 4194304, &pid); o->server_pid = pid; break;
    case 'j': o->json = 1; break;
    case 'S':
      o->ws_path = optarg;
      if (optarg[0] != '/' || strpbrk(optarg, " \t\r\n\"\\")) {
        fprintf(stderr, "pier-bench: --ws: expected a path starting with \"/\", without blanks, "
                        "quotes or backslashes, "
                        "got \"%s\"\n", optarg);
        rc = -EINVAL;
      }
      break;
    case 'O':
      o->origin = optarg;
      if (!*optarg || strpbrk(optarg, "\r\n")) {
        fprintf(stderr, "pier-bench: --origin: expected one header value, got \"%s\"\n", optarg);
        rc = -EINVAL;
      }
      break;
    case 'T': o->tls = 1; break;
    case 'X': rc = parse_double("drain-timeout", optarg, 0, 600, &o->drain); break;
    case 'A': o->ca = optarg; break;
    case 'C':
      o->colyseus = optarg;
      if (!*optarg || strspn(optarg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                     "0123456789_-") != strlen(optarg)) {
        fprintf(stderr, "pier-bench: --colyseus: expected a room name of letters, digits, _ "
                        "and -, got \"%s\"\n", optarg);
        rc = -EINVAL;
      }
      break;
    case 'h': usage(stdout); exit(0);
    default: usage(stderr); return -EINVAL;
    }
  }
  if (rc < 0)
    return rc;
  if (optind < argc) {
    fprintf(stderr, "pier-bench: unexpected argument \"%s\"\n", argv[optind]);
    return -EINVAL;
  }
  if (o->port < 0) {
    o->port = o->mode == MODE_CHAT ? 7778 : 7777;
    o->ports[0] = (unsigned)o->port;
    o->nports = 1;
  }
  if (o->mode == MODE_CHURN &&
      (o->ws_path || o->tls || o->colyseus || o->nports > 1 || o->nnodes || o->depth_given ||
       o->rate_given || o->rooms_given || o->workers_given || strcmp(o->backend, "auto"))) {
    fprintf(stderr, "pier-bench: churn is one message per connection over plain TCP on one "
                    "thread: --ws, --tls, --colyseus, --depth, --rate, --rooms, --workers, "
                    "--io-backend and several ports do not apply\n");
    return -EINVAL;
  }
  if (o->pause > 0 && o->mode != MODE_ECHO && o->mode != MODE_CHAT) {
    fprintf(stderr, "pier-bench: --pause is for echo and chat\n");
    return -EINVAL;
  }
  if (o->sources > 1 && o->mode != MODE_CHURN) {
    fprintf(stderr, "pier-bench: --sources is for churn mode\n");
    return -EINVAL;
  }
  if (o->mode == MODE_CHURN && o->size > 65536) {
    fprintf(stderr, "pier-bench: --size: churn messages are 1..65536 bytes, got %u\n", o->size);
    return -EINVAL;
  }
  if (o->nports > 1 && (o->mode != MODE_CHAT || o->ws_path || o->tls || o->colyseus)) {
    fprintf(stderr, "pier-bench: several ports are for chat over plain TCP\n");
    return -EINVAL;
  }
  if (o->nnodes && o->nnodes != o->nports) {
    fprintf(stderr, "pier-bench: --nodes: %u names for %u ports\n", o->nnodes, o->nports);
    return -EINVAL;
  }
  if (o->mode == MODE_CHAT && o->size > 512) {
    fprintf(stderr, "pier-bench: --size: chat text is 1..512 bytes, got %u\n", o->size);
    return -EINVAL;
  }
  if (o->mode == MODE_CHAT && o->rooms > o->conns) {
    fprintf(stderr, "pier-bench: --rooms %u: more rooms than connections (%u)\n", o->rooms,
            o->conns);
    return -EINVAL;
  }
  if (o->ca && !o->tls) {
    fprintf(stderr, "pier-bench: --ca needs --tls\n");
    return -EINVAL;
  }
  if (o->origin && !o->ws_path && !o->colyseus) {
    fprintf(stderr, "pier-bench: --origin needs --ws or --colyseus\n");
    return -EINVAL;
  }
  if (o->colyseus && (o->ws_path || o->tls || o->mode != MODE_CHAT || o->rooms != 1)) {
    fprintf(stderr, "pier-bench: --colyseus is for chat mode with one room, without --ws (the "
                    "seat names the path) and without --tls\n");
    return -EINVAL;
  }
  if ((uint64_t)o->depth * o->size > (64u << 20)) {
    fprintf(stderr, "pier-bench: --depth x --size is over 64 MiB per connection\n");
    return -EINVAL;
  }
  return 0;
}

static void take(load *l, const bench_opts *o, sample *s) {
  s->t_ns = now_ns();
  load_totals_get(l, &s->tot);
  s->client_cpu = self_cpu_seconds();
  s->server_cpu = -1;
  if (o->server_pid)
    (void)proc_cpu_seconds((pid_t)o->server_pid, &s->server_cpu);
}

static double us(uint64_t ns) { return (double)ns / 1000.0; }

/* "tcp", "tls", "ws", "wss" or "colyseus". */
static const char *transport(const bench_opts *o) {
  if (o->colyseus)
    return "colyseus";
  if (o->ws_path)
    return o->tls ? "wss" : "ws";
  return o->tls ? "tls" : "tcp";
}

static void progress(const bench_opts *o, load *l, const sample *a, const sample *b,
                     double t, int warm) {
  double dt = (double)(b->t_ns - a->t_ns) / 1e9;
  hist_snap d;
  hist_diff(&b->tot.lat, &a->tot.lat, &d);
  if (dt <= 0)
    return;
  fprintf(stderr, "t=%.0fs msgs/s=%.0f", t, (double)(b->tot.msgs - a->tot.msgs) / dt);
  if (o->mode == MODE_CHAT)
    fprintf(stderr, " deliveries/s=%.0f", (double)(b->tot.deliveries - a->tot.deliveries) / dt);
  fprintf(stderr, " p50=%.1fus p99=%.1fus errors=%" PRIu64 "%s\n", us(hist_quantile(&d, 0.5)),
          us(hist_quantile(&d, 0.99)), load_errors(l), warm ? " (warmup)" : "");
}

/* Sleeps until `until`, at most 100 ms at a time so a signal is noticed. */
static void wait_until(uint64_t until) {
  while (!g_stop) {
    uint64_t now = now_ns();
    if (now >= until)
      return;
    sleep_until_ns(until - now > 100000000ull ? now + 100000000ull : until);
  }
}

static void rss(const bench_opts *o, long long *out) {
  uint64_t v;
  *out = -1;
  if (o->server_pid && proc_rss_kib((pid_t)o->server_pid, &v) == 0)
    *out = (long long)v;
}

typedef struct result {
  sample a, b;       /* window edges */
  hist_snap lat;     /* latency in the window */
  long long rss_before, rss_connected, rss_after;
  unsigned connected;
  uint64_t msgs_total; /* completed in all: warmup, window and drain */
  uint64_t unanswered;
  int ok;
} result;

/* {"count": N, "p50": ...} of a delivery histogram (µs), null when empty. */
static void json_hist(FILE *f, const hist_snap *h) {
  if (hist_count(h) == 0) {
    fprintf(f, "null");
    return;
  }
  fprintf(f, "{\"count\": %" PRIu64 ", ", hist_count(h));
  json_num(f, "p50", us(hist_quantile(h, 0.5)), 0);
  json_num(f, "p90", us(hist_quantile(h, 0.9)), 0);
  json_num(f, "p99", us(hist_quantile(h, 0.99)), 0);
  json_num(f, "p999", us(hist_quantile(h, 0.999)), 0);
  json_num(f, "max", us(hist_max(h)), 1);
  fprintf(f, "}");
}

static void report(const bench_opts *o, load *l, const result *r) {
  double dt = (double)(r->b.t_ns - r->a.t_ns) / 1e9;
  uint64_t msgs = r->b.tot.msgs - r->a.tot.msgs, bytes = r->b.tot.bytes - r->a.tot.bytes;
  uint64_t deliv = r->b.tot.deliveries - r->a.tot.deliveries;
  double ccpu = r->b.client_cpu - r->a.client_cpu;
  double scpu = r->a.server_cpu >= 0 && r->b.server_cpu >= 0 ? r->b.server_cpu - r->a.server_cpu
                                                               : -1;
  const hist_snap *h = &r->lat;
  uint64_t remote = r->b.tot.remote - r->a.tot.remote;
  hist_snap same, other;
  char target[256];
  size_t tl;

  hist_diff(&r->b.tot.lat_same, &r->a.tot.lat_same, &same);
  hist_diff(&r->b.tot.lat_other, &r->a.tot.lat_other, &other);
  tl = (size_t)snprintf(target, sizeof(target), strchr(o->host, ':') ? "[%s]:%ld" : "%s:%ld",
                        o->host, o->port);
  for (unsigned i = 1; i < o->nports && tl < sizeof(target); i++)
    tl += (size_t)snprintf(target + tl, sizeof(target) - tl, ",%u", o->ports[i]);
  if (dt <= 0)
    dt = 1e-9;
  if (o->json) {
    FILE *f = stdout;
    fprintf(f, "{\"mode\": \"%s\", \"target\": \"%s\", \"transport\": \"%s\", ", o->mode_name,
            target, transport(o));
    if (o->ws_path)
      fprintf(f, "\"ws_path\": \"%s\", ", o->ws_path); /* no quote or backslash: checked */
    fprintf(f, "\"client_backend\": \"%s\", ", load_backend(l));
    fprintf(f, "\"client_workers\": %u, \"conns\": %u, \"connected\": %u, \"size\": %u, ",
            o->workers, o->conns, r->connected, o->size);
    fprintf(f, "\"depth\": %u, ", o->depth);
    json_num(f, "rate", o->rate > 0 ? o->rate : -1, 0);
    fprintf(f, "\"rooms\": %u, ", o->mode == MODE_CHAT ? o->rooms : 0);
    json_num(f, "warmup_s", o->mode == MODE_IDLE ? 0 : o->warmup, 0);
    json_num(f, "duration_s", dt, 0);
    fprintf(f, "\"msgs\": %" PRIu64 ", \"msgs_total\": %" PRIu64 ", ", msgs, r->msgs_total);
    json_num(f, "msgs_per_s", (double)msgs / dt, 0);
    json_num(f, "bytes_per_s", (double)bytes / dt, 0);
    fprintf(f, "\"deliveries\": %" PRIu64 ", ", o->mode == MODE_CHAT ? deliv : msgs);
    json_num(f, "deliveries_per_s", (double)(o->mode == MODE_CHAT ? deliv : msgs) / dt, 0);
    fprintf(f, "\"notices\": %" PRIu64 ", \"foreign\": %" PRIu64 ", ",
            r->b.tot.notices - r->a.tot.notices, r->b.tot.foreign - r->a.tot.foreign);
    fprintf(f, "\"nodes\": ");
    if (o->nnodes) {
      for (unsigned i = 0; i < o->nnodes; i++)
        fprintf(f, "%s\"%s\"", i ? ", " : "[", o->nodes[i]); /* checked: no quotes */
      fprintf(f, "], ");
    } else {
      fprintf(f, "null, ");
    }
    fprintf(f, "\"remote_deliveries\": %" PRIu64 ", ", remote);
    fprintf(f, "\"delivery_latency_us\": {\"same_node\": ");
    json_hist(f, &same);
    fprintf(f, ", \"other_nodes\": ");
    json_hist(f, &other);
    fprintf(f, "}, ");
    fprintf(f, "\"latency_us\": {");
    json_num(f, "min", us(hist_min(h)), 0);
    json_num(f, "mean", hist_mean(h) / 1000.0, 0);
    json_num(f, "p50", us(hist_quantile(h, 0.5)), 0);
    json_num(f, "p90", us(hist_quantile(h, 0.9)), 0);
    json_num(f, "p99", us(hist_quantile(h, 0.99)), 0);
    json_num(f, "p999", us(hist_quantile(h, 0.999)), 0);
    json_num(f, "max", us(hist_max(h)), 1);
    fprintf(f, "}, \"errors\": %" PRIu64 ", \"mismatched_bytes\": %" PRIu64
               ", \"unanswered\": %" PRIu64 ", ",
            load_errors(l), r->b.tot.mismatched, r->unanswered);
    json_cpu(f, ccpu, o->server_pid, scpu, dt);
    json_num(f, "server_cpu_us_per_msg", scpu >= 0 && msgs ? scpu * 1e6 / (double)msgs : -1, 0);
    json_num(f, "server_cpu_us_per_delivery",
             scpu >= 0 && o->mode == MODE_CHAT && deliv ? scpu * 1e6 / (double)deliv : -1, 0);
    fprintf(f, "\"server_rss_kib\": {");
    json_num(f, "before", (double)r->rss_before, 0);
    json_num(f, "connected", (double)r->rss_connected, 0);
    json_num(f, "after", (double)r->rss_after, 1);
    fprintf(f, "}, \"ok\": %s}\n", r->ok ? "true" : "false");
    return;
  }
  printf("%s %s", o->mode_name, target);
  if (o->ws_path || o->tls || o->colyseus)
    printf(" %s%s", transport(o), o->ws_path ? o->ws_path : "");
  printf(" (%s client): %u conns, %u B", load_backend(l), o->conns, o->size);
  if (o->mode != MODE_IDLE) {
    if (o->rate > 0)
      printf(", rate %.0f/s (at most %u in flight)", o->rate, o->depth);
    else
      printf(", depth %u", o->depth);
  }
  if (o->mode == MODE_CHAT)
    printf(", %u room%s", o->rooms, o->rooms == 1 ? "" : "s");
  printf(", %.2f s: %.0f msgs/s (%.1f MB/s)", dt, (double)msgs / dt, (double)bytes / dt / 1e6);
  if (o->mode == MODE_CHAT)
    printf(", %.0f deliveries/s", (double)deliv / dt);
  if (o->mode == MODE_CHAT && o->nports > 1)
    printf(" (%.0f/s from other nodes)", (double)remote / dt);
  printf("; latency us p50 %.1f p90 %.1f p99 %.1f p99.9 %.1f max %.1f",
         us(hist_quantile(h, 0.5)), us(hist_quantile(h, 0.9)), us(hist_quantile(h, 0.99)),
         us(hist_quantile(h, 0.999)), us(hist_max(h)));
  if (hist_count(&same))
    printf("; delivery us on the sender's node p50 %.1f p99 %.1f", us(hist_quantile(&same, 0.5)),
           us(hist_quantile(&same, 0.99)));
  if (hist_count(&other))
    printf("; on other nodes p50 %.1f p99 %.1f", us(hist_quantile(&other, 0.5)),
           us(hist_quantile(&other, 0.99)));
  printf("; errors %" PRIu64 ", mismatched bytes %" PRIu64 "; client cpu %.0f%%",
         load_errors(l), r->b.tot.mismatched, 100.0 * ccpu / dt);
  if (scpu >= 0) {
    printf("; server cpu %.0f%%", 100.0 * scpu / dt);
    if (msgs)
      printf(", %.2f us/msg", scpu * 1e6 / (double)msgs);
    if (o->mode == MODE_CHAT && deliv)
      printf(", %.3f us/delivery", scpu * 1e6 / (double)deliv);
  }
  if (r->rss_before >= 0 && r->rss_after >= 0) {
    printf("; server rss %lld -> %lld KiB", r->rss_before, r->rss_after);
    if (o->mode == MODE_IDLE)
      printf(" (%.0f B per connection)",
             (double)(r->rss_after - r->rss_before) * 1024.0 / (double)o->conns);
  }
  printf("; %s\n", r->ok ? "ok" : "FAILED");
}

/* echo and chat: warmup, then the measured window with a line a second. */
static void run_traffic(const bench_opts *o, load *l, result *r) {
  uint64_t t0, t_meas, t_end, next;
  sample prev, cur;
  int measuring = 0;
  load_totals tot;

  if (o->pause > 0) {
    fprintf(stderr, "pier-bench: %u connections open, traffic in %g s\n", load_open(l),
            o->pause);
    wait_until(now_ns() + (uint64_t)(o->pause * 1e9));
  }
  load_start(l);
  t0 = now_ns();
  t_meas = t0 + (uint64_t)(o->warmup * 1e9);
  t_end = t_meas + (uint64_t)(o->duration * 1e9);
  take(l, o, &prev);
  r->a = prev;
  if (o->warmup <= 0)
    measuring = 1;
  next = t0 + 1000000000ull;
  while (!g_stop) {
    uint64_t wake = next;
    if (!measuring && t_meas < wake)
      wake = t_meas;
    if (t_end < wake && measuring)
      wake = t_end;
    wait_until(wake);
    if (g_stop)
      break;
    take(l, o, &cur);
    if (!measuring && cur.t_ns >= t_meas) {
      measuring = 1;
      r->a = cur;
      t_end = cur.t_ns + (uint64_t)(o->duration * 1e9); /* a late wake-up shortens nothing */
    }
    if (measuring && cur.t_ns >= t_end) {
      r->b = cur;
      break;
    }
    if (cur.t_ns >= next) {
      progress(o, l, &prev, &cur, (double)(cur.t_ns - t0) / 1e9, prev.t_ns < t_meas);
      prev = cur;
      next += 1000000000ull;
    }
  }
  if (g_stop) { /* interrupted: report what was measured so far */
    take(l, o, &r->b);
    if (!measuring)
      r->a = r->b;
  }
  if (r->b.t_ns - prev.t_ns >= 250000000ull) /* the last partial second, if any */
    progress(o, l, &prev, &r->b, (double)(r->b.t_ns - t0) / 1e9, 0);
  rss(o, &r->rss_after);
  load_set_phase(l, PH_DRAIN);
  {
    uint64_t deadline = now_ns() + (uint64_t)(o->drain * 1e9);
    while ((r->unanswered = load_outstanding(l)) > 0 && now_ns() < deadline && load_open(l) > 0)
      wait_until(now_ns() + 5000000ull);
    if (r->unanswered)
      load_error(l, "%" PRIu64 " messages were not answered within %.0f s after the run",
                 r->unanswered, o->drain);
  }
  load_totals_get(l, &tot);
  r->msgs_total = tot.msgs;
  if (o->pause > 0 && !g_stop) {
    fprintf(stderr, "pier-bench: traffic done, %" PRIu64 " messages in all, closing in %g s\n",
            tot.msgs, o->pause);
    wait_until(now_ns() + (uint64_t)(o->pause * 1e9));
  }
}

/* idle: one verified echo per connection, then hold them all. */
static void run_idle(const bench_opts *o, load *l, result *r) {
  uint64_t deadline, t0, next;
  sample s;

  wait_until(now_ns() + SETTLE_MS * 1000000ull);
  rss(o, &r->rss_connected);
  take(l, o, &r->a);
  load_start(l);
  deadline = now_ns() + (uint64_t)(CONNECT_TIMEOUT_S * 1e9);
  while (!g_stop && now_ns() < deadline) {
    load_totals t;
    load_totals_get(l, &t);
    if (t.msgs + t.lost >= o->conns || load_errors(l))
      break;
    wait_until(now_ns() + 2000000ull);
  }
  r->unanswered = load_outstanding(l);
  if (r->unanswered)
    load_error(l, "%" PRIu64 " connections got no echo of their message", r->unanswered);
  wait_until(now_ns() + SETTLE_MS * 1000000ull);
  t0 = now_ns();
  next = t0 + 1000000000ull;
  while (!g_stop && now_ns() < t0 + (uint64_t)(o->duration * 1e9)) {
    uint64_t end = t0 + (uint64_t)(o->duration * 1e9);
    wait_until(next < end ? next : end);
    if (now_ns() >= next) {
      fprintf(stderr, "t=%.0fs open=%u errors=%" PRIu64 "\n", (double)(next - t0) / 1e9,
              load_open(l), load_errors(l));
      next += 1000000000ull;
    }
  }
  rss(o, &r->rss_after);
  take(l, o, &s);
  r->b = s;
  r->msgs_total = s.tot.msgs;
  r->b.t_ns = r->a.t_ns + (s.t_ns - t0); /* report the hold time as the duration */
  if (load_open(l) < o->conns)
    load_error(l, "%u of %u connections were closed while idle", o->conns - load_open(l),
               o->conns);
}

/* churn: on its own sockets (tools/bench/churn.c); host is the --host
 * literal, freed here. Returns the exit status. */
static int run_churn(const bench_opts *o, const net_addr *addr, char *host) {
  churn_opts co;
  char target[NET_ADDR_STRLEN];
  int rc;

  memset(&co, 0, sizeof(co));
  co.addr = *addr;
  co.target = net_addr_format(addr, target, sizeof(target));
  co.conns = o->conns;
  co.size = o->size;
  co.sources = o->sources;
  co.duration = o->duration;
  co.warmup = o->warmup;
  co.drain = o->drain;
  co.server_pid = o->server_pid;
  co.json = o->json;
  co.stop = &g_stop;
  if (co.sources > 1 && (addr->u.sa.sa_family != AF_INET ||
                         (ntohl(addr->u.in4.sin_addr.s_addr) >> 24) != 127)) {
    fprintf(stderr, "pier-bench: --sources is for an IPv4 loopback server (127.x.x.x), "
                    "got %s\n", host);
    free(host);
    return 2;
  }
  free(host);
  rc = churn_run(&co);
  return rc;
}

int main(int argc, char **argv) {
  bench_opts o;
  load_opts lo;
  load *l;
  result r;
  char *host;
  int rc;

  if (parse_args(argc, argv, &o) < 0)
    return 2;
  memset(&r, 0, sizeof(r));
  r.rss_before = r.rss_connected = r.rss_after = -1;
  memset(&lo, 0, sizeof(lo));
  lo.mode = o.mode;
  lo.conns = o.conns;
  lo.size = o.size;
  lo.depth = o.depth;
  lo.cap = o.mode == MODE_IDLE ? 1 : o.rate > 0 && !o.depth_given ? 1024 : o.depth;
  if (o.rate > 0 && !o.depth_given)
    o.depth = lo.cap;
  lo.rooms = o.rooms;
  lo.workers = o.workers;
  lo.rate = o.mode == MODE_IDLE ? 0 : o.rate;
  lo.backend = o.backend;
  if (o.ws_path || o.tls || o.colyseus) {
    static wire_opts wo;
    wo.tls = o.tls;
    wo.ca = o.ca;
    wo.ws_path = o.ws_path;
    wo.origin = o.origin;
    wo.colyseus = o.colyseus;
    lo.wire = &wo;
  }
  host = strdup(o.host);
  if (!host)
    return 1;
  if (host[0] == '[' && host[strlen(host) - 1] == ']') { /* "[::1]" */
    memmove(host, host + 1, strlen(host));
    host[strlen(host) - 1] = '\0';
  }
  if (net_addr_parse(host, (uint16_t)o.port, &lo.addr) < 0) {
    fprintf(stderr, "pier-bench: --host: expected an IPv4 or IPv6 address literal, got \"%s\"\n",
            o.host);
    free(host);
    return 2;
  }
  for (unsigned i = 0; i < o.nports; i++) {
    (void)net_addr_parse(host, (uint16_t)o.ports[i], &lo.targets[i]);
    lo.nodes[i] = o.nodes[i];
  }
  lo.ntargets = o.nports;
  o.host = host;
  if (ensure_fds(o.conns) < 0)
    return 1;
  if (o.server_pid) {
    double cpu;
    if (proc_cpu_seconds((pid_t)o.server_pid, &cpu) < 0) {
      fprintf(stderr, "pier-bench: --server-pid %ld: no such process readable in /proc\n",
              o.server_pid);
      return 1;
    }
  }
  log_set_level(LOG_WARN);
  (void)os_interrupt_install(on_stop);
  if (o.mode == MODE_CHURN)
    return run_churn(&o, &lo.addr, host);
  /* Workers are created holding SIGINT/SIGTERM back: the main thread gets
   * them. */
  os_interrupt_hold();

  rss(&o, &r.rss_before);
  rc = load_create(&lo, &l);
  os_interrupt_release();
  if (rc < 0)
    return 1;

  rc = load_connect_all(l, CONNECT_WINDOW, CONNECT_TIMEOUT_S, (volatile int *)&g_stop);
  r.connected = load_open(l);
  if (rc == 0 && o.mode == MODE_CHAT)
    rc = load_wait_joined(l, JOIN_TIMEOUT_S, (volatile int *)&g_stop);
  if (rc == 0) {
    if (o.mode == MODE_IDLE)
      run_idle(&o, l, &r);
    else
      run_traffic(&o, l, &r);
    hist_diff(&r.b.tot.lat, &r.a.tot.lat, &r.lat);
  } else {
    take(l, &o, &r.a);
    r.b = r.a;
  }
  load_stop(l);
  if (rc == 0 && r.b.tot.msgs == r.a.tot.msgs)
    load_error(l, "nothing was measured: no message completed in the measured interval");
  r.ok = rc == 0 && load_errors(l) == 0 && !g_stop;
  if (g_stop)
    fprintf(stderr, "pier-bench: interrupted\n");
  report(&o, l, &r);
  load_destroy(l);
  free(host);
  return r.ok ? 0 : 1;
}
