/*
 * test_record.c — unit tests for the record reader in record.h.
 *
 * The reader must see the same records whatever the read boundaries, so
 * every stream is fed coalesced, split in two at every byte offset, byte by
 * byte and in pseudo-random pieces, and the callback sequence (type,
 * version, length, body bytes, stream offset) is compared with the one
 * computed from the stream's own description.  Headers are checked at their
 * limits (content types 20..24, versions 0x0300..0x0304, body 2^14 + 2048,
 * RFC 5246 §6.2.1 and §6.2.3, RFC 8446 §5.1), and one past them; a reader
 * that found bad input must ignore everything after it.  The first bytes of
 * a stream are classified (TLS, SSLv2-style ClientHello, HTTP, anything
 * else) as soon as they allow it, one byte at a time if need be.
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

#include "tlsfault/record.h"

/* ------------------------------------------------------------ helpers */

#define MAX_SEEN 64

/*
 * What the callback saw of one record.  The body is compared on the spot
 * with the stream bytes after the header it came with (body_ok), which the
 * offset check ties to the right place.
 */
struct seen {
    uint8_t type;
    uint16_t version;
    size_t len;
    uint64_t offset;
    bool body_null;
    bool body_ok;
};

/* The callback's state: its log and what it should do at a given record. */
struct log {
    struct seen s[MAX_SEEN];
    size_t n;
    struct tf_record_reader *reader;
    const uint8_t *stream;  /* the whole stream being fed */
    size_t stream_len;
    size_t stop_at;  /* return false from this record (index), SIZE_MAX for never */
    size_t skim_at;  /* set reader->skim from this record's callback on */
};

static void
log_init(struct log *l, struct tf_record_reader *r, const uint8_t *stream, size_t stream_len)
{
    memset(l, 0, sizeof(*l));
    l->reader = r;
    l->stream = stream;
    l->stream_len = stream_len;
    l->stop_at = SIZE_MAX;
    l->skim_at = SIZE_MAX;
}

static bool
log_cb(void *arg, const struct tf_record *rec)
{
    struct log *l = arg;
    assert_true(l->n < MAX_SEEN);
    struct seen *s = &l->s[l->n];
    s->type = rec->type;
    s->version = rec->version;
    s->len = rec->len;
    s->offset = rec->offset;
    s->body_null = rec->body == NULL;
    s->body_ok = rec->body == NULL ||
                 (rec->offset + TF_RECORD_HEADER_LEN + rec->len <= l->stream_len &&
                  (rec->len == 0 ||
                   memcmp(rec->body, l->stream + rec->offset + TF_RECORD_HEADER_LEN,
                          rec->len) == 0));
    size_t idx = l->n++;
    if (idx == l->skim_at)
        l->reader->skim = true;
    return idx != l->stop_at;
}

static void
assert_logs_equal(const struct log *a, const struct log *b)
{
    assert_int_equal(a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        assert_int_equal(a->s[i].type, b->s[i].type);
        assert_int_equal(a->s[i].version, b->s[i].version);
        assert_int_equal(a->s[i].len, b->s[i].len);
        assert_int_equal(a->s[i].offset, b->s[i].offset);
        assert_int_equal(a->s[i].body_null, b->s[i].body_null);
        assert_int_equal(a->s[i].body_ok, b->s[i].body_ok);
    }
}

/* One record of a test stream: the body is a pattern seeded per record. */
struct rec_spec {
    uint8_t type;
    uint16_t version;
    size_t len;
    uint8_t seed;
};

struct stream {
    uint8_t *p;
    size_t len;
    size_t cap;
};

static void
stream_bytes(struct stream *s, const void *p, size_t n)
{
    if (s->len + n > s->cap) {
        size_t cap = s->cap ? s->cap : 256;
        while (cap < s->len + n)
            cap *= 2;
        s->p = realloc(s->p, cap);
        assert_non_null(s->p);
        s->cap = cap;
    }
    if (n)
        memcpy(s->p + s->len, p, n);
    s->len += n;
}

static void
body_fill(uint8_t *body, size_t len, uint8_t seed)
{
    for (size_t i = 0; i < len; i++)
        body[i] = (uint8_t)(seed + i * 31 + (i >> 8));
}

/* Appends a header claiming hdr_len and then body_len bytes of pattern. */
static void
stream_record(struct stream *s, uint8_t type, uint16_t version, size_t hdr_len, size_t body_len,
              uint8_t seed)
{
    uint8_t h[TF_RECORD_HEADER_LEN] = {type, (uint8_t)(version >> 8), (uint8_t)version,
                                       (uint8_t)(hdr_len >> 8), (uint8_t)hdr_len};
    stream_bytes(s, h, sizeof(h));
    if (body_len) {
        uint8_t *body = malloc(body_len);
        assert_non_null(body);
        body_fill(body, body_len, seed);
        stream_bytes(s, body, body_len);
        free(body);
    }
}

static void
stream_build(struct stream *s, const struct rec_spec *specs, size_t n)
{
    memset(s, 0, sizeof(*s));
    for (size_t i = 0; i < n; i++)
        stream_record(s, specs[i].type, specs[i].version, specs[i].len, specs[i].len,
                      specs[i].seed);
}

static void
stream_free(struct stream *s)
{
    free(s->p);
    memset(s, 0, sizeof(*s));
}

/* The log a correct reader must produce for specs (skim: no bodies). */
static void
log_expected(struct log *l, const struct rec_spec *specs, size_t n, bool skim)
{
    uint64_t off = 0;
    log_init(l, NULL, NULL, 0);
    for (size_t i = 0; i < n; i++) {
        struct seen *s = &l->s[l->n++];
        s->type = specs[i].type;
        s->version = specs[i].version;
        s->len = specs[i].len;
        s->offset = off;
        s->body_null = skim;
        s->body_ok = true;
        off += TF_RECORD_HEADER_LEN + specs[i].len;
    }
}

