/*
 * main.c — command line, start-up, signals and worker threads.
 *
 * Job: read the command line, build the configuration snapshot, open the
 * event sinks and the listening sockets (so start-up errors surface before
 * anything runs), start one worker per core, and handle signals on the
 * main thread's own loop: SIGHUP reloads the configuration (live flows
 * keep theirs; a bad file is refused and the old one stays), SIGTERM and
 * SIGINT drain (stop accepting, let flows finish within the grace period,
 * exit 0).  The main loop also flushes the event sinks periodically and,
 * when configured, serves the control API (control.c), whose rule changes
 * reach the workers by the same path as a reload (main_apply_config).
 * `tlsfault report` and `tlsfault ctl` are subcommands with their own
 * options (report.c, ctl.c).
 */
#include <event2/event.h>
#include <event2/thread.h>
#include <getopt.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "config.h"
#include "tlsfault/config.h"
#include "tlsfault/control.h"
#include "tlsfault/ctl.h"
#include "tlsfault/report.h"
#include "tlsfault/events.h"
#include "tlsfault/fault.h"
#include "tlsfault/jsonalloc.h"
#include "tlsfault/forge.h"
#include "tlsfault/listener.h"
#include "tlsfault/log.h"
#include "tlsfault/worker.h"

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2

static const char usage_text[] =
    "usage: tlsfault -c FILE [-t]\n"
    "       tlsfault --listen ADDR:PORT --upstream HOST:PORT [--mode passthrough|mitm]\n"
    "                [--ca DIR] [--keylog FILE] [--fault SPEC]... [--json FILE]\n"
    "                [--text FILE] [--mark N] [-t]\n"
    "       tlsfault --listen ADDR:PORT --route sni --upstream-port N [options]\n"
    "       tlsfault --listen ADDR:PORT --route redirect|tproxy|connect [options]\n"
    "       tlsfault --ca-init DIR\n"
    "       tlsfault report EVENTS.jsonl [-o FILE.html] [--text] [--flow ID]\n"
    "       tlsfault ctl [--control ADDR] [--token-file FILE] COMMAND ...  (ctl --help)\n"
    "       tlsfault --list-faults | --version | --help\n"
    "\n"
    "An inline TLS-inspecting proxy that logs every handshake message and\n"
    "reproduces TLS failures.\n"
    "\n"
    "  -c, --config FILE      run with a configuration file (see tlsfault.conf(5))\n"
    "  -t, --test             check the configuration and exit (0 good, 2 bad)\n"
    "  -l, --listen ADDR:PORT quick mode: listen here (\"127.0.0.1:8443\", \"[::1]:8443\")\n"
    "  -u, --upstream HOST:PORT\n"
    "                         quick mode: forward to this server (route forward)\n"
    "      --route ROUTE      quick mode: how a connection finds its server: forward (the\n"
    "                         default: --upstream), sni (the ClientHello's server name on\n"
    "                         --upstream-port), redirect (netfilter REDIRECT), tproxy\n"
    "                         (netfilter TPROXY; needs CAP_NET_ADMIN) or connect (an HTTP\n"
    "                         CONNECT proxy); redirect, tproxy and connect take no\n"
    "                         --upstream.  See TRANSPARENT in tlsfault(8)\n"
    "      --upstream-port N  quick mode, route sni: the port server names are connected on\n"
    "      --spoof-source     quick mode, route tproxy: connect upstream from the client's\n"
    "                         own address\n"
    "      --mark N           quick mode: SO_MARK on upstream sockets, 1 to 0xffffffff\n"
    "                         (\"2\" or \"0x2\"), so netfilter rules can skip them\n"
    "  -j, --json FILE        quick mode: JSON Lines event log (\"-\" for stdout)\n"
    "      --text FILE        quick mode: text event log (default stderr; \"none\" for off)\n"
    "      --control ADDR     quick mode: serve the control API on this loopback address\n"
    "                         (\"127.0.0.1:8474\"); drive it with tlsfault ctl.  See CONTROL\n"
    "                         in tlsfault(8)\n"
    "      --mode MODE        quick mode: how connections are carried: passthrough (the\n"
    "                         default: nothing decrypted) or mitm (TLS terminated on both\n"
    "                         legs with a certificate forged by the lab CA; needs --ca)\n"
    "      --ca DIR           quick mode, mitm: the lab CA made by --ca-init\n"
    "      --keylog FILE      quick mode, mitm: SSLKEYLOGFILE lines of both legs\n"
    "      --fault SPEC       quick mode: apply a fault rule; SPEC is NAME or\n"
    "                         NAME:key=value,key=value (the fault's parameters, the match\n"
    "                         keys listener, client, dest, dest_port, sni, nth, every,\n"
    "                         first, probability, seed, times, and name); repeat for more\n"
    "                         rules, which act in the order given.\n"
    "                         e.g. --fault 'delay:ms=300,dir=s2c'\n"
    "      --ca-init DIR      make a lab CA in DIR (created if missing; existing files are\n"
    "                         never overwritten), say how to trust it, and exit\n"
    "      --list-faults      print the fault catalogue (names, modes, parameters with\n"
    "                         defaults, what the client sees) and exit\n"
    "  -w, --workers N        worker threads (default: half the CPUs, all with mitm)\n"
    "      --busy-poll US     workers poll without sleeping until US microseconds pass\n"
    "                         idle (for a proxy with cores of its own; default 0: off)\n"
    "  -v, --log-level LEVEL  diagnostics: error, warn, info (default), debug\n"
    "  -V, --version          print the version and exit\n"
    "  -h, --help             print this help and exit\n"
    "\n"
    "Signals: SIGHUP reloads the configuration file; SIGTERM or SIGINT stop\n"
    "accepting and let live connections finish (timeouts.grace), then exit 0.\n"
    "Exit codes: 0 normal, 1 runtime failure, 2 usage or configuration error.\n";

