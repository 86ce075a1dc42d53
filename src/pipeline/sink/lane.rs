//! A lane: its buffer, its one PutRecords call at a time, and what it does with the answer.

use std::collections::VecDeque;
use std::sync::Arc;
use tokio::time::Instant;

use aws_smithy_types::body::SdkBody;
use tokio::sync::mpsc;
use tokio::time::sleep_until;

use crate::liveness::Activity;
use crate::pipeline::dead_letter::{Disposal, dispose};
use crate::pipeline::message::{GiveUp, InFlightMessage};
use crate::retry::RetryEpisode;

use super::answer::{PutRecordsAnswer, RecordResults};
use super::request::put_records_body;
use super::settle::{CallFailure, MAX_REFUSALS_IN_A_ROW, classify_call, refusal_label, settle, stream_unusable};
use super::{LaneContext, OutboundRecord, OutboundRun};
use crate::answer_reader::AnswerSlot;

/// Runs one lane until its input is closed and everything it holds is published (or given up
/// because its receipt expired, or given back at shutdown).
pub(crate) async fn run_lane(
    lane: usize,
    context: LaneContext,
    mut input: mpsc::Receiver<OutboundRun>,
    activity: Arc<Activity>,
) {
    let shutdown = context.shutdown.clone();
    let mut lane = Lane::new(lane, context, activity);
    // Two calls' worth (and at most a run more): one being sent, one filling. Beyond that the
    // lane stops reading its channel, the channel fills, and the source stops receiving from
    // SQS.
    let capacity = lane.context.settings.max_records * 2;
    let mut closed = false;
    loop {
        if lane.buffer.is_empty() {
            lane.activity.idle();
        } else {
            lane.activity.busy();
        }
        // Checked here too: a lane busy retrying full batches may not reach a select below.
        if !lane.stopping && shutdown.is_cancelled() {
            lane.stop();
        }
        if lane.stopping {
            // Take in whatever the sources still hand over, so that messages waiting in the
            // channel are given back now rather than after the lane's retries.
            while let Ok(run) = input.try_recv() {
                lane.take(run);
            }
        }
        if let Some(retry_at) = lane.retry_at {
            // Backing off after a failed call: keep taking records in meanwhile.
            tokio::select! {
                _ = sleep_until(retry_at) => lane.retry_at = None,
                run = input.recv(), if !closed && lane.buffer.len() < capacity => match run {
                    Some(run) => lane.take(run),
                    None => closed = true,
                },
                _ = shutdown.cancelled(), if !lane.stopping => lane.stop(),
            }
            continue;
        }
        if !lane.buffer.is_empty() && (closed || lane.has_full_batch()) {
            lane.send_batch(&mut input).await;
            continue;
        }
        if closed {
            break;
        }
        // Sent as soon as the lane is free (after the linger, 0 by default): batches form
        // from what arrives while a call is in flight, so a quiet lane sends at once and a
        // busy one sends full calls, with no interval to tune between the two.
        let deadline = lane.buffer.front().map(|r| lane.send_at(r.enqueued_at));
        // Records already waiting come first: after a call the deadline of the records queued
        // meanwhile has passed, and a fair choice would send them one or two per call, slowing
        // the lane to a crawl just when it has the most to send.
        tokio::select! {
            biased;
            // What is already waiting comes in the same turn, not one run per turn of this
            // loop, and frees its room in the channel at once.
            run = input.recv(), if lane.buffer.len() < capacity => match run {
                Some(run) => {
                    lane.take(run);
                    while lane.buffer.len() < capacity {
                        match input.try_recv() {
                            Ok(run) => lane.take(run),
                            Err(_) => break,
                        }
                    }
                }
                None => closed = true,
            },
            _ = shutdown.cancelled(), if !lane.stopping => lane.stop(),
            _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                lane.send_batch(&mut input).await;
            }
        }
    }
}

