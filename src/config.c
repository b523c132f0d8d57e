/*
 * config.c — the configuration file, read into an immutable snapshot.
 *
 * Job: turn a libconfig file (or the quick command line) into a struct
 * tf_config and say precisely what is wrong when it cannot: every problem,
 * not just the first, each as "file:line: message" so that one run of
 * "tlsfault -t" lists all that needs fixing.  Opening sockets, resolving
 * upstream names and swapping snapshots on SIGHUP are left to listener.c,
 * flow.c and main.c; this file only decides whether a file is acceptable
 * and what it means.
 *
 * The keys of each section live in a table (name, type, handler).  One
 * walker over those tables catches unknown keys, wrong types and keys
 * reserved for later versions, so the handlers only judge values.  A
 * listener's settings are first collected and then checked together,
 * because they depend on each other (the route decides which keys it
 * takes: upstream for "forward"; upstream_port, allow and default_upstream
 * for "sni"; allow for "connect"; spoof_source for "tproxy"; nothing but
 * mark for "redirect") and on the listeners before them (unique names,
 * addresses).  The top-level mark is every listener's default, filled in
 * once the whole file is read.
 *
 * Mode "mitm" brings three things judged here too: each leg's TLS
 * settings (client_tls, upstream_tls: OpenSSL is asked, on a scratch
 * context, whether it takes each cipher, group and sigalg string, so a
 * typo is a file:line error and not a failed handshake later), the lab CA
 * (ca.dir or ca.cert/ca.key, loaded with forge.c when a listener needs
 * it; relative paths are taken from the file's directory), and that every
 * mitm fault can meet a mitm listener.
 *
 * Fault rules are the exception to the tables: which parameters a rule
 * takes depends on its fault, so they come from fault.c's catalogue.
 * Each value is turned back into the text a --fault spec would hold and
 * handed to fault.c's setters, so that the file and the command line
 * share one parser and one set of messages.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <libconfig.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "tlsfault/config.h"
#include "tlsfault/forge.h"

#define CONFIG_LINE_MAX 1024       /* one formatted problem */
#define CONFIG_QUOTE_MAX 68        /* a value quoted in a problem: 64 bytes and "..." */
#define CONFIG_HOST_MAX 1025       /* NI_MAXHOST: longest host we take apart */
#define CONFIG_DNS_NAME_MAX 253    /* RFC 1035 §2.3.4, without the trailing dot */
#define CONFIG_DNS_LABEL_MAX 63
#define CONFIG_TIMEOUT_MAX_S 86400 /* keeps milliseconds well inside unsigned */
#define CONFIG_ADDR_HINT "(expected host:port or [v6]:port)"
#define CONFIG_FORGE_CACHE_DEFAULT 1024
#define CONFIG_FORGE_CACHE_MIN 0 /* no cache */
#define CONFIG_FORGE_CACHE_MAX 1048576
#define CONFIG_CONTENT_MAX 16777216 /* log.content: 16 MiB per direction */
#define CONFIG_CA_HINT "set ca.dir (make one with tlsfault --ca-init DIR)"
#define CONFIG_MARK_HINT "a number from 1 to 0xffffffff (\"2\" or \"0x2\")"


#define CONFIG_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ------------------------------------------------------------ problems */

/*
 * The caller's error buffer, filled one line per problem.  After the first
 * line only whole lines are added: a reader never sees half a message, and
 * once one line is dropped all later ones are too, so what is shown is a
 * prefix of the full list.  count keeps counting regardless: it alone
 * decides success.
 */
struct config_errors {
    char *buf;
    size_t cap;
    size_t len;
    bool full;
    unsigned count;
};

static void
config_errors_init(struct config_errors *e, char *buf, size_t cap)
{
    e->buf = buf;
    e->cap = buf != NULL ? cap : 0;
    e->len = 0;
    e->full = false;
    e->count = 0;
    if (e->cap > 0)
        e->buf[0] = '\0';
}

static void __attribute__((format(printf, 2, 3)))
config_errors_add(struct config_errors *e, const char *fmt, ...)
{
    char line[CONFIG_LINE_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);

    /* A quoted value may hold "\n" escapes; one problem must stay one line. */
    for (char *p = line; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';

    e->count++;
    if (e->cap == 0 || e->full)
        return;
    size_t n = strlen(line);
    if (e->len == 0) {
        snprintf(e->buf, e->cap, "%s", line);
        e->len = n < e->cap ? n : e->cap - 1;
        e->full = n >= e->cap;
        return;
    }
    if (e->len + 1 + n >= e->cap) {
        e->full = true;
        return;
    }
    e->buf[e->len++] = '\n';
    memcpy(e->buf + e->len, line, n + 1);
    e->len += n;
}

/* ------------------------------------------------------------ loading state */

struct config_load {
    struct config_errors err;
    const char *path;     /* as given: the prefix of every message */
    struct tf_config *cfg;
    char *dir;            /* the file's directory, for relative paths; NULL: none */
    SSL_CTX *scratch;     /* tries cipher, group and sigalg strings; made when first needed */
    const config_setting_t *ca;         /* the ca group, for messages */
    const config_setting_t *control;    /* the control group, for messages */
    const config_setting_t **rule_fault; /* each rule's "fault" setting, by rule index */
};

static void __attribute__((format(printf, 3, 4)))
config_error_at(struct config_load *ld, const config_setting_t *s, const char *fmt, ...)
{
    char msg[CONFIG_LINE_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    /* Settings from an @include'd file carry that file's name. */
    const char *file = config_setting_source_file(s);
    config_errors_add(&ld->err, "%s:%u: %s", file != NULL ? file : ld->path,
                      (unsigned)config_setting_source_line(s), msg);
}

static void
config_oom_at(struct config_load *ld, const config_setting_t *s)
{
    config_error_at(ld, s, "out of memory");
}

/* Keeps *slot on failure, so the old value is freed with the snapshot. */
static bool __attribute__((warn_unused_result))
config_set_string(char **slot, const char *value)
{
    char *copy = strdup(value);
    if (copy == NULL)
        return false;
    free(*slot);
    *slot = copy;
    return true;
}

/* ------------------------------------------------------------ snapshot */

static void
config_tls_free(struct tf_tls_settings *t)
{
    free(t->ciphers);
    free(t->ciphersuites);
    free(t->groups);
    free(t->sigalgs);
    free(t->alpn);
    free(t->ca_file);
}

/* What an unset leg means: OpenSSL's defaults, no upstream verification. */
static void
config_tls_defaults(struct tf_tls_settings *t)
{
    memset(t, 0, sizeof(*t));
    t->security_level = -1;
    t->verify = TF_VERIFY_NONE;
    t->forge_on_verify_failure = false;
}

static void
config_free(struct tf_config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < cfg->n_faults; i++)
        tf_fault_rule_unref(cfg->faults[i]);
    free(cfg->faults);
    if (cfg->shares != NULL) {
        /* Everything else is the base snapshot's. */
        tf_config_unref(cfg->shares);
        free(cfg);
        return;
    }
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        free(cfg->listeners[i].name);
        free(cfg->listeners[i].listen);
        free(cfg->listeners[i].upstream_host);
        for (size_t j = 0; j < cfg->listeners[i].n_allow; j++)
            free(cfg->listeners[i].allow[j]);
        free(cfg->listeners[i].allow);
        free(cfg->listeners[i].default_host);
        config_tls_free(&cfg->listeners[i].client_tls);
        config_tls_free(&cfg->listeners[i].upstream_tls);
    }
    free(cfg->listeners);
    free(cfg->path);
    free(cfg->log_text);
    free(cfg->log_json);
    free(cfg->log_level);
    free(cfg->log_keylog);
    free(cfg->ca_dir);
    free(cfg->ca_cert);
    free(cfg->ca_key);
    free(cfg->ca_chain);
    free(cfg->ca_untrusted_cert);
    free(cfg->ca_untrusted_key);
    tf_lab_ca_free(cfg->lab_ca);
    free(cfg->control.listen);
    free(cfg->control.token_file);
    if (cfg->control.token != NULL) {
        OPENSSL_cleanse(cfg->control.token, strlen(cfg->control.token));
        free(cfg->control.token);
    }
    free(cfg);
}

/* A snapshot holding every default; NULL when memory is short. */
static struct tf_config *
config_new(void)
{
    struct tf_config *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL)
        return NULL;
    atomic_init(&cfg->refs, 1);
    cfg->log_text = strdup("stderr");
    cfg->log_level = strdup("info");
    cfg->connect_timeout_ms = 10000;
    cfg->handshake_timeout_ms = 30000;
    cfg->idle_timeout_ms = 300000;
    cfg->grace_ms = 10000;
    cfg->handshake_message_max = 65536;
    cfg->buffer_max = 262144;
    cfg->workers = 0;
    cfg->forge_cache = CONFIG_FORGE_CACHE_DEFAULT;
    cfg->content_max = 0;
    if (cfg->log_text == NULL || cfg->log_level == NULL) {
        config_free(cfg);
        return NULL;
    }
    return cfg;
}

struct tf_config *
tf_config_ref(struct tf_config *cfg)
{
    if (cfg != NULL)
        atomic_fetch_add(&cfg->refs, 1);
    return cfg;
}

void
tf_config_unref(struct tf_config *cfg)
{
    /* fetch_sub returns the count before the drop: 1 means we were last. */
    if (cfg != NULL && atomic_fetch_sub(&cfg->refs, 1) == 1)
        config_free(cfg);
}

struct tf_config *
tf_config_base(struct tf_config *cfg)
{
    return cfg != NULL && cfg->shares != NULL ? cfg->shares : cfg;
}

const struct tf_listener_conf *
tf_config_listener(const struct tf_config *cfg, const char *name)
{
    if (cfg == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < cfg->n_listeners; i++)
        if (cfg->listeners[i].name != NULL && strcmp(cfg->listeners[i].name, name) == 0)
            return &cfg->listeners[i];
    return NULL;
}

/* ------------------------------------------------------------ addresses */

/* Long values are cut short in messages so that the reason after them survives. */
static const char *
config_quote(char *buf, size_t n, const char *v)
{
    if (strlen(v) < n)
        return v;
    snprintf(buf, n, "%.*s...", (int)(n - 4), v);
    return buf;
}

static bool __attribute__((format(printf, 3, 4)))
config_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return false;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return false;
}

/*
 * getaddrinfo rather than inet_pton: it accepts a zone ("fe80::1%eth0"),
 * which a link-local listener or upstream needs.  AI_NUMERICHOST keeps it
 * from ever touching DNS.
 */
static bool
config_ipv6_literal(const char *host, struct sockaddr_in6 *out)
{
    struct addrinfo hints, *res = NULL;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_INET6;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || res == NULL)
        return false;
    bool ok = res->ai_family == AF_INET6 && res->ai_addrlen == sizeof(*out);
    if (ok && out != NULL)
        memcpy(out, res->ai_addr, sizeof(*out));
    freeaddrinfo(res);
    return ok;
}

/* Digits only: "0x1bb", "+443" and " 443" are typos, not ports. */
static bool
config_parse_port(const char *p, uint16_t *port, char *err, size_t errlen)
{
    unsigned long v = 0;
    char q[CONFIG_QUOTE_MAX];

    for (const char *c = p; *c != '\0'; c++) {
        if (*c < '0' || *c > '9')
            return config_fail(err, errlen, "port \"%s\" is not a number",
                               config_quote(q, sizeof(q), p));
        if (v <= 65535)
            v = v * 10 + (unsigned long)(*c - '0');
    }
    if (v > 65535)
        return config_fail(err, errlen, "port %s is out of range (0-65535)",
                           config_quote(q, sizeof(q), p));
    *port = (uint16_t)v;
    return true;
}

/* A port a connection can go to: 1-65535, digits only. */
static bool
config_parse_port1(const char *p, uint16_t *port, char *err, size_t errlen)
{
    char q[CONFIG_QUOTE_MAX];
    unsigned long v = 0;

    for (const char *c = p; *c != '\0'; c++) {
        if (*c < '0' || *c > '9')
            return config_fail(err, errlen, "port \"%s\" is not a number",
                               config_quote(q, sizeof(q), p));
        if (v <= 65535)
            v = v * 10 + (unsigned long)(*c - '0');
    }
    if (*p == '\0')
        return config_fail(err, errlen, "missing port");
    if (v == 0 || v > 65535)
        return config_fail(err, errlen, "port %s is out of range (1-65535)",
                           config_quote(q, sizeof(q), p));
    *port = (uint16_t)v;
    return true;
}

/* Contract in config.h.  host and *port are written only on success. */
bool
tf_config_split_hostport(const char *s, char *host, size_t hostlen, uint16_t *port, char *err,
                         size_t errlen)
{
    const char *h, *hend, *p;
    bool bracketed = false;
    char q[CONFIG_QUOTE_MAX];

    if (s == NULL || *s == '\0')
        return config_fail(err, errlen, "empty address " CONFIG_ADDR_HINT);
    if (s[0] == '[') {
        h = s + 1;
        hend = strchr(h, ']');
        if (hend == NULL)
            return config_fail(err, errlen, "missing \"]\" after the IPv6 address");
        if (hend[1] == '\0')
            return config_fail(err, errlen, "missing port " CONFIG_ADDR_HINT);
        if (hend[1] != ':')
            return config_fail(err, errlen, "expected \":\" and a port after \"]\"");
        p = hend + 2;
        bracketed = true;
    } else {
        const char *colon = strrchr(s, ':');
        if (colon == NULL)
            return config_fail(err, errlen, "missing port " CONFIG_ADDR_HINT);
        /* Without brackets, "::1:443" could be ::1 port 443 or ::1:443 without a port. */
        if (memchr(s, ':', (size_t)(colon - s)) != NULL)
            return config_fail(err, errlen, "an IPv6 address needs brackets, as in [::1]:8443");
        h = s;
        hend = colon;
        p = colon + 1;
    }
    if (hend == h)
        return config_fail(err, errlen, "missing host " CONFIG_ADDR_HINT);
    if (*p == '\0')
        return config_fail(err, errlen, "missing port " CONFIG_ADDR_HINT);

    size_t n = (size_t)(hend - h);
    if (host == NULL || n >= hostlen)
        return config_fail(err, errlen, "host is too long (%zu bytes)", n);

    uint16_t v = 0;
    if (!config_parse_port(p, &v, err, errlen))
        return false;
    if (bracketed) {
        /* Checked in a copy of our own: host stays untouched on failure. */
        char v6[CONFIG_HOST_MAX];
        snprintf(v6, sizeof(v6), "%.*s", (int)n, h);
        if (n >= sizeof(v6) || !config_ipv6_literal(v6, NULL))
            return config_fail(err, errlen, "\"%s\" in brackets is not an IPv6 address",
                               config_quote(q, sizeof(q), v6));
    }
    memcpy(host, h, n);
    host[n] = '\0';
    if (port != NULL)
        *port = v;
    return true;
}