struct main_state {
    struct event_base *base;
    struct tf_config *cfg;
    struct tf_events *events;
    struct tf_control *control;
    struct tf_worker *workers;
    int n_workers;
    _Atomic int workers_left;
    struct event *workers_done;
    struct event *flush_timer;
    bool stopping;
};

static void
main_worker_exit(struct tf_worker *w, void *arg)
{
    struct main_state *st = arg;
    (void)w;
    if (--st->workers_left == 0)
        event_active(st->workers_done, EV_READ, 0);
}

static void
main_workers_done_cb(evutil_socket_t fd, short what, void *arg)
{
    struct main_state *st = arg;
    (void)fd;
    (void)what;
    event_base_loopexit(st->base, NULL);
}

static void
main_flush_cb(evutil_socket_t fd, short what, void *arg)
{
    struct main_state *st = arg;
    (void)fd;
    (void)what;
    tf_events_flush(st->events);
}

static void
main_stop_cb(evutil_socket_t sig, short what, void *arg)
{
    struct main_state *st = arg;
    (void)what;
    if (st->stopping) {
        tf_log_info("second %s: closing every flow now", sig == SIGINT ? "SIGINT" : "SIGTERM");
        for (int i = 0; i < st->n_workers; i++)
            tf_worker_post_drain(&st->workers[i]);
        return;
    }
    st->stopping = true;
    tf_log_info("%s: no new connections; waiting up to %u ms for live ones",
                sig == SIGINT ? "SIGINT" : "SIGTERM", st->cfg->grace_ms);
    for (int i = 0; i < st->n_workers; i++)
        tf_worker_post_drain(&st->workers[i]);
}

/*
 * Listener sets must match, and so must the control API's address:
 * sockets are bound once, at start-up, and how
 * depends on the route (tproxy's are IP_TRANSPARENT; the route also picks
 * how each accepted connection is read).  What a route does with its
 * connections (upstream, upstream_port, allow, default_upstream,
 * spoof_source, mark) may change on reload.
 */
