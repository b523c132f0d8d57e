/*
 * flow.c — one client↔server connection pair.
 *
 * Job: the life of a proxied connection: accept, connect upstream (names
 * resolved by evdns, never blocking the loop), move bytes both ways with
 * back-pressure, carry half-close and reset across, enforce the connect,
 * handshake and idle timeouts, and end with one flow_end event that says
 * how and why it ended (its verdict is verdict.c's reading of the facts
 * gathered here; with probe on, a TLS 1.3 flow's flow_end waits for the
 * chain fetched by probe.c, in state TF_FLOW_VERDICT).  What the bytes
 * mean is inspect.c's business; the flow only feeds it while it still
 * wants bytes.
 *
 * Routes (how the upstream is found) differ only in what happens before
 * the upstream connect; from the connect on, every flow is the same:
 *   forward   the listener's upstream host:port, resolved at accept;
 *   redirect  SO_ORIGINAL_DST of the accepted socket (origdst.c), at accept;
 *   tproxy    the accepted socket's local address; with spoof_source the
 *             upstream socket binds to the client's address first;
 *   sni       the ClientHello is read (and queued for the server) first:
 *             its server name, checked against the allow list, resolved,
 *             on the listener's upstream_port;
 *   connect   an HTTP/1.1 CONNECT head is read and answered (connect.c);
 *             the tunnel's bytes are the flow's from the "200" on.
 * Every upstream socket is made here (SO_MARK, IP_TRANSPARENT) and
 * connected to each resolved address in turn until one answers.  A route
 * that refuses a connection (not allowed, a loop back to our own listener,
 * no original destination) ends it with close "refused" and the reason.
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
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <fnmatch.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tlsfault/config.h"
#include "tlsfault/connect.h"
#include "tlsfault/events.h"
#include "tlsfault/flow.h"
#include "tlsfault/inject.h"
#include "tlsfault/inspect.h"
#include "tlsfault/jsontext.h"
#include "tlsfault/listener.h"
#include "tlsfault/log.h"
#include "tlsfault/mitm.h"
#include "tlsfault/origdst.h"
#include "tlsfault/probe.h"
#include "tlsfault/relay.h"
#include "tlsfault/verdict.h"
#include "tlsfault/worker.h"

enum tf_flow_state {
    TF_FLOW_REQUEST,     /* connect route: reading the client's CONNECT request head */
    TF_FLOW_HELLO,       /* sni route: the ClientHello must name the server; its bytes
                          * queue up for it */
    TF_FLOW_CONNECTING,  /* upstream being resolved and connected; client bytes queue up */
    TF_FLOW_INSPECTING,  /* both connected, handshake being watched */
    TF_FLOW_RELAYING,    /* handshake over: bytes moved without parsing */
    TF_FLOW_VERDICT,     /* sockets closed; flow_end waits for the chain probe (probe.h) */
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
    struct bufferevent *bev; /* NULL once the flow relays (flow->relay) */
    struct event *reader;    /* reads the socket into bev's input (flow_reader_cb) */
    evutil_socket_t fd;      /* the socket, while the flow relays */
    enum tf_dir dir;         /* direction of the bytes this leg reads */
    const char *side;        /* "client" / "server" */
    uint64_t bytes;          /* bytes read from this leg */
    bool eof;                /* the peer of this socket sent FIN */
    bool shut_pending;       /* send FIN to this socket once its output drains */
    bool shut;               /* FIN sent to this socket */
    bool read_paused;        /* back-pressure: the other leg's output is full */
    struct tf_shaper *shaper; /* network faults on the bytes this leg reads (flow_no_shaper:
                               * none, the usual case) */
    size_t held_back;        /* bytes a fault left in the input (a partial record): already
                              * counted and inspected when the next read comes */
};

/* An IP address and port: what sockaddr_storage holds here, in a fifth of its room. */
union flow_addr {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
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
    struct tf_relay *relay;    /* the fast path (relay.h): owns the sockets' events, not the
                                * sockets; the legs' bufferevents are gone */
    bool ending;               /* a fault ends the flow once outputs are flushed */
    struct tf_inject_result end;
    bool oom;
    bool lingering;            /* FIN sent; waiting for the peers' own before closing */
    char *end_reason;          /* why the flow ends, when not a fault's doing (owned) */
    struct tf_mitm *mitm;      /* mitm mode: both legs terminated */
    struct evbuffer *mid;      /* mitm: client bytes after the client leg's wire faults */
    struct evbuffer *to_client;/* mitm: raw TLS for the client before its wire faults */
    size_t to_client_held;     /* of which already inspected (a partial record a fault held) */
    struct evbuffer *discard;  /* mitm: answers a wire fault would send "back" to our SSL */
    uint32_t rng;              /* jitter draws */
    enum tf_flow_state state;
    struct event *timer;
    struct timeval started;
    struct timeval last_activity;
    struct timeval connected_at;
    char client_addr[56];      /* "[IPv6%scope]:port" fits */
    char *upstream;            /* "host:port" as connected to; NULL while not known (owned) */
    const char *first_closer;  /* side that sent the first FIN */
    /* routes */
    union flow_addr client_sa; /* the client's address (rules, spoof_source) */
    uint16_t own_port;         /* local port of our upstream socket, while registered */
    union flow_addr dest;        /* redirect/tproxy: the original destination; connect:
                                    * the target's address; family 0: none */
    bool started_emitted;      /* flow_start is out (connect: once the request is read) */
    bool decided;              /* fault rules (and mitm) set up for this flow */
    bool refused;              /* the route refused the flow; end_reason says why */
    bool tunnel;               /* connect: "200" sent, the tunnel's bytes are the flow's */
    const char *end_how;       /* flow_end's "close" for end_reason ("error" if NULL) */
    char *target;              /* the host to resolve (owned) */
    uint16_t target_port;
    struct event *route_ev;    /* sni/connect: resolves the target outside read callbacks */
    struct evdns_getaddrinfo_request *dns_req; /* pending resolution, cancelled at close */
    struct evutil_addrinfo *addrs;     /* the target's addresses (owned) ... */
    bool addrs_literal;                /* ... made by flow_literal_addr (free(), not
                                        * evutil_freeaddrinfo) */
    struct evutil_addrinfo *next_addr; /* ... and the next one to try when one fails */
    char *connect_error;       /* why the last address failed (owned) */
    /* verdict */
    enum tf_dir last_read;     /* whose bytes came last */
    struct tf_probe *probe;    /* TLS 1.3 passthrough: fetching the hidden chain (owned) */
    bool probe_tried;
    json_t *pending_end;       /* TF_FLOW_VERDICT: flow_end and the facts of its verdict */
    json_t *pending_facts;
    TAILQ_ENTRY(tf_flow) link;
};

#define FLOW_LINGER_MS 2000
/* Record buffers freed in one sweep that make it worth trimming the heap (32 KiB and more each). */
#define FLOW_SWEEP_TRIM_AT 32
/* Flows closed since the worker's high-water mark that make it worth trimming the heap. */
#define FLOW_SWEEP_TRIM_FLOWS 512
/* Open flows on a worker from which a finished handshake packs its lists at once. */
#define FLOW_PACK_AT_ONCE 256

/* Legs without network faults share this one: never on, never written. */
static struct tf_shaper flow_no_shaper;

static atomic_uint_fast64_t flow_next_id = 1;
/* Client connections open in all workers (limits.connections). */
static atomic_size_t flow_open;
static atomic_uint_fast64_t flow_refused_total;

static void flow_read_cb(struct bufferevent *bev, void *arg);
static void flow_leg_reading(struct tf_leg *leg, bool on);
static void flow_write_cb(struct bufferevent *bev, void *arg);
static void flow_event_cb(struct bufferevent *bev, short what, void *arg);
static void flow_close_with(struct tf_flow *f, const char *closed_by, const char *how,
                            const char *error);
static void flow_fault_try_finish(struct tf_flow *f);
static void flow_reset_socket(evutil_socket_t fd);
static void flow_fail(struct tf_flow *f, const char *how, const char *why);
static void flow_connect_next(struct tf_flow *f);
static void flow_free_addrs(struct tf_flow *f);

/* The server leg has a connected socket (before: it has none, or one still connecting). */
static bool
flow_server_up(const struct tf_flow *f)
{
    return f->state == TF_FLOW_INSPECTING || f->state == TF_FLOW_RELAYING;
}

/* Before the upstream connect: the handshake deadline bounds the wait for the client. */
static bool
flow_waiting_client(const struct tf_flow *f)
{
    return f->state == TF_FLOW_REQUEST || f->state == TF_FLOW_HELLO ||
           f->state == TF_FLOW_INSPECTING;
}

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