/* A zero-length record's body pointer is not specified: do not compare it. */
static void
log_forget_empty_bodies(struct log *l)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->s[i].len == 0)
            l->s[i].body_null = false;
}

/*
 * Feeds p in pieces ending at cuts[0] < cuts[1] < ... (then the rest).
 * Returns the first result other than TF_PARSE_OK, and the index of the
 * piece that produced it in *bad_piece; later pieces must return OK.
 */
static enum tf_parse
feed_cuts(struct tf_record_reader *r, const uint8_t *p, size_t len, const size_t *cuts,
          size_t ncuts, struct log *l, size_t *bad_piece)
{
    enum tf_parse first = TF_PARSE_OK;
    size_t at = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        enum tf_parse res = tf_record_feed(r, p + at, end - at, log_cb, l);
        assert_int_not_equal(res, TF_PARSE_NEED_MORE);
        if (first == TF_PARSE_OK && res != TF_PARSE_OK) {
            first = res;
            if (bad_piece)
                *bad_piece = i;
        } else if (first != TF_PARSE_OK) {
            /* A reader that stopped takes no more input. */
            assert_int_equal(res, TF_PARSE_OK);
        }
        at = end;
    }
    return first;
}

static enum tf_parse
feed_bytewise(struct tf_record_reader *r, const uint8_t *p, size_t len, struct log *l,
              size_t *bad_byte)
{
    enum tf_parse first = TF_PARSE_OK;
    for (size_t i = 0; i < len; i++) {
        enum tf_parse res = tf_record_feed(r, p + i, 1, log_cb, l);
        assert_int_not_equal(res, TF_PARSE_NEED_MORE);
        if (first == TF_PARSE_OK && res != TF_PARSE_OK) {
            first = res;
            if (bad_byte)
                *bad_byte = i;
        } else if (first != TF_PARSE_OK) {
            assert_int_equal(res, TF_PARSE_OK);
        }
    }
    return first;
}

/*
 * Runs a stream coalesced, split in two at every offset, byte by byte and
 * in random pieces; each run's log must equal want, and its result res.
 */
static void
check_all_splits(const struct stream *s, const struct log *want_in, enum tf_parse want_res,
                 bool skim, size_t stop_at, size_t skim_at)
{
    struct tf_record_reader r;
    struct log l, want = *want_in;
    enum tf_parse res;

    log_forget_empty_bodies(&want);

    /* Coalesced. */
    tf_record_reader_init(&r);
    r.skim = skim;
    log_init(&l, &r, s->p, s->len);
    l.stop_at = stop_at;
    l.skim_at = skim_at;
    res = tf_record_feed(&r, s->p, s->len, log_cb, &l);
    assert_int_equal(res, want_res);
    log_forget_empty_bodies(&l);
    assert_logs_equal(&l, &want);
    tf_record_reader_release(&r);

    /* Two pieces, cut at every offset including 0 and len. */
    for (size_t cut = 0; cut <= s->len; cut++) {
        tf_record_reader_init(&r);
        r.skim = skim;
        log_init(&l, &r, s->p, s->len);
        l.stop_at = stop_at;
        l.skim_at = skim_at;
        res = feed_cuts(&r, s->p, s->len, &cut, 1, &l, NULL);
        assert_int_equal(res, want_res);
        log_forget_empty_bodies(&l);
        assert_logs_equal(&l, &want);
        if (skim)
            assert_null(r.body); /* skimming never assembles a body */
        tf_record_reader_release(&r);
    }

    /* Byte by byte. */
    tf_record_reader_init(&r);
    r.skim = skim;
    log_init(&l, &r, s->p, s->len);
    l.stop_at = stop_at;
    l.skim_at = skim_at;
    res = feed_bytewise(&r, s->p, s->len, &l, NULL);
    assert_int_equal(res, want_res);
    log_forget_empty_bodies(&l);
    assert_logs_equal(&l, &want);
    tf_record_reader_release(&r);

    /* Pseudo-random pieces of 1..700 bytes, a fixed seed per round. */
    for (uint32_t round = 0; round < 50; round++) {
        uint32_t x = 0x9e3779b9u * (round + 1);
        size_t cuts[4096], ncuts = 0, at = 0;
        for (;;) {
            x = x * 1664525u + 1013904223u;
            at += 1 + (x >> 8) % 700;
            if (at >= s->len || ncuts == sizeof(cuts) / sizeof(cuts[0]))
                break;
            cuts[ncuts++] = at;
        }
        tf_record_reader_init(&r);
        r.skim = skim;
        log_init(&l, &r, s->p, s->len);
        l.stop_at = stop_at;
        l.skim_at = skim_at;
        res = feed_cuts(&r, s->p, s->len, cuts, ncuts, &l, NULL);
        assert_int_equal(res, want_res);
        log_forget_empty_bodies(&l);
        assert_logs_equal(&l, &want);
        tf_record_reader_release(&r);
    }
}

/* Every content type and version, an empty body, the largest body allowed. */
static const struct rec_spec mixed[] = {
    {TF_CT_HANDSHAKE, 0x0301, 100, 1},
    {TF_CT_CHANGE_CIPHER_SPEC, 0x0303, 1, 2},
    {TF_CT_ALERT, 0x0303, 0, 3},
    {TF_CT_APPLICATION_DATA, 0x0303, TF_RECORD_MAX_BODY, 4},
    {TF_CT_HEARTBEAT, 0x0304, 3, 5},
    {TF_CT_HANDSHAKE, 0x0300, 1, 6},
    {TF_CT_APPLICATION_DATA, 0x0302, 0, 7},
    {TF_CT_ALERT, 0x0303, 2, 8},
    {TF_CT_APPLICATION_DATA, 0x0303, 16384, 9},
    {TF_CT_HANDSHAKE, 0x0303, 5, 10},
};
#define N_MIXED (sizeof(mixed) / sizeof(mixed[0]))

