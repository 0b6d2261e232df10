/* Unit tests for the TLS layer (core/net/tls.c): an OpenSSL client on
 * memory BIOs talks to a tls_conn through its two callbacks. The
 * certificates are made here at start (EC P-256, self-signed, plus a CA and
 * a leaf it signed for the chain case) in a temporary directory. Covers the
 * handshake, plaintext both ways, refusals, close_notify, rotation while
 * connections stay up, every error text, record coalescing, the callbacks'
 * stop, memory per idle connection, and reload racing connection setup. */
#include <errno.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "net/tls.h"
#include "testlib.h"

/* ---- OpenSSL's heap, counted ---- */

/* Live bytes OpenSSL allocated while a tls_conn_* call (server_in) was
 * under way on this thread: the server side's share of the heap, which the
 * client in the same process does not touch. */
static atomic_long server_heap;
static _Thread_local int server_in;
static int heap_counted; /* CRYPTO_set_mem_functions took */

static void *count_malloc(size_t n, const char *file, int line) {
  void *p = malloc(n);
  if (p && server_in)
    atomic_fetch_add(&server_heap, (long)malloc_usable_size(p));
  return p;
}

static void *count_realloc(void *p, size_t n, const char *file, int line) {
  long before = p ? (long)malloc_usable_size(p) : 0;
  void *q = realloc(p, n);
  if (server_in && (q || n == 0))
    atomic_fetch_add(&server_heap, (q ? (long)malloc_usable_size(q) : 0) - before);
  return q;
}

static void count_free(void *p, const char *file, int line) {
  if (p && server_in)
    atomic_fetch_sub(&server_heap, (long)malloc_usable_size(p));
  free(p);
}

/* ---- the files ---- */

/* Made before the suite runs, where Check's asserts cannot be used. */
#define need(cond)                                                                                 \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "test_tls: %s:%d: %s failed\n", __FILE__, __LINE__, #cond);                  \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)

static char dir[256];
static char cert_a[300], key_a[300], cert_b[300], key_b[300], chain[300], key_leaf[300],
    ca_cert[300], garbage[300], truncated[300], key_enc[300], missing[300];

static void path(char *out, const char *name) { snprintf(out, 300, "%s/%s", dir, name); }

static void write_text(const char *p, const char *text) {
  FILE *f = fopen(p, "wb");
  need(f != NULL);
  fputs(text, f);
  fclose(f);
}

static EVP_PKEY *new_key(void) {
  EVP_PKEY *k = EVP_EC_gen("P-256");
  need(k != NULL);
  return k;
}

/* A certificate for cn with k's public key, signed by issuer_key (self-
 * signed when issuer is NULL). */
static X509 *new_cert(const char *cn, EVP_PKEY *k, X509 *issuer, EVP_PKEY *issuer_key, int ca) {
  X509 *x = X509_new();
  X509_NAME *name = X509_NAME_new();
  static long serial = 1;

  need(x != NULL);
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 7 * 24 * 3600);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
  X509_set_subject_name(x, name);
  X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
  X509_set_pubkey(x, k);
  if (ca) {
    X509V3_CTX v3;
    X509_EXTENSION *e;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
    e = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, "critical,CA:TRUE");
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    e = X509V3_EXT_conf_nid(NULL, &v3, NID_key_usage, "critical,keyCertSign,cRLSign");
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
  }
  need(X509_sign(x, issuer_key ? issuer_key : k, EVP_sha256()) > 0);
  X509_NAME_free(name);
  return x;
}

static void save(const char *p, X509 *x1, X509 *x2, EVP_PKEY *k, const EVP_CIPHER *enc) {
  FILE *f = fopen(p, "wb");
  need(f != NULL);
  if (x1)
    need(PEM_write_X509(f, x1));
  if (x2)
    need(PEM_write_X509(f, x2));
  if (k)
    need(PEM_write_PrivateKey(f, k, enc, enc ? (unsigned char *)"secret" : NULL, enc ? 6 : 0, NULL,
                              NULL));
  fclose(f);
}

static void make_files(void) {
  EVP_PKEY *ka = new_key(), *kb = new_key(), *kca = new_key(), *kleaf = new_key();
  X509 *xa = new_cert("pier-a", ka, NULL, NULL, 0), *xb = new_cert("pier-b", kb, NULL, NULL, 0);
  X509 *xca = new_cert("pier-ca", kca, NULL, NULL, 1);
  X509 *xleaf = new_cert("pier-leaf", kleaf, xca, kca, 0);

  snprintf(dir, sizeof(dir), "%s/pier-tls-XXXXXX", test_tmpdir());
  need(mkdtemp(dir) != NULL);
  path(cert_a, "a.crt");
  path(key_a, "a.key");
  path(cert_b, "b.crt");
  path(key_b, "b.key");
  path(chain, "chain.crt");
  path(key_leaf, "leaf.key");
  path(ca_cert, "ca.crt");
  path(garbage, "garbage.pem");
  path(truncated, "truncated.pem");
  path(key_enc, "enc.key");
  path(missing, "missing.pem");
  save(cert_a, xa, NULL, NULL, NULL);
  save(key_a, NULL, NULL, ka, NULL);
  save(cert_b, xb, NULL, NULL, NULL);
  save(key_b, NULL, NULL, kb, NULL);
  save(chain, xleaf, xca, NULL, NULL);
  save(key_leaf, NULL, NULL, kleaf, NULL);
  save(ca_cert, xca, NULL, NULL, NULL);
  save(key_enc, NULL, NULL, ka, EVP_aes_128_cbc());
  write_text(garbage, "GET / HTTP/1.1\r\n\r\n");
  write_text(truncated, "-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n");
  X509_free(xa);
  X509_free(xb);
  X509_free(xca);
  X509_free(xleaf);
  EVP_PKEY_free(ka);
  EVP_PKEY_free(kb);
  EVP_PKEY_free(kca);
  EVP_PKEY_free(kleaf);
}

/* ---- a client on memory BIOs, and the server side's callbacks ---- */

typedef struct bytes {
  unsigned char *p;
  size_t len, cap;
} bytes;

