# Set-up and checks for a fresh Debian/Ubuntu machine (run as root, or prefix with sudo).
# torch==2.13.0 is installed first so nothing pulls a CUDA build.
PY ?= python3

.PHONY: install run test test-slow lint

install:
	apt-get install -y dataset-fashion-mnist postgresql || (apt-get update && apt-get install -y dataset-fashion-mnist postgresql)
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e ".[dev,onnx]"

run: install
	$(PY) -m prunesearch run

test: install
	$(PY) -m pytest -q
	$(PY) -m pytest -q -m slow

lint:
	$(PY) -m ruff check .
