/*
 * events.h — the event stream: what tlsfault saw, for people and programs.
 *
 * Two sinks share one stream: human text (one line per event: time, flow id,
 * an arrow for the direction, the event and its main fields) and JSON Lines
 * (one object per line: ts, flow, event, dir, fields).  Events come from
 * every worker thread; each line is written whole.  These are apart from
 * the daemon's own diagnostics (log.h).
 */
#ifndef TLSFAULT_EVENTS_H
#define TLSFAULT_EVENTS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tf_events;

/*
 * Opens the sinks.  text: "stderr", "stdout", "none" or a path (appended).
 * json: NULL for none, "stdout", "stderr" or a path (appended).  Returns
 * NULL with the reason in err.
 */
struct tf_events *tf_events_open(const char *text, const char *json, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Flushes and closes; NULL is harmless. */
void tf_events_free(struct tf_events *ev);

/*
 * Emits one event.  dir is "c2s", "s2c" or NULL.  fields is stolen (may be
 * NULL); ts, flow, event and dir are added in front.
 */
void tf_events_emit(struct tf_events *ev, uint64_t flow, const char *event, const char *dir,
                    json_t *fields);

/*
 * Appends one SSLKEYLOGFILE line to path (opened 0600 on first use; later
 * calls keep writing to that file).
 */
void tf_events_keylog(struct tf_events *ev, const char *path, const char *line);

/*
 * A tap sees every event, from the thread that emits it, before it is
 * written: obj is the whole event (ts, flow, event, dir, fields) and is
 * only borrowed for the call; flow and event are its fields, for quick
 * filtering.  The tap must not block for long: every worker waits on it.
 */
typedef void tf_events_tap_fn(void *arg, uint64_t flow, const char *event, const json_t *obj);

/*
 * Sets the tap (fn NULL: none).  Set it before any worker runs and clear
 * it after they have stopped: the tap is read without a lock.
 */
void tf_events_set_tap(struct tf_events *ev, tf_events_tap_fn *fn, void *arg);

/* Flushes buffered lines to their files. */
void tf_events_flush(struct tf_events *ev);

/* Renders the text line of an event (without newline) into buf; for tests. */
void tf_events_format_text(const json_t *event, char *buf, size_t len);

/* A per-direction count as events give it: {"c2s": c2s, "s2c": s2c} (a new reference). */
json_t *tf_events_per_dir(uint64_t c2s, uint64_t s2c);

#endif
