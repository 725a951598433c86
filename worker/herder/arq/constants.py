"""arq's constants, unchanged: the compatibility layer keeps arq's queue and health-check names."""

from arq.constants import *  # noqa: F403
from arq.constants import default_queue_name, expires_extra_ms, health_check_key_suffix

__all__ = ["default_queue_name", "expires_extra_ms", "health_check_key_suffix"]
