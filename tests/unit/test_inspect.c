/*
 * test_inspect.c — unit tests for the bystander's view of a connection
 * (inspect.h), driven by real handshakes captured from OpenSSL and GnuTLS
 * (tests/data/, see its README.md).
 *
 * Replay order.  A capture holds each direction's bytes but not their
 * timing, and what the inspector reports depends on the order in which the
 * two directions arrive (it stops reporting application data once both
 * handshakes are over).  Each case therefore carries a schedule in
 * conversation order, counted in records: "C1 S4 C3 S3" means the client's
 * first record (ClientHello), the server's next four (ServerHello ..
 * ServerHelloDone), the client's next three (ClientKeyExchange,
 * ChangeCipherSpec, Finished), the server's next three (NewSessionTicket,
 * ChangeCipherSpec, Finished).  Each schedule ends with the record that
 * completes the handshake, so the test can check that
 * tf_inspect_handshake_done() turns true exactly there.  Whatever is left
 * (application data, close_notify) is then fed, client side first.  The
 * schedules follow RFC 5246 §7.3 and RFC 8446 §2 flights as each peer
 * actually sent them (e.g. GnuTLS asks for a client certificate, so its
 * server flight has one more message).
 *
 * Every case is replayed three ways: a record per call, each scheduled
 * step in one call, and one byte per call; the events (names, directions
 * and all fields) must be identical.  Negative cases: HTTP, SSLv2 and
 * random bytes, alerts in clear (well-formed, empty, odd-sized), truncated
 * streams, a handshake message over the cap, a bad header mid-stream.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testdata.h"
#include "tlsfault/inspect.h"
#include "tlsfault/record.h"

#define CAP 65536
#define MAX_EVENTS 256
#define MAX_RECORDS 64
#define MAX_LABELS 16

/* ------------------------------------------------------------ event log */

struct ev {
    char name[32];
    enum tf_dir dir;
    json_t *fields;
};

struct evlog {
    struct ev e[MAX_EVENTS];
    size_t n;
};

static void
evlog_emit(void *arg, const char *event, enum tf_dir dir, json_t *fields)
{
    struct evlog *l = arg;
    assert_non_null(event);
    assert_non_null(fields);
    assert_true(dir == TF_DIR_C2S || dir == TF_DIR_S2C);
    assert_true(l->n < MAX_EVENTS);
    snprintf(l->e[l->n].name, sizeof(l->e[l->n].name), "%s", event);
    l->e[l->n].dir = dir;
    l->e[l->n].fields = fields;
    l->n++;
}

static void
evlog_clear(struct evlog *l)
{
    for (size_t i = 0; i < l->n; i++)
        json_decref(l->e[i].fields);
    l->n = 0;
}

static struct evlog *
evlog_new(void)
{
    struct evlog *l = calloc(1, sizeof(*l));
    assert_non_null(l);
    return l;
}

static void
evlog_free(struct evlog *l)
{
    evlog_clear(l);
    free(l);
}

