"""Ansible Vault, the client: a vault file decrypted in memory, the values picked for a release.

Why this module exists: the seed's team keeps its secrets in Ansible Vault. The file is
decrypted with ansible-core's ``VaultLib`` (the reference implementation of the format,
maintained with Ansible itself) and the password from an environment variable named by a
parameter; the values never touch a file and :class:`VaultValues` never shows one in its
``repr``. They reach Helm on stdin (see :mod:`runbooks.deploy`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import PreflightFailed

__all__ = ["ENV_NAME", "NO_SECRETS", "VaultValues", "encrypt_vault", "read_vault"]

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
"""An environment variable name: what each vault value becomes in the container."""


@dataclass(frozen=True)
class VaultValues:
    """Secret values decrypted from a vault: env var name → value. Never shown.

    ``repr``/``str`` name the keys and the source only; :attr:`values` is the
    one way in, for the values document given to Helm on stdin.
    """

    source: str = ""
    values: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return f"VaultValues({len(self.values)} key(s) {sorted(self.values)} from {self.source!r})"

    __str__ = __repr__

    @property
    def keys(self) -> list[str]:
        return sorted(self.values)

    def __bool__(self) -> bool:
        return bool(self.values)


NO_SECRETS = VaultValues()


def _vault_lib(password: str) -> Any:
    from ansible.constants import DEFAULT_VAULT_ID_MATCH
    from ansible.parsing.vault import VaultLib, VaultSecret

    return VaultLib([(DEFAULT_VAULT_ID_MATCH, VaultSecret(password.encode()))])


def encrypt_vault(plaintext: str, password: str) -> str:
    """Encrypt text as ``ansible-vault encrypt`` does (``$ANSIBLE_VAULT;1.1;AES256``)."""
    return _vault_lib(password).encrypt(plaintext.encode()).decode()


def read_vault(path: str | os.PathLike[str] | None, password_env: str = "VAULT_PASSWORD",
               keys: Mapping[str, str] | None = None, *,
               environ: Mapping[str, str] | None = None) -> VaultValues:
    """Decrypt an Ansible Vault file in memory and pick the values to pass as secrets.

    The file is either encrypted as a whole (``ansible-vault encrypt``) and
    holds a YAML mapping, or a plain YAML mapping whose values are
    ``!vault``-tagged encrypted strings (``ansible-vault encrypt_string``).

    Args:
        path: the vault file (None: no secrets).
        password_env: the environment variable holding the vault password.
        keys: container env var name → key in the vault; empty: every key, as named.

    Raises:
        PreflightFailed: missing file or variable, wrong password, not a mapping, missing keys
            (exit 2: nothing was applied). Messages never contain a value from the vault.
    """
    if not path:
        return NO_SECRETS
    environ = os.environ if environ is None else environ
    password = environ.get(password_env)
    if not password:
        raise PreflightFailed(f"environment variable {password_env} (vault_password_env) is not set or "
                         f"empty: export the vault password there to decrypt {str(path)!r}")
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PreflightFailed(f"vault file {str(path)!r} cannot be read: {exc.strerror}") from None
    from ansible.errors import AnsibleError

    vault = _vault_lib(password)
    try:
        if vault.is_encrypted(raw):
            text = vault.decrypt(raw).decode("utf-8")
            data = yaml.safe_load(text)
        else:
            data = yaml.load(raw, Loader=_vault_loader(vault))  # noqa: S506 - SafeLoader + !vault only
    except AnsibleError:
        raise PreflightFailed(f"cannot decrypt vault file {str(path)!r} with the password in ${password_env}: "
                         "wrong password, or not an Ansible Vault file") from None
    except (yaml.YAMLError, UnicodeDecodeError):
        raise PreflightFailed(f"vault file {str(path)!r} does not hold YAML once decrypted") from None
    if not isinstance(data, dict):
        raise PreflightFailed(f"vault file {str(path)!r} must hold a mapping of names to values")
    wanted = dict(keys) if keys else {str(k): str(k) for k in data}
    missing = sorted(v for v in wanted.values() if v not in data)
    if missing:
        raise PreflightFailed(f"vault file {str(path)!r} has no key(s) {missing}; it has {sorted(map(str, data))}")
    bad = sorted(k for k in wanted if not ENV_NAME.fullmatch(k))
    if bad:
        raise PreflightFailed(f"vault keys {bad} are not environment variable names: map them with vault_keys")
    values = {}
    for env_name, key in wanted.items():
        value = data[key]
        if isinstance(value, dict | list) or value is None:
            raise PreflightFailed(f"vault key {key!r} must hold a string or number, not {type(value).__name__}")
        values[env_name] = str(value).lower() if isinstance(value, bool) else str(value)
    return VaultValues(str(path), values)


def _vault_loader(vault: Any) -> type[yaml.SafeLoader]:
    class VaultLoader(yaml.SafeLoader):
        pass

    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> str:
        return vault.decrypt(loader.construct_scalar(node).encode()).decode("utf-8")

    VaultLoader.add_constructor("!vault", construct)
    return VaultLoader


