/*
 * test_fault.c — the fault catalogue, rule parsing and rule matching.
 *
 * The catalogue is checked for consistency (unique names, every id once,
 * every default parses and lands where the docs say); the --fault spec and
 * each value parser are checked on good input and, with the exact message,
 * on bad input; matching is checked criterion by criterion (listener,
 * client CIDR v4/v6, SNI glob and "absent"), then counting (nth, every,
 * first, times), the determinism of the probability draws, and that
 * concurrent workers never fire a rule more often than times allows.
 * For the control API: references, disabled rules, rules to and from JSON
 * with the exact messages, and rebuilding a changed rule.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tlsfault/fault.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static struct tf_fault_rule *
spec_ok(const char *spec)
{
    char err[1024];
    struct tf_fault_rule *rule = tf_fault_rule_parse_spec(spec, "fault1", err, sizeof(err));
    if (rule == NULL)
        fail_msg("spec \"%s\" refused: %s", spec, err);
    return rule;
}

static struct tf_fault_rule *
rule_of(const char *fault)
{
    const struct tf_fault_def *def = tf_fault_find(fault);
    assert_non_null(def);
    struct tf_fault_rule *rule = tf_fault_rule_new(def, "r");
    assert_non_null(rule);
    return rule;
}

static void
set_ok(struct tf_fault_rule *rule, const char *key, const char *value)
{
    char err[1024];
    if (!tf_fault_rule_set(rule, key, value, true, err, sizeof(err)))
        fail_msg("%s=%s refused: %s", key, value, err);
}

static void
set_bad(struct tf_fault_rule *rule, const char *key, const char *value, const char *want)
{
    char err[1024];
    if (tf_fault_rule_set(rule, key, value, true, err, sizeof(err)))
        fail_msg("%s=%s accepted, expected: %s", key, value, want);
    assert_string_equal(err, want);
}

/* ------------------------------------------------------------ catalogue */

static void
test_catalogue_consistent(void **state)
{
    unsigned seen_id[TF_FAULT_COUNT] = {0};

    (void)state;
    assert_int_equal(tf_fault_catalogue_len, TF_FAULT_COUNT);
    for (size_t i = 0; i < tf_fault_catalogue_len; i++) {
        const struct tf_fault_def *d = &tf_fault_catalogue[i];

        assert_true((unsigned)d->id < TF_FAULT_COUNT);
        seen_id[d->id]++;
        assert_non_null(d->name);
        assert_non_null(d->help);
        assert_non_null(d->client_sees);
        assert_true(strlen(d->help) > 0 && strlen(d->client_sees) > 0);
        assert_ptr_equal(tf_fault_find(d->name), d);
        /* Every fault of the catalogue is available in this version, mitm ones included. */
        assert_true(d->available);
        assert_true(d->n_params <= TF_FAULT_MAX_PARAMS);
        for (size_t j = 0; j < i; j++)
            if (strcmp(tf_fault_catalogue[j].name, d->name) == 0)
                fail_msg("fault \"%s\" listed twice", d->name);
        for (size_t p = 0; p < d->n_params; p++) {
            const struct tf_fault_param *pp = &d->params[p];
            assert_non_null(pp->name);
            assert_non_null(pp->def);
            assert_non_null(pp->help);
            assert_true(pp->offset + pp->size <= sizeof(struct tf_fault_args));
            /* Keys a rule has besides its parameters. */
            assert_string_not_equal(pp->name, "name");
            assert_string_not_equal(pp->name, "fault");
            assert_string_not_equal(pp->name, "match");
            for (size_t q = 0; q < p; q++)
                assert_string_not_equal(d->params[q].name, pp->name);
        }
        for (size_t p = d->n_params; p < TF_FAULT_MAX_PARAMS; p++)
            assert_null(d->params[p].name);
    }
    for (unsigned id = 0; id < TF_FAULT_COUNT; id++)
        if (seen_id[id] != 1)
            fail_msg("fault id %u is in the catalogue %u times", id, seen_id[id]);
    assert_null(tf_fault_find("no-such-fault"));
    assert_null(tf_fault_find(NULL));
    assert_null(tf_fault_find("Delay"));
}

/* Each default is in the syntax a user writes: it parses, and setting it again changes nothing. */
static void
test_catalogue_defaults_parse(void **state)
{
    char err[512];

    (void)state;
    for (size_t i = 0; i < tf_fault_catalogue_len; i++) {
        const struct tf_fault_def *d = &tf_fault_catalogue[i];
        struct tf_fault_rule *rule = tf_fault_rule_new(d, "r");
        if (rule == NULL)
            fail_msg("fault \"%s\": a default does not parse", d->name);
        for (size_t p = 0; p < d->n_params; p++)
            if (!tf_fault_rule_set(rule, d->params[p].name, d->params[p].def, false, err,
                                   sizeof(err)))
                fail_msg("%s: %s=\"%s\": %s", d->name, d->params[p].name, d->params[p].def, err);
        assert_string_equal(rule->name, "r");
        assert_ptr_equal(rule->def, d);
        assert_true(rule->match.probability == 1.0);
        assert_int_equal(rule->match.seed, 1);
        assert_int_equal(rule->match.prefix, 0);
        assert_int_equal(rule->match.net.ss_family, 0);
        assert_null(rule->match.listener);
        assert_null(rule->match.sni);
        assert_int_equal(rule->match.times, 0);
        assert_int_equal(atomic_load(&rule->seen), 0);
        assert_int_equal(atomic_load(&rule->fired), 0);
        tf_fault_rule_free(rule);
    }
    tf_fault_rule_free(NULL);
    assert_null(tf_fault_rule_new(NULL, "r"));
}

/* The defaults docs/faults.md promises, where the runtime reads them. */
static void
test_catalogue_default_values(void **state)
{
    struct tf_fault_rule *r;

    (void)state;
    r = rule_of("delay");
    assert_int_equal(r->args.ms, 1000);
    assert_int_equal(r->args.jitter_ms, 0);
    assert_int_equal(r->args.dir, TF_FAULT_DIR_BOTH);
    assert_int_equal(r->args.after_bytes, 0);
    assert_int_equal(r->args.after, -1); /* not an alert: the fault's own trigger */
    tf_fault_rule_free(r);

    r = rule_of("bandwidth");
    assert_int_equal(r->args.rate, 10240);
    tf_fault_rule_free(r);

    r = rule_of("reset");
    assert_int_equal(r->args.dir, TF_FAULT_DIR_C2S);
    assert_int_equal(r->args.to, TF_FAULT_PEER_BOTH);
    tf_fault_rule_free(r);

    r = rule_of("slice");
    assert_int_equal(r->args.size, 16);
    assert_int_equal(r->args.pause_ms, 10);
    tf_fault_rule_free(r);

    r = rule_of("alert");
    assert_int_equal(r->args.description, 40); /* handshake_failure */
    assert_int_equal(r->args.level, 2);
    assert_int_equal(r->args.after, 1);        /* client_hello */
    assert_int_equal(r->args.dir, 0);          /* auto until complete */
    tf_fault_rule_complete(r);
    assert_int_equal(r->args.dir, TF_FAULT_DIR_C2S);
    tf_fault_rule_free(r);

    r = rule_of("plaintext-response");
    assert_int_equal(r->args.status, 400);
    assert_true(r->args.bytes_len > 10);
    assert_memory_equal(r->args.bytes, "<html>", 6);
    assert_memory_equal(r->args.bytes + r->args.bytes_len - 2, "\r\n", 2);
    tf_fault_rule_free(r);

    r = rule_of("downgrade");
    assert_int_equal(r->args.version, 0x0303);
    assert_false(r->args.remove_extension);
    tf_fault_rule_free(r);

    r = rule_of("strip-ciphers");
    assert_string_equal(r->args.pattern, "*CHACHA20*");
    tf_fault_rule_free(r);

    r = rule_of("record-version-too-high");
    assert_int_equal(r->args.version, 0x0400);
    assert_string_equal(r->args.fields, "record");
    tf_fault_rule_free(r);

    r = rule_of("strip-intermediates");
    assert_int_equal(r->args.keep_mask, 1);
    tf_fault_rule_free(r);

    r = rule_of("append-bytes");
    assert_int_equal(r->args.dir, TF_FAULT_DIR_S2C);
    assert_int_equal(r->args.record, 0);
    assert_int_equal(r->args.bytes_len, 9);
    assert_memory_equal(r->args.bytes, "INSPECTED", 9);
    tf_fault_rule_free(r);

    r = rule_of("corrupt");
    assert_int_equal(r->args.offset, 0);
    assert_int_equal(r->args.xor_mask, 1);
    tf_fault_rule_free(r);

    r = rule_of("truncate");
    assert_int_equal(r->args.keep, 0);
    assert_true(r->args.then_close);
    tf_fault_rule_free(r);

    r = rule_of("duplicate");
    assert_int_equal(r->args.times, 1);
    tf_fault_rule_free(r);

    r = rule_of("fragment");
    assert_int_equal(r->args.size, 16);
    assert_int_equal(r->args.dir, TF_FAULT_DIR_BOTH);
    tf_fault_rule_free(r);

    /* mitm */
    r = rule_of("cert-expired");
    assert_int_equal(r->args.seconds, 2592000); /* 30 days */
    tf_fault_rule_free(r);

    r = rule_of("cert-not-yet-valid");
    assert_int_equal(r->args.seconds, 2592000);
    tf_fault_rule_free(r);

    r = rule_of("cert-wrong-host");
    assert_string_equal(r->args.host, "wrong.host.invalid");
    tf_fault_rule_free(r);

    r = rule_of("server-versions");
    assert_int_equal(r->args.min_version, 0x0301);
    assert_int_equal(r->args.version, 0x0301);
    tf_fault_rule_free(r);

    r = rule_of("server-ciphers");
    assert_string_equal(r->args.ciphers, "AES128-CCM8");
    assert_string_equal(r->args.ciphersuites, "TLS_AES_128_CCM_8_SHA256");
    tf_fault_rule_free(r);

    static const char *const bare[] = {"cert-self-signed", "cert-untrusted-root",
                                       "cert-no-intermediate", "cert-wrong-eku", "cert-sha1",
                                       "cert-weak-key", "require-sni"};
    for (size_t i = 0; i < ARRAY_LEN(bare); i++) {
        const struct tf_fault_def *d = tf_fault_find(bare[i]);
        assert_non_null(d);
        assert_int_equal(d->mode, TF_FAULT_MODE_MITM);
        assert_int_equal(d->n_params, 0);
    }
}

