/*
 * control.c — the HTTP control API: rules, flows, counters, the event stream.
 *
 * Job: answer a test suite's requests on the main thread's loop (libevent
 * evhttp; bodies in JSON via jansson) and keep the view of the traffic the
 * answers need.  Endpoints (tlsfault(8), CONTROL):
 *
 *   GET /faults                  the catalogue
 *   GET /rules, POST /rules      the rules in force; add one
 *   GET|PATCH|DELETE /rules/NAME one rule; enable/disable, params, match, reset
 *   GET /flows, GET /flows/ID    live flows; one flow with its events so far
 *   GET /stats                   counters since start
 *   GET /events                  the event stream: chunked JSON Lines, open
 *   POST /reload                 re-read the file, as SIGHUP
 *
 * What it leaves to others: the rules are judged by fault.c (the same
 * setters as the file and --fault) and config.c (tf_config_with_rules: the
 * file's cross-checks, and a new snapshot that shares everything but the
 * rules); main.c posts the new snapshot to the workers, the same path as
 * SIGHUP.  A change is judged whole before anything is applied: a request
 * either changes the rules or leaves them exactly as they were.
 *
 * Threads: every event of every worker passes through the tap
 * (control_tap), on the worker's thread.  The tap takes the API's own
 * lock, updates the flows and counters, and queues the line for /events
 * subscribers; the main loop is woken (event_active) to write it, so no
 * socket is ever written from a worker.  Everything else runs on the main
 * thread.
 *
 * Safety: by default only loopback addresses are served (config.c refuses
 * others without allow_remote and a token).  A loopback API is still
 * reachable from a browser on the same machine, so requests whose Host is
 * a name other than localhost are refused (DNS rebinding), and POST and
 * PATCH must say Content-Type: application/json (a cross-site form cannot).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <inttypes.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tlsfault/config.h"
#include "tlsfault/control.h"
#include "tlsfault/events.h"
#include "tlsfault/fault.h"
#include "tlsfault/listener.h"
#include "tlsfault/log.h"

#define CONTROL_FLOW_BUCKETS 4096          /* ids are sequential: id % N spreads them evenly */
#define CONTROL_FLOW_EVENTS_MAX 512        /* events kept per flow; later ones are counted */
#define CONTROL_STORE_MAX (64u << 20)      /* bytes of events kept over all flows */
#define CONTROL_ENDED_KEEP 64              /* ended flows still answered by /flows/ID */
#define CONTROL_QUEUE_MAX 65536            /* lines waiting for the main loop */
#define CONTROL_SUBSCRIBERS_MAX 64
#define CONTROL_SUB_BACKLOG (4u << 20)     /* unsent bytes before a slow subscriber loses lines */
#define CONTROL_BODY_MAX (1 << 20)
#define CONTROL_HEADERS_MAX (64 << 10)
#define CONTROL_TIMEOUT_S 30               /* a request must arrive within this */
#define CONTROL_FILTER_EVENTS 8
#define CONTROL_ERR_MAX 8192

/* ------------------------------------------------------------ state */

/*
 * One flow as the API knows it: a summary (JSON object: listener, client,
 * sni, faults, ...) and its events so far as JSON Lines text.  Owned by
 * the control state; reached through the hash (live) or the ended list.
 */
struct control_flow {
    uint64_t id;
    bool live;
    json_t *info;
    char **lines;
    size_t n_lines;
    size_t cap_lines;
    size_t bytes;             /* of lines, counted in ctl->store_bytes */
    uint64_t n_events;        /* all events, kept or not */
    uint64_t dropped;         /* events not kept (per-flow or global cap) */
    struct timespec started;  /* monotonic, for age_ms */
    struct control_flow *hnext;
    struct control_flow *enext;
};

/* A line waiting for the main loop, with what subscribers filter on. */
struct control_item {
    uint64_t flow;
    char event[32];
    char rule[72];
    char *line;
    size_t len;
    struct control_item *next;
};

/* A GET /events stream.  Main thread only, but for n_subs (under lock). */
struct control_sub {
    struct tf_control *ctl;
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    bool has_flow;
    uint64_t flow;
    char events[CONTROL_FILTER_EVENTS][32];
    size_t n_events;
    char rule[72];
    uint64_t dropped;
    TAILQ_ENTRY(control_sub) link;
};

struct tf_control {
    struct event_base *base;
    struct tf_events *events;
    struct tf_control_hooks hooks;
    struct evhttp *http;
    struct event *wake;
    TAILQ_HEAD(, control_sub) subs;
    struct timespec started;

    /* Everything below is shared with the workers' tap. */
    pthread_mutex_t lock;
    struct control_flow *buckets[CONTROL_FLOW_BUCKETS];
    size_t n_live;
    struct control_flow *ended_head, *ended_tail;
    size_t n_ended;
    size_t store_bytes;
    struct control_item *queue_head, *queue_tail;
    size_t queue_len;
    bool wake_pending;
    size_t n_subs;
    /* counters */
    uint64_t flows_started, flows_ended, events_total, bytes_c2s, bytes_s2c;
    uint64_t stored_dropped, queue_dropped, stream_dropped;
    json_t *handshakes;  /* version -> flows */
    json_t *outcomes;    /* outcome -> flows */
    json_t *verdicts;    /* verdict cause -> flows */
    json_t *faults;      /* rule -> {fault, events, flows}: since start */
    json_t *rule_events; /* rule -> fault events since the rule was added, reset or reloaded */
};

/* ------------------------------------------------------------ small helpers */

static double
control_ms_since(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t->tv_sec) * 1000.0 + (double)(now.tv_nsec - t->tv_nsec) / 1e6;
}

/* obj[key] += by, as a JSON integer. */
static void
control_bump(json_t *obj, const char *key, json_int_t by)
{
    json_t *v = json_object_get(obj, key);
    if (v != NULL)
        json_integer_set(v, json_integer_value(v) + by);
    else
        json_object_set_new(obj, key, json_integer(by));
}

static const char *
control_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Entity";
    case 503: return "Service Unavailable";
    default: return "Internal Server Error";
    }
}

