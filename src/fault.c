/*
 * fault.c — the fault catalogue, rule parsing and rule matching.
 *
 * Job: the one table of faults (name, mode, parameters with defaults, what
 * the client sees), the parsers that turn the text a user writes (in the
 * file or in a --fault spec) into struct tf_fault_args and struct
 * tf_fault_match, and the decision whether a rule applies to a flow.  What
 * a fault does to the bytes is left to flow.c and rewrite.c; reading the
 * file is left to config.c, which converts each libconfig value to text
 * and comes here, so that the file and the command line share one parser
 * and one set of messages.
 *
 * Matching (docs/faults.md, "Match"): listener, client CIDR, original
 * destination (CIDR and port, known on redirect, tproxy and connect
 * listeners only) and SNI glob decide whether a flow counts; a counted
 * flow takes the next ordinal of the rule, on which nth/every/first are
 * judged and from which, with the seed, the probability draw is computed
 * (splitmix64), so that a run repeats exactly; times is enforced with a
 * compare-and-swap so that concurrent workers never fire a rule more
 * often than allowed.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <fnmatch.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tlsfault/fault.h"
#include "tlsfault/names.h"

#define FAULT_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define FAULT_QUOTE_MAX 68      /* a value quoted in a message: 64 bytes and "..." */
#define FAULT_BYTES_MAX 65536   /* an injected payload */
#define FAULT_POSITIONS_MAX 32  /* keep_mask has 32 bits */
#define FAULT_SPEC_PIECES_MAX 64

/* ------------------------------------------------------------ catalogue */

#define FAULT_FIELD_SIZE(field) sizeof(((struct tf_fault_args *)0)->field)
#define P(nm, ty, df, lo, hi, field, hp)                                                       \
    {                                                                                          \
        .name = (nm), .type = (ty), .def = (df), .min = (lo), .max = (hi),                     \
        .offset = offsetof(struct tf_fault_args, field), .size = FAULT_FIELD_SIZE(field),      \
        .help = (hp)                                                                           \
    }
#define PARAMS(...)                                                                            \
    .params = {__VA_ARGS__},                                                                   \
    .n_params = sizeof((struct tf_fault_param[]){__VA_ARGS__}) / sizeof(struct tf_fault_param)

/* Parameters several faults share, with the same meaning everywhere. */
#define DIR_PARAM(df) P("dir", TF_PARAM_DIR, df, 0, 0, dir, "direction watched: c2s, s2c or both")
#define AFTER_BYTES_PARAM                                                                      \
    P("after_bytes", TF_PARAM_UINT64, "0", 0, LLONG_MAX, after_bytes,                          \
      "start after this many bytes of dir")
#define RECORD_PARAM                                                                           \
    P("record", TF_PARAM_UINT, "0", 0, 1000000000, record,                                     \
      "Nth record of dir, 1-based; 0: the first application_data record")

#define SECONDS_PARAM(hp)                                                                      \
    P("seconds", TF_PARAM_UINT64, "2592000", 1, 3153600000LL, seconds, hp)

#define RECORD_BODY_MAX 16640 /* 2^14 + 256: the largest TLSCiphertext body (RFC 8446 §5.2) */

const struct tf_fault_def tf_fault_catalogue[] = {
    /* ---- network level, any mode */
    {TF_FAULT_DELAY, "delay", TF_FAULT_MODE_NETWORK, true,
     "holds every chunk for ms (+ uniform 0..jitter) before forwarding; order is kept",
     "a slow link; timeouts if longer than the client's",
     PARAMS(P("ms", TF_PARAM_UINT, "1000", 0, 3600000, ms, "milliseconds each chunk is held"),
            P("jitter", TF_PARAM_UINT, "0", 0, 3600000, jitter_ms,
              "up to this many milliseconds more, uniformly drawn"),
            DIR_PARAM("both"), AFTER_BYTES_PARAM)},
    {TF_FAULT_BANDWIDTH, "bandwidth", TF_FAULT_MODE_NETWORK, true,
     "forwards at most rate bytes per second", "a slow transfer",
     PARAMS(P("rate", TF_PARAM_UINT64, "10240", 1, LLONG_MAX, rate, "bytes per second"),
            DIR_PARAM("both"), AFTER_BYTES_PARAM)},
    {TF_FAULT_STALL, "stall", TF_FAULT_MODE_NETWORK, true,
     "stops forwarding; sockets stay open, bytes are read and withheld",
     "a hang, then the client's timeout (curl exit 28)",
     PARAMS(DIR_PARAM("both"), AFTER_BYTES_PARAM)},
    {TF_FAULT_RESET, "reset", TF_FAULT_MODE_NETWORK, true,
     "when a byte of dir arrives past after_bytes: RST (SO_LINGER 0) to `to`",
     "connection reset by peer (curl 35/56, ECONNRESET)",
     PARAMS(DIR_PARAM("c2s"), AFTER_BYTES_PARAM,
            P("to", TF_PARAM_PEER, "both", 0, 0, to, "who is reset: client, server or both"))},
    {TF_FAULT_CLOSE, "close", TF_FAULT_MODE_NETWORK, true,
     "when a byte of dir arrives past after_bytes: FIN to `to`",
     "unexpected EOF (curl 35 SSL_ERROR_SYSCALL; OpenSSL/Python \"unexpected eof while reading\")",
     PARAMS(DIR_PARAM("c2s"), AFTER_BYTES_PARAM,
            P("to", TF_PARAM_PEER, "both", 0, 0, to, "who is closed: client, server or both"))},
    {TF_FAULT_SLICE, "slice", TF_FAULT_MODE_NETWORK, true,
     "cuts writes into size-byte pieces, pause ms apart (TCP_NODELAY)",
     "nothing for a robust client; breaks those that expect whole records per read",
     PARAMS(P("size", TF_PARAM_UINT, "16", 1, 65536, size, "bytes per piece"),
            P("pause", TF_PARAM_UINT, "10", 0, 60000, pause_ms,
              "milliseconds between pieces"),
            DIR_PARAM("both"), AFTER_BYTES_PARAM)},

    /* ---- passthrough, on the wire */
    {TF_FAULT_DROP_SERVER_HELLO, "drop-server-hello", TF_FAULT_MODE_PASSTHROUGH, true,
     "withholds the ServerHello (or HelloRetryRequest) and everything after it; the "
     "connection stays open",
     "the missing Server Hello: a hang, then the client's timeout (curl 28)", .n_params = 0},
    {TF_FAULT_RESET_AFTER_CLIENT_HELLO, "reset-after-client-hello", TF_FAULT_MODE_PASSTHROUGH,
     true, "once the ClientHello is read: RST to the client; the hello never reaches the server",
     "connection reset (curl 35)", .n_params = 0},
    {TF_FAULT_CLOSE_AFTER_CLIENT_HELLO, "close-after-client-hello", TF_FAULT_MODE_PASSTHROUGH,
     true, "once the ClientHello is read: FIN to the client; the hello never reaches the server",
     "unexpected EOF during the handshake (curl 35 SSL_ERROR_SYSCALL, GnuTLS \"non-properly terminated\")", .n_params = 0},
    {TF_FAULT_ALERT, "alert", TF_FAULT_MODE_PASSTHROUGH, true,
     "after the `after` message, sends an alert to `to`: to its sender (the message is "
     "withheld), or to its receiver (the alert follows it); fatal closes the flow",
     "\"alert handshake failure\" / the description sent (curl 35)",
     PARAMS(P("description", TF_PARAM_ALERT, "handshake_failure", 0, 255, description,
              "alert description: an RFC name or a number"),
            P("level", TF_PARAM_ALERT_LEVEL, "fatal", 1, 2, level, "warning or fatal"),
            P("after", TF_PARAM_HS_TYPE, "client_hello", 0, 255, after,
              "handshake message that triggers the alert"),
            P("dir", TF_PARAM_DIR, "auto", 0, 0, dir,
              "direction of after; auto: its usual sender"),
            P("to", TF_PARAM_PEER, "client", 0, 0, to, "who receives the alert"))},
    {TF_FAULT_PLAINTEXT_RESPONSE, "plaintext-response", TF_FAULT_MODE_PASSTHROUGH, true,
     "answers the client's first bytes with an HTTP/1.1 response and FIN; nothing reaches the "
     "server",
     "\"wrong version number\" (curl 35, OpenSSL, Python); GnuTLS \"unexpected TLS packet\"",
     PARAMS(P("status", TF_PARAM_UINT, "400", 100, 599, status, "HTTP status code"),
            P("bytes", TF_PARAM_BYTES, "<html>Bad Request</html>\\r\\n",
              0, 0, bytes, "response body: text, or hex:..."))},
    {TF_FAULT_DOWNGRADE, "downgrade", TF_FAULT_MODE_PASSTHROUGH, true,
     "rewrites the ClientHello to offer at most version (supported_versions and "
     "legacy_version)",
     "a TLS 1.3 client sees the downgrade sentinel (\"inappropriate fallback\", GnuTLS "
     "\"detected downgrade\"); a 1.2 pair fails at Finished (alert bad_record_mac)",
     PARAMS(P("version", TF_PARAM_VERSION, "TLS1.2", 0x0300, 0x0304, version,
              "highest version left in the hello"),
            P("remove_extension", TF_PARAM_BOOL, "false", 0, 1, remove_extension,
              "drop supported_versions instead of editing it"))},
    {TF_FAULT_STRIP_CIPHERS, "strip-ciphers", TF_FAULT_MODE_PASSTHROUGH, true,
     "removes the suites whose IANA name matches a glob from the ClientHello",
     "alert handshake_failure when nothing is left in common; otherwise a Finished mismatch "
     "(bad_record_mac / decryption failed)",
     PARAMS(P("pattern", TF_PARAM_STRING, "*CHACHA20*", 0, 0, pattern,
              "globs on IANA suite names, separated by ':'"))},
    {TF_FAULT_STRIP_SNI, "strip-sni", TF_FAULT_MODE_PASSTHROUGH, true,
     "removes server_name from the ClientHello",
     "the server's answer to a hello without SNI (default certificate, unrecognized_name), "
     "then a transcript mismatch",
     .n_params = 0},
    {TF_FAULT_STRIP_ALPN, "strip-alpn", TF_FAULT_MODE_PASSTHROUGH, true,
     "removes ALPN from the ClientHello", "no ALPN agreed, then a transcript mismatch",
     .n_params = 0},
    {TF_FAULT_RECORD_VERSION_TOO_HIGH, "record-version-too-high", TF_FAULT_MODE_PASSTHROUGH,
     true,
     "raises the version of the ServerHello's record header (record), its legacy_version "
     "(hello) or both",
     "SSL_ERROR_RX_RECORD_VERSION_TOO_HIGH (NSS), \"wrong version number\" (OpenSSL)",
     PARAMS(P("version", TF_PARAM_VERSION, "0x0400", 0, 0xffff, version, "version written"),
            P("fields", TF_PARAM_STRING, "record", 0, 0, fields, "record, hello or both"))},
    {TF_FAULT_STRIP_INTERMEDIATES, "strip-intermediates", TF_FAULT_MODE_PASSTHROUGH, true,
     "rewrites a clear (TLS 1.2) Certificate to the listed positions (0 is the leaf)",
     "unable to get local issuer certificate (curl 60)",
     PARAMS(P("keep", TF_PARAM_POSITIONS, "leaf", 0, FAULT_POSITIONS_MAX - 1, keep_mask,
              "positions kept: leaf, or a list such as 0,2"))},
    {TF_FAULT_APPEND_BYTES, "append-bytes", TF_FAULT_MODE_PASSTHROUGH, true,
     "inserts bytes into the stream after the record",
     "\"wrong version number\" (curl 56, OpenSSL, Python) for text bytes; GnuTLS \"unexpected "
     "TLS packet\"",
     PARAMS(DIR_PARAM("s2c"), RECORD_PARAM,
            P("bytes", TF_PARAM_BYTES, "INSPECTED", 0, 0, bytes,
              "bytes inserted: text, or hex:..."))},
    {TF_FAULT_CORRUPT, "corrupt", TF_FAULT_MODE_PASSTHROUGH, true,
     "flips bits of one byte of the record's body", "bad record MAC (curl 56)",
     PARAMS(DIR_PARAM("s2c"), RECORD_PARAM,
            P("offset", TF_PARAM_INT, "0", -RECORD_BODY_MAX, RECORD_BODY_MAX - 1, offset,
              "byte of the body; negative counts from the end"),
            P("xor", TF_PARAM_UINT, "1", 1, 255, xor_mask, "bits flipped"))},
    {TF_FAULT_TRUNCATE, "truncate", TF_FAULT_MODE_PASSTHROUGH, true,
     "forwards only the first keep bytes of the record (header included), then FIN",
     "curl 52 \"Empty reply from server\"; OpenSSL \"unexpected eof while reading\"",
     PARAMS(DIR_PARAM("s2c"), RECORD_PARAM,
            P("keep", TF_PARAM_UINT, "0", 0, RECORD_BODY_MAX + 5, keep,
              "bytes kept, header included; 0: half"),
            P("then_close", TF_PARAM_BOOL, "true", 0, 1, then_close,
              "FIN after the cut record"))},
    {TF_FAULT_DUPLICATE, "duplicate", TF_FAULT_MODE_PASSTHROUGH, true, "sends the record again",
     "bad record MAC (sequence number) (curl 56)",
     PARAMS(DIR_PARAM("s2c"), RECORD_PARAM,
            P("times", TF_PARAM_UINT, "1", 1, 100, times, "extra copies"))},
    {TF_FAULT_FRAGMENT, "fragment", TF_FAULT_MODE_PASSTHROUGH, true,
     "re-splits clear handshake messages into records of at most size bytes (legal TLS)",
     "nothing for a correct client; fragile parsers fail",
     PARAMS(P("size", TF_PARAM_UINT, "16", 1, 16384, size, "largest record body"),
            DIR_PARAM("both"))},

    /* ---- mitm: the forged certificate and the client-facing leg */
    {TF_FAULT_CERT_EXPIRED, "cert-expired", TF_FAULT_MODE_MITM, true,
     "forges the leaf with a notAfter `seconds` in the past (notBefore a year before it)",
     "certificate has expired (curl 60)",
     PARAMS(SECONDS_PARAM("how long ago the certificate expired"))},
    {TF_FAULT_CERT_NOT_YET_VALID, "cert-not-yet-valid", TF_FAULT_MODE_MITM, true,
     "forges the leaf with a notBefore `seconds` in the future",
     "certificate is not yet valid (curl 60)",
     PARAMS(SECONDS_PARAM("how far in the future the certificate starts"))},
    {TF_FAULT_CERT_WRONG_HOST, "cert-wrong-host", TF_FAULT_MODE_MITM, true,
     "forges the leaf for `host` instead of the upstream's names (subjectAltName and CN)",
     "no alternative certificate subject name matches target host name (curl 60)",
     PARAMS(P("host", TF_PARAM_STRING, "wrong.host.invalid", 0, 0, host,
              "the name the certificate is for"))},
    {TF_FAULT_CERT_SELF_SIGNED, "cert-self-signed", TF_FAULT_MODE_MITM, true,
     "sends a leaf that signs itself, alone", "self-signed certificate (curl 60)",
     .n_params = 0},
    {TF_FAULT_CERT_UNTRUSTED_ROOT, "cert-untrusted-root", TF_FAULT_MODE_MITM, true,
     "signs the chain with the lab's second root, which clients do not trust",
     "unable to get local issuer certificate (curl 60)", .n_params = 0},
    {TF_FAULT_CERT_NO_INTERMEDIATE, "cert-no-intermediate", TF_FAULT_MODE_MITM, true,
     "sends the leaf without its intermediate (the incomplete chain)",
     "unable to get local issuer certificate (curl 60)", .n_params = 0},
    {TF_FAULT_CERT_WRONG_EKU, "cert-wrong-eku", TF_FAULT_MODE_MITM, true,
     "forges the leaf with extendedKeyUsage clientAuth only (no serverAuth)",
     "unsupported certificate purpose (curl 60)", .n_params = 0},
    {TF_FAULT_CERT_SHA1, "cert-sha1", TF_FAULT_MODE_MITM, true,
     "signs the leaf with SHA-1 (sha1WithRSAEncryption / ecdsa-with-SHA1)",
     "ca md too weak (curl 60)", .n_params = 0},
    {TF_FAULT_CERT_WEAK_KEY, "cert-weak-key", TF_FAULT_MODE_MITM, true,
     "forges the leaf with a 1024-bit RSA key", "ee key too small (curl 60)", .n_params = 0},
    {TF_FAULT_SERVER_VERSIONS, "server-versions", TF_FAULT_MODE_MITM, true,
     "the client-facing leg accepts only the versions from min to max (security level 0 "
     "there when below TLS 1.2)",
     "alert protocol version / unsupported protocol (curl 35)",
     PARAMS(P("min", TF_PARAM_VERSION, "TLS1.0", 0x0301, 0x0304, min_version,
              "lowest version accepted"),
            P("max", TF_PARAM_VERSION, "TLS1.0", 0x0301, 0x0304, version,
              "highest version accepted"))},
    {TF_FAULT_SERVER_CIPHERS, "server-ciphers", TF_FAULT_MODE_MITM, true,
     "the client-facing leg accepts only the given suites (defaults: suites common clients "
     "do not offer)",
     "alert handshake failure (curl 35)",
     PARAMS(P("ciphers", TF_PARAM_STRING, "AES128-CCM8", 0, 0, ciphers,
              "TLS 1.2 and below: an OpenSSL cipher string"),
            P("ciphersuites", TF_PARAM_STRING, "TLS_AES_128_CCM_8_SHA256", 0, 0, ciphersuites,
              "TLS 1.3: OpenSSL ciphersuites, separated by ':'"))},
    {TF_FAULT_REQUIRE_SNI, "require-sni", TF_FAULT_MODE_MITM, true,
     "the client-facing leg refuses a ClientHello without server_name",
     "alert unrecognized name (curl 35)", .n_params = 0},
};

