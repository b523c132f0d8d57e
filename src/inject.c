/*
 * inject.c — the fault rules of one flow, at work on its bytes.
 *
 * Job: hold the rules that apply to a flow and carry out the passthrough
 * faults on whole records and handshake messages, and say when network
 * faults start.  What a fault means is fault.c's table; how a changed
 * message is re-encoded is rewrite.c's; sockets, timers and pacing are
 * flow.c's.
 *
 * Records: a direction that some rule may still act on is read record by
 * record (a partial record waits in the leg's input).  A record passes
 * unchanged unless a rule picks it.  A record-level rule picks the Nth
 * record of its direction, or by default the first record of application
 * data after the handshake, which is where a middlebox's meddling shows.
 *
 * Messages: a direction that some message-level rule watches (rewrites,
 * alerts, fragment) has its clear handshake records reassembled into
 * messages, which are then framed again into records.  Framing is not part
 * of the handshake transcript (RFC 8446 §5.1), so a message nobody changed
 * reaches the peer intact even if its record boundaries moved.  A record
 * of type handshake is clear in TLS 1.3 always, in TLS 1.2 until that
 * side's ChangeCipherSpec.
 */
#include <event2/buffer.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tlsfault/config.h"
#include "tlsfault/decode.h"
#include "tlsfault/handshake.h"
#include "tlsfault/inject.h"
#include "tlsfault/names.h"
#include "tlsfault/record.h"
#include "tlsfault/rewrite.h"

#define INJECT_MESSAGE_MAX (1024 * 1024) /* larger handshake messages pass unparsed */
#define INJECT_RECORD_MAX (TF_RECORD_HEADER_LEN + TF_RECORD_MAX_BODY)
#define INJECT_FRAGMENT_MAX 16384
#define TLS13 0x0304

enum inject_state {
    INJECT_PENDING, /* waits for the ClientHello's SNI */
    INJECT_ACTIVE,
    INJECT_DONE,    /* fired (if it fires once) or can no longer fire */
};

struct inject_rule {
    struct tf_fault_rule *rule;
    enum inject_state state;
    bool fired;                /* acted at least once on this flow */
    bool fired_dir[2];         /* record-level rules act once per direction */
    bool started[2];           /* network rules: the event for dir was emitted */
    char action[200];          /* what it did, first time */
};

struct inject_dir {
    uint64_t records;
    uint64_t app_records;
    uint64_t data_records;     /* application data after the handshake */
    bool ccs;                  /* sent ChangeCipherSpec (TLS 1.2 meaning) */
    bool clear_over;           /* no more clear handshake records will come */
    bool raw;                  /* not TLS: relayed untouched */
    bool blackhole;            /* everything withheld */
    bool first_hs_seen;
    bool msg_broken;           /* reassembly given up: records pass as they are */
    uint8_t *msg;              /* handshake bytes not yet a whole message */
    size_t msg_len, msg_cap;
    uint8_t *stage;            /* whole messages waiting to be framed */
    size_t stage_len, stage_cap;
};

struct tf_inject {
    struct tf_inspect *ins;
    tf_inspect_emit_fn emit;
    void *arg;
    struct inject_rule *rules;
    size_t n_rules;
    struct inject_dir d[2];
    bool hello_decided;        /* SNI rules decided (or never will be) */
    bool ended;
    char listener[128];
    struct sockaddr_storage client;
    struct sockaddr_storage dest;  /* original destination; family 0 when unknown */
    uint8_t record[INJECT_RECORD_MAX];
};

/* ------------------------------------------------------------ helpers */

static bool
inject_dir_has(enum tf_fault_dir d, enum tf_dir dir)
{
    return (d & (dir == TF_DIR_C2S ? TF_FAULT_DIR_C2S : TF_FAULT_DIR_S2C)) != 0;
}

static enum tf_fault_peer
inject_sender(enum tf_dir dir)
{
    return dir == TF_DIR_C2S ? TF_FAULT_PEER_CLIENT : TF_FAULT_PEER_SERVER;
}

static enum tf_fault_id
inject_id(const struct inject_rule *r)
{
    return r->rule->def->id;
}

static bool
inject_is_network(const struct inject_rule *r)
{
    return r->rule->def->mode == TF_FAULT_MODE_NETWORK;
}

static bool
inject_tls13(const struct tf_inject *inj)
{
    return tf_inspect_version(inj->ins) == TLS13 || tf_inspect_hello_retry(inj->ins);
}

static bool
inject_grow(uint8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return true;
    size_t n = *cap ? *cap : 4096;
    while (n < need)
        n *= 2;
    uint8_t *p = realloc(*buf, n);
    if (p == NULL)
        return false;
    *buf = p;
    *cap = n;
    return true;
}

/* One "fault" event; where may be NULL. */
static void __attribute__((format(printf, 5, 6)))
inject_fire(struct tf_inject *inj, struct inject_rule *r, enum tf_dir dir, json_t *where,
            const char *fmt, ...)
{
    char action[200];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(action, sizeof(action), fmt, ap);
    va_end(ap);
    if (!r->fired)
        snprintf(r->action, sizeof(r->action), "%s", action);
    r->fired = true;
    json_t *obj = json_pack("{s:s, s:s, s:s}", "rule", r->rule->name, "fault",
                            r->rule->def->name, "action", action);
    if (where != NULL) {
        json_object_update(obj, where);
        json_decref(where);
    }
    inj->emit(inj->arg, "fault", dir, obj);
}