struct Lane {
    buffer: VecDeque<OutboundRecord>,
    buffered_bytes: usize,
    /// Records per call: the configured maximum, made smaller after a call timed out or while
    /// looking for a record the stream refuses without saying which.
    batch_cap: usize,
    /// Submissions dropped as refused with no record written in between: a refusal that every
    /// record meets is the stream's problem, not the records'.
    refusals_in_a_row: u32,
    activity: Arc<Activity>,
    episode: RetryEpisode,
    /// Shutdown has begun: messages not started are given back instead of sent.
    stopping: bool,
    /// After a failed call, when to send again.
    retry_at: Option<Instant>,
    /// After a nearly full call, until when the lane waits for a full one (see
    /// [`Lane::hold_after`]).
    hold_until: Option<Instant>,
    context: LaneContext,
}

impl Lane {
    fn new(index: usize, context: LaneContext, activity: Arc<Activity>) -> Lane {
        Lane {
            buffer: VecDeque::new(),
            buffered_bytes: 0,
            batch_cap: context.settings.max_records,
            refusals_in_a_row: 0,
            activity,
            episode: RetryEpisode::new(
                format!("PutRecords to {} (lane {index})", context.stream_name),
                context.retry,
            ),
            stopping: false,
            retry_at: None,
            hold_until: None,
            context,
        }
    }

    /// Takes in a run's records, in order.
    fn take(&mut self, run: OutboundRun) {
        run.into_records(|record| self.push(record));
    }

    fn push(&mut self, record: OutboundRecord) {
        if self.stopping && !record.message.started() {
            self.give_back(record);
            return;
        }
        if record.message.is_given_up() {
            return;
        }
        self.buffered_bytes += record.size();
        self.buffer.push_back(record);
    }

    /// Shutdown: gives back every buffered message none of whose events has been sent.
    fn stop(&mut self) {
        self.stopping = true;
        let buffered = std::mem::take(&mut self.buffer);
        self.buffered_bytes = 0;
        tracing::debug!(buffered = buffered.len(), "lane stopping");
        for record in buffered {
            self.push(record);
        }
    }

    /// Drops a record of a message that goes back to the queue untouched; the first record of
    /// the message sends its receipt to the keeper.
    fn give_back(&self, record: OutboundRecord) {
        if record.message.give_up(GiveUp::GivenBack) {
            tracing::debug!(
                message_id = record.message.message_id(),
                "giving the message back to the queue"
            );
            let _ = self.context.give_back.send(record.message.receipt().clone());
        }
    }

    fn pop(&mut self) -> Option<OutboundRecord> {
        let record = self.buffer.pop_front()?;
        self.buffered_bytes -= record.size();
        Some(record)
    }

    fn has_full_batch(&self) -> bool {
        self.reaches(self.buffer.len(), self.buffered_bytes, 1, 1)
    }

    /// Whether `records` records of `bytes` bytes reach `num/den` of a call's limits, by
    /// records or by bytes.
    fn reaches(&self, records: usize, bytes: usize, num: usize, den: usize) -> bool {
        records * den >= self.batch_cap * num || bytes * den >= self.context.settings.max_request_bytes * num
    }

    /// When the records buffered, the oldest queued at `oldest`, are sent if no full call
    /// forms first: after the linger, or at the end of the hold after a nearly full call; never
    /// later than the flush interval.
    fn send_at(&self, oldest: Instant) -> Instant {
        let settings = &self.context.settings;
        let linger = oldest + settings.linger.min(settings.flush_interval);
        match self.hold_until {
            Some(hold) => hold.max(linger).min(oldest + settings.flush_interval),
            None => linger,
        }
    }

