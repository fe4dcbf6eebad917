# Every target bootstraps itself: a fresh clone needs nothing but python3.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

HOST     ?= 127.0.0.1
PORT     ?= 8000
DATA_DIR ?= ./var

# Debian packages some tests use (a real HAProxy in front of two servers); installed when missing
# and running as root, else those tests skip with the reason.
SYSTEM_PACKAGES := haproxy

.PHONY: run test install clean system-packages

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/campus serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

system-packages:
	@missing=""; for p in $(SYSTEM_PACKAGES); do command -v $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing (apt-get)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null 2>&1 \
	      || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null 2>&1; } \
	      || echo "could not install$$missing: the tests that need it are skipped"; \
	  else echo "missing$$missing (apt-get install as root): the tests that need it are skipped"; fi; \
	fi

test: $(STAMP) system-packages
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
