/*
 * test_forge.c — the lab CA and forged chains, judged by OpenSSL's own
 * verifier the way a client judges them.
 *
 * A lab CA is made once into a temporary directory (files, modes, refusal
 * to overwrite); loading is checked in both forms and, with the exact
 * message, on every broken input.  Forgeries of test-made upstream leaves
 * (EC and RSA keys, SANs DNS:a.test, DNS:b.test, IP:127.0.0.1) are
 * verified with X509_verify_cert against a store holding only root.pem,
 * purpose sslserver, auth level 2 (Debian's default security level): the
 * good chain verifies and each mutation fails with the X509_V_ERR_* a
 * client reports.  Then what is copied (subject, SAN, validity, clamping),
 * the chain order, the cache (hits, distinct keys, LRU eviction) and, as a
 * diagnostic only, the cost of a forge against a cache hit.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "tlsfault/forge.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define DAY (24L * 60 * 60)

static const char *const lab_names[] = {
    "root.pem",
    "root.key",
    "intermediate.pem",
    "intermediate.key",
    "untrusted-root.pem",
    "untrusted-root.key",
    "untrusted-intermediate.pem",
    "untrusted-intermediate.key",
    "README.txt",
};

/* Made once for the group. */
static struct {
    char tmp[64];               /* mkdtemp, removed at the end */
    char lab[128];              /* tmp/lab: the CA made by tf_lab_ca_init */
    struct tf_lab_ca *ca;
    struct tf_forge *fg;        /* cache of 64 */
    X509 *root, *inter, *uroot, *uinter;
    EVP_PKEY *up_ca_key;        /* signs the upstream leaves */
    EVP_PKEY *up_ec, *up_rsa;   /* the upstream leaves' keys */
    X509 *up_ec_leaf, *up_rsa_leaf;
    time_t up_not_before, up_not_after;
} g;

/* ------------------------------------------------------------- helpers */

static void
path_of(char *buf, size_t len, const char *dir, const char *name)
{
    int n = snprintf(buf, len, "%s/%s", dir, name);
    assert_true(n > 0 && (size_t)n < len);
}

static X509 *
read_cert(const char *dir, const char *name)
{
    char path[256];
    FILE *fp;
    X509 *x;

    path_of(path, sizeof(path), dir, name);
    fp = fopen(path, "r");
    if (fp == NULL)
        fail_msg("%s: %s", path, strerror(errno));
    x = PEM_read_X509(fp, NULL, NULL, NULL);
    fclose(fp);
    assert_non_null(x);
    return x;
}

static void
write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    assert_true(fputs(text, fp) >= 0);
    assert_int_equal(fclose(fp), 0);
}

static void
copy_file(const char *from, const char *to)
{
    char buf[8192];
    size_t n;
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");

    assert_non_null(in);
    assert_non_null(out);
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    assert_int_equal(fclose(out), 0);
}

/* A copy of the lab directory in tmp/name, with some files taken from others: {dst, src} pairs. */
static void
lab_copy(const char *name, const char *const swaps[][2], size_t n_swaps, char *out, size_t len)
{
    char from[256], to[256];

    path_of(out, len, g.tmp, name);
    assert_int_equal(mkdir(out, 0700), 0);
    for (size_t i = 0; i < ARRAY_LEN(lab_names); i++) {
        const char *src = lab_names[i];
        for (size_t s = 0; s < n_swaps; s++)
            if (strcmp(swaps[s][0], lab_names[i]) == 0)
                src = swaps[s][1];
        path_of(from, sizeof(from), g.lab, src);
        path_of(to, sizeof(to), out, lab_names[i]);
        copy_file(from, to);
    }
}

static int
rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static X509_NAME *
name_of(const char *o, const char *cn)
{
    X509_NAME *n = X509_NAME_new();
    assert_non_null(n);
    if (o != NULL)
        assert_int_equal(X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC,
                                                    (const unsigned char *)o, -1, -1, 0),
                         1);
    if (cn != NULL)
        assert_int_equal(X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
                                                    (const unsigned char *)cn, -1, -1, 0),
                         1);
    return n;
}

static void
add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509_EXTENSION *ext;

    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    assert_non_null(ext);
    assert_int_equal(X509_add_ext(x, ext, -1), 1);
    X509_EXTENSION_free(ext);
}

/*
 * A server leaf as a real upstream would send it, signed by a test CA the
 * lab never heard of.  cn NULL: empty subject; san NULL: no SAN.
 */
static X509 *
make_upstream(EVP_PKEY *key, const char *cn, const char *san, time_t nb, time_t na, long serial)
{
    X509 *x = X509_new();
    X509_NAME *subject = cn != NULL ? name_of("Upstream Org", cn) : X509_NAME_new();
    X509_NAME *issuer = name_of("Upstream Test CA", "Upstream Test CA");

    assert_non_null(x);
    assert_int_equal(X509_set_version(x, X509_VERSION_3), 1);
    assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), serial), 1);
    assert_int_equal(X509_set_subject_name(x, subject), 1);
    assert_int_equal(X509_set_issuer_name(x, issuer), 1);
    assert_non_null(ASN1_TIME_set(X509_getm_notBefore(x), nb));
    assert_non_null(ASN1_TIME_set(X509_getm_notAfter(x), na));
    assert_int_equal(X509_set_pubkey(x, key), 1);
    add_ext(x, NULL, NID_basic_constraints, "critical,CA:FALSE");
    if (san != NULL)
        add_ext(x, NULL, NID_subject_alt_name, san);
    assert_true(X509_sign(x, g.up_ca_key, EVP_sha256()) > 0);
    X509_NAME_free(subject);
    X509_NAME_free(issuer);
    return x;
}

struct verdict {
    int err;                    /* X509_V_OK or the X509_V_ERR_* */
    int depth;
};

/*
 * What a client concludes: trust anchors, then the chain the server sent,
 * purpose sslserver, optionally a host name to match.
 */
static struct verdict
verify_purpose(X509 *leaf, STACK_OF(X509) *chain, X509 *const trusted[], size_t n_trusted,
               int auth_level, const char *host, int purpose)
{
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    struct verdict v;

    assert_non_null(store);
    assert_non_null(ctx);
    for (size_t i = 0; i < n_trusted; i++)
        assert_int_equal(X509_STORE_add_cert(store, trusted[i]), 1);
    assert_int_equal(X509_STORE_CTX_init(ctx, store, leaf, chain), 1);
    if (purpose != 0)
        assert_int_equal(X509_STORE_CTX_set_purpose(ctx, purpose), 1);
    X509_VERIFY_PARAM_set_auth_level(X509_STORE_CTX_get0_param(ctx), auth_level);
    if (host != NULL)
        assert_int_equal(X509_VERIFY_PARAM_set1_host(X509_STORE_CTX_get0_param(ctx), host, 0), 1);
    v.err = X509_verify_cert(ctx) == 1 ? X509_V_OK : X509_STORE_CTX_get_error(ctx);
    v.depth = X509_STORE_CTX_get_error_depth(ctx);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    ERR_clear_error();
    return v;
}

static struct verdict
verify_with(X509 *leaf, STACK_OF(X509) *chain, X509 *const trusted[], size_t n_trusted,
            int auth_level, const char *host)
{
    return verify_purpose(leaf, chain, trusted, n_trusted, auth_level, host,
                          X509_PURPOSE_SSL_SERVER);
}

static int
verify_root(const struct tf_forged *f, int auth_level, const char *host)
{
    return verify_with(f->leaf, f->chain, &g.root, 1, auth_level, host).err;
}

static void
assert_verify(int got, int want)
{
    if (got != want)
        fail_msg("verify: got %d (%s), want %d (%s)", got, X509_verify_cert_error_string(got),
                 want, X509_verify_cert_error_string(want));
}

static void
forge_ok(struct tf_forge *fg, X509 *upstream, const char *sni, enum tf_cert_mutation m,
         long seconds, const char *host, struct tf_forged *out)
{
    struct tf_cert_fault fault = {m, seconds, host};
    char err[512] = "";

    if (!tf_forge_chain(fg, upstream, sni, &fault, out, err, sizeof(err)))
        fail_msg("forge (mutation %d) failed: %s", (int)m, err);
    assert_non_null(out->leaf);
    assert_non_null(out->key);
    assert_non_null(out->chain);
    assert_int_equal(X509_check_private_key(out->leaf, out->key), 1);
}

static long
seconds_between(const ASN1_TIME *from, const ASN1_TIME *to)
{
    int days, secs;
    assert_int_equal(ASN1_TIME_diff(&days, &secs, from, to), 1);
    return days * DAY + secs;
}

