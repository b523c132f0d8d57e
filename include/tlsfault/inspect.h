/*
 * inspect.h — what a passthrough flow learns from its two byte streams.
 *
 * A struct tf_inspect is fed the bytes of each direction as they pass and
 * turns them into events: handshake messages (decoded), ChangeCipherSpec,
 * alerts, encrypted records, non-TLS streams.  It knows when each direction
 * becomes unreadable (TLS 1.2: after that side's ChangeCipherSpec; TLS 1.3:
 * everything after the ServerHello, RFC 8446 §2) and when both handshakes
 * are over, after which it only skims record headers.  It has no sockets
 * and no event loop: unit tests and fuzzers drive it with byte vectors.
 */
#ifndef TLSFAULT_INSPECT_H
#define TLSFAULT_INSPECT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum tf_dir {
    TF_DIR_C2S = 0,
    TF_DIR_S2C = 1,
};

/* "c2s" / "s2c" */
const char *tf_dir_name(enum tf_dir dir);

/*
 * Receives each event: name ("handshake", "change_cipher_spec", "alert",
 * "encrypted", "non_tls"), direction, and its fields (ownership passes to
 * the callee).
 */
typedef void (*tf_inspect_emit_fn)(void *arg, const char *event, enum tf_dir dir,
                                   json_t *fields);

struct tf_inspect;

/* Returns a new inspector; free with tf_inspect_free(). */
struct tf_inspect *tf_inspect_new(size_t handshake_message_max, tf_inspect_emit_fn emit,
                                  void *arg) __attribute__((warn_unused_result));
void tf_inspect_free(struct tf_inspect *ins);

/* Feeds n bytes that travelled in dir. */
void tf_inspect_feed(struct tf_inspect *ins, enum tf_dir dir, const uint8_t *p, size_t n);

/*
 * Once both handshakes are over: the lists kept for the verdict (offered
 * versions, the message log) become shared JSON text (jsontext.h), a few
 * hundred bytes instead of kilobytes of objects.  The flow calls it at
 * once when its worker holds many connections, else the worker's sweep
 * does for the connections that stay: most end soon after their
 * handshake, and packing then unpacking for their verdict was a
 * twentieth of their CPU.  True when it packed something now.
 */
bool tf_inspect_pack(struct tf_inspect *ins);

/*
 * True once dir was found not to be TLS: the inspector ignores its further
 * bytes, so the flow may relay them without feeding it.
 */
bool tf_inspect_idle(const struct tf_inspect *ins, enum tf_dir dir);

/*
 * The negotiated version once a ServerHello was seen (0 before), and
 * whether a HelloRetryRequest was: with either being TLS 1.3, every
 * record of type handshake is in clear.
 */
uint16_t tf_inspect_version(const struct tf_inspect *ins);
bool tf_inspect_hello_retry(const struct tf_inspect *ins);

/* The first ClientHello: seen yet, its SNI (NULL if none), its ALPN list (borrowed; may be NULL). */
bool tf_inspect_client_hello_seen(const struct tf_inspect *ins);
/*
 * No ClientHello can come any more: the client's bytes are not TLS, its
 * first handshake message is of another type, or it cannot be reassembled
 * (claims more than the handshake cap, e.g. a 16 MiB header).  A mitm or
 * SNI-routed flow waiting for the hello stops waiting then, instead of
 * holding the client until the handshake timeout.
 */
bool tf_inspect_client_hello_lost(const struct tf_inspect *ins);
const char *tf_inspect_sni(const struct tf_inspect *ins);
json_t *tf_inspect_alpn(const struct tf_inspect *ins);

/*
 * Quiet: only "non_tls" events are emitted (mitm mode reports the
 * handshake from OpenSSL's side and keeps the inspector for its state).
 */
void tf_inspect_set_quiet(struct tf_inspect *ins, bool quiet);

/*
 * After the handshake, application data records are counted (flow_end's
 * records_after_handshake) rather than logged one by one; each=true logs
 * an "encrypted" event for every one of them too (log.app_records).
 */
void tf_inspect_set_app_records(struct tf_inspect *ins, bool each);

/* True once both handshakes are complete (as far as a bystander can tell). */
bool tf_inspect_handshake_done(const struct tf_inspect *ins);

/*
 * Adds what was learnt to a flow_end object: version, cipher_suite,
 * sni, alpn, hello_retry_request, resumed, handshake ("complete" or
 * "incomplete"), last_message {dir, type}, alerts [ {dir, level,
 * description, encrypted} ], non_tls {dir: kind}.
 */
void tf_inspect_summarize(const struct tf_inspect *ins, json_t *obj);

/*
 * What the verdict (verdict.h) needs beyond the summary, added to facts:
 *   client_hello   {seen, versions [offered], cipher_suites [offered], has_sni}
 *   server_hello   {version, cipher_suite, downgrade_sentinel ("tls12"/"tls11")}
 *                  (only once a real ServerHello was seen)
 *   server_chain   the server's Certificate chain as decoded (decode.h), when it
 *                  travelled in clear (TLS 1.2 full handshakes)
 *   messages       [{dir, type[, description | count]}]: every clear handshake
 *                  message, change_cipher_spec, alert and non_tls in order, and
 *                  runs of protected records as {type "encrypted", count};
 *                  capped at 64 entries, and not kept after the handshake
 *   c2s_protected_alert {length}: TLS 1.3, the client's only protected record
 *                  after the ServerHello was too small to be its Finished: an
 *                  encrypted alert (it does not count towards "complete")
 *   non_tls_at     {dir: {kind, offset}}: where a direction stopped being TLS
 *   data_records   {c2s, s2c}: once the handshake is over, the records since
 *                  that carry data (TLS 1.3: those too big to be an alert)
 */
void tf_inspect_facts(const struct tf_inspect *ins, json_t *facts);

/* True once a real ServerHello (not a HelloRetryRequest) was seen. */
bool tf_inspect_server_hello_seen(const struct tf_inspect *ins);

/* A short phrase for how far the handshake got, e.g. "after server_hello_done from server". */
void tf_inspect_stage(const struct tf_inspect *ins, char *buf, size_t len);

#endif
