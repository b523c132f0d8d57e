/*
 * flow.c — one client↔server connection pair.
 *
 * Job: the life of a proxied connection: accept, connect upstream (names
 * resolved by evdns, never blocking the loop), move bytes both ways with
 * back-pressure, carry half-close and reset across, enforce the connect,
 * handshake and idle timeouts, and end with one flow_end event that says
 * how and why it ended.  What the bytes mean is inspect.c's business; the
 * flow only feeds it while it still wants bytes.
 *
 * The two legs are symmetric: callbacks take a leg and act on leg->peer,
 * never asking "am I the client?".  A leg reads bytes travelling in its
 * direction (the client leg reads c2s).
 *
 * Ownership: the flow owns both bufferevents (BEV_OPT_CLOSE_ON_FREE, so
 * their sockets), the inspector, the timer and its config reference.
 * tf_flow_close() releases all of it and may be called from any callback;
 * callers return right after it.
 */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tlsfault/config.h"
#include "tlsfault/events.h"
#include "tlsfault/flow.h"
#include "tlsfault/inject.h"
#include "tlsfault/inspect.h"
#include "tlsfault/listener.h"
#include "tlsfault/log.h"
#include "tlsfault/mitm.h"
#include "tlsfault/worker.h"

enum tf_flow_state {
    TF_FLOW_CONNECTING,  /* upstream connect in progress; client bytes queue up */
    TF_FLOW_INSPECTING,  /* both connected, handshake being watched */
    TF_FLOW_RELAYING,    /* handshake over: bytes moved without parsing */
    TF_FLOW_CLOSED,
};

/* A delayed chunk: its bytes may leave once due. */
struct tf_delayed {
    struct timeval due;
    size_t len;
};

/*
 * Pacing of the bytes a leg reads, for network faults: they wait in held
 * and a timer releases them to the peer's output when their delay is over,
 * at the allowed rate, a piece at a time.
 */
struct tf_shaper {
    bool on;
    struct tf_inject_shape shape;
    struct evbuffer *held;
    struct event *timer;
    struct tf_delayed *q;      /* ring of delayed chunks, oldest first */
    size_t q_head, q_len, q_cap;
    size_t ready;              /* bytes at the front of held whose delay is over */
    struct timeval next_send;  /* pacing: nothing leaves before this */
    struct timeval refill;     /* rate: when tokens were last added */
    double tokens;
};

struct tf_leg {
    struct tf_flow *flow;
    struct tf_leg *peer;
    struct bufferevent *bev;
    enum tf_dir dir;         /* direction of the bytes this leg reads */
    const char *side;        /* "client" / "server" */
    uint64_t bytes;          /* bytes read from this leg */
    bool eof;                /* the peer of this socket sent FIN */
    bool shut_pending;       /* send FIN to this socket once its output drains */
    bool shut;               /* FIN sent to this socket */
    bool read_paused;        /* back-pressure: the other leg's output is full */
    struct tf_shaper shaper; /* network faults on the bytes this leg reads */
};

struct tf_flow {
    uint64_t id;
    struct tf_worker *w;
    struct tf_config *cfg;
    const struct tf_listener_conf *lc;
    size_t listener_index;
    struct tf_leg client;
    struct tf_leg server;
    struct tf_inspect *ins;
    struct tf_inject *inj;     /* NULL: no fault rule applies (the common case) */
    bool ending;               /* a fault ends the flow once outputs are flushed */
    struct tf_inject_result end;
    bool oom;
    bool lingering;            /* FIN sent; waiting for the peers' own before closing */
    char end_reason[300];      /* why the flow ends, when not a fault's doing */
    struct tf_mitm *mitm;      /* mitm mode: both legs terminated */
    struct evbuffer *mid;      /* mitm: client bytes after the client leg's wire faults */
    struct evbuffer *to_client;/* mitm: raw TLS for the client before its wire faults */
    struct evbuffer *discard;  /* mitm: answers a wire fault would send "back" to our SSL */
    uint32_t rng;              /* jitter draws */
    enum tf_flow_state state;
    struct event *timer;
    struct timeval started;
    struct timeval last_activity;
    struct timeval connected_at;
    char client_addr[64];
    char upstream[300];
    const char *first_closer;  /* side that sent the first FIN */
    TAILQ_ENTRY(tf_flow) link;
};

#define FLOW_LINGER_MS 2000

static atomic_uint_fast64_t flow_next_id = 1;

static void flow_read_cb(struct bufferevent *bev, void *arg);
static void flow_write_cb(struct bufferevent *bev, void *arg);
static void flow_event_cb(struct bufferevent *bev, short what, void *arg);
static void flow_close_with(struct tf_flow *f, const char *closed_by, const char *how,
                            const char *error);
static void flow_fault_try_finish(struct tf_flow *f);
static void flow_reset_socket(struct bufferevent *bev);

static uint64_t
flow_ms_between(const struct timeval *a, const struct timeval *b)
{
    struct timeval d;
    evutil_timersub(b, a, &d);
    if (d.tv_sec < 0)
        return 0;
    return (uint64_t)d.tv_sec * 1000 + (uint64_t)d.tv_usec / 1000;
}

static void
flow_now(struct tf_flow *f, struct timeval *tv)
{
    event_base_gettimeofday_cached(f->w->base, tv);
}

static void
flow_emit(void *arg, const char *event, enum tf_dir dir, json_t *fields)
{
    struct tf_flow *f = arg;
    tf_events_emit(f->w->events, f->id, event, tf_dir_name(dir), fields);
}

static void
flow_keylog(void *arg, const char *line)
{
    struct tf_flow *f = arg;
    if (f->cfg->log_keylog != NULL)
        tf_events_keylog(f->w->events, f->cfg->log_keylog, line);
}

