"""Server-side printing: ``meta.k8s.io/v1`` Tables, cell for cell what kube-apiserver returns.

Why this module exists: ``kubectl get`` asks the server for a Table
(``Accept: application/json;as=Table;v=v1;g=meta.k8s.io``, on lists and on
watches) and prints exactly the cells it receives; only when the server does not
answer with a Table does it fall back to "NAME AGE". So the READY, STATUS,
RESTARTS columns an SRE reads in the sandbox are computed here, with the same
rules as the real printers (``kubernetes/pkg/printers/internalversion/printers.go``
for built-in kinds, the apiextensions ``tableconvertor`` for custom resources
and the default convertor's "Name, Created At" for everything else), so that a
runbook screenshot from the sandbox reads like one from production.

The server prints every column (``GenerateOptions{Wide: true}``); ``kubectl``
hides those with ``priority`` > 0 unless ``-o wide``. Ages are formatted like
apimachinery's ``duration.HumanDuration`` relative to the ``now`` passed in, so
results are deterministic in tests.

Example:
    >>> from datetime import datetime, timezone
    >>> from runbooks_sandbox.tables import human_duration
    >>> human_duration(3 * 86400 + 7200)
    '3d2h'
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .resources import PrinterColumn, ResourceType

__all__ = ["human_duration", "jsonpath", "parse_time", "to_table"]

Row = list[Any]

# ---- time ---------------------------------------------------------------------


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp (``2024-05-01T10:00:00Z``, fractions allowed) as an aware datetime."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    m = re.match(r"^(.*T\d\d:\d\d:\d\d)\.(\d+)(.*)$", text)
    if m:  # Python < 3.11.x rejects more than 6 fraction digits (MicroTime has 6, some clients send 9)
        text = f"{m[1]}.{m[2][:6].ljust(6, '0')}{m[3]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def human_duration(seconds: float) -> str:
    """apimachinery ``duration.HumanDuration``: "10s", "5m30s", "45m", "2h3m", "10h", "2d3h", "45d", "3y20d"."""
    secs = int(seconds)
    if secs < -1:
        return "<invalid>"
    if secs < 0:
        return "0s"
    if secs < 120:
        return f"{secs}s"
    minutes = secs // 60
    if minutes < 10:
        s = secs % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = secs // 3600
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if dy == 0 else f"{hours // 24 // 365}y{dy}d"
    return f"{hours // 24 // 365}y"


def _since(value: Any, now: datetime) -> str:
    """``translateTimestampSince``: "<unknown>" for a missing timestamp."""
    ts = parse_time(value)
    if ts is None:
        return "<unknown>"
    return human_duration((now - ts).total_seconds())


# ---- small formatters shared with the real printers ------------------------------


def _get(obj: Any, *path: str, default: Any = None) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return default
        obj = obj.get(key)
    return default if obj is None else obj


def _format_labels(labels: Any) -> str:
    """labels.FormatLabels: sorted k=v, "<none>" when empty."""
    if not isinstance(labels, dict) or not labels:
        return "<none>"
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _selector_string(selector: Any) -> str:
    """labels.Selector.String() of a metav1.LabelSelector (requirements sorted by key)."""
    if not isinstance(selector, dict):
        return ""
    reqs: list[tuple[str, str]] = []
    for key, value in (selector.get("matchLabels") or {}).items():
        reqs.append((key, f"{key}={value}"))
    for expr in selector.get("matchExpressions") or []:
        key, op = expr.get("key", ""), expr.get("operator", "")
        values = ",".join(sorted(expr.get("values") or []))
        text = {"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                "Exists": key, "DoesNotExist": f"!{key}"}.get(op, key)
        reqs.append((key, text))
    return ",".join(text for _, text in sorted(reqs, key=lambda r: r[0]))


def _format_label_selector(selector: Any) -> str:
    """metav1.FormatLabelSelector: the selector string, "<none>" when empty."""
    return _selector_string(selector) or "<none>"


def _int_or_string(value: Any) -> str:
    return str(value)


def _containers(spec: Any) -> tuple[str, str]:
    """layoutContainerCells: names and images, comma-separated."""
    containers = _get(spec, "containers", default=[])
    names = ",".join(str(c.get("name", "")) for c in containers if isinstance(c, dict))
    images = ",".join(str(c.get("image", "")) for c in containers if isinstance(c, dict))
    return names, images


def _more(items: list[str], count: int, limit: int, empty: str) -> str:
    text = ",".join(items)
    if count > limit:
        return f"{text} + {count - limit} more..."
    return text or empty


# ---- column definitions -----------------------------------------------------------

_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


@functools.cache
def _doc(definition: str, prop: str) -> str:
    """The API's own field description (what the real printers pass as column description)."""
    try:
        from .validate import definitions

        return definitions(False)[definition]["properties"][prop].get("description", "")
    except Exception:  # noqa: BLE001 - descriptions are decoration; never fail a listing for one
        return ""


def _col(name: str, type_: str = "string", description: str = "", *, priority: int = 0,
         format_: str = "") -> dict:
    return {"name": name, "type": type_, "format": format_, "description": description, "priority": priority}


def _name_col() -> dict:
    return _col("Name", "string", _doc(_META, "name"), format_="name")


def _age_col() -> dict:
    return _col("Age", "string", _doc(_META, "creationTimestamp"))


def _template_cols(*, selector: bool = True, selector_doc: str = "") -> list[dict]:
    cols = [_col("Containers", description="Names of each container in the template.", priority=1),
            _col("Images", description="Images referenced by each container in the template.", priority=1)]
    if selector:
        cols.append(_col("Selector", description=selector_doc, priority=1))
    return cols


# ---- printers: one per kind, returning (columns, cells-of-one-object) -----------------


