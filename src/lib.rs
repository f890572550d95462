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

/// Where an API call was made: the step of a reconcile (the `step` label of
/// `baton_reconcile_errors_total`), or the client outside any reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Reading an Apply's Operations.
    Read,
    /// Taking, renewing or releasing the apply lease.
    Lease,
    /// Reading or writing the idempotency key.
    Key,
    /// Creating Operations and writing their statuses.
    Write,
    /// Writing the Apply's status.
    Status,
    /// Adding or removing the finalizer.
    Finalizer,
    /// The plugin's, the dashboard's or the operator's own client, outside a reconcile.
    Client,
}

impl Step {
    /// The stable metric label.
    pub fn label(self) -> &'static str {
        match self {
            Step::Read => "read",
            Step::Lease => "lease",
            Step::Key => "key",
            Step::Write => "write",
            Step::Status => "status",
            Step::Finalizer => "finalizer",
            Step::Client => "client",
        }
    }
}

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
        /// The step it was made in.
        step: Step,
        /// What baton was doing, naming the object.
        context: String,
        /// The client's error.
        source: kube::Error,
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

    /// Whether the same input will give this error again (an object too large or invalid, a
    /// user's conflict, a malformed object): retrying soon cannot help, a change can.
    pub fn is_lasting(&self) -> bool {
        self.is_too_large()
            || self.is_invalid()
            || matches!(self, Error::Conflict(_) | Error::Malformed(_))
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

    /// A stable label per kind of error for the `reconcile_errors` metric: for an API call, what
    /// the API server (or the connection to it) said.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::RenderCrds(_) => "render_crds",
            Error::Io { .. } => "io",
            Error::Kube { source: kube::Error::Api(status), .. } => match status.code {
                403 => "forbidden",
                404 => "not_found",
                409 => "conflict",
                413 => "too_large",
                422 => "invalid",
                408 | 429 | 500..=599 => "unavailable",
                _ => "refused",
            },
            Error::Kube { .. } => "transport",
            Error::Config(_) => "config",
            Error::Conflict(_) => "conflict",
            Error::NotFound(_) => "not_found",
            Error::Malformed(_) => "malformed",
        }
    }

    /// The step the error happened in, as a stable metric label: what a user's conflict or a
    /// malformed object was met in is where such errors are made (the Operations' writes).
    pub fn step_label(&self) -> &'static str {
        match self {
            Error::Kube { step, .. } => step.label(),
            Error::Conflict(_) | Error::Malformed(_) | Error::NotFound(_) => Step::Write.label(),
            Error::RenderCrds(_) | Error::Io { .. } | Error::Config(_) => Step::Client.label(),
        }
    }
}

/// Result with baton's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
