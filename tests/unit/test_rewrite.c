/*
 * test_rewrite.c — the rewriters (rewrite.c) on real handshakes, on
 * hand-made ones and on damaged ones.
 *
 * Every rewritten message is judged twice.  Our own decoder (decode.c)
 * reads it back: the edited fields changed as asked and every other field
 * decodes as before.  Then OpenSSL, an independent parser, reads it as a
 * server would: the rewritten ClientHello is framed into records with
 * tf_rewrite_frame() and fed to a real SSL server over memory BIOs, which
 * must answer with a ServerHello of the expected version and suite (or,
 * where nothing is left in common, a handshake_failure alert).  The real
 * messages come from tests/data (scripts/capture-testdata.py); the server's
 * RSA key and certificate are made at start-up.
 *
 * The damaged inputs: every truncation of every captured message, lengths
 * that overrun or underrun their containers, odd lists, duplicate
 * extensions, pre_shared_key not last.  Each input is an exact-size heap
 * copy so that AddressSanitizer catches a read past the end.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "tlsfault/cursor.h"
#include "tlsfault/decode.h"
#include "tlsfault/rewrite.h"
#include "testdata.h"

/* ------------------------------------------------------------------ helpers */

/* A copy of a string array without the strings that contain part (or equal it, with exact). */
static json_t *
without(const json_t *arr, const char *s, bool exact)
{
    json_t *out = json_array();
    size_t i;
    json_t *v;

    json_array_foreach(arr, i, v) {
        const char *t = json_string_value(v);

        if (t != NULL && (exact ? strcmp(t, s) == 0 : strstr(t, s) != NULL))
            continue;
        json_array_append(out, v);
    }
    return out;
}

static void
assert_contains(const char *text, const char *part)
{
    if (text == NULL || strstr(text, part) == NULL)
        fail_msg("\"%s\" lacks \"%s\"", text ? text : "(null)", part);
}

/*
 * Asserts that two decoded messages are equal once the listed keys
 * (NULL-terminated) are taken out of both: "the rest is unchanged".
 */
static void assert_same_except(const json_t *a, const json_t *b, ...) __attribute__((sentinel));

static void
assert_same_except(const json_t *a, const json_t *b, ...)
{
    json_t *ca = json_deep_copy(a), *cb = json_deep_copy(b);
    const char *key;
    va_list ap;

    va_start(ap, b);
    while ((key = va_arg(ap, const char *)) != NULL) {
        json_object_del(ca, key);
        json_object_del(cb, key);
    }
    va_end(ap);
    if (!json_equal(ca, cb)) {
        char *ta = json_dumps(ca, JSON_COMPACT | JSON_SORT_KEYS);
        char *tb = json_dumps(cb, JSON_COMPACT | JSON_SORT_KEYS);
        print_error("before: %s\nafter:  %s\n", ta, tb);
        free(ta);
        free(tb);
        json_decref(ca);
        json_decref(cb);
        fail_msg("the fields that were not edited changed");
    }
    json_decref(ca);
    json_decref(cb);
}

static uint32_t
get24(const uint8_t *p)
{
    return ((uint32_t)p[0] << 16) | ((uint32_t)p[1] << 8) | p[2];
}

/* A rewritten message: type byte, then a 24-bit length that is the rest. */
static void
assert_hs_header(const uint8_t *out, size_t out_len, uint8_t type)
{
    assert_non_null(out);
    assert_true(out_len >= 4);
    assert_int_equal(out[0], type);
    assert_int_equal(get24(out + 1), out_len - 4);
}

static json_t *
decode_ch(const uint8_t *p, size_t n, struct tf_client_hello_info *info)
{
    json_t *obj = json_object();
    uint8_t *c = exact_copy(p, n);

    if (!tf_decode_client_hello(c, n, obj, info))
        fail_msg("ClientHello does not decode: %s", str(obj, "malformed"));
    free(c);
    return obj;
}

static json_t *
decode_sh(const uint8_t *p, size_t n, struct tf_server_hello_info *info)
{
    json_t *obj = json_object();
    uint8_t *c = exact_copy(p, n);

    if (!tf_decode_server_hello(c, n, obj, info))
        fail_msg("ServerHello does not decode: %s", str(obj, "malformed"));
    free(c);
    return obj;
}

static json_t *
decode_cert(const uint8_t *p, size_t n, bool tls13)
{
    json_t *obj = json_object();
    uint8_t *c = exact_copy(p, n);

    if (!tf_decode_certificate(c, n, tls13, obj))
        fail_msg("Certificate does not decode: %s", str(obj, "malformed"));
    free(c);
    return obj;
}

/*
 * Runs a ClientHello edit that must succeed on an exact-size copy and
 * checks what every success promises: a whole message with a true header,
 * that our decoder reads, on which the same edit has nothing left to do.
 */
static struct blob
ch_rewrite(const struct blob *in, const struct tf_client_hello_edit *edit, char *changes,
           size_t changes_len)
{
    uint8_t *copy = exact_copy(in->p, in->n), *out = NULL, *again = NULL;
    size_t out_len = 0, again_len = 0;
    char why[256] = "", more[256];
    enum tf_rewrite r;
    json_t *obj;

    r = tf_rewrite_client_hello(copy, in->n, edit, &out, &out_len, changes, changes_len, why,
                                sizeof(why));
    free(copy);
    if (r != TF_REWRITE_OK)
        fail_msg("rewrite gave %d, not OK (%s)", (int)r, why);
    assert_hs_header(out, out_len, 1);
    assert_true(out_len - 4 <= in->n); /* an edit only removes bytes */
    obj = decode_ch(out + 4, out_len - 4, NULL);
    json_decref(obj);
    copy = exact_copy(out + 4, out_len - 4);
    r = tf_rewrite_client_hello(copy, out_len - 4, edit, &again, &again_len, more, sizeof(more),
                                why, sizeof(why));
    free(copy);
    assert_int_equal(r, TF_REWRITE_SAME);
    assert_null(again);
    return (struct blob){out, out_len};
}

/* A captured ClientHello through one edit that must succeed, both sides decoded. */
struct ch_case {
    struct blob in, out;              /* the capture, the whole rewritten message */
    json_t *before, *after;           /* what our decoder reads in each */
    struct tf_client_hello_info info; /* of after */
    char changes[512];
};

static void
ch_case_run(struct ch_case *c, const char *file, const struct tf_client_hello_edit *edit)
{
    c->in = load(file);
    c->out = ch_rewrite(&c->in, edit, c->changes, sizeof(c->changes));
    c->before = decode_ch(c->in.p, c->in.n, NULL);
    c->after = decode_ch(c->out.p + 4, c->out.n - 4, &c->info);
}

static void
ch_case_free(struct ch_case *c)
{
    json_decref(c->before);
    json_decref(c->after);
    free(c->out.p);
    free(c->in.p);
}

/*
 * The edit removed one extension (ext, decoded as the field key): it is gone
 * from the list and its field, everything else decodes as before.
 */
static void
assert_removed_extension(const struct ch_case *c, const char *ext, const char *key,
                         const char *changes)
{
    json_t *exts = without(json_object_get(c->before, "extensions"), ext, true);

    assert_null(json_object_get(c->after, key));
    assert_true(json_equal(json_object_get(c->after, "extensions"), exts));
    assert_same_except(c->before, c->after, key, "extensions", NULL);
    assert_string_equal(c->changes, changes);
    json_decref(exts);
}

/* An edit that must leave the message alone. */
static void
ch_rewrite_same(const struct blob *in, const struct tf_client_hello_edit *edit)
{
    uint8_t *copy = exact_copy(in->p, in->n), *out = (uint8_t *)1;
    size_t out_len = 1;
    char changes[256], why[256];

    assert_int_equal(tf_rewrite_client_hello(copy, in->n, edit, &out, &out_len, changes,
                                             sizeof(changes), why, sizeof(why)),
                     TF_REWRITE_SAME);
    assert_null(out);
    assert_int_equal(out_len, 0);
    free(copy);
}

/* An input that must be refused; returns nothing, checks why mentions part. */
static void
ch_rewrite_bad(const uint8_t *p, size_t n, const struct tf_client_hello_edit *edit,
               const char *part)
{
    uint8_t *copy = exact_copy(p, n), *out = (uint8_t *)1;
    size_t out_len = 1;
    char changes[256], why[256] = "";
    enum tf_rewrite r;

    r = tf_rewrite_client_hello(copy, n, edit, &out, &out_len, changes, sizeof(changes), why,
                                sizeof(why));
    free(copy);
    if (r != TF_REWRITE_BAD)
        fail_msg("rewrite gave %d, not BAD (expected \"%s\")", (int)r, part ? part : "");
    assert_null(out);
    assert_int_equal(out_len, 0);
    assert_true(why[0] != '\0');
    if (part != NULL)
        assert_contains(why, part);
}

/* The captured ClientHellos that offer TLS 1.3 (supported_versions 1.3, 1.2, 1.1, 1.0). */
static const char *const ch13_files[] = {
    "openssl-tls13.client_hello.bin",        "openssl-tls13-hrr.client_hello.bin",
    "openssl-tls13-hrr.client_hello2.bin",   "gnutls-openssl-tls13.client_hello.bin",
    "openssl-gnutls-tls13.client_hello.bin",
};

/* The TLS 1.2-only ones (no supported_versions). */
static const char *const ch12_files[] = {
    "gnutls-openssl-tls12.client_hello.bin",      "openssl-gnutls-tls12.client_hello.bin",
    "openssl-tls12-client-auth.client_hello.bin", "openssl-tls12-dhe.client_hello.bin",
    "openssl-tls12-ecdhe-ecdsa.client_hello.bin", "openssl-tls12-ecdhe-rsa.client_hello.bin",
    "openssl-tls12-ed25519.client_hello.bin",     "openssl-tls12-no-shared-cipher.client_hello.bin",
    "openssl-tls12-ocsp.client_hello.bin",        "openssl-tls12-resumed.client_hello.bin",
};

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* One extension of a hand-made hello. */
struct ext {
    uint16_t type;
    const void *data;
    size_t len;
};

#define EXT(t, s) {(t), (s), sizeof(s) - 1}

/*
 * A hand-made ClientHello: a 32-byte session id, the given suites, null
 * compression and the given extensions in order (no block when nexts is
 * SIZE_MAX).
 */
