/* TLS on OpenSSL 3 over a custom BIO: its read takes bytes from the buffer
 * tls_conn_feed is handing in and its write calls tls_io.wire at once, so no
 * BIO holds data between calls, and SSL_MODE_RELEASE_BUFFERS lets OpenSSL
 * drop its record buffers whenever a connection is idle. Plaintext comes out
 * through a per-thread 16 KiB buffer; writes are coalesced into 16 KiB
 * records through another. A server keeps its current SSL_CTX behind a mutex;
 * a reload builds a whole new context and swaps it in only if it loaded, and
 * each SSL holds a reference to the context it was made from. */
#include "net/tls.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "os/os.h"

/* One TLS record's plaintext (the protocol's maximum fragment). */
#define RECORD 16384
/* Certificate and key files larger than this are refused (a PEM chain of a
 * few certificates is a few KiB). */
#define FILE_MAX (1u << 20)

struct tls_server {
  os_mutex mu; /* guards ctx */
  SSL_CTX *ctx;
};

struct tls_conn {
  SSL *ssl;
  const tls_io *io; /* of the tls_conn_* call under way */
  const char *in;   /* what tls_conn_feed is handing in, not yet read */
  size_t in_len;
  const char *err;      /* static text of the last failure, or NULL */
  unsigned char stop;    /* wire asked to stop: later calls return 1 */
  unsigned char in_stop; /* plain asked to stop: the unread input was dropped, so
                            later feeds return 1 (writes and shutdown still go) */
  unsigned char failed; /* a fatal error: the connection is unusable */
  unsigned char shut;   /* tls_conn_shutdown was called */
  /* Where the input stands in its records (5-byte header, then the body),
   * for tls_conn_held: only the lengths are read. */
  unsigned char hdr[5], hdr_have, in_body;
  uint16_t rec_len, rec_left;
};

/* Decrypted records come out here before io->plain; staged writes go in
 * there. Separate, because plain may write to the connection it is called
 * for. tls_conn_feed must not be re-entered on one thread from plain. */
static _Thread_local unsigned char read_buf[RECORD];
static _Thread_local unsigned char stage_buf[RECORD];

/* ---- the BIO ---- */

static BIO_METHOD *bio_method;
static os_once_t bio_once = OS_ONCE_INIT;

static int bio_write(BIO *b, const char *data, size_t len, size_t *written) {
  tls_conn *c = BIO_get_data(b);

  BIO_clear_retry_flags(b);
  if (!c->stop && c->io && c->io->wire(c->io->ctx, data, len) == 0) {
    *written = len;
    return 1;
  }
  /* A retryable failure: the SSL_* call under way returns WANT_WRITE and
   * the caller sees c->stop. */
  c->stop = 1;
  BIO_set_retry_write(b);
  *written = 0;
  return 0;
}

static int bio_read(BIO *b, char *buf, size_t size, size_t *readbytes) {
  tls_conn *c = BIO_get_data(b);
  size_t n = c->in_len < size ? c->in_len : size;

  BIO_clear_retry_flags(b);
  if (n == 0) {
    BIO_set_retry_read(b); /* no EOF: more may arrive with the next feed */
    *readbytes = 0;
    return 0;
  }
  memcpy(buf, c->in, n);
  c->in += n;
  c->in_len -= n;
  *readbytes = n;
  return 1;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
  /* Writes are never buffered here, so there is nothing to flush. */
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static void make_bio_method(void) {
  BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "pier tls");

  if (!m)
    return;
  if (!BIO_meth_set_write_ex(m, bio_write) || !BIO_meth_set_read_ex(m, bio_read) ||
      !BIO_meth_set_ctrl(m, bio_ctrl)) {
    BIO_meth_free(m);
    return;
  }
  bio_method = m;
}

/* ---- errors ---- */

/* The reason of the first error queued (the root cause; later entries wrap
 * it: "ASN1 lib", "PEM lib", "nested asn1 error"), skipping the decoders'
 * bare "unsupported" when anything more specific follows. Empties the queue
 * so that nothing is left for another connection on this thread. */
static const char *take_reason(void) {
  unsigned long e, first = 0, best = 0;
  const char *r;

  while ((e = ERR_get_error()) != 0) {
    if (!first)
      first = e;
    if (!best &&
        !(ERR_GET_LIB(e) == ERR_LIB_OSSL_DECODER && ERR_GET_REASON(e) == ERR_R_UNSUPPORTED))
      best = e;
  }
  if (!best)
    best = first;
  r = best ? ERR_reason_error_string(best) : NULL;
  return r ? r : "unknown error";
}

