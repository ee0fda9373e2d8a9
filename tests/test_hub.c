/* The hub in memory, through its own subscribers: ids, the JSON each message becomes,
 * history and live delivered once and in order, the history's bounds and what a
 * subscriber that fell behind is told, several loops in several threads, lifetimes. The
 * HTTP and WebSocket subscribers are tested through the chat server (test_chat.c). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include <squall.h>

#define MAXGOT 4096

typedef struct got {
    uint64_t ids[MAXGOT];
    char *texts[MAXGOT];
    size_t n;
    int live;          /* "live" notices */
    size_t live_at;    /* messages before the notice */
    uint64_t missed;   /* as told */
    int status;        /* the last negative status */
    int ends;
    sq_hub_sub_t *sub;
    sq_hub_sub_t *other; /* unsubscribed from inside the callback, with itself */
} got_t;

static void on_msg(sq_hub_sub_t *sub, int status, const sq_hub_msg_t *msg, uint64_t missed,
                   void *data)
{
    got_t *g = data;
    if (status < 0) {
        g->status = status;
        g->ends++;
        return;
    }
    g->missed += missed;
    if (msg == NULL) {
        g->live++;
        g->live_at = g->n;
        return;
    }
    if (g->n < MAXGOT) {
        size_t len;
        const char *t = sq_hub_msg_text(msg, &len);
        g->ids[g->n] = sq_hub_msg_id(msg);
        g->texts[g->n] = malloc(len + 1);
        memcpy(g->texts[g->n], t, len + 1);
        g->n++;
    }
    if (g->other != NULL) {
        sq_hub_unsubscribe(g->other);
        sq_hub_unsubscribe(sub);
        g->other = NULL;
    }
}

static void got_free(got_t *g)
{
    for (size_t i = 0; i < g->n; i++)
        free(g->texts[i]);
    g->n = 0;
}

typedef struct pub {
    int calls;
    int status;
    uint64_t id;
} pub_t;

static void on_published(sq_hub_t *hub, int status, uint64_t id, void *data)
{
    pub_t *p = data;
    p->calls++;
    p->status = status;
    p->id = id;
}

static void stop_timer(uv_timer_t *t)
{
    uv_stop(t->loop);
}

/* Runs the loop until *n reaches want or ms pass. */
static void run_until(uv_loop_t *loop, const size_t *n, size_t want, int ms)
{
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, stop_timer, (uint64_t)ms, 0);
    uint64_t end = uv_now(loop) + (uint64_t)ms;
    while (*n < want && uv_now(loop) < end) {
        uv_run(loop, UV_RUN_ONCE);
        uv_update_time(loop);
    }
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

/* A few turns of the loop, for what is already queued. */
static void spin(uv_loop_t *loop)
{
    size_t never = 0;
    run_until(loop, &never, 1, 50);
}

static void publish_ok(sq_hub_t *hub, uv_loop_t *loop, const char *room, const char *text,
                       size_t len)
{
    cr_assert_eq(sq_hub_publish(hub, loop, room, text, len, NULL, NULL), 0);
}

static void loop_end(sq_hub_t *hub, uv_loop_t *loop)
{
    sq_hub_detach(hub, loop);
    uv_run(loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(loop), 0, "a handle was left on the loop");
}