/* Sends body (stolen) as the answer, pretty-printed with a final newline. */
static void
control_reply(struct evhttp_request *req, int status, json_t *body)
{
    struct evbuffer *out = evbuffer_new();
    char *text = body != NULL ? json_dumps(body, JSON_INDENT(2) | JSON_ENCODE_ANY) : NULL;
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);

    evhttp_add_header(h, "Content-Type", "application/json");
    evhttp_add_header(h, "Cache-Control", "no-store");
    if (out != NULL && text != NULL) {
        evbuffer_add(out, text, strlen(text));
        evbuffer_add(out, "\n", 1);
    }
    evhttp_send_reply(req, status, control_reason(status), out);
    if (out != NULL)
        evbuffer_free(out);
    free(text);
    json_decref(body);
}

/*
 * A message as a JSON string: it may quote what a client sent (a path
 * segment, a value cut short in the middle of a character), so bytes that
 * are not UTF-8 become '?' rather than making the answer empty.
 */
static json_t *
control_text(const char *msg)
{
    json_t *v = json_string(msg);
    if (v != NULL)
        return v;
    char *copy = strdup(msg);
    if (copy == NULL)
        return json_string("?");
    for (unsigned char *p = (unsigned char *)copy; *p != '\0'; p++)
        if (*p >= 0x80)
            *p = '?';
    v = json_string(copy);
    free(copy);
    return v;
}

/* {"error": msg, "status": status} plus extra's members (stolen; may be NULL). */
static void
control_error(struct evhttp_request *req, int status, const char *msg, json_t *extra)
{
    json_t *body = json_pack("{s:o, s:i}", "error", control_text(msg), "status", status);
    if (extra != NULL) {
        json_object_update(body, extra);
        json_decref(extra);
    }
    control_reply(req, status, body);
}

static void __attribute__((format(printf, 3, 4)))
control_errorf(struct evhttp_request *req, int status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    control_error(req, status, msg, NULL);
}

static const char *
control_method_name(enum evhttp_cmd_type m)
{
    switch (m) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_PATCH: return "PATCH";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    default: return "?";
    }
}

/*
 * The request body as JSON.  On failure the answer has been sent: 415
 * without Content-Type: application/json, 400 with jansson's reason and
 * position for a body that is not JSON.  Returns a new reference.
 */
static json_t *
control_body(struct evhttp_request *req)
{
    const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    json_error_t jerr;
    char msg[512];

    if (ct == NULL || strncasecmp(ct, "application/json", 16) != 0 ||
        (ct[16] != '\0' && ct[16] != ';' && ct[16] != ' ')) {
        control_error(req, 415, "send the body as Content-Type: application/json", NULL);
        return NULL;
    }
    const char *data = len > 0 ? (const char *)evbuffer_pullup(in, -1) : "";
    json_t *v = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (v == NULL) {
        snprintf(msg, sizeof(msg), "invalid JSON: %s at line %d, column %d", jerr.text,
                 jerr.line, jerr.column);
        control_error(req, 400, msg,
                      json_pack("{s:i, s:i, s:i}", "line", jerr.line, "column", jerr.column,
                                "position", jerr.position));
    }
    return v;
}

/* ------------------------------------------------------------ the tap (worker threads) */

static struct control_flow *
control_flow_find(struct tf_control *ctl, uint64_t id)
{
    for (struct control_flow *f = ctl->buckets[id % CONTROL_FLOW_BUCKETS]; f; f = f->hnext)
        if (f->id == id)
            return f;
    for (struct control_flow *f = ctl->ended_head; f; f = f->enext)
        if (f->id == id)
            return f;
    return NULL;
}

static void
control_flow_free(struct tf_control *ctl, struct control_flow *f)
{
    for (size_t i = 0; i < f->n_lines; i++)
        free(f->lines[i]);
    free(f->lines);
    ctl->store_bytes -= f->bytes;
    json_decref(f->info);
    free(f);
}

static void
control_copy_field(json_t *to, const json_t *from, const char *key)
{
    json_t *v = json_object_get(from, key);
    if (v != NULL)
        json_object_set(to, key, v);
}

static struct control_flow *
control_flow_start(struct tf_control *ctl, uint64_t id, const json_t *obj)
{
    struct control_flow *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->id = id;
    f->live = true;
    clock_gettime(CLOCK_MONOTONIC, &f->started);
    f->info = json_pack("{s:I, s:b}", "id", (json_int_t)id, "live", 1);
    if (f->info == NULL) {
        free(f);
        return NULL;
    }
    static const char *const keys[] = {"listener", "client", "upstream", "mode", "route",
                                       "original_dst"};
    json_object_set_nocheck(f->info, "started", json_object_get(obj, "ts"));
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        control_copy_field(f->info, obj, keys[i]);
    json_object_set_new_nocheck(f->info, "faults", json_array());
    f->hnext = ctl->buckets[id % CONTROL_FLOW_BUCKETS];
    ctl->buckets[id % CONTROL_FLOW_BUCKETS] = f;
    ctl->n_live++;
    return f;
}

/* A live flow has ended: out of the hash, onto the end of the ended list. */
static void
control_flow_end(struct tf_control *ctl, struct control_flow *f)
{
    struct control_flow **pp = &ctl->buckets[f->id % CONTROL_FLOW_BUCKETS];
    while (*pp != NULL && *pp != f)
        pp = &(*pp)->hnext;
    if (*pp == f)
        *pp = f->hnext;
    f->hnext = NULL;
    f->live = false;
    ctl->n_live--;
    if (ctl->ended_tail != NULL)
        ctl->ended_tail->enext = f;
    else
        ctl->ended_head = f;
    ctl->ended_tail = f;
    ctl->n_ended++;
    while (ctl->n_ended > CONTROL_ENDED_KEEP) {
        struct control_flow *old = ctl->ended_head;
        ctl->ended_head = old->enext;
        if (ctl->ended_head == NULL)
            ctl->ended_tail = NULL;
        ctl->n_ended--;
        control_flow_free(ctl, old);
    }
}

static void
control_flow_keep(struct tf_control *ctl, struct control_flow *f, const char *line, size_t len)
{
    f->n_events++;
    if (f->n_lines >= CONTROL_FLOW_EVENTS_MAX || ctl->store_bytes + len > CONTROL_STORE_MAX) {
        f->dropped++;
        ctl->stored_dropped++;
        return;
    }
    if (f->n_lines == f->cap_lines) {
        size_t cap = f->cap_lines ? f->cap_lines * 2 : 16;
        char **lines = realloc(f->lines, cap * sizeof(*lines));
        if (lines == NULL) {
            f->dropped++;
            return;
        }
        f->lines = lines;
        f->cap_lines = cap;
    }
    char *copy = malloc(len + 1);
    if (copy == NULL) {
        f->dropped++;
        return;
    }
    memcpy(copy, line, len + 1);
    f->lines[f->n_lines++] = copy;
    f->bytes += len;
    ctl->store_bytes += len;
}

