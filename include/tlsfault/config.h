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

struct tf_lab_ca;

enum tf_route {
    TF_ROUTE_FORWARD = 1, /* every connection goes to the listener's upstream */
    TF_ROUTE_SNI,         /* to the ClientHello's server name, on upstream_port */
    TF_ROUTE_REDIRECT,    /* netfilter REDIRECT: the original destination (SO_ORIGINAL_DST) */
    TF_ROUTE_TPROXY,      /* netfilter TPROXY: the accepted socket's local address */
    TF_ROUTE_CONNECT,     /* explicit HTTP/1.1 CONNECT proxy */
};

enum tf_mode {
    TF_MODE_PASSTHROUGH = 1, /* bytes relayed as they are, handshakes decoded on the way */
    TF_MODE_MITM = 2,        /* TLS terminated on both legs with a forged certificate */
};

/* Upstream certificate verification in mitm mode. */
enum tf_verify {
    TF_VERIFY_NONE = 0,      /* lab default: any upstream certificate is taken */
    TF_VERIFY_SYSTEM,        /* the system trust store */
    TF_VERIFY_FILE,          /* the CA file in ca_file */
};

/*
 * TLS settings of one leg in mitm mode; NULL / 0: OpenSSL's defaults.
 * Versions are wire codes (0x0301 TLS 1.0 ... 0x0304 TLS 1.3).
 */
struct tf_tls_settings {
    uint16_t min_version;
    uint16_t max_version;
    char *ciphers;        /* TLS 1.2 and below, OpenSSL cipher string */
    char *ciphersuites;   /* TLS 1.3, OpenSSL ciphersuites string */
    char *groups;         /* "X25519:P-256" */
    char *sigalgs;        /* "ECDSA+SHA256:RSA-PSS+SHA256" */
    char *alpn;           /* "h2,http/1.1": offered (upstream) or accepted (client leg) */
    int security_level;   /* -1: default; 0 allows TLS 1.0/1.1, SHA-1, small keys */
    /* upstream leg only */
    enum tf_verify verify;
    char *ca_file;        /* with TF_VERIFY_FILE */
    bool forge_on_verify_failure; /* false: close the client; true: forge anyway, mark it */
};

struct tf_listener_conf {
    char *name;                   /* unique; "listenerN" when not given */
    char *listen;                 /* as written, for messages */
    struct sockaddr_storage addr; /* what listen means; port 0: the kernel picks */
    socklen_t addr_len;
    enum tf_route route;
    enum tf_mode mode;
    char *upstream_host;          /* forward: name or address literal, without brackets */
    uint16_t upstream_port;       /* forward; sni: the port names are connected on */
    char **allow;                 /* sni: host-name globs; connect: "host-glob:port" or
                                   * "host-glob" (any port); NULL: everything allowed */
    size_t n_allow;
    char *default_host;           /* sni: where a hello without SNI goes; NULL: close */
    uint16_t default_port;
    bool spoof_source;            /* tproxy: the upstream socket keeps the client's address */
    bool probe;                   /* TLS 1.3 passthrough: fetch the hidden chain for verdicts */
    uint32_t mark;                /* SO_MARK on upstream sockets (0: none); default from
                                   * the top-level `mark` */
    struct tf_tls_settings client_tls;   /* mitm: the leg towards the client */
    struct tf_tls_settings upstream_tls; /* mitm: the leg towards the server */
    int line;                     /* where the listener starts in the file; 0 in quick mode */
};

/*
 * The control API (control.c): off unless the file has a control group or
 * quick mode has --control.  Bound once at start-up; a reload may change
 * the token but not the address.
 */
struct tf_control_conf {
    bool enabled;
    char *listen;                 /* as written; "127.0.0.1:8474" by default */
    struct sockaddr_storage addr; /* port 0: the kernel picks (logged) */
    socklen_t addr_len;
    char *token_file;             /* NULL: no token */
    char *token;                  /* the file's first line; NULL: none required */
    bool allow_remote;            /* a non-loopback listen needs this and a token */
    int line;                     /* where the group starts; 0 in quick mode */
};