/*
 * A listener binds: its host must be an address, never a name, or the
 * listening socket would depend on DNS at start-up.  inet_pton for IPv4
 * because getaddrinfo also takes inet_aton's "127.1" and "0x7f.1".
 */
static bool
config_parse_listen(const char *s, struct sockaddr_storage *ss, socklen_t *len, char *why,
                    size_t whylen)
{
    char host[CONFIG_HOST_MAX];
    char q[CONFIG_QUOTE_MAX];
    uint16_t port;

    if (!tf_config_split_hostport(s, host, sizeof(host), &port, why, whylen))
        return false;
    memset(ss, 0, sizeof(*ss));
    if (strchr(host, ':') != NULL) {
        struct sockaddr_in6 sin6;
        if (!config_ipv6_literal(host, &sin6))
            return config_fail(why, whylen, "\"%s\" in brackets is not an IPv6 address",
                               config_quote(q, sizeof(q), host));
        sin6.sin6_port = htons(port);
        memcpy(ss, &sin6, sizeof(sin6));
        *len = sizeof(sin6);
        return true;
    }
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    if (inet_pton(AF_INET, host, &sin.sin_addr) != 1)
        return config_fail(why, whylen,
                           "\"%s\" is not a numeric IP address (a listener binds to an address, "
                           "not a host name)",
                           config_quote(q, sizeof(q), host));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    memcpy(ss, &sin, sizeof(sin));
    *len = sizeof(sin);
    return true;
}

/* Letters, digits, '-' and '_' in labels of 1-63; a trailing dot is allowed. */
static bool
config_host_name_valid(const char *name)
{
    size_t n = strlen(name), label = 0;

    if (n > 0 && name[n - 1] == '.')
        n--;
    if (n == 0 || n > CONFIG_DNS_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
            continue;
        }
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
        if (!ok || ++label > CONFIG_DNS_LABEL_MAX)
            return false;
    }
    return label > 0;
}

/* The upstream may be a name: it is resolved per flow, not here. */
static bool
config_parse_upstream(const char *s, char *host, size_t hostlen, uint16_t *port, char *why,
                      size_t whylen)
{
    char q[CONFIG_QUOTE_MAX];

    if (!tf_config_split_hostport(s, host, hostlen, port, why, whylen))
        return false;
    if (*port == 0)
        return config_fail(why, whylen, "port 0 is out of range for an upstream (1-65535)");
    if (strchr(host, ':') != NULL)
        return true; /* a bracketed IPv6 literal, already checked */
    if (!config_host_name_valid(host))
        return config_fail(why, whylen, "\"%s\" is not a valid host name",
                           config_quote(q, sizeof(q), host));
    return true;
}

static bool
config_same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)a;
        const struct sockaddr_in *y = (const struct sockaddr_in *)b;
        /* Port 0 lets the kernel pick: two such listeners never clash. */
        return x->sin_port != 0 && x->sin_port == y->sin_port &&
               x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a;
    const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)b;
    return x->sin6_port != 0 && x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
           memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
}

/* ------------------------------------------------------------ value tables */

/* A word a setting may take; available false: known, but for a later version. */
struct config_choice {
    const char *name;
    int value;
    bool available;
};

/* redirect and tproxy ask netfilter (origdst.c): Linux only. */
#ifdef __linux__
#define CONFIG_HAVE_NETFILTER true
#else
#define CONFIG_HAVE_NETFILTER false
#endif

static const struct config_choice config_routes[] = {
    {"forward", TF_ROUTE_FORWARD, true},
    {"sni", TF_ROUTE_SNI, true},
    {"redirect", TF_ROUTE_REDIRECT, CONFIG_HAVE_NETFILTER},
    {"tproxy", TF_ROUTE_TPROXY, CONFIG_HAVE_NETFILTER},
    {"connect", TF_ROUTE_CONNECT, true},
};

/* The route's name as the file spells it. */
static const char *
config_route_name(enum tf_route route)
{
    for (size_t i = 0; i < sizeof(config_routes) / sizeof(config_routes[0]); i++)
        if (config_routes[i].value == (int)route)
            return config_routes[i].name;
    return "?";
}

static const struct config_choice config_modes[] = {
    {"passthrough", TF_MODE_PASSTHROUGH, true},
    {"mitm", TF_MODE_MITM, true},
};

static const struct config_choice config_verifies[] = {
    {"none", TF_VERIFY_NONE, true},
    {"system", TF_VERIFY_SYSTEM, true},
    {"file", TF_VERIFY_FILE, true},
};

/* Values of enum tf_leaf_keys (forge.h). */
static const struct config_choice config_leaf_keys[] = {
    {"both", 0, true},
    {"upstream", 1, true},
    {"rsa", 2, true},
    {"ecdsa", 3, true},
};

static const struct config_choice config_verify_failures[] = {
    {"close", 0, true},
    {"forge", 1, true},
};

static const struct config_choice config_levels[] = {
    {"error", 0, true},
    {"warn", 1, true},
    {"info", 2, true},
    {"debug", 3, true},
};

/* "forward, sni, ...": the available words of a table. */
static void
config_choice_list(const struct config_choice *table, size_t n, char *buf, size_t len)
{
    size_t used = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < n; i++)
        if (table[i].available && used < len)
            used += (size_t)snprintf(buf + used, len - used, "%s%s", used > 0 ? ", " : "",
                                     table[i].name);
}

/*
 * Looks the string setting s up in a choice table.  what names the setting
 * in messages ("route", "log level").  Returns the entry, or NULL after
 * reporting why not.
 */
static const struct config_choice *
config_choose(struct config_load *ld, const config_setting_t *s, const char *what,
              const struct config_choice *table, size_t n)
{
    char q[CONFIG_QUOTE_MAX];
    const char *v = config_setting_get_string(s);
    const char *shown = config_quote(q, sizeof(q), v);
    char valid[128];

    config_choice_list(table, n, valid, sizeof(valid));
    for (size_t i = 0; i < n; i++) {
        if (strcmp(table[i].name, v) != 0)
            continue;
        if (table[i].available)
            return &table[i];
        config_error_at(ld, s, "%s \"%s\" is not available in this version; valid: %s", what,
                        shown, valid);
        return NULL;
    }
    config_error_at(ld, s, "unknown %s \"%s\"; valid: %s", what, shown, valid);
    return NULL;
}

/* ------------------------------------------------------------ key tables */

enum config_kind {
    CONFIG_KIND_INT,    /* int or int64 */
    CONFIG_KIND_NUMBER, /* int, int64 or float */
    CONFIG_KIND_STRING,
    CONFIG_KIND_GROUP,  /* { ... } */
    CONFIG_KIND_LIST,   /* ( ... ) or, when empty or scalar, [ ... ] */
    CONFIG_KIND_BOOL,   /* true or false */
    CONFIG_KIND_MARK,   /* an integer, or a string holding one ("0x2") */
};

struct config_key;
struct config_section;

/*
 * Judges and stores one setting whose type already matched.  label is the
 * key as messages name it ("timeouts.idle"); obj is what the section fills
 * (the snapshot, or a listener draft).
 */
typedef void config_apply_fn(struct config_load *ld, const config_setting_t *s,
                             const struct config_key *key, const char *label, void *obj);

struct config_key {
    const char *name;
    enum config_kind kind;
    config_apply_fn *apply;               /* NULL: reserved for a later version */
    size_t offset;                        /* where apply stores into obj */
    long long min, max;                   /* bounds of integers and seconds */
    const struct config_section *section; /* for groups: their keys */
};

struct config_section {
    const char *where;  /* " in listener": where an unknown key was found */
    const char *prefix; /* "log.": how keys are named in messages */
    const struct config_key *keys;
    size_t n_keys;
};

/*
 * Collected listener settings, judged together by config_listener_finish.
 * Only settings of the right type land here; one of the wrong type was
 * reported by the walker and is still in the group, which is how "missing"
 * is told apart from "wrong" (one mistake, one message).
 */
struct config_listener_draft {
    const config_setting_t *name;
    const config_setting_t *listen;
    const config_setting_t *route;
    const config_setting_t *upstream;
    const config_setting_t *mode;
    const config_setting_t *client_tls;
    const config_setting_t *upstream_tls;
    /* what only some routes take: judged once the route is known */
    const config_setting_t *upstream_port;
    const config_setting_t *allow;
    const config_setting_t *default_upstream;
    const config_setting_t *spoof_source;
    const config_setting_t *probe;
    uint32_t mark;                   /* every route: judged by the walker; 0 when not given */
};

static bool
config_kind_matches(const config_setting_t *s, enum config_kind kind)
{
    int t = config_setting_type(s);

    switch (kind) {
    case CONFIG_KIND_INT:
        return t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64;
    case CONFIG_KIND_NUMBER:
        return t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64 || t == CONFIG_TYPE_FLOAT;
    case CONFIG_KIND_STRING:
        return t == CONFIG_TYPE_STRING;
    case CONFIG_KIND_GROUP:
        return t == CONFIG_TYPE_GROUP;
    case CONFIG_KIND_LIST:
        return t == CONFIG_TYPE_LIST || t == CONFIG_TYPE_ARRAY;
    case CONFIG_KIND_BOOL:
        return t == CONFIG_TYPE_BOOL;
    case CONFIG_KIND_MARK:
        return t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64 || t == CONFIG_TYPE_STRING;
    }
    return false;
}

static const char *
config_kind_text(enum config_kind kind)
{
    switch (kind) {
    case CONFIG_KIND_INT:
        return "an integer";
    case CONFIG_KIND_NUMBER:
        return "a number";
    case CONFIG_KIND_STRING:
        return "a string";
    case CONFIG_KIND_GROUP:
        return "a group ({ ... })";
    case CONFIG_KIND_LIST:
        return "a list (( ... ))";
    case CONFIG_KIND_BOOL:
        return "true or false";
    case CONFIG_KIND_MARK:
        return "an integer or a string such as \"0x2\"";
    }
    return "?";
}

/* libconfig only converts between number types with AUTOCONVERT, which we leave off. */
static double
config_number(const config_setting_t *s)
{
    if (config_setting_type(s) == CONFIG_TYPE_FLOAT)
        return config_setting_get_float(s);
    if (config_setting_type(s) == CONFIG_TYPE_INT64)
        return (double)config_setting_get_int64(s);
    return (double)config_setting_get_int(s);
}

static long long
config_integer(const config_setting_t *s)
{
    if (config_setting_type(s) == CONFIG_TYPE_INT64)
        return config_setting_get_int64(s);
    return config_setting_get_int(s);
}

static void config_walk(struct config_load *ld, const struct config_section *sec,
                        const config_setting_t *group, void *obj);

static bool
config_integer_in_range(struct config_load *ld, const config_setting_t *s,
                        const struct config_key *key, const char *label, long long *out)
{
    long long v = config_integer(s);
    if (v < key->min || v > key->max) {
        config_error_at(ld, s, "\"%s\" must be between %lld and %lld, not %lld", label, key->min,
                        key->max, v);
        return false;
    }
    *out = v;
    return true;
}

static void
config_apply_int(struct config_load *ld, const config_setting_t *s, const struct config_key *key,
                 const char *label, void *obj)
{
    long long v;
    if (config_integer_in_range(ld, s, key, label, &v))
        *(int *)((char *)obj + key->offset) = (int)v;
}

static void
config_apply_size(struct config_load *ld, const config_setting_t *s, const struct config_key *key,
                  const char *label, void *obj)
{
    long long v;
    if (config_integer_in_range(ld, s, key, label, &v))
        *(size_t *)((char *)obj + key->offset) = (size_t)v;
}

/* Seconds in the file, milliseconds in the snapshot; a partial millisecond rounds up. */
static void
config_apply_seconds(struct config_load *ld, const config_setting_t *s,
                     const struct config_key *key, const char *label, void *obj)
{
    double v = config_number(s);

    /* Written as !(v > 0) so that a NaN is refused too. */
    if (!(v > 0)) {
        config_error_at(ld, s, "\"%s\" must be greater than 0 seconds, not %g", label, v);
        return;
    }
    if (v > (double)key->max) {
        config_error_at(ld, s, "\"%s\" must be at most %lld seconds, not %g", label, key->max, v);
        return;
    }
    double ms = v * 1000.0;
    unsigned whole = (unsigned)ms;
    if ((double)whole < ms)
        whole++;
    *(unsigned *)((char *)obj + key->offset) = whole;
}

static void
config_apply_string(struct config_load *ld, const config_setting_t *s,
                    const struct config_key *key, const char *label, void *obj)
{
    const char *v = config_setting_get_string(s);

    if (*v == '\0') {
        config_error_at(ld, s, "\"%s\" must not be empty", label);
        return;
    }
    if (!config_set_string((char **)((char *)obj + key->offset), v))
        config_oom_at(ld, s);
}

/*
 * SO_MARK: 1 to 0xffffffff, as decimal or "0x" hex.  *out is written only
 * on success.
 */
static bool
config_parse_mark(const char *v, uint32_t *out)
{
    unsigned long long n = 0;
    int base = 10;
    const char *p = v;

    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
        base = 16;
        p += 2;
    }
    if (*p == '\0')
        return false;
    for (; *p != '\0'; p++) {
        int d;
        if (*p >= '0' && *p <= '9')
            d = *p - '0';
        else if (base == 16 && *p >= 'a' && *p <= 'f')
            d = *p - 'a' + 10;
        else if (base == 16 && *p >= 'A' && *p <= 'F')
            d = *p - 'A' + 10;
        else
            return false;
        n = n * (unsigned)base + (unsigned)d;
        if (n > UINT32_MAX)
            return false;
    }
    if (n == 0)
        return false;
    *out = (uint32_t)n;
    return true;
}

