# The two commands: `make up` (the whole stack, locally) and `make test` (the suite).
PYTHON ?= python3
VENV := .venv
LS_VENV := .venv-ls

.PHONY: up test install lint bench clean

$(VENV)/.installed: requirements.txt requirements-tools.txt requirements-offline.txt requirements-offline-tools.txt requirements-dev.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.txt -r requirements-tools.txt -r requirements-dev.txt
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps -r requirements-offline.txt -r requirements-offline-tools.txt
	# The project itself, editable: the `takemeter` command and importable packages.
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

$(LS_VENV)/.installed: requirements-label-studio.txt
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install -q --disable-pip-version-check -r requirements-label-studio.txt
	touch $@

install: $(VENV)/.installed $(LS_VENV)/.installed

## Label Studio + the local LLM + the backend + a demo project with pre-labels.
up: install
	$(VENV)/bin/takemeter up

## Lint (format, style, types, layers), then every test (unit, integration, end-to-end with a real Label Studio).
test: install
	# The browser tests drive Debian's chromium (Playwright downloads no browser).
	test -x /usr/bin/chromium || apt-get install -y chromium
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

## Re-run every benchmark whose result is committed, each with the command its result
## records (hours on 2 cores); the results in benchmarks/results/ are rewritten.
bench: install
	$(VENV)/bin/python -m benchmarks.simulate_promotion
	$(VENV)/bin/python -m benchmarks.bench_train_to_serve --annotations 200
	$(VENV)/bin/python -m benchmarks.bench_train_to_serve --annotations 200 --distributed redis://127.0.0.1:6379/9 --json benchmarks/results/train_to_serve_distributed.json
	$(VENV)/bin/python benchmarks/bench_training.py --examples 200 --epochs 1 --json benchmarks/results/training_200.json
	$(VENV)/bin/python benchmarks/bench_training.py --examples 2000 --epochs 1 --json benchmarks/results/training_2000.json
	$(VENV)/bin/python -m benchmarks.bench_predict --tasks 1000
	$(VENV)/bin/python benchmarks/bench_load.py
	$(VENV)/bin/python -m benchmarks.bench_prelabel --posts 20000
	$(VENV)/bin/python benchmarks/bench_llm_answer.py
	$(VENV)/bin/python benchmarks/bench_label_issues.py
	$(VENV)/bin/python -m benchmarks.bench_learning_curve --seeds 5 --finetune-seeds 1
	$(VENV)/bin/python -m benchmarks.bench_multilabel --seeds 5
	$(VENV)/bin/python -m benchmarks.bench_multilabel --seeds 5 --pool-split --counts 20,50,100,200,400,500

lint: $(VENV)/.installed
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

clean:
	rm -rf .stack
