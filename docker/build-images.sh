#!/usr/bin/env bash
# Builds the stddaq images (`make images`): one per service, tagged with the project
# version, e.g. stddaq/writer:0.1.0.
#
#   docker/build-images.sh [IMAGE...]        (default: every image of docker/services.tsv)
#
# Environment:
#   BASE_IMAGE      base of every image (default python:3.11-slim-bookworm; machines that
#                   cannot pull pass a local one, see scripts/ci-docker.sh base-image)
#   IMAGE_PREFIX    repository prefix of the tags (default stddaq/)
#   VERSION         tag (default: the version in pyproject.toml)
#   BUILD_OPTS      extra `docker build` options, e.g. --no-cache for a cold build
#   PIP_CERT        the CA bundle pip in the build stage trusts (default: this machine's
#                   /etc/ssl/certs/ca-certificates.crt, if it exists)
#   UV, DOCKER      the uv and docker commands
#
# The build context is staged in build/docker-context/: the service's pinned third-party
# requirements (`uv export` from uv.lock, with hashes), the wheels of stddaq-common and the
# services (`uv build`), the healthcheck and the image check. pip in the build stage
# reaches PyPI through the host network (`--network host`: no bridge on our machines).
set -euo pipefail
cd "$(dirname "$0")/.."

UV="${UV:-uv}"
# shellcheck source=engine.sh source-path=SCRIPTDIR
source docker/engine.sh
BASE_IMAGE="${BASE_IMAGE:-python:3.11-slim-bookworm}"
IMAGE_PREFIX="${IMAGE_PREFIX:-stddaq/}"
VERSION="${VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n 1)}"
CTX=build/docker-context

say() { echo "images: $*" >&2; }

# image -> wheel / script / user, from docker/services.tsv
declare -A WHEEL SCRIPT RUN_AS
ALL=()
while read -r image wheel script user; do
    [[ -z "$image" || "$image" == \#* ]] && continue
    WHEEL[$image]=$wheel SCRIPT[$image]=$script RUN_AS[$image]=$user
    ALL+=("$image")
done < docker/services.tsv
IMAGES=("${@:-${ALL[@]}}")
for image in "${IMAGES[@]}"; do
    [[ -n "${WHEEL[$image]:-}" ]] || { say "unknown image '$image' (known: ${ALL[*]})"; exit 2; }
done

stage_context() {
    rm -rf "$CTX"
    mkdir -p "$CTX/requirements"
    # Our wheels: the shared library and every service (hatchling builds them reproducibly,
    # so an unchanged package gives an identical wheel and a cached layer).
    "$UV" build --quiet --wheel --all-packages --out-dir "$CTX/all-wheels"
    for image in "${ALL[@]}"; do
        local wheel="${WHEEL[$image]}"
        mkdir -p "$CTX/wheels/$wheel"
        cp "$CTX"/all-wheels/stddaq_common-*.whl "$CTX/all-wheels/$wheel"-*.whl "$CTX/wheels/$wheel/"
        # bitshuffle's wheel declares h5py, Cython and setuptools as dependencies, but
        # `import bitshuffle` (all stddaq_common uses) needs none of them: only the writer
        # and the driver (it builds the master file), which write HDF5 files, get h5py.
        local skip=(--no-emit-package cython --no-emit-package setuptools)
        [[ "$wheel" == stddaq_writer || "$wheel" == stddaq_driver ]] || skip+=(--no-emit-package h5py)
        "$UV" export --quiet --frozen --package "${wheel//_/-}" --no-dev --no-default-groups \
            --no-emit-workspace --no-header --format requirements-txt "${skip[@]}" \
            --output-file "$CTX/requirements/$wheel.txt"
    done
    # pip in the build stage trusts what this machine trusts (PIP_CERT, else the system CA
    # bundle), so a TLS-intercepting proxy before PyPI works too. Public certificates
    # only; just the build stage sees them.
    local ca="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"
    if [[ -f "$ca" ]]; then
        install -m 0644 "$ca" "$CTX/build-ca.pem"
    else
        : > "$CTX/build-ca.pem"
    fi
    install -m 0755 docker/stddaq_health.py "$CTX/stddaq-health"
    install -m 0755 docker/stddaq_keeper.py "$CTX/stddaq-keeper"
    install -m 0755 docker/stddaq_image_check.py "$CTX/stddaq-image-check"
    rm -rf "$CTX/all-wheels"
}

build_one() {
    local image="$1" tag="${IMAGE_PREFIX}$1:${VERSION}" started=$SECONDS
    local log="build/docker-build-$image.log"
    # BUILD_OPTS is split on purpose (several options).
    # shellcheck disable=SC2086
    if ! "$DOCKER" build --network host \
        --file docker/Dockerfile \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        --build-arg "SERVICE=${WHEEL[$image]}" \
        --build-arg "SCRIPT=${SCRIPT[$image]}" \
        --build-arg "RUN_AS=${RUN_AS[$image]}" \
        --build-arg "VERSION=$VERSION" \
        --tag "$tag" ${BUILD_OPTS:-} "$CTX" > "$log" 2>&1; then
        say "building $tag failed; the end of $log:"
        tail -n 40 "$log" >&2
        exit 1
    fi
    local size
    size="$("$DOCKER" image inspect --format '{{.Size}}' "$tag")"
    say "$(awk -v t="$tag" -v s="$size" -v d=$((SECONDS - started)) \
        'BEGIN { printf "%-28s %7.1f MB %5d s", t, s / 1e6, d }')"
}

engine_answers images
started=$SECONDS
say "base $BASE_IMAGE, version $VERSION: ${IMAGES[*]}"
stage_context
for image in "${IMAGES[@]}"; do build_one "$image"; done
say "built ${#IMAGES[@]} images in $((SECONDS - started)) s"
