/*
 * ctl.c — `tlsfault ctl`: the control API from a shell or a CI script.
 *
 * Job: parse a command, make one HTTP/1.1 request to the control API
 * (control.c) over a plain socket, and print the answer for people (tables,
 * one-line confirmations) or, with --json, as the API gave it.  What a
 * rule means and whether it is valid is the server's business: ctl only
 * carries the words across, so that the file, --fault and ctl share one
 * set of messages.
 *
 * wait-fault is the one command that stays: it opens GET /events for the
 * rule's fault events first, then asks whether the rule has acted already
 * (GET /rules/NAME: "events"), and otherwise reads the stream until a fault
 * event of the rule arrives or the timeout passes.  Opening the stream
 * before asking closes the window in which an event could be missed.
 *
 * Exit codes: 0 done; 1 the server refused (its message is printed),
 * cannot be reached, or wait-fault timed out; 2 usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netdb.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tlsfault/config.h"
#include "tlsfault/ctl.h"

#define CTL_EXIT_OK 0
#define CTL_EXIT_NO 1
#define CTL_EXIT_USAGE 2
#define CTL_DEFAULT_ADDR "127.0.0.1:8474"
#define CTL_IO_TIMEOUT_MS 15000
#define CTL_HEADERS_MAX (64 << 10)
#define CTL_BODY_MAX (64u << 20)

static const char ctl_usage_text[] =
    "usage: tlsfault ctl [--control ADDR] [--token-file FILE] [--json] COMMAND [ARGS]\n"
    "\n"
    "Drives a running tlsfault through its control API (control.listen, or --control in\n"
    "quick mode).  ADDR defaults to $TLSFAULT_CONTROL, else " CTL_DEFAULT_ADDR "; the token file\n"
    "to $TLSFAULT_TOKEN_FILE.\n"
    "\n"
    "Commands:\n"
    "  add NAME FAULT [KEY=VALUE ...] [match options] [--disabled]\n"
    "                       add a rule; KEY=VALUE are the fault's parameters\n"
    "                       (match.KEY=VALUE a match key); match options: --sni GLOB,\n"
    "                       --client CIDR, --listener NAME, --dest CIDR, --dest-port N,\n"
    "                       --nth N, --every N, --first N, --times N, --probability P,\n"
    "                       --seed N\n"
    "  rm NAME              remove a rule\n"
    "  ls                   list the rules with their counters\n"
    "  show NAME            one rule, as JSON\n"
    "  enable NAME, disable NAME\n"
    "                       switch a rule on or off (new flows only)\n"
    "  set NAME [KEY=VALUE ...] [match options]\n"
    "                       change a rule's parameters or match (KEY= puts the default back)\n"
    "  reset NAME           zero a rule's counters\n"
    "  flows [ID]           the live flows; one flow with its events so far\n"
    "  stats                counters since start (flows, bytes, versions, outcomes,\n"
    "                       verdicts, faults fired per rule), as JSON\n"
    "  faults               the fault catalogue\n"
    "  events [--flow ID] [--event NAME[,NAME]] [--rule NAME] [--timeout S]\n"
    "                       follow the event stream (JSON Lines) until interrupted\n"
    "  wait-fault RULE [--timeout S] [--new]\n"
    "                       wait until RULE has acted (a fault event); with --new, only\n"
    "                       an event from now on counts.  Default timeout 30 s\n"
    "  reload               re-read the configuration file, as SIGHUP\n"
    "\n"
    "Exit codes: 0 done, 1 refused by the server / unreachable / timed out, 2 usage.\n";

/* ------------------------------------------------------------ messages */

static void __attribute__((format(printf, 1, 2)))
ctl_say(const char *fmt, ...)
{
    va_list ap;
    fputs("tlsfault ctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static int __attribute__((format(printf, 1, 2)))
ctl_usage(const char *fmt, ...)
{
    va_list ap;
    fputs("tlsfault ctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n(tlsfault ctl --help for the commands)\n", stderr);
    return CTL_EXIT_USAGE;
}

static long long
ctl_now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* ------------------------------------------------------------ HTTP */

struct ctl_opts {
    const char *addr;
    const char *token_file;
    char *token;
    bool json;
};

/* A connection and what has been read but not consumed. */
struct ctl_conn {
    int fd;
    char *buf;
    size_t len, cap;
    bool eof;
};

struct ctl_response {
    int status;
    bool chunked;
    long long content_length; /* -1: until the connection closes */
    char *body;               /* NUL-terminated (whole-body requests) */
    size_t body_len;
};

static int
ctl_connect(const char *addr, char *err, size_t errlen)
{
    char host[1100];
    char port[8];
    uint16_t p;
    struct addrinfo hints, *res = NULL;

    if (!tf_config_split_hostport(addr, host, sizeof(host), &p, err, errlen))
        return -1;
    if (p == 0) {
        snprintf(err, errlen, "%s: port 0 cannot be connected to", addr);
        return -1;
    }
    snprintf(port, sizeof(port), "%u", p);
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "%s: %s", addr, gai_strerror(rc));
        return -1;
    }
    int fd = -1, saved = 0;
    for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                    ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        int e = connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 ? 0 : errno;
        if (e == EINPROGRESS) {
            struct pollfd pfd = {fd, POLLOUT, 0};
            socklen_t sl = sizeof(e);
            if (poll(&pfd, 1, CTL_IO_TIMEOUT_MS) != 1)
                e = ETIMEDOUT;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &sl) != 0)
                e = errno;
        }
        if (e != 0) {
            saved = e;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        snprintf(err, errlen, "cannot connect to the control API at %s: %s (is tlsfault running "
                 "with control enabled?)", addr, strerror(saved));
    return fd;
}

