/* A folder served under a prefix (include/squall/static.h): the path checked on the loop
 * and resolved and opened beneath the root on the thread pool (root.c), the answer decided from the
 * file's validators (cond.c), and the body sent with sendfile(2) to a plain socket or
 * read into one buffer for any other connection, a piece at a time: the next piece is
 * read only once the kernel took the last one (back-pressure). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/abi.h"
#include "static/static_int.h"

#define CHUNK_MIN 4096
#define CHUNK_MAX (16u << 20)
/* Bytes one sendfile job is asked for: it returns sooner, when the socket's buffer is
 * full; this bounds how long a reader fast enough to keep it empty holds a thread. */
#define SENDFILE_MAX (64u << 20)

static const sq_static_opts_t defaults = {
    .size = sizeof(sq_static_opts_t),
    .index = "index.html",
    .chunk_bytes = 64 * 1024,
    .send_timeout_ms = 60000,
};

void sq_static_opts_init_sized(sq_static_opts_t *opts, size_t size)
{
    SQ__OPTS_INIT(opts, size, &defaults);
}

/* One request for a file, from the handler to the last byte. */
typedef struct file {
    uv_work_t work;
    uv_fs_t fs;
    uv_timer_t timer;    /* send_timeout_ms: a piece the client does not take */
    bool timer_on;       /* ...initialised (closed with the request) */
    unsigned closing;    /* closes still to complete before the request is freed */
    const sq__static_t *st;
    sq_req_t *req;
    sq_res_t *res;
    uv_loop_t *loop;
    /* the open job's answer */
    int err;             /* 0, or a negative errno */
    bool trailing;       /* the path ends in '/' (or is the root) */
    bool redirect;       /* a folder asked for without its '/' */
    int fd;              /* the file, or -1 */
    uint64_t size;
    int64_t sec;
    long nsec;
    const char *name;    /* what names the type: path, or the index */
    /* the body */
    bool use_sendfile;   /* the connection is a plain socket */
    bool bounce;         /* the socket was full: the next piece goes through buf */
    uv_os_fd_t sock;     /* a duplicate of the socket (below), or -1 */
    uint64_t off, left;
    size_t asked;        /* bytes the sendfile job in flight was asked for */
    size_t sent;         /* ...and sent */
    int sf_err;          /* ...and how it stopped short: 0 (the file ended), UV_EAGAIN
                            (the socket is full), or the socket's error */
    size_t inflight;     /* bytes of buf being written */
    char *buf;
    char *listing;       /* a folder's HTML list (opts.listing), or NULL */
    size_t listing_len;
    char path[];         /* relative to the root: "", "a/b.txt", "css/" */
} file_t;

/* The thread pool's part: resolve, open, stat; a folder's index, or its list. */
static void open_work(uv_work_t *w)
{
    file_t *f = sq__container_of(w, file_t, work);
    const sq__static_t *st = f->st;
    struct stat sb;
    int fd = sq__static_open(st, f->path, &sb);
    if (fd >= 0 && S_ISDIR(sb.st_mode)) {
        int dirfd = fd;
        fd = -ENOENT;
        if (!f->trailing) {
            close(dirfd);
            f->redirect = true;
            return;
        }
        if (st->index != NULL) {
            char p[PATH_MAX];
            if (snprintf(p, sizeof(p), "%s%s", f->path, st->index) >= (int)sizeof(p))
                fd = -ENAMETOOLONG;
            else
                fd = sq__static_open(st, p, &sb);
            f->name = st->index;
        }
        if (fd == -ENOENT && st->listing > 0) {
            f->err = sq__static_list(st, f->path, dirfd, &f->listing, &f->listing_len);
            return;
        }
        close(dirfd);
    }
    if (fd >= 0 && !S_ISREG(sb.st_mode)) { /* a folder as index, a FIFO, a device */
        close(fd);
        fd = -ENOENT;
    }
    if (fd < 0) {
        f->err = fd;
        return;
    }
    f->fd = fd;
    f->size = (uint64_t)sb.st_size;
    f->sec = sb.st_mtim.tv_sec;
    f->nsec = sb.st_mtim.tv_nsec;
}

/* ---- the end of a request ---- */

static void file_release(file_t *f)
{
    if (--f->closing == 0)
        free(f);
}

static void file_closed(uv_fs_t *req)
{
    uv_fs_req_cleanup(req);
    file_release(sq__container_of(req, file_t, fs));
}

