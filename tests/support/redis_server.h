/* A redis-server of the test's own: on a free 127.0.0.1 port, with a data folder of its
 * own (an append-only file synced at each write, no snapshots), so that a restart on the
 * same port and folder keeps what was acknowledged.
 *
 *     tr_redis_t *r = tr_redis_start();           // waits until it answers PING
 *     ... opts.redis_url = tr_redis_url(r) ...
 *     tr_redis_kill(r);                           // SIGKILL, reaped
 *     tr_redis_restart(r);                        // same port and folder, waits for PING
 *     tr_redis_restart_empty(r);                  // same port, its data gone
 *     tr_redis_stop(r);                           // kills, removes the folder, frees
 *
 * Calls that fail fail the test (cr_assert): on the test's thread only. The server dies
 * with the test's process (PR_SET_PDEATHSIG). */
#ifndef SQUALL_TESTS_REDIS_SERVER_H
#define SQUALL_TESTS_REDIS_SERVER_H

#include <hiredis/hiredis.h>

typedef struct tr_redis tr_redis_t;

/* Starts a server on a free port (tried again on another port if the first was taken). */
tr_redis_t *tr_redis_start(void);
/* Prepares a server for `port` without starting it (tr_redis_restart starts it): for a
 * hub that is made before its Redis is there. */
tr_redis_t *tr_redis_new(int port);
int tr_redis_port(const tr_redis_t *r);
/* "redis://127.0.0.1:PORT" */
const char *tr_redis_url(const tr_redis_t *r);
/* SIGKILL, then waits for the process to end. Nothing if it is not running. */
void tr_redis_kill(tr_redis_t *r);
/* Starts it again on the same port and folder and waits for PING (10 s). */
void tr_redis_restart(tr_redis_t *r);
/* Kills it, empties its folder and starts it again on the same port: a Redis restarted
 * without its data (no append-only file). Waits for PING (10 s). */
void tr_redis_restart_empty(tr_redis_t *r);
/* A command on a connection of the test's own (hiredis' blocking API, 5 s timeout), as
 * redisCommand's format. Returns the reply (freeReplyObject it) or NULL. */
redisReply *tr_redis_cmd(tr_redis_t *r, const char *fmt, ...);
/* Kills it, removes its folder, frees r. NULL: nothing. */
void tr_redis_stop(tr_redis_t *r);

#endif