/*
 * Reads what has arrived, waiting until deadline_ms (monotonic; < 0: one
 * I/O timeout).  Returns 0, or -1 on error, end of stream or timeout.
 */
static int
ctl_fill(struct ctl_conn *c, long long deadline_ms)
{
    if (c->eof)
        return -1;
    if (c->cap - c->len < 4096) {
        size_t cap = c->cap ? c->cap * 2 : 16384;
        char *b = realloc(c->buf, cap);
        if (b == NULL)
            return -1;
        c->buf = b;
        c->cap = cap;
    }
    for (;;) {
        ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len - 1, 0);
        if (n > 0) {
            c->len += (size_t)n;
            c->buf[c->len] = '\0';
            return 0;
        }
        if (n == 0) {
            c->eof = true;
            return -1;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        long long wait = deadline_ms >= 0 ? deadline_ms - ctl_now_ms() : CTL_IO_TIMEOUT_MS;
        if (wait <= 0)
            return -1;
        struct pollfd pfd = {c->fd, POLLIN, 0};
        int r = poll(&pfd, 1, wait > 1000000 ? 1000000 : (int)wait);
        if (r < 0 && errno != EINTR)
            return -1;
        if (r == 0 && deadline_ms >= 0 && ctl_now_ms() >= deadline_ms)
            return -1;
        if (r == 0 && deadline_ms < 0)
            return -1;
    }
}

static void
ctl_consume(struct ctl_conn *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
    if (c->cap > 0)
        c->buf[c->len] = '\0';
}

static bool
ctl_send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pfd = {fd, POLLOUT, 0};
            if (poll(&pfd, 1, CTL_IO_TIMEOUT_MS) != 1)
                return false;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/*
 * Connects, sends the request and reads the status line and headers into
 * r; the body is left in c for ctl_read_body.  Returns false after saying
 * why (c is then safe to close).
 */
static bool
ctl_request_start(const struct ctl_opts *o, const char *method, const char *path,
                  const char *body, struct ctl_conn *c, struct ctl_response *r)
{
    char err[1024];
    memset(c, 0, sizeof(*c));
    memset(r, 0, sizeof(*r));
    r->content_length = -1;
    c->fd = ctl_connect(o->addr, err, sizeof(err));
    if (c->fd < 0) {
        ctl_say("%s", err);
        return false;
    }
    size_t blen = body != NULL ? strlen(body) : 0;
    size_t cap = 1024 + strlen(path) + strlen(o->addr) + (o->token ? strlen(o->token) : 0);
    char *head = malloc(cap);
    if (head == NULL)
        return false;
    int n = snprintf(head, cap,
                     "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: tlsfault-ctl\r\n"
                     "Connection: close\r\nAccept: application/json\r\n%s%s%s"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     method, path, o->addr, o->token ? "Authorization: Bearer " : "",
                     o->token ? o->token : "", o->token ? "\r\n" : "", blen);
    bool ok = n > 0 && (size_t)n < cap && ctl_send_all(c->fd, head, (size_t)n) &&
              (blen == 0 || ctl_send_all(c->fd, body, blen));
    free(head);
    if (!ok) {
        ctl_say("%s: cannot send the request: %s", o->addr, strerror(errno));
        return false;
    }
    /* Status line and headers. */
    char *end;
    while ((end = c->len > 0 ? strstr(c->buf, "\r\n\r\n") : NULL) == NULL) {
        if (c->len > CTL_HEADERS_MAX || ctl_fill(c, -1) != 0) {
            ctl_say("%s: no answer from the control API", o->addr);
            return false;
        }
    }
    *end = '\0';
    if (sscanf(c->buf, "HTTP/1.%*d %d", &r->status) != 1) {
        ctl_say("%s: not an HTTP answer (is this the control API's address?)", o->addr);
        return false;
    }
    for (char *line = strstr(c->buf, "\r\n"); line != NULL; line = strstr(line, "\r\n")) {
        line += 2;
        if (strncasecmp(line, "Transfer-Encoding:", 18) == 0 && strstr(line, "chunked") != NULL)
            r->chunked = true;
        else if (strncasecmp(line, "Content-Length:", 15) == 0)
            r->content_length = strtoll(line + 15, NULL, 10);
    }
    ctl_consume(c, (size_t)(end - c->buf) + 4);
    return true;
}

