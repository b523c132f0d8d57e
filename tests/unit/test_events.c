/*
 * test_events.c — unit tests for the event sinks (events.h).
 *
 * Events are written to temporary files, read back and checked the way a
 * consumer would: each JSON line parses on its own (JSON Lines) and starts
 * with ts (RFC 3339, microseconds, UTC "Z"), flow, event and dir; each text
 * line shows the flow id, the direction arrow, the event and its type.
 * Lines written from several threads must stay whole.  The text renderer
 * must truncate safely into small buffers, and opening a sink that cannot
 * be opened must fail with a reason.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tlsfault/events.h"

/* ------------------------------------------------------------ helpers */

/* A temporary directory per test, removed with what is in it. */
struct tmp {
    char dir[256];
    char text[300];
    char json[300];
};

static int
setup_tmp(void **state)
{
    struct tmp *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return -1;
    const char *base = getenv("TMPDIR");
    snprintf(t->dir, sizeof(t->dir), "%s/tf-events-XXXXXX", base && *base ? base : "/tmp");
    if (mkdtemp(t->dir) == NULL) {
        free(t);
        return -1;
    }
    snprintf(t->text, sizeof(t->text), "%s/events.txt", t->dir);
    snprintf(t->json, sizeof(t->json), "%s/events.jsonl", t->dir);
    *state = t;
    return 0;
}

static int
teardown_tmp(void **state)
{
    struct tmp *t = *state;
    unlink(t->text);
    unlink(t->json);
    rmdir(t->dir);
    free(t);
    return 0;
}

/* Reads a file into a NUL-terminated buffer the caller frees. */
static char *
slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len - 1 == 0) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
    }
    fclose(f);
    buf[len] = '\0';
    return buf;
}

/* Splits buf in place into lines; every line must end with '\n'. */
static size_t
split_lines(char *buf, char **lines, size_t max)
{
    size_t n = 0;
    char *p = buf;
    while (*p) {
        char *nl = strchr(p, '\n');
        assert_non_null(nl); /* no partial last line */
        *nl = '\0';
        assert_true(n < max);
        lines[n++] = p;
        p = nl + 1;
    }
    return n;
}

static bool
all_digits(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] < '0' || p[i] > '9')
            return false;
    return true;
}

/* RFC 3339, UTC, exactly six fractional digits: 2026-11-22T22:25:01.123456Z */
static void
assert_ts(const char *ts)
{
    assert_non_null(ts);
    if (strlen(ts) != 27 || !all_digits(ts, 4) || ts[4] != '-' || !all_digits(ts + 5, 2) ||
        ts[7] != '-' || !all_digits(ts + 8, 2) || ts[10] != 'T' || !all_digits(ts + 11, 2) ||
        ts[13] != ':' || !all_digits(ts + 14, 2) || ts[16] != ':' || !all_digits(ts + 17, 2) ||
        ts[19] != '.' || !all_digits(ts + 20, 6) || ts[26] != 'Z')
        fail_msg("bad timestamp \"%s\"", ts);
    int month = atoi(ts + 5), day = atoi(ts + 8), hour = atoi(ts + 11);
    assert_in_range(month, 1, 12);
    assert_in_range(day, 1, 31);
    assert_in_range(hour, 0, 23);
}

static json_t *
parse_line(const char *line)
{
    json_error_t err;
    json_t *obj = json_loads(line, JSON_REJECT_DUPLICATES, &err);
    if (obj == NULL)
        fail_msg("line does not parse (%s): %s", err.text, line);
    assert_true(json_is_object(obj));
    return obj;
}

/* The first keys of a JSON line, in order: ts, flow, event, then dir if any. */
static void
assert_leading_keys(const char *line, bool with_dir)
{
    static const char ts_key[] = "{\"ts\":\"";
    static const char flow_key[] = "\",\"flow\":";
    static const char event_key[] = ",\"event\":\"";
    static const char dir_key[] = "\",\"dir\":\"";
    const char *p = line;

    assert_memory_equal(p, ts_key, strlen(ts_key));
    p += strlen(ts_key) + 27; /* the timestamp */
    assert_memory_equal(p, flow_key, strlen(flow_key));
    p += strlen(flow_key);
    while (*p >= '0' && *p <= '9')
        p++;
    assert_memory_equal(p, event_key, strlen(event_key));
    p = strchr(p + strlen(event_key), '"');
    assert_non_null(p);
    if (with_dir)
        assert_memory_equal(p, dir_key, strlen(dir_key));
}

