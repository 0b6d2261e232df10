/* The HTTP/1.1 side of a WebSocket listener (ws_http.h): a strict one-pass
 * parser for one request head, the route the request takes (upgrade, static
 * file, error) and the response heads. SHA-1 and base64 come from OpenSSL;
 * static files are read with plain POSIX calls (this file is Linux only).
 *
 * The parser is written here rather than taken from a library: nodejs's
 * http-parser is archived upstream, and all a listener needs is a request
 * line and a handful of headers within 8 KiB, parsed without allocating. */
#include "net/ws_http.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#define MAX_HEADER_LINES 100

/* RFC 6455 section 1.3. */
static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/* ---- characters ---- */

static int is_tchar(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
    return 1;
  switch (c) {
  case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
  case '-': case '.': case '^': case '_': case '`': case '|': case '~':
    return 1;
  default:
    return 0;
  }
}

/* A control byte other than HT (CR included: it may only end a line). */
static int is_ctl(unsigned char c) {
  return (c < 0x20 && c != '\t') || c == 0x7f;
}

static int is_blank(char c) {
  return c == ' ' || c == '\t';
}

static unsigned char lower(unsigned char c) {
  return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

static int eq_ci(const char *a, size_t alen, const char *b, size_t blen) {
  if (alen != blen)
    return 0;
  for (size_t i = 0; i < alen; i++)
    if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
      return 0;
  return 1;
}

static int str_is(ws_http_str s, const char *lit) {
  size_t n = strlen(lit);
  return s.p && s.len == n && memcmp(s.p, lit, n) == 0;
}

/* ---- the request head ---- */

/* Whether the comma-separated list v[0..len) has the element tok (ASCII
 * case-insensitive; blanks around elements and empty elements allowed, RFC
 * 9110 section 5.6.1). */
static int list_has(const char *v, size_t len, const char *tok) {
  size_t toklen = strlen(tok), i = 0;
  while (i <= len) {
    size_t s = i, e;
    while (i < len && v[i] != ',')
      i++;
    e = i;
    while (s < e && is_blank(v[s]))
      s++;
    while (e > s && is_blank(v[e - 1]))
      e--;
    if (eq_ci(v + s, e - s, tok, toklen))
      return 1;
    i++; /* past the comma (or the end) */
  }
  return 0;
}

/* 1..9 decimal digits as a number, else -1. */
static int number(const char *v, size_t len) {
  int n = 0;
  if (len < 1 || len > 9)
    return -1;
  for (size_t i = 0; i < len; i++) {
    if (v[i] < '0' || v[i] > '9')
      return -1;
    n = n * 10 + (v[i] - '0');
  }
  return n;
}

/* method SP request-target SP HTTP/1.DIGIT, in l[0..len) (no CRLF). */
static int request_line(const char *l, size_t len, ws_http_req *req) {
  size_t i = 0, t;

  while (i < len && is_tchar((unsigned char)l[i]))
    i++;
  if (i == 0 || i == len || l[i] != ' ')
    return -EPROTO;
  req->method.p = l;
  req->method.len = i;
  t = ++i;
  /* origin-form: "/" then visible ASCII (RFC 3986 leaves no room for a
   * blank or a byte above 0x7e in a target). */
  if (i == len || l[i] != '/')
    return -EPROTO;
  while (i < len && (unsigned char)l[i] > 0x20 && (unsigned char)l[i] < 0x7f)
    i++;
  if (i == len || l[i] != ' ')
    return -EPROTO;
  req->target.p = l + t;
  req->target.len = i - t;
  req->path = req->target;
  for (size_t k = 0; k < req->target.len; k++) {
    if (req->target.p[k] == '?' || req->target.p[k] == '#') {
      req->path.len = k;
      break;
    }
  }
  i++;
  if (len - i != 8 || memcmp(l + i, "HTTP/1.", 7) != 0 || l[i + 7] < '0' || l[i + 7] > '9')
    return -EPROTO;
  req->minor = l[i + 7] - '0';
  return 0;
}

/* Records a header whose second appearance is an error. */
static int once(ws_http_str *field, const char *v, size_t len) {
  if (field->p)
    return -EPROTO;
  field->p = v;
  field->len = len;
  return 0;
}

#define NAME_IS(lit) eq_ci(l, name_len, lit, sizeof(lit) - 1)

/* name ":" OWS value OWS, in l[0..len) (no CRLF, control bytes already
 * refused). */
static int header_line(const char *l, size_t len, ws_http_req *req, int *seen_version) {
  size_t name_len = 0, s, e;

  if (is_blank(l[0]))
    return -EPROTO; /* obs-fold (RFC 9112 section 5.2) */
  while (name_len < len && is_tchar((unsigned char)l[name_len]))
    name_len++;
  if (name_len == 0 || name_len == len || l[name_len] != ':')
    return -EPROTO;
  s = name_len + 1;
  e = len;
  while (s < e && is_blank(l[s]))
    s++;
  while (e > s && is_blank(l[e - 1]))
    e--;
  const char *v = l + s;
  size_t vlen = e - s;

  if (NAME_IS("host"))
    return once(&req->host, v, vlen);
  if (NAME_IS("origin"))
    return once(&req->origin, v, vlen);
  if (NAME_IS("sec-websocket-key"))
    return once(&req->key, v, vlen);
  if (NAME_IS("upgrade")) {
    if (list_has(v, vlen, "websocket"))
      req->upgrade = 1;
  } else if (NAME_IS("connection")) {
    if (list_has(v, vlen, "upgrade"))
      req->conn_upgrade = 1;
  } else if (NAME_IS("sec-websocket-version")) {
    /* Sent twice, it is the list "a, b" (RFC 9110 section 5.3): not a
     * number. */
    req->version = *seen_version ? -1 : number(v, vlen);
    *seen_version = 1;
  } else if (NAME_IS("sec-websocket-extensions")) {
    req->extensions = 1;
  }
  return 0;
}

int ws_http_parse(const char *buf, size_t len, ws_http_req *req) {
  size_t limit = len < WS_HTTP_HEAD_MAX ? len : WS_HTTP_HEAD_MAX;
  size_t pos = 0;
  int nheaders = 0, seen_version = 0, rc;

  memset(req, 0, sizeof(*req));
  req->version = -1;
  /* Line by line; every byte is looked at a fixed number of times. A line
   * still arriving is checked for control bytes at once, so garbage is
   * refused before the head is complete. */
  while (pos < limit) {
    const char *nl = memchr(buf + pos, '\n', limit - pos);
    size_t end, cend; /* the line is [pos, cend), its LF at end */

    if (nl) {
      end = (size_t)(nl - buf);
      if (end == pos || buf[end - 1] != '\r')
        return -EPROTO; /* a bare LF */
      cend = end - 1;
    } else {
      end = limit;
      cend = limit;
      if (cend > pos && buf[cend - 1] == '\r')
        cend--; /* its LF may be next */
    }
    for (size_t i = pos; i < cend; i++)
      if (is_ctl((unsigned char)buf[i]))
        return -EPROTO;
    if (!nl)
      break;
    if (pos == 0) {
      rc = request_line(buf, cend, req);
    } else if (cend == pos) {
      return (int)(end + 1);
    } else if (++nheaders > MAX_HEADER_LINES) {
      rc = -EPROTO;
    } else {
      rc = header_line(buf + pos, cend - pos, req, &seen_version);
    }
    if (rc < 0)
      return rc;
    pos = end + 1;
  }
  return len >= WS_HTTP_HEAD_MAX ? -EMSGSIZE : 0;
}

/* ---- the route ---- */

static int reply_error(ws_http_reply *out, int status, const char *why) {
  out->action = WS_HTTP_ERROR;
  out->status = status;
  out->why = why;
  return 0;
}

static int b64_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  if (c == '+')
    return 62;
  if (c == '/')
    return 63;
  return -1;
}

