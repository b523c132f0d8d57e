/*
 * minrelay: the cheapest TCP relay this benchmark can think of, as a floor
 * for "proxy CPU per connection".  One thread, one epoll set, level
 * triggered; per direction one buffer: read what is there, write it at
 * once, and wait for EPOLLOUT only when the socket did not take it all.
 * EOF goes on as shutdown(SHUT_WR); a connection closes when both
 * directions ended or one reset.  No timers, no logging, no parsing, no
 * limits: not a proxy to run, only what any proxy's per-connection kernel
 * work costs on this machine (bench.py's "floor" target).
 *
 *   minrelay LISTEN_PORT UPSTREAM_PORT      (both on 127.0.0.1)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF 65536

struct side;

struct conn {
    struct side *s[2]; /* 0: client, 1: upstream */
    int ended;         /* directions that saw EOF */
    int dead;          /* closed; freed after the current batch of events */
    struct conn *next_dead;
};

struct side {
    int fd;
    struct conn *c;
    int idx;
    int connecting; /* upstream only, until EPOLLOUT */
    int eof;        /* this side sent FIN */
    unsigned events;
    size_t len, off; /* bytes waiting to go to this side */
    char buf[BUF];
};

static int ep;
static volatile sig_atomic_t stop;
static struct conn *dead_list;

static void
on_term(int sig)
{
    (void)sig;
    stop = 1;
}

static void
set_events(struct side *s, unsigned ev)
{
    if (s->events == ev)
        return;
    struct epoll_event e = {.events = ev, .data.ptr = s};
    epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &e);
    s->events = ev;
}

/* Closes now; frees later, since the batch may hold the other side's event. */
static void
conn_close(struct conn *c)
{
    for (int i = 0; i < 2; i++)
        close(c->s[i]->fd);
    c->dead = 1;
    c->next_dead = dead_list;
    dead_list = c;
}

static void
free_dead(void)
{
    while (dead_list != NULL) {
        struct conn *c = dead_list;
        dead_list = c->next_dead;
        free(c->s[0]);
        free(c->s[1]);
        free(c);
    }
}

/* What the side wants: input unless its peer is backed up, output when data waits. */
static void
side_update(struct side *s)
{
    struct side *peer = s->c->s[1 - s->idx];
    unsigned ev = 0;
    if (!s->eof && peer->len == 0 && !peer->connecting)
        ev |= EPOLLIN;
    if (s->len > 0 || s->connecting)
        ev |= EPOLLOUT;
    set_events(s, ev);
}

/* Writes what waits for s; returns -1 when the socket failed. */
static int
side_flush(struct side *s)
{
    while (s->off < s->len) {
        ssize_t n = send(s->fd, s->buf + s->off, s->len - s->off, MSG_NOSIGNAL);
        if (n < 0)
            return errno == EAGAIN ? 0 : -1;
        s->off += (size_t)n;
    }
    s->len = s->off = 0;
    /* The other side's EOF waited for these bytes. */
    if (s->c->s[1 - s->idx]->eof)
        shutdown(s->fd, SHUT_WR);
    return 0;
}

/* Returns 1 when the connection is gone. */
static int
side_ready(struct side *s, unsigned ev)
{
    struct conn *c = s->c;
    struct side *peer = c->s[1 - s->idx];

    if (c->dead)
        return 1;
    /* Both directions of this socket are down and its input already ended. */
    if ((ev & (EPOLLHUP | EPOLLERR)) && s->eof) {
        conn_close(c);
        return 1;
    }
    if (s->connecting && (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        int err = 0;
        socklen_t l = sizeof(err);
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err != 0) {
            conn_close(c);
            return 1;
        }
        s->connecting = 0;
    }
    if (ev & EPOLLOUT) {
        if (side_flush(s) < 0) {
            conn_close(c);
            return 1;
        }
    }
    if ((ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !s->eof && peer->len == 0 && !peer->connecting) {
        ssize_t n = recv(s->fd, peer->buf, BUF, 0);
        if (n > 0) {
            peer->len = (size_t)n;
            peer->off = 0;
            if (side_flush(peer) < 0) {
                conn_close(c);
                return 1;
            }
        } else if (n == 0) {
            s->eof = 1;
            c->ended++;
            if (peer->len == 0)
                shutdown(peer->fd, SHUT_WR);
        } else if (errno != EAGAIN) {
            conn_close(c);
            return 1;
        }
    }
    if (c->ended == 2 && c->s[0]->len == 0 && c->s[1]->len == 0) {
        conn_close(c);
        return 1;
    }
    side_update(s);
    side_update(peer);
    return 0;
}

static struct side *
side_new(int fd, struct conn *c, int idx, unsigned ev)
{
    struct side *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->fd = fd;
    s->c = c;
    s->idx = idx;
    s->events = ev;
    struct epoll_event e = {.events = ev, .data.ptr = s};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
    return s;
}

static void
accept_all(int lfd, const struct sockaddr_in *up)
{
    for (;;) {
        int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
        if (cfd < 0)
            return;
        int ufd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        int one = 1;
        struct conn *c = calloc(1, sizeof(*c));
        if (ufd < 0 || c == NULL) {
            close(cfd);
            if (ufd >= 0)
                close(ufd);
            free(c);
            continue;
        }
        setsockopt(ufd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(ufd, (const struct sockaddr *)up, sizeof(*up)) < 0 && errno != EINPROGRESS) {
            close(cfd);
            close(ufd);
            free(c);
            continue;
        }
        /* The client's first bytes wait in its socket until the upstream is up. */
        c->s[0] = side_new(cfd, c, 0, 0);
        c->s[1] = side_new(ufd, c, 1, EPOLLOUT);
        if (c->s[0] == NULL || c->s[1] == NULL) {
            close(cfd);
            close(ufd);
            free(c->s[0]);
            free(c->s[1]);
            free(c);
            continue;
        }
        c->s[1]->connecting = 1;
    }
}

int
main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: minrelay LISTEN_PORT UPSTREAM_PORT\n");
        return 2;
    }
    struct sockaddr_in la = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    struct sockaddr_in ua = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    la.sin_addr.s_addr = ua.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    /* Accepted sockets inherit TCP_NODELAY from the listener on Linux. */
    setsockopt(lfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (bind(lfd, (struct sockaddr *)&la, sizeof(la)) < 0 || listen(lfd, 4096) < 0) {
        perror("minrelay: listen");
        return 1;
    }
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    ep = epoll_create1(0);
    struct epoll_event le = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &le);
    struct epoll_event evs[64];
    while (!stop) {
        int n = epoll_wait(ep, evs, 64, -1);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL) {
                accept_all(lfd, &ua);
                continue;
            }
            side_ready(evs[i].data.ptr, evs[i].events);
        }
        free_dead();
    }
    return 0;
}
