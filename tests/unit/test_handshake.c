/*
 * test_handshake.c — unit tests for handshake message reassembly
 * (handshake.h).
 *
 * Handshake messages (RFC 8446 §4: msg_type, uint24 length, body) travel in
 * the bodies of handshake records, and record boundaries need not follow
 * message boundaries (RFC 8446 §5.1): a message may span records, a record
 * may hold several messages, and a 4-byte header may itself be split.  So a
 * stream of messages is cut into "records" in every way that matters — at
 * each offset, byte by byte, at 1/2/3 bytes into each header, in random
 * pieces — and the messages handed out must be the same each time.  The
 * cap on message size, a callback that stops the reader and
 * tf_hs_pending() are checked at their edges.
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

#include "tlsfault/handshake.h"

/* ------------------------------------------------------------ helpers */

#define MAX_MSGS 64
#define CAP 65536

struct msg_spec {
    uint8_t type;
    size_t len;
};

/* A stream of messages, and where each one starts in it. */
struct msgs {
    uint8_t *p;
    size_t len;
    size_t start[MAX_MSGS];
    size_t n;
};

static void
msgs_build(struct msgs *m, const struct msg_spec *specs, size_t n)
{
    size_t total = 0;
    assert_true(n <= MAX_MSGS);
    for (size_t i = 0; i < n; i++)
        total += TF_HS_HEADER_LEN + specs[i].len;
    memset(m, 0, sizeof(*m));
    m->p = malloc(total ? total : 1);
    assert_non_null(m->p);
    for (size_t i = 0; i < n; i++) {
        uint8_t *h = m->p + m->len;
        m->start[i] = m->len;
        h[0] = specs[i].type;
        h[1] = (uint8_t)(specs[i].len >> 16);
        h[2] = (uint8_t)(specs[i].len >> 8);
        h[3] = (uint8_t)specs[i].len;
        for (size_t j = 0; j < specs[i].len; j++)
            h[TF_HS_HEADER_LEN + j] = (uint8_t)(i * 17 + j * 7 + (j >> 9));
        m->len += TF_HS_HEADER_LEN + specs[i].len;
    }
    m->n = n;
}

static void
msgs_free(struct msgs *m)
{
    free(m->p);
    memset(m, 0, sizeof(*m));
}

struct got {
    uint8_t type;
    size_t len;
    bool body_ok;
};

/* The callback's log; it checks each body against the message stream. */
struct log {
    struct got g[MAX_MSGS];
    size_t n;
    const struct msgs *m;
    size_t stop_at;
};

static void
log_init(struct log *l, const struct msgs *m)
{
    memset(l, 0, sizeof(*l));
    l->m = m;
    l->stop_at = SIZE_MAX;
}

static bool
log_cb(void *arg, uint8_t type, const uint8_t *body, size_t len)
{
    struct log *l = arg;
    assert_true(l->n < MAX_MSGS);
    struct got *g = &l->g[l->n];
    g->type = type;
    g->len = len;
    /* Message n of the stream must come out as message n. */
    g->body_ok = false;
    if (l->m && l->n < l->m->n) {
        const uint8_t *want = l->m->p + l->m->start[l->n] + TF_HS_HEADER_LEN;
        g->body_ok = len == 0 || (body != NULL && memcmp(body, want, len) == 0);
    }
    return l->n++ != l->stop_at;
}

static void
assert_log(const struct log *l, const struct msg_spec *specs, size_t n)
{
    assert_int_equal(l->n, n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(l->g[i].type, specs[i].type);
        assert_int_equal(l->g[i].len, specs[i].len);
        assert_true(l->g[i].body_ok);
    }
}

/*
 * Feeds the message stream as records ending at cuts[] (then the rest);
 * empty pieces are skipped, as a record never has an empty handshake
 * body worth feeding.  Returns the first non-OK result.
 */
static enum tf_parse
feed_records(struct tf_hs_reader *h, const struct msgs *m, const size_t *cuts, size_t ncuts,
             struct log *l)
{
    enum tf_parse first = TF_PARSE_OK;
    size_t at = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : m->len;
        if (end > at) {
            enum tf_parse res = tf_hs_feed(h, m->p + at, end - at, log_cb, l);
            assert_int_not_equal(res, TF_PARSE_NEED_MORE);
            if (first == TF_PARSE_OK)
                first = res;
        }
        at = end;
    }
    return first;
}