static void
flow_leg_init(struct tf_flow *f, struct tf_leg *leg, struct tf_leg *peer, enum tf_dir dir,
              const char *side)
{
    leg->flow = f;
    leg->peer = peer;
    leg->dir = dir;
    leg->side = side;
}

static void
flow_set_nodelay(struct bufferevent *bev)
{
    int one = 1;
    evutil_socket_t fd = bufferevent_getfd(bev);
    if (fd >= 0)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Arms the timer for the nearest deadline of the current state. */
static void
flow_arm_timer(struct tf_flow *f)
{
    const struct tf_config *c = f->cfg;
    unsigned ms;
    if (f->state == TF_FLOW_CONNECTING)
        ms = c->connect_timeout_ms;
    else if (f->state == TF_FLOW_INSPECTING)
        ms = c->handshake_timeout_ms < c->idle_timeout_ms ? c->handshake_timeout_ms
                                                          : c->idle_timeout_ms;
    else
        ms = c->idle_timeout_ms;
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    evtimer_add(f->timer, &tv);
}

static const char *
flow_waiting_for(const struct tf_flow *f)
{
    json_t *s = json_object();
    tf_inspect_summarize(f->ins, s);
    json_t *last = json_object_get(s, "last_message");
    const char *dir = last ? json_string_value(json_object_get(last, "dir")) : NULL;
    /* Whoever spoke last is waiting for the other side. */
    const char *who = dir && strcmp(dir, "c2s") == 0 ? "server" : dir ? "client" : "client";
    json_decref(s);
    return who;
}

static void
flow_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct tf_flow *f = arg;
    struct timeval now;
    char why[128];
    (void)fd;
    (void)what;

    if (f->ending) {
        flow_fault_try_finish(f);
        return;
    }
    event_base_gettimeofday_cached(f->w->base, &now);
    switch (f->state) {
    case TF_FLOW_CONNECTING:
        snprintf(why, sizeof(why), "upstream connect timed out after %u ms",
                 f->cfg->connect_timeout_ms);
        flow_close_with(f, "proxy", "timeout", why);
        return;
    case TF_FLOW_INSPECTING:
        if (flow_ms_between(&f->started, &now) >= f->cfg->handshake_timeout_ms) {
            snprintf(why, sizeof(why), "handshake timed out after %u ms waiting for the %s",
                     f->cfg->handshake_timeout_ms, flow_waiting_for(f));
            flow_close_with(f, "proxy", "timeout", why);
            return;
        }
        break;
    default:
        break;
    }
    uint64_t idle = flow_ms_between(&f->last_activity, &now);
    if (idle >= f->cfg->idle_timeout_ms) {
        snprintf(why, sizeof(why), "idle for %u ms", f->cfg->idle_timeout_ms);
        flow_close_with(f, "proxy", "timeout", why);
        return;
    }
    /* Not yet: sleep until the earliest deadline still ahead. */
    uint64_t left = f->cfg->idle_timeout_ms - idle;
    if (f->state == TF_FLOW_INSPECTING) {
        uint64_t hs = f->cfg->handshake_timeout_ms - flow_ms_between(&f->started, &now);
        if (hs < left)
            left = hs;
    }
    struct timeval tv = { (time_t)(left / 1000), (suseconds_t)((left % 1000) * 1000) };
    evtimer_add(f->timer, &tv);
}

