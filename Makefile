# parti - build, test, fuzz, bench, demo.
#   make test        everything under ASan+UBSan, fuzzers briefly; ends "N passed, N failed"
#   make fuzz        each fuzz target for FUZZ_SECONDS (default 60) on its corpus
#   make bench       benchmarks (ratios against a baseline measured in the same run)
#   make demo        the cluster demo: workers on a local nats-server (or the fake), join, kill -9, nothing lost
#   make sim         the whole-group simulator: SEEDS=N seeds (default 1000), or SEED=N to replay one
#                    (SIM_ARGS="--show", "--shrink", "--faults a,b", ...); make sim-long for the big runs
# Each first runs scripts/setup, which installs what is missing (idempotent).

CC      ?= cc
CLANG   ?= clang
CXX     ?= g++
STRICT   = -std=c99 -Wall -Wextra -Wpedantic -Werror
CXXSTRICT = -std=c++11 -Wall -Wextra -Wpedantic -Werror
SAN      = -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZSAN  = -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -D_GNU_SOURCE
B        = build
HEADERS  = parti.h parti_nats.h
FUZZ_TARGETS = subjects diff json metrics fake jsproto assign checkpoint
FUZZ_RUNS ?= 20000
FUZZ_SECONDS ?= 60
# sanitizer reports must fail the run, and leaks count
export ASAN_OPTIONS = abort_on_error=1:detect_leaks=1
export UBSAN_OPTIONS = print_stacktrace=1:halt_on_error=1
# the decimal-comma locale scripts/setup builds for the metrics locale test
export LOCPATH = $(CURDIR)/.deps/locale

UNIT_SRC = tests/impl.c tests/test_core.c tests/test_json.c tests/test_metrics.c tests/test_fake.c tests/test_consumer.c \
           tests/test_assign.c tests/test_group.c tests/test_headers.c tests/test_log.c tests/test_breaker.c
CONF_FAKE_SRC = tests/conformance.c tests/conformance_env_fake.c
CONF_NATS_SRC = tests/conformance.c tests/conformance_env_nats.c tests/nats_server.c
SERVER_SRC = tests/nats_server.c tests/nats_server.h

.PHONY: all setup test check fuzz bench demo sim sim-long clean
SIM_SEEDS ?= 500
# every invariant, asserted on every seed with every fault kind on
SEEDS ?= 1000
SIM_JOBS ?= 2

all: $(B)/unit

setup:
	@./scripts/setup

test: setup
	@rm -f $(B)/logs/results
	@$(MAKE) --no-print-directory check

