//! The runtime's error type: everything that stops a job from *running*.
//!
//! What happens *inside* a job that ran (a trap, running out of fuel, the output quota) is not
//! an error but an [`Outcome`](crate::receipt::Outcome), recorded in the receipt.

use std::path::PathBuf;

/// Why a job could not run (or could not finish being recorded).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The module (or an environment algorithm's files) is over
    /// [`Limits::module_bytes`](crate::Limits::module_bytes).
    #[error("the module is {size} bytes, over the module size limit of {limit} bytes")]
    ModuleTooLarge {
        /// Its size, in bytes.
        size: u64,
        /// The limit, in bytes.
        limit: u64,
    },

    /// The module is not one the sandbox runs: malformed, a component, a proposal the engine
    /// does not enable, no `_start` or `memory` export...
    #[error("invalid module: {reason}")]
    InvalidModule {
        /// Why, in words (the validator's reason when it has one).
        reason: String,
    },

    /// The module imports something other than a `wasi_snapshot_preview1` function.
    #[error(
        "the module imports `{module}::{name}`, which the sandbox does not provide \
         (only `wasi_snapshot_preview1` functions are available; build for wasm32-wasip1)"
    )]
    ForbiddenImport {
        /// The import's module.
        module: String,
        /// The import's name.
        name: String,
    },

    /// An input dataset cannot be mounted: a bad or repeated name, or a directory that cannot
    /// be read or hashed.
    #[error("input `{name}`: {reason}")]
    InvalidInput {
        /// The dataset's name.
        name: String,
        /// Why, in words.
        reason: String,
    },

    /// The output directory cannot be created, or is not empty.
    #[error("output directory {}: {reason}", path.display())]
    InvalidOutput {
        /// The directory.
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },

    /// The limits cannot be run under (see [`Limits::validate`](crate::Limits::validate)).
    #[error("invalid limits: {reason}")]
    InvalidLimits {
        /// Which limit, and its allowed range.
        reason: String,
    },

    /// The job's algorithm name or arguments cannot be used.
    #[error("invalid job: {reason}")]
    InvalidJob {
        /// Why, in words.
        reason: String,
    },

    /// An environment algorithm's files are not what its environment accepts.
    #[error("invalid algorithm: {reason}")]
    InvalidAlgorithm {
        /// Why, in words.
        reason: String,
    },

    /// No environment of that name is offered.
    #[error("unknown environment `{name}`: {}", offered_list(offered, dir.as_deref()))]
    UnknownEnvironment {
        /// The name asked for.
        name: String,
        /// The names of the environments offered.
        offered: Vec<String>,
        /// The directory they were loaded from, if any.
        dir: Option<PathBuf>,
    },

    /// The environment cannot be loaded: its definition is invalid, or its module or mounts
    /// are missing or do not match their pins.
    #[error("the environment `{name}` cannot be used: {reason}")]
    EnvironmentUnavailable {
        /// The environment's name.
        name: String,
        /// Why, in words.
        reason: String,
    },

    /// wasmtime failed for a reason that is not the guest's (or a host function failed).
    #[error("the execution engine failed: {reason}")]
    Engine {
        /// wasmtime's error, with its causes.
        reason: String,
    },

    /// A host file operation failed.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
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
