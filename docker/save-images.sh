#!/usr/bin/env bash
# Writes the image archives the Ansible role copies to DAQ servers without a registry
# (`make image-archives`): build/images/<image>-<version>.tar (docker save) and .id (the
# image ID, which the role compares with the servers' images). An archive whose .id
# already matches the image is kept. It never builds: the images are the ones `make images`
# built on whatever base it was given.
#
#   docker/save-images.sh [OUT_DIR]      (default build/images)
#
# Environment: IMAGE_PREFIX (default stddaq/), VERSION (default: pyproject.toml), DOCKER.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=engine.sh source-path=SCRIPTDIR
source docker/engine.sh
IMAGE_PREFIX="${IMAGE_PREFIX:-stddaq/}"
VERSION="${VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n 1)}"
OUT="${1:-build/images}"

engine_answers image-archives
mkdir -p "$OUT"

while read -r image _; do
    [[ -z "$image" || "$image" == \#* ]] && continue
    tag="${IMAGE_PREFIX}${image}:${VERSION}"
    if ! id="$("$DOCKER" image inspect --format '{{.Id}}' "$tag" 2>/dev/null)"; then
        echo "image-archives: the engine at ${DOCKER_HOST:-unix:///var/run/docker.sock} has no image $tag: build the images first (make images [BASE_IMAGE=...])" >&2
        exit 1
    fi
    base="$OUT/$image-$VERSION"
    if [[ -f "$base.tar" && -f "$base.id" && "$(cat "$base.id")" == "$id" ]]; then
        echo "image-archives: $base.tar is current" >&2
        continue
    fi
    "$DOCKER" save --output "$base.tar.part" "$tag"
    mv "$base.tar.part" "$base.tar"
    echo "$id" > "$base.id"
    echo "image-archives: $base.tar ($(du -h "$base.tar" | cut -f1))" >&2
done < docker/services.tsv
