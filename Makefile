# squall — one Makefile. `make run` and `make test` are the whole set-up on Debian.
#
#   make            install missing packages, build build/lib/libsquall.{a,so}, build/bin/*
#   make run        install missing packages, build, start the chat on http://127.0.0.1:8000/
#   make test       install missing packages, build, run the whole Criterion suite
#   make asan       the suite under AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/)
#   make valgrind   the suite's shutdown tests under valgrind
#   make bench      side-by-side benchmarks against peers (scripts/bench-peers.sh)
#   make bench-hub  the chat hub next to a Node.js ws chat (scripts/bench-hub.sh)
#   make soak       hello and the chat under churn, stuck clients and faults (scripts/soak.sh;
#                   SOAK_ARGS="--quick" for about a minute, see docs/reliability.md)
#   make install PREFIX=/usr/local   (libsquall.so.N, N = SQ_VERSION_ABI of version.h)
#   make version    the version and library name, as read from include/squall/version.h
#   make format | clean

PREFIX  ?= /usr/local
BUILD   ?= build
# What installs the packages (CI's first-run check swaps in a command that also copies
# llhttp's sources to a folder that does not exist when make starts).
DEPS    ?= bash scripts/deps.sh
include third_party/llhttp/llhttp.mk

OPT     ?= -O2 -g
WARN    := -Wall -Wextra -Wshadow -Wpointer-arith -Wstrict-prototypes -Wmissing-prototypes \
           -Wformat=2 -Wno-unused-parameter -Wvla -Wcast-align -Wwrite-strings -Werror
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -fPIC -fvisibility=hidden -MMD -MP $(OPT) $(SAN)
# pkg-config is asked when the Makefile is read, which on a fresh machine is before
# scripts/deps.sh has installed it: with no answer, the plain Debian flags are used.
CFLAGS_OURS := $(CFLAGS_BASE) $(WARN) -Iinclude -Ilib -Itests -I$(LLHTTP_INC) \
               $(shell pkg-config --cflags libuv jansson libssl libcrypto zlib hiredis 2>/dev/null)
LIBS    := $(or $(shell pkg-config --libs libuv jansson libssl libcrypto zlib hiredis 2>/dev/null),-luv -ljansson -lssl -lcrypto -lz -lhiredis) \
           -lpthread -lm

