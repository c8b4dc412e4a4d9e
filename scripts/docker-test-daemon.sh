#!/usr/bin/env bash
# Starts a private Docker Engine for the worker's Docker runtime tests, on its
# own socket and data directory so the tests never touch the machine's own
# engine, and builds the test image `bellows-test/busybox:latest` from
# Debian's busybox-static (no registry or internet needed). Idempotent: a
# second run finds the engine answering and the image present and returns at
# once. Prints the line to eval:
#   export DOCKER_HOST=unix:///run/bellows-test-docker.sock
#
# Usage: scripts/docker-test-daemon.sh [start]   start (default)
#        scripts/docker-test-daemon.sh stop      stop the engine (by pidfile)
# BELLOWS_DOCKER_LOG_DIR: where dockerd's log goes (default /tmp).
#
# Sandboxes whose capability bounding set lacks some capabilities (a
# privileged container needs all of them) get a runc wrapper as the default
# runtime that removes those capabilities from each container's OCI config,
# so privileged containers start there too. Elsewhere plain runc is used.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

SOCK=/run/bellows-test-docker.sock
HOST="unix://$SOCK"
DATA_ROOT=/var/lib/bellows-test-docker
EXEC_ROOT=/run/bellows-test-docker-exec
PIDFILE=/run/bellows-test-docker.pid
LOG_DIR="${BELLOWS_DOCKER_LOG_DIR:-/tmp}"
LOG="$LOG_DIR/bellows-test-docker.log"
RUNC_WRAPPER="$DATA_ROOT-runc"
IMAGE=bellows-test/busybox:latest
WAIT_SECONDS=60

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# answering: the engine replies on our socket.
answering() {
  [ -S "$SOCK" ] && timeout 10 docker -H "$HOST" info >/dev/null 2>&1
}

stop_daemon() {
  if [ ! -f "$PIDFILE" ]; then
    echo "docker-test-daemon: not running (no $PIDFILE)" >&2
    stop_orphaned_containerd
    return 0
  fi
  local pid
  pid="$(cat "$PIDFILE")"
  if [ -n "$pid" ] && [ -d "/proc/$pid" ]; then
    $SUDO kill "$pid"
    for _ in $(seq 1 30); do
      [ -d "/proc/$pid" ] || break
      sleep 1
    done
    if [ -d "/proc/$pid" ]; then
      echo "docker-test-daemon: dockerd $pid did not stop in 30 s; killing it" >&2
      $SUDO kill -9 "$pid" || true
    fi
  fi
  $SUDO rm -f "$PIDFILE"
  stop_orphaned_containerd
  echo "docker-test-daemon: stopped" >&2
}

# clear_stale_engine: before a start, removes what an engine that is gone
# left behind (its pidfile, which dockerd refuses to start over when the pid
# now belongs to another process, and its socket), and stops an engine of
# ours that is alive but does not answer.
clear_stale_engine() {
  if [ -f "$PIDFILE" ]; then
    local pid
    pid="$(cat "$PIDFILE" 2>/dev/null || true)"
    if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" = dockerd ]; then
      echo "docker-test-daemon: dockerd $pid does not answer on $SOCK; stopping it" >&2
      stop_daemon
    else
      echo "docker-test-daemon: removing stale $PIDFILE (pid ${pid:-none} is not dockerd)" >&2
      $SUDO rm -f "$PIDFILE"
    fi
  fi
  [ ! -S "$SOCK" ] || $SUDO rm -f "$SOCK"
  stop_orphaned_containerd
}

# stop_orphaned_containerd: a dockerd killed with SIGKILL (or one that did
# not take its containerd down) leaves our containerd running, and the next
# dockerd then times out starting its own.
stop_orphaned_containerd() {
  local cpid cpidfile="$EXEC_ROOT/containerd/containerd.pid"
  cpid="$(cat "$cpidfile" 2>/dev/null || true)"
  if [ -n "$cpid" ] && tr '\0' ' ' 2>/dev/null <"/proc/$cpid/cmdline" | grep -qF "$EXEC_ROOT/containerd/"; then
    echo "docker-test-daemon: stopping containerd $cpid left by an earlier engine" >&2
    $SUDO kill "$cpid" || true
    for _ in $(seq 1 20); do
      [ -d "/proc/$cpid" ] || break
      sleep 0.5
    done
    [ ! -d "/proc/$cpid" ] || $SUDO kill -9 "$cpid" || true
  fi
}

