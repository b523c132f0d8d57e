/*
 * handshake.c — handshake message reassembly for one direction.
 *
 * Job: turn the bodies of clear handshake records into whole handshake
 * messages (RFC 8446 §4, 4-byte header: msg_type, uint24 length).  A
 * message may span records and a record may hold several messages (RFC
 * 8446 §5.1).  Which records are clear, and what the messages mean, is
 * decided by inspect.c and decode.c.
 *
 * Messages that lie whole inside one record are handed out in place; only
 * a message that spans records is copied, and never beyond the cap.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tlsfault/handshake.h"

void
tf_hs_reader_init(struct tf_hs_reader *h, size_t max_message)
{
    memset(h, 0, sizeof(*h));
    h->max = max_message;
}

void
tf_hs_reader_release(struct tf_hs_reader *h)
{
    free(h->buf);
    h->buf = NULL;
    h->have = h->cap = 0;
}

bool
tf_hs_pending(const struct tf_hs_reader *h)
{
    return h->have > 0;
}

static size_t
hs_body_len(const uint8_t *hdr)
{
    return ((size_t)hdr[1] << 16) | ((size_t)hdr[2] << 8) | hdr[3];
}

static bool
hs_too_big(struct tf_hs_reader *h, const uint8_t *hdr)
{
    size_t len = hs_body_len(hdr);
    if (len <= h->max)
        return false;
    snprintf(h->error, sizeof(h->error), "handshake message type %u of %zu bytes exceeds the %zu-byte cap",
             hdr[0], len, h->max);
    h->stopped = true;
    return true;
}

static bool
hs_append(struct tf_hs_reader *h, const uint8_t *p, size_t n)
{
    if (h->have + n > h->cap) {
        size_t cap = h->cap ? h->cap : 1024;
        while (cap < h->have + n)
            cap *= 2;
        uint8_t *buf = realloc(h->buf, cap);
        if (buf == NULL) {
            snprintf(h->error, sizeof(h->error), "out of memory");
            h->stopped = true;
            return false;
        }
        h->buf = buf;
        h->cap = cap;
    }
    memcpy(h->buf + h->have, p, n);
    h->have += n;
    return true;
}

static bool
hs_emit(struct tf_hs_reader *h, const uint8_t *msg, tf_hs_cb cb, void *arg)
{
    h->messages++;
    if (!cb(arg, msg[0], msg + TF_HS_HEADER_LEN, hs_body_len(msg))) {
        h->stopped = true;
        return false;
    }
    return true;
}

enum tf_parse
tf_hs_feed(struct tf_hs_reader *h, const uint8_t *p, size_t n, tf_hs_cb cb, void *arg)
{
    while (n > 0 && !h->stopped) {
        if (h->have == 0) {
            /* Fast path: whole messages in this record need no copy. */
            if (n >= TF_HS_HEADER_LEN) {
                if (hs_too_big(h, p))
                    return TF_PARSE_BAD;
                size_t total = TF_HS_HEADER_LEN + hs_body_len(p);
                if (n >= total) {
                    hs_emit(h, p, cb, arg);
                    p += total;
                    n -= total;
                    continue;
                }
            }
            if (!hs_append(h, p, n))
                return TF_PARSE_BAD;
            return TF_PARSE_OK;
        }

        if (h->have < TF_HS_HEADER_LEN) {
            size_t take = TF_HS_HEADER_LEN - h->have;
            if (take > n)
                take = n;
            if (!hs_append(h, p, take))
                return TF_PARSE_BAD;
            p += take;
            n -= take;
            if (h->have < TF_HS_HEADER_LEN)
                return TF_PARSE_OK;
            if (hs_too_big(h, h->buf))
                return TF_PARSE_BAD;
        }
        size_t total = TF_HS_HEADER_LEN + hs_body_len(h->buf);
        size_t take = total - h->have;
        if (take > n)
            take = n;
        if (!hs_append(h, p, take))
            return TF_PARSE_BAD;
        p += take;
        n -= take;
        if (h->have == total) {
            h->have = 0;
            if (!hs_emit(h, h->buf, cb, arg))
                return TF_PARSE_OK;
        }
    }
    return h->stopped && h->error[0] ? TF_PARSE_BAD : TF_PARSE_OK;
}
