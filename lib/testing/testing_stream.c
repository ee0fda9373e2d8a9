/* Responses read as they come (FastAPI TestClient's stream()): an event stream, a long
 * poll, a chunked download. The stream has a memory connection of its own; its head is
 * given once it has arrived, its body piece by piece. */
#include <stdlib.h>
#include <string.h>

#include "testing/testing_int.h"

struct sq_test_stream_s {
    sq_test_t *t;
    sq__tconn_t *c;
    sq__tparse_t rp;
    size_t taken; /* body bytes given to the caller */
    sq_test_stream_t *next;
};

static void unlink_stream(sq_test_stream_t *s)
{
    for (sq_test_stream_t **pp = &s->t->streams; *pp != NULL; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            return;
        }
}

static void stream_free(sq_test_stream_t *s, bool reset)
{
    unlink_stream(s);
    if (reset)
        sq__test_conn_reset(s->t, s->c); /* as a client that gives up: .aborted */
    else
        sq__test_conn_release(s->t, s->c, true);
    sq__test_parse_free(&s->rp);
    free(s);
}

/* Runs the loop until `ready` holds, the deadline passes, or nothing can come. */
static int wait_for(sq_test_stream_t *s, uint64_t timeout_ms, bool (*ready)(sq_test_stream_t *))
{
    sq_test_t *t = s->t;
    int rc = 0;
    t->waiting = true;
    sq__test_deadline(t, timeout_ms);
    for (;;) {
        bool eof = s->c->sink.closed || s->c->sink.write_shut;
        rc = sq__test_parse_pump(&s->rp, s->c, eof);
        if (rc < 0)
            break;
        rc = 0;
        if (ready(s))
            break;
        if (t->timed_out || !sq__test_turn(t)) {
            rc = UV_ETIMEDOUT;
            break;
        }
    }
    sq__test_deadline(t, 0);
    t->waiting = false;
    return rc;
}

static bool head_ready(sq_test_stream_t *s)
{
    return s->rp.headers_done || s->rp.done;
}

static bool more_ready(sq_test_stream_t *s)
{
    return s->rp.res->body.len > s->taken || s->rp.done;
}

int sq_test_stream_open(sq_test_t *t, const char *method, const char *target,
                        const char *const *headers, const char *body, uint64_t timeout_ms,
                        sq_test_stream_t **sp, const sq_test_res_t **head)
{
    if (sp != NULL)
        *sp = NULL;
    if (t == NULL || method == NULL || target == NULL || sp == NULL)
        return UV_EINVAL;
    if (t->destroying)
        return SQ_ECLOSED;
    if (t->waiting)
        return SQ_EBUSY;
    sq__buf_t req = {0};
    int rc = sq__test_build_request(&req, method, target, headers, body, body ? strlen(body) : 0);
    if (rc != 0) {
        sq__buf_free(&req);
        return rc;
    }
    sq_test_stream_t *s = calloc(1, sizeof(*s));
    if (s == NULL || sq__test_parse_init(&s->rp, strcmp(method, "HEAD") == 0) != 0 ||
        (s->c = sq__test_conn_open(t)) == NULL) {
        if (s != NULL && s->rp.res != NULL)
            sq__test_parse_free(&s->rp);
        free(s);
        sq__buf_free(&req);
        return UV_ENOMEM;
    }
    s->t = t;
    s->next = t->streams;
    t->streams = s;
    sq__test_feed(t, s->c, req.base, req.len);
    sq__buf_free(&req);
    rc = wait_for(s, timeout_ms ? timeout_ms : SQ_TEST_DEFAULT_TIMEOUT_MS, head_ready);
    if (rc != 0) {
        stream_free(s, true);
        return rc;
    }
    sq__test_res_seal(s->rp.res);
    if (head != NULL)
        *head = &s->rp.res->pub;
    *sp = s;
    return 0;
}

int sq_test_stream_read(sq_test_stream_t *s, uint64_t timeout_ms, const char **data, size_t *len)
{
    if (s == NULL || data == NULL || len == NULL)
        return UV_EINVAL;
    if (s->t->waiting)
        return SQ_EBUSY;
    *data = NULL;
    *len = 0;
    int rc = wait_for(s, timeout_ms ? timeout_ms : SQ_TEST_DEFAULT_TIMEOUT_MS, more_ready);
    sq__tres_t *r = s->rp.res;
    if (r->body.len > s->taken) { /* what came, even when the deadline passed after it */
        sq__test_res_seal(r);
        *data = r->body.base + s->taken;
        *len = r->body.len - s->taken;
        s->taken = r->body.len;
        return 0;
    }
    if (rc != 0)
        return rc;
    return UV_EOF;
}

void sq_test_stream_close(sq_test_stream_t *s)
{
    if (s != NULL)
        stream_free(s, !s->rp.done);
}

void sq__test_streams_free_all(sq_test_t *t)
{
    while (t->streams != NULL)
        stream_free(t->streams, true);
}
