"""Benchmarks of kafka-jobs against raw confluent-kafka and Celery (see bench/RESULTS.md)."""