/*
 * Reads the body, handing each piece to fn (which returns false to stop
 * early).  Returns 1 when the body ended, 0 when fn stopped, -1 on error
 * or when deadline_ms passed.
 */
typedef bool ctl_data_fn(void *arg, const char *p, size_t n);

static int
ctl_read_body(struct ctl_conn *c, const struct ctl_response *r, long long deadline_ms,
              ctl_data_fn *fn, void *arg)
{
    if (!r->chunked) {
        long long left = r->content_length;
        for (;;) {
            size_t take = c->len;
            if (left >= 0 && (long long)take > left)
                take = (size_t)left;
            if (take > 0 && !fn(arg, c->buf, take))
                return 0;
            ctl_consume(c, take);
            if (left >= 0) {
                left -= (long long)take;
                if (left == 0)
                    return 1;
            }
            if (ctl_fill(c, deadline_ms) != 0)
                return left < 0 && c->eof ? 1 : -1;
        }
    }
    for (;;) {
        char *eol;
        while ((eol = c->len > 0 ? strstr(c->buf, "\r\n") : NULL) == NULL)
            if (ctl_fill(c, deadline_ms) != 0)
                return -1;
        unsigned long long size = strtoull(c->buf, NULL, 16);
        ctl_consume(c, (size_t)(eol - c->buf) + 2);
        if (size == 0)
            return 1;
        while (c->len < size + 2)
            if (ctl_fill(c, deadline_ms) != 0)
                return -1;
        if (!fn(arg, c->buf, size))
            return 0;
        ctl_consume(c, size + 2);
    }
}

static bool
ctl_collect(void *arg, const char *p, size_t n)
{
    struct ctl_response *r = arg;
    if (r->body_len + n > CTL_BODY_MAX)
        return false;
    char *b = realloc(r->body, r->body_len + n + 1);
    if (b == NULL)
        return false;
    memcpy(b + r->body_len, p, n);
    r->body = b;
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return true;
}

static void
ctl_conn_close(struct ctl_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
}

/*
 * One whole request.  Returns the answer's JSON (new reference) with the
 * status in *status, or NULL after saying why.
 */
static json_t *
ctl_call(const struct ctl_opts *o, const char *method, const char *path, json_t *body,
         int *status)
{
    struct ctl_conn c;
    struct ctl_response r;
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
    json_t *out = NULL;

    bool started = ctl_request_start(o, method, path, text, &c, &r);
    free(text);
    if (started) {
        if (ctl_read_body(&c, &r, -1, ctl_collect, &r) != 1) {
            ctl_say("%s: the answer to %s %s was cut short", o->addr, method, path);
        } else {
            json_error_t jerr;
            out = json_loadb(r.body ? r.body : "", r.body_len, 0, &jerr);
            if (out == NULL)
                ctl_say("%s: the answer to %s %s is not JSON (HTTP %d): %s", o->addr, method,
                        path, r.status, jerr.text);
            *status = r.status;
        }
    }
    free(r.body);
    ctl_conn_close(&c);
    return out;
}

/* A refusal, as the server put it. */
static int
ctl_refused(const json_t *answer, int status)
{
    const char *msg = json_string_value(json_object_get(answer, "error"));
    ctl_say("%s (HTTP %d)", msg != NULL ? msg : "refused", status);
    return CTL_EXIT_NO;
}

static void
ctl_print_json(const json_t *v)
{
    char *text = json_dumps(v, JSON_INDENT(2) | JSON_ENCODE_ANY);
    if (text != NULL)
        puts(text);
    free(text);
}

/* ------------------------------------------------------------ printing */

/* "k=v k=v" of an object's members, into buf. */
static void
ctl_pairs(const json_t *obj, char *buf, size_t n)
{
    const char *key;
    const json_t *v;
    size_t used = 0;

    buf[0] = '\0';
    json_object_foreach((json_t *)(uintptr_t)obj, key, v) {
        char *text = json_is_string(v) ? NULL : json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        int w = snprintf(buf + used, n - used, "%s%s=%s", used ? " " : "", key,
                         json_is_string(v) ? json_string_value(v) : (text ? text : "?"));
        free(text);
        if (w < 0 || (size_t)w >= n - used) {
            buf[n - 1] = '\0';
            return;
        }
        used += (size_t)w;
    }
}

