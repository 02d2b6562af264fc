"""DNS as a pod sees it: through a short-lived probe pod from outside, directly from inside.

Why this module exists: a workload does not ask "the cluster DNS server", it asks its own
resolver, configured by the ``/etc/resolv.conf`` the kubelet wrote for it (the nameserver, the
search list, ``ndots``). From a laptop or a CI runner neither that file nor the cluster DNS
Service's ClusterIP can be reached; the usual way is ``kubectl exec`` into a short-lived debug pod
with DNS tools. :func:`probe_view` does exactly that, with the pods API and the ``pods/exec``
WebSocket (the official client's ``stream``): it creates a pod (``generateName``, ``restartPolicy:
Never``, ``activeDeadlineSeconds``, small resource limits, no ServiceAccount token), waits for it
to run, reads ``cat /etc/resolv.conf``, asks BIND's ``dig +search`` every question in a few execs,
and deletes the pod in a ``finally`` (an interrupt included); a probe pod left behind by a killed
run is deleted by the next one once its deadline has passed.

Inside the cluster (the kube-runbooks CronJob), the runbook is itself such a pod: :func:`local_view`
reads its own resolv.conf and asks the nameserver directly, the search list applied the same way
(:func:`candidates`, resolv(5)), without exec. Both return the same :class:`View`, so the comparison
with what the cluster should answer is one code path (``discovery.pod_view_findings``).
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import dns, kube
from .errors import Forbidden, InvalidInput, NotFound, RunbookError, Unavailable, cut

DEFAULT_IMAGE = "registry.k8s.io/e2e-test-images/jessie-dnsutils:1.7"  # BIND's dig and nslookup, sh, cat, sleep
LABELS = {"app.kubernetes.io/name": "dns-probe", "app.kubernetes.io/managed-by": "kube-runbooks",
          "app.kubernetes.io/component": "dns-audit"}
RUN_LABEL = "kube-runbooks/probe-run"
SA_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
RESOLV_CONF = "/etc/resolv.conf"
MODES = ("auto", "exec", "local", "off")
DIG_BATCH = 60  # questions per exec (one dig command line)


class ProbeFailed(RunbookError):
    """The probe pod could not run (image, scheduling, deadline) or its tools failed."""


@dataclass
class ResolvConf:
    """The resolver configuration of one pod (resolv.conf(5))."""

    nameservers: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    ndots: int = 1
    options: list[str] = field(default_factory=list)
    text: str = ""


@dataclass
class Lookup:
    """One question as the pod's resolver answered it: the name asked, the name that answered
    (after the search list), the rcode and the values of ``rdtype``."""

    name: str
    rdtype: str
    qname: str
    rcode: str
    values: list[str] = field(default_factory=list)
    queries: int = 1  # questions the resolver sent before this answer (search list included)


@dataclass
class View:
    """The in-cluster view: how it was taken, the resolver configuration and the answers."""

    mode: str  # exec | local
    where: str  # probe pod ns/name (deleted since) or "this pod"
    conf: ResolvConf
    lookups: dict[tuple[str, str], Lookup] = field(default_factory=dict)
    image: str = ""


def parse_resolv_conf(text: str) -> ResolvConf:
    """resolv.conf(5): ``nameserver`` lines (at most 3), the last ``search``/``domain``, ``options``."""
    conf = ResolvConf(text=text)
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if not words:
            continue
        key, rest = words[0], words[1:]
        if key == "nameserver" and rest and len(conf.nameservers) < 3:
            conf.nameservers.append(rest[0])
        elif key in ("search", "domain"):
            conf.search = [d.rstrip(".") for d in rest]
        elif key == "options":
            conf.options += rest
    for opt in conf.options:
        if opt.startswith("ndots:") and opt[6:].isdigit():
            conf.ndots = min(int(opt[6:]), 15)
    return conf


def candidates(name: str, conf: ResolvConf) -> list[str]:
    """The names a stub resolver asks for ``name``, in order (resolv(5)): with fewer dots than
    ndots the search list first and the name last, otherwise the name first; an absolute name
    (trailing dot) alone."""
    if name.endswith("."):
        return [name.rstrip(".").lower()]
    with_search = [f"{name}.{d}".lower() for d in conf.search]
    return [name.lower()] + with_search if name.count(".") >= conf.ndots else with_search + [name.lower()]


def parse_dig(text: str) -> list[tuple[str, str, str, list[str]]]:
    """``dig +noall +comments +question +answer`` output: per query (qname, type, rcode, answer values
    of that type). "no servers could be reached" gives rcode TIMEOUT."""
    out: list[list[Any]] = []
    section = ""
    for line in text.splitlines():
        m = re.match(r";; ->>HEADER<<- opcode: \w+, status: ([A-Z]+)", line)
        if m:
            out.append(["", "", m.group(1), []])
            section = ""
            continue
        if line.startswith(";; no servers could be reached") or "connection timed out; no servers" in line:
            out.append(["", "", "TIMEOUT", []])
            continue
        if line.startswith(";; QUESTION SECTION"):
            section = "question"
            continue
        if line.startswith(";; ANSWER SECTION"):
            section = "answer"
            continue
        if line.startswith(";;") or not line.strip():
            if line.startswith(";;") and "SECTION" in line:
                section = "other"
            continue
        if not out:
            continue
        if section == "question" and line.startswith(";"):
            words = line[1:].split()
            if words:
                out[-1][0] = words[0].rstrip(".").lower()
                out[-1][1] = words[-1].upper()
        elif section == "answer" and not line.startswith(";"):
            words = line.split(None, 4)
            if len(words) == 5 and words[3].upper() == (out[-1][1] or "A"):
                out[-1][3].append(words[4].strip())
            elif len(words) == 5 and words[3].upper() == "CNAME" and out[-1][1] != "CNAME":
                out[-1][3].append("CNAME " + words[4].strip())
    return [(q, t, rc, [v for v in vals if not v.startswith("CNAME ")] or vals) for q, t, rc, vals in out]


# ---- in the cluster: this process's own resolver -------------------------------------------------


def in_cluster(environ: dict[str, str] | None = None, token_file: str = SA_TOKEN) -> bool:
    """Running in a pod: ``KUBERNETES_SERVICE_HOST`` set and a ServiceAccount token mounted."""
    env = os.environ if environ is None else environ
    return bool(env.get("KUBERNETES_SERVICE_HOST")) and Path(token_file).is_file()


def choose_mode(mode: str, *, environ: dict[str, str] | None = None, token_file: str = SA_TOKEN) -> str:
    """``auto``: ``local`` in a pod, else ``exec``; the others as given."""
    if mode not in MODES:
        raise InvalidInput(f"in_cluster_view {mode!r} is not allowed; allowed: {', '.join(MODES)}")
    if mode == "auto":
        return "local" if in_cluster(environ, token_file) else "exec"
    return mode


def local_view(questions: Sequence[tuple[str, str]], *, resolv_conf: str = RESOLV_CONF,
               server: str | None = None, timeout: float = 2.0, concurrency: int = 64) -> View:
    """Resolve as this process's resolver would: its resolv.conf's search list and ndots, asked of
    its nameserver (``server`` host:port instead, when given: a cluster DNS on another port).

    The search list is walked in rounds: round k asks every still-unanswered name its k-th
    candidate, all at once with a bound (``dns.query_many``).
    """
    try:
        conf = parse_resolv_conf(Path(resolv_conf).read_text())
    except OSError as exc:
        raise InvalidInput(f"resolv_conf {resolv_conf!r} cannot be read: {exc.strerror}") from exc
    target = server or (conf.nameservers[0] if conf.nameservers else "")
    if not target:
        raise ProbeFailed(f"{resolv_conf} names no nameserver")
    pending = {q: candidates(q[0], conf) for q in dict.fromkeys(questions)}
    lookups: dict[tuple[str, str], Lookup] = {}
    round_ = 0
    while pending:
        asked = {(names[round_], q[1]): q for q, names in pending.items()}
        answers = dns.query_many(target, list(asked), concurrency=concurrency, timeout=timeout)
        for (fqdn, rdtype), q in asked.items():
            ans = answers.get((fqdn, rdtype.upper()))
            rcode = ("TIMEOUT" if ans.error == "timeout" else ans.rcode) if ans else "TIMEOUT"
            values = ans.values(rdtype) or ans.values("CNAME") if ans else []
            last = round_ + 1 == len(pending[q])
            if rcode == "TIMEOUT" or (rcode == "NOERROR" and values) or last:
                lookups[q] = Lookup(q[0], q[1], fqdn, rcode, values if rcode == "NOERROR" else [], round_ + 1)
        pending = {q: names for q, names in pending.items() if q not in lookups}
        round_ += 1
    return View("local", "this pod", conf, lookups)


# ---- from outside: a short-lived probe pod -------------------------------------------------------


def probe_pod(image: str, *, deadline_seconds: int, prefix: str = "dns-audit-probe-", run_id: str = "") -> dict:
    """The probe pod: one container sleeping until its deadline, nothing mounted, tiny limits.

    ``run_id`` (a label) finds the pod when the run is interrupted before the API server's answer
    named it (``generateName``).
    """
    resources = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": prefix, "labels": {**LABELS, **({RUN_LABEL: run_id} if run_id else {})},
                         "annotations": {"kube-runbooks/purpose": "dns-audit in-cluster view; deleted after the "
                                                                  "run, or by the next run after its deadline"}},
            "spec": {"restartPolicy": "Never", "activeDeadlineSeconds": deadline_seconds,
                     "automountServiceAccountToken": False, "enableServiceLinks": False,
                     "terminationGracePeriodSeconds": 0, "dnsPolicy": "ClusterFirst",
                     "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534,
                                         "seccompProfile": {"type": "RuntimeDefault"}},
                     "containers": [{"name": "probe", "image": image, "command": ["sleep", str(deadline_seconds)],
                                     "resources": resources,
                                     "securityContext": {"allowPrivilegeEscalation": False,
                                                         "readOnlyRootFilesystem": True,
                                                         "capabilities": {"drop": ["ALL"]}}}]}}


def _selector() -> str:
    return ",".join(f"{k}={v}" for k, v in LABELS.items())


def delete_stale_probes(cluster: kube.Cluster, namespace: str, now: float | None = None) -> list[str]:
    """Delete probe pods a killed run left behind: ended, or past their deadline. Returns their names."""
    now = time.time() if now is None else now
    gone = []
    for pod in kube.iter_objects(cluster, "pods", namespace, label_selector=_selector()):
        meta, spec = pod["metadata"], pod.get("spec") or {}
        created = kube.parse_time(meta.get("creationTimestamp"))
        age = now - created.timestamp() if created else 0
        ended = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        if ended or age > int(spec.get("activeDeadlineSeconds") or 0) + 60:
            try:
                kube.request(cluster, "DELETE", kube.KINDS["Pod"].path(namespace, meta["name"]),
                             query=[("gracePeriodSeconds", 0)])
                gone.append(meta["name"])
            except NotFound:
                pass
    return gone


def _running(pod: dict) -> tuple[bool, str]:
    """(running, why not) of the probe container."""
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    for st in status.get("containerStatuses") or []:
        state = st.get("state") or {}
        if state.get("running"):
            return True, ""
        waiting = state.get("waiting") or state.get("terminated") or {}
        if waiting.get("reason"):
            return False, f"{phase}: {waiting['reason']} {cut(waiting.get('message') or '', 200)}".strip()
    unscheduled = kube.condition(pod, "PodScheduled")
    if unscheduled.get("status") == "False":
        return False, f"{phase}: {unscheduled.get('reason')} {cut(unscheduled.get('message') or '', 200)}".strip()
    return False, phase


def wait_running(cluster: kube.Cluster, namespace: str, name: str, timeout: float) -> dict:
    """Poll the pod until its container runs; raise as soon as it cannot (ended, image not pulled)."""
    deadline = time.monotonic() + timeout
    why = "Pending"
    while True:
        pod = kube.request(cluster, "GET", kube.KINDS["Pod"].path(namespace, name))
        ok, why = _running(pod)
        if ok:
            return pod
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed") or \
                any(r in why for r in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainer")):
            raise ProbeFailed(f"probe pod {namespace}/{name} cannot run: {why}")
        if time.monotonic() > deadline:
            raise ProbeFailed(f"probe pod {namespace}/{name} was not running after {timeout:.0f} s ({why})")
        time.sleep(0.25)


def dig_argv(questions: Sequence[tuple[str, str]]) -> list[str]:
    """One dig command line for many questions, each through the pod's search list."""
    argv = ["dig", "+search", "+noall", "+comments", "+question", "+answer", "+time=2", "+tries=2"]
    for name, rdtype in questions:
        argv += [name, rdtype]
    return argv


