/* gzip: the same page asked for with and without Accept-Encoding, through the test
 * client, and decoded again with zlib. Prints what each request got. */
#include <stdio.h>
#include <string.h>

#include <squall.h>
#include <squall/testing.h>
#include <zlib.h>

static char page[8192];

static void page_get(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_send(res, 200, "text/html; charset=utf-8", page, sizeof(page));
}
static const sq_handler_t pages = {.get = page_get};

static void show(sq_test_t *t, const char *accept)
{
    const char *h[] = {accept, NULL};
    sq_test_res_t *r;
    if (sq_test_request(t, "GET", "/", accept ? h : NULL, NULL, &r) != 0)
        return;
    const char *ce = sq_test_res_header(r, "Content-Encoding");
    printf("%-32s -> %d, %zu bytes, Content-Encoding: %s, Vary: %s\n",
           accept ? accept : "(no Accept-Encoding)", r->status, r->body_len, ce ? ce : "-",
           sq_test_res_header(r, "Vary"));
    if (ce != NULL) { /* what a browser does with it */
        static char plain[sizeof(page)];
        z_stream z = {0};
        inflateInit2(&z, 15 + 16);
        z.next_in = (Bytef *)r->body;
        z.avail_in = (uInt)r->body_len;
        z.next_out = (Bytef *)plain;
        z.avail_out = sizeof(plain);
        int rc = inflate(&z, Z_FINISH);
        printf("  gunzipped: %lu bytes, %s\n", z.total_out,
               rc == Z_STREAM_END && memcmp(plain, page, sizeof(page)) == 0 ? "the page" : "wrong");
        inflateEnd(&z);
    }
    sq_test_res_free(r);
}

int main(void)
{
    for (size_t i = 0; i < sizeof(page); i++)
        page[i] = "<p>squall</p>\n"[i % 14];
    sq_app_t *app;
    sq_app_create(&app);
    sq_app_route(app, "/", &pages, NULL);
    sq_gzip_opts_t gz;
    sq_gzip_opts_init(&gz); /* 1 KiB and up, level 6, text and JSON types */
    if (sq_app_gzip(app, &gz) != 0)
        return 1;
    sq_test_t *t;
    if (sq_test_create(&t, app, NULL) != 0)
        return 1;
    show(t, NULL);
    show(t, "Accept-Encoding: gzip, br");
    show(t, "Accept-Encoding: gzip;q=0, br");
    sq_test_destroy(t);
    sq_app_destroy(app);
    return 0;
}
