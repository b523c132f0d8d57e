/*
 * test_decode.c — the handshake decoders (decode.c) on real handshakes and
 * on damaged ones.
 *
 * The real messages are captured from OpenSSL and GnuTLS by
 * scripts/capture-testdata.py (tests/data/README.md); the assertions name
 * what those runs negotiated, not bytes, so a fresh capture keeps passing.
 * The damaged ones are made here: every truncation of real messages,
 * lengths that overrun or underrun their containers, empty lists that the
 * RFCs forbid, duplicate extensions, certificate DER that OpenSSL refuses,
 * alerts of the wrong size.  Each copy is allocated at its exact size so
 * that AddressSanitizer catches a read past the end.
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

#include "tlsfault/cursor.h"
#include "tlsfault/decode.h"
#include "testdata.h"

/* ------------------------------------------------------------------ helpers */

static void
assert_malformed(const json_t *obj, const char *expected)
{
    const json_t *m = json_object_get(obj, "malformed");

    if (!json_is_string(m))
        fail_msg("no \"malformed\" where \"%s\" was expected", expected);
    assert_string_equal(json_string_value(m), expected);
}

static void
assert_malformed_contains(const json_t *obj, const char *part)
{
    const json_t *m = json_object_get(obj, "malformed");

    if (!json_is_string(m))
        fail_msg("no \"malformed\" where \"...%s...\" was expected", part);
    if (strstr(json_string_value(m), part) == NULL)
        fail_msg("malformed \"%s\" lacks \"%s\"", json_string_value(m), part);
}

static void
assert_rfc3339(const char *t)
{
    assert_int_equal(strlen(t), 20);
    assert_true(t[4] == '-' && t[7] == '-' && t[10] == 'T' && t[13] == ':' && t[16] == ':' &&
                t[19] == 'Z');
}

/* ClientHello up to and including legacy_compression_methods. */
static void
ch_head(struct msg *m)
{
    static const uint8_t random[32] = {1, 2, 3};

    m->n = 0;
    put16(m, 0x0303);
    putn(m, random, sizeof(random));
    put8(m, 0);
    put16(m, 4);
    put16(m, 0x1301);
    put16(m, 0x1302);
    put8(m, 1);
    put8(m, 0);
}

/* A ClientHello whose extension block holds exactly the given bytes. */
static void
ch_with_exts(struct msg *m, const uint8_t *exts, size_t n)
{
    ch_head(m);
    put16(m, (uint16_t)n);
    putn(m, exts, n);
}

static json_t *
decode_ch(const uint8_t *p, size_t n, bool *ok, struct tf_client_hello_info *info)
{
    json_t *obj = json_object();
    uint8_t *c = exact_copy(p, n);

    *ok = tf_decode_client_hello(c, n, obj, info);
    free(c);
    return obj;
}

static json_t *
decode_sh(const uint8_t *p, size_t n, bool *ok, struct tf_server_hello_info *info)
{
    json_t *obj = json_object();
    uint8_t *c = exact_copy(p, n);

    *ok = tf_decode_server_hello(c, n, obj, info);
    free(c);
    return obj;
}

/* Where a hello's extension block starts (its 2-byte length), by walking the fixed fields. */
static size_t
hello_ext_offset(const struct blob *b, bool server)
{
    struct tf_cursor c, v;
    uint16_t u16;
    uint8_t u8;

    tf_cursor_init(&c, b->p, b->n);
    assert_true(tf_cursor_skip(&c, 2 + 32));
    assert_true(tf_cursor_sub8(&c, &v));
    if (server) {
        assert_true(tf_cursor_u16(&c, &u16));
        assert_true(tf_cursor_u8(&c, &u8));
    } else {
        assert_true(tf_cursor_sub16(&c, &v));
        assert_true(tf_cursor_sub8(&c, &v));
    }
    return (size_t)(c.p - b->p);
}

/* Offset of extension `type` (its type field) in a hello, or 0 when absent. */
static size_t
hello_find_ext(const struct blob *b, bool server, uint16_t type)
{
    struct tf_cursor c, exts = {NULL, NULL}, data;
    uint16_t t = 0;

    tf_cursor_init(&c, b->p, b->n);
    assert_true(tf_cursor_skip(&c, hello_ext_offset(b, server)));
    assert_true(tf_cursor_sub16(&c, &exts));
    while (!tf_cursor_empty(&exts)) {
        size_t at = (size_t)(exts.p - b->p);
        assert_true(tf_cursor_u16(&exts, &t));
        assert_true(tf_cursor_sub16(&exts, &data));
        if (t == type)
            return at;
    }
    return 0;
}

static uint16_t
get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static void
set16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* The ClientHellos every generic test runs over: OpenSSL and GnuTLS, 1.3 and 1.2. */
static const char *const client_hellos[] = {
    "openssl-tls13.client_hello.bin",
    "openssl-tls13-hrr.client_hello2.bin",
    "openssl-tls12-ecdhe-rsa.client_hello.bin",
    "openssl-tls12-resumed.client_hello.bin",
    "openssl-tls12-ocsp.client_hello.bin",
    "gnutls-openssl-tls13.client_hello.bin",
    "gnutls-openssl-tls12.client_hello.bin",
};

static const char *const server_hellos[] = {
    "openssl-tls13.server_hello.bin",
    "openssl-tls13-hrr.hello_retry_request.bin",
    "openssl-tls12-ecdhe-rsa.server_hello.bin",
    "openssl-gnutls-tls13.server_hello.bin",
    "openssl-gnutls-tls12.server_hello.bin",
    "gnutls-openssl-tls12.server_hello.bin",
};

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* ------------------------------------------------------------------ ClientHello */