Test(hub, each_message_is_one_json_object_with_an_integer_id, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_hub_t *hub;
    cr_assert_eq(sq_hub_create(&hub, NULL), 0);
    cr_assert_eq(sq_hub_attach(hub, &loop), 0);
    char big[5000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char)('a' + i % 26);
    const struct {
        const char *s;
        size_t len;
    } texts[] = {
#define T(s) {s, sizeof(s) - 1}
        T("hello"),
        T("quote \" backslash \\ slash /"),
        T("new\nline\r\ttab\b\f"),
        T("\x01\x1f control \x7f"),
        T("nul \0 inside"),
        T("\xf0\x9f\x98\x80 astral, \xe2\x80\xa8 U+2028"),
        T(""),
#undef T
        {big, sizeof(big)},
    };
    size_t n = sizeof(texts) / sizeof(texts[0]);
    pub_t pubs[8] = {0};
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(sq_hub_publish(hub, &loop, "r\xc3\xa9 \"q\"", texts[i].s, texts[i].len,
                                    on_published, &pubs[i]),
                     0);
    cr_assert_eq(pubs[0].calls, 0, "the callback ran inside sq_hub_publish");
    got_t g = {0};
    cr_assert_eq(sq_hub_subscribe(hub, &loop, "r\xc3\xa9 \"q\"", 0, on_msg, &g, &g.sub), 0);
    run_until(&loop, &g.n, n, 2000);
    cr_assert_eq(g.n, n);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(pubs[i].calls, 1);
        cr_assert_eq(pubs[i].status, 0);
        cr_assert_eq(pubs[i].id, i + 1, "ids go up by one from 1");
        cr_assert_eq(g.ids[i], i + 1);
        cr_assert_eq(memcmp(g.texts[i], texts[i].s, texts[i].len), 0);
    }
    sq_hub_unsubscribe(g.sub);
    got_free(&g);
    loop_end(hub, &loop);
    sq_hub_destroy(hub);
}

/* The JSON itself, read back by a JSON parser. */
typedef struct jgot {
    json_t *objs[16];
    char *raw[16];
    size_t n;
} jgot_t;

static void on_json(sq_hub_sub_t *sub, int status, const sq_hub_msg_t *msg, uint64_t missed,
                    void *data)
{
    jgot_t *g = data;
    if (msg == NULL || g->n >= 16)
        return;
    size_t len;
    const char *j = sq_hub_msg_json(msg, &len);
    json_error_t err;
    g->objs[g->n] = json_loadb(j, len, JSON_ALLOW_NUL, &err);
    g->raw[g->n] = strndup(j, len);
    g->n++;
}

Test(hub, the_json_reads_back_as_what_was_published, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_hub_t *hub;
    cr_assert_eq(sq_hub_create(&hub, NULL), 0);
    cr_assert_eq(sq_hub_attach(hub, &loop), 0);
    static const char text[] = "a\"b\\c\nd\x01\0e \xf0\x9f\x98\x80";
    jgot_t g = {0};
    cr_assert_eq(sq_hub_subscribe(hub, &loop, "lobby", 0, on_json, &g, NULL), 0);
    publish_ok(hub, &loop, "lobby", text, sizeof(text) - 1);
    publish_ok(hub, &loop, "lobby", "two", 3);
    run_until(&loop, &g.n, 2, 2000);
    cr_assert_eq(g.n, 2);
    cr_assert_not_null(g.objs[0], "not JSON: %s", g.raw[0]);
    cr_assert_str_eq(g.raw[1], "{\"id\":2,\"room\":\"lobby\",\"text\":\"two\"}");
    json_t *id = json_object_get(g.objs[0], "id");
    cr_assert(json_is_integer(id));
    cr_assert_eq(json_integer_value(id), 1);
    cr_assert_str_eq(json_string_value(json_object_get(g.objs[0], "room")), "lobby");
    json_t *t = json_object_get(g.objs[0], "text");
    cr_assert_eq(json_string_length(t), sizeof(text) - 1);
    cr_assert_eq(memcmp(json_string_value(t), text, sizeof(text) - 1), 0);
    for (size_t i = 0; i < g.n; i++) {
        json_decref(g.objs[i]);
        free(g.raw[i]);
    }
    loop_end(hub, &loop);
    sq_hub_destroy(hub);
}

