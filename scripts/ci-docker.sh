#!/usr/bin/env bash
# A private Docker engine for the container tests (make test-compose), on a machine that
# cannot pull images and must never get a bridge network:
#
#   scripts/ci-docker.sh install      Debian's docker.io and debootstrap (root, apt-get)
#   scripts/ci-docker.sh start        start dockerd with its own data root, exec root, pid file
#                                     and socket, --bridge=none --iptables=false; wait until it
#                                     answers; print `export DOCKER_HOST=...`
#   scripts/ci-docker.sh base-image   build the local base image (debootstrap bookworm minbase
#                                     with python3 + python3-venv, `docker import`) unless the
#                                     engine already has it
#   scripts/ci-docker.sh stop         stop that dockerd by its PID (and wait for it)
#   scripts/ci-docker.sh env          print the export lines (DOCKER_HOST, BASE_IMAGE)
#
# Everything lives below STDDAQ_DOCKER_DIR (default /tmp/stddaq-docker; kept short because
# the engine's unix sockets live there). Nothing here touches a system-wide Docker:
# no systemd unit, no /var/lib/docker, no /etc/docker/daemon.json, no iptables rules.
set -euo pipefail

DIR="${STDDAQ_DOCKER_DIR:-/tmp/stddaq-docker}"
SOCK="$DIR/docker.sock"
PIDFILE="$DIR/dockerd.pid"
LOG="$DIR/dockerd.log"
BASE_IMAGE="${STDDAQ_BASE_IMAGE:-stddaq-base:bookworm}"
SUITE="${STDDAQ_BASE_SUITE:-bookworm}"
MIRROR="${STDDAQ_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

say() { echo "ci-docker: $*" >&2; }

docker_cli() { DOCKER_HOST="unix://$SOCK" docker "$@"; }

running_pid() {
    # The PID in our pid file, if that process is alive and is a dockerd.
    [ -f "$PIDFILE" ] || return 1
    local pid
    pid="$(cat "$PIDFILE")"
    [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
    grep -q dockerd "/proc/$pid/comm" 2>/dev/null || return 1
    echo "$pid"
}

cmd_install() {
    local need=()
    command -v dockerd >/dev/null || need+=(docker.io)
    command -v docker >/dev/null || need+=(docker.io)
    command -v debootstrap >/dev/null || need+=(debootstrap)
    if [ ${#need[@]} -eq 0 ]; then
        say "docker.io and debootstrap are installed"
        return 0
    fi
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        say "not root or no apt-get: cannot install ${need[*]}"
        return 1
    fi
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Keep the package from starting the system-wide daemon: we start our own.
    local policy=/usr/sbin/policy-rc.d created=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created=1
    fi
    local status=0
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; } || status=$?
    if [ "$created" = 1 ]; then rm -f "$policy"; fi
    return "$status"
}

cmd_start() {
    if pid="$(running_pid)"; then
        say "dockerd already runs (pid $pid, $SOCK)"
        echo "export DOCKER_HOST=unix://$SOCK"
        return 0
    fi
    command -v dockerd >/dev/null || { say "no dockerd: run '$0 install' first"; return 1; }
    mkdir -p "$DIR/data" "$DIR/exec"
    # An empty config file, so that a machine-wide /etc/docker/daemon.json never applies.
    echo '{}' > "$DIR/daemon.json"
    rm -f "$SOCK"
    say "starting dockerd (data root $DIR/data, socket $SOCK, log $LOG)"
    # setsid: the engine gets its own session, so a Ctrl-C in the caller's terminal does
    # not reach it; it is stopped only by `$0 stop` (by its PID).
    setsid dockerd \
        --config-file "$DIR/daemon.json" \
        --data-root "$DIR/data" \
        --exec-root "$DIR/exec" \
        --pidfile "$PIDFILE" \
        -H "unix://$SOCK" \
        --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
        --userland-proxy=false \
        > "$LOG" 2>&1 < /dev/null &
    local started=$!
    for _ in $(seq 1 300); do
        if docker_cli version --format '{{.Server.Version}}' >/dev/null 2>&1; then
            say "dockerd $(docker_cli version --format '{{.Server.Version}}') ready (pid $started)"
            echo "export DOCKER_HOST=unix://$SOCK"
            return 0
        fi
        if ! kill -0 "$started" 2>/dev/null; then
            say "dockerd exited while starting; its log:"
            tail -n 30 "$LOG" >&2
            return 1
        fi
        sleep 0.1
    done
    say "dockerd did not answer within 30 s; its log:"
    tail -n 30 "$LOG" >&2
    return 1
}

unmount_leftovers() {
    # dockerd leaves the bind mount of its network namespace (exec-root/netns/default)
    # and, if it was killed, more: unmount whatever is still mounted below our folder.
    local target
    awk -v dir="$DIR/" 'index($2, dir) == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r target; do
            umount "$target" 2>/dev/null || umount -l "$target" 2>/dev/null || say "cannot unmount $target"
        done
}

cmd_stop() {
    local pid
    if ! pid="$(running_pid)"; then
        say "no dockerd of ours runs ($PIDFILE)"
        unmount_leftovers
        return 0
    fi
    say "stopping dockerd (pid $pid)"
    kill -TERM "$pid"
    # dockerd stops its containers (10 s each at most) and its containerd before exiting.
    for _ in $(seq 1 600); do
        if [ ! -d "/proc/$pid" ]; then
            unmount_leftovers
            say "dockerd stopped"
            return 0
        fi
        sleep 0.1
    done
    say "dockerd (pid $pid) still runs after 60 s: sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 1
    unmount_leftovers
}

cmd_base_image() {
    if docker_cli image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        say "base image $BASE_IMAGE exists"
        return 0
    fi
    command -v debootstrap >/dev/null || { say "no debootstrap: run '$0 install' first"; return 1; }
    local root="$DIR/rootfs-$SUITE"
    rm -rf "$root"
    say "debootstrap $SUITE (minbase + python3, python3-venv) into $root"
    local started=$SECONDS
    debootstrap --variant=minbase --include=python3,python3-venv "$SUITE" "$root" "$MIRROR" \
        > "$DIR/debootstrap.log" 2>&1 || { tail -n 30 "$DIR/debootstrap.log" >&2; return 1; }
    # Smaller image: no apt lists, caches or docs (the images never run apt).
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* \
        "$root"/usr/share/man/* "$root"/usr/share/locale/*
    tar -C "$root" -c . | docker_cli import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
    rm -rf "$root"
    say "base image $BASE_IMAGE built in $((SECONDS - started)) s"
}

cmd_env() {
    echo "export DOCKER_HOST=unix://$SOCK"
    echo "export BASE_IMAGE=$BASE_IMAGE"
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    base-image) cmd_base_image ;;
    env) cmd_env ;;
    *) sed -n '2,16p' "$0" >&2; exit 2 ;;
esac
