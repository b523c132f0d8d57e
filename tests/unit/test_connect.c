/*
 * test_connect.c — unit tests for connect.c: the CONNECT request head, the
 * allow list and the answers of the connect route.
 *
 * Good requests (HTTP/1.1 and 1.0, bare LF, leading empty lines, IPv6 in
 * brackets, tunnel bytes after the head) are also fed one byte short at
 * every length, which must always be NEED_MORE.  Negative cases: each
 * malformed request line and header line the parser knows, TLS and binary
 * first bytes (refused before a whole line arrives), other methods (405),
 * and heads at and past the 8 KiB limit.  RFC 9112 §2-§5, RFC 9110 §9.3.6.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tlsfault/connect.h"

static enum tf_connect_result
parse_str(const char *s, struct tf_connect_request *req, char *err, size_t errlen)
{
    return tf_connect_parse((const uint8_t *)s, strlen(s), req, err, errlen);
}

/* Every proper prefix of s is NEED_MORE; all of s is OK with host:port. */
static void
assert_good(const char *s, const char *host, uint16_t port, size_t head_len)
{
    struct tf_connect_request req;
    char err[256];
    size_t n = strlen(s);

    for (size_t i = 0; i < head_len; i++) {
        enum tf_connect_result r = tf_connect_parse((const uint8_t *)s, i, &req, err, sizeof(err));
        if (r != TF_CONNECT_NEED_MORE)
            fail_msg("prefix of %zu bytes of %s: %d (%s)", i, s, r, err);
    }
    assert_int_equal(tf_connect_parse((const uint8_t *)s, n, &req, err, sizeof(err)),
                     TF_CONNECT_OK);
    assert_string_equal(req.host, host);
    assert_int_equal(req.port, port);
    assert_int_equal(req.head_len, head_len);
    assert_string_equal(req.method, "CONNECT");
}

static void
test_good_requests(void **state)
{
    (void)state;
    const char *r1 = "CONNECT lab.test:443 HTTP/1.1\r\nHost: lab.test:443\r\n"
                     "User-Agent: curl/7.88.1\r\nProxy-Connection: Keep-Alive\r\n\r\n";
    assert_good(r1, "lab.test", 443, strlen(r1));

    const char *r2 = "CONNECT 127.0.0.1:4433 HTTP/1.0\r\n\r\n";
    assert_good(r2, "127.0.0.1", 4433, strlen(r2));

    /* Bare LF line ends and an empty line before the request line (RFC 9112 §2.2). */
    const char *r3 = "\r\nCONNECT a-b_c.example:1 HTTP/1.1\nHost:a\n\n";
    assert_good(r3, "a-b_c.example", 1, strlen(r3));

    /* A header value with tabs, obs-text and an empty value. */
    const char *r4 = "CONNECT x.test:65535 HTTP/1.1\r\nX-A:\tv\xc3\xa9 w\t\r\nX-Empty:\r\n\r\n";
    assert_good(r4, "x.test", 65535, strlen(r4));
}

static void
test_tunnel_bytes_after_head(void **state)
{
    (void)state;
    const char *head = "CONNECT lab.test:443 HTTP/1.1\r\nHost: lab.test\r\n\r\n";
    char buf[256];
    struct tf_connect_request req;
    char err[128];

    static const uint8_t tls[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01};
    memcpy(buf, head, strlen(head));
    memcpy(buf + strlen(head), tls, sizeof(tls));
    size_t n = strlen(head) + sizeof(tls);
    assert_int_equal(tf_connect_parse((const uint8_t *)buf, n, &req, err, sizeof(err)),
                     TF_CONNECT_OK);
    assert_int_equal(req.head_len, strlen(head));
    assert_string_equal(req.host, "lab.test");
}