static void bytes_add(bytes *b, const void *d, size_t n) {
  if (b->len + n > b->cap) {
    b->cap = (b->len + n) * 2;
    b->p = realloc(b->p, b->cap);
    ck_assert_ptr_nonnull(b->p);
  }
  memcpy(b->p + b->len, d, n);
  b->len += n;
}

typedef struct peer {
  tls_conn *c;
  tls_io io;
  SSL_CTX *cctx;
  SSL *cli;
  BIO *to_cli;   /* the client's read BIO: where the server's wire goes */
  BIO *from_cli; /* the client's write BIO */
  bytes plain;   /* what the server delivered */
  bytes wire;    /* all the server sent */
  size_t wire_calls;
  int wire_stop;  /* wire returns non-zero from this call on (0: never) */
  int plain_stop; /* plain returns non-zero */
  int echo;       /* plain writes what it got back through tls_conn_write */
  int echo_rc;
  size_t chunk; /* feed the client's bytes in pieces of this size (0: all) */
} peer;

static int on_wire(void *ctx, const char *data, size_t len) {
  peer *p = ctx;
  p->wire_calls++;
  if (p->wire_stop && p->wire_calls >= (size_t)p->wire_stop)
    return 1;
  bytes_add(&p->wire, data, len);
  server_in--; /* the client's BIO grows: not the server's heap */
  ck_assert_int_eq(BIO_write(p->to_cli, data, (int)len), (int)len);
  server_in++;
  return 0;
}

static int on_plain(void *ctx, const char *data, size_t len) {
  peer *p = ctx;
  bytes_add(&p->plain, data, len);
  if (p->echo) {
    struct iovec v = {(void *)data, len};
    p->echo_rc = tls_conn_write(p->c, &v, 1, &p->io);
  }
  return p->plain_stop;
}

static SSL_CTX *client_ctx(int max_version) {
  SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
  X509_STORE *store;
  ck_assert_ptr_nonnull(cctx);
  /* Trusts the two self-signed certificates and the CA. */
  store = SSL_CTX_get_cert_store(cctx);
  ck_assert(X509_STORE_load_file(store, cert_a));
  ck_assert(X509_STORE_load_file(store, cert_b));
  ck_assert(X509_STORE_load_file(store, ca_cert));
  SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, NULL);
  if (max_version) {
    SSL_CTX_set_max_proto_version(cctx, max_version);
    if (max_version < TLS1_2_VERSION) {
      /* OpenSSL 3 offers TLS < 1.2 only at security level 0. */
      SSL_CTX_set_min_proto_version(cctx, TLS1_VERSION);
      SSL_CTX_set_security_level(cctx, 0);
      ck_assert(SSL_CTX_set_cipher_list(cctx, "DEFAULT:@SECLEVEL=0"));
    }
  }
  return cctx;
}

static void peer_open(peer *p, tls_server *t, int max_version) {
  memset(p, 0, sizeof(*p));
  server_in++;
  p->c = tls_conn_new(t);
  server_in--;
  ck_assert_ptr_nonnull(p->c);
  p->io.wire = on_wire;
  p->io.plain = on_plain;
  p->io.ctx = p;
  p->cctx = client_ctx(max_version);
  p->cli = SSL_new(p->cctx);
  ck_assert_ptr_nonnull(p->cli);
  p->to_cli = BIO_new(BIO_s_mem());
  p->from_cli = BIO_new(BIO_s_mem());
  BIO_set_mem_eof_return(p->to_cli, -1);
  BIO_set_mem_eof_return(p->from_cli, -1);
  SSL_set_bio(p->cli, p->to_cli, p->from_cli);
  SSL_set_connect_state(p->cli);
}

static void peer_close(peer *p) {
  server_in++;
  tls_conn_free(p->c);
  server_in--;
  SSL_free(p->cli);
  SSL_CTX_free(p->cctx);
  free(p->plain.p);
  free(p->wire.p);
  ERR_clear_error();
}

static int feed(peer *p, const void *data, size_t len) {
  int rc;
  server_in++;
  rc = tls_conn_feed(p->c, data, len, &p->io);
  server_in--;
  return rc;
}

static int srv_write(peer *p, const struct iovec *iov, int n) {
  int rc;
  server_in++;
  rc = tls_conn_write(p->c, iov, n, &p->io);
  server_in--;
  return rc;
}

static int srv_shutdown(peer *p) {
  int rc;
  server_in++;
  rc = tls_conn_shutdown(p->c, &p->io);
  server_in--;
  return rc;
}

/* Feeds everything the client wrote so far (in pieces of p->chunk); the
 * first non-zero result, or 0. */
static int pump(peer *p) {
  char *data;
  long n = BIO_get_mem_data(p->from_cli, &data);
  size_t off = 0, step;
  int rc = 0;
  unsigned char *copy;

  if (n <= 0)
    return 0;
  copy = malloc((size_t)n);
  memcpy(copy, data, (size_t)n);
  (void)BIO_reset(p->from_cli);
  while (off < (size_t)n && rc == 0) {
    step = p->chunk && p->chunk < (size_t)n - off ? p->chunk : (size_t)n - off;
    rc = feed(p, copy + off, step);
    off += step;
  }
  free(copy);
  return rc;
}

/* Runs both sides until the handshake is done: 0, the feed's result, or
 * -1 when the client failed. */
static int handshake(peer *p) {
  for (int i = 0; i < 20; i++) {
    int r = SSL_do_handshake(p->cli), rc;
    if (r != 1 && SSL_get_error(p->cli, r) != SSL_ERROR_WANT_READ)
      return -1;
    if ((rc = pump(p)) != 0)
      return rc;
    if (r == 1 && tls_conn_ready(p->c))
      return 0;
  }
  return -2;
}

static void client_send(peer *p, const void *data, size_t len) {
  size_t w;
  ck_assert_int_eq(SSL_write_ex(p->cli, data, len, &w), 1);
  ck_assert_uint_eq(w, len);
}

/* Reads what the client can now; returns the SSL_read error that ended it
 * (SSL_ERROR_WANT_READ when all was read). */
