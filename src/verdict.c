/*
 * verdict.c — why a flow ended, named from a table of causes.
 *
 * Job: turn the facts a flow gathered (its close, the alerts, the hellos,
 * the server's chain when it was visible, the mitm legs, a probe's chain)
 * into one cause from a fixed table, who should fix it, one sentence and
 * the evidence it rests on, plus a lint of the certificate chain that is
 * reported even when the handshake succeeded.  Pure: facts in, JSON out.
 *
 * How a cause is found, in order (first match wins):
 *   1. the route refused the flow; tlsfault was stopping;
 *   2. a fault rule fired and the flow did not end well: "injected", with
 *      what the client experienced worked out as if the fault's doing were
 *      the server's (or taken from the fault's table row);
 *   3. the upstream could not be reached;
 *   4. mitm: the leg that failed, from our own TLS state;
 *   5. a direction that is not TLS;
 *   6. after a complete handshake: tampering alerts, the way it closed;
 *   7. during the handshake: the first clear fatal alert, by sender and
 *      description (RFC 8446 §6.2, RFC 5246 §7.2.2); a TLS 1.3 client's
 *      protected alert (known by its size); else how far the server got
 *      and who closed.
 * "The client rejected the certificate" is refined from the chain when one
 * was visible, choosing among the lint findings the ones the client's
 * alert points at (OpenSSL's ssl_x509err2alert mapping: expired →
 * certificate_expired, untrusted or incomplete → unknown_ca, host name →
 * handshake_failure, purpose → unsupported_certificate, weak key or digest,
 * not yet valid → bad_certificate).
 *
 * Left to others: gathering the facts (flow.c, inspect.c, mitm.c, probe.c).
 */
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tlsfault/jsontext.h"
#include "tlsfault/verdict.h"

#define VERDICT_SUMMARY_MAX 700
#define VERDICT_SOON_DAYS 30
#define VERDICT_DAY 86400
#define VERDICT_RSA_MIN_BITS 2048
#define VERDICT_EC_MIN_BITS 224

static const struct tf_verdict_cause verdict_causes[] = {
    {"handshake_ok", NULL, "the handshake completed and the connection ended normally"},
    {"server_silent", "server",
     "the server accepted the connection but never answered the "
     "ClientHello"},
    {"server_reset_after_hello", "server",
     "the server reset the connection right after the "
     "ClientHello"},
    {"server_closed_after_hello", "server",
     "the server closed the connection right after the "
     "ClientHello, without an alert"},
    {"not_tls_server", "server", "the server's port speaks something else than TLS (HTTP, ...)"},
    {"not_tls_client", "client", "the client sent something else than a TLS ClientHello"},
    {"server_spoke_first", "server",
     "the server sent TLS before the client's ClientHello: the upstream is a TLS client, not "
     "a server"},
    {"version_mismatch", "server", "no protocol version both sides accept"},
    {"no_shared_cipher", "server", "no cipher suite both sides accept"},
    {"sni_required", "client", "the server needs SNI and the ClientHello had none"},
    {"unrecognized_name", "server", "the server does not serve the host name the client asked for"},
    {"cert_rejected", "server",
     "the client rejected the server's certificate (the chain was not "
     "visible to say why)"},
    {"cert_expired", "server", "the server's certificate has expired"},
    {"cert_not_yet_valid", "server", "the server's certificate is not valid yet"},
    {"cert_wrong_host", "server", "the host name is not in the certificate's subjectAltName"},
    {"cert_missing_intermediate", "server",
     "the server does not send the intermediate that "
     "issued its certificate"},
    {"cert_untrusted_root", "client", "the chain ends at a root the client does not trust"},
    {"cert_self_signed", "server", "the server's certificate is self-signed"},
    {"cert_wrong_eku", "server", "the certificate's extendedKeyUsage does not allow TLS servers"},
    {"cert_weak_key", "server", "the certificate's key is too small (RSA < 2048 bits)"},
    {"cert_weak_signature", "server", "the certificate is signed with SHA-1 (or MD5)"},
    {"client_cert_rejected", "client",
     "the server rejected the client's certificate, or wanted one"},
    {"downgrade_detected", "network",
     "the client saw the TLS 1.3 downgrade sentinel, or the "
     "server refused a fallback"},
    {"handshake_tampered", "network",
     "the Finished check failed: handshake messages were changed "
     "on the way"},
    {"record_tampering", "network",
     "records were damaged after the handshake (bad record MAC, "
     "decrypt or decode error)"},
    {"client_timeout", "client", "the client stopped answering"},
    {"server_timeout", "server", "the server stopped answering after it had started"},
    {"client_aborted", "client", "the client ended the connection for another reason"},
    {"server_aborted", "server", "the server ended the connection for another reason"},
    {"upstream_unreachable", "network",
     "tlsfault could not connect to the upstream (refused, "
     "unreachable, DNS)"},
    {"refused_by_route", "proxy-config", "tlsfault's route refused the connection"},
    {"proxy_error", "proxy-config", "tlsfault itself failed (mitm forging, memory)"},
    {"proxy_shutdown", "proxy-config", "tlsfault was stopping"},
    {"injected", "proxy-config", "a fault rule of tlsfault caused it"},
};

#define VERDICT_N(a) (sizeof(a) / sizeof((a)[0]))

const struct tf_verdict_cause *
tf_verdict_causes(size_t *n)
{
    *n = VERDICT_N(verdict_causes);
    return verdict_causes;
}

const struct tf_verdict_cause *
tf_verdict_cause(const char *id)
{
    for (size_t i = 0; id != NULL && i < VERDICT_N(verdict_causes); i++)
        if (strcmp(verdict_causes[i].id, id) == 0)
            return &verdict_causes[i];
    return NULL;
}

/* ------------------------------------------------------------ fact access */

static const char *
verdict_str(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* The string at key, or dflt when there is none. */
static const char *
verdict_str_or(const json_t *o, const char *key, const char *dflt)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s != NULL ? s : dflt;
}

static json_int_t
verdict_int(const json_t *o, const char *key, json_int_t dflt)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? json_integer_value(v) : dflt;
}

static bool
verdict_true(const json_t *o, const char *key)
{
    return json_is_true(json_object_get(o, key));
}

static bool
verdict_streq(const char *a, const char *b)
{
    return a != NULL && b != NULL && strcmp(a, b) == 0;
}

static bool
verdict_one_of(const char *s, const char *const *list)
{
    for (; s != NULL && *list != NULL; list++)
        if (strcmp(s, *list) == 0)
            return true;
    return false;
}

/* "TLS 1.2" → 0x0303; 0 when not a version name. */
static unsigned
verdict_version_code(const char *name)
{
    static const struct {
        const char *name;
        unsigned code;
    } v[] = {{"SSL 3.0", 0x300},
             {"TLS 1.0", 0x301},
             {"TLS 1.1", 0x302},
             {"TLS 1.2", 0x303},
             {"TLS 1.3", 0x304}};
    for (size_t i = 0; name != NULL && i < VERDICT_N(v); i++)
        if (strcmp(name, v[i].name) == 0)
            return v[i].code;
    return 0;
}

/* "2021-01-01T00:00:00Z" → seconds since the epoch; false when unreadable. */
static bool
verdict_time(const char *s, time_t *out)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (s == NULL || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                            &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
        return false;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    *out = timegm(&tm);
    return true;
}

/* The date part of an RFC 3339 time, for sentences. */
static void
verdict_date(const char *s, char *buf, size_t len)
{
    snprintf(buf, len, "%.10s", s ? s : "?");
}

/* ------------------------------------------------------------ lint */

static const char *const verdict_weak_digests[] = {"sha1", "md5", "md2", "md4", NULL};

static bool
verdict_weak_signature(const char *alg)
{
    char lower[128];
    size_t i;
    if (alg == NULL)
        return false;
    for (i = 0; alg[i] && i + 1 < sizeof(lower); i++)
        lower[i] = (char)(alg[i] >= 'A' && alg[i] <= 'Z' ? alg[i] + 32 : alg[i]);
    lower[i] = '\0';
    for (const char *const *d = verdict_weak_digests; *d; d++)
        if (strstr(lower, *d) != NULL)
            return true;
    return false;
}

/* RFC 6125 §6.4.3: a wildcard stands for exactly the left-most label. */
static bool
verdict_name_matches(const char *pattern, const char *host)
{
    if (strcasecmp(pattern, host) == 0)
        return true;
    if (pattern[0] == '*' && pattern[1] == '.') {
        const char *dot = strchr(host, '.');
        return dot != NULL && dot != host && strcasecmp(pattern + 1, dot) == 0;
    }
    return false;
}

