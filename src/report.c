/*
 * report.c — `tlsfault report`: a picture of each handshake.
 *
 * Job: read a JSON Lines event log (README "Events"), group its events by
 * flow and draw each flow as a ladder diagram between three columns —
 * client, tlsfault, server — one arrow per message in the order logged:
 * handshake messages by type, ChangeCipherSpec, alerts (red), encrypted
 * records (grey, with their size), non-TLS bytes and decrypted data; in
 * mitm mode each leg is its own pair of columns (client↔tlsfault,
 * tlsfault↔server); a fault is a marker on the tlsfault column where it
 * acted.  Two outputs: one self-contained HTML file (inline CSS and JS,
 * a Content-Security-Policy that allows nothing else, the decoded fields
 * of each message in its title and in a <details> element) or text for a
 * terminal.  What happened and why stays the flow_end verdict's job
 * (flow.c); this module only draws what the log says.
 *
 * The log is untrusted: server names, previews and decrypted data are
 * whatever a peer sent.  Every string from it is HTML-escaped (or, in text
 * mode, has its control characters escaped), classes are only ever chosen
 * from fixed tables, and the one script is pinned by its hash in the CSP,
 * so an injected <script> could not run even if escaping were missed.
 *
 * Memory: the log is read twice.  The first pass keeps, per flow, a few
 * summary strings and the file offsets of its events (at most --max-events
 * of them; at most --max-flows flows); the second pass seeks to each flow's
 * events and draws them.  A line longer than REPORT_LINE_MAX is skipped.
 * Input that cannot seek (a pipe, "-") is first copied to a temporary file.
 */
#include <errno.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tlsfault/report.h"

#define REPORT_LINE_MAX (1024 * 1024)  /* longest line read; longer ones are bad lines */
#define REPORT_BAD_SHOWN 50            /* bad lines named one by one on stderr */
#define REPORT_STR_MAX 1024            /* summary strings kept per flow */
#define REPORT_FIELD_MAX 4096          /* bytes of one string field shown in the HTML */
#define REPORT_TITLE_MAX 1500          /* bytes of a hover title */
#define REPORT_DEPTH_MAX 6             /* nesting drawn in the field tables */
#define REPORT_MAX_FLOWS 2000
#define REPORT_MAX_EVENTS 1000
#define REPORT_TEXT_ARROW 56           /* columns of a text-mode arrow, head included */

#define REPORT_SYNOPSIS                                                    \
    "usage: tlsfault report EVENTS.jsonl [-o FILE] [--text] [--flow ID]\n" \
    "                       [--max-flows N] [--max-events N]\n"

static const char report_usage[] =
    REPORT_SYNOPSIS
    "\n"
    "Draws each flow of a JSON Lines event log (--json) as a ladder diagram of\n"
    "its messages between client, tlsfault and server.\n"
    "\n"
    "  EVENTS.jsonl       the event log (\"-\" for stdin)\n"
    "  -o, --output FILE  write the report here (default stdout)\n"
    "      --html         one self-contained HTML file (the default)\n"
    "      --text         a compact ladder per flow, for terminals\n"
    "      --flow ID      only flow ID; a log written by several runs can hold the\n"
    "                     same id more than once: ID#N is the Nth of them\n"
    "      --max-flows N  draw at most N flows (default 2000; 0 for no limit)\n"
    "      --max-events N draw at most N events per flow (default 1000; 0 for no limit)\n"
    "  -h, --help         print this help and exit\n"
    "\n"
    "Lines that are not events are named on stderr with their line number and\n"
    "skipped.  Exit codes: 0 report written, 1 input/output error or no such\n"
    "flow, 2 usage error.\n";

/* ------------------------------------------------------------ options */

struct report_opts {
    const char *input;
    const char *output;
    bool text;
    bool filter;
    uint64_t filter_id;
    unsigned filter_instance;   /* 0: every flow with filter_id */
    size_t max_flows;           /* 0: no limit */
    size_t max_events;          /* 0: no limit */
};

/* ------------------------------------------------------------ flows */

/* Summary strings of a flow, from flow_start, the hellos and flow_end. */
enum report_field {
    RF_CLIENT,
    RF_UPSTREAM,
    RF_LISTENER,
    RF_MODE,
    RF_SNI,
    RF_VERSION,
    RF_SUITE,
    RF_OUTCOME,
    RF_STAGE,
    RF_SUMMARY,
    RF_CAUSE,
    RF_WHO_FIXES,
    RF_CLOSE,
    RF_CLOSED_BY,
    RF_ERROR,
    RF_HANDSHAKE,
    RF_FAULTS,
    RF_NFIELDS
};

/* Where one event of a flow is in the log. */
struct report_ref {
    uint64_t off;
    uint64_t line;
};

/*
 * One flow as the first pass saw it.  Owns its strings and refs.  A log
 * written by several runs holds the same flow id more than once: each
 * flow_start opens a new flow, and instance counts them (1, 2, ...).
 */
struct report_flow {
    uint64_t id;
    unsigned instance;
    bool started;               /* its flow_start is in the log */
    bool ended;                 /* its flow_end is in the log */
    int64_t t0, tlast;          /* first and last event time, µs; INT64_MIN unknown */
    long long duration_ms;      /* from flow_end; -1 unknown */
    long long bytes_c2s, bytes_s2c;
    char *s[RF_NFIELDS];
    json_t *mitm;               /* flow_end's mitm object, or NULL */
    json_t *evidence;           /* the verdict's evidence, or NULL */
    size_t n_events;            /* all its events in the log */
    size_t n_alerts, n_faults;
    size_t n_hidden;            /* events beyond --max-events, not drawn */
    struct report_ref *refs;
    size_t nrefs, caprefs;
};

/* Flow id -> index of its current flow (-1: the current one is not kept). */
struct report_slot {
    uint64_t id;
    long flow;
    unsigned instances;
    bool used;
};

struct report {
    struct report_opts opt;
    FILE *in;
    const char *name;           /* the input's name for messages */
    struct report_flow *flows;
    size_t nflows, capflows;
    struct report_slot *slots;
    size_t capslots, nslots;
    uint64_t lines, events, bad, hidden_flows;
    char *buf;                  /* the line buffer, REPORT_LINE_MAX + 1 */
};

/* ------------------------------------------------------------ small helpers */