    /// After a call of `records` records and `bytes` bytes that took `took`: whether the next
    /// call waits for a full one. A lane whose calls leave nearly full is kept busy by a
    /// backlog: what is missing arrives within a fraction of a call, and waiting for it makes
    /// fewer, fuller calls (each costs signing and a round trip) at no cost in throughput.
    /// The wait is half the last call, so a lane still sends at least every one and a half
    /// calls' time; a lane whose calls are smaller sends at once, as ever.
    fn hold_after(&mut self, records: usize, bytes: usize, took: std::time::Duration) {
        self.hold_until = self.reaches(records, bytes, 3, 4).then(|| Instant::now() + took / 2);
    }

    /// Makes the next calls half as large as one of `records` records, for `reason`.
    fn shrink_calls(&mut self, records: usize, reason: &'static str) {
        let cap = (records / 2).max(1);
        if cap < self.batch_cap {
            self.context.metrics.calls_made_smaller(reason);
        }
        self.batch_cap = cap;
    }

    /// After a call of `records` records answered in `took` with every record written: calls
    /// made smaller (after a timeout, or to find a refused record) double back up to the
    /// maximum once a call as large as they may be is answered within a quarter of the call
    /// timeout (AWS answers in tens of milliseconds). A slower answer keeps the size: doubled,
    /// the next call could time out again. So does a smaller call: its quick answer says
    /// nothing of a larger one, and lanes that grew on a trickle would all send full calls
    /// to a slow endpoint at the next burst.
    fn grow_calls_after(&mut self, records: usize, took: std::time::Duration) {
        if records >= self.batch_cap && took <= self.context.call_timeout / 4 {
            self.batch_cap = (self.batch_cap * 2).min(self.context.settings.max_records);
        }
    }

    /// Puts records back at the head of the buffer, keeping their order.
    fn push_front_in_order(&mut self, records: Vec<OutboundRecord>) {
        for record in records.into_iter().rev() {
            self.buffered_bytes += record.size();
            self.buffer.push_front(record);
        }
    }

    /// Takes the next call's records from the head of the buffer, within the record and byte
    /// limits, and drops the records of messages whose receipt has expired. Returns them with
    /// their size.
    fn next_batch(&mut self) -> (Vec<OutboundRecord>, usize) {
        let now = Instant::now();
        let (max_records, max_bytes) = (self.batch_cap, self.context.settings.max_request_bytes);
        let mut batch = Vec::with_capacity(max_records.min(self.buffer.len()));
        let mut bytes = 0;
        while let Some(front) = self.buffer.front() {
            if front.message.is_given_up() || front.message.lease.expiring(now) {
                // Refused and given-back messages are already accounted for; only an expiry is news.
                if let Some(record) = self.pop() {
                    self.give_up_expired(record);
                }
                continue;
            }
            let size = front.size();
            if batch.len() == max_records || bytes + size > max_bytes {
                break;
            }
            bytes += size;
            batch.extend(self.pop());
        }
        (batch, bytes)
    }

    fn give_up_expired(&self, record: OutboundRecord) {
        if !record.message.is_given_up() && record.message.give_up(GiveUp::Expired) {
            tracing::warn!(
                message_id = record.message.message_id(),
                unpublished_events = record.message.outstanding(),
                "receipt expired before all events were published (visibility could not be extended further); the message will be delivered again"
            );
            self.context.metrics.messages_expired.inc();
        }
    }

    async fn send_batch(&mut self, input: &mut mpsc::Receiver<OutboundRun>) {
        let (batch, bytes) = self.next_batch();
        if batch.is_empty() {
            return;
        }
        for record in &batch {
            record.message.mark_started();
        }
        let metrics = self.context.metrics.clone();
        let started = Instant::now();
        // Shutdown is seen during the call too: what waits behind it is given back now, not
        // when a call that may never be answered times out, perhaps after the drain deadline.
        let result = {
            let call = put_records(self.context.client.clone(), self.context.stream_name.clone(), &batch);
            tokio::pin!(call);
            let mut input_open = true;
            loop {
                tokio::select! {
                    result = &mut call => break result,
                    _ = self.context.shutdown.cancelled(), if !self.stopping => self.stop(),
                    // Stopping: what the sources still hand over is given back as it comes.
                    run = input.recv(), if self.stopping && input_open => match run {
                        Some(run) => self.take(run),
                        None => input_open = false,
                    },
                }
            }
        };
        self.activity.progressed();
        let took = started.elapsed();
        metrics.put_records_duration.observe(took.as_secs_f64());
        match result {
            Ok(results) => {
                self.hold_after(batch.len(), bytes, took);
                self.settle_answer(batch, &results, took)
            }
            Err(failure) => self.call_failed(batch, failure).await,
        }
    }

