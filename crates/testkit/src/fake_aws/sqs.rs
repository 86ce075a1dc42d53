//! The fake's queues: messages, their visibility and their receipts.
//!
//! A receipt stays valid until its message is received again (or [`Queue::expire_receipts`]);
//! a call naming a stale one fails for that entry with `ReceiptHandleIsInvalid`, as SQS may
//! answer. A visibility change of a message no longer in flight fails with
//! `MessageNotInflight`. Deleting a message already deleted succeeds again, as on SQS.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::time::{Instant, sleep_until};

use super::{AwsError, Inner, Op, VisibilityChange, World, take_one};

/// SQS's default visibility timeout, for a receive that names none.
const DEFAULT_VISIBILITY: Duration = Duration::from_secs(30);

/// How many messages a queue holds, by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub visible: usize,
    pub in_flight: usize,
    pub deleted: usize,
}

struct Message {
    id: String,
    body: String,
    sent_at_ms: u128,
    visible_at: Instant,
    receipts: Vec<String>,
    /// Delivered again at the next receive without making the current receipts stale.
    again_at_once: bool,
}

pub(super) struct Queue {
    name: String,
    messages: BTreeMap<u64, Message>,
    deleted: usize,
    /// The valid receipts of messages deleted.
    deleted_receipts: HashSet<String>,
    receipts_issued: u64,
    /// Its `MaximumMessageSize` attribute (SQS's default for a queue created without it: 256
    /// KiB). Not enforced on sends: a test puts what it wants to.
    pub(super) max_message_size: usize,
}

impl Queue {
    pub(super) fn new(name: &str) -> Queue {
        Queue {
            name: name.to_owned(),
            messages: BTreeMap::new(),
            deleted: 0,
            deleted_receipts: HashSet::new(),
            receipts_issued: 0,
            max_message_size: 262_144,
        }
    }

    pub(super) fn push(&mut self, n: u64, body: String) -> String {
        let id = format!("00000000-0000-4000-8000-{n:012x}");
        let sent_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        self.messages.insert(
            n,
            Message {
                id: id.clone(),
                body,
                sent_at_ms,
                visible_at: Instant::now(),
                receipts: Vec::new(),
                again_at_once: false,
            },
        );
        id
    }

    pub(super) fn counts(&self, now: Instant) -> QueueCounts {
        let visible = self.messages.values().filter(|m| m.visible_at <= now).count();
        QueueCounts {
            visible,
            in_flight: self.messages.len() - visible,
            deleted: self.deleted,
        }
    }

    pub(super) fn bodies(&self) -> Vec<String> {
        self.messages.values().map(|m| m.body.clone()).collect()
    }

    pub(super) fn expire_receipts(&mut self) {
        let now = Instant::now();
        for message in self.messages.values_mut() {
            message.receipts.clear();
            message.visible_at = message.visible_at.min(now);
        }
    }

    /// The message a receipt names, if the receipt is still valid.
    fn by_receipt(&mut self, receipt: &str) -> Option<(u64, &mut Message)> {
        let n: u64 = receipt.split('-').next()?.parse().ok()?;
        let message = self.messages.get_mut(&n)?;
        message.receipts.iter().any(|r| r == receipt).then_some((n, message))
    }

    /// Takes up to `max` visible messages in the order sent.
    fn receive(&mut self, max: usize, visibility: Duration, duplicates: &mut usize) -> Vec<Value> {
        let now = Instant::now();
        let ready: Vec<u64> = self
            .messages
            .iter()
            .filter(|(_, m)| m.visible_at <= now)
            .map(|(n, _)| *n)
            .take(max)
            .collect();
        let mut out = Vec::new();
        for n in ready {
            self.receipts_issued += 1;
            let receipt = format!("{n}-{}-receipt", self.receipts_issued);
            let Some(message) = self.messages.get_mut(&n) else {
                continue;
            };
            if !std::mem::take(&mut message.again_at_once) {
                message.receipts.clear();
            }
            message.receipts.push(receipt.clone());
            if *duplicates > 0 {
                *duplicates -= 1;
                message.again_at_once = true;
                message.visible_at = now;
            } else {
                message.visible_at = now + visibility;
            }
            out.push(json!({
                "MessageId": message.id,
                "ReceiptHandle": receipt,
                "Body": message.body,
                "Attributes": {"SentTimestamp": message.sent_at_ms.to_string()},
            }));
        }
        out
    }

