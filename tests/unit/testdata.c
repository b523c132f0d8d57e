/*
 * testdata.c — loads the captured handshakes in tests/data/, and the
 * helpers shared by the tests of them (see testdata.h).
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testdata.h"

bool
tf_testdata_load(const char *name, uint8_t **buf, size_t *len)
{
    const char *srcdir = getenv("TF_SRCDIR");
    char path[4096];
    uint8_t *data = NULL;
    size_t have = 0, cap = 0;
    FILE *f;
    bool ok = false;

    *buf = NULL;
    *len = 0;
    if (srcdir == NULL || *srcdir == '\0')
        srcdir = ".";
    if ((size_t)snprintf(path, sizeof(path), "%s/tests/data/%s", srcdir, name) >= sizeof(path))
        return false;
    f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "# testdata: %s: %s\n", path, strerror(errno));
        return false;
    }
    /* Read in growing chunks rather than trusting a size taken before reading. */
    for (;;) {
        if (have == cap) {
            size_t ncap = cap ? cap * 2 : 4096;
            uint8_t *n = realloc(data, ncap);
            if (n == NULL)
                goto done;
            data = n;
            cap = ncap;
        }
        size_t got = fread(data + have, 1, cap - have, f);
        have += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        fprintf(stderr, "# testdata: %s: read error\n", path);
        goto done;
    }
    ok = true;
done:
    fclose(f);
    if (!ok) {
        free(data);
        return false;
    }
    *buf = data;
    *len = have;
    return true;
}

/* ------------------------------------------------- helpers for the tests */

struct blob
load(const char *name)
{
    struct blob b = {NULL, 0};

    if (!tf_testdata_load(name, &b.p, &b.n))
        fail_msg("cannot load tests/data/%s (is TF_SRCDIR set?)", name);
    return b;
}

uint8_t *
exact_copy(const uint8_t *p, size_t n)
{
    uint8_t *c = malloc(n ? n : 1);

    assert_non_null(c);
    if (n)
        memcpy(c, p, n);
    return c;
}

const char *
str(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);

    if (!json_is_string(v))
        fail_msg("field %s is not a string", key);
    return json_string_value(v);
}

json_int_t
num(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);

    if (!json_is_integer(v))
        fail_msg("field %s is not an integer", key);
    return json_integer_value(v);
}

bool
has(const json_t *arr, const char *s)
{
    size_t i;
    const json_t *v;

    json_array_foreach(arr, i, v) {
        if (json_is_string(v) && strcmp(json_string_value(v), s) == 0)
            return true;
    }
    return false;
}

void
assert_strings(const json_t *arr, ...)
{
    va_list ap;
    size_t i = 0;
    const char *s;

    assert_true(json_is_array(arr));
    va_start(ap, arr);
    while ((s = va_arg(ap, const char *)) != NULL) {
        const json_t *v = json_array_get(arr, i++);
        assert_true(json_is_string(v));
        assert_string_equal(json_string_value(v), s);
    }
    va_end(ap);
    assert_int_equal(json_array_size(arr), i);
}

void
put8(struct msg *m, uint8_t v)
{
    assert_true(m->n < sizeof(m->b));
    m->b[m->n++] = v;
}

void
put16(struct msg *m, uint16_t v)
{
    put8(m, (uint8_t)(v >> 8));
    put8(m, (uint8_t)v);
}

void
put24(struct msg *m, uint32_t v)
{
    put8(m, (uint8_t)(v >> 16));
    put16(m, (uint16_t)v);
}

void
putn(struct msg *m, const void *p, size_t n)
{
    assert_true(m->n + n <= sizeof(m->b));
    memcpy(m->b + m->n, p, n);
    m->n += n;
}

size_t
open_block(struct msg *m, int width)
{
    size_t at = m->n;

    for (int i = 0; i < width; i++)
        put8(m, 0);
    return at;
}

void
close_block(struct msg *m, size_t at, int width)
{
    size_t len = m->n - at - (size_t)width;

    for (int i = width - 1; i >= 0; i--, len >>= 8)
        m->b[at + (size_t)i] = (uint8_t)len;
}
