/*
 * rewrite.c — re-encoding of the handshake messages and records that
 * passthrough faults change (see rewrite.h for the contract).
 *
 * Each message rewriter works in two passes over the untrusted body.  The
 * first reads the whole message through bounded cursors, in the order of
 * its definition in the RFC, and rejects anything whose lengths do not add
 * up: every vector must fit its container and every container must be used
 * exactly.  The second pass walks the same, now known-good, views and
 * writes the new message into a buffer sized from the input (an edit only
 * ever removes bytes), then patches the lengths it could not know in
 * advance: the 24-bit handshake length, the list and extension block
 * lengths.  Nothing that is not being edited is looked into more than its
 * framing needs; those bytes are copied as they came.
 *
 * Left to others: finding the message in the stream (handshake.c), deciding
 * when a fault applies and emitting its event (the fault engine), and
 * making sense of the fields (decode.c).
 *
 * RFC 8446 §4 (handshake header), §4.1.2 ClientHello, §4.1.3 ServerHello,
 *   §4.2 extensions (no duplicates; pre_shared_key last, §4.2.11),
 *   §4.2.1 supported_versions, §4.4.2 Certificate, §5.1 records, §6 alerts;
 * RFC 5246 §6.2.1 fragmentation, §7.4.1.2 ClientHello, §7.4.2 Certificate;
 * RFC 6066 §3 server_name; RFC 7301 §3.1 ALPN; RFC 8701 GREASE;
 * RFC 9110 §15 status codes and reason phrases.
 */
#include <assert.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tlsfault/cursor.h"
#include "tlsfault/names.h"
#include "tlsfault/rewrite.h"

/* Handshake types (RFC 8446 §4) of the messages written here. */
#define REWRITE_HS_CLIENT_HELLO 1
#define REWRITE_HS_SERVER_HELLO 2
#define REWRITE_HS_CERTIFICATE 11

/* Extension types the ClientHello edits act on (IANA "TLS ExtensionType Values"). */
#define REWRITE_EXT_SERVER_NAME 0
#define REWRITE_EXT_ALPN 16
#define REWRITE_EXT_PRE_SHARED_KEY 41
#define REWRITE_EXT_SUPPORTED_VERSIONS 43

#define REWRITE_HS_HEADER 4
#define REWRITE_RECORD_HEADER 5
#define REWRITE_RECORD_MAX 16384 /* 2^14, RFC 8446 §5.1 */
#define REWRITE_BODY_MAX 0xffffff
#define REWRITE_RANDOM_LEN 32
#define REWRITE_SESSION_ID_MAX 32
#define REWRITE_TLS12 0x0303
#define REWRITE_TLS13 0x0304

/* How many removed cipher suites the change summary names before "...". */
#define REWRITE_NAMES_SHOWN 4
/* supported_versions<2..254> holds at most 127 versions. */
#define REWRITE_VERSIONS_MAX 127

/* ------------------------------------------------------------------ helpers */

