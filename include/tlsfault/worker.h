/*
 * worker.h — one event loop on its own thread.
 *
 * Each worker owns an event_base, an evdns resolver, its own listening
 * sockets (SO_REUSEPORT: the kernel spreads new connections over workers)
 * and the flows it accepted.  Nothing on the data path is shared between
 * workers; the main thread talks to them only through a small mailbox
 * (new configuration snapshot, drain) and an event it activates.
 */
#ifndef TLSFAULT_WORKER_H
#define TLSFAULT_WORKER_H

#include <event2/event.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

struct tf_config;
struct tf_events;
struct tf_flow;
struct evdns_base;
struct evconnlistener;
struct tf_forge;
struct tf_mitm_ctx;

/*
 * mitm material made for one snapshot: the worker's forge (keys, cache)
 * and the SSL contexts of each listener.  Kept until the worker ends,
 * because flows started under an older snapshot still use theirs.
 */
struct tf_worker_tls {
    struct tf_config *cfg;          /* holds a reference */
    struct tf_forge *forge;
    struct tf_mitm_ctx **ctx;       /* per listener; NULL for passthrough ones */
    struct tf_worker_tls *next;
};

struct tf_worker {
    int index;
    pthread_t thread;
    struct event_base *base;
    struct evdns_base *dns;
    struct tf_events *events;       /* shared sinks, not owned */
    struct tf_config *cfg;          /* the snapshot new flows take; worker holds a reference */
    struct evconnlistener **listeners; /* one per cfg->listeners entry, same order */
    size_t n_listeners;
    TAILQ_HEAD(, tf_flow) flows;
    struct tf_worker_tls *tls;      /* newest first */
    unsigned live_flows;
    int busy_poll_us;               /* from the first snapshot: see worker_busy_loop */
    bool draining;
    struct event *grace_timer;
    struct event *sweep_timer;      /* tf_flow_sweep, every TF_FLOW_SWEEP_MS */
    struct evbuffer *stage;         /* flow.c: mitm bytes on their way to a socket */

    /* Mailbox from the main thread; the lock is never taken on the data path. */
    pthread_mutex_t mail_lock;
    struct tf_config *mail_cfg;
    bool mail_drain;
    struct event *mail_event;

    /* Told when the worker's loop has ended (activated from this thread). */
    void (*on_exit)(struct tf_worker *w, void *arg);
    void *on_exit_arg;
};

/*
 * Work done on this thread's loop: the callbacks that move bytes or take
 * connections count here, so that a busy-polling worker knows whether its
 * last look found anything (libevent does not say).
 */
extern _Thread_local uint64_t tf_worker_work;
extern _Thread_local bool tf_worker_polling;

static inline void
tf_worker_note_work(void)
{
    tf_worker_work++;
}

/*
 * Prepares a worker with its own base and resolver and listening on the
 * given sockets (fds[i] for cfg->listeners[i]; the worker owns them from
 * now on).  cfg gets a reference.  Returns false with a reason in err.
 */
bool tf_worker_init(struct tf_worker *w, int index, struct tf_config *cfg,
                    struct tf_events *events, const int *fds, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Starts the thread running the loop. */
bool tf_worker_start(struct tf_worker *w);

/* From the main thread: new flows use cfg from now on (a reference is taken). */
void tf_worker_post_config(struct tf_worker *w, struct tf_config *cfg);

/* From the main thread: stop accepting, finish live flows within the grace period, exit. */
void tf_worker_post_drain(struct tf_worker *w);

/*
 * The mitm material for cfg (made on first use): its forge and the SSL
 * contexts of listener index.  NULL with the reason in err.
 */
struct tf_worker_tls *tf_worker_tls(struct tf_worker *w, struct tf_config *cfg, char *err,
                                    size_t errlen);

/* After the thread has exited: frees everything the worker owns. */
void tf_worker_release(struct tf_worker *w);

#endif