/* Counters and the flow's summary, from one event (under the lock). */
static void
control_count(struct tf_control *ctl, struct control_flow *f, const char *event, const json_t *obj)
{
    if (strcmp(event, "fault") == 0) {
        const char *rule = json_string_value(json_object_get(obj, "rule"));
        const char *fault = json_string_value(json_object_get(obj, "fault"));
        if (rule != NULL) {
            json_t *r = json_object_get(ctl->faults, rule);
            if (r == NULL) {
                r = json_pack("{s:s, s:I, s:I}", "fault", fault ? fault : "?", "events",
                              (json_int_t)0, "flows", (json_int_t)0);
                json_object_set_new(ctl->faults, rule, r);
            }
            control_bump(r, "events", 1);
            control_bump(ctl->rule_events, rule, 1);
            if (f != NULL) {
                json_t *list = json_object_get(f->info, "faults");
                bool have = false;
                for (size_t i = 0; i < json_array_size(list); i++)
                    have = have || strcmp(json_string_value(json_array_get(list, i)), rule) == 0;
                if (!have)
                    json_array_append_new(list, json_string(rule));
            }
        }
        return;
    }
    if (strcmp(event, "handshake") == 0 && f != NULL) {
        const char *type = json_string_value(json_object_get(obj, "type"));
        const json_t *sn = json_object_get(obj, "server_name");
        if (type != NULL && strcmp(type, "client_hello") == 0 && json_is_string(sn))
            json_object_set_nocheck(f->info, "sni", (json_t *)(uintptr_t)sn);
        return;
    }
    if (strcmp(event, "flow_end") != 0)
        return;
    ctl->flows_ended++;
    const json_t *bytes = json_object_get(obj, "bytes");
    ctl->bytes_c2s += (uint64_t)json_integer_value(json_object_get(bytes, "c2s"));
    ctl->bytes_s2c += (uint64_t)json_integer_value(json_object_get(bytes, "s2c"));
    const char *version = json_string_value(json_object_get(obj, "version"));
    control_bump(ctl->handshakes, version != NULL ? version : "none", 1);
    const char *outcome = json_string_value(json_object_get(obj, "outcome"));
    if (outcome != NULL)
        control_bump(ctl->outcomes, outcome, 1);
    const json_t *verdict = json_object_get(obj, "verdict");
    const char *cause = json_is_object(verdict)
                            ? json_string_value(json_object_get(verdict, "cause"))
                            : json_string_value(verdict);
    if (cause != NULL)
        control_bump(ctl->verdicts, cause, 1);
    const json_t *fl = json_object_get(obj, "faults");
    for (size_t i = 0; i < json_array_size(fl); i++) {
        const char *rule = json_string_value(json_object_get(json_array_get(fl, i), "rule"));
        json_t *r = rule != NULL ? json_object_get(ctl->faults, rule) : NULL;
        if (r != NULL)
            control_bump(r, "flows", 1);
    }
    if (f != NULL) {
        static const char *const keys[] = {"outcome", "stage", "summary", "verdict", "version",
                                           "cipher_suite", "bytes", "duration_ms", "close"};
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
            control_copy_field(f->info, obj, keys[i]);
        control_flow_end(ctl, f);
    }
}

/*
 * The events tap (events.h): runs on the emitting worker's thread.  The
 * line is rendered outside the lock; the lock covers the flows, the
 * counters and the queue for the main loop.
 */
static void
control_tap(void *arg, uint64_t flow, const char *event, const json_t *obj)
{
    struct tf_control *ctl = arg;
    char *line = json_dumps(obj, JSON_COMPACT);
    size_t len = line != NULL ? strlen(line) : 0;
    bool wake = false;

    pthread_mutex_lock(&ctl->lock);
    ctl->events_total++;
    struct control_flow *f = NULL;
    if (strcmp(event, "flow_start") == 0) {
        ctl->flows_started++;
        f = control_flow_start(ctl, flow, obj);
    } else {
        f = control_flow_find(ctl, flow);
        if (f != NULL && !f->live)
            f = NULL; /* nothing follows flow_end; an id is never reused */
    }
    if (f != NULL) {
        const char *type = json_string_value(json_object_get(obj, "type"));
        char last[80];
        snprintf(last, sizeof(last), "%s%s%s", event, type ? " " : "", type ? type : "");
        json_object_set_new_nocheck(f->info, "last_event", json_string(last));
        if (line != NULL)
            control_flow_keep(ctl, f, line, len);
    }
    control_count(ctl, f, event, obj);
    if (line != NULL && ctl->n_subs > 0) {
        struct control_item *it = ctl->queue_len < CONTROL_QUEUE_MAX ? calloc(1, sizeof(*it))
                                                                      : NULL;
        if (it == NULL) {
            ctl->queue_dropped++;
        } else {
            const char *rule = strcmp(event, "fault") == 0
                                   ? json_string_value(json_object_get(obj, "rule"))
                                   : NULL;
            it->flow = flow;
            snprintf(it->event, sizeof(it->event), "%s", event);
            snprintf(it->rule, sizeof(it->rule), "%s", rule ? rule : "");
            it->line = line;
            it->len = len;
            line = NULL;
            if (ctl->queue_tail != NULL)
                ctl->queue_tail->next = it;
            else
                ctl->queue_head = it;
            ctl->queue_tail = it;
            ctl->queue_len++;
            wake = !ctl->wake_pending;
            ctl->wake_pending = true;
        }
    }
    pthread_mutex_unlock(&ctl->lock);
    free(line);
    if (wake)
        event_active(ctl->wake, EV_READ, 0);
}

/* ------------------------------------------------------------ /events (main thread) */

static bool
control_sub_wants(const struct control_sub *s, const struct control_item *it)
{
    if (s->has_flow && it->flow != s->flow)
        return false;
    if (s->rule[0] != '\0' && strcmp(s->rule, it->rule) != 0)
        return false;
    if (s->n_events == 0)
        return true;
    for (size_t i = 0; i < s->n_events; i++)
        if (strcmp(s->events[i], it->event) == 0)
            return true;
    return false;
}