/*
 * mark, at top level and in a listener.  libconfig 1.5 reads an integer
 * above 0x7fffffff (0x80000000, 4294967295) as a negative int: say how to
 * write it instead of refusing it without a reason.
 */
static void
config_apply_mark(struct config_load *ld, const config_setting_t *s, const struct config_key *key,
                  const char *label, void *obj)
{
    char q[CONFIG_QUOTE_MAX];
    uint32_t mark;

    if (config_setting_type(s) == CONFIG_TYPE_STRING) {
        const char *v = config_setting_get_string(s);
        if (!config_parse_mark(v, &mark)) {
            config_error_at(ld, s, "\"%s\" must be " CONFIG_MARK_HINT ", not \"%s\"", label,
                            config_quote(q, sizeof(q), v));
            return;
        }
    } else {
        long long v = config_integer(s);
        if (config_setting_type(s) == CONFIG_TYPE_INT && v < 0) {
            config_error_at(ld, s,
                            "\"%s\" must be from 1 to 0xffffffff, not %lld (libconfig reads "
                            "integers above 0x7fffffff as negative: for 0x%x, write \"0x%x\")",
                            label, v, (unsigned)(uint32_t)v, (unsigned)(uint32_t)v);
            return;
        }
        if (v < 1 || v > (long long)UINT32_MAX) {
            config_error_at(ld, s, "\"%s\" must be from 1 to 0xffffffff, not %lld", label, v);
            return;
        }
        mark = (uint32_t)v;
    }
    *(uint32_t *)((char *)obj + key->offset) = mark;
}

static void
config_apply_level(struct config_load *ld, const config_setting_t *s,
                   const struct config_key *key, const char *label, void *obj)
{
    (void)label;
    const struct config_choice *c =
        config_choose(ld, s, "log level", config_levels, CONFIG_ARRAY_LEN(config_levels));
    if (c != NULL && !config_set_string((char **)((char *)obj + key->offset), c->name))
        config_oom_at(ld, s);
}

static void
config_apply_bool(struct config_load *ld, const config_setting_t *s, const struct config_key *key,
                  const char *label, void *obj)
{
    (void)ld;
    (void)label;
    *(bool *)((char *)obj + key->offset) = config_setting_get_bool(s) != 0;
}

static void
config_apply_section(struct config_load *ld, const config_setting_t *s,
                     const struct config_key *key, const char *label, void *obj)
{
    (void)label;
    config_walk(ld, key->section, s, obj);
}

static void config_apply_faults(struct config_load *ld, const config_setting_t *s,
                                const struct config_key *key, const char *label, void *obj);

/* ------------------------------------------------------------ paths */

/*
 * A path from the file, as the snapshot keeps it: relative ones are taken
 * from the configuration file's directory, so that a file means the same
 * whoever starts it and from wherever.  NULL when memory is short.
 */
static char *
config_resolve(const struct config_load *ld, const char *path)
{
    if (path[0] == '/' || ld->dir == NULL)
        return strdup(path);
    size_t n = strlen(ld->dir) + 1 + strlen(path) + 1;
    char *out = malloc(n);
    if (out != NULL)
        snprintf(out, n, "%s/%s", ld->dir, path);
    return out;
}

static void
config_apply_path(struct config_load *ld, const config_setting_t *s, const struct config_key *key,
                  const char *label, void *obj)
{
    const char *v = config_setting_get_string(s);
    char **slot = (char **)((char *)obj + key->offset);

    if (*v == '\0') {
        config_error_at(ld, s, "\"%s\" must not be empty", label);
        return;
    }
    char *resolved = config_resolve(ld, v);
    if (resolved == NULL) {
        config_oom_at(ld, s);
        return;
    }
    free(*slot);
    *slot = resolved;
}

/* ------------------------------------------------------------ mitm legs */

/* OpenSSL is asked whether it takes a string: a scratch context, made once per load. */
static SSL_CTX *
config_scratch(struct config_load *ld)
{
    if (ld->scratch == NULL)
        ld->scratch = SSL_CTX_new(TLS_method());
    return ld->scratch;
}

enum config_tls_list {
    CONFIG_TLS_CIPHERS,
    CONFIG_TLS_CIPHERSUITES,
    CONFIG_TLS_GROUPS,
    CONFIG_TLS_SIGALGS,
};

/* What each OpenSSL string is, in the words a message uses. */
static const char *const config_tls_list_hint[] = {
    [CONFIG_TLS_CIPHERS] = "an OpenSSL cipher string for TLS 1.2 and below, such as "
                           "\"ECDHE+AESGCM:!aNULL\"; see openssl ciphers -v",
    [CONFIG_TLS_CIPHERSUITES] = "TLS 1.3 suites separated by \":\", such as "
                                "\"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384\"",
    [CONFIG_TLS_GROUPS] = "groups separated by \":\", such as \"X25519:P-256\"",
    [CONFIG_TLS_SIGALGS] = "signature algorithms separated by \":\", such as "
                           "\"ECDSA+SHA256:RSA-PSS+SHA256\"",
};

static int config_tls_list_try(struct config_load *ld, enum config_tls_list kind, const char *v);

/*
 * Whether OpenSSL takes v as the given kind of list: 1 yes, 0 no (bad then
 * holds what it refused), -1 when memory is short.  OpenSSL 3 skips an
 * unknown TLS 1.3 suite when the list has a known one, so each suite is
 * tried on its own: a misspelt suite must not vanish quietly.
 */
static int
config_tls_list_ok(struct config_load *ld, enum config_tls_list kind, const char *v, char *bad,
                   size_t badlen)
{
    snprintf(bad, badlen, "%s", v);
    if (kind == CONFIG_TLS_CIPHERSUITES && strchr(v, ':') != NULL) {
        char *copy = strdup(v), *save = NULL;
        if (copy == NULL)
            return -1;
        for (char *t = strtok_r(copy, ":", &save); t != NULL; t = strtok_r(NULL, ":", &save)) {
            int ok = config_tls_list_try(ld, kind, t);
            if (ok <= 0) {
                snprintf(bad, badlen, "%s", t);
                free(copy);
                return ok;
            }
        }
        free(copy);
    }
    return config_tls_list_try(ld, kind, v);
}

/* One try on the scratch context.  The group and sigalg macros take a char *, hence the copy. */
static int
config_tls_list_try(struct config_load *ld, enum config_tls_list kind, const char *v)
{
    SSL_CTX *ctx = config_scratch(ld);
    char *copy = strdup(v);
    int ok = 0;

    if (ctx == NULL || copy == NULL) {
        free(copy);
        return -1;
    }
    switch (kind) {
    case CONFIG_TLS_CIPHERS:
        ok = SSL_CTX_set_cipher_list(ctx, copy) == 1;
        break;
    case CONFIG_TLS_CIPHERSUITES:
        ok = SSL_CTX_set_ciphersuites(ctx, copy) == 1;
        break;
    case CONFIG_TLS_GROUPS:
        ok = SSL_CTX_set1_groups_list(ctx, copy) == 1;
        break;
    case CONFIG_TLS_SIGALGS:
        ok = SSL_CTX_set1_sigalgs_list(ctx, copy) == 1;
        break;
    }
    ERR_clear_error();
    free(copy);
    return ok;
}

/* key->min says which list this is. */
static void
config_apply_tls_list(struct config_load *ld, const config_setting_t *s,
                      const struct config_key *key, const char *label, void *obj)
{
    const char *v = config_setting_get_string(s);
    char q[CONFIG_QUOTE_MAX];
    enum config_tls_list kind = (enum config_tls_list)key->min;

    if (*v == '\0') {
        config_error_at(ld, s, "\"%s\" must not be empty", label);
        return;
    }
    char bad[CONFIG_LINE_MAX];
    int ok = config_tls_list_ok(ld, kind, v, bad, sizeof(bad));
    if (ok < 0) {
        config_oom_at(ld, s);
        return;
    }
    if (ok == 0) {
        config_error_at(ld, s, "\"%s\": OpenSSL refuses \"%s\" (expected %s)", label,
                        config_quote(q, sizeof(q), bad), config_tls_list_hint[kind]);
        return;
    }
    if (!config_set_string((char **)((char *)obj + key->offset), v))
        config_oom_at(ld, s);
}

static void
config_apply_tls_version(struct config_load *ld, const config_setting_t *s,
                         const struct config_key *key, const char *label, void *obj)
{
    const char *v = config_setting_get_string(s);
    char q[CONFIG_QUOTE_MAX];
    uint16_t ver = 0;

    if (!tf_fault_parse_version(v, &ver) || ver < 0x0301 || ver > 0x0304) {
        config_error_at(ld, s,
                        "\"%s\" must be TLS1.0, TLS1.1, TLS1.2 or TLS1.3 (\"1.2\" and \"0x0303\" "
                        "work too), not \"%s\"",
                        label, config_quote(q, sizeof(q), v));
        return;
    }
    *(uint16_t *)((char *)obj + key->offset) = ver;
}

/*
 * "h2,http/1.1": protocol names of 1 to 255 bytes, separated by commas,
 * without spaces (they would become part of a name on the wire).
 */
static bool
config_alpn_valid(const char *v)
{
    size_t piece = 0, total = 0;

    for (const char *p = v;; p++) {
        if (*p == ',' || *p == '\0') {
            if (piece == 0 || piece > 255)
                return false;
            total += piece + 1;
            piece = 0;
            if (*p == '\0')
                break;
            continue;
        }
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return false;
        piece++;
    }
    return total <= 65535;
}

static void
config_apply_alpn(struct config_load *ld, const config_setting_t *s, const struct config_key *key,
                  const char *label, void *obj)
{
    const char *v = config_setting_get_string(s);
    char q[CONFIG_QUOTE_MAX];

    if (!config_alpn_valid(v)) {
        config_error_at(ld, s,
                        "\"%s\" must be protocol names separated by commas, such as "
                        "\"h2,http/1.1\", not \"%s\"",
                        label, config_quote(q, sizeof(q), v));
        return;
    }
    if (!config_set_string((char **)((char *)obj + key->offset), v))
        config_oom_at(ld, s);
}

/* A word of table, stored as its value (an enum field) at key->offset of obj. */
_Static_assert(sizeof(enum tf_verify) == sizeof(int), "enum fields are stored as int");

static void
config_apply_choice(struct config_load *ld, const config_setting_t *s,
                    const struct config_key *key, void *obj, const struct config_choice *table,
                    size_t n)
{
    const struct config_choice *c = config_choose(ld, s, key->name, table, n);
    if (c != NULL)
        *(int *)((char *)obj + key->offset) = c->value;
}

static void
config_apply_verify(struct config_load *ld, const config_setting_t *s,
                    const struct config_key *key, const char *label, void *obj)
{
    (void)label;
    config_apply_choice(ld, s, key, obj, config_verifies, CONFIG_ARRAY_LEN(config_verifies));
}

static void
config_apply_leaf_keys(struct config_load *ld, const config_setting_t *s,
                       const struct config_key *key, const char *label, void *obj)
{
    (void)label;
    config_apply_choice(ld, s, key, obj, config_leaf_keys, CONFIG_ARRAY_LEN(config_leaf_keys));
}

static void
config_apply_verify_failure(struct config_load *ld, const config_setting_t *s,
                            const struct config_key *key, const char *label, void *obj)
{
    (void)label;
    const struct config_choice *c = config_choose(ld, s, key->name, config_verify_failures,
                                                  CONFIG_ARRAY_LEN(config_verify_failures));
    if (c != NULL)
        ((struct tf_tls_settings *)obj)->forge_on_verify_failure = c->value != 0;
}

/*
 * The file must be there and hold certificates now, not when the first
 * client arrives: a lab notices a typo at -t.
 */
static void
config_apply_ca_file(struct config_load *ld, const config_setting_t *s,
                     const struct config_key *key, const char *label, void *obj)
{
    const char *v = config_setting_get_string(s);
    struct tf_tls_settings *t = obj;

    if (*v == '\0') {
        config_error_at(ld, s, "\"%s\" must not be empty", label);
        return;
    }
    char *path = config_resolve(ld, v);
    if (path == NULL) {
        config_oom_at(ld, s);
        return;
    }
    FILE *f = fopen(path, "r");
    struct stat st;
    int e = f == NULL ? errno : fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode) ? EISDIR : 0;
    if (f != NULL)
        fclose(f);
    if (e != 0) {
        config_error_at(ld, s, "\"%s\" \"%s\": cannot read: %s", label, path, strerror(e));
        free(path);
        return;
    }
    X509_STORE *store = X509_STORE_new();
    bool loaded = store != NULL && X509_STORE_load_file(store, path) == 1;
    X509_STORE_free(store);
    ERR_clear_error();
    if (!loaded) {
        config_error_at(ld, s, "\"%s\" \"%s\": no PEM certificate in it", label, path);
        free(path);
        return;
    }
    (void)key;
    free(t->ca_file);
    t->ca_file = path;
}

static void
config_note_setting(struct config_load *ld, const config_setting_t *s,
                    const struct config_key *key, const char *label, void *obj)
{
    (void)ld;
    (void)label;
    *(const config_setting_t **)((char *)obj + key->offset) = s;
}

static void config_apply_listeners(struct config_load *ld, const config_setting_t *s,
                                   const struct config_key *key, const char *label, void *obj);

/* The ca group: remembered for the messages judged once the whole file is read. */
static void
config_apply_ca(struct config_load *ld, const config_setting_t *s, const struct config_key *key,
                const char *label, void *obj)
{
    (void)label;
    ld->ca = s;
    config_walk(ld, key->section, s, obj);
}

/* The control group: remembered for the checks made once the whole file is read. */
static void
config_apply_control(struct config_load *ld, const config_setting_t *s,
                     const struct config_key *key, const char *label, void *obj)
{
    struct tf_config *cfg = obj;
    (void)label;
    ld->control = s;
    cfg->control.enabled = true;
    cfg->control.line = (int)config_setting_source_line(s);
    config_walk(ld, key->section, s, obj);
}

#define CONFIG_CFG(field) offsetof(struct tf_config, field)
#define CONFIG_DRAFT(field) offsetof(struct config_listener_draft, field)
#define CONFIG_TLS(field) offsetof(struct tf_tls_settings, field)

