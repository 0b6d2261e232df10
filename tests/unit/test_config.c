/* Unit tests for server.json loading: the shipped default config, defaults,
 * path resolution, and the exact one-line message for each kind of mistake.
 * Also feeds truncated, mutated and pathological inputs to show they fail
 * cleanly. The same rules hold on Windows, where pier joins paths with '\\'
 * (TEST_SEP), writes every separator of a resolved path as '\\' (native())
 * and a plugin file is a .dll (TEST_DL_EXT). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "host/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "os/path.h"
#include "testlib.h"

#ifndef PIER_SOURCE_DIR
#define PIER_SOURCE_DIR "."
#endif

/* The default config; on Windows the build tree's copy, which leaves out
 * the WebSocket listener (that build has no WebSocket support). */
#ifdef _WIN32
#define DEFAULT_DIR PIER_BINARY_DIR "/config"
#else
#define DEFAULT_DIR PIER_SOURCE_DIR "/config"
#endif
#define DEFAULT_CONFIG DEFAULT_DIR "/server.json"

/* JSON in the tests is written with ' for " to stay readable. */
static char *dq(const char *s) {
  char *t = strdup(s);
  ck_assert_ptr_nonnull(t);
  for (char *p = t; *p; p++)
    if (*p == '\'')
      *p = '"';
  return t;
}

/* A resolved path as the config makes it: on Windows every '/' becomes
 * '\\' (os_path_normalize); as given elsewhere. Returns one of four static
 * buffers, so a few can be used in one call. */
static const char *native(const char *s) {
  static char buf[4][1024];
  static int k;
  char *r = buf[k++ % 4];
  snprintf(r, sizeof(buf[0]), "%s", s);
#ifdef _WIN32
  for (char *p = r; *p; p++)
    if (*p == '/')
      *p = '\\';
#endif
  return r;
}

/* Loads text written with ' for " as "server.json" with base_dir "/srv". */
static int load(const char *json, cfg_server **out, char *err, size_t errlen) {
  char *t = dq(json);
  int rc = cfg_load_text(t, strlen(t), "server.json", "/srv", out, err, errlen);
  free(t);
  return rc;
}

#define PL "'plugins':[{'name':'echo','path':'echo.so'}]"
#define LS "'listeners':[{'port':7777,'plugin':'echo'}]"
#define PL2 "'plugins':[{'name':'echo','path':'e.so'},{'name':'chat','path':'c.so'}]"

START_TEST(test_config_default_file_loads) {
  cfg_server *cfg = NULL;
  char err[512];
  int rc = cfg_load_file(DEFAULT_CONFIG, &cfg, err, sizeof err);
  ck_assert_msg(rc == 0, "%s", err);
  ck_assert_str_eq(cfg->path, DEFAULT_CONFIG);
  ck_assert_str_eq(cfg->base_dir, DEFAULT_DIR);
  ck_assert_uint_eq(cfg->workers, 1);
  ck_assert_int_eq(cfg->io_backend, CFG_BACKEND_AUTO);
  ck_assert_uint_eq(cfg->max_sessions, 10000);
  ck_assert_int_eq(cfg->log_level, CFG_LOG_INFO);
  ck_assert_ptr_null(cfg->log_file);
  ck_assert_int_eq(cfg->log_format, CFG_LOG_FORMAT_TEXT);
  ck_assert_str_eq(cfg->admin_socket, native(DEFAULT_DIR TEST_SEP "run/pierd.sock"));
  ck_assert_uint_eq(cfg->limits.max_packet_size, 16384);
  ck_assert_uint_eq(cfg->limits.max_send_queue, 1048576);
  ck_assert_uint_eq(cfg->limits.idle_timeout_ms, 0);

  ck_assert_uint_eq(cfg->nplugins, 3);
  ck_assert_str_eq(cfg->plugins[0].name, "echo");
  ck_assert_str_eq(cfg->plugins[0].path, "../plugins/echo");
  ck_assert_str_eq(cfg->plugins[0].resolved_path,
                   native(DEFAULT_DIR TEST_SEP "../plugins/echo" TEST_DL_EXT));
  ck_assert_str_eq(cfg->plugins[1].name, "chat");
  ck_assert_str_eq(cfg->plugins[1].path, "../plugins/chat");
  ck_assert_str_eq(cfg->plugins[1].resolved_path,
                   native(DEFAULT_DIR TEST_SEP "../plugins/chat" TEST_DL_EXT));
  ck_assert_str_eq(cfg->plugins[1].config_json, "{}");
  ck_assert_str_eq(cfg->plugins[2].name, "lobby");
  ck_assert_str_eq(cfg->plugins[2].resolved_path,
                   native(DEFAULT_DIR TEST_SEP "../plugins/lobby" TEST_DL_EXT));
  ck_assert_int_eq(cfg->plugins[2].threading, CFG_THREADING_SERIAL);

#ifdef _WIN32
  ck_assert_uint_eq(cfg->nlisteners, 3);
#else
  ck_assert_uint_eq(cfg->nlisteners, 4);
  ck_assert_uint_eq(cfg->listeners[3].port, 7780);
  ck_assert_str_eq(cfg->listeners[3].plugin, "chat");
  ck_assert_int_eq(cfg->listeners[3].transport, CFG_TRANSPORT_WEBSOCKET);
  ck_assert_int_eq(cfg->listeners[3].framing, CFG_FRAMING_U16_SIZE_ID);
  ck_assert_str_eq(cfg->listeners[3].ws_path, "/chat");
  ck_assert_ptr_null(cfg->listeners[3].tls_cert);
  ck_assert_ptr_null(cfg->listeners[3].origins);
  ck_assert_str_eq(cfg->listeners[3].static_dir, DEFAULT_DIR "/../plugins/chat/web");
  ck_assert_ptr_nonnull(cfg->listeners[3].static_root);
  ck_assert_ptr_nonnull(strstr(cfg->listeners[3].static_root, "/plugins/chat/web"));
  ck_assert_uint_eq(cfg->listeners[3].ping_interval_ms, 30000);
  ck_assert_uint_eq(cfg->listeners[3].handshake_timeout_ms, 10000);
#endif
  ck_assert_int_eq(cfg->listeners[0].transport, CFG_TRANSPORT_TCP);
  ck_assert_str_eq(cfg->listeners[0].address, "127.0.0.1");
  ck_assert_uint_eq(cfg->listeners[0].port, 7777);
  ck_assert_str_eq(cfg->listeners[0].plugin, "echo");
  ck_assert_uint_eq(cfg->listeners[0].plugin_index, 0);
  ck_assert_int_eq(cfg->listeners[0].framing, CFG_FRAMING_RAW);
  ck_assert_str_eq(cfg->listeners[1].address, "127.0.0.1");
  ck_assert_uint_eq(cfg->listeners[1].port, 7778);
  ck_assert_str_eq(cfg->listeners[1].plugin, "chat");
  ck_assert_uint_eq(cfg->listeners[1].plugin_index, 1);
  ck_assert_int_eq(cfg->listeners[1].framing, CFG_FRAMING_U16_SIZE_ID);
  ck_assert_uint_eq(cfg->listeners[2].port, 7779);
  ck_assert_str_eq(cfg->listeners[2].plugin, "lobby");
  ck_assert_uint_eq(cfg->listeners[2].plugin_index, 2);
  ck_assert_int_eq(cfg->listeners[2].framing, CFG_FRAMING_RAW);
  cfg_free(cfg);
}
END_TEST

START_TEST(test_config_defaults_when_absent) {
  cfg_server *cfg = NULL;
  char err[512];
  int rc = load("{" PL "," LS "}", &cfg, err, sizeof err);
  ck_assert_msg(rc == 0, "%s", err);
  ck_assert_str_eq(cfg->path, "server.json");
  ck_assert_str_eq(cfg->base_dir, "/srv");
  ck_assert_uint_eq(cfg->workers, 1);
  ck_assert_int_eq(cfg->io_backend, CFG_BACKEND_AUTO);
  ck_assert_uint_eq(cfg->max_sessions, 10000);
  ck_assert_int_eq(cfg->log_level, CFG_LOG_INFO);
  ck_assert_str_eq(cfg->admin_socket, native("/srv" TEST_SEP "run/pierd.sock"));
  ck_assert_uint_eq(cfg->limits.max_packet_size, 16384);
  ck_assert_uint_eq(cfg->limits.max_send_queue, 1048576);
  ck_assert_uint_eq(cfg->limits.idle_timeout_ms, 0);
  ck_assert_uint_eq(cfg->limits.packet_timeout_ms, 10000);
  ck_assert_uint_eq(cfg->limits.max_conns_per_ip, 0);
  ck_assert_uint_eq(cfg->limits.slow_callback_ms, 100);
  ck_assert_uint_eq(cfg->limits.quarantine_after, 0);
  ck_assert_uint_eq(cfg->limits.send_timeout_ms, 30000);
  ck_assert_uint_eq(cfg->limits.recv_backlog, 65536);
  ck_assert_uint_eq(cfg->limits.plugin_backlog, 16777216);
  ck_assert_ptr_null(cfg->user);
  ck_assert_ptr_null(cfg->group);
  ck_assert_uint_eq(cfg->drain_timeout_ms, 0);
  const cfg_plugin *p = &cfg->plugins[0];
  ck_assert_ptr_null(p->callbacks.on_load);
  ck_assert_ptr_null(p->callbacks.on_unload);
  ck_assert_ptr_null(p->callbacks.on_connected);
  ck_assert_ptr_null(p->callbacks.on_recv);
  ck_assert_ptr_null(p->callbacks.on_send);
  ck_assert_ptr_null(p->callbacks.on_disconnected);
  ck_assert_ptr_null(p->callbacks.on_tick);
  ck_assert_str_eq(p->config_json, "{}");
  ck_assert_int_eq(p->threading, CFG_THREADING_SESSION);
  ck_assert_uint_eq(p->tick_ms, 0);
  ck_assert_int_eq(p->watch, 0);
  ck_assert_str_eq(cfg->listeners[0].address, "127.0.0.1");
  ck_assert_int_eq(cfg->listeners[0].framing, CFG_FRAMING_RAW);
  ck_assert_ptr_null(cfg->metrics_address); /* no "metrics": no HTTP listener */
  cfg_free(cfg);
}
END_TEST