static json_t *
inject_where_record(const struct inject_dir *d)
{
    return json_pack("{s:I}", "record", (json_int_t)d->records);
}

static json_t *
inject_where_message(uint8_t type)
{
    const char *name = tf_names_handshake_type(type);
    char buf[16];
    if (name == NULL) {
        snprintf(buf, sizeof(buf), "%u", type);
        name = buf;
    }
    return json_pack("{s:s}", "message", name);
}

/* ------------------------------------------------------------ life */

struct tf_inject *
tf_inject_new(struct tf_config *cfg, const char *listener, const struct sockaddr *client,
              const struct sockaddr *dest, struct tf_inspect *ins, tf_inspect_emit_fn emit, void *arg, bool *oom)
{
    struct tf_fault_flow_info info = { listener, client, dest };
    struct tf_inject *inj = NULL;

    *oom = false;
    if (cfg->n_faults == 0)
        return NULL;
    for (size_t i = 0; i < cfg->n_faults; i++) {
        enum tf_fault_decision dec = tf_fault_rule_decide(cfg->faults[i], &info, false, NULL);
        if (dec == TF_FAULT_NO)
            continue;
        if (inj == NULL) {
            inj = calloc(1, sizeof(*inj));
            if (inj != NULL)
                inj->rules = calloc(cfg->n_faults, sizeof(*inj->rules));
            if (inj == NULL || inj->rules == NULL) {
                free(inj);
                *oom = true;
                return NULL;
            }
        }
        struct inject_rule *r = &inj->rules[inj->n_rules++];
        r->rule = cfg->faults[i];
        r->state = dec == TF_FAULT_YES ? INJECT_ACTIVE : INJECT_PENDING;
    }
    if (inj == NULL)
        return NULL;
    inj->ins = ins;
    inj->emit = emit;
    inj->arg = arg;
    snprintf(inj->listener, sizeof(inj->listener), "%s", listener);
    if (client != NULL) {
        size_t n = client->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                 : sizeof(struct sockaddr_in);
        memcpy(&inj->client, client, n);
    }
    if (dest != NULL) {
        size_t n = dest->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                               : sizeof(struct sockaddr_in);
        memcpy(&inj->dest, dest, n);
    }
    return inj;
}

void
tf_inject_free(struct tf_inject *inj)
{
    if (inj == NULL)
        return;
    for (int i = 0; i < 2; i++) {
        free(inj->d[i].msg);
        free(inj->d[i].stage);
    }
    free(inj->rules);
    free(inj);
}

/* ------------------------------------------------------------ what acts where */

/* Does r act on the records or messages of dir (as opposed to pacing)? */
static bool
inject_acts_on(const struct inject_rule *r, enum tf_dir dir)
{
    const struct tf_fault_args *a = &r->rule->args;
    switch (inject_id(r)) {
    case TF_FAULT_DROP_SERVER_HELLO:
    case TF_FAULT_RECORD_VERSION_TOO_HIGH:
    case TF_FAULT_STRIP_INTERMEDIATES:
        return dir == TF_DIR_S2C;
    case TF_FAULT_RESET_AFTER_CLIENT_HELLO:
    case TF_FAULT_CLOSE_AFTER_CLIENT_HELLO:
    case TF_FAULT_PLAINTEXT_RESPONSE:
    case TF_FAULT_DOWNGRADE:
    case TF_FAULT_STRIP_CIPHERS:
    case TF_FAULT_STRIP_SNI:
    case TF_FAULT_STRIP_ALPN:
        return dir == TF_DIR_C2S;
    case TF_FAULT_ALERT:
    case TF_FAULT_APPEND_BYTES:
    case TF_FAULT_CORRUPT:
    case TF_FAULT_TRUNCATE:
    case TF_FAULT_DUPLICATE:
    case TF_FAULT_FRAGMENT:
        return inject_dir_has(a->dir, dir);
    default:
        return false;
    }
}

/* Rules that need dir's clear handshake reassembled into messages. */
static bool
inject_message_level(const struct inject_rule *r)
{
    switch (inject_id(r)) {
    case TF_FAULT_RESET_AFTER_CLIENT_HELLO:
    case TF_FAULT_CLOSE_AFTER_CLIENT_HELLO:
    case TF_FAULT_ALERT:
    case TF_FAULT_DOWNGRADE:
    case TF_FAULT_STRIP_CIPHERS:
    case TF_FAULT_STRIP_SNI:
    case TF_FAULT_STRIP_ALPN:
    case TF_FAULT_STRIP_INTERMEDIATES:
    case TF_FAULT_FRAGMENT:
        return true;
    default:
        return false;
    }
}

static bool
inject_dir_needs_messages(const struct tf_inject *inj, enum tf_dir dir)
{
    const struct inject_dir *d = &inj->d[dir];
    if (d->msg_broken || d->clear_over)
        return false;
    if (dir == TF_DIR_C2S && !inj->hello_decided)
        for (size_t i = 0; i < inj->n_rules; i++)
            if (inj->rules[i].state == INJECT_PENDING)
                return true;
    for (size_t i = 0; i < inj->n_rules; i++) {
        const struct inject_rule *r = &inj->rules[i];
        if (r->state == INJECT_ACTIVE && inject_message_level(r) && inject_acts_on(r, dir))
            return true;
    }
    return false;
}