Test(hub, history_then_live_each_once_and_in_order, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_hub_t *hub;
    cr_assert_eq(sq_hub_create(&hub, NULL), 0);
    cr_assert_eq(sq_hub_attach(hub, &loop), 0);
    publish_ok(hub, &loop, "r", "1", 1);
    publish_ok(hub, &loop, "r", "2", 1);
    publish_ok(hub, &loop, "r", "3", 1);
    got_t g = {0};
    cr_assert_eq(sq_hub_subscribe(hub, &loop, "r", 1, on_msg, &g, &g.sub), 0);
    /* published before the history reached the subscriber: live and history overlap */
    publish_ok(hub, &loop, "r", "4", 1);
    publish_ok(hub, &loop, "r", "5", 1);
    cr_assert_eq(g.n, 0, "delivered inside the call");
    run_until(&loop, &g.n, 4, 2000);
    spin(&loop);
    cr_assert_eq(g.n, 4);
    for (size_t i = 0; i < 4; i++)
        cr_assert_eq(g.ids[i], i + 2);
    cr_assert_eq(g.live, 1);
    publish_ok(hub, &loop, "r", "6", 1);
    run_until(&loop, &g.n, 5, 2000);
    cr_assert_eq(g.n, 5);
    cr_assert_eq(g.ids[4], 6);
    cr_assert_str_eq(g.texts[4], "6");
    cr_assert_eq(g.missed, 0);
    sq_hub_unsubscribe(g.sub);
    publish_ok(hub, &loop, "r", "7", 1);
    spin(&loop);
    cr_assert_eq(g.n, 5, "a message after sq_hub_unsubscribe");
    got_free(&g);
    loop_end(hub, &loop);
    sq_hub_destroy(hub);
}

Test(hub, since_now_gets_only_what_comes_next, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_hub_t *hub;
    cr_assert_eq(sq_hub_create(&hub, NULL), 0);
    cr_assert_eq(sq_hub_attach(hub, &loop), 0);
    publish_ok(hub, &loop, "r", "old", 3);
    got_t g = {0};
    cr_assert_eq(sq_hub_subscribe(hub, &loop, "r", SQ_HUB_SINCE_NOW, on_msg, &g, NULL), 0);
    publish_ok(hub, &loop, "r", "new", 3);
    run_until(&loop, &g.n, 1, 2000);
    spin(&loop);
    cr_assert_eq(g.n, 1);
    cr_assert_eq(g.ids[0], 2);
    got_free(&g);
    loop_end(hub, &loop);
    sq_hub_destroy(hub);
}

Test(hub, the_history_is_bounded_and_one_behind_is_told_what_it_missed, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_hub_opts_t o;
    sq_hub_opts_init(&o);
    o.history_count = 5;
    sq_hub_t *hub;
    cr_assert_eq(sq_hub_create(&hub, &o), 0);
    cr_assert_eq(sq_hub_attach(hub, &loop), 0);
    for (int i = 1; i <= 12; i++)
        publish_ok(hub, &loop, "r", "m", 1);
    got_t g = {0};
    cr_assert_eq(sq_hub_subscribe(hub, &loop, "r", 2, on_msg, &g, NULL), 0);
    run_until(&loop, &g.n, 5, 2000);
    spin(&loop);
    cr_assert_eq(g.n, 5, "the history keeps 5");
    cr_assert_eq(g.ids[0], 8);
    cr_assert_eq(g.missed, 5, "3..7 are gone");
    got_t whole = {0};
    cr_assert_eq(sq_hub_subscribe(hub, &loop, "r", 0, on_msg, &whole, NULL), 0);
    run_until(&loop, &whole.n, 5, 2000);
    cr_assert_eq(whole.n, 5);
    cr_assert_eq(whole.missed, 0, "since 0 asks for what there is: nothing is missed");
    got_free(&g);
    got_free(&whole);
    loop_end(hub, &loop);
    sq_hub_destroy(hub);

    /* by bytes: each message here is over 100 bytes, 400 bytes keep at most 3 */
    uv_loop_init(&loop);
    sq_hub_opts_init(&o);
    o.history_bytes = 400;
    cr_assert_eq(sq_hub_create(&hub, &o), 0);
    cr_assert_eq(sq_hub_attach(hub, &loop), 0);
    char text[60];
    memset(text, 'x', sizeof(text));
    for (int i = 1; i <= 10; i++)
        publish_ok(hub, &loop, "r", text, sizeof(text));
    got_t b = {0};
    cr_assert_eq(sq_hub_subscribe(hub, &loop, "r", 0, on_msg, &b, NULL), 0);
    run_until(&loop, &b.n, 10, 300);
    cr_assert(b.n >= 1 && b.n <= 3, "kept %zu", b.n);
    cr_assert_eq(b.ids[b.n - 1], 10, "the newest is kept");
    /* a message bigger than the bound alone is still kept */
    char huge[1000];
    memset(huge, 'y', sizeof(huge));
    publish_ok(hub, &loop, "r", huge, sizeof(huge));
    got_t h = {0};
    cr_assert_eq(sq_hub_subscribe(hub, &loop, "r", 10, on_msg, &h, NULL), 0);
    run_until(&loop, &h.n, 1, 2000);
    cr_assert_eq(h.n, 1);
    cr_assert_eq(h.ids[0], 11);
    got_free(&b);
    got_free(&h);
    loop_end(hub, &loop);
    sq_hub_destroy(hub);
}

