//! The runtime's error type: everything that stops a job from *running*.
//!
//! What happens *inside* a job that ran (a trap, running out of fuel, the output quota) is not
//! an error but an [`Outcome`](crate::receipt::Outcome), recorded in the receipt.

use std::path::PathBuf;

/// Why a job could not run (or could not finish being recorded).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("the module is {size} bytes, over the module size limit of {limit} bytes")]
    ModuleTooLarge { size: u64, limit: u64 },

    #[error("invalid module: {reason}")]
    InvalidModule { reason: String },

    #[error(
        "the module imports `{module}::{name}`, which the sandbox does not provide \
         (only `wasi_snapshot_preview1` functions are available; build for wasm32-wasip1)"
    )]
    ForbiddenImport { module: String, name: String },

    #[error("input `{name}`: {reason}")]
    InvalidInput { name: String, reason: String },

    #[error("output directory {}: {reason}", path.display())]
    InvalidOutput { path: PathBuf, reason: String },

    #[error("invalid limits: {reason}")]
    InvalidLimits { reason: String },

    #[error("invalid job: {reason}")]
    InvalidJob { reason: String },

    #[error("invalid algorithm: {reason}")]
    InvalidAlgorithm { reason: String },

    #[error("unknown environment `{name}`: {}", offered_list(offered, dir.as_deref()))]
    UnknownEnvironment { name: String, offered: Vec<String>, dir: Option<PathBuf> },

    #[error("the environment `{name}` cannot be used: {reason}")]
    EnvironmentUnavailable { name: String, reason: String },

    #[error("the execution engine failed: {reason}")]
    Engine { reason: String },

    #[error("I/O error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    pub(crate) fn engine(e: impl std::fmt::Display) -> Error {
        Error::Engine { reason: format!("{e:#}") }
    }

    /// True when the job could not run because of what was submitted (module, inputs,
    /// limits), as opposed to a failure of the host.
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Error::ModuleTooLarge { .. }
                | Error::InvalidModule { .. }
                | Error::ForbiddenImport { .. }
                | Error::InvalidInput { .. }
                | Error::InvalidOutput { .. }
                | Error::InvalidLimits { .. }
                | Error::InvalidJob { .. }
                | Error::InvalidAlgorithm { .. }
                | Error::UnknownEnvironment { .. }
        )
    }
}

fn offered_list(offered: &[String], dir: Option<&std::path::Path>) -> String {
    let from = dir.map(|d| format!(" (from {})", d.display())).unwrap_or_default();
    if offered.is_empty() {
        format!("none is installed{from}; run scripts/setup.sh to install the Python environment")
    } else {
        format!("the environments offered are {}{from}", offered.join(", "))
    }
}

/// `Result` with the runtime's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