static bool
main_same_listeners(const struct tf_config *a, const struct tf_config *b)
{
    if (a->n_listeners != b->n_listeners)
        return false;
    if (a->control.enabled != b->control.enabled ||
        (a->control.enabled && strcmp(a->control.listen, b->control.listen) != 0))
        return false;
    for (size_t i = 0; i < a->n_listeners; i++)
        if (strcmp(a->listeners[i].listen, b->listeners[i].listen) != 0 ||
            strcmp(a->listeners[i].name, b->listeners[i].name) != 0 ||
            a->listeners[i].route != b->listeners[i].route)
            return false;
    return true;
}

/*
 * Where a listener's connections go, as one word for the log line
 * ("listener NAME on ADDR -> WHERE (N workers)", which scripts read):
 * forward "host:port", sni "<sni>:PORT", redirect and tproxy
 * "<original-destination>", connect "<connect-target>".
 */
static const char *
main_route_target(const struct tf_listener_conf *lc, char *buf, size_t n)
{
    switch (lc->route) {
    case TF_ROUTE_FORWARD:
        if (strchr(lc->upstream_host != NULL ? lc->upstream_host : "", ':') != NULL)
            snprintf(buf, n, "[%s]:%u", lc->upstream_host, lc->upstream_port);
        else
            snprintf(buf, n, "%s:%u", lc->upstream_host != NULL ? lc->upstream_host : "?",
                     lc->upstream_port);
        return buf;
    case TF_ROUTE_SNI:
        snprintf(buf, n, "<sni>:%u", lc->upstream_port);
        return buf;
    case TF_ROUTE_REDIRECT:
    case TF_ROUTE_TPROXY:
        return "<original-destination>";
    case TF_ROUTE_CONNECT:
        return "<connect-target>";
    }
    return "?";
}

/* "route tproxy, spoof_source, mark 0x2": what else the route does, for -t; "" for forward. */
static void
main_route_notes(const struct tf_listener_conf *lc, char *buf, size_t n)
{
    static const char *const names[] = {
        [TF_ROUTE_FORWARD] = "forward", [TF_ROUTE_SNI] = "sni",
        [TF_ROUTE_REDIRECT] = "redirect", [TF_ROUTE_TPROXY] = "tproxy",
        [TF_ROUTE_CONNECT] = "connect",
    };
    size_t used = 0;

    buf[0] = '\0';
    if (lc->route != TF_ROUTE_FORWARD && (size_t)lc->route < sizeof(names) / sizeof(names[0]))
        used += (size_t)snprintf(buf + used, n - used, ", route %s", names[lc->route]);
    if (lc->route == TF_ROUTE_SNI && lc->default_host != NULL && used < n)
        used += (size_t)snprintf(buf + used, n - used, strchr(lc->default_host, ':') != NULL
                                                           ? ", no SNI -> [%s]:%u"
                                                           : ", no SNI -> %s:%u",
                                 lc->default_host, lc->default_port);
    if (lc->n_allow > 0 && used < n)
        used += (size_t)snprintf(buf + used, n - used, ", %zu allow pattern%s", lc->n_allow,
                                 lc->n_allow == 1 ? "" : "s");
    if (lc->spoof_source && used < n)
        used += (size_t)snprintf(buf + used, n - used, ", spoof_source");
    if (lc->mark != 0 && used < n)
        used += (size_t)snprintf(buf + used, n - used, ", mark 0x%x", (unsigned)lc->mark);
    /* IP_TRANSPARENT and SO_MARK: said at -t, before a start fails on EPERM. */
    if ((lc->route == TF_ROUTE_TPROXY || lc->mark != 0) && used < n)
        snprintf(buf + used, n - used, "; needs CAP_NET_ADMIN");
}

/*
 * Makes cfg the running snapshot: every worker gets it for its new flows
 * (live flows keep theirs).  Reloads and the control API's rule changes
 * both come here.  Takes its own reference.
 */
static void
main_apply_config(struct main_state *st, struct tf_config *cfg)
{
    for (int i = 0; i < st->n_workers; i++)
        tf_worker_post_config(&st->workers[i], cfg);
    tf_config_ref(cfg);
    tf_config_unref(st->cfg);
    st->cfg = cfg;
}

