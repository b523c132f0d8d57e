/*
 * config.h — the configuration snapshot.
 *
 * A struct tf_config is built once (from a file or the quick command line)
 * and never changed afterwards: workers and flows hold references, and a
 * reload builds a new snapshot and swaps it in.  Flows keep the snapshot
 * they started with until they end.
 */
#ifndef TLSFAULT_CONFIG_H
#define TLSFAULT_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "tlsfault/fault.h"

enum tf_route {
    TF_ROUTE_FORWARD = 1, /* every connection goes to the listener's upstream */
};

enum tf_mode {
    TF_MODE_PASSTHROUGH = 1, /* bytes relayed as they are, handshakes decoded on the way */
};

struct tf_listener_conf {
    char *name;                   /* unique; "listenerN" when not given */
    char *listen;                 /* as written, for messages */
    struct sockaddr_storage addr; /* what listen means; port 0: the kernel picks */
    socklen_t addr_len;
    enum tf_route route;
    enum tf_mode mode;
    char *upstream_host;          /* name or address literal, without brackets */
    uint16_t upstream_port;
    int line;                     /* where the listener starts in the file; 0 in quick mode */
};

struct tf_config {
    atomic_uint refs;
    char *path;                   /* the file; NULL in quick mode */
    struct tf_listener_conf *listeners;
    size_t n_listeners;
    int workers;                  /* 0: one per core */
    char *log_text;               /* "stderr", "stdout", a path, or NULL for none */
    char *log_json;               /* a path, "-" for stdout, or NULL */
    char *log_level;              /* error, warn, info, debug */
    unsigned connect_timeout_ms;
    unsigned handshake_timeout_ms;
    unsigned idle_timeout_ms;
    unsigned grace_ms;            /* how long a drain waits for live flows */
    size_t handshake_message_max; /* larger handshake messages are skimmed, not decoded */
    size_t buffer_max;            /* per direction, before reading from the sender pauses */
    struct tf_fault_rule **faults; /* in the order written; see fault.h */
    size_t n_faults;
};

/*
 * Reads and checks a configuration file.  On failure returns NULL and
 * writes every problem found into err, one "file:line: message" per line
 * (whole lines only; what fits).
 */
struct tf_config *tf_config_load(const char *path, char *err, size_t errlen);

/*
 * The quick mode: one forward listener; json may be NULL; fault_specs are
 * --fault arguments ("NAME[:k=v,...]"), n_faults of them.
 */
struct tf_config *tf_config_quick(const char *listen, const char *upstream, const char *json,
                                  const char *const *fault_specs, size_t n_faults, char *err,
                                  size_t errlen);

struct tf_config *tf_config_ref(struct tf_config *cfg);
void tf_config_unref(struct tf_config *cfg);

/* The listener called name, or NULL. */
const struct tf_listener_conf *tf_config_listener(const struct tf_config *cfg, const char *name);

/*
 * Splits "host:port" or "[v6]:port" into its parts.  host and *port are
 * written only on success; otherwise err says what is wrong.  Port 0 is
 * accepted here; callers decide whether it means anything.
 */
bool tf_config_split_hostport(const char *s, char *host, size_t hostlen, uint16_t *port,
                              char *err, size_t errlen);

#endif