static const struct config_key config_listener_keys[] = {
    {"name", CONFIG_KIND_STRING, config_note_setting, CONFIG_DRAFT(name), 0, 0, NULL},
    {"listen", CONFIG_KIND_STRING, config_note_setting, CONFIG_DRAFT(listen), 0, 0, NULL},
    {"route", CONFIG_KIND_STRING, config_note_setting, CONFIG_DRAFT(route), 0, 0, NULL},
    {"upstream", CONFIG_KIND_STRING, config_note_setting, CONFIG_DRAFT(upstream), 0, 0, NULL},
    {"mode", CONFIG_KIND_STRING, config_note_setting, CONFIG_DRAFT(mode), 0, 0, NULL},
    {"client_tls", CONFIG_KIND_GROUP, config_note_setting, CONFIG_DRAFT(client_tls), 0, 0, NULL},
    {"upstream_tls", CONFIG_KIND_GROUP, config_note_setting, CONFIG_DRAFT(upstream_tls), 0, 0,
     NULL},
    {"upstream_port", CONFIG_KIND_INT, config_note_setting, CONFIG_DRAFT(upstream_port), 0, 0,
     NULL},
    {"allow", CONFIG_KIND_LIST, config_note_setting, CONFIG_DRAFT(allow), 0, 0, NULL},
    {"default_upstream", CONFIG_KIND_STRING, config_note_setting, CONFIG_DRAFT(default_upstream),
     0, 0, NULL},
    {"spoof_source", CONFIG_KIND_BOOL, config_note_setting, CONFIG_DRAFT(spoof_source), 0, 0,
     NULL},
    {"probe", CONFIG_KIND_BOOL, config_note_setting, CONFIG_DRAFT(probe), 0, 0, NULL},
    {"mark", CONFIG_KIND_MARK, config_apply_mark, CONFIG_DRAFT(mark), 0, 0, NULL},
};

/* The keys both legs of a mitm listener take; the upstream leg has three more. */
#define CONFIG_TLS_KEYS                                                                        \
    {"min_version", CONFIG_KIND_STRING, config_apply_tls_version, CONFIG_TLS(min_version), 0, \
     0, NULL},                                                                                 \
    {"max_version", CONFIG_KIND_STRING, config_apply_tls_version, CONFIG_TLS(max_version), 0, \
     0, NULL},                                                                                 \
    {"ciphers", CONFIG_KIND_STRING, config_apply_tls_list, CONFIG_TLS(ciphers),                \
     CONFIG_TLS_CIPHERS, 0, NULL},                                                             \
    {"ciphersuites", CONFIG_KIND_STRING, config_apply_tls_list, CONFIG_TLS(ciphersuites),      \
     CONFIG_TLS_CIPHERSUITES, 0, NULL},                                                        \
    {"groups", CONFIG_KIND_STRING, config_apply_tls_list, CONFIG_TLS(groups),                  \
     CONFIG_TLS_GROUPS, 0, NULL},                                                              \
    {"sigalgs", CONFIG_KIND_STRING, config_apply_tls_list, CONFIG_TLS(sigalgs),                \
     CONFIG_TLS_SIGALGS, 0, NULL},                                                             \
    {"alpn", CONFIG_KIND_STRING, config_apply_alpn, CONFIG_TLS(alpn), 0, 0, NULL},             \
    {"security_level", CONFIG_KIND_INT, config_apply_int, CONFIG_TLS(security_level), 0, 5,   \
     NULL}

static const struct config_key config_client_tls_keys[] = {CONFIG_TLS_KEYS};

static const struct config_key config_upstream_tls_keys[] = {
    CONFIG_TLS_KEYS,
    {"verify", CONFIG_KIND_STRING, config_apply_verify, CONFIG_TLS(verify), 0, 0, NULL},
    {"ca_file", CONFIG_KIND_STRING, config_apply_ca_file, 0, 0, 0, NULL},
    {"on_verify_failure", CONFIG_KIND_STRING, config_apply_verify_failure, 0, 0, 0, NULL},
};

static const struct config_key config_log_keys[] = {
    {"text", CONFIG_KIND_STRING, config_apply_string, CONFIG_CFG(log_text), 0, 0, NULL},
    {"json", CONFIG_KIND_STRING, config_apply_string, CONFIG_CFG(log_json), 0, 0, NULL},
    {"level", CONFIG_KIND_STRING, config_apply_level, CONFIG_CFG(log_level), 0, 0, NULL},
    {"keylog", CONFIG_KIND_STRING, config_apply_string, CONFIG_CFG(log_keylog), 0, 0, NULL},
    {"content", CONFIG_KIND_INT, config_apply_size, CONFIG_CFG(content_max), 0,
     CONFIG_CONTENT_MAX, NULL},
    {"app_records", CONFIG_KIND_BOOL, config_apply_bool, CONFIG_CFG(log_app_records), 0, 0,
     NULL},
};

/* ca.dir, or ca.cert + ca.key with the optional rest; judged together in config_ca_check. */
static const struct config_key config_ca_keys[] = {
    {"dir", CONFIG_KIND_STRING, config_apply_path, CONFIG_CFG(ca_dir), 0, 0, NULL},
    {"cert", CONFIG_KIND_STRING, config_apply_path, CONFIG_CFG(ca_cert), 0, 0, NULL},
    {"key", CONFIG_KIND_STRING, config_apply_path, CONFIG_CFG(ca_key), 0, 0, NULL},
    {"chain", CONFIG_KIND_STRING, config_apply_path, CONFIG_CFG(ca_chain), 0, 0, NULL},
    {"untrusted_cert", CONFIG_KIND_STRING, config_apply_path, CONFIG_CFG(ca_untrusted_cert), 0,
     0, NULL},
    {"untrusted_key", CONFIG_KIND_STRING, config_apply_path, CONFIG_CFG(ca_untrusted_key), 0, 0,
     NULL},
    {"cache", CONFIG_KIND_INT, config_apply_size, CONFIG_CFG(forge_cache), CONFIG_FORGE_CACHE_MIN,
     CONFIG_FORGE_CACHE_MAX, NULL},
    {"leaf_keys", CONFIG_KIND_STRING, config_apply_leaf_keys, CONFIG_CFG(leaf_keys), 0, 0, NULL},
};

static const struct config_key config_timeout_keys[] = {
    {"connect", CONFIG_KIND_NUMBER, config_apply_seconds, CONFIG_CFG(connect_timeout_ms), 0,
     CONFIG_TIMEOUT_MAX_S, NULL},
    {"handshake", CONFIG_KIND_NUMBER, config_apply_seconds, CONFIG_CFG(handshake_timeout_ms), 0,
     CONFIG_TIMEOUT_MAX_S, NULL},
    {"idle", CONFIG_KIND_NUMBER, config_apply_seconds, CONFIG_CFG(idle_timeout_ms), 0,
     CONFIG_TIMEOUT_MAX_S, NULL},
    {"grace", CONFIG_KIND_NUMBER, config_apply_seconds, CONFIG_CFG(grace_ms), 0,
     CONFIG_TIMEOUT_MAX_S, NULL},
};

/* 16 MiB: a handshake message length is a 24-bit field (RFC 8446 §4). */
static const struct config_key config_limit_keys[] = {
    {"handshake_message_max", CONFIG_KIND_INT, config_apply_size,
     CONFIG_CFG(handshake_message_max), 1024, 16777216, NULL},
    {"buffer", CONFIG_KIND_INT, config_apply_size, CONFIG_CFG(buffer_max), 4096, 1073741824,
     NULL},
    {"connections", CONFIG_KIND_INT, config_apply_size, CONFIG_CFG(max_connections), 0,
     10000000, NULL},
};

static const struct config_key config_control_keys[] = {
    {"listen", CONFIG_KIND_STRING, config_apply_string, CONFIG_CFG(control.listen), 0, 0, NULL},
    {"token_file", CONFIG_KIND_STRING, config_apply_path, CONFIG_CFG(control.token_file), 0, 0,
     NULL},
    {"allow_remote", CONFIG_KIND_BOOL, config_apply_bool, CONFIG_CFG(control.allow_remote), 0, 0,
     NULL},
};

static const struct config_section config_listener_section = {
    " in listener", "", config_listener_keys, CONFIG_ARRAY_LEN(config_listener_keys),
};
static const struct config_section config_client_tls_section = {
    " in client_tls", "client_tls.", config_client_tls_keys,
    CONFIG_ARRAY_LEN(config_client_tls_keys),
};
static const struct config_section config_upstream_tls_section = {
    " in upstream_tls", "upstream_tls.", config_upstream_tls_keys,
    CONFIG_ARRAY_LEN(config_upstream_tls_keys),
};
static const struct config_section config_ca_section = {
    " in ca", "ca.", config_ca_keys, CONFIG_ARRAY_LEN(config_ca_keys),
};
static const struct config_section config_log_section = {
    " in log", "log.", config_log_keys, CONFIG_ARRAY_LEN(config_log_keys),
};
static const struct config_section config_timeout_section = {
    " in timeouts", "timeouts.", config_timeout_keys, CONFIG_ARRAY_LEN(config_timeout_keys),
};
static const struct config_section config_limit_section = {
    " in limits", "limits.", config_limit_keys, CONFIG_ARRAY_LEN(config_limit_keys),
};
static const struct config_section config_control_section = {
    " in control", "control.", config_control_keys, CONFIG_ARRAY_LEN(config_control_keys),
};

static const struct config_key config_top_keys[] = {
    {"workers", CONFIG_KIND_INT, config_apply_int, CONFIG_CFG(workers), 0, 256, NULL},
    {"busy_poll_us", CONFIG_KIND_INT, config_apply_int, CONFIG_CFG(busy_poll_us), 0, 1000000, NULL},
    {"listeners", CONFIG_KIND_LIST, config_apply_listeners, 0, 0, 0, NULL},
    {"faults", CONFIG_KIND_LIST, config_apply_faults, 0, 0, 0, NULL},
    {"log", CONFIG_KIND_GROUP, config_apply_section, 0, 0, 0, &config_log_section},
    {"timeouts", CONFIG_KIND_GROUP, config_apply_section, 0, 0, 0, &config_timeout_section},
    {"limits", CONFIG_KIND_GROUP, config_apply_section, 0, 0, 0, &config_limit_section},
    {"ca", CONFIG_KIND_GROUP, config_apply_ca, 0, 0, 0, &config_ca_section},
    {"control", CONFIG_KIND_GROUP, config_apply_control, 0, 0, 0, &config_control_section},
    {"mark", CONFIG_KIND_MARK, config_apply_mark, CONFIG_CFG(mark), 0, 0, NULL},
};

static const struct config_section config_top_section = {
    " at top level", "", config_top_keys, CONFIG_ARRAY_LEN(config_top_keys),
};

/*
 * Checks every member of group against the section's table: unknown keys
 * (naming the valid ones), reserved keys, wrong types; hands the rest to
 * their handlers.  Keeps going after a problem so that all are reported.
 */
static void
config_walk(struct config_load *ld, const struct config_section *sec,
            const config_setting_t *group, void *obj)
{
    int n = config_setting_length(group);

    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(group, (unsigned)i);
        const char *name = config_setting_name(s);
        const struct config_key *key = NULL;
        char label[96];
        char q[CONFIG_QUOTE_MAX];

        for (size_t k = 0; k < sec->n_keys; k++)
            if (strcmp(sec->keys[k].name, name) == 0)
                key = &sec->keys[k];
        if (key == NULL) {
            char valid[256] = "";
            size_t used = 0;
            for (size_t k = 0; k < sec->n_keys; k++)
                if (sec->keys[k].apply != NULL && used < sizeof(valid))
                    used += (size_t)snprintf(valid + used, sizeof(valid) - used, "%s%s",
                                             used > 0 ? ", " : "", sec->keys[k].name);
            config_error_at(ld, s, "unknown key \"%s\"%s; valid keys: %s",
                            config_quote(q, sizeof(q), name), sec->where, valid);
            continue;
        }
        snprintf(label, sizeof(label), "%s%s", sec->prefix, key->name);
        if (key->apply == NULL) {
            config_error_at(ld, s, "\"%s\" is not available in this version", label);
            continue;
        }
        if (!config_kind_matches(s, key->kind)) {
            config_error_at(ld, s, "\"%s\" must be %s", label, config_kind_text(key->kind));
            continue;
        }
        key->apply(ld, s, key, label, obj);
    }
}

/* ------------------------------------------------------------ listeners */

static const struct tf_listener_conf *
config_listener_named(const struct tf_config *cfg, size_t before, const char *name)
{
    for (size_t i = 0; i < before; i++)
        if (cfg->listeners[i].name != NULL && strcmp(cfg->listeners[i].name, name) == 0)
            return &cfg->listeners[i];
    return NULL;
}

static const struct tf_listener_conf *
config_listener_at(const struct tf_config *cfg, size_t before,
                   const struct sockaddr_storage *addr)
{
    for (size_t i = 0; i < before; i++)
        if (cfg->listeners[i].addr_len > 0 && config_same_addr(&cfg->listeners[i].addr, addr))
            return &cfg->listeners[i];
    return NULL;
}

static void
config_listener_name(struct config_load *ld, const config_setting_t *group,
                     const struct config_listener_draft *d, struct tf_listener_conf *lc,
                     size_t index, size_t position)
{
    const struct tf_listener_conf *other;
    char q[CONFIG_QUOTE_MAX];
    char fallback[32];
    const char *name;

    if (d->name != NULL) {
        name = config_setting_get_string(d->name);
        if (!tf_fault_name_valid(name))
            config_error_at(ld, d->name,
                            "name \"%s\" is not valid (use 1-64 letters, digits, \".\", \"_\" "
                            "or \"-\")",
                            config_quote(q, sizeof(q), name));
        else if ((other = config_listener_named(ld->cfg, index, name)) != NULL)
            config_error_at(ld, d->name, "listener name \"%s\" is already used (line %d)", name,
                            other->line);
    } else {
        snprintf(fallback, sizeof(fallback), "listener%zu", position);
        name = fallback;
        if ((other = config_listener_named(ld->cfg, index, name)) != NULL)
            config_error_at(ld, group,
                            "default name \"%s\" is already used (line %d); give this listener "
                            "a name",
                            name, other->line);
    }
    lc->name = strdup(name);
    if (lc->name == NULL)
        config_oom_at(ld, group);
}