    /// An answered call: confirms what was written, puts back what was not.
    fn settle_answer(&mut self, batch: Vec<OutboundRecord>, answer: &RecordResults, took: std::time::Duration) {
        let metrics = self.context.metrics.clone();
        let sent = batch.len();
        // What each shard took, for the shard supervisor: every written record counts,
        // resends included, as they use the shard's capacity all the same.
        self.context.shard_tally.add_response(
            batch
                .iter()
                .zip(&answer.results)
                .filter_map(|(record, result)| Some((answer.shard_name(result)?, record.size()))),
        );
        let settled = settle(batch, &answer.results);
        if settled.confirmed.is_empty() {
            self.context.breaker.failed();
        } else {
            self.context.breaker.succeeded();
            self.refusals_in_a_row = 0;
        }
        let published_at = Instant::now();
        for record in settled.confirmed {
            if record.message.confirm_one(record.releases, published_at) {
                self.context.deleter.push(record.message.clone());
            }
            metrics.events_published.inc();
        }
        if settled.resend.is_empty() {
            metrics.put_records_call("ok");
            self.episode.succeeded();
            self.grow_calls_after(sent, took);
            return;
        }
        metrics.put_records_call("partial");
        for (code, n) in &settled.failed_by_code {
            metrics.records_retried(code, *n);
        }
        metrics.records_retried("resend_after_failure", settled.resent_after_failure);
        let reason = format!(
            "{} of {} records failed ({:?}); resending them and the later events of their submissions",
            settled.failed_by_code.values().sum::<u64>(),
            sent,
            settled.failed_by_code
        );
        if let Some(code) = settled.failed_by_code.keys().find(|code| stream_unusable(code)) {
            self.context
                .breaker
                .open_because(format!("PutRecords records fail with {code}"));
        }
        self.push_front_in_order(settled.resend);
        let delay = self.episode.failed(&reason);
        self.retry_at = Some(Instant::now() + delay);
    }

    /// A call that failed whole.
    async fn call_failed(&mut self, batch: Vec<OutboundRecord>, failure: CallFailure) {
        let metrics = self.context.metrics.clone();
        let error = match failure {
            CallFailure::Refused { record, reason } => {
                metrics.put_records_call("refused");
                // A call of one record refused naming none (LocalStack's Kinesis names no
                // record it finds too large) is refused for that record: smaller calls cannot
                // get it through, and the refusals-in-a-row guard below still tells a stream
                // that refuses everything from a record it refuses.
                let named = record.or((batch.len() == 1).then_some(0));
                match named.filter(|i| *i < batch.len()) {
                    // No record named: the request or the stream is at fault. Smaller calls
                    // get past a request-size limit; anything else waits with backoff like any
                    // failed call, and nothing is dropped for it.
                    None => {
                        self.shrink_calls(batch.len(), "refused_naming_none");
                        self.context.breaker.failed();
                        format!(
                            "PutRecords refused naming no record ({reason}); retrying in calls of {}",
                            self.batch_cap
                        )
                    }
                    Some(culprit) => {
                        self.refusals_in_a_row += 1;
                        if self.refusals_in_a_row <= MAX_REFUSALS_IN_A_ROW {
                            let message = batch[culprit].message.clone();
                            self.refuse(&message, &reason).await;
                            let (_dropped, rest): (Vec<_>, Vec<_>) =
                                batch.into_iter().partition(|r| Arc::ptr_eq(&r.message, &message));
                            // The others were not written either: they go again at once.
                            self.push_front_in_order(rest);
                            return;
                        }
                        // Every record meets it: not the records' fault. Keep them and wait.
                        let reason = format!("PutRecords refuses every record: {reason}");
                        self.context.breaker.open_because(reason.clone());
                        reason
                    }
                }
            }
            CallFailure::StreamUnusable(reason) => {
                self.context.breaker.open_because(reason.clone());
                reason
            }
            CallFailure::Transient(reason) => {
                self.context.breaker.failed();
                reason
            }
            CallFailure::TimedOut(reason) => {
                // An endpoint whose answer takes longer the more records a call carries (an
                // overloaded stream, a slow network, LocalStack's Kinesis) times out on every
                // full call; sent again whole, with the abandoned calls' work still piled on
                // the endpoint, no record would ever get through. Smaller calls do.
                self.shrink_calls(batch.len(), "timed_out");
                self.context.breaker.failed();
                format!("{reason}; retrying in calls of {}", self.batch_cap)
            }
        };
        metrics.put_records_call("error");
        metrics.records_retried("call_failed", batch.len() as u64);
        self.push_front_in_order(batch);
        let delay = self.episode.failed(&error);
        self.retry_at = Some(Instant::now() + delay);
    }

