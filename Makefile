# kube-runbooks: the few commands a newcomer needs.
#
#   make test   set up .venv (and Debian packages when needed), run the test suite
#   make demo   same set-up, start the sandbox, show the cluster, provision a service on it, stop it
#   make lab    sandbox + JupyterLab on 127.0.0.1 with KUBECONFIG pointing at it
#   make lint   ruff over lib/ and tests/, import-linter contracts
#   make clean  remove .venv, .sandbox, caches and run outputs (keeps outputs/README.md)
#
# Every target is idempotent and says what it does.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.pyproject.sha256
# Two distributions: the product (runbooks) and the embedded sandbox (runbooks_sandbox).
PYPROJECTS := pyproject.toml lib/runbooks_sandbox/pyproject.toml
SANDBOX_DIR := .sandbox
SANDBOX_KUBECONFIG := $(SANDBOX_DIR)/kubeconfig
LAB_PORT ?= 8888
# JupyterLab refuses to run as root without being told (the Debian set-up here is root).
LAB_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

# Debian packages later features need (the real Prometheus and Alertmanager for the
# sandbox). Installed only when missing, with a single `apt-get update` first.
DEB_PACKAGES := prometheus prometheus-alertmanager
# Debian splits venv/ensurepip out of the interpreter: ask for it only where it is missing.
VENV_DEB := $(shell $(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1 || echo python3-venv)

.PHONY: help setup venv deps test demo lab lint clean

help:
	@echo "make test   set up .venv and run the test suite"
	@echo "make demo   start the sandbox, show it, run cluster-health, provision a service (plan, approve, verify), stop it"
	@echo "make lab    sandbox + JupyterLab on 127.0.0.1:$(LAB_PORT) (notebooks/)"
	@echo "make lint   ruff check and import contracts"
	@echo "make clean  remove .venv, .sandbox, caches and run outputs"

deps:
	@missing=""; \
	for pkg in $(VENV_DEB) $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$pkg"; \
	done; \
	if [ -z "$$missing" ]; then \
	  echo ">> Debian packages: nothing to install"; \
	else \
	  if [ "$$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; \
	  else echo "!! need root to install Debian packages:$$missing" >&2; exit 1; fi; \
	  echo ">> Debian packages missing:$$missing (apt-get update, then install)"; \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y --no-install-recommends $$missing; \
	fi

venv: deps
	@if [ -z "$(PYTHON)" ]; then echo "!! no python3.11 or python3 on PATH" >&2; exit 1; fi
	@if [ ! -x $(BIN)/python ]; then \
	  echo ">> creating $(VENV) with $(PYTHON)"; \
	  $(PYTHON) -m venv $(VENV); \
	else \
	  echo ">> $(VENV) exists"; \
	fi
	@want=$$(cat $(PYPROJECTS) | sha256sum | cut -d' ' -f1); \
	if [ "$$(cat $(STAMP) 2>/dev/null)" = "$$want" ]; then \
	  echo ">> Python packages: up to date with pyproject.toml"; \
	else \
	  echo ">> installing the product, the sandbox and the test tools into $(VENV) (a pyproject.toml changed)"; \
	  $(BIN)/python -m pip install --quiet --upgrade pip && \
	  $(BIN)/python -m pip install --quiet -e '.[test]' -e lib/runbooks_sandbox && \
	  echo "$$want" > $(STAMP); \
	fi
	@$(BIN)/python tools/install_helm.py

setup: venv

test: setup
	@echo ">> running the test suite"
	$(BIN)/python -m pytest

demo: setup
	@echo ">> demo: start the sandbox, look at it through the library and kubectl, run cluster-health on it,"
	@echo ">>       provision the hello service (dry run, approve the printed plan, verify through the ingress), stop it"
	@started=no; \
	if ! $(BIN)/runbooks sandbox status >/dev/null 2>&1; then \
	  started=yes; \
	  trap 'echo ">> stopping the sandbox"; $(BIN)/runbooks sandbox down' EXIT; \
	  trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 143' TERM; trap '' PIPE; \
	fi; \
	set -eo pipefail; \
	$(BIN)/runbooks sandbox up; \
	echo ">> cluster summary (runbooks sandbox status)"; \
	$(BIN)/runbooks sandbox status; \
	if command -v kubectl >/dev/null; then \
	  echo ">> KUBECONFIG=$(SANDBOX_KUBECONFIG) kubectl get pods -A"; \
	  KUBECONFIG=$(SANDBOX_KUBECONFIG) kubectl get pods -A; \
	else \
	  echo ">> kubectl is not on PATH: skipping 'kubectl get pods -A'"; \
	fi; \
	echo ">> runbooks run cluster-health --env sandbox (exit 1 = findings, as planted in the sandbox)"; \
	set +e; $(BIN)/runbooks run cluster-health --env sandbox; code=$$?; set -e; \
	if [ $$code -gt 1 ]; then echo "!! cluster-health failed (exit $$code)" >&2; exit $$code; fi; \
	echo ">> runbooks run provision-service --env sandbox (dry run: render, diff, plan id)"; \
	$(BIN)/runbooks run provision-service --env sandbox | tee $(SANDBOX_DIR)/demo-provision.txt; \
	plan=$$(sed -n 's/^plan \([0-9a-f]\{12\}\): \([0-9]*\) change.*/\1 \2/p' $(SANDBOX_DIR)/demo-provision.txt); \
	set -- $$plan; \
	if [ -z "$${1:-}" ]; then echo "!! the dry run printed no plan id" >&2; exit 1; fi; \
	if [ "$$2" = 0 ]; then \
	  echo ">> release hello is already installed and up to date: reusing it (the dry run verified it)"; \
	else \
	  echo ">> runbooks run provision-service --env sandbox --approve $$1 (helm upgrade --install, watch, verify)"; \
	  $(BIN)/runbooks run provision-service --env sandbox --approve $$1; \
	fi; \
	echo ">> the service through the ingress, trusting only the sandbox CA file env.yaml names"; \
	$(BIN)/python tools/check_ingress.py hello.example.com --env sandbox; \
	echo ">> open the report paths above in a browser; all runs: outputs/index.html"; \
	if [ $$started = no ]; then echo ">> the sandbox was already running: leaving it up"; fi

lab: setup
	@echo ">> starting the sandbox (if needed) and JupyterLab on http://127.0.0.1:$(LAB_PORT)"
	@$(BIN)/runbooks sandbox up
	@echo ">> KUBECONFIG=$(CURDIR)/$(SANDBOX_KUBECONFIG); stop the sandbox later with: $(BIN)/runbooks sandbox down"
	KUBECONFIG=$(CURDIR)/$(SANDBOX_KUBECONFIG) $(BIN)/jupyter lab --ip 127.0.0.1 --port $(LAB_PORT) \
	  --no-browser --notebook-dir notebooks $(LAB_ROOT)

lint: setup
	@echo ">> ruff check"
	$(BIN)/ruff check
	@echo ">> import contracts (lint-imports: layers, sandbox apart from the product)"
	$(BIN)/lint-imports

clean:
	@echo ">> stopping the sandbox if this checkout started one"
	@if [ -x $(BIN)/runbooks ]; then $(BIN)/runbooks sandbox down || true; fi
	@echo ">> removing $(VENV), $(SANDBOX_DIR), caches and run outputs"
	rm -rf $(VENV) $(SANDBOX_DIR) .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find . -name '*.egg-info' -type d -prune -exec rm -rf {} +
	find outputs -mindepth 1 ! -name README.md -exec rm -rf {} + 2>/dev/null || true
