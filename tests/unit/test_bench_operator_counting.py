"""The operator benchmark's counting: Prometheus text, apiserver_request_total deltas, audit lines."""

from __future__ import annotations

import json

import pytest
from benchmarks.operator.counting import (
    audit_windows,
    client_of,
    declares,
    delta,
    group_by,
    parse_audit,
    parse_labels,
    peak_rate,
    request_counts,
    samples,
    select,
)
from benchmarks.operator.triton_series import exposition, series_per_model


def series(verb: str, resource: str, value: float, *, group: str = "", sub: str = "", client: str = "") -> str:
    """One apiserver_request_total line as kube-apiserver v1.36 writes it."""
    labels = (
        f'code="200",component="apiserver",dry_run="",group="{group}",resource="{resource}",scope="namespace",'
        f'subresource="{sub}",system_client="{client}",verb="{verb}",version="v1"'
    )
    return f"apiserver_request_total{{{labels}}} {value:g}\n"


KCM_CLIENT = "kube-controller-manager"
BEFORE = (
    "# HELP apiserver_request_total [STABLE] Counter of apiserver requests broken out for each verb, ...\n"
    "# TYPE apiserver_request_total counter\n"
    + series("LIST", "jobs", 10, group="batch")
    + series("LIST", "pods", 5, client=KCM_CLIENT)
    + series("WATCH", "pods", 3)
    + 'apiserver_request_total_created{code="200"} 1.7e9\n'
    + 'apiserver_request_duration_seconds_bucket{verb="LIST",le="0.1"} 99\n'
)
AFTER = (
    series("LIST", "jobs", 25, group="batch")
    + series("LIST", "pods", 7, client=KCM_CLIENT)
    + series("WATCH", "pods", 4)
    + series("PATCH", "optimizedmodels", 3, group="honed.dev", sub="status")
    + 'apiserver_request_total{code="200",component="",dry_run="",group="",resource="",scope="",'
    'subresource="/healthz",system_client="",verb="GET",version=""} 1\n'
)


def test_labels_are_parsed_with_escapes() -> None:
    assert parse_labels('b="x\\"y",a="1"') == (("a", "1"), ("b", 'x"y'))
    assert parse_labels('path="a\\\\b",msg="l1\\nl2",') == (("msg", "l1\nl2"), ("path", "a\\b"))
    assert parse_labels("") == ()
    with pytest.raises(ValueError):
        parse_labels("no quotes=here")


def test_samples_take_the_exact_metric_only() -> None:
    found = samples(BEFORE, "apiserver_request_total")
    assert len(found) == 3  # not _created, not the HELP line, not the histogram
    assert samples("up 1\nupper 2\n", "up") == {(): 1.0}
    assert samples('x{a="1"} NaN-ish\n', "x") == {}


def test_request_counts_leave_watches_out_and_split_clients() -> None:
    change = delta(samples(BEFORE, "apiserver_request_total"), samples(AFTER, "apiserver_request_total"))
    counts = request_counts(change)
    assert counts.total == 15 + 2 + 3 + 1
    assert counts.watches_ended == 1
    assert counts.by_client == {"other": 19, "kube-controller-manager": 2}
    assert counts.by_verb_resource == {
        "LIST jobs.batch": 15,
        "LIST pods": 2,
        "PATCH optimizedmodels.honed.dev/status": 3,
        "GET /healthz": 1,
    }
    assert counts.has_system_client
    assert group_by(select(change, verb=("LIST", "PATCH")), "verb") == {("LIST",): 17, ("PATCH",): 3}


def audit(stage: str, verb: str, agent: str, at: str, *, audit_id: str, code: int = 200, **ref: str) -> str:
    event: dict[str, object] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": audit_id,
        "stage": stage,
        "requestURI": "/healthz?verbose" if not ref else "/apis/x",
        "verb": verb,
        "userAgent": agent,
        "responseStatus": {"metadata": {}, "code": code},
        "requestReceivedTimestamp": f"2026-11-30T10:00:{at}Z",
        "stageTimestamp": f"2026-11-30T10:00:{at}Z",
    }
    if ref:
        event["objectRef"] = ref
    return json.dumps(event)


