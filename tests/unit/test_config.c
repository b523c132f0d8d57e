/*
 * test_config.c — the configuration file and the quick command line.
 *
 * Every error message has a fixture in tests/unit/fixtures/config/ whose
 * exact "file:line: message" text is asserted here, so a changed message or
 * a wrong line number fails a test.  Good files are checked field by field
 * (every default included), as is the shipped conf/tlsfault.conf.  Also:
 * quick mode, host:port splitting, the error buffer's truncation and the
 * reference count.  Fixtures are found under $TF_SRCDIR (default ".").
 *
 * mitm needs a lab CA: the group setup makes one with tf_lab_ca_init in a
 * temporary "lab" directory (lab/lab-ca), and fixtures marked lab are
 * copied there before loading, so that their relative ca.dir = "lab-ca"
 * is found the way a user's would be: from the file's own directory.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <ftw.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tlsfault/config.h"
#include "tlsfault/forge.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define FIXTURE_DIR "tests/unit/fixtures/config"

static const char *
test_srcdir(void)
{
    const char *d = getenv("TF_SRCDIR");
    return d != NULL && *d != '\0' ? d : ".";
}

static void
test_path(char *buf, size_t n, const char *relative)
{
    int w = snprintf(buf, n, "%s/%s", test_srcdir(), relative);
    assert_true(w > 0 && (size_t)w < n);
}

static void
test_fixture(char *buf, size_t n, const char *name)
{
    int w = snprintf(buf, n, "%s/" FIXTURE_DIR "/%s", test_srcdir(), name);
    assert_true(w > 0 && (size_t)w < n);
}

/* ------------------------------------------------------------ the lab */

static char lab_dir[256];    /* made by the group setup; holds lab-ca/ */
static char lab_ca_dir[300]; /* lab_dir/lab-ca */

static int
lab_setup(void **state)
{
    char err[512];

    (void)state;
    snprintf(lab_dir, sizeof(lab_dir), "%s/tlsfault-test-config-XXXXXX",
             getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
    if (mkdtemp(lab_dir) == NULL)
        return -1;
    snprintf(lab_ca_dir, sizeof(lab_ca_dir), "%s/lab-ca", lab_dir);
    if (!tf_lab_ca_init(lab_ca_dir, err, sizeof(err))) {
        fprintf(stderr, "lab CA: %s\n", err);
        return -1;
    }
    return 0;
}

static int
lab_remove_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int
lab_teardown(void **state)
{
    (void)state;
    if (lab_dir[0] != '\0')
        nftw(lab_dir, lab_remove_cb, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* Copies fixture name into the lab; buf gets the copy's path. */
static void
test_lab_fixture(char *buf, size_t n, const char *name)
{
    char src[1024];
    char data[16384];

    test_fixture(src, sizeof(src), name);
    FILE *in = fopen(src, "r");
    assert_non_null(in);
    size_t len = fread(data, 1, sizeof(data), in);
    assert_true(len < sizeof(data));
    fclose(in);
    int w = snprintf(buf, n, "%s/%s", lab_dir, name);
    assert_true(w > 0 && (size_t)w < n);
    FILE *out = fopen(buf, "w");
    assert_non_null(out);
    assert_int_equal(fwrite(data, 1, len, out), len);
    assert_int_equal(fclose(out), 0);
}

static struct tf_config *
test_load_good(const char *path)
{
    char err[4096];
    struct tf_config *cfg = tf_config_load(path, err, sizeof(err));
    if (cfg == NULL)
        fail_msg("%s should load, got:\n%s", path, err);
    return cfg;
}

static uint16_t
test_port(const struct tf_listener_conf *lc)
{
    if (lc->addr.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)&lc->addr)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)&lc->addr)->sin6_port);
}

static void
test_assert_v4(const struct tf_listener_conf *lc, const char *addr, uint16_t port)
{
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&lc->addr;
    struct in_addr want;

    assert_int_equal(lc->addr.ss_family, AF_INET);
    assert_int_equal(lc->addr_len, sizeof(struct sockaddr_in));
    assert_int_equal(inet_pton(AF_INET, addr, &want), 1);
    assert_memory_equal(&sin->sin_addr, &want, sizeof(want));
    assert_int_equal(test_port(lc), port);
}

static void
test_assert_v6(const struct tf_listener_conf *lc, const char *addr, uint16_t port)
{
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&lc->addr;
    struct in6_addr want;

    assert_int_equal(lc->addr.ss_family, AF_INET6);
    assert_int_equal(lc->addr_len, sizeof(struct sockaddr_in6));
    assert_int_equal(inet_pton(AF_INET6, addr, &want), 1);
    assert_memory_equal(&sin6->sin6_addr, &want, sizeof(want));
    assert_int_equal(test_port(lc), port);
}

/* A leg nobody configured: OpenSSL's defaults, no upstream verification. */
static void
test_assert_tls_defaults(const struct tf_tls_settings *t)
{
    assert_int_equal(t->min_version, 0);
    assert_int_equal(t->max_version, 0);
    assert_null(t->ciphers);
    assert_null(t->ciphersuites);
    assert_null(t->groups);
    assert_null(t->sigalgs);
    assert_null(t->alpn);
    assert_int_equal(t->security_level, -1);
    assert_int_equal(t->verify, TF_VERIFY_NONE);
    assert_null(t->ca_file);
    assert_false(t->forge_on_verify_failure);
}

/* What only some routes set, unset: everything allowed, no default, no mark. */
static void
test_assert_route_defaults(const struct tf_listener_conf *lc)
{
    assert_null(lc->allow);
    assert_int_equal(lc->n_allow, 0);
    assert_null(lc->default_host);
    assert_int_equal(lc->default_port, 0);
    assert_false(lc->spoof_source);
    assert_int_equal(lc->mark, 0);
}

/* ------------------------------------------------------------ bad fixtures */

/*
 * One fixture per message.  In expected, "FILE" at the start of a line
 * stands for the fixture's path as passed to tf_config_load; lines are
 * separated by '\n' with none at the end.
 */
struct bad_case {
    const char *fixture;
    const char *expected;
};

/* mitm_*.conf are loaded from a copy in the lab, beside lab-ca/. */
static bool
test_in_lab(const char *fixture)
{
    return strncmp(fixture, "mitm_", 5) == 0;
}