    /// When the next in-flight message becomes visible again.
    fn next_visible(&self, now: Instant) -> Option<Instant> {
        self.messages
            .values()
            .map(|m| m.visible_at)
            .filter(|at| *at > now)
            .min()
    }
}

fn queue_url(request: &Value) -> Result<&str, AwsError> {
    request["QueueUrl"]
        .as_str()
        .ok_or_else(|| AwsError::new(400, "MissingParameter", "QueueUrl is required"))
}

fn no_queue() -> AwsError {
    AwsError::new(400, "QueueDoesNotExist", "The specified queue does not exist.")
}

fn queue<'w>(world: &'w mut World, request: &Value) -> Result<&'w mut Queue, AwsError> {
    let url = queue_url(request)?;
    world.queues.get_mut(url).ok_or_else(no_queue)
}

fn seconds(value: &Value) -> Option<Duration> {
    value.as_u64().map(Duration::from_secs)
}

/// A long poll: answers at once when messages are visible, otherwise when one becomes
/// visible or the wait ends.
pub(super) async fn receive_message(inner: &Inner, request: &Value) -> Result<(Value, usize), AwsError> {
    let url = queue_url(request)?.to_owned();
    let max = request["MaxNumberOfMessages"].as_u64().unwrap_or(1).clamp(1, 10) as usize;
    let wait = seconds(&request["WaitTimeSeconds"]).unwrap_or_default();
    let visibility = seconds(&request["VisibilityTimeout"]).unwrap_or(DEFAULT_VISIBILITY);
    let deadline = Instant::now() + wait;
    loop {
        let notified = inner.arrivals.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let wake_at = {
            let mut world = inner.world.lock().unwrap_or_else(|e| e.into_inner());
            let world = &mut *world;
            let queue = world.queues.get_mut(&url).ok_or_else(no_queue)?;
            let messages = queue.receive(max, visibility, &mut world.faults.duplicates);
            let now = Instant::now();
            if !messages.is_empty() || now >= deadline {
                let n = messages.len();
                return Ok((json!({ "Messages": messages }), n));
            }
            queue.next_visible(now).map_or(deadline, |at| at.min(deadline))
        };
        tokio::select! {
            _ = notified => {}
            _ = sleep_until(wake_at) => {}
        }
    }
}

/// Applies `apply` to each entry of an SQS batch call, after any per-entry failure switched on.
fn batch(
    world: &mut World,
    op: Op,
    request: &Value,
    mut apply: impl FnMut(&mut World, &Value) -> Result<(), (String, String)>,
) -> Result<(Value, usize), AwsError> {
    let entries = request["Entries"].as_array().cloned().unwrap_or_default();
    if entries.is_empty() || entries.len() > 10 {
        return Err(AwsError::new(
            400,
            "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
            "1 to 10 entries",
        ));
    }
    queue(world, request)?;
    let (mut successful, mut failed) = (Vec::new(), Vec::new());
    for entry in &entries {
        let id = entry["Id"].clone();
        let injected = world.faults.entry_failures.get_mut(&op).and_then(take_one);
        let outcome = match injected {
            Some(code) => Err((code, "injected failure".to_owned())),
            None => apply(world, entry),
        };
        match outcome {
            Ok(()) => successful.push(json!({ "Id": id })),
            Err((code, message)) => failed.push(json!({
                "Id": id, "SenderFault": code != "InternalError", "Code": code, "Message": message,
            })),
        }
    }
    let n = entries.len();
    Ok((json!({ "Successful": successful, "Failed": failed }), n))
}

