/* Unit tests for the WebSocket listener's HTTP side (core/net/ws_http.c):
 * the request parser (fields, every malformed-input rule, incomplete heads,
 * the 8 KiB cap), the route of each kind of request with the exact bytes of
 * its response, the Origin allow-list, and static files (index.html,
 * content types, traversal, links out of the root, directories, FIFOs, HEAD,
 * the size limit) from a directory tree made for each test. Linux only. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "net/ws_http.h"
#include "testlib.h"

#define CRLF "\r\n"
#define SAMPLE_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define SAMPLE_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

/* What Chromium sends for new WebSocket("ws://127.0.0.1:7780/chat"). */
static const char chromium_head[] =
    "GET /chat HTTP/1.1" CRLF
    "Host: 127.0.0.1:7780" CRLF
    "Connection: Upgrade" CRLF
    "Pragma: no-cache" CRLF
    "Cache-Control: no-cache" CRLF
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)" CRLF
    "Upgrade: websocket" CRLF
    "Origin: http://127.0.0.1:7780" CRLF
    "Sec-WebSocket-Version: 13" CRLF
    "Accept-Encoding: gzip, deflate, br" CRLF
    "Accept-Language: en-US,en;q=0.9" CRLF
    "Sec-WebSocket-Key: " SAMPLE_KEY CRLF
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits" CRLF
    CRLF;

#define UPGRADE_HEADERS                                                                        \
  "Host: h" CRLF "Upgrade: websocket" CRLF "Connection: Upgrade" CRLF                         \
  "Sec-WebSocket-Version: 13" CRLF

static int parse_str(const char *s, ws_http_req *req) {
  return ws_http_parse(s, strlen(s), req);
}

static int str_eq(ws_http_str s, const char *lit) {
  return s.p && s.len == strlen(lit) && memcmp(s.p, lit, s.len) == 0;
}

#define assert_str(field, lit)                                                                 \
  ck_assert_msg(str_eq(field, lit), "%s is \"%.*s\", expected \"%s\"", #field,                 \
                (int)(field).len, (field).p ? (field).p : "(null)", lit)

/* ---- parser ---- */

START_TEST(test_ws_http_parse_browser_handshake) {
  ws_http_req req;
  size_t len = strlen(chromium_head);

  ck_assert_int_eq(ws_http_parse(chromium_head, len, &req), (int)len);
  assert_str(req.method, "GET");
  assert_str(req.target, "/chat");
  assert_str(req.path, "/chat");
  ck_assert_int_eq(req.minor, 1);
  ck_assert_int_eq(req.upgrade, 1);
  ck_assert_int_eq(req.conn_upgrade, 1);
  ck_assert_int_eq(req.version, 13);
  assert_str(req.key, SAMPLE_KEY);
  assert_str(req.origin, "http://127.0.0.1:7780");
  assert_str(req.host, "127.0.0.1:7780");
  ck_assert_int_eq(req.extensions, 1);
  /* Every field points into the buffer. */
  ck_assert(req.key.p > chromium_head && req.key.p + req.key.len < chromium_head + len);
}
END_TEST

START_TEST(test_ws_http_parse_fields) {
  ws_http_req req;

  /* A plain GET: nothing WebSocket, the path stops at '?' or '#'. */
  const char *plain = "HEAD /a/b.js?v=1#x HTTP/1.0" CRLF CRLF;
  ck_assert_int_eq(parse_str(plain, &req), (int)strlen(plain));
  assert_str(req.method, "HEAD");
  assert_str(req.target, "/a/b.js?v=1#x");
  assert_str(req.path, "/a/b.js");
  ck_assert_int_eq(req.minor, 0);
  ck_assert_int_eq(req.upgrade, 0);
  ck_assert_int_eq(req.conn_upgrade, 0);
  ck_assert_int_eq(req.version, -1);
  ck_assert_ptr_null(req.key.p);
  ck_assert_ptr_null(req.origin.p);
  ck_assert_ptr_null(req.host.p);
  ck_assert_int_eq(req.extensions, 0);

  const char *frag = "GET /x#y?z HTTP/1.1" CRLF CRLF;
  ck_assert_int_eq(parse_str(frag, &req), (int)strlen(frag));
  assert_str(req.path, "/x");
  ck_assert_int_eq(req.minor, 1);

  /* Names in any case, values trimmed, token lists with blanks, empty
   * elements and several header lines. */
  const char *lists = "GET / HTTP/1.9" CRLF
                      "sEC-wEBsOCKET-kEY: \t " SAMPLE_KEY " \t" CRLF
                      "UPGRADE: h2c" CRLF
                      "upgrade: , foo ,\tWebSocket\t" CRLF
                      "connection: keep-alive" CRLF
                      "CONNECTION: ,,keep-alive ,  UPGRADE" CRLF
                      "origin:http://a" CRLF
                      "hOsT:   " CRLF
                      "sec-websocket-version:   13  " CRLF
                      "Sec-WebSocket-Extensions:" CRLF
                      "X-Other: \x80\xff obs-text" CRLF CRLF;
  ck_assert_int_eq(parse_str(lists, &req), (int)strlen(lists));
  ck_assert_int_eq(req.minor, 9);
  assert_str(req.key, SAMPLE_KEY);
  ck_assert_int_eq(req.upgrade, 1);
  ck_assert_int_eq(req.conn_upgrade, 1);
  assert_str(req.origin, "http://a");
  ck_assert_ptr_nonnull(req.host.p); /* present, empty */
  ck_assert_uint_eq(req.host.len, 0);
  ck_assert_int_eq(req.version, 13);
  ck_assert_int_eq(req.extensions, 1);

  /* A token is matched whole, not as a prefix or substring. */
  const char *near = "GET / HTTP/1.1" CRLF "Upgrade: websocket2, xwebsocket, websocket/13" CRLF
                     "Connection: upgraded, no-upgrade" CRLF CRLF;
  ck_assert_int_eq(parse_str(near, &req), (int)strlen(near));
  ck_assert_int_eq(req.upgrade, 0);
  ck_assert_int_eq(req.conn_upgrade, 0);

  /* Sec-WebSocket-Version: a number, else -1 (sent twice it is a list). */
  static const struct {
    const char *value;
    int version;
  } versions[] = {{"13", 13}, {"8", 8}, {"0", 0}, {"013", 13}, {"123456789", 123456789},
                  {"1234567890", -1}, {"13a", -1}, {"-13", -1}, {"1 3", -1}, {"", -1},
                  {"13, 8", -1}};
  for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
    char head[256];
    snprintf(head, sizeof(head), "GET / HTTP/1.1" CRLF "Sec-WebSocket-Version: %s" CRLF CRLF,
             versions[i].value);
    ck_assert_int_eq(parse_str(head, &req), (int)strlen(head));
    ck_assert_msg(req.version == versions[i].version, "version \"%s\" parsed as %d",
                  versions[i].value, req.version);
  }
  const char *twice = "GET / HTTP/1.1" CRLF "Sec-WebSocket-Version: 13" CRLF
                      "Sec-WebSocket-Version: 13" CRLF CRLF;
  ck_assert_int_eq(parse_str(twice, &req), (int)strlen(twice));
  ck_assert_int_eq(req.version, -1);
}
END_TEST

