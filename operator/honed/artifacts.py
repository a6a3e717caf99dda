"""The artifact store: where reports, candidate artifacts and Triton model repositories live.

One URI names it; the same class works in the operator, in optimizer Jobs and on a laptop:

- ``file:///abs/dir`` (or a bare absolute path): a local directory (tests, single machine);
- ``pvc://CLAIM/prefix``: a PersistentVolumeClaim mounted at ``<mount root>/CLAIM`` in every pod
  honed creates (and in the operator), so it is a local directory there too;
- ``s3://bucket/prefix``, ``gs://...``, ``memory://...``: any fsspec filesystem; credentials come
  from the environment (the Secret named by ``HONED_ARTIFACT_SECRET``).

Keys are ``/``-separated paths below the store's root, and stay there: a key or URI with a
``..`` segment is refused, and so is a local path that a symlink leads out of the root (a
report or an artifact tree is written by an optimizer Job, so the operator treats it as input).
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from honed.errors import EnvironmentProblem, InputError

DEFAULT_PVC_MOUNT_ROOT = "/mnt/honed"

# fsspec protocol -> the package that implements it, for the message when it is missing.
_FSSPEC_PACKAGES = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
}


_CLAIM = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


def relative_key(key: str, what: str) -> str:
    """``key`` itself when it is a path below a root; InputError naming ``what`` otherwise.

    Refused: a ``..`` segment, a NUL, and an absolute path (which ``Path`` joins would take instead
    of the root).
    """
    if "\x00" in key or ".." in key.split("/"):
        raise InputError(f"{what} {key!r} leaves its root ('..')", hint="name a path below the store or claim")
    if key.startswith("/"):
        raise InputError(f"{what} {key!r} is absolute", hint="name a path relative to the report's directory")
    return key


def _clean_key(key: str) -> str:
    return relative_key(key.strip("/"), "the artifact key")


@dataclass(frozen=True)
class PvcLocation:
    """A pvc:// URI split: the claim's name and the path inside it (no leading or trailing '/')."""

    claim: str
    subpath: str


def parse_pvc(uri: str) -> PvcLocation:
    """``pvc://CLAIM/some/path`` -> claim and path inside it."""
    parsed = urlparse(uri)
    hint = "write it as pvc://CLAIM/path/inside/the/claim"
    if parsed.scheme != "pvc" or not parsed.netloc:
        raise InputError(f"{uri!r} is not a pvc:// URI", hint=hint)
    if not _CLAIM.fullmatch(parsed.netloc):
        raise InputError(f"{uri!r} names no PersistentVolumeClaim ({parsed.netloc!r})", hint=hint)
    if ".." in parsed.path.split("/"):
        raise InputError(f"{uri!r} leaves its claim ('..')", hint=hint)
    return PvcLocation(claim=parsed.netloc, subpath=parsed.path.strip("/"))


def join_uri(base: str, *parts: str) -> str:
    """Append key parts to a store URI (``s3://b/p`` + ``a/b`` -> ``s3://b/p/a/b``)."""
    cleaned = [_clean_key(part) for part in parts if part and part.strip("/")]
    return "/".join([base.rstrip("/"), *cleaned]) if cleaned else base.rstrip("/")


