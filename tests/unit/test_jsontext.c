/*
 * test_jsontext.c — unit tests for the shared JSON texts of jsontext.h.
 *
 * Equal values pack to one shared text, different ones to their own; the
 * last release frees the text (and the set once it is empty); a value
 * whose text is longer than the stack buffer takes the heap path; the set
 * keeps every text through its growth; threads packing and releasing the
 * same and different values at once leave nothing behind (and the ASan
 * build's leak check sees anything else).  The writer renders what
 * jansson's JSON_COMPACT dump renders, byte for byte (numbers at their
 * limits, every control character, UTF-8, nesting), and never past its
 * buffer; a frozen value comes from its remembered text.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tlsfault/jsontext.h"

static json_t *
list_of(int a, int b)
{
    return json_pack("[{s:i},{s:i}]", "a", a, "b", b);
}

static void
test_equal_values_share(void **state)
{
    json_t *v1 = list_of(1, 2), *v2 = list_of(1, 2), *v3 = list_of(1, 3);
    const char *t1 = NULL, *t2 = NULL, *t3 = NULL;

    (void)state;
    tf_json_pack(&v1, &t1);
    tf_json_pack(&v2, &t2);
    tf_json_pack(&v3, &t3);
    assert_null(v1);
    assert_null(v2);
    assert_null(v3);
    assert_string_equal(t1, "[{\"a\":1},{\"b\":2}]");
    assert_ptr_equal(t1, t2);
    assert_ptr_not_equal(t1, t3);
    assert_string_equal(t3, "[{\"a\":1},{\"b\":3}]");
    assert_int_equal(tf_json_texts_held(), 2);

    /* Packing again keeps the text it has. */
    json_t *again = list_of(9, 9);
    const char *kept = t1;
    tf_json_pack(&again, &t1);
    assert_ptr_equal(t1, kept);
    assert_non_null(again);
    json_decref(again);

    /* Unpack gives the value back, equal to the original; again, the same one. */
    json_t *back = tf_json_unpack(NULL, t2);
    json_t *want = list_of(1, 2);
    assert_true(json_equal(back, want));
    json_t *back2 = tf_json_unpack(NULL, t1);
    assert_ptr_equal(back2, back); /* t1 and t2 are one text, parsed once */
    json_decref(back2);
    json_decref(back);
    json_decref(want);

    tf_json_text_release(t1);
    assert_int_equal(tf_json_texts_held(), 2);   /* t2 still holds it */
    assert_string_equal(t2, "[{\"a\":1},{\"b\":2}]");
    tf_json_text_release(t2);
    assert_int_equal(tf_json_texts_held(), 2);   /* so does the unpacked cache */
    back = tf_json_unpack(NULL, t2);             /* and the text is still that one */
    want = list_of(1, 2);
    assert_true(json_equal(back, want));
    json_decref(want);
    json_decref(back);
    tf_json_unpacked_drop();
    assert_int_equal(tf_json_texts_held(), 1);
    tf_json_text_release(t3);
    assert_int_equal(tf_json_texts_held(), 0);
    tf_json_text_release(NULL);
    tf_json_unpacked_drop();
}

/*
 * The per-thread cache of unpacked texts keeps the last 8: a ninth pushes
 * out the one used longest ago, which gives its text back.
 */
static void
test_unpacked_cache_evicts(void **state)
{
    (void)state;
    const char *t[9] = {NULL};
    for (int i = 0; i < 9; i++) {
        json_t *v = list_of(100 + i, 0);
        tf_json_pack(&v, &t[i]);
        assert_non_null(t[i]);
    }
    for (int i = 0; i < 9; i++) {
        json_t *back = tf_json_unpack(NULL, t[i]);
        assert_int_equal(json_integer_value(json_object_get(json_array_get(back, 0), "a")),
                         100 + i);
        json_decref(back);
        if (i == 7) /* t[0] used again: t[1] is now the one used longest ago */
            json_decref(tf_json_unpack(NULL, t[0]));
    }
    for (int i = 1; i < 9; i++)
        tf_json_text_release(t[i]);
    /* t[1] was pushed out and is gone: t[0] (held here too) and t[2..8] are left. */
    assert_int_equal(tf_json_texts_held(), 8);
    json_t *back = tf_json_unpack(NULL, t[0]);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(back, 0), "a")), 100);
    json_decref(back);
    tf_json_text_release(t[0]);
    assert_int_equal(tf_json_texts_held(), 8); /* the cache still has it */
    tf_json_unpacked_drop();
    assert_int_equal(tf_json_texts_held(), 0);
}