static const char *
field_str(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/*
 * A short label for an event: "handshake:client_hello", "ccs",
 * "encrypted:application_data", "alert:handshake_failure", "non_tls:http".
 */
static void
ev_label(const struct ev *e, char *buf, size_t len)
{
    const char *detail = NULL;
    if (strcmp(e->name, "handshake") == 0)
        detail = field_str(e->fields, "type") ? field_str(e->fields, "type") : "error";
    else if (strcmp(e->name, "encrypted") == 0)
        detail = field_str(e->fields, "content_type");
    else if (strcmp(e->name, "alert") == 0)
        detail = field_str(e->fields, "description") ? field_str(e->fields, "description")
                                                     : "malformed";
    else if (strcmp(e->name, "non_tls") == 0)
        detail = field_str(e->fields, "kind");
    else if (strcmp(e->name, "change_cipher_spec") == 0) {
        snprintf(buf, len, "ccs");
        return;
    }
    snprintf(buf, len, "%s:%s", e->name, detail ? detail : "?");
}

/* The labels of one direction's events must be exactly want (NULL-terminated). */
static void
assert_labels(const struct evlog *l, enum tf_dir dir, const char *const *want, const char *what)
{
    size_t k = 0;
    char label[96];
    for (size_t i = 0; i < l->n; i++) {
        if (l->e[i].dir != dir)
            continue;
        ev_label(&l->e[i], label, sizeof(label));
        if (want[k] == NULL)
            fail_msg("%s %s: unexpected event %zu \"%s\"", what, tf_dir_name(dir), k, label);
        if (strcmp(label, want[k]) != 0)
            fail_msg("%s %s: event %zu is \"%s\", want \"%s\"", what, tf_dir_name(dir), k,
                     label, want[k]);
        k++;
    }
    if (want[k] != NULL)
        fail_msg("%s %s: missing event %zu \"%s\"", what, tf_dir_name(dir), k, want[k]);
}

/* Two logs hold the same events in the same order, fields included. */
static void
assert_logs_equal(const struct evlog *a, const struct evlog *b, const char *what)
{
    if (a->n != b->n)
        fail_msg("%s: %zu events, want %zu", what, a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        if (strcmp(a->e[i].name, b->e[i].name) != 0 || a->e[i].dir != b->e[i].dir ||
            !json_equal(a->e[i].fields, b->e[i].fields)) {
            char *x = json_dumps(a->e[i].fields, JSON_COMPACT | JSON_SORT_KEYS);
            char *y = json_dumps(b->e[i].fields, JSON_COMPACT | JSON_SORT_KEYS);
            fail_msg("%s: event %zu differs: %s %s vs %s %s", what, i, a->e[i].name, x,
                     b->e[i].name, y);
        }
    }
}

/* ------------------------------------------------------------ captures */

/* One direction of a capture, cut at its record boundaries. */
struct side {
    uint8_t *p;
    size_t len;
    size_t rec_start[MAX_RECORDS + 1]; /* rec_start[nrec] == len */
    size_t nrec;
};

static void
side_load(struct side *s, const char *name, const char *dir)
{
    char file[128];
    snprintf(file, sizeof(file), "%s.%s.bin", name, dir);
    memset(s, 0, sizeof(*s));
    if (!tf_testdata_load(file, &s->p, &s->len))
        fail_msg("cannot load tests/data/%s (set TF_SRCDIR)", file);
    size_t at = 0;
    while (at + TF_RECORD_HEADER_LEN <= s->len) {
        assert_true(s->nrec < MAX_RECORDS);
        s->rec_start[s->nrec++] = at;
        at += TF_RECORD_HEADER_LEN + (((size_t)s->p[at + 3] << 8) | s->p[at + 4]);
    }
    assert_int_equal(at, s->len); /* the capture is whole records */
    s->rec_start[s->nrec] = s->len;
}

static void
side_free(struct side *s)
{
    free(s->p);
    memset(s, 0, sizeof(*s));
}

/* How each scheduled step is handed to tf_inspect_feed. */
enum feed_mode {
    FEED_RECORDS, /* one call per record */
    FEED_STEPS,   /* one call per scheduled step (several records) */
    FEED_BYTES,   /* one call per byte */
};

static void
feed_range(struct tf_inspect *ins, enum tf_dir dir, const uint8_t *p, size_t n,
           const size_t *rec_start, enum feed_mode mode)
{
    switch (mode) {
    case FEED_STEPS:
        tf_inspect_feed(ins, dir, p, n);
        break;
    case FEED_BYTES:
        for (size_t i = 0; i < n; i++)
            tf_inspect_feed(ins, dir, p + i, 1);
        break;
    case FEED_RECORDS:
        for (const size_t *r = rec_start; n > 0; r++) {
            size_t len = r[1] - r[0];
            tf_inspect_feed(ins, dir, p, len);
            p += len;
            n -= len;
        }
        break;
    }
}

/*
 * Replays a capture by its schedule.  done_at_end: check that the handshake
 * completes on the schedule's very last record and not before.
 */
static void
replay(struct tf_inspect *ins, struct side *c, struct side *s, const char *schedule,
       enum feed_mode mode, bool done_at_end)
{
    size_t next[2] = {0, 0};
    struct side *sides[2] = {c, s};
    const char *p = schedule;

    while (*p) {
        if (*p == ' ') {
            p++;
            continue;
        }
        assert_true(*p == 'C' || *p == 'S');
        enum tf_dir dir = *p == 'C' ? TF_DIR_C2S : TF_DIR_S2C;
        char *end;
        unsigned long count = strtoul(p + 1, &end, 10);
        assert_true(end != p + 1 && count > 0);
        p = end;
        struct side *sd = sides[dir];
        assert_true(next[dir] + count <= sd->nrec);
        size_t from = sd->rec_start[next[dir]];
        size_t to = sd->rec_start[next[dir] + count];
        bool last_step = *p == '\0';
        if (done_at_end && last_step && mode != FEED_STEPS) {
            /* Everything but the last record: still not done. */
            size_t before = sd->rec_start[next[dir] + count - 1];
            feed_range(ins, dir, sd->p + from, before - from, &sd->rec_start[next[dir]], mode);
            if (tf_inspect_handshake_done(ins))
                fail_msg("schedule \"%s\": handshake done before its last record", schedule);
            feed_range(ins, dir, sd->p + before, to - before,
                       &sd->rec_start[next[dir] + count - 1], mode);
        } else {
            if (done_at_end && tf_inspect_handshake_done(ins))
                fail_msg("schedule \"%s\": handshake done before its last step", schedule);
            feed_range(ins, dir, sd->p + from, to - from, &sd->rec_start[next[dir]], mode);
        }
        next[dir] += count;
    }
    if (done_at_end && !tf_inspect_handshake_done(ins))
        fail_msg("schedule \"%s\": handshake not done after it", schedule);
    /* The rest of the conversation. */
    for (int d = 0; d < 2; d++) {
        struct side *sd = sides[d];
        size_t from = sd->rec_start[next[d]];
        feed_range(ins, (enum tf_dir)d, sd->p + from, sd->len - from, &sd->rec_start[next[d]],
                   mode);
    }
}

/* ------------------------------------------------------------ the cases */

struct capture_case {
    const char *name;
    const char *schedule;
    const char *c2s[MAX_LABELS];
    const char *s2c[MAX_LABELS];
    const char *version;
    const char *cipher_suite;
    const char *sni;
    bool resumed;
    bool hrr;
    bool complete;
    const char *stage;
    size_t alerts;
};

#define CH "handshake:client_hello"
#define SH "handshake:server_hello"
#define CERT "handshake:certificate"
#define CS "handshake:certificate_status"
#define SKE "handshake:server_key_exchange"
#define CR "handshake:certificate_request"
#define SHD "handshake:server_hello_done"
#define CKE "handshake:client_key_exchange"
#define CV "handshake:certificate_verify"
#define NST "handshake:new_session_ticket"
#define HRR "handshake:hello_retry_request"
#define ENC_HS "encrypted:handshake"
#define ENC_APP "encrypted:application_data"
#define ENC_ALERT "encrypted:alert"

#define ECDHE_RSA "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
#define ECDHE_ECDSA "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"

/* TLS 1.2 full handshake as both OpenSSL and GnuTLS clients send it. */
#define C12 {CH, CKE, "ccs", ENC_HS, ENC_ALERT}
#define S12 {SH, CERT, SKE, SHD, NST, "ccs", ENC_HS, ENC_ALERT}

static const struct capture_case cases[] = {
    {"openssl-tls13", "C1 S6 C2", {CH, "ccs", ENC_APP},
     {SH, "ccs", ENC_APP, ENC_APP, ENC_APP, ENC_APP}, "TLS 1.3", "TLS_AES_256_GCM_SHA384",
     "server.lab.test", false, false, true, "handshake complete", 0},
    {"openssl-tls13-hrr", "C1 S2 C2 S5 C1", {CH, "ccs", CH, ENC_APP},
     {HRR, "ccs", SH, ENC_APP, ENC_APP, ENC_APP, ENC_APP}, "TLS 1.3", "TLS_AES_256_GCM_SHA384",
     "server.lab.test", false, true, true, "handshake complete", 0},
    {"openssl-tls12-ecdhe-rsa", "C1 S4 C3 S3", C12, S12, "TLS 1.2", ECDHE_RSA,
     "server.lab.test", false, false, true, "handshake complete", 2},
    {"openssl-tls12-ecdhe-ecdsa", "C1 S4 C3 S3", C12, S12, "TLS 1.2", ECDHE_ECDSA,
     "ec.lab.test", false, false, true, "handshake complete", 2},
    {"openssl-tls12-ed25519", "C1 S4 C3 S3", C12, S12, "TLS 1.2", ECDHE_ECDSA, "ed.lab.test",
     false, false, true, "handshake complete", 2},
    {"openssl-tls12-dhe", "C1 S4 C3 S3", C12, S12, "TLS 1.2",
     "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", "server.lab.test", false, false, true,
     "handshake complete", 2},
    {"openssl-tls12-ocsp", "C1 S5 C3 S3", C12, {SH, CERT, CS, SKE, SHD, NST, "ccs", ENC_HS,
     ENC_ALERT}, "TLS 1.2", ECDHE_RSA, "server.lab.test", false, false, true,
     "handshake complete", 2},
    {"openssl-tls12-client-auth", "C1 S5 C5 S3", {CH, CERT, CKE, CV, "ccs", ENC_HS, ENC_ALERT},
     {SH, CERT, SKE, CR, SHD, NST, "ccs", ENC_HS, ENC_ALERT}, "TLS 1.2", ECDHE_RSA,
     "server.lab.test", false, false, true, "handshake complete", 2},
    {"openssl-tls12-resumed", "C1 S3 C2", {CH, "ccs", ENC_HS, ENC_ALERT},
     {SH, "ccs", ENC_HS, ENC_ALERT}, "TLS 1.2", ECDHE_RSA, "server.lab.test", true, false, true,
     "handshake complete", 2},
    {"openssl-tls12-no-shared-cipher", "C1 S1", {CH}, {"alert:handshake_failure"}, NULL, NULL,
     "server.lab.test", false, false, false, "after alert handshake_failure from server", 1},
    {"gnutls-openssl-tls13", "C1 S6 C2", {CH, "ccs", ENC_APP},
     {SH, "ccs", ENC_APP, ENC_APP, ENC_APP, ENC_APP}, "TLS 1.3", "TLS_AES_256_GCM_SHA384",
     "server.lab.test", false, false, true, "handshake complete", 0},
    {"gnutls-openssl-tls12", "C1 S4 C3 S3", C12, S12, "TLS 1.2", ECDHE_RSA, "server.lab.test",
     false, false, true, "handshake complete", 2},
    /*
     * GnuTLS servers ask for a client certificate and OpenSSL sends an empty
     * one, so the client's first encrypted record is its Certificate, not its
     * Finished.  A bystander cannot tell them apart (the CertificateRequest
     * was encrypted), so the handshake counts as done one record early.
     */
    {"openssl-gnutls-tls13", "C1 S7 C2", {CH, "ccs", ENC_APP},
     {SH, "ccs", ENC_APP, ENC_APP, ENC_APP, ENC_APP, ENC_APP}, "TLS 1.3",
     "TLS_AES_256_GCM_SHA384", "server.lab.test", false, false, true, "handshake complete", 0},
    {"openssl-gnutls-tls12", "C1 S5 C4 S3", {CH, CERT, CKE, "ccs", ENC_HS, ENC_ALERT},
     {SH, CERT, SKE, CR, SHD, NST, "ccs", ENC_HS, ENC_ALERT}, "TLS 1.2", ECDHE_ECDSA,
     "ec.lab.test", false, false, true, "handshake complete", 2},
};
#define N_CASES (sizeof(cases) / sizeof(cases[0]))

static const struct capture_case *
case_by_name(const char *name)
{
    for (size_t i = 0; i < N_CASES; i++)
        if (strcmp(cases[i].name, name) == 0)
            return &cases[i];
    fail_msg("no case %s", name);
    return NULL;
}

static void
assert_summary(const struct tf_inspect *ins, const struct capture_case *c)
{
    json_t *sum = json_object();
    char stage[128];

    tf_inspect_summarize(ins, sum);
    if (c->version) {
        assert_string_equal(field_str(sum, "version"), c->version);
        assert_string_equal(field_str(sum, "cipher_suite"), c->cipher_suite);
    } else {
        assert_null(json_object_get(sum, "version"));
        assert_null(json_object_get(sum, "cipher_suite"));
    }
    assert_string_equal(field_str(sum, "sni"), c->sni);
    assert_string_equal(field_str(sum, "handshake"), c->complete ? "complete" : "incomplete");
    if (c->resumed)
        assert_true(json_is_true(json_object_get(sum, "resumed")));
    else
        assert_false(json_is_true(json_object_get(sum, "resumed")));
    if (c->hrr)
        assert_true(json_is_true(json_object_get(sum, "hello_retry_request")));
    else
        assert_null(json_object_get(sum, "hello_retry_request"));
    assert_non_null(json_object_get(sum, "client_max_version"));
    assert_null(json_object_get(sum, "non_tls"));
    json_t *last = json_object_get(sum, "last_message");
    assert_true(json_is_object(last));
    assert_int_equal(json_array_size(json_object_get(sum, "alerts")), c->alerts);
    tf_inspect_stage(ins, stage, sizeof(stage));
    assert_string_equal(stage, c->stage);
    assert_int_equal(tf_inspect_handshake_done(ins), c->complete);
    /* A TLS stream is never idle: the flow keeps skimming headers. */
    assert_false(tf_inspect_idle(ins, TF_DIR_C2S));
    assert_false(tf_inspect_idle(ins, TF_DIR_S2C));
    json_decref(sum);
}

/* An inspector that has seen one case in one mode (it keeps none of the bytes). */
static struct tf_inspect *
replayed(const struct capture_case *c, enum feed_mode mode, struct evlog *log)
{
    struct side cs, ss;
    side_load(&cs, c->name, "c2s");
    side_load(&ss, c->name, "s2c");
    struct tf_inspect *ins = tf_inspect_new(CAP, evlog_emit, log);
    assert_non_null(ins);
    replay(ins, &cs, &ss, c->schedule, mode, c->complete);
    side_free(&cs);
    side_free(&ss);
    return ins;
}

/* Replays one case in one mode; the caller owns the log. */
static void
run_case(const struct capture_case *c, enum feed_mode mode, struct evlog *log)
{
    struct tf_inspect *ins = replayed(c, mode, log);
    assert_labels(log, TF_DIR_C2S, c->c2s, c->name);
    assert_labels(log, TF_DIR_S2C, c->s2c, c->name);
    assert_summary(ins, c);
    tf_inspect_free(ins);
}

/* Every capture, record by record, step by step and byte by byte. */
static void
test_captures(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_CASES; i++) {
        struct evlog *by_record = evlog_new(), *by_step = evlog_new(), *by_byte = evlog_new();
        char what[128];
        run_case(&cases[i], FEED_RECORDS, by_record);
        run_case(&cases[i], FEED_STEPS, by_step);
        run_case(&cases[i], FEED_BYTES, by_byte);
        snprintf(what, sizeof(what), "%s, steps vs records", cases[i].name);
        assert_logs_equal(by_step, by_record, what);
        snprintf(what, sizeof(what), "%s, bytes vs records", cases[i].name);
        assert_logs_equal(by_byte, by_record, what);
        evlog_free(by_record);
        evlog_free(by_step);
        evlog_free(by_byte);
    }
}