__attribute__((format(printf, 3, 4))) static void say(char *err, size_t errlen, const char *fmt,
                                                      ...) {
  va_list ap;

  if (!err || errlen == 0)
    return;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* ---- contexts ---- */

/* A passphrase callback that has none: without it OpenSSL would prompt on
 * the terminal for an encrypted key. */
static int no_passphrase(char *buf, int size, int rwflag, void *u) { return -1; }

static void free_file(char *data, size_t len) {
  if (data) {
    OPENSSL_cleanse(data, len); /* it may hold a private key */
    free(data);
  }
}

/* Reads a whole file (at most FILE_MAX bytes) into *out (free with
 * free_file). 0 or a negative errno, with err set. */
static int read_file(const char *path, const char *what, char **out, size_t *outlen, char *err,
                     size_t errlen) {
  FILE *f = fopen(path, "rb");
  char *data = NULL, *grown;
  size_t n = 0, cap = 0;
  int e = 0;

  if (!f) {
    e = errno;
    say(err, errlen, "cannot open %s \"%s\": %s", what, path, os_strerror(e));
    return -e;
  }
  for (;;) {
    if (n == cap) {
      if (cap == FILE_MAX + 1) {
        say(err, errlen, "cannot load %s \"%s\": larger than 1 MiB", what, path);
        e = EINVAL;
        break;
      }
      cap = cap ? cap * 2 : 16384;
      if (cap > FILE_MAX + 1)
        cap = FILE_MAX + 1;
      if (!(grown = realloc(data, cap))) {
        say(err, errlen, "cannot read %s \"%s\": %s", what, path, os_strerror(ENOMEM));
        e = ENOMEM;
        break;
      }
      data = grown;
    }
    errno = 0;
    n += fread(data + n, 1, cap - n, f);
    if (ferror(f)) { /* e.g. EISDIR: fopen opens a directory */
      e = errno ? errno : EIO;
      say(err, errlen, "cannot read %s \"%s\": %s", what, path, os_strerror(e));
      break;
    }
    if (feof(f))
      break;
  }
  fclose(f);
  if (e) {
    free_file(data, n);
    return -e;
  }
  *out = data;
  *outlen = n;
  return 0;
}

/* The leaf certificate and any chain after it, into ctx; *leaf gets the
 * leaf (a reference of its own). */
static int use_cert(SSL_CTX *ctx, const char *path, const char *pem, size_t len, X509 **leaf,
                    char *err, size_t errlen) {
  BIO *b = BIO_new_mem_buf(pem, (int)len);
  X509 *x, *ca;
  unsigned long e;

  if (!b)
    goto fail;
  x = PEM_read_bio_X509_AUX(b, NULL, no_passphrase, NULL);
  if (!x)
    goto fail;
  if (!SSL_CTX_use_certificate(ctx, x)) {
    X509_free(x);
    goto fail;
  }
  *leaf = x;
  while ((ca = PEM_read_bio_X509(b, NULL, no_passphrase, NULL)) != NULL) {
    if (!SSL_CTX_add0_chain_cert(ctx, ca)) {
      X509_free(ca);
      goto fail;
    }
  }
  /* The end of the file shows as "no start line"; anything else is a
   * broken certificate further down the chain. */
  e = ERR_peek_last_error();
  if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)
    ERR_clear_error();
  else
    goto fail;
  BIO_free(b);
  return 0;
fail:
  say(err, errlen, "cannot load certificate \"%s\": %s", path, take_reason());
  BIO_free(b);
  return -EINVAL;
}

/* Looks for a private key's PEM block: 1 if there is one and it is
 * encrypted (PKCS#8 "ENCRYPTED PRIVATE KEY", or a traditional key with
 * "Proc-Type: 4,ENCRYPTED"), 0 if there is a plain one, -1 if there is none
 * (the PEM layer's reason, "no start line" at the end of the text, is left
 * queued). */
