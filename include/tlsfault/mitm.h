/*
 * mitm.h — TLS terminated on both legs of a flow.
 *
 * In mitm mode a flow's raw bytes do not go straight across: the client's
 * TLS ends in a server-side SSL of ours, and a client-side SSL of ours
 * talks to the upstream.  struct tf_mitm owns both SSL objects (on memory
 * BIOs, so the flow keeps its sockets, timers and wire faults) and moves
 * plaintext between them.  Order of a flow: the client's raw ClientHello
 * is read first (SNI, ALPN), the upstream handshake is made with the same
 * SNI and ALPN offer, the upstream's leaf is forged (with the mutation a
 * certificate fault asks for), and only then is the client answered.
 * Every handshake message and alert of both legs is reported through
 * OpenSSL's message callback as "handshake"/"alert" events with a "leg".
 */
#ifndef TLSFAULT_MITM_H
#define TLSFAULT_MITM_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "tlsfault/inspect.h"

struct evbuffer;
struct tf_config;
struct tf_listener_conf;
struct tf_forge;
struct tf_inject;
struct tf_mitm;
struct tf_mitm_ctx;

enum tf_mitm_status {
    TF_MITM_OK,       /* going on */
    TF_MITM_FAILED,   /* the flow must end (tf_mitm_error says why); what was written first
                       * (an alert for the client, say) must still be flushed */
};

/* SSL contexts shared by a worker's flows of one listener and snapshot. */
struct tf_mitm_ctx *tf_mitm_ctx_new(const struct tf_config *cfg, size_t listener_index,
                                    char *err, size_t errlen);
void tf_mitm_ctx_free(struct tf_mitm_ctx *ctx);

/* Writes one SSLKEYLOGFILE line (without newline). */
typedef void (*tf_mitm_keylog_fn)(void *arg, const char *line);

struct tf_mitm *tf_mitm_new(struct tf_mitm_ctx *ctx, struct tf_forge *forge,
                            struct tf_inspect *ins, struct tf_inject *inj,
                            tf_inspect_emit_fn emit, tf_mitm_keylog_fn keylog, void *arg);
void tf_mitm_free(struct tf_mitm *m);

/*
 * Raw bytes from the client (after the client leg's wire faults) and from
 * the server.  Both write raw TLS for the client into to_client and raw
 * TLS for the server into to_server.
 */
enum tf_mitm_status tf_mitm_from_client(struct tf_mitm *m, struct evbuffer *in,
                                        struct evbuffer *to_client, struct evbuffer *to_server);
enum tf_mitm_status tf_mitm_from_server(struct tf_mitm *m, struct evbuffer *in,
                                        struct evbuffer *to_client, struct evbuffer *to_server);

/* The upstream TCP connection is up (its handshake starts once the hello is known). */
enum tf_mitm_status tf_mitm_upstream_connected(struct tf_mitm *m, struct evbuffer *to_client,
                                               struct evbuffer *to_server);

/* A side sent FIN: the other gets close_notify. client: which side. */
void tf_mitm_eof(struct tf_mitm *m, bool client, struct evbuffer *to_client,
                 struct evbuffer *to_server);

/*
 * True when the server's next bytes go to the client as they are: the
 * client spoke no TLS, or the server speaks before the client's hello
 * (then nothing is terminated and both sides are relayed unchanged).
 */
bool tf_mitm_relays_server_raw(const struct tf_mitm *m);
bool tf_mitm_handshake_done(const struct tf_mitm *m);

/*
 * The flow is quiet: once relaying, both legs' record buffers are freed
 * (until needed again).  Returns true when it freed something.
 */
bool tf_mitm_idle(struct tf_mitm *m);
const char *tf_mitm_error(const struct tf_mitm *m);

/* What a verdict should add: "the upstream certificate failed verification (...); forged anyway" or "". */
void tf_mitm_describe(const struct tf_mitm *m, char *buf, size_t len);

/* Adds "mitm": {client leg and upstream leg: version, suite, alpn, verify, forged} to end. */
void tf_mitm_summarize(const struct tf_mitm *m, json_t *end);

/*
 * What the verdict (verdict.h) needs, as "mitm_facts" in facts: stage,
 * failed_leg ("upstream"/"client") and failed_at when a leg failed, error,
 * upstream_alert / client_alert / to_client_alert {level, description},
 * upstream_messages (count) and upstream_last (type), verify_on,
 * verify_code (X509_V_*) and verify_failed, forged, upstream_done,
 * client_done, upstream_chain (the real server's chain, decoded even in
 * TLS 1.3) and forged_chain (what the client was shown).
 */
void tf_mitm_facts(const struct tf_mitm *m, json_t *facts);

#endif
