"""The sandbox's object store: what etcd and the registry layer do for the real API server.

Objects are plain dicts that are never mutated once stored (every write stores
a new dict), so a list snapshot is just a list of references: pagination with
``limit``/``continue`` is consistent for free, and each object's JSON is
encoded once and reused by every list that returns it. A cluster-wide
``resourceVersion`` counter orders every change; a bounded change history
feeds watches, which resume from any resourceVersion still in it (older ones
get 410 Gone, as after an etcd compaction).
"""

from __future__ import annotations

import base64
import copy
import json
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from . import names
from .resources import Registry, ResourceType

HISTORY = 50_000
SNAPSHOT_TTL = 300.0  # seconds a continue token stays valid (the real default compaction is 5 min)


def rfc3339(t: datetime | None = None) -> str:
    return (t or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def qualified(rt: ResourceType) -> str:
    """`deployments.apps` the way API error messages name a resource."""
    return f"{rt.plural}.{rt.group}" if rt.group else rt.plural


class ApiError(Exception):
    """An error the server answers with a `Status` object."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict:
        out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": self.message, "reason": self.reason}
        if self.details:
            out["details"] = self.details
        out["code"] = self.code  # the real field order: ... message, reason, details, code
        return out


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{qualified(rt)} "{name}" not found',
                    {"name": name, "group": rt.group, "kind": rt.plural})


def invalid(rt: ResourceType, name: str, causes: list[dict]) -> ApiError:
    text = "; ".join(f"{c.get('field', '')}: {c.get('message', '')}".lstrip(": ") for c in causes)
    return ApiError(422, "Invalid", f'{rt.kind}.{rt.group or "core"} "{name}" is invalid: [{text}]'
                    if len(causes) > 1 else f'{rt.kind} "{name}" is invalid: {text}',
                    {"name": name, "group": rt.group, "kind": rt.kind, "causes": causes})


@dataclass
class Entry:
    obj: dict
    _raw: bytes | None = None

    @property
    def raw(self) -> bytes:
        if self._raw is None:
            self._raw = json.dumps(self.obj, separators=(",", ":")).encode()
        return self._raw


@dataclass
class Change:
    rv: int
    key: tuple[str, str]
    type: str  # ADDED, MODIFIED, DELETED
    entry: Entry
    old: dict | None = None


@dataclass
class ListResult:
    entries: list[Entry]
    resource_version: str
    continue_token: str = ""
    remaining: int | None = None
    items: list[dict] = field(default_factory=list)


class Store:
    """Thread-safe in-memory storage with resourceVersions, snapshots and a change feed."""

    def __init__(self, registry: Registry, clock: Callable[[], datetime] | None = None):
        self.registry = registry
        self.clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Condition(threading.RLock())
        self._rv = 1000
        self._data: dict[tuple[str, str], dict[tuple[str, str], Entry]] = {}
        # the same entries by namespace, and each type's keys in order (dropped when a key
        # comes or goes): a namespaced list or a controller's pass touches only its namespace,
        # and a cluster-wide list does not sort 150,000 keys while holding the lock
        self._by_ns: dict[tuple[str, str], dict[str, dict[tuple[str, str], Entry]]] = {}
        self._sorted: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self._history: deque[Change] = deque(maxlen=HISTORY)
        self._snapshots: OrderedDict[str, tuple[float, list[Entry], int]] = OrderedDict()
        self._listeners: list[Callable[[Change], None]] = []
        self._pending: list[Change] = []

    # ---- reading ---------------------------------------------------------

    @property
    def resource_version(self) -> str:
        return str(self._rv)

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> dict:
        with self._lock:
            entry = self._data.get(rt.key, {}).get((namespace or "", name))
        if entry is None:
            raise not_found(rt, name)
        return entry.obj

    def find(self, rt: ResourceType, namespace: str | None, name: str) -> dict | None:
        with self._lock:
            entry = self._data.get(rt.key, {}).get((namespace or "", name))
        return entry.obj if entry else None

    def items(self, rt: ResourceType, namespace: str | None = None) -> list[dict]:
        """Every object of a type (optionally in one namespace), in key order; for controllers."""
        with self._lock:
            return [e.obj for e in self._entries(rt, namespace)]

    def _entries(self, rt: ResourceType, namespace: str | None) -> list[Entry]:
        """Entries in key order; the caller holds the lock."""
        if namespace is not None:
            bucket = self._by_ns.get(rt.key, {}).get(namespace, {})
            return [bucket[k] for k in sorted(bucket)]
        bucket = self._data.get(rt.key, {})
        keys = self._sorted.get(rt.key)
        if keys is None:
            keys = self._sorted[rt.key] = sorted(bucket)
        return [bucket[k] for k in keys]

    def list(self, rt: ResourceType, namespace: str | None = None,
             match: Callable[[dict], bool] | None = None, limit: int = 0,
             continue_token: str = "") -> ListResult:
        """A consistent page of matching objects; the continue token points into a snapshot."""
        if continue_token:
            snap_id, offset = self._decode_continue(continue_token)
            with self._lock:
                snap = self._snapshots.get(snap_id)
            if snap is None or time.monotonic() - snap[0] > SNAPSHOT_TTL:
                raise ApiError(410, "Expired", "The provided continue parameter is too old to display "
                               "a consistent list result. You can start a new list without the continue "
                               "parameter, or use the continue token in this response to retrieve the "
                               "remainder of the results.")
            _, entries, rv = snap
        else:
            with self._lock:
                entries = self._entries(rt, namespace)
                rv = self._rv
            if match is not None:
                entries = [e for e in entries if match(e.obj)]
            offset = 0
        if limit and offset + limit < len(entries):
            page = entries[offset:offset + limit]
            token = self._remember(continue_token, entries, rv, offset + limit)
            return ListResult(page, str(rv), token, len(entries) - offset - limit)
        return ListResult(entries[offset:], str(rv))

    def _remember(self, token: str, entries: list[Entry], rv: int, next_offset: int) -> str:
        snap_id = self._decode_continue(token)[0] if token else uuid.uuid4().hex[:16]
        with self._lock:
            self._snapshots[snap_id] = (time.monotonic(), entries, rv)
            self._snapshots.move_to_end(snap_id)
            while len(self._snapshots) > 64:
                self._snapshots.popitem(last=False)
        body = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "s": snap_id, "o": next_offset})
        return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")

    @staticmethod
    def _decode_continue(token: str) -> tuple[str, int]:
        try:
            body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            return str(body["s"]), int(body["o"])
        except Exception as e:
            raise ApiError(400, "BadRequest", f"continue key is not valid: {e}") from None

    # ---- writing ---------------------------------------------------------

    def add_listener(self, fn: Callable[[Change], None]) -> None:
        self._listeners.append(fn)

    def _commit(self, rt: ResourceType, kind: str, obj: dict, old: dict | None) -> dict:
        """Assign the next resourceVersion, store (or drop) the object and record the change."""
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        # encode once at write time, as etcd stores bytes: lists then only concatenate
        entry = Entry(obj, json.dumps(obj, separators=(",", ":")).encode())
        key = (obj["metadata"].get("namespace", "") if rt.namespaced else "", obj["metadata"]["name"])
        bucket = self._data.setdefault(rt.key, {})
        in_ns = self._by_ns.setdefault(rt.key, {}).setdefault(key[0], {})
        if kind == "DELETED":
            bucket.pop(key, None)
            in_ns.pop(key, None)
            self._sorted.pop(rt.key, None)
        else:
            if key not in bucket:
                self._sorted.pop(rt.key, None)
            bucket[key] = entry
            in_ns[key] = entry
        change = Change(self._rv, rt.key, kind, entry, old)
        self._history.append(change)
        self._lock.notify_all()
        self._pending.append(change)
        return obj

    def _notify(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for change in pending:
            for fn in self._listeners:
                fn(change)

    def create(self, rt: ResourceType, obj: dict, *, dry_run: bool = False,
               created: datetime | None = None) -> dict:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if rt.namespaced and not meta.get("namespace"):
            raise ApiError(400, "BadRequest", "the namespace of the provided object does not match "
                           "the namespace sent on the request")
        if not rt.namespaced:
            meta.pop("namespace", None)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        with self._lock:
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = self._generate_name(rt, meta)
            if not meta.get("name"):
                raise invalid(rt, "", [{"reason": "FieldValueRequired", "field": "metadata.name",
                                        "message": "Required value: name or generateName is required"}])
            ns = meta.get("namespace", "")
            if rt.namespaced and rt.plural != "namespaces":
                ns_rt = self.registry.lookup("", "v1", "namespaces")
                if ns_rt and not self._data.get(ns_rt.key, {}).get(("", ns)):
                    raise ApiError(404, "NotFound", f'namespaces "{ns}" not found',
                                   {"name": ns, "kind": "namespaces"})
            if (ns, meta["name"]) in self._data.get(rt.key, {}):
                raise ApiError(409, "AlreadyExists", f'{qualified(rt)} "{meta["name"]}" already exists',
                               {"name": meta["name"], "group": rt.group, "kind": rt.plural})
            meta.setdefault("uid", str(uuid.uuid4()))
            meta["creationTimestamp"] = meta.get("creationTimestamp") or rfc3339(created or self.clock())
            meta.pop("resourceVersion", None)
            if "spec" in obj or rt.crd:
                meta["generation"] = 1
            self.resolve_owner_uids(obj)
            if dry_run:
                obj["metadata"]["resourceVersion"] = ""
                return obj
            result = self._commit(rt, "ADDED", obj, None)
        self._notify()
        return result

    def _generate_name(self, rt: ResourceType, meta: dict) -> str:
        for _ in range(100):
            name = meta["generateName"] + names.random_suffix()
            if (meta.get("namespace", ""), name) not in self._data.get(rt.key, {}):
                return name
        raise ApiError(500, "AlreadyExists", "could not generate a unique name")

    def resolve_owner_uids(self, obj: dict) -> None:
        """Fill a missing ownerReference uid from the owner in the same namespace (scenario data)."""
        for ref in obj["metadata"].get("ownerReferences") or []:
            if ref.get("uid"):
                continue
            owner_rt = self.registry.by_kind(ref.get("apiVersion", ""), ref.get("kind", ""))
            owner = owner_rt and self._data.get(owner_rt.key, {}).get(
                (obj["metadata"].get("namespace", "") if owner_rt.namespaced else "", ref.get("name")))
            if owner:
                ref["uid"] = owner.obj["metadata"]["uid"]

    def update(self, rt: ResourceType, obj: dict, *, dry_run: bool = False,
               subresource: str | None = None, check_rv: bool = True) -> dict:
        """Replace an object (PUT). A stale resourceVersion is a 409 Conflict."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        name, ns = meta.get("name", ""), meta.get("namespace", "") if rt.namespaced else ""
        with self._lock:
            entry = self._data.get(rt.key, {}).get((ns, name))
            if entry is None:
                raise not_found(rt, name)
            old = entry.obj
            rv = meta.get("resourceVersion")
            if check_rv and rv and rv != old["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {qualified(rt)} "{name}": '
                               "the object has been modified; please apply your changes to the latest "
                               "version and try again", {"name": name, "group": rt.group, "kind": rt.plural})
            obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
            if subresource == "status":
                new = copy.deepcopy(old)
                new["status"] = obj.get("status", {})
            elif subresource == "ephemeralcontainers":
                new = copy.deepcopy(old)
                new["spec"]["ephemeralContainers"] = (obj.get("spec") or {}).get("ephemeralContainers") or []
            else:
                new = obj
                if "status" in rt.subresources and "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                elif "status" in rt.subresources:
                    new.pop("status", None)
                for k in ("uid", "creationTimestamp"):
                    new["metadata"][k] = old["metadata"][k]
                if not rt.namespaced:
                    new["metadata"].pop("namespace", None)
                gen = old["metadata"].get("generation")
                if gen is not None:
                    changed = ({k: v for k, v in new.items() if k not in ("metadata", "status")}
                               != {k: v for k, v in old.items() if k not in ("metadata", "status")})
                    new["metadata"]["generation"] = gen + 1 if changed else gen
            self.resolve_owner_uids(new)
            if dry_run:
                new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
                return new
            if _same(new, old):
                return old
            result = self._commit(rt, "MODIFIED", new, old)
        self._notify()
        return result

    def delete(self, rt: ResourceType, namespace: str | None, name: str, *, dry_run: bool = False) -> dict:
        with self._lock:
            entry = self._data.get(rt.key, {}).get((namespace or "" if rt.namespaced else "", name))
            if entry is None:
                raise not_found(rt, name)
            if dry_run:
                return entry.obj
            gone = copy.deepcopy(entry.obj)
            result = self._commit(rt, "DELETED", gone, entry.obj)
        self._notify()
        return result

    # ---- watching ----------------------------------------------------------

    def watch(self, rt: ResourceType, namespace: str | None, match: Callable[[dict], bool] | None,
              since: str, timeout: float, stop: threading.Event | None = None,
              send_initial_events: bool | None = None) -> Iterator[tuple[str, Entry]]:
        """Changes after resourceVersion `since`, as (type, entry), for `timeout` seconds.

        Checks `since` before returning (a 410 must precede the response headers).
        An empty or "0" `since` first yields the current objects as ADDED, like the real server.
        `send_initial_events=True` is a watch-list (the streaming list client-go uses): the
        current objects as ADDED whatever `since` is (it is then a lower bound the snapshot
        always satisfies), then a BOOKMARK annotated ``k8s.io/initial-events-end`` that
        carries the snapshot's resourceVersion. `False` starts after the newest change.
        """
        initial: list[tuple[str, Entry]] = []
        if send_initial_events or (send_initial_events is None and since in ("", "0")):
            if since not in ("", "0"):
                self._check_since(since)
            snapshot = self.list(rt, namespace, match)
            initial, last = [("ADDED", e) for e in snapshot.entries], int(snapshot.resource_version)
            if send_initial_events:
                initial.append(("BOOKMARK", self._bookmark(rt, last, initial_events_end=True)))
        elif send_initial_events is False and since in ("", "0"):
            with self._lock:
                last = self._rv
        else:
            last = self._check_since(since)
        return self._watch(rt, namespace, match, initial, last, time.monotonic() + timeout, stop)

    def _check_since(self, since: str) -> int:
        try:
            last = int(since)
        except ValueError:
            raise ApiError(400, "BadRequest", f'invalid resource version: "{since}"') from None
        with self._lock:
            oldest = self._history[0].rv if self._history else self._rv + 1
            if last < oldest - 1 and last < self._rv:
                raise ApiError(410, "Expired", f"too old resource version: {last} ({oldest - 1})")
        return last

    @staticmethod
    def _bookmark(rt: ResourceType, rv: int, initial_events_end: bool = False) -> Entry:
        """A BOOKMARK event's object: only kind, apiVersion and metadata.resourceVersion."""
        meta: dict = {"resourceVersion": str(rv), "creationTimestamp": None}
        if initial_events_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return Entry({"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta})

    def _watch(self, rt, namespace, match, initial, last, deadline, stop) -> Iterator[tuple[str, Entry]]:
        yield from initial
        while True:
            with self._lock:
                batch = [c for c in self._history if c.rv > last] if self._history and \
                    self._history[-1].rv > last else []
                if not batch:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or (stop is not None and stop.is_set()):
                        return
                    self._lock.wait(min(remaining, 1.0))
                    continue
            for c in batch:
                last = c.rv
                if c.key != rt.key:
                    continue
                meta = c.entry.obj["metadata"]
                if namespace and meta.get("namespace") != namespace:
                    continue
                now_match = match is None or match(c.entry.obj)
                was_match = c.old is not None and (match is None or match(c.old))
                if c.type == "DELETED":
                    if was_match:
                        yield "DELETED", c.entry
                elif now_match:
                    yield ("MODIFIED" if c.type == "MODIFIED" and was_match else "ADDED"), c.entry
                elif was_match:
                    yield "DELETED", c.entry


def _same(a: dict, b: dict) -> bool:
    """Equal apart from resourceVersion: such an update is a no-op and keeps the old version."""
    ma = {k: v for k, v in a.get("metadata", {}).items() if k != "resourceVersion"}
    mb = {k: v for k, v in b.get("metadata", {}).items() if k != "resourceVersion"}
    return ma == mb and {k: v for k, v in a.items() if k != "metadata"} == \
        {k: v for k, v in b.items() if k != "metadata"}
