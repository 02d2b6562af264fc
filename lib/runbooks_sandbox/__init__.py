"""The embedded sandbox: a Kubernetes API (and later observability servers) on 127.0.0.1.

It is a test bed, not the product: it follows the real protocols so that the
official clients and ``kubectl`` exercise the same code paths as against a
real cluster.
"""