static void
test_null_and_object_kept(void **state)
{
    json_t *none = NULL;
    const char *text = NULL;
    json_t *obj = json_pack("{s:s}", "k", "v");

    (void)state;
    tf_json_pack(&none, &text);
    assert_null(text);
    assert_null(tf_json_unpack(NULL, NULL));
    json_t *ref = tf_json_unpack(obj, NULL);
    assert_ptr_equal(ref, obj);
    json_decref(ref);
    json_decref(obj);
}

static void
test_long_text(void **state)
{
    json_t *a = json_array(), *b;
    const char *ta = NULL, *tb = NULL;

    (void)state;
    for (int i = 0; i < 2000; i++)
        json_array_append_new(a, json_integer(i));
    b = json_deep_copy(a);
    size_t want = json_dumpb(a, NULL, 0, JSON_COMPACT);
    assert_true(want > 4096);
    tf_json_pack(&a, &ta);
    tf_json_pack(&b, &tb);
    assert_non_null(ta);
    assert_ptr_equal(ta, tb);
    assert_int_equal(strlen(ta), want);
    assert_true(strncmp(ta, "[0,1,2,", 7) == 0);
    assert_true(strcmp(ta + strlen(ta) - 6, ",1999]") == 0);
    tf_json_text_release(ta);
    tf_json_text_release(tb);
    assert_int_equal(tf_json_texts_held(), 0);
}

/* Past the first 64 buckets and back: every text still found and intact. */
static void
test_growth(void **state)
{
    enum { N = 1000 };
    const char **t = calloc(N, sizeof(*t));
    const char **u = calloc(N, sizeof(*u));
    char want[64];

    (void)state;
    for (int i = 0; i < N; i++) {
        json_t *v = list_of(i, -i);
        tf_json_pack(&v, &t[i]);
        assert_non_null(t[i]);
    }
    assert_int_equal(tf_json_texts_held(), N);
    for (int i = 0; i < N; i++) {
        json_t *v = list_of(i, -i);
        tf_json_pack(&v, &u[i]);
        assert_ptr_equal(u[i], t[i]);
        snprintf(want, sizeof(want), "[{\"a\":%d},{\"b\":%d}]", i, -i);
        assert_string_equal(t[i], want);
    }
    assert_int_equal(tf_json_texts_held(), N);
    for (int i = 0; i < N; i++) {
        tf_json_text_release(t[i]);
        tf_json_text_release(u[i]);
    }
    assert_int_equal(tf_json_texts_held(), 0);
    free(t);
    free(u);
}

/* The writer against jansson's own compact dump, byte for byte. */
static void
assert_writes_as_jansson(json_t *v)
{
    char buf[8192];
    size_t used = 0;
    char *want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    assert_non_null(want);
    assert_true(tf_json_write(v, false, buf, sizeof(buf), &used));
    if (used != strlen(want) || memcmp(buf, want, used) != 0)
        fail_msg("writer: %.*s\njansson: %s", (int)used, buf, want);
    free(want);
    json_decref(v);
}