static int client_recv(peer *p, bytes *out) {
  unsigned char buf[20000];
  size_t n;
  while (SSL_read_ex(p->cli, buf, sizeof(buf), &n))
    bytes_add(out, buf, n);
  return SSL_get_error(p->cli, 0);
}

static const char *peer_cn(peer *p, char *buf, size_t len) {
  X509 *x = SSL_get1_peer_certificate(p->cli);
  ck_assert_ptr_nonnull(x);
  X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, buf, (int)len);
  X509_free(x);
  return buf;
}

/* The TLS records in w from byte off: their count, the largest, and of the
 * given content type (-1: any) the count alone. */
static int records(const bytes *w, size_t off, size_t *largest) {
  int n = 0;
  *largest = 0;
  while (off + 5 <= w->len) {
    size_t len = ((size_t)w->p[off + 3] << 8) | w->p[off + 4];
    ck_assert_uint_le(off + 5 + len, w->len);
    if (len > *largest)
      *largest = len;
    off += 5 + len;
    n++;
  }
  ck_assert_uint_eq(off, w->len);
  return n;
}

static tls_server *server(const char *cert, const char *key) {
  tls_server *t = NULL;
  char err[512] = "";
  ck_assert_msg(tls_server_new(cert, key, &t, err, sizeof(err)) == 0, "%s", err);
  ck_assert_ptr_nonnull(t);
  return t;
}

/* ---- cases ---- */

START_TEST(test_tls_handshake_tls13) {
  tls_server *t = server(cert_a, key_a);
  peer p;
  char cn[64];

  peer_open(&p, t, 0);
  ck_assert_int_eq(tls_conn_ready(p.c), 0);
  ck_assert_str_eq(tls_conn_version(p.c), "");
  ck_assert_str_eq(tls_conn_error(p.c), "");
  /* Writing and closing before the handshake are refused. */
  {
    struct iovec v = {"early", 5};
    ck_assert_int_eq(srv_write(&p, &v, 1), -EPROTO);
    ck_assert_str_eq(tls_conn_error(p.c), "handshake not complete");
  }
  ck_assert_int_eq(handshake(&p), 0);
  ck_assert_int_eq(tls_conn_ready(p.c), 1);
  ck_assert_str_eq(tls_conn_version(p.c), "TLSv1.3");
  ck_assert_str_eq(SSL_get_version(p.cli), "TLSv1.3");
  ck_assert_str_eq(peer_cn(&p, cn, sizeof(cn)), "pier-a");
  ck_assert_int_eq(SSL_get_verify_result(p.cli), X509_V_OK);
  peer_close(&p);
  tls_server_free(t);
}
END_TEST

/* The handshake and data fed a byte at a time, then in odd pieces. */
START_TEST(test_tls_handshake_in_pieces) {
  tls_server *t = server(cert_a, key_a);
  peer p;
  bytes got = {0};

  peer_open(&p, t, 0);
  p.chunk = 1;
  ck_assert_int_eq(handshake(&p), 0);
  ck_assert_str_eq(tls_conn_version(p.c), "TLSv1.3");
  client_send(&p, "hello, server", 13);
  p.chunk = 7;
  ck_assert_int_eq(pump(&p), 0);
  ck_assert_uint_eq(p.plain.len, 13);
  ck_assert_int_eq(memcmp(p.plain.p, "hello, server", 13), 0);
  {
    struct iovec v = {"hello, client", 13};
    ck_assert_int_eq(srv_write(&p, &v, 1), 0);
  }
  ck_assert_int_eq(client_recv(&p, &got), SSL_ERROR_WANT_READ);
  ck_assert_uint_eq(got.len, 13);
  ck_assert_int_eq(memcmp(got.p, "hello, client", 13), 0);
  free(got.p);
  peer_close(&p);
  tls_server_free(t);
}
END_TEST

START_TEST(test_tls_tls12_accepted) {
  tls_server *t = server(cert_a, key_a);
  peer p;
  bytes got = {0};
  struct iovec v = {"pong", 4};

  peer_open(&p, t, TLS1_2_VERSION);
  ck_assert_int_eq(handshake(&p), 0);
  ck_assert_str_eq(tls_conn_version(p.c), "TLSv1.2");
  /* An AEAD suite with forward secrecy. */
  ck_assert_str_eq(SSL_CIPHER_get_name(SSL_get_current_cipher(p.cli)),
                   "ECDHE-ECDSA-AES256-GCM-SHA384");
  client_send(&p, "ping", 4);
  ck_assert_int_eq(pump(&p), 0);
  ck_assert_uint_eq(p.plain.len, 4);
  ck_assert_int_eq(memcmp(p.plain.p, "ping", 4), 0);
  ck_assert_int_eq(srv_write(&p, &v, 1), 0);
  ck_assert_int_eq(client_recv(&p, &got), SSL_ERROR_WANT_READ);
  ck_assert_uint_eq(got.len, 4);
  ck_assert_int_eq(memcmp(got.p, "pong", 4), 0);
  /* Renegotiation is refused: the client's hello gets a no_renegotiation
   * alert (a warning, a record of its own), and no new handshake. */
  {
    size_t before = p.wire.len, largest;
    ck_assert_int_eq(SSL_renegotiate(p.cli), 1);
    ck_assert_int_eq(SSL_do_handshake(p.cli), -1);
    ck_assert_int_eq(pump(&p), 0);
    ck_assert_int_eq(records(&p.wire, before, &largest), 1);
    ck_assert_uint_eq(p.wire.p[before], 21); /* alert */
    ck_assert_int_eq(tls_conn_ready(p.c), 1);
    ck_assert_str_eq(tls_conn_error(p.c), "");
  }
  free(got.p);
  peer_close(&p);
  tls_server_free(t);
}
END_TEST

/* 1 MiB each way: from the client in records of assorted sizes fed in
 * pieces; from the server in one tls_conn_write of pieces of assorted sizes,
 * which goes out as 64 full records. */