KCM = "kube-controller-manager/v1.36.1 (linux/amd64) kubernetes/abc/system:serviceaccount:kube-system:job-controller"
LINES = [
    audit(
        "ResponseStarted",
        "watch",
        "kopf/1.45.2",
        "01.000000",
        audit_id="w1",
        resource="optimizedmodels",
        apiGroup="honed.dev",
    ),
    audit(
        "ResponseComplete",
        "get",
        "honed-operator",
        "02.500000",
        audit_id="g1",
        resource="optimizedmodels",
        apiGroup="honed.dev",
    ),
    audit(
        "ResponseComplete",
        "patch",
        "honed-operator",
        "03.000000",
        audit_id="p1",
        resource="optimizedmodels",
        apiGroup="honed.dev",
        subresource="status",
    ),
    audit("ResponseComplete", "list", "honed-operator", "03.100000", audit_id="l1", code=403, resource="pods"),
    audit(
        "ResponseComplete",
        "update",
        "kopf/1.45.2",
        "04.000000",
        audit_id="u1",
        resource="leases",
        apiGroup="coordination.k8s.io",
    ),
    audit("ResponseComplete", "list", KCM, "05.000000", audit_id="k1", resource="pods"),
    audit("ResponseComplete", "get", "curl/7.88.1", "05.500000", audit_id="c1"),
    audit(
        "ResponseComplete",
        "watch",
        "kopf/1.45.2",
        "11.000000",
        audit_id="w1",
        resource="optimizedmodels",
        apiGroup="honed.dev",
    ),
    # A watch refused before it streamed (too old a resourceVersion): one request, at completion.
    audit(
        "ResponseComplete",
        "watch",
        "kopf/1.45.2",
        "12.000000",
        audit_id="w2",
        code=410,
        resource="jobs",
        apiGroup="batch",
    ),
    audit("RequestReceived", "get", "honed-operator", "13.000000", audit_id="g2", resource="jobs", apiGroup="batch"),
    "not json",
]


def test_audit_lines_become_one_record_per_request() -> None:
    records = list(parse_audit(LINES))
    assert [(r.client, r.verb, r.resource, r.watch_start) for r in records] == [
        ("kopf", "watch", "optimizedmodels.honed.dev", True),
        ("honed-operator", "get", "optimizedmodels.honed.dev", False),
        ("honed-operator", "patch", "optimizedmodels.honed.dev/status", False),
        ("honed-operator", "list", "pods", False),
        ("kopf", "update", "leases.coordination.k8s.io", False),
        ("kube-controller-manager", "list", "pods", False),
        ("other", "get", "/healthz", False),
        ("kopf", "watch", "jobs.batch", True),
    ]
    assert records[1].at - records[0].at == pytest.approx(1.5)


def test_clients_by_user_agent() -> None:
    assert client_of("honed-operator") == "honed-operator"
    assert client_of("kopf/1.45.2") == "kopf"
    assert client_of("honed-bench") == "harness"
    assert client_of(KCM) == "kube-controller-manager"
    assert client_of("kube-apiserver/v0.0.0 (linux/amd64) kubernetes/$Format") == "kube-apiserver"
    assert client_of("OpenAPI-Generator/36.0.3/python") == "other"


def test_audit_windows_split_watches_leases_and_the_operators_requests() -> None:
    records = list(parse_audit(LINES))
    start = records[0].at
    windows = audit_windows(records, {"all": (start, start + 60), "late": (start + 3, start + 60)}, bucket_s=2.0)
    everything = windows["all"]
    assert everything.requests == {"honed-operator": 3, "kube-controller-manager": 1, "other": 1}
    assert everything.leases == {"kopf": 1}
    assert everything.watches == {"kopf": 2}
    assert everything.operator_watches == {"optimizedmodels.honed.dev": 1, "jobs.batch": 1}
    assert everything.operator_by_verb_resource == {
        "get optimizedmodels.honed.dev": 1,
        "patch optimizedmodels.honed.dev/status": 1,
        "list pods": 1,
    }
    assert everything.operator_errors == {403: 1, 410: 1}
    # Seconds 1.5, 2.0 and 2.1 after the start: buckets 0 (one) and 1 (two).
    assert everything.operator_per_bucket == {0: 1, 1: 2}
    assert peak_rate(everything.operator_per_bucket, 2.0) == 1.0
    assert windows["late"].requests == {"kube-controller-manager": 1, "other": 1}  # end exclusive, start inclusive
    assert windows["late"].seconds == 57
    assert peak_rate({}, 10.0) == 0.0
    # A 2.5 s window in 10 s buckets: its 20 requests came at 8 per second, not 2.
    assert peak_rate({0: 20}, 10.0, 2.5) == 8.0
    assert peak_rate({0: 20, 1: 3}, 10.0, 10.2) == 3.0  # the 0.2 s tail counts as 1 s


def test_triton_series_cover_every_model_with_what_the_feedback_queries_read() -> None:
    text = exposition([("ns-a", "m-1"), ("ns-b", "m-2")])
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert len(lines) == 2 * series_per_model()
    counts = samples(text, "nv_inference_count")
    assert set(counts) == {
        (("model", "m-1"), ("namespace", "ns-a"), ("version", "1")),
        (("model", "m-2"), ("namespace", "ns-b"), ("version", "1")),
    }
    assert len(samples(text, "nv_inference_request_summary_us")) == 2 * 3  # three quantiles each


def test_a_declared_counter_without_samples_is_told_from_an_absent_one() -> None:
    # prometheus_client before a labelled counter's first increment, and after.
    empty = "# HELP honed_api_requests_total Requests\n# TYPE honed_api_requests_total counter\n"
    assert declares(empty, "honed_api_requests_total") and samples(empty, "honed_api_requests_total") == {}
    assert declares("# TYPE honed_reconciles counter\n", "honed_reconciles_total")
    assert not declares("# TYPE honed_reconciles_seconds histogram\n", "honed_reconciles_total")
    assert not declares("honed_api_requests_total 1\n", "honed_api_requests_total")
