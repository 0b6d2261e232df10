/* Fuzz target for the WebSocket listener's HTTP side (core/net/ws_http.c).
 *
 * Input: the bytes a client sent, parsed from a buffer of exactly that size
 * (so reading past it is caught by ASan). The result must be a head length
 * within the input and the 8 KiB cap, 0 (only below the cap), -EPROTO or
 * -EMSGSIZE (only at the cap). A head ends at the first CRLF CRLF, every
 * field points inside it and holds only what its grammar allows; each
 * shorter prefix of a head is incomplete (0), the head alone parses the
 * same; an error stays an error with more bytes after it.
 *
 * A parsed request is routed for three sites (WebSocket path "/chat" with an
 * Origin list and a static directory; "/" with the directory and a 100-byte
 * file limit; "/chat" with no directory) and each reply is checked against
 * the request: an upgrade only for a valid handshake on the site's path, a
 * file only for GET or HEAD, its bytes those of a file inside the directory
 * (never the one beside it, reachable only through links out), a status
 * from the documented set; the response is written into a buffer of exactly
 * its size and must fit, and one byte less must be refused. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"
#include "net/ws_http.h"

/* ---- the static directory, made once per process ---- */

static const struct {
  const char *name;
  const char *data;
} files[] = {
    {"index.html", "<h1>pier</h1>\n"},
    {"app.js", "console.log(1);\n"},
    {"style.css", "body{}\n"},
    {"empty.txt", ""},
    {"chat.txt", "a text file\n"},
    {"sub/index.html", "sub index\n"},
    {"sub/a b%.json", "{}\n"},
    {"big.bin", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
};
#define NFILES (sizeof(files) / sizeof(files[0]))
static const char secret[] = "outside the root\n";

static char tmp[PATH_MAX], root[PATH_MAX + 8];

static void put_file(const char *dir, const char *name, const char *data) {
  char path[PATH_MAX * 2];
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  FUZZ_CHECK(fd >= 0, "cannot create %s", path);
  FUZZ_CHECK(write(fd, data, strlen(data)) == (ssize_t)strlen(data), "cannot write %s", path);
  close(fd);
}

static void put_link(const char *target, const char *name) {
  char path[PATH_MAX * 2];
  snprintf(path, sizeof(path), "%s/%s", root, name);
  FUZZ_CHECK(symlink(target, path) == 0, "cannot link %s", path);
}

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw) {
  (void)st;
  (void)ftw;
  return type == FTW_DP ? rmdir(path) : unlink(path);
}