START_TEST(test_tls_plaintext_1mib_both_ways) {
  enum { TOTAL = 1 << 20 };
  tls_server *t = server(cert_a, key_a);
  unsigned char *src = malloc(TOTAL);
  struct iovec iov[512];
  size_t off = 0, largest, wire_before, step;
  int n = 0;
  peer p;
  bytes got = {0};

  for (size_t k = 0; k < TOTAL; k++)
    src[k] = test_pattern(11, k);
  peer_open(&p, t, 0);
  ck_assert_int_eq(handshake(&p), 0);

  /* Client to server. */
  for (off = 0, step = 1; off < TOTAL; off += step, step = step * 3 + 1) {
    if (step > 40000)
      step = 1;
    if (step > TOTAL - off)
      step = TOTAL - off;
    client_send(&p, src + off, step);
    p.chunk = step % 5000 + 1;
    ck_assert_int_eq(pump(&p), 0);
  }
  ck_assert_uint_eq(p.plain.len, TOTAL);
  ck_assert_int_eq(memcmp(p.plain.p, src, TOTAL), 0);

  /* Server to client. */
  for (off = 0, step = 1; off < TOTAL; off += step, step = step * 5 % 9001 + 1) {
    if (step > TOTAL - off)
      step = TOTAL - off;
    ck_assert_int_lt(n, 512);
    iov[n].iov_base = src + off;
    iov[n++].iov_len = step;
  }
  wire_before = p.wire.len;
  ck_assert_int_eq(srv_write(&p, iov, n), 0);
  ck_assert_int_eq(records(&p.wire, wire_before, &largest), TOTAL / 16384);
  ck_assert_uint_le(largest, 16384 + 256);
  ck_assert_int_eq(client_recv(&p, &got), SSL_ERROR_WANT_READ);
  ck_assert_uint_eq(got.len, TOTAL);
  ck_assert_int_eq(memcmp(got.p, src, TOTAL), 0);

  /* A piece of a record and more straight from one large piece. */
  got.len = 0;
  iov[0].iov_base = src;
  iov[0].iov_len = 100;
  iov[1].iov_base = src + 100;
  iov[1].iov_len = 3 * 16384;
  wire_before = p.wire.len;
  ck_assert_int_eq(srv_write(&p, iov, 2), 0);
  ck_assert_int_eq(records(&p.wire, wire_before, &largest), 4);
  ck_assert_int_eq(client_recv(&p, &got), SSL_ERROR_WANT_READ);
  ck_assert_uint_eq(got.len, 100 + 3 * 16384);
  ck_assert_int_eq(memcmp(got.p, src, got.len), 0);
  free(got.p);
  free(src);
  peer_close(&p);
  tls_server_free(t);
}
END_TEST

/* A TLS 1.3 KeyUpdate from the client, answered by the server's own, and
 * data flowing on the new keys both ways. */
START_TEST(test_tls_key_update) {
  tls_server *t = server(cert_a, key_a);
  struct iovec v = {"after", 5};
  peer p;
  bytes got = {0};

  peer_open(&p, t, 0);
  ck_assert_int_eq(handshake(&p), 0);
  ck_assert_int_eq(SSL_key_update(p.cli, SSL_KEY_UPDATE_REQUESTED), 1);
  client_send(&p, "before", 6);
  ck_assert_int_eq(pump(&p), 0);
  ck_assert_uint_eq(p.plain.len, 6);
  ck_assert_int_eq(memcmp(p.plain.p, "before", 6), 0);
  ck_assert_int_eq(srv_write(&p, &v, 1), 0);
  ck_assert_int_eq(client_recv(&p, &got), SSL_ERROR_WANT_READ);
  ck_assert_uint_eq(got.len, 5);
  ck_assert_int_eq(memcmp(got.p, "after", 5), 0);
  ck_assert_str_eq(tls_conn_error(p.c), "");
  free(got.p);
  peer_close(&p);
  tls_server_free(t);
}
END_TEST

/* 100 queued messages of 10 bytes become one record. */
START_TEST(test_tls_write_coalesces) {
  tls_server *t = server(cert_a, key_a);
  char msg[100][10];
  struct iovec iov[100];
  size_t before, calls, largest;
  peer p;
  bytes got = {0};

  peer_open(&p, t, 0);
  ck_assert_int_eq(handshake(&p), 0);
  for (int i = 0; i < 100; i++) {
    snprintf(msg[i], sizeof(msg[i]), "m%03d.....", i);
    iov[i].iov_base = msg[i];
    iov[i].iov_len = 10;
  }
  before = p.wire.len;
  calls = p.wire_calls;
  ck_assert_int_eq(srv_write(&p, iov, 100), 0);
  ck_assert_uint_eq(p.wire_calls - calls, 1);
  ck_assert_uint_lt(p.wire.len - before, 100 * (10 + 22));
  ck_assert_int_eq(records(&p.wire, before, &largest), 1);
  /* TLS 1.3 with AES-GCM: header 5, content type 1, tag 16. */
  ck_assert_uint_eq(p.wire.len - before, 5 + 1000 + 1 + 16);
  ck_assert_int_eq(client_recv(&p, &got), SSL_ERROR_WANT_READ);
  ck_assert_uint_eq(got.len, 1000);
  for (int i = 0; i < 100; i++)
    ck_assert_int_eq(memcmp(got.p + 10 * i, msg[i], 10), 0);
  /* Nothing to write, nothing sent. */
  calls = p.wire_calls;
  ck_assert_int_eq(srv_write(&p, iov, 0), 0);
  ck_assert_uint_eq(p.wire_calls, calls);
  free(got.p);
  peer_close(&p);
  tls_server_free(t);
}
END_TEST

/* plain may write to the connection it is delivering for. */
START_TEST(test_tls_write_from_plain) {
  tls_server *t = server(cert_a, key_a);
  peer p;
  bytes got = {0};

  peer_open(&p, t, 0);
  ck_assert_int_eq(handshake(&p), 0);
  p.echo = 1;
  client_send(&p, "one", 3);
  client_send(&p, "two", 3);
  ck_assert_int_eq(pump(&p), 0);
  ck_assert_int_eq(p.echo_rc, 0);
  ck_assert_int_eq(client_recv(&p, &got), SSL_ERROR_WANT_READ);
  ck_assert_uint_eq(got.len, 6);
  ck_assert_int_eq(memcmp(got.p, "onetwo", 6), 0);
  free(got.p);
  peer_close(&p);
  tls_server_free(t);
}
END_TEST