/* The fields that matter in the events themselves, not only their names. */
static void
test_capture_fields(void **state)
{
    (void)state;
    uint8_t *ch;
    size_t ch_len;
    if (!tf_testdata_load("openssl-tls12-ecdhe-rsa.client_hello.bin", &ch, &ch_len))
        fail_msg("cannot load the ClientHello body");
    free(ch);
    struct evlog *log = evlog_new();
    run_case(case_by_name("openssl-tls12-ecdhe-rsa"), FEED_RECORDS, log);
    size_t handshakes = 0;
    for (size_t i = 0; i < log->n; i++) {
        const json_t *f = log->e[i].fields;
        if (strcmp(log->e[i].name, "handshake") == 0) {
            handshakes++;
            assert_true(json_is_integer(json_object_get(f, "length")));
            assert_null(json_object_get(f, "malformed"));
        } else if (strcmp(log->e[i].name, "change_cipher_spec") == 0) {
            assert_int_equal(json_integer_value(json_object_get(f, "length")), 1);
        } else if (strcmp(log->e[i].name, "encrypted") == 0) {
            assert_true(json_integer_value(json_object_get(f, "length")) > 0);
        }
        if (strcmp(field_str(f, "type") ? field_str(f, "type") : "", "server_hello_done") == 0)
            assert_int_equal(json_integer_value(json_object_get(f, "length")), 0);
        if (strcmp(field_str(f, "type") ? field_str(f, "type") : "", "client_hello") == 0)
            assert_int_equal(json_integer_value(json_object_get(f, "length")), ch_len);
    }
    assert_int_equal(handshakes, 7);
    evlog_free(log);

    /* The summary's alerts after a TLS 1.2 close: both encrypted, with their direction. */
    struct side cs, ss;
    log = evlog_new();
    side_load(&cs, "openssl-tls12-ecdhe-rsa", "c2s");
    side_load(&ss, "openssl-tls12-ecdhe-rsa", "s2c");
    struct tf_inspect *ins = tf_inspect_new(CAP, evlog_emit, log);
    assert_non_null(ins);
    replay(ins, &cs, &ss, "C1 S4 C3 S3", FEED_RECORDS, true);
    json_t *sum = json_object();
    tf_inspect_summarize(ins, sum);
    json_t *alerts = json_object_get(sum, "alerts");
    assert_int_equal(json_array_size(alerts), 2);
    assert_string_equal(field_str(json_array_get(alerts, 0), "dir"), "c2s");
    assert_string_equal(field_str(json_array_get(alerts, 1), "dir"), "s2c");
    for (size_t i = 0; i < 2; i++) {
        json_t *a = json_array_get(alerts, i);
        assert_true(json_is_true(json_object_get(a, "encrypted")));
        /* An encrypted close_notify: 2 bytes + 8 explicit nonce + 16 tag (AES-GCM). */
        assert_int_equal(json_integer_value(json_object_get(a, "length")), 26);
    }
    json_t *last = json_object_get(sum, "last_message");
    assert_string_equal(field_str(last, "dir"), "s2c");
    json_decref(sum);
    tf_inspect_free(ins);
    side_free(&cs);
    side_free(&ss);
    evlog_free(log);
}

/* The order of the two directions after the handshake does not matter. */
static void
test_capture_rest_order(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_CASES; i++) {
        const struct capture_case *c = &cases[i];
        if (!c->complete)
            continue;
        struct side cs, ss;
        struct evlog *log = evlog_new();
        side_load(&cs, c->name, "c2s");
        side_load(&ss, c->name, "s2c");
        struct tf_inspect *ins = tf_inspect_new(CAP, evlog_emit, log);
        assert_non_null(ins);
        /* Swap the sides for the tail: the server's leftovers first. */
        struct side *sides[2] = {&cs, &ss};
        size_t next[2] = {0, 0};
        const char *p = c->schedule;
        while (*p) {
            if (*p == ' ') {
                p++;
                continue;
            }
            int d = *p == 'C' ? 0 : 1;
            char *end;
            unsigned long n = strtoul(p + 1, &end, 10);
            p = end;
            size_t from = sides[d]->rec_start[next[d]], to = sides[d]->rec_start[next[d] + n];
            tf_inspect_feed(ins, (enum tf_dir)d, sides[d]->p + from, to - from);
            next[d] += n;
        }
        for (int d = 1; d >= 0; d--) {
            size_t from = sides[d]->rec_start[next[d]];
            tf_inspect_feed(ins, (enum tf_dir)d, sides[d]->p + from, sides[d]->len - from);
        }
        assert_labels(log, TF_DIR_C2S, c->c2s, c->name);
        assert_labels(log, TF_DIR_S2C, c->s2c, c->name);
        tf_inspect_free(ins);
        side_free(&cs);
        side_free(&ss);
        evlog_free(log);
    }
}