def _print_pod(pod: dict, now: datetime) -> tuple[Row, list[dict]]:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    restarts = 0
    sidecar_restarts = 0
    ready = 0
    total = len(spec.get("containers") or [])
    last_restart: datetime | None = None
    last_sidecar_restart: datetime | None = None
    phase = status.get("phase") or ""
    reason = status.get("reason") or phase
    conditions = status.get("conditions") or []
    for cond in conditions:
        if cond.get("type") == "PodScheduled" and cond.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"
    row_conditions: list[dict] = []
    if phase == "Succeeded":
        row_conditions = [{"type": "Completed", "status": "True", "reason": "Succeeded",
                           "message": "The pod has completed successfully."}]
    elif phase == "Failed":
        row_conditions = [{"type": "Completed", "status": "True", "reason": "Failed",
                           "message": "The pod failed."}]

    init_specs = {c.get("name"): c for c in spec.get("initContainers") or []}

    def sidecar(name: Any) -> bool:
        return (init_specs.get(name) or {}).get("restartPolicy") == "Always"

    total += sum(1 for c in init_specs.values() if c.get("restartPolicy") == "Always")

    def finished_at(cs: dict) -> datetime | None:
        return parse_time(_get(cs, "lastState", "terminated", "finishedAt"))

    initializing = False
    init_statuses = status.get("initContainerStatuses") or []
    for i, cs in enumerate(init_statuses):
        restarts += int(cs.get("restartCount") or 0)
        done = finished_at(cs)
        if done and (last_restart is None or done > last_restart):
            last_restart = done
        if sidecar(cs.get("name")):
            sidecar_restarts += int(cs.get("restartCount") or 0)
            if done and (last_sidecar_restart is None or done > last_sidecar_restart):
                last_sidecar_restart = done
        state = cs.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting")
        if terminated is not None and int(terminated.get("exitCode") or 0) == 0:
            continue
        if sidecar(cs.get("name")) and cs.get("started"):
            if cs.get("ready"):
                ready += 1
            continue
        if terminated is not None:
            if not terminated.get("reason"):
                if terminated.get("signal"):
                    reason = f"Init:Signal:{terminated['signal']}"
                else:
                    reason = f"Init:ExitCode:{terminated.get('exitCode', 0)}"
            else:
                reason = "Init:" + terminated["reason"]
        elif waiting is not None and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = "Init:" + waiting["reason"]
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break

    initialized = any(c.get("type") == "Initialized" and c.get("status") == "True" for c in conditions)
    if not initializing or initialized:
        restarts = sidecar_restarts
        last_restart = last_sidecar_restart
        has_running = False
        for cs in reversed(status.get("containerStatuses") or []):
            restarts += int(cs.get("restartCount") or 0)
            done = finished_at(cs)
            if done and (last_restart is None or done > last_restart):
                last_restart = done
            state = cs.get("state") or {}
            waiting, terminated = state.get("waiting"), state.get("terminated")
            if waiting is not None and waiting.get("reason"):
                reason = waiting["reason"]
            elif terminated is not None and terminated.get("reason"):
                reason = terminated["reason"]
            elif terminated is not None:
                if terminated.get("signal"):
                    reason = f"Signal:{terminated['signal']}"
                else:
                    reason = f"ExitCode:{terminated.get('exitCode', 0)}"
            elif cs.get("ready") and state.get("running") is not None:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            pod_ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
            reason = "Running" if pod_ready else "NotReady"

    deleting = _get(pod, "metadata", "deletionTimestamp") is not None
    if deleting and status.get("reason") == "NodeLost":
        reason = "Unknown"
    elif deleting and phase not in ("Succeeded", "Failed"):
        reason = "Terminating"

    restarts_text = str(restarts)
    if restarts and last_restart is not None:
        restarts_text = f"{restarts} ({human_duration((now - last_restart).total_seconds())} ago)"

    pod_ips = status.get("podIPs") or []
    ip = (pod_ips[0].get("ip") if pod_ips else None) or status.get("podIP") or "<none>"
    gates = spec.get("readinessGates") or []
    gates_text = "<none>"
    if gates:
        true = 0
        for gate in gates:
            for cond in conditions:
                if cond.get("type") == gate.get("conditionType"):
                    true += cond.get("status") == "True"
                    break
        gates_text = f"{true}/{len(gates)}"
    cells = [
        _get(pod, "metadata", "name", default=""), f"{ready}/{total}", reason, restarts_text,
        _since(_get(pod, "metadata", "creationTimestamp"), now),
        ip, spec.get("nodeName") or "<none>", status.get("nominatedNodeName") or "<none>", gates_text,
    ]
    return cells, row_conditions


def _pod_columns() -> list[dict]:
    return [
        _name_col(),
        _col("Ready", description="The aggregate readiness state of this pod for accepting traffic."),
        _col("Status", description="The aggregate status of the containers in this pod."),
        _col("Restarts", description="The number of times the containers in this pod have been restarted "
             "and when the last container in this pod has restarted."),
        _age_col(),
        _col("IP", description=_doc("io.k8s.api.core.v1.PodStatus", "podIP"), priority=1),
        _col("Node", description=_doc("io.k8s.api.core.v1.PodSpec", "nodeName"), priority=1),
        _col("Nominated Node", description=_doc("io.k8s.api.core.v1.PodStatus", "nominatedNodeName"),
             priority=1),
        _col("Readiness Gates", description=_doc("io.k8s.api.core.v1.PodSpec", "readinessGates"), priority=1),
    ]


def _name_age(obj: dict, now: datetime) -> tuple[str, str]:
    return _get(obj, "metadata", "name", default=""), _since(_get(obj, "metadata", "creationTimestamp"), now)


def _print_deployment(obj: dict, now: datetime) -> Row:
    name, age = _name_age(obj, now)
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    names, images = _containers(_get(spec, "template", "spec"))
    desired = spec.get("replicas", 1)
    return [name, f"{status.get('readyReplicas', 0)}/{desired}", status.get("updatedReplicas", 0),
            status.get("availableReplicas", 0), age, names, images, _selector_string(spec.get("selector"))]


def _deployment_columns() -> list[dict]:
    status = "io.k8s.api.apps.v1.DeploymentStatus"
    return [_name_col(), _col("Ready", description="Number of the pod with ready state"),
            _col("Up-to-date", description=_doc(status, "updatedReplicas")),
            _col("Available", description=_doc(status, "availableReplicas")), _age_col(),
            *_template_cols(selector_doc=_doc("io.k8s.api.apps.v1.DeploymentSpec", "selector"))]


def _print_replicaset(obj: dict, now: datetime) -> Row:
    name, age = _name_age(obj, now)
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    names, images = _containers(_get(spec, "template", "spec"))
    return [name, spec.get("replicas", 1), status.get("replicas", 0), status.get("readyReplicas", 0), age,
            names, images, _format_label_selector(spec.get("selector"))]


def _replicaset_columns() -> list[dict]:
    spec, status = "io.k8s.api.apps.v1.ReplicaSetSpec", "io.k8s.api.apps.v1.ReplicaSetStatus"
    return [_name_col(), _col("Desired", "integer", _doc(spec, "replicas")),
            _col("Current", "integer", _doc(status, "replicas")),
            _col("Ready", "integer", _doc(status, "readyReplicas")), _age_col(),
            *_template_cols(selector_doc=_doc(spec, "selector"))]