bool
tf_inject_wants(const struct tf_inject *inj, enum tf_dir dir)
{
    const struct inject_dir *d = &inj->d[dir];
    if (inj->ended || d->blackhole || d->msg_len > 0)
        return true;
    if (d->raw)
        return false;
    for (size_t i = 0; i < inj->n_rules; i++) {
        const struct inject_rule *r = &inj->rules[i];
        /* Any rule waiting for the SNI, network ones too: the hello decides it. */
        if (r->state == INJECT_PENDING && !inj->hello_decided)
            return true;
        if (inject_is_network(r))
            continue;
        if (r->state != INJECT_ACTIVE || !inject_acts_on(r, dir))
            continue;
        if (inject_message_level(r)) {
            if (!d->clear_over && !d->msg_broken)
                return true;
            continue;
        }
        if (inject_id(r) == TF_FAULT_PLAINTEXT_RESPONSE || inject_id(r) == TF_FAULT_DROP_SERVER_HELLO ||
            inject_id(r) == TF_FAULT_RECORD_VERSION_TOO_HIGH) {
            if (!d->first_hs_seen || inject_id(r) == TF_FAULT_PLAINTEXT_RESPONSE)
                return true;
            continue;
        }
        if (!r->fired_dir[dir])
            return true; /* record-level: until it has fired in this direction */
    }
    return false;
}

/* ------------------------------------------------------------ SNI decisions */

static void
inject_decide_hello(struct tf_inject *inj, bool sni_known, const char *sni)
{
    struct tf_fault_flow_info info = { inj->listener, (const struct sockaddr *)&inj->client,
                                       inj->dest.ss_family ? (const struct sockaddr *)&inj->dest
                                                           : NULL };
    inj->hello_decided = true;
    for (size_t i = 0; i < inj->n_rules; i++) {
        struct inject_rule *r = &inj->rules[i];
        if (r->state != INJECT_PENDING)
            continue;
        if (!sni_known) {
            r->state = INJECT_DONE;
            continue;
        }
        enum tf_fault_decision dec = tf_fault_rule_decide(r->rule, &info, true, sni);
        r->state = dec == TF_FAULT_YES ? INJECT_ACTIVE : INJECT_DONE;
    }
}

/* ------------------------------------------------------------ ending */

static void
inject_end(struct tf_inject *inj, struct tf_inject_result *res, enum tf_inject_end how,
           enum tf_fault_peer to, const struct inject_rule *r)
{
    inj->ended = true;
    res->end = how;
    res->to = to;
    res->rule = r->rule->name;
}

/* ------------------------------------------------------------ messages */

static bool
inject_stage(struct inject_dir *d, const uint8_t *p, size_t n)
{
    if (!inject_grow(&d->stage, &d->stage_cap, d->stage_len + n))
        return false;
    memcpy(d->stage + d->stage_len, p, n);
    d->stage_len += n;
    return true;
}

static size_t
inject_fragment_size(const struct tf_inject *inj, enum tf_dir dir, bool *fragmenting)
{
    size_t size = INJECT_FRAGMENT_MAX;
    *fragmenting = false;
    for (size_t i = 0; i < inj->n_rules; i++) {
        const struct inject_rule *r = &inj->rules[i];
        if (r->state == INJECT_ACTIVE && inject_id(r) == TF_FAULT_FRAGMENT &&
            inject_acts_on(r, dir) && r->rule->args.size > 0 && r->rule->args.size < size) {
            size = r->rule->args.size;
            *fragmenting = true;
        }
    }
    return size;
}

/* Frames the staged messages into records of version and writes them to fwd. */
static void
inject_flush_stage(struct tf_inject *inj, enum tf_dir dir, uint16_t version, struct evbuffer *fwd)
{
    struct inject_dir *d = &inj->d[dir];
    bool fragmenting;
    size_t size = inject_fragment_size(inj, dir, &fragmenting);
    uint8_t *out = NULL;
    size_t out_len = 0;

    if (d->stage_len == 0)
        return;
    if (tf_rewrite_frame(TF_CT_HANDSHAKE, version, d->stage, d->stage_len, size, &out, &out_len)) {
        evbuffer_add(fwd, out, out_len);
        free(out);
    }
    if (fragmenting) {
        size_t records = (d->stage_len + size - 1) / size;
        for (size_t i = 0; i < inj->n_rules; i++) {
            struct inject_rule *r = &inj->rules[i];
            if (r->state == INJECT_ACTIVE && inject_id(r) == TF_FAULT_FRAGMENT &&
                inject_acts_on(r, dir))
                inject_fire(inj, r, dir, json_pack("{s:I}", "bytes", (json_int_t)d->stage_len),
                            "re-framed %zu handshake bytes into %zu records of at most %zu bytes",
                            d->stage_len, records, size);
        }
    }
    d->stage_len = 0;
}

/*
 * The alert rule r answers the message of type that travelled in dir (its
 * sender gets the alert, the message is withheld) or, when `to` names the
 * message's receiver, follows it (the message is already staged).
 */
