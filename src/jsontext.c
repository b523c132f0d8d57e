/*
 * jsontext.c — shared compact texts of JSON values (see jsontext.h).
 *
 * A hash set of reference-counted strings: FNV-1a over the text, chains
 * per bucket, as many buckets as texts (doubling), all freed when the
 * last text goes so that nothing outlives the connections that used it.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tlsfault/jsontext.h"

struct shared_text {
    struct shared_text *next;
    uint64_t hash;
    size_t refs;
    size_t len;
    char text[];
};

static pthread_mutex_t texts_lock = PTHREAD_MUTEX_INITIALIZER;
static struct shared_text **texts;
static size_t texts_buckets, texts_count;

static uint64_t
text_hash(const char *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* Called with the lock held; false when memory is short (the set stays usable). */
static bool
texts_grow(void)
{
    size_t n = texts_buckets ? texts_buckets * 2 : 64;
    struct shared_text **b = calloc(n, sizeof(*b));
    if (b == NULL)
        return texts_buckets > 0;
    for (size_t i = 0; i < texts_buckets; i++) {
        for (struct shared_text *e = texts[i], *next; e != NULL; e = next) {
            next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    }
    free(texts);
    texts = b;
    texts_buckets = n;
    return true;
}

/* A reference to the shared copy of s[0..len), or NULL when memory is short. */
static const char *
text_share(const char *s, size_t len)
{
    uint64_t h = text_hash(s, len);
    struct shared_text *e;
    const char *out = NULL;

    pthread_mutex_lock(&texts_lock);
    if (texts_count >= texts_buckets && !texts_grow())
        goto done;
    for (e = texts[h & (texts_buckets - 1)]; e != NULL; e = e->next) {
        if (e->hash == h && e->len == len && memcmp(e->text, s, len) == 0) {
            e->refs++;
            out = e->text;
            goto done;
        }
    }
    e = malloc(sizeof(*e) + len + 1);
    if (e == NULL)
        goto done;
    e->hash = h;
    e->refs = 1;
    e->len = len;
    memcpy(e->text, s, len);
    e->text[len] = '\0';
    e->next = texts[h & (texts_buckets - 1)];
    texts[h & (texts_buckets - 1)] = e;
    texts_count++;
    out = e->text;
done:
    pthread_mutex_unlock(&texts_lock);
    return out;
}

void
tf_json_pack(json_t **v, const char **text)
{
    char buf[4096];
    char *heap = NULL;
    const char *s = buf;
    size_t len;

    if (*v == NULL || *text != NULL)
        return;
    len = json_dumpb(*v, buf, sizeof(buf), JSON_COMPACT);
    if (len == 0)
        return;
    if (len > sizeof(buf)) {
        if ((heap = json_dumps(*v, JSON_COMPACT)) == NULL)
            return;
        s = heap;
        len = strlen(heap);
    }
    *text = text_share(s, len);
    free(heap);
    if (*text != NULL) {
        json_decref(*v);
        *v = NULL;
    }
}

void
tf_json_text_release(const char *text)
{
    if (text == NULL)
        return;
    /* The text is the tail of its entry (text is const to the holders only). */
    struct shared_text *e =
        (struct shared_text *)((uintptr_t)text - offsetof(struct shared_text, text));
    pthread_mutex_lock(&texts_lock);
    if (--e->refs == 0) {
        struct shared_text **p = &texts[e->hash & (texts_buckets - 1)];
        while (*p != e)
            p = &(*p)->next;
        *p = e->next;
        free(e);
        if (--texts_count == 0) {
            free(texts);
            texts = NULL;
            texts_buckets = 0;
        }
    }
    pthread_mutex_unlock(&texts_lock);
}

size_t
tf_json_texts_held(void)
{
    pthread_mutex_lock(&texts_lock);
    size_t n = texts_count;
    pthread_mutex_unlock(&texts_lock);
    return n;
}