/* What the client sees, as docs/faults.md and the integration tests say it. */
static void
test_catalogue_mitm_client_sees(void **state)
{
    static const struct {
        const char *name, *sees;
    } cases[] = {
        {"cert-expired", "certificate has expired (curl 60)"},
        {"cert-not-yet-valid", "certificate is not yet valid (curl 60)"},
        {"cert-wrong-host",
         "no alternative certificate subject name matches target host name (curl 60)"},
        {"cert-self-signed", "self-signed certificate (curl 60)"},
        {"cert-untrusted-root", "unable to get local issuer certificate (curl 60)"},
        {"cert-no-intermediate", "unable to get local issuer certificate (curl 60)"},
        {"cert-wrong-eku", "unsupported certificate purpose (curl 60)"},
        {"cert-sha1", "ca md too weak (curl 60)"},
        {"cert-weak-key", "ee key too small (curl 60)"},
        {"server-versions", "alert protocol version / unsupported protocol (curl 35)"},
        {"server-ciphers", "alert handshake failure (curl 35)"},
        {"require-sni", "alert unrecognized name (curl 35)"},
    };
    size_t n_mitm = 0;

    (void)state;
    for (size_t i = 0; i < tf_fault_catalogue_len; i++)
        n_mitm += tf_fault_catalogue[i].mode == TF_FAULT_MODE_MITM;
    assert_int_equal(n_mitm, ARRAY_LEN(cases));
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        const struct tf_fault_def *d = tf_fault_find(cases[i].name);
        assert_non_null(d);
        assert_int_equal(d->mode, TF_FAULT_MODE_MITM);
        assert_string_equal(d->client_sees, cases[i].sees);
    }
}

/* The mitm faults' parameters, and what only the whole rule can judge. */
static void
test_values_mitm(void **state)
{
    char err[256], buf[16];
    uint16_t v = 0;

    (void)state;
    struct tf_fault_rule *r = spec_ok("cert-expired:seconds=1");
    assert_int_equal(r->args.seconds, 1);
    tf_fault_rule_free(r);
    r = spec_ok("cert-not-yet-valid:seconds=3153600000");
    assert_int_equal(r->args.seconds, 3153600000ULL);
    tf_fault_rule_free(r);
    r = spec_ok("cert-wrong-host:host=other.lab.test,sni=*.lab.test");
    assert_string_equal(r->args.host, "other.lab.test");
    assert_string_equal(r->match.sni, "*.lab.test");
    tf_fault_rule_free(r);
    r = spec_ok("server-versions:min=1.2,max=0x0304");
    assert_int_equal(r->args.min_version, 0x0303);
    assert_int_equal(r->args.version, 0x0304);
    assert_true(tf_fault_rule_check(r, err, sizeof(err)));
    /* A setter judges one value; the check judges the pair. */
    set_ok(r, "min", "TLS1.3");
    set_ok(r, "max", "TLS1.1");
    assert_false(tf_fault_rule_check(r, err, sizeof(err)));
    assert_string_equal(err, "\"min\" (TLS1.3) is above \"max\" (TLS1.1)");
    tf_fault_rule_free(r);
    r = spec_ok("server-versions:min=TLS1.0,max=TLS1.0");
    assert_true(tf_fault_rule_check(r, err, sizeof(err)));
    tf_fault_rule_free(r);
    /* Cipher strings hold ':' and '!': only the first ':' ends the fault's name. */
    r = spec_ok("server-ciphers:ciphers=AES256-SHA:!aNULL,ciphersuites=TLS_AES_256_GCM_SHA384");
    assert_string_equal(r->args.ciphers, "AES256-SHA:!aNULL");
    assert_string_equal(r->args.ciphersuites, "TLS_AES_256_GCM_SHA384");
    tf_fault_rule_free(r);
    r = spec_ok("require-sni:listener=lab");
    assert_int_equal(r->def->id, TF_FAULT_REQUIRE_SNI);
    assert_true(tf_fault_rule_check(r, NULL, 0));
    tf_fault_rule_free(r);
    assert_false(tf_fault_rule_check(NULL, err, sizeof(err)));

    /* The version words the configuration's min_version/max_version share. */
    assert_true(tf_fault_parse_version("TLS1.2", &v));
    assert_int_equal(v, 0x0303);
    assert_true(tf_fault_parse_version("0x0304", &v));
    assert_int_equal(v, 0x0304);
    assert_false(tf_fault_parse_version("TLS1.4", &v));
    assert_int_equal(v, 0x0304); /* untouched on failure */
    assert_false(tf_fault_parse_version(NULL, &v));
    assert_false(tf_fault_parse_version("1.2", NULL));
    assert_string_equal(tf_fault_version_name(0x0301, buf, sizeof(buf)), "TLS1.0");
    assert_string_equal(tf_fault_version_name(0x0300, buf, sizeof(buf)), "SSL3.0");
    assert_string_equal(tf_fault_version_name(0x7f1c, buf, sizeof(buf)), "0x7f1c");
}

static void
test_catalogue_names(void **state)
{
    char buf[1024], small[12];

    (void)state;
    tf_fault_names(buf, sizeof(buf));
    assert_non_null(
        strstr(buf, "delay, bandwidth, stall, reset, close, slice, drop-server-hello, "));
    assert_non_null(strstr(buf, ", fragment, cert-expired, "));
    assert_non_null(strstr(buf, ", server-ciphers, require-sni"));
    assert_int_equal(buf[strlen(buf) - 1], 'i');
    tf_fault_names(small, sizeof(small));
    assert_int_equal(strlen(small), sizeof(small) - 1); /* cut, terminated */
    tf_fault_names(NULL, 0);

    assert_string_equal(tf_fault_mode_name(TF_FAULT_MODE_NETWORK), "network");
    assert_string_equal(tf_fault_mode_name(TF_FAULT_MODE_PASSTHROUGH), "passthrough");
    assert_string_equal(tf_fault_mode_name(TF_FAULT_MODE_MITM), "mitm");
}

/* --list-faults: every fault on a line of its own, nothing past column 79. */
static void
test_catalogue_print(void **state)
{
    char *text = NULL;
    size_t len = 0;

    (void)state;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    tf_fault_print_catalogue(f);
    fclose(f);

    for (size_t i = 0; i < tf_fault_catalogue_len; i++) {
        const struct tf_fault_def *d = &tf_fault_catalogue[i];
        char head[128];
        snprintf(head, sizeof(head), "\n%-26s%s", d->name, tf_fault_mode_name(d->mode));
        if (strstr(text, head) == NULL)
            fail_msg("no line for %s in:\n%s", d->name, text);
        if (strstr(text, d->client_sees) == NULL && strlen(d->client_sees) < 75)
            fail_msg("%s: client_sees missing", d->name);
    }
    assert_non_null(strstr(text, "\ndelay                     network      ms=1000 jitter=0 "
                                 "dir=both after_bytes=0\n"));
    assert_non_null(strstr(text, "\ncert-expired              mitm         seconds=2592000\n"));
    assert_non_null(strstr(text, "\ncert-self-signed          mitm         (no parameters)\n"));
    assert_non_null(strstr(text, "\nserver-versions           mitm         min=TLS1.0 max=TLS1.0\n"));
    /* Too long for one line: the second parameter wraps into the column. */
    assert_non_null(strstr(text, "\nserver-ciphers            mitm         ciphers=AES128-CCM8\n"
                                 "                                       "
                                 "ciphersuites=TLS_AES_128_CCM_8_SHA256\n"));
    assert_non_null(strstr(text, "dir=auto"));
    assert_null(strstr(text, "(*)")); /* nothing waits for a later version */
    assert_non_null(strstr(text, "mitm\nfaults need a listener with mode \"mitm\""));
    for (char *line = text; *line != '\0';) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        if (nl - line > 79)
            fail_msg("line longer than 79 columns: %.*s", (int)(nl - line), line);
        line = nl + 1;
    }
    free(text);
}

/* ------------------------------------------------------------ specs */

static void
test_spec_good(void **state)
{
    struct tf_fault_rule *r;

    (void)state;
    r = spec_ok("drop-server-hello");
    assert_string_equal(r->name, "fault1");
    assert_int_equal(r->def->id, TF_FAULT_DROP_SERVER_HELLO);
    assert_int_equal(r->line, 0);
    tf_fault_rule_free(r);

    r = spec_ok("delay:ms=300,dir=s2c,sni=*.lab.test");
    assert_int_equal(r->def->id, TF_FAULT_DELAY);
    assert_int_equal(r->args.ms, 300);
    assert_int_equal(r->args.dir, TF_FAULT_DIR_S2C);
    assert_string_equal(r->match.sni, "*.lab.test");
    tf_fault_rule_free(r);

    /* Spaces around keys are fine; a name replaces the default one. */
    r = spec_ok("delay:ms=1, jitter =2,name=slow");
    assert_int_equal(r->args.ms, 1);
    assert_int_equal(r->args.jitter_ms, 2);
    assert_string_equal(r->name, "slow");
    tf_fault_rule_free(r);

    /* A value holding ':' (only the first one ends the name) and ','. */
    r = spec_ok("strip-ciphers:pattern=*CHACHA20*:*RC4*");
    assert_string_equal(r->args.pattern, "*CHACHA20*:*RC4*");
    tf_fault_rule_free(r);
    r = spec_ok("strip-ciphers:pattern=*CHACHA20*,*RC4*,name=x");
    assert_string_equal(r->args.pattern, "*CHACHA20*,*RC4*");
    assert_string_equal(r->name, "x");
    tf_fault_rule_free(r);
    r = spec_ok("strip-intermediates:keep=0,2");
    assert_int_equal(r->args.keep_mask, 5);
    tf_fault_rule_free(r);
    r = spec_ok("strip-intermediates:keep=0\\,2,first=3");
    assert_int_equal(r->args.keep_mask, 5);
    assert_int_equal(r->match.first, 3);
    tf_fault_rule_free(r);

    /* Escapes other than "\," reach the value untouched. */
    r = spec_ok("append-bytes:bytes=a=b\\,c\\r\\n,record=3");
    assert_int_equal(r->args.bytes_len, 7);
    assert_memory_equal(r->args.bytes, "a=b,c\r\n", 7);
    assert_int_equal(r->args.record, 3);
    tf_fault_rule_free(r);
    r = spec_ok("append-bytes:bytes=hex:16:03:01");
    assert_int_equal(r->args.bytes_len, 3);
    assert_memory_equal(r->args.bytes, "\x16\x03\x01", 3);
    tf_fault_rule_free(r);

    /* duplicate's own "times" wins; match.times reaches the match. */
    r = spec_ok("duplicate:times=3,match.times=2");
    assert_int_equal(r->args.times, 3);
    assert_int_equal(r->match.times, 2);
    tf_fault_rule_free(r);
    r = spec_ok("delay:dest=fd00::/64,dest_port=443");
    assert_int_equal(r->match.dest.ss_family, AF_INET6);
    assert_int_equal(r->match.dest_prefix, 64);
    assert_int_equal(r->match.dest_port, 443);
    assert_int_equal(r->match.net.ss_family, 0); /* dest is not client */
    tf_fault_rule_free(r);
    r = spec_ok("delay:match.dest=192.0.2.0/24,match.dest_port=8443");
    assert_int_equal(r->match.dest.ss_family, AF_INET);
    assert_int_equal(r->match.dest_prefix, 24);
    assert_int_equal(r->match.dest_port, 8443);
    tf_fault_rule_free(r);
    r = spec_ok("delay:times=4,probability=0.25,seed=7,client=10.0.0.0/8,listener=lab");
    assert_int_equal(r->match.times, 4);
    assert_true(r->match.probability == 0.25);
    assert_int_equal(r->match.seed, 7);
    assert_int_equal(r->match.prefix, 8);
    assert_string_equal(r->match.listener, "lab");
    tf_fault_rule_free(r);

    /* The spec completes the rule: alert's dir follows after. */
    r = spec_ok("alert:after=server_hello,description=protocol_version,level=warning");
    assert_int_equal(r->args.after, 2);
    assert_int_equal(r->args.dir, TF_FAULT_DIR_S2C);
    assert_int_equal(r->args.description, 70);
    assert_int_equal(r->args.level, 1);
    tf_fault_rule_free(r);
    r = spec_ok("alert");
    assert_int_equal(r->args.dir, TF_FAULT_DIR_C2S);
    tf_fault_rule_free(r);
    r = spec_ok("alert:dir=both");
    assert_int_equal(r->args.dir, TF_FAULT_DIR_BOTH);
    tf_fault_rule_free(r);

    r = tf_fault_rule_parse_spec("stall", NULL, NULL, 0);
    assert_non_null(r);
    assert_string_equal(r->name, "stall");
    tf_fault_rule_free(r);
}

