/*
 * probe.c — fetch a server's certificate chain over a side connection.
 *
 * Job: for a TLS 1.3 passthrough flow, whose server Certificate travels
 * encrypted (RFC 8446 §4.4.2 inside the handshake keys), connect to the
 * same upstream with the same SNI and read the chain the server sends.
 * The Certificate comes from OpenSSL's message callback, decoded with
 * decode.c's tf_decode_certificate, so the verdict lints the same JSON it
 * would have got from a clear TLS 1.2 Certificate.  Verification is off
 * and the security level is 0: the point is to see a bad chain, not to be
 * stopped by it.
 *
 * The connection is a bufferevent on a non-blocking socket; the TLS runs
 * on memory BIOs (as mitm.c's legs do), so the event loop never waits on
 * it.  A timer bounds the whole probe.  A chain, once fetched, goes into a
 * process-wide cache keyed by "address|sni" for TF_PROBE_CACHE_SECONDS;
 * failures and timeouts are not kept (the next flow tries again).
 *
 * Left to others: when to probe and what the chain means (flow.c,
 * verdict.c).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/util.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "tlsfault/decode.h"
#include "tlsfault/handshake.h"
#include "tlsfault/listener.h"
#include "tlsfault/names.h"
#include "tlsfault/origdst.h"
#include "tlsfault/config.h"
#include "tlsfault/probe.h"

#define PROBE_CACHE_MAX 256
#define PROBE_KEY_MAX 400
#define PROBE_READ_CHUNK 16384

enum probe_status {
    PROBE_PENDING,
    PROBE_DONE,
    PROBE_CACHED,
    PROBE_FAILED,
    PROBE_TIMEOUT,
};

/*
 * Ownership: the probe owns its bufferevent (and so its socket), its SSL
 * (and so the memory BIOs), its timer and the decoded chain.
 */
struct tf_probe {
    enum probe_status status;
    char key[PROBE_KEY_MAX];
    char sni[256];
    bool has_sni;
    struct bufferevent *bev;
    SSL *ssl;
    BIO *in, *out;
    struct event *timer;
    json_t *chain;
    char version[16];
    char error[200];
    tf_probe_done_fn done;
    void *arg;
};

/* ------------------------------------------------------------ settings */

static atomic_bool probe_default;
static pthread_once_t probe_env_once = PTHREAD_ONCE_INIT;

static void
probe_read_env(void)
{
    const char *e = getenv("TLSFAULT_PROBE");
    if (e != NULL && (strcmp(e, "1") == 0 || strcmp(e, "true") == 0 || strcmp(e, "yes") == 0))
        atomic_store(&probe_default, true);
}

void
tf_probe_set_default(bool on)
{
    pthread_once(&probe_env_once, probe_read_env);
    atomic_store(&probe_default, on);
}

bool
tf_probe_enabled(const struct tf_listener_conf *lc)
{
    pthread_once(&probe_env_once, probe_read_env);
    return (lc != NULL && lc->probe) || atomic_load(&probe_default);
}

/* ------------------------------------------------------------ cache */

struct probe_cache_entry {
    char key[PROBE_KEY_MAX];
    time_t at;
    char *chain; /* JSON text: jansson values are not shared between threads */
    char version[16];
};

static pthread_mutex_t probe_cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct probe_cache_entry probe_cache[PROBE_CACHE_MAX];

static time_t
probe_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

/* Fills p from a fresh entry; false when there is none. */
static bool
probe_cache_get(struct tf_probe *p)
{
    time_t now = probe_now();
    bool hit = false;
    pthread_mutex_lock(&probe_cache_lock);
    for (size_t i = 0; i < PROBE_CACHE_MAX; i++) {
        struct probe_cache_entry *e = &probe_cache[i];
        if (e->key[0] == '\0' || strcmp(e->key, p->key) != 0 ||
            now - e->at >= TF_PROBE_CACHE_SECONDS)
            continue;
        p->chain = e->chain != NULL ? json_loads(e->chain, 0, NULL) : NULL;
        if (p->chain == NULL)
            break;
        p->status = PROBE_CACHED;
        snprintf(p->version, sizeof(p->version), "%s", e->version);
        hit = true;
        break;
    }
    pthread_mutex_unlock(&probe_cache_lock);
    return hit;
}

static void
probe_cache_put(const struct tf_probe *p)
{
    time_t now = probe_now();
    char *chain = p->chain ? json_dumps(p->chain, JSON_COMPACT) : NULL;
    struct probe_cache_entry *slot = NULL;
    pthread_mutex_lock(&probe_cache_lock);
    for (size_t i = 0; i < PROBE_CACHE_MAX; i++) {
        struct probe_cache_entry *e = &probe_cache[i];
        if (strcmp(e->key, p->key) == 0) {
            slot = e;
            break;
        }
        /* Else the oldest (or an empty one). */
        if (slot == NULL || e->at < slot->at)
            slot = e;
    }
    free(slot->chain);
    snprintf(slot->key, sizeof(slot->key), "%s", p->key);
    slot->at = now;
    slot->chain = chain;
    snprintf(slot->version, sizeof(slot->version), "%s", p->version);
    pthread_mutex_unlock(&probe_cache_lock);
}