static void
ch_build(struct msg *m, uint16_t legacy, const uint16_t *suites, size_t nsuites,
         const struct ext *exts, size_t nexts)
{
    static const uint8_t random[32] = {0xaa, 0xbb, 0xcc};
    static const uint8_t sid[32] = {0x51, 0x1d};
    size_t at;

    m->n = 0;
    put16(m, legacy);
    putn(m, random, sizeof(random));
    put8(m, sizeof(sid));
    putn(m, sid, sizeof(sid));
    put16(m, (uint16_t)(2 * nsuites));
    for (size_t i = 0; i < nsuites; i++)
        put16(m, suites[i]);
    put8(m, 1);
    put8(m, 0);
    if (nexts == SIZE_MAX)
        return;
    at = open_block(m, 2);
    for (size_t i = 0; i < nexts; i++) {
        put16(m, exts[i].type);
        put16(m, (uint16_t)exts[i].len);
        putn(m, exts[i].data, exts[i].len);
    }
    close_block(m, at, 2);
}

/* Where a ClientHello's extension block starts (its 2-byte length). */
static size_t
ch_ext_offset(const uint8_t *p, size_t n)
{
    struct tf_cursor c, v = {NULL, NULL};

    tf_cursor_init(&c, p, n);
    assert_true(tf_cursor_skip(&c, 2 + 32));
    assert_true(tf_cursor_sub8(&c, &v));
    assert_true(tf_cursor_sub16(&c, &v));
    assert_true(tf_cursor_sub8(&c, &v));
    return (size_t)(c.p - p);
}

/* Where an extension of a ClientHello starts (its type), or 0 if it has none of that type. */
static size_t
ch_find_ext(const uint8_t *p, size_t n, uint16_t type)
{
    struct tf_cursor c, block = {NULL, NULL}, data;
    size_t off = ch_ext_offset(p, n);
    uint16_t t;

    tf_cursor_init(&c, p + off, n - off);
    assert_true(tf_cursor_sub16(&c, &block));
    while (!tf_cursor_empty(&block)) {
        const uint8_t *at = block.p;

        assert_true(tf_cursor_u16(&block, &t));
        assert_true(tf_cursor_sub16(&block, &data));
        if (t == type)
            return (size_t)(at - p);
    }
    return 0;
}

/* ---------------------------------------------------- the OpenSSL server */

/* The server's key and self-signed certificate, made once for all tests. */
static EVP_PKEY *server_key;
static X509 *server_cert;

static int
setup_server_identity(void **state)
{
    X509_NAME *name;

    (void)state;
    server_key = EVP_RSA_gen(2048);
    server_cert = X509_new();
    if (server_key == NULL || server_cert == NULL)
        return -1;
    name = X509_get_subject_name(server_cert);
    if (!X509_set_version(server_cert, 2) ||
        !ASN1_INTEGER_set(X509_get_serialNumber(server_cert), 1) ||
        X509_gmtime_adj(X509_getm_notBefore(server_cert), -3600) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(server_cert), 86400) == NULL ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                    (const unsigned char *)"server.lab.test", -1, -1, 0) ||
        !X509_set_issuer_name(server_cert, name) || !X509_set_pubkey(server_cert, server_key) ||
        X509_sign(server_cert, server_key, EVP_sha256()) == 0)
        return -1;
    return 0;
}

static int
teardown_server_identity(void **state)
{
    (void)state;
    X509_free(server_cert);
    EVP_PKEY_free(server_key);
    return 0;
}

/* What the server did with one ClientHello. */
struct server_run {
    bool server_hello;       /* it answered with a ServerHello */
    struct tf_server_hello_info sh;
    int alert;               /* else the alert it sent, -1 for none */
    int ssl_version;         /* SSL_version() afterwards */
    bool sni_seen;           /* the servername callback saw a name */
    char sni[256];
    bool alpn_offered;       /* the ALPN callback ran (only when the client offers ALPN) */
};

static int
server_sni_cb(SSL *ssl, int *al, void *arg)
{
    struct server_run *r = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

    (void)al;
    if (name != NULL) {
        r->sni_seen = true;
        snprintf(r->sni, sizeof(r->sni), "%s", name);
    }
    return SSL_TLSEXT_ERR_OK;
}

static int
server_alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
               const unsigned char *in, unsigned int inlen, void *arg)
{
    struct server_run *r = arg;

    (void)ssl;
    (void)out;
    (void)outlen;
    (void)in;
    (void)inlen;
    r->alpn_offered = true;
    return SSL_TLSEXT_ERR_NOACK;
}

/*
 * Feeds one handshake message (header included) to a fresh OpenSSL server,
 * framed into records of at most fragment bytes, and reads its answer.
 * min_version lets a test allow TLS 1.0/1.1, which also needs security
 * level 0 in OpenSSL 3.
 */
static void
server_feed(const uint8_t *msg, size_t n, size_t fragment, int min_version,
            struct server_run *r)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    SSL *ssl;
    BIO *rbio, *wbio;
    uint8_t *records = NULL, resp[16384];
    size_t records_len = 0;
    int got, ret;

    memset(r, 0, sizeof(*r));
    r->alert = -1;
    assert_non_null(ctx);
    assert_int_equal(SSL_CTX_use_certificate(ctx, server_cert), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(ctx, server_key), 1);
    if (min_version != 0) {
        SSL_CTX_set_security_level(ctx, 0);
        assert_int_equal(SSL_CTX_set_min_proto_version(ctx, min_version), 1);
    }
    SSL_CTX_set_tlsext_servername_callback(ctx, server_sni_cb);
    SSL_CTX_set_tlsext_servername_arg(ctx, r);
    SSL_CTX_set_alpn_select_cb(ctx, server_alpn_cb, r);
    ssl = SSL_new(ctx);
    assert_non_null(ssl);
    rbio = BIO_new(BIO_s_mem());
    wbio = BIO_new(BIO_s_mem());
    assert_non_null(rbio);
    assert_non_null(wbio);
    SSL_set_bio(ssl, rbio, wbio);
    SSL_set_accept_state(ssl);

    assert_true(tf_rewrite_frame(22, 0x0301, msg, n, fragment, &records, &records_len));
    assert_int_equal(BIO_write(rbio, records, (int)records_len), (int)records_len);
    free(records);
    ret = SSL_do_handshake(ssl);
    /* Having answered, the server waits for the client's next flight. */
    if (ret <= 0 && SSL_get_error(ssl, ret) != SSL_ERROR_WANT_READ)
        ERR_clear_error();
    r->ssl_version = SSL_version(ssl);
    ERR_clear_error();

    got = BIO_read(wbio, resp, sizeof(resp));
    assert_true(got >= 7);
    if (resp[0] == 22 && resp[5] == 2) {
        size_t rec_len = ((size_t)resp[3] << 8) | resp[4];
        size_t hs_len = get24(resp + 6);
        json_t *obj;

        assert_true(rec_len <= (size_t)got - 5 && hs_len + 4 <= rec_len);
        obj = decode_sh(resp + 9, hs_len, &r->sh);
        json_decref(obj);
        r->server_hello = true;
    } else if (resp[0] == 21) {
        r->alert = resp[6];
    } else {
        fail_msg("the server answered with record type %d, message %d", resp[0], resp[5]);
    }
    SSL_free(ssl);
    SSL_CTX_free(ctx);
}

/* Rewrites a captured hello (body) into a whole message for server_feed(). */
static struct blob
whole_message(const struct blob *body)
{
    struct blob m = {malloc(body->n + 4), body->n + 4};

    assert_non_null(m.p);
    m.p[0] = 1;
    m.p[1] = (uint8_t)(body->n >> 16);
    m.p[2] = (uint8_t)(body->n >> 8);
    m.p[3] = (uint8_t)body->n;
    memcpy(m.p + 4, body->p, body->n);
    return m;
}

/* -------------------------------------------------- ClientHello: versions */

static void
test_ch_downgrade_to_tls12(void **state)
{
    (void)state;
    for (size_t i = 0; i < N(ch13_files); i++) {
        struct tf_client_hello_edit edit = {.max_version = 0x0303};
        struct ch_case c;
        json_t *expect;

        ch_case_run(&c, ch13_files[i], &edit);
        expect = without(json_object_get(c.before, "supported_versions"), "TLS 1.3", true);
        assert_string_equal(str(c.after, "legacy_version"), "TLS 1.2");
        assert_true(json_equal(json_object_get(c.after, "supported_versions"), expect));
        assert_false(has(json_object_get(c.after, "supported_versions"), "TLS 1.3"));
        assert_true(has(json_object_get(c.after, "extensions"), "supported_versions"));
        assert_same_except(c.before, c.after, "supported_versions", NULL);
        /* One 2-byte version less, everything else byte for byte. */
        assert_int_equal(c.out.n - 4, c.in.n - 2);
        assert_string_equal(c.changes,
                            "supported_versions: removed TLS 1.3; legacy_version 0x0303");
        json_decref(expect);
        ch_case_free(&c);
    }
}

static void
test_ch_downgrade_to_tls11(void **state)
{
    struct tf_client_hello_edit edit = {.max_version = 0x0302};
    struct ch_case c;

    (void)state;
    ch_case_run(&c, "openssl-tls13.client_hello.bin", &edit);
    assert_string_equal(str(c.after, "legacy_version"), "TLS 1.1");
    assert_strings(json_object_get(c.after, "supported_versions"), "TLS 1.1", "TLS 1.0", NULL);
    assert_same_except(c.before, c.after, "supported_versions", "legacy_version", NULL);
    assert_string_equal(c.changes, "supported_versions: removed TLS 1.3, TLS 1.2; "
                                   "legacy_version 0x0302 (was 0x0303)");
    ch_case_free(&c);
}