static void
test_client_hello_openssl_tls13(void **state)
{
    struct blob b = load("openssl-tls13.client_hello.bin");
    struct tf_client_hello_info info;
    bool ok;
    json_t *o;

    (void)state;
    memset(&info, 0xa5, sizeof(info));
    o = decode_ch(b.p, b.n, &ok, &info);
    assert_true(ok);
    assert_null(json_object_get(o, "malformed"));
    assert_true(info.has_sni);
    assert_string_equal(info.sni, "server.lab.test");
    assert_int_equal(info.max_version, 0x0304);
    assert_string_equal(str(o, "legacy_version"), "TLS 1.2");
    assert_int_equal(strlen(str(o, "random")), 64);
    assert_int_equal(strspn(str(o, "random"), "0123456789abcdef"), 64);
    assert_int_equal(num(o, "session_id_length"), 32);
    assert_string_equal(str(o, "server_name"), "server.lab.test");
    json_t *suites = json_object_get(o, "cipher_suites");
    assert_int_equal(num(o, "cipher_suites_count"), json_array_size(suites));
    assert_true(json_array_size(suites) > 3);
    assert_string_equal(json_string_value(json_array_get(suites, 0)), "TLS_AES_256_GCM_SHA384");
    assert_true(has(suites, "TLS_AES_128_GCM_SHA256"));
    assert_true(has(suites, "TLS_CHACHA20_POLY1305_SHA256"));
    assert_true(has(suites, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"));
    assert_true(has(suites, "TLS_EMPTY_RENEGOTIATION_INFO_SCSV"));
    assert_strings(json_object_get(o, "compression_methods"), "null", NULL);
    assert_strings(json_object_get(o, "supported_versions"), "TLS 1.3", "TLS 1.2", "TLS 1.1",
                   "TLS 1.0", NULL);
    assert_true(has(json_object_get(o, "supported_groups"), "x25519"));
    assert_true(has(json_object_get(o, "supported_groups"), "secp256r1"));
    assert_true(has(json_object_get(o, "supported_groups"), "ffdhe2048"));
    assert_strings(json_object_get(o, "key_share"), "x25519", NULL);
    assert_strings(json_object_get(o, "alpn"), "h2", "http/1.1", NULL);
    assert_true(has(json_object_get(o, "signature_algorithms"), "rsa_pss_rsae_sha256"));
    assert_true(has(json_object_get(o, "signature_algorithms"), "ecdsa_secp256r1_sha256"));
    assert_strings(json_object_get(o, "psk_key_exchange_modes"), "psk_dhe_ke", NULL);
    assert_true(has(json_object_get(o, "ec_point_formats"), "uncompressed"));
    assert_true(json_is_true(json_object_get(o, "extended_master_secret")));
    assert_true(json_is_true(json_object_get(o, "encrypt_then_mac")));
    assert_int_equal(num(o, "session_ticket"), 0);
    json_t *exts = json_object_get(o, "extensions");
    assert_string_equal(json_string_value(json_array_get(exts, 0)), "server_name");
    assert_true(has(exts, "key_share"));
    assert_true(has(exts, "supported_versions"));
    json_decref(o);
    free(b.p);
}

static void
test_client_hello_openssl_tls12(void **state)
{
    struct blob b = load("openssl-tls12-ecdhe-rsa.client_hello.bin");
    struct tf_client_hello_info info;
    bool ok;
    json_t *o;

    (void)state;
    o = decode_ch(b.p, b.n, &ok, &info);
    assert_true(ok);
    assert_int_equal(info.max_version, 0x0303);
    assert_string_equal(info.sni, "server.lab.test");
    /* -cipher ECDHE-RSA-AES256-GCM-SHA384 with -tls1_2: one suite and the SCSV. */
    assert_strings(json_object_get(o, "cipher_suites"), "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                   "TLS_EMPTY_RENEGOTIATION_INFO_SCSV", NULL);
    assert_int_equal(num(o, "cipher_suites_count"), 2);
    assert_int_equal(num(o, "session_id_length"), 0);
    assert_null(json_object_get(o, "supported_versions"));
    assert_null(json_object_get(o, "key_share"));
    assert_strings(json_object_get(o, "alpn"), "http/1.1", NULL);
    json_decref(o);
    free(b.p);
}

static void
test_client_hello_resumption_and_ocsp(void **state)
{
    struct blob r = load("openssl-tls12-resumed.client_hello.bin");
    struct blob s = load("openssl-tls12-ocsp.client_hello.bin");
    bool ok;
    json_t *o;

    (void)state;
    o = decode_ch(r.p, r.n, &ok, NULL);
    assert_true(ok);
    /* The ticket from the first connection goes back in session_ticket. */
    assert_true(num(o, "session_ticket") > 0);
    assert_int_equal(num(o, "session_id_length"), 32);
    json_decref(o);

    o = decode_ch(s.p, s.n, &ok, NULL);
    assert_true(ok);
    assert_string_equal(str(o, "status_request"), "ocsp");
    json_decref(o);
    free(r.p);
    free(s.p);
}

static void
test_client_hello_gnutls(void **state)
{
    struct blob b13 = load("gnutls-openssl-tls13.client_hello.bin");
    struct blob b12 = load("gnutls-openssl-tls12.client_hello.bin");
    struct tf_client_hello_info info;
    bool ok;
    json_t *o;

    (void)state;
    o = decode_ch(b13.p, b13.n, &ok, &info);
    assert_true(ok);
    assert_true(info.has_sni);
    assert_string_equal(info.sni, "server.lab.test");
    assert_int_equal(info.max_version, 0x0304);
    assert_strings(json_object_get(o, "supported_versions"), "TLS 1.3", "TLS 1.2", "TLS 1.1",
                   "TLS 1.0", NULL);
    assert_true(has(json_object_get(o, "cipher_suites"), "TLS_AES_256_GCM_SHA384"));
    assert_true(has(json_object_get(o, "cipher_suites"), "TLS_AES_128_CCM_SHA256"));
    /* GnuTLS shares two groups up front and asks for OCSP by default. */
    assert_strings(json_object_get(o, "key_share"), "secp256r1", "x25519", NULL);
    assert_string_equal(str(o, "status_request"), "ocsp");
    assert_strings(json_object_get(o, "alpn"), "http/1.1", NULL);
    assert_strings(json_object_get(o, "psk_key_exchange_modes"), "psk_dhe_ke", "psk_ke", NULL);
    assert_int_equal(num(o, "renegotiation_info"), 0);
    assert_true(num(o, "record_size_limit") >= 16384);
    assert_true(has(json_object_get(o, "supported_groups"), "ffdhe8192"));
    json_decref(o);

    o = decode_ch(b12.p, b12.n, &ok, &info);
    assert_true(ok);
    assert_int_equal(info.max_version, 0x0303);
    assert_string_equal(str(o, "server_name"), "server.lab.test");
    assert_null(json_object_get(o, "supported_versions"));
    assert_false(has(json_object_get(o, "cipher_suites"), "TLS_AES_256_GCM_SHA384"));
    assert_true(has(json_object_get(o, "cipher_suites"), "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"));
    assert_true(json_is_integer(json_object_get(o, "record_size_limit")));
    json_decref(o);
    free(b13.p);
    free(b12.p);
}

/* The second ClientHello after a HelloRetryRequest shares the group the server asked for. */
static void
test_client_hello_retry_pair(void **state)
{
    struct blob b1 = load("openssl-tls13-hrr.client_hello.bin");
    struct blob b2 = load("openssl-tls13-hrr.client_hello2.bin");
    bool ok1, ok2;
    json_t *o1, *o2;

    (void)state;
    o1 = decode_ch(b1.p, b1.n, &ok1, NULL);
    o2 = decode_ch(b2.p, b2.n, &ok2, NULL);
    assert_true(ok1 && ok2);
    assert_strings(json_object_get(o1, "key_share"), "x25519", NULL);
    assert_strings(json_object_get(o2, "key_share"), "secp256r1", NULL);
    assert_strings(json_object_get(o1, "supported_groups"), "x25519", "secp256r1", NULL);
    assert_string_equal(str(o1, "random"), str(o2, "random"));
    json_decref(o1);
    json_decref(o2);
    free(b1.p);
    free(b2.p);
}

static void
test_client_hello_grease_and_unknown(void **state)
{
    static const uint8_t exts[] = {
        0x00, 0x2b, 0x00, 0x07, 0x06, 0x1a, 0x1a, 0x03, 0x04, 0x03, 0x03, /* supported_versions */
        0x77, 0x77, 0x00, 0x00,                                           /* unknown type */
        0x0a, 0x0a, 0x00, 0x01, 0x00,                                     /* GREASE extension */
        0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x2a, 0x2a, 0x77, 0x77,       /* groups */
    };
    struct tf_client_hello_info info;
    struct msg m;
    bool ok;
    json_t *o;

    (void)state;
    ch_head(&m);
    /* Replace the suites with GREASE, a known and an unknown one. */
    m.n = 2 + 32 + 1;
    put16(&m, 6);
    put16(&m, 0xdada);
    put16(&m, 0x1301);
    put16(&m, 0x7777);
    put8(&m, 1);
    put8(&m, 0);
    put16(&m, sizeof(exts));
    putn(&m, exts, sizeof(exts));
    o = decode_ch(m.b, m.n, &ok, &info);
    assert_true(ok);
    assert_strings(json_object_get(o, "cipher_suites"), "GREASE", "TLS_AES_128_GCM_SHA256",
                   "0x7777", NULL);
    assert_strings(json_object_get(o, "supported_versions"), "GREASE", "TLS 1.3", "TLS 1.2",
                   NULL);
    assert_strings(json_object_get(o, "extensions"), "supported_versions", "0x7777", "GREASE",
                   "supported_groups", NULL);
    assert_strings(json_object_get(o, "supported_groups"), "GREASE", "0x7777", NULL);
    assert_int_equal(info.max_version, 0x0304);
    assert_false(info.has_sni);
    assert_string_equal(info.sni, "");
    json_decref(o);
}

/* Only GREASE in supported_versions: the legacy_version is all that is offered. */
static void
test_client_hello_max_version_fallback(void **state)
{
    static const uint8_t exts[] = {0x00, 0x2b, 0x00, 0x03, 0x02, 0x3a, 0x3a};
    struct tf_client_hello_info info;
    struct msg m;
    bool ok;
    json_t *o;

    (void)state;
    ch_with_exts(&m, exts, sizeof(exts));
    o = decode_ch(m.b, m.n, &ok, &info);
    assert_true(ok);
    assert_int_equal(info.max_version, 0x0303);
    json_decref(o);
}

static void
test_client_hello_sni_escaping(void **state)
{
    struct tf_client_hello_info info;
    struct msg m;
    uint8_t host[300];
    size_t ext, list;
    bool ok;
    json_t *o;

    (void)state;
    ch_head(&m);
    ext = open_block(&m, 2);
    put16(&m, 0);
    list = open_block(&m, 2);
    {
        size_t names = open_block(&m, 2);
        put8(&m, 0);
        put16(&m, 6);
        putn(&m, "a\x01" "b\\c\xff", 6);
        close_block(&m, names, 2);
    }
    close_block(&m, list, 2);
    close_block(&m, ext, 2);
    o = decode_ch(m.b, m.n, &ok, &info);
    assert_true(ok);
    assert_string_equal(str(o, "server_name"), "a\\x01b\\x5cc\\xff");
    assert_string_equal(info.sni, "a\\x01b\\x5cc\\xff");
    json_decref(o);

    /* 300 non-printable bytes: capped at 255 characters, no escape cut in half. */
    memset(host, 0xfe, sizeof(host));
    ch_head(&m);
    ext = open_block(&m, 2);
    put16(&m, 0);
    list = open_block(&m, 2);
    {
        size_t names = open_block(&m, 2);
        put8(&m, 0);
        put16(&m, sizeof(host));
        putn(&m, host, sizeof(host));
        close_block(&m, names, 2);
    }
    close_block(&m, list, 2);
    close_block(&m, ext, 2);
    o = decode_ch(m.b, m.n, &ok, &info);
    assert_true(ok);
    assert_true(info.has_sni);
    assert_int_equal(strlen(info.sni), 252);
    assert_string_equal(info.sni + 248, "\\xfe");
    assert_string_equal(str(o, "server_name"), info.sni);
    json_decref(o);
}

/* Extensions that carry presence or a size, and the odd ones. */
static void
test_client_hello_flag_extensions(void **state)
{
    static const uint8_t exts[] = {
        0x00, 0x17, 0x00, 0x00,                         /* extended_master_secret */
        0x00, 0x16, 0x00, 0x00,                         /* encrypt_then_mac */
        0x00, 0x2a, 0x00, 0x00,                         /* early_data */
        0x00, 0x31, 0x00, 0x00,                         /* post_handshake_auth */
        0xfe, 0x0d, 0x00, 0x03, 0x01, 0x02, 0x03,       /* encrypted_client_hello */
        0x00, 0x23, 0x00, 0x03, 0xaa, 0xbb, 0xcc,       /* session_ticket */
        0x00, 0x15, 0x00, 0x05, 0, 0, 0, 0, 0,          /* padding */
        0xff, 0x01, 0x00, 0x01, 0x00,                   /* renegotiation_info */
        0x00, 0x1c, 0x00, 0x02, 0x40, 0x00,             /* record_size_limit */
        0x00, 0x2c, 0x00, 0x04, 0x00, 0x02, 0xc0, 0x0c, /* cookie */
        0x00, 0x33, 0x00, 0x02, 0x00, 0x00,             /* key_share: empty asks for HRR */
        0x00, 0x05, 0x00, 0x05, 0x01, 0x00, 0x00, 0x00, 0x00, /* status_request ocsp */
        /* pre_shared_key, last: one identity (2+1+4), one binder (2+1+32) */
        0x00, 0x29, 0x00, 0x2c, 0x00, 0x07, 0x00, 0x01, 0x49, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x21, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0,
    };
    struct msg m;
    bool ok;
    json_t *o;

    (void)state;
    ch_with_exts(&m, exts, sizeof(exts));
    o = decode_ch(m.b, m.n, &ok, NULL);
    assert_true(ok);
    assert_null(json_object_get(o, "malformed"));
    assert_true(json_is_true(json_object_get(o, "extended_master_secret")));
    assert_true(json_is_true(json_object_get(o, "encrypt_then_mac")));
    assert_true(json_is_true(json_object_get(o, "early_data")));
    assert_true(json_is_true(json_object_get(o, "post_handshake_auth")));
    assert_true(json_is_true(json_object_get(o, "encrypted_client_hello")));
    assert_true(json_is_true(json_object_get(o, "pre_shared_key")));
    assert_int_equal(num(o, "session_ticket"), 3);
    assert_int_equal(num(o, "padding"), 5);
    assert_int_equal(num(o, "renegotiation_info"), 0);
    assert_int_equal(num(o, "record_size_limit"), 16384);
    assert_int_equal(num(o, "cookie"), 2);
    assert_string_equal(str(o, "status_request"), "ocsp");
    assert_int_equal(json_array_size(json_object_get(o, "key_share")), 0);
    json_decref(o);
}

/* RFC 5246 §7.4.1.2: a ClientHello may stop after the compression methods. */
static void
test_client_hello_without_extensions(void **state)
{
    struct tf_client_hello_info info;
    struct msg m;
    bool ok;
    json_t *o;

    (void)state;
    ch_head(&m);
    o = decode_ch(m.b, m.n, &ok, &info);
    assert_true(ok);
    assert_null(json_object_get(o, "extensions"));
    assert_int_equal(info.max_version, 0x0303);
    assert_int_equal(num(o, "cipher_suites_count"), 2);
    json_decref(o);
}

/*
 * Every prefix of a real ClientHello is malformed, except the one that ends
 * where the extension block starts: that is a valid extension-less hello.
 */
static void
test_client_hello_every_truncation(void **state)
{
    (void)state;
    for (size_t k = 0; k < N_OF(client_hellos); k++) {
        struct blob b = load(client_hellos[k]);
        size_t valid = hello_ext_offset(&b, false);

        for (size_t i = 0; i < b.n; i++) {
            struct tf_client_hello_info info;
            bool ok;
            json_t *o = decode_ch(b.p, i, &ok, &info);

            if (ok != (i == valid))
                fail_msg("%s cut at %zu of %zu: decoder said %s", client_hellos[k], i, b.n,
                         ok ? "ok" : "malformed");
            if (!ok)
                assert_true(json_is_string(json_object_get(o, "malformed")));
            assert_true(strlen(info.sni) < sizeof(info.sni));
            json_decref(o);
        }
        free(b.p);
    }
}

/* An inner vector longer than its extension_data. */
static void
test_client_hello_extension_inner_overrun(void **state)
{
    struct blob b = load("openssl-tls13.client_hello.bin");
    size_t at = hello_find_ext(&b, false, 0x000a);
    uint8_t *c;
    bool ok;
    json_t *o;
    char want[96];

    (void)state;
    assert_true(at > 0);
    c = exact_copy(b.p, b.n);
    uint16_t ext_len = get16(c + at + 2), list_len = get16(c + at + 4);
    assert_int_equal(ext_len, list_len + 2);
    set16(c + at + 4, (uint16_t)(list_len + 2));
    snprintf(want, sizeof(want), "supported_groups: length %u overruns %u bytes", list_len + 2,
             list_len);
    o = decode_ch(c, b.n, &ok, NULL);
    assert_false(ok);
    assert_malformed(o, want);
    /* What came before the problem is still reported. */
    assert_string_equal(str(o, "server_name"), "server.lab.test");
    json_decref(o);

    /* And one shorter than it: the rest of extension_data is left over. */
    set16(c + at + 4, (uint16_t)(list_len - 2));
    o = decode_ch(c, b.n, &ok, NULL);
    assert_false(ok);
    assert_malformed(o, "supported_groups: 2 trailing bytes");
    json_decref(o);
    free(c);
    free(b.p);
}

/* An extension_data longer than what is left of the extension block. */
static void
test_client_hello_extension_outer_overrun(void **state)
{
    struct blob b = load("gnutls-openssl-tls13.client_hello.bin");
    size_t at = hello_find_ext(&b, false, 0x0000);
    uint8_t *c;
    bool ok;
    json_t *o;

    (void)state;
    assert_true(at > 0);
    c = exact_copy(b.p, b.n);
    set16(c + at + 2, 0xfff0);
    o = decode_ch(c, b.n, &ok, NULL);
    assert_false(ok);
    assert_malformed_contains(o, "extension server_name length 65520 overruns");
    json_decref(o);

    /* The extension block's own length past the end of the message. */
    memcpy(c, b.p, b.n);
    size_t ext = hello_ext_offset(&b, false);
    set16(c + ext, (uint16_t)(get16(c + ext) + 1));
    o = decode_ch(c, b.n, &ok, NULL);
    assert_false(ok);
    assert_malformed_contains(o, "extensions length");
    json_decref(o);

    /* Bytes after the extension block. */
    free(c);
    c = malloc(b.n + 1);
    assert_non_null(c);
    memcpy(c, b.p, b.n);
    c[b.n] = 0;
    o = decode_ch(c, b.n + 1, &ok, NULL);
    assert_false(ok);
    assert_malformed(o, "1 trailing bytes after extensions");
    json_decref(o);
    free(c);
    free(b.p);
}

/* The same extension twice, appended to a real hello. */
static void
test_client_hello_duplicate_extension(void **state)
{
    struct blob b = load("openssl-tls12-ecdhe-rsa.client_hello.bin");
    size_t at = hello_find_ext(&b, false, 0x000a);
    size_t ext = hello_ext_offset(&b, false);
    size_t elen;
    struct msg m;
    bool ok;
    json_t *o;

    (void)state;
    assert_true(at > 0);
    elen = 4 + get16(b.p + at + 2);
    m.n = 0;
    putn(&m, b.p, b.n);
    putn(&m, b.p + at, elen);
    set16(m.b + ext, (uint16_t)(get16(m.b + ext) + elen));
    o = decode_ch(m.b, m.n, &ok, NULL);
    assert_false(ok);
    assert_malformed(o, "extension supported_groups appears twice");
    json_decref(o);

    /* Two empty extended_master_secret extensions, hand-made. */
    static const uint8_t twice[] = {0x00, 0x17, 0x00, 0x00, 0x00, 0x17, 0x00, 0x00};
    ch_with_exts(&m, twice, sizeof(twice));
    o = decode_ch(m.b, m.n, &ok, NULL);
    assert_false(ok);
    assert_malformed(o, "extension extended_master_secret appears twice");
    json_decref(o);
    free(b.p);
}

/*
 * Lists of code points come from a per-thread cache: the same bytes give
 * the same (shared) array, the same bytes in a list of another kind are
 * named by that kind, and arrays pushed out of the cache stay whole in
 * the events that hold them.
 */
static void
test_code_lists_cached(void **state)
{
    struct blob b = load("gnutls-openssl-tls13.client_hello.bin");
    struct msg m;
    bool ok;

    (void)state;
    json_t *first = decode_ch(b.p, b.n, &ok, NULL);
    assert_true(ok);
    json_t *again = decode_ch(b.p, b.n, &ok, NULL);
    assert_true(ok && json_equal(first, again));
    assert_ptr_equal(json_object_get(first, "cipher_suites"), json_object_get(again, "cipher_suites"));
    assert_ptr_equal(json_object_get(first, "signature_algorithms"),
                     json_object_get(again, "signature_algorithms"));
    char *before = json_dumps(first, JSON_COMPACT);

    /* supported_groups with the bytes of ch_head's cipher suites: 13 01 13 02. */
    static const uint8_t groups[] = {0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x13, 0x01, 0x13, 0x02};
    ch_with_exts(&m, groups, sizeof(groups));
    json_t *o = decode_ch(m.b, m.n, &ok, NULL);
    assert_true(ok);
    assert_string_equal(json_string_value(json_array_get(json_object_get(o, "cipher_suites"), 0)),
                        "TLS_AES_128_GCM_SHA256");
    assert_string_equal(json_string_value(json_array_get(json_object_get(o, "supported_groups"), 0)),
                        "0x1301");
    json_decref(o);

    /* Many other cipher lists push the first hello's lists out of the cache. */
    for (uint16_t i = 0; i < 64; i++) {
        ch_head(&m);
        set16(m.b + 2 + 32 + 1 + 2, (uint16_t)(0x1301 + i)); /* the first suite */
        put16(&m, 0);
        o = decode_ch(m.b, m.n, &ok, NULL);
        assert_true(ok);
        json_decref(o);
    }
    json_decref(again);
    char *after = json_dumps(first, JSON_COMPACT);
    assert_string_equal(before, after);
    json_t *later = decode_ch(b.p, b.n, &ok, NULL);
    assert_true(ok && json_equal(first, later));
    free(before);
    free(after);
    json_decref(later);
    json_decref(first);
    free(b.p);

    /* Single names are shared strings too (and stay whole when pushed out, above). */
    b = load("gnutls-openssl-tls13.server_hello.bin");
    json_t *sh1 = json_object(), *sh2 = json_object();
    assert_true(tf_decode_server_hello(b.p, b.n, sh1, NULL));
    assert_true(tf_decode_server_hello(b.p, b.n, sh2, NULL));
    assert_ptr_equal(json_object_get(sh1, "cipher_suite"), json_object_get(sh2, "cipher_suite"));
    assert_string_equal(json_string_value(json_object_get(sh2, "version")), "TLS 1.3");
    json_decref(sh1);
    json_decref(sh2);
    free(b.p);
}

/* Fixed fields the RFCs bound: empty and odd suites, no compression, long session ids. */
static void
test_client_hello_bad_fixed_fields(void **state)
{
    static const uint8_t random[32];
    struct msg m;
    bool ok;
    json_t *o;

    (void)state;
    m.n = 0;
    put16(&m, 0x0303);
    putn(&m, random, 32);
    put8(&m, 0);
    put16(&m, 0);
    put8(&m, 1);
    put8(&m, 0);
    o = decode_ch(m.b, m.n, &ok, NULL);
    assert_false(ok);
    assert_malformed(o, "cipher_suites length 0 below the minimum 2");
    json_decref(o);

    m.n = 0;
    put16(&m, 0x0303);
    putn(&m, random, 32);
    put8(&m, 0);
    put16(&m, 3);
    put16(&m, 0x1301);
    put8(&m, 0x13);
    put8(&m, 1);
    put8(&m, 0);
    o = decode_ch(m.b, m.n, &ok, NULL);
    assert_false(ok);
    assert_malformed(o, "cipher_suites odd length 3");
    json_decref(o);

    m.n = 0;
    put16(&m, 0x0303);
    putn(&m, random, 32);
    put8(&m, 0);
    put16(&m, 2);
    put16(&m, 0x1301);
    put8(&m, 0);
    o = decode_ch(m.b, m.n, &ok, NULL);
    assert_false(ok);
    assert_malformed(o, "legacy_compression_methods length 0 below the minimum 1");
    json_decref(o);

    uint8_t sid[33] = {0};
    m.n = 0;
    put16(&m, 0x0303);
    putn(&m, random, 32);
    put8(&m, 33);
    putn(&m, sid, 33);
    put16(&m, 2);
    put16(&m, 0x1301);
    put8(&m, 1);
    put8(&m, 0);
    o = decode_ch(m.b, m.n, &ok, NULL);
    assert_false(ok);
    assert_malformed(o, "legacy_session_id length 33 above the maximum 32");
    json_decref(o);

    o = decode_ch(random, 0, &ok, NULL);
    assert_false(ok);
    assert_malformed(o, "legacy_version truncated (0 of 2 bytes)");
    json_decref(o);
}

struct bad_ext {
    const char *what;
    uint8_t bytes[24];
    size_t n;
    const char *malformed;
};

/* Lists the RFCs require to be non-empty, and bodies that do not fit their schema. */
static void
test_client_hello_bad_extensions(void **state)
{
    static const struct bad_ext cases[] = {
        {"empty supported_groups", {0x00, 0x0a, 0x00, 0x02, 0x00, 0x00}, 6,
         "supported_groups: length 0 below the minimum 2"},
        {"odd supported_groups", {0x00, 0x0a, 0x00, 0x05, 0x00, 0x03, 0x00, 0x1d, 0x00}, 9,
         "supported_groups: odd length 3"},
        {"empty supported_versions", {0x00, 0x2b, 0x00, 0x01, 0x00}, 5,
         "supported_versions: length 0 below the minimum 2"},
        {"empty signature_algorithms", {0x00, 0x0d, 0x00, 0x02, 0x00, 0x00}, 6,
         "signature_algorithms: length 0 below the minimum 2"},
        {"empty alpn list", {0x00, 0x10, 0x00, 0x02, 0x00, 0x00}, 6,
         "alpn: length 0 below the minimum 2"},
        {"empty protocol name", {0x00, 0x10, 0x00, 0x04, 0x00, 0x02, 0x00, 0x00}, 8,
         "alpn: protocol name length 0 below the minimum 1"},
        {"protocol name overruns", {0x00, 0x10, 0x00, 0x05, 0x00, 0x03, 0x05, 'h', '2'}, 9,
         "alpn: protocol name length 5 overruns 2 bytes"},
        {"empty server_name list", {0x00, 0x00, 0x00, 0x02, 0x00, 0x00}, 6,
         "server_name: length 0 below the minimum 1"},
        {"empty host_name", {0x00, 0x00, 0x00, 0x05, 0x00, 0x03, 0x00, 0x00, 0x00}, 9,
         "server_name: host_name length 0 below the minimum 1"},
        {"two host_names",
         {0x00, 0x00, 0x00, 0x0a, 0x00, 0x08, 0x00, 0x00, 0x01, 'a', 0x00, 0x00, 0x01, 'b'}, 14,
         "server_name: more than one host_name"},
        {"empty server_name body", {0x00, 0x00, 0x00, 0x00}, 4,
         "server_name: length truncated"},
        {"key_exchange empty", {0x00, 0x33, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x00}, 10,
         "key_share: key_exchange length 0 below the minimum 1"},
        {"key_share group cut", {0x00, 0x33, 0x00, 0x03, 0x00, 0x01, 0x00}, 7,
         "key_share: group truncated (1 of 2 bytes)"},
        {"empty psk modes", {0x00, 0x2d, 0x00, 0x01, 0x00}, 5,
         "psk_key_exchange_modes: length 0 below the minimum 1"},
        {"empty ec_point_formats", {0x00, 0x0b, 0x00, 0x01, 0x00}, 5,
         "ec_point_formats: length 0 below the minimum 1"},
        {"extended_master_secret with a body", {0x00, 0x17, 0x00, 0x01, 0x00}, 5,
         "extended_master_secret: 1 trailing bytes"},
        {"renegotiation_info overrun", {0xff, 0x01, 0x00, 0x01, 0x05}, 5,
         "renegotiation_info: length 5 overruns 0 bytes"},
        {"record_size_limit short", {0x00, 0x1c, 0x00, 0x01, 0x40}, 5,
         "record_size_limit: truncated (1 of 2 bytes)"},
        {"record_size_limit long", {0x00, 0x1c, 0x00, 0x03, 0x40, 0x00, 0x00}, 7,
         "record_size_limit: 1 trailing bytes"},
        {"status_request ocsp cut", {0x00, 0x05, 0x00, 0x03, 0x01, 0x00, 0x00}, 7,
         "status_request: request_extensions length truncated"},
        {"empty cookie", {0x00, 0x2c, 0x00, 0x02, 0x00, 0x00}, 6,
         "cookie: length 0 below the minimum 1"},
        {"pre_shared_key not last",
         {0x00, 0x29, 0x00, 0x00, 0x00, 0x17, 0x00, 0x00}, 8,
         "extension pre_shared_key is not the last extension"},
        {"pre_shared_key without binders",
         {0x00, 0x29, 0x00, 0x09, 0x00, 0x07, 0x00, 0x01, 'x', 0, 0, 0, 0}, 13,
         "pre_shared_key: binders length truncated"},
        {"extension header cut", {0x00, 0x17, 0x00}, 3,
         "extension extended_master_secret length truncated"},
    };
    struct msg m;
    bool ok;

    (void)state;
    for (size_t i = 0; i < N_OF(cases); i++) {
        json_t *o;

        ch_with_exts(&m, cases[i].bytes, cases[i].n);
        o = decode_ch(m.b, m.n, &ok, NULL);
        if (ok)
            fail_msg("%s: decoded as valid", cases[i].what);
        assert_malformed(o, cases[i].malformed);
        json_decref(o);
    }
}

/* ------------------------------------------------------------------ ServerHello */

static void
test_server_hello_tls13(void **state)
{
    static const char *const files[] = {"openssl-tls13.server_hello.bin",
                                        "openssl-gnutls-tls13.server_hello.bin",
                                        "gnutls-openssl-tls13.server_hello.bin"};
    static const char *const groups[] = {"x25519", "x25519", "secp256r1"};

    (void)state;
    for (size_t i = 0; i < N_OF(files); i++) {
        struct blob b = load(files[i]);
        struct tf_server_hello_info info;
        bool ok;
        json_t *o;

        memset(&info, 0xa5, sizeof(info));
        o = decode_sh(b.p, b.n, &ok, &info);
        assert_true(ok);
        assert_int_equal(info.legacy_version, 0x0303);
        assert_int_equal(info.version, 0x0304);
        assert_int_equal(info.cipher_suite, 0x1302);
        assert_false(info.hello_retry_request);
        assert_false(info.downgrade_sentinel);
        assert_string_equal(str(o, "legacy_version"), "TLS 1.2");
        assert_string_equal(str(o, "version"), "TLS 1.3");
        assert_string_equal(str(o, "supported_versions"), "TLS 1.3");
        assert_string_equal(str(o, "cipher_suite"), "TLS_AES_256_GCM_SHA384");
        assert_string_equal(str(o, "compression_method"), "null");
        assert_string_equal(str(o, "key_share"), groups[i]);
        assert_int_equal(num(o, "session_id_length"), 32);
        assert_null(json_object_get(o, "downgrade_sentinel"));
        assert_null(json_object_get(o, "hello_retry_request"));
        json_decref(o);
        free(b.p);
    }
}

static void
test_server_hello_retry_request(void **state)
{
    struct blob hrr = load("openssl-tls13-hrr.hello_retry_request.bin");
    struct blob sh = load("openssl-tls13-hrr.server_hello.bin");
    struct tf_server_hello_info info;
    bool ok;
    json_t *o;

    (void)state;
    o = decode_sh(hrr.p, hrr.n, &ok, &info);
    assert_true(ok);
    assert_true(info.hello_retry_request);
    assert_false(info.downgrade_sentinel);
    assert_int_equal(info.version, 0x0304);
    assert_true(json_is_true(json_object_get(o, "hello_retry_request")));
    assert_string_equal(str(o, "random"),
                        "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c");
    /* The server accepts only P-256; the client had shared x25519. */
    assert_string_equal(str(o, "key_share"), "secp256r1");
    assert_string_equal(str(o, "version"), "TLS 1.3");
    json_decref(o);

    o = decode_sh(sh.p, sh.n, &ok, &info);
    assert_true(ok);
    assert_false(info.hello_retry_request);
    assert_string_equal(str(o, "key_share"), "secp256r1");
    json_decref(o);
    free(hrr.p);
    free(sh.p);
}

/* A TLS 1.3-capable server that settles for 1.2 marks its random (RFC 8446 §4.1.3). */
static void
test_server_hello_tls12_downgrade_sentinel(void **state)
{
    struct blob o12 = load("openssl-tls12-ecdhe-rsa.server_hello.bin");
    struct blob g12 = load("openssl-gnutls-tls12.server_hello.bin");
    struct tf_server_hello_info info;
    bool ok;
    json_t *o;

    (void)state;
    o = decode_sh(o12.p, o12.n, &ok, &info);
    assert_true(ok);
    assert_int_equal(info.version, 0x0303);
    assert_int_equal(info.cipher_suite, 0xc030);
    assert_true(info.downgrade_sentinel);
    assert_string_equal(str(o, "downgrade_sentinel"), "tls12");
    assert_string_equal(str(o, "version"), "TLS 1.2");
    assert_string_equal(str(o, "cipher_suite"), "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384");
    assert_string_equal(str(o, "alpn"), "http/1.1");
    assert_true(json_is_true(json_object_get(o, "extended_master_secret")));
    assert_int_equal(num(o, "renegotiation_info"), 0);
    assert_null(json_object_get(o, "supported_versions"));
    json_decref(o);

    o = decode_sh(g12.p, g12.n, &ok, &info);
    assert_true(ok);
    assert_int_equal(info.version, 0x0303);
    assert_string_equal(str(o, "cipher_suite"), "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384");
    assert_string_equal(str(o, "downgrade_sentinel"), "tls12");
    json_decref(o);

    /* The TLS 1.1 sentinel, by hand. */
    memcpy(o12.p + 2 + 24, "DOWNGRD\x00", 8);
    o = decode_sh(o12.p, o12.n, &ok, &info);
    assert_true(ok);
    assert_string_equal(str(o, "downgrade_sentinel"), "tls11");
    json_decref(o);
    /* Almost the sentinel is no sentinel. */
    o12.p[2 + 31] = 0x02;
    o = decode_sh(o12.p, o12.n, &ok, &info);
    assert_true(ok);
    assert_false(info.downgrade_sentinel);
    assert_null(json_object_get(o, "downgrade_sentinel"));
    json_decref(o);
    free(o12.p);
    free(g12.p);
}

static void
test_server_hello_every_truncation(void **state)
{
    (void)state;
    for (size_t k = 0; k < N_OF(server_hellos); k++) {
        struct blob b = load(server_hellos[k]);
        size_t valid = hello_ext_offset(&b, true);

        for (size_t i = 0; i < b.n; i++) {
            bool ok;
            json_t *o = decode_sh(b.p, i, &ok, NULL);

            if (ok != (i == valid))
                fail_msg("%s cut at %zu of %zu: decoder said %s", server_hellos[k], i, b.n,
                         ok ? "ok" : "malformed");
            json_decref(o);
        }
        free(b.p);
    }
}

/* A ServerHello with the fixed fields of TLS 1.3 and the given extension block. */
static void
sh_with_exts(struct msg *m, bool hrr, const uint8_t *exts, size_t n)
{
    static const uint8_t hrr_random[32] = {
        0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c,
        0x02, 0x1e, 0x65, 0xb8, 0x91, 0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb,
        0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
    };
    static const uint8_t random[32] = {9};

    m->n = 0;
    put16(m, 0x0303);
    putn(m, hrr ? hrr_random : random, 32);
    put8(m, 0);
    put16(m, 0x1301);
    put8(m, 0);
    put16(m, (uint16_t)n);
    putn(m, exts, n);
}

static void
test_server_hello_bad_extensions(void **state)
{
    static const struct {
        bool hrr;
        struct bad_ext e;
    } cases[] = {
        {false, {"supported_versions long", {0x00, 0x2b, 0x00, 0x03, 0x03, 0x04, 0x00}, 7,
                 "supported_versions: 1 trailing bytes"}},
        {false, {"supported_versions short", {0x00, 0x2b, 0x00, 0x01, 0x03}, 5,
                 "supported_versions: selected_version truncated (1 of 2 bytes)"}},
        {true, {"HRR key_share with a key", {0x00, 0x33, 0x00, 0x04, 0x00, 0x17, 0x00, 0x00}, 8,
                "key_share: 2 trailing bytes"}},
        {false, {"SH key_share without a key", {0x00, 0x33, 0x00, 0x02, 0x00, 0x1d}, 6,
                 "key_share: key_exchange length truncated"}},
        {false, {"two ALPN protocols",
                 {0x00, 0x10, 0x00, 0x08, 0x00, 0x06, 0x02, 'h', '2', 0x02, 'h', '3'}, 12,
                 "alpn: more than one protocol selected"}},
        {false, {"server_name with a body", {0x00, 0x00, 0x00, 0x01, 0x00}, 5,
                 "server_name: 1 trailing bytes"}},
        {false, {"duplicate", {0x00, 0x17, 0x00, 0x00, 0x00, 0x17, 0x00, 0x00}, 8,
                 "extension extended_master_secret appears twice"}},
        {true, {"HRR empty cookie", {0x00, 0x2c, 0x00, 0x02, 0x00, 0x00}, 6,
                "cookie: length 0 below the minimum 1"}},
    };
    struct msg m;
    bool ok;

    (void)state;
    for (size_t i = 0; i < N_OF(cases); i++) {
        json_t *o;

        sh_with_exts(&m, cases[i].hrr, cases[i].e.bytes, cases[i].e.n);
        o = decode_sh(m.b, m.n, &ok, NULL);
        if (ok)
            fail_msg("%s: decoded as valid", cases[i].e.what);
        assert_malformed(o, cases[i].e.malformed);
        json_decref(o);
    }
}

static void
test_server_hello_hrr_cookie(void **state)
{
    static const uint8_t exts[] = {
        0x00, 0x2b, 0x00, 0x02, 0x03, 0x04,                   /* supported_versions */
        0x00, 0x33, 0x00, 0x02, 0x00, 0x17,                   /* key_share: secp256r1 */
        0x00, 0x2c, 0x00, 0x05, 0x00, 0x03, 0x01, 0x02, 0x03, /* cookie */
    };
    struct tf_server_hello_info info;
    struct msg m;
    bool ok;
    json_t *o;

    (void)state;
    sh_with_exts(&m, true, exts, sizeof(exts));
    o = decode_sh(m.b, m.n, &ok, &info);
    assert_true(ok);
    assert_true(info.hello_retry_request);
    assert_string_equal(str(o, "key_share"), "secp256r1");
    assert_int_equal(num(o, "cookie"), 3);
    assert_string_equal(str(o, "version"), "TLS 1.3");
    json_decref(o);
}

/* ------------------------------------------------------------------ Certificate */

static json_t *
decode_cert(const uint8_t *p, size_t n, bool tls13, bool *ok)
{
    json_t *obj = json_object();
    uint8_t *c = exact_copy(p, n);

    *ok = tf_decode_certificate(c, n, tls13, obj);
    free(c);
    return obj;
}

static void
test_certificate_openssl_rsa_chain(void **state)
{
    struct blob b = load("openssl-tls12-ecdhe-rsa.certificate.bin");
    bool ok;
    json_t *o, *leaf, *inter;

    (void)state;
    o = decode_cert(b.p, b.n, false, &ok);
    assert_true(ok);
    assert_int_equal(num(o, "chain_length"), 2);
    leaf = json_array_get(json_object_get(o, "chain"), 0);
    inter = json_array_get(json_object_get(o, "chain"), 1);
    assert_string_equal(str(leaf, "subject"), "CN=server.lab.test,O=tlsfault lab");
    assert_string_equal(str(leaf, "issuer"), "CN=tlsfault Test Intermediate RSA,O=tlsfault lab");
    assert_strings(json_object_get(leaf, "san"), "DNS:server.lab.test", "DNS:*.lab.test",
                   "IP:127.0.0.1", NULL);
    assert_string_equal(str(leaf, "key_type"), "RSA");
    assert_int_equal(num(leaf, "key_bits"), 2048);
    assert_null(json_object_get(leaf, "curve"));
    assert_string_equal(str(leaf, "signature_algorithm"), "sha256WithRSAEncryption");
    assert_strings(json_object_get(leaf, "eku"), "serverAuth", NULL);
    assert_true(json_is_false(json_object_get(leaf, "is_ca")));
    assert_true(json_is_false(json_object_get(leaf, "self_signed")));
    assert_rfc3339(str(leaf, "not_before"));
    assert_rfc3339(str(leaf, "not_after"));
    assert_true(strcmp(str(leaf, "not_before"), str(leaf, "not_after")) < 0);

    assert_string_equal(str(inter, "subject"), "CN=tlsfault Test Intermediate RSA,O=tlsfault lab");
    assert_string_equal(str(inter, "issuer"), "CN=tlsfault Test Root RSA,O=tlsfault lab");
    assert_true(json_is_true(json_object_get(inter, "is_ca")));
    assert_true(json_is_false(json_object_get(inter, "self_signed")));
    assert_null(json_object_get(inter, "san"));
    assert_null(json_object_get(inter, "eku"));
    json_decref(o);
    free(b.p);
}

static void
test_certificate_gnutls_ecdsa_chain(void **state)
{
    struct blob b = load("openssl-gnutls-tls12.certificate.bin");
    bool ok;
    json_t *o, *leaf, *inter;

    (void)state;
    o = decode_cert(b.p, b.n, false, &ok);
    assert_true(ok);
    assert_int_equal(num(o, "chain_length"), 2);
    leaf = json_array_get(json_object_get(o, "chain"), 0);
    inter = json_array_get(json_object_get(o, "chain"), 1);
    assert_string_equal(str(leaf, "subject"), "CN=ec.lab.test,O=tlsfault lab");
    assert_strings(json_object_get(leaf, "san"), "DNS:ec.lab.test", "IP:127.0.0.1", NULL);
    assert_string_equal(str(leaf, "key_type"), "EC");
    assert_string_equal(str(leaf, "curve"), "P-256");
    assert_int_equal(num(leaf, "key_bits"), 256);
    assert_string_equal(str(leaf, "signature_algorithm"), "ecdsa-with-SHA256");
    assert_strings(json_object_get(leaf, "eku"), "serverAuth", "clientAuth", NULL);
    assert_string_equal(str(inter, "issuer"), "CN=tlsfault Test Root EC,O=tlsfault lab");
    assert_true(json_is_true(json_object_get(inter, "is_ca")));
    json_decref(o);
    free(b.p);
}

static void
test_certificate_ed25519_self_signed(void **state)
{
    struct blob b = load("openssl-tls12-ed25519.certificate.bin");
    bool ok;
    json_t *o, *leaf;

    (void)state;
    o = decode_cert(b.p, b.n, false, &ok);
    assert_true(ok);
    assert_int_equal(num(o, "chain_length"), 1);
    leaf = json_array_get(json_object_get(o, "chain"), 0);
    assert_string_equal(str(leaf, "key_type"), "Ed25519");
    assert_string_equal(str(leaf, "signature_algorithm"), "ED25519");
    assert_string_equal(str(leaf, "subject"), str(leaf, "issuer"));
    assert_true(json_is_true(json_object_get(leaf, "self_signed")));
    assert_true(json_is_false(json_object_get(leaf, "is_ca")));
    json_decref(o);
    free(b.p);
}

/* A client's chain (EC leaf, email SAN, RSA root that signs itself), and an empty one. */
static void
test_certificate_client(void **state)
{
    struct blob b = load("openssl-tls12-client-auth.client_certificate.bin");
    struct blob none = load("openssl-gnutls-tls12.client_certificate.bin");
    bool ok;
    json_t *o, *chain, *leaf, *root;

    (void)state;
    o = decode_cert(b.p, b.n, false, &ok);
    assert_true(ok);
    leaf = json_array_get(json_object_get(o, "chain"), 0);
    assert_string_equal(str(leaf, "subject"), "CN=client.lab.test,O=tlsfault lab");
    assert_strings(json_object_get(leaf, "san"), "email:client@lab.test", NULL);
    assert_strings(json_object_get(leaf, "eku"), "clientAuth", "emailProtection", NULL);
    assert_string_equal(str(leaf, "key_type"), "EC");
    chain = json_object_get(o, "chain");
    root = json_array_get(chain, json_array_size(chain) - 1);
    assert_string_equal(str(root, "subject"), "CN=tlsfault Test Root RSA,O=tlsfault lab");
    assert_int_equal(num(root, "key_bits"), 3072);
    assert_true(json_is_true(json_object_get(root, "self_signed")));
    assert_true(json_is_true(json_object_get(root, "is_ca")));
    json_decref(o);

    /* GnuTLS asked for a certificate; OpenSSL had none and sent an empty list. */
    assert_int_equal(none.n, 3);
    o = decode_cert(none.p, none.n, false, &ok);
    assert_true(ok);
    assert_int_equal(num(o, "chain_length"), 0);
    json_decref(o);
    free(b.p);
    free(none.p);
}

/* Rebuilds a TLS 1.2 Certificate in the TLS 1.3 layout, with `ext` after the first entry. */
static void
cert13_from12(struct msg *m, const struct blob *b12, const uint8_t *ext, size_t ext_n)
{
    struct tf_cursor c, list = {NULL, NULL}, der;
    size_t outer;
    bool first = true;

    tf_cursor_init(&c, b12->p, b12->n);
    assert_true(tf_cursor_sub24(&c, &list));
    m->n = 0;
    put8(m, 0);
    outer = open_block(m, 3);
    while (tf_cursor_sub24(&list, &der)) {
        put24(m, (uint32_t)tf_cursor_left(&der));
        putn(m, der.p, tf_cursor_left(&der));
        put16(m, first ? (uint16_t)ext_n : 0);
        if (first)
            putn(m, ext, ext_n);
        first = false;
    }
    close_block(m, outer, 3);
}

static void
test_certificate_tls13_layout(void **state)
{
    static const uint8_t sct[] = {0x00, 0x12, 0x00, 0x02, 0xab, 0xcd};
    static const uint8_t bad[] = {0x00, 0x12, 0x00, 0x09, 0xab, 0xcd};
    struct blob b = load("openssl-gnutls-tls12.certificate.bin");
    struct msg m;
    bool ok;
    json_t *o, *leaf;

    (void)state;
    cert13_from12(&m, &b, sct, sizeof(sct));
    o = decode_cert(m.b, m.n, true, &ok);
    assert_true(ok);
    assert_int_equal(num(o, "context_length"), 0);
    assert_int_equal(num(o, "chain_length"), 2);
    leaf = json_array_get(json_object_get(o, "chain"), 0);
    assert_string_equal(str(leaf, "subject"), "CN=ec.lab.test,O=tlsfault lab");
    assert_strings(json_object_get(leaf, "extensions"), "signed_certificate_timestamp", NULL);
    assert_null(json_object_get(json_array_get(json_object_get(o, "chain"), 1), "extensions"));
    json_decref(o);

    /* The same bytes read with the TLS 1.2 layout do not fit. */
    o = decode_cert(m.b, m.n, false, &ok);
    assert_false(ok);
    json_decref(o);

    /* An entry extension that overruns fails the whole message. */
    cert13_from12(&m, &b, bad, sizeof(bad));
    o = decode_cert(m.b, m.n, true, &ok);
    assert_false(ok);
    assert_malformed_contains(o, "extension signed_certificate_timestamp length 9 overruns");
    json_decref(o);
    free(b.p);
}

static void
test_certificate_every_truncation(void **state)
{
    struct blob b = load("openssl-tls12-ecdhe-rsa.certificate.bin");

    (void)state;
    for (size_t i = 0; i < b.n; i++) {
        bool ok;
        json_t *o = decode_cert(b.p, i, false, &ok);

        if (ok)
            fail_msg("certificate cut at %zu of %zu decoded as valid", i, b.n);
        assert_true(json_is_string(json_object_get(o, "malformed")));
        json_decref(o);
    }
    free(b.p);
}

/* DER that OpenSSL refuses is reported per entry; the message itself is fine. */
static void
test_certificate_garbage_der(void **state)
{
    struct blob b = load("openssl-tls12-ecdhe-rsa.certificate.bin");
    static const uint8_t junk[][8] = {
        {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00},
        {0x30, 0x82, 0xff, 0xff, 0x30, 0x82, 0xff, 0xff},
        {0x30, 0x06, 0x30, 0x04, 0x02, 0x01, 0x01, 0x05},
        {0x30, 0x80, 0x30, 0x80, 0x00, 0x00, 0x00, 0x00},
    };
    struct tf_cursor c, list = {NULL, NULL}, der = {NULL, NULL};
    struct msg m;
    bool ok;
    json_t *o;

    (void)state;
    for (size_t i = 0; i < N_OF(junk); i++) {
        m.n = 0;
        put24(&m, 3 + 8);
        put24(&m, 8);
        putn(&m, junk[i], 8);
        o = decode_cert(m.b, m.n, false, &ok);
        assert_true(ok);
        assert_int_equal(num(json_array_get(json_object_get(o, "chain"), 0), "unparsable"), 8);
        json_decref(o);
    }

    /* The leaf's DER cut in half, with the framing lengths made to match. */
    tf_cursor_init(&c, b.p, b.n);
    assert_true(tf_cursor_sub24(&c, &list));
    assert_true(tf_cursor_sub24(&list, &der));
    size_t half = tf_cursor_left(&der) / 2;
    m.n = 0;
    put24(&m, (uint32_t)(3 + half));
    put24(&m, (uint32_t)half);
    putn(&m, der.p, half);
    o = decode_cert(m.b, m.n, false, &ok);
    assert_true(ok);
    assert_int_equal(num(json_array_get(json_object_get(o, "chain"), 0), "unparsable"), half);
    json_decref(o);

    /* The whole leaf with bytes after its DER inside the entry. */
    m.n = 0;
    put24(&m, (uint32_t)(3 + tf_cursor_left(&der) + 2));
    put24(&m, (uint32_t)(tf_cursor_left(&der) + 2));
    putn(&m, der.p, tf_cursor_left(&der));
    put16(&m, 0xdead);
    o = decode_cert(m.b, m.n, false, &ok);
    assert_true(ok);
    assert_int_equal(num(json_array_get(json_object_get(o, "chain"), 0), "trailing_bytes"), 2);
    json_decref(o);

    /* Every single-byte flip of the leaf must decode without crashing. */
    uint8_t *flip = exact_copy(b.p, b.n);
    for (size_t i = 6; i < 6 + tf_cursor_left(&der); i += 7) {
        flip[i] ^= 0xff;
        o = json_object();
        assert_true(tf_decode_certificate(flip, b.n, false, o));
        assert_int_equal(json_array_size(json_object_get(o, "chain")), 2);
        json_decref(o);
        flip[i] ^= 0xff;
    }
    free(flip);
    free(b.p);
}

static void
test_certificate_bad_framing(void **state)
{
    static const struct {
        const char *what;
        bool tls13;
        uint8_t bytes[16];
        size_t n;
        const char *malformed;
    } cases[] = {
        {"list overruns", false, {0x00, 0x00, 0x09, 0x00, 0x00, 0x01, 0x30}, 7,
         "certificate_list length 9 overruns 4 bytes"},
        {"empty entry", false, {0x00, 0x00, 0x03, 0x00, 0x00, 0x00}, 6,
         "cert_data length 0 below the minimum 1"},
        {"entry overruns list", false, {0x00, 0x00, 0x04, 0x00, 0x00, 0x05, 0x30}, 7,
         "cert_data length 5 overruns 1 bytes"},
        {"bytes after list", false, {0x00, 0x00, 0x00, 0x00}, 4,
         "1 trailing bytes after certificate_list"},
        {"list length cut", false, {0x00, 0x00}, 2, "certificate_list length truncated"},
        {"1.3 context overruns", true, {0x05, 0x00}, 2,
         "certificate_request_context length 5 overruns 1 bytes"},
        {"1.3 entry without extensions", true, {0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x02, 0x30,
                                                0x00}, 9, "extensions length truncated"},
    };

    (void)state;
    for (size_t i = 0; i < N_OF(cases); i++) {
        bool ok;
        json_t *o = decode_cert(cases[i].bytes, cases[i].n, cases[i].tls13, &ok);

        if (ok)
            fail_msg("%s: decoded as valid", cases[i].what);
        assert_malformed(o, cases[i].malformed);
        json_decref(o);
    }
}

/* ------------------------------------------------------------------ other messages */

static void
test_certificate_status(void **state)
{
    struct blob b = load("openssl-tls12-ocsp.certificate_status.bin");
    static const uint8_t unknown[] = {0x07, 0x00, 0x00, 0x01, 0x00};
    static const uint8_t empty[] = {0x01, 0x00, 0x00, 0x00};
    static const uint8_t junk[] = {0x01, 0x00, 0x00, 0x02, 0x30, 0x00};
    static const uint8_t multi[] = {0x02, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00,
                                    0x00, 0x00, 0x02, 0x30, 0x00};
    json_t *o;

    (void)state;
    o = json_object();
    assert_true(tf_decode_certificate_status(b.p, b.n, o));
    assert_string_equal(str(o, "status_type"), "ocsp");
    assert_int_equal(num(o, "ocsp_response_length"), b.n - 4);
    assert_string_equal(str(o, "ocsp_status"), "successful");
    assert_string_equal(str(o, "cert_status"), "good");
    json_decref(o);

    for (size_t i = 0; i < b.n; i++) {
        uint8_t *c = exact_copy(b.p, i);
        o = json_object();
        assert_false(tf_decode_certificate_status(c, i, o));
        json_decref(o);
        free(c);
    }

    o = json_object();
    assert_false(tf_decode_certificate_status(unknown, sizeof(unknown), o));
    assert_malformed(o, "status_type 7 is not one we can read");
    json_decref(o);
    o = json_object();
    assert_false(tf_decode_certificate_status(empty, sizeof(empty), o));
    assert_malformed(o, "response length 0 below the minimum 1");
    json_decref(o);
    o = json_object();
    assert_true(tf_decode_certificate_status(junk, sizeof(junk), o));
    assert_string_equal(str(o, "ocsp_status"), "unparsable");
    json_decref(o);
    o = json_object();
    assert_true(tf_decode_certificate_status(multi, sizeof(multi), o));
    assert_int_equal(num(o, "responses"), 2);
    assert_int_equal(num(o, "ocsp_response_length"), 2);
    json_decref(o);
    free(b.p);
}

/* The suite comes from the ServerHello of the same capture, as in a real flow. */
static json_t *
decode_ske_of(const char *capture, bool *ok, size_t *len)
{
    char name[128];
    struct tf_server_hello_info info;
    struct blob sh, ske;
    json_t *o = json_object();

    snprintf(name, sizeof(name), "%s.server_hello.bin", capture);
    sh = load(name);
    snprintf(name, sizeof(name), "%s.server_key_exchange.bin", capture);
    ske = load(name);
    assert_true(tf_decode_server_hello(sh.p, sh.n, o, &info));
    json_decref(o);
    o = json_object();
    *ok = tf_decode_server_key_exchange(ske.p, ske.n, info.cipher_suite, o);
    *len = ske.n;
    /* And every truncation is malformed. */
    for (size_t i = 0; i < ske.n; i++) {
        uint8_t *c = exact_copy(ske.p, i);
        json_t *t = json_object();
        if (tf_decode_server_key_exchange(c, i, info.cipher_suite, t))
            fail_msg("%s cut at %zu decoded as valid", name, i);
        json_decref(t);
        free(c);
    }
    free(sh.p);
    free(ske.p);
    return o;
}

static void
test_server_key_exchange(void **state)
{
    bool ok;
    size_t n;
    json_t *o;

    (void)state;
    o = decode_ske_of("openssl-tls12-ecdhe-rsa", &ok, &n);
    assert_true(ok);
    assert_string_equal(str(o, "kex"), "ECDHE");
    assert_string_equal(str(o, "group"), "x25519");
    assert_int_equal(num(o, "public_length"), 32);
    assert_string_equal(str(o, "signature_algorithm"), "rsa_pss_rsae_sha256");
    json_decref(o);

    o = decode_ske_of("openssl-tls12-dhe", &ok, &n);
    assert_true(ok);
    assert_string_equal(str(o, "kex"), "DHE");
    assert_int_equal(num(o, "dh_p_bits"), 2048);
    assert_null(json_object_get(o, "group"));
    assert_string_equal(str(o, "signature_algorithm"), "rsa_pss_rsae_sha256");
    json_decref(o);

    o = decode_ske_of("openssl-tls12-ed25519", &ok, &n);
    assert_true(ok);
    assert_string_equal(str(o, "signature_algorithm"), "ed25519");
    json_decref(o);

    /* GnuTLS as server (ECDSA) and as client (it prefers secp256r1). */
    o = decode_ske_of("openssl-gnutls-tls12", &ok, &n);
    assert_true(ok);
    assert_string_equal(str(o, "kex"), "ECDHE");
    assert_string_equal(str(o, "group"), "x25519");
    assert_string_equal(str(o, "signature_algorithm"), "ecdsa_secp256r1_sha256");
    json_decref(o);

    o = decode_ske_of("gnutls-openssl-tls12", &ok, &n);
    assert_true(ok);
    assert_string_equal(str(o, "group"), "secp256r1");
    assert_int_equal(num(o, "public_length"), 65);
    json_decref(o);
}

static void
test_server_key_exchange_hand_made(void **state)
{
    /* ECDHE with explicit_prime parameters (removed by RFC 8422). */
    static const uint8_t explicit_curve[] = {0x01, 0x00, 0x17, 0x01, 0x04};
    /* TLS 1.0/1.1: a signature without the algorithm. */
    static const uint8_t tls10[] = {0x03, 0x00, 0x17, 0x01, 0x04, 0x00, 0x02, 0xaa, 0xbb};
    static const uint8_t trailing[] = {0x03, 0x00, 0x17, 0x01, 0x04, 0x04, 0x03,
                                       0x00, 0x01, 0xaa, 0x00};
    static const uint8_t psk[] = {0x00, 0x03, 'a', 'b', 'c'};
    json_t *o;

    (void)state;
    o = json_object();
    assert_false(tf_decode_server_key_exchange(explicit_curve, sizeof(explicit_curve), 0xc02f, o));
    assert_malformed(o, "curve_type 1 is not named_curve");
    json_decref(o);

    o = json_object();
    assert_true(tf_decode_server_key_exchange(tls10, sizeof(tls10), 0xc013, o));
    assert_int_equal(num(o, "signature_length"), 2);
    assert_null(json_object_get(o, "signature_algorithm"));
    json_decref(o);

    o = json_object();
    assert_false(tf_decode_server_key_exchange(trailing, sizeof(trailing), 0xc02f, o));
    assert_true(json_is_string(json_object_get(o, "malformed")));
    json_decref(o);

    o = json_object();
    assert_true(tf_decode_server_key_exchange(psk, sizeof(psk), 0x00a8, o));
    assert_string_equal(str(o, "kex"), "PSK");
    assert_int_equal(num(o, "psk_identity_hint_length"), 3);
    json_decref(o);

    /* A suite whose layout we do not know is not guessed at. */
    o = json_object();
    assert_true(tf_decode_server_key_exchange(psk, sizeof(psk), 0x7777, o));
    assert_string_equal(str(o, "kex"), "unknown");
    json_decref(o);
}

static void
test_certificate_request(void **state)
{
    struct blob ossl = load("openssl-tls12-client-auth.certificate_request.bin");
    struct blob gnu = load("openssl-gnutls-tls12.certificate_request.bin");
    static const uint8_t cr13[] = {0x00, 0x00, 0x0a, 0x00, 0x0d, 0x00, 0x06,
                                   0x00, 0x04, 0x08, 0x04, 0x04, 0x03};
    static const uint8_t cr13_no_exts[] = {0x00, 0x00, 0x00};
    static const uint8_t no_types[] = {0x00, 0x00, 0x02, 0x04, 0x03, 0x00, 0x00};
    json_t *o;

    (void)state;
    o = json_object();
    assert_true(tf_decode_certificate_request(ossl.p, ossl.n, false, o));
    assert_true(has(json_object_get(o, "certificate_types"), "rsa_sign"));
    assert_true(has(json_object_get(o, "certificate_types"), "ecdsa_sign"));
    assert_true(has(json_object_get(o, "signature_algorithms"), "rsa_pss_rsae_sha256"));
    assert_int_equal(num(o, "ca_names_count"), 1);
    assert_strings(json_object_get(o, "ca_names"), "CN=tlsfault Test Root RSA,O=tlsfault lab",
                   NULL);
    json_decref(o);

    o = json_object();
    assert_true(tf_decode_certificate_request(gnu.p, gnu.n, false, o));
    assert_strings(json_object_get(o, "certificate_types"), "rsa_sign", "ecdsa_sign", NULL);
    assert_int_equal(num(o, "ca_names_count"), 0);
    json_decref(o);

    for (size_t i = 0; i < ossl.n; i++) {
        uint8_t *c = exact_copy(ossl.p, i);
        o = json_object();
        assert_false(tf_decode_certificate_request(c, i, false, o));
        json_decref(o);
        free(c);
    }

    o = json_object();
    assert_true(tf_decode_certificate_request(cr13, sizeof(cr13), true, o));
    assert_int_equal(num(o, "context_length"), 0);
    assert_strings(json_object_get(o, "extensions"), "signature_algorithms", NULL);
    assert_strings(json_object_get(o, "signature_algorithms"), "rsa_pss_rsae_sha256",
                   "ecdsa_secp256r1_sha256", NULL);
    json_decref(o);

    o = json_object();
    assert_false(tf_decode_certificate_request(cr13_no_exts, sizeof(cr13_no_exts), true, o));
    assert_malformed(o, "extensions length 0 below the minimum 2");
    json_decref(o);

    o = json_object();
    assert_false(tf_decode_certificate_request(no_types, sizeof(no_types), false, o));
    assert_malformed(o, "certificate_types length 0 below the minimum 1");
    json_decref(o);
    free(ossl.p);
    free(gnu.p);
}

static void
test_client_key_exchange(void **state)
{
    static const struct {
        const char *file;
        json_int_t length;
    } cases[] = {
        {"openssl-tls12-ecdhe-rsa.client_key_exchange.bin", 32},
        {"openssl-tls12-dhe.client_key_exchange.bin", 256},
        {"gnutls-openssl-tls12.client_key_exchange.bin", 65},
    };

    (void)state;
    for (size_t i = 0; i < N_OF(cases); i++) {
        struct blob b = load(cases[i].file);
        json_t *o = json_object();

        assert_true(tf_decode_client_key_exchange(b.p, b.n, o));
        assert_int_equal(num(o, "exchange_length"), cases[i].length);
        json_decref(o);
        for (size_t n = 0; n < b.n; n++) {
            uint8_t *c = exact_copy(b.p, n);
            o = json_object();
            tf_decode_client_key_exchange(c, n, o);
            assert_true(json_is_integer(json_object_get(o, "exchange_length")));
            json_decref(o);
            free(c);
        }
        free(b.p);
    }
}

static void
test_new_session_ticket(void **state)
{
    struct blob ossl = load("openssl-tls12-ecdhe-rsa.new_session_ticket.bin");
    struct blob gnu = load("openssl-gnutls-tls12.new_session_ticket.bin");
    static const uint8_t tls13[] = {0x00, 0x00, 0x1c, 0x20, 0x01, 0x02, 0x03, 0x04, 0x01, 0x00,
                                    0x00, 0x02, 0xaa, 0xbb, 0x00, 0x00};
    json_t *o;

    (void)state;
    o = json_object();
    assert_true(tf_decode_new_session_ticket(ossl.p, ossl.n, o));
    assert_int_equal(num(o, "lifetime_hint"), 7200);
    assert_int_equal(num(o, "ticket_length"), ossl.n - 6);
    json_decref(o);

    o = json_object();
    assert_true(tf_decode_new_session_ticket(gnu.p, gnu.n, o));
    assert_int_equal(num(o, "ticket_length"), gnu.n - 6);
    json_decref(o);

    for (size_t i = 0; i < ossl.n; i++) {
        uint8_t *c = exact_copy(ossl.p, i);
        o = json_object();
        assert_false(tf_decode_new_session_ticket(c, i, o));
        assert_true(json_is_string(json_object_get(o, "malformed")));
        json_decref(o);
        free(c);
    }

    /* The TLS 1.3 layout, as a mitm leg would see it decrypted. */
    o = json_object();
    assert_true(tf_decode_new_session_ticket(tls13, sizeof(tls13), o));
    assert_int_equal(num(o, "lifetime_hint"), 7200);
    assert_int_equal(num(o, "ticket_length"), 2);
    json_decref(o);
    free(ossl.p);
    free(gnu.p);
}

static void
test_alert(void **state)
{
    struct blob b = load("openssl-tls12-no-shared-cipher.alert.bin");
    static const uint8_t close_notify[] = {0x01, 0x00};
    static const uint8_t unknown[] = {0x03, 0xfe};
    static const uint8_t three[] = {0x02, 0x28, 0x00};
    json_t *o;

    (void)state;
    o = json_object();
    assert_true(tf_decode_alert(b.p, b.n, o));
    assert_string_equal(str(o, "level"), "fatal");
    assert_string_equal(str(o, "description"), "handshake_failure");
    json_decref(o);

    o = json_object();
    assert_true(tf_decode_alert(close_notify, sizeof(close_notify), o));
    assert_string_equal(str(o, "level"), "warning");
    assert_string_equal(str(o, "description"), "close_notify");
    json_decref(o);

    o = json_object();
    assert_true(tf_decode_alert(unknown, sizeof(unknown), o));
    assert_string_equal(str(o, "level"), "0x03");
    assert_string_equal(str(o, "description"), "0xfe");
    json_decref(o);

    o = json_object();
    assert_false(tf_decode_alert(three, sizeof(three), o));
    assert_malformed(o, "alert length 3, expected 2");
    assert_string_equal(str(o, "description"), "handshake_failure");
    json_decref(o);

    o = json_object();
    assert_false(tf_decode_alert(three, 1, o));
    assert_malformed(o, "alert length 1, expected 2");
    assert_string_equal(str(o, "level"), "fatal");
    assert_null(json_object_get(o, "description"));
    json_decref(o);

    o = json_object();
    assert_false(tf_decode_alert(NULL, 0, o));
    assert_malformed(o, "alert length 0, expected 2");
    json_decref(o);
    free(b.p);
}

/* Empty bodies, NULL included, are malformed for every decoder that needs bytes. */
static void
test_empty_bodies(void **state)
{
    json_t *o;

    (void)state;
    o = json_object();
    assert_false(tf_decode_client_hello(NULL, 0, o, NULL));
    json_decref(o);
    o = json_object();
    assert_false(tf_decode_server_hello(NULL, 0, o, NULL));
    json_decref(o);
    o = json_object();
    assert_false(tf_decode_certificate(NULL, 0, false, o));
    json_decref(o);
    o = json_object();
    assert_false(tf_decode_certificate(NULL, 0, true, o));
    json_decref(o);
    o = json_object();
    assert_false(tf_decode_certificate_status(NULL, 0, o));
    json_decref(o);
    o = json_object();
    assert_false(tf_decode_server_key_exchange(NULL, 0, 0xc02f, o));
    json_decref(o);
    o = json_object();
    assert_false(tf_decode_certificate_request(NULL, 0, false, o));
    json_decref(o);
    o = json_object();
    assert_false(tf_decode_new_session_ticket(NULL, 0, o));
    json_decref(o);
    o = json_object();
    assert_true(tf_decode_client_key_exchange(NULL, 0, o));
    assert_int_equal(num(o, "exchange_length"), 0);
    json_decref(o);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_client_hello_openssl_tls13),
        cmocka_unit_test(test_client_hello_openssl_tls12),
        cmocka_unit_test(test_client_hello_resumption_and_ocsp),
        cmocka_unit_test(test_client_hello_gnutls),
        cmocka_unit_test(test_client_hello_retry_pair),
        cmocka_unit_test(test_client_hello_grease_and_unknown),
        cmocka_unit_test(test_client_hello_max_version_fallback),
        cmocka_unit_test(test_client_hello_sni_escaping),
        cmocka_unit_test(test_client_hello_flag_extensions),
        cmocka_unit_test(test_client_hello_without_extensions),
        cmocka_unit_test(test_client_hello_every_truncation),
        cmocka_unit_test(test_client_hello_extension_inner_overrun),
        cmocka_unit_test(test_client_hello_extension_outer_overrun),
        cmocka_unit_test(test_client_hello_duplicate_extension),
        cmocka_unit_test(test_code_lists_cached),
        cmocka_unit_test(test_client_hello_bad_fixed_fields),
        cmocka_unit_test(test_client_hello_bad_extensions),
        cmocka_unit_test(test_server_hello_tls13),
        cmocka_unit_test(test_server_hello_retry_request),
        cmocka_unit_test(test_server_hello_tls12_downgrade_sentinel),
        cmocka_unit_test(test_server_hello_every_truncation),
        cmocka_unit_test(test_server_hello_bad_extensions),
        cmocka_unit_test(test_server_hello_hrr_cookie),
        cmocka_unit_test(test_certificate_openssl_rsa_chain),
        cmocka_unit_test(test_certificate_gnutls_ecdsa_chain),
        cmocka_unit_test(test_certificate_ed25519_self_signed),
        cmocka_unit_test(test_certificate_client),
        cmocka_unit_test(test_certificate_tls13_layout),
        cmocka_unit_test(test_certificate_every_truncation),
        cmocka_unit_test(test_certificate_garbage_der),
        cmocka_unit_test(test_certificate_bad_framing),
        cmocka_unit_test(test_certificate_status),
        cmocka_unit_test(test_server_key_exchange),
        cmocka_unit_test(test_server_key_exchange_hand_made),
        cmocka_unit_test(test_certificate_request),
        cmocka_unit_test(test_client_key_exchange),
        cmocka_unit_test(test_new_session_ticket),
        cmocka_unit_test(test_alert),
        cmocka_unit_test(test_empty_bodies),
    };

    return cmocka_run_group_tests_name("decode", tests, NULL, NULL);
}