static bool
verdict_host_in_san(const json_t *san, const char *host)
{
    size_t i;
    json_t *v;
    json_array_foreach(san, i, v)
    {
        const char *s = json_string_value(v);
        if (s != NULL && strncmp(s, "DNS:", 4) == 0 && verdict_name_matches(s + 4, host))
            return true;
        if (s != NULL && strncmp(s, "IP:", 3) == 0 && strcasecmp(s + 3, host) == 0)
            return true;
    }
    return false;
}

static void
verdict_san_text(const json_t *san, char *buf, size_t len)
{
    size_t i, used = 0;
    json_t *v;
    buf[0] = '\0';
    json_array_foreach(san, i, v)
    {
        if (used + 1 >= len)
            break;
        int w = snprintf(buf + used, len - used, "%s%s", i ? ", " : "",
                         json_string_value(v) ? json_string_value(v) : "?");
        if (w < 0)
            break;
        used += (size_t)w;
    }
    if (buf[0] == '\0')
        snprintf(buf, len, "no subjectAltName at all");
}

static void __attribute__((format(printf, 6, 7)))
verdict_lint_add(json_t *out, const char *id, const char *severity, size_t index,
                 const json_t *cert, const char *fmt, ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    json_t *f = json_pack("{s:s, s:s, s:I}", "id", id, "severity", severity, "certificate",
                          (json_int_t)index);
    const char *subject = verdict_str(cert, "subject");
    if (subject != NULL)
        json_object_set_new_nocheck(f, "subject", tf_json_string(subject));
    json_object_set_new_nocheck(f, "detail", tf_json_string(detail));
    json_array_append_new(out, f);
}

/* Is some other certificate of the chain the issuer of cert? (names only: no signatures) */
static bool
verdict_issuer_present(const json_t *chain, size_t self, const char *issuer)
{
    size_t i;
    json_t *c;
    json_array_foreach(chain, i, c)
    {
        if (i != self && verdict_streq(verdict_str(c, "subject"), issuer))
            return true;
    }
    return false;
}

json_t *
tf_verdict_lint(const json_t *chain, const char *sni, time_t now, const char *source)
{
    json_t *out = json_array();
    size_t i;
    json_t *c;

    json_array_foreach(chain, i, c)
    {
        const char *subject = verdict_str(c, "subject");
        const char *who = subject ? subject : "(no subject)";
        time_t t;
        char date[16];
        bool self_signed = verdict_true(c, "self_signed");

        if (subject == NULL && json_object_get(c, "unparsable") != NULL)
            continue;
        if (verdict_time(verdict_str(c, "not_after"), &t) && t < now) {
            verdict_date(verdict_str(c, "not_after"), date, sizeof(date));
            verdict_lint_add(out, "cert_expired", "error", i, c,
                             "the certificate %s expired on %s (%lld days ago)", who, date,
                             (long long)((now - t) / VERDICT_DAY));
        } else if (verdict_time(verdict_str(c, "not_before"), &t) && t > now) {
            verdict_date(verdict_str(c, "not_before"), date, sizeof(date));
            verdict_lint_add(
                out, "cert_not_yet_valid", "error", i, c,
                "the certificate %s is not valid before %s (in %lld days): check its dates "
                "and the clocks",
                who, date, (long long)((t - now) / VERDICT_DAY));
        } else if (verdict_time(verdict_str(c, "not_after"), &t) &&
                   t - now < (time_t)VERDICT_SOON_DAYS * VERDICT_DAY) {
            verdict_date(verdict_str(c, "not_after"), date, sizeof(date));
            verdict_lint_add(out, "cert_expiring_soon", "warning", i, c,
                             "the certificate %s expires on %s, in %lld days", who, date,
                             (long long)((t - now) / VERDICT_DAY));
        }
        const char *kt = verdict_str(c, "key_type");
        json_int_t bits = verdict_int(c, "key_bits", 0);
        if (bits > 0 &&
            (verdict_streq(kt, "RSA") || verdict_streq(kt, "RSA-PSS") || verdict_streq(kt, "DSA") ||
             verdict_streq(kt, "DH")) &&
            bits < VERDICT_RSA_MIN_BITS)
            verdict_lint_add(out, "cert_weak_key", "error", i, c,
                             "the certificate %s has a %lld-bit %s key (ee key too small)", who,
                             (long long)bits, kt);
        else if (bits > 0 && verdict_streq(kt, "EC") && bits < VERDICT_EC_MIN_BITS)
            verdict_lint_add(out, "cert_weak_key", "error", i, c,
                             "the certificate %s has a %lld-bit EC key", who, (long long)bits);
        /* A root's signature on itself is never checked: only issued certificates count. */
        const char *sig = verdict_str(c, "signature_algorithm");
        if (!self_signed && verdict_weak_signature(sig))
            verdict_lint_add(out, "cert_weak_signature", "error", i, c,
                             "the certificate %s is signed with %s (ca md too weak)", who, sig);
        if (i != 0)
            continue;
        /* The leaf. */
        if (self_signed) {
            verdict_lint_add(out, "cert_self_signed", "error", i, c,
                             "the certificate %s is self-signed: no CA vouches for it", who);
        } else if (verdict_str(c, "issuer") != NULL &&
                   !verdict_issuer_present(chain, 0, verdict_str(c, "issuer"))) {
            verdict_lint_add(
                out, "cert_missing_intermediate", "error", i, c,
                "the server sent %s without the certificate that issued it (%s): unable to "
                "get local issuer certificate unless the client has it already",
                who, verdict_str(c, "issuer"));
        }
        if (sni != NULL && sni[0] != '\0' && !verdict_host_in_san(json_object_get(c, "san"), sni)) {
            char names[400];
            verdict_san_text(json_object_get(c, "san"), names, sizeof(names));
            verdict_lint_add(out, "cert_wrong_host", "error", i, c,
                             "the certificate %s is for %s, not for %s", who, names, sni);
        }
        json_t *eku = json_object_get(c, "eku");
        if (json_is_array(eku)) {
            bool server = false;
            size_t k;
            json_t *e;
            json_array_foreach(eku, k, e)
            {
                if (verdict_streq(json_string_value(e), "serverAuth") ||
                    verdict_streq(json_string_value(e), "anyExtendedKeyUsage"))
                    server = true;
            }
            if (!server) {
                char list[200] = "";
                size_t used = 0;
                json_array_foreach(eku, k, e)
                {
                    int w = snprintf(list + used, sizeof(list) - used, "%s%s", k ? ", " : "",
                                     json_string_value(e) ? json_string_value(e) : "?");
                    if (w < 0 || (size_t)w >= sizeof(list) - used)
                        break;
                    used += (size_t)w;
                }
                verdict_lint_add(
                    out, "cert_wrong_eku", "error", i, c,
                    "the certificate %s is not for TLS servers: its extendedKeyUsage is %s "
                    "(no serverAuth): unsupported certificate purpose",
                    who, list[0] ? list : "empty");
            }
        }
    }
    if (source != NULL) {
        json_array_foreach(out, i, c)
            json_object_set_new_nocheck(c, "source", tf_json_string(source));
    }
    return out;
}

/* ------------------------------------------------------------ the analysis */

struct verdict {
    const json_t *facts;
    time_t now;
    bool ignore_faults;    /* working out what an injected fault looked like */
    const char *closed_by; /* as the client saw it */
    const char *how;
    bool complete;
    const char *sni;
    const json_t *chain; /* the chain that was visible, or NULL */
    const char *chain_source;
    json_t *findings;      /* its lint */
    json_t *seen_findings; /* the lint of what the client was shown: mitm's forged chain,
                            * else the same as findings */
    /* the result */
    const char *outcome; /* NULL: the flow's own */
    const char *cause;
    const char *who; /* NULL: the table's */
    bool who_set;
    char summary[VERDICT_SUMMARY_MAX];
    json_t *evidence;
};

static void __attribute__((format(printf, 3, 4)))
verdict_set_cause(struct verdict *v, const char *id, const char *fmt, ...)
{
    va_list ap;
    const struct tf_verdict_cause *row = tf_verdict_cause(id);
    assert(row != NULL);
    /* The table's own string: id may point into JSON freed before the verdict is. */
    v->cause = row != NULL ? row->id : "server_aborted";
    va_start(ap, fmt);
    vsnprintf(v->summary, sizeof(v->summary), fmt, ap);
    va_end(ap);
}

static void
verdict_set_who(struct verdict *v, const char *who)
{
    v->who = who;
    v->who_set = true;
}

static void
verdict_ev(struct verdict *v, json_t *e)
{
    json_array_append_new(v->evidence, e);
}

static void
verdict_ev_field(struct verdict *v, const char *name, json_t *value)
{
    if (value == NULL)
        return;
    verdict_ev(v, json_pack("{s:s, s:o}", "field", name, "value", value));
}

