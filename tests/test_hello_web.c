/* hello's everyday routes through the real binary and real peers: POST /upload
 * (multipart read as a stream: curl -F, far over --max-body), POST /form (urlencoded and
 * multipart), GET /cookie (a curl cookie jar), --cors-origin (a preflight from the origin
 * and from a foreign one), X-Request-Id on every answer; and hostile uploads. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support/app.h"
#include "support/harness.h"

/* Runs a shell command; its stdout (malloc'd). */
static char *run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *run(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t cap = 1 << 16, len = 0;
    char *out = malloc(cap);
    size_t n;
    while ((n = fread(out + len, 1, cap - len - 1, p)) > 0)
        len += n;
    out[len] = '\0';
    pclose(p);
    return out;
}

#define CURL "curl -s --max-time 30 "

Test(hello_web, a_streamed_upload_far_over_max_body_comes_back_with_its_sha256, .timeout = 60)
{
    th_app_t a = th_app_start("hello", "--max-body", "65536", NULL);
    char dir[] = "/tmp/sq-upload-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char *sha = run("head -c 20000000 /dev/urandom > %s/f && sha256sum %s/f | cut -c1-64 | "
                    "tr -d '\\n'",
                    dir, dir);
    char *got = run(CURL "-F 'note=hello there' -F 'file=@%s/f;filename=data.bin' "
                         "-F 'empty=@/dev/null;filename=empty.txt' http://127.0.0.1:%d/upload",
                    dir, a.port);
    char want[512];
    snprintf(want, sizeof(want),
             "{\"files\":[{\"field\":\"file\",\"filename\":\"data.bin\",\"size\":20000000,"
             "\"sha256\":\"%s\"},{\"field\":\"empty\",\"filename\":\"empty.txt\",\"size\":0,"
             "\"sha256\":\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"}],"
             "\"fields\":{\"note\":\"hello there\"}}",
             sha);
    cr_expect_str_eq(got, want);
    free(got);
    free(sha);
    free(run("rm -rf %s", dir));
    th_app_stop(&a);
}

Test(hello_web, uploads_that_are_not_multipart_or_too_big_are_refused, .timeout = 60)
{
    th_app_t a = th_app_start("hello", "--max-upload", "100000", NULL);
    char *got = run(CURL "-w ' %%{http_code}' -H 'Content-Type: text/plain' --data-binary x "
                         "http://127.0.0.1:%d/upload",
                    a.port);
    cr_expect_str_eq(got, "{\"detail\":\"a multipart/form-data body with a boundary is "
                          "expected\"} 415");
    free(got);
    got = run(CURL "-w ' %%{http_code}' -H 'Content-Type: multipart/form-data' --data-binary x "
                   "http://127.0.0.1:%d/upload",
              a.port);
    cr_expect_str_eq(got, "{\"detail\":\"a multipart/form-data body with a boundary is "
                          "expected\"} 400");
    free(got);
    /* a body that ends before its close delimiter */
    got = run("printf -- '--XyZ\\r\\nContent-Disposition: form-data; name=\"a\"\\r\\n\\r\\n1' | " CURL
              "-w ' %%{http_code}' -H 'Content-Type: multipart/form-data; boundary=XyZ' "
              "--data-binary @- http://127.0.0.1:%d/upload",
              a.port);
    cr_expect(strstr(got, " 400") != NULL && strstr(got, "multipart:") != NULL, "%s", got);
    free(got);
    /* over --max-upload: a Content-Length past it is 413 at once */
    got = run("head -c 200000 /dev/zero | " CURL "-w ' %%{http_code}' -F 'f=@-;filename=z' "
              "http://127.0.0.1:%d/upload",
              a.port);
    cr_expect(strstr(got, " 413") != NULL, "%s", got);
    free(got);
    /* the server goes on */
    got = run(CURL "-F a=1 http://127.0.0.1:%d/upload", a.port);
    cr_expect_str_eq(got, "{\"files\":[],\"fields\":{\"a\":\"1\"}}");
    free(got);
    th_app_stop(&a);
}

Test(hello_web, a_client_that_resets_mid_upload_leaves_the_server_serving, .timeout = 60)
{
    th_app_t a = th_app_start("hello", NULL);
    th_conn_t c;
    cr_assert_eq(th_conn_open(&c, a.port), 0);
    th_conn_sends(&c, "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; "
                      "boundary=b\r\nContent-Length: 10000000\r\n\r\n--b\r\nContent-Disposition: "
                      "form-data; name=\"f\"; filename=\"x\"\r\n\r\n");
    char junk[65536];
    memset(junk, 'j', sizeof(junk));
    for (int i = 0; i < 8; i++)
        th_conn_send(&c, junk, sizeof(junk));
    struct linger lg = {1, 0};
    setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    th_conn_close(&c);
    char *got = run(CURL "http://127.0.0.1:%d/", a.port);
    cr_expect_str_eq(got, "{\"Hello\":\"World\"}");
    free(got);
    th_app_stop(&a);
}

