/*
 * forge.c — the lab CA, and leaf certificates forged from the upstream's.
 *
 * Job: make a lab CA on disk (two roots, each with an intermediate: one
 * the user trusts, one never trusted), load it (that layout, or a CA of
 * the user's own), and forge, per client, a leaf that copies what the
 * client checks from the upstream's leaf (subject, subjectAltName,
 * validity; RFC 5280 §4.1.2.5-6, §4.2.1.6) or makes it up from the SNI,
 * optionally wrong in one way (enum tf_cert_mutation).  Serving the chain
 * is mitm.c's business; which mutation a flow gets is the fault engine's.
 *
 * Profiles (RFC 5280 §4.2.1):
 *   root          CA:TRUE (critical), keyCertSign+cRLSign (critical), SKI; 10 years
 *   intermediate  CA:TRUE pathlen:0 (critical), keyCertSign+cRLSign (critical),
 *                 SKI, AKI; 5 years
 *   leaf          CA:FALSE (critical), digitalSignature (+keyEncipherment for
 *                 RSA) (critical), serverAuth, SKI, AKI, the SAN
 * A leaf never outlives the CA that signs it: a copied notAfter beyond the
 * issuer's is cut to the issuer's, or the client would see an error that
 * is ours, not the upstream's.  All certificates get random 128-bit
 * serials; all signatures are SHA-256 except the cert-sha1 one.
 *
 * Keys: one RSA-2048, one P-256 and one RSA-1024 leaf key per forge, made
 * in tf_forge_new (key generation costs milliseconds; a signature costs
 * about one).  Forged chains are kept in an LRU cache: a hash table over
 * a doubly linked list, keyed by SHA-256 over the upstream certificate's
 * SHA-256, the SNI (when the leaf depends on it) and the normalised fault,
 * so a repeated site costs no signature at all.
 *
 * Ownership: a tf_lab_ca owns its certificates, keys and chain stacks; it
 * is read-only after loading and shared by every worker's forge, which
 * borrows it (the CA must outlive its forges).  A cache entry owns one
 * reference to each object it holds; a tf_forged owns one more, given to
 * the caller.  Private keys are never put into messages.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "tlsfault/forge.h"
#include "tlsfault/log.h"

#define LAB_DAY (24L * 60 * 60)
#define LAB_ROOT_DAYS 3650
#define LAB_INTERMEDIATE_DAYS 1825
#define LAB_BACKDATE (60L * 60)         /* CA and SNI-made leaves start an hour ago (clock skew) */
#define FORGE_SNI_DAYS 90               /* a leaf made from the SNI alone */
#define FORGE_DEFAULT_SECONDS (30 * LAB_DAY)
#define FORGE_EXPIRED_SPAN_DAYS 365     /* cert-expired: notBefore this long before notAfter */
#define FORGE_NOT_YET_VALID_DAYS 90     /* cert-not-yet-valid: lifetime after notBefore */
#define FORGE_WRONG_HOST "wrong.host.invalid"
#define FORGE_ID_LEN 32

/* The files of a lab CA directory; root.pem first: it is the one whose presence refuses init. */
enum lab_file {
    LAB_ROOT_PEM,
    LAB_ROOT_KEY,
    LAB_INTERMEDIATE_PEM,
    LAB_INTERMEDIATE_KEY,
    LAB_UNTRUSTED_ROOT_PEM,
    LAB_UNTRUSTED_ROOT_KEY,
    LAB_UNTRUSTED_INTERMEDIATE_PEM,
    LAB_UNTRUSTED_INTERMEDIATE_KEY,
    LAB_README,
    LAB_FILE_COUNT,
};

static const struct {
    const char *name;
    mode_t mode;
} lab_files[LAB_FILE_COUNT] = {
    [LAB_ROOT_PEM] = {"root.pem", 0644},
    [LAB_ROOT_KEY] = {"root.key", 0600},
    [LAB_INTERMEDIATE_PEM] = {"intermediate.pem", 0644},
    [LAB_INTERMEDIATE_KEY] = {"intermediate.key", 0600},
    [LAB_UNTRUSTED_ROOT_PEM] = {"untrusted-root.pem", 0644},
    [LAB_UNTRUSTED_ROOT_KEY] = {"untrusted-root.key", 0600},
    [LAB_UNTRUSTED_INTERMEDIATE_PEM] = {"untrusted-intermediate.pem", 0644},
    [LAB_UNTRUSTED_INTERMEDIATE_KEY] = {"untrusted-intermediate.key", 0600},
    [LAB_README] = {"README.txt", 0644},
};

/*
 * One signing CA: the certificate and key that sign leaves, and what is
 * sent after the leaf (the signer itself unless it is a root, then any
 * configured chain).
 */
struct lab_signer {
    X509 *cert;
    EVP_PKEY *key;
    STACK_OF(X509) *chain;
};

struct tf_lab_ca {
    X509 *root;                 /* what clients trust */
    struct lab_signer trusted;
    struct lab_signer untrusted;
};

/* ---------------------------------------------------------------- errors */

static bool __attribute__((format(printf, 3, 4)))
lab_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    ERR_clear_error();
    if (err == NULL || errlen == 0)
        return false;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return false;
}

/* As lab_fail, with OpenSSL's error queue (drained) after the message. */
static bool __attribute__((format(printf, 3, 4)))
lab_fail_ssl(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0) {
        ERR_clear_error();
        return false;
    }
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    tf_log_openssl_errors(err, errlen);
    return false;
}

/* ------------------------------------------------------ certificate parts */

static EVP_PKEY *
lab_keygen(int type, unsigned bits)
{
    if (type == EVP_PKEY_EC)
        return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits);
}

/* 128 random bits: unpredictable, and unique enough that NSS never sees two issuer+serial twins. */
static bool
cert_set_random_serial(X509 *x)
{
    unsigned char b[16];
    BIGNUM *bn = NULL;
    ASN1_INTEGER *ai = NULL;
    bool ok = false;

    do {
        if (RAND_bytes(b, sizeof(b)) != 1)
            return false;
    } while (b[0] == 0 && memcmp(b, b + 1, sizeof(b) - 1) == 0);
    bn = BN_bin2bn(b, sizeof(b), NULL);
    if (bn != NULL)
        ai = BN_to_ASN1_INTEGER(bn, NULL);
    if (ai != NULL)
        ok = X509_set_serialNumber(x, ai) == 1;
    ASN1_INTEGER_free(ai);
    BN_free(bn);
    return ok;
}

