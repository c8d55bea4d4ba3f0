#!/usr/bin/env bash
# Re-pin the Dockerfile's base images (ARG BASE_IMAGE / TRAIN_IMAGE) to the current digest of their
# tag, so a rebuild takes the base's security fixes on purpose, in a reviewable diff.
#
#   scripts/refresh-base-digest.sh                  # asks the registry (skopeo, or docker buildx)
#   DIGEST=sha256:<64 hex> scripts/refresh-base-digest.sh   # pin a digest you looked up yourself
# The digest is the multi-arch index's, so one pin serves amd64 and arm64 builds.
set -euo pipefail
cd "$(dirname "$0")/.."
file=${DOCKERFILE:-Dockerfile}
ref=$(sed -n 's/^ARG BASE_IMAGE=\([^@]*\).*/\1/p' "$file")
[ -n "$ref" ] || { echo "refresh-base-digest: no 'ARG BASE_IMAGE=' line in $file" >&2; exit 2; }
digest=${DIGEST:-}
if [ -z "$digest" ]; then
  if command -v skopeo >/dev/null; then
    # NOTE: the sha256 of the raw manifest (the index for a multi-arch tag) is the pullable digest
    case "$ref" in */*) source="docker://$ref";; *) source="docker://docker.io/library/$ref";; esac
    digest="sha256:$(skopeo inspect --raw "$source" | sha256sum | cut -d' ' -f1)"
  elif command -v docker >/dev/null; then
    digest=$(docker buildx imagetools inspect "$ref" --format '{{.Manifest.Digest}}')
  else
    echo "refresh-base-digest: needs skopeo or docker buildx to ask the registry; or pass DIGEST=sha256:..." >&2
    exit 2
  fi
fi
[[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]] \
  || { echo "refresh-base-digest: '$digest' is not a sha256:<64 hex> digest" >&2; exit 2; }
sed -i -E "s#^ARG (BASE_IMAGE|TRAIN_IMAGE)=${ref//./\\.}(@sha256:[0-9a-f]{64})?\$#ARG \\1=${ref}@${digest}#" "$file"
grep -E '^ARG (BASE|TRAIN)_IMAGE=' "$file"