/* "metrics": {} turns the HTTP listener on at its defaults. */
START_TEST(test_config_metrics_defaults) {
  cfg_server *cfg = NULL;
  char err[512];
  int rc = load("{'metrics':{}," PL "," LS "}", &cfg, err, sizeof err);
  ck_assert_msg(rc == 0, "%s", err);
  ck_assert_str_eq(cfg->metrics_address, "127.0.0.1");
  ck_assert_uint_eq(cfg->metrics_port, 9100);
  cfg_free(cfg);
}
END_TEST

START_TEST(test_config_every_key_set) {
  cfg_server *cfg = NULL;
  char err[512];
  int rc = load(
      "{'workers':64,'io_backend':'epoll','max_sessions':1000000,"
      "'log_level':'debug','admin_socket':'/run/p.sock',"
      "'log_file':'/var/log/pierd.log','log_format':'json',"
      "'metrics':{'address':'::1','port':0},"
      "'limits':{'max_packet_size':4,'max_send_queue':1073741824,"
      "'idle_timeout_ms':86400000,'send_timeout_ms':3600000,"
      "'recv_backlog':16777216,'plugin_backlog':1073741824},"
      "'plugins':[{'name':'A-z_9','path':'/opt/a.so','threading':'serial',"
      "'tick_ms':3600000,'watch':true,'config':{'greeting':'hi','n':[1,2.5,"
      "true,null,-3],'o':{}},'callbacks':{'on_load':'a','on_unload':'b',"
      "'on_connected':'c','on_recv':'d','on_send':'e','on_disconnected':'f',"
      "'on_tick':'_g9'}}],"
      "'listeners':[{'address':'::1','port':0,'plugin':'A-z_9',"
      "'framing':'u16_size_id'},{'address':'::1','port':0,'plugin':'A-z_9'}]}",
      &cfg, err, sizeof err);
  ck_assert_msg(rc == 0, "%s", err);
  ck_assert_uint_eq(cfg->workers, 64);
  ck_assert_int_eq(cfg->io_backend, CFG_BACKEND_EPOLL);
  ck_assert_uint_eq(cfg->max_sessions, 1000000);
  ck_assert_int_eq(cfg->log_level, CFG_LOG_DEBUG);
  ck_assert_str_eq(cfg->log_file, native("/var/log/pierd.log"));
  ck_assert_int_eq(cfg->log_format, CFG_LOG_FORMAT_JSON);
  ck_assert_str_eq(cfg->admin_socket, native("/run/p.sock"));
  ck_assert_str_eq(cfg->metrics_address, "::1");
  ck_assert_uint_eq(cfg->metrics_port, 0);
  ck_assert_uint_eq(cfg->limits.max_packet_size, 4);
  ck_assert_uint_eq(cfg->limits.max_send_queue, 1073741824);
  ck_assert_uint_eq(cfg->limits.idle_timeout_ms, 86400000);
  ck_assert_uint_eq(cfg->limits.send_timeout_ms, 3600000);
  ck_assert_uint_eq(cfg->limits.recv_backlog, 16777216);
  ck_assert_uint_eq(cfg->limits.plugin_backlog, 1073741824);
  const cfg_plugin *p = &cfg->plugins[0];
  ck_assert_str_eq(p->name, "A-z_9");
  ck_assert_int_eq(p->threading, CFG_THREADING_SERIAL);
  ck_assert_uint_eq(p->tick_ms, 3600000);
  ck_assert_int_eq(p->watch, 1);
  ck_assert_str_eq(p->config_json,
                   "{\"greeting\":\"hi\",\"n\":[1,2.5,true,null,-3],\"o\":{}}");
  ck_assert_str_eq(p->callbacks.on_load, "a");
  ck_assert_str_eq(p->callbacks.on_unload, "b");
  ck_assert_str_eq(p->callbacks.on_connected, "c");
  ck_assert_str_eq(p->callbacks.on_recv, "d");
  ck_assert_str_eq(p->callbacks.on_send, "e");
  ck_assert_str_eq(p->callbacks.on_disconnected, "f");
  ck_assert_str_eq(p->callbacks.on_tick, "_g9");
  ck_assert_uint_eq(cfg->nlisteners, 2); /* port 0 twice is no conflict */
  ck_assert_str_eq(cfg->listeners[0].address, "::1");
  ck_assert_uint_eq(cfg->listeners[0].port, 0);
  ck_assert_int_eq(cfg->listeners[0].framing, CFG_FRAMING_U16_SIZE_ID);
  cfg_free(cfg);
}
END_TEST

/* "user" and "group" are names looked up when pierd starts (POSIX); the
 * drain timeout is checked here, on every platform. */
START_TEST(test_config_user_group_drain) {
  cfg_server *cfg = NULL;
  char err[512];
  int rc = load("{'drain_timeout_ms':3600000," PL "," LS "}", &cfg, err, sizeof err);
  ck_assert_msg(rc == 0, "%s", err);
  ck_assert_uint_eq(cfg->drain_timeout_ms, 3600000);
  cfg_free(cfg);
  cfg = (cfg_server *)&cfg;
  rc = load("{'drain_timeout_ms':3600001,'user':''," PL "," LS "}", &cfg, err, sizeof err);
  ck_assert_int_lt(rc, 0);
  ck_assert_ptr_null(cfg);
#ifdef _WIN32
  ck_assert_str_eq(err, "server.json: drain_timeout_ms: expected an integer 0..3600000, got "
                        "3600001\n"
                        "server.json: user: not supported on Windows (run pierd.exe under "
                        "the account it should use)");
  rc = load("{'group':'games'," PL "," LS "}", &cfg, err, sizeof err);
  ck_assert_int_lt(rc, 0);
  ck_assert_str_eq(err, "server.json: group: not supported on Windows (run pierd.exe under "
                        "the account it should use)");
#else
  ck_assert_str_eq(err, "server.json: drain_timeout_ms: expected an integer 0..3600000, got "
                        "3600001\n"
                        "server.json: user: expected a non-empty string (user name), got \"\"");
  rc = load("{'user':'games','group':7," PL "," LS "}", &cfg, err, sizeof err);
  ck_assert_int_lt(rc, 0);
  ck_assert_str_eq(err, "server.json: group: expected a non-empty string (group name), got 7");
  rc = load("{'user':'games','group':'nogroup'," PL "," LS "}", &cfg, err, sizeof err);
  ck_assert_msg(rc == 0, "%s", err);
  ck_assert_str_eq(cfg->user, "games");
  ck_assert_str_eq(cfg->group, "nogroup");
  cfg_free(cfg);
#endif
}
END_TEST

START_TEST(test_config_limits_lowest_values) {
  cfg_server *cfg = NULL;
  char err[512];
  int rc = load("{'limits':{'send_timeout_ms':0,'recv_backlog':4096,"
                "'plugin_backlog':65536}," PL "," LS "}",
                &cfg, err, sizeof err);
  ck_assert_msg(rc == 0, "%s", err);
  ck_assert_uint_eq(cfg->limits.send_timeout_ms, 0); /* off */
  ck_assert_uint_eq(cfg->limits.recv_backlog, 4096);
  ck_assert_uint_eq(cfg->limits.plugin_backlog, 65536);
  cfg_free(cfg);
  rc = load("{'limits':{'send_timeout_ms':100}," PL "," LS "}", &cfg, err, sizeof err);
  ck_assert_msg(rc == 0, "%s", err);
  ck_assert_uint_eq(cfg->limits.send_timeout_ms, 100);
  cfg_free(cfg);
}
END_TEST

