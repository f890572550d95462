//! Registrations' kubeconfigs, refused and accepted; the client caches' bounds.

use super::*;

#[tokio::test]
async fn a_kubeconfig_that_does_not_parse_names_the_cluster_and_the_secret() {
    let unusable = config_from("clusters: [", "shop", "eu", None).await.err();
    let message = unusable.map(|u| u.message).unwrap_or_default();
    assert!(
        message.starts_with("cluster `eu`: Secret `eu` in `shop`: the kubeconfig does not parse"),
        "{message}"
    );
}

#[tokio::test]
async fn a_named_service_account_is_impersonated_on_the_registered_cluster() {
    let kubeconfig = r#"
apiVersion: v1
kind: Config
clusters: [{name: eu, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: baton, user: {token: t0k3n}}]
contexts: [{name: eu, context: {cluster: eu, user: baton}}]
current-context: eu
"#;
    let config = config_from(kubeconfig, "shop", "eu", Some("deployer")).await;
    let config = config.map_err(|u| u.message).expect("a usable kubeconfig");
    assert_eq!(
        config.auth_info.impersonate.as_deref(),
        Some("system:serviceaccount:shop:deployer")
    );
    assert_eq!(config.connect_timeout, Some(CONNECT_TIMEOUT), "an unreachable cluster fails fast");
    let plain = config_from(kubeconfig, "shop", "eu", None).await.map_err(|u| u.message);
    assert_eq!(plain.expect("usable").auth_info.impersonate, None);
}