/* Replaces *dst with a formatted copy; on a memory shortage it keeps what it had. */
static void flow_set_text(char **dst, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
flow_set_text(char **dst, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    char *copy = strdup(buf);
    if (copy == NULL)
        return;
    free(*dst);
    *dst = copy;
}

/* upstream = "host:port" (brackets around an IPv6 literal). */
static void
flow_set_upstream_target(struct tf_flow *f, const char *host, uint16_t port)
{
    char buf[300];
    tf_connect_format_target(host, port, buf, sizeof(buf));
    flow_set_text(&f->upstream, "%s", buf);
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
    leg->shaper = &flow_no_shaper;
    leg->flow = f;
    leg->peer = peer;
    leg->dir = dir;
    leg->side = side;
}

/* The leg's socket (-1 when it has none yet). */
static evutil_socket_t
flow_leg_fd(const struct tf_leg *leg)
{
    if (leg->flow->relay != NULL)
        return leg->fd;
    return leg->bev != NULL ? bufferevent_getfd(leg->bev) : -1;
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
    else if (flow_waiting_client(f))
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
        flow_fail(f, "timeout", why);
        return;
    case TF_FLOW_REQUEST:
        if (flow_ms_between(&f->started, &now) >= f->cfg->handshake_timeout_ms) {
            snprintf(why, sizeof(why), "no complete CONNECT request within %u ms",
                     f->cfg->handshake_timeout_ms);
            flow_close_with(f, "proxy", "timeout", why);
            return;
        }
        break;
    case TF_FLOW_HELLO:
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
    if (flow_waiting_client(f)) {
        uint64_t hs = f->cfg->handshake_timeout_ms - flow_ms_between(&f->started, &now);
        if (hs < left)
            left = hs;
    }
    struct timeval tv = { (time_t)(left / 1000), (suseconds_t)((left % 1000) * 1000) };
    evtimer_add(f->timer, &tv);
}

static void flow_probe_maybe(struct tf_flow *f);
static void flow_inspected(struct tf_flow *f);

/* Feeds every chunk of buf to the inspector without copying or draining. */
static void
flow_inspect(struct tf_leg *leg, struct evbuffer *buf, size_t from)
{
    struct tf_flow *f = leg->flow;
    struct evbuffer_iovec vec[16];
    struct evbuffer_ptr pos;
    if (from >= evbuffer_get_length(buf))
        return;
    evbuffer_ptr_set(buf, &pos, from, EVBUFFER_PTR_SET);
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
    flow_inspected(f);
}

/* After the inspector saw more: the chain probe, and whether the handshake is over. */
static void
flow_inspected(struct tf_flow *f)
{
    if (!f->probe_tried && f->mitm == NULL && tf_inspect_version(f->ins) == 0x0304)
        flow_probe_maybe(f);
    /* Done, or not TLS at all: from now on only the idle timeout applies. */
    if (f->state == TF_FLOW_INSPECTING &&
        (tf_inspect_handshake_done(f->ins) || tf_inspect_idle(f->ins, TF_DIR_C2S) ||
         tf_inspect_idle(f->ins, TF_DIR_S2C))) {
        f->state = TF_FLOW_RELAYING;
        /*
         * Many open connections: memory first, the verdict's lists packed
         * now, so that the next handshakes reuse what they gave back.  Few:
         * the sweep packs those that stay, and the many that end within a
         * quarter second never pay for packing and unpacking.
         */
        if (f->w->live_flows >= FLOW_PACK_AT_ONCE)
            tf_inspect_pack(f->ins);
    }
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
    const struct tf_shaper *feeding = leg->peer->shaper;
    if (!flow_server_up(leg->flow) ||
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
    if (leg->shaper == &flow_no_shaper) {
        struct tf_shaper *own = calloc(1, sizeof(*own));
        if (own == NULL)
            return false;
        leg->shaper = own;
    }
    struct tf_shaper *sh = leg->shaper;
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
    struct tf_shaper *sh = leg->shaper;
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
    struct tf_shaper *sh = leg->shaper;
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
            flow_leg_reading(leg, true);
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
    if (sh == &flow_no_shaper)
        return;
    if (sh->held)
        evbuffer_free(sh->held);
    if (sh->timer)
        event_free(sh->timer);
    free(sh->q);
    free(sh);
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
    flow_leg_reading(&f->client, false);
    if (flow_server_up(f))
        flow_leg_reading(&f->server, false);
    for (struct tf_leg *leg = &f->client; leg; leg = leg == &f->client ? &f->server : NULL)
        if (leg->shaper->timer)
            evtimer_del(leg->shaper->timer);
    struct timeval now = { 0, 0 };
    evtimer_add(f->timer, &now);
}

static void
flow_fault_try_finish(struct tf_flow *f)
{
    size_t to_client = evbuffer_get_length(bufferevent_get_output(f->client.bev));
    size_t to_server = !flow_server_up(f)
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
            if (leg == &f->server && !flow_server_up(f))
                continue;
            if (!leg->shut) {
                leg->shut = true;
                shutdown(bufferevent_getfd(leg->bev), SHUT_WR);
            }
            if (!leg->eof)
                flow_leg_reading(leg, true);
        }
        struct timeval tv = { FLOW_LINGER_MS / 1000, (FLOW_LINGER_MS % 1000) * 1000 };
        evtimer_add(f->timer, &tv);
        return;
    }
    char desc[600] = "";
    const char *how = "fault";
    if (f->inj != NULL)
        tf_inject_describe(f->inj, desc, sizeof(desc));
    if (f->oom || f->end_reason != NULL) {
        snprintf(desc, sizeof(desc), "%s", f->oom ? "out of memory" : f->end_reason);
        how = !f->oom && f->end_how != NULL ? f->end_how : "error";
    }
    if (f->end.end == TF_INJECT_RESET) {
        if (f->end.to & TF_FAULT_PEER_CLIENT)
            flow_reset_socket(flow_leg_fd(&f->client));
        if ((f->end.to & TF_FAULT_PEER_SERVER) && flow_server_up(f))
            flow_reset_socket(flow_leg_fd(&f->server));
    }
    flow_close_with(f, "proxy", how, desc);
}

/*
 * Ends the flow once flushed, with FIN, for a reason of the proxy's own
 * (not a fault); flow_end's "close" is how.
 */
static void
flow_end_as(struct tf_flow *f, const char *how, const char *reason)
{
    struct tf_inject_result res = { TF_INJECT_FIN, TF_FAULT_PEER_BOTH, NULL };
    flow_set_text(&f->end_reason, "%s", reason);
    f->end_how = how;
    flow_fault_end(f, &res);
}