struct tf_config {
    atomic_uint refs;
    char *path;                   /* the file; NULL in quick mode */
    struct tf_listener_conf *listeners;
    size_t n_listeners;
    int workers;                  /* 0: one per core */
    int busy_poll_us;             /* 0: workers sleep in epoll_wait as soon as idle */
    char *log_text;               /* "stderr", "stdout", a path, or NULL for none */
    char *log_json;               /* a path, "-" for stdout, or NULL */
    char *log_level;              /* error, warn, info, debug */
    unsigned connect_timeout_ms;
    unsigned handshake_timeout_ms;
    unsigned idle_timeout_ms;
    unsigned grace_ms;            /* how long a drain waits for live flows */
    size_t handshake_message_max; /* larger handshake messages are skimmed, not decoded */
    size_t buffer_max;            /* per direction, before reading from the sender pauses */
    size_t max_connections;       /* open client connections at most; 0: from RLIMIT_NOFILE */
    struct tf_fault_rule **faults; /* in the order written; see fault.h */
    size_t n_faults;
    /* mitm: the lab CA (ca.dir, or ca.cert + ca.key [+ ca.chain, ca.untrusted_*]) */
    char *ca_dir;
    char *ca_cert;
    char *ca_key;
    char *ca_chain;
    char *ca_untrusted_cert;
    char *ca_untrusted_key;
    size_t forge_cache;           /* forged chains cached per worker */
    int leaf_keys;                /* enum tf_leaf_keys (forge.h): the forged leaves' key types */
    struct tf_lab_ca *lab_ca;     /* loaded when a listener is mitm; owned by the snapshot */
    char *log_keylog;             /* SSLKEYLOGFILE lines of both mitm legs; NULL: none */
    size_t content_max;           /* mitm: log decrypted data up to this many bytes per
                                   * direction and flow; 0: off */
    bool log_app_records;         /* an "encrypted" event for every application data record
                                   * after the handshake (default: counted in flow_end) */
    uint32_t mark;                /* SO_MARK for every upstream socket unless a listener says */
    struct tf_control_conf control;
    /*
     * Set in snapshots made by tf_config_with_rules: everything but the
     * rule list (faults, n_faults) belongs to this snapshot, which is held
     * by a reference.  NULL in snapshots read from a file or the command
     * line.
     */
    struct tf_config *shares;
};

/*
 * Reads and checks a configuration file.  On failure returns NULL and
 * writes every problem found into err, one "file:line: message" per line
 * (whole lines only; what fits).
 */
struct tf_config *tf_config_load(const char *path, char *err, size_t errlen);

/* The quick mode's command line. */
struct tf_quick {
    const char *listen;
    const char *upstream;
    const char *json;            /* may be NULL */
    const char *mode;            /* "passthrough" (NULL) or "mitm" */
    const char *ca_dir;          /* mitm: directory made by --ca-init */
    const char *keylog;          /* may be NULL */
    const char *const *faults;   /* --fault specs ("NAME[:k=v,...]") */
    size_t n_faults;
    const char *route;           /* --route: NULL is "forward" */
    const char *upstream_port;   /* --upstream-port as typed (sni); may be NULL */
    const char *mark;            /* --mark as typed ("2", "0x2"); may be NULL */
    bool spoof_source;           /* --spoof-source (tproxy) */
    const char *control;         /* --control ADDR (loopback only); NULL: no control API */
};

/*
 * One listener from the command line (route "forward" unless --route
 * says otherwise), with the file's defaults for everything else.  With
 * mode "mitm" the lab CA in ca_dir is loaded (into lab_ca) now.  On
 * failure returns NULL with every problem in err, one per line, each
 * naming its option ("--listen: ...", "--fault \"SPEC\": ...").
 */
struct tf_config *tf_config_quick_opts(const struct tf_quick *q, char *err, size_t errlen);

struct tf_config *tf_config_ref(struct tf_config *cfg);
void tf_config_unref(struct tf_config *cfg);

/*
 * A new snapshot equal to base but for its rules, which are rules[0..n)
 * in that order (each gets a reference; the caller keeps its own).  The
 * rules are judged as the file's are, against base's listeners: names
 * unique, match.listener naming a listener, mitm faults able to meet a
 * mitm listener, server-ciphers strings that OpenSSL takes.  Everything
 * else is shared with base (see shares), so the result is cheap and mitm
 * material made for base serves it too.  Returns NULL with the reason in
 * err; nothing is changed then.  base gets no reference of the caller's:
 * the new snapshot holds its own on base's owner.
 */
struct tf_config *tf_config_with_rules(struct tf_config *base, struct tf_fault_rule **rules,
                                       size_t n, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/*
 * The snapshot that owns cfg's listeners, CA and settings: cfg itself, or
 * the one it shares them with.  Snapshots with the same base differ only
 * in their rules.
 */
struct tf_config *tf_config_base(struct tf_config *cfg);

/* Whether addr is a loopback address (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104). */
bool tf_config_is_loopback(const struct sockaddr *addr);

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