const size_t tf_fault_catalogue_len = FAULT_ARRAY_LEN(tf_fault_catalogue);

#undef P
#undef PARAMS

/* Keys of struct tf_fault_match, in the order messages list them. */
static const char *const fault_match_keys[] = {
    "listener", "client", "dest", "dest_port", "sni", "nth", "every", "first", "probability",
    "seed", "times",
};

/* Words a STRING parameter may take, when it is not free text. */
static const struct {
    size_t offset;
    const char *words[4];
    const char *shown; /* "record, hello or both" */
} fault_string_choices[] = {
    {offsetof(struct tf_fault_args, fields), {"record", "hello", "both", NULL},
     "record, hello or both"},
};

/* The handshake messages a fault can wait for (names as in the events). */
static const struct {
    const char *name;
    uint8_t type;
} fault_hs_types[] = {
    {"client_hello", 1},         {"server_hello", 2},         {"hello_retry_request", 2},
    {"new_session_ticket", 4},   {"encrypted_extensions", 8}, {"certificate", 11},
    {"server_key_exchange", 12}, {"certificate_request", 13}, {"server_hello_done", 14},
    {"certificate_verify", 15},  {"client_key_exchange", 16}, {"finished", 20},
    {"certificate_status", 22},
};

static const struct {
    const char *name;
    uint16_t version;
} fault_versions[] = {
    {"SSL3.0", 0x0300}, {"TLS1.0", 0x0301}, {"TLS1.1", 0x0302},
    {"TLS1.2", 0x0303}, {"TLS1.3", 0x0304},
};

/* ------------------------------------------------------------ helpers */

static bool __attribute__((format(printf, 3, 4)))
fault_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return false;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return false;
}

/* Long values are cut short in messages so that the reason after them survives. */
static const char *
fault_quote(char *buf, size_t n, const char *v)
{
    if (strlen(v) < n)
        return v;
    snprintf(buf, n, "%.*s...", (int)(n - 4), v);
    return buf;
}

/*
 * Whether s is UTF-8 (RFC 3629: no overlongs, surrogates or code points
 * above U+10FFFF).  Free-text values must be: the control API shows them
 * as JSON strings, which are UTF-8.
 */
static bool
fault_utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p != '\0') {
        unsigned c = *p, n, min;
        uint32_t cp;
        if (c < 0x80) {
            p++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            min = 0x80;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            min = 0x800;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            min = 0x10000;
            cp = c & 0x07;
        } else {
            return false;
        }
        for (unsigned i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (p[i] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        p += n + 1;
    }
    return true;
}

/* Appends "a, b, c" style items to buf; what does not fit is cut off. */
static void
fault_list_add(char *buf, size_t len, size_t *used, const char *item)
{
    if (len == 0 || *used >= len)
        return;
    int w = snprintf(buf + *used, len - *used, "%s%s", *used > 0 ? ", " : "", item);
    if (w < 0)
        return;
    *used += (size_t)w;
    if (*used >= len)
        *used = len;
}

static bool
fault_is_match_key(const char *key)
{
    for (size_t i = 0; i < FAULT_ARRAY_LEN(fault_match_keys); i++)
        if (strcmp(fault_match_keys[i], key) == 0)
            return true;
    return false;
}

static const struct tf_fault_param *
fault_param(const struct tf_fault_def *def, const char *key)
{
    for (size_t i = 0; i < def->n_params; i++)
        if (strcmp(def->params[i].name, key) == 0)
            return &def->params[i];
    return NULL;
}

/*
 * Decimal integer with an optional '-', nothing else: "1e3", "0x10", " 5"
 * and "5ms" are typos, not numbers.  *overflow tells "too large" from "not
 * a number".
 */
static bool
fault_parse_integer(const char *s, long long *out, bool *overflow)
{
    bool neg = false;
    unsigned long long v = 0;

    *overflow = false;
    if (*s == '-') {
        neg = true;
        s++;
    }
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return false;
        unsigned d = (unsigned)(*s - '0');
        if (v > (ULLONG_MAX - d) / 10)
            *overflow = true;
        else
            v = v * 10 + d;
    }
    if (*overflow || v > (unsigned long long)LLONG_MAX + (neg ? 1u : 0u)) {
        *overflow = true;
        return true;
    }
    *out = neg ? (long long)(0 - v) : (long long)v;
    return true;
}