/* Lines queued by the tap, written to each subscriber that wants them. */
static void
control_wake_cb(evutil_socket_t fd, short what, void *arg)
{
    struct tf_control *ctl = arg;
    struct control_item *items;
    (void)fd;
    (void)what;

    pthread_mutex_lock(&ctl->lock);
    items = ctl->queue_head;
    ctl->queue_head = ctl->queue_tail = NULL;
    ctl->queue_len = 0;
    ctl->wake_pending = false;
    pthread_mutex_unlock(&ctl->lock);

    struct evbuffer *buf = evbuffer_new();
    struct control_sub *s;
    uint64_t dropped = 0;
    TAILQ_FOREACH(s, &ctl->subs, link) {
        struct bufferevent *bev = evhttp_connection_get_bufferevent(s->evcon);
        size_t backlog = bev != NULL ? evbuffer_get_length(bufferevent_get_output(bev)) : 0;
        for (struct control_item *it = items; it != NULL && buf != NULL; it = it->next) {
            if (!control_sub_wants(s, it))
                continue;
            if (backlog + evbuffer_get_length(buf) > CONTROL_SUB_BACKLOG) {
                s->dropped++;
                dropped++;
                continue;
            }
            evbuffer_add(buf, it->line, it->len);
            evbuffer_add(buf, "\n", 1);
        }
        if (buf != NULL && evbuffer_get_length(buf) > 0)
            evhttp_send_reply_chunk(s->req, buf); /* drains buf */
    }
    if (buf != NULL)
        evbuffer_free(buf);
    while (items != NULL) {
        struct control_item *next = items->next;
        free(items->line);
        free(items);
        items = next;
    }
    if (dropped > 0) {
        pthread_mutex_lock(&ctl->lock);
        ctl->stream_dropped += dropped;
        pthread_mutex_unlock(&ctl->lock);
    }
}

static void
control_sub_remove(struct tf_control *ctl, struct control_sub *s)
{
    TAILQ_REMOVE(&ctl->subs, s, link);
    pthread_mutex_lock(&ctl->lock);
    ctl->n_subs--;
    pthread_mutex_unlock(&ctl->lock);
}

/*
 * The subscriber went away.  libevent has detached the request from the
 * connection (it was not finished); ending it is what frees it.
 */
static void
control_sub_close_cb(struct evhttp_connection *evcon, void *arg)
{
    struct control_sub *s = arg;
    (void)evcon;
    control_sub_remove(s->ctl, s);
    evhttp_send_reply_end(s->req);
    free(s);
}

static void
control_events(struct tf_control *ctl, struct evhttp_request *req, const char *arg,
               const char *query)
{
    (void)arg;
    struct evkeyvalq q;
    struct evkeyval *kv;
    struct control_sub *s;

    TAILQ_INIT(&q);
    if (query != NULL && evhttp_parse_query_str(query, &q) != 0) {
        control_error(req, 400, "cannot parse the query string", NULL);
        return;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        evhttp_clear_headers(&q);
        control_error(req, 503, "out of memory", NULL);
        return;
    }
    TAILQ_FOREACH(kv, &q, next) {
        if (strcmp(kv->key, "flow") == 0) {
            char *end;
            errno = 0;
            unsigned long long id = strtoull(kv->value, &end, 10);
            if (kv->value[0] < '0' || kv->value[0] > '9' || *end != '\0' || errno != 0) {
                control_errorf(req, 400, "flow must be a flow id (a number), not \"%.64s\"",
                               kv->value);
                goto fail;
            }
            s->has_flow = true;
            s->flow = id;
        } else if (strcmp(kv->key, "event") == 0) {
            char names[512];
            snprintf(names, sizeof(names), "%s", kv->value);
            for (char *save = NULL, *t = strtok_r(names, ",", &save); t != NULL;
                 t = strtok_r(NULL, ",", &save)) {
                if (s->n_events == CONTROL_FILTER_EVENTS || strlen(t) >= sizeof(s->events[0])) {
                    control_errorf(req, 400, "event: at most %d names of up to 31 characters",
                                   CONTROL_FILTER_EVENTS);
                    goto fail;
                }
                snprintf(s->events[s->n_events++], sizeof(s->events[0]), "%s", t);
            }
        } else if (strcmp(kv->key, "rule") == 0) {
            if (strlen(kv->value) >= sizeof(s->rule) || kv->value[0] == '\0') {
                control_error(req, 400, "rule: a rule name of 1-64 characters", NULL);
                goto fail;
            }
            snprintf(s->rule, sizeof(s->rule), "%s", kv->value);
        } else {
            control_errorf(req, 400, "unknown query parameter \"%.64s\"; valid: flow, event, rule",
                           kv->key);
            goto fail;
        }
    }
    evhttp_clear_headers(&q);
    pthread_mutex_lock(&ctl->lock);
    bool full = ctl->n_subs >= CONTROL_SUBSCRIBERS_MAX;
    if (!full)
        ctl->n_subs++;
    pthread_mutex_unlock(&ctl->lock);
    if (full) {
        control_errorf(req, 503, "too many /events streams (at most %d)",
                       CONTROL_SUBSCRIBERS_MAX);
        free(s);
        return;
    }
    s->ctl = ctl;
    s->req = req;
    s->evcon = evhttp_request_get_connection(req);
    TAILQ_INSERT_TAIL(&ctl->subs, s, link);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/x-ndjson");
    evhttp_add_header(evhttp_request_get_output_headers(req), "Cache-Control", "no-store");
    evhttp_send_reply_start(req, 200, "OK");
    evhttp_connection_set_closecb(s->evcon, control_sub_close_cb, s);
    /* A stream stays open while nothing happens: no idle timeout for it. */
    struct bufferevent *bev = evhttp_connection_get_bufferevent(s->evcon);
    if (bev != NULL)
        bufferevent_set_timeouts(bev, NULL, NULL);
    return;
fail:
    evhttp_clear_headers(&q);
    free(s);
}

/* ------------------------------------------------------------ rules */

static struct tf_config *
control_cfg(struct tf_control *ctl)
{
    return ctl->hooks.current(ctl->hooks.arg);
}

static json_t *
control_rule_json(struct tf_control *ctl, const struct tf_fault_rule *rule)
{
    json_t *o = tf_fault_rule_json(rule);
    pthread_mutex_lock(&ctl->lock);
    json_int_t n = json_integer_value(json_object_get(ctl->rule_events, rule->name));
    pthread_mutex_unlock(&ctl->lock);
    json_object_set_new_nocheck(o, "events", json_integer(n));
    return o;
}