LIB_SRC := $(sort $(wildcard lib/*.c lib/*/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
APP_SRC := $(sort $(wildcard app/*.c))
APP_BIN := $(APP_SRC:app/%.c=$(BUILD)/bin/%)
TEST_SRC := $(sort $(wildcard tests/*.c tests/support/*.c))
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o)
BENCH_SRC := $(sort $(wildcard bench/*.c))
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bin/bench-%)

# The version lives in include/squall/version.h alone: the library's name and squall.pc
# are made from it here, so a header, a library and a .pc installed together agree.
version_num = $(shell sed -n 's/^\#define SQ_VERSION_$(1) \([0-9][0-9]*\)$$/\1/p' include/squall/version.h)
VERSION := $(call version_num,MAJOR).$(call version_num,MINOR).$(call version_num,PATCH)
SOVERSION := $(call version_num,ABI)
SONAME := libsquall.so.$(SOVERSION)
ifneq ($(words $(subst ., ,$(VERSION)) $(SOVERSION)),4)
$(error include/squall/version.h: no SQ_VERSION_MAJOR/MINOR/PATCH/ABI numbers found)
endif

STATIC := $(BUILD)/lib/libsquall.a
SHARED := $(BUILD)/lib/libsquall.so

.PHONY: all deps run test asan valgrind bench bench-hub soak fuzz install format clean version \
        build-all build-test build-run build-valgrind
# Objects built on the way to a binary (app/, bench/) are kept: no rebuild on the next make.
.SECONDARY:

# make reads the folders it looks in (llhttp's sources) and asks pkg-config once, when it
# starts, and never looks again: on a fresh machine that is before scripts/deps.sh has
# installed anything. So the targets a user types install first, then build in a second
# make that starts after the packages are there (.ci/run checks it).
all: deps
	+@$(MAKE) --no-print-directory build-all
test: deps
	+@$(MAKE) --no-print-directory build-test
run: deps
	+@$(MAKE) --no-print-directory build-run
valgrind: deps
	+@$(MAKE) --no-print-directory build-valgrind

build-all: $(STATIC) $(SHARED) $(APP_BIN) $(BENCH_BIN)

# Packages are checked once per build folder, and again when the npm manifests change;
# delete the stamp to check again.
deps: $(BUILD)/.deps
$(BUILD)/.deps: scripts/deps.sh $(wildcard tests/peers/package*.json web/package*.json)
	@mkdir -p $(BUILD)
	@$(DEPS)
	@touch $@

# Reached only when the sources are still missing after the packages step.
$(LLHTTP_SRC)/%.c:
	@echo "make: llhttp's C sources are not in $(LLHTTP_SRC) (Debian's node-llhttp;" \
	    "scripts/deps.sh installs it)" >&2
	@exit 1


# Where sq_openapi_mount finds swagger-ui-dist by default (web/package.json, installed by
# scripts/deps.sh); a program may name another folder (docs/openapi.md).
SWAGGER_UI_DIR ?= $(CURDIR)/web/node_modules/swagger-ui-dist
$(BUILD)/lib/openapi/mount.o: CFLAGS_OURS += '-DSQ_SWAGGER_UI_DIR="$(SWAGGER_UI_DIR)"'

$(BUILD)/%.o: %.c | $(BUILD)/.deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_OURS) -c $< -o $@

$(STATIC): $(LIB_OBJ) $(LLHTTP_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(SHARED): $(LIB_OBJ) $(LLHTTP_OBJ)
	@mkdir -p $(dir $@)
	$(CC) -shared -Wl,-soname,$(SONAME) $(SAN) -o $@ $^ $(LIBS)

# The chat page is built into chat (an .incbin in app/chat.c): editing it rebuilds chat.
$(BUILD)/app/chat.o: app/chat/page.html

$(BUILD)/bin/%: $(BUILD)/app/%.o $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(SAN) -o $@ $< $(STATIC) $(LIBS)

$(BUILD)/bin/bench-%: $(BUILD)/bench/%.o $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(SAN) -o $@ $< $(STATIC) $(LIBS)

$(BUILD)/bin/squall-tests: $(TEST_OBJ) $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(SAN) -o $@ $(TEST_OBJ) $(STATIC) $(LIBS) -lcriterion

# The suite: Criterion runs each test in its own process; --jobs 2 fits this machine.
TEST_ARGS ?= --jobs 2
build-test: build-all $(BUILD)/bin/squall-tests
	SQUALL_BIN=$(abspath $(BUILD)/bin) $(BUILD)/bin/squall-tests $(TEST_ARGS)

build-run: build-all
	@echo "chat: open http://127.0.0.1:8000/  (Ctrl-C stops it; build/bin/hello --port 8000 for hello)"
	$(BUILD)/bin/chat --host 127.0.0.1 --port 8000

asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer" \
	    SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined" test

# hello shut down under valgrind with connections, WebSockets and blocking work open, then
# the suites in VALGRIND_FILTER (Criterion forks a process per test: valgrind follows it).
VALGRIND_FILTER ?= @(promise|work|timer|queue|watchdog|memconn|hub|testing|validate)/*
build-valgrind: build-all $(BUILD)/bin/squall-tests
	bash scripts/valgrind-shutdown.sh
	SQUALL_BIN=$(abspath $(BUILD)/bin) valgrind --quiet --trace-children=yes --error-exitcode=9 \
	    --leak-check=full --errors-for-leak-kinds=definite,indirect \
	    $(BUILD)/bin/squall-tests --jobs 1 --filter '$(VALGRIND_FILTER)'

bench: all
	bash scripts/bench-peers.sh

# libFuzzer harnesses (fuzz/), FUZZ_SECONDS each (scripts/fuzz.sh)
fuzz: deps
	FUZZ_SECONDS=$(or $(FUZZ_SECONDS),10) bash scripts/fuzz.sh

bench-hub: all
	bash scripts/bench-hub.sh

# scripts/soak.sh with SOAK_ARGS (e.g. SOAK_ARGS="--quick --json soak.json")
SOAK_ARGS ?=
soak: all
	bash scripts/soak.sh $(SOAK_ARGS)

install: all
	install -d $(DESTDIR)$(PREFIX)/include/squall $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 include/squall.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 include/squall/*.h $(DESTDIR)$(PREFIX)/include/squall/
	install -m 644 $(STATIC) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(SHARED) $(DESTDIR)$(PREFIX)/lib/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(PREFIX)/lib/libsquall.so
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' squall.pc.in \
	    > $(DESTDIR)$(PREFIX)/lib/pkgconfig/squall.pc

# `make version`: what the Makefile read from include/squall/version.h.
version:
	@echo "squall $(VERSION), $(SONAME)"

format:
	clang-format -i include/*.h include/squall/*.h lib/*.h lib/*/*.c lib/*/*.h app/*.c tests/*.c 2>/dev/null || true

clean:
	rm -rf build build-asan

-include $(LIB_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%.d) $(APP_SRC:app/%.c=$(BUILD)/app/%.d)
