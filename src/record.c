/*
 * record.c — TLS record framing for one direction of a stream.
 *
 * Job: find record boundaries in bytes that arrive in arbitrary pieces,
 * check each 5-byte header (RFC 8446 §5.1, RFC 5246 §6.2.1) and hand out
 * whole records.  Decoding what is inside is left to handshake.c and
 * decode.c; deciding what to do with a stream that is not TLS is left to
 * the flow (it relays it unchanged).
 *
 * A record that arrives whole inside one feed is handed out in place; only
 * a record split across feeds is copied into the assembly buffer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tlsfault/record.h"

void
tf_record_reader_init(struct tf_record_reader *r)
{
    memset(r, 0, sizeof(*r));
}

void
tf_record_reader_release(struct tf_record_reader *r)
{
    free(r->body);
    r->body = NULL;
    r->body_cap = 0;
}

static bool
record_is_http_start(const uint8_t *p, size_t n)
{
    static const char *const starts[] = {
        "GET ", "POST", "HEAD", "PUT ", "DELE", "OPTI", "PATC", "CONN", "TRAC", "PRI ", "HTTP",
    };
    if (n < 4)
        return false;
    for (size_t i = 0; i < sizeof(starts) / sizeof(starts[0]); i++)
        if (memcmp(p, starts[i], 4) == 0)
            return true;
    return false;
}

enum tf_parse
tf_record_classify(const uint8_t *p, size_t n, enum tf_stream_kind *kind)
{
    if (n == 0)
        return TF_PARSE_NEED_MORE;
    if (p[0] >= TF_CT_CHANGE_CIPHER_SPEC && p[0] <= TF_CT_HEARTBEAT) {
        if (n < 2)
            return TF_PARSE_NEED_MORE;
        if (p[1] == 3) {
            *kind = TF_STREAM_TLS;
            return TF_PARSE_OK;
        }
        *kind = TF_STREAM_UNKNOWN;
        return TF_PARSE_OK;
    }
    /*
     * SSL 2.0 compatible ClientHello: 2-byte length with the high bit set,
     * then msg_type 1 (RFC 5246 appendix E.2).
     */
    if (p[0] & 0x80) {
        if (n < 3)
            return TF_PARSE_NEED_MORE;
        *kind = p[2] == 1 ? TF_STREAM_SSLV2 : TF_STREAM_UNKNOWN;
        return TF_PARSE_OK;
    }
    if (n < 4) {
        /* Could still become "GET " etc.; wait only while it looks like text. */
        for (size_t i = 0; i < n; i++)
            if (p[i] < 'A' || p[i] > 'Z') {
                *kind = TF_STREAM_UNKNOWN;
                return TF_PARSE_OK;
            }
        return TF_PARSE_NEED_MORE;
    }
    *kind = record_is_http_start(p, n) ? TF_STREAM_HTTP : TF_STREAM_UNKNOWN;
    return TF_PARSE_OK;
}

void
tf_record_preview(const uint8_t *p, size_t n, size_t max, char *out, size_t outlen)
{
    size_t o = 0;
    if (outlen == 0)
        return;
    for (size_t i = 0; i < n && i < max; i++) {
        char tmp[5];
        int k;
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\')
            k = snprintf(tmp, sizeof(tmp), "%c", p[i]);
        else if (p[i] == '\\')
            k = snprintf(tmp, sizeof(tmp), "\\\\");
        else if (p[i] == '\r')
            k = snprintf(tmp, sizeof(tmp), "\\r");
        else if (p[i] == '\n')
            k = snprintf(tmp, sizeof(tmp), "\\n");
        else
            k = snprintf(tmp, sizeof(tmp), "\\x%02x", p[i]);
        if (o + (size_t)k + 1 > outlen)
            break;
        memcpy(out + o, tmp, (size_t)k);
        o += (size_t)k;
    }
    out[o] = '\0';
}

/* Checks a complete header; on failure fills r->error and r->kind. */
static bool
record_header_valid(struct tf_record_reader *r)
{
    const uint8_t *h = r->hdr;
    size_t len = ((size_t)h[3] << 8) | h[4];

    if (r->offset == 0) {
        enum tf_stream_kind kind = TF_STREAM_UNKNOWN;
        (void)tf_record_classify(h, TF_RECORD_HEADER_LEN, &kind);
        if (kind != TF_STREAM_TLS) {
            r->kind = kind;
            snprintf(r->error, sizeof(r->error), "%s",
                     kind == TF_STREAM_SSLV2  ? "SSLv2-style ClientHello"
                     : kind == TF_STREAM_HTTP ? "HTTP, not TLS"
                                              : "not a TLS record header");
            return false;
        }
    }
    if (h[0] < TF_CT_CHANGE_CIPHER_SPEC || h[0] > TF_CT_HEARTBEAT) {
        r->kind = TF_STREAM_UNKNOWN;
        snprintf(r->error, sizeof(r->error), "invalid record content type %u", h[0]);
        return false;
    }
    if (h[1] != 3 || h[2] > 4) {
        r->kind = TF_STREAM_UNKNOWN;
        snprintf(r->error, sizeof(r->error), "invalid record version 0x%02x%02x", h[1], h[2]);
        return false;
    }
    if (len > TF_RECORD_MAX_BODY) {
        r->kind = TF_STREAM_UNKNOWN;
        snprintf(r->error, sizeof(r->error), "record length %zu exceeds %d", len,
                 TF_RECORD_MAX_BODY);
        return false;
    }
    return true;
}