/* ------------------------------------------------------------ framing */

static void
test_limits(void **state)
{
    (void)state;
    assert_int_equal(TF_RECORD_HEADER_LEN, 5);
    assert_int_equal(TF_RECORD_MAX_BODY, 18432);
}

/* The coalesced run checked field by field against the stream's description. */
static void
test_coalesced_fields(void **state)
{
    struct stream s;
    struct tf_record_reader r;
    struct log l, want;
    (void)state;

    stream_build(&s, mixed, N_MIXED);
    log_expected(&want, mixed, N_MIXED, false);
    tf_record_reader_init(&r);
    log_init(&l, &r, s.p, s.len);
    assert_int_equal(tf_record_feed(&r, s.p, s.len, log_cb, &l), TF_PARSE_OK);
    assert_int_equal(l.n, N_MIXED);
    for (size_t i = 0; i < N_MIXED; i++) {
        assert_int_equal(l.s[i].type, mixed[i].type);
        assert_int_equal(l.s[i].version, mixed[i].version);
        assert_int_equal(l.s[i].len, mixed[i].len);
        assert_int_equal(l.s[i].offset, want.s[i].offset);
        if (mixed[i].len > 0)
            assert_false(l.s[i].body_null);
        assert_true(l.s[i].body_ok);
        /* The stream holds the pattern where body_ok compared the body. */
        uint8_t *body = malloc(mixed[i].len + 1);
        assert_non_null(body);
        body_fill(body, mixed[i].len, mixed[i].seed);
        assert_memory_equal(s.p + want.s[i].offset + TF_RECORD_HEADER_LEN, body, mixed[i].len);
        free(body);
    }
    assert_int_equal(r.records, N_MIXED);
    assert_int_equal(r.offset, s.len);
    assert_int_equal(r.kind, TF_STREAM_TLS);
    assert_false(r.stopped);
    tf_record_reader_release(&r);
    tf_record_reader_release(&r); /* twice is harmless */
    stream_free(&s);
}

static void
test_split_everywhere(void **state)
{
    struct stream s;
    struct log want;
    (void)state;

    stream_build(&s, mixed, N_MIXED);
    log_expected(&want, mixed, N_MIXED, false);
    check_all_splits(&s, &want, TF_PARSE_OK, false, SIZE_MAX, SIZE_MAX);
    stream_free(&s);
}

/* A prefix of a stream reports only the whole records in it; the rest waits. */
static void
test_partial_record_kept(void **state)
{
    struct stream s;
    (void)state;

    stream_build(&s, mixed, 2); /* 5 + 100, then 5 + 1 */
    assert_int_equal(s.len, 111);
    for (size_t i = 0; i < s.len; i++) {
        struct tf_record_reader r;
        struct log l;
        tf_record_reader_init(&r);
        log_init(&l, &r, s.p, s.len);
        assert_int_equal(tf_record_feed(&r, s.p, i, log_cb, &l), TF_PARSE_OK);
        assert_int_equal(l.n, i < 105 ? 0 : 1);
        /* offset counts a header once it is whole: a bad one is reported where it starts. */
        if (r.hdr_have < TF_RECORD_HEADER_LEN)
            assert_int_equal(r.offset + r.hdr_have, i);
        else
            assert_int_equal(r.offset, i);
        assert_false(r.stopped);
        tf_record_reader_release(&r);
    }
    stream_free(&s);
}

/* Feeding nothing changes nothing. */
static void
test_empty_feed(void **state)
{
    static const uint8_t byte[1] = {0};
    struct tf_record_reader r;
    struct log l;
    (void)state;

    tf_record_reader_init(&r);
    log_init(&l, &r, byte, 0);
    assert_int_equal(tf_record_feed(&r, byte, 0, log_cb, &l), TF_PARSE_OK);
    assert_int_equal(l.n, 0);
    assert_int_equal(r.offset, 0);
    assert_false(r.stopped);
    tf_record_reader_release(&r);
}

/* ------------------------------------------------------------ bad headers */

struct bad_header {
    const char *what;
    uint8_t hdr[TF_RECORD_HEADER_LEN];
    const char *error_mid;  /* r.error when the header follows a good record */
};

static const struct bad_header bad_headers[] = {
    {"content type 19", {19, 3, 3, 0, 1}, "invalid record content type 19"},
    {"content type 25", {25, 3, 3, 0, 1}, "invalid record content type 25"},
    {"content type 0", {0, 3, 3, 0, 1}, "invalid record content type 0"},
    {"content type 255", {255, 3, 3, 0, 1}, "invalid record content type 255"},
    {"version major 2", {22, 2, 0, 0, 1}, "invalid record version 0x0200"},
    {"version major 4", {22, 4, 3, 0, 1}, "invalid record version 0x0403"},
    {"version major 0xfe (DTLS)", {22, 0xfe, 0xfd, 0, 1}, "invalid record version 0xfefd"},
    {"version 0x0305", {22, 3, 5, 0, 1}, "invalid record version 0x0305"},
    {"version 0x03ff", {23, 3, 0xff, 0, 1}, "invalid record version 0x03ff"},
    {"length 18433", {23, 3, 3, 0x48, 0x01}, "record length 18433 exceeds 18432"},
    {"length 65535", {22, 3, 1, 0xff, 0xff}, "record length 65535 exceeds 18432"},
};
#define N_BAD (sizeof(bad_headers) / sizeof(bad_headers[0]))