static const char *
report_str(json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

/* Length of s cut to at most max bytes without splitting a UTF-8 sequence. */
static size_t
report_utf8_cut(const char *s, size_t len, size_t max)
{
    if (len <= max)
        return len;
    size_t n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    return n;
}

static char *
report_strdup_cut(const char *s, size_t max)
{
    size_t n = report_utf8_cut(s, strlen(s), max);
    char *p = malloc(n + 1);
    if (p == NULL)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static void
report_flow_set(struct report_flow *f, enum report_field k, const char *v, bool replace)
{
    if (v == NULL || v[0] == '\0' || (f->s[k] != NULL && !replace))
        return;
    char *p = report_strdup_cut(v, REPORT_STR_MAX);
    if (p == NULL)
        return;
    free(f->s[k]);
    f->s[k] = p;
}

/* Appends "rule (fault)" to the flow's fault list unless it is there. */
static void
report_flow_add_fault(struct report_flow *f, const char *rule, const char *fault)
{
    char item[256];
    snprintf(item, sizeof(item), "%s (%s)", rule ? rule : "?", fault ? fault : "?");
    const char *old = f->s[RF_FAULTS];
    if (old != NULL) {
        size_t n = strlen(item);
        for (const char *p = strstr(old, item); p != NULL; p = strstr(p + 1, item))
            if ((p == old || p[-1] == ' ') && (p[n] == '\0' || p[n] == ','))
                return;
        if (strlen(old) + n + 3 > REPORT_STR_MAX)
            return;
    }
    size_t len = (old ? strlen(old) + 2 : 0) + strlen(item) + 1;
    char *p = malloc(len);
    if (p == NULL)
        return;
    snprintf(p, len, "%s%s%s", old ? old : "", old ? ", " : "", item);
    free(f->s[RF_FAULTS]);
    f->s[RF_FAULTS] = p;
}

static void
report_flow_free(struct report_flow *f)
{
    for (int i = 0; i < RF_NFIELDS; i++)
        free(f->s[i]);
    json_decref(f->mitm);
    json_decref(f->evidence);
    free(f->refs);
}

/* The flow's name in the report: "7", or "7#2" for the second flow 7 of the log. */
static void
report_flow_label(const struct report_flow *f, char *buf, size_t len)
{
    if (f->instance > 1)
        snprintf(buf, len, "%llu#%u", (unsigned long long)f->id, f->instance);
    else
        snprintf(buf, len, "%llu", (unsigned long long)f->id);
}

/* The flow's HTML id: "flow-7", "flow-7-2" (no '#', which would end a URL's fragment). */
static void
report_flow_anchor(const struct report_flow *f, char *buf, size_t len)
{
    if (f->instance > 1)
        snprintf(buf, len, "flow-%llu-%u", (unsigned long long)f->id, f->instance);
    else
        snprintf(buf, len, "flow-%llu", (unsigned long long)f->id);
}

/* ------------------------------------------------------------ the flow table */

static uint64_t
report_hash(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

static struct report_slot *
report_slot_find(struct report *r, uint64_t id)
{
    if (r->capslots == 0)
        return NULL;
    for (size_t i = report_hash(id) & (r->capslots - 1);; i = (i + 1) & (r->capslots - 1)) {
        if (!r->slots[i].used)
            return NULL;
        if (r->slots[i].id == id)
            return &r->slots[i];
    }
}

static struct report_slot *
report_slot_add(struct report *r, uint64_t id)
{
    if ((r->nslots + 1) * 2 > r->capslots) {
        size_t cap = r->capslots ? r->capslots * 2 : 64;
        struct report_slot *s = calloc(cap, sizeof(*s));
        if (s == NULL)
            return NULL;
        for (size_t j = 0; j < r->capslots; j++) {
            if (!r->slots[j].used)
                continue;
            size_t i = report_hash(r->slots[j].id) & (cap - 1);
            while (s[i].used)
                i = (i + 1) & (cap - 1);
            s[i] = r->slots[j];
        }
        free(r->slots);
        r->slots = s;
        r->capslots = cap;
    }
    size_t i = report_hash(id) & (r->capslots - 1);
    while (r->slots[i].used)
        i = (i + 1) & (r->capslots - 1);
    r->slots[i] = (struct report_slot){ .id = id, .flow = -1, .instances = 0, .used = true };
    r->nslots++;
    return &r->slots[i];
}

static struct report_flow *
report_flow_new(struct report *r, uint64_t id, unsigned instance)
{
    if (r->nflows == r->capflows) {
        size_t cap = r->capflows ? r->capflows * 2 : 64;
        struct report_flow *f = realloc(r->flows, cap * sizeof(*f));
        if (f == NULL)
            return NULL;
        r->flows = f;
        r->capflows = cap;
    }
    struct report_flow *f = &r->flows[r->nflows++];
    memset(f, 0, sizeof(*f));
    f->id = id;
    f->instance = instance;
    f->t0 = f->tlast = INT64_MIN;
    f->duration_ms = f->bytes_c2s = f->bytes_s2c = -1;
    return f;
}

/*
 * The flow an event of flow id belongs to, opening a new one at its
 * flow_start (or at the first event of a flow whose start is not in the
 * log).  NULL: the event is not drawn (another flow than --flow asked, or
 * over --max-flows).
 */
static struct report_flow *
report_flow_for(struct report *r, uint64_t id, bool is_start)
{
    const struct report_opts *o = &r->opt;
    if (o->filter && id != o->filter_id)
        return NULL;
    struct report_slot *slot = report_slot_find(r, id);
    if (slot != NULL && !is_start)
        return slot->flow >= 0 ? &r->flows[slot->flow] : NULL;
    unsigned instance = slot ? slot->instances + 1 : 1;
    bool keep = !(o->filter_instance && instance != o->filter_instance);
    if (keep && o->max_flows && r->nflows >= o->max_flows) {
        if (is_start)
            r->hidden_flows++;
        keep = false;
    }
    if (!keep && slot == NULL && !o->filter)
        return NULL;            /* nothing to remember: later events find no slot either */
    if (slot == NULL && (slot = report_slot_add(r, id)) == NULL)
        return NULL;
    slot->instances = instance;
    slot->flow = -1;
    if (!keep)
        return NULL;
    struct report_flow *f = report_flow_new(r, id, instance);
    if (f != NULL)
        slot->flow = (long)(f - r->flows);
    return f;
}

/* ------------------------------------------------------------ reading */

/*
 * Reads the next line of f into buf (NUL-terminated, without its newline
 * or a trailing CR).  Returns 1 and the length, 0 at the end of the file,
 * or -1 for a line longer than REPORT_LINE_MAX (read to its end and
 * dropped).  *off advances by the bytes consumed.
 */
static int
report_read_line(FILE *f, char *buf, size_t *len, uint64_t *off)
{
    size_t n = 0;
    bool any = false, too_long = false;
    int c;
    while ((c = getc_unlocked(f)) != EOF) {
        any = true;
        (*off)++;
        if (c == '\n')
            break;
        if (n < REPORT_LINE_MAX)
            buf[n++] = (char)c;
        else
            too_long = true;
    }
    if (!any)
        return 0;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    buf[n] = '\0';
    *len = n;
    return too_long ? -1 : 1;
}

static void
report_bad(struct report *r, uint64_t line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
report_bad(struct report *r, uint64_t line, const char *fmt, ...)
{
    r->bad++;
    if (r->bad > REPORT_BAD_SHOWN)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* jansson quotes the bytes near an error: a log could aim escape sequences at the terminal. */
    fprintf(stderr, "tlsfault report: %s:%llu: ", r->name, (unsigned long long)line);
    for (const unsigned char *p = (const unsigned char *)msg; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            fprintf(stderr, "\\x%02x", *p);
        else
            fputc(*p, stderr);
    fputc('\n', stderr);
}

/*
 * Parses one line as an event: a JSON object with an integer "flow" and a
 * string "event".  Returns the object (the caller's reference) or NULL
 * with the reason in why.
 */
static json_t *
report_parse_event(const char *buf, size_t len, char *why, size_t whylen)
{
    json_error_t err;
    json_t *ev = json_loadb(buf, len, 0, &err);
    if (ev == NULL) {
        snprintf(why, whylen, "not JSON: %s (column %d)", err.text, err.column);
        return NULL;
    }
    json_t *flow = json_object_get(ev, "flow");
    if (!json_is_object(ev))
        snprintf(why, whylen, "not an event: a JSON %s, not an object",
                 json_is_array(ev) ? "array" : "value");
    else if (!json_is_integer(flow) || json_integer_value(flow) < 0)
        snprintf(why, whylen, "not an event: no \"flow\" id");
    else if (!json_is_string(json_object_get(ev, "event")))
        snprintf(why, whylen, "not an event: no \"event\" name");
    else
        return ev;
    json_decref(ev);
    return NULL;
}

/* Takes what the summary needs from one event of f. */
static void
report_flow_note(struct report_flow *f, json_t *ev, const char *name)
{
    int64_t t;
    const char *ts = report_str(ev, "ts");
    if (ts != NULL && tf_report_parse_ts(ts, &t)) {
        if (f->t0 == INT64_MIN)
            f->t0 = t;
        if (t > f->tlast)
            f->tlast = t;
    }
    const char *type = report_str(ev, "type");
    if (strcmp(name, "flow_start") == 0) {
        f->started = true;
        report_flow_set(f, RF_CLIENT, report_str(ev, "client"), false);
        report_flow_set(f, RF_UPSTREAM, report_str(ev, "upstream"), false);
        report_flow_set(f, RF_LISTENER, report_str(ev, "listener"), false);
        report_flow_set(f, RF_MODE, report_str(ev, "mode"), false);
    } else if (strcmp(name, "handshake") == 0 && type != NULL) {
        if (strcmp(type, "client_hello") == 0)
            report_flow_set(f, RF_SNI, report_str(ev, "server_name"), false);
        if (strcmp(type, "server_hello") == 0) {
            const char *v = report_str(ev, "version");
            report_flow_set(f, RF_VERSION, v ? v : report_str(ev, "legacy_version"), false);
            report_flow_set(f, RF_SUITE, report_str(ev, "cipher_suite"), false);
        }
    } else if (strcmp(name, "alert") == 0) {
        f->n_alerts++;
    } else if (strcmp(name, "fault") == 0) {
        f->n_faults++;
        report_flow_add_fault(f, report_str(ev, "rule"), report_str(ev, "fault"));
    } else if (strcmp(name, "flow_end") == 0) {
        f->ended = true;
        report_flow_set(f, RF_CLIENT, report_str(ev, "client"), true);
        report_flow_set(f, RF_UPSTREAM, report_str(ev, "upstream"), true);
        report_flow_set(f, RF_LISTENER, report_str(ev, "listener"), true);
        report_flow_set(f, RF_SNI, report_str(ev, "sni"), true);
        report_flow_set(f, RF_VERSION, report_str(ev, "version"), true);
        report_flow_set(f, RF_SUITE, report_str(ev, "cipher_suite"), true);
        report_flow_set(f, RF_OUTCOME, report_str(ev, "outcome"), true);
        report_flow_set(f, RF_STAGE, report_str(ev, "stage"), true);
        report_flow_set(f, RF_SUMMARY, report_str(ev, "summary"), true);
        report_flow_set(f, RF_CLOSE, report_str(ev, "close"), true);
        report_flow_set(f, RF_CLOSED_BY, report_str(ev, "closed_by"), true);
        report_flow_set(f, RF_ERROR, report_str(ev, "error"), true);
        report_flow_set(f, RF_HANDSHAKE, report_str(ev, "handshake"), true);
        json_t *v = json_object_get(ev, "duration_ms");
        if (json_is_number(v))
            f->duration_ms = (long long)json_number_value(v);
        json_t *bytes = json_object_get(ev, "bytes");
        if (json_is_integer(json_object_get(bytes, "c2s")))
            f->bytes_c2s = json_integer_value(json_object_get(bytes, "c2s"));
        if (json_is_integer(json_object_get(bytes, "s2c")))
            f->bytes_s2c = json_integer_value(json_object_get(bytes, "s2c"));
        size_t i;
        json_t *fault;
        json_array_foreach(json_object_get(ev, "faults"), i, fault)
            report_flow_add_fault(f, report_str(fault, "rule"), report_str(fault, "fault"));
        /* The verdict object (issue 6) says it better than the flat fields, when present. */
        json_t *verdict = json_object_get(ev, "verdict");
        if (json_is_object(verdict)) {
            report_flow_set(f, RF_OUTCOME, report_str(verdict, "outcome"), true);
            report_flow_set(f, RF_STAGE, report_str(verdict, "stage"), true);
            report_flow_set(f, RF_SUMMARY, report_str(verdict, "summary"), true);
            report_flow_set(f, RF_CAUSE, report_str(verdict, "cause"), true);
            report_flow_set(f, RF_WHO_FIXES, report_str(verdict, "who_fixes"), true);
            json_t *e = json_object_get(verdict, "evidence");
            if (e != NULL) {
                json_decref(f->evidence);
                f->evidence = json_incref(e);
            }
        }
        json_t *m = json_object_get(ev, "mitm");
        if (json_is_object(m)) {
            json_decref(f->mitm);
            f->mitm = json_incref(m);
        }
    }
}

/* The first pass: every line read once, flows and event offsets kept. */
static void
report_index(struct report *r)
{
    uint64_t off = 0;
    for (;;) {
        uint64_t start = off;
        size_t len = 0;
        int got = report_read_line(r->in, r->buf, &len, &off);
        if (got == 0)
            break;
        uint64_t line = ++r->lines;
        if (got < 0) {
            report_bad(r, line, "line longer than %d bytes; skipped", REPORT_LINE_MAX);
            continue;
        }
        size_t i = 0;
        while (i < len && (r->buf[i] == ' ' || r->buf[i] == '\t'))
            i++;
        if (i == len)
            continue;           /* blank lines are not events, nor errors */
        char why[256];
        json_t *ev = report_parse_event(r->buf, len, why, sizeof(why));
        if (ev == NULL) {
            report_bad(r, line, "%s", why);
            continue;
        }
        r->events++;
        const char *name = report_str(ev, "event");
        uint64_t id = (uint64_t)json_integer_value(json_object_get(ev, "flow"));
        struct report_flow *f = report_flow_for(r, id, strcmp(name, "flow_start") == 0);
        if (f != NULL) {
            f->n_events++;
            report_flow_note(f, ev, name);
            if (r->opt.max_events && f->nrefs >= r->opt.max_events) {
                f->n_hidden++;
            } else {
                if (f->nrefs == f->caprefs) {
                    size_t cap = f->caprefs ? f->caprefs * 2 : 32;
                    struct report_ref *p = realloc(f->refs, cap * sizeof(*p));
                    if (p != NULL) {
                        f->refs = p;
                        f->caprefs = cap;
                    }
                }
                if (f->nrefs < f->caprefs)
                    f->refs[f->nrefs++] = (struct report_ref){ start, line };
                else
                    f->n_hidden++;
            }
        }
        json_decref(ev);
    }
}

/* Reads the event at ref again (second pass).  NULL if the file changed under us. */
static json_t *
report_load(struct report *r, const struct report_ref *ref)
{
    uint64_t off = ref->off;
    size_t len;
    char why[256];
    if (fseeko(r->in, (off_t)ref->off, SEEK_SET) != 0)
        return NULL;
    if (report_read_line(r->in, r->buf, &len, &off) != 1)
        return NULL;
    return report_parse_event(r->buf, len, why, sizeof(why));
}

/* ------------------------------------------------------------ events as arrows */

enum report_kind {
    RK_FLOW_START,
    RK_FLOW_END,
    RK_HANDSHAKE,
    RK_CCS,
    RK_ALERT,
    RK_ENCRYPTED,
    RK_NON_TLS,
    RK_DATA,
    RK_FAULT,
    RK_OTHER
};

/* Event names and the CSS class of each kind (classes never come from the log). */
static const struct {
    const char *event;
    enum report_kind kind;
    const char *cls;
} report_kinds[] = {
    { "flow_start", RK_FLOW_START, "k-start" },
    { "flow_end", RK_FLOW_END, "k-end" },
    { "handshake", RK_HANDSHAKE, "k-hs" },
    { "change_cipher_spec", RK_CCS, "k-ccs" },
    { "alert", RK_ALERT, "k-alert alert" },
    { "encrypted", RK_ENCRYPTED, "k-enc" },
    { "non_tls", RK_NON_TLS, "k-nontls" },
    { "data", RK_DATA, "k-data" },
    { "fault", RK_FAULT, "k-fault" },
};

static enum report_kind
report_kind_of(const char *name, const char **cls)
{
    for (size_t i = 0; i < sizeof(report_kinds) / sizeof(report_kinds[0]); i++)
        if (strcmp(name, report_kinds[i].event) == 0) {
            *cls = report_kinds[i].cls;
            return report_kinds[i].kind;
        }
    *cls = "k-other";
    return RK_OTHER;
}

enum report_col { COL_CLIENT, COL_PROXY, COL_SERVER };

static const char *const report_col_names[] = { "client", "tlsfault", "server" };

/*
 * The columns an event's arrow joins.  Passthrough: c2s goes from the
 * client to the server through tlsfault.  mitm: "leg" says which TCP
 * connection carried it (client: client↔tlsfault, upstream:
 * tlsfault↔server), and dir which way.  False for events without a
 * direction (flow_start, flow_end, fault).
 */
static bool
report_arrow_ends(json_t *ev, enum report_col *from, enum report_col *to)
{
    const char *dir = report_str(ev, "dir");
    const char *leg = report_str(ev, "leg");
    if (dir == NULL || (strcmp(dir, "c2s") != 0 && strcmp(dir, "s2c") != 0))
        return false;
    bool c2s = strcmp(dir, "c2s") == 0;
    enum report_col lo = COL_CLIENT, hi = COL_SERVER;
    if (leg != NULL && strcmp(leg, "client") == 0)
        hi = COL_PROXY;
    else if (leg != NULL && strcmp(leg, "upstream") == 0)
        lo = COL_PROXY;
    *from = c2s ? lo : hi;
    *to = c2s ? hi : lo;
    return true;
}

/* Appends to a bounded buffer; never overruns, silently truncates. */
struct report_buf {
    char *p;
    size_t len;
    size_t used;
};

static void
report_add(struct report_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
report_add(struct report_buf *b, const char *fmt, ...)
{
    if (b->len == 0 || b->used + 1 >= b->len)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->used, b->len - b->used, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    b->used += (size_t)n;
    if (b->used >= b->len) {
        b->used = report_utf8_cut(b->p, b->len - 1, b->len - 1);
        b->p[b->used] = '\0';
    }
}

/* Up to max bytes of s, then "…" if it was longer. */
static void
report_add_cut(struct report_buf *b, const char *s, size_t max)
{
    size_t len = strlen(s);
    size_t n = report_utf8_cut(s, len, max);
    report_add(b, "%.*s%s", (int)n, s, n < len ? "…" : "");
}

void
tf_report_label(const json_t *event, char *buf, size_t len)
{
    json_t *ev = (json_t *)(uintptr_t)event;    /* jansson's getters take no const */
    struct report_buf b = { buf, len, 0 };
    const char *name = report_str(ev, "event");
    const char *type = report_str(ev, "type");
    json_t *length = json_object_get(ev, "length");
    const char *cls;

    if (len == 0)
        return;
    buf[0] = '\0';
    switch (report_kind_of(name ? name : "", &cls)) {
    case RK_HANDSHAKE:
        report_add(&b, "%s", type ? type : "handshake");
        if (type != NULL && strcmp(type, "client_hello") == 0) {
            const char *sni = report_str(ev, "server_name");
            json_t *sv = json_object_get(ev, "supported_versions");
            if (sni != NULL) {
                report_add(&b, " ");
                report_add_cut(&b, sni, 64);
            }
            if (json_is_array(sv) && json_array_size(sv) > 0 &&
                json_is_string(json_array_get(sv, 0)))
                report_add(&b, " up to %s", json_string_value(json_array_get(sv, 0)));
        } else if (type != NULL && (strcmp(type, "server_hello") == 0 ||
                                    strcmp(type, "hello_retry_request") == 0)) {
            const char *v = report_str(ev, "version");
            const char *suite = report_str(ev, "cipher_suite");
            if (v != NULL)
                report_add(&b, " %s", v);
            if (suite != NULL)
                report_add(&b, " %s", suite);
            if (report_str(ev, "downgrade_sentinel") != NULL)
                report_add(&b, " (downgrade sentinel %s)", report_str(ev, "downgrade_sentinel"));
        } else if (type != NULL && strcmp(type, "certificate") == 0) {
            json_t *chain = json_object_get(ev, "chain");
            const char *subject = report_str(json_array_get(chain, 0), "subject");
            if (subject != NULL) {
                report_add(&b, " ");
                report_add_cut(&b, subject, 48);
            }
            if (json_array_size(chain) > 1)
                report_add(&b, " +%zu", json_array_size(chain) - 1);
        } else if (type != NULL && strcmp(type, "server_key_exchange") == 0) {
            const char *group = report_str(ev, "group");
            if (group != NULL)
                report_add(&b, " %s", group);
        }
        break;
    case RK_CCS:
        report_add(&b, "change_cipher_spec");
        break;
    case RK_ALERT: {
        const char *level = report_str(ev, "level");
        const char *desc = report_str(ev, "description");
        report_add(&b, "alert %s %s", level ? level : "?", desc ? desc : "?");
        break;
    }
    case RK_ENCRYPTED: {
        const char *ct = report_str(ev, "content_type");
        report_add(&b, "%s", ct ? ct : "encrypted");
        if (json_is_integer(length))
            report_add(&b, " %" JSON_INTEGER_FORMAT " B", json_integer_value(length));
        break;
    }
    case RK_NON_TLS: {
        const char *kind = report_str(ev, "kind");
        const char *preview = report_str(ev, "preview");
        report_add(&b, "not TLS (%s)", kind ? kind : "?");
        if (preview != NULL) {
            report_add(&b, " ");
            report_add_cut(&b, preview, 40);
        }
        break;
    }
    case RK_DATA: {
        const char *text = report_str(ev, "text");
        report_add(&b, "data");
        if (json_is_integer(length))
            report_add(&b, " %" JSON_INTEGER_FORMAT " B", json_integer_value(length));
        if (text != NULL) {
            report_add(&b, " ");
            report_add_cut(&b, text, 40);
        }
        break;
    }
    case RK_FAULT: {
        const char *rule = report_str(ev, "rule");
        const char *fault = report_str(ev, "fault");
        report_add(&b, "fault %s (%s)", rule ? rule : "?", fault ? fault : "?");
        break;
    }
    case RK_FLOW_START:
    case RK_FLOW_END:
    case RK_OTHER:
        report_add(&b, "%s", name ? name : "?");
        if (type != NULL)
            report_add(&b, " %s", type);
        break;
    }
}

/* Where a fault acted, from its record / message / after_bytes fields: " s2c record 1". */
static void
report_fault_where(json_t *ev, struct report_buf *b)
{
    const char *dir = report_str(ev, "dir");
    json_t *v;
    if (dir != NULL && (strcmp(dir, "c2s") == 0 || strcmp(dir, "s2c") == 0))
        report_add(b, " %s", dir);
    if (json_is_integer(v = json_object_get(ev, "record")))
        report_add(b, " record %" JSON_INTEGER_FORMAT, json_integer_value(v));
    if (json_is_string(v = json_object_get(ev, "message"))) {
        report_add(b, " at ");
        report_add_cut(b, json_string_value(v), 64);
    }
    if (json_is_integer(v = json_object_get(ev, "after_bytes")))
        report_add(b, " after %" JSON_INTEGER_FORMAT " bytes", json_integer_value(v));
}

/* "+1.234 ms" since the flow's first event; "?" without a time. */
static void
report_reltime(const struct report_flow *f, json_t *ev, char *buf, size_t len)
{
    int64_t t;
    const char *ts = report_str(ev, "ts");
    if (ts == NULL || f->t0 == INT64_MIN || !tf_report_parse_ts(ts, &t)) {
        snprintf(buf, len, "?");
        return;
    }
    double ms = (double)(t - f->t0) / 1000.0;
    if (ms < 10000.0 && ms > -10000.0)
        snprintf(buf, len, "%+.3f ms", ms);
    else
        snprintf(buf, len, "%+.3f s", ms / 1000.0);
}

/* ------------------------------------------------------------ time */

static bool
report_digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

bool
tf_report_parse_ts(const char *s, int64_t *us)
{
    int y, mo, d, h, mi, sec;
    if (strlen(s) < 20 || !report_digits(s, 4, &y) || s[4] != '-' ||
        !report_digits(s + 5, 2, &mo) || s[7] != '-' || !report_digits(s + 8, 2, &d) ||
        (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || !report_digits(s + 11, 2, &h) ||
        s[13] != ':' || !report_digits(s + 14, 2, &mi) || s[16] != ':' ||
        !report_digits(s + 17, 2, &sec))
        return false;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return false;
    const char *p = s + 19;
    int64_t frac = 0;
    if (*p == '.') {
        int digits = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, digits++)
            if (digits < 6)
                frac = frac * 10 + (*p - '0');
        if (digits == 0)
            return false;
        for (; digits < 6; digits++)
            frac *= 10;
    }
    int offset = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (!report_digits(p + 1, 2, &oh) || p[3] != ':' || !report_digits(p + 4, 2, &om) ||
            oh > 23 || om > 59)
            return false;
        offset = (oh * 60 + om) * 60 * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return false;
    }
    if (*p != '\0')
        return false;
    struct tm tm = { .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d,
                     .tm_hour = h, .tm_min = mi, .tm_sec = sec };
    time_t t = timegm(&tm);
    *us = ((int64_t)t - offset) * 1000000 + frac;
    return true;
}

/* ------------------------------------------------------------ HTML */

void
tf_report_html_escape(FILE *out, const char *s, size_t max)
{
    size_t len = strlen(s);
    size_t n = max ? report_utf8_cut(s, len, max) : len;
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        const char *ent;
        switch (s[i]) {
        case '&': ent = "&amp;"; break;
        case '<': ent = "&lt;"; break;
        case '>': ent = "&gt;"; break;
        case '"': ent = "&quot;"; break;
        case '\'': ent = "&#39;"; break;
        default: continue;
        }
        fwrite(s + run, 1, i - run, out);
        fputs(ent, out);
        run = i + 1;
    }
    fwrite(s + run, 1, n - run, out);
    if (n < len)
        fprintf(out, "… (%zu more bytes)", len - n);
}

#define ESC(out, s) tf_report_html_escape((out), (s), REPORT_FIELD_MAX)

/*
 * The stylesheet and the script.  Both are pinned by their SHA-256 in the
 * page's Content-Security-Policy: nothing else may run or style the page,
 * and nothing may be fetched.
 */
static const char report_css[] =
    ":root{--fg:#1f2937;--mut:#6b7280;--life:#cbd5e1;--hs:#1d4ed8;--ccs:#7c3aed;"
    "--alert:#dc2626;--enc:#9ca3af;--data:#0f766e;--nontls:#c2410c;--fault:#b45309;"
    "--tcol:104px}\n"
    "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:var(--fg);"
    "margin:24px;background:#fff}\n"
    "h1{font-size:22px;margin:0 0 2px}h2{font-size:17px;margin:0 0 4px}\n"
    ".meta{color:var(--mut);margin:0 0 14px}\n"
    ".mono,.t,.arr,.fm,.note,td.mono{font-family:ui-monospace,'DejaVu Sans Mono',Menlo,monospace}\n"
    "table.flows{border-collapse:collapse;width:100%;font-size:12.5px}\n"
    "table.flows th,table.flows td{border-bottom:1px solid #e5e7eb;padding:4px 7px;"
    "text-align:left;vertical-align:top}\n"
    "table.flows th{background:#f3f4f6;position:sticky;top:0}\n"
    "table.flows tr.hide{display:none}\n"
    "table.flows td.sum{min-width:30ch}table.flows td.wrap{overflow-wrap:anywhere;min-width:10ch}\n"
    ".badge{display:inline-block;padding:0 8px;border-radius:9px;font-weight:600;font-size:12px}\n"
    ".o-ok{background:#dcfce7;color:#166534}.o-failed{background:#fee2e2;color:#991b1b}"
    ".o-aborted{background:#ffedd5;color:#9a3412}.o-unknown{background:#e5e7eb;color:#374151}\n"
    ".filter{margin:8px 0}.filter input{width:320px;padding:3px 6px}\n"
    "section.flow{margin:26px 0;border:1px solid #e5e7eb;border-radius:8px;padding:12px 16px}\n"
    "section.flow.o-failed-b{border-left:5px solid #dc2626}"
    "section.flow.o-aborted-b{border-left:5px solid #ea580c}"
    "section.flow.o-ok-b{border-left:5px solid #16a34a}\n"
    ".verdict{margin:2px 0 6px;font-weight:600}\n"
    "dl.facts{display:grid;grid-template-columns:repeat(3,max-content minmax(0,1fr));"
    "gap:1px 12px;margin:4px 0 8px;font-size:12.5px}dl.facts dt{color:var(--mut)}"
    "dl.facts dd{margin:0;overflow-wrap:anywhere}\n"
    ".tools button{font-size:12px;margin-right:6px}\n"
    ".ladder{position:relative;margin-top:8px;min-width:760px}\n"
    ".life{position:absolute;top:0;bottom:0;width:2px;background:var(--life)}\n"
    ".life.c{left:calc(var(--tcol) + (100% - var(--tcol)) * .15 - 1px)}"
    ".life.p{left:calc(var(--tcol) + (100% - var(--tcol)) * .5 - 1px);background:#fcd34d}"
    ".life.s{left:calc(var(--tcol) + (100% - var(--tcol)) * .85 - 1px)}\n"
    ".hdr{display:flex;position:relative;z-index:1}.hdr .lane{height:46px}\n"
    ".hdr .col{position:absolute;top:0;transform:translateX(-50%);text-align:center;"
    "background:#fff;border:1px solid #cbd5e1;border-radius:6px;padding:1px 8px;font-size:12px;"
    "max-width:29%;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}\n"
    ".hdr .col b{display:block;font-size:13px}\n"
    ".col.c{left:15%}.col.p{left:50%;border-color:#f59e0b}.col.s{left:85%}\n"
    "details.ev>summary{display:flex;list-style:none;cursor:pointer}\n"
    "details.ev>summary::-webkit-details-marker{display:none}\n"
    "details.ev>summary:hover{background:rgba(59,130,246,.06)}\n"
    ".t{width:var(--tcol);flex:none;box-sizing:border-box;padding-right:8px;text-align:right;"
    "color:var(--mut);font-size:11.5px;line-height:30px}\n"
    ".lane{flex:1;display:block;position:relative;padding:3px 0 1px}\n"
    ".arr{display:block;position:relative;border-bottom:2px solid currentColor;text-align:center;"
    "font-size:12px;line-height:1.3;padding:0 14px 2px;margin-bottom:7px;overflow-wrap:anywhere;"
    "box-sizing:border-box}\n"
    ".arr.cs{margin-left:15%;width:70%}.arr.cp{margin-left:15%;width:35%}"
    ".arr.ps{margin-left:50%;width:35%}\n"
    ".arr::after{content:'';position:absolute;bottom:-7px;border-top:6px solid transparent;"
    "border-bottom:6px solid transparent}\n"
    ".arr.r::after{right:0;border-left:11px solid currentColor}"
    ".arr.l::after{left:0;border-right:11px solid currentColor}\n"
    ".arr.via::before{content:'';position:absolute;left:calc(50% - 5px);bottom:-6px;width:10px;"
    "height:10px;border-radius:50%;background:#fff;border:2px solid #f59e0b;"
    "box-sizing:border-box}\n"
    ".k-hs .arr{color:var(--hs)}.k-ccs .arr{color:var(--ccs)}"
    ".k-alert .arr{color:var(--alert);font-weight:700;border-bottom-width:3px}"
    ".k-enc .arr{color:var(--enc);border-bottom-style:dashed}"
    ".k-nontls .arr{color:var(--nontls);border-bottom-style:double;border-bottom-width:4px}"
    ".k-data .arr{color:var(--data);border-bottom-style:dotted;border-bottom-width:3px}"
    ".k-other .arr{color:var(--mut)}\n"
    ".arr .lbl{background:rgba(255,255,255,.85);padding:0 3px}\n"
    ".note{display:block;margin:2px 0 4px 15%;width:70%;box-sizing:border-box;text-align:center;"
    "font-size:12px;background:#f1f5f9;border:1px solid #e2e8f0;border-radius:6px;padding:2px 8px;"
    "position:relative;z-index:1}\n"
    ".k-end .note.o-failed{background:#fee2e2;border-color:#fca5a5}"
    ".k-end .note.o-ok{background:#dcfce7;border-color:#86efac}"
    ".k-end .note.o-aborted{background:#ffedd5;border-color:#fdba74}\n"
    ".fm{display:flex;align-items:flex-start;position:relative;margin:3px 0 5px calc(50% - 13px);"
    "max-width:49%;font-size:12px;color:#78350f;z-index:1}\n"
    ".fm .bolt{display:inline-block;width:22px;height:22px;line-height:22px;text-align:center;"
    "flex:none;border-radius:50%;background:var(--fault);color:#fff;font-weight:700;"
    "margin-right:6px;"
    "box-shadow:0 0 0 3px #fde68a}\n"
    ".fm .what{background:#fef3c7;border:1px solid #f59e0b;border-radius:6px;padding:1px 6px}\n"
    ".fields{margin:2px 0 10px var(--tcol);background:#f8fafc;border:1px solid #e2e8f0;"
    "border-radius:6px;padding:6px 8px;position:relative;z-index:2;overflow:auto;max-height:520px;"
    "font-size:12px}\n"
    "table.kv{border-collapse:collapse}table.kv td{padding:1px 6px;vertical-align:top;"
    "border-bottom:1px solid #eef2f7;overflow-wrap:anywhere}\n"
    "table.kv td.k{color:var(--mut);white-space:nowrap}\n"
    "ol.arr-list{margin:0;padding-left:20px}\n"
    ".more{color:var(--mut);font-style:italic;margin:4px 0 4px var(--tcol)}\n";

static const char report_js[] =
    "(function(){'use strict';\n"
    "var q=document.getElementById('q'),o=document.getElementById('o');\n"
    "function filter(){var t=q.value.toLowerCase(),w=o.value;"
    "document.querySelectorAll('table.flows tbody tr').forEach(function(r){"
    "var ok=(!t||r.textContent.toLowerCase().indexOf(t)>=0)&&(!w||r.dataset.outcome===w);"
    "r.classList.toggle('hide',!ok);});}\n"
    "if(q&&o){q.addEventListener('input',filter);o.addEventListener('change',filter);"
    "document.getElementById('fbar').hidden=false;}\n"
    "document.querySelectorAll('section.flow').forEach(function(s){"
    "var bar=s.querySelector('.tools');if(!bar)return;"
    "[['expand all',true],['collapse all',false]].forEach(function(a){"
    "var b=document.createElement('button');b.type='button';b.textContent=a[0];"
    "b.addEventListener('click',function(){s.querySelectorAll('details.ev').forEach("
    "function(d){d.open=a[1];});});bar.appendChild(b);});});\n"
    "document.body.dataset.ready='1';\n"
    "})();\n";

/* "sha256-BASE64" of s, for a CSP source list. */
static void
report_csp_hash(const char *s, char *buf, size_t len)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    unsigned char b64[4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1];
    if (!EVP_Digest(s, strlen(s), md, &mdlen, EVP_sha256(), NULL)) {
        snprintf(buf, len, "'none'");
        return;
    }
    EVP_EncodeBlock(b64, md, (int)mdlen);
    snprintf(buf, len, "'sha256-%s'", (const char *)b64);
}

static const char *
report_outcome_class(const char *outcome)
{
    if (outcome != NULL) {
        if (strcmp(outcome, "ok") == 0)
            return "o-ok";
        if (strcmp(outcome, "failed") == 0)
            return "o-failed";
        if (strcmp(outcome, "aborted") == 0)
            return "o-aborted";
    }
    return "o-unknown";
}

static void report_html_value(FILE *out, json_t *v, int depth);

static bool
report_html_is_scalar(json_t *v)
{
    return !json_is_object(v) && !json_is_array(v);
}

static void
report_html_scalar(FILE *out, json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_STRING:
        ESC(out, json_string_value(v));
        break;
    case JSON_INTEGER:
        fprintf(out, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        break;
    case JSON_REAL:
        fprintf(out, "%g", json_real_value(v));
        break;
    case JSON_TRUE:
        fputs("yes", out);
        break;
    case JSON_FALSE:
        fputs("no", out);
        break;
    default:
        fputs("null", out);
        break;
    }
}

static void
report_html_object(FILE *out, json_t *obj, int depth, bool skip_common)
{
    const char *key;
    json_t *val;
    fputs("<table class=\"kv\">", out);
    json_object_foreach(obj, key, val)
    {
        if (skip_common && (strcmp(key, "flow") == 0 || strcmp(key, "event") == 0))
            continue;
        fputs("<tr><td class=\"k\">", out);
        ESC(out, key);
        fputs("</td><td>", out);
        report_html_value(out, val, depth + 1);
        fputs("</td></tr>", out);
    }
    fputs("</table>", out);
}

/* A decoded field: scalars inline, lists of scalars joined, the rest as nested tables. */
static void
report_html_value(FILE *out, json_t *v, int depth)
{
    if (report_html_is_scalar(v)) {
        report_html_scalar(out, v);
        return;
    }
    if (depth > REPORT_DEPTH_MAX) {
        fputs("…", out);
        return;
    }
    if (json_is_object(v)) {
        report_html_object(out, v, depth, false);
        return;
    }
    size_t i, n = json_array_size(v);
    json_t *item;
    bool flat = true;
    json_array_foreach(v, i, item)
        flat = flat && report_html_is_scalar(item);
    if (flat) {
        fputs("<span class=\"mono\">", out);
        json_array_foreach(v, i, item)
        {
            if (i >= 256) {
                fprintf(out, ", … (%zu more)", n - i);
                break;
            }
            if (i)
                fputs(", ", out);
            report_html_scalar(out, item);
        }
        fputs("</span>", out);
        if (n == 0)
            fputs("(none)", out);
        return;
    }
    fputs("<ol class=\"arr-list\">", out);
    json_array_foreach(v, i, item)
    {
        if (i >= 64) {
            fprintf(out, "<li>… (%zu more)</li>", n - i);
            break;
        }
        fputs("<li>", out);
        report_html_value(out, item, depth + 1);
        fputs("</li>", out);
    }
    fputs("</ol>", out);
}

/* The hover text of an event: its label, then "key: value" lines (plain text). */
static void
report_title(json_t *ev, const char *label, char *buf, size_t len)
{
    struct report_buf b = { buf, len, 0 };
    const char *key;
    json_t *val;
    buf[0] = '\0';
    report_add(&b, "%s", label);
    json_object_foreach(ev, key, val)
    {
        if (strcmp(key, "flow") == 0 || strcmp(key, "event") == 0 || strcmp(key, "random") == 0)
            continue;
        report_add(&b, "\n");
        report_add_cut(&b, key, 40);
        report_add(&b, ": ");
        if (json_is_string(val)) {
            report_add_cut(&b, json_string_value(val), 120);
        } else {
            char *s = json_dumps(val, JSON_COMPACT | JSON_ENCODE_ANY);
            if (s != NULL)
                report_add_cut(&b, s, 120);
            free(s);
        }
    }
}

/* s escaped, with a line-break opportunity after each '_' (cipher suite names). */
static void
report_html_escape_wbr(FILE *out, const char *s)
{
    char part[REPORT_STR_MAX + 1];
    while (*s) {
        size_t n = strcspn(s, "_");
        if (n > REPORT_STR_MAX)
            n = REPORT_STR_MAX;
        memcpy(part, s, n);
        part[n] = '\0';
        ESC(out, part);
        s += n;
        if (*s == '_') {
            fputs("_<wbr>", out);
            s++;
        }
    }
}

static void
report_html_fact(FILE *out, const char *name, const char *value)
{
    if (value == NULL)
        return;
    fprintf(out, "<dt>%s</dt><dd>", name);
    ESC(out, value);
    fputs("</dd>", out);
}

static void
report_html_duration(const struct report_flow *f, char *buf, size_t len)
{
    if (f->duration_ms >= 0)
        snprintf(buf, len, "%lld ms", f->duration_ms);
    else if (f->t0 != INT64_MIN && f->tlast != INT64_MIN)
        snprintf(buf, len, "%.0f ms (seen)", (double)(f->tlast - f->t0) / 1000.0);
    else
        snprintf(buf, len, "?");
}

static void
report_html_summary_table(struct report *r, FILE *out)
{
    fputs("<p class=\"filter\" id=\"fbar\" hidden>Filter: <input id=\"q\" type=\"search\" "
          "placeholder=\"client, SNI, summary, fault…\"> <select id=\"o\">"
          "<option value=\"\">any outcome</option><option value=\"ok\">ok</option>"
          "<option value=\"failed\">failed</option><option value=\"aborted\">aborted</option>"
          "<option value=\"unknown\">unknown</option></select></p>\n",
          out);
    fputs("<table class=\"flows\"><thead><tr><th>flow</th><th>client</th><th>upstream</th>"
          "<th>SNI</th><th>version</th><th>suite</th><th>duration</th><th>outcome</th>"
          "<th>summary</th><th>faults</th><th>events</th></tr></thead><tbody>\n",
          out);
    for (size_t i = 0; i < r->nflows; i++) {
        struct report_flow *f = &r->flows[i];
        char label[48], anchor[64], dur[48];
        const char *ocls = report_outcome_class(f->s[RF_OUTCOME]);
        report_flow_label(f, label, sizeof(label));
        report_flow_anchor(f, anchor, sizeof(anchor));
        report_html_duration(f, dur, sizeof(dur));
        fprintf(out, "<tr data-flow=\"%s\" data-outcome=\"%s\"><td class=\"mono\">"
                     "<a href=\"#%s\">%s</a></td>",
                label, ocls + 2, anchor, label);
        const enum report_field cols[] = { RF_CLIENT, RF_UPSTREAM, RF_SNI, RF_VERSION, RF_SUITE };
        for (size_t c = 0; c < sizeof(cols) / sizeof(cols[0]); c++) {
            fputs(c < 2 ? "<td class=\"mono\">" : c == 3 ? "<td>" : "<td class=\"wrap\">", out);
            if (cols[c] == RF_SUITE && f->s[RF_SUITE] != NULL)
                report_html_escape_wbr(out, f->s[RF_SUITE]);
            else
                ESC(out, f->s[cols[c]] ? f->s[cols[c]] : "");
            fputs("</td>", out);
        }
        fprintf(out, "<td>%s</td><td><span class=\"badge %s\">", dur, ocls);
        ESC(out, f->s[RF_OUTCOME] ? f->s[RF_OUTCOME] : f->ended ? "?" : "no flow_end");
        fputs("</span></td><td class=\"sum\">", out);
        ESC(out, f->s[RF_SUMMARY] ? f->s[RF_SUMMARY] : "");
        fputs("</td><td class=\"wrap\">", out);
        ESC(out, f->s[RF_FAULTS] ? f->s[RF_FAULTS] : "");
        fprintf(out, "</td><td>%zu</td></tr>\n", f->n_events);
    }
    fputs("</tbody></table>\n", out);
}

static void
report_html_flow_facts(struct report_flow *f, FILE *out)
{
    char buf[256];
    fputs("<dl class=\"facts\">", out);
    report_html_fact(out, "client", f->s[RF_CLIENT]);
    report_html_fact(out, "upstream", f->s[RF_UPSTREAM]);
    report_html_fact(out, "listener", f->s[RF_LISTENER]);
    report_html_fact(out, "mode", f->s[RF_MODE]);
    report_html_fact(out, "SNI", f->s[RF_SNI]);
    report_html_fact(out, "version", f->s[RF_VERSION]);
    report_html_fact(out, "cipher suite", f->s[RF_SUITE]);
    report_html_duration(f, buf, sizeof(buf));
    report_html_fact(out, "duration", buf);
    if (f->bytes_c2s >= 0 || f->bytes_s2c >= 0) {
        snprintf(buf, sizeof(buf), "%lld client→server, %lld server→client", f->bytes_c2s,
                 f->bytes_s2c);
        report_html_fact(out, "bytes", buf);
    }
    report_html_fact(out, "handshake", f->s[RF_HANDSHAKE]);
    if (f->s[RF_CLOSE] != NULL || f->s[RF_CLOSED_BY] != NULL) {
        snprintf(buf, sizeof(buf), "%.100s by %.100s", f->s[RF_CLOSE] ? f->s[RF_CLOSE] : "?",
                 f->s[RF_CLOSED_BY] ? f->s[RF_CLOSED_BY] : "?");
        report_html_fact(out, "close", buf);
    }
    report_html_fact(out, "error", f->s[RF_ERROR]);
    report_html_fact(out, "stage", f->s[RF_STAGE]);
    report_html_fact(out, "cause", f->s[RF_CAUSE]);
    report_html_fact(out, "who fixes", f->s[RF_WHO_FIXES]);
    report_html_fact(out, "faults", f->s[RF_FAULTS]);
    if (f->evidence != NULL) {
        fputs("<dt>evidence</dt><dd>", out);
        report_html_value(out, f->evidence, 1);
        fputs("</dd>", out);
    }
    if (f->mitm != NULL) {
        fputs("<dt>mitm</dt><dd>", out);
        report_html_value(out, f->mitm, 1);
        fputs("</dd>", out);
    }
    fputs("</dl>\n", out);
}

static void
report_html_ladder_header(struct report_flow *f, FILE *out)
{
    const char *mode = f->s[RF_MODE];
    fputs("<div class=\"hdr\"><span class=\"t\"></span><span class=\"lane\">", out);
    fputs("<span class=\"col c\"><b>client</b>", out);
    ESC(out, f->s[RF_CLIENT] ? f->s[RF_CLIENT] : "");
    fputs("</span><span class=\"col p\"><b>tlsfault</b>", out);
    ESC(out, mode ? mode : "");
    fputs("</span><span class=\"col s\"><b>server</b>", out);
    ESC(out, f->s[RF_UPSTREAM] ? f->s[RF_UPSTREAM] : "");
    fputs("</span></span></div>\n", out);
}

/* One event of the ladder: an arrow, a note or a fault marker, with its fields. */
static void
report_html_event(struct report_flow *f, json_t *ev, uint64_t line, size_t seq, FILE *out)
{
    const char *name = report_str(ev, "event");
    const char *cls;
    enum report_kind kind = report_kind_of(name, &cls);
    enum report_col from, to;
    bool arrow = kind != RK_FAULT && report_arrow_ends(ev, &from, &to);
    char label[512], title[REPORT_TITLE_MAX], when[48];

    tf_report_label(ev, label, sizeof(label));
    report_reltime(f, ev, when, sizeof(when));
    report_title(ev, label, title, sizeof(title));

    fprintf(out, "<details class=\"ev %s\" data-seq=\"%zu\" data-line=\"%llu\" data-ev=\"", cls,
            seq, (unsigned long long)line);
    ESC(out, name);
    fputs("\"", out);
    if (arrow) {
        fprintf(out, " data-arrow=\"%s-%s\"", report_col_names[from], report_col_names[to]);
        const char *leg = report_str(ev, "leg");
        if (leg != NULL && (strcmp(leg, "client") == 0 || strcmp(leg, "upstream") == 0))
            fprintf(out, " data-leg=\"%s\"", leg);
    }
    fputs("><summary title=\"", out);
    tf_report_html_escape(out, title, 0);
    fprintf(out, "\"><span class=\"t\">%s</span><span class=\"lane\">", when);
    if (arrow) {
        int lo = from < to ? (int)from : (int)to, hi = from < to ? (int)to : (int)from;
        const char *span = lo == COL_CLIENT ? (hi == COL_SERVER ? "cs" : "cp") : "ps";
        fprintf(out, "<span class=\"arr %s %s%s\"><span class=\"lbl\">", span,
                to > from ? "r" : "l", lo == COL_CLIENT && hi == COL_SERVER ? " via" : "");
        ESC(out, label);
        fputs("</span></span>", out);
    } else if (kind == RK_FAULT) {
        char what[1024];
        struct report_buf b = { what, sizeof(what), 0 };
        what[0] = '\0';
        report_add(&b, "%s", label);
        report_fault_where(ev, &b);
        const char *action = report_str(ev, "action");
        fputs("<span class=\"fm fault-marker\"><span class=\"bolt\">⚡</span><span class=\"what\">",
              out);
        ESC(out, what);
        if (action != NULL) {
            fputs(": ", out);
            ESC(out, action);
        }
        fputs("</span></span>", out);
    } else if (kind == RK_FLOW_START) {
        fputs("<span class=\"note\">connection from ", out);
        ESC(out, report_str(ev, "client") ? report_str(ev, "client") : "?");
        fputs(" accepted; upstream ", out);
        ESC(out, report_str(ev, "upstream") ? report_str(ev, "upstream") : "?");
        fputs("</span>", out);
    } else if (kind == RK_FLOW_END) {
        const char *outcome = report_str(ev, "outcome");
        const char *summary = report_str(ev, "summary");
        json_t *verdict = json_object_get(ev, "verdict");
        if (report_str(verdict, "outcome") != NULL)
            outcome = report_str(verdict, "outcome");
        if (report_str(verdict, "summary") != NULL)
            summary = report_str(verdict, "summary");
        fprintf(out, "<span class=\"note %s\">flow_end · ", report_outcome_class(outcome));
        ESC(out, outcome ? outcome : "?");
        if (summary != NULL) {
            fputs(" · ", out);
            ESC(out, summary);
        }
        fputs("</span>", out);
    } else {
        fputs("<span class=\"note\">", out);
        ESC(out, label);
        fputs("</span>", out);
    }
    fprintf(out, "</span></summary><div class=\"fields\"><div class=\"mono\">line %llu</div>",
            (unsigned long long)line);
    report_html_object(out, ev, 0, true);
    fputs("</div></details>\n", out);
}

static void
report_html_flow(struct report *r, struct report_flow *f, FILE *out)
{
    char label[48], anchor[64];
    const char *ocls = report_outcome_class(f->s[RF_OUTCOME]);
    report_flow_label(f, label, sizeof(label));
    report_flow_anchor(f, anchor, sizeof(anchor));
    fprintf(out, "<section class=\"flow %s-b\" id=\"%s\" data-flow=\"%s\" "
                 "data-events=\"%zu\" data-drawn=\"%zu\" data-outcome=\"%s\">\n",
            ocls, anchor, label, f->n_events, f->nrefs, ocls + 2);
    fprintf(out, "<h2>Flow %s <span class=\"badge %s\">", label, ocls);
    ESC(out, f->s[RF_OUTCOME] ? f->s[RF_OUTCOME] : "no verdict");
    fputs("</span></h2>\n<p class=\"verdict\">", out);
    ESC(out, f->s[RF_SUMMARY] ? f->s[RF_SUMMARY]
                              : f->ended ? "" : "the log has no flow_end for this flow");
    fputs("</p>\n", out);
    report_html_flow_facts(f, out);
    fputs("<div class=\"tools\"></div>\n<div class=\"ladder\"><span class=\"life c\"></span>"
          "<span class=\"life p\"></span><span class=\"life s\"></span>\n",
          out);
    report_html_ladder_header(f, out);
    for (size_t i = 0; i < f->nrefs; i++) {
        json_t *ev = report_load(r, &f->refs[i]);
        if (ev == NULL) {
            fprintf(out, "<p class=\"more\">line %llu could not be read again (the log "
                         "changed while the report was written)</p>\n",
                    (unsigned long long)f->refs[i].line);
            continue;
        }
        report_html_event(f, ev, f->refs[i].line, i + 1, out);
        json_decref(ev);
    }
    fputs("</div>\n", out);
    if (f->n_hidden)
        fprintf(out, "<p class=\"more\">… %zu more events of this flow not drawn "
                     "(--max-events %zu)</p>\n",
                f->n_hidden, r->opt.max_events);
    fputs("</section>\n", out);
}

static void
report_html(struct report *r, FILE *out)
{
    char css_hash[128], js_hash[128];
    report_csp_hash(report_css, css_hash, sizeof(css_hash));
    report_csp_hash(report_js, js_hash, sizeof(js_hash));
    fprintf(out, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
                 "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
                 "script-src %s; style-src %s; img-src data:; base-uri 'none'; "
                 "form-action 'none'\">\n"
                 "<meta name=\"viewport\" content=\"width=device-width\">\n"
                 "<title>tlsfault report: ",
            js_hash, css_hash);
    ESC(out, r->name);
    fprintf(out, "</title>\n<style>%s</style>\n</head>\n<body>\n", report_css);
    fputs("<h1>tlsfault report</h1>\n<p class=\"meta\">", out);
    ESC(out, r->name);
    fprintf(out, " · %zu flow%s%s · %llu events and %llu bad line%s in the log", r->nflows,
            r->nflows == 1 ? "" : "s", r->opt.filter ? " (--flow)" : "",
            (unsigned long long)r->events, (unsigned long long)r->bad, r->bad == 1 ? "" : "s");
    if (r->hidden_flows)
        fprintf(out, " · %llu more flows not drawn (--max-flows %zu)",
                (unsigned long long)r->hidden_flows, r->opt.max_flows);
    fputs(" · hover an arrow for its fields, click it to expand</p>\n", out);
    report_html_summary_table(r, out);
    for (size_t i = 0; i < r->nflows; i++)
        report_html_flow(r, &r->flows[i], out);
    fprintf(out, "<script>%s</script>\n</body></html>\n", report_js);
}

/* ------------------------------------------------------------ text */

struct report_text_style {
    bool color;
};

#define ANSI(st, code) ((st)->color ? "\033[" code "m" : "")

/*
 * Writes s with control characters escaped (a log can carry escape
 * sequences meant for the terminal reading it), at most max code points.
 * Returns the code points written.
 */
static size_t
report_text_safe(FILE *out, const char *s, size_t max)
{
    size_t cols = 0;
    const unsigned char *p = (const unsigned char *)s;
    while (*p && cols < max) {
        if (*p < 0x20 || *p == 0x7f) {
            cols += (size_t)fprintf(out, "\\x%02x", *p);
            p++;
        } else if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) {
            cols += (size_t)fprintf(out, "\\u%04x", p[1]);   /* C1 controls */
            p += 2;
        } else {
            fputc(*p, out);
            if ((*p & 0xC0) != 0x80)
                cols++;
            p++;
            while ((*p & 0xC0) == 0x80) {
                fputc(*p, out);
                p++;
            }
        }
    }
    if (*p) {
        fputs("…", out);
        cols++;
    }
    return cols;
}

/* Code points of s as report_text_safe() would write it, uncapped. */
static size_t
report_text_width(const char *s)
{
    size_t cols = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f)
            cols += 4;
        else if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f)
            cols += 6, p++;
        else if ((*p & 0xC0) != 0x80)
            cols++;
    }
    return cols;
}

