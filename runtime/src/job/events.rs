//! What a job reports while it runs: its stages, and the structured events a guest writes on
//! stderr.

use std::sync::Arc;

use serde::Deserialize;

/// Lines of stderr starting with this are structured guest events (see [`GuestEvent`]).
pub const EVENT_PREFIX: &str = "@tidepool ";

/// A structured event a guest reported on stderr (see the guest SDK).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum GuestEvent {
    /// `done` of `total` units of work (total unknown when absent).
    Progress {
        /// Units of work done so far.
        done: u64,
        /// Units of work in all, when the guest knows.
        total: Option<u64>,
        /// What the guest is doing, in its own words.
        message: Option<String>,
    },
    /// A named measurement.
    Metric {
        /// The measurement's name, chosen by the guest.
        name: String,
        /// Its value (units are the guest's).
        value: f64,
    },
}

impl GuestEvent {
    /// Parses one stderr line; `None` when it is not an event.
    pub fn parse(line: &[u8]) -> Option<Self> {
        let rest = line.strip_prefix(EVENT_PREFIX.as_bytes())?;
        serde_json::from_slice(rest).ok()
    }
}

/// The phases of a job, in the order a job goes through them (named after Ocean's compute
/// statuses); the order of the variants is that order (`Ord`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Scanning and hashing the input datasets.
    ConfiguringVolumes,
    /// Compiling (or fetching from the cache) and admitting the module.
    Provisioning,
    /// The guest is running.
    Running,
    /// Moving outputs into place and hashing them.
    PublishingResults,
}

/// Something that happened during a job.
#[derive(Clone, Debug, PartialEq)]
pub enum JobEvent {
    /// The job entered a stage.
    Stage(Stage),
    /// The guest reported an event on stderr.
    Guest(GuestEvent),
}

/// Receives job events as they happen, on the job's thread.
pub type EventSink = Arc<dyn Fn(JobEvent) + Send + Sync>;
