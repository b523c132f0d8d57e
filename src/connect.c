/*
 * connect.c — the HTTP/1.1 CONNECT request of the connect route.
 *
 * Job: read a request head from the bytes a proxy client sent (request
 * line, header lines, empty line: RFC 9112 §2-§5), take the target of a
 * CONNECT (authority-form, RFC 9112 §3.2.3: "host:port" or "[v6]:port"),
 * match it against the listener's allow list, and write the answers.  No
 * sockets, no state: flow.c owns the connection and calls in with what has
 * arrived so far.
 *
 * Strict where leniency would hide a broken client (single spaces in the
 * request line, no line folding, no bare CR), lenient where the RFC says a
 * recipient may be (bare LF line ends, empty lines before the request
 * line: RFC 9112 §2.2).  Header fields are checked for form and ignored.
 */
#include <arpa/inet.h>
#include <fnmatch.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tlsfault/connect.h"

/* tchar of RFC 9110 §5.6.2: what a method and a field name are made of. */
static bool
connect_tchar(uint8_t c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Letters, digits, '-', '.' and '_': a DNS name or an IPv4 literal. */
static bool
connect_host_char(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_';
}

/* "1".."65535" exactly, into *port. */
static bool
connect_port(const char *s, size_t n, uint16_t *port)
{
    unsigned long v = 0;
    if (n == 0 || n > 5)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (v == 0 || v > 65535)
        return false;
    *port = (uint16_t)v;
    return true;
}

/* The authority-form target of a CONNECT into req; false with err. */
static bool
connect_target(const char *t, size_t n, struct tf_connect_request *req, char *err,
               size_t errlen)
{
    const char *colon;
    size_t hlen;

    if (memchr(t, '@', n) != NULL) {
        snprintf(err, errlen, "the CONNECT target has user information");
        return false;
    }
    if (n > 0 && t[0] == '[') {
        const char *close = memchr(t, ']', n);
        char lit[INET6_ADDRSTRLEN + 8];
        struct in6_addr a6;
        if (close == NULL) {
            snprintf(err, errlen, "the CONNECT target has '[' without ']'");
            return false;
        }
        hlen = (size_t)(close - t - 1);
        if (hlen == 0 || hlen >= sizeof(lit)) {
            snprintf(err, errlen, "the CONNECT target's IPv6 address is not valid");
            return false;
        }
        memcpy(lit, t + 1, hlen);
        lit[hlen] = '\0';
        if (inet_pton(AF_INET6, lit, &a6) != 1) {
            snprintf(err, errlen, "the CONNECT target's IPv6 address \"%s\" is not valid", lit);
            return false;
        }
        colon = close + 1;
        if (colon >= t + n || *colon != ':') {
            snprintf(err, errlen, "the CONNECT target has no port (host:port)");
            return false;
        }
        /* One spelling per address, so that allow globs see the usual form. */
        inet_ntop(AF_INET6, &a6, req->host, sizeof(req->host));
        req->bracketed = true;
    } else {
        colon = NULL;
        for (size_t i = 0; i < n; i++)
            if (t[i] == ':')
                colon = t + i;
        if (colon == NULL) {
            snprintf(err, errlen, "the CONNECT target has no port (host:port)");
            return false;
        }
        hlen = (size_t)(colon - t);
        if (hlen == 0) {
            snprintf(err, errlen, "the CONNECT target has no host");
            return false;
        }
        if (memchr(t, ':', hlen) != NULL) {
            snprintf(err, errlen, "an IPv6 CONNECT target must be in brackets ([addr]:port)");
            return false;
        }
        if (hlen >= sizeof(req->host) || hlen > 253) {
            snprintf(err, errlen, "the CONNECT target's host name is longer than 253 bytes");
            return false;
        }
        for (size_t i = 0; i < hlen; i++) {
            if (!connect_host_char((uint8_t)t[i])) {
                snprintf(err, errlen, "the CONNECT target's host has a character not allowed "
                                      "in a host name (0x%02x)",
                         (unsigned)(uint8_t)t[i]);
                return false;
            }
        }
        memcpy(req->host, t, hlen);
        req->host[hlen] = '\0';
        req->bracketed = false;
    }
    const char *ps = colon + 1;
    size_t pn = (size_t)(t + n - ps);
    if (!connect_port(ps, pn, &req->port)) {
        snprintf(err, errlen, "the CONNECT target's port \"%.*s\" is not a number in 1..65535",
                 (int)(pn < 16 ? pn : 16), ps);
        return false;
    }
    return true;
}

/*
 * The request line: method SP request-target SP HTTP-version (RFC 9112 §3).
 * Sets *is_connect; the target is parsed only for CONNECT.
 */
static bool
connect_request_line(const char *l, size_t n, struct tf_connect_request *req, bool *is_connect,
                     char *err, size_t errlen)
{
    const char *sp1 = memchr(l, ' ', n);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(l + n - sp1 - 1)) : NULL;
    size_t mlen = sp1 ? (size_t)(sp1 - l) : 0;

    if (sp1 == NULL || sp2 == NULL || mlen == 0 || sp2 == sp1 + 1) {
        snprintf(err, errlen, "the request line is not \"METHOD TARGET HTTP/1.1\"");
        return false;
    }
    for (size_t i = 0; i < mlen; i++) {
        if (!connect_tchar((uint8_t)l[i])) {
            snprintf(err, errlen, "the request method has a character not allowed (0x%02x)",
                     (unsigned)(uint8_t)l[i]);
            return false;
        }
    }
    const char *target = sp1 + 1;
    size_t tlen = (size_t)(sp2 - target);
    const char *version = sp2 + 1;
    size_t vlen = (size_t)(l + n - version);
    for (size_t i = 0; i < tlen; i++) {
        if ((uint8_t)target[i] <= 0x20 || (uint8_t)target[i] >= 0x7f) {
            snprintf(err, errlen, "the request target has a character not allowed (0x%02x)",
                     (unsigned)(uint8_t)target[i]);
            return false;
        }
    }
    if (vlen != 8 || memcmp(version, "HTTP/1.", 7) != 0 ||
        (version[7] != '0' && version[7] != '1')) {
        snprintf(err, errlen, "the request's HTTP version \"%.*s\" is not HTTP/1.1 or HTTP/1.0",
                 (int)(vlen < 16 ? vlen : 16), version);
        return false;
    }
    snprintf(req->method, sizeof(req->method), "%.*s", (int)mlen, l);
    *is_connect = mlen == 7 && memcmp(l, "CONNECT", 7) == 0;
    if (!*is_connect)
        return true;
    return connect_target(target, tlen, req, err, errlen);
}

