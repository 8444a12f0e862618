# VideoMage for ComfyUI. `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# where torch comes from: the default index, or e.g. TORCH_INDEX=https://download.pytorch.org/whl/cpu for
# the CPU-only wheel on a Linux machine without a GPU (PyPI's Linux torch brings the CUDA libraries)
TORCH_INDEX ?=
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install test demo bench quality workflows test-comfyui clean

install: $(STAMP)

# torch is pinned by constraints.txt for every install, so nothing upgrades it (or pulls CUDA builds
# on CPU machines); torchvision is deliberately absent.
$(STAMP): requirements.txt requirements-dev.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch
	$(PY) -m pip install -q -c constraints.txt -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

test: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) -m pytest -q

demo: $(STAMP)
	$(PY) -m videomage_core demo --out outputs/demo

bench: $(STAMP)
	$(PY) -m bench.run

# VideoMage vs its ablations and a MotionDirector-style baseline on the built-in ShapesWorld model
# (exact measures; about an hour on 2 cores, 30 min once its LoRAs are cached in outputs/quality); writes bench/quality.json and bench/RESULTS.md
quality: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) -m bench.quality

# regenerate the bundled workflows (UI + API twins + thumbnails) from the node definitions
workflows: $(STAMP)
	$(PY) scripts/build_workflows.py

# only the tests against a real ComfyUI (COMFYUI_DIR, or ~/ComfyUI); they skip without one
test-comfyui: $(STAMP)
	$(PY) -m pytest -q tests/test_comfyui_server.py tests/test_comfyui_browser.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
