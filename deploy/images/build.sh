#!/usr/bin/env bash
# Builds, offline, the images Berth's tests and first-time users need. Nothing is pulled:
# each image is a root filesystem assembled here and loaded with `docker import`.
#
#   berth/workload:latest  Debian's static busybox (/bin/busybox + one symlink per applet),
#                          a minimal /etc, and small helpers under /usr/local/bin:
#                            berth-memhog   grows its memory until the kernel kills it
#                                           (`tail /dev/zero` keeps every byte: no newline)
#                            berth-ignore-term  ignores SIGTERM and sleeps forever
#                            berth-cpu-server [PORT]  HTTP on PORT (default 8080): each GET
#                                           of /cgi-bin/burn?MS spends MS ms of its own CPU
#                                           time (default 80, whatever the machine's speed)
#                                           and answers "burned MS ms"; the autoscaling
#                                           demo's workload
#                          Default command: /bin/sh.
#
# Usage: deploy/images/build.sh [--force]
#   Idempotent: an image that exists and was built from this very script is kept; one
#   built by another version of the script (label berth.build differs) is rebuilt.
#   --force rebuilds anyway. Installs Debian's busybox-static with apt-get when missing.
set -euo pipefail

IMAGE=berth/workload:latest
FORCE=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

command -v docker >/dev/null || { echo "build.sh: docker CLI not found" >&2; exit 1; }
docker version --format '{{.Server.Version}}' >/dev/null 2>&1 || {
  echo "build.sh: no Docker engine answers (is dockerd running? DOCKER_HOST=${DOCKER_HOST:-unset})" >&2
  exit 1
}

# The build's identity: this script's own content. Changing the script rebuilds the image.
BUILD_ID=$(sha256sum "$0" | cut -c1-16)

current=$(docker image inspect --format '{{ index .Config.Labels "berth.build" }}' "$IMAGE" 2>/dev/null || true)
if [[ $FORCE == 0 && "$current" == "$BUILD_ID" ]]; then
  echo "build.sh: $IMAGE is up to date (build $BUILD_ID)"
  exit 0
fi

# busybox-static, not busybox: the binary must run in an image with no libc.
# BUSYBOX=/path/to/static/busybox overrides (for machines without dpkg/apt).
if [[ -z "${BUSYBOX:-}" ]]; then
  command -v dpkg-query >/dev/null || {
    echo "build.sh: no dpkg here; set BUSYBOX=/path/to/a/static/busybox" >&2; exit 1; }
  if ! dpkg-query -W -f '${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed'; then
    echo "build.sh: installing busybox-static" >&2
    SUDO=""
    [[ $(id -u) == 0 ]] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -qq busybox-static >/dev/null 2>&1 \
      || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq busybox-static; }
  fi
  BUSYBOX=$(dpkg-query -L busybox-static | grep -E '/busybox$' | head -n1)
fi
[[ -x "$BUSYBOX" ]] || { echo "build.sh: no busybox binary at '$BUSYBOX'" >&2; exit 1; }
if command -v file >/dev/null && file -L "$BUSYBOX" | grep -q dynamically; then
  echo "build.sh: $BUSYBOX is dynamically linked; it would not run in an empty image" >&2
  exit 1
fi

ROOT=$(mktemp -d)
trap 'rm -rf "$ROOT"' EXIT

mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,etc,tmp,root,proc,sys,dev,var/run,var/tmp,home}
chmod 1777 "$ROOT/tmp" "$ROOT/var/tmp"
cp "$BUSYBOX" "$ROOT/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [[ "$applet" == busybox ]] && continue
  ln -s busybox "$ROOT/bin/$applet"
done

cat >"$ROOT/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat >"$ROOT/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP
echo "hosts: files dns" >"$ROOT/etc/nsswitch.conf"

cat >"$ROOT/usr/local/bin/berth-memhog" <<'HOG'
#!/bin/sh
# Grows memory without bound: tail keeps everything since the last newline, and
# /dev/zero has none. Under a memory limit the kernel's OOM killer ends it.
exec tail /dev/zero
HOG
cat >"$ROOT/usr/local/bin/berth-ignore-term" <<'IGN'
#!/bin/sh
# Ignores SIGTERM (only SIGKILL ends it), to test the stop timeout.
trap '' TERM
echo ready
while :; do sleep 1; done
IGN
cat >"$ROOT/usr/local/bin/berth-cpu-server" <<'SRV'
#!/bin/sh
# A web server whose every request costs CPU: load on it is load on the task's CPU.
exec httpd -f -p "${1:-8080}" -h /srv/cpu
SRV
mkdir -p "$ROOT/srv/cpu/cgi-bin"
cat >"$ROOT/srv/cpu/cgi-bin/burn" <<'BURN'
#!/bin/sh
# Spends MS milliseconds of CPU (default 80) by this process's own clock, so that a request
# costs the same on a fast machine as on a slow one, then answers.
ms=${QUERY_STRING:-80}
case "$ms" in ''|*[!0-9]*) ms=80 ;; esac
[ "$ms" -le 10000 ] || ms=10000
# utime + stime of this shell, in the kernel's 10 ms ticks; read without forking.
used() { read -r stat </proc/$$/stat; set -- $stat; t=$((${14} + ${15})); }
used
end=$((t + (ms + 9) / 10))
while [ "$t" -lt "$end" ]; do
  i=0
  while [ "$i" -lt 500 ]; do i=$((i + 1)); done
  used
done
printf 'Content-Type: text/plain\r\n\r\nburned %s ms\n' "$ms"
BURN
chmod 755 "$ROOT"/usr/local/bin/* "$ROOT/srv/cpu/cgi-bin/burn"

# Reproducible tar: fixed owner and mtime, sorted names.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='2024-01-01 00:00:00' \
    -C "$ROOT" -cf - . \
  | docker import \
      --change 'ENV PATH=/usr/local/bin:/bin' \
      --change 'CMD ["/bin/sh"]' \
      --change "LABEL berth.build=$BUILD_ID" \
      --message "berth workload image (busybox-static), build $BUILD_ID" \
      - "$IMAGE" >/dev/null
echo "build.sh: built $IMAGE (build $BUILD_ID)"
