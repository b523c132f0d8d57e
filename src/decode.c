/*
 * decode.c — decoders for the handshake messages and alerts that travel in
 * clear, turning each into the fields of a "handshake" or "alert" event.
 *
 * Each decoder reads one message body through a struct tf_cursor and is
 * written in the order of the message's definition in the RFC, so that the
 * code can be checked against the schema line by line.  Every vector opens a
 * sub-view that must be consumed exactly; an extension whose contents do not
 * fill its extension_data, a duplicate extension, or a length that runs past
 * its container makes the message malformed, reported as "malformed": "<where>:
 * <what>" beside the fields read before the problem.  Code points are shown by
 * their IANA names (names.c); unknown ones as "0x%04x" (or "0x%02x" for 8-bit
 * ones), GREASE values as "GREASE".
 *
 * Left to others: record framing and message reassembly (record.c,
 * handshake.c), deciding which messages are in clear (inspect.c), emitting
 * events (events.c).  Certificates are parsed by OpenSSL (d2i_X509); we only
 * summarise them.
 *
 * RFC 8446 §4.1.2 ClientHello, §4.1.3 ServerHello (downgrade sentinel),
 *   §4.1.4 HelloRetryRequest, §4.2 extensions, §4.3.2 CertificateRequest,
 *   §4.4.2 Certificate, §4.6.1 NewSessionTicket, §6 alerts;
 * RFC 5246 §7.2 Alert, §7.4.1.2 ClientHello, §7.4.1.3 ServerHello,
 *   §7.4.2 Certificate, §7.4.3 ServerKeyExchange, §7.4.4 CertificateRequest,
 *   §7.4.7 ClientKeyExchange;
 * RFC 8422 §5.1.2 ec_point_formats, §5.4 ECDHE ServerKeyExchange;
 * RFC 4279 §2-4 PSK key exchanges; RFC 6066 §3 server_name, §8 status_request
 *   and CertificateStatus; RFC 6961 ocsp_multi; RFC 7301 §3.1 ALPN;
 *   RFC 5746 §3.2 renegotiation_info; RFC 7627 §5.1 extended_master_secret;
 *   RFC 5077 §3.2-3.3 session tickets; RFC 7366 encrypt_then_mac;
 *   RFC 7685 padding; RFC 8449 record_size_limit; RFC 8701 GREASE.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/ocsp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "tlsfault/cursor.h"
#include "tlsfault/decode.h"
#include "tlsfault/handshake.h"
#include "tlsfault/jsontext.h"
#include "tlsfault/names.h"

/* Extension types this file decodes (IANA "TLS ExtensionType Values"). */
enum decode_ext_type {
    DECODE_EXT_SERVER_NAME = 0,
    DECODE_EXT_STATUS_REQUEST = 5,
    DECODE_EXT_SUPPORTED_GROUPS = 10,
    DECODE_EXT_EC_POINT_FORMATS = 11,
    DECODE_EXT_SIGNATURE_ALGORITHMS = 13,
    DECODE_EXT_ALPN = 16,
    DECODE_EXT_PADDING = 21,
    DECODE_EXT_ENCRYPT_THEN_MAC = 22,
    DECODE_EXT_EXTENDED_MASTER_SECRET = 23,
    DECODE_EXT_RECORD_SIZE_LIMIT = 28,
    DECODE_EXT_SESSION_TICKET = 35,
    DECODE_EXT_PRE_SHARED_KEY = 41,
    DECODE_EXT_EARLY_DATA = 42,
    DECODE_EXT_SUPPORTED_VERSIONS = 43,
    DECODE_EXT_COOKIE = 44,
    DECODE_EXT_PSK_KEY_EXCHANGE_MODES = 45,
    DECODE_EXT_CERTIFICATE_AUTHORITIES = 47,
    DECODE_EXT_POST_HANDSHAKE_AUTH = 49,
    DECODE_EXT_SIGNATURE_ALGORITHMS_CERT = 50,
    DECODE_EXT_KEY_SHARE = 51,
    DECODE_EXT_ENCRYPTED_CLIENT_HELLO = 0xfe0d,
    DECODE_EXT_RENEGOTIATION_INFO = 0xff01,
};

#define DECODE_RANDOM_LEN 32
#define DECODE_SESSION_ID_MAX 32
#define DECODE_STATUS_OCSP 1
#define DECODE_STATUS_OCSP_MULTI 2
#define DECODE_NAME_TYPE_HOST 0
#define DECODE_CURVE_NAMED 3

/* Caps on what one event may carry from a certificate. */
#define DECODE_TEXT_MAX 1024
#define DECODE_SAN_MAX 256
#define DECODE_EKU_MAX 32
#define DECODE_CA_NAMES_MAX 32

/* RFC 8446 §4.1.3: SHA-256("HelloRetryRequest"), the random of every HRR. */
static const uint8_t decode_hrr_random[DECODE_RANDOM_LEN] = {
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
};

/* RFC 8446 §4.1.3: "DOWNGRD" then 0x01 (TLS 1.2) or 0x00 (TLS 1.1 and below). */
static const uint8_t decode_downgrade[7] = {0x44, 0x4f, 0x57, 0x4e, 0x47, 0x52, 0x44};

/*
 * The state of one decoder run.  ctx names the part being read (an
 * extension, usually) so that a failure deep inside says where it was.
 */
struct decode {
    json_t *obj;
    const char *ctx;
    bool hrr;
    struct tf_client_hello_info *ch;
    struct tf_server_hello_info *sh;
};

typedef const char *(*decode_name16_fn)(uint16_t code);
typedef const char *(*decode_name8_fn)(uint8_t code);

/* An extension's decoder reads its extension_data; the caller checks it was all used. */
typedef bool (*decode_ext_fn)(struct decode *d, struct tf_cursor *data);

/* One row of an extension table: the type, the JSON field it fills (decode.h), its decoder. */
struct decode_ext {
    uint16_t type;
    const char *key;
    decode_ext_fn fn;
};

/* ------------------------------------------------------------------ helpers */

/*
 * The same chains pass again and again (every connection to a server, and
 * in mitm mode the forged ones), and OpenSSL 3's d2i_X509 costs more than
 * the rest of a handshake's logging together (it looks up key decoders
 * for the public key, under locks).  So each thread keeps the summaries
 * of the last few certificates it decoded, keyed by their exact DER bytes.
 */
#define X509_CACHE_SLOTS 16
#define X509_CACHE_DER_MAX (64 * 1024)

struct x509_cached {
    uint64_t hash;
    size_t len;
    uint8_t *der;   /* NULL: free slot */
    json_t *entry;
    uint64_t stamp; /* least recently used goes first */
};

struct x509_cache {
    struct x509_cached slot[X509_CACHE_SLOTS];
    uint64_t clock;
};

/*
 * Lists of code points come back byte for byte on every connection of a
 * client (its cipher suites, groups, signature schemes, extensions), and
 * making their arrays of names was a third of a handshake's decoding.  So
 * each thread keeps the arrays of the last few lists, keyed by the naming
 * function and the exact bytes, and hands out references: an array is
 * never changed once made, and jansson counts references atomically.
 */
#define CODES_CACHE_SLOTS 16
#define CODES_CACHE_BYTES_MAX 256

struct codes_cached {
    decode_name16_fn fn16; /* one of the two names the list's kind */
    decode_name8_fn fn8;
    uint64_t hash;
    size_t len;
    uint8_t bytes[CODES_CACHE_BYTES_MAX];
    json_t *arr;    /* NULL: free slot */
    uint64_t stamp; /* least recently used goes first */
};

struct codes_cache {
    struct codes_cached slot[CODES_CACHE_SLOTS];
    uint64_t clock;
};

/* What each thread keeps between decoder runs. */
struct decode_thread {
    struct x509_cache x509;
    struct codes_cache codes;
};

static pthread_key_t decode_thread_key;
static pthread_once_t decode_thread_once = PTHREAD_ONCE_INIT;
static bool decode_thread_usable;

static void
decode_thread_free(void *arg)
{
    struct decode_thread *t = arg;
    for (size_t i = 0; i < X509_CACHE_SLOTS; i++) {
        free(t->x509.slot[i].der);
        json_decref(t->x509.slot[i].entry);
    }
    for (size_t i = 0; i < CODES_CACHE_SLOTS; i++) {
        tf_json_thaw(t->codes.slot[i].arr);
        json_decref(t->codes.slot[i].arr);
    }
    free(t);
}

static void
decode_thread_init(void)
{
    decode_thread_usable = pthread_key_create(&decode_thread_key, decode_thread_free) == 0;
}

void
tf_decode_caches_drop(void)
{
    pthread_once(&decode_thread_once, decode_thread_init);
    if (!decode_thread_usable)
        return;
    struct decode_thread *t = pthread_getspecific(decode_thread_key);
    if (t != NULL && pthread_setspecific(decode_thread_key, NULL) == 0)
        decode_thread_free(t);
}

/* This thread's caches; NULL when they cannot be had (decoding goes on without). */
static struct decode_thread *
decode_thread_get(void)
{
    pthread_once(&decode_thread_once, decode_thread_init);
    if (!decode_thread_usable)
        return NULL;
    struct decode_thread *t = pthread_getspecific(decode_thread_key);
    if (t == NULL) {
        t = calloc(1, sizeof(*t));
        if (t != NULL && pthread_setspecific(decode_thread_key, t) != 0) {
            free(t);
            t = NULL;
        }
    }
    return t;
}