static void
verdict_ev_str(struct verdict *v, const char *name, const char *value)
{
    if (value != NULL)
        verdict_ev_field(v, name, tf_json_string(value));
}

/* An alert as evidence: {event, dir, level, description[, leg]}. */
static void
verdict_ev_alert(struct verdict *v, json_t *alert, const char *leg)
{
    json_t *e = json_pack("{s:s}", "event", "alert");
    const char *k;
    json_t *val;
    json_object_foreach(alert, k, val)
    {
        if (strcmp(k, "dir") == 0 || strcmp(k, "level") == 0 || strcmp(k, "description") == 0 ||
            strcmp(k, "encrypted") == 0 || strcmp(k, "length") == 0 || strcmp(k, "inferred") == 0)
            json_object_set(e, k, val);
    }
    if (leg != NULL)
        json_object_set_new_nocheck(e, "leg", tf_json_string(leg));
    verdict_ev(v, e);
}

static void
verdict_ev_close(struct verdict *v)
{
    json_t *e = json_pack("{s:s}", "event", "close");
    if (v->closed_by)
        json_object_set_new_nocheck(e, "by", tf_json_string(v->closed_by));
    if (v->how)
        json_object_set_new_nocheck(e, "how", tf_json_string(v->how));
    verdict_ev(v, e);
}

static void
verdict_ev_last(struct verdict *v)
{
    const json_t *last = json_object_get(v->facts, "last_message");
    if (last == NULL)
        return;
    verdict_ev(v, json_pack("{s:s, s:s?, s:s?}", "event", "last_message", "dir",
                            verdict_str(last, "dir"), "type", verdict_str(last, "type")));
}

static void
verdict_ev_finding(struct verdict *v, const json_t *f)
{
    json_t *e = json_pack("{s:s?, s:I, s:s?, s:s?}", "finding", verdict_str(f, "id"), "certificate",
                          verdict_int(f, "certificate", 0), "detail", verdict_str(f, "detail"),
                          "source", verdict_str(f, "source"));
    verdict_ev(v, e);
}

static const char *
verdict_side(const char *dir)
{
    return verdict_streq(dir, "c2s") ? "client" : "server";
}

static json_int_t
verdict_bytes(const struct verdict *v, const char *dir)
{
    return verdict_int(json_object_get(v->facts, "bytes"), dir, 0);
}

static const char *
verdict_last_dir(const struct verdict *v)
{
    return verdict_str(json_object_get(v->facts, "last_message"), "dir");
}

static const char *
verdict_last_type(const struct verdict *v)
{
    return verdict_str(json_object_get(v->facts, "last_message"), "type");
}

static bool
verdict_server_hello_seen(const struct verdict *v)
{
    return json_object_get(v->facts, "server_hello") != NULL;
}

static bool
verdict_client_hello_seen(const struct verdict *v)
{
    return verdict_true(json_object_get(v->facts, "client_hello"), "seen");
}

/* Some message of type went in dir (from the message log). */
static bool
verdict_saw(const struct verdict *v, const char *dir, const char *type)
{
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(v->facts, "messages"), i, m)
    {
        if (verdict_streq(verdict_str(m, "dir"), dir) &&
            verdict_streq(verdict_str(m, "type"), type))
            return true;
    }
    return false;
}

/*
 * The server said something the client could see: a message in the log
 * (bytes read while a fault ends the flow are the peers' reaction to it and
 * are not inspected), or, without a log, any byte at all.
 */
static bool
verdict_server_spoke(const struct verdict *v)
{
    const json_t *log = json_object_get(v->facts, "messages");
    size_t i;
    json_t *m;
    if (!json_is_array(log))
        return verdict_bytes(v, "s2c") > 0;
    json_array_foreach(log, i, m)
    {
        if (verdict_streq(verdict_str(m, "dir"), "s2c"))
            return true;
    }
    return false;
}

static bool
verdict_tls13(const struct verdict *v)
{
    return verdict_streq(verdict_str(json_object_get(v->facts, "server_hello"), "version"),
                         "TLS 1.3") ||
           verdict_streq(verdict_str(v->facts, "version"), "TLS 1.3");
}

/* The server's certificate went by: clear (TLS 1.2) or inside its protected flight (TLS 1.3). */
static bool
verdict_server_cert_sent(const struct verdict *v)
{
    if (verdict_saw(v, "s2c", "certificate"))
        return true;
    return verdict_tls13(v) && verdict_saw(v, "s2c", "encrypted");
}

/* The first fatal alert that was readable, or NULL. */
static json_t *
verdict_first_fatal(const struct verdict *v)
{
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(v->facts, "alerts"), i, a)
    {
        if (verdict_streq(verdict_str(a, "level"), "fatal") &&
            verdict_str(a, "description") != NULL)
            return a;
    }
    return NULL;
}

/* ------------------------------------------------------------ certificates */

static const char *const verdict_cert_alerts[] = {
    "bad_certificate",     "unsupported_certificate",
    "certificate_revoked", "certificate_expired",
    "certificate_unknown", "unknown_ca",
    "access_denied",       NULL,
};

static const char *const verdict_cert_priority[] = {
    "cert_expired",
    "cert_not_yet_valid",
    "cert_self_signed",
    "cert_wrong_host",
    "cert_wrong_eku",
    "cert_weak_key",
    "cert_weak_signature",
    "cert_missing_intermediate",
    NULL,
};

/* Which findings an alert points at, most likely first (OpenSSL's mapping of X509_V_ERR_*). */
static const char *const *
verdict_cert_candidates(const char *alert)
{
    static const char *const expired[] = {"cert_expired", "cert_not_yet_valid", NULL};
    static const char *const unknown_ca[] = {"cert_self_signed", "cert_missing_intermediate", NULL};
    static const char *const purpose[] = {"cert_wrong_eku", NULL};
    static const char *const bad[] = {"cert_not_yet_valid", "cert_weak_key", "cert_weak_signature",
                                      "cert_expired", NULL};
    static const char *const host[] = {"cert_wrong_host", NULL};
    if (verdict_streq(alert, "certificate_expired"))
        return expired;
    if (verdict_streq(alert, "unknown_ca"))
        return unknown_ca;
    if (verdict_streq(alert, "unsupported_certificate"))
        return purpose;
    if (verdict_streq(alert, "bad_certificate"))
        return bad;
    if (verdict_streq(alert, "handshake_failure"))
        return host;
    return verdict_cert_priority;
}

static const json_t *
verdict_finding(const json_t *findings, const char *id)
{
    size_t i;
    json_t *f;
    json_array_foreach(findings, i, f)
    {
        if (verdict_streq(verdict_str(f, "id"), id))
            return f;
    }
    return NULL;
}

static bool
verdict_has_error(const json_t *findings)
{
    size_t i;
    json_t *f;
    json_array_foreach(findings, i, f)
    {
        if (verdict_streq(verdict_str(f, "severity"), "error"))
            return true;
    }
    return false;
}

/* The issuer the chain ends at (its last certificate's issuer). */
static const char *
verdict_chain_top(const json_t *chain)
{
    size_t n = json_array_size(chain);
    for (size_t i = n; i > 0; i--) {
        const char *s = verdict_str(json_array_get(chain, i - 1), "issuer");
        if (s != NULL)
            return s;
    }
    return NULL;
}

/*
 * The client rejected the certificate (alert: what it said, NULL when it
 * only closed or its alert was encrypted): which problem, from the chain.
 */
static void
verdict_cert_refine(struct verdict *v, const char *alert, const char *how_said)
{
    const json_t *pick = NULL;
    const char *const *cand = verdict_cert_candidates(alert);

    for (size_t i = 0; cand[i] != NULL && pick == NULL; i++)
        pick = verdict_finding(v->findings, cand[i]);
    for (size_t i = 0; verdict_cert_priority[i] != NULL && pick == NULL; i++)
        pick = verdict_finding(v->findings, verdict_cert_priority[i]);
    if (pick != NULL) {
        verdict_set_cause(v, verdict_str(pick, "id"),
                          "The client rejected the server's certificate (%s): %s.", how_said,
                          verdict_str(pick, "detail"));
        verdict_ev_finding(v, pick);
        return;
    }
    if (v->chain != NULL &&
        (alert == NULL || verdict_streq(alert, "unknown_ca") ||
         verdict_streq(alert, "certificate_unknown") || verdict_streq(alert, "bad_certificate"))) {
        const char *root = verdict_chain_top(v->chain);
        verdict_set_cause(
            v, "cert_untrusted_root",
            "The client rejected the server's certificate (%s): the chain is complete and "
            "ends at %s, a root the client does not trust (add it to the client's trust "
            "store, or use a certificate from a CA the client trusts).",
            how_said, root ? root : "a root");
        verdict_ev_str(v, "chain_root_issuer", root);
        return;
    }
    if (v->chain != NULL)
        verdict_set_cause(
            v, "cert_rejected",
            "The client rejected the server's certificate (%s), though its chain shows no "
            "problem tlsfault can check (revocation, pinning or a private policy?).",
            how_said);
    else
        verdict_set_cause(
            v, "cert_rejected",
            "The client rejected the server's certificate (%s); the chain was not visible%s.",
            how_said,
            verdict_tls13(v) ? " (TLS 1.3 encrypts it: turn on probe to fetch and check it)" : "");
}