static const struct config_choice *
config_choice_named(const struct config_choice *table, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(table[i].name, name) == 0)
            return &table[i];
    return NULL;
}

/*
 * One leg's group of a mitm listener (client_tls or upstream_tls): refused
 * on other listeners, since nothing there would read it; otherwise each key
 * is judged by the walker, then what depends on two keys.
 */
static void
config_listener_tls(struct config_load *ld, const config_setting_t *group,
                    const struct config_section *sec, bool mode_known,
                    const struct tf_listener_conf *lc, struct tf_tls_settings *t)
{
    char a[16], b[16];

    if (group == NULL || !mode_known)
        return;
    const char *name = config_setting_name(group);
    if (lc->mode != TF_MODE_MITM) {
        config_error_at(ld, group, "%s needs mode = \"mitm\"", name);
        return;
    }
    config_walk(ld, sec, group, t);
    if (t->min_version != 0 && t->max_version != 0 && t->min_version > t->max_version)
        config_error_at(ld, config_setting_get_member(group, "min_version"),
                        "\"%s.min_version\" (%s) is above \"%s.max_version\" (%s)", name,
                        tf_fault_version_name(t->min_version, a, sizeof(a)), name,
                        tf_fault_version_name(t->max_version, b, sizeof(b)));
    if (sec != &config_upstream_tls_section)
        return;

    const config_setting_t *vs = config_setting_get_member(group, "verify");
    const config_setting_t *fs = config_setting_get_member(group, "ca_file");
    /* verify as written, or its default; NULL when it was refused already. */
    const struct config_choice *verify =
        vs == NULL ? &config_verifies[0]
        : config_setting_type(vs) != CONFIG_TYPE_STRING
            ? NULL
            : config_choice_named(config_verifies, CONFIG_ARRAY_LEN(config_verifies),
                                  config_setting_get_string(vs));
    if (verify == NULL)
        return;
    if (verify->value == TF_VERIFY_FILE && fs == NULL)
        config_error_at(ld, vs, "\"%s.verify\" = \"file\" needs \"%s.ca_file\"", name, name);
    else if (verify->value != TF_VERIFY_FILE && fs != NULL)
        config_error_at(ld, fs, "\"%s.ca_file\" is used only with verify = \"file\"", name);
}

/* ------------------------------------------------------------ routes */

/* Characters a host-name pattern may hold: a name's, and fnmatch's wildcards. */
static bool
config_host_glob_valid(const char *v)
{
    size_t n = strlen(v);

    if (n == 0 || n > CONFIG_DNS_NAME_MAX)
        return false;
    for (const char *p = v; *p != '\0'; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_' || c == '.' || c == '*' || c == '?' || c == '[' ||
                  c == ']' || c == '!';
        if (!ok)
            return false;
    }
    return true;
}

/* An IPv6 address or a pattern of one, as written in brackets: hex digits, ":", ".", "*", "?". */
static bool
config_v6_glob_valid(const char *v, size_t n)
{
    bool colon_or_wild = false;

    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = v[i];
        bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
        if (!hex && c != ':' && c != '.' && c != '*' && c != '?')
            return false;
        colon_or_wild = colon_or_wild || c == ':' || c == '*' || c == '?';
    }
    return colon_or_wild;
}

/*
 * One allow entry, in the grammar connect.c matches (tf_connect_allowed).
 * sni: a host-name pattern, no port.  connect: "pattern:port",
 * "pattern:*" or "pattern" (any port); an IPv6 address or pattern goes in
 * brackets ("[2001:db8::1]:443", "[fd00::*]").  Stricter than the matcher
 * where it would guess: an IPv6 pattern without brackets is refused here.
 * Returns false with the reason in why.
 */
static bool
config_allow_entry_valid(const char *v, enum tf_route route, char *why, size_t whylen)
{
    char host[CONFIG_HOST_MAX];
    char q[CONFIG_QUOTE_MAX];
    const char *port = NULL;

    if (*v == '\0')
        return config_fail(why, whylen, "empty pattern");
    if (route == TF_ROUTE_SNI) {
        if (strchr(v, ':') != NULL)
            return config_fail(why, whylen, "route \"sni\" matches server names only (the port "
                               "is upstream_port)");
    } else if (v[0] == '[') {
        const char *end = strchr(v, ']');
        if (end == NULL)
            return config_fail(why, whylen, "missing \"]\" after the IPv6 address");
        size_t n = (size_t)(end - v - 1);
        if (!config_v6_glob_valid(v + 1, n))
            return config_fail(why, whylen, "\"%.*s\" in brackets is not an IPv6 address or "
                               "pattern", n < 64 ? (int)n : 64, v + 1);
        if (end[1] != '\0' && end[1] != ':')
            return config_fail(why, whylen, "expected \":\" and a port after \"]\"");
        port = end[1] == ':' ? end + 2 : NULL;
        v = NULL; /* the address is checked; only the port is left */
    } else {
        const char *colon = strrchr(v, ':');
        if (colon != NULL && memchr(v, ':', (size_t)(colon - v)) != NULL)
            return config_fail(why, whylen, "an IPv6 address needs brackets, as in "
                               "[2001:db8::1]:443");
        if (colon == v)
            return config_fail(why, whylen, "missing host (expected host-pattern:port or "
                               "host-pattern)");
        size_t n = colon != NULL ? (size_t)(colon - v) : strlen(v);
        if (n >= sizeof(host))
            return config_fail(why, whylen, "host is too long (%zu bytes)", n);
        memcpy(host, v, n);
        host[n] = '\0';
        port = colon != NULL ? colon + 1 : NULL;
        v = host;
    }
    if (v != NULL && !config_host_glob_valid(v)) {
        char shown[CONFIG_QUOTE_MAX + 16] = "not";
        if (port != NULL) /* only a part of the entry: say which */
            snprintf(shown, sizeof(shown), "\"%s\" is not", config_quote(q, sizeof(q), v));
        return config_fail(why, whylen,
                           "%s a host-name pattern (letters, digits, \"-\", \"_\", \".\" and "
                           "the wildcards \"*\", \"?\", \"[...]\")",
                           shown);
    }
    if (port != NULL) {
        uint16_t p;
        if (*port == '\0')
            return config_fail(why, whylen, "missing port after \":\" (write \":*\" or leave "
                               "the \":\" out to allow every port)");
        if (strcmp(port, "*") != 0 && !config_parse_port1(port, &p, why, whylen))
            return false;
    }
    return true;
}

/* allow = [ ... ]: at least one entry, each a string the route can use. */
static void
config_listener_allow(struct config_load *ld, const config_setting_t *s, enum tf_route route,
                      struct tf_listener_conf *lc)
{
    char why[CONFIG_LINE_MAX];
    char q[CONFIG_QUOTE_MAX];
    int n = config_setting_length(s);

    if (n == 0) {
        config_error_at(ld, s, "\"allow\" must list at least one pattern (leave it out to allow "
                        "everything)");
        return;
    }
    lc->allow = calloc((size_t)n, sizeof(*lc->allow));
    if (lc->allow == NULL) {
        config_oom_at(ld, s);
        return;
    }
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        if (config_setting_type(e) != CONFIG_TYPE_STRING) {
            config_error_at(ld, e, "each \"allow\" entry must be a string, such as %s",
                            route == TF_ROUTE_SNI ? "\"*.lab.test\"" : "\"*.lab.test:443\"");
            continue;
        }
        const char *v = config_setting_get_string(e);
        if (!config_allow_entry_valid(v, route, why, sizeof(why))) {
            config_error_at(ld, e, "allow \"%s\": %s", config_quote(q, sizeof(q), v), why);
            continue;
        }
        if ((lc->allow[lc->n_allow] = strdup(v)) == NULL) {
            config_oom_at(ld, e);
            continue;
        }
        lc->n_allow++;
    }
}

/* Which routes take each key that not all of them take. */
#define CONFIG_ROUTE_BIT(r) (1u << (r))
static const struct {
    const char *key;
    unsigned routes;
    const char *which; /* as the message says it */
} config_route_keys[] = {
    {"upstream", CONFIG_ROUTE_BIT(TF_ROUTE_FORWARD), "route \"forward\" does"},
    {"upstream_port", CONFIG_ROUTE_BIT(TF_ROUTE_SNI), "route \"sni\" does"},
    {"allow", CONFIG_ROUTE_BIT(TF_ROUTE_SNI) | CONFIG_ROUTE_BIT(TF_ROUTE_CONNECT),
     "routes \"sni\" and \"connect\" do"},
    {"default_upstream", CONFIG_ROUTE_BIT(TF_ROUTE_SNI), "route \"sni\" does"},
    {"spoof_source", CONFIG_ROUTE_BIT(TF_ROUTE_TPROXY), "route \"tproxy\" does"},
};

/*
 * Whether the listener's route takes key; when it does not, says so at s,
 * naming the route.  With the route unknown (a bad route was reported)
 * every key is judged on its own.
 */
static bool
config_route_takes(struct config_load *ld, const config_setting_t *s, const char *key,
                   enum tf_route route, bool route_known)
{
    const char *r = config_route_name(route);

    if (s == NULL)
        return false;
    if (!route_known)
        return true;
    for (size_t i = 0; i < CONFIG_ARRAY_LEN(config_route_keys); i++) {
        if (strcmp(config_route_keys[i].key, key) != 0)
            continue;
        if (config_route_keys[i].routes & CONFIG_ROUTE_BIT(route))
            return true;
        /* The keys people carry over from a forward listener get their own words. */
        if (strcmp(key, "upstream") == 0 &&
            (route == TF_ROUTE_REDIRECT || route == TF_ROUTE_TPROXY))
            config_error_at(ld, s, "route \"%s\" takes its upstream from the original "
                            "destination; remove upstream", r);
        else if (strcmp(key, "upstream") == 0 && route == TF_ROUTE_SNI)
            config_error_at(ld, s, "route \"sni\" takes its upstream from the ClientHello's "
                            "server name; remove upstream (set upstream_port, and "
                            "default_upstream for hellos without SNI)");
        else if (strcmp(key, "upstream") == 0 && route == TF_ROUTE_CONNECT)
            config_error_at(ld, s, "route \"connect\" takes its upstream from each CONNECT "
                            "request; remove upstream");
        else if (strcmp(key, "upstream_port") == 0 && route == TF_ROUTE_FORWARD)
            config_error_at(ld, s, "route \"forward\" takes its port from upstream "
                            "(\"host:port\"); remove upstream_port");
        else
            config_error_at(ld, s, "route \"%s\" does not take \"%s\" (%s)", r, key,
                            config_route_keys[i].which);
        return false;
    }
    return true;
}

/*
 * What the route decides: where connections go (upstream, upstream_port,
 * default_upstream), which names or targets are allowed, spoof_source; and
 * mark, which every route takes.  name is the listener's, quoted.
 */
static void
config_listener_route(struct config_load *ld, const config_setting_t *group,
                      const struct config_listener_draft *d, struct tf_listener_conf *lc,
                      bool route_known, const char *name)
{
    char why[CONFIG_LINE_MAX];
    char host[CONFIG_HOST_MAX];
    char q[CONFIG_QUOTE_MAX];
    enum tf_route route = lc->route;

    if (config_route_takes(ld, d->upstream, "upstream", route, route_known)) {
        const char *s = config_setting_get_string(d->upstream);
        if (!config_parse_upstream(s, host, sizeof(host), &lc->upstream_port, why, sizeof(why)))
            config_error_at(ld, d->upstream, "upstream \"%s\": %s",
                            config_quote(q, sizeof(q), s), why);
        else if (!config_set_string(&lc->upstream_host, host))
            config_oom_at(ld, d->upstream);
    } else if (d->upstream == NULL && route_known && route == TF_ROUTE_FORWARD &&
               config_setting_get_member(group, "upstream") == NULL) {
        /* A bad route was reported already; what it would need is anyone's guess. */
        config_error_at(ld, group, "listener \"%s\" has no \"upstream\" (required for route "
                        "\"forward\")", name);
    }

    if (config_route_takes(ld, d->upstream_port, "upstream_port", route, route_known)) {
        long long v = config_integer(d->upstream_port);
        if (v < 1 || v > 65535)
            config_error_at(ld, d->upstream_port, "\"upstream_port\" must be between 1 and 65535, "
                            "not %lld", v);
        else
            lc->upstream_port = (uint16_t)v;
    } else if (d->upstream_port == NULL && route_known && route == TF_ROUTE_SNI &&
               config_setting_get_member(group, "upstream_port") == NULL) {
        config_error_at(ld, group, "listener \"%s\" has no \"upstream_port\" (required for route "
                        "\"sni\": the port server names are connected on)", name);
    }

    if (config_route_takes(ld, d->allow, "allow", route, route_known))
        config_listener_allow(ld, d->allow, route_known ? route : TF_ROUTE_CONNECT, lc);

    if (config_route_takes(ld, d->default_upstream, "default_upstream", route, route_known)) {
        const char *s = config_setting_get_string(d->default_upstream);
        if (!config_parse_upstream(s, host, sizeof(host), &lc->default_port, why, sizeof(why)))
            config_error_at(ld, d->default_upstream, "default_upstream \"%s\": %s",
                            config_quote(q, sizeof(q), s), why);
        else if (!config_set_string(&lc->default_host, host))
            config_oom_at(ld, d->default_upstream);
    }

    if (config_route_takes(ld, d->spoof_source, "spoof_source", route, route_known))
        lc->spoof_source = config_setting_get_bool(d->spoof_source) != 0;

    /* Every route and mode may probe; mitm sees the chain anyway, so it is moot there. */
    if (d->probe != NULL)
        lc->probe = config_setting_get_bool(d->probe) != 0;

    lc->mark = d->mark; /* 0: the top-level mark, filled in once the whole file is read */
}

/*
 * Judges one listener's collected settings, in the order a reader would:
 * name, route and mode first (they decide what else is required), then the
 * addresses.  index is the slot in cfg->listeners; position the place in
 * the list counted from 1, which default names use.
 */
