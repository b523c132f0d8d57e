/*
 * worker.c — one event loop on its own thread.
 *
 * Job: own a libevent base, an evdns resolver and this worker's listening
 * sockets; take messages from the main thread (new configuration, drain)
 * through a mailbox guarded by a lock that the data path never touches.
 * Drain: stop accepting, let live flows end by themselves, close what is
 * left when the grace period ends, then leave the loop.
 */
#include <event2/dns.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tlsfault/config.h"
#include "tlsfault/forge.h"
#include "tlsfault/mitm.h"
#include "tlsfault/flow.h"
#include "tlsfault/listener.h"
#include "tlsfault/log.h"
#include "tlsfault/worker.h"

static void
worker_grace_cb(evutil_socket_t fd, short what, void *arg)
{
    struct tf_worker *w = arg;
    (void)fd;
    (void)what;
    if (w->live_flows > 0)
        tf_log_info("worker %d: grace period over, closing %u flows", w->index, w->live_flows);
    tf_flow_close_all(w, "shutdown: grace period over");
    event_base_loopexit(w->base, NULL);
}

static void
worker_start_drain(struct tf_worker *w)
{
    if (w->draining)
        return;
    w->draining = true;
    /* Closing (not just disabling) the sockets makes new connections see a refusal. */
    for (size_t i = 0; i < w->n_listeners; i++) {
        if (w->listeners[i])
            evconnlistener_free(w->listeners[i]);
        w->listeners[i] = NULL;
    }
    if (w->live_flows == 0) {
        event_base_loopexit(w->base, NULL);
        return;
    }
    unsigned ms = w->cfg->grace_ms;
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    w->grace_timer = evtimer_new(w->base, worker_grace_cb, w);
    evtimer_add(w->grace_timer, &tv);
}

/*
 * Makes the mitm material (leaf keys: tens of milliseconds) before the
 * first connection needs it.  A failure is only logged: flows then say why.
 */
static void
worker_prepare_tls(struct tf_worker *w)
{
    char err[256];
    for (size_t i = 0; i < w->cfg->n_listeners; i++) {
        if (w->cfg->listeners[i].mode != TF_MODE_MITM)
            continue;
        if (tf_worker_tls(w, w->cfg, err, sizeof(err)) == NULL)
            tf_log_warn("worker %d: mitm: %s", w->index, err);
        return;
    }
}

static void
worker_mail_cb(evutil_socket_t fd, short what, void *arg)
{
    struct tf_worker *w = arg;
    struct tf_config *cfg;
    bool drain;
    (void)fd;
    (void)what;

    pthread_mutex_lock(&w->mail_lock);
    cfg = w->mail_cfg;
    w->mail_cfg = NULL;
    drain = w->mail_drain;
    pthread_mutex_unlock(&w->mail_lock);

    if (cfg) {
        /* Live flows keep their own reference to the old snapshot. */
        tf_config_unref(w->cfg);
        w->cfg = cfg;
        worker_prepare_tls(w);
    }
    if (drain)
        worker_start_drain(w);
}

static void
worker_sweep_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tf_flow_sweep(arg);
}

