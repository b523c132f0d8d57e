/*
 * Unit tests for jsonalloc.c: jansson's per-thread block cache.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <jansson.h>
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "tlsfault/jsonalloc.h"

/* Every size up to past the largest kept: a block always has room for its request. */
static void
test_sizes_have_room(void **state)
{
    (void)state;
    void *held[JSONALLOC_MAX + 64];
    for (int round = 0; round < 3; round++) {
        for (size_t n = 1; n < JSONALLOC_MAX + 64; n++) {
            held[n] = tf_json_alloc(n);
            assert_non_null(held[n]);
            assert_true(malloc_usable_size(held[n]) >= n);
            memset(held[n], (int)(n & 0xff), n);
        }
        /* Freed in another order than made: blocks change hands across sizes. */
        for (size_t n = JSONALLOC_MAX + 63; n >= 1; n--) {
            for (size_t i = 0; i < n; i++)
                assert_int_equal(((unsigned char *)held[n])[i], n & 0xff);
            tf_json_free(held[n]);
        }
    }
    tf_json_free(NULL);
    tf_json_alloc_drop();
    assert_int_equal(tf_json_alloc_cached(), 0);
}

/* A freed block is the next one of its class; the cache is bounded and gives back. */
static void
test_reuse_and_bounds(void **state)
{
    (void)state;
    tf_json_alloc_drop();
    void *a = tf_json_alloc(40);
    tf_json_free(a);
    assert_int_equal(tf_json_alloc_cached(), 1);
    void *b = tf_json_alloc(33); /* the same class (a 48-byte chunk) */
    assert_ptr_equal(a, b);
    assert_int_equal(tf_json_alloc_cached(), 0);
    tf_json_free(b);

    /* Larger than the largest class: straight to malloc, never kept. */
    void *big = tf_json_alloc(JSONALLOC_MAX * 4);
    tf_json_free(big);
    assert_int_equal(tf_json_alloc_cached(), 1);

    /* Many of one class: at most JSONALLOC_KEEP kept. */
    enum { MANY = JSONALLOC_KEEP + 100 };
    void **many = calloc(MANY, sizeof(*many));
    assert_non_null(many);
    for (size_t i = 0; i < MANY; i++)
        many[i] = tf_json_alloc(24);
    for (size_t i = 0; i < MANY; i++)
        tf_json_free(many[i]);
    assert_true(tf_json_alloc_cached_for(24) > 0);
    assert_true(tf_json_alloc_cached_for(24) <= JSONALLOC_KEEP);

    /* Many of the largest class: at most JSONALLOC_BYTES kept. */
    for (size_t i = 0; i < MANY; i++)
        many[i] = tf_json_alloc(JSONALLOC_MAX);
    tf_json_alloc_drop();
    for (size_t i = 0; i < MANY; i++)
        tf_json_free(many[i]);
    /* Each held block counts as its class (at least JSONALLOC_MAX - 16 bytes here). */
    assert_true(tf_json_alloc_cached() * (JSONALLOC_MAX - 16) <= JSONALLOC_BYTES);
    assert_true(tf_json_alloc_cached() > 0);
    free(many);
    tf_json_alloc_drop();
    assert_int_equal(tf_json_alloc_cached(), 0);
}

struct worker_arg {
    void **blocks;
    size_t n;
    size_t cached_at_end;
};

/* Frees blocks another thread made, makes its own, and ends with some kept. */
static void *
worker(void *p)
{
    struct worker_arg *w = p;
    for (size_t i = 0; i < w->n; i++)
        tf_json_free(w->blocks[i]);
    for (int i = 0; i < 1000; i++) {
        json_t *o = json_pack("{s:i, s:s, s:[i, i]}", "n", i, "s", "text", "a", 1, 2);
        char *t = json_dumps(o, JSON_COMPACT);
        assert_non_null(t);
        free(t); /* json_dumps' text is malloc's: free() takes it */
        json_decref(o);
    }
    w->cached_at_end = tf_json_alloc_cached();
    return NULL;
}

/*
 * Installed: jansson's values come and go through the cache on several
 * threads at once, blocks made on one thread are freed on another, and a
 * thread's end gives back what it held (valgrind and LSan see no leak).
 */
static void
test_threads_and_jansson(void **state)
{
    (void)state;
    bool installed = tf_json_alloc_install();
#if defined(__SANITIZE_ADDRESS__)
    assert_false(installed);
#else
    assert_true(installed);
#endif
    enum { THREADS = 4, EACH = 500 };
    pthread_t th[THREADS];
    struct worker_arg args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i].n = EACH;
        args[i].blocks = calloc(EACH, sizeof(void *));
        assert_non_null(args[i].blocks);
        for (size_t j = 0; j < EACH; j++)
            args[i].blocks[j] = tf_json_alloc(16 + j % 200);
        assert_int_equal(pthread_create(&th[i], NULL, worker, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        if (installed)
            assert_true(args[i].cached_at_end > 0);
        free(args[i].blocks);
    }
    json_t *o = json_pack("{s:s}", "after", "threads");
    assert_string_equal(json_string_value(json_object_get(o, "after")), "threads");
    json_decref(o);
    tf_json_alloc_drop();
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes_have_room),
        cmocka_unit_test(test_reuse_and_bounds),
        cmocka_unit_test(test_threads_and_jansson),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