/* |t - (now + offset)| small */
static void
assert_time_near(const ASN1_TIME *t, long offset)
{
    ASN1_TIME *want = X509_time_adj_ex(NULL, 0, offset, NULL);
    long d = seconds_between(want, t);
    ASN1_TIME_free(want);
    if (d < -120 || d > 120)
        fail_msg("time off by %ld s from now%+ld s", d, offset);
}

static bool
has_ext_value(X509 *x, int nid, const char *want)
{
    int i = X509_get_ext_by_NID(x, nid, -1);
    BIO *b = BIO_new(BIO_s_mem());
    char buf[512] = "";
    bool ok;

    assert_non_null(b);
    if (i < 0) {
        BIO_free(b);
        return false;
    }
    assert_int_equal(X509V3_EXT_print(b, X509_get_ext(x, i), 0, 0), 1);
    BIO_read(b, buf, sizeof(buf) - 1);
    BIO_free(b);
    ok = strcmp(buf, want) == 0;
    if (!ok)
        print_message("# extension %s is \"%s\", want \"%s\"\n", OBJ_nid2sn(nid), buf, want);
    return ok;
}

static bool
ext_critical(X509 *x, int nid)
{
    int i = X509_get_ext_by_NID(x, nid, -1);
    assert_true(i >= 0);
    return X509_EXTENSION_get_critical(X509_get_ext(x, i)) == 1;
}

/* -------------------------------------------------------------- fixture */

static int
group_setup(void **state)
{
    char err[512] = "";
    time_t now = time(NULL);

    (void)state;
    umask(022);
    snprintf(g.tmp, sizeof(g.tmp), "/tmp/tlsfault-forge-XXXXXX");
    if (mkdtemp(g.tmp) == NULL)
        return -1;
    snprintf(g.lab, sizeof(g.lab), "%s/lab", g.tmp);
    if (!tf_lab_ca_init(g.lab, err, sizeof(err))) {
        fprintf(stderr, "# tf_lab_ca_init: %s\n", err);
        return -1;
    }
    g.ca = tf_lab_ca_load(g.lab, NULL, NULL, NULL, NULL, NULL, err, sizeof(err));
    if (g.ca == NULL) {
        fprintf(stderr, "# tf_lab_ca_load: %s\n", err);
        return -1;
    }
    g.fg = tf_forge_new(g.ca, 64, TF_LEAF_KEYS_UPSTREAM, err, sizeof(err));
    if (g.fg == NULL) {
        fprintf(stderr, "# tf_forge_new: %s\n", err);
        return -1;
    }
    g.root = read_cert(g.lab, "root.pem");
    g.inter = read_cert(g.lab, "intermediate.pem");
    g.uroot = read_cert(g.lab, "untrusted-root.pem");
    g.uinter = read_cert(g.lab, "untrusted-intermediate.pem");
    g.up_ca_key = EVP_EC_gen("P-256");
    g.up_ec = EVP_EC_gen("P-256");
    g.up_rsa = EVP_RSA_gen(2048);
    if (g.up_ca_key == NULL || g.up_ec == NULL || g.up_rsa == NULL)
        return -1;
    g.up_not_before = now - 10 * DAY;
    g.up_not_after = now + 200 * DAY;
    g.up_ec_leaf = make_upstream(g.up_ec, "a.test", "DNS:a.test,DNS:b.test,IP:127.0.0.1",
                                 g.up_not_before, g.up_not_after, 1001);
    g.up_rsa_leaf = make_upstream(g.up_rsa, "a.test", "DNS:a.test,DNS:b.test,IP:127.0.0.1",
                                  g.up_not_before, g.up_not_after, 1002);
    return 0;
}

