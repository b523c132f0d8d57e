/*
 * cursor.h — bounded reading of untrusted bytes.
 *
 * Every parser and rewriter reads network bytes through a struct tf_cursor:
 * a (pointer, end) view that never allocates and never reads past end.
 * Each read returns false, and leaves the value untouched, when the bytes
 * are not there; callers propagate that as a malformed message.  A
 * length-prefixed block opens a sub-view so that inner parsers cannot run
 * into the bytes that follow the block (the shape of TLS's opaque<..> and
 * vector fields, RFC 8446 §3.4).
 */
#ifndef TLSFAULT_CURSOR_H
#define TLSFAULT_CURSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tf_cursor {
    const uint8_t *p;
    const uint8_t *end;
};

static inline void
tf_cursor_init(struct tf_cursor *c, const uint8_t *p, size_t n)
{
    /* NULL + 0 is undefined in C; an empty view of nothing is common. */
    c->p = p;
    c->end = p ? p + n : p;
}

static inline size_t
tf_cursor_left(const struct tf_cursor *c)
{
    return (size_t)(c->end - c->p);
}

static inline bool
tf_cursor_empty(const struct tf_cursor *c)
{
    return c->p == c->end;
}

static inline bool
tf_cursor_u8(struct tf_cursor *c, uint8_t *v)
{
    if (tf_cursor_left(c) < 1)
        return false;
    *v = c->p[0];
    c->p += 1;
    return true;
}

static inline bool
tf_cursor_u16(struct tf_cursor *c, uint16_t *v)
{
    if (tf_cursor_left(c) < 2)
        return false;
    *v = (uint16_t)((c->p[0] << 8) | c->p[1]);
    c->p += 2;
    return true;
}

static inline bool
tf_cursor_u24(struct tf_cursor *c, uint32_t *v)
{
    if (tf_cursor_left(c) < 3)
        return false;
    *v = ((uint32_t)c->p[0] << 16) | ((uint32_t)c->p[1] << 8) | c->p[2];
    c->p += 3;
    return true;
}

static inline bool
tf_cursor_u32(struct tf_cursor *c, uint32_t *v)
{
    if (tf_cursor_left(c) < 4)
        return false;
    *v = ((uint32_t)c->p[0] << 24) | ((uint32_t)c->p[1] << 16) | ((uint32_t)c->p[2] << 8) |
         c->p[3];
    c->p += 4;
    return true;
}

/* Takes n bytes as a pointer into the view (no copy). */
static inline bool
tf_cursor_bytes(struct tf_cursor *c, size_t n, const uint8_t **v)
{
    if (tf_cursor_left(c) < n)
        return false;
    *v = c->p;
    c->p += n;
    return true;
}

static inline bool
tf_cursor_skip(struct tf_cursor *c, size_t n)
{
    if (tf_cursor_left(c) < n)
        return false;
    c->p += n;
    return true;
}

/* Takes n bytes as a sub-view. */
static inline bool
tf_cursor_sub(struct tf_cursor *c, size_t n, struct tf_cursor *sub)
{
    const uint8_t *p;
    if (!tf_cursor_bytes(c, n, &p))
        return false;
    tf_cursor_init(sub, p, n);
    return true;
}

/* Length-prefixed sub-views: the prefix is 1, 2 or 3 bytes. */
static inline bool
tf_cursor_sub8(struct tf_cursor *c, struct tf_cursor *sub)
{
    uint8_t n;
    struct tf_cursor save = *c;
    if (tf_cursor_u8(c, &n) && tf_cursor_sub(c, n, sub))
        return true;
    *c = save;
    return false;
}

static inline bool
tf_cursor_sub16(struct tf_cursor *c, struct tf_cursor *sub)
{
    uint16_t n;
    struct tf_cursor save = *c;
    if (tf_cursor_u16(c, &n) && tf_cursor_sub(c, n, sub))
        return true;
    *c = save;
    return false;
}

static inline bool
tf_cursor_sub24(struct tf_cursor *c, struct tf_cursor *sub)
{
    uint32_t n;
    struct tf_cursor save = *c;
    if (tf_cursor_u24(c, &n) && tf_cursor_sub(c, n, sub))
        return true;
    *c = save;
    return false;
}

#endif