static int key_block(const char *pem, size_t len) {
  BIO *b = BIO_new_mem_buf(pem, (int)len);
  char *name, *header;
  unsigned char *data;
  long n;
  int found = -1;

  while (b && found < 0 && PEM_read_bio(b, &name, &header, &data, &n)) {
    if (strstr(name, "PRIVATE KEY"))
      found = strcmp(name, "ENCRYPTED PRIVATE KEY") == 0 || strstr(header, "ENCRYPTED") != NULL;
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_clear_free(data, n);
  }
  BIO_free(b);
  return found;
}

static int use_key(SSL_CTX *ctx, X509 *leaf, const char *cert, const char *path, const char *pem,
                   size_t len, char *err, size_t errlen) {
  BIO *b;
  EVP_PKEY *k = NULL;
  int found = key_block(pem, len);

  /* Without a key block the decoders would only say "unsupported": the PEM
   * layer's reason says more. */
  if (found < 0)
    goto fail;
  ERR_clear_error();
  if (found == 1) {
    say(err, errlen,
        "cannot load key \"%s\": encrypted with a passphrase (an unencrypted key is "
        "needed)",
        path);
    return -EINVAL;
  }
  if (!(b = BIO_new_mem_buf(pem, (int)len)))
    goto fail;
  k = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL);
  BIO_free(b);
  if (!k)
    goto fail;
  if (!X509_check_private_key(leaf, k)) {
    EVP_PKEY_free(k);
    ERR_clear_error();
    say(err, errlen, "key \"%s\" does not match certificate \"%s\"", path, cert);
    return -EINVAL;
  }
  if (!SSL_CTX_use_PrivateKey(ctx, k))
    goto fail;
  EVP_PKEY_free(k);
  return 0;
fail:
  EVP_PKEY_free(k);
  say(err, errlen, "cannot load key \"%s\": %s", path, take_reason());
  return -EINVAL;
}

/* A new server context with cert and key: 0, or a negative errno with err
 * set. Leaves the error queue empty either way. */
static int make_ctx(const char *cert, const char *key, SSL_CTX **out, char *err, size_t errlen) {
  char *cpem = NULL, *kpem = NULL;
  size_t clen = 0, klen = 0;
  SSL_CTX *ctx = NULL;
  X509 *leaf = NULL;
  int rc;

  ERR_clear_error();
  if ((rc = read_file(cert, "certificate", &cpem, &clen, err, errlen)) < 0 ||
      (rc = read_file(key, "key", &kpem, &klen, err, errlen)) < 0)
    goto out;
  ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) {
    say(err, errlen, "cannot make a TLS context: %s", take_reason());
    rc = -ENOMEM;
    goto out;
  }
  /* TLS 1.2 at least, AEAD suites with forward secrecy for 1.2 (1.3 has
   * only such), chosen by the server; no renegotiation (a client could make
   * the server do a handshake's work again and again), no compression
   * (CRIME). No session cache: resumption goes by tickets, which cost the
   * server no memory per client. */
  if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
      !SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20")) {
    say(err, errlen, "cannot make a TLS context: %s", take_reason());
    rc = -EINVAL;
    goto out;
  }
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                               SSL_OP_PRIORITIZE_CHACHA | SSL_OP_NO_COMPRESSION);
  /* Output leaves through the BIO at once and tls_conn_write hands over at
   * most one record, so partial writes never happen; the modes say that a
   * retried write may come from another buffer and let idle connections
   * give back their record buffers. */
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_ENABLE_PARTIAL_WRITE);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  if ((rc = use_cert(ctx, cert, cpem, clen, &leaf, err, errlen)) < 0 ||
      (rc = use_key(ctx, leaf, cert, key, kpem, klen, err, errlen)) < 0)
    goto out;
  *out = ctx;
  ctx = NULL;
out:
  X509_free(leaf);
  SSL_CTX_free(ctx);
  free_file(cpem, clen);
  free_file(kpem, klen);
  ERR_clear_error();
  return rc;
}

int tls_server_new(const char *cert, const char *key, tls_server **out, char *err, size_t errlen) {
  tls_server *t;
  SSL_CTX *ctx;
  int rc;

  if ((rc = make_ctx(cert, key, &ctx, err, errlen)) < 0)
    return rc;
  t = malloc(sizeof(*t));
  if (!t) {
    SSL_CTX_free(ctx);
    say(err, errlen, "%s", os_strerror(ENOMEM));
    return -ENOMEM;
  }
  os_mutex_init(&t->mu);
  t->ctx = ctx;
  *out = t;
  return 0;
}