static void
test_spec_bad(void **state)
{
    static const struct {
        const char *spec, *err;
    } cases[] = {
        {"", "empty fault spec (expected NAME or NAME:key=value,...)"},
        {"drop-server-helo",
         "fault \"drop-server-helo\" is unknown; valid: delay, bandwidth, stall, reset, close, "
         "slice, drop-server-hello, reset-after-client-hello, close-after-client-hello, alert, "
         "plaintext-response, downgrade, strip-ciphers, strip-sni, strip-alpn, "
         "record-version-too-high, strip-intermediates, append-bytes, corrupt, truncate, "
         "duplicate, fragment, cert-expired, cert-not-yet-valid, cert-wrong-host, "
         "cert-self-signed, cert-untrusted-root, cert-no-intermediate, cert-wrong-eku, cert-sha1, "
         "cert-weak-key, server-versions, server-ciphers, require-sni"},
        {"server-versions:versions=TLS1.2",
         "unknown parameter \"versions\" for fault \"server-versions\"; valid: min, max, name, "
         "listener, client, dest, dest_port, sni, nth, every, first, probability, seed, times"},
        {"server-versions:min=TLS1.3,max=TLS1.2", "\"min\" (TLS1.3) is above \"max\" (TLS1.2)"},
        {"server-versions:min=TLS1.3", "\"min\" (TLS1.3) is above \"max\" (TLS1.0)"},
        {"server-versions:max=SSL3.0", "\"max\" must be from TLS1.0 to TLS1.3, not \"SSL3.0\""},
        {"server-versions:min=0x0305", "\"min\" must be from TLS1.0 to TLS1.3, not \"0x0305\""},
        {"cert-expired:seconds=0", "\"seconds\" must be between 1 and 3153600000, not 0"},
        {"cert-expired:seconds=3153600001",
         "\"seconds\" must be between 1 and 3153600000, not 3153600001"},
        {"cert-not-yet-valid:seconds=1d", "\"seconds\" must be an integer, not \"1d\""},
        {"cert-wrong-host:host=", "\"host\" must not be empty"},
        {"server-ciphers:ciphers=", "\"ciphers\" must not be empty"},
        {"server-ciphers:ciphersuites=", "\"ciphersuites\" must not be empty"},
        {"cert-sha1:seconds=1",
         "unknown parameter \"seconds\" for fault \"cert-sha1\"; valid: name, listener, client, "
         "dest, dest_port, sni, nth, every, first, probability, seed, times"},
        {"require-sni:host=a",
         "unknown parameter \"host\" for fault \"require-sni\"; valid: name, listener, client, "
         "dest, dest_port, sni, nth, every, first, probability, seed, times"},
        {"delay:", "expected key=value after \"delay:\""},
        {"delay:ms", "expected key=value, not \"ms\""},
        {"delay:=5", "expected key=value, not \"=5\""},
        {"delay:ms=1,,dir=c2s", "expected key=value, not \"\""},
        {"delay:dri=5",
         "unknown parameter \"dri\" for fault \"delay\"; valid: ms, jitter, dir, after_bytes, "
         "name, listener, client, dest, dest_port, sni, nth, every, first, probability, seed, "
         "times"},
        {"strip-sni:x=1",
         "unknown parameter \"x\" for fault \"strip-sni\"; valid: name, listener, client, dest, "
         "dest_port, sni, nth, every, first, probability, seed, times"},
        {"delay:match.bogus=1",
         "unknown parameter \"match.bogus\" for fault \"delay\"; valid: ms, jitter, dir, "
         "after_bytes, name, listener, client, dest, dest_port, sni, nth, every, first, "
         "probability, seed, times"},
        {"delay:ms=1,ms=2", "\"ms\" is given twice"},
        {"delay:ms=abc", "\"ms\" must be an integer, not \"abc\""},
        {"delay:ms=5000000", "\"ms\" must be between 0 and 3600000, not 5000000"},
        {"delay:ms=-1", "\"ms\" must be between 0 and 3600000, not -1"},
        {"delay:ms=99999999999999999999", "\"ms\" must be between 0 and 3600000, not "
                                          "99999999999999999999"},
        {"delay:dir=up", "\"dir\" must be c2s, s2c or both, not \"up\""},
        {"delay:dir=auto", "\"dir\" must be c2s, s2c or both, not \"auto\""},
        {"alert:dir=up", "\"dir\" must be c2s, s2c, auto or both, not \"up\""},
        {"delay:name=my rule",
         "name \"my rule\" is not valid (use 1-64 letters, digits, \".\", \"_\" or \"-\")"},
        {"reset:to=nobody", "\"to\" must be client, server or both, not \"nobody\""},
        {"truncate:then_close=maybe", "\"then_close\" must be true or false, not \"maybe\""},
        {"downgrade:version=TLS1.4",
         "\"version\" must be a version (SSL3.0, TLS1.0 to TLS1.3, or 0x0303), not \"TLS1.4\""},
        {"downgrade:version=0x0305", "\"version\" must be from SSL3.0 to TLS1.3, not \"0x0305\""},
        {"alert:description=bogus",
         "\"description\" must be an alert name (handshake_failure, protocol_version, "
         "internal_error, ...) or a number 0-255, not \"bogus\""},
        {"alert:level=loud", "\"level\" must be warning or fatal, not \"loud\""},
        {"alert:after=hello",
         "\"after\" must be a handshake message (client_hello, server_hello, "
         "hello_retry_request, new_session_ticket, encrypted_extensions, certificate, "
         "server_key_exchange, certificate_request, server_hello_done, certificate_verify, "
         "client_key_exchange, finished, certificate_status), not \"hello\""},
        {"strip-intermediates:keep=32",
         "\"keep\" must be leaf or a list of certificate positions 0-31 (0 is the leaf), not "
         "\"32\""},
        {"strip-intermediates:keep=0,,1", "expected key=value, not \"\""},
        {"strip-intermediates:keep=0\\,\\,1",
         "\"keep\" must be leaf or a list of certificate positions 0-31 (0 is the leaf), not "
         "\"0,,1\""},
        {"append-bytes:bytes=hex:abc",
         "\"bytes\" must be pairs of hex digits after \"hex:\", not \"hex:abc\""},
        {"append-bytes:bytes=hex:",  "\"bytes\" must not be empty"},
        {"append-bytes:bytes=", "\"bytes\" must not be empty"},
        {"append-bytes:bytes=a\\qb",
         "\"bytes\" has an unknown escape in \"a\\qb\" (use \\r, \\n, \\t, \\\\ or \\xHH)"},
        {"record-version-too-high:fields=all",
         "\"fields\" must be record, hello or both, not \"all\""},
        {"strip-ciphers:pattern=", "\"pattern\" must not be empty"},
        {"corrupt:xor=0", "\"xor\" must be between 1 and 255, not 0"},
        {"corrupt:offset=1.5", "\"offset\" must be an integer, not \"1.5\""},
        {"delay:client=10.0.0.1/8",
         "\"client\" \"10.0.0.1/8\" has bits set past the /8 prefix (did you mean 10.0.0.0/8?)"},
        {"delay:client=10.0.0.0/33", "\"client\" prefix /33 is too long for IPv4 (at most /32)"},
        {"delay:client=fd00::/129", "\"client\" prefix /129 is too long for IPv6 (at most /128)"},
        {"delay:client=lab.test",
         "\"client\" must be an address or CIDR (10.0.0.0/8, ::1, fd00::/64), not \"lab.test\""},
        {"delay:client=10.0.0.0/",
         "\"client\" must be an address or CIDR (10.0.0.0/8, ::1, fd00::/64), not \"10.0.0.0/\""},
        {"delay:sni=", "\"sni\" must not be empty (write \"absent\" for hellos without SNI)"},
        {"delay:listener=", "\"listener\" must not be empty"},
        {"delay:nth=0", "\"nth\" must be an integer of at least 1, not \"0\""},
        {"delay:every=x", "\"every\" must be an integer of at least 1, not \"x\""},
        {"delay:times=-1", "\"times\" must be an integer of at least 1, not \"-1\""},
        {"delay:seed=-1",
         "\"seed\" must be an integer from 0 to 18446744073709551615, not \"-1\""},
        {"delay:probability=1.5", "\"probability\" must be a number from 0 to 1, not \"1.5\""},
        {"delay:probability=nan", "\"probability\" must be a number from 0 to 1, not \"nan\""},
        {"delay:probability=0x1p-1",
         "\"probability\" must be a number from 0 to 1, not \"0x1p-1\""},
        {"delay:probability= 0.5", "\"probability\" must be a number from 0 to 1, not \" 0.5\""},
        {"delay:dest=10.0.0.1/8",
         "\"dest\" \"10.0.0.1/8\" has bits set past the /8 prefix (did you mean 10.0.0.0/8?)"},
        {"delay:dest=10.0.0.0/33", "\"dest\" prefix /33 is too long for IPv4 (at most /32)"},
        {"delay:dest=lab.test",
         "\"dest\" must be an address or CIDR (10.0.0.0/8, ::1, fd00::/64), not \"lab.test\""},
        {"delay:dest=", "\"dest\" must be an address or CIDR (10.0.0.0/8, ::1, fd00::/64), not "
                        "\"\""},
        {"delay:dest_port=0", "\"dest_port\" must be a port from 1 to 65535, not \"0\""},
        {"delay:dest_port=65536", "\"dest_port\" must be a port from 1 to 65535, not \"65536\""},
        {"delay:dest_port=-1", "\"dest_port\" must be a port from 1 to 65535, not \"-1\""},
        {"delay:dest_port=https", "\"dest_port\" must be a port from 1 to 65535, not \"https\""},
        {"delay:dest_port=", "\"dest_port\" must be a port from 1 to 65535, not \"\""},
    };
    char err[1024];

    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct tf_fault_rule *r = tf_fault_rule_parse_spec(cases[i].spec, "f", err, sizeof(err));
        if (r != NULL) {
            tf_fault_rule_free(r);
            fail_msg("spec \"%s\" accepted, expected: %s", cases[i].spec, cases[i].err);
        }
        if (strcmp(err, cases[i].err) != 0)
            fail_msg("spec \"%s\":\n got: %s\nwant: %s", cases[i].spec, err, cases[i].err);
    }
    assert_null(tf_fault_rule_parse_spec(NULL, "f", err, sizeof(err)));
    assert_null(tf_fault_rule_parse_spec("nope", "f", NULL, 0)); /* err optional */
}