/* Same for an unsigned 64-bit value (seeds, counts), without a sign. */
static bool
fault_parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;

    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return false;
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static void
fault_store_uint(void *p, size_t size, unsigned long long v)
{
    switch (size) {
    case 1: *(uint8_t *)p = (uint8_t)v; break;
    case 2: *(uint16_t *)p = (uint16_t)v; break;
    case 4: *(uint32_t *)p = (uint32_t)v; break;
    default: *(uint64_t *)p = (uint64_t)v; break;
    }
}

static int
fault_hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* ------------------------------------------------------------ value parsers */

/*
 * Each parser reads value for param p; on success it has stored the result
 * into args, on failure it has written why into err and left args alone.
 */
typedef bool fault_parse_fn(const struct tf_fault_param *p, const char *value,
                            struct tf_fault_args *args, char *err, size_t errlen);

static bool
fault_parse_dir(const struct tf_fault_param *p, const char *v, struct tf_fault_args *args,
                char *err, size_t errlen)
{
    static const struct {
        const char *name;
        enum tf_fault_dir dir;
    } words[] = {{"c2s", TF_FAULT_DIR_C2S}, {"s2c", TF_FAULT_DIR_S2C}, {"both", TF_FAULT_DIR_BOTH}};
    char q[FAULT_QUOTE_MAX];
    enum tf_fault_dir *slot = (enum tf_fault_dir *)((char *)args + p->offset);
    bool auto_ok = p->def != NULL && strcmp(p->def, "auto") == 0;

    for (size_t i = 0; i < FAULT_ARRAY_LEN(words); i++)
        if (strcmp(v, words[i].name) == 0) {
            *slot = words[i].dir;
            return true;
        }
    if (auto_ok && strcmp(v, "auto") == 0) {
        *slot = 0;
        return true;
    }
    return fault_fail(err, errlen, "\"%s\" must be c2s, s2c%s both, not \"%s\"", p->name,
                      auto_ok ? ", auto or" : " or", fault_quote(q, sizeof(q), v));
}

static bool
fault_parse_peer(const struct tf_fault_param *p, const char *v, struct tf_fault_args *args,
                 char *err, size_t errlen)
{
    static const struct {
        const char *name;
        enum tf_fault_peer peer;
    } words[] = {{"client", TF_FAULT_PEER_CLIENT},
                 {"server", TF_FAULT_PEER_SERVER},
                 {"both", TF_FAULT_PEER_BOTH}};
    char q[FAULT_QUOTE_MAX];

    for (size_t i = 0; i < FAULT_ARRAY_LEN(words); i++)
        if (strcmp(v, words[i].name) == 0) {
            *(enum tf_fault_peer *)((char *)args + p->offset) = words[i].peer;
            return true;
        }
    return fault_fail(err, errlen, "\"%s\" must be client, server or both, not \"%s\"", p->name,
                      fault_quote(q, sizeof(q), v));
}

static bool
fault_parse_number(const struct tf_fault_param *p, const char *v, long long *out, char *err,
                   size_t errlen)
{
    char q[FAULT_QUOTE_MAX];
    bool overflow;
    long long n = 0;

    if (!fault_parse_integer(v, &n, &overflow))
        return fault_fail(err, errlen, "\"%s\" must be an integer, not \"%s\"", p->name,
                          fault_quote(q, sizeof(q), v));
    if (overflow || n < p->min || n > p->max)
        return fault_fail(err, errlen, "\"%s\" must be between %lld and %lld, not %s", p->name,
                          p->min, p->max, fault_quote(q, sizeof(q), v));
    *out = n;
    return true;
}

static bool
fault_parse_uint(const struct tf_fault_param *p, const char *v, struct tf_fault_args *args,
                 char *err, size_t errlen)
{
    long long n;

    if (!fault_parse_number(p, v, &n, err, errlen))
        return false;
    fault_store_uint((char *)args + p->offset, p->size, (unsigned long long)n);
    return true;
}

static bool
fault_parse_int(const struct tf_fault_param *p, const char *v, struct tf_fault_args *args,
                char *err, size_t errlen)
{
    long long n;

    if (!fault_parse_number(p, v, &n, err, errlen))
        return false;
    *(long *)((char *)args + p->offset) = (long)n;
    return true;
}

