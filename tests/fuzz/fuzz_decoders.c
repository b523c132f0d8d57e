/*
 * fuzz_decoders.c — libFuzzer target for every decoder of decode.h, through
 * the dispatch the inspector and mitm use (tf_decode_handshake), plus
 * tf_decode_alert.
 *
 * Input layout:
 *   byte 0      the handshake type: below 0xc0 an index into fuzz_types
 *               (the types with a decoder, and some without), else the
 *               byte itself minus 0xc0 plus any value (byte 0 ^ byte 1)
 *   byte 1      bit 0: TLS 1.3 layouts (Certificate, CertificateRequest);
 *               bit 1: no ch / sh info structures (NULL);
 *               bit 2: the cipher suite is fuzz_suites[byte 2 % N]
 *   bytes 2..3  the negotiated cipher suite (big endian) unless bit 2
 *   the rest    the message body (after the 4-byte handshake header)
 *
 * Besides not crashing, each decoder keeps the contract of decode.h: false
 * leaves "malformed" with a reason, the message gets a name, the event
 * serialises (and the event writer of jsontext.h renders it exactly as
 * jansson does), and the same bytes decode to the same event twice.  The body
 * also goes to tf_decode_alert (true exactly for 2 bytes).
 * Seeds: corpus/fuzz_decoders/ (every captured message of tests/data/ with
 * its type, layout and suite); made by tests/fuzz/make_seeds.py.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tlsfault/decode.h"
#include "tlsfault/handshake.h"
#include "tlsfault/jsontext.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t fuzz_types[] = {
    TF_HS_CLIENT_HELLO,        TF_HS_SERVER_HELLO,        TF_HS_CERTIFICATE,
    TF_HS_CERTIFICATE_STATUS,  TF_HS_SERVER_KEY_EXCHANGE, TF_HS_CERTIFICATE_REQUEST,
    TF_HS_CLIENT_KEY_EXCHANGE, TF_HS_NEW_SESSION_TICKET,  TF_HS_HELLO_REQUEST,
    TF_HS_ENCRYPTED_EXTENSIONS, TF_HS_SERVER_HELLO_DONE,  TF_HS_CERTIFICATE_VERIFY,
    TF_HS_FINISHED,            TF_HS_KEY_UPDATE,          TF_HS_END_OF_EARLY_DATA,
    TF_HS_MESSAGE_HASH,
};

/* Suites that pick each ServerKeyExchange layout, and some that have none. */
static const uint16_t fuzz_suites[] = {
    0xc02f, /* ECDHE-RSA-AES128-GCM */
    0xc02b, /* ECDHE-ECDSA-AES128-GCM */
    0xcca8, /* ECDHE-RSA-CHACHA20 */
    0x009e, /* DHE-RSA-AES128-GCM */
    0x0033, /* DHE-RSA-AES128-SHA */
    0x002f, /* RSA-AES128-SHA */
    0x00a8, /* PSK-AES128-GCM */
    0xc0a4, /* PSK-AES128-CCM */
    0x00aa, /* DHE-PSK-AES128-GCM */
    0xc035, /* ECDHE-PSK-AES128-CBC */
    0x1301, /* TLS_AES_128_GCM_SHA256 */
    0x0000, /* TLS_NULL_WITH_NULL_NULL */
    0xfefe, /* unknown */
};

static void
fuzz_check(bool ok)
{
    if (!ok)
        abort();
}

/* One decode; returns the event's text (caller frees). */
static char *
fuzz_decode(uint8_t type, const uint8_t *body, size_t len, bool tls13, uint16_t suite,
            bool with_info, bool *ok_out)
{
    struct tf_client_hello_info ch;
    struct tf_server_hello_info sh;
    json_t *obj = json_object();
    const char *name = NULL;
    char name_buf[32];
    char *text;
    bool ok;

    fuzz_check(obj != NULL);
    memset(&ch, 0xa5, sizeof(ch));
    memset(&sh, 0xa5, sizeof(sh));
    memset(name_buf, 'Z', sizeof(name_buf));
    ok = tf_decode_handshake(type, body, len, tls13, suite, obj, with_info ? &ch : NULL,
                             with_info ? &sh : NULL, &name, name_buf, sizeof(name_buf));
    fuzz_check(name != NULL && name[0] != '\0');
    if (name == name_buf)
        fuzz_check(memchr(name_buf, '\0', sizeof(name_buf)) != NULL);
    if (!ok)
        fuzz_check(json_is_string(json_object_get(obj, "malformed")) &&
                   json_string_length(json_object_get(obj, "malformed")) > 0);
    if (with_info && type == TF_HS_CLIENT_HELLO) {
        fuzz_check(memchr(ch.sni, '\0', sizeof(ch.sni)) != NULL);
        fuzz_check(ch.has_sni == (ch.sni[0] != '\0'));
    }
    if (with_info && type == TF_HS_SERVER_HELLO && ok) {
        fuzz_check(!(sh.hello_retry_request && sh.downgrade_sentinel));
        fuzz_check((strcmp(name, "hello_retry_request") == 0) == sh.hello_retry_request);
    }
    /* The event writer (jsontext.h) renders the event as jansson does, byte for byte. */
    {
        static char line[1 << 18];
        size_t used = 0;
        char *want = json_dumps(obj, JSON_COMPACT);
        fuzz_check(want != NULL);
        if (tf_json_write(obj, false, line, sizeof(line), &used))
            fuzz_check(used == strlen(want) && memcmp(line, want, used) == 0);
        else
            fuzz_check(strlen(want) > sizeof(line));
        free(want);
    }
    text = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
    fuzz_check(text != NULL);
    json_decref(obj);
    *ok_out = ok;
    return text;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t type;
    bool tls13, with_info, ok1, ok2;
    uint16_t suite;
    const uint8_t *body;
    size_t len;
    uint8_t *copy;
    char *a, *b;

    if (size < 4)
        return 0;
    if (data[0] < 0xc0)
        type = fuzz_types[data[0] % sizeof(fuzz_types)];
    else
        type = (uint8_t)(data[0] ^ data[1]);
    tls13 = (data[1] & 1) != 0;
    with_info = (data[1] & 2) == 0;
    if (data[1] & 4)
        suite = fuzz_suites[data[2] % (sizeof(fuzz_suites) / sizeof(fuzz_suites[0]))];
    else
        suite = (uint16_t)((data[2] << 8) | data[3]);
    len = size - 4;
    /* An allocation of exactly the body: ASan sees a read past its end. */
    copy = malloc(len ? len : 1);
    fuzz_check(copy != NULL);
    memcpy(copy, data + 4, len);
    body = copy;

    a = fuzz_decode(type, body, len, tls13, suite, with_info, &ok1);
    b = fuzz_decode(type, body, len, tls13, suite, !with_info, &ok2);
    /* Whether the caller wants the info changes nothing in the event. */
    if (ok1 != ok2 || strcmp(a, b) != 0)
        abort();
    free(a);
    free(b);

    json_t *alert = json_object();
    bool ok = tf_decode_alert(body, len, alert);
    fuzz_check(ok == (len == 2));
    char *text = json_dumps(alert, JSON_COMPACT);
    fuzz_check(text != NULL);
    free(text);
    json_decref(alert);
    free(copy);
    tf_decode_caches_drop(); /* the next input starts cold (decode.h, jsontext.h) */
    tf_json_unpacked_drop();
    return 0;
}