void
tf_flow_accept(struct tf_worker *w, size_t listener_index, int fd, const struct sockaddr *peer,
               int peer_len)
{
    struct tf_flow *f = calloc(1, sizeof(*f));
    (void)peer_len;
    if (f == NULL) {
        evutil_closesocket(fd);
        return;
    }
    f->id = atomic_fetch_add(&flow_next_id, 1);
    f->w = w;
    f->cfg = tf_config_ref(w->cfg);
    f->listener_index = listener_index;
    f->lc = &f->cfg->listeners[listener_index];
    f->state = TF_FLOW_CONNECTING;
    flow_leg_init(f, &f->client, &f->server, TF_DIR_C2S, "client");
    flow_leg_init(f, &f->server, &f->client, TF_DIR_S2C, "server");
    tf_listener_format_addr(peer, f->client_addr, sizeof(f->client_addr));
    if (strchr(f->lc->upstream_host, ':'))
        snprintf(f->upstream, sizeof(f->upstream), "[%s]:%u", f->lc->upstream_host,
                 f->lc->upstream_port);
    else
        snprintf(f->upstream, sizeof(f->upstream), "%s:%u", f->lc->upstream_host,
                 f->lc->upstream_port);
    TAILQ_INSERT_TAIL(&w->flows, f, link);
    w->live_flows++;
    flow_now(f, &f->started);
    f->last_activity = f->started;

    tf_events_emit(w->events, f->id, "flow_start", NULL,
                   json_pack("{s:s, s:s, s:s, s:s}", "listener", f->lc->name, "client",
                             f->client_addr, "upstream", f->upstream, "mode",
                             f->lc->mode == TF_MODE_MITM ? "mitm" : "passthrough"));

    f->ins = tf_inspect_new(f->cfg->handshake_message_max, flow_emit, f);
    bool oom = false;
    if (f->ins != NULL)
        f->inj = tf_inject_new(f->cfg, f->lc->name, peer, NULL, f->ins, flow_emit, f, &oom);
    f->rng = (uint32_t)(f->id * 2654435761u) | 1u;
    char mitm_err[256] = "";
    if (f->ins != NULL && !oom && f->lc->mode == TF_MODE_MITM) {
        struct tf_worker_tls *tls = tf_worker_tls(w, f->cfg, mitm_err, sizeof(mitm_err));
        f->mid = evbuffer_new();
        f->to_client = evbuffer_new();
        f->discard = evbuffer_new();
        if (tls != NULL && f->mid != NULL && f->to_client != NULL && f->discard != NULL)
            f->mitm = tf_mitm_new(tls->ctx[listener_index], tls->forge, f->ins, f->inj,
                                  flow_emit, flow_keylog, f);
        if (f->mitm == NULL) {
            if (mitm_err[0] == '\0')
                snprintf(mitm_err, sizeof(mitm_err), "out of memory");
            oom = true;
        } else {
            tf_inspect_set_quiet(f->ins, true);
        }
    }
    f->timer = evtimer_new(w->base, flow_timer_cb, f);
    f->client.bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (f->client.bev == NULL)
        evutil_closesocket(fd);
    f->server.bev = bufferevent_socket_new(w->base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (f->ins == NULL || oom || f->timer == NULL || f->client.bev == NULL ||
        f->server.bev == NULL) {
        flow_close_with(f, "proxy", "error", mitm_err[0] ? mitm_err : "out of memory");
        return;
    }
    flow_set_nodelay(f->client.bev);
    for (struct tf_leg *leg = &f->client; leg; leg = leg == &f->client ? &f->server : NULL) {
        bufferevent_setcb(leg->bev, flow_read_cb, flow_write_cb, flow_event_cb, leg);
        /* Reads up to a full TLS record and more at once: fewer callbacks. */
        bufferevent_set_max_single_read(leg->bev, 64 * 1024);
        bufferevent_set_max_single_write(leg->bev, 64 * 1024);
    }
    /*
     * The client's first bytes (its ClientHello) are read and inspected at
     * once and wait in the server leg's output until the connect completes.
     */
    bufferevent_enable(f->client.bev, EV_READ | EV_WRITE);
    flow_arm_timer(f);
    if (bufferevent_socket_connect_hostname(f->server.bev, w->dns, AF_UNSPEC,
                                            f->lc->upstream_host, f->lc->upstream_port) < 0) {
        int dnserr = bufferevent_socket_get_dns_error(f->server.bev);
        char why[512];
        snprintf(why, sizeof(why), "%s",
                 dnserr ? evutil_gai_strerror(dnserr) : evutil_socket_error_to_string(errno));
        flow_close_with(f, "proxy", "error", why);
    }
}

/* Feeds every chunk of buf to the inspector without copying or draining. */
static void
flow_inspect(struct tf_leg *leg, struct evbuffer *buf)
{
    struct tf_flow *f = leg->flow;
    struct evbuffer_iovec vec[16];
    struct evbuffer_ptr pos;
    evbuffer_ptr_set(buf, &pos, 0, EVBUFFER_PTR_SET);
    for (;;) {
        int n = evbuffer_peek(buf, -1, &pos, vec, 16);
        if (n <= 0)
            break;
        int used = n < 16 ? n : 16;
        size_t total = 0;
        for (int i = 0; i < used; i++) {
            tf_inspect_feed(f->ins, leg->dir, vec[i].iov_base, vec[i].iov_len);
            total += vec[i].iov_len;
        }
        if (n <= 16)
            break;
        if (evbuffer_ptr_set(buf, &pos, total, EVBUFFER_PTR_ADD) < 0)
            break;
    }
    /* Done, or not TLS at all: from now on only the idle timeout applies. */
    if (f->state == TF_FLOW_INSPECTING &&
        (tf_inspect_handshake_done(f->ins) || tf_inspect_idle(f->ins, TF_DIR_C2S) ||
         tf_inspect_idle(f->ins, TF_DIR_S2C)))
        f->state = TF_FLOW_RELAYING;
}

static void
flow_maybe_finish(struct tf_flow *f)
{
    if (f->client.eof && f->server.eof && f->client.shut && f->server.shut) {
        flow_close_with(f, f->first_closer ? f->first_closer : "client", "fin", NULL);
    }
}

/* Sends FIN to leg's socket now if its output is flushed, else once it is. */
static void
flow_shutdown_leg(struct tf_leg *leg)
{
    if (leg->shut)
        return;
    const struct tf_shaper *feeding = &leg->peer->shaper;
    if (leg->flow->state == TF_FLOW_CONNECTING ||
        evbuffer_get_length(bufferevent_get_output(leg->bev)) > 0 ||
        (feeding->on && !feeding->shape.stall && evbuffer_get_length(feeding->held) > 0)) {
        leg->shut_pending = true;
        bufferevent_setwatermark(leg->bev, EV_WRITE, 0, 0);
        return;
    }
    leg->shut_pending = false;
    leg->shut = true;
    shutdown(bufferevent_getfd(leg->bev), SHUT_WR);
}

/* ------------------------------------------------------------ faults */

static void
flow_shaper_timer_cb(evutil_socket_t fd, short what, void *arg);

static uint64_t
flow_us_until(const struct timeval *now, const struct timeval *t)
{
    struct timeval d;
    if (evutil_timercmp(t, now, <=))
        return 0;
    evutil_timersub(t, now, &d);
    return (uint64_t)d.tv_sec * 1000000 + (uint64_t)d.tv_usec;
}

static void
flow_add_ms(struct timeval *tv, const struct timeval *from, unsigned ms)
{
    struct timeval d = { (time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000) };
    evutil_timeradd(from, &d, tv);
}

/* Starts pacing the bytes leg reads; false when memory is short. */
static bool
flow_shaper_start(struct tf_leg *leg, const struct tf_inject_shape *shape)
{
    struct tf_shaper *sh = &leg->shaper;
    if (!sh->on) {
        sh->held = evbuffer_new();
        sh->timer = evtimer_new(leg->flow->w->base, flow_shaper_timer_cb, leg);
        if (sh->held == NULL || sh->timer == NULL)
            return false;
        evutil_gettimeofday(&sh->refill, NULL);
        sh->next_send = sh->refill;
        sh->on = true;
    }
    if (shape->rate && !sh->shape.rate)
        sh->tokens = 0;
    sh->shape = *shape;
    return true;
}

/* Notes that len new bytes at the end of held become due after the delay. */
static bool
flow_shaper_queue(struct tf_leg *leg, size_t len)
{
    struct tf_shaper *sh = &leg->shaper;
    struct tf_flow *f = leg->flow;
    if (len == 0)
        return true;
    if (sh->shape.delay_ms == 0 && sh->shape.jitter_ms == 0 && sh->q_len == 0) {
        sh->ready += len;
        return true;
    }
    if (sh->q_len == sh->q_cap) {
        size_t cap = sh->q_cap ? sh->q_cap * 2 : 64;
        struct tf_delayed *q = calloc(cap, sizeof(*q));
        if (q == NULL)
            return false;
        for (size_t i = 0; i < sh->q_len; i++)
            q[i] = sh->q[(sh->q_head + i) % sh->q_cap];
        free(sh->q);
        sh->q = q;
        sh->q_cap = cap;
        sh->q_head = 0;
    }
    unsigned ms = sh->shape.delay_ms;
    if (sh->shape.jitter_ms) {
        f->rng ^= f->rng << 13;
        f->rng ^= f->rng >> 17;
        f->rng ^= f->rng << 5;
        ms += f->rng % (sh->shape.jitter_ms + 1);
    }
    struct timeval now;
    evutil_gettimeofday(&now, NULL);
    struct tf_delayed *slot = &sh->q[(sh->q_head + sh->q_len) % sh->q_cap];
    flow_add_ms(&slot->due, &now, ms);
    if (sh->q_len > 0) {
        /* Jitter must not reorder a byte stream. */
        const struct tf_delayed *prev = &sh->q[(sh->q_head + sh->q_len - 1) % sh->q_cap];
        if (evutil_timercmp(&slot->due, &prev->due, <))
            slot->due = prev->due;
    }
    slot->len = len;
    sh->q_len++;
    return true;
}

/* Moves what may leave now from held to the peer, and sleeps until more may. */
static void
flow_shaper_release(struct tf_leg *leg)
{
    struct tf_shaper *sh = &leg->shaper;
    struct tf_flow *f = leg->flow;
    struct evbuffer *out = bufferevent_get_output(leg->peer->bev);
    struct timeval now;
    uint64_t wait_us = UINT64_MAX;

    if (!sh->on || f->ending)
        return;
    evutil_gettimeofday(&now, NULL);
    while (sh->q_len > 0 && evutil_timercmp(&sh->q[sh->q_head].due, &now, <=)) {
        sh->ready += sh->q[sh->q_head].len;
        sh->q_head = (sh->q_head + 1) % sh->q_cap;
        sh->q_len--;
    }
    if (sh->shape.stall) {
        evbuffer_drain(sh->held, evbuffer_get_length(sh->held));
        sh->ready = 0;
        sh->q_len = 0;
        return;
    }
    if (sh->shape.rate) {
        double burst = (double)sh->shape.rate / 20; /* 50 ms worth */
        if (burst < 1)
            burst = 1;
        uint64_t us = flow_us_until(&sh->refill, &now);
        sh->tokens += (double)sh->shape.rate * (double)us / 1e6;
        if (sh->tokens > burst)
            sh->tokens = burst;
        sh->refill = now;
    }
    while (sh->ready > 0) {
        uint64_t until = flow_us_until(&now, &sh->next_send);
        if (sh->shape.piece && until > 0) {
            wait_us = until;
            break;
        }
        size_t can = sh->ready;
        if (sh->shape.piece && can > sh->shape.piece)
            can = sh->shape.piece;
        if (sh->shape.rate) {
            if (sh->tokens < 1) {
                double need = (double)(can < 1024 ? can : 1024) - sh->tokens;
                wait_us = (uint64_t)(need * 1e6 / (double)sh->shape.rate) + 1;
                break;
            }
            if ((double)can > sh->tokens)
                can = (size_t)sh->tokens;
            sh->tokens -= (double)can;
        }
        evbuffer_remove_buffer(sh->held, out, can);
        sh->ready -= can;
        if (sh->shape.piece) {
            flow_add_ms(&sh->next_send, &now, sh->shape.pause_ms);
            if (sh->shape.pause_ms > 0)
                continue; /* the loop head computes the wait */
        }
    }
    if (sh->ready == 0 && sh->q_len > 0) {
        uint64_t us = flow_us_until(&now, &sh->q[sh->q_head].due);
        if (us < wait_us)
            wait_us = us;
    }
    if (wait_us != UINT64_MAX) {
        struct timeval tv = { (time_t)(wait_us / 1000000), (suseconds_t)(wait_us % 1000000) };
        evtimer_add(sh->timer, &tv);
    }
    /* Back-pressure: reading resumes once the queue towards the peer has drained. */
    size_t queued = evbuffer_get_length(out) + evbuffer_get_length(sh->held);
    if (leg->read_paused && queued <= f->cfg->buffer_max / 2) {
        leg->read_paused = false;
        if (!leg->eof)
            bufferevent_enable(leg->bev, EV_READ);
    }
    if (leg->peer->shut_pending && evbuffer_get_length(sh->held) == 0 &&
        evbuffer_get_length(out) == 0) {
        flow_shutdown_leg(leg->peer);
        flow_maybe_finish(f);
    }
}

static void
flow_shaper_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    flow_shaper_release(arg);
}

