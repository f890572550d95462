//! Registrations a tenant may write and baton must refuse (specification section 9): a
//! kubeconfig whose user runs a program, reads a file of the operator's, or assumes another
//! identity. Each registration points at the management cluster's own API server with
//! credentials that would work there (the harness administrator's token), so the refusal is
//! the only thing between the tenant and the operator's programs, files and identity: each test
//! checks that the operation fails naming the field, and that nothing was run or written.

use std::path::PathBuf;

use baton::crd::{FailurePolicy, Operation, OperationPhase};
use baton_e2e::fleet::{allow_reading, put_secret};
use baton_e2e::{TestNamespace, cluster, wait_for};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::config::Kubeconfig;

use super::support::{DEPLOYER, PATIENCE, World, config_map, spec};

/// The registration Secret every test writes.
const REGISTRATION: &str = "mgmt";

/// The management cluster as its administrator reaches it.
struct Management {
    server: String,
    ca_data: String,
    admin_token: String,
}

/// The management cluster's address, CA and administrator token, from the harness's admin
/// kubeconfig; `None` when that kubeconfig carries no token (an existing cluster's may not).
fn management() -> Option<Management> {
    let kubeconfig =
        Kubeconfig::read_from(&cluster().kubeconfig).expect("the harness's admin kubeconfig");
    let cluster = kubeconfig.clusters.first().and_then(|named| named.cluster.clone())?;
    let user = kubeconfig.auth_infos.first().and_then(|named| named.auth_info.clone())?;
    // Serialized, the token is the plain text a kubeconfig holds.
    let user = serde_json::to_value(user).expect("a user as JSON");
    Some(Management {
        server: cluster.server?,
        ca_data: cluster.certificate_authority_data?,
        admin_token: user["token"].as_str()?.to_owned(),
    })
}

/// A kubeconfig for the management cluster whose user is `user` (YAML, indented under `user:`).
fn registration(management: &Management, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: mgmt\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: tenant\n  user:\n{user}contexts:\n- name: mgmt\n  context:\n    cluster: mgmt\n    user: tenant\ncurrent-context: mgmt\n",
        server = management.server,
        ca = management.ca_data,
    )
}

fn skipped() {
    eprintln!("skipped: the admin kubeconfig carries no token to plant in a registration");
}

/// A path in the temporary directory no earlier run used.
fn unique_path(what: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    std::env::temp_dir().join(format!("baton-e2e-{what}-{}-{nanos}", std::process::id()))
}

/// A test's tenant: a world whose registration `mgmt` holds `kubeconfig`, readable by the
/// account that reads it (`deployer` when the Apply names it, else the namespace's `default`),
/// and a second namespace where nobody is granted anything.
struct Tenant {
    world: World,
    other: TestNamespace,
}

impl Tenant {
    async fn new(prefix: &str, kubeconfig: &str, reader: &str) -> Tenant {
        let world = World::new(prefix).await;
        let ns = world.ns.name.clone();
        let other = TestNamespace::create(&world.client, &format!("{prefix}-other")).await;
        put_secret(&world.client, &ns, REGISTRATION, &[("value", kubeconfig)]).await;
        allow_reading(&world.client, &ns, reader, &[REGISTRATION]).await;
        Tenant { world, other }
    }

    /// Runs an Apply `name` of one operation `app` putting ConfigMap `planted` into
    /// `namespace` of the registered cluster, as `account` (`None`: the kubeconfig's own
    /// identity there); returns the operation once it ended, however it ended.
    async fn run(&self, name: &str, namespace: &str, account: Option<&str>) -> Operation {
        let ns = self.world.ns.name.clone();
        let mut spec =
            spec(namespace, FailurePolicy::Halt, 1, vec![("app", config_map("planted"))]);
        spec.operations[0].target.cluster = Some(REGISTRATION.to_owned());
        spec.operations[0].timeout = "30s".to_owned();
        spec.service_account_name = account.map(str::to_owned);
        self.world.create(name, spec).await;
        let operations = self.world.operations();
        let object = format!("{name}-app");
        let log = self.world.operator.log.display().to_string();
        wait_for(&format!("operation `{object}` in `{ns}` to end (log: {log})"), PATIENCE, || {
            let operations = operations.clone();
            let object = object.clone();
            async move {
                let op = operations.get(&object).await.ok()?;
                op.status.as_ref()?.phase.is_terminal().then_some(op)
            }
        })
        .await
    }