/* ------------------------------------------------------------ versions */

/* The offered versions as text ("TLS 1.3, TLS 1.2"), GREASE left out. */
static void
verdict_offered_text(const struct verdict *v, char *buf, size_t len)
{
    const json_t *list = json_object_get(json_object_get(v->facts, "client_hello"), "versions");
    size_t i, used = 0;
    json_t *x;
    buf[0] = '\0';
    json_array_foreach(list, i, x)
    {
        const char *s = json_string_value(x);
        if (s == NULL || verdict_version_code(s) == 0)
            continue;
        int w = snprintf(buf + used, len - used, "%s%s", used ? ", " : "", s);
        if (w < 0 || (size_t)w >= len - used)
            break;
        used += (size_t)w;
    }
    if (buf[0] == '\0') {
        const char *max = verdict_str(v->facts, "client_max_version");
        snprintf(buf, len, "up to %s", max ? max : "an unknown version");
    }
}

static void
verdict_version_mismatch(struct verdict *v, json_t *alert)
{
    char offered[160];
    const char *chosen = verdict_str(json_object_get(v->facts, "server_hello"), "version");
    const char *cmax = verdict_str(v->facts, "client_max_version");
    unsigned cmax_code = verdict_version_code(cmax);
    unsigned chosen_code = verdict_version_code(chosen);
    const char *sender = verdict_side(verdict_str(alert, "dir"));

    verdict_offered_text(v, offered, sizeof(offered));
    verdict_ev_alert(v, alert, NULL);
    verdict_ev_str(v, "client_max_version", cmax);
    verdict_ev_field(
        v, "offered_versions",
        json_incref(json_object_get(json_object_get(v->facts, "client_hello"), "versions")));
    verdict_ev_str(v, "selected_version", chosen);
    if (chosen != NULL && strcmp(sender, "client") == 0) {
        verdict_set_cause(
            v, "version_mismatch",
            "No protocol version in common: the server chose %s, which the client refuses "
            "(it offered %s; alert protocol_version).",
            chosen, offered);
        verdict_set_who(v, chosen_code != 0 && chosen_code < 0x0303 ? "server" : "client");
        return;
    }
    verdict_set_cause(
        v, "version_mismatch",
        "No protocol version in common: the client offered %s and the server accepts none "
        "of them (alert protocol_version%s).",
        offered,
        cmax_code != 0 && cmax_code < 0x0303 ? "; the client is limited to obsolete versions"
                                             : "; the server speaks only other versions");
    verdict_set_who(v, cmax_code != 0 && cmax_code < 0x0303 ? "client" : "server");
}

/* ------------------------------------------------------------ alerts */

static const char *const verdict_tamper_alerts[] = {"bad_record_mac",    "decrypt_error",
                                                    "decryption_failed", "decode_error",
                                                    "record_overflow",   NULL};

/* " after the server's server_hello" (the message before the first alert), or "". */
static void
verdict_before_alert(const struct verdict *v, char *buf, size_t len)
{
    const json_t *prev = NULL;
    size_t i;
    json_t *m;
    buf[0] = '\0';
    json_array_foreach(json_object_get(v->facts, "messages"), i, m)
    {
        if (verdict_streq(verdict_str(m, "type"), "alert"))
            break;
        prev = m;
    }
    if (prev != NULL && verdict_str(prev, "type") != NULL)
        snprintf(buf, len, " after the %s's %s", verdict_side(verdict_str(prev, "dir")),
                 verdict_str(prev, "type"));
}

/* A fatal alert from the server during the handshake. */
static void
verdict_server_alert(struct verdict *v, json_t *a, const char *leg)
{
    const char *desc = verdict_str(a, "description");
    const json_t *ch = json_object_get(v->facts, "client_hello");

    if (verdict_streq(desc, "protocol_version")) {
        verdict_version_mismatch(v, a);
        return;
    }
    verdict_ev_alert(v, a, leg);
    if ((verdict_streq(desc, "handshake_failure") ||
         verdict_streq(desc, "insufficient_security")) &&
        !verdict_server_hello_seen(v)) {
        json_t *suites = json_object_get(ch, "cipher_suites");
        verdict_set_cause(
            v, "no_shared_cipher",
            "No cipher suite in common: the server answered a ClientHello offering %zu "
            "suites with alert %s (\"no shared cipher\").",
            json_array_size(suites), desc);
        verdict_ev_field(v, "offered_cipher_suites", json_incref(suites));
        verdict_ev_str(v, "client_max_version", verdict_str(v->facts, "client_max_version"));
        return;
    }
    if (verdict_streq(desc, "unrecognized_name")) {
        if (verdict_true(ch, "has_sni") || verdict_str(v->facts, "sni") != NULL) {
            verdict_set_cause(v, "unrecognized_name",
                              "The server does not serve the host name \"%s\" the client asked for "
                              "(alert unrecognized_name).",
                              verdict_str_or(v->facts, "sni", "?"));
            verdict_ev_str(v, "sni", verdict_str(v->facts, "sni"));
        } else {
            verdict_set_cause(
                v, "sni_required",
                "The server requires SNI: the ClientHello named no server and the server "
                "answered with alert unrecognized_name (connect by host name, not by "
                "address, or set the client's servername).");
            verdict_ev_field(v, "sni", json_null());
        }
        return;
    }
    if (verdict_streq(desc, "inappropriate_fallback")) {
        char offered[160];
        verdict_offered_text(v, offered, sizeof(offered));
        verdict_set_cause(v, "downgrade_detected",
                          "The server refused a fallback: the client retried offering only %s with "
                          "TLS_FALLBACK_SCSV although the server supports more (alert "
                          "inappropriate_fallback) — the first attempt failed on the way.",
                          offered);
        return;
    }
    if (verdict_one_of(desc, verdict_tamper_alerts) &&
        verdict_saw(v, "c2s", "change_cipher_spec")) {
        verdict_set_cause(
            v, "handshake_tampered",
            "The server's Finished check failed (alert %s): the handshake messages were "
            "changed on the way, or the two sides do not agree on the keys.",
            desc);
        return;
    }
    if (verdict_one_of(desc, (const char *const[]){"certificate_required", "bad_certificate",
                                                   "unknown_ca", "certificate_expired",
                                                   "certificate_unknown", "unsupported_certificate",
                                                   "certificate_revoked", "access_denied", NULL})) {
        verdict_set_cause(
            v, "client_cert_rejected",
            "The server rejected the client's certificate, or wanted one it did not get "
            "(alert %s %s).",
            desc, v->complete ? "after the handshake" : "during the handshake");
        return;
    }
    char before[96];
    verdict_before_alert(v, before, sizeof(before));
    verdict_set_cause(v, "server_aborted", "The server aborted the handshake with alert %s%s.",
                      desc ? desc : "?", before);
    if (verdict_one_of(desc,
                       (const char *const[]){"decode_error", "illegal_parameter",
                                             "unsupported_extension", "missing_extension", NULL}))
        verdict_set_who(v, "client");
}

/*
 * The server chose a version older than TLS 1.2 although the client offered
 * TLS 1.2 or later, and the client gave up: its policy refuses what that
 * version needs (SHA-1/MD5 signatures at OpenSSL's security level 2).
 */
static bool
verdict_old_version(struct verdict *v, const char *how_said)
{
    const char *chosen = verdict_str(json_object_get(v->facts, "server_hello"), "version");
    unsigned code = verdict_version_code(chosen);
    unsigned cmax = verdict_version_code(verdict_str(v->facts, "client_max_version"));
    if (code == 0 || code >= 0x0303 || (cmax != 0 && cmax < 0x0303))
        return false;
    char offered[160];
    verdict_offered_text(v, offered, sizeof(offered));
    verdict_ev_str(v, "client_max_version", verdict_str(v->facts, "client_max_version"));
    verdict_ev_str(v, "selected_version", chosen);
    verdict_set_cause(
        v, "version_mismatch",
        "No protocol version both accept: the server chose %s, which the client will not "
        "use (it offered %s; %s).",
        chosen, offered, how_said);
    return true;
}