Test(hub, since_past_the_end_starts_again_from_the_first, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_hub_t *hub;
    cr_assert_eq(sq_hub_create(&hub, NULL), 0);
    cr_assert_eq(sq_hub_attach(hub, &loop), 0);
    publish_ok(hub, &loop, "r", "a", 1);
    publish_ok(hub, &loop, "r", "b", 1);
    got_t g = {0};
    cr_assert_eq(sq_hub_subscribe(hub, &loop, "r", 40, on_msg, &g, NULL), 0);
    run_until(&loop, &g.n, 2, 2000);
    cr_assert_eq(g.n, 2);
    cr_assert_eq(g.ids[0], 1);
    got_free(&g);
    loop_end(hub, &loop);
    sq_hub_destroy(hub);
}

Test(hub, bad_input_is_refused_and_nothing_is_published, .timeout = 10)
{
    uv_loop_t loop, other;
    uv_loop_init(&loop);
    uv_loop_init(&other);
    sq_hub_opts_t o;
    sq_hub_opts_init(&o);
    o.max_text_bytes = 10;
    o.max_room_bytes = 8;
    o.max_rooms = 2;
    sq_hub_t *hub;
    cr_assert_eq(sq_hub_create(NULL, &o), UV_EINVAL);
    sq_hub_opts_t zero = {0};
    cr_assert_eq(sq_hub_create(&hub, &zero), UV_EINVAL);
    cr_assert_eq(sq_hub_create(&hub, &o), 0);
    cr_assert_eq(sq_hub_attach(hub, &loop), 0);
    cr_assert_eq(sq_hub_attach(hub, &loop), UV_EEXIST);
    pub_t p = {0};
    cr_assert_eq(sq_hub_publish(hub, &loop, "", "x", 1, on_published, &p), UV_EINVAL);
    cr_assert_eq(sq_hub_publish(hub, &loop, NULL, "x", 1, on_published, &p), UV_EINVAL);
    cr_assert_eq(sq_hub_publish(hub, &loop, "123456789", "x", 1, on_published, &p), UV_EINVAL);
    cr_assert_eq(sq_hub_publish(hub, &loop, "r\xff", "x", 1, on_published, &p), UV_EINVAL);
    cr_assert_eq(sq_hub_publish(hub, &loop, "r", "\xc0\xaf", 2, on_published, &p), UV_EINVAL,
                 "an overlong form");
    cr_assert_eq(sq_hub_publish(hub, &loop, "r", "\xed\xa0\x80", 3, on_published, &p),
                 UV_EINVAL, "a surrogate");
    cr_assert_eq(sq_hub_publish(hub, &loop, "r", "12345678901", 11, on_published, &p),
                 UV_EMSGSIZE);
    cr_assert_eq(sq_hub_publish(hub, &other, "r", "x", 1, on_published, &p), SQ_ECLOSED);
    got_t g = {0};
    cr_assert_eq(sq_hub_subscribe(hub, &other, "r", 0, on_msg, &g, NULL), SQ_ECLOSED);
    publish_ok(hub, &loop, "a", "x", 1);
    publish_ok(hub, &loop, "b", "x", 1);
    cr_assert_eq(sq_hub_publish(hub, &loop, "c", "x", 1, on_published, &p), UV_ENOSPC);
    cr_assert_eq(sq_hub_subscribe(hub, &loop, "c", 0, on_msg, &g, NULL), UV_ENOSPC);
    spin(&loop);
    cr_assert_eq(p.calls, 0, "a refused publish was told");
    cr_assert_eq(sq_hub_subscribe(hub, &loop, "r", 0, on_msg, &g, NULL), UV_ENOSPC);
    sq_hub_stats_t st;
    sq_hub_stats(hub, &st);
    cr_assert_eq(st.published, 2);
    cr_assert_eq(st.rooms, 2);
    cr_assert_eq(sq_hub_since("", &st.rooms), 0);
    uint64_t since = 1;
    cr_assert_eq(sq_hub_since(NULL, &since), 0);
    cr_assert_eq(since, 0);
    cr_assert_eq(sq_hub_since("42", &since), 0);
    cr_assert_eq(since, 42);
    cr_assert_eq(sq_hub_since("9223372036854775807", &since), 0);
    cr_assert_eq(sq_hub_since("9223372036854775808", &since), UV_EINVAL);
    cr_assert_eq(sq_hub_since("-1", &since), UV_EINVAL);
    cr_assert_eq(sq_hub_since(" 1", &since), UV_EINVAL);
    cr_assert_eq(sq_hub_since("1x", &since), UV_EINVAL);
    loop_end(hub, &loop);
    cr_assert_eq(uv_loop_close(&other), 0);
    sq_hub_destroy(hub);
}