START_TEST(test_ws_http_parse_every_prefix_is_incomplete) {
  static const char *heads[] = {chromium_head, "GET / HTTP/1.1" CRLF CRLF,
                                "OPTIONS /x?y HTTP/1.0" CRLF "A:" CRLF "B: \tc\t" CRLF CRLF};
  for (size_t h = 0; h < sizeof(heads) / sizeof(heads[0]); h++) {
    size_t len = strlen(heads[h]);
    static const char after[] = "\x81\x85garbage\r\n\r\n";
    char *buf = malloc(len + sizeof(after));
    ws_http_req req;

    ck_assert_ptr_nonnull(buf);
    memcpy(buf, heads[h], len);
    for (size_t n = 0; n < len; n++)
      ck_assert_msg(ws_http_parse(buf, n, &req) == 0, "head %zu: prefix of %zu bytes gave %d",
                    h, n, ws_http_parse(buf, n, &req));
    ck_assert_int_eq(ws_http_parse(buf, len, &req), (int)len);
    /* What follows the head (WebSocket frames, say) is not part of it. */
    memcpy(buf + len, after, sizeof(after));
    ck_assert_int_eq(ws_http_parse(buf, len + sizeof(after), &req), (int)len);
    free(buf);
  }
}
END_TEST

START_TEST(test_ws_http_parse_malformed) {
  /* The literals may hold NULs: their length is the array's. */
#define BAD(what, lit) {what, lit, sizeof(lit) - 1}
  static const struct {
    const char *what;
    const char *head;
    size_t len;
  } bad[] = {
      /* the request line */
      BAD("empty request line", CRLF CRLF),
      BAD("leading blank line", CRLF "GET / HTTP/1.1" CRLF CRLF),
      BAD("no method", " / HTTP/1.1" CRLF CRLF),
      BAD("method not a token", "G(T / HTTP/1.1" CRLF CRLF),
      BAD("method with a high byte", "G\xc3\x89T / HTTP/1.1" CRLF CRLF),
      BAD("two spaces after the method", "GET  / HTTP/1.1" CRLF CRLF),
      BAD("HT after the method", "GET\t/ HTTP/1.1" CRLF CRLF),
      BAD("no target", "GET HTTP/1.1" CRLF CRLF),
      BAD("asterisk-form", "OPTIONS * HTTP/1.1" CRLF CRLF),
      BAD("absolute-form", "GET http://h/ HTTP/1.1" CRLF CRLF),
      BAD("authority-form", "CONNECT h:80 HTTP/1.1" CRLF CRLF),
      BAD("relative target", "GET chat HTTP/1.1" CRLF CRLF),
      BAD("high byte in the target", "GET /\xc3\xa9 HTTP/1.1" CRLF CRLF),
      BAD("DEL in the target", "GET /\x7f HTTP/1.1" CRLF CRLF),
      BAD("HT in the target", "GET /a\tb HTTP/1.1" CRLF CRLF),
      BAD("two spaces before the version", "GET /  HTTP/1.1" CRLF CRLF),
      BAD("no version", "GET /" CRLF CRLF),
      BAD("no version after the space", "GET / " CRLF CRLF),
      BAD("HTTP/2.0", "GET / HTTP/2.0" CRLF CRLF),
      BAD("HTTP/1.10", "GET / HTTP/1.10" CRLF CRLF),
      BAD("HTTP/1.", "GET / HTTP/1." CRLF CRLF),
      BAD("HTTP/1.x", "GET / HTTP/1.x" CRLF CRLF),
      BAD("lower-case version", "GET / http/1.1" CRLF CRLF),
      BAD("HTTP/0.9 style", "GET /" CRLF),
      BAD("blank after the version", "GET / HTTP/1.1 " CRLF CRLF),
      BAD("a third word", "GET / HTTP/1.1 x" CRLF CRLF),
      /* header lines */
      BAD("no colon", "GET / HTTP/1.1" CRLF "Host" CRLF CRLF),
      BAD("no colon, a value", "GET / HTTP/1.1" CRLF "Host h" CRLF CRLF),
      BAD("blank before the colon", "GET / HTTP/1.1" CRLF "Host : h" CRLF CRLF),
      BAD("HT before the colon", "GET / HTTP/1.1" CRLF "Host\t: h" CRLF CRLF),
      BAD("empty name", "GET / HTTP/1.1" CRLF ": h" CRLF CRLF),
      BAD("name not a token", "GET / HTTP/1.1" CRLF "Ho(st: h" CRLF CRLF),
      BAD("name with a high byte", "GET / HTTP/1.1" CRLF "H\xc3\xb6st: h" CRLF CRLF),
      BAD("obs-fold with a space", "GET / HTTP/1.1" CRLF "X: a" CRLF " b" CRLF CRLF),
      BAD("obs-fold with HT", "GET / HTTP/1.1" CRLF "X: a" CRLF "\tb" CRLF CRLF),
      BAD("blank line starting with a space", "GET / HTTP/1.1" CRLF " " CRLF CRLF),
      /* bytes */
      BAD("NUL in a value", "GET / HTTP/1.1" CRLF "X: a\0b" CRLF CRLF),
      BAD("NUL in the request line", "GET /\0 HTTP/1.1" CRLF CRLF),
      BAD("SOH in a value", "GET / HTTP/1.1" CRLF "X: \x01" CRLF CRLF),
      BAD("ESC in a value", "GET / HTTP/1.1" CRLF "X: \x1b[0m" CRLF CRLF),
      BAD("DEL in a value", "GET / HTTP/1.1" CRLF "X: \x7f" CRLF CRLF),
      BAD("VT in a value", "GET / HTTP/1.1" CRLF "X: \v" CRLF CRLF),
      BAD("CR inside a value", "GET / HTTP/1.1" CRLF "X: a\rb" CRLF CRLF),
      BAD("CR CR LF", "GET / HTTP/1.1" CRLF "X: a\r\r\n" CRLF),
      BAD("bare LF ending the request line", "GET / HTTP/1.1\n" CRLF),
      BAD("bare LF ending a header", "GET / HTTP/1.1" CRLF "X: a\n" CRLF),
      BAD("bare LF ending the head", "GET / HTTP/1.1" CRLF "X: a" CRLF "\n"),
      BAD("LF LF", "GET / HTTP/1.1\n\n"),
      /* once-only headers */
      BAD("second Sec-WebSocket-Key", "GET / HTTP/1.1" CRLF "Sec-WebSocket-Key: " SAMPLE_KEY CRLF
                                      "sec-websocket-key: " SAMPLE_KEY CRLF CRLF),
      BAD("second Host", "GET / HTTP/1.1" CRLF "Host: a" CRLF "HOST: a" CRLF CRLF),
      BAD("second Origin, empty",
          "GET / HTTP/1.1" CRLF "Origin: http://a" CRLF "origin:" CRLF CRLF),
  };
#undef BAD
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    ws_http_req req;
    int rc = ws_http_parse(bad[i].head, bad[i].len, &req);
    ck_assert_msg(rc == -EPROTO, "%s: returned %d, expected -EPROTO", bad[i].what, rc);
  }
}
END_TEST

/* A bad byte is refused before the head is complete, a bad line once its
 * CRLF has come; a line still arriving is not judged on the rest. */