def _print_statefulset(obj: dict, now: datetime) -> Row:
    name, age = _name_age(obj, now)
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    names, images = _containers(_get(spec, "template", "spec"))
    return [name, f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}", age, names, images]


def _statefulset_columns() -> list[dict]:
    return [_name_col(), _col("Ready", description="Number of the pod with ready state"), _age_col(),
            *_template_cols(selector=False)]


def _print_daemonset(obj: dict, now: datetime) -> Row:
    name, age = _name_age(obj, now)
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    names, images = _containers(_get(spec, "template", "spec"))
    return [name, status.get("desiredNumberScheduled", 0), status.get("currentNumberScheduled", 0),
            status.get("numberReady", 0), status.get("updatedNumberScheduled", 0),
            status.get("numberAvailable", 0), _format_labels(_get(spec, "template", "spec", "nodeSelector")),
            age, names, images, _format_label_selector(spec.get("selector"))]


def _daemonset_columns() -> list[dict]:
    status = "io.k8s.api.apps.v1.DaemonSetStatus"
    return [_name_col(), _col("Desired", "integer", _doc(status, "desiredNumberScheduled")),
            _col("Current", "integer", _doc(status, "currentNumberScheduled")),
            _col("Ready", "integer", _doc(status, "numberReady")),
            _col("Up-to-date", "integer", _doc(status, "updatedNumberScheduled")),
            _col("Available", "integer", _doc(status, "numberAvailable")),
            _col("Node Selector", description=_doc("io.k8s.api.core.v1.PodSpec", "nodeSelector")), _age_col(),
            *_template_cols(selector_doc=_doc("io.k8s.api.apps.v1.DaemonSetSpec", "selector"))]


def _service_external_ip(svc: dict) -> str:
    spec = svc.get("spec") or {}
    svc_type = spec.get("type") or "ClusterIP"
    external = spec.get("externalIPs") or []
    if svc_type in ("ClusterIP", "NodePort"):
        return ",".join(external) if external else "<none>"
    if svc_type == "LoadBalancer":
        seen = set()
        for ing in _get(svc, "status", "loadBalancer", "ingress", default=[]):
            if ing.get("ip"):
                seen.add(ing["ip"])
            elif ing.get("hostname"):
                seen.add(ing["hostname"])
        lb = ",".join(sorted(seen))  # the server prints wide: never clipped
        if external:
            return ",".join(([*lb.split(",")] if lb else []) + list(external))
        return lb or "<pending>"
    if svc_type == "ExternalName":
        return spec.get("externalName", "")
    return "<unknown>"


def _print_service(obj: dict, now: datetime) -> Row:
    name, age = _name_age(obj, now)
    spec = obj.get("spec") or {}
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    ports = []
    for p in spec.get("ports") or []:
        proto = p.get("protocol") or "TCP"
        ports.append(f"{p.get('port')}:{p['nodePort']}/{proto}" if p.get("nodePort") else f"{p.get('port')}/{proto}")
    return [name, spec.get("type") or "ClusterIP", ips[0] if ips else "<none>", _service_external_ip(obj),
            ",".join(ports) or "<none>", age, _format_labels(spec.get("selector"))]


def _service_columns() -> list[dict]:
    spec = "io.k8s.api.core.v1.ServiceSpec"
    return [_name_col(), _col("Type", description=_doc(spec, "type")),
            _col("Cluster-IP", description=_doc(spec, "clusterIP")),
            _col("External-IP", description=_doc(spec, "externalIPs")),
            _col("Port(s)", description=_doc(spec, "ports")), _age_col(),
            _col("Selector", description=_doc(spec, "selector"), priority=1)]


def _print_endpoints(obj: dict, now: datetime) -> Row:
    name, age = _name_age(obj, now)
    subsets = obj.get("subsets") or []
    items: list[str] = []
    count = 0
    limit = 3
    for ss in subsets:
        addresses = ss.get("addresses") or []
        ports = ss.get("ports") or []
        if not ports:
            for addr in addresses:
                if len(items) < limit:
                    items.append(addr.get("ip", ""))
                count += 1
        else:
            for port in ports:
                for addr in addresses:
                    ip = addr.get("ip", "")
                    host = f"[{ip}]" if ":" in ip else ip
                    if len(items) < limit:
                        items.append(f"{host}:{port.get('port')}")
                    count += 1
    text = "<none>" if not subsets else _more(items, count, limit, "")
    return [name, text, age]


def _endpoints_columns() -> list[dict]:
    return [_name_col(), _col("Endpoints", description=_doc("io.k8s.api.core.v1.Endpoints", "subsets")),
            _age_col()]


def _print_endpointslice(obj: dict, now: datetime) -> Row:
    name, age = _name_age(obj, now)
    ports = obj.get("ports") or []
    port_items = []
    for p in ports[:3]:
        if p.get("port") is not None:
            port_items.append(str(p["port"]))
        elif p.get("name") is not None:
            port_items.append(p["name"])
        else:
            port_items.append("*")
    addresses = [a for ep in obj.get("endpoints") or [] for a in ep.get("addresses") or []]
    return [name, obj.get("addressType", ""), _more(port_items, len(ports), 3, "<unset>"),
            _more(addresses[:3], len(addresses), 3, "<unset>"), age]


def _endpointslice_columns() -> list[dict]:
    kind = "io.k8s.api.discovery.v1.EndpointSlice"
    return [_name_col(), _col("AddressType", description=_doc(kind, "addressType")),
            _col("Ports", description=_doc(kind, "ports")),
            _col("Endpoints", description=_doc(kind, "endpoints")), _age_col()]


def _print_node(obj: dict, now: datetime) -> Row:
    name, age = _name_age(obj, now)
    status = obj.get("status") or {}
    words = []
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            words = ["Ready" if cond.get("status") == "True" else "NotReady"]
    if not words:
        words = ["Unknown"]
    if _get(obj, "spec", "unschedulable"):
        words.append("SchedulingDisabled")
    roles = set()
    for key, value in (_get(obj, "metadata", "labels", default={}) or {}).items():
        if key.startswith("node-role.kubernetes.io/") and key[len("node-role.kubernetes.io/"):]:
            roles.add(key[len("node-role.kubernetes.io/"):])
        elif key == "kubernetes.io/role" and value:
            roles.add(value)
    info = status.get("nodeInfo") or {}

    def address(kind: str) -> str:
        for a in status.get("addresses") or []:
            if a.get("type") == kind:
                return a.get("address", "")
        return "<none>"

    return [name, ",".join(words), ",".join(sorted(roles)) or "<none>", age, info.get("kubeletVersion", ""),
            address("InternalIP"), address("ExternalIP"), info.get("osImage") or "<unknown>",
            info.get("kernelVersion") or "<unknown>", info.get("containerRuntimeVersion") or "<unknown>"]


