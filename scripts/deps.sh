#!/usr/bin/env bash
# Installs the system packages llmq builds and tests with, if any is missing (Debian/Ubuntu).
set -euo pipefail
# docker-compose: the compose tests resolve docker-compose.yml with it (no Docker engine is needed).
# binutils: objdump and nm, for scripts/check-binary.sh (docs/MISCOMPILE.md).
# prometheus: for promtool, which checks the /metrics output, the alert rules and the dashboard's
# queries (the Prometheus server it also brings is stopped and disabled below).
packages=(redis-server redis-tools libhiredis-dev libcurl4-openssl-dev pkg-config curl python3-venv docker-compose prometheus binutils)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps.sh: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Only promtool is wanted: do not leave a Prometheus server running on a developer's machine.
if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