/* The base64 encoding of 16 bytes: 22 characters of the alphabet, the last
 * with its 4 low bits clear (they are padding), then "==". */
static int key_ok(ws_http_str key) {
  if (!key.p || key.len != 24 || key.p[22] != '=' || key.p[23] != '=')
    return 0;
  for (size_t i = 0; i < 22; i++)
    if (b64_value((unsigned char)key.p[i]) < 0)
      return 0;
  return (b64_value((unsigned char)key.p[21]) & 0xf) == 0;
}

static int origin_ok(const ws_http_site *site, ws_http_str origin) {
  if (site->norigins == 0 || !origin.p)
    return 1;
  for (size_t i = 0; i < site->norigins; i++)
    if (eq_ci(origin.p, origin.len, site->origins[i], strlen(site->origins[i])))
      return 1;
  return 0;
}

static int hex_value(unsigned char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  c = lower(c);
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

/* Finds, opens and reads the file a GET or HEAD names under the static
 * root: a FILE reply, an ERROR reply (404, 500), or -ENOMEM. */
static int serve_file(const ws_http_site *site, const ws_http_req *req, size_t max_file,
                      ws_http_reply *out) {
  char rel[PATH_MAX], joined[PATH_MAX], real[PATH_MAX];
  const char *root = site->static_root;
  size_t rlen = strlen(root), n = 0;
  struct stat st;
  int fd;

  /* Anything but an absolute root could resolve against the working
   * directory, or be "" and mean "/". */
  if (root[0] != '/')
    return reply_error(out, 500, "static directory is not an absolute path");
  while (rlen > 0 && root[rlen - 1] == '/')
    rlen--;

  /* Percent-decoded into rel; the raw path starts with '/'. */
  for (size_t i = 0; i < req->path.len; i++) {
    unsigned char c = (unsigned char)req->path.p[i];
    if (c == '%') {
      int hi = i + 2 < req->path.len ? hex_value((unsigned char)req->path.p[i + 1]) : -1;
      int lo = hi >= 0 ? hex_value((unsigned char)req->path.p[i + 2]) : -1;
      if (lo < 0)
        return reply_error(out, 404, "static file: bad percent-encoding in the path");
      c = (unsigned char)(hi << 4 | lo);
      i += 2;
    }
    if (c == '\0')
      return reply_error(out, 404, "static file: NUL in the path");
    if (c == '\\')
      return reply_error(out, 404, "static file: backslash in the path");
    if (n + 1 >= sizeof(rel))
      return reply_error(out, 404, "static file: path too long");
    rel[n++] = (char)c;
  }
  if (rel[n - 1] == '/') {
    static const char index[] = "index.html";
    if (n + sizeof(index) > sizeof(rel))
      return reply_error(out, 404, "static file: path too long");
    memcpy(rel + n, index, sizeof(index) - 1);
    n += sizeof(index) - 1;
  }
  rel[n] = '\0';
  for (size_t s = 1, e; s <= n; s = e + 1) {
    for (e = s; e < n && rel[e] != '/'; e++)
      ;
    if ((e - s == 1 && rel[s] == '.') || (e - s == 2 && rel[s] == '.' && rel[s + 1] == '.'))
      return reply_error(out, 404, "static file: a . or .. segment in the path");
  }
  if (rlen + n + 1 > sizeof(joined))
    return reply_error(out, 404, "static file: path too long");
  memcpy(joined, root, rlen);
  memcpy(joined + rlen, rel, n + 1);

  /* Links inside the root are followed; where they lead must be inside it
   * too. The resolved path is opened with O_NOFOLLOW, so a link put in
   * place of its last component since realpath is refused. O_NONBLOCK: a
   * FIFO must not block the open (it is refused below). */
  if (!realpath(joined, real))
    return errno == ENOMEM ? -ENOMEM : reply_error(out, 404, "static file: no such file");
  if (strncmp(real, root, rlen) != 0 || (real[rlen] != '\0' && real[rlen] != '/'))
    return reply_error(out, 404, "static file: path resolves outside the static directory");
  fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP)
      return reply_error(out, 404, "static file: no such file");
    return reply_error(out, 500, "static file: cannot open the file");
  }
  if (fstat(fd, &st) < 0) {
    close(fd);
    return reply_error(out, 500, "static file: cannot stat the file");
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return reply_error(out, 404, "static file: not a regular file");
  }
  if (max_file > WS_HTTP_FILE_MAX)
    max_file = WS_HTTP_FILE_MAX;
  if (st.st_size < 0 || (unsigned long long)st.st_size > max_file) {
    close(fd);
    return reply_error(out, 500, "static file: larger than the static file limit");
  }

  size_t size = (size_t)st.st_size, got = 0;
  char *body = malloc(size ? size : 1);
  if (!body) {
    close(fd);
    return -ENOMEM;
  }
  /* A file that shrinks meanwhile is served as far as it goes; one that
   * grows, up to the size it had. */
  while (got < size) {
    ssize_t r = read(fd, body + got, size - got);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      free(body);
      close(fd);
      return reply_error(out, 500, "static file: read failed");
    }
    if (r == 0)
      break;
    got += (size_t)r;
  }
  close(fd);
  out->action = WS_HTTP_FILE;
  out->status = 200;
  out->head_only = str_is(req->method, "HEAD");
  out->body = body;
  out->body_len = got;
  out->content_type = ws_http_content_type(rel, n);
  return 0;
}

