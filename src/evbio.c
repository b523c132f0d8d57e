/*
 * evbio.c — an OpenSSL BIO over an evbuffer (evbio.h).
 */
#include <pthread.h>
#include <stdint.h>

#include "tlsfault/evbio.h"

static BIO_METHOD *evbio_method;
static pthread_once_t evbio_once = PTHREAD_ONCE_INIT;

static int
evbio_write(BIO *b, const char *in, int inl)
{
    BIO_clear_retry_flags(b);
    if (inl <= 0)
        return 0;
    if (evbuffer_add(BIO_get_data(b), in, (size_t)inl) != 0)
        return -1;
    return inl;
}

static int
evbio_read(BIO *b, char *out, int outl)
{
    BIO_clear_retry_flags(b);
    if (outl <= 0)
        return 0;
    int n = evbuffer_remove(BIO_get_data(b), out, (size_t)outl);
    if (n <= 0) {
        BIO_set_retry_read(b);
        return -1;
    }
    return n;
}

static int
evbio_puts(BIO *b, const char *str)
{
    size_t n = 0;
    while (str[n] != '\0')
        n++;
    return evbio_write(b, str, n > INT32_MAX ? INT32_MAX : (int)n);
}

static long
evbio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num;
    (void)ptr;
    switch (cmd) {
    case BIO_CTRL_PENDING:
        return (long)evbuffer_get_length(BIO_get_data(b));
    case BIO_CTRL_WPENDING:
        return 0;
    case BIO_CTRL_EOF:
        return evbuffer_get_length(BIO_get_data(b)) == 0;
    case BIO_CTRL_FLUSH:
    case BIO_CTRL_DUP:
        return 1;
    default:
        return 0;
    }
}

static int
evbio_create(BIO *b)
{
    struct evbuffer *buf = evbuffer_new();
    if (buf == NULL)
        return 0;
    BIO_set_data(b, buf);
    BIO_set_init(b, 1);
    return 1;
}

static int
evbio_destroy(BIO *b)
{
    struct evbuffer *buf = BIO_get_data(b);
    if (buf != NULL)
        evbuffer_free(buf);
    BIO_set_data(b, NULL);
    return 1;
}

static void
evbio_init(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "tlsfault evbuffer");
    if (m == NULL)
        return;
    if (!BIO_meth_set_write(m, evbio_write) || !BIO_meth_set_read(m, evbio_read) ||
        !BIO_meth_set_puts(m, evbio_puts) || !BIO_meth_set_ctrl(m, evbio_ctrl) ||
        !BIO_meth_set_create(m, evbio_create) || !BIO_meth_set_destroy(m, evbio_destroy)) {
        BIO_meth_free(m);
        return;
    }
    evbio_method = m;
}

BIO *
tf_evbio_new(void)
{
    pthread_once(&evbio_once, evbio_init);
    return evbio_method != NULL ? BIO_new(evbio_method) : NULL;
}

struct evbuffer *
tf_evbio_buffer(BIO *bio)
{
    return BIO_get_data(bio);
}