START_TEST(test_ws_http_parse_refuses_early) {
  ws_http_req req;
  ck_assert_int_eq(ws_http_parse("GET /\0", 6, &req), -EPROTO);
  ck_assert_int_eq(parse_str("GET / HTTP/1.1" CRLF "X: \x01", &req), -EPROTO);
  ck_assert_int_eq(parse_str("GET / HTTP/1.1" CRLF "X: a\rb", &req), -EPROTO);
  ck_assert_int_eq(parse_str("GET / HTTP/1.1\n", &req), -EPROTO);
  ck_assert_int_eq(parse_str("GET / HTTP/1.1" CRLF "X: a" CRLF "\n", &req), -EPROTO);
  ck_assert_int_eq(parse_str("GET / HTTP/2.0" CRLF, &req), -EPROTO);
  ck_assert_int_eq(parse_str("GET / HTTP/1.1" CRLF "Host h" CRLF, &req), -EPROTO);
  /* Not yet: the line has not ended. */
  ck_assert_int_eq(parse_str("GET / HTTP/2.0", &req), 0);
  ck_assert_int_eq(parse_str("GET / HTTP/1.1" CRLF "Host h", &req), 0);
  ck_assert_int_eq(parse_str("GET / HTTP/1.1" CRLF "X: a\r", &req), 0);
}
END_TEST

START_TEST(test_ws_http_parse_header_line_limit) {
  char head[4096];
  ws_http_req req;
  size_t n = (size_t)snprintf(head, sizeof(head), "GET / HTTP/1.1" CRLF);

  for (int i = 0; i < 100; i++)
    n += (size_t)snprintf(head + n, sizeof(head) - n, "X%d: %d" CRLF, i, i);
  memcpy(head + n, CRLF, 2);
  ck_assert_int_eq(ws_http_parse(head, n + 2, &req), (int)n + 2); /* 100 lines */
  n += (size_t)snprintf(head + n, sizeof(head) - n, "X: 101" CRLF);
  ck_assert_int_eq(ws_http_parse(head, n, &req), -EPROTO);        /* the 101st, complete */
  memcpy(head + n, CRLF, 2);
  ck_assert_int_eq(ws_http_parse(head, n + 2, &req), -EPROTO);
}
END_TEST

START_TEST(test_ws_http_parse_repeated_headers) {
  ws_http_req req;
  /* Only Sec-WebSocket-Key, Host and Origin are once-only (test above);
   * others may repeat, lists combine. */
  const char *h = "GET / HTTP/1.1" CRLF "Upgrade: websocket" CRLF "Upgrade: h2c" CRLF
                  "Connection: close" CRLF "Connection: upgrade" CRLF
                  "Sec-WebSocket-Extensions: a" CRLF "Sec-WebSocket-Extensions: b" CRLF
                  "X: 1" CRLF "X: 1" CRLF CRLF;
  ck_assert_int_eq(parse_str(h, &req), (int)strlen(h));
  ck_assert_int_eq(req.upgrade, 1);
  ck_assert_int_eq(req.conn_upgrade, 1);
  ck_assert_int_eq(req.extensions, 1);
}
END_TEST

/* A head of n bytes in buf (cap >= n): "GET / HTTP/1.1", one X-Pad header
 * making up the length, and the blank line. */
static void make_head(char *buf, size_t n) {
  static const char start[] = "GET / HTTP/1.1" CRLF "X-Pad: ";
  size_t s = sizeof(start) - 1;
  ck_assert_uint_ge(n, s + 4);
  memcpy(buf, start, s);
  memset(buf + s, 'p', n - s - 4);
  memcpy(buf + n - 4, CRLF CRLF, 4);
}

START_TEST(test_ws_http_parse_size_cap) {
  size_t cap = WS_HTTP_HEAD_MAX + 1024;
  char *buf = malloc(cap);
  ws_http_req req;

  ck_assert_ptr_nonnull(buf);
  ck_assert_int_eq(WS_HTTP_HEAD_MAX, 8192);
  /* Exactly 8192 bytes: whole, even with more bytes after it. */
  make_head(buf, 8192);
  ck_assert_int_eq(ws_http_parse(buf, 8192, &req), 8192);
  memset(buf + 8192, 'x', cap - 8192);
  ck_assert_int_eq(ws_http_parse(buf, cap, &req), 8192);
  ck_assert_int_eq(ws_http_parse(buf, 8191, &req), 0);
  /* 8193 bytes: too large once 8192 bytes have come without an end. */
  make_head(buf, 8193);
  ck_assert_int_eq(ws_http_parse(buf, 8191, &req), 0);
  ck_assert_int_eq(ws_http_parse(buf, 8192, &req), -EMSGSIZE);
  ck_assert_int_eq(ws_http_parse(buf, 8193, &req), -EMSGSIZE);
  /* 8 KiB of one unended line. */
  memset(buf, 'A', cap);
  ck_assert_int_eq(ws_http_parse(buf, cap, &req), -EMSGSIZE);
  /* The 8192nd byte a CR, its LF the 8193rd: too large, however it is cut. */
  make_head(buf, 8195);
  ck_assert_int_eq(buf[8191], '\r');
  ck_assert_int_eq(buf[8192], '\n');
  ck_assert_int_eq(ws_http_parse(buf, 8191, &req), 0);
  ck_assert_int_eq(ws_http_parse(buf, 8192, &req), -EMSGSIZE);
  ck_assert_int_eq(ws_http_parse(buf, 8193, &req), -EMSGSIZE);
  ck_assert_int_eq(ws_http_parse(buf, 8195, &req), -EMSGSIZE);
  /* A CR without its LF just inside the cap is a bad byte. */
  buf[8190] = '\r';
  buf[8191] = 'p';
  ck_assert_int_eq(ws_http_parse(buf, 8192, &req), -EPROTO);
  ck_assert_int_eq(ws_http_parse(buf, 8195, &req), -EPROTO);
  /* A bad byte within the first 8 KiB decides, however much follows. */
  make_head(buf, 8193);
  buf[100] = '\0';
  ck_assert_int_eq(ws_http_parse(buf, 8193, &req), -EPROTO);
  ck_assert_int_eq(ws_http_parse(buf, 101, &req), -EPROTO);
  /* ... but not beyond them. */
  make_head(buf, 8193);
  buf[8192] = '\0';
  ck_assert_int_eq(ws_http_parse(buf, 8193, &req), -EMSGSIZE);
  free(buf);
}
END_TEST

/* ---- keys and the 101 ---- */

START_TEST(test_ws_http_accept_key_rfc6455_sample) {
  char out[29];

  memset(out, 'x', sizeof(out));
  ws_http_accept_key(SAMPLE_KEY, strlen(SAMPLE_KEY), out);
  ck_assert_str_eq(out, SAMPLE_ACCEPT);
  /* The key as given, blanks included (the parser trims them). */
  ws_http_accept_key(" " SAMPLE_KEY, strlen(SAMPLE_KEY) + 1, out);
  ck_assert_uint_eq(strlen(out), 28);
  ck_assert_str_ne(out, SAMPLE_ACCEPT);
}
END_TEST

static const char upgrade_response[] = "HTTP/1.1 101 Switching Protocols" CRLF
                                       "Upgrade: websocket" CRLF
                                       "Connection: Upgrade" CRLF
                                       "Sec-WebSocket-Accept: " SAMPLE_ACCEPT CRLF CRLF;