/* A v3 certificate with a random serial, for subject and key; the rest is the caller's. */
static X509 *
cert_new(const X509_NAME *subject, EVP_PKEY *key)
{
    X509 *x = X509_new();

    if (x == NULL)
        return NULL;
    if (X509_set_version(x, X509_VERSION_3) != 1 || !cert_set_random_serial(x) ||
        X509_set_subject_name(x, subject) != 1 || X509_set_pubkey(x, key) != 1) {
        X509_free(x);
        return NULL;
    }
    return x;
}

/*
 * Adds one extension written in openssl.cnf syntax.  issuer is the signer
 * (for the AKI); NULL means x signs itself, with issuer_key.
 */
static bool
cert_add_ext(X509 *x, X509 *issuer, EVP_PKEY *issuer_key, int nid, const char *value)
{
    X509V3_CTX v3;
    X509_EXTENSION *ext;
    bool ok;

    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
    if (issuer == NULL && X509V3_set_issuer_pkey(&v3, issuer_key) != 1)
        return false;
    ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (ext == NULL)
        return false;
    ok = X509_add_ext(x, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return ok;
}

/* The digest X509_sign wants for key: none for EdDSA, which hashes by itself. */
static const EVP_MD *
cert_md(EVP_PKEY *key, const EVP_MD *want)
{
    int id = EVP_PKEY_get_base_id(key);
    return id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448 ? NULL : want;
}

static X509_NAME *
lab_name(const char *cn)
{
    X509_NAME *n = X509_NAME_new();

    if (n == NULL)
        return NULL;
    if (X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC, (const unsigned char *)"tlsfault lab",
                                   -1, -1, 0) != 1 ||
        X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1,
                                   0) != 1) {
        X509_NAME_free(n);
        return NULL;
    }
    return n;
}

/*
 * A CA certificate for key named cn: a root when issuer is NULL, else an
 * intermediate (pathlen:0) signed by issuer/issuer_key.
 */
static X509 *
lab_make_ca_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key, long days)
{
    X509_NAME *name = lab_name(cn);
    X509 *x = name != NULL ? cert_new(name, key) : NULL;
    bool ok = x != NULL;

    if (ok)
        ok = X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : name) == 1 &&
             X509_gmtime_adj(X509_getm_notBefore(x), -LAB_BACKDATE) != NULL &&
             X509_time_adj_ex(X509_getm_notAfter(x), (int)days, 0, NULL) != NULL;
    if (ok && issuer == NULL)
        ok = cert_add_ext(x, NULL, key, NID_basic_constraints, "critical,CA:TRUE") &&
             cert_add_ext(x, NULL, key, NID_key_usage, "critical,keyCertSign,cRLSign") &&
             cert_add_ext(x, NULL, key, NID_subject_key_identifier, "hash");
    else if (ok)
        ok = cert_add_ext(x, issuer, issuer_key, NID_basic_constraints,
                          "critical,CA:TRUE,pathlen:0") &&
             cert_add_ext(x, issuer, issuer_key, NID_key_usage,
                          "critical,keyCertSign,cRLSign") &&
             cert_add_ext(x, issuer, issuer_key, NID_subject_key_identifier, "hash") &&
             cert_add_ext(x, issuer, issuer_key, NID_authority_key_identifier, "keyid:always");
    if (ok) {
        EVP_PKEY *signer = issuer != NULL ? issuer_key : key;
        ok = X509_sign(x, signer, cert_md(signer, EVP_sha256())) > 0;
    }
    X509_NAME_free(name);
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

/* A root and its intermediate, in memory.  The root's key is returned only if root_key is not NULL. */
static bool
lab_make_hierarchy(const char *root_cn, const char *intermediate_cn, int key_type, X509 **root,
                   EVP_PKEY **root_key, X509 **inter, EVP_PKEY **inter_key)
{
    EVP_PKEY *rk = lab_keygen(key_type, 2048);
    EVP_PKEY *ik = lab_keygen(key_type, 2048);
    X509 *rc = NULL, *ic = NULL;

    if (rk != NULL && ik != NULL)
        rc = lab_make_ca_cert(root_cn, rk, NULL, NULL, LAB_ROOT_DAYS);
    if (rc != NULL)
        ic = lab_make_ca_cert(intermediate_cn, ik, rc, rk, LAB_INTERMEDIATE_DAYS);
    if (ic == NULL) {
        EVP_PKEY_free(rk);
        EVP_PKEY_free(ik);
        X509_free(rc);
        return false;
    }
    *root = rc;
    *inter = ic;
    *inter_key = ik;
    if (root_key != NULL)
        *root_key = rk;
    else
        EVP_PKEY_free(rk);
    return true;
}

/* ------------------------------------------------------------------ init */

static bool
lab_path(char *buf, size_t len, const char *dir, const char *name)
{
    int n = snprintf(buf, len, "%s/%s", dir, name);
    return n > 0 && (size_t)n < len;
}

enum lab_obj { LAB_OBJ_CERT, LAB_OBJ_KEY, LAB_OBJ_TEXT };

/* Creates dir/name (never over an existing file) with its mode, whatever the umask lets through. */
static bool
lab_write(const char *dir, enum lab_file f, enum lab_obj kind, const void *obj, char *err,
          size_t errlen)
{
    char path[PATH_MAX];
    int fd;
    FILE *fp;
    bool ok;

    if (!lab_path(path, sizeof(path), dir, lab_files[f].name))
        return lab_fail(err, errlen, "lab CA: path too long: %s/%s", dir, lab_files[f].name);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, lab_files[f].mode);
    if (fd < 0)
        return lab_fail(err, errlen, "lab CA: cannot create %s: %s", path, strerror(errno));
    /* Keys must not be readable by others even under a lax umask, or if open() raced. */
    if ((lab_files[f].mode & 077) == 0 && fchmod(fd, lab_files[f].mode) != 0) {
        int e = errno;
        close(fd);
        return lab_fail(err, errlen, "lab CA: cannot chmod %s: %s", path, strerror(e));
    }
    fp = fdopen(fd, "w");
    if (fp == NULL) {
        int e = errno;
        close(fd);
        return lab_fail(err, errlen, "lab CA: cannot write %s: %s", path, strerror(e));
    }
    switch (kind) {
    case LAB_OBJ_CERT:
        ok = PEM_write_X509(fp, (const X509 *)obj) == 1;
        break;
    case LAB_OBJ_KEY:
        ok = PEM_write_PrivateKey(fp, (const EVP_PKEY *)obj, NULL, NULL, 0, NULL, NULL) == 1;
        break;
    case LAB_OBJ_TEXT:
    default:
        ok = fputs((const char *)obj, fp) >= 0;
        break;
    }
    ok = fflush(fp) == 0 && ok;
    if (fclose(fp) != 0)
        ok = false;
    if (!ok)
        return lab_fail_ssl(err, errlen, "lab CA: cannot write %s", path);
    return true;
}

