/*
 * relay.c — two connected sockets, bytes moved both ways (relay.h).
 *
 * Why not bufferevents: libevent 2.1 reads at most 4 KiB per read (after
 * an FIONREAD ioctl each time) and asks epoll to watch for writability
 * before every write, then not to after it: three to five system calls
 * per 4 KiB.  Here a read takes whatever the socket holds up to the
 * scratch size, the bytes are written straight away, and epoll hears of
 * writability only when the destination's buffer is full.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tlsfault/relay.h"
#include "tlsfault/worker.h"

/* One per thread: every relay of a worker reads into it in turn. */
#define RELAY_SCRATCH (128 * 1024)
/* Reads per readiness before other sockets get their turn. */
#define RELAY_READS_PER_WAKE 4

static _Thread_local uint8_t relay_scratch[RELAY_SCRATCH];

/* A stream left in its socket a little longer by a busy-polling worker (relay_gather). */
struct relay_gathering {
    uint64_t since; /* µs: when the wait began; 0 when not waiting */
    uint64_t grew;  /* µs: when more bytes last arrived */
    int avail;      /* bytes in the socket at the last look */
};

/* Bytes read from one side that its peer could not take yet. */
struct relay_pending {
    uint8_t *p;
    size_t len, off;
};

struct tf_relay {
    const struct tf_relay_ops *ops;
    void *arg;
    struct event_base *base;
    evutil_socket_t fd[2];
    /*
     * One event per socket, its mask changed as needed: an idle relay
     * holds two events, not four (a re-armed mask costs two epoll_ctl
     * calls instead of one, and only when a socket's buffer is full).
     */
    struct event *ev[2];
    short mask[2];
    struct relay_pending pending[2]; /* read from side i, for the other side */
    bool eof[2];     /* side i sent FIN */
    bool shut[2];    /* FIN passed on to side i */
    bool reading[2]; /* side i has bytes for the other, when readable */
    bool writing[2]; /* side i can take pending[1 - i], when writable */
    size_t last_read[2];               /* bytes of side i's last read (relay_gather) */
    struct relay_gathering gather[2]; /* side i's bytes waiting in its socket */
};

static void relay_cb(evutil_socket_t fd, short what, void *arg);

static void
relay_arm(struct tf_relay *r, int side)
{
    short want = (short)((r->reading[side] ? EV_READ : 0) | (r->writing[side] ? EV_WRITE : 0));
    if (want == r->mask[side])
        return;
    if (r->mask[side] != 0)
        event_del(r->ev[side]);
    r->mask[side] = want;
    if (want == 0)
        return;
    event_assign(r->ev[side], r->base, r->fd[side], (short)(want | EV_PERSIST), relay_cb, r);
    event_add(r->ev[side], NULL);
}

static void
relay_want_read(struct tf_relay *r, int side, bool on)
{
    r->reading[side] = on;
    relay_arm(r, side);
}

static void
relay_want_write(struct tf_relay *r, int side, bool on)
{
    r->writing[side] = on;
    relay_arm(r, side);
}

/* Ends the relay through the owner; r is gone afterwards. */
static void
relay_end(struct tf_relay *r, enum tf_relay_end how, int side, int err)
{
    r->ops->end(r->arg, how, side, err);
}

static enum tf_relay_end
relay_error_kind(int err)
{
    return err == ECONNRESET || err == EPIPE ? TF_RELAY_RESET : TF_RELAY_ERROR;
}

/*
 * Passes side's FIN on once nothing of its bytes waits; ends the relay
 * when both ways are done.  False when the relay ended.
 */
