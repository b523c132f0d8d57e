/*
 * fuzz_server_hello.c — libFuzzer target for tf_decode_server_hello().
 *
 * The input is a ServerHello or HelloRetryRequest body (after the 4-byte
 * handshake header).  Besides not crashing, a failure must say why and the
 * event must serialise.  Seeds: corpus/fuzz_server_hello/.
 */
#include <stdlib.h>

#include "tlsfault/decode.h"
#include "tlsfault/jsontext.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tf_server_hello_info info;
    json_t *obj = json_object();
    char *text;
    bool ok;

    ok = tf_decode_server_hello(data, size, obj, &info);
    if (!ok && !json_is_string(json_object_get(obj, "malformed")))
        abort();
    /* An HRR is never also a downgrade: its random is a fixed constant. */
    if (ok && info.hello_retry_request && info.downgrade_sentinel)
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
