#!/usr/bin/env bash
# Build honed's CPU images with the k8s kit's build script (buildah, no Docker engine) and import
# them into the kit's running node, if any ($HONED_K8S_RUN_DIR, else the cluster brought up last).
# Each build is skipped when its context, Dockerfile and arguments are unchanged (the kit keys
# images on a hash of what they copy), so a rerun costs seconds.
#
# Usage: tools/build_images.sh [IMAGE...]     (default: operator optimizer-cpu triton-cpu)
#   HONED_K8S_KIT      the kit (default ../shared/k8s beside the repository, then /work/shared/k8s)
#   HONED_IMAGE_PREFIX registry/prefix of the tags (default ghcr.io/honed-dev/honed-)
#   TORCH_WHEEL_DIR    a directory with the CPU torch wheel, for builds that cannot reach PyTorch's
#                      index (default: pip's find-links setting when it holds that wheel)
# optimizer-gpu and triton need NVIDIA's registries (CUDA and NGC base images): build those with
# Docker where those registries are reachable.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
KIT=${HONED_K8S_KIT:-}
for candidate in "$KIT" "$ROOT/../shared/k8s" /work/shared/k8s; do
  [ -n "$candidate" ] && [ -x "$candidate/images/build.sh" ] && KIT=$candidate && break
done
[ -x "$KIT/images/build.sh" ] || { echo "the k8s kit is not found: set HONED_K8S_KIT" >&2; exit 2; }
VERSION=$(python3 -c 'import tomllib;print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')
PREFIX=${HONED_IMAGE_PREFIX:-ghcr.io/honed-dev/honed-}
TORCH=$(python3 -c 'import tomllib,re;d=tomllib.load(open("pyproject.toml","rb"));print(next(r.split("==")[1] for r in d["project"]["optional-dependencies"]["torch"] if r.startswith("torch==")))')

torch_args() {
  local dir=${TORCH_WHEEL_DIR:-}
  if [ -z "$dir" ]; then
    for d in $(python3 -m pip config get global.find-links 2>/dev/null || true); do
      compgen -G "$d/torch-$TORCH+cpu-*.whl" >/dev/null && dir=$d && break
    done
  fi
  if [ -n "$dir" ] && compgen -G "$dir/torch-$TORCH+cpu-*.whl" >/dev/null; then
    echo "optimizer-cpu: torch $TORCH+cpu from $dir (PyTorch's index is not used)" >&2
    printf '%s\n' --build-arg TORCH_INDEX= --build-arg "PIP_FIND_LINKS=$dir" --volume "$dir:$dir:ro"
  fi
}

# The kit keys its cache on every file of the context, but an image copies only what its
# Dockerfile.dockerignore lets through ("*", then "!path" lines). Each build gets a context of just
# those paths, so test runs writing out/, docs edits or a second `make e2e-*` reuse the image.
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/honed-images-XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
stage_context() {
  local ignore=$1 dir=$2 path
  mkdir -p "$dir"
  while IFS= read -r path; do
    path=${path#!}; path=${path%/}
    [ -e "$path" ] || continue
    mkdir -p "$dir/$(dirname "$path")"
    cp -a "$path" "$dir/$path"
  done < <(grep -E '^!' "$ignore")
  find "$dir" \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +
}

"$KIT/images/base.sh" >/dev/null
images=("$@"); [ ${#images[@]} -gt 0 ] || images=(operator optimizer-cpu triton-cpu)
for image in "${images[@]}"; do
  [ -f "images/$image/Dockerfile" ] || { echo "no images/$image/Dockerfile" >&2; exit 2; }
  extra=()
  [ "$image" = optimizer-cpu ] && mapfile -t extra < <(torch_args)
  t0=$(date +%s)
  context="$STAGE/$image"
  stage_context "images/$image/Dockerfile.dockerignore" "$context"
  "$KIT/images/build.sh" "$context" "$PREFIX$image:$VERSION" -f "images/$image/Dockerfile" "${extra[@]}" >/dev/null
  echo "$PREFIX$image:$VERSION ready in $(( $(date +%s) - t0 ))s" >&2
done
