/*
 * forge.h — the lab CA, and leaf certificates forged from the upstream's.
 *
 * In mitm mode tlsfault answers the client with a certificate of its own
 * making: it copies what the client checks from the upstream's leaf
 * (subject, subjectAltName, validity), or makes it up from the SNI, and
 * signs it with the lab intermediate.  Certificate faults are mutations of
 * that forgery (an expired one, one for another host, one from a root the
 * client does not trust, ...), so a client meets the exact misconfiguration
 * a real server would show it.
 *
 * Keys are never generated per connection: a forge holds one RSA-2048 and
 * one ECDSA P-256 leaf key made at start-up (and an RSA-1024 one for
 * cert-weak-key), and forged chains are cached (LRU keyed by the upstream
 * certificate's SHA-256, the SNI and the mutation), so a repeated site costs
 * one signature at most once.  A forge is not thread-safe: each worker owns
 * one, sharing the CA material by reference.
 *
 * CA private keys are never written to logs or error messages.
 */
#ifndef TLSFAULT_FORGE_H
#define TLSFAULT_FORGE_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

/* What a forged chain should get wrong. */
enum tf_cert_mutation {
    TF_CERT_GOOD = 0,
    TF_CERT_EXPIRED,        /* notAfter `seconds` in the past (notBefore a year before it) */
    TF_CERT_NOT_YET_VALID,  /* notBefore `seconds` in the future */
    TF_CERT_WRONG_HOST,     /* SANs (and CN) replaced by `host` */
    TF_CERT_SELF_SIGNED,    /* the leaf signs itself; sent alone */
    TF_CERT_UNTRUSTED_ROOT, /* leaf + intermediate of the second, untrusted lab root */
    TF_CERT_NO_INTERMEDIATE,/* leaf only: the incomplete chain */
    TF_CERT_WRONG_EKU,      /* extendedKeyUsage clientAuth only */
    TF_CERT_SHA1,           /* leaf signed with sha1WithRSAEncryption / ecdsa-with-SHA1 */
    TF_CERT_WEAK_KEY,       /* RSA-1024 leaf key */
};

struct tf_cert_fault {
    enum tf_cert_mutation mutation;
    long seconds;           /* expired / not-yet-valid: how far off (default 30 days) */
    const char *host;       /* wrong-host: the name the certificate is for */
};

/* The lab CA material, loaded once and shared (read-only) by all workers. */
struct tf_lab_ca;

/*
 * Writes a new lab CA into dir (created 0700 if missing): root.pem,
 * root.key, intermediate.pem, intermediate.key, untrusted-root.pem,
 * untrusted-root.key, untrusted-intermediate.pem,
 * untrusted-intermediate.key (keys 0600), and README.txt telling how to
 * trust root.pem.  Refuses to overwrite an existing root.pem.  Returns
 * false with the reason in err.
 */
bool tf_lab_ca_init(const char *dir, char *err, size_t errlen);

/*
 * Loads a lab CA.  dir: a directory made by tf_lab_ca_init; or, when dir
 * is NULL, cert/key (the signing CA: root or intermediate), chain (PEM
 * file of certificates sent after the leaf; may be NULL), and
 * untrusted_cert/untrusted_key (may be NULL: cert-untrusted-root then
 * makes a throwaway root at load time).  Checks that each key matches its
 * certificate and that the signing certificate is a CA.
 */
struct tf_lab_ca *tf_lab_ca_load(const char *dir, const char *cert, const char *key,
                                 const char *chain, const char *untrusted_cert,
                                 const char *untrusted_key, char *err, size_t errlen);
void tf_lab_ca_free(struct tf_lab_ca *ca);

/* The certificate clients should trust (root.pem), for messages and tests. */
X509 *tf_lab_ca_root(const struct tf_lab_ca *ca);

struct tf_forge;

/*
 * Which key a forged leaf gets.  BOTH: two leaves, one of the upstream's
 * key type and one of the other (RSA-2048 / ECDSA P-256), both served so
 * OpenSSL picks per client as for any server with two certificates: an
 * ECDSA signature costs the proxy a tenth of an RSA-2048 one, and a
 * client that cannot take ECDSA still gets RSA.  UPSTREAM: the upstream
 * leaf's type only (RSA when unknown).  RSA, ECDSA: that type only.
 * cert-weak-key always gets one RSA-1024 leaf.
 */
enum tf_leaf_keys {
    TF_LEAF_KEYS_BOTH = 0,
    TF_LEAF_KEYS_UPSTREAM,
    TF_LEAF_KEYS_RSA,
    TF_LEAF_KEYS_ECDSA,
};

/* A per-worker forge: leaf keys made now, cache of `cache_size` chains. */
struct tf_forge *tf_forge_new(const struct tf_lab_ca *ca, size_t cache_size,
                              enum tf_leaf_keys keys, char *err, size_t errlen);
void tf_forge_free(struct tf_forge *fg);

/* A forged chain to serve; references owned by the caller (tf_forged_release). */
struct tf_forged {
    X509 *leaf;
    EVP_PKEY *key;
    X509 *alt_leaf;         /* TF_LEAF_KEYS_BOTH: the same leaf with the other key type */
    EVP_PKEY *alt_key;
    STACK_OF(X509) *chain;  /* certificates after the leaf(s), in order; may be empty */
    bool cached;            /* came from the cache */
};

/*
 * Forges a chain for a client.  upstream: the server's leaf (NULL when
 * the upstream is unusable: subject and SAN are then made from sni, which
 * must then be non-NULL).  The leaf key(s) follow the forge's
 * tf_leaf_keys.  Returns false with the reason in err.
 */
bool tf_forge_chain(struct tf_forge *fg, X509 *upstream, const char *sni,
                    const struct tf_cert_fault *fault, struct tf_forged *out, char *err,
                    size_t errlen);
void tf_forged_release(struct tf_forged *f);

/* Cache counters, for stats and tests. */
void tf_forge_stats(const struct tf_forge *fg, unsigned long *hits, unsigned long *misses);

#endif