static bool rewrite_fail(char *why, size_t why_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Says why the input is malformed and returns false, so parsers can `return rewrite_fail(...)`. */
static bool
rewrite_fail(char *why, size_t why_len, const char *fmt, ...)
{
    va_list ap;

    if (why == NULL || why_len == 0)
        return false;
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
    return false;
}

/* An empty body may come as NULL; a cursor must never do arithmetic on NULL. */
static void
rewrite_init(struct tf_cursor *c, const uint8_t *body, size_t len)
{
    static const uint8_t none[1];

    tf_cursor_init(c, body != NULL ? body : none, body != NULL ? len : 0);
}

/*
 * A length-prefixed vector (prefix of 1, 2 or 3 bytes) whose length must
 * lie in [min, max] and fit in what is left of c.
 */
static bool
rewrite_vec(struct tf_cursor *c, unsigned prefix, size_t min, size_t max, const char *what,
            struct tf_cursor *v, char *why, size_t why_len)
{
    struct tf_cursor save = *c;
    uint32_t n = 0;
    bool ok;

    switch (prefix) {
    case 1: {
        uint8_t n8 = 0;
        ok = tf_cursor_u8(c, &n8);
        n = n8;
        break;
    }
    case 2: {
        uint16_t n16 = 0;
        ok = tf_cursor_u16(c, &n16);
        n = n16;
        break;
    }
    default:
        assert(prefix == 3);
        ok = tf_cursor_u24(c, &n);
        break;
    }
    if (!ok) {
        *c = save;
        return rewrite_fail(why, why_len, "%s: length truncated (%zu of %u bytes)", what,
                            tf_cursor_left(c), prefix);
    }
    if (n < min || n > max) {
        *c = save;
        return rewrite_fail(why, why_len, "%s: length %u outside %zu..%zu", what, (unsigned)n, min,
                            max);
    }
    if (!tf_cursor_sub(c, n, v)) {
        size_t left = tf_cursor_left(c);
        *c = save;
        return rewrite_fail(why, why_len, "%s: length %u runs past its container (%zu left)",
                            what, (unsigned)n, left);
    }
    return true;
}

/* One extension {type, opaque extension_data<0..2^16-1>} and the bytes it spans. */
struct rewrite_ext {
    uint16_t type;
    const uint8_t *start; /* the type field */
    size_t size;          /* type, length and data */
    struct tf_cursor data;
};

/* Takes the next extension of a block whose framing rewrite_exts_check() has accepted. */
static bool
rewrite_ext_next(struct tf_cursor *block, struct rewrite_ext *e)
{
    e->start = block->p;
    if (!tf_cursor_u16(block, &e->type) || !tf_cursor_sub16(block, &e->data))
        return false;
    e->size = (size_t)(block->p - e->start);
    return true;
}

/* One bit per extension type, all clear between uses (see rewrite_exts_check()). */
struct rewrite_seen {
    uint8_t bits[65536 / 8];
};

/*
 * Checks the framing of an extension block's contents: whole extensions,
 * no type twice (RFC 8446 §4.2), and, with psk_last, pre_shared_key only
 * as the last one (§4.2.11: its binders cover everything before it).
 * seen starts clear and is left clear by unsetting the bits this block
 * set, rather than by a memset per block: a TLS 1.3 Certificate has a
 * block per entry, and a message of many tiny entries must not cost 8 KiB
 * of clearing each.
 */
static bool
rewrite_exts_check(struct tf_cursor block, const char *where, bool psk_last,
                   struct rewrite_seen *seen, char *why, size_t why_len)
{
    struct tf_cursor walk = block;
    struct rewrite_ext e;
    bool ok = true;

    while (ok && !tf_cursor_empty(&walk)) {
        size_t left = tf_cursor_left(&walk);

        if (!rewrite_ext_next(&walk, &e)) {
            ok = rewrite_fail(why, why_len, "%s: extension truncated (%zu bytes left)", where,
                              left);
        } else if (seen->bits[e.type >> 3] & (1u << (e.type & 7))) {
            ok = rewrite_fail(why, why_len, "%s: extension 0x%04x appears twice", where, e.type);
        } else {
            seen->bits[e.type >> 3] |= (uint8_t)(1u << (e.type & 7));
            if (psk_last && e.type == REWRITE_EXT_PRE_SHARED_KEY && !tf_cursor_empty(&walk))
                ok = rewrite_fail(why, why_len, "%s: pre_shared_key is not the last extension",
                                  where);
        }
    }
    /* The same walk again, up to where the first one stopped. */
    while (block.p < walk.p && rewrite_ext_next(&block, &e))
        seen->bits[e.type >> 3] &= (uint8_t)~(1u << (e.type & 7));
    return ok;
}

/*
 * The output buffer.  Its capacity is fixed from the input before writing,
 * so running over it is a bug in this file, not a property of the input.
 */
struct rewrite_out {
    uint8_t *p;
    size_t n;
    size_t cap;
};

static bool
rewrite_out_new(struct rewrite_out *w, size_t cap)
{
    w->p = malloc(cap > 0 ? cap : 1);
    w->n = 0;
    w->cap = cap;
    return w->p != NULL;
}

static void
rewrite_put(struct rewrite_out *w, const void *src, size_t n)
{
    assert(n <= w->cap - w->n);
    if (n > 0)
        memcpy(w->p + w->n, src, n);
    w->n += n;
}

static void
rewrite_put8(struct rewrite_out *w, uint8_t v)
{
    rewrite_put(w, &v, 1);
}

static void
rewrite_put16(struct rewrite_out *w, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    rewrite_put(w, b, 2);
}

static void
rewrite_put24(struct rewrite_out *w, uint32_t v)
{
    uint8_t b[3] = {(uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    rewrite_put(w, b, 3);
}

/* Copies a view's remaining bytes. */
static void
rewrite_put_view(struct rewrite_out *w, const struct tf_cursor *c)
{
    rewrite_put(w, c->p, tf_cursor_left(c));
}

/* Fills in a length written as a placeholder at `at`: the bytes from its end to the end. */
static void
rewrite_patch16(struct rewrite_out *w, size_t at)
{
    size_t n = w->n - at - 2;

    assert(at + 2 <= w->n && n <= 0xffff);
    w->p[at] = (uint8_t)(n >> 8);
    w->p[at + 1] = (uint8_t)n;
}

static void
rewrite_patch24(struct rewrite_out *w, size_t at)
{
    size_t n = w->n - at - 3;

    assert(at + 3 <= w->n && n <= REWRITE_BODY_MAX);
    w->p[at] = (uint8_t)(n >> 16);
    w->p[at + 1] = (uint8_t)(n >> 8);
    w->p[at + 2] = (uint8_t)n;
}

/* Starts a handshake message: type and a 24-bit length patched by rewrite_hs_end(). */
static void
rewrite_hs_begin(struct rewrite_out *w, uint8_t type)
{
    rewrite_put8(w, type);
    rewrite_put24(w, 0);
}

static void
rewrite_hs_end(struct rewrite_out *w, uint8_t **out, size_t *out_len)
{
    rewrite_patch24(w, 1);
    *out = w->p;
    *out_len = w->n;
}

/* Text that grows by appending, cut (never overrun) at the buffer's end. */
struct rewrite_text {
    char *buf;
    size_t len;
    size_t used;
};

static void rewrite_say(struct rewrite_text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
rewrite_say(struct rewrite_text *t, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (t->buf == NULL || t->len == 0 || t->used + 1 >= t->len)
        return;
    va_start(ap, fmt);
    n = vsnprintf(t->buf + t->used, t->len - t->used, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    t->used += (size_t)n;
    if (t->used >= t->len)
        t->used = t->len - 1;
}

/* Starts one item of the summary: "a; b; c". */
static void
rewrite_say_item(struct rewrite_text *t)
{
    if (t->used > 0)
        rewrite_say(t, "; ");
}

static const char *
rewrite_version_text(uint16_t v, char *buf, size_t len)
{
    return tf_names_or_code(tf_names_version(v), v, buf, len);
}

/* -------------------------------------------------------------- ClientHello */

/* The views of one ClientHello that the writer walks (RFC 8446 §4.1.2). */
struct rewrite_ch {
    uint16_t legacy_version;
    const uint8_t *random;
    struct tf_cursor session_id;
    struct tf_cursor suites;
    struct tf_cursor compression;
    bool has_extensions; /* TLS 1.2 lets a ClientHello end after compression_methods */
    struct tf_cursor extensions;
    bool has_versions;
    struct tf_cursor versions; /* supported_versions' list, without its length byte */
};

/*
 * Reads and checks a ClientHello body.  The contents of the extensions are
 * left alone except supported_versions, whose list an edit may rewrite.
 */
static bool
rewrite_ch_parse(struct rewrite_ch *ch, const uint8_t *body, size_t len, char *why,
                 size_t why_len)
{
    struct tf_cursor c, exts;
    struct rewrite_seen seen;

    memset(ch, 0, sizeof(*ch));
    memset(&seen, 0, sizeof(seen));
    rewrite_init(&c, body, len);
    if (len > REWRITE_BODY_MAX)
        return rewrite_fail(why, why_len, "client_hello: %zu bytes is more than a handshake "
                            "message holds", len);
    if (!tf_cursor_u16(&c, &ch->legacy_version))
        return rewrite_fail(why, why_len, "legacy_version: truncated (%zu of 2 bytes)",
                            tf_cursor_left(&c));
    if (!tf_cursor_bytes(&c, REWRITE_RANDOM_LEN, &ch->random))
        return rewrite_fail(why, why_len, "random: truncated (%zu of 32 bytes)",
                            tf_cursor_left(&c));
    if (!rewrite_vec(&c, 1, 0, REWRITE_SESSION_ID_MAX, "legacy_session_id", &ch->session_id, why,
                     why_len) ||
        !rewrite_vec(&c, 2, 2, 0xfffe, "cipher_suites", &ch->suites, why, why_len))
        return false;
    if (tf_cursor_left(&ch->suites) % 2 != 0)
        return rewrite_fail(why, why_len, "cipher_suites: odd length %zu",
                            tf_cursor_left(&ch->suites));
    if (!rewrite_vec(&c, 1, 1, 0xff, "legacy_compression_methods", &ch->compression, why,
                     why_len))
        return false;
    if (tf_cursor_empty(&c))
        return true;
    ch->has_extensions = true;
    if (!rewrite_vec(&c, 2, 0, 0xffff, "extensions", &ch->extensions, why, why_len))
        return false;
    if (!tf_cursor_empty(&c))
        return rewrite_fail(why, why_len, "client_hello: %zu bytes after the extensions",
                            tf_cursor_left(&c));
    if (!rewrite_exts_check(ch->extensions, "extensions", true, &seen, why, why_len))
        return false;
    exts = ch->extensions;
    while (!tf_cursor_empty(&exts)) {
        struct rewrite_ext e;
        struct tf_cursor data;

        if (!rewrite_ext_next(&exts, &e))
            return rewrite_fail(why, why_len, "extensions: truncated");
        if (e.type != REWRITE_EXT_SUPPORTED_VERSIONS)
            continue;
        /* RFC 8446 §4.2.1: ProtocolVersion versions<2..254> in a ClientHello. */
        data = e.data;
        if (!rewrite_vec(&data, 1, 2, 254, "supported_versions", &ch->versions, why, why_len))
            return false;
        if (!tf_cursor_empty(&data))
            return rewrite_fail(why, why_len, "supported_versions: %zu bytes after the list",
                                tf_cursor_left(&data));
        if (tf_cursor_left(&ch->versions) % 2 != 0)
            return rewrite_fail(why, why_len, "supported_versions: odd length %zu",
                                tf_cursor_left(&ch->versions));
        ch->has_versions = true;
    }
    return true;
}

/*
 * strip_ciphers split into its globs: a copy of the string with every ':'
 * and ',' turned into a NUL, spaces around each glob dropped.
 */
struct rewrite_globs {
    char *buf;
    size_t len;
    bool any; /* at least one non-empty glob */
};

static bool
rewrite_globs_new(struct rewrite_globs *g, const char *spec)
{
    memset(g, 0, sizeof(*g));
    if (spec == NULL)
        return true;
    g->len = strlen(spec);
    g->buf = malloc(g->len + 1);
    if (g->buf == NULL)
        return false;
    memcpy(g->buf, spec, g->len + 1);
    for (size_t i = 0; i < g->len; i++) {
        if (g->buf[i] == ':' || g->buf[i] == ',' || g->buf[i] == ' ' || g->buf[i] == '\t')
            g->buf[i] = '\0';
        else
            g->any = true;
    }
    return true;
}

static void
rewrite_globs_free(struct rewrite_globs *g)
{
    free(g->buf);
    g->buf = NULL;
}

/* A suite matches when a glob matches its IANA name or its "0x%04x" form. */
static bool
rewrite_globs_match(const struct rewrite_globs *g, uint16_t suite)
{
    const char *name = tf_names_cipher_suite(suite);
    char hex[8];

    if (!g->any)
        return false;
    snprintf(hex, sizeof(hex), "0x%04x", (unsigned)suite);
    for (size_t i = 0; i < g->len; i += strlen(g->buf + i) + 1) {
        const char *glob = g->buf + i;

        if (*glob == '\0')
            continue;
        if ((name != NULL && fnmatch(glob, name, FNM_CASEFOLD) == 0) ||
            fnmatch(glob, hex, FNM_CASEFOLD) == 0)
            return true;
    }
    return false;
}

/* What the writer removed, for the change summary. */
struct rewrite_ch_done {
    unsigned suites_total;
    unsigned suites_removed;
    uint16_t suites_shown[REWRITE_NAMES_SHOWN];
    unsigned versions_removed;
    uint16_t versions[REWRITE_VERSIONS_MAX];
    bool versions_dropped; /* the whole supported_versions extension */
    bool sni_dropped;
    bool alpn_dropped;
};

/* Writes cipher_suites<2..2^16-2> without the matching suites; GREASE ones stay (RFC 8701). */
static void
rewrite_ch_suites(struct rewrite_out *w, const struct rewrite_ch *ch,
                  const struct rewrite_globs *globs, struct rewrite_ch_done *done)
{
    struct tf_cursor s = ch->suites;
    size_t at = w->n;
    uint16_t suite;

    rewrite_put16(w, 0);
    while (tf_cursor_u16(&s, &suite)) {
        done->suites_total++;
        if (!tf_names_is_grease(suite) && rewrite_globs_match(globs, suite)) {
            if (done->suites_removed < REWRITE_NAMES_SHOWN)
                done->suites_shown[done->suites_removed] = suite;
            done->suites_removed++;
            continue;
        }
        rewrite_put16(w, suite);
    }
    rewrite_patch16(w, at);
}

/*
 * Writes supported_versions without the versions above max (GREASE stays),
 * or nothing when no real version would be left or the edit asks for the
 * extension to go.  Returns whether TLS 1.3 (or a later or draft version)
 * is still offered.
 */
static bool
rewrite_ch_versions(struct rewrite_out *w, const struct rewrite_ch *ch, const struct rewrite_ext *e,
                    const struct tf_client_hello_edit *edit, struct rewrite_ch_done *done)
{
    uint16_t max = edit->max_version != 0 ? edit->max_version : 0xffff;
    uint16_t keep[REWRITE_VERSIONS_MAX];
    size_t nkeep = 0;
    bool real = false, tls13 = false;
    struct tf_cursor list = ch->versions;
    uint16_t v;

    while (tf_cursor_u16(&list, &v)) {
        if (tf_names_is_grease(v)) {
            keep[nkeep++] = v;
        } else if (v > max) {
            done->versions[done->versions_removed++] = v;
        } else {
            keep[nkeep++] = v;
            real = true;
            tls13 = tls13 || v >= REWRITE_TLS13;
        }
    }
    if (!real || edit->remove_supported_versions) {
        done->versions_dropped = true;
        return false;
    }
    if (done->versions_removed == 0) {
        rewrite_put(w, e->start, e->size);
        return tls13;
    }
    rewrite_put16(w, e->type);
    rewrite_put16(w, (uint16_t)(1 + 2 * nkeep));
    rewrite_put8(w, (uint8_t)(2 * nkeep));
    for (size_t i = 0; i < nkeep; i++)
        rewrite_put16(w, keep[i]);
    return tls13;
}

/* The change summary of a ClientHello rewrite (rewrite.h). */
static void
rewrite_ch_summary(const struct rewrite_ch_done *done, uint16_t old_legacy, uint16_t new_legacy,
                   bool versions_edited, char *changes, size_t changes_len)
{
    struct rewrite_text t = {changes, changes_len, 0};
    char name[64];

    if (changes != NULL && changes_len > 0)
        changes[0] = '\0';
    if (done->versions_dropped) {
        rewrite_say_item(&t);
        rewrite_say(&t, "removed supported_versions");
    } else if (done->versions_removed > 0) {
        rewrite_say_item(&t);
        rewrite_say(&t, "supported_versions: removed ");
        for (unsigned i = 0; i < done->versions_removed; i++)
            rewrite_say(&t, "%s%s", i ? ", " : "",
                        rewrite_version_text(done->versions[i], name, sizeof(name)));
    }
    if (versions_edited) {
        rewrite_say_item(&t);
        rewrite_say(&t, "legacy_version 0x%04x", new_legacy);
        if (new_legacy != old_legacy)
            rewrite_say(&t, " (was 0x%04x)", old_legacy);
    }
    if (done->suites_removed > 0) {
        unsigned shown = done->suites_removed < REWRITE_NAMES_SHOWN ? done->suites_removed
                                                                   : REWRITE_NAMES_SHOWN;
        rewrite_say_item(&t);
        rewrite_say(&t, "cipher_suites: removed %u of %u (", done->suites_removed,
                    done->suites_total);
        for (unsigned i = 0; i < shown; i++) {
            uint16_t s = done->suites_shown[i];
            const char *n = tf_names_cipher_suite(s);

            if (n != NULL)
                rewrite_say(&t, "%s%s", i ? ", " : "", n);
            else
                rewrite_say(&t, "%s0x%04x", i ? ", " : "", s);
        }
        rewrite_say(&t, "%s)", done->suites_removed > shown ? ", ..." : "");
    }
    if (done->sni_dropped) {
        rewrite_say_item(&t);
        rewrite_say(&t, "removed server_name");
    }
    if (done->alpn_dropped) {
        rewrite_say_item(&t);
        rewrite_say(&t, "removed application_layer_protocol_negotiation");
    }
}

/*
 * The version edit's legacy_version (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2).
 * While TLS 1.3 is offered through supported_versions the field stays as
 * the client wrote it (0x0303 by the RFC).  Otherwise it is the client's
 * highest version and becomes min(0x0303, max): without supported_versions
 * nothing above TLS 1.2 can be offered.  It never goes up: a client that
 * offers only TLS 1.0 is not made to offer TLS 1.2.
 */
static uint16_t
rewrite_ch_legacy(uint16_t legacy, uint16_t max, bool tls13_offered)
{
    if (tls13_offered)
        return legacy;
    if (legacy > REWRITE_TLS12)
        legacy = REWRITE_TLS12;
    return legacy > max ? max : legacy;
}

enum tf_rewrite
tf_rewrite_client_hello(const uint8_t *body, size_t len, const struct tf_client_hello_edit *edit,
                        uint8_t **out, size_t *out_len, char *changes, size_t changes_len,
                        char *why, size_t why_len)
{
    struct rewrite_ch ch;
    struct rewrite_ch_done done;
    struct rewrite_globs globs;
    struct rewrite_out w;
    struct tf_cursor exts;
    bool versions_edited, tls13 = false;
    uint16_t legacy;
    size_t ext_at = 0;

    *out = NULL;
    *out_len = 0;
    if (changes != NULL && changes_len > 0)
        changes[0] = '\0';
    if (why != NULL && why_len > 0)
        why[0] = '\0';
    if (!rewrite_ch_parse(&ch, body, len, why, why_len))
        return TF_REWRITE_BAD;
    versions_edited = edit->max_version != 0 || edit->remove_supported_versions;
    if (!rewrite_globs_new(&globs, edit->strip_ciphers)) {
        rewrite_fail(why, why_len, "out of memory");
        return TF_REWRITE_BAD;
    }
    if (!rewrite_out_new(&w, REWRITE_HS_HEADER + len)) {
        rewrite_globs_free(&globs);
        rewrite_fail(why, why_len, "out of memory");
        return TF_REWRITE_BAD;
    }
    memset(&done, 0, sizeof(done));

    rewrite_hs_begin(&w, REWRITE_HS_CLIENT_HELLO);
    rewrite_put16(&w, ch.legacy_version); /* settled below, once versions are known */
    rewrite_put(&w, ch.random, REWRITE_RANDOM_LEN);
    rewrite_put8(&w, (uint8_t)tf_cursor_left(&ch.session_id));
    rewrite_put_view(&w, &ch.session_id);
    rewrite_ch_suites(&w, &ch, &globs, &done);
    rewrite_globs_free(&globs);
    rewrite_put8(&w, (uint8_t)tf_cursor_left(&ch.compression));
    rewrite_put_view(&w, &ch.compression);
    if (ch.has_extensions) {
        /* Only removals and a shorter list: the order stays, so pre_shared_key stays last. */
        ext_at = w.n;
        rewrite_put16(&w, 0);
        exts = ch.extensions;
        while (!tf_cursor_empty(&exts)) {
            struct rewrite_ext e;

            if (!rewrite_ext_next(&exts, &e))
                break; /* cannot happen: rewrite_ch_parse() checked the framing */
            if (e.type == REWRITE_EXT_SERVER_NAME && edit->strip_sni) {
                done.sni_dropped = true;
            } else if (e.type == REWRITE_EXT_ALPN && edit->strip_alpn) {
                done.alpn_dropped = true;
            } else if (e.type == REWRITE_EXT_SUPPORTED_VERSIONS && versions_edited) {
                tls13 = rewrite_ch_versions(&w, &ch, &e, edit, &done);
            } else {
                if (e.type == REWRITE_EXT_SUPPORTED_VERSIONS)
                    tls13 = true; /* left alone: whatever it offers stays offered */
                rewrite_put(&w, e.start, e.size);
            }
        }
        rewrite_patch16(&w, ext_at);
    }
    legacy = ch.legacy_version;
    if (versions_edited)
        legacy = rewrite_ch_legacy(ch.legacy_version,
                                   edit->max_version != 0 ? edit->max_version : 0xffff, tls13);
    w.p[REWRITE_HS_HEADER] = (uint8_t)(legacy >> 8);
    w.p[REWRITE_HS_HEADER + 1] = (uint8_t)legacy;

    if (done.suites_removed > 0 && done.suites_removed == done.suites_total) {
        /* cipher_suites<2..2^16-2>: an empty list cannot be sent at all. */
        free(w.p);
        rewrite_fail(why, why_len, "cipher_suites: strip_ciphers \"%s\" matches all %u suites; "
                     "an empty list cannot be encoded", edit->strip_ciphers, done.suites_total);
        return TF_REWRITE_BAD;
    }
    if (legacy == ch.legacy_version && done.suites_removed == 0 && done.versions_removed == 0 &&
        !done.versions_dropped && !done.sni_dropped && !done.alpn_dropped) {
        free(w.p);
        return TF_REWRITE_SAME;
    }
    rewrite_ch_summary(&done, ch.legacy_version, legacy,
                       legacy != ch.legacy_version || done.versions_removed > 0 ||
                           done.versions_dropped,
                       changes, changes_len);
    rewrite_hs_end(&w, out, out_len);
    return TF_REWRITE_OK;
}

/* -------------------------------------------------------------- ServerHello */

enum tf_rewrite
tf_rewrite_server_hello_version(const uint8_t *body, size_t len, uint16_t version, uint8_t **out,
                                size_t *out_len, char *why, size_t why_len)
{
    struct tf_cursor c, session_id, exts;
    struct rewrite_seen seen;
    uint16_t legacy, suite;
    uint8_t compression;
    struct rewrite_out w;

    *out = NULL;
    *out_len = 0;
    if (why != NULL && why_len > 0)
        why[0] = '\0';
    rewrite_init(&c, body, len);
    /* RFC 8446 §4.1.3 / RFC 5246 §7.4.1.3: read it all, so only a real ServerHello is edited. */
    if (len > REWRITE_BODY_MAX) {
        rewrite_fail(why, why_len, "server_hello: %zu bytes is more than a handshake message "
                     "holds", len);
        return TF_REWRITE_BAD;
    }
    if (!tf_cursor_u16(&c, &legacy)) {
        rewrite_fail(why, why_len, "legacy_version: truncated (%zu of 2 bytes)",
                     tf_cursor_left(&c));
        return TF_REWRITE_BAD;
    }
    if (!tf_cursor_skip(&c, REWRITE_RANDOM_LEN)) {
        rewrite_fail(why, why_len, "random: truncated (%zu of 32 bytes)", tf_cursor_left(&c));
        return TF_REWRITE_BAD;
    }
    if (!rewrite_vec(&c, 1, 0, REWRITE_SESSION_ID_MAX, "legacy_session_id_echo", &session_id, why,
                     why_len))
        return TF_REWRITE_BAD;
    if (!tf_cursor_u16(&c, &suite)) {
        rewrite_fail(why, why_len, "cipher_suite: truncated (%zu of 2 bytes)", tf_cursor_left(&c));
        return TF_REWRITE_BAD;
    }
    if (!tf_cursor_u8(&c, &compression)) {
        rewrite_fail(why, why_len, "legacy_compression_method: truncated");
        return TF_REWRITE_BAD;
    }
    if (!tf_cursor_empty(&c)) {
        memset(&seen, 0, sizeof(seen));
        if (!rewrite_vec(&c, 2, 0, 0xffff, "extensions", &exts, why, why_len) ||
            !rewrite_exts_check(exts, "extensions", false, &seen, why, why_len))
            return TF_REWRITE_BAD;
        if (!tf_cursor_empty(&c)) {
            rewrite_fail(why, why_len, "server_hello: %zu bytes after the extensions",
                         tf_cursor_left(&c));
            return TF_REWRITE_BAD;
        }
    }
    if (legacy == version)
        return TF_REWRITE_SAME;
    if (!rewrite_out_new(&w, REWRITE_HS_HEADER + len)) {
        rewrite_fail(why, why_len, "out of memory");
        return TF_REWRITE_BAD;
    }
    rewrite_hs_begin(&w, REWRITE_HS_SERVER_HELLO);
    rewrite_put16(&w, version);
    rewrite_put(&w, body + 2, len - 2);
    rewrite_hs_end(&w, out, out_len);
    return TF_REWRITE_OK;
}

/* -------------------------------------------------------------- Certificate */

/*
 * One entry of certificate_list: ASN.1Cert<1..2^24-1> (TLS 1.2), followed
 * in TLS 1.3 by Extension extensions<0..2^16-1>.  start and size span the
 * whole entry so the writer can copy it as it came.
 */
static bool
rewrite_cert_entry(struct tf_cursor *list, bool tls13, unsigned index, struct rewrite_seen *seen,
                   const uint8_t **start, size_t *size, char *why, size_t why_len)
{
    struct tf_cursor der, exts;
    char what[48];

    *start = list->p;
    snprintf(what, sizeof(what), "certificate %u", index);
    if (!rewrite_vec(list, 3, 1, REWRITE_BODY_MAX, what, &der, why, why_len))
        return false;
    if (tls13) {
        snprintf(what, sizeof(what), "certificate %u extensions", index);
        if (!rewrite_vec(list, 2, 0, 0xffff, what, &exts, why, why_len) ||
            !rewrite_exts_check(exts, what, false, seen, why, why_len))
            return false;
    }
    *size = (size_t)(list->p - *start);
    return true;
}

enum tf_rewrite
tf_rewrite_certificate(const uint8_t *body, size_t len, bool tls13, uint32_t keep_mask,
                       uint8_t **out, size_t *out_len, unsigned *kept, unsigned *total, char *why,
                       size_t why_len)
{
    struct tf_cursor c, context, list, walk;
    struct rewrite_seen seen;
    struct rewrite_out w;
    unsigned n = 0, k = 0;
    size_t list_at;

    *out = NULL;
    *out_len = 0;
    *kept = 0;
    *total = 0;
    if (why != NULL && why_len > 0)
        why[0] = '\0';
    rewrite_init(&c, body, len);
    if (len > REWRITE_BODY_MAX) {
        rewrite_fail(why, why_len, "certificate: %zu bytes is more than a handshake message holds",
                     len);
        return TF_REWRITE_BAD;
    }
    /* RFC 8446 §4.4.2 / RFC 5246 §7.4.2. */
    if (tls13 && !rewrite_vec(&c, 1, 0, 0xff, "certificate_request_context", &context, why,
                              why_len))
        return TF_REWRITE_BAD;
    if (!rewrite_vec(&c, 3, 0, REWRITE_BODY_MAX, "certificate_list", &list, why, why_len))
        return TF_REWRITE_BAD;
    if (!tf_cursor_empty(&c)) {
        rewrite_fail(why, why_len, "certificate: %zu bytes after certificate_list",
                     tf_cursor_left(&c));
        return TF_REWRITE_BAD;
    }
    memset(&seen, 0, sizeof(seen));
    walk = list;
    while (!tf_cursor_empty(&walk)) {
        const uint8_t *start;
        size_t size;

        if (!rewrite_cert_entry(&walk, tls13, n, &seen, &start, &size, why, why_len))
            return TF_REWRITE_BAD;
        /* Positions past 31 have no bit in keep_mask and are never kept. */
        if (n < 32 && (keep_mask & (UINT32_C(1) << n)))
            k++;
        n++;
    }
    *kept = k;
    *total = n;
    if (k == n)
        return TF_REWRITE_SAME;
    if (!rewrite_out_new(&w, REWRITE_HS_HEADER + len)) {
        rewrite_fail(why, why_len, "out of memory");
        return TF_REWRITE_BAD;
    }
    rewrite_hs_begin(&w, REWRITE_HS_CERTIFICATE);
    if (tls13) {
        rewrite_put8(&w, (uint8_t)tf_cursor_left(&context));
        rewrite_put_view(&w, &context);
    }
    list_at = w.n;
    rewrite_put24(&w, 0);
    walk = list;
    for (unsigned i = 0; i < n; i++) {
        const uint8_t *start;
        size_t size;

        if (!rewrite_cert_entry(&walk, tls13, i, &seen, &start, &size, NULL, 0))
            break; /* cannot happen: checked above */
        if (i < 32 && (keep_mask & (UINT32_C(1) << i)))
            rewrite_put(&w, start, size);
    }
    rewrite_patch24(&w, list_at);
    rewrite_hs_end(&w, out, out_len);
    return TF_REWRITE_OK;
}

/* ------------------------------------------------------------------ records */

/*
 * RFC 8446 §5.1 / RFC 5246 §6.2.1: each record is type, version, a 16-bit
 * length and at most 2^14 bytes.  No bytes give no records (an empty
 * handshake fragment is illegal); *out is then a valid empty buffer.
 */
bool
tf_rewrite_frame(uint8_t type, uint16_t version, const uint8_t *p, size_t n, size_t max_fragment,
                 uint8_t **out, size_t *out_len)
{
    struct rewrite_out w;
    size_t records, cap;

    *out = NULL;
    *out_len = 0;
    if (max_fragment < 1 || max_fragment > REWRITE_RECORD_MAX || (p == NULL && n > 0))
        return false;
    records = n / max_fragment + (n % max_fragment != 0);
    if (records > (SIZE_MAX - n) / REWRITE_RECORD_HEADER)
        return false;
    cap = n + records * REWRITE_RECORD_HEADER;
    if (!rewrite_out_new(&w, cap))
        return false;
    for (size_t off = 0; off < n; off += max_fragment) {
        size_t take = n - off < max_fragment ? n - off : max_fragment;

        rewrite_put8(&w, type);
        rewrite_put16(&w, version);
        rewrite_put16(&w, (uint16_t)take);
        rewrite_put(&w, p + off, take);
    }
    assert(w.n == cap);
    *out = w.p;
    *out_len = w.n;
    return true;
}

void
tf_rewrite_alert_record(uint16_t version, uint8_t level, uint8_t description, uint8_t out[7])
{
    /* RFC 8446 §6 / RFC 5246 §7.2: ContentType alert(21), then a 2-byte Alert. */
    out[0] = 21;
    out[1] = (uint8_t)(version >> 8);
    out[2] = (uint8_t)version;
    out[3] = 0;
    out[4] = 2;
    out[5] = level;
    out[6] = description;
}

/* --------------------------------------------------------------------- HTTP */

struct rewrite_reason {
    unsigned status;
    const char *phrase;
};

/* RFC 9110 §15: the statuses a fault is likely to answer with. */
static const struct rewrite_reason rewrite_reasons[] = {
    {200, "OK"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {408, "Request Timeout"},
    {421, "Misdirected Request"},
    {426, "Upgrade Required"},
    {429, "Too Many Requests"},
    {500, "Internal Server Error"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
};

static const char *
rewrite_reason_phrase(unsigned status)
{
    for (size_t i = 0; i < sizeof(rewrite_reasons) / sizeof(rewrite_reasons[0]); i++)
        if (rewrite_reasons[i].status == status)
            return rewrite_reasons[i].phrase;
    return "Unknown";
}

bool
tf_rewrite_http_response(unsigned status, const uint8_t *body, size_t body_len, uint8_t **out,
                         size_t *out_len)
{
    const char *phrase = rewrite_reason_phrase(status);
    char page[256];
    char head[256];
    int page_len, head_len;
    size_t total;
    uint8_t *buf;

    *out = NULL;
    *out_len = 0;
    /* A status line carries exactly three digits (RFC 9112 §4). */
    if (status < 100 || status > 999)
        return false;
    if (body == NULL) {
        page_len = snprintf(page, sizeof(page),
                            "<html><head><title>%u %s</title></head>"
                            "<body><h1>%u %s</h1></body></html>\n",
                            status, phrase, status, phrase);
        if (page_len < 0 || (size_t)page_len >= sizeof(page))
            return false;
        body = (const uint8_t *)page;
        body_len = (size_t)page_len;
    }
    head_len = snprintf(head, sizeof(head),
                        "HTTP/1.1 %u %s\r\n"
                        "Content-Type: text/html\r\n"
                        "Content-Length: %zu\r\n"
                        "Connection: close\r\n"
                        "\r\n",
                        status, phrase, body_len);
    if (head_len < 0 || (size_t)head_len >= sizeof(head) ||
        body_len > SIZE_MAX - (size_t)head_len)
        return false;
    total = (size_t)head_len + body_len;
    buf = malloc(total);
    if (buf == NULL)
        return false;
    memcpy(buf, head, (size_t)head_len);
    if (body_len > 0)
        memcpy(buf + head_len, body, body_len);
    *out = buf;
    *out_len = total;
    return true;
}