/* Two records at every cut, one byte per record, and random record sizes. */
static void
check_all_cuts(const struct msg_spec *specs, size_t n)
{
    struct msgs m;
    struct tf_hs_reader h;
    struct log l;

    msgs_build(&m, specs, n);

    for (size_t cut = 0; cut <= m.len; cut++) {
        tf_hs_reader_init(&h, CAP);
        log_init(&l, &m);
        assert_int_equal(feed_records(&h, &m, &cut, 1, &l), TF_PARSE_OK);
        assert_log(&l, specs, n);
        assert_false(tf_hs_pending(&h));
        assert_int_equal(h.messages, n);
        tf_hs_reader_release(&h);
    }

    tf_hs_reader_init(&h, CAP);
    log_init(&l, &m);
    for (size_t i = 0, next = 1; i < m.len; i++) {
        assert_int_equal(tf_hs_feed(&h, m.p + i, 1, log_cb, &l), TF_PARSE_OK);
        /* Nothing is pending exactly at message boundaries. */
        bool boundary = i + 1 == m.len || (next < m.n && i + 1 == m.start[next]);
        if (boundary && i + 1 < m.len)
            next++;
        assert_int_equal(tf_hs_pending(&h), !boundary);
    }
    assert_log(&l, specs, n);
    tf_hs_reader_release(&h);

    uint32_t x = 77;
    for (int round = 0; round < 40; round++) {
        size_t cuts[1024], ncuts = 0, at = 0;
        for (;;) {
            x = x * 1664525u + 1013904223u;
            at += 1 + (x >> 8) % (round < 20 ? 9 : 400);
            if (at >= m.len || ncuts == sizeof(cuts) / sizeof(cuts[0]))
                break;
            cuts[ncuts++] = at;
        }
        tf_hs_reader_init(&h, CAP);
        log_init(&l, &m);
        assert_int_equal(feed_records(&h, &m, cuts, ncuts, &l), TF_PARSE_OK);
        assert_log(&l, specs, n);
        tf_hs_reader_release(&h);
    }
    msgs_free(&m);
}

/* A TLS 1.2 server flight, with the empty ServerHelloDone in the middle. */
static const struct msg_spec flight[] = {
    {TF_HS_SERVER_HELLO, 70},
    {TF_HS_CERTIFICATE, 3000},
    {TF_HS_SERVER_KEY_EXCHANGE, 300},
    {TF_HS_SERVER_HELLO_DONE, 0},
    {TF_HS_NEW_SESSION_TICKET, 186},
    {TF_HS_SERVER_HELLO_DONE, 0},
    {TF_HS_SERVER_HELLO_DONE, 0},
    {TF_HS_FINISHED, 12},
};
#define N_FLIGHT (sizeof(flight) / sizeof(flight[0]))

/* ------------------------------------------------------------ reassembly */

/* All messages in one record. */
static void
test_one_record(void **state)
{
    struct msgs m;
    struct tf_hs_reader h;
    struct log l;
    (void)state;

    msgs_build(&m, flight, N_FLIGHT);
    tf_hs_reader_init(&h, CAP);
    assert_false(tf_hs_pending(&h));
    log_init(&l, &m);
    assert_int_equal(tf_hs_feed(&h, m.p, m.len, log_cb, &l), TF_PARSE_OK);
    assert_log(&l, flight, N_FLIGHT);
    assert_false(tf_hs_pending(&h));
    assert_false(h.stopped);
    assert_string_equal(h.error, "");
    assert_int_equal(h.messages, N_FLIGHT);
    tf_hs_reader_release(&h);
    tf_hs_reader_release(&h); /* twice is harmless */
    msgs_free(&m);
}

/* One message per record, as most stacks send them. */
static void
test_record_per_message(void **state)
{
    struct msgs m;
    struct tf_hs_reader h;
    struct log l;
    size_t cuts[MAX_MSGS];
    (void)state;

    msgs_build(&m, flight, N_FLIGHT);
    for (size_t i = 1; i < m.n; i++)
        cuts[i - 1] = m.start[i];
    tf_hs_reader_init(&h, CAP);
    log_init(&l, &m);
    assert_int_equal(feed_records(&h, &m, cuts, m.n - 1, &l), TF_PARSE_OK);
    assert_log(&l, flight, N_FLIGHT);
    tf_hs_reader_release(&h);
    msgs_free(&m);
}

