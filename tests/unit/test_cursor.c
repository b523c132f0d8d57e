/*
 * test_cursor.c — unit tests for the bounded reader in cursor.h.
 *
 * Every read is tried at its exact bound (succeeds, cursor at end) and one
 * byte short (fails, value and cursor untouched).  Length-prefixed sub-views
 * are tried with lengths that fit, that are zero, that overrun by one and by
 * far, and with a truncated prefix; a failed sub-view must leave the parent
 * where it was so that the caller can report the malformed field.  The shape
 * follows TLS's opaque<..> vectors (RFC 8446 §3.4).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "tlsfault/cursor.h"

/* Failure must not move either end of the view. */
#define assert_cursor_at(c, start, n)                                                              \
    do {                                                                                           \
        assert_ptr_equal((c)->p, (start));                                                         \
        assert_ptr_equal((c)->end, (start) + (n));                                                 \
    } while (0)

static void
test_init_and_left(void **state)
{
    static const uint8_t buf[] = {1, 2, 3, 4, 5};
    struct tf_cursor c;
    (void)state;

    tf_cursor_init(&c, buf, sizeof(buf));
    assert_ptr_equal(c.p, buf);
    assert_ptr_equal(c.end, buf + sizeof(buf));
    assert_int_equal(tf_cursor_left(&c), 5);
    assert_false(tf_cursor_empty(&c));

    assert_true(tf_cursor_skip(&c, 5));
    assert_int_equal(tf_cursor_left(&c), 0);
    assert_true(tf_cursor_empty(&c));
}

/* An empty view refuses every read that needs a byte and accepts those that need none. */
static void
test_empty_cursor(void **state)
{
    /* Not NULL: NULL + 0 is undefined in C and UBSan reports it. */
    static const uint8_t buf[1] = {0xaa};
    struct tf_cursor c, sub;
    uint8_t v8 = 0x5a;
    uint16_t v16 = 0x5a5a;
    uint32_t v32 = 0x5a5a5a5a;
    const uint8_t *bytes = NULL;
    (void)state;

    tf_cursor_init(&c, buf, 0);
    assert_true(tf_cursor_empty(&c));
    assert_int_equal(tf_cursor_left(&c), 0);

    assert_false(tf_cursor_u8(&c, &v8));
    assert_int_equal(v8, 0x5a);
    assert_false(tf_cursor_u16(&c, &v16));
    assert_int_equal(v16, 0x5a5a);
    assert_false(tf_cursor_u24(&c, &v32));
    assert_false(tf_cursor_u32(&c, &v32));
    assert_int_equal(v32, 0x5a5a5a5a);
    assert_false(tf_cursor_bytes(&c, 1, &bytes));
    assert_null(bytes);
    assert_false(tf_cursor_skip(&c, 1));
    assert_false(tf_cursor_sub8(&c, &sub));
    assert_false(tf_cursor_sub16(&c, &sub));
    assert_false(tf_cursor_sub24(&c, &sub));
    assert_cursor_at(&c, buf, 0);

    /* Zero bytes are always there. */
    assert_true(tf_cursor_bytes(&c, 0, &bytes));
    assert_ptr_equal(bytes, buf);
    assert_true(tf_cursor_skip(&c, 0));
    assert_true(tf_cursor_sub(&c, 0, &sub));
    assert_true(tf_cursor_empty(&sub));
    assert_cursor_at(&c, buf, 0);
}

static void
test_u8(void **state)
{
    static const uint8_t buf[] = {0x00, 0xff};
    struct tf_cursor c;
    uint8_t v = 0;
    (void)state;

    tf_cursor_init(&c, buf, sizeof(buf));
    assert_true(tf_cursor_u8(&c, &v));
    assert_int_equal(v, 0x00);
    assert_true(tf_cursor_u8(&c, &v));
    assert_int_equal(v, 0xff);
    assert_true(tf_cursor_empty(&c));

    v = 0x42;
    assert_false(tf_cursor_u8(&c, &v));
    assert_int_equal(v, 0x42);
    assert_cursor_at(&c, buf + 2, 0);
}

static void
test_u16(void **state)
{
    static const uint8_t buf[] = {0x12, 0x34, 0xff, 0xfe, 0x01};
    struct tf_cursor c;
    uint16_t v = 0;
    (void)state;

    tf_cursor_init(&c, buf, 2);
    assert_true(tf_cursor_u16(&c, &v));
    assert_int_equal(v, 0x1234);
    assert_true(tf_cursor_empty(&c));

    /* High bit set: no sign extension through int promotion. */
    tf_cursor_init(&c, buf + 2, 2);
    assert_true(tf_cursor_u16(&c, &v));
    assert_int_equal(v, 0xfffe);

    /* One byte short. */
    tf_cursor_init(&c, buf + 4, 1);
    v = 0x4242;
    assert_false(tf_cursor_u16(&c, &v));
    assert_int_equal(v, 0x4242);
    assert_cursor_at(&c, buf + 4, 1);
    /* The byte that was there is still readable. */
    {
        uint8_t b;
        assert_true(tf_cursor_u8(&c, &b));
        assert_int_equal(b, 0x01);
    }
}