static struct bad_case bad_cases[] = {
    /* libconfig's own errors */
    {"syntax_error.conf", "FILE:2: syntax error"},
    {"duplicate_key.conf", "FILE:3: duplicate setting name"},
    {"include_missing.conf", "FILE:2: cannot open include file"},
    /* keys */
    {"unknown_key.conf",
     "FILE:7: unknown key \"upstreem\" in listener; valid keys: name, listen, route, upstream, "
     "mode, client_tls, upstream_tls, upstream_port, allow, default_upstream, spoof_source, "
     "probe, mark"},
    {"unknown_key_top.conf",
     "FILE:2: unknown key \"listener\" at top level; valid keys: workers, busy_poll_us, "
     "listeners, faults, log, timeouts, limits, ca, control, mark"},
    {"unknown_key_log.conf",
     "FILE:3: unknown key \"file\" in log; valid keys: text, json, level, keylog, content, app_records"},
    {"unknown_key_timeouts.conf",
     "FILE:3: unknown key \"read\" in timeouts; valid keys: connect, handshake, idle, grace"},
    {"unknown_key_limits.conf",
     "FILE:3: unknown key \"records\" in limits; valid keys: handshake_message_max, buffer, connections"},
    /* the control API */
    {"control_remote.conf",
     "FILE:4: control.listen \"0.0.0.0:8474\" is not a loopback address: whoever reaches the "
     "control API decides what happens to the traffic; set control.allow_remote = true and a "
     "control.token_file to allow it"},
    {"control_remote_no_token.conf",
     "FILE:5: control.listen \"[::]:8474\" is not a loopback address: a remote control API "
     "needs a control.token_file"},
    {"control_keys.conf",
     "FILE:4: unknown key \"port\" in control; valid keys: listen, token_file, allow_remote\n"
     "FILE:5: \"control.listen\" must not be empty\n"
     "FILE:6: \"control.allow_remote\" must be true or false\n"
     "FILE:7: \"control.token_file\" must be a string"},
    {"control_listen_bad.conf",
     "FILE:3: control.listen: \"localhost\" is not a numeric IP address (a listener binds to an "
     "address, not a host name)"},
    {"control_token.conf",
     "FILE:4: control.token_file \"@DIR@/no-such.token\": cannot read: No such file or "
     "directory"},
    {"control_token_empty.conf",
     "FILE:3: control.token_file \"@DIR@/empty.token\": is empty (its first line is the "
     "token)"},
    {"control_not_group.conf", "FILE:3: \"control\" must be a group ({ ... })"},
    /* types */
    {"wrong_type_int.conf", "FILE:2: \"workers\" must be an integer"},
    {"wrong_type_number.conf", "FILE:3: \"timeouts.idle\" must be a number"},
    {"wrong_type_string.conf", "FILE:3: \"listen\" must be a string"},
    {"wrong_type_group.conf", "FILE:3: \"log\" must be a group ({ ... })"},
    {"wrong_type_list.conf", "FILE:2: \"listeners\" must be a list (( ... ))"},
    {"listener_not_group.conf", "FILE:2: each listener must be a group ({ ... })"},
    /* listeners and faults */
    {"no_listeners.conf", "FILE: at least one listener is required"},
    {"empty_listeners.conf", "FILE:2: at least one listener is required"},
    /* fault rules */
    {"fault_unknown.conf",
     "FILE:6: fault \"drop-server-helo\" is unknown; valid: delay, bandwidth, stall, reset, "
     "close, slice, drop-server-hello, reset-after-client-hello, close-after-client-hello, "
     "alert, plaintext-response, downgrade, strip-ciphers, strip-sni, strip-alpn, "
     "record-version-too-high, strip-intermediates, append-bytes, corrupt, truncate, "
     "duplicate, fragment, cert-expired, cert-not-yet-valid, cert-wrong-host, cert-self-signed, "
     "cert-untrusted-root, cert-no-intermediate, cert-wrong-eku, cert-sha1, cert-weak-key, "
     "server-versions, server-ciphers, require-sni"},
    {"fault_mitm.conf", "FILE:4: fault \"cert-expired\" needs a listener with mode = \"mitm\""},
    {"fault_unknown_param.conf",
     "FILE:7: unknown parameter \"dri\" for fault \"delay\"; valid: ms, jitter, dir, "
     "after_bytes, name, fault, match"},
    {"fault_match_key_outside.conf",
     "FILE:5: unknown parameter \"sni\" for fault \"stall\"; valid: dir, after_bytes, name, "
     "fault, match; \"sni\" belongs in match = { ... }"},
    {"fault_bad_value.conf",
     "FILE:5: \"ms\" must be between 0 and 3600000, not 5000000\n"
     "FILE:6: \"dir\" must be c2s, s2c or both, not \"5\"\n"
     "FILE:7: \"jitter\" must be an integer, not \"1.5\"\n"
     "FILE:9: \"description\" must be an alert name (handshake_failure, protocol_version, "
     "internal_error, ...) or a number 0-255, not \"bogus\"\n"
     "FILE:10: \"after\" must be a handshake message (client_hello, server_hello, "
     "hello_retry_request, new_session_ticket, encrypted_extensions, certificate, "
     "server_key_exchange, certificate_request, server_hello_done, certificate_verify, "
     "client_key_exchange, finished, certificate_status), not \"hello\"\n"
     "FILE:12: \"then_close\" must be true or false, not \"maybe\"\n"
     "FILE:14: \"bytes\" must be pairs of hex digits after \"hex:\", not \"hex:zz\""},
    {"fault_param_not_value.conf",
     "FILE:4: \"ms\" must be a single value (number, string or boolean)"},
    {"fault_name_duplicate.conf", "FILE:5: rule name \"slow\" is already used (line 4)"},
    {"fault_default_name_taken.conf",
     "FILE:5: default name \"fault2\" is already used (line 4); give this rule a name"},
    {"fault_name_invalid.conf",
     "FILE:4: name \"my rule\" is not valid (use 1-64 letters, digits, \".\", \"_\" or \"-\")"},
    {"fault_missing_fault.conf",
     "FILE:4: rule \"fault1\" has no \"fault\" (see tlsfault --list-faults)"},
    {"fault_not_string.conf", "FILE:4: \"fault\" must be a string"},
    {"fault_not_group.conf", "FILE:3: each fault rule must be a group ({ ... })"},
    {"fault_unknown_listener.conf",
     "FILE:4: unknown listener \"lab\" in match; valid: lab-v4, lab-v6"},
    {"fault_match_not_group.conf", "FILE:4: \"match\" must be a group ({ ... })"},
    {"fault_match_bad.conf",
     "FILE:6: unknown key \"snii\" in match; valid keys: listener, client, dest, dest_port, sni, "
     "nth, every, first, probability, seed, times\n"
     "FILE:7: \"client\" \"10.0.0.1/8\" has bits set past the /8 prefix (did you mean "
     "10.0.0.0/8?)\n"
     "FILE:8: \"probability\" must be a number from 0 to 1, not \"1.5\"\n"
     "FILE:9: \"nth\" must be an integer of at least 1, not \"0\"\n"
     "FILE:10: \"match.sni\" must be a single value (number, string or boolean)\n"
     "FILE:13: \"dest\" \"192.0.2.1/24\" has bits set past the /24 prefix (did you mean "
     "192.0.2.0/24?)\n"
     "FILE:13: \"dest_port\" must be a port from 1 to 65535, not \"0\"\n"
     "FILE:14: \"dest\" must be an address or CIDR (10.0.0.0/8, ::1, fd00::/64), not "
     "\"lab.test\"\n"
     "FILE:14: \"dest_port\" must be a port from 1 to 65535, not \"https\"\n"
     "FILE:15: \"dest\" prefix /129 is too long for IPv6 (at most /128)\n"
     "FILE:15: \"dest_port\" must be a port from 1 to 65535, not \"65536\""},
    /* ranges */
    {"workers_range.conf", "FILE:2: \"workers\" must be between 0 and 256, not 300"},
    {"busy_poll_range.conf",
     "FILE:2: \"busy_poll_us\" must be between 0 and 1000000, not 2000000"},
    {"handshake_message_max_range.conf",
     "FILE:3: \"limits.handshake_message_max\" must be between 1024 and 16777216, not 512"},
    {"buffer_range.conf",
     "FILE:3: \"limits.buffer\" must be between 4096 and 1073741824, not 1024"},
    {"timeout_zero.conf",
     "FILE:3: \"timeouts.connect\" must be greater than 0 seconds, not 0"},
    {"timeout_negative.conf",
     "FILE:3: \"timeouts.handshake\" must be greater than 0 seconds, not -1.5"},
    {"timeout_too_long.conf",
     "FILE:3: \"timeouts.idle\" must be at most 86400 seconds, not 100000"},
    {"empty_string.conf", "FILE:3: \"log.text\" must not be empty"},
    {"log_level_unknown.conf",
     "FILE:3: unknown log level \"verbose\"; valid: error, warn, info, debug"},
    {"leaf_keys_unknown.conf",
     "FILE:3: unknown leaf_keys \"ed25519\"; valid: both, upstream, rsa, ecdsa"},
    /* route and mode */
    {"route_unknown.conf",
     "FILE:3: unknown route \"bogus\"; valid: forward, sni, redirect, tproxy, connect"},
    /* what each route takes */
    {"route_redirect_upstream.conf",
     "FILE:4: route \"redirect\" takes its upstream from the original destination; remove "
     "upstream\n"
     "FILE:6: route \"tproxy\" takes its upstream from the original destination; remove "
     "upstream"},
    {"route_sni_upstream.conf",
     "FILE:4: route \"sni\" takes its upstream from the ClientHello's server name; remove "
     "upstream (set upstream_port, and default_upstream for hellos without SNI)\n"
     "FILE:6: route \"connect\" takes its upstream from each CONNECT request; remove upstream"},
    {"route_sni_no_port.conf",
     "FILE:3: listener \"sni\" has no \"upstream_port\" (required for route \"sni\": the port "
     "server names are connected on)\n"
     "FILE:4: \"upstream_port\" must be an integer"},
    {"route_keys.conf",
     "FILE:4: route \"forward\" takes its port from upstream (\"host:port\"); remove "
     "upstream_port\n"
     "FILE:5: route \"forward\" does not take \"allow\" (routes \"sni\" and \"connect\" do)\n"
     "FILE:6: route \"forward\" does not take \"default_upstream\" (route \"sni\" does)\n"
     "FILE:7: route \"forward\" does not take \"spoof_source\" (route \"tproxy\" does)\n"
     "FILE:9: route \"redirect\" does not take \"allow\" (routes \"sni\" and \"connect\" do)\n"
     "FILE:10: route \"redirect\" does not take \"spoof_source\" (route \"tproxy\" does)\n"
     "FILE:12: route \"tproxy\" does not take \"upstream_port\" (route \"sni\" does)\n"
     "FILE:12: route \"tproxy\" does not take \"default_upstream\" (route \"sni\" does)\n"
     "FILE:14: route \"connect\" does not take \"upstream_port\" (route \"sni\" does)\n"
     "FILE:15: route \"connect\" does not take \"default_upstream\" (route \"sni\" does)\n"
     "FILE:16: route \"connect\" does not take \"spoof_source\" (route \"tproxy\" does)\n"
     "FILE:18: route \"sni\" does not take \"spoof_source\" (route \"tproxy\" does)"},
    {"route_values.conf",
     "FILE:3: \"upstream_port\" must be between 1 and 65535, not 0\n"
     "FILE:4: \"upstream_port\" must be between 1 and 65535, not 65536\n"
     "FILE:5: default_upstream \"origin.lab.test\": missing port (expected host:port or "
     "[v6]:port)\n"
     "FILE:7: default_upstream \"127.0.0.1:0\": port 0 is out of range for an upstream "
     "(1-65535)\n"
     "FILE:8: \"spoof_source\" must be true or false\n"
     "FILE:10: \"allow\" must be a list (( ... ))"},
    {"allow_bad.conf",
     "FILE:7: allow \"*.lab.test:443\": route \"sni\" matches server names only (the port is "
     "upstream_port)\n"
     "FILE:8: allow \"lab test\": not a host-name pattern (letters, digits, \"-\", \"_\", \".\" "
     "and the wildcards \"*\", \"?\", \"[...]\")\n"
     "FILE:9: allow \"\": empty pattern\n"
     "FILE:13: \"allow\" must list at least one pattern (leave it out to allow everything)\n"
     "FILE:16: each \"allow\" entry must be a string, such as \"*.lab.test\"\n"
     "FILE:19: allow \"[::1:443\": missing \"]\" after the IPv6 address\n"
     "FILE:20: allow \"[lab.test]:443\": \"lab.test\" in brackets is not an IPv6 address or "
     "pattern\n"
     "FILE:21: allow \"[::1]443\": expected \":\" and a port after \"]\"\n"
     "FILE:22: allow \"::1:443\": an IPv6 address needs brackets, as in [2001:db8::1]:443\n"
     "FILE:23: allow \":443\": missing host (expected host-pattern:port or host-pattern)\n"
     "FILE:24: allow \"*.lab.test:\": missing port after \":\" (write \":*\" or leave the \":\" "
     "out to allow every port)\n"
     "FILE:25: allow \"*.lab.test:https\": port \"https\" is not a number\n"
     "FILE:26: allow \"*.lab.test:0\": port 0 is out of range (1-65535)\n"
     "FILE:27: allow \"*.lab.test:65536\": port 65536 is out of range (1-65535)\n"
     "FILE:28: allow \"lab/test:443\": \"lab/test\" is not a host-name pattern (letters, "
     "digits, \"-\", \"_\", \".\" and the wildcards \"*\", \"?\", \"[...]\")\n"
     "FILE:29: allow \"[]:443\": \"\" in brackets is not an IPv6 address or pattern"},
    {"mark_bad.conf",
     "FILE:2: \"mark\" must be from 1 to 0xffffffff, not 0\n"
     "FILE:4: \"mark\" must be a number from 1 to 0xffffffff (\"2\" or \"0x2\"), not \"0x\"\n"
     "FILE:5: \"mark\" must be a number from 1 to 0xffffffff (\"2\" or \"0x2\"), not \"two\"\n"
     "FILE:6: \"mark\" must be from 1 to 0xffffffff, not -2147483648 (libconfig reads integers "
     "above 0x7fffffff as negative: for 0x80000000, write \"0x80000000\")\n"
     "FILE:7: \"mark\" must be from 1 to 0xffffffff, not 4294967296\n"
     "FILE:8: \"mark\" must be an integer or a string such as \"0x2\"\n"
     "FILE:9: \"mark\" must be a number from 1 to 0xffffffff (\"2\" or \"0x2\"), not "
     "\"0x100000000\"\n"
     "FILE:10: \"mark\" must be from 1 to 0xffffffff, not -3 (libconfig reads integers above "
     "0x7fffffff as negative: for 0xfffffffd, write \"0xfffffffd\")"},
    {"mode_unknown.conf", "FILE:3: unknown mode \"transparent\"; valid: passthrough, mitm"},
    /* required settings and names */
    {"no_listen.conf", "FILE:3: listener \"listener1\" has no \"listen\" address"},
    {"no_upstream.conf",
     "FILE:3: listener \"lab\" has no \"upstream\" (required for route \"forward\")"},
    {"name_invalid.conf",
     "FILE:3: name \"my lab\" is not valid (use 1-64 letters, digits, \".\", \"_\" or \"-\")"},
    {"name_control_char.conf",
     "FILE:3: name \"a?b\" is not valid (use 1-64 letters, digits, \".\", \"_\" or \"-\")"},
    {"name_duplicate.conf", "FILE:4: listener name \"lab\" is already used (line 3)"},
    {"name_default_taken.conf",
     "FILE:4: default name \"listener2\" is already used (line 3); give this listener a name"},
    {"listen_duplicate.conf",
     "FILE:4: listen \"127.0.0.1:8443\" is already used by listener \"a\" (line 3)"},
    /* addresses */
    {"listen_not_numeric.conf",
     "FILE:3: listen \"lab.test:8443\": \"lab.test\" is not a numeric IP address (a listener "
     "binds to an address, not a host name)"},
    {"listen_missing_port.conf",
     "FILE:3: listen \"127.0.0.1\": missing port (expected host:port or [v6]:port)"},
    {"listen_empty.conf",
     "FILE:3: listen \"\": empty address (expected host:port or [v6]:port)"},
    {"address_unclosed_bracket.conf",
     "FILE:3: listen \"[::1:8443\": missing \"]\" after the IPv6 address"},
    {"address_after_bracket.conf",
     "FILE:3: listen \"[::1]8443\": expected \":\" and a port after \"]\""},
    {"address_v6_no_brackets.conf",
     "FILE:3: listen \"::1:8443\": an IPv6 address needs brackets, as in [::1]:8443"},
    {"address_missing_host.conf",
     "FILE:3: upstream \":4433\": missing host (expected host:port or [v6]:port)"},
    {"address_not_v6.conf",
     "FILE:3: upstream \"[origin.lab.test]:443\": \"origin.lab.test\" in brackets is not an "
     "IPv6 address"},
    {"port_not_number.conf",
     "FILE:3: upstream \"origin.lab.test:https\": port \"https\" is not a number"},
    {"port_range.conf",
     "FILE:3: upstream \"127.0.0.1:0\": port 0 is out of range for an upstream (1-65535)\n"
     "FILE:4: upstream \"127.0.0.1:65536\": port 65536 is out of range (0-65535)"},
    {"host_too_long.conf",
     "FILE:3: upstream "
     "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...\": host is too long "
     "(1105 bytes)"},
    {"upstream_bad_host.conf",
     "FILE:3: upstream \"origin lab.test:443\": \"origin lab.test\" is not a valid host name"},
    /* all problems, not just the first */
    {"multiple_errors.conf",
     "FILE:2: \"workers\" must be between 0 and 256, not -1\n"
     "FILE:8: unknown key \"colour\" in listener; valid keys: name, listen, route, upstream, "
     "mode, client_tls, upstream_tls, upstream_port, allow, default_upstream, spoof_source, "
     "probe, mark\n"
     "FILE:6: listen \"127.0.0.1\": missing port (expected host:port or [v6]:port)\n"
     "FILE:11: listener name \"lab\" is already used (line 4)\n"
     "FILE:10: listener \"lab\" has no \"upstream\" (required for route \"forward\")\n"
     "FILE:16: unknown log level \"loud\"; valid: error, warn, info, debug\n"
     "FILE:17: \"timeouts.idle\" must be greater than 0 seconds, not 0\n"
     "FILE:17: \"timeouts.grace\" must be a number\n"
     "FILE:18: \"limits.buffer\" must be between 4096 and 1073741824, not 10\n"
     "FILE:13: mode \"mitm\" needs a lab CA: set ca.dir (make one with tlsfault --ca-init DIR)"},
    /* mitm: the legs' settings, the lab CA, the mitm faults */
    {"mitm_no_ca.conf",
     "FILE:3: mode \"mitm\" needs a lab CA: set ca.dir (make one with tlsfault --ca-init DIR)"},
    {"tls_needs_mitm.conf",
     "FILE:6: client_tls needs mode = \"mitm\"\n"
     "FILE:7: upstream_tls needs mode = \"mitm\"\n"
     "FILE:13: upstream_tls needs mode = \"mitm\""},
    {"ca_mixed.conf",
     "FILE:5: ca.dir and ca.cert do not mix: a ca.dir holds the whole CA\n"
     "FILE:6: ca.dir and ca.chain do not mix: a ca.dir holds the whole CA"},
    {"ca_pairs.conf",
     "FILE:4: ca.cert needs ca.key\n"
     "FILE:5: ca.untrusted_key needs ca.untrusted_cert"},
    {"ca_alone.conf",
     "FILE:4: ca.chain needs ca.cert and ca.key\n"
     "FILE:5: ca.untrusted_cert needs ca.cert and ca.key\n"
     "FILE:6: ca.untrusted_key needs ca.cert and ca.key"},
    {"ca_keys.conf",
     "FILE:4: unknown key \"root\" in ca; valid keys: dir, cert, key, chain, untrusted_cert, "
     "untrusted_key, cache, leaf_keys\n"
     "FILE:5: \"ca.cache\" must be between 0 and 1048576, not -1\n"
     "FILE:6: \"ca.dir\" must not be empty\n"
     "FILE:7: \"ca.cert\" must be a string\n"
     "FILE:7: ca.dir and ca.cert do not mix: a ca.dir holds the whole CA"},
    {"log_mitm_keys.conf",
     "FILE:4: \"log.keylog\" must not be empty\n"
     "FILE:5: \"log.content\" must be between 0 and 16777216, not 16777217"},
    {"mitm_tls_bad.conf",
     "FILE:8: \"client_tls.min_version\" must be TLS1.0, TLS1.1, TLS1.2 or TLS1.3 (\"1.2\" and "
     "\"0x0303\" work too), not \"SSL3.0\"\n"
     "FILE:9: \"client_tls.max_version\" must be TLS1.0, TLS1.1, TLS1.2 or TLS1.3 (\"1.2\" and "
     "\"0x0303\" work too), not \"TLS1.4\"\n"
     "FILE:10: \"client_tls.ciphers\": OpenSSL refuses \"NO-SUCH-CIPHER\" (expected an OpenSSL "
     "cipher string for TLS 1.2 and below, such as \"ECDHE+AESGCM:!aNULL\"; see openssl ciphers "
     "-v)\n"
     "FILE:11: \"client_tls.ciphersuites\": OpenSSL refuses \"TLS_NO_SUCH_SUITE\" (expected TLS "
     "1.3 suites separated by \":\", such as \"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384\")\n"
     "FILE:12: \"client_tls.groups\": OpenSSL refuses \"X25519:P-999\" (expected groups "
     "separated by \":\", such as \"X25519:P-256\")\n"
     "FILE:13: \"client_tls.sigalgs\": OpenSSL refuses \"ECDSA+MD4\" (expected signature "
     "algorithms separated by \":\", such as \"ECDSA+SHA256:RSA-PSS+SHA256\")\n"
     "FILE:14: \"client_tls.alpn\" must be protocol names separated by commas, such as "
     "\"h2,http/1.1\", not \"h2,,http/1.1\"\n"
     "FILE:15: \"client_tls.security_level\" must be between 0 and 5, not 6\n"
     "FILE:16: unknown key \"verify\" in client_tls; valid keys: min_version, max_version, "
     "ciphers, ciphersuites, groups, sigalgs, alpn, security_level\n"
     "FILE:21: \"upstream_tls.alpn\" must be protocol names separated by commas, such as "
     "\"h2,http/1.1\", not \"h2, http/1.1\"\n"
     "FILE:22: unknown verify \"maybe\"; valid: none, system, file\n"
     "FILE:23: unknown on_verify_failure \"ignore\"; valid: close, forge\n"
     "FILE:24: \"upstream_tls.security_level\" must be an integer\n"
     "FILE:19: \"upstream_tls.min_version\" (TLS1.3) is above \"upstream_tls.max_version\" "
     "(TLS1.2)"},
    {"mitm_verify.conf",
     "FILE:8: \"upstream_tls.verify\" = \"file\" needs \"upstream_tls.ca_file\"\n"
     "FILE:15: \"upstream_tls.ca_file\" is used only with verify = \"file\"\n"
     "FILE:22: \"upstream_tls.ca_file\" \"@DIR@/no-such-ca.pem\": cannot read: No such file or "
     "directory\n"
     "FILE:29: \"upstream_tls.ca_file\" \"@DIR@/lab-ca/README.txt\": no PEM certificate in it\n"
     "FILE:36: \"upstream_tls.ca_file\" \"@DIR@/lab-ca\": cannot read: Is a directory"},
    {"mitm_ca_bad.conf",
     "FILE:5: lab CA: cannot read @DIR@/no-such-ca/root.pem: No such file or directory"},
    {"mitm_ca_files_bad.conf", "FILE:5: lab CA: ca.key does not match ca.cert"},
    {"mitm_fault_listener.conf",
     "FILE:11: unknown listener \"nope\" in match; valid: raw, lab\n"
     "FILE:8: fault \"cert-wrong-host\" needs a listener with mode = \"mitm\"\n"
     "FILE:14: fault \"server-versions\" needs a listener with mode = \"mitm\""},
    {"mitm_fault_bad.conf",
     "FILE:6: \"min\" (TLS1.3) is above \"max\" (TLS1.2)\n"
     "FILE:7: \"max\" must be from TLS1.0 to TLS1.3, not \"SSL3.0\"\n"
     "FILE:8: \"ciphers\": OpenSSL refuses \"NOPE\" (expected an OpenSSL cipher string for TLS 1.2 "
     "and below, such as \"ECDHE+AESGCM:!aNULL\"; see openssl ciphers -v)\n"
     "FILE:8: \"ciphersuites\": OpenSSL refuses \"TLS_NOPE\" (expected TLS 1.3 suites separated "
     "by \":\", such as \"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384\")\n"
     "FILE:9: \"seconds\" must be between 1 and 3153600000, not 0\n"
     "FILE:10: \"host\" must not be empty\n"
     "FILE:11: unknown parameter \"seconds\" for fault \"cert-sha1\"; valid: name, fault, match"},
};

