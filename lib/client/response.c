/* A response of the HTTP client: the head as received and the (de-chunked) body. */
#include <stdlib.h>
#include <strings.h>

#include "client/client_int.h"

sq_response_t *sq__response_new(void)
{
    sq_response_t *r = calloc(1, sizeof(*r));
    if (r != NULL && sq__buf_append(&r->body, "", 1) != 0) {
        free(r);
        return NULL;
    }
    if (r != NULL)
        r->body.len = 0; /* the NUL stays past len */
    return r;
}

/* Appends a header line; the pointers are made by sq__response_seal. */
int sq__response_add(sq_response_t *r, const char *name, size_t nlen, const char *value,
                     size_t vlen)
{
    if (sq__buf_reserve(&r->raw, nlen + vlen + 2) != 0)
        return UV_ENOMEM;
    sq__buf_append_unsafe(&r->raw, name, nlen);
    sq__buf_append_unsafe(&r->raw, "", 1);
    sq__buf_append_unsafe(&r->raw, value, vlen);
    sq__buf_append_unsafe(&r->raw, "", 1);
    r->nheaders++;
    return 0;
}

/* Points the header array into raw, once every header is in. */
int sq__response_seal(sq_response_t *r)
{
    free(r->headers);
    r->headers = NULL;
    if (r->nheaders == 0)
        return 0;
    r->headers = calloc(r->nheaders, sizeof(*r->headers));
    if (r->headers == NULL)
        return UV_ENOMEM;
    const char *p = r->raw.base;
    for (size_t i = 0; i < r->nheaders; i++) {
        r->headers[i].name = p;
        p += strlen(p) + 1;
        r->headers[i].value = p;
        p += strlen(p) + 1;
    }
    return 0;
}

/* Forgets an interim (1xx) response's head. */
void sq__response_reset(sq_response_t *r)
{
    free(r->headers);
    r->headers = NULL;
    r->nheaders = 0;
    r->raw.len = 0;
    r->body.len = 0;
    r->status = 0;
}

int sq_response_status(const sq_response_t *res)
{
    return res != NULL ? res->status : 0;
}

int sq_response_version_minor(const sq_response_t *res)
{
    return res != NULL ? res->minor : 0;
}

const char *sq_response_header(const sq_response_t *res, const char *name)
{
    if (res == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < res->nheaders; i++)
        if (strcasecmp(res->headers[i].name, name) == 0)
            return res->headers[i].value;
    return NULL;
}

size_t sq_response_header_count(const sq_response_t *res)
{
    return res != NULL ? res->nheaders : 0;
}

int sq_response_header_at(const sq_response_t *res, size_t i, sq_header_t *out)
{
    if (res == NULL || out == NULL || i >= res->nheaders)
        return UV_EINVAL;
    *out = res->headers[i];
    return 0;
}

const char *sq_response_body(const sq_response_t *res, size_t *len)
{
    if (res == NULL || res->body.base == NULL) {
        if (len != NULL)
            *len = 0;
        return "";
    }
    if (len != NULL)
        *len = res->body.len;
    return res->body.base;
}

const char *sq_response_url(const sq_response_t *res)
{
    return res != NULL && res->url != NULL ? res->url : "";
}

void sq_response_free(sq_response_t *res)
{
    if (res == NULL)
        return;
    free(res->headers);
    sq__buf_free(&res->raw);
    sq__buf_free(&res->body);
    free(res->url);
    free(res);
}
