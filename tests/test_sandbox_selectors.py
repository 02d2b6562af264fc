"""Label and field selectors behave, and fail, like the Kubernetes API server's."""

import pytest

from runbooks_sandbox.selectors import (
    SelectorError,
    label_selector_from_spec,
    parse_field_selector,
    parse_label_selector,
)

WEB = {"app": "web", "tier": "frontend", "version": "3"}

LABEL_MATCHES = [
    ("", WEB, True),
    ("", None, True),
    ("app=web", WEB, True),
    ("app==web", WEB, True),
    ("app=db", WEB, False),
    ("app!=db", WEB, True),
    ("app!=web", WEB, False),
    ("missing!=x", WEB, True),
    ("tier in (frontend,backend)", WEB, True),
    ("tier in (backend)", WEB, False),
    ("missing in (x)", WEB, False),
    ("tier notin (backend)", WEB, True),
    ("tier notin (frontend)", WEB, False),
    ("missing notin (x)", WEB, True),
    ("app", WEB, True),
    ("missing", WEB, False),
    ("!missing", WEB, True),
    ("!app", WEB, False),
    ("app=web,tier=frontend", WEB, True),
    ("app=web,tier=backend", WEB, False),
    ("  app = web ,  tier  in ( frontend , x )  ", WEB, True),
    ("version>2", WEB, True),
    ("version<3", WEB, False),
    ("app=", {"app": ""}, True),
    ("app in (web,)", {"app": ""}, True),
    ("app=in", {"app": "in"}, True),
    ("example.com/role=db", {"example.com/role": "db"}, True),
    ("app=web", None, False),
    ("!app", None, True),
]


@pytest.mark.parametrize(("text", "labels", "expected"), LABEL_MATCHES)
def test_label_selector_matches(text, labels, expected):
    assert parse_label_selector(text).matches(labels) is expected


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("tier in (b,a),app=web,!canary", "app=web,!canary,tier in (a,b)"),
        ("x in (foo,,baz),y,z notin ()", "x in (,baz,foo),y,z notin ()"),
        ("a==b,c!=d,n>1", "a==b,c!=d,n>1"),
    ],
)
def test_label_selector_string_is_sorted_and_canonical(text, canonical):
    assert str(parse_label_selector(text)) == canonical


NAME_RULE = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
    "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used "
    "for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
VALUE_RULE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
    "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)

LABEL_ERRORS = [
    ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
    (
        "app:monolith",
        f'unable to parse requirement: <nil>: Invalid value: "app:monolith": {NAME_RULE}',
    ),
    ("a=b c", "found 'c', expected: ',' or 'end of string'"),
    ("a,", "found '', expected: identifier after ','"),
    (",a", "found ',', expected: !, identifier, or 'end of string'"),
    ("a in b", "unable to parse requirement: found 'b' expected: '('"),
    ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
    ("a in (b c)", "unable to parse requirement: found 'c', expected: ',' or ')'"),
    ("a=(", "unable to parse requirement: found '(', expected: identifier"),
    ("!a=b", "found '=', expected: ',' or 'end of string'"),
    (
        "a<x",
        'unable to parse requirement: values[0]: Invalid value: "x": '
        "for 'Gt', 'Lt' operators, the value must be an integer",
    ),
    (
        "a=" + "v" * 64,
        'unable to parse requirement: values[0][a]: Invalid value: "'
        + "v" * 64
        + '": must be no more than 63 characters',
    ),
    ("a=-x", f'unable to parse requirement: values[0][a]: Invalid value: "-x": {VALUE_RULE}'),
    (
        "k" * 64,
        'unable to parse requirement: <nil>: Invalid value: "'
        + "k" * 64
        + '": name part must be no more than 63 characters',
    ),
    (
        "a/b/c=x",
        'unable to parse requirement: <nil>: Invalid value: "a/b/c": a qualified name must consist '
        "of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character "
        "(e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
        "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' "
        "(e.g. 'example.com/MyName')",
    ),
    (
        "/a=x",
        'unable to parse requirement: <nil>: Invalid value: "/a": prefix part must be non-empty',
    ),
]