/*
 * Reads the file again and applies it.  Returns 200, or 409 (quick mode;
 * listeners or control.listen changed) / 422 (the file is bad) with the
 * reason in err; the running configuration stays then.  Rules added
 * through the control API are replaced by the file's.
 */
static int
main_reload(struct main_state *st, char *err, size_t errlen)
{
    if (st->cfg->path == NULL) {
        snprintf(err, errlen, "nothing to reload in quick mode");
        return 409;
    }
    struct tf_config *cfg = tf_config_load(st->cfg->path, err, errlen);
    if (cfg == NULL)
        return 422;
    if (!main_same_listeners(st->cfg, cfg)) {
        snprintf(err, errlen, "%s: listeners (names, addresses or routes) or control.listen "
                 "changed; restart tlsfault to change them", cfg->path);
        tf_config_unref(cfg);
        return 409;
    }
    main_apply_config(st, cfg);
    tf_config_unref(cfg);
    tf_control_rules_reloaded(st->control);
    tf_log_info("reloaded %s; new connections use it, live ones keep theirs", st->cfg->path);
    return 200;
}

static void
main_reload_cb(evutil_socket_t sig, short what, void *arg)
{
    struct main_state *st = arg;
    char err[4096];
    (void)sig;
    (void)what;
    int status = main_reload(st, err, sizeof(err));
    if (status == 409 && st->cfg->path == NULL)
        tf_log_warn("SIGHUP: %s", err);
    else if (status != 200)
        tf_log_error("reload refused, keeping the running configuration:\n%s", err);
}

/* The control API's hooks (control.h): all run on this thread. */
static struct tf_config *
main_control_current(void *arg)
{
    struct main_state *st = arg;
    return st->cfg;
}

static void
main_control_apply(void *arg, struct tf_config *cfg)
{
    main_apply_config(arg, cfg);
}

static int
main_control_reload(void *arg, char *err, size_t errlen)
{
    return main_reload(arg, err, errlen);
}

static void
main_raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Blocks or unblocks (in the calling thread) the signals the main loop handles. */
static void
main_block_signals(bool block)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(block ? SIG_BLOCK : SIG_UNBLOCK, &set, NULL);
}