static void
test_ipv6_targets(void **state)
{
    struct tf_connect_request req;
    char err[256];
    (void)state;

    const char *r1 = "CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n";
    assert_good(r1, "::1", 8443, strlen(r1));
    assert_int_equal(parse_str(r1, &req, err, sizeof(err)), TF_CONNECT_OK);
    assert_true(req.bracketed);

    /* One spelling per address: the usual compressed, lower-case form. */
    assert_int_equal(parse_str("CONNECT [FD00:0:0::0001]:443 HTTP/1.1\r\n\r\n", &req, err,
                               sizeof(err)),
                     TF_CONNECT_OK);
    assert_string_equal(req.host, "fd00::1");
    assert_int_equal(req.port, 443);

    assert_int_equal(parse_str("CONNECT lab.test:443 HTTP/1.1\r\n\r\n", &req, err, sizeof(err)),
                     TF_CONNECT_OK);
    assert_false(req.bracketed);
}

static void
assert_bad(const char *s, const char *needle)
{
    struct tf_connect_request req;
    char err[256];
    enum tf_connect_result r = parse_str(s, &req, err, sizeof(err));
    if (r != TF_CONNECT_BAD)
        fail_msg("%s: expected BAD, got %d", s, r);
    if (strstr(err, needle) == NULL)
        fail_msg("%s: error \"%s\" lacks \"%s\"", s, err, needle);
}

static void
test_bad_request_lines(void **state)
{
    (void)state;
    assert_bad("CONNECT lab.test HTTP/1.1\r\n\r\n", "no port");
    assert_bad("CONNECT lab.test: HTTP/1.1\r\n\r\n", "port");
    assert_bad("CONNECT lab.test:0 HTTP/1.1\r\n\r\n", "1..65535");
    assert_bad("CONNECT lab.test:65536 HTTP/1.1\r\n\r\n", "1..65535");
    assert_bad("CONNECT lab.test:123456 HTTP/1.1\r\n\r\n", "1..65535");
    assert_bad("CONNECT lab.test:44a HTTP/1.1\r\n\r\n", "1..65535");
    assert_bad("CONNECT :443 HTTP/1.1\r\n\r\n", "no host");
    assert_bad("CONNECT ::1:443 HTTP/1.1\r\n\r\n", "brackets");
    assert_bad("CONNECT [::g]:443 HTTP/1.1\r\n\r\n", "IPv6");
    assert_bad("CONNECT []:443 HTTP/1.1\r\n\r\n", "IPv6");
    assert_bad("CONNECT [::1:443 HTTP/1.1\r\n\r\n", "without ']'");
    assert_bad("CONNECT [::1]443 HTTP/1.1\r\n\r\n", "no port");
    assert_bad("CONNECT [::1] HTTP/1.1\r\n\r\n", "no port");
    assert_bad("CONNECT user@lab.test:443 HTTP/1.1\r\n\r\n", "user information");
    assert_bad("CONNECT lab/test:443 HTTP/1.1\r\n\r\n", "not allowed in a host name");
    assert_bad("CONNECT lab.test:443  HTTP/1.1\r\n\r\n", "HTTP version");
    assert_bad("CONNECT  lab.test:443 HTTP/1.1\r\n\r\n", "METHOD TARGET");
    assert_bad("CONNECT lab.test:443\r\n\r\n", "METHOD TARGET");
    assert_bad("CONNECT lab.test:443 HTTP/2.0\r\n\r\n", "HTTP version");
    assert_bad("CONNECT lab.test:443 http/1.1\r\n\r\n", "HTTP version");
    assert_bad("CONNECT lab.test:443 HTTP/1.1 \r\n\r\n", "HTTP version");
    assert_bad("CONNECT lab.test:443 HTTP/1.1\rX\r\n\r\n", "bare CR");
    assert_bad(" CONNECT lab.test:443 HTTP/1.1\r\n\r\n", "not an HTTP request");
    assert_bad("CONN\x01" "ECT lab.test:443 HTTP/1.1\r\n\r\n", "not an HTTP request");
    char longhost[400];
    memset(longhost, 'a', sizeof(longhost));
    snprintf(longhost, sizeof(longhost), "CONNECT %0300d:443 HTTP/1.1\r\n\r\n", 1);
    assert_bad(longhost, "longer than 253");
}