static void timer_closed(uv_handle_t *h)
{
    file_release(sq__container_of((uv_timer_t *)h, file_t, timer));
}

/* Lets the file go (closed on the thread pool) and the timer, then frees the request. */
static void file_free(file_t *f)
{
    if (f->sock >= 0)
        close(f->sock); /* our duplicate: the connection keeps its own */
    free(f->buf);
    f->buf = NULL;
    free(f->listing);
    f->listing = NULL;
    f->closing = 1; /* this call's */
    if (f->timer_on) {
        f->closing++;
        uv_close((uv_handle_t *)&f->timer, timer_closed);
    }
    if (f->fd >= 0) {
        f->closing++;
        if (uv_fs_close(f->loop, &f->fs, f->fd, file_closed) != 0) {
            close(f->fd);
            f->closing--;
        }
    }
    file_release(f);
}

/* A piece waited send_timeout_ms for the client to take it: the connection closes, as
 * a failed write would close it. The pending write then completes with UV_ECANCELED
 * (on_written, on_head_out), which ends the response. */
static void on_stall(uv_timer_t *t)
{
    file_t *f = sq__container_of(t, file_t, timer);
    sq__exch_t *x = f->res->req;
    if (x->ops->open(x))
        x->ops->fail(x);
}

/* Arms the stall timer for a write just queued (none when send_timeout_ms is 0). */
static void watch_write(file_t *f)
{
    if (f->timer_on)
        uv_timer_start(&f->timer, on_stall, f->st->send_timeout_ms, 0);
}

/* The body is whole (or the client went): the response ends. */
static void finish(file_t *f)
{
    sq_res_end(f->res); /* UV_ECANCELED when the client went: released all the same */
    file_free(f);
}

/* The body cannot be completed (the file shrank, a read failed): the connection closes. */
static void fail(file_t *f)
{
    sq__res_abort(f->res);
    file_free(f);
}

/* ---- the body ---- */

static void pump(file_t *f);

/* The socket the response's bytes go to, when nothing stands between (not memory, not
 * TLS) and nothing queued would be overtaken. */
static int direct_fd(file_t *f, uv_os_fd_t *fd)
{
    sq__exch_t *x = f->res->req;
    if (!x->ops->open(x))
        return UV_ECANCELED;
    return sq__conn_direct_fd(x->conn, fd);
}

static void on_written(sq_res_t *res, int status, void *data)
{
    file_t *f = data;
    if (f->timer_on)
        uv_timer_stop(&f->timer);
    if (status < 0) {
        finish(f);
        return;
    }
    f->off += f->inflight;
    f->left -= f->inflight;
    f->inflight = 0;
    f->bounce = false;
    pump(f);
}

static void on_read(uv_fs_t *req)
{
    file_t *f = sq__container_of(req, file_t, fs);
    ssize_t r = req->result;
    uv_fs_req_cleanup(req);
    if (sq_req_is_aborted(f->req)) {
        finish(f);
        return;
    }
    if (r <= 0) { /* 0: the file ended before its size (truncated meanwhile) */
        fail(f);
        return;
    }
    f->inflight = (size_t)r;
    /* the buffer is borrowed until on_written: one piece in flight at a time */
    if (sq_res_write_ref(f->res, f->buf, (size_t)r, NULL, NULL, on_written, f) != 0)
        finish(f); /* the client went, or out of memory (the connection closed) */
    else
        watch_write(f);
}

/* The thread pool's part of sendfile: as much as the socket takes at once. Not
 * uv_fs_sendfile: libuv 1.44 tries copy_file_range first and, refused for a socket,
 * falls back to reading and writing 8 KiB at a time with poll(2) on the socket when it is
 * full — a client that stops reading would hold a thread of the pool. sendfile(2) on
 * the non-blocking socket returns instead (EAGAIN). */
static void sendfile_work(uv_work_t *w)
{
    file_t *f = sq__container_of(w, file_t, work);
    off_t off = (off_t)f->off;
    size_t want = f->asked;
    f->sent = 0;
    f->sf_err = 0;
    while (want > 0) {
        ssize_t r = sendfile(f->sock, f->fd, &off, want);
        if (r > 0) {
            f->sent += (size_t)r;
            want -= (size_t)r;
        } else if (r == 0) {
            break; /* the file ended before its size: it shrank */
        } else if (errno != EINTR) {
            f->sf_err = errno == EWOULDBLOCK ? UV_EAGAIN : -errno;
            break;
        }
    }
}