static void
report_text_repeat(FILE *out, const char *glyph, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fputs(glyph, out);
}

static void
report_text_arrow(FILE *out, const struct report_text_style *st, enum report_col from,
                  enum report_col to, const char *label, const char *line, const char *color)
{
    enum report_col lo = from < to ? from : to, hi = from < to ? to : from;
    bool right = to > from;
    size_t room = REPORT_TEXT_ARROW - 6;
    size_t w = report_text_width(label);
    bool fits = w <= room;
    if (!fits)
        w = room;
    fprintf(out, "%-8s ", report_col_names[lo]);
    fputs(color, out);
    fputs(right ? "" : "◀", out);
    report_text_repeat(out, line, right ? 3 : 2);
    fputc(' ', out);
    report_text_safe(out, label, fits ? room : room - 1);
    fputc(' ', out);
    report_text_repeat(out, line, REPORT_TEXT_ARROW - 6 - w + (right ? 0 : 1));
    fputs(right ? "▶" : "", out);
    fputs(ANSI(st, "0"), out);
    fprintf(out, " %s", report_col_names[hi]);
}

static void
report_text_event(struct report_flow *f, json_t *ev, const struct report_text_style *st, FILE *out)
{
    const char *name = report_str(ev, "event");
    const char *cls;
    enum report_kind kind = report_kind_of(name, &cls);
    enum report_col from, to;
    char label[512], when[48];

    tf_report_label(ev, label, sizeof(label));
    report_reltime(f, ev, when, sizeof(when));
    if (kind == RK_FAULT) {
        char what[512];
        struct report_buf b = { what, sizeof(what), 0 };
        what[0] = '\0';
        report_add(&b, "%s", label);
        report_fault_where(ev, &b);
        const char *action = report_str(ev, "action");
        /* "⚡" takes two columns, as "!!" and "  " do in the other lines. */
        fprintf(out, "%s⚡ %13s  tlsfault %s⚡ ", ANSI(st, "33"), when, ANSI(st, "1"));
        report_text_safe(out, what, 200);
        if (action != NULL) {
            fputs(": ", out);
            report_text_safe(out, action, 300);
        }
        fprintf(out, "%s\n", ANSI(st, "0"));
        return;
    }
    if (kind == RK_FLOW_START)
        return;                 /* the flow's header says it */
    if (kind == RK_FLOW_END) {
        const char *close = report_str(ev, "close"), *by = report_str(ev, "closed_by");
        fprintf(out, "   %13s  end: ", when);
        report_text_safe(out, close ? close : "?", 40);
        fputs(" by ", out);
        report_text_safe(out, by ? by : "?", 40);
        fputc('\n', out);
        return;
    }
    if (kind == RK_OTHER || !report_arrow_ends(ev, &from, &to)) {
        fprintf(out, "   %13s  ", when);
        report_text_safe(out, label, 120);
        fputc('\n', out);
        return;
    }
    const char *glyph = "─", *color = "";
    switch (kind) {
    case RK_ALERT: color = ANSI(st, "1;31"); glyph = "━"; break;
    case RK_ENCRYPTED: color = ANSI(st, "2"); glyph = "┄"; break;
    case RK_NON_TLS: color = ANSI(st, "35"); glyph = "═"; break;
    case RK_DATA: color = ANSI(st, "36"); glyph = "┈"; break;
    case RK_CCS: color = ANSI(st, "34"); break;
    default: break;
    }
    fprintf(out, "%s %13s  ", kind == RK_ALERT ? "!!" : "  ", when);
    report_text_arrow(out, st, from, to, label, glyph, color);
    if (kind == RK_ALERT)
        fprintf(out, "  %sALERT%s", ANSI(st, "1;31"), ANSI(st, "0"));
    fputc('\n', out);
}