/*
 * By default application data after the handshake is counted, not logged:
 * the same replay logs exactly the events of the every-record replay but
 * for those data records, and flow_end's records_after_handshake counts
 * every record that followed the handshake.
 */
/*
 * A sink like the event log's: renders the fields at once and lets go,
 * except every third event's, which it keeps with the text it had then.
 */
struct text_sink {
    char *text[MAX_EVENTS];
    json_t *kept[MAX_EVENTS];
    size_t n;
};

static void
text_sink_emit(void *arg, const char *event, enum tf_dir dir, json_t *fields)
{
    struct text_sink *t = arg;
    assert_true(t->n < MAX_EVENTS);
    char *members = json_dumps(fields, JSON_COMPACT | JSON_PRESERVE_ORDER);
    assert_non_null(members);
    size_t len = strlen(event) + strlen(members) + 16;
    t->text[t->n] = malloc(len);
    snprintf(t->text[t->n], len, "%s %s %s", event, tf_dir_name(dir), members);
    free(members);
    if (t->n % 3 == 2)
        t->kept[t->n] = fields;
    else
        json_decref(fields);
    t->n++;
}

/*
 * The fields objects of small events are filled in again for the next one
 * when the sink let go of them: every event still carries its own values,
 * and one a sink kept is never changed afterwards.
 */
static void
test_small_events_reused(void **state)
{
    (void)state;
    size_t checked = 0;
    for (size_t i = 0; i < N_CASES; i++) {
        const struct capture_case *c = &cases[i];
        struct evlog *ref = evlog_new();
        struct text_sink *sink = calloc(1, sizeof(*sink));
        assert_non_null(sink);
        for (int each = 0; each < 2; each++) {
            struct side cs, ss;
            side_load(&cs, c->name, "c2s");
            side_load(&ss, c->name, "s2c");
            struct tf_inspect *ins = each == 0 ? tf_inspect_new(CAP, evlog_emit, ref)
                                               : tf_inspect_new(CAP, text_sink_emit, sink);
            assert_non_null(ins);
            tf_inspect_set_app_records(ins, true);
            replay(ins, &cs, &ss, c->schedule, FEED_RECORDS, c->complete);
            tf_inspect_free(ins);
            side_free(&cs);
            side_free(&ss);
        }
        assert_int_equal(sink->n, ref->n);
        for (size_t j = 0; j < ref->n; j++) {
            char *members = json_dumps(ref->e[j].fields, JSON_COMPACT | JSON_PRESERVE_ORDER);
            char want[4096];
            snprintf(want, sizeof(want), "%s %s %s", ref->e[j].name, tf_dir_name(ref->e[j].dir),
                     members);
            free(members);
            if (strcmp(want, sink->text[j]) != 0)
                fail_msg("%s: event %zu is \"%s\", want \"%s\"", c->name, j, sink->text[j],
                         want);
            if (sink->kept[j] != NULL) {
                members = json_dumps(sink->kept[j], JSON_COMPACT | JSON_PRESERVE_ORDER);
                if (strstr(sink->text[j], members) == NULL)
                    fail_msg("%s: kept event %zu changed to %s (was \"%s\")", c->name, j,
                             members, sink->text[j]);
                free(members);
                json_decref(sink->kept[j]);
            }
            free(sink->text[j]);
            checked +=
                strncmp(want, "encrypted", 9) == 0 || strncmp(want, "change_cipher", 13) == 0;
        }
        free(sink);
        evlog_free(ref);
    }
    /* The captures hold many small events, not one or two. */
    assert_true(checked > 20);
}

static void
test_app_records_counted(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_CASES; i++) {
        const struct capture_case *c = &cases[i];
        if (!c->complete)
            continue;
        struct evlog *logs[2] = { evlog_new(), evlog_new() };
        json_t *sums[2] = { json_object(), json_object() };
        for (int each = 0; each < 2; each++) {
            struct side cs, ss;
            side_load(&cs, c->name, "c2s");
            side_load(&ss, c->name, "s2c");
            struct tf_inspect *ins = tf_inspect_new(CAP, evlog_emit, logs[each]);
            assert_non_null(ins);
            tf_inspect_set_app_records(ins, each == 1);
            replay(ins, &cs, &ss, c->schedule, FEED_RECORDS, c->complete);
            tf_inspect_summarize(ins, sums[each]);
            tf_inspect_free(ins);
            side_free(&cs);
            side_free(&ss);
        }
        size_t k = 0, dropped = 0;
        char label[96], want[96];
        for (size_t j = 0; j < logs[1]->n; j++) {
            const struct ev *e = &logs[1]->e[j];
            ev_label(e, label, sizeof(label));
            bool data = strcmp(label, "encrypted:application_data") == 0;
            if (k < logs[0]->n) {
                ev_label(&logs[0]->e[k], want, sizeof(want));
                if (strcmp(want, label) == 0 && logs[0]->e[k].dir == e->dir) {
                    k++;
                    continue;
                }
            }
            if (!data)
                fail_msg("%s: event %zu \"%s\" missing by default", c->name, j, label);
            dropped++;
        }
        if (k != logs[0]->n)
            fail_msg("%s: %zu default events, %zu matched", c->name, logs[0]->n, k);
        json_t *after = json_object_get(sums[0], "records_after_handshake");
        if (!json_is_object(after))
            fail_msg("%s: no records_after_handshake in %s", c->name,
                     json_dumps(sums[0], JSON_COMPACT));
        json_int_t counted = json_integer_value(json_object_get(after, "c2s")) +
                             json_integer_value(json_object_get(after, "s2c"));
        if (counted < (json_int_t)dropped)
            fail_msg("%s: %zu data records not logged but only %lld counted", c->name, dropped,
                     (long long)counted);
        assert_true(json_equal(after, json_object_get(sums[1], "records_after_handshake")));
        for (int each = 0; each < 2; each++) {
            evlog_free(logs[each]);
            json_decref(sums[each]);
        }
    }
}

/*
 * Packing the verdict's lists (tf_inspect_pack: the sweep, or at once on a
 * busy worker) changes nothing the verdict sees; only a finished handshake
 * packs, and only once.
 */
static void
test_pack_keeps_facts(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_CASES; i++) {
        const struct capture_case *c = &cases[i];
        struct evlog *log = evlog_new();
        struct tf_inspect *ins = replayed(c, FEED_RECORDS, log);
        json_t *before = json_object(), *after = json_object();
        tf_inspect_facts(ins, before);
        if (tf_inspect_pack(ins) != c->complete)
            fail_msg("%s: pack %s a %s handshake", c->name, c->complete ? "skipped" : "took",
                     c->complete ? "finished" : "unfinished");
        assert_false(tf_inspect_pack(ins)); /* once */
        tf_inspect_facts(ins, after);
        if (!json_equal(before, after)) {
            char *a = json_dumps(before, JSON_COMPACT), *b = json_dumps(after, JSON_COMPACT);
            fail_msg("%s: facts changed by packing:\n%s\n%s", c->name, a, b);
        }
        json_decref(before);
        json_decref(after);
        tf_inspect_free(ins);
        evlog_free(log);
    }
    assert_false(tf_inspect_pack(NULL));
}

/* ------------------------------------------------------------ truncated */

