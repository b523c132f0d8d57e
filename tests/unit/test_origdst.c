/*
 * test_origdst.c — unit tests for origdst.c.
 *
 * The loop check (tf_origdst_reaches) over a table: exact listener
 * addresses, wildcard listeners of either family with and without
 * wildcard_local_only, IPv4-mapped IPv6 destinations, other ports and
 * families.  The kernel calls are tried on real loopback sockets: the
 * accepted socket's local address is what tproxy takes, and a connection
 * that netfilter did not redirect has no SO_ORIGINAL_DST (or, when
 * conntrack tracks it, its own destination).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tlsfault/origdst.h"

static struct sockaddr_storage
addr_of(const char *ip, uint16_t port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (strchr(ip, ':') != NULL) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        assert_int_equal(inet_pton(AF_INET6, ip, &in6->sin6_addr), 1);
    } else {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        assert_int_equal(inet_pton(AF_INET, ip, &in->sin_addr), 1);
    }
    return ss;
}

static void
test_reaches(void **state)
{
    static const struct {
        const char *dst;
        uint16_t dport;
        const char *bound;
        uint16_t bport;
        bool local_only;
        bool want;
    } cases[] = {
        {"127.0.0.1", 8443, "127.0.0.1", 8443, false, true},
        {"127.0.0.1", 8443, "127.0.0.1", 8444, false, false},
        {"127.0.0.2", 8443, "127.0.0.1", 8443, false, false},
        {"10.200.2.2", 443, "0.0.0.0", 443, false, true},   /* redirect/tproxy: any on the port */
        {"10.200.2.2", 443, "0.0.0.0", 443, true, false},   /* sni/connect: elsewhere */
        {"127.0.0.5", 443, "0.0.0.0", 443, true, true},     /* ... unless ours (127/8) */
        {"10.200.2.2", 444, "0.0.0.0", 443, false, false},
        {"::1", 8443, "::1", 8443, false, true},
        {"fd00::2", 443, "::", 443, false, true},
        {"2001:db8::2", 443, "::", 443, true, false},
        {"2001:db8::77", 443, "::", 443, true, false},
        {"::1", 443, "::", 443, true, true},
        {"fd00::2", 443, "fd00::1", 443, false, false},
        {"::ffff:127.0.0.1", 8443, "127.0.0.1", 8443, false, true}, /* mapped is v4 */
        {"::ffff:10.0.0.1", 443, "0.0.0.0", 443, false, true},
        {"127.0.0.1", 8443, "::1", 8443, false, false},      /* other family */
        {"127.0.0.1", 443, "::", 443, false, false},         /* v6-only wildcard */
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct sockaddr_storage d = addr_of(cases[i].dst, cases[i].dport);
        struct sockaddr_storage b = addr_of(cases[i].bound, cases[i].bport);
        bool got = tf_origdst_reaches((struct sockaddr *)&d, (struct sockaddr *)&b,
                                      cases[i].local_only);
        if (got != cases[i].want)
            fail_msg("case %zu: %s:%u vs listener %s:%u (local_only %d): got %d", i,
                     cases[i].dst, cases[i].dport, cases[i].bound, cases[i].bport,
                     cases[i].local_only, got);
    }
}

static void
test_len(void **state)
{
    struct sockaddr_storage a = addr_of("127.0.0.1", 1), b = addr_of("::1", 1), c;
    (void)state;
    memset(&c, 0, sizeof(c));
    c.ss_family = AF_UNIX;
    assert_int_equal(tf_origdst_len((struct sockaddr *)&a), sizeof(struct sockaddr_in));
    assert_int_equal(tf_origdst_len((struct sockaddr *)&b), sizeof(struct sockaddr_in6));
    assert_int_equal(tf_origdst_len((struct sockaddr *)&c), 0);
}

/* A loopback connection: *lfd listening, *cfd connected, returns the accepted one. */
static int
loopback_pair(int *lfd, int *cfd, struct sockaddr_in *where)
{
    socklen_t len = sizeof(*where);
    memset(where, 0, sizeof(*where));
    struct sockaddr_storage any = addr_of("127.0.0.1", 0);
    *lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(*lfd >= 0);
    assert_int_equal(bind(*lfd, (struct sockaddr *)&any, sizeof(struct sockaddr_in)), 0);
    assert_int_equal(listen(*lfd, 4), 0);
    assert_int_equal(getsockname(*lfd, (struct sockaddr *)where, &len), 0);
    *cfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(*cfd, (struct sockaddr *)where, sizeof(*where)), 0);
    int afd = accept(*lfd, NULL, NULL);
    assert_true(afd >= 0);
    return afd;
}

static void
test_tproxy_is_local_address(void **state)
{
    int lfd, cfd;
    struct sockaddr_in where;
    struct sockaddr_storage dst;
    char err[256];
    (void)state;

    int afd = loopback_pair(&lfd, &cfd, &where);
    assert_true(tf_origdst_tproxy(afd, &dst, err, sizeof(err)));
    assert_int_equal(dst.ss_family, AF_INET);
    assert_memory_equal(&((struct sockaddr_in *)&dst)->sin_addr, &where.sin_addr, 4);
    assert_int_equal(((struct sockaddr_in *)&dst)->sin_port, where.sin_port);

    /* Not redirected: no entry (ENOENT), or conntrack's own, unchanged destination. */
    if (tf_origdst_redirect(afd, &dst, err, sizeof(err))) {
        assert_int_equal(((struct sockaddr_in *)&dst)->sin_port, where.sin_port);
    } else {
        assert_non_null(strstr(err, "no original destination"));
    }
    close(afd);
    close(cfd);
    close(lfd);

    /* Not an IP socket. */
    int sp[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
    assert_false(tf_origdst_tproxy(sp[0], &dst, err, sizeof(err)));
    assert_non_null(strstr(err, "not an IP socket"));
    assert_false(tf_origdst_redirect(sp[0], &dst, err, sizeof(err)));
    assert_non_null(strstr(err, "not an IP socket"));
    close(sp[0]);
    close(sp[1]);
}

/* The options either work (privileged) or fail with EPERM; never anything else. */
static void
test_socket_options(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int fd6 = socket(AF_INET6, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    int e = tf_origdst_set_mark(fd, 2);
    assert_true(e == 0 || e == EPERM);
    if (e == 0) {
        uint32_t mark = 0;
        socklen_t len = sizeof(mark);
        assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_MARK, &mark, &len), 0);
        assert_int_equal(mark, 2);
    }
    e = tf_origdst_set_transparent(fd, AF_INET);
    assert_true(e == 0 || e == EPERM);
    if (fd6 >= 0) {
        e = tf_origdst_set_transparent(fd6, AF_INET6);
        assert_true(e == 0 || e == EPERM);
        close(fd6);
    }
    close(fd);
    /* A bad descriptor reports its errno. */
    assert_int_equal(tf_origdst_set_mark(-1, 1), EBADF);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reaches),
        cmocka_unit_test(test_len),
        cmocka_unit_test(test_tproxy_is_local_address),
        cmocka_unit_test(test_socket_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
