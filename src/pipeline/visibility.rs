//! Visibility keeper: keeps the messages in flight hidden while their events are published,
//! and gives back, at shutdown, the messages whose events were never sent.
//!
//! Every message in flight is tracked here by a `Weak` reference. About every quarter of the
//! visibility timeout the keeper looks for messages whose visibility ends within half the
//! timeout and extends them with ChangeMessageVisibilityBatch, up to
//! `QUEUE_VISIBILITY_MAX_TOTAL_SEC` from receipt. A slow or failing Kinesis therefore does not
//! make SQS deliver a message a second time. An extension that fails through no fault of ours
//! (the whole call, or an entry SQS answers with `SenderFault: false`) is asked again after a
//! backoff, without waiting for the next tick: one tick apart, two failures in a row would let
//! the visibility end. A finished message is dropped by the pipeline; its reference here is
//! dropped at the next tick, or sooner when the list is long (see `Watched`).

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::message::{InFlightMessage, Receipt};
use super::source::SHUTDOWN_RECEIVE_GRACE;
use crate::aws::{EntryFailure, Queue, SQS_BATCH_ENTRIES, SQS_MAX_VISIBILITY_SECS, batch_results};
use crate::liveness::Activity;
use crate::metrics::kit::{CallDurations, Counters, add, call_duration, outcome, start_at_zero, timed};
use crate::retry::{Backoff, RetryEpisode, RetryPolicy, with_attempts};
use prometheus_client::metrics::histogram::Histogram;

/// Whole-call attempts for giving messages back at shutdown.
const GIVE_BACK_ATTEMPTS: u32 = 3;

/// The visibility keeper's settings: its section of the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct VisibilitySettings {
    /// The visibility timeout asked for on receive, and by each extension
    /// (`QUEUE_VISIBILITY_TIMEOUT_SEC`).
    pub timeout: Duration,
    /// Longest a message is kept hidden in total, counted from its receipt
    /// (`QUEUE_VISIBILITY_MAX_TOTAL_SEC`).
    pub max_total: Duration,
    /// ChangeMessageVisibilityBatch calls in flight at once (`QUEUE_VISIBILITY_CONCURRENCY`).
    pub concurrency: usize,
}

/// One watched message.
struct Tracked {
    entry: Weak<InFlightMessage>,
    /// False after SQS refused to extend it (the receipt is no longer valid): no use asking again.
    extendable: bool,
    /// Its last extension failed through no fault of ours: asked again at the next retry pass.
    ask_again: bool,
}

/// What the keeper is sent: every message received, to watch; receipts to give back.
pub(crate) struct KeeperInputs {
    pub track: mpsc::UnboundedReceiver<Weak<InFlightMessage>>,
    pub give_back: mpsc::UnboundedReceiver<Receipt>,
}

/// The messages the keeper watches. A finished message leaves a dead `Weak` here, which still
/// holds the message's allocation; pruned only at each tick (every 5 s with the defaults), the
/// dead would hold memory in proportion to throughput, not to the in-flight cap: tens of MiB at
/// a few hundred thousand events/s. So the list is also pruned whenever it reaches twice what
/// was alive at the last pruning, and at least twice the in-flight cap: a pruning then drops at
/// least half the list, so its cost stays constant per message.
struct Watched {
    list: Vec<Tracked>,
    /// The in-flight cap (`MAX_IN_FLIGHT_MESSAGES`): at most that many messages are alive.
    cap: usize,
    prune_at: usize,
}

impl Watched {
    fn new(cap: usize) -> Watched {
        Watched {
            list: Vec::new(),
            cap,
            prune_at: Self::next_pruning(0, cap),
        }
    }

    /// The list's length at which the next pruning runs, given what is alive now.
    fn next_pruning(alive: usize, cap: usize) -> usize {
        2 * alive.max(cap).max(1)
    }

    fn push(&mut self, entry: Weak<InFlightMessage>) {
        if self.list.len() >= self.prune_at {
            self.prune();
        }
        self.list.push(Tracked {
            entry,
            extendable: true,
            ask_again: false,
        });
    }

    /// Drops the finished messages.
    fn prune(&mut self) {
        self.list.retain(|t| t.entry.strong_count() > 0);
        self.prune_at = Self::next_pruning(self.list.len(), self.cap);
    }

    fn all_finished(&self) -> bool {
        self.list.iter().all(|t| t.entry.strong_count() == 0)
    }
}