/// A kubeconfig with one cluster `eu`, one user `admin` and a context on them; `cluster`
/// and `user` are the entries' fields (YAML flow mappings without braces).
fn kubeconfig(cluster: &str, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\n\
         clusters: [{{name: eu, cluster: {{server: \"https://127.0.0.1:6443\", {cluster}}}}}]\n\
         users: [{{name: admin, user: {{{user}}}}}]\n\
         contexts: [{{name: eu, context: {{cluster: eu, user: admin}}}}]\n\
         current-context: eu\n"
    )
}

/// A self-signed certificate (`CN=baton-test`), base64 as a kubeconfig carries it: the CA
/// and the client certificate of the accepted rows.
const CERTIFICATE_DATA: &str = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJnakNDQVNlZ0F3SUJBZ0lVY0FnWjNBakYxek8rUUNYcEpHK0tEYzMzSnpNd0NnWUlLb1pJemowRUF3SXcKRlRFVE1CRUdBMVVFQXd3S1ltRjBiMjR0ZEdWemREQWdGdzB5TmpFeU1EVXdPRFEzTVROYUdBOHlNVEkyTVRFeApNVEE0TkRjeE0xb3dGVEVUTUJFR0ExVUVBd3dLWW1GMGIyNHRkR1Z6ZERCWk1CTUdCeXFHU000OUFnRUdDQ3FHClNNNDlBd0VIQTBJQUJQTWRQY1N2MTVlQ3FyYXhUQmlzYVhzNk9tcDNubTZKTHM5V2pZSUhuNHdTRzl2WWlFSFQKQWgzd1JsTHBXRExFczVFMjlJNnNjTGJhMjhCRjFvSmNwV2lqVXpCUk1CMEdBMVVkRGdRV0JCUlN3SkN5Z21maQp5RzJKTTZBdWFqamF0NTQ0WXpBZkJnTlZIU01FR0RBV2dCUlN3SkN5Z21maXlHMkpNNkF1YWpqYXQ1NDRZekFQCkJnTlZIUk1CQWY4RUJUQURBUUgvTUFvR0NDcUdTTTQ5QkFNQ0Ewa0FNRVlDSVFEM2hiL0FRa1lvSTJHZjlueGoKUytwN0szME15dU11c292U1ExRlBwL2xNVUFJaEFQcXMwZFZJdTI2amRqcHFJL24vbG1VRzR2WlJaRmtIM2dycgpYNXEwN1owZgotLS0tLUVORCBDRVJUSUZJQ0FURS0tLS0tCg==";
/// The throwaway key of [`CERTIFICATE_DATA`] (PKCS#8, P-256), base64.
const KEY_DATA: &str = "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCk1JR0hBZ0VBTUJNR0J5cUdTTTQ5QWdFR0NDcUdTTTQ5QXdFSEJHMHdhd0lCQVFRZ1dNTk5adnpQQXo1K2tHdm8KQzI0UlAyT290ZnBWUGJtWlRWMFlPRWl0cHhDaFJBTkNBQVR6SFQzRXI5ZVhncXEyc1V3WXJHbDdPanBxZDU1dQppUzdQVm8yQ0I1K01FaHZiMkloQjB3SWQ4RVpTNlZneXhMT1JOdlNPckhDMjJ0dkFSZGFDWEtWbwotLS0tLUVORCBQUklWQVRFIEtFWS0tLS0tCg==";

#[tokio::test]
async fn every_field_that_runs_reads_or_impersonates_is_refused_by_name() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let marker =
        std::env::temp_dir().join(format!("baton-exec-marker-{}-{nanos}", std::process::id()));
    let marker_path = marker.display().to_string();
    // A plugin that would work: it leaves the marker and prints a credential. In YAML's
    // single quotes, `''` is one quote.
    let credential = r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"t"}}"#;
    let exec = format!(
        "exec: {{apiVersion: client.authentication.k8s.io/v1, command: /bin/sh, \
         args: [-c, 'touch {marker_path}; echo ''{credential}''']}}"
    );
    // (the entry and field the message must name, cluster fields, user fields)
    let rows: Vec<(&str, &str, String)> = vec![
        ("user `admin` uses `exec`", "", exec),
        (
            "user `admin` uses `auth-provider`",
            "",
            "auth-provider: {name: oidc, config: {id-token: t}}".into(),
        ),
        (
            "user `admin` uses `tokenFile`",
            "",
            "tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token".into(),
        ),
        (
            "user `admin` uses `client-certificate`",
            "",
            format!("client-certificate: /etc/baton/tls.crt, client-key-data: {KEY_DATA}"),
        ),
        (
            "user `admin` uses `client-key`",
            "",
            format!("client-certificate-data: {CERTIFICATE_DATA}, client-key: /etc/baton/tls.key"),
        ),
        ("user `admin` uses `as`", "", "token: t, as: system:admin".into()),
        ("user `admin` uses `as-uid`", "", "token: t, as-uid: \"0\"".into()),
        ("user `admin` uses `as-groups`", "", "token: t, as-groups: [system:masters]".into()),
        (
            "user `admin` uses `as-user-extra`",
            "",
            "token: t, as-user-extra: {scopes: [all]}".into(),
        ),
        ("user `admin` uses `username`", "", "username: admin, password: secret".into()),
        ("user `admin` uses `password`", "", "token: t, password: secret".into()),
        (
            "cluster `eu` uses `certificate-authority`",
            "certificate-authority: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
            "token: t".into(),
        ),
        ("cluster `eu` uses `proxy-url`", "proxy-url: \"http://10.0.0.1:3128\"", "token: t".into()),
    ];
    for (named, cluster, user) in &rows {
        let text = kubeconfig(cluster, user);
        let refused = clients_from(&text, "shop", "eu", Some("deployer")).await.err();
        assert!(!marker.exists(), "{named}: the exec plugin ran: {marker_path} exists");
        let message = refused.as_ref().map(|u| u.message.clone()).unwrap_or_default();
        let expected = format!("cluster `eu`: Secret `eu` in `shop`: kubeconfig {named}: ");
        assert!(message.starts_with(&expected), "{named}: refused with `{message}`");
        assert_eq!(refused.map(|u| u.transient), Some(false), "{named}: a permanent refusal");
    }

    // An entry the current context does not use is refused all the same.
    let unused = format!(
        "{}users: [{{name: admin, user: {{token: t}}}}, {{name: other, user: {{tokenFile: /etc/passwd}}}}]\n",
        kubeconfig("", "token: t").replace("users: [{name: admin, user: {token: t}}]\n", "")
    );
    let message = config_from(&unused, "shop", "eu", None).await.err().map(|u| u.message);
    assert!(
        message.as_deref().is_some_and(|m| m.contains("kubeconfig user `other` uses `tokenFile`")),
        "{message:?}"
    );
}

#[tokio::test]
async fn inline_credentials_are_accepted_and_nothing_else_reaches_the_client() {
    let rows = [
        ("a token with the system roots", kubeconfig("", "token: t0k3n")),
        (
            "a client certificate and key with an inline CA",
            kubeconfig(
                &format!(
                    "certificate-authority-data: {CERTIFICATE_DATA}, tls-server-name: eu.example"
                ),
                &format!(
                    "client-certificate-data: {CERTIFICATE_DATA}, client-key-data: {KEY_DATA}"
                ),
            ),
        ),
        (
            "a token with an inline CA and extensions",
            kubeconfig(
                &format!(
                    "certificate-authority-data: {CERTIFICATE_DATA}, extensions: [{{name: \
                     client.authentication.k8s.io/exec, extension: {{audience: x}}}}]"
                ),
                "token: t0k3n, extensions: [{name: x, extension: {y: z}}]",
            ),
        ),
    ];
    for (what, text) in &rows {
        let config = config_from(text, "shop", "eu", None).await.map_err(|u| u.message);
        let config = config.unwrap_or_else(|message| panic!("{what}: refused: {message}"));
        let user = &config.auth_info;
        assert!(
            user.exec.is_none()
                && user.auth_provider.is_none()
                && user.token_file.is_none()
                && user.extensions.is_none()
                && user.impersonate.is_none(),
            "{what}: {user:?}"
        );
        assert!(config.root_cert_file.is_none() && config.proxy_url.is_none(), "{what}");
        assert!(
            clients_from(text, "shop", "eu", None).await.is_ok(),
            "{what}: no client was built"
        );
    }
}

#[test]
fn an_entry_unused_for_the_idle_bound_is_dropped() {
    let start = Instant::now();
    let minute = Duration::from_secs(60);
    let mut cache: Recent<&str, u32> = Recent::new(10 * minute, 100);
    cache.insert("kept", 1, start);
    cache.insert("idle", 2, start);
    // "kept" is used every minute, "idle" never again.
    for m in 1..=15 {
        assert_eq!(cache.get(&"kept", start + m * minute), Some(&1), "minute {m}");
    }
    assert_eq!(cache.get(&"idle", start + 15 * minute), None);
    assert_eq!(cache.len(), 1);
    // Not used for ten minutes, it goes too.
    assert_eq!(cache.get(&"kept", start + 25 * minute), None);
    assert!(cache.is_empty());

    // Between two sweeps, an entry that just reached the bound is not handed out.
    cache.insert("late", 3, start + 30 * minute);
    cache.insert("other", 4, start + 39 * minute + 30 * Duration::from_secs(1));
    assert_eq!(cache.get(&"late", start + 40 * minute), None);
}

#[test]
fn a_full_cache_drops_the_least_recently_used() {
    let start = Instant::now();
    let second = Duration::from_secs(1);
    let mut cache: Recent<u32, u32> = Recent::new(CLIENT_IDLE, 3);
    for key in 0..3 {
        cache.insert(key, key, start + key * second);
    }
    // 0 is the oldest insert, but used since: 1 is the least recently used.
    assert_eq!(cache.get(&0, start + 5 * second), Some(&0));
    cache.insert(3, 3, start + 6 * second);
    assert_eq!(cache.len(), 3);
    assert_eq!(cache.get(&1, start + 7 * second), None);
    for key in [0, 2, 3] {
        assert_eq!(cache.get(&key, start + 7 * second), Some(&key));
    }
    // Replacing an entry makes no room.
    cache.insert(3, 30, start + 8 * second);
    assert_eq!((cache.len(), cache.get(&3, start + 8 * second)), (3, Some(&30)));
}
