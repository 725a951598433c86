"""Fixtures of the operator e2e tests: the emulated Kubernetes API (`kube`), and with it a fake
kubelet and the real operator in this process (`cluster`). Helpers: operator_harness.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kube_harness import KmockThread, Kubelet
from operator_harness import NS, Cluster, Kube, create_peering, start_runner


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[Kube]:
    from kubernetes import config

    server = KmockThread().start()
    try:
        kubeconfig = server.kubeconfig(tmp_path / "kubeconfig")
        api = config.new_client_from_config(str(kubeconfig))
        create_peering(api)
        yield Kube(api, kubeconfig)
    finally:
        server.stop()


@pytest.fixture
def cluster(
    kube: Kube, tmp_path: Path, worker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Cluster]:
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
    # The client reads KUBECONFIG once, at import; kopf's login uses this default location.
    monkeypatch.setattr("kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(kube.kubeconfig))
    kubelet = Kubelet(kube.api, NS, worker_env, tmp_path / "pods").start()
    try:
        c = Cluster(kube.api, kube.kubeconfig, kubelet, start_runner())
        try:
            yield c
        finally:
            c.runner.__exit__(None, None, None)
    finally:
        kubelet.stop()
