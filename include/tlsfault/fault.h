/*
 * fault.h — the fault catalogue and the rules that apply it.
 *
 * The catalogue (tf_fault_catalogue) is one table: each entry names a
 * fault, its mode, its parameters with defaults and what the client will
 * see.  Configuration checking, the --fault command-line spec,
 * --list-faults and the runtime all read the same table, so a fault cannot
 * be documented one way and parsed another.
 *
 * A rule is a catalogue entry, its parsed arguments and a match.  Rules
 * live in the configuration snapshot, in the order written; every rule
 * that matches a flow applies to it, and where two act at the same point
 * the earlier rule acts first (a rewrite feeds the next rewrite; a rule
 * that ends the flow stops the later ones).  Counters (connections seen,
 * times fired) are atomics on the rule: the snapshot is otherwise
 * immutable and shared by all workers.
 */
#ifndef TLSFAULT_FAULT_H
#define TLSFAULT_FAULT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include <jansson.h>

enum tf_fault_id {
    /* network level, any mode */
    TF_FAULT_DELAY,
    TF_FAULT_BANDWIDTH,
    TF_FAULT_STALL,
    TF_FAULT_RESET,
    TF_FAULT_CLOSE,
    TF_FAULT_SLICE,
    /* passthrough, on the wire */
    TF_FAULT_DROP_SERVER_HELLO,
    TF_FAULT_RESET_AFTER_CLIENT_HELLO,
    TF_FAULT_CLOSE_AFTER_CLIENT_HELLO,
    TF_FAULT_ALERT,
    TF_FAULT_PLAINTEXT_RESPONSE,
    TF_FAULT_DOWNGRADE,
    TF_FAULT_STRIP_CIPHERS,
    TF_FAULT_STRIP_SNI,
    TF_FAULT_STRIP_ALPN,
    TF_FAULT_RECORD_VERSION_TOO_HIGH,
    TF_FAULT_STRIP_INTERMEDIATES,
    TF_FAULT_APPEND_BYTES,
    TF_FAULT_CORRUPT,
    TF_FAULT_TRUNCATE,
    TF_FAULT_DUPLICATE,
    TF_FAULT_FRAGMENT,
    /* mitm: the forged certificate and the client-facing leg's settings */
    TF_FAULT_CERT_EXPIRED,
    TF_FAULT_CERT_NOT_YET_VALID,
    TF_FAULT_CERT_WRONG_HOST,
    TF_FAULT_CERT_SELF_SIGNED,
    TF_FAULT_CERT_UNTRUSTED_ROOT,
    TF_FAULT_CERT_NO_INTERMEDIATE,
    TF_FAULT_CERT_WRONG_EKU,
    TF_FAULT_CERT_SHA1,
    TF_FAULT_CERT_WEAK_KEY,
    TF_FAULT_SERVER_VERSIONS,
    TF_FAULT_SERVER_CIPHERS,
    TF_FAULT_REQUIRE_SNI,
    TF_FAULT_COUNT
};

enum tf_fault_mode {
    TF_FAULT_MODE_NETWORK,     /* "any": acts on bytes, whatever they are */
    TF_FAULT_MODE_PASSTHROUGH, /* acts on clear TLS records and messages */
    TF_FAULT_MODE_MITM,        /* needs a listener with mode "mitm" */
};

/* Direction a fault watches or acts on. */
enum tf_fault_dir {
    TF_FAULT_DIR_C2S = 1,
    TF_FAULT_DIR_S2C = 2,
    TF_FAULT_DIR_BOTH = 3,
};

/* Who receives an injected answer or a close. */
enum tf_fault_peer {
    TF_FAULT_PEER_CLIENT = 1,
    TF_FAULT_PEER_SERVER = 2,
    TF_FAULT_PEER_BOTH = 3,
};

/*
 * Every parameter any fault takes, parsed.  A fault uses the few its
 * catalogue entry lists; the others keep their zero value.  Units are in
 * the names.  Byte strings are owned (free with tf_fault_rule_free).
 */
