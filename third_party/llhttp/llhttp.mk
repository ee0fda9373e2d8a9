# llhttp's C sources come from Debian's node-llhttp package (/usr/share/llhttp, headers in
# /usr/share/include/llhttp); this fragment only compiles them into the build folder.
# Strict mode (LLHTTP_STRICT_MODE) rejects what RFC 9112 says to reject; see
# docs/http.md and tests/test_http1.c (suite smuggling) for what the glue adds.
LLHTTP_SRC ?= /usr/share/llhttp
LLHTTP_INC ?= /usr/share/include/llhttp
LLHTTP_OBJ := $(BUILD)/third_party/llhttp/llhttp.o $(BUILD)/third_party/llhttp/api.o \
              $(BUILD)/third_party/llhttp/http.o

# Strict mode: without it, a CR followed by any byte ends a header block or a chunk,
# tokens may hold spaces, and bytes after `Connection: close` are parsed.
$(BUILD)/third_party/llhttp/%.o: $(LLHTTP_SRC)/%.c Makefile third_party/llhttp/llhttp.mk \
                                 | $(BUILD)/.deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) -w -DLLHTTP_STRICT_MODE=1 -I$(LLHTTP_INC) -c $< -o $@
