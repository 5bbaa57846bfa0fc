//! The jobs' metrics: how many jobs are in each status and due in the queue (read from the
//! `jobs` table when scraped), and the durations and fuel of the jobs that ran.

use crate::metrics::{self, Histogram};
use crate::protocol::signing::unix_now;

use super::{JobResult, Jobs};

/// Job durations, in seconds.
const DURATION_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];
/// Fuel used by a job.
const FUEL_BUCKETS: &[f64] = &[1e6, 1e7, 1e8, 1e9, 1e10, 5e10, 1e11, 1e12];

/// Histograms of the jobs that ran.
#[derive(Debug)]
pub(super) struct JobMetrics {
    pub duration: Histogram,
    pub fuel: Histogram,
}

impl Default for JobMetrics {
    fn default() -> Self {
        Self { duration: Histogram::new(DURATION_BUCKETS), fuel: Histogram::new(FUEL_BUCKETS) }
    }
}

impl Jobs {
    /// Writes the jobs' metrics in the Prometheus text format.
    pub async fn render_metrics(&self, out: &mut String) -> JobResult<()> {
        let (counts, due) = self.store.status_counts(unix_now()).await?;
        metrics::header(out, "tidepool_jobs", "Jobs, by status", "gauge");
        for (status, n) in counts {
            let code = status.code().to_string();
            metrics::sample(out, "tidepool_jobs", &[("status", status.text()), ("code", &code)], n);
        }
        metrics::header(out, "tidepool_job_queue_depth", "Queued jobs that are due (waiting for a slot)", "gauge");
        metrics::sample(out, "tidepool_job_queue_depth", &[], due);
        metrics::header(out, "tidepool_jobs_running", "Jobs being run by this daemon now", "gauge");
        metrics::sample(out, "tidepool_jobs_running", &[], self.live.count());
        self.metrics.duration.render(out, "tidepool_job_duration_seconds", "Wall time of the jobs that ran");
        self.metrics.fuel.render(out, "tidepool_job_fuel", "Fuel used by the jobs that ran");
        Ok(())
    }
}