struct tf_fault_args {
    enum tf_fault_dir dir;    /* alert: never 0 once tf_fault_rule_complete has run */
    enum tf_fault_peer to;    /* reset/close: which sockets; alert: who gets it */
    uint64_t after_bytes;     /* network faults start after this many bytes of dir */
    int after;                /* handshake type that triggers (-1: fault's default) */
    unsigned record;          /* 1-based record index in dir; 0: the fault's default */
    unsigned ms;              /* delay */
    unsigned jitter_ms;       /* delay: uniform 0..jitter_ms added */
    uint64_t rate;            /* bandwidth, bytes per second */
    unsigned size;            /* slice / fragment piece size in bytes */
    unsigned pause_ms;        /* slice: pause between pieces */
    uint8_t level;            /* alert: 1 warning, 2 fatal */
    uint8_t description;      /* alert description code */
    uint16_t version;         /* downgrade: highest offered; record-version-too-high: value;
                               * server-versions: highest accepted */
    uint16_t min_version;     /* server-versions: lowest accepted */
    bool remove_extension;    /* downgrade: drop supported_versions instead of editing it */
    char *pattern;            /* strip-ciphers: fnmatch globs separated by ':' or ',' */
    char *fields;             /* record-version-too-high: "record", "hello" or "both" */
    uint32_t keep_mask;       /* strip-intermediates: bit i keeps certificate i (0 = leaf) */
    uint8_t *bytes;           /* append-bytes / plaintext-response payload */
    size_t bytes_len;
    unsigned status;          /* plaintext-response HTTP status */
    long offset;              /* corrupt: offset in the record body (<0: from the end) */
    uint8_t xor_mask;         /* corrupt */
    unsigned keep;            /* truncate: bytes of the record kept (0: half) */
    bool then_close;          /* truncate: FIN after the cut record */
    unsigned times;           /* duplicate: extra copies */
    uint64_t seconds;         /* cert-expired / cert-not-yet-valid: how far off */
    char *host;               /* cert-wrong-host: the name the certificate is for */
    char *ciphers;            /* server-ciphers: OpenSSL cipher string (TLS 1.2 and below) */
    char *ciphersuites;       /* server-ciphers: OpenSSL ciphersuites string (TLS 1.3) */
};

/* Which flows a rule applies to; zero/NULL fields match everything. */
struct tf_fault_match {
    char *listener;               /* listener name */
    struct sockaddr_storage net;  /* client CIDR: network address ... */
    unsigned prefix;              /* ... and prefix length; family 0: any client */
    char *sni;                    /* fnmatch glob, case-insensitive; "absent": no SNI */
    uint64_t nth;                 /* only the nth matching connection (1-based) */
    uint64_t every;               /* every Nth matching connection */
    uint64_t first;               /* the first N matching connections */
    double probability;           /* 0..1; default 1 */
    uint64_t seed;                /* probability draws are a function of seed and ordinal */
    uint64_t times;               /* fires on at most this many flows in total; 0: no limit */
    struct sockaddr_storage dest; /* original destination CIDR (redirect/tproxy/connect) ... */
    unsigned dest_prefix;         /* ... family 0: any */
    uint16_t dest_port;           /* 0: any */
};

struct tf_fault_def;

/*
 * A rule is immutable once complete, but for its counters; it is
 * reference-counted so that snapshots made by the control API share the
 * rules they did not change (with their counters).  A change to a rule
 * makes a new rule (see tf_fault_rule_rebuild): flows that started with
 * the old one keep it.
 */
struct tf_fault_rule {
    char *name;
    const struct tf_fault_def *def;
    struct tf_fault_args args;
    struct tf_fault_match match;
    int line;                 /* where the rule starts in the file; 0 on the command line */
    bool enabled;             /* false: never matches (control API: disable) */
    atomic_uint refs;
    atomic_uint_fast64_t seen;   /* flows that met every match criterion but chance */
    atomic_uint_fast64_t fired;  /* flows it fired on */
    /*
     * Every key set by tf_fault_rule_set / _set_match, as written ("ms",
     * "match.sni"), last value only, in the order first set: what a
     * rebuild replays and what the control API shows.
     */
    char **given_keys;
    char **given_values;
    size_t n_given;
};

/* ------------------------------------------------------------ catalogue */

enum tf_fault_param_type {
    TF_PARAM_DIR,         /* c2s | s2c | both */
    TF_PARAM_PEER,        /* client | server | both */
    TF_PARAM_UINT,        /* decimal, within [min, max] */
    TF_PARAM_UINT64,
    TF_PARAM_INT,         /* signed long, within [min, max] */
    TF_PARAM_BOOL,        /* true | false | yes | no | 1 | 0 */
    TF_PARAM_STRING,
    TF_PARAM_BYTES,       /* text, or "hex:0a0b..." */
    TF_PARAM_VERSION,     /* "TLS1.2", "tls1.3", "1.2", "0x0303" ... */
    TF_PARAM_ALERT,       /* an RFC alert description name or number */
    TF_PARAM_ALERT_LEVEL, /* warning | fatal */
    TF_PARAM_HS_TYPE,     /* a handshake message name (client_hello ...) */
    TF_PARAM_POSITIONS,   /* "leaf" or a list like "0,2": certificate positions kept */
};