/* ------------------------------------------------------------ sinks */

/* Both sinks: events with and without dir and with nested fields. */
static void
test_emit_both(void **state)
{
    struct tmp *t = *state;
    char err[256] = "untouched";
    struct tf_events *ev = tf_events_open(t->text, t->json, err, sizeof(err));
    assert_non_null(ev);

    tf_events_emit(ev, 7, "handshake", "c2s",
                   json_pack("{s:s, s:i, s:s, s:[s,s], s:{s:s, s:i}}", "type", "client_hello",
                             "length", 512, "sni", "server.lab.test", "alpn", "h2", "http/1.1",
                             "key_share", "group", "x25519", "length", 32));
    tf_events_emit(ev, 7, "handshake", "s2c",
                   json_pack("{s:s, s:s}", "type", "server_hello", "cipher_suite",
                             "TLS_AES_256_GCM_SHA384"));
    tf_events_emit(ev, 7, "flow_end", NULL,
                   json_pack("{s:s, s:b, s:n, s:f, s:[{s:s}]}", "handshake", "complete",
                             "resumed", 0, "nothing", "ms", 12.5, "alerts", "dir", "s2c"));
    tf_events_emit(ev, 8, "flow_start", NULL, NULL);
    tf_events_free(ev);

    /* JSON Lines. */
    char *buf = slurp(t->json);
    char *lines[16];
    size_t n = split_lines(buf, lines, 16);
    assert_int_equal(n, 4);
    static const struct {
        long long flow;
        const char *event;
        const char *dir;
        const char *type;
    } want[] = {
        {7, "handshake", "c2s", "client_hello"},
        {7, "handshake", "s2c", "server_hello"},
        {7, "flow_end", NULL, NULL},
        {8, "flow_start", NULL, NULL},
    };
    for (size_t i = 0; i < n; i++) {
        json_t *o = parse_line(lines[i]);
        assert_leading_keys(lines[i], want[i].dir != NULL);
        assert_ts(json_string_value(json_object_get(o, "ts")));
        assert_true(json_is_integer(json_object_get(o, "flow")));
        assert_int_equal(json_integer_value(json_object_get(o, "flow")), want[i].flow);
        assert_string_equal(json_string_value(json_object_get(o, "event")), want[i].event);
        if (want[i].dir)
            assert_string_equal(json_string_value(json_object_get(o, "dir")), want[i].dir);
        else
            assert_null(json_object_get(o, "dir"));
        if (want[i].type)
            assert_string_equal(json_string_value(json_object_get(o, "type")), want[i].type);
        if (i == 0) {
            /* Nested fields survive as they were. */
            json_t *ks = json_object_get(o, "key_share");
            assert_string_equal(json_string_value(json_object_get(ks, "group")), "x25519");
            assert_int_equal(json_integer_value(json_object_get(ks, "length")), 32);
            json_t *alpn = json_object_get(o, "alpn");
            assert_int_equal(json_array_size(alpn), 2);
            assert_string_equal(json_string_value(json_array_get(alpn, 1)), "http/1.1");
            assert_int_equal(json_integer_value(json_object_get(o, "length")), 512);
        }
        if (i == 2) {
            assert_true(json_is_false(json_object_get(o, "resumed")));
            assert_true(json_is_null(json_object_get(o, "nothing")));
            assert_true(json_is_real(json_object_get(o, "ms")));
            assert_string_equal(
                json_string_value(json_object_get(json_array_get(json_object_get(o, "alerts"), 0),
                                                  "dir")),
                "s2c");
        }
        json_decref(o);
    }
    free(buf);

    /* Text: one line per event with flow id, arrow, event, type. */
    buf = slurp(t->text);
    n = split_lines(buf, lines, 16);
    assert_int_equal(n, 4);
    assert_non_null(strstr(lines[0], " #7 "));
    assert_non_null(strstr(lines[0], "C->S"));
    assert_non_null(strstr(lines[0], "handshake client_hello"));
    assert_non_null(strstr(lines[0], "sni=server.lab.test"));
    assert_non_null(strstr(lines[0], "alpn=[h2,http/1.1]"));
    assert_non_null(strstr(lines[0], "group=x25519"));
    assert_null(strstr(lines[0], "S->C"));
    assert_non_null(strstr(lines[1], " #7 "));
    assert_non_null(strstr(lines[1], "S->C"));
    assert_non_null(strstr(lines[1], "handshake server_hello"));
    assert_non_null(strstr(lines[1], "cipher_suite=TLS_AES_256_GCM_SHA384"));
    assert_non_null(strstr(lines[2], " #7 "));
    assert_null(strstr(lines[2], "C->S"));
    assert_null(strstr(lines[2], "S->C"));
    assert_non_null(strstr(lines[2], "flow_end"));
    assert_non_null(strstr(lines[2], "resumed=no"));
    assert_non_null(strstr(lines[3], " #8 "));
    assert_non_null(strstr(lines[3], "flow_start"));
    for (size_t i = 0; i < n; i++) {
        /* Each text line starts with the same timestamp format. */
        char ts[28];
        assert_true(strlen(lines[i]) > 27);
        memcpy(ts, lines[i], 27);
        ts[27] = '\0';
        assert_ts(ts);
        assert_null(strchr(lines[i], '\n'));
    }
    free(buf);
}