static struct x509_cache *
decode_thread_x509(void)
{
    struct decode_thread *t = decode_thread_get();
    return t != NULL ? &t->x509 : NULL;
}

static uint64_t
decode_hash(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

/* An empty body may come as NULL; a cursor must never do arithmetic on NULL. */
static void
decode_init(struct tf_cursor *c, const uint8_t *body, size_t len)
{
    static const uint8_t none[1];

    tf_cursor_init(c, body != NULL ? body : none, body != NULL ? len : 0);
}

static bool decode_fail(struct decode *d, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Records why the message is malformed and returns false.  Only the first
 * problem is kept: later ones are consequences of it.
 */
static bool
decode_fail(struct decode *d, const char *field, const char *fmt, ...)
{
    char what[160];
    char msg[320];
    va_list ap;

    if (json_object_get(d->obj, "malformed") != NULL)
        return false;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    snprintf(msg, sizeof(msg), "%s%s%s%s%s", d->ctx ? d->ctx : "", d->ctx ? ": " : "",
             field ? field : "", field ? " " : "", what);
    json_object_set_new_nocheck(d->obj, "malformed", tf_json_string(msg));
    return false;
}

/*
 * Fixed-size reads.  On failure the value is zeroed as well as reported, so
 * that no caller can go on with an unset variable.
 */
static bool
decode_u8(struct decode *d, struct tf_cursor *c, const char *field, uint8_t *v)
{
    if (tf_cursor_u8(c, v))
        return true;
    *v = 0;
    return decode_fail(d, field, "truncated");
}

static bool
decode_u16(struct decode *d, struct tf_cursor *c, const char *field, uint16_t *v)
{
    if (tf_cursor_u16(c, v))
        return true;
    *v = 0;
    return decode_fail(d, field, "truncated (%zu of 2 bytes)", tf_cursor_left(c));
}

static bool
decode_u32(struct decode *d, struct tf_cursor *c, const char *field, uint32_t *v)
{
    if (tf_cursor_u32(c, v))
        return true;
    *v = 0;
    return decode_fail(d, field, "truncated (%zu of 4 bytes)", tf_cursor_left(c));
}

static bool
decode_bytes(struct decode *d, struct tf_cursor *c, size_t n, const char *field, const uint8_t **v)
{
    if (tf_cursor_bytes(c, n, v))
        return true;
    *v = NULL;
    return decode_fail(d, field, "truncated (%zu of %zu bytes)", tf_cursor_left(c), n);
}

/*
 * Opens the vector field<min..max> whose length prefix is `prefix` bytes
 * (RFC 8446 §3.4) as a sub-view of c.
 */
static bool
decode_vec(struct decode *d, struct tf_cursor *c, int prefix, size_t min, size_t max,
           const char *field, struct tf_cursor *sub)
{
    uint8_t n8 = 0;
    uint16_t n16 = 0;
    uint32_t n = 0;
    bool ok;

    /* An empty view on failure, so no caller can read an unset one. */
    tf_cursor_init(sub, c->p, 0);
    if (prefix == 1) {
        ok = tf_cursor_u8(c, &n8);
        n = n8;
    } else if (prefix == 2) {
        ok = tf_cursor_u16(c, &n16);
        n = n16;
    } else {
        ok = tf_cursor_u24(c, &n);
    }
    if (!ok)
        return decode_fail(d, field, "length truncated");
    if (n > tf_cursor_left(c))
        return decode_fail(d, field, "length %u overruns %zu bytes", n, tf_cursor_left(c));
    if (n < min)
        return decode_fail(d, field, "length %u below the minimum %zu", n, min);
    if (n > max)
        return decode_fail(d, field, "length %u above the maximum %zu", n, max);
    return tf_cursor_sub(c, n, sub);
}

/* A vector must be consumed exactly by what it holds. */
static bool
decode_end(struct decode *d, const struct tf_cursor *c, const char *after)
{
    if (tf_cursor_empty(c))
        return true;
    if (after != NULL)
        return decode_fail(d, NULL, "%zu trailing bytes after %s", tf_cursor_left(c), after);
    return decode_fail(d, NULL, "%zu trailing bytes", tf_cursor_left(c));
}

/* A 16-bit code point as JSON: its name, "GREASE" (RFC 8701), or "0x%04x". */
static json_t *
decode_code16(decode_name16_fn fn, uint16_t v)
{
    static const char grease[] = "GREASE";
    char buf[8];
    const char *name;

    if (tf_names_is_grease(v))
        return tf_json_name(grease);
    name = fn(v);
    if (name != NULL)
        return tf_json_name(name);
    snprintf(buf, sizeof(buf), "0x%04x", v);
    return tf_json_string(buf);
}

static json_t *
decode_code8(decode_name8_fn fn, uint8_t v)
{
    char buf[8];
    const char *name = fn(v);

    if (name != NULL)
        return tf_json_name(name);
    snprintf(buf, sizeof(buf), "0x%02x", v);
    return tf_json_string(buf);
}

/*
 * Keys here (and wherever tlsfault names a field) are this program's
 * literals or names.c's table names: ASCII, so jansson's UTF-8 check of
 * every key is skipped (_nocheck), a sixth of what setting a member costs.
 */
static void
decode_set_int(struct decode *d, const char *key, json_int_t v)
{
    json_object_set_new_nocheck(d->obj, key, json_integer(v));
}

/*
 * Copies bytes from the wire as text: printable ASCII stays, everything
 * else (and the backslash, to keep the escape unambiguous) becomes \xNN.
 * Stops before an escape would be cut; out always ends in NUL.
 */
static void
decode_escape(const uint8_t *p, size_t n, char *out, size_t outlen)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        uint8_t ch = p[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '\\') {
            if (o + 1 >= outlen)
                break;
            out[o++] = (char)ch;
        } else {
            if (o + 4 >= outlen)
                break;
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 0x0f];
        }
    }
    out[o] = '\0';
}

static json_t *
decode_text(const uint8_t *p, size_t n)
{
    char buf[DECODE_TEXT_MAX];

    decode_escape(p, n, buf, sizeof(buf));
    return tf_json_string(buf);
}

static json_t *
decode_hex(const uint8_t *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    char buf[2 * DECODE_RANDOM_LEN + 1];
    size_t o = 0;

    for (size_t i = 0; i < n && o + 2 < sizeof(buf); i++) {
        buf[o++] = hex[p[i] >> 4];
        buf[o++] = hex[p[i] & 0x0f];
    }
    buf[o] = '\0';
    return tf_json_string(buf);
}

/*
 * The names of all the code points left in list (16-bit ones named by
 * fn16, else 8-bit ones by fn8), which it consumes: this thread's array
 * for the same bytes if it has one (see struct codes_cache), else a new one.
 */
static json_t *
decode_codes_array(struct tf_cursor *list, decode_name16_fn fn16, decode_name8_fn fn8)
{
    size_t len = tf_cursor_left(list);
    const uint8_t *p;
    struct decode_thread *t = NULL;
    struct codes_cached *victim = NULL;
    uint64_t h = 0;

    if (len == 0 || !tf_cursor_bytes(list, len, &p))
        return json_array();
    if (len <= CODES_CACHE_BYTES_MAX && (t = decode_thread_get()) != NULL) {
        struct codes_cache *cc = &t->codes;
        h = decode_hash(p, len);
        victim = &cc->slot[0];
        for (size_t i = 0; i < CODES_CACHE_SLOTS; i++) {
            struct codes_cached *e = &cc->slot[i];
            if (e->arr != NULL && e->fn16 == fn16 && e->fn8 == fn8 && e->hash == h &&
                e->len == len && memcmp(e->bytes, p, len) == 0) {
                e->stamp = ++cc->clock;
                return json_incref(e->arr);
            }
            if (e->arr == NULL || (victim->arr != NULL && e->stamp < victim->stamp))
                victim = e;
        }
    }
    json_t *arr = json_array();
    struct tf_cursor c;
    tf_cursor_init(&c, p, len);
    if (fn16 != NULL) {
        uint16_t v;
        while (tf_cursor_u16(&c, &v))
            json_array_append_new(arr, decode_code16(fn16, v));
    } else {
        uint8_t v;
        while (tf_cursor_u8(&c, &v))
            json_array_append_new(arr, decode_code8(fn8, v));
    }
    if (victim != NULL && arr != NULL) {
        tf_json_thaw(victim->arr);
        json_decref(victim->arr);
        victim->fn16 = fn16;
        victim->fn8 = fn8;
        victim->hash = h;
        victim->len = len;
        memcpy(victim->bytes, p, len);
        victim->arr = json_incref(arr);
        victim->stamp = ++t->codes.clock;
        /* Every event that shares it writes the list's text, rendered once. */
        tf_json_freeze(arr);
    }
    return arr;
}

/* A vector of 16-bit code points (its length must be even) as an array of names. */
static bool
decode_codes16(struct decode *d, struct tf_cursor *list, const char *field, const char *key,
               decode_name16_fn fn)
{
    if (tf_cursor_left(list) % 2 != 0) {
        json_object_set_new_nocheck(d->obj, key, json_array());
        return decode_fail(d, field, "odd length %zu", tf_cursor_left(list));
    }
    json_object_set_new_nocheck(d->obj, key, decode_codes_array(list, fn, NULL));
    return true;
}

static void
decode_codes8(struct decode *d, struct tf_cursor *list, const char *key, decode_name8_fn fn)
{
    json_object_set_new_nocheck(d->obj, key, decode_codes_array(list, NULL, fn));
}

