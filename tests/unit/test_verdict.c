/*
 * test_verdict.c — unit tests for the verdict (verdict.h) and the chain
 * lint, from synthetic facts shaped as flow.c gathers them.
 *
 * One test per row of the cause table where a flow can reach it, each
 * asserting the cause, who fixes it and the evidence it rests on; then
 * the refinement of "the client rejected the certificate" by the chain
 * and the client's alert (TLS 1.2 clear chains, TLS 1.3 with and without
 * a probe, mitm's upstream and forged chains), injected faults and what
 * they look like to the client, and the lint on its own (dates around
 * now, wildcards, EKU, key sizes, digests, unparsable entries).  Negative
 * cases: empty facts, facts of the wrong types, a chain of garbage.  The
 * table itself is checked against docs/verdicts.md, so the documentation
 * cannot lose a row.  Last, facts from the inspector itself (inspect.h's
 * tf_inspect_facts) fed with handshakes captured from real OpenSSL runs
 * (tests/data) and with hand-made TLS 1.3 records: the verdict of a real
 * TLS 1.2 handshake, a real no-shared-cipher, and a TLS 1.3 client's alert
 * known by its size (and not taken for its Finished).
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
#include "tlsfault/verdict.h"

/* 2026-01-01T00:00:00Z */
#define NOW ((time_t)1767225600)

/* ------------------------------------------------------------ helpers */

/* JSON written with ' for " (readable in C strings). */
static json_t *
facts_of(const char *text)
{
    char *s = strdup(text);
    json_error_t err;
    for (char *p = s; *p; p++)
        if (*p == '\'')
            *p = '"';
    json_t *j = json_loads(s, 0, &err);
    if (j == NULL)
        fail_msg("bad test JSON at %d: %s\n%s", err.position, err.text, s);
    free(s);
    return j;
}

/* Every verdict, whatever the facts: a known cause, a valid who, a sentence, arrays. */
static void
check_shape(const json_t *v)
{
    const char *cause = json_string_value(json_object_get(v, "cause"));
    assert_non_null(cause);
    assert_non_null(tf_verdict_cause(cause));
    json_t *who = json_object_get(v, "who_fixes");
    assert_true(json_is_null(who) || json_is_string(who));
    if (json_is_string(who)) {
        const char *w = json_string_value(who);
        assert_true(strcmp(w, "client") == 0 || strcmp(w, "server") == 0 ||
                    strcmp(w, "network") == 0 || strcmp(w, "proxy-config") == 0);
    }
    const char *summary = json_string_value(json_object_get(v, "summary"));
    assert_non_null(summary);
    assert_true(strlen(summary) > 20);
    assert_true(json_is_array(json_object_get(v, "evidence")));
    assert_true(json_is_array(json_object_get(v, "findings")));
    assert_non_null(json_string_value(json_object_get(v, "outcome")));
    assert_non_null(json_string_value(json_object_get(v, "stage")));
}

static json_t *
verdict(const char *text)
{
    json_t *f = facts_of(text);
    json_t *v = tf_verdict_build(f, NOW);
    json_decref(f);
    check_shape(v);
    return v;
}

static void
assert_cause(const json_t *v, const char *cause, const char *who)
{
    const char *got = json_string_value(json_object_get(v, "cause"));
    if (got == NULL || strcmp(got, cause) != 0)
        fail_msg("cause %s, want %s\n%s", got ? got : "(none)", cause,
                 json_dumps(v, JSON_INDENT(1)));
    json_t *w = json_object_get(v, "who_fixes");
    if (who == NULL)
        assert_true(json_is_null(w));
    else
        assert_string_equal(json_string_value(w), who);
}

/* Some evidence entry has key == value (a string). */
static bool
has_evidence(const json_t *v, const char *key, const char *value)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(v, "evidence"), i, e)
    {
        const char *s = json_string_value(json_object_get(e, key));
        if (s != NULL && strcmp(s, value) == 0)
            return true;
    }
    return false;
}

/* The evidence entry {field: name}'s value. */
static json_t *
evidence_field(const json_t *v, const char *name)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(v, "evidence"), i, e)
    {
        const char *s = json_string_value(json_object_get(e, "field"));
        if (s != NULL && strcmp(s, name) == 0)
            return json_object_get(e, "value");
    }
    return NULL;
}

static bool
summary_has(const json_t *v, const char *text)
{
    const char *s = json_string_value(json_object_get(v, "summary"));
    return s != NULL && strstr(s, text) != NULL;
}

static bool
has_finding(const json_t *findings, const char *id)
{
    size_t i;
    json_t *f;
    json_array_foreach(findings, i, f)
    {
        if (strcmp(json_string_value(json_object_get(f, "id")), id) == 0)
            return true;
    }
    return false;
}

/* Chains: a good leaf + intermediate for lab.test (valid 2025-06 .. 2027-06). */
#define LEAF_GOOD                                                                                  \
    "{'subject':'CN=lab.test','issuer':'CN=inter','san':['DNS:lab.test','DNS:localhost'],"         \
    "'not_before':'2025-06-01T00:00:00Z','not_after':'2027-06-01T00:00:00Z','key_type':'RSA',"     \
    "'key_bits':2048,'signature_algorithm':'sha256WithRSAEncryption','eku':['serverAuth'],"        \
    "'is_ca':false,'self_signed':false}"
#define INTER                                                                                      \
    "{'subject':'CN=inter','issuer':'CN=root','not_before':'2025-01-01T00:00:00Z',"                \
    "'not_after':'2030-01-01T00:00:00Z','key_type':'RSA','key_bits':2048,"                         \
    "'signature_algorithm':'sha256WithRSAEncryption','is_ca':true,'self_signed':false}"
#define LEAF_WITH(field)                                                                           \
    "{'subject':'CN=lab.test','issuer':'CN=inter','san':['DNS:lab.test'],"                         \
    "'not_before':'2025-06-01T00:00:00Z','not_after':'2027-06-01T00:00:00Z','key_type':'RSA',"     \
    "'key_bits':2048,'signature_algorithm':'sha256WithRSAEncryption','self_signed':false," field   \
    "}"

/* A TLS 1.3 handshake: the client's only protected record was small (an alert). */
#define TLS13_REJECT(extra)                                                                        \
    "{'outcome':'failed','stage':'after change_cipher_spec from client','mode':'passthrough',"     \
    "'state':'inspecting','closed_by':'client','close':'fin','handshake':'incomplete',"            \
    "'sni':'lab.test','version':'TLS 1.3','client_max_version':'TLS 1.3',"                         \
    "'bytes':{'c2s':600,'s2c':3000},'client_hello':{'seen':true,'has_sni':true},"                  \
    "'server_hello':{'version':'TLS 1.3'},"                                                        \
    "'messages':[{'dir':'c2s','type':'client_hello'},{'dir':'s2c','type':'server_hello'},"         \
    "{'dir':'s2c','type':'change_cipher_spec'},{'dir':'s2c','type':'encrypted','count':4},"        \
    "{'dir':'c2s','type':'change_cipher_spec'}],"                                                  \
    "'last_message':{'dir':'c2s','type':'change_cipher_spec'},"                                    \
    "'c2s_protected_alert':{'length':19}" extra "}"

/* ------------------------------------------------------------ the table */

