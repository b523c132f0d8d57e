/*
 * testdata.h — loads the captured handshakes in tests/data/ for unit tests.
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

#endif
