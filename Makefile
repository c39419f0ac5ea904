# `make demo` and `make test` each do the whole set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint dist bench clean examples docs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=25.1"
	# torch first: the pinned CPU wheel; a bare `torch` requirement would pull CUDA.
	$(PY) -m pip install --quiet torch==2.13.0
	# tensorflow-cpu provides `tensorflow` without the GPU build.
	$(PY) -m pip install --quiet tensorflow-cpu
	$(PY) -m pip install --quiet -e ".[torch,jax,ecos,mlx,dask,ray,numba]" --group dev
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/quickstart.py

# The gallery at full size, one example after another (about 5 minutes on 2 cores);
# each prints its final metrics and saves its figure into out/examples/.
GALLERY := $(filter-out examples/_common.py examples/quickstart.py,$(wildcard examples/*.py))
examples: $(STAMP)
	@for f in $(GALLERY); do echo "== $$f"; $(PY) $$f --out out/examples || exit 1; done

# The documentation site, into out/site (mkdocs build --strict: warnings are errors).
# Gallery figures: those of `make examples` (out/examples) if present, else quick runs.
docs: $(STAMP)
	rm -rf out/gallery
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

# The sdist and the wheel, into dist/ (`python -m build` fetches setuptools for its
# isolated build environment).
dist: $(STAMP)
	$(PY) -m build

# `make bench BENCH_ARGS=--quick` for the two-minute version.
BENCH_ARGS ?=
bench: $(STAMP)
	# Naming the torch pin keeps pip from ever resolving another (CUDA) torch.
	$(PY) -m pip install --quiet --group bench torch==2.13.0
	# qpth's metadata pins numpy<2 (see pyproject.toml): install it without its deps.
	$(PY) -m pip install --quiet --no-deps qpth==0.0.18
	$(PY) benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info
