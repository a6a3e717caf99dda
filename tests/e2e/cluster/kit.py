"""The local Kubernetes kit (``../shared/k8s``) and its binaries, found the way `make e2e` and the
envtest fixtures find them; nothing here builds anything, it only starts what it is given."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def kit_dir() -> Path | None:
    """``$HONED_K8S_KIT``, else ``../shared/k8s`` beside the repository, else ``/work/shared/k8s``."""
    candidates = [os.environ.get("HONED_K8S_KIT"), str(REPO.parent / "shared" / "k8s"), "/work/shared/k8s"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "cluster" / "up.sh").is_file():
            return Path(candidate)
    return None


def bin_dir() -> Path:
    """Where the kit looks for the Kubernetes binaries (its own order: HONED_K8S_BIN, KUBEBUILDER_ASSETS)."""
    return Path(os.environ.get("HONED_K8S_BIN") or os.environ.get("KUBEBUILDER_ASSETS") or "/opt/k8s/bin")


CLUSTER_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kubectl")


def missing(binaries: tuple[str, ...] = CLUSTER_BINARIES) -> str | None:
    """Why the kit cannot run here, or None when it can."""
    kit = kit_dir()
    if kit is None:
        return "the k8s kit is not there: set HONED_K8S_KIT to its directory (../shared/k8s)"
    absent = [name for name in binaries if not os.access(bin_dir() / name, os.X_OK)]
    if absent:
        return (
            f"Kubernetes binaries missing in {bin_dir()}: {', '.join(absent)} "
            "(set HONED_K8S_BIN or KUBEBUILDER_ASSETS to a directory that has them)"
        )
    if os.geteuid() != 0:
        return "the kit's cluster mode needs root (network namespaces, mounts, cgroups)"
    return None


def helm() -> str:
    """helm from `make tools` (.tools/bin), else PATH."""
    local = REPO / ".tools" / "bin" / "helm"
    found = str(local) if local.is_file() else shutil.which("helm")
    if not found:
        raise SystemExit("helm not found: run `make tools`")
    return found
