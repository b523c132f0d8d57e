/*
 * hsload: a small TLS load generator for the tlsfault benchmark.
 *
 * Two modes, both single-threaded, non-blocking sockets driven by poll(2),
 * OpenSSL as the client, no session resumption (no tickets, no session
 * cache: every connection is a full handshake):
 *
 *   handshake load (default): keep C connections in flight for T seconds.
 *     Each connection: TCP connect, TLS handshake, "GET PATH" with
 *     "Connection: close", read the whole response, wait for the server's
 *     close, close.  When T is over no new connection starts; those in
 *     flight get GRACE seconds to finish.  Prints one line of key=value:
 *       completed  responses read in full (status 200, Content-Length bytes)
 *       in_time    of those, finished before T (the rate is in_time / T)
 *       failed     connect error, TLS error, bad status, early close
 *       unfinished still open when T + GRACE ran out, or older than the
 *                  per-connection timeout: "did not complete before deadline"
 *       rate       in_time / T, connections per second
 *       p50_ms p99_ms  connect-to-close time of completed connections
 *
 *   idle (--idle N): open N connections, C at a time; each does the
 *     handshake and one keep-alive "GET PATH", reads the response and then
 *     stays open, idle.  Prints "ready established=... failed=..." when all
 *     N are settled, then holds them until SIGTERM/SIGINT (or --hold S),
 *     closes them and exits.  Used to measure proxy memory per idle
 *     connection.
 *
 * Build: cc -O2 -o hsload bench/hsload.c -lssl -lcrypto
 * Usage: hsload [-a ADDR] -p PORT [-s SNI] [-C CAFILE] [-c INFLIGHT] [-t SECS]
 *               [-g GRACE] [-T CONN_TIMEOUT] [-P PATH] [--idle N] [--hold SECS]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum state { S_FREE, S_CONNECT, S_HANDSHAKE, S_WRITE, S_READ, S_IDLE };

enum fail { F_CONNECT, F_TLS, F_STATUS, F_EOF, F_RESET, F_OTHER, F_COUNT };
static const char *fail_names[F_COUNT] = {"connect", "tls", "status", "eof", "reset", "other"};

struct conn {
    enum state st;
    int fd;
    SSL *ssl;
    double started;
    short want;       /* poll events wanted */
    size_t got;       /* bytes of response read so far */
    size_t hdr_len;   /* header length once known, else 0 */
    long clen;        /* Content-Length, -1 unknown */
    int status;
    char head[2048];  /* start of the response, for the header */
};

static struct sockaddr_in g_addr;
static SSL_CTX *g_ctx;
static const char *g_sni = "bench.test";
static const char *g_path = "/small";
static char g_req[512];
static size_t g_req_len;
static bool g_idle_mode;
static volatile sig_atomic_t g_stop;

static unsigned long n_completed, n_in_time, n_failed, n_unfinished, n_started;
static unsigned long n_fail[F_COUNT];
static double *g_lat;
static size_t g_lat_n, g_lat_cap;

static double
now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void
conn_release(struct conn *c)
{
    if (c->ssl != NULL)
        SSL_free(c->ssl);
    if (c->fd >= 0)
        close(c->fd);
    c->ssl = NULL;
    c->fd = -1;
    c->st = S_FREE;
}

static void
conn_fail(struct conn *c, enum fail why)
{
    n_failed++;
    n_fail[why]++;
    ERR_clear_error();
    conn_release(c);
}

static bool
conn_start(struct conn *c)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->clen = -1;
    c->started = now();
    n_started++;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        n_failed++;
        n_fail[F_CONNECT]++;
        return false;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->fd = fd;
    if (connect(fd, (struct sockaddr *)&g_addr, sizeof(g_addr)) < 0 && errno != EINPROGRESS) {
        conn_fail(c, F_CONNECT);
        return false;
    }
    c->st = S_CONNECT;
    c->want = POLLOUT;
    return true;
}