/* A fatal alert from the client during the handshake. */
static void
verdict_client_alert(struct verdict *v, json_t *a, const char *leg)
{
    const char *desc = verdict_str(a, "description");
    char said[96];

    if (verdict_streq(desc, "protocol_version")) {
        verdict_version_mismatch(v, a);
        return;
    }
    verdict_ev_alert(v, a, leg);
    snprintf(said, sizeof(said), "alert %s", desc ? desc : "?");
    if (verdict_one_of(desc, verdict_cert_alerts) ||
        (verdict_streq(desc, "handshake_failure") && verdict_saw(v, "s2c", "certificate"))) {
        verdict_cert_refine(v, desc, said);
        return;
    }
    const char *sentinel =
        verdict_str(json_object_get(v->facts, "server_hello"), "downgrade_sentinel");
    if ((verdict_streq(desc, "inappropriate_fallback") ||
         verdict_streq(desc, "illegal_parameter")) &&
        sentinel != NULL) {
        char offered[160];
        verdict_offered_text(v, offered, sizeof(offered));
        verdict_set_cause(
            v, "downgrade_detected",
            "The client detected a downgrade: a server that speaks TLS 1.3 answered with "
            "%s and the downgrade sentinel, because the ClientHello it got offered only %s "
            "— something on the path rewrote the hello (alert %s).",
            verdict_str_or(json_object_get(v->facts, "server_hello"), "version",
                           "an older version"),
            offered, desc);
        verdict_ev_str(v, "downgrade_sentinel", sentinel);
        return;
    }
    if (verdict_old_version(v, said))
        return;
    if (verdict_one_of(desc, verdict_tamper_alerts) &&
        (verdict_saw(v, "s2c", "change_cipher_spec") || verdict_tls13(v))) {
        verdict_set_cause(
            v, "handshake_tampered",
            "The client's check of the server's Finished failed (alert %s): the handshake "
            "messages were changed on the way, or the two sides do not agree on the keys.",
            desc);
        return;
    }
    char before[96];
    verdict_before_alert(v, before, sizeof(before));
    verdict_set_cause(v, "client_aborted", "The client aborted the handshake with alert %s%s.",
                      desc ? desc : "?", before);
    if (verdict_one_of(desc, (const char *const[]){"illegal_parameter", "decode_error",
                                                   "insufficient_security", "unsupported_extension",
                                                   "decrypt_error", NULL}))
        verdict_set_who(v, "server");
}

/* ------------------------------------------------------------ closes */

static const char *
verdict_close_words(const char *how)
{
    if (verdict_streq(how, "reset") || verdict_streq(how, "error"))
        return "reset the connection";
    if (verdict_streq(how, "timeout"))
        return "timed out";
    return "closed the connection";
}

/* No readable alert: who closed, when, after which message. */
static void
verdict_closed_early(struct verdict *v)
{
    const char *by = v->closed_by, *how = v->how;
    json_int_t s2c = verdict_bytes(v, "s2c"), c2s = verdict_bytes(v, "c2s");
    const char *stage = verdict_str_or(v->facts, "stage", "");
    double secs = (double)verdict_int(v->facts, "duration_ms", 0) / 1000.0;

    verdict_ev_close(v);
    if (!verdict_client_hello_seen(v)) {
        verdict_ev_field(v, "bytes_c2s", json_integer(c2s));
        if (verdict_streq(how, "timeout") && verdict_streq(by, "proxy")) {
            verdict_set_cause(
                v, "client_timeout",
                "The client connected but %s no ClientHello before the handshake timeout "
                "(%.1f s).",
                c2s == 0 ? "sent" : "did not finish sending its", secs);
            return;
        }
        if (verdict_streq(by, "server")) {
            verdict_set_cause(v, "server_aborted",
                              "The server %s before the client had sent its ClientHello.",
                              verdict_close_words(how));
            return;
        }
        verdict_set_cause(
            v, "client_aborted",
            "The client %s before it had sent a ClientHello (%lld bytes): a port check or a "
            "client that gave up.",
            verdict_close_words(how), (long long)c2s);
        return;
    }
    if (!verdict_server_spoke(v)) {
        verdict_ev_field(v, "bytes_s2c", json_integer(s2c));
        if (verdict_streq(by, "server") &&
            (verdict_streq(how, "reset") || verdict_streq(how, "error"))) {
            verdict_set_cause(
                v, "server_reset_after_hello",
                "The server reset the connection right after the ClientHello, without a "
                "ServerHello or an alert (connection reset by peer): it may refuse this "
                "client's hello (versions, suites, SNI) or be a non-TLS service.");
            return;
        }
        if (verdict_streq(by, "server")) {
            verdict_set_cause(
                v, "server_closed_after_hello",
                "The server closed the connection right after the ClientHello without a "
                "ServerHello or an alert (unexpected EOF during the handshake): it may refuse "
                "this client's hello (versions, suites, SNI) or be a non-TLS service.");
            return;
        }
        verdict_set_cause(
            v, "server_silent",
            "The server accepted the connection but never answered the ClientHello; %s "
            "after %.1f s.",
            verdict_streq(by, "client") ? "the client gave up"
                                        : "tlsfault's handshake timeout ended it",
            secs);
        return;
    }
    verdict_ev_last(v);
    if (verdict_streq(how, "timeout") && verdict_streq(by, "proxy")) {
        if (verdict_streq(verdict_last_dir(v), "c2s"))
            verdict_set_cause(
                v, "server_timeout",
                "The handshake stalled waiting for the server (last message: %s from the "
                "client) until tlsfault's handshake timeout.",
                verdict_last_type(v) ? verdict_last_type(v) : "?");
        else
            verdict_set_cause(
                v, "client_timeout",
                "The handshake stalled waiting for the client (last message: %s from the "
                "server) until tlsfault's handshake timeout.",
                verdict_last_type(v) ? verdict_last_type(v) : "?");
        return;
    }
    if (verdict_streq(by, "client")) {
        const char *lt = verdict_last_type(v);
        bool after_cert = verdict_streq(verdict_last_dir(v), "s2c") &&
                          verdict_server_cert_sent(v) &&
                          !verdict_saw(v, "c2s", "client_key_exchange");
        if (after_cert) {
            char said[96];
            snprintf(said, sizeof(said), "it %s right after the server's %s",
                     verdict_close_words(how),
                     verdict_tls13(v) ? "encrypted flight, which carries the certificate"
                     : lt             ? lt
                                      : "?");
            verdict_cert_refine(v, NULL, said);
            return;
        }
        char closed[64];
        snprintf(closed, sizeof(closed), "it %s", verdict_close_words(how));
        if (verdict_old_version(v, closed))
            return;
        if (verdict_streq(verdict_last_dir(v), "c2s")) {
            verdict_set_cause(v, "server_timeout",
                              "The client gave up waiting for the server %s (after %.1f s).", stage,
                              secs);
            return;
        }
        verdict_set_cause(v, "client_aborted", "The client %s %s without an alert.",
                          verdict_close_words(how), stage);
        return;
    }
    verdict_set_cause(v, "server_aborted", "The server %s %s without an alert.",
                      verdict_close_words(how), stage);
}

static void
verdict_after_handshake(struct verdict *v)
{
    json_t *a = verdict_first_fatal(v);
    const char *version = verdict_str(v->facts, "version");
    const char *suite = verdict_str(v->facts, "cipher_suite");

    if (a != NULL && verdict_one_of(verdict_str(a, "description"), verdict_tamper_alerts)) {
        verdict_ev_alert(v, a, NULL);
        verdict_set_cause(
            v, "record_tampering",
            "Records were damaged on the way after the handshake: the %s reported %s.",
            verdict_side(verdict_str(a, "dir")), verdict_str(a, "description"));
        return;
    }
    /*
     * The client finished the handshake, sent nothing and left: a check made
     * after the handshake failed (curl compares the host name only then).
     * Said only when the chain shows an error to blame.
     */
    const json_t *data = json_object_get(v->facts, "data_records");
    if (verdict_streq(v->closed_by, "client") && data != NULL && verdict_int(data, "c2s", 1) == 0 &&
        verdict_has_error(v->seen_findings) &&
        (verdict_streq(v->how, "fin") || verdict_streq(v->how, "reset"))) {
        json_t *real = v->findings;
        verdict_ev_field(v, "client_data_records", json_integer(0));
        v->findings = v->seen_findings; /* the client judged what it was shown */
        verdict_cert_refine(v, NULL,
                            "it completed the handshake, sent nothing and closed: a check it "
                            "makes after the handshake failed");
        v->findings = real;
        v->outcome = "failed";
        return;
    }
    if (verdict_streq(v->how, "fin") || v->how == NULL) {
        size_t n = json_array_size(v->findings);
        verdict_set_cause(v, "handshake_ok",
                          "The handshake completed (%s, %s) and the %s closed the "
                          "connection normally%s.",
                          version ? version : "TLS", suite ? suite : "?",
                          v->closed_by ? v->closed_by : "client",
                          n ? "; see findings for what is wrong all the same" : "");
        return;
    }
    verdict_ev_close(v);
    if (verdict_streq(v->how, "timeout")) {
        const char *lr = verdict_str(v->facts, "last_read");
        if (verdict_streq(lr, "c2s"))
            verdict_set_cause(
                v, "server_timeout",
                "The handshake completed, then the server did not answer the client's last "
                "data until the idle timeout.");
        else
            verdict_set_cause(
                v, "client_timeout",
                "The handshake completed, then the connection sat idle (the client sent "
                "nothing more) until the idle timeout.");
        return;
    }
    if (verdict_streq(v->closed_by, "client"))
        verdict_set_cause(v, "client_aborted", "The handshake completed, then the client %s.",
                          verdict_close_words(v->how));
    else
        verdict_set_cause(v, "server_aborted", "The handshake completed, then the server %s.",
                          verdict_close_words(v->how));
}