/* Fixtures that must load; the tests below check what they mean. */
static const char *const good_fixtures[] = {
    "good_minimal.conf",
    "good_two_listeners.conf",
    "good_include.conf",
    "good_faults.conf",
    "good_mitm.conf",
    "good_mitm_files.conf",
    "good_ca_unused.conf",
    "good_routes.conf",
    "good_control.conf",
    "good_control_default.conf",
};

/*
 * Replaces "FILE" at the start of each line of tmpl with path, and "@DIR@"
 * anywhere with the directory of path.
 */
static void
test_expand(char *out, size_t n, const char *tmpl, const char *path)
{
    size_t used = 0;
    bool line_start = true;
    const char *slash = strrchr(path, '/');
    int dirlen = slash != NULL ? (int)(slash - path) : 1;
    const char *dir = slash != NULL ? path : ".";

    for (const char *p = tmpl; *p != '\0';) {
        if (strncmp(p, "@DIR@", 5) == 0) {
            int w = snprintf(out + used, n - used, "%.*s", dirlen, dir);
            assert_true(w > 0 && (size_t)w < n - used);
            used += (size_t)w;
            p += 5;
            line_start = false;
            continue;
        }
        if (line_start && strncmp(p, "FILE", 4) == 0) {
            int w = snprintf(out + used, n - used, "%s", path);
            assert_true(w > 0 && (size_t)w < n - used);
            used += (size_t)w;
            p += 4;
        } else {
            assert_true(used + 1 < n);
            out[used++] = *p;
            line_start = *p == '\n';
            p++;
            continue;
        }
        line_start = false;
    }
    out[used] = '\0';
}

static void
test_bad_fixture(void **state)
{
    const struct bad_case *c = *state;
    char path[1024], want[8192], err[8192];

    if (test_in_lab(c->fixture))
        test_lab_fixture(path, sizeof(path), c->fixture);
    else
        test_fixture(path, sizeof(path), c->fixture);
    test_expand(want, sizeof(want), c->expected, path);
    struct tf_config *cfg = tf_config_load(path, err, sizeof(err));
    if (cfg != NULL) {
        tf_config_unref(cfg);
        fail_msg("%s loaded, but should have failed with:\n%s", path, want);
    }
    assert_string_equal(err, want);
}

/* ------------------------------------------------------------ the control API */

static void
test_control(void **state)
{
    char path[1024], token_path[1100];

    (void)state;
    test_fixture(path, sizeof(path), "good_control.conf");
    struct tf_config *cfg = test_load_good(path);
    const struct tf_control_conf *cc = &cfg->control;
    assert_true(cc->enabled);
    assert_string_equal(cc->listen, "0.0.0.0:9474");
    assert_int_equal(cc->addr.ss_family, AF_INET);
    assert_int_equal(ntohs(((const struct sockaddr_in *)&cc->addr)->sin_port), 9474);
    assert_true(cc->allow_remote);
    /* Relative to the file; the token is its first line without the blanks around it. */
    snprintf(token_path, sizeof(token_path), "%.*s/control.token",
             (int)(strrchr(path, '/') - path), path);
    assert_string_equal(cc->token_file, token_path);
    assert_string_equal(cc->token, "s3cret-token.1");
    assert_int_equal(cc->line, 3);
    assert_false(tf_config_is_loopback((const struct sockaddr *)&cc->addr));
    tf_config_unref(cfg);

    test_fixture(path, sizeof(path), "good_control_default.conf");
    cfg = test_load_good(path);
    assert_true(cfg->control.enabled);
    assert_string_equal(cfg->control.listen, "127.0.0.1:8474");
    assert_false(cfg->control.allow_remote);
    assert_null(cfg->control.token_file);
    assert_null(cfg->control.token);
    assert_true(tf_config_is_loopback((const struct sockaddr *)&cfg->control.addr));
    tf_config_unref(cfg);
}

