"""Model and data given as URIs, results published to a store URI: what optimizer Jobs need.

A laptop run uses plain paths and never touches this beyond ``is_remote``.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import urllib.request
from pathlib import Path
from urllib.error import URLError

from honed.artifacts import DEFAULT_PVC_MOUNT_ROOT, open_store
from honed.errors import InputError

LOCAL_SCHEMES = ("file://",)


def is_remote(uri: str) -> bool:
    """Whether ``uri`` needs fetching (http(s)://, s3://, gs://, pvc://...) rather than being a local path or file://."""
    return "://" in uri and not uri.startswith(LOCAL_SCHEMES)


def local_path(uri: str) -> str:
    """The path of a local ``uri``: ``file://`` stripped, anything else as given."""
    return uri.removeprefix("file://") if uri.startswith("file://") else uri


def _mount_root() -> str:
    return os.environ.get("HONED_PVC_MOUNT_ROOT", DEFAULT_PVC_MOUNT_ROOT)


def fetch(uri: str, directory: Path, what: str) -> Path:
    """Download ``uri`` (http(s)://, s3://, gs://, pvc://...) into ``directory``; errors name ``what``."""
    name = posixpath.basename(uri.rstrip("/")) or what
    target = directory / name
    directory.mkdir(parents=True, exist_ok=True)
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri, timeout=60) as response, target.open("wb") as out:
                shutil.copyfileobj(response, out)
        except (URLError, OSError, ValueError) as exc:
            raise InputError(
                f"{what} {uri} could not be downloaded: {exc}", hint="check the URL is reachable"
            ) from None
        return target
    parent, _, key = uri.rstrip("/").rpartition("/")
    try:
        return open_store(parent, pvc_mount_root=_mount_root()).download(key, target)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            f"{what} {uri} could not be read: {type(exc).__name__}: {exc}",
            hint="check the URI and the store credentials (HONED_ARTIFACT_SECRET)",
        ) from None


def publish(local: Path, uri: str) -> None:
    """Upload the finished run directory (report.json, artifacts, plot) to the store URI."""
    try:
        open_store(uri, pvc_mount_root=_mount_root()).upload(local, "")
    except Exception as exc:
        raise InputError(
            f"results could not be written to {uri}: {type(exc).__name__}: {exc}",
            hint="check the artifact store URI and its credentials",
        ) from None


def write_termination_message(text: str) -> None:
    """Kubernetes shows this file's content as the Job pod's termination message (4 KiB max)."""
    path = os.environ.get("HONED_TERMINATION_LOG")
    if path:
        # Not fatal: the operator reads report.json; the message is a convenience for kubectl.
        with contextlib.suppress(OSError):
            Path(path).write_text(text[:4000])
