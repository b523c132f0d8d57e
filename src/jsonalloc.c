/*
 * jsonalloc.c — jansson's memory, kept per thread (jsonalloc.h).
 *
 * Size classes follow malloc's chunks (glibc: 16-byte steps, 8 bytes of
 * each chunk its header): a request of n bytes is a chunk of class
 * (n + 23) / 16, at least 2; a freed block joins the class its usable
 * size gives, rounded down, so a block taken from a class always has room
 * for the request.  Free blocks are linked through their first word.
 */
#include <jansson.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "tlsfault/jsonalloc.h"

#if defined(__SANITIZE_ADDRESS__)
#define JSONALLOC_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define JSONALLOC_SANITIZED 1
#endif
#endif

#define JSONALLOC_CLASSES ((JSONALLOC_MAX + 23) / 16 + 1)

struct free_block {
    struct free_block *next;
};

struct jsonalloc_thread {
    struct free_block *head[JSONALLOC_CLASSES];
    unsigned count[JSONALLOC_CLASSES];
    size_t bytes; /* the blocks held, as their classes' sizes */
    bool keyed;  /* the thread-end destructor is set */
    bool closed; /* past the thread's end: straight to malloc */
};

static _Thread_local struct jsonalloc_thread jsonalloc_me;
static pthread_key_t jsonalloc_key;
static pthread_once_t jsonalloc_key_once = PTHREAD_ONCE_INIT;
static bool jsonalloc_key_made;

static void
jsonalloc_drain(struct jsonalloc_thread *t)
{
    for (size_t k = 0; k < JSONALLOC_CLASSES; k++) {
        while (t->head[k] != NULL) {
            struct free_block *b = t->head[k];
            t->head[k] = b->next;
            free(b);
        }
        t->count[k] = 0;
    }
    t->bytes = 0;
}

/* At a thread's end: its blocks go back, and what is freed later goes to malloc. */
static void
jsonalloc_thread_end(void *arg)
{
    struct jsonalloc_thread *t = arg;
    t->closed = true;
    jsonalloc_drain(t);
}

static void
jsonalloc_make_key(void)
{
    jsonalloc_key_made = pthread_key_create(&jsonalloc_key, jsonalloc_thread_end) == 0;
}

static size_t
jsonalloc_class_of_request(size_t n)
{
    return n <= 24 ? 2 : (n + 23) / 16;
}

void *
tf_json_alloc(size_t n)
{
    struct jsonalloc_thread *t = &jsonalloc_me;
    if (n <= JSONALLOC_MAX && !t->closed) {
        size_t k = jsonalloc_class_of_request(n);
        struct free_block *b = t->head[k];
        if (b != NULL) {
            t->head[k] = b->next;
            t->count[k]--;
            t->bytes -= k * 16;
            return b;
        }
    }
    return malloc(n);
}

void
tf_json_free(void *p)
{
    if (p == NULL)
        return;
    struct jsonalloc_thread *t = &jsonalloc_me;
    size_t usable = malloc_usable_size(p);
    size_t k = (usable + 8) / 16;
    if (usable >= sizeof(struct free_block) && k < JSONALLOC_CLASSES && k >= 2 && !t->closed &&
        t->count[k] < JSONALLOC_KEEP && t->bytes + k * 16 <= JSONALLOC_BYTES) {
        if (!t->keyed) {
            /* The first block kept: the thread's end must give them back. */
            pthread_once(&jsonalloc_key_once, jsonalloc_make_key);
            if (!jsonalloc_key_made || pthread_setspecific(jsonalloc_key, t) != 0) {
                free(p);
                return;
            }
            t->keyed = true;
        }
        struct free_block *b = p;
        b->next = t->head[k];
        t->head[k] = b;
        t->count[k]++;
        t->bytes += k * 16;
        return;
    }
    free(p);
}

size_t
tf_json_alloc_cached(void)
{
    size_t n = 0;
    for (size_t k = 0; k < JSONALLOC_CLASSES; k++)
        n += jsonalloc_me.count[k];
    return n;
}

size_t
tf_json_alloc_cached_for(size_t n)
{
    return n <= JSONALLOC_MAX ? jsonalloc_me.count[jsonalloc_class_of_request(n)] : 0;
}

void
tf_json_alloc_drop(void)
{
    jsonalloc_drain(&jsonalloc_me);
}

bool
tf_json_alloc_install(void)
{
#ifdef JSONALLOC_SANITIZED
    return false;
#else
    pthread_once(&jsonalloc_key_once, jsonalloc_make_key);
    if (!jsonalloc_key_made)
        return false;
    json_set_alloc_funcs(tf_json_alloc, tf_json_free);
    return true;
#endif
}