static void
report_text_flow(struct report *r, struct report_flow *f, const struct report_text_style *st,
                 FILE *out)
{
    char label[48], dur[48];
    report_flow_label(f, label, sizeof(label));
    report_html_duration(f, dur, sizeof(dur));
    fprintf(out, "%sflow %s%s  ", ANSI(st, "1"), label, ANSI(st, "0"));
    report_text_safe(out, f->s[RF_CLIENT] ? f->s[RF_CLIENT] : "?", 64);
    fputs(" → ", out);
    report_text_safe(out, f->s[RF_UPSTREAM] ? f->s[RF_UPSTREAM] : "?", 64);
    if (f->s[RF_SNI] != NULL) {
        fputs("  SNI ", out);
        report_text_safe(out, f->s[RF_SNI], 80);
    }
    if (f->s[RF_MODE] != NULL) {
        fputs("  ", out);
        report_text_safe(out, f->s[RF_MODE], 20);
    }
    fputs("\n     ", out);
    if (f->s[RF_VERSION] != NULL) {
        fputs(" ", out);
        report_text_safe(out, f->s[RF_VERSION], 20);
    }
    if (f->s[RF_SUITE] != NULL) {
        fputs(" ", out);
        report_text_safe(out, f->s[RF_SUITE], 60);
    }
    fprintf(out, "  %s", dur);
    if (f->bytes_c2s >= 0)
        fprintf(out, "  %lld B →  %lld B ←", f->bytes_c2s, f->bytes_s2c);
    fprintf(out, "  %zu events\n", f->n_events);
    for (size_t i = 0; i < f->nrefs; i++) {
        json_t *ev = report_load(r, &f->refs[i]);
        if (ev == NULL) {
            fprintf(out, "   (line %llu could not be read again)\n",
                    (unsigned long long)f->refs[i].line);
            continue;
        }
        report_text_event(f, ev, st, out);
        json_decref(ev);
    }
    if (f->n_hidden)
        fprintf(out, "   … %zu more events not shown (--max-events %zu)\n", f->n_hidden,
                r->opt.max_events);
    const char *outcome = f->s[RF_OUTCOME];
    const char *color = outcome == NULL ? "" : strcmp(outcome, "ok") == 0 ? ANSI(st, "32")
                                                                           : ANSI(st, "1;31");
    fprintf(out, "  %sverdict: ", color);
    report_text_safe(out, outcome ? outcome : f->ended ? "?" : "no flow_end in the log", 40);
    if (f->s[RF_SUMMARY] != NULL) {
        fputs(": ", out);
        report_text_safe(out, f->s[RF_SUMMARY], 400);
    }
    fprintf(out, "%s\n", ANSI(st, "0"));
    const struct {
        const char *name;
        enum report_field k;
    } more[] = { { "stage", RF_STAGE }, { "cause", RF_CAUSE }, { "who fixes", RF_WHO_FIXES },
                 { "faults", RF_FAULTS } };
    for (size_t i = 0; i < sizeof(more) / sizeof(more[0]); i++) {
        if (f->s[more[i].k] == NULL)
            continue;
        fprintf(out, "  %s: ", more[i].name);
        report_text_safe(out, f->s[more[i].k], 400);
        fputc('\n', out);
    }
    fputc('\n', out);
}