static void
config_listener_finish(struct config_load *ld, const config_setting_t *group,
                       const struct config_listener_draft *d, size_t index, size_t position)
{
    struct tf_listener_conf *lc = &ld->cfg->listeners[index];
    const struct tf_listener_conf *other;
    const struct config_choice *c;
    char why[CONFIG_LINE_MAX];
    char q[CONFIG_QUOTE_MAX], q2[CONFIG_QUOTE_MAX];
    bool route_known = config_setting_get_member(group, "route") == NULL;

    /* A mode of the wrong type was reported: what its groups need is anyone's guess. */
    bool mode_known = d->mode != NULL || config_setting_get_member(group, "mode") == NULL;

    lc->line = (int)config_setting_source_line(group);
    lc->route = TF_ROUTE_FORWARD;
    lc->mode = TF_MODE_PASSTHROUGH;
    config_tls_defaults(&lc->client_tls);
    config_tls_defaults(&lc->upstream_tls);
    config_listener_name(ld, group, d, lc, index, position);
    const char *name = config_quote(q2, sizeof(q2), lc->name != NULL ? lc->name : "?");

    if (d->route != NULL) {
        c = config_choose(ld, d->route, "route", config_routes, CONFIG_ARRAY_LEN(config_routes));
        if (c != NULL) {
            lc->route = (enum tf_route)c->value;
            route_known = true;
        }
    }
    if (d->mode != NULL) {
        c = config_choose(ld, d->mode, "mode", config_modes, CONFIG_ARRAY_LEN(config_modes));
        if (c != NULL)
            lc->mode = (enum tf_mode)c->value;
        else
            mode_known = false;
    }
    config_listener_tls(ld, d->client_tls, &config_client_tls_section, mode_known, lc,
                        &lc->client_tls);
    config_listener_tls(ld, d->upstream_tls, &config_upstream_tls_section, mode_known, lc,
                        &lc->upstream_tls);

    if (d->listen == NULL) {
        if (config_setting_get_member(group, "listen") == NULL)
            config_error_at(ld, group, "listener \"%s\" has no \"listen\" address", name);
    } else {
        const char *s = config_setting_get_string(d->listen);
        if (!config_set_string(&lc->listen, s))
            config_oom_at(ld, d->listen);
        if (!config_parse_listen(s, &lc->addr, &lc->addr_len, why, sizeof(why)))
            config_error_at(ld, d->listen, "listen \"%s\": %s", config_quote(q, sizeof(q), s),
                            why);
        else if ((other = config_listener_at(ld->cfg, index, &lc->addr)) != NULL)
            config_error_at(ld, d->listen,
                            "listen \"%s\" is already used by listener \"%s\" (line %d)",
                            config_quote(q, sizeof(q), s),
                            other->name != NULL ? other->name : "?", other->line);
    }

    config_listener_route(ld, group, d, lc, route_known, name);
}

static void
config_apply_listeners(struct config_load *ld, const config_setting_t *s,
                       const struct config_key *key, const char *label, void *obj)
{
    (void)key;
    (void)label;
    struct tf_config *cfg = obj;
    int n = config_setting_length(s);

    if (n == 0) {
        config_error_at(ld, s, "at least one listener is required");
        return;
    }
    cfg->listeners = calloc((size_t)n, sizeof(*cfg->listeners));
    if (cfg->listeners == NULL) {
        config_oom_at(ld, s);
        return;
    }
    for (int i = 0; i < n; i++) {
        const config_setting_t *elem = config_setting_get_elem(s, (unsigned)i);
        struct config_listener_draft draft;

        if (!config_setting_is_group(elem)) {
            config_error_at(ld, elem, "each listener must be a group ({ ... })");
            continue;
        }
        memset(&draft, 0, sizeof(draft));
        config_walk(ld, &config_listener_section, elem, &draft);
        /* Counted before finishing so that the slot is freed whatever happens. */
        size_t index = cfg->n_listeners++;
        config_listener_finish(ld, elem, &draft, index, (size_t)i + 1);
    }
}

/* ------------------------------------------------------------ faults */

#define CONFIG_VALUE_MAX 64 /* a number written as text */

/*
 * A scalar setting as the text a --fault spec would hold, so that the file
 * and the command line go through one parser (fault.c) and say the same
 * things.  NULL for groups, lists and arrays.  Strings are returned as
 * they are; numbers are written into buf.
 */
static const char *
config_value_text(const config_setting_t *s, char *buf, size_t n)
{
    switch (config_setting_type(s)) {
    case CONFIG_TYPE_STRING:
        return config_setting_get_string(s);
    case CONFIG_TYPE_INT:
        snprintf(buf, n, "%d", config_setting_get_int(s));
        return buf;
    case CONFIG_TYPE_INT64:
        snprintf(buf, n, "%lld", config_setting_get_int64(s));
        return buf;
    case CONFIG_TYPE_BOOL:
        return config_setting_get_bool(s) ? "true" : "false";
    case CONFIG_TYPE_FLOAT:
        return tf_fault_number_text(config_setting_get_float(s), buf, n);
    default:
        return NULL;
    }
}

static const struct tf_fault_rule *
config_rule_named(const struct tf_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_faults; i++)
        if (strcmp(cfg->faults[i]->name, name) == 0)
            return cfg->faults[i];
    return NULL;
}

/* "lab-v4, lab-v6": the listeners a match may name. */
static void
config_listener_names(const struct tf_config *cfg, char *buf, size_t n)
{
    size_t used = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < cfg->n_listeners && used < n; i++)
        if (cfg->listeners[i].name != NULL)
            used += (size_t)snprintf(buf + used, n - used, "%s%s", used > 0 ? ", " : "",
                                     cfg->listeners[i].name);
}

/*
 * The fault named by a rule's "fault" key, or NULL after saying why not.
 * shown is the rule's name as messages call it.
 */
static const struct tf_fault_def *
config_fault_def(struct config_load *ld, const config_setting_t *group, const char *shown)
{
    const config_setting_t *fs = config_setting_get_member(group, "fault");
    const struct tf_fault_def *def;
    char q[CONFIG_QUOTE_MAX];
    char names[CONFIG_LINE_MAX];

    if (fs == NULL) {
        config_error_at(ld, group, "rule \"%s\" has no \"fault\" (see tlsfault --list-faults)",
                        shown);
        return NULL;
    }
    if (config_setting_type(fs) != CONFIG_TYPE_STRING) {
        config_error_at(ld, fs, "\"fault\" must be a string");
        return NULL;
    }
    const char *v = config_setting_get_string(fs);
    def = tf_fault_find(v);
    if (def == NULL) {
        tf_fault_names(names, sizeof(names));
        config_error_at(ld, fs, "fault \"%s\" is unknown; valid: %s", config_quote(q, sizeof(q), v),
                        names);
        return NULL;
    }
    if (!def->available) {
        config_error_at(ld, fs, "fault \"%s\" needs mode %s, which is not available in this "
                        "version", def->name, tf_fault_mode_name(def->mode));
        return NULL;
    }
    return def;
}

/*
 * The rule's name: given (and then plain and unique) or "faultN" after its
 * place in the list.  Written into name; false when it cannot be used.
 */
static bool
config_fault_name(struct config_load *ld, const config_setting_t *group, size_t position,
                  char *name, size_t n)
{
    const config_setting_t *ns = config_setting_get_member(group, "name");
    const struct tf_fault_rule *other;
    char q[CONFIG_QUOTE_MAX];

    if (ns == NULL) {
        snprintf(name, n, "fault%zu", position);
        if ((other = config_rule_named(ld->cfg, name)) != NULL) {
            config_error_at(ld, group,
                            "default name \"%s\" is already used (line %d); give this rule a "
                            "name",
                            name, other->line);
            return false;
        }
        return true;
    }
    if (config_setting_type(ns) != CONFIG_TYPE_STRING) {
        config_error_at(ld, ns, "\"name\" must be a string");
        return false;
    }
    const char *v = config_setting_get_string(ns);
    snprintf(name, n, "%s", v);
    if (!tf_fault_name_valid(v)) {
        config_error_at(ld, ns,
                        "name \"%s\" is not valid (use 1-64 letters, digits, \".\", \"_\" or "
                        "\"-\")",
                        config_quote(q, sizeof(q), v));
        return false;
    }
    if ((other = config_rule_named(ld->cfg, v)) != NULL) {
        config_error_at(ld, ns, "rule name \"%s\" is already used (line %d)", v, other->line);
        return false;
    }
    return true;
}

static void
config_fault_match(struct config_load *ld, const config_setting_t *ms, struct tf_fault_rule *rule)
{
    char why[CONFIG_LINE_MAX];
    char num[CONFIG_VALUE_MAX];

    if (config_setting_type(ms) != CONFIG_TYPE_GROUP) {
        config_error_at(ld, ms, "\"match\" must be a group ({ ... })");
        return;
    }
    int n = config_setting_length(ms);
    for (int i = 0; i < n; i++) {
        const config_setting_t *m = config_setting_get_elem(ms, (unsigned)i);
        const char *key = config_setting_name(m);
        const char *v = config_value_text(m, num, sizeof(num));

        if (v == NULL) {
            config_error_at(ld, m, "\"match.%s\" must be a single value (number, string or "
                            "boolean)", key);
            continue;
        }
        if (!tf_fault_rule_set_match(rule, key, v, why, sizeof(why)))
            config_error_at(ld, m, "%s", why);
    }
}

/*
 * server-ciphers takes OpenSSL strings: whether OpenSSL takes them is
 * known now, so it is said now.  key: the one just set, or NULL for all.
 * Returns false with the reason in why.
 */
static bool
config_fault_tls_strings(struct config_load *ld, const struct tf_fault_rule *rule,
                         const char *key, char *why, size_t whylen)
{
    static const struct {
        const char *key;
        size_t offset;
        enum config_tls_list kind;
    } strings[] = {
        {"ciphers", offsetof(struct tf_fault_args, ciphers), CONFIG_TLS_CIPHERS},
        {"ciphersuites", offsetof(struct tf_fault_args, ciphersuites), CONFIG_TLS_CIPHERSUITES},
    };
    char q[CONFIG_QUOTE_MAX];

    if (rule->def->id != TF_FAULT_SERVER_CIPHERS)
        return true;
    for (size_t i = 0; i < CONFIG_ARRAY_LEN(strings); i++) {
        if (key != NULL && strcmp(key, strings[i].key) != 0)
            continue;
        const char *v = *(char *const *)((const char *)&rule->args + strings[i].offset);
        if (v == NULL)
            continue;
        char bad[CONFIG_LINE_MAX];
        int ok = config_tls_list_ok(ld, strings[i].kind, v, bad, sizeof(bad));
        if (ok < 0)
            return config_fail(why, whylen, "out of memory");
        if (ok == 0)
            return config_fail(why, whylen, "\"%s\": OpenSSL refuses \"%s\" (expected %s)",
                               strings[i].key, config_quote(q, sizeof(q), bad),
                               config_tls_list_hint[strings[i].kind]);
    }
    return true;
}

/* Each parameter beside "fault", in the order written. */
static void
config_fault_params(struct config_load *ld, const config_setting_t *group,
                    struct tf_fault_rule *rule)
{
    const struct tf_fault_def *def = rule->def;
    char why[CONFIG_LINE_MAX];
    char num[CONFIG_VALUE_MAX];
    char q[CONFIG_QUOTE_MAX];
    int n = config_setting_length(group);

    for (int i = 0; i < n; i++) {
        const config_setting_t *m = config_setting_get_elem(group, (unsigned)i);
        const char *key = config_setting_name(m);
        bool known = false;

        if (strcmp(key, "name") == 0 || strcmp(key, "fault") == 0)
            continue;
        if (strcmp(key, "match") == 0) {
            config_fault_match(ld, m, rule);
            continue;
        }
        for (size_t k = 0; k < def->n_params; k++)
            known = known || strcmp(def->params[k].name, key) == 0;
        if (!known) {
            char valid[CONFIG_LINE_MAX];
            size_t used = 0;
            valid[0] = '\0';
            for (size_t k = 0; k < def->n_params; k++)
                used += (size_t)snprintf(valid + used, sizeof(valid) - used, "%s, ",
                                         def->params[k].name);
            /*
             * A match key written beside the parameters is a common slip: say
             * where it goes.  The probe with an empty value never changes the
             * rule (no match key takes ""); only its reason tells known keys
             * from unknown ones.
             */
            char hint[CONFIG_LINE_MAX] = "";
            if (!tf_fault_rule_set_match(rule, key, "", why, sizeof(why)) &&
                strncmp(why, "unknown key", 11) != 0)
                snprintf(hint, sizeof(hint), "; \"%s\" belongs in match = { ... }", key);
            config_error_at(ld, m, "unknown parameter \"%s\" for fault \"%s\"; valid: %sname, "
                            "fault, match%s",
                            config_quote(q, sizeof(q), key), def->name, valid, hint);
            continue;
        }
        const char *v = config_value_text(m, num, sizeof(num));
        if (v == NULL) {
            config_error_at(ld, m, "\"%s\" must be a single value (number, string or boolean)",
                            key);
            continue;
        }
        if (!tf_fault_rule_set(rule, key, v, false, why, sizeof(why)))
            config_error_at(ld, m, "%s", why);
        else if (!config_fault_tls_strings(ld, rule, key, why, sizeof(why)))
            config_error_at(ld, m, "%s", why);
    }
}

/*
 * Reads one rule.  Its name is judged first, then which fault it is (the
 * parameters depend on it), then each parameter and match key in the
 * order written.  A rule whose fault is unknown is reported and left out:
 * its parameters cannot be judged.
 */
static void
config_fault_rule(struct config_load *ld, const config_setting_t *group, size_t position)
{
    struct tf_config *cfg = ld->cfg;
    char name[TF_NAME_MAX + 1 + 16];
    char q[CONFIG_QUOTE_MAX];

    bool name_ok = config_fault_name(ld, group, position, name, sizeof(name));
    const struct tf_fault_def *def = config_fault_def(ld, group, config_quote(q, sizeof(q), name));
    if (def == NULL)
        return;
    struct tf_fault_rule *rule = tf_fault_rule_new(def, name_ok ? name : NULL);
    if (rule == NULL) {
        config_oom_at(ld, group);
        return;
    }
    rule->line = (int)config_setting_source_line(group);
    /* Kept in the snapshot at once, so that it is freed whatever happens next. */
    ld->rule_fault[cfg->n_faults] = config_setting_get_member(group, "fault");
    cfg->faults[cfg->n_faults++] = rule;
    unsigned before = ld->err.count;
    config_fault_params(ld, group, rule);
    tf_fault_rule_complete(rule);
    char why[CONFIG_LINE_MAX];
    /* Parameters that were refused would only be reported twice. */
    if (ld->err.count == before && !tf_fault_rule_check(rule, why, sizeof(why))) {
        const config_setting_t *at = config_setting_get_member(group, "min");
        config_error_at(ld, at != NULL ? at : group, "%s", why);
    }
}