static void check_resolved(const char *base, const char *path,
                           const char *want) {
  char json[256], err[512];
  cfg_server *cfg = NULL;
  snprintf(json, sizeof json,
           "{\"plugins\":[{\"name\":\"p\",\"path\":\"%s\"}],"
           "\"listeners\":[{\"port\":1,\"plugin\":\"p\"}]}", path);
  int rc = cfg_load_text(json, strlen(json), "x.json", base, &cfg, err,
                         sizeof err);
  ck_assert_msg(rc == 0, "%s", err);
  ck_assert_str_eq(cfg->plugins[0].path, path);
  ck_assert_str_eq(cfg->plugins[0].resolved_path, native(want));
  cfg_free(cfg);
}

START_TEST(test_config_plugin_path_resolution) {
  check_resolved("/etc/pier", "echo.so", "/etc/pier" TEST_SEP "echo.so");
  check_resolved("/etc/pier/", "../lib/echo.so", "/etc/pier" TEST_SEP "../lib/echo.so");
  check_resolved("/etc/pier", "/opt/echo.so", "/opt/echo.so");
  check_resolved("build/config", "../plugins/echo.so",
                 "build/config" TEST_SEP "../plugins/echo.so");
  check_resolved("/", "echo.so", "/echo.so");
  check_resolved(".", "echo.so", "." TEST_SEP "echo.so"); /* never a bare name */
  check_resolved(".", "../plugins/echo.so", "../plugins/echo.so");
  check_resolved(NULL, "echo.so", "." TEST_SEP "echo.so");
}
END_TEST

/* A last path component without a '.' gets the platform's extension (.so
 * on Linux, .dll on Windows); any '.' in it, even a trailing one, leaves the
 * path as written. */
START_TEST(test_config_plugin_path_platform_extension) {
#define ETC "/etc/pier" TEST_SEP
  check_resolved("/etc/pier", "echo", ETC "echo" TEST_DL_EXT);
  check_resolved("/etc/pier", "../plugins/echo", ETC "../plugins/echo" TEST_DL_EXT);
  check_resolved("/etc/pier", "/opt/pier/chat", "/opt/pier/chat" TEST_DL_EXT);
  check_resolved(".", "echo", "." TEST_SEP "echo" TEST_DL_EXT);
  check_resolved(".", "../plugins/echo", "../plugins/echo" TEST_DL_EXT);
  check_resolved("/etc/pier", "v1.2/echo", ETC "v1.2/echo" TEST_DL_EXT); /* a dot in a directory */
  check_resolved("/etc/pier", "echo.so", ETC "echo.so"); /* kept as written */
  check_resolved("/etc/pier", "echo.dll", ETC "echo.dll");
  check_resolved("/etc/pier", "echo.so.1", ETC "echo.so.1");
  check_resolved("/etc/pier", "echo.", ETC "echo.");
  check_resolved("/etc/pier", ".echo", ETC ".echo");
#undef ETC
}
END_TEST

