# Coverage-guided fuzzing of the chunker, the SSE decoder, the vendor response parsers and the
# cache-key canonicalizer (tests/fuzz/): each target under libFuzzer (atheris) in turn; then
# the three RPCs and raw request bytes against the real server
# (tests/integration/test_fuzz_rpcs.py), FUZZ_RPC_EXAMPLES generated requests per test.
#
#   make fuzz                              every target, FUZZ_SECONDS (60) each
#   make fuzz FUZZ_TARGETS=sse FUZZ_SECONDS=600 FUZZ_RPC_EXAMPLES=0   (0: the RPCs' usual count)
#
# The committed seeds (tests/fuzz/corpus/<target>/) are read, never written: what a run finds
# goes to .fuzz/<target>/, and a crasher to .fuzz/<target>-crash-*. A crasher worth keeping
# becomes a corpus file (replayed by every `make pytest`) and a unit test. `make pytest` runs
# the same targets without instrumentation, over the corpus and a few thousand generated inputs.

FUZZ_SECONDS ?= 60
FUZZ_RPC_EXAMPLES ?= 20000
FUZZ_TARGETS ?= chunker sse openai anthropic canonical
FUZZ_FLAGS ?= -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
FUZZ_DIR := .fuzz

.PHONY: fuzz

fuzz: install
	@$(PY) -c 'import atheris' 2>/dev/null || { echo "make fuzz needs atheris (Linux x86-64)"; exit 1; }
	for t in $(FUZZ_TARGETS); do \
	  echo "== fuzz $$t ($(FUZZ_SECONDS) s)" >&2; mkdir -p $(FUZZ_DIR)/$$t; \
	  $(PY) -m tests.fuzz.run $$t $(FUZZ_DIR)/$$t tests/fuzz/corpus/$$t \
	    -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=$(FUZZ_DIR)/$$t- $(FUZZ_FLAGS) || exit 1; \
	done
	FUZZ_EXAMPLES=$(FUZZ_RPC_EXAMPLES) $(VENV)/bin/pytest -q -s -p no:cacheprovider \
	  tests/integration/test_fuzz_rpcs.py