def _node_columns() -> list[dict]:
    info, status = "io.k8s.api.core.v1.NodeSystemInfo", "io.k8s.api.core.v1.NodeStatus"
    return [_name_col(), _col("Status", description="The status of the node"),
            _col("Roles", description="The roles of the node"), _age_col(),
            _col("Version", description=_doc(info, "kubeletVersion")),
            _col("Internal-IP", description=_doc(status, "addresses"), priority=1),
            _col("External-IP", description=_doc(status, "addresses"), priority=1),
            _col("OS-Image", description=_doc(info, "osImage"), priority=1),
            _col("Kernel-Version", description=_doc(info, "kernelVersion"), priority=1),
            _col("Container-Runtime", description=_doc(info, "containerRuntimeVersion"), priority=1)]


def _print_namespace(obj: dict, now: datetime) -> Row:
    name, age = _name_age(obj, now)
    return [name, _get(obj, "status", "phase", default=""), age]


def _namespace_columns() -> list[dict]:
    return [_name_col(), _col("Status", description="The status of the namespace"), _age_col()]


def _print_event(obj: dict, now: datetime) -> Row:
    first = _since(obj.get("firstTimestamp"), now)
    if parse_time(obj.get("firstTimestamp")) is None:
        first = _since(obj.get("eventTime"), now)
    last = _since(obj.get("lastTimestamp"), now)
    if parse_time(obj.get("lastTimestamp")) is None:
        last = first
    count = obj.get("count") or 0
    series = obj.get("series")
    if series:
        last = _since(series.get("lastObservedTime"), now)
        count = series.get("count", 0)
    elif count == 0:
        count = 1
    involved = obj.get("involvedObject") or {}
    kind = str(involved.get("kind", "")).lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    source = obj.get("source") or {}
    component = source.get("component") or obj.get("reportingComponent") or obj.get("reportingController") or ""
    host = source.get("host") or obj.get("reportingInstance") or ""
    source_text = f"{component}, {host}" if host else component
    return [last, obj.get("type", ""), obj.get("reason", ""), target, involved.get("fieldPath", ""),
            source_text, str(obj.get("message", "")).strip(), first, count,
            _get(obj, "metadata", "name", default="")]


def _event_columns() -> list[dict]:
    ev, ref = "io.k8s.api.core.v1.Event", "io.k8s.api.core.v1.ObjectReference"
    return [_col("Last Seen", description=_doc(ev, "lastTimestamp")),
            _col("Type", description=_doc(ev, "type")), _col("Reason", description=_doc(ev, "reason")),
            _col("Object", description=_doc(ev, "involvedObject")),
            _col("Subobject", description=_doc(ref, "fieldPath"), priority=1),
            _col("Source", description=_doc(ev, "source"), priority=1),
            _col("Message", description=_doc(ev, "message")),
            _col("First Seen", description=_doc(ev, "firstTimestamp"), priority=1),
            _col("Count", description=_doc(ev, "count"), priority=1),
            _col("Name", description=_doc(_META, "name"), priority=1, format_="name")]


def _print_secret(obj: dict, now: datetime) -> Row:
    name, age = _name_age(obj, now)
    return [name, obj.get("type", ""), len(obj.get("data") or {}), age]


def _secret_columns() -> list[dict]:
    kind = "io.k8s.api.core.v1.Secret"
    return [_name_col(), _col("Type", description=_doc(kind, "type")),
            _col("Data", description=_doc(kind, "data")), _age_col()]


def _print_configmap(obj: dict, now: datetime) -> Row:
    name, age = _name_age(obj, now)
    return [name, len(obj.get("data") or {}) + len(obj.get("binaryData") or {}), age]


def _configmap_columns() -> list[dict]:
    return [_name_col(), _col("Data", description=_doc("io.k8s.api.core.v1.ConfigMap", "data")), _age_col()]


def _print_serviceaccount(obj: dict, now: datetime) -> Row:
    name, age = _name_age(obj, now)
    return [name, len(obj.get("secrets") or []), age]


def _serviceaccount_columns() -> list[dict]:
    return [_name_col(), _col("Secrets", description=_doc("io.k8s.api.core.v1.ServiceAccount", "secrets")),
            _age_col()]


def _print_ingress(obj: dict, now: datetime) -> Row:
    name, age = _name_age(obj, now)
    spec = obj.get("spec") or {}
    hosts: list[str] = []
    more = False
    rules = spec.get("rules") or []
    for rule in rules:
        if len(hosts) == 3:
            more = True
        if not more and rule.get("host"):
            hosts.append(rule["host"])
    host_text = ",".join(hosts) if hosts else "*"
    if hosts and more:
        host_text += f" + {len(rules) - 3} more..."
    seen = set()
    for ing in _get(obj, "status", "loadBalancer", "ingress", default=[]):
        if ing.get("ip"):
            seen.add(ing["ip"])
        elif ing.get("hostname"):
            seen.add(ing["hostname"])
    ports = "80, 443" if spec.get("tls") else "80"
    return [name, spec.get("ingressClassName") or "<none>", host_text, ",".join(sorted(seen)), ports, age]


def _ingress_columns() -> list[dict]:
    return [_name_col(),
            _col("Class", description="The name of the IngressClass resource that should be used for "
                 "additional configuration"),
            _col("Hosts", description="Hosts that incoming requests are matched against before the ingress rule"),
            _col("Address", description="Address is a list containing ingress points for the load-balancer"),
            _col("Ports", description="Ports of TLS configurations that open"), _age_col()]


def _print_ingressclass(obj: dict, now: datetime) -> Row:
    name, age = _name_age(obj, now)
    spec = obj.get("spec") or {}
    params = spec.get("parameters")
    text = "<none>"
    if isinstance(params, dict):
        text = params.get("kind", "")
        if params.get("apiGroup") is not None:
            text += "." + params["apiGroup"]
        text += "/" + params.get("name", "")
    return [name, spec.get("controller", ""), text, age]


def _ingressclass_columns() -> list[dict]:
    return [_name_col(), _col("Controller", description="Controller that is responsible for handling this class"),
            _col("Parameters", description="A reference to a resource with additional parameters"), _age_col()]


