# Two entry points for a fresh machine with Python 3.11 and make: `make demo`, `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo celery-demo test test-kafka test-kip848 test-cluster lint bench broker broker-kafka clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or make PYTHON=python3)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(VENV)/.installed  ## run the orders demo on the embedded broker
	$(BIN)/python -m examples.orders.demo

celery-demo: $(VENV)/.installed  ## Celery with kafkajobs:// as its broker, on the embedded broker
	$(BIN)/python -m examples.celery_app.demo

test: $(VENV)/.installed  ## the whole test suite against a real broker
	@# pytest exits 5 when it collected no test: that is a failure here, not a pass.
	$(BIN)/python -m pytest $(PYTEST_ARGS); code=$$?; \
	if [ $$code -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$code

# The same suite on Apache Kafka (needs java; mvn fetches the jars once into ~/.cache/kafka-jobs).
test-kafka: $(VENV)/.installed  ## the whole test suite on one Apache Kafka node
	KAFKA_JOBS_TEST_BROKER=apache $(BIN)/python -m pytest $(PYTEST_ARGS); code=$$?; \
	if [ $$code -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$code

KIP848_TESTS := tests/integration/test_group_protocol.py tests/integration/worker/test_long_running.py \
	tests/integration/processing/test_virtual_partitions.py \
	tests/integration/worker/test_rebalance_long_jobs.py \
	tests/chaos/test_rebalance_storm.py tests/bridge/test_tasks.py

test-kip848: $(VENV)/.installed  ## group-protocol-sensitive tests with KIP-848 groups on Apache Kafka
	KAFKA_JOBS_TEST_BROKER=apache KAFKA_JOBS_GROUP_PROTOCOL=consumer \
	$(BIN)/python -m pytest $(KIP848_TESTS) $(PYTEST_ARGS); code=$$?; \
	if [ $$code -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$code

test-cluster: $(VENV)/.installed  ## failure scenarios on a three-node Apache Kafka cluster
	KAFKA_JOBS_TEST_BROKER=apache3 $(BIN)/python -m pytest -m cluster $(PYTEST_ARGS); code=$$?; \
	if [ $$code -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$code

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(VENV)/.installed
	$(BIN)/python -m bench.throughput

broker: $(VENV)/.installed
	$(BIN)/kafka-jobs broker

broker-kafka: $(VENV)/.installed  ## Apache Kafka on localhost:9092 (Ctrl-C stops it)
	$(BIN)/kafka-jobs broker --apache

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