static void
control_rule_events_reset(struct tf_control *ctl, const char *name)
{
    pthread_mutex_lock(&ctl->lock);
    json_object_del(ctl->rule_events, name);
    pthread_mutex_unlock(&ctl->lock);
}

static ssize_t
control_rule_index(const struct tf_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_faults; i++)
        if (strcmp(cfg->faults[i]->name, name) == 0)
            return (ssize_t)i;
    return -1;
}

/*
 * Makes the rule list list[0..n) the running one: judged whole by
 * tf_config_with_rules, then posted to the workers.  On failure answers
 * 422 and returns false; nothing has changed then.
 */
static bool
control_apply_rules(struct tf_control *ctl, struct evhttp_request *req,
                    struct tf_fault_rule **list, size_t n)
{
    char err[CONTROL_ERR_MAX];
    struct tf_config *next = tf_config_with_rules(control_cfg(ctl), list, n, err, sizeof(err));
    if (next == NULL) {
        control_error(req, 422, err, NULL);
        return false;
    }
    ctl->hooks.apply(ctl->hooks.arg, next);
    tf_config_unref(next);
    return true;
}

static void
control_rules_list(struct tf_control *ctl, struct evhttp_request *req, const char *arg,
                   const char *query)
{
    (void)arg, (void)query;
    struct tf_config *cfg = control_cfg(ctl);
    json_t *out = json_array();
    for (size_t i = 0; i < cfg->n_faults; i++)
        json_array_append_new(out, control_rule_json(ctl, cfg->faults[i]));
    control_reply(req, 200, out);
}

static void
control_rule_add(struct tf_control *ctl, struct evhttp_request *req, const char *arg,
                 const char *query)
{
    (void)arg, (void)query;
    char err[CONTROL_ERR_MAX];
    json_t *valid = NULL;
    json_t *body = control_body(req);
    if (body == NULL)
        return;
    struct tf_fault_rule *rule = tf_fault_rule_from_json(body, err, sizeof(err), &valid);
    json_decref(body);
    if (rule == NULL) {
        control_error(req, 422, err, valid != NULL ? json_pack("{s:o}", "valid", valid) : NULL);
        return;
    }
    struct tf_config *cfg = control_cfg(ctl);
    if (control_rule_index(cfg, rule->name) >= 0) {
        control_errorf(req, 409, "a rule called \"%s\" exists already (PATCH or DELETE "
                       "/rules/%s)", rule->name, rule->name);
        tf_fault_rule_unref(rule);
        return;
    }
    struct tf_fault_rule **list = calloc(cfg->n_faults + 1, sizeof(*list));
    if (list == NULL) {
        tf_fault_rule_unref(rule);
        control_error(req, 503, "out of memory", NULL);
        return;
    }
    if (cfg->n_faults > 0)
        memcpy(list, cfg->faults, cfg->n_faults * sizeof(*list));
    list[cfg->n_faults] = rule;
    if (control_apply_rules(ctl, req, list, cfg->n_faults + 1)) {
        char location[128];
        control_rule_events_reset(ctl, rule->name);
        tf_log_info("control: rule %s added (fault %s%s)", rule->name, rule->def->name,
                    rule->enabled ? "" : ", disabled");
        snprintf(location, sizeof(location), "/rules/%s", rule->name);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Location", location);
        control_reply(req, 201, control_rule_json(ctl, rule));
    }
    free(list);
    tf_fault_rule_unref(rule);
}

static void
control_rule_patch(struct tf_control *ctl, struct evhttp_request *req, const char *arg,
                   const char *query)
{
    const char *name = arg;
    (void)query;
    static const char *const keys[] = {"enabled", "params", "match", "reset"};
    char err[CONTROL_ERR_MAX];
    json_t *valid = NULL;
    const char *key;
    json_t *v;
    struct tf_config *cfg = control_cfg(ctl);
    ssize_t at = control_rule_index(cfg, name);

    if (at < 0) {
        control_errorf(req, 404, "no rule called \"%s\" (GET /rules lists them)", name);
        return;
    }
    json_t *body = control_body(req);
    if (body == NULL)
        return;
    if (!json_is_object(body)) {
        control_error(req, 422, "expected a JSON object: {\"enabled\": ..., \"params\": {...}, "
                      "\"match\": {...}, \"reset\": true}", NULL);
        json_decref(body);
        return;
    }
    json_object_foreach(body, key, v) {
        bool known = false;
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
            known = known || strcmp(key, keys[i]) == 0;
        if (!known) {
            control_error(req, 422, "unknown key; valid: enabled, params, match, reset",
                          json_pack("{s:s, s:[ssss]}", "key", key, "valid", "enabled", "params",
                                    "match", "reset"));
            json_decref(body);
            return;
        }
    }
    json_t *jenabled = json_object_get(body, "enabled");
    json_t *jreset = json_object_get(body, "reset");
    if ((jenabled != NULL && !json_is_boolean(jenabled)) ||
        (jreset != NULL && !json_is_boolean(jreset))) {
        control_error(req, 422, "\"enabled\" and \"reset\" must be true or false", NULL);
        json_decref(body);
        return;
    }
    struct tf_fault_rule *old = cfg->faults[at];
    struct tf_fault_rule *rule = tf_fault_rule_rebuild(
        old, json_object_get(body, "params"), json_object_get(body, "match"),
        jenabled == NULL ? -1 : json_is_true(jenabled), json_is_true(jreset), err, sizeof(err),
        &valid);
    bool reset = json_is_true(jreset);
    json_decref(body);
    if (rule == NULL) {
        control_error(req, 422, err, valid != NULL ? json_pack("{s:o}", "valid", valid) : NULL);
        return;
    }
    struct tf_fault_rule **list = calloc(cfg->n_faults, sizeof(*list));
    if (list == NULL) {
        tf_fault_rule_unref(rule);
        control_error(req, 503, "out of memory", NULL);
        return;
    }
    if (cfg->n_faults > 0)
        memcpy(list, cfg->faults, cfg->n_faults * sizeof(*list));
    list[at] = rule;
    if (control_apply_rules(ctl, req, list, cfg->n_faults)) {
        if (reset)
            control_rule_events_reset(ctl, name);
        tf_log_info("control: rule %s changed (%s%s)", rule->name,
                    rule->enabled ? "enabled" : "disabled", reset ? ", counters reset" : "");
        control_reply(req, 200, control_rule_json(ctl, rule));
    }
    free(list);
    tf_fault_rule_unref(rule);
}

