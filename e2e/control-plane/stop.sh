#!/usr/bin/env bash
# Stop a control plane started by start.sh and remove its state dir.
#
# usage: stop.sh [STATE_DIR]      (default: ${TMPDIR:-/tmp}/baton-cp)
#
# Sends SIGTERM to each recorded process group (kube-controller-manager and
# kube-apiserver before etcd), waits up to BATON_CP_STOP_GRACE seconds
# (default 15), then sends SIGKILL. The state dir is removed unless
# BATON_KEEP_STATE=1. Safe to run twice, or when start.sh failed.
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

# A recorded pid counts only while its command line still names this state
# dir, so a pid reused by an unrelated process is never signalled.
ours() { # <pid>
    local cmdline
    cmdline="$(tr '\0' ' ' 2> /dev/null < "/proc/$1/cmdline")" || return 1
    [[ "$cmdline" == *"$state"* ]]
}

pids=()
if [[ -f "$state/pids" ]]; then
    while read -r pid; do
        [[ "$pid" =~ ^[0-9]+$ ]] && pids=("$pid" "${pids[@]}") # reverse order
    done < "$state/pids"
fi

alive() {
    local pid
    for pid in "${pids[@]}"; do
        ours "$pid" && return 0
    done
    return 1
}

signal_all() { # <signal>
    local pid
    for pid in "${pids[@]}"; do
        # Each process leads its own process group (started with setsid).
        if ours "$pid"; then
            kill "-$1" -- "-$pid" 2> /dev/null || kill "-$1" "$pid" 2> /dev/null || true
        fi
    done
}

if ((${#pids[@]})) && alive; then
    # Stop in reverse start order: controllers first, etcd last.
    for pid in "${pids[@]}"; do
        ours "$pid" || continue
        kill -TERM -- "-$pid" 2> /dev/null || kill -TERM "$pid" 2> /dev/null || true
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
        signal_all KILL
        for ((i = 0; i < 50; i++)); do
            alive || break
            sleep 0.1
        done
    fi
    if alive; then
        log "error: some processes survived SIGKILL: ${pids[*]}"
        exit 1
    fi
    # The processes were re-parented to init when start.sh exited; until init
    # reaps them they linger as zombies. Give it a moment so that a pgrep
    # right after stop.sh finds nothing.
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
    log "no running processes recorded in $state"
fi
: > "$state/pids"

if [[ "${BATON_KEEP_STATE:-0}" == 1 ]]; then
    log "keeping $state (BATON_KEEP_STATE=1)"
else
    rm -rf "$state"
fi
