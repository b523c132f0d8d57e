/*
 * testdata.c — loads the captured handshakes in tests/data/ (see testdata.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testdata.h"

bool
tf_testdata_load(const char *name, uint8_t **buf, size_t *len)
{
    const char *srcdir = getenv("TF_SRCDIR");
    char path[4096];
    uint8_t *data = NULL;
    size_t have = 0, cap = 0;
    FILE *f;
    bool ok = false;

    *buf = NULL;
    *len = 0;
    if (srcdir == NULL || *srcdir == '\0')
        srcdir = ".";
    if ((size_t)snprintf(path, sizeof(path), "%s/tests/data/%s", srcdir, name) >= sizeof(path))
        return false;
    f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "# testdata: %s: %s\n", path, strerror(errno));
        return false;
    }
    /* Read in growing chunks rather than trusting a size taken before reading. */
    for (;;) {
        if (have == cap) {
            size_t ncap = cap ? cap * 2 : 4096;
            uint8_t *n = realloc(data, ncap);
            if (n == NULL)
                goto done;
            data = n;
            cap = ncap;
        }
        size_t got = fread(data + have, 1, cap - have, f);
        have += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        fprintf(stderr, "# testdata: %s: read error\n", path);
        goto done;
    }
    ok = true;
done:
    fclose(f);
    if (!ok) {
        free(data);
        return false;
    }
    *buf = data;
    *len = have;
    return true;
}