START_TEST(test_ws_http_write_upgrade_exact) {
  ws_http_req req;
  ws_http_reply rep;
  ws_http_site site = {.path = "/chat"};
  char out[512];
  size_t n = sizeof(upgrade_response) - 1;

  ck_assert_int_gt(parse_str(chromium_head, &req), 0);
  ck_assert_int_eq(ws_http_route(&site, &req, WS_HTTP_FILE_MAX, &rep), 0);
  ck_assert_int_eq(rep.action, WS_HTTP_UPGRADE);
  ck_assert_ptr_null(rep.body);
  /* The extension offered is declined: no Sec-WebSocket-Extensions. */
  ck_assert_uint_eq(ws_http_write_upgrade(&req, out, sizeof(out)), n);
  ck_assert_int_eq(memcmp(out, upgrade_response, n), 0);
  /* Exactly its size fits; one byte less does not, and nothing past cap
   * is written. */
  memset(out, '#', sizeof(out));
  ck_assert_uint_eq(ws_http_write_upgrade(&req, out, n), n);
  ck_assert_int_eq(out[n], '#');
  ck_assert_uint_eq(ws_http_write_upgrade(&req, out, n - 1), 0);
  ck_assert_uint_eq(ws_http_write_upgrade(&req, out, 0), 0);
  ws_http_reply_free(&rep);
}
END_TEST

/* ---- error responses ---- */

static const struct {
  int status;
  const char *text;
} error_responses[] = {
    {400, "HTTP/1.1 400 Bad Request" CRLF "Content-Type: text/plain; charset=utf-8" CRLF
          "Content-Length: 16" CRLF "Connection: close" CRLF CRLF "400 Bad Request\n"},
    {403, "HTTP/1.1 403 Forbidden" CRLF "Content-Type: text/plain; charset=utf-8" CRLF
          "Content-Length: 14" CRLF "Connection: close" CRLF CRLF "403 Forbidden\n"},
    {404, "HTTP/1.1 404 Not Found" CRLF "Content-Type: text/plain; charset=utf-8" CRLF
          "Content-Length: 14" CRLF "Connection: close" CRLF CRLF "404 Not Found\n"},
    {405, "HTTP/1.1 405 Method Not Allowed" CRLF "Content-Type: text/plain; charset=utf-8" CRLF
          "Content-Length: 23" CRLF "Connection: close" CRLF "Allow: GET, HEAD" CRLF CRLF
          "405 Method Not Allowed\n"},
    {426, "HTTP/1.1 426 Upgrade Required" CRLF "Content-Type: text/plain; charset=utf-8" CRLF
          "Content-Length: 21" CRLF "Connection: close" CRLF "Sec-WebSocket-Version: 13" CRLF
          "Upgrade: websocket" CRLF CRLF "426 Upgrade Required\n"},
    {500, "HTTP/1.1 500 Internal Server Error" CRLF "Content-Type: text/plain; charset=utf-8" CRLF
          "Content-Length: 26" CRLF "Connection: close" CRLF CRLF "500 Internal Server Error\n"},
};

static const char *error_text(int status) {
  for (size_t i = 0; i < sizeof(error_responses) / sizeof(error_responses[0]); i++)
    if (error_responses[i].status == status)
      return error_responses[i].text;
  ck_abort_msg("no expected response for status %d", status);
  return NULL;
}

START_TEST(test_ws_http_write_error_exact) {
  for (size_t i = 0; i < sizeof(error_responses) / sizeof(error_responses[0]); i++) {
    char out[512];
    const char *want = error_responses[i].text;
    size_t n = strlen(want);

    memset(out, '#', sizeof(out));
    ck_assert_uint_eq(ws_http_write_error(error_responses[i].status, out, sizeof(out)), n);
    ck_assert_msg(memcmp(out, want, n) == 0, "%d: got\n%.*s", error_responses[i].status, (int)n,
                  out);
    ck_assert_uint_eq(ws_http_write_error(error_responses[i].status, out, n), n);
    ck_assert_uint_eq(ws_http_write_error(error_responses[i].status, out, n - 1), 0);
    /* The body's length is what Content-Length says. */
    const char *body = (const char *)memmem(out, n, CRLF CRLF, 4) + 4;
    char cl[32];
    snprintf(cl, sizeof(cl), "Content-Length: %zu" CRLF, n - (size_t)(body - out));
    ck_assert_ptr_nonnull(strstr(want, cl));
  }
}
END_TEST

START_TEST(test_ws_http_write_file_head_exact) {
  static const char want[] = "HTTP/1.1 200 OK" CRLF "Content-Type: text/html; charset=utf-8" CRLF
                             "Content-Length: 1234" CRLF "Connection: close" CRLF
                             "Cache-Control: no-cache" CRLF "X-Content-Type-Options: nosniff" CRLF
                             CRLF;
  char out[512];
  size_t n = sizeof(want) - 1;

  ck_assert_uint_eq(ws_http_write_file_head("text/html; charset=utf-8", 1234, out, sizeof(out)),
                    n);
  ck_assert_int_eq(memcmp(out, want, n), 0);
  ck_assert_uint_eq(ws_http_write_file_head("text/html; charset=utf-8", 1234, out, n), n);
  ck_assert_uint_eq(ws_http_write_file_head("text/html; charset=utf-8", 1234, out, n - 1), 0);
  ck_assert_uint_eq(ws_http_write_file_head("image/png", 0, out, sizeof(out)),
                    n - strlen("text/html; charset=utf-8") + strlen("image/png") - 3);
  ck_assert_ptr_nonnull(strstr(out, "Content-Length: 0" CRLF));
}
END_TEST

/* ---- the route ---- */

/* Parses head (which must be well formed) into *req and routes it. */
static void route(const ws_http_site *site, const char *head, size_t max_file, ws_http_req *req,
                  ws_http_reply *rep) {
  int n = parse_str(head, req);
  ck_assert_msg(n == (int)strlen(head), "parse returned %d for\n%s", n, head);
  ck_assert_int_eq(ws_http_route(site, req, max_file, rep), 0);
}

/* Routes head and asserts an ERROR of status whose response has the
 * expected text. */
static void expect_error_max(const ws_http_site *site, const char *head, size_t max_file,
                             int status) {
  ws_http_req req;
  ws_http_reply rep;
  char out[512];

  route(site, head, max_file, &req, &rep);
  ck_assert_msg(rep.action == WS_HTTP_ERROR && rep.status == status,
                "expected %d, got action %d status %d (%s) for\n%s", status, (int)rep.action,
                rep.status, rep.why ? rep.why : "", head);
  ck_assert_ptr_nonnull(rep.why);
  ck_assert_ptr_null(strchr(rep.why, '\n'));
  ck_assert_ptr_null(rep.body);
  size_t n = ws_http_write_error(rep.status, out, sizeof(out));
  ck_assert_uint_gt(n, 0);
  ck_assert_uint_eq(n, strlen(error_text(status)));
  ck_assert_int_eq(memcmp(out, error_text(status), n), 0);
  ws_http_reply_free(&rep);
}

static void expect_error(const ws_http_site *site, const char *head, int status) {
  expect_error_max(site, head, WS_HTTP_FILE_MAX, status);
}

static void expect_upgrade(const ws_http_site *site, const char *head) {
  ws_http_req req;
  ws_http_reply rep;

  route(site, head, WS_HTTP_FILE_MAX, &req, &rep);
  ck_assert_msg(rep.action == WS_HTTP_UPGRADE, "expected an upgrade, got status %d (%s) for\n%s",
                rep.status, rep.why ? rep.why : "", head);
  ws_http_reply_free(&rep);
}

