# Every target sets up .venv itself: a fresh machine needs only python3 (>= 3.10) and make.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: book test notebooks browser clean bench pretrain finetune mini-checkpoint corpus wheelhouse

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
test: $(STAMP) browser
	@alone=$$(mktemp -d) && cp chapters/*.ipynb "$$alone" && \
	$(PY) -m pytest tests "$$alone" --rootdir=. -c pyproject.toml --nbval --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=600; \
	status=$$?; rm -rf "$$alone"; exit $$status

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