static void
test_bad_header_lines(void **state)
{
    (void)state;
    assert_bad("CONNECT a.test:443 HTTP/1.1\r\nHost a.test\r\n\r\n", "Name: value");
    assert_bad("CONNECT a.test:443 HTTP/1.1\r\nHost : a.test\r\n\r\n", "Name: value");
    assert_bad("CONNECT a.test:443 HTTP/1.1\r\n: a.test\r\n\r\n", "Name: value");
    assert_bad("CONNECT a.test:443 HTTP/1.1\r\nHost: a\r\n continued\r\n\r\n", "folding");
    assert_bad("CONNECT a.test:443 HTTP/1.1\r\nX: a\x01" "b\r\n\r\n", "control character");
    assert_bad("CONNECT a.test:443 HTTP/1.1\r\nX: a\rb\r\n\r\n", "bare CR");
    /* A header line is reported as soon as it is complete. */
    assert_bad("CONNECT a.test:443 HTTP/1.1\r\nbroken\r\nHost: a", "Name: value");
}

/* A client talking TLS or binary to the proxy is answered at its first bytes. */
static void
test_not_http_at_once(void **state)
{
    struct tf_connect_request req;
    char err[256];
    static const uint8_t hello[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc};
    (void)state;

    assert_int_equal(tf_connect_parse(hello, sizeof(hello), &req, err, sizeof(err)),
                     TF_CONNECT_BAD);
    assert_non_null(strstr(err, "TLS"));
    assert_int_equal(tf_connect_parse(hello, 1, &req, err, sizeof(err)), TF_CONNECT_BAD);

    static const uint8_t junk[] = {'C', 'O', 'N', 0x00};
    assert_int_equal(tf_connect_parse(junk, sizeof(junk), &req, err, sizeof(err)),
                     TF_CONNECT_BAD);
    assert_non_null(strstr(err, "offset 3"));

    /* Nothing yet is not wrong. */
    assert_int_equal(tf_connect_parse((const uint8_t *)"", 0, &req, err, sizeof(err)),
                     TF_CONNECT_NEED_MORE);
    assert_int_equal(tf_connect_parse((const uint8_t *)"CONNECT lab.te", 14, &req, err,
                                      sizeof(err)),
                     TF_CONNECT_NEED_MORE);
}

static void
test_other_methods(void **state)
{
    struct tf_connect_request req;
    char err[256];
    (void)state;

    assert_int_equal(parse_str("GET http://lab.test/ HTTP/1.1\r\nHost: lab.test\r\n\r\n", &req,
                               err, sizeof(err)),
                     TF_CONNECT_METHOD);
    assert_string_equal(req.method, "GET");
    assert_non_null(strstr(err, "GET"));
    assert_int_equal(req.head_len, strlen("GET http://lab.test/ HTTP/1.1\r\nHost: lab.test\r\n\r\n"));

    /* Methods are case-sensitive (RFC 9110 §9.1). */
    assert_int_equal(parse_str("connect lab.test:443 HTTP/1.1\r\n\r\n", &req, err, sizeof(err)),
                     TF_CONNECT_METHOD);
    assert_string_equal(req.method, "connect");

    /* The target of another method is not checked as authority-form ... */
    assert_int_equal(parse_str("OPTIONS * HTTP/1.1\r\n\r\n", &req, err, sizeof(err)),
                     TF_CONNECT_METHOD);
    /* ... but the rest of the head is, and it must be complete first. */
    assert_int_equal(parse_str("GET / HTTP/1.1\r\nHost: x\r\n", &req, err, sizeof(err)),
                     TF_CONNECT_NEED_MORE);
    assert_int_equal(parse_str("GET / HTTP/1.1\r\nHost x\r\n\r\n", &req, err, sizeof(err)),
                     TF_CONNECT_BAD);
}

/* A head of exactly TF_CONNECT_HEAD_MAX bytes, headers padded with X-Pad. */
static char *
make_head(size_t total)
{
    const char *line = "CONNECT big.test:443 HTTP/1.1\r\n";
    char *s = malloc(total + 1);
    size_t used = strlen(line);
    assert_non_null(s);
    memcpy(s, line, used);
    while (total - used > 2) {
        size_t left = total - used - 2; /* the final empty line */
        size_t len = left > 200 ? 200 : left;
        if (left - len > 0 && left - len < 8)
            len = left - 8; /* never leave a remainder too short for a header line */
        /* "X: " + value + "\r\n" */
        memcpy(s + used, "X: ", 3);
        memset(s + used + 3, 'v', len - 5);
        memcpy(s + used + len - 2, "\r\n", 2);
        used += len;
    }
    memcpy(s + used, "\r\n", 2);
    s[total] = '\0';
    return s;
}