static void
inject_alert(struct tf_inject *inj, struct inject_rule *r, enum tf_dir dir, uint8_t type,
             uint16_t version, struct evbuffer *fwd, struct evbuffer *back,
             struct tf_inject_result *res)
{
    const struct tf_fault_args *a = &r->rule->args;
    uint8_t rec[7];
    const char *desc = tf_names_alert(a->description);
    const char *level = a->level == 1 ? "warning" : "fatal";
    bool answer = (a->to == inject_sender(dir)) || a->to == 0;

    tf_rewrite_alert_record(version ? version : 0x0303, a->level ? a->level : 2, a->description,
                            rec);
    if (answer) {
        evbuffer_add(back, rec, sizeof(rec));
        inject_fire(inj, r, dir, inject_where_message(type),
                    "withheld the %s and answered the %s with %s alert %s",
                    tf_names_handshake_type(type) ? tf_names_handshake_type(type) : "message",
                    dir == TF_DIR_C2S ? "client" : "server", level, desc ? desc : "?");
    } else {
        /* The message goes first, then the alert, as if its sender had added it. */
        inject_flush_stage(inj, dir, version, fwd);
        evbuffer_add(fwd, rec, sizeof(rec));
        inject_fire(inj, r, dir, inject_where_message(type), "sent %s alert %s to the %s after the %s",
                    level, desc ? desc : "?", dir == TF_DIR_C2S ? "server" : "client",
                    tf_names_handshake_type(type) ? tf_names_handshake_type(type) : "message");
    }
    r->state = INJECT_DONE;
    if (a->level != 1)
        inject_end(inj, res, TF_INJECT_FIN, TF_FAULT_PEER_BOTH, r);
}

static void
inject_plaintext(struct tf_inject *inj, struct inject_rule *r, struct evbuffer *back,
                 struct tf_inject_result *res)
{
    const struct tf_fault_args *a = &r->rule->args;
    uint8_t *page = NULL;
    size_t page_len = 0;
    if (tf_rewrite_http_response(a->status ? a->status : 400, a->bytes, a->bytes_len, &page,
                                 &page_len)) {
        evbuffer_add(back, page, page_len);
        free(page);
    }
    inject_fire(inj, r, TF_DIR_C2S, NULL,
                "answered the client with an HTTP/1.1 %u response (%zu bytes) and closed",
                a->status ? a->status : 400, page_len);
    r->state = INJECT_DONE;
    inject_end(inj, res, TF_INJECT_FIN, TF_FAULT_PEER_BOTH, r);
}

/*
 * Applies the message-level rules to one whole message (header included)
 * and stages what should travel on.  Returns false once the flow ends or
 * the direction stops passing messages.
 */
static bool
inject_message(struct tf_inject *inj, enum tf_dir dir, const uint8_t *m, size_t n,
               uint16_t version, struct evbuffer *fwd, struct evbuffer *back,
               struct tf_inject_result *res)
{
    struct inject_dir *d = &inj->d[dir];
    uint8_t type = m[0];
    uint8_t *owned = NULL;
    bool ok = true, staged = false;

