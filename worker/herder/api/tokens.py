"""API tokens: scoped to queues and verbs, stored hashed.

A token reads ``hdr_<id>_<secret>``: the id (public, 12 hex chars) names the record so it can be
listed and revoked; the secret is 32 random bytes. Only ``sha256(secret)`` is stored: a KDF
(bcrypt, scrypt) protects low-entropy passwords against guessing, which a 256-bit random secret
does not need, and a plain hash keeps each request's check in microseconds.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, Field, ValidationError, field_validator

from herder.errors import InvalidInput
from herder.keys import api_tokens_key, valid_queue

TOKEN_RE = re.compile(r"^hdr_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
ALL_QUEUES = "*"


class Verb(StrEnum):
    submit = "submit"  # enqueue jobs
    read = "read"  # jobs, their events, queue status, task schemas
    operate = "operate"  # cancel, retry, remove


class TokenRecord(BaseModel):
    """What the store keeps about one token (never the token itself)."""

    id: str = Field(pattern=r"^[0-9a-f]{12}$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    name: str = Field(default="", max_length=200)
    queues: list[str] = Field(min_length=1, max_length=1000)
    verbs: list[Verb] = Field(min_length=1)
    created_at: float = 0.0

    @field_validator("queues")
    @classmethod
    def _queues_ok(cls, v: list[str]) -> list[str]:
        for q in v:
            if q != ALL_QUEUES and not valid_queue(q):
                raise ValueError(f"invalid queue name {q!r}")
        return sorted(set(v))

    def allows(self, verb: Verb, queue: str) -> bool:
        return verb in self.verbs and (ALL_QUEUES in self.queues or queue in self.queues)

    def readable(self, queues: Iterable[str]) -> list[str]:
        """The queues among `queues` this token may read."""
        return [q for q in queues if self.allows(Verb.read, q)]

    def public(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"sha256"})


def parse_verbs(text: str) -> list[Verb]:
    verbs = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            verbs.append(Verb(part))
        except ValueError:
            raise InvalidInput(f"unknown verb {part!r} (use {', '.join(v.value for v in Verb)})") from None
    if not verbs:
        raise InvalidInput("give at least one verb (submit, read, operate)")
    return sorted(set(verbs))


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token(queues: list[str], verbs: list[Verb], name: str = "") -> tuple[str, TokenRecord]:
    """A fresh token and the record to store for it. The token is shown once, never stored."""
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    try:
        record = TokenRecord(
            id=token_id, sha256=digest(secret), name=name, queues=queues, verbs=verbs, created_at=time.time()
        )
    except ValidationError as exc:
        raise InvalidInput("; ".join(e["msg"] for e in exc.errors())) from None
    return f"hdr_{token_id}_{secret}", record


def split_token(token: str) -> tuple[str, str] | None:
    m = TOKEN_RE.match(token)
    return (m.group(1), m.group(2)) if m else None


def verify(record: TokenRecord, secret: str) -> bool:
    return hmac.compare_digest(record.sha256, digest(secret))


def parse_record(raw: str | bytes | None) -> TokenRecord | None:
    """A stored record, or None when it is missing or corrupt (a corrupt record grants nothing)."""
    if raw is None:
        return None
    try:
        return TokenRecord.model_validate_json(raw)
    except ValidationError:
        return None


class TokenStore(Protocol):
    async def get(self, token_id: str) -> TokenRecord | None: ...

    async def list(self) -> list[TokenRecord]: ...


class RedisTokenStore:
    """Records in one Redis hash (``<prefix>:api:tokens``); revocation takes effect at once."""

    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis = redis
        self.key = api_tokens_key(prefix)

    async def get(self, token_id: str) -> TokenRecord | None:
        return parse_record(await self.redis.hget(self.key, token_id))

    async def list(self) -> list[TokenRecord]:
        raw = await self.redis.hgetall(self.key)
        return sorted((r for r in map(parse_record, raw.values()) if r), key=lambda r: r.created_at)

    async def add(self, record: TokenRecord) -> None:
        await self.redis.hset(self.key, record.id, record.model_dump_json())

    async def revoke(self, token_id: str) -> bool:
        return bool(await self.redis.hdel(self.key, token_id))


class FileTokenStore:
    """Records in a JSON file (a list of records), e.g. a mounted Kubernetes Secret. Re-read
    when its mtime changes, so a rotated Secret applies without a restart."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._mtime: float | None = None
        self._records: dict[str, TokenRecord] = {}

    def _load(self) -> dict[str, TokenRecord]:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._mtime, self._records = None, {}
            return self._records
        if mtime != self._mtime:
            self._records = {r.id: r for r in read_token_file(self.path)}
            self._mtime = mtime
        return self._records

    async def get(self, token_id: str) -> TokenRecord | None:
        return self._load().get(token_id)

    async def list(self) -> list[TokenRecord]:
        return sorted(self._load().values(), key=lambda r: r.created_at)


def read_token_file(path: Path) -> list[TokenRecord]:
    """Parse a token file; a malformed file is an error (not an empty store that locks all out
    silently, nor a partial one)."""
    try:
        data = json.loads(path.read_text() or "[]")
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot read token file {path}: {exc}") from None
    if not isinstance(data, list):
        raise InvalidInput(f"token file {path}: expected a JSON list of token records")
    out = []
    for n, item in enumerate(data):
        try:
            out.append(TokenRecord.model_validate(item))
        except ValidationError as exc:
            raise InvalidInput(f"token file {path}: record {n}: {exc.errors()[0]['msg']}") from None
    return out


def append_token_file(path: Path, record: TokenRecord) -> None:
    records = read_token_file(path) if path.exists() else []
    records.append(record)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps([r.model_dump(mode="json") for r in records], indent=2) + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)
