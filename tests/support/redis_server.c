/* A redis-server of the test's own (redis_server.h). */
#include "support/redis_server.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "support/harness.h"

struct tr_redis {
    pid_t pid; /* 0: not running */
    int port;
    char dir[64];
    char url[48];
};

/* Starts the process. Returns its pid. */
static pid_t spawn(tr_redis_t *r)
{
    char port[16], log[128];
    snprintf(port, sizeof(port), "%d", r->port);
    snprintf(log, sizeof(log), "%s/redis.log", r->dir);
    pid_t parent = getpid();
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "yes", "--appendfsync", "always", "--dir", r->dir, "--daemonize",
               "no", "--protected-mode", "no", (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* Waits until the server answers PING. Returns 0, or -1 when the process ended first or
 * it did not answer in time. */
static int wait_ping(tr_redis_t *r, int timeout_ms)
{
    uint64_t end = th_now_ms() + (uint64_t)timeout_ms;
    while (th_now_ms() < end) {
        int status;
        if (waitpid(r->pid, &status, WNOHANG) == r->pid) {
            r->pid = 0;
            return -1;
        }
        struct timeval tv = {.tv_sec = 1};
        redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
        if (c != NULL && c->err == 0) {
            redisReply *rep = redisCommand(c, "PING");
            int ok =
                rep != NULL && rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "PONG") == 0;
            if (rep != NULL)
                freeReplyObject(rep);
            redisFree(c);
            if (ok)
                return 0;
        } else if (c != NULL) {
            redisFree(c);
        }
        th_sleep_ms(20);
    }
    return -1;
}

tr_redis_t *tr_redis_new(int port)
{
    tr_redis_t *r = calloc(1, sizeof(*r));
    cr_assert_not_null(r);
    snprintf(r->dir, sizeof(r->dir), "/tmp/squall-redis.XXXXXX");
    cr_assert_not_null(mkdtemp(r->dir), "mkdtemp: %s", strerror(errno));
    r->port = port;
    snprintf(r->url, sizeof(r->url), "redis://127.0.0.1:%d", port);
    return r;
}

tr_redis_t *tr_redis_start(void)
{
    tr_redis_t *r = tr_redis_new(th_free_port());
    for (int attempt = 0;; attempt++) {
        r->pid = spawn(r);
        if (wait_ping(r, 10000) == 0)
            return r;
        tr_redis_kill(r);
        /* taken meanwhile by someone else: another port */
        cr_assert(attempt < 3, "redis-server did not start (see %s/redis.log)", r->dir);
        r->port = th_free_port();
        snprintf(r->url, sizeof(r->url), "redis://127.0.0.1:%d", r->port);
    }
}

int tr_redis_port(const tr_redis_t *r)
{
    return r->port;
}

const char *tr_redis_url(const tr_redis_t *r)
{
    return r->url;
}

void tr_redis_kill(tr_redis_t *r)
{
    if (r->pid <= 0)
        return;
    kill(r->pid, SIGKILL);
    while (waitpid(r->pid, NULL, 0) < 0 && errno == EINTR)
        ;
    r->pid = 0;
}

void tr_redis_restart(tr_redis_t *r)
{
    tr_redis_kill(r);
    r->pid = spawn(r);
    cr_assert_eq(wait_ping(r, 10000), 0,
                 "redis-server did not come back on port %d (see %s/redis.log)", r->port, r->dir);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw);

void tr_redis_restart_empty(tr_redis_t *r)
{
    tr_redis_kill(r);
    nftw(r->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    cr_assert_eq(mkdir(r->dir, 0700), 0, "mkdir %s: %s", r->dir, strerror(errno));
    tr_redis_restart(r);
}

redisReply *tr_redis_cmd(tr_redis_t *r, const char *fmt, ...)
{
    struct timeval tv = {.tv_sec = 5};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
    redisReply *rep = NULL;
    if (c == NULL)
        return NULL;
    if (c->err == 0 && redisSetTimeout(c, tv) == REDIS_OK) {
        va_list ap;
        va_start(ap, fmt);
        rep = redisvCommand(c, fmt, ap);
        va_end(ap);
    }
    redisFree(c);
    return rep;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

void tr_redis_stop(tr_redis_t *r)
{
    if (r == NULL)
        return;
    tr_redis_kill(r);
    nftw(r->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(r);
}