def _quantity(value: Any) -> str:
    return "<unknown>" if value is None else str(value)


def _hpa_metrics(specs: list[dict], statuses: list[dict]) -> str:
    if not specs:
        return "<none>"
    items = []
    for i, spec in enumerate(specs):
        st = statuses[i] if i < len(statuses) else {}
        kind = spec.get("type")
        if kind == "External":
            target = _get(spec, "external", "target", default={})
            if target.get("averageValue") is not None:
                cur = _get(st, "external", "current", "averageValue")
                items.append(f"{_quantity(cur)}/{target['averageValue']} (avg)")
            else:
                cur = _get(st, "external", "current", "value")
                items.append(f"{_quantity(cur)}/{target.get('value')}")
        elif kind == "Pods":
            cur = _get(st, "pods", "current", "averageValue")
            items.append(f"{_quantity(cur)}/{_get(spec, 'pods', 'target', 'averageValue')}")
        elif kind == "Object":
            target = _get(spec, "object", "target", default={})
            if target.get("averageValue") is not None:
                cur = _get(st, "object", "current", "averageValue")
                items.append(f"{_quantity(cur)}/{target['averageValue']} (avg)")
            else:
                cur = _get(st, "object", "current", "value")
                items.append(f"{_quantity(cur)}/{target.get('value')}")
        elif kind in ("Resource", "ContainerResource"):
            key = "resource" if kind == "Resource" else "containerResource"
            target = _get(spec, key, "target", default={})
            if target.get("averageValue") is not None:
                cur = _get(st, key, "current", "averageValue")
                items.append(f"{_quantity(cur)}/{target['averageValue']}")
            else:
                util = _get(st, key, "current", "averageUtilization")
                cur = f"{util}%" if util is not None else "<unknown>"
                goal = f"{target['averageUtilization']}%" if target.get("averageUtilization") is not None \
                    else "<auto>"
                items.append(f"{cur}/{goal}")
        else:
            items.append("<unknown type>")
    text = ", ".join(items[:2])
    return f"{text} + {len(items) - 2} more..." if len(items) > 2 else text


def _print_hpa(obj: dict, now: datetime) -> Row:
    name, age = _name_age(obj, now)
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    ref = spec.get("scaleTargetRef") or {}
    min_pods = str(spec["minReplicas"]) if spec.get("minReplicas") is not None else "<unset>"
    return [name, f"{ref.get('kind', '')}/{ref.get('name', '')}",
            _hpa_metrics(spec.get("metrics") or [], status.get("currentMetrics") or []), min_pods,
            spec.get("maxReplicas", 0), status.get("currentReplicas", 0), age]


def _hpa_columns() -> list[dict]:
    spec = "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerSpec"
    return [_name_col(), _col("Reference", description=_doc(spec, "scaleTargetRef")),
            _col("Targets", description=_doc(spec, "metrics")),
            _col("MinPods", description=_doc(spec, "minReplicas")),
            _col("MaxPods", description=_doc(spec, "maxReplicas")),
            _col("Replicas", description=_doc("io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus",
                                              "currentReplicas")), _age_col()]


def _print_pdb(obj: dict, now: datetime) -> Row:
    name, age = _name_age(obj, now)
    spec = obj.get("spec") or {}
    min_avail = _int_or_string(spec["minAvailable"]) if spec.get("minAvailable") is not None else "N/A"
    max_unavail = _int_or_string(spec["maxUnavailable"]) if spec.get("maxUnavailable") is not None else "N/A"
    return [name, min_avail, max_unavail, _get(obj, "status", "disruptionsAllowed", default=0), age]


def _pdb_columns() -> list[dict]:
    return [_name_col(), _col("Min Available", description="The minimum number of pods that must be available."),
            _col("Max Unavailable", description="The maximum number of pods that may be unavailable."),
            _col("Allowed Disruptions", "integer",
                 "Calculated number of pods that may be disrupted at this time."), _age_col()]


def _print_default(obj: dict, now: datetime) -> Row:
    """The default table convertor (CRDs themselves, kinds without a printer): Name, Created At."""
    created = parse_time(_get(obj, "metadata", "creationTimestamp"))
    stamp = created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if created else "0001-01-01T00:00:00Z"
    return [_get(obj, "metadata", "name", default=""), stamp]


def _default_columns() -> list[dict]:
    return [_name_col(), _col("Created At", "date", _doc(_META, "creationTimestamp"))]


# ---- the other built-in kinds: declared as (column, type, priority, cell function) ------------

Cell = Callable[[dict, datetime], Any]
_NAME: tuple[str, str, int, Cell] = ("Name", "string", 0, lambda o, now: _get(o, "metadata", "name", default=""))
_AGE: tuple[str, str, int, Cell] = ("Age", "string", 0, lambda o, now: _since(_get(o, "metadata",
                                                                                "creationTimestamp"), now))


def _cond_true(obj: dict, type_: str) -> bool:
    return any(c.get("type") == type_ and c.get("status") == "True"
               for c in _get(obj, "status", "conditions", default=[]) if isinstance(c, dict))


def _job_status(obj: dict, now: datetime) -> str:
    for cond, word in (("Complete", "Complete"), ("Failed", "Failed")):
        if _cond_true(obj, cond):
            return word
    if _get(obj, "metadata", "deletionTimestamp"):
        return "Terminating"
    for cond in ("Suspended", "FailureTarget", "SuccessCriteriaMet"):
        if _cond_true(obj, cond):
            return cond
    return "Running"


def _job_completions(obj: dict, now: datetime) -> str:
    spec, succeeded = obj.get("spec") or {}, _get(obj, "status", "succeeded", default=0)
    if spec.get("completions") is not None:
        return f"{succeeded}/{spec['completions']}"
    parallelism = spec.get("parallelism", 0) or 0
    return f"{succeeded}/1 of {parallelism}" if parallelism > 1 else f"{succeeded}/1"


def _job_duration(obj: dict, now: datetime) -> str:
    start = parse_time(_get(obj, "status", "startTime"))
    if start is None:
        return ""
    end = parse_time(_get(obj, "status", "completionTime")) or now
    return human_duration((end - start).total_seconds())


def _tmpl(*path: str) -> list[tuple[str, str, int, Cell]]:
    return [("Containers", "string", 1, lambda o, now: _containers(_get(o, *path))[0]),
            ("Images", "string", 1, lambda o, now: _containers(_get(o, *path))[1])]


def _access_modes(modes: Any) -> str:
    short = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX", "ReadWriteOncePod": "RWOP"}
    return ",".join(short.get(m, m) for m in modes or [])