/* {json written with ' for ", exact message} */
static const struct {
  const char *json, *msg;
} bad[] = {
    {"{'workers':0," PL "," LS "}",
     "server.json: workers: expected an integer 1..64, got 0"},
    {"{" PL ",'listeners':[{'port':'abc','plugin':'echo'}]}",
     "server.json: listeners[0].port: expected an integer 0..65535, got \"abc\""},
    {"{'io_backend':'uring'," PL "," LS "}",
     "server.json: io_backend: expected one of \"auto\", \"io_uring\", "
     "\"epoll\", \"iocp\", got \"uring\""},
    {"{" PL2 ",'listeners':[{'port':1,'plugin':'echo'},"
     "{'port':2,'plugin':'chatt'}]}",
     "server.json: listeners[1].plugin: no plugin named \"chatt\" "
     "(plugins: echo, chat)"},
    {"{'plugins':[{'name':'echo','path':'e.so','callbacks':{'on_recv':12}}],"
     LS "}",
     "server.json: plugins[0].callbacks.on_recv: expected a string (exported "
     "symbol name), got 12"},
    {"{" PL ",'listeners':[{'port':1,'plugin':'echo','framming':'raw'}]}",
     "server.json: listeners[0].framming: unknown key (did you mean "
     "\"framing\"?)"},
    {"{'workers':2," PL "," LS ",'workers':3}",
     "server.json: workers: duplicate key"},
    {"{'plugins':[{'name':'echo'}]," LS "}",
     "server.json: plugins[0]: missing required key \"path\""},
    {"{" PL ",'listeners':[]}",
     "server.json: listeners: expected a non-empty array, got an empty array"},
    {"{'plugins':[{'name':'echo','path':'a.so'},{'name':'echo','path':'b.so'}],"
     LS "}",
     "server.json: plugins[1].name: duplicate plugin name \"echo\" (same as "
     "plugins[0])"},
    {"{" PL ",'listeners':[{'port':7777,'plugin':'echo'},{'port':7778,"
     "'plugin':'echo'},{'address':'127.0.0.1','port':7777,'plugin':'echo'}]}",
     "server.json: listeners[2]: duplicate listener 127.0.0.1:7777 (same as "
     "listeners[0])"},
    {"{" PL ",'listeners':[{'address':'::1','port':9,'plugin':'echo'},"
     "{'address':'0:0:0:0:0:0:0:1','port':9,'plugin':'echo'}]}",
     "server.json: listeners[1]: duplicate listener [0:0:0:0:0:0:0:1]:9 (same "
     "as listeners[0])"},
    {"{" PL ",'listeners':[{'address':'localhost','port':1,'plugin':'echo'}]}",
     "server.json: listeners[0].address: expected an IPv4 or IPv6 address "
     "literal, got \"localhost\""},
    {"[1,2]", "server.json: expected an object at the top level, got an array"},
    {"true", "server.json: expected an object at the top level, got true"},
    {"{" PL ",'listeners':[{'port':1.5,'plugin':'echo'}]}",
     "server.json: listeners[0].port: expected an integer 0..65535, got 1.5"},
    {"{" PL ",'listeners':[{'port':-1,'plugin':'echo'}]}",
     "server.json: listeners[0].port: expected an integer 0..65535, got -1"},
    {"{" PL ",'listeners':[{'port':65536,'plugin':'echo'}]}",
     "server.json: listeners[0].port: expected an integer 0..65535, got 65536"},
    {"{'plugins':[{'name':'echo','path':'e.so','watch':1}]," LS "}",
     "server.json: plugins[0].watch: expected true or false, got 1"},
    {"{'plugins':[{'name':'a b','path':'e.so'}]," LS "}",
     "server.json: plugins[0].name: expected a name of 1..32 characters from "
     "[A-Za-z0-9_-], got \"a b\""},
    {"{'plugins':[{'name':'abcdefghijklmnopqrstuvwxyz0123456','path':'e.so'}],"
     LS "}",
     "server.json: plugins[0].name: expected a name of 1..32 characters from "
     "[A-Za-z0-9_-], got \"abcdefghijklmnopqrstuvwxyz0123456\""},
    {"{'plugins':[{'name':'echo','path':'e.so','config':5}]," LS "}",
     "server.json: plugins[0].config: expected an object, got 5"},
    {"{'plugins':[{'name':'echo','path':'e.so','config':{'a':{'b':1,'b':2}}}],"
     LS "}",
     "server.json: plugins[0].config.a.b: duplicate key"},
    {"{'plugins':[{'name':'echo','path':'e.so','config':{'a':[1,1e999]}}],"
     LS "}",
     "server.json: plugins[0].config.a[1]: expected a finite number, got a "
     "number out of range"},
    {"{'limits':{'max_packet_size':3}," PL "," LS "}",
     "server.json: limits.max_packet_size: expected an integer 4..65535, got 3"},
    {"{'limits':{'idle_timeout_ms':50}," PL "," LS "}",
     "server.json: limits.idle_timeout_ms: expected 0 or an integer "
     "100..86400000, got 50"},
    {"{'limits':{'max_send_queue':1e300}," PL "," LS "}",
     "server.json: limits.max_send_queue: expected an integer "
     "1024..1073741824, got 1e+300"},
    {"{'limits':{'send_timeout_ms':99}," PL "," LS "}",
     "server.json: limits.send_timeout_ms: expected 0 or an integer "
     "100..3600000, got 99"},
    {"{'limits':{'send_timeout_ms':3600001}," PL "," LS "}",
     "server.json: limits.send_timeout_ms: expected 0 or an integer "
     "100..3600000, got 3600001"},
    {"{'limits':{'send_timeout_ms':'30s'}," PL "," LS "}",
     "server.json: limits.send_timeout_ms: expected 0 or an integer "
     "100..3600000, got \"30s\""},
    {"{'limits':{'recv_backlog':4095}," PL "," LS "}",
     "server.json: limits.recv_backlog: expected an integer 4096..16777216, "
     "got 4095"},
    {"{'limits':{'recv_backlog':0}," PL "," LS "}",
     "server.json: limits.recv_backlog: expected an integer 4096..16777216, "
     "got 0"},
    {"{'limits':{'recv_backlog':16777217}," PL "," LS "}",
     "server.json: limits.recv_backlog: expected an integer 4096..16777216, "
     "got 16777217"},
    {"{'limits':{'plugin_backlog':65535}," PL "," LS "}",
     "server.json: limits.plugin_backlog: expected an integer "
     "65536..1073741824, got 65535"},
    {"{'limits':{'plugin_backlog':1073741825}," PL "," LS "}",
     "server.json: limits.plugin_backlog: expected an integer "
     "65536..1073741824, got 1073741825"},
    {"{'limits':{'plugin_backlog':65536.5}," PL "," LS "}",
     "server.json: limits.plugin_backlog: expected an integer "
     "65536..1073741824, got 65536.5"},
    {"{'limits':{'recv_backlg':65536}," PL "," LS "}",
     "server.json: limits.recv_backlg: unknown key (did you mean "
     "\"recv_backlog\"?)"},
    {"{'limits':[]," PL "," LS "}",
     "server.json: limits: expected an object, got an empty array"},
    {"{'bogus':1," PL "," LS "}", "server.json: bogus: unknown key"},
    {"{'Workers':1," PL "," LS "}",
     "server.json: Workers: unknown key (did you mean \"workers\"?)"},
    {"{'bad key':1," PL "," LS "}", "server.json: [\"bad key\"]: unknown key"},
    {"{'log_level':'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'," PL
     "," LS "}",
     "server.json: log_level: expected one of \"error\", \"warn\", \"info\", "
     "\"debug\", got \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...\""},
    {"{'log_format':'xml'," PL "," LS "}",
     "server.json: log_format: expected one of \"text\", \"json\", got \"xml\""},
    {"{'log_file':''," PL "," LS "}",
     "server.json: log_file: expected a non-empty string (file path), got \"\""},
    {"{'log_file':7," PL "," LS "}",
     "server.json: log_file: expected a non-empty string (file path), got 7"},
    {"{'log_level':true," PL "," LS "}",
     "server.json: log_level: expected one of \"error\", \"warn\", \"info\", "
     "\"debug\", got true"},
    {"{'workers':null," PL "," LS "}",
     "server.json: workers: expected an integer 1..64, got null"},
    {"{'workers':{}," PL "," LS "}",
     "server.json: workers: expected an integer 1..64, got an object"},
    {"{'workers':1e999," PL "," LS "}",
     "server.json: workers: expected an integer 1..64, got a number out of "
     "range"},
    {"{'max_sessions':0," PL "," LS "}",
     "server.json: max_sessions: expected an integer 1..1000000, got 0"},
    {"{" PL "}", "server.json: missing required key \"listeners\""},
    {"{}", "server.json: missing required key \"plugins\"\n"
           "server.json: missing required key \"listeners\""},
    {"{'plugins':{}," LS "}",
     "server.json: plugins: expected a non-empty array, got an object"},
    {"{" PL ",'listeners':[5]}",
     "server.json: listeners[0]: expected an object, got 5"},
    {"{" PL ",'listeners':[{'plugin':'echo'}]}",
     "server.json: listeners[0]: missing required key \"port\""},
    {"{" PL ",'listeners':[{'port':1,'plugin':7}]}",
     "server.json: listeners[0].plugin: expected a string (plugin name), got 7"},
    {"{" PL ",'listeners':[{'port':1,'plugin':'echo','framing':'u16'}]}",
     "server.json: listeners[0].framing: expected one of \"raw\", "
     "\"u16_size_id\", got \"u16\""},
    {"{'plugins':[{'name':'echo','path':'e.so','callbacks':{'on_rcv':'f'}}],"
     LS "}",
     "server.json: plugins[0].callbacks.on_rcv: unknown key (did you mean "
     "\"on_recv\"?)"},
    {"{'plugins':[{'name':'echo','path':'e.so','callbacks':{'on_tick':'1x'}}],"
     LS "}",
     "server.json: plugins[0].callbacks.on_tick: expected a C identifier of at "
     "most 128 characters (exported symbol name), got \"1x\""},
    {"{'plugins':[{'name':'echo','path':'e.so','threading':'parallel'}]," LS
     "}",
     "server.json: plugins[0].threading: expected one of \"session\", "
     "\"serial\", got \"parallel\""},
    {"{'plugins':[{'name':'echo','path':'e.so','tick_ms':3600001}]," LS "}",
     "server.json: plugins[0].tick_ms: expected an integer 0..3600000, got "
     "3600001"},
    {"{'plugins':[{'name':'echo','path':''}]," LS "}",
     "server.json: plugins[0].path: expected a non-empty string (path to the "
     "plugin's shared object), got \"\""},
    {"{'admin_socket':''," PL "," LS "}",
     "server.json: admin_socket: expected a non-empty string (unix socket "
     "path), got \"\""},
    {"{'admin_socket':'" /* 108 bytes */
     "/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'," PL "," LS "}",
     "server.json: admin_socket: path too long for a unix socket once "
     "resolved (108 bytes, at most 107)"},
    {"{'metrics':9100," PL "," LS "}",
     "server.json: metrics: expected an object, got 9100"},
    {"{'metrics':{'address':'localhost'}," PL "," LS "}",
     "server.json: metrics.address: expected an IPv4 or IPv6 address literal, got "
     "\"localhost\""},
    {"{'metrics':{'port':65536}," PL "," LS "}",
     "server.json: metrics.port: expected an integer 0..65535, got 65536"},
    {"{'metrics':{'path':'/m'}," PL "," LS "}",
     "server.json: metrics.path: unknown key"},
    {"{} x", "server.json:1:4: syntax error near 'x'"},
    {"{'x\\u0000y':1}",
     "server.json:1:4: \"\\u0000\" (NUL) is not allowed in strings"},
    {"", "server.json: empty file"},
    {" \n\t\r\n", "server.json: empty file"},
#ifdef _WIN32
    {"{'cluster':{'nats':['nats://127.0.0.1:4222'],'node':'a'}," PL "," LS "}",
     "server.json: cluster: this pierd was built without a NATS client"},
#else
    {"{'cluster':{'node':'a'}," PL "," LS "}",
     "server.json: cluster: missing required key \"nats\""},
    {"{'cluster':{'nats':['nats://127.0.0.1:4222']}," PL "," LS "}",
     "server.json: cluster: missing required key \"node\""},
    {"{'cluster':{'nats':[],'node':'a'}," PL "," LS "}",
     "server.json: cluster.nats: expected an array of 1..16 \"nats://host:port\" URLs, got an empty array"},
    {"{'cluster':{'nats':['http://x:1'],'node':'a'}," PL "," LS "}",
     "server.json: cluster.nats[0]: expected a URL \"nats://host:port\", got \"http://x:1\""},
    {"{'cluster':{'nats':['nats://x:0'],'node':'a'}," PL "," LS "}",
     "server.json: cluster.nats[0]: expected a URL \"nats://host:port\", got \"nats://x:0\""},
    {"{'cluster':{'nats':['nats://h'],'node':'eu 1'}," PL "," LS "}",
     "server.json: cluster.node: expected a node name of 1..32 characters [A-Za-z0-9_-], got "
     "\"eu 1\""},
    {"{'cluster':{'nats':['nats://h'],'node':'a','subject_prefix':'a..b'}," PL "," LS "}",
     "server.json: cluster.subject_prefix: expected 1..64 characters: tokens of [A-Za-z0-9_-] "
     "joined by '.', got \"a..b\""},
    {"{'cluster':{'nats':['nats://h'],'node':'a','heartbeat_ms':500,'node_timeout_ms':500},"
     PL "," LS "}",
     "server.json: cluster.node_timeout_ms: expected an integer 501..600000, got 500"},
    {"{'cluster':{'nats':['nats://h'],'node':'a','max_pending':0}," PL "," LS "}",
     "server.json: cluster.max_pending: expected an integer 1..10000000, got 0"},
    /* The NATS client reads a buffer of 0 as its own default: refused. */
    {"{'cluster':{'nats':['nats://h'],'node':'a','reconnect_buffer':0}," PL "," LS "}",
     "server.json: cluster.reconnect_buffer: expected an integer 1024..1073741824, got 0"},
    {"{'cluster':{'nats':['nats://h'],'node':'a','nodes':1}," PL "," LS "}",
     "server.json: cluster.nodes: unknown key (did you mean \"node\"?)"},
#endif
};

