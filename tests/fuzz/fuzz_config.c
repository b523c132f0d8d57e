/*
 * fuzz_config.c — libFuzzer target for the configuration loader (config.c,
 * through libconfig) and the --fault spec parser (fault.c).
 *
 * The input is written to a temporary file, loaded with tf_config_load()
 * and, up to its first NUL, parsed as a command-line fault spec with
 * tf_fault_rule_parse_spec().  Besides not crashing or leaking, the loader
 * must keep its contract: a failure says why in err (NUL-terminated,
 * whole lines), a success gives a snapshot whose rules are accepted again
 * by tf_config_with_rules() against the same listeners, and every rule
 * (from the file or the spec) survives its JSON form: the rule keys of
 * tf_fault_rule_json() (fault, name, enabled, params, match) read back by
 * tf_fault_rule_from_json() give the same rule again.  libconfig's own
 * leaks on syntax errors are suppressed (__lsan_default_suppressions
 * below); every other leak is ours and fails.  Seeds: corpus/fuzz_config/ (the shipped
 * configurations, the unit-test fixtures without their comments, and a
 * few fault specs); made by tests/fuzz/make_seeds.py.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "tlsfault/config.h"
#include "tlsfault/fault.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
const char *__lsan_default_suppressions(void);

/*
 * libconfig (1.5, Debian's libconfig9) leaks inside its scanner on some
 * syntax errors: one byte (tests/lsan.supp), or the string buffer of a
 * string cut short by the error, allocated by strbuf_append() called from
 * libconfig_yylex().  libconfig is built without frame pointers, so with
 * ASan's fast unwinder the second one's stack ends at strbuf_append; both
 * are suppressed here, built in, so that libFuzzer and `make check` agree
 * whatever LSAN_OPTIONS says.  strbuf_append is libconfig's own, never
 * called by us.
 */
const char *
__lsan_default_suppressions(void)
{
    return "leak:libconfig_yylex\nleak:strbuf_append\n";
}

static char fuzz_dir[64];
static char fuzz_path[96];

static void
fuzz_check(bool ok)
{
    if (!ok)
        abort();
}

/* One private directory per process: relative paths in the file resolve there. */
static void
fuzz_setup(void)
{
    const char *tmp = getenv("TMPDIR");

    if (fuzz_path[0] != '\0')
        return;
    if (tmp == NULL || *tmp == '\0' || strlen(tmp) > 32)
        tmp = "/tmp";
    snprintf(fuzz_dir, sizeof(fuzz_dir), "%s/tf-fuzz-config-XXXXXX", tmp);
    fuzz_check(mkdtemp(fuzz_dir) != NULL);
    snprintf(fuzz_path, sizeof(fuzz_path), "%s/fuzz.conf", fuzz_dir);
}

static void
fuzz_cleanup(void)
{
    if (fuzz_path[0] != '\0') {
        unlink(fuzz_path);
        rmdir(fuzz_dir);
    }
}

static void
fuzz_err_ok(const char *err, size_t len)
{
    fuzz_check(memchr(err, '\0', len) != NULL);
}

/* A rule read back from its JSON form is the same rule. */
static void
fuzz_rule_roundtrip(const struct tf_fault_rule *rule)
{
    static const char *const keys[] = {"fault", "name", "enabled", "params", "match"};
    json_t *a = tf_fault_rule_json(rule), *b, *valid = NULL;
    struct tf_fault_rule *again;
    char err[512];
    char *text;

    fuzz_check(a != NULL);
    text = json_dumps(a, JSON_COMPACT);
    fuzz_check(text != NULL);
    free(text);
    /* What a control client would send back: the keys of a rule in the file. */
    json_t *in = json_object();
    fuzz_check(in != NULL);
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (json_object_get(a, keys[i]) != NULL)
            json_object_set(in, keys[i], json_object_get(a, keys[i]));
    again = tf_fault_rule_from_json(in, err, sizeof(err), &valid);
    json_decref(in);
    if (again == NULL) {
        fprintf(stderr, "fuzz_config: rule JSON not read back: %s\n", err);
        abort();
    }
    json_decref(valid);
    b = tf_fault_rule_json(again);
    fuzz_check(b != NULL);
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (!json_equal(json_object_get(a, keys[i]), json_object_get(b, keys[i]))) {
            char *sa = json_dumps(a, JSON_COMPACT | JSON_SORT_KEYS);
            char *sb = json_dumps(b, JSON_COMPACT | JSON_SORT_KEYS);
            fprintf(stderr, "fuzz_config: rule JSON round trip changed \"%s\":\n  %s\n  %s\n",
                    keys[i], sa ? sa : "?", sb ? sb : "?");
            abort();
        }
    }
    json_decref(a);
    json_decref(b);
    tf_fault_rule_unref(again);
}

static void
fuzz_file(const uint8_t *data, size_t size)
{
    char err[4096];
    struct tf_config *cfg, *again;
    FILE *f;

    fuzz_setup();
    f = fopen(fuzz_path, "wb");
    fuzz_check(f != NULL);
    fuzz_check(fwrite(data, 1, size, f) == size);
    fuzz_check(fclose(f) == 0);

    memset(err, 'Z', sizeof(err));
    cfg = tf_config_load(fuzz_path, err, sizeof(err));
    fuzz_err_ok(err, sizeof(err));
    if (cfg == NULL) {
        fuzz_check(err[0] != '\0');
        return;
    }
    fuzz_check(cfg->n_listeners > 0 && cfg->listeners != NULL);
    for (size_t i = 0; i < cfg->n_faults; i++)
        fuzz_rule_roundtrip(cfg->faults[i]);
    /* The file's rules, judged again against the same listeners, pass. */
    memset(err, 'Z', sizeof(err));
    again = tf_config_with_rules(cfg, cfg->faults, cfg->n_faults, err, sizeof(err));
    if (again == NULL) {
        fuzz_err_ok(err, sizeof(err));
        fprintf(stderr, "fuzz_config: the file's own rules were refused: %s\n", err);
        abort();
    }
    fuzz_check(again->n_faults == cfg->n_faults);
    fuzz_check(tf_config_base(again) == cfg);
    tf_config_unref(again);
    tf_config_unref(cfg);
}

static void
fuzz_spec(const uint8_t *data, size_t size)
{
    size_t n = size;
    const uint8_t *nul = memchr(data, '\0', size);
    char err[512];
    char *spec;
    struct tf_fault_rule *rule;

    if (nul != NULL)
        n = (size_t)(nul - data);
    if (n > 4096)
        n = 4096;
    spec = malloc(n + 1);
    fuzz_check(spec != NULL);
    memcpy(spec, data, n);
    spec[n] = '\0';
    memset(err, 'Z', sizeof(err));
    rule = tf_fault_rule_parse_spec(spec, "fuzz", err, sizeof(err));
    if (rule == NULL) {
        fuzz_err_ok(err, sizeof(err));
        fuzz_check(err[0] != '\0');
    } else {
        memset(err, 'Z', sizeof(err));
        /* parse_spec returns complete, checked rules. */
        fuzz_check(tf_fault_rule_check(rule, err, sizeof(err)));
        fuzz_rule_roundtrip(rule);
        tf_fault_rule_unref(rule);
    }
    free(spec);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool registered;

    if (!registered) {
        registered = true;
        atexit(fuzz_cleanup);
    }
    if (size > 65536)
        return 0;
    fuzz_file(data, size);
    fuzz_spec(data, size);
    return 0;
}