    if (dir == TF_DIR_C2S && type == TF_HS_CLIENT_HELLO && !inj->hello_decided) {
        struct tf_client_hello_info info;
        json_t *scratch = json_object();
        memset(&info, 0, sizeof(info));
        bool parsed = tf_decode_client_hello(m + 4, n - 4, scratch, &info);
        json_decref(scratch);
        inject_decide_hello(inj, true, parsed && info.has_sni ? info.sni : NULL);
        for (size_t i = 0; i < inj->n_rules; i++) {
            struct inject_rule *r = &inj->rules[i];
            if (r->state == INJECT_ACTIVE && inject_id(r) == TF_FAULT_PLAINTEXT_RESPONSE) {
                inject_plaintext(inj, r, back, res);
                return false;
            }
        }
    }
    for (size_t i = 0; i < inj->n_rules && ok; i++) {
        struct inject_rule *r = &inj->rules[i];
        const struct tf_fault_args *a = &r->rule->args;
        if (r->state != INJECT_ACTIVE || !inject_acts_on(r, dir))
            continue;
        struct tf_client_hello_edit edit;
        memset(&edit, 0, sizeof(edit));
        switch (inject_id(r)) {
        case TF_FAULT_RESET_AFTER_CLIENT_HELLO:
        case TF_FAULT_CLOSE_AFTER_CLIENT_HELLO:
            if (type != TF_HS_CLIENT_HELLO)
                continue;
            {
                bool rst = inject_id(r) == TF_FAULT_RESET_AFTER_CLIENT_HELLO;
                inject_fire(inj, r, dir, inject_where_message(type),
                            "%s the client's connection after its ClientHello; the server "
                            "never saw it",
                            rst ? "reset" : "closed");
                r->state = INJECT_DONE;
                inject_end(inj, res, rst ? TF_INJECT_RESET : TF_INJECT_FIN,
                           TF_FAULT_PEER_CLIENT, r);
            }
            ok = false;
            continue;
        case TF_FAULT_ALERT: {
            uint8_t want = a->after >= 0 ? (uint8_t)a->after : TF_HS_CLIENT_HELLO;
            if (type != want)
                continue;
            bool answer = a->to == 0 || a->to == inject_sender(dir);
            if (!answer && !inject_stage(d, m, n))
                d->msg_broken = true;
            inject_alert(inj, r, dir, type, version, fwd, back, res);
            if (answer || inj->ended)
                ok = false;
            else
                staged = true;
            continue;
        }
        case TF_FAULT_DOWNGRADE:
            edit.max_version = a->version;
            edit.remove_supported_versions = a->remove_extension;
            break;
        case TF_FAULT_STRIP_CIPHERS:
            edit.strip_ciphers = a->pattern;
            break;
        case TF_FAULT_STRIP_SNI:
            edit.strip_sni = true;
            break;
        case TF_FAULT_STRIP_ALPN:
            edit.strip_alpn = true;
            break;
        case TF_FAULT_STRIP_INTERMEDIATES: {
            if (type != TF_HS_CERTIFICATE)
                continue;
            uint8_t *out = NULL;
            size_t out_len = 0;
            unsigned kept = 0, total = 0;
            char why[128] = "";
            enum tf_rewrite rw = tf_rewrite_certificate(m + 4, n - 4, inject_tls13(inj),
                                                        a->keep_mask ? a->keep_mask : 1, &out,
                                                        &out_len, &kept, &total, why,
                                                        sizeof(why));
            if (rw == TF_REWRITE_OK) {
                free(owned);
                owned = out;
                m = out;
                n = out_len;
                inject_fire(inj, r, dir, inject_where_message(type),
                            "rewrote the Certificate: kept %u of %u certificates", kept, total);
            } else {
                inject_fire(inj, r, dir, inject_where_message(type), "Certificate left as is: %s",
                            rw == TF_REWRITE_SAME ? "nothing to remove" : why);
            }
            r->state = INJECT_DONE;
            continue;
        }
        default:
            continue;
        }
        /* One of the ClientHello edits. */
        if (type != TF_HS_CLIENT_HELLO)
            continue;
        uint8_t *out = NULL;
        size_t out_len = 0;
        char changes[256] = "", why[128] = "";
        enum tf_rewrite rw = tf_rewrite_client_hello(m + 4, n - 4, &edit, &out, &out_len, changes,
                                                     sizeof(changes), why, sizeof(why));
        if (rw == TF_REWRITE_OK) {
            free(owned);
            owned = out;
            m = out;
            n = out_len;
            inject_fire(inj, r, dir, inject_where_message(type), "rewrote the ClientHello: %s",
                        changes);
        } else {
            inject_fire(inj, r, dir, inject_where_message(type),
                        "ClientHello left as is: %s",
                        rw == TF_REWRITE_SAME ? "nothing to change" : why);
        }
    }
    if (ok && !staged && !inject_stage(d, m, n))
        d->msg_broken = true;
    free(owned);
    return ok;
}

/* A clear handshake record of a direction whose messages are watched. */
static void
inject_handshake_record(struct tf_inject *inj, enum tf_dir dir, const uint8_t *rec, size_t n,
                        struct evbuffer *fwd, struct evbuffer *back, struct tf_inject_result *res)
{
    struct inject_dir *d = &inj->d[dir];
    uint16_t version = (uint16_t)(rec[1] << 8 | rec[2]);
    const uint8_t *body = rec + TF_RECORD_HEADER_LEN;
    size_t blen = n - TF_RECORD_HEADER_LEN;

    if (!inject_grow(&d->msg, &d->msg_cap, d->msg_len + blen)) {
        d->msg_broken = true;
        evbuffer_add(fwd, rec, n);
        return;
    }
    memcpy(d->msg + d->msg_len, body, blen);
    d->msg_len += blen;

    size_t off = 0;
    while (d->msg_len - off >= TF_HS_HEADER_LEN) {
        const uint8_t *m = d->msg + off;
        size_t mlen = (size_t)m[1] << 16 | (size_t)m[2] << 8 | m[3];
        if (mlen > INJECT_MESSAGE_MAX) {
            d->msg_broken = true;
            break;
        }
        if (d->msg_len - off < TF_HS_HEADER_LEN + mlen)
            break;
        if (!inject_message(inj, dir, m, TF_HS_HEADER_LEN + mlen, version, fwd, back, res)) {
            /* Withheld or ended: what follows in this record goes nowhere either. */
            d->msg_len = 0;
            d->stage_len = 0;
            if (!inj->ended)
                d->blackhole = true;
            return;
        }
        off += TF_HS_HEADER_LEN + mlen;
    }
    memmove(d->msg, d->msg + off, d->msg_len - off);
    d->msg_len -= off;
    if (d->msg_broken && d->msg_len > 0) {
        /* Pass the unparsed remainder on as it came. */
        inject_stage(d, d->msg, d->msg_len);
        d->msg_len = 0;
    }
    inject_flush_stage(inj, dir, version, fwd);
}

/* ------------------------------------------------------------ records */

/* Record-level rules: returns false when the flow ends here. */
static bool
inject_record(struct tf_inject *inj, enum tf_dir dir, uint8_t *rec, size_t n,
              struct evbuffer *fwd, struct tf_inject_result *res)
{
    struct inject_dir *d = &inj->d[dir];
    uint8_t type = rec[0];
    uint8_t *body = rec + TF_RECORD_HEADER_LEN;
    size_t blen = n - TF_RECORD_HEADER_LEN;
    unsigned copies = 1;
    json_t *append = NULL;
    const uint8_t *append_bytes = NULL;
    size_t append_len = 0;

