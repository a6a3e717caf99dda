"""What the operator knows of the cluster: OptimizedModels and their children, kept by watches.

Each kind is listed once and then watched from that list's resourceVersion, as client-go's
reflector does; a reconcile pass reads here, from memory, and only its writes reach the API
server. Children are listed and watched with the label every object honed creates carries
(``app.kubernetes.io/managed-by=honed``), so the operator streams its own objects, not the
cluster's; Events only as far as the Job controller's ``FailedCreate`` (Pod Security, quotas).

The operator's own writes enter the cache at once (``KubeClient.on_write``), so a pass never acts
on a state older than what the pass before it wrote. An object is never replaced by an older one:
resourceVersions are compared as numbers, as client-go's mutation cache does, and a deleted
object's version is remembered so that a write answered before the deletion cannot bring it back.

Watches run in threads of their own (the client is synchronous and a watch blocks for minutes);
what changed reaches the event loop through ``on_change(namespace, owner)``: a child's owner, or
the OptimizedModel itself when another client changed it.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import urllib3

from honed.api.spec import GROUP, KIND
from honed.controller import names, operator_metrics
from honed.controller.kube import (
    CONFIGMAPS,
    DEPLOYMENTS,
    EVENTS,
    JOBS,
    OPTIMIZED_MODELS,
    PODS,
    SERVICES,
    Expired,
    KubeClient,
    KubeError,
    Resource,
    WatchStream,
)

log = logging.getLogger(__name__)

OWNED = f"{names.MANAGED_BY}=honed"
FAILED_CREATE = "involvedObject.kind=Job,reason=FailedCreate"
# Backoff after a failed list or watch: doubling from the first to the last.
RETRY_FIRST_S = 1.0
RETRY_LAST_S = 30.0
# While the first lists have not all come back, say what is missing this often.
SYNC_REPORT_S = 30.0


@dataclass(frozen=True)
class Watched:
    """A kind the cache keeps, and the server-side selectors that bound what it streams."""

    resource: Resource
    labels: str = ""
    fields: str = ""


WATCHED = (
    Watched(OPTIMIZED_MODELS),
    Watched(JOBS, labels=OWNED),
    Watched(PODS, labels=OWNED),
    Watched(CONFIGMAPS, labels=OWNED),
    Watched(DEPLOYMENTS, labels=OWNED),
    Watched(SERVICES, labels=OWNED),
    Watched(EVENTS, fields=FAILED_CREATE),
)

Key = tuple[str, str]  # (namespace, name)
OnChange = Callable[[str, str], None]


def _version(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _not_older(new: str, old: str) -> bool:
    """Whether resourceVersion ``new`` is at least ``old``, compared as numbers.

    Kubernetes calls resourceVersions opaque, but every server numbers them from etcd's revision;
    where one is not a number the newcomer wins, as it would without the check.
    """
    try:
        return int(new) >= int(old)
    except ValueError:
        return True


def _slim(resource: Resource, obj: dict[str, Any]) -> dict[str, Any]:
    """What a pass reads of ``obj``, as client-go's TransformFunc trims an informer's objects.

    managedFields (often half of an object) go everywhere; so do the parts of a kind that honed
    never reads back: a pod's spec (but its nodeName) and a Job's pod template (what the operator wrote itself), a
    ConfigMap's data, a Service's spec and status (only that it exists counts). At 1,000 models
    these are most of the operator's memory. A Deployment is kept whole: its template says which
    version and pool it serves.
    """
    slim = {key: value for key, value in obj.items() if key not in _DROPPED.get(resource.plural, ())}
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        slim["metadata"] = {key: value for key, value in meta.items() if key != "managedFields"}
    spec = obj.get("spec")
    if resource is JOBS and isinstance(spec, dict):
        slim["spec"] = {key: value for key, value in spec.items() if key != "template"}
    if resource is PODS and isinstance(spec, dict) and spec.get("nodeName"):
        # The node names the cause when the node stops reporting (observe.node_lost_note).
        slim["spec"] = {"nodeName": spec["nodeName"]}
    return slim


# Copies, not edits: the object may be a write's answer that its caller still reads.
_DROPPED = {
    PODS.plural: ("spec",),
    SERVICES.plural: ("spec", "status"),
    CONFIGMAPS.plural: ("data", "binaryData"),
}


def _index_key(resource: Resource, obj: dict[str, Any]) -> str:
    """What a pass looks objects up by: a child's owner label, an Event's object, a model's label."""
    meta = obj.get("metadata") or {}
    if resource is OPTIMIZED_MODELS:
        return names.owner_labels(str(meta.get("name", "")))[names.OWNER]
    if resource is EVENTS:
        return str((obj.get("involvedObject") or {}).get("name", ""))
    return str((meta.get("labels") or {}).get(names.OWNER, ""))


