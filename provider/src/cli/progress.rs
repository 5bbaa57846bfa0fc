//! Live progress on stderr while a job runs: the job's stages, and the guest's own progress
//! events (a bar on a terminal, a line every few seconds otherwise).

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidepool_runtime::{EventSink, GuestEvent, JobEvent, Stage};

/// How often a non-terminal gets a progress line.
const LINE_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct Progress {
    enabled: bool,
    tty: bool,
    started: Instant,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last_draw: Option<Instant>,
    drawn: bool,
    metrics: Vec<(String, f64)>,
}

impl Progress {
    pub fn new(enabled: bool) -> Arc<Self> {
        Arc::new(Self {
            enabled,
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
            state: Mutex::new(State::default()),
        })
    }

    /// The sink to give the runtime.
    pub fn sink(self: &Arc<Self>) -> EventSink {
        let me = self.clone();
        Arc::new(move |e| me.on_event(e))
    }

    fn on_event(&self, event: JobEvent) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            JobEvent::Guest(GuestEvent::Metric { name, value }) => state.metrics.push((name, value)),
            _ if !self.enabled => {}
            JobEvent::Stage(Stage::ConfiguringVolumes) => self.say(&mut state, "hashing the input datasets"),
            JobEvent::Stage(Stage::Provisioning) => {
                self.say(&mut state, "preparing the module (a module's first run compiles it; later runs are cached)")
            }
            JobEvent::Stage(Stage::Running) => self.say(&mut state, "running"),
            JobEvent::Stage(Stage::PublishingResults) => self.say(&mut state, "hashing the outputs"),
            JobEvent::Guest(GuestEvent::Progress { done, total, message }) => {
                let now = Instant::now();
                let finished = total.is_some_and(|t| done >= t);
                let due = state
                    .last_draw
                    .is_none_or(|t| now - t >= if self.tty { Duration::from_millis(100) } else { LINE_EVERY });
                if !(due || finished && self.tty) {
                    return;
                }
                state.last_draw = Some(now);
                let message = message.unwrap_or_default();
                let line = match total {
                    Some(t) if t > 0 => {
                        let frac = (done as f64 / t as f64).clamp(0.0, 1.0);
                        let filled = (frac * 30.0) as usize;
                        format!("[{}{}] {:>5.1}% {message}", "#".repeat(filled), "-".repeat(30 - filled), frac * 100.0)
                    }
                    _ => format!("{done} done {message}"),
                };
                self.say(&mut state, &line);
            }
        }
    }

    fn say(&self, state: &mut State, line: &str) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let mut err = std::io::stderr().lock();
        if self.tty {
            // Redraw in place, cut to a sane width.
            let text: String = format!("{elapsed:>6.1}s {line}").chars().take(100).collect();
            let _ = write!(err, "\r\x1b[2K{text}");
            state.drawn = true;
        } else {
            let _ = writeln!(err, "[{elapsed:.1}s] {line}");
        }
    }

    /// Clears the progress line; returns the metrics the guest reported.
    pub fn finish(&self) -> Vec<(String, f64)> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.drawn {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
            state.drawn = false;
        }
        std::mem::take(&mut state.metrics)
    }
}
