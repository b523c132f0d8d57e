/*
 * fuzz_handshake.c — libFuzzer target for handshake message reassembly
 * (handshake.h), fed as record bodies of random sizes.
 *
 * Input layout:
 *   bytes 0..1  seed of the piece sizes (a small PRNG)
 *   byte 2      bits 0..2: largest piece, 1 << (n + 1) bytes (2 .. 256),
 *               7 meaning up to 16 KiB, a record's worth;
 *               bits 3..5: message cap, 16 << (2 * n) bytes (16 .. 256 KiB);
 *               bit 6: stop (the callback returns false) at message byte 3 % 8;
 *               bit 7: decode each message (tf_decode_handshake) as well
 *   byte 3      see bit 6
 *   the rest    the handshake stream of one direction (messages with their
 *               4-byte headers, back to back)
 *
 * The stream is fed twice: whole, in one record body, and cut into pieces
 * of random sizes, each in an allocation of its own (so that a read past a
 * record body is caught).  Both runs must hand out the same messages and
 * the same first verdict, and the messages must be the stream itself: message k
 * is the next 4 + length bytes of the stream, in order.  A message over
 * the cap stops the reader with TF_PARSE_BAD and a reason, and only a
 * message over the cap does; nothing is handed out after a stop;
 * tf_hs_pending tells whether a message is partly assembled.
 * Seeds: corpus/fuzz_handshake/ (the clear handshake records' bodies of the
 * captures in tests/data/, concatenated); made by tests/fuzz/make_seeds.py.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tlsfault/decode.h"
#include "tlsfault/jsontext.h"
#include "tlsfault/handshake.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fuzz_check(bool ok)
{
    if (!ok)
        abort();
}

struct run {
    const uint8_t *stream;
    size_t len;
    size_t at;          /* where the next message must start in the stream */
    uint64_t count;
    uint64_t stop_at;   /* UINT64_MAX: never */
    bool decode;
    bool stopped_by_cb;
    bool tls13;
    uint16_t suite;
};

static bool
run_cb(void *arg, uint8_t type, const uint8_t *body, size_t len)
{
    struct run *run = arg;

    fuzz_check(!run->stopped_by_cb);
    fuzz_check(run->at + TF_HS_HEADER_LEN + len <= run->len);
    const uint8_t *hdr = run->stream + run->at;
    fuzz_check(hdr[0] == type);
    fuzz_check((((size_t)hdr[1] << 16) | ((size_t)hdr[2] << 8) | hdr[3]) == len);
    fuzz_check(len == 0 || memcmp(body, hdr + TF_HS_HEADER_LEN, len) == 0);
    run->at += TF_HS_HEADER_LEN + len;

    if (run->decode) {
        struct tf_client_hello_info ch;
        struct tf_server_hello_info sh;
        json_t *obj = json_object();
        const char *name;
        char name_buf[32];

        memset(&sh, 0, sizeof(sh));
        if (!tf_decode_handshake(type, body, len, run->tls13, run->suite, obj, &ch, &sh, &name,
                                 name_buf, sizeof(name_buf)))
            fuzz_check(json_is_string(json_object_get(obj, "malformed")));
        if (type == TF_HS_SERVER_HELLO) {
            run->tls13 = sh.version == 0x0304;
            run->suite = sh.cipher_suite;
        }
        json_decref(obj);
    }
    if (run->count++ == run->stop_at) {
        run->stopped_by_cb = true;
        return false;
    }
    return true;
}

struct result {
    enum tf_parse res;
    uint64_t count;
    size_t at;
    bool pending;
    bool stopped;
    char error[128];
};