START_TEST(test_ws_http_route_handshake) {
  ws_http_site site = {.path = "/chat"};

  expect_upgrade(&site, chromium_head);
  expect_upgrade(&site, "GET /chat HTTP/1.1" CRLF UPGRADE_HEADERS
                        "Sec-WebSocket-Key: " SAMPLE_KEY CRLF CRLF);
  /* The query is ignored; HTTP/1.1 and later minors; a Host is not needed. */
  expect_upgrade(&site, "GET /chat?room=1 HTTP/1.1" CRLF UPGRADE_HEADERS
                        "Sec-WebSocket-Key: " SAMPLE_KEY CRLF CRLF);
  expect_upgrade(&site, "GET /chat HTTP/1.2" CRLF UPGRADE_HEADERS
                        "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==" CRLF CRLF);
  expect_upgrade(&site, "GET /chat HTTP/1.1" CRLF "Upgrade: websocket" CRLF
                        "Connection: upgrade" CRLF "Sec-WebSocket-Version: 13" CRLF
                        "Sec-WebSocket-Key: /////////////////////w==" CRLF CRLF);

  /* Another path, in any way. */
  expect_error(&site, "GET / HTTP/1.1" CRLF UPGRADE_HEADERS
                      "Sec-WebSocket-Key: " SAMPLE_KEY CRLF CRLF, 404);
  expect_error(&site, "GET /chat/ HTTP/1.1" CRLF UPGRADE_HEADERS
                      "Sec-WebSocket-Key: " SAMPLE_KEY CRLF CRLF, 404);
  expect_error(&site, "GET /Chat HTTP/1.1" CRLF UPGRADE_HEADERS
                      "Sec-WebSocket-Key: " SAMPLE_KEY CRLF CRLF, 404);
  expect_error(&site, "GET /%63hat HTTP/1.1" CRLF UPGRADE_HEADERS
                      "Sec-WebSocket-Key: " SAMPLE_KEY CRLF CRLF, 404);
  /* 400: not GET, HTTP/1.0, no Connection: upgrade, a bad key. */
  expect_error(&site, "POST /chat HTTP/1.1" CRLF UPGRADE_HEADERS
                      "Sec-WebSocket-Key: " SAMPLE_KEY CRLF CRLF, 400);
  expect_error(&site, "get /chat HTTP/1.1" CRLF UPGRADE_HEADERS
                      "Sec-WebSocket-Key: " SAMPLE_KEY CRLF CRLF, 400);
  expect_error(&site, "GET /chat HTTP/1.0" CRLF UPGRADE_HEADERS
                      "Sec-WebSocket-Key: " SAMPLE_KEY CRLF CRLF, 400);
  expect_error(&site, "GET /chat HTTP/1.1" CRLF "Upgrade: websocket" CRLF
                      "Connection: keep-alive" CRLF "Sec-WebSocket-Version: 13" CRLF
                      "Sec-WebSocket-Key: " SAMPLE_KEY CRLF CRLF, 400);
  static const char *bad_keys[] = {
      "",                           /* empty */
      "dGhlIHNhbXBsZSBub25jZQ=",    /* 23 */
      "dGhlIHNhbXBsZSBub25jZQ===",  /* 25 */
      "dGhlIHNhbXBsZSBub25jZQ",     /* no padding */
      "dGhlIHNhbXBsZSBub25jZR==",   /* padding bits set: not the encoding of 16 bytes */
      "dGhlIHNhbXBsZSBub25jZ===",   /* 15 bytes and a half */
      "dGhlIHNhbXBsZSBub25j====",   /* 15 bytes */
      "dGhlIHNhbXBsZSBub25jZQAA",   /* 18 bytes */
      "dGhlIHNhbXBsZSBub25jZ-==",   /* base64url */
      "dGhlIHNhbXBs ZSBub25jZQ=",   /* a blank inside */
      "dGhlIHNhbXBsZSBub25jZQ==dGhlIHNhbXBsZSBub25jZQ==", /* two */
  };
  for (size_t i = 0; i < sizeof(bad_keys) / sizeof(bad_keys[0]); i++) {
    char head[512];
    snprintf(head, sizeof(head),
             "GET /chat HTTP/1.1" CRLF UPGRADE_HEADERS "Sec-WebSocket-Key: %s" CRLF CRLF,
             bad_keys[i]);
    expect_error(&site, head, 400);
  }
  expect_error(&site, "GET /chat HTTP/1.1" CRLF UPGRADE_HEADERS CRLF, 400); /* no key */
  /* 426, naming 13: another version, or none. */
  expect_error(&site, "GET /chat HTTP/1.1" CRLF "Upgrade: websocket" CRLF "Connection: Upgrade" CRLF
                      "Sec-WebSocket-Version: 8" CRLF "Sec-WebSocket-Key: " SAMPLE_KEY CRLF CRLF,
               426);
  expect_error(&site, "GET /chat HTTP/1.1" CRLF "Upgrade: websocket" CRLF "Connection: Upgrade" CRLF
                      "Sec-WebSocket-Key: " SAMPLE_KEY CRLF CRLF,
               426);
  expect_error(&site, "GET /chat HTTP/1.1" CRLF "Upgrade: websocket" CRLF "Connection: Upgrade" CRLF
                      "Sec-WebSocket-Version: 13, 8" CRLF "Sec-WebSocket-Key: " SAMPLE_KEY CRLF
                      CRLF,
               426);
  /* The first failure in the order of the contract decides: a version
   * other than 13 before a bad key, a bad key before the Origin. */
  expect_error(&site, "GET /chat HTTP/1.1" CRLF "Upgrade: websocket" CRLF "Connection: Upgrade" CRLF
                      "Sec-WebSocket-Version: 8" CRLF CRLF,
               426);
  expect_error(&site, "GET /chat HTTP/1.0" CRLF "Upgrade: websocket" CRLF "Connection: Upgrade" CRLF
                      "Sec-WebSocket-Version: 8" CRLF CRLF,
               400);
}
END_TEST

#define HANDSHAKE_WITH(origin_line)                                                            \
  "GET /chat HTTP/1.1" CRLF UPGRADE_HEADERS origin_line "Sec-WebSocket-Key: " SAMPLE_KEY CRLF CRLF

START_TEST(test_ws_http_route_origins) {
  static const char *const allowed[] = {"http://127.0.0.1:7780", "https://Game.Example"};
  ws_http_site site = {.path = "/chat", .origins = allowed, .norigins = 2};
  ws_http_site any = {.path = "/chat"};

  expect_upgrade(&site, HANDSHAKE_WITH("Origin: http://127.0.0.1:7780" CRLF));
  expect_upgrade(&site, HANDSHAKE_WITH("Origin: https://game.example" CRLF));
  expect_upgrade(&site, HANDSHAKE_WITH("Origin: HTTPS://GAME.EXAMPLE" CRLF));
  expect_upgrade(&site, HANDSHAKE_WITH("Origin:   http://127.0.0.1:7780  " CRLF));
  /* No Origin: a client that is not a browser. */
  expect_upgrade(&site, HANDSHAKE_WITH(""));
  expect_error(&site, HANDSHAKE_WITH("Origin: http://127.0.0.1:7781" CRLF), 403);
  expect_error(&site, HANDSHAKE_WITH("Origin: http://127.0.0.1:7780/" CRLF), 403);
  expect_error(&site, HANDSHAKE_WITH("Origin: http://127.0.0.1:778" CRLF), 403);
  expect_error(&site, HANDSHAKE_WITH("Origin: https://127.0.0.1:7780" CRLF), 403);
  expect_error(&site, HANDSHAKE_WITH("Origin: null" CRLF), 403);
  expect_error(&site, HANDSHAKE_WITH("Origin:" CRLF), 403);
  /* Without a list, any origin. */
  expect_upgrade(&any, HANDSHAKE_WITH("Origin: https://evil.example" CRLF));
  expect_upgrade(&any, HANDSHAKE_WITH("Origin: null" CRLF));
}
END_TEST

