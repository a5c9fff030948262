# Two commands a newcomer runs: `make demo` and `make test`. Both create .venv when missing.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DATA    ?= $(if $(PVAE_DATA),$(PVAE_DATA),../shared/data)
OUT     ?= exp/demo
JOBS    ?= 2

.PHONY: install demo demo-data test test-all bench clean chromium

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first, from the pinned CPU build (constraints.txt), so nothing pulls the CUDA wheels.
	$(BIN)/pip install -q -c constraints.txt torch
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The demo trains on five of FSDD's six speakers: HELD_OUT's 500 takes are a voice it never
# hears, tested beside the official split's other takes of the five (docs/voices.md).
HELD_OUT ?= george

demo-data: $(STAMP)
	$(BIN)/pvae-data prepare fsdd $(DATA)/fsdd $(OUT)/prepare --test-speakers $(HELD_OUT) -j $(JOBS)
	$(BIN)/pvae-data trim $(OUT)/prepare/utterances.jsonl $(OUT)/trim -j $(JOBS)
	$(BIN)/pvae-data perturb $(OUT)/trim/segments.jsonl $(OUT)/perturb --speed 0.9,1.0,1.1 --edge-pad 0.05
	$(BIN)/pvae-data fbank $(OUT)/perturb/segments.jsonl $(OUT)/fbank --low-freq 40 --high-freq 3700 -j $(JOBS)
	$(BIN)/pvae-data shard audio $(OUT)/fbank $(OUT)/shards/audio
	# the same copies without the noise floor, for the speech decoder's second stage (below)
	$(BIN)/pvae-data perturb $(OUT)/trim/segments.jsonl $(OUT)/perturb_clean --speed 0.9,1.0,1.1
	$(BIN)/pvae-data fbank $(OUT)/perturb_clean/segments.jsonl $(OUT)/fbank_clean --low-freq 40 --high-freq 3700 -j $(JOBS)
	$(BIN)/pvae-data shard audio $(OUT)/fbank_clean $(OUT)/shards/audio_clean
	$(BIN)/pvae-data shard images $(DATA)/mnist $(OUT)/shards/images
	$(BIN)/pvae-data validate $(OUT)/shards/audio
	$(BIN)/pvae-data validate $(OUT)/shards/audio_clean
	$(BIN)/pvae-data validate $(OUT)/shards/images
	$(BIN)/pvae-data info $(OUT)/shards/audio
	$(BIN)/pvae-data info $(OUT)/shards/images

# The main job: data stages (seconds), PVAE training (24 min on 2 CPU cores), the speech decoder's
# second stage (POLISH_EPOCHS epochs, about 5 min here; a slower machine stops it after
# POLISH_MINUTES, as the first stage stops after its max_minutes), evaluation (the test takes and judges of the
# first stage's shards: the two shards hold the same test takes). The second stage starts from the
# trained run, trains the speech decoder alone on the copies without the noise floor, and leaves
# every encoder as it was, so speech->image does not move (docs/voices.md, "The speech decoder
# polished on clean words"). Rerunning continues where it stopped: stages reuse finished work,
# training resumes exactly.
POLISH_EPOCHS ?= 24
POLISH_MINUTES ?= 6
demo: demo-data
	$(BIN)/pvae-model train --config configs/pvae_fast.yaml --out $(OUT)/pvae_fast \
		--audio-shards $(OUT)/shards/audio --image-shards $(OUT)/shards/images --resume
	$(BIN)/pvae-model train --config configs/pvae_fast.yaml --out $(OUT)/pvae_polished \
		--audio-shards $(OUT)/shards/audio_clean --image-shards $(OUT)/shards/images --resume \
		--set init_from=$(OUT)/pvae_fast --set 'train_only=[dec_a]' --set epochs=$(POLISH_EPOCHS) --set max_minutes=$(POLISH_MINUTES) --set eval_every=0
	$(BIN)/pvae-model evaluate $(OUT)/pvae_polished --checkpoint last --audio-shards $(OUT)/shards/audio \
		> $(OUT)/pvae_polished/evaluate.log
	@echo "Made: $(OUT)/{prepare,trim,fbank,shards} (data), $(OUT)/pvae_fast (trained PVAE: metrics.jsonl, tb/, checkpoints/), $(OUT)/pvae_polished (its speech decoder polished: the model to use), $(OUT)/pvae_polished/eval (figures, WAVs, metrics.json)"
	@$(BIN)/pvae-model report $(OUT)/pvae_polished --out $(OUT)/report.html

# Headless Chromium renders the HTML report in the tests (Debian package; needs root + apt).
chromium:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && apt-get install -y -qq chromium >/dev/null); } || \
		echo "chromium not installed: the report-rendering test will be skipped"

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_fbank.py
	$(BIN)/python benchmarks/bench_vad.py
	$(BIN)/python benchmarks/bench_shards.py
	$(BIN)/python benchmarks/bench_align.py

clean:
	rm -rf $(VENV) exp *.egg-info
