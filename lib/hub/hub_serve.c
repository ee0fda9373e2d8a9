/* The hub's HTTP subscribers: polls and long polls (their answers, the held list by
 * deadline), event streams (WHATWG HTML §9.2: framing, heartbeats, a reader that stops),
 * and the route calls that hand a response to the hub. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <squall.h>

#include "hub/hub_loop.h"

static void free_body(void *ptr, void *data)
{
    free(ptr);
}

/* ---- polls ---- */

/* Answers a poll with msgs — the history's, then those kept meanwhile, each run in id
 * order: a message at or below the last one taken is skipped — and ends it. */
void sq__hub_poll_answer(sq_hub_sub_t *sub, sq_hub_msg_t *const *msgs, size_t n)
{
    sq_res_t *res = sub->u.res;
    sq_hub_t *hub = sub->hl->hub;
    uint64_t from = sub->last_id, cur = from;
    size_t k = 0, bytes = 2, one = 0;
    for (size_t i = 0; i < n; i++) {
        if (msgs[i]->id > cur) {
            bytes += msgs[i]->arr_len - 1; /* the object and a comma */
            cur = msgs[i]->id;
            one = i;
            k++;
        }
    }
    char num[24];
    if (sub->missed > 0) {
        snprintf(num, sizeof(num), "%" PRIu64, sub->missed);
        sq_res_header(res, "X-Hub-Missed", num);
    }
    if (sub->reset)
        sq_res_header(res, "X-Hub-Reset", "1");
    sq_req_set_data(sq_res_req(res), NULL);
    sq__hub_sub_end(sub); /* sub may be freed from here on */
    atomic_fetch_add(&hub->delivered, k);
    if (k == 1) {
        sq__hub_msg_ref(msgs[one]);
        sq_res_send_ref(res, 200, "application/json", msgs[one]->arr, msgs[one]->arr_len,
                        sq__hub_msg_free_cb, msgs[one]);
        return;
    }
    if (k == 0) {
        sq_res_send(res, 200, "application/json", "[]", 2);
        return;
    }
    char *body = malloc(bytes);
    if (body == NULL) {
        sq_res_send_error(res, 500, NULL);
        return;
    }
    char *p = body;
    *p++ = '[';
    cur = from;
    for (size_t i = 0; i < n; i++) {
        if (msgs[i]->id <= cur)
            continue;
        if (p > body + 1)
            *p++ = ',';
        memcpy(p, msgs[i]->arr + 1, msgs[i]->arr_len - 2);
        p += msgs[i]->arr_len - 2;
        cur = msgs[i]->id;
    }
    *p++ = ']';
    sq_res_send_ref(res, 200, "application/json", body, (size_t)(p - body), free_body, NULL);
}

/* ---- timers: held polls' deadlines, event streams' heartbeats ---- */

void sq__hub_timer_arm(sq__hub_loop_t *hl)
{
    if (hl->detached)
        return;
    uint64_t next = UINT64_MAX;
    if (hl->held_head != NULL)
        next = hl->held_head->deadline;
    if (hl->sse_head != NULL && hl->hub->opts.sse_heartbeat_ms > 0 && hl->next_beat < next)
        next = hl->next_beat;
    if (next == UINT64_MAX) {
        uv_timer_stop(&hl->timer);
        return;
    }
    uint64_t now = uv_now(hl->loop);
    uv_timer_start(&hl->timer, sq__hub_on_timer, next > now ? next - now : 0, 0);
}

void sq__hub_held_insert(sq_hub_sub_t *sub)
{
    sq__hub_loop_t *hl = sub->hl;
    sq_hub_sub_t *after = hl->held_tail;
    while (after != NULL && after->deadline > sub->deadline)
        after = after->tprev;
    sub->tprev = after;
    sub->tnext = after != NULL ? after->tnext : hl->held_head;
    if (sub->tnext != NULL)
        sub->tnext->tprev = sub;
    else
        hl->held_tail = sub;
    if (after != NULL)
        after->tnext = sub;
    else
        hl->held_head = sub;
    sub->flags |= SQ__SUBF_HELD;
    atomic_fetch_add(&hl->hub->held_polls, 1);
    if (hl->held_head == sub)
        sq__hub_timer_arm(hl);
}

void sq__hub_sse_cut(sq_hub_sub_t *sub)
{
    sq_res_t *res = sub->u.res;
    atomic_fetch_add(&sub->hl->hub->dropped_slow, 1);
    sq_req_set_data(sq_res_req(res), NULL);
    sq__hub_sub_end(sub);
    sq_res_end(res);
}

void sq__hub_on_timer(uv_timer_t *t)
{
    sq__hub_loop_t *hl = t->data;
    uint64_t now = uv_now(hl->loop);
    while (hl->held_head != NULL && hl->held_head->deadline <= now)
        sq__hub_poll_answer(hl->held_head, NULL, 0);
    uint64_t beat = hl->hub->opts.sse_heartbeat_ms;
    if (hl->sse_head != NULL && beat > 0 && hl->next_beat <= now) {
        static const char ping[] = ": keep-alive\n\n";
        size_t max = hl->hub->opts.sse_max_queued_bytes;
        for (sq_hub_sub_t *sub = hl->sse_head, *next; sub != NULL; sub = next) {
            next = sub->tnext;
            if (max > 0 && sq_res_queued_bytes(sub->u.res) > max)
                sq__hub_sse_cut(sub);
            else
                sq_res_write_ref(sub->u.res, ping, sizeof(ping) - 1, NULL, NULL, NULL, NULL);
        }
        hl->next_beat = now + beat;
    }
    sq__hub_timer_arm(hl);
}