#ifndef _WIN32
/* "cluster" with only what it requires, then with every key. */
START_TEST(test_config_cluster) {
  cfg_server *cfg = NULL;
  char err[512];
  int rc = load("{'cluster':{'nats':['nats://127.0.0.1:4222','nats://[::1]:4223'],'node':'eu-1'},"
                PL "," LS "}",
                &cfg, err, sizeof err);
  ck_assert_msg(rc == 0, "%s", err);
  ck_assert_ptr_nonnull(cfg->cluster);
  ck_assert_uint_eq(cfg->cluster->nnats, 2);
  ck_assert_str_eq(cfg->cluster->nats[1], "nats://[::1]:4223");
  ck_assert_str_eq(cfg->cluster->node, "eu-1");
  ck_assert_str_eq(cfg->cluster->subject_prefix, "pier");
  ck_assert_uint_eq(cfg->cluster->heartbeat_ms, 1000);
  ck_assert_uint_eq(cfg->cluster->node_timeout_ms, 3000);
  ck_assert_uint_eq(cfg->cluster->max_pending, 65536);
  ck_assert_uint_eq(cfg->cluster->max_pending_bytes, 67108864);
  ck_assert_uint_eq(cfg->cluster->reconnect_buffer, 8388608);
  cfg_free(cfg);
  rc = load("{'cluster':{'nats':['nats://nats-1.example:4222'],'node':'A_9-z',"
            "'subject_prefix':'game.eu','heartbeat_ms':50,'node_timeout_ms':51,"
            "'max_pending':10000000,'max_pending_bytes':1024,'reconnect_buffer':1024}," PL "," LS "}",
            &cfg, err, sizeof err);
  ck_assert_msg(rc == 0, "%s", err);
  ck_assert_str_eq(cfg->cluster->subject_prefix, "game.eu");
  ck_assert_uint_eq(cfg->cluster->heartbeat_ms, 50);
  ck_assert_uint_eq(cfg->cluster->node_timeout_ms, 51);
  ck_assert_uint_eq(cfg->cluster->max_pending, 10000000);
  ck_assert_uint_eq(cfg->cluster->max_pending_bytes, 1024);
  ck_assert_uint_eq(cfg->cluster->reconnect_buffer, 1024);
  cfg_free(cfg);
  /* A heartbeat above the default timeout makes the default three beats. */
  rc = load("{'cluster':{'nats':['nats://h'],'node':'a','heartbeat_ms':5000}," PL "," LS "}",
            &cfg, err, sizeof err);
  ck_assert_msg(rc == 0, "%s", err);
  ck_assert_uint_eq(cfg->cluster->node_timeout_ms, 15000);
  cfg_free(cfg);
}
END_TEST
#endif

START_TEST(test_config_rejects_bad_input) {
  cfg_server *cfg = (cfg_server *)&cfg; /* must be reset to NULL */
  char err[512];
  int rc = load(bad[_i].json, &cfg, err, sizeof err);
  ck_assert_msg(rc < 0, "case %d accepted: %s", _i, bad[_i].json);
  ck_assert_ptr_null(cfg);
  ck_assert_str_eq(err, bad[_i].msg);
}
END_TEST

/* Independent problems are all reported, one line each, in the order their
 * values appear in the file (not the order they are checked in). */
START_TEST(test_config_reports_every_error_in_file_order) {
  cfg_server *cfg = (cfg_server *)&cfg;
  static char err[CFG_ERR_LEN];
  int rc = load("{'listeners':[{'port':7777,'plugin':'ech'}],"
                "'workers':'2',"
                "'limits':{'max_packet_size':70000,'send_timout_ms':5},"
                "'plugins':[{'name':'echo','path':'echo.so','treading':'serial'}],"
                "'log_level':'loud'}",
                &cfg, err, sizeof err);
  ck_assert_int_eq(rc, -EINVAL);
  ck_assert_ptr_null(cfg);
  ck_assert_str_eq(err,
                   "server.json: listeners[0].plugin: no plugin named \"ech\" (plugins: echo)\n"
                   "server.json: workers: expected an integer 1..64, got \"2\"\n"
                   "server.json: limits.max_packet_size: expected an integer 4..65535, got 70000\n"
                   "server.json: limits.send_timout_ms: unknown key (did you mean "
                   "\"send_timeout_ms\"?)\n"
                   "server.json: plugins[0].treading: unknown key (did you mean \"threading\"?)\n"
                   "server.json: log_level: expected one of \"error\", \"warn\", \"info\", "
                   "\"debug\", got \"loud\"");

  /* Repeats are each reported, against the first; so are entries after a
   * bad one, and a bad plugin name silences the references it may explain. */
  rc = load("{'plugins':[{'name':'a','path':'a.so'},{'name':'a','path':'b.so'},"
            "{'name':'a','path':'c.so','tick_ms':-1},{'name':'b c','path':'d.so'}],"
            "'listeners':[{'port':1,'plugin':'a'},{'port':1,'plugin':'a'},"
            "{'port':'x','plugin':'zz'},{'port':1,'plugin':'a'}]}",
            &cfg, err, sizeof err);
  ck_assert_int_eq(rc, -EINVAL);
  ck_assert_str_eq(err,
                   "server.json: plugins[1].name: duplicate plugin name \"a\" (same as plugins[0])\n"
                   "server.json: plugins[2].name: duplicate plugin name \"a\" (same as plugins[0])\n"
                   "server.json: plugins[2].tick_ms: expected an integer 0..3600000, got -1\n"
                   "server.json: plugins[3].name: expected a name of 1..32 characters from "
                   "[A-Za-z0-9_-], got \"b c\"\n"
                   "server.json: listeners[1]: duplicate listener 127.0.0.1:1 (same as listeners[0])\n"
                   "server.json: listeners[2].port: expected an integer 0..65535, got \"x\"\n"
                   "server.json: listeners[3]: duplicate listener 127.0.0.1:1 (same as listeners[0])");
}
END_TEST

/* At most CFG_MAX_ERRORS lines, the first ones in file order even when
 * problems later in the file were found first, then one line for the rest. */
START_TEST(test_config_error_count_is_bounded) {
  cfg_server *cfg = NULL;
  static char err[CFG_ERR_LEN], json[4096], want[CFG_ERR_LEN];
  size_t n = 0, w = 0;
  n += (size_t)snprintf(json + n, sizeof json - n, "{'listeners':[");
  for (int i = 0; i < 25; i++)
    n += (size_t)snprintf(json + n, sizeof json - n, "%s{'port':'x','plugin':'echo'}",
                          i ? "," : "");
  snprintf(json + n, sizeof json - n, "]," PL ",'bogus1':1,'bogus2':2,'bogus3':3}");
  ck_assert_int_eq(load(json, &cfg, err, sizeof err), -EINVAL);
  for (int i = 0; i < CFG_MAX_ERRORS; i++)
    w += (size_t)snprintf(want + w, sizeof want - w,
                          "server.json: listeners[%d].port: expected an integer 0..65535, "
                          "got \"x\"\n", i);
  snprintf(want + w, sizeof want - w, "server.json: ... and 8 more errors");
  ck_assert_str_eq(err, want);

  /* One past the bound: "1 more error". */
  n = (size_t)snprintf(json, sizeof json, "{" PL "," LS);
  for (int i = 0; i < CFG_MAX_ERRORS + 1; i++)
    n += (size_t)snprintf(json + n, sizeof json - n, ",'k%02d':0", i);
  snprintf(json + n, sizeof json - n, "}");
  ck_assert_int_eq(load(json, &cfg, err, sizeof err), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "server.json: k19: unknown key\n"
                                    "server.json: ... and 1 more error"));
  ck_assert_ptr_null(strstr(err, "k20"));
  ck_assert_ptr_null(cfg);
}
END_TEST

START_TEST(test_config_syntax_error_position) {
  static const char text[] = "{\n  \"workers\": 1,\n  \"io_backend\" \"auto\"\n}";
  cfg_server *cfg = NULL;
  char err[512];
  ck_assert_int_eq(cfg_load_text(text, strlen(text), "server.json", ".", &cfg,
                                 err, sizeof err), -EINVAL);
  ck_assert_str_eq(err, "server.json:3:16: syntax error near '\"auto\"\\n}'");

  static const char trailing[] = "{\"a\": [1, 2,]}";
  ck_assert_int_eq(cfg_load_text(trailing, strlen(trailing), "s.json", ".",
                                 &cfg, err, sizeof err), -EINVAL);
  ck_assert_str_eq(err, "s.json:1:13: syntax error near ']}'");

  static const char longer[] = "{\n\"workers\": 1,\n \"x\": [tru, 12345678901234567890]}";
  ck_assert_int_eq(cfg_load_text(longer, strlen(longer), "s.json", ".", &cfg,
                                 err, sizeof err), -EINVAL);
  ck_assert_str_eq(err, "s.json:3:8: syntax error near 'tru, 12345678901'");
  ck_assert_ptr_null(cfg);
}
END_TEST

START_TEST(test_config_nul_byte_in_text) {
  static const char text[] = "{\"plugins\"\0: []}";
  cfg_server *cfg = NULL;
  char err[512];
  ck_assert_int_eq(cfg_load_text(text, sizeof text - 1, "server.json", ".",
                                 &cfg, err, sizeof err), -EINVAL);
  ck_assert_str_eq(err, "server.json:1:11: syntax error near '\\0: []}'");

  static const char after[] = "{}\n\0";
  ck_assert_int_eq(cfg_load_text(after, sizeof after - 1, "server.json", ".",
                                 &cfg, err, sizeof err), -EINVAL);
  ck_assert_str_eq(err, "server.json:2:1: syntax error near '\\0'");

  static const char in_string[] = "{\"a\0b\": 1}";
  ck_assert_int_eq(cfg_load_text(in_string, sizeof in_string - 1,
                                 "server.json", ".", &cfg, err, sizeof err),
                   -EINVAL);
  ck_assert_str_eq(err, "server.json:1:4: syntax error near '\\0b\": 1}'");
  ck_assert_ptr_null(cfg);
}
END_TEST

