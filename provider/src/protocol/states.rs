//! Where a job and its payment stand.
//!
//! Job status codes follow Ocean's compute statuses (on the wire, `JobView.status` is the
//! number, `statusText` the text):
//!
//! | code | status |
//! |---|---|
//! | 1 | queued (also while waiting for `notBefore`) |
//! | 10 | configuring volumes |
//! | 20 | provisioning |
//! | 30 | data provisioning failed |
//! | 31 | algorithm provisioning failed |
//! | 40 | running |
//! | 60 | publishing results |
//! | 70 | finished (the algorithm exited 0) |
//! | 71 | algorithm failed (non-zero exit, trap, fuel, memory or time limit) |
//! | 72 | output quota exceeded |
//! | 80 | stopped on request |
//! | 81 | not started: the payment deadline had passed |
//! | 90 | error on the provider's side |
//! | 91 | quarantined: its worker process died on every attempt (`max_job_attempts`) |

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u32", try_from = "u32")]
pub enum JobStatus {
    /// 1: waiting for a slot (or for its `notBefore`).
    Queued,
    /// 10: claimed; its input datasets are being staged and hashed.
    ConfiguringVolumes,
    /// 20: its module is being compiled (or taken from the cache) and admitted.
    Provisioning,
    /// 30: its input datasets could not be staged.
    DataProvisioningFailed,
    /// 31: its algorithm could not be loaded.
    AlgorithmProvisioningFailed,
    /// 40: the algorithm runs.
    Running,
    /// 60: its outputs are being moved into place and hashed, the receipt signed.
    PublishingResults,
    /// 70: the algorithm exited 0.
    Finished,
    /// 71: non-zero exit, trap, or a fuel, memory or time limit.
    AlgorithmFailed,
    /// 72: the outputs exceeded their quota.
    QuotaExceeded,
    /// 80: stopped on request.
    Stopped,
    /// 81: not started, the payment deadline had passed.
    DeadlineMissed,
    /// 90: an error on the provider's side.
    Error,
    /// 91: its worker process died on every attempt.
    Quarantined,
}

impl JobStatus {
    /// The statuses of a job a worker holds.
    pub const ACTIVE: [JobStatus; 4] =
        [JobStatus::ConfiguringVolumes, JobStatus::Provisioning, JobStatus::Running, JobStatus::PublishingResults];

    /// Is this one of [`ACTIVE`](Self::ACTIVE)?
    pub fn is_active(self) -> bool {
        Self::ACTIVE.contains(&self)
    }

    /// The statuses a job ends in.
    pub const TERMINAL: [JobStatus; 9] = [
        JobStatus::DataProvisioningFailed,
        JobStatus::AlgorithmProvisioningFailed,
        JobStatus::Finished,
        JobStatus::AlgorithmFailed,
        JobStatus::QuotaExceeded,
        JobStatus::Stopped,
        JobStatus::DeadlineMissed,
        JobStatus::Error,
        JobStatus::Quarantined,
    ];

    /// The Ocean-style status code (see the module's table).
    pub fn code(self) -> u32 {
        match self {
            JobStatus::Queued => 1,
            JobStatus::ConfiguringVolumes => 10,
            JobStatus::Provisioning => 20,
            JobStatus::DataProvisioningFailed => 30,
            JobStatus::AlgorithmProvisioningFailed => 31,
            JobStatus::Running => 40,
            JobStatus::PublishingResults => 60,
            JobStatus::Finished => 70,
            JobStatus::AlgorithmFailed => 71,
            JobStatus::QuotaExceeded => 72,
            JobStatus::Stopped => 80,
            JobStatus::DeadlineMissed => 81,
            JobStatus::Error => 90,
            JobStatus::Quarantined => 91,
        }
    }

    /// The status in words, as `statusText` shows it.
    pub fn text(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::ConfiguringVolumes => "configuring volumes",
            JobStatus::Provisioning => "provisioning",
            JobStatus::DataProvisioningFailed => "data provisioning failed",
            JobStatus::AlgorithmProvisioningFailed => "algorithm provisioning failed",
            JobStatus::Running => "running",
            JobStatus::PublishingResults => "publishing results",
            JobStatus::Finished => "finished",
            JobStatus::AlgorithmFailed => "algorithm failed",
            JobStatus::QuotaExceeded => "output quota exceeded",
            JobStatus::Stopped => "stopped",
            JobStatus::DeadlineMissed => "not started: deadline passed",
            JobStatus::Error => "provider error",
            JobStatus::Quarantined => "quarantined: its worker kept crashing",
        }
    }

    /// The status with this code, if there is one.
    pub fn from_code(code: u32) -> Option<Self> {
        [JobStatus::Queued].into_iter().chain(Self::ACTIVE).chain(Self::TERMINAL).find(|s| s.code() == code)
    }

    /// Is this one of [`TERMINAL`](Self::TERMINAL)?
    pub fn is_terminal(self) -> bool {
        Self::TERMINAL.contains(&self)
    }
}

impl From<JobStatus> for u32 {
    fn from(s: JobStatus) -> u32 {
        s.code()
    }
}

/// A number that is no job status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not a job status code")]
pub struct UnknownStatus(pub u32);

impl TryFrom<u32> for JobStatus {
    type Error = UnknownStatus;

    fn try_from(code: u32) -> Result<Self, UnknownStatus> {
        Self::from_code(code).ok_or(UnknownStatus(code))
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

super::named::named_enum! {
    /// Where a job's payment stands.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum PaymentState("a payment state") {
        /// Not settled yet (the job has not ended, or settling is being retried).
        Pending = "pending",
        /// Released: the provider was paid for the fuel used, the rest returned.
        Released = "released",
        /// Refunded to the consumer after a missed deadline.
        Refunded = "refunded",
        /// Can no longer be released (e.g. the payment deadline passed before the job
        /// ended); the consumer takes it back with a refund.
        Unpaid = "unpaid",
    }
}

impl PaymentState {
    /// Settled one way or the other: nothing more will happen to the payment.
    pub fn is_settled(self) -> bool {
        self != PaymentState::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for s in [JobStatus::Queued].into_iter().chain(JobStatus::ACTIVE).chain(JobStatus::TERMINAL) {
            assert_eq!(JobStatus::from_code(s.code()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.code(), "a number on the wire");
        }
        assert_eq!(JobStatus::from_code(2), None);
        for &p in PaymentState::ALL {
            assert_eq!(p.as_str().parse::<PaymentState>(), Ok(p));
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        assert!(JobStatus::Finished.is_terminal() && !JobStatus::Running.is_terminal());
    }
}