/* Files are appended to, not truncated, by a second open. */
static void
test_append(void **state)
{
    struct tmp *t = *state;
    char err[256];
    for (int round = 0; round < 2; round++) {
        struct tf_events *ev = tf_events_open(t->text, t->json, err, sizeof(err));
        assert_non_null(ev);
        tf_events_emit(ev, (uint64_t)round, "flow_start", NULL, NULL);
        tf_events_flush(ev);
        tf_events_free(ev);
    }
    char *lines[8];
    char *buf = slurp(t->json);
    assert_int_equal(split_lines(buf, lines, 8), 2);
    free(buf);
    buf = slurp(t->text);
    assert_int_equal(split_lines(buf, lines, 8), 2);
    assert_non_null(strstr(lines[0], " #0 "));
    assert_non_null(strstr(lines[1], " #1 "));
    free(buf);
}

/* Only a JSON sink (text "none"), then only a text sink (json NULL). */
static void
test_single_sinks(void **state)
{
    struct tmp *t = *state;
    char err[256];

    struct tf_events *ev = tf_events_open("none", t->json, err, sizeof(err));
    assert_non_null(ev);
    tf_events_emit(ev, 3, "alert", "s2c", json_pack("{s:s}", "level", "fatal"));
    tf_events_free(ev);
    char *lines[4];
    char *buf = slurp(t->json);
    assert_int_equal(split_lines(buf, lines, 4), 1);
    json_t *o = parse_line(lines[0]);
    assert_string_equal(json_string_value(json_object_get(o, "level")), "fatal");
    json_decref(o);
    free(buf);
    assert_int_equal(access(t->text, F_OK), -1); /* "none" creates no file */

    ev = tf_events_open(t->text, NULL, err, sizeof(err));
    assert_non_null(ev);
    tf_events_emit(ev, 4, "alert", "c2s", json_pack("{s:s}", "level", "warning"));
    tf_events_free(ev);
    buf = slurp(t->text);
    assert_int_equal(split_lines(buf, lines, 4), 1);
    assert_non_null(strstr(lines[0], "C->S alert"));
    assert_non_null(strstr(lines[0], "level=warning"));
    free(buf);
    /* The JSON file was not written again. */
    buf = slurp(t->json);
    assert_int_equal(split_lines(buf, lines, 4), 1);
    free(buf);
}

/* "none" and NULL everywhere: emits are dropped (fields still freed, for ASan). */
static void
test_none_sinks(void **state)
{
    char err[64];
    (void)state;
    struct tf_events *ev = tf_events_open("none", NULL, err, sizeof(err));
    assert_non_null(ev);
    tf_events_emit(ev, 1, "handshake", "c2s", json_pack("{s:s}", "type", "client_hello"));
    tf_events_emit(ev, 1, "flow_end", NULL, NULL);
    tf_events_flush(ev);
    tf_events_free(ev);

    ev = tf_events_open("none", "none", err, sizeof(err));
    assert_non_null(ev);
    tf_events_emit(ev, 2, "x", NULL, json_object());
    tf_events_free(ev);

    /* A NULL sink set and tf_events_free(NULL) are harmless. */
    tf_events_emit(NULL, 3, "x", "s2c", json_pack("{s:i}", "n", 1));
    tf_events_free(NULL);
}