static void on_sent(uv_work_t *w, int status)
{
    file_t *f = sq__container_of(w, file_t, work);
    if (sq_req_is_aborted(f->req)) {
        finish(f);
        return;
    }
    f->off += f->sent;
    f->left -= f->sent;
    if (f->sent == f->asked) {
        pump(f);
    } else if (f->sf_err == UV_EAGAIN) {
        /* the socket's buffer is full: the next piece goes through the write queue,
         * which waits for the socket to take it; then sendfile again */
        f->bounce = true;
        pump(f);
    } else {
        fail(f); /* the file ended early (shrank), or the socket failed */
    }
}

/* Sends the next piece: sendfile while the socket takes it, else a read into buf. */
static void pump(file_t *f)
{
    if (f->left == 0 || sq_req_is_aborted(f->req)) {
        finish(f);
        return;
    }
    int rc;
    if (f->use_sendfile && !f->bounce) {
        uv_os_fd_t sock;
        rc = direct_fd(f, &sock);
        if (rc == UV_ECANCELED) {
            finish(f);
            return;
        }
        /* A duplicate, so that the descriptor sendfile writes to on the thread pool
         * stays this socket even if the connection closes (and its number is reused)
         * meanwhile. It shares the socket's O_NONBLOCK: sendfile never waits. */
        if (rc == 0 && f->sock < 0 && (f->sock = fcntl(sock, F_DUPFD_CLOEXEC, 3)) < 0)
            rc = UV_EMFILE;
        if (rc == 0) {
            f->asked = f->left < SENDFILE_MAX ? (size_t)f->left : SENDFILE_MAX;
            rc = uv_queue_work(f->loop, &f->work, sendfile_work, on_sent);
            if (rc == 0)
                return;
        }
        if (rc != UV_EBUSY)
            f->use_sendfile = false; /* no descriptor to spare: read and write from now on */
    }
    if (f->buf == NULL && (f->buf = malloc(f->st->chunk_bytes)) == NULL) {
        fail(f);
        return;
    }
    size_t n = f->left < f->st->chunk_bytes ? (size_t)f->left : f->st->chunk_bytes;
    uv_buf_t b = uv_buf_init(f->buf, (unsigned)n);
    rc = uv_fs_read(f->loop, &f->fs, f->fd, &b, 1, (int64_t)f->off, on_read);
    if (rc != 0)
        fail(f);
}

/* The head has left: the socket is ours until the body is sent. */
static void on_head_out(sq_res_t *res, int status, void *data)
{
    file_t *f = data;
    if (f->timer_on)
        uv_timer_stop(&f->timer);
    if (status < 0)
        finish(f);
    else
        pump(f);
}

/* ---- the answer ---- */

static void send_redirect(file_t *f)
{
    /* RFC 9110 §15.4.2: the same target with the '/' a folder's relative links need;
     * the raw target, so what the client sent (escapes, the query) comes back as sent */
    const char *target = sq_req_target(f->req);
    const char *q = strchr(target, '?');
    size_t n = q ? (size_t)(q - target) : strlen(target);
    char *loc = malloc(strlen(target) + 2);
    if (loc == NULL) {
        sq_res_send_error(f->res, 500, NULL);
        return;
    }
    memcpy(loc, target, n);
    loc[n] = '/';
    strcpy(loc + n + 1, q ? q : "");
    if (sq_res_redirect(f->res, 301, loc) == UV_EINVAL)
        sq_res_send_error(f->res, 404, NULL);
    free(loc);
}