/* A setter that refuses leaves the rule as it was. */
static void
test_set_failure_keeps_rule(void **state)
{
    char err[256];

    (void)state;
    struct tf_fault_rule *r = rule_of("append-bytes");
    set_ok(r, "bytes", "abc");
    assert_false(tf_fault_rule_set(r, "bytes", "hex:zz", true, err, sizeof(err)));
    assert_int_equal(r->args.bytes_len, 3);
    assert_memory_equal(r->args.bytes, "abc", 3);
    assert_false(tf_fault_rule_set(r, "record", "x", true, err, sizeof(err)));
    assert_int_equal(r->args.record, 0);
    /* Match keys only with match_key_allowed; the file puts them in match = { }. */
    assert_false(tf_fault_rule_set(r, "sni", "x", false, err, sizeof(err)));
    assert_string_equal(err, "unknown parameter \"sni\" for fault \"append-bytes\"; valid: dir, "
                             "record, bytes");
    assert_false(tf_fault_rule_set(r, "name", "x", false, err, sizeof(err)));
    assert_false(tf_fault_rule_set_match(r, "ms", "1", err, sizeof(err)));
    assert_string_equal(err, "unknown key \"ms\" in match; valid keys: listener, client, dest, "
                             "dest_port, sni, nth, every, first, probability, seed, times");
    tf_fault_rule_free(r);

    r = rule_of("strip-sni");
    assert_false(tf_fault_rule_set(r, "x", "1", false, err, sizeof(err)));
    assert_string_equal(err, "unknown parameter \"x\": fault \"strip-sni\" takes none");
    tf_fault_rule_free(r);
}

/* ------------------------------------------------------------ value parsers */

static void
test_values_version(void **state)
{
    static const struct {
        const char *in;
        uint16_t v;
    } good[] = {
        {"TLS1.2", 0x0303}, {"tls1.3", 0x0304}, {"1.2", 0x0303},   {"1.0", 0x0301},
        {"TLS 1.1", 0x0302}, {"SSL3.0", 0x0300}, {"ssl3.0", 0x0300}, {"TLS1.0", 0x0301},
        {"0x0303", 0x0303},  {"0X0301", 0x0301}, {"0x300", 0x0300},
    };
    static const char *const bad[] = {"3.0", "TLS3.0", "SSL1.2", "1.4", "0x", "0x00003",
                                      "0xgg", "TLS1.2 ", "", "tls"};
    char err[256];

    (void)state;
    struct tf_fault_rule *r = rule_of("downgrade");
    for (size_t i = 0; i < ARRAY_LEN(good); i++) {
        set_ok(r, "version", good[i].in);
        assert_int_equal(r->args.version, good[i].v);
    }
    for (size_t i = 0; i < ARRAY_LEN(bad); i++)
        if (tf_fault_rule_set(r, "version", bad[i], true, err, sizeof(err)))
            fail_msg("version \"%s\" accepted", bad[i]);
    tf_fault_rule_free(r);

    /* record-version-too-high takes any 16-bit value. */
    r = rule_of("record-version-too-high");
    set_ok(r, "version", "0xffff");
    assert_int_equal(r->args.version, 0xffff);
    set_ok(r, "version", "TLS1.3");
    assert_int_equal(r->args.version, 0x0304);
    set_ok(r, "fields", "both");
    assert_string_equal(r->args.fields, "both");
    tf_fault_rule_free(r);
}

static void
test_values_alert_and_hs(void **state)
{
    static const struct {
        const char *in;
        int v;
    } hs[] = {
        {"client_hello", 1},         {"server_hello", 2},         {"hello_retry_request", 2},
        {"new_session_ticket", 4},   {"encrypted_extensions", 8}, {"certificate", 11},
        {"server_key_exchange", 12}, {"certificate_request", 13}, {"server_hello_done", 14},
        {"certificate_verify", 15},  {"client_key_exchange", 16}, {"finished", 20},
        {"certificate_status", 22},
    };
    char err[512];

    (void)state;
    struct tf_fault_rule *r = rule_of("alert");
    set_ok(r, "description", "unrecognized_name");
    assert_int_equal(r->args.description, 112);
    set_ok(r, "description", "close_notify");
    assert_int_equal(r->args.description, 0);
    set_ok(r, "description", "255");
    assert_int_equal(r->args.description, 255);
    set_ok(r, "description", "70");
    assert_int_equal(r->args.description, 70);
    assert_false(tf_fault_rule_set(r, "description", "256", true, err, sizeof(err)));
    assert_false(tf_fault_rule_set(r, "description", "-1", true, err, sizeof(err)));
    assert_false(tf_fault_rule_set(r, "description", "Handshake_Failure", true, err,
                                   sizeof(err)));
    set_ok(r, "level", "1");
    assert_int_equal(r->args.level, 1);
    set_ok(r, "level", "fatal");
    assert_int_equal(r->args.level, 2);
    for (size_t i = 0; i < ARRAY_LEN(hs); i++) {
        set_ok(r, "after", hs[i].in);
        assert_int_equal(r->args.after, hs[i].v);
    }
    assert_false(tf_fault_rule_set(r, "after", "1", true, err, sizeof(err)));
    tf_fault_rule_free(r);

    assert_int_equal(tf_fault_usual_sender(1), TF_FAULT_DIR_C2S);
    assert_int_equal(tf_fault_usual_sender(16), TF_FAULT_DIR_C2S);
    assert_int_equal(tf_fault_usual_sender(2), TF_FAULT_DIR_S2C);
    assert_int_equal(tf_fault_usual_sender(11), TF_FAULT_DIR_S2C);
    assert_int_equal(tf_fault_usual_sender(14), TF_FAULT_DIR_S2C);
    assert_int_equal(tf_fault_usual_sender(20), TF_FAULT_DIR_BOTH);

    /* An explicit dir survives complete; after does not override it. */
    r = rule_of("alert");
    set_ok(r, "dir", "s2c");
    set_ok(r, "after", "client_key_exchange");
    tf_fault_rule_complete(r);
    assert_int_equal(r->args.dir, TF_FAULT_DIR_S2C);
    tf_fault_rule_free(r);
    r = rule_of("alert");
    set_ok(r, "after", "client_key_exchange");
    tf_fault_rule_complete(r);
    assert_int_equal(r->args.dir, TF_FAULT_DIR_C2S);
    tf_fault_rule_complete(NULL);
    tf_fault_rule_free(r);
}

static void
test_values_numbers_and_bools(void **state)
{
    static const char *const yes[] = {"true", "TRUE", "yes", "on", "1"};
    static const char *const no[] = {"false", "False", "no", "off", "0"};
    char err[256];

    (void)state;
    struct tf_fault_rule *r = rule_of("truncate");
    for (size_t i = 0; i < ARRAY_LEN(yes); i++) {
        set_ok(r, "then_close", no[i]);
        assert_false(r->args.then_close);
        set_ok(r, "then_close", yes[i]);
        assert_true(r->args.then_close);
    }
    set_ok(r, "keep", "16645");
    assert_int_equal(r->args.keep, 16645);
    assert_false(tf_fault_rule_set(r, "keep", "16646", true, err, sizeof(err)));
    assert_false(tf_fault_rule_set(r, "keep", "+5", true, err, sizeof(err)));
    assert_false(tf_fault_rule_set(r, "keep", " 5", true, err, sizeof(err)));
    assert_false(tf_fault_rule_set(r, "keep", "0x10", true, err, sizeof(err)));
    assert_false(tf_fault_rule_set(r, "keep", "", true, err, sizeof(err)));
    tf_fault_rule_free(r);

    r = rule_of("corrupt");
    set_ok(r, "offset", "-1");
    assert_int_equal(r->args.offset, -1);
    set_ok(r, "offset", "-16640");
    assert_int_equal(r->args.offset, -16640);
    set_ok(r, "xor", "255");
    assert_int_equal(r->args.xor_mask, 255); /* a one-byte field, written as one */
    assert_int_equal(r->args.keep, 0);
    tf_fault_rule_free(r);

    r = rule_of("bandwidth");
    set_ok(r, "after_bytes", "9223372036854775807");
    assert_int_equal(r->args.after_bytes, 9223372036854775807ULL);
    set_ok(r, "rate", "1");
    assert_int_equal(r->args.rate, 1);
    assert_false(tf_fault_rule_set(r, "rate", "0", true, err, sizeof(err)));
    tf_fault_rule_free(r);

    r = rule_of("delay");
    set_ok(r, "probability", "0");
    assert_true(r->match.probability == 0.0);
    set_ok(r, "probability", "1");
    set_ok(r, "probability", ".5");
    assert_true(r->match.probability == 0.5);
    set_ok(r, "probability", "1e-1");
    set_ok(r, "seed", "0");
    assert_int_equal(r->match.seed, 0);
    set_ok(r, "seed", "18446744073709551615");
    assert_int_equal(r->match.seed, UINT64_MAX);
    set_bad(r, "seed", "18446744073709551616",
            "\"seed\" must be an integer from 0 to 18446744073709551615, not "
            "\"18446744073709551616\"");
    set_ok(r, "nth", "18446744073709551615");
    assert_int_equal(r->match.nth, UINT64_MAX);
    set_ok(r, "sni", "absent");
    assert_string_equal(r->match.sni, "absent");
    tf_fault_rule_free(r);
}