static void
flow_shaper_free(struct tf_shaper *sh)
{
    if (sh->held)
        evbuffer_free(sh->held);
    if (sh->timer)
        event_free(sh->timer);
    free(sh->q);
}

/*
 * A fault ends the flow: nothing more is read, and once what the fault
 * wrote has been flushed, the sockets are closed the way it says.  Never
 * frees the flow itself (callers keep using it): the timer does.
 */
static void
flow_fault_end(struct tf_flow *f, const struct tf_inject_result *res)
{
    f->ending = true;
    f->end = *res;
    bufferevent_disable(f->client.bev, EV_READ);
    if (f->state != TF_FLOW_CONNECTING)
        bufferevent_disable(f->server.bev, EV_READ);
    for (struct tf_leg *leg = &f->client; leg; leg = leg == &f->client ? &f->server : NULL)
        if (leg->shaper.timer)
            evtimer_del(leg->shaper.timer);
    struct timeval now = { 0, 0 };
    evtimer_add(f->timer, &now);
}

static void
flow_fault_try_finish(struct tf_flow *f)
{
    size_t to_client = evbuffer_get_length(bufferevent_get_output(f->client.bev));
    size_t to_server = f->state == TF_FLOW_CONNECTING
                           ? 0
                           : evbuffer_get_length(bufferevent_get_output(f->server.bev));
    if (to_client > 0 || to_server > 0) {
        /* write_cb calls again once drained; the idle timeout bounds the wait. */
        bufferevent_setwatermark(f->client.bev, EV_WRITE, 0, 0);
        bufferevent_setwatermark(f->server.bev, EV_WRITE, 0, 0);
        struct timeval tv = { (time_t)(f->cfg->idle_timeout_ms / 1000), 0 };
        evtimer_add(f->timer, &tv);
        return;
    }
    if (f->end.end == TF_INJECT_FIN && !f->lingering) {
        /*
         * FIN now, close later: a socket closed with unread bytes in its
         * receive queue sends RST instead, and the peer must see a FIN.
         * Reading resumes (and discards) until both peers close or the
         * linger time is up.
         */
        f->lingering = true;
        for (struct tf_leg *leg = &f->client; leg; leg = leg == &f->client ? &f->server : NULL) {
            if (leg == &f->server && f->state == TF_FLOW_CONNECTING)
                continue;
            if (!leg->shut) {
                leg->shut = true;
                shutdown(bufferevent_getfd(leg->bev), SHUT_WR);
            }
            if (!leg->eof)
                bufferevent_enable(leg->bev, EV_READ);
        }
        struct timeval tv = { FLOW_LINGER_MS / 1000, (FLOW_LINGER_MS % 1000) * 1000 };
        evtimer_add(f->timer, &tv);
        return;
    }
    char desc[600] = "";
    const char *how = "fault";
    if (f->inj != NULL)
        tf_inject_describe(f->inj, desc, sizeof(desc));
    if (f->oom || f->end_reason[0] != '\0') {
        snprintf(desc, sizeof(desc), "%s", f->oom ? "out of memory" : f->end_reason);
        how = "error";
    }
    if (f->end.end == TF_INJECT_RESET) {
        if (f->end.to & TF_FAULT_PEER_CLIENT)
            flow_reset_socket(f->client.bev);
        if ((f->end.to & TF_FAULT_PEER_SERVER) && f->state != TF_FLOW_CONNECTING)
            flow_reset_socket(f->server.bev);
    }
    flow_close_with(f, "proxy", how, desc);
}

