//! The operator's own identity cannot be used to escalate: it holds only what
//! `config/rbac/role.yaml` grants (its CRDs, their status, Leases, Events, `impersonate` on
//! service accounts), and nothing binds it, or anyone, to cluster-admin through baton's manifests.
//! That an Apply creates nothing its service account could not is shown by the dispatch
//! scenarios and the runtime bad-input corpus (forbidden kinds and namespaces create nothing).

use baton_e2e::{admin_client, cluster, install_operator_rbac};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Api;
use kube::api::{ListParams, PostParams};

const OPERATOR: &str = "system:serviceaccount:baton-system:baton";

async fn allowed(
    client: &kube::Client,
    group: &str,
    resource: &str,
    verb: &str,
    namespace: Option<&str>,
) -> bool {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(OPERATOR.to_owned()),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                "system:serviceaccounts:baton-system".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                group: Some(group.to_owned()),
                resource: Some(resource.to_owned()),
                verb: Some(verb.to_owned()),
                namespace: namespace.map(str::to_owned),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("a SubjectAccessReview");
    answer.status.is_some_and(|status| status.allowed)
}

#[tokio::test]
async fn the_operator_identity_cannot_escalate() {
    if cluster().state.is_none() {
        eprintln!("skipped: an existing cluster may bind the operator differently");
        return;
    }
    let client = admin_client().await;
    install_operator_rbac(&client).await;

    // What it needs, it has.
    for (group, resource, verb) in [
        ("baton.dev", "applies", "watch"),
        ("baton.dev", "operations/status", "update"),
        ("coordination.k8s.io", "leases", "create"),
        ("events.k8s.io", "events", "create"),
        ("", "serviceaccounts", "impersonate"),
    ] {
        assert!(
            allowed(&client, group, resource, verb, Some("shop")).await,
            "the operator needs {verb} {resource}"
        );
    }
    // Nothing else: workloads, secrets, RBAC (no bind or escalate), impersonating users or groups.
    for (group, resource, verb) in [
        ("", "configmaps", "create"),
        ("", "secrets", "get"),
        ("apps", "deployments", "create"),
        ("", "namespaces", "create"),
        ("rbac.authorization.k8s.io", "clusterrolebindings", "create"),
        ("rbac.authorization.k8s.io", "roles", "bind"),
        ("rbac.authorization.k8s.io", "clusterroles", "escalate"),
        ("", "users", "impersonate"),
        ("", "groups", "impersonate"),
        ("baton.dev", "operations", "update"),
    ] {
        assert!(
            !allowed(&client, group, resource, verb, Some("shop")).await,
            "the operator must not {verb} {resource}"
        );
    }

    // The role has no wildcard, and no binding gives the operator cluster-admin.
    let role = Api::<ClusterRole>::all(client.clone())
        .get("baton-operator")
        .await
        .expect("the operator's ClusterRole");
    for rule in role.rules.unwrap_or_default() {
        let all = rule
            .verbs
            .iter()
            .chain(rule.resources.iter().flatten())
            .chain(rule.api_groups.iter().flatten());
        assert!(all.clone().all(|item| item != "*"), "a wildcard in the operator's role: {rule:?}");
    }
    let bindings = Api::<ClusterRoleBinding>::all(client)
        .list(&ListParams::default())
        .await
        .expect("bindings")
        .items;
    for binding in bindings {
        let to_operator = binding.subjects.iter().flatten().any(|subject| {
            subject.kind == "ServiceAccount"
                && subject.name == "baton"
                && subject.namespace.as_deref() == Some("baton-system")
        });
        if to_operator {
            assert_eq!(
                binding.role_ref.name, "baton-operator",
                "the operator is bound to {}",
                binding.role_ref.name
            );
        }
    }
}