def _exec(cluster: kube.Cluster, namespace: str, name: str, argv: list[str], timeout: float) -> kube.ExecResult:
    result = kube.exec_command(cluster, namespace, name, argv, container="probe", timeout=timeout)
    if result.exit_code == 127:
        raise ProbeFailed(f"the probe image has no {argv[0]} ({cut(result.stderr.strip(), 200)}); use an image "
                          f"with BIND's dig, e.g. {DEFAULT_IMAGE}")
    return result


def exec_lookups(cluster: kube.Cluster, namespace: str, name: str, conf: ResolvConf,
                 questions: Sequence[tuple[str, str]], *, timeout: float = 60.0) -> dict[tuple[str, str], Lookup]:
    """Ask every question with ``dig +search`` in the pod, :data:`DIG_BATCH` per exec."""
    lookups: dict[tuple[str, str], Lookup] = {}
    unique = list(dict.fromkeys(questions))
    for i in range(0, len(unique), DIG_BATCH):
        batch = unique[i:i + DIG_BATCH]
        result = _exec(cluster, namespace, name, dig_argv(batch), timeout)
        blocks = parse_dig(result.stdout)
        if len(blocks) != len(batch):
            raise ProbeFailed(f"dig in {namespace}/{name} answered {len(blocks)} of {len(batch)} questions "
                              f"(exit {result.exit_code}: {cut(result.stderr.strip(), 200)})")
        for (qname, rdtype), (answered, _, rcode, values) in zip(batch, blocks, strict=True):
            tried = candidates(qname, conf)
            position = tried.index(answered) + 1 if answered in tried else len(tried)
            lookups[(qname, rdtype)] = Lookup(qname, rdtype, answered or qname.rstrip("."), rcode,
                                              values if rcode == "NOERROR" else [], position)
    return lookups


