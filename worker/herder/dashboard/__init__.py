"""The web dashboard: queue depth, workers, the DLQ, job inspection and operations."""

from herder.dashboard.app import create_app

__all__ = ["create_app"]
