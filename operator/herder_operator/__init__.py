"""Herder operator: TaskQueue spec, scaling policy, worker pools, kopf handlers."""
