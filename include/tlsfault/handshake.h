/*
 * handshake.h — handshake message reassembly (RFC 8446 §5.1: messages may
 * be split over records and several may share one record).
 *
 * A struct tf_hs_reader takes the bodies of clear handshake records of one
 * direction and hands out complete messages (type, body).  A message longer
 * than the configured cap is not reassembled: the reader reports it and
 * stops, and the flow goes on relaying.
 */
#ifndef TLSFAULT_HANDSHAKE_H
#define TLSFAULT_HANDSHAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tlsfault/record.h"

#define TF_HS_HEADER_LEN 4

enum tf_hs_type {
    TF_HS_HELLO_REQUEST = 0,
    TF_HS_CLIENT_HELLO = 1,
    TF_HS_SERVER_HELLO = 2,
    TF_HS_NEW_SESSION_TICKET = 4,
    TF_HS_END_OF_EARLY_DATA = 5,
    TF_HS_ENCRYPTED_EXTENSIONS = 8,
    TF_HS_CERTIFICATE = 11,
    TF_HS_SERVER_KEY_EXCHANGE = 12,
    TF_HS_CERTIFICATE_REQUEST = 13,
    TF_HS_SERVER_HELLO_DONE = 14,
    TF_HS_CERTIFICATE_VERIFY = 15,
    TF_HS_CLIENT_KEY_EXCHANGE = 16,
    TF_HS_FINISHED = 20,
    TF_HS_CERTIFICATE_STATUS = 22,
    TF_HS_KEY_UPDATE = 24,
    TF_HS_MESSAGE_HASH = 254,
};

/* Returns false to stop the reader. */
typedef bool (*tf_hs_cb)(void *arg, uint8_t type, const uint8_t *body, size_t len);

/* Owns its buffer; release with tf_hs_reader_release(). */
struct tf_hs_reader {
    uint8_t *buf;
    size_t have;
    size_t cap;
    size_t max;         /* largest message body accepted */
    uint64_t messages;
    bool stopped;
    char error[128];
};

void tf_hs_reader_init(struct tf_hs_reader *h, size_t max_message);
void tf_hs_reader_release(struct tf_hs_reader *h);

/*
 * Feeds the body of one handshake record.  Calls cb for each complete
 * message.  Returns TF_PARSE_OK, or TF_PARSE_BAD when a message exceeds
 * the cap (h->error says so) and the reader stops.
 */
enum tf_parse tf_hs_feed(struct tf_hs_reader *h, const uint8_t *p, size_t n, tf_hs_cb cb,
                         void *arg);

/* True when a message is partly assembled (bytes are waiting for more). */
bool tf_hs_pending(const struct tf_hs_reader *h);

#endif
