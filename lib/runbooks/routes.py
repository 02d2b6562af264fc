"""Alert routes: which runbook an Alertmanager alert starts, and with which parameters.

Why this module exists: ``runbooks serve`` receives alerts, and the mapping from an alert
to a runbook is data an operator edits, not code. A routes file is YAML::

    routes:
      - name: pod-crash-looping
        matchers: ['alertname=~"KubePodCrashLooping"']     # Alertmanager matcher syntax
        runbook: incident-investigation
        parameters:
          namespace: {label: namespace}                  # an alert label
          service: {workload: [deployment, pod]}         # the first label present, as a workload
          alert_name: {label: alertname}
          lookback: 2h                                   # a literal
      - name: certificate-expiry
        matchers: ['alertname="CertManagerCertExpirySoon"']
        runbook: certificate-rotation
        parameters:
          certificates: [{template: "{exported_namespace}/{name}"}]   # labels in a text

The first route whose matchers all match an alert wins (like an Alertmanager route tree
without ``continue``). Matchers are Alertmanager's: ``=``, ``!=``, ``=~``, ``!~``, regular
expressions anchored at both ends, and a label that is absent matches ``""``.

``{workload: [...]}`` turns a ``pod`` label into the workload that owns the pod, and a
``service`` label into the Deployment the Service selects (when exactly one does), through a
resolver the caller passes (``runbooks serve`` asks the Kubernetes API); ``deployment``,
``statefulset`` and ``daemonset`` labels name the workload already.

Routes never apply anything: ``dry_run``, ``approve_plan`` and secret-looking parameter
names are refused when the file is loaded. Label values are passed on as they are: the
runbook's own parameter validation refuses a bad one (a newline, PromQL or regex
characters) before any kernel starts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import InvalidInput
from .secrets import is_secret_name

DEFAULT_ROUTES = "routes.yaml"
FORBIDDEN_PARAMETERS = ("dry_run", "approve_plan")
WORKLOAD_LABELS = ("service", "deployment", "statefulset", "daemonset", "pod")
RESOLVED_LABELS = ("service", "pod")
"""Workload labels asked from the API: a pod's owner; the Deployment a Service selects."""
_MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|([^"\s]*))\s*$')


class Unresolved(Exception):
    """A parameter could not be derived from the alert (a label missing, a pod gone)."""


@dataclass(frozen=True)
class Matcher:
    """One Alertmanager matcher: ``name op value``."""

    name: str
    op: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Matcher:
        m = _MATCHER.match(text) if isinstance(text, str) else None
        if not m:
            raise InvalidInput(f"matcher {text!r} is not NAME=\"VALUE\" (operators =, !=, =~, !~)")
        value = m[3] if m[3] is not None else m[4]
        if m[3] is not None:
            value = re.sub(r'\\(.)', r"\1", value)
        matcher = cls(m[1], m[2], value)
        if "~" in matcher.op:
            try:
                re.compile(value)
            except re.error as exc:
                raise InvalidInput(f"matcher {text!r}: {value!r} is not a regular expression ({exc})") from None
        return matcher

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.name, "")
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        hit = re.fullmatch(self.value, value) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'


@dataclass
class Route:
    """Alerts matching every matcher start ``runbook`` with ``parameters``."""

    name: str
    runbook: str
    matchers: list[Matcher]
    parameters: dict[str, Any] = field(default_factory=dict)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)

    def parameters_for(self, labels: Mapping[str, str],
                       workload: Callable[[str, str, str], str] | None = None) -> dict[str, Any]:
        """This route's parameters for an alert's labels.

        Args:
            workload: ``(label, namespace, value) -> workload name``; without it a ``pod``
                label cannot be turned into its workload.

        Raises:
            Unresolved: a label the route needs is missing, or the workload is unknown.
        """
        return {key: self._value(key, spec, labels, workload) for key, spec in self.parameters.items()}

    def _value(self, key: str, spec: Any, labels: Mapping[str, str],
               workload: Callable[[str, str, str], str] | None) -> Any:
        if isinstance(spec, list):
            return [self._value(key, item, labels, workload) for item in spec]
        if not isinstance(spec, dict):
            return spec
        if "template" in spec:
            names = re.findall(r"{([a-zA-Z_][a-zA-Z0-9_]*)}", spec["template"])
            missing = [n for n in names if not labels.get(n)]
            if missing:
                if "default" in spec:
                    return spec["default"]
                raise Unresolved(f"route {self.name!r}: parameter {key!r} needs the labels "
                                 f"{', '.join(missing)}, and the alert lacks them")
            return re.sub(r"{([a-zA-Z_][a-zA-Z0-9_]*)}", lambda m: labels[m[1]], spec["template"])
        kind = "label" if "label" in spec else "workload"
        names = spec[kind] if isinstance(spec[kind], list) else [spec[kind]]
        found = next((n for n in names if labels.get(n)), None)
        if found is None:
            if "default" in spec:
                return spec["default"]
            raise Unresolved(f"route {self.name!r}: parameter {key!r} needs one of the labels "
                             f"{', '.join(names)}, and the alert has none")
        value = labels[found]
        if kind == "workload" and found in RESOLVED_LABELS:
            if workload is not None:
                value = workload(found, labels.get("namespace", ""), value)
            elif found == "pod":
                raise Unresolved(f"route {self.name!r}: no Kubernetes connection to find the workload "
                                 f"of pod {value!r}")
        return value