/* Parses the response header once it is all in c->head. */
static bool
conn_parse_head(struct conn *c)
{
    size_t n = c->got < sizeof(c->head) ? c->got : sizeof(c->head);
    char *end = memmem(c->head, n, "\r\n\r\n", 4);
    if (end == NULL)
        return false;
    c->hdr_len = (size_t)(end - c->head) + 4;
    c->status = 0;
    if (n > 12 && memcmp(c->head, "HTTP/1.", 7) == 0)
        c->status = atoi(c->head + 9);
    for (char *p = c->head; p < end; p++) {
        if ((p == c->head || p[-1] == '\n') && strncasecmp(p, "content-length:", 15) == 0) {
            c->clen = strtol(p + 15, NULL, 10);
            break;
        }
    }
    return true;
}

static void
conn_done(struct conn *c, double t_end_load)
{
    double t = now();
    n_completed++;
    if (t <= t_end_load)
        n_in_time++;
    if (g_lat_n == g_lat_cap) {
        g_lat_cap = g_lat_cap ? g_lat_cap * 2 : 4096;
        g_lat = realloc(g_lat, g_lat_cap * sizeof(*g_lat));
        if (g_lat == NULL)
            abort();
    }
    g_lat[g_lat_n++] = t - c->started;
}

static bool
body_complete(const struct conn *c)
{
    return c->hdr_len > 0 && c->clen >= 0 && c->got >= c->hdr_len + (size_t)c->clen;
}

/* Translates an SSL_get_error result into poll interest; false: it failed. */
static bool
ssl_want(struct conn *c, int rc)
{
    int e = SSL_get_error(c->ssl, rc);
    if (e == SSL_ERROR_WANT_READ) {
        c->want = POLLIN;
        return true;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        c->want = POLLOUT;
        return true;
    }
    return false;
}

static enum fail
classify_error(struct conn *c)
{
    (void)c;
    if (errno == ECONNRESET || errno == EPIPE)
        return F_RESET;
    return F_TLS;
}

/* Advances a connection as far as it goes without blocking. */
static void
conn_step(struct conn *c, short revents, double t_end_load)
{
    if (c->st == S_CONNECT) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (!(revents & (POLLOUT | POLLERR | POLLHUP)))
            return;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
            conn_fail(c, F_CONNECT);
            return;
        }
        c->ssl = SSL_new(g_ctx);
        if (c->ssl == NULL) {
            conn_fail(c, F_OTHER);
            return;
        }
        SSL_set_fd(c->ssl, c->fd);
        SSL_set_tlsext_host_name(c->ssl, g_sni);
        SSL_set1_host(c->ssl, g_sni);
        SSL_set_connect_state(c->ssl);
        c->st = S_HANDSHAKE;
    }
    if (c->st == S_HANDSHAKE) {
        errno = 0;
        int rc = SSL_do_handshake(c->ssl);
        if (rc != 1) {
            if (!ssl_want(c, rc))
                conn_fail(c, classify_error(c));
            return;
        }
        c->st = S_WRITE;
    }
    if (c->st == S_WRITE) {
        errno = 0;
        int rc = SSL_write(c->ssl, g_req, (int)g_req_len);
        if (rc <= 0) {
            if (!ssl_want(c, rc))
                conn_fail(c, classify_error(c));
            return;
        }
        c->st = S_READ;
        c->want = POLLIN;
    }
    if (c->st == S_READ) {
        char buf[16384];
        for (;;) {
            errno = 0;
            int rc = SSL_read(c->ssl, buf, sizeof(buf));
            if (rc > 0) {
                if (c->got < sizeof(c->head)) {
                    size_t k = sizeof(c->head) - c->got;
                    if (k > (size_t)rc)
                        k = (size_t)rc;
                    memcpy(c->head + c->got, buf, k);
                }
                c->got += (size_t)rc;
                if (c->hdr_len == 0 && !conn_parse_head(c) && c->got >= sizeof(c->head)) {
                    conn_fail(c, F_STATUS);
                    return;
                }
                if (g_idle_mode && body_complete(c)) {
                    if (c->status != 200) {
                        conn_fail(c, F_STATUS);
                        return;
                    }
                    conn_done(c, t_end_load);
                    c->st = S_IDLE;
                    c->want = 0;
                    return;
                }
                continue;
            }
            int e = SSL_get_error(c->ssl, rc);
            if (e == SSL_ERROR_WANT_READ) {
                c->want = POLLIN;
                return;
            }
            if (e == SSL_ERROR_WANT_WRITE) {
                c->want = POLLOUT;
                return;
            }
            if (e == SSL_ERROR_ZERO_RETURN) {
                /* The server closed (close_notify, or a bare EOF: see
                 * SSL_OP_IGNORE_UNEXPECTED_EOF). */
                if (body_complete(c) && c->status == 200) {
                    conn_done(c, t_end_load);
                    SSL_shutdown(c->ssl);
                    conn_release(c);
                } else {
                    conn_fail(c, c->hdr_len > 0 && c->status != 200 ? F_STATUS : F_EOF);
                }
                return;
            }
            conn_fail(c, classify_error(c));
            return;
        }
    }
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double
pct(double p)
{
    if (g_lat_n == 0)
        return 0;
    size_t i = (size_t)(p * (double)(g_lat_n - 1) + 0.5);
    return g_lat[i] * 1000.0;
}

