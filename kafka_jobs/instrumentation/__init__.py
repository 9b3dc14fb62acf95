"""Instrumentation: the event bus and what subscribes to it, and what reports on workers.

events (the bus and every event name), logs, metrics, summary line, tracing,
progress bars, the status publisher (`publisher`) and the status reader (`status`).
"""
