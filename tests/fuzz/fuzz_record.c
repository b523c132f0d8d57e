/*
 * fuzz_record.c — libFuzzer target for the record reader (record.h).
 *
 * Input layout:
 *   byte 0      flags: bit 0 start in skim mode; bit 1 switch skim on from
 *               the callback at record (bits 2..4); bit 5 stop (callback
 *               returns false) at record (bits 2..4) + 1
 *   byte 1      n: the number of piece sizes that follow (low 4 bits)
 *   n bytes     piece sizes, used in turn (0 means 1 byte, 255 means 4 KiB)
 *   the rest    the byte stream of one direction
 *
 * The stream is read twice, coalesced and in the pieces given, and both
 * runs must hand out the same records (type, version, length, offset,
 * body) and the same verdict; every record must lie inside the stream,
 * carry a valid header and, outside skim mode, the very bytes that follow
 * its header.  After a verdict or a stop, the reader must take no more
 * input.  Any violation aborts.  Seeds: corpus/fuzz_record/.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tlsfault/record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct run {
    const uint8_t *stream;
    size_t len;
    struct tf_record_reader *r;
    uint64_t count;
    uint64_t hash;
    uint64_t skim_at;  /* UINT64_MAX: never */
    uint64_t stop_at;
    bool skimming;     /* skim is on for the records from now on */
};

static void
fuzz_check(bool ok)
{
    if (!ok)
        abort();
}

static void
run_mix(struct run *run, uint64_t v)
{
    run->hash = (run->hash ^ v) * 0x100000001b3ULL;
}

static bool
run_cb(void *arg, const struct tf_record *rec)
{
    struct run *run = arg;

    fuzz_check(rec->type >= TF_CT_CHANGE_CIPHER_SPEC && rec->type <= TF_CT_HEARTBEAT);
    fuzz_check(rec->version >= 0x0300 && rec->version <= 0x0304);
    fuzz_check(rec->len <= TF_RECORD_MAX_BODY);
    fuzz_check(rec->offset + TF_RECORD_HEADER_LEN + rec->len <= run->len);
    const uint8_t *hdr = run->stream + rec->offset;
    fuzz_check(hdr[0] == rec->type && ((hdr[1] << 8) | hdr[2]) == rec->version &&
               (size_t)((hdr[3] << 8) | hdr[4]) == rec->len);
    if (run->skimming) {
        fuzz_check(rec->body == NULL);
    } else if (rec->len > 0) {
        fuzz_check(rec->body != NULL);
        fuzz_check(memcmp(rec->body, hdr + TF_RECORD_HEADER_LEN, rec->len) == 0);
    }
    run_mix(run, rec->type);
    run_mix(run, rec->version);
    run_mix(run, rec->len);
    run_mix(run, rec->offset);
    uint64_t idx = run->count++;
    if (idx == run->skim_at) {
        run->r->skim = true;
        run->skimming = true;
    }
    return idx != run->stop_at;
}

struct result {
    enum tf_parse res;
    uint64_t count;
    uint64_t hash;
    uint64_t offset;
    enum tf_stream_kind kind;
    char error[sizeof(((struct tf_record_reader *)0)->error)];
};

static void
run_stream(const uint8_t *stream, size_t len, uint8_t flags, const uint8_t *sizes,
           size_t nsizes, struct result *out)
{
    struct tf_record_reader r;
    struct run run = {
        .stream = stream,
        .len = len,
        .r = &r,
        .hash = 0xcbf29ce484222325ULL,
        .skim_at = (flags & 2) ? (uint64_t)((flags >> 2) & 7) : UINT64_MAX,
        .stop_at = (flags & 32) ? (uint64_t)((flags >> 2) & 7) + 1 : UINT64_MAX,
        .skimming = flags & 1,
    };
    enum tf_parse res = TF_PARSE_OK;
    size_t at = 0, k = 0;

    tf_record_reader_init(&r);
    r.skim = flags & 1;
    while (at < len) {
        size_t piece = len - at;
        if (nsizes > 0) {
            uint8_t s = sizes[k++ % nsizes];
            piece = s == 255 ? 4096 : s == 0 ? 1 : s;
            if (piece > len - at)
                piece = len - at;
        }
        enum tf_parse got = tf_record_feed(&r, stream + at, piece, run_cb, &run);
        fuzz_check(got != TF_PARSE_NEED_MORE);
        if (res == TF_PARSE_OK) {
            res = got;
        } else {
            /* Stopped on bad input: later input is ignored. */
            fuzz_check(got == TF_PARSE_OK);
        }
        at += piece;
    }
    if (res == TF_PARSE_BAD) {
        fuzz_check(r.stopped && r.error[0] != '\0');
        fuzz_check(r.offset <= len);
    }
    /* A stopped reader takes nothing more. */
    if (r.stopped) {
        uint64_t before = run.count;
        fuzz_check(tf_record_feed(&r, stream, len, run_cb, &run) == TF_PARSE_OK);
        fuzz_check(run.count == before);
    }
    out->res = res;
    out->count = run.count;
    out->hash = run.hash;
    out->offset = r.offset;
    out->kind = r.kind;
    memcpy(out->error, r.error, sizeof(out->error));
    tf_record_reader_release(&r);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t flags = data[0];
    size_t nsizes = data[1] & 15;
    if (size < 2 + nsizes)
        return 0;
    const uint8_t *sizes = data + 2;
    const uint8_t *stream = data + 2 + nsizes;
    size_t len = size - 2 - nsizes;

    struct result whole, pieces;
    run_stream(stream, len, flags, NULL, 0, &whole);
    run_stream(stream, len, flags, sizes, nsizes, &pieces);
    fuzz_check(whole.res == pieces.res);
    fuzz_check(whole.count == pieces.count);
    fuzz_check(whole.hash == pieces.hash);
    fuzz_check(whole.kind == pieces.kind);
    fuzz_check(strcmp(whole.error, pieces.error) == 0);
    if (whole.res == TF_PARSE_BAD)
        fuzz_check(whole.offset == pieces.offset);

    /* Classification of every short prefix, and a preview into a small buffer. */
    for (size_t n = 0; n <= len && n <= 8; n++) {
        enum tf_stream_kind kind = TF_STREAM_TLS;
        enum tf_parse res = tf_record_classify(stream, n, &kind);
        fuzz_check(res == TF_PARSE_OK || res == TF_PARSE_NEED_MORE);
        if (n >= TF_RECORD_HEADER_LEN)
            fuzz_check(res == TF_PARSE_OK);
    }
    char preview[37];
    memset(preview, 'Z', sizeof(preview));
    tf_record_preview(stream, len, flags, preview, 1 + (flags & 31));
    fuzz_check(strlen(preview) <= (size_t)(flags & 31));
    return 0;
}