static void
test_split_everywhere(void **state)
{
    (void)state;
    check_all_cuts(flight, N_FLIGHT);
}

/* A message larger than one record's 2^14 bytes, as a long chain would be. */
static void
test_message_over_many_records(void **state)
{
    static const struct msg_spec big[] = {
        {TF_HS_SERVER_HELLO, 90},
        {TF_HS_CERTIFICATE, 40000},
        {TF_HS_SERVER_HELLO_DONE, 0},
    };
    struct msgs m;
    struct tf_hs_reader h;
    struct log l;
    size_t cuts[8], ncuts = 0;
    (void)state;

    msgs_build(&m, big, 3);
    for (size_t at = 16384; at < m.len; at += 16384)
        cuts[ncuts++] = at;
    tf_hs_reader_init(&h, CAP);
    log_init(&l, &m);
    assert_int_equal(feed_records(&h, &m, cuts, ncuts, &l), TF_PARSE_OK);
    assert_log(&l, big, 3);
    tf_hs_reader_release(&h);
    msgs_free(&m);
}

/*
 * Each message's header split 1+3, 2+2 and 3+1 across records, with the
 * records otherwise full of neighbouring messages.
 */
static void
test_header_split(void **state)
{
    struct msgs m;
    (void)state;

    msgs_build(&m, flight, N_FLIGHT);
    for (size_t i = 0; i < m.n; i++) {
        for (size_t k = 1; k < TF_HS_HEADER_LEN; k++) {
            struct tf_hs_reader h;
            struct log l;
            size_t cut = m.start[i] + k;
            tf_hs_reader_init(&h, CAP);
            log_init(&l, &m);
            assert_int_equal(tf_hs_feed(&h, m.p, cut, log_cb, &l), TF_PARSE_OK);
            assert_int_equal(l.n, i);
            assert_true(tf_hs_pending(&h));
            assert_int_equal(tf_hs_feed(&h, m.p + cut, m.len - cut, log_cb, &l), TF_PARSE_OK);
            assert_log(&l, flight, N_FLIGHT);
            assert_false(tf_hs_pending(&h));
            tf_hs_reader_release(&h);
        }
    }

    /* A header over three records: 1 + 1 + 2 bytes, then the body. */
    static const uint8_t ske[] = {TF_HS_SERVER_KEY_EXCHANGE, 0, 0, 3, 'a', 'b', 'c'};
    struct tf_hs_reader h;
    struct log l;
    tf_hs_reader_init(&h, CAP);
    log_init(&l, NULL);
    assert_int_equal(tf_hs_feed(&h, ske, 1, log_cb, &l), TF_PARSE_OK);
    assert_true(tf_hs_pending(&h));
    assert_int_equal(tf_hs_feed(&h, ske + 1, 1, log_cb, &l), TF_PARSE_OK);
    assert_true(tf_hs_pending(&h));
    assert_int_equal(tf_hs_feed(&h, ske + 2, 2, log_cb, &l), TF_PARSE_OK);
    assert_true(tf_hs_pending(&h));
    assert_int_equal(l.n, 0);
    assert_int_equal(tf_hs_feed(&h, ske + 4, 3, log_cb, &l), TF_PARSE_OK);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.g[0].type, TF_HS_SERVER_KEY_EXCHANGE);
    assert_int_equal(l.g[0].len, 3);
    assert_false(tf_hs_pending(&h));
    tf_hs_reader_release(&h);
    msgs_free(&m);
}

/* ServerHelloDone alone, split 2+2, and right after a header-only record. */
static void
test_zero_length(void **state)
{
    static const uint8_t shd[] = {TF_HS_SERVER_HELLO_DONE, 0, 0, 0};
    struct tf_hs_reader h;
    struct log l;
    (void)state;

    tf_hs_reader_init(&h, CAP);
    log_init(&l, NULL);
    assert_int_equal(tf_hs_feed(&h, shd, 4, log_cb, &l), TF_PARSE_OK);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.g[0].type, TF_HS_SERVER_HELLO_DONE);
    assert_int_equal(l.g[0].len, 0);
    assert_false(tf_hs_pending(&h));

    assert_int_equal(tf_hs_feed(&h, shd, 2, log_cb, &l), TF_PARSE_OK);
    assert_true(tf_hs_pending(&h));
    assert_int_equal(l.n, 1);
    assert_int_equal(tf_hs_feed(&h, shd + 2, 2, log_cb, &l), TF_PARSE_OK);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.g[1].type, TF_HS_SERVER_HELLO_DONE);
    assert_int_equal(l.g[1].len, 0);
    assert_false(tf_hs_pending(&h));

    /* The cap does not refuse empty messages, even a cap of 0. */
    tf_hs_reader_release(&h);
    tf_hs_reader_init(&h, 0);
    assert_int_equal(tf_hs_feed(&h, shd, 4, log_cb, &l), TF_PARSE_OK);
    assert_int_equal(l.n, 3);
    tf_hs_reader_release(&h);
}