check: $(B)/unit $(B)/unit_clang $(B)/conformance_fake $(B)/conformance_nats $(B)/test_nats_server $(B)/test_nats_binding $(B)/test_consumer_nats $(B)/test_handoff_nats $(B)/link_two_tu $(B)/link_static $(B)/cpp_gxx $(B)/cpp_clangxx \
       $(B)/readme_example $(B)/demo $(B)/health_server $(B)/test_health_http $(B)/sim $(B)/tsan_hostile \
       $(addprefix $(B)/fuzz/fuzz_,$(FUZZ_TARGETS))
	@tests/run criterion unit-gcc $(B)/unit --jobs 2
	@tests/run criterion unit-clang $(B)/unit_clang --jobs 2
	@tests/run criterion conformance-fake $(B)/conformance_fake --jobs 2
	@tests/run criterion nats-server-harness $(B)/test_nats_server --jobs 2
	@tests/run criterion conformance-nats-server-memory $(B)/conformance_nats --jobs 2
	@PARTI_CONF_STORAGE=file tests/run criterion conformance-nats-server-file $(B)/conformance_nats --jobs 2
	@tests/run criterion nats-binding $(B)/test_nats_binding --jobs 2
	@tests/run criterion consumer-nats-server $(B)/test_consumer_nats --jobs 2
	@tests/run criterion handoff-nats-server $(B)/test_handoff_nats --jobs 1
	@TSAN_OPTIONS=halt_on_error=1 tests/run check tsan-hostile-server $(B)/tsan_hostile
	@HEALTH_SERVER_BIN=$(B)/health_server tests/run criterion health-http $(B)/test_health_http
	@tests/run check link-two-translation-units $(B)/link_two_tu
	@tests/run check link-parti-static $(B)/link_static
	@tests/run check headers-warning-free-at-every-optimisation-level tests/opt_levels.sh
	@tests/run check cxx-g++ $(B)/cpp_gxx
	@tests/run check cxx-clang++ $(B)/cpp_clangxx
	@tests/run check readme-example $(B)/readme_example
	@tests/run check demo-nats-server $(B)/demo --check
	@tests/run check demo-nats-server-kill-leader $(B)/demo --check --kill-leader
	@tests/run check demo-fake $(B)/demo --check --fake
	@tests/run check sim-$(SIM_SEEDS)-seeds $(B)/sim --seeds $(SIM_SEEDS) --jobs $(SIM_JOBS) --assert-all
	@tests/run check sim-no-faults-every-invariant $(B)/sim --seeds 100 --jobs $(SIM_JOBS) --faults none --assert-all
	@tests/run check sim-same-seed-same-log tests/sim_replay.sh $(B)/sim
	@tests/run check sim-review-scenarios $(B)/sim --scenarios
	@tests/run check sim-scale-200-workers-10000-partitions $(B)/sim --seed 1 --workers 200 --partitions 10000 --rate 400 --duration 8000 --faults join,leave,crash,pause_short
	@tail -n 14 build/logs/sim-$(SIM_SEEDS)-seeds.log
	@for t in $(FUZZ_TARGETS); do \
	    rm -rf $(B)/fuzz/corpus_$$t; mkdir -p $(B)/fuzz/corpus_$$t; \
	    tests/run check fuzz-$$t $(B)/fuzz/fuzz_$$t -runs=$(FUZZ_RUNS) -seed=1 \
	        -artifact_prefix=$(B)/fuzz/$$t- $(B)/fuzz/corpus_$$t fuzz/corpus/$$t; \
	done
	@tests/run --summary

$(B)/unit: $(UNIT_SRC) $(HEADERS)
	@mkdir -p $(B)
	$(CC) $(STRICT) $(SAN) -I. $(UNIT_SRC) -lcriterion -o $@

$(B)/unit_clang: $(UNIT_SRC) $(HEADERS)
	@mkdir -p $(B)
	$(CLANG) $(STRICT) $(SAN) -I. $(UNIT_SRC) -lcriterion -o $@

$(B)/conformance_fake: $(CONF_FAKE_SRC) tests/conformance.h $(HEADERS)
	@mkdir -p $(B)
	$(CC) $(STRICT) $(SAN) -I. $(CONF_FAKE_SRC) -lcriterion -o $@

$(B)/conformance_nats: $(CONF_NATS_SRC) tests/conformance.h $(SERVER_SRC) $(HEADERS)
	@mkdir -p $(B)
	$(CC) $(STRICT) $(SAN) -Itests -I. $(CONF_NATS_SRC) -lnats -lcriterion -o $@

$(B)/test_nats_server: tests/test_nats_server.c $(SERVER_SRC)
	@mkdir -p $(B)
	$(CC) $(STRICT) $(SAN) -Itests -I. tests/test_nats_server.c tests/nats_server.c -lcriterion -o $@

$(B)/test_nats_binding: tests/test_nats_binding.c $(SERVER_SRC) $(HEADERS)
	@mkdir -p $(B)
	$(CC) $(STRICT) $(SAN) -Itests -I. tests/test_nats_binding.c tests/nats_server.c -lnats -lcriterion -o $@

$(B)/test_consumer_nats: tests/test_consumer_nats.c $(SERVER_SRC) $(HEADERS)
	@mkdir -p $(B)
	$(CC) $(STRICT) $(SAN) -Itests -I. tests/test_consumer_nats.c tests/nats_server.c -lnats -lcriterion -o $@