START_TEST(test_ws_http_route_without_static_root) {
  ws_http_site site = {.path = "/chat"};

  expect_error(&site, "GET /chat HTTP/1.1" CRLF "Host: h" CRLF CRLF, 426);
  expect_error(&site, "GET /chat?x HTTP/1.1" CRLF CRLF, 426);
  expect_error(&site, "HEAD /chat HTTP/1.0" CRLF CRLF, 426);
  expect_error(&site, "POST /chat HTTP/1.1" CRLF CRLF, 426);
  expect_error(&site, "GET / HTTP/1.1" CRLF CRLF, 404);
  expect_error(&site, "GET /index.html HTTP/1.1" CRLF CRLF, 404);
  expect_error(&site, "DELETE /x HTTP/1.1" CRLF CRLF, 404);
  /* Connection: upgrade alone is not an upgrade request. */
  expect_error(&site, "GET /chat HTTP/1.1" CRLF "Connection: Upgrade" CRLF
                      "Sec-WebSocket-Version: 13" CRLF "Sec-WebSocket-Key: " SAMPLE_KEY CRLF CRLF,
               426);
}
END_TEST

START_TEST(test_ws_http_content_types) {
  static const struct {
    const char *name, *type;
  } types[] = {
      {"index.html", "text/html; charset=utf-8"},
      {"a.htm", "text/html; charset=utf-8"},
      {"app.js", "text/javascript; charset=utf-8"},
      {"mod.mjs", "text/javascript; charset=utf-8"},
      {"s.css", "text/css; charset=utf-8"},
      {"d.json", "application/json"},
      {"i.svg", "image/svg+xml"},
      {"i.png", "image/png"},
      {"i.jpg", "image/jpeg"},
      {"i.jpeg", "image/jpeg"},
      {"i.gif", "image/gif"},
      {"favicon.ico", "image/x-icon"},
      {"m.wasm", "application/wasm"},
      {"r.txt", "text/plain; charset=utf-8"},
      {"app.js.map", "application/json"},
      {"i.webp", "image/webp"},
      {"f.woff", "font/woff"},
      {"f.woff2", "font/woff2"},
      {"/web/INDEX.HTML", "text/html; charset=utf-8"},
      {"APP.Js", "text/javascript; charset=utf-8"},
      {"a.tar.gz", "application/octet-stream"},
      {"noext", "application/octet-stream"},
      {"x.", "application/octet-stream"},
      {"x.htmlx", "application/octet-stream"},
      {"x.ht", "application/octet-stream"},
      {"dir.html/file", "application/octet-stream"},
      {"", "application/octet-stream"},
  };
  for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
    ck_assert_msg(strcmp(ws_http_content_type(types[i].name, strlen(types[i].name)),
                         types[i].type) == 0,
                  "%s: %s", types[i].name,
                  ws_http_content_type(types[i].name, strlen(types[i].name)));
  /* Only len bytes count. */
  ck_assert_str_eq(ws_http_content_type("a.json", 4), "text/javascript; charset=utf-8");
  ck_assert_str_eq(ws_http_content_type("a.html", 3), "application/octet-stream");
}
END_TEST

/* ---- static files ---- */

/* tmp/ holds root/ (the static directory) and secret.txt beside it. */
static char tmp[PATH_MAX], root[PATH_MAX + 8];
static char bigfile[WS_HTTP_FILE_MAX / 1024]; /* 4 KiB pattern */

static void write_file(const char *dir, const char *name, const char *data, size_t len) {
  char path[PATH_MAX * 2];
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ck_assert_msg(fd >= 0, "%s: %s", path, strerror(errno));
  ck_assert_int_eq(write(fd, data, len), (ssize_t)len);
  close(fd);
}

static void sized_file(const char *name, off_t size) {
  char path[PATH_MAX * 2];
  snprintf(path, sizeof(path), "%s/%s", root, name);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(ftruncate(fd, size), 0);
  close(fd);
}

static void in_root(char *out, size_t cap, const char *name) {
  snprintf(out, cap, "%s/%s", root, name);
}

static void static_setup(void) {
  char path[PATH_MAX * 2], made[PATH_MAX];

  test_mkdtemp(made, sizeof(made), "pier-ws-http-");
  ck_assert_ptr_nonnull(realpath(made, tmp)); /* the root must have its links resolved */
  snprintf(root, sizeof(root), "%s/root", tmp);
  ck_assert_int_eq(test_mkdir(root), 0);
  write_file(tmp, "secret.txt", "secret\n", 7);
  write_file(root, "index.html", "<h1>pier</h1>\n", 14);
  write_file(root, "app.js", "console.log(1);\n", 16);
  write_file(root, "style.css", "body{}\n", 7);
  write_file(root, "empty.txt", "", 0);
  write_file(root, "chat.txt", "x", 1);
  write_file(root, "back\\slash.txt", "b\n", 2); /* a name Windows would read as a path */
  for (size_t i = 0; i < sizeof(bigfile); i++)
    bigfile[i] = (char)test_pattern(7, i);
  write_file(root, "data.bin", bigfile, sizeof(bigfile));
  in_root(path, sizeof(path), "sub");
  ck_assert_int_eq(test_mkdir(path), 0);
  write_file(path, "index.html", "sub index\n", 10);
  write_file(path, "page.htm", "page\n", 5);
  write_file(path, "a b%.txt", "spaced\n", 7);
  in_root(path, sizeof(path), "escape");
  ck_assert_int_eq(symlink("../secret.txt", path), 0);
  in_root(path, sizeof(path), "escape-abs");
  char target[PATH_MAX * 2];
  snprintf(target, sizeof(target), "%s/secret.txt", tmp);
  ck_assert_int_eq(symlink(target, path), 0);
  in_root(path, sizeof(path), "escape-dir");
  ck_assert_int_eq(symlink("..", path), 0);
  in_root(path, sizeof(path), "inside-link");
  ck_assert_int_eq(symlink("app.js", path), 0);
  in_root(path, sizeof(path), "sub-link");
  ck_assert_int_eq(symlink("sub", path), 0);
  in_root(path, sizeof(path), "dangling");
  ck_assert_int_eq(symlink("nowhere", path), 0);
  in_root(path, sizeof(path), "loop");
  ck_assert_int_eq(symlink("loop", path), 0);
  in_root(path, sizeof(path), "pipe");
  ck_assert_int_eq(mkfifo(path, 0644), 0);
  /* A sibling whose name starts with the root's: not inside it. */
  snprintf(path, sizeof(path), "%s/root-other", tmp);
  ck_assert_int_eq(test_mkdir(path), 0);
  write_file(path, "x.txt", "other\n", 6);
  in_root(path, sizeof(path), "prefix-link");
  ck_assert_int_eq(symlink("../root-other/x.txt", path), 0);
}

static void static_teardown(void) {
  test_rm_rf(tmp);
}

