# llmq: the two commands a newcomer needs are `make demo` and `make test`.
SWIFT ?= swift
BACKEND ?= sim

.PHONY: all build release deps demo test test-unit llama-server compose-check clean

all: build

deps:
	@scripts/deps.sh

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release --static-swift-stdlib --product llmq

## make demo [BACKEND=sim|llama-cpp]: redis-server, a backend, two workers, requests, replies, status.
demo: release
	@if [ "$(BACKEND)" = llama-cpp ]; then scripts/llama-server.sh build >/dev/null && scripts/llama-server.sh model >/dev/null; fi
	BACKEND=$(BACKEND) scripts/demo.sh

## make test: every test, including the end-to-end tests against a real llama-server
## (built once per machine into ~/.cache/llmq).
test: deps llama-server
	LLAMA_SERVER_BIN="$$(scripts/llama-server.sh build)" LLMQ_MODEL="$$(scripts/llama-server.sh model)" \
		$(SWIFT) test --no-parallel

## make test-unit: the tests that need no llama-server.
test-unit: deps
	$(SWIFT) test --no-parallel --skip LlamaServer

llama-server:
	@scripts/llama-server.sh build >/dev/null
	@scripts/llama-server.sh model >/dev/null

compose-check:
	docker-compose -f docker-compose.yml config -q

clean:
	rm -rf .build