/* ------------------------------------------------------------ non-TLS, unreachable */

static bool
verdict_not_tls(struct verdict *v)
{
    const json_t *at = json_object_get(v->facts, "non_tls_at");
    const json_t *nt = json_object_get(v->facts, "non_tls");
    static const char *const dirs[] = {"s2c", "c2s"};

    for (size_t i = 0; i < 2; i++) {
        const char *dir = dirs[i];
        const char *kind = verdict_str(nt, dir);
        const json_t *where = json_object_get(at, dir);
        if (kind == NULL && where == NULL)
            continue;
        if (kind == NULL)
            kind = verdict_str(where, "kind");
        json_int_t offset = verdict_int(where, "offset", 0);
        verdict_ev(v, json_pack("{s:s, s:s, s:s?, s:I}", "event", "non_tls", "dir", dir, "kind",
                                kind, "offset", offset));
        if (v->complete || offset > 0) {
            verdict_set_cause(
                v, "record_tampering",
                "The %s's byte stream stopped being valid TLS %s (%s at byte %lld of a "
                "record): records were damaged or bytes inserted on the way.",
                verdict_side(dir), v->complete ? "after the handshake" : "mid-handshake",
                kind ? kind : "garbage", (long long)offset);
            return true;
        }
        const char *what = verdict_streq(kind, "http")    ? "an HTTP message"
                           : verdict_streq(kind, "sslv2") ? "an SSLv2 hello"
                                                          : "bytes that are not TLS";
        if (i == 0 && json_object_get(v->facts, "server_spoke_first") != NULL)
            verdict_set_cause(
                v, "not_tls_server",
                "The server spoke first, before any ClientHello, and sent %s: a protocol "
                "whose server talks first (SMTP, FTP, POP3, a banner), or the wrong port; "
                "TLS clients report \"wrong version number\".",
                what);
        else if (i == 0)
            verdict_set_cause(
                v, "not_tls_server",
                "The server's port does not speak TLS: it answered the ClientHello with %s "
                "(plain HTTP, or the wrong port); clients report \"wrong version number\".",
                what);
        else
            verdict_set_cause(
                v, "not_tls_client",
                "The client does not speak TLS here: it sent %s instead of a ClientHello.", what);
        return true;
    }
    return false;
}

static void
verdict_unreachable(struct verdict *v)
{
    const char *e = verdict_str(v->facts, "error"), *u = verdict_str(v->facts, "upstream");
    const char *err = e != NULL ? e : "";
    const char *up = u != NULL ? u : "the upstream";
    verdict_ev_str(v, "error", err);
    verdict_ev_str(v, "upstream", u);
    verdict_set_cause(v, "upstream_unreachable", "tlsfault could not connect to %s: %s.", up, err);
    if (strcasestr(err, "refused") != NULL)
        verdict_set_who(v, "server");
    else if (strcasestr(err, "resolve") != NULL || strcasestr(err, "name") != NULL ||
             strcasestr(err, "nodename") != NULL)
        verdict_set_who(v, "proxy-config");
}

/* ------------------------------------------------------------ mitm */

static const char *const verdict_not_tls_reasons[] = {"wrong version number",   "unknown protocol",
                                                      "packet length too long", "http request",
                                                      "record layer failure",   NULL};

static bool
verdict_contains_any(const char *s, const char *const *list)
{
    for (; s != NULL && *list != NULL; list++)
        if (strcasestr(s, *list) != NULL)
            return true;
    return false;
}

/* X509_V_ERR_* (x509_vfy.h) → a cause; 0 when there is no row. */
static const char *
verdict_verify_cause(json_int_t code)
{
    switch (code) {
    case 10: return "cert_expired";             /* CERT_HAS_EXPIRED */
    case 9: return "cert_not_yet_valid";        /* CERT_NOT_YET_VALID */
    case 62: return "cert_wrong_host";          /* HOSTNAME_MISMATCH */
    case 18: return "cert_self_signed";         /* DEPTH_ZERO_SELF_SIGNED_CERT */
    case 19: return "cert_untrusted_root";      /* SELF_SIGNED_CERT_IN_CHAIN */
    case 20:                                    /* UNABLE_TO_GET_ISSUER_CERT_LOCALLY */
    case 2: return "cert_missing_intermediate"; /* UNABLE_TO_GET_ISSUER_CERT */
    case 26: return "cert_wrong_eku";           /* INVALID_PURPOSE */
    case 68: return "cert_weak_signature";      /* CA_MD_TOO_WEAK */
    case 66:                                    /* EE_KEY_TOO_SMALL */
    case 67: return "cert_weak_key";            /* CA_KEY_TOO_SMALL */
    default: return NULL;
    }
}

static bool
verdict_mitm(struct verdict *v)
{
    const json_t *m = json_object_get(v->facts, "mitm_facts");
    const char *leg = verdict_str(m, "failed_leg");
    const char *err = verdict_str(m, "error");

    if (m == NULL || leg == NULL)
        return false;
    verdict_ev_str(v, "mitm_error", err);
    if (err != NULL && (strstr(err, "out of memory") || strstr(err, "cannot forge") ||
                        strstr(err, "forged certificate was refused"))) {
        verdict_set_cause(v, "proxy_error", "tlsfault failed on this flow: %s.", err);
        return true;
    }
    if (strcmp(leg, "upstream") == 0) {
        const json_t *ua = json_object_get(m, "upstream_alert");
        if (ua != NULL) {
            json_t *a = json_deep_copy(ua);
            json_object_set_new_nocheck(a, "dir", tf_json_name("s2c"));
            verdict_server_alert(v, a, "upstream");
            json_decref(a);
            return true;
        }
        if (verdict_true(m, "verify_failed")) {
            json_int_t code = verdict_int(m, "verify_code", 0);
            const char *id = verdict_verify_cause(code);
            const char *reason = verdict_str(
                json_object_get(json_object_get(v->facts, "mitm"), "upstream_leg"), "verify");
            verdict_ev_field(v, "verify_code", json_integer(code));
            verdict_ev_str(v, "verify", reason);
            const json_t *f = id ? verdict_finding(v->findings, id) : NULL;
            if (f != NULL)
                verdict_ev_finding(v, f);
            verdict_set_cause(
                v, id ? id : "cert_rejected",
                "tlsfault's upstream verification rejected the server's certificate (%s)%s%s.",
                reason ? reason : "verify failed", f ? ": " : "",
                f ? verdict_str(f, "detail") : "");
            return true;
        }
        if (verdict_contains_any(err, verdict_not_tls_reasons)) {
            verdict_set_cause(
                v, "not_tls_server",
                "The server's port does not speak TLS: tlsfault's upstream handshake got "
                "\"%s\" (plain HTTP, or the wrong port).",
                err);
            return true;
        }
        if (verdict_int(m, "upstream_messages", 0) == 0) {
            verdict_closed_early(v);
            if (verdict_streq(v->cause, "client_aborted") ||
                verdict_streq(v->cause, "server_aborted"))
                verdict_set_cause(
                    v, "server_closed_after_hello",
                    "The server ended the connection right after the ClientHello without "
                    "an alert (%s).",
                    err ? err : "unexpected EOF");
            return true;
        }
        verdict_set_cause(v, "server_aborted",
                          "The server broke off tlsfault's upstream handshake after "
                          "its %s: %s.",
                          verdict_str_or(m, "upstream_last", "first message"), err ? err : "?");
        return true;
    }
    /* The client leg. */
    const json_t *ca = json_object_get(m, "client_alert");
    if (ca != NULL && verdict_streq(verdict_str(m, "failed_at"), "client")) {
        const char *desc = verdict_str(ca, "description");
        json_t *a = json_deep_copy(ca);
        json_object_set_new_nocheck(a, "dir", tf_json_name("c2s"));
        if (verdict_one_of(desc, verdict_cert_alerts) || verdict_streq(desc, "handshake_failure")) {
            verdict_ev_alert(v, a, "client");
            json_decref(a);
            /* The client judged our forged chain: lint that, not the upstream's. */
            json_t *forged =
                tf_verdict_lint(json_object_get(m, "forged_chain"), v->sni, v->now, "forged");
            const json_t *f = NULL;
            const char *const *cand = verdict_cert_candidates(desc);
            for (size_t i = 0; cand[i] != NULL && f == NULL; i++)
                f = verdict_finding(forged, cand[i]);
            for (size_t i = 0; verdict_cert_priority[i] != NULL && f == NULL; i++)
                f = verdict_finding(forged, verdict_cert_priority[i]);
            if (f != NULL) {
                /* Without a fault, the forgery only copies what the server's own leaf says. */
                bool copied = verdict_finding(v->findings, verdict_str(f, "id")) != NULL;
                verdict_ev_finding(v, f);
                verdict_set_cause(
                    v, verdict_str(f, "id"),
                    "The client rejected the certificate tlsfault forged (alert %s): %s%s.", desc,
                    verdict_str(f, "detail"),
                    copied ? " (copied from the server's own certificate, which has the same "
                             "problem)"
                           : "");
            } else {
                verdict_set_cause(
                    v, "cert_untrusted_root",
                    "The client rejected the certificate tlsfault forged (alert %s): it "
                    "does not trust tlsfault's lab CA; add the lab root (root.pem) to the "
                    "client's trust store.",
                    desc ? desc : "?");
                verdict_set_who(v, "proxy-config");
            }
            json_decref(forged);
            return true;
        }
        verdict_client_alert(v, a, "client");
        json_decref(a);
        return true;
    }
    const json_t *ta = json_object_get(m, "to_client_alert");
    if (ta != NULL && verdict_streq(verdict_str(m, "failed_at"), "client")) {
        json_t *a = json_deep_copy(ta);
        json_object_set_new_nocheck(a, "dir", tf_json_name("s2c"));
        verdict_server_alert(v, a, "client");
        json_decref(a);
        verdict_set_who(v, "proxy-config");
        return true;
    }
    if (verdict_contains_any(err, verdict_tamper_alerts) ||
        (err && strcasestr(err, "bad record mac"))) {
        verdict_set_cause(v, "record_tampering", "Records were damaged on the way: %s.", err);
        return true;
    }
    return false;
}

