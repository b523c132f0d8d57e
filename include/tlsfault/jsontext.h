/*
 * jsontext.h — a JSON value kept as its compact text while nobody reads it.
 *
 * A long-lived connection keeps lists only for the verdict at its end
 * (offered versions, the message log, certificate chains).  As jansson
 * objects they take kilobytes; as text, a few hundred bytes.  A pair of
 * fields holds either the object or its text: pack when the connection
 * goes quiet, unpack when the verdict needs it.
 */
#ifndef TLSFAULT_JSONTEXT_H
#define TLSFAULT_JSONTEXT_H

#include <jansson.h>
#include <stddef.h>

/*
 * Replaces *v by its compact text (*text, to be freed) unless *text is
 * set already; when memory is short, *v stays as it is.
 */
static inline void
tf_json_pack(json_t **v, char **text)
{
    if (*v == NULL || *text != NULL)
        return;
    *text = json_dumps(*v, JSON_COMPACT);
    if (*text != NULL) {
        json_decref(*v);
        *v = NULL;
    }
}

/* The value as an object again: a new reference, or NULL when neither is held. */
static inline json_t *
tf_json_unpack(json_t *v, const char *text)
{
    if (v != NULL)
        return json_incref(v);
    return text != NULL ? json_loads(text, 0, NULL) : NULL;
}

#endif