static char *
lab_readme(const char *dir, X509 *root)
{
    char abs[PATH_MAX];
    char root_path[PATH_MAX + 16];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    char fp[3 * EVP_MAX_MD_SIZE + 1] = "";
    char *text = NULL;
    size_t used = 0;

    if (realpath(dir, abs) == NULL)
        snprintf(abs, sizeof(abs), "%s", dir);
    snprintf(root_path, sizeof(root_path), "%s/root.pem", abs);
    if (X509_digest(root, EVP_sha256(), md, &mdlen) == 1)
        for (unsigned i = 0; i < mdlen; i++)
            used += (size_t)snprintf(fp + used, sizeof(fp) - used, "%s%02X", i ? ":" : "", md[i]);

    const char *r = root_path;
    int n = asprintf(
        &text,
        "tlsfault lab CA\n"
        "===============\n"
        "\n"
        "tlsfault (mitm mode) signs the certificates it forges with this CA.\n"
        "\n"
        "  root.pem                    the lab root: the one certificate to trust\n"
        "  root.key                    its private key\n"
        "  intermediate.pem, .key      signs the forged leaves; sent after each leaf\n"
        "  untrusted-root.pem, .key    a second root that must never be trusted\n"
        "  untrusted-intermediate.pem, .key\n"
        "                              signs the leaves of fault cert-untrusted-root\n"
        "\n"
        "root.pem SHA-256 fingerprint:\n"
        "  %s\n"
        "\n"
        "Whoever holds these keys can impersonate any site to a client that trusts\n"
        "root.pem: trust it on lab machines and in lab profiles only, and keep the\n"
        "*.key files (mode 0600) to yourself.\n"
        "\n"
        "Trusting root.pem\n"
        "-----------------\n"
        "curl:\n"
        "  curl --cacert %s https://lab.test/\n"
        "\n"
        "openssl s_client (without -verify_hostname it does not check the name):\n"
        "  openssl s_client -CAfile %s -verify_return_error \\\n"
        "      -verify_hostname lab.test -servername lab.test -connect 127.0.0.1:8443\n"
        "\n"
        "gnutls-cli (and wget, which uses GnuTLS: wget --ca-certificate=...):\n"
        "  gnutls-cli --x509cafile %s --sni-hostname lab.test \\\n"
        "      --verify-hostname lab.test -p 8443 127.0.0.1\n"
        "\n"
        "Python:\n"
        "  import ssl\n"
        "  ctx = ssl.create_default_context(cafile=\"%s\")\n"
        "\n"
        "System store (Debian/Ubuntu, as root; every client that uses the system store):\n"
        "  cp %s /usr/local/share/ca-certificates/tlsfault-lab.crt && update-ca-certificates\n"
        "  undo: rm /usr/local/share/ca-certificates/tlsfault-lab.crt && "
        "update-ca-certificates --fresh\n"
        "\n"
        "Chromium and Firefox (NSS database; Chromium reads $HOME/.pki/nssdb):\n"
        "  certutil -d sql:$HOME/.pki/nssdb -N --empty-password    # once, if there is none\n"
        "  certutil -d sql:$HOME/.pki/nssdb -A -t \"C,,\" -n tlsfault-lab -i %s\n"
        "  undo: certutil -d sql:$HOME/.pki/nssdb -D -n tlsfault-lab\n"
        "  Firefox keeps its database in its profile: use -d sql:PROFILE_DIR, or import\n"
        "  root.pem under Settings > Privacy & Security > Certificates > View Certificates\n"
        "  > Authorities.\n",
        fp, r, r, r, r, r, r);
    return n < 0 ? NULL : text;
}

/*
 * Generates everything in memory first, then writes the files; on any
 * failure removes what it wrote, so a directory never holds half a CA.
 */
