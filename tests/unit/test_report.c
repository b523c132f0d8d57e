/*
 * test_report.c — unit tests for `tlsfault report` (report.h).
 *
 * The pieces: RFC 3339 times (with fractions and offsets, and what is not
 * one), HTML escaping (every special character, cuts that never split a
 * UTF-8 sequence), arrow labels per event kind (and truncation into small
 * buffers).  Then tf_report_main on logs written to temporary files, the
 * way the command runs: hostile strings stay text, bad lines are skipped,
 * flows are grouped (a repeated id after a flow_start is a new flow, an
 * event without flow_start opens one), --flow ID / ID#N, --max-flows and
 * --max-events, and usage errors.  Under the sanitizers this is also the
 * memory check of the whole command on odd input (deep nesting, a line
 * longer than the limit, no final newline).
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
#include <unistd.h>

#include "tlsfault/report.h"

/* ------------------------------------------------------------ helpers */

struct tmp {
    char dir[256];
    char log[300];
    char out[300];
};

static int
setup_tmp(void **state)
{
    struct tmp *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return -1;
    const char *base = getenv("TMPDIR");
    snprintf(t->dir, sizeof(t->dir), "%s/tf-report-XXXXXX", base && *base ? base : "/tmp");
    if (mkdtemp(t->dir) == NULL) {
        free(t);
        return -1;
    }
    snprintf(t->log, sizeof(t->log), "%s/events.jsonl", t->dir);
    snprintf(t->out, sizeof(t->out), "%s/report.out", t->dir);
    *state = t;
    return 0;
}

static int
teardown_tmp(void **state)
{
    struct tmp *t = *state;
    unlink(t->log);
    unlink(t->out);
    rmdir(t->dir);
    free(t);
    return 0;
}

static void
write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

/* The whole file as a NUL-terminated string (the caller frees it). */
static char *
read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    assert_non_null(m);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        fwrite(chunk, 1, n, m);
    fclose(f);
    fclose(m);
    return buf;
}

static size_t
count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(hay, needle); p != NULL; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* Runs tf_report_main on a NULL-terminated list of arguments after "report". */
static int
run_report(const char *first, ...)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = (char *)(uintptr_t)"report";
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a != NULL && argc < 31; a = va_arg(ap, const char *))
        argv[argc++] = (char *)(uintptr_t)a;
    va_end(ap);
    argv[argc] = NULL;
    return tf_report_main(argc, argv);
}

/* ------------------------------------------------------------ times */

static void
test_parse_ts(void **state)
{
    (void)state;
    int64_t a, b;
    assert_true(tf_report_parse_ts("1970-01-01T00:00:00Z", &a));
    assert_int_equal(a, 0);
    assert_true(tf_report_parse_ts("2026-12-02T01:09:37.623467Z", &a));
    assert_true(tf_report_parse_ts("2026-12-02T01:09:37Z", &b));
    assert_int_equal(a - b, 623467);
    assert_true(tf_report_parse_ts("2026-12-02T01:09:37.5Z", &a));
    assert_int_equal(a - b, 500000);
    assert_true(tf_report_parse_ts("2026-12-02T01:09:37.1234567891Z", &a));
    assert_int_equal(a - b, 123456);
    assert_true(tf_report_parse_ts("2026-12-02T03:09:37+02:00", &a));
    assert_int_equal(a, b);
    assert_true(tf_report_parse_ts("2026-12-01T23:39:37-01:30", &a));
    assert_int_equal(a, b);

    const char *bad[] = { "", "2026-12-02", "2026-12-02T01:09:37", "2026-13-02T01:09:37Z",
                          "2026-12-02T24:09:37Z", "2026-12-02T01:09:37.Z",
                          "2026-12-02T01:09:37Zjunk", "2026-12-02T01:09:37+0200",
                          "x026-12-02T01:09:37Z", "2026-12-02T01:09:3xZ" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(tf_report_parse_ts(bad[i], &a));
}

/* ------------------------------------------------------------ escaping */

static char *
escaped(const char *s, size_t max)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    assert_non_null(m);
    tf_report_html_escape(m, s, max);
    fclose(m);
    return buf;
}

