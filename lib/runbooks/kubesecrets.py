"""Secrets redacted on the way in: the transport under :mod:`runbooks.kube`, and the key material it hands out.

Every answer the API server gives is read through :class:`ApiClient` (its ``rest_client``
wraps each response in :class:`RedactedResponse`), so a Secret's ``data``, ``stringData`` and
``last-applied-configuration`` become ``<redacted sha256:…>`` digests before anything else
sees them: gets, lists, watch events and error answers alike. :class:`SecretKeys` is what a
runbook may learn from one Secret read on purpose (``kube.read_secret_keys``): certificates and
whether the private key matches, never the key. This module sends no request itself.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Sequence
from typing import Any

from kubernetes import client
from kubernetes.client import rest

from .errors import InvalidInput
from .secrets import PEM_BLOCK, encoded_key, redact, redact_secret, remember, remembered


def redact_secrets(value: Any, secret_items: bool = False) -> Any:
    """``value`` (a decoded API answer) with every Secret in it redacted (:func:`secrets.redact_secret`).

    A Secret, the items of a SecretList (list items carry no ``kind``), Secret items of a
    ``List``, and the object of a watch event. ``secret_items``: the answer comes from a path
    that serves Secrets, so list items are Secrets whatever they say.
    """
    if isinstance(value, list):
        return [redact_secrets(v, secret_items) for v in value]
    if not isinstance(value, dict):
        return value
    kind = value.get("kind")
    if kind == "Secret" or (secret_items and kind is None and ("data" in value or "stringData" in value)):
        return redact_secret(value)
    if isinstance(value.get("items"), list) and (kind in ("SecretList", "List") or secret_items):
        items_are_secrets = secret_items or kind == "SecretList"
        return {**value, "items": [redact_secrets(i, items_are_secrets) for i in value["items"]]}
    if "type" in value and isinstance(value.get("object"), dict):  # a watch event
        return {**value, "object": redact_secrets(value["object"], secret_items)}
    return value


def redact_body(raw: bytes | str, path: str = "") -> bytes | str:
    """A raw answer (JSON, or watch events one per line) with its Secrets redacted; anything else as it is.

    The cheap test comes first: a body that never says ``Secret`` and does not come from a
    ``secrets`` path is returned untouched (pod lists of 500 items are not parsed twice).
    """
    if not raw:
        return raw
    from_secrets = "/secrets" in path
    if not from_secrets and ("Secret" not in raw if isinstance(raw, str) else b"Secret" not in raw):
        return raw
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        docs: list[tuple[str, Any]] = [(text, json.loads(text))]
    except ValueError:  # watch events, one JSON document a line (or no JSON at all)
        docs = []
        for line in text.splitlines(keepends=True):
            try:
                docs.append((line, json.loads(line)))
            except ValueError:
                docs.append((line, _NOT_JSON))
    out = []
    for line, doc in docs:
        if doc is _NOT_JSON:
            out.append(redact(line, remembered()))  # at least no PEM key, token or remembered value
            continue
        cleaned = redact_secrets(doc, from_secrets)
        out.append(line if cleaned == doc else json.dumps(cleaned) + ("\n" if line.endswith("\n") else ""))
    joined = "".join(out)
    if joined == text:
        return raw
    return joined.encode() if isinstance(raw, bytes) else joined


_NOT_JSON = object()


class RedactedStream:
    """The urllib3 response under an answer, as the generated client hands it out (``data``, or
    ``stream()`` for ``_preload_content=False``: a watch): its Secrets redacted, line by line when
    streamed. Anything else is the response's own."""

    def __init__(self, raw: Any, path: str) -> None:
        self._raw, self._path = raw, path

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)

    @property
    def data(self) -> Any:
        return redact_body(self._raw.data, self._path)

    def read(self, *args: Any, **kwargs: Any) -> Any:
        return redact_body(self._raw.read(*args, **kwargs), self._path)

    def stream(self, amt: int | None = 2 ** 16, decode_content: bool | None = None) -> Iterator[bytes]:
        buffer = b""
        for chunk in self._raw.stream(amt, decode_content=decode_content):
            buffer += chunk if isinstance(chunk, bytes) else str(chunk).encode()
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                yield redact_body(line + b"\n", self._path)
        if buffer:
            yield redact_body(buffer, self._path)


class RedactedResponse(rest.RESTResponse):
    """An answer whose body is redacted when read (:func:`redact_body`); the raw one only for :meth:`unredacted` (``kube.read_secret_keys``)."""

    def __init__(self, resp: Any, path: str) -> None:
        super().__init__(RedactedStream(resp, path))
        self._raw = resp

    def read(self) -> Any:
        if self.data is None:
            self.data = self.response.data
        return self.data

    def unredacted(self) -> bytes:
        return self._raw.data