static void
usage(void)
{
    fprintf(stderr, "usage: hsload [-a ADDR] -p PORT [-s SNI] [-C CAFILE] [-c INFLIGHT] [-t SECS]\n"
                    "              [-g GRACE] [-T CONN_TIMEOUT] [-P PATH] [--idle N] [--hold SECS]\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    const char *addr = "127.0.0.1", *cafile = NULL;
    int port = 0, inflight = 50;
    long idle_n = 0;
    double secs = 5, grace = 5, conn_timeout = 10, hold = 3600;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL)
            usage();
        if (strcmp(a, "-a") == 0)
            addr = v;
        else if (strcmp(a, "-p") == 0)
            port = atoi(v);
        else if (strcmp(a, "-s") == 0)
            g_sni = v;
        else if (strcmp(a, "-C") == 0)
            cafile = v;
        else if (strcmp(a, "-c") == 0)
            inflight = atoi(v);
        else if (strcmp(a, "-t") == 0)
            secs = atof(v);
        else if (strcmp(a, "-g") == 0)
            grace = atof(v);
        else if (strcmp(a, "-T") == 0)
            conn_timeout = atof(v);
        else if (strcmp(a, "-P") == 0)
            g_path = v;
        else if (strcmp(a, "--idle") == 0)
            idle_n = atol(v);
        else if (strcmp(a, "--hold") == 0)
            hold = atof(v);
        else
            usage();
        i++;
    }
    if (port <= 0 || inflight <= 0 || secs <= 0)
        usage();
    g_idle_mode = idle_n > 0;

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);

    memset(&g_addr, 0, sizeof(g_addr));
    g_addr.sin_family = AF_INET;
    g_addr.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, addr, &g_addr.sin_addr) != 1) {
        fprintf(stderr, "hsload: bad address %s\n", addr);
        return 2;
    }

    g_ctx = SSL_CTX_new(TLS_client_method());
    if (g_ctx == NULL)
        return 1;
    /* Every connection a full handshake: no tickets, no client cache. */
    SSL_CTX_set_options(g_ctx, SSL_OP_NO_TICKET | SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_session_cache_mode(g_ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_mode(g_ctx, SSL_MODE_RELEASE_BUFFERS);
    if (cafile != NULL) {
        if (SSL_CTX_load_verify_locations(g_ctx, cafile, NULL) != 1) {
            fprintf(stderr, "hsload: cannot load %s\n", cafile);
            return 1;
        }
        SSL_CTX_set_verify(g_ctx, SSL_VERIFY_PEER, NULL);
    }
    g_req_len = (size_t)snprintf(g_req, sizeof(g_req),
                                 "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: hsload\r\n%s\r\n",
                                 g_path, g_sni, g_idle_mode ? "" : "Connection: close\r\n");

    /* Slots: in flight (handshake mode) or all N (idle mode). */
    size_t nslots = g_idle_mode ? (size_t)idle_n : (size_t)inflight;
    struct conn *conns = calloc(nslots, sizeof(*conns));
    struct pollfd *pfd = calloc((size_t)inflight, sizeof(*pfd));
    size_t *pidx = calloc((size_t)inflight, sizeof(*pidx));
    if (conns == NULL || pfd == NULL || pidx == NULL)
        return 1;
    for (size_t i = 0; i < nslots; i++) {
        conns[i].st = S_FREE;
        conns[i].fd = -1;
    }

    double t0 = now();
    double t_end_load = g_idle_mode ? 1e300 : t0 + secs;
    double t_end = g_idle_mode ? 1e300 : t_end_load + grace;
    size_t next_idle = 0;   /* idle mode: next slot to open */
    size_t active_from = 0; /* idle mode: slots below this are settled */

    for (;;) {
        double t = now();
        if (g_stop)
            break;
        /* Start connections up to the in-flight limit. */
        size_t busy = 0;
        if (g_idle_mode) {
            while (active_from < next_idle &&
                   (conns[active_from].st == S_FREE || conns[active_from].st == S_IDLE))
                active_from++;
            for (size_t i = active_from; i < next_idle; i++)
                if (conns[i].st != S_FREE && conns[i].st != S_IDLE)
                    busy++;
            while (busy < (size_t)inflight && next_idle < nslots) {
                if (conn_start(&conns[next_idle]))
                    busy++;
                next_idle++;
            }
            if (busy == 0 && next_idle == nslots)
                break;
        } else {
            for (size_t i = 0; i < nslots; i++) {
                if (conns[i].st == S_FREE && t < t_end_load)
                    conn_start(&conns[i]);
                if (conns[i].st != S_FREE)
                    busy++;
            }
            if (busy == 0 && t >= t_end_load)
                break;
            if (t >= t_end)
                break;
        }
        /* Per-connection timeout: a connection that hangs is counted. */
        size_t np = 0;
        size_t lo = g_idle_mode ? active_from : 0, hi = g_idle_mode ? next_idle : nslots;
        for (size_t i = lo; i < hi; i++) {
            struct conn *c = &conns[i];
            if (c->st == S_FREE || c->st == S_IDLE)
                continue;
            if (t - c->started > conn_timeout) {
                n_unfinished++;
                conn_release(c);
                continue;
            }
            pfd[np].fd = c->fd;
            pfd[np].events = c->want;
            pfd[np].revents = 0;
            pidx[np] = i;
            np++;
        }
        if (np == 0)
            continue;
        int rc = poll(pfd, np, 100);
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            perror("poll");
            return 1;
        }
        for (size_t k = 0; k < np; k++)
            if (pfd[k].revents != 0)
                conn_step(&conns[pidx[k]], pfd[k].revents, t_end_load);
    }

    double elapsed = now() - t0;
    if (g_idle_mode) {
        unsigned long est = 0;
        for (size_t i = 0; i < nslots; i++)
            if (conns[i].st == S_IDLE)
                est++;
        printf("ready established=%lu failed=%lu unfinished=%lu seconds=%.2f\n", est, n_failed,
               n_unfinished, elapsed);
        fflush(stdout);
        double t_hold = now() + hold;
        while (!g_stop && now() < t_hold)
            usleep(50000);
        for (size_t i = 0; i < nslots; i++)
            if (conns[i].st != S_FREE)
                conn_release(&conns[i]);
        printf("closed\n");
        return 0;
    }
    /* Whatever is still open after the grace period did not complete. */
    for (size_t i = 0; i < nslots; i++) {
        if (conns[i].st != S_FREE) {
            n_unfinished++;
            conn_release(&conns[i]);
        }
    }
    qsort(g_lat, g_lat_n, sizeof(*g_lat), cmp_double);
    printf("completed=%lu in_time=%lu failed=%lu unfinished=%lu started=%lu seconds=%.3f "
           "rate=%.1f p50_ms=%.2f p99_ms=%.2f",
           n_completed, n_in_time, n_failed, n_unfinished, n_started, secs,
           (double)n_in_time / secs, pct(0.50), pct(0.99));
    for (int f = 0; f < F_COUNT; f++)
        printf(" fail_%s=%lu", fail_names[f], n_fail[f]);
    printf("\n");
    free(g_lat);
    free(conns);
    free(pfd);
    free(pidx);
    SSL_CTX_free(g_ctx);
    return 0;
}
