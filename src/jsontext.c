/*
 * jsontext.c — shared compact texts of JSON values (see jsontext.h).
 *
 * A hash set of reference-counted strings: FNV-1a over the text, chains
 * per bucket, as many buckets as texts (doubling), all freed when the
 * last text goes so that nothing outlives the connections that used it.
 * Each thread keeps the last texts it unpacked, parsed: the connections
 * of one client end with the very same lists, and parsing them again was
 * a fifth of the cost of logging a connection.
 * And a compact writer that renders as jansson's JSON_COMPACT does.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
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

const char *
tf_json_text_share(const char *s, size_t len)
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


/* ------------------------------------------------------------ writer */

struct thread_caches;

/*
 * A value that will not change again and its compact text (tf_json_freeze).
 * The entry holds a reference to the value, so its address cannot be
 * freed and given to another value while it is the key.
 */
struct frozen_text {
    json_t *v;
    char *text;
    size_t len;
};

struct json_out {
    char *p;
    size_t used, cap;
    bool failed;
    struct thread_caches *frozen; /* this thread's remembered texts; NULL: none to look for */
};

static const struct frozen_text *frozen_find(struct thread_caches *c, const json_t *v);
static struct thread_caches *thread_caches_with_frozen(void);

static void
out_put(struct json_out *o, const char *s, size_t n)
{
    if (o->failed || n > o->cap - o->used) {
        o->failed = true;
        return;
    }
    memcpy(o->p + o->used, s, n);
    o->used += n;
}

static void
out_char(struct json_out *o, char c)
{
    if (o->failed || o->used >= o->cap) {
        o->failed = true;
        return;
    }
    o->p[o->used++] = c;
}

/*
 * Whether any of the 8 bytes in w is below 0x20, '"' or '\\'.  The classic
 * word tests: (x - 0x0101..*n) & ~x & 0x8080.. is non-zero exactly when a
 * byte of x is below n (n <= 0x80), and with n = 1 on w xor c when a byte
 * equals c.  Bytes from 0x80 (UTF-8) never count.
 */
static bool
out_word_needs_escape(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t quote = w ^ (ones * '"'), backslash = w ^ (ones * '\\');
    uint64_t below = (w - ones * 0x20) & ~w;
    uint64_t is_quote = (quote - ones) & ~quote;
    uint64_t is_backslash = (backslash - ones) & ~backslash;
    return ((below | is_quote | is_backslash) & highs) != 0;
}

/* The bytes jansson escapes: control characters, '"' and '\\'. */
static const bool out_escaped_byte[256] = {
    [0x00 ... 0x1f] = true,
    ['"'] = true,
    ['\\'] = true,
};

/* The general case: s[0..len) between quotes, escaping what needs it. */
static __attribute__((noinline)) void
out_string_escaping(struct json_out *o, const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t start = 0;
    out_char(o, '"');
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!out_escaped_byte[c])
            continue;
        out_put(o, s + start, i - start);
        start = i + 1;
        switch (c) {
        case '"': out_put(o, "\\\"", 2); break;
        case '\\': out_put(o, "\\\\", 2); break;
        case '\b': out_put(o, "\\b", 2); break;
        case '\f': out_put(o, "\\f", 2); break;
        case '\n': out_put(o, "\\n", 2); break;
        case '\r': out_put(o, "\\r", 2); break;
        case '\t': out_put(o, "\\t", 2); break;
        default: {
            char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            out_put(o, u, sizeof(u));
        }
        }
    }
    out_put(o, s + start, len - start);
    out_char(o, '"');
}

/*
 * jansson's string escapes: '"', '\\' and control characters; UTF-8 as it
 * is.  Most strings (keys, names, hex) have nothing to escape: they are
 * copied with their quotes while being looked at, short ones a byte at a
 * time, longer ones a word at a time (the last word read where the string
 * ends, overlapping), and only a string that needs an escape takes the
 * general path.  An escaped string is longer than its bytes, so one whose
 * bytes do not fit does not fit at all.
 */
static void
out_string(struct json_out *o, const char *s, size_t len)
{
    if (o->failed || o->cap - o->used < 2 || len > o->cap - o->used - 2) {
        o->failed = true;
        return;
    }
    char *p = o->p + o->used + 1;
    if (len < 8) {
        for (size_t i = 0; i < len; i++) {
            unsigned char c = (unsigned char)s[i];
            if (out_escaped_byte[c]) {
                out_string_escaping(o, s, len);
                return;
            }
            p[i] = (char)c;
        }
    } else {
        uint64_t w;
        for (size_t i = 0; len - i > 8; i += 8) {
            memcpy(&w, s + i, 8);
            if (out_word_needs_escape(w)) {
                out_string_escaping(o, s, len);
                return;
            }
        }
        memcpy(&w, s + len - 8, 8);
        if (out_word_needs_escape(w)) {
            out_string_escaping(o, s, len);
            return;
        }
        if (len <= 16) {
            /* Two fixed-size copies, overlapping: no call to memcpy. */
            uint64_t head;
            memcpy(&head, s, 8);
            memcpy(p, &head, 8);
            memcpy(p + len - 8, &w, 8);
        } else {
            memcpy(p, s, len);
        }
    }
    p[-1] = '"';
    p[len] = '"';
    o->used += len + 2;
}

