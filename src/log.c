/*
 * log.c — the daemon's own diagnostics on stderr, apart from the event
 * stream.  One line per message, prefixed with the level.
 */
#include <openssl/err.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "tlsfault/log.h"

static atomic_int log_level = TF_LOG_INFO;

void
tf_log_set_level(enum tf_log_level level)
{
    atomic_store(&log_level, (int)level);
}

int
tf_log_parse_level(const char *s)
{
    static const char *const names[] = { "error", "warn", "info", "debug" };
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

void
tf_log(enum tf_log_level level, const char *fmt, ...)
{
    static const char *const prefix[] = { "error", "warning", "info", "debug" };
    char line[1024];
    va_list ap;

    if ((int)level > atomic_load(&log_level))
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "tlsfault: %s: %s\n", prefix[level], line);
}

void
tf_log_openssl_errors(char *buf, size_t len)
{
    size_t used = strlen(buf);
    unsigned long e;
    while ((e = ERR_get_error()) != 0) {
        char one[256];
        ERR_error_string_n(e, one, sizeof(one));
        int n = snprintf(buf + used, len - used, "%s%s", used ? "; " : "", one);
        if (n < 0 || (size_t)n >= len - used)
            break;
        used += (size_t)n;
    }
}
