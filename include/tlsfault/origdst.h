/*
 * origdst.h — where a connection was going before netfilter sent it to us,
 * and the Linux socket options of the routes that need them.
 *
 * redirect: netfilter's REDIRECT rewrote the destination to our listener;
 * conntrack remembers the original, and SO_ORIGINAL_DST (IPv4) or
 * IP6T_SO_ORIGINAL_DST (IPv6) hands it back.  tproxy: TPROXY delivered the
 * packets unchanged to a listener with IP_TRANSPARENT, so the accepted
 * socket's own local address is the original destination.  Upstream
 * sockets may carry SO_MARK (so that the rules which sent the client to us
 * do not send our own connection back) and, to keep the client's address
 * as their source, IP_TRANSPARENT.  All of it needs Linux; the transparent
 * options and SO_MARK need CAP_NET_ADMIN.
 */
#ifndef TLSFAULT_ORIGDST_H
#define TLSFAULT_ORIGDST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/*
 * The original destination of accepted socket fd that REDIRECT (or DNAT)
 * sent here, into dst.  false with the reason in err (no conntrack entry:
 * the connection was not redirected, or conntrack is not loaded).
 */
bool tf_origdst_redirect(int fd, struct sockaddr_storage *dst, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The original destination of accepted socket fd under TPROXY (its local address). */
bool tf_origdst_tproxy(int fd, struct sockaddr_storage *dst, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/*
 * Sets IP_TRANSPARENT (family AF_INET) or IPV6_TRANSPARENT (AF_INET6) on
 * fd, which lets it accept TPROXY'd connections (a listener) or bind to an
 * address that is not ours (an upstream socket keeping the client's
 * source).  Returns 0, or the errno (EPERM: no CAP_NET_ADMIN).
 */
int tf_origdst_set_transparent(int fd, int family);

/* Sets SO_MARK on fd.  Returns 0, or the errno (EPERM: no CAP_NET_ADMIN). */
int tf_origdst_set_mark(int fd, uint32_t mark);

/* The length of a sockaddr of family AF_INET or AF_INET6 (0 for others). */
socklen_t tf_origdst_len(const struct sockaddr *sa);

/*
 * Whether a connection to dst would reach the listener bound to `bound`:
 * same port, and the same address (an IPv4-mapped IPv6 address counts as
 * its IPv4 one), or `bound` is the wildcard address of dst's family.  With
 * wildcard_local_only, a wildcard listener is taken to serve only dst
 * addresses of this host (a bind test), for routes whose destinations are
 * elsewhere as a rule; without, any dst on its port (redirect/tproxy: the
 * original destination of an intercepted connection is never the
 * listener's port unless something is wrong).
 */
bool tf_origdst_reaches(const struct sockaddr *dst, const struct sockaddr *bound,
                        bool wildcard_local_only);

/*
 * The local ports of tlsfault's own upstream sockets, process-wide.  A
 * redirect rule without the mark exclusion catches tlsfault's own
 * connection to the server and hands it back to the listener: that flow's
 * peer is one of these ports on a local address, and it must be refused
 * rather than relayed again (each round would open another connection
 * until descriptors run out).  Lock-free; ports may repeat (counted).
 */
void tf_origdst_own_port_add(uint16_t port);
void tf_origdst_own_port_remove(uint16_t port);
/* True when peer is a local address whose port is one of ours. */
bool tf_origdst_from_own_socket(const struct sockaddr *peer);

#endif