static void
ctl_print_rule_line(const json_t *r)
{
    char match[512], params[512];
    ctl_pairs(json_object_get(r, "match"), match, sizeof(match));
    ctl_pairs(json_object_get(r, "params"), params, sizeof(params));
    printf("%-20s %-26s %-8s %6" JSON_INTEGER_FORMAT " %6" JSON_INTEGER_FORMAT
           " %6" JSON_INTEGER_FORMAT "  %s%s%s\n",
           json_string_value(json_object_get(r, "name")),
           json_string_value(json_object_get(r, "fault")),
           json_is_true(json_object_get(r, "enabled")) ? "enabled" : "disabled",
           json_integer_value(json_object_get(r, "seen")),
           json_integer_value(json_object_get(r, "fired")),
           json_integer_value(json_object_get(r, "events")), match[0] ? match : "(every flow)",
           params[0] ? "  " : "", params);
}

static void
ctl_print_rules(const json_t *list)
{
    printf("%-20s %-26s %-8s %6s %6s %6s  %s\n", "NAME", "FAULT", "STATE", "SEEN", "FIRED",
           "EVENTS", "MATCH  PARAMS");
    for (size_t i = 0; i < json_array_size(list); i++)
        ctl_print_rule_line(json_array_get(list, i));
}

static void
ctl_print_flows(const json_t *list)
{
    printf("%-6s %8s %-12s %-22s %-24s %-28s %s\n", "ID", "AGE", "LISTENER", "CLIENT", "SNI",
           "LAST EVENT", "FAULTS");
    for (size_t i = 0; i < json_array_size(list); i++) {
        const json_t *f = json_array_get(list, i);
        char faults[256] = "";
        size_t used = 0;
        const json_t *fl = json_object_get(f, "faults");
        for (size_t k = 0; k < json_array_size(fl) && used < sizeof(faults); k++)
            used += (size_t)snprintf(faults + used, sizeof(faults) - used, "%s%s",
                                     k ? "," : "", json_string_value(json_array_get(fl, k)));
        char age[32];
        snprintf(age, sizeof(age), "%.1fs",
                 (double)json_integer_value(json_object_get(f, "age_ms")) / 1000.0);
        const char *sni = json_string_value(json_object_get(f, "sni"));
        const char *last = json_string_value(json_object_get(f, "last_event"));
        printf("%-6" JSON_INTEGER_FORMAT " %8s %-12s %-22s %-24s %-28s %s\n",
               json_integer_value(json_object_get(f, "id")), age,
               json_string_value(json_object_get(f, "listener")),
               json_string_value(json_object_get(f, "client")), sni ? sni : "-",
               last ? last : "-", faults[0] ? faults : "-");
    }
}

static void
ctl_print_faults(const json_t *list)
{
    for (size_t i = 0; i < json_array_size(list); i++) {
        const json_t *d = json_array_get(list, i);
        printf("%-26s %-12s %s\n", json_string_value(json_object_get(d, "name")),
               json_string_value(json_object_get(d, "mode")),
               json_string_value(json_object_get(d, "help")));
    }
}

/* ------------------------------------------------------------ arguments */

/* Match options of add and set, with the match key each sets. */
static const struct {
    const char *option;
    const char *key;
} ctl_match_options[] = {
    {"--sni", "sni"},       {"--client", "client"},         {"--listener", "listener"},
    {"--dest", "dest"},     {"--dest-port", "dest_port"},   {"--nth", "nth"},
    {"--every", "every"},   {"--first", "first"},           {"--times", "times"},
    {"--probability", "probability"}, {"--seed", "seed"},
};