struct tf_fault_param {
    const char *name;
    enum tf_fault_param_type type;
    const char *def;      /* default, in the same syntax a user writes; a DIR param
                           * whose default is "auto" also takes "auto", resolved by
                           * tf_fault_rule_complete */
    long long min, max;   /* for numbers */
    size_t offset;        /* into struct tf_fault_args */
    size_t size;          /* sizeof the field at offset (TF_PARAM_UINT: 1, 2, 4 or 8) */
    const char *help;
};

#define TF_FAULT_MAX_PARAMS 8

struct tf_fault_def {
    enum tf_fault_id id;
    const char *name;
    enum tf_fault_mode mode;
    bool available;                     /* false: known, but needs a later version */
    const char *help;                   /* what it does, one line */
    const char *client_sees;            /* what the client will report, one line */
    struct tf_fault_param params[TF_FAULT_MAX_PARAMS];
    size_t n_params;
};

extern const struct tf_fault_def tf_fault_catalogue[];
extern const size_t tf_fault_catalogue_len;

/* The entry called name (exact), or NULL. */
const struct tf_fault_def *tf_fault_find(const char *name);

/* "delay, bandwidth, ..." : every available name, for error messages. */
void tf_fault_names(char *buf, size_t len);

/* "network", "passthrough", "mitm" */
const char *tf_fault_mode_name(enum tf_fault_mode mode);

/*
 * Reads a TLS version as fault parameters write it: "TLS1.2", "tls1.3",
 * "TLS 1.2", "1.2", "SSL3.0" or four hex digits ("0x0303").  *out is
 * written only on success.  The configuration's min_version/max_version
 * use it too, so that versions are spelt the same everywhere.
 */
bool tf_fault_parse_version(const char *text, uint16_t *out);

/* "TLS1.2" for 0x0303 (SSL3.0 to TLS1.3), else "0x0305" written into buf. */
const char *tf_fault_version_name(uint16_t version, char *buf, size_t len);

/* Longest name of a rule or a listener. */
#define TF_NAME_MAX 64

/*
 * Whether a rule's or a listener's name is plain (1 to TF_NAME_MAX
 * letters, digits, ".", "_" or "-"): names show up in logs, events and
 * control URLs.
 */
bool tf_fault_name_valid(const char *name);

/*
 * A number as a parameter's text, the same from a file and from the
 * control API: a whole number without a fraction ("1000.0" is 1000, which
 * an integer parameter takes), else the shortest text that reads back as
 * the same double (0.1, not 0.1000...01).  Returns buf.
 */
const char *tf_fault_number_text(double v, char *buf, size_t len);

/* Prints the catalogue as --list-faults shows it. */
void tf_fault_print_catalogue(FILE *out);

/* ------------------------------------------------------------ rules */

/*
 * A new rule for def with every parameter at its default and a match that
 * takes every flow.  NULL when memory is short.
 */
struct tf_fault_rule *tf_fault_rule_new(const struct tf_fault_def *def, const char *name);

/* Takes a reference; returns rule.  NULL is harmless. */
struct tf_fault_rule *tf_fault_rule_ref(struct tf_fault_rule *rule);

/* Drops a reference; the last one frees the rule.  NULL is harmless. */
void tf_fault_rule_unref(struct tf_fault_rule *rule);

/* The same as tf_fault_rule_unref: drops the caller's reference. */
void tf_fault_rule_free(struct tf_fault_rule *rule);

/*
 * Sets one parameter or match key of rule from its text form.  With
 * match_key_allowed, the match keys (listener, client, sni, nth, every,
 * first, probability, seed, times, dest, dest_port) and "name" are accepted
 * too, which is what the command-line spec needs; a fault parameter wins over a match key
 * of the same name (duplicate's "times"), and "match.KEY" always means the
 * match key.  On failure returns false, leaves the rule as it was and err
 * says what is wrong, listing the valid keys when the key is unknown.
 */
bool tf_fault_rule_set(struct tf_fault_rule *rule, const char *key, const char *value,
                       bool match_key_allowed, char *err, size_t errlen);