    for (size_t i = 0; i < inj->n_rules; i++) {
        struct inject_rule *r = &inj->rules[i];
        const struct tf_fault_args *a = &r->rule->args;
        if (r->state != INJECT_ACTIVE || !inject_acts_on(r, dir) || r->fired_dir[dir])
            continue;
        enum tf_fault_id id = inject_id(r);
        if (id != TF_FAULT_APPEND_BYTES && id != TF_FAULT_CORRUPT && id != TF_FAULT_TRUNCATE &&
            id != TF_FAULT_DUPLICATE)
            continue;
        bool target = a->record ? d->records == a->record
                                : (type == TF_CT_APPLICATION_DATA && d->data_records == 1);
        if (!target)
            continue;
        r->fired_dir[dir] = true;
        const char *ct = tf_names_content_type(type);
        switch (id) {
        case TF_FAULT_CORRUPT: {
            if (blen == 0)
                break;
            long off = a->offset < 0 ? (long)blen + a->offset : a->offset;
            if (off < 0)
                off = 0;
            if ((size_t)off >= blen)
                off = (long)blen - 1;
            uint8_t mask = a->xor_mask ? a->xor_mask : 1;
            body[off] ^= mask;
            inject_fire(inj, r, dir, inject_where_record(d),
                        "flipped bits 0x%02x of byte %ld of %s record %llu (%zu bytes)", mask, off,
                        ct ? ct : "?", (unsigned long long)d->records, blen);
            break;
        }
        case TF_FAULT_TRUNCATE: {
            size_t keep = a->keep ? a->keep : n / 2;
            if (keep > n)
                keep = n;
            evbuffer_add(fwd, rec, keep);
            inject_fire(inj, r, dir, inject_where_record(d),
                        "cut %s record %llu to %zu of its %zu bytes%s", ct ? ct : "?",
                        (unsigned long long)d->records, keep, n,
                        a->then_close ? ", then closed" : "");
            if (a->then_close)
                inject_end(inj, res, TF_INJECT_FIN, TF_FAULT_PEER_BOTH, r);
            else
                d->blackhole = true;
            return false;
        }
        case TF_FAULT_DUPLICATE:
            copies += a->times ? a->times : 1;
            inject_fire(inj, r, dir, inject_where_record(d), "sent %s record %llu %u times",
                        ct ? ct : "?", (unsigned long long)d->records, copies);
            break;
        case TF_FAULT_APPEND_BYTES:
            append_bytes = a->bytes;
            append_len = a->bytes_len;
            append = inject_where_record(d);
            inject_fire(inj, r, dir, append, "inserted %zu bytes after %s record %llu",
                        append_len, ct ? ct : "?", (unsigned long long)d->records);
            break;
        default:
            break;
        }
    }
    for (unsigned c = 0; c < copies; c++)
        evbuffer_add(fwd, rec, n);
    if (append_bytes != NULL && append_len > 0)
        evbuffer_add(fwd, append_bytes, append_len);
    return true;
}

/* The first clear handshake record from the server: its ServerHello. */
static bool
inject_server_hello_record(struct tf_inject *inj, uint8_t *rec, size_t n)
{
    struct inject_dir *d = &inj->d[TF_DIR_S2C];
    uint8_t *body = rec + TF_RECORD_HEADER_LEN;
    size_t blen = n - TF_RECORD_HEADER_LEN;
    bool hello = blen > 0 && body[0] == TF_HS_SERVER_HELLO;

    d->first_hs_seen = true;
    for (size_t i = 0; i < inj->n_rules && hello; i++) {
        struct inject_rule *r = &inj->rules[i];
        const struct tf_fault_args *a = &r->rule->args;
        if (r->state != INJECT_ACTIVE)
            continue;
        if (inject_id(r) == TF_FAULT_DROP_SERVER_HELLO) {
            d->blackhole = true;
            r->state = INJECT_DONE;
            inject_fire(inj, r, TF_DIR_S2C, inject_where_record(d),
                        "withheld the ServerHello and everything after it; the client's "
                        "connection stays open");
            return false;
        }
        if (inject_id(r) == TF_FAULT_RECORD_VERSION_TOO_HIGH) {
            const char *fields = a->fields ? a->fields : "record";
            bool rec_field = strcmp(fields, "hello") != 0;
            bool hello_field = strcmp(fields, "record") != 0 && blen >= 6;
            uint16_t v = a->version ? a->version : 0x0400;
            uint16_t was_rec = (uint16_t)(rec[1] << 8 | rec[2]);
            if (rec_field) {
                rec[1] = (uint8_t)(v >> 8);
                rec[2] = (uint8_t)v;
            }
            if (hello_field) {
                body[4] = (uint8_t)(v >> 8);
                body[5] = (uint8_t)v;
            }
            r->state = INJECT_DONE;
            inject_fire(inj, r, TF_DIR_S2C, inject_where_record(d),
                        "raised the ServerHello's %s version from 0x%04x to 0x%04x",
                        rec_field && hello_field ? "record and legacy"
                        : rec_field              ? "record"
                                                 : "legacy",
                        was_rec, v);
        }
    }
    return true;
}