int tls_server_reload(tls_server *t, const char *cert, const char *key, char *err, size_t errlen) {
  SSL_CTX *ctx, *old;
  int rc;

  if ((rc = make_ctx(cert, key, &ctx, err, errlen)) < 0)
    return rc;
  os_mutex_lock(&t->mu);
  old = t->ctx;
  t->ctx = ctx;
  os_mutex_unlock(&t->mu);
  SSL_CTX_free(old); /* the connections made on it hold references */
  return 0;
}

void tls_server_free(tls_server *t) {
  if (!t)
    return;
  SSL_CTX_free(t->ctx);
  os_mutex_destroy(&t->mu);
  free(t);
}

int tls_check_files(const char *cert, const char *key, char *err, size_t errlen) {
  SSL_CTX *ctx;
  int rc = make_ctx(cert, key, &ctx, err, errlen);

  if (rc == 0)
    SSL_CTX_free(ctx);
  return rc;
}

/* ---- connections ---- */

tls_conn *tls_conn_new(tls_server *t) {
  tls_conn *c;
  SSL_CTX *ctx;
  BIO *b;

  os_once(&bio_once, make_bio_method);
  if (!bio_method || !(c = calloc(1, sizeof(*c))))
    return NULL;
  /* Only the reference is taken under the lock; SSL_new takes its own. */
  os_mutex_lock(&t->mu);
  ctx = t->ctx;
  SSL_CTX_up_ref(ctx);
  os_mutex_unlock(&t->mu);
  ERR_clear_error();
  c->ssl = SSL_new(ctx);
  SSL_CTX_free(ctx);
  b = c->ssl ? BIO_new(bio_method) : NULL;
  if (!b) {
    SSL_free(c->ssl);
    free(c);
    ERR_clear_error();
    return NULL;
  }
  BIO_set_data(b, c);
  BIO_set_init(b, 1);
  SSL_set_bio(c->ssl, b, b); /* one reference, for both directions */
  SSL_set_accept_state(c->ssl);
  return c;
}

void tls_conn_free(tls_conn *c) {
  if (!c)
    return;
  c->io = NULL; /* SSL_free sends nothing, but if it did, it would go nowhere */
  SSL_free(c->ssl);
  free(c);
}

/* What a failed SSL_* call (returning r) means: 0 when it wants more input,
 * 1 when wire asked to stop, -ESHUTDOWN after close_notify, else -EPROTO
 * with c->err set. Empties the error queue. */
static int outcome(tls_conn *c, int r) {
  int e = SSL_get_error(c->ssl, r);

  if (c->stop) {
    ERR_clear_error();
    return 1;
  }
  switch (e) {
  case SSL_ERROR_WANT_READ:
    return 0;
  case SSL_ERROR_ZERO_RETURN:
    return -ESHUTDOWN;
  case SSL_ERROR_SSL:
    c->err = take_reason();
    break;
  default: /* SSL_ERROR_SYSCALL and the like: our BIO raises none */
    ERR_clear_error();
    c->err = "unexpected TLS failure";
    break;
  }
  c->failed = 1;
  return -EPROTO;
}

/* Follows the record boundaries of what is fed (RFC 8446 5.1: type,
 * version, a 16-bit length, then that many bytes). */
static void track_records(tls_conn *c, const unsigned char *p, size_t n) {
  while (n) {
    size_t k;
    if (!c->in_body) {
      k = 5u - c->hdr_have < n ? 5u - c->hdr_have : n;
      memcpy(c->hdr + c->hdr_have, p, k);
      c->hdr_have = (unsigned char)(c->hdr_have + k);
      if (c->hdr_have == 5) {
        c->rec_len = c->rec_left = (uint16_t)(c->hdr[3] << 8 | c->hdr[4]);
        c->in_body = c->rec_left > 0;
        if (!c->in_body)
          c->hdr_have = 0;
      }
    } else {
      k = c->rec_left < n ? c->rec_left : n;
      c->rec_left = (uint16_t)(c->rec_left - k);
      if (!c->rec_left)
        c->in_body = c->hdr_have = 0;
    }
    p += k;
    n -= k;
  }
}

size_t tls_conn_held(const tls_conn *c) {
  return c->in_body ? 5u + (size_t)(c->rec_len - c->rec_left) : c->hdr_have;
}