static void
control_rule_delete(struct tf_control *ctl, struct evhttp_request *req, const char *arg,
                    const char *query)
{
    const char *name = arg;
    (void)query;
    struct tf_config *cfg = control_cfg(ctl);
    ssize_t at = control_rule_index(cfg, name);

    if (at < 0) {
        control_errorf(req, 404, "no rule called \"%s\" (GET /rules lists them)", name);
        return;
    }
    struct tf_fault_rule **list = calloc(cfg->n_faults, sizeof(*list));
    if (list == NULL) {
        control_error(req, 503, "out of memory", NULL);
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < cfg->n_faults; i++)
        if ((ssize_t)i != at)
            list[n++] = cfg->faults[i];
    /* The answer says what was removed: taken before the snapshot goes. */
    json_t *gone = control_rule_json(ctl, cfg->faults[at]);
    if (control_apply_rules(ctl, req, list, n)) {
        control_rule_events_reset(ctl, name);
        tf_log_info("control: rule %s removed", name);
        control_reply(req, 200, json_pack("{s:o}", "deleted", gone));
    } else {
        json_decref(gone);
    }
    free(list);
}

/* ------------------------------------------------------------ flows and stats */

static int
control_flow_cmp(const void *a, const void *b)
{
    const struct control_flow *x = *(const struct control_flow *const *)a;
    const struct control_flow *y = *(const struct control_flow *const *)b;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* The summary of f, with its age and counts (under the lock). */
static json_t *
control_flow_json(const struct control_flow *f)
{
    json_t *o = json_deep_copy(f->info);
    json_object_set_new_nocheck(o, "live", json_boolean(f->live));
    if (f->live)
        json_object_set_new_nocheck(o, "age_ms",
                                    json_integer((json_int_t)control_ms_since(&f->started)));
    json_object_set_new_nocheck(o, "events", json_integer((json_int_t)f->n_events));
    if (f->dropped > 0)
        json_object_set_new_nocheck(o, "events_not_kept", json_integer((json_int_t)f->dropped));
    return o;
}

static void
control_flows(struct tf_control *ctl, struct evhttp_request *req, const char *arg,
              const char *query)
{
    (void)arg, (void)query;
    json_t *out = json_array();

    pthread_mutex_lock(&ctl->lock);
    struct control_flow **all = calloc(ctl->n_live > 0 ? ctl->n_live : 1, sizeof(*all));
    size_t n = 0;
    for (size_t b = 0; all != NULL && b < CONTROL_FLOW_BUCKETS; b++)
        for (struct control_flow *f = ctl->buckets[b]; f != NULL && n < ctl->n_live; f = f->hnext)
            all[n++] = f;
    qsort(all, n, sizeof(*all), control_flow_cmp);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(out, control_flow_json(all[i]));
    pthread_mutex_unlock(&ctl->lock);
    free(all);
    control_reply(req, 200, out);
}

static void
control_flow_one(struct tf_control *ctl, struct evhttp_request *req, const char *arg,
                 const char *query)
{
    const char *id_text = arg;
    (void)query;
    char *end;
    errno = 0;
    unsigned long long id = strtoull(id_text, &end, 10);
    if (id_text[0] < '0' || id_text[0] > '9' || *end != '\0' || errno != 0) {
        control_errorf(req, 404, "no flow \"%.64s\" (flow ids are numbers; GET /flows lists "
                       "the live ones)", id_text);
        return;
    }
    pthread_mutex_lock(&ctl->lock);
    struct control_flow *f = control_flow_find(ctl, id);
    json_t *out = NULL;
    if (f != NULL) {
        out = control_flow_json(f);
        json_t *events = json_array();
        for (size_t i = 0; i < f->n_lines; i++) {
            json_t *e = json_loads(f->lines[i], 0, NULL);
            if (e != NULL)
                json_array_append_new(events, e);
        }
        json_object_set_new_nocheck(out, "event_log", events);
    }
    pthread_mutex_unlock(&ctl->lock);
    if (out == NULL) {
        control_errorf(req, 404, "no flow %llu (live, or among the last %d that ended)", id,
                       CONTROL_ENDED_KEEP);
        return;
    }
    control_reply(req, 200, out);
}

static void
control_stats(struct tf_control *ctl, struct evhttp_request *req, const char *arg,
              const char *query)
{
    (void)arg, (void)query;
    struct tf_config *cfg = control_cfg(ctl);
    json_t *rules = json_object();

    for (size_t i = 0; i < cfg->n_faults; i++) {
        const struct tf_fault_rule *r = cfg->faults[i];
        json_object_set_new(rules, r->name,
                            json_pack("{s:s, s:b, s:I, s:I}", "fault", r->def->name, "enabled",
                                      r->enabled, "seen", (json_int_t)atomic_load(&r->seen),
                                      "fired", (json_int_t)atomic_load(&r->fired)));
    }
    pthread_mutex_lock(&ctl->lock);
    json_t *out = json_pack(
        "{s:I, s:{s:I, s:I, s:I}, s:{s:I, s:I}, s:O, s:O, s:O, s:O, s:o, s:{s:I, s:I, s:I, "
        "s:I}, s:I}",
        "uptime_s", (json_int_t)(control_ms_since(&ctl->started) / 1000.0),
        "flows", "started", (json_int_t)ctl->flows_started, "ended", (json_int_t)ctl->flows_ended,
        "live", (json_int_t)ctl->n_live,
        "bytes", "c2s", (json_int_t)ctl->bytes_c2s, "s2c", (json_int_t)ctl->bytes_s2c,
        "handshakes", ctl->handshakes, "outcomes", ctl->outcomes, "verdicts", ctl->verdicts,
        "faults", ctl->faults, "rules", rules,
        "events", "total", (json_int_t)ctl->events_total, "not_kept",
        (json_int_t)ctl->stored_dropped, "stream_dropped",
        (json_int_t)(ctl->stream_dropped + ctl->queue_dropped), "streams",
        (json_int_t)ctl->n_subs,
        "ended_kept", (json_int_t)ctl->n_ended);
    /* O takes references: copies, so the answer is built after the lock is gone. */
    json_t *copy = json_deep_copy(out);
    pthread_mutex_unlock(&ctl->lock);
    json_decref(out);
    control_reply(req, 200, copy);
}

static void
control_reload(struct tf_control *ctl, struct evhttp_request *req, const char *arg,
               const char *query)
{
    (void)arg, (void)query;
    char err[CONTROL_ERR_MAX];
    struct evbuffer *in = evhttp_request_get_input_buffer(req);

    /* No body is needed, but one must be JSON like every other (see control_body). */
    if (evbuffer_get_length(in) > 0) {
        json_t *body = control_body(req);
        if (body == NULL)
            return;
        json_decref(body);
    } else {
        const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req),
                                            "Content-Type");
        if (ct == NULL || strncasecmp(ct, "application/json", 16) != 0) {
            control_error(req, 415, "send POST /reload with Content-Type: application/json",
                          NULL);
            return;
        }
    }
    int status = ctl->hooks.reload(ctl->hooks.arg, err, sizeof(err));
    if (status != 200) {
        control_error(req, status, err, NULL);
        return;
    }
    struct tf_config *cfg = control_cfg(ctl);
    control_reply(req, 200, json_pack("{s:s, s:I}", "reloaded", cfg->path ? cfg->path : "",
                                      "rules", (json_int_t)cfg->n_faults));
}