static int
group_teardown(void **state)
{
    (void)state;
    tf_forge_free(g.fg);
    tf_lab_ca_free(g.ca);
    X509_free(g.root);
    X509_free(g.inter);
    X509_free(g.uroot);
    X509_free(g.uinter);
    X509_free(g.up_ec_leaf);
    X509_free(g.up_rsa_leaf);
    EVP_PKEY_free(g.up_ca_key);
    EVP_PKEY_free(g.up_ec);
    EVP_PKEY_free(g.up_rsa);
    if (g.tmp[0] != '\0')
        nftw(g.tmp, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* ------------------------------------------------------------ lab CA init */

static void
test_init_files(void **state)
{
    char path[256];
    struct stat st;

    (void)state;
    assert_int_equal(stat(g.lab, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    for (size_t i = 0; i < ARRAY_LEN(lab_names); i++) {
        mode_t want = strstr(lab_names[i], ".key") != NULL ? 0600 : 0644;
        path_of(path, sizeof(path), g.lab, lab_names[i]);
        assert_int_equal(stat(path, &st), 0);
        if ((st.st_mode & 07777) != want)
            fail_msg("%s: mode %o, want %o", lab_names[i], st.st_mode & 07777, want);
    }
}

static void
test_init_profiles(void **state)
{
    X509 *const cas[] = {g.root, g.inter, g.uroot, g.uinter};

    (void)state;
    assert_true(has_ext_value(g.root, NID_basic_constraints, "CA:TRUE"));
    assert_true(ext_critical(g.root, NID_basic_constraints));
    assert_true(has_ext_value(g.root, NID_key_usage, "Certificate Sign, CRL Sign"));
    assert_true(ext_critical(g.root, NID_key_usage));
    assert_true(X509_get0_subject_key_id(g.root) != NULL);
    assert_int_equal(X509_self_signed(g.root, 1), 1);
    assert_int_equal(X509_NAME_get_index_by_NID(X509_get_subject_name(g.root), NID_commonName,
                                                -1) >= 0,
                     1);
    {
        char cn[64];
        X509_NAME_get_text_by_NID(X509_get_subject_name(g.root), NID_commonName, cn,
                                  sizeof(cn));
        assert_string_equal(cn, "tlsfault lab root");
    }
    assert_true(has_ext_value(g.inter, NID_basic_constraints, "CA:TRUE, pathlen:0"));
    assert_true(ext_critical(g.inter, NID_basic_constraints));
    assert_true(ext_critical(g.inter, NID_key_usage));
    assert_non_null(X509_get0_authority_key_id(g.inter));
    assert_int_equal(ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(g.inter),
                                           X509_get0_subject_key_id(g.root)),
                     0);
    /* Lifetimes: 10 years, 5 years (from an hour ago). */
    assert_time_near(X509_get0_notAfter(g.root), 3650 * DAY);
    assert_time_near(X509_get0_notAfter(g.inter), 1825 * DAY);
    assert_time_near(X509_get0_notBefore(g.inter), -3600);
    /* RSA-2048 everywhere; serials of about 128 random bits; all distinct. */
    for (size_t i = 0; i < ARRAY_LEN(cas); i++) {
        BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cas[i]), NULL);
        assert_int_equal(EVP_PKEY_get_base_id(X509_get0_pubkey(cas[i])), EVP_PKEY_RSA);
        assert_int_equal(EVP_PKEY_get_bits(X509_get0_pubkey(cas[i])), 2048);
        assert_true(BN_num_bits(bn) > 96 && BN_num_bits(bn) <= 128);
        assert_false(BN_is_negative(bn));
        BN_free(bn);
        assert_int_equal(X509_get_signature_nid(cas[i]), NID_sha256WithRSAEncryption);
        for (size_t j = 0; j < i; j++)
            assert_int_not_equal(ASN1_INTEGER_cmp(X509_get0_serialNumber(cas[i]),
                                                  X509_get0_serialNumber(cas[j])),
                                 0);
    }
    /* The intermediates chain to their own roots only (no purpose: they are CAs). */
    assert_verify(verify_purpose(g.inter, NULL, &g.root, 1, 2, NULL, 0).err, X509_V_OK);
    assert_verify(verify_purpose(g.uinter, NULL, &g.uroot, 1, 2, NULL, 0).err, X509_V_OK);
    assert_verify(verify_purpose(g.uinter, NULL, &g.root, 1, 2, NULL, 0).err,
                  X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
    assert_verify(verify_purpose(g.inter, NULL, &g.root, 1, 2, NULL, X509_PURPOSE_SSL_SERVER).err,
                  X509_V_ERR_INVALID_PURPOSE);
}

static void
test_init_readme(void **state)
{
    char path[256], root_path[256], want[512];
    char *text;
    long len;
    FILE *fp;
    static const char *const fixed[] = {
        "-CAfile ",
        "--x509cafile ",
        "ssl.create_default_context(cafile=\"",
        " /usr/local/share/ca-certificates/tlsfault-lab.crt && update-ca-certificates\n",
        "certutil -d sql:$HOME/.pki/nssdb -A -t \"C,,\" -n tlsfault-lab -i ",
    };

    (void)state;
    path_of(path, sizeof(path), g.lab, "README.txt");
    fp = fopen(path, "r");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    len = ftell(fp);
    rewind(fp);
    text = calloc(1, (size_t)len + 1);
    assert_non_null(text);
    assert_int_equal(fread(text, 1, (size_t)len, fp), (size_t)len);
    fclose(fp);

    /* Commands name root.pem by its absolute path: they work from any directory. */
    {
        char abs[200];
        assert_non_null(realpath(g.lab, abs));
        path_of(root_path, sizeof(root_path), abs, "root.pem");
    }
    snprintf(want, sizeof(want), "curl --cacert %s ", root_path);
    assert_non_null(strstr(text, want));
    for (size_t i = 0; i < ARRAY_LEN(fixed); i++) {
        snprintf(want, sizeof(want), "%s%s", fixed[i], i == 3 ? "" : root_path);
        if (i == 3)
            snprintf(want, sizeof(want), "cp %s%s", root_path, fixed[i]);
        if (strstr(text, want) == NULL)
            fail_msg("README.txt lacks \"%s\"", want);
    }
    assert_null(strstr(text, "PRIVATE KEY"));
    free(text);
}

static void
test_init_refuses_overwrite(void **state)
{
    char err[512] = "", want[512], path[256], before[4096], after[4096];
    FILE *fp;
    size_t nb, na;

    (void)state;
    path_of(path, sizeof(path), g.lab, "root.pem");
    fp = fopen(path, "r");
    assert_non_null(fp);
    nb = fread(before, 1, sizeof(before), fp);
    fclose(fp);

    assert_false(tf_lab_ca_init(g.lab, err, sizeof(err)));
    snprintf(want, sizeof(want), "lab CA: %s/root.pem already exists; not overwriting it",
             g.lab);
    assert_string_equal(err, want);
    fp = fopen(path, "r");
    assert_non_null(fp);
    na = fread(after, 1, sizeof(after), fp);
    fclose(fp);
    assert_int_equal(na, nb);
    assert_memory_equal(before, after, na);

    /* Any lab file refuses, not only root.pem: a directory never mixes two CAs. */
    path_of(path, sizeof(path), g.tmp, "partial");
    assert_int_equal(mkdir(path, 0755), 0);
    {
        char readme[256];
        path_of(readme, sizeof(readme), path, "README.txt");
        write_file(readme, "mine\n");
        assert_false(tf_lab_ca_init(path, err, sizeof(err)));
        snprintf(want, sizeof(want), "lab CA: %s already exists; not overwriting it", readme);
        assert_string_equal(err, want);
        assert_int_equal(unlink(readme), 0);
        assert_int_equal(rmdir(path), 0);
    }

    path_of(path, sizeof(path), g.tmp, "no/such/parent");
    assert_false(tf_lab_ca_init(path, err, sizeof(err)));
    snprintf(want, sizeof(want), "lab CA: cannot create directory %s: No such file or directory",
             path);
    assert_string_equal(err, want);

    path_of(path, sizeof(path), g.lab, "root.pem");
    assert_false(tf_lab_ca_init(path, err, sizeof(err)));
    snprintf(want, sizeof(want), "lab CA: %s is not a directory", path);
    assert_string_equal(err, want);

    assert_false(tf_lab_ca_init("", err, sizeof(err)));
    assert_string_equal(err, "lab CA: no directory given");
}

/* ------------------------------------------------------------ lab CA load */

static void
load_bad_dir(const char *dir, const char *want)
{
    char err[512] = "";
    struct tf_lab_ca *ca = tf_lab_ca_load(dir, NULL, NULL, NULL, NULL, NULL, err, sizeof(err));
    if (ca != NULL) {
        tf_lab_ca_free(ca);
        fail_msg("%s loaded, want \"%s\"", dir, want);
    }
    assert_string_equal(err, want);
}

static void
test_load_dir_errors(void **state)
{
    char dir[256], want[512];

    (void)state;
    path_of(dir, sizeof(dir), g.tmp, "nope");
    snprintf(want, sizeof(want), "lab CA: cannot read %s/root.pem: No such file or directory",
             dir);
    load_bad_dir(dir, want);

    {
        static const char *const swaps[][2] = {{"intermediate.key", "untrusted-intermediate.key"}};
        lab_copy("mismatch", swaps, ARRAY_LEN(swaps), dir, sizeof(dir));
        load_bad_dir(dir, "lab CA: intermediate.key does not match intermediate.pem");
    }
    {
        static const char *const swaps[][2] = {
            {"untrusted-intermediate.key", "intermediate.key"}};
        lab_copy("umismatch", swaps, ARRAY_LEN(swaps), dir, sizeof(dir));
        load_bad_dir(dir,
                     "lab CA: untrusted-intermediate.key does not match untrusted-intermediate.pem");
    }
    {
        static const char *const swaps[][2] = {
            {"intermediate.pem", "untrusted-intermediate.pem"},
            {"intermediate.key", "untrusted-intermediate.key"}};
        lab_copy("crossed", swaps, ARRAY_LEN(swaps), dir, sizeof(dir));
        load_bad_dir(dir, "lab CA: intermediate.pem was not issued by root.pem");
    }
    {
        /* A key where a certificate belongs: the message must not echo the key. */
        static const char *const swaps[][2] = {{"intermediate.pem", "intermediate.key"}};
        lab_copy("keyascert", swaps, ARRAY_LEN(swaps), dir, sizeof(dir));
        snprintf(want, sizeof(want),
                 "lab CA: intermediate.pem (%s/intermediate.pem) holds no PEM certificate", dir);
        load_bad_dir(dir, want);
    }
    {
        char path[300];
        static const char *const swaps[][2] = {{"intermediate.key", "intermediate.key"}};
        lab_copy("garbage", swaps, ARRAY_LEN(swaps), dir, sizeof(dir));
        path_of(path, sizeof(path), dir, "intermediate.key");
        write_file(path, "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n");
        snprintf(want, sizeof(want),
                 "lab CA: intermediate.key (%s) holds no unencrypted PEM private key", path);
        load_bad_dir(dir, want);
    }
    {
        /* An encrypted key is refused, never prompted for. */
        char path[300];
        FILE *fp;
        EVP_PKEY *k;
        static const char *const swaps[][2] = {{"intermediate.key", "intermediate.key"}};
        lab_copy("encrypted", swaps, ARRAY_LEN(swaps), dir, sizeof(dir));
        path_of(path, sizeof(path), g.lab, "intermediate.key");
        fp = fopen(path, "r");
        assert_non_null(fp);
        k = PEM_read_PrivateKey(fp, NULL, NULL, NULL);
        fclose(fp);
        assert_non_null(k);
        path_of(path, sizeof(path), dir, "intermediate.key");
        fp = fopen(path, "w");
        assert_non_null(fp);
        assert_int_equal(PEM_write_PrivateKey(fp, k, EVP_aes_128_cbc(),
                                              (const unsigned char *)"pw", 2, NULL, NULL),
                         1);
        fclose(fp);
        EVP_PKEY_free(k);
        snprintf(want, sizeof(want),
                 "lab CA: intermediate.key (%s) holds no unencrypted PEM private key", path);
        load_bad_dir(dir, want);
    }
}

static struct tf_lab_ca *
load_files_ok(const char *cert, const char *key, const char *chain, const char *ucert,
              const char *ukey)
{
    char err[512] = "";
    struct tf_lab_ca *ca = tf_lab_ca_load(NULL, cert, key, chain, ucert, ukey, err, sizeof(err));
    if (ca == NULL)
        fail_msg("load %s failed: %s", cert, err);
    return ca;
}

static void
load_files_bad(const char *cert, const char *key, const char *chain, const char *ucert,
               const char *ukey, const char *want)
{
    char err[512] = "";
    struct tf_lab_ca *ca = tf_lab_ca_load(NULL, cert, key, chain, ucert, ukey, err, sizeof(err));
    if (ca != NULL) {
        tf_lab_ca_free(ca);
        fail_msg("load %s accepted, want \"%s\"", cert ? cert : "(null)", want);
    }
    assert_string_equal(err, want);
}

static void
test_load_files_form(void **state)
{
    char cert[256], key[256], root[256], rkey[256], ucert[256], ukey[256];
    struct tf_lab_ca *ca;
    struct tf_forge *fg;
    struct tf_forged f;
    char err[512];

    (void)state;
    path_of(cert, sizeof(cert), g.lab, "intermediate.pem");
    path_of(key, sizeof(key), g.lab, "intermediate.key");
    path_of(root, sizeof(root), g.lab, "root.pem");
    path_of(rkey, sizeof(rkey), g.lab, "root.key");
    path_of(ucert, sizeof(ucert), g.lab, "untrusted-intermediate.pem");
    path_of(ukey, sizeof(ukey), g.lab, "untrusted-intermediate.key");

    /* Intermediate + chain file: chain = [intermediate, root]; the root is the one to trust. */
    ca = load_files_ok(cert, key, root, ucert, ukey);
    assert_int_equal(X509_cmp(tf_lab_ca_root(ca), g.root), 0);
    fg = tf_forge_new(ca, 4, TF_LEAF_KEYS_UPSTREAM, err, sizeof(err));
    assert_non_null(fg);
    forge_ok(fg, g.up_rsa_leaf, "a.test", TF_CERT_GOOD, 0, NULL, &f);
    assert_int_equal(sk_X509_num(f.chain), 2);
    assert_int_equal(X509_cmp(sk_X509_value(f.chain, 0), g.inter), 0);
    assert_int_equal(X509_cmp(sk_X509_value(f.chain, 1), g.root), 0);
    assert_verify(verify_root(&f, 2, "a.test"), X509_V_OK);
    tf_forged_release(&f);
    /* The configured untrusted pair is used as given. */
    forge_ok(fg, g.up_rsa_leaf, "a.test", TF_CERT_UNTRUSTED_ROOT, 0, NULL, &f);
    assert_int_equal(sk_X509_num(f.chain), 1);
    assert_int_equal(X509_cmp(sk_X509_value(f.chain, 0), g.uinter), 0);
    assert_verify(verify_with(f.leaf, f.chain, &g.uroot, 1, 2, "a.test").err, X509_V_OK);
    tf_forged_release(&f);
    /* No intermediate means leaf only, even with a configured chain. */
    forge_ok(fg, g.up_rsa_leaf, "a.test", TF_CERT_NO_INTERMEDIATE, 0, NULL, &f);
    assert_int_equal(sk_X509_num(f.chain), 0);
    tf_forged_release(&f);
    tf_forge_free(fg);
    tf_lab_ca_free(ca);

    /* A root signing directly: nothing is sent after the leaf; no untrusted pair: a throwaway. */
    ca = load_files_ok(root, rkey, NULL, NULL, NULL);
    assert_int_equal(X509_cmp(tf_lab_ca_root(ca), g.root), 0);
    fg = tf_forge_new(ca, 4, TF_LEAF_KEYS_UPSTREAM, err, sizeof(err));
    assert_non_null(fg);
    forge_ok(fg, g.up_ec_leaf, "a.test", TF_CERT_GOOD, 0, NULL, &f);
    assert_int_equal(sk_X509_num(f.chain), 0);
    assert_int_equal(X509_NAME_cmp(X509_get_issuer_name(f.leaf), X509_get_subject_name(g.root)),
                     0);
    assert_verify(verify_root(&f, 2, "a.test"), X509_V_OK);
    tf_forged_release(&f);
    forge_ok(fg, g.up_ec_leaf, "a.test", TF_CERT_UNTRUSTED_ROOT, 0, NULL, &f);
    assert_int_equal(sk_X509_num(f.chain), 1);
    assert_int_not_equal(X509_cmp(sk_X509_value(f.chain, 0), g.uinter), 0);
    assert_verify(verify_root(&f, 2, "a.test"), X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
    tf_forged_release(&f);
    tf_forge_free(fg);
    tf_lab_ca_free(ca);

    /* Only the intermediate, no chain file: the root is not known; the top cert stands in. */
    ca = load_files_ok(cert, key, NULL, NULL, NULL);
    assert_int_equal(X509_cmp(tf_lab_ca_root(ca), g.inter), 0);
    tf_lab_ca_free(ca);
}

static void
test_load_files_errors(void **state)
{
    char cert[256], key[256], root[256], ukey[256], nope[256], want[600], leaf[256],
        leafkey[256], empty[256];
    struct tf_forged f;
    FILE *fp;

    (void)state;
    path_of(cert, sizeof(cert), g.lab, "intermediate.pem");
    path_of(key, sizeof(key), g.lab, "intermediate.key");
    path_of(root, sizeof(root), g.lab, "root.pem");
    path_of(ukey, sizeof(ukey), g.lab, "untrusted-intermediate.key");
    path_of(nope, sizeof(nope), g.tmp, "nope.pem");

    load_files_bad(NULL, key, NULL, NULL, NULL, "lab CA: ca.cert and ca.key are both required");
    load_files_bad(cert, NULL, NULL, NULL, NULL, "lab CA: ca.cert and ca.key are both required");
    load_files_bad(cert, key, NULL, cert, NULL,
                   "lab CA: ca.untrusted_cert and ca.untrusted_key go together");
    snprintf(want, sizeof(want), "lab CA: cannot read %s: No such file or directory", nope);
    load_files_bad(nope, key, NULL, NULL, NULL, want);
    load_files_bad(cert, nope, NULL, NULL, NULL, want);
    load_files_bad(cert, key, nope, NULL, NULL, want);
    load_files_bad(cert, ukey, NULL, NULL, NULL, "lab CA: ca.key does not match ca.cert");
    load_files_bad(cert, key, NULL, cert, ukey,
                   "lab CA: ca.untrusted_key does not match ca.untrusted_cert");

    path_of(empty, sizeof(empty), g.tmp, "empty.pem");
    write_file(empty, "not a certificate\n");
    snprintf(want, sizeof(want), "lab CA: ca.chain (%s) holds no PEM certificate", empty);
    load_files_bad(cert, key, empty, NULL, NULL, want);

    /* A leaf (CA:FALSE) with its own key is not a signing CA. */
    forge_ok(g.fg, g.up_rsa_leaf, "a.test", TF_CERT_GOOD, 0, NULL, &f);
    path_of(leaf, sizeof(leaf), g.tmp, "leaf.pem");
    path_of(leafkey, sizeof(leafkey), g.tmp, "leaf.key");
    fp = fopen(leaf, "w");
    assert_non_null(fp);
    assert_int_equal(PEM_write_X509(fp, f.leaf), 1);
    fclose(fp);
    fp = fopen(leafkey, "w");
    assert_non_null(fp);
    assert_int_equal(PEM_write_PrivateKey(fp, f.key, NULL, NULL, 0, NULL, NULL), 1);
    fclose(fp);
    tf_forged_release(&f);
    load_files_bad(leaf, leafkey, NULL, NULL, NULL, "lab CA: ca.cert is not a CA certificate");
    load_files_bad(cert, key, NULL, leaf, leafkey,
                   "lab CA: ca.untrusted_cert is not a CA certificate");
}

/* ---------------------------------------------------------------- forge */

static void
check_good(X509 *upstream, int key_type)
{
    struct tf_forged f;
    char buf[512];

    forge_ok(g.fg, upstream, "a.test", TF_CERT_GOOD, 0, NULL, &f);
    assert_verify(verify_root(&f, 2, NULL), X509_V_OK);
    assert_verify(verify_root(&f, 2, "a.test"), X509_V_OK);
    assert_verify(verify_root(&f, 2, "b.test"), X509_V_OK);
    assert_int_equal(X509_check_host(f.leaf, "a.test", 0, 0, NULL), 1);
    assert_int_equal(X509_check_host(f.leaf, "b.test", 0, 0, NULL), 1);
    assert_int_equal(X509_check_ip_asc(f.leaf, "127.0.0.1", 0), 1);
    assert_int_equal(X509_check_host(f.leaf, "c.test", 0, 0, NULL), 0);

    /* Copied: subject, SAN (byte for byte), validity. */
    assert_int_equal(X509_NAME_cmp(X509_get_subject_name(f.leaf),
                                   X509_get_subject_name(upstream)),
                     0);
    {
        X509_EXTENSION *a = X509_get_ext(f.leaf, X509_get_ext_by_NID(f.leaf, NID_subject_alt_name, -1));
        X509_EXTENSION *b =
            X509_get_ext(upstream, X509_get_ext_by_NID(upstream, NID_subject_alt_name, -1));
        assert_non_null(a);
        assert_non_null(b);
        assert_int_equal(ASN1_OCTET_STRING_cmp(X509_EXTENSION_get_data(a),
                                               X509_EXTENSION_get_data(b)),
                         0);
    }
    assert_int_equal(ASN1_TIME_compare(X509_get0_notBefore(f.leaf),
                                       X509_get0_notBefore(upstream)),
                     0);
    assert_int_equal(ASN1_TIME_compare(X509_get0_notAfter(f.leaf),
                                       X509_get0_notAfter(upstream)),
                     0);
    /* Made here: issuer, serial, key, profile. */
    assert_int_equal(X509_NAME_cmp(X509_get_issuer_name(f.leaf), X509_get_subject_name(g.inter)),
                     0);
    assert_int_not_equal(ASN1_INTEGER_cmp(X509_get0_serialNumber(f.leaf),
                                          X509_get0_serialNumber(upstream)),
                         0);
    assert_int_equal(EVP_PKEY_get_base_id(f.key), key_type);
    assert_int_equal(EVP_PKEY_get_bits(f.key), key_type == EVP_PKEY_EC ? 256 : 2048);
    assert_int_equal(EVP_PKEY_eq(f.key, X509_get0_pubkey(upstream)), 0);
    assert_true(has_ext_value(f.leaf, NID_basic_constraints, "CA:FALSE"));
    assert_true(ext_critical(f.leaf, NID_basic_constraints));
    assert_true(has_ext_value(f.leaf, NID_key_usage,
                              key_type == EVP_PKEY_EC ? "Digital Signature"
                                                      : "Digital Signature, Key Encipherment"));
    assert_true(ext_critical(f.leaf, NID_key_usage));
    assert_true(has_ext_value(f.leaf, NID_ext_key_usage, "TLS Web Server Authentication"));
    assert_non_null(X509_get0_subject_key_id(f.leaf));
    assert_int_equal(ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(f.leaf),
                                           X509_get0_subject_key_id(g.inter)),
                     0);
    assert_int_equal(X509_get_signature_nid(f.leaf), NID_sha256WithRSAEncryption);
    /* Chain: the intermediate, alone. */
    assert_int_equal(sk_X509_num(f.chain), 1);
    assert_int_equal(X509_cmp(sk_X509_value(f.chain, 0), g.inter), 0);
    X509_NAME_oneline(X509_get_subject_name(f.leaf), buf, sizeof(buf));
    assert_string_equal(buf, "/O=Upstream Org/CN=a.test");
    tf_forged_release(&f);
}

static void
test_forge_good(void **state)
{
    (void)state;
    check_good(g.up_ec_leaf, EVP_PKEY_EC);
    check_good(g.up_rsa_leaf, EVP_PKEY_RSA);
}

/* One forge per tf_leaf_keys policy: which key types the leaves get, and that the pair agrees. */
static void
check_leaf_keys(enum tf_leaf_keys keys, X509 *upstream, int want, int want_alt)
{
    char err[512];
    struct tf_forge *fg = tf_forge_new(g.ca, 8, keys, err, sizeof(err));
    struct tf_forged f, again;

    assert_non_null(fg);
    forge_ok(fg, upstream, "a.test", TF_CERT_GOOD, 0, NULL, &f);
    assert_int_equal(EVP_PKEY_get_base_id(f.key), want);
    assert_verify(verify_root(&f, 2, "a.test"), X509_V_OK);
    if (want_alt == 0) {
        assert_null(f.alt_leaf);
        assert_null(f.alt_key);
    } else {
        struct tf_forged alt = {.leaf = f.alt_leaf, .key = f.alt_key, .chain = f.chain};
        assert_non_null(f.alt_leaf);
        assert_int_equal(EVP_PKEY_get_base_id(f.alt_key), want_alt);
        assert_int_equal(X509_check_private_key(f.alt_leaf, f.alt_key), 1);
        assert_verify(verify_root(&alt, 2, "a.test"), X509_V_OK);
        assert_int_equal(X509_NAME_cmp(X509_get_subject_name(f.alt_leaf),
                                       X509_get_subject_name(f.leaf)),
                         0);
        assert_int_equal(ASN1_TIME_compare(X509_get0_notAfter(f.alt_leaf),
                                           X509_get0_notAfter(f.leaf)),
                         0);
        assert_int_equal(X509_check_host(f.alt_leaf, "b.test", 0, 0, NULL), 1);
    }
    /* The cache hands out the pair, not one half of it. */
    forge_ok(fg, upstream, "a.test", TF_CERT_GOOD, 0, NULL, &again);
    assert_true(again.cached);
    assert_ptr_equal(again.leaf, f.leaf);
    assert_ptr_equal(again.alt_leaf, f.alt_leaf);
    assert_ptr_equal(again.alt_key, f.alt_key);
    tf_forged_release(&again);
    tf_forged_release(&f);
    /* cert-weak-key is one RSA-1024 leaf whatever the policy. */
    forge_ok(fg, upstream, "a.test", TF_CERT_WEAK_KEY, 0, NULL, &f);
    assert_int_equal(EVP_PKEY_get_bits(f.key), 1024);
    assert_null(f.alt_leaf);
    tf_forged_release(&f);
    tf_forge_free(fg);
}

static void
test_forge_leaf_keys(void **state)
{
    (void)state;
    check_leaf_keys(TF_LEAF_KEYS_BOTH, g.up_rsa_leaf, EVP_PKEY_RSA, EVP_PKEY_EC);
    check_leaf_keys(TF_LEAF_KEYS_BOTH, g.up_ec_leaf, EVP_PKEY_EC, EVP_PKEY_RSA);
    check_leaf_keys(TF_LEAF_KEYS_UPSTREAM, g.up_rsa_leaf, EVP_PKEY_RSA, 0);
    check_leaf_keys(TF_LEAF_KEYS_UPSTREAM, g.up_ec_leaf, EVP_PKEY_EC, 0);
    check_leaf_keys(TF_LEAF_KEYS_RSA, g.up_ec_leaf, EVP_PKEY_RSA, 0);
    check_leaf_keys(TF_LEAF_KEYS_ECDSA, g.up_rsa_leaf, EVP_PKEY_EC, 0);
}

/* An upstream that outlives the lab intermediate gets the intermediate's notAfter. */
static void
test_forge_clamp(void **state)
{
    X509 *up = make_upstream(g.up_rsa, "long.test", "DNS:long.test", time(NULL) - DAY,
                             time(NULL) + 30 * 365 * DAY, 77);
    struct tf_forged f;

    (void)state;
    forge_ok(g.fg, up, "long.test", TF_CERT_GOOD, 0, NULL, &f);
    assert_int_equal(ASN1_TIME_compare(X509_get0_notAfter(f.leaf), X509_get0_notAfter(g.inter)),
                     0);
    assert_int_equal(ASN1_TIME_compare(X509_get0_notBefore(f.leaf), X509_get0_notBefore(up)), 0);
    assert_verify(verify_root(&f, 2, "long.test"), X509_V_OK);
    tf_forged_release(&f);
    X509_free(up);
}

static void
test_forge_from_sni(void **state)
{
    struct tf_forged f;
    char err[512] = "x", buf[256];

    (void)state;
    forge_ok(g.fg, NULL, "sni.test", TF_CERT_GOOD, 0, NULL, &f);
    X509_NAME_oneline(X509_get_subject_name(f.leaf), buf, sizeof(buf));
    assert_string_equal(buf, "/CN=sni.test");
    assert_true(has_ext_value(f.leaf, NID_subject_alt_name, "DNS:sni.test"));
    assert_time_near(X509_get0_notBefore(f.leaf), -3600);
    assert_time_near(X509_get0_notAfter(f.leaf), 90 * DAY);
    assert_int_equal(EVP_PKEY_get_base_id(f.key), EVP_PKEY_RSA);
    assert_verify(verify_root(&f, 2, "sni.test"), X509_V_OK);
    tf_forged_release(&f);

    /* An address: iPAddress SAN, which clients match against the address they dialled. */
    forge_ok(g.fg, NULL, "127.0.0.1", TF_CERT_GOOD, 0, NULL, &f);
    assert_true(has_ext_value(f.leaf, NID_subject_alt_name, "IP Address:127.0.0.1"));
    assert_int_equal(X509_check_ip_asc(f.leaf, "127.0.0.1", 0), 1);
    tf_forged_release(&f);
    forge_ok(g.fg, NULL, "::1", TF_CERT_GOOD, 0, NULL, &f);
    assert_int_equal(X509_check_ip_asc(f.leaf, "::1", 0), 1);
    tf_forged_release(&f);

    /* An upstream with an empty subject and no SAN: both from the SNI. */
    {
        X509 *up = make_upstream(g.up_ec, NULL, NULL, time(NULL) - DAY, time(NULL) + DAY, 5);
        forge_ok(g.fg, up, "empty.test", TF_CERT_GOOD, 0, NULL, &f);
        X509_NAME_oneline(X509_get_subject_name(f.leaf), buf, sizeof(buf));
        assert_string_equal(buf, "/CN=empty.test");
        assert_true(has_ext_value(f.leaf, NID_subject_alt_name, "DNS:empty.test"));
        assert_verify(verify_root(&f, 2, "empty.test"), X509_V_OK);
        tf_forged_release(&f);
        /* Here the leaf depends on the SNI, so another SNI is another entry. */
        forge_ok(g.fg, up, "other-empty.test", TF_CERT_GOOD, 0, NULL, &f);
        assert_false(f.cached);
        assert_true(has_ext_value(f.leaf, NID_subject_alt_name, "DNS:other-empty.test"));
        tf_forged_release(&f);
        forge_ok(g.fg, up, "empty.test", TF_CERT_GOOD, 0, NULL, &f);
        assert_true(f.cached);
        tf_forged_release(&f);
        X509_free(up);
    }
    /* A CN-only upstream stays CN-only: the client meets what the real server shows. */
    {
        X509 *up = make_upstream(g.up_ec, "cn-only.test", NULL, time(NULL) - DAY,
                                 time(NULL) + DAY, 6);
        forge_ok(g.fg, up, "cn-only.test", TF_CERT_GOOD, 0, NULL, &f);
        assert_int_equal(X509_get_ext_by_NID(f.leaf, NID_subject_alt_name, -1), -1);
        tf_forged_release(&f);
        X509_free(up);
    }
    /* A name too long for a CN (64) still gets its SAN. */
    {
        const char *longname =
            "a-very-long-label-that-goes-on-and-on.another-long-label-for-length.test";
        char want[160];
        forge_ok(g.fg, NULL, longname, TF_CERT_GOOD, 0, NULL, &f);
        assert_int_equal(X509_NAME_entry_count(X509_get_subject_name(f.leaf)), 0);
        snprintf(want, sizeof(want), "DNS:%s", longname);
        assert_true(has_ext_value(f.leaf, NID_subject_alt_name, want));
        assert_true(ext_critical(f.leaf, NID_subject_alt_name) == false);
        tf_forged_release(&f);
    }

    assert_false(tf_forge_chain(g.fg, NULL, NULL, NULL, &f, err, sizeof(err)));
    assert_string_equal(err, "forge: no upstream certificate and no SNI to forge from");
    assert_null(f.leaf);
    assert_false(tf_forge_chain(g.fg, NULL, "", NULL, &f, err, sizeof(err)));
    /* A NULL fault is a good chain. */
    assert_true(tf_forge_chain(g.fg, g.up_ec_leaf, "a.test", NULL, &f, err, sizeof(err)));
    assert_verify(verify_root(&f, 2, "a.test"), X509_V_OK);
    tf_forged_release(&f);
}

struct mutation_case {
    const char *name;
    enum tf_cert_mutation m;
    long seconds;
    const char *host;
    int want;                   /* at auth level 2, checking host a.test */
};

static const struct mutation_case mutation_cases[] = {
    {"expired", TF_CERT_EXPIRED, 0, NULL, X509_V_ERR_CERT_HAS_EXPIRED},
    {"expired 60s", TF_CERT_EXPIRED, 60, NULL, X509_V_ERR_CERT_HAS_EXPIRED},
    {"not-yet-valid", TF_CERT_NOT_YET_VALID, 0, NULL, X509_V_ERR_CERT_NOT_YET_VALID},
    {"not-yet-valid 3600s", TF_CERT_NOT_YET_VALID, 3600, NULL, X509_V_ERR_CERT_NOT_YET_VALID},
    {"wrong-host", TF_CERT_WRONG_HOST, 0, NULL, X509_V_ERR_HOSTNAME_MISMATCH},
    {"wrong-host other.test", TF_CERT_WRONG_HOST, 0, "other.test", X509_V_ERR_HOSTNAME_MISMATCH},
    {"self-signed", TF_CERT_SELF_SIGNED, 0, NULL, X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT},
    {"untrusted-root", TF_CERT_UNTRUSTED_ROOT, 0, NULL,
     X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY},
    {"no-intermediate", TF_CERT_NO_INTERMEDIATE, 0, NULL,
     X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY},
    {"wrong-eku", TF_CERT_WRONG_EKU, 0, NULL, X509_V_ERR_INVALID_PURPOSE},
    {"sha1", TF_CERT_SHA1, 0, NULL, X509_V_ERR_CA_MD_TOO_WEAK},
    {"weak-key", TF_CERT_WEAK_KEY, 0, NULL, X509_V_ERR_EE_KEY_TOO_SMALL},
};

/* What only this mutation does, beyond the verifier's verdict. */
static void
check_mutation_detail(const struct mutation_case *c, const struct tf_forged *f, X509 *upstream)
{
    char buf[256];
    long secs = c->seconds > 0 ? c->seconds : 30 * DAY;

    switch (c->m) {
    case TF_CERT_EXPIRED:
        assert_time_near(X509_get0_notAfter(f->leaf), -secs);
        assert_time_near(X509_get0_notBefore(f->leaf), -secs - 365 * DAY);
        break;
    case TF_CERT_NOT_YET_VALID:
        assert_time_near(X509_get0_notBefore(f->leaf), secs);
        assert_time_near(X509_get0_notAfter(f->leaf), secs + 90 * DAY);
        break;
    case TF_CERT_WRONG_HOST: {
        const char *host = c->host != NULL ? c->host : "wrong.host.invalid";
        char want[128];
        assert_int_equal(X509_check_host(f->leaf, "a.test", 0, 0, NULL), 0);
        assert_int_equal(X509_check_ip_asc(f->leaf, "127.0.0.1", 0), 0);
        assert_int_equal(X509_check_host(f->leaf, host, 0, 0, NULL), 1);
        snprintf(want, sizeof(want), "DNS:%s", host);
        assert_true(has_ext_value(f->leaf, NID_subject_alt_name, want));
        snprintf(want, sizeof(want), "/O=Upstream Org/CN=%s", host);
        X509_NAME_oneline(X509_get_subject_name(f->leaf), buf, sizeof(buf));
        assert_string_equal(buf, want);
        assert_verify(verify_root(f, 2, host), X509_V_OK);
        break;
    }
    case TF_CERT_SELF_SIGNED:
        assert_int_equal(sk_X509_num(f->chain), 0);
        assert_int_equal(X509_NAME_cmp(X509_get_issuer_name(f->leaf),
                                       X509_get_subject_name(f->leaf)),
                         0);
        assert_int_equal(X509_verify(f->leaf, f->key), 1);
        assert_int_equal(X509_self_signed(f->leaf, 1), 1);
        /* Trusting the leaf itself makes it verify: the only thing wrong is who signed it. */
        assert_verify(verify_with(f->leaf, f->chain, &f->leaf, 1, 2, "a.test").err, X509_V_OK);
        break;
    case TF_CERT_UNTRUSTED_ROOT: {
        X509 *both[] = {g.root, g.uroot};
        assert_int_equal(sk_X509_num(f->chain), 1);
        assert_int_equal(X509_cmp(sk_X509_value(f->chain, 0), g.uinter), 0);
        assert_verify(verify_with(f->leaf, f->chain, both, 2, 2, "a.test").err, X509_V_OK);
        break;
    }
    case TF_CERT_NO_INTERMEDIATE: {
        STACK_OF(X509) *sent = sk_X509_new_null();
        assert_int_equal(sk_X509_num(f->chain), 0);
        assert_true(sk_X509_push(sent, g.inter) > 0);
        assert_verify(verify_with(f->leaf, sent, &g.root, 1, 2, "a.test").err, X509_V_OK);
        sk_X509_free(sent);
        break;
    }
    case TF_CERT_WRONG_EKU:
        assert_true(has_ext_value(f->leaf, NID_ext_key_usage, "TLS Web Client Authentication"));
        break;
    case TF_CERT_SHA1:
        assert_int_equal(X509_get_signature_nid(f->leaf), NID_sha1WithRSAEncryption);
        break;
    case TF_CERT_WEAK_KEY:
        assert_int_equal(EVP_PKEY_get_base_id(f->key), EVP_PKEY_RSA);
        assert_int_equal(EVP_PKEY_get_bits(f->key), 1024);
        break;
    case TF_CERT_GOOD:
    default:
        break;
    }
    /* Everything else is the good forgery's. */
    if (c->m != TF_CERT_WRONG_HOST)
        assert_int_equal(X509_NAME_cmp(X509_get_subject_name(f->leaf),
                                       X509_get_subject_name(upstream)),
                         0);
    if (c->m != TF_CERT_EXPIRED && c->m != TF_CERT_NOT_YET_VALID)
        assert_int_equal(ASN1_TIME_compare(X509_get0_notAfter(f->leaf),
                                           X509_get0_notAfter(upstream)),
                         0);
    if (c->m != TF_CERT_SELF_SIGNED && c->m != TF_CERT_UNTRUSTED_ROOT)
        assert_int_equal(X509_NAME_cmp(X509_get_issuer_name(f->leaf),
                                       X509_get_subject_name(g.inter)),
                         0);
    if (c->m != TF_CERT_WEAK_KEY)
        assert_int_equal(EVP_PKEY_get_base_id(f->key),
                         EVP_PKEY_get_base_id(X509_get0_pubkey(upstream)));
}

static void
test_forge_mutations(void **state)
{
    X509 *const ups[] = {g.up_ec_leaf, g.up_rsa_leaf};

    (void)state;
    for (size_t u = 0; u < ARRAY_LEN(ups); u++) {
        for (size_t i = 0; i < ARRAY_LEN(mutation_cases); i++) {
            const struct mutation_case *c = &mutation_cases[i];
            struct tf_forged f;
            int got;

            forge_ok(g.fg, ups[u], "a.test", c->m, c->seconds, c->host, &f);
            got = verify_root(&f, 2, "a.test");
            if (got != c->want)
                fail_msg("%s (%s upstream): got %d (%s), want %d (%s)", c->name,
                         u == 0 ? "EC" : "RSA", got, X509_verify_cert_error_string(got), c->want,
                         X509_verify_cert_error_string(c->want));
            check_mutation_detail(c, &f, ups[u]);
            tf_forged_release(&f);
        }
    }
}

/*
 * Security levels: SHA-1 (63 bits in OpenSSL 3) already fails at auth
 * level 1; RSA-1024 (80 bits) passes level 1 and fails from level 2, the
 * default on Debian 12.  Level 0 accepts both.
 */
static void
test_forge_security_levels(void **state)
{
    struct tf_forged f;

    (void)state;
    forge_ok(g.fg, g.up_rsa_leaf, "a.test", TF_CERT_SHA1, 0, NULL, &f);
    assert_verify(verify_root(&f, 0, "a.test"), X509_V_OK);
    assert_verify(verify_root(&f, 1, "a.test"), X509_V_ERR_CA_MD_TOO_WEAK);
    tf_forged_release(&f);
    forge_ok(g.fg, g.up_rsa_leaf, "a.test", TF_CERT_WEAK_KEY, 0, NULL, &f);
    assert_verify(verify_root(&f, 0, "a.test"), X509_V_OK);
    assert_verify(verify_root(&f, 1, "a.test"), X509_V_OK);
    assert_verify(verify_root(&f, 3, "a.test"), X509_V_ERR_EE_KEY_TOO_SMALL);
    tf_forged_release(&f);
}

/* With an EC signing CA, cert-sha1 is ecdsa-with-SHA1. */
static void
test_forge_sha1_ec_signer(void **state)
{
    char cert[256], key[256], err[512];
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509_NAME *n = name_of("EC Lab", "EC Lab Root");
    X509 *x = X509_new();
    struct tf_lab_ca *ca;
    struct tf_forge *fg;
    struct tf_forged f;
    FILE *fp;

    (void)state;
    assert_non_null(k);
    assert_int_equal(X509_set_version(x, X509_VERSION_3), 1);
    assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), 9), 1);
    assert_int_equal(X509_set_subject_name(x, n), 1);
    assert_int_equal(X509_set_issuer_name(x, n), 1);
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), -DAY));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 365 * DAY));
    assert_int_equal(X509_set_pubkey(x, k), 1);
    add_ext(x, NULL, NID_basic_constraints, "critical,CA:TRUE");
    add_ext(x, NULL, NID_subject_key_identifier, "hash");
    assert_true(X509_sign(x, k, EVP_sha256()) > 0);
    path_of(cert, sizeof(cert), g.tmp, "ec-root.pem");
    path_of(key, sizeof(key), g.tmp, "ec-root.key");
    fp = fopen(cert, "w");
    assert_non_null(fp);
    assert_int_equal(PEM_write_X509(fp, x), 1);
    fclose(fp);
    fp = fopen(key, "w");
    assert_non_null(fp);
    assert_int_equal(PEM_write_PrivateKey(fp, k, NULL, NULL, 0, NULL, NULL), 1);
    fclose(fp);

    ca = load_files_ok(cert, key, NULL, NULL, NULL);
    fg = tf_forge_new(ca, 0, TF_LEAF_KEYS_UPSTREAM, err, sizeof(err));
    assert_non_null(fg);
    forge_ok(fg, g.up_rsa_leaf, "a.test", TF_CERT_SHA1, 0, NULL, &f);
    assert_int_equal(X509_get_signature_nid(f.leaf), NID_ecdsa_with_SHA1);
    assert_verify(verify_with(f.leaf, f.chain, &x, 1, 2, "a.test").err,
                  X509_V_ERR_CA_MD_TOO_WEAK);
    tf_forged_release(&f);
    forge_ok(fg, g.up_rsa_leaf, "a.test", TF_CERT_GOOD, 0, NULL, &f);
    assert_int_equal(X509_get_signature_nid(f.leaf), NID_ecdsa_with_SHA256);
    assert_verify(verify_with(f.leaf, f.chain, &x, 1, 2, "a.test").err, X509_V_OK);
    tf_forged_release(&f);
    /* cache_size 0: nothing is kept, every call signs. */
    forge_ok(fg, g.up_rsa_leaf, "a.test", TF_CERT_GOOD, 0, NULL, &f);
    assert_false(f.cached);
    tf_forged_release(&f);
    tf_forge_free(fg);
    tf_lab_ca_free(ca);
    X509_free(x);
    X509_NAME_free(n);
    EVP_PKEY_free(k);
}