START_TEST(test_tls_old_client_refused) {
  tls_server *t = server(cert_a, key_a);
  peer p;
  int r;

  peer_open(&p, t, TLS1_1_VERSION);
  ck_assert_int_eq(handshake(&p), -EPROTO);
  ck_assert_str_eq(tls_conn_error(p.c), "unsupported protocol");
  ck_assert_int_eq(tls_conn_ready(p.c), 0);
  ck_assert_str_eq(tls_conn_version(p.c), "");
  /* A protocol_version alert went out, and the client sees it. */
  ck_assert_uint_eq(p.wire.len, 7);
  ck_assert_uint_eq(p.wire.p[0], 21);                             /* alert */
  ck_assert_uint_eq(p.wire.p[6], SSL_AD_PROTOCOL_VERSION & 0xff); /* protocol_version */
  r = SSL_do_handshake(p.cli);
  ck_assert_int_eq(SSL_get_error(p.cli, r), SSL_ERROR_SSL);
  ERR_clear_error();
  /* The connection stays unusable, and says so. */
  ck_assert_int_eq(feed(&p, "\x16\x03\x01", 3), -EPROTO);
  ck_assert_str_eq(tls_conn_error(p.c), "unsupported protocol");
  {
    struct iovec v = {"x", 1};
    ck_assert_int_eq(srv_write(&p, &v, 1), -EPROTO);
  }
  ck_assert_int_eq(srv_shutdown(&p), -EPROTO);
  peer_close(&p);
  tls_server_free(t);
}
END_TEST

START_TEST(test_tls_plain_http_refused) {
  static const char get[] = "GET / HTTP/1.1\r\n\r\n";
  tls_server *t = server(cert_a, key_a);
  peer p;

  peer_open(&p, t, 0);
  ck_assert_int_eq(feed(&p, get, sizeof(get) - 1), -EPROTO);
  ck_assert_str_eq(tls_conn_error(p.c), "http request");
  ck_assert_uint_eq(p.plain.len, 0);
  ck_assert_int_eq(tls_conn_ready(p.c), 0);
  peer_close(&p);

  /* Bytes that are no TLS record at all. */
  peer_open(&p, t, 0);
  ck_assert_int_eq(feed(&p, "\x16\x09\x09\x00\x05hello", 10), -EPROTO);
  ck_assert_str_eq(tls_conn_error(p.c), "wrong version number");
  peer_close(&p);

  /* Nothing of this leaks into the next connection on this thread. */
  ck_assert_uint_eq(ERR_peek_error(), 0);
  peer_open(&p, t, 0);
  ck_assert_int_eq(handshake(&p), 0);
  ck_assert_str_eq(tls_conn_error(p.c), "");
  peer_close(&p);
  tls_server_free(t);
}
END_TEST

/* A record that does not decrypt after the handshake. */
START_TEST(test_tls_corrupt_record_refused) {
  tls_server *t = server(cert_a, key_a);
  peer p;
  char *data;
  long n;

  peer_open(&p, t, 0);
  ck_assert_int_eq(handshake(&p), 0);
  client_send(&p, "secret", 6);
  n = BIO_get_mem_data(p.from_cli, &data);
  ck_assert_int_gt(n, 10);
  data[n - 3] ^= 1;
  ck_assert_int_eq(pump(&p), -EPROTO);
  ck_assert_str_eq(tls_conn_error(p.c), "decryption failed or bad record mac");
  ck_assert_uint_eq(p.plain.len, 0);
  peer_close(&p);
  tls_server_free(t);
}
END_TEST

START_TEST(test_tls_close_notify_from_client) {
  tls_server *t = server(cert_a, key_a);
  peer p;
  bytes got = {0};
  size_t calls;

  peer_open(&p, t, 0);
  ck_assert_int_eq(handshake(&p), 0);
  client_send(&p, "bye", 3);
  ck_assert_int_eq(SSL_shutdown(p.cli), 0);
  ck_assert_int_eq(pump(&p), -ESHUTDOWN);
  ck_assert_uint_eq(p.plain.len, 3);
  ck_assert_int_eq(memcmp(p.plain.p, "bye", 3), 0);
  ck_assert_str_eq(tls_conn_error(p.c), "");
  /* The server answers with its own close_notify, once. */
  ck_assert_int_eq(srv_shutdown(&p), 0);
  calls = p.wire_calls;
  ck_assert_int_eq(srv_shutdown(&p), 0);
  ck_assert_uint_eq(p.wire_calls, calls);
  ck_assert_int_eq(client_recv(&p, &got), SSL_ERROR_ZERO_RETURN);
  ck_assert_int_eq(SSL_shutdown(p.cli), 1);
  ck_assert_uint_eq(got.len, 0);
  free(got.p);
  peer_close(&p);
  tls_server_free(t);
}
END_TEST