/* ------------------------------------------------------------ requests */

/*
 * The DNS-rebinding guard: with a loopback-only API, Host must be an
 * address or localhost.  A missing Host (HTTP/1.0) is taken.
 */
static bool
control_host_ok(const char *host)
{
    char h[300];
    struct in6_addr a6;
    struct in_addr a4;

    if (host == NULL)
        return true;
    snprintf(h, sizeof(h), "%s", host);
    if (h[0] == '[') {
        char *close = strchr(h, ']');
        if (close == NULL)
            return false;
        *close = '\0';
        return inet_pton(AF_INET6, h + 1, &a6) == 1;
    }
    char *colon = strrchr(h, ':');
    if (colon != NULL)
        *colon = '\0';
    return inet_pton(AF_INET, h, &a4) == 1 || strcasecmp(h, "localhost") == 0;
}

static bool
control_authorized(const struct tf_config *cfg, struct evhttp_request *req)
{
    const char *token = cfg->control.token;
    if (token == NULL)
        return true;
    const char *auth = evhttp_find_header(evhttp_request_get_input_headers(req),
                                          "Authorization");
    if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0)
        return false;
    auth += 7;
    while (*auth == ' ')
        auth++;
    size_t n = strlen(token);
    return strlen(auth) == n && CRYPTO_memcmp(auth, token, n) == 0;
}

static json_t *
control_index(void)
{
    return json_pack("{s:s, s:[sssssssssss]}", "service", "tlsfault control API", "endpoints",
                     "GET /faults", "GET /rules", "POST /rules", "GET /rules/NAME",
                     "PATCH /rules/NAME", "DELETE /rules/NAME", "GET /flows", "GET /flows/ID",
                     "GET /stats", "GET /events[?flow=ID&event=NAME,...&rule=NAME]",
                     "POST /reload");
}

/*
 * Every handler of the route table has this shape: arg is the second path
 * segment (NULL: none), query the URI's query string.
 */
typedef void control_route_fn(struct tf_control *ctl, struct evhttp_request *req,
                              const char *arg, const char *query);

static void
control_index_reply(struct tf_control *ctl, struct evhttp_request *req, const char *arg,
                    const char *query)
{
    (void)ctl, (void)arg, (void)query;
    control_reply(req, 200, control_index());
}

static void
control_faults_list(struct tf_control *ctl, struct evhttp_request *req, const char *arg,
                    const char *query)
{
    (void)ctl, (void)arg, (void)query;
    control_reply(req, 200, tf_fault_catalogue_json());
}

static void
control_rule_get(struct tf_control *ctl, struct evhttp_request *req, const char *arg,
                 const char *query)
{
    struct tf_config *cfg = control_cfg(ctl);
    ssize_t at = control_rule_index(cfg, arg);
    (void)query;
    if (at < 0)
        control_errorf(req, 404, "no rule called \"%s\" (GET /rules lists them)", arg);
    else
        control_reply(req, 200, control_rule_json(ctl, cfg->faults[at]));
}

/* Every endpoint: first path segment, whether a second one follows, method, handler. */
static const struct control_route {
    const char *name;
    bool with_arg;
    enum evhttp_cmd_type method;
    control_route_fn *fn;
} control_routes[] = {
    {"", false, EVHTTP_REQ_GET, control_index_reply},
    {"faults", false, EVHTTP_REQ_GET, control_faults_list},
    {"rules", false, EVHTTP_REQ_GET, control_rules_list},
    {"rules", false, EVHTTP_REQ_POST, control_rule_add},
    {"rules", true, EVHTTP_REQ_GET, control_rule_get},
    {"rules", true, EVHTTP_REQ_PATCH, control_rule_patch},
    {"rules", true, EVHTTP_REQ_DELETE, control_rule_delete},
    {"flows", false, EVHTTP_REQ_GET, control_flows},
    {"flows", true, EVHTTP_REQ_GET, control_flow_one},
    {"stats", false, EVHTTP_REQ_GET, control_stats},
    {"events", false, EVHTTP_REQ_GET, control_events},
    {"reload", false, EVHTTP_REQ_POST, control_reload},
};