/* ---------------------------------------------------------------- cache */

static void
test_cache_hits(void **state)
{
    char err[512];
    struct tf_forge *fg = tf_forge_new(g.ca, 64, TF_LEAF_KEYS_UPSTREAM, err, sizeof(err));
    struct tf_forged a, b;
    unsigned long hits, misses;

    (void)state;
    assert_non_null(fg);
    forge_ok(fg, g.up_rsa_leaf, "a.test", TF_CERT_GOOD, 0, NULL, &a);
    assert_false(a.cached);
    forge_ok(fg, g.up_rsa_leaf, "a.test", TF_CERT_GOOD, 0, NULL, &b);
    assert_true(b.cached);
    assert_ptr_equal(a.leaf, b.leaf);
    assert_ptr_equal(a.key, b.key);
    assert_int_equal(sk_X509_num(b.chain), 1);
    assert_ptr_not_equal(a.chain, b.chain);     /* each caller owns its stack */
    tf_forge_stats(fg, &hits, &misses);
    assert_int_equal(hits, 1);
    assert_int_equal(misses, 1);
    /* The caller's reference outlives its release of the other. */
    tf_forged_release(&a);
    assert_null(a.leaf);
    assert_verify(verify_root(&b, 2, "a.test"), X509_V_OK);
    tf_forged_release(&b);

    /* Each of these is a separate entry: mutation, its parameters, SNI, upstream. */
    {
        static const struct {
            enum tf_cert_mutation m;
            long seconds;
            const char *host;
            const char *sni;
            int upstream;       /* 0: RSA leaf, 1: EC leaf, 2: none */
        } keys[] = {
            {TF_CERT_EXPIRED, 0, NULL, "a.test", 0},
            {TF_CERT_EXPIRED, 60, NULL, "a.test", 0},
            {TF_CERT_NOT_YET_VALID, 3600, NULL, "a.test", 0},
            {TF_CERT_WRONG_HOST, 0, NULL, "a.test", 0},
            {TF_CERT_WRONG_HOST, 0, "x.test", "a.test", 0},
            {TF_CERT_SELF_SIGNED, 0, NULL, "a.test", 0},
            {TF_CERT_UNTRUSTED_ROOT, 0, NULL, "a.test", 0},
            {TF_CERT_NO_INTERMEDIATE, 0, NULL, "a.test", 0},
            {TF_CERT_WRONG_EKU, 0, NULL, "a.test", 0},
            {TF_CERT_SHA1, 0, NULL, "a.test", 0},
            {TF_CERT_WEAK_KEY, 0, NULL, "a.test", 0},
            {TF_CERT_GOOD, 0, NULL, "a.test", 1},
            {TF_CERT_GOOD, 0, NULL, "a.test", 2},
            {TF_CERT_GOOD, 0, NULL, "b.test", 2},
        };
        X509 *leaves[ARRAY_LEN(keys)];
        X509 *const ups[] = {g.up_rsa_leaf, g.up_ec_leaf, NULL};

        for (size_t i = 0; i < ARRAY_LEN(keys); i++) {
            struct tf_forged f;
            forge_ok(fg, ups[keys[i].upstream], keys[i].sni, keys[i].m, keys[i].seconds,
                     keys[i].host, &f);
            if (f.cached)
                fail_msg("key %zu hit the cache", i);
            leaves[i] = f.leaf;
            f.leaf = NULL;
            tf_forged_release(&f);
        }
        /* Again, all hits; and the defaults are the same keys as spelled out. */
        for (size_t i = 0; i < ARRAY_LEN(keys); i++) {
            struct tf_forged f;
            forge_ok(fg, ups[keys[i].upstream], keys[i].sni, keys[i].m, keys[i].seconds,
                     keys[i].host, &f);
            assert_true(f.cached);
            assert_ptr_equal(f.leaf, leaves[i]);
            tf_forged_release(&f);
            X509_free(leaves[i]);
        }
        forge_ok(fg, g.up_rsa_leaf, "a.test", TF_CERT_EXPIRED, 30 * DAY, NULL, &a);
        assert_true(a.cached);
        tf_forged_release(&a);
        forge_ok(fg, g.up_rsa_leaf, "a.test", TF_CERT_WRONG_HOST, 0, "wrong.host.invalid", &a);
        assert_true(a.cached);
        tf_forged_release(&a);
        /* Parameters of other mutations do not split entries. */
        forge_ok(fg, g.up_rsa_leaf, "a.test", TF_CERT_SHA1, 99, "ignored.test", &a);
        assert_true(a.cached);
        tf_forged_release(&a);
        /* Nor does the SNI when the upstream has a subject: the leaf is the same. */
        forge_ok(fg, g.up_rsa_leaf, "b.test", TF_CERT_GOOD, 0, NULL, &a);
        assert_true(a.cached);
        tf_forged_release(&a);
        forge_ok(fg, g.up_rsa_leaf, NULL, TF_CERT_GOOD, 0, NULL, &a);
        assert_true(a.cached);
        tf_forged_release(&a);
        tf_forge_stats(fg, &hits, &misses);
        assert_int_equal(misses, 1 + ARRAY_LEN(keys));
        assert_int_equal(hits, 1 + ARRAY_LEN(keys) + 5);
    }
    tf_forge_free(fg);
}

