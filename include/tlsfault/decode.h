/*
 * decode.h — decoders for the handshake messages that travel in clear.
 *
 * Each decoder reads one complete handshake message body (the bytes after
 * the 4-byte type+length header) through a bounded cursor and adds its
 * fields to a jansson object that becomes the "handshake" event.  Code
 * points appear by IANA name; a value our tables do not know keeps its
 * number as a "0x%04x" string (e.g. "0xfe0d"), alone or in a list.
 * GREASE values (RFC 8701) appear as "GREASE".
 *
 * A decoder returns false when the message is malformed; the object then
 * holds "malformed": "<what was wrong>" plus the fields read before it.
 * Decoders never read outside the body they are given and never allocate
 * except through jansson.
 */
#ifndef TLSFAULT_DECODE_H
#define TLSFAULT_DECODE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What the rest of the proxy needs from a ServerHello besides the event. */
struct tf_server_hello_info {
    uint16_t legacy_version;  /* the legacy_version field */
    uint16_t version;         /* negotiated: supported_versions if present, else legacy_version */
    uint16_t cipher_suite;
    bool hello_retry_request; /* random equals the HRR constant, RFC 8446 §4.1.3 */
    bool downgrade_sentinel;  /* random ends with DOWNGRD\x01 or \x00 (RFC 8446 §4.1.3) */
};

/* What the rest of the proxy needs from a ClientHello. */
struct tf_client_hello_info {
    bool has_sni;
    char sni[256];            /* printable host name, NUL-terminated; "" if absent */
    uint16_t max_version;     /* highest offered version (supported_versions or legacy) */
};

/*
 * Empties this thread's caches (certificate summaries, code-point lists;
 * the names' strings are jsontext's: tf_json_unpacked_drop); a thread's
 * end does it too.  For fuzzing: each input decoded from a cold start, and
 * nothing it made outlives it.
 */
void tf_decode_caches_drop(void);

/*
 * ClientHello (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2).  Fields:
 *   legacy_version, random (hex), session_id_length, cipher_suites [names],
 *   cipher_suites_count, compression_methods [names], extensions [names in
 *   wire order], and decoded extensions: server_name, supported_versions,
 *   alpn, supported_groups, key_share (groups), signature_algorithms,
 *   psk_key_exchange_modes, status_request, ec_point_formats,
 *   renegotiation_info, extended_master_secret, session_ticket (length),
 *   encrypt_then_mac, early_data, pre_shared_key, encrypted_client_hello,
 *   record_size_limit, padding (length).
 * info may be NULL.
 */
bool tf_decode_client_hello(const uint8_t *body, size_t len, json_t *obj,
                            struct tf_client_hello_info *info);

/*
 * ServerHello or HelloRetryRequest (same wire message).  Fields:
 *   legacy_version, version (negotiated), random (hex), downgrade_sentinel
 *   (only when present: "tls12" or "tls11"), session_id_length,
 *   cipher_suite, compression_method, extensions [names], and decoded
 *   supported_versions (selected), key_share (group), alpn, and for HRR
 *   the requested key_share group and cookie length.
 * info may be NULL.
 */
bool tf_decode_server_hello(const uint8_t *body, size_t len, json_t *obj,
                            struct tf_server_hello_info *info);

/*
 * Certificate.  tls13 selects the TLS 1.3 layout (context + per-entry
 * extensions, RFC 8446 §4.4.2) over TLS 1.2's (RFC 5246 §7.4.2).
 * Fields: chain_length and chain [ { subject, issuer, san [..], not_before,
 * not_after (RFC 3339), key_type ("RSA", "EC", "Ed25519", ...), key_bits,
 * signature_algorithm, eku [..], is_ca, self_signed } ], parsed with
 * OpenSSL's d2i_X509.  An entry OpenSSL cannot parse becomes {"unparsable":
 * length} without failing the whole message.
 */
bool tf_decode_certificate(const uint8_t *body, size_t len, bool tls13, json_t *obj);

/* CertificateStatus (RFC 6066 §8): status_type, ocsp_response_length. */
bool tf_decode_certificate_status(const uint8_t *body, size_t len, json_t *obj);

/*
 * ServerKeyExchange (RFC 8422 §5.4 for ECDHE, RFC 5246 §7.4.3 for DHE).
 * The message does not say which it is; the cipher suite does, so the
 * caller passes the negotiated suite.  Fields: kex ("ECDHE"/"DHE"/...),
 * group (ECDHE) or dh_p_bits (DHE), signature_algorithm.
 */
bool tf_decode_server_key_exchange(const uint8_t *body, size_t len, uint16_t cipher_suite,
                                   json_t *obj);

/*
 * CertificateRequest.  TLS 1.2: certificate_types, signature_algorithms,
 * ca_names_count.  TLS 1.3 (tls13): context_length, extensions [names],
 * signature_algorithms.
 */
bool tf_decode_certificate_request(const uint8_t *body, size_t len, bool tls13, json_t *obj);

/* ClientKeyExchange: exchange_length (the key itself is never logged). */
bool tf_decode_client_key_exchange(const uint8_t *body, size_t len, json_t *obj);

/* NewSessionTicket (RFC 5077 §3.3 for TLS 1.2): lifetime_hint, ticket_length. */
bool tf_decode_new_session_ticket(const uint8_t *body, size_t len, json_t *obj);

/* An alert record's body: level, description (names); false unless 2 bytes. */
bool tf_decode_alert(const uint8_t *body, size_t len, json_t *obj);

/*
 * Any handshake message by type: calls the decoder above that fits (types
 * without one add nothing).  tls13 and cipher_suite pick the layouts that
 * depend on them; ch / sh (may be NULL) receive what the hellos say.
 * *name is set to the message's name ("hello_retry_request" for a
 * ServerHello that is one; "unknown(N)" in name_buf for an unknown type).
 * Returns false when the message is malformed.
 */
bool tf_decode_handshake(uint8_t type, const uint8_t *body, size_t len, bool tls13,
                         uint16_t cipher_suite, json_t *obj, struct tf_client_hello_info *ch,
                         struct tf_server_hello_info *sh, const char **name, char *name_buf,
                         size_t name_len);

#endif