static void
test_loopback(void **state)
{
    static const struct {
        const char *addr;
        bool loopback;
    } cases[] = {
        {"127.0.0.1", true}, {"127.255.0.9", true}, {"::1", true}, {"::ffff:127.0.0.1", true},
        {"0.0.0.0", false},  {"10.0.0.1", false},   {"::", false}, {"::ffff:10.0.0.1", false},
        {"128.0.0.1", false}, {"fe80::1", false},
    };
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof(ss));
        if (strchr(cases[i].addr, ':') != NULL) {
            struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
            sin6->sin6_family = AF_INET6;
            assert_int_equal(inet_pton(AF_INET6, cases[i].addr, &sin6->sin6_addr), 1);
        } else {
            struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
            sin->sin_family = AF_INET;
            assert_int_equal(inet_pton(AF_INET, cases[i].addr, &sin->sin_addr), 1);
        }
        if (tf_config_is_loopback((const struct sockaddr *)&ss) != cases[i].loopback)
            fail_msg("%s: loopback should be %d", cases[i].addr, cases[i].loopback);
    }
    assert_false(tf_config_is_loopback(NULL));
}

static void
test_quick_control(void **state)
{
    char err[1024];
    struct tf_quick q = {.listen = "127.0.0.1:8443", .upstream = "127.0.0.1:4433"};

    (void)state;
    q.control = "[::1]:0";
    struct tf_config *cfg = tf_config_quick_opts(&q, err, sizeof(err));
    assert_non_null(cfg);
    assert_true(cfg->control.enabled);
    assert_string_equal(cfg->control.listen, "[::1]:0");
    assert_int_equal(cfg->control.addr.ss_family, AF_INET6);
    assert_null(cfg->control.token);
    tf_config_unref(cfg);

    q.control = "0.0.0.0:8474";
    assert_null(tf_config_quick_opts(&q, err, sizeof(err)));
    assert_string_equal(err, "--control: \"0.0.0.0:8474\" is not a loopback address; a remote "
                             "control API needs a configuration file with control.allow_remote "
                             "and control.token_file");
    q.control = "localhost:8474";
    assert_null(tf_config_quick_opts(&q, err, sizeof(err)));
    assert_string_equal(err, "--control: \"localhost\" is not a numeric IP address (a listener "
                             "binds to an address, not a host name)");

    /* Without --control there is none. */
    q.control = NULL;
    cfg = tf_config_quick_opts(&q, err, sizeof(err));
    assert_non_null(cfg);
    assert_false(cfg->control.enabled);
    tf_config_unref(cfg);
}

static struct tf_fault_rule *
test_rule(const char *spec, const char *name)
{
    char err[512];
    struct tf_fault_rule *r = tf_fault_rule_parse_spec(spec, name, err, sizeof(err));
    if (r == NULL)
        fail_msg("%s: %s", spec, err);
    return r;
}

/*
 * tf_config_with_rules: a snapshot that shares everything but its rules,
 * holds references on both, and refuses what the file would refuse.
 */
static void
test_with_rules(void **state)
{
    char path[1024], err[2048];

    (void)state;
    test_fixture(path, sizeof(path), "good_faults.conf");
    struct tf_config *base = test_load_good(path);
    size_t n_base = base->n_faults;
    struct tf_fault_rule *added = test_rule("stall:match.sni=*.lab.test", "added");

    /* Keep the first two rules, add one. */
    struct tf_fault_rule *list[3] = {base->faults[0], base->faults[1], added};
    struct tf_config *next = tf_config_with_rules(base, list, 3, err, sizeof(err));
    assert_non_null(next);
    assert_int_equal(atomic_load(&next->refs), 1);
    assert_ptr_equal(next->shares, base);
    assert_ptr_equal(tf_config_base(next), base);
    assert_ptr_equal(tf_config_base(base), base);
    assert_int_equal(atomic_load(&base->refs), 2);
    assert_ptr_equal(next->listeners, base->listeners);
    assert_int_equal(next->n_faults, 3);
    assert_ptr_equal(next->faults[0], base->faults[0]);
    assert_ptr_equal(next->faults[2], added);
    assert_int_equal(atomic_load(&added->refs), 2);
    assert_int_equal(atomic_load(&base->faults[0]->refs), 2);
    assert_int_equal(atomic_load(&base->faults[2]->refs), 1);

    /* A snapshot made from a derived one shares with the same owner, never a chain. */
    struct tf_config *again = tf_config_with_rules(next, NULL, 0, err, sizeof(err));
    assert_non_null(again);
    assert_ptr_equal(again->shares, base);
    assert_int_equal(again->n_faults, 0);
    assert_int_equal(atomic_load(&base->refs), 3);
    tf_config_unref(again);

    /* The base can go first: the derived snapshot keeps what it shares alive. */
    tf_config_unref(base);
    assert_int_equal(atomic_load(&next->shares->refs), 1);
    assert_string_equal(next->listeners[0].name, "lab");
    assert_int_equal(n_base, 9);
    tf_config_unref(next);
    assert_int_equal(atomic_load(&added->refs), 1);

    /* Refused: duplicate names, unknown listeners, mitm faults without a mitm listener. */
    base = test_load_good(path);
    struct tf_fault_rule *dup = test_rule("stall", "added");
    struct tf_fault_rule *nowhere = test_rule("stall:listener=nope", "nowhere");
    struct tf_fault_rule *mitm = test_rule("cert-expired", "mitm");
    struct tf_fault_rule *bad[4] = {added, dup, nowhere, mitm};
    unsigned before = atomic_load(&base->refs);
    assert_null(tf_config_with_rules(base, bad, 4, err, sizeof(err)));
    assert_string_equal(err, "rule name \"added\" is already used\n"
                             "rule \"nowhere\": unknown listener \"nope\" in match; valid: lab\n"
                             "rule \"mitm\": fault \"cert-expired\" needs a listener with mode "
                             "\"mitm\"");
    assert_int_equal(atomic_load(&base->refs), before);
    assert_int_equal(atomic_load(&added->refs), 1);
    tf_fault_rule_unref(added);
    tf_fault_rule_unref(dup);
    tf_fault_rule_unref(nowhere);
    tf_fault_rule_unref(mitm);
    tf_config_unref(base);
}

/* A fixture nobody asserts is a message nobody checks: every file must be listed above. */
static void
test_every_fixture_is_used(void **state)
{
    char dir[1024];
    struct dirent *de;
    unsigned seen = 0;

    (void)state;
    test_path(dir, sizeof(dir), FIXTURE_DIR);
    DIR *d = opendir(dir);
    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        if (n < 5 || strcmp(de->d_name + n - 5, ".conf") != 0)
            continue;
        bool listed = false;
        for (size_t i = 0; i < ARRAY_LEN(bad_cases); i++)
            listed = listed || strcmp(bad_cases[i].fixture, de->d_name) == 0;
        for (size_t i = 0; i < ARRAY_LEN(good_fixtures); i++)
            listed = listed || strcmp(good_fixtures[i], de->d_name) == 0;
        if (!listed) {
            closedir(d);
            fail_msg("fixture %s is not listed in test_config.c", de->d_name);
        }
        seen++;
    }
    closedir(d);
    assert_int_equal(seen, ARRAY_LEN(bad_cases) + ARRAY_LEN(good_fixtures));
}

/* ------------------------------------------------------------ good files */

static void
test_defaults(void **state)
{
    char path[1024];

    (void)state;
    test_fixture(path, sizeof(path), "good_minimal.conf");
    struct tf_config *cfg = test_load_good(path);

    assert_int_equal(atomic_load(&cfg->refs), 1);
    assert_string_equal(cfg->path, path);
    assert_int_equal(cfg->workers, 0);
    assert_int_equal(cfg->busy_poll_us, 0);
    assert_string_equal(cfg->log_text, "stderr");
    assert_null(cfg->log_json);
    assert_string_equal(cfg->log_level, "info");
    assert_int_equal(cfg->connect_timeout_ms, 10000);
    assert_int_equal(cfg->handshake_timeout_ms, 30000);
    assert_int_equal(cfg->idle_timeout_ms, 300000);
    assert_int_equal(cfg->grace_ms, 10000);
    assert_int_equal(cfg->handshake_message_max, 65536);
    assert_int_equal(cfg->buffer_max, 262144);

    assert_int_equal(cfg->n_listeners, 1);
    const struct tf_listener_conf *lc = &cfg->listeners[0];
    assert_string_equal(lc->name, "listener1");
    assert_string_equal(lc->listen, "127.0.0.1:8443");
    test_assert_v4(lc, "127.0.0.1", 8443);
    assert_int_equal(lc->route, TF_ROUTE_FORWARD);
    assert_int_equal(lc->mode, TF_MODE_PASSTHROUGH);
    assert_string_equal(lc->upstream_host, "127.0.0.1");
    assert_int_equal(lc->upstream_port, 4433);
    assert_int_equal(lc->line, 2);
    test_assert_route_defaults(lc);
    assert_int_equal(cfg->mark, 0);
    test_assert_tls_defaults(&lc->client_tls);
    test_assert_tls_defaults(&lc->upstream_tls);
    /* mitm settings keep their defaults, and nothing is loaded without a mitm listener. */
    assert_null(cfg->ca_dir);
    assert_null(cfg->ca_cert);
    assert_null(cfg->ca_key);
    assert_null(cfg->ca_chain);
    assert_null(cfg->ca_untrusted_cert);
    assert_null(cfg->ca_untrusted_key);
    assert_int_equal(cfg->forge_cache, 1024);
    assert_int_equal(cfg->leaf_keys, TF_LEAF_KEYS_BOTH);
    assert_null(cfg->lab_ca);
    assert_null(cfg->log_keylog);
    assert_int_equal(cfg->content_max, 0);
    /* No control group: no control API. */
    assert_false(cfg->control.enabled);
    assert_null(cfg->control.listen);
    assert_null(cfg->control.token);
    assert_null(cfg->shares);
    tf_config_unref(cfg);
}

static void
test_two_listeners(void **state)
{
    char path[1024];

    (void)state;
    test_fixture(path, sizeof(path), "good_two_listeners.conf");
    struct tf_config *cfg = test_load_good(path);

    assert_int_equal(cfg->workers, 4);
    assert_int_equal(cfg->busy_poll_us, 250);
    assert_string_equal(cfg->log_text, "none");
    assert_string_equal(cfg->log_json, "events.jsonl");
    assert_string_equal(cfg->log_level, "debug");
    assert_int_equal(cfg->connect_timeout_ms, 2000);   /* an integer */
    assert_int_equal(cfg->handshake_timeout_ms, 5500); /* a float */
    assert_int_equal(cfg->idle_timeout_ms, 60000);     /* a 64-bit integer, 60L */
    assert_int_equal(cfg->grace_ms, 1);                /* 0.5 ms rounds up, never to 0 */
    assert_int_equal(cfg->handshake_message_max, 16777216);
    assert_int_equal(cfg->buffer_max, 4096);

    assert_int_equal(cfg->n_listeners, 2);
    const struct tf_listener_conf *a = &cfg->listeners[0];
    assert_string_equal(a->name, "lab4");
    test_assert_v4(a, "127.0.0.1", 8443);
    assert_string_equal(a->upstream_host, "origin.lab.test");
    assert_int_equal(a->upstream_port, 443);
    assert_int_equal(a->line, 5);

    const struct tf_listener_conf *b = &cfg->listeners[1];
    assert_string_equal(b->name, "listener2"); /* its place in the list, not a counter */
    assert_string_equal(b->listen, "[::1]:8443");
    test_assert_v6(b, "::1", 8443);
    assert_int_equal(b->route, TF_ROUTE_FORWARD);
    assert_int_equal(b->mode, TF_MODE_PASSTHROUGH);
    assert_string_equal(b->upstream_host, "::1"); /* brackets removed */
    assert_int_equal(b->upstream_port, 4433);
    assert_int_equal(b->line, 12);

    assert_int_equal(cfg->n_faults, 0); /* faults = (); */
    assert_null(cfg->faults);

    assert_ptr_equal(tf_config_listener(cfg, "lab4"), a);
    assert_ptr_equal(tf_config_listener(cfg, "listener2"), b);
    assert_null(tf_config_listener(cfg, "listener1"));
    assert_null(tf_config_listener(cfg, NULL));
    assert_null(tf_config_listener(NULL, "lab4"));
    tf_config_unref(cfg);
}