/*
 * After good records, a bad header stops the reader at the header's offset,
 * whatever the split; nothing after it is reported, not even good records.
 */
static void
test_bad_header_mid_stream(void **state)
{
    (void)state;
    for (size_t b = 0; b < N_BAD; b++) {
        struct stream s;
        struct log want;
        stream_build(&s, mixed, 3);
        size_t bad_at = s.len;
        stream_bytes(&s, bad_headers[b].hdr, TF_RECORD_HEADER_LEN);
        stream_record(&s, TF_CT_HANDSHAKE, 0x0303, 4, 4, 99); /* good, never reported */
        log_expected(&want, mixed, 3, false);
        check_all_splits(&s, &want, TF_PARSE_BAD, false, SIZE_MAX, SIZE_MAX);

        /* The error text and where it happened. */
        struct tf_record_reader r;
        struct log l;
        tf_record_reader_init(&r);
        log_init(&l, &r, s.p, s.len);
        assert_int_equal(tf_record_feed(&r, s.p, s.len, log_cb, &l), TF_PARSE_BAD);
        if (strcmp(r.error, bad_headers[b].error_mid) != 0)
            fail_msg("%s: error \"%s\", want \"%s\"", bad_headers[b].what, r.error,
                     bad_headers[b].error_mid);
        assert_int_equal(r.offset, bad_at);
        assert_int_equal(r.kind, TF_STREAM_UNKNOWN);
        assert_true(r.stopped);
        assert_int_equal(l.n, 3);

        /* The reader now ignores input, even a valid record. */
        assert_int_equal(tf_record_feed(&r, s.p, s.len, log_cb, &l), TF_PARSE_OK);
        assert_int_equal(l.n, 3);
        assert_int_equal(r.offset, bad_at);
        tf_record_reader_release(&r);
        stream_free(&s);
    }
}

/* The same headers as the first bytes of a stream: not TLS at all. */
static void
test_bad_header_at_start(void **state)
{
    (void)state;
    for (size_t b = 0; b < N_BAD; b++) {
        struct stream s = {0};
        struct log want;
        stream_bytes(&s, bad_headers[b].hdr, TF_RECORD_HEADER_LEN);
        stream_record(&s, TF_CT_HANDSHAKE, 0x0303, 4, 4, 99);
        log_init(&want, NULL, NULL, 0);
        check_all_splits(&s, &want, TF_PARSE_BAD, false, SIZE_MAX, SIZE_MAX);

        struct tf_record_reader r;
        struct log l;
        tf_record_reader_init(&r);
        log_init(&l, &r, s.p, s.len);
        assert_int_equal(tf_record_feed(&r, s.p, s.len, log_cb, &l), TF_PARSE_BAD);
        if (r.error[0] == '\0')
            fail_msg("%s: no error text", bad_headers[b].what);
        assert_int_equal(r.offset, 0);
        assert_int_equal(r.kind, TF_STREAM_UNKNOWN);
        assert_true(r.stopped);
        assert_int_equal(l.n, 0);
        assert_int_equal(tf_record_feed(&r, s.p, s.len, log_cb, &l), TF_PARSE_OK);
        assert_int_equal(l.n, 0);
        tf_record_reader_release(&r);
        stream_free(&s);
    }
}