static void
report_text(struct report *r, FILE *out, bool color)
{
    struct report_text_style st = { .color = color };
    for (size_t i = 0; i < r->nflows; i++)
        report_text_flow(r, &r->flows[i], &st, out);
    fprintf(out, "%zu flow%s; %llu events, %llu bad line%s in the log", r->nflows,
            r->nflows == 1 ? "" : "s", (unsigned long long)r->events,
            (unsigned long long)r->bad, r->bad == 1 ? "" : "s");
    if (r->hidden_flows)
        fprintf(out, ", %llu more flows not shown (--max-flows %zu)",
                (unsigned long long)r->hidden_flows, r->opt.max_flows);
    fputc('\n', out);
}

/* ------------------------------------------------------------ command line */

static bool
report_parse_size(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end != '\0' || s[0] == '-' || v > SIZE_MAX / 64)
        return false;
    *out = (size_t)v;
    return true;
}

static bool
report_parse_flow(const char *s, struct report_opts *o)
{
    char *end;
    errno = 0;
    if (s[0] < '0' || s[0] > '9')
        return false;
    unsigned long long id = strtoull(s, &end, 10);
    if (errno)
        return false;
    o->filter = true;
    o->filter_id = id;
    o->filter_instance = 0;
    if (*end == '#') {
        const char *n = end + 1;
        if (*n < '1' || *n > '9')
            return false;
        unsigned long inst = strtoul(n, &end, 10);
        if (errno || inst > UINT_MAX)
            return false;
        o->filter_instance = (unsigned)inst;
    }
    return *end == '\0';
}

