"""A TaskQueue author is a tenant: the real operator on kmock must not hand them another
application's Secret, nor run the pods they ask for when those break the restricted standard.

The "Redis" here is a listener that records every byte the operator sends it: a stolen password
would show up in it."""

from __future__ import annotations

import base64
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from operator_harness import NS, Cluster, tq_spec, until

from redis_proc import RedisProc, free_port

pytestmark = pytest.mark.timeout(180)


class Listener:
    """A TCP server that answers +OK to everything and keeps what it received."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received = bytearray()
        self.connections = 0
        self._sock = socket.create_server(("127.0.0.1", self.port))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        conn.settimeout(0.5)
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                with self._lock:
                    self.received += data
                conn.sendall(b"+OK\r\n")

    def seen(self, needle: str) -> bool:
        with self._lock:
            return needle.encode() in self.received

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    lst = Listener()
    try:
        yield lst
    finally:
        lst.close()


def put_secret(c: Cluster, name: str, data: dict[str, str], labelled: bool) -> None:
    from kubernetes import client as k8s

    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": str(uuid.uuid4()),
            "labels": {"herder.dev/credentials": "true"} if labelled else {"app": "billing"},
        },
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }
    k8s.CoreV1Api(c.api).create_namespaced_secret(NS, body)


def refused(c: Cluster, name: str) -> dict[str, Any]:
    return until(
        lambda: c.condition(name, "Ready"),
        lambda cond: cond.get("reason") == "Refused",
        60,
        f"{name} refused",
    )


def test_another_apps_secret_never_reaches_a_tenants_redis(
    cluster: Cluster, listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_secret(cluster, "billing-db", {"password": "billing-db-password"}, labelled=False)
    put_secret(cluster, "herder-redis", {"password": "herder-password"}, labelled=True)
    # The attack: any Secret's password, sent (AUTH) to a host the tenant controls.
    cluster.create_tq(
        "steal", tq_spec(listener.url, redis={"url": listener.url, "secretRef": {"name": "billing-db"}})
    )
    cond = refused(cluster, "steal")
    assert cond["status"] == "False" and "billing-db" in cond["message"]
    assert "herder.dev/credentials=true" in cond["message"]
    assert cluster.status("steal")["phase"] == "Invalid"
    # kopf posts Events from a queue of its own: they may trail the status patch.
    until(
        cluster.events,
        lambda evs: any(e.get("reason") == "Refused" and e.get("type") == "Warning" for e in evs),
        30,
        "Refused Warning Event",
    )
    assert cluster.deployment("steal") is None  # workers would have had it in their env
    # Control: a Secret labelled for Herder is used, and the listener does receive what is sent.
    cluster.create_tq(
        "ok", tq_spec(listener.url, redis={"url": listener.url, "secretRef": {"name": "herder-redis"}})
    )
    until(lambda: listener.seen("herder-password"), bool, 60, "the labelled Secret's password sent")
    assert not listener.seen("billing-db-password")

    # An allow-list of Redis hosts: a labelled Secret still goes nowhere else.
    monkeypatch.setenv("HERDER_OPERATOR_REDIS_ALLOWED_HOSTS", "redis.herder.svc:6379")
    put_secret(cluster, "herder-redis-2", {"password": "second-password"}, labelled=True)
    cluster.create_tq(
        "elsewhere",
        tq_spec(listener.url, redis={"url": listener.url, "secretRef": {"name": "herder-redis-2"}}),
    )
    assert "allowed Redis hosts" in refused(cluster, "elsewhere")["message"]
    assert not listener.seen("second-password") and cluster.deployment("elsewhere") is None


def test_privileged_pod_template_is_refused_unless_the_operator_allows_it(
    cluster: Cluster, redis_server: RedisProc, monkeypatch: pytest.MonkeyPatch
) -> None:
    template = {
        "spec": {
            "hostPID": True,
            "serviceAccountName": "deployer",
            "containers": [{"name": "worker", "securityContext": {"privileged": True, "runAsUser": 0}}],
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
        }
    }
    worker = {"image": "herder:dev", "concurrency": 5, "podTemplate": template}
    cluster.create_tq("priv", tq_spec(redis_server.url, worker=worker))
    message = refused(cluster, "priv")["message"]
    for needle in ("hostPID", "privileged", "runAsUser: 0", "hostPath", "deployer"):
        assert needle in message, (needle, message)
    assert cluster.deployment("priv") is None
    # The platform owner may allow it; a spec change is then admitted.
    monkeypatch.setenv("HERDER_OPERATOR_ALLOW_PRIVILEGED_PODS", "true")
    monkeypatch.setenv("HERDER_OPERATOR_ALLOWED_SERVICE_ACCOUNTS", "deployer")
    cluster.patch_spec("priv", {"maxReplicas": 3})
    until(lambda: cluster.deployment("priv"), lambda d: d is not None, 60, "Deployment once allowed")
    pod = cluster.deployment("priv")["spec"]["template"]["spec"]  # type: ignore[index]
    assert pod["hostPID"] is True and pod["serviceAccountName"] == "deployer"
