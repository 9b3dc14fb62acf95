"""Processing: what worker threads own. Jobs, the executor, the failure policy, lanes, pools.

Given a task registry, settings, the event bus and a failure policy (see `ports`),
never the App. The pure parts (offset tracker, lane splitter, retry decision,
scheduler) have no I/O and no threads.
"""