static void
out_integer(struct json_out *o, json_int_t v)
{
    char digits[24];
    size_t n = sizeof(digits);
    /* Through unsigned: the most negative value has no positive counterpart. */
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        digits[--n] = (char)('0' + u % 10);
        u /= 10;
    } while (u > 0);
    if (v < 0)
        digits[--n] = '-';
    out_put(o, digits + n, sizeof(digits) - n);
}

/* As jansson: %.17g, a ".0" when it reads as an integer, the exponent without '+' or leading 0s. */
static void
out_real(struct json_out *o, double v)
{
    char buf[64];
    int n = snprintf(buf, sizeof(buf), "%.17g", v);
    if (n < 0 || (size_t)n >= sizeof(buf) - 2) {
        o->failed = true;
        return;
    }
    size_t len = (size_t)n;
    if (strspn(buf, "0123456789-") == len) {
        memcpy(buf + len, ".0", 3);
        len += 2;
    }
    char *e = strchr(buf, 'e');
    if (e != NULL) {
        char *start = e + 1;
        if (*start == '-')
            start++;
        char *end = start;
        while (*end == '+' || *end == '0')
            end++;
        if (end > start) {
            memmove(start, end, strlen(end) + 1);
            len = strlen(buf);
        }
    }
    out_put(o, buf, len);
}

static void out_value(struct json_out *o, const json_t *v, int depth);

static void
out_members(struct json_out *o, const json_t *obj, int depth)
{
    bool first = true;
    /* The iteration functions take a non-const object; they only read it. */
    json_t *it = (json_t *)(uintptr_t)obj;
    /*
     * By iterator, not json_object_foreach: the macro turns each key back
     * into its iterator twice, and the key's length is stored already.
     */
    for (void *i = json_object_iter(it); i != NULL; i = json_object_iter_next(it, i)) {
        if (!first)
            out_char(o, ',');
        first = false;
        out_string(o, json_object_iter_key(i), json_object_iter_key_len(i));
        out_char(o, ':');
        out_value(o, json_object_iter_value(i), depth + 1);
        if (o->failed)
            return;
    }
}

/* jansson refuses deeper nesting (a cycle would otherwise recurse forever). */
#define JSON_WRITE_DEPTH_MAX 2048

