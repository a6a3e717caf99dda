"""Pure counting for the operator benchmark: Prometheus text samples, counter deltas, audit lines.

Nothing here does I/O: ``run.py`` scrapes the API server's ``/metrics`` (``apiserver_request_total``,
``apiserver_longrunning_requests``), the operator's ``/metrics`` (``honed_api_requests_total`` when
the operator has it), Prometheus' own ``/metrics`` (``prometheus_http_requests_total``) and reads
the API server's audit log; these functions turn that text into counts per window.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs: hashable and comparable

# Long-running requests: a watch is a stream, counted by apiserver_request_total when it ends, not
# when it delivers events, so it is left out of request rates and counted on its own.
LONG_RUNNING_VERBS = frozenset({"WATCH", "WATCHLIST", "CONNECT"})
# Leader-election and heartbeat traffic the idle target leaves out ("lease renewals").
LEASE_RESOURCES = frozenset({"leases"})

_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')
_UNESCAPE = re.compile(r"\\(.)")


def _unescape(value: str) -> str:
    return _UNESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def parse_labels(text: str) -> Labels:
    """``a="1",b="x\\"y"`` (the inside of the braces) -> (("a", "1"), ("b", 'x"y'))."""
    labels: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _LABEL.match(text, pos)
        if match is None:
            if text[pos:].strip(" ,"):
                raise ValueError(f"cannot parse labels at {text[pos : pos + 40]!r}")
            break
        labels.append((match.group(1), _unescape(match.group(2))))
        pos = match.end()
    return tuple(sorted(labels))


def samples(text: str, metric: str) -> dict[Labels, float]:
    """Every sample of ``metric`` (exact name, no _bucket/_sum suffixes) in Prometheus text format."""
    found: dict[Labels, float] = {}
    for line in text.splitlines():
        if not line.startswith(metric) or line.startswith("#"):
            continue
        rest = line[len(metric) :]
        if rest.startswith("{"):
            end = rest.rfind("}")
            if end < 0:
                continue
            labels = parse_labels(rest[1:end])
            value_part = rest[end + 1 :].split()
        elif rest.startswith(" "):
            labels = ()
            value_part = rest.split()
        else:
            continue  # another metric sharing the prefix (honed_api_requests_total_created...)
        if not value_part:
            continue
        try:
            found[labels] = float(value_part[0])
        except ValueError:
            continue
    return found


def delta(before: Mapping[Labels, float], after: Mapping[Labels, float]) -> dict[Labels, float]:
    """``after - before`` per series; a series new in ``after`` counts from 0. Zero deltas are dropped."""
    out = {}
    for labels, value in after.items():
        change = value - before.get(labels, 0.0)
        if change:
            out[labels] = change
    return out


def group_by(series: Mapping[Labels, float], *names: str) -> dict[tuple[str, ...], float]:
    """Sum over every label but ``names``."""
    out: dict[tuple[str, ...], float] = {}
    for labels, value in series.items():
        as_dict = dict(labels)
        key = tuple(as_dict.get(name, "") for name in names)
        out[key] = out.get(key, 0.0) + value
    return out


def select(series: Mapping[Labels, float], **wanted: str | Iterable[str]) -> dict[Labels, float]:
    """The series whose labels match: a value, or any of several values."""

    def matches(labels: Labels) -> bool:
        as_dict = dict(labels)
        for name, want in wanted.items():
            value = as_dict.get(name, "")
            if isinstance(want, str):
                if value != want:
                    return False
            elif value not in want:
                return False
        return True

    return {labels: value for labels, value in series.items() if matches(labels)}


def resource_name(group: str, resource: str, subresource: str) -> str:
    """``jobs``, ``optimizedmodels.honed.dev/status``, ``/healthz`` (non-resource paths)."""
    if not resource:
        return subresource or "(none)"
    name = f"{resource}.{group}" if group else resource
    return f"{name}/{subresource}" if subresource else name


@dataclass(frozen=True)
class RequestCounts:
    """apiserver_request_total over a window, short requests only (watches apart)."""

    total: float  # every short request (not WATCH/WATCHLIST/CONNECT)
    by_client: dict[str, float]  # by the system_client label ("" = neither kube-apiserver nor kcm)
    by_verb_resource: dict[str, float]  # "VERB resource" -> count, all clients
    watches_ended: float  # WATCH/WATCHLIST requests that finished in the window
    has_system_client: bool  # this API server labels requests with system_client (1.34+)


def request_counts(change: Mapping[Labels, float]) -> RequestCounts:
    """Summarize a delta of apiserver_request_total."""
    short = {k: v for k, v in change.items() if dict(k).get("verb", "") not in LONG_RUNNING_VERBS}
    watches = sum(v for k, v in change.items() if dict(k).get("verb", "") in ("WATCH", "WATCHLIST"))
    by_client = {key[0] or "other": value for key, value in group_by(short, "system_client").items()}
    by_verb_resource: dict[str, float] = {}
    for (verb, group, resource, subresource), value in group_by(
        short, "verb", "group", "resource", "subresource"
    ).items():
        key = f"{verb} {resource_name(group, resource, subresource)}"
        by_verb_resource[key] = by_verb_resource.get(key, 0.0) + value
    has_label = any("system_client" in dict(k) for k in change)
    return RequestCounts(sum(short.values()), by_client, by_verb_resource, watches, has_label)


# -- the API server's audit log (--audit-log-format=json, one event per line) ------------------