static void answer(file_t *f)
{
    sq_req_t *req = f->req;
    sq_res_t *res = f->res;
    const sq__static_t *st = f->st;
    sq__validators_t v;
    sq__static_validators(&v, f->size, f->sec, f->nsec);
    int rc = sq_res_header(res, "ETag", v.etag);
    if (rc == 0)
        rc = sq_res_header(res, "Last-Modified", v.last_modified);
    if (rc == 0 && st->cache_control != NULL)
        rc = sq_res_header(res, "Cache-Control", st->cache_control);
    if (rc != 0) {
        sq_res_send_error(res, 500, NULL);
        file_free(f);
        return;
    }
    int pre = sq__static_preconditions(req, &v, true);
    if (pre == 304) {
        sq_res_send(res, 304, NULL, NULL, 0); /* §15.4.5: with ETag and Last-Modified */
        file_free(f);
        return;
    }
    if (pre != 0) {
        sq_res_send_error(res, pre, NULL);
        file_free(f);
        return;
    }
    sq_res_header(res, "Accept-Ranges", "bytes");
    bool head = sq_req_method_id(req) == SQ_METHOD_HEAD;
    uint64_t first = 0, len = f->size;
    int status = 200;
    char cr[80];
    /* §14.2: Range is for GET only; a HEAD gets the whole file's headers */
    int r = head ? 0 : sq__static_range(req, &v, &first, &len);
    if (r == 416) {
        snprintf(cr, sizeof(cr), "bytes */%" PRIu64, f->size); /* §14.4 */
        sq_res_header(res, "Content-Range", cr);
        sq_res_send_error(res, 416, NULL);
        file_free(f);
        return;
    }
    if (r == 206) {
        status = 206;
        snprintf(cr, sizeof(cr), "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, first,
                 first + len - 1, f->size);
        sq_res_header(res, "Content-Range", cr);
    }
    rc = sq__res_start_length(res, status, sq__static_type(st, f->name), len);
    if (rc != 0) {
        finish(f); /* the client went, or out of memory: sq_res_end releases res */
        return;
    }
    f->off = first;
    f->left = len;
    if (head || len == 0) {
        finish(f);
        return;
    }
    if (st->send_timeout_ms > 0 && uv_timer_init(f->loop, &f->timer) == 0)
        f->timer_on = true;
    uv_os_fd_t sock;
    rc = st->no_sendfile ? UV_ENOTSUP : direct_fd(f, &sock);
    f->use_sendfile = rc == 0 || rc == UV_EBUSY; /* busy: the head waits in the queue */
    if (!f->use_sendfile) {
        pump(f); /* the pieces queue behind the head */
        return;
    }
    /* an empty write whose completion says the head has left */
    if (sq_res_write(res, "", 0, on_head_out, f) != 0)
        finish(f);
    else
        watch_write(f);
}

static void open_done(uv_work_t *w, int status)
{
    file_t *f = sq__container_of(w, file_t, work);
    if (f->err == 0 && status < 0)
        f->err = status;
    if (f->err != 0) {
        /* gone, refused, a link out of the root (EXDEV), a name too long, not a folder
         * on the way (ENOTDIR), a loop of links: all are "no such file" to the client */
        int code = 404;
        if (f->err == -EACCES)
            code = 403;
        else if (f->err == -EMFILE || f->err == -ENFILE || f->err == -ENOMEM ||
                 f->err == -EIO)
            code = 500;
        sq_res_send_error(f->res, code, NULL);
        file_free(f);
        return;
    }
    if (f->redirect) {
        send_redirect(f);
        file_free(f);
        return;
    }
    if (f->listing != NULL) {
        sq_res_send(f->res, 200, "text/html; charset=utf-8", f->listing, f->listing_len);
        file_free(f);
        return;
    }
    answer(f);
}

static void file_get(sq_req_t *req, sq_res_t *res, void *data)
{
    const sq__static_t *st = data;
    const char *rel = sq_req_param(req, "path");
    if (rel == NULL)
        rel = "";
    size_t n = strlen(rel);
    if (!sq__static_target_ok(sq_req_target(req)) || !sq__static_path_ok(st, rel) || n >= PATH_MAX / 2) {
        sq_res_send_error(res, 404, NULL);
        return;
    }
    file_t *f = calloc(1, sizeof(*f) + n + 1);
    if (f == NULL) {
        sq_res_send_error(res, 500, NULL);
        return;
    }
    memcpy(f->path, rel, n + 1);
    f->st = st;
    f->req = req;
    f->res = res;
    f->loop = sq_req_loop(req);
    f->fd = -1;
    f->sock = -1;
    f->name = f->path;
    f->trailing = n == 0 || rel[n - 1] == '/';
    if (uv_queue_work(f->loop, &f->work, open_work, open_done) != 0) {
        free(f);
        sq_res_send_error(res, 500, NULL);
    }
}

/* GET <prefix>: the folder itself, asked for without its '/'. */
static void prefix_get(sq_req_t *req, sq_res_t *res, void *data)
{
    file_t f = {.req = req, .res = res};
    send_redirect(&f);
}