static void
test_writer_matches_jansson(void **state)
{
    (void)state;
    assert_writes_as_jansson(json_pack("{s:s, s:i, s:b, s:n, s:[], s:{}}", "a", "b", "n", 42,
                                       "t", 1, "z", "e", "o"));
    assert_writes_as_jansson(json_integer(0));
    assert_writes_as_jansson(json_integer(-1));
    assert_writes_as_jansson(json_integer(INT64_MAX));
    assert_writes_as_jansson(json_integer(INT64_MIN));
    assert_writes_as_jansson(json_false());
    double reals[] = {0.0, -0.0, 1.5, 100.0, -2.0, 0.1, 1e20, 1e-7, 123456789012345678.0,
                      3.141592653589793, -1e300, 5e-324};
    for (size_t i = 0; i < sizeof(reals) / sizeof(reals[0]); i++)
        assert_writes_as_jansson(json_real(reals[i]));
    /* Every control character, the two that need a backslash, UTF-8 and DEL as they are. */
    char s[64];
    for (int c = 1; c < 0x20; c++)
        s[c - 1] = (char)c;
    strcpy(s + 31, "\"\\/\x7f\xc3\xa9\xe2\x80\xa8ok");
    assert_writes_as_jansson(json_string(s));
    assert_writes_as_jansson(json_stringn("nul\0inside", 11));
    assert_writes_as_jansson(json_loads("{\"list\": [{\"k\\n\": \"v\"}, [1, [2, [3, []]]], \"x\"],"
                                        " \"deep\": {\"er\": {\"est\": 0.25}}}", 0, NULL));
    /* Keys are escaped like strings. */
    json_t *o = json_object();
    json_object_set_new(o, "quote\"key\t", json_true());
    assert_writes_as_jansson(o);
    /*
     * Plain text is looked at 8 bytes at a time: each byte that needs an
     * escape, the neighbours that do not (0x20, '!', '#', '[', ']', DEL) and
     * UTF-8 sequences ("é", "€", U+10348), at every place of strings of 1 to
     * 24 bytes (the last 1-7 bytes are looked at as one word, padded).
     */
    static const char *const probe[] = {"\x00", "\x01", "\x1f", " ", "!", "\"", "#", "[", "\\",
                                        "]", "\x7f", "\xc3\xa9", "\xe2\x82\xac",
                                        "\xf0\x90\x8d\x88"};
    for (size_t k = 0; k < sizeof(probe) / sizeof(probe[0]); k++) {
        size_t n = probe[k][0] == '\0' ? 1 : strlen(probe[k]);
        for (size_t len = n; len <= 24; len++) {
            for (size_t at = 0; at + n <= len; at++) {
                char t[24];
                memset(t, 'a', sizeof(t));
                memcpy(t + at, probe[k], n);
                assert_writes_as_jansson(json_stringn(t, len));
            }
        }
    }
}

static void
test_writer_bounds(void **state)
{
    char buf[32];
    size_t used = 3;
    json_t *v = json_pack("{s:s}", "key", "a value that does not fit");

    (void)state;
    memcpy(buf, "abc", 3);
    assert_false(tf_json_write(v, false, buf, sizeof(buf), &used));
    assert_int_equal(used, 3); /* untouched on failure */
    assert_false(tf_json_write(v, false, buf, 2, &used));
    assert_false(tf_json_write(NULL, false, buf, sizeof(buf), &used));
    json_decref(v);

    v = json_pack("{s:i,s:s}", "a", 1, "b", "c");
    used = 1;
    buf[0] = '{';
    assert_true(tf_json_write(v, true, buf, sizeof(buf), &used));
    assert_int_equal(used, 14);
    assert_memory_equal(buf, "{\"a\":1,\"b\":\"c\"", 14);
    /* Exactly full fits; one byte less does not. */
    used = 0;
    assert_true(tf_json_write(v, false, buf, 15, &used));
    used = 0;
    assert_false(tf_json_write(v, false, buf, 14, &used));
    json_t *arr = json_array();
    assert_false(tf_json_write(arr, true, buf, sizeof(buf), &used)); /* members of an array */
    json_decref(arr);
    json_decref(v);
}

static void *
churn(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int round = 0; round < 2000; round++) {
        json_t *same = list_of(7, 7), *own = list_of(id, round % 50);
        const char *ts = NULL, *to = NULL;
        tf_json_pack(&same, &ts);
        tf_json_pack(&own, &to);
        if (ts == NULL || to == NULL || strcmp(ts, "[{\"a\":7},{\"b\":7}]") != 0)
            return (void *)1;
        tf_json_text_release(to);
        tf_json_text_release(ts);
    }
    return NULL;
}

static void
test_threads(void **state)
{
    pthread_t th[4];
    (void)state;
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, churn, (void *)(intptr_t)i), 0);
    for (int i = 0; i < 4; i++) {
        void *r;
        assert_int_equal(pthread_join(th[i], &r), 0);
        assert_null(r);
    }
    assert_int_equal(tf_json_texts_held(), 0);
}

/* Names' strings: shared per thread, kept two to a set, given back by the drop. */
/* Whether a and b are both NULL, or strings of the same bytes. */
static void
assert_same_string(const json_t *a, const json_t *b, const char *what, size_t at)
{
    if (a == NULL || b == NULL) {
        if (a != b)
            fail_msg("%s at %zu: jansson %s, tf %s", what, at, a ? "a string" : "NULL",
                     b ? "a string" : "NULL");
        return;
    }
    assert_true(json_is_string(b));
    assert_int_equal(json_string_length(a), json_string_length(b));
    assert_memory_equal(json_string_value(a), json_string_value(b), json_string_length(a));
}

/*
 * tf_json_string(n) give what json_string(n) give: ASCII (every length
 * around the word size, the high bit nowhere), valid UTF-8 (two, three
 * and four bytes), invalid UTF-8 at every place (a lone continuation
 * byte, a truncated sequence, an overlong form), an embedded NUL, NULL.
 */