/* Headers that look TLS at the start but fail later checks say which check. */
static void
test_bad_header_at_start_text(void **state)
{
    static const struct bad_header cases[] = {
        {"version 0x0305", {22, 3, 5, 0, 1}, "invalid record version 0x0305"},
        {"length 18433", {22, 3, 1, 0x48, 0x01}, "record length 18433 exceeds 18432"},
        {"content type 19", {19, 3, 3, 0, 1}, "not a TLS record header"},
        {"version major 2", {22, 2, 0, 0, 1}, "not a TLS record header"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct tf_record_reader r;
        struct log l;
        tf_record_reader_init(&r);
        log_init(&l, &r, cases[i].hdr, TF_RECORD_HEADER_LEN);
        assert_int_equal(tf_record_feed(&r, cases[i].hdr, TF_RECORD_HEADER_LEN, log_cb, &l),
                         TF_PARSE_BAD);
        if (strcmp(r.error, cases[i].error_mid) != 0)
            fail_msg("%s: error \"%s\", want \"%s\"", cases[i].what, r.error,
                     cases[i].error_mid);
        tf_record_reader_release(&r);
    }
}

/* The limits themselves are accepted: every type, every version, max length. */
static void
test_header_limits_accepted(void **state)
{
    (void)state;
    for (unsigned type = TF_CT_CHANGE_CIPHER_SPEC; type <= TF_CT_HEARTBEAT; type++) {
        for (unsigned v = 0x0300; v <= 0x0304; v++) {
            struct rec_spec spec[2] = {
                {(uint8_t)type, (uint16_t)v, 0, 1},
                {(uint8_t)type, (uint16_t)v, type == TF_CT_HEARTBEAT ? TF_RECORD_MAX_BODY : 7, 2},
            };
            struct stream s;
            struct tf_record_reader r;
            struct log l, want;
            stream_build(&s, spec, 2);
            log_expected(&want, spec, 2, false);
            tf_record_reader_init(&r);
            log_init(&l, &r, s.p, s.len);
            assert_int_equal(tf_record_feed(&r, s.p, s.len, log_cb, &l), TF_PARSE_OK);
            log_forget_empty_bodies(&l);
            log_forget_empty_bodies(&want);
            assert_logs_equal(&l, &want);
            tf_record_reader_release(&r);
            stream_free(&s);
        }
    }
}

/* An oversized record after the largest legal ones, at every split. */
static void
test_oversized_after_max(void **state)
{
    static const struct rec_spec specs[] = {
        {TF_CT_APPLICATION_DATA, 0x0303, TF_RECORD_MAX_BODY, 1},
        {TF_CT_APPLICATION_DATA, 0x0303, TF_RECORD_MAX_BODY, 2},
    };
    struct stream s;
    struct log want;
    (void)state;

    stream_build(&s, specs, 2);
    stream_record(&s, TF_CT_APPLICATION_DATA, 0x0303, TF_RECORD_MAX_BODY + 1,
                  TF_RECORD_MAX_BODY + 1, 3);
    log_expected(&want, specs, 2, false);
    check_all_splits(&s, &want, TF_PARSE_BAD, false, SIZE_MAX, SIZE_MAX);
    stream_free(&s);
}

/* ------------------------------------------------------------ classification */

struct class_case {
    const char *what;
    const char *bytes;
    size_t len;
    enum tf_parse res;
    enum tf_stream_kind kind;
};

#define CC(what, lit, res, kind) {what, lit, sizeof(lit) - 1, res, kind}

static const struct class_case class_cases[] = {
    CC("empty", "", TF_PARSE_NEED_MORE, TF_STREAM_TLS),
    CC("GET", "GET / HTTP/1.1\r\n", TF_PARSE_OK, TF_STREAM_HTTP),
    CC("POST", "POST /form HTTP/1.1\r\n", TF_PARSE_OK, TF_STREAM_HTTP),
    CC("HEAD", "HEAD / HTTP/1.0\r\n", TF_PARSE_OK, TF_STREAM_HTTP),
    CC("PUT", "PUT /x HTTP/1.1\r\n", TF_PARSE_OK, TF_STREAM_HTTP),
    CC("OPTIONS", "OPTIONS * HTTP/1.1\r\n", TF_PARSE_OK, TF_STREAM_HTTP),
    CC("CONNECT", "CONNECT a:443 HTTP/1.1\r\n", TF_PARSE_OK, TF_STREAM_HTTP),
    CC("HTTP/2 preface", "PRI * HTTP/2.0\r\n", TF_PARSE_OK, TF_STREAM_HTTP),
    CC("response", "HTTP/1.1 200 OK\r\n", TF_PARSE_OK, TF_STREAM_HTTP),
    CC("exactly GET+space", "GET ", TF_PARSE_OK, TF_STREAM_HTTP),
    CC("GE", "GE", TF_PARSE_NEED_MORE, TF_STREAM_TLS),
    CC("G", "G", TF_PARSE_NEED_MORE, TF_STREAM_TLS),
    CC("POS", "POS", TF_PARSE_NEED_MORE, TF_STREAM_TLS),
    CC("lower case get", "get / HTTP/1.1", TF_PARSE_OK, TF_STREAM_UNKNOWN),
    CC("GETX", "GETX", TF_PARSE_OK, TF_STREAM_UNKNOWN),
    CC("one 0x01", "\x01", TF_PARSE_OK, TF_STREAM_UNKNOWN),
    CC("NUL", "\x00", TF_PARSE_OK, TF_STREAM_UNKNOWN),
    CC("G then digit", "G1", TF_PARSE_OK, TF_STREAM_UNKNOWN),
    CC("SSH banner", "SSH-2.0-OpenSSH_9.6\r\n", TF_PARSE_OK, TF_STREAM_UNKNOWN),
    CC("SMTP banner", "220 mail ESMTP\r\n", TF_PARSE_OK, TF_STREAM_UNKNOWN),
    CC("handshake type only", "\x16", TF_PARSE_NEED_MORE, TF_STREAM_TLS),
    CC("handshake 3.x", "\x16\x03", TF_PARSE_OK, TF_STREAM_TLS),
    CC("TLS 1.2 header", "\x16\x03\x03\x00\x30", TF_PARSE_OK, TF_STREAM_TLS),
    CC("alert 3.x", "\x15\x03\x01", TF_PARSE_OK, TF_STREAM_TLS),
    CC("handshake major 2", "\x16\x02", TF_PARSE_OK, TF_STREAM_UNKNOWN),
    CC("DTLS header", "\x16\xfe\xfd", TF_PARSE_OK, TF_STREAM_UNKNOWN),
    CC("SSLv2 hello", "\x80\x2e\x01\x03\x01\x00\x15", TF_PARSE_OK, TF_STREAM_SSLV2),
    CC("SSLv2 hello, 3 bytes", "\x80\x2e\x01", TF_PARSE_OK, TF_STREAM_SSLV2),
    CC("SSLv2 length only", "\x80\x2e", TF_PARSE_NEED_MORE, TF_STREAM_TLS),
    CC("high bit only", "\x80", TF_PARSE_NEED_MORE, TF_STREAM_TLS),
    CC("high bit, not hello", "\x80\x2e\x02\x03", TF_PARSE_OK, TF_STREAM_UNKNOWN),
    CC("0xff garbage", "\xff\xff\xff\xff\xff", TF_PARSE_OK, TF_STREAM_UNKNOWN),
};

static void
test_classify(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(class_cases) / sizeof(class_cases[0]); i++) {
        const struct class_case *c = &class_cases[i];
        enum tf_stream_kind kind = (enum tf_stream_kind)99;
        enum tf_parse res = tf_record_classify((const uint8_t *)c->bytes, c->len, &kind);
        if (res != c->res)
            fail_msg("%s: result %d, want %d", c->what, res, c->res);
        if (res == TF_PARSE_OK && kind != c->kind)
            fail_msg("%s: kind %d, want %d", c->what, kind, c->kind);
    }
}