def client_of(user_agent: str) -> str:
    """The client class of a request, by its User-Agent.

    honed's own client sends ``honed-operator``; kopf's aiohttp session ``kopf/VERSION``; the
    benchmark harness ``honed-bench``; the control plane ``kube-controller-manager/...`` and
    ``kube-apiserver/...`` (its loopback client).
    """
    if user_agent.startswith("honed-operator"):
        return "honed-operator"
    if user_agent.startswith("kopf/"):
        return "kopf"
    if user_agent.startswith("honed-bench"):
        return "harness"
    if user_agent.startswith("kube-controller-manager/"):
        return "kube-controller-manager"
    if user_agent.startswith("kube-apiserver/"):
        return "kube-apiserver"
    return "other"


OPERATOR_CLIENTS = ("honed-operator", "kopf")


@dataclass(frozen=True)
class AuditRecord:
    at: float  # epoch seconds of the stage (the response's completion, or a watch's start)
    client: str
    verb: str  # the Kubernetes verb, lowercase: get, list, watch, create, patch, update, delete...
    resource: str  # as resource_name(): "optimizedmodels.honed.dev/status", "/healthz"
    code: int
    watch_start: bool  # a long-running request that has just started streaming


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def parse_audit(lines: Iterable[str]) -> Iterator[AuditRecord]:
    """Audit events -> one record per request; unparsable lines and other stages are skipped.

    A short request counts once, at ResponseComplete (or Panic). A watch counts once, when its
    stream starts (ResponseStarted); its ResponseComplete minutes later is the same request. A
    watch refused before streaming (410, 403) has no ResponseStarted and counts at its completion.
    """
    started: set[str] = set()
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        stage = event.get("stage")
        verb = str(event.get("verb", ""))
        audit_id = str(event.get("auditID", ""))
        if stage == "ResponseStarted":
            if verb != "watch":
                continue  # another long-running request (exec, logs -f): counted when it completes
            started.add(audit_id)
        elif stage in ("ResponseComplete", "Panic"):
            if verb == "watch" and audit_id in started:
                started.discard(audit_id)
                continue
        else:
            continue
        ref = event.get("objectRef") or {}
        if ref.get("resource"):
            resource = resource_name(ref.get("apiGroup", ""), ref["resource"], ref.get("subresource", ""))
        else:
            resource = str(event.get("requestURI", "")).split("?", 1)[0]
        stamp = event.get("stageTimestamp") or event.get("requestReceivedTimestamp")
        if not stamp:
            continue
        yield AuditRecord(
            at=_epoch(stamp),
            client=client_of(str(event.get("userAgent", ""))),
            verb=verb,
            resource=resource,
            code=int((event.get("responseStatus") or {}).get("code") or 0),
            watch_start=verb == "watch",
        )


@dataclass
class AuditWindow:
    """What the audit log says about one window."""

    start: float
    end: float
    requests: Counter[str]  # client -> short requests (watches and leases apart)
    leases: Counter[str]  # client -> requests on leases
    watches: Counter[str]  # client -> watch streams opened
    operator_by_verb_resource: Counter[str]  # "verb resource" -> short requests of the operator's clients
    operator_watches: Counter[str]  # resource -> watch streams the operator opened
    operator_per_bucket: Counter[int]  # bucket index -> the operator's short requests (peak rates)
    operator_errors: Counter[int]  # HTTP code >= 400 -> count (the operator's clients)
    first_operator_at: float | None = None  # the operator's first request in the window

    @property
    def seconds(self) -> float:
        return self.end - self.start


def audit_windows(
    records: Iterable[AuditRecord], windows: Mapping[str, tuple[float, float]], *, bucket_s: float = 10.0
) -> dict[str, AuditWindow]:
    """Count ``records`` into each named ``(start, end)`` window (epoch seconds, end exclusive)."""
    out = {
        name: AuditWindow(start, end, Counter(), Counter(), Counter(), Counter(), Counter(), Counter(), Counter())
        for name, (start, end) in windows.items()
    }
    for record in records:
        for window in out.values():
            if not window.start <= record.at < window.end:
                continue
            operator = record.client in OPERATOR_CLIENTS
            if operator and (window.first_operator_at is None or record.at < window.first_operator_at):
                window.first_operator_at = record.at
            if operator and record.code >= 400:
                window.operator_errors[record.code] += 1
            if record.watch_start:
                window.watches[record.client] += 1
                if operator:
                    window.operator_watches[record.resource] += 1
                continue
            lease = record.resource.split("/", 1)[0].split(".", 1)[0] in LEASE_RESOURCES
            (window.leases if lease else window.requests)[record.client] += 1
            if operator and not lease:
                window.operator_by_verb_resource[f"{record.verb} {record.resource}"] += 1
                window.operator_per_bucket[int((record.at - window.start) // bucket_s)] += 1
    return out


def peak_rate(per_bucket: Mapping[int, float], bucket_s: float, window_s: float | None = None) -> float:
    """The busiest bucket's requests per second (0 when there were none).

    With ``window_s`` the last bucket is as long as what is left of the window (at least 1 s),
    so a window shorter than a bucket is not diluted.
    """

    def seconds(index: int) -> float:
        if window_s is None:
            return bucket_s
        return max(1.0, min(bucket_s, window_s - index * bucket_s))

    return max((count / seconds(index) for index, count in per_bucket.items()), default=0.0)
