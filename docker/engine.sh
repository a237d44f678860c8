# shellcheck shell=bash
# Sourced by docker/build-images.sh and docker/save-images.sh: the Docker engine they use.
#   DOCKER          the docker command (default docker)

DOCKER="${DOCKER:-docker}"

# engine_answers WHAT: exit 1 unless the engine answers; the error names where we looked.
engine_answers() {
    local where="${DOCKER_HOST:-unix:///var/run/docker.sock (DOCKER_HOST is not set)}"
    local answer
    if ! answer="$("$DOCKER" version --format '{{.Server.Version}}' 2>&1)"; then
        echo "$1: no Docker engine answers at $where: ${answer##*$'\n'}" >&2
        echo "$1: start one, or point DOCKER_HOST at its socket (a private engine: scripts/ci-docker.sh start)" >&2
        exit 1
    fi
}
