/* The hub on Redis: two hubs on one redis-server stand for two machines — each has its own
 * Redis thread and connections — sharing rooms, ids and history; a Redis that is not
 * there, goes away and comes back; replies of a shape the hub did not write. Each test
 * starts its own redis-server (tests/support/redis_server.c) on a free loopback port. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include <squall.h>

#include "support/harness.h"
#include "support/redis_server.h"

#define MAXGOT 256

static tr_redis_t *redis; /* killed and removed by the suite's fini, whatever happened */

static void suite_fini(void)
{
    tr_redis_stop(redis);
    redis = NULL;
}

TestSuite(hub_redis, .fini = suite_fini, .timeout = 40);

/* ---- what a subscriber and a publisher were told ---- */

typedef struct got {
    uint64_t ids[MAXGOT];
    char *texts[MAXGOT]; /* NUL-terminated copies */
    size_t lens[MAXGOT];
    size_t n;
    int live;
    uint64_t missed;
    int status; /* the negative status it ended with */
    int ends;
    sq_hub_sub_t *sub;
} got_t;

static void on_msg(sq_hub_sub_t *sub, int status, const sq_hub_msg_t *msg, uint64_t missed,
                   void *data)
{
    got_t *g = data;
    if (status < 0) {
        g->status = status;
        g->ends++;
        g->sub = NULL;
        return;
    }
    g->missed += missed;
    if (msg == NULL) {
        g->live++;
        return;
    }
    if (g->n < MAXGOT) {
        size_t len;
        const char *t = sq_hub_msg_text(msg, &len);
        g->ids[g->n] = sq_hub_msg_id(msg);
        g->texts[g->n] = malloc(len + 1);
        memcpy(g->texts[g->n], t, len + 1);
        g->lens[g->n] = len;
        g->n++;
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

/* ---- the test's loop: both hubs are attached to it ---- */

static uv_loop_t loop;
static uv_timer_t wake; /* a turn every 5 ms, so conditions set by other threads are seen */

static void on_wake(uv_timer_t *t) {}

static void loop_start(void)
{
    cr_assert_eq(uv_loop_init(&loop), 0);
    uv_timer_init(&loop, &wake);
    uv_timer_start(&wake, on_wake, 5, 5);
}

/* Turns the loop until cond holds or ms pass; evaluates to cond. */
#define WAIT_FOR(cond, ms)                                                                         \
    ({                                                                                             \
        uint64_t end_ = th_now_ms() + (ms);                                                        \
        while (!(cond) && th_now_ms() < end_)                                                      \
            uv_run(&loop, UV_RUN_ONCE);                                                            \
        (cond);                                                                                    \
    })

/* history_count DEF: the default. */
#define DEF ((size_t)-1)

static sq_hub_t *hub_new_timeout(const char *url, size_t history_count, uint64_t timeout_ms)
{
    sq_hub_opts_t o;
    sq_hub_opts_init(&o);
    o.redis_url = url;
    o.redis_reconnect_ms = 50;
    o.redis_timeout_ms = timeout_ms;
    if (history_count != DEF)
        o.history_count = history_count;
    sq_hub_t *hub;
    cr_assert_eq(sq_hub_create(&hub, &o), 0);
    cr_assert_eq(sq_hub_attach(hub, &loop), 0);
    return hub;
}

static sq_hub_t *hub_new(const char *url, size_t history_count)
{
    return hub_new_timeout(url, history_count, 1000);
}

static sq_hub_stats_t stats(sq_hub_t *hub)
{
    sq_hub_stats_t s;
    sq_hub_stats(hub, &s);
    return s;
}

static void wait_connected(sq_hub_t *hub)
{
    cr_assert(WAIT_FOR(stats(hub).redis_connected == 1, 10000), "the hub did not connect");
}

/* Publishes and waits for the answer. */
static pub_t publish(sq_hub_t *hub, const char *room, const char *text)
{
    pub_t p = {0};
    cr_assert_eq(sq_hub_publish(hub, &loop, room, text, strlen(text), on_published, &p), 0);
    cr_assert(WAIT_FOR(p.calls == 1, 5000), "no answer to a publish");
    return p;
}

static uint64_t publish_ok(sq_hub_t *hub, const char *room, const char *text)
{
    pub_t p = publish(hub, room, text);
    cr_assert_eq(p.status, 0, "publish: %s", sq_strerror(p.status));
    return p.id;
}

static void subscribe(sq_hub_t *hub, const char *room, uint64_t since, got_t *g)
{
    cr_assert_eq(sq_hub_subscribe(hub, &loop, room, since, on_msg, g, &g->sub), 0);
}

static void subscribe_live(sq_hub_t *hub, const char *room, uint64_t since, got_t *g)
{
    subscribe(hub, room, since, g);
    cr_assert(WAIT_FOR(g->live == 1 || g->ends > 0, 5000), "no history");
    cr_assert_eq(g->ends, 0, "the subscriber ended: %s", sq_strerror(g->status));
}

static void expect_ids(const got_t *g, uint64_t first, size_t n)
{
    cr_assert_eq(g->n, n, "got %zu messages, want %zu", g->n, n);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(g->ids[i], first + i, "message %zu has id %llu, want %llu", i,
                     (unsigned long long)g->ids[i], (unsigned long long)(first + i));
}

/* In a sanitizer build, LeakSanitizer's check on demand (see harness.c). */
extern int __lsan_do_recoverable_leak_check(void) __attribute__((weak));

/* Detaches every hub, lets the loop close what they had, frees them, closes the loop;
 * then nothing of theirs may be left (in a sanitizer build). */
static void end(sq_hub_t *a, sq_hub_t *b)
{
    sq_hub_detach(a, &loop);
    if (b != NULL)
        sq_hub_detach(b, &loop);
    uv_close((uv_handle_t *)&wake, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    sq_hub_destroy(a);
    sq_hub_destroy(b);
    cr_assert_eq(uv_loop_close(&loop), 0, "a handle was left on the loop");
    if (__lsan_do_recoverable_leak_check != NULL)
        cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "leaks after the hubs went");
}

/* ---- the URL ---- */

Test(hub_redis, a_url_that_is_not_redis_host_port_is_einval)
{
    static const char *const bad[] = {
        "",
        "http://127.0.0.1:6379",
        "redis:/127.0.0.1",
        "redis://",
        "redis://:6379",
        "redis://127.0.0.1:",
        "redis://127.0.0.1:0",
        "redis://127.0.0.1:65536",
        "redis://127.0.0.1:99999999999999999999",
        "redis://127.0.0.1:63x9",
        "redis://127.0.0.1:6379/",
        "redis://127.0.0.1:6379/0",
        "redis://user@127.0.0.1",
        "redis://127.0.0.1?db=1",
        "redis://exa mple",
        "redis://[::1",
        "redis://[]:6379",
        "redis://[::1]x",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sq_hub_opts_t o;
        sq_hub_opts_init(&o);
        o.redis_url = bad[i];
        sq_hub_t *hub = NULL;
        cr_expect_eq(sq_hub_create(&hub, &o), UV_EINVAL, "'%s' was taken", bad[i]);
        cr_expect_null(hub);
    }
    /* Well formed (nobody listens: made all the same, connecting in the background). */
    static const char *const good[] = {
        "redis://127.0.0.1",
        "redis://127.0.0.1:1",
        "redis://localhost:65535",
        "redis://[::1]:1",
        "REDIS://127.0.0.1", /* a scheme's case does not matter (RFC 3986 §3.1) */
        "Redis://127.0.0.1:2",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        sq_hub_opts_t o;
        sq_hub_opts_init(&o);
        o.redis_url = good[i];
        sq_hub_t *hub = NULL;
        cr_expect_eq(sq_hub_create(&hub, &o), 0, "'%s' was refused", good[i]);
        sq_hub_destroy(hub);
    }
}

/* ---- two machines ---- */

Test(hub_redis, a_message_published_on_one_reaches_a_subscriber_on_the_other)
{
    redis = tr_redis_start();
    loop_start();
    sq_hub_t *a = hub_new(tr_redis_url(redis), DEF), *b = hub_new(tr_redis_url(redis), DEF);
    wait_connected(a);
    wait_connected(b);
    got_t on_b = {0}, on_a = {0};
    subscribe_live(b, "lobby", 0, &on_b);
    subscribe_live(a, "lobby", 0, &on_a);

    /* ids go up by one per message of the room, whichever server publishes */
    cr_assert_eq(publish_ok(a, "lobby", "from a"), 1);
    cr_assert_eq(publish_ok(b, "lobby", "from b"), 2);
    cr_assert_eq(publish_ok(a, "lobby", "from a again"), 3);
    cr_assert_eq(publish_ok(b, "elsewhere", "another room"), 1);
    cr_assert(WAIT_FOR(on_b.n == 3 && on_a.n == 3, 5000), "b got %zu, a got %zu", on_b.n, on_a.n);
    expect_ids(&on_b, 1, 3);
    expect_ids(&on_a, 1, 3);
    cr_assert_str_eq(on_b.texts[0], "from a");
    cr_assert_str_eq(on_b.texts[1], "from b");
    cr_assert_str_eq(on_b.texts[2], "from a again");

    /* what Redis holds: one stream per room, under the prefix */
    redisReply *r = tr_redis_cmd(redis, "XLEN squall:room:lobby");
    cr_assert(r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 3);
    freeReplyObject(r);

    sq_hub_stats_t s = stats(a);
    cr_assert_eq(s.published, 2);
    cr_assert_eq(s.redis_errors, 0);
    sq_hub_unsubscribe(on_a.sub);
    sq_hub_unsubscribe(on_b.sub);
    got_free(&on_a);
    got_free(&on_b);
    end(a, b);
}

static int answers(const pub_t *p, int n)
{
    int done = 0;
    for (int i = 0; i < n; i++)
        done += p[i].calls;
    return done;
}

Test(hub_redis, many_publishes_from_both_get_every_id_once)
{
    redis = tr_redis_start();
    loop_start();
    sq_hub_t *a = hub_new(tr_redis_url(redis), DEF), *b = hub_new(tr_redis_url(redis), DEF);
    wait_connected(a);
    wait_connected(b);
    got_t g = {0};
    subscribe_live(b, "busy", 0, &g);
    enum { N = 100 };
    pub_t p[N] = {{0}};
    for (int i = 0; i < N; i++) {
        char text[16];
        snprintf(text, sizeof(text), "m%d", i);
        cr_assert_eq(
            sq_hub_publish(i % 2 ? a : b, &loop, "busy", text, strlen(text), on_published, &p[i]),
            0);
    }
    cr_assert(WAIT_FOR(answers(p, N) == N && g.n == N, 10000), "%d answers, %zu delivered",
              answers(p, N), g.n);
    /* each id once, whatever the order the two servers' publishes met in Redis */
    int seen[N + 1] = {0};
    for (int i = 0; i < N; i++) {
        cr_assert_eq(p[i].status, 0);
        cr_assert(p[i].id >= 1 && p[i].id <= N);
        cr_assert_eq(seen[p[i].id]++, 0, "id %llu given twice", (unsigned long long)p[i].id);
    }
    expect_ids(&g, 1, N);
    for (int i = 0; i < N; i++) { /* and the subscriber got each id with its own text */
        char text[16];
        snprintf(text, sizeof(text), "m%d", i);
        cr_assert_str_eq(g.texts[p[i].id - 1], text);
    }
    sq_hub_unsubscribe(g.sub);
    got_free(&g);
    end(a, b);
}

Test(hub_redis, history_and_since_are_shared)
{
    redis = tr_redis_start();
    loop_start();
    sq_hub_t *a = hub_new(tr_redis_url(redis), DEF), *b = hub_new(tr_redis_url(redis), DEF);
    wait_connected(a);
    wait_connected(b);
    for (int i = 1; i <= 5; i++) {
        char text[16];
        snprintf(text, sizeof(text), "h%d", i);
        cr_assert_eq(publish_ok(a, "hist", text), (uint64_t)i);
    }
    got_t whole = {0}, after3 = {0}, now = {0};
    subscribe_live(b, "hist", 0, &whole);
    subscribe_live(b, "hist", 3, &after3);
    subscribe_live(b, "hist", SQ_HUB_SINCE_NOW, &now);
    expect_ids(&whole, 1, 5);
    cr_assert_str_eq(whole.texts[4], "h5");
    expect_ids(&after3, 4, 2);
    cr_assert_eq(now.n, 0);
    cr_assert_eq(whole.missed + after3.missed + now.missed, 0);

    /* and live after the history, for all three */
    cr_assert_eq(publish_ok(a, "hist", "h6"), 6);
    cr_assert(WAIT_FOR(whole.n == 6 && after3.n == 3 && now.n == 1, 5000));
    cr_assert_eq(now.ids[0], 6);
    cr_assert_str_eq(now.texts[0], "h6");
    sq_hub_unsubscribe(whole.sub);
    sq_hub_unsubscribe(after3.sub);
    sq_hub_unsubscribe(now.sub);
    got_free(&whole);
    got_free(&after3);
    got_free(&now);
    end(a, b);
}

Test(hub_redis, since_above_the_last_id_reads_from_the_start)
{
    redis = tr_redis_start();
    loop_start();
    sq_hub_t *a = hub_new(tr_redis_url(redis), DEF);
    wait_connected(a);
    for (int i = 0; i < 3; i++)
        publish_ok(a, "again", "x");
    got_t g = {0};
    subscribe_live(a, "again", 10, &g); /* the room started again: all of it */
    expect_ids(&g, 1, 3);
    cr_assert_eq(g.missed, 0);
    got_t empty = {0};
    subscribe_live(a, "never-written", 7, &empty);
    cr_assert_eq(empty.n, 0);
    cr_assert_eq(publish_ok(a, "never-written", "first"), 1);
    cr_assert(WAIT_FOR(empty.n == 1, 5000));
    cr_assert_eq(empty.ids[0], 1);
    sq_hub_unsubscribe(g.sub);
    sq_hub_unsubscribe(empty.sub);
    got_free(&g);
    got_free(&empty);
    end(a, NULL);
}

Test(hub_redis, a_subscriber_behind_the_history_is_told_what_it_missed)
{
    redis = tr_redis_start();
    loop_start();
    sq_hub_t *a = hub_new(tr_redis_url(redis), 3), *b = hub_new(tr_redis_url(redis), 3);
    wait_connected(a);
    wait_connected(b);
    for (int i = 1; i <= 10; i++)
        cr_assert_eq(publish_ok(i % 2 ? a : b, "small", "m"), (uint64_t)i);

    got_t behind = {0}, whole = {0}, current = {0};
    subscribe_live(b, "small", 2, &behind); /* 3..7 are gone */
    expect_ids(&behind, 8, 3);
    cr_assert_eq(behind.missed, 5);
    subscribe_live(b, "small", 0, &whole); /* the whole history: nothing is "missed" */
    expect_ids(&whole, 8, 3);
    cr_assert_eq(whole.missed, 0);
    subscribe_live(a, "small", 7, &current);
    expect_ids(&current, 8, 3);
    cr_assert_eq(current.missed, 0);
    cr_assert_eq(stats(b).missed, 1);
    sq_hub_unsubscribe(behind.sub);
    sq_hub_unsubscribe(whole.sub);
    sq_hub_unsubscribe(current.sub);
    got_free(&behind);
    got_free(&whole);
    got_free(&current);
    end(a, b);
}

Test(hub_redis, history_count_zero_keeps_nothing_and_ids_go_on)
{
    redis = tr_redis_start();
    loop_start();
    sq_hub_t *a = hub_new(tr_redis_url(redis), 0);
    wait_connected(a);
    for (int i = 1; i <= 5; i++)
        cr_assert_eq(publish_ok(a, "none", "m"), (uint64_t)i);
    got_t whole = {0}, behind = {0};
    subscribe_live(a, "none", 0, &whole);
    cr_assert_eq(whole.n, 0);
    cr_assert_eq(whole.missed, 0);
    subscribe_live(a, "none", 2, &behind); /* 3..5 were never kept */
    cr_assert_eq(behind.n, 0);
    cr_assert_eq(behind.missed, 3);
    cr_assert_eq(publish_ok(a, "none", "live"), 6);
    cr_assert(WAIT_FOR(whole.n == 1 && behind.n == 1, 5000));
    cr_assert_eq(whole.ids[0], 6);
    sq_hub_unsubscribe(whole.sub);
    sq_hub_unsubscribe(behind.sub);
    got_free(&whole);
    got_free(&behind);
    end(a, NULL);
}

/* Publishes n messages at once (pipelined) and waits for every answer. */
static void publish_many(sq_hub_t *hub, const char *room, int n)
{
    pub_t *p = calloc((size_t)n, sizeof(*p));
    for (int i = 0; i < n; i++)
        cr_assert_eq(sq_hub_publish(hub, &loop, room, "m", 1, on_published, &p[i]), 0);
    cr_assert(WAIT_FOR(answers(p, n) == n, 10000));
    for (int i = 0; i < n; i++)
        cr_assert_eq(p[i].status, 0);
    free(p);
}

static long long xlen(const char *key)
{
    redisReply *r = tr_redis_cmd(redis, "XLEN %s", key);
    cr_assert(r != NULL && r->type == REDIS_REPLY_INTEGER);
    long long n = r->integer;
    freeReplyObject(r);
    return n;
}

Test(hub_redis, a_stream_keeps_history_count_or_100_whichever_is_more)
{
    redis = tr_redis_start();
    loop_start();
    sq_hub_t *small = hub_new(tr_redis_url(redis), 3), *big = hub_new(tr_redis_url(redis), 150);
    wait_connected(small);
    wait_connected(big);
    publish_many(small, "small", 120);
    cr_assert_eq(xlen("squall:room:small"), 100, "100 kept for the live read");
    publish_many(big, "big", 200);
    cr_assert_eq(xlen("squall:room:big"), 150);
    got_t g = {0}, h = {0};
    subscribe_live(small, "small", 0, &g); /* the history is still history_count */
    expect_ids(&g, 118, 3);
    subscribe_live(big, "big", 10, &h);
    expect_ids(&h, 51, 150);
    cr_assert_eq(h.missed, 40);
    sq_hub_unsubscribe(g.sub);
    sq_hub_unsubscribe(h.sub);
    got_free(&g);
    got_free(&h);
    end(small, big);
}

Test(hub_redis, texts_and_room_names_cross_byte_for_byte)
{
    redis = tr_redis_start();
    loop_start();
    sq_hub_t *a = hub_new(tr_redis_url(redis), DEF), *b = hub_new(tr_redis_url(redis), DEF);
    wait_connected(a);
    wait_connected(b);
    static char big[64 << 10]; /* max_text_bytes */
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char)('a' + i % 26);
    const struct {
        const char *room;
        const char *text;
        size_t len;
    } rows[] = {
#define T(s) s, sizeof(s) - 1
        {"lobby", T("")},
        {"lobby", T("nul \0 inside")},
        {"lobby", T("quote \" backslash \\ new\nline")},
        {"caf\xc3\xa9 {braces} : spaces", T("\xf0\x9f\x98\x80 astral")},
        {"*", big, sizeof(big)},
#undef T
    };
    size_t n = sizeof(rows) / sizeof(rows[0]);
    got_t g[5];
    memset(g, 0, sizeof(g));
    for (size_t i = 0; i < n; i++)
        subscribe_live(b, rows[i].room, SQ_HUB_SINCE_NOW, &g[i]);
    for (size_t i = 0; i < n; i++) {
        pub_t p = {0};
        cr_assert_eq(
            sq_hub_publish(a, &loop, rows[i].room, rows[i].text, rows[i].len, on_published, &p), 0);
        cr_assert(WAIT_FOR(p.calls == 1, 5000));
        cr_assert_eq(p.status, 0, "row %zu: %s", i, sq_strerror(p.status));
    }
    /* rows sharing a room: each subscriber of "lobby" gets the three */
    cr_assert(WAIT_FOR(g[0].n == 3 && g[3].n == 1 && g[4].n == 1, 5000));
    for (size_t i = 0; i < 3; i++) {
        cr_assert_eq(g[0].lens[i], rows[i].len, "row %zu", i);
        cr_assert_eq(memcmp(g[0].texts[i], rows[i].text, rows[i].len), 0, "row %zu", i);
    }
    cr_assert_eq(g[0].ids[2], 3);
    cr_assert_str_eq(g[3].texts[0], rows[3].text);
    cr_assert_eq(g[4].lens[0], sizeof(big));
    cr_assert_eq(memcmp(g[4].texts[0], big, sizeof(big)), 0);
    for (size_t i = 0; i < n; i++) {
        sq_hub_unsubscribe(g[i].sub);
        got_free(&g[i]);
    }
    end(a, b);
}

Test(hub_redis, a_room_watched_while_the_read_blocks_is_live_at_once)
{
    redis = tr_redis_start();
    loop_start();
    sq_hub_t *a = hub_new(tr_redis_url(redis), DEF), *b = hub_new(tr_redis_url(redis), DEF);
    wait_connected(a);
    wait_connected(b);
    got_t first = {0};
    subscribe_live(b, "first", 0, &first); /* b's XREAD now blocks on "first" alone */
    th_sleep_ms(100);
    /* each new room must reach b well before the XREAD's 10 s block would end */
    for (int i = 0; i < 5; i++) {
        char room[16];
        snprintf(room, sizeof(room), "room%d", i);
        got_t g = {0};
        subscribe_live(b, room, SQ_HUB_SINCE_NOW, &g);
        cr_assert_eq(publish_ok(a, room, "hello"), 1);
        cr_assert(WAIT_FOR(g.n == 1, 3000), "room %s is not live", room);
        sq_hub_unsubscribe(g.sub);
        got_free(&g);
    }
    /* and the first room is still live, also after the others were unwatched */
    cr_assert_eq(publish_ok(a, "first", "still"), 1);
    cr_assert(WAIT_FOR(first.n == 1, 3000));
    /* a room unwatched, then watched again, starts from where Redis is */
    got_t again = {0};
    subscribe_live(b, "room0", 0, &again);
    expect_ids(&again, 1, 1);
    cr_assert_eq(publish_ok(a, "room0", "two"), 2);
    cr_assert(WAIT_FOR(again.n == 2, 3000));
    expect_ids(&again, 1, 2);
    sq_hub_unsubscribe(first.sub);
    sq_hub_unsubscribe(again.sub);
    got_free(&first);
    got_free(&again);
    end(a, b);
}

/* ---- Redis away ---- */

Test(hub_redis, redis_not_there_at_create_fails_publishes_then_works_once_it_is)
{
    redis = tr_redis_new(th_free_port()); /* nobody listens there yet */
    loop_start();
    sq_hub_t *a = hub_new(tr_redis_url(redis), DEF);
    th_sleep_ms(150); /* a few attempts */
    pub_t p = publish(a, "lobby", "too early");
    cr_assert_lt(p.status, 0);
    cr_assert_eq(p.id, 0);
    got_t g = {0};
    subscribe(a, "lobby", 0, &g); /* its history cannot be read: it ends */
    cr_assert(WAIT_FOR(g.ends == 1, 5000));
    cr_assert_lt(g.status, 0);
    sq_hub_stats_t s = stats(a);
    cr_assert_eq(s.redis_connected, 0);
    cr_assert_gt(s.redis_errors, 0);

    tr_redis_restart(redis); /* comes up */
    wait_connected(a);
    cr_assert_eq(publish_ok(a, "lobby", "now"), 1);
    got_t h = {0};
    subscribe_live(a, "lobby", 0, &h);
    expect_ids(&h, 1, 1);
    cr_assert_str_eq(h.texts[0], "now");
    sq_hub_unsubscribe(h.sub);
    got_free(&h);
    end(a, NULL);
}

Test(hub_redis, a_refused_connect_is_seen_at_once_not_at_the_timeout)
{
    /* hiredis 0.14's libuv adapter ignores the poll error of a refused connect: unless
     * the backend notices, each attempt waits for redis_timeout_ms (here 60 s). */
    redis = tr_redis_new(th_free_port());
    loop_start();
    sq_hub_t *a = hub_new_timeout(tr_redis_url(redis), DEF, 60000);
    cr_assert(WAIT_FOR(stats(a).redis_errors >= 4, 3000), "attempts are not seen failing");
    tr_redis_restart(redis);
    cr_assert(WAIT_FOR(stats(a).redis_connected == 1, 3000), "not connected soon after");
    cr_assert_eq(publish_ok(a, "lobby", "up"), 1);
    end(a, NULL);
}

Test(hub_redis, redis_killed_and_restarted_loses_nothing_it_acknowledged)
{
    redis = tr_redis_start();
    loop_start();
    sq_hub_t *a = hub_new(tr_redis_url(redis), DEF), *b = hub_new(tr_redis_url(redis), DEF);
    wait_connected(a);
    wait_connected(b);
    got_t g = {0};
    subscribe_live(b, "lobby", 0, &g);
    cr_assert_eq(publish_ok(a, "lobby", "one"), 1);
    cr_assert(WAIT_FOR(g.n == 1, 5000));
    /* acknowledged, then Redis dies: b may or may not have read it live yet */
    cr_assert_eq(publish_ok(a, "lobby", "two"), 2);
    tr_redis_kill(redis);

    cr_assert(WAIT_FOR(stats(a).redis_connected == 0 && stats(b).redis_connected == 0, 5000));
    pub_t p = publish(a, "lobby", "lost");
    cr_assert_lt(p.status, 0, "a publish while Redis is away fails");
    p = publish(b, "lobby", "lost too");
    cr_assert_lt(p.status, 0);
    th_sleep_ms(200);
    cr_assert_eq(g.ends, 0, "the subscriber stays");

    tr_redis_restart(redis); /* same port, same append-only file */
    wait_connected(a);
    wait_connected(b);
    cr_assert_eq(publish_ok(a, "lobby", "three"), 3);
    cr_assert_eq(publish_ok(b, "lobby", "four"), 4);
    cr_assert(WAIT_FOR(g.n == 4, 5000), "got %zu", g.n);
    expect_ids(&g, 1, 4);
    cr_assert_str_eq(g.texts[1], "two");
    cr_assert_str_eq(g.texts[3], "four");
    cr_assert_eq(g.ends, 0);

    /* and a newcomer reads the whole history, what came before the kill included */
    got_t h = {0};
    subscribe_live(a, "lobby", 0, &h);
    expect_ids(&h, 1, 4);
    cr_assert_str_eq(h.texts[1], "two");
    cr_assert_gt(stats(a).redis_errors, 0);
    sq_hub_unsubscribe(g.sub);
    sq_hub_unsubscribe(h.sub);
    got_free(&g);
    got_free(&h);
    end(a, b);
}

Test(hub_redis, a_redis_still_loading_its_data_is_waited_for)
{
    /* Restarted with a big append-only file, Redis takes connections while it loads and
     * answers LOADING to the reads: the hub reconnects then, and must read again. */
    redis = tr_redis_start();
    loop_start();
    sq_hub_t *a = hub_new(tr_redis_url(redis), DEF), *b = hub_new(tr_redis_url(redis), DEF);
    wait_connected(a);
    wait_connected(b);
    got_t g = {0};
    subscribe_live(b, "lobby", 0, &g);
    cr_assert_eq(publish_ok(a, "lobby", "before"), 1);
    cr_assert(WAIT_FOR(g.n == 1, 5000));
    redisReply *r = tr_redis_cmd(redis, "EVAL %s 0",
                                 "for i = 1, 200000 do redis.call('SET', 'k' .. i, 'v') end");
    cr_assert(r != NULL && r->type != REDIS_REPLY_ERROR);
    freeReplyObject(r);
    tr_redis_kill(redis);
    tr_redis_restart(redis); /* returns once it answers PING: loaded */
    wait_connected(a);
    wait_connected(b);
    cr_assert_eq(publish_ok(a, "lobby", "after"), 2);
    cr_assert(WAIT_FOR(g.n == 2, 5000), "the room is not live again");
    cr_assert_str_eq(g.texts[1], "after");
    sq_hub_unsubscribe(g.sub);
    got_free(&g);
    end(a, b);
}

Test(hub_redis, messages_written_while_a_server_was_cut_off_reach_it_after)
{
    /* b's connections are killed by Redis itself (CLIENT KILL): a publishes meanwhile;
     * b's live read resumes from its cursor when it reconnects. */
    redis = tr_redis_start();
    loop_start();
    sq_hub_t *a = hub_new(tr_redis_url(redis), DEF), *b = hub_new(tr_redis_url(redis), DEF);
    wait_connected(a);
    wait_connected(b);
    got_t g = {0};
    subscribe_live(b, "cut", 0, &g);
    cr_assert_eq(publish_ok(a, "cut", "before"), 1);
    cr_assert(WAIT_FOR(g.n == 1, 5000));
    /* every connection but the test's own goes: a's and b's */
    uint64_t ea = stats(a).redis_errors, eb = stats(b).redis_errors;
    redisReply *r = tr_redis_cmd(redis, "CLIENT KILL TYPE normal SKIPME yes");
    cr_assert(r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer >= 4);
    freeReplyObject(r);
    /* written by someone else while both are reconnecting */
    r = tr_redis_cmd(redis, "XADD squall:room:cut 0-* text %s", "while away");
    cr_assert(r != NULL && r->type == REDIS_REPLY_STRING && strcmp(r->str, "0-2") == 0);
    freeReplyObject(r);
    /* both noticed the loss (else "connected" below could still be the old state) */
    cr_assert(WAIT_FOR(stats(a).redis_errors > ea && stats(b).redis_errors > eb, 5000),
              "the hubs did not see their connections go");
    wait_connected(a);
    wait_connected(b);
    /* a publish racing the command connection's return may fail: an app tries again */
    pub_t p = publish(a, "cut", "after");
    for (int i = 0; i < 20 && p.status != 0; i++) {
        uv_sleep(50);
        p = publish(a, "cut", "after");
    }
    cr_assert_eq(p.status, 0, "publish: %s", sq_strerror(p.status));
    cr_assert_eq(p.id, 3);
    cr_assert(WAIT_FOR(g.n == 3, 5000), "got %zu", g.n);
    expect_ids(&g, 1, 3);
    cr_assert_str_eq(g.texts[1], "while away");
    cr_assert_eq(g.ends, 0);
    sq_hub_unsubscribe(g.sub);
    got_free(&g);
    end(a, b);
}

Test(hub_redis, a_command_with_no_reply_in_time_fails_with_etimedout)
{
    redis = tr_redis_start();
    loop_start();
    sq_hub_t *a = hub_new_timeout(tr_redis_url(redis), DEF, 300);
    wait_connected(a);
    /* Redis holds every write for 1.5 s: the XADD gets no reply within 300 ms */
    redisReply *r = tr_redis_cmd(redis, "CLIENT PAUSE 1500 WRITE");
    cr_assert(r != NULL && r->type == REDIS_REPLY_STATUS);
    freeReplyObject(r);
    uint64_t t0 = th_now_ms();
    pub_t p = publish(a, "slow", "x");
    cr_assert_eq(p.status, UV_ETIMEDOUT, "%s", sq_strerror(p.status));
    cr_assert_lt(th_now_ms() - t0, 1400, "failed at the timeout, not when Redis answered");
    cr_assert_gt(stats(a).redis_errors, 0);
    /* the connection was dropped and is made again; writes go through once unpaused */
    wait_connected(a);
    cr_assert(WAIT_FOR(publish(a, "slow", "y").status == 0, 5000));

    /* redis_timeout_ms 0: no timeout, the publish waits for Redis */
    sq_hub_t *b = hub_new_timeout(tr_redis_url(redis), DEF, 0);
    wait_connected(b);
    r = tr_redis_cmd(redis, "CLIENT PAUSE 600 WRITE");
    freeReplyObject(r);
    p = publish(b, "slow", "z");
    cr_assert_eq(p.status, 0, "%s", sq_strerror(p.status));
    end(a, b);
}

Test(hub_redis, destroyed_with_requests_in_flight)
{
    redis = tr_redis_start();
    loop_start();
    sq_hub_t *a = hub_new(tr_redis_url(redis), DEF), *b = hub_new(tr_redis_url(redis), DEF);
    wait_connected(a);
    wait_connected(b);
    got_t g = {0}, h = {0};
    subscribe_live(b, "busy", 0, &g);
    for (int i = 0; i < 50; i++) {
        cr_assert_eq(sq_hub_publish(a, &loop, "busy", "x", 1, NULL, NULL), 0);
        cr_assert_eq(sq_hub_publish(b, &loop, "busy", "y", 1, NULL, NULL), 0);
    }
    subscribe(a, "busy", 0, &h); /* its history read is out too */
    end(a, b);                   /* answers and live messages still on their way are dropped */
    cr_assert_eq(g.ends, 1, "b's subscriber ends with the loop");
    got_free(&g);
    got_free(&h);
}

/* ---- what the hub did not write ---- */

Test(hub_redis, keys_and_entries_of_another_shape_are_errors_not_crashes)
{
    redis = tr_redis_start();
    loop_start();
    sq_hub_t *a = hub_new(tr_redis_url(redis), DEF);
    wait_connected(a);
    /* a key that is not a stream: publish and history fail with UV_EIO */
    redisReply *r = tr_redis_cmd(redis, "SET squall:room:str %s", "not a stream");
    freeReplyObject(r);
    pub_t p = publish(a, "str", "x");
    cr_assert_eq(p.status, UV_EIO);
    got_t g = {0};
    subscribe(a, "str", 0, &g);
    cr_assert(WAIT_FOR(g.ends == 1, 5000));
    cr_assert_eq(g.status, UV_EIO);

    /* entries without a text field, or not UTF-8, are skipped; the room goes on */
    r = tr_redis_cmd(redis, "XADD squall:room:odd 0-* other %s", "field");
    freeReplyObject(r);
    r = tr_redis_cmd(redis, "XADD squall:room:odd 0-* text %b", "\xff\xfe", (size_t)2);
    freeReplyObject(r);
    r = tr_redis_cmd(redis, "XADD squall:room:odd 0-* text %s", "fine");
    freeReplyObject(r);
    got_t odd = {0};
    subscribe_live(a, "odd", 0, &odd);
    expect_ids(&odd, 3, 1);
    cr_assert_str_eq(odd.texts[0], "fine");
    r = tr_redis_cmd(redis, "XADD squall:room:odd 0-* nothing %s", "here");
    freeReplyObject(r);
    cr_assert_eq(publish_ok(a, "odd", "five"), 5);
    cr_assert(WAIT_FOR(odd.n == 2, 5000));
    cr_assert_eq(odd.ids[1], 5);

    /* a live room's key becomes a string: the XREAD over every room fails; the other
     * rooms stay live, from where they were */
    got_t doomed = {0};
    subscribe_live(a, "doomed", 0, &doomed);
    cr_assert_eq(publish_ok(a, "doomed", "one"), 1);
    cr_assert(WAIT_FOR(doomed.n == 1, 5000));
    r = tr_redis_cmd(redis, "DEL squall:room:doomed");
    freeReplyObject(r);
    r = tr_redis_cmd(redis, "SET squall:room:doomed %s", "a string");
    freeReplyObject(r);
    cr_assert_eq(publish_ok(a, "odd", "six"), 6);
    cr_assert_eq(publish_ok(a, "odd", "seven"), 7);
    cr_assert(WAIT_FOR(odd.n == 4, 5000), "odd got %zu", odd.n);
    cr_assert_eq(odd.ids[2], 6);
    cr_assert_eq(odd.ids[3], 7);
    cr_assert_eq(doomed.ends, 0);
    sq_hub_unsubscribe(doomed.sub);
    got_free(&doomed);

    /* ids with a milliseconds part were not written by a hub: publishing there fails */
    r = tr_redis_cmd(redis, "XADD squall:room:ms 5-1 text %s", "x");
    freeReplyObject(r);
    p = publish(a, "ms", "y");
    cr_assert_eq(p.status, UV_EIO);

    sq_hub_stats_t s = stats(a);
    cr_assert_gt(s.redis_errors, 0);
    cr_assert_eq(s.redis_connected, 1);
    cr_assert_eq(publish_ok(a, "lobby", "still fine"), 1);
    sq_hub_unsubscribe(odd.sub);
    got_free(&odd);
    end(a, NULL);
}

Test(hub_redis, destroyed_while_redis_is_away_or_connecting)
{
    /* nobody listens: the hub is mid-attempt when it goes */
    redis = tr_redis_new(th_free_port());
    loop_start();
    sq_hub_t *a = hub_new(tr_redis_url(redis), DEF);
    got_t g = {0};
    subscribe(a, "r", 0, &g);
    pub_t p = {0};
    cr_assert_eq(sq_hub_publish(a, &loop, "r", "x", 1, on_published, &p), 0);
    end(a, NULL); /* answers still queued are dropped with the loop's part */
}

/* ---- what is out when the loop goes, and how much may be out ---- */

Test(hub_redis, a_publish_still_out_when_the_loop_goes_is_told_eclosed)
{
    redis = tr_redis_start();
    loop_start();
    sq_hub_t *a = hub_new_timeout(tr_redis_url(redis), DEF, 0); /* no timeout: it waits */
    wait_connected(a);
    redisReply *r = tr_redis_cmd(redis, "CLIENT PAUSE 800 ALL");
    cr_assert(r != NULL && r->type == REDIS_REPLY_STATUS);
    freeReplyObject(r);
    pub_t p = {0};
    cr_assert_eq(sq_hub_publish(a, &loop, "held", "x", 1, on_published, &p), 0);
    uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(p.calls, 0, "Redis is paused: no answer yet");
    sq_hub_detach(a, &loop); /* a server shutting down: its POST must be answered */
    cr_assert_eq(p.calls, 1, "the publish was never told: its response would hang");
    cr_assert_eq(p.status, SQ_ECLOSED);
    uint64_t until = th_now_ms() + 1500; /* Redis answers after the pause: dropped */
    while (th_now_ms() < until)
        uv_run(&loop, UV_RUN_ONCE);
    cr_assert_eq(p.calls, 1, "told twice");
    end(a, NULL);
}

Test(hub_redis, history_reads_past_max_history_reads_are_refused_at_once)
{
    redis = tr_redis_start();
    loop_start();
    sq_hub_opts_t o;
    sq_hub_opts_init(&o);
    o.redis_url = tr_redis_url(redis);
    o.redis_timeout_ms = 0;
    o.max_history_reads = 3;
    sq_hub_t *a;
    cr_assert_eq(sq_hub_create(&a, &o), 0);
    cr_assert_eq(sq_hub_attach(a, &loop), 0);
    wait_connected(a);
    redisReply *r = tr_redis_cmd(redis, "CLIENT PAUSE 500 ALL");
    freeReplyObject(r);
    static got_t g[4];
    memset(g, 0, sizeof(g));
    for (int i = 0; i < 3; i++)
        cr_assert_eq(sq_hub_subscribe(a, &loop, "slow", 0, on_msg, &g[i], &g[i].sub), 0);
    cr_assert_eq(sq_hub_subscribe(a, &loop, "slow", 0, on_msg, &g[3], &g[3].sub), UV_EAGAIN);
    /* one that leaves frees its place once its read comes back (skipped, not made) */
    sq_hub_unsubscribe(g[0].sub);
    cr_assert(WAIT_FOR(g[1].live == 1 && g[2].live == 1, 5000));
    cr_assert_eq(sq_hub_subscribe(a, &loop, "slow", 0, on_msg, &g[3], &g[3].sub), 0);
    cr_assert(WAIT_FOR(g[3].live == 1, 5000));
    end(a, NULL);
    for (int i = 0; i < 4; i++)
        got_free(&g[i]);
}

/* ---- a room that started again (Redis restarted without its data, a key deleted) ---- */

static void expect_reset(const got_t *g, const char *who)
{
    cr_assert_eq(g->ends, 1, "%s: ended %d times", who, g->ends);
    cr_assert_eq(g->status, SQ_ERESET, "%s ended with %s, not SQ_ERESET", who,
                 sq_err_name(g->status));
}

static void publish_three(sq_hub_t *a, sq_hub_t *b, const char *room, got_t *ga, got_t *gb)
{
    cr_assert_eq(publish_ok(a, room, "one"), 1);
    cr_assert_eq(publish_ok(b, room, "two"), 2);
    cr_assert_eq(publish_ok(a, room, "three"), 3);
    cr_assert(WAIT_FOR(ga->n == 3 && gb->n == 3, 5000), "a got %zu, b got %zu", ga->n, gb->n);
}

Test(hub_redis, redis_restarted_empty_ends_the_rooms_subscribers_with_ereset)
{
    /* Restarted with no data the streams are gone and ids start again at 1: the live read,
     * still after 0-3, would never see 1..3, and subscribers past 3 would drop them. Each
     * subscriber of the room ends (SQ_ERESET) so that its client starts again. */
    redis = tr_redis_start();
    loop_start();
    sq_hub_t *a = hub_new(tr_redis_url(redis), DEF), *b = hub_new(tr_redis_url(redis), DEF);
    wait_connected(a);
    wait_connected(b);
    got_t ga = {0}, gb = {0};
    subscribe_live(a, "lobby", 0, &ga);
    subscribe_live(b, "lobby", 0, &gb);
    publish_three(a, b, "lobby", &ga, &gb);

    tr_redis_kill(redis);
    cr_assert(WAIT_FOR(stats(a).redis_connected == 0 && stats(b).redis_connected == 0, 5000));
    tr_redis_restart_empty(redis);
    wait_connected(a);
    wait_connected(b);
    cr_assert_eq(publish_ok(a, "lobby", "new one"), 1, "ids start again");
    cr_assert(WAIT_FOR(ga.ends > 0 && gb.ends > 0, 5000), "the subscribers stayed: a %d, b %d",
              ga.ends, gb.ends);
    expect_reset(&ga, "a's subscriber");
    expect_reset(&gb, "b's subscriber");
    cr_assert_eq(ga.n, 3, "nothing of the new stream reached the old subscriber");
    cr_assert_eq(gb.n, 3);

    /* a client back with the last id it saw (3): above the room's last, read from 1 */
    got_t h = {0}, k = {0};
    subscribe_live(b, "lobby", 3, &h);
    expect_ids(&h, 1, 1);
    cr_assert_str_eq(h.texts[0], "new one");
    subscribe_live(a, "lobby", 3, &k);
    expect_ids(&k, 1, 1);
    /* and live from then on, whichever publishes */
    cr_assert_eq(publish_ok(b, "lobby", "new two"), 2);
    cr_assert_eq(publish_ok(a, "lobby", "new three"), 3);
    cr_assert(WAIT_FOR(h.n == 3 && k.n == 3, 5000), "b's got %zu, a's got %zu", h.n, k.n);
    expect_ids(&h, 1, 3);
    expect_ids(&k, 1, 3);
    cr_assert_str_eq(k.texts[2], "new three");
    cr_assert_eq(h.ends + k.ends, 0, "the newcomers stay");
    sq_hub_unsubscribe(h.sub);
    sq_hub_unsubscribe(k.sub);
    got_free(&ga);
    got_free(&gb);
    got_free(&h);
    got_free(&k);
    end(a, b);
}

Test(hub_redis, a_stream_deleted_is_found_by_the_next_publish_or_history_read)
{
    /* DEL while Redis runs: nothing reconnects. a finds it in its publish's id (1, at or
     * below its cursor 3), b in the history a newcomer reads (last id 1, below 3). */
    redis = tr_redis_start();
    loop_start();
    sq_hub_t *a = hub_new(tr_redis_url(redis), DEF), *b = hub_new(tr_redis_url(redis), DEF);
    wait_connected(a);
    wait_connected(b);
    got_t ga = {0}, gb = {0};
    subscribe_live(a, "lobby", 0, &ga);
    subscribe_live(b, "lobby", 0, &gb);
    publish_three(a, b, "lobby", &ga, &gb);
    redisReply *r = tr_redis_cmd(redis, "DEL squall:room:lobby");
    cr_assert(r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 1);
    freeReplyObject(r);

    cr_assert_eq(publish_ok(a, "lobby", "new one"), 1);
    cr_assert(WAIT_FOR(ga.ends > 0, 5000), "a's subscriber stayed");
    expect_reset(&ga, "a's subscriber");
    cr_assert_eq(gb.ends, 0, "b has read nothing that tells it yet");

    /* the newcomer whose history told b is spared: its history is the new stream's */
    got_t h = {0};
    subscribe_live(b, "lobby", 0, &h);
    expect_ids(&h, 1, 1);
    cr_assert(WAIT_FOR(gb.ends > 0, 5000), "b's subscriber stayed");
    expect_reset(&gb, "b's subscriber");
    cr_assert_eq(gb.n, 3);

    got_t k = {0};
    subscribe_live(a, "lobby", 3, &k);
    expect_ids(&k, 1, 1);
    cr_assert_eq(publish_ok(b, "lobby", "new two"), 2);
    cr_assert_eq(publish_ok(a, "lobby", "new three"), 3);
    cr_assert(WAIT_FOR(h.n == 3 && k.n == 3, 5000), "b's got %zu, a's got %zu", h.n, k.n);
    expect_ids(&h, 1, 3);
    expect_ids(&k, 1, 3);
    cr_assert_eq(h.ends + k.ends, 0, "the newcomers stay");
    sq_hub_unsubscribe(h.sub);
    sq_hub_unsubscribe(k.sub);
    got_free(&ga);
    got_free(&gb);
    got_free(&h);
    got_free(&k);
    end(a, b);
}

Test(hub_redis, a_stream_deleted_in_a_quiet_room_is_found_within_the_reads_block_time)
{
    /* Deleted, then written by another server: neither hub publishes nor reads a history.
     * A live read that waited its whole block time (10 s) with nothing reads every room's
     * last id again. */
    redis = tr_redis_start();
    loop_start();
    sq_hub_t *a = hub_new(tr_redis_url(redis), DEF), *b = hub_new(tr_redis_url(redis), DEF);
    wait_connected(a);
    wait_connected(b);
    got_t ga = {0}, gb = {0};
    subscribe_live(a, "quiet", 0, &ga);
    subscribe_live(b, "quiet", 0, &gb);
    publish_three(a, b, "quiet", &ga, &gb);
    redisReply *r = tr_redis_cmd(redis, "DEL squall:room:quiet");
    cr_assert(r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 1);
    freeReplyObject(r);
    r = tr_redis_cmd(redis, "XADD squall:room:quiet 0-* text %s", "elsewhere");
    cr_assert(r != NULL && r->type == REDIS_REPLY_STRING && strcmp(r->str, "0-1") == 0);
    freeReplyObject(r);

    cr_assert(WAIT_FOR(ga.ends > 0 && gb.ends > 0, 15000), "the subscribers stayed: a %d, b %d",
              ga.ends, gb.ends);
    expect_reset(&ga, "a's subscriber");
    expect_reset(&gb, "b's subscriber");
    got_t h = {0};
    subscribe_live(b, "quiet", 3, &h);
    expect_ids(&h, 1, 1);
    cr_assert_str_eq(h.texts[0], "elsewhere");
    cr_assert_eq(publish_ok(a, "quiet", "again"), 2);
    cr_assert(WAIT_FOR(h.n == 2, 5000), "got %zu", h.n);
    sq_hub_unsubscribe(h.sub);
    got_free(&ga);
    got_free(&gb);
    got_free(&h);
    end(a, b);
}

Test(hub_redis, a_subscriber_that_left_while_its_history_was_out_is_freed_with_the_hub)
{
    redis = tr_redis_start();
    loop_start();
    sq_hub_t *a = hub_new_timeout(tr_redis_url(redis), DEF, 0);
    wait_connected(a);
    redisReply *r = tr_redis_cmd(redis, "CLIENT PAUSE 1500 ALL");
    freeReplyObject(r);
    got_t g = {0};
    subscribe(a, "leaving", 0, &g);
    uint64_t until = th_now_ms() + 300; /* its read is sent, and held by the pause */
    while (th_now_ms() < until)
        uv_run(&loop, UV_RUN_ONCE);
    sq_hub_unsubscribe(g.sub); /* gone before its history came back */
    end(a, NULL);              /* the loop goes first: the answer is dropped; no leak */
    cr_assert_eq(g.n, 0);
    cr_assert_eq(g.ends, 0, "told after sq_hub_unsubscribe");
}
