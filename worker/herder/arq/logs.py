"""arq's default logging config. herder.arq logs under arq's logger names ('arq.worker',
'arq.jobs'), so an arq app's logging configuration keeps working."""

from arq.logs import default_log_config

__all__ = ["default_log_config"]