/* A not-yet-valid leaf becomes valid `seconds` after it was made: its entry expires halfway. */
static void
test_cache_not_yet_valid_goes_stale(void **state)
{
    char err[512];
    struct tf_forge *fg = tf_forge_new(g.ca, 8, TF_LEAF_KEYS_UPSTREAM, err, sizeof(err));
    struct tf_forged f;

    (void)state;
    assert_non_null(fg);
    forge_ok(fg, g.up_ec_leaf, "a.test", TF_CERT_NOT_YET_VALID, 2, NULL, &f);
    assert_false(f.cached);
    tf_forged_release(&f);
    sleep(2);
    forge_ok(fg, g.up_ec_leaf, "a.test", TF_CERT_NOT_YET_VALID, 2, NULL, &f);
    assert_false(f.cached);
    assert_verify(verify_root(&f, 2, "a.test"), X509_V_ERR_CERT_NOT_YET_VALID);
    tf_forged_release(&f);
    tf_forge_free(fg);
}

static bool
forge_cached(struct tf_forge *fg, const char *sni)
{
    struct tf_forged f;
    bool cached;

    forge_ok(fg, NULL, sni, TF_CERT_GOOD, 0, NULL, &f);
    cached = f.cached;
    tf_forged_release(&f);
    return cached;
}