static void
test_table(void **state)
{
    size_t n;
    const struct tf_verdict_cause *t = tf_verdict_causes(&n);
    (void)state;
    assert_true(n >= 30);
    for (size_t i = 0; i < n; i++) {
        assert_non_null(t[i].id);
        assert_non_null(t[i].meaning);
        assert_ptr_equal(tf_verdict_cause(t[i].id), &t[i]);
        for (size_t j = i + 1; j < n; j++)
            assert_string_not_equal(t[i].id, t[j].id);
    }
    assert_null(tf_verdict_cause("no_such_cause"));
    assert_null(tf_verdict_cause(NULL));
    static const char *const required[] = {
        "server_silent",
        "server_reset_after_hello",
        "server_closed_after_hello",
        "not_tls_server",
        "not_tls_client",
        "server_spoke_first",
        "version_mismatch",
        "no_shared_cipher",
        "sni_required",
        "unrecognized_name",
        "cert_rejected",
        "cert_expired",
        "cert_not_yet_valid",
        "cert_wrong_host",
        "cert_missing_intermediate",
        "cert_untrusted_root",
        "cert_self_signed",
        "cert_wrong_eku",
        "cert_weak_key",
        "cert_weak_signature",
        "downgrade_detected",
        "record_tampering",
        "client_timeout",
        "server_timeout",
        "upstream_unreachable",
        "refused_by_route",
        "handshake_ok",
        "injected",
    };
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++)
        assert_non_null(tf_verdict_cause(required[i]));
}

/* docs/verdicts.md has a row for every cause: "| `id` |". */
static void
test_table_documented(void **state)
{
    (void)state;
    const char *src = getenv("TF_SRCDIR");
    char path[1024];
    snprintf(path, sizeof(path), "%s/docs/verdicts.md", src && *src ? src : "../..");
    FILE *fp = fopen(path, "r");
    if (fp == NULL) {
        /* Run by hand from another directory: try the usual build layout. */
        fp = fopen("../docs/verdicts.md", "r");
    }
    assert_non_null(fp);
    static char doc[256 * 1024];
    size_t got = fread(doc, 1, sizeof(doc) - 1, fp);
    doc[got] = '\0';
    fclose(fp);
    size_t n;
    const struct tf_verdict_cause *t = tf_verdict_causes(&n);
    for (size_t i = 0; i < n; i++) {
        char needle[96];
        snprintf(needle, sizeof(needle), "| `%s` |", t[i].id);
        if (strstr(doc, needle) == NULL)
            fail_msg("docs/verdicts.md has no row for %s", t[i].id);
    }
}

/* ------------------------------------------------------------ no answer, resets, not TLS */

static void
test_server_silent(void **state)
{
    (void)state;
    json_t *v =
        verdict("{'outcome':'failed','stage':'after client_hello from client','state':'inspecting',"
                "'closed_by':'client','close':'fin','handshake':'incomplete','duration_ms':2000,"
                "'bytes':{'c2s':517,'s2c':0},'client_hello':{'seen':true},"
                "'last_message':{'dir':'c2s','type':'client_hello'}}");
    assert_cause(v, "server_silent", "server");
    assert_true(summary_has(v, "never answered the ClientHello"));
    assert_true(summary_has(v, "the client gave up"));
    assert_int_equal(json_integer_value(evidence_field(v, "bytes_s2c")), 0);
    assert_true(has_evidence(v, "event", "close"));
    json_decref(v);

    /* tlsfault's own handshake timeout ends it: the same cause. */
    v = verdict("{'outcome':'failed','stage':'after client_hello from client',"
                "'state':'inspecting','closed_by':'proxy','close':'timeout','handshake':"
                "'incomplete','bytes':{'c2s':517,'s2c':0},'client_hello':{'seen':true}}");
    assert_cause(v, "server_silent", "server");
    assert_true(summary_has(v, "handshake timeout"));
    json_decref(v);
}

static void
test_server_reset_closed(void **state)
{
    (void)state;
    json_t *v = verdict("{'outcome':'failed','state':'inspecting','closed_by':'server',"
                        "'close':'reset','handshake':'incomplete','bytes':{'c2s':517,'s2c':0},"
                        "'client_hello':{'seen':true}}");
    assert_cause(v, "server_reset_after_hello", "server");
    assert_true(has_evidence(v, "how", "reset"));
    json_decref(v);
    v = verdict("{'outcome':'failed','state':'inspecting','closed_by':'server','close':'fin',"
                "'handshake':'incomplete','bytes':{'c2s':517,'s2c':0},"
                "'client_hello':{'seen':true}}");
    assert_cause(v, "server_closed_after_hello", "server");
    json_decref(v);
    /* A socket error on the server leg counts as a reset. */
    v = verdict("{'outcome':'failed','state':'inspecting','closed_by':'server','close':'error',"
                "'handshake':'incomplete','bytes':{'c2s':517,'s2c':0},"
                "'client_hello':{'seen':true}}");
    assert_cause(v, "server_reset_after_hello", "server");
    json_decref(v);
}

static void
test_not_tls(void **state)
{
    (void)state;
    json_t *v = verdict("{'outcome':'failed','state':'relaying','closed_by':'server','close':"
                        "'fin','handshake':'incomplete','bytes':{'c2s':517,'s2c':120},"
                        "'client_hello':{'seen':true},'non_tls':{'s2c':'http'},"
                        "'non_tls_at':{'s2c':{'kind':'http','offset':0}}}");
    assert_cause(v, "not_tls_server", "server");
    assert_true(summary_has(v, "HTTP"));
    assert_true(has_evidence(v, "kind", "http"));
    json_decref(v);
    v = verdict("{'outcome':'failed','state':'relaying','closed_by':'client','close':'fin',"
                "'handshake':'incomplete','bytes':{'c2s':18,'s2c':0},"
                "'non_tls':{'c2s':'http'},'non_tls_at':{'c2s':{'kind':'http','offset':0}}}");
    assert_cause(v, "not_tls_client", "client");
    json_decref(v);
    /* Garbage inside a record after the handshake: damage, not a wrong port. */
    v = verdict("{'outcome':'aborted','state':'relaying','closed_by':'client','close':'reset',"
                "'handshake':'complete','bytes':{'c2s':900,'s2c':9000},"
                "'non_tls':{'s2c':'malformed'},'non_tls_at':{'s2c':{'kind':'malformed',"
                "'offset':3}}}");
    assert_cause(v, "record_tampering", "network");
    json_decref(v);
}

static void
test_client_silent(void **state)
{
    (void)state;
    json_t *v = verdict("{'outcome':'failed','state':'inspecting','closed_by':'proxy','close':"
                        "'timeout','handshake':'incomplete','bytes':{'c2s':0,'s2c':0},"
                        "'client_hello':{'seen':false}}");
    assert_cause(v, "client_timeout", "client");
    json_decref(v);
    v = verdict("{'outcome':'aborted','state':'inspecting','closed_by':'client','close':'fin',"
                "'handshake':'incomplete','bytes':{'c2s':0,'s2c':0}}");
    assert_cause(v, "client_aborted", "client");
    json_decref(v);
}

/* ------------------------------------------------------------ versions, suites, names */

static void
test_version_mismatch_server_alert(void **state)
{
    (void)state;
    json_t *v =
        verdict("{'outcome':'failed','stage':'after alert protocol_version from server',"
                "'state':'inspecting','closed_by':'server','close':'fin','handshake':'incomplete',"
                "'client_max_version':'TLS 1.2','bytes':{'c2s':300,'s2c':7},"
                "'client_hello':{'seen':true,'versions':['TLS 1.2','TLS 1.1']},"
                "'alerts':[{'dir':'s2c','level':'fatal','description':'protocol_version'}]}");
    assert_cause(v, "version_mismatch", "server");
    assert_true(has_evidence(v, "description", "protocol_version"));
    assert_string_equal(json_string_value(evidence_field(v, "client_max_version")), "TLS 1.2");
    assert_true(summary_has(v, "TLS 1.2, TLS 1.1"));
    json_decref(v);

    /* An old client: it is the one to fix. */
    v = verdict("{'outcome':'failed','state':'inspecting','closed_by':'server','close':'fin',"
                "'handshake':'incomplete','client_max_version':'TLS 1.0',"
                "'bytes':{'c2s':300,'s2c':7},'client_hello':{'seen':true},"
                "'alerts':[{'dir':'s2c','level':'fatal','description':'protocol_version'}]}");
    assert_cause(v, "version_mismatch", "client");
    assert_true(summary_has(v, "up to TLS 1.0"));
    json_decref(v);
}

