/*
 * report.h — `tlsfault report`: a picture of each handshake.
 *
 * Reads a JSON Lines event log (the --json output) and draws, for every
 * flow, a ladder diagram of its messages between the client, tlsfault and
 * the server: as one self-contained HTML file (inline CSS, JS and no
 * external resources) or as text for a terminal.  The log is untrusted
 * input: every string from it is escaped, bad lines are counted and named
 * on stderr, and memory stays bounded however long the log is.
 */
#ifndef TLSFAULT_REPORT_H
#define TLSFAULT_REPORT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/*
 * The `report` subcommand.  argv[0] is "report"; the rest:
 *   EVENTS.jsonl ("-" for stdin) [-o FILE] [--text] [--flow ID]
 *   [--max-flows N] [--max-events N]
 * Returns the process exit code: 0 report written (bad lines are reported
 * on stderr but do not fail it), 1 input or output error or no such flow,
 * 2 usage error.
 */
int tf_report_main(int argc, char **argv);

/*
 * Parses an RFC 3339 time ("2026-12-02T01:09:37.623467Z", an offset such
 * as "+02:00" instead of Z, any number of fraction digits) into
 * microseconds since the epoch.  Returns false if s is not such a time.
 */
bool tf_report_parse_ts(const char *s, int64_t *us) __attribute__((nonnull));

/*
 * Writes s to out with the five HTML special characters (& < > " ') as
 * character references, so the text is safe in element content and in a
 * double- or single-quoted attribute.  At most max bytes of s are written
 * (0: no limit; a cut never splits a UTF-8 sequence), then "…".
 */
void tf_report_html_escape(FILE *out, const char *s, size_t max) __attribute__((nonnull));

/*
 * The short label of a message event for an arrow ("client_hello
 * lab.test", "server_hello TLS 1.3 TLS_AES_256_GCM_SHA384", "alert fatal
 * handshake_failure", "application_data 848 B"), written to buf (always
 * NUL-terminated; truncated to len).  Strings are copied from the event
 * as they are: the caller escapes them for its output.
 */
void tf_report_label(const json_t *event, char *buf, size_t len) __attribute__((nonnull));

#endif