/* Random bytes: whatever the answer, never TLS unless they look like a header. */
static void
test_classify_random(void **state)
{
    uint32_t x = 12345;
    (void)state;
    for (int round = 0; round < 10000; round++) {
        uint8_t buf[8];
        for (size_t i = 0; i < sizeof(buf); i++) {
            x = x * 1103515245u + 12345u;
            buf[i] = (uint8_t)(x >> 16);
        }
        for (size_t n = 0; n <= sizeof(buf); n++) {
            enum tf_stream_kind kind = TF_STREAM_UNKNOWN;
            enum tf_parse res = tf_record_classify(buf, n, &kind);
            assert_int_not_equal(res, TF_PARSE_BAD);
            if (res == TF_PARSE_OK && kind == TF_STREAM_TLS) {
                assert_in_range(buf[0], TF_CT_CHANGE_CIPHER_SPEC, TF_CT_HEARTBEAT);
                assert_int_equal(buf[1], 3);
            }
            if (n >= 5)
                assert_int_equal(res, TF_PARSE_OK); /* a full header always decides */
        }
    }
}

/*
 * Non-TLS streams through the reader: coalesced, the reader stops on the
 * first feed with the right kind and text; byte by byte, it stops on the
 * byte that decides, not later.
 */
struct not_tls_case {
    const char *what;
    const char *bytes;
    size_t len;
    enum tf_stream_kind kind;
    const char *error;
    size_t decided_at; /* index of the byte that makes it clear */
};

#define NT(what, lit, kind, error, at) {what, lit, sizeof(lit) - 1, kind, error, at}

static const struct not_tls_case not_tls_cases[] = {
    NT("GET", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", TF_STREAM_HTTP, "HTTP, not TLS", 3),
    NT("POST", "POST /x HTTP/1.1\r\n", TF_STREAM_HTTP, "HTTP, not TLS", 3),
    NT("response", "HTTP/1.1 200 OK\r\n\r\n", TF_STREAM_HTTP, "HTTP, not TLS", 3),
    NT("SSLv2", "\x80\x2e\x01\x03\x01\x00\x15\x00\x00\x00\x10", TF_STREAM_SSLV2,
       "SSLv2-style ClientHello", 2),
    NT("0x01", "\x01\x02\x03\x04\x05\x06", TF_STREAM_UNKNOWN, "not a TLS record header", 0),
    NT("SSH", "SSH-2.0-OpenSSH_9.6\r\n", TF_STREAM_UNKNOWN, "not a TLS record header", 3),
    NT("lower case", "get / HTTP/1.1\r\n", TF_STREAM_UNKNOWN, "not a TLS record header", 0),
    NT("TLS type, bad major", "\x16\x02\x00\x00\x01\x00", TF_STREAM_UNKNOWN,
       "not a TLS record header", 1),
    NT("NUL bytes", "\x00\x00\x00\x00\x00\x00\x00", TF_STREAM_UNKNOWN,
       "not a TLS record header", 0),
};

static void
test_not_tls_streams(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(not_tls_cases) / sizeof(not_tls_cases[0]); i++) {
        const struct not_tls_case *c = &not_tls_cases[i];
        const uint8_t *p = (const uint8_t *)c->bytes;
        struct tf_record_reader r;
        struct log l;
        size_t bad_at = SIZE_MAX;

        tf_record_reader_init(&r);
        log_init(&l, &r, p, c->len);
        assert_int_equal(tf_record_feed(&r, p, c->len, log_cb, &l), TF_PARSE_BAD);
        if (r.kind != c->kind || strcmp(r.error, c->error) != 0)
            fail_msg("%s: kind %d error \"%s\", want %d \"%s\"", c->what, r.kind, r.error,
                     c->kind, c->error);
        assert_int_equal(r.offset, 0);
        assert_int_equal(l.n, 0);
        assert_int_equal(tf_record_feed(&r, p, c->len, log_cb, &l), TF_PARSE_OK);
        tf_record_reader_release(&r);

        tf_record_reader_init(&r);
        log_init(&l, &r, p, c->len);
        assert_int_equal(feed_bytewise(&r, p, c->len, &l, &bad_at), TF_PARSE_BAD);
        if (bad_at != c->decided_at)
            fail_msg("%s: stopped at byte %zu, want %zu", c->what, bad_at, c->decided_at);
        assert_int_equal(r.kind, c->kind);
        assert_string_equal(r.error, c->error);
        assert_int_equal(r.offset, 0);
        assert_int_equal(l.n, 0);
        tf_record_reader_release(&r);

        /* And split in two everywhere. */
        for (size_t cut = 0; cut <= c->len; cut++) {
            size_t piece = SIZE_MAX;
            tf_record_reader_init(&r);
            log_init(&l, &r, p, c->len);
            assert_int_equal(feed_cuts(&r, p, c->len, &cut, 1, &l, &piece), TF_PARSE_BAD);
            assert_int_equal(piece, cut > c->decided_at ? 0 : 1);
            assert_int_equal(r.kind, c->kind);
            assert_string_equal(r.error, c->error);
            tf_record_reader_release(&r);
        }
    }
}

