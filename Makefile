# genbench — every target creates .venv on first use and reuses it afterwards.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Tests run on the CPU with W&B offline; no network is needed.
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true

.PHONY: install test test-all lecture tune bench bench-quick gpu-check lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not gpu" -q --durations=15

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

# The speed probe's line (a fixed matmul and conv) tells a slow machine from a slow genbench.
lecture: $(STAMP)
	$(BIN)/python benchmarks/speed_probe.py
	$(BIN)/genbench-lecture $(if $(FAMILIES),--families $(FAMILIES))

# The equal tuning (docs/tuning.md): one Optuna search per family, the same trials, per-trial budget (the
# lecture's training FLOPs) and objective (conf/tuning/optuna.yaml). A killed search continues when re-run.
# Then each family's current defaults under the same protocol, and the table (--write adopts: docs/tuning.md).
# Every family with a search (conf/hparams_search/<family>_optuna.yaml).
TUNE_FAMILIES ?= $(patsubst conf/hparams_search/%_optuna.yaml,%,$(wildcard conf/hparams_search/*_optuna.yaml))
TUNE_ARGS = experiment=lecture logger=csv trainer.enable_progress_bar=false
tune: $(STAMP)
	for f in $(TUNE_FAMILIES); do \
	  $(BIN)/genbench-train $(TUNE_ARGS) hparams_search=$${f}_optuna hydra.sweep.dir=outputs/tune/$$f || exit 1; \
	  $(BIN)/genbench-train $(TUNE_ARGS) model=$$f +tuning=protocol hydra.run.dir=outputs/tune/$${f}_default || exit 1; \
	done
	$(BIN)/python -m genbench.tuning $(foreach f,$(TUNE_FAMILIES),outputs/tune/$(f) --baseline $(f)=outputs/tune/$(f)_default)

# Speed benchmarks (benchmarks/): each script writes a JSON record to benchmarks/results/.
# One torch thread by default: on a shared CPU, two OpenMP threads per op wait on each other's time
# slices. bench-quick (CI-sized, < 5 min on 2 CPU cores) writes *_quick.json and leaves docs/performance.md
# alone; bench runs the full sizes (~65 min on 2 CPU cores) and re-renders the tables in docs/performance.md.
# InceptionV3 is compared with the weights file INCEPTION_WEIGHTS=/path/pt_inception-2015-12-05.pth,
# else with random weights (the same cost; the timing is valid, the metrics' values mean nothing).
BENCH_ARGS ?= --threads 1
INCEPTION_WEIGHTS ?=
INCEPTION_ARGS = $(if $(INCEPTION_WEIGHTS),--inception-weights $(INCEPTION_WEIGHTS),--random-inception)
# FID against NFE on the lecture's checkpoints: FID_VS_NFE_ARGS="--ckpt ddpm=PATH --ckpt flow=PATH" (else rings only)
FID_VS_NFE_ARGS ?=

bench: $(STAMP)
	$(BIN)/python benchmarks/train_overhead.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/eval_throughput.py $(BENCH_ARGS) $(INCEPTION_ARGS)
	$(BIN)/python benchmarks/sampling.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/scaling.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/flops.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/sampling_vs_diffusers.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/eval_vs_cleanfid.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/feature_cost.py
	$(BIN)/python benchmarks/fid_vs_nfe.py $(BENCH_ARGS) $(FID_VS_NFE_ARGS)
	$(BIN)/python benchmarks/render_docs.py

bench-quick: $(STAMP)
	$(BIN)/python benchmarks/train_overhead.py --quick $(BENCH_ARGS)
	$(BIN)/python benchmarks/eval_throughput.py --quick $(BENCH_ARGS)
	$(BIN)/python benchmarks/sampling.py --quick $(BENCH_ARGS)
	$(BIN)/python benchmarks/scaling.py --quick $(BENCH_ARGS)
	$(BIN)/python benchmarks/flops.py --quick $(BENCH_ARGS)
	$(BIN)/python benchmarks/sampling_vs_diffusers.py --quick $(BENCH_ARGS)
	$(BIN)/python benchmarks/eval_vs_cleanfid.py --quick $(BENCH_ARGS)
	$(BIN)/python benchmarks/feature_cost.py --quick
	$(BIN)/python benchmarks/fid_vs_nfe.py --quick --data rings $(BENCH_ARGS)

# One GPU, at most 8 minutes: bf16-mixed + compile vs fp32 loss curves, MFU, evaluator images/s, 2-GPU DDP;
# writes benchmarks/results/gpu_check.json. Without CUDA it says "skipped: no CUDA device" and exits 0.
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf outputs multirun wandb .pytest_cache
