# The README's commands. Every target runs `setup` first, so on a fresh
# machine `make test` and `make book` are all a newcomer types.
PY      := .venv/bin/python
BIN     := .venv/bin
SCALE   ?= quick
OUT     ?= results/$(SCALE)
FIGURES ?= fig1,fig2,fig3

.PHONY: setup test book reproduce bench clean

## setup: virtual environment, editable install with extras, data fetched and verified, MathJax vendored (idempotent)
setup: .venv/.installed
	$(BIN)/dendnorm data fetch
	$(BIN)/dendnorm book fetch-mathjax

.venv/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[book,dev]"
	touch $@

## test: the whole test suite (units, data, notebooks at smoke scale, book build, browser check)
test: setup
	$(BIN)/pytest

## reproduce: run the figure notebooks with papermill (SCALE=smoke|quick|paper)
reproduce: setup
	$(BIN)/dendnorm reproduce --scale $(SCALE) --figures $(FIGURES) --out $(OUT) --resume

## book: reproduce at SCALE (default quick), then build the HTML book from those results
book: reproduce
	$(BIN)/dendnorm book build --results $(OUT)

## bench: engine against the per-example numpy reference
bench: setup
	$(PY) benchmarks/speed.py

clean:
	rm -rf _build build