static void
test_version_mismatch_client_alert(void **state)
{
    (void)state;
    /* A TLS 1.0-only server: the client refuses the version it chose. */
    json_t *v = verdict(
        "{'outcome':'failed','state':'inspecting','closed_by':'client','close':'fin',"
        "'handshake':'incomplete','client_max_version':'TLS 1.3','bytes':{'c2s':300,'s2c':90},"
        "'client_hello':{'seen':true,'versions':['GREASE','TLS 1.3','TLS 1.2']},"
        "'server_hello':{'version':'TLS 1.0','cipher_suite':'TLS_RSA_WITH_AES_128_CBC_SHA'},"
        "'alerts':[{'dir':'c2s','level':'fatal','description':'protocol_version'}]}");
    assert_cause(v, "version_mismatch", "server");
    assert_string_equal(json_string_value(evidence_field(v, "selected_version")), "TLS 1.0");
    assert_true(summary_has(v, "the server chose TLS 1.0"));
    assert_true(summary_has(v, "TLS 1.3, TLS 1.2"));
    assert_false(summary_has(v, "GREASE"));
    json_decref(v);
}

static void
test_no_shared_cipher(void **state)
{
    (void)state;
    json_t *v = verdict(
        "{'outcome':'failed','state':'inspecting','closed_by':'server','close':'fin',"
        "'handshake':'incomplete','client_max_version':'TLS 1.3','bytes':{'c2s':300,'s2c':7},"
        "'client_hello':{'seen':true,'cipher_suites':['TLS_AES_128_GCM_SHA256',"
        "'TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256']},"
        "'alerts':[{'dir':'s2c','level':'fatal','description':'handshake_failure'}],"
        "'last_message':{'dir':'s2c','type':'alert handshake_failure'}}");
    assert_cause(v, "no_shared_cipher", "server");
    assert_int_equal(json_array_size(evidence_field(v, "offered_cipher_suites")), 2);
    assert_true(summary_has(v, "offering 2 suites"));
    json_decref(v);
    /* After a ServerHello, handshake_failure is something else. */
    v = verdict("{'outcome':'failed','state':'inspecting','closed_by':'server','close':'fin',"
                "'handshake':'incomplete','bytes':{'c2s':300,'s2c':90},"
                "'client_hello':{'seen':true},'server_hello':{'version':'TLS 1.2'},"
                "'alerts':[{'dir':'s2c','level':'fatal','description':'handshake_failure'}]}");
    assert_cause(v, "server_aborted", "server");
    json_decref(v);
}

static void
test_sni(void **state)
{
    (void)state;
    json_t *v = verdict("{'outcome':'failed','state':'inspecting','closed_by':'server','close':"
                        "'fin','handshake':'incomplete','bytes':{'c2s':300,'s2c':7},"
                        "'client_hello':{'seen':true,'has_sni':false},"
                        "'alerts':[{'dir':'s2c','level':'fatal','description':"
                        "'unrecognized_name'}]}");
    assert_cause(v, "sni_required", "client");
    assert_true(json_is_null(evidence_field(v, "sni")));
    json_decref(v);
    v = verdict("{'outcome':'failed','state':'inspecting','closed_by':'server','close':'fin',"
                "'handshake':'incomplete','sni':'other.test','bytes':{'c2s':300,'s2c':7},"
                "'client_hello':{'seen':true,'has_sni':true},"
                "'alerts':[{'dir':'s2c','level':'fatal','description':'unrecognized_name'}]}");
    assert_cause(v, "unrecognized_name", "server");
    assert_true(summary_has(v, "other.test"));
    json_decref(v);
}

/* ------------------------------------------------------------ certificates */