static void
flow_end_soon(struct tf_flow *f, const char *reason)
{
    flow_end_as(f, "error", reason);
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
    struct evbuffer *dst = leg->shaper->on ? leg->shaper->held : out;
    size_t before = evbuffer_get_length(dst);
    if (tf_inject_wants(f->inj, leg->dir)) {
        tf_inject_feed(f->inj, leg->dir, in, dst, bufferevent_get_output(leg->bev), &res);
        if (res.end != TF_INJECT_GO_ON) {
            /* What the fault let through before the end still goes out. */
            if (leg->shaper->on && !leg->shaper->shape.stall)
                evbuffer_add_buffer(out, leg->shaper->held);
            flow_fault_end(f, &res);
            return false;
        }
    } else {
        evbuffer_add_buffer(dst, in);
    }
    if (leg->shaper->on) {
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
    return leg->shaper->on ? leg->shaper->held : bufferevent_get_output(leg->peer->bev);
}

/* After bytes went into leg's sink: pace them if a network fault says so. */
static void
flow_sink_added(struct tf_leg *leg, size_t before)
{
    if (!leg->shaper->on)
        return;
    size_t now = evbuffer_get_length(leg->shaper->held);
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

/*
 * Moves src into leg's sink.  When nothing waits there and no fault paces
 * it, src is written to the socket first and only what the socket does not
 * take is queued: a bufferevent turns EPOLLOUT on for every write and off
 * again once it is done, two epoll_ctl calls and a loop pass for each
 * record of a mitm flow.  A write error is left for the bufferevent to
 * find on the queued rest (nothing is lost: what was not written is kept).
 */
static void
flow_pass(struct tf_leg *leg, struct evbuffer *src)
{
    struct tf_flow *f = leg->flow;
    struct evbuffer *dst = flow_sink(leg);

    if (!leg->shaper->on && !f->ending && !leg->peer->shut_pending &&
        (f->state == TF_FLOW_INSPECTING || f->state == TF_FLOW_RELAYING) &&
        evbuffer_get_length(dst) == 0) {
        evutil_socket_t fd = bufferevent_getfd(leg->peer->bev);
        while (fd >= 0 && evbuffer_get_length(src) > 0 && evbuffer_write(src, fd) > 0)
            ;
    }
    evbuffer_add_buffer(dst, src);
}

/* Raw TLS our client-side SSL wrote: the client leg's s2c wire faults, then out. */
static void
flow_mitm_to_client(struct tf_flow *f)
{
    struct tf_inject_result res;
    if (evbuffer_get_length(f->to_client) == 0 || f->ending)
        return;
    if (!tf_inspect_idle(f->ins, TF_DIR_S2C))
        flow_inspect(&f->server, f->to_client, f->to_client_held);
    struct evbuffer *dst = flow_sink(&f->server);
    size_t before = evbuffer_get_length(dst);
    if (f->inj != NULL && tf_inject_wants(f->inj, TF_DIR_S2C)) {
        tf_inject_feed(f->inj, TF_DIR_S2C, f->to_client, dst, f->discard, &res);
        f->to_client_held = evbuffer_get_length(f->to_client);
        evbuffer_drain(f->discard, evbuffer_get_length(f->discard));
        if (res.end != TF_INJECT_GO_ON) {
            flow_fault_end(f, &res);
            return;
        }
    } else {
        flow_pass(&f->server, f->to_client);
        f->to_client_held = 0;
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
    /* What waits for the server now (after the client leg's network faults: its pacing). */
    size_t before;
    if (leg == &f->client) {
        if (!tf_inspect_idle(f->ins, TF_DIR_C2S))
            flow_inspect(leg, in, leg->held_back);
        if (!flow_network_faults(leg)) {
            evbuffer_drain(in, evbuffer_get_length(in));
            return;
        }
        before = evbuffer_get_length(flow_sink(&f->client));
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
        st = tf_mitm_from_client(f->mitm, f->mid, f->to_client, f->w->stage);
    } else {
        /* OpenSSL reads what the server says, except what goes by untouched. */
        if (tf_mitm_relays_server_raw(f->mitm) && !tf_inspect_idle(f->ins, TF_DIR_S2C))
            flow_inspect(leg, in, leg->held_back);
        if (!flow_network_faults(leg)) {
            evbuffer_drain(in, evbuffer_get_length(in));
            return;
        }
        before = evbuffer_get_length(flow_sink(&f->client));
        st = tf_mitm_from_server(f->mitm, in, f->to_client, f->w->stage);
    }
    flow_pass(&f->client, f->w->stage);
    flow_sink_added(&f->client, before);
    flow_mitm_status(f, st);
}

/* ------------------------------------------------------------ routes */

static const char *
flow_route_name(enum tf_route route)
{
    switch (route) {
    case TF_ROUTE_SNI:
        return "sni";
    case TF_ROUTE_REDIRECT:
        return "redirect";
    case TF_ROUTE_TPROXY:
        return "tproxy";
    case TF_ROUTE_CONNECT:
        return "connect";
    default:
        return "forward";
    }
}

/* "route", and "original_dst" where the route has one (flow_start, flow_end). */
static void
flow_route_fields(const struct tf_flow *f, json_t *obj)
{
    json_object_set_new_nocheck(obj, "route", tf_json_name(flow_route_name(f->lc->route)));
    if ((f->lc->route == TF_ROUTE_REDIRECT || f->lc->route == TF_ROUTE_TPROXY) &&
        f->dest.sa.sa_family != 0) {
        char addr[80];
        tf_listener_format_addr((const struct sockaddr *)&f->dest, addr, sizeof(addr));
        json_object_set_new_nocheck(obj, "original_dst", tf_json_string(addr));
    }
}

/*
 * flow_start: at accept, except on the connect route, where it waits for
 * the request to name the target (or for the flow's end, whichever first).
 */
static void
flow_emit_start(struct tf_flow *f)
{
    /* Built member by member: json_pack reads its format on every call. */
    json_t *o = json_object();
    json_object_set_new_nocheck(o, "listener", tf_json_string(f->lc->name));
    json_object_set_new_nocheck(o, "client", tf_json_string(f->client_addr));
    if (f->upstream != NULL)
        json_object_set_new_nocheck(o, "upstream", tf_json_string(f->upstream));
    json_object_set_new_nocheck(o, "mode",
                                tf_json_name(f->lc->mode == TF_MODE_MITM ? "mitm" : "passthrough"));
    flow_route_fields(f, o);
    f->started_emitted = true;
    tf_events_emit(f->w->events, f->id, "flow_start", NULL, o);
}

static const char *
flow_listener_name(const struct tf_flow *f, size_t index)
{
    return index < f->cfg->n_listeners ? f->cfg->listeners[index].name : "?";
}

/*
 * Decides which fault rules apply to the flow (dest: its original
 * destination, NULL when the route has none) and, in mitm mode, sets up
 * both terminations.  Returns false after ending the flow when that fails.
 */
static bool
flow_decide(struct tf_flow *f, const struct sockaddr *dest)
{
    const struct sockaddr *client =
        f->client_sa.sa.sa_family != 0 ? (const struct sockaddr *)&f->client_sa : NULL;
    char mitm_err[256] = "";
    bool oom = false;

    f->decided = true;
    f->inj = tf_inject_new(f->cfg, f->lc->name, client, dest, f->ins, flow_emit, f, &oom);
    if (!oom && f->lc->mode == TF_MODE_MITM) {
        struct tf_worker_tls *tls = tf_worker_tls(f->w, f->cfg, mitm_err, sizeof(mitm_err));
        f->mid = evbuffer_new();
        f->to_client = evbuffer_new();
        f->discard = f->inj != NULL ? evbuffer_new() : NULL; /* only wire faults answer back */
        if (tls != NULL && f->mid != NULL && f->to_client != NULL &&
            (f->discard != NULL || f->inj == NULL))
            f->mitm = tf_mitm_new(tls->ctx[f->listener_index], tls->forge, f->ins, f->inj,
                                  flow_emit, flow_keylog, f);
        if (f->mitm == NULL) {
            if (mitm_err[0] == '\0')
                snprintf(mitm_err, sizeof(mitm_err), "out of memory");
            oom = true;
        } else {
            tf_inspect_set_quiet(f->ins, true);
        }
    }
    if (oom) {
        flow_fail(f, "error", mitm_err[0] ? mitm_err : "out of memory");
        return false;
    }
    return true;
}

/* connect: an HTTP answer to the client's request. */
static void
flow_answer(struct tf_flow *f, int status, const char *reason)
{
    char buf[1024];
    size_t n = tf_connect_response(status, reason, buf, sizeof(buf));
    if (n > 0) {
        bufferevent_enable(f->client.bev, EV_WRITE);
        evbuffer_add(bufferevent_get_output(f->client.bev), buf, n);
    }
}

/* Closes the upstream socket, if any, and leaves the server leg without one. */
static void
flow_upstream_abandon(struct tf_flow *f)
{
    evutil_socket_t fd = f->server.bev != NULL ? bufferevent_getfd(f->server.bev) : -1;
    tf_origdst_own_port_remove(f->own_port);
    f->own_port = 0;
    if (fd < 0)
        return;
    bufferevent_setfd(f->server.bev, -1);
    evutil_closesocket(fd);
}

/*
 * The route will not carry this flow (reason says why): a connect client
 * gets status first; then the flow ends with FIN, close "refused".
 */
static void
flow_refuse(struct tf_flow *f, int status, const char *reason)
{
    f->refused = true;
    flow_upstream_abandon(f);
    if (f->lc->route == TF_ROUTE_CONNECT && !f->tunnel)
        flow_answer(f, status, reason);
    flow_end_as(f, "refused", reason);
}

/*
 * The upstream cannot be reached (how: "error" or "timeout").  A connect
 * client is told so (502; 504 for a timeout) and then gets a FIN; other
 * routes close at once and reset the client, as a dead server would.
 */
static void
flow_fail(struct tf_flow *f, const char *how, const char *why)
{
    if (f->lc->route == TF_ROUTE_CONNECT && !f->tunnel && !f->ending) {
        flow_upstream_abandon(f);
        flow_answer(f, strcmp(how, "timeout") == 0 ? 504 : 502, why);
        flow_end_as(f, how, why);
        return;
    }
    flow_close_with(f, "proxy", how, why);
}

/* A failure that every flow would meet (missing privilege): logged once per run. */
static void
flow_warn_once(const char *what)
{
    static atomic_bool warned;
    if (!atomic_exchange(&warned, true))
        tf_log_warn("%s; every flow that needs it ends with this reason", what);
}

/*
 * spoof_source: the upstream socket takes the client's address (any port)
 * so that the server sees the client.  IP_TRANSPARENT lets it bind to an
 * address that is not ours; the TPROXY rules route the answers back here.
 */
static bool
flow_spoof_source(struct tf_flow *f, int fd, const struct sockaddr *dst, char *why,
                  size_t whylen)
{
    struct sockaddr_storage src;
    char up[80];
    int e;

    if (f->client_sa.sa.sa_family != dst->sa_family) {
        tf_listener_format_addr(dst, up, sizeof(up));
        snprintf(why, whylen, "spoof_source: the client %s and the upstream %s are of "
                              "different address families", f->client_addr, up);
        return false;
    }
    e = tf_origdst_set_transparent(fd, dst->sa_family);
    if (e != 0) {
        snprintf(why, whylen, "spoof_source: %s on the upstream socket: %s%s",
                 dst->sa_family == AF_INET6 ? "IPV6_TRANSPARENT" : "IP_TRANSPARENT", strerror(e),
                 e == EPERM ? " (needs CAP_NET_ADMIN: run as root, or setcap cap_net_admin+ep "
                              "on tlsfault)" : "");
        if (e == EPERM)
            flow_warn_once(why);
        return false;
    }
    memset(&src, 0, sizeof(src));
    memcpy(&src, &f->client_sa, sizeof(f->client_sa));
    if (src.ss_family == AF_INET)
        ((struct sockaddr_in *)&src)->sin_port = 0;
    else
        ((struct sockaddr_in6 *)&src)->sin6_port = 0;
    if (bind(fd, (struct sockaddr *)&src, tf_origdst_len((struct sockaddr *)&src)) < 0) {
        snprintf(why, whylen, "spoof_source: cannot bind the upstream socket to the client's "
                              "address %s: %s", f->client_addr, strerror(errno));
        return false;
    }
    return true;
}

enum flow_connect_step {
    FLOW_CONNECT_STARTED, /* the server leg's event callback hears how it ends */
    FLOW_CONNECT_FAILED,  /* this address failed (connect_error): the next may do */
    FLOW_CONNECT_ENDED,   /* the flow is ending (or gone): touch nothing */
};

/*
 * Our own upstream sockets are known by port only where a listener takes
 * intercepted connections: only there can one of them come back to us
 * (flow_accept_intercepted).  Elsewhere the getsockname is saved.
 */
static bool
flow_loop_possible(const struct tf_flow *f)
{
    const struct tf_config *cfg = f->w->cfg;
    for (size_t i = 0; i < cfg->n_listeners; i++)
        if (cfg->listeners[i].route == TF_ROUTE_REDIRECT ||
            cfg->listeners[i].route == TF_ROUTE_TPROXY)
            return true;
    return false;
}

/*
 * Makes the upstream socket for sa and starts connecting it: SO_MARK, the
 * client's source address for spoof_source, then a non-blocking connect
 * that the server leg's bufferevent watches.  The connect route decides
 * its fault rules here, with the address as the destination.
 */
static enum flow_connect_step
flow_connect_addr(struct tf_flow *f, const struct sockaddr *sa)
{
    const struct tf_listener_conf *lc = f->lc;
    socklen_t len = tf_origdst_len(sa);
    uint32_t mark = lc->mark != 0 ? lc->mark : f->cfg->mark;
    char why[600], addr[80];
    size_t own;
    int fd, e;

    if (len == 0) {
        flow_set_text(&f->connect_error, "address family %d is not IP",
                 sa->sa_family);
        return FLOW_CONNECT_FAILED;
    }
    if ((lc->route == TF_ROUTE_SNI || lc->route == TF_ROUTE_CONNECT) &&
        tf_listener_find_own(f->w, sa, true, &own)) {
        tf_listener_format_addr(sa, addr, sizeof(addr));
        snprintf(why, sizeof(why), "upstream %s (%s) is tlsfault's own listener %s: refusing a loop",
                 f->upstream ? f->upstream : "?", addr, flow_listener_name(f, own));
        flow_refuse(f, 403, why);
        return FLOW_CONNECT_ENDED;
    }
    if (!f->decided) {
        if ((size_t)len <= sizeof(f->dest))
            memcpy(&f->dest, sa, (size_t)len);
        if (!flow_decide(f, sa))
            return FLOW_CONNECT_ENDED;
    }
    fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    if (fd < 0) {
        flow_set_text(&f->connect_error, "socket: %s", strerror(errno));
        return FLOW_CONNECT_FAILED;
    }
    /* Before connect: the SYN must carry the mark, or the rules catch it. */
    if (mark != 0 && (e = tf_origdst_set_mark(fd, mark)) != 0) {
        snprintf(why, sizeof(why), "cannot mark the upstream socket (SO_MARK %u): %s%s",
                 (unsigned)mark, strerror(e),
                 e == EPERM ? " (needs CAP_NET_ADMIN: run as root, or setcap cap_net_admin+ep "
                              "on tlsfault)" : "");
        flow_warn_once(why);
        evutil_closesocket(fd);
        flow_fail(f, "error", why);
        return FLOW_CONNECT_ENDED;
    }
    if (lc->spoof_source && !flow_spoof_source(f, fd, sa, why, sizeof(why))) {
        evutil_closesocket(fd);
        flow_fail(f, "error", why);
        return FLOW_CONNECT_ENDED;
    }
    if (connect(fd, sa, len) < 0 && errno != EINPROGRESS) {
        flow_set_text(&f->connect_error, "%s", strerror(errno));
        evutil_closesocket(fd);
        return FLOW_CONNECT_FAILED;
    }
    struct sockaddr_storage local;
    socklen_t local_len = sizeof(local);
    if (flow_loop_possible(f) && getsockname(fd, (struct sockaddr *)&local, &local_len) == 0) {
        f->own_port = ntohs(local.ss_family == AF_INET6
                                ? ((struct sockaddr_in6 *)&local)->sin6_port
                                : ((struct sockaddr_in *)&local)->sin_port);
        tf_origdst_own_port_add(f->own_port);
    }
    /* No address: the socket is connecting already; CONNECTED or ERROR tells the end. */
    bufferevent_setfd(f->server.bev, fd);
    if (bufferevent_socket_connect(f->server.bev, NULL, 0) < 0) {
        flow_upstream_abandon(f);
        flow_set_text(&f->connect_error, "cannot watch the upstream socket");
        return FLOW_CONNECT_FAILED;
    }
    return FLOW_CONNECT_STARTED;
}

/*
 * Tries the next address the target resolved to (after the previous one
 * failed, or first); with none left the flow fails with the last error.
 */
static void
flow_connect_next(struct tf_flow *f)
{
    flow_upstream_abandon(f);
    for (;;) {
        struct evutil_addrinfo *ai = f->next_addr;
        if (ai == NULL || f->ending) {
            flow_fail(f, "error",
                      f->connect_error ? f->connect_error : "no address to connect to");
            return;
        }
        f->next_addr = ai->ai_next;
        if (ai->ai_addr == NULL)
            continue;
        if (flow_connect_addr(f, ai->ai_addr) != FLOW_CONNECT_FAILED)
            return;
    }
}

static void
flow_free_addrs(struct tf_flow *f)
{
    if (f->addrs == NULL)
        return;
    if (f->addrs_literal)
        free(f->addrs);
    else
        evutil_freeaddrinfo(f->addrs);
    f->addrs = f->next_addr = NULL;
    f->addrs_literal = false;
}

/*
 * target as one address when it is an IP literal (the usual upstream of a
 * forward listener): no resolver request for it, which cost 5% of a
 * passthrough connection's CPU.  NULL when it is a name (or memory is short).
 */
static struct evutil_addrinfo *
flow_literal_addr(const char *host, uint16_t port)
{
    struct literal {
        struct evutil_addrinfo ai;
        union flow_addr sa;
    };
    struct in_addr v4;
    struct in6_addr v6;
    int family = inet_pton(AF_INET, host, &v4) == 1    ? AF_INET
                 : inet_pton(AF_INET6, host, &v6) == 1 ? AF_INET6
                                                       : 0;
    if (family == 0)
        return NULL;
    struct literal *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    if (family == AF_INET) {
        l->sa.in.sin_family = AF_INET;
        l->sa.in.sin_port = htons(port);
        l->sa.in.sin_addr = v4;
        l->ai.ai_addrlen = sizeof(l->sa.in);
    } else {
        l->sa.in6.sin6_family = AF_INET6;
        l->sa.in6.sin6_port = htons(port);
        l->sa.in6.sin6_addr = v6;
        l->ai.ai_addrlen = sizeof(l->sa.in6);
    }
    l->ai.ai_family = family;
    l->ai.ai_socktype = SOCK_STREAM;
    l->ai.ai_protocol = IPPROTO_TCP;
    l->ai.ai_addr = &l->sa.sa;
    return &l->ai;
}

static void
flow_resolved_cb(int result, struct evutil_addrinfo *res, void *arg)
{
    struct tf_flow *f = arg;
    char why[400];

    if (result == EVUTIL_EAI_CANCEL) {
        /* The flow is being freed. */
        if (res != NULL)
            evutil_freeaddrinfo(res);
        return;
    }
    f->dns_req = NULL;
    if (f->ending) {
        /* A fault or a refusal ends the flow meanwhile: nothing to connect. */
        if (res != NULL)
            evutil_freeaddrinfo(res);
        return;
    }
    if (result != 0 || res == NULL) {
        if (res != NULL)
            evutil_freeaddrinfo(res);
        if (f->lc->route == TF_ROUTE_FORWARD)
            snprintf(why, sizeof(why), "%s", evutil_gai_strerror(result));
        else
            snprintf(why, sizeof(why), "cannot resolve %s: %s", f->target,
                     result ? evutil_gai_strerror(result) : "no address");
        flow_fail(f, "error", why);
        return;
    }
    f->addrs = res;
    f->next_addr = res;
    flow_connect_next(f);
}

/*
 * Resolves target (evdns: never blocks the loop; literals and /etc/hosts
 * answer at once) and connects.  May end the flow before it returns.
 */
static void
flow_resolve(struct tf_flow *f)
{
    struct evutil_addrinfo hints;
    struct evdns_getaddrinfo_request *req;
    char port[8];

    struct evutil_addrinfo *lit = flow_literal_addr(f->target, f->target_port);
    if (lit != NULL) {
        f->addrs = f->next_addr = lit;
        f->addrs_literal = true;
        flow_connect_next(f);
        return;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    snprintf(port, sizeof(port), "%u", (unsigned)f->target_port);
    req = evdns_getaddrinfo(f->w->dns, f->target, port, &hints, flow_resolved_cb, f);
    /* NULL: the callback has run already and may have freed f. */
    if (req != NULL)
        f->dns_req = req;
}

/* sni/connect: the resolution starts from the loop, never inside a read callback. */
static void
flow_route_cb(evutil_socket_t fd, short what, void *arg)
{
    struct tf_flow *f = arg;
    (void)fd;
    (void)what;
    if (!f->ending && f->state == TF_FLOW_CONNECTING)
        flow_resolve(f);
}

/* sni/connect: the target is known; resolve and connect it next. */
static void
flow_route_to(struct tf_flow *f, const char *host, uint16_t port)
{
    flow_set_text(&f->target, "%s", host);
    f->target_port = port;
    flow_set_upstream_target(f, host, port);
    f->state = TF_FLOW_CONNECTING;
    evtimer_del(f->timer);
    flow_arm_timer(f);
    event_active(f->route_ev, EV_TIMEOUT, 1);
}

/* Letters, digits, '-', '.', '_': what a server name may be resolved as. */
static bool
flow_host_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 253)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_'))
            return false;
    }
    return true;
}

static bool
flow_sni_allowed(const struct tf_listener_conf *lc, const char *sni)
{
    if (lc->allow == NULL)
        return true;
    for (size_t i = 0; i < lc->n_allow; i++)
        if (lc->allow[i] != NULL && fnmatch(lc->allow[i], sni, FNM_CASEFOLD) == 0)
            return true;
    return false;
}

/*
 * sni route, after each read from the client: once the ClientHello is
 * complete its server name picks the upstream.  Its bytes wait in the
 * server leg's output meanwhile (rules matching on SNI were decided when
 * it passed).  Never frees the flow.
 */
static void
flow_route_sni(struct tf_flow *f)
{
    const struct tf_listener_conf *lc = f->lc;
    char why[400];
    const char *sni;

    if (f->ending)
        return;
    if (tf_inspect_client_hello_lost(f->ins)) {
        flow_refuse(f, 0, tf_inspect_idle(f->ins, TF_DIR_C2S)
                              ? "the client's first bytes are not a TLS ClientHello: no server "
                                "name to route by"
                              : "the client's first handshake message is not a ClientHello "
                                "tlsfault can read (another type, or longer than the handshake "
                                "cap): no server name to route by");
        return;
    }
    if (!tf_inspect_client_hello_seen(f->ins))
        return;
    sni = tf_inspect_sni(f->ins);
    if (sni == NULL) {
        if (lc->default_host == NULL) {
            snprintf(why, sizeof(why), "the ClientHello has no server name (SNI) and listener "
                                       "%s has no default_upstream", lc->name);
            flow_refuse(f, 0, why);
            return;
        }
        flow_route_to(f, lc->default_host,
                      lc->default_port != 0 ? lc->default_port : lc->upstream_port);
        return;
    }
    if (!flow_host_name_ok(sni)) {
        snprintf(why, sizeof(why), "sni %s is not a host name", sni);
        flow_refuse(f, 0, why);
        return;
    }
    if (!flow_sni_allowed(lc, sni)) {
        snprintf(why, sizeof(why), "sni %s is not in the allow list", sni);
        flow_refuse(f, 0, why);
        return;
    }
    flow_route_to(f, sni, lc->upstream_port);
}

/*
 * connect route: reads the request head (connect.c) and answers it.  The
 * tunnel opens with the "200" once the upstream is connected; bytes after
 * the head wait in the client's input until then, unread by the inspector.
 * Never frees the flow.
 */
static void
flow_request_read(struct tf_flow *f)
{
    struct evbuffer *in = bufferevent_get_input(f->client.bev);
    size_t n = evbuffer_get_length(in);
    size_t take = n < TF_CONNECT_HEAD_MAX ? n : TF_CONNECT_HEAD_MAX;
    const uint8_t *p = evbuffer_pullup(in, (ev_ssize_t)take);
    struct tf_connect_request req;
    char err[256], why[400];

    if (p == NULL) {
        flow_fault_oom(f);
        return;
    }
    switch (tf_connect_parse(p, n, &req, err, sizeof(err))) {
    case TF_CONNECT_NEED_MORE:
        return;
    case TF_CONNECT_BAD:
    case TF_CONNECT_TOO_BIG:
        snprintf(why, sizeof(why), "bad CONNECT request: %s", err);
        flow_refuse(f, 400, why);
        return;
    case TF_CONNECT_METHOD:
        snprintf(why, sizeof(why), "not a CONNECT request: %s", err);
        flow_refuse(f, 405, why);
        return;
    case TF_CONNECT_OK:
        break;
    }
    evbuffer_drain(in, req.head_len);
    flow_set_upstream_target(f, req.host, req.port);
    if (!tf_connect_allowed(f->lc->allow, f->lc->n_allow, req.host, req.port)) {
        snprintf(why, sizeof(why), "CONNECT %s is not in the allow list", f->upstream);
        flow_refuse(f, 403, why);
        return;
    }
    flow_leg_reading(&f->client, false);
    flow_route_to(f, req.host, req.port);
    flow_emit_start(f);
}

/*
 * redirect/tproxy at accept: the original destination is the upstream,
 * unless it is one of our own listeners (a client that came straight to
 * the port: connecting there would loop until descriptors run out).
 */
static void
flow_accept_intercepted(struct tf_flow *f, int fd)
{
    const struct sockaddr *dest = (const struct sockaddr *)&f->dest;
    char why[400];
    size_t own;
    if (tf_origdst_from_own_socket((const struct sockaddr *)&f->client_sa)) {
        f->dest.sa.sa_family = 0;
        flow_refuse(f, 0,
                    "the connection comes from tlsfault's own upstream socket: the redirect "
                    "rule catches tlsfault's own traffic (exclude it with -m mark ! --mark N "
                    "and set mark = N): refusing a loop");
        return;
    }
    struct sockaddr_storage found;
    memset(&found, 0, sizeof(found));
    bool ok = f->lc->route == TF_ROUTE_REDIRECT ? tf_origdst_redirect(fd, &found, why, sizeof(why))
                                                : tf_origdst_tproxy(fd, &found, why, sizeof(why));
    if (ok && found.ss_family != AF_INET && found.ss_family != AF_INET6) {
        snprintf(why, sizeof(why), "the original destination is not an IP address (family %d)",
                 found.ss_family);
        ok = false;
    }
    if (ok)
        memcpy(&f->dest, &found, sizeof(f->dest));
    if (!ok) {
        f->dest.sa.sa_family = 0;
        flow_refuse(f, 0, why);
        return;
    }
    char dest_text[80];
    tf_listener_format_addr(dest, dest_text, sizeof(dest_text));
    flow_set_text(&f->upstream, "%s", dest_text);
    flow_emit_start(f);
    if (tf_listener_find_own(f->w, dest, false, &own)) {
        snprintf(why, sizeof(why),
                 "original destination %s is tlsfault's own listener %s: refusing a loop",
                 f->upstream ? f->upstream : "?", flow_listener_name(f, own));
        flow_refuse(f, 0, why);
        return;
    }
    if (!flow_decide(f, dest))
        return;
    bufferevent_enable(f->client.bev, EV_WRITE);
    flow_leg_reading(&f->client, true);
    flow_arm_timer(f);
    if (flow_connect_addr(f, dest) == FLOW_CONNECT_FAILED)
        flow_fail(f, "error", f->connect_error);
}

/*
 * The connection limit: limits.connections, or by default what the
 * descriptor limit allows (each flow holds two sockets), less a margin for
 * listeners, logs, chain probes and the control API, so that accept()
 * does not start failing with EMFILE.
 */
static size_t
flow_limit(const struct tf_config *cfg)
{
    static atomic_size_t from_rlimit;
    if (cfg->max_connections > 0)
        return cfg->max_connections;
    size_t n = atomic_load(&from_rlimit);
    if (n == 0) {
        struct rlimit rl;
        rlim_t fds = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? rl.rlim_cur : 1024;
        if (fds == RLIM_INFINITY || fds > 4000000)
            fds = 4000000;
        n = fds > 256 ? (size_t)(fds - 128) / 2 : 64;
        atomic_store(&from_rlimit, n);
    }
    return n;
}

/*
 * Over the limit: the connection is accepted and closed at once (FIN), so
 * the client sees the end rather than a listen queue that never answers,
 * and the proxy says so, at most once a second, with how many it turned
 * away.
 */
static bool
flow_over_limit(struct tf_worker *w, int fd, const struct sockaddr *peer)
{
    size_t limit = flow_limit(w->cfg);
    if (atomic_load(&flow_open) < limit)
        return false;
    static atomic_llong last_warned;
    uint64_t refused = atomic_fetch_add(&flow_refused_total, 1) + 1;
    struct timeval now;
    event_base_gettimeofday_cached(w->base, &now);
    long long t = (long long)now.tv_sec;
    long long prev = atomic_load(&last_warned);
    if (t != prev && atomic_compare_exchange_strong(&last_warned, &prev, t)) {
        char addr[64];
        tf_listener_format_addr(peer, addr, sizeof(addr));
        tf_log_warn("connection limit %zu reached (limits.connections): closed %s at once; "
                    "%" PRIu64 " turned away so far",
                    limit, addr, refused);
    }
    evutil_closesocket(fd);
    return true;
}

void
tf_flow_accept(struct tf_worker *w, size_t listener_index, int fd, const struct sockaddr *peer,
               int peer_len)
{
    if (flow_over_limit(w, fd, peer))
        return;
    struct tf_flow *f = calloc(1, sizeof(*f));
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
    if (peer_len > 0 && (size_t)peer_len <= sizeof(f->client_sa))
        memcpy(&f->client_sa, peer, (size_t)peer_len);
    if (f->lc->route == TF_ROUTE_FORWARD && f->lc->upstream_host != NULL) {
        flow_set_text(&f->target, "%s", f->lc->upstream_host);
        f->target_port = f->lc->upstream_port;
        flow_set_upstream_target(f, f->target, f->target_port);
    }
    TAILQ_INSERT_TAIL(&w->flows, f, link);
    w->live_flows++;
    atomic_fetch_add(&flow_open, 1);
    flow_now(f, &f->started);
    f->last_activity = f->started;
    f->rng = (uint32_t)(f->id * 2654435761u) | 1u;

    f->ins = tf_inspect_new(f->cfg->handshake_message_max, flow_emit, f);
    if (f->ins != NULL)
        tf_inspect_set_app_records(f->ins, f->cfg->log_app_records);
    f->timer = evtimer_new(w->base, flow_timer_cb, f);
    f->route_ev = evtimer_new(w->base, flow_route_cb, f);
    f->client.bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (f->client.bev == NULL)
        evutil_closesocket(fd);
    f->server.bev = bufferevent_socket_new(w->base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (f->ins == NULL || f->timer == NULL || f->route_ev == NULL || f->client.bev == NULL ||
        f->server.bev == NULL) {
        flow_close_with(f, "proxy", "error", "out of memory");
        return;
    }
    /*
     * Writing to the upstream is armed once it is connected (flow_connected):
     * a bufferevent is born writable, and its socket would be added to epoll,
     * removed and added again on the way to connecting.
     */
    bufferevent_disable(f->server.bev, EV_WRITE);
    /* The client's socket has TCP_NODELAY from its listener (listener.c). */
    for (struct tf_leg *leg = &f->client; leg; leg = leg == &f->client ? &f->server : NULL) {
        bufferevent_setcb(leg->bev, flow_read_cb, flow_write_cb, flow_event_cb, leg);
        /* Reads up to a full TLS record and more at once: fewer callbacks. */
        bufferevent_set_max_single_read(leg->bev, 64 * 1024);
        bufferevent_set_max_single_write(leg->bev, 64 * 1024);
    }
    switch (f->lc->route) {
    case TF_ROUTE_CONNECT:
        /* flow_start and the rules wait for the request to name the target. */
        f->state = TF_FLOW_REQUEST;
        bufferevent_enable(f->client.bev, EV_WRITE);
        flow_leg_reading(&f->client, true);
        flow_arm_timer(f);
        return;
    case TF_ROUTE_SNI:
        f->state = TF_FLOW_HELLO;
        flow_emit_start(f);
        if (!flow_decide(f, NULL))
            return;
        bufferevent_enable(f->client.bev, EV_WRITE);
        flow_leg_reading(&f->client, true);
        flow_arm_timer(f);
        return;
    case TF_ROUTE_REDIRECT:
    case TF_ROUTE_TPROXY:
        flow_accept_intercepted(f, fd);
        return;
    case TF_ROUTE_FORWARD:
    default:
        break;
    }
    flow_emit_start(f);
    if (!flow_decide(f, NULL))
        return;
    /*
     * The client's first bytes (its ClientHello) are read and inspected at
     * once and wait in the server leg's output until the connect completes.
     */
    if (f->inj != NULL || f->mitm != NULL)
        bufferevent_enable(f->client.bev, EV_WRITE); /* else nothing goes to it before the relay */
    flow_leg_reading(&f->client, true);
    flow_arm_timer(f);
    flow_resolve(f);
}

/*
 * Reads what the socket holds, up to FLOW_READ_MAX, into the bufferevent's
 * input, then runs the flow's read callback as the bufferevent would.
 * libevent 2.1 reads at most 4 KiB per callback (after an FIONREAD ioctl):
 * five times the system calls for a bulk transfer through faults or mitm.
 */
#define FLOW_READ_MAX (64 * 1024)

/* One per thread: every leg of a worker reads into it in turn. */
static _Thread_local uint8_t flow_read_scratch[FLOW_READ_MAX];

static void
flow_reader_cb(evutil_socket_t fd, short what, void *arg)
{
    struct tf_leg *leg = arg;
    (void)what;
    ssize_t n;
    tf_worker_note_work();
    do
        n = read(fd, flow_read_scratch, sizeof(flow_read_scratch));
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return;
    if (n <= 0) {
        /* The same events the bufferevent would report; errno is still the read's. */
        flow_event_cb(leg->bev, BEV_EVENT_READING | (n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR),
                      leg);
        return;
    }
    /*
     * Copied out of the scratch buffer into a chain of the bytes' own size:
     * reserving 64 KiB in the evbuffer instead costs a 64 KiB malloc and
     * free per read, which a heap fragmented by thousands of closed
     * connections makes slow.  A bufferevent keeps its input's end frozen
     * but while it reads itself.
     */
    struct evbuffer *in = bufferevent_get_input(leg->bev);
    evbuffer_unfreeze(in, 0);
    int added = evbuffer_add(in, flow_read_scratch, (size_t)n);
    evbuffer_freeze(in, 0);
    if (added != 0) {
        flow_close_with(leg->flow, "proxy", "error", "out of memory");
        return;
    }
    flow_read_cb(leg->bev, leg); /* may free the flow: nothing after it */
}

/* Reading on or off: the flow's own reader, never the bufferevent's. */
static void
flow_leg_reading(struct tf_leg *leg, bool on)
{
    if (leg->bev == NULL)
        return;
    evutil_socket_t fd = bufferevent_getfd(leg->bev);
    if (leg->reader != NULL && event_get_fd(leg->reader) != fd) {
        event_free(leg->reader); /* the socket was replaced (a next address) */
        leg->reader = NULL;
    }
    if (!on) {
        if (leg->reader != NULL)
            event_del(leg->reader);
        else
            bufferevent_disable(leg->bev, EV_READ); /* the fallback below */
        return;
    }
    if (fd < 0)
        return;
    if (leg->reader == NULL) {
        leg->reader = event_new(leg->flow->w->base, fd, EV_READ | EV_PERSIST, flow_reader_cb, leg);
        if (leg->reader == NULL) {
            bufferevent_enable(leg->bev, EV_READ); /* slower, but reading */
            return;
        }
    }
    event_add(leg->reader, NULL);
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
    if (f->ending && (f->refused || (f->lc->route == TF_ROUTE_CONNECT && !f->tunnel))) {
        /* Refused, or no tunnel: nothing of it is the flow's. */
        evbuffer_drain(in, n);
        return;
    }
    if (f->state == TF_FLOW_REQUEST) {
        flow_now(f, &f->last_activity);
        flow_request_read(f);
        return;
    }
    leg->bytes += n > leg->held_back ? n - leg->held_back : 0;
    f->last_read = leg->dir;
    flow_now(f, &f->last_activity);
    if (f->mitm != NULL) {
        flow_mitm_read(leg, in);
        leg->held_back = evbuffer_get_length(in);
        if (f->ending)
            return;
    } else {
        if (f->ending) {
            /* A fault ends the flow: what comes now is the peers' reaction to it. */
            evbuffer_drain(in, n);
            leg->held_back = 0;
            return;
        }
        if (!tf_inspect_idle(f->ins, leg->dir))
            flow_inspect(leg, in, leg->held_back);
        if (leg->peer->shut) {
            /* The other side already got our FIN; nothing more may go to it. */
            evbuffer_drain(in, n);
            leg->held_back = 0;
            return;
        }
        if (f->inj == NULL)
            evbuffer_add_buffer(out, in);
        else if (!flow_faults(leg, in, out)) {
            leg->held_back = evbuffer_get_length(in);
            return;
        }
        leg->held_back = evbuffer_get_length(in);
    }
    size_t queued = evbuffer_get_length(out);
    if (leg->shaper->on)
        queued += evbuffer_get_length(leg->shaper->held);
    if (queued >= f->cfg->buffer_max) {
        /* le-proxy style back-pressure: resume when the peer has drained half. */
        leg->read_paused = true;
        flow_leg_reading(leg, false);
        bufferevent_setwatermark(leg->peer->bev, EV_WRITE, f->cfg->buffer_max / 2, 0);
    }
    if (f->state == TF_FLOW_HELLO && leg == &f->client)
        flow_route_sni(f);
}

static void
flow_write_cb(struct bufferevent *bev, void *arg)
{
    struct tf_leg *leg = arg;
    struct tf_flow *f = leg->flow;
    size_t left = evbuffer_get_length(bufferevent_get_output(bev));
    tf_worker_note_work();

    if (f->ending) {
        if (!f->lingering)
            flow_fault_try_finish(f);
        return;
    }
    if (leg->peer->shaper->on)
        left += evbuffer_get_length(leg->peer->shaper->held);
    if (leg->peer->read_paused && left <= f->cfg->buffer_max / 2) {
        leg->peer->read_paused = false;
        if (!leg->peer->eof)
            flow_leg_reading(leg->peer, true);
        if (!leg->shut_pending)
            bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
    }
    if (leg->shut_pending && evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
        flow_shutdown_leg(leg);
        flow_maybe_finish(f);
    }
}

/* ------------------------------------------------------------ fast path */

static void
flow_relay_data(void *arg, int side, const uint8_t *p, size_t n)
{
    struct tf_flow *f = arg;
    struct tf_leg *leg = side == TF_RELAY_CLIENT ? &f->client : &f->server;
    leg->bytes += n;
    f->last_read = leg->dir;
    flow_now(f, &f->last_activity);
    if (!tf_inspect_idle(f->ins, leg->dir)) {
        tf_inspect_feed(f->ins, leg->dir, p, n);
        flow_inspected(f);
    }
}

static void
flow_relay_eof(void *arg, int side)
{
    struct tf_flow *f = arg;
    struct tf_leg *leg = side == TF_RELAY_CLIENT ? &f->client : &f->server;
    leg->eof = true;
    if (f->first_closer == NULL)
        f->first_closer = leg->side;
}

static void
flow_relay_end(void *arg, enum tf_relay_end how, int side, int err)
{
    struct tf_flow *f = arg;
    if (how == TF_RELAY_FIN) {
        flow_close_with(f, f->first_closer ? f->first_closer : "client", "fin", NULL);
        return;
    }
    const char *who = side == TF_RELAY_CLIENT ? "client" : "server";
    char why[256];
    snprintf(why, sizeof(why), "%s", evutil_socket_error_to_string(err));
    flow_close_with(f, who, how == TF_RELAY_RESET ? "reset" : "error", why);
}

static const struct tf_relay_ops flow_relay_ops = {
    .data = flow_relay_data,
    .eof = flow_relay_eof,
    .end = flow_relay_end,
};

/*
 * Nothing but the inspector needs the bytes (no fault rule, no mitm, no
 * pacing) and nothing is half-way: the sockets can go to the relay.
 */
static bool
flow_relay_eligible(const struct tf_flow *f)
{
    if (f->mitm != NULL || f->inj != NULL || f->ending || f->relay != NULL || !flow_server_up(f))
        return false;
    for (const struct tf_leg *leg = &f->client; leg; leg = leg == &f->client ? &f->server : NULL) {
        if (leg->bev == NULL || leg->eof || leg->shut || leg->shut_pending || leg->read_paused ||
            leg->shaper->on || leg->held_back > 0 ||
            evbuffer_get_length(bufferevent_get_input(leg->bev)) > 0)
            return false;
    }
    return true;
}

/* Hands one leg's socket over: its queued output goes with it, the bufferevent goes. */
static int
flow_relay_take(struct tf_flow *f, struct tf_leg *leg, int side)
{
    struct evbuffer *out = bufferevent_get_output(leg->bev);
    size_t n = evbuffer_get_length(out);
    if (n > 0) {
        const uint8_t *p = evbuffer_pullup(out, (ev_ssize_t)n);
        if (p == NULL || tf_relay_queue(f->relay, side, p, n) != 0)
            return -1;
        evbuffer_drain(out, n);
    }
    leg->fd = bufferevent_getfd(leg->bev);
    return 0;
}

/* Returns false when the flow stays with its bufferevents (memory), or ended (closed). */
static bool
flow_relay_begin(struct tf_flow *f, bool *closed)
{
    evutil_socket_t fd[2] = { bufferevent_getfd(f->client.bev),
                              bufferevent_getfd(f->server.bev) };
    *closed = false;
    f->relay = tf_relay_new(f->w->base, fd, &flow_relay_ops, f);
    if (f->relay == NULL)
        return false; /* the bufferevents go on relaying */
    if (flow_relay_take(f, &f->client, TF_RELAY_CLIENT) != 0 ||
        flow_relay_take(f, &f->server, TF_RELAY_SERVER) != 0) {
        /* Out of memory: whatever moved is in the relay; let it go with the flow. */
        tf_relay_free(f->relay);
        f->relay = NULL;
        *closed = true;
        flow_close_with(f, "proxy", "error", "out of memory");
        return false;
    }
    /*
     * The relay watches the sockets before the flow's own events let go of
     * them: epoll then hears of no change for the client's socket, which was
     * watched for reading and still is (libevent counts interest per socket).
     */
    tf_relay_start(f->relay);
    for (struct tf_leg *leg = &f->client; leg; leg = leg == &f->client ? &f->server : NULL) {
        /* The bufferevent lets go of the socket without closing it. */
        flow_leg_reading(leg, false);
        if (leg->reader != NULL)
            event_free(leg->reader);
        leg->reader = NULL;
        bufferevent_disable(leg->bev, EV_READ | EV_WRITE);
        bufferevent_setfd(leg->bev, -1);
        bufferevent_free(leg->bev);
        leg->bev = NULL;
    }
    if (f->route_ev != NULL) {
        event_free(f->route_ev);
        f->route_ev = NULL;
    }
    free(f->target); /* resolved and connected: not needed any more */
    f->target = NULL;
    return true;
}

static void
flow_connected(struct tf_flow *f)
{
    flow_now(f, &f->connected_at);
    /* Connected: the other addresses are not needed any more. */
    flow_free_addrs(f);
    f->state = tf_inspect_handshake_done(f->ins) ? TF_FLOW_RELAYING : TF_FLOW_INSPECTING;
    flow_set_nodelay(f->server.bev);
    if (f->ending) {
        /* A fault ended the flow while connecting: its finish is due now. */
        struct timeval now = { 0, 0 };
        bufferevent_enable(f->server.bev, EV_WRITE);
        evtimer_add(f->timer, &now);
        return;
    }
    evtimer_del(f->timer);
    flow_arm_timer(f);
    if (f->lc->route != TF_ROUTE_CONNECT && flow_relay_eligible(f)) {
        /* The usual case: straight to the relay, the bufferevents never armed. */
        bool closed;
        if (flow_relay_begin(f, &closed) || closed)
            return;
    }
    bufferevent_enable(f->server.bev, EV_WRITE);
    bufferevent_enable(f->client.bev, EV_WRITE);
    flow_leg_reading(&f->server, true);
    bool opened = false;
    if (f->lc->route == TF_ROUTE_CONNECT && !f->tunnel) {
        /* The tunnel is open: what the client sends from now on is the flow's. */
        f->tunnel = opened = true;
        flow_answer(f, 200, NULL);
        flow_leg_reading(&f->client, true);
    }
    if (f->mitm != NULL) {
        struct evbuffer *to_server = flow_sink(&f->client);
        size_t before = evbuffer_get_length(to_server);
        enum tf_mitm_status st = tf_mitm_upstream_connected(f->mitm, f->to_client, to_server);
        flow_sink_added(&f->client, before);
        flow_mitm_status(f, st);
    }
    if (f->server.shut_pending)
        flow_shutdown_leg(&f->server);
    /* Tunnel bytes that came in the same read as the CONNECT head. */
    if (opened && !f->ending && evbuffer_get_length(bufferevent_get_input(f->client.bev)) > 0)
        flow_read_cb(f->client.bev, &f->client);
    if (flow_relay_eligible(f)) {
        bool closed;
        flow_relay_begin(f, &closed);
    }
}

static void
flow_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct tf_leg *leg = arg;
    struct tf_flow *f = leg->flow;
    (void)bev;
    tf_worker_note_work();

    if (what & BEV_EVENT_CONNECTED) {
        flow_connected(f);
        return;
    }
    if (f->lingering) {
        if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
            leg->eof = true;
            flow_leg_reading(leg, false);
            if (f->client.eof && (f->server.eof || !flow_server_up(f)))
                flow_fault_try_finish(f);
        }
        return;
    }
    if (what & BEV_EVENT_EOF) {
        /* Bytes that arrived with the FIN have been read already; pass the FIN on. */
        flow_read_cb(leg->bev, leg);
        if ((f->state == TF_FLOW_REQUEST || f->state == TF_FLOW_HELLO) && !f->ending) {
            /* The client left before it named a server: there is no one to tell. */
            flow_close_with(f, leg->side, "fin", NULL);
            return;
        }
        if (f->mitm != NULL && !f->ending) {
            struct evbuffer *to_server = flow_sink(&f->client);
            size_t before = evbuffer_get_length(to_server);
            tf_mitm_eof(f->mitm, leg == &f->client, f->to_client, to_server);
            flow_sink_added(&f->client, before);
            flow_mitm_to_client(f);
        }
        struct evbuffer *rest = bufferevent_get_input(leg->bev);
        if (f->mitm == NULL && evbuffer_get_length(rest) > 0 && !f->ending && !leg->peer->shut)
            evbuffer_add_buffer(leg->shaper->on ? leg->shaper->held
                                               : bufferevent_get_output(leg->peer->bev),
                                rest);
        leg->eof = true;
        if (f->first_closer == NULL)
            f->first_closer = leg->side;
        flow_leg_reading(leg, false);
        flow_shutdown_leg(leg->peer);
        flow_maybe_finish(f);
        return;
    }
    if (what & BEV_EVENT_ERROR) {
        int err = EVUTIL_SOCKET_ERROR();
        char why[512];
        if (f->state == TF_FLOW_CONNECTING && leg == &f->server) {
            /* This address failed: the next one, if the name had more. */
            flow_set_text(&f->connect_error, "%s",
                     evutil_socket_error_to_string(err));
            flow_connect_next(f);
            return;
        }
        snprintf(why, sizeof(why), "%s", evutil_socket_error_to_string(err));
        flow_close_with(f, leg->side, err == ECONNRESET ? "reset" : "error", why);
    }
}

