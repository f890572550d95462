//! baton: a Kubernetes operator that carries one change through an ordered list of targets.
//!
//! `crd` holds the API types and `lifecycle` the pure decision core. `controller` reads,
//! decides with `lifecycle` and writes; `engine` applies manifests and reads their health;
//! `lease` holds one Lease per active Apply. `plugin` and `dashboard` are `kubectl baton`: they
//! act as the user, never as the operator.

pub mod admin;
pub mod controller;
pub mod crd;
pub mod dashboard;
pub mod engine;
pub mod lease;
pub mod lifecycle;
pub mod metrics;
pub mod plugin;
pub mod telemetry;

/// Everything that can go wrong outside the pure core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A CRD could not be rendered as YAML.
    #[error("rendering the CRDs: {0}")]
    RenderCrds(#[from] serde_yaml_ng::Error),
    /// Writing output or binding a port failed.
    #[error("{path}: {source}")]
    Io {
        /// The file, stream or address.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A call to the API server failed (transient or not: the source says).
    #[error("{context}: {source}")]
    Kube {
        /// What baton was doing, naming the object.
        context: String,
        /// The client's error.
        source: kube::Error,
    },
    /// The apply lease could not be managed.
    #[error("lease {lease}: {message}")]
    Lease {
        /// The lease's name.
        lease: String,
        /// What went wrong.
        message: String,
    },
    /// The cluster configuration could not be loaded.
    #[error("loading the cluster configuration: {0}")]
    Config(String),
    /// What a user wrote conflicts with what exists: an Operation name already taken by
    /// another Apply, a dismissal with no error to dismiss. Retrying will not help until the
    /// user changes something.
    #[error("{0}")]
    Conflict(String),
    /// An object the user named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// An object read from the API server lacks something the API guarantees (a namespace, a
    /// uid) or contradicts itself.
    #[error("{0}")]
    Malformed(String),
}

impl Error {
    /// The API server refused an object as too large: retrying soon will not help.
    pub fn is_too_large(&self) -> bool {
        match self {
            Error::Kube { source: kube::Error::Api(status), .. } => {
                status.code == 413 || status.message.contains("request is too large")
            }
            _ => false,
        }
    }

    /// The API server found the object invalid: the same object will be refused again.
    pub fn is_invalid(&self) -> bool {
        matches!(self, Error::Kube { source: kube::Error::Api(status), .. } if status.code == 422)
    }

    /// The API server refused a new object because its namespace is being deleted: the Apply
    /// is going with it, and its deletion needs nothing new.
    pub fn is_namespace_terminating(&self) -> bool {
        match self {
            Error::Kube { source: kube::Error::Api(status), .. } => {
                status.code == 403 && status.message.contains("because it is being terminated")
            }
            _ => false,
        }
    }

    /// A stable label per variant for the `reconcile_errors` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::RenderCrds(_) => "render_crds",
            Error::Io { .. } => "io",
            Error::Kube { .. } => "kube",
            Error::Lease { .. } => "lease",
            Error::Config(_) => "config",
            Error::Conflict(_) => "conflict",
            Error::NotFound(_) => "not_found",
            Error::Malformed(_) => "malformed",
        }
    }
}

/// Result with baton's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
