/*
 * inspect.c — a bystander's view of one TLS connection, from its two byte
 * streams.
 *
 * Job: drive a record reader and a handshake reader per direction, decide
 * which records are readable, decode what is, and report events.  It keeps
 * the small state a bystander can know (RFC 8446 §2, RFC 5246 §7.3):
 *   - TLS 1.2: a direction is encrypted after its own ChangeCipherSpec; the
 *     handshake is over when both sides have sent ChangeCipherSpec and then
 *     an encrypted record (their Finished).  A server ChangeCipherSpec
 *     before any Certificate/ServerHelloDone means an abbreviated
 *     (resumed) handshake.
 *   - TLS 1.3 (ServerHello's supported_versions says 0x0304): everything
 *     after the ServerHello is encrypted both ways; ChangeCipherSpec is only
 *     the middlebox-compatibility dummy (RFC 8446 §D.4).  The handshake is
 *     over once each side has sent an encrypted record after the
 *     ServerHello (the client's is its Finished).
 *   - A HelloRetryRequest is a ServerHello with a fixed random; the client
 *     then sends a second, clear ClientHello.
 * After the handshake both readers only skim record headers, so the flow
 * relays at the cost of a TCP relay while still noticing encrypted alerts
 * and renegotiation.  Sockets, timing and faults are the flow's business.
 * For the verdict it also keeps the offered versions and suites, the
 * server's clear chain, a log of the messages, and a TLS 1.3 client's
 * first protected record when it is too small to be a Finished (an alert).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tlsfault/cursor.h"
#include "tlsfault/decode.h"
#include "tlsfault/events.h"
#include "tlsfault/handshake.h"
#include "tlsfault/inspect.h"
#include "tlsfault/jsontext.h"
#include "tlsfault/names.h"
#include "tlsfault/record.h"

#define INSPECT_PREVIEW 48
#define TLS13 0x0304
/*
 * A protected TLS 1.3 record this small cannot be a Finished (32+ bytes of
 * verify_data, a content type and a 16-byte tag): from the client right
 * after the server's flight it is an alert (2 bytes + type + tag = 19) or,
 * with 0-RTT, EndOfEarlyData (21).  Only a later record is its Finished.
 */
#define INSPECT_TLS13_SMALL_RECORD 24
/* The message log kept for the verdict (verdict.c): enough for any handshake. */
#define INSPECT_MESSAGES_MAX 64
#define INSPECT_MESSAGES_FIRST 16

/*
 * One entry of that log, {dir, type[, count][, description]} to the
 * verdict.  Kept as plain entries while the handshake runs (a connection
 * logs a dozen, and building JSON objects for each cost more than the
 * decoding), written as shared text once it is over (tf_inspect_pack).
 */
struct inspect_msg {
    const char *type;    /* a static name; NULL: an unknown handshake type (code) */
    json_t *description; /* "alert" only: the alert's description (a reference) */
    uint16_t count;      /* "encrypted": consecutive protected records of dir */
    uint8_t code;
    uint8_t dir;
};

struct inspect_dir {
    struct tf_inspect *ins;
    enum tf_dir dir;
    struct tf_record_reader rec;
    struct tf_hs_reader *hs;    /* NULL once the handshake is over */
    bool encrypted;             /* later records of this direction are unreadable */
    bool ccs_seen;
    uint32_t encrypted_records; /* since this direction became encrypted */
    size_t small_first;         /* TLS 1.3 client: length of a first protected record too
                                 * small to be its Finished (0: none) */
    uint64_t skimmed;           /* records after the handshake */
    uint64_t data_records;      /* after the handshake: records that carry data (TLS 1.3:
                                 * those too big to be an alert) */
    bool non_tls;
    const char *non_tls_kind;   /* a static name */
    uint8_t preview[INSPECT_PREVIEW];
    size_t preview_len;
    uint64_t fed;
};

struct tf_inspect {
    struct inspect_dir d[2];
    tf_inspect_emit_fn emit;
    void *arg;
    uint16_t version;           /* negotiated, 0 until a ServerHello */
    uint16_t cipher_suite;
    bool server_hello_seen;     /* a real ServerHello, not a HelloRetryRequest */
    bool hello_retry_request;
    bool server_flight_full;    /* Certificate or ServerHelloDone seen: not resumed */
    bool resumed;
    bool done;
    uint16_t client_max_version;
    char *sni;                  /* the first ClientHello's server_name (owned) */
    bool has_sni;
    bool client_hello_seen;
    bool client_hello_lost;     /* the client's first handshake message is none we can read */
    bool quiet;
    bool server_first;          /* the server's bytes came before any of the client's */
    const char *server_first_message; /* then its first handshake message (a static name) */
    bool app_records;           /* an event per application data record after the handshake */
    json_t *alerts;
    json_t *alpn_offered;
    char last_message[40];      /* fits "alert bad_certificate_status_response" */
    enum tf_dir last_dir;
    /* kept for the verdict (tf_inspect_facts) */
    json_t *offered_versions;   /* the first ClientHello's supported_versions */
    uint16_t *suites;           /* ... and its cipher_suites, as codes */
    size_t n_suites;
    bool suites_seen;
    json_t *server_chain;       /* the server's first decoded Certificate chain */
    bool downgrade_sentinel;    /* the ServerHello's random ends with DOWNGRD */
    char sentinel[8];           /* "tls12" / "tls11" */
    struct inspect_msg *log;    /* the message log, in order, capped */
    size_t n_log, cap_log;
    /*
     * Once the handshake is over the lists above are kept as JSON text
     * instead (tf_inspect_pack): an idle connection then holds a few
     * hundred bytes of them rather than kilobytes of objects.
     */
    const char *versions_text, *messages_text;
    /*
     * The fields of the last "encrypted" and "change_cipher_spec" event,
     * filled in again for the next one when the sink let go of them: a
     * handshake sends several, and making and freeing an object each time
     * was most of their cost.  Dropped when the inspector packs.
     */
    json_t *spare_encrypted, *spare_ccs;
};