static bool
record_emit(struct tf_record_reader *r, const uint8_t *body, tf_record_cb cb, void *arg)
{
    struct tf_record rec = {
        .type = r->hdr[0],
        .version = (uint16_t)((r->hdr[1] << 8) | r->hdr[2]),
        .body = r->skim ? NULL : body,
        .len = r->body_need,
        .offset = r->offset - TF_RECORD_HEADER_LEN - r->body_need,
    };
    r->records++;
    r->hdr_have = 0;
    r->body_have = 0;
    r->body_need = 0;
    if (!cb(arg, &rec)) {
        r->stopped = true;
        return false;
    }
    return true;
}

enum tf_parse
tf_record_feed(struct tf_record_reader *r, const uint8_t *p, size_t n, tf_record_cb cb,
               void *arg)
{
    while (n > 0 && !r->stopped) {
        if (r->hdr_have < TF_RECORD_HEADER_LEN) {
            size_t take = TF_RECORD_HEADER_LEN - r->hdr_have;
            if (take > n)
                take = n;
            memcpy(r->hdr + r->hdr_have, p, take);
            if (r->offset == 0 && r->hdr_have + take < TF_RECORD_HEADER_LEN) {
                /* Tell HTTP or garbage early: a few bytes may be all that ever comes. */
                enum tf_stream_kind kind;
                if (tf_record_classify(r->hdr, r->hdr_have + take, &kind) == TF_PARSE_OK &&
                    kind != TF_STREAM_TLS) {
                    r->kind = kind;
                    snprintf(r->error, sizeof(r->error), "%s",
                             kind == TF_STREAM_SSLV2 ? "SSLv2-style ClientHello"
                             : kind == TF_STREAM_HTTP ? "HTTP, not TLS"
                                                      : "not a TLS record header");
                    r->stopped = true;
                    return TF_PARSE_BAD;
                }
            }
            r->hdr_have += take;
            p += take;
            n -= take;
            if (r->hdr_have < TF_RECORD_HEADER_LEN)
                return TF_PARSE_OK;
            if (!record_header_valid(r)) {
                r->stopped = true;
                return TF_PARSE_BAD;
            }
            r->offset += TF_RECORD_HEADER_LEN;
            r->body_need = ((size_t)r->hdr[3] << 8) | r->hdr[4];
            r->body_have = 0;
            if (r->body_need == 0) {
                if (!record_emit(r, NULL, cb, arg))
                    return TF_PARSE_OK;
                continue;
            }
        }

        size_t want = r->body_need - r->body_have;
        if (r->skim) {
            if (r->body != NULL) /* skimming needs no assembly buffer: give it back */
                tf_record_reader_release(r);
            size_t take = want < n ? want : n;
            r->body_have += take;
            r->offset += take;
            p += take;
            n -= take;
            if (r->body_have == r->body_need)
                record_emit(r, NULL, cb, arg);
            continue;
        }
        if (r->body_have == 0 && n >= want) {
            /* The whole body is here: hand it out in place. */
            const uint8_t *body = p;
            r->offset += want;
            p += want;
            n -= want;
            record_emit(r, body, cb, arg);
            continue;
        }
        if (r->body == NULL || r->body_cap < r->body_need) {
            /* Sized to the record: most split records are small, and few flows have one. */
            uint8_t *nb = realloc(r->body, r->body_need);
            if (nb == NULL) {
                snprintf(r->error, sizeof(r->error), "out of memory");
                r->stopped = true;
                return TF_PARSE_BAD;
            }
            r->body = nb;
            r->body_cap = r->body_need;
        }
        size_t take = want < n ? want : n;
        memcpy(r->body + r->body_have, p, take);
        r->body_have += take;
        r->offset += take;
        p += take;
        n -= take;
        if (r->body_have == r->body_need)
            record_emit(r, r->body, cb, arg);
    }
    return TF_PARSE_OK;
}