/* Every kind of libconfig value reaches the same parser as a --fault spec. */
static void
test_faults(void **state)
{
    char path[1024];
    const struct tf_fault_rule *r;

    (void)state;
    test_fixture(path, sizeof(path), "good_faults.conf");
    struct tf_config *cfg = test_load_good(path);
    assert_int_equal(cfg->n_faults, 9);
    for (size_t i = 0; i < cfg->n_faults; i++) {
        assert_non_null(cfg->faults[i]);
        assert_int_equal(atomic_load(&cfg->faults[i]->seen), 0);
        assert_int_equal(atomic_load(&cfg->faults[i]->fired), 0);
    }

    r = cfg->faults[0];
    assert_string_equal(r->name, "no-hello");
    assert_int_equal(r->def->id, TF_FAULT_DROP_SERVER_HELLO);
    assert_string_equal(r->match.sni, "*.lab.test");
    assert_int_equal(r->line, 5);

    r = cfg->faults[1];
    assert_string_equal(r->name, "tag");
    assert_int_equal(r->def->id, TF_FAULT_APPEND_BYTES);
    assert_int_equal(r->args.dir, TF_FAULT_DIR_S2C);
    assert_int_equal(r->args.record, 5);
    assert_int_equal(r->args.bytes_len, 11); /* libconfig turned \r\n into CR LF */
    assert_memory_equal(r->args.bytes, "INSPECTED\r\n", 11);
    assert_int_equal(r->line, 6);

    r = cfg->faults[2];
    assert_string_equal(r->name, "fault3"); /* its place in the list */
    assert_int_equal(r->def->id, TF_FAULT_DELAY);
    assert_int_equal(r->args.ms, 300);
    assert_int_equal(r->args.jitter_ms, 50);
    assert_int_equal(r->args.dir, TF_FAULT_DIR_BOTH);
    assert_int_equal(r->args.after_bytes, 4294967296ULL);
    assert_string_equal(r->match.listener, "lab");
    assert_int_equal(r->match.net.ss_family, AF_INET);
    assert_int_equal(r->match.prefix, 8);
    assert_true(r->match.probability == 0.5);
    assert_int_equal(r->match.seed, 7);
    assert_int_equal(r->match.times, 10);
    assert_int_equal(r->line, 7);

    r = cfg->faults[3];
    assert_string_equal(r->name, "fault4");
    assert_int_equal(r->args.description, 70);
    assert_int_equal(r->args.level, 1);
    assert_int_equal(r->args.after, 2);
    assert_int_equal(r->args.dir, TF_FAULT_DIR_S2C); /* completed: the sender of server_hello */
    assert_true(r->match.probability == 1.0);
    assert_int_equal(r->match.seed, 1);

    r = cfg->faults[4];
    assert_string_equal(r->name, "trunc");
    assert_false(r->args.then_close);
    assert_int_equal(r->args.keep, 100);
    assert_int_equal(r->match.nth, 2);
    assert_int_equal(r->match.every, 3);
    assert_int_equal(r->match.first, 4);

    r = cfg->faults[5];
    assert_int_equal(r->args.offset, -1);
    assert_int_equal(r->args.xor_mask, 0xff);

    r = cfg->faults[6];
    assert_int_equal(r->args.version, 0x0302);
    assert_true(r->args.remove_extension);

    r = cfg->faults[7];
    assert_int_equal(r->args.keep_mask, 5);
    assert_int_equal(r->match.net.ss_family, AF_INET6);
    assert_int_equal(r->match.prefix, 64);
    assert_string_equal(r->match.sni, "absent");

    r = cfg->faults[8];
    assert_string_equal(r->name, "fault9");
    assert_int_equal(r->args.ms, 1000); /* 1000.0 */
    assert_true(r->match.probability == 1.0);
    tf_config_unref(cfg); /* ASan: the rules go with the snapshot */
}

/* One listener per route with every key it takes; the top-level mark as the default. */
static void
test_routes(void **state)
{
    char path[1024];
    const struct tf_listener_conf *lc;
    const struct tf_fault_rule *r;

    (void)state;
    test_fixture(path, sizeof(path), "good_routes.conf");
    struct tf_config *cfg = test_load_good(path);
    assert_int_equal(cfg->n_listeners, 7);
    assert_int_equal(cfg->mark, 4096); /* "4096", written after the listeners */

    lc = tf_config_listener(cfg, "fwd");
    assert_non_null(lc);
    assert_int_equal(lc->route, TF_ROUTE_FORWARD);
    assert_string_equal(lc->upstream_host, "127.0.0.1");
    assert_int_equal(lc->upstream_port, 4433);
    assert_null(lc->allow);
    assert_int_equal(lc->mark, 7); /* its own mark wins */

    lc = tf_config_listener(cfg, "sni");
    assert_non_null(lc);
    assert_int_equal(lc->route, TF_ROUTE_SNI);
    assert_null(lc->upstream_host);
    assert_int_equal(lc->upstream_port, 443);
    assert_int_equal(lc->n_allow, 3);
    assert_string_equal(lc->allow[0], "*.lab.test");
    assert_string_equal(lc->allow[1], "lab.test");
    assert_string_equal(lc->allow[2], "host[0-9].example.test");
    assert_string_equal(lc->default_host, "::1"); /* brackets removed */
    assert_int_equal(lc->default_port, 4433);
    assert_false(lc->spoof_source);
    assert_int_equal(lc->mark, 4096);

    lc = tf_config_listener(cfg, "redir");
    assert_non_null(lc);
    assert_int_equal(lc->route, TF_ROUTE_REDIRECT);
    assert_null(lc->upstream_host);
    assert_int_equal(lc->upstream_port, 0);
    assert_null(lc->allow);
    assert_null(lc->default_host);
    assert_false(lc->spoof_source);
    assert_int_equal(lc->mark, 4096);
    test_assert_v4(lc, "0.0.0.0", 8445);

    lc = tf_config_listener(cfg, "tp");
    assert_non_null(lc);
    assert_int_equal(lc->route, TF_ROUTE_TPROXY);
    assert_null(lc->upstream_host);
    assert_true(lc->spoof_source);
    assert_int_equal(lc->mark, 2); /* "0x2" */
    test_assert_v6(lc, "::", 8446);

    lc = tf_config_listener(cfg, "tp2");
    assert_non_null(lc);
    assert_false(lc->spoof_source); /* written as false */
    assert_int_equal(lc->mark, 0xffffffffu); /* 0xffffffffL */

    lc = tf_config_listener(cfg, "proxy");
    assert_non_null(lc);
    assert_int_equal(lc->route, TF_ROUTE_CONNECT);
    assert_null(lc->upstream_host);
    assert_int_equal(lc->upstream_port, 0);
    assert_int_equal(lc->n_allow, 6); /* a list ( ) works as well as an array [ ] */
    assert_string_equal(lc->allow[0], "*.lab.test:443"); /* kept as written */
    assert_string_equal(lc->allow[1], "example.test");
    assert_string_equal(lc->allow[2], "[2001:db8::1]:8443");
    assert_string_equal(lc->allow[3], "[::1]");
    assert_string_equal(lc->allow[4], "[fd00::*]:*");
    assert_string_equal(lc->allow[5], "*.example.test:*");
    assert_null(lc->default_host);
    assert_int_equal(lc->mark, 4096);

    lc = tf_config_listener(cfg, "sni-open");
    assert_non_null(lc);
    assert_int_equal(lc->upstream_port, 8443);
    assert_null(lc->allow);
    assert_int_equal(lc->n_allow, 0);
    assert_null(lc->default_host);

    assert_int_equal(cfg->n_faults, 3);
    r = cfg->faults[0];
    assert_int_equal(r->match.dest.ss_family, AF_INET);
    assert_int_equal(r->match.dest_prefix, 8);
    assert_int_equal(r->match.dest_port, 5432);
    assert_int_equal(r->match.net.ss_family, 0);
    r = cfg->faults[1];
    assert_int_equal(r->match.dest.ss_family, AF_INET6);
    assert_int_equal(r->match.dest_prefix, 32);
    assert_int_equal(r->match.dest_port, 0);
    /* A dest match on a forward listener is allowed: it never matches there. */
    r = cfg->faults[2];
    assert_string_equal(r->match.listener, "fwd");
    assert_int_equal(r->match.dest.ss_family, 0);
    assert_int_equal(r->match.dest_port, 443);
    tf_config_unref(cfg); /* ASan: allow lists and default hosts go with the snapshot */
}

/* Every key of both legs, the lab CA by directory, and the mitm faults. */
static void
test_mitm(void **state)
{
    char path[1024], want[1100];
    const struct tf_fault_rule *r;

    (void)state;
    test_lab_fixture(path, sizeof(path), "good_mitm.conf");
    struct tf_config *cfg = test_load_good(path);

    assert_int_equal(cfg->n_listeners, 3);
    const struct tf_listener_conf *lab = &cfg->listeners[0];
    assert_string_equal(lab->name, "lab");
    assert_int_equal(lab->mode, TF_MODE_MITM);
    assert_int_equal(lab->client_tls.min_version, 0x0301);
    assert_int_equal(lab->client_tls.max_version, 0x0303);
    assert_string_equal(lab->client_tls.ciphers, "DEFAULT:@SECLEVEL=0");
    assert_string_equal(lab->client_tls.ciphersuites, "TLS_AES_128_GCM_SHA256");
    assert_string_equal(lab->client_tls.groups, "X25519:P-256");
    assert_string_equal(lab->client_tls.sigalgs, "ECDSA+SHA256:RSA-PSS+SHA256:RSA+SHA1");
    assert_string_equal(lab->client_tls.alpn, "h2,http/1.1");
    assert_int_equal(lab->client_tls.security_level, 0);
    assert_int_equal(lab->client_tls.verify, TF_VERIFY_NONE);
    assert_int_equal(lab->upstream_tls.min_version, 0x0303);
    assert_int_equal(lab->upstream_tls.max_version, 0x0304);
    assert_null(lab->upstream_tls.ciphers);
    assert_string_equal(lab->upstream_tls.alpn, "http/1.1");
    assert_int_equal(lab->upstream_tls.security_level, -1);
    assert_int_equal(lab->upstream_tls.verify, TF_VERIFY_FILE);
    snprintf(want, sizeof(want), "%s/root.pem", lab_ca_dir); /* from the file's directory */
    assert_string_equal(lab->upstream_tls.ca_file, want);
    assert_true(lab->upstream_tls.forge_on_verify_failure);

    const struct tf_listener_conf *raw = &cfg->listeners[1];
    assert_int_equal(raw->mode, TF_MODE_PASSTHROUGH);
    test_assert_tls_defaults(&raw->client_tls);
    test_assert_tls_defaults(&raw->upstream_tls);

    const struct tf_listener_conf *dflt = &cfg->listeners[2];
    assert_int_equal(dflt->mode, TF_MODE_MITM);
    test_assert_tls_defaults(&dflt->client_tls); /* client_tls = { } */
    assert_int_equal(dflt->upstream_tls.verify, TF_VERIFY_SYSTEM);
    assert_null(dflt->upstream_tls.ca_file);
    assert_false(dflt->upstream_tls.forge_on_verify_failure);

    assert_string_equal(cfg->ca_dir, lab_ca_dir);
    assert_null(cfg->ca_cert);
    assert_int_equal(cfg->forge_cache, 64);
    assert_int_equal(cfg->leaf_keys, TF_LEAF_KEYS_ECDSA);
    assert_non_null(cfg->lab_ca);
    assert_non_null(tf_lab_ca_root(cfg->lab_ca));
    assert_string_equal(cfg->log_keylog, "keys.log"); /* a log path: from the working directory */
    assert_int_equal(cfg->content_max, 4096);

    assert_int_equal(cfg->n_faults, 9);
    r = cfg->faults[0];
    assert_int_equal(r->def->id, TF_FAULT_CERT_EXPIRED);
    assert_int_equal(r->args.seconds, 86400);
    r = cfg->faults[1];
    assert_int_equal(r->def->id, TF_FAULT_CERT_NOT_YET_VALID);
    assert_int_equal(r->args.seconds, 2592000);
    r = cfg->faults[2];
    assert_string_equal(r->args.host, "other.lab.test");
    r = cfg->faults[3];
    assert_int_equal(r->args.min_version, 0x0302);
    assert_int_equal(r->args.version, 0x0302);
    r = cfg->faults[4];
    assert_string_equal(r->args.ciphers, "AES256-SHA");
    assert_string_equal(r->args.ciphersuites, "TLS_AES_128_CCM_8_SHA256");
    r = cfg->faults[5];
    assert_int_equal(r->def->id, TF_FAULT_REQUIRE_SNI);
    r = cfg->faults[7];
    assert_int_equal(r->def->id, TF_FAULT_DROP_SERVER_HELLO); /* passthrough fault, mitm listener */
    tf_config_unref(cfg); /* ASan: the CA and the legs' strings go with the snapshot */
}