pub(super) fn delete_message_batch(world: &mut World, request: &Value) -> Result<(Value, usize), AwsError> {
    let url = queue_url(request)?.to_owned();
    batch(world, Op::DeleteMessageBatch, request, |world, entry| {
        let queue = world
            .queues
            .get_mut(&url)
            .ok_or_else(|| ("QueueDoesNotExist".to_owned(), String::new()))?;
        let receipt = entry["ReceiptHandle"].as_str().unwrap_or_default();
        if queue.deleted_receipts.contains(receipt) {
            return Ok(());
        }
        let (n, _) = queue.by_receipt(receipt).ok_or_else(invalid_receipt)?;
        if let Some(message) = queue.messages.remove(&n) {
            queue.deleted_receipts.extend(message.receipts);
            queue.deleted += 1;
        }
        Ok(())
    })
}

pub(super) fn change_visibility_batch(world: &mut World, request: &Value) -> Result<(Value, usize), AwsError> {
    let url = queue_url(request)?.to_owned();
    batch(world, Op::ChangeMessageVisibilityBatch, request, |world, entry| {
        let queue = world
            .queues
            .get_mut(&url)
            .ok_or_else(|| ("QueueDoesNotExist".to_owned(), String::new()))?;
        let receipt = entry["ReceiptHandle"].as_str().unwrap_or_default();
        let timeout = seconds(&entry["VisibilityTimeout"]).unwrap_or_default();
        let now = Instant::now();
        let (_, message) = queue.by_receipt(receipt).ok_or_else(invalid_receipt)?;
        if message.visible_at <= now {
            return Err((
                "MessageNotInflight".to_owned(),
                "the message is not in flight".to_owned(),
            ));
        }
        message.visible_at = now + timeout;
        let message_id = message.id.clone();
        world.visibility_changes.push(VisibilityChange {
            message_id,
            timeout,
            at: now,
        });
        Ok(())
    })
}

fn invalid_receipt() -> (String, String) {
    (
        "ReceiptHandleIsInvalid".to_owned(),
        "the receipt handle is not valid".to_owned(),
    )
}

pub(super) fn send_message(world: &mut World, request: &Value) -> Result<(Value, usize), AwsError> {
    let body = request["MessageBody"].as_str().unwrap_or_default().to_owned();
    let n = world.next_id();
    let id = queue(world, request)?.push(n, body);
    Ok((json!({ "MessageId": id }), 1))
}

pub(super) fn get_queue_url(world: &World, request: &Value) -> Result<(Value, usize), AwsError> {
    let name = request["QueueName"].as_str().unwrap_or_default();
    let url = world
        .queues
        .iter()
        .find(|(_, q)| q.name == name)
        .map(|(url, _)| url.clone())
        .ok_or_else(no_queue)?;
    Ok((json!({ "QueueUrl": url }), 1))
}

pub(super) fn get_queue_attributes(world: &World, request: &Value) -> Result<(Value, usize), AwsError> {
    let url = queue_url(request)?;
    let queue = world.queues.get(url).ok_or_else(no_queue)?;
    let counts = queue.counts(Instant::now());
    let all = json!({
        "MaximumMessageSize": queue.max_message_size.to_string(),
        "VisibilityTimeout": DEFAULT_VISIBILITY.as_secs().to_string(),
        "ApproximateNumberOfMessages": counts.visible.to_string(),
        "ApproximateNumberOfMessagesNotVisible": counts.in_flight.to_string(),
        "QueueArn": format!("arn:aws:sqs:us-east-1:000000000000:{}", queue.name),
    });
    let asked: Vec<&str> = request["AttributeNames"]
        .as_array()
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let attributes: serde_json::Map<String, Value> = all
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(name, _)| asked.contains(&"All") || asked.contains(&name.as_str()))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    Ok((json!({ "Attributes": attributes }), 1))
}
