/* The form layer's private definitions (lib/form): the parsers' structs and the helpers
 * both use. This layer calls only lib/core. */
#ifndef SQUALL_FORM_INT_H
#define SQUALL_FORM_INT_H

#include "internal.h"
#include "squall/form.h"

/* A callback's answer turned into the parser's: 0 go on, 1 pause, < 0 abort. */
static inline int sq__form_cb_rc(int rc)
{
    return rc < 0 ? rc : rc > 0 ? 1 : 0;
}

/* ---- urlencoded (urlenc.c) ---- */

typedef enum {
    SQ__UE_NAME,  /* in a piece's name */
    SQ__UE_VALUE, /* past its first '=' */
} sq__ue_part_t;

struct sq_urlenc {
    sq_urlenc_opts_t opts;
    sq_urlenc_field_cb cb;
    void *data;
    sq__buf_t name, value; /* decoded so far, with room for the NUL */
    uint64_t total;        /* bytes consumed */
    size_t fields;         /* delivered */
    sq__ue_part_t part;
    bool started;        /* the current piece has a byte ('=' included) */
    unsigned char pct;   /* 0; 1 after '%'; 2 after '%' and one hex digit */
    unsigned char pct_c; /* that digit, as written */
    int err;             /* the first error, kept */
    const char *reason;
};

/* ---- multipart (multipart.c) ---- */

typedef enum {
    SQ__MP_PREAMBLE, /* looking for the first delimiter, ignoring bytes */
    SQ__MP_AFTER,    /* just past "--boundary": "--", padding or CRLF follows */
    SQ__MP_DASH2,    /* past "--boundary-" */
    SQ__MP_PADDING,  /* transport padding (RFC 2046 §5.1.1) */
    SQ__MP_LF,       /* past the CR ending a boundary line */
    SQ__MP_HEADERS,  /* a part's header block */
    SQ__MP_DATA,     /* a part's content, looking for the delimiter */
    SQ__MP_EPILOGUE, /* past the close delimiter: ignored */
    SQ__MP_ERROR,
} sq__mp_state_t;

struct sq_multipart {
    sq_multipart_opts_t opts;
    sq_multipart_cbs_t cbs;
    void *data;
    sq__mp_state_t state;
    bool in_preamble; /* the delimiter being read is the first one */
    bool paused;
    int err;
    const char *reason;
    size_t held;       /* bytes of the delimiter matched at the end of the last feed: they
                          are delim[0..held), so nothing else is kept */
    uint64_t total;    /* bytes consumed */
    size_t parts;      /* parts begun */
    size_t part_bytes; /* data of the current part so far */
    bool part_is_file;
    size_t line_start;         /* offset in hdr of the header line being read */
    size_t nlines;             /* header lines of the current part (continuations excluded) */
    sq__buf_t hdr;             /* the current part's header block */
    sq__buf_t strs;            /* its name and filename, unquoted */
    sq_form_header_t *headers; /* the current part's header lines */
    size_t headers_cap;
    sq_form_part_t part;
    size_t dlen;             /* strlen(delim): 4 + the boundary's length */
    unsigned char skip[256]; /* Horspool's shift for the byte under the window's end */
    char delim[4 + SQ_FORM_BOUNDARY_MAX + 1]; /* "\r\n--" boundary */
};

#endif