const char *
tf_dir_name(enum tf_dir dir)
{
    return dir == TF_DIR_C2S ? "c2s" : "s2c";
}

static const char *
inspect_side(enum tf_dir dir)
{
    return dir == TF_DIR_C2S ? "client" : "server";
}

static void
inspect_free_log(struct tf_inspect *ins)
{
    for (size_t i = 0; i < ins->n_log; i++)
        json_decref(ins->log[i].description);
    free(ins->log);
    ins->log = NULL;
    ins->n_log = ins->cap_log = 0;
}

struct tf_inspect *
tf_inspect_new(size_t handshake_message_max, tf_inspect_emit_fn emit, void *arg)
{
    struct tf_inspect *ins = calloc(1, sizeof(*ins));
    if (ins == NULL)
        return NULL;
    ins->emit = emit;
    ins->arg = arg;
    for (int i = 0; i < 2; i++) {
        ins->d[i].ins = ins;
        ins->d[i].dir = (enum tf_dir)i;
        tf_record_reader_init(&ins->d[i].rec);
        ins->d[i].hs = malloc(sizeof(*ins->d[i].hs));
        if (ins->d[i].hs == NULL) {
            tf_inspect_free(ins);
            return NULL;
        }
        tf_hs_reader_init(ins->d[i].hs, handshake_message_max);
    }
    return ins;
}

void
tf_inspect_free(struct tf_inspect *ins)
{
    if (ins == NULL)
        return;
    for (int i = 0; i < 2; i++) {
        tf_record_reader_release(&ins->d[i].rec);
        if (ins->d[i].hs != NULL)
            tf_hs_reader_release(ins->d[i].hs);
        free(ins->d[i].hs);
    }
    json_decref(ins->alerts);
    json_decref(ins->alpn_offered);
    json_decref(ins->offered_versions);
    json_decref(ins->server_chain);
    inspect_free_log(ins);
    free(ins->sni);
    free(ins->suites);
    tf_json_text_release(ins->versions_text);
    tf_json_text_release(ins->messages_text);
    json_decref(ins->spare_encrypted);
    json_decref(ins->spare_ccs);
    free(ins);
}

static void
inspect_emit(struct inspect_dir *d, const char *event, json_t *fields)
{
    if (d->ins->quiet && strcmp(event, "non_tls") != 0) {
        json_decref(fields);
        return;
    }
    d->ins->emit(d->ins->arg, event, d->dir, fields);
}

/*
 * Whether what the client sends now ends all hope of its ClientHello (it
 * is the first message and another one, or one that cannot be
 * reassembled); marks the loss.  True once: its event is emitted even when
 * quiet (mitm), since OpenSSL never sees those bytes and no one else
 * would say what came instead.
 */
static bool
inspect_loses_hello(struct inspect_dir *d)
{
    struct tf_inspect *ins = d->ins;
    if (d->dir != TF_DIR_C2S || ins->client_hello_seen || ins->client_hello_lost)
        return false;
    ins->client_hello_lost = true;
    return true;
}

static void
inspect_emit_hello_lost(struct inspect_dir *d, bool lost_now, const char *event, json_t *fields)
{
    if (lost_now)
        d->ins->emit(d->ins->arg, event, d->dir, fields);
    else
        inspect_emit(d, event, fields);
}

/* A version or a cipher suite as JSON: its IANA name (shared), or "0x%04x". */
static json_t *
inspect_code_json(const char *name, uint16_t v)
{
    char hex[8];
    if (name != NULL)
        return tf_json_name(name);
    snprintf(hex, sizeof(hex), "0x%04x", v);
    return tf_json_string(hex);
}

/*
 * The first ClientHello's cipher_suites, as 2-byte codes (RFC 8446
 * §4.1.2: legacy_version, random, legacy_session_id<0..32>,
 * cipher_suites<2..2^16-2>): a tenth of the room of their names.
 */