bool
tf_lab_ca_init(const char *dir, char *err, size_t errlen)
{
    X509 *root = NULL, *inter = NULL, *uroot = NULL, *uinter = NULL;
    EVP_PKEY *root_key = NULL, *inter_key = NULL, *uroot_key = NULL, *uinter_key = NULL;
    char *readme = NULL;
    bool written[LAB_FILE_COUNT] = {false};
    char path[PATH_MAX];
    struct stat st;
    bool ok = false;

    if (dir == NULL || *dir == '\0')
        return lab_fail(err, errlen, "lab CA: no directory given");
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return lab_fail(err, errlen, "lab CA: cannot create directory %s: %s", dir,
                        strerror(errno));
    if (stat(dir, &st) != 0)
        return lab_fail(err, errlen, "lab CA: cannot use %s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return lab_fail(err, errlen, "lab CA: %s is not a directory", dir);
    for (int f = 0; f < LAB_FILE_COUNT; f++) {
        if (!lab_path(path, sizeof(path), dir, lab_files[f].name))
            return lab_fail(err, errlen, "lab CA: path too long: %s/%s", dir, lab_files[f].name);
        if (lstat(path, &st) == 0)
            return lab_fail(err, errlen, "lab CA: %s already exists; not overwriting it", path);
    }

    if (!lab_make_hierarchy("tlsfault lab root", "tlsfault lab intermediate", EVP_PKEY_RSA, &root,
                            &root_key, &inter, &inter_key) ||
        !lab_make_hierarchy("tlsfault untrusted root", "tlsfault untrusted intermediate",
                            EVP_PKEY_RSA, &uroot, &uroot_key, &uinter, &uinter_key)) {
        lab_fail_ssl(err, errlen, "lab CA: cannot make the certificates");
        goto out;
    }
    readme = lab_readme(dir, root);
    if (readme == NULL) {
        lab_fail(err, errlen, "lab CA: out of memory");
        goto out;
    }

    const struct {
        enum lab_file f;
        enum lab_obj kind;
        const void *obj;
    } plan[] = {
        {LAB_ROOT_PEM, LAB_OBJ_CERT, root},
        {LAB_ROOT_KEY, LAB_OBJ_KEY, root_key},
        {LAB_INTERMEDIATE_PEM, LAB_OBJ_CERT, inter},
        {LAB_INTERMEDIATE_KEY, LAB_OBJ_KEY, inter_key},
        {LAB_UNTRUSTED_ROOT_PEM, LAB_OBJ_CERT, uroot},
        {LAB_UNTRUSTED_ROOT_KEY, LAB_OBJ_KEY, uroot_key},
        {LAB_UNTRUSTED_INTERMEDIATE_PEM, LAB_OBJ_CERT, uinter},
        {LAB_UNTRUSTED_INTERMEDIATE_KEY, LAB_OBJ_KEY, uinter_key},
        {LAB_README, LAB_OBJ_TEXT, readme},
    };
    for (size_t i = 0; i < sizeof(plan) / sizeof(plan[0]); i++) {
        if (!lab_write(dir, plan[i].f, plan[i].kind, plan[i].obj, err, errlen))
            goto out;
        written[plan[i].f] = true;
    }
    ok = true;

out:
    if (!ok)
        for (int f = 0; f < LAB_FILE_COUNT; f++)
            if (written[f] && lab_path(path, sizeof(path), dir, lab_files[f].name))
                unlink(path);
    free(readme);
    X509_free(root);
    X509_free(inter);
    X509_free(uroot);
    X509_free(uinter);
    EVP_PKEY_free(root_key);
    EVP_PKEY_free(inter_key);
    EVP_PKEY_free(uroot_key);
    EVP_PKEY_free(uinter_key);
    return ok;
}

/* ------------------------------------------------------------------ load */

/* Encrypted keys are refused rather than prompted for: tlsfault may have no terminal. */
static int
lab_no_password_cb(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

static FILE *
lab_open(const char *path, char *err, size_t errlen)
{
    FILE *fp = fopen(path, "r");
    if (fp == NULL)
        lab_fail(err, errlen, "lab CA: cannot read %s: %s", path, strerror(errno));
    return fp;
}

static X509 *
lab_read_cert(const char *path, const char *label, char *err, size_t errlen)
{
    FILE *fp = lab_open(path, err, errlen);
    X509 *x;

    if (fp == NULL)
        return NULL;
    x = PEM_read_X509(fp, NULL, NULL, NULL);
    fclose(fp);
    if (x == NULL)
        lab_fail(err, errlen, "lab CA: %s (%s) holds no PEM certificate", label, path);
    return x;
}

static EVP_PKEY *
lab_read_key(const char *path, const char *label, char *err, size_t errlen)
{
    FILE *fp = lab_open(path, err, errlen);
    EVP_PKEY *k;

    if (fp == NULL)
        return NULL;
    k = PEM_read_PrivateKey(fp, NULL, lab_no_password_cb, NULL);
    fclose(fp);
    /* OpenSSL's reason may quote the file; the message stays ours so no key bytes can leak. */
    if (k == NULL)
        lab_fail(err, errlen,
                 "lab CA: %s (%s) holds no unencrypted PEM private key", label, path);
    return k;
}

/* Every certificate of a PEM file, in order; at least one. */
static STACK_OF(X509) *
lab_read_chain(const char *path, const char *label, char *err, size_t errlen)
{
    FILE *fp = lab_open(path, err, errlen);
    STACK_OF(X509) *sk;
    X509 *x;

    if (fp == NULL)
        return NULL;
    sk = sk_X509_new_null();
    while (sk != NULL && (x = PEM_read_X509(fp, NULL, NULL, NULL)) != NULL)
        if (sk_X509_push(sk, x) <= 0) {
            X509_free(x);
            sk_X509_pop_free(sk, X509_free);
            sk = NULL;
        }
    fclose(fp);
    ERR_clear_error();          /* the read that ended the loop */
    if (sk == NULL) {
        lab_fail(err, errlen, "lab CA: out of memory");
        return NULL;
    }
    if (sk_X509_num(sk) == 0) {
        sk_X509_free(sk);
        lab_fail(err, errlen, "lab CA: %s (%s) holds no PEM certificate", label, path);
        return NULL;
    }
    return sk;
}

static void
lab_signer_clear(struct lab_signer *s)
{
    X509_free(s->cert);
    EVP_PKEY_free(s->key);
    sk_X509_pop_free(s->chain, X509_free);
    memset(s, 0, sizeof(*s));
}

/*
 * Checks a signer (key matches, certificate is a CA) and builds what is
 * sent after its leaves: the signer itself unless it is a root (clients
 * have the root or fail anyway), then extra (taken over; may be NULL).
 */
static bool
lab_signer_finish(struct lab_signer *s, const char *cert_label, const char *key_label,
                  STACK_OF(X509) *extra, char *err, size_t errlen)
{
    if (X509_check_private_key(s->cert, s->key) != 1) {
        sk_X509_pop_free(extra, X509_free);
        return lab_fail(err, errlen, "lab CA: %s does not match %s", key_label, cert_label);
    }
    if (X509_check_ca(s->cert) == 0) {
        sk_X509_pop_free(extra, X509_free);
        return lab_fail(err, errlen, "lab CA: %s is not a CA certificate", cert_label);
    }
    s->chain = sk_X509_new_null();
    if (s->chain == NULL) {
        sk_X509_pop_free(extra, X509_free);
        return lab_fail(err, errlen, "lab CA: out of memory");
    }
    if (X509_self_signed(s->cert, 0) != 1) {
        if (!X509_add_cert(s->chain, s->cert, X509_ADD_FLAG_UP_REF)) {
            sk_X509_pop_free(extra, X509_free);
            return lab_fail(err, errlen, "lab CA: out of memory");
        }
    }
    while (extra != NULL && sk_X509_num(extra) > 0) {
        X509 *x = sk_X509_shift(extra);
        if (sk_X509_push(s->chain, x) <= 0) {
            X509_free(x);
            sk_X509_pop_free(extra, X509_free);
            return lab_fail(err, errlen, "lab CA: out of memory");
        }
    }
    sk_X509_free(extra);
    return true;
}

/* issuer must have signed cert: a directory whose files got mixed up says so now, not per flow. */
static bool
lab_check_issued(X509 *issuer, X509 *cert, const char *issuer_label, const char *cert_label,
                 char *err, size_t errlen)
{
    EVP_PKEY *pub = X509_get0_pubkey(issuer);

    if (X509_check_issued(issuer, cert) != X509_V_OK || pub == NULL ||
        X509_verify(cert, pub) != 1)
        return lab_fail(err, errlen, "lab CA: %s was not issued by %s", cert_label,
                        issuer_label);
    return true;
}

static X509 *
lab_dir_cert(const char *dir, enum lab_file f, char *err, size_t errlen)
{
    char path[PATH_MAX];

    if (!lab_path(path, sizeof(path), dir, lab_files[f].name)) {
        lab_fail(err, errlen, "lab CA: path too long: %s/%s", dir, lab_files[f].name);
        return NULL;
    }
    return lab_read_cert(path, lab_files[f].name, err, errlen);
}

static EVP_PKEY *
lab_dir_key(const char *dir, enum lab_file f, char *err, size_t errlen)
{
    char path[PATH_MAX];

    if (!lab_path(path, sizeof(path), dir, lab_files[f].name)) {
        lab_fail(err, errlen, "lab CA: path too long: %s/%s", dir, lab_files[f].name);
        return NULL;
    }
    return lab_read_key(path, lab_files[f].name, err, errlen);
}

/* The root keys stay on disk: nothing here signs with them. */
static bool
lab_load_dir(struct tf_lab_ca *ca, const char *dir, char *err, size_t errlen)
{
    X509 *uroot = NULL;
    bool ok;

    ok = (ca->root = lab_dir_cert(dir, LAB_ROOT_PEM, err, errlen)) != NULL &&
         (ca->trusted.cert = lab_dir_cert(dir, LAB_INTERMEDIATE_PEM, err, errlen)) != NULL &&
         (ca->trusted.key = lab_dir_key(dir, LAB_INTERMEDIATE_KEY, err, errlen)) != NULL &&
         (uroot = lab_dir_cert(dir, LAB_UNTRUSTED_ROOT_PEM, err, errlen)) != NULL &&
         (ca->untrusted.cert = lab_dir_cert(dir, LAB_UNTRUSTED_INTERMEDIATE_PEM, err, errlen)) !=
             NULL &&
         (ca->untrusted.key = lab_dir_key(dir, LAB_UNTRUSTED_INTERMEDIATE_KEY, err, errlen)) !=
             NULL &&
         lab_signer_finish(&ca->trusted, "intermediate.pem", "intermediate.key", NULL, err,
                           errlen) &&
         lab_signer_finish(&ca->untrusted, "untrusted-intermediate.pem",
                           "untrusted-intermediate.key", NULL, err, errlen) &&
         lab_check_issued(ca->root, ca->trusted.cert, "root.pem", "intermediate.pem", err,
                          errlen) &&
         lab_check_issued(uroot, ca->untrusted.cert, "untrusted-root.pem",
                          "untrusted-intermediate.pem", err, errlen);
    X509_free(uroot);
    return ok;
}

/*
 * The certificate clients trust, for a CA given as files: the first
 * self-signed one of signer and chain; without one, the last of them (its
 * issuer, which clients must have, is not known here).
 */
static X509 *
lab_pick_root(X509 *signer, STACK_OF(X509) *chain)
{
    X509 *last = signer;

    if (X509_self_signed(signer, 0) == 1)
        return signer;
    for (int i = 0; chain != NULL && i < sk_X509_num(chain); i++) {
        last = sk_X509_value(chain, i);
        if (X509_self_signed(last, 0) == 1)
            break;
    }
    return last;
}

/* The labels are the configuration keys (ca.cert, ...), as users wrote them. */
static bool
lab_load_files(struct tf_lab_ca *ca, const char *cert, const char *key, const char *chain,
               const char *untrusted_cert, const char *untrusted_key, char *err, size_t errlen)
{
    STACK_OF(X509) *extra = NULL;

    if (cert == NULL || key == NULL)
        return lab_fail(err, errlen, "lab CA: ca.cert and ca.key are both required");
    if ((untrusted_cert == NULL) != (untrusted_key == NULL))
        return lab_fail(err, errlen,
                        "lab CA: ca.untrusted_cert and ca.untrusted_key go together");
    if ((ca->trusted.cert = lab_read_cert(cert, "ca.cert", err, errlen)) == NULL ||
        (ca->trusted.key = lab_read_key(key, "ca.key", err, errlen)) == NULL)
        return false;
    if (chain != NULL && (extra = lab_read_chain(chain, "ca.chain", err, errlen)) == NULL)
        return false;
    if (!lab_signer_finish(&ca->trusted, "ca.cert", "ca.key", extra, err, errlen))
        return false;
    ca->root = lab_pick_root(ca->trusted.cert, ca->trusted.chain);
    X509_up_ref(ca->root);

    if (untrusted_cert != NULL) {
        if ((ca->untrusted.cert = lab_read_cert(untrusted_cert, "ca.untrusted_cert", err,
                                                errlen)) == NULL ||
            (ca->untrusted.key = lab_read_key(untrusted_key, "ca.untrusted_key", err, errlen)) ==
                NULL)
            return false;
        return lab_signer_finish(&ca->untrusted, "ca.untrusted_cert", "ca.untrusted_key", NULL,
                                 err, errlen);
    }
    /* A throwaway untrusted pair (P-256: made at every start, so made fast); its root dies here. */
    X509 *uroot = NULL;
    if (!lab_make_hierarchy("tlsfault throwaway untrusted root",
                            "tlsfault throwaway untrusted intermediate", EVP_PKEY_EC, &uroot,
                            NULL, &ca->untrusted.cert, &ca->untrusted.key))
        return lab_fail_ssl(err, errlen, "lab CA: cannot make the throwaway untrusted CA");
    X509_free(uroot);
    return lab_signer_finish(&ca->untrusted, "throwaway untrusted intermediate",
                             "its key", NULL, err, errlen);
}

struct tf_lab_ca *
tf_lab_ca_load(const char *dir, const char *cert, const char *key, const char *chain,
               const char *untrusted_cert, const char *untrusted_key, char *err, size_t errlen)
{
    struct tf_lab_ca *ca = calloc(1, sizeof(*ca));
    bool ok;

    if (ca == NULL) {
        lab_fail(err, errlen, "lab CA: out of memory");
        return NULL;
    }
    if (dir != NULL)
        ok = lab_load_dir(ca, dir, err, errlen);
    else
        ok = lab_load_files(ca, cert, key, chain, untrusted_cert, untrusted_key, err, errlen);
    ERR_clear_error();
    if (!ok) {
        tf_lab_ca_free(ca);
        return NULL;
    }
    return ca;
}

void
tf_lab_ca_free(struct tf_lab_ca *ca)
{
    if (ca == NULL)
        return;
    X509_free(ca->root);
    lab_signer_clear(&ca->trusted);
    lab_signer_clear(&ca->untrusted);
    free(ca);
}

X509 *
tf_lab_ca_root(const struct tf_lab_ca *ca)
{
    return ca->root;
}

/* ----------------------------------------------------------------- forge */

/* The fault with its defaults applied and irrelevant fields cleared: the cache key's input. */
struct forge_fault {
    enum tf_cert_mutation mutation;
    long seconds;
    const char *host;
};

struct forge_entry {
    uint8_t id[FORGE_ID_LEN];
    struct forge_entry *hnext;      /* hash chain */
    struct forge_entry *prev, *next;/* LRU list: head is the most recently used */
    struct tf_forged forged;        /* one reference to each object */
    time_t stale_at;                /* forge anew from then on; 0: never */
};

struct tf_forge {
    const struct tf_lab_ca *ca;     /* borrowed */
    enum tf_leaf_keys keys;
    EVP_PKEY *rsa, *ec, *weak;
    size_t cache_size, n_entries;
    size_t mask;                    /* buckets - 1 */
    struct forge_entry **buckets;
    struct forge_entry *head, *tail;
    unsigned long hits, misses;
};

struct tf_forge *
tf_forge_new(const struct tf_lab_ca *ca, size_t cache_size, enum tf_leaf_keys keys, char *err,
             size_t errlen)
{
    struct tf_forge *fg = calloc(1, sizeof(*fg));
    size_t buckets = 1;

    if (fg == NULL) {
        lab_fail(err, errlen, "forge: out of memory");
        return NULL;
    }
    fg->ca = ca;
    fg->keys = keys;
    fg->cache_size = cache_size;
    /* At most one entry per bucket on average: chains stay short without resizing. */
    while (buckets < cache_size && buckets < ((size_t)1 << 30))
        buckets <<= 1;
    fg->mask = buckets - 1;
    if (cache_size > 0 && (fg->buckets = calloc(buckets, sizeof(*fg->buckets))) == NULL) {
        lab_fail(err, errlen, "forge: out of memory");
        free(fg);
        return NULL;
    }
    fg->rsa = lab_keygen(EVP_PKEY_RSA, 2048);
    fg->ec = lab_keygen(EVP_PKEY_EC, 0);
    fg->weak = lab_keygen(EVP_PKEY_RSA, 1024);
    if (fg->rsa == NULL || fg->ec == NULL || fg->weak == NULL) {
        lab_fail_ssl(err, errlen, "forge: cannot make the leaf keys");
        tf_forge_free(fg);
        return NULL;
    }
    return fg;
}

static void
forge_entry_free(struct forge_entry *e)
{
    tf_forged_release(&e->forged);
    free(e);
}

/* dst gets new references to everything src holds. */
static bool
forged_share(struct tf_forged *dst, const struct tf_forged *src)
{
    memset(dst, 0, sizeof(*dst));
    if ((dst->chain = X509_chain_up_ref(src->chain)) == NULL)
        return false;
    X509_up_ref(src->leaf);
    dst->leaf = src->leaf;
    EVP_PKEY_up_ref(src->key);
    dst->key = src->key;
    if (src->alt_leaf != NULL) {
        X509_up_ref(src->alt_leaf);
        dst->alt_leaf = src->alt_leaf;
        EVP_PKEY_up_ref(src->alt_key);
        dst->alt_key = src->alt_key;
    }
    return true;
}

void
tf_forge_free(struct tf_forge *fg)
{
    if (fg == NULL)
        return;
    for (struct forge_entry *e = fg->head, *next; e != NULL; e = next) {
        next = e->next;
        forge_entry_free(e);
    }
    free(fg->buckets);
    EVP_PKEY_free(fg->rsa);
    EVP_PKEY_free(fg->ec);
    EVP_PKEY_free(fg->weak);
    free(fg);
}

void
tf_forge_stats(const struct tf_forge *fg, unsigned long *hits, unsigned long *misses)
{
    if (hits != NULL)
        *hits = fg->hits;
    if (misses != NULL)
        *misses = fg->misses;
}

void
tf_forged_release(struct tf_forged *f)
{
    if (f == NULL)
        return;
    X509_free(f->leaf);
    EVP_PKEY_free(f->key);
    X509_free(f->alt_leaf);
    EVP_PKEY_free(f->alt_key);
    sk_X509_pop_free(f->chain, X509_free);
    memset(f, 0, sizeof(*f));
}

static void
forge_normalise(const struct tf_cert_fault *in, struct forge_fault *out)
{
    memset(out, 0, sizeof(*out));
    out->mutation = in != NULL ? in->mutation : TF_CERT_GOOD;
    if (out->mutation == TF_CERT_EXPIRED || out->mutation == TF_CERT_NOT_YET_VALID)
        out->seconds = in->seconds > 0 ? in->seconds : FORGE_DEFAULT_SECONDS;
    if (out->mutation == TF_CERT_WRONG_HOST)
        out->host = in->host != NULL && *in->host != '\0' ? in->host : FORGE_WRONG_HOST;
}

/* ------------------------------------------------------------ the cache */

static bool
forge_digest_str(EVP_MD_CTX *md, const char *s)
{
    /* Length-prefixed, and NULL apart from "": no two inputs hash alike. */
    uint64_t len = s != NULL ? (uint64_t)strlen(s) + 1 : 0;
    return EVP_DigestUpdate(md, &len, sizeof(len)) == 1 &&
           (s == NULL || EVP_DigestUpdate(md, s, len - 1) == 1);
}

static bool
forge_cache_id(X509 *upstream, const char *sni, const struct forge_fault *f,
               uint8_t id[FORGE_ID_LEN])
{
    unsigned char up[EVP_MAX_MD_SIZE] = {0};
    unsigned uplen = 0;
    uint32_t m = (uint32_t)f->mutation;
    int64_t secs = f->seconds;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok;

    if (upstream != NULL && X509_digest(upstream, EVP_sha256(), up, &uplen) != 1)
        return false;
    /* The SNI shapes the leaf only without an upstream subject: a wildcard site is one entry. */
    if (upstream != NULL && X509_NAME_entry_count(X509_get_subject_name(upstream)) > 0)
        sni = NULL;
    ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
         EVP_DigestUpdate(md, &uplen, sizeof(uplen)) == 1 &&
         EVP_DigestUpdate(md, up, uplen) == 1 && forge_digest_str(md, sni) &&
         EVP_DigestUpdate(md, &m, sizeof(m)) == 1 &&
         EVP_DigestUpdate(md, &secs, sizeof(secs)) == 1 && forge_digest_str(md, f->host) &&
         EVP_DigestFinal_ex(md, id, NULL) == 1;
    EVP_MD_CTX_free(md);
    return ok;
}

static struct forge_entry **
forge_bucket(struct tf_forge *fg, const uint8_t id[FORGE_ID_LEN])
{
    uint64_t h;
    memcpy(&h, id, sizeof(h));
    return &fg->buckets[h & fg->mask];
}

static void
forge_lru_unlink(struct tf_forge *fg, struct forge_entry *e)
{
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        fg->head = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        fg->tail = e->prev;
    e->prev = e->next = NULL;
}

static void
forge_lru_push_front(struct tf_forge *fg, struct forge_entry *e)
{
    e->prev = NULL;
    e->next = fg->head;
    if (fg->head != NULL)
        fg->head->prev = e;
    fg->head = e;
    if (fg->tail == NULL)
        fg->tail = e;
}

static void
forge_cache_remove(struct tf_forge *fg, struct forge_entry *e)
{
    struct forge_entry **pp = forge_bucket(fg, e->id);

    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    forge_lru_unlink(fg, e);
    fg->n_entries--;
    forge_entry_free(e);
}

static struct forge_entry *
forge_cache_find(struct tf_forge *fg, const uint8_t id[FORGE_ID_LEN])
{
    for (struct forge_entry *e = *forge_bucket(fg, id); e != NULL; e = e->hnext)
        if (memcmp(e->id, id, FORGE_ID_LEN) == 0)
            return e;
    return NULL;
}

/* Keeps references to f's objects; a failure only means the next identical forge signs again. */
static void
forge_cache_insert(struct tf_forge *fg, const uint8_t id[FORGE_ID_LEN],
                   const struct tf_forged *f, time_t stale_at)
{
    struct forge_entry *e = calloc(1, sizeof(*e));
    struct forge_entry **bucket;

    if (e == NULL)
        return;
    if (!forged_share(&e->forged, f)) {
        free(e);
        return;
    }
    memcpy(e->id, id, FORGE_ID_LEN);
    e->stale_at = stale_at;
    if (fg->n_entries >= fg->cache_size)
        forge_cache_remove(fg, fg->tail);
    bucket = forge_bucket(fg, id);
    e->hnext = *bucket;
    *bucket = e;
    forge_lru_push_front(fg, e);
    fg->n_entries++;
}

/* ------------------------------------------------------------ the leaf */

static bool
forge_add_cn(X509_NAME *name, const char *cn, int loc)
{
    /* A CN longer than 64 characters is illegal (RFC 5280 ub-common-name): the SAN carries it. */
    if (X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
                                   (const unsigned char *)cn, -1, loc, 0) != 1)
        ERR_clear_error();
    return true;
}

/* The subject: the upstream's, or CN=sni; for wrong-host, every CN replaced by host. */
static X509_NAME *
forge_subject(X509 *upstream, const char *sni, const struct forge_fault *f)
{
    X509_NAME *name = upstream != NULL ? X509_NAME_dup(X509_get_subject_name(upstream))
                                       : X509_NAME_new();
    int first = -1, i;

    if (name == NULL)
        return NULL;
    if (f->mutation == TF_CERT_WRONG_HOST) {
        while ((i = X509_NAME_get_index_by_NID(name, NID_commonName, -1)) >= 0) {
            if (first < 0)
                first = i;
            X509_NAME_ENTRY_free(X509_NAME_delete_entry(name, i));
        }
        forge_add_cn(name, f->host, first);
    } else if (X509_NAME_entry_count(name) == 0 && sni != NULL) {
        forge_add_cn(name, sni, -1);
    }
    return name;
}

/* subjectAltName of one name: iPAddress when it is an address literal, dNSName otherwise. */
static bool
forge_add_san(X509 *x, const char *name)
{
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    GENERAL_NAME *gn = GENERAL_NAME_new();
    ASN1_OCTET_STRING *ip = a2i_IPADDRESS(name);
    bool ok = false;

    ERR_clear_error();
    if (gens == NULL || gn == NULL)
        goto out;
    if (ip != NULL) {
        GENERAL_NAME_set0_value(gn, GEN_IPADD, ip);
        ip = NULL;
    } else {
        ASN1_IA5STRING *dns = ASN1_IA5STRING_new();
        if (dns == NULL || ASN1_STRING_set(dns, name, -1) != 1) {
            ASN1_IA5STRING_free(dns);
            goto out;
        }
        GENERAL_NAME_set0_value(gn, GEN_DNS, dns);
    }
    if (sk_GENERAL_NAME_push(gens, gn) <= 0)
        goto out;
    gn = NULL;
    ok = X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT) == 1;
out:
    ASN1_OCTET_STRING_free(ip);
    GENERAL_NAME_free(gn);
    GENERAL_NAMES_free(gens);
    return ok;
}