static void
test_u24(void **state)
{
    static const uint8_t buf[] = {0x01, 0x02, 0x03, 0xff, 0xff, 0xff};
    struct tf_cursor c;
    uint32_t v = 0;
    (void)state;

    tf_cursor_init(&c, buf, 3);
    assert_true(tf_cursor_u24(&c, &v));
    assert_int_equal(v, 0x010203);
    assert_true(tf_cursor_empty(&c));

    tf_cursor_init(&c, buf + 3, 3);
    assert_true(tf_cursor_u24(&c, &v));
    assert_int_equal(v, 0xffffff);

    for (size_t n = 0; n < 3; n++) {
        tf_cursor_init(&c, buf, n);
        v = 0x42424242;
        assert_false(tf_cursor_u24(&c, &v));
        assert_int_equal(v, 0x42424242);
        assert_cursor_at(&c, buf, n);
    }
}

static void
test_u32(void **state)
{
    static const uint8_t buf[] = {0xde, 0xad, 0xbe, 0xef, 0x80, 0x00, 0x00, 0x01};
    struct tf_cursor c;
    uint32_t v = 0;
    (void)state;

    tf_cursor_init(&c, buf, sizeof(buf));
    assert_true(tf_cursor_u32(&c, &v));
    assert_int_equal(v, 0xdeadbeef);
    assert_true(tf_cursor_u32(&c, &v));
    assert_int_equal(v, 0x80000001);
    assert_true(tf_cursor_empty(&c));

    for (size_t n = 0; n < 4; n++) {
        tf_cursor_init(&c, buf, n);
        v = 0x42424242;
        assert_false(tf_cursor_u32(&c, &v));
        assert_int_equal(v, 0x42424242);
        assert_cursor_at(&c, buf, n);
    }
}

/* Mixed widths walk the buffer in order and stop exactly at the end. */
static void
test_mixed_sequence(void **state)
{
    static const uint8_t buf[] = {0x16, 0x03, 0x03, 0x00, 0x2a, 0x01, 0x00, 0x00, 0x26};
    struct tf_cursor c;
    uint8_t type, msg;
    uint16_t version, len;
    uint32_t hs_len;
    (void)state;

    tf_cursor_init(&c, buf, sizeof(buf));
    assert_true(tf_cursor_u8(&c, &type));
    assert_true(tf_cursor_u16(&c, &version));
    assert_true(tf_cursor_u16(&c, &len));
    assert_true(tf_cursor_u8(&c, &msg));
    assert_true(tf_cursor_u24(&c, &hs_len));
    assert_int_equal(type, 0x16);
    assert_int_equal(version, 0x0303);
    assert_int_equal(len, 42);
    assert_int_equal(msg, 1);
    assert_int_equal(hs_len, 0x26);
    assert_true(tf_cursor_empty(&c));
}

static void
test_bytes(void **state)
{
    static const uint8_t buf[] = {1, 2, 3, 4};
    struct tf_cursor c;
    const uint8_t *v = NULL;
    (void)state;

    tf_cursor_init(&c, buf, sizeof(buf));
    assert_true(tf_cursor_bytes(&c, 0, &v));
    assert_ptr_equal(v, buf);
    assert_cursor_at(&c, buf, 4);

    /* A view, not a copy. */
    assert_true(tf_cursor_bytes(&c, 3, &v));
    assert_ptr_equal(v, buf);
    assert_int_equal(tf_cursor_left(&c), 1);

    v = NULL;
    assert_false(tf_cursor_bytes(&c, 2, &v));
    assert_null(v);
    assert_false(tf_cursor_bytes(&c, SIZE_MAX, &v));
    assert_null(v);
    assert_cursor_at(&c, buf + 3, 1);

    assert_true(tf_cursor_bytes(&c, 1, &v));
    assert_ptr_equal(v, buf + 3);
    assert_true(tf_cursor_empty(&c));
}

