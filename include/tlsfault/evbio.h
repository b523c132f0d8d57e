/*
 * evbio.h — an OpenSSL BIO whose bytes live in a libevent evbuffer.
 *
 * The mitm legs run OpenSSL over sockets the flow owns.  With memory BIOs
 * every byte is copied into the BIO and out again, and each BIO keeps
 * room for the largest burst it ever held.  An evbuffer BIO takes and
 * gives whole chains instead (evbuffer_add_buffer moves, not copies) and
 * holds nothing once drained.  Reading an empty one asks to retry, as a
 * non-blocking socket would.
 */
#ifndef TLSFAULT_EVBIO_H
#define TLSFAULT_EVBIO_H

#include <event2/buffer.h>
#include <openssl/bio.h>

/* A new BIO with an empty evbuffer of its own; NULL when out of memory. */
BIO *tf_evbio_new(void);

/* The BIO's evbuffer: fill it (input side) or empty it (output side). */
struct evbuffer *tf_evbio_buffer(BIO *bio);

#endif