static void
test_oversize(void **state)
{
    struct tf_connect_request req;
    char err[256];
    (void)state;

    char *at = make_head(TF_CONNECT_HEAD_MAX);
    assert_int_equal(strlen(at), TF_CONNECT_HEAD_MAX);
    assert_int_equal(parse_str(at, &req, err, sizeof(err)), TF_CONNECT_OK);
    assert_int_equal(req.head_len, TF_CONNECT_HEAD_MAX);
    free(at);

    char *over = make_head(TF_CONNECT_HEAD_MAX + 1);
    assert_int_equal(parse_str(over, &req, err, sizeof(err)), TF_CONNECT_TOO_BIG);
    assert_non_null(strstr(err, "8192"));
    /* Still unfinished, but not yet at the limit: more may come. */
    assert_int_equal(tf_connect_parse((const uint8_t *)over, TF_CONNECT_HEAD_MAX - 1, &req, err,
                                      sizeof(err)),
                     TF_CONNECT_NEED_MORE);
    free(over);

    /* A request line that never ends. */
    char *endless = malloc(20000);
    assert_non_null(endless);
    memcpy(endless, "CONNECT ", 8);
    memset(endless + 8, 'a', 20000 - 8);
    assert_int_equal(tf_connect_parse((const uint8_t *)endless, 20000, &req, err, sizeof(err)),
                     TF_CONNECT_TOO_BIG);
    free(endless);
}

static void
test_allow(void **state)
{
    (void)state;
    char *list[] = {"*.lab.test:443", "plain.test", "[fd00::*]:8443", "10.0.0.*:*",
                    "bad:port:x:y:[", "[unclosed:443", "x.test:70000", "*.Case.TEST:9"};
    size_t n = sizeof(list) / sizeof(list[0]);

    assert_true(tf_connect_allowed(NULL, 0, "anything", 1));
    assert_false(tf_connect_allowed(list, 0, "plain.test", 443));

    assert_true(tf_connect_allowed(list, n, "a.lab.test", 443));
    assert_true(tf_connect_allowed(list, n, "A.LAB.test", 443));
    assert_false(tf_connect_allowed(list, n, "a.lab.test", 444));
    assert_false(tf_connect_allowed(list, n, "lab.test", 443));
    assert_true(tf_connect_allowed(list, n, "plain.test", 1));
    assert_true(tf_connect_allowed(list, n, "plain.test", 65535));
    assert_false(tf_connect_allowed(list, n, "plain.test.evil", 443));
    assert_true(tf_connect_allowed(list, n, "fd00::1", 8443));
    assert_false(tf_connect_allowed(list, n, "fd00::1", 443));
    assert_false(tf_connect_allowed(list, n, "fd01::1", 8443));
    assert_true(tf_connect_allowed(list, n, "10.0.0.7", 22));
    assert_false(tf_connect_allowed(list, n, "10.0.1.7", 22));
    assert_true(tf_connect_allowed(list, n, "x.case.test", 9));
    /* Malformed entries allow nothing. */
    assert_false(tf_connect_allowed(list, n, "x.test", 70000 % 65536));
    assert_false(tf_connect_allowed(list, n, "unclosed", 443));

    /* An unbracketed IPv6 glob matches any port. */
    char *v6[] = {"::1"};
    assert_true(tf_connect_allowed(v6, 1, "::1", 443));
    assert_false(tf_connect_allowed(v6, 1, "::2", 443));
}