int ws_http_route(const ws_http_site *site, const ws_http_req *req, size_t max_file,
                  ws_http_reply *out) {
  size_t plen = strlen(site->path);
  int on_path = req->path.p && req->path.len == plen && memcmp(req->path.p, site->path, plen) == 0;
  int rc;

  memset(out, 0, sizeof(*out));
  if (req->upgrade) {
    if (!on_path)
      return reply_error(out, 404, "WebSocket upgrade for another path");
    if (!str_is(req->method, "GET"))
      return reply_error(out, 400, "WebSocket handshake: the method is not GET");
    if (req->minor < 1)
      return reply_error(out, 400, "WebSocket handshake: HTTP/1.0");
    if (!req->conn_upgrade)
      return reply_error(out, 400, "WebSocket handshake: Connection does not list upgrade");
    if (req->version != 13)
      return reply_error(out, 426, "WebSocket handshake: Sec-WebSocket-Version is not 13");
    if (!key_ok(req->key))
      return reply_error(out, 400,
                         "WebSocket handshake: Sec-WebSocket-Key is not base64 of 16 bytes");
    if (!origin_ok(site, req->origin))
      return reply_error(out, 403, "WebSocket handshake: Origin not allowed");
    out->action = WS_HTTP_UPGRADE;
    out->status = 101;
    return 0;
  }
  if (!site->static_root)
    return on_path ? reply_error(out, 426, "plain HTTP request for the WebSocket path")
                   : reply_error(out, 404, "no such file (no static directory)");
  if (!str_is(req->method, "GET") && !str_is(req->method, "HEAD"))
    return reply_error(out, 405, "static file: the method is not GET or HEAD");
  rc = serve_file(site, req, max_file, out);
  if (rc == 0 && on_path && out->action == WS_HTTP_ERROR && out->status == 404) {
    memset(out, 0, sizeof(*out));
    return reply_error(out, 426, "plain HTTP request for the WebSocket path");
  }
  if (rc < 0)
    memset(out, 0, sizeof(*out));
  return rc;
}

