# Two commands a newcomer runs: `make demo` and `make test`. Both create .venv when missing.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DATA    ?= $(if $(PVAE_DATA),$(PVAE_DATA),../shared/data)
OUT     ?= exp/demo
JOBS    ?= 2

.PHONY: install demo test test-all bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first, from the pinned CPU build (constraints.txt), so nothing pulls the CUDA wheels.
	$(BIN)/pip install -q -c constraints.txt torch
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/pvae-data prepare fsdd $(DATA)/fsdd $(OUT)/prepare -j $(JOBS)
	$(BIN)/pvae-data trim $(OUT)/prepare/utterances.jsonl $(OUT)/trim -j $(JOBS)
	$(BIN)/pvae-data fbank $(OUT)/trim/segments.jsonl $(OUT)/fbank -j $(JOBS)
	$(BIN)/pvae-data shard audio $(OUT)/fbank $(OUT)/shards/audio
	$(BIN)/pvae-data shard images $(DATA)/mnist $(OUT)/shards/images
	$(BIN)/pvae-data validate $(OUT)/shards/audio
	$(BIN)/pvae-data validate $(OUT)/shards/images
	$(BIN)/pvae-data info $(OUT)/shards/audio
	$(BIN)/pvae-data info $(OUT)/shards/images
	@echo "Made: $(OUT)/{prepare,trim,fbank} manifests and features, $(OUT)/shards/{audio,images} (see docs/shards.md)"

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_fbank.py
	$(BIN)/python benchmarks/bench_vad.py
	$(BIN)/python benchmarks/bench_shards.py

clean:
	rm -rf $(VENV) exp *.egg-info
