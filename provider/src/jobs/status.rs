//! Job status codes (Ocean's compute statuses, extended; see the module above).

/// Where a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobStatus {
    Queued,
    ConfiguringVolumes,
    Provisioning,
    DataProvisioningFailed,
    AlgorithmProvisioningFailed,
    Running,
    PublishingResults,
    Finished,
    AlgorithmFailed,
    QuotaExceeded,
    Stopped,
    DeadlineMissed,
    Error,
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
    pub const TERMINAL: [JobStatus; 8] = [
        JobStatus::DataProvisioningFailed,
        JobStatus::AlgorithmProvisioningFailed,
        JobStatus::Finished,
        JobStatus::AlgorithmFailed,
        JobStatus::QuotaExceeded,
        JobStatus::Stopped,
        JobStatus::DeadlineMissed,
        JobStatus::Error,
    ];

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
        }
    }

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
        }
    }

    pub fn from_code(code: u32) -> Self {
        [JobStatus::Queued, JobStatus::Running]
            .into_iter()
            .chain(Self::ACTIVE)
            .chain(Self::TERMINAL)
            .find(|s| s.code() == code)
            .unwrap_or(JobStatus::Error)
    }

    pub fn is_terminal(self) -> bool {
        Self::TERMINAL.contains(&self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for s in [JobStatus::Queued].into_iter().chain(JobStatus::ACTIVE).chain(JobStatus::TERMINAL) {
            assert_eq!(JobStatus::from_code(s.code()), s);
        }
        assert!(JobStatus::Finished.is_terminal() && !JobStatus::Running.is_terminal());
    }
}