    /// Stops a submission one of whose records the stream refuses for good: logged once and
    /// counted; with a dead-letter queue its body is forwarded and the message deleted once that
    /// send succeeded; otherwise (or when the send fails) the message stays in the queue, not
    /// extended, and comes back when its visibility ends, for the queue's redrive policy to
    /// take. Its events not yet published are dropped from the lane either way.
    async fn refuse(&self, message: &Arc<InFlightMessage>, reason: &str) {
        if !message.give_up(GiveUp::Refused) {
            return;
        }
        let metrics = &self.context.metrics;
        metrics.refused(refusal_label(reason));
        let body = message.body();
        let fate = if self.context.dead_letter.is_some() && body.is_some() {
            "forwarding it to the dead-letter queue, then deleting it"
        } else {
            "the submission is kept in the queue (no dead-letter queue set) and comes back when its visibility ends, until the queue's redrive policy moves it"
        };
        tracing::warn!(
            message_id = message.message_id(),
            unpublished_events = message.outstanding(),
            reason,
            "the stream refuses a record of this submission; {fate}"
        );
        let disposal = dispose(
            self.context.dead_letter.as_ref(),
            message.message_id(),
            body,
            "refused_by_stream",
            reason,
            Disposal::Keep,
        )
        .await;
        self.activity.progressed();
        if disposal == Disposal::Keep {
            return;
        }
        self.context.deleter.push(message.clone());
    }
}

/// One PutRecords call; its per-record results, as many as records sent.
async fn put_records(
    client: aws_sdk_kinesis::Client,
    stream_name: String,
    batch: &[OutboundRecord],
) -> Result<RecordResults, CallFailure> {
    // The body is written from the records directly (request.rs), and the answer read from its
    // body (answer.rs); the SDK's input and output carry no records.
    let body = put_records_body(&stream_name, batch);
    let answer = AnswerSlot::<PutRecordsAnswer>::default();
    let output = client
        .put_records()
        .stream_name(stream_name)
        .set_records(Some(Vec::new()))
        .customize()
        .interceptor(answer.reader())
        .mutate_request(move |request| {
            request.headers_mut().insert("content-length", body.len().to_string());
            *request.body_mut() = SdkBody::from(body.clone());
        })
        .send()
        .await
        .map_err(|e| classify_call(&e))?;
    let results = answer
        .take()
        .unwrap_or_else(|| RecordResults::from_entries(output.records()));
    if results.len() != batch.len() {
        return Err(CallFailure::Transient(format!(
            "PutRecords answered {} results for {} records",
            results.len(),
            batch.len()
        )));
    }
    Ok(results)
}
