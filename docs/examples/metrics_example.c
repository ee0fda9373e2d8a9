/* Prometheus metrics: a few requests through the test client, then GET /metrics; prints
 * the request counters. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <squall.h>
#include <squall/testing.h>

static void item_get(sq_req_t *req, sq_res_t *res, void *data)
{
    sq_res_send_json_new(res, 200, json_pack("{s:s}", "id", sq_req_param(req, "id")));
}
static const sq_handler_t items = {.get = item_get};

int main(void)
{
    sq_app_t *app;
    sq_app_create(&app);
    sq_app_route(app, "/items/{id}", &items, NULL);
    if (sq_app_metrics(app, "/metrics", NULL) != 0)
        return 1;
    sq_test_t *t;
    if (sq_test_create(&t, app, NULL) != 0)
        return 1;
    const char *paths[] = {"/items/1", "/items/2", "/nowhere", "/metrics"};
    for (size_t i = 0; i < 4; i++) {
        sq_test_res_t *r;
        if (sq_test_request(t, "GET", paths[i], NULL, NULL, &r) != 0)
            return 1;
        if (i == 3) { /* the scrape: the request counters and their family's HELP/TYPE */
            char *text = strdup(r->body), *save = NULL;
            for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
                if (strstr(l, "squall_http_requests_total") != NULL)
                    printf("%s\n", l);
            free(text);
        }
        sq_test_res_free(r);
    }
    sq_test_destroy(t);
    sq_app_destroy(app);
    return 0;
}
