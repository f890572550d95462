#!/usr/bin/env bash
# Start a local Kubernetes cluster for end-to-end tests and demos: etcd,
# kube-apiserver and kube-controller-manager, and (unless --core) the workload
# parts: kube-scheduler, the workload controllers and kwok with fake nodes, so
# Deployments, StatefulSets, DaemonSets and Jobs roll out for real (pods are
# scheduled, kwok reports them running and ready per kwok/stages.yaml).
#
# usage: start.sh [--core] [STATE_DIR]      (default: ${TMPDIR:-/tmp}/baton-cp)
#
#   --core   the control plane only (garbage collector, namespace and
#            clusterrole-aggregation controllers; no scheduler, no nodes, so
#            pods never run), as envtest does; starts faster.
#
# Everything lives in STATE_DIR: certs, tokens, etcd data, logs, and
#   kubeconfig        admin (group system:masters) kubeconfig, CA embedded
#   kubeconfig-baton  kubeconfig for system:serviceaccount:baton-system:baton
#   env               `export ...` lines: KUBECONFIG, URL, ports, pids, tokens
#   pids              one pid per line (each process leads its own session)
# Stop with stop.sh STATE_DIR. On any failure start.sh stops what it started
# and keeps STATE_DIR (logs) for inspection.
#
# Env: BATON_CACHE_DIR   binary cache root, see build.sh
#      BATON_CP_TIMEOUT  seconds to wait for each component (default 180)
#      BATON_CP_NODES    fake nodes kwok runs (default 1)
#      BATON_CP_CORE=1   same as --core
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
core="${BATON_CP_CORE:-0}"
if [[ "${1:-}" == --core ]]; then
    core=1
    shift
fi
state="${1:-${TMPDIR:-/tmp}/baton-cp}"
timeout="${BATON_CP_TIMEOUT:-180}"
nodes="${BATON_CP_NODES:-1}"
[[ "$nodes" =~ ^[0-9]+$ ]] || { echo "start.sh: BATON_CP_NODES must be a number" >&2; exit 2; }
marker=".baton-control-plane"

