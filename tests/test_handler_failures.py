"""How a handler failure is described on the TaskQueue and how fast it is retried (pure parts)."""

from __future__ import annotations

import json

from kubernetes.client.exceptions import ApiException

from herder_operator.handlers import backoff, describe_failure


def api_error(status: int, body: dict[str, object]) -> ApiException:
    exc = ApiException(status=status, reason="Unprocessable Entity")
    exc.body = json.dumps(body)
    return exc


def test_a_rejected_deployment_names_every_refused_field() -> None:
    body = {
        "kind": "Status",
        "status": "Failure",
        "reason": "Invalid",
        "message": 'Deployment.apps "q-workers" is invalid: ...',
        "details": {
            "name": "q-workers",
            "kind": "Deployment",
            "causes": [
                {"field": "spec.template.spec.containers[0].name", "message": 'Invalid value: "Bad_Name"'},
                {
                    "field": "spec.template.spec.containers[0].ports[0].containerPort",
                    "message": "must be 1-65535",
                },
            ],
        },
        "code": 422,
    }
    reason, message = describe_failure(api_error(422, body))
    assert reason == "DeploymentRejected"
    assert "Deployment q-workers" in message
    assert "spec.template.spec.containers[0].name: Invalid value" in message
    assert "containerPort: must be 1-65535" in message


def test_other_failures_get_their_own_reasons() -> None:
    assert describe_failure(api_error(403, {"message": "pods is forbidden"}))[0] == "Forbidden"
    assert describe_failure(api_error(500, {"message": "etcd"}))[0] == "KubernetesAPIError"
    garbage = ApiException(status=502, reason="Bad Gateway")
    garbage.body = "<html>not json</html>"
    assert describe_failure(garbage) == ("KubernetesAPIError", "HTTP 502: Bad Gateway")
    assert describe_failure(KeyError("password"))[0] == "SecretKeyMissing"
    reason, message = describe_failure(RuntimeError("x" * 5000))
    assert reason == "ReconcileError" and len(message) <= 1024


def test_backoff_grows_and_is_capped_lower_for_transient_errors() -> None:
    assert [backoff("DeploymentRejected", n) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert backoff("DeploymentRejected", 50) == 300.0
    assert backoff("KubernetesAPIError", 50) == 30.0
    assert backoff("ReconcileError", 0) == 2.0
