/*
 * Unit tests for listener.c's address text (the rest of the listener is
 * driven by the integration tests).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "tlsfault/listener.h"

/* What inet_ntop and snprintf make of an IPv4 address and port. */
static void
expected_v4(uint32_t addr, uint16_t port, char *buf, size_t len)
{
    char host[INET_ADDRSTRLEN];
    struct in_addr a = { htonl(addr) };
    inet_ntop(AF_INET, &a, host, sizeof(host));
    snprintf(buf, len, "%s:%u", host, port);
}

/*
 * IPv4 in digits by hand: every octet value in every place, ports from 0
 * to 65535, and buffers too small for the text (cut and terminated, as
 * snprintf does).
 */
static void
test_format_v4(void **state)
{
    (void)state;
    static const uint16_t ports[] = { 0, 1, 9, 10, 99, 100, 443, 999, 1000, 8443, 9999,
                                      10000, 35622, 65535 };
    size_t checked = 0;
    for (unsigned v = 0; v < 256; v++) {
        for (int place = 0; place < 4; place++) {
            uint32_t addr = 0x7f000001u & ~(0xffu << (place * 8));
            addr |= (uint32_t)v << (place * 8);
            for (size_t p = 0; p < sizeof(ports) / sizeof(ports[0]); p++) {
                struct sockaddr_in in = { .sin_family = AF_INET, .sin_port = htons(ports[p]),
                                          .sin_addr = { htonl(addr) } };
                char got[64], want[64];
                tf_listener_format_addr((struct sockaddr *)&in, got, sizeof(got));
                expected_v4(addr, ports[p], want, sizeof(want));
                assert_string_equal(got, want);
                checked++;
            }
        }
    }
    assert_int_equal(checked, 256 * 4 * 14);

    struct sockaddr_in in = { .sin_family = AF_INET, .sin_port = htons(65535),
                              .sin_addr = { htonl(0xffffffffu) } };
    for (size_t len = 1; len <= 24; len++) {
        char got[32], want[32];
        memset(got, 'Z', sizeof(got));
        tf_listener_format_addr((struct sockaddr *)&in, got, len);
        snprintf(want, len, "%s", "255.255.255.255:65535");
        assert_string_equal(got, want);
        assert_int_equal(got[len], 'Z'); /* nothing past the buffer */
    }
}

/* IPv6 in brackets; anything else says so. */
static void
test_format_other(void **state)
{
    (void)state;
    struct sockaddr_in6 in6 = { .sin6_family = AF_INET6, .sin6_port = htons(8443) };
    in6.sin6_addr.s6_addr[15] = 1;
    char got[64];
    tf_listener_format_addr((struct sockaddr *)&in6, got, sizeof(got));
    assert_string_equal(got, "[::1]:8443");
    struct sockaddr un = { .sa_family = AF_UNIX };
    tf_listener_format_addr(&un, got, sizeof(got));
    assert_string_equal(got, "unknown");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_v4),
        cmocka_unit_test(test_format_other),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