static void
inspect_keep_suites(struct tf_inspect *ins, const uint8_t *body, size_t len)
{
    struct tf_cursor c, sid, list;
    uint16_t v;
    ins->suites_seen = true;
    tf_cursor_init(&c, body, len);
    if (!tf_cursor_skip(&c, 2 + 32) || !tf_cursor_sub8(&c, &sid) || !tf_cursor_sub16(&c, &list))
        return;
    size_t n = tf_cursor_left(&list) / 2;
    if (n == 0 || tf_cursor_left(&list) % 2 != 0)
        return; /* the event shows the same: an empty list, or the decode error */
    ins->suites = malloc(n * sizeof(*ins->suites));
    if (ins->suites == NULL)
        return;
    while (ins->n_suites < n && tf_cursor_u16(&list, &v))
        ins->suites[ins->n_suites++] = v;
}

/* Alerts are rare: the list exists from the first one on. */
static void
inspect_add_alert(struct tf_inspect *ins, json_t *alert)
{
    if (ins->alerts == NULL)
        ins->alerts = json_array();
    json_array_append_new(ins->alerts, alert); /* takes alert, even when it fails */
}

/* Both handshakes are over: from now on only record headers are followed. */
static void
inspect_finish(struct tf_inspect *ins)
{
    ins->done = true;
    for (int i = 0; i < 2; i++) {
        ins->d[i].rec.skim = true;
        tf_hs_reader_release(ins->d[i].hs);
        free(ins->d[i].hs);
        ins->d[i].hs = NULL;
    }
}

static void
inspect_check_done(struct tf_inspect *ins)
{
    if (ins->done || !ins->server_hello_seen)
        return;
    const struct inspect_dir *c = &ins->d[TF_DIR_C2S], *s = &ins->d[TF_DIR_S2C];
    if (c->encrypted && s->encrypted && c->encrypted_records > 0 && s->encrypted_records > 0)
        inspect_finish(ins);
}

static const char INSPECT_ENCRYPTED[] = "encrypted";

/*
 * Appends a message to the log (type static, or NULL for handshake type
 * code; description: an alert's, taken); consecutive protected records of
 * one direction fold into one entry.
 */
static void
inspect_log_message(struct inspect_dir *d, const char *type, uint8_t code, json_t *description)
{
    struct tf_inspect *ins = d->ins;
    if (ins->done) {
        json_decref(description);
        return; /* the handshake is over: the log is complete (and may be packed) */
    }
    if (type == INSPECT_ENCRYPTED && ins->n_log > 0) {
        struct inspect_msg *last = &ins->log[ins->n_log - 1];
        if (last->type == INSPECT_ENCRYPTED && last->dir == d->dir) {
            if (last->count < UINT16_MAX)
                last->count++;
            return;
        }
    }
    if (ins->n_log == ins->cap_log) {
        size_t cap = ins->cap_log ? ins->cap_log * 2 : INSPECT_MESSAGES_FIRST;
        if (cap > INSPECT_MESSAGES_MAX)
            cap = INSPECT_MESSAGES_MAX;
        struct inspect_msg *log =
            cap > ins->cap_log ? realloc(ins->log, cap * sizeof(*log)) : NULL;
        if (log == NULL) {
            json_decref(description);
            return;
        }
        ins->log = log;
        ins->cap_log = cap;
    }
    ins->log[ins->n_log++] = (struct inspect_msg){
        .type = type,
        .description = description,
        .count = type == INSPECT_ENCRYPTED ? 1 : 0,
        .code = code,
        .dir = (uint8_t)d->dir,
    };
}

/* The last message, for the stage of an unfinished handshake and flow_end. */
static void
inspect_note_message(struct inspect_dir *d, const char *type)
{
    size_t n = strnlen(type, sizeof(d->ins->last_message) - 1); /* alert names fit */
    memcpy(d->ins->last_message, type, n);
    d->ins->last_message[n] = '\0';
    d->ins->last_dir = d->dir;
}

/* Appends s[0..n) to buf[*used..cap); false when it does not fit. */
static bool
inspect_put(char *buf, size_t cap, size_t *used, const char *s, size_t n)
{
    if (n > cap - *used)
        return false;
    memcpy(buf + *used, s, n);
    *used += n;
    return true;
}

static bool
inspect_put_str(char *buf, size_t cap, size_t *used, const char *s)
{
    return inspect_put(buf, cap, used, s, strlen(s));
}

/*
 * The log as compact JSON text into buf[0..cap): false when it does not
 * fit.  Names are IANA names or fixed words: no character needs escaping.
 * (Written by hand: snprintf made this a tenth of a connection's logging.)
 */
