"""Connection and runtime settings, read from the environment (prefix ``HERDER_``)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class HerderSettings(BaseSettings):
    """Everything a client or worker needs to reach Redis.

    URL, ACL user/password, TLS and Sentinel all come from here so that no code path
    hard-codes a connection.
    """

    model_config = SettingsConfigDict(env_prefix="HERDER_", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_username: str | None = None
    redis_password: SecretStr | None = None
    redis_tls: bool = False
    redis_tls_ca_certs: str | None = None
    redis_tls_certfile: str | None = None
    redis_tls_keyfile: str | None = None
    redis_tls_check_hostname: bool = True
    # Sentinel: "host:port,host:port" plus the master's name.
    redis_sentinels: str | None = None
    redis_sentinel_master: str = "mymaster"
    # The sentinels' own ACL user/password (Sentinel `requirepass` / `user`), when they have one;
    # redis_username/redis_password are the master's.
    redis_sentinel_username: str | None = None
    redis_sentinel_password: SecretStr | None = None
    # Redis Cluster: redis_url names any node; the client learns the others from it. Every key of
    # a queue carries the queue's hash tag, so a queue lives in one slot (docs/runtime.md).
    redis_cluster: bool = False
    redis_connect_timeout: float = Field(default=2.0, gt=0)
    key_prefix: str = "herder"
    lease_seconds: float = Field(default=10.0, gt=0.5, le=3600)
    # Size caps on what a task stores (HERDER_MAX_*): past a cap the value is replaced by a
    # truncation marker (herder.limits), never stored whole and never silently dropped.
    max_result_bytes: int = Field(default=1 << 20, ge=1024, le=64 << 20)
    max_error_chars: int = Field(default=4096, ge=256, le=1 << 20)
    max_traceback_chars: int = Field(default=16_384, ge=256, le=1 << 20)
    max_progress_bytes: int = Field(default=64 << 10, ge=1024, le=16 << 20)
    max_log_event_bytes: int = Field(default=8192, ge=256, le=1 << 20)
    # The log keeps the newest events; its total is at most max_log_events * max_log_event_bytes.
    max_log_events: int = Field(default=2000, ge=10, le=100_000)

    @model_validator(mode="after")
    def _one_topology(self) -> HerderSettings:
        if self.redis_cluster and self.redis_sentinels:
            raise ValueError("redis_cluster and redis_sentinels exclude each other: choose one")
        if self.redis_cluster and (error := cluster_url_error(self.redis_url)):
            raise ValueError(error)
        return self

    @field_validator("key_prefix")
    @classmethod
    def _prefix_ok(cls, v: str) -> str:
        if not v or any(c in v for c in "{} \n"):
            raise ValueError("key_prefix must be non-empty and contain no braces or whitespace")
        return v


def cluster_url_error(url: str) -> str | None:
    """Why `url` cannot name a Redis Cluster node, or None. A cluster has only database 0 and
    is reached over TCP."""
    try:
        parts = urlsplit(url)
        db = parts.path.strip("/") or dict(parse_qsl(parts.query)).get("db", "0")
    except ValueError:
        return "redis_url is not a valid URL"
    if parts.scheme not in ("redis", "rediss"):
        return f"redis_cluster needs a redis:// or rediss:// URL, not {parts.scheme}://"
    if db != "0":
        return f"redis_cluster: a Redis Cluster has only database 0, the URL names database {db}"
    return None


def url_has_password(url: str) -> bool:
    """True when the URL carries a password (in the userinfo or redis-py's ?password=)."""
    try:
        parts = urlsplit(url)
        return parts.password is not None or any(k == "password" for k, _ in parse_qsl(parts.query))
    except ValueError:
        return False


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, for output and logs."""
    try:
        parts = urlsplit(url)
        if not url_has_password(url):
            return url
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
        query = urlencode([(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query)], safe="*")
        # Built by hand: urlunsplit drops the empty authority of unix:///path.
        return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
    except ValueError:
        return "<unparseable URL>"


PASSWORD_IN_URL_WARNING = (
    "the Redis password is in --redis-url, where other local users can read it (ps, shell "
    "history): set HERDER_REDIS_PASSWORD in the environment instead"
)