static void
test_html_escape(void **state)
{
    (void)state;
    char *s = escaped("<script>alert(\"x\" & 'y')</script>", 0);
    assert_string_equal(s, "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;");
    free(s);
    s = escaped("plain text", 0);
    assert_string_equal(s, "plain text");
    free(s);
    s = escaped("", 0);
    assert_string_equal(s, "");
    free(s);
    /* A cut at 5 bytes must not split the 2-byte "é" that starts at byte 4. */
    s = escaped("abcdé<>", 5);
    assert_string_equal(s, "abcd… (4 more bytes)");
    free(s);
    s = escaped("a<b", 2);
    assert_string_equal(s, "a&lt;… (1 more bytes)");
    free(s);
}

/* ------------------------------------------------------------ labels */

static void
expect_label(const char *json, const char *want)
{
    json_error_t err;
    json_t *ev = json_loads(json, 0, &err);
    assert_non_null(ev);
    char buf[256];
    tf_report_label(ev, buf, sizeof(buf));
    assert_string_equal(buf, want);
    json_decref(ev);
}

static void
test_labels(void **state)
{
    (void)state;
    expect_label("{\"event\":\"handshake\",\"type\":\"client_hello\",\"server_name\":\"lab.test\","
                 "\"supported_versions\":[\"TLS 1.3\",\"TLS 1.2\"]}",
                 "client_hello lab.test up to TLS 1.3");
    expect_label("{\"event\":\"handshake\",\"type\":\"server_hello\",\"version\":\"TLS 1.2\","
                 "\"cipher_suite\":\"TLS_AES_128_GCM_SHA256\",\"downgrade_sentinel\":\"tls12\"}",
                 "server_hello TLS 1.2 TLS_AES_128_GCM_SHA256 (downgrade sentinel tls12)");
    expect_label("{\"event\":\"handshake\",\"type\":\"certificate\",\"chain\":"
                 "[{\"subject\":\"CN=a\"},{\"subject\":\"CN=b\"}]}",
                 "certificate CN=a +1");
    expect_label("{\"event\":\"handshake\"}", "handshake");
    expect_label("{\"event\":\"change_cipher_spec\",\"dir\":\"c2s\"}", "change_cipher_spec");
    expect_label("{\"event\":\"alert\",\"level\":\"fatal\",\"description\":\"unknown_ca\"}",
                 "alert fatal unknown_ca");
    expect_label("{\"event\":\"alert\"}", "alert ? ?");
    expect_label("{\"event\":\"encrypted\",\"content_type\":\"application_data\",\"length\":848}",
                 "application_data 848 B");
    expect_label("{\"event\":\"non_tls\",\"kind\":\"http\",\"preview\":\"GET / HTTP/1.0\"}",
                 "not TLS (http) GET / HTTP/1.0");
    expect_label("{\"event\":\"data\",\"length\":3,\"text\":\"abc\"}", "data 3 B abc");
    expect_label("{\"event\":\"fault\",\"rule\":\"r1\",\"fault\":\"delay\"}", "fault r1 (delay)");
    expect_label("{\"event\":\"something_new\",\"type\":\"x\"}", "something_new x");
    /* long strings are cut on a UTF-8 boundary with an ellipsis */
    expect_label("{\"event\":\"non_tls\",\"kind\":\"unknown\",\"preview\":"
                 "\"0123456789012345678901234567890123456789éééé\"}",
                 "not TLS (unknown) 0123456789012345678901234567890123456789…");

    /* a small buffer: truncated, terminated, never overrun */
    json_t *ev = json_pack("{s:s, s:s, s:s}", "event", "handshake", "type", "client_hello",
                           "server_name", "a-very-long-server-name.example");
    char small[12];
    memset(small, 'X', sizeof(small));
    tf_report_label(ev, small, 8);
    assert_true(strlen(small) < 8);
    assert_int_equal(small[8], 'X');
    json_decref(ev);
}

/* ------------------------------------------------------------ the command */

#define HOSTILE "<script>alert(1)</script>"