static void
test_strings_as_jansson(void **state)
{
    (void)state;
    char buf[40];
    static const char *const bad[] = { "\x80", "\xc3", "\xe2\x82", "\xc0\xaf", "\xff" };
    static const char *const good[] = { "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x94\x92" };
    size_t cases = 0;
    for (size_t len = 0; len <= 24; len++) {
        for (size_t at = 0; at <= len; at++) {
            for (size_t k = 0; k < 1 + 5 + 3; k++) {
                memset(buf, 'a', sizeof(buf));
                const char *ins = k == 0 ? "" : k <= 5 ? bad[k - 1] : good[k - 6];
                size_t n = strlen(ins);
                if (at + n > len)
                    continue;
                memcpy(buf + at, ins, n);
                buf[len] = '\0';
                json_t *a = json_string(buf), *b = tf_json_string(buf);
                assert_same_string(a, b, "string", at);
                json_decref(a);
                json_decref(b);
                a = json_stringn(buf, len);
                b = tf_json_stringn(buf, len);
                assert_same_string(a, b, "stringn", at);
                json_decref(a);
                json_decref(b);
                cases++;
            }
        }
    }
    assert_true(cases > 1000);
    /* A NUL inside a counted string is kept, as jansson keeps it. */
    json_t *a = json_stringn("ab\0cd", 5), *b = tf_json_stringn("ab\0cd", 5);
    assert_same_string(a, b, "nul", 2);
    assert_int_equal(json_string_length(b), 5);
    json_decref(a);
    json_decref(b);
    assert_null(tf_json_string(NULL));
    assert_null(tf_json_stringn(NULL, 3));
}

static void
test_names_shared(void **state)
{
    static const char names[][16] = {"TLS 1.3", "c2s", "s2c", "fin"};
    /* A pool of static names at every 8th byte: many share a set. */
    static char pool[8192];
    (void)state;
    for (size_t i = 0; i < sizeof(pool); i += 8)
        snprintf(pool + i, 8, "n%zu", i / 8);

    json_t *a = tf_json_name(names[0]), *b = tf_json_name(names[0]);
    assert_ptr_equal(a, b);
    assert_string_equal(json_string_value(a), "TLS 1.3");
    json_t *other = tf_json_name(names[1]);
    assert_ptr_not_equal(other, a);
    assert_string_equal(json_string_value(other), "c2s");
    json_decref(other);
    assert_int_equal(a->refcount, 3); /* ours twice, the cache's once */
    json_decref(b);

    /*
     * Two names used in turn stay shared, also the pairs that fall into
     * one set (some of these 1,024 do: a set for each name would not hold).
     */
    json_t *zero = tf_json_name(pool);
    json_t *first[1] = {json_incref(zero)};
    size_t kept = 0;
    for (size_t i = 8; i < sizeof(pool); i += 8) {
        json_t *x = tf_json_name(pool + i);
        json_t *y = tf_json_name(pool);
        json_t *again = tf_json_name(pool + i);
        kept += x == again && y == zero;
        json_decref(x);
        json_decref(y);
        json_decref(again);
    }
    assert_int_equal(kept, sizeof(pool) / 8 - 1);
    json_decref(zero);
    /* Pushed out, a name's string lives on with its holders, whole. */
    for (size_t i = 0; i < sizeof(pool); i += 8)
        json_decref(tf_json_name(pool + i));
    assert_string_equal(json_string_value(first[0]), "n0");
    assert_string_equal(json_string_value(a), "TLS 1.3");

    tf_json_unpacked_drop();
    assert_int_equal(a->refcount, 1); /* only ours: the drop gave the cache's back */
    assert_ptr_equal(tf_json_name(NULL), NULL);
    json_decref(a);
    json_decref(first[0]);
}

/* What tf_json_write gives for v, as a NUL-terminated string. */
static const char *
written(const json_t *v, bool members_only)
{
    static char buf[8192];
    size_t used = 0;
    if (!tf_json_write(v, members_only, buf, sizeof(buf) - 1, &used))
        return NULL;
    buf[used] = '\0';
    return buf;
}

/*
 * A frozen value is written from its remembered text, which is what the
 * writer gives for it (and jansson's dump); the text is used, not
 * re-rendered (shown by a change the frozen text cannot know of, which
 * the contract forbids and which only a test would make); a thawed value
 * is written as it is again; the table holds a reference until it lets
 * go, pushes old values out when a set is full, and is emptied by the drop.
 */
