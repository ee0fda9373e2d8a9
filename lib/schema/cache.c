/* The process-wide cache of compiled patterns and parsed defaults, keyed by the address
 * of their string and its text (the static const tables never move; a string rewritten
 * in place, or another at a reused address, gets an entry of its own), under one lock.
 * Entries live as long as the process. */
#include <stdlib.h>
#include <string.h>

#include "schema/schema_int.h"

typedef struct cache_ent {
    struct cache_ent *next;
    const char *key;
    char *text; /* a copy of *key when the entry was made */
    bool is_regex;
    bool ok;
    regex_t re;
    json_t *json;
} cache_ent_t;

static uv_once_t cache_once = UV_ONCE_INIT;
static uv_mutex_t cache_lock;
static cache_ent_t *cache_head;

static void cache_init(void)
{
    if (uv_mutex_init(&cache_lock) != 0)
        abort();
}

/* At exit the entries go (a leak checker then finds nothing left): no thread may still be
 * validating, as none may still run when the process exits. */
__attribute__((destructor)) static void cache_free(void)
{
    while (cache_head != NULL) {
        cache_ent_t *e = cache_head;
        cache_head = e->next;
        if (e->is_regex && e->ok)
            regfree(&e->re);
        json_decref(e->json);
        free(e->text);
        free(e);
    }
}

/* Finds or makes the entry for key; the lock is held by the caller. */
static cache_ent_t *cache_find(const char *key, bool is_regex)
{
    cache_ent_t *e;
    for (e = cache_head; e != NULL; e = e->next)
        if (e->key == key && e->is_regex == is_regex && strcmp(e->text, key) == 0)
            return e;
    e = calloc(1, sizeof(*e));
    if (e == NULL || (e->text = strdup(key)) == NULL) {
        free(e);
        return NULL;
    }
    e->key = key;
    e->is_regex = is_regex;
    if (is_regex) {
        char *ere = sq__pattern_to_ere(key);
        e->ok = ere != NULL && regcomp(&e->re, ere, REG_EXTENDED | REG_NOSUB) == 0;
        free(ere);
    } else {
        e->json = json_loads(key, JSON_DECODE_ANY, NULL);
        if (e->json == NULL)
            e->json = json_null();
        e->ok = true;
    }
    e->next = cache_head;
    cache_head = e;
    return e;
}

const json_t *sq__schema_default(const sq_field_t *f)
{
    if (f->default_json == NULL)
        return NULL;
    uv_once(&cache_once, cache_init);
    uv_mutex_lock(&cache_lock);
    cache_ent_t *e = cache_find(f->default_json, false);
    uv_mutex_unlock(&cache_lock);
    return e != NULL ? e->json : json_null();
}

const regex_t *sq__schema_regex(const char *pattern)
{
    uv_once(&cache_once, cache_init);
    uv_mutex_lock(&cache_lock);
    cache_ent_t *e = cache_find(pattern, true);
    uv_mutex_unlock(&cache_lock);
    return e != NULL && e->ok ? &e->re : NULL;
}

/* What pydantic (Python's re) and an OpenAPI reader (ECMA-262) take, written for POSIX
 * ERE: the escapes \d \D \w \W \s \S become bracket expressions, an escaped character
 * stands for itself (inside brackets too, where POSIX reads '\' literally). What ERE
 * cannot say — \b, \B, back-references, (?...) groups, lazy quantifiers — gives NULL:
 * the pattern is refused rather than read differently. */
char *sq__pattern_to_ere(const char *p)
{
    size_t n = strlen(p);
    char *out = malloc(n * 16 + 1), *o = out;
    bool in_bracket = false;
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\\') {
            char e = p[++i];
            const char *cls = NULL, *neg = NULL;
            switch (e) {
            case 'd': cls = "0-9"; break;
            case 'D': neg = "0-9"; break;
            case 'w': cls = "A-Za-z0-9_"; break;
            case 'W': neg = "A-Za-z0-9_"; break;
            case 's': cls = " \t\n\r\f\v"; break;
            case 'S': neg = " \t\n\r\f\v"; break;
            case 'n': cls = "\n"; break;
            case 't': cls = "\t"; break;
            case '\0':
                goto refuse;
            default:
                if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z') || (e >= '0' && e <= '9'))
                    goto refuse; /* \b, \B, \1, \p{...}, ...: no ERE for them */
                break;
            }
            if (in_bracket) {
                if (neg != NULL)
                    goto refuse; /* [^...] inside [...] has no ERE form */
                if (cls != NULL) {
                    o += sprintf(o, "%s", cls);
                } else if (e == ']' || e == '^' || e == '-') {
                    goto refuse; /* their place in a bracket decides: not guessed */
                } else {
                    *o++ = e;
                }
            } else if (cls != NULL) {
                o += sprintf(o, "[%s]", cls);
            } else if (neg != NULL) {
                o += sprintf(o, "[^%s]", neg);
            } else if (strchr(".[]()*+?{}|^$\\", e) != NULL) {
                *o++ = '\\'; /* \. \* \( ...: ERE reads these as the character too */
                *o++ = e;
            } else {
                *o++ = e; /* \- \/ \": the character itself */
            }
            continue;
        }
        if (!in_bracket && c == '(' && p[i + 1] == '?')
            goto refuse;
        if (!in_bracket && (c == '*' || c == '+' || c == '?' || c == '}') && p[i + 1] == '?')
            goto refuse; /* lazy quantifiers */
        if (in_bracket && c == '[' && p[i + 1] == ':')
            goto refuse; /* [[:digit:]]: POSIX only, an OpenAPI reader cannot read it */
        if (!in_bracket && c == '[') {
            in_bracket = true;
            *o++ = c;
            if (p[i + 1] == '^')
                *o++ = p[++i];
            if (p[i + 1] == ']')
                *o++ = p[++i]; /* a leading ']' is a member */
            continue;
        }
        if (in_bracket && c == ']')
            in_bracket = false;
        *o++ = c;
    }
    if (in_bracket)
        goto refuse;
    *o = '\0';
    return out;
refuse:
    free(out);
    return NULL;
}
