"""arq's typing helpers, re-exported."""

from arq.typing import *  # noqa: F403
from arq.typing import __all__ as __all__
