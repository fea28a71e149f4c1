# cnnlab: two commands.
#   make run    set up .venv and train LeNet-5 on MNIST, evaluate it, write predictions
#   make test   set up .venv and run the test suite
# Data: $CNNLAB_DATA_DIR if set (a folder holding mnist/, cifar10/, ... in their official
# formats), else ~/.cache/cnnlab/data, where missing datasets are downloaded.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.cnnlab-installed
RUN    ?= runs/quickstart-lenet5-mnist-$(shell date +%Y%m%d-%H%M%S)

.PHONY: run test setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: on a machine with a local CPU wheel this avoids a multi-GB CUDA download
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/cnnlab train --model lenet5 --dataset mnist --epochs 6 --batch-size 128 --lr 2e-3 --schedule cosine --channels-last --out $(RUN)
	$(BIN)/cnnlab evaluate $(RUN)
	$(BIN)/cnnlab predict $(RUN)
	@echo "outputs: $(RUN)/ (metrics.csv, iterations.csv, train.log, evaluation.json, confusion_matrix.csv, predictions.csv, checkpoints/)"

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