/* Shared by parameters and the command line's words: true/false, yes/no, on/off, 1/0. */
static bool
fault_bool_word(const char *v, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};

    for (size_t i = 0; i < FAULT_ARRAY_LEN(yes); i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

static bool
fault_parse_bool(const struct tf_fault_param *p, const char *v, struct tf_fault_args *args,
                 char *err, size_t errlen)
{
    char q[FAULT_QUOTE_MAX];
    bool b;

    if (!fault_bool_word(v, &b))
        return fault_fail(err, errlen, "\"%s\" must be true or false, not \"%s\"", p->name,
                          fault_quote(q, sizeof(q), v));
    *(bool *)((char *)args + p->offset) = b;
    return true;
}

static bool
fault_set_string(char **slot, const char *v, char *err, size_t errlen)
{
    char *copy = strdup(v);
    if (copy == NULL)
        return fault_fail(err, errlen, "out of memory");
    free(*slot);
    *slot = copy;
    return true;
}

static bool
fault_parse_string(const struct tf_fault_param *p, const char *v, struct tf_fault_args *args,
                   char *err, size_t errlen)
{
    char q[FAULT_QUOTE_MAX];
    char **slot = (char **)((char *)args + p->offset);

    if (*v == '\0')
        return fault_fail(err, errlen, "\"%s\" must not be empty", p->name);
    if (!fault_utf8_valid(v))
        return fault_fail(err, errlen, "\"%s\" must be UTF-8 text", p->name);
    for (size_t i = 0; i < FAULT_ARRAY_LEN(fault_string_choices); i++) {
        if (fault_string_choices[i].offset != p->offset)
            continue;
        bool found = false;
        for (size_t w = 0; fault_string_choices[i].words[w] != NULL; w++)
            found = found || strcmp(fault_string_choices[i].words[w], v) == 0;
        if (!found)
            return fault_fail(err, errlen, "\"%s\" must be %s, not \"%s\"", p->name,
                              fault_string_choices[i].shown, fault_quote(q, sizeof(q), v));
    }
    return fault_set_string(slot, v, err, errlen);
}

/*
 * "hex:16 03 01" (pairs of hex digits; ' ' and ':' may separate bytes) or
 * text, in which \r, \n, \t, \\ and \xHH stand for what they do in C.
 */
static bool
fault_parse_bytes(const struct tf_fault_param *p, const char *v, struct tf_fault_args *args,
                  char *err, size_t errlen)
{
    char q[FAULT_QUOTE_MAX];
    size_t n = strlen(v), len = 0;
    uint8_t *out;

    if (n == 0)
        return fault_fail(err, errlen, "\"%s\" must not be empty", p->name);
    out = malloc(n);
    if (out == NULL)
        return fault_fail(err, errlen, "out of memory");
    if (strncmp(v, "hex:", 4) == 0) {
        for (const char *s = v + 4; *s != '\0';) {
            if (*s == ' ' || *s == ':') {
                s++;
                continue;
            }
            int hi = fault_hex_digit(s[0]);
            int lo = hi >= 0 ? fault_hex_digit(s[1]) : -1;
            if (lo < 0) {
                free(out);
                return fault_fail(err, errlen,
                                  "\"%s\" must be pairs of hex digits after \"hex:\", not \"%s\"",
                                  p->name, fault_quote(q, sizeof(q), v));
            }
            out[len++] = (uint8_t)(hi << 4 | lo);
            s += 2;
        }
        if (len == 0) {
            free(out);
            return fault_fail(err, errlen, "\"%s\" must not be empty", p->name);
        }
    } else {
        for (const char *s = v; *s != '\0'; s++) {
            if (*s != '\\') {
                out[len++] = (uint8_t)*s;
                continue;
            }
            int hi = s[1] == 'x' ? fault_hex_digit(s[2]) : -1;
            int lo = hi >= 0 ? fault_hex_digit(s[3]) : -1;
            if (lo >= 0) {
                out[len++] = (uint8_t)(hi << 4 | lo);
                s += 3;
                continue;
            }
            switch (s[1]) {
            case 'r': out[len++] = '\r'; break;
            case 'n': out[len++] = '\n'; break;
            case 't': out[len++] = '\t'; break;
            case '\\': out[len++] = '\\'; break;
            default:
                free(out);
                return fault_fail(err, errlen,
                                  "\"%s\" has an unknown escape in \"%s\" (use \\r, \\n, \\t, "
                                  "\\\\ or \\xHH)",
                                  p->name, fault_quote(q, sizeof(q), v));
            }
            s++;
        }
    }
    if (len > FAULT_BYTES_MAX) {
        free(out);
        return fault_fail(err, errlen, "\"%s\" is too long (%zu bytes, at most %d)", p->name, len,
                          FAULT_BYTES_MAX);
    }
    /* Only one byte string per args: bytes, with its length beside it. */
    free(args->bytes);
    args->bytes = out;
    args->bytes_len = len;
    return true;
}

/* "TLS1.2", "tls1.3", "TLS 1.2", "1.2", "SSL3.0", "0x0303". */
static bool
fault_version_word(const char *v, uint16_t *out)
{
    if (v[0] == '0' && (v[1] == 'x' || v[1] == 'X')) {
        unsigned x = 0;
        size_t digits = 0;
        for (const char *s = v + 2; *s != '\0'; s++, digits++) {
            int d = fault_hex_digit(*s);
            if (d < 0 || digits >= 4)
                return false;
            x = x << 4 | (unsigned)d;
        }
        if (digits == 0)
            return false;
        *out = (uint16_t)x;
        return true;
    }
    const char *num = v;
    bool ssl = false;
    if (strncasecmp(v, "tls", 3) == 0)
        num = v + 3;
    else if (strncasecmp(v, "ssl", 3) == 0) {
        num = v + 3;
        ssl = true;
    }
    if (num != v && *num == ' ')
        num++;
    for (size_t i = 0; i < FAULT_ARRAY_LEN(fault_versions); i++) {
        bool is_ssl = fault_versions[i].version == 0x0300;
        if (ssl != is_ssl && num != v)
            continue;
        if (num == v && is_ssl)
            continue; /* a bare "3.0" could mean anything */
        if (strcmp(num, fault_versions[i].name + 3) == 0) {
            *out = fault_versions[i].version;
            return true;
        }
    }
    return false;
}

bool
tf_fault_parse_version(const char *text, uint16_t *out)
{
    return text != NULL && out != NULL && fault_version_word(text, out);
}

const char *
tf_fault_version_name(uint16_t version, char *buf, size_t len)
{
    for (size_t i = 0; i < FAULT_ARRAY_LEN(fault_versions); i++)
        if (fault_versions[i].version == version)
            return fault_versions[i].name;
    snprintf(buf, len, "0x%04x", version);
    return buf;
}

static bool
fault_parse_version(const struct tf_fault_param *p, const char *v, struct tf_fault_args *args,
                    char *err, size_t errlen)
{
    char q[FAULT_QUOTE_MAX];
    uint16_t ver;

    if (!fault_version_word(v, &ver))
        return fault_fail(err, errlen,
                          "\"%s\" must be a version (SSL3.0, TLS1.0 to TLS1.3, or 0x0303), not "
                          "\"%s\"",
                          p->name, fault_quote(q, sizeof(q), v));
    if (ver < p->min || ver > p->max) {
        char lo[16], hi[16];
        return fault_fail(err, errlen, "\"%s\" must be from %s to %s, not \"%s\"", p->name,
                          tf_fault_version_name((uint16_t)p->min, lo, sizeof(lo)),
                          tf_fault_version_name((uint16_t)p->max, hi, sizeof(hi)),
                          fault_quote(q, sizeof(q), v));
    }
    *(uint16_t *)((char *)args + p->offset) = ver;
    return true;
}

/* A name from names.c's alert table, or a number 0-255. */
static bool
fault_parse_alert(const struct tf_fault_param *p, const char *v, struct tf_fault_args *args,
                  char *err, size_t errlen)
{
    char q[FAULT_QUOTE_MAX];
    long long n;
    bool overflow;

    for (unsigned code = 0; code <= 255; code++) {
        const char *name = tf_names_alert((uint8_t)code);
        if (name != NULL && strcmp(name, v) == 0) {
            *(uint8_t *)((char *)args + p->offset) = (uint8_t)code;
            return true;
        }
    }
    if (fault_parse_integer(v, &n, &overflow) && !overflow && n >= 0 && n <= 255) {
        *(uint8_t *)((char *)args + p->offset) = (uint8_t)n;
        return true;
    }
    return fault_fail(err, errlen,
                      "\"%s\" must be an alert name (handshake_failure, protocol_version, "
                      "internal_error, ...) or a number 0-255, not \"%s\"",
                      p->name, fault_quote(q, sizeof(q), v));
}

static bool
fault_parse_alert_level(const struct tf_fault_param *p, const char *v,
                        struct tf_fault_args *args, char *err, size_t errlen)
{
    char q[FAULT_QUOTE_MAX];
    uint8_t level;

    if (strcmp(v, "warning") == 0 || strcmp(v, "1") == 0)
        level = 1;
    else if (strcmp(v, "fatal") == 0 || strcmp(v, "2") == 0)
        level = 2;
    else
        return fault_fail(err, errlen, "\"%s\" must be warning or fatal, not \"%s\"", p->name,
                          fault_quote(q, sizeof(q), v));
    *(uint8_t *)((char *)args + p->offset) = level;
    return true;
}

static bool
fault_parse_hs_type(const struct tf_fault_param *p, const char *v, struct tf_fault_args *args,
                    char *err, size_t errlen)
{
    char q[FAULT_QUOTE_MAX];
    char valid[512];
    size_t used = 0;

    for (size_t i = 0; i < FAULT_ARRAY_LEN(fault_hs_types); i++)
        if (strcmp(fault_hs_types[i].name, v) == 0) {
            *(int *)((char *)args + p->offset) = fault_hs_types[i].type;
            return true;
        }
    valid[0] = '\0';
    for (size_t i = 0; i < FAULT_ARRAY_LEN(fault_hs_types); i++)
        fault_list_add(valid, sizeof(valid), &used, fault_hs_types[i].name);
    return fault_fail(err, errlen, "\"%s\" must be a handshake message (%s), not \"%s\"", p->name,
                      valid, fault_quote(q, sizeof(q), v));
}

/* "leaf", or positions such as "0,2" (0 is the leaf); spaces around them are fine. */
static bool
fault_parse_positions(const struct tf_fault_param *p, const char *v, struct tf_fault_args *args,
                      char *err, size_t errlen)
{
    char q[FAULT_QUOTE_MAX];
    uint32_t mask = 0;
    const char *s = v;

    if (strcmp(v, "leaf") == 0) {
        *(uint32_t *)((char *)args + p->offset) = 1;
        return true;
    }
    for (;;) {
        unsigned n = 0;
        size_t digits = 0;
        while (*s == ' ')
            s++;
        while (*s >= '0' && *s <= '9' && digits < 3) {
            n = n * 10 + (unsigned)(*s - '0');
            s++;
            digits++;
        }
        while (*s == ' ')
            s++;
        if (digits == 0 || n >= FAULT_POSITIONS_MAX || (*s != ',' && *s != '\0'))
            return fault_fail(err, errlen,
                              "\"%s\" must be leaf or a list of certificate positions 0-%d (0 is "
                              "the leaf), not \"%s\"",
                              p->name, FAULT_POSITIONS_MAX - 1, fault_quote(q, sizeof(q), v));
        mask |= (uint32_t)1 << n;
        if (*s == '\0')
            break;
        s++;
    }
    *(uint32_t *)((char *)args + p->offset) = mask;
    return true;
}

static fault_parse_fn *const fault_parsers[] = {
    [TF_PARAM_DIR] = fault_parse_dir,
    [TF_PARAM_PEER] = fault_parse_peer,
    [TF_PARAM_UINT] = fault_parse_uint,
    [TF_PARAM_UINT64] = fault_parse_uint,
    [TF_PARAM_INT] = fault_parse_int,
    [TF_PARAM_BOOL] = fault_parse_bool,
    [TF_PARAM_STRING] = fault_parse_string,
    [TF_PARAM_BYTES] = fault_parse_bytes,
    [TF_PARAM_VERSION] = fault_parse_version,
    [TF_PARAM_ALERT] = fault_parse_alert,
    [TF_PARAM_ALERT_LEVEL] = fault_parse_alert_level,
    [TF_PARAM_HS_TYPE] = fault_parse_hs_type,
    [TF_PARAM_POSITIONS] = fault_parse_positions,
};

/* ------------------------------------------------------------ catalogue look-ups */

const struct tf_fault_def *
tf_fault_find(const char *name)
{
    if (name == NULL)
        return NULL;
    for (size_t i = 0; i < tf_fault_catalogue_len; i++)
        if (strcmp(tf_fault_catalogue[i].name, name) == 0)
            return &tf_fault_catalogue[i];
    return NULL;
}

void
tf_fault_names(char *buf, size_t len)
{
    size_t used = 0;

    if (buf == NULL || len == 0)
        return;
    buf[0] = '\0';
    for (size_t i = 0; i < tf_fault_catalogue_len; i++)
        if (tf_fault_catalogue[i].available)
            fault_list_add(buf, len, &used, tf_fault_catalogue[i].name);
}

const char *
tf_fault_mode_name(enum tf_fault_mode mode)
{
    switch (mode) {
    case TF_FAULT_MODE_NETWORK:
        return "network";
    case TF_FAULT_MODE_PASSTHROUGH:
        return "passthrough";
    case TF_FAULT_MODE_MITM:
        return "mitm";
    }
    return "?";
}

/* ------------------------------------------------------------ --list-faults */

#define FAULT_COL_NAME 26
#define FAULT_COL_MODE 13
#define FAULT_INDENT_SEES 4
#define FAULT_WIDTH 79

/*
 * Writes text in the column that starts at indent, breaking at spaces so
 * that no line passes FAULT_WIDTH.  A space inside double quotes does not
 * break ("bytes=\"a b\"" stays whole), nor does a word longer than the
 * column.  The first line continues wherever the cursor already is.
 */
static void
fault_print_wrapped(FILE *out, const char *text, int indent)
{
    int width = FAULT_WIDTH - indent;
    int col = 0;
    const char *s = text;

    while (*s != '\0') {
        while (*s == ' ')
            s++;
        const char *end = s;
        bool quoted = false;
        while (*end != '\0' && (quoted || *end != ' ')) {
            if (*end == '"')
                quoted = !quoted;
            end++;
        }
        int wlen = (int)(end - s);
        if (wlen == 0)
            break;
        if (col > 0 && col + 1 + wlen > width) {
            fprintf(out, "\n%*s", indent, "");
            col = 0;
        } else if (col > 0) {
            fputc(' ', out);
            col++;
        }
        fwrite(s, 1, (size_t)wlen, out);
        col += wlen;
        s = end;
    }
    fputc('\n', out);
}

/* "ms=1000 jitter=0 ..." with values that hold spaces in quotes. */
static void
fault_param_summary(const struct tf_fault_def *def, char *buf, size_t len)
{
    size_t used = 0;

    buf[0] = '\0';
    if (def->n_params == 0) {
        snprintf(buf, len, "(no parameters)");
        return;
    }
    for (size_t i = 0; i < def->n_params && used < len; i++) {
        const struct tf_fault_param *p = &def->params[i];
        bool quote = strchr(p->def, ' ') != NULL;
        int w = snprintf(buf + used, len - used, "%s%s=%s%s%s", i > 0 ? " " : "", p->name,
                         quote ? "\"" : "", p->def, quote ? "\"" : "");
        if (w < 0)
            break;
        used += (size_t)w;
    }
}

/*
 * Two lines per fault (more when they wrap): name, mode and parameters
 * with their defaults, then, indented, what the client sees.
 */
void
tf_fault_print_catalogue(FILE *out)
{
    char params[1024];
    int indent = FAULT_COL_NAME + FAULT_COL_MODE;
    bool unavailable = false;

    fprintf(out, "%-*s%-*s%s\n%*s%s\n\n", FAULT_COL_NAME, "FAULT", FAULT_COL_MODE, "MODE",
            "PARAMETERS (DEFAULTS)", FAULT_INDENT_SEES, "", "what the client sees");
    for (size_t i = 0; i < tf_fault_catalogue_len; i++) {
        const struct tf_fault_def *d = &tf_fault_catalogue[i];
        char mode[32];

        snprintf(mode, sizeof(mode), "%s%s", tf_fault_mode_name(d->mode),
                 d->available ? "" : " (*)");
        unavailable = unavailable || !d->available;
        fprintf(out, "%-*s%-*s", FAULT_COL_NAME, d->name, FAULT_COL_MODE, mode);
        fault_param_summary(d, params, sizeof(params));
        fault_print_wrapped(out, params, indent);
        fprintf(out, "%*s", FAULT_INDENT_SEES, "");
        fault_print_wrapped(out, d->client_sees, FAULT_INDENT_SEES);
    }
    if (unavailable)
        fputs("\n(*) not available in this version.", out);
    fputs("\n"
          "network faults act on bytes in any mode; passthrough faults act on clear TLS\n"
          "records and handshake messages (on a mitm listener: the raw client leg); mitm\n"
          "faults need a listener with mode \"mitm\" and act on the forged certificate or\n"
          "the client-facing leg.  Use a fault with --fault NAME:key=value,... or in the\n"
          "faults list of the configuration file; see tlsfault.conf(5).\n",
          out);
}

/* ------------------------------------------------------------ rules */

static void
fault_rule_destroy(struct tf_fault_rule *rule)
{
    for (size_t i = 0; i < rule->n_given; i++) {
        free(rule->given_keys[i]);
        free(rule->given_values[i]);
    }
    free(rule->given_keys);
    free(rule->given_values);
    free(rule->name);
    free(rule->args.pattern);
    free(rule->args.fields);
    free(rule->args.bytes);
    free(rule->args.host);
    free(rule->args.ciphers);
    free(rule->args.ciphersuites);
    free(rule->match.listener);
    free(rule->match.sni);
    free(rule);
}

struct tf_fault_rule *
tf_fault_rule_ref(struct tf_fault_rule *rule)
{
    if (rule != NULL)
        atomic_fetch_add(&rule->refs, 1);
    return rule;
}

void
tf_fault_rule_unref(struct tf_fault_rule *rule)
{
    /* fetch_sub returns the count before the drop: 1 means we were last. */
    if (rule != NULL && atomic_fetch_sub(&rule->refs, 1) == 1)
        fault_rule_destroy(rule);
}

void
tf_fault_rule_free(struct tf_fault_rule *rule)
{
    tf_fault_rule_unref(rule);
}

/*
 * Remembers that key was set to value (replacing an earlier value of the
 * same key), for tf_fault_rule_rebuild and the control API.
 */
static bool
fault_given_set(struct tf_fault_rule *rule, const char *key, const char *value, char *err,
                size_t errlen)
{
    char *v = strdup(value);
    if (v == NULL)
        return fault_fail(err, errlen, "out of memory");
    for (size_t i = 0; i < rule->n_given; i++)
        if (strcmp(rule->given_keys[i], key) == 0) {
            free(rule->given_values[i]);
            rule->given_values[i] = v;
            return true;
        }
    char *k = strdup(key);
    char **keys = realloc(rule->given_keys, (rule->n_given + 1) * sizeof(*keys));
    if (keys != NULL)
        rule->given_keys = keys;
    char **values = keys != NULL ? realloc(rule->given_values, (rule->n_given + 1) *
                                                                    sizeof(*values))
                                 : NULL;
    if (values != NULL)
        rule->given_values = values;
    if (k == NULL || keys == NULL || values == NULL) {
        free(k);
        free(v);
        return fault_fail(err, errlen, "out of memory");
    }
    rule->given_keys[rule->n_given] = k;
    rule->given_values[rule->n_given] = v;
    rule->n_given++;
    return true;
}

/* The value given for key, or NULL. */
static const char *
fault_given(const struct tf_fault_rule *rule, const char *key)
{
    for (size_t i = 0; i < rule->n_given; i++)
        if (strcmp(rule->given_keys[i], key) == 0)
            return rule->given_values[i];
    return NULL;
}

static bool
fault_set_param(struct tf_fault_rule *rule, const struct tf_fault_param *p, const char *value,
                char *err, size_t errlen)
{
    if ((size_t)p->type >= FAULT_ARRAY_LEN(fault_parsers) || fault_parsers[p->type] == NULL)
        return fault_fail(err, errlen, "\"%s\" has no parser", p->name);
    return fault_parsers[p->type](p, value, &rule->args, err, errlen);
}

struct tf_fault_rule *
tf_fault_rule_new(const struct tf_fault_def *def, const char *name)
{
    struct tf_fault_rule *rule;
    char err[256];

    if (def == NULL)
        return NULL;
    rule = calloc(1, sizeof(*rule));
    if (rule == NULL)
        return NULL;
    rule->def = def;
    rule->name = strdup(name != NULL ? name : def->name);
    rule->args.after = -1;
    rule->match.probability = 1.0;
    rule->match.seed = 1;
    rule->enabled = true;
    atomic_init(&rule->refs, 1);
    atomic_init(&rule->seen, 0);
    atomic_init(&rule->fired, 0);
    if (rule->name == NULL)
        goto fail;
    for (size_t i = 0; i < def->n_params; i++)
        if (!fault_set_param(rule, &def->params[i], def->params[i].def, err, sizeof(err)))
            goto fail; /* a catalogue bug; test_fault checks every default */
    return rule;
fail:
    tf_fault_rule_free(rule);
    return NULL;
}

bool
tf_fault_name_valid(const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || n > TF_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

bool
tf_fault_rule_set(struct tf_fault_rule *rule, const char *key, const char *value,
                  bool match_key_allowed, char *err, size_t errlen)
{
    const struct tf_fault_def *def = rule->def;
    const struct tf_fault_param *p;
    char q[FAULT_QUOTE_MAX];

    if (key == NULL || value == NULL)
        return fault_fail(err, errlen, "missing key or value");
    if ((p = fault_param(def, key)) != NULL)
        return fault_set_param(rule, p, value, err, errlen) &&
               fault_given_set(rule, p->name, value, err, errlen);
    if (match_key_allowed) {
        if (strncmp(key, "match.", 6) == 0 && fault_is_match_key(key + 6))
            return tf_fault_rule_set_match(rule, key + 6, value, err, errlen);
        if (fault_is_match_key(key))
            return tf_fault_rule_set_match(rule, key, value, err, errlen);
        if (strcmp(key, "name") == 0) {
            if (!tf_fault_name_valid(value))
                return fault_fail(err, errlen,
                                  "name \"%s\" is not valid (use 1-64 letters, digits, \".\", "
                                  "\"_\" or \"-\")",
                                  fault_quote(q, sizeof(q), value));
            return fault_set_string(&rule->name, value, err, errlen);
        }
    }

    char valid[512];
    size_t used = 0;
    valid[0] = '\0';
    for (size_t i = 0; i < def->n_params; i++)
        fault_list_add(valid, sizeof(valid), &used, def->params[i].name);
    if (match_key_allowed) {
        fault_list_add(valid, sizeof(valid), &used, "name");
        for (size_t i = 0; i < FAULT_ARRAY_LEN(fault_match_keys); i++)
            fault_list_add(valid, sizeof(valid), &used, fault_match_keys[i]);
    }
    if (used == 0)
        return fault_fail(err, errlen, "unknown parameter \"%s\": fault \"%s\" takes none",
                          fault_quote(q, sizeof(q), key), def->name);
    return fault_fail(err, errlen, "unknown parameter \"%s\" for fault \"%s\"; valid: %s",
                      fault_quote(q, sizeof(q), key), def->name, valid);
}

/* ------------------------------------------------------------ match keys */

/*
 * "10.0.0.0/8", "::1", "fd00::/64".  Stored as given (AF_INET or
 * AF_INET6); bits past the prefix must be zero, because "10.0.0.1/8" is
 * more likely a typo for a host than a wish for the whole network.
 */
static bool
fault_parse_cidr(const char *key, const char *v, struct sockaddr_storage *net, unsigned *prefix,
                 char *err, size_t errlen)
{
    char q[FAULT_QUOTE_MAX];
    char host[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(v, '/');
    size_t hlen = slash != NULL ? (size_t)(slash - v) : strlen(v);
    uint8_t bytes[16];
    size_t nbytes;
    int family;
    unsigned bits, max;

    if (hlen == 0 || hlen >= sizeof(host))
        goto bad;
    memcpy(host, v, hlen);
    host[hlen] = '\0';
    if (inet_pton(AF_INET, host, bytes) == 1) {
        family = AF_INET;
        nbytes = 4;
    } else if (inet_pton(AF_INET6, host, bytes) == 1) {
        family = AF_INET6;
        nbytes = 16;
    } else {
        goto bad;
    }
    max = (unsigned)nbytes * 8;
    bits = max;
    if (slash != NULL) {
        long long n;
        bool overflow;
        if (slash[1] == '-' || !fault_parse_integer(slash + 1, &n, &overflow))
            goto bad;
        if (overflow || n > (long long)max)
            return fault_fail(err, errlen, "\"%s\" prefix /%s is too long for %s (at most /%u)",
                              key, fault_quote(q, sizeof(q), slash + 1),
                              family == AF_INET ? "IPv4" : "IPv6", max);
        bits = (unsigned)n;
    }
    for (unsigned i = bits; i < max; i++)
        if (bytes[i / 8] & (0x80u >> (i % 8))) {
            char fixed[INET6_ADDRSTRLEN];
            for (unsigned j = bits; j < max; j++)
                bytes[j / 8] &= (uint8_t) ~(0x80u >> (j % 8));
            inet_ntop(family, bytes, fixed, sizeof(fixed));
            return fault_fail(err, errlen,
                              "\"%s\" \"%s\" has bits set past the /%u prefix (did you mean "
                              "%s/%u?)",
                              key, fault_quote(q, sizeof(q), v), bits, fixed, bits);
        }
    memset(net, 0, sizeof(*net));
    if (family == AF_INET) {
        struct sockaddr_in sin;
        memset(&sin, 0, sizeof(sin));
        sin.sin_family = AF_INET;
        memcpy(&sin.sin_addr, bytes, 4);
        memcpy(net, &sin, sizeof(sin));
    } else {
        struct sockaddr_in6 sin6;
        memset(&sin6, 0, sizeof(sin6));
        sin6.sin6_family = AF_INET6;
        memcpy(&sin6.sin6_addr, bytes, 16);
        memcpy(net, &sin6, sizeof(sin6));
    }
    *prefix = bits;
    return true;
bad:
    return fault_fail(err, errlen,
                      "\"%s\" must be an address or CIDR (10.0.0.0/8, ::1, fd00::/64), not "
                      "\"%s\"",
                      key, fault_quote(q, sizeof(q), v));
}

/* A count: 1 or more. */
static bool
fault_parse_count(const char *key, const char *v, uint64_t *out, char *err, size_t errlen)
{
    char q[FAULT_QUOTE_MAX];
    uint64_t n;

    if (!fault_parse_u64(v, &n) || n == 0)
        return fault_fail(err, errlen, "\"%s\" must be an integer of at least 1, not \"%s\"", key,
                          fault_quote(q, sizeof(q), v));
    *out = n;
    return true;
}

static bool
fault_set_match(struct tf_fault_rule *rule, const char *key, const char *value, char *err,
                size_t errlen)
{
    struct tf_fault_match *m = &rule->match;
    char q[FAULT_QUOTE_MAX];

    if (key == NULL || value == NULL)
        return fault_fail(err, errlen, "missing key or value");
    if ((strcmp(key, "listener") == 0 || strcmp(key, "sni") == 0) && !fault_utf8_valid(value))
        return fault_fail(err, errlen, "\"%s\" must be UTF-8 text", key);
    if (strcmp(key, "listener") == 0) {
        if (*value == '\0')
            return fault_fail(err, errlen, "\"listener\" must not be empty");
        return fault_set_string(&m->listener, value, err, errlen);
    }
    if (strcmp(key, "client") == 0)
        return fault_parse_cidr(key, value, &m->net, &m->prefix, err, errlen);
    if (strcmp(key, "dest") == 0)
        return fault_parse_cidr(key, value, &m->dest, &m->dest_prefix, err, errlen);
    if (strcmp(key, "dest_port") == 0) {
        uint64_t port;
        if (!fault_parse_u64(value, &port) || port < 1 || port > 65535)
            return fault_fail(err, errlen, "\"dest_port\" must be a port from 1 to 65535, not "
                              "\"%s\"", fault_quote(q, sizeof(q), value));
        m->dest_port = (uint16_t)port;
        return true;
    }
    if (strcmp(key, "sni") == 0) {
        if (*value == '\0')
            return fault_fail(err, errlen, "\"sni\" must not be empty (write \"absent\" for "
                                           "hellos without SNI)");
        return fault_set_string(&m->sni, value, err, errlen);
    }
    if (strcmp(key, "nth") == 0)
        return fault_parse_count(key, value, &m->nth, err, errlen);
    if (strcmp(key, "every") == 0)
        return fault_parse_count(key, value, &m->every, err, errlen);
    if (strcmp(key, "first") == 0)
        return fault_parse_count(key, value, &m->first, err, errlen);
    if (strcmp(key, "times") == 0)
        return fault_parse_count(key, value, &m->times, err, errlen);
    if (strcmp(key, "seed") == 0) {
        if (!fault_parse_u64(value, &m->seed))
            return fault_fail(err, errlen,
                              "\"seed\" must be an integer from 0 to 18446744073709551615, not "
                              "\"%s\"",
                              fault_quote(q, sizeof(q), value));
        return true;
    }
    if (strcmp(key, "probability") == 0) {
        char *end = NULL;
        double p = *value != '\0' && !isspace((unsigned char)*value) ? strtod(value, &end) : NAN;
        /* !(p >= 0 && p <= 1) also refuses NaN; strtod's hex floats and "inf" go with it. */
        if (isnan(p) || *end != '\0' || !(p >= 0.0 && p <= 1.0) ||
            strpbrk(value, "xXnN") != NULL)
            return fault_fail(err, errlen,
                              "\"probability\" must be a number from 0 to 1, not \"%s\"",
                              fault_quote(q, sizeof(q), value));
        m->probability = p;
        return true;
    }

    char valid[256];
    size_t used = 0;
    valid[0] = '\0';
    for (size_t i = 0; i < FAULT_ARRAY_LEN(fault_match_keys); i++)
        fault_list_add(valid, sizeof(valid), &used, fault_match_keys[i]);
    return fault_fail(err, errlen, "unknown key \"%s\" in match; valid keys: %s",
                      fault_quote(q, sizeof(q), key), valid);
}

bool
tf_fault_rule_set_match(struct tf_fault_rule *rule, const char *key, const char *value,
                        char *err, size_t errlen)
{
    char given[32];

    if (!fault_set_match(rule, key, value, err, errlen))
        return false;
    snprintf(given, sizeof(given), "match.%s", key); /* key is one of fault_match_keys */
    return fault_given_set(rule, given, value, err, errlen);
}

enum tf_fault_dir
tf_fault_usual_sender(int hs_type)
{
    switch (hs_type) {
    case 1:  /* client_hello */
    case 5:  /* end_of_early_data */
    case 15: /* certificate_verify: only the client's is in clear (TLS 1.2) */
    case 16: /* client_key_exchange */
        return TF_FAULT_DIR_C2S;
    case 20: /* finished: both send one */
    case 24: /* key_update */
        return TF_FAULT_DIR_BOTH;
    default:
        return TF_FAULT_DIR_S2C;
    }
}

void
tf_fault_rule_complete(struct tf_fault_rule *rule)
{
    if (rule == NULL)
        return;
    if (rule->args.dir == 0 && fault_param(rule->def, "dir") != NULL)
        rule->args.dir = tf_fault_usual_sender(rule->args.after);
}

bool
tf_fault_rule_check(const struct tf_fault_rule *rule, char *err, size_t errlen)
{
    char a[16], b[16];

    if (rule == NULL)
        return fault_fail(err, errlen, "no rule");
    if (rule->def->id == TF_FAULT_SERVER_VERSIONS && rule->args.min_version > rule->args.version)
        return fault_fail(err, errlen, "\"min\" (%s) is above \"max\" (%s)",
                          tf_fault_version_name(rule->args.min_version, a, sizeof(a)),
                          tf_fault_version_name(rule->args.version, b, sizeof(b)));
    return true;
}

/* ------------------------------------------------------------ the spec */

/*
 * Splits the part after "NAME:" into key=value pieces, in place.  A ','
 * ends a piece unless escaped as "\,"; a piece without '=' belongs to the
 * value before it ("keep=0,2", "pattern=*RC4*,*DES*").
 */
static bool
fault_spec_split(char *s, char **keys, char **values, size_t *n, char *err, size_t errlen)
{
    char q[FAULT_QUOTE_MAX];
    char *w = s; /* write cursor: unescaping shortens the text */
    char *piece = s;
    size_t count = 0;

    for (char *r = s;; r++) {
        if (r[0] == '\\' && r[1] == ',') {
            *w++ = ',';
            r++;
            continue;
        }
        if (*r != ',' && *r != '\0') {
            *w++ = *r;
            continue;
        }
        bool last = *r == '\0';
        *w = '\0';
        char *eq = strchr(piece, '=');
        if (eq == NULL && count > 0 && *piece != '\0') {
            /* Continues the value before: put the comma back. */
            piece[-1] = ',';
        } else {
            /* Keys may be padded with spaces: "ms=1, dir=s2c". */
            while (*piece == ' ')
                piece++;
            if (eq == NULL || eq == piece)
                return fault_fail(err, errlen, "expected key=value, not \"%s\"",
                                  fault_quote(q, sizeof(q), piece));
            char *kend = eq;
            while (kend > piece && kend[-1] == ' ')
                kend--;
            *kend = '\0';
            if (count == FAULT_SPEC_PIECES_MAX)
                return fault_fail(err, errlen, "too many parameters (at most %d)",
                                  FAULT_SPEC_PIECES_MAX);
            keys[count] = piece;
            values[count] = eq + 1;
            count++;
        }
        if (last)
            break;
        w++;
        piece = w;
    }
    *n = count;
    return true;
}

struct tf_fault_rule *
tf_fault_rule_parse_spec(const char *spec, const char *default_name, char *err, size_t errlen)
{
    char q[FAULT_QUOTE_MAX];
    char names[1024];
    char *copy = NULL;
    struct tf_fault_rule *rule = NULL;
    char *keys[FAULT_SPEC_PIECES_MAX], *values[FAULT_SPEC_PIECES_MAX];
    size_t n = 0;

    if (spec == NULL || *spec == '\0') {
        fault_fail(err, errlen, "empty fault spec (expected NAME or NAME:key=value,...)");
        return NULL;
    }
    copy = strdup(spec);
    if (copy == NULL) {
        fault_fail(err, errlen, "out of memory");
        return NULL;
    }
    char *rest = strchr(copy, ':');
    if (rest != NULL)
        *rest++ = '\0';

    const struct tf_fault_def *def = tf_fault_find(copy);
    if (def == NULL) {
        tf_fault_names(names, sizeof(names));
        fault_fail(err, errlen, "fault \"%s\" is unknown; valid: %s",
                   fault_quote(q, sizeof(q), copy), names);
        goto fail;
    }
    if (!def->available) {
        fault_fail(err, errlen, "fault \"%s\" needs mode %s, which is not available in this "
                   "version", def->name, tf_fault_mode_name(def->mode));
        goto fail;
    }
    if (rest != NULL && *rest == '\0') {
        fault_fail(err, errlen, "expected key=value after \"%s:\"", def->name);
        goto fail;
    }
    if (rest != NULL && !fault_spec_split(rest, keys, values, &n, err, errlen))
        goto fail;
    rule = tf_fault_rule_new(def, default_name != NULL ? default_name : def->name);
    if (rule == NULL) {
        fault_fail(err, errlen, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < i; j++)
            if (strcmp(keys[i], keys[j]) == 0) {
                fault_fail(err, errlen, "\"%s\" is given twice",
                           fault_quote(q, sizeof(q), keys[i]));
                goto fail;
            }
        if (!tf_fault_rule_set(rule, keys[i], values[i], true, err, errlen))
            goto fail;
    }
    tf_fault_rule_complete(rule);
    if (!tf_fault_rule_check(rule, err, errlen))
        goto fail;
    free(copy);
    return rule;
fail:
    tf_fault_rule_free(rule);
    free(copy);
    return NULL;
}

/* ------------------------------------------------------------ matching */

/* SplitMix64 (Steele, Lea, Flood 2014): one good 64-bit mix per call, no state. */
static uint64_t
fault_splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* Both sides as 16 bytes, IPv4 as ::ffff:a.b.c.d, so a v4 rule also meets v4-mapped clients. */
static bool
fault_addr16(const struct sockaddr *sa, uint8_t out[16], unsigned *extra_bits)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)sa;
        memset(out, 0, 10);
        out[10] = 0xff;
        out[11] = 0xff;
        memcpy(out + 12, &sin->sin_addr, 4);
        *extra_bits = 96;
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)(const void *)sa;
        memcpy(out, &sin6->sin6_addr, 16);
        *extra_bits = 0;
        return true;
    }
    return false;
}

