/*
 * fuzz_connect.c — libFuzzer target for the HTTP CONNECT route's request
 * reader and allow list (connect.h).
 *
 * Input layout:
 *   allow entries, one per line, up to the first NUL byte (no NUL: no
 *   entries, and then the allow list is NULL: everything allowed); the
 *   rest is what the client sent: the request head and maybe tunnel bytes.
 *
 * Checks, besides not crashing:
 *   - tf_connect_parse on the whole input and on prefixes of it (cut where
 *     the input says, and at every line end) agree: a prefix that already
 *     gives a result other than NEED_MORE gives the same result, head
 *     length, host and port as the whole; a head is never longer than
 *     TF_CONNECT_HEAD_MAX and ends with an empty line; err is set exactly
 *     when the result says something is wrong, and is NUL-terminated.
 *   - an OK target: a host made of host-name characters, or a valid IPv6
 *     literal when bracketed; port 1..65535; its own "host:port" (as
 *     tf_connect_format_target writes it) is an allow entry that admits it.
 *   - tf_connect_allow_valid / tf_connect_allowed on the input's entries
 *     never crash; a NULL list allows everything.
 *   - tf_connect_response writes a NUL-ended answer whose length it
 *     returns, for every status and buffer size.
 * Seeds: corpus/fuzz_connect/.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tlsfault/connect.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_ALLOW 16

static void
fuzz_check(bool ok)
{
    if (!ok)
        abort();
}

struct parsed {
    enum tf_connect_result res;
    struct tf_connect_request req;
    char err[256];
};

static void
fuzz_parse(const uint8_t *p, size_t n, struct parsed *out)
{
    /* A copy of exactly n bytes, so that ASan sees any read past the end. */
    uint8_t *copy = malloc(n ? n : 1);
    fuzz_check(copy != NULL);
    if (n > 0)
        memcpy(copy, p, n);
    memset(out->err, 'Z', sizeof(out->err));
    memset(&out->req, 0xa5, sizeof(out->req));
    out->res = tf_connect_parse(copy, n, &out->req, out->err, sizeof(out->err));
    free(copy);

    fuzz_check(memchr(out->err, '\0', sizeof(out->err)) != NULL);
    switch (out->res) {
    case TF_CONNECT_OK:
    case TF_CONNECT_METHOD:
        fuzz_check(out->req.head_len >= 2 && out->req.head_len <= n &&
                   out->req.head_len <= TF_CONNECT_HEAD_MAX);
        fuzz_check(p[out->req.head_len - 1] == '\n');
        fuzz_check(memchr(out->req.method, '\0', sizeof(out->req.method)) != NULL &&
                   out->req.method[0] != '\0');
        if (out->res == TF_CONNECT_OK)
            fuzz_check(out->err[0] == '\0');
        else
            fuzz_check(out->err[0] != '\0');
        break;
    case TF_CONNECT_NEED_MORE:
        fuzz_check(out->err[0] == '\0');
        fuzz_check(n < TF_CONNECT_HEAD_MAX);
        break;
    case TF_CONNECT_BAD:
    case TF_CONNECT_TOO_BIG:
        fuzz_check(out->err[0] != '\0');
        if (out->res == TF_CONNECT_TOO_BIG)
            fuzz_check(n >= TF_CONNECT_HEAD_MAX);
        break;
    default:
        abort();
    }
}

static bool
fuzz_host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_';
}

static void
fuzz_target_ok(const struct tf_connect_request *req)
{
    char entry[300], *list[1];
    size_t hlen = strnlen(req->host, sizeof(req->host));

    fuzz_check(hlen > 0 && hlen < sizeof(req->host));
    fuzz_check(req->port > 0);
    if (req->bracketed) {
        struct in6_addr a6;
        fuzz_check(inet_pton(AF_INET6, req->host, &a6) == 1);
    } else {
        for (size_t i = 0; i < hlen; i++)
            fuzz_check(fuzz_host_char(req->host[i]));
    }
    tf_connect_format_target(req->host, req->port, entry, sizeof(entry));
    fuzz_check(strlen(entry) > hlen);
    {
        char err[128];
        fuzz_check(tf_connect_allow_valid(entry, err, sizeof(err)));
    }
    list[0] = entry;
    fuzz_check(tf_connect_allowed(list, 1, req->host, req->port));
    fuzz_check(tf_connect_allowed(NULL, 0, req->host, req->port));
}