def _check_spec(where: str, key: str, spec: Any) -> None:
    if key in FORBIDDEN_PARAMETERS or is_secret_name(key):
        raise InvalidInput(f"{where}: parameter {key!r} is not allowed in a route (routes start dry runs "
                           "only, and credentials never travel as parameters)")
    if isinstance(spec, list):
        for item in spec:
            _check_spec(where, key, item)
        return
    if isinstance(spec, dict):
        kinds = [k for k in ("label", "workload", "template") if k in spec]
        extra = set(spec) - {"label", "workload", "template", "default"}
        if len(kinds) != 1 or extra:
            raise InvalidInput(f"{where}: parameter {key!r} must be a value, {{label: NAME}}, "
                               f"{{workload: [LABEL, ...]}} or {{template: TEXT}} (with an optional "
                               f"default), not {spec!r}")
        if kinds[0] == "template":
            if not isinstance(spec["template"], str):
                raise InvalidInput(f"{where}: parameter {key!r}: template must be text such as "
                                   "\"{exported_namespace}/{name}\"")
            return
        names = spec[kinds[0]] if isinstance(spec[kinds[0]], list) else [spec[kinds[0]]]
        if not names or not all(isinstance(n, str) and n for n in names):
            raise InvalidInput(f"{where}: parameter {key!r}: {kinds[0]} must name one or more labels")
        if kinds[0] == "workload":
            bad = [n for n in names if n not in WORKLOAD_LABELS]
            if bad:
                raise InvalidInput(f"{where}: parameter {key!r}: {bad} are not workload labels; "
                                   f"allowed: {', '.join(WORKLOAD_LABELS)}")


def parse_routes(data: Any, source: str = "routes file") -> list[Route]:
    """Routes from the parsed YAML of a routes file (InvalidInput names what is wrong)."""
    if not isinstance(data, dict) or not isinstance(data.get("routes"), list):
        raise InvalidInput(f"{source} must be a mapping with a list under 'routes'")
    routes = []
    for i, item in enumerate(data["routes"]):
        where = f"{source}: route {i}"
        if not isinstance(item, dict):
            raise InvalidInput(f"{where} must be a mapping")
        unknown = set(item) - {"name", "matchers", "runbook", "parameters"}
        if unknown:
            raise InvalidInput(f"{where}: unknown keys {sorted(unknown)}; allowed: name, matchers, "
                               "runbook, parameters")
        runbook = item.get("runbook")
        if not isinstance(runbook, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]*", runbook):
            raise InvalidInput(f"{where}: runbook {runbook!r} is not a runbook name")
        matchers = item.get("matchers")
        if not isinstance(matchers, list) or not matchers:
            raise InvalidInput(f"{where}: 'matchers' must be a non-empty list")
        params = item.get("parameters") or {}
        if not isinstance(params, dict):
            raise InvalidInput(f"{where}: 'parameters' must be a mapping")
        for key, spec in params.items():
            _check_spec(where, str(key), spec)
        routes.append(Route(str(item.get("name") or f"route-{i}"), runbook,
                            [Matcher.parse(m) for m in matchers], dict(params)))
    return routes


def load_routes(path: str | Path | None = None) -> list[Route]:
    """Routes from a file, or the default shipped with the package (``runbooks/routes.yaml``)."""
    if path is None:
        text = resources.files("runbooks").joinpath(DEFAULT_ROUTES).read_text(encoding="utf-8")
        source = "the default routes"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"routes file {str(path)!r} cannot be read: {exc.strerror or exc}") from exc
        source = f"routes file {str(path)!r}"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{source} is not valid YAML: {exc}") from exc
    return parse_routes(data, source)


def route_for(routes: list[Route], labels: Mapping[str, str]) -> Route | None:
    """The first route matching the labels, or None."""
    return next((r for r in routes if r.matches(labels)), None)