/* The server stops after its Certificate: incomplete, stage names it. */
static void
test_truncated_after_certificate(void **state)
{
    struct side cs, ss;
    struct evlog *log = evlog_new();
    char stage[128];
    (void)state;

    side_load(&cs, "openssl-tls12-ecdhe-rsa", "c2s");
    side_load(&ss, "openssl-tls12-ecdhe-rsa", "s2c");
    struct tf_inspect *ins = tf_inspect_new(CAP, evlog_emit, log);
    assert_non_null(ins);
    tf_inspect_stage(ins, stage, sizeof(stage));
    assert_string_equal(stage, "before any TLS message");

    tf_inspect_feed(ins, TF_DIR_C2S, cs.p, cs.rec_start[1]);
    tf_inspect_stage(ins, stage, sizeof(stage));
    assert_string_equal(stage, "after client_hello from client");

    /* ServerHello, Certificate, and half of the ServerKeyExchange record. */
    size_t cut = ss.rec_start[2] + (ss.rec_start[3] - ss.rec_start[2]) / 2;
    tf_inspect_feed(ins, TF_DIR_S2C, ss.p, cut);
    static const char *const c2s[] = {CH, NULL};
    static const char *const s2c[] = {SH, CERT, NULL};
    assert_labels(log, TF_DIR_C2S, c2s, "truncated");
    assert_labels(log, TF_DIR_S2C, s2c, "truncated");
    assert_false(tf_inspect_handshake_done(ins));
    tf_inspect_stage(ins, stage, sizeof(stage));
    assert_string_equal(stage, "after certificate from server");

    json_t *sum = json_object();
    tf_inspect_summarize(ins, sum);
    assert_string_equal(field_str(sum, "handshake"), "incomplete");
    assert_string_equal(field_str(sum, "version"), "TLS 1.2");
    json_t *last = json_object_get(sum, "last_message");
    assert_string_equal(field_str(last, "dir"), "s2c");
    assert_string_equal(field_str(last, "type"), "certificate");
    assert_null(json_object_get(sum, "resumed"));
    json_decref(sum);
    tf_inspect_free(ins);
    side_free(&cs);
    side_free(&ss);
    evlog_free(log);
}

/* Every prefix of a ClientHello record reports nothing until the last byte. */
static void
test_truncated_client_hello(void **state)
{
    struct side cs;
    char stage[128];
    (void)state;

    side_load(&cs, "openssl-tls13", "c2s");
    size_t ch_end = cs.rec_start[1];
    for (size_t n = 0; n <= ch_end; n++) {
        struct evlog *log = evlog_new();
        struct tf_inspect *ins = tf_inspect_new(CAP, evlog_emit, log);
        assert_non_null(ins);
        if (n)
            tf_inspect_feed(ins, TF_DIR_C2S, cs.p, n);
        assert_int_equal(log->n, n == ch_end ? 1 : 0);
        tf_inspect_stage(ins, stage, sizeof(stage));
        assert_string_equal(stage, n == ch_end ? "after client_hello from client"
                                               : "before any TLS message");
        json_t *sum = json_object();
        tf_inspect_summarize(ins, sum);
        assert_string_equal(field_str(sum, "handshake"), "incomplete");
        if (n < ch_end)
            assert_null(json_object_get(sum, "sni"));
        else
            assert_string_equal(field_str(sum, "sni"), "server.lab.test");
        json_decref(sum);
        tf_inspect_free(ins);
        evlog_free(log);
    }
    side_free(&cs);
}

/* TLS 1.3 with the client's Finished missing: not complete. */
static void
test_truncated_tls13(void **state)
{
    struct side cs, ss;
    struct evlog *log = evlog_new();
    char stage[128];
    (void)state;

    side_load(&cs, "openssl-tls13", "c2s");
    side_load(&ss, "openssl-tls13", "s2c");
    struct tf_inspect *ins = tf_inspect_new(CAP, evlog_emit, log);
    assert_non_null(ins);
    tf_inspect_feed(ins, TF_DIR_C2S, cs.p, cs.rec_start[2]); /* ClientHello, CCS */
    tf_inspect_feed(ins, TF_DIR_S2C, ss.p, ss.len);          /* all of the server */
    assert_false(tf_inspect_handshake_done(ins));
    tf_inspect_stage(ins, stage, sizeof(stage));
    assert_string_equal(stage, "after change_cipher_spec from server");
    json_t *sum = json_object();
    tf_inspect_summarize(ins, sum);
    assert_string_equal(field_str(sum, "handshake"), "incomplete");
    assert_string_equal(field_str(sum, "version"), "TLS 1.3");
    json_decref(sum);
    tf_inspect_free(ins);
    side_free(&cs);
    side_free(&ss);
    evlog_free(log);
}

/* ------------------------------------------------------------ non-TLS */

struct not_tls_case {
    const char *what;
    enum tf_dir dir;
    const char *bytes;
    size_t len;
    const char *kind;
    const char *preview;
};

#define NTC(what, dir, lit, kind, preview) {what, dir, lit, sizeof(lit) - 1, kind, preview}

static const struct not_tls_case not_tls_cases[] = {
    NTC("HTTP request", TF_DIR_C2S, "GET / HTTP/1.1\r\nHost: example\r\n\r\n", "http",
        "GET / HTTP/1.1\\r\\nHost: example\\r\\n\\r\\n"),
    NTC("HTTP response", TF_DIR_S2C, "HTTP/1.1 400 Bad Request\r\n\r\n", "http",
        "HTTP/1.1 400 Bad Request\\r\\n\\r\\n"),
    NTC("SSLv2 hello", TF_DIR_C2S, "\x80\x2e\x01\x03\x01\x00\x15\x00\x00\x00\x10", "sslv2",
        "\\x80.\\x01\\x03\\x01\\x00\\x15\\x00\\x00\\x00\\x10"),
    NTC("random", TF_DIR_C2S, "\x9b\x01\x7f\xe2\x55\x00\x31\xc8", "unknown",
        "\\x9b\\x01\\x7f\\xe2U\\x001\\xc8"),
    NTC("SSH banner", TF_DIR_S2C, "SSH-2.0-OpenSSH_9.6\r\n", "unknown",
        "SSH-2.0-OpenSSH_9.6\\r\\n"),
};

/* One non_tls event with kind, reason and preview; that direction goes idle. */
static void
test_not_tls(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(not_tls_cases) / sizeof(not_tls_cases[0]); i++) {
        const struct not_tls_case *c = &not_tls_cases[i];
        for (int bytewise = 0; bytewise < 2; bytewise++) {
            struct evlog *log = evlog_new();
            struct tf_inspect *ins = tf_inspect_new(CAP, evlog_emit, log);
            assert_non_null(ins);
            const uint8_t *p = (const uint8_t *)c->bytes;
            if (bytewise)
                for (size_t k = 0; k < c->len; k++)
                    tf_inspect_feed(ins, c->dir, p + k, 1);
            else
                tf_inspect_feed(ins, c->dir, p, c->len);
            /* More bytes after the verdict change nothing. */
            tf_inspect_feed(ins, c->dir, p, c->len);

            if (log->n != 1)
                fail_msg("%s: %zu events", c->what, log->n);
            assert_string_equal(log->e[0].name, "non_tls");
            assert_int_equal(log->e[0].dir, c->dir);
            const json_t *f = log->e[0].fields;
            assert_string_equal(field_str(f, "kind"), c->kind);
            assert_non_null(field_str(f, "reason"));
            assert_true(field_str(f, "reason")[0] != '\0');
            assert_int_equal(json_integer_value(json_object_get(f, "offset")), 0);
            const char *preview = field_str(f, "preview");
            assert_non_null(preview);
            if (!bytewise && strcmp(preview, c->preview) != 0)
                fail_msg("%s: preview \"%s\", want \"%s\"", c->what, preview, c->preview);
            /* Byte by byte the verdict may come before all bytes: a prefix. */
            assert_memory_equal(preview, c->preview, strlen(preview));
            assert_true(strlen(preview) > 0);

            assert_true(tf_inspect_idle(ins, c->dir));
            assert_false(tf_inspect_idle(ins, c->dir == TF_DIR_C2S ? TF_DIR_S2C : TF_DIR_C2S));
            json_t *sum = json_object();
            tf_inspect_summarize(ins, sum);
            json_t *nt = json_object_get(sum, "non_tls");
            assert_string_equal(field_str(nt, tf_dir_name(c->dir)), c->kind);
            assert_string_equal(field_str(sum, "handshake"), "incomplete");
            assert_null(json_object_get(sum, "version"));
            json_decref(sum);
            char stage[128];
            tf_inspect_stage(ins, stage, sizeof(stage));
            assert_non_null(strstr(stage, "non_tls"));
            tf_inspect_free(ins);
            evlog_free(log);
        }
    }
}

