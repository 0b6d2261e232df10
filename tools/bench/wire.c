/* pier-bench's TLS, WebSocket and Colyseus client layers (see wire.h). Each
 * connection runs a small state machine on its worker: TLS handshake (a
 * custom BIO reads straight from the bytes that arrived and writes straight
 * into net_send, so no BIO buffers are kept), then the HTTP Upgrade, then
 * (Colyseus) the JOIN_ROOM exchange, then traffic. Incoming frames are
 * decoded in place from what was received; only a frame split across reads
 * is copied, and only that frame. */
#include "wire.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

const int wire_available = 1;

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define HEAD_MAX 8192         /* the server's response head */
#define PLAIN_BUF 16384       /* one TLS record of plaintext */
#define CTRL_MAX 125          /* control frame payload */
#define MATCHMAKE_MAX 65536   /* a matchmaking response */
#define MATCHMAKE_TIMEOUT_S 10

/* Colyseus's protocol codes (@colyseus/core Protocol). */
enum { CY_JOIN_ROOM = 10, CY_ERROR = 11, CY_ROOM_DATA = 13, CY_ROOM_DATA_BYTES = 17 };

enum { ST_NEW, ST_TLS, ST_HTTP, ST_COLYSEUS, ST_UP, ST_DEAD };

typedef struct scratch {
  char *send;  /* a frame being built */
  char *plain; /* decrypted input */
  char *conv;  /* a Colyseus message turned into a packet */
} scratch;

struct wire {
  wire_opts o;
  wire_handler h;
  net *n;
  SSL_CTX *ctx;
  BIO_METHOD *bio;
  char *ip;        /* the host part of o.host, for certificate checks */
  char **seats;    /* Colyseus: the WebSocket target of each client */
  unsigned nseats;
  size_t rmax;     /* largest frame kept while it arrives */
  size_t send_cap;
  scratch *sc;     /* per worker */
};

struct wire_conn {
  wire *w;
  void *ctx;
  unsigned idx;
  uint8_t st;
  uint8_t mop;       /* opcode of a fragmented message in progress, 0: none */
  pier_sid sid;
  uint32_t rng;      /* masking keys */
  SSL *ssl;
  const char *in;    /* ciphertext not yet read by OpenSSL */
  size_t in_len;
  char *hs;          /* the response head so far */
  size_t hs_len;
  char accept[29];   /* the Sec-WebSocket-Accept expected */
  char *rb;          /* a frame (or TLS-only: a packet) split across reads */
  size_t rlen, rcap;
  char *mb;          /* a fragmented message */
  size_t mlen, mcap;
};

static scratch *cur_sc(wire *w) {
  int i = net_current_worker(w->n);
  return &w->sc[i < 0 ? 0 : (unsigned)i % w->o.workers];
}

