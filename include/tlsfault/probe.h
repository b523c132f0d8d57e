/*
 * probe.h — a side connection that fetches the server's certificate chain
 * when TLS 1.3 hides it from a passthrough flow.
 *
 * In TLS 1.3 everything after the ServerHello is encrypted (RFC 8446 §2),
 * so a bystander never sees the chain the client judged.  A probe opens
 * its own TLS connection to the same upstream address with the same SNI,
 * takes the server's Certificate message from OpenSSL's message callback
 * (decoded as decode.h does), finishes or abandons the handshake, and
 * reports {status, chain, version, error}.  It never blocks the loop: a
 * non-blocking socket in a bufferevent, the TLS on memory BIOs, and a
 * timer that bounds the whole exchange.
 *
 * Chains are cached per upstream address and SNI for a minute (shared by
 * all workers), so a client that retries, or a test suite that runs a
 * hundred connections, costs the server one extra handshake a minute;
 * failures and timeouts are not cached.
 */
#ifndef TLSFAULT_PROBE_H
#define TLSFAULT_PROBE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct event_base;
struct tf_listener_conf;
struct tf_probe;

#define TF_PROBE_TIMEOUT_MS 3000
#define TF_PROBE_CACHE_SECONDS 60

/*
 * Whether flows of this listener probe.  Until the configuration has a
 * per-listener `probe = true`, the process-wide default decides: off,
 * unless tf_probe_set_default(true) was called or the environment has
 * TLSFAULT_PROBE=1.
 */
bool tf_probe_enabled(const struct tf_listener_conf *lc);
void tf_probe_set_default(bool on);

/* Called once the probe has its result (not called when it was cached at start). */
typedef void (*tf_probe_done_fn)(void *arg);

/*
 * Starts probing addr (len bytes) with sni (NULL: none) on base; the socket
 * gets SO_MARK mark when non-zero.  With a fresh cached result for addr and
 * sni the probe is finished at once (status "cached") and done is never
 * called.  Returns NULL only when memory is short.  Free with
 * tf_probe_free(), which cancels a probe still running.
 */
struct tf_probe *tf_probe_start(struct event_base *base, const struct sockaddr *addr, socklen_t len,
                                const char *sni, uint32_t mark, unsigned timeout_ms,
                                tf_probe_done_fn done, void *arg)
    __attribute__((warn_unused_result));
void tf_probe_free(struct tf_probe *p);

bool tf_probe_finished(const struct tf_probe *p);

/*
 * The result, a new object: status "done" (chain fetched now), "cached",
 * "failed" (with error), "timeout", or "pending" (still running); chain
 * (decode.h's Certificate chain) and version when the server sent them;
 * target "addr|sni".
 */
json_t *tf_probe_result(const struct tf_probe *p) __attribute__((warn_unused_result));

/* Empties the cache (tests). */
void tf_probe_cache_clear(void);

#endif