static void
inject_one_record(struct tf_inject *inj, enum tf_dir dir, uint8_t *rec, size_t n,
                  struct evbuffer *fwd, struct evbuffer *back, struct tf_inject_result *res)
{
    struct inject_dir *d = &inj->d[dir];
    uint8_t type = rec[0];
    bool tls13 = inject_tls13(inj);

    d->records++;
    if (type == TF_CT_APPLICATION_DATA) {
        d->app_records++;
        /*
         * Application data proper: in TLS 1.2 every such record; in TLS 1.3
         * the handshake's own encrypted records look the same, so only
         * those after the client's Finished (its first such record).
         */
        bool proper = !tls13 || (dir == TF_DIR_C2S ? d->app_records >= 2
                                                   : tf_inspect_handshake_done(inj->ins));
        if (proper)
            d->data_records++;
    }
    bool clear_hs = type == TF_CT_HANDSHAKE && (!d->ccs || tls13);
    if (type == TF_CT_CHANGE_CIPHER_SPEC && !tls13)
        d->ccs = true;

    if (clear_hs && dir == TF_DIR_S2C && !d->first_hs_seen &&
        !inject_server_hello_record(inj, rec, n))
        return;
    if (clear_hs && inject_dir_needs_messages(inj, dir)) {
        inject_handshake_record(inj, dir, rec, n, fwd, back, res);
        return;
    }
    if (type == TF_CT_APPLICATION_DATA || (type == TF_CT_CHANGE_CIPHER_SPEC && !tls13) ||
        (type == TF_CT_HANDSHAKE && !clear_hs)) {
        d->clear_over = true;
        if (dir == TF_DIR_C2S && !inj->hello_decided)
            inject_decide_hello(inj, false, NULL);
    }
    if (d->msg_len > 0) {
        /* A non-handshake record interrupts a partial message: pass it on as it is. */
        inject_stage(d, d->msg, d->msg_len);
        d->msg_len = 0;
        inject_flush_stage(inj, dir, (uint16_t)(rec[1] << 8 | rec[2]), fwd);
    }
    inject_record(inj, dir, rec, n, fwd, res);
}

void
tf_inject_feed(struct tf_inject *inj, enum tf_dir dir, struct evbuffer *in, struct evbuffer *fwd,
               struct evbuffer *back, struct tf_inject_result *res)
{
    struct inject_dir *d = &inj->d[dir];

    memset(res, 0, sizeof(*res));
    if (dir == TF_DIR_C2S && evbuffer_get_length(in) > 0) {
        for (size_t i = 0; i < inj->n_rules && !inj->ended; i++) {
            struct inject_rule *r = &inj->rules[i];
            if (r->state == INJECT_ACTIVE && inject_id(r) == TF_FAULT_PLAINTEXT_RESPONSE)
                inject_plaintext(inj, r, back, res);
        }
    }
    for (;;) {
        size_t have = evbuffer_get_length(in);
        if (inj->ended || d->blackhole) {
            evbuffer_drain(in, have);
            return;
        }
        if (d->raw) {
            evbuffer_add_buffer(fwd, in);
            return;
        }
        if (have < TF_RECORD_HEADER_LEN)
            return;
        uint8_t hdr[TF_RECORD_HEADER_LEN];
        evbuffer_copyout(in, hdr, sizeof(hdr));
        size_t blen = (size_t)hdr[3] << 8 | hdr[4];
        if (hdr[0] < TF_CT_CHANGE_CIPHER_SPEC || hdr[0] > TF_CT_HEARTBEAT || hdr[1] != 3 ||
            blen > TF_RECORD_MAX_BODY) {
            /* Not TLS (the inspector says what it is): relayed untouched from here on. */
            d->raw = true;
            if (d->msg_len > 0) {
                evbuffer_add(fwd, d->msg, d->msg_len);
                d->msg_len = 0;
            }
            if (dir == TF_DIR_C2S && !inj->hello_decided)
                inject_decide_hello(inj, false, NULL);
            continue;
        }
        if (have < TF_RECORD_HEADER_LEN + blen)
            return;
        evbuffer_remove(in, inj->record, TF_RECORD_HEADER_LEN + blen);
        inject_one_record(inj, dir, inj->record, TF_RECORD_HEADER_LEN + blen, fwd, back, res);
        if (res->end != TF_INJECT_GO_ON)
            return;
        if (!tf_inject_wants(inj, dir)) {
            /* Nothing left to do here: the rest moves as it is. */
            evbuffer_add_buffer(fwd, in);
            return;
        }
    }
}

/* ------------------------------------------------------------ network */