/* The preview is bounded, and escapes what it shows. */
static void
test_not_tls_long_preview(void **state)
{
    struct evlog *log = evlog_new();
    uint8_t buf[4096];
    (void)state;

    memcpy(buf, "POST /upload HTTP/1.1\r\n", 23);
    for (size_t i = 23; i < sizeof(buf); i++)
        buf[i] = (uint8_t)i;
    struct tf_inspect *ins = tf_inspect_new(CAP, evlog_emit, log);
    assert_non_null(ins);
    tf_inspect_feed(ins, TF_DIR_C2S, buf, sizeof(buf));
    assert_int_equal(log->n, 1);
    const char *preview = field_str(log->e[0].fields, "preview");
    assert_non_null(preview);
    assert_true(strlen(preview) < 48 * 4 + 1);
    assert_memory_equal(preview, "POST /upload HTTP/1.1\\r\\n", 25);
    for (const char *c = preview; *c; c++)
        assert_true(*c >= 0x20 && *c < 0x7f);
    tf_inspect_free(ins);
    evlog_free(log);
}

/* Both directions not TLS: both reported, both idle. */
static void
test_not_tls_both(void **state)
{
    struct evlog *log = evlog_new();
    (void)state;

    struct tf_inspect *ins = tf_inspect_new(CAP, evlog_emit, log);
    assert_non_null(ins);
    tf_inspect_feed(ins, TF_DIR_C2S, (const uint8_t *)"GET / HTTP/1.0\r\n\r\n", 18);
    tf_inspect_feed(ins, TF_DIR_S2C, (const uint8_t *)"HTTP/1.0 200 OK\r\n", 17);
    assert_int_equal(log->n, 2);
    assert_true(tf_inspect_idle(ins, TF_DIR_C2S));
    assert_true(tf_inspect_idle(ins, TF_DIR_S2C));
    json_t *sum = json_object();
    tf_inspect_summarize(ins, sum);
    json_t *nt = json_object_get(sum, "non_tls");
    assert_string_equal(field_str(nt, "c2s"), "http");
    assert_string_equal(field_str(nt, "s2c"), "http");
    json_decref(sum);
    tf_inspect_free(ins);
    evlog_free(log);
}

/* A bad record header after the ClientHello: non_tls "malformed" at its offset. */
static void
test_malformed_mid_stream(void **state)
{
    struct side cs;
    struct evlog *log = evlog_new();
    (void)state;

    side_load(&cs, "openssl-tls13", "c2s");
    size_t ch_end = cs.rec_start[1];
    uint8_t *buf = malloc(ch_end + 8);
    assert_non_null(buf);
    memcpy(buf, cs.p, ch_end);
    memcpy(buf + ch_end, "\x16\x03\x09\x00\x01\x00\xaa\xbb", 8);
    struct tf_inspect *ins = tf_inspect_new(CAP, evlog_emit, log);
    assert_non_null(ins);
    tf_inspect_feed(ins, TF_DIR_C2S, buf, ch_end + 8);
    assert_int_equal(log->n, 2);
    assert_string_equal(log->e[1].name, "non_tls");
    const json_t *f = log->e[1].fields;
    assert_string_equal(field_str(f, "kind"), "malformed");
    assert_string_equal(field_str(f, "reason"), "invalid record version 0x0309");
    assert_int_equal(json_integer_value(json_object_get(f, "offset")), ch_end);
    assert_string_equal(field_str(f, "preview"), "\\x16\\x03\\x09\\x00\\x01");
    assert_true(tf_inspect_idle(ins, TF_DIR_C2S));
    tf_inspect_free(ins);
    free(buf);
    side_free(&cs);
    evlog_free(log);
}

/* ------------------------------------------------------------ alerts in clear */

struct alert_case {
    const char *what;
    const char *record;
    size_t len;
    const char *labels[4];
    const char *level;
    const char *stage;
    size_t summary_alerts;
};

#define AC(what, lit, ...) {what, lit, sizeof(lit) - 1, __VA_ARGS__}

static const struct alert_case alert_cases[] = {
    AC("fatal handshake_failure", "\x15\x03\x03\x00\x02\x02\x28", {"alert:handshake_failure"},
       "fatal", "after alert handshake_failure from server", 1),
    AC("warning close_notify", "\x15\x03\x01\x00\x02\x01\x00", {"alert:close_notify"},
       "warning", "after alert close_notify from server", 1),
    AC("unknown description", "\x15\x03\x03\x00\x02\x02\xee", {"alert:0xee"}, "fatal",
       "after alert 0xee from server", 1),
    AC("empty alert record", "\x15\x03\x03\x00\x00", {"alert:malformed"}, NULL,
       "after alert malformed from server", 1),
    AC("one byte", "\x15\x03\x03\x00\x01\x02", {"alert:malformed"}, "fatal",
       "after alert malformed from server", 1),
    AC("two alerts in one record", "\x15\x03\x03\x00\x04\x01\x00\x02\x28",
       {"alert:close_notify", "alert:handshake_failure"}, "warning",
       "after alert handshake_failure from server", 2),
    AC("three bytes", "\x15\x03\x03\x00\x03\x02\x46\x02",
       {"alert:protocol_version", "alert:malformed"}, "fatal",
       "after alert malformed from server", 2),
};

/*
 * After a real ClientHello, the server answers with an alert record in
 * clear; fed whole and byte by byte.
 */
static void
test_clear_alerts(void **state)
{
    struct side cs;
    (void)state;

    side_load(&cs, "openssl-tls12-ecdhe-rsa", "c2s");
    for (size_t i = 0; i < sizeof(alert_cases) / sizeof(alert_cases[0]); i++) {
        const struct alert_case *a = &alert_cases[i];
        for (int bytewise = 0; bytewise < 2; bytewise++) {
            struct evlog *log = evlog_new();
            struct tf_inspect *ins = tf_inspect_new(CAP, evlog_emit, log);
            assert_non_null(ins);
            tf_inspect_feed(ins, TF_DIR_C2S, cs.p, cs.rec_start[1]);
            if (bytewise)
                for (size_t k = 0; k < a->len; k++)
                    tf_inspect_feed(ins, TF_DIR_S2C, (const uint8_t *)a->record + k, 1);
            else
                tf_inspect_feed(ins, TF_DIR_S2C, (const uint8_t *)a->record, a->len);
            assert_labels(log, TF_DIR_S2C, a->labels, a->what);
            /* The first alert event's fields. */
            const json_t *f = NULL;
            for (size_t k = 0; k < log->n && !f; k++)
                if (strcmp(log->e[k].name, "alert") == 0)
                    f = log->e[k].fields;
            assert_non_null(f);
            if (a->level)
                assert_string_equal(field_str(f, "level"), a->level);
            else
                assert_null(json_object_get(f, "level"));
            if (strcmp(a->labels[0], "alert:malformed") == 0)
                assert_non_null(json_object_get(f, "malformed"));

            char stage[128];
            tf_inspect_stage(ins, stage, sizeof(stage));
            assert_string_equal(stage, a->stage);
            json_t *sum = json_object();
            tf_inspect_summarize(ins, sum);
            json_t *alerts = json_object_get(sum, "alerts");
            assert_int_equal(json_array_size(alerts), a->summary_alerts);
            json_t *first = json_array_get(alerts, 0);
            assert_string_equal(field_str(first, "dir"), "s2c");
            assert_false(json_is_true(json_object_get(first, "encrypted")));
            assert_string_equal(field_str(sum, "handshake"), "incomplete");
            json_decref(sum);
            assert_false(tf_inspect_idle(ins, TF_DIR_S2C));
            tf_inspect_free(ins);
            evlog_free(log);
        }
    }
    side_free(&cs);
}

