//! baton: a Kubernetes operator that carries one change through an ordered list of targets.
//!
//! `crd` holds the API types, `lifecycle` the pure decision core. The reconcilers that read,
//! decide with `lifecycle` and write come in `controller`.

pub mod crd;
pub mod lifecycle;

/// Everything that can go wrong outside the pure core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A CRD could not be rendered as YAML.
    #[error("rendering the CRDs: {0}")]
    RenderCrds(#[from] serde_yaml_ng::Error),
    /// Writing output failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file or stream being written.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Result with baton's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