static bool
forge_san(X509 *leaf, X509 *upstream, const char *sni, const struct forge_fault *f)
{
    if (f->mutation == TF_CERT_WRONG_HOST)
        return forge_add_san(leaf, f->host);
    if (upstream != NULL) {
        int i = X509_get_ext_by_NID(upstream, NID_subject_alt_name, -1);
        /* Copied as is (criticality too); an upstream without one gets none, as it has none. */
        if (i >= 0)
            return X509_add_ext(leaf, X509_get_ext(upstream, i), -1) == 1;
        if (X509_NAME_entry_count(X509_get_subject_name(upstream)) > 0 || sni == NULL)
            return true;
    }
    return forge_add_san(leaf, sni);
}

/*
 * Validity: the mutation's window relative to now, else the upstream's
 * (or an hour ago .. 90 days) with notAfter cut to the issuer's.
 */
static bool
forge_validity(X509 *leaf, X509 *upstream, X509 *issuer, const struct forge_fault *f,
               time_t now)
{
    ASN1_TIME *nb = X509_getm_notBefore(leaf), *na = X509_getm_notAfter(leaf);

    switch (f->mutation) {
    case TF_CERT_EXPIRED:
        return X509_time_adj_ex(na, 0, -f->seconds, &now) != NULL &&
               X509_time_adj_ex(nb, -FORGE_EXPIRED_SPAN_DAYS, -f->seconds, &now) != NULL;
    case TF_CERT_NOT_YET_VALID:
        return X509_time_adj_ex(nb, 0, f->seconds, &now) != NULL &&
               X509_time_adj_ex(na, FORGE_NOT_YET_VALID_DAYS, f->seconds, &now) != NULL;
    default:
        break;
    }
    if (upstream != NULL) {
        if (X509_set1_notBefore(leaf, X509_get0_notBefore(upstream)) != 1 ||
            X509_set1_notAfter(leaf, X509_get0_notAfter(upstream)) != 1)
            return false;
    } else if (X509_time_adj_ex(nb, 0, -LAB_BACKDATE, &now) == NULL ||
               X509_time_adj_ex(na, FORGE_SNI_DAYS, 0, &now) == NULL) {
        return false;
    }
    if (issuer != NULL && ASN1_TIME_compare(X509_get0_notAfter(leaf),
                                            X509_get0_notAfter(issuer)) > 0)
        return X509_set1_notAfter(leaf, X509_get0_notAfter(issuer)) == 1;
    return true;
}

