//! Supervision: every pipeline stage, and every task beside it, must run until shutdown. One
//! that returns or panics before is a [`RunError`], after which the collector drains and exits
//! non-zero, so that the orchestrator replaces it instead of leaving it running with a stage
//! missing.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use tokio::task::{JoinError, JoinSet};

use crate::liveness::Activity;

/// Why the collector stopped other than by being asked to.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{stage} stopped while the collector was running")]
    StageExited { stage: String },
    #[error("{stage} panicked: {message}")]
    StagePanicked { stage: String, message: String },
}

impl RunError {
    pub fn new(stage: String, result: Result<(), JoinError>) -> RunError {
        match result {
            Ok(()) => RunError::StageExited { stage },
            Err(e) if e.is_panic() => {
                let panic = e.into_panic();
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "(no message)".to_owned());
                RunError::StagePanicked { stage, message }
            }
            Err(_) => RunError::StageExited { stage },
        }
    }
}

/// Tasks that must run until shutdown, each with its name. Dropping the set aborts them.
#[derive(Default)]
pub(crate) struct Stages {
    tasks: JoinSet<()>,
    names: HashMap<tokio::task::Id, String>,
}

impl Stages {
    pub(crate) fn spawn(&mut self, name: impl Into<String>, stage: impl Future<Output = ()> + Send + 'static) {
        self.spawn_watched(name, None, stage);
    }

    /// Spawns a stage whose progress `liveness` watches through `activity`.
    pub(crate) fn spawn_watched(
        &mut self,
        name: impl Into<String>,
        activity: Option<Arc<Activity>>,
        stage: impl Future<Output = ()> + Send + 'static,
    ) {
        let name = name.into();
        let handle = self.tasks.spawn(fault_injection::wrap(name.clone(), activity, stage));
        self.names.insert(handle.id(), name);
    }

    /// The next task to end, by name, and how it ended.
    pub(crate) async fn join_next(&mut self) -> Option<(String, Result<(), JoinError>)> {
        let (id, result) = match self.tasks.join_next_with_id().await? {
            Ok((id, ())) => (id, Ok(())),
            Err(e) => (e.id(), Err(e)),
        };
        let name = self.names.remove(&id).unwrap_or_else(|| "a stage".to_owned());
        Some((name, result))
    }
}

/// Test-only faults, compiled in with the `fault-injection` feature: `COLLECTOR_FAULT_STAGE`
/// set to `NAME:panic`, `NAME:exit` or `NAME:hang` (e.g. `deleter:panic`) makes that stage
/// panic, return, or stop in the middle of its work one second after it starts, to show that
/// the process notices.
#[cfg(feature = "fault-injection")]
mod fault_injection {
    use std::future::Future;
    use std::sync::Arc;
    use std::time::Duration;

    use crate::liveness::Activity;

    pub(crate) async fn wrap(name: String, activity: Option<Arc<Activity>>, stage: impl Future<Output = ()>) {
        let fault = std::env::var("COLLECTOR_FAULT_STAGE").unwrap_or_default();
        let Some((target, how)) = fault.split_once(':') else {
            return stage.await;
        };
        if target != name {
            return stage.await;
        }
        // Pinned here, not moved into the select: a hanging stage keeps what it holds (its
        // buffers, its channel), as a stage stuck in a call would, instead of dropping it.
        let mut stage = std::pin::pin!(stage);
        tokio::select! {
            () = &mut stage => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        match how {
            "panic" => panic!("fault injected into {name}"),
            "hang" => {
                // Stuck with work in hand, as a call without a timeout would leave it.
                if let Some(activity) = activity {
                    activity.busy();
                }
                std::future::pending::<()>().await;
            }
            _ => {}
        }
    }
}

#[cfg(not(feature = "fault-injection"))]
mod fault_injection {
    use std::future::Future;
    use std::sync::Arc;

    use crate::liveness::Activity;

    pub(crate) async fn wrap(_name: String, _activity: Option<Arc<Activity>>, stage: impl Future<Output = ()>) {
        stage.await
    }
}
