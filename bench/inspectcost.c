/*
 * inspectcost — what logging one connection costs tlsfault, without sockets.
 *
 *   inspectcost [-n CONNS] [-o JSONFILE] [-s STAGE] [-k] CAPTURE SCHEDULE
 *
 * Replays a recorded handshake (tests/data/CAPTURE.c2s.bin and .s2c.bin)
 * CONNS times through the inspector the way a passthrough flow does: its
 * events rendered as JSON Lines (to /dev/null unless -o), then flow_end's
 * summary, facts, verdict and line.  That is a short connection, which
 * ends before its worker's sweep packs the verdict's lists; -k models one
 * that stays: the lists packed once the handshake is over.  SCHEDULE says whose records come when, as in
 * tests/unit/test_inspect.c ("C1 S6 C2": the client's first record, then
 * six of the server's, then two of the client's; the rest of both follows).
 * STAGE stops earlier: "decode" (events built and dropped), "events"
 * (rendered too), "all" (default: also the flow_end work).
 *
 * It prints microseconds per connection.  On a shared machine time is
 * noisy; instruction counts are not:
 *   valgrind --tool=callgrind --callgrind-out-file=/dev/null bench/out/inspectcost ...
 * prints "Collected : N" (divide by CONNS; the set-up is a few million).
 * (-n 500 and -n 1500, then the difference over 1000.)  docs/benchmark.md tells
 * what the figures were.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tlsfault/events.h"
#include "tlsfault/inspect.h"
#include "tlsfault/jsonalloc.h"
#include "tlsfault/verdict.h"

enum stage { STAGE_DECODE, STAGE_EVENTS, STAGE_ALL };

struct stream {
    uint8_t *p;
    size_t len;
    size_t *rec; /* record boundaries: rec[i] .. rec[i + 1] */
    size_t nrec;
};

struct run {
    struct tf_events *events;
    enum stage stage;
    uint64_t flow;
};

static void
die(const char *what)
{
    fprintf(stderr, "inspectcost: %s\n", what);
    exit(2);
}

static void
stream_load(struct stream *s, const char *capture, const char *dir)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s.%s.bin", capture, dir);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "inspectcost: cannot open %s\n", path);
        exit(2);
    }
    size_t cap = 1 << 16;
    s->p = malloc(cap);
    s->len = 0;
    size_t n;
    while (s->p != NULL && (n = fread(s->p + s->len, 1, cap - s->len, f)) > 0) {
        s->len += n;
        if (s->len == cap)
            s->p = realloc(s->p, cap *= 2);
    }
    fclose(f);
    if (s->p == NULL)
        die("out of memory");
    /* TLS record headers: type, version, 16-bit length (RFC 8446 §5.1). */
    s->rec = malloc((s->len / 5 + 2) * sizeof(*s->rec));
    if (s->rec == NULL)
        die("out of memory");
    size_t off = 0;
    s->nrec = 0;
    while (off + 5 <= s->len) {
        s->rec[s->nrec++] = off;
        off += 5 + ((size_t)s->p[off + 3] << 8 | s->p[off + 4]);
    }
    if (off != s->len)
        die("a capture that is not whole TLS records");
    s->rec[s->nrec] = off;
}

static void
emit_cb(void *arg, const char *event, enum tf_dir dir, json_t *fields)
{
    struct run *r = arg;
    if (r->stage == STAGE_DECODE) {
        json_decref(fields);
        return;
    }
    tf_events_emit(r->events, r->flow, event, tf_dir_name(dir), fields);
}

static bool kept;

static void
feed(struct tf_inspect *ins, enum tf_dir dir, const struct stream *s, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        tf_inspect_feed(ins, dir, s->p + s->rec[i], s->rec[i + 1] - s->rec[i]);
    /* -k: a connection that stays is packed by the sweep once the handshake is over. */
    if (kept && tf_inspect_handshake_done(ins))
        tf_inspect_pack(ins);
}

