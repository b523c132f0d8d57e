/*
 * fuzz_inspect.c — libFuzzer target for the passthrough inspector
 * (inspect.h): record framing, handshake reassembly, every clear-message
 * decoder and the state a bystander keeps, from two byte streams.
 *
 * Input layout:
 *   byte 0      how the two directions are interleaved (bits 0..1):
 *                 0  record by record, alternating (client first)
 *                 1  pseudo-random pieces of either direction
 *                 2  all of the client's bytes, then the server's
 *                 3  all of the server's bytes, then the client's
 *               bits 2..4: piece size class for mode 1 (1 << class bytes
 *               at most); bits 5..7: handshake message cap (64 << n
 *               bytes, 7 meaning 65536)
 *   bytes 1..2  c2s_len, big endian: the client's stream length (clamped)
 *   the rest    c2s_len bytes of client stream, then the server's stream
 *
 * The emit callback only drops the event; the summary and stage are
 * rendered at the end.  Only crashes and sanitizer reports count.
 * Seeds: corpus/fuzz_inspect/ (the captured handshakes of tests/data/ and
 * mutations of them).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tlsfault/decode.h"
#include "tlsfault/inspect.h"
#include "tlsfault/jsontext.h"
#include "tlsfault/record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
drop_event(void *arg, const char *event, enum tf_dir dir, json_t *fields)
{
    (void)arg;
    (void)event;
    (void)dir;
    json_decref(fields);
}

struct stream {
    const uint8_t *p;
    size_t len;
    size_t at;
};

/* The length of the next record-sized piece: a whole record if the header says so. */
static size_t
next_record(const struct stream *s)
{
    size_t left = s->len - s->at;
    if (left < TF_RECORD_HEADER_LEN)
        return left;
    const uint8_t *h = s->p + s->at;
    size_t n = TF_RECORD_HEADER_LEN + (((size_t)h[3] << 8) | h[4]);
    return n < left ? n : left;
}

static void
feed(struct tf_inspect *ins, enum tf_dir dir, struct stream *s, size_t n)
{
    if (n > s->len - s->at)
        n = s->len - s->at;
    if (n == 0)
        return;
    tf_inspect_feed(ins, dir, s->p + s->at, n);
    s->at += n;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    uint8_t mode = data[0];
    size_t c2s_len = ((size_t)data[1] << 8) | data[2];
    const uint8_t *rest = data + 3;
    size_t rest_len = size - 3;
    if (c2s_len > rest_len)
        c2s_len = rest_len;

    struct stream s[2] = {
        {rest, c2s_len, 0},
        {rest + c2s_len, rest_len - c2s_len, 0},
    };
    unsigned capn = (mode >> 5) & 7;
    size_t cap = capn == 7 ? 65536 : (size_t)64 << capn;
    struct tf_inspect *ins = tf_inspect_new(cap, drop_event, NULL);
    if (ins == NULL)
        return 0;

    switch (mode & 3) {
    case 0:
        /* Record by record, alternating. */
        while (s[0].at < s[0].len || s[1].at < s[1].len)
            for (int d = 0; d < 2; d++)
                feed(ins, (enum tf_dir)d, &s[d], next_record(&s[d]));
        break;
    case 1: {
        /* Pieces of 1 .. 2^class bytes, direction chosen by a small PRNG. */
        uint32_t x = 0x9e3779b9u ^ (uint32_t)size;
        size_t most = (size_t)1 << ((mode >> 2) & 7);
        while (s[0].at < s[0].len || s[1].at < s[1].len) {
            x = x * 1664525u + 1013904223u;
            int d = (x >> 31) & 1;
            if (s[d].at == s[d].len)
                d ^= 1;
            feed(ins, (enum tf_dir)d, &s[d], 1 + (x >> 8) % most);
        }
        break;
    }
    case 2:
        feed(ins, TF_DIR_C2S, &s[0], s[0].len);
        feed(ins, TF_DIR_S2C, &s[1], s[1].len);
        break;
    default:
        feed(ins, TF_DIR_S2C, &s[1], s[1].len);
        feed(ins, TF_DIR_C2S, &s[0], s[0].len);
        break;
    }

    json_t *sum = json_object();
    tf_inspect_summarize(ins, sum);
    char *text = json_dumps(sum, JSON_COMPACT);
    if (text == NULL)
        abort();
    free(text);
    json_decref(sum);
    /* The verdict's facts, and the same facts after packing them (a finished handshake). */
    json_t *facts = json_object(), *packed = json_object();
    tf_inspect_facts(ins, facts);
    (void)tf_inspect_pack(ins);
    tf_inspect_facts(ins, packed);
    if (!json_equal(facts, packed))
        abort();
    json_decref(facts);
    json_decref(packed);
    char stage[96];
    tf_inspect_stage(ins, stage, sizeof(stage));
    (void)tf_inspect_idle(ins, TF_DIR_C2S);
    (void)tf_inspect_idle(ins, TF_DIR_S2C);
    (void)tf_inspect_handshake_done(ins);
    tf_inspect_free(ins);
    tf_decode_caches_drop(); /* the next input starts cold (decode.h) */
    /*
     * No input's texts and names come back: keeping them parsed only makes
     * each run end with other allocations than it began, and libFuzzer
     * then looks for leaks after every run.
     */
    tf_json_unpacked_drop();
    return 0;
}