def probe_view(cluster: kube.Cluster, namespace: str, questions: Sequence[tuple[str, str]], *,
               image: str = DEFAULT_IMAGE, start_timeout: float = 60.0, deadline_seconds: int = 600,
               exec_timeout: float = 60.0) -> View:
    """Create the probe pod, read its resolv.conf, ask every question in it, and always delete it.

    Raises:
        Forbidden: creating the pod or ``pods/exec`` is not allowed (the message names which).
        ProbeFailed: the pod did not run in time, or its image lacks ``dig``.
    """
    try:
        delete_stale_probes(cluster, namespace)
    except Forbidden:
        pass  # listing or deleting old probes is not needed to take the view
    run_id = uuid.uuid4().hex[:12]
    name = ""
    try:
        try:
            created = kube.request(cluster, "POST", kube.KINDS["Pod"].path(namespace),
                                   body=probe_pod(image, deadline_seconds=deadline_seconds, run_id=run_id))
        except Forbidden as exc:
            raise Forbidden(f"forbidden: create pods in {namespace} ({_server_words(exc)})") from None
        name = created["metadata"]["name"]
        wait_running(cluster, namespace, name, start_timeout)
        try:
            result = _exec(cluster, namespace, name, ["cat", RESOLV_CONF], exec_timeout)
        except Forbidden as exc:
            verb = re.search(r'cannot (\w+) resource "pods/exec"', str(exc))
            raise Forbidden(f"forbidden: {verb.group(1) if verb else 'create'} pods/exec in {namespace} "
                            f"({_server_words(exc)})") from None
        if result.exit_code:
            raise ProbeFailed(f"cat {RESOLV_CONF} in {namespace}/{name} exited {result.exit_code}: "
                              f"{cut(result.stderr.strip(), 200)}")
        conf = parse_resolv_conf(result.stdout)
        lookups = exec_lookups(cluster, namespace, name, conf, questions, timeout=exec_timeout)
        return View("exec", f"{namespace}/{name}", conf, lookups, image)
    finally:
        if name:
            delete_pod(cluster, namespace, name)
        else:  # interrupted (or failed) before the answer named it: the server may have created it
            _delete_by_run(cluster, namespace, run_id)