log() { echo "start.sh: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

for tool in openssl curl python3 setsid; do
    command -v "$tool" > /dev/null 2>&1 || die "$tool is required"
done

# --- state dir ---------------------------------------------------------------
mkdir -p "$state"
state="$(cd "$state" && pwd)"
if [[ -f "$state/pids" ]]; then
    while read -r pid; do
        # alive and still naming this state dir (not a reused pid)
        if [[ "$pid" =~ ^[0-9]+$ ]] && grep -qF "$state/" "/proc/$pid/cmdline" 2> /dev/null; then
            die "a control plane is already running from $state (pid $pid); run stop.sh $state first"
        fi
    done < "$state/pids"
fi
if [[ -n "$(ls -A "$state")" ]]; then
    [[ -f "$state/$marker" ]] || die "$state is not empty and was not made by start.sh; refusing to use it"
    log "removing stale state in $state"
    find "$state" -mindepth 1 -delete
fi
touch "$state/$marker"
: > "$state/pids"

# --- cleanup on failure ------------------------------------------------------
# On any failure or signal, stop whatever was started (stop.sh reads the pids
# file, which grows as processes start) and keep the state dir for its logs.
# fds 3 and 4 keep the original stdout/stderr: a signal can arrive while a
# function runs with its output sent to /dev/null, and the trap runs there.
exec 3>&1 4>&2
ok=0
on_exit() {
    local rc=$?
    ((ok)) && return
    exec 1>&3 2>&4
    log "start-up failed (exit $rc); stopping what was started"
    BATON_KEEP_STATE=1 "$here/stop.sh" "$state" || true
    log "logs are kept in $state"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Wall-clock timestamps in microseconds; since <t> prints seconds elapsed.
now() { echo "${EPOCHREALTIME/[.,]/}"; }
since() { # <start µs> [end µs]
    local d=$((${2:-$(now)} - $1))
    printf '%d.%01ds' $((d / 1000000)) $((d % 1000000 / 100000))
}
t0=$(now)

# --- binaries ----------------------------------------------------------------
binaries=(etcd kube-apiserver kube-controller-manager)
build_args=()
if ((core)); then
    build_args+=(--core)
else
    binaries+=(kube-scheduler kwok)
fi
bin_dir="$("$here/build.sh" "${build_args[@]}" | tail -n 1)"
for b in "${binaries[@]}"; do
    [[ -x "$bin_dir/$b" ]] || die "missing $bin_dir/$b"
done
t_bins=$(now)

# --- ports -------------------------------------------------------------------
# Bind all sockets at once so the ports are distinct, then release them.
read -r etcd_port etcd_peer_port api_port kcm_port scheduler_port kwok_port < <(
    python3 - << 'EOF'
import socket
socks = []
for _ in range(6):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
)
[[ -n "$kwok_port" ]] || die "could not pick free ports"

# --- certificates, keys, tokens ----------------------------------------------
pki="$state/pki"
mkdir -p "$pki"
(
    cd "$pki"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout ca.key -out ca.crt -days 3650 -subj "/CN=baton-e2e-ca" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,digitalSignature,keyCertSign,cRLSign" 2> /dev/null
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2> /dev/null
    cat > apiserver.ext << 'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
        -days 365 -extfile apiserver.ext -out apiserver.crt 2> /dev/null
    openssl genrsa -out sa.key 2048 2> /dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2> /dev/null
    chmod 600 ./*.key
)

admin_token="$(openssl rand -hex 24)"
kcm_token="$(openssl rand -hex 24)"
scheduler_token="$(openssl rand -hex 24)"
kwok_token="$(openssl rand -hex 24)"
baton_token="$(openssl rand -hex 24)"
# token,user,uid,"group1,group2"
cat > "$pki/tokens.csv" << EOF
$admin_token,baton-e2e-admin,baton-e2e-admin,"system:masters"
$kcm_token,system:kube-controller-manager,system:kube-controller-manager,"system:masters"
$scheduler_token,system:kube-scheduler,system:kube-scheduler,"system:masters"
$kwok_token,kwok,kwok,"system:masters"
$baton_token,system:serviceaccount:baton-system:baton,baton-system-baton,"system:serviceaccounts,system:serviceaccounts:baton-system"
EOF
chmod 600 "$pki/tokens.csv"

api_url="https://127.0.0.1:$api_port"
ca_data="$(base64 -w0 < "$pki/ca.crt")"
write_kubeconfig() { # <file> <user> <token>
    cat > "$1" << EOF
apiVersion: v1
kind: Config
clusters:
- name: baton-e2e
  cluster:
    server: $api_url
    certificate-authority-data: $ca_data
users:
- name: $2
  user:
    token: $3
contexts:
- name: baton-e2e
  context:
    cluster: baton-e2e
    user: $2
current-context: baton-e2e
EOF
    chmod 600 "$1"
}
write_kubeconfig "$state/kubeconfig" baton-e2e-admin "$admin_token"
write_kubeconfig "$state/kubeconfig-baton" baton-system-baton "$baton_token"
write_kubeconfig "$state/kubeconfig-kcm" kube-controller-manager "$kcm_token"
write_kubeconfig "$state/kubeconfig-scheduler" kube-scheduler "$scheduler_token"
write_kubeconfig "$state/kubeconfig-kwok" kwok "$kwok_token"

t_certs=$(now)

# --- process helpers ---------------------------------------------------------
last_pid=
# start <name> <cmd...>: run detached in its own session. The child records
# its own pid before it execs, so a signal to start.sh at any moment cannot
# leave an unrecorded process; setsid does not fork here (the child is not a
# process group leader), so the pid stays the same and stop.sh can signal the
# whole group.
start() {
    local name="$1"
    shift
    (
        trap - EXIT INT TERM
        echo "$BASHPID" >> "$state/pids"
        echo "$BASHPID" > "$state/$name.pid"
        exec setsid "$@" > "$state/$name.log" 2>&1 < /dev/null 3>&- 4>&-
    ) &
    last_pid=$!
}

# wait_for <name> <pid> <description> <check command...>
wait_for() {
    local name="$1" pid="$2" what="$3" deadline=$((SECONDS + timeout))
    shift 3
    until "$@" > /dev/null 2>&1; do
        if ! kill -0 "$pid" 2> /dev/null; then
            log "$name exited; last lines of $state/$name.log:"
            tail -n 30 "$state/$name.log" >&2 || true
            die "$name did not start"
        fi
        if ((SECONDS >= deadline)); then
            log "last lines of $state/$name.log:"
            tail -n 30 "$state/$name.log" >&2 || true
            die "timed out after ${timeout}s waiting for $what"
        fi
        sleep 0.25
    done
}

# --- etcd --------------------------------------------------------------------
start etcd "$bin_dir/etcd" \
    --name=baton-e2e \
    --data-dir="$state/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" \
    --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster="baton-e2e=http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster-state=new \
    --unsafe-no-fsync=true \
    --log-level=warn
pid_etcd=$last_pid
etcd_healthy() {
    curl -fs --max-time 2 "http://127.0.0.1:$etcd_port/health" 2> /dev/null | grep -q '"health":"true"'
}
wait_for etcd "$pid_etcd" "etcd health" etcd_healthy
t_etcd=$(now)
log "etcd ready on 127.0.0.1:$etcd_port after $(since "$t_certs" "$t_etcd")"

# --- kube-apiserver ----------------------------------------------------------
# Flags follow envtest (controller-runtime): no ServiceAccount admission, since
# there is no token controller and no real kubelet to mount a token (kwok's
# pods run nothing). --endpoint-reconciler-type=none:
# a loopback advertise address is not a valid Endpoints IP, and the lease
# reconciler would log that error every 10s (nothing in-cluster dials it).
start kube-apiserver "$bin_dir/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --secure-port="$api_port" \
    --cert-dir="$state/apiserver-certs" \
    --tls-cert-file="$pki/apiserver.crt" \
    --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --token-auth-file="$pki/tokens.csv" \
    --authorization-mode=RBAC \
    --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-cluster-ip-range=10.0.0.0/24 \
    --allow-privileged=true \
    --disable-admission-plugins=ServiceAccount \
    --endpoint-reconciler-type=none \
    --profiling=false
pid_kube_apiserver=$last_pid
api_get() { # <path>
    curl -fs --max-time 5 --cacert "$pki/ca.crt" \
        -H "Authorization: Bearer $admin_token" "$api_url$1"
}
api_ready() {
    [[ "$(api_get /readyz 2> /dev/null)" == ok ]] &&
        api_get /api/v1/namespaces/default > /dev/null 2>&1
}
wait_for kube-apiserver "$pid_kube_apiserver" "kube-apiserver /readyz and namespace default" api_ready
t_api=$(now)
log "kube-apiserver ready on $api_url after $(since "$t_etcd" "$t_api")"

# --- kube-controller-manager -------------------------------------------------
# No --authentication/--authorization-kubeconfig: its own HTTPS port then only
# serves the always-allowed /healthz, /readyz, /livez, which is all we use (with
# them it would look for a front-proxy CA the apiserver does not have, and log
# an error in a loop). The clusterrole aggregation fills the built-in admin,
# edit and view roles, as on a real cluster.
controllers=garbage-collector-controller,namespace-controller,clusterrole-aggregation-controller
if ((!core)); then
    # What a workload needs: the controllers of the workload kinds and the node
    # lifecycle (it lifts the not-ready taint a new node is admitted with once
    # kwok reports the node Ready). No token, endpoint or IPAM controllers: pods
    # get no service-account token (that admission plugin is off) and kwok gives
    # them their IPs.
    controllers+=,deployment-controller,replicaset-controller,statefulset-controller
    controllers+=,daemonset-controller,job-controller,node-lifecycle-controller
fi
start kube-controller-manager "$bin_dir/kube-controller-manager" \
    --kubeconfig="$state/kubeconfig-kcm" \
    --controllers="$controllers" \
    --use-service-account-credentials=false \
    --leader-elect=false \
    --bind-address=127.0.0.1 \
    --secure-port="$kcm_port" \
    --cert-dir="$state/kcm-certs" \
    --profiling=false
pid_kube_controller_manager=$last_pid
kcm_ready() {
    [[ "$(curl -fs --max-time 2 -k "https://127.0.0.1:$kcm_port/healthz" 2> /dev/null)" == ok ]] &&
        grep -q 'Proceeding to collect garbage' "$state/kube-controller-manager.log" 2> /dev/null
}
wait_for kube-controller-manager "$pid_kube_controller_manager" \
    "kube-controller-manager /healthz and garbage collector start" kcm_ready
t_kcm=$(now)
log "kube-controller-manager ready (garbage collector running) after $(since "$t_api" "$t_kcm")"
t_end=$t_kcm

pid_kube_scheduler=
pid_kwok=
if ((!core)); then
    # --- kube-scheduler --------------------------------------------------------
    # No authentication/authorization kubeconfig, for the same reason as above.
    start kube-scheduler "$bin_dir/kube-scheduler" \
        --kubeconfig="$state/kubeconfig-scheduler" \
        --leader-elect=false \
        --bind-address=127.0.0.1 \
        --secure-port="$scheduler_port" \
        --cert-dir="$state/scheduler-certs" \
        --profiling=false
    pid_kube_scheduler=$last_pid

    # --- kwok: the fake kubelet ------------------------------------------------
    # It manages only the nodes carrying the annotation below, so a real node
    # joined to this cluster would be left alone. KWOK_WORKDIR keeps it from
    # reading a ~/.kwok/kwok.yaml. The pod stages are ours (kwok/stages.yaml);
    # the node stages are kwok's defaults (Ready at once, heartbeats and a
    # node lease).
    start kwok env KWOK_WORKDIR="$state/kwok" "$bin_dir/kwok" \
        --kubeconfig="$state/kubeconfig-kwok" \
        --config="$here/kwok/stages.yaml" \
        --manage-all-nodes=false \
        --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
        --cidr=10.244.0.1/16 \
        --node-ip=127.0.0.1 \
        --server-address="127.0.0.1:$kwok_port"
    pid_kwok=$last_pid

    # Room for far more pods than a kubelet's default 110: a test run keeps hundreds of pods
    # at once (held pods live until their namespace goes), and pods request nothing.
    for ((i = 0; i < nodes; i++)); do
        node="kwok-node-$i"
        node_json="{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"metadata\":{\"name\":\"$node\",
          \"annotations\":{\"kwok.x-k8s.io/node\":\"fake\",\"node.alpha.kubernetes.io/ttl\":\"0\"},
          \"labels\":{\"kubernetes.io/hostname\":\"$node\",\"kubernetes.io/os\":\"linux\",
            \"kubernetes.io/arch\":\"amd64\",\"type\":\"kwok\"}},
          \"status\":{\"allocatable\":{\"cpu\":\"1k\",\"memory\":\"1Ti\",\"pods\":\"10k\"},
            \"capacity\":{\"cpu\":\"1k\",\"memory\":\"1Ti\",\"pods\":\"10k\"}}}"
        curl -fsS --max-time 5 --cacert "$pki/ca.crt" -H "Authorization: Bearer $admin_token" \
            -H 'Content-Type: application/json' -X POST --data "$node_json" \
            "$api_url/api/v1/nodes" > /dev/null || die "could not create node $node"
    done
    scheduler_ready() {
        [[ "$(curl -fs --max-time 2 -k "https://127.0.0.1:$scheduler_port/healthz" 2> /dev/null)" == ok ]]
    }
    wait_for kube-scheduler "$pid_kube_scheduler" "kube-scheduler /healthz" scheduler_ready
    # Schedulable: Ready (kwok) and without the not-ready taint (node lifecycle).
    nodes_ready() {
        [[ "$(curl -fs --max-time 2 "http://127.0.0.1:$kwok_port/healthz" 2> /dev/null)" == ok ]] &&
            api_get /api/v1/nodes?labelSelector=type%3Dkwok | python3 -c '
import json, sys
nodes = json.load(sys.stdin)["items"]
ready = [n for n in nodes
         if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
         and not any(t["key"].startswith("node.kubernetes.io/") for t in n["spec"].get("taints", []))]
sys.exit(0 if len(ready) == int(sys.argv[1]) else 1)' "$nodes"
    }
    wait_for kwok "$pid_kwok" "$nodes kwok node(s) Ready and untainted" nodes_ready
    t_end=$(now)
    log "kube-scheduler and kwok ready, $nodes node(s) schedulable, after $(since "$t_kcm" "$t_end")"
fi

# --- env file ----------------------------------------------------------------
printf 'export %s=%q\n' \
    KUBECONFIG "$state/kubeconfig" \
    BATON_CP_STATE_DIR "$state" \
    BATON_CP_BIN_DIR "$bin_dir" \
    BATON_CP_APISERVER_URL "$api_url" \
    BATON_CP_APISERVER_PORT "$api_port" \
    BATON_CP_ETCD_PORT "$etcd_port" \
    BATON_CP_ETCD_PEER_PORT "$etcd_peer_port" \
    BATON_CP_KCM_PORT "$kcm_port" \
    BATON_CP_CA_FILE "$pki/ca.crt" \
    BATON_CP_ADMIN_TOKEN "$admin_token" \
    BATON_CP_BATON_TOKEN "$baton_token" \
    BATON_CP_BATON_KUBECONFIG "$state/kubeconfig-baton" \
    BATON_CP_ETCD_PID "$pid_etcd" \
    BATON_CP_APISERVER_PID "$pid_kube_apiserver" \
    BATON_CP_KCM_PID "$pid_kube_controller_manager" \
    BATON_CP_SCHEDULER_PID "$pid_kube_scheduler" \
    BATON_CP_KWOK_PID "$pid_kwok" \
    BATON_CP_KWOK_PORT "$kwok_port" \
    BATON_CP_WORKLOADS "$((1 - core))" \
    > "$state/env"
chmod 600 "$state/env"

ok=1
what="cluster"
((core)) && what="control plane (--core)"
log "$what up in $(since "$t0" "$t_end") (binaries $(since "$t0" "$t_bins"), certs $(since "$t_bins" "$t_certs"), processes $(since "$t_certs" "$t_end"))"
log "state: $state; use: source $state/env"
echo "$state/env"