def _subjects(kind: str) -> Cell:
    def cell(o: dict, now: datetime) -> str:
        out = []
        for s in o.get("subjects") or []:
            if s.get("kind") == kind:
                out.append(f"{s.get('namespace', '')}/{s.get('name')}" if kind == "ServiceAccount" else s.get("name"))
        return ", ".join(out)
    return cell


def _quota(which: str) -> Cell:
    def cell(o: dict, now: datetime) -> str:
        hard, used = _get(o, "status", "hard", default={}), _get(o, "status", "used", default={})
        keys = sorted(k for k in hard if (k.startswith("limits.") if which == "limit"
                                          else not k.startswith("limits.")))
        return ", ".join(f"{k}: {used.get(k, '0')}/{hard[k]}" for k in keys)
    return cell


def _default_sc(o: dict, now: datetime) -> str:
    name = _get(o, "metadata", "name", default="")
    annotations = _get(o, "metadata", "annotations", default={})
    default = any(annotations.get(k) == "true" for k in ("storageclass.kubernetes.io/is-default-class",
                                                          "storageclass.beta.kubernetes.io/is-default-class"))
    return f"{name} (default)" if default else name


def _or_none(*path: str) -> Cell:
    return lambda o, now: _get(o, *path, default="<none>") if _get(o, *path) not in (None, "") else "<none>"


def _since_or_none(*path: str) -> Cell:
    return lambda o, now: _since(_get(o, *path), now) if _get(o, *path) else "<none>"


def _ref_cell(o: dict, now: datetime) -> str:
    ref = o.get("roleRef") or {}
    return f"{ref.get('kind', '')}/{ref.get('name', '')}"


def _component_status(o: dict, now: datetime) -> str:
    return "Healthy" if any(c.get("type") == "Healthy" and c.get("status") == "True"
                            for c in o.get("conditions") or []) else "Unhealthy"


_COLUMNS: dict[tuple[str, str], list[tuple[str, str, int, Cell]]] = {
    ("batch", "Job"): [_NAME, ("Status", "string", 0, _job_status),
                       ("Completions", "string", 0, _job_completions),
                       ("Duration", "string", 0, _job_duration), _AGE, *_tmpl("spec", "template", "spec"),
                       ("Selector", "string", 1, lambda o, now: _selector_string(_get(o, "spec", "selector")))],
    ("batch", "CronJob"): [_NAME, ("Schedule", "string", 0, lambda o, now: _get(o, "spec", "schedule", default="")),
                           ("Timezone", "string", 0, _or_none("spec", "timeZone")),
                           ("Suspend", "boolean", 0, lambda o, now: bool(_get(o, "spec", "suspend", default=False))),
                           ("Active", "integer", 0, lambda o, now: len(_get(o, "status", "active", default=[]))),
                           ("Last Schedule", "string", 0, _since_or_none("status", "lastScheduleTime")), _AGE,
                           *_tmpl("spec", "jobTemplate", "spec", "template", "spec"),
                           ("Selector", "string", 1, lambda o, now: _selector_string(
                               _get(o, "spec", "jobTemplate", "spec", "selector")) or "<none>")],
    ("", "PersistentVolume"): [
        _NAME, ("Capacity", "string", 0, lambda o, now: _get(o, "spec", "capacity", "storage", default="")),
        ("Access Modes", "string", 0, lambda o, now: _access_modes(_get(o, "spec", "accessModes"))),
        ("Reclaim Policy", "string", 0, lambda o, now: _get(o, "spec", "persistentVolumeReclaimPolicy", default="")),
        ("Status", "string", 0, lambda o, now: _get(o, "status", "phase", default="")),
        ("Claim", "string", 0, lambda o, now: (f"{_get(o, 'spec', 'claimRef', 'namespace')}/"
                                                f"{_get(o, 'spec', 'claimRef', 'name')}")
         if _get(o, "spec", "claimRef") else ""),
        ("StorageClass", "string", 0, lambda o, now: _get(o, "spec", "storageClassName", default="")),
        ("VolumeAttributesClass", "string", 0, _or_none("spec", "volumeAttributesClassName")),
        ("Reason", "string", 0, lambda o, now: _get(o, "status", "reason", default="")), _AGE,
        ("VolumeMode", "string", 1, lambda o, now: _get(o, "spec", "volumeMode", default="<unset>"))],
    ("", "PersistentVolumeClaim"): [
        _NAME, ("Status", "string", 0, lambda o, now: _get(o, "status", "phase", default="")),
        ("Volume", "string", 0, lambda o, now: _get(o, "spec", "volumeName", default="")),
        ("Capacity", "string", 0, lambda o, now: _get(o, "status", "capacity", "storage", default="")),
        ("Access Modes", "string", 0, lambda o, now: _access_modes(_get(o, "status", "accessModes"))),
        ("StorageClass", "string", 0, lambda o, now: _get(o, "spec", "storageClassName", default="")),
        ("VolumeAttributesClass", "string", 0, _or_none("spec", "volumeAttributesClassName")), _AGE,
        ("VolumeMode", "string", 1, lambda o, now: _get(o, "spec", "volumeMode", default="<unset>"))],
    ("storage.k8s.io", "StorageClass"): [
        ("Name", "string", 0, _default_sc), ("Provisioner", "string", 0, lambda o, now: o.get("provisioner", "")),
        ("ReclaimPolicy", "string", 0, lambda o, now: o.get("reclaimPolicy") or "Delete"),
        ("VolumeBindingMode", "string", 0, lambda o, now: o.get("volumeBindingMode") or "Immediate"),
        ("AllowVolumeExpansion", "string", 0, lambda o, now: str(bool(o.get("allowVolumeExpansion"))).lower()),
        _AGE],
    ("rbac.authorization.k8s.io", "RoleBinding"): [
        _NAME, ("Role", "string", 0, _ref_cell), _AGE, ("Users", "string", 1, _subjects("User")),
        ("Groups", "string", 1, _subjects("Group")), ("ServiceAccounts", "string", 1, _subjects("ServiceAccount"))],
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): [
        _NAME, ("Role", "string", 0, _ref_cell), _AGE, ("Users", "string", 1, _subjects("User")),
        ("Groups", "string", 1, _subjects("Group")), ("ServiceAccounts", "string", 1, _subjects("ServiceAccount"))],
    ("coordination.k8s.io", "Lease"): [_NAME, ("Holder", "string", 0, lambda o, now: _get(
        o, "spec", "holderIdentity", default="")), _AGE],
    ("scheduling.k8s.io", "PriorityClass"): [
        _NAME, ("Value", "integer", 0, lambda o, now: o.get("value", 0)),
        ("Global-Default", "boolean", 0, lambda o, now: bool(o.get("globalDefault", False))), _AGE,
        ("PreemptionPolicy", "string", 0, lambda o, now: o.get("preemptionPolicy") or "PreemptLowerPriority")],
    ("networking.k8s.io", "NetworkPolicy"): [
        _NAME, ("Pod-Selector", "string", 0, lambda o, now: _selector_string(_get(o, "spec", "podSelector"))), _AGE],
    ("", "ResourceQuota"): [_NAME, _AGE, ("Request", "string", 0, _quota("request")),
                            ("Limit", "string", 0, _quota("limit"))],
    ("", "ReplicationController"): [
        _NAME, ("Desired", "integer", 0, lambda o, now: _get(o, "spec", "replicas", default=0)),
        ("Current", "integer", 0, lambda o, now: _get(o, "status", "replicas", default=0)),
        ("Ready", "integer", 0, lambda o, now: _get(o, "status", "readyReplicas", default=0)), _AGE,
        *_tmpl("spec", "template", "spec"),
        ("Selector", "string", 1, lambda o, now: _format_labels(_get(o, "spec", "selector")))],
    ("apps", "ControllerRevision"): [
        _NAME, ("Controller", "string", 0, lambda o, now: next(
            (f"{r.get('kind', '').lower()}.{r.get('apiVersion', '').split('/')[0]}/{r.get('name')}"
             for r in _get(o, "metadata", "ownerReferences", default=[]) if r.get("controller")), "<none>")),
        ("Revision", "integer", 0, lambda o, now: o.get("revision", 0)), _AGE],
    ("", "ComponentStatus"): [
        _NAME, ("Status", "string", 0, _component_status),
        ("Message", "string", 0, lambda o, now: next((c.get("message", "") for c in o.get("conditions") or []), "")),
        ("Error", "string", 0, lambda o, now: next((c.get("error", "") for c in o.get("conditions") or []), ""))],
    ("certificates.k8s.io", "CertificateSigningRequest"): [
        _NAME, _AGE, ("SignerName", "string", 0, lambda o, now: _get(o, "spec", "signerName", default="")),
        ("Requestor", "string", 0, lambda o, now: _get(o, "spec", "username", default="")),
        ("RequestedDuration", "string", 0, lambda o, now: human_duration(_get(o, "spec", "expirationSeconds"))
         if _get(o, "spec", "expirationSeconds") else "<none>"),
        ("Condition", "string", 0, lambda o, now: ",".join(
            c.get("type", "") for c in _get(o, "status", "conditions", default=[])) or "Pending")],
    ("apiregistration.k8s.io", "APIService"): [
        _NAME, ("Service", "string", 0, lambda o, now: (f"{_get(o, 'spec', 'service', 'namespace')}/"
                                                        f"{_get(o, 'spec', 'service', 'name')}")
                if _get(o, "spec", "service") else "Local"),
        ("Available", "string", 0, lambda o, now: next(
            (c.get("status", "") + (f" ({c['reason']})" if c.get("status") != "True" and c.get("reason") else "")
             for c in _get(o, "status", "conditions", default=[]) if c.get("type") == "Available"), "Unknown")),
        _AGE],
    ("node.k8s.io", "RuntimeClass"): [_NAME, ("Handler", "string", 0, lambda o, now: o.get("handler", "")), _AGE],
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"): [
        _NAME, ("Webhooks", "integer", 0, lambda o, now: len(o.get("webhooks") or [])), _AGE],
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"): [
        _NAME, ("Webhooks", "integer", 0, lambda o, now: len(o.get("webhooks") or [])), _AGE],
    ("storage.k8s.io", "VolumeAttachment"): [
        _NAME, ("Attacher", "string", 0, lambda o, now: _get(o, "spec", "attacher", default="")),
        ("PV", "string", 0, lambda o, now: _get(o, "spec", "source", "persistentVolumeName", default="")),
        ("Node", "string", 0, lambda o, now: _get(o, "spec", "nodeName", default="")),
        ("Attached", "boolean", 0, lambda o, now: bool(_get(o, "status", "attached", default=False))), _AGE],
    ("storage.k8s.io", "CSINode"): [
        _NAME, ("Drivers", "integer", 0, lambda o, now: len(_get(o, "spec", "drivers", default=[]))), _AGE],
}
"""Printer columns of the kinds printed with simple cell functions (printers.go, column for column)."""