/* field-name ":" OWS field-value OWS (RFC 9112 §5). */
static bool
connect_header_line(const char *l, size_t n, char *err, size_t errlen)
{
    size_t i = 0;
    if (l[0] == ' ' || l[0] == '\t') {
        snprintf(err, errlen, "a header line is folded (obsolete line folding)");
        return false;
    }
    while (i < n && connect_tchar((uint8_t)l[i]))
        i++;
    if (i == 0 || i == n || l[i] != ':') {
        snprintf(err, errlen, "a header line is not \"Name: value\"");
        return false;
    }
    for (i++; i < n; i++) {
        uint8_t c = (uint8_t)l[i];
        if (c != '\t' && (c < 0x20 || c == 0x7f)) {
            snprintf(err, errlen, "a header value has a control character (0x%02x)", c);
            return false;
        }
    }
    return true;
}

/*
 * A request line not ended yet: can these bytes still become one?  Catches
 * a client that speaks TLS or binary to the proxy at its first bytes.
 */
static bool
connect_plausible_start(const uint8_t *p, size_t n, char *err, size_t errlen)
{
    bool in_method = true;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c == '\r' && i + 1 == n)
            break;
        if (in_method && c == ' ' && i > 0) {
            in_method = false;
            continue;
        }
        if ((in_method && !connect_tchar(c)) || c < 0x20 || c >= 0x7f) {
            if (i == 0 && c == 0x16)
                snprintf(err, errlen, "the client sent TLS, not an HTTP request (a client "
                                      "configured with an https:// proxy?)");
            else
                snprintf(err, errlen, "not an HTTP request (byte 0x%02x at offset %zu)", c, i);
            return false;
        }
    }
    return true;
}

enum tf_connect_result
tf_connect_parse(const uint8_t *p, size_t n, struct tf_connect_request *req, char *err,
                 size_t errlen)
{
    size_t limit = n < TF_CONNECT_HEAD_MAX ? n : TF_CONNECT_HEAD_MAX;
    size_t pos = 0;
    bool have_line = false, is_connect = false;

    memset(req, 0, sizeof(*req));
    if (errlen > 0)
        err[0] = '\0';
    for (;;) {
        const uint8_t *nl = pos < limit ? memchr(p + pos, '\n', limit - pos) : NULL;
        if (nl == NULL) {
            if (!have_line && !connect_plausible_start(p + pos, limit - pos, err, errlen))
                return TF_CONNECT_BAD;
            if (n >= TF_CONNECT_HEAD_MAX) {
                snprintf(err, errlen, "the request head is longer than %d bytes",
                         TF_CONNECT_HEAD_MAX);
                return TF_CONNECT_TOO_BIG;
            }
            return TF_CONNECT_NEED_MORE;
        }
        size_t end = (size_t)(nl - p);
        size_t len = end - pos;
        if (len > 0 && p[end - 1] == '\r')
            len--;
        const char *line = (const char *)p + pos;
        if (memchr(line, '\r', len) != NULL || memchr(line, '\0', len) != NULL) {
            snprintf(err, errlen, "a line of the request has a bare CR or a NUL byte");
            return TF_CONNECT_BAD;
        }
        pos = end + 1;
        if (!have_line) {
            if (len == 0)
                continue; /* empty lines before the request line: RFC 9112 §2.2 */
            if (!connect_plausible_start((const uint8_t *)line, len, err, errlen) ||
                !connect_request_line(line, len, req, &is_connect, err, errlen))
                return TF_CONNECT_BAD;
            have_line = true;
            continue;
        }
        if (len == 0) {
            req->head_len = pos;
            if (!is_connect) {
                snprintf(err, errlen, "method %s is not CONNECT", req->method);
                return TF_CONNECT_METHOD;
            }
            return TF_CONNECT_OK;
        }
        if (!connect_header_line(line, len, err, errlen))
            return TF_CONNECT_BAD;
    }
}