START_TEST(test_tls_close_notify_from_server) {
  tls_server *t = server(cert_a, key_a);
  peer p;
  bytes got = {0};
  struct iovec v = {"last words", 10};
  size_t calls;

  peer_open(&p, t, 0);
  /* Before the handshake there is nothing to send it with. */
  calls = p.wire_calls;
  ck_assert_int_eq(srv_shutdown(&p), -EPROTO);
  ck_assert_str_eq(tls_conn_error(p.c), "handshake not complete");
  ck_assert_uint_eq(p.wire_calls, calls);
  peer_close(&p);

  peer_open(&p, t, 0);
  ck_assert_int_eq(handshake(&p), 0);
  ck_assert_int_eq(srv_write(&p, &v, 1), 0);
  calls = p.wire_calls;
  ck_assert_int_eq(srv_shutdown(&p), 0);
  ck_assert_uint_gt(p.wire_calls, calls);
  calls = p.wire_calls;
  ck_assert_int_eq(srv_shutdown(&p), 0);
  ck_assert_uint_eq(p.wire_calls, calls);
  ck_assert_int_eq(client_recv(&p, &got), SSL_ERROR_ZERO_RETURN);
  ck_assert_uint_eq(got.len, 10);
  ck_assert_int_eq(memcmp(got.p, "last words", 10), 0);
  /* No writes after close_notify went out. */
  ck_assert_int_eq(srv_write(&p, &v, 1), -EPROTO);
  ck_assert_uint_eq(p.wire_calls, calls);
  /* What the client still sends before its own close_notify arrives (a
   * close_notify closes one direction). */
  client_send(&p, "ack", 3);
  ck_assert_int_eq(SSL_shutdown(p.cli), 1);
  ck_assert_int_eq(pump(&p), -ESHUTDOWN);
  ck_assert_uint_eq(p.plain.len, 3);
  ck_assert_int_eq(memcmp(p.plain.p, "ack", 3), 0);
  free(got.p);
  peer_close(&p);
  tls_server_free(t);
}
END_TEST

/* A rotation: new connections get the new certificate, the one made before
 * keeps working on the old; a failed reload changes nothing. */
START_TEST(test_tls_reload_rotates) {
  tls_server *t = server(cert_a, key_a);
  peer p1, p2, p3;
  char cn[64], err[512];
  bytes got = {0};
  struct iovec v = {"still here", 10};

  peer_open(&p1, t, 0);
  ck_assert_int_eq(handshake(&p1), 0);
  ck_assert_str_eq(peer_cn(&p1, cn, sizeof(cn)), "pier-a");

  ck_assert_int_eq(tls_server_reload(t, cert_b, key_b, err, sizeof(err)), 0);
  peer_open(&p2, t, 0);
  ck_assert_int_eq(handshake(&p2), 0);
  ck_assert_str_eq(peer_cn(&p2, cn, sizeof(cn)), "pier-b");

  /* The old connection, both ways. */
  client_send(&p1, "old conn", 8);
  ck_assert_int_eq(pump(&p1), 0);
  ck_assert_uint_eq(p1.plain.len, 8);
  ck_assert_int_eq(memcmp(p1.plain.p, "old conn", 8), 0);
  ck_assert_int_eq(srv_write(&p1, &v, 1), 0);
  ck_assert_int_eq(client_recv(&p1, &got), SSL_ERROR_WANT_READ);
  ck_assert_uint_eq(got.len, 10);
  ck_assert_int_eq(memcmp(got.p, "still here", 10), 0);

  /* A bad key: the error names it, and new connections still get b. */
  ck_assert_int_eq(tls_server_reload(t, cert_a, garbage, err, sizeof(err)), -EINVAL);
  {
    char want[600];
    snprintf(want, sizeof(want), "cannot load key \"%s\": no start line", garbage);
    ck_assert_str_eq(err, want);
  }
  ck_assert_int_eq(tls_server_reload(t, cert_a, key_b, err, sizeof(err)), -EINVAL);
  ck_assert_int_eq(tls_server_reload(t, missing, key_a, err, sizeof(err)), -ENOENT);
  ck_assert_uint_eq(ERR_peek_error(), 0);
  peer_open(&p3, t, 0);
  ck_assert_int_eq(handshake(&p3), 0);
  ck_assert_str_eq(peer_cn(&p3, cn, sizeof(cn)), "pier-b");

  /* Freed in any order, and the server after all of them. */
  peer_close(&p2);
  peer_close(&p1);
  peer_close(&p3);
  free(got.p);
  tls_server_free(t);
}
END_TEST

/* Resumption by session ticket (there is no server-side session cache); a
 * reload makes new ticket keys, so an older ticket means a full handshake. */
START_TEST(test_tls_ticket_resumes) {
  tls_server *t = server(cert_a, key_a);
  SSL_SESSION *sess;
  char err[512];
  peer p;
  bytes got = {0};

  peer_open(&p, t, 0);
  ck_assert_int_eq(handshake(&p), 0);
  ck_assert_int_eq(client_recv(&p, &got), SSL_ERROR_WANT_READ); /* the tickets */
  sess = SSL_get1_session(p.cli);
  ck_assert_ptr_nonnull(sess);
  ck_assert_int_eq(SSL_SESSION_is_resumable(sess), 1);
  ck_assert_int_eq(SSL_session_reused(p.cli), 0);
  SSL_shutdown(p.cli); /* (else OpenSSL marks the session not resumable) */
  peer_close(&p);

  peer_open(&p, t, 0);
  ck_assert_int_eq(SSL_set_session(p.cli, sess), 1);
  ck_assert_int_eq(handshake(&p), 0);
  ck_assert_int_eq(SSL_session_reused(p.cli), 1);
  peer_close(&p);

  ck_assert_int_eq(tls_server_reload(t, cert_a, key_a, err, sizeof(err)), 0);
  peer_open(&p, t, 0);
  ck_assert_int_eq(SSL_set_session(p.cli, sess), 1);
  ck_assert_int_eq(handshake(&p), 0);
  ck_assert_int_eq(SSL_session_reused(p.cli), 0);
  peer_close(&p);
  SSL_SESSION_free(sess);
  free(got.p);
  tls_server_free(t);
}
END_TEST

/* A chain file, leaf first: the client gets the chain and verifies it
 * trusting only the CA. */
START_TEST(test_tls_chain_sent) {
  tls_server *t = server(chain, key_leaf);
  peer p;
  char cn[64];

  peer_open(&p, t, 0);
  ck_assert_int_eq(handshake(&p), 0);
  ck_assert_str_eq(peer_cn(&p, cn, sizeof(cn)), "pier-leaf");
  ck_assert_int_eq(sk_X509_num(SSL_get_peer_cert_chain(p.cli)), 2);
  ck_assert_int_eq(SSL_get_verify_result(p.cli), X509_V_OK);
  peer_close(&p);
  tls_server_free(t);
}
END_TEST

