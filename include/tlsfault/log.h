/*
 * log.h — the daemon's own diagnostics (start-up, configuration, errors of
 * its own), on stderr, apart from the event stream.
 */
#ifndef TLSFAULT_LOG_H
#define TLSFAULT_LOG_H

enum tf_log_level {
    TF_LOG_ERROR = 0,
    TF_LOG_WARN,
    TF_LOG_INFO,
    TF_LOG_DEBUG,
};

void tf_log_set_level(enum tf_log_level level);
/* Parses "error", "warn", "info", "debug"; returns -1 when unknown. */
int tf_log_parse_level(const char *s);
void tf_log(enum tf_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define tf_log_error(...) tf_log(TF_LOG_ERROR, __VA_ARGS__)
#define tf_log_warn(...) tf_log(TF_LOG_WARN, __VA_ARGS__)
#define tf_log_info(...) tf_log(TF_LOG_INFO, __VA_ARGS__)
#define tf_log_debug(...) tf_log(TF_LOG_DEBUG, __VA_ARGS__)

/* Appends the whole OpenSSL error queue to buf ("; "-separated) and clears it. */
void tf_log_openssl_errors(char *buf, size_t len);

#endif
