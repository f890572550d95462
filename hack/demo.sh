#!/usr/bin/env bash
# The main job: a cluster (the one KUBECONFIG points at, or else a local one with fake nodes; set
# BATON_DEMO_LOCAL=1 to use the local one anyway), baton's CRDs, the operator, and the samples in config/samples/
# run to their end: one succeeds, one fails and is dismissed, one is stopped and resumed, and one
# rolls out over three clusters: the local one and two workload clusters started beside it (`eu`
# and `us`), or, on your cluster, that same cluster registered under both names.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
ns="baton-demo"

command -v kubectl > /dev/null || {
    echo "demo: kubectl is required (any kubectl >= 1.30)" >&2
    exit 1
}

say() { printf '\n\033[1mdemo: %s\033[0m\n' "$*"; }

cargo build --quiet --bins
baton="$root/target/debug/baton"
# `kubectl baton` is the plugin built beside the operator.
export PATH="$root/target/debug:$PATH"

cleanup=()
on_exit() {
    local i
    for ((i = ${#cleanup[@]} - 1; i >= 0; i--)); do eval "${cleanup[i]}" || true; done
}
trap on_exit EXIT

if [[ -n "${KUBECONFIG:-}" && "${BATON_DEMO_LOCAL:-0}" != "1" ]]; then
    say "using the cluster in KUBECONFIG ($KUBECONFIG)"
    operator_kubeconfig="$KUBECONFIG"
    local_cluster=0
else
    state="$(mktemp -d "${TMPDIR:-/tmp}/baton-demo.XXXXXX")"
    rmdir "$state"
    cleanup+=("bash '$root/e2e/control-plane/stop.sh' '$state'")
    bash "$root/e2e/control-plane/start.sh" "$state" > /dev/null
    export KUBECONFIG="$state/kubeconfig"
    operator_kubeconfig="$state/kubeconfig-baton"
    local_cluster=1
fi

say "installing the CRDs (\`baton crds\`) and the operator's RBAC"
"$baton" crds | kubectl apply --server-side --field-manager=baton-demo -f - > /dev/null
kubectl wait --for=condition=Established crd/applies.baton.dev crd/operations.baton.dev --timeout=60s > /dev/null
kubectl apply -f config/rbac/role.yaml > /dev/null
if ((local_cluster)); then
    # The policy names the operator's identity (baton-system/baton), which the operator has on
    # the local control plane; on your cluster the demo's operator runs as you, so it is not
    # installed there (install config/policy/ with the operator itself, or use the chart).
    say "installing the admission policy that protects baton's records (config/policy/)"
    kubectl apply --server-side -f config/policy/protect-records.yaml > /dev/null
fi

say "starting the operator (logs: ${TMPDIR:-/tmp}/baton-demo-operator.log)"
KUBECONFIG="$operator_kubeconfig" "$baton" run --admin-address 127.0.0.1:0 \
    > "${TMPDIR:-/tmp}/baton-demo-operator.log" 2>&1 &
operator_pid=$!
cleanup+=("kill $operator_pid; wait $operator_pid 2>/dev/null")

kubectl apply -f config/samples/namespaces.yaml -f config/samples/rbac.yaml > /dev/null
kubectl delete namespace demo-eu --ignore-not-found --wait=true > /dev/null

show() { kubectl get applies -n "$ns" -o wide; }
wait_phase() { # <apply> <phase>
    kubectl wait -n "$ns" "apply/$1" --for=jsonpath='{.status.phase}'="$2" --timeout=120s > /dev/null
}
wait_operation() { # <apply> <operation> <phase>
    local tries=0
    until kubectl get -n "$ns" "operation/$1-$2" > /dev/null 2>&1; do
        ((++tries < 300)) || return 1
        sleep 0.2
    done
    kubectl wait -n "$ns" "operation/$1-$2" --for=jsonpath='{.status.phase}'="$3" --timeout=120s > /dev/null
}

say "1/4 greeting: a ConfigMap through dev, staging and prod"
kubectl apply -f config/samples/greeting.yaml
wait_phase greeting Succeeded
show

say "2/4 migrate: the 'eu' target namespace does not exist, so its apply fails; onFailure: Pause"
kubectl apply -f config/samples/migrate.yaml
wait_phase migrate Paused
show
kubectl get apply migrate -n "$ns" -o jsonpath='{.status.message}{"\n"}'
say "fixing the cause (creating namespace demo-eu) and dismissing the error by its id"
kubectl create namespace demo-eu > /dev/null
kubectl baton dismiss migrate -n "$ns"
wait_phase migrate Succeeded
show

pods_running() { # <namespace> <selector> <count>
    local tries=0
    until (($(kubectl get pods -n "$1" -l "$2" --field-selector status.phase=Running --no-headers 2> /dev/null | wc -l) >= $3)); do
        ((++tries < 300)) || return 1
        sleep 0.2
    done
}

say "3/4 web: stopped while its Deployment rolls out, then resumed; then a smoke-test Job"
kubectl apply -f config/samples/web.yaml
wait_operation web deploy Running
pods_running demo-web app=web 3
say "the Deployment's pods are scheduled and running, not ready yet"
kubectl get pods -n demo-web -o wide
kubectl baton stop web -n "$ns"
wait_phase web Stopped
kubectl baton status web -n "$ns"
kubectl baton resume web -n "$ns"
wait_operation web deploy Running
if ((local_cluster)); then
    say "on the local cluster the pods run on a fake node: kwok plays the kubelet, the controllers are the real ones"
fi
kubectl baton watch web -n "$ns"
show
say "the pods once the rollout settled: the Deployment's are ready, the Job's completed"
kubectl get deployments,jobs,pods -n demo-web -o wide

say "rings: one template, a value per ring; the canary soaks 5s, prod waits for an approval"
kubectl apply -f config/samples/rings.yaml
tries=0
until kubectl get apply rings -n "$ns" -o jsonpath='{.status.conditions[?(@.type=="Reconciling")].reason}' 2> /dev/null | grep -q AwaitingApproval; do
    ((++tries < 240)) || { kubectl baton status rings -n "$ns"; exit 1; }
    sleep 0.5
done
kubectl baton status rings -n "$ns"
kubectl baton approve rings prod -n "$ns"
wait_phase rings Succeeded
show
kubectl get configmaps -n demo-prod flags-prod -o jsonpath='{.data}{"\n"}'

say "what happened to 'web', as Events"
kubectl get events -n "$ns" --field-selector involvedObject.name=web \
    -o custom-columns=REASON:.reason,MESSAGE:.message --sort-by=.metadata.creationTimestamp

# A cluster is registered as a Secret in the Apply's namespace whose key `value` holds a
# kubeconfig (Flux's convention). Locally, each workload cluster gets an identity that may only
# impersonate (config/samples/fleet-cluster.yaml) and a token for it; on your cluster, your own
# kubeconfig registers that same cluster under both names, so the demo runs anywhere.
fleet_dir="$(mktemp -d "${TMPDIR:-/tmp}/baton-demo-fleet.XXXXXX")"
cleanup+=("rm -rf '$fleet_dir'")
declare -A cluster_kubeconfig
if ((local_cluster)); then
    say "4/4 fleet: starting two workload clusters, eu and us, beside the local one"
    for name in eu us; do
        cluster_state="$state-$name"
        cleanup+=("bash '$root/e2e/control-plane/stop.sh' '$cluster_state'")
        bash "$root/e2e/control-plane/start.sh" "$cluster_state" > /dev/null 2>&1 &
        eval "start_$name=\$!"
    done
    for name in eu us; do
        pid_var="start_$name"
        wait "${!pid_var}" || {
            echo "demo: workload cluster $name did not start (logs in $state-$name)" >&2
            exit 1
        }
        admin="$state-$name/kubeconfig"
        kubectl --kubeconfig "$admin" apply -f config/samples/fleet-cluster.yaml > /dev/null
        kubectl --kubeconfig "$admin" create namespace "demo-fleet-$name" > /dev/null
        token="$(kubectl --kubeconfig "$admin" create token baton-remote -n baton-system --duration=24h)"
        server="$(kubectl --kubeconfig "$admin" config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
        file="$fleet_dir/$name.kubeconfig"
        kubectl config --kubeconfig "$file" set-cluster "$name" --server "$server" \
            --certificate-authority "$state-$name/pki/ca.crt" --embed-certs=true > /dev/null
        kubectl config --kubeconfig "$file" set-credentials baton-remote --token "$token" > /dev/null
        kubectl config --kubeconfig "$file" set-context "$name" --cluster "$name" --user baton-remote > /dev/null
        kubectl config --kubeconfig "$file" use-context "$name" > /dev/null
        cluster_kubeconfig[$name]="$admin"
    done
else
    say "4/4 fleet: registering your cluster under the names eu and us"
    kubectl config view --minify --flatten > "$fleet_dir/self.kubeconfig"
    for name in eu us; do
        cp "$fleet_dir/self.kubeconfig" "$fleet_dir/$name.kubeconfig"
        kubectl create namespace "demo-fleet-$name" --dry-run=client -o yaml | kubectl apply -f - > /dev/null
        cluster_kubeconfig[$name]="$KUBECONFIG"
    done
fi
for name in eu us; do
    echo "kubectl create secret generic $name -n $ns --from-file=value=$name.kubeconfig"
    kubectl delete secret "$name" -n "$ns" --ignore-not-found > /dev/null
    kubectl create secret generic "$name" -n "$ns" --from-file=value="$fleet_dir/$name.kubeconfig" > /dev/null
done

say "fleet: the same Deployment through dev, eu and us, one cluster at a time; stopped while eu rolls out"
kubectl apply -f config/samples/fleet.yaml
wait_operation fleet eu Running
kubectl baton stop fleet -n "$ns"
wait_phase fleet Stopped
kubectl get operations -n "$ns" -l baton.dev/apply=fleet
say "resumed: eu goes on, then us"
kubectl baton resume fleet -n "$ns"
tries=0
until kubectl get apply fleet -n "$ns" -o jsonpath='{.status.conditions[?(@.type=="Reconciling")].reason}' 2> /dev/null | grep -q AwaitingApproval; do
    ((++tries < 600)) || { kubectl baton status fleet -n "$ns"; exit 1; }
    sleep 0.5
done
say "fleet: the last cluster waits for a person (kubectl baton approve)"
kubectl baton status fleet -n "$ns"
kubectl baton approve fleet us -n "$ns"
wait_phase fleet Succeeded
kubectl get operations -n "$ns" -l baton.dev/apply=fleet
say "each target has its own Deployment, rolled out (kubectl get deployment web, on each cluster)"
kubectl get deployment web -n demo-fleet-dev
for name in eu us; do
    echo "--- $name"
    kubectl --kubeconfig "${cluster_kubeconfig[$name]}" get deployment web -n "demo-fleet-$name"
done
if [[ "${BATON_DEMO_KEEP:-0}" == "1" ]]; then
    trap - EXIT
    say "every sample settled; the cluster and the operator keep running (BATON_DEMO_KEEP=1):"
    echo "  export KUBECONFIG=$KUBECONFIG PATH=$root/target/debug:\$PATH"
    echo "  kubectl baton status web -n $ns"
    echo "  kubectl baton dashboard -n $ns    # then open http://127.0.0.1:3210/"
    echo "  stop everything: kill $operator_pid${state:+; for s in $state $state-eu $state-us; do bash e2e/control-plane/stop.sh \$s; done}"
    exit 0
fi
say "the same rollouts in a browser, with your credentials (keep the cluster with BATON_DEMO_KEEP=1):"
echo "  KUBECONFIG=$KUBECONFIG $root/target/debug/kubectl-baton dashboard -n $ns    # then open http://127.0.0.1:3210/"
say "every sample settled; stopping"