static bool
fuzz_same(const struct parsed *a, const struct parsed *b)
{
    if (a->res != b->res)
        return false;
    if (a->res == TF_CONNECT_OK)
        return a->req.head_len == b->req.head_len && a->req.port == b->req.port &&
               a->req.bracketed == b->req.bracketed && strcmp(a->req.host, b->req.host) == 0;
    if (a->res == TF_CONNECT_METHOD)
        return a->req.head_len == b->req.head_len && strcmp(a->req.method, b->req.method) == 0;
    return true;
}

static void
fuzz_prefix(const uint8_t *p, size_t n, size_t cut, const struct parsed *whole)
{
    struct parsed part;

    if (cut > n)
        cut = n;
    fuzz_parse(p, cut, &part);
    if (part.res == TF_CONNECT_NEED_MORE || part.res == TF_CONNECT_TOO_BIG)
        return;
    if (!fuzz_same(&part, whole)) {
        fprintf(stderr, "fuzz_connect: prefix of %zu bytes gives %d (%s), the whole %zu gives %d (%s)\n",
                cut, (int)part.res, part.err, n, (int)whole->res, whole->err);
        abort();
    }
}

static void
fuzz_responses(const char *reason)
{
    static const int statuses[] = {200, 400, 403, 405, 408, 502, 504, 999, 0, -1};
    static const size_t sizes[] = {0, 1, 16, 39, 40, 41, 64, 128, 1024};
    char buf[1024];

    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
        for (size_t j = 0; j < sizeof(sizes) / sizeof(sizes[0]); j++) {
            size_t len = sizes[j];
            memset(buf, 'Z', sizeof(buf));
            size_t got = tf_connect_response(statuses[i], reason, len ? buf : NULL, len);
            if (got == 0)
                continue;
            fuzz_check(got < len && buf[got] == '\0' && strlen(buf) == got);
            fuzz_check(memcmp(buf, "HTTP/1.1 ", 9) == 0);
            /* The head ends once; the reason is one line of text. */
            const char *end = strstr(buf, "\r\n\r\n");
            fuzz_check(end != NULL);
            end += 4;
            if (statuses[i] == 200)
                fuzz_check(*end == '\0');
            else
                fuzz_check(*end != '\0' && strchr(end, '\n') == buf + got - 1 &&
                           strchr(end, '\r') == NULL);
        }
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, '\0', size);
    const uint8_t *head = data;
    size_t head_len = size;
    char *allow[FUZZ_MAX_ALLOW];
    size_t n_allow = 0;
    char *entries = NULL;
    struct parsed whole;

    if (size > 3 * TF_CONNECT_HEAD_MAX)
        return 0;
    if (nul != NULL) {
        size_t alen = (size_t)(nul - data);
        entries = malloc(alen + 1);
        fuzz_check(entries != NULL);
        memcpy(entries, data, alen);
        entries[alen] = '\0';
        for (char *s = entries; s != NULL && n_allow < FUZZ_MAX_ALLOW;) {
            char *nl = strchr(s, '\n');
            if (nl != NULL)
                *nl = '\0';
            allow[n_allow++] = s;
            s = nl ? nl + 1 : NULL;
        }
        head = nul + 1;
        head_len = size - alen - 1;
    }

    fuzz_parse(head, head_len, &whole);
    /* Prefixes: every line end, and a few cuts the input picks. */
    for (size_t i = 0, lines = 0; i < head_len && lines < 64; i++) {
        if (head[i] == '\n') {
            fuzz_prefix(head, head_len, i + 1, &whole);
            fuzz_prefix(head, head_len, i, &whole);
            lines++;
        }
    }
    for (size_t k = 0; k < 4 && head_len > 0; k++)
        fuzz_prefix(head, head_len, ((size_t)head[k % head_len] * 37 + k * 101) % (head_len + 1),
                    &whole);

    if (whole.res == TF_CONNECT_OK)
        fuzz_target_ok(&whole.req);

    for (size_t i = 0; i < n_allow; i++) {
        char err[128];
        memset(err, 'Z', sizeof(err));
        if (!tf_connect_allow_valid(allow[i], err, sizeof(err)))
            fuzz_check(memchr(err, '\0', sizeof(err)) != NULL && err[0] != '\0');
    }
    if (whole.res == TF_CONNECT_OK) {
        (void)tf_connect_allowed(n_allow ? allow : NULL, n_allow, whole.req.host, whole.req.port);
    } else if (n_allow > 0) {
        /* Entries against each other as hosts: globs on both sides. */
        for (size_t i = 0; i < n_allow; i++)
            (void)tf_connect_allowed(allow, n_allow, allow[i], (uint16_t)(443 + i));
    }
    fuzz_responses(whole.err[0] ? whole.err : NULL);
    free(entries);
    return 0;
}
