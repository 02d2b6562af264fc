"""Every validator matches the whole value: a trailing newline (what `^…$` with re.match lets
through) is refused, by the field's own check and by the one-line rule of every parameter."""

from __future__ import annotations

import typing

import pytest

from runbooks import certs, deploy, logs, metrics, parameters, params, rotation
from runbooks.errors import InvalidInput

# (model, field, a valid value): each field's own validator must refuse value + "\n"
FORMATS = [
    (params.ClusterHealthParams, "namespaces", ["shop"]),
    (params.IncidentParams, "namespace", "shop"),
    (params.IncidentParams, "service", "checkout"),
    (params.IncidentParams, "lookback", "6h"),
    (params.IncidentParams, "silence_duration", "2h"),
    (parameters.MutatingParams, "approve_plan", "0123456789ab"),
    (deploy.ProvisionParams, "release", "web"),
    (deploy.ProvisionParams, "namespace", "web"),
    (deploy.ProvisionParams, "image", "registry.example.com/web:1.0.0"),
    (deploy.ProvisionParams, "host", "web.example.com"),
    (deploy.ProvisionParams, "cluster_issuer", "letsencrypt-prod"),
    (deploy.ProvisionParams, "ingress_class", "nginx"),
    (deploy.ProvisionParams, "vault_password_env", "VAULT_PASSWORD"),
    (rotation.CertificateRotationParams, "namespaces", ["shop"]),
    (rotation.CertificateRotationParams, "certificates", ["shop/checkout-tls"]),
    (rotation.CertificateRotationParams, "ingress_controller", "ingress-nginx/ingress-nginx-controller"),
]


def _newline(value):
    return [value[0] + "\n"] if isinstance(value, list) else value + "\n"


@pytest.mark.parametrize(("model", "field", "good"), FORMATS, ids=[f"{m.__name__}.{f}" for m, f, _ in FORMATS])
def test_each_field_validator_matches_the_whole_value(model, field, good):
    extra = {"dry_run": False} if field == "approve_plan" else {}
    model.model_validate({field: good, **extra})
    with pytest.raises(ValueError):
        model.model_validate({field: _newline(good), **extra})


def test_nested_validators_match_the_whole_value():
    with pytest.raises(ValueError):
        deploy.ProvisionParams.model_validate({"resources": {"limits": {"memory": "256Mi\n"}}})
    with pytest.raises(ValueError):
        deploy.ProvisionParams.model_validate({"config": {"LOG_LEVEL\n": "info"}})
    with pytest.raises(ValueError):
        deploy.ProvisionParams.model_validate({"pod_annotations": {"example.com/a\n": "x"}})
    with pytest.raises(ValueError):
        deploy.parse_image("registry.example.com/web:1.0.0\n")
    with pytest.raises(ValueError):
        params.check_namespaces(["shop\n"])
    with pytest.raises(InvalidInput):
        metrics._check_name("namespace", "shop\n")
    with pytest.raises(InvalidInput):
        logs._check_names("shop\n", None, None, None)
    with pytest.raises(InvalidInput):
        logs._check_names("shop", "checkout\n", None, None)
    with pytest.raises(InvalidInput):
        certs.split_endpoint("127.0.0.1:443\n")


def _text_fields(model):
    for name, info in model.model_fields.items():
        args = typing.get_args(info.annotation) or (info.annotation,)
        flat = set(args) | {a for x in args for a in typing.get_args(x)}
        if str in flat and name not in getattr(model, "MULTILINE", ()):
            yield name, info


MODELS = parameters.registered_models()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_text_parameter_is_one_line(name):
    model = MODELS[name]
    fields = list(_text_fields(model))
    assert fields
    for field, info in fields:
        annotation = info.annotation
        origin = typing.get_origin(annotation)
        value = ["a\nb"] if origin is list else {"a": "b\r"} if origin is dict else "a\n"
        with pytest.raises(InvalidInput, match=f"parameter '{field}' .*line break or control character; "
                                               "allowed: one line of printable text"):
            parameters.validate_params(model, {field: value})