/* "--opt=value" or "--opt value": the value, advancing *i; NULL when it is not opt. */
static const char *
ctl_option(int argc, char **argv, int *i, const char *opt, bool *missing)
{
    size_t n = strlen(opt);
    if (strncmp(argv[*i], opt, n) != 0)
        return NULL;
    if (argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (argv[*i][n] != '\0')
        return NULL;
    if (*i + 1 >= argc) {
        *missing = true;
        return NULL;
    }
    return argv[++*i];
}

/*
 * KEY=VALUE words and match options into params and match (new objects).
 * set_mode: "KEY=" means null (the default back).  Returns false after a
 * usage message.
 */
static bool
ctl_rule_words(int argc, char **argv, int start, bool set_mode, json_t *params, json_t *match,
               bool *disabled)
{
    for (int i = start; i < argc; i++) {
        bool missing = false, matched = false;
        for (size_t k = 0; k < sizeof(ctl_match_options) / sizeof(ctl_match_options[0]); k++) {
            const char *v = ctl_option(argc, argv, &i, ctl_match_options[k].option, &missing);
            if (missing) {
                ctl_usage("%s needs a value", ctl_match_options[k].option);
                return false;
            }
            if (v != NULL) {
                json_object_set_new(match, ctl_match_options[k].key,
                                    set_mode && *v == '\0' ? json_null() : json_string(v));
                matched = true;
                break;
            }
        }
        if (matched)
            continue;
        if (disabled != NULL && strcmp(argv[i], "--disabled") == 0) {
            *disabled = true;
            continue;
        }
        if (argv[i][0] == '-' && argv[i][1] == '-') {
            ctl_usage("unknown option \"%s\"", argv[i]);
            return false;
        }
        const char *eq = strchr(argv[i], '=');
        if (eq == NULL || eq == argv[i]) {
            ctl_usage("expected KEY=VALUE, not \"%s\"", argv[i]);
            return false;
        }
        char key[128];
        snprintf(key, sizeof(key), "%.*s", (int)(eq - argv[i]), argv[i]);
        json_t *value = set_mode && eq[1] == '\0' ? json_null() : json_string(eq + 1);
        if (strncmp(key, "match.", 6) == 0)
            json_object_set_new(match, key + 6, value);
        else
            json_object_set_new(params, key, value);
    }
    return true;
}

/* A path segment as the API wants it: rule names are plain, so only a check. */
static bool
ctl_name_ok(const char *name)
{
    if (*name == '\0' || strlen(name) > 64)
        return false;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-'))
            return false;
    return true;
}

static bool
ctl_parse_seconds(const char *v, double *out)
{
    char *end;
    double d = strtod(v, &end);
    if (end == v || *end != '\0' || !(d > 0) || d > 86400 * 7)
        return false;
    *out = d;
    return true;
}

/* ------------------------------------------------------------ commands */

/*
 * One request (body is taken), settled as every command settles it: no
 * answer, a refusal (a status other than want; with want 0, any 300+), or
 * --json printing the answer.  Otherwise *reply is the answer, for the
 * caller to say in words and release.
 */
static int
ctl_exchange(const struct ctl_opts *o, const char *method, const char *path, json_t *body,
             int want, json_t **reply)
{
    int status = 0;
    json_t *answer = ctl_call(o, method, path, body, &status);
    json_decref(body);
    *reply = NULL;
    if (answer == NULL)
        return CTL_EXIT_NO;
    int rc = CTL_EXIT_OK;
    if (want != 0 ? status != want : status >= 300) {
        rc = ctl_refused(answer, status);
    } else if (!o->json) {
        *reply = answer;
        return rc;
    } else {
        ctl_print_json(answer);
    }
    json_decref(answer);
    return rc;
}

static int
ctl_simple(const struct ctl_opts *o, const char *method, const char *path, json_t *body,
           void (*print)(const json_t *))
{
    json_t *reply;
    int rc = ctl_exchange(o, method, path, body, 0, &reply);
    if (reply != NULL) {
        if (print != NULL)
            print(reply);
        else
            ctl_print_json(reply);
        json_decref(reply);
    }
    return rc;
}

static int
ctl_cmd_add(const struct ctl_opts *o, int argc, char **argv)
{
    if (argc < 3)
        return ctl_usage("add NAME FAULT [KEY=VALUE ...] [--sni GLOB] ...");
    json_t *params = json_object(), *match = json_object();
    bool disabled = false;
    if (!ctl_rule_words(argc, argv, 3, false, params, match, &disabled)) {
        json_decref(params);
        json_decref(match);
        return CTL_EXIT_USAGE;
    }
    json_t *body = json_pack("{s:s, s:s, s:o, s:o, s:b}", "name", argv[1], "fault", argv[2],
                             "params", params, "match", match, "enabled", !disabled);
    json_t *reply;
    int rc = ctl_exchange(o, "POST", "/rules", body, 201, &reply);
    if (reply != NULL) {
        char m[512];
        ctl_pairs(json_object_get(reply, "match"), m, sizeof(m));
        printf("rule %s added: %s%s%s%s\n", json_string_value(json_object_get(reply, "name")),
               json_string_value(json_object_get(reply, "fault")), m[0] ? ", match " : "", m,
               disabled ? " (disabled)" : "");
        json_decref(reply);
    }
    return rc;
}

static int
ctl_cmd_patch(const struct ctl_opts *o, const char *name, json_t *body, const char *done)
{
    char path[128];

    if (!ctl_name_ok(name)) {
        json_decref(body);
        return ctl_usage("\"%s\" is not a rule name", name);
    }
    snprintf(path, sizeof(path), "/rules/%s", name);
    json_t *reply;
    int rc = ctl_exchange(o, "PATCH", path, body, 200, &reply);
    if (reply != NULL) {
        printf("rule %s %s\n", name, done);
        json_decref(reply);
    }
    return rc;
}

static int
ctl_cmd_set(const struct ctl_opts *o, int argc, char **argv)
{
    if (argc < 3)
        return ctl_usage("set NAME KEY=VALUE ... [--sni GLOB] ...");
    json_t *params = json_object(), *match = json_object();
    if (!ctl_rule_words(argc, argv, 2, true, params, match, NULL)) {
        json_decref(params);
        json_decref(match);
        return CTL_EXIT_USAGE;
    }
    return ctl_cmd_patch(o, argv[1], json_pack("{s:o, s:o}", "params", params, "match", match),
                         "changed");
}

static int
ctl_cmd_rm(const struct ctl_opts *o, const char *name)
{
    char path[128];

    if (!ctl_name_ok(name))
        return ctl_usage("\"%s\" is not a rule name", name);
    snprintf(path, sizeof(path), "/rules/%s", name);
    json_t *reply;
    int rc = ctl_exchange(o, "DELETE", path, NULL, 200, &reply);
    if (reply != NULL) {
        printf("rule %s removed\n", name);
        json_decref(reply);
    }
    return rc;
}

/* Lines of an /events stream, as they arrive. */
struct ctl_stream {
    char *line;
    size_t len, cap;
    bool print;          /* events: print every line */
    const char *rule;    /* wait-fault: stop at a fault event of this rule */
    bool found;
    json_t *event;       /* the one found */
};

static bool
ctl_stream_line(struct ctl_stream *s)
{
    if (s->print) {
        fwrite(s->line, 1, s->len, stdout);
        fputc('\n', stdout);
        fflush(stdout);
    }
    if (s->rule == NULL)
        return true;
    json_t *e = json_loadb(s->line, s->len, 0, NULL);
    const char *event = json_string_value(json_object_get(e, "event"));
    const char *rule = json_string_value(json_object_get(e, "rule"));
    if (event != NULL && rule != NULL && strcmp(event, "fault") == 0 &&
        strcmp(rule, s->rule) == 0) {
        s->found = true;
        s->event = e;
        return false;
    }
    json_decref(e);
    return true;
}

static bool
ctl_stream_data(void *arg, const char *p, size_t n)
{
    struct ctl_stream *s = arg;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n') {
            bool more = ctl_stream_line(s);
            s->len = 0;
            if (!more)
                return false;
            continue;
        }
        if (s->len + 1 >= s->cap) {
            size_t cap = s->cap ? s->cap * 2 : 4096;
            char *l = realloc(s->line, cap);
            if (l == NULL)
                return false;
            s->line = l;
            s->cap = cap;
        }
        s->line[s->len++] = p[i];
    }
    return true;
}