static void
test_cert_refined_tls12(void **state)
{
    (void)state;
    static const struct {
        const char *chain;
        const char *alert;
        const char *cause;
        const char *who;
    } cases[] = {
        {"[" LEAF_WITH("'not_after':'2025-01-01T00:00:00Z'") "," INTER "]", "certificate_expired",
         "cert_expired", "server"},
        {"[" LEAF_WITH("'not_before':'2027-01-01T00:00:00Z'") "," INTER "]", "bad_certificate",
         "cert_not_yet_valid", "server"},
        {"[" LEAF_GOOD "]", "unknown_ca", "cert_missing_intermediate", "server"},
        {"[" LEAF_GOOD "," INTER "]", "unknown_ca", "cert_untrusted_root", "client"},
        {"[{'subject':'CN=lab.test','issuer':'CN=lab.test','san':['DNS:lab.test'],"
         "'not_before':'2025-06-01T00:00:00Z','not_after':'2027-06-01T00:00:00Z',"
         "'key_type':'RSA','key_bits':2048,'signature_algorithm':'sha256WithRSAEncryption',"
         "'self_signed':true}]",
         "unknown_ca", "cert_self_signed", "server"},
        {"[" LEAF_WITH("'san':['DNS:other.test']") "," INTER "]", "handshake_failure",
         "cert_wrong_host", "server"},
        {"[" LEAF_WITH("'eku':['clientAuth']") "," INTER "]", "unsupported_certificate",
         "cert_wrong_eku", "server"},
        {"[" LEAF_WITH("'key_bits':1024") "," INTER "]", "bad_certificate", "cert_weak_key",
         "server"},
        {"[" LEAF_WITH("'signature_algorithm':'sha1WithRSAEncryption'") "," INTER "]",
         "bad_certificate", "cert_weak_signature", "server"},
        /* certificate_unknown points nowhere in particular: the chain's worst problem. */
        {"[" LEAF_WITH("'not_after':'2025-01-01T00:00:00Z'") "]", "certificate_unknown",
         "cert_expired", "server"},
        /* A clean complete chain and a policy refusal: no better answer than "rejected". */
        {"[" LEAF_GOOD "," INTER "]", "certificate_revoked", "cert_rejected", "server"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[8192];
        /* TLS12_CERT_FLOW needs literals: build the same thing by hand. */
        snprintf(text, sizeof(text),
                 "{'outcome':'failed','stage':'after alert %s from client','mode':'passthrough',"
                 "'state':'inspecting','closed_by':'client','close':'fin','handshake':"
                 "'incomplete','sni':'lab.test','version':'TLS 1.2','bytes':{'c2s':600,"
                 "'s2c':3000},'client_hello':{'seen':true,'has_sni':true},'server_hello':"
                 "{'version':'TLS 1.2'},'messages':[{'dir':'c2s','type':'client_hello'},"
                 "{'dir':'s2c','type':'server_hello'},{'dir':'s2c','type':'certificate'},"
                 "{'dir':'s2c','type':'server_hello_done'}],'alerts':[{'dir':'c2s','level':"
                 "'fatal','description':'%s'}],'server_chain':%s}",
                 cases[i].alert, cases[i].alert, cases[i].chain);
        json_t *v = verdict(text);
        assert_cause(v, cases[i].cause, cases[i].who);
        assert_true(has_evidence(v, "description", cases[i].alert));
        assert_string_equal(json_string_value(json_object_get(v, "chain_source")), "handshake");
        json_decref(v);
    }
}

static void
test_cert_closed_after_certificate(void **state)
{
    (void)state;
    /* No alert: the client just closed after the server's clear Certificate flight. */
    json_t *v = verdict(
        "{'outcome':'failed','state':'inspecting','closed_by':'client','close':'fin',"
        "'handshake':'incomplete','sni':'lab.test','bytes':{'c2s':300,'s2c':3000},"
        "'client_hello':{'seen':true,'has_sni':true},'server_hello':{'version':'TLS 1.2'},"
        "'messages':[{'dir':'c2s','type':'client_hello'},{'dir':'s2c','type':'server_hello'},"
        "{'dir':'s2c','type':'certificate'},{'dir':'s2c','type':'server_hello_done'}],"
        "'last_message':{'dir':'s2c','type':'server_hello_done'},"
        "'server_chain':[" LEAF_WITH("'not_after':'2025-01-01T00:00:00Z'") "," INTER "]}");
    assert_cause(v, "cert_expired", "server");
    assert_true(summary_has(v, "right after the server's server_hello_done"));
    json_decref(v);
}

static void
test_cert_tls13(void **state)
{
    (void)state;
    /* Without probe: rejected, the encrypted alert as evidence, a hint to probe. */
    json_t *v = verdict(TLS13_REJECT(""));
    assert_cause(v, "cert_rejected", "server");
    assert_true(has_evidence(v, "inferred", "size"));
    assert_true(summary_has(v, "probe"));
    assert_int_equal(json_array_size(json_object_get(v, "findings")), 0);
    assert_null(json_object_get(v, "probe"));
    json_decref(v);

    /* With the probe's chain: the refined cause, findings from the probe. */
    v = verdict(TLS13_REJECT(",'probe':{'status':'done','version':'TLS 1.3','chain':[" LEAF_WITH(
        "'not_after':'2025-01-01T00:00:00Z'") "," INTER "]}"));
    assert_cause(v, "cert_expired", "server");
    assert_string_equal(json_string_value(json_object_get(v, "chain_source")), "probe");
    json_t *probe = json_object_get(v, "probe");
    assert_string_equal(json_string_value(json_object_get(probe, "status")), "done");
    assert_int_equal(json_integer_value(json_object_get(probe, "chain_length")), 2);
    assert_null(json_object_get(probe, "chain"));
    json_t *f = json_array_get(json_object_get(v, "findings"), 0);
    assert_string_equal(json_string_value(json_object_get(f, "source")), "probe");
    json_decref(v);

    /* The probe did not make it: still cert_rejected, the status says why. */
    v = verdict(TLS13_REJECT(",'probe':{'status':'timeout','error':'no chain'}"));
    assert_cause(v, "cert_rejected", "server");
    assert_string_equal(json_string_value(json_object_get(json_object_get(v, "probe"), "status")),
                        "timeout");
    json_decref(v);

    /* A clean chain from the probe: the root is what the client does not trust. */
    v = verdict(TLS13_REJECT(",'probe':{'status':'cached','chain':[" LEAF_GOOD "," INTER "]}"));
    assert_cause(v, "cert_untrusted_root", "client");
    json_decref(v);
}

static void
test_findings_when_ok(void **state)
{
    (void)state;
    /* Accepted, but expiring in 10 days and without its intermediate. */
    json_t *v = verdict(
        "{'outcome':'ok','stage':'handshake complete','state':'relaying','closed_by':'client',"
        "'close':'fin','handshake':'complete','version':'TLS 1.2','cipher_suite':"
        "'TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256','sni':'lab.test','mode':'passthrough',"
        "'server_chain':[" LEAF_WITH("'not_after':'2026-01-11T00:00:00Z'") "]}");
    assert_cause(v, "handshake_ok", NULL);
    json_t *findings = json_object_get(v, "findings");
    assert_true(has_finding(findings, "cert_expiring_soon"));
    assert_true(has_finding(findings, "cert_missing_intermediate"));
    assert_false(has_finding(findings, "cert_expired"));
    assert_true(summary_has(v, "findings"));
    json_decref(v);
}

/* ------------------------------------------------------------ downgrade, tampering */

static void
test_downgrade(void **state)
{
    (void)state;
    json_t *v =
        verdict("{'outcome':'failed','state':'inspecting','closed_by':'client','close':'fin',"
                "'handshake':'incomplete','bytes':{'c2s':300,'s2c':3000},"
                "'client_hello':{'seen':true,'versions':['TLS 1.2']},"
                "'server_hello':{'version':'TLS 1.2','downgrade_sentinel':'tls12'},"
                "'alerts':[{'dir':'c2s','level':'fatal','description':'illegal_parameter'}]}");
    assert_cause(v, "downgrade_detected", "network");
    assert_string_equal(json_string_value(evidence_field(v, "downgrade_sentinel")), "tls12");
    json_decref(v);
    /* illegal_parameter without the sentinel is the client's complaint about the server. */
    v = verdict("{'outcome':'failed','state':'inspecting','closed_by':'client','close':'fin',"
                "'handshake':'incomplete','bytes':{'c2s':300,'s2c':3000},"
                "'client_hello':{'seen':true},'server_hello':{'version':'TLS 1.2'},"
                "'alerts':[{'dir':'c2s','level':'fatal','description':'illegal_parameter'}]}");
    assert_cause(v, "client_aborted", "server");
    json_decref(v);
    v = verdict("{'outcome':'failed','state':'inspecting','closed_by':'server','close':'fin',"
                "'handshake':'incomplete','bytes':{'c2s':300,'s2c':7},"
                "'client_hello':{'seen':true,'versions':['TLS 1.1']},"
                "'alerts':[{'dir':'s2c','level':'fatal','description':"
                "'inappropriate_fallback'}]}");
    assert_cause(v, "downgrade_detected", "network");
    json_decref(v);
}

static void
test_tampering(void **state)
{
    (void)state;
    json_t *v = verdict("{'outcome':'failed','state':'relaying','closed_by':'server','close':"
                        "'fin','handshake':'complete','bytes':{'c2s':900,'s2c':9000},"
                        "'alerts':[{'dir':'s2c','level':'fatal','description':"
                        "'bad_record_mac'}]}");
    assert_cause(v, "record_tampering", "network");
    json_decref(v);
    /* The server's Finished check (TLS 1.2, clear alert after the client's CCS). */
    v = verdict("{'outcome':'failed','state':'inspecting','closed_by':'server','close':'fin',"
                "'handshake':'incomplete','bytes':{'c2s':900,'s2c':3000},"
                "'client_hello':{'seen':true},'server_hello':{'version':'TLS 1.2'},"
                "'messages':[{'dir':'c2s','type':'client_hello'},{'dir':'s2c','type':"
                "'server_hello'},{'dir':'c2s','type':'change_cipher_spec'}],"
                "'alerts':[{'dir':'s2c','level':'fatal','description':'decrypt_error'}]}");
    assert_cause(v, "handshake_tampered", "network");
    json_decref(v);
}

/* ------------------------------------------------------------ timeouts, reachability, route */

static void
test_timeouts(void **state)
{
    (void)state;
    json_t *v = verdict("{'outcome':'failed','state':'inspecting','closed_by':'proxy','close':"
                        "'timeout','handshake':'incomplete','bytes':{'c2s':900,'s2c':3000},"
                        "'client_hello':{'seen':true},'server_hello':{'version':'TLS 1.2'},"
                        "'last_message':{'dir':'c2s','type':'client_key_exchange'}}");
    assert_cause(v, "server_timeout", "server");
    json_decref(v);
    v = verdict("{'outcome':'failed','state':'inspecting','closed_by':'proxy','close':"
                "'timeout','handshake':'incomplete','bytes':{'c2s':300,'s2c':3000},"
                "'client_hello':{'seen':true},'server_hello':{'version':'TLS 1.2'},"
                "'last_message':{'dir':'s2c','type':'server_hello_done'}}");
    assert_cause(v, "client_timeout", "client");
    json_decref(v);
    v = verdict("{'outcome':'aborted','state':'relaying','closed_by':'proxy','close':'timeout',"
                "'handshake':'complete','last_read':'c2s','bytes':{'c2s':900,'s2c':3000}}");
    assert_cause(v, "server_timeout", "server");
    json_decref(v);
}

static void
test_unreachable_refused(void **state)
{
    (void)state;
    json_t *v = verdict("{'outcome':'failed','state':'connecting','closed_by':'proxy','close':"
                        "'error','error':'Connection refused','upstream':'127.0.0.1:9',"
                        "'handshake':'incomplete','bytes':{'c2s':517,'s2c':0}}");
    assert_cause(v, "upstream_unreachable", "server");
    assert_true(summary_has(v, "127.0.0.1:9"));
    json_decref(v);
    v = verdict("{'outcome':'failed','state':'connecting','closed_by':'proxy','close':"
                "'error','error':'cannot resolve nx.invalid: nodename nor servname provided',"
                "'handshake':'incomplete'}");
    assert_cause(v, "upstream_unreachable", "proxy-config");
    json_decref(v);
    v = verdict("{'outcome':'failed','state':'connecting','closed_by':'proxy','close':"
                "'timeout','error':'upstream connect timed out after 5000 ms'}");
    assert_cause(v, "upstream_unreachable", "network");
    json_decref(v);
    v = verdict("{'outcome':'failed','refused':true,'closed_by':'proxy','close':'refused',"
                "'error':'sni x is not in the allow list'}");
    assert_cause(v, "refused_by_route", "proxy-config");
    assert_true(summary_has(v, "allow list"));
    json_decref(v);
    v = verdict("{'outcome':'aborted','closed_by':'proxy','close':'shutdown',"
                "'handshake':'complete'}");
    assert_cause(v, "proxy_shutdown", "proxy-config");
    json_decref(v);
}

static void
test_handshake_ok(void **state)
{
    (void)state;
    json_t *v = verdict("{'outcome':'ok','stage':'handshake complete','state':'relaying',"
                        "'closed_by':'server','close':'fin','handshake':'complete',"
                        "'version':'TLS 1.3','cipher_suite':'TLS_AES_256_GCM_SHA384'}");
    assert_cause(v, "handshake_ok", NULL);
    assert_true(summary_has(v, "TLS 1.3, TLS_AES_256_GCM_SHA384"));
    assert_string_equal(json_string_value(json_object_get(v, "stage")), "handshake complete");
    assert_null(json_object_get(v, "chain_source"));
    json_decref(v);
}

/* ------------------------------------------------------------ injected */

static void
test_injected(void **state)
{
    (void)state;
    /* drop-server-hello: the client waited; to it the server was silent. */
    json_t *v = verdict(
        "{'outcome':'failed','state':'inspecting','closed_by':'client','close':'fin',"
        "'handshake':'incomplete','bytes':{'c2s':517,'s2c':1400},'client_hello':{'seen':true},"
        "'faults':[{'rule':'no-hello','fault':'drop-server-hello','action':'withheld the "
        "ServerHello'}]}");
    assert_cause(v, "injected", "proxy-config");
    assert_string_equal(json_string_value(json_object_get(v, "rule")), "no-hello");
    assert_string_equal(json_string_value(json_object_get(v, "fault")), "drop-server-hello");
    assert_string_equal(json_string_value(json_object_get(v, "underlying")), "server_silent");
    assert_true(has_evidence(v, "rule", "no-hello"));
    assert_true(summary_has(v, "no-hello"));
    json_decref(v);

    /* An alert fault: what the alert means. */
    v = verdict("{'outcome':'failed','state':'inspecting','closed_by':'proxy','close':'fault',"
                "'error':'fault alert (rule a1): withheld','fault_end':'fin',"
                "'handshake':'incomplete','bytes':{'c2s':517,'s2c':0},"
                "'client_hello':{'seen':true},'faults':[{'rule':'a1','fault':'alert','action':"
                "'withheld the client_hello and answered the client with fatal alert "
                "protocol_version'}]}");
    assert_string_equal(json_string_value(json_object_get(v, "underlying")), "version_mismatch");
    json_decref(v);

    /* A reset fault before the server spoke: a reset after the hello, from the evidence. */
    v = verdict("{'outcome':'failed','state':'inspecting','closed_by':'proxy','close':'fault',"
                "'fault_end':'reset','handshake':'incomplete','bytes':{'c2s':517,'s2c':0},"
                "'client_hello':{'seen':true},'faults':[{'rule':'r','fault':'reset','action':"
                "'reset both after 0 bytes of c2s'}]}");
    assert_string_equal(json_string_value(json_object_get(v, "underlying")),
                        "server_reset_after_hello");
    json_decref(v);

    /* strip-ciphers with nothing left: the server's handshake_failure says it. */
    v = verdict("{'outcome':'failed','state':'inspecting','closed_by':'server','close':'fin',"
                "'handshake':'incomplete','bytes':{'c2s':300,'s2c':7},"
                "'client_hello':{'seen':true,'cipher_suites':['TLS_AES_128_GCM_SHA256']},"
                "'alerts':[{'dir':'s2c','level':'fatal','description':'handshake_failure'}],"
                "'faults':[{'rule':'s','fault':'strip-ciphers','action':'rewrote the "
                "ClientHello'}]}");
    assert_string_equal(json_string_value(json_object_get(v, "underlying")), "no_shared_cipher");
    assert_true(has_evidence(v, "description", "handshake_failure"));
    json_decref(v);

    /* corrupt: damage by definition. */
    v = verdict("{'outcome':'failed','state':'relaying','closed_by':'client','close':'fin',"
                "'handshake':'complete','damaged':true,'bytes':{'c2s':900,'s2c':9000},"
                "'faults':[{'rule':'c','fault':'corrupt','action':'flipped a bit'}]}");
    assert_string_equal(json_string_value(json_object_get(v, "underlying")), "record_tampering");
    json_decref(v);

    /* A fault that fired on a flow that still went well: not the cause. */
    v = verdict("{'outcome':'ok','state':'relaying','closed_by':'client','close':'fin',"
                "'handshake':'complete','faults':[{'rule':'d','fault':'delay','action':"
                "'delaying c2s by 10 ms'}]}");
    assert_cause(v, "handshake_ok", NULL);
    assert_null(json_object_get(v, "underlying"));
    assert_true(has_evidence(v, "rule", "d"));
    json_decref(v);

    /* Two rules: the one the close names is the cause. */
    v = verdict("{'outcome':'failed','state':'inspecting','closed_by':'proxy','close':'fault',"
                "'error':'fault close-after-client-hello (rule second): closed','fault_end':"
                "'fin','handshake':'incomplete','bytes':{'c2s':517,'s2c':0},"
                "'client_hello':{'seen':true},'faults':[{'rule':'first','fault':'delay',"
                "'action':'delaying'},{'rule':'second','fault':'close-after-client-hello',"
                "'action':'closed'}]}");
    assert_string_equal(json_string_value(json_object_get(v, "rule")), "second");
    assert_string_equal(json_string_value(json_object_get(v, "underlying")),
                        "server_closed_after_hello");
    json_decref(v);
}

/* ------------------------------------------------------------ mitm */

static void
test_mitm(void **state)
{
    (void)state;
    /* Upstream verification on: the verify code names the problem. */
    json_t *v = verdict(
        "{'outcome':'failed','mode':'mitm','state':'relaying','closed_by':'proxy',"
        "'close':'error','handshake':'incomplete','sni':'lab.test',"
        "'mitm':{'upstream_leg':{'verify':'certificate has expired'}},"
        "'mitm_facts':{'failed_leg':'upstream','failed_at':'upstream','verify_failed':true,"
        "'verify_code':10,'error':'upstream certificate rejected: certificate has expired',"
        "'upstream_chain':[" LEAF_WITH("'not_after':'2025-01-01T00:00:00Z'") "," INTER "]}}");
    assert_cause(v, "cert_expired", "server");
    assert_string_equal(json_string_value(json_object_get(v, "chain_source")), "upstream");
    assert_int_equal(json_integer_value(evidence_field(v, "verify_code")), 10);
    json_decref(v);

    /* The client does not trust the lab CA: the forged chain is fine, so it is the root. */
    v = verdict("{'outcome':'failed','mode':'mitm','state':'relaying','closed_by':'proxy',"
                "'close':'error','handshake':'incomplete','sni':'lab.test',"
                "'mitm_facts':{'failed_leg':'client','failed_at':'client','client_alert':"
                "{'level':'fatal','description':'unknown_ca'},'forged_chain':[" LEAF_GOOD "," INTER
                "],'upstream_chain':[" LEAF_GOOD "," INTER "]}}");
    assert_cause(v, "cert_untrusted_root", "proxy-config");
    assert_true(summary_has(v, "lab"));
    assert_true(has_evidence(v, "leg", "client"));
    json_decref(v);

    /* The upstream refuses our hello's versions. */
    v = verdict("{'outcome':'failed','mode':'mitm','state':'relaying','closed_by':'proxy',"
                "'close':'error','handshake':'incomplete','client_max_version':'TLS 1.3',"
                "'client_hello':{'seen':true},"
                "'mitm_facts':{'failed_leg':'upstream','failed_at':'upstream',"
                "'upstream_alert':{'level':'fatal','description':'protocol_version'}}}");
    assert_cause(v, "version_mismatch", "server");
    json_decref(v);

    /* The upstream port speaks HTTP. */
    v = verdict("{'outcome':'failed','mode':'mitm','state':'relaying','closed_by':'proxy',"
                "'close':'error','handshake':'incomplete','client_hello':{'seen':true},"
                "'mitm_facts':{'failed_leg':'upstream','failed_at':'upstream',"
                "'error':'upstream handshake failed: wrong version number'}}");
    assert_cause(v, "not_tls_server", "server");
    json_decref(v);

    /* A cert fault: injected, and the underlying cause from the fault's row. */
    v = verdict("{'outcome':'failed','mode':'mitm','state':'relaying','closed_by':'client',"
                "'close':'fin','handshake':'incomplete','faults':[{'rule':'exp','fault':"
                "'cert-expired','action':'served a forged chain'}],"
                "'mitm_facts':{'failed_leg':'client','failed_at':'client','client_alert':"
                "{'level':'fatal','description':'certificate_expired'}}}");
    assert_cause(v, "injected", "proxy-config");
    assert_string_equal(json_string_value(json_object_get(v, "underlying")), "cert_expired");
    json_decref(v);
}

/* ------------------------------------------------------------ lint */

static void
test_lint(void **state)
{
    (void)state;
    json_t *chain =
        facts_of("[{'subject':'CN=a','issuer':'CN=i','san':['DNS:*.lab.test'],"
                 "'not_before':'2025-01-01T00:00:00Z','not_after':'2026-01-20T00:00:00Z',"
                 "'key_type':'EC','key_bits':256,'signature_algorithm':'ecdsa-with-SHA256',"
                 "'eku':['anyExtendedKeyUsage'],'self_signed':false},"
                 "{'unparsable':100},"
                 "{'subject':'CN=i','issuer':'CN=r','not_before':'2025-01-01T00:00:00Z',"
                 "'not_after':'2030-01-01T00:00:00Z','key_type':'RSA','key_bits':1024,"
                 "'signature_algorithm':'sha1WithRSAEncryption','self_signed':false},"
                 "{'subject':'CN=r','issuer':'CN=r','not_before':'2020-01-01T00:00:00Z',"
                 "'not_after':'2040-01-01T00:00:00Z','key_type':'RSA','key_bits':4096,"
                 "'signature_algorithm':'sha1WithRSAEncryption','self_signed':true}]");
    json_t *f = tf_verdict_lint(chain, "www.lab.test", NOW, "handshake");
    /* expiring soon (leaf), weak key + weak signature (intermediate), nothing for the root. */
    assert_int_equal(json_array_size(f), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(f, 0), "id")),
                        "cert_expiring_soon");
    assert_string_equal(json_string_value(json_object_get(json_array_get(f, 0), "severity")),
                        "warning");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(f, 1), "certificate")), 2);
    assert_true(has_finding(f, "cert_weak_key"));
    assert_true(has_finding(f, "cert_weak_signature"));
    json_decref(f);

    /* A wildcard covers one label only. */
    f = tf_verdict_lint(chain, "a.b.lab.test", NOW, NULL);
    assert_true(has_finding(f, "cert_wrong_host"));
    assert_null(json_object_get(json_array_get(f, 0), "source"));
    json_decref(f);
    f = tf_verdict_lint(chain, "lab.test", NOW, NULL);
    assert_true(has_finding(f, "cert_wrong_host"));
    json_decref(f);
    /* No SNI: the name is not judged. */
    f = tf_verdict_lint(chain, NULL, NOW, NULL);
    assert_false(has_finding(f, "cert_wrong_host"));
    json_decref(f);
    json_decref(chain);

    /* Garbage instead of a chain: no findings, no crash. */
    chain = facts_of("[{'unparsable':3}, 7, 'x', null, {'subject':5,'not_after':'garbage'}]");
    f = tf_verdict_lint(chain, "lab.test", NOW, NULL);
    assert_true(json_is_array(f));
    json_decref(f);
    json_decref(chain);
    f = tf_verdict_lint(NULL, "lab.test", NOW, NULL);
    assert_int_equal(json_array_size(f), 0);
    json_decref(f);
}

