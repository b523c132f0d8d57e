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
 * is SAME).  The output must also decode again: when the project's decoder
 * (decode.h) takes the input, it takes the rewritten message too, and sees
 * the edit (no SNI or ALPN left, no version above max_version, no more
 * suites than before, the ServerHello's new legacy_version, a chain of
 * exactly the kept certificates); framed into records (tf_rewrite_frame)
 * it reads back through the record and handshake readers as the very same
 * message.  Seeds: corpus/fuzz_rewrite/.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tlsfault/decode.h"
#include "tlsfault/jsontext.h"
#include "tlsfault/handshake.h"
#include "tlsfault/record.h"
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
fuzz_abort(const char *what)
{
    fprintf(stderr, "fuzz_rewrite: %s\n", what);
    abort();
}

/* Reading a rewritten message back: framed, then through both readers. */
struct readback {
    struct tf_hs_reader hs;
    const uint8_t *msg;
    size_t msg_len;
    unsigned messages;
    bool bad;
};

static bool
readback_msg(void *arg, uint8_t type, const uint8_t *body, size_t len)
{
    struct readback *rb = arg;

    if (rb->messages++ > 0 || type != rb->msg[0] || len != rb->msg_len - 4 ||
        memcmp(body, rb->msg + 4, len) != 0)
        rb->bad = true;
    return true;
}

static bool
readback_record(void *arg, const struct tf_record *rec)
{
    struct readback *rb = arg;

    if (rec->type != 22 || rec->version != 0x0303 ||
        tf_hs_feed(&rb->hs, rec->body, rec->len, readback_msg, rb) != TF_PARSE_OK)
        rb->bad = true;
    return true;
}

static void
fuzz_readback(const uint8_t *msg, size_t msg_len, size_t max_fragment)
{
    struct tf_record_reader r;
    struct readback rb = {.msg = msg, .msg_len = msg_len};
    uint8_t *framed;
    size_t framed_len;

    if (!tf_rewrite_frame(22, 0x0303, msg, msg_len, max_fragment, &framed, &framed_len))
        fuzz_abort("tf_rewrite_frame refused a rewritten message");
    tf_record_reader_init(&r);
    tf_hs_reader_init(&rb.hs, 1 << 24);
    if (tf_record_feed(&r, framed, framed_len, readback_record, &rb) != TF_PARSE_OK || rb.bad ||
        rb.messages != 1 || tf_hs_pending(&rb.hs))
        fuzz_abort("a rewritten message does not read back through the record and handshake "
                   "readers");
    tf_hs_reader_release(&rb.hs);
    tf_record_reader_release(&r);
    free(framed);
}

/* Decodes a ClientHello body: ok, info, and the event. */
static bool
fuzz_decode_ch(const uint8_t *body, size_t len, struct tf_client_hello_info *info, json_t **obj)
{
    *obj = json_object();
    return tf_decode_client_hello(body, len, *obj, info);
}

static void
fuzz_check_client_hello(const struct tf_client_hello_edit *edit, const uint8_t *body, size_t len,
                        const uint8_t *out, size_t out_len)
{
    struct tf_client_hello_info in_info, out_info;
    json_t *in_obj, *out_obj;
    bool in_ok = fuzz_decode_ch(body, len, &in_info, &in_obj);
    bool out_ok = fuzz_decode_ch(out + 4, out_len - 4, &out_info, &out_obj);

    if (in_ok) {
        if (!out_ok) {
            char *text = json_dumps(out_obj, JSON_COMPACT);
            fprintf(stderr, "fuzz_rewrite: the rewritten ClientHello does not decode: %s\n",
                    text ? text : "?");
            abort();
        }
        if (edit->strip_sni && out_info.has_sni)
            fuzz_abort("strip_sni left a server_name");
        if (edit->strip_alpn && json_object_get(out_obj, "alpn") != NULL)
            fuzz_abort("strip_alpn left an ALPN list");
        if (edit->max_version != 0 && out_info.max_version > edit->max_version &&
            out_info.max_version <= 0x0304 && out_info.max_version >= 0x0300)
            fuzz_abort("a version above max_version is still offered");
        if (json_integer_value(json_object_get(out_obj, "cipher_suites_count")) >
            json_integer_value(json_object_get(in_obj, "cipher_suites_count")))
            fuzz_abort("strip_ciphers added cipher suites");
        if (!edit->strip_ciphers &&
            !json_equal(json_object_get(out_obj, "cipher_suites"),
                        json_object_get(in_obj, "cipher_suites")))
            fuzz_abort("the cipher suites changed without strip_ciphers");
        if (!edit->strip_sni && in_info.has_sni &&
            (!out_info.has_sni || strcmp(in_info.sni, out_info.sni) != 0))
            fuzz_abort("the server_name changed without strip_sni");
    }
    json_decref(in_obj);
    json_decref(out_obj);
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
        fuzz_check_client_hello(&edit, body, len, out, out_len);
        fuzz_readback(out, out_len, (size_t)opts * 64 + 1);
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
        /* Only legacy_version changed: what decoded before decodes now, with it. */
        struct tf_server_hello_info in_info, out_info;
        json_t *in_obj = json_object(), *out_obj = json_object();
        memset(&in_info, 0, sizeof(in_info));
        memset(&out_info, 0, sizeof(out_info));
        if (tf_decode_server_hello(body, len, in_obj, &in_info)) {
            if (!tf_decode_server_hello(out + 4, out_len - 4, out_obj, &out_info))
                fuzz_abort("the rewritten ServerHello does not decode");
            if (out_info.legacy_version != version ||
                out_info.cipher_suite != in_info.cipher_suite ||
                out_info.hello_retry_request != in_info.hello_retry_request)
                fuzz_abort("the rewritten ServerHello decodes to other fields");
        }
        json_decref(in_obj);
        json_decref(out_obj);
        fuzz_readback(out, out_len, 16384);
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
        /* The decoder sees exactly the kept entries. */
        json_t *in_obj = json_object(), *out_obj = json_object();
        if (tf_decode_certificate(body, len, tls13, in_obj)) {
            if (!tf_decode_certificate(out + 4, out_len - 4, tls13, out_obj))
                fuzz_abort("the rewritten Certificate does not decode");
            json_t *in_chain = json_object_get(in_obj, "chain");
            json_t *out_chain = json_object_get(out_obj, "chain");
            if (json_array_size(out_chain) != kept)
                fuzz_abort("the rewritten Certificate's chain is not the kept entries");
            for (unsigned i = 0, k = 0; i < total && i < 32; i++)
                if ((opts >> i & 1) && i < 8 && k < kept &&
                    !json_equal(json_array_get(in_chain, i), json_array_get(out_chain, k++)))
                    fuzz_abort("a kept certificate changed");
        }
        json_decref(in_obj);
        json_decref(out_obj);
        fuzz_readback(out, out_len, 1 + (size_t)opts * 16);
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
    tf_decode_caches_drop(); /* the next input starts cold (decode.h, jsontext.h) */
    tf_json_unpacked_drop();
    return 0;
}
