# Two commands: `make demo` and `make test`. Both build .venv from requirements.lock first.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# torch==2.13.0+cpu: a wheel on this disk where present, else PyTorch's CPU index.
TORCH_SOURCE := $(if $(wildcard /opt/wheels/torch-2.13.0+cpu-*.whl),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu)
UV := $(BIN)/uv
export SLUICE_HOME ?= $(CURDIR)/.sluice
export PREFECT_HOME ?= $(SLUICE_HOME)/prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export GX_ANALYTICS_ENABLED := false
export BENTOML_DO_NOT_TRACK := true
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false
DEMOS := breast_cancer diabetes wine_tuned
# the local Prefect server (UI) and the MLflow UI: ports are yours to choose
export SLUICE_PREFECT_PORT ?= 4200
MLFLOW_PORT ?= 5000

.PHONY: install demo test test-fast lint lock bench ui-prefect ui-mlflow stop clean sbom audit

install: $(VENV)/.installed

# --compile-bytecode: uv writes no .pyc by default, and where PYTHONDONTWRITEBYTECODE is set Python never
# does, so every command compiled pandas, scikit-learn, Prefect... from source again (2-3x slower imports)
$(VENV)/.installed: requirements.lock pyproject.toml
	@command -v $(PY) >/dev/null || { echo "need $(PY) (set PY=python3.11)"; exit 1; }
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@test -x $(UV) || $(BIN)/pip install -q uv==0.13.9
	$(UV) pip install --python $(BIN)/python -q --compile-bytecode $(TORCH_SOURCE) -r requirements.lock
	$(UV) pip install --python $(BIN)/python -q --no-deps -e .
	@touch $@

lock:
	$(UV) pip compile requirements.in -p 3.11 --find-links /opt/wheels --no-header --annotation-style line -o requirements.lock

demo: install
	@$(BIN)/sluice server start || echo "(no local Prefect server: each command uses a temporary API)"
	@for p in $(DEMOS); do \
	  echo "== sluice run configs/$$p.yaml"; \
	  $(BIN)/sluice run configs/$$p.yaml --reason demo || exit $$?; \
	done
	@for p in $(DEMOS); do $(BIN)/sluice deploy configs/$$p.yaml || exit $$?; done
	@for p in $(DEMOS); do $(BIN)/sluice status $$p; done
	@echo
	@echo "Each champion now answers on loopback (make stop stops them):"
	@echo "  curl -s http://127.0.0.1:3101/metadata"
	@echo "  curl -s -X POST http://127.0.0.1:3101/predict -H 'content-type: application/json' -d @examples/breast_cancer.json"
	@echo "  curl -s -X POST http://127.0.0.1:3102/predict -H 'content-type: application/json' -d @examples/diabetes.json"
	@echo "  curl -s -X POST http://127.0.0.1:3103/predict_proba -H 'content-type: application/json' -d @examples/wine_tuned.json"
	@echo
	@echo "What just ran is stored under $(SLUICE_HOME). To look at it:"
	@echo "  Prefect UI: http://127.0.0.1:$(SLUICE_PREFECT_PORT) (already running: flow runs, task runs, artifacts; make stop stops it)"
	@echo "  MLflow UI:  make ui-mlflow    (then open http://127.0.0.1:$(MLFLOW_PORT) - experiments, registered models, aliases)"

# the suite as parallel pytest groups (tests/run_groups.py); logs in build/test-logs/
test: install sbom lint
	$(BIN)/python tests/run_groups.py

# ruff (rules in pyproject.toml): errors that are bugs, and import order
lint: install
	$(BIN)/ruff check .

# CycloneDX SBOM of the lock (a build artifact; CI keeps build/sbom.cdx.json)
sbom: requirements.lock
	@$(PY) infra/sbom.py sbom --out build/sbom.cdx.json

# OSV audit of the lock; exits 3 (never "clean") when the service cannot be reached
audit:
	$(PY) infra/sbom.py audit

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	$(BIN)/python benchmarks/pipeline_overhead.py
	$(BIN)/python benchmarks/validation.py

ui-prefect: install
	$(BIN)/sluice server start

ui-mlflow: install
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow server --backend-store-uri sqlite:///$(SLUICE_HOME)/mlflow.db \
	  --artifacts-destination $(SLUICE_HOME)/mlartifacts --host 127.0.0.1 --port $(MLFLOW_PORT) --workers 1

stop:
	@for p in $(DEMOS); do $(BIN)/sluice stop $$p; done
	@$(BIN)/sluice server stop

clean: stop
	rm -rf $(SLUICE_HOME)