/* Same as tf_fault_rule_set for a match key only ("sni", "client", ...). */
bool tf_fault_rule_set_match(struct tf_fault_rule *rule, const char *key, const char *value,
                             char *err, size_t errlen);

/*
 * Finishes a rule once all its keys are set: fills the defaults that
 * depend on other parameters (alert's dir "auto" becomes the usual sender
 * of its after message).  tf_fault_rule_parse_spec and the configuration
 * loader call it; whoever builds a rule key by key calls it last.
 */
void tf_fault_rule_complete(struct tf_fault_rule *rule);

/*
 * Checks what no single parameter can: that the parameters of a complete
 * rule agree with each other (server-versions: min not above max).
 * Returns false with the reason in err.  tf_fault_rule_parse_spec and the
 * configuration loader call it after tf_fault_rule_complete.
 */
bool tf_fault_rule_check(const struct tf_fault_rule *rule, char *err, size_t errlen);

/* The side that usually sends a handshake message of this type (client_hello: c2s). */
enum tf_fault_dir tf_fault_usual_sender(int hs_type);

/*
 * Parses a command-line spec "NAME" or "NAME:key=value,key=value".  The
 * rule is called "name" if the spec says so, else default_name.  Values
 * run to the next ',' ("\," is a comma inside a value; a piece without
 * '=' continues the value before it, so "keep=0,2" works).  Returns NULL
 * with the reason in err; the rule returned is complete.
 */
struct tf_fault_rule *tf_fault_rule_parse_spec(const char *spec, const char *default_name,
                                               char *err, size_t errlen);

/* ------------------------------------------------------------ JSON (control API) */

/*
 * The catalogue as JSON: an array of {name, mode, available, help,
 * client_sees, params: [{name, type, default, min?, max?, help}]}.
 * Returns a new reference.
 */
json_t *tf_fault_catalogue_json(void);

/*
 * A rule as JSON: {name, fault, mode, enabled, params: {every parameter:
 * the value given, else the default}, match: {the keys given}, seen,
 * fired, line?}.  Values are JSON numbers and booleans where the parameter
 * is one.  Returns a new reference.
 */
json_t *tf_fault_rule_json(const struct tf_fault_rule *rule);

/*
 * A complete rule from a JSON object with the keys of a rule in the
 * configuration file: name (required), fault (required), enabled,
 * params {...}, match {...}; parameters may also sit beside "fault", as in
 * the file.  Values are strings, numbers or booleans, read as the file's
 * would be.  Returns NULL with the reason in err; when the reason is an
 * unknown name (fault, parameter, match key, top-level key) *valid (when
 * not NULL) receives a new array of the valid names.
 */
struct tf_fault_rule *tf_fault_rule_from_json(const json_t *obj, char *err, size_t errlen,
                                              json_t **valid);

/*
 * A new rule like old (same fault and name) with changes: the keys old was
 * given are replayed, then params (parameter -> value; JSON null puts the
 * default back) and match (match key -> value; null removes the key), so
 * that a defaulted parameter (alert's dir "auto") is worked out again.
 * enabled: -1 keeps old's, 0 or 1 sets it.  The counters carry over unless
 * reset.  params and match may be NULL.  Returns NULL with the reason in
 * err and, for an unknown name, *valid as in tf_fault_rule_from_json.
 */
struct tf_fault_rule *tf_fault_rule_rebuild(const struct tf_fault_rule *old,
                                            const json_t *params, const json_t *match,
                                            int enabled, bool reset, char *err, size_t errlen,
                                            json_t **valid);

/* ------------------------------------------------------------ matching */

/* What is known of a flow when it starts. */
struct tf_fault_flow_info {
    const char *listener;
    const struct sockaddr *client;
    const struct sockaddr *dest;  /* the original destination when known, else NULL */
};

/*
 * Decides whether rule applies to a flow (never when it is disabled).  The
 * caller asks once when the flow starts (has_sni false, sni_known false)
 * and, for rules that match on SNI, once more when the ClientHello has been read (sni_known true;
 * sni NULL when the hello had none).  Returns true when the rule fires on
 * this flow; this takes a place in its counters (nth/every/first/times and
 * the probability draw).
 */
enum tf_fault_decision {
    TF_FAULT_NO,
    TF_FAULT_YES,
    TF_FAULT_LATER, /* depends on the SNI: ask again with it */
};
enum tf_fault_decision tf_fault_rule_decide(struct tf_fault_rule *rule,
                                            const struct tf_fault_flow_info *flow,
                                            bool sni_known, const char *sni);

#endif