    /// Asserts that `op` failed at dispatch, naming the registration and `field`, with nothing
    /// applied, and that ConfigMap `planted` is in neither namespace.
    async fn assert_refused(&self, op: &Operation, field: &str) {
        let status = op.status.clone().unwrap_or_default();
        let message = status.message.clone().unwrap_or_default();
        let ns = &self.world.ns.name;
        assert_eq!(
            (status.phase, status.reason.as_deref()),
            (OperationPhase::Failed, Some("DispatchFailed")),
            "`{message}` (operator log: {})",
            self.world.operator.log.display()
        );
        for piece in [
            format!("cluster `{REGISTRATION}`: Secret `{REGISTRATION}` in `{ns}`"),
            format!("uses `{field}`"),
            "credentials carried inline".to_owned(),
        ] {
            assert!(message.contains(&piece), "`{message}` does not contain `{piece}`");
        }
        assert!(status.inventory.is_empty(), "applied: {:?}", status.inventory);
        for namespace in [ns, &self.other.name] {
            let config_maps: Api<ConfigMap> = Api::namespaced(self.world.client.clone(), namespace);
            let planted = config_maps.get_opt("planted").await.expect("reading a ConfigMap");
            assert!(planted.is_none(), "ConfigMap `planted` was written into `{namespace}`");
        }
    }
}

#[tokio::test]
async fn an_exec_plugin_in_a_registration_is_never_run() {
    let Some(management) = management() else { return skipped() };
    let marker = unique_path("exec-marker");
    // A plugin that works: it prints the administrator's token as an ExecCredential, and leaves
    // a marker behind. In YAML's single quotes, `''` is one quote.
    let credential = format!(
        r#"{{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{{"token":"{}"}}}}"#,
        management.admin_token
    );
    let user = format!(
        "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/sh\n      args: [-c, 'touch {marker}; echo ''{credential}''']\n",
        marker = marker.display()
    );
    let tenant = Tenant::new("reg-exec", &registration(&management, &user), DEPLOYER).await;
    let op = tenant.run("exec", &tenant.world.ns.name, Some(DEPLOYER)).await;
    tenant.assert_refused(&op, "exec").await;
    assert!(!marker.exists(), "the operator ran the plugin: {} exists", marker.display());
}

#[tokio::test]
async fn a_token_file_in_a_registration_is_never_read() {
    let Some(management) = management() else { return skipped() };
    // A file only the operator's machine has, holding a cluster administrator's token (in a
    // pod: the operator's own service-account token).
    let token_file = unique_path("admin-token");
    std::fs::write(&token_file, &management.admin_token).expect("writing the token file");
    let user = format!("    tokenFile: {}\n", token_file.display());
    // The Apply names no service account: on the registered cluster the kubeconfig's identity
    // is used, so the file would carry the whole request. The namespace's `default` reads.
    let tenant = Tenant::new("reg-tokenfile", &registration(&management, &user), "default").await;
    let op = tenant.run("tokenfile", &tenant.other.name, None).await;
    let _ = std::fs::remove_file(&token_file);
    tenant.assert_refused(&op, "tokenFile").await;
}

#[tokio::test]
async fn impersonation_fields_in_a_registration_are_refused() {
    let Some(management) = management() else { return skipped() };
    // The administrator's token would do anyway; what is refused is the kubeconfig asking to
    // act as someone else (with a weaker token, a way to any identity it may impersonate).
    let user = format!(
        "    token: {}\n    as: baton-e2e-admin\n    as-groups: [system:masters]\n",
        management.admin_token
    );
    let tenant = Tenant::new("reg-as", &registration(&management, &user), "default").await;
    let op = tenant.run("as", &tenant.other.name, None).await;
    tenant.assert_refused(&op, "as").await;
}