# missing_caps: the capability names (CAP_...) the kernel knows but this
# process's bounding set lacks.
missing_caps() {
  local names=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP
    LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER
    SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE
    SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP
    MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF
    CHECKPOINT_RESTORE)
  local bnd last i
  bnd=$((16#$(awk '/^CapBnd:/ {print $2}' /proc/self/status)))
  last=$(cat /proc/sys/kernel/cap_last_cap 2>/dev/null || echo 40)
  for ((i = 0; i <= last && i < ${#names[@]}; i++)); do
    if (((bnd >> i) & 1)); then :; else echo "CAP_${names[$i]}"; fi
  done
}

# write_runc_wrapper CAPS...: a runc that first removes CAPS from the
# container's (or exec'd process's) capability sets.
write_runc_wrapper() {
  local drop
  drop="$(printf '"%s",' "$@")"
  drop="[${drop%,}]"
  $SUDO tee "$RUNC_WRAPPER" >/dev/null <<EOF
#!/bin/sh
# Written by scripts/docker-test-daemon.sh: runc, minus capabilities this
# sandbox cannot grant ($*).
drop='$drop'
bundle=""; process=""; prev=""
for a in "\$@"; do
  case "\$prev" in --bundle|-b) bundle="\$a" ;; --process|-p) process="\$a" ;; esac
  prev="\$a"
done
strip() { # strip FILE JQ-PATH
  [ -f "\$1" ] || return 0
  jq --argjson drop "\$drop" "\$2 |= (if . == null then . else with_entries(.value |= ((. // []) - \\\$drop)) end)" "\$1" >"\$1.bellows-tmp" &&
    mv "\$1.bellows-tmp" "\$1"
}
[ -n "\$bundle" ] && strip "\$bundle/config.json" .process.capabilities
[ -n "\$process" ] && strip "\$process" .capabilities
exec $(command -v runc) "\$@"
EOF
  $SUDO chmod 755 "$RUNC_WRAPPER"
}

start_daemon() {
  if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    apt_install docker.io
  fi
  command -v jq >/dev/null 2>&1 || apt_install jq
  if answering; then
    return 0
  fi
  clear_stale_engine
  mkdir -p "$LOG_DIR"
  local args=(--host "$HOST" --data-root "$DATA_ROOT" --exec-root "$EXEC_ROOT"
    --pidfile "$PIDFILE" --iptables=false --ip6tables=false --bridge=none
    --ip-masq=false --userland-proxy=false --log-level=warn
    --containerd-namespace bellows-test --containerd-plugins-namespace bellows-test-plugins)
  [ -z "$SUDO" ] || args+=(--group "$(id -gn)")
  local missing
  missing="$(missing_caps)"
  if [ -n "$missing" ]; then
    # shellcheck disable=SC2086
    write_runc_wrapper $missing
    echo "docker-test-daemon: this sandbox cannot grant ${missing//$'\n'/ }; privileged containers run without them" >&2
    args+=(--add-runtime "bellows-runc=$RUNC_WRAPPER" --default-runtime bellows-runc)
  fi
  echo "docker-test-daemon: starting dockerd on $SOCK (log $LOG)" >&2
  # Only this start's lines are shown on failure, not an earlier run's.
  local log_start
  log_start=$(($(stat -c %s "$LOG" 2>/dev/null || echo 0) + 1))
  # setsid: the engine outlives this script and is not in its process group.
  $SUDO setsid dockerd "${args[@]}" >>"$LOG" 2>&1 </dev/null &
  local launcher=$! started=$SECONDS
  until answering; do
    if [ $((SECONDS - started)) -ge "$WAIT_SECONDS" ]; then
      echo "docker-test-daemon: dockerd did not answer on $SOCK in $WAIT_SECONDS s; log:" >&2
      tail -c +"$log_start" "$LOG" | tail -n 40 >&2 || true
      exit 1
    fi
    # The launcher (setsid, or sudo) lives as long as dockerd does.
    if ! kill -0 "$launcher" 2>/dev/null; then
      echo "docker-test-daemon: dockerd exited; log:" >&2
      tail -c +"$log_start" "$LOG" | tail -n 40 >&2 || true
      exit 1
    fi
    sleep 0.5
  done
}

build_image() {
  if docker -H "$HOST" image inspect "$IMAGE" >/dev/null 2>&1; then
    return 0
  fi
  [ -x /bin/busybox ] || apt_install busybox-static
  local root
  root="$(mktemp -d)"
  mkdir -p "$root/bin" "$root/tmp" "$root/proc" "$root/sys" "$root/dev" "$root/etc" "$root/worker"
  cp /bin/busybox "$root/bin/busybox"
  local a
  for a in sh ash echo cat sleep ls test '[' false true printf env mkdir rm cp mv touch \
    grep sed head tail wc date id hostname ps kill readlink seq expr dd sync; do
    ln -s busybox "$root/bin/$a"
  done
  echo "root:x:0:0:root:/:/bin/sh" >"$root/etc/passwd"
  echo "root:x:0:" >"$root/etc/group"
  local rc=0
  tar -C "$root" -c . | docker -H "$HOST" import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' - "$IMAGE" >/dev/null || rc=$?
  rm -rf "$root"
  [ "$rc" -eq 0 ] || { echo "docker-test-daemon: importing $IMAGE failed" >&2; exit 1; }
  echo "docker-test-daemon: built $IMAGE" >&2
}

case "${1:-start}" in
start)
  start_daemon
  build_image
  echo "export DOCKER_HOST=$HOST"
  ;;
stop)
  stop_daemon
  ;;
*)
  echo "usage: $0 [start|stop]" >&2
  exit 2
  ;;
esac