/* Nothing at or below max left: the extension goes, legacy_version carries the version. */
static void
test_ch_downgrade_removes_empty_extension(void **state)
{
    static const uint8_t sv13[] = "\x02\x03\x04";
    static const uint16_t suites[] = {0x1301, 0xc02f};
    const struct ext exts[] = {EXT(10, "\x00\x02\x00\x1d"), {43, sv13, 3},
                               EXT(13, "\x00\x02\x04\x01")};
    struct tf_client_hello_edit edit = {.max_version = 0x0303};
    struct msg m;
    struct blob in, out;
    char changes[256];
    json_t *after;

    (void)state;
    ch_build(&m, 0x0303, suites, N(suites), exts, N(exts));
    in = (struct blob){m.b, m.n};
    out = ch_rewrite(&in, &edit, changes, sizeof(changes));
    after = decode_ch(out.p + 4, out.n - 4, NULL);
    assert_null(json_object_get(after, "supported_versions"));
    assert_false(has(json_object_get(after, "extensions"), "supported_versions"));
    assert_int_equal(json_array_size(json_object_get(after, "extensions")), 2);
    assert_string_equal(str(after, "legacy_version"), "TLS 1.2");
    assert_string_equal(changes, "removed supported_versions; legacy_version 0x0303");
    json_decref(after);
    free(out.p);
}

static void
test_ch_remove_supported_versions(void **state)
{
    (void)state;
    for (size_t i = 0; i < N(ch13_files); i++) {
        struct tf_client_hello_edit edit = {.max_version = 0x0303,
                                            .remove_supported_versions = true};
        struct ch_case c;

        ch_case_run(&c, ch13_files[i], &edit);
        assert_removed_extension(&c, "supported_versions", "supported_versions",
                                 "removed supported_versions; legacy_version 0x0303");
        assert_string_equal(str(c.after, "legacy_version"), "TLS 1.2");
        assert_int_equal(c.info.max_version, 0x0303);
        /* The 4-byte header, the length byte and four versions. */
        assert_int_equal(c.out.n - 4, c.in.n - 4 - 1 - 8);
        ch_case_free(&c);
    }
}

/* The contract's case without max_version: the extension goes, 1.3 cannot be offered. */
static void
test_ch_remove_supported_versions_alone(void **state)
{
    struct tf_client_hello_edit edit = {.remove_supported_versions = true};
    struct blob in = load("gnutls-openssl-tls13.client_hello.bin");
    char changes[256];
    struct blob out = ch_rewrite(&in, &edit, changes, sizeof(changes));
    json_t *after = decode_ch(out.p + 4, out.n - 4, NULL);

    (void)state;
    assert_null(json_object_get(after, "supported_versions"));
    assert_string_equal(str(after, "legacy_version"), "TLS 1.2");
    assert_string_equal(changes, "removed supported_versions; legacy_version 0x0303");
    json_decref(after);
    free(out.p);
    free(in.p);
}

static void
test_ch_downgrade_nothing_to_do(void **state)
{
    (void)state;
    for (size_t i = 0; i < N(ch13_files); i++) {
        struct tf_client_hello_edit edit = {.max_version = 0x0304};
        struct blob in = load(ch13_files[i]);

        ch_rewrite_same(&in, &edit);
        edit.max_version = 0x7fff;
        ch_rewrite_same(&in, &edit);
        edit.max_version = 0;
        ch_rewrite_same(&in, &edit);
        free(in.p);
    }
    for (size_t i = 0; i < N(ch12_files); i++) {
        struct tf_client_hello_edit edit = {.max_version = 0x0303};
        struct blob in = load(ch12_files[i]);

        ch_rewrite_same(&in, &edit);
        edit.remove_supported_versions = true;
        ch_rewrite_same(&in, &edit);
        free(in.p);
    }
}

/* A TLS 1.2 hello without supported_versions: only legacy_version can go down. */
static void
test_ch_downgrade_tls12_hello(void **state)
{
    (void)state;
    for (size_t i = 0; i < N(ch12_files); i++) {
        struct tf_client_hello_edit edit = {.max_version = 0x0301};
        struct ch_case c;

        ch_case_run(&c, ch12_files[i], &edit);
        assert_string_equal(str(c.after, "legacy_version"), "TLS 1.0");
        assert_same_except(c.before, c.after, "legacy_version", NULL);
        assert_int_equal(c.out.n - 4, c.in.n);
        assert_memory_equal(c.out.p + 6, c.in.p + 2, c.in.n - 2);
        assert_string_equal(c.changes, "legacy_version 0x0301 (was 0x0303)");
        ch_case_free(&c);
    }
}

/* The downgrade never raises legacy_version: a TLS 1.0-only client stays one. */
static void
test_ch_downgrade_never_raises(void **state)
{
    static const uint16_t suites[] = {0xc013};
    const struct ext exts[] = {EXT(0xff01, "\x00")};
    struct tf_client_hello_edit edit = {.max_version = 0x0303};
    struct msg m;
    struct blob in;

    (void)state;
    ch_build(&m, 0x0301, suites, N(suites), exts, N(exts));
    in = (struct blob){m.b, m.n};
    ch_rewrite_same(&in, &edit);
}

/* GREASE versions stay in supported_versions (RFC 8701); unknown future versions go. */
static void
test_ch_downgrade_keeps_grease(void **state)
{
    static const uint8_t sv[] = "\x0a\x5a\x5a\x7f\x1c\x03\x04\x03\x03\x8a\x8a";
    static const uint16_t suites[] = {0x2a2a, 0x1301, 0xc02f};
    const struct ext exts[] = {{0x3a3a, "", 0}, {43, sv, 11}, EXT(13, "\x00\x02\x04\x01")};
    struct tf_client_hello_edit edit = {.max_version = 0x0303};
    struct msg m;
    struct blob in, out;
    char changes[256];
    json_t *after;
    size_t at;

    (void)state;
    ch_build(&m, 0x0303, suites, N(suites), exts, N(exts));
    in = (struct blob){m.b, m.n};
    out = ch_rewrite(&in, &edit, changes, sizeof(changes));
    after = decode_ch(out.p + 4, out.n - 4, NULL);
    assert_strings(json_object_get(after, "supported_versions"), "GREASE", "TLS 1.2", "GREASE",
                   NULL);
    at = ch_find_ext(out.p + 4, out.n - 4, 43);
    assert_true(at > 0);
    assert_memory_equal(out.p + 4 + at, "\x00\x2b\x00\x07\x06\x5a\x5a\x03\x03\x8a\x8a", 11);
    assert_string_equal(changes, "supported_versions: removed TLS 1.3 draft 28, TLS 1.3; "
                                 "legacy_version 0x0303");
    json_decref(after);
    free(out.p);

    /* GREASE alone is no version: the extension goes. */
    edit.max_version = 0x0301;
    out = ch_rewrite(&in, &edit, changes, sizeof(changes));
    assert_int_equal(ch_find_ext(out.p + 4, out.n - 4, 43), 0);
    assert_string_equal(changes, "removed supported_versions; legacy_version 0x0301 (was 0x0303)");
    free(out.p);
}

/* ---------------------------------------------------- ClientHello: ciphers */

static void
test_ch_strip_ciphers_chacha(void **state)
{
    (void)state;
    for (size_t i = 0; i < N(ch13_files); i++) {
        struct tf_client_hello_edit edit = {.strip_ciphers = "*chacha20*"};
        struct ch_case c;
        char expect_text[256];
        json_t *expect;
        size_t removed;

        ch_case_run(&c, ch13_files[i], &edit);
        expect = without(json_object_get(c.before, "cipher_suites"), "CHACHA20", false);
        removed = json_array_size(json_object_get(c.before, "cipher_suites")) -
                  json_array_size(expect);
        assert_true(removed >= 2);
        assert_true(json_equal(json_object_get(c.after, "cipher_suites"), expect));
        assert_int_equal(num(c.after, "cipher_suites_count"), json_array_size(expect));
        assert_same_except(c.before, c.after, "cipher_suites", "cipher_suites_count", NULL);
        assert_int_equal(c.out.n - 4, c.in.n - 2 * removed);
        snprintf(expect_text, sizeof(expect_text),
                 "cipher_suites: removed %zu of %zu (TLS_CHACHA20_POLY1305_SHA256, ", removed,
                 json_array_size(json_object_get(c.before, "cipher_suites")));
        assert_memory_equal(c.changes, expect_text, strlen(expect_text));
        assert_contains(c.changes, "CHACHA20_POLY1305_SHA256");
        json_decref(expect);
        ch_case_free(&c);
    }
}