/* A message exactly at the cap is reassembled, split or not. */
static void
test_cap_exact(void **state)
{
    static const struct msg_spec at_cap[] = {
        {TF_HS_CERTIFICATE, 1000},
        {TF_HS_SERVER_HELLO_DONE, 0},
    };
    struct msgs m;
    (void)state;

    msgs_build(&m, at_cap, 2);
    for (size_t cut = 0; cut <= m.len; cut++) {
        struct tf_hs_reader h;
        struct log l;
        tf_hs_reader_init(&h, 1000);
        log_init(&l, &m);
        assert_int_equal(feed_records(&h, &m, &cut, 1, &l), TF_PARSE_OK);
        assert_log(&l, at_cap, 2);
        tf_hs_reader_release(&h);
    }
    msgs_free(&m);
}

/*
 * One byte over the cap: the messages before it come out, then
 * TF_PARSE_BAD with the reason, at whichever record completes its header;
 * after that nothing more is handed out, whatever is fed.
 */
static void
test_cap_exceeded(void **state)
{
    static const struct msg_spec specs[] = {
        {TF_HS_SERVER_HELLO, 50},
        {TF_HS_CERTIFICATE, 1001},
        {TF_HS_SERVER_HELLO_DONE, 0},
    };
    struct msgs m;
    (void)state;

    msgs_build(&m, specs, 3);
    for (size_t cut = 0; cut <= m.len; cut++) {
        struct tf_hs_reader h;
        struct log l;
        tf_hs_reader_init(&h, 1000);
        log_init(&l, &m);
        enum tf_parse r1 = cut ? tf_hs_feed(&h, m.p, cut, log_cb, &l) : TF_PARSE_OK;
        enum tf_parse r2 =
            cut < m.len ? tf_hs_feed(&h, m.p + cut, m.len - cut, log_cb, &l) : TF_PARSE_OK;
        /* The header of the big message ends at m.start[1] + 4. */
        if (cut >= m.start[1] + TF_HS_HEADER_LEN)
            assert_int_equal(r1, TF_PARSE_BAD);
        else
            assert_int_equal(r2, TF_PARSE_BAD);
        assert_true(h.stopped);
        assert_int_equal(l.n, 1);
        assert_int_equal(l.g[0].type, TF_HS_SERVER_HELLO);
        assert_string_equal(h.error,
                            "handshake message type 11 of 1001 bytes exceeds the 1000-byte cap");

        /* Stopped: a valid message is not handed out. */
        static const uint8_t shd[] = {TF_HS_SERVER_HELLO_DONE, 0, 0, 0};
        (void)tf_hs_feed(&h, shd, sizeof(shd), log_cb, &l);
        assert_int_equal(l.n, 1);
        tf_hs_reader_release(&h);
    }
    msgs_free(&m);
}

/* A claimed length of 2^24 - 1 is refused before any byte of it is kept. */
static void
test_cap_huge_length(void **state)
{
    static const uint8_t huge[] = {TF_HS_CERTIFICATE, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5, 6};
    struct tf_hs_reader h;
    struct log l;
    (void)state;

    tf_hs_reader_init(&h, CAP);
    log_init(&l, NULL);
    assert_int_equal(tf_hs_feed(&h, huge, sizeof(huge), log_cb, &l), TF_PARSE_BAD);
    assert_int_equal(l.n, 0);
    assert_string_equal(h.error,
                        "handshake message type 11 of 16777215 bytes exceeds the 65536-byte cap");
    tf_hs_reader_release(&h);

    /* The same header fed a byte at a time. */
    tf_hs_reader_init(&h, CAP);
    enum tf_parse res = TF_PARSE_OK;
    size_t i;
    for (i = 0; i < sizeof(huge) && res == TF_PARSE_OK; i++)
        res = tf_hs_feed(&h, huge + i, 1, log_cb, &l);
    assert_int_equal(res, TF_PARSE_BAD);
    assert_int_equal(i, TF_HS_HEADER_LEN); /* on the header's last byte */
    assert_true(h.stopped);
    assert_int_equal(l.n, 0);
    tf_hs_reader_release(&h);

    /* A cap of zero refuses every non-empty message. */
    static const uint8_t one[] = {TF_HS_FINISHED, 0, 0, 1, 0xaa};
    tf_hs_reader_init(&h, 0);
    assert_int_equal(tf_hs_feed(&h, one, sizeof(one), log_cb, &l), TF_PARSE_BAD);
    assert_string_equal(h.error,
                        "handshake message type 20 of 1 bytes exceeds the 0-byte cap");
    tf_hs_reader_release(&h);
}