static void
test_values_bytes_and_positions(void **state)
{
    char err[256];

    (void)state;
    struct tf_fault_rule *r = rule_of("append-bytes");
    set_ok(r, "bytes", "hex:00ff 10:AB");
    assert_int_equal(r->args.bytes_len, 4);
    assert_memory_equal(r->args.bytes, "\x00\xff\x10\xab", 4);
    set_ok(r, "bytes", "GET / HTTP/1.1\\r\\n\\x00\\t\\\\");
    assert_int_equal(r->args.bytes_len, 19);
    assert_memory_equal(r->args.bytes, "GET / HTTP/1.1\r\n\x00\t\\", 19);
    set_ok(r, "bytes", "HEX:41"); /* only "hex:" in lower case starts hex */
    assert_int_equal(r->args.bytes_len, 6);
    assert_false(tf_fault_rule_set(r, "bytes", "trailing\\", true, err, sizeof(err)));
    assert_false(tf_fault_rule_set(r, "bytes", "\\x4", true, err, sizeof(err)));
    assert_false(tf_fault_rule_set(r, "bytes", "hex:0", true, err, sizeof(err)));
    tf_fault_rule_free(r);

    r = rule_of("strip-intermediates");
    set_ok(r, "keep", "0");
    assert_int_equal(r->args.keep_mask, 1);
    set_ok(r, "keep", "1, 2");
    assert_int_equal(r->args.keep_mask, 6);
    set_ok(r, "keep", "31");
    assert_int_equal(r->args.keep_mask, 0x80000000u);
    set_ok(r, "keep", "leaf");
    assert_int_equal(r->args.keep_mask, 1);
    assert_false(tf_fault_rule_set(r, "keep", "", true, err, sizeof(err)));
    assert_false(tf_fault_rule_set(r, "keep", "0,", true, err, sizeof(err)));
    assert_false(tf_fault_rule_set(r, "keep", "all", true, err, sizeof(err)));
    assert_false(tf_fault_rule_set(r, "keep", "0001", true, err, sizeof(err)));
    tf_fault_rule_free(r);
}

/* ------------------------------------------------------------ matching */

static struct sockaddr_storage
addr_of(const char *text)
{
    struct sockaddr_storage ss;

    memset(&ss, 0, sizeof(ss));
    if (strchr(text, ':') != NULL) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        sin6->sin6_family = AF_INET6;
        assert_int_equal(inet_pton(AF_INET6, text, &sin6->sin6_addr), 1);
        sin6->sin6_port = htons(40000);
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        assert_int_equal(inet_pton(AF_INET, text, &sin->sin_addr), 1);
        sin->sin_port = htons(40000);
    }
    return ss;
}

static enum tf_fault_decision
decide_from(struct tf_fault_rule *r, const char *listener, const char *client)
{
    struct sockaddr_storage ss = addr_of(client);
    struct tf_fault_flow_info info = {listener, (const struct sockaddr *)&ss, NULL};
    return tf_fault_rule_decide(r, &info, false, NULL);
}

static void
test_match_everything(void **state)
{
    (void)state;
    struct tf_fault_rule *r = rule_of("stall");
    for (int i = 0; i < 5; i++)
        assert_int_equal(decide_from(r, "lab", "192.0.2.1"), TF_FAULT_YES);
    struct tf_fault_flow_info none = {NULL, NULL, NULL};
    assert_int_equal(tf_fault_rule_decide(r, &none, false, NULL), TF_FAULT_YES);
    assert_int_equal(tf_fault_rule_decide(r, NULL, true, "x"), TF_FAULT_YES);
    assert_int_equal(atomic_load(&r->seen), 7);
    assert_int_equal(atomic_load(&r->fired), 7);
    tf_fault_rule_free(r);
}

static void
test_match_listener(void **state)
{
    (void)state;
    struct tf_fault_rule *r = rule_of("stall");
    set_ok(r, "listener", "lab");
    assert_int_equal(decide_from(r, "lab", "127.0.0.1"), TF_FAULT_YES);
    assert_int_equal(decide_from(r, "other", "127.0.0.1"), TF_FAULT_NO);
    assert_int_equal(decide_from(r, "LAB", "127.0.0.1"), TF_FAULT_NO);
    assert_int_equal(decide_from(r, NULL, "127.0.0.1"), TF_FAULT_NO);
    assert_int_equal(atomic_load(&r->seen), 1); /* only the flow that matched counts */
    tf_fault_rule_free(r);
}

static void
test_match_client_cidr(void **state)
{
    static const struct {
        const char *cidr, *client;
        enum tf_fault_decision want;
    } cases[] = {
        {"10.0.0.0/8", "10.1.2.3", TF_FAULT_YES},
        {"10.0.0.0/8", "11.0.0.1", TF_FAULT_NO},
        {"10.0.0.0/8", "::ffff:10.9.9.9", TF_FAULT_YES}, /* v4-mapped, from a [::] listener */
        {"10.0.0.0/8", "::ffff:11.0.0.1", TF_FAULT_NO},
        {"10.0.0.0/8", "fd00::1", TF_FAULT_NO},
        {"192.168.1.128/25", "192.168.1.200", TF_FAULT_YES},
        {"192.168.1.128/25", "192.168.1.127", TF_FAULT_NO},
        {"127.0.0.1", "127.0.0.1", TF_FAULT_YES},
        {"127.0.0.1", "127.0.0.2", TF_FAULT_NO},
        {"0.0.0.0/0", "203.0.113.9", TF_FAULT_YES},
        {"0.0.0.0/0", "2001:db8::1", TF_FAULT_NO},   /* any IPv4 client, not any client */
        {"::1", "::1", TF_FAULT_YES},
        {"::1", "::2", TF_FAULT_NO},
        {"::1", "127.0.0.1", TF_FAULT_NO},
        {"fd00::/64", "fd00::1234:5678", TF_FAULT_YES},
        {"fd00::/64", "fd00:0:0:1::1", TF_FAULT_NO},
        {"fc00::/7", "fdff::1", TF_FAULT_YES},
        {"fc00::/7", "fe00::1", TF_FAULT_NO},
        {"::/0", "2001:db8::1", TF_FAULT_YES},
        {"::ffff:0:0/96", "10.0.0.1", TF_FAULT_YES}, /* v4 clients as v4-mapped */
        {"2001:db8::/32", "10.0.0.1", TF_FAULT_NO},
    };

    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct tf_fault_rule *r = rule_of("stall");
        set_ok(r, "client", cases[i].cidr);
        enum tf_fault_decision got = decide_from(r, "lab", cases[i].client);
        if (got != cases[i].want)
            fail_msg("client %s against %s: got %d, want %d", cases[i].client, cases[i].cidr,
                     got, cases[i].want);
        tf_fault_rule_free(r);
    }

    struct tf_fault_rule *r = rule_of("stall");
    set_ok(r, "client", "10.0.0.0/8");
    struct tf_fault_flow_info no_addr = {"lab", NULL, NULL};
    assert_int_equal(tf_fault_rule_decide(r, &no_addr, false, NULL), TF_FAULT_NO);
    struct sockaddr_storage unix_like;
    memset(&unix_like, 0, sizeof(unix_like));
    unix_like.ss_family = AF_UNIX;
    struct tf_fault_flow_info odd = {"lab", (const struct sockaddr *)&unix_like, NULL};
    assert_int_equal(tf_fault_rule_decide(r, &odd, false, NULL), TF_FAULT_NO);
    set_bad(r, "client", "fd00::1/64",
            "\"client\" \"fd00::1/64\" has bits set past the /64 prefix (did you mean "
            "fd00::/64?)");
    set_bad(r, "client", "10.0.0.0/-1",
            "\"client\" must be an address or CIDR (10.0.0.0/8, ::1, fd00::/64), not "
            "\"10.0.0.0/-1\"");
    set_bad(r, "client", "fe80::1%eth0",
            "\"client\" must be an address or CIDR (10.0.0.0/8, ::1, fd00::/64), not "
            "\"fe80::1%eth0\"");
    /* The refused values left the first one in place. */
    assert_int_equal(r->match.prefix, 8);
    assert_int_equal(r->match.net.ss_family, AF_INET);
    tf_fault_rule_free(r);
}

/* A flow from 192.0.2.7 to dest (an address with a port), on listener "lab". */
static enum tf_fault_decision
decide_to(struct tf_fault_rule *r, const char *dest, uint16_t port)
{
    struct sockaddr_storage client = addr_of("192.0.2.7");
    struct sockaddr_storage to = addr_of(dest);
    if (to.ss_family == AF_INET)
        ((struct sockaddr_in *)&to)->sin_port = htons(port);
    else
        ((struct sockaddr_in6 *)&to)->sin6_port = htons(port);
    struct tf_fault_flow_info info = {"lab", (const struct sockaddr *)&client,
                                      (const struct sockaddr *)&to};
    return tf_fault_rule_decide(r, &info, false, NULL);
}

