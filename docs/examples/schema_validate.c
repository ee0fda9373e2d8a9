#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <squall.h>

typedef struct item {
    const char *name;
    double price;
    bool is_offer, is_offer_null;
} item_t;

static const sq_field_t item_fields[] = {
    {.name = "name", .type = SQ_T_STRING, .bind = SQ_BIND(item_t, name)},
    {.name = "price", .type = SQ_T_NUMBER, .bind = SQ_BIND(item_t, price)},
    {.name = "is_offer", .type = SQ_T_BOOLEAN, .nullable = true, .default_json = "null",
     .bind = SQ_BIND(item_t, is_offer), .bind_null = SQ_BIND(item_t, is_offer_null)},
    {0},
};
static const sq_schema_t item_schema = {.title = "Item", .fields = item_fields};

static void check(const char *body)
{
    item_t item;
    json_t *value, *errors;
    if (sq_schema_validate_text(&item_schema, body, strlen(body), "body", &value, &errors,
                                &item) == 0) {
        printf("200 name=%s price=%g offer=%s\n", item.name, item.price,
               item.is_offer_null ? "null" : item.is_offer ? "true" : "false");
        json_decref(value);
        return;
    }
    json_t *detail = sq_schema_detail(errors); /* errors is stolen */
    char *text = json_dumps(detail, 0);
    printf("422 %s\n", text);
    free(text);
    json_decref(detail);
}

int main(void)
{
    check("{\"name\": \"Foo\", \"price\": 35.4}");
    check("{\"price\": \"abc\", \"is_offer\": \"maybe\"}");
    return 0;
}