static const sq_handler_t file_handler = {.get = file_get};
static const sq_handler_t prefix_handler = {.get = prefix_get};

/* ---- the route ---- */

static void static_free(void *p)
{
    sq__static_t *st = p;
    if (st->rootfd >= 0)
        close(st->rootfd);
    free(st->root);
    free(st->prefix);
    free(st->index);
    free(st->cache_control);
    if (st->types != NULL)
        for (size_t i = 0; st->types[i] != NULL; i++)
            free(st->types[i]);
    free(st->types);
    free(st);
}

static bool prefix_ok(const char *prefix)
{
    size_t n = strlen(prefix);
    if (n == 0)
        return true;
    if (prefix[0] != '/' || prefix[n - 1] == '/' || n > 1024)
        return false;
    for (const char *p = prefix; *p; p++)
        if (strchr("{}*%?#", *p) != NULL || (unsigned char)*p <= ' ' || *p == 0x7f)
            return false;
    return true;
}

static bool index_ok(const char *index)
{
    return index == NULL || (*index != '\0' && strchr(index, '/') == NULL &&
                             strcmp(index, ".") != 0 && strcmp(index, "..") != 0);
}

int sq_static_route(sq_app_t *app, const char *prefix, const char *root,
                    const sq_static_opts_t *opts)
{
    sq_static_opts_t o = defaults;
    if (app == NULL || prefix == NULL || root == NULL)
        return UV_EINVAL;
    if (opts != NULL) {
        int rc = SQ__OPTS_IN(&o, opts);
        if (rc != 0)
            return rc;
    }
    size_t ntypes = 0;
    if (o.types != NULL) {
        while (o.types[ntypes] != NULL)
            ntypes++;
        if (ntypes % 2 != 0)
            return UV_EINVAL;
        for (size_t i = 0; i < ntypes; i += 2)
            if (o.types[i][0] == '\0' || strchr(o.types[i], '/') != NULL ||
                !sq__field_ok(o.types[i + 1], false))
                return UV_EINVAL;
    }
    if (!prefix_ok(prefix) || !index_ok(o.index) || o.chunk_bytes < CHUNK_MIN ||
        o.chunk_bytes > CHUNK_MAX || !sq__field_value_ok(o.cache_control))
        return UV_EINVAL;

    char real[PATH_MAX];
    if (realpath(root, real) == NULL)
        return -errno;
    int fd = open(real, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    sq__static_t *st = calloc(1, sizeof(*st));
    if (st == NULL) {
        close(fd);
        return UV_ENOMEM;
    }
    st->rootfd = fd;
    st->root = strdup(real);
    st->prefix = strdup(prefix);
    st->root_len = strlen(real);
    st->index = o.index ? strdup(o.index) : NULL;
    st->cache_control = o.cache_control ? strdup(o.cache_control) : NULL;
    st->chunk_bytes = o.chunk_bytes;
    st->dotfiles = o.dotfiles != 0;
    st->no_sendfile = o.no_sendfile != 0;
    st->send_timeout_ms = o.send_timeout_ms;
    st->listing = o.listing;
    bool oom = st->root == NULL || st->prefix == NULL || (o.index && st->index == NULL) ||
               (o.cache_control && st->cache_control == NULL);
    if (ntypes > 0 && !oom) {
        st->types = calloc(ntypes + 1, sizeof(char *));
        oom = st->types == NULL;
        for (size_t i = 0; !oom && i < ntypes; i++)
            oom = (st->types[i] = strdup(o.types[i])) == NULL;
    }
    if (oom) {
        static_free(st);
        return UV_ENOMEM;
    }
    size_t plen = strlen(prefix);
    char *pattern = malloc(plen + sizeof("/{path:path}"));
    if (pattern == NULL) {
        static_free(st);
        return UV_ENOMEM;
    }
    memcpy(pattern, prefix, plen);
    memcpy(pattern + plen, "/{path:path}", sizeof("/{path:path}"));
    int rc = sq__app_keep(app, st, static_free); /* frees st on failure */
    if (rc == 0 && plen > 0)
        rc = sq_app_route(app, prefix, &prefix_handler, st);
    if (rc == 0)
        rc = sq_app_route(app, pattern, &file_handler, st);
    free(pattern);
    return rc;
}