static void
test_match_dest(void **state)
{
    static const struct {
        const char *cidr, *port, *dest;
        uint16_t dest_port;
        enum tf_fault_decision want;
    } cases[] = {
        {"10.0.0.0/8", NULL, "10.1.2.3", 443, TF_FAULT_YES},
        {"10.0.0.0/8", NULL, "11.0.0.1", 443, TF_FAULT_NO},
        {"10.0.0.0/8", NULL, "::ffff:10.9.9.9", 443, TF_FAULT_YES}, /* v4-mapped, tproxy on [::] */
        {"10.0.0.0/8", NULL, "fd00::1", 443, TF_FAULT_NO},
        {"198.51.100.10", NULL, "198.51.100.10", 1, TF_FAULT_YES},
        {"198.51.100.10", NULL, "198.51.100.11", 1, TF_FAULT_NO},
        {"2001:db8::/32", NULL, "2001:db8:1::5", 8443, TF_FAULT_YES},
        {"2001:db8::/32", NULL, "2001:db9::5", 8443, TF_FAULT_NO},
        {"2001:db8::/32", NULL, "10.0.0.1", 8443, TF_FAULT_NO},
        {NULL, "443", "10.0.0.1", 443, TF_FAULT_YES},
        {NULL, "443", "2001:db8::1", 443, TF_FAULT_YES},
        {NULL, "443", "10.0.0.1", 8443, TF_FAULT_NO},
        {"10.0.0.0/8", "5432", "10.0.0.9", 5432, TF_FAULT_YES},
        {"10.0.0.0/8", "5432", "10.0.0.9", 5433, TF_FAULT_NO},   /* both must match */
        {"10.0.0.0/8", "5432", "172.16.0.9", 5432, TF_FAULT_NO},
    };

    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct tf_fault_rule *r = rule_of("stall");
        if (cases[i].cidr != NULL)
            set_ok(r, "dest", cases[i].cidr);
        if (cases[i].port != NULL)
            set_ok(r, "dest_port", cases[i].port);
        enum tf_fault_decision got = decide_to(r, cases[i].dest, cases[i].dest_port);
        if (got != cases[i].want)
            fail_msg("dest %s port %u against dest=%s dest_port=%s: got %d, want %d",
                     cases[i].dest, cases[i].dest_port, cases[i].cidr ? cases[i].cidr : "-",
                     cases[i].port ? cases[i].port : "-", got, cases[i].want);
        /* A match that refuses takes no place in the counters. */
        assert_int_equal(atomic_load(&r->seen), got == TF_FAULT_YES ? 1 : 0);
        tf_fault_rule_free(r);
    }

    /*
     * No original destination (forward and sni listeners; flow->dest NULL):
     * a rule with dest or dest_port never matches, one without still does.
     */
    struct sockaddr_storage client = addr_of("10.0.0.1");
    struct tf_fault_flow_info no_dest = {"lab", (const struct sockaddr *)&client, NULL};
    struct tf_fault_rule *r = rule_of("stall");
    assert_int_equal(tf_fault_rule_decide(r, &no_dest, false, NULL), TF_FAULT_YES);
    set_ok(r, "dest", "0.0.0.0/0");
    assert_int_equal(tf_fault_rule_decide(r, &no_dest, false, NULL), TF_FAULT_NO);
    assert_int_equal(tf_fault_rule_decide(r, NULL, false, NULL), TF_FAULT_NO);
    tf_fault_rule_free(r);
    r = rule_of("stall");
    set_ok(r, "dest_port", "443");
    assert_int_equal(tf_fault_rule_decide(r, &no_dest, false, NULL), TF_FAULT_NO);
    assert_int_equal(tf_fault_rule_decide(r, &no_dest, true, "lab.test"), TF_FAULT_NO);
    tf_fault_rule_free(r);

    /* dest is the destination, client the source: each judged on its own address. */
    r = rule_of("stall");
    set_ok(r, "client", "192.0.2.0/24");
    set_ok(r, "dest", "10.0.0.0/8");
    assert_int_equal(decide_to(r, "10.0.0.1", 443), TF_FAULT_YES);
    set_ok(r, "client", "10.0.0.0/8"); /* 192.0.2.7 is not in it */
    assert_int_equal(decide_to(r, "10.0.0.1", 443), TF_FAULT_NO);
    tf_fault_rule_free(r);

    /* With SNI too: dest decides at once, the SNI later. */
    r = rule_of("stall");
    set_ok(r, "dest_port", "443");
    set_ok(r, "sni", "*.lab.test");
    assert_int_equal(decide_to(r, "10.0.0.1", 443), TF_FAULT_LATER);
    assert_int_equal(decide_to(r, "10.0.0.1", 80), TF_FAULT_NO);
    tf_fault_rule_free(r);

    /* An address family nobody routes: no match. */
    struct sockaddr_storage odd;
    memset(&odd, 0, sizeof(odd));
    odd.ss_family = AF_UNIX;
    struct tf_fault_flow_info odd_dest = {"lab", (const struct sockaddr *)&client,
                                          (const struct sockaddr *)&odd};
    r = rule_of("stall");
    set_ok(r, "dest_port", "1");
    assert_int_equal(tf_fault_rule_decide(r, &odd_dest, false, NULL), TF_FAULT_NO);
    set_bad(r, "dest_port", "0", "\"dest_port\" must be a port from 1 to 65535, not \"0\"");
    assert_int_equal(r->match.dest_port, 1); /* the refused value left the first in place */
    tf_fault_rule_free(r);
}

static void
test_match_sni(void **state)
{
    (void)state;
    struct tf_fault_rule *r = rule_of("stall");
    struct tf_fault_flow_info info = {"lab", NULL, NULL};

    set_ok(r, "sni", "*.lab.test");
    /* Before the ClientHello: later, and nothing counted. */
    assert_int_equal(tf_fault_rule_decide(r, &info, false, NULL), TF_FAULT_LATER);
    assert_int_equal(atomic_load(&r->seen), 0);
    assert_int_equal(tf_fault_rule_decide(r, &info, true, "www.lab.test"), TF_FAULT_YES);
    assert_int_equal(tf_fault_rule_decide(r, &info, true, "WWW.Lab.TEST"), TF_FAULT_YES);
    assert_int_equal(tf_fault_rule_decide(r, &info, true, "a.b.lab.test"), TF_FAULT_YES);
    assert_int_equal(tf_fault_rule_decide(r, &info, true, "lab.test"), TF_FAULT_NO);
    assert_int_equal(tf_fault_rule_decide(r, &info, true, "lab.test.evil"), TF_FAULT_NO);
    assert_int_equal(tf_fault_rule_decide(r, &info, true, NULL), TF_FAULT_NO);
    assert_int_equal(atomic_load(&r->seen), 3);

    /* Listener and client are judged first: no need to wait for the SNI. */
    set_ok(r, "listener", "other");
    assert_int_equal(tf_fault_rule_decide(r, &info, false, NULL), TF_FAULT_NO);
    tf_fault_rule_free(r);

    r = rule_of("stall");
    set_ok(r, "sni", "absent");
    assert_int_equal(tf_fault_rule_decide(r, &info, false, NULL), TF_FAULT_LATER);
    assert_int_equal(tf_fault_rule_decide(r, &info, true, NULL), TF_FAULT_YES);
    assert_int_equal(tf_fault_rule_decide(r, &info, true, "absent"), TF_FAULT_NO);
    assert_int_equal(tf_fault_rule_decide(r, &info, true, "lab.test"), TF_FAULT_NO);
    tf_fault_rule_free(r);

    r = rule_of("stall");
    set_ok(r, "sni", "*");
    assert_int_equal(tf_fault_rule_decide(r, &info, true, "x"), TF_FAULT_YES);
    assert_int_equal(tf_fault_rule_decide(r, &info, true, NULL), TF_FAULT_NO);
    tf_fault_rule_free(r);
}

/* The answers for flows 1..n, as a string of Y and N. */
static void
decide_run(struct tf_fault_rule *r, int n, char *out)
{
    struct tf_fault_flow_info info = {"lab", NULL, NULL};
    for (int i = 0; i < n; i++)
        out[i] = tf_fault_rule_decide(r, &info, false, NULL) == TF_FAULT_YES ? 'Y' : 'N';
    out[n] = '\0';
}

static void
test_match_counting(void **state)
{
    /* A stall rule with up to two settings, then a run of flows: Y fires, N does not. */
    static const struct {
        const char *set[2][2];
        const char *want;
    } cases[] = {
        {{{"nth", "3"}}, "NNYNNN"},
        {{{"every", "2"}}, "NYNYNYN"},
        {{{"first", "2"}}, "YYNNN"},
        {{{"times", "2"}}, "YYNNN"},
        /* Combined: every 2nd flow, at most twice: flows 2 and 4. */
        {{{"every", "2"}, {"times", "2"}}, "NYNYNNNNNN"},
    };
    char got[64];

    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct tf_fault_rule *r = rule_of("stall");

        for (size_t j = 0; j < 2 && cases[i].set[j][0] != NULL; j++)
            set_ok(r, cases[i].set[j][0], cases[i].set[j][1]);
        decide_run(r, (int)strlen(cases[i].want), got);
        assert_string_equal(got, cases[i].want);
        tf_fault_rule_free(r);
    }

    /* times: every flow is seen, only the first two fire. */
    struct tf_fault_rule *r = rule_of("stall");
    set_ok(r, "times", "2");
    decide_run(r, 5, got);
    assert_int_equal(atomic_load(&r->seen), 5);
    assert_int_equal(atomic_load(&r->fired), 2);
    tf_fault_rule_free(r);

    /* Counting is per ordinal of matching flows: others do not take a place. */
    r = rule_of("stall");
    set_ok(r, "listener", "lab");
    set_ok(r, "nth", "2");
    assert_int_equal(decide_from(r, "other", "127.0.0.1"), TF_FAULT_NO);
    assert_int_equal(decide_from(r, "lab", "127.0.0.1"), TF_FAULT_NO);
    assert_int_equal(decide_from(r, "other", "127.0.0.1"), TF_FAULT_NO);
    assert_int_equal(decide_from(r, "lab", "127.0.0.1"), TF_FAULT_YES);
    tf_fault_rule_free(r);
}