static int
main_run(struct main_state *st)
{
    char err[512];
    int rc = EXIT_RUNTIME;
    size_t nl = st->cfg->n_listeners;
    int **fds = calloc(nl, sizeof(*fds));
    struct event *sigs[4] = { NULL };

    /* SIGTERM, SIGINT and SIGHUP are blocked (main): worker threads inherit that. */

    /*
     * Default: half the CPUs.  In a lab the client and the server usually
     * run on the same machine; on two cores one passthrough worker beats
     * two by a quarter in handshakes per second and CPU per connection
     * (docs/benchmark.md), as the threads stop taking turns on the cores.
     * A mitm listener makes the proxy itself the busy one (a signature per
     * handshake): one worker per CPU then, 19% more handshakes on two.
     */
    int cpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
    bool terminates = false;
    for (size_t i = 0; i < nl; i++)
        if (st->cfg->listeners[i].mode == TF_MODE_MITM)
            terminates = true;
    st->n_workers = st->cfg->workers > 0 ? st->cfg->workers : terminates ? cpus : cpus / 2;
    if (st->n_workers < 1)
        st->n_workers = 1;
    st->workers = calloc((size_t)st->n_workers, sizeof(*st->workers));
    if (fds == NULL || st->workers == NULL)
        goto out;
    for (size_t i = 0; i < nl; i++) {
        struct sockaddr_storage bound;
        char addr[80];
        fds[i] = calloc((size_t)st->n_workers, sizeof(int));
        if (fds[i] == NULL)
            goto out;
        if (!tf_listener_open_sockets(&st->cfg->listeners[i], st->n_workers, fds[i], &bound, err,
                                      sizeof(err))) {
            tf_log_error("%s", err);
            goto out;
        }
        char target[300], notes[300];
        tf_listener_format_addr((struct sockaddr *)&bound, addr, sizeof(addr));
        main_route_notes(&st->cfg->listeners[i], notes, sizeof(notes));
        tf_log_info("listener %s on %s -> %s (%d workers)%s", st->cfg->listeners[i].name, addr,
                    main_route_target(&st->cfg->listeners[i], target, sizeof(target)),
                    st->n_workers, notes);
    }

    /* The control API taps the events before any worker can emit one. */
    if (st->cfg->control.enabled) {
        static const struct tf_control_hooks hooks = {
            .current = main_control_current,
            .apply = main_control_apply,
            .reload = main_control_reload,
        };
        struct tf_control_hooks h = hooks;
        h.arg = st;
        st->control = tf_control_new(st->base, st->events, &h, err, sizeof(err));
        if (st->control == NULL) {
            tf_log_error("%s", err);
            goto out;
        }
    }

    st->workers_left = st->n_workers;
    for (int i = 0; i < st->n_workers; i++) {
        int *wfds = calloc(nl ? nl : 1, sizeof(int));
        for (size_t j = 0; j < nl; j++)
            wfds[j] = fds[j][i];
        bool ok = tf_worker_init(&st->workers[i], i, st->cfg, st->events, wfds, err, sizeof(err));
        free(wfds);
        if (!ok) {
            tf_log_error("%s", err);
            exit(EXIT_RUNTIME);
        }
        st->workers[i].on_exit = main_worker_exit;
        st->workers[i].on_exit_arg = st;
    }
    for (int i = 0; i < st->n_workers; i++)
        if (!tf_worker_start(&st->workers[i])) {
            tf_log_error("cannot start worker thread %d", i);
            exit(EXIT_RUNTIME);
        }
    if (st->cfg->busy_poll_us > 0)
        tf_log_info("workers poll without sleeping until %d us pass idle (busy_poll_us): "
                    "each keeps a core busy while traffic flows",
                    st->cfg->busy_poll_us);

    sigs[0] = evsignal_new(st->base, SIGTERM, main_stop_cb, st);
    sigs[1] = evsignal_new(st->base, SIGINT, main_stop_cb, st);
    sigs[2] = evsignal_new(st->base, SIGHUP, main_reload_cb, st);
    for (int i = 0; i < 3; i++)
        evsignal_add(sigs[i], NULL);
    /* Handlers in place: a signal that came meanwhile is delivered now. */
    main_block_signals(false);
    st->workers_done = event_new(st->base, -1, 0, main_workers_done_cb, st);
    st->flush_timer = event_new(st->base, -1, EV_PERSIST, main_flush_cb, st);
    struct timeval flush_every = { 0, 50 * 1000 };
    evtimer_add(st->flush_timer, &flush_every);

    tf_log_info("tlsfault %s ready", PACKAGE_VERSION);
    event_base_dispatch(st->base);

    for (int i = 0; i < st->n_workers; i++) {
        pthread_join(st->workers[i].thread, NULL);
        tf_worker_release(&st->workers[i]);
    }
    tf_log_info("stopped");
    rc = 0;
out:
    main_block_signals(false);
    tf_control_free(st->control); /* the workers are gone: nothing taps any more */
    st->control = NULL;
    for (int i = 0; i < 4; i++)
        if (sigs[i])
            event_free(sigs[i]);
    for (size_t i = 0; i < nl; i++)
        free(fds ? fds[i] : NULL);
    free(fds);
    free(st->workers);
    if (st->workers_done)
        event_free(st->workers_done);
    if (st->flush_timer)
        event_free(st->flush_timer);
    return rc;
}

/*
 * --ca-init: makes the lab CA and says what to do with it.  Exit 0, or 1
 * with the reason (the directory holds a CA already, cannot be written).
 */
