/* The process-wide cache of compiled patterns and parsed defaults, keyed by the address
 * of their string (the static const tables never move), under one lock. Entries live as
 * long as the process. */
#include <stdlib.h>

#include "schema/schema_int.h"

typedef struct cache_ent {
    struct cache_ent *next;
    const char *key;
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

/* Finds or makes the entry for key; the lock is held by the caller. */
static cache_ent_t *cache_find(const char *key, bool is_regex)
{
    cache_ent_t *e;
    for (e = cache_head; e != NULL; e = e->next)
        if (e->key == key && e->is_regex == is_regex)
            return e;
    e = calloc(1, sizeof(*e));
    if (e == NULL)
        return NULL;
    e->key = key;
    e->is_regex = is_regex;
    if (is_regex) {
        e->ok = regcomp(&e->re, key, REG_EXTENDED | REG_NOSUB) == 0;
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
