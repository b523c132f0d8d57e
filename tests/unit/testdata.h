/*
 * testdata.h — loads the captured handshakes in tests/data/ for unit tests,
 * and the helpers that the tests of those handshakes share.
 *
 * The files are written by scripts/capture-testdata.py (see
 * tests/data/README.md).  The source tree is found through $TF_SRCDIR, which
 * `make check` sets; without it the current directory is assumed.
 */
#ifndef TLSFAULT_TESTDATA_H
#define TLSFAULT_TESTDATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Reads $TF_SRCDIR/tests/data/<name> whole into a new buffer.  Returns false
 * (and leaves *buf NULL) when the file cannot be read.  The caller frees
 * *buf with free().  An empty file gives a non-NULL buffer and *len == 0.
 */
bool tf_testdata_load(const char *name, uint8_t **buf, size_t *len)
    __attribute__((warn_unused_result, nonnull));

/*
 * Helpers shared by the decoder and rewriter tests (test_decode.c,
 * test_rewrite.c).  They fail the running cmocka test rather than return
 * errors, so they are for use inside tests only.
 */
#include <jansson.h>

/* A captured message: its bytes (free with free()) and their count. */
struct blob {
    uint8_t *p;
    size_t n;
};

/* tf_testdata_load() that fails the test when the file cannot be read. */
struct blob load(const char *name);

/* An exact-size heap copy, so any read past n is an ASan report. */
uint8_t *exact_copy(const uint8_t *p, size_t n);

/* obj[key], failing the test unless it is a string / an integer. */
const char *str(const json_t *obj, const char *key);
json_int_t num(const json_t *obj, const char *key);

/* Whether the array arr holds the string s. */
bool has(const json_t *arr, const char *s);

/* Asserts that arr is exactly the given strings (NULL-terminated). */
void assert_strings(const json_t *arr, ...) __attribute__((sentinel));

/* A small message builder for hand-made variants. */
struct msg {
    uint8_t b[8192];
    size_t n;
};

void put8(struct msg *m, uint8_t v);
void put16(struct msg *m, uint16_t v);
void put24(struct msg *m, uint32_t v);
void putn(struct msg *m, const void *p, size_t n);

/*
 * Opens a length-prefixed block of `width` bytes (a zero length for now);
 * close_block() fills in the length of what was put since.
 */
size_t open_block(struct msg *m, int width);
void close_block(struct msg *m, size_t at, int width);

#endif