static int
ctl_open_stream(const struct ctl_opts *o, const char *path, struct ctl_conn *c,
                struct ctl_response *r)
{
    if (!ctl_request_start(o, "GET", path, NULL, c, r))
        return CTL_EXIT_NO;
    if (r->status != 200) {
        struct ctl_response whole = *r;
        whole.body = NULL;
        whole.body_len = 0;
        json_t *answer = NULL;
        if (ctl_read_body(c, r, -1, ctl_collect, &whole) == 1)
            answer = json_loads(whole.body ? whole.body : "", 0, NULL);
        ctl_refused(answer, r->status);
        json_decref(answer);
        free(whole.body);
        return CTL_EXIT_NO;
    }
    return CTL_EXIT_OK;
}

static int
ctl_cmd_events(const struct ctl_opts *o, int argc, char **argv)
{
    char path[512] = "/events";
    size_t used = strlen(path);
    double timeout = 0;

    for (int i = 1; i < argc; i++) {
        bool missing = false;
        const char *v;
        const char *key = NULL;
        if ((v = ctl_option(argc, argv, &i, "--flow", &missing)) != NULL)
            key = "flow";
        else if ((v = ctl_option(argc, argv, &i, "--event", &missing)) != NULL)
            key = "event";
        else if ((v = ctl_option(argc, argv, &i, "--rule", &missing)) != NULL)
            key = "rule";
        else if ((v = ctl_option(argc, argv, &i, "--timeout", &missing)) != NULL) {
            if (!ctl_parse_seconds(v, &timeout))
                return ctl_usage("--timeout: expected seconds, not \"%s\"", v);
            continue;
        }
        if (missing)
            return ctl_usage("%s needs a value", argv[i]);
        if (key == NULL)
            return ctl_usage("events: unexpected \"%s\"", argv[i]);
        for (const char *p = v; *p; p++)
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' || *p == '-' || *p == ','))
                return ctl_usage("%s: \"%s\" has characters no name has", key, v);
        used += (size_t)snprintf(path + used, sizeof(path) - used, "%c%s=%s",
                                 used == 7 ? '?' : '&', key, v);
        if (used >= sizeof(path))
            return ctl_usage("events: filters too long");
    }
    struct ctl_conn c;
    struct ctl_response r;
    int rc = ctl_open_stream(o, path, &c, &r);
    if (rc == CTL_EXIT_OK) {
        struct ctl_stream s = {.print = true};
        /* No timeout: as long as it takes. */
        long long deadline = timeout > 0 ? ctl_now_ms() + (long long)(timeout * 1000)
                                         : LLONG_MAX / 2;
        int end = ctl_read_body(&c, &r, deadline, ctl_stream_data, &s);
        free(s.line);
        rc = CTL_EXIT_OK;
        if (end == -1 && c.eof) {
            ctl_say("the control API closed the stream");
            rc = CTL_EXIT_NO;
        }
    }
    ctl_conn_close(&c);
    return rc;
}