/* Closes fd with RST instead of FIN (SO_LINGER 0), mirroring a reset. */
static void
flow_reset_socket(evutil_socket_t fd)
{
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
    if (f->refused) {
        outcome = "failed";
        snprintf(summary, sizeof(summary), "%s", error ? error : "refused by the route");
    } else if (strcmp(how, "fault") == 0) {
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
        if (json_is_true(json_object_get(end, "server_spoke_first")) && who[0] == 's')
            snprintf(summary, sizeof(summary), "the server spoke first, and not TLS (%s)", kind);
        else
            snprintf(summary, sizeof(summary), "the %s did not speak TLS (%s)", who, kind);
    } else if (f->mitm != NULL && strcmp(how, "error") == 0 && strcmp(closed_by, "proxy") == 0 &&
               f->state != TF_FLOW_CONNECTING) {
        outcome = complete ? "aborted" : "failed";
        snprintf(summary, sizeof(summary), "%s", error ? error : "mitm failure");
    } else if (strcmp(closed_by, "proxy") == 0 && f->state == TF_FLOW_CONNECTING) {
        outcome = "failed";
        snprintf(summary, sizeof(summary), "could not reach the upstream %s: %s",
                 f->upstream ? f->upstream : "?", error);
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
    json_object_set_new_nocheck(end, "outcome", tf_json_string(outcome));
    json_object_set_new_nocheck(end, "stage", tf_json_string(stage));
    json_object_set_new_nocheck(end, "summary", tf_json_string(summary));
}

static const char *
flow_state_name(enum tf_flow_state st)
{
    switch (st) {
    case TF_FLOW_REQUEST: return "request";
    case TF_FLOW_HELLO: return "hello";
    case TF_FLOW_CONNECTING: return "connecting";
    case TF_FLOW_INSPECTING: return "inspecting";
    case TF_FLOW_RELAYING: return "relaying";
    default: return "closed";
    }
}

/*
 * The facts of the verdict (verdict.h): flow_end's own fields, what the
 * inspector and the mitm legs kept, and what only the flow knows.
 */
static json_t *
flow_facts(struct tf_flow *f, json_t *end, const char *how)
{
    json_t *facts = json_copy(end);
    if (facts == NULL)
        return NULL;
    json_object_set_new_nocheck(facts, "mode",
                                tf_json_name(f->lc->mode == TF_MODE_MITM ? "mitm" : "passthrough"));
    json_object_set_new_nocheck(facts, "state", tf_json_name(flow_state_name(f->state)));
    if (f->refused)
        json_object_set_new_nocheck(facts, "refused", json_true());
    if (strcmp(how, "fault") == 0)
        json_object_set_new_nocheck(facts, "fault_end",
                                    tf_json_name(f->end.end == TF_INJECT_RESET ? "reset" : "fin"));
    if (f->inj != NULL && tf_inject_damaged(f->inj))
        json_object_set_new_nocheck(facts, "damaged", json_true());
    if (f->client.bytes + f->server.bytes > 0)
        json_object_set_new_nocheck(facts, "last_read", tf_json_name(tf_dir_name(f->last_read)));
    json_t *timeouts = json_object();
    json_object_set_new_nocheck(timeouts, "connect_ms",
                                json_integer((json_int_t)f->cfg->connect_timeout_ms));
    json_object_set_new_nocheck(timeouts, "handshake_ms",
                                json_integer((json_int_t)f->cfg->handshake_timeout_ms));
    json_object_set_new_nocheck(timeouts, "idle_ms",
                                json_integer((json_int_t)f->cfg->idle_timeout_ms));
    json_object_set_new_nocheck(facts, "timeouts", timeouts);
    tf_inspect_facts(f->ins, facts);
    if (f->mitm != NULL)
        tf_mitm_facts(f->mitm, facts);
    return facts;
}

/* Adds the verdict (and the probe's result) to end and emits it; takes both references. */
static void
flow_emit_end(struct tf_flow *f, json_t *end, json_t *facts)
{
    if (facts != NULL) {
        if (f->probe != NULL)
            json_object_set_new_nocheck(facts, "probe", tf_probe_result(f->probe));
        json_t *verdict = tf_verdict_build(facts, time(NULL));
        /* One outcome: the verdict may know better (a client that left right after). */
        json_object_set_nocheck(end, "outcome", json_object_get(verdict, "outcome"));
        json_object_set_new_nocheck(end, "verdict", verdict);
        json_decref(facts);
    }
    tf_events_emit(f->w->events, f->id, "flow_end", NULL, end);
}

/* Last of a flow: out of the worker's list, and freed. */
static void
flow_free(struct tf_flow *f)
{
    struct tf_worker *w = f->w;
    tf_probe_free(f->probe);
    json_decref(f->pending_end);
    json_decref(f->pending_facts);
    free(f->end_reason);
    free(f->connect_error);
    free(f->upstream);
    free(f->target);
    TAILQ_REMOVE(&w->flows, f, link);
    w->live_flows--;
    atomic_fetch_sub(&flow_open, 1);
    tf_config_unref(f->cfg);
    free(f);
    if (w->draining && w->live_flows == 0)
        event_base_loopexit(w->base, NULL);
}

/* TF_FLOW_VERDICT: the probe answered, gave up, or tlsfault is stopping. */
static void
flow_finish_verdict(struct tf_flow *f)
{
    json_t *end = f->pending_end, *facts = f->pending_facts;
    f->pending_end = f->pending_facts = NULL;
    f->state = TF_FLOW_CLOSED;
    flow_emit_end(f, end, facts);
    flow_free(f);
}

static void
flow_probe_done_cb(void *arg)
{
    struct tf_flow *f = arg;
    if (f->state == TF_FLOW_VERDICT)
        flow_finish_verdict(f);
}

/*
 * The ServerHello said TLS 1.3: the chain will pass encrypted.  With probe
 * on, a side connection to the same upstream address and SNI fetches it
 * (probe.c); flow_end waits for it, bounded by its timeout.
 */
static void
flow_probe_maybe(struct tf_flow *f)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    f->probe_tried = true;
    if (!tf_probe_enabled(f->lc) || !flow_server_up(f))
        return;
    evutil_socket_t fd = flow_leg_fd(&f->server);
    if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &len) != 0)
        return;
    unsigned ms = TF_PROBE_TIMEOUT_MS < f->cfg->handshake_timeout_ms ? TF_PROBE_TIMEOUT_MS
                                                                     : f->cfg->handshake_timeout_ms;
    uint32_t mark = f->lc->mark != 0 ? f->lc->mark : f->cfg->mark;
    f->probe = tf_probe_start(f->w->base, (struct sockaddr *)&ss, len, tf_inspect_sni(f->ins),
                              mark, ms, flow_probe_done_cb, f);
}