static bool
relay_pass_fin(struct tf_relay *r, int side)
{
    int to = 1 - side;
    if (!r->eof[side] || r->shut[to] || r->pending[side].len > 0)
        return true;
    r->shut[to] = true;
    if (r->shut[side]) {
        /*
         * The last FIN: the owner closes both sockets now, and both were
         * read to their end, so close() sends it (a FIN, not a reset, since
         * nothing is left unread): a shutdown() first would be one more
         * system call per connection for the same segment.
         */
        relay_end(r, TF_RELAY_FIN, -1, 0);
        return false;
    }
    if (shutdown(r->fd[to], SHUT_WR) != 0 && errno != ENOTCONN) {
        relay_end(r, relay_error_kind(errno), to, errno);
        return false;
    }
    return true;
}

/*
 * Writes bytes read from side to its peer; what does not fit waits in
 * pending[side] and side is not read until it is out.  False when the
 * relay ended.
 */
static bool
relay_forward(struct tf_relay *r, int side, const uint8_t *p, size_t n)
{
    int to = 1 - side;
    size_t done = 0;
    /* Nothing waits for this direction: side is read only while pending[side] is empty. */
    while (done < n) {
        ssize_t w = send(r->fd[to], p + done, n - done, MSG_NOSIGNAL);
        if (w > 0) {
            done += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        int err = w < 0 ? errno : EPIPE;
        relay_end(r, relay_error_kind(err), to, err);
        return false;
    }
    if (done == n)
        return true;
    struct relay_pending *q = &r->pending[side];
    size_t left = n - done;
    q->p = malloc(left);
    if (q->p == NULL) {
        relay_end(r, TF_RELAY_ERROR, side, ENOMEM);
        return false;
    }
    memcpy(q->p, p + done, left);
    q->len = left;
    q->off = 0;
    relay_want_read(r, side, false);
    relay_want_write(r, to, true);
    return true;
}

static void
relay_read(struct tf_relay *r, int side)
{
    evutil_socket_t fd = r->fd[side];
    for (int i = 0; i < RELAY_READS_PER_WAKE; i++) {
        ssize_t n = recv(fd, relay_scratch, sizeof(relay_scratch), 0);
        if (n > 0) {
            r->last_read[side] = (size_t)n;
            r->ops->data(r->arg, side, relay_scratch, (size_t)n);
            if (!relay_forward(r, side, relay_scratch, (size_t)n))
                return;
            /* A short read emptied the socket; a pending write stopped reading. */
            if ((size_t)n < sizeof(relay_scratch) || !r->reading[side])
                return;
            continue;
        }
        if (n == 0) {
            r->eof[side] = true;
            relay_want_read(r, side, false);
            r->ops->eof(r->arg, side);
            relay_pass_fin(r, side);
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        relay_end(r, relay_error_kind(errno), side, errno);
        return;
    }
}

/* Writes what waits for socket to; false when the relay ended. */
static bool
relay_write(struct tf_relay *r, int to)
{
    evutil_socket_t fd = r->fd[to];
    int side = 1 - to;
    struct relay_pending *q = &r->pending[side];

    while (q->off < q->len) {
        ssize_t w = send(fd, q->p + q->off, q->len - q->off, MSG_NOSIGNAL);
        if (w > 0) {
            q->off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
        int err = w < 0 ? errno : EPIPE;
        relay_end(r, relay_error_kind(err), to, err);
        return false;
    }
    free(q->p);
    q->p = NULL;
    q->len = q->off = 0;
    relay_want_write(r, to, false);
    if (r->eof[side])
        return relay_pass_fin(r, side);
    relay_want_read(r, side, true);
    return true;
}

/*
 * Busy-polling workers gather a stream before passing it on (see
 * relay_gather).  A side counts as streaming after a read of at least
 * RELAY_STREAMING bytes; its bytes then wait in the socket until
 * RELAY_GATHER_BYTES are there, or nothing more came for RELAY_QUIET_US,
 * or the first of them has waited RELAY_GATHER_US.
 */
#define RELAY_STREAMING (8 * 1024)
#define RELAY_GATHER_BYTES (256 * 1024)
#define RELAY_QUIET_US 50
#define RELAY_GATHER_US 500

static uint64_t
relay_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/*
 * True when side's bytes should wait a little longer.  Why: a worker that
 * busy-polls picks up each chunk the moment it lands and passes it on at
 * once, so the receiver, asleep between chunks, is woken for every one;
 * in a VM each wake-up costs the CPU that client and server share an
 * interrupt and an exit.  Passing a bulk stream on in larger pieces wakes
 * the receiver a fraction as often.  Small exchanges (requests, short
 * answers) never wait: their reads stay under RELAY_STREAMING.
 */
static bool
relay_gather(struct tf_relay *r, int side)
{
    struct relay_gathering *g = &r->gather[side];
    int avail = 0;
    if (r->last_read[side] < RELAY_STREAMING || ioctl(r->fd[side], FIONREAD, &avail) != 0 ||
        avail <= 0 || (size_t)avail >= RELAY_GATHER_BYTES) {
        g->since = 0;
        return false;
    }
    uint64_t now = relay_now_us();
    if (g->since == 0) {
        g->since = g->grew = now;
        g->avail = avail;
        return true;
    }
    if (avail != g->avail) {
        g->avail = avail;
        g->grew = now;
    }
    if (now - g->grew < RELAY_QUIET_US && now - g->since < RELAY_GATHER_US)
        return true;
    g->since = 0;
    return false;
}

static void
relay_cb(evutil_socket_t fd, short what, void *arg)
{
    struct tf_relay *r = arg;
    int side = fd == r->fd[0] ? 0 : 1;
    tf_worker_note_work();
    if ((what & EV_WRITE) && r->writing[side] && !relay_write(r, side))
        return;
    if ((what & EV_READ) && r->reading[side]) {
        if (tf_worker_polling && relay_gather(r, side))
            return;
        relay_read(r, side);
    }
}

struct tf_relay *
tf_relay_new(struct event_base *base, const evutil_socket_t fd[2], const struct tf_relay_ops *ops,
             void *arg)
{
    struct tf_relay *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->ops = ops;
    r->arg = arg;
    r->base = base;
    for (int i = 0; i < 2; i++) {
        r->fd[i] = fd[i];
        r->ev[i] = event_new(base, fd[i], EV_READ | EV_PERSIST, relay_cb, r);
        if (r->ev[i] == NULL) {
            tf_relay_free(r);
            return NULL;
        }
    }
    return r;
}

int
tf_relay_queue(struct tf_relay *r, int side, const void *p, size_t n)
{
    struct relay_pending *q = &r->pending[1 - side];
    if (n == 0)
        return 0;
    uint8_t *np = realloc(q->p, q->len + n);
    if (np == NULL)
        return -1;
    memcpy(np + q->len, p, n);
    q->p = np;
    q->len += n;
    return 0;
}

void
tf_relay_start(struct tf_relay *r)
{
    for (int side = 0; side < 2; side++) {
        struct relay_pending *q = &r->pending[side];
        int to = 1 - side;
        /* Carried-over bytes: sent now when the socket takes them; an error
         * shows again in the write callback, which ends the relay there. */
        while (q->off < q->len) {
            ssize_t w = send(r->fd[to], q->p + q->off, q->len - q->off, MSG_NOSIGNAL);
            if (w <= 0 && !(w < 0 && errno == EINTR))
                break;
            if (w > 0)
                q->off += (size_t)w;
        }
        if (q->off < q->len) {
            relay_want_write(r, to, true);
            continue;
        }
        free(q->p);
        q->p = NULL;
        q->len = q->off = 0;
        relay_want_read(r, side, true);
    }
}

void
tf_relay_free(struct tf_relay *r)
{
    if (r == NULL)
        return;
    for (int i = 0; i < 2; i++) {
        if (r->ev[i])
            event_free(r->ev[i]);
        free(r->pending[i].p);
    }
    free(r);
}
