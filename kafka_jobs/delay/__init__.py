"""Delayed jobs: the delay-tier topics (`tiers`) and the dispatcher thread that moves them."""