/* A vector of 16-bit code points, as most list extensions are: <2..2^16-2>. */
static bool
decode_list16(struct decode *d, struct tf_cursor *c, const char *key, decode_name16_fn fn)
{
    struct tf_cursor list;

    return decode_vec(d, c, 2, 2, 0xfffe, NULL, &list) && decode_codes16(d, &list, NULL, key, fn);
}

/* ------------------------------------------------------------------ extensions */

static void
decode_ext_label(uint16_t type, char *buf, size_t len)
{
    const char *name = tf_names_extension(type);

    if (tf_names_is_grease(type))
        snprintf(buf, len, "extension GREASE 0x%04x", type);
    else if (name != NULL)
        snprintf(buf, len, "extension %s", name);
    else
        snprintf(buf, len, "extension 0x%04x", type);
}

static const struct decode_ext *
decode_ext_find(const struct decode_ext *table, size_t n, uint16_t type)
{
    for (size_t i = 0; i < n; i++)
        if (table[i].type == type)
            return &table[i];
    return NULL;
}

/*
 * Extension extensions<min..2^16-1> (RFC 8446 §4.2): lists every type in
 * "extensions" in wire order and decodes those in table, each into the
 * field its row names.  Duplicates are malformed ("There MUST NOT be more than one
 * extension of the same type in a given extension block").
 */
static bool
decode_extensions(struct decode *d, struct tf_cursor *c, size_t min, const struct decode_ext *table,
                  size_t n)
{
    uint8_t seen[65536 / 8];
    struct tf_cursor exts;
    json_t *names = json_array();

    memset(seen, 0, sizeof(seen));
    json_object_set_new_nocheck(d->obj, "extensions", names);
    if (!decode_vec(d, c, 2, min, 0xffff, "extensions", &exts))
        return false;
    while (!tf_cursor_empty(&exts)) {
        struct tf_cursor data;
        const struct decode_ext *e;
        char label[64];
        uint16_t type;
        bool ok;

        if (!decode_u16(d, &exts, "extension type", &type))
            return false;
        json_array_append_new(names, decode_code16(tf_names_extension, type));
        /* The label names the extension in errors only: made when one is due. */
        struct tf_cursor probe = exts;
        uint16_t len;
        if (!tf_cursor_u16(&probe, &len) || len > tf_cursor_left(&probe)) {
            decode_ext_label(type, label, sizeof(label));
            return decode_vec(d, &exts, 2, 0, 0xffff, label, &data);
        }
        if (!decode_vec(d, &exts, 2, 0, 0xffff, NULL, &data))
            return false;
        if (seen[type >> 3] & (1u << (type & 7))) {
            decode_ext_label(type, label, sizeof(label));
            return decode_fail(d, label, "appears twice");
        }
        seen[type >> 3] |= (uint8_t)(1u << (type & 7));
        /* The binders cover everything before them (RFC 8446 §4.2.11). */
        if (type == DECODE_EXT_PRE_SHARED_KEY && d->ch != NULL && !tf_cursor_empty(&exts)) {
            decode_ext_label(type, label, sizeof(label));
            return decode_fail(d, label, "is not the last extension");
        }
        e = decode_ext_find(table, n, type);
        if (e == NULL)
            continue;
        d->ctx = e->key;
        ok = e->fn(d, &data) && decode_end(d, &data, NULL);
        d->ctx = NULL;
        if (!ok)
            return false;
    }
    return true;
}

/* Presence-only extensions: extension_data is empty (the caller checks). */
static bool
ext_flag(struct decode *d, struct tf_cursor *data)
{
    (void)data;
    json_object_set_new_nocheck(d->obj, d->ctx, json_true());
    return true;
}

/* Extensions whose contents we do not unpick: present, contents skipped. */
static bool
ext_present(struct decode *d, struct tf_cursor *data)
{
    json_object_set_new_nocheck(d->obj, d->ctx, json_true());
    return tf_cursor_skip(data, tf_cursor_left(data));
}

/* Opaque extensions shown by size: session_ticket, padding. */
static bool
ext_length(struct decode *d, struct tf_cursor *data)
{
    decode_set_int(d, d->ctx, (json_int_t)tf_cursor_left(data));
    return tf_cursor_skip(data, tf_cursor_left(data));
}

/* RFC 6066 §3: ServerNameList server_name_list<1..2^16-1>. */
static bool
ext_server_name(struct decode *d, struct tf_cursor *data)
{
    struct tf_cursor list;
    bool have_host = false;

    if (!decode_vec(d, data, 2, 1, 0xffff, NULL, &list))
        return false;
    while (!tf_cursor_empty(&list)) {
        struct tf_cursor name;
        uint8_t type;

        if (!decode_u8(d, &list, "name_type", &type) ||
            !decode_vec(d, &list, 2, 1, 0xffff, "host_name", &name))
            return false;
        /* Only host_name is defined; others are carried, not shown. */
        if (type != DECODE_NAME_TYPE_HOST)
            continue;
        if (have_host)
            return decode_fail(d, NULL, "more than one host_name");
        have_host = true;
        decode_escape(name.p, tf_cursor_left(&name), d->ch->sni, sizeof(d->ch->sni));
        d->ch->has_sni = true;
        json_object_set_new_nocheck(d->obj, "server_name", tf_json_string(d->ch->sni));
    }
    return true;
}

/* RFC 8446 §4.2.1: ProtocolVersion versions<2..254> in the ClientHello. */
static bool
ext_supported_versions_ch(struct decode *d, struct tf_cursor *data)
{
    struct tf_cursor list, again;
    uint16_t v, max = 0;

    if (!decode_vec(d, data, 1, 2, 254, NULL, &list))
        return false;
    again = list;
    if (!decode_codes16(d, &list, NULL, "supported_versions", tf_names_version))
        return false;
    while (tf_cursor_u16(&again, &v))
        if (!tf_names_is_grease(v) && v > max)
            max = v;
    if (max != 0)
        d->ch->max_version = max;
    return true;
}

/* ServerHello and HRR: the selected version alone. */
static bool
ext_supported_versions_sh(struct decode *d, struct tf_cursor *data)
{
    uint16_t v;

    if (!decode_u16(d, data, "selected_version", &v))
        return false;
    d->sh->version = v;
    json_object_set_new_nocheck(d->obj, "supported_versions", decode_code16(tf_names_version, v));
    json_object_set_new_nocheck(d->obj, "version", decode_code16(tf_names_version, v));
    return true;
}

/* RFC 7301 §3.1: ProtocolName protocol_name_list<2..2^16-1>, names <1..2^8-1>. */
static bool
ext_alpn_ch(struct decode *d, struct tf_cursor *data)
{
    struct tf_cursor list, name;
    json_t *arr = json_array();

    json_object_set_new_nocheck(d->obj, "alpn", arr);
    if (!decode_vec(d, data, 2, 2, 0xffff, NULL, &list))
        return false;
    while (!tf_cursor_empty(&list)) {
        if (!decode_vec(d, &list, 1, 1, 0xff, "protocol name", &name))
            return false;
        json_array_append_new(arr, decode_text(name.p, tf_cursor_left(&name)));
    }
    return true;
}

/* The server's list "MUST contain exactly one" name (RFC 7301 §3.1). */
static bool
ext_alpn_sh(struct decode *d, struct tf_cursor *data)
{
    struct tf_cursor list, name;

    if (!decode_vec(d, data, 2, 2, 0xffff, NULL, &list) ||
        !decode_vec(d, &list, 1, 1, 0xff, "protocol name", &name))
        return false;
    json_object_set_new_nocheck(d->obj, "alpn", decode_text(name.p, tf_cursor_left(&name)));
    if (!tf_cursor_empty(&list))
        return decode_fail(d, NULL, "more than one protocol selected");
    return true;
}

static bool
ext_supported_groups(struct decode *d, struct tf_cursor *data)
{
    return decode_list16(d, data, "supported_groups", tf_names_group);
}

static bool
ext_signature_algorithms(struct decode *d, struct tf_cursor *data)
{
    return decode_list16(d, data, d->ctx, tf_names_sigscheme);
}

/* RFC 8446 §4.2.8: KeyShareEntry client_shares<0..2^16-1>; empty asks for an HRR. */
static bool
ext_key_share_ch(struct decode *d, struct tf_cursor *data)
{
    struct tf_cursor list, key;
    json_t *arr = json_array();
    uint16_t group;

    json_object_set_new_nocheck(d->obj, "key_share", arr);
    if (!decode_vec(d, data, 2, 0, 0xffff, NULL, &list))
        return false;
    while (!tf_cursor_empty(&list)) {
        if (!decode_u16(d, &list, "group", &group))
            return false;
        json_array_append_new(arr, decode_code16(tf_names_group, group));
        if (!decode_vec(d, &list, 2, 1, 0xffff, "key_exchange", &key))
            return false;
    }
    return true;
}

/* ServerHello: one KeyShareEntry; HelloRetryRequest: the selected_group alone. */
static bool
ext_key_share_sh(struct decode *d, struct tf_cursor *data)
{
    struct tf_cursor key;
    uint16_t group;

    if (!decode_u16(d, data, "group", &group))
        return false;
    json_object_set_new_nocheck(d->obj, "key_share", decode_code16(tf_names_group, group));
    if (d->hrr)
        return true;
    return decode_vec(d, data, 2, 1, 0xffff, "key_exchange", &key);
}