/* closed_by and how are static words ("client", "fin", ...): they go out as shared names. */
static void
flow_close_with(struct tf_flow *f, const char *closed_by, const char *how, const char *error)
{
    struct timeval now;
    json_t *end, *facts = NULL;

    if (f->state == TF_FLOW_VERDICT) {
        /* Stopping: the probe is not waited for any longer ("pending"). */
        flow_finish_verdict(f);
        return;
    }
    if (f->state == TF_FLOW_CLOSED)
        return;
    if (!f->started_emitted)
        flow_emit_start(f); /* connect: the request never got far enough */
    if (f->dns_req != NULL) {
        /* Its callback runs now, with EVUTIL_EAI_CANCEL, and leaves the flow alone. */
        struct evdns_getaddrinfo_request *req = f->dns_req;
        f->dns_req = NULL;
        evdns_getaddrinfo_cancel(req);
    }
    flow_now(f, &now);
    end = json_object();
    json_object_set_new_nocheck(end, "listener", tf_json_string(f->lc->name));
    json_object_set_new_nocheck(end, "client", tf_json_string(f->client_addr));
    if (f->upstream != NULL)
        json_object_set_new_nocheck(end, "upstream", tf_json_string(f->upstream));
    flow_route_fields(f, end);
    json_object_set_new_nocheck(end, "duration_ms",
                                json_integer((json_int_t)flow_ms_between(&f->started, &now)));
    json_object_set_new_nocheck(end, "bytes",
                                tf_events_per_dir(f->client.bytes, f->server.bytes));
    json_object_set_new_nocheck(end, "closed_by", tf_json_name(closed_by));
    json_object_set_new_nocheck(end, "close", tf_json_name(how));
    if (error)
        json_object_set_new_nocheck(end, "error", tf_json_string(error));
    if (f->ins)
        tf_inspect_summarize(f->ins, end);
    if (f->inj)
        tf_inject_summarize(f->inj, end);
    if (f->mitm)
        tf_mitm_summarize(f->mitm, end);
    if (f->ins) {
        flow_verdict(f, end, closed_by, how, error);
        facts = flow_facts(f, end, how);
    }
    /* A probe still fetching the chain: flow_end waits for it (TF_FLOW_VERDICT). */
    bool wait_probe = facts != NULL && f->probe != NULL && !tf_probe_finished(f->probe);
    if (!wait_probe)
        flow_emit_end(f, end, facts);

    /* A reset on one side, or a failed upstream, is passed on as a reset. */
    if (strcmp(how, "reset") == 0 || (strcmp(closed_by, "proxy") == 0 && strcmp(how, "error") == 0)) {
        flow_reset_socket(flow_leg_fd(&f->client));
        if (flow_server_up(f))
            flow_reset_socket(flow_leg_fd(&f->server));
    }
    f->state = TF_FLOW_CLOSED;
    for (struct tf_leg *leg = &f->client; leg; leg = leg == &f->client ? &f->server : NULL) {
        if (leg->reader != NULL)
            event_free(leg->reader);
        leg->reader = NULL;
    }
    if (f->relay != NULL) {
        tf_relay_free(f->relay);
        f->relay = NULL;
        evutil_closesocket(f->client.fd);
        evutil_closesocket(f->server.fd);
    }
    if (f->client.bev)
        bufferevent_free(f->client.bev);
    tf_origdst_own_port_remove(f->own_port);
    if (f->server.bev)
        bufferevent_free(f->server.bev);
    if (f->timer)
        event_free(f->timer);
    if (f->route_ev)
        event_free(f->route_ev);
    flow_free_addrs(f);
    tf_inspect_free(f->ins);
    tf_inject_free(f->inj);
    tf_mitm_free(f->mitm);
    if (f->mid)
        evbuffer_free(f->mid);
    if (f->to_client)
        evbuffer_free(f->to_client);
    if (f->discard)
        evbuffer_free(f->discard);
    flow_shaper_free(f->client.shaper);
    flow_shaper_free(f->server.shaper);
    if (wait_probe) {
        /* Everything but the probe is gone; flow_probe_done_cb finishes the flow. */
        f->client.bev = f->server.bev = NULL;
        f->timer = f->route_ev = NULL;
        f->addrs = NULL;
        f->ins = NULL;
        f->inj = NULL;
        f->mitm = NULL;
        f->mid = f->to_client = f->discard = NULL;
        f->client.shaper = f->server.shaper = &flow_no_shaper;
        f->pending_end = end;
        f->pending_facts = facts;
        f->state = TF_FLOW_VERDICT;
        return;
    }
    flow_free(f);
}