def _declared(key: tuple[str, str]) -> tuple[Callable[[], list[dict]], Callable[[dict, datetime], Row]]:
    cols = _COLUMNS[key]
    return (lambda: [_col(name, type_, priority=prio, format_="name" if name == "Name" else "")
                     for name, type_, prio, _ in cols],
            lambda obj, now: [fn(obj, now) for *_, fn in cols])


_PRINTERS: dict[tuple[str, str], tuple[Callable[[], list[dict]], Callable[[dict, datetime], Row]]] = {
    ("apps", "Deployment"): (_deployment_columns, _print_deployment),
    ("apps", "ReplicaSet"): (_replicaset_columns, _print_replicaset),
    ("apps", "StatefulSet"): (_statefulset_columns, _print_statefulset),
    ("apps", "DaemonSet"): (_daemonset_columns, _print_daemonset),
    ("", "Service"): (_service_columns, _print_service),
    ("", "Endpoints"): (_endpoints_columns, _print_endpoints),
    ("discovery.k8s.io", "EndpointSlice"): (_endpointslice_columns, _print_endpointslice),
    ("", "Node"): (_node_columns, _print_node),
    ("", "Namespace"): (_namespace_columns, _print_namespace),
    ("", "Event"): (_event_columns, _print_event),
    ("", "Secret"): (_secret_columns, _print_secret),
    ("", "ConfigMap"): (_configmap_columns, _print_configmap),
    ("", "ServiceAccount"): (_serviceaccount_columns, _print_serviceaccount),
    ("networking.k8s.io", "Ingress"): (_ingress_columns, _print_ingress),
    ("networking.k8s.io", "IngressClass"): (_ingressclass_columns, _print_ingressclass),
    ("autoscaling", "HorizontalPodAutoscaler"): (_hpa_columns, _print_hpa),
    ("policy", "PodDisruptionBudget"): (_pdb_columns, _print_pdb),
    **{key: _declared(key) for key in _COLUMNS},
}