Test(hub, unsubscribing_from_inside_a_delivery_is_safe, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_hub_t *hub;
    cr_assert_eq(sq_hub_create(&hub, NULL), 0);
    cr_assert_eq(sq_hub_attach(hub, &loop), 0);
    got_t a = {0}, b = {0}, c = {0};
    cr_assert_eq(sq_hub_subscribe(hub, &loop, "r", 0, on_msg, &a, &a.sub), 0);
    cr_assert_eq(sq_hub_subscribe(hub, &loop, "r", 0, on_msg, &b, &b.sub), 0);
    cr_assert_eq(sq_hub_subscribe(hub, &loop, "r", 0, on_msg, &c, &c.sub), 0);
    spin(&loop);
    a.other = b.sub; /* a's first message ends b and a itself */
    publish_ok(hub, &loop, "r", "x", 1);
    publish_ok(hub, &loop, "r", "y", 1);
    run_until(&loop, &c.n, 2, 2000);
    cr_assert_eq(c.n, 2);
    cr_assert_eq(a.n, 1);
    cr_assert_eq(b.n, 0);
    sq_hub_stats_t st;
    sq_hub_stats(hub, &st);
    cr_assert_eq(st.subscribers, 1);
    got_free(&a);
    got_free(&c);
    loop_end(hub, &loop);
    sq_hub_destroy(hub);
}

