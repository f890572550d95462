#!/usr/bin/env bash
# Stop a control plane started by start.sh and remove its state dir.
#
# usage: stop.sh [STATE_DIR]      (default: ${TMPDIR:-/tmp}/baton-cp)
#
# Stops kwok and kube-scheduler, then kube-controller-manager, then
# kube-apiserver, then etcd: SIGTERM to each process group, up to 5 s each to
# exit, then up to BATON_CP_STOP_GRACE seconds (default 15) for all, then
# SIGKILL. The processes are those listed in STATE_DIR/pids plus any of these
# five binaries whose command line names STATE_DIR (so nothing is missed if start.sh was killed
# mid-way). The state dir is removed unless BATON_KEEP_STATE=1.
# Safe to run twice, or after start.sh failed.
set -euo pipefail

state="${1:-${TMPDIR:-/tmp}/baton-cp}"
grace="${BATON_CP_STOP_GRACE:-15}"
marker=".baton-control-plane"

log() { echo "stop.sh: $*" >&2; }

if [[ ! -d "$state" ]]; then
    log "no state dir $state; nothing to stop"
    exit 0
fi
if [[ ! -f "$state/$marker" ]]; then
    log "error: $state was not made by start.sh; refusing to touch it"
    exit 1
fi
state="$(cd "$state" && pwd)"

# A pid is ours while it is one of the five binaries and its command line
# names a path inside this state dir (every one of them does), so a pid reused
# by an unrelated process is never signalled. Sets R to the stop rank (0 first).
R=
rank() { # <pid>
    local comm args
    read -r comm 2> /dev/null < "/proc/$1/comm" || return 1
    case "$comm" in
        kwok | kube-scheduler | kube-controller* | kube-apiserver | etcd) ;;
        *) return 1 ;;
    esac
    mapfile -d '' -t args 2> /dev/null < "/proc/$1/cmdline" || return 1
    [[ "${args[*]}" == *"$state/"* ]] || return 1
    case "$comm" in
        kwok | kube-scheduler) R=0 ;;
        kube-controller*) R=1 ;;
        kube-apiserver) R=2 ;;
        *) R=3 ;;
    esac
}
ours() { rank "$1"; }

candidates=()
if [[ -f "$state/pids" ]]; then
    while read -r pid; do
        [[ "$pid" =~ ^[0-9]+$ ]] && candidates+=("$pid")
    done < "$state/pids"
fi
for dir in /proc/[0-9]*; do
    candidates+=("${dir#/proc/}")
done

# Unique, ours, ordered by rank.
declare -A rank_of=()
for pid in "${candidates[@]}"; do
    [[ -z "${rank_of[$pid]:-}" ]] || continue
    R=none
    rank "$pid" || true
    rank_of[$pid]=$R
done
pids=()
for r in 0 1 2 3; do
    for pid in "${!rank_of[@]}"; do
        [[ "${rank_of[$pid]}" == "$r" ]] && pids+=("$pid")
    done
done

alive() {
    local pid
    for pid in "${pids[@]}"; do
        ours "$pid" && return 0
    done
    return 1
}

signal() { # <signal> <pid>: the whole process group (each one leads its own)
    kill "-$1" -- "-$2" 2> /dev/null || kill "-$1" "$2" 2> /dev/null || true
}

if ((${#pids[@]})); then
    for pid in "${pids[@]}"; do
        ours "$pid" || continue
        signal TERM "$pid"
        for ((i = 0; i < 50; i++)); do
            ours "$pid" || break
            sleep 0.1
        done
    done
    deadline=$((SECONDS + grace))
    while alive && ((SECONDS < deadline)); do
        sleep 0.2
    done
    if alive; then
        log "sending SIGKILL to processes still running after ${grace}s"
        for pid in "${pids[@]}"; do
            ours "$pid" && signal KILL "$pid"
        done
        for ((i = 0; i < 50; i++)); do
            alive || break
            sleep 0.1
        done
    fi
    if alive; then
        log "error: some processes survived SIGKILL: ${pids[*]}"
        exit 1
    fi
    # Once start.sh has exited the processes belong to init, and linger as
    # zombies until it reaps them. Give it a moment so that a pgrep right
    # after stop.sh finds nothing.
    for ((i = 0; i < 30; i++)); do
        zombies=0
        for pid in "${pids[@]}"; do
            read -r _ _ st _ 2> /dev/null < "/proc/$pid/stat" || continue
            [[ "$st" == Z ]] && zombies=1
        done
        ((zombies)) || break
        sleep 0.1
    done
    log "stopped pids ${pids[*]}"
else
    log "no running processes found for $state"
fi
: > "$state/pids"

if [[ "${BATON_KEEP_STATE:-0}" == 1 ]]; then
    log "keeping $state (BATON_KEEP_STATE=1)"
else
    rm -rf "$state"
fi