/* Whether addr lies in net/prefix; a v4 network also takes v4-mapped v6 addresses. */
static bool
fault_in_net(const struct sockaddr_storage *netss, unsigned prefix, const struct sockaddr *sa)
{
    uint8_t net[16], addr[16];
    unsigned extra, unused;

    if (sa == NULL || !fault_addr16((const struct sockaddr *)netss, net, &extra) ||
        !fault_addr16(sa, addr, &unused))
        return false;
    unsigned bits = prefix + extra;
    size_t whole = bits / 8;
    if (memcmp(net, addr, whole) != 0)
        return false;
    if (bits % 8 == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - bits % 8));
    return (net[whole] & mask) == (addr[whole] & mask);
}

/* The port of an AF_INET or AF_INET6 address, host order; 0 for anything else. */
static uint16_t
fault_port(const struct sockaddr *sa)
{
    if (sa == NULL)
        return 0;
    if (sa->sa_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)(const void *)sa)->sin_port);
    if (sa->sa_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)(const void *)sa)->sin6_port);
    return 0;
}

/*
 * Contract in fault.h.  Order matters and is the documented one: the
 * criteria that do not count (listener, client, dest, dest_port, SNI)
 * first; then the flow takes an ordinal; then nth/every/first and the
 * draw on that ordinal; times last, so that it counts only flows the rule
 * applies to.
 */