/* RFC 8446 §4.2.9: PskKeyExchangeMode ke_modes<1..255>. */
static bool
ext_psk_modes(struct decode *d, struct tf_cursor *data)
{
    struct tf_cursor list;

    if (!decode_vec(d, data, 1, 1, 0xff, NULL, &list))
        return false;
    decode_codes8(d, &list, "psk_key_exchange_modes", tf_names_psk_mode);
    return true;
}

/* RFC 8422 §5.1.2: ECPointFormat ec_point_format_list<1..2^8-1>. */
static bool
ext_ec_point_formats(struct decode *d, struct tf_cursor *data)
{
    struct tf_cursor list;

    if (!decode_vec(d, data, 1, 1, 0xff, NULL, &list))
        return false;
    decode_codes8(d, &list, "ec_point_formats", tf_names_ec_point_format);
    return true;
}

/*
 * RFC 6066 §8: CertificateStatusRequest { status_type; select: ocsp →
 * ResponderID responder_id_list<0..2^16-1>; Extensions request_extensions; }.
 * Other status types are shown by number with their contents skipped.
 */
static bool
ext_status_request_ch(struct decode *d, struct tf_cursor *data)
{
    struct tf_cursor ids, exts;
    uint8_t type;

    if (!decode_u8(d, data, "status_type", &type))
        return false;
    json_object_set_new_nocheck(d->obj, "status_request",
                                decode_code8(tf_names_cert_status_type, type));
    if (type != DECODE_STATUS_OCSP)
        return tf_cursor_skip(data, tf_cursor_left(data));
    return decode_vec(d, data, 2, 0, 0xffff, "responder_id_list", &ids) &&
           decode_vec(d, data, 2, 0, 0xffff, "request_extensions", &exts);
}

/* RFC 5746 §3.2: opaque renegotiated_connection<0..255>; shown by length. */
static bool
ext_renegotiation_info(struct decode *d, struct tf_cursor *data)
{
    struct tf_cursor conn;

    if (!decode_vec(d, data, 1, 0, 0xff, NULL, &conn))
        return false;
    decode_set_int(d, "renegotiation_info", (json_int_t)tf_cursor_left(&conn));
    return true;
}

/* RFC 8449 §4: uint16 RecordSizeLimit. */
static bool
ext_record_size_limit(struct decode *d, struct tf_cursor *data)
{
    uint16_t v;

    if (!decode_u16(d, data, NULL, &v))
        return false;
    decode_set_int(d, "record_size_limit", v);
    return true;
}

/* RFC 8446 §4.2.2: opaque cookie<1..2^16-1>; shown by length. */
static bool
ext_cookie(struct decode *d, struct tf_cursor *data)
{
    struct tf_cursor cookie;

    if (!decode_vec(d, data, 2, 1, 0xffff, NULL, &cookie))
        return false;
    decode_set_int(d, "cookie", (json_int_t)tf_cursor_left(&cookie));
    return true;
}

/*
 * RFC 8446 §4.2.11: OfferedPsks { PskIdentity identities<7..2^16-1>;
 * PskBinderEntry binders<33..2^16-1>; }.  Shown as presence only.
 */
static bool
ext_pre_shared_key_ch(struct decode *d, struct tf_cursor *data)
{
    struct tf_cursor identities, binders;

    json_object_set_new_nocheck(d->obj, "pre_shared_key", json_true());
    return decode_vec(d, data, 2, 7, 0xffff, "identities", &identities) &&
           decode_vec(d, data, 2, 33, 0xffff, "binders", &binders);
}

/* The server names the identity it accepted. */
static bool
ext_pre_shared_key_sh(struct decode *d, struct tf_cursor *data)
{
    uint16_t v;

    if (!decode_u16(d, data, "selected_identity", &v))
        return false;
    decode_set_int(d, "pre_shared_key", v);
    return true;
}

/* RFC 8446 §4.2.4: DistinguishedName authorities<3..2^16-1>; shown as a count. */
static bool
ext_certificate_authorities(struct decode *d, struct tf_cursor *data)
{
    struct tf_cursor list, name;
    json_int_t n = 0;

    if (!decode_vec(d, data, 2, 3, 0xffff, NULL, &list))
        return false;
    while (!tf_cursor_empty(&list)) {
        if (!decode_vec(d, &list, 2, 1, 0xffff, "DistinguishedName", &name))
            return false;
        n++;
    }
    decode_set_int(d, "certificate_authorities", n);
    return true;
}

static const struct decode_ext client_hello_exts[] = {
    {DECODE_EXT_SERVER_NAME, "server_name", ext_server_name},
    {DECODE_EXT_STATUS_REQUEST, "status_request", ext_status_request_ch},
    {DECODE_EXT_SUPPORTED_GROUPS, "supported_groups", ext_supported_groups},
    {DECODE_EXT_EC_POINT_FORMATS, "ec_point_formats", ext_ec_point_formats},
    {DECODE_EXT_SIGNATURE_ALGORITHMS, "signature_algorithms", ext_signature_algorithms},
    {DECODE_EXT_ALPN, "alpn", ext_alpn_ch},
    {DECODE_EXT_PADDING, "padding", ext_length},
    {DECODE_EXT_ENCRYPT_THEN_MAC, "encrypt_then_mac", ext_flag},
    {DECODE_EXT_EXTENDED_MASTER_SECRET, "extended_master_secret", ext_flag},
    {DECODE_EXT_RECORD_SIZE_LIMIT, "record_size_limit", ext_record_size_limit},
    {DECODE_EXT_SESSION_TICKET, "session_ticket", ext_length},
    {DECODE_EXT_PRE_SHARED_KEY, "pre_shared_key", ext_pre_shared_key_ch},
    {DECODE_EXT_EARLY_DATA, "early_data", ext_flag},
    {DECODE_EXT_SUPPORTED_VERSIONS, "supported_versions", ext_supported_versions_ch},
    {DECODE_EXT_COOKIE, "cookie", ext_cookie},
    {DECODE_EXT_PSK_KEY_EXCHANGE_MODES, "psk_key_exchange_modes", ext_psk_modes},
    {DECODE_EXT_CERTIFICATE_AUTHORITIES, "certificate_authorities", ext_certificate_authorities},
    {DECODE_EXT_POST_HANDSHAKE_AUTH, "post_handshake_auth", ext_flag},
    {DECODE_EXT_SIGNATURE_ALGORITHMS_CERT, "signature_algorithms_cert", ext_signature_algorithms},
    {DECODE_EXT_KEY_SHARE, "key_share", ext_key_share_ch},
    {DECODE_EXT_ENCRYPTED_CLIENT_HELLO, "encrypted_client_hello", ext_present},
    {DECODE_EXT_RENEGOTIATION_INFO, "renegotiation_info", ext_renegotiation_info},
};

/* ServerHello and HelloRetryRequest; the server's echoes are mostly empty. */
static const struct decode_ext server_hello_exts[] = {
    {DECODE_EXT_SERVER_NAME, "server_name", ext_flag},
    {DECODE_EXT_STATUS_REQUEST, "status_request", ext_flag},
    {DECODE_EXT_EC_POINT_FORMATS, "ec_point_formats", ext_ec_point_formats},
    {DECODE_EXT_ALPN, "alpn", ext_alpn_sh},
    {DECODE_EXT_ENCRYPT_THEN_MAC, "encrypt_then_mac", ext_flag},
    {DECODE_EXT_EXTENDED_MASTER_SECRET, "extended_master_secret", ext_flag},
    {DECODE_EXT_RECORD_SIZE_LIMIT, "record_size_limit", ext_record_size_limit},
    {DECODE_EXT_SESSION_TICKET, "session_ticket", ext_length},
    {DECODE_EXT_PRE_SHARED_KEY, "pre_shared_key", ext_pre_shared_key_sh},
    {DECODE_EXT_SUPPORTED_VERSIONS, "supported_versions", ext_supported_versions_sh},
    {DECODE_EXT_COOKIE, "cookie", ext_cookie},
    {DECODE_EXT_KEY_SHARE, "key_share", ext_key_share_sh},
    {DECODE_EXT_ENCRYPTED_CLIENT_HELLO, "encrypted_client_hello", ext_present},
    {DECODE_EXT_RENEGOTIATION_INFO, "renegotiation_info", ext_renegotiation_info},
};

/* TLS 1.3 CertificateRequest (RFC 8446 §4.3.2). */
static const struct decode_ext certificate_request_exts[] = {
    {DECODE_EXT_STATUS_REQUEST, "status_request", ext_flag},
    {DECODE_EXT_SIGNATURE_ALGORITHMS, "signature_algorithms", ext_signature_algorithms},
    {DECODE_EXT_CERTIFICATE_AUTHORITIES, "certificate_authorities", ext_certificate_authorities},
    {DECODE_EXT_SIGNATURE_ALGORITHMS_CERT, "signature_algorithms_cert", ext_signature_algorithms},
};

#define DECODE_N(table) (sizeof(table) / sizeof((table)[0]))

/* ------------------------------------------------------------------ hellos */

/*
 * RFC 8446 §4.1.2 (and RFC 5246 §7.4.1.2, where extensions may be absent):
 *   ProtocolVersion legacy_version; Random random;
 *   opaque legacy_session_id<0..32>; CipherSuite cipher_suites<2..2^16-2>;
 *   opaque legacy_compression_methods<1..2^8-1>; Extension extensions<8..2^16-1>;
 */