/* Unopenable paths fail with a reason naming the path; nothing leaks. */
static void
test_open_fails(void **state)
{
    struct tmp *t = *state;
    char err[256];
    char missing[400];
    snprintf(missing, sizeof(missing), "%s/no/such/dir/events.log", t->dir);

    err[0] = '\0';
    assert_null(tf_events_open(missing, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, missing));
    assert_non_null(strstr(err, "No such file or directory"));

    err[0] = '\0';
    assert_null(tf_events_open("none", missing, err, sizeof(err)));
    assert_non_null(strstr(err, missing));

    /* Text opens, JSON fails: the text file is closed again (ASan checks the leak). */
    err[0] = '\0';
    assert_null(tf_events_open(t->text, missing, err, sizeof(err)));
    assert_non_null(strstr(err, "cannot open"));

    /* A directory is not a file. */
    err[0] = '\0';
    assert_null(tf_events_open(t->dir, NULL, err, sizeof(err)));
    assert_true(err[0] != '\0');

    /* A tiny error buffer is still terminated. */
    char small[8];
    memset(small, 'Z', sizeof(small));
    assert_null(tf_events_open(missing, NULL, small, sizeof(small)));
    assert_int_equal(strlen(small), sizeof(small) - 1);
}

/*
 * A field that names a stamp member (ts, flow, event, dir) replaces the
 * stamp's value and the member appears once; a look-alike key (dirs,
 * "di") is an ordinary field.
 */
static void
test_stamp_key_fields(void **state)
{
    struct tmp *t = *state;
    char err[256];
    struct tf_events *ev = tf_events_open(NULL, t->json, err, sizeof(err));
    assert_non_null(ev);
    static const char *const keys[] = { "ts", "flow", "event", "dir" };
    for (size_t i = 0; i < 4; i++)
        tf_events_emit(ev, 3, "probe", "c2s",
                       json_pack("{s:s, s:i}", keys[i], "mine", "n", (int)i));
    tf_events_emit(ev, 3, "probe", "c2s", json_pack("{s:s, s:s}", "dirs", "a", "di", "b"));
    tf_events_free(ev);

    char *buf = slurp(t->json);
    char *lines[8];
    size_t n = split_lines(buf, lines, 8);
    assert_int_equal(n, 5);
    for (size_t i = 0; i < 4; i++) {
        char quoted[16];
        snprintf(quoted, sizeof(quoted), "\"%s\":", keys[i]);
        char *first = strstr(lines[i], quoted);
        assert_non_null(first);
        assert_null(strstr(first + 1, quoted));
        json_t *o = parse_line(lines[i]);
        assert_string_equal(json_string_value(json_object_get(o, keys[i])), "mine");
        assert_int_equal(json_integer_value(json_object_get(o, "n")), (json_int_t)i);
        json_decref(o);
    }
    json_t *o = parse_line(lines[4]);
    assert_leading_keys(lines[4], true);
    assert_string_equal(json_string_value(json_object_get(o, "dir")), "c2s");
    assert_string_equal(json_string_value(json_object_get(o, "dirs")), "a");
    assert_string_equal(json_string_value(json_object_get(o, "di")), "b");
    json_decref(o);
    free(buf);
}

/* ------------------------------------------------------------ text rendering */

static json_t *
event_obj(const char *dir)
{
    json_t *o = json_pack("{s:s, s:i, s:s}", "ts", "2026-11-22T22:25:01.123456Z", "flow", 7,
                          "event", "handshake");
    if (dir)
        json_object_set_new(o, "dir", json_string(dir));
    json_object_set_new(o, "type", json_string("certificate"));
    return o;
}