@pytest.mark.parametrize(("text", "message"), LABEL_ERRORS)
def test_label_selector_errors_read_like_the_api_server(text, message):
    with pytest.raises(SelectorError) as caught:
        parse_label_selector(text)
    assert str(caught.value) == message


SPEC_MATCHES = [
    (None, WEB, False),
    ({}, WEB, True),
    ({}, None, True),
    ({"matchLabels": {"app": "web"}}, WEB, True),
    ({"matchLabels": {"app": "db"}}, WEB, False),
    ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["frontend"]}]}, WEB, True),
    (
        {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["frontend"]}]},
        WEB,
        False,
    ),
    ({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, WEB, True),
    ({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, WEB, False),
    (
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "canary", "operator": "DoesNotExist"}],
        },
        WEB,
        True,
    ),
]


@pytest.mark.parametrize(("spec", "labels", "expected"), SPEC_MATCHES)
def test_label_selector_from_spec(spec, labels, expected):
    assert label_selector_from_spec(spec).matches(labels) is expected


def test_spec_selector_empty_and_nothing_flags():
    assert label_selector_from_spec({}).empty
    assert not label_selector_from_spec(None).empty
    assert str(label_selector_from_spec({"matchLabels": {"b": "2", "a": "1"}})) == "a=1,b=2"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]},
            '"Equals" is not a valid label selector operator',
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]},
            "values: Invalid value: null: for 'in', 'notin' operators, values set can't be empty",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
            'values: Invalid value: ["x"]: values set must be empty for exists and does not exist',
        ),
        (
            {"matchLabels": {"app": "bad value"}},
            f'values[0][app]: Invalid value: "bad value": {VALUE_RULE}',
        ),
    ],
)
def test_spec_selector_errors(spec, message):
    with pytest.raises(SelectorError) as caught:
        label_selector_from_spec(spec)
    assert str(caught.value) == message


POD = {
    "metadata": {"name": "web-1", "namespace": "shop"},
    "spec": {"nodeName": "node-a", "restartPolicy": "Always", "serviceAccountName": "web"},
    "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.7"}], "podIP": "10.0.0.7"},
}
PENDING_POD = {
    "metadata": {"name": "web-2", "namespace": "shop"},
    "spec": {},
    "status": {"phase": "Pending"},
}
NODE = {"metadata": {"name": "node-a"}, "spec": {}}
EVENT = {
    "metadata": {"name": "web-1.1", "namespace": "shop"},
    "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "shop"},
    "reason": "BackOff",
    "type": "Warning",
    "reportingComponent": "kubelet",
}

FIELD_MATCHES = [
    ("", "Pod", POD, True),
    ("metadata.name=web-1", "Pod", POD, True),
    ("metadata.name==web-1", "Pod", POD, True),
    ("metadata.name!=web-1", "Pod", POD, False),
    ("metadata.namespace=shop,status.phase=Running", "Pod", POD, True),
    ("status.phase!=Running", "Pod", POD, False),
    ("spec.nodeName=node-a", "Pod", POD, True),
    ("spec.nodeName=", "Pod", POD, False),
    ("spec.nodeName=", "Pod", PENDING_POD, True),
    ("spec.host=node-a", "Pod", POD, True),
    ("status.podIP=10.0.0.7", "Pod", POD, True),
    ("spec.hostNetwork=false", "Pod", POD, True),
    ("spec.serviceAccountName=web", "Pod", POD, True),
    ("status.podIPs=10.0.0.7", "Pod", POD, False),
    ("spec.unschedulable=false", "Node", NODE, True),
    (
        "spec.unschedulable=true",
        "Node",
        {"metadata": {"name": "n"}, "spec": {"unschedulable": True}},
        True,
    ),
    (
        "type=kubernetes.io/tls",
        "Secret",
        {"metadata": {"name": "s"}, "type": "kubernetes.io/tls"},
        True,
    ),
    (
        "status.phase=Active",
        "Namespace",
        {"metadata": {"name": "shop"}, "status": {"phase": "Active"}},
        True,
    ),
    ("involvedObject.kind=Pod,involvedObject.name=web-1,type=Warning", "Event", EVENT, True),
    ("reason=Killing", "Event", EVENT, False),
    ("source=kubelet", "Event", EVENT, True),
    ("metadata.name=web", "Deployment", {"metadata": {"name": "web"}}, True),
    ("metadata.name=a\\,b", "ConfigMap", {"metadata": {"name": "a,b"}}, True),
    ("status.successful=0", "Job", {"metadata": {"name": "j"}}, True),
    ("metadata.name=c", "Certificate", {"metadata": {"name": "c"}}, True),
]


