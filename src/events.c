/*
 * events.c — the event stream's sinks: human text and JSON Lines.
 *
 * Job: stamp each event (RFC 3339 time with microseconds, flow id, event,
 * direction), render it once per sink and write it whole.  Events arrive
 * from every worker thread; a mutex keeps lines from interleaving.  Lines
 * go to stdio buffers and are flushed by the main loop's timer and at
 * exit, so a busy proxy does not pay a write(2) per event.  A tap (the
 * control API: live flows, counters, /events) sees each event first.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "tlsfault/events.h"
#include "tlsfault/jsontext.h"

struct tf_events {
    pthread_mutex_t lock;
    FILE *text;
    FILE *json;
    bool close_text;
    bool close_json;
    char *text_buf, *json_buf;  /* the files' stdio buffers (glibc ignores a size without one) */
    FILE *keylog;             /* opened on first use: only mitm flows write to it */
    bool keylog_failed;
    tf_events_tap_fn *tap;    /* the control API's view of the stream; NULL: none */
    void *tap_arg;
};

#define EVENTS_FILE_BUFFER (256 * 1024)

/*
 * A file sink gets a buffer of its own: glibc's setvbuf with no buffer
 * keeps the 4 KiB default, a write(2) for every connection's events.
 */
static FILE *
events_open_sink(const char *what, bool *owned, char **buf, char *err, size_t errlen)
{
    *owned = false;
    if (what == NULL || strcmp(what, "none") == 0)
        return NULL;
    if (strcmp(what, "stderr") == 0)
        return stderr;
    if (strcmp(what, "stdout") == 0)
        return stdout;
    FILE *f = fopen(what, "a");
    if (f == NULL) {
        snprintf(err, errlen, "%s: cannot open: %s", what, strerror(errno));
        return NULL;
    }
    *buf = malloc(EVENTS_FILE_BUFFER);
    if (*buf != NULL)
        setvbuf(f, *buf, _IOFBF, EVENTS_FILE_BUFFER);
    *owned = true;
    return f;
}

struct tf_events *
tf_events_open(const char *text, const char *json, char *err, size_t errlen)
{
    struct tf_events *ev = calloc(1, sizeof(*ev));
    if (ev == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&ev->lock, NULL);
    err[0] = '\0';
    ev->text = events_open_sink(text, &ev->close_text, &ev->text_buf, err, errlen);
    if (ev->text == NULL && err[0])
        goto fail;
    ev->json = events_open_sink(json, &ev->close_json, &ev->json_buf, err, errlen);
    if (ev->json == NULL && err[0])
        goto fail;
    return ev;
fail:
    tf_events_free(ev);
    return NULL;
}

void
tf_events_free(struct tf_events *ev)
{
    if (ev == NULL)
        return;
    tf_events_flush(ev);
    if (ev->close_text)
        fclose(ev->text);
    if (ev->close_json)
        fclose(ev->json);
    if (ev->keylog)
        fclose(ev->keylog);
    free(ev->text_buf); /* after fclose: the files wrote from them */
    free(ev->json_buf);
    pthread_mutex_destroy(&ev->lock);
    free(ev);
}

void
tf_events_set_tap(struct tf_events *ev, tf_events_tap_fn *fn, void *arg)
{
    ev->tap = fn;
    ev->tap_arg = arg;
}

void
tf_events_flush(struct tf_events *ev)
{
    pthread_mutex_lock(&ev->lock);
    if (ev->text)
        fflush(ev->text);
    if (ev->json)
        fflush(ev->json);
    if (ev->keylog)
        fflush(ev->keylog);
    pthread_mutex_unlock(&ev->lock);
}

void
tf_events_keylog(struct tf_events *ev, const char *path, const char *line)
{
    pthread_mutex_lock(&ev->lock);
    if (ev->keylog == NULL && !ev->keylog_failed) {
        /* Session secrets: readable by the owner only, as SSLKEYLOGFILE users expect. */
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        ev->keylog = fd >= 0 ? fdopen(fd, "a") : NULL;
        if (ev->keylog == NULL) {
            ev->keylog_failed = true;
            fprintf(stderr, "tlsfault: warn: keylog %s: %s\n", path, strerror(errno));
            if (fd >= 0)
                close(fd);
        }
    }
    if (ev->keylog != NULL)
        fprintf(ev->keylog, "%s\n", line);
    pthread_mutex_unlock(&ev->lock);
}