/*
 * The leaf key: the policy's type (RSA-1024 for cert-weak-key).  *alt
 * gets the other type when the client should be able to choose, as from
 * a server with both an RSA and an ECDSA certificate; NULL otherwise.
 */
static EVP_PKEY *
forge_pick_key(struct tf_forge *fg, X509 *upstream, const struct forge_fault *f,
               EVP_PKEY **alt)
{
    EVP_PKEY *pub = upstream != NULL ? X509_get0_pubkey(upstream) : NULL;
    bool upstream_ec = pub != NULL && EVP_PKEY_get_base_id(pub) == EVP_PKEY_EC;

    *alt = NULL;
    if (f->mutation == TF_CERT_WEAK_KEY)
        return fg->weak;
    switch (fg->keys) {
    case TF_LEAF_KEYS_RSA:
        return fg->rsa;
    case TF_LEAF_KEYS_ECDSA:
        return fg->ec;
    case TF_LEAF_KEYS_BOTH:
        *alt = upstream_ec ? fg->rsa : fg->ec;
        break;
    case TF_LEAF_KEYS_UPSTREAM:
        break;
    }
    return upstream_ec ? fg->ec : fg->rsa;
}

/* Signs one leaf for key; NULL on failure. */
static X509 *
forge_sign_leaf(struct tf_forge *fg, X509 *upstream, const char *sni, const struct forge_fault *f,
                EVP_PKEY *key)
{
    const struct lab_signer *signer =
        f->mutation == TF_CERT_UNTRUSTED_ROOT ? &fg->ca->untrusted : &fg->ca->trusted;
    bool self = f->mutation == TF_CERT_SELF_SIGNED;
    X509 *issuer = self ? NULL : signer->cert;
    EVP_PKEY *sign_key = self ? key : signer->key;
    bool rsa = EVP_PKEY_get_base_id(key) == EVP_PKEY_RSA;
    X509_NAME *subject = forge_subject(upstream, sni, f);
    X509 *leaf = subject != NULL ? cert_new(subject, key) : NULL;
    const char *ku;
    bool ok = leaf != NULL;

    /*
     * A self-signed leaf may sign certificates (keyCertSign): OpenSSL 1.1.1
     * calls a certificate self-signed only if it may, and would otherwise
     * report an unknown issuer instead of "self-signed certificate" (3.0
     * and GnuTLS report the same either way).
     */
    if (self)
        ku = rsa ? "critical,digitalSignature,keyEncipherment,keyCertSign"
                 : "critical,digitalSignature,keyCertSign";
    else
        ku = rsa ? "critical,digitalSignature,keyEncipherment" : "critical,digitalSignature";
    ok = ok &&
         X509_set_issuer_name(leaf, self ? subject : X509_get_subject_name(issuer)) == 1 &&
         forge_validity(leaf, upstream, issuer, f, time(NULL)) &&
         cert_add_ext(leaf, issuer, sign_key, NID_basic_constraints, "critical,CA:FALSE") &&
         cert_add_ext(leaf, issuer, sign_key, NID_key_usage, ku) &&
         cert_add_ext(leaf, issuer, sign_key, NID_ext_key_usage,
                      f->mutation == TF_CERT_WRONG_EKU ? "clientAuth" : "serverAuth") &&
         cert_add_ext(leaf, issuer, sign_key, NID_subject_key_identifier, "hash") &&
         cert_add_ext(leaf, issuer, sign_key, NID_authority_key_identifier, "keyid,issuer") &&
         forge_san(leaf, upstream, sni, f) &&
         X509_sign(leaf, sign_key,
                   cert_md(sign_key, f->mutation == TF_CERT_SHA1 ? EVP_sha1() : EVP_sha256())) >
             0;
    X509_NAME_free(subject);
    if (!ok) {
        X509_free(leaf);
        return NULL;
    }
    return leaf;
}

