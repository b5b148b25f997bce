# fota: build, test, benchmark and demo.
#   make            build every program into $(BUILD)/ (default build/)
#   make check      install missing Debian packages, build, run every test
#   make asan       the same suite under AddressSanitizer + UBSan (build-asan/)
#   make bench      benchmarks against the peers (uses ../shared/bench when present)
#   make demo       end-to-end demo on local defaults
#   make CC=clang   any target with clang instead of gcc
#
# Every object is built with -Wall -Wextra -Werror under gcc and clang alike.

BUILD   ?= build
CC      ?= cc
SAN     ?=
OPT     ?= -O2

PKG_LIBS := libcrypto libzstd libarchive jansson libdivsufsort
PKG_CFLAGS := $(shell pkg-config --cflags $(PKG_LIBS) 2>/dev/null)
PKG_LDLIBS := $(shell pkg-config --libs $(PKG_LIBS) 2>/dev/null)

WARN    := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wvla -Wno-unused-parameter -Wno-format-truncation
CFLAGS  ?= $(OPT) -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 $(WARN) -Iformats/include $(PKG_CFLAGS) -pthread -MMD -MP
LDLIBS  += $(PKG_LDLIBS) -lbz2 -lpthread -lm

ifeq ($(SAN),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

LIB_SRCS  := $(sort $(wildcard formats/*.c))
LIB_OBJS  := $(LIB_SRCS:%.c=$(BUILD)/%.o)
LIB       := $(BUILD)/libfota.a

PACK_SRCS   := $(sort $(wildcard packager/*.c))
VERIFY_SRCS := $(sort $(wildcard verifier/*.c))
DELTA_SRCS  := $(sort $(wildcard tools/*.c))
UNIT_SRCS   := $(sort $(wildcard tests/unit/*.c))

PROGS := $(BUILD)/fota-pack $(BUILD)/fota-verify
ifneq ($(DELTA_SRCS),)
PROGS += $(BUILD)/fota-delta
endif

.PHONY: all check asan bench demo deps clean fuzz
all: $(PROGS) $(BUILD)/unit-tests

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/fota-pack: $(PACK_SRCS:%.c=$(BUILD)/%.o) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/fota-verify: $(VERIFY_SRCS:%.c=$(BUILD)/%.o) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/fota-delta: $(DELTA_SRCS:%.c=$(BUILD)/%.o) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/unit-tests: $(UNIT_SRCS:%.c=$(BUILD)/%.o) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcunit

deps:
	@bash ci/install-deps.sh

check: deps
	@$(MAKE) --no-print-directory all
	@bash tests/run.sh $(BUILD)

asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan SAN=1 OPT=-O1 all
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		bash tests/run.sh build-asan

bench: deps
	@$(MAKE) --no-print-directory all
	@bash bench/run.sh $(BUILD)

demo: deps
	@$(MAKE) --no-print-directory all
	@bash ci/demo.sh $(BUILD)

clean:
	rm -rf build build-asan build-fuzz

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