/* RFC 3339 UTC with microseconds; the date part is formatted once a second per thread. */
static void
events_timestamp(char *buf, size_t len)
{
    static _Thread_local time_t cached_sec = -1;
    static _Thread_local char cached[32];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    if (tv.tv_sec != cached_sec) {
        struct tm tm;
        gmtime_r(&tv.tv_sec, &tm);
        if (strftime(cached, sizeof(cached), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
            cached[0] = '\0';
        cached_sec = tv.tv_sec;
    }
    /* By hand: a printf per event was a few percent of a connection's CPU. */
    size_t n = strlen(cached);
    if (len < n + 9) {
        snprintf(buf, len, "%s", cached);
        return;
    }
    memcpy(buf, cached, n);
    buf[n] = '.';
    long us = (long)tv.tv_usec;
    for (int i = 6; i >= 1; i--) {
        buf[n + (size_t)i] = (char)('0' + us % 10);
        us /= 10;
    }
    buf[n + 7] = 'Z';
    buf[n + 8] = '\0';
}

/* A line being rendered into a fixed per-thread buffer (larger events take the slow path). */
#define EVENTS_LINE_MAX (64 * 1024)

struct line_buf {
    char *p;
    size_t used, cap;
    bool failed;
};

static _Thread_local char events_line_space[EVENTS_LINE_MAX];

static void
line_add(struct line_buf *b, const char *s, size_t n)
{
    if (b->failed || b->used + n > b->cap) {
        b->failed = true;
        return;
    }
    memcpy(b->p + b->used, s, n);
    b->used += n;
}

/*
 * The JSON line without building a second object: the stamp's keys are
 * written by hand (their values need no escaping: a timestamp, a number,
 * and names from the code), the fields dumped after them.  NULL when the
 * fields would override a stamp key (the caller merges then).
 */
/*
 * Whether fields names a member the stamp writes (ts, flow, event, dir):
 * one pass over the keys, cheaper than four hashed lookups per event.
 */
static bool
events_has_stamp_key(const json_t *fields)
{
    json_t *it = (json_t *)(uintptr_t)fields; /* only read */
    for (void *i = json_object_iter(it); i != NULL; i = json_object_iter_next(it, i)) {
        const char *k = json_object_iter_key(i);
        switch (json_object_iter_key_len(i)) {
        case 2: if (memcmp(k, "ts", 2) == 0) return true; break;
        case 3: if (memcmp(k, "dir", 3) == 0) return true; break;
        case 4: if (memcmp(k, "flow", 4) == 0) return true; break;
        case 5: if (memcmp(k, "event", 5) == 0) return true; break;
        default: break;
        }
    }
    return false;
}

static const char *
events_render_json(const char *ts, uint64_t flow, const char *event, const char *dir,
                   const json_t *fields, size_t *len)
{
    if (fields != NULL && events_has_stamp_key(fields))
        return NULL;
    struct line_buf line = { events_line_space, 0, sizeof(events_line_space), false };
    struct line_buf *b = &line;
    char id[24];
    size_t idn = sizeof(id);
    do {
        id[--idn] = (char)('0' + flow % 10);
        flow /= 10;
    } while (flow > 0);
    line_add(b, "{\"ts\":\"", 7);
    line_add(b, ts, strlen(ts));
    line_add(b, "\",\"flow\":", 9);
    line_add(b, id + idn, sizeof(id) - idn);
    line_add(b, ",\"event\":\"", 10);
    line_add(b, event, strlen(event));
    line_add(b, "\"", 1);
    if (dir != NULL) {
        line_add(b, ",\"dir\":\"", 8);
        line_add(b, dir, strlen(dir));
        line_add(b, "\"", 1);
    }
    if (fields != NULL && json_object_size(fields) > 0) {
        line_add(b, ",", 1);
        if (b->failed || !tf_json_write(fields, true, b->p, b->cap, &b->used))
            return NULL;
    }
    line_add(b, "}", 1);
    line_add(b, "\n", 1);
    if (b->failed)
        return NULL;
    *len = b->used;
    return b->p;
}

/* Appends to a bounded buffer; never overruns, silently truncates. */
struct text_buf {
    char *p;
    size_t len;
    size_t used;
};

static void
text_add(struct text_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
text_add(struct text_buf *b, const char *fmt, ...)
{
    if (b->used + 1 >= b->len)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->used, b->len - b->used, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    b->used += (size_t)n;
    if (b->used >= b->len)
        b->used = b->len - 1;
}

static void
text_add_value(struct text_buf *b, const json_t *v, int depth)
{
    switch (json_typeof(v)) {
    case JSON_STRING:
        text_add(b, "%s", json_string_value(v));
        break;
    case JSON_INTEGER:
        text_add(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        break;
    case JSON_REAL:
        text_add(b, "%.3f", json_real_value(v));
        break;
    case JSON_TRUE:
        text_add(b, "yes");
        break;
    case JSON_FALSE:
        text_add(b, "no");
        break;
    case JSON_NULL:
        text_add(b, "-");
        break;
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        const size_t show = depth == 0 ? 12 : 4;
        text_add(b, "[");
        for (size_t i = 0; i < n && i < show; i++) {
            if (i)
                text_add(b, ",");
            text_add_value(b, json_array_get(v, i), depth + 1);
        }
        if (n > show)
            text_add(b, ",+%zu", n - show);
        text_add(b, "]");
        break;
    }
    case JSON_OBJECT: {
        const char *key;
        const json_t *val;
        bool first = true;
        text_add(b, "{");
        json_object_foreach((json_t *)(uintptr_t)v, key, val)
        {
            text_add(b, "%s%s=", first ? "" : " ", key);
            text_add_value(b, val, depth + 1);
            first = false;
        }
        text_add(b, "}");
        break;
    }
    }
}

void
tf_events_format_text(const json_t *event, char *buf, size_t len)
{
    struct text_buf b = { buf, len, 0 };
    const char *dir = json_string_value(json_object_get(event, "dir"));
    const char *name = json_string_value(json_object_get(event, "event"));
    const char *type = json_string_value(json_object_get(event, "type"));
    const char *arrow = dir == NULL ? "    " : strcmp(dir, "c2s") == 0 ? "C->S" : "S->C";
    const char *key;
    const json_t *val;

    if (len == 0)
        return;
    buf[0] = '\0';
    text_add(&b, "%s #%" JSON_INTEGER_FORMAT " %s %s",
             json_string_value(json_object_get(event, "ts")),
             json_integer_value(json_object_get(event, "flow")), arrow, name ? name : "?");
    if (type)
        text_add(&b, " %s", type);
    json_object_foreach((json_t *)(uintptr_t)event, key, val)
    {
        if (strcmp(key, "ts") == 0 || strcmp(key, "flow") == 0 || strcmp(key, "event") == 0 ||
            strcmp(key, "dir") == 0 || strcmp(key, "type") == 0 || strcmp(key, "random") == 0)
            continue;
        text_add(&b, " %s=", key);
        text_add_value(&b, val, 0);
    }
}

void
tf_events_emit(struct tf_events *ev, uint64_t flow, const char *event, const char *dir,
               json_t *fields)
{
    char ts[40];
    json_t *obj = NULL;

    if (ev == NULL || (ev->text == NULL && ev->json == NULL && ev->tap == NULL)) {
        json_decref(fields);
        return;
    }
    events_timestamp(ts, sizeof(ts));
    const char *line = NULL;
    size_t line_len = 0;
    if (ev->json)
        line = events_render_json(ts, flow, event, dir, fields, &line_len);
    if (ev->text || ev->tap || (ev->json && line == NULL)) {
        obj = json_object();
        json_object_set_new_nocheck(obj, "ts", tf_json_string(ts));
        json_object_set_new_nocheck(obj, "flow", json_integer((json_int_t)flow));
        json_object_set_new_nocheck(obj, "event", tf_json_string(event));
        if (dir)
            json_object_set_new_nocheck(obj, "dir", tf_json_string(dir));
        if (fields)
            json_object_update(obj, fields);
    }
    json_decref(fields);
    if (ev->tap != NULL)
        ev->tap(ev->tap_arg, flow, event, obj);

    char *merged = ev->json && line == NULL ? json_dumps(obj, JSON_COMPACT) : NULL;
    char text[4096];
    if (ev->text)
        tf_events_format_text(obj, text, sizeof(text));

    pthread_mutex_lock(&ev->lock);
    if (ev->text) {
        fputs(text, ev->text);
        fputc('\n', ev->text);
    }
    if (line) {
        fwrite(line, 1, line_len, ev->json);
    } else if (merged) {
        fputs(merged, ev->json);
        fputc('\n', ev->json);
    }
    pthread_mutex_unlock(&ev->lock);
    free(merged);
    json_decref(obj);
}

/* Built by hand: json_pack reads its format on every call. */
json_t *
tf_events_per_dir(uint64_t c2s, uint64_t s2c)
{
    json_t *o = json_object();
    json_object_set_new_nocheck(o, "c2s", json_integer((json_int_t)c2s));
    json_object_set_new_nocheck(o, "s2c", json_integer((json_int_t)s2c));
    return o;
}