/* Signs the leaf (or leaves) for one forge call; out gets the caller's references. */
static bool
forge_make(struct tf_forge *fg, X509 *upstream, const char *sni, const struct forge_fault *f,
           struct tf_forged *out, char *err, size_t errlen)
{
    const struct lab_signer *signer =
        f->mutation == TF_CERT_UNTRUSTED_ROOT ? &fg->ca->untrusted : &fg->ca->trusted;
    bool bare = f->mutation == TF_CERT_SELF_SIGNED || f->mutation == TF_CERT_NO_INTERMEDIATE;
    EVP_PKEY *alt;
    EVP_PKEY *key = forge_pick_key(fg, upstream, f, &alt);

    out->leaf = forge_sign_leaf(fg, upstream, sni, f, key);
    out->alt_leaf = alt != NULL ? forge_sign_leaf(fg, upstream, sni, f, alt) : NULL;
    out->chain = bare ? sk_X509_new_null() : X509_chain_up_ref(signer->chain);
    if (out->leaf == NULL || (alt != NULL && out->alt_leaf == NULL) || out->chain == NULL) {
        tf_forged_release(out);
        return lab_fail_ssl(err, errlen, "forge: cannot forge a certificate for %s",
                            sni != NULL ? sni : "the upstream");
    }
    EVP_PKEY_up_ref(key);
    out->key = key;
    if (alt != NULL) {
        EVP_PKEY_up_ref(alt);
        out->alt_key = alt;
    }
    return true;
}