/* The value of an option: "--opt=V" or the next argument. NULL if missing. */
static const char *
report_optarg(int argc, char **argv, int *i, const char *longname)
{
    const char *a = argv[*i];
    size_t n = strlen(longname);
    if (strncmp(a, longname, n) == 0 && a[n] == '=')
        return a + n + 1;
    if (*i + 1 >= argc)
        return NULL;
    return argv[++*i];
}

static bool
report_is_opt(const char *a, const char *longname)
{
    size_t n = strlen(longname);
    return strncmp(a, longname, n) == 0 && (a[n] == '\0' || a[n] == '=');
}

static int
report_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int
report_usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("tlsfault report: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n%s(tlsfault report --help tells more)\n", REPORT_SYNOPSIS);
    return 2;
}

/* Copies a stream that cannot seek to a temporary file the second pass can seek in. */
static FILE *
report_spool(FILE *in)
{
    FILE *tmp = tmpfile();
    if (tmp == NULL)
        return NULL;
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), in)) > 0)
        if (fwrite(chunk, 1, n, tmp) != n) {
            fclose(tmp);
            return NULL;
        }
    if (ferror(in) || fflush(tmp) != 0 || fseeko(tmp, 0, SEEK_SET) != 0) {
        fclose(tmp);
        return NULL;
    }
    return tmp;
}