@functools.cache
def _columns_for(group: str, kind: str) -> tuple[dict, ...]:
    if (group, kind) == ("", "Pod"):
        return tuple(_pod_columns())
    entry = _PRINTERS.get((group, kind))
    return tuple((entry[0] if entry else _default_columns)())


# ---- custom resources: additionalPrinterColumns -------------------------------------

_TOKEN = re.compile(r"""
    \.(?P<field>[A-Za-z0-9_\-]+)               # .field
  | \[\s*(?P<index>-?\d+)\s*\]                  # [0]
  | \[\s*'(?P<quoted>[^']*)'\s*\]               # ['dotted.key']
  | \[\s*\?\(\s*@\.(?P<fpath>[A-Za-z0-9_.\-]+)\s*(?P<op>==|!=)\s*(?P<lit>"[^"]*"|'[^']*'|[^)\s]+)\s*\)\s*\]
  | \[\s*\*\s*\]                                # [*]
""", re.VERBOSE)


def jsonpath(obj: Any, path: str) -> list[Any]:
    """Evaluate the simple JSONPath subset CRD printer columns use; all matches, in order.

    Supports ``.a.b``, ``[0]``, ``['key.with.dots']``, ``[*]`` and filters like
    ``[?(@.type=="Ready")]``. Missing keys give no match (AllowMissingKeys).
    """
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    text = text.removeprefix("$")
    values = [obj]
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            return []
        pos = m.end()
        out: list[Any] = []
        for v in values:
            if m["field"] is not None or m["quoted"] is not None:
                key = m["field"] if m["field"] is not None else m["quoted"]
                if isinstance(v, dict) and key in v:
                    out.append(v[key])
            elif m["index"] is not None:
                if isinstance(v, list):
                    i = int(m["index"])
                    if -len(v) <= i < len(v):
                        out.append(v[i])
            elif m["fpath"] is not None:
                lit = m["lit"]
                want: Any = lit[1:-1] if lit[:1] in "\"'" else _literal(lit)
                for item in v if isinstance(v, list) else []:
                    got = item
                    for part in m["fpath"].split("."):
                        got = got.get(part) if isinstance(got, dict) else None
                    if (got == want) == (m["op"] == "=="):
                        out.append(item)
            else:  # [*]
                if isinstance(v, list):
                    out.extend(v)
                elif isinstance(v, dict):
                    out.extend(v.values())
        values = out
    return values


def _literal(text: str) -> Any:
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _go_print(value: Any) -> str:
    """How JSONPath prints a value into a string column (Go fmt.Fprint)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return "[" + " ".join(_go_print(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go_print(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)


def _custom_cell(col_type: str, value: Any, now: datetime) -> Any:
    """apiextensions tableconvertor ``cellForJSONValue``; None renders as "<none>" in kubectl."""
    if value is None:
        return None
    if col_type == "string":
        return _go_print(value)
    if col_type == "integer":
        if isinstance(value, bool):
            return None
        if isinstance(value, int | float):
            return int(value)
        return None
    if col_type == "number":
        if isinstance(value, bool):
            return None
        return float(value) if isinstance(value, int | float) else None
    if col_type == "boolean":
        return value if isinstance(value, bool) else None
    if col_type == "date":
        if isinstance(value, str):
            ts = parse_time(value)
            return "<invalid>" if ts is None else human_duration((now - ts).total_seconds())
        return None
    return None


def _custom_columns(rt: ResourceType) -> tuple[list[dict], list[tuple[str, str]]]:
    # A CRD version without additionalPrinterColumns gets the apiextensions default: Age.
    cols = list(rt.printer_columns) or [PrinterColumn(name="Age", type="date",
                                                      json_path=".metadata.creationTimestamp")]
    defs = [_name_col()]
    paths = []
    for c in cols:
        desc = c.description or f"Custom resource definition column (in JSONPath format): {c.json_path}"
        defs.append(_col(c.name, c.type, desc, priority=c.priority, format_=c.format))
        paths.append((c.json_path, c.type))
    return defs, paths


# ---- the Table ------------------------------------------------------------------------


def _row_object(obj: dict, rt: ResourceType, include_object: str) -> dict | None:
    if include_object == "None":
        return None
    if include_object == "Object":
        full = dict(obj)
        full.setdefault("kind", rt.kind)
        full.setdefault("apiVersion", rt.api_version)
        return full
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata") or {}}


def to_table(rt: ResourceType, objects: list[dict], *, now: datetime, include_object: str = "Metadata",
             resource_version: str = "", continue_token: str = "", remaining: int | None = None,
             include_columns: bool = True) -> dict:
    """The ``meta.k8s.io/v1`` Table of ``objects`` (all of kind ``rt``), as kube-apiserver prints it.

    ``include_object`` is the ``?includeObject=`` parameter (``None``, ``Metadata`` (default)
    or ``Object``). ``include_columns=False`` leaves ``columnDefinitions`` empty, as the
    server does for every watch event after the first.
    """
    if include_object not in ("None", "Metadata", "Object"):
        raise ValueError(f"includeObject must be one of None, Metadata, Object; got {include_object!r}")
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    rows = []
    if rt.crd:
        columns, paths = _custom_columns(rt)
        for obj in objects:
            cells: list[Any] = [_get(obj, "metadata", "name", default="")]
            for path, col_type in paths:
                found = jsonpath(obj, path)
                cells.append(_custom_cell(col_type, found[0] if found else None, now))
            rows.append((cells, []))
    else:
        columns = [dict(c) for c in _columns_for(rt.group, rt.kind)]
        for obj in objects:
            if (rt.group, rt.kind) == ("", "Pod"):
                cells, conditions = _print_pod(obj, now)
                rows.append((cells, conditions))
                continue
            entry = _PRINTERS.get((rt.group, rt.kind))
            printer = entry[1] if entry else _print_default
            rows.append((printer(obj, now), []))
    table_rows = []
    for (cells, conditions), obj in zip(rows, objects, strict=True):
        row: dict[str, Any] = {"cells": cells}
        if conditions:
            row["conditions"] = conditions
        embedded = _row_object(obj, rt, include_object)
        if embedded is not None:
            row["object"] = embedded
        table_rows.append(row)
    meta: dict[str, Any] = {}
    if resource_version:
        meta["resourceVersion"] = resource_version
    if continue_token:
        meta["continue"] = continue_token
    if remaining is not None:
        meta["remainingItemCount"] = remaining
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
            "columnDefinitions": columns if include_columns else [], "rows": table_rows}