/* A few bytes that could still become TLS or HTTP do not stop the reader. */
static void
test_short_prefixes(void **state)
{
    struct tf_record_reader r;
    struct log l;
    (void)state;

    /* "GE" waits; "T" makes it HTTP. */
    tf_record_reader_init(&r);
    log_init(&l, &r, NULL, 0);
    assert_int_equal(tf_record_feed(&r, (const uint8_t *)"GE", 2, log_cb, &l), TF_PARSE_OK);
    assert_false(r.stopped);
    assert_int_equal(tf_record_feed(&r, (const uint8_t *)"T", 1, log_cb, &l), TF_PARSE_OK);
    assert_false(r.stopped);
    assert_int_equal(tf_record_feed(&r, (const uint8_t *)" /", 2, log_cb, &l), TF_PARSE_BAD);
    assert_int_equal(r.kind, TF_STREAM_HTTP);
    tf_record_reader_release(&r);

    /* "\x01" is decided at once. */
    tf_record_reader_init(&r);
    log_init(&l, &r, NULL, 0);
    assert_int_equal(tf_record_feed(&r, (const uint8_t *)"\x01", 1, log_cb, &l), TF_PARSE_BAD);
    assert_int_equal(r.kind, TF_STREAM_UNKNOWN);
    assert_true(r.stopped);
    tf_record_reader_release(&r);

    /* A TLS header arriving one byte at a time, then its body. */
    static const uint8_t tls[] = {0x16, 0x03, 0x01, 0x00, 0x02, 0xaa, 0xbb};
    tf_record_reader_init(&r);
    log_init(&l, &r, tls, sizeof(tls));
    for (size_t i = 0; i < sizeof(tls); i++) {
        assert_int_equal(tf_record_feed(&r, tls + i, 1, log_cb, &l), TF_PARSE_OK);
        assert_false(r.stopped);
        assert_int_equal(l.n, i + 1 == sizeof(tls) ? 1 : 0);
    }
    assert_int_equal(l.s[0].type, TF_CT_HANDSHAKE);
    assert_int_equal(l.s[0].version, 0x0301);
    assert_int_equal(l.s[0].len, 2);
    assert_true(l.s[0].body_ok);
    assert_false(l.s[0].body_null);
    assert_int_equal(r.kind, TF_STREAM_TLS);
    tf_record_reader_release(&r);

    /* A stream that ends after 1..4 bytes of a TLS header reports nothing. */
    for (size_t n = 1; n < TF_RECORD_HEADER_LEN; n++) {
        tf_record_reader_init(&r);
        log_init(&l, &r, tls, sizeof(tls));
        assert_int_equal(tf_record_feed(&r, tls, n, log_cb, &l), TF_PARSE_OK);
        assert_false(r.stopped);
        assert_int_equal(l.n, 0);
        tf_record_reader_release(&r);
    }
}

/* Only the start of a stream is classified: HTTP-looking bytes later are a bad header. */
static void
test_http_mid_stream(void **state)
{
    struct stream s;
    struct tf_record_reader r;
    struct log l;
    (void)state;

    stream_build(&s, mixed, 2);
    size_t at = s.len;
    stream_bytes(&s, "GET / HTTP/1.1\r\n", 16);
    tf_record_reader_init(&r);
    log_init(&l, &r, s.p, s.len);
    assert_int_equal(tf_record_feed(&r, s.p, s.len, log_cb, &l), TF_PARSE_BAD);
    assert_int_equal(l.n, 2);
    assert_int_equal(r.offset, at);
    assert_string_equal(r.error, "invalid record content type 71");
    tf_record_reader_release(&r);
    stream_free(&s);
}

/* ------------------------------------------------------------ skim mode */

static void
test_skim_everywhere(void **state)
{
    struct stream s;
    struct log want;
    (void)state;

    stream_build(&s, mixed, N_MIXED);
    log_expected(&want, mixed, N_MIXED, true);
    check_all_splits(&s, &want, TF_PARSE_OK, true, SIZE_MAX, SIZE_MAX);
    stream_free(&s);
}

/* Skim mode still checks headers. */
static void
test_skim_bad_header(void **state)
{
    struct stream s;
    struct log want;
    (void)state;

    stream_build(&s, mixed, 4);
    stream_record(&s, TF_CT_HANDSHAKE, 0x0303, TF_RECORD_MAX_BODY + 1, 10, 1);
    log_expected(&want, mixed, 4, true);
    check_all_splits(&s, &want, TF_PARSE_BAD, true, SIZE_MAX, SIZE_MAX);
    stream_free(&s);
}

/* The callback switches to skim at record k: bodies up to k, none after. */
static void
test_skim_from_callback(void **state)
{
    struct stream s;
    (void)state;

    stream_build(&s, mixed, N_MIXED);
    for (size_t k = 0; k < N_MIXED; k += 3) {
        struct log want, skimmed;
        log_expected(&want, mixed, N_MIXED, false);
        log_expected(&skimmed, mixed, N_MIXED, true);
        for (size_t i = k + 1; i < N_MIXED; i++)
            want.s[i] = skimmed.s[i];
        check_all_splits(&s, &want, TF_PARSE_OK, false, SIZE_MAX, k);
    }
    stream_free(&s);
}

/* Leaving skim mode from the callback gives bodies again. */
static bool
unskim_cb(void *arg, const struct tf_record *rec)
{
    struct log *l = arg;
    bool ret = log_cb(arg, rec);
    if (l->n == 2)
        l->reader->skim = false;
    return ret;
}

static void
test_unskim_from_callback(void **state)
{
    struct stream s;
    struct tf_record_reader r;
    struct log l, want, skimmed;
    (void)state;

    stream_build(&s, mixed, N_MIXED);
    log_expected(&want, mixed, N_MIXED, false);
    log_expected(&skimmed, mixed, N_MIXED, true);
    want.s[0] = skimmed.s[0];
    want.s[1] = skimmed.s[1];
    log_forget_empty_bodies(&want);
    for (size_t cut = 0; cut <= s.len; cut += 97) {
        tf_record_reader_init(&r);
        r.skim = true;
        log_init(&l, &r, s.p, s.len);
        assert_int_equal(tf_record_feed(&r, s.p, cut, unskim_cb, &l), TF_PARSE_OK);
        assert_int_equal(tf_record_feed(&r, s.p + cut, s.len - cut, unskim_cb, &l), TF_PARSE_OK);
        log_forget_empty_bodies(&l);
        assert_logs_equal(&l, &want);
        tf_record_reader_release(&r);
    }
    stream_free(&s);
}

