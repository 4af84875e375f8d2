# Set-up and everyday commands. `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TORCH_VERSION ?= 2.13.0
export OMP_NUM_THREADS ?= 2

.PHONY: demo test bench lint venv install install-dev system-deps sample-data clean

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch first and pinned: an unpinned torch resolves to a multi-GB CUDA build
$(VENV)/.torch: | $(PY)
	$(PIP) install -q "torch==$(TORCH_VERSION)"
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.torch
	$(PIP) install -q -e ".[all]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# Debian packages the tests need: a virtual X server for napari, Qt 6's xcb libraries, and
# the Colin27 scan (mricron-data) that the sample and training data come from
system-deps:
	@if ! command -v Xvfb >/dev/null || [ ! -f /usr/share/mricron/templates/ch2.nii.gz ] || ! ldconfig -p | grep -q libxcb-icccm.so.4 || ! ldconfig -p | grep -q libxcb-cursor.so.0; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
			xvfb xauth libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxkbcommon-x11-0 libxcb-randr0 \
			libxcb-render-util0 libxcb-image0 libxcb-shape0 libxcb-xfixes0 libgl1 libegl1 libfontconfig1 \
			libdbus-1-3 mricron-data >/dev/null; \
	fi

demo: install
	$(VENV)/bin/mrisr demo

test: install-dev system-deps
	$(VENV)/bin/python -m pytest -q

bench: install-dev system-deps
	$(PY) benchmarks/run_all.py

lint: install-dev
	$(VENV)/bin/ruff check mrisr tests benchmarks scripts

sample-data: install-dev system-deps
	$(PY) scripts/make_sample_data.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
