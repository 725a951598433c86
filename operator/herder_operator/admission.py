"""What a TaskQueue author may ask the operator for: pure checks, no I/O.

A TaskQueue author is a tenant. The operator holds rights they may lack (create Deployments, get
Secrets), so everything it does on their behalf is checked here first, otherwise it would be a
confused deputy:
- worker pods must meet the restricted Pod Security Standard (unless the operator allows more);
- worker pods run as the namespace's default ServiceAccount unless the operator allows others;
- every Secret a worker pod or the operator uses must be labelled for Herder by its owner;
- the operator sends credentials only to allowed Redis hosts.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

CREDENTIALS_LABEL = "herder.dev/credentials"
# Fixed keys of a Redis credentials Secret: a TaskQueue cannot choose other keys.
URL_KEY, USERNAME_KEY, PASSWORD_KEY = "url", "username", "password"

# The restricted profile (https://kubernetes.io/docs/concepts/security/pod-security-standards/).
RESTRICTED_VOLUMES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
APPARMOR_PREFIX = "container.apparmor.security.beta.kubernetes.io/"


def _containers(pod: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for i, c in enumerate(pod.get(kind) or []):
            if isinstance(c, Mapping):
                yield f"{kind}[{c.get('name', i)}]", c


def _sc(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    sc = obj.get("securityContext")
    return sc if isinstance(sc, Mapping) else {}


def _seccomp_bad(sc: Mapping[str, Any]) -> bool:
    prof = sc.get("seccompProfile")
    return isinstance(prof, Mapping) and prof.get("type") not in ("RuntimeDefault", "Localhost")


def _selinux_bad(sc: Mapping[str, Any]) -> bool:
    se = sc.get("seLinuxOptions")
    if not isinstance(se, Mapping):
        return False
    return bool(se.get("user") or se.get("role")) or str(se.get("type") or "") not in SELINUX_TYPES


def pod_violations(pod: Mapping[str, Any], annotations: Mapping[str, str] | None = None) -> list[str]:
    """Each way a pod spec breaks the restricted Pod Security Standard, as a spec path + reason."""
    out: list[str] = []
    for flag in ("hostNetwork", "hostPID", "hostIPC", "hostUsers"):
        value = pod.get(flag)
        if (flag == "hostUsers" and value is True) or (flag != "hostUsers" and value):
            out.append(f"{flag}: {value} shares the node's namespaces")
    psc = _sc(pod)
    pod_non_root = psc.get("runAsNonRoot")
    if psc.get("runAsUser") == 0:
        out.append("securityContext.runAsUser: 0 runs as root")
    if pod_non_root is False:
        out.append("securityContext.runAsNonRoot: false")
    if _seccomp_bad(psc):
        out.append("securityContext.seccompProfile: must be RuntimeDefault or Localhost")
    if _selinux_bad(psc):
        out.append("securityContext.seLinuxOptions: custom SELinux user, role or type")
    for s in psc.get("sysctls") or []:
        if isinstance(s, Mapping) and s.get("name") not in SAFE_SYSCTLS:
            out.append(f"securityContext.sysctls: {s.get('name')} is not a safe sysctl")
    if isinstance(psc.get("windowsOptions"), Mapping) and psc["windowsOptions"].get("hostProcess"):
        out.append("securityContext.windowsOptions.hostProcess: true")
    for v in pod.get("volumes") or []:
        if not isinstance(v, Mapping):
            continue
        kinds = [k for k in v if k != "name"]
        bad = [k for k in kinds if k not in RESTRICTED_VOLUMES]
        if bad:
            out.append(f"volumes[{v.get('name')}]: {', '.join(bad)} volumes are not allowed")
    for key, value in (annotations or {}).items():
        if key.startswith(APPARMOR_PREFIX) and value == "unconfined":
            out.append(f"annotation {key}: unconfined")
    for where, c in _containers(pod):
        sc = _sc(c)
        if sc.get("privileged"):
            out.append(f"{where}.securityContext.privileged: true")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{where}.securityContext.allowPrivilegeEscalation: must be false")
        if sc.get("runAsUser") == 0:
            out.append(f"{where}.securityContext.runAsUser: 0 runs as root")
        non_root = sc.get("runAsNonRoot", pod_non_root)
        if non_root is not True:
            out.append(f"{where}.securityContext.runAsNonRoot: must be true")
        if _seccomp_bad(sc) or ("seccompProfile" not in sc and "seccompProfile" not in psc):
            out.append(f"{where}.securityContext.seccompProfile: must be RuntimeDefault or Localhost")
        if _selinux_bad(sc):
            out.append(f"{where}.securityContext.seLinuxOptions: custom SELinux user, role or type")
        if sc.get("procMount") not in (None, "Default"):
            out.append(f"{where}.securityContext.procMount: {sc.get('procMount')}")
        raw_caps = sc.get("capabilities")
        caps: Mapping[str, Any] = raw_caps if isinstance(raw_caps, Mapping) else {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{where}.securityContext.capabilities.drop: must include ALL")
        added = [a for a in caps.get("add") or [] if a != "NET_BIND_SERVICE"]
        if added:
            out.append(f"{where}.securityContext.capabilities.add: {', '.join(map(str, added))}")
        prof = sc.get("appArmorProfile")
        if isinstance(prof, Mapping) and prof.get("type") == "Unconfined":
            out.append(f"{where}.securityContext.appArmorProfile: Unconfined")
        for p in c.get("ports") or []:
            if isinstance(p, Mapping) and p.get("hostPort"):
                out.append(f"{where}.ports: hostPort {p['hostPort']}")
    return out


def service_account_problems(pod: Mapping[str, Any], allowed: Iterable[str]) -> list[str]:
    """A worker pod runs as the default ServiceAccount without a token unless the operator allows it:
    otherwise a TaskQueue could borrow any ServiceAccount's API rights in the namespace."""
    out = []
    sa = pod.get("serviceAccountName") or pod.get("serviceAccount")
    if sa and sa != "default" and sa not in set(allowed):
        out.append(f"serviceAccountName: {sa} is not in the operator's allowed ServiceAccounts")
    if pod.get("automountServiceAccountToken") is True and not (sa and sa in set(allowed)):
        out.append("automountServiceAccountToken: true needs an allowed serviceAccountName")
    return out