/* One connection: the schedule, the rest, and what flow_end does. */
static void
one_connection(struct run *r, const struct stream sides[2], const char *schedule)
{
    size_t next[2] = {0, 0};
    struct tf_inspect *ins = tf_inspect_new(1 << 16, emit_cb, r);
    if (ins == NULL)
        die("out of memory");
    for (const char *p = schedule; *p;) {
        if (*p == ' ') {
            p++;
            continue;
        }
        enum tf_dir dir = *p == 'C' ? TF_DIR_C2S : TF_DIR_S2C;
        char *end;
        unsigned long count = strtoul(p + 1, &end, 10);
        if ((*p != 'C' && *p != 'S') || end == p + 1 || next[dir] + count > sides[dir].nrec)
            die("a schedule is C<n> and S<n> steps within the capture's records");
        feed(ins, dir, &sides[dir], next[dir], next[dir] + count);
        next[dir] += count;
        p = end;
    }
    for (int d = 0; d < 2; d++)
        feed(ins, (enum tf_dir)d, &sides[d], next[d], sides[d].nrec);
    if (r->stage == STAGE_ALL) {
        json_t *end = json_pack("{s:s, s:s, s:s}", "outcome", "ok", "closed_by", "client",
                                "close", "fin");
        tf_inspect_summarize(ins, end);
        json_t *facts = json_copy(end);
        json_object_set_new(facts, "mode", json_string("passthrough"));
        json_object_set_new(facts, "state", json_string("relaying"));
        tf_inspect_facts(ins, facts);
        json_t *verdict = tf_verdict_build(facts, time(NULL));
        json_object_set(end, "outcome", json_object_get(verdict, "outcome"));
        json_object_set_new(end, "verdict", verdict);
        json_decref(facts);
        tf_events_emit(r->events, r->flow, "flow_end", NULL, end);
    }
    tf_inspect_free(ins);
    r->flow++;
}

int
main(int argc, char **argv)
{
    long conns = 20000;
    const char *out = "/dev/null";
    struct run r = {.stage = STAGE_ALL, .flow = 1};
    int opt;
    tf_json_alloc_install(); /* as tlsfault does */
    while ((opt = getopt(argc, argv, "kn:o:s:")) != -1) {
        switch (opt) {
        case 'k':
            kept = true;
            break;
        case 'n':
            conns = strtol(optarg, NULL, 10);
            break;
        case 'o':
            out = optarg;
            break;
        case 's':
            r.stage = strcmp(optarg, "decode") == 0   ? STAGE_DECODE
                      : strcmp(optarg, "events") == 0 ? STAGE_EVENTS
                      : strcmp(optarg, "all") == 0    ? STAGE_ALL
                                                      : (die("-s: decode, events or all"), 0);
            break;
        default:
            return 2;
        }
    }
    if (argc - optind != 2 || conns <= 0) {
        fprintf(stderr, "usage: inspectcost [-n CONNS] [-o JSONFILE] [-s decode|events|all] [-k] "
                        "CAPTURE SCHEDULE\n");
        return 2;
    }
    struct stream sides[2];
    stream_load(&sides[TF_DIR_C2S], argv[optind], "c2s");
    stream_load(&sides[TF_DIR_S2C], argv[optind], "s2c");
    char err[256];
    r.events = tf_events_open("none", out, err, sizeof(err));
    if (r.events == NULL)
        die(err);

    one_connection(&r, sides, argv[optind + 1]); /* warm the caches a worker has warm */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < conns; i++)
        one_connection(&r, sides, argv[optind + 1]);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    tf_events_free(r.events);
    double us = ((double)(t1.tv_sec - t0.tv_sec) * 1e6 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e3);
    printf("connections=%ld us_per_connection=%.2f\n", conns, us / (double)conns);
    for (int d = 0; d < 2; d++) {
        free(sides[d].p);
        free(sides[d].rec);
    }
    return 0;
}
