/*
 * record.h — the TLS record layer as seen by a bystander (RFC 8446 §5.1,
 * RFC 5246 §6.2).
 *
 * A struct tf_record_reader follows one direction of a byte stream and
 * hands complete records to a callback, whatever the read boundaries: one
 * byte at a time or many records in one read.  It validates each header
 * (content type 20..24, version 0x0300..0x0304, length <= 2^14 + 2048) and,
 * on the first bytes of the stream, tells what is not TLS at all (an SSLv2
 * style ClientHello, HTTP, anything else).  Once it has found the stream is
 * not TLS it stops; the flow relays the bytes unchanged regardless.
 *
 * In "skim" mode it only follows record boundaries: the callback gets the
 * header with body == NULL and no byte is copied.  That is how a flow keeps
 * an eye on record types after the handshake at almost no cost.
 */
#ifndef TLSFAULT_RECORD_H
#define TLSFAULT_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TF_RECORD_HEADER_LEN 5
#define TF_RECORD_MAX_BODY (16384 + 2048) /* TLSCiphertext limit, RFC 5246 §6.2.3 */

enum tf_content_type {
    TF_CT_CHANGE_CIPHER_SPEC = 20,
    TF_CT_ALERT = 21,
    TF_CT_HANDSHAKE = 22,
    TF_CT_APPLICATION_DATA = 23,
    TF_CT_HEARTBEAT = 24,
};

enum tf_parse {
    TF_PARSE_OK = 0,
    TF_PARSE_NEED_MORE,
    TF_PARSE_BAD,
};

/* What the first bytes of a stream look like. */
enum tf_stream_kind {
    TF_STREAM_TLS = 0,
    TF_STREAM_SSLV2,   /* SSL 2.0-compatible ClientHello (RFC 5246 appendix E.2) */
    TF_STREAM_HTTP,    /* an HTTP request or response line */
    TF_STREAM_UNKNOWN, /* anything else */
};

struct tf_record {
    uint8_t type;
    uint16_t version;
    const uint8_t *body; /* NULL in skim mode */
    size_t len;
    uint64_t offset;     /* stream offset of the header's first byte */
};

/* Returns false to stop the reader (it then ignores all further input). */
typedef bool (*tf_record_cb)(void *arg, const struct tf_record *rec);

/* Owns its body buffer; release with tf_record_reader_release(). */
struct tf_record_reader {
    uint8_t hdr[TF_RECORD_HEADER_LEN];
    size_t hdr_have;
    uint8_t *body;          /* assembly buffer for a record split across feeds */
    size_t body_cap;        /* its size: the largest split record so far */
    size_t body_have;
    size_t body_need;       /* body length of the record being read */
    uint64_t offset;        /* bytes of the stream consumed so far */
    uint64_t records;       /* complete records seen */
    bool skim;
    bool stopped;
    enum tf_stream_kind kind;   /* set when the reader stops on bad input */
    char error[48];             /* why it stopped on bad input */
};

void tf_record_reader_init(struct tf_record_reader *r);
void tf_record_reader_release(struct tf_record_reader *r);

/*
 * Feeds n bytes of the stream.  Calls cb for each complete record.
 * Returns TF_PARSE_OK when all bytes were taken (a partial record is kept
 * for the next call), TF_PARSE_BAD when the stream is not TLS or a header is
 * malformed (r->kind and r->error tell what; r->offset is where), and
 * TF_PARSE_OK without looking when the reader has stopped.
 */
enum tf_parse tf_record_feed(struct tf_record_reader *r, const uint8_t *p, size_t n,
                             tf_record_cb cb, void *arg);

/*
 * Classifies the first bytes of a stream.  Returns TF_PARSE_NEED_MORE when
 * n is too short to tell.
 */
enum tf_parse tf_record_classify(const uint8_t *p, size_t n, enum tf_stream_kind *kind);

/* Writes a printable preview of up to max bytes: ASCII as is, others as \xNN. */
void tf_record_preview(const uint8_t *p, size_t n, size_t max, char *out, size_t outlen);

#endif
