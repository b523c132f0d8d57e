/*
 * connect.h — the request of the connect route: an explicit HTTP/1.1 proxy.
 *
 * A client configured with an HTTP proxy opens the tunnel with a request
 * head (RFC 9110 §9.3.6, RFC 9112 §3.2.3):
 *
 *     CONNECT lab.test:443 HTTP/1.1
 *     Host: lab.test:443
 *
 * and, once answered "200", speaks TLS through it.  This module reads that
 * head out of a byte buffer, matches its target against the listener's
 * allow list and writes the answers.  It has no sockets and keeps no state:
 * flow.c calls it with what the client has sent so far, and unit tests
 * with byte strings.  Headers are checked for form and otherwise ignored.
 */
#ifndef TLSFAULT_CONNECT_H
#define TLSFAULT_CONNECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A request head (request line, headers, empty line) may not be longer. */
#define TF_CONNECT_HEAD_MAX 8192

enum tf_connect_result {
    TF_CONNECT_OK = 0,     /* a whole, well-formed CONNECT head */
    TF_CONNECT_NEED_MORE,  /* no end of head yet, and nothing wrong so far */
    TF_CONNECT_BAD,        /* malformed: answer 400 */
    TF_CONNECT_TOO_BIG,    /* no end of head within TF_CONNECT_HEAD_MAX bytes: answer 400 */
    TF_CONNECT_METHOD,     /* a well-formed request of another method: answer 405 */
};

struct tf_connect_request {
    char method[32];       /* as sent (truncated for messages); set from TF_CONNECT_METHOD on */
    char host[256];        /* name or address literal, without brackets */
    uint16_t port;         /* 1..65535 */
    bool bracketed;        /* the target was "[v6]:port" */
    size_t head_len;       /* bytes of the head, its empty line included; the tunnel
                            * starts right after them */
};

/*
 * Reads a request head from the first n bytes the client sent.  With
 * TF_CONNECT_OK and TF_CONNECT_METHOD req is filled (host and port only
 * for OK); with TF_CONNECT_BAD, TF_CONNECT_TOO_BIG and TF_CONNECT_METHOD
 * err says what is wrong, for flow_end.  A malformed request line is
 * reported as soon as it is complete (bytes that cannot start an HTTP
 * request, a TLS ClientHello say, at once), without waiting for the rest.
 */
enum tf_connect_result tf_connect_parse(const uint8_t *p, size_t n,
                                        struct tf_connect_request *req, char *err,
                                        size_t errlen) __attribute__((nonnull(3, 4)));

/*
 * Whether the target host:port may be connected to.  allow holds
 * "host-glob:port", "host-glob:*" or "host-glob" (any port) entries; a v6
 * glob is written in brackets ("[fd00::*]:443"); globs are fnmatch(3)
 * patterns, case-insensitive.  NULL (n_allow 0): everything is allowed.
 */
bool tf_connect_allowed(char *const *allow, size_t n_allow, const char *host, uint16_t port);

/*
 * Checks the form of one allow entry (for the configuration): false with
 * the reason in err ("port 70000 is out of range", ...).
 */
bool tf_connect_allow_valid(const char *entry, char *err, size_t errlen);

/* "lab.test:443" / "[fd00::1]:443" into buf. */
void tf_connect_format_target(const char *host, uint16_t port, char *buf, size_t len);

/*
 * Writes the answer with HTTP status code status into buf (NUL-ended) and
 * returns its length (0 when buf is too small).  200 is exactly
 * "HTTP/1.1 200 Connection established\r\n\r\n"; an error (400, 403, 405
 * with "Allow: CONNECT", 408, 502, 504) closes the connection and carries
 * reason (may be NULL) as a one-line text/plain body.
 */
size_t tf_connect_response(int status, const char *reason, char *buf, size_t len);

#endif