static int
report_run(struct report *r)
{
    const struct report_opts *o = &r->opt;
    int rc = 0;
    FILE *out = NULL;
    bool is_stdin = strcmp(o->input, "-") == 0;
    FILE *src = is_stdin ? stdin : fopen(o->input, "rb");
    struct stat st;

    r->name = is_stdin ? "(stdin)" : o->input;
    if (src == NULL) {
        fprintf(stderr, "tlsfault report: %s: %s\n", o->input, strerror(errno));
        return 1;
    }
    if (fstat(fileno(src), &st) != 0 || !S_ISREG(st.st_mode)) {
        r->in = report_spool(src);
        if (!is_stdin)
            fclose(src);
        if (r->in == NULL) {
            fprintf(stderr, "tlsfault report: %s: cannot copy to a temporary file: %s\n",
                    r->name, strerror(errno));
            return 1;
        }
    } else {
        r->in = src;
    }
    r->buf = malloc(REPORT_LINE_MAX + 1);
    if (r->buf == NULL) {
        fprintf(stderr, "tlsfault report: out of memory\n");
        return 1;
    }
    report_index(r);
    if (ferror(r->in)) {
        fprintf(stderr, "tlsfault report: %s: read error: %s\n", r->name, strerror(errno));
        return 1;
    }
    if (r->bad > REPORT_BAD_SHOWN)
        fprintf(stderr, "tlsfault report: %s: ... and %llu more bad lines\n", r->name,
                (unsigned long long)(r->bad - REPORT_BAD_SHOWN));
    if (r->bad)
        fprintf(stderr, "tlsfault report: %s: %llu of %llu lines were not events and were "
                        "skipped\n",
                r->name, (unsigned long long)r->bad, (unsigned long long)r->lines);
    if (r->events == 0 && r->bad > 0) {
        fprintf(stderr, "tlsfault report: %s: no events in it: is it a --json event log?\n",
                r->name);
        return 1;
    }
    if (o->filter && r->nflows == 0) {
        fprintf(stderr, "tlsfault report: %s: no flow %llu", r->name,
                (unsigned long long)o->filter_id);
        if (o->filter_instance)
            fprintf(stderr, "#%u", o->filter_instance);
        fputs(" in the log\n", stderr);
        return 1;
    }

    out = o->output ? fopen(o->output, "w") : stdout;
    if (out == NULL) {
        fprintf(stderr, "tlsfault report: %s: %s\n", o->output, strerror(errno));
        return 1;
    }
    if (o->text) {
        const char *nc = getenv("NO_COLOR");
        bool color = o->output == NULL && isatty(fileno(stdout)) && (nc == NULL || !nc[0]);
        report_text(r, out, color);
    } else {
        report_html(r, out);
    }
    if (fflush(out) != 0 || ferror(out)) {
        fprintf(stderr, "tlsfault report: %s: write error: %s\n",
                o->output ? o->output : "(stdout)", strerror(errno));
        rc = 1;
    }
    if (o->output && fclose(out) != 0 && rc == 0) {
        fprintf(stderr, "tlsfault report: %s: %s\n", o->output, strerror(errno));
        rc = 1;
    }
    if (rc == 0 && o->output)
        fprintf(stderr, "tlsfault report: wrote %s (%zu flows, %llu events)\n", o->output,
                r->nflows, (unsigned long long)r->events);
    return rc;
}