class ArtifactStore:
    """Read and write keys below one URI, locally or through fsspec.

    ``uri`` is a store URI as the module docstring lists (a bare absolute path means file://);
    pvc:// claims are read at ``pvc_mount_root``/CLAIM, and ``storage_options`` go to fsspec.
    Raises InputError for an empty URI, a file:// URI naming a host or a malformed pvc:// URI; a
    missing fsspec implementation is reported (EnvironmentProblem) on first remote access.
    """

    def __init__(
        self,
        uri: str,
        *,
        pvc_mount_root: str = DEFAULT_PVC_MOUNT_ROOT,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        if not uri:
            raise InputError("the artifact store URI is empty", hint="set HONED_ARTIFACT_STORE or --out")
        if uri.startswith("/"):
            uri = f"file://{uri}"
        self.uri = uri.rstrip("/") if not uri.endswith(":///") else uri
        self.pvc_mount_root = pvc_mount_root
        self._storage_options = storage_options or {}
        self._root = self._local_root()
        self._fs: Any = None
        self._fs_root = ""

    def _local_root(self) -> Path | None:
        parsed = urlparse(self.uri)
        if parsed.scheme == "file":
            if parsed.netloc not in ("", "localhost"):
                raise InputError(f"{self.uri!r} names a host", hint="write local paths as file:///abs/path")
            return Path(parsed.path or "/")
        if parsed.scheme == "pvc":
            pvc = parse_pvc(self.uri)
            return Path(self.pvc_mount_root) / pvc.claim / pvc.subpath
        return None

    def _filesystem(self) -> tuple[Any, str]:
        if self._fs is None:
            import fsspec  # imported here: local stores need no fsspec at all

            protocol = urlparse(self.uri).scheme
            try:
                self._fs, self._fs_root = fsspec.core.url_to_fs(self.uri, **self._storage_options)
            except (ImportError, ValueError) as exc:
                package = _FSSPEC_PACKAGES.get(protocol, f"the fsspec implementation of {protocol}://")
                raise EnvironmentProblem(
                    f"cannot open artifact store {self.uri}: {exc}".splitlines()[0],
                    hint=f"install {package} in this image, or use a file:// or pvc:// store",
                ) from None
        return self._fs, self._fs_root

    # --- addressing -------------------------------------------------------------------------

    @property
    def is_local(self) -> bool:
        """True for file:// and pvc:// stores, whose keys are paths on this machine."""
        return self._root is not None

    def url(self, key: str = "") -> str:
        """The URI of ``key`` below the store; the store's own URI for ``""``."""
        return join_uri(self.uri, key)

    def child(self, key: str) -> ArtifactStore:
        """A store rooted at ``key``, with the same mount root and fsspec options."""
        return ArtifactStore(self.url(key), pvc_mount_root=self.pvc_mount_root, storage_options=self._storage_options)

    def local_path(self, key: str = "") -> Path | None:
        """The local path of ``key`` for file:// and mounted pvc:// stores, else None."""
        if self._root is None:
            return None
        key = _clean_key(key)
        if not key:
            return self._root
        path = self._root / key
        self._inside(path, key)
        return path

    def _inside(self, path: Path, key: str) -> None:
        """A symlink in the store must not lead a key out of the root (to read or overwrite)."""
        assert self._root is not None
        root = os.path.realpath(self._root)
        if os.path.commonpath([root, os.path.realpath(path)]) != root:
            raise InputError(
                f"{self.url(key)} leads out of the store through a symlink",
                hint="store keys are plain files and directories below the store's root",
            )

    def _check_tree(self, path: Path, key: str) -> None:
        """Every symlink below ``path`` stays in the store (copying follows them)."""
        for directory, dirs, files in os.walk(path):
            for name in dirs + files:
                entry = Path(directory) / name
                if entry.is_symlink():
                    self._inside(entry, f"{key}/{entry.relative_to(path).as_posix()}")

    def _remote(self, key: str) -> str:
        _, root = self._filesystem()
        key = _clean_key(key)
        return posixpath.join(root, key) if key else root

    # --- reading and writing ----------------------------------------------------------------

    def exists(self, key: str) -> bool:
        """Whether ``key`` is there, as a file or a directory."""
        local = self.local_path(key)
        if local is not None:
            return local.exists()
        fs, _ = self._filesystem()
        return bool(fs.exists(self._remote(key)))

    def listdir(self, key: str) -> list[str]:
        """Names directly below ``key`` (sorted); empty when ``key`` does not exist."""
        local = self.local_path(key)
        if local is not None:
            return sorted(p.name for p in local.iterdir()) if local.is_dir() else []
        fs, _ = self._filesystem()
        remote = self._remote(key)
        if not fs.exists(remote):
            return []
        return sorted(posixpath.basename(str(p).rstrip("/")) for p in fs.ls(remote, detail=False))

    def read_bytes(self, key: str) -> bytes:
        """The file at ``key``; InputError naming its URI when there is none."""
        local = self.local_path(key)
        try:
            if local is not None:
                return local.read_bytes()
            fs, _ = self._filesystem()
            data: bytes = fs.cat_file(self._remote(key))
            return data
        except FileNotFoundError:
            raise InputError(f"nothing at {self.url(key)}", hint="check the artifact store URI and key") from None

    def read_text(self, key: str) -> str:
        """The file at ``key`` decoded as UTF-8; InputError when there is none."""
        return self.read_bytes(key).decode()

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write ``data`` to ``key``, replacing it; parent directories are created as needed."""
        local = self.local_path(key)
        if local is not None:
            local.parent.mkdir(parents=True, exist_ok=True)
            tmp = local.with_name(local.name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(local)  # readers never see half a file
            return
        fs, _ = self._filesystem()
        fs.pipe_file(self._remote(key), data)

    def write_text(self, key: str, text: str) -> None:
        """Write ``text`` UTF-8 encoded to ``key``, replacing it."""
        self.write_bytes(key, text.encode())

    def upload(self, source: Path, key: str) -> None:
        """Copy a local file or directory tree to ``key``."""
        local = self.local_path(key)
        if local is not None:
            if source.is_dir():
                shutil.copytree(source, local, dirs_exist_ok=True)
            else:
                local.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, local)
            return
        fs, _ = self._filesystem()
        if source.is_dir():
            for path in sorted(p for p in source.rglob("*") if p.is_file()):
                fs.put_file(str(path), self._remote(posixpath.join(key, path.relative_to(source).as_posix())))
        else:
            fs.put_file(str(source), self._remote(key))

    def download(self, key: str, target: Path) -> Path:
        """Copy ``key`` (a file or a directory tree) to the local ``target``; returns ``target``."""
        local = self.local_path(key)
        if local is not None:
            if not local.exists():
                raise InputError(f"nothing at {self.url(key)}", hint="check the artifact store URI and key")
            if local.is_dir():
                self._check_tree(local, key)
                shutil.copytree(local, target, dirs_exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(local, target)
            return target
        fs, _ = self._filesystem()
        remote = self._remote(key)
        if not fs.exists(remote):
            raise InputError(f"nothing at {self.url(key)}", hint="check the artifact store URI and key")
        if fs.isdir(remote):
            for path in fs.find(remote):
                relative = posixpath.relpath(path, remote)
                destination = target / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(path, str(destination))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(remote, str(target))
        return target

    def delete(self, key: str) -> None:
        """Remove ``key`` (file or tree); missing keys are fine."""
        local = self.local_path(key)
        if local is not None:
            if local.is_dir():
                shutil.rmtree(local)
            elif local.exists():
                local.unlink()
            return
        fs, _ = self._filesystem()
        remote = self._remote(key)
        if fs.exists(remote):
            fs.rm(remote, recursive=True)


def open_store(uri: str, *, pvc_mount_root: str = DEFAULT_PVC_MOUNT_ROOT) -> ArtifactStore:
    """The store at ``uri``, with fsspec's credentials from the environment (no storage options)."""
    return ArtifactStore(uri, pvc_mount_root=pvc_mount_root)