static void expect_error(const char *cert, const char *key, int rc, const char *fmt, const char *a,
                         const char *b) {
  char want[700], err[700], err2[700];
  tls_server *t = (tls_server *)&err; /* must stay untouched */

  snprintf(want, sizeof(want), fmt, a, b);
  memset(err, 0, sizeof(err));
  ck_assert_int_eq(tls_server_new(cert, key, &t, err, sizeof(err)), rc);
  ck_assert_str_eq(err, want);
  ck_assert_ptr_eq(t, (tls_server *)&err);
  ck_assert_int_eq(tls_check_files(cert, key, err2, sizeof(err2)), rc);
  ck_assert_str_eq(err2, want);
  ck_assert_uint_eq(ERR_peek_error(), 0);
}

START_TEST(test_tls_file_errors) {
  char err[16];
  const char *nf = "No such file or directory";

  expect_error(missing, key_a, -ENOENT, "cannot open certificate \"%s\": %s", missing, nf);
  expect_error(cert_a, missing, -ENOENT, "cannot open key \"%s\": %s", missing, nf);
  expect_error(garbage, key_a, -EINVAL, "cannot load certificate \"%s\": no start line%s", garbage,
               "");
  /* A key where the certificate should be. */
  expect_error(key_a, key_a, -EINVAL, "cannot load certificate \"%s\": no start line%s", key_a, "");
  expect_error(truncated, key_a, -EINVAL, "cannot load certificate \"%s\": too long%s", truncated,
               "");
  expect_error(cert_a, garbage, -EINVAL, "cannot load key \"%s\": no start line%s", garbage, "");
  expect_error(cert_a, cert_b, -EINVAL, "cannot load key \"%s\": no start line%s", cert_b, "");
  expect_error(cert_a, key_b, -EINVAL, "key \"%s\" does not match certificate \"%s\"", key_b,
               cert_a);
  expect_error(chain, key_a, -EINVAL, "key \"%s\" does not match certificate \"%s\"", key_a, chain);
  expect_error(cert_a, key_enc, -EINVAL,
               "cannot load key \"%s\": encrypted with a passphrase (an unencrypted key is "
               "needed)%s",
               key_enc, "");
  expect_error(dir, key_a, -EISDIR, "cannot read certificate \"%s\": Is a directory%s", dir, "");
  {
    char big[300];
    FILE *f;
    path(big, "big.pem");
    f = fopen(big, "wb");
    ck_assert_ptr_nonnull(f);
    /* Exactly 1 MiB is read (and is no certificate), a byte more is not. */
    for (int i = 0; i < (1 << 20) + 1; i++)
      fputc('\n', f);
    fclose(f);
    expect_error(big, key_a, -EINVAL, "cannot load certificate \"%s\": larger than 1 MiB%s", big,
                 "");
    ck_assert_int_eq(truncate(big, 1 << 20), 0);
    expect_error(big, key_a, -EINVAL, "cannot load certificate \"%s\": no start line%s", big, "");
  }
  if (geteuid() != 0) { /* root reads anything */
    char locked[300];
    path(locked, "locked.key");
    save(locked, NULL, NULL, NULL, NULL);
    ck_assert_int_eq(chmod(locked, 0), 0);
    expect_error(cert_a, locked, -EACCES, "cannot open key \"%s\": %s", locked,
                 "Permission denied");
  }
  /* The good pair passes; a short or absent err buffer is fine. */
  ck_assert_int_eq(tls_check_files(cert_a, key_a, NULL, 0), 0);
  ck_assert_int_eq(tls_check_files(chain, key_leaf, NULL, 0), 0);
  ck_assert_int_eq(tls_check_files(missing, key_a, NULL, 0), -ENOENT);
  ck_assert_int_eq(tls_check_files(missing, key_a, err, sizeof(err)), -ENOENT);
  ck_assert_str_eq(err, "cannot open cer");
}
END_TEST

/* A callback's stop: wire's during the handshake and a write, plain's in
 * the middle of the input; every call after returns 1. */
START_TEST(test_tls_callbacks_stop) {
  tls_server *t = server(cert_a, key_a);
  peer p;
  struct iovec v = {"x", 1};

  peer_open(&p, t, 0);
  p.wire_stop = 1;
  ck_assert_int_eq(SSL_do_handshake(p.cli), -1);
  ck_assert_int_eq(pump(&p), 1);
  ck_assert_int_eq(feed(&p, "", 0), 1);
  ck_assert_int_eq(srv_shutdown(&p), 0);
  peer_close(&p);

  peer_open(&p, t, 0);
  ck_assert_int_eq(handshake(&p), 0);
  p.wire_stop = (int)p.wire_calls + 1;
  ck_assert_int_eq(srv_write(&p, &v, 1), 1);
  ck_assert_int_eq(srv_write(&p, &v, 1), 1);
  peer_close(&p);

  peer_open(&p, t, 0);
  ck_assert_int_eq(handshake(&p), 0);
  p.plain_stop = 1;
  client_send(&p, "first", 5);
  client_send(&p, "second", 6);
  ck_assert_int_eq(pump(&p), 1);
  ck_assert_uint_eq(p.plain.len, 5); /* nothing after the stop */
  ck_assert_int_eq(memcmp(p.plain.p, "first", 5), 0);
  ck_assert_int_eq(feed(&p, "", 0), 1);
  /* A stop from plain ends the input only: the session that is closing
   * still sends its last bytes and close_notify. */
  {
    bytes got = {0};
    p.wire.len = 0;
    ck_assert_int_eq(srv_write(&p, &v, 1), 0);
    ck_assert_int_eq(client_recv(&p, &got), SSL_ERROR_WANT_READ);
    ck_assert_uint_eq(got.len, v.iov_len);
    ck_assert_int_eq(srv_shutdown(&p), 0);
    free(got.p);
  }
  peer_close(&p);
  tls_server_free(t);
}
END_TEST

