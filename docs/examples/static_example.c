/* A folder served under /static, asked through the test client: a page, a redirect, a
 * conditional request, a range and a path that tries to leave the folder. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <squall.h>
#include <squall/testing.h>

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f != NULL) {
        fputs(text, f);
        fclose(f);
    }
}

static void show(sq_test_t *t, const char *target, const char *header)
{
    sq_test_res_t *r;
    const char *headers[] = {header, NULL};
    if (sq_test_request(t, "GET", target, header ? headers : NULL, NULL, &r) != 0)
        return;
    const char *type = sq_test_res_header(r, "Content-Type");
    const char *loc = sq_test_res_header(r, "Location");
    printf("GET %-28s %d %s %zu bytes\n", target, r->status, loc ? loc : type ? type : "-",
           r->body_len);
    sq_test_res_free(r);
}

int main(void)
{
    char dir[] = "/tmp/static-example-XXXXXX";
    if (mkdtemp(dir) == NULL)
        return 1;
    char path[128];
    snprintf(path, sizeof(path), "%s/index.html", dir);
    write_file(path, "<h1>hi</h1>\n");
    snprintf(path, sizeof(path), "%s/app.css", dir);
    write_file(path, "body{}\n");

    sq_app_t *app;
    sq_app_create(&app);
    sq_static_opts_t o;
    sq_static_opts_init(&o);
    o.cache_control = "public, max-age=3600";
    int rc = sq_static_route(app, "/static", dir, &o);
    if (rc != 0) {
        fprintf(stderr, "static_example: %s: %s\n", dir, sq_strerror(rc));
        return 1;
    }
    sq_test_t *t;
    sq_test_create(&t, app, NULL);
    show(t, "/static", NULL);                 /* 301 to /static/ */
    show(t, "/static/", NULL);                /* index.html */
    show(t, "/static/app.css", "Range: bytes=0-3");
    sq_test_res_t *r;
    sq_test_request(t, "GET", "/static/app.css", NULL, NULL, &r);
    char inm[80];
    snprintf(inm, sizeof(inm), "If-None-Match: %s", sq_test_res_header(r, "ETag"));
    sq_test_res_free(r);
    show(t, "/static/app.css", inm);           /* 304: the client's copy is current */
    show(t, "/static/%2e%2e/etc/passwd", NULL); /* 404 */
    sq_test_destroy(t);
    sq_app_destroy(app);

    snprintf(path, sizeof(path), "%s/index.html", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/app.css", dir);
    unlink(path);
    rmdir(dir);
    return 0;
}