void
tf_inject_network(struct tf_inject *inj, enum tf_dir dir, uint64_t bytes,
                  struct tf_inject_shape *shape, struct tf_inject_result *res)
{
    memset(shape, 0, sizeof(*shape));
    memset(res, 0, sizeof(*res));
    for (size_t i = 0; i < inj->n_rules && !inj->ended; i++) {
        struct inject_rule *r = &inj->rules[i];
        const struct tf_fault_args *a = &r->rule->args;
        if (r->state != INJECT_ACTIVE || !inject_is_network(r) || !inject_dir_has(a->dir, dir))
            continue;
        if (bytes == 0 || bytes <= a->after_bytes)
            continue;
        bool first = !r->started[dir];
        r->started[dir] = true;
        json_t *where = json_pack("{s:I}", "after_bytes", (json_int_t)a->after_bytes);
        switch (inject_id(r)) {
        case TF_FAULT_DELAY:
            if (a->ms > shape->delay_ms)
                shape->delay_ms = a->ms;
            if (a->jitter_ms > shape->jitter_ms)
                shape->jitter_ms = a->jitter_ms;
            if (first)
                inject_fire(inj, r, dir, where, "delaying %s by %u ms (jitter %u ms)",
                            tf_dir_name(dir), a->ms, a->jitter_ms);
            else
                json_decref(where);
            break;
        case TF_FAULT_BANDWIDTH:
            if (a->rate > 0 && (shape->rate == 0 || a->rate < shape->rate))
                shape->rate = a->rate;
            if (first)
                inject_fire(inj, r, dir, where, "limiting %s to %llu bytes/s", tf_dir_name(dir),
                            (unsigned long long)a->rate);
            else
                json_decref(where);
            break;
        case TF_FAULT_SLICE:
            if (a->size > 0 && (shape->piece == 0 || a->size < shape->piece))
                shape->piece = a->size;
            if (a->pause_ms > shape->pause_ms)
                shape->pause_ms = a->pause_ms;
            if (first)
                inject_fire(inj, r, dir, where, "cutting %s into %u-byte writes %u ms apart",
                            tf_dir_name(dir), a->size, a->pause_ms);
            else
                json_decref(where);
            break;
        case TF_FAULT_STALL:
            shape->stall = true;
            if (first)
                inject_fire(inj, r, dir, where,
                            "stalled %s: bytes are read and withheld, sockets stay open",
                            tf_dir_name(dir));
            else
                json_decref(where);
            break;
        case TF_FAULT_RESET:
        case TF_FAULT_CLOSE: {
            bool rst = inject_id(r) == TF_FAULT_RESET;
            enum tf_fault_peer to = a->to ? a->to : TF_FAULT_PEER_BOTH;
            inject_fire(inj, r, dir, where, "%s %s after %llu bytes of %s",
                        rst ? "reset (RST)" : "closed (FIN)",
                        to == TF_FAULT_PEER_BOTH     ? "both connections"
                        : to == TF_FAULT_PEER_CLIENT ? "the client's connection"
                                                     : "the server's connection",
                        (unsigned long long)a->after_bytes, tf_dir_name(dir));
            r->state = INJECT_DONE;
            inject_end(inj, res, rst ? TF_INJECT_RESET : TF_INJECT_FIN, to, r);
            return;
        }
        default:
            json_decref(where);
            break;
        }
    }
}

/* ------------------------------------------------------------ reporting */

void
tf_inject_summarize(const struct tf_inject *inj, json_t *end)
{
    json_t *list = NULL;
    for (size_t i = 0; i < inj->n_rules; i++) {
        const struct inject_rule *r = &inj->rules[i];
        if (!r->fired)
            continue;
        if (list == NULL)
            list = json_array();
        json_array_append_new(list, json_pack("{s:s, s:s, s:s}", "rule", r->rule->name, "fault",
                                              r->rule->def->name, "action", r->action));
    }
    if (list != NULL)
        json_object_set_new_nocheck(end, "faults", list);
}

void
tf_inject_hello(struct tf_inject *inj, const char *sni)
{
    if (!inj->hello_decided)
        inject_decide_hello(inj, true, sni);
}

const struct tf_fault_rule *
tf_inject_mitm_rule(const struct tf_inject *inj, size_t i)
{
    size_t seen = 0;
    for (size_t k = 0; k < inj->n_rules; k++) {
        const struct inject_rule *r = &inj->rules[k];
        if (r->state != INJECT_ACTIVE || r->rule->def->mode != TF_FAULT_MODE_MITM)
            continue;
        if (seen++ == i)
            return r->rule;
    }
    return NULL;
}

void
tf_inject_mitm_fired(struct tf_inject *inj, const struct tf_fault_rule *rule, const char *action)
{
    for (size_t k = 0; k < inj->n_rules; k++)
        if (inj->rules[k].rule == rule)
            inject_fire(inj, &inj->rules[k], TF_DIR_S2C, NULL, "%s", action);
}

bool
tf_inject_damaged(const struct tf_inject *inj)
{
    for (size_t i = 0; i < inj->n_rules; i++) {
        enum tf_fault_id id = inject_id(&inj->rules[i]);
        if (inj->rules[i].fired && (id == TF_FAULT_APPEND_BYTES || id == TF_FAULT_CORRUPT ||
                                    id == TF_FAULT_TRUNCATE || id == TF_FAULT_DUPLICATE))
            return true;
    }
    return false;
}

void
tf_inject_describe(const struct tf_inject *inj, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < inj->n_rules && used < len; i++) {
        const struct inject_rule *r = &inj->rules[i];
        if (!r->fired)
            continue;
        int w = snprintf(buf + used, len - used, "%sfault %s (rule %s): %s", used ? "; " : "",
                         r->rule->def->name, r->rule->name, r->action);
        if (w < 0)
            break;
        used += (size_t)w;
    }
}
