#!/usr/bin/env bash
# Installs the Debian packages the test suite uses for real peers: influxd (InfluxDB 1.x),
# promtool (Prometheus), h5dump (HDF5 1.10 tools), headless Chromium and its driver (the web
# page's browser tests). Only as root with apt-get; otherwise
# it says what is missing and the tests that need it skip with that reason.
set -euo pipefail
need=()
command -v influxd >/dev/null || need+=(influxdb)
command -v promtool >/dev/null || need+=(prometheus)
command -v h5dump >/dev/null || need+=(hdf5-tools)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "system-deps: not root or no apt-get; missing ${need[*]} (tests that need them skip)"
    exit 0
fi
echo "system-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
# Keep the packages from starting their daemons: the tests start their own, on loopback.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created_policy=1
fi
trap 'if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
