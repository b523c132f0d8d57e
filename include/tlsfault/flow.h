/*
 * flow.h — one client↔server connection pair.
 *
 * A flow owns two legs (client side, server side), their bufferevents, the
 * passthrough inspector and one timer.  Bytes read on a leg are inspected
 * while the handshake lasts and moved (not copied) to the other leg; a leg
 * whose peer is slow stops reading until the peer drains (back-pressure).
 * A flow with no fault rule and no mitm gives both sockets to a relay
 * (relay.h) once the upstream is connected, and its bufferevents go.
 * Half-close is carried over (EOF on one side becomes shutdown(SHUT_WR) on
 * the other once its queue is flushed), as is a reset.  Every ending goes
 * through tf_flow_close(), which writes the flow_end event.
 */
#ifndef TLSFAULT_FLOW_H
#define TLSFAULT_FLOW_H

#include <stddef.h>
#include <sys/socket.h>

struct tf_worker;
struct tf_flow;

/* Starts a flow for an accepted socket (now owned by the flow) on listener index. */
void tf_flow_accept(struct tf_worker *w, size_t listener_index, int fd,
                    const struct sockaddr *peer, int peer_len);

/* Ends the flow: flow_end event, both sockets closed, memory freed. */
void tf_flow_close(struct tf_flow *flow, const char *reason);

/*
 * Every TF_FLOW_SWEEP_MS on every worker: flows past their handshakes pack
 * the lists their verdict needs (tf_inspect_pack), and relaying mitm flows
 * quiet for that long give back their TLS record buffers (32 KiB and more
 * per flow), which busy ones keep rather than allocate per record.
 */
#define TF_FLOW_SWEEP_MS 250
void tf_flow_sweep(struct tf_worker *w);

/* Ends every flow of w (grace period over). */
void tf_flow_close_all(struct tf_worker *w, const char *reason);

#endif
