# Two set-up commands: `make demo` and `make test`. Both create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# No model hub is reachable: without these, transformers (and laion_clap's import) hang for minutes.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
DEMO := demo_out
# Where torch's CPU build comes from when there is no NVIDIA GPU (`make TORCH_INDEX=` to skip it).
TORCH_INDEX ?= $(if $(shell command -v nvidia-smi 2>/dev/null),,https://download.pytorch.org/whl/cpu)
# The published packages whose model code the real backends use, installed without their
# dependencies (they would pin numpy<2 or replace torch with a CUDA build; see pyproject's extras).
REFERENCE_PACKAGES := laion_clap==1.1.7 msclap==1.3.4 audiobox_aesthetics==0.0.4 \
	frechet_audio_distance==0.3.4 torchvggish==0.2 torchopenl3==1.0.1 hear21passt==0.0.26 \
	bigvgan==2.4.1 tangoflux==0.1.0

.PHONY: test check durations demo bench lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first (torchvision is what laion_clap needs): from TORCH_INDEX too, so a machine without
	# an NVIDIA GPU gets the CPU build rather than PyPI's multi-GB CUDA one; where that index does
	# not answer, from pip's own indexes (said, not retried for every package).
	$(PY) -c "import torch" 2>/dev/null || { index=""; \
	  if [ -n "$(TORCH_INDEX)" ] && $(PY) -c "import urllib.request as u; u.urlopen('$(TORCH_INDEX)/torch/', timeout=10)" 2>/dev/null; \
	  then index="--extra-index-url $(TORCH_INDEX)"; \
	  elif [ -n "$(TORCH_INDEX)" ]; then echo "$(TORCH_INDEX) does not answer: torch from pip's indexes"; fi; \
	  $(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1 $$index; }
	$(PY) -m pip install -q -e '.[dev,laion,msclap,aesthetics,fad,passt,diffusers,tangoflux,tensorboard]'
	$(PY) -m pip install -q --no-deps $(REFERENCE_PACKAGES)
	# Debian's Chromium, for the test that opens the HTML report in a headless browser
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
	  || echo "could not install chromium: the HTML report's browser test will fail"
	touch $@

# Both tiers spread the tests over the machine's cores (pytest-xdist; one torch thread a worker).
test: $(VENV)/.installed
	$(PY) -m pytest -q -n auto --dist worksteal --durations=15

# The fast tier: the tests measured under half a second in tests/durations.json (`make durations`
# measures them again with a full run, one test at a time).
check: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow" -x -n auto

durations: $(VENV)/.installed
	TTAEVAL_RECORD_DURATIONS=$(CURDIR)/tests/durations.json $(PY) -m pytest -q

# The main job on the mini world: generate (stand-in systems) -> score (mini scorers) -> leaderboard
# on the terminal -> the report, regenerated in place (reports/demo/report.html: kept in the repository,
# so the worked example always matches the shipped weights; tests/test_report_digests.py checks it).
demo: $(VENV)/.installed
	rm -rf $(DEMO)
	$(BIN)/ttaeval run --config benchmarks/configs/demo.toml --quiet
	$(BIN)/ttaeval leaderboard $(DEMO)/run --baseline clean --format md -o $(DEMO)/leaderboard.md
	$(BIN)/ttaeval report $(DEMO)/run --out reports/demo --baseline clean --title "ttaeval demo: the mini world"
	sed -n -e '1,/^$$/p' -e '/^#### Efficiency/,/^Machine-dependent/p' $(DEMO)/leaderboard.md

# Every benchmark script against its anchor, then benchmarks/RESULTS.md from their rows (issue 9).
BENCHES := frechet clap_laion fad_folder judge runner grpo profiles
bench: $(VENV)/.installed
	@start=$$(date +%s); times=""; for b in $(BENCHES); do \
	  t=$$(date +%s); echo "== benchmarks/bench_$$b.py"; $(PY) benchmarks/bench_$$b.py || exit 1; \
	  t=$$(( $$(date +%s) - t )); echo "   $$t s"; times="$$times $$b=$$t"; done; \
	$(PY) benchmarks/make_results.py $$(( $$(date +%s) - start )) $$times > /dev/null; \
	echo "wrote benchmarks/RESULTS.md"

lint: $(VENV)/.installed
	$(BIN)/ruff check ttaeval resonate_train tests benchmarks
	$(BIN)/ruff format --check ttaeval resonate_train tests benchmarks

clean:
	rm -rf $(DEMO) .pytest_cache