def secret_names(pod: Mapping[str, Any]) -> set[str]:
    """Every Secret a pod spec reads: env, envFrom and volumes (projected ones included)."""
    names: set[str] = set()
    for _, c in _containers(pod):
        for e in c.get("env") or []:
            ref = ((e or {}).get("valueFrom") or {}).get("secretKeyRef") if isinstance(e, Mapping) else None
            if isinstance(ref, Mapping) and ref.get("name"):
                names.add(str(ref["name"]))
        for e in c.get("envFrom") or []:
            ref = (e or {}).get("secretRef") if isinstance(e, Mapping) else None
            if isinstance(ref, Mapping) and ref.get("name"):
                names.add(str(ref["name"]))
    for v in pod.get("volumes") or []:
        if not isinstance(v, Mapping):
            continue
        secret = v.get("secret")
        if isinstance(secret, Mapping) and secret.get("secretName"):
            names.add(str(secret["secretName"]))
        projected = v.get("projected")
        for src in (projected or {}).get("sources") or [] if isinstance(projected, Mapping) else []:
            ref = src.get("secret") if isinstance(src, Mapping) else None
            if isinstance(ref, Mapping) and ref.get("name"):
                names.add(str(ref["name"]))
    return names


def labelled_for_herder(labels: Mapping[str, str] | None) -> bool:
    return (labels or {}).get(CREDENTIALS_LABEL) == "true"


def redis_endpoint(url: str) -> tuple[str, int | None]:
    """Host and port of a Redis URL (unix sockets: the path, no port)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path, None
    return (parts.hostname or "").lower(), parts.port or 6379


def host_allowed(url: str, patterns: Iterable[str]) -> bool:
    """Empty allow-list: any host. Entries are `host`, `host:port` or globs such as `*.redis.svc`."""
    pats = [p.strip().lower() for p in patterns if p.strip()]
    if not pats:
        return True
    host, port = redis_endpoint(url)
    for p in pats:
        if ":" in p and not p.startswith("/"):
            p_host, _, p_port = p.rpartition(":")
            if fnmatch.fnmatchcase(host, p_host) and str(port) == p_port:
                return True
        elif fnmatch.fnmatchcase(host, p):
            return True
    return False