START_TEST(test_config_missing_file) {
  cfg_server *cfg = NULL;
  char err[512], want[512];
  int rc = cfg_load_file("/nonexistent/pier/server.json", &cfg, err, sizeof err);
  ck_assert_int_eq(rc, -ENOENT);
  ck_assert_ptr_null(cfg);
  /* "No such file or directory" on both platforms' C libraries. */
  snprintf(want, sizeof want, "/nonexistent/pier/server.json: cannot read: %s",
           os_strerror(ENOENT));
  ck_assert_str_eq(err, want);
}
END_TEST

/* Writes content to <dir>/<name> and returns the path (static buffer). */
static const char *write_file(const char *dir, const char *name,
                              const char *content, size_t len) {
  static char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(content, 1, len, f), len);
  ck_assert_int_eq(fclose(f), 0);
  return path;
}

START_TEST(test_config_file_errors_and_base_dir) {
  char dir[256], err[512], want[1024];
  cfg_server *cfg = NULL;
  test_mkdtemp(dir, sizeof dir, "pier_cfg_");

  char *ok = dq("{" PL "," LS "}");
  const char *path = write_file(dir, "s.json", ok, strlen(ok));
  free(ok);
  ck_assert_int_eq(cfg_load_file(path, &cfg, err, sizeof err), 0);
  ck_assert_str_eq(cfg->path, path);
  ck_assert_str_eq(cfg->base_dir, dir);
  snprintf(want, sizeof want, "%s" TEST_SEP "echo.so", dir);
  ck_assert_str_eq(cfg->plugins[0].resolved_path, native(want));
  cfg_free(cfg);
  ck_assert_int_eq(remove(path), 0);

  path = write_file(dir, "w.json", "{\"workers\": 99}", 15);
  ck_assert_int_eq(cfg_load_file(path, &cfg, err, sizeof err), -EINVAL);
  snprintf(want, sizeof want,
           "%s: missing required key \"plugins\"\n"
           "%s: missing required key \"listeners\"\n"
           "%s: workers: expected an integer 1..64, got 99",
           path, path, path);
  ck_assert_str_eq(err, want);
  ck_assert_int_eq(remove(path), 0);

  size_t big = CFG_MAX_FILE_SIZE + 1;
  char *spaces = malloc(big);
  ck_assert_ptr_nonnull(spaces);
  memset(spaces, ' ', big);
  path = write_file(dir, "big.json", spaces, big);
  free(spaces);
  ck_assert_int_eq(cfg_load_file(path, &cfg, err, sizeof err), -EFBIG);
  snprintf(want, sizeof want, "%s: file too large (more than 1048576 bytes)",
           path);
  ck_assert_str_eq(err, want);
  ck_assert_int_eq(remove(path), 0);

  ck_assert_int_eq(cfg_load_file(dir, &cfg, err, sizeof err), -EISDIR);
  snprintf(want, sizeof want, "%s: cannot read: %s", dir, os_strerror(EISDIR));
  ck_assert_str_eq(err, want);
  ck_assert_ptr_null(cfg);
  ck_assert_int_eq(test_rm_rf(dir), 0);
}
END_TEST

START_TEST(test_config_error_buffer_handling) {
  cfg_server *cfg = NULL;
  char small[12];
  ck_assert_int_eq(load("{'workers':0}", &cfg, small, sizeof small), -EINVAL);
  ck_assert_str_eq(small, "server.json"); /* cut, still terminated */
  ck_assert_int_eq(load("{'workers':0}", &cfg, NULL, 0), -EINVAL);
  ck_assert_int_eq(cfg_load_text(NULL, 5, "x", ".", &cfg, small, sizeof small),
                   -EINVAL);
  ck_assert_int_eq(cfg_load_text("{}", 2, "x", ".", NULL, NULL, 0), -EINVAL);
  ck_assert_int_eq(cfg_load_file(NULL, &cfg, NULL, 0), -EINVAL);
  ck_assert_ptr_null(cfg);
  cfg_free(NULL);
}
END_TEST

START_TEST(test_config_enum_names) {
  ck_assert_str_eq(cfg_backend_name(CFG_BACKEND_AUTO), "auto");
  ck_assert_str_eq(cfg_backend_name(CFG_BACKEND_IO_URING), "io_uring");
  ck_assert_str_eq(cfg_backend_name(CFG_BACKEND_EPOLL), "epoll");
  ck_assert_str_eq(cfg_framing_name(CFG_FRAMING_RAW), "raw");
  ck_assert_str_eq(cfg_framing_name(CFG_FRAMING_U16_SIZE_ID), "u16_size_id");
  ck_assert_str_eq(cfg_threading_name(CFG_THREADING_SESSION), "session");
  ck_assert_str_eq(cfg_threading_name(CFG_THREADING_SERIAL), "serial");
  ck_assert_str_eq(cfg_log_level_name(CFG_LOG_ERROR), "error");
  ck_assert_str_eq(cfg_log_level_name(CFG_LOG_WARN), "warn");
  ck_assert_str_eq(cfg_log_level_name(CFG_LOG_INFO), "info");
  ck_assert_str_eq(cfg_log_level_name(CFG_LOG_DEBUG), "debug");
  ck_assert_str_eq(cfg_backend_name((cfg_backend)99), "unknown");
  ck_assert_str_eq(cfg_log_level_name((cfg_log_level)-1), "unknown");
}
END_TEST

/* Every failure must give 1..CFG_MAX_ERRORS+1 non-empty lines, each naming
 * the file, and leave *out NULL. */
static void expect_clean(const char *text, size_t len, int may_pass) {
  cfg_server *cfg = NULL;
  static char err[CFG_ERR_LEN];
  int rc = cfg_load_text(text, len, "f.json", "/d", &cfg, err, sizeof err);
  if (rc == 0) {
    ck_assert_msg(may_pass, "unexpectedly accepted");
    cfg_free(cfg);
    return;
  }
  ck_assert_ptr_null(cfg);
  int lines = 0;
  for (const char *line = err; line; lines++) {
    const char *nl = strchr(line, '\n');
    ck_assert_msg(strncmp(line, "f.json", 6) == 0, "bad message: %s", err);
    line = nl ? nl + 1 : NULL;
  }
  ck_assert_int_le(lines, CFG_MAX_ERRORS + 1);
}

START_TEST(test_config_truncated_and_mutated_input) {
  FILE *f = fopen(DEFAULT_CONFIG, "rb");
  ck_assert_ptr_nonnull(f);
  char text[4096];
  size_t len = fread(text, 1, sizeof text, f);
  fclose(f);
  ck_assert_uint_gt(len, 100);
  for (size_t n = 0; n < len; n++)
    expect_clean(text, n, 1); /* a prefix may end in whitespace only */
  expect_clean(text, len, 1);

  unsigned seed = 12345;
  static const char junk[] = "\0\"{}[]:,\\-01e.9 tfnx\n\xff";
  for (int round = 0; round < 2000; round++) {
    char m[4096];
    memcpy(m, text, len);
    for (int k = 0; k < 3; k++) {
      seed = seed * 1103515245u + 12345u;
      size_t at = (seed >> 8) % len;
      seed = seed * 1103515245u + 12345u;
      m[at] = junk[(seed >> 8) % (sizeof junk - 1)];
    }
    expect_clean(m, len, 1);
  }
}
END_TEST