static bool
client_hello_read(struct decode *d, struct tf_cursor *c)
{
    struct tf_cursor session_id, suites, compression;
    const uint8_t *random;
    uint16_t version;

    if (!decode_u16(d, c, "legacy_version", &version))
        return false;
    json_object_set_new_nocheck(d->obj, "legacy_version", decode_code16(tf_names_version, version));
    d->ch->max_version = version;
    if (!decode_bytes(d, c, DECODE_RANDOM_LEN, "random", &random))
        return false;
    json_object_set_new_nocheck(d->obj, "random", decode_hex(random, DECODE_RANDOM_LEN));
    if (!decode_vec(d, c, 1, 0, DECODE_SESSION_ID_MAX, "legacy_session_id", &session_id))
        return false;
    decode_set_int(d, "session_id_length", (json_int_t)tf_cursor_left(&session_id));
    if (!decode_vec(d, c, 2, 2, 0xfffe, "cipher_suites", &suites) ||
        !decode_codes16(d, &suites, "cipher_suites", "cipher_suites", tf_names_cipher_suite))
        return false;
    decode_set_int(d, "cipher_suites_count",
                   (json_int_t)json_array_size(json_object_get(d->obj, "cipher_suites")));
    if (!decode_vec(d, c, 1, 1, 0xff, "legacy_compression_methods", &compression))
        return false;
    decode_codes8(d, &compression, "compression_methods", tf_names_compression);
    if (tf_cursor_empty(c))
        return true;
    if (!decode_extensions(d, c, 0, client_hello_exts, DECODE_N(client_hello_exts)))
        return false;
    return decode_end(d, c, "extensions");
}

bool
tf_decode_client_hello(const uint8_t *body, size_t len, json_t *obj,
                       struct tf_client_hello_info *info)
{
    struct tf_client_hello_info ch;
    struct decode d = {.obj = obj, .ch = &ch};
    struct tf_cursor c;
    bool ok;

    memset(&ch, 0, sizeof(ch));
    decode_init(&c, body, len);
    ok = client_hello_read(&d, &c);
    if (info != NULL)
        *info = ch;
    return ok;
}

/*
 * RFC 8446 §4.1.3 (RFC 5246 §7.4.1.3):
 *   ProtocolVersion legacy_version; Random random;
 *   opaque legacy_session_id_echo<0..32>; CipherSuite cipher_suite;
 *   uint8 legacy_compression_method; Extension extensions<6..2^16-1>;
 */
static bool
server_hello_read(struct decode *d, struct tf_cursor *c)
{
    struct tf_cursor session_id;
    const uint8_t *random;
    uint16_t version, suite;
    uint8_t compression;

    if (!decode_u16(d, c, "legacy_version", &version))
        return false;
    d->sh->legacy_version = version;
    d->sh->version = version;
    json_object_set_new_nocheck(d->obj, "legacy_version", decode_code16(tf_names_version, version));
    /* Until supported_versions says otherwise (RFC 8446 §4.2.1). */
    json_object_set_new_nocheck(d->obj, "version", decode_code16(tf_names_version, version));
    if (!decode_bytes(d, c, DECODE_RANDOM_LEN, "random", &random))
        return false;
    json_object_set_new_nocheck(d->obj, "random", decode_hex(random, DECODE_RANDOM_LEN));
    if (memcmp(random, decode_hrr_random, DECODE_RANDOM_LEN) == 0) {
        d->hrr = true;
        d->sh->hello_retry_request = true;
        json_object_set_new_nocheck(d->obj, "hello_retry_request", json_true());
    } else if (memcmp(random + 24, decode_downgrade, sizeof(decode_downgrade)) == 0 &&
               (random[31] == 0x01 || random[31] == 0x00)) {
        d->sh->downgrade_sentinel = true;
        json_object_set_new_nocheck(d->obj, "downgrade_sentinel",
                                    tf_json_string(random[31] == 0x01 ? "tls12" : "tls11"));
    }
    if (!decode_vec(d, c, 1, 0, DECODE_SESSION_ID_MAX, "legacy_session_id_echo", &session_id))
        return false;
    decode_set_int(d, "session_id_length", (json_int_t)tf_cursor_left(&session_id));
    if (!decode_u16(d, c, "cipher_suite", &suite))
        return false;
    d->sh->cipher_suite = suite;
    json_object_set_new_nocheck(d->obj, "cipher_suite",
                                decode_code16(tf_names_cipher_suite, suite));
    if (!decode_u8(d, c, "legacy_compression_method", &compression))
        return false;
    json_object_set_new_nocheck(d->obj, "compression_method",
                                decode_code8(tf_names_compression, compression));
    if (tf_cursor_empty(c))
        return true;
    if (!decode_extensions(d, c, 0, server_hello_exts, DECODE_N(server_hello_exts)))
        return false;
    return decode_end(d, c, "extensions");
}

bool
tf_decode_server_hello(const uint8_t *body, size_t len, json_t *obj,
                       struct tf_server_hello_info *info)
{
    struct tf_server_hello_info sh;
    struct decode d = {.obj = obj, .sh = &sh};
    struct tf_cursor c;
    bool ok;

    memset(&sh, 0, sizeof(sh));
    decode_init(&c, body, len);
    ok = server_hello_read(&d, &c);
    if (info != NULL)
        *info = sh;
    return ok;
}

/* ------------------------------------------------------------------ certificates */

/* One-line RFC 2253 form, as the troubleshooting guides print names. */
static json_t *
x509_name_json(const X509_NAME *name)
{
    char raw[DECODE_TEXT_MAX];
    BIO *bio = BIO_new(BIO_s_mem());
    int n = 0;
    json_t *out;

    if (bio == NULL)
        return json_null();
    if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) >= 0)
        n = BIO_read(bio, raw, sizeof(raw));
    out = decode_text((const uint8_t *)raw, n > 0 ? (size_t)n : 0);
    BIO_free(bio);
    return out;
}

/* RFC 3339 in UTC; null when OpenSSL cannot read the time. */
static json_t *
x509_time_json(const ASN1_TIME *t)
{
    char buf[64];
    struct tm tm;

    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
        return json_null();
    snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    return tf_json_string(buf);
}

static json_t *
x509_prefixed(const char *prefix, const ASN1_STRING *s)
{
    char text[DECODE_TEXT_MAX];
    char buf[DECODE_TEXT_MAX + 16];
    int n = s != NULL ? ASN1_STRING_length(s) : 0;

    decode_escape(n > 0 ? ASN1_STRING_get0_data(s) : NULL, n > 0 ? (size_t)n : 0, text,
                  sizeof(text));
    snprintf(buf, sizeof(buf), "%s%s", prefix, text);
    return tf_json_string(buf);
}

static json_t *
x509_ip(const ASN1_OCTET_STRING *ip)
{
    char text[INET6_ADDRSTRLEN];
    char buf[INET6_ADDRSTRLEN + 8];
    const unsigned char *p = ip != NULL ? ASN1_STRING_get0_data(ip) : NULL;
    int n = ip != NULL ? ASN1_STRING_length(ip) : 0;

    if ((n == 4 && inet_ntop(AF_INET, p, text, sizeof(text)) != NULL) ||
        (n == 16 && inet_ntop(AF_INET6, p, text, sizeof(text)) != NULL)) {
        snprintf(buf, sizeof(buf), "IP:%s", text);
        return tf_json_string(buf);
    }
    /* A name constraint's address+mask, or garbage: keep the bytes. */
    return x509_prefixed("IP:", ip);
}

/* subjectAltName entries as "DNS:…", "IP:…", "email:…", "URI:…". */
static void
x509_san(X509 *x, json_t *entry)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    json_t *arr;

    if (names == NULL)
        return;
    arr = json_array();
    for (int i = 0; i < sk_GENERAL_NAME_num(names) && i < DECODE_SAN_MAX; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        json_t *v = NULL;

        switch (g->type) {
        case GEN_DNS:
            v = x509_prefixed("DNS:", g->d.dNSName);
            break;
        case GEN_IPADD:
            v = x509_ip(g->d.iPAddress);
            break;
        case GEN_EMAIL:
            v = x509_prefixed("email:", g->d.rfc822Name);
            break;
        case GEN_URI:
            v = x509_prefixed("URI:", g->d.uniformResourceIdentifier);
            break;
        default:
            break;
        }
        if (v != NULL)
            json_array_append_new(arr, v);
    }
    GENERAL_NAMES_free(names);
    json_object_set_new_nocheck(entry, "san", arr);
}

static const char *
x509_key_type(int id)
{
    switch (id) {
    case EVP_PKEY_RSA:
        return "RSA";
    case EVP_PKEY_RSA_PSS:
        return "RSA-PSS";
    case EVP_PKEY_EC:
        return "EC";
    case EVP_PKEY_ED25519:
        return "Ed25519";
    case EVP_PKEY_ED448:
        return "Ed448";
    case EVP_PKEY_DSA:
        return "DSA";
    case EVP_PKEY_DH:
    case EVP_PKEY_DHX:
        return "DH";
    default:
        return NULL;
    }
}