void sq__hub_sse_send(sq_hub_sub_t *sub, sq_hub_msg_t *m)
{
    size_t max = sub->hl->hub->opts.sse_max_queued_bytes;
    if (max > 0 && sq_res_queued_bytes(sub->u.res) > max) {
        sq__hub_sse_cut(sub);
        return;
    }
    sub->last_id = m->id;
    sq__hub_msg_ref(m);
    if (sq_res_write_ref(sub->u.res, m->sse, m->sse_len, sq__hub_msg_free_cb, m, NULL, NULL) == 0)
        atomic_fetch_add(&sub->hl->hub->delivered, 1);
    /* else the client has gone: .aborted (sq_hub_aborted) ends it */
}

/* The answer to a request the hub could not take: 422 for a bad room, else 503/500. */
static int refuse(sq_res_t *res, int rc)
{
    if (rc == UV_EINVAL)
        sq_res_send_error(res, 422, "invalid room name");
    else if (rc == UV_ENOSPC)
        sq_res_send_error(res, 503, "too many rooms");
    else if (rc == UV_EAGAIN)
        sq_res_send_error(res, 503, "too many history reads out: try again");
    else
        sq_res_send_error(res, rc == UV_ENOMEM ? 500 : 503, sq_strerror(rc));
    return rc;
}

/* The common start of a poll and an event stream. */
static int serve_start(sq_hub_t *hub, sq_req_t *req, sq_res_t *res, const char *room,
                       uint64_t since, sq__sub_kind_t kind, sq_hub_sub_t **out)
{
    size_t len;
    int rc = hub == NULL ? UV_EINVAL : sq__hub_room_check(hub, room, &len);
    sq__hub_loop_t *hl = rc == 0 ? sq__hub_loop_find(hub, sq_req_loop(req)) : NULL;
    if (rc == 0 && hl == NULL)
        rc = SQ_ECLOSED;
    sq_hub_sub_t *sub = rc == 0 ? sq__hub_sub_new(hl, kind) : NULL;
    if (rc == 0 && sub == NULL)
        rc = UV_ENOMEM;
    if (rc == 0) {
        sub->u.res = res;
        if ((rc = sq__hub_sub_start(sub, room, len, since)) != 0)
            free(sub);
    }
    if (rc != 0)
        return refuse(res, rc);
    sq_req_set_data(req, sub);
    *out = sub;
    return 0;
}

int sq_hub_serve_poll(sq_hub_t *hub, sq_req_t *req, sq_res_t *res, const char *room, uint64_t since,
                      uint64_t wait_ms)
{
    if (hub != NULL && hub->opts.max_wait_ms > 0 && wait_ms > hub->opts.max_wait_ms)
        wait_ms = hub->opts.max_wait_ms;
    sq_hub_sub_t *sub;
    int rc =
        serve_start(hub, req, res, room, since == SQ_HUB_SINCE_NOW ? 0 : since, SQ__SUB_POLL, &sub);
    if (rc == 0)
        sub->deadline = uv_now(sq_req_loop(req)) + wait_ms;
    return rc;
}

int sq_hub_serve_events(sq_hub_t *hub, sq_req_t *req, sq_res_t *res, const char *room,
                        uint64_t since)
{
    sq_hub_sub_t *sub;
    int rc = serve_start(hub, req, res, room, since, SQ__SUB_SSE, &sub);
    if (rc != 0)
        return rc;
    sq_res_header(res, "Cache-Control", "no-cache");
    sq_res_header(res, "X-Accel-Buffering", "no"); /* a proxy must not hold events back */
    rc = sq_res_start(res, 200, "text/event-stream");
    if (rc != 0) {
        sq_req_set_data(req, NULL);
        sq__hub_sub_end(sub);
        sq_res_end(res);
        return rc;
    }
    sq__hub_loop_t *hl = sub->hl;
    sub->tnext = hl->sse_head;
    if (hl->sse_head != NULL)
        hl->sse_head->tprev = sub;
    hl->sse_head = sub;
    sub->flags |= SQ__SUBF_SSE;
    if (sub->tnext == NULL && hub->opts.sse_heartbeat_ms > 0) {
        hl->next_beat = uv_now(hl->loop) + hub->opts.sse_heartbeat_ms;
        sq__hub_timer_arm(hl);
    }
    return 0;
}

void sq_hub_aborted(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_hub_sub_t *sub = sq_req_data(req);
    if (sub == NULL)
        return;
    sq_req_set_data(req, NULL);
    sq__hub_sub_end(sub);
    sq_res_end(res); /* the client has gone: UV_ECANCELED, and res is released */
}
