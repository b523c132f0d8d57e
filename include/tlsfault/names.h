/*
 * names.h — IANA names for TLS code points.
 *
 * Sources: the IANA "TLS Parameters" and "TLS ExtensionType Values"
 * registries, RFC 8446 (TLS 1.3), RFC 5246 (TLS 1.2), RFC 8701 (GREASE).
 * Every function returns a static string, or NULL when the code point is not
 * in our tables; callers then show the number (see tf_names_or_code()).
 */
#ifndef TLSFAULT_NAMES_H
#define TLSFAULT_NAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* "TLS 1.3", "TLS 1.2", "TLS 1.1", "TLS 1.0", "SSL 3.0", "DTLS 1.2", ... */
const char *tf_names_version(uint16_t version);
/* "TLS_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", ... */
const char *tf_names_cipher_suite(uint16_t suite);
/* "server_name", "supported_versions", "key_share", ... */
const char *tf_names_extension(uint16_t type);
/* "x25519", "secp256r1", "ffdhe2048", "X25519MLKEM768", ... */
const char *tf_names_group(uint16_t group);
/* "rsa_pss_rsae_sha256", "ecdsa_secp256r1_sha256", "rsa_pkcs1_sha1", ... */
const char *tf_names_sigscheme(uint16_t scheme);
/* "close_notify", "handshake_failure", "protocol_version", ... */
const char *tf_names_alert(uint8_t description);
/* "warning", "fatal" */
const char *tf_names_alert_level(uint8_t level);
/* "client_hello", "server_hello", "certificate", ... (RFC 8446 §4 / RFC 5246 §7.4) */
const char *tf_names_handshake_type(uint8_t type);
/* "change_cipher_spec", "alert", "handshake", "application_data", "heartbeat" */
const char *tf_names_content_type(uint8_t type);
/* "uncompressed", "ansiX962_compressed_prime", ... */
const char *tf_names_ec_point_format(uint8_t format);
/* "psk_ke", "psk_dhe_ke" */
const char *tf_names_psk_mode(uint8_t mode);
/* "null", "deflate" */
const char *tf_names_compression(uint8_t method);
/* "ocsp", "ocsp_multi" */
const char *tf_names_cert_status_type(uint8_t type);
/* "rsa_sign", "ecdsa_sign", ... (ClientCertificateType, TLS 1.2 CertificateRequest) */
const char *tf_names_client_cert_type(uint8_t type);

/* RFC 8701: 0x0a0a, 0x1a1a, ... 0xfafa. */
bool tf_names_is_grease(uint16_t value);

/*
 * Writes name into buf, or "GREASE" for GREASE values, or "unknown(0xNNNN)".
 * Returns buf.  Handy for text output; JSON keeps the number beside.
 */
const char *tf_names_or_code(const char *name, uint16_t code, char *buf, size_t buflen);

#endif
