/*
 * origdst.c — Linux only: original destinations and the routes' socket options.
 *
 * Job: ask the kernel where a redirected or intercepted connection was
 * going (SO_ORIGINAL_DST from conntrack for REDIRECT; the local address for
 * TPROXY), set IP_TRANSPARENT / IPV6_TRANSPARENT and SO_MARK, and tell
 * whether an address is one of our own listeners (loop prevention).  How
 * the answers are used (where to connect, what to log) is flow.c's and
 * listener.c's business.  Everything Linux-specific of the routes lives
 * here, so that a port to another system replaces this one file.
 */
#include <errno.h>
#include <stdatomic.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/netfilter_ipv4.h>             /* SO_ORIGINAL_DST */
#include <linux/netfilter_ipv6/ip6_tables.h>  /* IP6T_SO_ORIGINAL_DST */

#include "tlsfault/origdst.h"

socklen_t
tf_origdst_len(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return sizeof(struct sockaddr_in);
    if (sa->sa_family == AF_INET6)
        return sizeof(struct sockaddr_in6);
    return 0;
}

/* The family of the socket's local address, which is the one conntrack keeps it under. */
static int
origdst_family(int fd)
{
    struct sockaddr_storage local;
    socklen_t len = sizeof(local);
    if (getsockname(fd, (struct sockaddr *)&local, &len) < 0)
        return -1;
    return local.ss_family;
}

bool
tf_origdst_redirect(int fd, struct sockaddr_storage *dst, char *err, size_t errlen)
{
    int family = origdst_family(fd);
    socklen_t len;

    memset(dst, 0, sizeof(*dst));
    if (family == AF_INET) {
        len = sizeof(struct sockaddr_in);
        if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, dst, &len) == 0 && dst->ss_family == AF_INET)
            return true;
    } else if (family == AF_INET6) {
        len = sizeof(struct sockaddr_in6);
        if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, dst, &len) == 0 &&
            dst->ss_family == AF_INET6)
            return true;
    } else {
        snprintf(err, errlen, "no original destination: %s",
                 family < 0 ? strerror(errno) : "not an IP socket");
        return false;
    }
    if (errno == ENOENT)
        snprintf(err, errlen, "no original destination: conntrack has no entry for this "
                              "connection (not redirected by netfilter?)");
    else
        snprintf(err, errlen, "no original destination: %s: %s",
                 family == AF_INET ? "SO_ORIGINAL_DST" : "IP6T_SO_ORIGINAL_DST",
                 strerror(errno));
    return false;
}

bool
tf_origdst_tproxy(int fd, struct sockaddr_storage *dst, char *err, size_t errlen)
{
    socklen_t len = sizeof(*dst);
    memset(dst, 0, sizeof(*dst));
    if (getsockname(fd, (struct sockaddr *)dst, &len) < 0) {
        snprintf(err, errlen, "no original destination: getsockname: %s", strerror(errno));
        return false;
    }
    if (dst->ss_family != AF_INET && dst->ss_family != AF_INET6) {
        snprintf(err, errlen, "no original destination: not an IP socket");
        return false;
    }
    return true;
}

int
tf_origdst_set_transparent(int fd, int family)
{
    int one = 1;
    int r = family == AF_INET6 ? setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof(one))
                               : setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof(one));
    return r == 0 ? 0 : errno;
}

int
tf_origdst_set_mark(int fd, uint32_t mark)
{
    return setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) == 0 ? 0 : errno;
}

/* ------------------------------------------------------------ loops */

/* dst as plain IPv4 when it is an IPv4-mapped IPv6 address; else a copy. */
static void
origdst_unmap(const struct sockaddr *sa, struct sockaddr_storage *out)
{
    memset(out, 0, sizeof(*out));
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            struct sockaddr_in *in = (struct sockaddr_in *)out;
            in->sin_family = AF_INET;
            in->sin_port = in6->sin6_port;
            memcpy(&in->sin_addr, &in6->sin6_addr.s6_addr[12], 4);
            return;
        }
    }
    memcpy(out, sa, tf_origdst_len(sa));
}

/*
 * Whether addr is one of this host's addresses: binding to it (port 0,
 * without IP_TRANSPARENT or IP_FREEBIND) succeeds only then.  With the
 * sysctl net.ipv4.ip_nonlocal_bind set every address looks local, which
 * errs on the side of refusing.
 */
static bool
origdst_is_local(const struct sockaddr_storage *addr)
{
    struct sockaddr_storage a;
    int fd = socket(addr->ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    bool local;

    if (fd < 0)
        return false;
    memcpy(&a, addr, sizeof(a));
    if (a.ss_family == AF_INET)
        ((struct sockaddr_in *)&a)->sin_port = 0;
    else
        ((struct sockaddr_in6 *)&a)->sin6_port = 0;
    local = bind(fd, (struct sockaddr *)&a, tf_origdst_len((struct sockaddr *)&a)) == 0;
    close(fd);
    return local;
}

bool
tf_origdst_reaches(const struct sockaddr *dst, const struct sockaddr *bound,
                   bool wildcard_local_only)
{
    struct sockaddr_storage d, b;
    origdst_unmap(dst, &d);
    origdst_unmap(bound, &b);
    if (d.ss_family != b.ss_family)
        return false;
    if (d.ss_family == AF_INET) {
        const struct sockaddr_in *di = (const struct sockaddr_in *)&d;
        const struct sockaddr_in *bi = (const struct sockaddr_in *)&b;
        if (di->sin_port != bi->sin_port)
            return false;
        if (bi->sin_addr.s_addr == htonl(INADDR_ANY))
            return !wildcard_local_only || origdst_is_local(&d);
        return di->sin_addr.s_addr == bi->sin_addr.s_addr;
    }
    if (d.ss_family == AF_INET6) {
        const struct sockaddr_in6 *di = (const struct sockaddr_in6 *)&d;
        const struct sockaddr_in6 *bi = (const struct sockaddr_in6 *)&b;
        if (di->sin6_port != bi->sin6_port)
            return false;
        if (IN6_IS_ADDR_UNSPECIFIED(&bi->sin6_addr))
            return !wildcard_local_only || origdst_is_local(&d);
        return IN6_ARE_ADDR_EQUAL(&di->sin6_addr, &bi->sin6_addr);
    }
    return false;
}

static atomic_uint_least16_t origdst_own_ports[65536];

void
tf_origdst_own_port_add(uint16_t port)
{
    if (port != 0)
        atomic_fetch_add(&origdst_own_ports[port], 1);
}

void
tf_origdst_own_port_remove(uint16_t port)
{
    if (port != 0)
        atomic_fetch_sub(&origdst_own_ports[port], 1);
}

/* Only loopback peers are checked: the loop this guards against is local. */
bool
tf_origdst_from_own_socket(const struct sockaddr *peer)
{
    uint16_t port = 0;
    bool local = false;
    if (peer->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)peer;
        local = (ntohl(in->sin_addr.s_addr) >> 24) == 127;
        port = ntohs(in->sin_port);
    } else if (peer->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)peer;
        local = IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr) ||
                (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && in6->sin6_addr.s6_addr[12] == 127);
        port = ntohs(in6->sin6_port);
    }
    return local && port != 0 && atomic_load(&origdst_own_ports[port]) > 0;
}