/* plugin_dir confines plugin files, after ".." and links are resolved. */
START_TEST(test_config_plugin_dir_confines_paths) {
  char dir[256], real[256], sub[300], err[1024];
  cfg_server *cfg = NULL;
  test_mkdtemp(dir, sizeof(dir), "pier-cfgdir-");
  /* The messages name directories in their real form: on Windows with a
   * drive letter and '\\' (the temp directory itself may be a link). */
  ck_assert_int_eq(os_realpath(dir, real, sizeof(real)), 0);
  snprintf(sub, sizeof(sub), "%s/plugins", dir);
  ck_assert_int_eq(test_mkdir(sub), 0);
  snprintf(sub, sizeof(sub), "%s/other", dir);
  ck_assert_int_eq(test_mkdir(sub), 0);
  const char *inside = "{\"plugin_dir\": \"plugins\", \"plugins\": [{\"name\": \"a\", "
                       "\"path\": \"plugins/a.so\"}], \"listeners\": [{\"port\": 1, "
                       "\"plugin\": \"a\"}]}";
  const char *outside = "{\"plugin_dir\": \"plugins\", \"plugins\": [{\"name\": \"a\", "
                        "\"path\": \"plugins/../other/a.so\"}], \"listeners\": [{\"port\": 1, "
                        "\"plugin\": \"a\"}]}";
  const char *missing = "{\"plugin_dir\": \"nowhere\", \"plugins\": [{\"name\": \"a\", "
                        "\"path\": \"plugins/a.so\"}], \"listeners\": [{\"port\": 1, "
                        "\"plugin\": \"a\"}]}";
  char want[1024];
  ck_assert_int_eq(cfg_load_text(inside, strlen(inside), "server.json", dir, &cfg, err, sizeof(err)), 0);
  snprintf(want, sizeof(want), "%s" TEST_SEP "plugins", dir);
  ck_assert_str_eq(cfg->plugin_dir, native(want));
  cfg_free(cfg);
  ck_assert_int_eq(cfg_load_text(outside, strlen(outside), "server.json", dir, &cfg, err, sizeof(err)), -EPERM);
  snprintf(want, sizeof(want),
           "server.json: plugins[0].path: \"plugins/../other/a.so\" is in %s" TEST_SEP "other, "
           "outside plugin_dir (%s" TEST_SEP "plugins)", real, real);
  ck_assert_str_eq(err, want);
  ck_assert_int_eq(cfg_load_text(missing, strlen(missing), "server.json", dir, &cfg, err, sizeof(err)), -ENOENT);
  snprintf(sub, sizeof(sub), "%s" TEST_SEP "nowhere", dir);
  snprintf(want, sizeof(want), "server.json: plugin_dir: directory %s: %s", native(sub),
           os_strerror(ENOENT));
  ck_assert_str_eq(err, want);
  ck_assert_int_eq(test_rm_rf(dir), 0);
}
END_TEST

/* The file itself goes through realpath: a link in plugin_dir to a file
 * outside is refused, a link that stays inside is accepted, and so is a link
 * to a directory inside; a linked directory that leads out is refused.
 *
 * Not on Windows: creating a symbolic link there needs
 * SeCreateSymbolicLinkPrivilege (an administrator, or developer mode), and
 * Wine 8's CreateSymbolicLinkW returns success but makes no link; the case
 * is not added there (see config_suite). */
#ifndef _WIN32
#include <sys/stat.h>
#include <unistd.h>

START_TEST(test_config_plugin_dir_symlinks) {
  char dir[] = "/tmp/pier-cfgdir-XXXXXX", p[256], t[256], err[512], want[512], json[512];
  cfg_server *cfg = NULL;
  static const char fmt[] = "{\"plugin_dir\": \"plugins\", \"plugins\": [{\"name\": \"a\", "
                            "\"path\": \"%s\"}], \"listeners\": [{\"port\": 1, \"plugin\": "
                            "\"a\"}]}";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(p, sizeof(p), "%s/plugins", dir);
  ck_assert_int_eq(mkdir(p, 0700), 0);
  snprintf(p, sizeof(p), "%s/plugins/v2", dir);
  ck_assert_int_eq(mkdir(p, 0700), 0);
  snprintf(p, sizeof(p), "%s/outside", dir);
  ck_assert_int_eq(mkdir(p, 0700), 0);
  write_file(p, "evil.so", "x", 1);
  snprintf(p, sizeof(p), "%s/plugins", dir);
  write_file(p, "real-1.so", "x", 1);
  snprintf(p, sizeof(p), "%s/plugins/evil.so", dir);
  ck_assert_int_eq(symlink("../outside/evil.so", p), 0);
  snprintf(p, sizeof(p), "%s/plugins/good.so", dir);
  ck_assert_int_eq(symlink("real-1.so", p), 0);
  snprintf(p, sizeof(p), "%s/plugins/out", dir);
  ck_assert_int_eq(symlink("../outside", p), 0);
  snprintf(p, sizeof(p), "%s/plugins/cur", dir);
  ck_assert_int_eq(symlink("v2", p), 0);

  snprintf(json, sizeof(json), fmt, "plugins/evil.so");
  ck_assert_int_eq(cfg_load_text(json, strlen(json), "server.json", dir, &cfg, err, sizeof(err)),
                   -EPERM);
  snprintf(want, sizeof(want),
           "server.json: plugins[0].path: \"plugins/evil.so\" resolves to %s/outside/evil.so, "
           "outside plugin_dir (%s/plugins)", dir, dir);
  ck_assert_str_eq(err, want);
  ck_assert_ptr_null(cfg);

  snprintf(json, sizeof(json), fmt, "plugins/out/missing.so");
  ck_assert_int_eq(cfg_load_text(json, strlen(json), "server.json", dir, &cfg, err, sizeof(err)),
                   -EPERM);
  snprintf(want, sizeof(want),
           "server.json: plugins[0].path: \"plugins/out/missing.so\" is in %s/outside, "
           "outside plugin_dir (%s/plugins)", dir, dir);
  ck_assert_str_eq(err, want);

  snprintf(json, sizeof(json), fmt, "plugins/good.so");
  ck_assert_int_eq(cfg_load_text(json, strlen(json), "server.json", dir, &cfg, err, sizeof(err)), 0);
  snprintf(want, sizeof(want), "%s/plugins", dir);
  ck_assert_str_eq(cfg->plugin_dir_real, want);
  ck_assert_ptr_eq(cfg->plugins[0].confine_dir, cfg->plugin_dir_real);
  cfg_free(cfg);

  snprintf(json, sizeof(json), fmt, "plugins/cur/new.so");
  ck_assert_int_eq(cfg_load_text(json, strlen(json), "server.json", dir, &cfg, err, sizeof(err)), 0);
  cfg_free(cfg);

  /* No plugin_dir: nothing is confined, and the loader is told so. */
  snprintf(json, sizeof(json), "{\"plugins\": [{\"name\": \"a\", \"path\": \"plugins/evil.so\"}], "
                               "\"listeners\": [{\"port\": 1, \"plugin\": \"a\"}]}");
  ck_assert_int_eq(cfg_load_text(json, strlen(json), "server.json", dir, &cfg, err, sizeof(err)), 0);
  ck_assert_ptr_null(cfg->plugins[0].confine_dir);
  cfg_free(cfg);
  snprintf(t, sizeof(t), "rm -rf '%s'", dir);
  ck_assert_int_eq(system(t), 0);
}
END_TEST
#endif

START_TEST(test_config_pathological_input) {
  size_t n = 100000;
  char *deep = malloc(2 * n + 1);
  ck_assert_ptr_nonnull(deep);
  memset(deep, '[', n);
  memset(deep + n, ']', n);
  expect_clean(deep, 2 * n, 0);
  memset(deep, '{', n);
  expect_clean(deep, n, 0);
  free(deep);

  /* nesting within cJSON's limit inside a plugin config */
  char *nested = malloc(8192);
  ck_assert_ptr_nonnull(nested);
  size_t k = (size_t)sprintf(nested, "{\"plugins\":[{\"name\":\"p\",\"path\":"
                                     "\"p.so\",\"config\":{\"a\":");
  for (int i = 0; i < 900; i++)
    nested[k++] = '[';
  for (int i = 0; i < 900; i++)
    nested[k++] = ']';
  k += (size_t)sprintf(nested + k, "}}],\"listeners\":[{\"port\":1,"
                                   "\"plugin\":\"p\"}]}");
  expect_clean(nested, k, 1);
  free(nested);

  static const char *const odd[] = {
      ("{\"workers\": 12345678901234567890123456789012345678901234567890"
       "123456789012345678901234567890}"),
      "{\"workers\": -0}", "{\"workers\": NaN}", "{\"workers\": Infinity}",
      "{\"workers\": 1e-400}", "{\"workers\": -1e999}", "{\"workers\": 0x10}",
      "{\"workers\": \"\\ud800\"}", "{\"workers\": \"\\u12\"}", "\"\\",
      "{\"a\":", "{\"", "\xef\xbb\xbf{}", "{\"plugins\":[{}]}",
      "{\"plugins\":[[]],\"listeners\":[]}",
  };
  for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++)
    expect_clean(odd[i], strlen(odd[i]), 0);
}
END_TEST

