"""The parameters of notebooks/provision-service.ipynb, checked before a kernel starts and again in preflight."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from ..parameters import MutatingParams, project_root
from ..secrets import is_secret_name
from ..vault import ENV_NAME

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"^(?:\*\.)?{_DNS_LABEL}(?:\.{_DNS_LABEL})+$")
_QUANTITY = re.compile(r"^[+]?(\d+(\.\d*)?|\.\d+)(([KMGTPE]i)|[numkMGTPE]|[eE][+-]?\d+)?\Z")
_QUALIFIED = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?\Z")
# distribution/reference: [domain[:port]/]path[:tag][@digest]
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE = re.compile(
    rf"^(?P<repository>(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)


def parse_image(image: str) -> tuple[str, str, str]:
    """``repository:tag`` or ``repository@sha256:…`` → (repository, tag, digest).

    >>> parse_image("registry.example.com/shop/web:1.4.2")
    ('registry.example.com/shop/web', '1.4.2', '')

    Raises:
        ValueError: not an image reference, or one without a tag or digest.
    """
    m = _IMAGE.fullmatch(image or "")
    if not m or len(image) > 255:
        raise ValueError(f"image {image!r} is not a valid image reference "
                         "([registry[:port]/]path:tag or …@sha256:<64 hex>, lowercase path)")
    if not m["tag"] and not m["digest"]:
        raise ValueError(f"image {image!r} has no tag: name the version to deploy "
                         "(repository:tag, e.g. registry.example.com/shop/web:1.4.2, or a @sha256 digest)")
    return m["repository"], m["tag"] or "", m["digest"] or ""


def _check_quantities(resources: dict[str, Any]) -> dict[str, Any]:
    for section, values in resources.items():
        if section not in ("requests", "limits") or not isinstance(values, dict):
            raise ValueError(f"resources must look like {{'requests': {{...}}, 'limits': {{...}}}}; "
                             f"got key {section!r}")
        for name, qty in values.items():
            if name not in ("cpu", "memory", "ephemeral-storage"):
                raise ValueError(f"resources.{section}.{name}: allowed resources are cpu, memory, "
                                 "ephemeral-storage")
            if not _QUANTITY.fullmatch(str(qty)):
                raise ValueError(f"resources.{section}.{name} = {qty!r} is not a quantity "
                                 "(e.g. 250m, 0.5, 128Mi, 1Gi)")
    return resources


class ProvisionParams(MutatingParams):
    """Parameters of notebooks/provision-service.ipynb."""

    APPLY_PARAMETERS = ("auto_rollback", "timeout_seconds")  # the upgrade's --timeout decides a rollback

    release: str = Field(default="web", max_length=53)
    namespace: str = Field(default="web", max_length=63)
    create_namespace: bool = True
    chart: str = Field(default="charts/web-service", min_length=1)
    chart_version: str | None = None
    values_files: list[str] = Field(default_factory=list)
    image: str = "registry.example.com/web:1.0.0"
    replicas: int = Field(default=2, ge=0, le=1000)
    port: int = Field(default=8080, ge=1, le=65535)
    host: str = "web.example.com"
    ingress_class: str = "nginx"
    cluster_issuer: str = "letsencrypt-prod"
    resources: dict[str, dict[str, str]] = Field(default_factory=lambda: {
        "requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}})
    config: dict[str, str | int | float | bool] = Field(default_factory=dict)
    pod_annotations: dict[str, str] = Field(default_factory=dict)
    vault_file: str | None = None
    vault_keys: dict[str, str] = Field(default_factory=dict)
    vault_password_env: str = "VAULT_PASSWORD"
    timeout_seconds: int = Field(default=300, ge=10, le=3600)
    auto_rollback: bool = False
    ingress_url: str | None = None
    ingress_ca_file: str | None = None
    verify_timeout_seconds: int = Field(default=60, ge=1, le=900)

    @field_validator("release", "namespace")
    @classmethod
    def _label(cls, value: str, info: Any) -> str:
        if not _LABEL.fullmatch(value):
            raise ValueError(f"{info.field_name} {value!r} is not a valid name (lowercase RFC 1123 "
                             "label: a-z, 0-9 and '-', starting and ending with a letter or digit)")
        return value

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        parse_image(value)
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if len(value) > 253 or not _HOST.fullmatch(value):
            raise ValueError(f"host {value!r} is not a valid DNS name (lowercase labels of a-z, 0-9 "
                             "and '-' separated by dots, e.g. web.example.com)")
        return value

    @field_validator("cluster_issuer", "ingress_class")
    @classmethod
    def _object_name(cls, value: str, info: Any) -> str:
        if value and (len(value) > 253 or not re.fullmatch(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*", value)):
            raise ValueError(f"{info.field_name} {value!r} is not a valid object name")
        return value

    @field_validator("resources")
    @classmethod
    def _resources(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_quantities(value)

    @field_validator("config")
    @classmethod
    def _config(cls, value: dict[str, Any]) -> dict[str, Any]:
        bad = [k for k in value if not ENV_NAME.fullmatch(k)]
        if bad:
            raise ValueError(f"config keys become environment variables; not valid names: {bad}")
        secret = [k for k in value if is_secret_name(k)]
        if secret:
            raise ValueError(f"config keys {secret} look like credentials: config values are written into the "
                             "output notebook and the release; take them from the vault with vault_keys")
        return value

    @field_validator("values_files")
    @classmethod
    def _values_files(cls, value: list[str]) -> list[str]:
        root = project_root()
        outside = [f for f in value if not Path(f).expanduser().resolve().is_relative_to(root)]
        if outside:
            raise ValueError(f"values files {outside} are outside the project ({root.name}/): "
                             "only files of the project are read")
        return value

    @field_validator("vault_keys")
    @classmethod
    def _vault_keys(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if not ENV_NAME.fullmatch(k)]
        if bad:
            raise ValueError(f"vault_keys maps environment variable names to vault keys; "
                             f"not valid variable names: {bad}")
        return value

    @field_validator("vault_password_env")
    @classmethod
    def _password_env(cls, value: str) -> str:
        if not ENV_NAME.fullmatch(value):
            raise ValueError(f"vault_password_env {value!r} is not an environment variable name; it "
                             "names the variable holding the password, never the password itself")
        return value

    @field_validator("pod_annotations")
    @classmethod
    def _annotations(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if not _QUALIFIED.fullmatch(k) or len(k) > 316]
        if bad:
            raise ValueError(f"not valid annotation keys: {bad}")
        return value

    @field_validator("ingress_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"ingress_url {value!r} must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _chart_config(self) -> ProvisionParams:
        if set(self.config) & set(self.vault_keys):
            raise ValueError(f"keys in both config and vault_keys: {sorted(set(self.config) & set(self.vault_keys))}")
        return self