static bool
inspect_write_messages(const struct tf_inspect *ins, char *buf, size_t cap, size_t *len)
{
    size_t used = 0;
    char num[24];
    if (!inspect_put(buf, cap, &used, "[", 1))
        return false;
    for (size_t i = 0; i < ins->n_log; i++) {
        const struct inspect_msg *m = &ins->log[i];
        bool ok = inspect_put_str(buf, cap, &used, i ? ",{\"dir\":\"" : "{\"dir\":\"") &&
                  inspect_put_str(buf, cap, &used, tf_dir_name((enum tf_dir)m->dir)) &&
                  inspect_put_str(buf, cap, &used, "\",\"type\":\"");
        if (m->type != NULL) {
            ok = ok && inspect_put_str(buf, cap, &used, m->type);
        } else {
            snprintf(num, sizeof(num), "unknown(%u)", m->code);
            ok = ok && inspect_put_str(buf, cap, &used, num);
        }
        ok = ok && inspect_put(buf, cap, &used, "\"", 1);
        if (ok && m->count > 0) {
            snprintf(num, sizeof(num), "%u", m->count);
            ok = inspect_put_str(buf, cap, &used, ",\"count\":") &&
                 inspect_put_str(buf, cap, &used, num);
        }
        if (ok && m->description != NULL)
            ok = inspect_put_str(buf, cap, &used, ",\"description\":") &&
                 tf_json_write(m->description, false, buf, cap, &used);
        if (!ok || !inspect_put(buf, cap, &used, "}", 1))
            return false;
    }
    if (!inspect_put(buf, cap, &used, "]", 1))
        return false;
    *len = used;
    return true;
}

/*
 * The log's text: in stack[0..cap) when it fits, else in *heap (the
 * caller frees it); NULL when memory is short.
 */
static const char *
inspect_messages_text(const struct tf_inspect *ins, char *stack, size_t cap, char **heap,
                      size_t *len)
{
    char *buf = stack;
    *heap = NULL;
    while (!inspect_write_messages(ins, buf, cap, len)) {
        char *bigger = cap < (size_t)INSPECT_MESSAGES_MAX * 256 ? realloc(*heap, cap * 4) : NULL;
        if (bigger == NULL) {
            free(*heap);
            *heap = NULL;
            return NULL;
        }
        buf = *heap = bigger;
        cap *= 4;
    }
    return buf;
}

/*
 * The log's shared text (tf_json_text_share; NULL when memory is short).
 * The same client's connections write the same log, so they share it.
 */
static const char *
inspect_messages_shared(const struct tf_inspect *ins)
{
    char stack[4096], *heap;
    size_t len;
    const char *text = inspect_messages_text(ins, stack, sizeof(stack), &heap, &len);
    const char *shared = text != NULL ? tf_json_text_share(text, len) : NULL;
    free(heap);
    return shared;
}

/*
 * The log as a JSON array for the verdict (a new reference, NULL when
 * memory is short).  A log not packed yet (a short connection: the sweep
 * packs only those that stay) goes through its shared text too, which the
 * thread's cache of unpacked texts then holds parsed (parsing it each time
 * was an eighth of a passthrough connection's instructions).
 */
static json_t *
inspect_messages_json(const struct tf_inspect *ins)
{
    if (ins->messages_text != NULL)
        return tf_json_unpack(NULL, ins->messages_text);
    const char *shared = inspect_messages_shared(ins);
    json_t *v = tf_json_unpack(NULL, shared);
    tf_json_text_release(shared);
    return v;
}

static void
inspect_server_hello(struct inspect_dir *d, const struct tf_server_hello_info *info)
{
    struct tf_inspect *ins = d->ins;
    if (info->hello_retry_request) {
        ins->hello_retry_request = true;
        return;
    }
    ins->server_hello_seen = true;
    ins->version = info->version;
    ins->cipher_suite = info->cipher_suite;
    ins->downgrade_sentinel = info->downgrade_sentinel;
    if (info->version == TLS13) {
        /* RFC 8446 §2: the server's next flight and the client's reply are encrypted. */
        ins->d[TF_DIR_C2S].encrypted = true;
        ins->d[TF_DIR_S2C].encrypted = true;
    }
}

