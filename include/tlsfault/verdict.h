/*
 * verdict.h — why a flow ended, in the words of the troubleshooting guides.
 *
 * A verdict is built from facts: a JSON object holding what the flow knew
 * when it ended (flow_end's own fields plus the extras tf_inspect_facts()
 * and tf_mitm_facts() add, and probe.h's result).  Building one is a pure
 * function of those facts and the time: no sockets, no OpenSSL, so unit
 * tests drive it with synthetic facts and the daemon with real ones.
 *
 * The causes form one table (tf_verdict_causes); docs/verdicts.md lists the
 * same rows, and the ids are stable: tools may match on them.
 */
#ifndef TLSFAULT_VERDICT_H
#define TLSFAULT_VERDICT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/* One row of the cause table. */
struct tf_verdict_cause {
    const char *id;        /* stable, e.g. "server_silent" */
    const char *who_fixes; /* the usual party: "client", "server", "network",
                              * "proxy-config"; NULL: nobody (handshake_ok).  A
                              * verdict may name another where the evidence says so */
    const char *meaning;   /* one line, as in docs/verdicts.md */
};

/* The whole table, in documentation order; *n receives its length. */
const struct tf_verdict_cause *tf_verdict_causes(size_t *n);

/* The row of id, or NULL. */
const struct tf_verdict_cause *tf_verdict_cause(const char *id);

/*
 * Builds flow_end's "verdict" from facts (see below) at time now:
 *   outcome, stage        facts' own (the flat flow_end fields, unchanged)
 *   cause, who_fixes      a row of the table (who_fixes may be null)
 *   summary               one sentence
 *   evidence              [{event: "alert", dir, description | encrypted ...},
 *                          {field: NAME, value: ...}, {finding: ID, ...}, ...]
 *   findings              certificate lint of the chain that was visible
 *                         (tf_verdict_lint), [] when none was
 *   rule, fault, underlying   only with cause "injected": the rule that did
 *                         it and what the client experienced (a cause id)
 *   chain_source          "handshake", "upstream" or "probe" when a chain was linted
 *   probe                 {status, ...} when a probe was asked for
 * Returns a new reference.
 *
 * facts: flow_end's fields (outcome, stage, closed_by, close, error,
 * handshake, version, cipher_suite, client_max_version, sni, alerts,
 * last_message, non_tls, faults, bytes, upstream, duration_ms), and
 *   mode        "passthrough" / "mitm"
 *   state       the flow's state at its end: "request", "hello",
 *               "connecting", "inspecting", "relaying"
 *   refused     true when the route refused the flow
 *   fault_end   "fin" / "reset": how the fault that ended the flow closed it
 *   damaged     true when a fault damaged records
 *   last_read   "c2s" / "s2c": whose bytes came last
 *   timeouts    {handshake_ms, idle_ms, connect_ms}
 *   client_hello, server_hello, server_chain, messages,
 *   c2s_protected_alert, non_tls_at      (tf_inspect_facts)
 *   mitm_facts                           (tf_mitm_facts)
 *   probe       {status: "done"|"cached"|"pending"|"timeout"|"failed",
 *                chain, version, error}  (probe.h)
 */
json_t *tf_verdict_build(const json_t *facts, time_t now) __attribute__((warn_unused_result));

/*
 * Lints a decoded chain (decode.h's "chain": leaf first) as a client
 * connecting to sni (NULL: the name is not checked) would at time now.
 * Returns a new array of findings {id, severity ("error"/"warning"),
 * certificate (index), subject, detail, source}; ids are the cert_* causes
 * plus "cert_expiring_soon" (within 30 days).  Trust is not judged: there
 * is no trust store here.
 */
json_t *tf_verdict_lint(const json_t *chain, const char *sni, time_t now, const char *source)
    __attribute__((warn_unused_result));

#endif
