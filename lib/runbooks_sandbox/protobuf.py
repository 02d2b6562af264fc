"""Request bodies in the Kubernetes protobuf encoding, decoded to the JSON form the server stores.

Typed client-go clientsets send built-in objects as
``application/vnd.kubernetes.protobuf``, and the real API server accepts that
for every built-in type. Helm's release storage (Secrets
``sh.helm.release.v1.<release>.v<n>``) and ``kubectl create namespace|secret|
configmap`` write this way, with no fallback to JSON, so the sandbox must read
it. Answers stay JSON: those clients send ``Accept: application/vnd.kubernetes.
protobuf,application/json`` and decode either.

The wire format is the envelope ``k8s\\x00`` + ``runtime.Unknown{typeMeta,
raw}`` whose ``raw`` is the object's message from the generated
``generated.proto`` files. Only the messages those writers send are described
here (field numbers as in k8s.io/api and k8s.io/apimachinery); any other kind
gets 415 with the media types the sandbox does accept, as the real server
answers for types it has no protobuf codec for.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

MAGIC = b"k8s\x00"
MEDIA_TYPE = "application/vnd.kubernetes.protobuf"

# A field: (json name, type, sub-schema). Types: str, bytes, int, bool, msg, time, fields,
# map_str (map<string,string>), map_bytes (map<string,bytes>, base64 in JSON); a trailing
# "*" marks a repeated field.
Schema = dict[int, tuple[str, str, Any]]

TIME: Schema = {}  # decoded specially (google.protobuf.Timestamp-like: seconds=1, nanos=2)

OWNER_REFERENCE: Schema = {
    1: ("kind", "str", None), 3: ("name", "str", None), 4: ("uid", "str", None),
    5: ("apiVersion", "str", None), 6: ("controller", "bool", None),
    7: ("blockOwnerDeletion", "bool", None),
}

MANAGED_FIELDS_ENTRY: Schema = {
    1: ("manager", "str", None), 2: ("operation", "str", None), 3: ("apiVersion", "str", None),
    4: ("time", "time", None), 6: ("fieldsType", "str", None), 7: ("fieldsV1", "fields", None),
    8: ("subresource", "str", None),
}

OBJECT_META: Schema = {
    1: ("name", "str", None), 2: ("generateName", "str", None), 3: ("namespace", "str", None),
    4: ("selfLink", "str", None), 5: ("uid", "str", None), 6: ("resourceVersion", "str", None),
    7: ("generation", "int", None), 8: ("creationTimestamp", "time", None),
    9: ("deletionTimestamp", "time", None), 10: ("deletionGracePeriodSeconds", "int", None),
    11: ("labels", "map_str", None), 12: ("annotations", "map_str", None),
    13: ("ownerReferences", "msg*", OWNER_REFERENCE), 14: ("finalizers", "str*", None),
    17: ("managedFields", "msg*", MANAGED_FIELDS_ENTRY),
}

KINDS: dict[str, Schema] = {
    "Secret": {
        1: ("metadata", "msg", OBJECT_META), 2: ("data", "map_bytes", None), 3: ("type", "str", None),
        4: ("stringData", "map_str", None), 5: ("immutable", "bool", None),
    },
    "ConfigMap": {
        1: ("metadata", "msg", OBJECT_META), 2: ("data", "map_str", None),
        3: ("binaryData", "map_bytes", None), 4: ("immutable", "bool", None),
    },
    "Namespace": {
        1: ("metadata", "msg", OBJECT_META),
        2: ("spec", "msg", {1: ("finalizers", "str*", None)}),
        3: ("status", "msg", {1: ("phase", "str", None)}),
    },
    "DeleteOptions": {
        1: ("gracePeriodSeconds", "int", None),
        2: ("preconditions", "msg", {1: ("uid", "str", None), 2: ("resourceVersion", "str", None)}),
        3: ("orphanDependents", "bool", None), 4: ("propagationPolicy", "str", None),
        5: ("dryRun", "str*", None),
    },
}
"""Kinds whose protobuf bodies the sandbox reads (what Helm and kubectl's typed clients send)."""

_UNKNOWN: Schema = {
    1: ("typeMeta", "msg", {1: ("apiVersion", "str", None), 2: ("kind", "str", None)}),
    2: ("raw", "rawbytes", None), 3: ("contentEncoding", "str", None), 4: ("contentType", "str", None),
}


class ProtobufError(ValueError):
    """The body is not a protobuf object the sandbox can read; ``code`` is the HTTP status."""

    def __init__(self, message: str, code: int = 400):
        super().__init__(message)
        self.code = code


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(buf):
            raise ProtobufError("truncated varint")
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise ProtobufError("varint too long")


def _fields(buf: bytes) -> list[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) in order; length-delimited values as bytes."""
    out: list[tuple[int, int, int | bytes]] = []
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise ProtobufError("truncated length-delimited field")
            value, i = buf[i:i + n], i + n
        elif wire == 1:
            value, i = int.from_bytes(buf[i:i + 8], "little"), i + 8
        elif wire == 5:
            value, i = int.from_bytes(buf[i:i + 4], "little"), i + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire} for field {number}")
        out.append((number, wire, value))
    return out


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _time(buf: bytes) -> str | None:
    seconds = 0
    for number, _, value in _fields(buf):
        if number == 1 and isinstance(value, int):
            seconds = _signed(value)
    if not buf:
        return None  # metav1.Time: an empty message is the zero time (null in JSON)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _map_entry(buf: bytes) -> tuple[str, bytes]:
    key, value = "", b""
    for number, _, v in _fields(buf):
        if number == 1 and isinstance(v, bytes):
            key = v.decode()
        elif number == 2 and isinstance(v, bytes):
            value = v
    return key, value


def decode_message(buf: bytes, schema: Schema) -> dict[str, Any]:
    """One message as the JSON object the API uses (empty and zero fields left out, like omitempty)."""
    out: dict[str, Any] = {}
    for number, _, value in _fields(buf):
        if number not in schema:
            continue  # unknown field: dropped, as the server's decoder does
        name, kind, sub = schema[number]
        repeated = kind.endswith("*")
        kind = kind.rstrip("*")
        decoded: Any
        if kind in ("map_str", "map_bytes"):
            if not isinstance(value, bytes):
                raise ProtobufError(f"field {name}: expected a map entry")
            k, v = _map_entry(value)
            target = out.setdefault(name, {})
            target[k] = v.decode() if kind == "map_str" else base64.b64encode(v).decode()
            continue
        if kind in ("int", "bool"):
            if not isinstance(value, int):
                raise ProtobufError(f"field {name}: expected a varint")
            decoded = bool(value) if kind == "bool" else _signed(value)
        else:
            if not isinstance(value, bytes):
                raise ProtobufError(f"field {name}: expected a length-delimited value")
            if kind == "str":
                decoded = value.decode()
            elif kind == "rawbytes":
                decoded = value
            elif kind == "time":
                decoded = _time(value)
            elif kind == "fields":
                raw = next((v for n, _, v in _fields(value) if n == 1), b"")  # FieldsV1{raw}
                decoded = json.loads(raw or b"{}")
            else:
                decoded = decode_message(value, sub)
        if repeated:
            out.setdefault(name, []).append(decoded)
        elif decoded not in ("", 0, None, {}) or kind == "bool":
            out[name] = decoded
    return out


def decode(body: bytes) -> dict[str, Any]:
    """A protobuf request body as the JSON object it encodes, with apiVersion and kind.

    Raises:
        ProtobufError: 400 for a malformed body, 415 for a kind the sandbox has no codec for.
    """
    if not body.startswith(MAGIC):
        raise ProtobufError("provided object is not a protobuf message (no k8s\\x00 prefix)")
    unknown = decode_message(body[len(MAGIC):], _UNKNOWN)
    meta = unknown.get("typeMeta") or {}
    kind = meta.get("kind", "")
    if unknown.get("contentEncoding"):
        raise ProtobufError(f"unsupported content encoding {unknown['contentEncoding']!r}")
    schema = KINDS.get(kind)
    if schema is None:
        raise ProtobufError(
            "the body of the request was in an unknown format - accepted media types include: "
            "application/json, application/yaml", code=415)
    obj = {"apiVersion": meta.get("apiVersion", ""), "kind": kind}
    obj.update(decode_message(unknown.get("raw") or b"", schema))
    return obj
