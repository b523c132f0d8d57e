/*
 * test_names.c — unit tests for names.c, the IANA name tables.
 *
 * Spot checks of every table against the registries (IANA TLS Parameters,
 * TLS ExtensionType Values, RFC 8446, RFC 5246, RFC 8701), unknown values
 * giving NULL, GREASE, tf_names_or_code() formatting and truncation, the
 * ordering the bisection relies on, and the whole cipher suite list that
 * OpenSSL 3.0 knows, embedded below so the test never runs openssl.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tlsfault/names.h"

/* Exported by names.c for this test only; deliberately absent from names.h. */
bool tf_names_check_tables(void);

struct expect {
    uint16_t code;
    const char *name;
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/*
 * Output of `openssl ciphers -V 'ALL:COMPLEMENTOFALL:eNULL:@SECLEVEL=0' -stdname`
 * (OpenSSL 3.0.22), sorted by code: an independent source for the IANA names.
 */
static const struct expect openssl_suites[] = {
    {0x0001, "TLS_RSA_WITH_NULL_MD5"},
    {0x0002, "TLS_RSA_WITH_NULL_SHA"},
    {0x002c, "TLS_PSK_WITH_NULL_SHA"},
    {0x002d, "TLS_DHE_PSK_WITH_NULL_SHA"},
    {0x002e, "TLS_RSA_PSK_WITH_NULL_SHA"},
    {0x002f, "TLS_RSA_WITH_AES_128_CBC_SHA"},
    {0x0032, "TLS_DHE_DSS_WITH_AES_128_CBC_SHA"},
    {0x0033, "TLS_DHE_RSA_WITH_AES_128_CBC_SHA"},
    {0x0034, "TLS_DH_anon_WITH_AES_128_CBC_SHA"},
    {0x0035, "TLS_RSA_WITH_AES_256_CBC_SHA"},
    {0x0038, "TLS_DHE_DSS_WITH_AES_256_CBC_SHA"},
    {0x0039, "TLS_DHE_RSA_WITH_AES_256_CBC_SHA"},
    {0x003a, "TLS_DH_anon_WITH_AES_256_CBC_SHA"},
    {0x003b, "TLS_RSA_WITH_NULL_SHA256"},
    {0x003c, "TLS_RSA_WITH_AES_128_CBC_SHA256"},
    {0x003d, "TLS_RSA_WITH_AES_256_CBC_SHA256"},
    {0x0040, "TLS_DHE_DSS_WITH_AES_128_CBC_SHA256"},
    {0x0041, "TLS_RSA_WITH_CAMELLIA_128_CBC_SHA"},
    {0x0044, "TLS_DHE_DSS_WITH_CAMELLIA_128_CBC_SHA"},
    {0x0045, "TLS_DHE_RSA_WITH_CAMELLIA_128_CBC_SHA"},
    {0x0046, "TLS_DH_anon_WITH_CAMELLIA_128_CBC_SHA"},
    {0x0067, "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256"},
    {0x006a, "TLS_DHE_DSS_WITH_AES_256_CBC_SHA256"},
    {0x006b, "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256"},
    {0x006c, "TLS_DH_anon_WITH_AES_128_CBC_SHA256"},
    {0x006d, "TLS_DH_anon_WITH_AES_256_CBC_SHA256"},
    {0x0084, "TLS_RSA_WITH_CAMELLIA_256_CBC_SHA"},
    {0x0087, "TLS_DHE_DSS_WITH_CAMELLIA_256_CBC_SHA"},
    {0x0088, "TLS_DHE_RSA_WITH_CAMELLIA_256_CBC_SHA"},
    {0x0089, "TLS_DH_anon_WITH_CAMELLIA_256_CBC_SHA"},
    {0x008c, "TLS_PSK_WITH_AES_128_CBC_SHA"},
    {0x008d, "TLS_PSK_WITH_AES_256_CBC_SHA"},
    {0x0090, "TLS_DHE_PSK_WITH_AES_128_CBC_SHA"},
    {0x0091, "TLS_DHE_PSK_WITH_AES_256_CBC_SHA"},
    {0x0094, "TLS_RSA_PSK_WITH_AES_128_CBC_SHA"},
    {0x0095, "TLS_RSA_PSK_WITH_AES_256_CBC_SHA"},
    {0x009c, "TLS_RSA_WITH_AES_128_GCM_SHA256"},
    {0x009d, "TLS_RSA_WITH_AES_256_GCM_SHA384"},
    {0x009e, "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256"},
    {0x009f, "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384"},
    {0x00a2, "TLS_DHE_DSS_WITH_AES_128_GCM_SHA256"},
    {0x00a3, "TLS_DHE_DSS_WITH_AES_256_GCM_SHA384"},
    {0x00a6, "TLS_DH_anon_WITH_AES_128_GCM_SHA256"},
    {0x00a7, "TLS_DH_anon_WITH_AES_256_GCM_SHA384"},
    {0x00a8, "TLS_PSK_WITH_AES_128_GCM_SHA256"},
    {0x00a9, "TLS_PSK_WITH_AES_256_GCM_SHA384"},
    {0x00aa, "TLS_DHE_PSK_WITH_AES_128_GCM_SHA256"},
    {0x00ab, "TLS_DHE_PSK_WITH_AES_256_GCM_SHA384"},
    {0x00ac, "TLS_RSA_PSK_WITH_AES_128_GCM_SHA256"},
    {0x00ad, "TLS_RSA_PSK_WITH_AES_256_GCM_SHA384"},
    {0x00ae, "TLS_PSK_WITH_AES_128_CBC_SHA256"},
    {0x00af, "TLS_PSK_WITH_AES_256_CBC_SHA384"},
    {0x00b0, "TLS_PSK_WITH_NULL_SHA256"},
    {0x00b1, "TLS_PSK_WITH_NULL_SHA384"},
    {0x00b2, "TLS_DHE_PSK_WITH_AES_128_CBC_SHA256"},
    {0x00b3, "TLS_DHE_PSK_WITH_AES_256_CBC_SHA384"},
    {0x00b4, "TLS_DHE_PSK_WITH_NULL_SHA256"},
    {0x00b5, "TLS_DHE_PSK_WITH_NULL_SHA384"},
    {0x00b6, "TLS_RSA_PSK_WITH_AES_128_CBC_SHA256"},
    {0x00b7, "TLS_RSA_PSK_WITH_AES_256_CBC_SHA384"},
    {0x00b8, "TLS_RSA_PSK_WITH_NULL_SHA256"},
    {0x00b9, "TLS_RSA_PSK_WITH_NULL_SHA384"},
    {0x00ba, "TLS_RSA_WITH_CAMELLIA_128_CBC_SHA256"},
    {0x00bd, "TLS_DHE_DSS_WITH_CAMELLIA_128_CBC_SHA256"},
    {0x00be, "TLS_DHE_RSA_WITH_CAMELLIA_128_CBC_SHA256"},
    {0x00bf, "TLS_DH_anon_WITH_CAMELLIA_128_CBC_SHA256"},
    {0x00c0, "TLS_RSA_WITH_CAMELLIA_256_CBC_SHA256"},
    {0x00c3, "TLS_DHE_DSS_WITH_CAMELLIA_256_CBC_SHA256"},
    {0x00c4, "TLS_DHE_RSA_WITH_CAMELLIA_256_CBC_SHA256"},
    {0x00c5, "TLS_DH_anon_WITH_CAMELLIA_256_CBC_SHA256"},
    {0x1301, "TLS_AES_128_GCM_SHA256"},
    {0x1302, "TLS_AES_256_GCM_SHA384"},
    {0x1303, "TLS_CHACHA20_POLY1305_SHA256"},
    {0xc006, "TLS_ECDHE_ECDSA_WITH_NULL_SHA"},
    {0xc009, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"},
    {0xc00a, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA"},
    {0xc010, "TLS_ECDHE_RSA_WITH_NULL_SHA"},
    {0xc013, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"},
    {0xc014, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA"},
    {0xc015, "TLS_ECDH_anon_WITH_NULL_SHA"},
    {0xc018, "TLS_ECDH_anon_WITH_AES_128_CBC_SHA"},
    {0xc019, "TLS_ECDH_anon_WITH_AES_256_CBC_SHA"},
    {0xc01d, "TLS_SRP_SHA_WITH_AES_128_CBC_SHA"},
    {0xc01e, "TLS_SRP_SHA_RSA_WITH_AES_128_CBC_SHA"},
    {0xc01f, "TLS_SRP_SHA_DSS_WITH_AES_128_CBC_SHA"},
    {0xc020, "TLS_SRP_SHA_WITH_AES_256_CBC_SHA"},
    {0xc021, "TLS_SRP_SHA_RSA_WITH_AES_256_CBC_SHA"},
    {0xc022, "TLS_SRP_SHA_DSS_WITH_AES_256_CBC_SHA"},
    {0xc023, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256"},
    {0xc024, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384"},
    {0xc027, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256"},
    {0xc028, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384"},
    {0xc02b, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"},
    {0xc02c, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"},
    {0xc02f, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"},
    {0xc030, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"},
    {0xc035, "TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA"},
    {0xc036, "TLS_ECDHE_PSK_WITH_AES_256_CBC_SHA"},
    {0xc037, "TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256"},
    {0xc038, "TLS_ECDHE_PSK_WITH_AES_256_CBC_SHA384"},
    {0xc039, "TLS_ECDHE_PSK_WITH_NULL_SHA"},
    {0xc03a, "TLS_ECDHE_PSK_WITH_NULL_SHA256"},
    {0xc03b, "TLS_ECDHE_PSK_WITH_NULL_SHA384"},
    {0xc050, "TLS_RSA_WITH_ARIA_128_GCM_SHA256"},
    {0xc051, "TLS_RSA_WITH_ARIA_256_GCM_SHA384"},
    {0xc052, "TLS_DHE_RSA_WITH_ARIA_128_GCM_SHA256"},
    {0xc053, "TLS_DHE_RSA_WITH_ARIA_256_GCM_SHA384"},
    {0xc056, "TLS_DHE_DSS_WITH_ARIA_128_GCM_SHA256"},
    {0xc057, "TLS_DHE_DSS_WITH_ARIA_256_GCM_SHA384"},
    {0xc05c, "TLS_ECDHE_ECDSA_WITH_ARIA_128_GCM_SHA256"},
    {0xc05d, "TLS_ECDHE_ECDSA_WITH_ARIA_256_GCM_SHA384"},
    {0xc060, "TLS_ECDHE_RSA_WITH_ARIA_128_GCM_SHA256"},
    {0xc061, "TLS_ECDHE_RSA_WITH_ARIA_256_GCM_SHA384"},
    {0xc06a, "TLS_PSK_WITH_ARIA_128_GCM_SHA256"},
    {0xc06b, "TLS_PSK_WITH_ARIA_256_GCM_SHA384"},
    {0xc06c, "TLS_DHE_PSK_WITH_ARIA_128_GCM_SHA256"},
    {0xc06d, "TLS_DHE_PSK_WITH_ARIA_256_GCM_SHA384"},
    {0xc06e, "TLS_RSA_PSK_WITH_ARIA_128_GCM_SHA256"},
    {0xc06f, "TLS_RSA_PSK_WITH_ARIA_256_GCM_SHA384"},
    {0xc072, "TLS_ECDHE_ECDSA_WITH_CAMELLIA_128_CBC_SHA256"},
    {0xc073, "TLS_ECDHE_ECDSA_WITH_CAMELLIA_256_CBC_SHA384"},
    {0xc076, "TLS_ECDHE_RSA_WITH_CAMELLIA_128_CBC_SHA256"},
    {0xc077, "TLS_ECDHE_RSA_WITH_CAMELLIA_256_CBC_SHA384"},
    {0xc094, "TLS_PSK_WITH_CAMELLIA_128_CBC_SHA256"},
    {0xc095, "TLS_PSK_WITH_CAMELLIA_256_CBC_SHA384"},
    {0xc096, "TLS_DHE_PSK_WITH_CAMELLIA_128_CBC_SHA256"},
    {0xc097, "TLS_DHE_PSK_WITH_CAMELLIA_256_CBC_SHA384"},
    {0xc098, "TLS_RSA_PSK_WITH_CAMELLIA_128_CBC_SHA256"},
    {0xc099, "TLS_RSA_PSK_WITH_CAMELLIA_256_CBC_SHA384"},
    {0xc09a, "TLS_ECDHE_PSK_WITH_CAMELLIA_128_CBC_SHA256"},
    {0xc09b, "TLS_ECDHE_PSK_WITH_CAMELLIA_256_CBC_SHA384"},
    {0xc09c, "TLS_RSA_WITH_AES_128_CCM"},
    {0xc09d, "TLS_RSA_WITH_AES_256_CCM"},
    {0xc09e, "TLS_DHE_RSA_WITH_AES_128_CCM"},
    {0xc09f, "TLS_DHE_RSA_WITH_AES_256_CCM"},
    {0xc0a0, "TLS_RSA_WITH_AES_128_CCM_8"},
    {0xc0a1, "TLS_RSA_WITH_AES_256_CCM_8"},
    {0xc0a2, "TLS_DHE_RSA_WITH_AES_128_CCM_8"},
    {0xc0a3, "TLS_DHE_RSA_WITH_AES_256_CCM_8"},
    {0xc0a4, "TLS_PSK_WITH_AES_128_CCM"},
    {0xc0a5, "TLS_PSK_WITH_AES_256_CCM"},
    {0xc0a6, "TLS_DHE_PSK_WITH_AES_128_CCM"},
    {0xc0a7, "TLS_DHE_PSK_WITH_AES_256_CCM"},
    {0xc0a8, "TLS_PSK_WITH_AES_128_CCM_8"},
    {0xc0a9, "TLS_PSK_WITH_AES_256_CCM_8"},
    {0xc0aa, "TLS_PSK_DHE_WITH_AES_128_CCM_8"},
    {0xc0ab, "TLS_PSK_DHE_WITH_AES_256_CCM_8"},
    {0xc0ac, "TLS_ECDHE_ECDSA_WITH_AES_128_CCM"},
    {0xc0ad, "TLS_ECDHE_ECDSA_WITH_AES_256_CCM"},
    {0xc0ae, "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8"},
    {0xc0af, "TLS_ECDHE_ECDSA_WITH_AES_256_CCM_8"},
    {0xcca8, "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"},
    {0xcca9, "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"},
    {0xccaa, "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256"},
    {0xccab, "TLS_PSK_WITH_CHACHA20_POLY1305_SHA256"},
    {0xccac, "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256"},
    {0xccad, "TLS_DHE_PSK_WITH_CHACHA20_POLY1305_SHA256"},
    {0xccae, "TLS_RSA_PSK_WITH_CHACHA20_POLY1305_SHA256"},
};

static void
expect_u16(const char *(*lookup)(uint16_t), const struct expect *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *got = lookup(e[i].code);
        if (e[i].name == NULL) {
            if (got != NULL)
                fail_msg("0x%04x: expected no name, got \"%s\"", e[i].code, got);
            continue;
        }
        if (got == NULL)
            fail_msg("0x%04x: expected \"%s\", got NULL", e[i].code, e[i].name);
        if (strcmp(got, e[i].name) != 0)
            fail_msg("0x%04x: expected \"%s\", got \"%s\"", e[i].code, e[i].name, got);
    }
}

static void
expect_u8(const char *(*lookup)(uint8_t), const struct expect *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *got;
        assert_true(e[i].code <= 0xff);
        got = lookup((uint8_t)e[i].code);
        if (e[i].name == NULL) {
            if (got != NULL)
                fail_msg("%u: expected no name, got \"%s\"", e[i].code, got);
            continue;
        }
        if (got == NULL)
            fail_msg("%u: expected \"%s\", got NULL", e[i].code, e[i].name);
        if (strcmp(got, e[i].name) != 0)
            fail_msg("%u: expected \"%s\", got \"%s\"", e[i].code, e[i].name, got);
    }
}

static void
test_versions(void **state)
{
    static const struct expect e[] = {
        {0x0300, "SSL 3.0"},
        {0x0301, "TLS 1.0"},
        {0x0302, "TLS 1.1"},
        {0x0303, "TLS 1.2"},
        {0x0304, "TLS 1.3"},
        {0xfeff, "DTLS 1.0"},
        {0xfefd, "DTLS 1.2"},
        {0xfefc, "DTLS 1.3"},
        {0x7f12, "TLS 1.3 draft 18"},
        {0x7f17, "TLS 1.3 draft 23"},
        {0x7f1c, "TLS 1.3 draft 28"},
        {0x0000, NULL},
        {0x0305, NULL},
        {0x0403, NULL},
        {0x7f1d, NULL},
        {0xfefe, NULL},
        {0x0a0a, NULL},
        {0xffff, NULL},
    };
    (void)state;
    expect_u16(tf_names_version, e, COUNT(e));
}

static void
test_cipher_suites(void **state)
{
    static const struct expect e[] = {
        {0x0000, "TLS_NULL_WITH_NULL_NULL"},
        {0x0004, "TLS_RSA_WITH_RC4_128_MD5"},
        {0x0007, "TLS_RSA_WITH_IDEA_CBC_SHA"},
        {0x0009, "TLS_RSA_WITH_DES_CBC_SHA"},
        {0x000a, "TLS_RSA_WITH_3DES_EDE_CBC_SHA"},
        {0x0014, "TLS_DHE_RSA_EXPORT_WITH_DES40_CBC_SHA"},
        {0x001e, "TLS_KRB5_WITH_DES_CBC_SHA"},
        {0x002f, "TLS_RSA_WITH_AES_128_CBC_SHA"},
        {0x0035, "TLS_RSA_WITH_AES_256_CBC_SHA"},
        {0x0096, "TLS_RSA_WITH_SEED_CBC_SHA"},
        {0x009c, "TLS_RSA_WITH_AES_128_GCM_SHA256"},
        {0x00c6, "TLS_SM4_GCM_SM3"},
        {0x00ff, "TLS_EMPTY_RENEGOTIATION_INFO_SCSV"},
        {0x1301, "TLS_AES_128_GCM_SHA256"},
        {0x1302, "TLS_AES_256_GCM_SHA384"},
        {0x1303, "TLS_CHACHA20_POLY1305_SHA256"},
        {0x1304, "TLS_AES_128_CCM_SHA256"},
        {0x1305, "TLS_AES_128_CCM_8_SHA256"},
        {0x5600, "TLS_FALLBACK_SCSV"},
        {0xc009, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"},
        {0xc011, "TLS_ECDHE_RSA_WITH_RC4_128_SHA"},
        {0xc02b, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"},
        {0xc02f, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"},
        {0xc030, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"},
        {0xc03c, "TLS_RSA_WITH_ARIA_128_CBC_SHA256"},
        {0xc0aa, "TLS_PSK_DHE_WITH_AES_128_CCM_8"},
        {0xc0af, "TLS_ECDHE_ECDSA_WITH_AES_256_CCM_8"},
        {0xc0b4, "TLS_SHA256_SHA256"},
        {0xc100, "TLS_GOSTR341112_256_WITH_KUZNYECHIK_CTR_OMAC"},
        {0xcca8, "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"},
        {0xcca9, "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"},
        {0xd001, "TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256"},
        {0xd005, "TLS_ECDHE_PSK_WITH_AES_128_CCM_SHA256"},
        /* Reserved or unassigned ranges, GREASE, private use. */
        {0x001c, NULL},
        {0x0047, NULL},
        {0x0060, NULL},
        {0x00c8, NULL},
        {0x00fe, NULL},
        {0x0100, NULL},
        {0x1300, NULL},
        {0x1308, NULL},
        {0x5601, NULL},
        {0xc000, NULL},
        {0xcc13, NULL},
        {0xd004, NULL},
        {0x0a0a, NULL},
        {0xfafa, NULL},
        {0xff00, NULL},
        {0xffff, NULL},
    };
    (void)state;
    expect_u16(tf_names_cipher_suite, e, COUNT(e));
}

/* Every suite OpenSSL knows must be in our table under the same name. */
static void
test_cipher_suites_match_openssl(void **state)
{
    (void)state;
    assert_int_equal(COUNT(openssl_suites), 158);
    expect_u16(tf_names_cipher_suite, openssl_suites, COUNT(openssl_suites));
}

static void
test_extensions(void **state)
{
    static const struct expect e[] = {
        {0, "server_name"},
        {1, "max_fragment_length"},
        {5, "status_request"},
        {10, "supported_groups"},
        {11, "ec_point_formats"},
        {13, "signature_algorithms"},
        {14, "use_srtp"},
        {15, "heartbeat"},
        {16, "application_layer_protocol_negotiation"},
        {18, "signed_certificate_timestamp"},
        {21, "padding"},
        {22, "encrypt_then_mac"},
        {23, "extended_master_secret"},
        {27, "compress_certificate"},
        {28, "record_size_limit"},
        {35, "session_ticket"},
        {41, "pre_shared_key"},
        {42, "early_data"},
        {43, "supported_versions"},
        {44, "cookie"},
        {45, "psk_key_exchange_modes"},
        {47, "certificate_authorities"},
        {48, "oid_filters"},
        {49, "post_handshake_auth"},
        {50, "signature_algorithms_cert"},
        {51, "key_share"},
        {57, "quic_transport_parameters"},
        {13172, "next_protocol_negotiation"},
        {17513, "application_settings"},
        {17613, "application_settings_new"},
        {0xfe0d, "encrypted_client_hello"},
        {0xfd00, "ech_outer_extensions"},
        {0xff01, "renegotiation_info"},
        {0xffce, "encrypted_server_name"},
        {40, NULL},
        {46, NULL},
        {0x0a0a, NULL},
        {0x3a3a, NULL},
        {0xff00, NULL},
        {0xffff, NULL},
    };
    (void)state;
    expect_u16(tf_names_extension, e, COUNT(e));
}

static void
test_groups(void **state)
{
    static const struct expect e[] = {
        {1, "sect163k1"},
        {14, "sect571r1"},
        {19, "secp192r1"},
        {23, "secp256r1"},
        {24, "secp384r1"},
        {25, "secp521r1"},
        {26, "brainpoolP256r1"},
        {28, "brainpoolP512r1"},
        {29, "x25519"},
        {30, "x448"},
        {31, "brainpoolP256r1tls13"},
        {33, "brainpoolP512r1tls13"},
        {41, "curveSM2"},
        {256, "ffdhe2048"},
        {257, "ffdhe3072"},
        {258, "ffdhe4096"},
        {259, "ffdhe6144"},
        {260, "ffdhe8192"},
        {0x0200, "MLKEM512"},
        {0x0201, "MLKEM768"},
        {0x0202, "MLKEM1024"},
        {0x11eb, "SecP256r1MLKEM768"},
        {0x11ec, "X25519MLKEM768"},
        {0x11ed, "SecP384r1MLKEM1024"},
        {0x6399, "X25519Kyber768Draft00"},
        {0xff01, "arbitrary_explicit_prime_curves"},
        {0xff02, "arbitrary_explicit_char2_curves"},
        {0, NULL},
        {42, NULL},
        {255, NULL},
        {261, NULL},
        {0x0a0a, NULL},
        {0xff03, NULL},
    };
    (void)state;
    expect_u16(tf_names_group, e, COUNT(e));
}

static void
test_sigschemes(void **state)
{
    static const struct expect e[] = {
        {0x0101, "rsa_md5"},
        {0x0201, "rsa_pkcs1_sha1"},
        {0x0202, "dsa_sha1"},
        {0x0203, "ecdsa_sha1"},
        {0x0301, "rsa_sha224"},
        {0x0303, "ecdsa_sha224"},
        {0x0401, "rsa_pkcs1_sha256"},
        {0x0402, "dsa_sha256"},
        {0x0403, "ecdsa_secp256r1_sha256"},
        {0x0501, "rsa_pkcs1_sha384"},
        {0x0503, "ecdsa_secp384r1_sha384"},
        {0x0601, "rsa_pkcs1_sha512"},
        {0x0603, "ecdsa_secp521r1_sha512"},
        {0x0708, "sm2sig_sm3"},
        {0x0804, "rsa_pss_rsae_sha256"},
        {0x0805, "rsa_pss_rsae_sha384"},
        {0x0806, "rsa_pss_rsae_sha512"},
        {0x0807, "ed25519"},
        {0x0808, "ed448"},
        {0x0809, "rsa_pss_pss_sha256"},
        {0x080a, "rsa_pss_pss_sha384"},
        {0x080b, "rsa_pss_pss_sha512"},
        {0x081a, "ecdsa_brainpoolP256r1tls13_sha256"},
        {0x081b, "ecdsa_brainpoolP384r1tls13_sha384"},
        {0x081c, "ecdsa_brainpoolP512r1tls13_sha512"},
        {0x0000, NULL},
        {0x0200, NULL},
        {0x0800, NULL},
        {0x080c, NULL},
        {0x0a0a, NULL},
        {0xffff, NULL},
    };
    (void)state;
    expect_u16(tf_names_sigscheme, e, COUNT(e));
}

static void
test_alerts(void **state)
{
    static const struct expect e[] = {
        {0, "close_notify"},
        {10, "unexpected_message"},
        {20, "bad_record_mac"},
        {21, "decryption_failed"},
        {22, "record_overflow"},
        {30, "decompression_failure"},
        {40, "handshake_failure"},
        {41, "no_certificate"},
        {42, "bad_certificate"},
        {43, "unsupported_certificate"},
        {44, "certificate_revoked"},
        {45, "certificate_expired"},
        {46, "certificate_unknown"},
        {47, "illegal_parameter"},
        {48, "unknown_ca"},
        {49, "access_denied"},
        {50, "decode_error"},
        {51, "decrypt_error"},
        {60, "export_restriction"},
        {70, "protocol_version"},
        {71, "insufficient_security"},
        {80, "internal_error"},
        {86, "inappropriate_fallback"},
        {90, "user_canceled"},
        {100, "no_renegotiation"},
        {109, "missing_extension"},
        {110, "unsupported_extension"},
        {111, "certificate_unobtainable"},
        {112, "unrecognized_name"},
        {113, "bad_certificate_status_response"},
        {114, "bad_certificate_hash_value"},
        {115, "unknown_psk_identity"},
        {116, "certificate_required"},
        {120, "no_application_protocol"},
        {121, "ech_required"},
        {1, NULL},
        {11, NULL},
        {122, NULL},
        {200, NULL},
        {255, NULL},
    };
    static const struct expect levels[] = {
        {1, "warning"}, {2, "fatal"}, {0, NULL}, {3, NULL}, {255, NULL},
    };
    (void)state;
    expect_u8(tf_names_alert, e, COUNT(e));
    expect_u8(tf_names_alert_level, levels, COUNT(levels));
}

static void
test_handshake_types(void **state)
{
    static const struct expect e[] = {
        {0, "hello_request"},
        {1, "client_hello"},
        {2, "server_hello"},
        {3, "hello_verify_request"},
        {4, "new_session_ticket"},
        {5, "end_of_early_data"},
        {6, "hello_retry_request"},
        {8, "encrypted_extensions"},
        {9, "request_connection_id"},
        {10, "new_connection_id"},
        {11, "certificate"},
        {12, "server_key_exchange"},
        {13, "certificate_request"},
        {14, "server_hello_done"},
        {15, "certificate_verify"},
        {16, "client_key_exchange"},
        {17, "client_certificate_request"},
        {20, "finished"},
        {21, "certificate_url"},
        {22, "certificate_status"},
        {23, "supplemental_data"},
        {24, "key_update"},
        {25, "compressed_certificate"},
        {26, "ekt_key"},
        {67, "next_protocol"},
        {254, "message_hash"},
        {7, NULL},
        {18, NULL},
        {27, NULL},
        {68, NULL},
        {253, NULL},
        {255, NULL},
    };
    (void)state;
    expect_u8(tf_names_handshake_type, e, COUNT(e));
}

static void
test_small_tables(void **state)
{
    static const struct expect content[] = {
        {20, "change_cipher_spec"},
        {21, "alert"},
        {22, "handshake"},
        {23, "application_data"},
        {24, "heartbeat"},
        {0, NULL},
        {19, NULL},
        {27, NULL},
        {0x80, NULL},
        {255, NULL},
    };
    static const struct expect points[] = {
        {0, "uncompressed"},
        {1, "ansiX962_compressed_prime"},
        {2, "ansiX962_compressed_char2"},
        {3, NULL},
        {255, NULL},
    };
    static const struct expect psk[] = {
        {0, "psk_ke"}, {1, "psk_dhe_ke"}, {2, NULL}, {255, NULL},
    };
    static const struct expect comp[] = {
        {0, "null"}, {1, "deflate"}, {2, NULL}, {63, NULL}, {255, NULL},
    };
    static const struct expect status[] = {
        {1, "ocsp"}, {2, "ocsp_multi"}, {0, NULL}, {3, NULL}, {255, NULL},
    };
    static const struct expect cct[] = {
        {1, "rsa_sign"},
        {2, "dss_sign"},
        {3, "rsa_fixed_dh"},
        {4, "dss_fixed_dh"},
        {64, "ecdsa_sign"},
        {65, "rsa_fixed_ecdh"},
        {66, "ecdsa_fixed_ecdh"},
        {0, NULL},
        {7, NULL},
        {63, NULL},
        {69, NULL},
        {255, NULL},
    };
    (void)state;
    expect_u8(tf_names_content_type, content, COUNT(content));
    expect_u8(tf_names_ec_point_format, points, COUNT(points));
    expect_u8(tf_names_psk_mode, psk, COUNT(psk));
    expect_u8(tf_names_compression, comp, COUNT(comp));
    expect_u8(tf_names_cert_status_type, status, COUNT(status));
    expect_u8(tf_names_client_cert_type, cct, COUNT(cct));
}

static void
test_grease(void **state)
{
    unsigned count = 0;
    (void)state;
    for (unsigned hi = 0; hi < 16; hi++) {
        uint16_t v = (uint16_t)(((hi << 4) | 0xa) << 8 | ((hi << 4) | 0xa));
        assert_true(tf_names_is_grease(v));
    }
    assert_true(tf_names_is_grease(0x0a0a));
    assert_true(tf_names_is_grease(0xfafa));
    /* Near misses: unequal bytes, wrong low nibble. */
    assert_false(tf_names_is_grease(0x0a1a));
    assert_false(tf_names_is_grease(0x1a0a));
    assert_false(tf_names_is_grease(0x0b0b));
    assert_false(tf_names_is_grease(0x0a0b));
    assert_false(tf_names_is_grease(0xaaab));
    assert_false(tf_names_is_grease(0x0000));
    assert_false(tf_names_is_grease(0xffff));
    assert_false(tf_names_is_grease(0x000a));
    assert_false(tf_names_is_grease(0x0a00));
    for (uint32_t v = 0; v <= 0xffff; v++)
        if (tf_names_is_grease((uint16_t)v))
            count++;
    assert_int_equal(count, 16);
}

static void
test_or_code(void **state)
{
    char buf[32];
    char tiny[8];
    (void)state;

    assert_ptr_equal(tf_names_or_code("key_share", 51, buf, sizeof(buf)), buf);
    assert_string_equal(buf, "key_share");
    assert_string_equal(tf_names_or_code(tf_names_cipher_suite(0x1301), 0x1301, buf, sizeof(buf)),
                        "TLS_AES_128_GCM_SHA256");
    assert_string_equal(tf_names_or_code(NULL, 0x2a2a, buf, sizeof(buf)), "GREASE");
    assert_string_equal(tf_names_or_code(tf_names_extension(0xfafa), 0xfafa, buf, sizeof(buf)),
                        "GREASE");
    assert_string_equal(tf_names_or_code(NULL, 0x1234, buf, sizeof(buf)), "unknown(0x1234)");
    assert_string_equal(tf_names_or_code(NULL, 0, buf, sizeof(buf)), "unknown(0x0000)");
    assert_string_equal(tf_names_or_code(NULL, 0xffff, buf, sizeof(buf)), "unknown(0xffff)");
    assert_string_equal(tf_names_or_code(NULL, 0xabcd, buf, sizeof(buf)), "unknown(0xabcd)");
    /* A known name wins even for a code that looks like GREASE. */
    assert_string_equal(tf_names_or_code("named", 0x0a0a, buf, sizeof(buf)), "named");

    /* Truncation keeps the terminator and never writes past buflen. */
    memset(tiny, 'x', sizeof(tiny));
    assert_ptr_equal(tf_names_or_code(NULL, 0x1234, tiny, 5), tiny);
    assert_string_equal(tiny, "unkn");
    assert_int_equal(tiny[5], 'x');
    assert_string_equal(tf_names_or_code("server_name", 0, tiny, sizeof(tiny)), "server_");
    assert_string_equal(tf_names_or_code(NULL, 0x0a0a, tiny, 1), "");

    /* Nowhere to write: still a valid string, and buf untouched. */
    memset(tiny, 'x', sizeof(tiny));
    assert_string_equal(tf_names_or_code(NULL, 0x1234, tiny, 0), "");
    assert_int_equal(tiny[0], 'x');
    assert_string_equal(tf_names_or_code("x", 1, NULL, 16), "");
}

static void
test_tables_sorted(void **state)
{
    (void)state;
    assert_true(tf_names_check_tables());
}

struct walk_u16 {
    const char *what;
    const char *(*lookup)(uint16_t);
    unsigned min_names;
};

struct seen {
    const char *name;
    uint16_t code;
};

static int
seen_cmp(const void *a, const void *b)
{
    return strcmp(((const struct seen *)a)->name, ((const struct seen *)b)->name);
}

/*
 * Over the whole code space: every name is non-empty, no two codes share a
 * name (a pasted row left unedited), and no GREASE value has a name.
 */
static void
check_walk(const char *what, struct seen *seen, size_t n, unsigned min_names)
{
    if (n < min_names)
        fail_msg("%s: only %zu names, expected at least %u", what, n, min_names);
    qsort(seen, n, sizeof(seen[0]), seen_cmp);
    for (size_t i = 0; i < n; i++) {
        if (seen[i].name[0] == '\0')
            fail_msg("%s: 0x%04x has an empty name", what, seen[i].code);
        if (i > 0 && strcmp(seen[i - 1].name, seen[i].name) == 0)
            fail_msg("%s: \"%s\" named twice (0x%04x, 0x%04x)", what, seen[i].name,
                     seen[i - 1].code, seen[i].code);
    }
}

static void
test_walk_u16(void **state)
{
    static const struct walk_u16 tables[] = {
        {"version", tf_names_version, 10},
        {"cipher_suite", tf_names_cipher_suite, 300},
        {"extension", tf_names_extension, 55},
        {"group", tf_names_group, 45},
        {"sigscheme", tf_names_sigscheme, 30},
    };
    static struct seen seen[0x10000];
    (void)state;

    for (size_t t = 0; t < COUNT(tables); t++) {
        size_t n = 0;
        for (uint32_t v = 0; v <= 0xffff; v++) {
            const char *name = tables[t].lookup((uint16_t)v);
            if (name == NULL)
                continue;
            if (tf_names_is_grease((uint16_t)v))
                fail_msg("%s: GREASE 0x%04x has name \"%s\"", tables[t].what, v, name);
            seen[n].name = name;
            seen[n].code = (uint16_t)v;
            n++;
        }
        check_walk(tables[t].what, seen, n, tables[t].min_names);
    }
}

struct walk_u8 {
    const char *what;
    const char *(*lookup)(uint8_t);
    unsigned min_names;
};

static void
test_walk_u8(void **state)
{
    static const struct walk_u8 tables[] = {
        {"alert", tf_names_alert, 35},
        {"alert_level", tf_names_alert_level, 2},
        {"handshake_type", tf_names_handshake_type, 26},
        {"content_type", tf_names_content_type, 5},
        {"ec_point_format", tf_names_ec_point_format, 3},
        {"psk_mode", tf_names_psk_mode, 2},
        {"compression", tf_names_compression, 2},
        {"cert_status_type", tf_names_cert_status_type, 2},
        {"client_cert_type", tf_names_client_cert_type, 7},
    };
    struct seen seen[256];
    (void)state;

    for (size_t t = 0; t < COUNT(tables); t++) {
        size_t n = 0;
        for (unsigned v = 0; v <= 0xff; v++) {
            const char *name = tables[t].lookup((uint8_t)v);
            if (name == NULL)
                continue;
            seen[n].name = name;
            seen[n].code = (uint16_t)v;
            n++;
        }
        check_walk(tables[t].what, seen, n, tables[t].min_names);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_versions),
        cmocka_unit_test(test_cipher_suites),
        cmocka_unit_test(test_cipher_suites_match_openssl),
        cmocka_unit_test(test_extensions),
        cmocka_unit_test(test_groups),
        cmocka_unit_test(test_sigschemes),
        cmocka_unit_test(test_alerts),
        cmocka_unit_test(test_handshake_types),
        cmocka_unit_test(test_small_tables),
        cmocka_unit_test(test_grease),
        cmocka_unit_test(test_or_code),
        cmocka_unit_test(test_tables_sorted),
        cmocka_unit_test(test_walk_u16),
        cmocka_unit_test(test_walk_u8),
    };
    return cmocka_run_group_tests_name("names", tests, NULL, NULL);
}
