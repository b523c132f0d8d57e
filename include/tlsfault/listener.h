/*
 * listener.h — listening sockets.
 *
 * For each configured listener every worker gets its own socket bound to
 * the same address with SO_REUSEPORT, so the kernel balances accepted
 * connections across workers without a shared accept queue.  A listener
 * on port 0 is bound once to learn its port and the rest follow it.
 * A tproxy listener's sockets carry IP_TRANSPARENT (set before bind).
 */
#ifndef TLSFAULT_LISTENER_H
#define TLSFAULT_LISTENER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct tf_listener_conf;
struct tf_worker;
struct evconnlistener;

/*
 * Opens n_workers sockets for lc, bound and listening, into fds.  Returns
 * false with "listener NAME (ADDR): reason" in err (nothing left open); a
 * tproxy listener without the privilege says "listener NAME: tproxy needs
 * CAP_NET_ADMIN (...)".
 * bound/bound_len receive the actual address (port 0 resolved).
 */
bool tf_listener_open_sockets(const struct tf_listener_conf *lc, int n_workers, int *fds,
                              struct sockaddr_storage *bound, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Wraps fd (now owned) in an evconnlistener that starts flows on w for listener index. */
struct evconnlistener *tf_listener_attach(struct tf_worker *w, size_t index, int fd);

/*
 * Whether a connection to dst would reach one of w's own listening sockets
 * (see tf_origdst_reaches for wildcard_local_only); *index is that
 * listener's.  Flows use it to refuse connecting to themselves.
 */
bool tf_listener_find_own(const struct tf_worker *w, const struct sockaddr *dst,
                          bool wildcard_local_only, size_t *index);

/* "127.0.0.1:8443" / "[::1]:8443" */
void tf_listener_format_addr(const struct sockaddr *sa, char *buf, size_t len);

#endif