static int
ctl_cmd_wait_fault(const struct ctl_opts *o, int argc, char **argv)
{
    double timeout = 30;
    bool only_new = false;
    const char *rule = NULL;

    for (int i = 1; i < argc; i++) {
        bool missing = false;
        const char *v = ctl_option(argc, argv, &i, "--timeout", &missing);
        if (missing)
            return ctl_usage("--timeout needs a value");
        if (v != NULL) {
            if (!ctl_parse_seconds(v, &timeout))
                return ctl_usage("--timeout: expected seconds (up to a week), not \"%s\"", v);
        } else if (strcmp(argv[i], "--new") == 0) {
            only_new = true;
        } else if (argv[i][0] == '-') {
            return ctl_usage("wait-fault: unknown option \"%s\"", argv[i]);
        } else if (rule == NULL) {
            rule = argv[i];
        } else {
            return ctl_usage("wait-fault takes one rule name");
        }
    }
    if (rule == NULL)
        return ctl_usage("wait-fault RULE [--timeout S] [--new]");
    if (!ctl_name_ok(rule))
        return ctl_usage("\"%s\" is not a rule name", rule);

    long long deadline = ctl_now_ms() + (long long)(timeout * 1000);
    char path[160];
    struct ctl_conn c;
    struct ctl_response r;

    /* The stream first, then the question: nothing can fall between the two. */
    snprintf(path, sizeof(path), "/events?event=fault&rule=%s", rule);
    int rc = ctl_open_stream(o, path, &c, &r);
    if (rc != CTL_EXIT_OK) {
        ctl_conn_close(&c);
        return rc;
    }
    int status = 0;
    snprintf(path, sizeof(path), "/rules/%s", rule);
    json_t *answer = ctl_call(o, "GET", path, NULL, &status);
    if (answer == NULL || status != 200) {
        rc = answer != NULL ? ctl_refused(answer, status) : CTL_EXIT_NO;
        json_decref(answer);
        ctl_conn_close(&c);
        return rc;
    }
    json_int_t already = json_integer_value(json_object_get(answer, "events"));
    json_decref(answer);
    if (already > 0 && !only_new) {
        printf("rule %s has acted (%" JSON_INTEGER_FORMAT " fault event%s)\n", rule, already,
               already == 1 ? "" : "s");
        ctl_conn_close(&c);
        return CTL_EXIT_OK;
    }
    struct ctl_stream s = {.rule = rule};
    int end = ctl_read_body(&c, &r, deadline, ctl_stream_data, &s);
    ctl_conn_close(&c);
    free(s.line);
    if (s.found) {
        if (o->json) {
            ctl_print_json(s.event);
        } else {
            const char *action = json_string_value(json_object_get(s.event, "action"));
            printf("rule %s acted on flow %" JSON_INTEGER_FORMAT ": %s\n", rule,
                   json_integer_value(json_object_get(s.event, "flow")), action ? action : "-");
        }
        json_decref(s.event);
        return CTL_EXIT_OK;
    }
    if (end == -1 && c.eof)
        ctl_say("wait-fault: the control API closed the stream before rule %s acted", rule);
    else
        ctl_say("wait-fault: rule %s did not act within %g s", rule, timeout);
    return CTL_EXIT_NO;
}

/* ------------------------------------------------------------ entry */

static bool
ctl_load_token(struct ctl_opts *o)
{
    char buf[1100];
    if (o->token_file == NULL || *o->token_file == '\0')
        return true;
    FILE *f = fopen(o->token_file, "r");
    if (f == NULL) {
        ctl_say("--token-file %s: %s", o->token_file, strerror(errno));
        return false;
    }
    bool got = fgets(buf, sizeof(buf), f) != NULL;
    fclose(f);
    size_t n = got ? strlen(buf) : 0;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' ||
                     buf[n - 1] == '\t'))
        buf[--n] = '\0';
    char *start = buf;
    while (*start == ' ' || *start == '\t')
        start++;
    if (*start == '\0') {
        ctl_say("--token-file %s: empty (its first line is the token)", o->token_file);
        return false;
    }
    for (const char *p = start; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) {
            ctl_say("--token-file %s: the token must be printable ASCII without spaces",
                    o->token_file);
            return false;
        }
    o->token = strdup(start);
    return o->token != NULL;
}