static uint32_t
fuzz_next(uint32_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

static void
run_stream(const uint8_t *stream, size_t len, size_t cap, uint64_t stop_at, bool decode,
           uint32_t seed, size_t most, struct result *out)
{
    struct tf_hs_reader h;
    struct run run = {.stream = stream, .len = len, .stop_at = stop_at, .decode = decode};
    enum tf_parse res = TF_PARSE_OK;
    size_t at = 0;
    uint32_t x = seed | 1;

    tf_hs_reader_init(&h, cap);
    while (at < len) {
        size_t piece = len - at;
        if (most > 0) {
            piece = 1 + fuzz_next(&x) % most;
            if (piece > len - at)
                piece = len - at;
        }
        uint8_t *copy = malloc(piece);
        fuzz_check(copy != NULL);
        memcpy(copy, stream + at, piece);
        enum tf_parse got = tf_hs_feed(&h, copy, piece, run_cb, &run);
        free(copy);
        fuzz_check(got == TF_PARSE_OK || got == TF_PARSE_BAD);
        /* Once stopped it ignores later input (and may keep saying BAD). */
        if (res == TF_PARSE_OK)
            res = got;
        at += piece;
    }
    /* A stopped reader takes nothing more. */
    if (h.stopped) {
        uint64_t before = run.count;
        fuzz_check(tf_hs_feed(&h, stream, len, run_cb, &run) != TF_PARSE_NEED_MORE);
        fuzz_check(run.count == before);
    }
    fuzz_check(h.messages == run.count);
    out->res = res;
    out->count = run.count;
    out->at = run.at;
    out->pending = tf_hs_pending(&h);
    out->stopped = h.stopped;
    memcpy(out->error, h.error, sizeof(out->error));
    fuzz_check(memchr(h.error, '\0', sizeof(h.error)) != NULL);
    if (res == TF_PARSE_BAD) {
        /* Only a message over the cap is refused, and it is the next one. */
        fuzz_check(h.stopped && h.error[0] != '\0' && !run.stopped_by_cb);
        fuzz_check(run.at + TF_HS_HEADER_LEN <= len);
        const uint8_t *hdr = stream + run.at;
        fuzz_check((((size_t)hdr[1] << 16) | ((size_t)hdr[2] << 8) | hdr[3]) > cap);
    } else if (!run.stopped_by_cb) {
        /* Every message that fits was handed out; what is left is pending. */
        fuzz_check(h.error[0] == '\0' && !h.stopped);
        fuzz_check(out->pending == (run.at < len));
        if (len - run.at >= TF_HS_HEADER_LEN) {
            const uint8_t *hdr = stream + run.at;
            size_t body = ((size_t)hdr[1] << 16) | ((size_t)hdr[2] << 8) | hdr[3];
            fuzz_check(body <= cap && TF_HS_HEADER_LEN + body > len - run.at);
        }
    }
    tf_hs_reader_release(&h);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    uint32_t seed = ((uint32_t)data[0] << 8 | data[1]) * 2654435761u;
    uint8_t flags = data[2];
    unsigned mostn = flags & 7;
    size_t most = mostn == 7 ? 16384 : (size_t)2 << mostn;
    size_t cap = (size_t)16 << (2 * ((flags >> 3) & 7));
    uint64_t stop_at = (flags & 0x40) ? (uint64_t)(data[3] % 8) : UINT64_MAX;
    bool decode = (flags & 0x80) != 0;
    const uint8_t *stream = data + 4;
    size_t len = size - 4;

    struct result whole, pieces;
    run_stream(stream, len, cap, stop_at, decode, seed, 0, &whole);
    run_stream(stream, len, cap, stop_at, decode, seed, most, &pieces);
    fuzz_check(whole.res == pieces.res);
    fuzz_check(whole.count == pieces.count);
    fuzz_check(whole.at == pieces.at);
    fuzz_check(whole.stopped == pieces.stopped);
    fuzz_check(strcmp(whole.error, pieces.error) == 0);
    if (!whole.stopped)
        fuzz_check(whole.pending == pieces.pending);
    tf_decode_caches_drop(); /* the next input starts cold (decode.h, jsontext.h) */
    tf_json_unpacked_drop();
    return 0;
}