/*
 * A cache hit hands out new references to the cached objects; a miss
 * signs a leaf and keeps references to it.  A not-yet-valid leaf becomes
 * valid `seconds` after it was made, so its entry goes stale halfway.
 */
bool
tf_forge_chain(struct tf_forge *fg, X509 *upstream, const char *sni,
               const struct tf_cert_fault *fault, struct tf_forged *out, char *err,
               size_t errlen)
{
    struct forge_fault f;
    uint8_t id[FORGE_ID_LEN];
    bool have_id = false;
    time_t now = time(NULL);

    memset(out, 0, sizeof(*out));
    if (upstream == NULL && (sni == NULL || *sni == '\0'))
        return lab_fail(err, errlen, "forge: no upstream certificate and no SNI to forge from");
    forge_normalise(fault, &f);
    if (fg->cache_size > 0 && forge_cache_id(upstream, sni, &f, id)) {
        struct forge_entry *e = forge_cache_find(fg, id);
        have_id = true;
        if (e != NULL && e->stale_at != 0 && now >= e->stale_at) {
            forge_cache_remove(fg, e);
            e = NULL;
        }
        if (e != NULL && forged_share(out, &e->forged)) {
            out->cached = true;
            forge_lru_unlink(fg, e);
            forge_lru_push_front(fg, e);
            fg->hits++;
            return true;
        }
    }
    ERR_clear_error();
    fg->misses++;
    if (!forge_make(fg, upstream, sni, &f, out, err, errlen))
        return false;
    if (have_id) {
        time_t stale_at = 0;
        if (f.mutation == TF_CERT_NOT_YET_VALID)
            stale_at = now + (f.seconds / 2 > 0 ? f.seconds / 2 : 1);
        forge_cache_insert(fg, id, out, stale_at);
    }
    return true;
}
