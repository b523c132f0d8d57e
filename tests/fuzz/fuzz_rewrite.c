/*
 * fuzz_rewrite.c — libFuzzer target for the rewriters (rewrite.c).
 *
 * The first input byte picks the edits; the rest is a handshake message
 * body that every message rewriter is run on (a ClientHello seed is a bad
 * Certificate and the other way round, which is fine: both paths must say
 * BAD cleanly).  Byte 0:
 *   bits 0-1  max_version: none, TLS 1.2, TLS 1.1, TLS 1.3
 *   bit  2    remove_supported_versions
 *   bit  3    strip_sni
 *   bit  4    strip_alpn
 *   bits 5-6  strip_ciphers: none, "*CHACHA20*", "tls_aes_256*:0x00FF,0x?a?a", "*"
 *   bit  7    TLS 1.3 Certificate layout
 * and it is also the Certificate keep_mask, the ServerHello version's low
 * byte and the frame size.  Besides not crashing, each rewriter must keep
 * its contract: OK gives a buffer whose handshake header matches its
 * length and is never longer than the input, SAME and BAD give none, BAD
 * says why, and a rewrite is idempotent (the same edit on its own output
 * is SAME).  Seeds: corpus/fuzz_rewrite/.
 */
#include <stdlib.h>
#include <string.h>

#include "tlsfault/rewrite.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint16_t fuzz_versions[4] = {0, 0x0303, 0x0302, 0x0304};
static const char *const fuzz_ciphers[4] = {NULL, "*CHACHA20*", "tls_aes_256*:0x00FF,0x?a?a", "*"};

/* The contract every message rewriter shares (rewrite.h). */
static void
fuzz_check(enum tf_rewrite r, uint8_t type, const uint8_t *out, size_t out_len, size_t in_len,
           const char *why)
{
    switch (r) {
    case TF_REWRITE_OK:
        if (out == NULL || out_len < 4 || out_len > in_len + 4 || out[0] != type ||
            (((size_t)out[1] << 16) | ((size_t)out[2] << 8) | out[3]) != out_len - 4)
            abort();
        break;
    case TF_REWRITE_SAME:
        if (out != NULL || out_len != 0)
            abort();
        break;
    case TF_REWRITE_BAD:
        if (out != NULL || out_len != 0 || why[0] == '\0' || memchr(why, '\0', 256) == NULL)
            abort();
        break;
    default:
        abort();
    }
}

static void
fuzz_client_hello(uint8_t opts, const uint8_t *body, size_t len)
{
    struct tf_client_hello_edit edit = {
        .max_version = fuzz_versions[opts & 3],
        .remove_supported_versions = (opts & 4) != 0,
        .strip_sni = (opts & 8) != 0,
        .strip_alpn = (opts & 16) != 0,
        .strip_ciphers = fuzz_ciphers[(opts >> 5) & 3],
    };
    char changes[256], why[256];
    uint8_t *out = NULL, *again = NULL;
    size_t out_len = 0, again_len = 0;
    enum tf_rewrite r;

    r = tf_rewrite_client_hello(body, len, &edit, &out, &out_len, changes, sizeof(changes), why,
                                sizeof(why));
    fuzz_check(r, 1, out, out_len, len, why);
    if (r == TF_REWRITE_OK) {
        if (changes[0] == '\0' || memchr(changes, '\0', sizeof(changes)) == NULL)
            abort();
        /* What was removed is gone: the same edit finds nothing more to do. */
        r = tf_rewrite_client_hello(out + 4, out_len - 4, &edit, &again, &again_len, changes,
                                    sizeof(changes), why, sizeof(why));
        if (r != TF_REWRITE_SAME || again != NULL)
            abort();
    }
    free(out);
}

static void
fuzz_server_hello(uint8_t opts, const uint8_t *body, size_t len)
{
    uint16_t version = (uint16_t)(0x0300 | opts);
    char why[256];
    uint8_t *out = NULL, *again = NULL;
    size_t out_len = 0, again_len = 0;
    enum tf_rewrite r;

    r = tf_rewrite_server_hello_version(body, len, version, &out, &out_len, why, sizeof(why));
    fuzz_check(r, 2, out, out_len, len, why);
    if (r == TF_REWRITE_OK) {
        if (out_len != len + 4 || memcmp(out + 6, body + 2, len - 2) != 0)
            abort();
        r = tf_rewrite_server_hello_version(out + 4, out_len - 4, version, &again, &again_len,
                                            why, sizeof(why));
        if (r != TF_REWRITE_SAME)
            abort();
    }
    free(out);
}

static void
fuzz_certificate(uint8_t opts, const uint8_t *body, size_t len)
{
    bool tls13 = (opts & 0x80) != 0;
    char why[256];
    uint8_t *out = NULL, *again = NULL;
    size_t out_len = 0, again_len = 0;
    unsigned kept, total, kept2, total2;
    enum tf_rewrite r;

    r = tf_rewrite_certificate(body, len, tls13, opts, &out, &out_len, &kept, &total, why,
                               sizeof(why));
    fuzz_check(r, 11, out, out_len, len, why);
    if (kept > total || (r == TF_REWRITE_OK && kept == total) ||
        (r == TF_REWRITE_SAME && kept != total))
        abort();
    if (r == TF_REWRITE_OK) {
        /* The new chain is the kept entries, all of which a full mask keeps. */
        r = tf_rewrite_certificate(out + 4, out_len - 4, tls13, UINT32_MAX, &again, &again_len,
                                   &kept2, &total2, why, sizeof(why));
        if (r != TF_REWRITE_SAME || kept2 != kept || total2 != kept)
            abort();
    }
    free(out);
}

static void
fuzz_frame(uint8_t opts, const uint8_t *p, size_t n)
{
    size_t max = (size_t)opts + 1, off = 0, at = 0;
    uint8_t *out;
    size_t out_len;

    if (!tf_rewrite_frame(22, 0x0303, p, n, max, &out, &out_len))
        abort();
    /* Joining the fragments back gives the input. */
    while (at < out_len) {
        size_t frag;

        if (out_len - at < 5 || out[at] != 22)
            abort();
        frag = ((size_t)out[at + 3] << 8) | out[at + 4];
        if (frag == 0 || frag > max || frag > n - off || memcmp(out + at + 5, p + off, frag) != 0)
            abort();
        at += 5 + frag;
        off += frag;
    }
    if (off != n)
        abort();
    free(out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t opts;
    uint8_t *out;
    size_t out_len;

    if (size == 0)
        return 0;
    opts = data[0];
    fuzz_client_hello(opts, data + 1, size - 1);
    fuzz_server_hello(opts, data + 1, size - 1);
    fuzz_certificate(opts, data + 1, size - 1);
    fuzz_frame(opts, data + 1, size - 1);
    if (tf_rewrite_http_response(400 + opts, size > 1 ? data + 1 : NULL, size - 1, &out,
                                 &out_len))
        free(out);
    return 0;
}