/// Runs until nobody can send it anything and every watched message is finished. `in_flight_cap`
/// is `MAX_IN_FLIGHT_MESSAGES`.
pub(crate) async fn run(
    queue: Queue,
    settings: VisibilitySettings,
    in_flight_cap: usize,
    retry: RetryPolicy,
    inputs: KeeperInputs,
    metrics: VisibilityMetrics,
    activity: Arc<Activity>,
) {
    let KeeperInputs {
        mut track,
        give_back: mut give_back_input,
    } = inputs;
    let mut episode = RetryEpisode::new("ChangeMessageVisibilityBatch (extend)", retry);
    let mut watched = Watched::new(in_flight_cap);
    let mut ticker = tokio::time::interval(tick(settings.timeout));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Extensions to ask again: when, and the backoff of this run of failures.
    let mut ask_again = AskAgain::new(retry);
    let (mut tracking, mut giving_back) = (true, true);
    loop {
        let pass = tokio::select! {
            entry = track.recv(), if tracking => {
                match entry {
                    Some(entry) => watched.push(entry),
                    None => tracking = false,
                }
                None
            },
            receipt = give_back_input.recv(), if giving_back => {
                match receipt {
                    Some(receipt) => {
                        let mut receipts = vec![receipt];
                        while let Ok(more) = give_back_input.try_recv() {
                            receipts.push(more);
                        }
                        activity.busy();
                        give_back(&queue, retry, receipts, &metrics, &activity).await;
                        activity.idle();
                    }
                    None => giving_back = false,
                }
                None
            },
            _ = ticker.tick() => {
                watched.prune();
                Some(Pass::Tick)
            }
            _ = ask_again.due() => Some(Pass::AskAgain),
        };
        if let Some(pass) = pass {
            let failed = extend_due(
                &queue,
                &settings,
                pass,
                &mut watched.list,
                &mut episode,
                &metrics,
                &activity,
            )
            .await;
            ask_again.after(failed);
        }
        if !tracking && !giving_back && watched.all_finished() {
            return;
        }
    }
}

/// Which watched messages a pass of the keeper looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Every message due an extension.
    Tick,
    /// Only those whose last extension failed through no fault of ours, and still due.
    AskAgain,
}

/// When to ask again for the extensions that failed through no fault of ours: after the retry
/// policy's backoff, growing while failures go on, started afresh after a pass with none.
struct AskAgain {
    backoff: Backoff,
    at: Option<Instant>,
}

impl AskAgain {
    fn new(retry: RetryPolicy) -> AskAgain {
        AskAgain {
            backoff: Backoff::new(retry),
            at: None,
        }
    }

    /// Waits until the next pass is due; never, when none is.
    async fn due(&self) {
        match self.at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }

    /// Schedules the next pass after one that left `failed` extensions to ask again.
    fn after(&mut self, failed: usize) {
        if failed == 0 {
            self.backoff.reset();
            self.at = None;
            return;
        }
        self.at = Some(Instant::now() + self.backoff.next_delay());
    }
}