/* ------------------------------------------------------------ faults */

/* What a fault looks like to the client; NULL: as the evidence shows. */
static const struct {
    const char *fault;
    const char *underlying;
} verdict_fault_rows[] = {
    {"drop-server-hello", "server_silent"},
    {"reset-after-client-hello", "server_reset_after_hello"},
    {"close-after-client-hello", "server_closed_after_hello"},
    {"plaintext-response", "not_tls_server"},
    {"record-version-too-high", "version_mismatch"},
    {"strip-intermediates", "cert_missing_intermediate"},
    {"append-bytes", "record_tampering"},
    {"corrupt", "record_tampering"},
    {"truncate", "record_tampering"},
    {"duplicate", "record_tampering"},
    {"cert-expired", "cert_expired"},
    {"cert-not-yet-valid", "cert_not_yet_valid"},
    {"cert-wrong-host", "cert_wrong_host"},
    {"cert-self-signed", "cert_self_signed"},
    {"cert-untrusted-root", "cert_untrusted_root"},
    {"cert-no-intermediate", "cert_missing_intermediate"},
    {"cert-wrong-eku", "cert_wrong_eku"},
    {"cert-sha1", "cert_weak_signature"},
    {"cert-weak-key", "cert_weak_key"},
    {"server-versions", "version_mismatch"},
    {"server-ciphers", "no_shared_cipher"},
    {"require-sni", "sni_required"},
    /* as the evidence shows, else: */
    {"downgrade", NULL},
    {"strip-ciphers", NULL},
    {"strip-sni", NULL},
};

/* Faults that hold the bytes the inspector has already seen. */
static const char *const verdict_shaping_faults[] = {"stall", "delay", "bandwidth", "slice", NULL};

/* Faults that rewrite the ClientHello: the Finished checks fail unless the server refuses it. */
static const char *const verdict_hello_rewrites[] = {"strip-sni", "strip-alpn", "strip-ciphers",
                                                     "downgrade", NULL};

/* When the evidence says nothing specific: what the fault usually comes to. */
static const char *
verdict_fault_fallback(const char *fault)
{
    if (verdict_streq(fault, "downgrade"))
        return "downgrade_detected";
    if (verdict_streq(fault, "strip-ciphers"))
        return "no_shared_cipher";
    if (verdict_streq(fault, "strip-sni"))
        return "sni_required";
    return "server_aborted";
}

static const char *
verdict_fault_row(const char *fault)
{
    for (size_t i = 0; i < VERDICT_N(verdict_fault_rows); i++)
        if (verdict_streq(verdict_fault_rows[i].fault, fault))
            return verdict_fault_rows[i].underlying;
    return NULL;
}

/* The alert an "alert" fault sent, from its action ("... alert handshake_failure ..."). */
static const char *
verdict_fault_alert(const char *action, bool has_sni)
{
    const char *p = action ? strstr(action, "alert ") : NULL;
    char desc[48];
    size_t n = 0;
    if (p == NULL)
        return "server_aborted";
    p += 6;
    while (p[n] && p[n] != ' ' && n + 1 < sizeof(desc)) {
        desc[n] = p[n];
        n++;
    }
    desc[n] = '\0';
    if (strcmp(desc, "protocol_version") == 0)
        return "version_mismatch";
    if (strcmp(desc, "handshake_failure") == 0 || strcmp(desc, "insufficient_security") == 0)
        return "no_shared_cipher";
    if (strcmp(desc, "unrecognized_name") == 0)
        return has_sni ? "unrecognized_name" : "sni_required";
    if (strcmp(desc, "inappropriate_fallback") == 0)
        return "downgrade_detected";
    if (verdict_one_of(desc, verdict_tamper_alerts))
        return "record_tampering";
    if (verdict_one_of(desc, verdict_cert_alerts))
        return "cert_rejected";
    return "server_aborted";
}

static void verdict_analyse(struct verdict *v);

/* The rule that ended the flow if one did ("... (rule NAME) ..." in error), else the first. */
static const json_t *
verdict_fault_primary(const json_t *faults, const char *error)
{
    size_t i;
    json_t *f;
    json_array_foreach(faults, i, f)
    {
        char needle[200];
        snprintf(needle, sizeof(needle), "(rule %s)", verdict_str_or(f, "rule", ""));
        if (error != NULL && strstr(error, needle) != NULL)
            return f;
    }
    return json_array_get(faults, 0);
}

static void
verdict_injected(struct verdict *v, const json_t *faults, json_t *out)
{
    const json_t *f = verdict_fault_primary(faults, verdict_str(v->facts, "error"));
    const char *fault = verdict_str(f, "fault");
    const char *rule = verdict_str(f, "rule");
    const char *action = verdict_str(f, "action");
    const char *under = verdict_fault_row(fault);
    struct verdict u = *v;
    size_t i;
    json_t *x;

    /* What the client met, as if the fault's doing were the server's. */
    u.ignore_faults = true;
    u.evidence = json_array();
    u.cause = NULL;
    u.who_set = false;
    if (verdict_streq(u.how, "fault")) {
        u.closed_by = "server";
        u.how = verdict_str_or(v->facts, "fault_end", "fin");
    }
    verdict_analyse(&u);
    if (verdict_streq(fault, "alert")) {
        under = verdict_fault_alert(action, verdict_str(v->facts, "sni") != NULL);
    } else if (verdict_one_of(fault, verdict_shaping_faults)) {
        /* The inspector saw the server's bytes before they were held: no evidence here. */
        under = v->complete ? "server_timeout" : "server_silent";
    } else if (verdict_one_of(fault, verdict_hello_rewrites) &&
               verdict_streq(u.cause, "cert_rejected")) {
        /* An encrypted alert after a rewritten hello: the transcripts differ, not the chain. */
        under = "handshake_tampered";
    } else if (under == NULL) {
        under = u.cause;
        if (under == NULL || verdict_streq(under, "handshake_ok") ||
            verdict_streq(under, "server_aborted") || verdict_streq(under, "client_aborted"))
            under = u.cause != NULL && !verdict_streq(u.cause, "handshake_ok")
                        ? u.cause
                        : verdict_fault_fallback(fault);
    }
    json_array_foreach(faults, i, x) verdict_ev(
        v, json_pack("{s:s, s:s?, s:s?, s:s?}", "event", "fault", "rule", verdict_str(x, "rule"),
                     "fault", verdict_str(x, "fault"), "action", verdict_str(x, "action")));
    json_array_extend(v->evidence, u.evidence);
    json_decref(u.evidence);
    const struct tf_verdict_cause *row = tf_verdict_cause(under);
    /* The client's view as a clause: "the server never answered ...", without the full stop. */
    size_t n = strlen(u.summary);
    if (n > 0 && u.summary[n - 1] == '.')
        u.summary[n - 1] = '\0';
    if (strncmp(u.summary, "The ", 4) == 0)
        u.summary[0] = 't';
    verdict_set_cause(v, "injected",
                      "Injected by rule %s (fault %s: %s); to the client it looks like %s: %s.",
                      rule ? rule : "?", fault ? fault : "?", action ? action : "fired", under,
                      verdict_streq(u.cause, under) ? u.summary
                      : row                         ? row->meaning
                                                    : "");
    json_object_set_new_nocheck(out, "rule", tf_json_string(rule ? rule : "?"));
    json_object_set_new_nocheck(out, "fault", tf_json_string(fault ? fault : "?"));
    json_object_set_new_nocheck(out, "underlying", tf_json_string(under));
}