static void remove_tree(void) {
  if (tmp[0])
    nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void make_tree(void) {
  const char *base = getenv("TMPDIR");
  char made[PATH_MAX], path[PATH_MAX * 2];

  snprintf(made, sizeof(made), "%s/pier-fuzz-ws-http-XXXXXX", base && *base ? base : "/tmp");
  FUZZ_CHECK(mkdtemp(made) != NULL, "mkdtemp %s failed", made);
  FUZZ_CHECK(realpath(made, tmp) != NULL, "realpath %s failed", made);
  atexit(remove_tree);
  snprintf(root, sizeof(root), "%s/root", tmp);
  FUZZ_CHECK(mkdir(root, 0700) == 0, "mkdir %s failed", root);
  snprintf(path, sizeof(path), "%s/sub", root);
  FUZZ_CHECK(mkdir(path, 0700) == 0, "mkdir %s failed", path);
  for (size_t i = 0; i < NFILES; i++)
    put_file(root, files[i].name, files[i].data);
  put_file(tmp, "secret.txt", secret);
  put_link("../secret.txt", "escape");
  put_link("..", "escape-dir");
  put_link("app.js", "inside-link");
  put_link("sub", "sub-link");
  put_link("loop", "loop");
  snprintf(path, sizeof(path), "%s/pipe", root);
  FUZZ_CHECK(mkfifo(path, 0600) == 0, "mkfifo %s failed", path);
}

/* ---- checks ---- */

static int is_tchar(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int within(ws_http_str s, const char *buf, size_t n) {
  return s.p >= buf && s.len <= n && (size_t)(s.p - buf) <= n - s.len;
}

/* An optional header value: absent (NULL, 0), or inside the head with no
 * control byte other than HT and no blank at either end. */
static void check_value(const char *what, ws_http_str v, const char *buf, size_t n) {
  if (!v.p) {
    FUZZ_CHECK(v.len == 0, "%s absent with length %zu", what, v.len);
    return;
  }
  FUZZ_CHECK(within(v, buf, n), "%s outside the head", what);
  for (size_t i = 0; i < v.len; i++) {
    unsigned char c = (unsigned char)v.p[i];
    FUZZ_CHECK(!((c < 0x20 && c != '\t') || c == 0x7f), "%s holds byte 0x%02x", what, c);
  }
  if (v.len > 0) {
    FUZZ_CHECK(v.p[0] != ' ' && v.p[0] != '\t', "%s starts with a blank", what);
    FUZZ_CHECK(v.p[v.len - 1] != ' ' && v.p[v.len - 1] != '\t', "%s ends with a blank", what);
  }
}

static int same_str(ws_http_str a, ws_http_str b) {
  return a.p == b.p && a.len == b.len;
}

static int same_req(const ws_http_req *a, const ws_http_req *b) {
  return same_str(a->method, b->method) && same_str(a->target, b->target) &&
         same_str(a->path, b->path) && same_str(a->key, b->key) &&
         same_str(a->origin, b->origin) && same_str(a->host, b->host) && a->minor == b->minor &&
         a->upgrade == b->upgrade && a->conn_upgrade == b->conn_upgrade &&
         a->version == b->version && a->extensions == b->extensions;
}

static void check_req(const ws_http_req *req, const char *buf, size_t n) {
  FUZZ_CHECK(req->method.p == buf && req->method.len > 0 && req->method.len < n,
             "method not at the start");
  for (size_t i = 0; i < req->method.len; i++)
    FUZZ_CHECK(is_tchar((unsigned char)req->method.p[i]), "method byte 0x%02x",
               (unsigned char)req->method.p[i]);
  FUZZ_CHECK(within(req->target, buf, n) && req->target.len > 0 && req->target.p[0] == '/',
             "target not origin-form");
  for (size_t i = 0; i < req->target.len; i++) {
    unsigned char c = (unsigned char)req->target.p[i];
    FUZZ_CHECK(c > 0x20 && c < 0x7f, "target byte 0x%02x", c);
  }
  FUZZ_CHECK(req->path.p == req->target.p && req->path.len <= req->target.len,
             "path not a prefix of the target");
  FUZZ_CHECK(memchr(req->path.p, '?', req->path.len) == NULL &&
                 memchr(req->path.p, '#', req->path.len) == NULL,
             "path holds '?' or '#'");
  FUZZ_CHECK(req->path.len == req->target.len || req->target.p[req->path.len] == '?' ||
                 req->target.p[req->path.len] == '#',
             "path ends early");
  FUZZ_CHECK(req->minor >= 0 && req->minor <= 9, "minor %d", req->minor);
  FUZZ_CHECK(req->upgrade == 0 || req->upgrade == 1, "upgrade %d", req->upgrade);
  FUZZ_CHECK(req->conn_upgrade == 0 || req->conn_upgrade == 1, "conn_upgrade %d",
             req->conn_upgrade);
  FUZZ_CHECK(req->extensions == 0 || req->extensions == 1, "extensions %d", req->extensions);
  FUZZ_CHECK(req->version >= -1, "version %d", req->version);
  check_value("key", req->key, buf, n);
  check_value("origin", req->origin, buf, n);
  check_value("host", req->host, buf, n);
}

static int str_is(ws_http_str s, const char *lit) {
  return s.p && s.len == strlen(lit) && memcmp(s.p, lit, s.len) == 0;
}

/* One response, written by the function that makes it. */
typedef struct resp {
  enum { R_UPGRADE, R_ERROR, R_FILE } kind;
  const ws_http_req *req;
  int status;
  const char *type;
  size_t len;
} resp;

static size_t write_resp(const resp *r, char *out, size_t cap) {
  switch (r->kind) {
  case R_UPGRADE:
    return ws_http_write_upgrade(r->req, out, cap);
  case R_ERROR:
    return ws_http_write_error(r->status, out, cap);
  default:
    return ws_http_write_file_head(r->type, r->len, out, cap);
  }
}

/* The response in a buffer of exactly its size (the caller frees); one
 * byte less must be refused. */
static char *write_exact(const resp *r, size_t *n) {
  char probe[1024], *out;

  *n = write_resp(r, probe, sizeof(probe));
  FUZZ_CHECK(*n > 0 && *n <= sizeof(probe), "response of %zu bytes", *n);
  out = malloc(*n);
  FUZZ_CHECK(out != NULL, "out of memory");
  FUZZ_CHECK(write_resp(r, out, *n) == *n, "response changed size in a buffer of its size");
  FUZZ_CHECK(memcmp(out, probe, *n) == 0, "response changed bytes");
  FUZZ_CHECK(write_resp(r, out, *n - 1) == 0, "response of %zu bytes fit in %zu", *n, *n - 1);
  return out;
}

static void check_upgrade(const ws_http_site *site, const ws_http_req *req) {
  char *out, accept[29], want[256];
  size_t n;

  FUZZ_CHECK(req->upgrade && req->conn_upgrade && str_is(req->method, "GET") &&
                 req->minor >= 1 && req->version == 13,
             "UPGRADE for a request that is not a handshake");
  FUZZ_CHECK(req->path.len == strlen(site->path) &&
                 memcmp(req->path.p, site->path, req->path.len) == 0,
             "UPGRADE for another path");
  FUZZ_CHECK(req->key.len == 24 && req->key.p[22] == '=' && req->key.p[23] == '=',
             "UPGRADE with key \"%.*s\"", (int)req->key.len, req->key.p);
  if (site->norigins && req->origin.p) {
    int found = 0;
    for (size_t i = 0; i < site->norigins; i++)
      found |= req->origin.len == strlen(site->origins[i]) &&
               strncasecmp(req->origin.p, site->origins[i], req->origin.len) == 0;
    FUZZ_CHECK(found, "UPGRADE for origin \"%.*s\"", (int)req->origin.len, req->origin.p);
  }
  ws_http_accept_key(req->key.p, req->key.len, accept);
  FUZZ_CHECK(strlen(accept) == 28 && accept[27] == '=', "accept key \"%s\"", accept);
  out = write_exact(&(resp){.kind = R_UPGRADE, .req = req}, &n);
  snprintf(want, sizeof(want),
           "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Accept: %s\r\n\r\n", accept);
  FUZZ_CHECK(n == strlen(want) && memcmp(out, want, n) == 0, "101 response: %.*s", (int)n, out);
  free(out);
}

static void check_error(const ws_http_site *site, const ws_http_req *req,
                        const ws_http_reply *rep) {
  char *out, line[32];
  size_t n;
  int s = rep->status;

  FUZZ_CHECK(s == 400 || s == 403 || s == 404 || s == 405 || s == 426 || s == 500, "status %d",
             s);
  FUZZ_CHECK(rep->why && *rep->why && !strchr(rep->why, '\n'), "why \"%s\"",
             rep->why ? rep->why : "(null)");
  FUZZ_CHECK(rep->body == NULL && rep->body_len == 0, "an error with a body");
  if (s == 403)
    FUZZ_CHECK(req->upgrade && site->norigins && req->origin.p, "403 without an Origin list");
  if (s == 405)
    FUZZ_CHECK(!req->upgrade && site->static_root, "405 for an upgrade or without a directory");
  if (s == 500)
    FUZZ_CHECK(!req->upgrade && site->static_root, "500 for an upgrade or without a directory");
  if (s == 400)
    FUZZ_CHECK(req->upgrade, "400 for a request that is not an upgrade");
  out = write_exact(&(resp){.kind = R_ERROR, .status = s}, &n);
  snprintf(line, sizeof(line), "HTTP/1.1 %d ", s);
  FUZZ_CHECK(n > strlen(line) && memcmp(out, line, strlen(line)) == 0, "error response: %.*s",
             (int)n, out);
  free(out);
}

static void check_file(const ws_http_site *site, const ws_http_req *req, size_t max_file,
                       const ws_http_reply *rep) {
  char *out;
  size_t n;
  int known = 0;

  FUZZ_CHECK(site->static_root && !req->upgrade, "FILE for an upgrade or without a directory");
  FUZZ_CHECK(str_is(req->method, "GET") || str_is(req->method, "HEAD"), "FILE for %.*s",
             (int)req->method.len, req->method.p);
  FUZZ_CHECK(rep->head_only == str_is(req->method, "HEAD"), "head_only %d", rep->head_only);
  FUZZ_CHECK(rep->body != NULL && rep->body_len <= max_file, "body of %zu bytes, max %zu",
             rep->body_len, max_file);
  FUZZ_CHECK(rep->content_type && *rep->content_type, "no content type");
  FUZZ_CHECK(!(rep->body_len == sizeof(secret) - 1 &&
               memcmp(rep->body, secret, rep->body_len) == 0),
             "served the file outside the root for %.*s", (int)req->target.len, req->target.p);
  for (size_t i = 0; i < NFILES; i++)
    known |= rep->body_len == strlen(files[i].data) &&
             memcmp(rep->body, files[i].data, rep->body_len) == 0;
  FUZZ_CHECK(known, "served %zu bytes that are no file of the directory", rep->body_len);
  out = write_exact(&(resp){.kind = R_FILE, .type = rep->content_type, .len = rep->body_len}, &n);
  FUZZ_CHECK(memcmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0, "file response: %.*s", (int)n, out);
  free(out);
}

static void check_route(const ws_http_site *site, const ws_http_req *req, size_t max_file) {
  ws_http_reply rep;
  int rc = ws_http_route(site, req, max_file, &rep);

  FUZZ_CHECK(rc == 0, "ws_http_route returned %d", rc);
  switch (rep.action) {
  case WS_HTTP_UPGRADE:
    FUZZ_CHECK(rep.body == NULL, "an upgrade with a body");
    check_upgrade(site, req);
    break;
  case WS_HTTP_ERROR:
    check_error(site, req, &rep);
    break;
  case WS_HTTP_FILE:
    check_file(site, req, max_file, &rep);
    break;
  default:
    FUZZ_CHECK(0, "action %d", (int)rep.action);
  }
  ws_http_reply_free(&rep);
  FUZZ_CHECK(rep.body == NULL, "body left after ws_http_reply_free");
}

int FUZZ_ENTRY(const uint8_t *data, size_t size) {
  static const char *const origins[] = {"http://127.0.0.1:7780", "https://game.example"};
  ws_http_req req, again;
  uint64_t h = fuzz_hash(data, size);
  char *buf = malloc(size ? size : 1);
  int rc;

  if (!root[0])
    make_tree();
  FUZZ_CHECK(buf != NULL, "out of memory");
  memcpy(buf, data, size);
  rc = ws_http_parse(buf, size, &req);

  if (rc == 0) {
    FUZZ_CHECK(size < WS_HTTP_HEAD_MAX, "0 (incomplete) for %zu bytes", size);
  } else if (rc == -EMSGSIZE) {
    FUZZ_CHECK(size >= WS_HTTP_HEAD_MAX, "-EMSGSIZE for %zu bytes", size);
    FUZZ_CHECK(ws_http_parse(buf, WS_HTTP_HEAD_MAX, &again) == -EMSGSIZE,
               "the first 8 KiB alone are not too large");
  } else if (rc == -EPROTO) {
    /* A prefix is incomplete or already an error; more bytes change
     * nothing. */
    size_t k = (size_t)(h % size);
    int rk = ws_http_parse(buf, k, &again);
    FUZZ_CHECK(rk == 0 || rk == -EPROTO, "prefix of %zu bytes of an error gave %d", k, rk);
    char *more = malloc(size + 4);
    FUZZ_CHECK(more != NULL, "out of memory");
    memcpy(more, buf, size);
    memcpy(more + size, "\r\n\r\n", 4);
    rk = ws_http_parse(more, size + 4, &again);
    FUZZ_CHECK(rk == -EPROTO, "an error followed by CRLF CRLF gave %d", rk);
    free(more);
  } else {
    size_t n = (size_t)rc;
    FUZZ_CHECK(rc > 0 && n <= size && n <= WS_HTTP_HEAD_MAX, "returned %d for %zu bytes", rc,
               size);
    FUZZ_CHECK(n >= 4 && memcmp(buf + n - 4, "\r\n\r\n", 4) == 0,
               "head does not end in CRLF CRLF");
    for (size_t i = 0; i + 4 < n; i++)
      FUZZ_CHECK(memcmp(buf + i, "\r\n\r\n", 4) != 0, "CRLF CRLF at %zu inside the head", i);
    check_req(&req, buf, n);
    FUZZ_CHECK(ws_http_parse(buf, n, &again) == rc && same_req(&req, &again),
               "the head alone parses differently");
    FUZZ_CHECK(ws_http_parse(buf, n - 1, &again) == 0, "head less its last byte is not 0");
    size_t k = (size_t)(h % n);
    FUZZ_CHECK(ws_http_parse(buf, k, &again) == 0, "prefix of %zu bytes is not 0", k);

    ws_http_site a = {.path = "/chat", .origins = origins, .norigins = 2, .static_root = root};
    ws_http_site b = {.path = "/", .static_root = root};
    ws_http_site c = {.path = "/chat"};
    check_route(&a, &req, WS_HTTP_FILE_MAX);
    check_route(&b, &req, 100);
    check_route(&c, &req, WS_HTTP_FILE_MAX);
  }
  free(buf);
  return 0;
}