enum tf_fault_decision
tf_fault_rule_decide(struct tf_fault_rule *rule, const struct tf_fault_flow_info *flow,
                     bool sni_known, const char *sni)
{
    const struct tf_fault_match *m = &rule->match;

    if (!rule->enabled)
        return TF_FAULT_NO;
    if (m->listener != NULL &&
        (flow == NULL || flow->listener == NULL || strcmp(m->listener, flow->listener) != 0))
        return TF_FAULT_NO;
    if (m->net.ss_family != 0 &&
        (flow == NULL || !fault_in_net(&m->net, m->prefix, flow->client)))
        return TF_FAULT_NO;
    /* No original destination (forward and sni listeners): dest rules never match. */
    if (m->dest.ss_family != 0 &&
        (flow == NULL || !fault_in_net(&m->dest, m->dest_prefix, flow->dest)))
        return TF_FAULT_NO;
    if (m->dest_port != 0 && (flow == NULL || fault_port(flow->dest) != m->dest_port))
        return TF_FAULT_NO;
    if (m->sni != NULL) {
        if (!sni_known)
            return TF_FAULT_LATER;
        if (strcmp(m->sni, "absent") == 0) {
            if (sni != NULL)
                return TF_FAULT_NO;
        } else if (sni == NULL || fnmatch(m->sni, sni, FNM_CASEFOLD) != 0) {
            return TF_FAULT_NO;
        }
    }

    uint64_t ordinal = atomic_fetch_add(&rule->seen, 1) + 1;
    if (m->nth != 0 && ordinal != m->nth)
        return TF_FAULT_NO;
    if (m->every != 0 && ordinal % m->every != 0)
        return TF_FAULT_NO;
    if (m->first != 0 && ordinal > m->first)
        return TF_FAULT_NO;
    if (m->probability < 1.0) {
        /* The top 53 bits as a double in [0, 1). */
        double draw = (double)(fault_splitmix64(m->seed ^ ordinal) >> 11) * 0x1.0p-53;
        if (!(draw < m->probability))
            return TF_FAULT_NO;
    }
    if (m->times == 0) {
        atomic_fetch_add(&rule->fired, 1);
        return TF_FAULT_YES;
    }
    uint_fast64_t fired = atomic_load(&rule->fired);
    do {
        if (fired >= m->times)
            return TF_FAULT_NO;
    } while (!atomic_compare_exchange_weak(&rule->fired, &fired, fired + 1));
    return TF_FAULT_YES;
}