static void
test_format_text(void **state)
{
    char buf[512];
    (void)state;

    json_t *o = event_obj("s2c");
    json_object_set_new(o, "random", json_string("deadbeef"));
    json_object_set_new(o, "chain_length", json_integer(2));
    json_object_set_new(o, "chain", json_pack("[{s:s}, {s:s}]", "subject", "CN=leaf",
                                              "subject", "CN=inter"));
    tf_events_format_text(o, buf, sizeof(buf));
    assert_string_equal(buf, "2026-11-22T22:25:01.123456Z #7 S->C handshake certificate "
                             "chain_length=2 chain=[{subject=CN=leaf},{subject=CN=inter}]");
    /* random is left out of the text line; type appears once. */
    assert_null(strstr(buf, "deadbeef"));
    assert_null(strstr(buf, "type="));
    json_decref(o);

    o = event_obj("c2s");
    tf_events_format_text(o, buf, sizeof(buf));
    assert_string_equal(buf, "2026-11-22T22:25:01.123456Z #7 C->S handshake certificate");
    json_decref(o);

    o = event_obj(NULL);
    tf_events_format_text(o, buf, sizeof(buf));
    assert_string_equal(buf, "2026-11-22T22:25:01.123456Z #7      handshake certificate");
    json_decref(o);

    /* Long arrays are cut with a count of what was left out. */
    o = event_obj("c2s");
    json_t *arr = json_array();
    for (int i = 0; i < 20; i++)
        json_array_append_new(arr, json_integer(i));
    json_object_set_new(o, "list", arr);
    tf_events_format_text(o, buf, sizeof(buf));
    assert_non_null(strstr(buf, " list=[0,1,2,3,4,5,6,7,8,9,10,11,+8]"));
    json_decref(o);
}

/* Small buffers: always terminated, never overrun, a prefix of the full line. */
static void
test_format_text_truncates(void **state)
{
    char full[8192];
    char small[32 + 16];
    (void)state;

    json_t *o = event_obj("s2c");
    char longval[3000];
    memset(longval, 'x', sizeof(longval) - 1);
    longval[sizeof(longval) - 1] = '\0';
    json_object_set_new(o, "long", json_string(longval));
    json_object_set_new(o, "nested",
                        json_pack("{s:[i,i,i,i,i,i], s:{s:s}}", "a", 1, 2, 3, 4, 5, 6, "b", "c",
                                  longval));
    tf_events_format_text(o, full, sizeof(full));
    assert_true(strlen(full) > 6000);

    for (size_t len = 1; len <= 32; len++) {
        memset(small, 'Z', sizeof(small));
        tf_events_format_text(o, small, len);
        assert_true(strlen(small) <= len - 1);
        assert_memory_equal(small, full, strlen(small));
        for (size_t i = len; i < sizeof(small); i++)
            assert_int_equal(small[i], 'Z');
    }
    /* A buffer of 32 holds the first 31 characters. */
    tf_events_format_text(o, small, 32);
    assert_int_equal(strlen(small), 31);

    /* len 0 writes nothing. */
    memset(small, 'Z', sizeof(small));
    tf_events_format_text(o, small, 0);
    assert_int_equal(small[0], 'Z');

    /* The emit path truncates its own 4 KiB line safely too. */
    json_decref(o);
}

/* An event with an over-long field still gives one whole line per sink. */
static void
test_emit_long_line(void **state)
{
    struct tmp *t = *state;
    char err[256];
    static char longval[20000];
    memset(longval, 'y', sizeof(longval) - 1);

    struct tf_events *ev = tf_events_open(t->text, t->json, err, sizeof(err));
    assert_non_null(ev);
    tf_events_emit(ev, 9, "non_tls", "c2s", json_pack("{s:s}", "preview", longval));
    tf_events_emit(ev, 9, "flow_end", NULL, NULL);
    tf_events_free(ev);

    char *lines[4];
    char *buf = slurp(t->json);
    assert_int_equal(split_lines(buf, lines, 4), 2);
    json_t *o = parse_line(lines[0]);
    assert_int_equal(strlen(json_string_value(json_object_get(o, "preview"))),
                     sizeof(longval) - 1);
    json_decref(o);
    free(buf);
    buf = slurp(t->text);
    assert_int_equal(split_lines(buf, lines, 4), 2);
    assert_non_null(strstr(lines[0], "C->S non_tls"));
    assert_true(strlen(lines[0]) < 4096);
    assert_non_null(strstr(lines[1], "flow_end"));
    free(buf);
}

/* ------------------------------------------------------------ threads */

#define THREADS 8
#define PER_THREAD 300

struct worker_arg {
    struct tf_events *ev;
    uint64_t flow;
};

static void *
worker(void *p)
{
    struct worker_arg *a = p;
    char pad[600];
    memset(pad, 'a' + (int)a->flow, sizeof(pad) - 1);
    pad[sizeof(pad) - 1] = '\0';
    for (int i = 0; i < PER_THREAD; i++)
        tf_events_emit(a->ev, a->flow, "encrypted", i % 2 ? "c2s" : "s2c",
                       json_pack("{s:i, s:s}", "seq", i, "pad", pad));
    return NULL;
}

