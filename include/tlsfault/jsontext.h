/*
 * jsontext.h — a JSON value kept as its compact text while nobody reads it.
 *
 * A long-lived connection keeps lists only for the verdict at its end
 * (offered versions, the message log, certificate chains).  As jansson
 * objects they take kilobytes; as text, a few hundred bytes; and since
 * most connections of one client to one site log the very same lists,
 * equal texts are kept once, shared by every connection that holds them
 * (a reference count under one lock: a connection packs and releases
 * once each).  A pair of fields holds either the object or its text:
 * pack when the connection goes quiet, unpack when the verdict needs it.
 */
#ifndef TLSFAULT_JSONTEXT_H
#define TLSFAULT_JSONTEXT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/*
 * Replaces *v by its shared compact text (*text, given back with
 * tf_json_text_release) unless *text is set already; when memory is
 * short, *v stays as it is.  Thread-safe.
 */
void tf_json_pack(json_t **v, const char **text);

/*
 * A reference to the shared copy of the compact JSON text s[0..len) (for a
 * holder that writes its text itself), or NULL when memory is short.
 * Thread-safe; given back with tf_json_text_release.
 */
const char *tf_json_text_share(const char *s, size_t len);

/* Gives back a text from tf_json_pack or tf_json_text_share; NULL is fine. */
void tf_json_text_release(const char *text);

/*
 * The value as an object again: a new reference, or NULL when neither is
 * held.  From text it may be shared with earlier unpacks of the same text
 * on this thread (kept parsed, with a reference to the text, in a small
 * per-thread cache): read it, never change it.
 */
json_t *tf_json_unpack(json_t *v, const char *text);

/*
 * The JSON string of a name with static storage (a string literal, an
 * entry of names.c's tables; never a buffer or a configuration's string):
 * a new reference, shared with earlier calls for the same name on this
 * thread.  Read it, never change it.  NULL when memory is short.
 */
json_t *tf_json_name(const char *name);

/*
 * json_string() and json_stringn(), quicker for ASCII: jansson checks every
 * string for UTF-8 a byte at a time (some ten instructions a byte); text
 * that is all ASCII, as names, hex, addresses and tlsfault's own sentences
 * are, is seen to be in a word-wide scan and made without that check.
 * Anything else is checked as jansson does: NULL when it is not UTF-8.
 */
json_t *tf_json_string(const char *s);
json_t *tf_json_stringn(const char *s, size_t len);

/* Empties this thread's caches of unpacked texts, names and frozen values (a thread's end does it too). */
void tf_json_unpacked_drop(void);

/*
 * Appends v's compact JSON text (what json_dumps(v, JSON_COMPACT) gives,
 * byte for byte) to buf[*used..cap).  With members_only, an object's
 * members without its braces (to splice into another object).  False,
 * with *used where it was, when it does not fit or v is not JSON.
 * jansson's own dump hands out every token through a callback and
 * formats numbers with snprintf: three times slower for an event line.
 */
bool tf_json_write(const json_t *v, bool members_only, char *buf, size_t cap, size_t *used);

/*
 * Remembers the compact text of v (an array or an object) for this
 * thread's tf_json_write, which then copies it instead of rendering v
 * again.  Only for a value that no one changes any more: the decoders'
 * per-thread lists, which every connection of a client shares.  A new
 * reference to v is held until tf_json_thaw, until 64 later values have
 * pushed it out (two per set of a 32-set table keyed by address), or
 * until the thread ends.  Best effort: when memory is short, nothing is
 * remembered and v is rendered as any other value.
 */
void tf_json_freeze(json_t *v);

/* Forgets v's text on this thread and lets go of its reference (not frozen: nothing). */
void tf_json_thaw(json_t *v);

/* Values this thread has frozen now (for tests). */
size_t tf_json_frozen_held(void);

/* Distinct texts held now (for tests). */
size_t tf_json_texts_held(void);

#endif