/* ------------------------------------------------------------ JSON (control API) */

static const char *const fault_param_type_names[] = {
    [TF_PARAM_DIR] = "dir",           [TF_PARAM_PEER] = "peer",
    [TF_PARAM_UINT] = "uint",         [TF_PARAM_UINT64] = "uint64",
    [TF_PARAM_INT] = "int",           [TF_PARAM_BOOL] = "bool",
    [TF_PARAM_STRING] = "string",     [TF_PARAM_BYTES] = "bytes",
    [TF_PARAM_VERSION] = "version",   [TF_PARAM_ALERT] = "alert",
    [TF_PARAM_ALERT_LEVEL] = "alert_level", [TF_PARAM_HS_TYPE] = "handshake_type",
    [TF_PARAM_POSITIONS] = "positions",
};

/* Top-level keys of a rule object besides its parameters. */
static const char *const fault_json_keys[] = {"name", "fault", "enabled", "params", "match"};

/*
 * A parameter's or match key's text as JSON: a number where the value is
 * one, a boolean for booleans, else the string.  Returns a new reference.
 */
static json_t *
fault_json_value(const char *text, bool integer, bool real, bool boolean)
{
    if (integer) {
        long long n;
        bool overflow = false;
        if (fault_parse_integer(text, &n, &overflow) && !overflow)
            return json_integer((json_int_t)n);
    }
    if (real) {
        char *end = NULL;
        double d = strtod(text, &end);
        if (end != text && *end == '\0')
            return json_real(d);
    }
    bool b;
    if (boolean && fault_bool_word(text, &b))
        return json_boolean(b);
    return json_string(text);
}

/*
 * Bytes given as text that is not UTF-8 ("\xc5" in the file) cannot be a
 * JSON string: shown as "hex:..." instead, which reads back the same.
 */
static json_t *
fault_bytes_hex(const uint8_t *b, size_t n)
{
    char *text = malloc(4 + 2 * n + 1);
    json_t *v;

    if (text == NULL)
        return NULL;
    memcpy(text, "hex:", 4);
    for (size_t i = 0; i < n; i++)
        snprintf(text + 4 + 2 * i, 3, "%02x", b[i]);
    text[4 + 2 * n] = '\0';
    v = json_string(text);
    free(text);
    return v;
}

static json_t *
fault_param_json(const struct tf_fault_param *p, const char *text)
{
    bool integer = p->type == TF_PARAM_UINT || p->type == TF_PARAM_UINT64 ||
                   p->type == TF_PARAM_INT;
    return fault_json_value(text, integer, false, p->type == TF_PARAM_BOOL);
}

static json_t *
fault_match_json(const char *key, const char *text)
{
    bool integer = strcmp(key, "nth") == 0 || strcmp(key, "every") == 0 ||
                   strcmp(key, "first") == 0 || strcmp(key, "times") == 0 ||
                   strcmp(key, "seed") == 0 || strcmp(key, "dest_port") == 0;
    return fault_json_value(text, integer, strcmp(key, "probability") == 0, false);
}

json_t *
tf_fault_catalogue_json(void)
{
    json_t *out = json_array();

    for (size_t i = 0; i < tf_fault_catalogue_len; i++) {
        const struct tf_fault_def *d = &tf_fault_catalogue[i];
        json_t *params = json_array();
        for (size_t k = 0; k < d->n_params; k++) {
            const struct tf_fault_param *p = &d->params[k];
            json_t *o = json_pack("{s:s, s:s, s:o, s:s}", "name", p->name, "type",
                                  fault_param_type_names[p->type], "default",
                                  fault_param_json(p, p->def), "help", p->help);
            if (p->type == TF_PARAM_UINT || p->type == TF_PARAM_UINT64 ||
                p->type == TF_PARAM_INT) {
                json_object_set_new_nocheck(o, "min", json_integer((json_int_t)p->min));
                json_object_set_new_nocheck(o, "max", json_integer((json_int_t)p->max));
            }
            json_array_append_new(params, o);
        }
        json_array_append_new(out, json_pack("{s:s, s:s, s:b, s:s, s:s, s:o}", "name", d->name,
                                             "mode", tf_fault_mode_name(d->mode), "available",
                                             d->available, "help", d->help, "client_sees",
                                             d->client_sees, "params", params));
    }
    return out;
}

json_t *
tf_fault_rule_json(const struct tf_fault_rule *rule)
{
    json_t *params = json_object();
    json_t *match = json_object();

    for (size_t i = 0; i < rule->def->n_params; i++) {
        const struct tf_fault_param *p = &rule->def->params[i];
        const char *v = fault_given(rule, p->name);
        json_t *value = fault_param_json(p, v != NULL ? v : p->def);
        if (value == NULL && p->type == TF_PARAM_BYTES)
            value = fault_bytes_hex(rule->args.bytes, rule->args.bytes_len);
        json_object_set_new(params, p->name, value != NULL ? value : json_null());
    }
    for (size_t i = 0; i < rule->n_given; i++)
        if (strncmp(rule->given_keys[i], "match.", 6) == 0)
            json_object_set_new(match, rule->given_keys[i] + 6,
                                fault_match_json(rule->given_keys[i] + 6, rule->given_values[i]));
    json_t *o = json_pack("{s:s, s:s, s:s, s:b, s:o, s:o, s:I, s:I}", "name", rule->name, "fault",
                          rule->def->name, "mode", tf_fault_mode_name(rule->def->mode),
                          "enabled", rule->enabled, "params", params, "match", match, "seen",
                          (json_int_t)atomic_load(&rule->seen), "fired",
                          (json_int_t)atomic_load(&rule->fired));
    if (rule->line > 0)
        json_object_set_new_nocheck(o, "line", json_integer(rule->line));
    return o;
}

