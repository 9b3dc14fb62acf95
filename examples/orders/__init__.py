"""The orders example: enqueue orders, process them with a worker, print a summary."""