/* The lab CA as files, resolved against the file's directory, and loaded. */
static void
test_mitm_ca_files(void **state)
{
    char path[1024], want[1100];

    (void)state;
    test_lab_fixture(path, sizeof(path), "good_mitm_files.conf");
    struct tf_config *cfg = test_load_good(path);
    assert_null(cfg->ca_dir);
    snprintf(want, sizeof(want), "%s/intermediate.pem", lab_ca_dir);
    assert_string_equal(cfg->ca_cert, want);
    snprintf(want, sizeof(want), "%s/intermediate.key", lab_ca_dir);
    assert_string_equal(cfg->ca_key, want);
    snprintf(want, sizeof(want), "%s/root.pem", lab_ca_dir);
    assert_string_equal(cfg->ca_chain, want);
    snprintf(want, sizeof(want), "%s/untrusted-intermediate.pem", lab_ca_dir);
    assert_string_equal(cfg->ca_untrusted_cert, want);
    snprintf(want, sizeof(want), "%s/untrusted-intermediate.key", lab_ca_dir);
    assert_string_equal(cfg->ca_untrusted_key, want);
    assert_non_null(cfg->lab_ca);
    assert_int_equal(cfg->n_faults, 1);
    tf_config_unref(cfg);
}

/* Without a mitm listener the ca group is checked, resolved and not loaded. */
static void
test_ca_unused(void **state)
{
    char path[1024], want[1100];

    (void)state;
    test_fixture(path, sizeof(path), "good_ca_unused.conf");
    struct tf_config *cfg = test_load_good(path);
    snprintf(want, sizeof(want), "%s/" FIXTURE_DIR "/ca/lab.pem", test_srcdir());
    assert_string_equal(cfg->ca_cert, want);
    assert_string_equal(cfg->ca_key, "/etc/tlsfault/lab.key"); /* absolute: as written */
    assert_int_equal(cfg->forge_cache, 0);
    assert_null(cfg->lab_ca);
    tf_config_unref(cfg);
}

/* conf/mitm.conf, beside a CA made the way its comment says (ca.dir = "lab-ca"). */
static void
test_shipped_mitm_conf(void **state)
{
    char src[1024], path[1024];

    (void)state;
    test_path(src, sizeof(src), "conf/mitm.conf");
    FILE *in = fopen(src, "r");
    if (in == NULL)
        fail_msg("%s: cannot open", src);
    fclose(in);
    /* The lab holds lab-ca/: a copy of the file there finds it. */
    snprintf(path, sizeof(path), "%s/mitm.conf", lab_dir);
    char cmd[2200];
    snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", src, path);
    assert_int_equal(system(cmd), 0);
    struct tf_config *cfg = test_load_good(path);
    bool any_mitm = false;
    for (size_t i = 0; i < cfg->n_listeners; i++)
        any_mitm = any_mitm || cfg->listeners[i].mode == TF_MODE_MITM;
    assert_true(any_mitm);
    assert_string_equal(cfg->ca_dir, lab_ca_dir);
    assert_non_null(cfg->lab_ca);
    tf_config_unref(cfg);
}

/* @include resolves against the including file's directory, wherever the test runs. */
static void
test_include(void **state)
{
    char path[1024];

    (void)state;
    test_fixture(path, sizeof(path), "good_include.conf");
    struct tf_config *cfg = test_load_good(path);
    assert_int_equal(cfg->workers, 1);
    assert_int_equal(cfg->n_listeners, 1);
    assert_string_equal(cfg->listeners[0].name, "included");
    test_assert_v4(&cfg->listeners[0], "127.0.0.1", 9443);
    assert_string_equal(cfg->listeners[0].upstream_host, "localhost");
    tf_config_unref(cfg);
}

static void
test_shipped_conf(void **state)
{
    char path[1024];

    (void)state;
    test_path(path, sizeof(path), "conf/tlsfault.conf");
    struct tf_config *cfg = test_load_good(path);

    assert_int_equal(cfg->workers, 2);
    assert_int_equal(cfg->n_listeners, 2);
    test_assert_v4(&cfg->listeners[0], "127.0.0.1", 8443);
    assert_string_equal(cfg->listeners[0].name, "lab-v4");
    assert_string_equal(cfg->listeners[0].upstream_host, "127.0.0.1");
    assert_int_equal(cfg->listeners[0].upstream_port, 4433);
    test_assert_v6(&cfg->listeners[1], "::1", 8443);
    assert_string_equal(cfg->listeners[1].name, "lab-v6");
    assert_string_equal(cfg->listeners[1].upstream_host, "origin.lab.test");
    assert_int_equal(cfg->listeners[1].upstream_port, 443);
    assert_string_equal(cfg->log_text, "stderr");
    assert_string_equal(cfg->log_json, "events.jsonl");
    assert_string_equal(cfg->log_level, "info");
    assert_int_equal(cfg->connect_timeout_ms, 10000);
    assert_int_equal(cfg->handshake_timeout_ms, 30000);
    assert_int_equal(cfg->idle_timeout_ms, 300000);
    assert_int_equal(cfg->grace_ms, 10000);
    assert_int_equal(cfg->handshake_message_max, 65536);
    assert_int_equal(cfg->buffer_max, 262144);
    assert_int_equal(cfg->n_faults, 0); /* the example rules are commented out */
    assert_int_equal(cfg->mark, 0);
    test_assert_route_defaults(&cfg->listeners[0]);
    test_assert_route_defaults(&cfg->listeners[1]);
    tf_config_unref(cfg);
}

/* conf/transparent.conf: one listener per transparent route, the top-level mark. */
static void
test_shipped_transparent_conf(void **state)
{
    char path[1024];

    (void)state;
    test_path(path, sizeof(path), "conf/transparent.conf");
    struct tf_config *cfg = test_load_good(path);

    assert_int_equal(cfg->mark, 2);
    assert_int_equal(cfg->n_listeners, 3);
    const struct tf_listener_conf *redir = tf_config_listener(cfg, "redir");
    assert_non_null(redir);
    assert_int_equal(redir->route, TF_ROUTE_REDIRECT);
    test_assert_v4(redir, "0.0.0.0", 8443);
    assert_null(redir->upstream_host);
    assert_int_equal(redir->mark, 2);
    const struct tf_listener_conf *tp = tf_config_listener(cfg, "tp");
    assert_non_null(tp);
    assert_int_equal(tp->route, TF_ROUTE_TPROXY);
    assert_true(tp->spoof_source);
    assert_int_equal(tp->mark, 2);
    const struct tf_listener_conf *sni = tf_config_listener(cfg, "by-name");
    assert_non_null(sni);
    assert_int_equal(sni->route, TF_ROUTE_SNI);
    assert_int_equal(sni->upstream_port, 443);
    assert_int_equal(sni->n_allow, 2);
    assert_string_equal(sni->allow[0], "*.lab.test");
    assert_string_equal(sni->allow[1], "lab.test");
    assert_string_equal(sni->default_host, "127.0.0.1");
    assert_int_equal(sni->default_port, 4433);
    assert_int_equal(cfg->n_faults, 0); /* the example rule is commented out */
    tf_config_unref(cfg);
}

/* ------------------------------------------------------------ files that cannot be read */

static void
test_missing_file(void **state)
{
    char path[1024], want[1200], err[1200];

    (void)state;
    test_fixture(path, sizeof(path), "no-such-file.conf");
    snprintf(want, sizeof(want), "%s: cannot open: No such file or directory", path);
    assert_null(tf_config_load(path, err, sizeof(err)));
    assert_string_equal(err, want);
}

static void
test_directory(void **state)
{
    char path[1024], want[1200], err[1200];

    (void)state;
    test_path(path, sizeof(path), FIXTURE_DIR);
    snprintf(want, sizeof(want), "%s: cannot open: Is a directory", path);
    assert_null(tf_config_load(path, err, sizeof(err)));
    assert_string_equal(err, want);
}

/*
 * A short buffer holds a prefix of the list in whole lines (the first line
 * may be cut); no buffer at all still fails.
 */
static void
test_error_buffer(void **state)
{
    char path[1024], full[8192], small[16];
    const size_t n_full = sizeof(full);

    (void)state;
    test_fixture(path, sizeof(path), "multiple_errors.conf");
    assert_null(tf_config_load(path, full, n_full));

    char *first_nl = strchr(full, '\n');
    assert_non_null(first_nl);
    char *second_nl = strchr(first_nl + 1, '\n');
    assert_non_null(second_nl);
    size_t two_lines = (size_t)(second_nl - full);

    /* Room for two lines and a bit of the third: exactly two lines. */
    char *buf = malloc(two_lines + 10);
    assert_non_null(buf);
    assert_null(tf_config_load(path, buf, two_lines + 10));
    assert_int_equal(strlen(buf), two_lines);
    assert_memory_equal(buf, full, two_lines);
    free(buf);

    /* Not even the first line fits: its beginning, NUL-terminated. */
    memset(small, 'x', sizeof(small));
    assert_null(tf_config_load(path, small, sizeof(small)));
    assert_int_equal(strlen(small), sizeof(small) - 1);
    assert_memory_equal(small, full, sizeof(small) - 1);

    assert_null(tf_config_load(path, NULL, 0));
    assert_null(tf_config_load(path, small, 0));
}

/* ------------------------------------------------------------ quick mode */

/* The passthrough quick mode's options, as main() passes them. */
static struct tf_config *
quick(const char *listen, const char *upstream, const char *json, const char *const *faults,
      size_t n_faults, char *err, size_t errlen)
{
    struct tf_quick q = {
        .listen = listen,
        .upstream = upstream,
        .json = json,
        .faults = faults,
        .n_faults = n_faults,
    };
    return tf_config_quick_opts(&q, err, errlen);
}