/* ------------------------------------------------------------ the order */

static void
verdict_analyse(struct verdict *v)
{
    const char *state = verdict_str(v->facts, "state");

    if (v->complete) {
        if (!verdict_not_tls(v))
            verdict_after_handshake(v);
        return;
    }
    if (verdict_streq(state, "connecting") && verdict_streq(v->closed_by, "proxy") &&
        (verdict_streq(v->how, "error") || verdict_streq(v->how, "timeout"))) {
        verdict_unreachable(v);
        return;
    }
    if (verdict_streq(verdict_str(v->facts, "mode"), "mitm") && verdict_mitm(v))
        return;
    if (verdict_not_tls(v))
        return;
    const char *first = verdict_str(v->facts, "server_spoke_first");
    if (first != NULL) {
        /* TLS from the server before the client's hello: a client answers a client. */
        verdict_ev_str(v, "server_first_message", first);
        verdict_set_cause(v, "server_spoke_first",
                          "The server spoke first, before the client's ClientHello, and sent a "
                          "TLS %s: a TLS server waits for the client's hello, so the upstream's "
                          "port is a TLS client (two clients facing each other), not a server.",
                          first);
        return;
    }
    json_t *a = verdict_first_fatal(v);
    if (a != NULL) {
        if (verdict_streq(verdict_str(a, "dir"), "s2c"))
            verdict_server_alert(v, a, NULL);
        else
            verdict_client_alert(v, a, NULL);
        return;
    }
    const json_t *pa = json_object_get(v->facts, "c2s_protected_alert");
    if (pa != NULL) {
        json_t *e = json_pack("{s:s, s:b, s:I, s:s}", "dir", "c2s", "encrypted", 1, "length",
                              verdict_int(pa, "length", 0), "inferred", "size");
        verdict_ev_alert(v, e, NULL);
        json_decref(e);
        verdict_cert_refine(v, NULL,
                            "an encrypted alert right after the server's flight, which carries "
                            "the certificate");
        return;
    }
    verdict_closed_early(v);
}

json_t *
tf_verdict_build(const json_t *facts, time_t now)
{
    struct verdict v;
    json_t *out = json_object();
    const json_t *faults = json_object_get(facts, "faults");
    const char *outcome = verdict_str_or(facts, "outcome", "failed");
    const json_t *mf = json_object_get(facts, "mitm_facts");
    json_t *probe = json_object_get(facts, "probe");

    memset(&v, 0, sizeof(v));
    v.facts = facts;
    v.now = now;
    v.closed_by = verdict_str(facts, "closed_by");
    v.how = verdict_str(facts, "close");
    v.complete = verdict_streq(verdict_str(facts, "handshake"), "complete");
    v.sni = verdict_str(facts, "sni");
    v.evidence = json_array();
    /* The real server's chain: mitm's upstream leg, a clear Certificate, or the probe's. */
    if (json_is_array(json_object_get(mf, "upstream_chain"))) {
        v.chain = json_object_get(mf, "upstream_chain");
        v.chain_source = "upstream";
    } else if (json_is_array(json_object_get(facts, "server_chain")) &&
               !verdict_streq(verdict_str(facts, "mode"), "mitm")) {
        v.chain = json_object_get(facts, "server_chain");
        v.chain_source = "handshake";
    } else if (json_is_array(json_object_get(probe, "chain"))) {
        v.chain = json_object_get(probe, "chain");
        v.chain_source = "probe";
    }
    v.findings = v.chain ? tf_verdict_lint(v.chain, v.sni, now, v.chain_source) : json_array();
    json_t *forged = json_object_get(mf, "forged_chain");
    v.seen_findings = json_is_array(forged) ? tf_verdict_lint(forged, v.sni, now, "forged")
                                            : json_incref(v.findings);

    json_object_set_new_nocheck(out, "outcome",
                                tf_json_string(outcome)); /* the place; value at the end */
    /* Not about the certificate, but the same kind of advice: an obsolete protocol. */
    unsigned negotiated = verdict_version_code(verdict_str(facts, "version"));
    if (negotiated != 0 && negotiated < 0x0303)
        json_array_append_new(v.findings,
                              json_pack("{s:s, s:s, s:s}", "id", "protocol_deprecated", "severity",
                                        "warning", "detail",
                                        negotiated == 0x300
                                            ? "the server negotiated SSL 3.0 (RFC 7568 forbids it)"
                                            : "the server negotiated a TLS version older than 1.2, "
                                              "deprecated by RFC 8996"));
    json_object_set_new_nocheck(
        out, "stage", tf_json_string(verdict_str_or(facts, "stage", "before any TLS message")));
    if (verdict_true(facts, "refused")) {
        verdict_ev_str(&v, "error", verdict_str(facts, "error"));
        verdict_set_cause(&v, "refused_by_route", "tlsfault's route refused the connection: %s.",
                          verdict_str_or(facts, "error", "refused"));
    } else if (verdict_streq(v.how, "shutdown")) {
        verdict_ev_close(&v);
        verdict_set_cause(&v, "proxy_shutdown",
                          "tlsfault was stopping and closed the connection%s.",
                          v.complete ? " after the handshake" : " during the handshake");
    } else if (json_array_size(faults) > 0 && !verdict_streq(outcome, "ok")) {
        verdict_injected(&v, faults, out);
    } else {
        verdict_analyse(&v);
        if (json_array_size(faults) > 0 && verdict_streq(v.outcome, "failed")) {
            /* It looked fine to tlsfault, but the client left: the fault's doing after all. */
            json_array_clear(v.evidence);
            v.who_set = false;
            verdict_injected(&v, faults, out);
        } else if (json_array_size(faults) > 0) {
            size_t i;
            json_t *x;
            json_array_foreach(faults, i, x)
                verdict_ev(&v, json_pack("{s:s, s:s?, s:s?, s:s?}", "event", "fault", "rule",
                                         verdict_str(x, "rule"), "fault", verdict_str(x, "fault"),
                                         "action", verdict_str(x, "action")));
        }
    }
    if (v.cause == NULL)
        verdict_set_cause(&v, "server_aborted", "The connection ended %s.", outcome);
    json_object_set_new_nocheck(out, "outcome", tf_json_string(v.outcome ? v.outcome : outcome));
    const struct tf_verdict_cause *row = tf_verdict_cause(v.cause);
    const char *who = v.who_set ? v.who : row->who_fixes;
    json_object_set_new_nocheck(out, "cause", tf_json_name(v.cause)); /* a table id */
    json_object_set_new_nocheck(out, "who_fixes", who ? tf_json_string(who) : json_null());
    json_object_set_new_nocheck(out, "summary", tf_json_string(v.summary));
    json_decref(v.seen_findings);
    json_object_set_new_nocheck(out, "evidence", v.evidence);
    json_object_set_new_nocheck(out, "findings", v.findings);
    if (v.chain_source != NULL)
        json_object_set_new_nocheck(out, "chain_source", tf_json_string(v.chain_source));
    if (probe != NULL) {
        json_t *p = json_object();
        const char *k;
        json_t *val;
        json_object_foreach(probe, k, val)
        {
            if (strcmp(k, "chain") == 0)
                json_object_set_new_nocheck(p, "chain_length",
                                            json_integer((json_int_t)json_array_size(val)));
            else
                json_object_set(p, k, val);
        }
        json_object_set_new_nocheck(out, "probe", p);
    }
    return out;
}
