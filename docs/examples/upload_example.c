/* A route that takes multipart uploads as a stream: each file part's bytes are counted as
 * they arrive and never held, whatever the server's max_body_bytes. The program posts one
 * body to it through the test client and prints the answer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <squall.h>
#include <squall/testing.h>

typedef struct upload {
    sq_res_t *res;
    sq_multipart_t *mp;
    json_t *parts; /* [{"name": ..., "bytes": N}] */
    json_int_t bytes;
} upload_t;

static int on_begin(sq_multipart_t *mp, const sq_form_part_t *part, void *data)
{
    upload_t *u = data;
    u->bytes = 0;
    json_array_append_new(u->parts, json_pack("{s:s%}", "name", part->name, part->name_len));
    return 0;
}

static int on_data(sq_multipart_t *mp, const char *at, size_t len, void *data)
{
    ((upload_t *)data)->bytes += (json_int_t)len; /* write it to a file, hash it, ... */
    return 0;
}

static int on_end(sq_multipart_t *mp, void *data)
{
    upload_t *u = data;
    json_t *last = json_array_get(u->parts, json_array_size(u->parts) - 1);
    json_object_set_new(last, "bytes", json_integer(u->bytes));
    return 0;
}

static const sq_multipart_cbs_t cbs = {.part_begin = on_begin, .part_data = on_data,
                                       .part_end = on_end};

static void finish(upload_t *u, int status)
{
    if (status == 200)
        sq_res_send_json(u->res, 200, u->parts);
    else
        sq_res_send_error(u->res, status, sq_multipart_error(u->mp));
    sq_multipart_destroy(u->mp);
    json_decref(u->parts);
    free(u);
}

/* The body, piece by piece: 0 with bytes, then UV_EOF; or an error that ends it. */
static void on_piece(sq_req_t *req, int status, const char *data, size_t len, void *ud)
{
    upload_t *u = ud;
    if (status == 0) {
        ssize_t n = sq_multipart_feed(u->mp, data, len);
        if (n < 0)
            finish(u, n == UV_E2BIG ? 413 : 400);
    } else if (status == UV_EOF) {
        finish(u, sq_multipart_finish(u->mp) == 0 ? 200 : 400);
    } else {
        finish(u, status == UV_E2BIG ? 413 : 400); /* UV_ECONNRESET: nothing is sent */
    }
}

static void upload_post(sq_req_t *req, sq_res_t *res, void *data)
{
    char boundary[SQ_FORM_BOUNDARY_MAX + 1];
    if (sq_form_boundary(sq_req_header(req, "Content-Type"), boundary, sizeof(boundary)) < 0) {
        sq_res_send_error(res, 415, "multipart/form-data expected");
        return;
    }
    upload_t *u = calloc(1, sizeof(*u));
    u->res = res;
    u->parts = json_array();
    if (sq_multipart_create(&u->mp, boundary, NULL, &cbs, u) != 0) {
        finish(u, 500);
        return;
    }
    sq_req_body_read(req, on_piece, u);
}

static const sq_handler_t upload = {
    .post = upload_post,
    .stream_body = SQ_STREAM(SQ_METHOD_POST), /* its handler runs at the head */
    .stream_body_max = 10ull << 30,           /* 10 GiB, whatever max_body_bytes says */
};

int main(void)
{
    sq_app_t *app;
    sq_test_t *t;
    sq_app_create(&app);
    sq_app_route(app, "/upload", &upload, NULL);
    sq_test_create(&t, app, NULL);
    static const char body[] = "--XX\r\n"
                               "Content-Disposition: form-data; name=\"title\"\r\n\r\n"
                               "Holiday\r\n"
                               "--XX\r\n"
                               "Content-Disposition: form-data; name=\"photo\"; filename=\"a.jpg\"\r\n"
                               "Content-Type: image/jpeg\r\n\r\n"
                               "0123456789\r\n"
                               "--XX--\r\n";
    const char *headers[] = {"Content-Type: multipart/form-data; boundary=XX", NULL};
    sq_test_res_t *res;
    int rc = sq_test_request(t, "POST", "/upload", headers, body, &res);
    if (rc != 0 || res->status != 200) {
        fprintf(stderr, "upload: %s\n", rc ? sq_strerror(rc) : res->body);
        return 1;
    }
    printf("%s\n", res->body); /* [{"name":"title","bytes":7},{"name":"photo","bytes":10}] */
    sq_test_res_free(res);
    sq_test_destroy(t);
    sq_app_destroy(app);
    return 0;
}