@pytest.mark.parametrize(("text", "kind", "obj", "expected"), FIELD_MATCHES)
def test_field_selector_matches(text, kind, obj, expected):
    custom = kind == "Certificate"
    assert parse_field_selector(text, kind, custom=custom).matches(obj) is expected


def test_events_k8s_io_uses_its_own_field_names():
    event = {
        "metadata": {"name": "e"},
        "regarding": {"kind": "Pod"},
        "reportingController": "kubelet",
    }
    selector = parse_field_selector(
        "regarding.kind=Pod,reportingController=kubelet", "Event", group="events.k8s.io"
    )
    assert selector.matches(event)


def test_requires_exact_match_names_the_pinned_value():
    selector = parse_field_selector("spec.nodeName=node-a,status.phase!=Failed", "Pod")
    assert selector.requires_exact_match("spec.nodeName") == "node-a"
    assert selector.requires_exact_match("status.phase") is None


FIELD_ERRORS = [
    ("foo=bar", "Pod", {}, "field label not supported: foo"),
    (" metadata.name=x", "Pod", {}, "field label not supported:  metadata.name"),
    ("metadata.namespace=x", "Node", {}, "field label not supported: metadata.namespace"),
    (
        "status.replicas=1",
        "Deployment",
        {},
        '"status.replicas" is not a known field selector: only "metadata.name", "metadata.namespace"',
    ),
    (
        "spec.nodeName=x",
        "ConfigMap",
        {},
        '"spec.nodeName" is not a known field selector: only "metadata.name", "metadata.namespace"',
    ),
    (
        "spec.secretName=x",
        "Certificate",
        {"custom": True},
        "field label not supported: spec.secretName",
    ),
    (
        "metadata.namespace=x",
        "ClusterIssuer",
        {"custom": True, "cluster_scoped": True},
        "field label not supported: metadata.namespace",
    ),
    ("status.failed=1", "Job", {}, 'field label "status.failed" not supported for batchv1.Job'),
    (
        "metadata.name",
        "Pod",
        {},
        "invalid selector: 'metadata.name'; can't understand 'metadata.name'",
    ),
    ("metadata.name=a=b", "Pod", {}, "invalid field selector: unescaped character in value: 61"),
    ("metadata.name=a\\x", "Pod", {}, "invalid field selector: invalid escape sequence: \\x"),
    ("metadata.name=a\\", "Pod", {}, "invalid field selector: invalid escape sequence: \\"),
]


@pytest.mark.parametrize(("text", "kind", "options", "message"), FIELD_ERRORS)
def test_field_selector_errors_read_like_the_api_server(text, kind, options, message):
    with pytest.raises(SelectorError) as caught:
        parse_field_selector(text, kind, **options)
    assert str(caught.value) == message


def test_custom_resource_selectable_fields():
    selector = parse_field_selector(
        "spec.color=blue", "Widget", custom=True, selectable_fields=(".spec.color",)
    )
    assert selector.matches({"metadata": {"name": "w"}, "spec": {"color": "blue"}})