static bool
inspect_message_cb(void *arg, uint8_t type, const uint8_t *body, size_t len)
{
    struct inspect_dir *d = arg;
    struct tf_inspect *ins = d->ins;
    bool tls13 = ins->version == TLS13;
    const char *name;
    char unknown[16];
    json_t *obj = json_object();
    struct tf_client_hello_info ch;
    struct tf_server_hello_info sh;

    memset(&ch, 0, sizeof(ch));
    memset(&sh, 0, sizeof(sh));
    bool ok = tf_decode_handshake(type, body, len, tls13, ins->cipher_suite, obj, &ch, &sh, &name,
                                  unknown, sizeof(unknown));
    /* RFC 8446 §4.1.2: a client's first message is its hello. */
    bool lost_now = type != TF_HS_CLIENT_HELLO && inspect_loses_hello(d);
    switch (type) {
    case TF_HS_CLIENT_HELLO: {
        /* Only the client's: a server that sends one offers nothing for it. */
        if (d->dir != TF_DIR_C2S)
            break;
        ins->client_hello_seen = true;
        if (!ins->has_sni && ch.has_sni) {
            ins->has_sni = true;
            ins->sni = strdup(ch.sni);
            ins->has_sni = ins->sni != NULL;
        }
        if (ch.max_version > ins->client_max_version)
            ins->client_max_version = ch.max_version;
        json_t *alpn = json_object_get(obj, "alpn");
        if (alpn && !ins->alpn_offered)
            ins->alpn_offered = json_incref(alpn);
        json_t *versions = json_object_get(obj, "supported_versions");
        if (json_is_array(versions) && !ins->offered_versions)
            ins->offered_versions = json_incref(versions);
        if (json_is_array(json_object_get(obj, "cipher_suites")) && !ins->suites_seen)
            inspect_keep_suites(ins, body, len);
        break;
    }
    case TF_HS_SERVER_HELLO:
        /* Only the server's: a client that sends one has negotiated nothing. */
        if (ok && d->dir == TF_DIR_S2C) {
            inspect_server_hello(d, &sh);
            json_t *sentinel = json_object_get(obj, "downgrade_sentinel");
            if (json_is_string(sentinel))
                snprintf(ins->sentinel, sizeof(ins->sentinel), "%s", json_string_value(sentinel));
        }
        break;
    case TF_HS_CERTIFICATE:
        if (d->dir == TF_DIR_S2C) {
            ins->server_flight_full = true;
            json_t *chain = json_object_get(obj, "chain");
            if (json_is_array(chain) && !ins->server_chain)
                ins->server_chain = json_incref(chain);
        }
        break;
    case TF_HS_SERVER_HELLO_DONE:
        ins->server_flight_full = true;
        break;
    default:
        break;
    }
    json_object_set_new_nocheck(obj, "type",
                                name != unknown ? tf_json_name(name) : tf_json_string(name));
    json_object_set_new_nocheck(obj, "length", json_integer((json_int_t)len));
    if (ins->server_first && d->dir == TF_DIR_S2C && ins->server_first_message == NULL)
        ins->server_first_message = name != unknown ? name : "unknown";
    inspect_note_message(d, name);
    inspect_log_message(d, name == unknown ? NULL : name, type, NULL);
    inspect_emit_hello_lost(d, lost_now, "handshake", obj);
    return true;
}

/* A member of a small event: a shared name, or (name NULL) an integer. */
struct small_member {
    const char *key;
    json_t *name; /* a reference, taken */
    json_int_t num;
};

/*
 * A small event's fields object, from *spare when nobody else holds it:
 * its members (the same keys, in order) get the new values, an integer
 * changed in place only when this object alone holds it.  Else a new
 * object, kept in *spare for the next event.
 */
static json_t *
inspect_small_fields(json_t **spare, const struct small_member *m, size_t n)
{
    json_t *o = *spare;
    if (o != NULL && o->refcount == 1 && json_object_size(o) == n) {
        void *it = json_object_iter(o);
        for (size_t i = 0; i < n && it != NULL; i++, it = json_object_iter_next(o, it)) {
            json_t *old = json_object_iter_value(it);
            if (m[i].name != NULL)
                json_object_iter_set_new(o, it, m[i].name);
            else if (json_is_integer(old) && old->refcount == 1)
                json_integer_set(old, m[i].num);
            else
                json_object_iter_set_new(o, it, json_integer(m[i].num));
        }
        return json_incref(o);
    }
    json_decref(o);
    o = json_object();
    for (size_t i = 0; i < n; i++)
        json_object_set_new_nocheck(o, m[i].key,
                                    m[i].name != NULL ? m[i].name : json_integer(m[i].num));
    *spare = json_incref(o);
    return o;
}

static void
inspect_encrypted(struct inspect_dir *d, const struct tf_record *rec)
{
    const char *ct = tf_names_content_type(rec->type);
    struct small_member m[] = {
        { "content_type", ct != NULL ? tf_json_name(ct) : NULL, rec->type },
        { "length", NULL, (json_int_t)rec->len },
    };
    json_t *obj = inspect_small_fields(&d->ins->spare_encrypted, m, 2);
    if (!d->ins->done)
        inspect_log_message(d, INSPECT_ENCRYPTED, 0, NULL);
    inspect_emit(d, "encrypted", obj);
}

static void
inspect_alert(struct inspect_dir *d, const struct tf_record *rec)
{
    static const uint8_t empty[1];
    const uint8_t *body = rec->len ? rec->body : empty;
    for (size_t off = 0; off < rec->len || rec->len == 0; off += 2) {
        json_t *obj = json_object();
        size_t n = rec->len - off < 2 ? rec->len - off : 2;
        tf_decode_alert(body + off, n, obj);
        json_t *summary = json_deep_copy(obj);
        json_object_set_new_nocheck(summary, "dir", tf_json_name(tf_dir_name(d->dir)));
        inspect_add_alert(d->ins, summary);
        json_t *desc = json_object_get(obj, "description");
        char name[48];
        snprintf(name, sizeof(name), "alert %s",
                 json_is_string(desc) ? json_string_value(desc) : "malformed");
        inspect_note_message(d, name);
        inspect_log_message(d, "alert", 0, json_incref(desc ? desc : json_null()));
        inspect_emit(d, "alert", obj);
        if (n < 2)
            break;
    }
}