static int
ctl_dispatch(struct ctl_opts *o, int argc, char **argv)
{
    const char *cmd = argv[0];
    char path[128];

    if (strcmp(cmd, "add") == 0)
        return ctl_cmd_add(o, argc, argv);
    if (strcmp(cmd, "set") == 0)
        return ctl_cmd_set(o, argc, argv);
    if (strcmp(cmd, "events") == 0)
        return ctl_cmd_events(o, argc, argv);
    if (strcmp(cmd, "wait-fault") == 0)
        return ctl_cmd_wait_fault(o, argc, argv);

    /* The rest take at most one name. */
    bool named = strcmp(cmd, "rm") == 0 || strcmp(cmd, "show") == 0 ||
                 strcmp(cmd, "enable") == 0 || strcmp(cmd, "disable") == 0 ||
                 strcmp(cmd, "reset") == 0;
    bool optional = strcmp(cmd, "flows") == 0;
    bool bare = strcmp(cmd, "ls") == 0 || strcmp(cmd, "stats") == 0 ||
                strcmp(cmd, "faults") == 0 || strcmp(cmd, "reload") == 0;
    if (!named && !optional && !bare)
        return ctl_usage("unknown command \"%s\"", cmd);
    if ((named && argc != 2) || (optional && argc > 2) || (bare && argc != 1))
        return ctl_usage(named ? "%s takes one rule name" : optional ? "%s takes at most a flow id"
                                                                     : "%s takes no arguments",
                         cmd);
    const char *name = argc > 1 ? argv[1] : NULL;
    if (named && !ctl_name_ok(name))
        return ctl_usage("\"%s\" is not a rule name", name);
    if (named)
        snprintf(path, sizeof(path), "/rules/%s", name);

    if (strcmp(cmd, "rm") == 0)
        return ctl_cmd_rm(o, name);
    if (strcmp(cmd, "show") == 0)
        return ctl_simple(o, "GET", path, NULL, NULL);
    if (strcmp(cmd, "enable") == 0)
        return ctl_cmd_patch(o, name, json_pack("{s:b}", "enabled", 1), "enabled");
    if (strcmp(cmd, "disable") == 0)
        return ctl_cmd_patch(o, name, json_pack("{s:b}", "enabled", 0), "disabled");
    if (strcmp(cmd, "reset") == 0)
        return ctl_cmd_patch(o, name, json_pack("{s:b}", "reset", 1), "counters reset");
    if (strcmp(cmd, "ls") == 0)
        return ctl_simple(o, "GET", "/rules", NULL, ctl_print_rules);
    if (strcmp(cmd, "stats") == 0)
        return ctl_simple(o, "GET", "/stats", NULL, NULL);
    if (strcmp(cmd, "faults") == 0)
        return ctl_simple(o, "GET", "/faults", NULL, ctl_print_faults);
    if (strcmp(cmd, "reload") == 0) {
        json_t *reply;
        int rc = ctl_exchange(o, "POST", "/reload", NULL, 200, &reply);
        if (reply != NULL) {
            json_int_t rules = json_integer_value(json_object_get(reply, "rules"));
            printf("reloaded %s (%" JSON_INTEGER_FORMAT " rule%s)\n",
                   json_string_value(json_object_get(reply, "reloaded")), rules,
                   rules == 1 ? "" : "s");
            json_decref(reply);
        }
        return rc;
    }
    /* flows [ID] */
    if (name == NULL)
        return ctl_simple(o, "GET", "/flows", NULL, ctl_print_flows);
    for (const char *p = name; *p; p++)
        if (*p < '0' || *p > '9')
            return ctl_usage("flows: \"%s\" is not a flow id", name);
    snprintf(path, sizeof(path), "/flows/%s", name);
    return ctl_simple(o, "GET", path, NULL, NULL);
}

int
tf_ctl_main(int argc, char **argv)
{
    struct ctl_opts o = {0};
    char **rest = calloc((size_t)argc + 1, sizeof(*rest));
    int n_rest = 0;

    if (rest == NULL)
        return CTL_EXIT_NO;
    o.addr = getenv("TLSFAULT_CONTROL");
    o.token_file = getenv("TLSFAULT_TOKEN_FILE");
    /* Global options anywhere; everything else, in order, is the command. */
    for (int i = 1; i < argc; i++) {
        bool missing = false;
        const char *v;
        if ((v = ctl_option(argc, argv, &i, "--control", &missing)) != NULL) {
            o.addr = v;
        } else if (!missing &&
                   (v = ctl_option(argc, argv, &i, "--token-file", &missing)) != NULL) {
            o.token_file = v;
        } else if (missing) {
            free(rest);
            return ctl_usage("%s needs a value", argv[i]);
        } else if (strcmp(argv[i], "--json") == 0) {
            o.json = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(ctl_usage_text, stdout);
            free(rest);
            return CTL_EXIT_OK;
        } else {
            rest[n_rest++] = argv[i];
        }
    }
    if (o.addr == NULL || *o.addr == '\0')
        o.addr = CTL_DEFAULT_ADDR;
    if (n_rest == 0) {
        fputs(ctl_usage_text, stderr);
        free(rest);
        return CTL_EXIT_USAGE;
    }
    if (!ctl_load_token(&o)) {
        free(rest);
        return CTL_EXIT_USAGE;
    }
    signal(SIGPIPE, SIG_IGN);
    int rc = ctl_dispatch(&o, n_rest, rest);
    fflush(stdout);
    free(rest);
    free(o.token);
    return rc;
}