static const char log_text[] =
    /* 1 */ "{\"ts\":\"2026-01-01T00:00:00.000000Z\",\"flow\":1,\"event\":\"flow_start\","
            "\"client\":\"127.0.0.1:1\",\"upstream\":\"127.0.0.1:2\",\"mode\":\"passthrough\"}\n"
    /* 2 */ "{\"ts\":\"2026-01-01T00:00:00.001000Z\",\"flow\":1,\"event\":\"handshake\","
            "\"dir\":\"c2s\",\"type\":\"client_hello\",\"server_name\":\"" HOSTILE "\"}\n"
    /* 3 */ "this line is not JSON\n"
    /* 4 */ "{\"ts\":\"2026-01-01T00:00:00.002000Z\",\"flow\":1,\"event\":\"alert\","
            "\"dir\":\"s2c\",\"level\":\"fatal\",\"description\":\"handshake_failure\"}\n"
    /* 5 */ "\n"
    /* 6 */ "{\"ts\":\"2026-01-01T00:00:00.003000Z\",\"flow\":1,\"event\":\"flow_end\","
            "\"outcome\":\"failed\",\"summary\":\"" HOSTILE "\"}\n"
    /* 7 */ "{\"flow\":2,\"event\":\"handshake\",\"dir\":\"c2s\",\"type\":\"client_hello\"}\n"
    /* 8 */ "[\"an\", \"array\"]\n"
    /* 9 */ "{\"ts\":\"2026-01-01T00:00:01Z\",\"flow\":1,\"event\":\"flow_start\"}\n"
    /* 10 */ "{\"ts\":\"2026-01-01T00:00:01.5Z\",\"flow\":1,\"event\":\"fault\",\"dir\":\"s2c\","
             "\"rule\":\"r1\",\"fault\":\"drop-server-hello\",\"action\":\"withheld\","
             "\"record\":1}\n"
    /* 11 */ "{\"ts\":\"bad time\",\"flow\":1,\"event\":\"data\",\"dir\":\"c2s\","
             "\"leg\":\"client\","
             "\"length\":2,\"text\":\"\\u001b[2J\"}\n"
    /* 12 */ "{\"flow\":3,\"event\":\"handshake\",\"deep\":"
             "[[[[[[[[[[[[[[[[[[[[{\"a\":[[[[[[[[[[1]]]]]]]]]]}]]]]]]]]]]]]]]]]]]]]}\n"
    /* 13 */ "{\"flow\":1,\"event\":\"flow_end\",\"outcome\":\"ok\",\"verdict\":{"
             "\"outcome\":\"failed\",\"stage\":\"after server_hello from server\","
             "\"cause\":\"injected\",\"who_fixes\":\"network\",\"summary\":\"the rule did it\","
             "\"evidence\":[{\"event\":\"fault\",\"rule\":\"r1\"}]}}"; /* no final newline */