void ws_http_reply_free(ws_http_reply *out) {
  free(out->body);
  out->body = NULL;
  out->body_len = 0;
}

/* ---- content types ---- */

static const struct {
  const char *ext;
  const char *type;
} content_types[] = {
    {"html", "text/html; charset=utf-8"},
    {"htm", "text/html; charset=utf-8"},
    {"js", "text/javascript; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"json", "application/json"},
    {"svg", "image/svg+xml"},
    {"png", "image/png"},
    {"jpg", "image/jpeg"},
    {"jpeg", "image/jpeg"},
    {"gif", "image/gif"},
    {"ico", "image/x-icon"},
    {"wasm", "application/wasm"},
    {"txt", "text/plain; charset=utf-8"},
    {"map", "application/json"},
    {"webp", "image/webp"},
    {"woff", "font/woff"},
    {"woff2", "font/woff2"},
};

const char *ws_http_content_type(const char *name, size_t len) {
  size_t dot = len;
  for (size_t i = len; i > 0 && name[i - 1] != '/'; i--) {
    if (name[i - 1] == '.') {
      dot = i - 1;
      break;
    }
  }
  if (dot < len) {
    const char *ext = name + dot + 1;
    size_t elen = len - dot - 1;
    for (size_t i = 0; i < sizeof(content_types) / sizeof(content_types[0]); i++)
      if (eq_ci(ext, elen, content_types[i].ext, strlen(content_types[i].ext)))
        return content_types[i].type;
  }
  return "application/octet-stream";
}

/* ---- responses ---- */

void ws_http_accept_key(const char *key, size_t key_len, char out[29]) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) &&
           EVP_DigestUpdate(ctx, key, key_len) &&
           EVP_DigestUpdate(ctx, ws_guid, sizeof(ws_guid) - 1) &&
           EVP_DigestFinal_ex(ctx, md, &mdlen) && mdlen == 20;

  EVP_MD_CTX_free(ctx);
  out[0] = '\0';
  if (ok)
    EVP_EncodeBlock((unsigned char *)out, md, 20); /* 28 characters and a NUL */
}

