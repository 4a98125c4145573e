# Two commands do all set-up: `make demo` (main job on the embedded model) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# A portable llama.cpp build (no -march=native), without the multimodal tools: about 4 minutes on 2 cores.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF

.PHONY: install demo test benchmark clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# setuptools tells every editable install of a finder-mapped package to beware of same-named folders; here
	@# the only installed name is labelloop, which is the repository itself
	PYTHONWARNINGS="ignore:Editable installation" $(PY) -m pip install --quiet -e ".[model,test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/labelloop run data/example/config.yaml

test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest --llm_call tests

benchmark: install
	$(PY) benchmarks/youtube.py

clean:
	rm -rf $(VENV) data/example/runs data/example/.labelloop benchmarks/.cache