/* An alert as the very first record of a direction is still an alert. */
static void
test_alert_first(void **state)
{
    struct evlog *log = evlog_new();
    (void)state;

    struct tf_inspect *ins = tf_inspect_new(CAP, evlog_emit, log);
    assert_non_null(ins);
    tf_inspect_feed(ins, TF_DIR_C2S, (const uint8_t *)"\x15\x03\x03\x00\x02\x02\x50", 7);
    assert_int_equal(log->n, 1);
    assert_string_equal(log->e[0].name, "alert");
    assert_int_equal(log->e[0].dir, TF_DIR_C2S);
    assert_string_equal(field_str(log->e[0].fields, "description"), "internal_error");
    char stage[128];
    tf_inspect_stage(ins, stage, sizeof(stage));
    assert_string_equal(stage, "after alert internal_error from client");
    tf_inspect_free(ins);
    evlog_free(log);
}

/*
 * The client rejects the server's flight with an alert in clear.  TLS 1.2:
 * after ServerHelloDone, before the client's ChangeCipherSpec.  TLS 1.3:
 * right after the ServerHello, before the client has handshake keys (as
 * OpenSSL does when the ServerHello itself is unacceptable).  In TLS 1.3
 * every encrypted record has the outer type application_data (RFC 8446
 * §5.2), so a record of type alert is in clear and can be read.
 */
static void
test_client_alert_after_server_flight(void **state)
{
    static const struct {
        const char *name;
        size_t server_records;
        const char *record;
        const char *description;
    } alert_after[] = {
        {"openssl-tls12-ecdhe-rsa", 4, "\x15\x03\x03\x00\x02\x02\x2a", "bad_certificate"},
        {"openssl-tls13", 1, "\x15\x03\x03\x00\x02\x02\x2f", "illegal_parameter"},
    };
    (void)state;

    for (size_t i = 0; i < sizeof(alert_after) / sizeof(alert_after[0]); i++) {
        struct side cs, ss;
        struct evlog *log = evlog_new();
        side_load(&cs, alert_after[i].name, "c2s");
        side_load(&ss, alert_after[i].name, "s2c");
        struct tf_inspect *ins = tf_inspect_new(CAP, evlog_emit, log);
        assert_non_null(ins);
        tf_inspect_feed(ins, TF_DIR_C2S, cs.p, cs.rec_start[1]);
        tf_inspect_feed(ins, TF_DIR_S2C, ss.p, ss.rec_start[alert_after[i].server_records]);
        size_t before = log->n;
        tf_inspect_feed(ins, TF_DIR_C2S, (const uint8_t *)alert_after[i].record, 7);
        char label[96] = "(none)";
        if (log->n == before + 1)
            ev_label(&log->e[before], label, sizeof(label));
        char want[96];
        snprintf(want, sizeof(want), "alert:%s", alert_after[i].description);
        char stage[128];
        tf_inspect_stage(ins, stage, sizeof(stage));
        bool ok = strcmp(label, want) == 0;
        tf_inspect_free(ins);
        side_free(&cs);
        side_free(&ss);
        evlog_free(log);
        if (!ok)
            fail_msg("%s: client's clear alert reported as \"%s\", want \"%s\" (stage \"%s\")",
                     alert_after[i].name, label, want, stage);
    }
}

/* ------------------------------------------------------------ limits */

/*
 * A Certificate over the handshake-message cap: an error event instead of
 * the message, the rest of the handshake still followed to completion, and
 * the summary must not mistake it for a resumed handshake (the server did
 * send a Certificate; it was only too big to reassemble).
 */
static void
test_message_over_cap(void **state)
{
    struct side cs, ss;
    struct evlog *log = evlog_new();
    (void)state;

    side_load(&cs, "openssl-tls12-ecdhe-rsa", "c2s");
    side_load(&ss, "openssl-tls12-ecdhe-rsa", "s2c");
    struct tf_inspect *ins = tf_inspect_new(1024, evlog_emit, log);
    assert_non_null(ins);
    replay(ins, &cs, &ss, "C1 S4 C3 S3", FEED_RECORDS, true);

    /* The error event, right after the ServerHello. */
    const json_t *err = NULL;
    for (size_t i = 0; i < log->n; i++)
        if (log->e[i].dir == TF_DIR_S2C && strcmp(log->e[i].name, "handshake") == 0 &&
            json_object_get(log->e[i].fields, "error"))
            err = log->e[i].fields;
    assert_non_null(err);
    assert_non_null(strstr(field_str(err, "error"), "exceeds the 1024-byte cap"));
    static const char *const c2s[MAX_LABELS] = C12;
    assert_labels(log, TF_DIR_C2S, c2s, "over cap");

    json_t *sum = json_object();
    tf_inspect_summarize(ins, sum);
    assert_string_equal(field_str(sum, "handshake"), "complete");
    assert_string_equal(field_str(sum, "version"), "TLS 1.2");
    bool resumed = json_is_true(json_object_get(sum, "resumed"));
    json_decref(sum);
    tf_inspect_free(ins);
    side_free(&cs);
    side_free(&ss);
    evlog_free(log);
    if (resumed)
        fail_msg("full handshake whose Certificate exceeded the cap reported as resumed");
}

/* A cap just big enough for every message changes nothing. */
static void
test_cap_just_enough(void **state)
{
    (void)state;
    const struct capture_case *c = case_by_name("openssl-tls12-client-auth");
    struct side cs, ss;
    struct evlog *log = evlog_new();
    side_load(&cs, c->name, "c2s");
    side_load(&ss, c->name, "s2c");
    /* Largest clear message: the biggest handshake record body minus its header. */
    size_t biggest = 0;
    struct side *sides[2] = {&cs, &ss};
    for (int d = 0; d < 2; d++)
        for (size_t r = 0; r < sides[d]->nrec; r++) {
            size_t len = sides[d]->rec_start[r + 1] - sides[d]->rec_start[r] -
                         TF_RECORD_HEADER_LEN - 4;
            if (sides[d]->p[sides[d]->rec_start[r]] == TF_CT_HANDSHAKE && len > biggest &&
                len < 16384)
                biggest = len;
        }
    struct tf_inspect *ins = tf_inspect_new(biggest, evlog_emit, log);
    assert_non_null(ins);
    replay(ins, &cs, &ss, c->schedule, FEED_RECORDS, true);
    assert_labels(log, TF_DIR_C2S, c->c2s, "cap just enough");
    assert_labels(log, TF_DIR_S2C, c->s2c, "cap just enough");
    tf_inspect_free(ins);
    side_free(&cs);
    side_free(&ss);
    evlog_free(log);
}

/* ------------------------------------------------------------ misc */

/* One record of type carrying body[0..n) into dir. */
static void
feed_one_record(struct tf_inspect *ins, enum tf_dir dir, uint8_t type, const uint8_t *body,
                size_t n)
{
    uint8_t r[5 + 64] = { type, 3, 3, (uint8_t)(n >> 8), (uint8_t)n };
    assert_true(n <= sizeof(r) - 5);
    memcpy(r + 5, body, n);
    tf_inspect_feed(ins, dir, r, 5 + n);
}

/*
 * The message log the verdict reads: an unknown handshake type by number,
 * alerts with their description (named or not), protected records of one
 * direction folded into one counted entry, and no more than 64 entries.
 */