/* Several globs, both separators, and the "0x%04x" form. */
static void
test_ch_strip_ciphers_globs(void **state)
{
    struct tf_client_hello_edit edit = {
        .strip_ciphers = "0x1301,TLS_AES_256_GCM_SHA384:0X00FF: ,*_CBC_*"};
    struct blob in = load("openssl-tls13.client_hello.bin");
    char changes[512];
    struct blob out = ch_rewrite(&in, &edit, changes, sizeof(changes));
    json_t *after = decode_ch(out.p + 4, out.n - 4, NULL);
    const json_t *suites = json_object_get(after, "cipher_suites");
    size_t i;
    const json_t *v;

    (void)state;
    assert_false(has(suites, "TLS_AES_128_GCM_SHA256"));
    assert_false(has(suites, "TLS_AES_256_GCM_SHA384"));
    assert_false(has(suites, "TLS_EMPTY_RENEGOTIATION_INFO_SCSV"));
    assert_true(has(suites, "TLS_CHACHA20_POLY1305_SHA256"));
    assert_true(has(suites, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"));
    json_array_foreach(suites, i, v) {
        assert_null(strstr(json_string_value(v), "_CBC_"));
    }
    assert_contains(changes, "cipher_suites: removed ");
    assert_contains(changes, "(TLS_AES_256_GCM_SHA384, TLS_AES_128_GCM_SHA256, ");
    assert_contains(changes, ", ...)");
    json_decref(after);
    free(out.p);
    free(in.p);
}

static void
test_ch_strip_ciphers_no_match(void **state)
{
    struct tf_client_hello_edit edit = {.strip_ciphers = "*NO_SUCH_SUITE*:0xdead"};
    struct blob in = load("openssl-tls13.client_hello.bin");

    (void)state;
    ch_rewrite_same(&in, &edit);
    edit.strip_ciphers = "";
    ch_rewrite_same(&in, &edit);
    edit.strip_ciphers = ":,:";
    ch_rewrite_same(&in, &edit);
    free(in.p);
}

/* GREASE suites stay whatever the glob; a list with nothing else left is refused. */
static void
test_ch_strip_ciphers_grease_and_empty(void **state)
{
    static const uint16_t suites[] = {0x1a1a, 0x1301, 0xc02f};
    static const uint16_t plain[] = {0x1301, 0xc02f};
    const struct ext exts[] = {EXT(23, "")};
    struct tf_client_hello_edit edit = {.strip_ciphers = "*"};
    struct msg m;
    struct blob in, out;
    char changes[256];
    json_t *after;

    (void)state;
    ch_build(&m, 0x0303, suites, N(suites), exts, N(exts));
    in = (struct blob){m.b, m.n};
    out = ch_rewrite(&in, &edit, changes, sizeof(changes));
    after = decode_ch(out.p + 4, out.n - 4, NULL);
    assert_int_equal(num(after, "cipher_suites_count"), 1);
    assert_true(has(json_object_get(after, "cipher_suites"), "GREASE"));
    assert_string_equal(changes, "cipher_suites: removed 2 of 3 (TLS_AES_128_GCM_SHA256, "
                                 "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)");
    json_decref(after);
    free(out.p);

    /* cipher_suites<2..2^16-2>: nothing left cannot be encoded. */
    ch_build(&m, 0x0303, plain, N(plain), exts, N(exts));
    ch_rewrite_bad(m.b, m.n, &edit, "empty list");
    edit.strip_ciphers = "0x1301:0xc02f";
    ch_rewrite_bad(m.b, m.n, &edit, "matches all 2 suites");
}

/* ------------------------------------------------ ClientHello: SNI, ALPN */

static void
test_ch_strip_sni(void **state)
{
    const char *const files[] = {"openssl-tls13.client_hello.bin",
                                 "gnutls-openssl-tls13.client_hello.bin",
                                 "openssl-tls12-ecdhe-rsa.client_hello.bin",
                                 "gnutls-openssl-tls12.client_hello.bin"};

    (void)state;
    for (size_t i = 0; i < N(files); i++) {
        struct tf_client_hello_edit edit = {.strip_sni = true};
        struct ch_case c;

        ch_case_run(&c, files[i], &edit);
        assert_removed_extension(&c, "server_name", "server_name", "removed server_name");
        assert_false(c.info.has_sni);
        assert_string_equal(c.info.sni, "");
        /* type, length, list length, name type, name length, name */
        assert_int_equal(c.out.n - 4,
                         c.in.n - (4 + 2 + 1 + 2 + strlen(str(c.before, "server_name"))));
        ch_case_free(&c);
    }
}

static void
test_ch_strip_alpn(void **state)
{
    const char *const files[] = {"openssl-tls13.client_hello.bin",
                                 "gnutls-openssl-tls13.client_hello.bin",
                                 "openssl-tls12-ecdhe-rsa.client_hello.bin"};

    (void)state;
    for (size_t i = 0; i < N(files); i++) {
        struct tf_client_hello_edit edit = {.strip_alpn = true};
        struct ch_case c;

        ch_case_run(&c, files[i], &edit);
        assert_non_null(json_object_get(c.before, "alpn"));
        assert_removed_extension(&c, "application_layer_protocol_negotiation", "alpn",
                                 "removed application_layer_protocol_negotiation");
        ch_case_free(&c);
    }
}

/* Nothing to strip: no change, no buffer. */
static void
test_ch_strip_absent(void **state)
{
    struct tf_client_hello_edit edit = {.strip_alpn = true};
    struct blob in = load("openssl-tls12-dhe.client_hello.bin");
    static const uint16_t suites[] = {0x1301};
    const struct ext exts[] = {EXT(23, "")};
    struct msg m;
    struct blob hand;

    (void)state;
    ch_rewrite_same(&in, &edit);
    free(in.p);
    ch_build(&m, 0x0303, suites, N(suites), exts, N(exts));
    hand = (struct blob){m.b, m.n};
    edit.strip_sni = true;
    ch_rewrite_same(&hand, &edit);
    /* A hello that ends after compression_methods (RFC 5246 §7.4.1.2) has nothing to strip. */
    ch_build(&m, 0x0303, suites, N(suites), NULL, SIZE_MAX);
    hand = (struct blob){m.b, m.n};
    ch_rewrite_same(&hand, &edit);
}

/* Every edit at once, on a GnuTLS hello. */
static void
test_ch_all_edits(void **state)
{
    struct tf_client_hello_edit edit = {.max_version = 0x0303,
                                        .strip_ciphers = "TLS_AES_*",
                                        .strip_sni = true,
                                        .strip_alpn = true};
    struct ch_case c;
    json_t *no_sni, *exts;

    (void)state;
    ch_case_run(&c, "gnutls-openssl-tls13.client_hello.bin", &edit);
    no_sni = without(json_object_get(c.before, "extensions"), "server_name", true);
    exts = without(no_sni, "application_layer_protocol_negotiation", true);
    json_decref(no_sni);
    assert_true(json_equal(json_object_get(c.after, "extensions"), exts));
    assert_false(has(json_object_get(c.after, "supported_versions"), "TLS 1.3"));
    assert_false(has(json_object_get(c.after, "cipher_suites"), "TLS_AES_128_GCM_SHA256"));
    assert_same_except(c.before, c.after, "extensions", "server_name", "alpn",
                       "supported_versions", "cipher_suites", "cipher_suites_count", NULL);
    assert_string_equal(c.changes, "supported_versions: removed TLS 1.3; legacy_version 0x0303; "
                                   "cipher_suites: removed 3 of 29 (TLS_AES_256_GCM_SHA384, "
                                   "TLS_AES_128_GCM_SHA256, TLS_AES_128_CCM_SHA256); "
                                   "removed server_name; "
                                   "removed application_layer_protocol_negotiation");
    json_decref(exts);
    ch_case_free(&c);
}

/* A short changes buffer is cut, terminated, never overrun; NULL is fine too. */
static void
test_ch_changes_buffer(void **state)
{
    struct tf_client_hello_edit edit = {.max_version = 0x0303, .strip_ciphers = "*CBC*"};
    struct blob in = load("openssl-tls13.client_hello.bin");
    uint8_t *out;
    size_t out_len;
    char small[12];

    (void)state;
    memset(small, 'x', sizeof(small));
    assert_int_equal(tf_rewrite_client_hello(in.p, in.n, &edit, &out, &out_len, small, 10, NULL,
                                             0),
                     TF_REWRITE_OK);
    assert_int_equal(strlen(small), 9);
    assert_int_equal(small[10], 'x');
    free(out);
    assert_int_equal(tf_rewrite_client_hello(in.p, in.n, &edit, &out, &out_len, NULL, 0, NULL, 0),
                     TF_REWRITE_OK);
    free(out);
    free(in.p);
}

/* ----------------------------------------- ClientHello: what must be kept */

/*
 * Unknown extensions, padding, GREASE extensions, the session id and
 * pre_shared_key (last, RFC 8446 §4.2.11) come through byte for byte: the
 * result equals the same hello built without the removed extensions.
 */
static void
test_ch_keeps_other_bytes(void **state)
{
    static const uint16_t suites[] = {0x0a0a, 0x1301, 0x1303, 0xc02b};
    static const uint8_t psk[] = "\x00\x0b\x00\x05\x01\x02\x03\x04\x05\x00\x00\x00\x07"
                                 "\x00\x21\x20"
                                 "0123456789abcdef0123456789abcdef";
    static const uint8_t pad[40] = {0};
    const struct ext in_exts[] = {
        {0x4a4a, "", 0},
        EXT(0, "\x00\x0e\x00\x00\x0b" "example.com"),
        EXT(0x1234, "unknown bytes, kept"),
        EXT(43, "\x04\x03\x04\x03\x03"),
        EXT(16, "\x00\x03\x02h2"),
        {21, pad, sizeof(pad)},
        EXT(45, "\x01\x01"),
        {41, psk, sizeof(psk) - 1},
    };
    const struct ext out_exts[] = {
        {0x4a4a, "", 0},
        EXT(0x1234, "unknown bytes, kept"),
        EXT(43, "\x02\x03\x03"),
        {21, pad, sizeof(pad)},
        EXT(45, "\x01\x01"),
        {41, psk, sizeof(psk) - 1},
    };
    struct tf_client_hello_edit edit = {
        .max_version = 0x0303, .strip_sni = true, .strip_alpn = true, .strip_ciphers = "0x1303"};
    static const uint16_t out_suites[] = {0x0a0a, 0x1301, 0xc02b};
    struct msg m, expect;
    struct blob in, out;
    char changes[256];
    json_t *after, *exts;

    (void)state;
    ch_build(&m, 0x0303, suites, N(suites), in_exts, N(in_exts));
    ch_build(&expect, 0x0303, out_suites, N(out_suites), out_exts, N(out_exts));
    in = (struct blob){m.b, m.n};
    out = ch_rewrite(&in, &edit, changes, sizeof(changes));
    assert_int_equal(out.n - 4, expect.n);
    assert_memory_equal(out.p + 4, expect.b, expect.n);
    after = decode_ch(out.p + 4, out.n - 4, NULL);
    exts = json_object_get(after, "extensions");
    assert_string_equal(json_string_value(json_array_get(exts, json_array_size(exts) - 1)),
                        "pre_shared_key");
    assert_int_equal(num(after, "padding"), 40);
    assert_int_equal(num(after, "session_id_length"), 32);
    json_decref(after);
    free(out.p);
}

/* A hello whose every extension goes keeps an empty extension block (RFC 5246 allows it). */
static void
test_ch_all_extensions_removed(void **state)
{
    static const uint16_t suites[] = {0xc02f};
    const struct ext exts[] = {EXT(0, "\x00\x06\x00\x00\x03" "a.b"), EXT(16, "\x00\x03\x02h2")};
    struct tf_client_hello_edit edit = {.strip_sni = true, .strip_alpn = true};
    struct msg m, expect;
    struct blob in, out;
    char changes[256];

    (void)state;
    ch_build(&m, 0x0303, suites, N(suites), exts, N(exts));
    ch_build(&expect, 0x0303, suites, N(suites), NULL, 0);
    in = (struct blob){m.b, m.n};
    out = ch_rewrite(&in, &edit, changes, sizeof(changes));
    assert_int_equal(out.n - 4, expect.n);
    assert_memory_equal(out.p + 4, expect.b, expect.n);
    assert_string_equal(changes,
                        "removed server_name; removed application_layer_protocol_negotiation");
    free(out.p);
}

/* ------------------------------------------------ ClientHello: malformed */

static const struct tf_client_hello_edit every_edit = {
    .max_version = 0x0303, .strip_ciphers = "*CHACHA*", .strip_sni = true, .strip_alpn = true};

/* Every proper prefix is malformed, except the one that ends after compression_methods. */
static void
test_ch_every_truncation(void **state)
{
    const char *files[N(ch13_files) + N(ch12_files)];

    (void)state;
    for (size_t i = 0; i < N(ch13_files); i++)
        files[i] = ch13_files[i];
    for (size_t i = 0; i < N(ch12_files); i++)
        files[N(ch13_files) + i] = ch12_files[i];
    for (size_t f = 0; f < N(files); f++) {
        struct blob in = load(files[f]);
        size_t ext_at = ch_ext_offset(in.p, in.n);

        for (size_t n = 0; n < in.n; n++) {
            uint8_t *copy = exact_copy(in.p, n), *out = NULL;
            size_t out_len = 0;
            char why[256] = "", changes[256];
            enum tf_rewrite r = tf_rewrite_client_hello(n ? copy : NULL, n, &every_edit, &out,
                                                        &out_len, changes, sizeof(changes), why,
                                                        sizeof(why));

            if (n == ext_at) {
                assert_int_not_equal(r, TF_REWRITE_BAD);
            } else {
                if (r != TF_REWRITE_BAD)
                    fail_msg("%s cut to %zu bytes: not BAD", files[f], n);
                assert_null(out);
                assert_true(why[0] != '\0');
            }
            free(out);
            free(copy);
        }
        free(in.p);
    }
}

static void
test_ch_lying_lengths(void **state)
{
    struct blob in = load("openssl-tls13.client_hello.bin");
    size_t sid = in.p[34], suites_at = 35 + sid;
    size_t suites_len = ((size_t)in.p[suites_at] << 8) | in.p[suites_at + 1];
    size_t comp_at = suites_at + 2 + suites_len, ext_at = comp_at + 1 + in.p[comp_at];
    size_t ext_len = ((size_t)in.p[ext_at] << 8) | in.p[ext_at + 1];
    size_t sv_at = ch_find_ext(in.p, in.n, 43);
    uint8_t *m = malloc(in.n + 1);

    (void)state;
    assert_non_null(m);
    assert_int_equal(ext_at + 2 + ext_len, in.n);
#define MUTATE(stmt, part)                                                                         \
    do {                                                                                           \
        memcpy(m, in.p, in.n);                                                                     \
        stmt;                                                                                      \
        ch_rewrite_bad(m, in.n, &every_edit, part);                                                \
    } while (0)
    MUTATE(m[34] = 33, "legacy_session_id: length 33 outside 0..32");
    MUTATE(m[suites_at + 1] -= 1, "cipher_suites: odd length");
    MUTATE((m[suites_at] = 0, m[suites_at + 1] = 0), "cipher_suites: length 0 outside 2..65534");
    MUTATE((m[suites_at] = 0xff, m[suites_at + 1] = 0xfe), "cipher_suites: length 65534 runs past");
    MUTATE(m[comp_at] = 0, "legacy_compression_methods: length 0 outside 1..255");
    MUTATE(m[comp_at] = 0xff, "legacy_compression_methods: length 255 runs past");
    MUTATE(m[ext_at + 1] += 1, "extensions: length");
    MUTATE(m[ext_at + 1] -= 1, "1 bytes after the extensions");
    MUTATE(m[sv_at + 3] += 1, NULL);                 /* the extension overruns the block */
    MUTATE(m[sv_at + 3] -= 1, NULL); /* the list overruns the extension, the framing slips */
    MUTATE(m[sv_at + 4] -= 2, "supported_versions: 2 bytes after the list");
    MUTATE(m[sv_at + 4] = 0, "supported_versions: length 0 outside 2..254");
    /* A byte after the extension block. */
    memcpy(m, in.p, in.n);
    m[in.n] = 0;
    ch_rewrite_bad(m, in.n + 1, &every_edit, "1 bytes after the extensions");
    /* More than a handshake message can hold, whatever the bytes. */
    {
        struct tf_client_hello_edit e = {.strip_sni = true};
        uint8_t *out = NULL;
        size_t out_len;
        char why[128];

        assert_int_equal(tf_rewrite_client_hello(in.p, 0x1000000, &e, &out, &out_len, NULL, 0,
                                                 why, sizeof(why)),
                         TF_REWRITE_BAD);
        assert_contains(why, "more than a handshake message holds");
    }
#undef MUTATE
    free(m);
    free(in.p);
}

/* Hand-made framing errors the captures cannot show. */
static void
test_ch_bad_extensions(void **state)
{
    static const uint16_t suites[] = {0x1301};
    static const uint8_t psk[] = "\x00\x0b\x00\x05\x01\x02\x03\x04\x05\x00\x00\x00\x07"
                                 "\x00\x21\x20"
                                 "0123456789abcdef0123456789abcdef";
    const struct ext dup[] = {EXT(0x1234, "a"), EXT(10, "\x00\x02\x00\x1d"), EXT(0x1234, "b")};
    const struct ext psk_mid[] = {{41, psk, sizeof(psk) - 1}, EXT(23, "")};
    const struct ext sv_odd[] = {EXT(43, "\x03\x03\x04\x03")};
    const struct ext sv_long[] = {EXT(43, "\x04\x03\x04")};
    const struct ext ok[] = {EXT(0, "\x00\x06\x00\x00\x03" "a.b")};
    const struct {
        const struct ext *exts;
        size_t n;
        const char *why;
    } cases[] = {
        {dup, N(dup), "extension 0x1234 appears twice"},
        {psk_mid, N(psk_mid), "pre_shared_key is not the last extension"},
        {sv_odd, N(sv_odd), "supported_versions: odd length 3"},
        {sv_long, N(sv_long), "supported_versions: length 4 runs past"},
    };
    struct msg m;

    (void)state;
    for (size_t i = 0; i < N(cases); i++) {
        ch_build(&m, 0x0303, suites, N(suites), cases[i].exts, cases[i].n);
        ch_rewrite_bad(m.b, m.n, &every_edit, cases[i].why);
    }
    /* An extension cut inside its header. */
    ch_build(&m, 0x0303, suites, N(suites), ok, N(ok));
    put8(&m, 0);
    m.b[m.n - 1 - 12 - 1] += 1; /* the block length now covers the stray byte */
    ch_rewrite_bad(m.b, m.n, &every_edit, "extension truncated (1 bytes left)");
}

/*
 * Every byte of real hellos changed in two ways: whatever the result, the
 * contract holds (OK is a whole message, SAME and BAD give nothing, BAD
 * says why), and an OK result decodes in its framing.
 */
static void
test_ch_every_byte_mutated(void **state)
{
    const char *const files[] = {"openssl-tls13.client_hello.bin",
                                 "gnutls-openssl-tls13.client_hello.bin"};

    (void)state;
    for (size_t f = 0; f < N(files); f++) {
        struct blob in = load(files[f]);

        for (size_t i = 0; i < in.n; i++) {
            for (int k = 0; k < 2; k++) {
                uint8_t *copy = exact_copy(in.p, in.n), *out = NULL;
                size_t out_len = 0;
                char why[256] = "", changes[256];
                enum tf_rewrite r;

                copy[i] = k ? (uint8_t)(copy[i] + 1) : (uint8_t)(copy[i] ^ 0xff);
                r = tf_rewrite_client_hello(copy, in.n, &every_edit, &out, &out_len, changes,
                                            sizeof(changes), why, sizeof(why));
                if (r == TF_REWRITE_OK)
                    assert_hs_header(out, out_len, 1);
                else
                    assert_null(out);
                if (r == TF_REWRITE_BAD)
                    assert_true(why[0] != '\0');
                free(out);
                free(copy);
            }
        }
        free(in.p);
    }
}

/* ----------------------------------------------------------- ServerHello */

static void
test_sh_version(void **state)
{
    const char *const files[] = {"openssl-tls12-ecdhe-rsa.server_hello.bin",
                                 "openssl-tls13.server_hello.bin",
                                 "openssl-tls13-hrr.hello_retry_request.bin",
                                 "gnutls-openssl-tls12.server_hello.bin"};

    (void)state;
    for (size_t i = 0; i < N(files); i++) {
        struct blob in = load(files[i]);
        uint8_t *copy = exact_copy(in.p, in.n), *out = NULL;
        size_t out_len = 0;
        char why[256] = "";
        struct tf_server_hello_info bi, ai;
        json_t *before = decode_sh(in.p, in.n, &bi), *after;

        assert_int_equal(tf_rewrite_server_hello_version(copy, in.n, 0x0305, &out, &out_len, why,
                                                         sizeof(why)),
                         TF_REWRITE_OK);
        assert_hs_header(out, out_len, 2);
        assert_int_equal(out_len, in.n + 4);
        after = decode_sh(out + 4, out_len - 4, &ai);
        assert_int_equal(ai.legacy_version, 0x0305);
        assert_string_equal(str(after, "legacy_version"), "0x0305");
        /* TLS 1.3 names its version in supported_versions, which stays. */
        if (bi.version == 0x0304)
            assert_int_equal(ai.version, 0x0304);
        else
            assert_int_equal(ai.version, 0x0305);
        assert_same_except(before, after, "legacy_version", "version", NULL);
        assert_memory_equal(out + 6, in.p + 2, in.n - 2);
        free(out);
        out = (uint8_t *)1;
        assert_int_equal(tf_rewrite_server_hello_version(copy, in.n, bi.legacy_version, &out,
                                                         &out_len, why, sizeof(why)),
                         TF_REWRITE_SAME);
        assert_null(out);
        json_decref(before);
        json_decref(after);
        free(copy);
        free(in.p);
    }
}

/* A ServerHello (p, n bytes) whose version edit must be refused, why mentioning part. */
static void
sh_rewrite_bad(const uint8_t *p, size_t n, const char *part)
{
    uint8_t *out = NULL;
    size_t out_len;
    char why[256];

    assert_int_equal(tf_rewrite_server_hello_version(p, n, 0x0301, &out, &out_len, why,
                                                     sizeof(why)),
                     TF_REWRITE_BAD);
    assert_contains(why, part);
}

static void
test_sh_malformed(void **state)
{
    struct blob in = load("openssl-tls13.server_hello.bin");
    size_t sid = in.p[34], ext_at = 35 + sid + 3;
    uint8_t *m = malloc(in.n + 1);
    uint8_t *out;
    size_t out_len;
    char why[256];

    (void)state;
    assert_non_null(m);
    for (size_t n = 0; n < in.n; n++) {
        uint8_t *copy = exact_copy(in.p, n);
        enum tf_rewrite r;

        why[0] = '\0';
        out = NULL;
        r = tf_rewrite_server_hello_version(n ? copy : NULL, n, 0x0301, &out, &out_len, why,
                                            sizeof(why));
        if (n == ext_at) {
            assert_int_equal(r, TF_REWRITE_OK); /* a ServerHello without extensions */
            free(out);
        } else {
            assert_int_equal(r, TF_REWRITE_BAD);
            assert_null(out);
            assert_true(why[0] != '\0');
        }
        free(copy);
    }
    memcpy(m, in.p, in.n);
    m[34] = 33;
    sh_rewrite_bad(m, in.n, "legacy_session_id_echo: length 33 outside 0..32");
    memcpy(m, in.p, in.n);
    m[ext_at + 1] += 1;
    sh_rewrite_bad(m, in.n, "extensions: length");
    memcpy(m, in.p, in.n);
    m[in.n] = 0;
    sh_rewrite_bad(m, in.n + 1, "1 bytes after the extensions");
    free(m);
    free(in.p);
}

/* ----------------------------------------------------------- Certificate */

static void
cert_rewrite(const uint8_t *p, size_t n, bool tls13, uint32_t mask, enum tf_rewrite expect,
             unsigned expect_kept, unsigned expect_total, struct blob *out)
{
    uint8_t *copy = exact_copy(p, n);
    char why[256] = "";
    unsigned kept = 99, total = 99;
    enum tf_rewrite r;

    out->p = NULL;
    out->n = 0;
    r = tf_rewrite_certificate(copy, n, tls13, mask, &out->p, &out->n, &kept, &total, why,
                               sizeof(why));
    free(copy);
    if (r != expect)
        fail_msg("certificate rewrite gave %d, not %d (%s)", (int)r, (int)expect, why);
    assert_int_equal(kept, expect_kept);
    assert_int_equal(total, expect_total);
    if (r == TF_REWRITE_OK)
        assert_hs_header(out->p, out->n, 11);
    else
        assert_null(out->p);
}

/* The first two entries of a captured TLS 1.2 Certificate's chain. */
static void
chain_entries(const struct blob *in, struct tf_cursor *e0, struct tf_cursor *e1)
{
    struct tf_cursor c, list = {NULL, NULL};

    tf_cursor_init(&c, in->p, in->n);
    assert_true(tf_cursor_sub24(&c, &list));
    assert_true(tf_cursor_sub24(&list, e0));
    assert_true(tf_cursor_sub24(&list, e1));
}

static void
test_cert_tls12_strip_intermediates(void **state)
{
    const char *const files[] = {"openssl-tls12-ecdhe-rsa.certificate.bin",
                                 "openssl-gnutls-tls12.certificate.bin",
                                 "gnutls-openssl-tls12.certificate.bin"};

    (void)state;
    for (size_t i = 0; i < N(files); i++) {
        struct blob in = load(files[i]), out;
        json_t *before = decode_cert(in.p, in.n, false), *after;
        const json_t *chain = json_object_get(before, "chain");
        size_t leaf_len = get24(in.p + 3);

        assert_int_equal(num(before, "chain_length"), 2);
        /* keep = leaf */
        cert_rewrite(in.p, in.n, false, 1, TF_REWRITE_OK, 1, 2, &out);
        after = decode_cert(out.p + 4, out.n - 4, false);
        assert_int_equal(num(after, "chain_length"), 1);
        assert_true(json_equal(json_array_get(json_object_get(after, "chain"), 0),
                               json_array_get(chain, 0)));
        assert_int_equal(out.n - 4, 3 + 3 + leaf_len);
        assert_memory_equal(out.p + 7, in.p + 3, 3 + leaf_len);
        json_decref(after);
        free(out.p);
        /* keep = 1: the intermediate alone */
        cert_rewrite(in.p, in.n, false, 2, TF_REWRITE_OK, 1, 2, &out);
        after = decode_cert(out.p + 4, out.n - 4, false);
        assert_true(json_equal(json_array_get(json_object_get(after, "chain"), 0),
                               json_array_get(chain, 1)));
        json_decref(after);
        free(out.p);
        /* nothing kept: an empty certificate_list is still a well-formed message */
        cert_rewrite(in.p, in.n, false, 0, TF_REWRITE_OK, 0, 2, &out);
        assert_int_equal(out.n, 4 + 3);
        after = decode_cert(out.p + 4, out.n - 4, false);
        assert_int_equal(num(after, "chain_length"), 0);
        json_decref(after);
        free(out.p);
        /* everything kept, and bits past the chain: no change */
        cert_rewrite(in.p, in.n, false, 3, TF_REWRITE_SAME, 2, 2, &out);
        cert_rewrite(in.p, in.n, false, UINT32_MAX, TF_REWRITE_SAME, 2, 2, &out);
        json_decref(before);
        free(in.p);
    }
}

/* A longer chain (entries repeated by hand) with a mask that skips positions. */
static void
test_cert_tls12_positions(void **state)
{
    struct blob in = load("openssl-tls12-ecdhe-rsa.certificate.bin"), out;
    struct tf_cursor e0 = {NULL, NULL}, e1 = {NULL, NULL};
    struct msg m;
    size_t at;
    json_t *before, *after;

    (void)state;
    chain_entries(&in, &e0, &e1);
    m.n = 0;
    at = open_block(&m, 3);
    for (int i = 0; i < 3; i++) {
        put24(&m, (uint32_t)tf_cursor_left(&e0));
        putn(&m, e0.p, tf_cursor_left(&e0));
        put24(&m, (uint32_t)tf_cursor_left(&e1));
        putn(&m, e1.p, tf_cursor_left(&e1));
    }
    close_block(&m, at, 3);
    before = decode_cert(m.b, m.n, false);
    cert_rewrite(m.b, m.n, false, (1u << 0) | (1u << 3) | (1u << 5) | (1u << 9), TF_REWRITE_OK,
                 3, 6, &out);
    after = decode_cert(out.p + 4, out.n - 4, false);
    assert_int_equal(num(after, "chain_length"), 3);
    assert_true(json_equal(json_array_get(json_object_get(after, "chain"), 0),
                           json_array_get(json_object_get(before, "chain"), 0)));
    assert_true(json_equal(json_array_get(json_object_get(after, "chain"), 1),
                           json_array_get(json_object_get(before, "chain"), 3)));
    assert_true(json_equal(json_array_get(json_object_get(after, "chain"), 2),
                           json_array_get(json_object_get(before, "chain"), 5)));
    json_decref(before);
    json_decref(after);
    free(out.p);
    free(in.p);
}

/*
 * TLS 1.3 layout (RFC 8446 §4.4.2), made from a captured chain: a request
 * context, and the leaf carrying the captured OCSP response as its
 * status_request extension, which must come through with it.
 */
static void
test_cert_tls13_layout(void **state)
{
    struct blob in = load("openssl-tls12-ocsp.certificate.bin");
    struct blob status = load("openssl-tls12-ocsp.certificate_status.bin");
    struct tf_cursor e0 = {NULL, NULL}, e1 = {NULL, NULL};
    struct msg m;
    size_t list_at, ext_at;
    struct blob out;
    json_t *before, *after;

    (void)state;
    chain_entries(&in, &e0, &e1);
    m.n = 0;
    put8(&m, 2);
    put16(&m, 0xc0de);
    list_at = open_block(&m, 3);
    put24(&m, (uint32_t)tf_cursor_left(&e0));
    putn(&m, e0.p, tf_cursor_left(&e0));
    ext_at = m.n;
    put16(&m, (uint16_t)(4 + status.n));
    put16(&m, 5); /* status_request */
    put16(&m, (uint16_t)status.n);
    putn(&m, status.p, status.n);
    put24(&m, (uint32_t)tf_cursor_left(&e1));
    putn(&m, e1.p, tf_cursor_left(&e1));
    put16(&m, 0);
    close_block(&m, list_at, 3);
    before = decode_cert(m.b, m.n, true);
    assert_int_equal(num(before, "chain_length"), 2);

    cert_rewrite(m.b, m.n, true, 1, TF_REWRITE_OK, 1, 2, &out);
    after = decode_cert(out.p + 4, out.n - 4, true);
    assert_int_equal(num(after, "context_length"), 2);
    assert_int_equal(num(after, "chain_length"), 1);
    assert_true(json_equal(json_array_get(json_object_get(after, "chain"), 0),
                           json_array_get(json_object_get(before, "chain"), 0)));
    /* context, then the leaf entry with its extensions, as they were */
    assert_memory_equal(out.p + 4, m.b, 3);
    assert_int_equal(out.n - 4, 3 + 3 + (ext_at + 2 + 4 + status.n - (list_at + 3)));
    assert_memory_equal(out.p + 4 + 6, m.b + list_at + 3, ext_at + 2 + 4 + status.n - list_at - 3);
    json_decref(after);
    free(out.p);

    cert_rewrite(m.b, m.n, true, 2, TF_REWRITE_OK, 1, 2, &out);
    after = decode_cert(out.p + 4, out.n - 4, true);
    assert_true(json_equal(json_array_get(json_object_get(after, "chain"), 0),
                           json_array_get(json_object_get(before, "chain"), 1)));
    json_decref(after);
    free(out.p);
    cert_rewrite(m.b, m.n, true, 3, TF_REWRITE_SAME, 2, 2, &out);
    /* Each entry has its own extension block: the same type in two entries is no duplicate. */
    {
        static const uint8_t two[] = {0, 0, 0, 24, 0, 0, 1, 0x30, 0, 6, 0x12, 0x34, 0, 2, 'a', 'b',
                                      0, 0, 1, 0x31, 0, 6, 0x12, 0x34, 0, 2, 'c', 'd'};
        static const uint8_t second[] = {11, 0, 0, 16, 0, 0, 0, 12, 0, 0, 1, 0x31, 0, 6,
                                         0x12, 0x34, 0, 2, 'c', 'd'};

        assert_int_equal(sizeof(two), 4 + 24);
        cert_rewrite(two, sizeof(two), true, 2, TF_REWRITE_OK, 1, 2, &out);
        assert_int_equal(out.n, sizeof(second));
        assert_memory_equal(out.p, second, sizeof(second));
        free(out.p);
    }
    /* The same bytes in the other layout do not frame. */
    cert_rewrite(m.b, m.n, false, 1, TF_REWRITE_BAD, 0, 0, &out);
    cert_rewrite(in.p, in.n, true, 1, TF_REWRITE_BAD, 0, 0, &out);
    json_decref(before);
    free(status.p);
    free(in.p);
}

/* A Certificate (p, n bytes) that must be refused; why says so. */
static void
cert_rewrite_bad(const uint8_t *p, size_t n, bool tls13, uint32_t mask, char *why,
                 size_t why_len)
{
    uint8_t *o = NULL;
    size_t olen;
    unsigned kept, total;

    assert_int_equal(tf_rewrite_certificate(p, n, tls13, mask, &o, &olen, &kept, &total, why,
                                            why_len),
                     TF_REWRITE_BAD);
}

static void
test_cert_malformed(void **state)
{
    const char *const files[] = {"openssl-tls12-ecdhe-rsa.certificate.bin",
                                 "openssl-tls12-ed25519.certificate.bin"};
    static const uint8_t empty_entry[] = {0, 0, 3, 0, 0, 0};
    static const uint8_t entry_overrun[] = {0, 0, 4, 0, 0, 9, 0x30};
    static const uint8_t tls13_ext_overrun[] = {0, 0, 0, 6, 0, 0, 1, 0x30, 0, 9};
    static const uint8_t tls13_ext_dup[] = {0, 0, 0, 14, 0, 0, 1, 0x30, 0, 8,
                                            0x12, 0x34, 0, 0, 0x12, 0x34, 0, 0};
    static const uint8_t tls13_ctx_overrun[] = {5, 0, 0};
    static const struct {
        const uint8_t *p;
        size_t n;
        bool tls13;
        uint32_t mask;
        const char *why;
        bool whole; /* why is all of the reason, not a part */
    } bad[] = {
        {empty_entry, sizeof(empty_entry), false, 1,
         "certificate 0: length 0 outside 1..16777215", true},
        {entry_overrun, sizeof(entry_overrun), false, 1,
         "certificate 0: length 9 runs past its container", false},
        {tls13_ext_overrun, sizeof(tls13_ext_overrun), true, 1,
         "certificate 0 extensions: length 9 runs past", false},
        {tls13_ext_dup, sizeof(tls13_ext_dup), true, 0, "appears twice", false},
        {tls13_ctx_overrun, sizeof(tls13_ctx_overrun), true, 0,
         "certificate_request_context: length 5 runs past", false},
    };
    struct blob out;
    char why[256];
    unsigned kept, total;
    uint8_t *o = NULL;
    size_t olen;

    (void)state;
    for (size_t f = 0; f < N(files); f++) {
        struct blob in = load(files[f]);
        uint8_t *m = malloc(in.n + 1);

        assert_non_null(m);
        for (size_t n = 0; n < in.n; n++) {
            uint8_t *copy = exact_copy(in.p, n);

            why[0] = '\0';
            assert_int_equal(tf_rewrite_certificate(n ? copy : NULL, n, false, 1, &o, &olen,
                                                    &kept, &total, why, sizeof(why)),
                             TF_REWRITE_BAD);
            assert_null(o);
            assert_true(why[0] != '\0');
            assert_int_equal(kept, 0);
            assert_int_equal(total, 0);
            free(copy);
        }
        memcpy(m, in.p, in.n);
        m[2] += 1;
        cert_rewrite_bad(m, in.n, false, 1, why, sizeof(why));
        assert_contains(why, "certificate_list: length");
        memcpy(m, in.p, in.n);
        m[in.n] = 0;
        cert_rewrite_bad(m, in.n + 1, false, 1, why, sizeof(why));
        assert_contains(why, "1 bytes after certificate_list");
        memcpy(m, in.p, in.n);
        m[5] += 1; /* the leaf claims a byte of what follows */
        cert_rewrite_bad(m, in.n, false, 1, why, sizeof(why));
        free(m);
        free(in.p);
    }
    cert_rewrite(empty_entry, sizeof(empty_entry), false, 1, TF_REWRITE_BAD, 0, 0, &out);
    for (size_t i = 0; i < N(bad); i++) {
        cert_rewrite_bad(bad[i].p, bad[i].n, bad[i].tls13, bad[i].mask, why, sizeof(why));
        if (bad[i].whole)
            assert_string_equal(why, bad[i].why);
        else
            assert_contains(why, bad[i].why);
    }
    /* An empty chain has nothing to strip. */
    cert_rewrite((const uint8_t *)"\0\0\0", 3, false, 0, TF_REWRITE_SAME, 0, 0, &out);
}

/* ------------------------------------------------ OpenSSL as the judge */

/* Control: the captured hello as it is gets TLS 1.3 from OpenSSL. */
static void
test_openssl_unmodified_hello(void **state)
{
    struct blob in = load("openssl-tls13.client_hello.bin");
    struct blob msg = whole_message(&in);
    struct server_run r;

    (void)state;
    server_feed(msg.p, msg.n, 16384, 0, &r);
    assert_true(r.server_hello);
    assert_int_equal(r.sh.version, 0x0304);
    assert_int_equal(r.ssl_version, TLS1_3_VERSION);
    assert_true(r.sni_seen);
    assert_string_equal(r.sni, "server.lab.test");
    assert_true(r.alpn_offered);
    free(msg.p);
    free(in.p);
}

static void
test_openssl_downgrade_tls12(void **state)
{
    (void)state;
    for (size_t i = 0; i < N(ch13_files); i++) {
        for (int remove = 0; remove < 2; remove++) {
            struct tf_client_hello_edit edit = {.max_version = 0x0303,
                                                .remove_supported_versions = remove};
            struct blob in = load(ch13_files[i]);
            char changes[256];
            struct blob out = ch_rewrite(&in, &edit, changes, sizeof(changes));
            struct server_run r;

            server_feed(out.p, out.n, 16384, 0, &r);
            if (!r.server_hello)
                fail_msg("%s: OpenSSL answered alert %d", ch13_files[i], r.alert);
            assert_int_equal(r.sh.version, 0x0303);
            assert_int_equal(r.ssl_version, TLS1_2_VERSION);
            /* OpenSSL can do 1.3, so it marks the random (RFC 8446 §4.1.3). */
            assert_true(r.sh.downgrade_sentinel);
            free(out.p);
            free(in.p);
        }
    }
}

static void
test_openssl_downgrade_tls11(void **state)
{
    struct tf_client_hello_edit edit = {.max_version = 0x0302};
    struct blob in = load("openssl-tls13.client_hello.bin");
    char changes[256];
    struct blob out = ch_rewrite(&in, &edit, changes, sizeof(changes));
    struct server_run r;

    (void)state;
    server_feed(out.p, out.n, 16384, TLS1_VERSION, &r);
    if (!r.server_hello)
        fail_msg("OpenSSL answered alert %d", r.alert);
    assert_int_equal(r.sh.version, 0x0302);
    assert_int_equal(r.ssl_version, TLS1_1_VERSION);
    assert_true(r.sh.downgrade_sentinel);
    free(out.p);
    free(in.p);
}

static void
test_openssl_strip_ciphers(void **state)
{
    struct tf_client_hello_edit edit = {.strip_ciphers = "TLS_AES_256_GCM_SHA384:TLS_CHACHA20*"};
    struct blob in = load("openssl-tls13.client_hello.bin");
    char changes[256];
    struct blob out = ch_rewrite(&in, &edit, changes, sizeof(changes));
    struct server_run r;

    (void)state;
    server_feed(out.p, out.n, 16384, 0, &r);
    assert_true(r.server_hello);
    assert_int_equal(r.sh.version, 0x0304);
    assert_int_equal(r.sh.cipher_suite, 0x1301);
    free(out.p);

    /* No TLS 1.3 suite left: handshake_failure, as docs/faults.md says. */
    edit.strip_ciphers = "TLS_AES_*,TLS_CHACHA20_POLY1305_SHA256";
    out = ch_rewrite(&in, &edit, changes, sizeof(changes));
    server_feed(out.p, out.n, 16384, 0, &r);
    assert_false(r.server_hello);
    assert_int_equal(r.alert, 40);
    free(out.p);
    free(in.p);
}

static void
test_openssl_strip_sni_alpn(void **state)
{
    struct tf_client_hello_edit edit = {.strip_sni = true};
    struct blob in = load("openssl-tls13.client_hello.bin");
    char changes[256];
    struct blob out = ch_rewrite(&in, &edit, changes, sizeof(changes));
    struct server_run r;

    (void)state;
    server_feed(out.p, out.n, 16384, 0, &r);
    assert_true(r.server_hello);
    assert_false(r.sni_seen);
    assert_true(r.alpn_offered);
    free(out.p);

    edit = (struct tf_client_hello_edit){.strip_alpn = true};
    out = ch_rewrite(&in, &edit, changes, sizeof(changes));
    server_feed(out.p, out.n, 16384, 0, &r);
    assert_true(r.server_hello);
    assert_true(r.sni_seen);
    assert_false(r.alpn_offered);
    free(out.p);
    free(in.p);
}

/* Every edit at once on GnuTLS's hello, in records of many sizes: OpenSSL still reads it. */
static void
test_openssl_all_edits_gnutls_hello(void **state)
{
    struct tf_client_hello_edit edit = {.max_version = 0x0303,
                                        .strip_ciphers = "*CHACHA20*",
                                        .strip_sni = true,
                                        .strip_alpn = true};
    struct blob in = load("gnutls-openssl-tls13.client_hello.bin");
    char changes[512];
    struct blob out = ch_rewrite(&in, &edit, changes, sizeof(changes));
    struct server_run r;

    (void)state;
    /* Small records too: the `fragment` fault's framing, reassembled by OpenSSL. */
    for (size_t frag = 7; frag <= 16384; frag = frag * 7 + 3) {
        server_feed(out.p, out.n, frag, 0, &r);
        assert_true(r.server_hello);
        assert_int_equal(r.sh.version, 0x0303);
        assert_false(r.sni_seen);
        assert_false(r.alpn_offered);
        assert_int_not_equal(r.sh.cipher_suite, 0xcca8);
        assert_int_not_equal(r.sh.cipher_suite, 0xcca9);
    }
    free(out.p);
    free(in.p);
}

/* --------------------------------------------------------------- records */

/* Splits framed records back into their bodies and checks every header. */
static void
assert_frames(const uint8_t *out, size_t out_len, uint8_t type, uint16_t version,
              const uint8_t *p, size_t n, size_t max)
{
    size_t at = 0, off = 0, records = 0;

    while (at < out_len) {
        size_t frag;

        assert_true(out_len - at >= 5);
        assert_int_equal(out[at], type);
        assert_int_equal((out[at + 1] << 8) | out[at + 2], version);
        frag = ((size_t)out[at + 3] << 8) | out[at + 4];
        assert_true(frag >= 1 && frag <= max);
        /* Only the last record may be short. */
        if (at + 5 + frag < out_len)
            assert_int_equal(frag, max);
        assert_true(frag <= n - off);
        assert_memory_equal(out + at + 5, p + off, frag);
        at += 5 + frag;
        off += frag;
        records++;
    }
    assert_int_equal(off, n);
    assert_int_equal(records, (n + max - 1) / max);
}

static void
test_frame_sizes(void **state)
{
    static const size_t sizes[] = {1, 16, 1000, 16383, 16384};
    static const size_t lengths[] = {1, 15, 16, 17, 330, 16384, 16385, 40000};
    uint8_t *data = malloc(40000);

    (void)state;
    assert_non_null(data);
    for (size_t i = 0; i < 40000; i++)
        data[i] = (uint8_t)(i * 31 + 7);
    for (size_t s = 0; s < N(sizes); s++) {
        for (size_t l = 0; l < N(lengths); l++) {
            uint8_t *copy = exact_copy(data, lengths[l]), *out = NULL;
            size_t out_len = 0;

            assert_true(tf_rewrite_frame(22, 0x0303, copy, lengths[l], sizes[s], &out, &out_len));
            assert_int_equal(out_len,
                             lengths[l] + 5 * ((lengths[l] + sizes[s] - 1) / sizes[s]));
            assert_frames(out, out_len, 22, 0x0303, data, lengths[l], sizes[s]);
            free(out);
            free(copy);
        }
    }
    free(data);
}

static void
test_frame_real_stream(void **state)
{
    struct blob in = load("openssl-tls12-ecdhe-rsa.certificate.bin");
    uint8_t *out;
    size_t out_len;

    (void)state;
    assert_true(tf_rewrite_frame(23, 0x0301, in.p, in.n, 16, &out, &out_len));
    assert_frames(out, out_len, 23, 0x0301, in.p, in.n, 16);
    free(out);
    free(in.p);
}

static void
test_frame_limits(void **state)
{
    static const uint8_t b[4] = {1, 2, 3, 4};
    uint8_t *out = (uint8_t *)1;
    size_t out_len = 1;

    (void)state;
    assert_false(tf_rewrite_frame(22, 0x0303, b, sizeof(b), 0, &out, &out_len));
    assert_null(out);
    assert_false(tf_rewrite_frame(22, 0x0303, b, sizeof(b), 16385, &out, &out_len));
    assert_null(out);
    assert_false(tf_rewrite_frame(22, 0x0303, NULL, 4, 16, &out, &out_len));
    /* No bytes, no records (an empty handshake fragment is illegal), but a buffer. */
    assert_true(tf_rewrite_frame(22, 0x0303, NULL, 0, 16, &out, &out_len));
    assert_non_null(out);
    assert_int_equal(out_len, 0);
    free(out);
}

static void
test_alert_record(void **state)
{
    static const uint8_t expect[7] = {21, 3, 3, 0, 2, 2, 40};
    uint8_t rec[7];
    json_t *o = json_object();

    (void)state;
    tf_rewrite_alert_record(0x0303, 2, 40, rec);
    assert_memory_equal(rec, expect, 7);
    assert_true(tf_decode_alert(rec + 5, 2, o));
    assert_string_equal(str(o, "level"), "fatal");
    assert_string_equal(str(o, "description"), "handshake_failure");
    json_decref(o);
    tf_rewrite_alert_record(0x0301, 1, 0, rec);
    assert_memory_equal(rec, "\x15\x03\x01\x00\x02\x01\x00", 7);
    tf_rewrite_alert_record(0x0304, 2, 70, rec);
    assert_memory_equal(rec, "\x15\x03\x04\x00\x02\x02\x46", 7);
}

/* ------------------------------------------------------------------- HTTP */

/* Splits a response at the blank line and checks the head's fixed lines. */
static void
http_check(const uint8_t *out, size_t out_len, const char *status_line, size_t *body_len)
{
    char *text = malloc(out_len + 1);
    const char *sep, *cl;
    char expect[64];
    char head[1024];

    assert_non_null(text);
    memcpy(text, out, out_len);
    text[out_len] = '\0';
    sep = strstr(text, "\r\n\r\n");
    assert_non_null(sep);
    assert_true((size_t)(sep - text) < sizeof(head));
    memcpy(head, text, (size_t)(sep - text));
    head[sep - text] = '\0';
    assert_memory_equal(text, status_line, strlen(status_line));
    assert_memory_equal(text + strlen(status_line), "\r\n", 2);
    assert_contains(head, "\r\nContent-Type: text/html\r\n");
    assert_contains(head, "\r\nConnection: close");
    *body_len = out_len - (size_t)(sep + 4 - text);
    snprintf(expect, sizeof(expect), "\r\nContent-Length: %zu", *body_len);
    cl = strstr(head, expect);
    assert_non_null(cl);
    free(text);
}

static void
test_http_response(void **state)
{
    static const struct {
        unsigned status;
        const char *line;
    } cases[] = {
        {400, "HTTP/1.1 400 Bad Request"},
        {403, "HTTP/1.1 403 Forbidden"},
        {404, "HTTP/1.1 404 Not Found"},
        {500, "HTTP/1.1 500 Internal Server Error"},
        {502, "HTTP/1.1 502 Bad Gateway"},
        {503, "HTTP/1.1 503 Service Unavailable"},
        {299, "HTTP/1.1 299 Unknown"},
    };

    (void)state;
    for (size_t i = 0; i < N(cases); i++) {
        uint8_t *out = NULL;
        size_t out_len = 0, body_len;
        char page[128];

        assert_true(tf_rewrite_http_response(cases[i].status, NULL, 0, &out, &out_len));
        http_check(out, out_len, cases[i].line, &body_len);
        /* The default page names the status. */
        snprintf(page, sizeof(page), "<h1>%s</h1>", cases[i].line + 9);
        assert_true(body_len > 0);
        assert_non_null(memmem(out + out_len - body_len, body_len, page, strlen(page)));
        free(out);
    }
}

static void
test_http_response_body(void **state)
{
    static const char body[] = "not TLS\r\n\r\nreally";
    uint8_t *out = NULL;
    size_t out_len = 0, body_len;

    (void)state;
    assert_true(tf_rewrite_http_response(400, (const uint8_t *)body, strlen(body), &out,
                                         &out_len));
    http_check(out, out_len, "HTTP/1.1 400 Bad Request", &body_len);
    /* The blank line search stops at the head's end; the body follows whole. */
    assert_true(out_len > strlen(body));
    assert_memory_equal(out + out_len - strlen(body), body, strlen(body));
    free(out);
    /* An empty body is a body: Content-Length 0. */
    assert_true(tf_rewrite_http_response(503, (const uint8_t *)"", 0, &out, &out_len));
    http_check(out, out_len, "HTTP/1.1 503 Service Unavailable", &body_len);
    assert_int_equal(body_len, 0);
    free(out);
    /* A status line carries three digits. */
    out = (uint8_t *)1;
    assert_false(tf_rewrite_http_response(99, NULL, 0, &out, &out_len));
    assert_null(out);
    assert_false(tf_rewrite_http_response(1000, NULL, 0, &out, &out_len));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ch_downgrade_to_tls12),
        cmocka_unit_test(test_ch_downgrade_to_tls11),
        cmocka_unit_test(test_ch_downgrade_removes_empty_extension),
        cmocka_unit_test(test_ch_remove_supported_versions),
        cmocka_unit_test(test_ch_remove_supported_versions_alone),
        cmocka_unit_test(test_ch_downgrade_nothing_to_do),
        cmocka_unit_test(test_ch_downgrade_tls12_hello),
        cmocka_unit_test(test_ch_downgrade_never_raises),
        cmocka_unit_test(test_ch_downgrade_keeps_grease),
        cmocka_unit_test(test_ch_strip_ciphers_chacha),
        cmocka_unit_test(test_ch_strip_ciphers_globs),
        cmocka_unit_test(test_ch_strip_ciphers_no_match),
        cmocka_unit_test(test_ch_strip_ciphers_grease_and_empty),
        cmocka_unit_test(test_ch_strip_sni),
        cmocka_unit_test(test_ch_strip_alpn),
        cmocka_unit_test(test_ch_strip_absent),
        cmocka_unit_test(test_ch_all_edits),
        cmocka_unit_test(test_ch_changes_buffer),
        cmocka_unit_test(test_ch_keeps_other_bytes),
        cmocka_unit_test(test_ch_all_extensions_removed),
        cmocka_unit_test(test_ch_every_truncation),
        cmocka_unit_test(test_ch_lying_lengths),
        cmocka_unit_test(test_ch_bad_extensions),
        cmocka_unit_test(test_ch_every_byte_mutated),
        cmocka_unit_test(test_sh_version),
        cmocka_unit_test(test_sh_malformed),
        cmocka_unit_test(test_cert_tls12_strip_intermediates),
        cmocka_unit_test(test_cert_tls12_positions),
        cmocka_unit_test(test_cert_tls13_layout),
        cmocka_unit_test(test_cert_malformed),
        cmocka_unit_test(test_openssl_unmodified_hello),
        cmocka_unit_test(test_openssl_downgrade_tls12),
        cmocka_unit_test(test_openssl_downgrade_tls11),
        cmocka_unit_test(test_openssl_strip_ciphers),
        cmocka_unit_test(test_openssl_strip_sni_alpn),
        cmocka_unit_test(test_openssl_all_edits_gnutls_hello),
        cmocka_unit_test(test_frame_sizes),
        cmocka_unit_test(test_frame_real_stream),
        cmocka_unit_test(test_frame_limits),
        cmocka_unit_test(test_alert_record),
        cmocka_unit_test(test_http_response),
        cmocka_unit_test(test_http_response_body),
    };

    return cmocka_run_group_tests(tests, setup_server_identity, teardown_server_identity);
}
