/*
 * jsonalloc.h — jansson's memory, kept per thread between connections.
 *
 * A connection's events are a few hundred small jansson allocations, all
 * freed within the same callback or soon after.  glibc's per-thread cache
 * keeps 7 blocks of each size, so most of those frees and the next
 * connection's allocations went through its arenas instead (with their
 * locks and bin searches: a fifth of the proxy's user-space instructions
 * per connection).  Installed, jansson allocates through a cache of its
 * own per thread: up to JSONALLOC_KEEP blocks per 16-byte size class up to
 * JSONALLOC_MAX bytes, JSONALLOC_BYTES in all (what an idle connection is
 * charged for it stays a rounding error).  The blocks are malloc's own (no
 * header, no extra byte per block): free() takes any of them, a block
 * freed on another thread simply joins that thread's cache, and a thread's
 * end gives its cache back to malloc.
 *
 * Under AddressSanitizer it installs nothing: the sanitizer's own
 * allocator then sees every use after free.
 */
#ifndef TLSFAULT_JSONALLOC_H
#define TLSFAULT_JSONALLOC_H

#include <stdbool.h>
#include <stddef.h>

#define JSONALLOC_MAX 512
#define JSONALLOC_KEEP 256
#define JSONALLOC_BYTES (64 * 1024)

/*
 * Makes jansson allocate through the cache (json_set_alloc_funcs): call
 * once, before any JSON value exists.  False when it installed nothing
 * (a sanitizer build, or no thread-local key could be had).
 */
bool tf_json_alloc_install(void);

/* The calls jansson makes; exposed for the tests. */
void *tf_json_alloc(size_t n);
void tf_json_free(void *p);

/* Blocks this thread's cache holds now, in all and of the class a request of n takes (tests). */
size_t tf_json_alloc_cached(void);
size_t tf_json_alloc_cached_for(size_t n);

/* Gives this thread's cached blocks back to malloc (a thread's end does it too). */
void tf_json_alloc_drop(void);

#endif