static void
out_value(struct json_out *o, const json_t *v, int depth)
{
    if (depth > JSON_WRITE_DEPTH_MAX) {
        o->failed = true;
        return;
    }
    if (o->frozen != NULL && (json_is_array(v) || json_is_object(v))) {
        const struct frozen_text *f = frozen_find(o->frozen, v);
        if (f != NULL) {
            out_put(o, f->text, f->len);
            return;
        }
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        out_char(o, '{');
        out_members(o, v, depth);
        out_char(o, '}');
        break;
    case JSON_ARRAY:
        out_char(o, '[');
        for (size_t i = 0, n = json_array_size(v); i < n && !o->failed; i++) {
            if (i > 0)
                out_char(o, ',');
            out_value(o, json_array_get(v, i), depth + 1);
        }
        out_char(o, ']');
        break;
    case JSON_STRING:
        out_string(o, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        out_integer(o, json_integer_value(v));
        break;
    case JSON_REAL:
        out_real(o, json_real_value(v));
        break;
    case JSON_TRUE:
        out_put(o, "true", 4);
        break;
    case JSON_FALSE:
        out_put(o, "false", 5);
        break;
    case JSON_NULL:
        out_put(o, "null", 4);
        break;
    }
}

bool
tf_json_write(const json_t *v, bool members_only, char *buf, size_t cap, size_t *used)
{
    struct json_out o = {buf, *used, cap, false, thread_caches_with_frozen()};
    if (v == NULL || *used > cap || (members_only && !json_is_object(v)))
        return false;
    if (members_only)
        out_members(&o, v, 0);
    else
        out_value(&o, v, 0);
    if (o.failed)
        return false;
    *used = o.used;
    return true;
}

void
tf_json_pack(json_t **v, const char **text)
{
    char buf[4096];
    char *heap = NULL;
    const char *s = buf;
    size_t len = 0;

    if (*v == NULL || *text != NULL)
        return;
    if (!tf_json_write(*v, false, buf, sizeof(buf), &len)) {
        if ((heap = json_dumps(*v, JSON_COMPACT)) == NULL)
            return;
        s = heap;
        len = strlen(heap);
    }
    *text = tf_json_text_share(s, len);
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

/* Another reference to a held text. */
static const char *
text_retain(const char *text)
{
    struct shared_text *e =
        (struct shared_text *)((uintptr_t)text - offsetof(struct shared_text, text));
    pthread_mutex_lock(&texts_lock);
    e->refs++;
    pthread_mutex_unlock(&texts_lock);
    return text;
}

/* ------------------------------------------------------------ per thread: unpacked texts, names */

#define UNPACKED_SLOTS 8
#define NAME_SETS 128  /* of two names each */
#define FROZEN_SETS 32 /* of two values each */

/*
 * A slot holds a reference to its text, so the address cannot be freed
 * and given to another text while it is the key.
 */
struct unpacked {
    const char *text;
    json_t *v;
    uint64_t used;
};

/* A name with static storage and its JSON string (tf_json_name). */
struct name_string {
    const char *name;
    json_t *str;
};

struct thread_caches {
    struct unpacked slot[UNPACKED_SLOTS];
    uint64_t clock;
    struct name_string names[NAME_SETS][2]; /* [0]: the one used last */
    struct frozen_text frozen[FROZEN_SETS][2];
    size_t frozen_count;
};

static pthread_key_t thread_caches_key;
static pthread_once_t thread_caches_once = PTHREAD_ONCE_INIT;
static bool thread_caches_usable;

static void
thread_caches_clear(struct thread_caches *c)
{
    for (size_t i = 0; i < UNPACKED_SLOTS; i++) {
        tf_json_text_release(c->slot[i].text);
        json_decref(c->slot[i].v);
        c->slot[i] = (struct unpacked){0};
    }
    for (size_t i = 0; i < NAME_SETS; i++) {
        for (size_t way = 0; way < 2; way++) {
            json_decref(c->names[i][way].str);
            c->names[i][way] = (struct name_string){0};
        }
    }
    for (size_t i = 0; i < FROZEN_SETS; i++) {
        for (size_t way = 0; way < 2; way++) {
            json_decref(c->frozen[i][way].v);
            free(c->frozen[i][way].text);
            c->frozen[i][way] = (struct frozen_text){0};
        }
    }
    c->frozen_count = 0;
}

static void
thread_caches_free(void *arg)
{
    thread_caches_clear(arg);
    free(arg);
}

static void
thread_caches_init(void)
{
    thread_caches_usable = pthread_key_create(&thread_caches_key, thread_caches_free) == 0;
}

/* This thread's caches; NULL when they cannot be had (callers go on without). */
static struct thread_caches *
thread_caches_get(bool create)
{
    pthread_once(&thread_caches_once, thread_caches_init);
    if (!thread_caches_usable)
        return NULL;
    struct thread_caches *c = pthread_getspecific(thread_caches_key);
    if (c == NULL && create) {
        c = calloc(1, sizeof(*c));
        if (c != NULL && pthread_setspecific(thread_caches_key, c) != 0) {
            free(c);
            c = NULL;
        }
    }
    return c;
}

json_t *
tf_json_unpack(json_t *v, const char *text)
{
    if (v != NULL)
        return json_incref(v);
    if (text == NULL)
        return NULL;
    struct thread_caches *c = thread_caches_get(true);
    if (c == NULL)
        return json_loads(text, 0, NULL);
    struct unpacked *oldest = &c->slot[0];
    for (size_t i = 0; i < UNPACKED_SLOTS; i++) {
        struct unpacked *u = &c->slot[i];
        if (u->text == text) {
            u->used = ++c->clock;
            return json_incref(u->v);
        }
        if (u->used < oldest->used)
            oldest = u;
    }
    json_t *parsed = json_loads(text, 0, NULL);
    if (parsed != NULL) {
        tf_json_text_release(oldest->text);
        json_decref(oldest->v);
        *oldest = (struct unpacked){text_retain(text), json_incref(parsed), ++c->clock};
    }
    return parsed;
}

/*
 * Keyed by the name's address: the names are literals and table entries,
 * which never move or change.  Two ways per set, so that two names a
 * connection uses that fall into one set do not push each other out every
 * time.  A string made, checked as UTF-8 and freed was 500 instructions; a
 * hit is a dozen.
 */
static bool
text_is_ascii(const char *s, size_t len)
{
    const uint64_t high = 0x8080808080808080ULL;
    size_t i = 0;
    for (; len - i >= 8; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        if (w & high)
            return false;
    }
    for (; i < len; i++)
        if ((unsigned char)s[i] & 0x80)
            return false;
    return true;
}

json_t *
tf_json_stringn(const char *s, size_t len)
{
    if (s == NULL)
        return NULL;
    return text_is_ascii(s, len) ? json_stringn_nocheck(s, len) : json_stringn(s, len);
}

json_t *
tf_json_string(const char *s)
{
    return s == NULL ? NULL : tf_json_stringn(s, strlen(s));
}

json_t *
tf_json_name(const char *name)
{
    if (name == NULL)
        return NULL; /* as json_string; and NULL is an empty slot's key */
    struct thread_caches *c = thread_caches_get(true);
    if (c == NULL)
        return json_string(name);
    /* Fibonacci hashing: names sit at regular strides in a table. */
    uint64_t h = ((uint64_t)(uintptr_t)name * 0x9E3779B97F4A7C15ULL) >> 57;
    struct name_string *set = c->names[h % NAME_SETS];
    if (set[0].name == name)
        return json_incref(set[0].str);
    if (set[1].name == name) {
        struct name_string hit = set[1];
        set[1] = set[0];
        set[0] = hit;
        return json_incref(hit.str);
    }
    json_t *str = json_string(name);
    if (str == NULL)
        return NULL;
    json_decref(set[1].str);
    set[1] = set[0];
    set[0] = (struct name_string){name, str};
    return json_incref(str);
}

/* ------------------------------------------------------------ per thread: frozen values */

static struct frozen_text *
frozen_set(struct thread_caches *c, const json_t *v)
{
    uint64_t h = ((uint64_t)(uintptr_t)v * 0x9E3779B97F4A7C15ULL) >> 59;
    return c->frozen[h % FROZEN_SETS];
}

static const struct frozen_text *
frozen_find(struct thread_caches *c, const json_t *v)
{
    struct frozen_text *set = frozen_set(c, v);
    if (set[0].v == v)
        return &set[0];
    if (set[1].v == v)
        return &set[1];
    return NULL;
}

/* The writer asks once per call, and looks only when this thread has frozen something. */
static struct thread_caches *
thread_caches_with_frozen(void)
{
    struct thread_caches *c = thread_caches_get(false);
    return c != NULL && c->frozen_count > 0 ? c : NULL;
}

static void
frozen_clear(struct thread_caches *c, struct frozen_text *f)
{
    if (f->v == NULL)
        return;
    json_decref(f->v);
    free(f->text);
    *f = (struct frozen_text){0};
    c->frozen_count--;
}

void
tf_json_freeze(json_t *v)
{
    if (v == NULL || !(json_is_array(v) || json_is_object(v)))
        return;
    struct thread_caches *c = thread_caches_get(true);
    if (c == NULL || frozen_find(c, v) != NULL)
        return;
    /* Rendered by the same writer, without looking up frozen texts: the text is its own. */
    struct json_out o = {NULL, 0, 0, false, NULL};
    size_t cap = 256;
    for (;;) {
        char *p = realloc(o.p, cap);
        if (p == NULL) {
            free(o.p);
            return;
        }
        o = (struct json_out){p, 0, cap, false, NULL};
        out_value(&o, v, 0);
        if (!o.failed)
            break;
        if (cap >= 1024 * 1024) { /* not worth remembering (or not JSON): written as it comes */
            free(o.p);
            return;
        }
        cap *= 4;
    }
    struct frozen_text *set = frozen_set(c, v);
    frozen_clear(c, &set[1]);
    set[1] = set[0];
    set[0] = (struct frozen_text){json_incref(v), o.p, o.used};
    c->frozen_count++;
}

void
tf_json_thaw(json_t *v)
{
    struct thread_caches *c = v != NULL ? thread_caches_get(false) : NULL;
    if (c == NULL)
        return;
    struct frozen_text *set = frozen_set(c, v);
    for (size_t way = 0; way < 2; way++)
        if (set[way].v == v)
            frozen_clear(c, &set[way]);
}

size_t
tf_json_frozen_held(void)
{
    struct thread_caches *c = thread_caches_get(false);
    return c != NULL ? c->frozen_count : 0;
}

void
tf_json_unpacked_drop(void)
{
    struct thread_caches *c = thread_caches_get(false);
    if (c != NULL)
        thread_caches_clear(c);
}

size_t
tf_json_texts_held(void)
{
    pthread_mutex_lock(&texts_lock);
    size_t n = texts_count;
    pthread_mutex_unlock(&texts_lock);
    return n;
}