/* ------------------------------------------------------------ negative */

static void
test_odd_facts(void **state)
{
    (void)state;
    /* Nothing at all: still a verdict of the table. */
    json_t *v = verdict("{}");
    json_decref(v);
    /* Every field of the wrong type. */
    v = verdict("{'outcome':3,'stage':[],'closed_by':{},'close':7,'handshake':true,"
                "'alerts':{'a':1},'bytes':'x','client_hello':[1],'server_hello':'TLS 1.3',"
                "'messages':'m','faults':'f','server_chain':{'x':1},'probe':[],"
                "'mitm_facts':1,'non_tls':[],'non_tls_at':'y','last_message':5}");
    json_decref(v);
    v = verdict("{'alerts':[1,'a',null,{'level':'fatal'},{'level':'fatal','description':7}],"
                "'faults':[3,{'rule':5}],'outcome':'failed'}");
    assert_cause(v, "injected", "proxy-config");
    json_decref(v);
    v = verdict("{'mode':'mitm','mitm_facts':{'failed_leg':'upstream','upstream_alert':"
                "{'description':5}}}");
    json_decref(v);
}

/* ------------------------------------------------------------ more rules */

static void
test_post_handshake_reject(void **state)
{
    (void)state;
    /* curl checks the host name after the handshake, sends nothing and closes. */
    json_t *v = verdict(
        "{'outcome':'ok','stage':'handshake complete','mode':'passthrough','state':'relaying',"
        "'closed_by':'client','close':'fin','handshake':'complete','version':'TLS 1.2',"
        "'sni':'lab.test','data_records':{'c2s':0,'s2c':0},"
        "'server_chain':[" LEAF_WITH("'san':['DNS:other.test']") "," INTER "]}");
    assert_cause(v, "cert_wrong_host", "server");
    assert_string_equal(json_string_value(json_object_get(v, "outcome")), "failed");
    assert_int_equal(json_integer_value(evidence_field(v, "client_data_records")), 0);
    json_decref(v);
    /* The same with a clean chain: a client that only connected. */
    v = verdict("{'outcome':'ok','stage':'handshake complete','mode':'passthrough',"
                "'state':'relaying','closed_by':'client','close':'fin','handshake':'complete',"
                "'version':'TLS 1.2','sni':'lab.test','data_records':{'c2s':0,'s2c':0},"
                "'server_chain':[" LEAF_GOOD "," INTER "]}");
    assert_cause(v, "handshake_ok", NULL);
    assert_string_equal(json_string_value(json_object_get(v, "outcome")), "ok");
    json_decref(v);
    /* Data went: whatever the chain says, the handshake was fine for this client. */
    v = verdict("{'outcome':'ok','stage':'handshake complete','mode':'passthrough',"
                "'state':'relaying','closed_by':'client','close':'fin','handshake':'complete',"
                "'version':'TLS 1.2','sni':'lab.test','data_records':{'c2s':1,'s2c':3},"
                "'server_chain':[" LEAF_WITH("'san':['DNS:other.test']") "," INTER "]}");
    assert_cause(v, "handshake_ok", NULL);
    assert_true(has_finding(json_object_get(v, "findings"), "cert_wrong_host"));
    json_decref(v);
}