bool
tf_worker_init(struct tf_worker *w, int index, struct tf_config *cfg, struct tf_events *events,
               const int *fds, char *err, size_t errlen)
{
    memset(w, 0, sizeof(*w));
    w->index = index;
    w->events = events;
    w->cfg = tf_config_ref(cfg);
    w->busy_poll_us = cfg->busy_poll_us;
    TAILQ_INIT(&w->flows);
    pthread_mutex_init(&w->mail_lock, NULL);
    /*
     * Precise timers: Linux's coarse monotonic clock ticks every few
     * milliseconds, which would stretch slice pauses and short delays.
     */
    struct event_config *ec = event_config_new();
    if (ec != NULL) {
        event_config_set_flag(ec, EVENT_BASE_FLAG_PRECISE_TIMER);
        w->base = event_base_new_with_config(ec);
        event_config_free(ec);
    }
    if (w->base == NULL) {
        snprintf(err, errlen, "worker %d: cannot create an event base", index);
        return false;
    }
    w->dns = evdns_base_new(w->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                         EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (w->dns == NULL) {
        /* No usable resolv.conf: host names in /etc/hosts and literals still work. */
        w->dns = evdns_base_new(w->base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (w->dns)
            evdns_base_load_hosts(w->dns, NULL);
    }
    if (w->dns == NULL) {
        snprintf(err, errlen, "worker %d: cannot create a DNS resolver", index);
        return false;
    }
    w->mail_event = event_new(w->base, -1, 0, worker_mail_cb, w);
    w->stage = evbuffer_new();
    w->n_listeners = cfg->n_listeners;
    w->listeners = calloc(cfg->n_listeners, sizeof(*w->listeners));
    if (w->mail_event == NULL || w->stage == NULL || w->listeners == NULL) {
        snprintf(err, errlen, "worker %d: out of memory", index);
        return false;
    }
    worker_prepare_tls(w);
    struct timeval every = { 0, TF_FLOW_SWEEP_MS * 1000 };
    w->sweep_timer = event_new(w->base, -1, EV_PERSIST, worker_sweep_cb, w);
    if (w->sweep_timer == NULL || evtimer_add(w->sweep_timer, &every) != 0) {
        snprintf(err, errlen, "worker %d: out of memory", index);
        return false;
    }
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        w->listeners[i] = tf_listener_attach(w, i, fds[i]);
        if (w->listeners[i] == NULL) {
            snprintf(err, errlen, "worker %d: cannot listen on %s", index,
                     cfg->listeners[i].listen);
            return false;
        }
    }
    return true;
}

_Thread_local uint64_t tf_worker_work;
_Thread_local bool tf_worker_polling;

static uint64_t
worker_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* True when the loop is over: no events left, an error, or told to stop. */
static bool
worker_loop_ended(struct tf_worker *w, int rc)
{
    return rc != 0 || event_base_got_exit(w->base) || event_base_got_break(w->base);
}

/*
 * busy_poll_us: the loop looks for ready sockets without sleeping until
 * that long has passed with nothing to do, and only then sleeps in
 * epoll_wait.  A worker that sleeps has to be woken by the sender's CPU
 * for every chunk that arrives; in a VM each of those wake-ups costs the
 * sender an exit to the hypervisor, which on a core shared by client and
 * server is the largest cost of a relayed transfer.  The price is a core
 * kept busy while traffic flows, so it is for a proxy with a core of its
 * own (HAProxy's busy-polling is the same idea).
 */
static void
worker_busy_loop(struct tf_worker *w)
{
    uint64_t idle_since = worker_now_us();
    tf_worker_polling = true;
    for (;;) {
        uint64_t work = tf_worker_work;
        if (worker_loop_ended(w, event_base_loop(w->base, EVLOOP_NONBLOCK)))
            return;
        uint64_t now = worker_now_us();
        if (tf_worker_work != work) {
            idle_since = now;
        } else if (now - idle_since >= (uint64_t)w->busy_poll_us) {
            if (worker_loop_ended(w, event_base_loop(w->base, EVLOOP_ONCE)))
                return;
            idle_since = worker_now_us();
        }
    }
}

static void *
worker_main(void *arg)
{
    struct tf_worker *w = arg;
    if (w->busy_poll_us > 0)
        worker_busy_loop(w);
    else
        event_base_dispatch(w->base);
    if (w->on_exit)
        w->on_exit(w, w->on_exit_arg);
    return NULL;
}

bool
tf_worker_start(struct tf_worker *w)
{
    return pthread_create(&w->thread, NULL, worker_main, w) == 0;
}

void
tf_worker_post_config(struct tf_worker *w, struct tf_config *cfg)
{
    pthread_mutex_lock(&w->mail_lock);
    if (w->mail_cfg)
        tf_config_unref(w->mail_cfg);
    w->mail_cfg = tf_config_ref(cfg);
    pthread_mutex_unlock(&w->mail_lock);
    event_active(w->mail_event, EV_READ, 0);
}

void
tf_worker_post_drain(struct tf_worker *w)
{
    pthread_mutex_lock(&w->mail_lock);
    w->mail_drain = true;
    pthread_mutex_unlock(&w->mail_lock);
    event_active(w->mail_event, EV_READ, 0);
}

static void
worker_tls_free(struct tf_worker_tls *t)
{
    for (size_t i = 0; t->ctx != NULL && i < t->cfg->n_listeners; i++)
        tf_mitm_ctx_free(t->ctx[i]);
    free(t->ctx);
    tf_forge_free(t->forge);
    tf_config_unref(t->cfg);
    free(t);
}

struct tf_worker_tls *
tf_worker_tls(struct tf_worker *w, struct tf_config *cfg, char *err, size_t errlen)
{
    /*
     * Snapshots made by the control API differ from their base only in
     * their rules: they share its listeners and CA, so its material too.
     */
    for (struct tf_worker_tls *t = w->tls; t != NULL; t = t->next)
        if (tf_config_base(t->cfg) == tf_config_base(cfg))
            return t;
    struct tf_worker_tls *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    t->cfg = tf_config_ref(cfg);
    t->ctx = calloc(cfg->n_listeners, sizeof(*t->ctx));
    if (t->ctx == NULL) {
        snprintf(err, errlen, "out of memory");
        worker_tls_free(t);
        return NULL;
    }
    t->forge = tf_forge_new(cfg->lab_ca, cfg->forge_cache ? cfg->forge_cache : 1024,
                            (enum tf_leaf_keys)cfg->leaf_keys, err, errlen);
    if (t->forge == NULL) {
        worker_tls_free(t);
        return NULL;
    }
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        if (cfg->listeners[i].mode != TF_MODE_MITM)
            continue;
        t->ctx[i] = tf_mitm_ctx_new(cfg, i, err, errlen);
        if (t->ctx[i] == NULL) {
            worker_tls_free(t);
            return NULL;
        }
    }
    t->next = w->tls;
    w->tls = t;
    return t;
}

void
tf_worker_release(struct tf_worker *w)
{
    tf_flow_close_all(w, "shutdown");
    while (w->tls != NULL) {
        struct tf_worker_tls *t = w->tls;
        w->tls = t->next;
        worker_tls_free(t);
    }
    for (size_t i = 0; i < w->n_listeners; i++)
        if (w->listeners[i])
            evconnlistener_free(w->listeners[i]);
    free(w->listeners);
    if (w->grace_timer)
        event_free(w->grace_timer);
    if (w->sweep_timer)
        event_free(w->sweep_timer);
    if (w->mail_event)
        event_free(w->mail_event);
    if (w->stage)
        evbuffer_free(w->stage);
    if (w->dns)
        evdns_base_free(w->dns, 0);
    if (w->base)
        event_base_free(w->base);
    tf_config_unref(w->mail_cfg);
    tf_config_unref(w->cfg);
    pthread_mutex_destroy(&w->mail_lock);
}
