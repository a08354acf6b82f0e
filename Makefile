# Every target sets up .venv itself: a fresh machine needs only python3 (>= 3.10) and make.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: book test notebooks browser clean bench pretrain finetune mini-checkpoint

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

## make test: install, then the whole suite (package, notebooks with nbval, book build, browser)
test: $(STAMP) browser
	$(PY) -m pytest tests chapters --nbval --nbval-current-env \
		--sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=600

## make notebooks: re-execute every chapter in place (after changing a chapter or a module)
notebooks: $(STAMP)
	$(PY) tools/run_notebooks.py chapters/*.ipynb

## make bench: modernbert_mini against transformers' ModernBERT, same weights, one process (out/bench/)
bench: $(STAMP)
	$(PY) -m modernbert_mini.bench --out out/bench

## make pretrain: pretrain the mini ModernBERT on the stdlib corpus, 700 steps, 5.3M tokens (2.5 passes),
## ~17 min on 2 free CPU cores, 40 min when they are shared (out/pretrain/: model + tokenizer that
## transformers loads, loss_curve.png, log.json). Validation loss 2.92, unigram baseline 6.71.
## Packed batches go through SDPA: on the CPU it is faster than the per-sequence varlen path.
## More options: PRETRAIN_ARGS="--resume" (continue), "--help" (all of them).
PRETRAIN_DIR  ?= out/pretrain
PRETRAIN_ARGS ?=
pretrain: $(STAMP)
	$(PY) -m modernbert_mini.train --out-dir $(PRETRAIN_DIR) --attention-backend sdpa \
		--max-len 512 --batch-tokens 8192 --batch-warmup-start 2048 --batch-warmup-tokens 300000 \
		--max-steps 700 --warmup-steps 20 --decay-steps 150 --lr 2e-3 \
		--eval-every 50 --eval-tokens 16384 --save-every 50 $(PRETRAIN_ARGS)

## make mini-checkpoint: the small checkpoint that chapters 10 and 11 load
## (modernbert_mini/assets/mini/, ~12 MB): the `make pretrain` run (pretrained first if missing),
## its weights in float16, its validation loss recomputed on them (tests/test_pretrained.py checks it)
mini-checkpoint: $(STAMP)
	@[ -f $(PRETRAIN_DIR)/model.safetensors ] || $(MAKE) pretrain
	$(PY) -c "import json, modernbert_mini.checkpoint as c; print(json.dumps(c.export('$(PRETRAIN_DIR)')['validation']))"

## make finetune: fine-tune the `make pretrain` checkpoint (pretraining it first if it is missing) and
## the same architecture from random init on the offline tasks, 3 seeds each, next to the baselines
## (TF-IDF + logistic regression, BM25) and the hybrid retriever: one table (out/finetune/:
## results.md, results.png, results.json). 3 epochs over all the training examples (chosen over 1 epoch
## on 1,500 with --validation); ~23 min on 2 shared CPU cores (7.5 min a seed). More options:
## FINETUNE_ARGS="--validation" (score on held-out training files), "--help" (all of them).
FINETUNE_DIR  ?= out/finetune
FINETUNE_ARGS ?=
finetune: $(STAMP)
	@[ -f $(PRETRAIN_DIR)/model.safetensors ] || $(MAKE) pretrain
	$(PY) -m modernbert_mini.experiment --checkpoint $(PRETRAIN_DIR) --out-dir $(FINETUNE_DIR) \
		--attention-backend sdpa --epochs 3 --max-train 0 $(FINETUNE_ARGS)

## headless Chromium for the browser test, from Debian's packages
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		command -v apt-get >/dev/null 2>&1 || { echo "Install Chromium for the browser test (tests/test_book.py)"; exit 1; }; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; }

clean:
	rm -rf _build test-artifacts .pytest_cache
