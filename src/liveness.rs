//! Liveness: is every pipeline stage that has work making progress?
//!
//! Each stage (receiver, sink lane, visibility keeper, deleter) holds an [`Activity`]. It says
//! when it has work (a call to make, records to send, receipts to delete) and when it made
//! progress (a call finished, however it ended: a failed call is a stage alive and retrying).
//! Waiting for room downstream is not work: the stage downstream is the one that must move.
//! `/healthz` fails when a stage has had work and no progress for `STALL_TIMEOUT_SEC`, so an
//! orchestrator's liveness probe replaces a replica stuck for a reason nobody foresaw.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Every stage's activity, and the limit beyond which no progress means stuck.
pub struct Liveness {
    epoch: Instant,
    limit: Duration,
    stages: Mutex<Vec<Arc<Activity>>>,
    /// Set once a stall has been logged, so that each probe does not log it again.
    reported: AtomicBool,
}

/// One stage's work and progress.
pub(crate) struct Activity {
    name: String,
    epoch: Instant,
    busy: AtomicBool,
    /// Milliseconds since `epoch` of the last progress, or of the moment work arrived.
    last_progress_ms: AtomicU64,
}

impl Liveness {
    pub fn new(limit: Duration) -> Liveness {
        Liveness {
            epoch: Instant::now(),
            limit,
            stages: Mutex::new(Vec::new()),
            reported: AtomicBool::new(false),
        }
    }

    /// Registers a stage by name ("deleter", "sink lane 2").
    pub(crate) fn stage(&self, name: impl Into<String>) -> Arc<Activity> {
        let activity = Arc::new(Activity {
            name: name.into(),
            epoch: self.epoch,
            busy: AtomicBool::new(false),
            last_progress_ms: AtomicU64::new(0),
        });
        if let Ok(mut stages) = self.stages.lock() {
            stages.push(activity.clone());
        }
        activity
    }

    /// `None` while every stage with work has progressed within the limit; else which has not.
    pub(crate) fn stalled(&self, now: Instant) -> Option<String> {
        let stages = self.stages.lock().ok()?;
        let stuck = stages.iter().find_map(|stage| {
            let idle_for = stage.without_progress(now)?;
            (idle_for > self.limit).then(|| {
                format!(
                    "{} has had work and made no progress for {} s",
                    stage.name,
                    idle_for.as_secs()
                )
            })
        });
        match &stuck {
            Some(reason) if !self.reported.swap(true, Ordering::AcqRel) => {
                tracing::error!(
                    reason,
                    "pipeline stage stalled; /healthz fails so that the replica is replaced"
                );
            }
            None => self.reported.store(false, Ordering::Release),
            _ => {}
        }
        stuck
    }
}

impl Activity {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The stage has work. Time without progress counts from now if it had none before.
    pub(crate) fn busy(&self) {
        if !self.busy.swap(true, Ordering::AcqRel) {
            self.last_progress_ms.store(self.now_ms(), Ordering::Release);
        }
    }

    /// The stage has nothing to do (or waits for room downstream).
    pub(crate) fn idle(&self) {
        self.busy.store(false, Ordering::Release);
    }

    /// The stage finished a step of its work: a call answered, failed or timed out.
    pub(crate) fn progressed(&self) {
        self.last_progress_ms.store(self.now_ms(), Ordering::Release);
    }

    /// How long the stage has had work without progress, or `None` when it has no work.
    fn without_progress(&self, now: Instant) -> Option<Duration> {
        if !self.busy.load(Ordering::Acquire) {
            return None;
        }
        let last = self.epoch + Duration::from_millis(self.last_progress_ms.load(Ordering::Acquire));
        Some(now.saturating_duration_since(last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_stage_with_work_and_no_progress_past_the_limit_is_stalled() {
        let liveness = Liveness::new(Duration::from_secs(10));
        let deleter = liveness.stage("deleter");
        let lane = liveness.stage("sink lane 0");
        let later = |secs| Instant::now() + Duration::from_secs(secs);
        // Idle stages never stall, however long they wait.
        assert_eq!(liveness.stalled(later(3600)), None);
        deleter.busy();
        assert_eq!(liveness.stalled(later(5)), None);
        let reason = liveness.stalled(later(11)).expect("the deleter is stalled");
        assert!(
            reason.starts_with("deleter has had work and made no progress for 1"),
            "{reason}"
        );
        // Progress resets the clock; going idle clears it.
        deleter.progressed();
        assert_eq!(liveness.stalled(later(5)), None);
        deleter.idle();
        lane.busy();
        lane.busy();
        assert!(liveness.stalled(later(11)).unwrap().starts_with("sink lane 0"));
        lane.idle();
        assert_eq!(liveness.stalled(later(3600)), None);
    }
}
