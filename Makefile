# Two commands: `make demo` and `make test`. Each creates .venv and installs on first use; a
# second run installs nothing (the stamp below is newer than every install input).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.moep-installed
INSTALL_INPUTS := requirements/cpu.txt pyproject.toml standin/sgl_kernel/pyproject.toml Makefile
PYTEST_ARGS ?=

.PHONY: install demo test bench-install clean

install: $(STAMP)

$(STAMP): $(INSTALL_INPUTS)
	@echo "== installing the environment into $(VENV) (first run only) =="
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/cpu.txt
	$(PY) -m pip install -q --no-deps sglang==0.5.17
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "GPU found: install sglang-kernel yourself (pip install -e '.[gpu]')"; \
	else \
		$(PY) -m pip install -q ./standin/sgl_kernel; \
	fi
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/moep-sglang demo

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# Benchmark extras (SGLang's router, matplotlib); the benchmarks themselves: see bench/README.md.
# sglang-router 0.3.2 (the gateway's last release under that name) goes in a folder of its own:
# it installs an `smg` command too (bench/compare_routers.py, system sglang_router:POLICY).
bench-install: $(STAMP)
	$(PY) -m pip install -q -r requirements/bench.txt
	$(PY) -m pip install -q --no-deps --upgrade --target .cache/sglang-router-0.3.2 sglang-router==0.3.2

clean:
	rm -rf $(VENV) .cache