/* Ends the flow once flushed, for a reason of the proxy's own (not a fault). */
static void
flow_end_soon(struct tf_flow *f, const char *reason)
{
    struct tf_inject_result res = { TF_INJECT_FIN, TF_FAULT_PEER_BOTH, NULL };
    snprintf(f->end_reason, sizeof(f->end_reason), "%s", reason);
    flow_fault_end(f, &res);
}

/* Memory ran out on the fault path: end the flow as a failed one would. */
static void
flow_fault_oom(struct tf_flow *f)
{
    struct tf_inject_result res = { TF_INJECT_RESET, TF_FAULT_PEER_BOTH, NULL };
    f->oom = true;
    flow_fault_end(f, &res);
}

/*
 * The fault path of a read: network faults first (they may end the flow
 * or start pacing), then the record and message faults.  Returns false
 * when the flow is ending.
 */
static bool
flow_faults(struct tf_leg *leg, struct evbuffer *in, struct evbuffer *out)
{
    struct tf_flow *f = leg->flow;
    struct tf_inject_result res;
    struct tf_inject_shape shape;

    tf_inject_network(f->inj, leg->dir, leg->bytes, &shape, &res);
    if (res.end != TF_INJECT_GO_ON) {
        evbuffer_drain(in, evbuffer_get_length(in));
        flow_fault_end(f, &res);
        return false;
    }
    if ((shape.stall || shape.delay_ms || shape.jitter_ms || shape.rate || shape.piece) &&
        !flow_shaper_start(leg, &shape)) {
        flow_fault_oom(f);
        return false;
    }
    struct evbuffer *dst = leg->shaper.on ? leg->shaper.held : out;
    size_t before = evbuffer_get_length(dst);
    if (tf_inject_wants(f->inj, leg->dir)) {
        tf_inject_feed(f->inj, leg->dir, in, dst, bufferevent_get_output(leg->bev), &res);
        if (res.end != TF_INJECT_GO_ON) {
            /* What the fault let through before the end still goes out. */
            if (leg->shaper.on && !leg->shaper.shape.stall)
                evbuffer_add_buffer(out, leg->shaper.held);
            flow_fault_end(f, &res);
            return false;
        }
    } else {
        evbuffer_add_buffer(dst, in);
    }
    if (leg->shaper.on) {
        if (!flow_shaper_queue(leg, evbuffer_get_length(dst) - before)) {
            flow_fault_oom(f);
            return false;
        }
        flow_shaper_release(leg);
    }
    return true;
}

/* ------------------------------------------------------------ mitm */

/* Where bytes read on leg go next: its pacing queue, or the peer's output. */
static struct evbuffer *
flow_sink(struct tf_leg *leg)
{
    return leg->shaper.on ? leg->shaper.held : bufferevent_get_output(leg->peer->bev);
}

/* After bytes went into leg's sink: pace them if a network fault says so. */
static void
flow_sink_added(struct tf_leg *leg, size_t before)
{
    if (!leg->shaper.on)
        return;
    size_t now = evbuffer_get_length(leg->shaper.held);
    if (now > before && !flow_shaper_queue(leg, now - before)) {
        flow_fault_oom(leg->flow);
        return;
    }
    flow_shaper_release(leg);
}