Test(hub, detaching_ends_every_subscriber_with_eclosed, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_hub_t *hub;
    cr_assert_eq(sq_hub_create(&hub, NULL), 0);
    cr_assert_eq(sq_hub_attach(hub, &loop), 0);
    got_t a = {0}, b = {0};
    cr_assert_eq(sq_hub_subscribe(hub, &loop, "r", 0, on_msg, &a, NULL), 0);
    spin(&loop);
    /* b's history is still out when the loop goes */
    cr_assert_eq(sq_hub_subscribe(hub, &loop, "s", 0, on_msg, &b, NULL), 0);
    pub_t p = {0};
    cr_assert_eq(sq_hub_publish(hub, &loop, "r", "x", 1, on_published, &p), 0);
    sq_hub_detach(hub, &loop);
    cr_assert_eq(p.calls, 1, "a publish answered before the detach is told");
    cr_assert_eq(a.n, 0, "a message delivered after sq_hub_detach was called");
    cr_assert_eq(a.ends, 1);
    cr_assert_eq(a.status, SQ_ECLOSED);
    cr_assert_eq(b.ends, 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
    sq_hub_stats_t st;
    sq_hub_stats(hub, &st);
    cr_assert_eq(st.subscribers, 0);
    got_free(&a);
    sq_hub_destroy(hub);
}

Test(hub, an_idle_room_with_nobody_is_freed, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_hub_opts_t o;
    sq_hub_opts_init(&o);
    o.room_idle_ms = 40;
    sq_hub_t *hub;
    cr_assert_eq(sq_hub_create(&hub, &o), 0);
    cr_assert_eq(sq_hub_attach(hub, &loop), 0);
    got_t g = {0};
    publish_ok(hub, &loop, "empty", "x", 1);
    cr_assert_eq(sq_hub_subscribe(hub, &loop, "watched", 0, on_msg, &g, NULL), 0);
    spin(&loop);
    uv_sleep(60);
    publish_ok(hub, &loop, "new", "x", 1); /* making a room sweeps the idle ones */
    spin(&loop);
    sq_hub_stats_t st;
    sq_hub_stats(hub, &st);
    cr_assert_eq(st.rooms, 2, "watched and new stay; empty went");
    got_t again = {0};
    cr_assert_eq(sq_hub_subscribe(hub, &loop, "empty", 0, on_msg, &again, NULL), 0);
    spin(&loop);
    cr_assert_eq(again.n, 0, "its history went with it");
    loop_end(hub, &loop);
    sq_hub_destroy(hub);
}

/* ---- several loops in several threads ---- */

typedef struct worker {
    sq_hub_t *hub;
    uv_loop_t loop;
    uv_thread_t thread;
    got_t got;
    int published;
    uv_barrier_t *ready;
    uv_barrier_t *go;
    size_t want;
} worker_t;

static void worker_main(void *arg)
{
    worker_t *w = arg;
    sq_hub_attach(w->hub, &w->loop);
    sq_hub_subscribe(w->hub, &w->loop, "r", 0, on_msg, &w->got, &w->got.sub);
    spin(&w->loop);
    uv_barrier_wait(w->ready);
    uv_barrier_wait(w->go);
    char text[32];
    for (int i = 0; i < 500; i++) {
        int n = snprintf(text, sizeof(text), "%p-%d", (void *)w, i);
        if (sq_hub_publish(w->hub, &w->loop, "r", text, (size_t)n, NULL, NULL) == 0)
            w->published++;
        if (i % 50 == 0)
            uv_run(&w->loop, UV_RUN_NOWAIT);
    }
    run_until(&w->loop, &w->got.n, w->want, 5000);
    sq_hub_unsubscribe(w->got.sub);
    sq_hub_detach(w->hub, &w->loop);
    uv_run(&w->loop, UV_RUN_DEFAULT);
}

Test(hub, loops_in_two_threads_see_one_order, .timeout = 20)
{
    sq_hub_t *hub;
    cr_assert_eq(sq_hub_create(&hub, NULL), 0);
    uv_barrier_t ready, go;
    uv_barrier_init(&ready, 3);
    uv_barrier_init(&go, 3);
    static worker_t w[2];
    for (int i = 0; i < 2; i++) {
        memset(&w[i], 0, sizeof(w[i]));
        w[i].hub = hub;
        w[i].ready = &ready;
        w[i].go = &go;
        w[i].want = 1000;
        uv_loop_init(&w[i].loop);
        cr_assert_eq(uv_thread_create(&w[i].thread, worker_main, &w[i]), 0);
    }
    uv_barrier_wait(&ready);
    uv_barrier_wait(&go);
    for (int i = 0; i < 2; i++)
        uv_thread_join(&w[i].thread);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(w[i].published, 500);
        cr_assert_eq(w[i].got.n, 1000, "loop %d got %zu", i, w[i].got.n);
        for (size_t k = 0; k < 1000; k++)
            cr_assert_eq(w[i].got.ids[k], k + 1);
        cr_assert_eq(uv_loop_close(&w[i].loop), 0);
    }
    for (size_t k = 0; k < 1000; k++)
        cr_assert_str_eq(w[0].got.texts[k], w[1].got.texts[k], "the two loops disagree");
    for (int i = 0; i < 2; i++)
        got_free(&w[i].got);
    uv_barrier_destroy(&ready);
    uv_barrier_destroy(&go);
    sq_hub_destroy(hub);
}