static void
test_old_version(void **state)
{
    (void)state;
    /* The server chose TLS 1.0; the client's policy refuses its signatures (internal_error). */
    json_t *v =
        verdict("{'outcome':'failed','state':'inspecting','closed_by':'client','close':'reset',"
                "'handshake':'incomplete','version':'TLS 1.0','client_max_version':'TLS 1.3',"
                "'bytes':{'c2s':300,'s2c':2000},'client_hello':{'seen':true},"
                "'server_hello':{'version':'TLS 1.0'},"
                "'alerts':[{'dir':'c2s','level':'fatal','description':'internal_error'}]}");
    assert_cause(v, "version_mismatch", "server");
    assert_string_equal(json_string_value(evidence_field(v, "selected_version")), "TLS 1.0");
    assert_true(has_finding(json_object_get(v, "findings"), "protocol_deprecated"));
    json_decref(v);
    /* Or it just closed. */
    v = verdict("{'outcome':'failed','state':'inspecting','closed_by':'client','close':'fin',"
                "'handshake':'incomplete','client_max_version':'TLS 1.2',"
                "'bytes':{'c2s':300,'s2c':2000},'client_hello':{'seen':true},"
                "'server_hello':{'version':'TLS 1.1'},"
                "'last_message':{'dir':'s2c','type':'server_hello'}}");
    assert_cause(v, "version_mismatch", "server");
    json_decref(v);
    /* A client that itself offers only TLS 1.0 and gets it is fine: a warning only. */
    v = verdict("{'outcome':'ok','state':'relaying','closed_by':'client','close':'fin',"
                "'handshake':'complete','version':'TLS 1.0','client_max_version':'TLS 1.0'}");
    assert_cause(v, "handshake_ok", NULL);
    json_t *f = json_array_get(json_object_get(v, "findings"), 0);
    assert_string_equal(json_string_value(json_object_get(f, "id")), "protocol_deprecated");
    assert_string_equal(json_string_value(json_object_get(f, "severity")), "warning");
    json_decref(v);
}

