"""The watch cache's store and the client's rate limit: pure logic, no API server."""

from __future__ import annotations

from typing import Any

import pytest

from honed.controller import names
from honed.controller.cache import Store
from honed.controller.kube import JOBS, PODS, RateLimiter


def obj(name: str, version: str, namespace: str = "ml", **labels: str) -> dict[str, Any]:
    meta = {"name": name, "namespace": namespace, "resourceVersion": version, "labels": labels}
    return {"metadata": {**meta, "managedFields": [{"manager": "kubectl"}]}}


def test_an_older_object_never_replaces_a_newer_one() -> None:
    store = Store(JOBS)
    assert store.put(obj("j", "10"))
    assert not store.put(obj("j", "9"))  # a watch event older than the operator's own write
    assert not store.put(obj("j", "10"))  # the watch event of that write: no change
    assert store.get("ml", "j")["metadata"]["resourceVersion"] == "10"  # type: ignore[index]
    assert store.put(obj("j", "11"))
    assert "managedFields" not in store.get("ml", "j")["metadata"]  # type: ignore[index]


def test_a_write_answered_before_a_deletion_does_not_bring_the_object_back() -> None:
    store = Store(JOBS)
    store.put(obj("j", "10"))
    store.delete(obj("j", "12"))
    assert not store.put(obj("j", "11")) and store.get("ml", "j") is None
    assert store.put(obj("j", "13"))  # created again under the same name


def test_the_owner_index_finds_children_and_follows_relabelling() -> None:
    store = Store(PODS)
    owner = {names.OWNER: "resnet"}
    store.put(obj("a", "1", **owner))
    store.put(obj("b", "2", **{names.OWNER: "bert"}))
    store.put(obj("c", "3", namespace="other", **owner))
    assert [o["metadata"]["name"] for o in store.by_index("ml", "resnet")] == ["a"]
    store.put(obj("a", "4", **{names.OWNER: "bert"}))
    assert store.by_index("ml", "resnet") == [] and len(store.by_index("ml", "bert")) == 2


def test_a_fresh_list_replaces_its_scope_and_names_what_changed() -> None:
    store = Store(JOBS)
    store.put(obj("kept", "1"))
    store.put(obj("changed", "2"))
    store.put(obj("gone", "3"))
    store.put(obj("elsewhere", "4", namespace="other"))
    changed = store.replace("ml", [obj("kept", "1"), obj("changed", "5"), obj("new", "6")])
    assert sorted(o["metadata"]["name"] for o in changed) == ["changed", "gone", "new"]
    assert store.get("ml", "gone") is None and store.get("other", "elsewhere") is not None
    store.replace(None, [])
    assert len(store) == 0


def test_the_rate_limit_allows_its_burst_then_spaces_requests_by_qps() -> None:
    limiter = RateLimiter(qps=10.0, burst=3)
    waits = [limiter.reserve() for _ in range(5)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    # Queued requests wait in turn: one token every 1/qps seconds (minus the little time elapsed).
    assert waits[3] == pytest.approx(0.1, abs=0.01) and waits[4] == pytest.approx(0.2, abs=0.01)


def test_a_pod_keeps_only_its_node_of_its_spec() -> None:
    store = Store(PODS)
    pod = obj("p", "1")
    pod["spec"] = {"nodeName": "n1", "containers": [{"name": "triton", "image": "img:1"}]}
    store.put(pod)
    assert store.get("ml", "p")["spec"] == {"nodeName": "n1"}  # type: ignore[index]
    store.put(obj("q", "2"))  # not scheduled yet: no spec at all
    assert "spec" not in store.get("ml", "q")  # type: ignore[operator]