static void
x509_key(X509 *x, json_t *entry)
{
    EVP_PKEY *key = X509_get0_pubkey(x);
    const char *type;
    char group[64];
    size_t glen = 0;

    if (key == NULL) {
        /* OpenSSL could not load the key: name its algorithm at least. */
        ASN1_OBJECT *alg = NULL;
        X509_PUBKEY *pub = X509_get_X509_PUBKEY(x);
        int nid = NID_undef;

        if (pub != NULL && X509_PUBKEY_get0_param(&alg, NULL, NULL, NULL, pub) == 1)
            nid = OBJ_obj2nid(alg);
        type = nid != NID_undef ? OBJ_nid2sn(nid) : NULL;
        json_object_set_new_nocheck(entry, "key_type", tf_json_string(type ? type : "unknown"));
        return;
    }
    type = x509_key_type(EVP_PKEY_get_base_id(key));
    if (type == NULL)
        type = OBJ_nid2sn(EVP_PKEY_get_base_id(key));
    json_object_set_new_nocheck(entry, "key_type", tf_json_string(type ? type : "unknown"));
    json_object_set_new_nocheck(entry, "key_bits", json_integer(EVP_PKEY_get_bits(key)));
    if (EVP_PKEY_get_base_id(key) == EVP_PKEY_EC &&
        EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                       &glen) == 1) {
        /* "P-256" reads better than "prime256v1" where NIST has a name. */
        const char *nist = EC_curve_nid2nist(OBJ_sn2nid(group));
        json_object_set_new_nocheck(entry, "curve", tf_json_string(nist ? nist : group));
    }
}

static void
x509_signature(X509 *x, json_t *entry)
{
    int nid = X509_get_signature_nid(x);
    const char *name = nid != NID_undef ? OBJ_nid2ln(nid) : NULL;
    const X509_ALGOR *alg = NULL;
    const ASN1_OBJECT *oid = NULL;
    char buf[128];

    if (name == NULL) {
        X509_get0_signature(NULL, &alg, x);
        if (alg != NULL)
            X509_ALGOR_get0(&oid, NULL, NULL, alg);
        if (oid == NULL || OBJ_obj2txt(buf, sizeof(buf), oid, 1) <= 0)
            snprintf(buf, sizeof(buf), "unknown");
        name = buf;
    }
    json_object_set_new_nocheck(entry, "signature_algorithm",
                                decode_text((const uint8_t *)name, strlen(name)));
}

/* extendedKeyUsage by short name ("serverAuth"); absent when the certificate has none. */
static void
x509_eku(X509 *x, json_t *entry)
{
    EXTENDED_KEY_USAGE *eku = X509_get_ext_d2i(x, NID_ext_key_usage, NULL, NULL);
    json_t *arr;

    if (eku == NULL)
        return;
    arr = json_array();
    for (int i = 0; i < sk_ASN1_OBJECT_num(eku) && i < DECODE_EKU_MAX; i++) {
        const ASN1_OBJECT *o = sk_ASN1_OBJECT_value(eku, i);
        int nid = OBJ_obj2nid(o);
        const char *sn = nid != NID_undef ? OBJ_nid2sn(nid) : NULL;
        char buf[96];

        if (sn != NULL)
            snprintf(buf, sizeof(buf), "%s", sn);
        else if (OBJ_obj2txt(buf, sizeof(buf), o, 1) <= 0)
            snprintf(buf, sizeof(buf), "unknown");
        json_array_append_new(arr, tf_json_string(buf));
    }
    EXTENDED_KEY_USAGE_free(eku);
    json_object_set_new_nocheck(entry, "eku", arr);
}

static bool
x509_is_ca(X509 *x)
{
    BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(x, NID_basic_constraints, NULL, NULL);
    bool ca = bc != NULL && bc->ca;

    BASIC_CONSTRAINTS_free(bc);
    return ca;
}

/* Issuer equals subject and the signature verifies with the certificate's own key. */
static bool
x509_self_signed(X509 *x)
{
    EVP_PKEY *key = X509_get0_pubkey(x);

    return key != NULL && X509_check_issued(x, x) == X509_V_OK && X509_verify(x, key) == 1;
}

/* Summarises one DER certificate; {"unparsable": length} when OpenSSL refuses it. */
static json_t *
x509_entry_decode(const uint8_t *der, size_t len)
{
    const unsigned char *p = der;
    json_t *entry = json_object();
    X509 *x;

    /* Garbage leaves errors behind; they are ours, not the flow's. */
    ERR_set_mark();
    x = d2i_X509(NULL, &p, (long)len);
    if (x == NULL) {
        json_object_set_new_nocheck(entry, "unparsable", json_integer((json_int_t)len));
        ERR_pop_to_mark();
        return entry;
    }
    json_object_set_new_nocheck(entry, "subject", x509_name_json(X509_get_subject_name(x)));
    json_object_set_new_nocheck(entry, "issuer", x509_name_json(X509_get_issuer_name(x)));
    x509_san(x, entry);
    json_object_set_new_nocheck(entry, "not_before", x509_time_json(X509_get0_notBefore(x)));
    json_object_set_new_nocheck(entry, "not_after", x509_time_json(X509_get0_notAfter(x)));
    x509_key(x, entry);
    x509_signature(x, entry);
    x509_eku(x, entry);
    json_object_set_new_nocheck(entry, "is_ca", json_boolean(x509_is_ca(x)));
    json_object_set_new_nocheck(entry, "self_signed", json_boolean(x509_self_signed(x)));
    if (p != der + len)
        json_object_set_new_nocheck(entry, "trailing_bytes",
                                    json_integer((json_int_t)(der + len - p)));
    X509_free(x);
    ERR_pop_to_mark();
    return entry;
}

static json_t *
x509_entry(const uint8_t *der, size_t len)
{
    struct x509_cache *c = len <= X509_CACHE_DER_MAX ? decode_thread_x509() : NULL;
    if (c == NULL)
        return x509_entry_decode(der, len);
    uint64_t h = decode_hash(der, len);
    struct x509_cached *victim = &c->slot[0];
    for (size_t i = 0; i < X509_CACHE_SLOTS; i++) {
        struct x509_cached *e = &c->slot[i];
        if (e->der != NULL && e->hash == h && e->len == len && memcmp(e->der, der, len) == 0) {
            e->stamp = ++c->clock;
            return json_deep_copy(e->entry);
        }
        if (e->der == NULL || (victim->der != NULL && e->stamp < victim->stamp))
            victim = e;
    }
    json_t *entry = x509_entry_decode(der, len);
    uint8_t *copy = malloc(len ? len : 1);
    json_t *kept = json_deep_copy(entry);
    if (copy == NULL || kept == NULL) {
        free(copy);
        json_decref(kept);
        return entry;
    }
    memcpy(copy, der, len);
    free(victim->der);
    json_decref(victim->entry);
    *victim = (struct x509_cached){ h, len, copy, kept, ++c->clock };
    return entry;
}

/* What an OCSPResponse says: responseStatus and, for the first single response, certStatus. */
static void
ocsp_summary(struct decode *d, const uint8_t *der, size_t len)
{
    const unsigned char *p = der;
    OCSP_RESPONSE *resp;
    OCSP_BASICRESP *basic;
    OCSP_SINGLERESP *single;
    int status;

    ERR_set_mark();
    resp = d2i_OCSP_RESPONSE(NULL, &p, (long)len);
    if (resp == NULL) {
        json_object_set_new_nocheck(d->obj, "ocsp_status", tf_json_string("unparsable"));
        ERR_pop_to_mark();
        return;
    }
    status = OCSP_response_status(resp);
    json_object_set_new_nocheck(d->obj, "ocsp_status",
                                tf_json_string(OCSP_response_status_str(status)));
    basic = status == OCSP_RESPONSE_STATUS_SUCCESSFUL ? OCSP_response_get1_basic(resp) : NULL;
    if (basic != NULL && OCSP_resp_count(basic) > 0 &&
        (single = OCSP_resp_get0(basic, 0)) != NULL) {
        int cs = OCSP_single_get0_status(single, NULL, NULL, NULL, NULL);
        if (cs >= 0)
            json_object_set_new_nocheck(d->obj, "cert_status",
                                        tf_json_string(OCSP_cert_status_str(cs)));
    }
    OCSP_BASICRESP_free(basic);
    OCSP_RESPONSE_free(resp);
    ERR_pop_to_mark();
}

/*
 * RFC 6066 §8 CertificateStatus { status_type; select: ocsp → OCSPResponse
 * response; } with OCSPResponse = opaque<1..2^24-1>; RFC 6961 adds ocsp_multi:
 * OCSPResponse ocsp_response_list<1..2^24-1>, entries <0..2^24-1>.
 */
static bool
certificate_status_read(struct decode *d, struct tf_cursor *c)
{
    struct tf_cursor resp, list;
    json_int_t total = 0, count = 0;
    uint8_t type;

    if (!decode_u8(d, c, "status_type", &type))
        return false;
    json_object_set_new_nocheck(d->obj, "status_type",
                                decode_code8(tf_names_cert_status_type, type));
    if (type == DECODE_STATUS_OCSP) {
        if (!decode_vec(d, c, 3, 1, 0xffffff, "response", &resp))
            return false;
        decode_set_int(d, "ocsp_response_length", (json_int_t)tf_cursor_left(&resp));
        ocsp_summary(d, resp.p, tf_cursor_left(&resp));
        return true;
    }
    if (type != DECODE_STATUS_OCSP_MULTI)
        return decode_fail(d, "status_type", "%u is not one we can read", type);
    if (!decode_vec(d, c, 3, 1, 0xffffff, "ocsp_response_list", &list))
        return false;
    while (!tf_cursor_empty(&list)) {
        if (!decode_vec(d, &list, 3, 0, 0xffffff, "response", &resp))
            return false;
        total += (json_int_t)tf_cursor_left(&resp);
        count++;
    }
    decode_set_int(d, "responses", count);
    decode_set_int(d, "ocsp_response_length", total);
    return true;
}

/* TLS 1.3 CertificateEntry extensions: status_request carries a CertificateStatus. */
static bool
ext_status_request_entry(struct decode *d, struct tf_cursor *data)
{
    return certificate_status_read(d, data);
}