int tls_conn_feed(tls_conn *c, const char *data, size_t len, const tls_io *io) {
  const tls_io *prev = c->io;
  size_t n;
  int rc = 0;

  if (c->stop || c->in_stop)
    return 1;
  if (c->failed)
    return -EPROTO;
  track_records(c, (const unsigned char *)data, len);
  c->io = io;
  c->in = data;
  c->in_len = len;
  if (!SSL_is_init_finished(c->ssl)) {
    int r;
    ERR_clear_error();
    if ((r = SSL_do_handshake(c->ssl)) != 1) {
      rc = outcome(c, r);
      goto out;
    }
  }
  for (;;) {
    ERR_clear_error();
    if (!SSL_read_ex(c->ssl, read_buf, sizeof(read_buf), &n)) {
      rc = outcome(c, 0);
      break;
    }
    if (io->plain(io->ctx, (const char *)read_buf, n) != 0 || c->stop) {
      c->in_stop = 1; /* the rest of data is dropped: no later feed may go on */
      rc = 1;
      break;
    }
  }
out:
  c->in = NULL;
  c->in_len = 0;
  c->io = prev;
  return rc;
}

int tls_conn_ready(const tls_conn *c) { return SSL_is_init_finished(c->ssl); }

int tls_conn_partial(const tls_conn *c) { return SSL_has_pending(c->ssl); }

/* One SSL_write of up to a record. */
static int put(tls_conn *c, const unsigned char *p, size_t len) {
  size_t done = 0, w;

  while (done < len) {
    ERR_clear_error();
    if (!SSL_write_ex(c->ssl, p + done, len - done, &w)) {
      int rc = outcome(c, 0);
      if (rc == 0) { /* a write that wants a read: not with renegotiation off */
        c->err = "write wants a read";
        c->failed = 1;
        rc = -EPROTO;
      }
      return rc == -ESHUTDOWN ? -EPROTO : rc;
    }
    done += w;
  }
  return 0;
}

int tls_conn_write(tls_conn *c, const struct iovec *iov, int n, const tls_io *io) {
  const tls_io *prev = c->io;
  size_t fill = 0;
  int rc = 0;

  if (c->stop)
    return 1;
  if (c->failed)
    return -EPROTO;
  if (!SSL_is_init_finished(c->ssl)) {
    c->err = "handshake not complete";
    return -EPROTO;
  }
  if (c->shut) { /* refused here: OpenSSL would call it fatal */
    c->err = "protocol is shutdown";
    return -EPROTO;
  }
  c->io = io;
  for (int i = 0; i < n && rc == 0; i++) {
    const unsigned char *p = iov[i].iov_base;
    size_t len = iov[i].iov_len;

    while (len > 0 && rc == 0) {
      size_t k;
      if (fill == 0 && len >= RECORD) { /* a whole record straight from the piece */
        rc = put(c, p, RECORD);
        p += RECORD;
        len -= RECORD;
        continue;
      }
      k = RECORD - fill < len ? RECORD - fill : len;
      memcpy(stage_buf + fill, p, k);
      fill += k;
      p += k;
      len -= k;
      if (fill == RECORD) {
        rc = put(c, stage_buf, fill);
        fill = 0;
      }
    }
  }
  if (rc == 0 && fill > 0)
    rc = put(c, stage_buf, fill);
  c->io = prev;
  return rc;
}

int tls_conn_shutdown(tls_conn *c, const tls_io *io) {
  const tls_io *prev = c->io;
  int r, rc = 0;

  if (c->shut || c->stop)
    return 0;
  c->shut = 1;
  if (c->failed)
    return -EPROTO;
  if (!SSL_is_init_finished(c->ssl)) { /* no keys yet to send it with */
    c->err = "handshake not complete";
    return -EPROTO;
  }
  c->io = io;
  ERR_clear_error();
  r = SSL_shutdown(c->ssl); /* 0: sent; 1: the peer's had come already */
  if (r < 0) {
    rc = outcome(c, r);
    if (rc == 1)
      rc = 0; /* handed to wire, which is closing anyway */
    else if (rc == 0 || rc == -ESHUTDOWN) {
      c->err = "shutdown failed";
      rc = -EPROTO;
    }
  }
  c->io = prev;
  return rc;
}

const char *tls_conn_error(const tls_conn *c) { return c->err ? c->err : ""; }

const char *tls_conn_version(const tls_conn *c) {
  return SSL_is_init_finished(c->ssl) ? SSL_get_version(c->ssl) : "";
}
