# VideoMage for ComfyUI. `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# where torch comes from: the default index, or e.g. TORCH_INDEX=https://download.pytorch.org/whl/cpu for
# the CPU-only wheel on a Linux machine without a GPU (PyPI's Linux torch brings the CUDA libraries)
TORCH_INDEX ?=
export PIP_DISABLE_PIP_VERSION_CHECK := 1

LATEST ?= .venv-latest
LPY := $(LATEST)/bin/python

.PHONY: install test test-latest lock demo bench quality workflows test-comfyui clean

install: $(STAMP)

# torch is pinned by constraints.txt for every install, so nothing upgrades it (or pulls CUDA builds
# on CPU machines); torchvision is deliberately absent. Everything else comes from the lock
# (requirements-lock.txt), so `make test` and CI run on the releases the suite was last proven on;
# requirements.txt keeps ranges for users installing into ComfyUI's own environment.
$(STAMP): requirements.txt requirements-dev.txt constraints.txt requirements-lock.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch
	$(PY) -m pip install -q -c constraints.txt -r requirements-lock.txt
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m pip check
	touch $(STAMP)

test: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) -m pytest -q

# the same suite on the newest releases that requirements.txt admits (torch stays pinned: see above)
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LPY) -m pip install -q -c constraints.txt $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch
	$(LPY) -m pip install -q -U -c constraints.txt -r requirements.txt -r requirements-dev.txt
	$(LPY) -m pip install -q --no-deps -e .
	$(LPY) -m pip list --format=freeze | grep -iE '^(torch|diffusers|transformers|peft|tokenizers|safetensors|numpy|huggingface.hub|accelerate)=='
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(LPY) -m pytest -q

# rewrite the lock from a fresh resolution of requirements.txt + requirements-dev.txt
lock:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LPY) -m pip install -q -c constraints.txt $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch
	$(LPY) -m pip install -q -c constraints.txt -r requirements.txt -r requirements-dev.txt
	{ sed -n '1,2p' requirements-lock.txt; $(LPY) -m pip freeze --exclude-editable | grep -v '^torch=='; } > requirements-lock.txt.new
	mv requirements-lock.txt.new requirements-lock.txt

demo: $(STAMP)
	$(PY) -m videomage_core demo --out outputs/demo

bench: $(STAMP)
	$(PY) -m bench.run

# VideoMage vs its ablations, their controls (tau = 0, noise prior off), MotionDirector and two options beyond
# the paper on the built-in ShapesWorld model (exact measures; 13 videos per cell at 32 px: hours on 2 cores at
# the default 4 pairs x 2 seeds, minutes on a GPU; LoRAs and measured cells are cached in outputs/quality, so a
# run resumes); writes bench/quality.json and bench/RESULTS.md
quality: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) -m bench.quality

# regenerate the bundled workflows (UI + API twins + thumbnails) from the node definitions
workflows: $(STAMP)
	$(PY) scripts/build_workflows.py

# only the tests against a real ComfyUI (COMFYUI_DIR, or ~/ComfyUI); they skip without one
test-comfyui: $(STAMP)
	$(PY) -m pytest -q tests/test_comfyui_server.py tests/test_comfyui_browser.py tests/test_comfyui_exports.py

clean:
	rm -rf $(VENV) $(LATEST) outputs .pytest_cache