static void
test_quick_good(void **state)
{
    char err[1024];

    (void)state;
    struct tf_config *cfg = quick("127.0.0.1:8443", "origin.lab.test:443", NULL, NULL, 0, err,
                                  sizeof(err));
    assert_non_null(cfg);
    assert_null(cfg->path);
    assert_int_equal(atomic_load(&cfg->refs), 1);
    assert_int_equal(cfg->n_listeners, 1);
    const struct tf_listener_conf *lc = &cfg->listeners[0];
    assert_string_equal(lc->name, "listener1");
    assert_string_equal(lc->listen, "127.0.0.1:8443");
    test_assert_v4(lc, "127.0.0.1", 8443);
    assert_int_equal(lc->route, TF_ROUTE_FORWARD);
    assert_int_equal(lc->mode, TF_MODE_PASSTHROUGH);
    assert_string_equal(lc->upstream_host, "origin.lab.test");
    assert_int_equal(lc->upstream_port, 443);
    assert_int_equal(lc->line, 0);
    test_assert_route_defaults(lc);
    /* The file's defaults hold in quick mode too. */
    assert_null(cfg->log_json);
    assert_string_equal(cfg->log_text, "stderr");
    assert_string_equal(cfg->log_level, "info");
    assert_int_equal(cfg->workers, 0);
    assert_int_equal(cfg->connect_timeout_ms, 10000);
    assert_int_equal(cfg->handshake_timeout_ms, 30000);
    assert_int_equal(cfg->idle_timeout_ms, 300000);
    assert_int_equal(cfg->grace_ms, 10000);
    assert_int_equal(cfg->handshake_message_max, 65536);
    assert_int_equal(cfg->buffer_max, 262144);
    tf_config_unref(cfg);

    cfg = quick("[::]:8443", "[::1]:4433", "events.jsonl", NULL, 0, err, sizeof(err));
    assert_non_null(cfg);
    test_assert_v6(&cfg->listeners[0], "::", 8443);
    assert_string_equal(cfg->listeners[0].upstream_host, "::1");
    assert_int_equal(cfg->listeners[0].upstream_port, 4433);
    assert_string_equal(cfg->log_json, "events.jsonl");
    tf_config_unref(cfg);
}

static void
test_quick_bad(void **state)
{
    char err[1024];

    (void)state;
    /* Both problems, in argument order. */
    assert_null(
        quick("127.0.0.1", "origin.lab.test", NULL, NULL, 0, err, sizeof(err)));
    assert_string_equal(err, "--listen: missing port (expected host:port or [v6]:port)\n"
                             "--upstream: missing port (expected host:port or [v6]:port)");

    assert_null(
        quick("localhost:8443", "127.0.0.1:4433", NULL, NULL, 0, err, sizeof(err)));
    assert_string_equal(err, "--listen: \"localhost\" is not a numeric IP address (a listener "
                             "binds to an address, not a host name)");

    assert_null(
        quick("127.0.0.1:8443", "bad host:443", NULL, NULL, 0, err, sizeof(err)));
    assert_string_equal(err, "--upstream: \"bad host\" is not a valid host name");

    assert_null(
        quick("127.0.0.1:8443", "127.0.0.1:4433", "", NULL, 0, err, sizeof(err)));
    assert_string_equal(err, "--json: must not be empty");

    assert_null(quick(NULL, NULL, NULL, NULL, 0, err, sizeof(err)));
    assert_string_equal(err, "--listen: empty address (expected host:port or [v6]:port)\n"
                             "--upstream: empty address (expected host:port or [v6]:port)");
}

/* --fault specs: the same parser as the file, each problem prefixed by its spec. */
static void
test_quick_faults(void **state)
{
    static const char *const good[] = {
        "drop-server-hello",
        "delay:ms=300,dir=s2c,sni=*.lab.test",
        "alert:name=hello-alert,listener=listener1",
    };
    char err[2048];

    (void)state;
    struct tf_config *cfg =
        quick("127.0.0.1:8443", "127.0.0.1:4433", NULL, good, ARRAY_LEN(good), err, sizeof(err));
    if (cfg == NULL)
        fail_msg("quick mode with faults refused: %s", err);
    assert_int_equal(cfg->n_faults, 3);
    assert_string_equal(cfg->faults[0]->name, "fault1");
    assert_int_equal(cfg->faults[0]->def->id, TF_FAULT_DROP_SERVER_HELLO);
    assert_int_equal(cfg->faults[0]->line, 0);
    assert_string_equal(cfg->faults[1]->name, "fault2");
    assert_int_equal(cfg->faults[1]->args.ms, 300);
    assert_string_equal(cfg->faults[1]->match.sni, "*.lab.test");
    assert_string_equal(cfg->faults[2]->name, "hello-alert");
    assert_int_equal(cfg->faults[2]->args.dir, TF_FAULT_DIR_C2S);
    tf_config_unref(cfg);

    /* Every bad spec is reported, in order, after the address problems. */
    static const char *const bad[] = {
        "drop-server-helo",
        "cert-expired",
        "delay:dri=5",
        "stall:name=fault5",
        "stall",
        "stall:listener=lab",
    };
    assert_null(quick("127.0.0.1", "127.0.0.1:4433", NULL, bad, ARRAY_LEN(bad), err,
                      sizeof(err)));
    assert_string_equal(
        err,
        "--listen: missing port (expected host:port or [v6]:port)\n"
        "--fault \"drop-server-helo\": fault \"drop-server-helo\" is unknown; valid: delay, "
        "bandwidth, stall, reset, close, slice, drop-server-hello, reset-after-client-hello, "
        "close-after-client-hello, alert, plaintext-response, downgrade, strip-ciphers, "
        "strip-sni, strip-alpn, record-version-too-high, strip-intermediates, append-bytes, "
        "corrupt, truncate, duplicate, fragment, cert-expired, cert-not-yet-valid, "
        "cert-wrong-host, cert-self-signed, cert-untrusted-root, cert-no-intermediate, "
        "cert-wrong-eku, cert-sha1, cert-weak-key, server-versions, server-ciphers, require-sni\n"
        "--fault \"cert-expired\": fault \"cert-expired\" needs --mode mitm\n"
        "--fault \"delay:dri=5\": unknown parameter \"dri\" for fault \"delay\"; valid: ms, "
        "jitter, dir, after_bytes, name, listener, client, dest, dest_port, sni, nth, every, "
        "first, probability, seed, times\n"
        "--fault \"stall\": rule name \"fault5\" is already used\n"
        "--fault \"stall:listener=lab\": unknown listener \"lab\" in match; valid: listener1");

    /* No faults: NULL is fine. */
    cfg = quick("127.0.0.1:8443", "127.0.0.1:4433", NULL, NULL, 0, err, sizeof(err));
    assert_non_null(cfg);
    assert_int_equal(cfg->n_faults, 0);
    tf_config_unref(cfg);
}

/* --route, --upstream-port, --spoof-source, --mark: what each route takes, as in the file. */
static void
test_quick_routes(void **state)
{
    char err[2048];
    struct tf_config *cfg;
    struct tf_quick q;

    (void)state;
    q = (struct tf_quick){.listen = "127.0.0.1:8443", .route = "sni", .upstream_port = "443"};
    cfg = tf_config_quick_opts(&q, err, sizeof(err));
    if (cfg == NULL)
        fail_msg("quick sni refused: %s", err);
    assert_int_equal(cfg->listeners[0].route, TF_ROUTE_SNI);
    assert_null(cfg->listeners[0].upstream_host);
    assert_int_equal(cfg->listeners[0].upstream_port, 443);
    test_assert_route_defaults(&cfg->listeners[0]);
    assert_int_equal(cfg->mark, 0);
    tf_config_unref(cfg);

    q = (struct tf_quick){.listen = "0.0.0.0:8443", .route = "tproxy", .spoof_source = true,
                          .mark = "0x2"};
    cfg = tf_config_quick_opts(&q, err, sizeof(err));
    if (cfg == NULL)
        fail_msg("quick tproxy refused: %s", err);
    assert_int_equal(cfg->listeners[0].route, TF_ROUTE_TPROXY);
    assert_null(cfg->listeners[0].upstream_host);
    assert_true(cfg->listeners[0].spoof_source);
    assert_int_equal(cfg->listeners[0].mark, 2);
    assert_int_equal(cfg->mark, 2);
    tf_config_unref(cfg);

    static const char *const routes[] = {"redirect", "connect", "forward"};
    for (size_t i = 0; i < ARRAY_LEN(routes); i++) {
        q = (struct tf_quick){.listen = "127.0.0.1:8443", .route = routes[i], .mark = "4294967295",
                              .upstream = i == 2 ? "127.0.0.1:4433" : NULL};
        cfg = tf_config_quick_opts(&q, err, sizeof(err));
        if (cfg == NULL)
            fail_msg("quick %s refused: %s", routes[i], err);
        assert_string_equal(cfg->listeners[0].name, "listener1");
        assert_int_equal(cfg->listeners[0].mark, 0xffffffffu);
        assert_false(cfg->listeners[0].spoof_source);
        tf_config_unref(cfg);
    }

    /* Every problem, in the order of the options. */
    q = (struct tf_quick){.listen = "127.0.0.1:8443", .route = "redirect",
                          .upstream = "127.0.0.1:4433", .upstream_port = "443",
                          .spoof_source = true, .mark = "0"};
    assert_null(tf_config_quick_opts(&q, err, sizeof(err)));
    assert_string_equal(err, "--upstream: --route redirect takes the upstream from the original "
                             "destination; remove --upstream\n"
                             "--upstream-port: only --route sni takes it\n"
                             "--spoof-source: only --route tproxy can keep the client's address\n"
                             "--mark: must be a number from 1 to 0xffffffff (\"2\" or \"0x2\"), "
                             "not \"0\"");

    q = (struct tf_quick){.listen = "127.0.0.1:8443", .route = "sni", .upstream = "h:1"};
    assert_null(tf_config_quick_opts(&q, err, sizeof(err)));
    assert_string_equal(err, "--upstream: --route sni takes the upstream from the ClientHello's "
                             "server name; use --upstream-port N instead\n"
                             "--route sni needs --upstream-port N (the port server names are "
                             "connected on)");

    q = (struct tf_quick){.listen = "127.0.0.1:8443", .route = "sni", .upstream_port = "0"};
    assert_null(tf_config_quick_opts(&q, err, sizeof(err)));
    assert_string_equal(err, "--upstream-port: port 0 is out of range (1-65535)");

    q = (struct tf_quick){.listen = "127.0.0.1:8443", .route = "sni", .upstream_port = "https"};
    assert_null(tf_config_quick_opts(&q, err, sizeof(err)));
    assert_string_equal(err, "--upstream-port: port \"https\" is not a number");

    q = (struct tf_quick){.listen = "127.0.0.1:8443", .route = "connect", .upstream = "h:1"};
    assert_null(tf_config_quick_opts(&q, err, sizeof(err)));
    assert_string_equal(err, "--upstream: --route connect takes the upstream from each CONNECT "
                             "request; remove --upstream");

    q = (struct tf_quick){.listen = "127.0.0.1:8443", .upstream = "h:1", .upstream_port = "443",
                          .mark = "0x100000000"};
    assert_null(tf_config_quick_opts(&q, err, sizeof(err)));
    assert_string_equal(err, "--upstream-port: only --route sni takes it (forward takes the port "
                             "from --upstream HOST:PORT)\n"
                             "--mark: must be a number from 1 to 0xffffffff (\"2\" or \"0x2\"), "
                             "not \"0x100000000\"");

    /* An unknown route: only what no route takes is judged. */
    q = (struct tf_quick){.listen = "127.0.0.1:8443", .route = "transparent",
                          .spoof_source = true};
    assert_null(tf_config_quick_opts(&q, err, sizeof(err)));
    assert_string_equal(err, "--route: unknown route \"transparent\"; valid: forward, sni, "
                             "redirect, tproxy, connect");
}

