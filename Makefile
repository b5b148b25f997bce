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

PKG_LIBS := libcrypto libzstd libarchive jansson libdivsufsort libcurl inih
PKG_CFLAGS := $(shell pkg-config --cflags $(PKG_LIBS) 2>/dev/null)
PKG_LDLIBS := $(shell pkg-config --libs $(PKG_LIBS) 2>/dev/null)
# The agent links only what applying needs (DESIGN.md): never libarchive or libdivsufsort.
# libbz2 comes with fota_delta_apply, which also applies BSDIFF40 patches.
AGENT_LDLIBS := $(shell pkg-config --libs libcrypto libzstd jansson inih 2>/dev/null) -lbz2 -lpthread -lm -ldl

# -Wno-format-truncation: error messages are truncated on purpose; clang has no such warning.
WARN    := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wvla -Wno-unused-parameter \
           $(shell $(CC) -Werror -Wno-format-truncation -E -x c /dev/null >/dev/null 2>&1 && echo -Wno-format-truncation)
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
# agent/fota-agent.c holds main(); the rest is libagent, which unit tests link too.
AGENT_MAIN  := agent/fota-agent.c
AGENT_SRCS  := $(filter-out $(AGENT_MAIN),$(sort $(wildcard agent/*.c)))
AGENT_LIB   := $(BUILD)/libagent.a
FUZZ_SRCS   := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_REPLAY := $(FUZZ_SRCS:tests/fuzz/%.c=$(BUILD)/replay/%)
FUZZ_SECONDS ?= 60
FUZZ_CC     ?= clang

PROGS := $(BUILD)/fota-pack $(BUILD)/fota-verify
ifneq ($(DELTA_SRCS),)
PROGS += $(BUILD)/fota-delta
endif
ifneq ($(wildcard $(AGENT_MAIN)),)
PROGS += $(BUILD)/fota-agent
endif

.PHONY: all check asan bench demo deps clean fuzz powercut soak lint
all: $(PROGS) $(BUILD)/unit-tests $(FUZZ_REPLAY) $(BUILD)/fault-proxy

# The fault-injecting HTTP proxy the network tests put between the agent and nginx.
$(BUILD)/fault-proxy: tests/proxy/fault-proxy.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< -lpthread

# Exhaustive power-cut run (every cut point of every scenario; tens of minutes).
powercut: all
	FOTA_POWERCUT_FULL=1 $(BUILD)/unit-tests agent/powercut

# Soak (not in make check): 200 updates through nginx and the fault proxy with random
# faults and simulated power cuts (tests/soak/). SOAK_UPDATES=N, SOAK_SEED=S.
$(BUILD)/soak: $(BUILD)/tests/soak/soak.o $(AGENT_LIB) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(AGENT_LDLIBS)

soak: deps
	@$(MAKE) --no-print-directory all $(BUILD)/soak
	@bash tests/soak/soak.sh $(BUILD)

# Static analysis: cppcheck and clang-tidy, zero warnings (ci/lint.sh, .clang-tidy).
lint: deps
	@bash ci/lint.sh

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

$(AGENT_LIB): $(AGENT_SRCS:%.c=$(BUILD)/%.o)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/fota-agent: $(AGENT_MAIN:%.c=$(BUILD)/%.o) $(AGENT_LIB) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(AGENT_LDLIBS)

$(BUILD)/unit-tests: $(UNIT_SRCS:%.c=$(BUILD)/%.o) $(AGENT_LIB) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcunit

# Corpus replay: each harness linked with a plain main() (tests/fuzz/replay_main.c).
$(BUILD)/replay/%: $(BUILD)/tests/fuzz/%.o $(BUILD)/tests/fuzz/replay_main.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# libFuzzer builds (clang): make fuzz FUZZ_SECONDS=N runs every harness N seconds on a
# scratch copy of its corpus (new findings stay in build-fuzz/corpus/NAME).
FUZZ_FLAGS := -g -O1 -fsanitize=fuzzer,address,undefined -std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -Iformats/include $(PKG_CFLAGS) -pthread
build-fuzz/%: tests/fuzz/%.c $(LIB_SRCS)
	@mkdir -p build-fuzz
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(LIB_SRCS) $(LDLIBS)

fuzz: deps $(FUZZ_SRCS:tests/fuzz/%.c=build-fuzz/%)
	@for h in $(FUZZ_SRCS:tests/fuzz/%.c=%); do \
	  name=$${h#fuzz_}; mkdir -p build-fuzz/corpus/$$name; \
	  cp -n tests/fuzz/corpus/$$name/* build-fuzz/corpus/$$name/ 2>/dev/null; \
	  echo "== $$h ($(FUZZ_SECONDS) s)"; \
	  ./build-fuzz/$$h -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 build-fuzz/corpus/$$name 2>&1 | \
	    grep -E 'stat::number_of_executed_units|stat::peak_rss|ERROR|SUMMARY|Done' || true; \
	done

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
