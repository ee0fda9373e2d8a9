/* Content types by file extension: a built-in table of the types a web site serves most,
 * text types with their charset (RFC 9110 §8.3.1: a text type without one is read as
 * whatever the client guesses), and the caller's additions looked up first. */
#include <strings.h>

#include "static/static_int.h"

typedef struct {
    const char *ext;
    const char *type;
} mime_t;

/* Sorted by extension (bsearch). JavaScript is text/javascript (RFC 9239); JSON has no
 * charset parameter (RFC 8259 §11). */
static const mime_t builtin[] = {
    {"7z", "application/x-7z-compressed"},
    {"aac", "audio/aac"},
    {"apng", "image/apng"},
    {"avif", "image/avif"},
    {"bin", "application/octet-stream"},
    {"bmp", "image/bmp"},
    {"css", "text/css; charset=utf-8"},
    {"csv", "text/csv; charset=utf-8"},
    {"eot", "application/vnd.ms-fontobject"},
    {"epub", "application/epub+zip"},
    {"flac", "audio/flac"},
    {"gif", "image/gif"},
    {"gz", "application/gzip"},
    {"htm", "text/html; charset=utf-8"},
    {"html", "text/html; charset=utf-8"},
    {"ico", "image/vnd.microsoft.icon"},
    {"ics", "text/calendar; charset=utf-8"},
    {"jpeg", "image/jpeg"},
    {"jpg", "image/jpeg"},
    {"js", "text/javascript; charset=utf-8"},
    {"json", "application/json"},
    {"jsonld", "application/ld+json"},
    {"m4a", "audio/mp4"},
    {"map", "application/json"},
    {"md", "text/markdown; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"mp3", "audio/mpeg"},
    {"mp4", "video/mp4"},
    {"mpeg", "video/mpeg"},
    {"oga", "audio/ogg"},
    {"ogg", "audio/ogg"},
    {"ogv", "video/ogg"},
    {"opus", "audio/opus"},
    {"otf", "font/otf"},
    {"pdf", "application/pdf"},
    {"png", "image/png"},
    {"rss", "application/rss+xml"},
    {"svg", "image/svg+xml"},
    {"tar", "application/x-tar"},
    {"tif", "image/tiff"},
    {"tiff", "image/tiff"},
    {"ttf", "font/ttf"},
    {"txt", "text/plain; charset=utf-8"},
    {"wasm", "application/wasm"},
    {"wav", "audio/wav"},
    {"weba", "audio/webm"},
    {"webm", "video/webm"},
    {"webmanifest", "application/manifest+json"},
    {"webp", "image/webp"},
    {"woff", "font/woff"},
    {"woff2", "font/woff2"},
    {"xhtml", "application/xhtml+xml"},
    {"xml", "application/xml"},
    {"zip", "application/zip"},
};

static const char octet[] = "application/octet-stream";

/* The extension of the last segment of `name`, without its dot, or NULL: a name that
 * starts with its only dot (".profile") has none. */
static const char *extension(const char *name)
{
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    const char *dot = strrchr(base, '.');
    return dot != NULL && dot != base && dot[1] != '\0' ? dot + 1 : NULL;
}

static int cmp_mime(const void *key, const void *elem)
{
    return strcasecmp(key, ((const mime_t *)elem)->ext);
}

const char *sq_static_type(const char *name)
{
    const char *ext = name ? extension(name) : NULL;
    if (ext == NULL)
        return octet;
    const mime_t *m = bsearch(ext, builtin, SQ__ARRAY_SIZE(builtin), sizeof(builtin[0]),
                              cmp_mime);
    return m ? m->type : octet;
}

const char *sq__static_type(const sq__static_t *st, const char *name)
{
    const char *ext = extension(name);
    if (ext != NULL && st->types != NULL)
        for (size_t i = 0; st->types[i] != NULL; i += 2)
            if (strcasecmp(st->types[i], ext) == 0)
                return st->types[i + 1];
    return sq_static_type(name);
}