Test(hub, rooms_that_are_only_read_are_not_kept, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sq_hub_opts_t o;
    sq_hub_opts_init(&o);
    o.max_rooms = 2;
    sq_hub_t *hub;
    cr_assert_eq(sq_hub_create(&hub, &o), 0);
    cr_assert_eq(sq_hub_attach(hub, &loop), 0);
    char room[16];
    for (int i = 0; i < 50; i++) { /* readers of rooms nobody wrote to */
        got_t g = {0};
        snprintf(room, sizeof(room), "r%d", i);
        cr_assert_eq(sq_hub_subscribe(hub, &loop, room, 0, on_msg, &g, &g.sub), 0,
                     "room %d refused: read-only rooms filled max_rooms", i);
        spin(&loop);
        sq_hub_unsubscribe(g.sub);
    }
    sq_hub_stats_t st;
    sq_hub_stats(hub, &st);
    cr_assert_eq(st.rooms, 0);
    publish_ok(hub, &loop, "written", "x", 1);
    got_t w = {0};
    cr_assert_eq(sq_hub_subscribe(hub, &loop, "written", 0, on_msg, &w, &w.sub), 0);
    run_until(&loop, &w.n, 1, 2000);
    sq_hub_unsubscribe(w.sub);
    spin(&loop);
    sq_hub_stats(hub, &st);
    cr_assert_eq(st.rooms, 1, "a room with messages stays (its history and ids)");
    got_free(&w);
    loop_end(hub, &loop);
    sq_hub_destroy(hub);
}

/* Callbacks that detach the loop, or subscribe again when told the loop is going. */
static sq_hub_t *cb_hub;
static uv_loop_t *cb_loop;
static int resub_rc[4], nresub;

static void detach_on_msg(sq_hub_sub_t *sub, int status, const sq_hub_msg_t *msg,
                          uint64_t missed, void *data)
{
    got_t *g = data;
    if (status < 0) {
        g->ends++;
        if (nresub < 4) /* a subscriber that tries again on any error */
            resub_rc[nresub++] = sq_hub_subscribe(cb_hub, cb_loop, "r", 0, detach_on_msg, g,
                                                  NULL);
        return;
    }
    if (msg != NULL) {
        g->n++;
        sq_hub_detach(cb_hub, cb_loop);
    }
}

static void detach_on_published(sq_hub_t *hub, int status, uint64_t id, void *data)
{
    got_t *g = data;
    sq_hub_detach(hub, cb_loop);
    g->status = sq_hub_subscribe(hub, cb_loop, "s", 0, on_msg, g, NULL);
}

Test(hub, detaching_from_inside_a_callback_waits_for_the_round, .timeout = 10)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    cr_assert_eq(sq_hub_create(&cb_hub, NULL), 0);
    cr_assert_eq(sq_hub_attach(cb_hub, &loop), 0);
    cb_loop = &loop;
    nresub = 0;
    got_t a = {0}, b = {0}, c = {0};
    cr_assert_eq(sq_hub_subscribe(cb_hub, &loop, "r", 0, detach_on_msg, &a, NULL), 0);
    cr_assert_eq(sq_hub_subscribe(cb_hub, &loop, "r", 0, detach_on_msg, &b, NULL), 0);
    spin(&loop);
    publish_ok(cb_hub, &loop, "r", "1", 1);
    publish_ok(cb_hub, &loop, "r", "2", 1);
    run_until(&loop, &a.n, 1, 2000);
    cr_assert_eq(a.n, 1, "a message after the detach its first asked for");
    cr_assert_eq(b.n, 1);
    cr_assert_eq(a.ends, 1);
    cr_assert_eq(b.ends, 1);
    cr_assert_eq(nresub, 2);
    cr_assert_eq(resub_rc[0], SQ_ECLOSED, "a subscribe while the loop is being let go");
    cr_assert_eq(resub_rc[1], SQ_ECLOSED);
    cr_assert_eq(sq_hub_publish(cb_hub, &loop, "r", "x", 1, NULL, NULL), SQ_ECLOSED);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
    sq_hub_destroy(cb_hub);

    /* a publish's callback that detaches, then subscribes, with a history read queued */
    uv_loop_init(&loop);
    cr_assert_eq(sq_hub_create(&cb_hub, NULL), 0);
    cr_assert_eq(sq_hub_attach(cb_hub, &loop), 0);
    cr_assert_eq(sq_hub_publish(cb_hub, &loop, "s", "x", 1, detach_on_published, &c), 0);
    cr_assert_eq(sq_hub_subscribe(cb_hub, &loop, "s", 0, on_msg, &b, NULL), 0);
    spin(&loop);
    cr_assert_eq(c.status, SQ_ECLOSED);
    cr_assert_eq(b.ends, 2, "the subscriber ended with the loop (and was told once)");
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
    sq_hub_destroy(cb_hub);
}
