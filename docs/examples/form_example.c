/* A multipart/form-data body, as a browser sends it, parsed in chunks: each part's name,
 * filename and content type, then its bytes as they come. */
#include <stdio.h>
#include <string.h>

#include <squall.h>
#include <squall/form.h>

static const char content_type[] = "multipart/form-data; boundary=\"----demo42\"";
static const char body[] =
    "------demo42\r\n"
    "Content-Disposition: form-data; name=\"title\"\r\n"
    "\r\n"
    "Holiday photos\r\n"
    "------demo42\r\n"
    "Content-Disposition: form-data; name=\"photo\"; filename=\"beach.txt\"\r\n"
    "Content-Type: text/plain\r\n"
    "\r\n"
    "sand\r\n--sea--\r\nsun\r\n"
    "------demo42--\r\n";

static int part_begin(sq_multipart_t *mp, const sq_form_part_t *part, void *data)
{
    printf("part %zu: name=%s", part->index, part->name);
    if (part->filename != NULL)
        printf(" filename=%s", part->filename);
    printf(" type=%s\n", part->content_type ? part->content_type : "text/plain");
    return 0;
}

static int part_data(sq_multipart_t *mp, const char *at, size_t len, void *data)
{
    *(size_t *)data += len;
    printf("  %zu bytes: \"", len);
    for (size_t i = 0; i < len; i++)
        printf(at[i] == '\r' ? "\\r" : at[i] == '\n' ? "\\n" : "%c", at[i]);
    printf("\"\n");
    return 0;
}

static int part_end(sq_multipart_t *mp, void *data)
{
    printf("  end (%zu bytes)\n", *(size_t *)data);
    *(size_t *)data = 0;
    return 0;
}

static void error(sq_multipart_t *mp, int status, const char *reason, void *data)
{
    fprintf(stderr, "form_example: %s (%s)\n", reason, sq_err_name(status));
}

int main(void)
{
    static const sq_multipart_cbs_t cbs = {
        .part_begin = part_begin, .part_data = part_data, .part_end = part_end, .error = error};
    char boundary[SQ_FORM_BOUNDARY_MAX + 1];
    if (sq_form_boundary(content_type, boundary, sizeof(boundary)) < 0) {
        fprintf(stderr, "form_example: no boundary in the Content-Type\n");
        return 1;
    }
    sq_multipart_opts_t opts;
    sq_multipart_opts_init(&opts);
    opts.max_parts = 10;

    size_t part_bytes = 0;
    sq_multipart_t *mp;
    if (sq_multipart_create(&mp, boundary, &opts, &cbs, &part_bytes) != 0)
        return 1;
    /* 16 bytes at a time, as a network would cut it: delimiters split anywhere */
    size_t len = strlen(body);
    for (size_t off = 0; off < len;) {
        size_t n = len - off < 16 ? len - off : 16;
        ssize_t used = sq_multipart_feed(mp, body + off, n);
        if (used < 0) {
            sq_multipart_destroy(mp);
            return 1;
        }
        off += (size_t)used;
    }
    int rc = sq_multipart_finish(mp);
    sq_multipart_destroy(mp);
    return rc == 0 ? 0 : 1;
}