/* ------------------------------------------------------------ allow list */

/*
 * Splits an allow entry into its host glob and port (-1: any).  false with
 * the reason when the entry is malformed.
 */
static bool
connect_allow_split(const char *entry, char *glob, size_t globlen, long *port, char *err,
                    size_t errlen)
{
    const char *rest;
    size_t glen;

    if (entry[0] == '[') {
        const char *close = strchr(entry, ']');
        if (close == NULL) {
            snprintf(err, errlen, "'[' without ']'");
            return false;
        }
        glen = (size_t)(close - entry - 1);
        entry++;
        rest = close + 1;
        if (*rest != '\0' && *rest != ':') {
            snprintf(err, errlen, "\"%s\" after ']' (write [glob]:port)", rest);
            return false;
        }
    } else {
        const char *first = strchr(entry, ':'), *last = strrchr(entry, ':');
        if (first != NULL && first == last) {
            glen = (size_t)(first - entry);
            rest = first;
        } else {
            /* No colon, or an IPv6 glob without brackets: any port. */
            glen = strlen(entry);
            rest = entry + glen;
        }
    }
    if (glen == 0) {
        snprintf(err, errlen, "no host glob");
        return false;
    }
    if (glen >= globlen) {
        snprintf(err, errlen, "the host glob is too long");
        return false;
    }
    memcpy(glob, entry, glen);
    glob[glen] = '\0';
    *port = -1;
    if (*rest == ':') {
        uint16_t v;
        rest++;
        if (strcmp(rest, "*") == 0)
            return true;
        if (!connect_port(rest, strlen(rest), &v)) {
            snprintf(err, errlen, "port \"%s\" is not a number in 1..65535 or *", rest);
            return false;
        }
        *port = v;
    }
    return true;
}

bool
tf_connect_allow_valid(const char *entry, char *err, size_t errlen)
{
    char glob[300];
    long port;
    return connect_allow_split(entry, glob, sizeof(glob), &port, err, errlen);
}

bool
tf_connect_allowed(char *const *allow, size_t n_allow, const char *host, uint16_t port)
{
    char glob[300], err[128];
    long want;

    if (allow == NULL)
        return true;
    for (size_t i = 0; i < n_allow; i++) {
        if (allow[i] == NULL ||
            !connect_allow_split(allow[i], glob, sizeof(glob), &want, err, sizeof(err)))
            continue;
        if (want >= 0 && want != (long)port)
            continue;
        if (fnmatch(glob, host, FNM_CASEFOLD) == 0)
            return true;
    }
    return false;
}

/* ------------------------------------------------------------ answers */

void
tf_connect_format_target(const char *host, uint16_t port, char *buf, size_t len)
{
    if (strchr(host, ':') != NULL)
        snprintf(buf, len, "[%s]:%u", host, (unsigned)port);
    else
        snprintf(buf, len, "%s:%u", host, (unsigned)port);
}

static const char *
connect_status_text(int status)
{
    switch (status) {
    case 200: return "Connection established";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 502: return "Bad Gateway";
    case 504: return "Gateway Timeout";
    default: return "Error";
    }
}

size_t
tf_connect_response(int status, const char *reason, char *buf, size_t len)
{
    char body[512];
    int n;

    if (status == 200) {
        n = snprintf(buf, len, "HTTP/1.1 200 Connection established\r\n\r\n");
        return n > 0 && (size_t)n < len ? (size_t)n : 0;
    }
    /* The reason goes out as one line of text: no CR, LF or other controls. */
    snprintf(body, sizeof(body) - 1, "%s", reason ? reason : connect_status_text(status));
    for (char *c = body; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            *c = ' ';
    strcat(body, "\n");
    n = snprintf(buf, len,
                 "HTTP/1.1 %d %s\r\n"
                 "%s"
                 "Content-Type: text/plain\r\n"
                 "Content-Length: %zu\r\n"
                 "Connection: close\r\n"
                 "\r\n"
                 "%s",
                 status, connect_status_text(status), status == 405 ? "Allow: CONNECT\r\n" : "",
                 strlen(body), body);
    return n > 0 && (size_t)n < len ? (size_t)n : 0;
}