void
tf_probe_cache_clear(void)
{
    pthread_mutex_lock(&probe_cache_lock);
    for (size_t i = 0; i < PROBE_CACHE_MAX; i++) {
        free(probe_cache[i].chain);
        memset(&probe_cache[i], 0, sizeof(probe_cache[i]));
    }
    pthread_mutex_unlock(&probe_cache_lock);
}

/* ------------------------------------------------------------ TLS */

static SSL_CTX *probe_ctx;
static int probe_ex_index = -1;
static pthread_once_t probe_ctx_once = PTHREAD_ONCE_INIT;

static void
probe_ctx_init(void)
{
    probe_ex_index = SSL_get_ex_new_index(0, "tlsfault probe", NULL, NULL, NULL);
    probe_ctx = SSL_CTX_new(TLS_client_method());
    if (probe_ctx == NULL)
        return;
    /* Whatever the server sends must get through: weak keys, SHA-1, old versions. */
    SSL_CTX_set_security_level(probe_ctx, 0);
    SSL_CTX_set_min_proto_version(probe_ctx, 0);
    SSL_CTX_set_cipher_list(probe_ctx, "ALL:@SECLEVEL=0");
    SSL_CTX_set_verify(probe_ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(probe_ctx, SSL_SESS_CACHE_OFF);
}

/* The server's Certificate, decrypted by OpenSSL: decoded as a clear one would be. */
static void
probe_msg_cb(int write_p, int version, int content_type, const void *buf, size_t len, SSL *ssl,
             void *arg)
{
    struct tf_probe *p = SSL_get_ex_data(ssl, probe_ex_index);
    const uint8_t *b = buf;
    (void)version;
    (void)arg;
    if (p == NULL || write_p || content_type != SSL3_RT_HANDSHAKE || len < TF_HS_HEADER_LEN ||
        b[0] != TF_HS_CERTIFICATE || p->chain != NULL)
        return;
    json_t *obj = json_object();
    tf_decode_certificate(b + TF_HS_HEADER_LEN, len - TF_HS_HEADER_LEN,
                          SSL_version(ssl) == TLS1_3_VERSION, obj);
    json_t *chain = json_object_get(obj, "chain");
    if (json_is_array(chain))
        p->chain = json_incref(chain);
    json_decref(obj);
}

/* ------------------------------------------------------------ life */

/* The probe is over: cache the result, stop the I/O, tell the owner. */
static void
probe_finish(struct tf_probe *p, enum probe_status st, const char *error)
{
    if (p->status != PROBE_PENDING)
        return;
    /* A chain in hand is a success, whatever came after it. */
    p->status = p->chain != NULL ? PROBE_DONE : st;
    if (error != NULL && p->status != PROBE_DONE)
        snprintf(p->error, sizeof(p->error), "%s", error);
    if (p->ssl != NULL) {
        const char *v = tf_names_version((uint16_t)SSL_version(p->ssl));
        if (p->chain != NULL && v != NULL)
            snprintf(p->version, sizeof(p->version), "%s", v);
    }
    /* Only a chain is worth keeping: a timeout or a refusal may be gone next time. */
    if (p->chain != NULL)
        probe_cache_put(p);
    if (p->bev != NULL) {
        bufferevent_free(p->bev);
        p->bev = NULL;
    }
    if (p->timer != NULL)
        evtimer_del(p->timer);
    if (p->done != NULL)
        p->done(p->arg);
}

static void
probe_flush(struct tf_probe *p)
{
    size_t pending;
    char buf[PROBE_READ_CHUNK];
    while ((pending = BIO_ctrl_pending(p->out)) > 0) {
        int n = BIO_read(p->out, buf, (int)(pending < sizeof(buf) ? pending : sizeof(buf)));
        if (n <= 0)
            break;
        bufferevent_write(p->bev, buf, (size_t)n);
    }
}

static void
probe_step(struct tf_probe *p)
{
    ERR_clear_error();
    int r = SSL_do_handshake(p->ssl);
    probe_flush(p);
    if (r == 1) {
        /* Polite: close_notify, then the socket goes. */
        SSL_shutdown(p->ssl);
        probe_flush(p);
        probe_finish(p, PROBE_DONE, NULL);
        return;
    }
    int e = SSL_get_error(p->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return;
    unsigned long code = ERR_peek_last_error();
    const char *why = code ? ERR_reason_error_string(code) : NULL;
    char msg[200];
    snprintf(msg, sizeof(msg), "handshake failed: %s", why ? why : "connection closed");
    ERR_clear_error();
    probe_finish(p, PROBE_FAILED, msg);
}

static void
probe_read_cb(struct bufferevent *bev, void *arg)
{
    struct tf_probe *p = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer_iovec v[8];
    int n = evbuffer_peek(in, -1, NULL, v, 8);
    size_t total = 0;
    for (int i = 0; i < n && i < 8; i++) {
        BIO_write(p->in, v[i].iov_base, (int)v[i].iov_len);
        total += v[i].iov_len;
    }
    evbuffer_drain(in, total);
    probe_step(p);
}

static void
probe_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct tf_probe *p = arg;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        probe_step(p);
        return;
    }
    if (what & BEV_EVENT_EOF) {
        probe_finish(p, PROBE_FAILED, "the server closed the connection");
        return;
    }
    if (what & BEV_EVENT_ERROR) {
        char msg[200];
        snprintf(msg, sizeof(msg), "%s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        probe_finish(p, PROBE_FAILED, msg);
    }
}

static void
probe_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    probe_finish(arg, PROBE_TIMEOUT, "no chain before the probe's timeout");
}