/* Lines from several threads never interleave. */
static void
test_threads(void **state)
{
    struct tmp *t = *state;
    char err[256];
    pthread_t th[THREADS];
    struct worker_arg args[THREADS];

    struct tf_events *ev = tf_events_open(t->text, t->json, err, sizeof(err));
    assert_non_null(ev);
    for (int i = 0; i < THREADS; i++) {
        args[i].ev = ev;
        args[i].flow = (uint64_t)i;
        assert_int_equal(pthread_create(&th[i], NULL, worker, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    tf_events_free(ev);

    static char *lines[THREADS * PER_THREAD + 1];
    int next[THREADS] = {0};
    char *buf = slurp(t->json);
    assert_int_equal(split_lines(buf, lines, THREADS * PER_THREAD + 1), THREADS * PER_THREAD);
    for (size_t i = 0; i < THREADS * PER_THREAD; i++) {
        json_t *o = parse_line(lines[i]);
        json_int_t flow = json_integer_value(json_object_get(o, "flow"));
        assert_in_range(flow, 0, THREADS - 1);
        /* Each thread's events in its own order. */
        assert_int_equal(json_integer_value(json_object_get(o, "seq")), next[flow]++);
        json_decref(o);
    }
    free(buf);

    buf = slurp(t->text);
    assert_int_equal(split_lines(buf, lines, THREADS * PER_THREAD + 1), THREADS * PER_THREAD);
    for (size_t i = 0; i < THREADS * PER_THREAD; i++) {
        const char *pad = strstr(lines[i], "pad=");
        assert_non_null(pad);
        pad += 4;
        assert_int_equal(strlen(pad), 599);
        for (size_t k = 1; k < 599; k++)
            assert_int_equal(pad[k], pad[0]);
    }
    free(buf);
}

/* The tap (the control API's view): every event, whole, even with no sink open. */
struct tap_seen {
    unsigned calls;
    uint64_t flow;
    char event[32];
    char line[512];
};

static void
tap_cb(void *arg, uint64_t flow, const char *event, const json_t *obj)
{
    struct tap_seen *t = arg;
    char *line = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    t->calls++;
    t->flow = flow;
    snprintf(t->event, sizeof(t->event), "%s", event);
    snprintf(t->line, sizeof(t->line), "%s", line);
    free(line);
}

static void
test_tap(void **state)
{
    char err[64];
    struct tap_seen seen;

    (void)state;
    memset(&seen, 0, sizeof(seen));
    struct tf_events *ev = tf_events_open("none", NULL, err, sizeof(err));
    assert_non_null(ev);
    tf_events_set_tap(ev, tap_cb, &seen);
    tf_events_emit(ev, 7, "fault", "s2c", json_pack("{s:s, s:s}", "rule", "r", "fault", "stall"));
    assert_int_equal(seen.calls, 1);
    assert_int_equal(seen.flow, 7);
    assert_string_equal(seen.event, "fault");
    /* ts first, then flow, event, dir, the fields. */
    assert_true(strncmp(seen.line, "{\"ts\":\"", 7) == 0);
    assert_non_null(strstr(seen.line, "\"flow\":7,\"event\":\"fault\",\"dir\":\"s2c\",\"rule\":"
                                      "\"r\",\"fault\":\"stall\"}"));
    tf_events_emit(ev, 8, "flow_end", NULL, NULL);
    assert_int_equal(seen.calls, 2);
    assert_string_equal(seen.event, "flow_end");
    tf_events_set_tap(ev, NULL, NULL);
    tf_events_emit(ev, 9, "flow_start", NULL, json_object());
    assert_int_equal(seen.calls, 2);
    tf_events_free(ev);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_emit_both, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_append, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_single_sinks, setup_tmp, teardown_tmp),
        cmocka_unit_test(test_none_sinks),
        cmocka_unit_test_setup_teardown(test_stamp_key_fields, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_open_fails, setup_tmp, teardown_tmp),
        cmocka_unit_test(test_format_text),
        cmocka_unit_test(test_format_text_truncates),
        cmocka_unit_test_setup_teardown(test_emit_long_line, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_threads, setup_tmp, teardown_tmp),
        cmocka_unit_test(test_tap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