static void
control_request_cb(struct evhttp_request *req, void *arg)
{
    struct tf_control *ctl = arg;
    struct tf_config *cfg = control_cfg(ctl);
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    const char *query = uri != NULL ? evhttp_uri_get_query(uri) : NULL;
    char seg[2][256];
    size_t n_seg = 0;

    if (!cfg->control.allow_remote &&
        !control_host_ok(evhttp_find_header(evhttp_request_get_input_headers(req), "Host"))) {
        control_error(req, 403, "Host refused: the control API answers only requests made to "
                      "an address (127.0.0.1, [::1]) or localhost", NULL);
        return;
    }
    if (!control_authorized(cfg, req)) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
                          "Bearer realm=\"tlsfault\"");
        control_error(req, 401, "a bearer token is required (Authorization: Bearer TOKEN; "
                      "tlsfault ctl --token-file FILE)", NULL);
        return;
    }
    if (path == NULL || path[0] != '/') {
        control_error(req, 400, "bad request path", NULL);
        return;
    }
    /* "/rules/NAME" -> {"rules", "NAME"}; empty segments (trailing '/') are skipped. */
    for (const char *p = path + 1; *p != '\0';) {
        const char *slash = strchr(p, '/');
        size_t len = slash != NULL ? (size_t)(slash - p) : strlen(p);
        if (len > 0) {
            if (n_seg == 2 || len >= sizeof(seg[0])) {
                n_seg = 3;
                break;
            }
            char raw[256];
            memcpy(raw, p, len);
            raw[len] = '\0';
            char *decoded = evhttp_uridecode(raw, 0, NULL);
            snprintf(seg[n_seg++], sizeof(seg[0]), "%s", decoded != NULL ? decoded : raw);
            free(decoded);
        }
        p += len;
        if (*p == '/')
            p++;
    }
    tf_log_debug("control: %s %s", control_method_name(m), path);

    if (n_seg > 2) {
        control_errorf(req, 404, "no such endpoint \"%.200s\" (GET / lists them)", path);
        return;
    }
    const char *name = n_seg >= 1 ? seg[0] : "";
    const char *arg2 = n_seg == 2 ? seg[1] : NULL;
    char allow[64] = "";
    size_t used = 0;
    for (size_t i = 0; i < sizeof(control_routes) / sizeof(control_routes[0]); i++) {
        const struct control_route *r = &control_routes[i];
        if (strcmp(r->name, name) != 0 || r->with_arg != (arg2 != NULL))
            continue;
        if (r->method == m) {
            r->fn(ctl, req, arg2, query);
            return;
        }
        used += (size_t)snprintf(allow + used, sizeof(allow) - used, "%s%s", used ? ", " : "",
                                 control_method_name(r->method));
    }
    if (used == 0) {
        control_errorf(req, 404, "no such endpoint \"%.200s\" (GET / lists them)", path);
        return;
    }
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
    control_errorf(req, 405, "%s is not allowed on %.200s; allowed: %s", control_method_name(m),
                   path, allow);
}

/* ------------------------------------------------------------ life */

static int
control_socket(const struct tf_control_conf *cc, char *err, size_t errlen)
{
    int one = 1;
    int fd = socket(cc->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "control API (%s): socket: %s", cc->listen, strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (cc->addr.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&cc->addr, cc->addr_len) != 0 || listen(fd, 64) != 0) {
        snprintf(err, errlen, "control API (%s): cannot listen: %s", cc->listen,
                 strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

struct tf_control *
tf_control_new(struct event_base *base, struct tf_events *events,
               const struct tf_control_hooks *hooks, char *err, size_t errlen)
{
    struct tf_control *ctl = calloc(1, sizeof(*ctl));
    struct tf_config *cfg = hooks->current(hooks->arg);
    const struct tf_control_conf *cc = &cfg->control;
    int fd = -1;

    if (ctl == NULL) {
        snprintf(err, errlen, "control API: out of memory");
        return NULL;
    }
    ctl->base = base;
    ctl->events = events;
    ctl->hooks = *hooks;
    TAILQ_INIT(&ctl->subs);
    pthread_mutex_init(&ctl->lock, NULL);
    clock_gettime(CLOCK_MONOTONIC, &ctl->started);
    ctl->handshakes = json_object();
    ctl->outcomes = json_object();
    ctl->verdicts = json_object();
    ctl->faults = json_object();
    ctl->rule_events = json_object();
    ctl->http = evhttp_new(base);
    ctl->wake = event_new(base, -1, 0, control_wake_cb, ctl);
    if (ctl->http == NULL || ctl->wake == NULL || ctl->rule_events == NULL) {
        snprintf(err, errlen, "control API: out of memory");
        goto fail;
    }
    evhttp_set_allowed_methods(ctl->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PATCH |
                                              EVHTTP_REQ_DELETE);
    evhttp_set_max_body_size(ctl->http, CONTROL_BODY_MAX);
    evhttp_set_max_headers_size(ctl->http, CONTROL_HEADERS_MAX);
    evhttp_set_timeout(ctl->http, CONTROL_TIMEOUT_S);
    evhttp_set_gencb(ctl->http, control_request_cb, ctl);
    if ((fd = control_socket(cc, err, errlen)) < 0)
        goto fail;
    if (evhttp_accept_socket_with_handle(ctl->http, fd) == NULL) {
        snprintf(err, errlen, "control API (%s): cannot accept", cc->listen);
        close(fd);
        goto fail;
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof(bound);
    char addr[80] = "?";
    if (getsockname(fd, (struct sockaddr *)&bound, &blen) == 0)
        tf_listener_format_addr((struct sockaddr *)&bound, addr, sizeof(addr));
    tf_log_info("control API on %s%s", addr, cc->token != NULL ? " (bearer token required)" : "");
    tf_events_set_tap(events, control_tap, ctl);
    return ctl;
fail:
    tf_control_free(ctl);
    return NULL;
}

void
tf_control_rules_reloaded(struct tf_control *ctl)
{
    if (ctl == NULL)
        return;
    pthread_mutex_lock(&ctl->lock);
    json_object_clear(ctl->rule_events);
    pthread_mutex_unlock(&ctl->lock);
}

void
tf_control_free(struct tf_control *ctl)
{
    if (ctl == NULL)
        return;
    if (ctl->events != NULL)
        tf_events_set_tap(ctl->events, NULL, NULL);
    /* Streams end first: their requests would otherwise outlive us inside evhttp. */
    while (!TAILQ_EMPTY(&ctl->subs)) {
        struct control_sub *s = TAILQ_FIRST(&ctl->subs);
        TAILQ_REMOVE(&ctl->subs, s, link);
        evhttp_connection_set_closecb(s->evcon, NULL, NULL);
        evhttp_send_reply_end(s->req);
        free(s);
    }
    if (ctl->http != NULL)
        evhttp_free(ctl->http);
    if (ctl->wake != NULL)
        event_free(ctl->wake);
    for (size_t b = 0; b < CONTROL_FLOW_BUCKETS; b++)
        while (ctl->buckets[b] != NULL) {
            struct control_flow *f = ctl->buckets[b];
            ctl->buckets[b] = f->hnext;
            control_flow_free(ctl, f);
        }
    while (ctl->ended_head != NULL) {
        struct control_flow *f = ctl->ended_head;
        ctl->ended_head = f->enext;
        control_flow_free(ctl, f);
    }
    while (ctl->queue_head != NULL) {
        struct control_item *it = ctl->queue_head;
        ctl->queue_head = it->next;
        free(it->line);
        free(it);
    }
    json_decref(ctl->handshakes);
    json_decref(ctl->outcomes);
    json_decref(ctl->verdicts);
    json_decref(ctl->faults);
    json_decref(ctl->rule_events);
    pthread_mutex_destroy(&ctl->lock);
    free(ctl);
}