static void
test_mitm_forged_findings(void **state)
{
    (void)state;
    /* A cert fault and a client that checks the name after the handshake, then leaves. */
    json_t *w = verdict(
        "{'outcome':'ok','mode':'mitm','state':'relaying','closed_by':'client',"
        "'close':'fin','handshake':'complete','version':'TLS 1.3','sni':'lab.test',"
        "'data_records':{'c2s':0,'s2c':0},'faults':[{'rule':'h','fault':"
        "'cert-wrong-host','action':'forged'}],'mitm_facts':{'forged_chain':[" LEAF_WITH(
            "'san':['DNS:wrong.host.invalid']") "],'upstream_chain':[" LEAF_GOOD "," INTER "]}}");
    assert_cause(w, "injected", "proxy-config");
    assert_string_equal(json_string_value(json_object_get(w, "underlying")), "cert_wrong_host");
    assert_string_equal(json_string_value(json_object_get(w, "outcome")), "failed");
    /* The upstream's own chain is clean: no findings about it. */
    assert_int_equal(json_array_size(json_object_get(w, "findings")), 0);
    json_decref(w);
    /* The client judged the forged chain: its finding, not the upstream's. */
    json_t *v =
        verdict("{'outcome':'failed','mode':'mitm','state':'relaying','closed_by':'proxy',"
                "'close':'error','handshake':'incomplete','sni':'lab.test',"
                "'mitm_facts':{'failed_leg':'client','failed_at':'client','client_alert':"
                "{'level':'fatal','description':'certificate_expired'},'forged_chain':[" LEAF_WITH(
                    "'not_after':'2025-01-01T00:00:00Z'") "," INTER "],'upstream_chain':[" LEAF_GOOD
                                                          "," INTER "]}}");
    assert_cause(v, "cert_expired", "server");
    assert_true(has_evidence(v, "source", "forged"));
    assert_int_equal(json_array_size(json_object_get(v, "findings")), 0);
    json_decref(v);
    /* The same under a fault: the cause string must outlive the forged chain's lint. */
    v = verdict("{'outcome':'failed','mode':'mitm','state':'relaying','closed_by':'proxy',"
                "'close':'error','handshake':'incomplete','sni':'lab.test',"
                "'faults':[{'rule':'e','fault':'cert-expired','action':'forged'}],"
                "'mitm_facts':{'failed_leg':'client','failed_at':'client','client_alert':"
                "{'level':'fatal','description':'certificate_expired'},'forged_chain':[" LEAF_WITH(
                    "'not_after':'2025-01-01T00:00:00Z'") "]}}");
    assert_cause(v, "injected", "proxy-config");
    assert_string_equal(json_string_value(json_object_get(v, "underlying")), "cert_expired");
    assert_true(summary_has(v, "cert_expired"));
    json_decref(v);
}

/* ------------------------------------------------------------ facts from the inspector */

static void
ignore_event(void *arg, const char *event, enum tf_dir dir, json_t *fields)
{
    (void)arg;
    (void)event;
    (void)dir;
    json_decref(fields);
}

/* The records of a raw stream, one at a time. */
struct records {
    struct blob b;
    size_t off;
};

static bool
next_record(struct records *r, const uint8_t **p, size_t *n, uint8_t *type)
{
    if (r->off + 5 > r->b.n)
        return false;
    size_t len = ((size_t)r->b.p[r->off + 3] << 8) | r->b.p[r->off + 4];
    assert_true(r->off + 5 + len <= r->b.n);
    *p = r->b.p + r->off;
    *n = 5 + len;
    *type = r->b.p[r->off];
    r->off += 5 + len;
    return true;
}

static uint8_t
peek_type(const struct records *r)
{
    return r->off + 5 <= r->b.n ? r->b.p[r->off] : 0;
}

/*
 * Replays a captured TLS 1.2 or 1.3 handshake in flights: the ClientHello;
 * the server's clear handshake records (TLS 1.3: all it sent); the client's
 * records up to its first protected one after its ChangeCipherSpec; the
 * rest of the server's; the rest of the client's.
 */
