/* The root of a served folder: what a request's path may hold, opening beneath the root
 * (a symbolic link is followed only while it stays under it), and a folder's list. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "static/static_int.h"

/* ---- the path ---- */

/* RFC 3986 §2.4: a slash, backslash or NUL written as %XX is data, not a separator;
 * decoded, it would let a segment reach outside its folder or end the name early. */
bool sq__static_target_ok(const char *target)
{
    for (const char *p = target; *p != '\0' && *p != '?'; p++) {
        if (*p == '\\')
            return false;
        if (*p == '%' && p[1] != '\0') {
            char a = p[1], b = (char)(p[2] | 0x20);
            if ((a == '2' && b == 'f') || (a == '5' && b == 'c') || (a == '0' && p[2] == '0'))
                return false;
        }
    }
    return true;
}

/* The decoded path under the prefix: segments that are neither empty (an absolute path,
 * "//"), "." nor "..", with no backslash, and no leading '.' unless dotfiles are served.
 * The last segment may be empty: a folder's trailing '/'. */
bool sq__static_path_ok(const sq__static_t *st, const char *rel)
{
    const char *p = rel;
    while (*p != '\0') {
        const char *end = strchr(p, '/');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == 0)
            return false;
        if (p[0] == '.' && (n == 1 || (n == 2 && p[1] == '.') || !st->dotfiles))
            return false;
        if (memchr(p, '\\', n) != NULL)
            return false;
        if (end == NULL)
            break;
        p = end + 1;
    }
    return true;
}

static bool under_root(const sq__static_t *st, const char *real)
{
    if (st->root_len == 1)
        return true; /* the root is "/" */
    return strncmp(real, st->root, st->root_len) == 0 &&
           (real[st->root_len] == '\0' || real[st->root_len] == '/');
}

/* Opens rel beneath the root, following symbolic links only while they stay under it.
 * openat2's RESOLVE_BENEATH does it in one race-free call, but refuses every absolute
 * link and is missing before Linux 5.6: then the resolved path is checked against the
 * root's (realpath), and opened with no link left to follow. Runs on the thread pool.
 * Returns the descriptor or a negative errno. */
static int resolve_open(const sq__static_t *st, const char *rel)
{
    struct open_how how = {
        .flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, /* a FIFO must not block */
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
    };
    long fd = syscall(SYS_openat2, st->rootfd, *rel ? rel : ".", &how, sizeof(how));
    if (fd >= 0)
        return (int)fd;
    if (errno != EXDEV && errno != ENOSYS && errno != EPERM)
        return -errno;
    char full[PATH_MAX], real[PATH_MAX];
    if (snprintf(full, sizeof(full), "%s/%s", st->root, rel) >= (int)sizeof(full))
        return -ENAMETOOLONG;
    if (realpath(full, real) == NULL)
        return -errno;
    if (!under_root(st, real))
        return -EXDEV;
    int fd2 = open(real, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | O_NOFOLLOW);
    return fd2 >= 0 ? fd2 : -errno;
}

int sq__static_open(const sq__static_t *st, const char *rel, struct stat *sb)
{
    int fd = resolve_open(st, rel);
    if (fd >= 0 && fstat(fd, sb) != 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool html_escaped(sq__buf_t *b, const char *s)
{
    bool ok = true;
    for (; *s && ok; s++) {
        switch (*s) {
        case '&': ok = sq__buf_append(b, "&amp;", 5) == 0; break;
        case '<': ok = sq__buf_append(b, "&lt;", 4) == 0; break;
        case '>': ok = sq__buf_append(b, "&gt;", 4) == 0; break;
        case '"': ok = sq__buf_append(b, "&quot;", 6) == 0; break;
        case '\'': ok = sq__buf_append(b, "&#39;", 5) == 0; break;
        default: ok = sq__buf_append(b, s, 1) == 0;
        }
    }
    return ok;
}

/* RFC 3986 §2.1: everything but the unreserved characters as %XX, so no name reads as
 * a scheme ("a:b"), a query or a fragment; a folder's trailing '/' is kept. */
static bool href_encoded(sq__buf_t *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    bool ok = true;
    for (; *s && ok; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            strchr("-._~", c) != NULL || (c == '/' && s[1] == '\0')) {
            ok = sq__buf_append(b, s, 1) == 0;
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            ok = sq__buf_append(b, e, 3) == 0;
        }
    }
    return ok;
}

int sq__static_list(const sq__static_t *st, const char *rel, int dirfd, char **out,
                    size_t *out_len)
{
    DIR *d = fdopendir(dirfd);
    if (d == NULL) {
        int err = -errno;
        close(dirfd);
        return err;
    }
    char **names = calloc(st->listing, sizeof(char *));
    size_t n = 0;
    int err = names ? 0 : -ENOMEM;
    struct dirent *e;
    while (err == 0 && n < st->listing && (e = readdir(d)) != NULL) {
        const char *nm = e->d_name;
        if (nm[0] == '.' && (!st->dotfiles || nm[1] == '\0' || strcmp(nm, "..") == 0))
            continue;
        bool is_dir = e->d_type == DT_DIR;
        struct stat sb;
        if ((e->d_type == DT_LNK || e->d_type == DT_UNKNOWN) &&
            fstatat(dirfd, nm, &sb, 0) == 0) /* the link's target */
            is_dir = S_ISDIR(sb.st_mode);
        size_t len = strlen(nm);
        if ((names[n] = malloc(len + 2)) == NULL) {
            err = -ENOMEM;
            break;
        }
        memcpy(names[n], nm, len);
        memcpy(names[n] + len, is_dir ? "/" : "", is_dir ? 2 : 1);
        n++;
    }
    closedir(d);
    if (err == 0)
        qsort(names, n, sizeof(char *), cmp_names);
    sq__buf_t b = {0};
#define LIT(lit) (sq__buf_append(&b, (lit), sizeof(lit) - 1) == 0)
    bool ok = err == 0 &&
              LIT("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of ") &&
              html_escaped(&b, st->prefix) && LIT("/") && html_escaped(&b, rel) &&
              LIT("</title></head>\n<body><h1>Index of ") && html_escaped(&b, st->prefix) &&
              LIT("/") && html_escaped(&b, rel) && LIT("</h1>\n<ul>\n");
    for (size_t i = 0; i < n && ok; i++)
        ok = LIT("<li><a href=\"") && href_encoded(&b, names[i]) && LIT("\">") &&
             html_escaped(&b, names[i]) && LIT("</a></li>\n");
    ok = ok && LIT("</ul></body></html>\n");
#undef LIT
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    if (!ok) {
        sq__buf_free(&b);
        return err ? err : -ENOMEM;
    }
    *out = b.base;
    *out_len = b.len;
    return 0;
}
