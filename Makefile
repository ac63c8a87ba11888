# Two set-up commands: `make demo` and `make test`. Both create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# No model hub is reachable: without these, transformers (and laion_clap's import) hang for minutes.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
DEMO := demo_out
# The published packages whose model code the real backends use, installed without their
# dependencies (they would pin numpy<2 or replace torch with a CUDA build; see pyproject's extras).
REFERENCE_PACKAGES := laion_clap==1.1.7 msclap==1.3.4 audiobox_aesthetics==0.0.4 \
	frechet_audio_distance==0.3.4 torchvggish==0.2 torchopenl3==1.0.1 hear21passt==0.0.26

.PHONY: test demo bench lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first, from the builds this machine serves (torchvision is what laion_clap needs);
	# a plain `pip install torch` would download a multi-GB CUDA build.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev,laion,msclap,aesthetics,fad,passt]'
	$(PY) -m pip install -q --no-deps $(REFERENCE_PACKAGES)
	touch $@

test: $(VENV)/.installed
	$(PY) -m pytest -q --durations=15

demo: $(VENV)/.installed
	rm -rf $(DEMO)
	$(PY) -m ttaeval.demo $(DEMO)/audio
	for system in clean noisy wrong faulty; do \
	  $(BIN)/ttaeval score $(DEMO)/audio/$$system --prompts $(DEMO)/audio/acc_prompt.json \
	    --scorer clap:mini --scorer signal --out $(DEMO)/run || test $$? -eq 1 || exit 2; \
	done
	$(BIN)/ttaeval export $(DEMO)/run --format csv -o $(DEMO)/clips.csv
	$(BIN)/ttaeval leaderboard $(DEMO)/run --format md -o $(DEMO)/leaderboard.md
	cat $(DEMO)/leaderboard.md

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_frechet.py
	$(PY) benchmarks/bench_clap_laion.py
	$(PY) benchmarks/bench_judge.py

lint: $(VENV)/.installed
	$(BIN)/ruff check ttaeval resonate_train tests benchmarks
	$(BIN)/ruff format --check ttaeval resonate_train tests benchmarks

clean:
	rm -rf $(DEMO) .pytest_cache
