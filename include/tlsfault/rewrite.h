/*
 * rewrite.h — re-encoding of changed handshake messages and records.
 *
 * Faults that edit what a peer said (a ClientHello without TLS 1.3, a
 * Certificate without intermediates) need a real re-encoding: every length
 * field (handshake header, extension block, each list) must be right
 * afterwards, or the peer would report a decode error instead of the
 * failure being reproduced.  Each function reads its input through a
 * bounded cursor, never trusts a length it has not checked, and writes a
 * complete new message (4-byte handshake header included) into a fresh
 * malloc'd buffer that the caller frees.  Unknown extensions and fields
 * are kept byte for byte.
 *
 * A rewriter returns TF_REWRITE_OK with the new message, TF_REWRITE_SAME
 * when the edit changes nothing (e.g. no SNI to strip; *out is NULL), or
 * TF_REWRITE_BAD when the input is malformed, or the edit cannot be encoded
 * (strip_ciphers matching every suite: cipher_suites may not be empty)
 * (why says what; *out NULL).  why and changes may be NULL with length 0.
 */
#ifndef TLSFAULT_REWRITE_H
#define TLSFAULT_REWRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum tf_rewrite {
    TF_REWRITE_OK,
    TF_REWRITE_SAME,
    TF_REWRITE_BAD,
};

/* Edits of a ClientHello; several may be combined in one call. */
struct tf_client_hello_edit {
    uint16_t max_version;       /* 0: leave versions alone; else offer at most this */
    bool remove_supported_versions; /* drop the extension entirely (alone: offer at most 1.2) */
    const char *strip_ciphers;  /* NULL, or fnmatch globs (case-insensitive) separated by
                                 * ':' or ',' (blanks ignored); matched against IANA
                                 * names (names.h) and against "0x%04x" */
    bool strip_sni;             /* remove server_name */
    bool strip_alpn;            /* remove application_layer_protocol_negotiation */
};

/*
 * Rewrites a ClientHello message body (after the 4-byte header).
 * max_version: versions above it leave supported_versions (GREASE values
 * stay); legacy_version becomes min(0x0303, max_version) for TLS 1.2 and
 * below, and stays as sent (0x0303, RFC 8446 §4.1.2) while 1.3 is still
 * offered.  It is never raised: a hello whose legacy_version is already
 * lower keeps it.
 * When the extension would be left without a version, or
 * remove_supported_versions is set, the extension is removed.  changes
 * gets a short human summary ("supported_versions: removed TLS 1.3;
 * legacy_version 0x0303") for the fault event.
 */
enum tf_rewrite tf_rewrite_client_hello(const uint8_t *body, size_t len,
                                        const struct tf_client_hello_edit *edit, uint8_t **out,
                                        size_t *out_len, char *changes, size_t changes_len,
                                        char *why, size_t why_len);

/* ServerHello body: sets legacy_version to version. */
enum tf_rewrite tf_rewrite_server_hello_version(const uint8_t *body, size_t len,
                                                uint16_t version, uint8_t **out,
                                                size_t *out_len, char *why, size_t why_len);

/*
 * Certificate body (TLS 1.2 layout, RFC 5246 §7.4.2; tls13 for the RFC
 * 8446 §4.4.2 layout with per-entry extensions): keeps the certificates
 * whose position (0 = leaf) has its bit set in keep_mask (positions past
 * 31 are never kept).  *kept and *total report the counts (0 when BAD).
 */
enum tf_rewrite tf_rewrite_certificate(const uint8_t *body, size_t len, bool tls13,
                                       uint32_t keep_mask, uint8_t **out, size_t *out_len,
                                       unsigned *kept, unsigned *total, char *why,
                                       size_t why_len);

/*
 * Frames bytes of one content type into records of at most max_fragment
 * bytes (1..16384) with the given record version, into a fresh buffer.
 * Used to re-frame rewritten handshake messages and for `fragment`.
 * False for a max_fragment out of range or no memory; n == 0 gives no
 * records (an empty, non-NULL buffer).
 */
bool tf_rewrite_frame(uint8_t type, uint16_t version, const uint8_t *p, size_t n,
                      size_t max_fragment, uint8_t **out, size_t *out_len);

/* A complete alert record: 21, version, length 2, level, description. */
void tf_rewrite_alert_record(uint16_t version, uint8_t level, uint8_t description,
                             uint8_t out[7]);

/*
 * An HTTP/1.1 response with the given status, its reason phrase,
 * Content-Type text/html, Content-Length and Connection: close; body NULL
 * for a short default page naming the status.  Fresh buffer.  False for
 * a status that is not three digits (100..999) or no memory.
 */
bool tf_rewrite_http_response(unsigned status, const uint8_t *body, size_t body_len,
                              uint8_t **out, size_t *out_len);

#endif