static void
test_match_probability(void **state)
{
    char a[201], b[201], c[201];

    (void)state;
    /* Same seed, same sequence: a run repeats exactly. */
    struct tf_fault_rule *r1 = spec_ok("stall:probability=0.5,seed=7");
    struct tf_fault_rule *r2 = spec_ok("stall:probability=0.5,seed=7");
    struct tf_fault_rule *r3 = spec_ok("stall:probability=0.5,seed=8");
    decide_run(r1, 200, a);
    decide_run(r2, 200, b);
    decide_run(r3, 200, c);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    assert_non_null(strchr(a, 'Y'));
    assert_non_null(strchr(a, 'N'));
    tf_fault_rule_free(r1);
    tf_fault_rule_free(r2);
    tf_fault_rule_free(r3);

    /* Roughly p of many flows. */
    static const double ps[] = {0.01, 0.3, 0.5, 0.9};
    for (size_t i = 0; i < ARRAY_LEN(ps); i++) {
        char spec[64];
        snprintf(spec, sizeof(spec), "stall:probability=%g", ps[i]);
        struct tf_fault_rule *r = spec_ok(spec);
        struct tf_fault_flow_info info = {"lab", NULL, NULL};
        int yes = 0;
        for (int n = 0; n < 10000; n++)
            yes += tf_fault_rule_decide(r, &info, false, NULL) == TF_FAULT_YES;
        double rate = yes / 10000.0;
        if (rate < ps[i] - 0.025 || rate > ps[i] + 0.025)
            fail_msg("probability %g: %d of 10000", ps[i], yes);
        assert_int_equal(atomic_load(&r->fired), (uint64_t)yes);
        assert_int_equal(atomic_load(&r->seen), 10000);
        tf_fault_rule_free(r);
    }

    struct tf_fault_rule *never = spec_ok("stall:probability=0");
    decide_run(never, 100, a);
    assert_null(strchr(a, 'Y'));
    tf_fault_rule_free(never);
    struct tf_fault_rule *always = spec_ok("stall:probability=1");
    decide_run(always, 100, a);
    assert_null(strchr(a, 'N'));
    tf_fault_rule_free(always);

    /* The draw is taken after nth/every: "every 2nd, half of those" repeats too. */
    r1 = spec_ok("stall:every=2,probability=0.5,seed=3");
    r2 = spec_ok("stall:every=2,probability=0.5,seed=3");
    decide_run(r1, 100, a);
    decide_run(r2, 100, b);
    assert_string_equal(a, b);
    for (int i = 0; i < 100; i += 2)
        assert_int_equal(a[i], 'N');
    tf_fault_rule_free(r1);
    tf_fault_rule_free(r2);
}

/* ------------------------------------------------------------ threads */

#define THREADS 4
#define DECIDES 20000

struct race {
    struct tf_fault_rule *rule;
    pthread_barrier_t *start;
    unsigned yes;
};

static void *
race_main(void *arg)
{
    struct race *rc = arg;
    struct tf_fault_flow_info info = {"lab", NULL, NULL};

    pthread_barrier_wait(rc->start);
    for (int i = 0; i < DECIDES; i++)
        if (tf_fault_rule_decide(rc->rule, &info, false, NULL) == TF_FAULT_YES)
            rc->yes++;
    return NULL;
}

static void
race_run(const char *spec, unsigned *total, uint64_t *seen)
{
    pthread_t th[THREADS];
    struct race rc[THREADS];
    pthread_barrier_t start;
    struct tf_fault_rule *rule = spec_ok(spec);

    assert_int_equal(pthread_barrier_init(&start, NULL, THREADS), 0);
    for (int i = 0; i < THREADS; i++) {
        rc[i] = (struct race){rule, &start, 0};
        assert_int_equal(pthread_create(&th[i], NULL, race_main, &rc[i]), 0);
    }
    *total = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        *total += rc[i].yes;
    }
    pthread_barrier_destroy(&start);
    *seen = atomic_load(&rule->seen);
    assert_int_equal(atomic_load(&rule->fired), *total);
    tf_fault_rule_free(rule);
}

/* Concurrent workers: times is never exceeded, and every flow takes one ordinal. */
static void
test_match_threads(void **state)
{
    unsigned total;
    uint64_t seen;

    (void)state;
    for (int round = 0; round < 5; round++) {
        race_run("stall:times=100", &total, &seen);
        assert_int_equal(total, 100);
        assert_int_equal(seen, THREADS * DECIDES);
        race_run("stall:times=1,probability=0.5", &total, &seen);
        assert_int_equal(total, 1);
        race_run("stall:nth=777", &total, &seen);
        assert_int_equal(total, 1);
        race_run("stall:first=1000", &total, &seen);
        assert_int_equal(total, 1000);
        race_run("stall:every=4", &total, &seen);
        assert_int_equal(total, THREADS * DECIDES / 4);
    }
}

/* ------------------------------------------------------------ refs, enabled, JSON */

/* Rules are shared between snapshots: references, and a disabled rule never matches. */
static void
test_rule_refs_and_enabled(void **state)
{
    struct tf_fault_flow_info none = {NULL, NULL, NULL};
    (void)state;
    struct tf_fault_rule *r = spec_ok("stall");
    assert_true(r->enabled);
    assert_int_equal(atomic_load(&r->refs), 1);
    assert_ptr_equal(tf_fault_rule_ref(r), r);
    assert_int_equal(atomic_load(&r->refs), 2);
    tf_fault_rule_unref(r);
    assert_int_equal(atomic_load(&r->refs), 1);
    assert_string_equal(r->name, "fault1"); /* still whole */

    r->enabled = false;
    assert_int_equal(tf_fault_rule_decide(r, &none, false, NULL), TF_FAULT_NO);
    assert_int_equal(tf_fault_rule_decide(r, &none, true, "a.test"), TF_FAULT_NO);
    assert_int_equal(atomic_load(&r->seen), 0); /* a disabled rule takes no ordinal */
    r->enabled = true;
    assert_int_equal(tf_fault_rule_decide(r, &none, false, NULL), TF_FAULT_YES);
    tf_fault_rule_free(r); /* the last reference: freed (ASan checks) */
    assert_null(tf_fault_rule_ref(NULL));
    tf_fault_rule_unref(NULL);
}

static json_t *
json_of(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, 0, &jerr);
    if (v == NULL)
        fail_msg("bad JSON in the test: %s", jerr.text);
    return v;
}

/* The keys a rule was given are kept (for rebuild) and shown, typed, in its JSON. */
static void
test_rule_json(void **state)
{
    (void)state;
    struct tf_fault_rule *r = spec_ok("delay:ms=300,dir=s2c,sni=*.lab.test,nth=2,"
                                      "probability=0.5,name=slow");
    assert_int_equal(r->n_given, 5);
    assert_string_equal(r->given_keys[0], "ms");
    assert_string_equal(r->given_keys[2], "match.sni");
    json_t *j = tf_fault_rule_json(r);
    json_t *want = json_of("{\"name\": \"slow\", \"fault\": \"delay\", \"mode\": \"network\", "
                           "\"enabled\": true, \"params\": {\"ms\": 300, \"jitter\": 0, "
                           "\"dir\": \"s2c\", \"after_bytes\": 0}, \"match\": {\"sni\": "
                           "\"*.lab.test\", \"nth\": 2, \"probability\": 0.5}, \"seen\": 0, "
                           "\"fired\": 0}");
    if (!json_equal(j, want)) {
        char *got = json_dumps(j, JSON_COMPACT);
        fail_msg("rule JSON: %s", got);
    }
    json_decref(j);
    json_decref(want);
    tf_fault_rule_unref(r);

    /* Booleans are booleans. */
    r = spec_ok("truncate:then_close=no");
    j = tf_fault_rule_json(r);
    assert_true(json_is_false(json_object_get(json_object_get(j, "params"), "then_close")));
    json_decref(j);
    tf_fault_rule_unref(r);
}

static void
test_catalogue_json(void **state)
{
    (void)state;
    json_t *c = tf_fault_catalogue_json();
    assert_int_equal(json_array_size(c), tf_fault_catalogue_len);
    json_t *delay = json_array_get(c, 0);
    assert_string_equal(json_string_value(json_object_get(delay, "name")), "delay");
    assert_string_equal(json_string_value(json_object_get(delay, "mode")), "network");
    json_t *ms = json_array_get(json_object_get(delay, "params"), 0);
    assert_string_equal(json_string_value(json_object_get(ms, "name")), "ms");
    assert_string_equal(json_string_value(json_object_get(ms, "type")), "uint");
    assert_int_equal(json_integer_value(json_object_get(ms, "default")), 1000);
    assert_int_equal(json_integer_value(json_object_get(ms, "max")), 3600000);
    for (size_t i = 0; i < json_array_size(c); i++) {
        json_t *d = json_array_get(c, i);
        assert_non_null(json_string_value(json_object_get(d, "help")));
        assert_non_null(json_string_value(json_object_get(d, "client_sees")));
        assert_int_equal(json_array_size(json_object_get(d, "params")),
                         tf_fault_catalogue[i].n_params);
    }
    json_decref(c);
}

/*
 * Free text is UTF-8 (the control API shows it as JSON strings); bytes that
 * are not UTF-8 text are shown as "hex:..." and read back the same.
 */
static void
test_rule_json_utf8(void **state)
{
    char err[256];
    (void)state;
    struct tf_fault_rule *r = rule_of("strip-ciphers");
    set_bad(r, "pattern", "*RC4\xc5" "*", "\"pattern\" must be UTF-8 text");
    set_bad(r, "sni", "\xed\xa0\x80" ".lab.test", "\"sni\" must be UTF-8 text"); /* a surrogate */
    set_bad(r, "sni", "\xc0\xaf", "\"sni\" must be UTF-8 text");                /* overlong */
    set_ok(r, "sni", "b\xc3\xbc" "cher.lab.test"); /* fine */
    tf_fault_rule_unref(r);

    r = spec_ok("append-bytes:bytes=\xc5" "A");
    json_t *j = tf_fault_rule_json(r);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "params"), "bytes")),
                        "hex:c541");
    json_object_del(j, "seen");
    json_object_del(j, "fired");
    json_object_del(j, "mode");
    struct tf_fault_rule *again = tf_fault_rule_from_json(j, err, sizeof(err), NULL);
    if (again == NULL)
        fail_msg("not read back: %s", err);
    assert_int_equal(again->args.bytes_len, 2);
    assert_memory_equal(again->args.bytes, "\xc5" "A", 2);
    json_decref(j);
    tf_fault_rule_unref(again);
    tf_fault_rule_unref(r);
}