static int
main_ca_init(const char *dir)
{
    char err[1024];

    if (!tf_lab_ca_init(dir, err, sizeof(err))) {
        fprintf(stderr, "tlsfault: %s\n", err);
        return EXIT_RUNTIME;
    }
    printf("lab CA written to %s:\n"
           "  %s/root.pem                  the root: the one certificate lab clients trust\n"
           "  %s/intermediate.pem, .key    signs the forged certificates\n"
           "  %s/untrusted-root.pem, ...   a second root no client trusts "
           "(cert-untrusted-root)\n"
           "How to trust root.pem (curl, openssl, gnutls-cli, Python, the system store):\n"
           "  %s/README.txt\n"
           "Then run:\n"
           "  tlsfault --listen ADDR:PORT --upstream HOST:PORT --mode mitm --ca %s\n"
           "or, in a configuration file: ca = { dir = \"%s\"; };\n"
           "Keep the *.key files to yourself: they can impersonate any site to a client\n"
           "that trusts root.pem.\n",
           dir, dir, dir, dir, dir, dir, dir);
    return fflush(stdout) == 0 ? 0 : EXIT_RUNTIME;
}

/* -t: the OK line, then what mitm needs: its listeners and the CA that loaded. */
static void
main_report_ok(const struct tf_config *cfg, const char *where)
{
    char rules[64] = "";
    size_t n_mitm = 0;

    if (cfg->n_faults > 0)
        snprintf(rules, sizeof(rules), ", %zu fault rule%s", cfg->n_faults,
                 cfg->n_faults == 1 ? "" : "s");
    printf("%s: configuration OK (%zu listener%s%s)\n", where, cfg->n_listeners,
           cfg->n_listeners == 1 ? "" : "s", rules);
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const struct tf_listener_conf *lc = &cfg->listeners[i];
        char target[300], notes[300];
        if (lc->mode != TF_MODE_MITM && lc->route == TF_ROUTE_FORWARD && lc->mark == 0)
            continue;
        n_mitm += lc->mode == TF_MODE_MITM;
        main_route_notes(lc, notes, sizeof(notes));
        printf("  %s listener %s: %s -> %s%s\n", lc->mode == TF_MODE_MITM ? "mitm" : "passthrough",
               lc->name, lc->listen, main_route_target(lc, target, sizeof(target)), notes);
    }
    if (cfg->control.enabled)
        printf("  control API on %s%s\n", cfg->control.listen,
               cfg->control.token != NULL ? " (bearer token required)" : "");
    if (n_mitm > 0 && cfg->lab_ca != NULL) {
        char subject[256] = "?";
        X509 *root = tf_lab_ca_root(cfg->lab_ca);
        if (root != NULL)
            X509_NAME_oneline(X509_get_subject_name(root), subject, sizeof(subject));
        printf("  lab CA loaded from %s; clients must trust %s\n",
               cfg->ca_dir != NULL ? cfg->ca_dir : cfg->ca_cert, subject);
    }
}