/* A record seen after the handshake: only headers are looked at. */
static void
inspect_skimmed(struct inspect_dir *d, const struct tf_record *rec)
{
    d->skimmed++;
    if (rec->type == TF_CT_APPLICATION_DATA) {
        if (d->ins->version != TLS13 || rec->len > INSPECT_TLS13_SMALL_RECORD)
            d->data_records++;
        /* The bulk of a connection: counted in flow_end, one event each only on request. */
        if (d->ins->app_records)
            inspect_encrypted(d, rec);
        return;
    }
    if (rec->type == TF_CT_ALERT) {
        json_t *a = json_pack("{s:s, s:b, s:I}", "dir", tf_dir_name(d->dir), "encrypted", 1,
                              "length", (json_int_t)rec->len);
        inspect_add_alert(d->ins, a);
    }
    inspect_encrypted(d, rec);
}

static bool
inspect_record_cb(void *arg, const struct tf_record *rec)
{
    struct inspect_dir *d = arg;
    struct tf_inspect *ins = d->ins;

    if (ins->done) {
        inspect_skimmed(d, rec);
        return true;
    }
    if (rec->type == TF_CT_CHANGE_CIPHER_SPEC) {
        struct small_member m[] = { { "length", NULL, (json_int_t)rec->len } };
        json_t *obj = inspect_small_fields(&ins->spare_ccs, m, 1);
        d->ccs_seen = true;
        inspect_note_message(d, "change_cipher_spec");
        inspect_log_message(d, "change_cipher_spec", 0, NULL);
        inspect_emit(d, "change_cipher_spec", obj);
        if (ins->version != TLS13 && !ins->hello_retry_request) {
            d->encrypted = true;
            d->encrypted_records = 0;
            if (d->dir == TF_DIR_S2C && ins->server_hello_seen && !ins->server_flight_full)
                ins->resumed = true;
        }
        return true;
    }
    /*
     * TLS 1.3 wraps protected alerts as application_data (RFC 8446 §5.2), so
     * a record that says "alert" is one sent in clear, e.g. a client
     * rejecting the ServerHello before it has keys.
     */
    if (rec->type == TF_CT_ALERT && ins->version == TLS13) {
        inspect_alert(d, rec);
        return true;
    }
    if (d->encrypted || rec->type == TF_CT_APPLICATION_DATA || rec->type == TF_CT_HEARTBEAT) {
        if (d->encrypted && ins->version == TLS13 && d->dir == TF_DIR_C2S &&
            d->encrypted_records == 0 && d->small_first == 0 &&
            rec->type == TF_CT_APPLICATION_DATA && rec->len <= INSPECT_TLS13_SMALL_RECORD)
            d->small_first = rec->len; /* an alert (or EndOfEarlyData), not the Finished */
        else if (d->encrypted)
            d->encrypted_records++;
        if (rec->type == TF_CT_ALERT) {
            json_t *a = json_pack("{s:s, s:b, s:I}", "dir", tf_dir_name(d->dir), "encrypted", 1,
                                  "length", (json_int_t)rec->len);
            inspect_add_alert(ins, a);
        }
        inspect_encrypted(d, rec);
        inspect_check_done(ins);
        return true;
    }
    if (rec->type == TF_CT_ALERT) {
        inspect_alert(d, rec);
        return true;
    }
    /* A clear handshake record. */
    if (d->hs == NULL || d->hs->stopped)
        return true;
    if (tf_hs_feed(d->hs, rec->body, rec->len, inspect_message_cb, d) == TF_PARSE_BAD) {
        bool lost_now = inspect_loses_hello(d);
        json_t *obj = json_pack("{s:s}", "error", d->hs->error);
        inspect_emit_hello_lost(d, lost_now, "handshake", obj);
        /*
         * Only a certificate chain grows past the cap; an abbreviated
         * handshake has none, so this one is a full handshake.
         */
        if (d->dir == TF_DIR_S2C && ins->server_hello_seen)
            ins->server_flight_full = true;
    }
    return true;
}