static void fail(wire_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail(wire_conn *c, const char *fmt, ...) {
  char buf[512];
  va_list ap;
  if (c->st == ST_DEAD)
    return;
  c->st = ST_DEAD;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  c->w->h.fail(c->ctx, buf);
  (void)net_abort(c->w->n, c->sid, PIER_REASON_CLOSED);
}

static const char *ssl_reason(void) {
  static _Thread_local char buf[256];
  unsigned long e = ERR_get_error();
  if (!e)
    return "no detail from OpenSSL";
  ERR_error_string_n(e, buf, sizeof(buf));
  ERR_clear_error();
  return buf;
}

/* ---- TLS: a BIO over the bytes being fed and net_send ---- */

static int bio_write(BIO *b, const char *data, int len) {
  wire_conn *c = BIO_get_data(b);
  int rc = net_send(c->w->n, c->sid, data, (size_t)len);
  BIO_clear_retry_flags(b);
  return rc < 0 ? -1 : len;
}

static int bio_read(BIO *b, char *out, int len) {
  wire_conn *c = BIO_get_data(b);
  size_t n = c->in_len < (size_t)len ? c->in_len : (size_t)len;
  BIO_clear_retry_flags(b);
  if (n == 0) {
    BIO_set_retry_read(b);
    return -1;
  }
  memcpy(out, c->in, n);
  c->in += n;
  c->in_len -= n;
  return (int)n;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
  (void)b, (void)num, (void)ptr;
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_create(BIO *b) {
  BIO_set_init(b, 1);
  return 1;
}

/* ---- output ---- */

/* Bytes for the peer, through TLS when there is TLS. */
static int out_raw(wire_conn *c, const char *p, size_t n) {
  if (!c->ssl) {
    int rc = net_send(c->w->n, c->sid, p, n);
    if (rc < 0)
      fail(c, "send failed: %s", strerror(-rc));
    return rc;
  }
  while (n > 0) {
    size_t done = 0;
    ERR_clear_error();
    if (SSL_write_ex(c->ssl, p, n, &done) != 1) {
      fail(c, "TLS write failed: %s", ssl_reason());
      return -EIO;
    }
    p += done;
    n -= done;
  }
  return 0;
}

static uint32_t next_mask(wire_conn *c) {
  uint32_t x = c->rng;
  x ^= x << 13; /* xorshift32 */
  x ^= x >> 17;
  x ^= x << 5;
  return c->rng = x;
}

/* One client frame (FIN set, masked) whose payload is pre then body. */
static int send_frame(wire_conn *c, unsigned op, const char *pre, size_t npre, const char *body,
                      size_t nbody) {
  scratch *sc = cur_sc(c->w);
  size_t len = npre + nbody, hl;
  unsigned char *f = (unsigned char *)sc->send, *m, key[4];
  uint32_t k = next_mask(c);

  if (len + 14 > c->w->send_cap)
    return -EMSGSIZE;
  f[0] = (unsigned char)(0x80 | op);
  if (len < 126) {
    f[1] = (unsigned char)(0x80 | len);
    hl = 2;
  } else if (len < 65536) {
    f[1] = 0x80 | 126;
    f[2] = (unsigned char)(len >> 8);
    f[3] = (unsigned char)len;
    hl = 4;
  } else {
    f[1] = 0x80 | 127;
    for (int i = 0; i < 8; i++)
      f[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
    hl = 10;
  }
  memcpy(key, &k, 4);
  memcpy(f + hl, key, 4);
  m = f + hl + 4;
  if (npre)
    memcpy(m, pre, npre);
  if (nbody)
    memcpy(m + npre, body, nbody);
  for (size_t i = 0; i < len; i++)
    m[i] ^= key[i & 3];
  return out_raw(c, (const char *)f, hl + 4 + len);
}

/* ---- the Upgrade ---- */

static void b64(const unsigned char *in, size_t n, char *out) {
  EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

static void accept_for(const char *key, char out[29]) {
  unsigned char md[SHA_DIGEST_LENGTH];
  char buf[64];
  int n = snprintf(buf, sizeof(buf), "%s" WS_GUID, key);
  SHA1((const unsigned char *)buf, (size_t)n, md);
  b64(md, sizeof(md), out);
}

static void ws_start(wire_conn *c) {
  wire *w = c->w;
  unsigned char nonce[16];
  char key[25], req[2048];
  const char *target = w->o.colyseus ? w->seats[c->idx] : w->o.ws_path;
  int n;

  if (RAND_bytes(nonce, sizeof(nonce)) != 1) {
    fail(c, "no random bytes for Sec-WebSocket-Key: %s", ssl_reason());
    return;
  }
  b64(nonce, sizeof(nonce), key);
  accept_for(key, c->accept);
  n = snprintf(req, sizeof(req),
               "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s%s%s\r\n",
               target, w->o.host, key, w->o.origin ? "Origin: " : "",
               w->o.origin ? w->o.origin : "", w->o.origin ? "\r\n" : "");
  if (n < 0 || (size_t)n >= sizeof(req)) {
    fail(c, "the Upgrade request is over %zu bytes", sizeof(req));
    return;
  }
  c->st = ST_HTTP;
  (void)out_raw(c, req, (size_t)n);
}

/* What follows TLS (or the TCP connect): the Upgrade, or traffic. */
static void transport_up(wire_conn *c) {
  if (c->w->o.ws_path || c->w->o.colyseus) {
    ws_start(c);
    return;
  }
  c->st = ST_UP;
  c->w->h.up(c->ctx);
}

static int token_in(const char *v, size_t n, const char *tok) {
  size_t tl = strlen(tok), i = 0;
  while (i < n) {
    size_t s, e;
    while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
      i++;
    s = i;
    while (i < n && v[i] != ',')
      i++;
    e = i;
    while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
      e--;
    if (e - s == tl && strncasecmp(v + s, tok, tl) == 0)
      return 1;
  }
  return 0;
}

static void frames_in(wire_conn *c, const unsigned char *p, size_t n);

/* Checks the response head hs[0..len) (through CRLF CRLF). */
static int check_head(wire_conn *c, const char *hs, size_t len) {
  const char *p = hs, *end = hs + len, *eol = memchr(p, '\r', len);
  int up = 0, conn = 0, acc = 0;
  size_t fl = (size_t)(eol - p);

  if (fl < 12 || memcmp(p, "HTTP/1.1 101", 12) != 0 || (fl > 12 && p[12] != ' ')) {
    fail(c, "the server answered the Upgrade with \"%.*s\"", (int)(fl > 200 ? 200 : fl), p);
    return -EPROTO;
  }
  p = eol + 2;
  while (p < end && !(p[0] == '\r')) {
    const char *le = memchr(p, '\r', (size_t)(end - p)), *colon, *v, *ve;
    if (!le)
      break;
    colon = memchr(p, ':', (size_t)(le - p));
    if (!colon) {
      fail(c, "a response header line without a colon: \"%.*s\"", (int)(le - p), p);
      return -EPROTO;
    }
    v = colon + 1;
    while (v < le && (*v == ' ' || *v == '\t'))
      v++;
    ve = le;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
      ve--;
#define NAME_IS(s) ((size_t)(colon - p) == strlen(s) && strncasecmp(p, s, strlen(s)) == 0)
    if (NAME_IS("Upgrade"))
      up = token_in(v, (size_t)(ve - v), "websocket");
    else if (NAME_IS("Connection"))
      conn = token_in(v, (size_t)(ve - v), "upgrade");
    else if (NAME_IS("Sec-WebSocket-Accept")) {
      if ((size_t)(ve - v) != 28 || memcmp(v, c->accept, 28) != 0) {
        fail(c, "Sec-WebSocket-Accept is \"%.*s\", expected \"%s\"",
             (int)((ve - v) > 64 ? 64 : (ve - v)), v, c->accept);
        return -EPROTO;
      }
      acc = 1;
    } else if (NAME_IS("Sec-WebSocket-Extensions") || NAME_IS("Sec-WebSocket-Protocol")) {
      fail(c, "the 101 has \"%.*s\", which was not asked for", (int)(ve - p), p);
      return -EPROTO;
    }
#undef NAME_IS
    p = le + 2;
  }
  if (!up || !conn || !acc) {
    fail(c, "the 101 has no %s", !up ? "\"Upgrade: websocket\"" : !conn ? "\"Connection: upgrade\""
                                                              : "Sec-WebSocket-Accept");
    return -EPROTO;
  }
  return 0;
}

static void http_in(wire_conn *c, const char *p, size_t n) {
  size_t from = c->hs_len > 3 ? c->hs_len - 3 : 0, take, end = 0;
  if (!c->hs && !(c->hs = malloc(HEAD_MAX))) {
    fail(c, "out of memory");
    return;
  }
  take = n < HEAD_MAX - c->hs_len ? n : HEAD_MAX - c->hs_len;
  memcpy(c->hs + c->hs_len, p, take);
  c->hs_len += take;
  for (size_t i = from; i + 4 <= c->hs_len; i++)
    if (memcmp(c->hs + i, "\r\n\r\n", 4) == 0) {
      end = i + 4;
      break;
    }
  if (!end) {
    if (c->hs_len == HEAD_MAX)
      fail(c, "no end of the response head within %d bytes", HEAD_MAX);
    return;
  }
  if (check_head(c, c->hs, end) < 0)
    return;
  /* what came after the head: frames already */
  p += take - (c->hs_len - end);
  n -= take - (c->hs_len - end);
  free(c->hs);
  c->hs = NULL;
  c->hs_len = 0;
  if (c->w->o.colyseus)
    c->st = ST_COLYSEUS;
  else {
    c->st = ST_UP;
    c->w->h.up(c->ctx);
  }
  if (n > 0 && c->st != ST_DEAD)
    frames_in(c, (const unsigned char *)p, n);
}

/* ---- messages ---- */

static int ws_send_msg(wire_conn *c, const char *pre, size_t npre, const char *p, size_t n) {
  return send_frame(c, 2, pre, npre, p, n);
}

static void colyseus_msg(wire_conn *c, const unsigned char *p, size_t n) {
  scratch *sc;
  size_t off, blen;
  unsigned id;

  if (n == 0)
    return;
  switch (p[0]) {
  case CY_JOIN_ROOM:
    if (c->st == ST_COLYSEUS) {
      char ack = CY_JOIN_ROOM;
      if (ws_send_msg(c, NULL, 0, &ack, 1) < 0)
        return;
      c->st = ST_UP;
      c->w->h.up(c->ctx);
    }
    return;
  case CY_ERROR: {
    size_t i = 1;
    char text[128];
    size_t k = 0;
    for (i = 1; i < n && k < sizeof(text) - 1; i++)
      if (p[i] >= 0x20 && p[i] < 0x7f)
        text[k++] = (char)p[i];
    text[k] = '\0';
    fail(c, "Colyseus sent an error: \"%s\"", text);
    return;
  }
  case CY_ROOM_DATA_BYTES:
    break;
  default:
    return; /* state, patches, msgpack messages: not the workload's */
  }
  if (c->st != ST_UP) {
    fail(c, "room data before the JOIN_ROOM");
    return;
  }
  /* the type, a number as @colyseus/schema encodes it */
  if (n >= 2 && p[1] < 0x80) {
    id = p[1];
    off = 2;
  } else if (n >= 3 && p[1] == 0xcc) {
    id = p[2];
    off = 3;
  } else if (n >= 4 && p[1] == 0xcd) {
    id = p[2] | (unsigned)p[3] << 8;
    off = 4;
  } else {
    fail(c, "a Colyseus message whose type is not a number 0..65535");
    return;
  }
  blen = n - off;
  if (blen + 4 > 65535 || blen + 4 > c->w->o.max_message) {
    fail(c, "a Colyseus message of %zu bytes, over the packet cap", n);
    return;
  }
  sc = cur_sc(c->w);
  sc->conv[0] = (char)((blen + 4) & 0xff);
  sc->conv[1] = (char)((blen + 4) >> 8);
  sc->conv[2] = (char)(id & 0xff);
  sc->conv[3] = (char)(id >> 8);
  memcpy(sc->conv + 4, p + off, blen);
  c->w->h.data(c->ctx, sc->conv, blen + 4);
}

/* One whole data message. */
static void message(wire_conn *c, const unsigned char *p, size_t n) {
  if (c->w->o.colyseus) {
    colyseus_msg(c, p, n);
    return;
  }
  if (c->w->o.packets) {
    unsigned size = n >= 2 ? p[0] | (unsigned)p[1] << 8 : 0;
    if (n < 4 || size != n) {
      fail(c, "a message of %zu bytes is not one packet (its size field says %u)", n, size);
      return;
    }
  }
  c->w->h.data(c->ctx, (const char *)p, n);
}

static void control(wire_conn *c, unsigned op, const unsigned char *p, size_t n) {
  switch (op) {
  case 8: { /* close: answer it, then the connection is over */
    unsigned code = n >= 2 ? (unsigned)p[0] << 8 | p[1] : 1005;
    (void)send_frame(c, 8, NULL, 0, (const char *)p, n >= 2 ? 2 : 0);
    fail(c, "the server closed the WebSocket (code %u%s%.*s)", code, n > 2 ? ": " : "",
         n > 2 ? (int)(n - 2) : 0, n > 2 ? (const char *)p + 2 : "");
    return;
  }
  case 9:
    (void)send_frame(c, 10, NULL, 0, (const char *)p, n);
    return;
  case 10:
    return;
  default:
    fail(c, "a frame with the reserved opcode 0x%x", op);
  }
}

typedef struct fhdr {
  unsigned fin, op;
  uint64_t len;
} fhdr;

/* A server frame's header at p[0..n): its length, 0 when more bytes are
 * needed (*need: at least how many), or -1 with *why. */
static int fhdr_parse(const unsigned char *p, size_t n, fhdr *h, size_t *need, const char **why) {
  size_t hl = 2;
  uint64_t len;
  if (n < 2) {
    *need = 2;
    return 0;
  }
  if (p[0] & 0x70) {
    *why = "a frame with reserved bits set (no extension was negotiated)";
    return -1;
  }
  if (p[1] & 0x80) {
    *why = "a masked frame from the server";
    return -1;
  }
  len = p[1] & 0x7f;
  if (len == 126)
    hl = 4;
  else if (len == 127)
    hl = 10;
  if (n < hl) {
    *need = hl;
    return 0;
  }
  if (len == 126)
    len = (uint64_t)p[2] << 8 | p[3];
  else if (len == 127) {
    len = 0;
    for (int i = 0; i < 8; i++)
      len = len << 8 | p[2 + i];
    if (len >> 62) {
      *why = "a frame length over 2^62";
      return -1;
    }
  }
  h->fin = p[0] >> 7;
  h->op = p[0] & 0x0f;
  h->len = len;
  if (h->op >= 8 && (!h->fin || len > CTRL_MAX)) {
    *why = "a fragmented or over-long control frame";
    return -1;
  }
  return (int)hl;
}

static void frame(wire_conn *c, const fhdr *h, const unsigned char *p) {
  size_t n = (size_t)h->len;
  if (h->op >= 8) {
    control(c, h->op, p, n);
    return;
  }
  if (h->op != 0 && h->op != 1 && h->op != 2) {
    fail(c, "a frame with the reserved opcode 0x%x", h->op);
    return;
  }
  if (h->op != 0 && c->mop) {
    fail(c, "a new message inside a fragmented one");
    return;
  }
  if (h->op == 0 && !c->mop) {
    fail(c, "a continuation frame outside a message");
    return;
  }
  if (!c->w->o.packets && !c->w->o.colyseus) { /* a byte stream: fragments as they come */
    c->mop = h->fin ? 0 : (uint8_t)(h->op ? h->op : c->mop);
    if (n)
      c->w->h.data(c->ctx, (const char *)p, n);
    return;
  }
  if (h->fin && h->op != 0) {
    message(c, p, n);
    return;
  }
  if (c->mlen + n > c->w->o.max_message) {
    fail(c, "a fragmented message over %zu bytes", c->w->o.max_message);
    return;
  }
  if (c->mlen + n > c->mcap) {
    size_t cap = c->mlen + n < 4096 ? 4096 : c->mlen + n;
    char *nb = realloc(c->mb, cap);
    if (!nb) {
      fail(c, "out of memory");
      return;
    }
    c->mb = nb;
    c->mcap = cap;
  }
  memcpy(c->mb + c->mlen, p, n);
  c->mlen += n;
  if (h->op)
    c->mop = (uint8_t)h->op;
  if (h->fin) {
    size_t len = c->mlen;
    c->mop = 0;
    c->mlen = 0;
    message(c, (const unsigned char *)c->mb, len);
  }
}

static int rb_reserve(wire_conn *c, size_t total) {
  char *nb;
  if (total <= c->rcap)
    return 0;
  if (total > c->w->rmax) {
    fail(c, "a frame of %zu bytes, over the %zu kept", total, c->w->rmax);
    return -EMSGSIZE;
  }
  nb = realloc(c->rb, total < 256 ? 256 : total);
  if (!nb) {
    fail(c, "out of memory");
    return -ENOMEM;
  }
  c->rb = nb;
  c->rcap = total < 256 ? 256 : total;
  return 0;
}

static void frames_in(wire_conn *c, const unsigned char *p, size_t n) {
  while (n > 0 && c->st != ST_DEAD) {
    fhdr h;
    size_t need = 0, total, take;
    const char *why = NULL;
    int hl;
    if (c->rlen > 0) { /* complete the frame that was split */
      hl = fhdr_parse((unsigned char *)c->rb, c->rlen, &h, &need, &why);
      if (hl < 0) {
        fail(c, "%s", why);
        return;
      }
      total = hl ? (size_t)hl + (size_t)h.len : need;
      if (rb_reserve(c, total) < 0)
        return;
      take = n < total - c->rlen ? n : total - c->rlen;
      memcpy(c->rb + c->rlen, p, take);
      c->rlen += take;
      p += take;
      n -= take;
      if (hl == 0 || c->rlen < total)
        continue;
      c->rlen = 0;
      frame(c, &h, (unsigned char *)c->rb + hl);
      continue;
    }
    hl = fhdr_parse(p, n, &h, &need, &why);
    if (hl < 0) {
      fail(c, "%s", why);
      return;
    }
    if (hl > 0 && h.len <= n - (size_t)hl) {
      frame(c, &h, p + hl);
      p += (size_t)hl + h.len;
      n -= (size_t)hl + h.len;
      continue;
    }
    total = hl ? (size_t)hl + (size_t)h.len : need;
    if (rb_reserve(c, total > n ? total : n) < 0)
      return;
    memcpy(c->rb, p, n);
    c->rlen = n;
    return;
  }
}

/* TLS without WebSocket and u16_size_id: packets out of the byte stream. */
static void packets_in(wire_conn *c, const unsigned char *p, size_t n) {
  while (n > 0 && c->st != ST_DEAD) {
    size_t size, take;
    if (c->rlen > 0) {
      if (c->rlen < 2) {
        c->rb[c->rlen++] = (char)*p++;
        n--;
        continue;
      }
      size = (unsigned char)c->rb[0] | (size_t)(unsigned char)c->rb[1] << 8;
      if (size < 4 || size > c->w->o.max_message) {
        fail(c, "a packet of size %zu", size);
        return;
      }
      take = n < size - c->rlen ? n : size - c->rlen;
      memcpy(c->rb + c->rlen, p, take);
      c->rlen += take;
      p += take;
      n -= take;
      if (c->rlen == size) {
        c->rlen = 0;
        c->w->h.data(c->ctx, c->rb, size);
      }
      continue;
    }
    size = n >= 2 ? p[0] | (size_t)p[1] << 8 : 0;
    if (n >= 2 && (size < 4 || size > c->w->o.max_message)) {
      fail(c, "a packet of size %zu", size);
      return;
    }
    if (n >= 2 && size <= n) {
      c->w->h.data(c->ctx, (const char *)p, size);
      p += size;
      n -= size;
      continue;
    }
    if (rb_reserve(c, 65536) < 0)
      return;
    memcpy(c->rb, p, n);
    c->rlen = n;
    return;
  }
}

/* Plaintext from the peer (after TLS, if any). */
static void plain_in(wire_conn *c, const char *p, size_t n) {
  switch (c->st) {
  case ST_HTTP:
    http_in(c, p, n);
    return;
  case ST_COLYSEUS:
  case ST_UP:
    if (c->w->o.ws_path || c->w->o.colyseus)
      frames_in(c, (const unsigned char *)p, n);
    else if (c->w->o.packets)
      packets_in(c, (const unsigned char *)p, n);
    else
      c->w->h.data(c->ctx, p, n);
    return;
  default:
    return;
  }
}

static void tls_in(wire_conn *c, const char *data, size_t len) {
  char *buf = cur_sc(c->w)->plain;
  c->in = data;
  c->in_len = len;
  if (c->st == ST_TLS) {
    int r;
    ERR_clear_error();
    r = SSL_do_handshake(c->ssl);
    if (r != 1) {
      int e = SSL_get_error(c->ssl, r);
      if (e == SSL_ERROR_WANT_READ)
        return;
      if (SSL_get_verify_result(c->ssl) != X509_V_OK)
        fail(c, "TLS handshake failed: certificate: %s",
             X509_verify_cert_error_string(SSL_get_verify_result(c->ssl)));
      else
        fail(c, "TLS handshake failed: %s", e == SSL_ERROR_SSL ? ssl_reason() : "connection "
                                                                                "closed");
      return;
    }
    transport_up(c);
  }
  while (c->st != ST_DEAD) {
    size_t got = 0;
    int r;
    ERR_clear_error();
    r = SSL_read_ex(c->ssl, buf, PLAIN_BUF, &got);
    if (r == 1) {
      plain_in(c, buf, got);
      continue;
    }
    r = SSL_get_error(c->ssl, 0);
    if (r == SSL_ERROR_WANT_READ)
      break;
    if (r == SSL_ERROR_ZERO_RETURN)
      fail(c, "the server ended TLS (close_notify)");
    else
      fail(c, "TLS read failed: %s", ssl_reason());
    break;
  }
  c->in = NULL;
  c->in_len = 0;
}

/* ---- the connection ---- */

void wire_connected(wire_conn *c, pier_sid sid) {
  wire *w = c->w;
  c->sid = sid;
  if (RAND_bytes((unsigned char *)&c->rng, sizeof(c->rng)) != 1 || c->rng == 0)
    c->rng = 0x9e3779b9u ^ (c->idx + 1);
  if (!w->o.tls) {
    transport_up(c);
    return;
  }
  c->ssl = SSL_new(w->ctx);
  if (!c->ssl) {
    fail(c, "SSL_new failed: %s", ssl_reason());
    return;
  }
  {
    BIO *b = BIO_new(w->bio);
    if (!b) {
      fail(c, "BIO_new failed: %s", ssl_reason());
      return;
    }
    BIO_set_data(b, c);
    SSL_set_bio(c->ssl, b, b);
  }
  if (w->o.ca && X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), w->ip) != 1)
    SSL_set1_host(c->ssl, w->ip); /* not an address literal */
  SSL_set_connect_state(c->ssl);
  c->st = ST_TLS;
  ERR_clear_error();
  {
    int r = SSL_do_handshake(c->ssl);
    if (r != 1 && SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ)
      fail(c, "TLS handshake failed: %s", ssl_reason());
  }
}

void wire_recv(wire_conn *c, const char *data, size_t len) {
  if (c->st == ST_DEAD)
    return;
  if (c->ssl)
    tls_in(c, data, len);
  else
    plain_in(c, data, len);
}

int wire_send(wire_conn *c, const void *data, size_t len) {
  const char *p = data;
  if (c->st != ST_UP)
    return -ENOTCONN;
  if (c->w->o.colyseus) {
    /* [size u16][id u16][body] -> [ROOM_DATA_BYTES][id][body] */
    char pre[4];
    size_t npre = 1;
    unsigned id;
    if (len < 4)
      return -EINVAL;
    id = (unsigned char)p[2] | (unsigned)(unsigned char)p[3] << 8;
    pre[0] = CY_ROOM_DATA_BYTES;
    if (id < 0x80)
      pre[npre++] = (char)id;
    else if (id < 0x100) {
      pre[npre++] = (char)0xcc;
      pre[npre++] = (char)id;
    } else {
      pre[npre++] = (char)0xcd;
      pre[npre++] = (char)(id & 0xff);
      pre[npre++] = (char)(id >> 8);
    }
    return ws_send_msg(c, pre, npre, p + 4, len - 4);
  }
  if (c->w->o.ws_path)
    return ws_send_msg(c, NULL, 0, p, len);
  return out_raw(c, p, len);
}

wire_conn *wire_conn_new(wire *w, void *ctx, unsigned idx) {
  wire_conn *c = calloc(1, sizeof(*c));
  if (!c)
    return NULL;
  c->w = w;
  c->ctx = ctx;
  c->idx = idx;
  return c;
}

void wire_conn_free(wire_conn *c) {
  if (!c)
    return;
  SSL_free(c->ssl);
  free(c->hs);
  free(c->rb);
  free(c->mb);
  free(c);
}

/* ---- shared state ---- */

int wire_create(const wire_opts *o, const wire_handler *h, net *n, wire **out) {
  wire *w = calloc(1, sizeof(*w));
  const char *colon;
  *out = NULL;
  if (!w)
    return -ENOMEM;
  w->o = *o;
  w->h = *h;
  w->n = n;
  w->rmax = (o->max_message > CTRL_MAX ? o->max_message : CTRL_MAX) + 14;
  w->send_cap = o->max_send + 32 > CTRL_MAX + 32 ? o->max_send + 32 : CTRL_MAX + 32;
  w->sc = calloc(o->workers, sizeof(*w->sc));
  /* the address part of "host:port" or "[v6]:port" */
  colon = strrchr(o->host, ':');
  w->ip = o->host[0] == '[' ? strndup(o->host + 1, strcspn(o->host + 1, "]"))
                            : strndup(o->host, colon ? (size_t)(colon - o->host) : strlen(o->host));
  if (!w->sc || !w->ip)
    goto nomem;
  for (unsigned i = 0; i < o->workers; i++) {
    w->sc[i].send = malloc(w->send_cap);
    w->sc[i].plain = malloc(PLAIN_BUF);
    w->sc[i].conv = malloc(o->max_message + 8);
    if (!w->sc[i].send || !w->sc[i].plain || !w->sc[i].conv)
      goto nomem;
  }
  if (o->tls) {
    w->ctx = SSL_CTX_new(TLS_client_method());
    w->bio = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "pier-bench");
    if (!w->ctx || !w->bio) {
      fprintf(stderr, "pier-bench: cannot set up TLS: %s\n", ssl_reason());
      wire_destroy(w);
      return -ENOMEM;
    }
    BIO_meth_set_write(w->bio, bio_write);
    BIO_meth_set_read(w->bio, bio_read);
    BIO_meth_set_ctrl(w->bio, bio_ctrl);
    BIO_meth_set_create(w->bio, bio_create);
    SSL_CTX_set_min_proto_version(w->ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(w->ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(w->ctx, SSL_SESS_CACHE_OFF);
    if (o->ca) {
      if (SSL_CTX_load_verify_locations(w->ctx, o->ca, NULL) != 1) {
        fprintf(stderr, "pier-bench: --ca: cannot load \"%s\": %s\n", o->ca, ssl_reason());
        wire_destroy(w);
        return -EINVAL;
      }
      SSL_CTX_set_verify(w->ctx, SSL_VERIFY_PEER, NULL);
    } else {
      SSL_CTX_set_verify(w->ctx, SSL_VERIFY_NONE, NULL);
    }
  }
  *out = w;
  return 0;
nomem:
  fprintf(stderr, "pier-bench: out of memory\n");
  wire_destroy(w);
  return -ENOMEM;
}

void wire_destroy(wire *w) {
  if (!w)
    return;
  if (w->sc)
    for (unsigned i = 0; i < w->o.workers; i++) {
      free(w->sc[i].send);
      free(w->sc[i].plain);
      free(w->sc[i].conv);
    }
  free(w->sc);
  if (w->seats)
    for (unsigned i = 0; i < w->nseats; i++)
      free(w->seats[i]);
  free(w->seats);
  SSL_CTX_free(w->ctx);
  BIO_meth_free(w->bio);
  free(w->ip);
  free(w);
}

/* ---- Colyseus matchmaking ---- */

static int id_ok(const char *s) {
  if (!s || !*s || strlen(s) > 64)
    return 0;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
          *s == '_' || *s == '-'))
      return 0;
  return 1;
}

/* One POST /matchmake/joinOrCreate/<room>; *target gets the WebSocket
 * request target of the seat. HTTP/1.0, so the answer is not chunked and
 * ends with the connection. */
static int matchmake(wire *w, const net_addr *addr, char **target) {
  char req[512], *buf = NULL;
  size_t len = 0;
  struct timeval tv = {MATCHMAKE_TIMEOUT_S, 0};
  int fd, n, rc = -EPROTO;
  const char *body;
  cJSON *root = NULL;

  fd = socket(addr->u.sa.sa_family, SOCK_STREAM, 0);
  if (fd < 0)
    return -errno;
  (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  if (connect(fd, &addr->u.sa, net_addr_len(addr)) < 0) {
    rc = -errno;
    fprintf(stderr, "pier-bench: matchmaking: connect to %s failed: %s\n", w->o.host,
            strerror(-rc));
    close(fd);
    return rc;
  }
  n = snprintf(req, sizeof(req),
               "POST /matchmake/joinOrCreate/%s HTTP/1.0\r\nHost: %s\r\n"
               "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
               w->o.colyseus, w->o.host);
  if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
    rc = -EIO;
    fprintf(stderr, "pier-bench: matchmaking: send failed\n");
    goto out;
  }
  buf = malloc(MATCHMAKE_MAX + 1);
  if (!buf) {
    rc = -ENOMEM;
    goto out;
  }
  for (;;) {
    ssize_t r = recv(fd, buf + len, MATCHMAKE_MAX - len, 0);
    if (r < 0) {
      rc = -errno;
      fprintf(stderr, "pier-bench: matchmaking: no answer: %s\n", strerror(-rc));
      goto out;
    }
    if (r == 0)
      break;
    len += (size_t)r;
    if (len == MATCHMAKE_MAX) {
      fprintf(stderr, "pier-bench: matchmaking: an answer over %d bytes\n", MATCHMAKE_MAX);
      goto out;
    }
  }
  buf[len] = '\0';
  body = strstr(buf, "\r\n\r\n");
  if (len < 12 || strncmp(buf, "HTTP/1.", 7) != 0 || strncmp(buf + 8, " 200", 4) != 0 || !body) {
    fprintf(stderr, "pier-bench: matchmaking: the server answered \"%.*s\"\n",
            (int)strcspn(buf, "\r\n"), buf);
    goto out;
  }
  root = cJSON_Parse(body + 4);
  {
    cJSON *room = cJSON_GetObjectItemCaseSensitive(root, "room");
    const char *rid = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(room, "roomId"));
    const char *pid = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(room, "processId"));
    const char *sid = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(root, "sessionId"));
    const char *err = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(root, "error"));
    if (err || !id_ok(rid) || !id_ok(pid) || !id_ok(sid)) {
      fprintf(stderr, "pier-bench: matchmaking: no seat: %.200s\n", err ? err : body + 4);
      goto out;
    }
    if (asprintf(target, "/%s/%s?sessionId=%s", pid, rid, sid) < 0) {
      *target = NULL;
      rc = -ENOMEM;
      goto out;
    }
  }
  rc = 0;
out:
  cJSON_Delete(root);
  free(buf);
  close(fd);
  return rc;
}

int wire_prepare(wire *w, const net_addr *addr, unsigned conns, volatile int *stop) {
  if (!w->o.colyseus)
    return 0;
  w->seats = calloc(conns, sizeof(*w->seats));
  if (!w->seats)
    return -ENOMEM;
  w->nseats = conns;
  for (unsigned i = 0; i < conns; i++) {
    int rc;
    if (*stop)
      return -EINTR;
    rc = matchmake(w, addr, &w->seats[i]);
    if (rc < 0)
      return rc;
  }
  return 0;
}