/* ------------------------------------------------------------ stopping */

/* Returning false stops the reader: nothing more is reported, ever. */
static void
test_callback_stops(void **state)
{
    struct stream s;
    (void)state;

    stream_build(&s, mixed, N_MIXED);
    for (size_t k = 0; k < N_MIXED; k++) {
        struct log want;
        log_expected(&want, mixed, k + 1, false);
        check_all_splits(&s, &want, TF_PARSE_OK, false, k, SIZE_MAX);

        struct tf_record_reader r;
        struct log l;
        tf_record_reader_init(&r);
        log_init(&l, &r, s.p, s.len);
        l.stop_at = k;
        assert_int_equal(tf_record_feed(&r, s.p, s.len, log_cb, &l), TF_PARSE_OK);
        assert_true(r.stopped);
        assert_int_equal(l.n, k + 1);
        assert_int_equal(r.records, k + 1);
        assert_int_equal(r.kind, TF_STREAM_TLS);
        assert_string_equal(r.error, "");
        l.stop_at = SIZE_MAX;
        assert_int_equal(tf_record_feed(&r, s.p, s.len, log_cb, &l), TF_PARSE_OK);
        assert_int_equal(l.n, k + 1);
        tf_record_reader_release(&r);
    }
    stream_free(&s);
}

static void
test_callback_stops_in_skim(void **state)
{
    struct stream s;
    struct log want;
    (void)state;

    stream_build(&s, mixed, N_MIXED);
    log_expected(&want, mixed, 4, true);
    check_all_splits(&s, &want, TF_PARSE_OK, true, 3, SIZE_MAX);
    stream_free(&s);
}

/* ------------------------------------------------------------ preview */

static void
test_preview_escapes(void **state)
{
    static const uint8_t in[] = {'G', 'E', 'T', ' ', '/', '\\', '\r', '\n', 0x00, 0x16,
                                 0x7f, 0xff, '"', '~', ' '};
    char out[128];
    (void)state;

    tf_record_preview(in, sizeof(in), 64, out, sizeof(out));
    assert_string_equal(out, "GET /\\\\\\r\\n\\x00\\x16\\x7f\\xff\"~ ");

    /* max bounds the input bytes looked at. */
    tf_record_preview(in, sizeof(in), 3, out, sizeof(out));
    assert_string_equal(out, "GET");
    tf_record_preview(in, sizeof(in), 0, out, sizeof(out));
    assert_string_equal(out, "");
    tf_record_preview(in, 0, 64, out, sizeof(out));
    assert_string_equal(out, "");
}

/* A small output buffer ends the preview on a whole escape, always terminated. */
static void
test_preview_truncates(void **state)
{
    static const uint8_t in[] = {'a', 0x01, 'b', '\\', 'c'};
    static const char *const want[] = {
        /* outlen 1 */ "",
        /* 2 */ "a",
        /* 3 */ "a",
        /* 4 */ "a",
        /* 5 */ "a",
        /* 6 */ "a\\x01",
        /* 7 */ "a\\x01b",
        /* 8 */ "a\\x01b",
        /* 9 */ "a\\x01b\\\\",
        /* 10 */ "a\\x01b\\\\c",
    };
    char out[16];
    (void)state;

    for (size_t outlen = 1; outlen <= 10; outlen++) {
        memset(out, 'Z', sizeof(out));
        tf_record_preview(in, sizeof(in), 64, out, outlen);
        assert_string_equal(out, want[outlen - 1]);
        for (size_t i = outlen; i < sizeof(out); i++)
            assert_int_equal(out[i], 'Z'); /* nothing written past outlen */
    }
    /* outlen 0 writes nothing at all. */
    memset(out, 'Z', sizeof(out));
    tf_record_preview(in, sizeof(in), 64, out, 0);
    assert_int_equal(out[0], 'Z');
}

/* Every byte value: printable as is, the rest escaped, round-trip length right. */
static void
test_preview_all_bytes(void **state)
{
    uint8_t in[256];
    char out[256 * 4 + 1];
    (void)state;

    for (size_t i = 0; i < 256; i++)
        in[i] = (uint8_t)i;
    tf_record_preview(in, sizeof(in), sizeof(in), out, sizeof(out));
    size_t want = 0;
    for (size_t i = 0; i < 256; i++) {
        if (i == '\\' || i == '\r' || i == '\n')
            want += 2;
        else if (i >= 0x20 && i < 0x7f)
            want += 1;
        else
            want += 4;
    }
    assert_int_equal(strlen(out), want);
    for (const char *c = out; *c; c++)
        assert_true(*c >= 0x20 && *c < 0x7f);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_coalesced_fields),
        cmocka_unit_test(test_split_everywhere),
        cmocka_unit_test(test_partial_record_kept),
        cmocka_unit_test(test_empty_feed),
        cmocka_unit_test(test_bad_header_mid_stream),
        cmocka_unit_test(test_bad_header_at_start),
        cmocka_unit_test(test_bad_header_at_start_text),
        cmocka_unit_test(test_header_limits_accepted),
        cmocka_unit_test(test_oversized_after_max),
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_classify_random),
        cmocka_unit_test(test_not_tls_streams),
        cmocka_unit_test(test_short_prefixes),
        cmocka_unit_test(test_http_mid_stream),
        cmocka_unit_test(test_skim_everywhere),
        cmocka_unit_test(test_skim_bad_header),
        cmocka_unit_test(test_skim_from_callback),
        cmocka_unit_test(test_unskim_from_callback),
        cmocka_unit_test(test_callback_stops),
        cmocka_unit_test(test_callback_stops_in_skim),
        cmocka_unit_test(test_preview_escapes),
        cmocka_unit_test(test_preview_truncates),
        cmocka_unit_test(test_preview_all_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