/* --mode mitm: the lab CA from --ca, loaded now; --keylog; the mitm faults. */
static void
test_quick_mitm(void **state)
{
    static const char *const faults[] = {
        "cert-expired:seconds=60",
        "server-versions:min=TLS1.2,max=TLS1.2",
        "corrupt",
    };
    char err[2048];

    (void)state;
    struct tf_quick q = {
        .listen = "127.0.0.1:8443",
        .upstream = "origin.lab.test:443",
        .mode = "mitm",
        .ca_dir = lab_ca_dir,
        .keylog = "keys.log",
        .faults = faults,
        .n_faults = ARRAY_LEN(faults),
    };
    struct tf_config *cfg = tf_config_quick_opts(&q, err, sizeof(err));
    if (cfg == NULL)
        fail_msg("quick mitm refused: %s", err);
    assert_int_equal(cfg->listeners[0].mode, TF_MODE_MITM);
    test_assert_tls_defaults(&cfg->listeners[0].client_tls);
    test_assert_tls_defaults(&cfg->listeners[0].upstream_tls);
    assert_string_equal(cfg->ca_dir, lab_ca_dir);
    assert_non_null(cfg->lab_ca);
    assert_int_equal(cfg->forge_cache, 1024);
    assert_string_equal(cfg->log_keylog, "keys.log");
    assert_int_equal(cfg->n_faults, 3);
    assert_int_equal(cfg->faults[0]->args.seconds, 60);
    assert_int_equal(cfg->faults[1]->args.min_version, 0x0303);
    tf_config_unref(cfg);

    /* mode "passthrough" spelt out is the default. */
    q = (struct tf_quick){.listen = "127.0.0.1:8443", .upstream = "h:1", .mode = "passthrough"};
    cfg = tf_config_quick_opts(&q, err, sizeof(err));
    assert_non_null(cfg);
    assert_int_equal(cfg->listeners[0].mode, TF_MODE_PASSTHROUGH);
    assert_null(cfg->lab_ca);
    tf_config_unref(cfg);

    /* Every problem, in the order of the options. */
    static const char *const bad_faults[] = {
        "server-versions:min=1.3,max=1.2",
        "server-ciphers:ciphersuites=TLS_NOPE",
    };
    q = (struct tf_quick){.listen = "127.0.0.1:8443", .upstream = "h:1", .mode = "mitm",
                          .faults = bad_faults, .n_faults = ARRAY_LEN(bad_faults)};
    assert_null(tf_config_quick_opts(&q, err, sizeof(err)));
    assert_string_equal(
        err, "--mode mitm needs a lab CA: set --ca DIR (make one with tlsfault --ca-init DIR)\n"
             "--fault \"server-versions:min=1.3,max=1.2\": \"min\" (TLS1.3) is above \"max\" "
             "(TLS1.2)\n"
             "--fault \"server-ciphers:ciphersuites=TLS_NOPE\": \"ciphersuites\": OpenSSL refuses "
             "\"TLS_NOPE\" (expected TLS 1.3 suites separated by \":\", such as "
             "\"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384\")");

    q = (struct tf_quick){.listen = "127.0.0.1:8443", .upstream = "h:1", .mode = "tls",
                          .ca_dir = lab_ca_dir, .keylog = "k.log"};
    assert_null(tf_config_quick_opts(&q, err, sizeof(err)));
    assert_string_equal(err, "--mode: unknown mode \"tls\"; valid: passthrough, mitm\n"
                             "--keylog: only --mode mitm has keys to log\n"
                             "--ca: the lab CA is for --mode mitm");

    q = (struct tf_quick){.listen = "127.0.0.1:8443", .upstream = "h:1", .mode = "mitm",
                          .ca_dir = "", .keylog = ""};
    assert_null(tf_config_quick_opts(&q, err, sizeof(err)));
    assert_string_equal(err, "--keylog: must not be empty\n"
                             "--ca: must not be empty");

    char missing[400], want[1200];
    snprintf(missing, sizeof(missing), "%s/no-such-ca", lab_dir);
    q = (struct tf_quick){.listen = "127.0.0.1:8443", .upstream = "h:1", .mode = "mitm",
                          .ca_dir = missing};
    assert_null(tf_config_quick_opts(&q, err, sizeof(err)));
    snprintf(want, sizeof(want),
             "--ca \"%s\": lab CA: cannot read %s/root.pem: No such file or directory", missing,
             missing);
    assert_string_equal(err, want);

    assert_null(tf_config_quick_opts(NULL, err, sizeof(err)));
    assert_string_equal(err, "no options");
}

/* ------------------------------------------------------------ host:port */

static void
test_split_good(void **state)
{
    static const struct {
        const char *in, *host;
        uint16_t port;
    } cases[] = {
        {"127.0.0.1:8443", "127.0.0.1", 8443},
        {"origin.lab.test:443", "origin.lab.test", 443},
        {"localhost:1", "localhost", 1},
        {"h:65535", "h", 65535},
        {"h:00443", "h", 443},
        {"[::1]:443", "::1", 443},
        {"[::]:8443", "::", 8443},
        {"[2001:db8::1]:4433", "2001:db8::1", 4433},
        {"[::ffff:127.0.0.1]:80", "::ffff:127.0.0.1", 80},
        {"[fe80::1%1]:443", "fe80::1%1", 443},
    };
    char host[256], err[256];

    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        uint16_t port = 0;
        if (!tf_config_split_hostport(cases[i].in, host, sizeof(host), &port, err, sizeof(err)))
            fail_msg("\"%s\" refused: %s", cases[i].in, err);
        assert_string_equal(host, cases[i].host);
        assert_int_equal(port, cases[i].port);
    }
}

static void
test_split_bad(void **state)
{
    static const struct {
        const char *in, *err;
    } cases[] = {
        {"", "empty address (expected host:port or [v6]:port)"},
        {"host", "missing port (expected host:port or [v6]:port)"},
        {"host:", "missing port (expected host:port or [v6]:port)"},
        {"[::1]", "missing port (expected host:port or [v6]:port)"},
        {"[::1]:", "missing port (expected host:port or [v6]:port)"},
        {":443", "missing host (expected host:port or [v6]:port)"},
        {"[]:443", "missing host (expected host:port or [v6]:port)"},
        {"[::1:443", "missing \"]\" after the IPv6 address"},
        {"[::1]443", "expected \":\" and a port after \"]\""},
        {"[::1]x:443", "expected \":\" and a port after \"]\""},
        {"::1:443", "an IPv6 address needs brackets, as in [::1]:8443"},
        {"a:b:443", "an IPv6 address needs brackets, as in [::1]:8443"},
        {"[example.com]:443", "\"example.com\" in brackets is not an IPv6 address"},
        {"[127.0.0.1]:443", "\"127.0.0.1\" in brackets is not an IPv6 address"},
        {"h:65536", "port 65536 is out of range (0-65535)"},
        {"h:99999999999999999999999", "port 99999999999999999999999 is out of range (0-65535)"},
        {"h:https", "port \"https\" is not a number"},
        {"h:-1", "port \"-1\" is not a number"},
        {"h:+443", "port \"+443\" is not a number"},
        {"h: 443", "port \" 443\" is not a number"},
        {"h:0x1bb", "port \"0x1bb\" is not a number"},
    };
    char host[256], err[256];

    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        uint16_t port = 7;
        strcpy(host, "untouched");
        if (tf_config_split_hostport(cases[i].in, host, sizeof(host), &port, err, sizeof(err)))
            fail_msg("\"%s\" accepted as %s port %u", cases[i].in, host, port);
        assert_string_equal(err, cases[i].err);
        assert_int_equal(port, 7); /* outputs untouched on failure */
        assert_string_equal(host, "untouched");
    }
    assert_false(tf_config_split_hostport(NULL, host, sizeof(host), NULL, err, sizeof(err)));
    assert_string_equal(err, "empty address (expected host:port or [v6]:port)");
}

static void
test_split_host_buffer(void **state)
{
    char host[10], err[64];
    uint16_t port = 0;

    (void)state;
    /* Nine bytes and the NUL fit exactly; ten do not. */
    assert_true(tf_config_split_hostport("123456789:1", host, sizeof(host), &port, err,
                                         sizeof(err)));
    assert_string_equal(host, "123456789");
    assert_false(tf_config_split_hostport("1234567890:1", host, sizeof(host), &port, err,
                                          sizeof(err)));
    assert_string_equal(err, "host is too long (10 bytes)");
    /* err is optional, and a short one is cut, not overrun. */
    assert_false(tf_config_split_hostport("h", host, sizeof(host), &port, NULL, 0));
    char tiny[8];
    assert_false(tf_config_split_hostport("h", host, sizeof(host), &port, tiny, sizeof(tiny)));
    assert_string_equal(tiny, "missing");
}

/* ------------------------------------------------------------ references */

static void
test_refcount(void **state)
{
    char path[1024];

    (void)state;
    test_fixture(path, sizeof(path), "good_minimal.conf");
    struct tf_config *cfg = test_load_good(path);
    assert_int_equal(atomic_load(&cfg->refs), 1);
    assert_ptr_equal(tf_config_ref(cfg), cfg);
    assert_ptr_equal(tf_config_ref(cfg), cfg);
    assert_int_equal(atomic_load(&cfg->refs), 3);
    tf_config_unref(cfg);
    tf_config_unref(cfg);
    assert_int_equal(atomic_load(&cfg->refs), 1);
    assert_string_equal(cfg->listeners[0].name, "listener1"); /* still whole */
    tf_config_unref(cfg); /* freed here: ASan reports any use after this or any leak */

    assert_null(tf_config_ref(NULL));
    tf_config_unref(NULL);
}

int
main(void)
{
    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test(test_every_fixture_is_used),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_two_listeners),
        cmocka_unit_test(test_faults),
        cmocka_unit_test(test_routes),
        cmocka_unit_test(test_include),
        cmocka_unit_test(test_mitm),
        cmocka_unit_test(test_mitm_ca_files),
        cmocka_unit_test(test_ca_unused),
        cmocka_unit_test(test_shipped_conf),
        cmocka_unit_test(test_shipped_mitm_conf),
        cmocka_unit_test(test_shipped_transparent_conf),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_directory),
        cmocka_unit_test(test_error_buffer),
        cmocka_unit_test(test_quick_good),
        cmocka_unit_test(test_quick_bad),
        cmocka_unit_test(test_quick_faults),
        cmocka_unit_test(test_quick_routes),
        cmocka_unit_test(test_quick_mitm),
        cmocka_unit_test(test_split_good),
        cmocka_unit_test(test_split_bad),
        cmocka_unit_test(test_split_host_buffer),
        cmocka_unit_test(test_refcount),
        cmocka_unit_test(test_control),
        cmocka_unit_test(test_loopback),
        cmocka_unit_test(test_quick_control),
        cmocka_unit_test(test_with_rules),
    };
    /* One named test per bad fixture, so a failure names the file. */
    struct CMUnitTest tests[ARRAY_LEN(fixed) + ARRAY_LEN(bad_cases)];
    size_t n = 0;

    for (size_t i = 0; i < ARRAY_LEN(fixed); i++)
        tests[n++] = fixed[i];
    for (size_t i = 0; i < ARRAY_LEN(bad_cases); i++) {
        tests[n++] = (struct CMUnitTest){
            .name = bad_cases[i].fixture,
            .test_func = test_bad_fixture,
            .initial_state = &bad_cases[i],
        };
    }
    return cmocka_run_group_tests_name("config", tests, lab_setup, lab_teardown);
}