static void
inspect_not_tls(struct inspect_dir *d)
{
    static const char *const kinds[] = {
        [TF_STREAM_TLS] = "malformed",
        [TF_STREAM_SSLV2] = "sslv2",
        [TF_STREAM_HTTP] = "http",
        [TF_STREAM_UNKNOWN] = "unknown",
    };
    char preview[INSPECT_PREVIEW * 4 + 1];
    const char *kind = d->rec.offset == 0 ? kinds[d->rec.kind] : "malformed";

    d->non_tls = true;
    d->non_tls_kind = kind;
    if (d->rec.offset == 0)
        tf_record_preview(d->preview, d->preview_len, INSPECT_PREVIEW, preview, sizeof(preview));
    else
        tf_record_preview(d->rec.hdr, d->rec.hdr_have, TF_RECORD_HEADER_LEN, preview,
                          sizeof(preview));
    json_t *obj = json_pack("{s:s, s:s, s:I, s:s}", "kind", kind, "reason", d->rec.error,
                            "offset", (json_int_t)d->rec.offset, "preview", preview);
    inspect_note_message(d, "non_tls");
    inspect_log_message(d, "non_tls", 0, NULL);
    inspect_emit(d, "non_tls", obj);
}

void
tf_inspect_feed(struct tf_inspect *ins, enum tf_dir dir, const uint8_t *p, size_t n)
{
    struct inspect_dir *d = &ins->d[dir];
    if (d->rec.stopped)
        return;
    if (dir == TF_DIR_S2C && d->fed == 0 && ins->d[TF_DIR_C2S].fed == 0)
        ins->server_first = true;
    if (d->fed < INSPECT_PREVIEW) {
        size_t take = INSPECT_PREVIEW - d->preview_len;
        if (take > n)
            take = n;
        memcpy(d->preview + d->preview_len, p, take);
        d->preview_len += take;
    }
    d->fed += n;
    if (tf_record_feed(&d->rec, p, n, inspect_record_cb, d) == TF_PARSE_BAD)
        inspect_not_tls(d);
}

bool
tf_inspect_pack(struct tf_inspect *ins)
{
    if (ins == NULL || !ins->done)
        return false;
    json_decref(ins->spare_encrypted);
    json_decref(ins->spare_ccs);
    ins->spare_encrypted = ins->spare_ccs = NULL;
    if (ins->offered_versions == NULL && ins->log == NULL)
        return false;
    tf_json_pack(&ins->offered_versions, &ins->versions_text);
    if (ins->log != NULL && ins->messages_text == NULL &&
        (ins->messages_text = inspect_messages_shared(ins)) != NULL)
        inspect_free_log(ins);
    return true;
}

bool
tf_inspect_idle(const struct tf_inspect *ins, enum tf_dir dir)
{
    return ins->d[dir].rec.stopped;
}

bool
tf_inspect_client_hello_seen(const struct tf_inspect *ins)
{
    return ins->client_hello_seen;
}

bool
tf_inspect_client_hello_lost(const struct tf_inspect *ins)
{
    return !ins->client_hello_seen &&
           (ins->client_hello_lost || ins->d[TF_DIR_C2S].rec.stopped);
}

const char *
tf_inspect_sni(const struct tf_inspect *ins)
{
    return ins->has_sni ? ins->sni : NULL;
}

json_t *
tf_inspect_alpn(const struct tf_inspect *ins)
{
    return ins->alpn_offered;
}

void
tf_inspect_set_quiet(struct tf_inspect *ins, bool quiet)
{
    ins->quiet = quiet;
}

void
tf_inspect_set_app_records(struct tf_inspect *ins, bool each)
{
    ins->app_records = each;
}

uint16_t
tf_inspect_version(const struct tf_inspect *ins)
{
    return ins->version;
}

bool
tf_inspect_hello_retry(const struct tf_inspect *ins)
{
    return ins->hello_retry_request;
}

bool
tf_inspect_handshake_done(const struct tf_inspect *ins)
{
    return ins->done;
}

/* The ServerHello's version and cipher suite, by name. */
static void
inspect_set_negotiated(const struct tf_inspect *ins, json_t *obj)
{
    json_object_set_new_nocheck(obj, "version",
                                inspect_code_json(tf_names_version(ins->version), ins->version));
    json_object_set_new_nocheck(
        obj, "cipher_suite",
        inspect_code_json(tf_names_cipher_suite(ins->cipher_suite), ins->cipher_suite));
}