/* GET or HEAD target; asserts a FILE with body and content type. */
static void expect_file(const ws_http_site *site, const char *method, const char *target,
                        size_t max_file, const char *body, size_t body_len, const char *type) {
  char head[1024];
  ws_http_req req;
  ws_http_reply rep;

  snprintf(head, sizeof(head), "%s %s HTTP/1.1" CRLF "Host: h" CRLF CRLF, method, target);
  route(site, head, max_file, &req, &rep);
  ck_assert_msg(rep.action == WS_HTTP_FILE, "%s %s: status %d (%s)", method, target, rep.status,
                rep.why ? rep.why : "");
  ck_assert_int_eq(rep.head_only, strcmp(method, "HEAD") == 0);
  ck_assert_ptr_nonnull(rep.body);
  ck_assert_uint_eq(rep.body_len, body_len);
  ck_assert_int_eq(memcmp(rep.body, body, body_len), 0);
  ck_assert_str_eq(rep.content_type, type);
  ws_http_reply_free(&rep);
  ck_assert_ptr_null(rep.body);
}

static void expect_get_error(const ws_http_site *site, const char *target, int status) {
  char head[WS_HTTP_HEAD_MAX];
  snprintf(head, sizeof(head), "GET %s HTTP/1.1" CRLF CRLF, target);
  expect_error(site, head, status);
}

START_TEST(test_ws_http_static_files) {
  ws_http_site site = {.path = "/chat", .static_root = root};
  const char *html = "text/html; charset=utf-8";

  expect_file(&site, "GET", "/", WS_HTTP_FILE_MAX, "<h1>pier</h1>\n", 14, html);
  expect_file(&site, "GET", "/index.html", WS_HTTP_FILE_MAX, "<h1>pier</h1>\n", 14, html);
  expect_file(&site, "GET", "/?x=1", WS_HTTP_FILE_MAX, "<h1>pier</h1>\n", 14, html);
  expect_file(&site, "GET", "/sub/", WS_HTTP_FILE_MAX, "sub index\n", 10, html);
  expect_file(&site, "GET", "/sub//", WS_HTTP_FILE_MAX, "sub index\n", 10, html);
  expect_file(&site, "GET", "/sub/page.htm", WS_HTTP_FILE_MAX, "page\n", 5, html);
  expect_file(&site, "GET", "/app.js?v=3#top", WS_HTTP_FILE_MAX, "console.log(1);\n", 16,
              "text/javascript; charset=utf-8");
  expect_file(&site, "GET", "/style.css", WS_HTTP_FILE_MAX, "body{}\n", 7,
              "text/css; charset=utf-8");
  expect_file(&site, "GET", "/empty.txt", WS_HTTP_FILE_MAX, "", 0, "text/plain; charset=utf-8");
  expect_file(&site, "GET", "/data.bin", WS_HTTP_FILE_MAX, bigfile, sizeof(bigfile),
              "application/octet-stream");
  /* %XX decoded (either case), the type from the decoded name. */
  expect_file(&site, "GET", "/%61pp%2Ejs", WS_HTTP_FILE_MAX, "console.log(1);\n", 16,
              "text/javascript; charset=utf-8");
  expect_file(&site, "GET", "/sub/a%20b%25.txt", WS_HTTP_FILE_MAX, "spaced\n", 7,
              "text/plain; charset=utf-8");
  expect_file(&site, "GET", "/sub%2fpage.htm", WS_HTTP_FILE_MAX, "page\n", 5, html);
  /* Links that stay inside the root; the type comes from the name asked. */
  expect_file(&site, "GET", "/inside-link", WS_HTTP_FILE_MAX, "console.log(1);\n", 16,
              "application/octet-stream");
  expect_file(&site, "GET", "/sub-link/page.htm", WS_HTTP_FILE_MAX, "page\n", 5, html);
  expect_file(&site, "GET", "/sub-link/", WS_HTTP_FILE_MAX, "sub index\n", 10, html);
  /* Out through a link and back in: where it resolves is what counts. */
  expect_file(&site, "GET", "/escape-dir/root/app.js", WS_HTTP_FILE_MAX, "console.log(1);\n", 16,
              "text/javascript; charset=utf-8");
  /* HEAD: the same reply, marked head_only. */
  expect_file(&site, "HEAD", "/app.js", WS_HTTP_FILE_MAX, "console.log(1);\n", 16,
              "text/javascript; charset=utf-8");
  expect_file(&site, "HEAD", "/", WS_HTTP_FILE_MAX, "<h1>pier</h1>\n", 14, html);
  /* A file named like the WebSocket path is a file. */
  ws_http_site txt = {.path = "/chat.txt", .static_root = root};
  expect_file(&txt, "GET", "/chat.txt", WS_HTTP_FILE_MAX, "x", 1, "text/plain; charset=utf-8");
  /* The root's trailing '/' makes no difference. */
  char slashed[sizeof(root) + 2];
  snprintf(slashed, sizeof(slashed), "%s/", root);
  ws_http_site sl = {.path = "/chat", .static_root = slashed};
  expect_file(&sl, "GET", "/app.js", WS_HTTP_FILE_MAX, "console.log(1);\n", 16,
              "text/javascript; charset=utf-8");
  expect_get_error(&sl, "/escape", 404);
}
END_TEST

START_TEST(test_ws_http_static_refused) {
  ws_http_site site = {.path = "/chat", .static_root = root};

  expect_get_error(&site, "/nope.html", 404);
  expect_get_error(&site, "/sub/nope/", 404);
  expect_get_error(&site, "/app.js/", 404); /* app.js/index.html */
  /* Traversal, raw or encoded, and "." segments, even those that would
   * stay inside. */
  expect_get_error(&site, "/../secret.txt", 404);
  expect_get_error(&site, "/%2e%2e/secret.txt", 404);
  expect_get_error(&site, "/%2E%2E/secret.txt", 404);
  expect_get_error(&site, "/.%2e/secret.txt", 404);
  expect_get_error(&site, "/%2e%2e%2fsecret.txt", 404);
  expect_get_error(&site, "/sub/../app.js", 404);
  expect_get_error(&site, "/sub/%2e%2e/app.js", 404);
  expect_get_error(&site, "/./app.js", 404);
  expect_get_error(&site, "/sub/.", 404);
  expect_get_error(&site, "/sub/..", 404);
  expect_get_error(&site, "/..", 404);
  expect_get_error(&site, "/%2e/", 404);
  /* NUL, backslash (raw or encoded), bad escapes. */
  expect_get_error(&site, "/app.js%00.html", 404);
  expect_get_error(&site, "/back\\slash.txt", 404);
  expect_get_error(&site, "/back%5cslash.txt", 404);
  expect_get_error(&site, "/back%5Cslash.txt", 404);
  expect_get_error(&site, "/..%5csecret.txt", 404);
  expect_get_error(&site, "/app.js%", 404);
  expect_get_error(&site, "/app.js%2", 404);
  expect_get_error(&site, "/app%2gjs", 404);
  expect_get_error(&site, "/%%32e", 404);
  /* Links out of the root, dangling or looping. */
  expect_get_error(&site, "/escape", 404);
  expect_get_error(&site, "/escape-abs", 404);
  expect_get_error(&site, "/escape-dir/secret.txt", 404);
  expect_get_error(&site, "/prefix-link", 404);
  expect_get_error(&site, "/dangling", 404);
  expect_get_error(&site, "/loop", 404);
  /* Not regular files: a directory (with or without a link), a FIFO (the
   * open must not wait for a writer). */
  expect_get_error(&site, "/sub", 404);
  expect_get_error(&site, "/sub-link", 404);
  expect_get_error(&site, "/pipe", 404);
  /* A very long path. */
  char target[6000] = "/";
  memset(target + 1, 'a', sizeof(target) - 2);
  target[sizeof(target) - 1] = '\0';
  expect_get_error(&site, target, 404);
  for (size_t i = 1; i + 3 < sizeof(target); i += 3)
    memcpy(target + i, "%61", 3);
  expect_get_error(&site, target, 404);
}
END_TEST