/* A response written into out[0..cap), no NUL; any overflow makes it 0. */
typedef struct wbuf {
  char *p;
  size_t cap, len;
  int over;
} wbuf;

static void put(wbuf *w, const char *s, size_t n) {
  if (w->over || n > w->cap - w->len) {
    w->over = 1;
    return;
  }
  memcpy(w->p + w->len, s, n);
  w->len += n;
}

static void put_str(wbuf *w, const char *s) {
  put(w, s, strlen(s));
}

static void put_num(wbuf *w, size_t v) {
  char tmp[24];
  int n = snprintf(tmp, sizeof(tmp), "%zu", v);
  put(w, tmp, (size_t)n);
}

static size_t written(const wbuf *w) {
  return w->over ? 0 : w->len;
}

size_t ws_http_write_upgrade(const ws_http_req *req, char *out, size_t cap) {
  char accept[29];
  wbuf w = {out, cap, 0, 0};

  ws_http_accept_key(req->key.p ? req->key.p : "", req->key.len, accept);
  if (!accept[0])
    return 0;
  put_str(&w, "HTTP/1.1 101 Switching Protocols\r\n"
              "Upgrade: websocket\r\n"
              "Connection: Upgrade\r\n"
              "Sec-WebSocket-Accept: ");
  put_str(&w, accept);
  put_str(&w, "\r\n\r\n");
  return written(&w);
}

static const char *reason(int status) {
  switch (status) {
  case 400: return "Bad Request";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 426: return "Upgrade Required";
  case 500: return "Internal Server Error";
  default: return "Error";
  }
}

size_t ws_http_write_error(int status, char *out, size_t cap) {
  wbuf w = {out, cap, 0, 0};
  const char *why;
  size_t body_len;

  if (status < 100 || status > 599)
    status = 500;
  why = reason(status);
  body_len = 3 + 1 + strlen(why) + 1; /* "404 Not Found\n" */
  put_str(&w, "HTTP/1.1 ");
  put_num(&w, (size_t)status);
  put_str(&w, " ");
  put_str(&w, why);
  put_str(&w, "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ");
  put_num(&w, body_len);
  put_str(&w, "\r\nConnection: close\r\n");
  if (status == 426)
    put_str(&w, "Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n");
  if (status == 405)
    put_str(&w, "Allow: GET, HEAD\r\n");
  put_str(&w, "\r\n");
  put_num(&w, (size_t)status);
  put_str(&w, " ");
  put_str(&w, why);
  put_str(&w, "\n");
  return written(&w);
}

size_t ws_http_write_file_head(const char *content_type, size_t body_len, char *out, size_t cap) {
  wbuf w = {out, cap, 0, 0};

  put_str(&w, "HTTP/1.1 200 OK\r\nContent-Type: ");
  put_str(&w, content_type);
  put_str(&w, "\r\nContent-Length: ");
  put_num(&w, body_len);
  put_str(&w, "\r\nConnection: close\r\n"
              "Cache-Control: no-cache\r\n"
              "X-Content-Type-Options: nosniff\r\n"
              "\r\n");
  return written(&w);
}