static void
test_main_html(void **state)
{
    struct tmp *t = *state;
    write_file(t->log, log_text);
    assert_int_equal(run_report(t->log, "-o", t->out, NULL), 0);
    char *html = read_file(t->out);
    assert_null(strstr(html, HOSTILE));
    assert_non_null(strstr(html, "&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert_int_equal(count(html, "<script"), 1);
    /* flows 1, 2 (no flow_start), 1#2 (a second flow_start of id 1), 3 */
    assert_int_equal(count(html, "<section class=\"flow"), 4);
    assert_non_null(strstr(html, "id=\"flow-1\" data-flow=\"1\" data-events=\"4\""));
    assert_non_null(strstr(html, "id=\"flow-2\" data-flow=\"2\" data-events=\"1\""));
    assert_non_null(strstr(html, "id=\"flow-1-2\" data-flow=\"1#2\" data-events=\"4\""));
    assert_non_null(strstr(html, "id=\"flow-3\" data-flow=\"3\" data-events=\"1\""));
    assert_int_equal(count(html, "<details class=\"ev "), 10);
    assert_int_equal(count(html, "class=\"ev k-alert alert\""), 1);
    assert_int_equal(count(html, "fault-marker"), 1);
    assert_int_equal(count(html, "data-arrow=\"client-tlsfault\" data-leg=\"client\""), 1);
    assert_non_null(strstr(html, "2 bad lines"));
    /* flow_end's verdict object wins over its flat fields */
    assert_non_null(strstr(html, "data-flow=\"1#2\" data-outcome=\"failed\""));
    assert_non_null(strstr(html, "<dt>cause</dt><dd>injected</dd>"));
    assert_non_null(strstr(html, "<dt>who fixes</dt><dd>network</dd>"));
    assert_non_null(strstr(html, "<dt>evidence</dt>"));
    assert_non_null(strstr(html, "flow_end · failed · the rule did it"));
    free(html);
}

static void
test_main_text(void **state)
{
    struct tmp *t = *state;
    write_file(t->log, log_text);
    assert_int_equal(run_report(t->log, "--text", "-o", t->out, NULL), 0);
    char *text = read_file(t->out);
    assert_non_null(strstr(text, "flow 1  127.0.0.1:1 → 127.0.0.1:2"));
    assert_non_null(strstr(text, "client   ─── client_hello " HOSTILE " "));
    assert_non_null(strstr(text, "alert fatal handshake_failure"));
    assert_non_null(strstr(text, "ALERT\n"));
    assert_non_null(strstr(text, "tlsfault ⚡ fault r1 (drop-server-hello) s2c record 1: withheld"));
    assert_non_null(strstr(text, "\\x1b[2J"));
    assert_null(strchr(text, '\033'));
    assert_int_equal(count(text, "\n  verdict: "), 4);
    free(text);

    assert_int_equal(run_report(t->log, "--text", "--flow", "1#2", "-o", t->out, NULL), 0);
    text = read_file(t->out);
    assert_int_equal(count(text, "\nflow ") + (strncmp(text, "flow ", 5) == 0), 1);
    assert_non_null(strstr(text, "flow 1#2 "));
    free(text);

    assert_int_equal(run_report(t->log, "--text", "--flow", "1", "-o", t->out, NULL), 0);
    text = read_file(t->out);
    assert_non_null(strstr(text, "flow 1 "));
    assert_non_null(strstr(text, "flow 1#2 "));
    assert_null(strstr(text, "flow 2 "));
    free(text);

    assert_int_equal(run_report(t->log, "--flow", "7", "-o", t->out, NULL), 1);
    assert_int_equal(run_report(t->log, "--flow", "1#3", "-o", t->out, NULL), 1);
}

static void
test_main_limits(void **state)
{
    struct tmp *t = *state;
    write_file(t->log, log_text);
    /* Only flow 1 is kept: the events of the second flow 1 must not join it. */
    assert_int_equal(run_report(t->log, "--max-flows", "1", "-o", t->out, NULL), 0);
    char *html = read_file(t->out);
    assert_int_equal(count(html, "<section class=\"flow"), 1);
    assert_non_null(strstr(html, "data-flow=\"1\" data-events=\"4\" data-drawn=\"4\""));
    assert_non_null(strstr(html, "1 more flows not drawn"));
    free(html);

    assert_int_equal(run_report(t->log, "--max-events=2", "--flow=1", "-o", t->out, NULL), 0);
    html = read_file(t->out);
    assert_non_null(strstr(html, "data-flow=\"1\" data-events=\"4\" data-drawn=\"2\""));
    assert_non_null(strstr(html, "2 more events of this flow not drawn"));
    free(html);

    /* A line over the limit is one bad line, not a crash or a truncated event. */
    FILE *f = fopen(t->log, "w");
    assert_non_null(f);
    fputs("{\"flow\":1,\"event\":\"flow_start\"}\n{\"flow\":1,\"event\":\"x\",\"pad\":\"", f);
    for (int i = 0; i < 1100 * 1024; i++)
        fputc('a', f);
    fputs("\"}\n{\"flow\":1,\"event\":\"flow_end\"}\n", f);
    fclose(f);
    assert_int_equal(run_report(t->log, "-o", t->out, NULL), 0);
    html = read_file(t->out);
    assert_non_null(strstr(html, "data-flow=\"1\" data-events=\"2\""));
    assert_non_null(strstr(html, "1 bad line"));
    free(html);
}

static void
test_usage(void **state)
{
    struct tmp *t = *state;
    write_file(t->log, log_text);
    assert_int_equal(run_report(NULL), 2);
    assert_int_equal(run_report(t->log, "--bogus", NULL), 2);
    assert_int_equal(run_report(t->log, t->log, NULL), 2);
    assert_int_equal(run_report(t->log, "-o", NULL), 2);
    const char *bad_flows[] = { "", "#", "x", "-1", "1#", "1#0", "1#x", "1x", "1#2#3" };
    for (size_t i = 0; i < sizeof(bad_flows) / sizeof(bad_flows[0]); i++)
        assert_int_equal(run_report(t->log, "--flow", bad_flows[i], NULL), 2);
    assert_int_equal(run_report(t->log, "--max-flows", "-1", NULL), 2);
    assert_int_equal(run_report(t->log, "--max-events", "many", NULL), 2);
    char missing[320];
    snprintf(missing, sizeof(missing), "%s/missing.jsonl", t->dir);
    assert_int_equal(run_report(missing, NULL), 1);
    char unwritable[340];
    snprintf(unwritable, sizeof(unwritable), "%s/no/such/dir/out.html", t->dir);
    assert_int_equal(run_report(t->log, "-o", unwritable, NULL), 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_ts),
        cmocka_unit_test(test_html_escape),
        cmocka_unit_test(test_labels),
        cmocka_unit_test_setup_teardown(test_main_html, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_main_text, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_main_limits, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_usage, setup_tmp, teardown_tmp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