$(B)/test_handoff_nats: tests/test_handoff_nats.c $(SERVER_SRC) $(HEADERS)
	@mkdir -p $(B)
	$(CC) $(STRICT) $(SAN) -Itests -I. tests/test_handoff_nats.c tests/nats_server.c -lnats -lcriterion -lpthread -o $@

# ThreadSanitizer (a plain program: Criterion's sandbox does not start under TSan)
$(B)/tsan_hostile: tests/tsan_hostile.c $(SERVER_SRC) $(HEADERS)
	@mkdir -p $(B)
	$(CLANG) -std=c99 -Wall -Wextra -Werror -g -O1 -fsanitize=thread -Itests -I. tests/tsan_hostile.c tests/nats_server.c -lnats -o $@

$(B)/link_two_tu: tests/link/impl.c tests/link/user.c $(HEADERS)
	@mkdir -p $(B)
	$(CC) $(STRICT) $(SAN) -I. tests/link/impl.c tests/link/user.c -o $@

$(B)/link_static: tests/link/static_a.c tests/link/static_b.c $(HEADERS)
	@mkdir -p $(B)
	$(CC) $(STRICT) $(SAN) -I. tests/link/static_a.c tests/link/static_b.c -o $@

$(B)/cpp_gxx: tests/cpp_build.cpp $(HEADERS)
	@mkdir -p $(B)
	$(CXX) $(CXXSTRICT) $(SAN) -I. $< -o $@

$(B)/cpp_clangxx: tests/cpp_build.cpp $(HEADERS)
	@mkdir -p $(B)
	clang++ $(CXXSTRICT) $(SAN) -I. $< -o $@

# The README's usage example, cut out of README.md and compiled as is.
$(B)/readme_example: README.md $(HEADERS)
	@mkdir -p $(B)
	sed -n '/<!-- example:begin -->/,/<!-- example:end -->/p' README.md | sed '1,2d;$$d' | sed '$$d' > $(B)/readme_example.c
	$(CC) $(STRICT) $(SAN) -I. $(B)/readme_example.c -o $@

# The simulator: many workers on threads over the fake (no nats.c), under the sanitizers.
$(B)/sim: tests/sim.c $(HEADERS)
	@mkdir -p $(B)
	$(CC) $(STRICT) -D_POSIX_C_SOURCE=200809L $(SAN) -I. tests/sim.c -lpthread -o $@

$(B)/sim_fast: tests/sim.c $(HEADERS)
	@mkdir -p $(B)
	$(CC) $(STRICT) -D_POSIX_C_SOURCE=200809L -O2 -g -I. tests/sim.c -lpthread -o $@

# make sim SEEDS=100000, or make sim SEED=42 SIM_ARGS="--show" to replay one seed
sim: $(B)/sim_fast
ifdef SEED
	$(B)/sim_fast --seed $(SEED) $(SIM_ARGS)
else
	$(B)/sim_fast --seeds $(SEEDS) --jobs $(SIM_JOBS) $(SIM_ARGS)
endif

# the long runs: 100,000 seeds, and one group of 1,000 workers over 100,000 partitions
sim-long: $(B)/sim_fast
	$(B)/sim_fast --seeds 100000 --jobs $(SIM_JOBS) --assert-all $(SIM_ARGS)
	$(B)/sim_fast --seed 1 --workers 1000 --partitions 100000 --rate 2000 --duration 10000 --heartbeat 1000 \
	    --ttl 5000 --op-timeout 2000 --faults join,leave,crash,pause_short --wall-budget 1800

$(B)/fuzz/fuzz_%: fuzz/fuzz_%.c $(HEADERS)
	@mkdir -p $(B)/fuzz
	$(CLANG) $(FUZZSAN) -Wall -Wextra -Werror -I. $< -o $@

