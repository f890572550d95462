//! What a registration's kubeconfig may carry: credentials inline, nothing that runs a
//! program, reads a file, assumes another identity or routes traffic (see the parent module's
//! header). The check names the first refused field; the copy keeps only what is allowed.

use super::*;

/// What every refused credential field of a kubeconfig is told.
pub(super) const INLINE_ONLY: &str = "baton uses only credentials carried inline (`token`, or \
     `client-certificate-data` and `client-key-data`); exec plugins, auth providers, file \
     references and impersonation fields are refused";

/// The first field of `kubeconfig` that a registration may not carry, as a reason naming the
/// entry and the field. Basic authentication (`username`, `password`) is refused too: the
/// specification accepts a bearer token or a client certificate, and Kubernetes dropped basic
/// authentication in 1.19. `insecure-skip-tls-verify` and `tls-server-name` are accepted: they
/// weaken or name only the tenant's own connection.
pub(super) fn refused_field(kubeconfig: &Kubeconfig) -> Option<String> {
    for named in &kubeconfig.auth_infos {
        let Some(user) = &named.auth_info else { continue };
        let refused = [
            ("exec", user.exec.is_some()),
            ("auth-provider", user.auth_provider.is_some()),
            ("tokenFile", user.token_file.is_some()),
            ("client-certificate", user.client_certificate.is_some()),
            ("client-key", user.client_key.is_some()),
            ("as", user.impersonate.is_some()),
            ("as-uid", user.impersonate_uid.is_some()),
            ("as-groups", user.impersonate_groups.is_some()),
            ("as-user-extra", user.impersonate_user_extra.is_some()),
        ];
        if let Some((field, _)) = refused.iter().find(|(_, present)| *present) {
            return Some(format!("kubeconfig user `{}` uses `{field}`: {INLINE_ONLY}", named.name));
        }
        let basic = [("username", user.username.is_some()), ("password", user.password.is_some())];
        if let Some((field, _)) = basic.iter().find(|(_, present)| *present) {
            return Some(format!(
                "kubeconfig user `{}` uses `{field}`: basic authentication is refused; baton uses \
                 only a bearer `token`, or `client-certificate-data` and `client-key-data`",
                named.name
            ));
        }
    }
    for named in &kubeconfig.clusters {
        let Some(cluster) = &named.cluster else { continue };
        if cluster.certificate_authority.is_some() {
            return Some(format!(
                "kubeconfig cluster `{}` uses `certificate-authority`: baton trusts only a CA \
                 carried inline (`certificate-authority-data`) or the system roots; file \
                 references are refused",
                named.name
            ));
        }
        if cluster.proxy_url.is_some() {
            return Some(format!(
                "kubeconfig cluster `{}` uses `proxy-url`: baton connects to a registered cluster \
                 directly; a proxy named by the kubeconfig would route the operator's traffic",
                named.name
            ));
        }
    }
    None
}

/// A copy of `kubeconfig` with only what a registration may use: for each cluster its server,
/// inline CA, TLS server name and the two connection switches; for each user its inline token,
/// client certificate and key; the contexts' cluster, user and namespace. Everything else
/// (plugins, file references, extensions, fields kube does not model) is left behind, so kube's
/// loader has nothing to run or read even if [`refused_field`] missed a field.
pub(super) fn inline_only(kubeconfig: Kubeconfig) -> Kubeconfig {
    let clusters = kubeconfig
        .clusters
        .into_iter()
        .map(|named| NamedCluster {
            name: named.name,
            cluster: named.cluster.map(|cluster| Cluster {
                server: cluster.server,
                insecure_skip_tls_verify: cluster.insecure_skip_tls_verify,
                certificate_authority_data: cluster.certificate_authority_data,
                disable_compression: cluster.disable_compression,
                tls_server_name: cluster.tls_server_name,
                ..Cluster::default()
            }),
            ..NamedCluster::default()
        })
        .collect();
    let auth_infos = kubeconfig
        .auth_infos
        .into_iter()
        .map(|named| NamedAuthInfo {
            name: named.name,
            auth_info: named.auth_info.map(|user| AuthInfo {
                token: user.token,
                client_certificate_data: user.client_certificate_data,
                client_key_data: user.client_key_data,
                ..AuthInfo::default()
            }),
            ..NamedAuthInfo::default()
        })
        .collect();
    let contexts = kubeconfig
        .contexts
        .into_iter()
        .map(|named| NamedContext {
            name: named.name,
            context: named.context.map(|context| Context {
                cluster: context.cluster,
                user: context.user,
                namespace: context.namespace,
                ..Context::default()
            }),
            ..NamedContext::default()
        })
        .collect();
    Kubeconfig {
        clusters,
        auth_infos,
        contexts,
        current_context: kubeconfig.current_context,
        ..Kubeconfig::default()
    }
}