Test(hello_web, forms_urlencoded_and_multipart_come_back_as_json)
{
    th_app_t a = th_app_start("hello", NULL);
    char *got = run(CURL "-d 'a=1&b=x+y&c=%%C3%%BC&a=2' http://127.0.0.1:%d/form", a.port);
    cr_expect_str_eq(got, "{\"a\":\"2\",\"b\":\"x y\",\"c\":\"\xc3\xbc\"}");
    free(got);
    got = run(CURL "-F a=1 -F 'b=two words' http://127.0.0.1:%d/form", a.port);
    cr_expect_str_eq(got, "{\"a\":\"1\",\"b\":\"two words\"}");
    free(got);
    got = run(CURL "-w ' %%{http_code}' -F 'f=@/dev/null;filename=x' http://127.0.0.1:%d/form",
              a.port);
    cr_expect_str_eq(got, "{\"detail\":\"files are taken by POST /upload, not here\"} 400");
    free(got);
    got = run(CURL "-w ' %%{http_code}' -H 'Content-Type: application/json' -d '{}' "
                   "http://127.0.0.1:%d/form",
              a.port);
    cr_expect(strstr(got, " 415") != NULL, "%s", got);
    free(got);
    th_app_stop(&a);
}

Test(hello_web, the_cookie_counts_visits_in_a_curl_cookie_jar)
{
    th_app_t a = th_app_start("hello", NULL);
    char jar[] = "/tmp/sq-jar-XXXXXX";
    int fd = mkstemp(jar);
    cr_assert_geq(fd, 0);
    close(fd);
    for (int i = 1; i <= 3; i++) {
        char *got = run(CURL "-c %s -b %s http://127.0.0.1:%d/cookie", jar, jar, a.port);
        char want[32];
        snprintf(want, sizeof(want), "{\"visits\":%d}", i);
        cr_expect_str_eq(got, want);
        free(got);
    }
    char *head = run(CURL "-D - -o /dev/null http://127.0.0.1:%d/cookie", a.port);
    cr_expect_not_null(strstr(head, "Set-Cookie: visits=1; Path=/; HttpOnly; SameSite=Lax\r\n"),
                       "%s", head);
    cr_expect_not_null(strstr(head, "X-Request-Id: "), "%s", head);
    free(head);
    /* a cookie that is not a number starts again */
    char *got = run(CURL "-b 'visits=x1' http://127.0.0.1:%d/cookie", a.port);
    cr_expect_str_eq(got, "{\"visits\":1}");
    free(got);
    unlink(jar);
    th_app_stop(&a);
}

Test(hello_web, cors_origin_answers_the_origins_preflight_and_refuses_a_foreign_one)
{
    th_app_t a = th_app_start("hello", "--cors-origin", "https://app.example", "--cors-origin",
                              "http://localhost:3000", NULL);
    char *got = run(CURL "-X OPTIONS -D - -o /dev/null -H 'Origin: http://localhost:3000' "
                         "-H 'Access-Control-Request-Method: PUT' "
                         "-H 'Access-Control-Request-Headers: content-type' "
                         "http://127.0.0.1:%d/items/5 | tr -d '\\r'",
                    a.port);
    cr_expect_not_null(strstr(got, "HTTP/1.1 200 OK\n"), "%s", got);
    cr_expect_not_null(strstr(got, "\nAccess-Control-Allow-Origin: http://localhost:3000\n"), "%s",
                       got);
    cr_expect_not_null(strstr(got, "\nAccess-Control-Allow-Methods: PUT\n"), "%s", got);
    cr_expect_not_null(strstr(got, "\nAccess-Control-Allow-Headers: content-type\n"), "%s", got);
    cr_expect_not_null(strstr(got, "\nVary: Origin\n"), "%s", got);
    free(got);
    got = run(CURL "-X OPTIONS -w ' %%{http_code}' -H 'Origin: https://evil.example' "
                   "-H 'Access-Control-Request-Method: PUT' http://127.0.0.1:%d/items/5",
              a.port);
    cr_expect_str_eq(got, "Disallowed CORS origin 400");
    free(got);
    got = run(CURL "-D - -o /dev/null -H 'Origin: https://app.example' "
                   "http://127.0.0.1:%d/items/5 | tr -d '\\r'",
              a.port);
    cr_expect_not_null(strstr(got, "\nAccess-Control-Allow-Origin: https://app.example\n"), "%s",
                       got);
    free(got);
    th_app_stop(&a);
    th_app_run_t r;
    th_app_run(&r, "hello", 5000, "--cors-origin", "bad\001origin", NULL);
    cr_expect_eq(r.code, 2);
}