class Store:
    """Objects of one kind by (namespace, name), with an index by ``_index_key``. Thread-safe."""

    def __init__(self, resource: Resource) -> None:
        self.resource = resource
        self._lock = threading.Lock()
        self._objects: dict[Key, dict[str, Any]] = {}
        self._index: dict[Key, set[str]] = {}
        self._deleted: dict[Key, str] = {}  # resourceVersion at deletion

    def __len__(self) -> int:
        """The number of objects held."""
        return len(self._objects)

    def _key(self, obj: dict[str, Any]) -> Key:
        meta = obj.get("metadata") or {}
        return str(meta.get("namespace") or ""), str(meta.get("name") or "")

    def _add(self, key: Key, obj: dict[str, Any]) -> None:
        self._remove(key)
        self._objects[key] = obj
        self._index.setdefault((key[0], _index_key(self.resource, obj)), set()).add(key[1])

    def _remove(self, key: Key) -> dict[str, Any] | None:
        old = self._objects.pop(key, None)
        if old is not None:
            bucket = self._index.get((key[0], _index_key(self.resource, old)))
            if bucket is not None:
                bucket.discard(key[1])
                if not bucket:
                    del self._index[(key[0], _index_key(self.resource, old))]
        return old

    def put(self, obj: dict[str, Any]) -> bool:
        """Keep ``obj`` unless the same version or a newer one is held (or was deleted); True when kept.

        The watch event of the operator's own write is thereby no change.
        """
        key, version = self._key(obj), _version(obj)
        with self._lock:
            held = self._objects.get(key)
            if held is not None and (version == _version(held) or not _not_older(version, _version(held))):
                return False
            gone = self._deleted.get(key)
            if held is None and gone is not None:
                if not _not_older(version, gone) or version == gone:
                    return False
                del self._deleted[key]
            self._add(key, _slim(self.resource, obj))
            return True

    def delete(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Drop ``obj``'s object, remembering the version it was deleted at; the object held, if any."""
        key = self._key(obj)
        with self._lock:
            self._deleted[key] = _version(obj)
            return self._remove(key)

    def replace(self, namespace: str | None, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A fresh list of the scope (one namespace, or all); the objects that changed or went."""
        fresh = {self._key(obj): _slim(self.resource, obj) for obj in objects}
        with self._lock:
            scope = [key for key in self._objects if namespace is None or key[0] == namespace]
            changed = [old for key in scope if key not in fresh and (old := self._objects.get(key)) is not None]
            for key in scope:
                if key not in fresh:
                    self._remove(key)
            for key, obj in fresh.items():
                held = self._objects.get(key)
                if held is None or _version(held) != _version(obj):
                    changed.append(obj)
                self._add(key, obj)
            self._deleted = {
                key: v for key, v in self._deleted.items() if namespace is not None and key[0] != namespace
            }
            return changed

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The object held under that name, or None."""
        with self._lock:
            return self._objects.get((namespace, name))

    def by_index(self, namespace: str, value: str) -> list[dict[str, Any]]:
        """The objects in ``namespace`` whose ``_index_key`` is ``value``."""
        with self._lock:
            return [self._objects[(namespace, name)] for name in self._index.get((namespace, value), ())]

    def values(self) -> list[dict[str, Any]]:
        """Every object held, in every namespace (a snapshot: later changes do not show)."""
        with self._lock:
            return list(self._objects.values())

    def in_namespace(self, namespace: str) -> list[dict[str, Any]]:
        """Every object held in ``namespace``."""
        with self._lock:
            return [obj for key, obj in self._objects.items() if key[0] == namespace]


def owner_name(body: Any) -> str | None:
    """The OptimizedModel owning a child, from its owner reference."""
    for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == KIND and ref.get("apiVersion", "").startswith(f"{GROUP}/"):
            return str(ref.get("name"))
    return None


def _matches(obj: dict[str, Any], labels: dict[str, str]) -> bool:
    have = (obj.get("metadata") or {}).get("labels") or {}
    return all(have.get(key) == value for key, value in labels.items())


class Cache:
    """The watched kinds in ``namespaces`` (None: every namespace), read from memory.

    Objects are the dicts the API server sent (managedFields dropped), shared, not copied: a caller
    that changes one changes the cache. Creating the cache hooks it to ``client.on_write``; ``start``
    opens the watches, each ended by the server after ``watch_timeout_s`` and opened again.
    ``on_change(namespace, name)`` runs on the event loop when a watch brings a change, naming the
    OptimizedModel the changed object belongs to.
    """

    def __init__(
        self,
        client: KubeClient,
        namespaces: Sequence[str] | None,
        *,
        watch_timeout_s: int,
        on_change: OnChange | None = None,
        watched: Sequence[Watched] = WATCHED,
    ) -> None:
        self.client = client
        self.namespaces: list[str | None] = list(namespaces) if namespaces else [None]
        self.watch_timeout_s = watch_timeout_s
        self.on_change = on_change
        self.watched = list(watched)
        self.stores = {w.resource: Store(w.resource) for w in self.watched}
        self._stopping = threading.Event()
        self._pending: set[tuple[str, str | None]] = set()
        self._synced = threading.Event()
        self._threads: list[threading.Thread] = []
        self._streams: dict[tuple[str, str | None], WatchStream] = {}
        self._streams_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        client.on_write = self.remember

    @property
    def synced(self) -> bool:
        """Every kind has been listed: what the cache lacks does not exist (as of its watches)."""
        return self._synced.is_set()

    # Reading (from the event loop, never blocks on the network).

    def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as last listed, watched or written; None when the cache does not hold it."""
        return self.stores[resource].get(namespace, name)

    def list(self, resource: Resource, namespace: str, labels: dict[str, str]) -> builtins.list[dict[str, Any]]:
        """Objects in ``namespace`` carrying every one of ``labels`` (through the owner index when given)."""
        store = self.stores[resource]
        owner = labels.get(names.OWNER)
        candidates = store.by_index(namespace, owner) if owner is not None else store.in_namespace(namespace)
        return [obj for obj in candidates if _matches(obj, labels)]

    def all(self, resource: Resource) -> builtins.list[dict[str, Any]]:
        """Every object of that kind in the cache's scope."""
        return self.stores[resource].values()

    def events_of(self, namespace: str, involved: str) -> builtins.list[dict[str, Any]]:
        """The FailedCreate Events about the object named ``involved``."""
        return self.stores[EVENTS].by_index(namespace, involved)

    def remember(self, resource: Resource, obj: dict[str, Any]) -> None:
        """An object the operator wrote or fetched itself (``KubeClient.on_write``)."""
        store = self.stores.get(resource)
        if store is not None:
            store.put(obj)

    # Running.

    async def start(self) -> None:
        """Open every watch and return once every kind has been listed (the cache is complete)."""
        self._loop = asyncio.get_running_loop()
        self._pending = {(w.resource.plural, ns) for w in self.watched for ns in self.namespaces}
        for watched in self.watched:
            for namespace in self.namespaces:
                thread = threading.Thread(
                    target=self._run,
                    args=(watched, namespace),
                    name=f"honed-watch-{watched.resource.plural}-{namespace or 'all'}",
                    daemon=True,
                )
                self._threads.append(thread)
                thread.start()
        while not await asyncio.to_thread(self._synced.wait, SYNC_REPORT_S):
            waiting = ", ".join(
                f"{plural} in {ns or 'all namespaces'}" for plural, ns in sorted(self._pending, key=str)
            )
            log.warning("the cache waits for its first list of: %s", waiting)
        log.info("cache synced: %s", ", ".join(f"{len(s)} {s.resource.plural}" for s in self.stores.values()))

    def stop(self) -> None:
        """End every watch now; the threads exit without listing or watching again."""
        self._stopping.set()
        with self._streams_lock:
            streams = list(self._streams.values())
        for stream in streams:
            stream.interrupt()

    def _listed(self, plural: str, namespace: str | None) -> None:
        self._pending.discard((plural, namespace))
        if not self._pending:
            self._synced.set()

    def _run(self, watched: Watched, namespace: str | None) -> None:
        """List, then watch from the list's version, forever: client-go's ListAndWatch."""
        resource, store = watched.resource, self.stores[watched.resource]
        slot = (resource.plural, namespace)
        version, delay = "", RETRY_FIRST_S
        while not self._stopping.is_set():
            try:
                if not version:
                    items, version = self.client.list_all(
                        resource, namespace, labels=watched.labels, fields=watched.fields
                    )
                    changed = store.replace(namespace, items)
                    operator_metrics.CACHE_OBJECTS.labels(resource=resource.plural).set(len(store))
                    if self._synced.is_set():
                        for obj in changed:  # what a broken watch may have missed
                            self._notify(resource, obj)
                    self._listed(*slot)
                stream = self.client.watch(
                    resource,
                    namespace,
                    resource_version=version,
                    timeout_s=self.watch_timeout_s,
                    labels=watched.labels,
                    fields=watched.fields,
                )
                with self._streams_lock:
                    self._streams[slot] = stream
                for event in stream:
                    version = self._apply(resource, store, event) or version
                    delay = RETRY_FIRST_S
                reason = "timeout"
            except Expired:
                version, reason = "", "expired"
            except (KubeError, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
                if self._stopping.is_set():
                    break
                reason = "error"
                log.warning(
                    "watching %s in %s failed (again in %.0f s): %s",
                    resource.plural,
                    namespace or "all namespaces",
                    delay,
                    exc,
                )
                self._stopping.wait(delay)
                delay = min(delay * 2, RETRY_LAST_S)
            finally:
                with self._streams_lock:
                    self._streams.pop(slot, None)
            if not self._stopping.is_set():
                operator_metrics.WATCH_RESTARTS.labels(resource=resource.plural, reason=reason).inc()

    def _apply(self, resource: Resource, store: Store, event: dict[str, Any]) -> str:
        """One watch event into the store; the resourceVersion to resume from."""
        kind, obj = event.get("type"), event.get("object") or {}
        version = _version(obj)
        if kind == "BOOKMARK":
            return version
        if kind == "DELETED":
            store.delete(obj)
        elif not store.put(obj):
            return version  # the operator's own write already brought a newer one
        operator_metrics.CACHE_OBJECTS.labels(resource=resource.plural).set(len(store))
        self._notify(resource, obj)
        return version

    def _notify(self, resource: Resource, obj: dict[str, Any]) -> None:
        if self.on_change is None or self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed: the operator is stopping
            self._loop.call_soon_threadsafe(self._changed, resource, obj)

    def _changed(self, resource: Resource, obj: dict[str, Any]) -> None:
        owner = self.owner_of(resource, obj)
        if owner is not None and self.on_change is not None:
            self.on_change(*owner)

    def owner_of(self, resource: Resource, obj: dict[str, Any]) -> Key | None:
        """The (namespace, name) of the OptimizedModel ``obj`` belongs to; None when none is known.

        A child's owner reference, else (a pod, whose owner is a Job or a ReplicaSet) the owner
        label; an Event's, through the Job it is about.
        """
        meta = obj.get("metadata") or {}
        namespace = str(meta.get("namespace") or "")
        if resource is OPTIMIZED_MODELS:
            # Someone else wrote it (its status too: a person, another feedback writer); the
            # operator's own writes are held already and make no change.
            return namespace, str(meta.get("name", ""))
        if resource is EVENTS:
            job = self.get(JOBS, namespace, str((obj.get("involvedObject") or {}).get("name", "")))
            return None if job is None else self.owner_of(JOBS, job)
        owner = owner_name(obj)
        if owner is not None:
            return namespace, owner
        label = (meta.get("labels") or {}).get(names.OWNER)
        if label:
            models = self.stores[OPTIMIZED_MODELS].by_index(namespace, label)
            if models:
                return namespace, str(models[0]["metadata"]["name"])
        return None