def _server_words(exc: Exception) -> str:
    """The API server's message of a refusal, without the request line ``kube`` puts before it."""
    return cut(str(exc).split("HTTP 403: ", 1)[-1], 400)


def _delete_by_run(cluster: kube.Cluster, namespace: str, run_id: str) -> None:
    try:
        for pod in kube.iter_objects(cluster, "pods", namespace, label_selector=f"{RUN_LABEL}={run_id}"):
            delete_pod(cluster, namespace, pod["metadata"]["name"])
    except (Forbidden, Unavailable):
        pass  # nothing we may see was created; a stale one goes with the next run (delete_stale_probes)


def delete_pod(cluster: kube.Cluster, namespace: str, name: str, attempts: int = 3) -> None:
    """Delete now (grace 0); a failed attempt is tried again, a missing pod is fine."""
    for attempt in range(attempts):
        try:
            kube.request(cluster, "DELETE", kube.KINDS["Pod"].path(namespace, name),
                         query=[("gracePeriodSeconds", 0)])
            return
        except NotFound:
            return
        except Forbidden as exc:
            raise Forbidden(f"forbidden: delete pods in {namespace}: the probe pod {name} stays until its "
                            f"activeDeadlineSeconds end it ({_server_words(exc)})") from None
        except Unavailable:
            if attempt + 1 == attempts:
                raise
            time.sleep(0.5 * (attempt + 1))


def questions_for(names: Iterable[str], rdtype: str = "A") -> list[tuple[str, str]]:
    return [(n, rdtype) for n in dict.fromkeys(names)]
