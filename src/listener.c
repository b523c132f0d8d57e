/*
 * listener.c — listening sockets, one per listener per worker.
 *
 * Job: bind the configured addresses with SO_REUSEPORT so every worker has
 * its own accept queue (the kernel spreads connections; no lock, no
 * hand-off), and turn accepted sockets into flows.  Routing (where the
 * upstream is) is the flow's business; this file knows only addresses:
 * how a route's socket must be made (tproxy: IP_TRANSPARENT before bind,
 * or TPROXY cannot deliver to it) and which addresses are our own (so that
 * a flow never connects back to us).
 */
#include <errno.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tlsfault/config.h"
#include "tlsfault/flow.h"
#include "tlsfault/listener.h"
#include "tlsfault/log.h"
#include "tlsfault/origdst.h"
#include "tlsfault/worker.h"

#define LISTENER_BACKLOG 4096

/* v in decimal at p, no terminator; its length. */
static size_t
listener_put_decimal(char *p, unsigned v)
{
    char digits[5];
    size_t n = 0;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    for (size_t i = 0; i < n; i++)
        p[i] = digits[n - 1 - i];
    return n;
}

void
tf_listener_format_addr(const struct sockaddr *sa, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        /* Every connection's client address: digits by hand, not inet_ntop and snprintf. */
        char text[sizeof("255.255.255.255:65535")];
        size_t n = 0;
        const uint8_t *b = (const uint8_t *)&in->sin_addr;
        for (int i = 0; i < 4; i++) {
            n += listener_put_decimal(text + n, b[i]);
            text[n++] = i < 3 ? '.' : ':';
        }
        n += listener_put_decimal(text + n, ntohs(in->sin_port));
        if (len > 0) {
            size_t copy = n < len - 1 ? n : len - 1;
            memcpy(buf, text, copy);
            buf[copy] = '\0';
        }
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
        snprintf(buf, len, "[%s]:%u", host, port);
    } else {
        snprintf(buf, len, "unknown");
    }
}

/*
 * One listening socket for lc at addr.  A tproxy listener needs
 * IP_TRANSPARENT before bind: TPROXY hands it connections addressed to
 * anywhere.  *whole: err is a complete message, not a reason to prefix.
 */
static int
listener_socket(const struct tf_listener_conf *lc, const struct sockaddr *addr, socklen_t len,
                char *err, size_t errlen, bool *whole)
{
    int one = 1;
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
        snprintf(err, errlen, "SO_REUSEPORT: %s", strerror(errno));
        goto fail;
    }
    if (addr->sa_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    /*
     * Accepted sockets inherit TCP_NODELAY from their listener on Linux: a
     * system call per connection saved.  The flow's writes are whole
     * records and fault pieces that must leave when written.
     */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (lc->route == TF_ROUTE_TPROXY) {
        int e = tf_origdst_set_transparent(fd, addr->sa_family);
        if (e == EPERM) {
            snprintf(err, errlen, "listener %s: tproxy needs CAP_NET_ADMIN (run as root, or "
                                  "setcap cap_net_admin+ep on tlsfault)", lc->name);
            *whole = true;
            goto fail;
        }
        if (e != 0) {
            snprintf(err, errlen, "%s: %s",
                     addr->sa_family == AF_INET6 ? "IPV6_TRANSPARENT" : "IP_TRANSPARENT",
                     strerror(e));
            goto fail;
        }
    }
    if (bind(fd, addr, len) < 0) {
        snprintf(err, errlen, "bind: %s", strerror(errno));
        goto fail;
    }
    if (listen(fd, LISTENER_BACKLOG) < 0) {
        snprintf(err, errlen, "listen: %s", strerror(errno));
        goto fail;
    }
    return fd;
fail:
    close(fd);
    return -1;
}

bool
tf_listener_open_sockets(const struct tf_listener_conf *lc, int n_workers, int *fds,
                         struct sockaddr_storage *bound, char *err, size_t errlen)
{
    struct sockaddr_storage addr;
    socklen_t len = lc->addr_len;
    char why[200];
    bool whole = false;

    memcpy(&addr, &lc->addr, sizeof(addr));
    for (int i = 0; i < n_workers; i++) {
        fds[i] = listener_socket(lc, (struct sockaddr *)&addr, len, why, sizeof(why), &whole);
        if (fds[i] < 0) {
            if (whole)
                snprintf(err, errlen, "%s", why);
            else
                snprintf(err, errlen, "listener %s (%s): %s", lc->name, lc->listen, why);
            for (int j = 0; j < i; j++)
                close(fds[j]);
            return false;
        }
        if (i == 0) {
            /* Port 0: the others must join the port the kernel chose for the first. */
            socklen_t blen = sizeof(addr);
            getsockname(fds[0], (struct sockaddr *)&addr, &blen);
        }
    }
    memcpy(bound, &addr, sizeof(addr));
    return true;
}

bool
tf_listener_find_own(const struct tf_worker *w, const struct sockaddr *dst,
                     bool wildcard_local_only, size_t *index)
{
    for (size_t i = 0; i < w->n_listeners; i++) {
        struct sockaddr_storage bound;
        socklen_t blen = sizeof(bound);
        if (w->listeners[i] == NULL)
            continue;
        evutil_socket_t fd = evconnlistener_get_fd(w->listeners[i]);
        if (fd < 0 || getsockname(fd, (struct sockaddr *)&bound, &blen) < 0)
            continue;
        if (tf_origdst_reaches(dst, (struct sockaddr *)&bound, wildcard_local_only)) {
            *index = i;
            return true;
        }
    }
    return false;
}

static void
listener_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *peer,
                   int peer_len, void *arg)
{
    struct tf_worker *w = arg;
    size_t index = 0;
    tf_worker_note_work();
    for (size_t i = 0; i < w->n_listeners; i++)
        if (w->listeners[i] == l)
            index = i;
    tf_flow_accept(w, index, fd, peer, peer_len);
}

static void
listener_resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct evconnlistener *l = arg;
    (void)fd;
    (void)what;
    evconnlistener_enable(l);
}

static void
listener_error_cb(struct evconnlistener *l, void *arg)
{
    struct tf_worker *w = arg;
    int err = EVUTIL_SOCKET_ERROR();
    struct timeval pause = { 0, 100 * 1000 };
    /*
     * EMFILE and friends: the pending connection stays queued and would
     * wake us again at once; pause accepting while flows free descriptors.
     */
    tf_log_warn("worker %d: accept: %s; pausing accepts for 100 ms", w->index,
                evutil_socket_error_to_string(err));
    evconnlistener_disable(l);
    if (!w->draining)
        event_base_once(w->base, -1, EV_TIMEOUT, listener_resume_cb, l, &pause);
}

struct evconnlistener *
tf_listener_attach(struct tf_worker *w, size_t index, int fd)
{
    (void)index;
    struct evconnlistener *l = evconnlistener_new(w->base, listener_accept_cb, w,
                                                  LEV_OPT_CLOSE_ON_FREE, -1, fd);
    if (l)
        evconnlistener_set_error_cb(l, listener_error_cb);
    return l;
}