/* The transport keys of a listener: WebSocket and TLS. */
#ifndef _WIN32
START_TEST(test_config_websocket_listener) {
  char dir[512], json[2048], err[CFG_ERR_LEN], real[1024];
  cfg_server *cfg = NULL;
  test_mkdtemp(dir, sizeof(dir), "cfg-ws-");
  ck_assert_ptr_nonnull(realpath(dir, real));
  snprintf(json, sizeof(json),
           "{" PL ",'listeners':[{'port':1,'plugin':'echo','framing':'u16_size_id',"
           "'transport':'websocket','path':'/game','origins':['https://a.example',"
           "'http://127.0.0.1:8080'],'static':'%s','ping_interval_ms':0,"
           "'handshake_timeout_ms':2500}]}",
           dir);
  ck_assert_msg(load(json, &cfg, err, sizeof(err)) == 0, "%s", err);
  const cfg_listener *l = &cfg->listeners[0];
  ck_assert_int_eq(l->transport, CFG_TRANSPORT_WEBSOCKET);
  ck_assert_str_eq(l->ws_path, "/game");
  ck_assert_uint_eq(l->norigins, 2);
  ck_assert_str_eq(l->origins[0], "https://a.example");
  ck_assert_str_eq(l->origins[1], "http://127.0.0.1:8080");
  ck_assert_str_eq(l->static_dir, dir);
  ck_assert_str_eq(l->static_root, real);
  ck_assert_uint_eq(l->ping_interval_ms, 0);
  ck_assert_uint_eq(l->handshake_timeout_ms, 2500);
  cfg_free(cfg);
  /* Defaults: path "/", any origin, no static, pings every 30 s. */
  ck_assert_msg(load("{" PL ",'listeners':[{'port':1,'plugin':'echo','transport':'websocket'}]}",
                     &cfg, err, sizeof(err)) == 0,
                "%s", err);
  ck_assert_str_eq(cfg->listeners[0].ws_path, "/");
  ck_assert_ptr_null(cfg->listeners[0].origins);
  ck_assert_ptr_null(cfg->listeners[0].static_root);
  ck_assert_uint_eq(cfg->listeners[0].ping_interval_ms, 30000);
  ck_assert_uint_eq(cfg->listeners[0].handshake_timeout_ms, 10000);
  cfg_free(cfg);
  ck_assert_int_eq(test_rm_rf(dir), 0);
}
END_TEST

static const struct {
  const char *json, *msg;
} bad_transport[] = {
    {"{" PL ",'listeners':[{'port':1,'plugin':'echo','transport':'ws'}]}",
     "server.json: listeners[0].transport: expected one of \"tcp\", \"websocket\", got \"ws\""},
    {"{" PL ",'listeners':[{'port':1,'plugin':'echo','path':'/chat'}]}",
     "server.json: listeners[0].path: only for \"transport\": \"websocket\""},
    {"{" PL ",'listeners':[{'port':1,'plugin':'echo','static':'x','ping_interval_ms':5}]}",
     "server.json: listeners[0].static: only for \"transport\": \"websocket\"\n"
     "server.json: listeners[0].ping_interval_ms: only for \"transport\": \"websocket\""},
    {"{" PL ",'listeners':[{'port':1,'plugin':'echo','transport':'websocket','path':'chat'}]}",
     "server.json: listeners[0].path: expected a path starting with \"/\" (visible ASCII, no "
     "'?' or '#', up to 255 bytes), got \"chat\""},
    {"{" PL ",'listeners':[{'port':1,'plugin':'echo','transport':'websocket','path':'/a b'}]}",
     "server.json: listeners[0].path: expected a path starting with \"/\" (visible ASCII, no "
     "'?' or '#', up to 255 bytes), got \"/a b\""},
    {"{" PL ",'listeners':[{'port':1,'plugin':'echo','transport':'websocket','origins':[]}]}",
     "server.json: listeners[0].origins: expected an array of 1 to 64 origins, e.g. "
     "[\"https://example.com\"] (leave it out to allow any), got an empty array"},
    {"{" PL ",'listeners':[{'port':1,'plugin':'echo','transport':'websocket',"
     "'origins':['ok',7]}]}",
     "server.json: listeners[0].origins[1]: expected an origin: scheme://host[:port], visible "
     "ASCII, got 7"},
    {"{" PL ",'listeners':[{'port':1,'plugin':'echo','transport':'websocket',"
     "'static':'/nonexistent/pier-web'}]}",
     "server.json: listeners[0].static: cannot use \"/nonexistent/pier-web\" as the static "
     "directory: No such file or directory"},
    {"{" PL ",'listeners':[{'port':1,'plugin':'echo','transport':'websocket',"
     "'static':'/etc/hostname'}]}",
     "server.json: listeners[0].static: cannot use \"/etc/hostname\" as the static directory: "
     "not a directory"},
    {"{" PL ",'listeners':[{'port':1,'plugin':'echo','transport':'websocket',"
     "'ping_interval_ms':50}]}",
     "server.json: listeners[0].ping_interval_ms: expected 0 (off) or 100..3600000, got 50"},
    {"{" PL ",'listeners':[{'port':1,'plugin':'echo','transport':'websocket',"
     "'handshake_timeout_ms':0}]}",
     "server.json: listeners[0].handshake_timeout_ms: expected an integer 1..600000, got 0"},
    {"{" PL ",'listeners':[{'port':1,'plugin':'echo','handshake_timeout_ms':100}]}",
     "server.json: listeners[0].handshake_timeout_ms: only for TLS or WebSocket listeners"},
    {"{" PL ",'listeners':[{'port':1,'plugin':'echo','tls':'cert.pem'}]}",
     "server.json: listeners[0].tls: expected an object {\"cert\": PATH, \"key\": PATH}, got "
     "\"cert.pem\""},
    {"{" PL ",'listeners':[{'port':1,'plugin':'echo','tls':{'cert':'c.pem'}}]}",
     "server.json: listeners[0].tls: missing required key \"key\""},
    {"{" PL ",'listeners':[{'port':1,'plugin':'echo','tls':{'cert':'c.pem','key':'k.pem',"
     "'ca':'x'}}]}",
     "server.json: listeners[0].tls.ca: unknown key"},
    {"{" PL ",'listeners':[{'port':1,'plugin':'echo','tls':{'cert':'c.pem','key':'k.pem'}}]}",
     "server.json: listeners[0].tls: cannot open certificate \"/srv/c.pem\": No such file or "
     "directory"},
};

START_TEST(test_config_rejects_bad_transport) {
  cfg_server *cfg = (cfg_server *)&cfg;
  char err[CFG_ERR_LEN];
  int rc = load(bad_transport[_i].json, &cfg, err, sizeof err);
  ck_assert_msg(rc < 0, "case %d accepted: %s", _i, bad_transport[_i].json);
  ck_assert_ptr_null(cfg);
  ck_assert_str_eq(err, bad_transport[_i].msg);
}
END_TEST
#else
/* The Windows build has no WebSocket or TLS: the listener is refused, and
 * the error says why. */
START_TEST(test_config_transport_unavailable) {
  cfg_server *cfg = (cfg_server *)&cfg;
  char err[CFG_ERR_LEN];
  ck_assert_int_lt(load("{" PL ",'listeners':[{'port':1,'plugin':'echo','transport':"
                        "'websocket'},{'port':2,'plugin':'echo','tls':{'cert':'c','key':'k'}}]}",
                        &cfg, err, sizeof err),
                   0);
  ck_assert_ptr_null(cfg);
  ck_assert_str_eq(err, "server.json: listeners[0].transport: this build of pierd has no "
                        "WebSocket support (built without wslay)\n"
                        "server.json: listeners[1].tls: this build of pierd has no TLS "
                        "support (built without OpenSSL)");
}
END_TEST
#endif

static Suite *config_suite(void) {
  Suite *s = suite_create("config");
  TCase *tc = tcase_create("config");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_config_default_file_loads);
#ifndef _WIN32
  tcase_add_test(tc, test_config_websocket_listener);
  tcase_add_loop_test(tc, test_config_rejects_bad_transport, 0,
                      (int)(sizeof(bad_transport) / sizeof(bad_transport[0])));
#else
  tcase_add_test(tc, test_config_transport_unavailable);
#endif
  tcase_add_test(tc, test_config_defaults_when_absent);
  tcase_add_test(tc, test_config_every_key_set);
  tcase_add_test(tc, test_config_user_group_drain);
  tcase_add_test(tc, test_config_metrics_defaults);
#ifndef _WIN32
  tcase_add_test(tc, test_config_cluster);
#endif
  tcase_add_test(tc, test_config_limits_lowest_values);
  tcase_add_test(tc, test_config_plugin_path_resolution);
  tcase_add_test(tc, test_config_plugin_path_platform_extension);
  tcase_add_loop_test(tc, test_config_rejects_bad_input, 0,
                      (int)(sizeof bad / sizeof bad[0]));
  tcase_add_test(tc, test_config_reports_every_error_in_file_order);
  tcase_add_test(tc, test_config_error_count_is_bounded);
  tcase_add_test(tc, test_config_syntax_error_position);
  tcase_add_test(tc, test_config_nul_byte_in_text);
  tcase_add_test(tc, test_config_missing_file);
  tcase_add_test(tc, test_config_file_errors_and_base_dir);
  tcase_add_test(tc, test_config_error_buffer_handling);
  tcase_add_test(tc, test_config_enum_names);
  tcase_add_test(tc, test_config_truncated_and_mutated_input);
  tcase_add_test(tc, test_config_pathological_input);
  tcase_add_test(tc, test_config_plugin_dir_confines_paths);
#ifndef _WIN32 /* no symbolic links to make on Windows: see the case */
  tcase_add_test(tc, test_config_plugin_dir_symlinks);
#endif
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(config_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