static void
test_frozen_values(void **state)
{
    (void)state;
    json_t *list = json_pack("[s,s,s]", "TLS_AES_128_GCM_SHA256", "x25519", "q\"uote");
    json_t *obj = json_pack("{s:O,s:i,s:{s:O}}", "suites", list, "n", 3, "inner", "again", list);
    char *want = json_dumps(obj, JSON_COMPACT);

    assert_int_equal(tf_json_frozen_held(), 0);
    tf_json_freeze(list);
    tf_json_freeze(list); /* twice: remembered once */
    assert_int_equal(tf_json_frozen_held(), 1);
    assert_int_equal(list->refcount, 4); /* ours, obj's two, the table's */
    assert_string_equal(written(obj, false), want);
    assert_string_equal(written(list, false), "[\"TLS_AES_128_GCM_SHA256\",\"x25519\",\"q\\\"uote\"]");

    /* The remembered text is what gets written. */
    json_array_append_new(list, json_string("changed"));
    assert_string_equal(written(obj, false), want);
    tf_json_thaw(list);
    assert_int_equal(tf_json_frozen_held(), 0);
    assert_int_equal(list->refcount, 3);
    assert_non_null(strstr(written(obj, false), "\"changed\"]"));
    tf_json_thaw(list); /* not frozen: nothing */
    tf_json_thaw(NULL);
    tf_json_freeze(NULL);
    json_t *str = json_string("s");
    tf_json_freeze(str); /* only arrays and objects */
    assert_int_equal(tf_json_frozen_held(), 0);
    json_decref(str);

    /* An object frozen: its members, spliced, come from its text too. */
    json_t *fields = json_pack("{s:s,s:[i,i]}", "k", "v", "l", 1, 2);
    tf_json_freeze(fields);
    assert_string_equal(written(fields, true), "\"k\":\"v\",\"l\":[1,2]");
    assert_string_equal(written(fields, false), "{\"k\":\"v\",\"l\":[1,2]}");

    /* 200 values: the table keeps at most 64, and lets go of what it pushes out. */
    json_t *many[200];
    for (int i = 0; i < 200; i++) {
        many[i] = json_pack("[i]", i);
        tf_json_freeze(many[i]);
    }
    size_t held = tf_json_frozen_held(), still = 0;
    assert_true(held <= 64);
    for (int i = 0; i < 200; i++) {
        assert_true(many[i]->refcount == 1 || many[i]->refcount == 2);
        still += many[i]->refcount == 2;
        char one[16];
        snprintf(one, sizeof(one), "[%d]", i);
        assert_string_equal(written(many[i], false), one);
    }
    assert_int_equal(still + (fields->refcount == 2), held);
    tf_json_unpacked_drop();
    assert_int_equal(tf_json_frozen_held(), 0);
    for (int i = 0; i < 200; i++) {
        assert_int_equal(many[i]->refcount, 1);
        json_decref(many[i]);
    }
    assert_int_equal(fields->refcount, 1);
    json_decref(fields);
    free(want);
    json_decref(obj);
    json_decref(list);
}

/*
 * Frozen on one thread, written on another: that thread renders the value
 * itself (the table is per thread), to the same text.
 */
static void *
write_elsewhere(void *arg)
{
    const char *got = written(arg, false);
    return got != NULL && strcmp(got, "[\"a\",1]") == 0 ? arg : NULL;
}

static void
test_frozen_per_thread(void **state)
{
    (void)state;
    json_t *v = json_pack("[s,i]", "a", 1);
    tf_json_freeze(v);
    pthread_t t;
    void *ok = NULL;
    assert_int_equal(pthread_create(&t, NULL, write_elsewhere, v), 0);
    assert_int_equal(pthread_join(t, &ok), 0);
    assert_ptr_equal(ok, v);
    tf_json_unpacked_drop();
    json_decref(v);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equal_values_share),
        cmocka_unit_test(test_unpacked_cache_evicts),
        cmocka_unit_test(test_names_shared),
        cmocka_unit_test(test_strings_as_jansson),
        cmocka_unit_test(test_null_and_object_kept),
        cmocka_unit_test(test_long_text),
        cmocka_unit_test(test_growth),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_writer_matches_jansson),
        cmocka_unit_test(test_writer_bounds),
        cmocka_unit_test(test_frozen_values),
        cmocka_unit_test(test_frozen_per_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