/// How often the keeper looks at what it watches.
fn tick(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// How much visibility left makes a message due an extension: half the timeout, or more when
/// the timeout is short. A lane gives a message up once less than the delete margin is left, and
/// the keeper looks only once per tick, so it must extend while more than the margin and two
/// ticks (one to come round again, one for the call) are left.
fn extend_below(timeout: Duration, delete_margin: Duration) -> Duration {
    (timeout / 2).max(delete_margin + 2 * tick(timeout))
}

/// The visibility timeout to ask for now, or `None` when the message need not or cannot be
/// extended: it still has more than `extend_below` left, it is already expired, or the
/// maximum total is reached.
pub(crate) fn extension_for(
    now: Instant,
    received_at: Instant,
    visible_until: Instant,
    timeout: Duration,
    extend_below: Duration,
    max_total: Duration,
) -> Option<Duration> {
    let remaining = visible_until.checked_duration_since(now)?;
    if remaining.is_zero() || remaining > extend_below {
        return None;
    }
    let left_in_total = max_total.checked_sub(now.saturating_duration_since(received_at))?;
    // SQS counts in whole seconds.
    let extension = Duration::from_secs(timeout.min(left_in_total).as_secs());
    (extension > remaining).then_some(extension)
}

/// A message due an extension: its place among the watched, the message, and the timeout to ask.
type Due = (usize, Arc<InFlightMessage>, Duration);

/// The watched messages that need extending now, in a pass of kind `pass`. Every mark to ask
/// again is taken: a message still due is in the pass, and a failure marks it again.
fn due(settings: &VisibilitySettings, pass: Pass, watched: &mut [Tracked], now: Instant) -> Vec<Due> {
    watched
        .iter_mut()
        .enumerate()
        .filter_map(|(i, tracked)| {
            let asked_again = std::mem::take(&mut tracked.ask_again);
            (tracked.extendable && (pass == Pass::Tick || asked_again)).then_some((i, &*tracked))
        })
        .filter_map(|(i, tracked)| Some((i, tracked.entry.upgrade()?)))
        .filter(|(_, entry)| !entry.is_given_up())
        .filter_map(|(i, entry)| {
            let extension = extension_for(
                now,
                entry.lease.started,
                entry.lease.ends(),
                settings.timeout,
                extend_below(settings.timeout, entry.lease.delete_margin()),
                settings.max_total,
            )?;
            Some((i, entry, extension))
        })
        .collect()
}

/// Extends the messages due in this pass; how many failed through no fault of ours and are to
/// be asked again.
async fn extend_due(
    queue: &Queue,
    settings: &VisibilitySettings,
    pass: Pass,
    watched: &mut [Tracked],
    episode: &mut RetryEpisode,
    metrics: &VisibilityMetrics,
    activity: &Activity,
) -> usize {
    let due = due(settings, pass, watched, Instant::now());
    if due.is_empty() {
        return 0;
    }
    activity.busy();
    // Several calls at once: at tens of milliseconds per round trip, one call at a time could
    // not extend a full in-flight cap before it expired.
    let mut calls = JoinSet::new();
    let mut chunks = due.chunks(SQS_BATCH_ENTRIES).map(<[_]>::to_vec);
    let mut failed = 0;
    loop {
        while calls.len() < settings.concurrency {
            let Some(chunk) = chunks.next() else { break };
            let queue = queue.clone();
            let duration = metrics.change_visibility_duration.clone();
            calls.spawn(async move {
                let requested_at = Instant::now();
                let items: Vec<(Receipt, Duration)> = chunk.iter().map(|(_, e, d)| (e.receipt().clone(), *d)).collect();
                let results = timed(&duration, change_visibility(&queue, &items)).await;
                (chunk, requested_at, results)
            });
        }
        let Some(done) = calls.join_next().await else { break };
        activity.progressed();
        match done {
            Ok((chunk, requested_at, Ok(results))) => {
                episode.succeeded();
                failed += record_extensions(watched, &chunk, requested_at, results, metrics);
            }
            Ok((chunk, _, Err(error))) => {
                // Asked again after a backoff while the receipts are still valid.
                outcome(&metrics.visibility_extensions, "failed", chunk.len() as u64);
                episode.failed(&error);
                for (i, _, _) in &chunk {
                    watched[*i].ask_again = true;
                }
                failed += chunk.len();
            }
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => {}
        }
    }
    activity.idle();
    failed
}

/// Records what SQS answered for each message of one call; how many failed through no fault
/// of ours.
fn record_extensions(
    watched: &mut [Tracked],
    chunk: &[Due],
    requested_at: Instant,
    results: Vec<Result<(), EntryFailure>>,
    metrics: &VisibilityMetrics,
) -> usize {
    let mut failed = 0;
    for ((i, entry, extension), result) in chunk.iter().zip(results) {
        match result {
            Ok(()) => {
                entry.lease.extended(requested_at, *extension);
                outcome(&metrics.visibility_extensions, "ok", 1);
            }
            // SQS's own trouble: asked again after a backoff.
            Err(failure) if !failure.sender_fault => {
                watched[*i].ask_again = true;
                failed += 1;
                outcome(&metrics.visibility_extensions, "retried", 1);
                tracing::debug!(
                    message_id = entry.message_id(),
                    reason = entry.receipt().redact(&failure.reason()),
                    "visibility extension failed through no fault of ours; asking again"
                );
            }
            // Finished while the call was on its way (typically deleted just before): the
            // refusal changes nothing, the delete's outcome tells whether it comes back.
            Err(failure) if entry.is_finished() || entry.is_given_up() => {
                watched[*i].extendable = false;
                tracing::debug!(
                    message_id = entry.message_id(),
                    reason = entry.receipt().redact(&failure.reason()),
                    "visibility extension refused for a message already finished; nothing to do"
                );
            }
            Err(failure) => {
                watched[*i].extendable = false;
                outcome(&metrics.visibility_extensions, "failed", 1);
                tracing::warn!(
                    message_id = entry.message_id(),
                    reason = entry.receipt().redact(&failure.reason()),
                    "visibility extension refused; the message may be delivered again when its visibility ends"
                );
            }
        }
    }
    failed
}

/// The visibility a message given back at shutdown gets: long enough that this replica's own
/// long polls, still answering in their shutdown grace, cannot take it again. With 0, each of
/// them could receive it, have it given back, and so on, every round adding to its receive
/// count towards the queue's redrive policy; a few seconds later another replica takes it.
const GIVE_BACK_VISIBILITY: Duration = Duration::from_secs(SHUTDOWN_RECEIVE_GRACE.as_secs() + 1);

/// Makes messages visible again within seconds, so that another collector takes them without
/// waiting for their visibility timeout. A failure loses nothing: they come back when it ends.
async fn give_back(
    queue: &Queue,
    retry: RetryPolicy,
    receipts: Vec<Receipt>,
    metrics: &VisibilityMetrics,
    activity: &Activity,
) {
    let mut episode = RetryEpisode::new("ChangeMessageVisibilityBatch (give back)", retry);
    for chunk in receipts.chunks(SQS_BATCH_ENTRIES) {
        let items: Vec<(Receipt, Duration)> = chunk.iter().map(|r| (r.clone(), GIVE_BACK_VISIBILITY)).collect();
        let results = with_attempts(&mut episode, GIVE_BACK_ATTEMPTS, || async {
            let results = timed(&metrics.change_visibility_duration, change_visibility(queue, &items)).await;
            activity.progressed();
            results
        })
        .await;
        let Ok(results) = results else {
            outcome(&metrics.messages_given_back, "failed", chunk.len() as u64);
            tracing::warn!(
                messages = chunk.len(),
                "could not give messages back; they are delivered again when their visibility ends"
            );
            continue;
        };
        for (receipt, result) in chunk.iter().zip(results) {
            match result {
                Ok(()) => outcome(&metrics.messages_given_back, "ok", 1),
                Err(failure) => {
                    outcome(&metrics.messages_given_back, "failed", 1);
                    tracing::warn!(
                        message_id = receipt.message_id,
                        reason = receipt.redact(&failure.reason()),
                        "could not give a message back; it is delivered again when its visibility ends"
                    );
                }
            }
        }
    }
}

/// One ChangeMessageVisibilityBatch call (at most 10 items); the result of each item in order.
async fn change_visibility(
    queue: &Queue,
    items: &[(Receipt, Duration)],
) -> Result<Vec<Result<(), EntryFailure>>, String> {
    let entries: Result<Vec<_>, _> = items
        .iter()
        .enumerate()
        .map(|(i, (receipt, timeout))| {
            ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(&receipt.handle)
                .visibility_timeout(timeout.as_secs().min(SQS_MAX_VISIBILITY_SECS) as i32)
                .build()
        })
        .collect();
    let output = queue
        .client
        .change_message_visibility_batch()
        .queue_url(&queue.url)
        .set_entries(Some(entries.map_err(|e| e.to_string())?))
        .send()
        .await
        .map_err(|e| {
            let text = DisplayErrorContext(e).to_string();
            items.iter().fold(text, |text, (receipt, _)| receipt.redact(&text))
        })?;
    let results = batch_results(
        items.len(),
        output.successful().iter().map(|ok| ok.id()),
        output.failed(),
    );
    Ok(results)
}

/// The visibility keeper's metrics: extensions and give-backs.
#[derive(Clone)]
pub struct VisibilityMetrics {
    pub visibility_extensions: Counters,
    pub change_visibility_duration: Histogram,
    pub messages_given_back: Counters,
}

impl VisibilityMetrics {
    /// Registers the section's metrics, every series whose labels are known at 0.
    pub fn register(registry: &mut Registry, calls: &CallDurations) -> Self {
        let section = VisibilityMetrics {
            change_visibility_duration: call_duration(calls, "ChangeMessageVisibilityBatch"),
            visibility_extensions: add(
                registry,
                "visibility_extensions",
                "Visibility timeout extensions of in-flight messages, by outcome (ok; retried: SQS failed the entry through no fault of the sender; failed: refused, or the call failed)",
                Counters::default(),
            ),
            messages_given_back: add(
                registry,
                "messages_given_back",
                "Messages given back to the queue at shutdown (visible again 3 s later) before any of their events was sent, by outcome (ok, failed)",
                Counters::default(),
            ),
        };
        start_at_zero(&section.visibility_extensions, "outcome", &["ok", "failed", "retried"]);
        start_at_zero(&section.messages_given_back, "outcome", &["ok", "failed"]);
        section
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(30);
    const MAX: Duration = Duration::from_secs(100);

    fn at(base: Instant, secs: u64) -> Instant {
        base + Duration::from_secs(secs)
    }

    #[test]
    fn finished_messages_leave_the_watch_list_long_before_the_tick() {
        use crate::pipeline::message::test_message;
        let cap = 10;
        let mut watched = Watched::new(cap);
        let alive: Vec<_> = (0..cap).map(|i| test_message(&format!("alive-{i}"), 1)).collect();
        for message in &alive {
            watched.push(Arc::downgrade(message));
        }
        // Ten thousand messages finish between two ticks.
        for i in 0..10_000 {
            let finished = test_message(&format!("finished-{i}"), 1);
            watched.push(Arc::downgrade(&finished));
            assert!(watched.list.len() <= 2 * cap + 1, "{} watched", watched.list.len());
        }
        // The living are all still watched.
        for message in &alive {
            assert!(watched.list.iter().any(|t| t.entry.ptr_eq(&Arc::downgrade(message))));
        }
        watched.prune();
        assert_eq!(watched.list.len(), cap);
    }

    #[test]
    fn more_alive_than_the_cap_keeps_pruning_rare() {
        use crate::pipeline::message::test_message;
        // More alive than the cap (a message keeps its allocation a moment after its slot):
        // the list grows to twice what was alive at the last pruning before it is pruned again,
        // so a pruning never runs for every message.
        let mut watched = Watched::new(2);
        let alive: Vec<_> = (0..50).map(|i| test_message(&format!("alive-{i}"), 1)).collect();
        for message in &alive {
            watched.push(Arc::downgrade(message));
        }
        watched.prune();
        assert_eq!(watched.list.len(), 50);
        for i in 0..50 {
            watched.push(Arc::downgrade(&test_message(&format!("finished-{i}"), 1)));
        }
        assert_eq!(watched.list.len(), 100, "no pruning before twice the living");
        watched.push(Arc::downgrade(&test_message("one more", 1)));
        assert_eq!(watched.list.len(), 51, "pruned at twice the living");
    }

    #[test]
    fn extends_only_in_the_second_half_of_the_visibility() {
        let t0 = Instant::now();
        let until = at(t0, 30);
        assert_eq!(extension_for(at(t0, 10), t0, until, T, T / 2, MAX), None);
        assert_eq!(extension_for(at(t0, 16), t0, until, T, T / 2, MAX), Some(T));
    }

    #[test]
    fn expired_messages_are_not_extended() {
        let t0 = Instant::now();
        assert_eq!(extension_for(at(t0, 30), t0, at(t0, 30), T, T / 2, MAX), None);
        assert_eq!(extension_for(at(t0, 31), t0, at(t0, 30), T, T / 2, MAX), None);
    }

    #[test]
    fn a_short_timeout_is_extended_before_less_than_the_delete_margin_and_two_ticks_are_left() {
        let second = Duration::from_secs(1);
        // Long timeouts: at half, as always.
        assert_eq!(extend_below(Duration::from_secs(60), second), Duration::from_secs(30));
        // 3 s with a 1 s delete margin: ticks of 0.75 s, so from 2.5 s left, not 1.5 s.
        assert_eq!(
            extend_below(Duration::from_secs(3), second),
            Duration::from_millis(2500)
        );
        // 10 s with a 5 s margin: ticks of 2.5 s, so from 10 s left (every tick).
        assert_eq!(
            extend_below(Duration::from_secs(10), 5 * second),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn extensions_stop_at_the_maximum_total() {
        let t0 = Instant::now();
        // At 80 s, 20 s are left of the 100 s total: the extension is cut to 20 s.
        assert_eq!(
            extension_for(at(t0, 80), t0, at(t0, 90), T, T / 2, MAX),
            Some(Duration::from_secs(20))
        );
        // At 90 s with visibility to 100 s, nothing more can be had.
        assert_eq!(extension_for(at(t0, 90), t0, at(t0, 100), T, T / 2, MAX), None);
        assert_eq!(extension_for(at(t0, 101), t0, at(t0, 110), T, T / 2, MAX), None);
    }
}