/* What a rule from JSON (POST /rules) accepts, and the exact words when it does not. */
static void
test_rule_from_json(void **state)
{
    static const struct {
        const char *json;
        const char *err;
        const char *valid_first; /* first of the valid names, or NULL: none given */
    } bad[] = {
        {"[1]", "expected a JSON object: {\"name\": ..., \"fault\": ..., \"params\": {...}, "
                "\"match\": {...}}", NULL},
        {"{\"fault\": \"stall\"}", "\"name\" is required", NULL},
        {"{\"name\": \"a b\", \"fault\": \"stall\"}",
         "name \"a b\" is not valid (use 1-64 letters, digits, \".\", \"_\" or \"-\")", NULL},
        {"{\"name\": \"x\"}", "\"fault\" is required (GET /faults lists them)", NULL},
        {"{\"name\": \"x\", \"fault\": \"drop-server-helo\"}", NULL, "delay"},
        {"{\"name\": \"x\", \"fault\": \"delay\", \"params\": {\"msx\": 1}}",
         "unknown parameter \"msx\" for fault \"delay\"; valid: ms, jitter, dir, after_bytes",
         "ms"},
        {"{\"name\": \"x\", \"fault\": \"delay\", \"sni\": \"a\"}",
         "unknown parameter \"sni\" for fault \"delay\"; valid: ms, jitter, dir, after_bytes, "
         "name, fault, enabled, params, match; \"sni\" belongs in \"match\"", "ms"},
        {"{\"name\": \"x\", \"fault\": \"stall\", \"params\": {\"sni\": \"a\"}}",
         "unknown parameter \"sni\" for fault \"stall\"; valid: dir, after_bytes; \"sni\" belongs "
         "in \"match\"", "dir"},
        {"{\"name\": \"x\", \"fault\": \"strip-sni\", \"params\": {\"dir\": \"c2s\"}}",
         "unknown parameter \"dir\": fault \"strip-sni\" takes none", NULL},
        {"{\"name\": \"x\", \"fault\": \"stall\", \"match\": {\"host\": \"a\"}}",
         "unknown key \"host\" in match; valid keys: listener, client, dest, dest_port, sni, nth, "
         "every, first, probability, seed, times", "listener"},
        {"{\"name\": \"x\", \"fault\": \"delay\", \"params\": {\"ms\": -1}}",
         "\"ms\" must be between 0 and 3600000, not -1", NULL},
        {"{\"name\": \"x\", \"fault\": \"delay\", \"params\": {\"ms\": [1]}}",
         "\"ms\" must be a single value (number, string or boolean)", NULL},
        {"{\"name\": \"x\", \"fault\": \"delay\", \"ms\": 1, \"params\": {\"ms\": 2}}",
         "\"ms\" is given twice (beside \"fault\" and in \"params\")", NULL},
        {"{\"name\": \"x\", \"fault\": \"stall\", \"match\": {\"nth\": 0}}",
         "\"nth\" must be an integer of at least 1, not \"0\"", NULL},
        {"{\"name\": \"x\", \"fault\": \"stall\", \"enabled\": \"yes\"}",
         "\"enabled\" must be true or false", NULL},
        {"{\"name\": \"x\", \"fault\": \"stall\", \"params\": []}",
         "\"params\" must be an object ({\"ms\": 300, ...})", NULL},
        {"{\"name\": \"x\", \"fault\": \"server-versions\", \"min\": \"TLS1.3\", \"max\": "
         "\"TLS1.2\"}", "\"min\" (TLS1.3) is above \"max\" (TLS1.2)", NULL},
    };
    char err[1024];

    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        json_t *valid = NULL;
        json_t *in = json_of(bad[i].json);
        struct tf_fault_rule *r = tf_fault_rule_from_json(in, err, sizeof(err), &valid);
        json_decref(in);
        if (r != NULL)
            fail_msg("%s accepted", bad[i].json);
        if (bad[i].err != NULL && strcmp(err, bad[i].err) != 0)
            fail_msg("%s:\n got: %s\nwant: %s", bad[i].json, err, bad[i].err);
        if (bad[i].valid_first != NULL) {
            assert_non_null(valid);
            assert_string_equal(json_string_value(json_array_get(valid, 0)), bad[i].valid_first);
        }
        json_decref(valid);
    }

    /* Parameters beside "fault" (as in the file) and in "params"; numbers, booleans, strings. */
    json_t *in = json_of("{\"name\": \"slow\", \"fault\": \"delay\", \"jitter\": 5, \"params\": "
                         "{\"ms\": 250, \"dir\": \"s2c\"}, \"match\": {\"sni\": \"*.lab.test\", "
                         "\"probability\": 0.25, \"times\": 3}, \"enabled\": false}");
    struct tf_fault_rule *r = tf_fault_rule_from_json(in, err, sizeof(err), NULL);
    json_decref(in);
    if (r == NULL)
        fail_msg("refused: %s", err);
    assert_string_equal(r->name, "slow");
    assert_int_equal(r->args.ms, 250);
    assert_int_equal(r->args.jitter_ms, 5);
    assert_int_equal(r->args.dir, TF_FAULT_DIR_S2C);
    assert_string_equal(r->match.sni, "*.lab.test");
    assert_true(r->match.probability == 0.25);
    assert_int_equal(r->match.times, 3);
    assert_false(r->enabled);
    assert_int_equal(r->line, 0);
    tf_fault_rule_unref(r);

    /* truncate's then_close takes a JSON boolean; alert's dir is worked out. */
    in = json_of("{\"name\": \"a\", \"fault\": \"alert\", \"params\": {\"after\": "
                 "\"server_hello\"}}");
    r = tf_fault_rule_from_json(in, err, sizeof(err), NULL);
    json_decref(in);
    assert_non_null(r);
    assert_int_equal(r->args.dir, TF_FAULT_DIR_S2C);
    tf_fault_rule_unref(r);
    in = json_of("{\"name\": \"t\", \"fault\": \"truncate\", \"then_close\": false}");
    r = tf_fault_rule_from_json(in, err, sizeof(err), NULL);
    json_decref(in);
    assert_non_null(r);
    assert_false(r->args.then_close);
    tf_fault_rule_unref(r);
}

/* PATCH: a new rule from the old one's keys and the changes; counters carry over. */
static void
test_rule_rebuild(void **state)
{
    char err[1024];
    struct tf_fault_flow_info none = {NULL, NULL, NULL};

    (void)state;
    struct tf_fault_rule *old = spec_ok("alert:description=protocol_version,sni=*.lab.test,"
                                        "name=a");
    assert_int_equal(old->args.dir, TF_FAULT_DIR_C2S); /* auto: client_hello's sender */
    old->line = 7;
    assert_int_equal(tf_fault_rule_decide(old, &none, true, "x.lab.test"), TF_FAULT_YES);

    json_t *params = json_of("{\"after\": \"server_hello\", \"description\": null}");
    json_t *match = json_of("{\"sni\": null, \"nth\": 5}");
    struct tf_fault_rule *r =
        tf_fault_rule_rebuild(old, params, match, 0, false, err, sizeof(err), NULL);
    if (r == NULL)
        fail_msg("refused: %s", err);
    assert_ptr_not_equal(r, old);
    assert_string_equal(r->name, "a");
    assert_int_equal(r->args.dir, TF_FAULT_DIR_S2C); /* worked out again */
    assert_int_equal(r->args.description, 40);       /* null: the default, handshake_failure */
    assert_null(r->match.sni);
    assert_int_equal(r->match.nth, 5);
    assert_false(r->enabled);
    assert_int_equal(r->line, 7);
    assert_int_equal(atomic_load(&r->seen), 1);
    assert_int_equal(atomic_load(&r->fired), 1);
    /* The old rule is untouched: flows that hold it keep it. */
    assert_true(old->enabled);
    assert_string_equal(old->match.sni, "*.lab.test");
    assert_int_equal(old->args.description, 70);
    json_decref(params);
    json_decref(match);

    /* Nothing changed but the counters. */
    struct tf_fault_rule *z = tf_fault_rule_rebuild(r, NULL, NULL, -1, true, err, sizeof(err),
                                                    NULL);
    assert_non_null(z);
    assert_int_equal(atomic_load(&z->seen), 0);
    assert_int_equal(atomic_load(&z->fired), 0);
    assert_false(z->enabled);
    assert_int_equal(z->match.nth, 5);
    tf_fault_rule_unref(z);

    /* Refusals leave nothing behind and say what is valid. */
    json_t *valid = NULL;
    params = json_of("{\"afterr\": 1}");
    assert_null(tf_fault_rule_rebuild(r, params, NULL, -1, false, err, sizeof(err), &valid));
    assert_string_equal(err, "unknown parameter \"afterr\" for fault \"alert\"; valid: "
                             "description, level, after, dir, to");
    assert_string_equal(json_string_value(json_array_get(valid, 0)), "description");
    json_decref(valid);
    json_decref(params);
    match = json_of("{\"nth\": \"x\"}");
    assert_null(tf_fault_rule_rebuild(r, NULL, match, -1, false, err, sizeof(err), NULL));
    assert_string_equal(err, "\"nth\" must be an integer of at least 1, not \"x\"");
    json_decref(match);
    tf_fault_rule_unref(r);
    tf_fault_rule_unref(old);
}

int
main(void)
{
    static const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_catalogue_consistent),
        cmocka_unit_test(test_catalogue_defaults_parse),
        cmocka_unit_test(test_catalogue_default_values),
        cmocka_unit_test(test_catalogue_mitm_client_sees),
        cmocka_unit_test(test_catalogue_names),
        cmocka_unit_test(test_catalogue_print),
        cmocka_unit_test(test_spec_good),
        cmocka_unit_test(test_spec_bad),
        cmocka_unit_test(test_set_failure_keeps_rule),
        cmocka_unit_test(test_values_version),
        cmocka_unit_test(test_values_alert_and_hs),
        cmocka_unit_test(test_values_numbers_and_bools),
        cmocka_unit_test(test_values_bytes_and_positions),
        cmocka_unit_test(test_values_mitm),
        cmocka_unit_test(test_match_everything),
        cmocka_unit_test(test_match_listener),
        cmocka_unit_test(test_match_client_cidr),
        cmocka_unit_test(test_match_dest),
        cmocka_unit_test(test_match_sni),
        cmocka_unit_test(test_match_counting),
        cmocka_unit_test(test_match_probability),
        cmocka_unit_test(test_match_threads),
        cmocka_unit_test(test_rule_refs_and_enabled),
        cmocka_unit_test(test_rule_json),
        cmocka_unit_test(test_rule_json_utf8),
        cmocka_unit_test(test_catalogue_json),
        cmocka_unit_test(test_rule_from_json),
        cmocka_unit_test(test_rule_rebuild),
    };
    return cmocka_run_group_tests_name("fault", tests, NULL, NULL);
}