/* One exchange each way: n bytes from the client, n from the server. */
static void exchange(peer *p, size_t n) {
  unsigned char *d = malloc(n);
  struct iovec v = {d, n};
  bytes got = {0};

  memset(d, 'e', n);
  p->plain.len = 0;
  client_send(p, d, n);
  ck_assert_int_eq(pump(p), 0);
  ck_assert_uint_eq(p->plain.len, n);
  ck_assert_int_eq(srv_write(p, &v, 1), 0);
  ck_assert_int_eq(client_recv(p, &got), SSL_ERROR_WANT_READ);
  ck_assert_uint_eq(got.len, n);
  p->wire.len = 0; /* (the client has it) */
  free(got.p);
  free(d);
}

/* What an idle connection costs after its handshake: the struct, and
 * OpenSSL's heap for it. No record buffer stays: after 64 KiB each way an
 * idle connection holds what it held after one byte each way. */
START_TEST(test_tls_idle_memory) {
  enum { N = 20 };
  tls_server *t = server(cert_a, key_a);
  static peer p[N];
  long before, small, large;

  if (!heap_counted) {
    fprintf(stderr, "test_tls_idle_memory: OpenSSL's allocations cannot be counted\n");
    tls_server_free(t);
    return;
  }
  /* A first connection sets up what OpenSSL keeps once per process and
   * thread (error queue, fetched algorithms); then the count starts. */
  peer_open(&p[0], t, 0);
  ck_assert_int_eq(handshake(&p[0]), 0);
  exchange(&p[0], 1);
  exchange(&p[0], 65536);
  peer_close(&p[0]);
  before = atomic_load(&server_heap);
  for (int i = 0; i < N; i++) {
    peer_open(&p[i], t, 0);
    ck_assert_int_eq(handshake(&p[i]), 0);
    exchange(&p[i], 1);
  }
  small = (atomic_load(&server_heap) - before) / N;
  for (int i = 0; i < N; i++)
    exchange(&p[i], 65536);
  large = (atomic_load(&server_heap) - before) / N;
  printf("tls: an idle connection after the handshake: tls_conn %zu B, OpenSSL %ld B "
         "(%ld B after 64 KiB each way)\n",
         malloc_usable_size(p[0].c), small, large);
  ck_assert_int_lt(labs(large - small), 256);
  /* Less than an SSL (~8 KiB) and one record buffer (~16.5 KiB). */
  ck_assert_int_lt(small, 24 * 1024);
  for (int i = 0; i < N; i++)
    peer_close(&p[i]);
  ck_assert_int_le(atomic_load(&server_heap) - before, 4096);
  tls_server_free(t);
}
END_TEST

/* Reloads on one thread while another makes connections, handshakes some
 * and frees them (for ThreadSanitizer). */
typedef struct race {
  tls_server *t;
  atomic_int done;
  int reloads;
} race;

static void *reloader(void *arg) {
  race *r = arg;
  char err[512];
  while (!atomic_load(&r->done)) {
    int odd = r->reloads++ & 1;
    ck_assert_int_eq(
        tls_server_reload(r->t, odd ? cert_b : cert_a, odd ? key_b : key_a, err, sizeof(err)), 0);
    /* A failing one now and then. */
    if (r->reloads % 7 == 0)
      ck_assert_int_eq(tls_server_reload(r->t, cert_a, key_b, err, sizeof(err)), -EINVAL);
  }
  return NULL;
}

static void *connector(void *arg) {
  race *r = arg;
  int seen_a = 0, seen_b = 0;
  for (int i = 0; i < 400 || (i < 4000 && !(seen_a && seen_b)); i++) {
    peer p;
    char cn[64];
    peer_open(&p, r->t, 0);
    if (i % 4 == 0) {
      ck_assert_int_eq(handshake(&p), 0);
      peer_cn(&p, cn, sizeof(cn));
      seen_a |= strcmp(cn, "pier-a") == 0;
      seen_b |= strcmp(cn, "pier-b") == 0;
      ck_assert(strcmp(cn, "pier-a") == 0 || strcmp(cn, "pier-b") == 0);
    }
    peer_close(&p);
  }
  atomic_store(&r->done, 1);
  ck_assert(seen_a && seen_b);
  return NULL;
}

START_TEST(test_tls_reload_races_connections) {
  race r = {.t = server(cert_a, key_a)};
  os_thread a, b;

  atomic_init(&r.done, 0);
  ck_assert_int_eq(os_thread_create(&a, reloader, &r), 0);
  ck_assert_int_eq(os_thread_create(&b, connector, &r), 0);
  os_thread_join(b);
  os_thread_join(a);
  ck_assert_int_gt(r.reloads, 1);
  tls_server_free(r.t);
}
END_TEST

int main(void) {
  Suite *s = suite_create("tls");
  TCase *tc = tcase_create("tls");
  int rc;

  /* Before OpenSSL allocates anything. */
  heap_counted = CRYPTO_set_mem_functions(count_malloc, count_realloc, count_free);
  make_files();
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_tls_handshake_tls13);
  tcase_add_test(tc, test_tls_handshake_in_pieces);
  tcase_add_test(tc, test_tls_tls12_accepted);
  tcase_add_test(tc, test_tls_plaintext_1mib_both_ways);
  tcase_add_test(tc, test_tls_key_update);
  tcase_add_test(tc, test_tls_write_coalesces);
  tcase_add_test(tc, test_tls_write_from_plain);
  tcase_add_test(tc, test_tls_old_client_refused);
  tcase_add_test(tc, test_tls_plain_http_refused);
  tcase_add_test(tc, test_tls_corrupt_record_refused);
  tcase_add_test(tc, test_tls_close_notify_from_client);
  tcase_add_test(tc, test_tls_close_notify_from_server);
  tcase_add_test(tc, test_tls_reload_rotates);
  tcase_add_test(tc, test_tls_ticket_resumes);
  tcase_add_test(tc, test_tls_chain_sent);
  tcase_add_test(tc, test_tls_file_errors);
  tcase_add_test(tc, test_tls_callbacks_stop);
  tcase_add_test(tc, test_tls_idle_memory);
  tcase_add_test(tc, test_tls_reload_races_connections);
  suite_add_tcase(s, tc);
  rc = test_run(s);
  test_rm_rf(dir);
  return rc;
}
