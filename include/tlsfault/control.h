/*
 * control.h — the HTTP control API (libevent evhttp, JSON via jansson).
 *
 * Test suites drive a running tlsfault through it, as they do Toxiproxy:
 * add, change and remove fault rules, watch live flows, read counters and
 * follow the event stream.  It runs on the main thread's event loop; the
 * workers reach it only through the event tap (events.h), which hands
 * every event over under the control API's own lock.
 *
 * A change of rules never touches a snapshot in use: the API builds a new
 * snapshot with tf_config_with_rules and asks main.c (hooks.apply) to post
 * it to every worker, exactly as SIGHUP does.  New flows use it at once;
 * flows in progress keep the rules they started with.
 */
#ifndef TLSFAULT_CONTROL_H
#define TLSFAULT_CONTROL_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct tf_config;
struct tf_control;
struct tf_events;

/* What the control API needs from main.c; every hook runs on the main thread. */
struct tf_control_hooks {
    /* The running snapshot (borrowed). */
    struct tf_config *(*current)(void *arg);
    /* Posts cfg to every worker and makes it the running one (takes a reference). */
    void (*apply)(void *arg, struct tf_config *cfg);
    /*
     * Reloads the configuration file, as SIGHUP does.  Returns an HTTP
     * status: 200 when reloaded, else 409 (nothing to reload, listeners
     * changed) or 422 (the file is bad) with the reason in err.
     */
    int (*reload)(void *arg, char *err, size_t errlen);
    void *arg;
};

/*
 * Starts the control API on base at the running snapshot's control.listen
 * and taps events (call it before any worker runs).  Logs "control API on
 * ADDR".  Returns NULL with the reason in err.
 */
struct tf_control *tf_control_new(struct event_base *base, struct tf_events *events,
                                  const struct tf_control_hooks *hooks, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/*
 * Ends every /events stream, closes the socket and removes the tap (call
 * it after the workers have stopped, before base is freed).  NULL is
 * harmless.
 */
void tf_control_free(struct tf_control *ctl);

/*
 * Tells the API that the rules were replaced from the file (SIGHUP or
 * POST /reload): the per-rule event counts start over.
 */
void tf_control_rules_reloaded(struct tf_control *ctl);

#endif