static void
test_skip(void **state)
{
    static const uint8_t buf[] = {1, 2, 3, 4};
    struct tf_cursor c;
    (void)state;

    tf_cursor_init(&c, buf, sizeof(buf));
    assert_true(tf_cursor_skip(&c, 0));
    assert_cursor_at(&c, buf, 4);
    assert_false(tf_cursor_skip(&c, 5));
    assert_false(tf_cursor_skip(&c, SIZE_MAX));
    assert_cursor_at(&c, buf, 4);
    assert_true(tf_cursor_skip(&c, 4));
    assert_true(tf_cursor_empty(&c));
    assert_false(tf_cursor_skip(&c, 1));
    assert_true(tf_cursor_skip(&c, 0));
}

static void
test_sub(void **state)
{
    static const uint8_t buf[] = {1, 2, 3, 4, 5};
    struct tf_cursor c, sub;
    (void)state;

    tf_cursor_init(&c, buf, sizeof(buf));
    assert_true(tf_cursor_sub(&c, 2, &sub));
    assert_cursor_at(&sub, buf, 2);
    assert_cursor_at(&c, buf + 2, 3);

    memset(&sub, 0, sizeof(sub));
    assert_false(tf_cursor_sub(&c, 4, &sub));
    assert_null(sub.p);
    assert_cursor_at(&c, buf + 2, 3);

    assert_true(tf_cursor_sub(&c, 3, &sub));
    assert_cursor_at(&sub, buf + 2, 3);
    assert_true(tf_cursor_empty(&c));
}

static void
test_sub8(void **state)
{
    static const uint8_t ok[] = {3, 'a', 'b', 'c', 0xee};
    static const uint8_t zero[] = {0, 0xee};
    static const uint8_t over[] = {4, 'a', 'b', 'c'};
    static const uint8_t full[] = {0xff};
    struct tf_cursor c, sub, untouched;
    uint8_t b;
    (void)state;

    tf_cursor_init(&c, ok, sizeof(ok));
    assert_true(tf_cursor_sub8(&c, &sub));
    assert_cursor_at(&sub, ok + 1, 3);
    assert_cursor_at(&c, ok + 4, 1);

    /* The sub-view cannot reach the byte after the block. */
    assert_true(tf_cursor_skip(&sub, 3));
    assert_false(tf_cursor_u8(&sub, &b));
    assert_true(tf_cursor_u8(&c, &b));
    assert_int_equal(b, 0xee);

    tf_cursor_init(&c, zero, sizeof(zero));
    assert_true(tf_cursor_sub8(&c, &sub));
    assert_true(tf_cursor_empty(&sub));
    assert_int_equal(tf_cursor_left(&sub), 0);
    assert_cursor_at(&c, zero + 1, 1);

    /* Overrun by one: the prefix is not consumed either. */
    tf_cursor_init(&c, over, sizeof(over));
    tf_cursor_init(&untouched, full, 0);
    sub = untouched;
    assert_false(tf_cursor_sub8(&c, &sub));
    assert_cursor_at(&c, over, sizeof(over));
    assert_ptr_equal(sub.p, untouched.p);
    assert_ptr_equal(sub.end, untouched.end);

    /* Prefix of 255 with nothing behind it. */
    tf_cursor_init(&c, full, sizeof(full));
    assert_false(tf_cursor_sub8(&c, &sub));
    assert_cursor_at(&c, full, 1);
}

static void
test_sub16(void **state)
{
    static uint8_t big[2 + 256 + 1];
    static const uint8_t zero[] = {0x00, 0x00};
    static const uint8_t short_prefix[] = {0x00};
    static const uint8_t huge[] = {0xff, 0xff, 1, 2, 3};
    static const uint8_t over[] = {0x00, 0x03, 1, 2};
    struct tf_cursor c, sub;
    (void)state;

    /* A length above 255 checks that both prefix bytes count. */
    memset(big, 0x11, sizeof(big));
    big[0] = 0x01;
    big[1] = 0x00;
    tf_cursor_init(&c, big, sizeof(big));
    assert_true(tf_cursor_sub16(&c, &sub));
    assert_cursor_at(&sub, big + 2, 256);
    assert_cursor_at(&c, big + 258, 1);

    /* Exactly at the bound, nothing after. */
    tf_cursor_init(&c, big, sizeof(big) - 1);
    assert_true(tf_cursor_sub16(&c, &sub));
    assert_true(tf_cursor_empty(&c));

    /* One byte short of the declared 256. */
    tf_cursor_init(&c, big, sizeof(big) - 2);
    assert_false(tf_cursor_sub16(&c, &sub));
    assert_cursor_at(&c, big, sizeof(big) - 2);

    tf_cursor_init(&c, zero, sizeof(zero));
    assert_true(tf_cursor_sub16(&c, &sub));
    assert_true(tf_cursor_empty(&sub));
    assert_true(tf_cursor_empty(&c));

    tf_cursor_init(&c, short_prefix, sizeof(short_prefix));
    assert_false(tf_cursor_sub16(&c, &sub));
    assert_cursor_at(&c, short_prefix, 1);

    tf_cursor_init(&c, huge, sizeof(huge));
    assert_false(tf_cursor_sub16(&c, &sub));
    assert_cursor_at(&c, huge, sizeof(huge));

    tf_cursor_init(&c, over, sizeof(over));
    assert_false(tf_cursor_sub16(&c, &sub));
    assert_cursor_at(&c, over, sizeof(over));
}

