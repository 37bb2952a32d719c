# llmq: the two commands a newcomer needs are `make demo` and `make test`.
SWIFT ?= swift
BACKEND ?= sim

.PHONY: all build release deps demo test test-unit check-size soak test-sanitizers miscompile-check llama-server compose-check clean

# glibc fills every new and freed heap chunk with this byte: memory that was never initialised
# (a lock whose initialising store went to the wrong address, see docs/MISCOMPILE.md) then fails
# at once instead of by luck. Every test run, the demo and the soak use it.
PERTURB = MALLOC_PERTURB_=165

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
	$(PERTURB) BACKEND=$(BACKEND) scripts/demo.sh

## make test: every test, including the end-to-end tests against a real llama-server
## (built once per machine into ~/.cache/llmq).
test: deps llama-server
	$(SWIFT) build --build-tests
	$(PERTURB) LLAMA_SERVER_BIN="$$(scripts/llama-server.sh build)" LLMQ_MODEL="$$(scripts/llama-server.sh model)" \
		$(SWIFT) test --skip-build --no-parallel

## make test-unit: the pure-logic tests (Tests/UnitTests): no process, no socket, seconds.
test-unit: deps
	$(SWIFT) build --build-tests
	$(PERTURB) $(SWIFT) test --skip-build --filter LLMQUnitTests

## make check-size: no Sources file over 500 lines, no function over 80.
check-size:
	scripts/check-size.py Sources

## make soak: the release binary users run, checked for the shape of the Swift 6.3.1 miscompile
## (docs/MISCOMPILE.md), then three workers under combined faults (2,000 requests).
soak: release
	scripts/check-binary.sh .build/release/llmq
	$(SWIFT) build --build-tests
	$(PERTURB) LLMQ_BIN=.build/release/llmq LLMQ_SOAK_REQUESTS=2000 $(SWIFT) test --skip-build --filter SoakTests

## make test-sanitizers: the fault, fuzz, streaming and ownership suites built with AddressSanitizer,
## then with ThreadSanitizer (each in a build folder of its own).
SANITIZED_SUITES = FaultTests|FuzzTests|StreamingTests|OwnershipTests|ReplyMarkerTests
test-sanitizers: deps
	$(SWIFT) build --build-tests --scratch-path .build-asan --sanitize address
	LSAN_OPTIONS=suppressions=$(CURDIR)/Tests/lsan-suppressions.txt \
		$(SWIFT) test --skip-build --no-parallel --scratch-path .build-asan --sanitize address --filter '$(SANITIZED_SUITES)'
	$(SWIFT) build --build-tests --scratch-path .build-tsan --sanitize thread
	TSAN_OPTIONS=halt_on_error=1 $(SWIFT) test --skip-build --no-parallel --scratch-path .build-tsan --sanitize thread --filter '$(SANITIZED_SUITES)'

## make miscompile-check: does this toolchain still miscompile docs/miscompile? (never fails)
miscompile-check:
	@docs/miscompile/check.sh

llama-server:
	@scripts/llama-server.sh build >/dev/null
	@scripts/llama-server.sh model >/dev/null

compose-check:
	docker-compose -f docker-compose.yml config -q

clean:
	rm -rf .build
