"""How kafka-jobs talks to the cluster: admin helpers and broker feature probes.

The home of everything that drives Kafka clients for the worker, the delay
dispatcher and the Celery bridge (see ARCHITECTURE in the README's layout).
"""
