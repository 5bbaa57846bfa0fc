//! Tidepool's second sandbox. wasmtime is the first: a guest cannot leave its linear memory or
//! call anything but our WASI. This crate assumes that wall has fallen and keeps what a job
//! could then reach to that job alone: each job runs in a worker process of its own
//! ([`parent`] starts and follows it, [`child`] is the worker) which, before it reads anything
//! of the job, confines itself ([`confine`]): its descriptors closed, rlimits, no new
//! privileges, Landlock on the filesystem (only the job's own directories read-write, its
//! inputs and the compile cache read-only; never the provider's key, database or other jobs),
//! and a seccomp filter (no sockets, no new processes, no `ptrace`...). A stop request and the
//! wall-clock limit end it; past the limit it is killed. Workers are forked from a template
//! ([`template`]) that has made the engine, so a job does not pay for a process start and an
//! engine each time; a worker is started from scratch when there is no template.
//!
//! The protocol between the two is in [`protocol`]: JSON lines over the worker's stdin and
//! stdout.

#![warn(missing_docs)]

pub mod child;
pub mod confine;
mod fdpass;
pub mod parent;
mod process;
pub mod protocol;
pub mod template;

pub use confine::{ConfineError, Confined, Policy, confine};
pub use parent::{Ended, Pool, Report, Running, WorkerCommand};
pub use protocol::{FailureKind, JobDone, JobRequest, WireInput, WireStage};
pub use template::TemplateConfig;