static const struct decode_ext certificate_entry_exts[] = {
    {DECODE_EXT_STATUS_REQUEST, "status_request", ext_status_request_entry},
};

/*
 * TLS 1.2 (RFC 5246 §7.4.2): ASN.1Cert certificate_list<0..2^24-1>, each
 * opaque ASN.1Cert<1..2^24-1>.  TLS 1.3 (RFC 8446 §4.4.2): opaque
 * certificate_request_context<0..2^8-1>; CertificateEntry
 * certificate_list<0..2^24-1>, each { opaque cert_data<1..2^24-1>;
 * Extension extensions<0..2^16-1>; }.
 */
static bool
certificate_read(struct decode *d, struct tf_cursor *c, bool tls13)
{
    struct tf_cursor context, list;
    json_t *chain;

    if (tls13) {
        if (!decode_vec(d, c, 1, 0, 0xff, "certificate_request_context", &context))
            return false;
        decode_set_int(d, "context_length", (json_int_t)tf_cursor_left(&context));
    }
    decode_set_int(d, "chain_length", 0);
    chain = json_array();
    json_object_set_new_nocheck(d->obj, "chain", chain);
    if (!decode_vec(d, c, 3, 0, 0xffffff, "certificate_list", &list))
        return false;
    while (!tf_cursor_empty(&list)) {
        struct tf_cursor der;
        json_t *entry;

        if (!decode_vec(d, &list, 3, 1, 0xffffff, "cert_data", &der))
            return false;
        entry = x509_entry(der.p, tf_cursor_left(&der));
        json_array_append_new(chain, entry);
        decode_set_int(d, "chain_length", (json_int_t)json_array_size(chain));
        if (tls13) {
            json_t *outer = d->obj;
            bool ok;

            d->obj = entry;
            ok = decode_extensions(d, &list, 0, certificate_entry_exts,
                                   DECODE_N(certificate_entry_exts));
            d->obj = outer;
            if (json_array_size(json_object_get(entry, "extensions")) == 0)
                json_object_del(entry, "extensions");
            /* A failure inside an entry is the message's failure. */
            if (!ok) {
                json_t *why = json_object_get(entry, "malformed");
                return decode_fail(d, NULL, "%s", why ? json_string_value(why) : "entry");
            }
        }
    }
    return decode_end(d, c, "certificate_list");
}

bool
tf_decode_certificate(const uint8_t *body, size_t len, bool tls13, json_t *obj)
{
    struct decode d = {.obj = obj};
    struct tf_cursor c;

    decode_init(&c, body, len);
    return certificate_read(&d, &c, tls13);
}

bool
tf_decode_certificate_status(const uint8_t *body, size_t len, json_t *obj)
{
    struct decode d = {.obj = obj};
    struct tf_cursor c;

    decode_init(&c, body, len);
    return certificate_status_read(&d, &c) && decode_end(&d, &c, "response");
}

/* ------------------------------------------------------------------ key exchange */

/*
 * What a suite's ServerKeyExchange holds.  The message does not say, so we
 * go by the suite's IANA name, whose prefix is the key exchange (longest
 * prefixes first).  RSA_EXPORT is the one RSA case with a ServerKeyExchange.
 */
struct decode_kex {
    const char *prefix;
    const char *name;
    bool psk_hint; /* opaque psk_identity_hint<0..2^16-1> first (RFC 4279) */
    bool ec;       /* ServerECDHParams (RFC 8422 §5.4) */
    bool dh;       /* ServerDHParams (RFC 5246 §7.4.3) */
    bool rsa;      /* ServerRSAParams (RFC 4346 §7.4.3, export suites) */
    bool signed_;  /* a digitally-signed hash of the params follows */
};

static const struct decode_kex decode_kexes[] = {
    {"TLS_ECDHE_PSK_", "ECDHE_PSK", true, true, false, false, false},
    {"TLS_ECDHE_", "ECDHE", false, true, false, false, true},
    {"TLS_ECDH_anon_", "ECDH_anon", false, true, false, false, false},
    {"TLS_DHE_PSK_", "DHE_PSK", true, false, true, false, false},
    {"TLS_DHE_", "DHE", false, false, true, false, true},
    {"TLS_DH_anon_", "DH_anon", false, false, true, false, false},
    {"TLS_RSA_PSK_", "RSA_PSK", true, false, false, false, false},
    {"TLS_PSK_", "PSK", true, false, false, false, false},
    {"TLS_RSA_EXPORT_", "RSA_EXPORT", false, false, false, true, true},
};

static const struct decode_kex *
decode_kex_find(uint16_t suite)
{
    const char *name = tf_names_cipher_suite(suite);

    if (name == NULL)
        return NULL;
    for (size_t i = 0; i < DECODE_N(decode_kexes); i++)
        if (strncmp(name, decode_kexes[i].prefix, strlen(decode_kexes[i].prefix)) == 0)
            return &decode_kexes[i];
    return NULL;
}

/* Bits of a big-endian unsigned integer, leading zero bytes ignored. */
static json_int_t
decode_bits(const uint8_t *p, size_t n)
{
    while (n > 0 && *p == 0) {
        p++;
        n--;
    }
    if (n == 0)
        return 0;
    json_int_t bits = (json_int_t)(n - 1) * 8;
    for (uint8_t top = *p; top != 0; top >>= 1)
        bits++;
    return bits;
}

/*
 * digitally-signed: TLS 1.2 starts with the SignatureAndHashAlgorithm, TLS
 * 1.0/1.1 send the signature alone (RFC 5246 §4.7, §7.4.3).  The message
 * carries no version, so the layout that fills the rest exactly wins.
 */
static bool
ske_signature(struct decode *d, struct tf_cursor *c)
{
    struct tf_cursor fit = *c, sig;
    uint16_t scheme;

    if (tf_cursor_u16(&fit, &scheme) && tf_cursor_sub16(&fit, &sig) && tf_cursor_empty(&fit)) {
        json_object_set_new_nocheck(d->obj, "signature_algorithm",
                                    decode_code16(tf_names_sigscheme, scheme));
        decode_set_int(d, "signature_length", (json_int_t)tf_cursor_left(&sig));
        *c = fit;
        return true;
    }
    if (!decode_vec(d, c, 2, 1, 0xffff, "signature", &sig))
        return false;
    decode_set_int(d, "signature_length", (json_int_t)tf_cursor_left(&sig));
    return true;
}

static bool
ske_read(struct decode *d, struct tf_cursor *c, const struct decode_kex *k)
{
    struct tf_cursor v, p;

    if (k->psk_hint) {
        if (!decode_vec(d, c, 2, 0, 0xffff, "psk_identity_hint", &v))
            return false;
        decode_set_int(d, "psk_identity_hint_length", (json_int_t)tf_cursor_left(&v));
    }
    if (k->ec) {
        uint8_t curve_type;
        uint16_t group;

        if (!decode_u8(d, c, "curve_type", &curve_type))
            return false;
        /* Explicit curves were removed by RFC 8422 §5.4. */
        if (curve_type != DECODE_CURVE_NAMED)
            return decode_fail(d, "curve_type", "%u is not named_curve", curve_type);
        if (!decode_u16(d, c, "namedcurve", &group))
            return false;
        json_object_set_new_nocheck(d->obj, "group", decode_code16(tf_names_group, group));
        if (!decode_vec(d, c, 1, 1, 0xff, "public", &v))
            return false;
        decode_set_int(d, "public_length", (json_int_t)tf_cursor_left(&v));
    }
    if (k->dh) {
        if (!decode_vec(d, c, 2, 1, 0xffff, "dh_p", &p))
            return false;
        decode_set_int(d, "dh_p_bits", decode_bits(p.p, tf_cursor_left(&p)));
        if (!decode_vec(d, c, 2, 1, 0xffff, "dh_g", &v) ||
            !decode_vec(d, c, 2, 1, 0xffff, "dh_Ys", &v))
            return false;
        decode_set_int(d, "public_length", (json_int_t)tf_cursor_left(&v));
    }
    if (k->rsa) {
        if (!decode_vec(d, c, 2, 1, 0xffff, "rsa_modulus", &p) ||
            !decode_vec(d, c, 2, 1, 0xffff, "rsa_exponent", &v))
            return false;
        decode_set_int(d, "rsa_modulus_bits", decode_bits(p.p, tf_cursor_left(&p)));
    }
    if (k->signed_ && !ske_signature(d, c))
        return false;
    return decode_end(d, c, "params");
}

bool
tf_decode_server_key_exchange(const uint8_t *body, size_t len, uint16_t cipher_suite, json_t *obj)
{
    struct decode d = {.obj = obj};
    const struct decode_kex *k = decode_kex_find(cipher_suite);
    struct tf_cursor c;

    decode_init(&c, body, len);
    json_object_set_new_nocheck(obj, "cipher_suite",
                                decode_code16(tf_names_cipher_suite, cipher_suite));
    if (k == NULL) {
        /* Not a layout we know; say so rather than guess. */
        json_object_set_new_nocheck(obj, "kex", tf_json_string("unknown"));
        return true;
    }
    json_object_set_new_nocheck(obj, "kex", tf_json_string(k->name));
    return ske_read(&d, &c, k);
}

/*
 * ClientKeyExchange: the exchange is opaque<1..2^8-1> (ECDHE, RFC 8422 §5.7)
 * or opaque<1..2^16-1> (RSA, DHE, PSK; RFC 5246 §7.4.7); the suite decides
 * and is not passed in, so the prefix that fits the body exactly wins.  Only
 * the size is shown: the rest is key material.
 */