static void
test_cache_lru(void **state)
{
    char err[512];
    struct tf_forge *fg = tf_forge_new(g.ca, 2, TF_LEAF_KEYS_UPSTREAM, err, sizeof(err));
    unsigned long hits, misses;

    (void)state;
    assert_non_null(fg);
    assert_false(forge_cached(fg, "a.test"));
    assert_false(forge_cached(fg, "b.test"));
    assert_true(forge_cached(fg, "a.test"));    /* a is now the most recent */
    assert_false(forge_cached(fg, "c.test"));   /* evicts b, the least recent */
    assert_true(forge_cached(fg, "a.test"));
    assert_true(forge_cached(fg, "c.test"));
    assert_false(forge_cached(fg, "b.test"));   /* evicts a */
    assert_true(forge_cached(fg, "c.test"));
    assert_false(forge_cached(fg, "a.test"));   /* evicts b */
    assert_false(forge_cached(fg, "b.test"));   /* evicts c */
    tf_forge_stats(fg, &hits, &misses);
    assert_int_equal(hits, 4);
    assert_int_equal(misses, 6);
    tf_forge_free(fg);
}

static double
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Diagnostic only: what a new site costs against a repeated one. */
static void
test_cache_timing(void **state)
{
    enum { N = 200 };
    char err[512], cn[32];
    struct tf_forge *fg = tf_forge_new(g.ca, N, TF_LEAF_KEYS_UPSTREAM, err, sizeof(err));
    X509 *ups[N];
    double t0, t1, t2;
    unsigned long hits, misses;

    (void)state;
    assert_non_null(fg);
    for (int i = 0; i < N; i++) {
        snprintf(cn, sizeof(cn), "site%d.test", i);
        ups[i] = make_upstream(i % 2 ? g.up_ec : g.up_rsa, cn, "DNS:site.test",
                               time(NULL) - DAY, time(NULL) + 90 * DAY, 5000 + i);
    }
    t0 = now_ms();
    for (int i = 0; i < N; i++) {
        struct tf_forged f;
        forge_ok(fg, ups[i], "site.test", TF_CERT_GOOD, 0, NULL, &f);
        assert_false(f.cached);
        tf_forged_release(&f);
    }
    t1 = now_ms();
    for (int i = 0; i < N; i++) {
        struct tf_forged f;
        forge_ok(fg, ups[i], "site.test", TF_CERT_GOOD, 0, NULL, &f);
        assert_true(f.cached);
        tf_forged_release(&f);
    }
    t2 = now_ms();
    tf_forge_stats(fg, &hits, &misses);
    assert_int_equal(hits, N);
    assert_int_equal(misses, N);
    print_message("# forge: %d new upstreams %.1f ms (%.3f ms each); %d cached %.1f ms "
                  "(%.4f ms each)\n",
                  N, t1 - t0, (t1 - t0) / N, N, t2 - t1, (t2 - t1) / N);
    for (int i = 0; i < N; i++)
        X509_free(ups[i]);
    tf_forge_free(fg);
}