struct tf_probe *
tf_probe_start(struct event_base *base, const struct sockaddr *addr, socklen_t len, const char *sni,
               uint32_t mark, unsigned timeout_ms, tf_probe_done_fn done, void *arg)
{
    struct tf_probe *p = calloc(1, sizeof(*p));
    char where[128];
    int fd = -1;

    if (p == NULL)
        return NULL;
    p->done = done;
    p->arg = arg;
    tf_listener_format_addr(addr, where, sizeof(where));
    snprintf(p->key, sizeof(p->key), "%s|%s", where, sni ? sni : "");
    if (sni != NULL) {
        snprintf(p->sni, sizeof(p->sni), "%s", sni);
        p->has_sni = true;
    }
    if (probe_cache_get(p))
        return p;
    pthread_once(&probe_ctx_once, probe_ctx_init);
    p->status = PROBE_PENDING;
    p->timer = evtimer_new(base, probe_timer_cb, p);
    if (p->timer == NULL || probe_ctx == NULL) {
        tf_probe_free(p);
        return NULL;
    }
    struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)((timeout_ms % 1000) * 1000)};
    evtimer_add(p->timer, &tv);

    p->ssl = SSL_new(probe_ctx);
    p->in = BIO_new(BIO_s_mem());
    p->out = BIO_new(BIO_s_mem());
    if (p->ssl == NULL || p->in == NULL || p->out == NULL) {
        BIO_free(p->in);
        BIO_free(p->out);
        p->in = p->out = NULL;
        tf_probe_free(p);
        return NULL;
    }
    SSL_set_bio(p->ssl, p->in, p->out);
    SSL_set_ex_data(p->ssl, probe_ex_index, p);
    SSL_set_msg_callback(p->ssl, probe_msg_cb);
    SSL_set_connect_state(p->ssl);
    if (p->has_sni)
        SSL_set_tlsext_host_name(p->ssl, p->sni);

    fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(p->error, sizeof(p->error), "socket: %s", strerror(errno));
        goto failed;
    }
    /* The upstream socket's mark: a redirect rule must not catch the probe either. */
    if (mark != 0 && tf_origdst_set_mark(fd, mark) != 0) {
        snprintf(p->error, sizeof(p->error), "cannot set SO_MARK %u", (unsigned)mark);
        goto failed;
    }
    p->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (p->bev == NULL)
        goto failed;
    fd = -1;
    bufferevent_setcb(p->bev, probe_read_cb, NULL, probe_event_cb, p);
    bufferevent_enable(p->bev, EV_READ | EV_WRITE);
    if (bufferevent_socket_connect(p->bev, addr, (int)len) < 0) {
        snprintf(p->error, sizeof(p->error), "connect: %s",
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        goto failed;
    }
    return p;

failed:
    if (fd >= 0)
        close(fd);
    /* Finished at once: the caller sees it with tf_probe_finished(); done is not called. */
    p->done = NULL;
    probe_finish(p, PROBE_FAILED, p->error[0] ? p->error : "out of memory");
    return p;
}

void
tf_probe_free(struct tf_probe *p)
{
    if (p == NULL)
        return;
    if (p->bev != NULL)
        bufferevent_free(p->bev);
    if (p->timer != NULL)
        event_free(p->timer);
    SSL_free(p->ssl); /* and its BIOs */
    json_decref(p->chain);
    free(p);
}

bool
tf_probe_finished(const struct tf_probe *p)
{
    return p->status != PROBE_PENDING;
}

json_t *
tf_probe_result(const struct tf_probe *p)
{
    static const char *const names[] = {
        [PROBE_PENDING] = "pending", [PROBE_DONE] = "done",       [PROBE_CACHED] = "cached",
        [PROBE_FAILED] = "failed",   [PROBE_TIMEOUT] = "timeout",
    };
    json_t *o = json_pack("{s:s, s:s}", "status", names[p->status], "target", p->key);
    if (p->chain != NULL)
        json_object_set_nocheck(o, "chain", p->chain);
    if (p->version[0])
        json_object_set_new_nocheck(o, "version", json_string(p->version));
    if (p->error[0] && p->chain == NULL)
        json_object_set_new_nocheck(o, "error", json_string(p->error));
    return o;
}