int
tf_report_main(int argc, char **argv)
{
    struct report r;
    memset(&r, 0, sizeof(r));
    r.opt.max_flows = REPORT_MAX_FLOWS;
    r.opt.max_events = REPORT_MAX_EVENTS;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(report_usage, stdout);
            return 0;
        } else if (strcmp(a, "--text") == 0) {
            r.opt.text = true;
        } else if (strcmp(a, "--html") == 0) {
            r.opt.text = false;
        } else if (strcmp(a, "-o") == 0 || report_is_opt(a, "--output")) {
            if ((v = report_optarg(argc, argv, &i, "--output")) == NULL || v[0] == '\0')
                return report_usage_error("%s needs a file name", a);
            r.opt.output = strcmp(v, "-") == 0 ? NULL : v;
        } else if (report_is_opt(a, "--flow")) {
            if ((v = report_optarg(argc, argv, &i, "--flow")) == NULL)
                return report_usage_error("%s needs a flow id", a);
            if (!report_parse_flow(v, &r.opt))
                return report_usage_error("--flow \"%s\": not a flow id (ID or ID#N)", v);
        } else if (report_is_opt(a, "--max-flows") || report_is_opt(a, "--max-events")) {
            bool flows = report_is_opt(a, "--max-flows");
            v = report_optarg(argc, argv, &i, flows ? "--max-flows" : "--max-events");
            if (v == NULL || !report_parse_size(v, flows ? &r.opt.max_flows : &r.opt.max_events))
                return report_usage_error("%s needs a count (0 for no limit)", a);
        } else if (a[0] == '-' && a[1] != '\0') {
            return report_usage_error("unknown option \"%s\"", a);
        } else if (r.opt.input != NULL) {
            return report_usage_error("one event log at a time (\"%s\")", a);
        } else {
            r.opt.input = a;
        }
    }
    if (r.opt.input == NULL)
        return report_usage_error("%s", "no event log given");

    int rc = report_run(&r);
    if (r.in != NULL && r.in != stdin)
        fclose(r.in);
    for (size_t i = 0; i < r.nflows; i++)
        report_flow_free(&r.flows[i]);
    free(r.flows);
    free(r.slots);
    free(r.buf);
    return rc;
}