static void
test_sub24(void **state)
{
    static uint8_t big[3 + 0x10000];
    static const uint8_t zero[] = {0, 0, 0, 0xee};
    static const uint8_t short_prefix[] = {0x00, 0x00};
    static const uint8_t huge[] = {0xff, 0xff, 0xff, 1, 2, 3};
    static const uint8_t small[] = {0x00, 0x00, 0x02, 0xaa, 0xbb, 0xcc};
    struct tf_cursor c, sub;
    (void)state;

    /* 0x010000: only the top prefix byte is set. */
    memset(big, 0x22, sizeof(big));
    big[0] = 0x01;
    big[1] = 0x00;
    big[2] = 0x00;
    tf_cursor_init(&c, big, sizeof(big));
    assert_true(tf_cursor_sub24(&c, &sub));
    assert_int_equal(tf_cursor_left(&sub), 0x10000);
    assert_true(tf_cursor_empty(&c));

    tf_cursor_init(&c, big, sizeof(big) - 1);
    assert_false(tf_cursor_sub24(&c, &sub));
    assert_cursor_at(&c, big, sizeof(big) - 1);

    tf_cursor_init(&c, small, sizeof(small));
    assert_true(tf_cursor_sub24(&c, &sub));
    assert_cursor_at(&sub, small + 3, 2);
    assert_cursor_at(&c, small + 5, 1);

    tf_cursor_init(&c, zero, sizeof(zero));
    assert_true(tf_cursor_sub24(&c, &sub));
    assert_true(tf_cursor_empty(&sub));
    assert_cursor_at(&c, zero + 3, 1);

    tf_cursor_init(&c, short_prefix, sizeof(short_prefix));
    assert_false(tf_cursor_sub24(&c, &sub));
    assert_cursor_at(&c, short_prefix, sizeof(short_prefix));

    tf_cursor_init(&c, huge, sizeof(huge));
    assert_false(tf_cursor_sub24(&c, &sub));
    assert_cursor_at(&c, huge, sizeof(huge));
}

/*
 * An extensions-like block: u16 total, then entries of {u16 type, u16 len,
 * body}.  The last entry claims more than the block holds, though the bytes
 * exist after the block: the sub-view must stop it there.
 */
static void
test_nested_views(void **state)
{
    static const uint8_t buf[] = {
        0x00, 0x0a,                   /* block of 10 */
        0x00, 0x00, 0x00, 0x02, 0xaa, 0xbb, /* type 0, len 2 */
        0x00, 0x2b, 0x00, 0x03,       /* type 43, len 3: 1 byte inside the block... */
        0x01, 0x02, 0x03,             /* ...the rest belongs to the parent */
    };
    struct tf_cursor c, block, body;
    uint16_t type;
    (void)state;

    tf_cursor_init(&c, buf, sizeof(buf));
    assert_true(tf_cursor_sub16(&c, &block));
    assert_int_equal(tf_cursor_left(&block), 10);
    assert_int_equal(tf_cursor_left(&c), 3);

    assert_true(tf_cursor_u16(&block, &type));
    assert_int_equal(type, 0);
    assert_true(tf_cursor_sub16(&block, &body));
    assert_cursor_at(&body, buf + 6, 2);

    assert_true(tf_cursor_u16(&block, &type));
    assert_int_equal(type, 43);
    assert_false(tf_cursor_sub16(&block, &body));
    assert_cursor_at(&block, buf + 10, 2);
    /* The parent never moved past the block. */
    assert_cursor_at(&c, buf + 12, 3);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_and_left),
        cmocka_unit_test(test_empty_cursor),
        cmocka_unit_test(test_u8),
        cmocka_unit_test(test_u16),
        cmocka_unit_test(test_u24),
        cmocka_unit_test(test_u32),
        cmocka_unit_test(test_mixed_sequence),
        cmocka_unit_test(test_bytes),
        cmocka_unit_test(test_skip),
        cmocka_unit_test(test_sub),
        cmocka_unit_test(test_sub8),
        cmocka_unit_test(test_sub16),
        cmocka_unit_test(test_sub24),
        cmocka_unit_test(test_nested_views),
    };
    return cmocka_run_group_tests_name("cursor", tests, NULL, NULL);
}
