//! The live state of running jobs, in memory: each one's cancellation flag, the stage it is in
//! and the latest progress its guest reported. Stages after the claim live here only: the
//! database says a job is active (claimed), which is all a restart needs, so a job's stages
//! cost no disk writes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tidepool_runtime::{GuestEvent, JobEvent, Stage};

use crate::protocol::api::ProgressView;
use crate::protocol::states::JobStatus;

/// The jobs being run now, by id.
#[derive(Debug, Default)]
pub(super) struct LiveJobs {
    jobs: Mutex<HashMap<String, Live>>,
}

#[derive(Debug)]
struct Live {
    cancel: Arc<AtomicBool>,
    stage: Option<Stage>,
    progress: Option<ProgressView>,
    /// Where stage changes go besides (cluster mode: to the shared database).
    stages: Option<tokio::sync::mpsc::UnboundedSender<JobStatus>>,
}

impl LiveJobs {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Live>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `id` live (before it is claimed, so that a stop request that finds it claimed
    /// always finds its flag); returns its cancellation flag.
    pub fn insert(&self, id: &str) -> Arc<AtomicBool> {
        let cancel = Arc::new(AtomicBool::new(false));
        self.lock().insert(id.to_string(), Live { cancel: cancel.clone(), stage: None, progress: None, stages: None });
        cancel
    }

    /// How many jobs are live.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Removes job `id` if it is still the run whose stop flag is `cancel` (not a later run
    /// of the same job, claimed again after this one put it back in the queue).
    pub fn remove_run(&self, id: &str, cancel: &Arc<AtomicBool>) {
        let mut live = self.lock();
        if live.get(id).is_some_and(|l| Arc::ptr_eq(&l.cancel, cancel)) {
            live.remove(id);
        }
    }

    /// Asks a live job to stop; false if it is not live.
    pub fn cancel(&self, id: &str) -> bool {
        self.lock().get(id).map(|l| l.cancel.store(true, Ordering::Relaxed)).is_some()
    }

    /// A running job's stage and progress (taken before its row is read: a job that ends in
    /// between then shows its final row, never an older stage than it had shown).
    pub fn snapshot(&self, id: &str) -> (Option<JobStatus>, Option<ProgressView>) {
        self.lock().get(id).map_or((None, None), |l| (l.stage.map(status), l.progress.clone()))
    }

    /// Sends job `id`'s stage changes to `stages` too.
    pub fn follow_stages(&self, id: &str, stages: tokio::sync::mpsc::UnboundedSender<JobStatus>) {
        if let Some(live) = self.lock().get_mut(id) {
            live.stages = Some(stages);
        }
    }

    /// Records what the runtime reports of job `id`.
    pub fn record(&self, id: &str, event: JobEvent) {
        let mut jobs = self.lock();
        let Some(live) = jobs.get_mut(id) else { return };
        match event {
            JobEvent::Stage(stage) => {
                // Stages only move forward: one reported again or out of order (a worker
                // process is a stream of reports the supervisor does not trust) changes nothing
                // and sends nothing, so a job sends at most one update per stage.
                if live.stage.is_some_and(|seen| stage <= seen) {
                    return;
                }
                if let Some(stages) = &live.stages {
                    let _ = stages.send(status(stage));
                }
                live.stage = Some(stage);
            }
            JobEvent::Guest(GuestEvent::Progress { done, total, message }) => {
                live.progress = Some(ProgressView { done, total, message })
            }
            JobEvent::Guest(GuestEvent::Metric { .. }) => {}
        }
    }
}

/// The job status a runtime stage shows as.
fn status(stage: Stage) -> JobStatus {
    match stage {
        Stage::ConfiguringVolumes => JobStatus::ConfiguringVolumes,
        Stage::Provisioning => JobStatus::Provisioning,
        Stage::Running => JobStatus::Running,
        Stage::PublishingResults => JobStatus::PublishingResults,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_removes_only_its_own_entry_not_a_later_runs() {
        let live = LiveJobs::default();
        let first = live.insert("j");
        // The job crashed, went back to the queue, and was claimed again.
        let second = live.insert("j");
        live.remove_run("j", &first);
        assert_eq!(live.count(), 1, "the second run is still live");
        assert!(live.cancel("j"));
        assert!(second.load(Ordering::Relaxed) && !first.load(Ordering::Relaxed), "a stop reaches the second run");
        live.remove_run("j", &second);
        assert_eq!(live.count(), 0);
    }

    #[test]
    fn stages_only_move_forward_and_each_is_sent_once() {
        let live = LiveJobs::default();
        live.insert("j");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        live.follow_stages("j", tx);
        let flood = [Stage::ConfiguringVolumes, Stage::Running, Stage::Provisioning, Stage::Running];
        for stage in flood.into_iter().cycle().take(10_000) {
            live.record("j", JobEvent::Stage(stage));
        }
        live.record("j", JobEvent::Stage(Stage::PublishingResults));
        let mut sent = Vec::new();
        while let Ok(stage) = rx.try_recv() {
            sent.push(stage);
        }
        assert_eq!(sent, [JobStatus::ConfiguringVolumes, JobStatus::Running, JobStatus::PublishingResults]);
        assert_eq!(live.snapshot("j").0, Some(JobStatus::PublishingResults));
    }
}
