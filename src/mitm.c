/*
 * mitm.c — TLS terminated on both legs of a flow.
 *
 * Job: run a server-side SSL towards the client and a client-side SSL
 * towards the upstream, both on memory BIOs, in the order that makes the
 * forged answer look like the real server's: the client's ClientHello is
 * read (by the flow's inspector) before anything is answered, the upstream
 * handshake is made with the same SNI and ALPN offer, its leaf is forged
 * (forge.c) with the mutation of any certificate fault, and only then does
 * the client-side SSL start on the bytes the client sent.  The flow keeps
 * the sockets; this file turns raw bytes into plaintext and back.
 *
 * Logging comes from OpenSSL's message callback, so TLS 1.3's encrypted
 * messages (EncryptedExtensions, Certificate, CertificateVerify, Finished,
 * NewSessionTicket, KeyUpdate) are reported like the clear ones, with the
 * leg they travelled on.
 *
 * An upstream that fails its handshake is mirrored: the client gets the
 * alert the upstream sent (or a reset when there was none), which is what
 * a client talking to that server directly would have seen.
 */
#include <event2/buffer.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "tlsfault/config.h"
#include "tlsfault/decode.h"
#include "tlsfault/evbio.h"
#include "tlsfault/fault.h"
#include "tlsfault/forge.h"
#include "tlsfault/handshake.h"
#include "tlsfault/inject.h"
#include "tlsfault/jsontext.h"
#include "tlsfault/mitm.h"
#include "tlsfault/names.h"
#include "tlsfault/record.h"
#include "tlsfault/rewrite.h"

#define MITM_READ_CHUNK 16384
#define MITM_ERROR_MAX 256

struct tf_mitm_ctx {
    SSL_CTX *client_side;   /* we are the server, towards the client */
    SSL_CTX *upstream_side; /* we are the client, towards the server */
    const struct tf_listener_conf *lc;
    const struct tf_config *cfg;
};

enum mitm_stage {
    MITM_HELLO,     /* waiting for the client's ClientHello */
    MITM_UPSTREAM,  /* upstream handshake in progress */
    MITM_CLIENT,    /* client handshake in progress */
    MITM_RELAY,     /* both done: plaintext moves across */
    MITM_RAW,       /* the client does not speak TLS: bytes relayed as they are */
    MITM_DONE,
};

struct tf_mitm {
    struct tf_mitm_ctx *ctx;
    struct tf_forge *forge;
    struct tf_inspect *ins;
    struct tf_inject *inj;
    tf_inspect_emit_fn emit;
    tf_mitm_keylog_fn keylog;
    void *arg;
    enum mitm_stage stage;
    bool upstream_tcp;          /* upstream socket connected */
    SSL *client;                /* towards the client (server role) */
    SSL *upstream;              /* towards the server (client role) */
    BIO *client_in, *client_out;
    BIO *up_in, *up_out;
    struct evbuffer *client_wait; /* client bytes held until the answer is forged */
    int upstream_alert;         /* description the upstream sent, -1 none */
    bool upstream_alert_fatal;
    long verify_result;
    bool verify_failed;
    bool forged;
    char forged_desc[160];
    bool require_sni;
    const char *sni;            /* the inspector's (it outlives us) */
    bool has_sni;
    uint8_t *alpn_selected;     /* the upstream's choice (owned) */
    size_t alpn_selected_len;
    bool client_done;           /* handshake finished on the client leg */
    bool upstream_done;
    uint64_t data_bytes[2];     /* plaintext seen per direction */
    size_t content_logged[2];   /* of which logged as "data" events */
    char *error;                /* why the mitm failed (owned) */
    /* kept for the verdict (tf_mitm_facts) */
    enum mitm_stage failed_at;  /* the stage mitm_fail ended, when it did */
    bool failed;
    json_t *upstream_chain;     /* the real server's chain, decoded (first Certificate) */
    json_t *forged_chain;       /* what the client was shown */
    const char *upstream_chain_text; /* both, as shared JSON text once relaying: */
    const char *forged_chain_text;   /* an idle connection keeps a third of the memory */
    int client_alert;           /* first alert the client sent us, -1 none */
    bool client_alert_fatal;
    int to_client_alert;        /* first alert our client leg sent, -1 none */
    unsigned upstream_msgs;     /* handshake messages received from the upstream */
    char upstream_last[32];     /* the last of them */
    unsigned early_pumps;       /* relay pumps that freed the record buffers at once */
    bool buffered;              /* records went through since the buffers were last freed */
};

#define MITM_EARLY_PUMPS 4

static int mitm_ex_index = -1;

/* ------------------------------------------------------------ contexts */

static bool
mitm_apply_settings(SSL_CTX *ctx, const struct tf_tls_settings *t, char *err, size_t errlen)
{
    if (t->security_level >= 0)
        SSL_CTX_set_security_level(ctx, t->security_level);
    if (t->min_version && !SSL_CTX_set_min_proto_version(ctx, t->min_version))
        goto bad;
    if (t->max_version && !SSL_CTX_set_max_proto_version(ctx, t->max_version))
        goto bad;
    if (t->ciphers && !SSL_CTX_set_cipher_list(ctx, t->ciphers))
        goto bad;
    if (t->ciphersuites && !SSL_CTX_set_ciphersuites(ctx, t->ciphersuites))
        goto bad;
    if (t->groups && !SSL_CTX_set1_groups_list(ctx, t->groups))
        goto bad;
    if (t->sigalgs && !SSL_CTX_set1_sigalgs_list(ctx, t->sigalgs))
        goto bad;
    return true;
bad:
    snprintf(err, errlen, "TLS settings refused by OpenSSL: %s",
             ERR_reason_error_string(ERR_get_error()));
    ERR_clear_error();
    return false;
}

