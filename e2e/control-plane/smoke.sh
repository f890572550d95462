#!/usr/bin/env bash
# Smoke test of the local cluster: start it, check the API, RBAC for the
# baton service account, garbage collection and namespace deletion, the
# aggregated admin role, real workloads on the fake node (a Deployment rolls
# out, a Job completes, a held pod stays not ready, a failing Job fails), stop
# it, and check that no process is left.
#
# usage: smoke.sh [STATE_DIR]   (default: ${TMPDIR:-/tmp}/baton-cp-smoke)
# Needs kubectl in PATH.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
state="${1:-${TMPDIR:-/tmp}/baton-cp-smoke}"
passed=0
failed=0

check() { # <description> <command...>
    local what="$1"
    shift
    if "$@"; then
        echo "ok   - $what"
        passed=$((passed + 1))
    else
        echo "FAIL - $what"
        failed=$((failed + 1))
    fi
}

eventually() { # <seconds> <command...>
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 1
    done
}

stopped=0
cleanup() {
    ((stopped)) || "$here/stop.sh" "$state" || true
}
trap cleanup EXIT

"$here/start.sh" "$state" > /dev/null
# shellcheck source=/dev/null
source "$state/env"

has_default_ns() { kubectl get ns -o name | grep -qx namespace/default; }
check "kubectl get ns lists default" has_default_ns

can_i() { kubectl auth can-i --as=system:serviceaccount:baton-system:baton "$@" 2> /dev/null || true; }
check "RBAC on: baton SA cannot create deployments (impersonated)" \
    test "$(can_i create deployments)" = no
as_baton() { kubectl --kubeconfig="$BATON_CP_BATON_KUBECONFIG" "$@"; }
baton_denied() { ! as_baton get deployments -A > /dev/null 2>&1; }
check "RBAC on: baton SA token is rejected for listing deployments" baton_denied
baton_whoami() {
    as_baton auth whoami -o jsonpath='{.status.userInfo.username}' |
        grep -qx system:serviceaccount:baton-system:baton
}
check "baton SA token authenticates as the service account" baton_whoami

# Garbage collection: B is owned by A; deleting A must delete B.
kubectl create configmap smoke-owner --from-literal=k=v > /dev/null
uid="$(kubectl get configmap smoke-owner -o jsonpath='{.metadata.uid}')"
kubectl apply -f - > /dev/null << EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: smoke-dependent
  namespace: default
  ownerReferences:
  - apiVersion: v1
    kind: ConfigMap
    name: smoke-owner
    uid: $uid
    controller: true
data:
  k: v
EOF
kubectl delete configmap smoke-owner --wait=false > /dev/null
gc_start=$SECONDS
gone() { ! kubectl get configmap "$1" > /dev/null 2>&1; }
check "garbage collector deletes the dependent ConfigMap within 30s" eventually 30 gone smoke-dependent
echo "#   (garbage collected after $((SECONDS - gc_start))s)"

# Namespace controller: a deleted namespace with content goes away.
kubectl create namespace smoke-ns > /dev/null
kubectl -n smoke-ns create configmap x --from-literal=k=v > /dev/null
kubectl delete namespace smoke-ns --wait=false > /dev/null
ns_gone() { ! kubectl get namespace smoke-ns > /dev/null 2>&1; }
check "namespace controller finalises a deleted namespace within 60s" eventually 60 ns_gone

admin_filled() { [[ -n "$(kubectl get clusterrole admin -o jsonpath='{.rules}')" ]]; }
check "the clusterrole aggregation fills the admin role" eventually 30 admin_filled

# Workloads: scheduled onto the kwok node, reported by kwok, followed by the controllers.
kubectl create namespace smoke-work > /dev/null
kubectl -n smoke-work apply -f - > /dev/null << 'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: app, image: registry.invalid/web:1}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: held}
spec:
  selector: {matchLabels: {app: held}}
  template:
    metadata: {labels: {app: held}, annotations: {kwok.baton.dev/container: not-ready}}
    spec: {containers: [{name: app, image: registry.invalid/web:1}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: done}
spec:
  template:
    spec: {restartPolicy: Never, containers: [{name: run, image: registry.invalid/job:1}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: broken}
spec:
  backoffLimit: 0
  template:
    metadata: {annotations: {kwok.baton.dev/container: fail}}
    spec: {restartPolicy: Never, containers: [{name: run, image: registry.invalid/job:1}]}
EOF
field() { kubectl -n smoke-work get "$1" -o jsonpath="$2" 2> /dev/null; }
is() { [[ "$(field "$1" "$2")" == "$3" ]]; }
check "a Deployment of 2 pods rolls out within 30s" \
    eventually 30 is deployment/web '{.status.availableReplicas}' 2
check "a Job completes within 30s" \
    eventually 30 is job/done '{.status.conditions[?(@.type=="Complete")].status}' True
check "a Job whose pod fails reaches BackoffLimitExceeded within 30s" \
    eventually 30 is job/broken '{.status.conditions[?(@.type=="Failed")].reason}' BackoffLimitExceeded
held_running() { is pods '{.items[?(@.metadata.labels.app=="held")].status.phase}' Running; }
check "a held pod runs" eventually 30 held_running
check "a held pod is not ready" is deployment/held '{.status.readyReplicas}' ""

stopped=1
"$here/stop.sh" "$state"
no_procs() {
    local pid
    for pid in "$BATON_CP_ETCD_PID" "$BATON_CP_APISERVER_PID" "$BATON_CP_KCM_PID" \
        "$BATON_CP_SCHEDULER_PID" "$BATON_CP_KWOK_PID"; do
        ! kill -0 "$pid" 2> /dev/null || return 1
    done
}
check "no cluster process left after stop.sh" no_procs
check "state dir removed" test ! -e "$state"

echo "$passed passed, $failed failed"
((failed == 0))