static void
test_allow_valid(void **state)
{
    char err[128];
    (void)state;

    assert_true(tf_connect_allow_valid("*.lab.test:443", err, sizeof(err)));
    assert_true(tf_connect_allow_valid("lab.test", err, sizeof(err)));
    assert_true(tf_connect_allow_valid("lab.test:*", err, sizeof(err)));
    assert_true(tf_connect_allow_valid("[::1]", err, sizeof(err)));
    assert_true(tf_connect_allow_valid("[fd00::*]:443", err, sizeof(err)));
    assert_true(tf_connect_allow_valid("fd00::1", err, sizeof(err)));

    assert_false(tf_connect_allow_valid("lab.test:0", err, sizeof(err)));
    assert_non_null(strstr(err, "1..65535"));
    assert_false(tf_connect_allow_valid("lab.test:70000", err, sizeof(err)));
    assert_false(tf_connect_allow_valid("lab.test:", err, sizeof(err)));
    assert_false(tf_connect_allow_valid(":443", err, sizeof(err)));
    assert_non_null(strstr(err, "no host glob"));
    assert_false(tf_connect_allow_valid("", err, sizeof(err)));
    assert_false(tf_connect_allow_valid("[::1", err, sizeof(err)));
    assert_non_null(strstr(err, "without ']'"));
    assert_false(tf_connect_allow_valid("[::1]x", err, sizeof(err)));
    assert_false(tf_connect_allow_valid("[]:443", err, sizeof(err)));
}

static void
test_responses(void **state)
{
    char buf[1024];
    size_t n;
    (void)state;

    n = tf_connect_response(200, "ignored", buf, sizeof(buf));
    assert_string_equal(buf, "HTTP/1.1 200 Connection established\r\n\r\n");
    assert_int_equal(n, strlen(buf));

    n = tf_connect_response(405, NULL, buf, sizeof(buf));
    assert_int_equal(n, strlen(buf));
    assert_memory_equal(buf, "HTTP/1.1 405 Method Not Allowed\r\n", 33);
    assert_non_null(strstr(buf, "\r\nAllow: CONNECT\r\n"));
    assert_non_null(strstr(buf, "\r\nConnection: close\r\n"));
    assert_non_null(strstr(buf, "\r\n\r\nMethod Not Allowed\n"));

    /* The reason is the body, on one line, with its length. */
    n = tf_connect_response(403, "CONNECT x:1 is\r\nnot allowed", buf, sizeof(buf));
    assert_memory_equal(buf, "HTTP/1.1 403 Forbidden\r\n", 24);
    assert_null(strstr(buf, "Allow:"));
    assert_non_null(strstr(buf, "Content-Length: 28\r\n"));
    assert_non_null(strstr(buf, "\r\n\r\nCONNECT x:1 is  not allowed\n"));
    assert_int_equal(n, strlen(buf));

    tf_connect_response(400, "bad", buf, sizeof(buf));
    assert_memory_equal(buf, "HTTP/1.1 400 Bad Request\r\n", 26);
    tf_connect_response(502, "Connection refused", buf, sizeof(buf));
    assert_memory_equal(buf, "HTTP/1.1 502 Bad Gateway\r\n", 26);
    tf_connect_response(504, "timed out", buf, sizeof(buf));
    assert_memory_equal(buf, "HTTP/1.1 504 Gateway Timeout\r\n", 30);

    /* Too small a buffer: nothing half-written is reported as an answer. */
    assert_int_equal(tf_connect_response(502, "x", buf, 10), 0);
    assert_int_equal(tf_connect_response(200, NULL, buf, 10), 0);
}

static void
test_format_target(void **state)
{
    char buf[80];
    (void)state;
    tf_connect_format_target("lab.test", 443, buf, sizeof(buf));
    assert_string_equal(buf, "lab.test:443");
    tf_connect_format_target("fd00::1", 8443, buf, sizeof(buf));
    assert_string_equal(buf, "[fd00::1]:8443");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_requests),
        cmocka_unit_test(test_tunnel_bytes_after_head),
        cmocka_unit_test(test_ipv6_targets),
        cmocka_unit_test(test_bad_request_lines),
        cmocka_unit_test(test_bad_header_lines),
        cmocka_unit_test(test_not_http_at_once),
        cmocka_unit_test(test_other_methods),
        cmocka_unit_test(test_oversize),
        cmocka_unit_test(test_allow),
        cmocka_unit_test(test_allow_valid),
        cmocka_unit_test(test_responses),
        cmocka_unit_test(test_format_target),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