int
main(int argc, char **argv)
{
    /* First, while there is one thread: jansson reads its allocator functions unlocked. */
    tf_json_alloc_install();
    /* Subcommands come first: they have options of their own. */
    if (argc > 1 && strcmp(argv[1], "report") == 0)
        return tf_report_main(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "ctl") == 0)
        return tf_ctl_main(argc - 1, argv + 1);
    /*
     * The daemon's stop and reload signals wait (blocked) until main_run
     * has its handlers in place: one that came earlier, while the
     * configuration is read or the listeners are bound, would otherwise
     * kill the process with the default action.
     */
    main_block_signals(true);

    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' },
        { "test", no_argument, NULL, 't' },
        { "listen", required_argument, NULL, 'l' },
        { "upstream", required_argument, NULL, 'u' },
        { "json", required_argument, NULL, 'j' },
        { "text", required_argument, NULL, 'T' },
        { "workers", required_argument, NULL, 'w' },
        { "busy-poll", required_argument, NULL, 'B' },
        { "log-level", required_argument, NULL, 'v' },
        { "mode", required_argument, NULL, 'm' },
        { "fault", required_argument, NULL, 'f' },
        { "ca", required_argument, NULL, 'C' },
        { "keylog", required_argument, NULL, 'K' },
        { "route", required_argument, NULL, 'R' },
        { "upstream-port", required_argument, NULL, 'P' },
        { "mark", required_argument, NULL, 'M' },
        { "spoof-source", no_argument, NULL, 'S' },
        { "control", required_argument, NULL, 'O' },
        { "ca-init", required_argument, NULL, 'I' },
        { "list-faults", no_argument, NULL, 'L' },
        { "version", no_argument, NULL, 'V' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *config_path = NULL, *listen = NULL, *upstream = NULL, *json = NULL;
    const char *text = NULL, *level = NULL, *mode = NULL;
    const char *ca_dir = NULL, *keylog = NULL, *ca_init = NULL;
    const char *route = NULL, *upstream_port = NULL, *mark = NULL, *control = NULL;
    int workers = -1, busy_poll_us = -1;
    bool test_only = false, list_faults = false, spoof_source = false;
    int c;
    char err[8192];
    struct main_state st;
    /* --fault arguments, in order; there cannot be more than argc of them. */
    const char **fault_specs = calloc((size_t)argc, sizeof(*fault_specs));
    size_t n_faults = 0;

    if (fault_specs == NULL) {
        fprintf(stderr, "tlsfault: out of memory\n");
        return EXIT_RUNTIME;
    }
    memset(&st, 0, sizeof(st));
    while ((c = getopt_long(argc, argv, "c:tl:u:j:w:v:Vh", opts, NULL)) != -1) {
        switch (c) {
        case 'f': fault_specs[n_faults++] = optarg; break;
        case 'L': list_faults = true; break;
        case 'm': mode = optarg; break;
        case 'C': ca_dir = optarg; break;
        case 'K': keylog = optarg; break;
        case 'R': route = optarg; break;
        case 'P': upstream_port = optarg; break;
        case 'M': mark = optarg; break;
        case 'S': spoof_source = true; break;
        case 'O': control = optarg; break;
        case 'I': ca_init = optarg; break;
        case 'c': config_path = optarg; break;
        case 't': test_only = true; break;
        case 'l': listen = optarg; break;
        case 'u': upstream = optarg; break;
        case 'j': json = strcmp(optarg, "-") == 0 ? "stdout" : optarg; break;
        case 'T': text = optarg; break;
        case 'v': level = optarg; break;
        case 'w': {
            char *end;
            long n = strtol(optarg, &end, 10);
            if (*end || n < 1 || n > 256) {
                fprintf(stderr, "tlsfault: --workers: expected 1..256, got \"%s\"\n", optarg);
                free(fault_specs);
                return EXIT_USAGE;
            }
            workers = (int)n;
            break;
        }
        case 'B': {
            char *end;
            long n = strtol(optarg, &end, 10);
            if (*end || end == optarg || n < 0 || n > 1000000) {
                fprintf(stderr, "tlsfault: --busy-poll: expected 0..1000000 microseconds, got "
                        "\"%s\"\n", optarg);
                free(fault_specs);
                return EXIT_USAGE;
            }
            busy_poll_us = (int)n;
            break;
        }
        case 'V': printf("tlsfault %s (%s, libevent %s)\n", PACKAGE_VERSION,
                         OpenSSL_version(OPENSSL_VERSION), event_get_version());
            free(fault_specs);
            return 0;
        case 'h': fputs(usage_text, stdout); free(fault_specs); return 0;
        default: fputs(usage_text, stderr); free(fault_specs); return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "tlsfault: unexpected argument \"%s\"\n%s", argv[optind], usage_text);
        free(fault_specs);
        return EXIT_USAGE;
    }
    if (ca_init) {
        free(fault_specs);
        if (config_path || listen || upstream || json || text || mode || ca_dir || keylog ||
            route || upstream_port || mark || spoof_source || control || n_faults > 0 ||
            list_faults ||
            test_only || workers > 0 || busy_poll_us >= 0 || level) {
            fprintf(stderr, "tlsfault: --ca-init stands alone: make the CA first, then run with "
                            "--ca DIR (or ca.dir in the file)\n");
            return EXIT_USAGE;
        }
        return main_ca_init(ca_init);
    }
    if (list_faults) {
        tf_fault_print_catalogue(stdout);
        free(fault_specs);
        return fflush(stdout) == 0 ? 0 : EXIT_RUNTIME;
    }
    if (config_path && n_faults > 0) {
        fprintf(stderr, "tlsfault: --fault is for quick mode (--listen, --upstream); with -c, "
                        "write the rules in the file's faults list (see tlsfault.conf(5))\n");
        free(fault_specs);
        return EXIT_USAGE;
    }
    bool quick_opts = listen || upstream || json || text || mode || ca_dir || keylog || route ||
                      upstream_port || mark || spoof_source || control;
    if (config_path && quick_opts) {
        fprintf(stderr, "tlsfault: -c and the quick-mode options (--listen, --upstream, --route, "
                        "--upstream-port, --spoof-source, --mark, --mode, --ca, --keylog, "
                        "--json, --text, --control) do not mix\n");
        free(fault_specs);
        return EXIT_USAGE;
    }
    if (config_path) {
        st.cfg = tf_config_load(config_path, err, sizeof(err));
    } else if (quick_opts || n_faults > 0) {
        /* Only route forward takes --upstream; config.c says what the others need. */
        bool forward = route == NULL || strcmp(route, "forward") == 0;
        if (!listen || (forward && !upstream)) {
            fprintf(stderr, forward ? "tlsfault: quick mode needs both --listen and --upstream\n"
                                    : "tlsfault: quick mode needs --listen\n");
            free(fault_specs);
            return EXIT_USAGE;
        }
        struct tf_quick q = {
            .listen = listen,
            .upstream = upstream,
            .json = json,
            .mode = mode,
            .ca_dir = ca_dir,
            .keylog = keylog,
            .faults = fault_specs,
            .n_faults = n_faults,
            .route = route,
            .upstream_port = upstream_port,
            .mark = mark,
            .spoof_source = spoof_source,
            .control = control,
        };
        st.cfg = tf_config_quick_opts(&q, err, sizeof(err));
        if (st.cfg && text) {
            free(st.cfg->log_text);
            st.cfg->log_text = strdup(text);
        }
    } else {
        fputs(usage_text, stderr);
        free(fault_specs);
        return EXIT_USAGE;
    }
    free(fault_specs); /* the snapshot keeps what it needs */
    if (st.cfg == NULL) {
        fprintf(stderr, "%s\n", err);
        return EXIT_USAGE;
    }
    if (test_only) {
        main_report_ok(st.cfg, config_path ? config_path : "quick mode");
        tf_config_unref(st.cfg);
        return 0;
    }
    if (workers > 0)
        st.cfg->workers = workers;
    if (busy_poll_us >= 0)
        st.cfg->busy_poll_us = busy_poll_us;
    if (level) {
        int l = tf_log_parse_level(level);
        if (l < 0) {
            fprintf(stderr, "tlsfault: --log-level: expected error, warn, info or debug\n");
            tf_config_unref(st.cfg);
            return EXIT_USAGE;
        }
        tf_log_set_level((enum tf_log_level)l);
    } else if (st.cfg->log_level) {
        tf_log_set_level((enum tf_log_level)tf_log_parse_level(st.cfg->log_level));
    }

    signal(SIGPIPE, SIG_IGN);
    main_raise_fd_limit();
    evthread_use_pthreads();
    st.events = tf_events_open(st.cfg->log_text, st.cfg->log_json, err, sizeof(err));
    if (st.events == NULL) {
        fprintf(stderr, "tlsfault: %s\n", err);
        tf_config_unref(st.cfg);
        return EXIT_RUNTIME;
    }
    st.base = event_base_new();
    int rc = st.base ? main_run(&st) : EXIT_RUNTIME;
    tf_events_free(st.events);
    tf_config_unref(st.cfg);
    if (st.base)
        event_base_free(st.base);
    libevent_global_shutdown();
    return rc;
}
