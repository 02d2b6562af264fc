#!/usr/bin/env python3
"""GET https://HOST/ through an environment's ingress, trusting only its CA file (for `make demo`).

Reads ``ingress_url`` and ``ingress_ca_file`` from ``parameters/ENV/env.yaml``
(a relative CA path is relative to the project root), connects to the ingress
address with SNI and ``Host: HOST``, verifies the served certificate against
that CA file and the host name, and prints the status, the certificate's
subject names, issuer and expiry. Exits 1 when the request or the
verification fails.

Usage (from the project root)::

    .venv/bin/python tools/check_ingress.py hello.example.com --env sandbox
"""

from __future__ import annotations

import argparse
import http.client
import ssl
import sys
from pathlib import Path

import yaml
from cryptography import x509


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("--env", default="sandbox")
    parser.add_argument("--path", default="/")
    args = parser.parse_args(argv)
    root = Path.cwd()
    env = yaml.safe_load((root / "parameters" / args.env / "env.yaml").read_text()) or {}
    url, ca = env.get("ingress_url"), env.get("ingress_ca_file")
    if not url or not ca:
        print(f"parameters/{args.env}/env.yaml names no ingress_url or ingress_ca_file", file=sys.stderr)
        return 1
    ca_path = Path(ca) if Path(ca).is_absolute() else root / ca
    address, _, port = url.split("://", 1)[1].rstrip("/").rpartition(":")
    context = ssl.create_default_context(cafile=str(ca_path))

    class Connection(http.client.HTTPSConnection):
        def connect(self) -> None:  # to the ingress address, with the host's name for SNI and verification
            import socket

            sock = socket.create_connection((address, int(port or 443)), timeout=self.timeout)
            self.sock = context.wrap_socket(sock, server_hostname=args.host)

    conn = Connection(args.host, timeout=10, context=context)
    try:
        conn.request("GET", args.path, headers={"Host": args.host})
        resp = conn.getresponse()
        body = resp.read(300).decode("utf-8", "replace")
        der = conn.sock.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
        print(f"GET https://{args.host}{args.path} via {address}:{port} failed: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    leaf = x509.load_der_x509_certificate(der)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    issuer = leaf.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    print(f"GET https://{args.host}{args.path} via {address}:{port}: HTTP {resp.status}")
    print(f"  certificate for {', '.join(names.get_values_for_type(x509.DNSName))}, issued by "
          f"{issuer[0].value if issuer else leaf.issuer.rfc4514_string()}, valid until "
          f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; verified with {ca}")
    print(f"  body: {body.strip()[:200]}")
    return 0 if 200 <= resp.status < 400 else 1


if __name__ == "__main__":
    sys.exit(main())
