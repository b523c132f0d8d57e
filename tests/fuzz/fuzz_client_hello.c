/*
 * fuzz_client_hello.c — libFuzzer target for tf_decode_client_hello().
 *
 * The input is a ClientHello body (after the 4-byte handshake header), as
 * the handshake reader hands it over.  Besides not crashing, the decoder
 * must keep its contract: the SNI copy is NUL-terminated inside its buffer,
 * a failure says why, and the event serialises.  Seeds: corpus/fuzz_client_hello/.
 */
#include <stdlib.h>
#include <string.h>

#include "tlsfault/decode.h"
#include "tlsfault/jsontext.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tf_client_hello_info info;
    json_t *obj = json_object();
    char *text;
    bool ok;

    ok = tf_decode_client_hello(data, size, obj, &info);
    /* A host name is at least one byte, and shown escaped, never cut to nothing. */
    if (memchr(info.sni, '\0', sizeof(info.sni)) == NULL || info.has_sni != (info.sni[0] != '\0'))
        abort();
    if (!ok && !json_is_string(json_object_get(obj, "malformed")))
        abort();
    text = json_dumps(obj, JSON_COMPACT);
    if (text == NULL)
        abort();
    free(text);
    json_decref(obj);
    tf_decode_caches_drop(); /* the next input starts cold (decode.h, jsontext.h) */
    tf_json_unpacked_drop();
    return 0;
}