static struct tf_mitm *
mitm_of(const SSL *ssl)
{
    return SSL_get_ex_data(ssl, mitm_ex_index);
}

/* require-sni: a hello without SNI gets unrecognized_name, as servers that need it answer. */
static int
mitm_servername_cb(SSL *ssl, int *alert, void *arg)
{
    struct tf_mitm *m = mitm_of(ssl);
    (void)arg;
    if (m != NULL && m->require_sni &&
        SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) == NULL) {
        *alert = SSL_AD_UNRECOGNIZED_NAME;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    return SSL_TLSEXT_ERR_OK;
}

/* The client leg agrees on what the upstream chose, if the client offered it. */
static int
mitm_alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                    const unsigned char *in, unsigned int inlen, void *arg)
{
    struct tf_mitm *m = mitm_of(ssl);
    (void)arg;
    if (m == NULL || m->alpn_selected_len == 0)
        return SSL_TLSEXT_ERR_NOACK;
    for (unsigned int i = 0; i < inlen;) {
        unsigned int n = in[i];
        if (i + 1 + n > inlen)
            break;
        if (n == m->alpn_selected_len && memcmp(in + i + 1, m->alpn_selected, n) == 0) {
            *out = in + i + 1;
            *outlen = (unsigned char)n;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + n;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

static void
mitm_keylog_cb(const SSL *ssl, const char *line)
{
    struct tf_mitm *m = mitm_of(ssl);
    if (m != NULL && m->keylog != NULL)
        m->keylog(m->arg, line);
}

struct tf_mitm_ctx *
tf_mitm_ctx_new(const struct tf_config *cfg, size_t listener_index, char *err, size_t errlen)
{
    const struct tf_listener_conf *lc = &cfg->listeners[listener_index];
    struct tf_mitm_ctx *ctx = calloc(1, sizeof(*ctx));

    if (mitm_ex_index < 0)
        mitm_ex_index = SSL_get_ex_new_index(0, "tlsfault mitm", NULL, NULL, NULL);
    if (ctx == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ctx->lc = lc;
    ctx->cfg = cfg;
    ctx->client_side = SSL_CTX_new(TLS_server_method());
    ctx->upstream_side = SSL_CTX_new(TLS_client_method());
    if (ctx->client_side == NULL || ctx->upstream_side == NULL) {
        snprintf(err, errlen, "SSL_CTX_new failed");
        tf_mitm_ctx_free(ctx);
        return NULL;
    }
    /* Each connection is a fresh full handshake: what a lab wants to see. */
    SSL_CTX_set_session_cache_mode(ctx->client_side, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx->client_side, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(ctx->client_side, 0);
    SSL_CTX_set_session_cache_mode(ctx->upstream_side, SSL_SESS_CACHE_OFF);
    /*
     * The BIOs hold what the socket gave: one read of all of it, instead of
     * one for each record's header and one for its body.
     */
    SSL_CTX_set_read_ahead(ctx->client_side, 1);
    SSL_CTX_set_read_ahead(ctx->upstream_side, 1);
    SSL_CTX_set_tlsext_servername_callback(ctx->client_side, mitm_servername_cb);
    SSL_CTX_set_alpn_select_cb(ctx->client_side, mitm_alpn_select_cb, NULL);
    /*
     * Only when the lines go somewhere: with a callback set, OpenSSL formats
     * each of a handshake's secrets a byte at a time with sprintf, ten lines
     * per mitm connection, 9% of its instructions.
     */
    if (cfg->log_keylog != NULL) {
        SSL_CTX_set_keylog_callback(ctx->client_side, mitm_keylog_cb);
        SSL_CTX_set_keylog_callback(ctx->upstream_side, mitm_keylog_cb);
    }
    if (!mitm_apply_settings(ctx->client_side, &lc->client_tls, err, errlen) ||
        !mitm_apply_settings(ctx->upstream_side, &lc->upstream_tls, err, errlen)) {
        tf_mitm_ctx_free(ctx);
        return NULL;
    }
    if (lc->upstream_tls.verify == TF_VERIFY_SYSTEM)
        SSL_CTX_set_default_verify_paths(ctx->upstream_side);
    else if (lc->upstream_tls.verify == TF_VERIFY_FILE &&
             !SSL_CTX_load_verify_locations(ctx->upstream_side, lc->upstream_tls.ca_file, NULL)) {
        snprintf(err, errlen, "cannot load %s", lc->upstream_tls.ca_file);
        tf_mitm_ctx_free(ctx);
        return NULL;
    }
    /* The result is judged after the handshake, so a failure can be forged over. */
    SSL_CTX_set_verify(ctx->upstream_side, SSL_VERIFY_NONE, NULL);
    return ctx;
}

void
tf_mitm_ctx_free(struct tf_mitm_ctx *ctx)
{
    if (ctx == NULL)
        return;
    SSL_CTX_free(ctx->client_side);
    SSL_CTX_free(ctx->upstream_side);
    free(ctx);
}

/* ------------------------------------------------------------ events */

static const char *
mitm_leg_name(const struct tf_mitm *m, const SSL *ssl)
{
    return ssl == m->client ? "client" : "upstream";
}

/* Direction of a message: on the client leg we receive c2s; upstream we send c2s. */
static enum tf_dir
mitm_dir(const struct tf_mitm *m, const SSL *ssl, int write_p)
{
    bool c2s = ssl == m->client ? !write_p : write_p;
    return c2s ? TF_DIR_C2S : TF_DIR_S2C;
}

static void
mitm_msg_cb(int write_p, int version, int content_type, const void *buf, size_t len, SSL *ssl,
            void *arg)
{
    struct tf_mitm *m = mitm_of(ssl);
    const uint8_t *p = buf;
    (void)version;
    (void)arg;

    if (m == NULL)
        return;
    enum tf_dir dir = mitm_dir(m, ssl, write_p);
    if (content_type == SSL3_RT_HANDSHAKE && len >= TF_HS_HEADER_LEN) {
        uint8_t type = p[0];
        const char *name;
        char unknown[16];
        json_t *obj = json_object();
        /* During the handshake the suite being agreed is the pending one. */
        const SSL_CIPHER *c = SSL_get_pending_cipher(ssl);
        if (c == NULL)
            c = SSL_get_current_cipher(ssl);
        uint16_t suite = c ? (uint16_t)(SSL_CIPHER_get_id(c) & 0xffff) : 0;
        tf_decode_handshake(type, p + TF_HS_HEADER_LEN, len - TF_HS_HEADER_LEN,
                            SSL_version(ssl) == TLS1_3_VERSION, suite, obj, NULL, NULL, &name,
                            unknown, sizeof(unknown));
        json_object_set_new_nocheck(obj, "type", tf_json_string(name));
        json_object_set_new_nocheck(obj, "length",
                                    json_integer((json_int_t)(len - TF_HS_HEADER_LEN)));
        json_object_set_new_nocheck(obj, "leg", tf_json_string(mitm_leg_name(m, ssl)));
        if (ssl == m->upstream && !write_p) {
            m->upstream_msgs++;
            snprintf(m->upstream_last, sizeof(m->upstream_last), "%s", name);
        }
        json_t *chain = type == TF_HS_CERTIFICATE ? json_object_get(obj, "chain") : NULL;
        if (json_is_array(chain) && ssl == m->upstream && !write_p && m->upstream_chain == NULL &&
            m->upstream_chain_text == NULL)
            m->upstream_chain = json_incref(chain);
        else if (json_is_array(chain) && ssl == m->client && write_p && m->forged_chain == NULL &&
                 m->forged_chain_text == NULL)
            m->forged_chain = json_incref(chain);
        m->emit(m->arg, "handshake", dir, obj);
    } else if (content_type == SSL3_RT_ALERT && len >= 2) {
        json_t *obj = json_object();
        tf_decode_alert(p, 2, obj);
        json_object_set_new_nocheck(obj, "leg", tf_json_string(mitm_leg_name(m, ssl)));
        m->emit(m->arg, "alert", dir, obj);
        if (ssl == m->upstream && !write_p && m->upstream_alert < 0) {
            m->upstream_alert = p[1];
            m->upstream_alert_fatal = p[0] == 2;
        }
        if (ssl == m->client && !write_p && m->client_alert < 0) {
            m->client_alert = p[1];
            m->client_alert_fatal = p[0] == 2;
        }
        if (ssl == m->client && write_p && m->to_client_alert < 0)
            m->to_client_alert = p[1];
    } else if (content_type == SSL3_RT_CHANGE_CIPHER_SPEC) {
        json_t *obj = json_pack("{s:s}", "leg", mitm_leg_name(m, ssl));
        m->emit(m->arg, "change_cipher_spec", dir, obj);
    }
}

/* ------------------------------------------------------------ life */

struct tf_mitm *
tf_mitm_new(struct tf_mitm_ctx *ctx, struct tf_forge *forge, struct tf_inspect *ins,
            struct tf_inject *inj, tf_inspect_emit_fn emit, tf_mitm_keylog_fn keylog, void *arg)
{
    struct tf_mitm *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->ctx = ctx;
    m->forge = forge;
    m->ins = ins;
    m->inj = inj;
    m->emit = emit;
    m->keylog = keylog;
    m->arg = arg;
    m->upstream_alert = -1;
    m->client_alert = -1;
    m->to_client_alert = -1;
    m->stage = MITM_HELLO;
    m->client_wait = evbuffer_new();
    if (m->client_wait == NULL) {
        free(m);
        return NULL;
    }
    return m;
}

void
tf_mitm_free(struct tf_mitm *m)
{
    if (m == NULL)
        return;
    SSL_free(m->client);   /* frees its BIOs */
    SSL_free(m->upstream);
    if (m->client_wait != NULL)
        evbuffer_free(m->client_wait);
    json_decref(m->upstream_chain);
    json_decref(m->forged_chain);
    tf_json_text_release(m->upstream_chain_text);
    tf_json_text_release(m->forged_chain_text);
    free(m->alpn_selected);
    free(m->error);
    free(m);
}

static enum tf_mitm_status __attribute__((format(printf, 2, 3)))
mitm_fail(struct tf_mitm *m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char buf[MITM_ERROR_MAX];
    vsnprintf(buf, sizeof(buf), fmt, ap);
    char *copy = strdup(buf);
    if (copy != NULL) {
        free(m->error);
        m->error = copy;
    }
    va_end(ap);
    if (!m->failed) {
        m->failed = true;
        m->failed_at = m->stage;
    }
    m->stage = MITM_DONE;
    return TF_MITM_FAILED;
}

/* Moves what an SSL wrote into its BIO to out (chains move, bytes stay put). */
static void
mitm_drain(BIO *bio, struct evbuffer *out)
{
    if (bio != NULL)
        evbuffer_add_buffer(out, tf_evbio_buffer(bio));
}

/* Moves in to where an SSL reads. */
static void
mitm_feed(BIO *bio, struct evbuffer *in)
{
    evbuffer_add_buffer(tf_evbio_buffer(bio), in);
}

static const char *
mitm_ssl_error(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    return r ? r : "connection closed";
}

/* ------------------------------------------------------------ the upstream leg */

static void
mitm_alpn_from_client(struct tf_mitm *m)
{
    const struct tf_tls_settings *t = &m->ctx->lc->upstream_tls;
    uint8_t wire[256];
    size_t used = 0;

    if (t->alpn != NULL) {
        const char *p = t->alpn;
        while (*p) {
            const char *comma = strchr(p, ',');
            size_t n = comma ? (size_t)(comma - p) : strlen(p);
            if (n > 0 && n < 256 && used + 1 + n <= sizeof(wire)) {
                wire[used++] = (uint8_t)n;
                memcpy(wire + used, p, n);
                used += n;
            }
            p += n + (comma ? 1 : 0);
        }
    } else {
        json_t *list = tf_inspect_alpn(m->ins);
        size_t i;
        json_t *v;
        json_array_foreach(list, i, v)
        {
            const char *s = json_string_value(v);
            size_t n = s ? strlen(s) : 0;
            if (n > 0 && n < 256 && used + 1 + n <= sizeof(wire)) {
                wire[used++] = (uint8_t)n;
                memcpy(wire + used, s, n);
                used += n;
            }
        }
    }
    if (used > 0)
        SSL_set_alpn_protos(m->upstream, wire, (unsigned)used);
}

static enum tf_mitm_status
mitm_start_upstream(struct tf_mitm *m, struct evbuffer *to_server)
{
    m->upstream = SSL_new(m->ctx->upstream_side);
    m->up_in = tf_evbio_new();
    m->up_out = tf_evbio_new();
    if (m->upstream == NULL || m->up_in == NULL || m->up_out == NULL) {
        BIO_free(m->up_in);
        BIO_free(m->up_out);
        m->up_in = m->up_out = NULL;
        return mitm_fail(m, "out of memory");
    }
    SSL_set_bio(m->upstream, m->up_in, m->up_out);
    SSL_set_ex_data(m->upstream, mitm_ex_index, m);
    SSL_set_msg_callback(m->upstream, mitm_msg_cb);
    SSL_set_connect_state(m->upstream);
    const char *host = m->has_sni ? m->sni : m->ctx->lc->upstream_host;
    if (m->has_sni)
        SSL_set_tlsext_host_name(m->upstream, m->sni);
    if (m->ctx->lc->upstream_tls.verify != TF_VERIFY_NONE && host != NULL)
        SSL_set1_host(m->upstream, host);
    mitm_alpn_from_client(m);
    m->stage = MITM_UPSTREAM;
    ERR_clear_error();
    SSL_do_handshake(m->upstream);
    mitm_drain(m->up_out, to_server);
    return TF_MITM_OK;
}

static enum tf_cert_mutation
mitm_mutation(enum tf_fault_id id)
{
    switch (id) {
    case TF_FAULT_CERT_EXPIRED: return TF_CERT_EXPIRED;
    case TF_FAULT_CERT_NOT_YET_VALID: return TF_CERT_NOT_YET_VALID;
    case TF_FAULT_CERT_WRONG_HOST: return TF_CERT_WRONG_HOST;
    case TF_FAULT_CERT_SELF_SIGNED: return TF_CERT_SELF_SIGNED;
    case TF_FAULT_CERT_UNTRUSTED_ROOT: return TF_CERT_UNTRUSTED_ROOT;
    case TF_FAULT_CERT_NO_INTERMEDIATE: return TF_CERT_NO_INTERMEDIATE;
    case TF_FAULT_CERT_WRONG_EKU: return TF_CERT_WRONG_EKU;
    case TF_FAULT_CERT_SHA1: return TF_CERT_SHA1;
    case TF_FAULT_CERT_WEAK_KEY: return TF_CERT_WEAK_KEY;
    default: return TF_CERT_GOOD;
    }
}

/* The certificate fault of this flow, if any, and the settings faults on the client SSL. */
static void
mitm_flow_faults(struct tf_mitm *m, struct tf_cert_fault *cf,
                 const struct tf_fault_rule **cert_rule)
{
    const struct tf_fault_rule *r;
    memset(cf, 0, sizeof(*cf));
    *cert_rule = NULL;
    for (size_t i = 0; m->inj != NULL && (r = tf_inject_mitm_rule(m->inj, i)) != NULL; i++) {
        const struct tf_fault_args *a = &r->args;
        char action[200];
        switch (r->def->id) {
        case TF_FAULT_CERT_EXPIRED:
        case TF_FAULT_CERT_NOT_YET_VALID:
        case TF_FAULT_CERT_WRONG_HOST:
        case TF_FAULT_CERT_SELF_SIGNED:
        case TF_FAULT_CERT_UNTRUSTED_ROOT:
        case TF_FAULT_CERT_NO_INTERMEDIATE:
        case TF_FAULT_CERT_WRONG_EKU:
        case TF_FAULT_CERT_SHA1:
        case TF_FAULT_CERT_WEAK_KEY:
            if (*cert_rule != NULL)
                continue; /* one forgery per flow: the first rule wins */
            *cert_rule = r;
            cf->mutation = mitm_mutation(r->def->id);
            cf->seconds = (long)a->seconds;
            cf->host = a->host;
            break;
        case TF_FAULT_SERVER_VERSIONS:
            SSL_set_min_proto_version(m->client, a->min_version);
            SSL_set_max_proto_version(m->client, a->version);
            if (a->min_version && a->min_version < TLS1_2_VERSION)
                SSL_set_security_level(m->client, 0);
            snprintf(action, sizeof(action), "the client leg accepts only %s to %s",
                     tf_names_version(a->min_version) ? tf_names_version(a->min_version) : "?",
                     tf_names_version(a->version) ? tf_names_version(a->version) : "?");
            tf_inject_mitm_fired(m->inj, r, action);
            break;
        case TF_FAULT_SERVER_CIPHERS:
            if (a->ciphers)
                SSL_set_cipher_list(m->client, a->ciphers);
            if (a->ciphersuites)
                SSL_set_ciphersuites(m->client, a->ciphersuites);
            snprintf(action, sizeof(action), "the client leg offers only ciphers \"%s\" / \"%s\"",
                     a->ciphers ? a->ciphers : "", a->ciphersuites ? a->ciphersuites : "");
            tf_inject_mitm_fired(m->inj, r, action);
            break;
        case TF_FAULT_REQUIRE_SNI:
            m->require_sni = true;
            if (!m->has_sni)
                tf_inject_mitm_fired(m->inj, r,
                                     "the ClientHello has no SNI: answered unrecognized_name");
            break;
        default:
            break;
        }
    }
}

/* Upstream done (or unusable and forged over): forge, then answer the client. */
static enum tf_mitm_status
mitm_start_client(struct tf_mitm *m, X509 *upstream_leaf, struct evbuffer *to_client)
{
    struct tf_cert_fault cf;
    const struct tf_fault_rule *cert_rule;
    struct tf_forged forged;
    char err[256];

    m->client = SSL_new(m->ctx->client_side);
    m->client_in = tf_evbio_new();
    m->client_out = tf_evbio_new();
    if (m->client == NULL || m->client_in == NULL || m->client_out == NULL) {
        BIO_free(m->client_in);
        BIO_free(m->client_out);
        m->client_in = m->client_out = NULL;
        return mitm_fail(m, "out of memory");
    }
    SSL_set_bio(m->client, m->client_in, m->client_out);
    SSL_set_ex_data(m->client, mitm_ex_index, m);
    SSL_set_msg_callback(m->client, mitm_msg_cb);
    SSL_set_accept_state(m->client);

    mitm_flow_faults(m, &cf, &cert_rule);
    if (cf.mutation == TF_CERT_SELF_SIGNED || cf.mutation == TF_CERT_SHA1 ||
        cf.mutation == TF_CERT_WEAK_KEY)
        SSL_set_security_level(m->client, 0); /* our own OpenSSL would refuse to serve them */
    if (!tf_forge_chain(m->forge, upstream_leaf, m->has_sni ? m->sni : NULL, &cf, &forged, err,
                        sizeof(err)))
        return mitm_fail(m, "cannot forge a certificate: %s", err);
    /* Two leaves: one per key type, OpenSSL picks by the client's offer. */
    int ok = SSL_use_cert_and_key(m->client, forged.leaf, forged.key, forged.chain, 1);
    if (ok == 1 && forged.alt_leaf != NULL)
        ok = SSL_use_cert_and_key(m->client, forged.alt_leaf, forged.alt_key, forged.chain, 1);
    char subject[128] = "";
    X509_NAME_oneline(X509_get_subject_name(forged.leaf), subject, sizeof(subject));
    snprintf(m->forged_desc, sizeof(m->forged_desc), "%s%s", subject,
             forged.cached ? " (cached)" : "");
    tf_forged_release(&forged);
    if (ok != 1)
        return mitm_fail(m, "the forged certificate was refused: %s", mitm_ssl_error());
    m->forged = true;
    if (cert_rule != NULL) {
        char action[240];
        snprintf(action, sizeof(action), "served a forged chain with %s for %s",
                 cert_rule->def->name, subject);
        tf_inject_mitm_fired(m->inj, cert_rule, action);
    }
    m->stage = MITM_CLIENT;
    mitm_feed(m->client_in, m->client_wait);
    evbuffer_free(m->client_wait); /* from now on the client's bytes go to its SSL */
    m->client_wait = NULL;
    ERR_clear_error();
    int r = SSL_do_handshake(m->client);
    mitm_drain(m->client_out, to_client);
    if (r <= 0 && SSL_get_error(m->client, r) != SSL_ERROR_WANT_READ)
        return mitm_fail(m, "client handshake failed: %s", mitm_ssl_error());
    if (r == 1) {
        m->stage = MITM_RELAY;
        m->client_done = true;
    }
    return TF_MITM_OK;
}

/* The upstream could not be used: answer the client as the upstream answered us. */
static enum tf_mitm_status
mitm_mirror_upstream_failure(struct tf_mitm *m, struct evbuffer *to_client, const char *why)
{
    if (m->upstream_alert >= 0) {
        uint8_t rec[7];
        tf_rewrite_alert_record(0x0303, 2, (uint8_t)m->upstream_alert, rec);
        evbuffer_add(to_client, rec, sizeof(rec));
        const char *name = tf_names_alert((uint8_t)m->upstream_alert);
        return mitm_fail(m, "upstream handshake failed: the server sent alert %s; passed on "
                         "to the client", name ? name : "?");
    }
    return mitm_fail(m, "upstream handshake failed: %s", why);
}

static enum tf_mitm_status
mitm_upstream_step(struct tf_mitm *m, struct evbuffer *to_client, struct evbuffer *to_server)
{
    ERR_clear_error();
    int r = SSL_do_handshake(m->upstream);
    mitm_drain(m->up_out, to_server);
    if (r <= 0) {
        int e = SSL_get_error(m->upstream, r);
        if (e == SSL_ERROR_WANT_READ)
            return TF_MITM_OK;
        return mitm_mirror_upstream_failure(m, to_client, mitm_ssl_error());
    }
    m->upstream_done = true;
    const unsigned char *alpn = NULL;
    unsigned alpn_len = 0;
    SSL_get0_alpn_selected(m->upstream, &alpn, &alpn_len);
    if (alpn_len > 0 && m->alpn_selected == NULL &&
        (m->alpn_selected = malloc(alpn_len)) != NULL) {
        memcpy(m->alpn_selected, alpn, alpn_len);
        m->alpn_selected_len = alpn_len;
    }
    m->verify_result = SSL_get_verify_result(m->upstream);
    if (m->ctx->lc->upstream_tls.verify != TF_VERIFY_NONE && m->verify_result != X509_V_OK) {
        m->verify_failed = true;
        if (!m->ctx->lc->upstream_tls.forge_on_verify_failure)
            return mitm_fail(m, "upstream certificate rejected: %s",
                             X509_verify_cert_error_string(m->verify_result));
    }
    X509 *leaf = SSL_get1_peer_certificate(m->upstream);
    enum tf_mitm_status st = mitm_start_client(m, leaf, to_client);
    X509_free(leaf);
    return st;
}

/* ------------------------------------------------------------ plaintext */

/*
 * log.content: the first content_max bytes of each direction's plaintext
 * as "data" events, readable text and hex side by side.
 */
static void
mitm_log_content(struct tf_mitm *m, enum tf_dir dir, const uint8_t *p, size_t n)
{
    size_t max = m->ctx->cfg->content_max;
    uint64_t offset = m->data_bytes[dir];
    m->data_bytes[dir] += n;
    if (max == 0 || m->content_logged[dir] >= max)
        return;
    size_t take = max - m->content_logged[dir];
    if (take > n)
        take = n;
    m->content_logged[dir] += take;
    char *text = malloc(take * 4 + 1), *hex = malloc(take * 2 + 1);
    if (text != NULL && hex != NULL) {
        tf_record_preview(p, take, take, text, take * 4 + 1);
        for (size_t i = 0; i < take; i++)
            snprintf(hex + 2 * i, 3, "%02x", p[i]);
        hex[2 * take] = '\0';
        json_t *obj = json_pack("{s:s, s:I, s:I, s:s, s:s}", "leg",
                                dir == TF_DIR_C2S ? "client" : "upstream", "offset",
                                (json_int_t)offset, "length", (json_int_t)take, "text", text,
                                "hex", hex);
        if (take < n)
            json_object_set_new_nocheck(obj, "truncated", json_true());
        m->emit(m->arg, "data", dir, obj);
    }
    free(text);
    free(hex);
}

/* Reads all plaintext from one SSL and writes it into the other. */
static enum tf_mitm_status
mitm_pump(struct tf_mitm *m, SSL *from, SSL *to, BIO *to_out, struct evbuffer *out,
          bool *closed)
{
    uint8_t buf[MITM_READ_CHUNK];
    *closed = false;
    for (;;) {
        /*
         * Nothing buffered, nothing in the BIO: SSL_read would only answer
         * "want read", after setting up a 16 KiB read buffer that an idle
         * connection then keeps (SSL_MODE_RELEASE_BUFFERS frees it only
         * after a record).
         */
        if (!SSL_has_pending(from) && BIO_ctrl_pending(SSL_get_rbio(from)) == 0)
            return TF_MITM_OK;
        /*
         * SSL_get_error below needs an empty error queue.  Clearing it
         * walks all of its slots (800 instructions, a tenth of an
         * SSL_read); looking is a few dozen, and it is almost always empty.
         */
        if (ERR_peek_error() != 0)
            ERR_clear_error();
        int n = SSL_read(from, buf, sizeof(buf));
        if (n > 0) {
            mitm_log_content(m, from == m->client ? TF_DIR_C2S : TF_DIR_S2C, buf, (size_t)n);
            if (SSL_write(to, buf, n) <= 0)
                return mitm_fail(m, "cannot pass data on to the %s: %s",
                                 to == m->client ? "client" : "upstream", mitm_ssl_error());
            mitm_drain(to_out, out);
            continue;
        }
        int e = SSL_get_error(from, n);
        if (e == SSL_ERROR_WANT_READ)
            return TF_MITM_OK;
        if (e == SSL_ERROR_ZERO_RETURN) {
            /* close_notify: pass it on */
            SSL_shutdown(to);
            mitm_drain(to_out, out);
            *closed = true;
            return TF_MITM_OK;
        }
        return mitm_fail(m, "TLS error from the %s: %s", from == m->client ? "client" : "upstream",
                         mitm_ssl_error());
    }
}


/* Relaying: what an idle connection need not keep goes. */
static enum tf_mitm_status
mitm_trim(struct tf_mitm *m, enum tf_mitm_status st)
{
    if (st != TF_MITM_OK || m->stage != MITM_RELAY)
        return st;
    tf_json_pack(&m->upstream_chain, &m->upstream_chain_text);
    tf_json_pack(&m->forged_chain, &m->forged_chain_text);
    /*
     * The first exchanges after the handshake give their record buffers
     * back at once: a burst of new connections then reuses the same few
     * instead of holding one set each until the sweep, which would leave
     * the heap fragmented at its peak.  Later ones wait for the sweep.
     */
    m->buffered = true;
    if (m->early_pumps < MITM_EARLY_PUMPS) {
        m->early_pumps++;
        tf_mitm_idle(m);
    }
    return st;
}

/* ------------------------------------------------------------ entry points */

static enum tf_mitm_status
mitm_hello_ready(struct tf_mitm *m, struct evbuffer *to_client, struct evbuffer *to_server)
{
    if (m->stage != MITM_HELLO || !m->upstream_tcp || !tf_inspect_client_hello_seen(m->ins))
        return TF_MITM_OK;
    const char *sni = tf_inspect_sni(m->ins);
    if (sni != NULL) {
        m->sni = sni;
        m->has_sni = true;
    }
    if (m->inj != NULL)
        tf_inject_hello(m->inj, m->has_sni ? m->sni : NULL);
    (void)to_client;
    return mitm_start_upstream(m, to_server);
}

enum tf_mitm_status
tf_mitm_from_client(struct tf_mitm *m, struct evbuffer *in, struct evbuffer *to_client,
                    struct evbuffer *to_server)
{
    bool closed;
    switch (m->stage) {
    case MITM_HELLO:
        if (tf_inspect_client_hello_lost(m->ins)) {
            /*
             * Not TLS, or no ClientHello we can read: nothing to terminate.
             * Relayed as it is, as passthrough would, so that the client gets
             * the server's own answer (an alert, at once) rather than silence
             * until the handshake timeout.
             */
            m->stage = MITM_RAW;
            evbuffer_add_buffer(to_server, m->client_wait);
            evbuffer_add_buffer(to_server, in);
            return TF_MITM_OK;
        }
        evbuffer_add_buffer(m->client_wait, in);
        return mitm_hello_ready(m, to_client, to_server);
    case MITM_UPSTREAM:
        evbuffer_add_buffer(m->client_wait, in);
        return TF_MITM_OK;
    case MITM_CLIENT: {
        mitm_feed(m->client_in, in);
        ERR_clear_error();
        int r = SSL_do_handshake(m->client);
        mitm_drain(m->client_out, to_client);
        if (r <= 0) {
            if (SSL_get_error(m->client, r) == SSL_ERROR_WANT_READ)
                return TF_MITM_OK;
            return mitm_fail(m, "client handshake failed: %s", mitm_ssl_error());
        }
        m->stage = MITM_RELAY;
        m->client_done = true;
        return mitm_trim(m, mitm_pump(m, m->client, m->upstream, m->up_out, to_server, &closed));
    }
    case MITM_RELAY:
        mitm_feed(m->client_in, in);
        return mitm_trim(m, mitm_pump(m, m->client, m->upstream, m->up_out, to_server, &closed));
    case MITM_RAW:
        evbuffer_add_buffer(to_server, in);
        return TF_MITM_OK;
    default:
        evbuffer_drain(in, evbuffer_get_length(in));
        return TF_MITM_OK;
    }
}

enum tf_mitm_status
tf_mitm_from_server(struct tf_mitm *m, struct evbuffer *in, struct evbuffer *to_client,
                    struct evbuffer *to_server)
{
    bool closed;
    switch (m->stage) {
    case MITM_UPSTREAM:
        mitm_feed(m->up_in, in);
        return mitm_upstream_step(m, to_client, to_server);
    case MITM_CLIENT:
        /* Post-handshake messages from the upstream wait in its BIO until the relay. */
        mitm_feed(m->up_in, in);
        return TF_MITM_OK;
    case MITM_RELAY:
        mitm_feed(m->up_in, in);
        return mitm_trim(m, mitm_pump(m, m->upstream, m->client, m->client_out, to_client, &closed));
    case MITM_HELLO:
        /*
         * The server spoke before the client's hello: a protocol whose
         * server talks first (a banner), so nothing to terminate.  Relayed
         * both ways as it is, as passthrough would: the client sees what a
         * direct connection shows instead of silence until the timeout.
         */
        m->stage = MITM_RAW;
        evbuffer_add_buffer(to_server, m->client_wait);
        evbuffer_add_buffer(to_client, in);
        return TF_MITM_OK;
    case MITM_RAW:
        evbuffer_add_buffer(to_client, in);
        return TF_MITM_OK;
    default:
        evbuffer_drain(in, evbuffer_get_length(in));
        return TF_MITM_OK;
    }
}

enum tf_mitm_status
tf_mitm_upstream_connected(struct tf_mitm *m, struct evbuffer *to_client,
                           struct evbuffer *to_server)
{
    m->upstream_tcp = true;
    if (m->stage == MITM_RAW) {
        evbuffer_add_buffer(to_server, m->client_wait);
        return TF_MITM_OK;
    }
    return mitm_hello_ready(m, to_client, to_server);
}

void
tf_mitm_eof(struct tf_mitm *m, bool client, struct evbuffer *to_client,
            struct evbuffer *to_server)
{
    if (m->stage != MITM_RELAY)
        return;
    if (client && m->upstream != NULL) {
        SSL_shutdown(m->upstream);
        mitm_drain(m->up_out, to_server);
    } else if (!client && m->client != NULL) {
        SSL_shutdown(m->client);
        mitm_drain(m->client_out, to_client);
    }
}

bool
tf_mitm_relays_server_raw(const struct tf_mitm *m)
{
    return m->stage == MITM_RAW || m->stage == MITM_HELLO;
}

/*
 * Record buffers go when the flow is quiet (tf_flow_sweep), not after
 * every record as SSL_MODE_RELEASE_BUFFERS would do: a busy connection
 * would then allocate and free 17 KiB per record, which is slow in a heap
 * that thousands of closed connections have fragmented (keep-alive fell
 * by a third after 8,000 idle connections had come and gone).
 * SSL_free_buffers refuses while something is buffered.
 */
bool
tf_mitm_idle(struct tf_mitm *m)
{
    if (m->stage != MITM_RELAY || !m->buffered)
        return false;
    bool freed = (m->client == NULL || SSL_free_buffers(m->client)) &&
                 (m->upstream == NULL || SSL_free_buffers(m->upstream));
    if (freed)
        m->buffered = false;
    return freed;
}

bool
tf_mitm_handshake_done(const struct tf_mitm *m)
{
    return m->client_done && m->upstream_done;
}

void
tf_mitm_describe(const struct tf_mitm *m, char *buf, size_t len)
{
    buf[0] = '\0';
    if (m->verify_failed && m->forged)
        snprintf(buf, len, "the upstream certificate failed verification (%s); forged anyway",
                 X509_verify_cert_error_string(m->verify_result));
}

const char *
tf_mitm_error(const struct tf_mitm *m)
{
    return m->error;
}

static json_t *
mitm_leg_summary(SSL *ssl, bool done)
{
    json_t *o = json_object();
    if (ssl == NULL || !done) {
        json_object_set_new_nocheck(o, "handshake", tf_json_string("incomplete"));
        return o;
    }
    json_object_set_new_nocheck(o, "handshake", tf_json_string("complete"));
    const char *v = tf_names_version((uint16_t)SSL_version(ssl));
    json_object_set_new_nocheck(o, "version", tf_json_string(v ? v : SSL_get_version(ssl)));
    /* During the handshake the suite being agreed is the pending one. */
    const SSL_CIPHER *c = SSL_get_pending_cipher(ssl);
    if (c == NULL)
        c = SSL_get_current_cipher(ssl);
    if (c != NULL) {
        const char *std = SSL_CIPHER_standard_name(c);
        json_object_set_new_nocheck(o, "cipher_suite",
                                    tf_json_string(std ? std : SSL_CIPHER_get_name(c)));
    }
    const unsigned char *alpn = NULL;
    unsigned alpn_len = 0;
    SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
    if (alpn_len > 0)
        json_object_set_new_nocheck(o, "alpn", tf_json_stringn((const char *)alpn, alpn_len));
    return o;
}

void
tf_mitm_summarize(const struct tf_mitm *m, json_t *end)
{
    json_t *o = json_object();
    json_object_set_new_nocheck(o, "client_leg", mitm_leg_summary(m->client, m->client_done));
    json_t *up = mitm_leg_summary(m->upstream, m->upstream_done);
    if (m->upstream != NULL && m->stage != MITM_UPSTREAM)
        json_object_set_new_nocheck(up, "verify",
                                    tf_json_string(m->ctx->lc->upstream_tls.verify == TF_VERIFY_NONE
                                            ? "off"
                                            : X509_verify_cert_error_string(m->verify_result)));
    json_object_set_new_nocheck(o, "upstream_leg", up);
    if (m->forged)
        json_object_set_new_nocheck(o, "forged", tf_json_string(m->forged_desc));
    if (m->stage == MITM_RAW)
        json_object_set_new_nocheck(o, "relayed_raw", json_true());
    json_object_set_new_nocheck(end, "mitm", o);
    /* What the client's TLS did, not what a bystander on its leg guessed. */
    const char *handshake = tf_mitm_handshake_done(m) ? "complete" : "incomplete";
    json_object_set_new_nocheck(end, "handshake", tf_json_name(handshake));
}

static const char *
mitm_stage_name(enum mitm_stage st)
{
    switch (st) {
    case MITM_HELLO: return "hello";
    case MITM_UPSTREAM: return "upstream";
    case MITM_CLIENT: return "client";
    case MITM_RELAY: return "relay";
    case MITM_RAW: return "raw";
    default: return "done";
    }
}

static json_t *
mitm_alert_json(int desc, bool fatal)
{
    const char *name = tf_names_alert((uint8_t)desc);
    json_t *o = json_pack("{s:s}", "level", fatal ? "fatal" : "warning");
    if (name != NULL)
        json_object_set_new_nocheck(o, "description", tf_json_string(name));
    else
        json_object_set_new_nocheck(o, "description", json_integer(desc));
    return o;
}

void
tf_mitm_facts(const struct tf_mitm *m, json_t *facts)
{
    json_t *o = json_object();
    json_object_set_new_nocheck(o, "stage", tf_json_string(mitm_stage_name(m->stage)));
    if (m->failed) {
        /* MITM_HELLO or MITM_UPSTREAM: towards the server; later: towards the client. */
        bool upstream = m->failed_at == MITM_HELLO || m->failed_at == MITM_UPSTREAM;
        json_object_set_new_nocheck(o, "failed_leg",
                                    tf_json_name(upstream ? "upstream" : "client"));
        json_object_set_new_nocheck(o, "failed_at", tf_json_string(mitm_stage_name(m->failed_at)));
    }
    if (m->error)
        json_object_set_new_nocheck(o, "error", tf_json_string(m->error));
    if (m->upstream_alert >= 0)
        json_object_set_new_nocheck(o, "upstream_alert",
                                    mitm_alert_json(m->upstream_alert, m->upstream_alert_fatal));
    if (m->client_alert >= 0)
        json_object_set_new_nocheck(o, "client_alert",
                                    mitm_alert_json(m->client_alert, m->client_alert_fatal));
    if (m->to_client_alert >= 0)
        json_object_set_new_nocheck(o, "to_client_alert",
                                    mitm_alert_json(m->to_client_alert, true));
    json_object_set_new_nocheck(o, "upstream_messages", json_integer(m->upstream_msgs));
    if (m->upstream_last[0])
        json_object_set_new_nocheck(o, "upstream_last", tf_json_string(m->upstream_last));
    bool verify_on = m->ctx->lc->upstream_tls.verify != TF_VERIFY_NONE;
    json_object_set_new_nocheck(o, "verify_on", json_boolean(verify_on));
    if (m->upstream_done || m->verify_failed) {
        json_object_set_new_nocheck(o, "verify_code", json_integer(m->verify_result));
        json_object_set_new_nocheck(o, "verify_failed", json_boolean(m->verify_failed));
    }
    json_object_set_new_nocheck(o, "forged", json_boolean(m->forged));
    json_object_set_new_nocheck(o, "upstream_done", json_boolean(m->upstream_done));
    json_object_set_new_nocheck(o, "client_done", json_boolean(m->client_done));
    json_t *chain = tf_json_unpack(m->upstream_chain, m->upstream_chain_text);
    if (chain)
        json_object_set_new_nocheck(o, "upstream_chain", chain);
    chain = tf_json_unpack(m->forged_chain, m->forged_chain_text);
    if (chain)
        json_object_set_new_nocheck(o, "forged_chain", chain);
    json_object_set_new_nocheck(facts, "mitm_facts", o);
}
