/*
 * relay.h — the fast path: two connected sockets, bytes moved both ways
 * with no bufferevents in between.
 *
 * A flow that no fault rule touches and that does not terminate TLS hands
 * its two sockets to a relay once the upstream is connected.  The relay
 * reads into one scratch buffer per thread (large reads: a TLS record or
 * many at once), shows the bytes to the flow (byte counts, the inspector),
 * and writes them straight on.  Only bytes the destination could not take
 * yet are kept, in a buffer of exactly their size that is freed once they
 * are out; meanwhile the source is not read (back-pressure).  An idle relay
 * holds no buffer at all, and the poller is only asked to watch for
 * writability while something waits.
 *
 * Half-close is carried over (FIN from one side becomes shutdown(SHUT_WR)
 * on the other once what came before it is written); a reset or a socket
 * error ends the relay.  The relay never closes the sockets: the flow does.
 */
#ifndef TLSFAULT_RELAY_H
#define TLSFAULT_RELAY_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

struct tf_relay;

/* Sides: the direction of bytes read on a side is "from that side". */
#define TF_RELAY_CLIENT 0
#define TF_RELAY_SERVER 1

enum tf_relay_end {
    TF_RELAY_FIN,   /* both sides sent FIN and each was passed on */
    TF_RELAY_RESET, /* a socket was reset (ECONNRESET, EPIPE) */
    TF_RELAY_ERROR, /* another socket error */
};

struct tf_relay_ops {
    /* n > 0 bytes were read on side; they are written on after this returns. */
    void (*data)(void *arg, int side, const uint8_t *p, size_t n);
    /* side sent FIN (once per side). */
    void (*eof)(void *arg, int side);
    /*
     * The relay is over.  side is the socket that failed (RESET/ERROR), err
     * its errno; for FIN, side is -1.  The callee frees the relay (and
     * closes the sockets); the relay does not touch itself afterwards.
     * For FIN the last FIN is not passed on with shutdown(): the callee's
     * close() sends it, so it must close both sockets at once (and not
     * with SO_LINGER 0).
     */
    void (*end)(void *arg, enum tf_relay_end how, int side, int err);
};

/*
 * A relay between the client socket fd[0] and the server socket fd[1],
 * both connected and non-blocking; nothing happens before
 * tf_relay_start().  NULL when out of memory.
 */
struct tf_relay *tf_relay_new(struct event_base *base, const evutil_socket_t fd[2],
                              const struct tf_relay_ops *ops, void *arg)
    __attribute__((warn_unused_result));

/* Bytes to write to side before anything relayed later (carried over). 0 / -1 (memory). */
int tf_relay_queue(struct tf_relay *r, int side, const void *p, size_t n);

/*
 * Starts relaying: sends the queued bytes as far as the sockets take them
 * and watches both sockets.  Never ends the relay itself (a socket error
 * shows in the next callback), so the caller may go on using its flow.
 */
void tf_relay_start(struct tf_relay *r);

/* Stops watching and frees; the sockets stay open. */
void tf_relay_free(struct tf_relay *r);

#endif
