# Two commands do all the set-up on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Where the minimal Omniglot archives lie beside this checkout (this machine and CI): use them.
# Elsewhere METALAB_DATA stays unset and the archives are downloaded into the user cache on first use.
SHARED_DATA := $(abspath ../shared/data/omniglot)
ifneq ($(wildcard $(SHARED_DATA)/images_background_small1.zip),)
export METALAB_DATA ?= $(SHARED_DATA)
endif

.PHONY: demo test setup
setup: $(BIN)/.installed

# torch first, pinned to the CPU build this project is tested with; then the package and its test tools.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# Meta-train second-order MAML on Omniglot's minimal split (a few minutes on 2 cores), then evaluate it
# on 1,000 episodes of alphabets never seen in training.
demo: setup
	$(BIN)/metalab data fetch
	$(BIN)/metalab data show --out outputs/episodes.png
	$(BIN)/metalab train --preset omniglot-demo --out-dir outputs/demo
	$(BIN)/metalab eval outputs/demo/best.pt --episodes 1000

test: setup
	$(BIN)/pytest -q