/* Network faults for the bytes leg read; false when the flow is ending. */
static bool
flow_network_faults(struct tf_leg *leg)
{
    struct tf_flow *f = leg->flow;
    struct tf_inject_result res;
    struct tf_inject_shape shape;

    if (f->inj == NULL)
        return true;
    tf_inject_network(f->inj, leg->dir, leg->bytes, &shape, &res);
    if (res.end != TF_INJECT_GO_ON) {
        flow_fault_end(f, &res);
        return false;
    }
    if ((shape.stall || shape.delay_ms || shape.jitter_ms || shape.rate || shape.piece) &&
        !flow_shaper_start(leg, &shape)) {
        flow_fault_oom(f);
        return false;
    }
    return true;
}

/* Raw TLS our client-side SSL wrote: the client leg's s2c wire faults, then out. */
static void
flow_mitm_to_client(struct tf_flow *f)
{
    struct tf_inject_result res;
    if (evbuffer_get_length(f->to_client) == 0 || f->ending)
        return;
    if (!tf_inspect_idle(f->ins, TF_DIR_S2C))
        flow_inspect(&f->server, f->to_client);
    struct evbuffer *dst = flow_sink(&f->server);
    size_t before = evbuffer_get_length(dst);
    if (f->inj != NULL && tf_inject_wants(f->inj, TF_DIR_S2C)) {
        tf_inject_feed(f->inj, TF_DIR_S2C, f->to_client, dst, f->discard, &res);
        evbuffer_drain(f->discard, evbuffer_get_length(f->discard));
        if (res.end != TF_INJECT_GO_ON) {
            flow_fault_end(f, &res);
            return;
        }
    } else {
        evbuffer_add_buffer(dst, f->to_client);
    }
    flow_sink_added(&f->server, before);
}

static void
flow_mitm_status(struct tf_flow *f, enum tf_mitm_status st)
{
    flow_mitm_to_client(f);
    if (st == TF_MITM_FAILED && !f->ending)
        flow_end_soon(f, tf_mitm_error(f->mitm));
}

static void
flow_mitm_read(struct tf_leg *leg, struct evbuffer *in)
{
    struct tf_flow *f = leg->flow;
    struct tf_inject_result res;
    enum tf_mitm_status st;

    if (leg->peer->shut || f->ending) {
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    struct evbuffer *to_server = flow_sink(&f->client);
    size_t before = evbuffer_get_length(to_server);
    if (leg == &f->client) {
        if (!tf_inspect_idle(f->ins, TF_DIR_C2S))
            flow_inspect(leg, in);
        if (!flow_network_faults(leg)) {
            evbuffer_drain(in, evbuffer_get_length(in));
            return;
        }
        to_server = flow_sink(&f->client);
        before = evbuffer_get_length(to_server);
        if (f->inj != NULL && tf_inject_wants(f->inj, TF_DIR_C2S)) {
            tf_inject_feed(f->inj, TF_DIR_C2S, in, f->mid, bufferevent_get_output(leg->bev),
                           &res);
            if (res.end != TF_INJECT_GO_ON) {
                flow_fault_end(f, &res);
                return;
            }
        } else {
            evbuffer_add_buffer(f->mid, in);
        }
        st = tf_mitm_from_client(f->mitm, f->mid, f->to_client, to_server);
    } else {
        if (!flow_network_faults(leg)) {
            evbuffer_drain(in, evbuffer_get_length(in));
            return;
        }
        st = tf_mitm_from_server(f->mitm, in, f->to_client, to_server);
    }
    flow_sink_added(&f->client, before);
    flow_mitm_status(f, st);
}

static void
flow_read_cb(struct bufferevent *bev, void *arg)
{
    struct tf_leg *leg = arg;
    struct tf_flow *f = leg->flow;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer *out = bufferevent_get_output(leg->peer->bev);
    size_t n = evbuffer_get_length(in);

    if (n == 0)
        return;
    leg->bytes += n;
    flow_now(f, &f->last_activity);
    if (f->mitm != NULL) {
        flow_mitm_read(leg, in);
        if (f->ending)
            return;
    } else {
        if (!tf_inspect_idle(f->ins, leg->dir))
            flow_inspect(leg, in);
        if (leg->peer->shut || f->ending) {
            /* The other side already got our FIN, or a fault ends the flow. */
            evbuffer_drain(in, n);
            return;
        }
        if (f->inj == NULL)
            evbuffer_add_buffer(out, in);
        else if (!flow_faults(leg, in, out))
            return;
    }
    size_t queued = evbuffer_get_length(out);
    if (leg->shaper.on)
        queued += evbuffer_get_length(leg->shaper.held);
    if (queued >= f->cfg->buffer_max) {
        /* le-proxy style back-pressure: resume when the peer has drained half. */
        leg->read_paused = true;
        bufferevent_disable(bev, EV_READ);
        bufferevent_setwatermark(leg->peer->bev, EV_WRITE, f->cfg->buffer_max / 2, 0);
    }
}

static void
flow_write_cb(struct bufferevent *bev, void *arg)
{
    struct tf_leg *leg = arg;
    struct tf_flow *f = leg->flow;
    size_t left = evbuffer_get_length(bufferevent_get_output(bev));

    if (f->ending) {
        if (!f->lingering)
            flow_fault_try_finish(f);
        return;
    }
    if (leg->peer->shaper.on)
        left += evbuffer_get_length(leg->peer->shaper.held);
    if (leg->peer->read_paused && left <= f->cfg->buffer_max / 2) {
        leg->peer->read_paused = false;
        if (!leg->peer->eof)
            bufferevent_enable(leg->peer->bev, EV_READ);
        if (!leg->shut_pending)
            bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
    }
    if (leg->shut_pending && evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
        flow_shutdown_leg(leg);
        flow_maybe_finish(f);
    }
}

static void
flow_connected(struct tf_flow *f)
{
    flow_now(f, &f->connected_at);
    f->state = tf_inspect_handshake_done(f->ins) ? TF_FLOW_RELAYING : TF_FLOW_INSPECTING;
    flow_set_nodelay(f->server.bev);
    if (f->ending) {
        /* A fault ended the flow while connecting: its finish is due now. */
        struct timeval now = { 0, 0 };
        bufferevent_enable(f->server.bev, EV_WRITE);
        evtimer_add(f->timer, &now);
        return;
    }
    bufferevent_enable(f->server.bev, EV_READ | EV_WRITE);
    evtimer_del(f->timer);
    flow_arm_timer(f);
    if (f->mitm != NULL) {
        struct evbuffer *to_server = flow_sink(&f->client);
        size_t before = evbuffer_get_length(to_server);
        enum tf_mitm_status st = tf_mitm_upstream_connected(f->mitm, f->to_client, to_server);
        flow_sink_added(&f->client, before);
        flow_mitm_status(f, st);
    }
    if (f->server.shut_pending)
        flow_shutdown_leg(&f->server);
}

static void
flow_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct tf_leg *leg = arg;
    struct tf_flow *f = leg->flow;
    (void)bev;

    if (what & BEV_EVENT_CONNECTED) {
        flow_connected(f);
        return;
    }
    if (f->lingering) {
        if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
            leg->eof = true;
            bufferevent_disable(leg->bev, EV_READ);
            if (f->client.eof && (f->server.eof || f->state == TF_FLOW_CONNECTING))
                flow_fault_try_finish(f);
        }
        return;
    }
    if (what & BEV_EVENT_EOF) {
        /* Bytes that arrived with the FIN have been read already; pass the FIN on. */
        flow_read_cb(leg->bev, leg);
        if (f->mitm != NULL && !f->ending) {
            struct evbuffer *to_server = flow_sink(&f->client);
            size_t before = evbuffer_get_length(to_server);
            tf_mitm_eof(f->mitm, leg == &f->client, f->to_client, to_server);
            flow_sink_added(&f->client, before);
            flow_mitm_to_client(f);
        }
        struct evbuffer *rest = bufferevent_get_input(leg->bev);
        if (f->mitm == NULL && evbuffer_get_length(rest) > 0 && !f->ending && !leg->peer->shut)
            evbuffer_add_buffer(leg->shaper.on ? leg->shaper.held
                                               : bufferevent_get_output(leg->peer->bev),
                                rest);
        leg->eof = true;
        if (f->first_closer == NULL)
            f->first_closer = leg->side;
        bufferevent_disable(leg->bev, EV_READ);
        flow_shutdown_leg(leg->peer);
        flow_maybe_finish(f);
        return;
    }
    if (what & BEV_EVENT_ERROR) {
        int err = EVUTIL_SOCKET_ERROR();
        char why[512];
        if (f->state == TF_FLOW_CONNECTING && leg == &f->server) {
            int dnserr = bufferevent_socket_get_dns_error(bev);
            snprintf(why, sizeof(why), "%s",
                     dnserr ? evutil_gai_strerror(dnserr) : evutil_socket_error_to_string(err));
            flow_close_with(f, "proxy", "error", why);
            return;
        }
        snprintf(why, sizeof(why), "%s", evutil_socket_error_to_string(err));
        flow_close_with(f, leg->side, err == ECONNRESET ? "reset" : "error", why);
    }
}