class _RestClient(rest.RESTClientObject):
    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        resp = super().request(method, url, *args, **kwargs)
        if not isinstance(resp, rest.RESTResponse):
            return resp
        from urllib.parse import urlsplit

        return RedactedResponse(resp.response, urlsplit(url).path)


class ApiClient(client.ApiClient):
    """The official client's ApiClient whose every answer is read through :class:`RedactedResponse`:
    a Secret read with the generated API classes (``cluster.core.read_namespaced_secret``), by
    :func:`request` or by a list comes back redacted, and so does the body of an ApiException."""

    def __init__(self, configuration: client.Configuration | None = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(configuration, *args, **kwargs)
        self.rest_client = _RestClient(self.configuration)


CERTIFICATE_KEYS = frozenset({"tls.crt", "ca.crt"})
"""Keys of a Secret that hold public certificates (``kubernetes.io/tls``): they may leave this module."""


class SecretKeys:
    """What a runbook may learn from one Secret's key material, read on purpose.

    - :attr:`object`: the Secret as every other read returns it (values replaced by digests);
    - :meth:`certificate`: ``tls.crt`` / ``ca.crt`` (public certificates; any private key block
      in them is dropped);
    - :meth:`key_matches`: whether ``tls.key`` belongs to the certificate, the only fact a
      private key gives out;
    - :meth:`digest`: a value's ``<redacted sha256:…>`` digest, as in :attr:`object`.

    ``repr``/``str`` name the Secret and its keys, never a value; it cannot be pickled or
    turned into JSON. Every non-certificate value read is added to what the output scan looks
    for (:func:`runbooks.secrets.remember`).

    Example:
        >>> keys = read_secret_keys(cluster, "shop", "shop-frontend-tls")  # doctest: +SKIP
        >>> keys.key_matches(), keys.certificate()[:27]  # doctest: +SKIP
        (True, b'-----BEGIN CERTIFICATE-----')
    """

    __slots__ = ("namespace", "name", "object", "_value")

    def __init__(self, raw: dict, keys: Sequence[str] | None) -> None:
        meta = raw.get("metadata") or {}
        self.namespace: str = meta.get("namespace") or ""
        self.name: str = meta.get("name") or ""
        self.object: dict = redact_secret(raw)
        values: dict[str, bytes] = {}
        for key, encoded in (raw.get("data") or {}).items():
            if keys is not None and key not in keys:
                continue
            try:
                values[key] = base64.b64decode(encoded or "")
            except (binascii.Error, ValueError):
                values[key] = b""
            if key not in CERTIFICATE_KEYS and values[key]:
                remember(f"{key} of Secret {self.namespace}/{self.name}", values[key])
        self._value = values.get  # a bound method: the values are nowhere in this object's attributes

    def __repr__(self) -> str:
        names = ", ".join(sorted(self.object.get("data") or {})) or "no data"
        return f"SecretKeys({self.namespace}/{self.name}: {names}; values not shown)"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("SecretKeys cannot be pickled: it holds key material")

    def digest(self, key: str) -> str | None:
        """The value's ``<redacted sha256:…>`` (None when the Secret has no such key)."""
        return (self.object.get("data") or {}).get(key)

    def certificate(self, key: str = "tls.crt") -> bytes:
        """A public certificate bundle (b"" when missing), without any private key block in it.

        Raises:
            InvalidInput: ``key`` is not a certificate key (:data:`CERTIFICATE_KEYS`).
        """
        if key not in CERTIFICATE_KEYS:
            raise InvalidInput(f"{key!r} is not a certificate key; allowed: {', '.join(sorted(CERTIFICATE_KEYS))}")
        value = self._value(key) or b""
        text = value.decode("utf-8", "replace")
        if PEM_BLOCK.search(text) or encoded_key(text):
            remember(f"{key} of Secret {self.namespace}/{self.name}", value)
            return PEM_BLOCK.sub("", text).encode() if PEM_BLOCK.search(text) else b""
        return value

    def key_matches(self, cert: str = "tls.crt", key: str = "tls.key") -> bool | None:
        """Whether the private key ``key`` belongs to the first certificate of ``cert`` (None: either is
        missing; False: either cannot be read, or they differ)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        cert_pem, key_pem = self.certificate(cert), self._value(key) or b""
        if not cert_pem or not key_pem:
            return None
        try:
            leaf = x509.load_pem_x509_certificates(cert_pem)[0]
            private = serialization.load_pem_private_key(key_pem, password=None,
                                                         unsafe_skip_rsa_key_validation=True)
            return bool(leaf.public_key() == private.public_key())
        except (TypeError, ValueError, IndexError, binascii.Error):
            return False
