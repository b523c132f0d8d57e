/*
 * replay.c — runs a fuzz target over its corpus without libFuzzer, so that
 * `make check` replays every seed and every past crash under the sanitizers
 * with any compiler.
 *
 * Usage: fuzz_<name> [FILE|DIR]...  With no arguments the corpus is
 * $TF_SRCDIR/tests/fuzz/corpus/<program name>/ (TF_SRCDIR defaults to ".").
 * Prints TAP: one test that passes when at least one input was replayed
 * and every file could be read; a crash is left to the sanitizers.  Built
 * with libFuzzer (-DTF_LIBFUZZER) this file is empty: libFuzzer brings its
 * own main().
 */
#ifndef TF_LIBFUZZER

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct replay {
    size_t inputs;
    size_t errors;
};

/* Reads a whole file into an allocation of exactly its size (ASan sees overreads). */
static uint8_t *
replay_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL, *exact;
    size_t have = 0, cap = 0, got;

    if (f == NULL)
        return NULL;
    do {
        if (have == cap) {
            uint8_t *n = realloc(buf, cap ? cap * 2 : 4096);
            if (n == NULL) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = n;
            cap = cap ? cap * 2 : 4096;
        }
        got = fread(buf + have, 1, cap - have, f);
        have += got;
    } while (got > 0);
    if (ferror(f)) {
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    exact = malloc(have ? have : 1);
    if (exact != NULL && have > 0)
        memcpy(exact, buf, have);
    free(buf);
    *len = have;
    return exact;
}

static void
replay_file(struct replay *r, const char *path)
{
    size_t len = 0;
    uint8_t *data = replay_read(path, &len);

    if (data == NULL) {
        printf("# cannot read %s: %s\n", path, strerror(errno));
        r->errors++;
        return;
    }
    /* Named before it runs, so a sanitizer report can be traced to its input. */
    fprintf(stderr, "# replaying %s (%zu bytes)\n", path, len);
    LLVMFuzzerTestOneInput(data, len);
    free(data);
    r->inputs++;
}

static int
replay_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Every regular file in dir, in name order so that runs are repeatable. */
static void
replay_dir(struct replay *r, const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL;
    size_t n = 0, cap = 0;

    if (d == NULL) {
        printf("# cannot open %s: %s\n", dir, strerror(errno));
        r->errors++;
        return;
    }
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            char **more = realloc(names, (cap ? cap * 2 : 64) * sizeof(*names));
            if (more == NULL)
                break;
            names = more;
            cap = cap ? cap * 2 : 64;
        }
        names[n] = strdup(e->d_name);
        if (names[n] != NULL)
            n++;
    }
    closedir(d);
    if (n > 0)
        qsort(names, n, sizeof(*names), replay_cmp);
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        struct stat st;

        if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, names[i]) < sizeof(path) &&
            stat(path, &st) == 0 && S_ISREG(st.st_mode))
            replay_file(r, path);
        free(names[i]);
    }
    free(names);
}

static void
replay_path(struct replay *r, const char *path)
{
    struct stat st;

    if (stat(path, &st) != 0) {
        printf("# cannot stat %s: %s\n", path, strerror(errno));
        r->errors++;
    } else if (S_ISDIR(st.st_mode)) {
        replay_dir(r, path);
    } else {
        replay_file(r, path);
    }
}

int
main(int argc, char **argv)
{
    struct replay r = {0, 0};

    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            replay_path(&r, argv[i]);
    } else {
        const char *srcdir = getenv("TF_SRCDIR");
        const char *name = strrchr(argv[0], '/');
        char dir[4096];

        name = name ? name + 1 : argv[0];
        /* A libtool wrapper would run us as lt-<name>. */
        if (strncmp(name, "lt-", 3) == 0)
            name += 3;
        if (srcdir == NULL || *srcdir == '\0')
            srcdir = ".";
        snprintf(dir, sizeof(dir), "%s/tests/fuzz/corpus/%s", srcdir, name);
        replay_path(&r, dir);
    }
    printf("1..1\n");
    if (r.inputs == 0 || r.errors > 0) {
        printf("not ok 1 - replayed %zu inputs, %zu unreadable\n", r.inputs, r.errors);
        return 1;
    }
    printf("ok 1 - replayed %zu inputs\n", r.inputs);
    return 0;
}

#endif /* TF_LIBFUZZER */