static void
test_message_log(void **state)
{
    static const uint8_t unknown_hs[] = { 99, 0, 0, 2, 0xab, 0xcd };
    static const uint8_t alert_named[] = { 2, 40 }, alert_odd[] = { 2, 0xee }, ccs[] = { 1 };
    static const uint8_t sealed[24] = { 0 };
    (void)state;
    struct evlog *log = evlog_new();
    struct tf_inspect *ins = tf_inspect_new(CAP, evlog_emit, log);

    feed_one_record(ins, TF_DIR_C2S, TF_CT_HANDSHAKE, unknown_hs, sizeof(unknown_hs));
    feed_one_record(ins, TF_DIR_S2C, TF_CT_CHANGE_CIPHER_SPEC, ccs, sizeof(ccs));
    for (int i = 0; i < 3; i++)
        feed_one_record(ins, TF_DIR_S2C, TF_CT_APPLICATION_DATA, sealed, sizeof(sealed));
    feed_one_record(ins, TF_DIR_C2S, TF_CT_ALERT, alert_named, sizeof(alert_named));
    feed_one_record(ins, TF_DIR_S2C, TF_CT_APPLICATION_DATA, sealed, sizeof(sealed));
    feed_one_record(ins, TF_DIR_C2S, TF_CT_ALERT, alert_odd, sizeof(alert_odd));
    json_t *facts = json_object();
    tf_inspect_facts(ins, facts);
    json_t *want = json_loads(
        "[{\"dir\":\"c2s\",\"type\":\"unknown(99)\"},"
        "{\"dir\":\"s2c\",\"type\":\"change_cipher_spec\"},"
        "{\"dir\":\"s2c\",\"type\":\"encrypted\",\"count\":3},"
        "{\"dir\":\"c2s\",\"type\":\"alert\",\"description\":\"handshake_failure\"},"
        "{\"dir\":\"s2c\",\"type\":\"encrypted\",\"count\":1},"
        "{\"dir\":\"c2s\",\"type\":\"alert\",\"description\":\"0xee\"}]",
        0, NULL);
    assert_non_null(want);
    if (!json_equal(json_object_get(facts, "messages"), want)) {
        char *got = json_dumps(json_object_get(facts, "messages"), JSON_COMPACT);
        fail_msg("message log: %s", got);
    }
    json_decref(want);
    json_decref(facts);

    /* Alternating directions never fold: the log stops at 64 entries. */
    for (int i = 0; i < 200; i++)
        feed_one_record(ins, i % 2 ? TF_DIR_C2S : TF_DIR_S2C, TF_CT_APPLICATION_DATA, sealed,
                        sizeof(sealed));
    facts = json_object();
    tf_inspect_facts(ins, facts);
    assert_int_equal(json_array_size(json_object_get(facts, "messages")), 64);
    json_decref(facts);
    tf_inspect_free(ins);

    /* 64 long alert names make a text past 4 KiB: written on the heap, whole. */
    static const uint8_t long_alert[] = { 2, 113 }; /* bad_certificate_status_response */
    evlog_clear(log);
    ins = tf_inspect_new(CAP, evlog_emit, log);
    for (int i = 0; i < 70; i++)
        feed_one_record(ins, TF_DIR_S2C, TF_CT_ALERT, long_alert, sizeof(long_alert));
    facts = json_object();
    tf_inspect_facts(ins, facts);
    const json_t *msgs = json_object_get(facts, "messages");
    assert_int_equal(json_array_size(msgs), 64);
    assert_string_equal(field_str(json_array_get(msgs, 63), "description"),
                        "bad_certificate_status_response");
    char *text = json_dumps(msgs, JSON_COMPACT);
    assert_true(strlen(text) > 4096);
    free(text);
    json_decref(facts);
    tf_inspect_free(ins);
    evlog_free(log);
}

static void
test_misc(void **state)
{
    struct evlog *log = evlog_new();
    char stage[8];
    (void)state;

    assert_string_equal(tf_dir_name(TF_DIR_C2S), "c2s");
    assert_string_equal(tf_dir_name(TF_DIR_S2C), "s2c");
    tf_inspect_free(NULL);

    struct tf_inspect *ins = tf_inspect_new(CAP, evlog_emit, log);
    assert_non_null(ins);
    /* Nothing fed: nothing reported, nothing idle, a minimal summary. */
    assert_false(tf_inspect_idle(ins, TF_DIR_C2S));
    assert_false(tf_inspect_handshake_done(ins));
    json_t *sum = json_object();
    tf_inspect_summarize(ins, sum);
    assert_string_equal(field_str(sum, "handshake"), "incomplete");
    assert_null(json_object_get(sum, "version"));
    assert_null(json_object_get(sum, "sni"));
    assert_null(json_object_get(sum, "alerts"));
    assert_null(json_object_get(sum, "last_message"));
    json_decref(sum);
    /* A small stage buffer is truncated, terminated. */
    tf_inspect_stage(ins, stage, sizeof(stage));
    assert_string_equal(stage, "before ");
    assert_int_equal(log->n, 0);
    tf_inspect_free(ins);
    evlog_free(log);
}

/*
 * Garbage after a complete TLS 1.3 handshake: records are only skimmed,
 * yet a bad header still ends inspection of that direction.
 */
static void
test_garbage_after_handshake(void **state)
{
    const struct capture_case *c = case_by_name("openssl-tls13");
    struct side cs, ss;
    struct evlog *log = evlog_new();
    (void)state;

    side_load(&cs, c->name, "c2s");
    side_load(&ss, c->name, "s2c");
    struct tf_inspect *ins = tf_inspect_new(CAP, evlog_emit, log);
    assert_non_null(ins);
    replay(ins, &cs, &ss, c->schedule, FEED_RECORDS, true);
    size_t before = log->n;
    tf_inspect_feed(ins, TF_DIR_S2C, (const uint8_t *)"\x00\x00\x00\x00\x00\x00", 6);
    assert_int_equal(log->n, before + 1);
    assert_string_equal(log->e[before].name, "non_tls");
    assert_string_equal(field_str(log->e[before].fields, "kind"), "malformed");
    assert_true(tf_inspect_idle(ins, TF_DIR_S2C));
    assert_false(tf_inspect_idle(ins, TF_DIR_C2S));
    /* An encrypted alert record type after the handshake is still noticed. */
    tf_inspect_feed(ins, TF_DIR_C2S, (const uint8_t *)"\x15\x03\x03\x00\x02\xaa\xbb", 7);
    assert_int_equal(log->n, before + 2);
    assert_string_equal(log->e[before + 1].name, "encrypted");
    assert_string_equal(field_str(log->e[before + 1].fields, "content_type"), "alert");
    tf_inspect_free(ins);
    side_free(&cs);
    side_free(&ss);
    evlog_free(log);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_captures),
        cmocka_unit_test(test_capture_fields),
        cmocka_unit_test(test_capture_rest_order),
        cmocka_unit_test(test_app_records_counted),
        cmocka_unit_test(test_small_events_reused),
        cmocka_unit_test(test_pack_keeps_facts),
        cmocka_unit_test(test_truncated_after_certificate),
        cmocka_unit_test(test_truncated_client_hello),
        cmocka_unit_test(test_truncated_tls13),
        cmocka_unit_test(test_not_tls),
        cmocka_unit_test(test_not_tls_long_preview),
        cmocka_unit_test(test_not_tls_both),
        cmocka_unit_test(test_malformed_mid_stream),
        cmocka_unit_test(test_clear_alerts),
        cmocka_unit_test(test_alert_first),
        cmocka_unit_test(test_client_alert_after_server_flight),
        cmocka_unit_test(test_message_over_cap),
        cmocka_unit_test(test_cap_just_enough),
        cmocka_unit_test(test_message_log),
        cmocka_unit_test(test_misc),
        cmocka_unit_test(test_garbage_after_handshake),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