void
tf_inspect_summarize(const struct tf_inspect *ins, json_t *obj)
{
    if (ins->server_hello_seen)
        inspect_set_negotiated(ins, obj);
    if (ins->client_max_version)
        json_object_set_new_nocheck(obj, "client_max_version",
                                    inspect_code_json(tf_names_version(ins->client_max_version),
                                                      ins->client_max_version));
    if (ins->has_sni)
        json_object_set_new_nocheck(obj, "sni", tf_json_string(ins->sni));
    if (ins->alpn_offered)
        json_object_set_nocheck(obj, "alpn_offered", ins->alpn_offered);
    if (ins->hello_retry_request)
        json_object_set_new_nocheck(obj, "hello_retry_request", json_true());
    if (ins->resumed)
        json_object_set_new_nocheck(obj, "resumed", json_true());
    json_object_set_new_nocheck(obj, "handshake",
                                tf_json_name(ins->done ? "complete" : "incomplete"));
    if (ins->done)
        json_object_set_new_nocheck(
            obj, "records_after_handshake",
            tf_events_per_dir(ins->d[TF_DIR_C2S].skimmed, ins->d[TF_DIR_S2C].skimmed));
    if (ins->last_message[0]) {
        json_t *last = json_object();
        json_object_set_new_nocheck(last, "dir", tf_json_name(tf_dir_name(ins->last_dir)));
        json_object_set_new_nocheck(last, "type", tf_json_string(ins->last_message));
        json_object_set_new_nocheck(obj, "last_message", last);
    }
    if (json_array_size(ins->alerts) > 0)
        json_object_set_nocheck(obj, "alerts", ins->alerts);
    if (ins->server_first)
        json_object_set_new_nocheck(obj, "server_spoke_first", json_true());
    /* The side that went off TLS first is named first (flow.c's summary). */
    for (int n = 0; n < 2; n++) {
        int i = ins->server_first ? 1 - n : n;
        if (!ins->d[i].non_tls)
            continue;
        json_t *nt = json_object_get(obj, "non_tls");
        if (nt == NULL) {
            nt = json_object();
            json_object_set_new_nocheck(obj, "non_tls", nt);
        }
        json_object_set_new(nt, tf_dir_name((enum tf_dir)i),
                            tf_json_string(ins->d[i].non_tls_kind));
    }
}

void
tf_inspect_stage(const struct tf_inspect *ins, char *buf, size_t len)
{
    if (ins->done)
        snprintf(buf, len, "handshake complete");
    else if (ins->last_message[0])
        snprintf(buf, len, "after %s from %s", ins->last_message, inspect_side(ins->last_dir));
    else
        snprintf(buf, len, "before any TLS message");
}

void
tf_inspect_facts(const struct tf_inspect *ins, json_t *facts)
{
    const struct inspect_dir *c = &ins->d[TF_DIR_C2S];
    json_t *ch = json_object();

    json_object_set_new_nocheck(ch, "seen", json_boolean(ins->client_hello_seen));
    json_t *versions = tf_json_unpack(ins->offered_versions, ins->versions_text);
    if (versions)
        json_object_set_new_nocheck(ch, "versions", versions);
    /*
     * Only a server that answered without a ServerHello makes the offered
     * suites matter (verdict.c: no_shared_cipher); naming them for every
     * healthy connection was a tenth of the cost of its flow_end.
     */
    if (ins->suites_seen && !ins->server_hello_seen) {
        /* Named as the client_hello event names them (decode.c). */
        json_t *suites = json_array();
        for (size_t i = 0; i < ins->n_suites; i++) {
            uint16_t v = ins->suites[i];
            const char *name = tf_names_is_grease(v) ? "GREASE" : tf_names_cipher_suite(v);
            json_array_append_new(suites, inspect_code_json(name, v));
        }
        json_object_set_new_nocheck(ch, "cipher_suites", suites);
    }
    json_object_set_new_nocheck(ch, "has_sni", json_boolean(ins->has_sni));
    json_object_set_new_nocheck(facts, "client_hello", ch);
    if (ins->server_hello_seen) {
        json_t *sh = json_object();
        inspect_set_negotiated(ins, sh);
        if (ins->downgrade_sentinel)
            json_object_set_new_nocheck(sh, "downgrade_sentinel",
                                        tf_json_string(ins->sentinel[0] ? ins->sentinel : "yes"));
        json_object_set_new_nocheck(facts, "server_hello", sh);
    }
    if (ins->server_chain)
        json_object_set_nocheck(facts, "server_chain", ins->server_chain);
    json_t *messages = inspect_messages_json(ins);
    json_object_set_new_nocheck(facts, "messages", messages ? messages : json_array());
    if (ins->done)
        json_object_set_new_nocheck(
            facts, "data_records",
            tf_events_per_dir(c->data_records, ins->d[TF_DIR_S2C].data_records));
    /* Still the client's only protected record: it was an alert, not an early-data end. */
    if (c->small_first > 0 && c->encrypted_records == 0)
        json_object_set_new_nocheck(facts, "c2s_protected_alert",
                                    json_pack("{s:I}", "length", (json_int_t)c->small_first));
    if (ins->server_first)
        json_object_set_new_nocheck(facts, "server_spoke_first",
                                    ins->server_first_message != NULL
                                        ? tf_json_name(ins->server_first_message)
                                        : json_true());
    for (int i = 0; i < 2; i++) {
        const struct inspect_dir *d = &ins->d[i];
        if (!d->non_tls)
            continue;
        json_t *nt = json_object_get(facts, "non_tls_at");
        if (nt == NULL) {
            nt = json_object();
            json_object_set_new_nocheck(facts, "non_tls_at", nt);
        }
        json_object_set_new(nt, tf_dir_name((enum tf_dir)i),
                            json_pack("{s:s, s:I}", "kind", d->non_tls_kind, "offset",
                                      (json_int_t)d->rec.offset));
    }
}

bool
tf_inspect_server_hello_seen(const struct tf_inspect *ins)
{
    return ins->server_hello_seen;
}