fuzz: setup $(addprefix $(B)/fuzz/fuzz_,$(FUZZ_TARGETS))
	@for t in $(FUZZ_TARGETS); do \
	    mkdir -p $(B)/fuzz/corpus_$$t; \
	    echo "== fuzz_$$t for $(FUZZ_SECONDS) s"; \
	    $(B)/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	        -artifact_prefix=$(B)/fuzz/$$t- $(B)/fuzz/corpus_$$t fuzz/corpus/$$t 2>&1 \
	        | grep -E 'stat::number_of_executed_units|stat::average_exec_per_sec|ERROR|SUMMARY|Done' || exit 1; \
	done

$(B)/bench_core: bench/bench_core.c $(HEADERS)
	@mkdir -p $(B)
	$(CC) -std=c99 -O2 -Wall -Wextra -Werror -I. $< -o $@

$(B)/bench_nats: bench/bench_nats.c $(SERVER_SRC) $(HEADERS)
	@mkdir -p $(B)
	$(CC) -std=c99 -O2 -Wall -Wextra -Werror -I. bench/bench_nats.c tests/nats_server.c -lnats -o $@

$(B)/bench_consumer: bench/bench_consumer.c $(SERVER_SRC) $(HEADERS)
	@mkdir -p $(B)
	$(CC) -std=c99 -O2 -Wall -Wextra -Werror -I. bench/bench_consumer.c tests/nats_server.c -lnats -o $@

$(B)/bench_assign: bench/bench_assign.c $(HEADERS)
	@mkdir -p $(B)
	$(CC) -std=c99 -O2 -Wall -Wextra -Werror -I. $< -o $@

$(B)/bench_group: bench/bench_group.c $(SERVER_SRC) $(HEADERS)
	@mkdir -p $(B)
	$(CC) -std=c99 -O2 -Wall -Wextra -Wpedantic -Werror -D_POSIX_C_SOURCE=200809L -I. bench/bench_group.c tests/nats_server.c -lnats -lpthread -o $@

$(B)/bench_handoff: bench/bench_handoff.c $(SERVER_SRC) $(HEADERS)
	@mkdir -p $(B)
	$(CC) -std=c99 -O2 -Wall -Wextra -Wpedantic -Werror -D_POSIX_C_SOURCE=200809L -I. bench/bench_handoff.c tests/nats_server.c -lnats -o $@

$(B)/bench_ops: bench/bench_ops.c $(SERVER_SRC) $(HEADERS)
	@mkdir -p $(B)
	$(CC) -std=c99 -O2 -Wall -Wextra -Wpedantic -Werror -I. bench/bench_ops.c tests/nats_server.c -lnats -o $@

bench: setup $(B)/bench_core $(B)/bench_assign $(B)/bench_nats $(B)/bench_consumer $(B)/bench_group $(B)/bench_ops \
       $(B)/bench_handoff
	$(B)/bench_core
	$(B)/bench_assign
	$(B)/bench_nats
	$(B)/bench_consumer
	$(B)/bench_group
	$(B)/bench_ops
	$(B)/bench_handoff

$(B)/demo: examples/demo.c $(SERVER_SRC) $(HEADERS)
	@mkdir -p $(B)
	$(CC) $(STRICT) $(SAN) -Itests -I. examples/demo.c tests/nats_server.c -lnats -o $@

$(B)/health_server: examples/health_server.c $(HEADERS)
	@mkdir -p $(B)
	$(CC) $(STRICT) $(SAN) -I. examples/health_server.c -lmicrohttpd -lnats -lpthread -o $@

$(B)/test_health_http: tests/test_health_http.c $(SERVER_SRC) $(HEADERS)
	@mkdir -p $(B)
	$(CC) $(STRICT) $(SAN) -Itests -I. tests/test_health_http.c tests/nats_server.c -lcriterion -o $@

demo: setup $(B)/demo
	@$(B)/demo

clean:
	rm -rf $(B)
