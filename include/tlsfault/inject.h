/*
 * inject.h — the fault rules of one flow, at work on its bytes.
 *
 * A struct tf_inject holds the rules that apply to one flow (decided when
 * the flow starts, or when its ClientHello names the server for rules that
 * match on SNI) and does what they say to the bytes:
 *   - passthrough faults: it takes whole records out of a leg's input and
 *     writes what should travel on (unchanged, rewritten, re-framed,
 *     corrupted, withheld) to the peer, and what should answer the sender
 *     (an alert, an HTTP page) back to it, and tells the flow to end the
 *     connection where a fault says so;
 *   - network faults: it tells the flow how to pace each direction (delay,
 *     rate, pieces, stall) and when to reset or close.
 * It has no sockets and no timers: flow.c carries out what it asks.  When
 * no rule of a direction can still fire, tf_inject_wants() turns false and
 * the flow moves that direction's bytes without handing them here.
 */
#ifndef TLSFAULT_INJECT_H
#define TLSFAULT_INJECT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "tlsfault/fault.h"
#include "tlsfault/inspect.h"

struct evbuffer;
struct tf_config;
struct tf_inject;

/* How the flow must end, after what was written has been flushed. */
enum tf_inject_end {
    TF_INJECT_GO_ON = 0,
    TF_INJECT_FIN,      /* FIN to the peers named in `to`, then end the flow */
    TF_INJECT_RESET,    /* RST to the peers named in `to`, then end the flow */
};

struct tf_inject_result {
    enum tf_inject_end end;
    enum tf_fault_peer to;     /* who gets the FIN/RST (the other side is closed quietly) */
    const char *rule;          /* the rule that ended it, for flow_end */
};

/* Pacing of one direction, from the network faults that have started. */
struct tf_inject_shape {
    bool stall;                /* withhold (and drop) everything from now */
    unsigned delay_ms;
    unsigned jitter_ms;
    uint64_t rate;             /* bytes per second; 0: no limit */
    unsigned piece;            /* slice size; 0: no slicing */
    unsigned pause_ms;
};

/*
 * Decides which rules of cfg apply to a new flow (dest: its original
 * destination, NULL when the route has none).  Returns NULL when none
 * can (the common case: the flow then never calls here again) or when
 * memory is short (*oom set).  emit/arg receive the "fault" events.
 */
struct tf_inject *tf_inject_new(struct tf_config *cfg, const char *listener,
                                const struct sockaddr *client, const struct sockaddr *dest,
                                struct tf_inspect *ins,
                                tf_inspect_emit_fn emit, void *arg, bool *oom);
void tf_inject_free(struct tf_inject *inj);

/* True while some rule may still act on dir's bytes (records pass through here). */
bool tf_inject_wants(const struct tf_inject *inj, enum tf_dir dir);

/*
 * Takes what it can from in (whole records; all of it once the stream is
 * not TLS) and writes to fwd (towards the peer) and back (towards the
 * sender).  Bytes of a partial record stay in in.
 */
void tf_inject_feed(struct tf_inject *inj, enum tf_dir dir, struct evbuffer *in,
                    struct evbuffer *fwd, struct evbuffer *back, struct tf_inject_result *res);

/*
 * Network faults: called with the count of bytes of dir read so far;
 * fills shape for what has started and says whether a reset/close fires.
 */
void tf_inject_network(struct tf_inject *inj, enum tf_dir dir, uint64_t bytes,
                       struct tf_inject_shape *shape, struct tf_inject_result *res);

/*
 * mitm: decides the rules that wait for the SNI, if the ClientHello did not
 * pass through here (sni NULL: the hello had none).
 */
void tf_inject_hello(struct tf_inject *inj, const char *sni);

/* mitm: the i-th rule of mode mitm that applies to this flow, or NULL past the last. */
const struct tf_fault_rule *tf_inject_mitm_rule(const struct tf_inject *inj, size_t i);

/* mitm: reports that rule acted ("fault" event, flow_end's list). */
void tf_inject_mitm_fired(struct tf_inject *inj, const struct tf_fault_rule *rule,
                          const char *action);

/* Adds "faults": [{rule, fault, action}] to a flow_end object, if any fired. */
void tf_inject_summarize(const struct tf_inject *inj, json_t *end);

/* True once a fault damaged records (append-bytes, corrupt, truncate, duplicate). */
bool tf_inject_damaged(const struct tf_inject *inj);

/* "fault drop-server-hello (rule no-hello): withheld the ServerHello", or "" */
void tf_inject_describe(const struct tf_inject *inj, char *buf, size_t len);

#endif