START_TEST(test_ws_http_static_methods_and_ws_path) {
  ws_http_site site = {.path = "/chat", .static_root = root};
  ws_http_site at_root = {.path = "/", .static_root = root};

  expect_error(&site, "POST /app.js HTTP/1.1" CRLF CRLF, 405);
  expect_error(&site, "PUT /new.txt HTTP/1.1" CRLF CRLF, 405);
  expect_error(&site, "OPTIONS / HTTP/1.1" CRLF CRLF, 405);
  expect_error(&site, "get /app.js HTTP/1.1" CRLF CRLF, 405);
  expect_error(&site, "POST /chat HTTP/1.1" CRLF CRLF, 405);
  /* The WebSocket path with no file there. */
  expect_error(&site, "GET /chat HTTP/1.1" CRLF CRLF, 426);
  expect_error(&site, "GET /chat?room=2 HTTP/1.1" CRLF CRLF, 426);
  expect_error(&site, "HEAD /chat HTTP/1.1" CRLF CRLF, 426);
  expect_error(&site, "GET /chat/ HTTP/1.1" CRLF CRLF, 404);
  /* An upgrade never serves a file: another path is 404 even with a file. */
  expect_error(&site, "GET /app.js HTTP/1.1" CRLF UPGRADE_HEADERS
                      "Sec-WebSocket-Key: " SAMPLE_KEY CRLF CRLF, 404);
  expect_upgrade(&site, HANDSHAKE_WITH(""));
  /* WebSocket at "/": the demo page for a plain GET, the upgrade for a
   * handshake. */
  expect_file(&at_root, "GET", "/", WS_HTTP_FILE_MAX, "<h1>pier</h1>\n", 14,
              "text/html; charset=utf-8");
  expect_upgrade(&at_root, "GET / HTTP/1.1" CRLF UPGRADE_HEADERS
                           "Sec-WebSocket-Key: " SAMPLE_KEY CRLF CRLF);
}
END_TEST

START_TEST(test_ws_http_static_size_limit) {
  ws_http_site site = {.path = "/chat", .static_root = root};
  size_t n = sizeof(bigfile);
  const char *bin = "application/octet-stream";

  /* max_file: a file of that size is served, one byte more is 500. */
  expect_file(&site, "GET", "/data.bin", n, bigfile, n, bin);
  expect_file(&site, "HEAD", "/data.bin", n, bigfile, n, bin);
  expect_error_max(&site, "GET /data.bin HTTP/1.1" CRLF CRLF, n - 1, 500);
  expect_error_max(&site, "HEAD /data.bin HTTP/1.1" CRLF CRLF, n - 1, 500);
  expect_file(&site, "GET", "/empty.txt", 0, "", 0, "text/plain; charset=utf-8");
  expect_error_max(&site, "GET /app.js HTTP/1.1" CRLF CRLF, 0, 500);
  /* At most WS_HTTP_FILE_MAX, whatever max_file says. */
  char *zeros = calloc(1, WS_HTTP_FILE_MAX);
  ck_assert_ptr_nonnull(zeros);
  sized_file("max.bin", WS_HTTP_FILE_MAX);
  sized_file("huge.bin", WS_HTTP_FILE_MAX + 1);
  expect_file(&site, "GET", "/max.bin", SIZE_MAX, zeros, WS_HTTP_FILE_MAX, bin);
  expect_error_max(&site, "GET /huge.bin HTTP/1.1" CRLF CRLF, SIZE_MAX, 500);
  expect_error_max(&site, "GET /huge.bin HTTP/1.1" CRLF CRLF, WS_HTTP_FILE_MAX + 1, 500);
  free(zeros);
  /* An unreadable file (only without root's powers to read anything). */
  if (geteuid() != 0) {
    char path[PATH_MAX * 2];
    in_root(path, sizeof(path), "app.js");
    ck_assert_int_eq(chmod(path, 0), 0);
    expect_error(&site, "GET /app.js HTTP/1.1" CRLF CRLF, 500);
  }
}
END_TEST

START_TEST(test_ws_http_static_root_not_absolute) {
  ws_http_site rel = {.path = "/chat", .static_root = "root"};
  ws_http_site empty = {.path = "/chat", .static_root = ""};

  /* A relative root would resolve against the working directory, an empty
   * one would be "/": refused, for every file. */
  char cwd[PATH_MAX];
  ck_assert_ptr_nonnull(getcwd(cwd, sizeof(cwd)));
  ck_assert_int_eq(chdir(tmp), 0);
  expect_error(&rel, "GET /app.js HTTP/1.1" CRLF CRLF, 500);
  expect_error(&empty, "GET /etc/passwd HTTP/1.1" CRLF CRLF, 500);
  expect_error(&empty, "GET /chat HTTP/1.1" CRLF CRLF, 500);
  ck_assert_int_eq(chdir(cwd), 0);
}
END_TEST

int main(void) {
  Suite *s = suite_create("ws_http");
  TCase *parse = tcase_create("parse");
  TCase *resp = tcase_create("responses");
  TCase *stat = tcase_create("static");

  tcase_add_test(parse, test_ws_http_parse_browser_handshake);
  tcase_add_test(parse, test_ws_http_parse_fields);
  tcase_add_test(parse, test_ws_http_parse_every_prefix_is_incomplete);
  tcase_add_test(parse, test_ws_http_parse_malformed);
  tcase_add_test(parse, test_ws_http_parse_refuses_early);
  tcase_add_test(parse, test_ws_http_parse_header_line_limit);
  tcase_add_test(parse, test_ws_http_parse_repeated_headers);
  tcase_add_test(parse, test_ws_http_parse_size_cap);
  suite_add_tcase(s, parse);

  tcase_add_test(resp, test_ws_http_accept_key_rfc6455_sample);
  tcase_add_test(resp, test_ws_http_write_upgrade_exact);
  tcase_add_test(resp, test_ws_http_write_error_exact);
  tcase_add_test(resp, test_ws_http_write_file_head_exact);
  tcase_add_test(resp, test_ws_http_route_handshake);
  tcase_add_test(resp, test_ws_http_route_origins);
  tcase_add_test(resp, test_ws_http_route_without_static_root);
  tcase_add_test(resp, test_ws_http_content_types);
  suite_add_tcase(s, resp);

  tcase_add_checked_fixture(stat, static_setup, static_teardown);
  tcase_add_test(stat, test_ws_http_static_files);
  tcase_add_test(stat, test_ws_http_static_refused);
  tcase_add_test(stat, test_ws_http_static_methods_and_ws_path);
  tcase_add_test(stat, test_ws_http_static_size_limit);
  tcase_add_test(stat, test_ws_http_static_root_not_absolute);
  suite_add_tcase(s, stat);
  return test_run(s);
}