static void
replay_capture(struct tf_inspect *ins, const char *name)
{
    char path[256];
    struct records c, s;
    const uint8_t *p;
    size_t n;
    uint8_t type;
    snprintf(path, sizeof(path), "%s.c2s.bin", name);
    c.b = load(path);
    c.off = 0;
    snprintf(path, sizeof(path), "%s.s2c.bin", name);
    s.b = load(path);
    s.off = 0;
    assert_true(next_record(&c, &p, &n, &type));
    tf_inspect_feed(ins, TF_DIR_C2S, p, n);
    bool tls13 = false;
    while (peek_type(&s) == 22 && next_record(&s, &p, &n, &type)) {
        tf_inspect_feed(ins, TF_DIR_S2C, p, n);
        tls13 = tf_inspect_version(ins) == 0x0304;
        if (tls13)
            break;
    }
    if (tls13)
        while (next_record(&s, &p, &n, &type))
            tf_inspect_feed(ins, TF_DIR_S2C, p, n);
    bool ccs = false;
    while (next_record(&c, &p, &n, &type)) {
        tf_inspect_feed(ins, TF_DIR_C2S, p, n);
        if (type == 20)
            ccs = true;
        else if (ccs)
            break;
    }
    while (next_record(&s, &p, &n, &type))
        tf_inspect_feed(ins, TF_DIR_S2C, p, n);
    while (next_record(&c, &p, &n, &type))
        tf_inspect_feed(ins, TF_DIR_C2S, p, n);
    free(c.b.p);
    free(s.b.p);
}

/* The facts flow.c would gather, with the flow's end as given. */
static json_t *
facts_from(struct tf_inspect *ins, const char *end)
{
    json_t *f = facts_of(end);
    tf_inspect_summarize(ins, f);
    tf_inspect_facts(ins, f);
    char stage[96];
    tf_inspect_stage(ins, stage, sizeof(stage));
    json_object_set_new(f, "stage", json_string(stage));
    return f;
}

static void
test_inspector_tls12(void **state)
{
    (void)state;
    struct tf_inspect *ins = tf_inspect_new(1 << 16, ignore_event, NULL);
    replay_capture(ins, "openssl-tls12-ecdhe-rsa");
    assert_true(tf_inspect_handshake_done(ins));
    json_t *f = facts_from(ins, "{'outcome':'ok','mode':'passthrough','state':'relaying',"
                                "'closed_by':'client','close':'fin'}");
    json_t *ch = json_object_get(f, "client_hello");
    assert_true(json_is_true(json_object_get(ch, "seen")));
    /* A ServerHello came: the offered suites cannot matter and are not named. */
    assert_null(json_object_get(ch, "cipher_suites"));
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(f, "server_hello"), "version")),
        "TLS 1.2");
    assert_true(json_array_size(json_object_get(f, "server_chain")) >= 2);
    json_t *m0 = json_array_get(json_object_get(f, "messages"), 0);
    assert_string_equal(json_string_value(json_object_get(m0, "type")), "client_hello");
    assert_non_null(json_object_get(f, "data_records"));
    assert_null(json_object_get(f, "c2s_protected_alert"));
    json_t *v = tf_verdict_build(f, NOW);
    check_shape(v);
    assert_cause(v, "handshake_ok", NULL);
    assert_string_equal(json_string_value(json_object_get(v, "chain_source")), "handshake");
    json_decref(v);
    json_decref(f);
    tf_inspect_free(ins);
}

static void
test_inspector_no_shared_cipher(void **state)
{
    (void)state;
    struct tf_inspect *ins = tf_inspect_new(1 << 16, ignore_event, NULL);
    replay_capture(ins, "openssl-tls12-no-shared-cipher");
    json_t *f = facts_from(ins, "{'outcome':'failed','mode':'passthrough','state':'inspecting',"
                                "'closed_by':'server','close':'fin','bytes':{'c2s':160,'s2c':7}}");
    assert_true(json_array_size(
                    json_object_get(json_object_get(f, "client_hello"), "cipher_suites")) > 0);
    json_t *v = tf_verdict_build(f, NOW);
    check_shape(v);
    assert_cause(v, "no_shared_cipher", "server");
    assert_true(json_array_size(evidence_field(v, "offered_cipher_suites")) > 0);
    json_decref(v);
    json_decref(f);
    tf_inspect_free(ins);
}

/* A record of type with len bytes of filler. */
static void
feed_record(struct tf_inspect *ins, enum tf_dir dir, uint8_t type, size_t len)
{
    uint8_t *r = calloc(1, 5 + len);
    r[0] = type;
    r[1] = 3;
    r[2] = 3;
    r[3] = (uint8_t)(len >> 8);
    r[4] = (uint8_t)len;
    tf_inspect_feed(ins, dir, r, 5 + len);
    free(r);
}

static void
test_inspector_tls13_small_alert(void **state)
{
    (void)state;
    struct records c, s;
    const uint8_t *p;
    size_t n;
    uint8_t type;

    for (int early = 0; early < 2; early++) {
        struct tf_inspect *ins = tf_inspect_new(1 << 16, ignore_event, NULL);
        c.b = load("openssl-tls13.c2s.bin");
        s.b = load("openssl-tls13.s2c.bin");
        c.off = s.off = 0;
        assert_true(next_record(&c, &p, &n, &type));
        tf_inspect_feed(ins, TF_DIR_C2S, p, n); /* ClientHello */
        assert_true(next_record(&s, &p, &n, &type));
        tf_inspect_feed(ins, TF_DIR_S2C, p, n); /* ServerHello */
        assert_int_equal(tf_inspect_version(ins), 0x0304);
        feed_record(ins, TF_DIR_S2C, 20, 1);    /* its dummy ChangeCipherSpec */
        feed_record(ins, TF_DIR_S2C, 23, 2000); /* its protected flight */
        feed_record(ins, TF_DIR_C2S, 20, 1);
        feed_record(ins, TF_DIR_C2S, 23, 19); /* an alert, or EndOfEarlyData */
        assert_false(tf_inspect_handshake_done(ins));
        if (early) {
            feed_record(ins, TF_DIR_C2S, 23, 53); /* then the Finished */
            assert_true(tf_inspect_handshake_done(ins));
        }
        json_t *f = facts_from(ins, "{'mode':'passthrough','state':'inspecting','closed_by':"
                                    "'client','close':'fin','outcome':'failed',"
                                    "'bytes':{'c2s':600,'s2c':2100}}");
        if (early) {
            assert_null(json_object_get(f, "c2s_protected_alert"));
        } else {
            assert_int_equal(json_integer_value(json_object_get(
                                 json_object_get(f, "c2s_protected_alert"), "length")),
                             19);
            json_t *v = tf_verdict_build(f, NOW);
            check_shape(v);
            assert_cause(v, "cert_rejected", "server");
            assert_true(has_evidence(v, "inferred", "size"));
            json_decref(v);
        }
        json_decref(f);
        free(c.b.p);
        free(s.b.p);
        tf_inspect_free(ins);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_table_documented),
        cmocka_unit_test(test_server_silent),
        cmocka_unit_test(test_server_reset_closed),
        cmocka_unit_test(test_not_tls),
        cmocka_unit_test(test_client_silent),
        cmocka_unit_test(test_version_mismatch_server_alert),
        cmocka_unit_test(test_version_mismatch_client_alert),
        cmocka_unit_test(test_no_shared_cipher),
        cmocka_unit_test(test_sni),
        cmocka_unit_test(test_cert_refined_tls12),
        cmocka_unit_test(test_cert_closed_after_certificate),
        cmocka_unit_test(test_cert_tls13),
        cmocka_unit_test(test_findings_when_ok),
        cmocka_unit_test(test_downgrade),
        cmocka_unit_test(test_tampering),
        cmocka_unit_test(test_timeouts),
        cmocka_unit_test(test_unreachable_refused),
        cmocka_unit_test(test_handshake_ok),
        cmocka_unit_test(test_injected),
        cmocka_unit_test(test_mitm),
        cmocka_unit_test(test_lint),
        cmocka_unit_test(test_odd_facts),
        cmocka_unit_test(test_post_handshake_reject),
        cmocka_unit_test(test_old_version),
        cmocka_unit_test(test_mitm_forged_findings),
        cmocka_unit_test(test_inspector_tls12),
        cmocka_unit_test(test_inspector_no_shared_cipher),
        cmocka_unit_test(test_inspector_tls13_small_alert),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