static void
test_null_safe(void **state)
{
    (void)state;
    tf_forge_free(NULL);
    tf_lab_ca_free(NULL);
    tf_forged_release(NULL);
}

int
main(void)
{
    static const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_files),
        cmocka_unit_test(test_init_profiles),
        cmocka_unit_test(test_init_readme),
        cmocka_unit_test(test_init_refuses_overwrite),
        cmocka_unit_test(test_load_dir_errors),
        cmocka_unit_test(test_load_files_form),
        cmocka_unit_test(test_load_files_errors),
        cmocka_unit_test(test_forge_good),
        cmocka_unit_test(test_forge_leaf_keys),
        cmocka_unit_test(test_forge_clamp),
        cmocka_unit_test(test_forge_from_sni),
        cmocka_unit_test(test_forge_mutations),
        cmocka_unit_test(test_forge_security_levels),
        cmocka_unit_test(test_forge_sha1_ec_signer),
        cmocka_unit_test(test_cache_hits),
        cmocka_unit_test(test_cache_not_yet_valid_goes_stale),
        cmocka_unit_test(test_cache_lru),
        cmocka_unit_test(test_cache_timing),
        cmocka_unit_test(test_null_safe),
    };
    return cmocka_run_group_tests_name("forge", tests, group_setup, group_teardown);
}