/* Closes fd with RST instead of FIN (SO_LINGER 0), mirroring a reset. */
static void
flow_reset_socket(struct bufferevent *bev)
{
    evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
    if (fd < 0)
        return;
    struct linger lg = { 1, 0 };
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

static void
flow_verdict(struct tf_flow *f, json_t *end, const char *closed_by, const char *how,
             const char *error)
{
    char stage[96], summary[1200];
    bool complete = f->mitm != NULL ? tf_mitm_handshake_done(f->mitm)
                                    : tf_inspect_handshake_done(f->ins);
    const char *outcome;
    json_t *alerts = json_object_get(end, "alerts");
    const json_t *fatal = NULL;
    size_t i;
    json_t *a;

    tf_inspect_stage(f->ins, stage, sizeof(stage));
    json_array_foreach(alerts, i, a)
    {
        const char *level = json_string_value(json_object_get(a, "level"));
        if (level && strcmp(level, "fatal") == 0 && fatal == NULL)
            fatal = a;
    }
    if (strcmp(how, "fault") == 0) {
        outcome = complete ? "aborted" : "failed";
        if (complete)
            snprintf(summary, sizeof(summary), "connection ended by a fault after the handshake: %s",
                     error ? error : "");
        else
            snprintf(summary, sizeof(summary), "handshake ended by a fault %s: %s", stage,
                     error ? error : "");
    } else if (json_object_get(end, "non_tls")) {
        outcome = "failed";
        json_t *nt = json_object_get(end, "non_tls");
        const char *k;
        json_t *v;
        const char *who = "", *kind = "";
        json_object_foreach(nt, k, v)
        {
            who = strcmp(k, "c2s") == 0 ? "client" : "server";
            kind = json_string_value(v);
            break;
        }
        snprintf(summary, sizeof(summary), "the %s did not speak TLS (%s)", who, kind);
    } else if (f->mitm != NULL && strcmp(how, "error") == 0 && strcmp(closed_by, "proxy") == 0 &&
               f->state != TF_FLOW_CONNECTING) {
        outcome = complete ? "aborted" : "failed";
        snprintf(summary, sizeof(summary), "%s", error ? error : "mitm failure");
    } else if (strcmp(closed_by, "proxy") == 0 && f->state == TF_FLOW_CONNECTING) {
        outcome = "failed";
        snprintf(summary, sizeof(summary), "could not reach the upstream %s: %s", f->upstream,
                 error);
    } else if (complete && f->inj != NULL && tf_inject_damaged(f->inj)) {
        /* The peer's complaint is an encrypted alert by now: the damage is the evidence. */
        outcome = "failed";
        snprintf(summary, sizeof(summary),
                 "handshake completed, then a fault damaged the records; the %s %s", closed_by,
                 strcmp(how, "fin") == 0     ? "closed the connection"
                 : strcmp(how, "reset") == 0 ? "reset the connection"
                                             : (error ? error : how));
    } else if (complete) {
        outcome = strcmp(how, "fin") == 0 ? "ok" : "aborted";
        if (strcmp(how, "fin") == 0)
            snprintf(summary, sizeof(summary), "handshake completed; the %s closed first",
                     closed_by);
        else
            snprintf(summary, sizeof(summary), "handshake completed; then %s: %s",
                     strcmp(how, "timeout") == 0 ? "timeout" : closed_by, error ? error : how);
    } else if (fatal) {
        outcome = "failed";
        const char *dir = json_string_value(json_object_get(fatal, "dir"));
        snprintf(summary, sizeof(summary), "handshake failed %s: the %s sent fatal alert %s",
                 stage, dir && strcmp(dir, "c2s") == 0 ? "client" : "server",
                 json_string_value(json_object_get(fatal, "description")));
    } else if (strcmp(how, "timeout") == 0) {
        outcome = "failed";
        snprintf(summary, sizeof(summary), "handshake did not complete %s: %s", stage, error);
    } else {
        outcome = strcmp(how, "fin") == 0 && !json_object_get(end, "last_message") ? "aborted"
                                                                                 : "failed";
        snprintf(summary, sizeof(summary), "handshake did not complete %s: the %s %s", stage,
                 closed_by,
                 strcmp(how, "fin") == 0     ? "closed the connection"
                 : strcmp(how, "reset") == 0 ? "reset the connection"
                                             : (error ? error : "failed"));
    }
    if (f->mitm != NULL) {
        char note[300];
        tf_mitm_describe(f->mitm, note, sizeof(note));
        size_t used = strlen(summary);
        if (note[0] != '\0' && used < sizeof(summary))
            snprintf(summary + used, sizeof(summary) - used, "; %s", note);
    }
    if (f->inj != NULL && strcmp(how, "fault") != 0) {
        char desc[600];
        tf_inject_describe(f->inj, desc, sizeof(desc));
        size_t used = strlen(summary);
        if (desc[0] != '\0' && used < sizeof(summary))
            snprintf(summary + used, sizeof(summary) - used, " (%s)", desc);
    }
    json_object_set_new(end, "outcome", json_string(outcome));
    json_object_set_new(end, "stage", json_string(stage));
    json_object_set_new(end, "summary", json_string(summary));
}

static void
flow_close_with(struct tf_flow *f, const char *closed_by, const char *how, const char *error)
{
    struct timeval now;
    json_t *end;

    if (f->state == TF_FLOW_CLOSED)
        return;
    flow_now(f, &now);
    end = json_object();
    json_object_set_new(end, "listener", json_string(f->lc->name));
    json_object_set_new(end, "client", json_string(f->client_addr));
    json_object_set_new(end, "upstream", json_string(f->upstream));
    json_object_set_new(end, "duration_ms",
                        json_integer((json_int_t)flow_ms_between(&f->started, &now)));
    json_object_set_new(end, "bytes", json_pack("{s:I, s:I}", "c2s", (json_int_t)f->client.bytes,
                                                "s2c", (json_int_t)f->server.bytes));
    json_object_set_new(end, "closed_by", json_string(closed_by));
    json_object_set_new(end, "close", json_string(how));
    if (error)
        json_object_set_new(end, "error", json_string(error));
    if (f->ins)
        tf_inspect_summarize(f->ins, end);
    if (f->inj)
        tf_inject_summarize(f->inj, end);
    if (f->mitm)
        tf_mitm_summarize(f->mitm, end);
    if (f->ins)
        flow_verdict(f, end, closed_by, how, error);
    tf_events_emit(f->w->events, f->id, "flow_end", NULL, end);

    /* A reset on one side, or a failed upstream, is passed on as a reset. */
    if (strcmp(how, "reset") == 0 || (strcmp(closed_by, "proxy") == 0 && strcmp(how, "error") == 0)) {
        flow_reset_socket(f->client.bev);
        if (f->state != TF_FLOW_CONNECTING)
            flow_reset_socket(f->server.bev);
    }
    f->state = TF_FLOW_CLOSED;
    if (f->client.bev)
        bufferevent_free(f->client.bev);
    if (f->server.bev)
        bufferevent_free(f->server.bev);
    if (f->timer)
        event_free(f->timer);
    tf_inspect_free(f->ins);
    tf_inject_free(f->inj);
    tf_mitm_free(f->mitm);
    if (f->mid)
        evbuffer_free(f->mid);
    if (f->to_client)
        evbuffer_free(f->to_client);
    if (f->discard)
        evbuffer_free(f->discard);
    flow_shaper_free(&f->client.shaper);
    flow_shaper_free(&f->server.shaper);
    struct tf_worker *w = f->w;
    TAILQ_REMOVE(&w->flows, f, link);
    w->live_flows--;
    tf_config_unref(f->cfg);
    free(f);
    if (w->draining && w->live_flows == 0)
        event_base_loopexit(w->base, NULL);
}

void
tf_flow_close(struct tf_flow *flow, const char *reason)
{
    flow_close_with(flow, "proxy", "shutdown", reason);
}

void
tf_flow_close_all(struct tf_worker *w, const char *reason)
{
    struct tf_flow *f;
    while ((f = TAILQ_FIRST(&w->flows)) != NULL)
        tf_flow_close(f, reason);
}