static void
config_apply_faults(struct config_load *ld, const config_setting_t *s,
                    const struct config_key *key, const char *label, void *obj)
{
    (void)key;
    (void)label;
    struct tf_config *cfg = obj;
    int n = config_setting_length(s);

    if (n == 0)
        return;
    cfg->faults = calloc((size_t)n, sizeof(*cfg->faults));
    ld->rule_fault = calloc((size_t)n, sizeof(*ld->rule_fault));
    if (cfg->faults == NULL || ld->rule_fault == NULL) {
        config_oom_at(ld, s);
        return;
    }
    for (int i = 0; i < n; i++) {
        const config_setting_t *elem = config_setting_get_elem(s, (unsigned)i);

        if (!config_setting_is_group(elem)) {
            config_error_at(ld, elem, "each fault rule must be a group ({ ... })");
            continue;
        }
        config_fault_rule(ld, elem, (size_t)i + 1);
    }
}

/*
 * match.listener must name a listener; listeners may be written after the
 * faults, so this is checked once the whole file has been read.
 */
static void
config_check_fault_listeners(struct config_load *ld, const config_setting_t *root)
{
    const config_setting_t *faults = config_setting_get_member(root, "faults");
    char num[CONFIG_VALUE_MAX];
    char names[CONFIG_LINE_MAX];
    char q[CONFIG_QUOTE_MAX];

    if (faults == NULL || ld->cfg->n_listeners == 0 ||
        !config_kind_matches(faults, CONFIG_KIND_LIST))
        return;
    config_listener_names(ld->cfg, names, sizeof(names));
    int n = config_setting_length(faults);
    for (int i = 0; i < n; i++) {
        const config_setting_t *elem = config_setting_get_elem(faults, (unsigned)i);
        const config_setting_t *match, *ls;
        const char *v;

        if (!config_setting_is_group(elem) ||
            (match = config_setting_get_member(elem, "match")) == NULL ||
            !config_setting_is_group(match) ||
            (ls = config_setting_get_member(match, "listener")) == NULL ||
            (v = config_value_text(ls, num, sizeof(num))) == NULL || *v == '\0')
            continue;
        if (tf_config_listener(ld->cfg, v) == NULL)
            config_error_at(ld, ls, "unknown listener \"%s\" in match; valid: %s",
                            config_quote(q, sizeof(q), v), names);
    }
}

/*
 * A mitm fault acts on the forged certificate or the client-facing leg:
 * a rule that can only meet passthrough listeners would never fire, which
 * is a mistake to say, not a rule to keep quietly.
 */
static void
config_check_mitm_faults(struct config_load *ld)
{
    const struct tf_config *cfg = ld->cfg;
    bool any_mitm = false;

    for (size_t i = 0; i < cfg->n_listeners; i++)
        any_mitm = any_mitm || cfg->listeners[i].mode == TF_MODE_MITM;
    for (size_t i = 0; i < cfg->n_faults; i++) {
        const struct tf_fault_rule *rule = cfg->faults[i];
        if (rule->def->mode != TF_FAULT_MODE_MITM || ld->rule_fault == NULL ||
            ld->rule_fault[i] == NULL)
            continue;
        bool can_meet_mitm = any_mitm;
        if (rule->match.listener != NULL) {
            const struct tf_listener_conf *lc = tf_config_listener(cfg, rule->match.listener);
            if (lc == NULL)
                continue; /* an unknown listener was reported already */
            can_meet_mitm = lc->mode == TF_MODE_MITM;
        }
        if (!can_meet_mitm)
            config_error_at(ld, ld->rule_fault[i], "fault \"%s\" needs a listener with mode = "
                            "\"mitm\"", rule->def->name);
    }
}

/* ------------------------------------------------------------ the lab CA */

/* The first mitm listener's mode setting, where a missing CA is reported; NULL: none. */
static const config_setting_t *
config_first_mitm(const config_setting_t *root)
{
    const config_setting_t *ls = config_setting_get_member(root, "listeners");
    int n = ls != NULL && config_kind_matches(ls, CONFIG_KIND_LIST) ? config_setting_length(ls) : 0;

    for (int i = 0; i < n; i++) {
        const config_setting_t *elem = config_setting_get_elem(ls, (unsigned)i);
        const config_setting_t *mode;
        if (config_setting_is_group(elem) &&
            (mode = config_setting_get_member(elem, "mode")) != NULL &&
            config_setting_type(mode) == CONFIG_TYPE_STRING &&
            strcmp(config_setting_get_string(mode), "mitm") == 0)
            return mode;
    }
    return NULL;
}

/*
 * The ca keys that depend on each other: ca.dir holds a whole CA, so it
 * takes nothing else; ca.cert and ca.key come together, as do the two
 * untrusted ones, and the optional files need ca.cert.  Returns true when
 * the group is consistent.
 */
static bool
config_ca_check(struct config_load *ld)
{
    static const char *const with_cert[] = {"cert", "key", "chain", "untrusted_cert",
                                             "untrusted_key"};
    static const char *const pairs[][2] = {{"cert", "key"},
                                           {"key", "cert"},
                                           {"untrusted_cert", "untrusted_key"},
                                           {"untrusted_key", "untrusted_cert"}};
    const config_setting_t *ca = ld->ca;
    unsigned before = ld->err.count;

    if (ca == NULL)
        return true;
    bool has_dir = config_setting_get_member(ca, "dir") != NULL;
    bool has_pair = config_setting_get_member(ca, "cert") != NULL ||
                    config_setting_get_member(ca, "key") != NULL;
    for (size_t i = 0; i < CONFIG_ARRAY_LEN(with_cert); i++) {
        const config_setting_t *s = config_setting_get_member(ca, with_cert[i]);
        if (s == NULL)
            continue;
        if (has_dir)
            config_error_at(ld, s, "ca.dir and ca.%s do not mix: a ca.dir holds the whole CA",
                            with_cert[i]);
        else if (!has_pair)
            config_error_at(ld, s, "ca.%s needs ca.cert and ca.key", with_cert[i]);
    }
    if (has_dir || !has_pair)
        return ld->err.count == before;
    for (size_t i = 0; i < CONFIG_ARRAY_LEN(pairs); i++) {
        const config_setting_t *s = config_setting_get_member(ca, pairs[i][0]);
        if (s != NULL && config_setting_get_member(ca, pairs[i][1]) == NULL)
            config_error_at(ld, s, "ca.%s needs ca.%s", pairs[i][0], pairs[i][1]);
    }
    return ld->err.count == before;
}

/*
 * A mitm listener needs the lab CA, loaded now so that a bad key or a
 * missing file is a -t error rather than a failed first connection.
 * Without a mitm listener the CA is checked for consistency, not loaded.
 */
static void
config_lab_ca(struct config_load *ld, const config_setting_t *root)
{
    struct tf_config *cfg = ld->cfg;
    const config_setting_t *mitm = config_first_mitm(root);
    bool consistent = config_ca_check(ld);

    if (mitm == NULL)
        return;
    if (cfg->ca_dir == NULL && cfg->ca_cert == NULL) {
        /* A ca group whose keys were refused was reported already. */
        if (consistent && (ld->ca == NULL || (config_setting_get_member(ld->ca, "dir") == NULL &&
                                              config_setting_get_member(ld->ca, "cert") == NULL)))
            config_error_at(ld, mitm, "mode \"mitm\" needs a lab CA: " CONFIG_CA_HINT);
        return;
    }
    if (!consistent || (cfg->ca_dir == NULL && cfg->ca_key == NULL))
        return;
    char why[CONFIG_LINE_MAX];
    cfg->lab_ca = tf_lab_ca_load(cfg->ca_dir, cfg->ca_cert, cfg->ca_key, cfg->ca_chain,
                                 cfg->ca_untrusted_cert, cfg->ca_untrusted_key, why, sizeof(why));
    if (cfg->lab_ca == NULL)
        config_error_at(ld, ld->ca, "%s", why);
}

/* ------------------------------------------------------------ the control API */

#define CONFIG_CONTROL_DEFAULT "127.0.0.1:8474"
#define CONFIG_TOKEN_MAX 1024

bool
tf_config_is_loopback(const struct sockaddr *addr)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

    if (addr == NULL)
        return false;
    if (addr->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)addr;
        return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
    }
    if (addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)(const void *)addr;
        const uint8_t *b = sin6->sin6_addr.s6_addr;
        return IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr) ||
               (memcmp(b, mapped, sizeof(mapped)) == 0 && b[12] == 127);
    }
    return false;
}

/*
 * The bearer token: the file's first line, without the line end and
 * surrounding blanks.  It goes into an HTTP header, so it must be
 * printable ASCII without spaces.  Returns a new string, or NULL with the
 * reason in why.
 */
static char *
config_read_token(const char *path, char *why, size_t whylen)
{
    char buf[CONFIG_TOKEN_MAX + 2];
    FILE *f = fopen(path, "r");

    if (f == NULL) {
        config_fail(why, whylen, "cannot read: %s", strerror(errno));
        return NULL;
    }
    bool got = fgets(buf, sizeof(buf), f) != NULL;
    fclose(f);
    size_t n = got ? strlen(buf) : 0;
    if (n > 0 && buf[n - 1] != '\n' && n > CONFIG_TOKEN_MAX) {
        OPENSSL_cleanse(buf, sizeof(buf));
        config_fail(why, whylen, "the token is longer than %d bytes", CONFIG_TOKEN_MAX);
        return NULL;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' ||
                     buf[n - 1] == '\t'))
        buf[--n] = '\0';
    size_t start = 0;
    while (start < n && (buf[start] == ' ' || buf[start] == '\t'))
        start++;
    if (start == n) {
        config_fail(why, whylen, "is empty (its first line is the token)");
        return NULL;
    }
    for (size_t i = start; i < n; i++)
        if (buf[i] <= 0x20 || buf[i] >= 0x7f) {
            OPENSSL_cleanse(buf, sizeof(buf));
            config_fail(why, whylen, "the token must be printable ASCII without spaces");
            return NULL;
        }
    char *token = strdup(buf + start);
    OPENSSL_cleanse(buf, sizeof(buf));
    if (token == NULL)
        config_fail(why, whylen, "out of memory");
    return token;
}

/*
 * The control group, judged as a whole: the address (default
 * 127.0.0.1:8474) must be an address; a non-loopback one needs
 * allow_remote and a token, because whoever reaches the port decides what
 * tlsfault does to the traffic; the token file must hold a token.
 */
static void
config_control_check(struct config_load *ld)
{
    struct tf_control_conf *cc = &ld->cfg->control;
    const config_setting_t *group = ld->control;
    const config_setting_t *ls, *ts;
    char why[CONFIG_LINE_MAX];
    char q[CONFIG_QUOTE_MAX];

    if (!cc->enabled || group == NULL)
        return;
    ls = config_setting_get_member(group, "listen");
    ts = config_setting_get_member(group, "token_file");
    if (ls != NULL && cc->listen == NULL)
        return; /* refused already (wrong type, empty) */
    if (cc->listen == NULL && (cc->listen = strdup(CONFIG_CONTROL_DEFAULT)) == NULL) {
        config_oom_at(ld, group);
        return;
    }
    if (!config_parse_listen(cc->listen, &cc->addr, &cc->addr_len, why, sizeof(why))) {
        config_error_at(ld, ls != NULL ? ls : group, "control.listen: %s", why);
        return;
    }
    if (cc->token_file != NULL) {
        cc->token = config_read_token(cc->token_file, why, sizeof(why));
        if (cc->token == NULL)
            config_error_at(ld, ts, "control.token_file \"%s\": %s", cc->token_file, why);
    }
    if (tf_config_is_loopback((const struct sockaddr *)&cc->addr))
        return;
    if (!cc->allow_remote)
        config_error_at(ld, ls != NULL ? ls : group,
                        "control.listen \"%s\" is not a loopback address: whoever reaches the "
                        "control API decides what happens to the traffic; set "
                        "control.allow_remote = true and a control.token_file to allow it",
                        config_quote(q, sizeof(q), cc->listen));
    else if (ts == NULL)
        config_error_at(ld, ls != NULL ? ls : group,
                        "control.listen \"%s\" is not a loopback address: a remote control API "
                        "needs a control.token_file",
                        config_quote(q, sizeof(q), cc->listen));
}

/*
 * Contract in config.h.  The checks are the file's (config_fault_name,
 * config_check_fault_listeners, config_check_mitm_faults,
 * config_fault_tls_strings), said with the rule's name instead of a line.
 */
