/*
 * fuzz_certificate.c — libFuzzer target for tf_decode_certificate().
 *
 * The input is a Certificate body (after the 4-byte handshake header); it
 * is decoded with both layouts, TLS 1.2's and TLS 1.3's, since the same
 * bytes reach the decoder either way.  The DER inside goes to OpenSSL, so
 * this also checks that we never hand it more than the entry holds and
 * that we free what it returns.  Seeds: corpus/fuzz_certificate/.
 */
#include <stdlib.h>

#include "tlsfault/decode.h"
#include "tlsfault/jsontext.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fuzz_certificate_layout(const uint8_t *data, size_t size, bool tls13)
{
    json_t *obj = json_object();
    char *text;

    if (!tf_decode_certificate(data, size, tls13, obj) &&
        !json_is_string(json_object_get(obj, "malformed")))
        abort();
    text = json_dumps(obj, JSON_COMPACT);
    if (text == NULL)
        abort();
    free(text);
    json_decref(obj);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_certificate_layout(data, size, false);
    fuzz_certificate_layout(data, size, true);
    tf_decode_caches_drop(); /* the next input starts cold (decode.h, jsontext.h) */
    tf_json_unpacked_drop();
    return 0;
}