void
tf_flow_sweep(struct tf_worker *w)
{
    struct timeval now;
    struct tf_flow *f;
    size_t freed = 0;
    event_base_gettimeofday_cached(w->base, &now);
    TAILQ_FOREACH(f, &w->flows, link)
    {
        tf_inspect_pack(f->ins);
        if (f->mitm != NULL && flow_ms_between(&f->last_activity, &now) >= TF_FLOW_SWEEP_MS &&
            tf_mitm_idle(f->mitm))
            freed++;
    }
    /*
     * Many buffers went back at once (a burst of connections gone quiet, or
     * gone: a wave of slow or hostile peers closed by their timeout), or
     * some did and the heap was not trimmed for a while: give the pages
     * between what stays to the system too, or the next wave starts from
     * the last one's high-water mark.  A trim walks the whole heap, so a
     * trickle pays for one every few seconds at most, and a steady load
     * (as many flows opening as closing) for none.
     */
    static _Thread_local time_t last_trim;
    static _Thread_local unsigned most_flows;
    if (w->live_flows > most_flows)
        most_flows = w->live_flows;
    bool closed_many = most_flows - w->live_flows >= FLOW_SWEEP_TRIM_FLOWS;
    if (closed_many || freed >= FLOW_SWEEP_TRIM_AT ||
        (freed > 0 && now.tv_sec - last_trim >= 5)) {
        malloc_trim(0);
        last_trim = now.tv_sec;
        most_flows = w->live_flows;
    }
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