const char *
tf_fault_number_text(double v, char *buf, size_t len)
{
    if (v > -1e15 && v < 1e15 && v == (double)(long long)v) {
        snprintf(buf, len, "%lld", (long long)v);
        return buf;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, len, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    return buf;
}

/*
 * A JSON scalar as the text the file's value would give (config.c's
 * config_value_text): strings as they are, whole numbers without a
 * fraction, booleans as true/false.  NULL for anything else.
 */
static const char *
fault_json_text(const json_t *v, char *buf, size_t n)
{
    switch (json_typeof(v)) {
    case JSON_STRING:
        /* An embedded NUL would cut the value short without a word. */
        if (strlen(json_string_value(v)) != json_string_length(v))
            return NULL;
        return json_string_value(v);
    case JSON_INTEGER:
        snprintf(buf, n, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return buf;
    case JSON_REAL:
        return tf_fault_number_text(json_real_value(v), buf, n);
    case JSON_TRUE:
        return "true";
    case JSON_FALSE:
        return "false";
    default:
        return NULL;
    }
}

static json_t *
fault_valid_params(const struct tf_fault_def *def, bool with_keys)
{
    json_t *a = json_array();
    for (size_t i = 0; i < def->n_params; i++)
        json_array_append_new(a, json_string(def->params[i].name));
    for (size_t i = 0; with_keys && i < FAULT_ARRAY_LEN(fault_json_keys); i++)
        json_array_append_new(a, json_string(fault_json_keys[i]));
    return a;
}

static json_t *
fault_valid_match_keys(void)
{
    json_t *a = json_array();
    for (size_t i = 0; i < FAULT_ARRAY_LEN(fault_match_keys); i++)
        json_array_append_new(a, json_string(fault_match_keys[i]));
    return a;
}

static void
fault_set_valid(json_t **valid, json_t *names)
{
    if (valid != NULL) {
        json_decref(*valid);
        *valid = names;
    } else {
        json_decref(names);
    }
}

/*
 * Sets one parameter from JSON.  with_keys: the message lists the rule's
 * other keys too (a parameter beside "fault" rather than in "params").
 */
static bool
fault_json_param(struct tf_fault_rule *rule, const char *key, const json_t *v, bool with_keys,
                 char *err, size_t errlen, json_t **valid)
{
    char num[64];
    char q[FAULT_QUOTE_MAX];

    if (fault_param(rule->def, key) == NULL) {
        char hint[160] = "";
        if (fault_is_match_key(key))
            snprintf(hint, sizeof(hint), "; \"%s\" belongs in \"match\"", key);
        fault_set_valid(valid, fault_valid_params(rule->def, with_keys));
        if (rule->def->n_params == 0 && !with_keys)
            return fault_fail(err, errlen, "unknown parameter \"%s\": fault \"%s\" takes none%s",
                              fault_quote(q, sizeof(q), key), rule->def->name, hint);
        char names[512];
        size_t used = 0;
        names[0] = '\0';
        for (size_t i = 0; i < rule->def->n_params; i++)
            fault_list_add(names, sizeof(names), &used, rule->def->params[i].name);
        for (size_t i = 0; with_keys && i < FAULT_ARRAY_LEN(fault_json_keys); i++)
            fault_list_add(names, sizeof(names), &used, fault_json_keys[i]);
        return fault_fail(err, errlen, "unknown parameter \"%s\" for fault \"%s\"; valid: %s%s",
                          fault_quote(q, sizeof(q), key), rule->def->name,
                          used > 0 ? names : "none", hint);
    }
    const char *text = fault_json_text(v, num, sizeof(num));
    if (text == NULL)
        return fault_fail(err, errlen, "\"%s\" must be a single value (number, string or "
                          "boolean)", key);
    return tf_fault_rule_set(rule, key, text, false, err, errlen);
}

static bool
fault_json_match(struct tf_fault_rule *rule, const char *key, const json_t *v, char *err,
                 size_t errlen, json_t **valid)
{
    char num[64];

    if (!fault_is_match_key(key)) {
        fault_set_valid(valid, fault_valid_match_keys());
        return tf_fault_rule_set_match(rule, key, "", err, errlen); /* says what is valid */
    }
    const char *text = fault_json_text(v, num, sizeof(num));
    if (text == NULL)
        return fault_fail(err, errlen, "\"match.%s\" must be a single value (number, string or "
                          "boolean)", key);
    return tf_fault_rule_set_match(rule, key, text, err, errlen);
}

struct tf_fault_rule *
tf_fault_rule_from_json(const json_t *obj, char *err, size_t errlen, json_t **valid)
{
    char q[FAULT_QUOTE_MAX];
    char names[1024];
    struct tf_fault_rule *rule = NULL;
    const char *key;
    const json_t *v;

    if (!json_is_object(obj)) {
        fault_fail(err, errlen, "expected a JSON object: {\"name\": ..., \"fault\": ..., "
                   "\"params\": {...}, \"match\": {...}}");
        return NULL;
    }
    const json_t *jname = json_object_get(obj, "name");
    const json_t *jfault = json_object_get(obj, "fault");
    const json_t *jenabled = json_object_get(obj, "enabled");
    const json_t *jparams = json_object_get(obj, "params");
    const json_t *jmatch = json_object_get(obj, "match");

    if (jname == NULL || !json_is_string(jname)) {
        fault_fail(err, errlen, jname == NULL ? "\"name\" is required" : "\"name\" must be a "
                                                                         "string");
        return NULL;
    }
    if (!tf_fault_name_valid(json_string_value(jname)) ||
        strlen(json_string_value(jname)) != json_string_length(jname)) {
        fault_fail(err, errlen, "name \"%s\" is not valid (use 1-64 letters, digits, \".\", "
                   "\"_\" or \"-\")", fault_quote(q, sizeof(q), json_string_value(jname)));
        return NULL;
    }
    if (jfault == NULL || !json_is_string(jfault)) {
        fault_fail(err, errlen, jfault == NULL ? "\"fault\" is required (GET /faults lists them)"
                                               : "\"fault\" must be a string");
        return NULL;
    }
    const struct tf_fault_def *def = tf_fault_find(json_string_value(jfault));
    if (def == NULL) {
        tf_fault_names(names, sizeof(names));
        json_t *all = json_array();
        for (size_t i = 0; i < tf_fault_catalogue_len; i++)
            if (tf_fault_catalogue[i].available)
                json_array_append_new(all, json_string(tf_fault_catalogue[i].name));
        fault_set_valid(valid, all);
        fault_fail(err, errlen, "fault \"%s\" is unknown; valid: %s",
                   fault_quote(q, sizeof(q), json_string_value(jfault)), names);
        return NULL;
    }
    if (!def->available) {
        fault_fail(err, errlen, "fault \"%s\" needs mode %s, which is not available in this "
                   "version", def->name, tf_fault_mode_name(def->mode));
        return NULL;
    }
    if (jenabled != NULL && !json_is_boolean(jenabled)) {
        fault_fail(err, errlen, "\"enabled\" must be true or false");
        return NULL;
    }
    if (jparams != NULL && !json_is_object(jparams)) {
        fault_fail(err, errlen, "\"params\" must be an object ({\"ms\": 300, ...})");
        return NULL;
    }
    if (jmatch != NULL && !json_is_object(jmatch)) {
        fault_fail(err, errlen, "\"match\" must be an object ({\"sni\": \"*.lab.test\", ...})");
        return NULL;
    }
    rule = tf_fault_rule_new(def, json_string_value(jname));
    if (rule == NULL) {
        fault_fail(err, errlen, "out of memory");
        return NULL;
    }
    /* Parameters beside "fault", as in the file; then those in "params". */
    json_object_foreach((json_t *)(uintptr_t)obj, key, v)
    {
        bool reserved = false;
        for (size_t i = 0; i < FAULT_ARRAY_LEN(fault_json_keys); i++)
            reserved = reserved || strcmp(key, fault_json_keys[i]) == 0;
        if (reserved)
            continue;
        if (jparams != NULL && json_object_get(jparams, key) != NULL) {
            fault_fail(err, errlen, "\"%s\" is given twice (beside \"fault\" and in \"params\")",
                       fault_quote(q, sizeof(q), key));
            goto fail;
        }
        if (!fault_json_param(rule, key, v, true, err, errlen, valid))
            goto fail;
    }
    json_object_foreach((json_t *)(uintptr_t)jparams, key, v)
    {
        if (!fault_json_param(rule, key, v, false, err, errlen, valid))
            goto fail;
    }
    json_object_foreach((json_t *)(uintptr_t)jmatch, key, v)
    {
        if (!fault_json_match(rule, key, v, err, errlen, valid))
            goto fail;
    }
    if (jenabled != NULL)
        rule->enabled = json_is_true(jenabled);
    tf_fault_rule_complete(rule);
    if (!tf_fault_rule_check(rule, err, errlen))
        goto fail;
    return rule;
fail:
    tf_fault_rule_unref(rule);
    return NULL;
}

struct tf_fault_rule *
tf_fault_rule_rebuild(const struct tf_fault_rule *old, const json_t *params, const json_t *match,
                      int enabled, bool reset, char *err, size_t errlen, json_t **valid)
{
    const char *key;
    const json_t *v;
    struct tf_fault_rule *rule;

    if (params != NULL && !json_is_object(params)) {
        fault_fail(err, errlen, "\"params\" must be an object ({\"ms\": 300, ...})");
        return NULL;
    }
    if (match != NULL && !json_is_object(match)) {
        fault_fail(err, errlen, "\"match\" must be an object ({\"sni\": \"*.lab.test\", ...})");
        return NULL;
    }
    rule = tf_fault_rule_new(old->def, old->name);
    if (rule == NULL) {
        fault_fail(err, errlen, "out of memory");
        return NULL;
    }
    /* Unknown names first, so that nothing is judged against a typo. */
    json_object_foreach((json_t *)(uintptr_t)params, key, v)
    {
        if (fault_param(old->def, key) == NULL) {
            fault_json_param(rule, key, v, false, err, errlen, valid);
            goto fail;
        }
    }
    json_object_foreach((json_t *)(uintptr_t)match, key, v)
    {
        if (!fault_is_match_key(key)) {
            fault_json_match(rule, key, v, err, errlen, valid);
            goto fail;
        }
    }
    for (size_t i = 0; i < old->n_given; i++) {
        const char *k = old->given_keys[i];
        bool replaced = strncmp(k, "match.", 6) == 0
                            ? match != NULL && json_object_get(match, k + 6) != NULL
                            : params != NULL && json_object_get(params, k) != NULL;
        if (replaced)
            continue;
        /* What the old rule took, the new one takes: a failure is a bug, said as such. */
        if (!tf_fault_rule_set(rule, k, old->given_values[i], true, err, errlen))
            goto fail;
    }
    json_object_foreach((json_t *)(uintptr_t)params, key, v)
    {
        if (!json_is_null(v) && !fault_json_param(rule, key, v, false, err, errlen, valid))
            goto fail;
    }
    json_object_foreach((json_t *)(uintptr_t)match, key, v)
    {
        if (!json_is_null(v) && !fault_json_match(rule, key, v, err, errlen, valid))
            goto fail;
    }
    tf_fault_rule_complete(rule);
    if (!tf_fault_rule_check(rule, err, errlen))
        goto fail;
    rule->enabled = enabled < 0 ? old->enabled : enabled != 0;
    rule->line = old->line;
    if (!reset) {
        atomic_store(&rule->seen, atomic_load(&old->seen));
        atomic_store(&rule->fired, atomic_load(&old->fired));
    }
    return rule;
fail:
    tf_fault_rule_unref(rule);
    return NULL;
}