struct tf_config *
tf_config_with_rules(struct tf_config *base, struct tf_fault_rule **rules, size_t n, char *err,
                     size_t errlen)
{
    struct tf_config *owner = tf_config_base(base);
    struct tf_config *cfg = NULL;
    struct config_load ld;
    char names[CONFIG_LINE_MAX];
    char why[CONFIG_LINE_MAX];
    bool any_mitm = false;

    memset(&ld, 0, sizeof(ld));
    config_errors_init(&ld.err, err, errlen);
    if (owner == NULL) {
        config_errors_add(&ld.err, "no configuration");
        return NULL;
    }
    config_listener_names(owner, names, sizeof(names));
    for (size_t i = 0; i < owner->n_listeners; i++)
        any_mitm = any_mitm || owner->listeners[i].mode == TF_MODE_MITM;
    for (size_t i = 0; i < n; i++) {
        const struct tf_fault_rule *rule = rules[i];
        bool can_meet_mitm = any_mitm;

        for (size_t j = 0; j < i; j++)
            if (strcmp(rules[j]->name, rule->name) == 0) {
                config_errors_add(&ld.err, "rule name \"%s\" is already used", rule->name);
                break;
            }
        if (rule->match.listener != NULL) {
            const struct tf_listener_conf *lc = tf_config_listener(owner, rule->match.listener);
            if (lc == NULL) {
                config_errors_add(&ld.err, "rule \"%s\": unknown listener \"%s\" in match; "
                                  "valid: %s", rule->name, rule->match.listener, names);
                continue;
            }
            can_meet_mitm = lc->mode == TF_MODE_MITM;
        }
        if (rule->def->mode == TF_FAULT_MODE_MITM && !can_meet_mitm)
            config_errors_add(&ld.err, "rule \"%s\": fault \"%s\" needs a listener with mode "
                              "\"mitm\"", rule->name, rule->def->name);
        else if (!config_fault_tls_strings(&ld, rule, NULL, why, sizeof(why)))
            config_errors_add(&ld.err, "rule \"%s\": %s", rule->name, why);
    }
    SSL_CTX_free(ld.scratch);
    if (ld.err.count > 0)
        return NULL;

    cfg = malloc(sizeof(*cfg));
    struct tf_fault_rule **list = calloc(n > 0 ? n : 1, sizeof(*list));
    if (cfg == NULL || list == NULL) {
        free(cfg);
        free(list);
        config_errors_add(&ld.err, "out of memory");
        return NULL;
    }
    /* A shallow copy: the pointers stay the owner's, which is held below. */
    memcpy(cfg, owner, sizeof(*cfg));
    atomic_init(&cfg->refs, 1);
    for (size_t i = 0; i < n; i++)
        list[i] = tf_fault_rule_ref(rules[i]);
    cfg->faults = list;
    cfg->n_faults = n;
    cfg->shares = tf_config_ref(owner);
    return cfg;
}

/* ------------------------------------------------------------ entry points */

/*
 * @include "x.conf" is resolved against the including file's directory,
 * not the daemon's working directory, so a file means the same thing
 * whoever starts it.  (libconfig 1.5 then also prefixes absolute paths.)
 */
static bool __attribute__((warn_unused_result))
config_include_from(config_t *lc, const char *path)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        return true;
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    char *dir = strndup(path, n);
    if (dir == NULL)
        return false;
    config_set_include_dir(lc, dir); /* copies it */
    free(dir);
    return true;
}

/*
 * Contract in config.h.  A file is refused as a whole: one problem, and
 * the half-built snapshot is freed and NULL returned.
 */
struct tf_config *
tf_config_load(const char *path, char *err, size_t errlen)
{
    struct config_load ld;
    config_t lc;
    bool lc_ready = false;
    FILE *f = NULL;
    struct stat st;

    memset(&ld, 0, sizeof(ld));
    config_errors_init(&ld.err, err, errlen);
    ld.path = path != NULL ? path : "(null)";
    ld.cfg = config_new();
    if (ld.cfg == NULL || (ld.cfg->path = strdup(ld.path)) == NULL) {
        config_errors_add(&ld.err, "%s: out of memory", ld.path);
        goto done;
    }

    /* Our own fopen: libconfig's reading of a file says "file I/O error" without errno. */
    f = fopen(ld.path, "r");
    if (f == NULL) {
        config_errors_add(&ld.err, "%s: cannot open: %s", ld.path, strerror(errno));
        goto done;
    }
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        config_errors_add(&ld.err, "%s: cannot open: %s", ld.path, strerror(EISDIR));
        goto done;
    }

    /* Relative paths in the file (ca.dir, ca_file, ...) are taken from here. */
    const char *slash = strrchr(ld.path, '/');
    if (slash != NULL &&
        (ld.dir = strndup(ld.path, slash == ld.path ? 1 : (size_t)(slash - ld.path))) == NULL) {
        config_errors_add(&ld.err, "%s: out of memory", ld.path);
        goto done;
    }

    config_init(&lc);
    lc_ready = true;
    if (!config_include_from(&lc, ld.path)) {
        config_errors_add(&ld.err, "%s: out of memory", ld.path);
        goto done;
    }
    if (config_read(&lc, f) != CONFIG_TRUE) {
        const char *file = config_error_file(&lc);
        const char *text = config_error_text(&lc);
        config_errors_add(&ld.err, "%s:%d: %s", file != NULL ? file : ld.path,
                          config_error_line(&lc), text != NULL ? text : "syntax error");
        goto done;
    }

    config_walk(&ld, &config_top_section, config_root_setting(&lc), ld.cfg);
    /* The top-level mark may come after the listeners: their default is filled in now. */
    for (size_t i = 0; i < ld.cfg->n_listeners; i++)
        if (ld.cfg->listeners[i].mark == 0)
            ld.cfg->listeners[i].mark = ld.cfg->mark;
    if (config_setting_get_member(config_root_setting(&lc), "listeners") == NULL)
        config_errors_add(&ld.err, "%s: at least one listener is required", ld.path);
    config_check_fault_listeners(&ld, config_root_setting(&lc));
    config_check_mitm_faults(&ld);
    config_lab_ca(&ld, config_root_setting(&lc));
    config_control_check(&ld);

done:
    if (lc_ready)
        config_destroy(&lc);
    if (f != NULL)
        fclose(f);
    SSL_CTX_free(ld.scratch);
    free(ld.rule_fault);
    free(ld.dir);
    if (ld.err.count > 0) {
        config_free(ld.cfg);
        return NULL;
    }
    return ld.cfg;
}

/*
 * Contract in config.h.  The same checks as a file's listener, prefixed by
 * the option; every problem is reported, in the order of the options.
 */
struct tf_config *
tf_config_quick_opts(const struct tf_quick *q, char *err, size_t errlen)
{
    struct config_errors e;
    struct config_load ld;
    struct tf_config *cfg;
    struct tf_listener_conf *lc;
    char why[CONFIG_LINE_MAX];
    char host[CONFIG_HOST_MAX];
    char qt[CONFIG_QUOTE_MAX];
    bool mitm = false;

    config_errors_init(&e, err, errlen);
    /* A load state without a file, for the helpers that try OpenSSL strings. */
    memset(&ld, 0, sizeof(ld));
    cfg = config_new();
    if (q == NULL || cfg == NULL ||
        (cfg->listeners = calloc(1, sizeof(*cfg->listeners))) == NULL) {
        config_errors_add(&e, q == NULL ? "no options" : "out of memory");
        goto done;
    }
    cfg->n_listeners = 1;
    lc = &cfg->listeners[0];
    lc->route = TF_ROUTE_FORWARD;
    lc->mode = TF_MODE_PASSTHROUGH;
    lc->line = 0;
    config_tls_defaults(&lc->client_tls);
    config_tls_defaults(&lc->upstream_tls);
    if ((lc->name = strdup("listener1")) == NULL) {
        config_errors_add(&e, "out of memory");
        goto done;
    }

    if (!config_parse_listen(q->listen, &lc->addr, &lc->addr_len, why, sizeof(why)))
        config_errors_add(&e, "--listen: %s", why);
    else if ((lc->listen = strdup(q->listen)) == NULL)
        config_errors_add(&e, "out of memory");

    bool route_known = true;
    if (q->route != NULL) {
        const struct config_choice *c =
            config_choice_named(config_routes, CONFIG_ARRAY_LEN(config_routes), q->route);
        if (c == NULL || !c->available) {
            char valid[128];
            config_choice_list(config_routes, CONFIG_ARRAY_LEN(config_routes), valid,
                               sizeof(valid));
            config_errors_add(&e, "--route: %s route \"%s\"; valid: %s",
                              c == NULL ? "unknown" : "this version has no",
                              config_quote(qt, sizeof(qt), q->route), valid);
            route_known = false;
        } else {
            lc->route = (enum tf_route)c->value;
        }
    }
    const char *route = config_route_name(lc->route);

    if (route_known && lc->route != TF_ROUTE_FORWARD && q->upstream != NULL) {
        if (lc->route == TF_ROUTE_SNI)
            config_errors_add(&e, "--upstream: --route sni takes the upstream from the "
                                  "ClientHello's server name; use --upstream-port N instead");
        else if (lc->route == TF_ROUTE_CONNECT)
            config_errors_add(&e, "--upstream: --route connect takes the upstream from each "
                                  "CONNECT request; remove --upstream");
        else
            config_errors_add(&e, "--upstream: --route %s takes the upstream from the original "
                                  "destination; remove --upstream", route);
    } else if ((route_known && lc->route == TF_ROUTE_FORWARD) || q->upstream != NULL) {
        if (!config_parse_upstream(q->upstream, host, sizeof(host), &lc->upstream_port, why,
                                   sizeof(why)))
            config_errors_add(&e, "--upstream: %s", why);
        else if ((lc->upstream_host = strdup(host)) == NULL)
            config_errors_add(&e, "out of memory");
    }

    if (q->upstream_port != NULL && route_known && lc->route != TF_ROUTE_SNI) {
        config_errors_add(&e, "--upstream-port: only --route sni takes it%s",
                          lc->route == TF_ROUTE_FORWARD ? " (forward takes the port from "
                                                          "--upstream HOST:PORT)" : "");
    } else if (q->upstream_port != NULL) {
        if (!config_parse_port1(q->upstream_port, &lc->upstream_port, why, sizeof(why)))
            config_errors_add(&e, "--upstream-port: %s", why);
    } else if (lc->route == TF_ROUTE_SNI) {
        config_errors_add(&e, "--route sni needs --upstream-port N (the port server names are "
                              "connected on)");
    }

    if (q->spoof_source && route_known && lc->route != TF_ROUTE_TPROXY)
        config_errors_add(&e, "--spoof-source: only --route tproxy can keep the client's "
                              "address");
    else
        lc->spoof_source = q->spoof_source;

    if (q->mark != NULL && !config_parse_mark(q->mark, &cfg->mark))
        config_errors_add(&e, "--mark: must be " CONFIG_MARK_HINT ", not \"%s\"",
                          config_quote(qt, sizeof(qt), q->mark));
    lc->mark = cfg->mark;

    if (q->mode != NULL) {
        const struct config_choice *c =
            config_choice_named(config_modes, CONFIG_ARRAY_LEN(config_modes), q->mode);
        if (c == NULL)
            config_errors_add(&e, "--mode: unknown mode \"%s\"; valid: passthrough, mitm",
                              config_quote(qt, sizeof(qt), q->mode));
        else
            lc->mode = (enum tf_mode)c->value;
        mitm = lc->mode == TF_MODE_MITM;
    }

    if (q->json != NULL && *q->json == '\0')
        config_errors_add(&e, "--json: must not be empty");
    else if (q->json != NULL && (cfg->log_json = strdup(q->json)) == NULL)
        config_errors_add(&e, "out of memory");

    if (q->keylog != NULL && *q->keylog == '\0')
        config_errors_add(&e, "--keylog: must not be empty");
    else if (q->keylog != NULL && !mitm)
        config_errors_add(&e, "--keylog: only --mode mitm has keys to log");
    else if (q->keylog != NULL && (cfg->log_keylog = strdup(q->keylog)) == NULL)
        config_errors_add(&e, "out of memory");

    if (q->ca_dir != NULL && *q->ca_dir == '\0')
        config_errors_add(&e, "--ca: must not be empty");
    else if (q->ca_dir != NULL && !mitm)
        config_errors_add(&e, "--ca: the lab CA is for --mode mitm");
    else if (q->ca_dir == NULL && mitm)
        config_errors_add(&e, "--mode mitm needs a lab CA: set --ca DIR (make one with "
                              "tlsfault --ca-init DIR)");
    else if (q->ca_dir != NULL && (cfg->ca_dir = strdup(q->ca_dir)) == NULL)
        config_errors_add(&e, "out of memory");
    else if (q->ca_dir != NULL &&
             (cfg->lab_ca = tf_lab_ca_load(cfg->ca_dir, NULL, NULL, NULL, NULL, NULL, why,
                                           sizeof(why))) == NULL)
        config_errors_add(&e, "--ca \"%s\": %s", q->ca_dir, why);

    if (q->control != NULL) {
        struct tf_control_conf *cc = &cfg->control;
        if (!config_parse_listen(q->control, &cc->addr, &cc->addr_len, why, sizeof(why)))
            config_errors_add(&e, "--control: %s", why);
        else if (!tf_config_is_loopback((const struct sockaddr *)&cc->addr))
            config_errors_add(&e, "--control: \"%s\" is not a loopback address; a remote "
                                  "control API needs a configuration file with "
                                  "control.allow_remote and control.token_file",
                              config_quote(qt, sizeof(qt), q->control));
        else if ((cc->listen = strdup(q->control)) == NULL)
            config_errors_add(&e, "out of memory");
        else
            cc->enabled = true;
    }

    if (q->n_faults > 0 && (cfg->faults = calloc(q->n_faults, sizeof(*cfg->faults))) == NULL) {
        config_errors_add(&e, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < q->n_faults; i++) {
        char fallback[32];
        const char *spec = q->faults[i] != NULL ? q->faults[i] : "";
        const char *shown = config_quote(qt, sizeof(qt), spec);

        snprintf(fallback, sizeof(fallback), "fault%zu", i + 1);
        struct tf_fault_rule *rule = tf_fault_rule_parse_spec(spec, fallback, why, sizeof(why));
        if (rule == NULL) {
            config_errors_add(&e, "--fault \"%s\": %s", shown, why);
            continue;
        }
        if (config_rule_named(cfg, rule->name) != NULL)
            config_errors_add(&e, "--fault \"%s\": rule name \"%s\" is already used", shown,
                              rule->name);
        else if (rule->match.listener != NULL &&
                 tf_config_listener(cfg, rule->match.listener) == NULL)
            config_errors_add(&e, "--fault \"%s\": unknown listener \"%s\" in match; valid: %s",
                              shown, rule->match.listener, lc->name);
        else if (rule->def->mode == TF_FAULT_MODE_MITM && lc->mode != TF_MODE_MITM)
            config_errors_add(&e, "--fault \"%s\": fault \"%s\" needs --mode mitm", shown,
                              rule->def->name);
        else if (!config_fault_tls_strings(&ld, rule, NULL, why, sizeof(why)))
            config_errors_add(&e, "--fault \"%s\": %s", shown, why);
        cfg->faults[cfg->n_faults++] = rule;
    }

done:
    SSL_CTX_free(ld.scratch);
    if (e.count > 0) {
        config_free(cfg);
        return NULL;
    }
    return cfg;
}