bool
tf_decode_client_key_exchange(const uint8_t *body, size_t len, json_t *obj)
{
    struct tf_cursor c, fit, v;

    decode_init(&c, body, len);
    fit = c;
    if (tf_cursor_sub8(&fit, &v) && tf_cursor_empty(&fit) && !tf_cursor_empty(&v)) {
        json_object_set_new_nocheck(obj, "exchange_length",
                                    json_integer((json_int_t)tf_cursor_left(&v)));
        return true;
    }
    fit = c;
    if (tf_cursor_sub16(&fit, &v) && tf_cursor_empty(&fit)) {
        json_object_set_new_nocheck(obj, "exchange_length",
                                    json_integer((json_int_t)tf_cursor_left(&v)));
        return true;
    }
    /* SSL 3.0 sent the RSA secret without a prefix; anything else is opaque to us. */
    json_object_set_new_nocheck(obj, "exchange_length", json_integer((json_int_t)len));
    return true;
}

/* ------------------------------------------------------------------ requests, tickets */

/*
 * TLS 1.2 (RFC 5246 §7.4.4): ClientCertificateType certificate_types<1..2^8-1>;
 * SignatureAndHashAlgorithm supported_signature_algorithms<2..2^16-2>;
 * DistinguishedName certificate_authorities<0..2^16-1>.
 */
static bool
certificate_request12_read(struct decode *d, struct tf_cursor *c)
{
    struct tf_cursor types, algs, cas;
    json_t *names;
    json_int_t count = 0;

    if (!decode_vec(d, c, 1, 1, 0xff, "certificate_types", &types))
        return false;
    decode_codes8(d, &types, "certificate_types", tf_names_client_cert_type);
    if (!decode_vec(d, c, 2, 2, 0xfffe, "supported_signature_algorithms", &algs) ||
        !decode_codes16(d, &algs, "supported_signature_algorithms", "signature_algorithms",
                        tf_names_sigscheme))
        return false;
    names = json_array();
    json_object_set_new_nocheck(d->obj, "ca_names", names);
    if (!decode_vec(d, c, 2, 0, 0xffff, "certificate_authorities", &cas))
        return false;
    while (!tf_cursor_empty(&cas)) {
        struct tf_cursor dn;
        const unsigned char *p;
        X509_NAME *name;

        if (!decode_vec(d, &cas, 2, 1, 0xffff, "DistinguishedName", &dn))
            return false;
        count++;
        if (count > DECODE_CA_NAMES_MAX)
            continue;
        ERR_set_mark();
        p = dn.p;
        name = d2i_X509_NAME(NULL, &p, (long)tf_cursor_left(&dn));
        json_array_append_new(names, name ? x509_name_json(name) : tf_json_string("unparsable"));
        X509_NAME_free(name);
        ERR_pop_to_mark();
    }
    decode_set_int(d, "ca_names_count", count);
    return decode_end(d, c, "certificate_authorities");
}

/*
 * TLS 1.3 (RFC 8446 §4.3.2): opaque certificate_request_context<0..2^8-1>;
 * Extension extensions<2..2^16-1>.
 */
static bool
certificate_request13_read(struct decode *d, struct tf_cursor *c)
{
    struct tf_cursor context;

    if (!decode_vec(d, c, 1, 0, 0xff, "certificate_request_context", &context))
        return false;
    decode_set_int(d, "context_length", (json_int_t)tf_cursor_left(&context));
    if (!decode_extensions(d, c, 2, certificate_request_exts, DECODE_N(certificate_request_exts)))
        return false;
    return decode_end(d, c, "extensions");
}

bool
tf_decode_certificate_request(const uint8_t *body, size_t len, bool tls13, json_t *obj)
{
    struct decode d = {.obj = obj};
    struct tf_cursor c;

    decode_init(&c, body, len);
    return tls13 ? certificate_request13_read(&d, &c) : certificate_request12_read(&d, &c);
}

/* RFC 5077 §3.3: uint32 ticket_lifetime_hint; opaque ticket<0..2^16-1>. */
static bool
ticket12_fits(struct tf_cursor c)
{
    struct tf_cursor v;
    uint32_t u;

    return tf_cursor_u32(&c, &u) && tf_cursor_sub16(&c, &v) && tf_cursor_empty(&c);
}

/*
 * RFC 8446 §4.6.1: uint32 ticket_lifetime; uint32 ticket_age_add; opaque
 * ticket_nonce<0..255>; opaque ticket<1..2^16-1>; Extension extensions<0..2^16-2>.
 */
static bool
ticket13_fits(struct tf_cursor c)
{
    struct tf_cursor v;
    uint32_t u;

    return tf_cursor_u32(&c, &u) && tf_cursor_u32(&c, &u) && tf_cursor_sub8(&c, &v) &&
           tf_cursor_sub16(&c, &v) && tf_cursor_sub16(&c, &v) && tf_cursor_empty(&c);
}

static bool
ticket13_read(struct decode *d, struct tf_cursor *c)
{
    struct tf_cursor nonce, ticket;
    uint32_t lifetime, age_add;

    if (!decode_u32(d, c, "ticket_lifetime", &lifetime) ||
        !decode_u32(d, c, "ticket_age_add", &age_add) ||
        !decode_vec(d, c, 1, 0, 0xff, "ticket_nonce", &nonce) ||
        !decode_vec(d, c, 2, 1, 0xffff, "ticket", &ticket))
        return false;
    decode_set_int(d, "lifetime_hint", lifetime);
    decode_set_int(d, "ticket_length", (json_int_t)tf_cursor_left(&ticket));
    if (!decode_extensions(d, c, 0, NULL, 0))
        return false;
    return decode_end(d, c, "extensions");
}

/*
 * Contract: the TLS 1.2 ticket.  A TLS 1.3 ticket can only reach us
 * decrypted (mitm), and its layout differs; whichever fits exactly is read,
 * and a message that fits neither is reported against the TLS 1.2 layout.
 */
bool
tf_decode_new_session_ticket(const uint8_t *body, size_t len, json_t *obj)
{
    struct decode d = {.obj = obj};
    struct tf_cursor c, ticket;
    uint32_t lifetime;

    decode_init(&c, body, len);
    if (!ticket12_fits(c) && ticket13_fits(c))
        return ticket13_read(&d, &c);
    if (!decode_u32(&d, &c, "ticket_lifetime_hint", &lifetime))
        return false;
    decode_set_int(&d, "lifetime_hint", lifetime);
    if (!decode_vec(&d, &c, 2, 0, 0xffff, "ticket", &ticket))
        return false;
    decode_set_int(&d, "ticket_length", (json_int_t)tf_cursor_left(&ticket));
    return decode_end(&d, &c, "ticket");
}

/* ------------------------------------------------------------------ alerts */

/* RFC 8446 §6 / RFC 5246 §7.2: struct { AlertLevel level; AlertDescription description; }. */
bool
tf_decode_alert(const uint8_t *body, size_t len, json_t *obj)
{
    struct decode d = {.obj = obj};
    struct tf_cursor c;
    uint8_t level, description;

    decode_init(&c, body, len);
    if (tf_cursor_u8(&c, &level))
        json_object_set_new_nocheck(obj, "level", decode_code8(tf_names_alert_level, level));
    if (tf_cursor_u8(&c, &description))
        json_object_set_new_nocheck(obj, "description", decode_code8(tf_names_alert, description));
    if (len != 2)
        return decode_fail(&d, "alert", "length %zu, expected 2", len);
    return true;
}

bool
tf_decode_handshake(uint8_t type, const uint8_t *body, size_t len, bool tls13,
                    uint16_t cipher_suite, json_t *obj, struct tf_client_hello_info *ch,
                    struct tf_server_hello_info *sh, const char **name, char *name_buf,
                    size_t name_len)
{
    struct tf_server_hello_info sh_local;
    bool ok = true;

    *name = tf_names_handshake_type(type);
    if (*name == NULL) {
        snprintf(name_buf, name_len, "unknown(%u)", type);
        *name = name_buf;
    }
    switch (type) {
    case TF_HS_CLIENT_HELLO:
        ok = tf_decode_client_hello(body, len, obj, ch);
        break;
    case TF_HS_SERVER_HELLO: /* or a HelloRetryRequest */
        if (sh == NULL)
            sh = &sh_local;
        memset(sh, 0, sizeof(*sh));
        ok = tf_decode_server_hello(body, len, obj, sh);
        if (ok && sh->hello_retry_request)
            *name = "hello_retry_request";
        break;
    case TF_HS_CERTIFICATE:
        ok = tf_decode_certificate(body, len, tls13, obj);
        break;
    case TF_HS_CERTIFICATE_STATUS:
        ok = tf_decode_certificate_status(body, len, obj);
        break;
    case TF_HS_SERVER_KEY_EXCHANGE:
        ok = tf_decode_server_key_exchange(body, len, cipher_suite, obj);
        break;
    case TF_HS_CERTIFICATE_REQUEST:
        ok = tf_decode_certificate_request(body, len, tls13, obj);
        break;
    case TF_HS_CLIENT_KEY_EXCHANGE:
        ok = tf_decode_client_key_exchange(body, len, obj);
        break;
    case TF_HS_NEW_SESSION_TICKET:
        ok = tf_decode_new_session_ticket(body, len, obj);
        break;
    default:
        break;
    }
    return ok;
}