/* A callback returning false stops the reader, without an error. */
static void
test_callback_stops(void **state)
{
    struct msgs m;
    (void)state;

    msgs_build(&m, flight, N_FLIGHT);
    for (size_t k = 0; k < N_FLIGHT; k++) {
        for (size_t cut = 0; cut <= m.len; cut += 7) {
            struct tf_hs_reader h;
            struct log l;
            tf_hs_reader_init(&h, CAP);
            log_init(&l, &m);
            l.stop_at = k;
            assert_int_equal(feed_records(&h, &m, &cut, 1, &l), TF_PARSE_OK);
            assert_log(&l, flight, k + 1);
            assert_true(h.stopped);
            assert_string_equal(h.error, "");
            /* Still stopped on later records. */
            l.stop_at = SIZE_MAX;
            assert_int_equal(tf_hs_feed(&h, m.p, m.len, log_cb, &l), TF_PARSE_OK);
            assert_int_equal(l.n, k + 1);
            tf_hs_reader_release(&h);
        }
    }
    msgs_free(&m);
}

/* tf_hs_pending follows the bytes waiting, including after completion. */
static void
test_pending(void **state)
{
    static const uint8_t two[] = {
        TF_HS_SERVER_HELLO, 0, 0, 2, 'h', 'i',
        TF_HS_SERVER_HELLO_DONE, 0, 0, 0,
    };
    struct tf_hs_reader h;
    struct log l;
    (void)state;

    tf_hs_reader_init(&h, CAP);
    log_init(&l, NULL);
    assert_false(tf_hs_pending(&h));
    /* Whole message plus 1 header byte of the next: that byte is pending. */
    assert_int_equal(tf_hs_feed(&h, two, 7, log_cb, &l), TF_PARSE_OK);
    assert_int_equal(l.n, 1);
    assert_true(tf_hs_pending(&h));
    assert_int_equal(tf_hs_feed(&h, two + 7, 3, log_cb, &l), TF_PARSE_OK);
    assert_int_equal(l.n, 2);
    assert_false(tf_hs_pending(&h));
    /* A body byte short. */
    assert_int_equal(tf_hs_feed(&h, two, 5, log_cb, &l), TF_PARSE_OK);
    assert_true(tf_hs_pending(&h));
    assert_int_equal(tf_hs_feed(&h, two + 5, 1, log_cb, &l), TF_PARSE_OK);
    assert_false(tf_hs_pending(&h));
    assert_int_equal(l.n, 3);
    assert_int_equal(h.messages, 3);
    tf_hs_reader_release(&h);
    assert_false(tf_hs_pending(&h));
}

/* Unknown message types are reassembled like any other. */
static void
test_unknown_types(void **state)
{
    static const struct msg_spec odd[] = {
        {0xff, 3}, {0x00, 0}, {TF_HS_MESSAGE_HASH, 32}, {99, 1},
    };
    (void)state;
    check_all_cuts(odd, sizeof(odd) / sizeof(odd[0]));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_record),
        cmocka_unit_test(test_record_per_message),
        cmocka_unit_test(test_split_everywhere),
        cmocka_unit_test(test_message_over_many_records),
        cmocka_unit_test(test_header_split),
        cmocka_unit_test(test_zero_length),
        cmocka_unit_test(test_cap_exact),
        cmocka_unit_test(test_cap_exceeded),
        cmocka_unit_test(test_cap_huge_length),
        cmocka_unit_test(test_callback_stops),
        cmocka_unit_test(test_pending),
        cmocka_unit_test(test_unknown_types),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
