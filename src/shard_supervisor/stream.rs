//! The stream's side: what DescribeStreamSummary says of it, its open shards (for the
//! shard-level metrics), and the UpdateShardCount call. Each is one call, answered in the
//! supervisor's own types; none is retried here (the next interval asks again).

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_kinesis::types::{MetricsName, ScalingType, StreamMode as SdkStreamMode, StreamStatus as SdkStatus};

use super::CallError;
use super::policy::{StreamMode, StreamState, StreamStatus};

/// DescribeStreamSummary, with whether the shard-level `IncomingRecords` and `IncomingBytes`
/// are published (enhanced monitoring).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Described {
    pub state: StreamState,
    pub shard_metrics: bool,
}

pub(crate) async fn describe(client: &Client, stream: &str) -> Result<Described, CallError> {
    let output = client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .map_err(CallError::from_sdk)?;
    let summary = output.stream_description_summary.ok_or_else(|| CallError {
        code: None,
        message: None,
        detail: "DescribeStreamSummary answered without a description".to_owned(),
    })?;
    let mode = match summary.stream_mode_details.map(|d| d.stream_mode) {
        Some(SdkStreamMode::OnDemand) => StreamMode::OnDemand,
        // Endpoints that predate on-demand streams do not say: those are provisioned.
        _ => StreamMode::Provisioned,
    };
    let status = match summary.stream_status {
        SdkStatus::Active => StreamStatus::Active,
        SdkStatus::Updating => StreamStatus::Updating,
        _ => StreamStatus::Other,
    };
    let enabled: Vec<MetricsName> = summary
        .enhanced_monitoring
        .iter()
        .flat_map(|m| m.shard_level_metrics.iter().flatten().cloned())
        .collect();
    let has = |name: &MetricsName| enabled.contains(&MetricsName::All) || enabled.contains(name);
    Ok(Described {
        state: StreamState {
            mode,
            status,
            open_shards: summary.open_shard_count.max(0) as u32,
        },
        shard_metrics: has(&MetricsName::IncomingRecords) && has(&MetricsName::IncomingBytes),
    })
}

/// The ids of the stream's open shards (ListShards, every page).
pub(crate) async fn open_shards(client: &Client, stream: &str) -> Result<Vec<String>, String> {
    let mut ids = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let request = match &token {
            // A call with a token must not name the stream.
            Some(token) => client.list_shards().next_token(token),
            None => client.list_shards().stream_name(stream),
        };
        let output = request.send().await.map_err(|e| DisplayErrorContext(e).to_string())?;
        for shard in output.shards.unwrap_or_default() {
            let closed = shard
                .sequence_number_range
                .as_ref()
                .is_some_and(|r| r.ending_sequence_number.is_some());
            if !closed {
                ids.push(shard.shard_id);
            }
        }
        match output.next_token {
            Some(next) if !next.is_empty() => token = Some(next),
            _ => return Ok(ids),
        }
    }
}

/// How an UpdateShardCount call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ResizeOutcome {
    Accepted,
    /// ResourceInUseException: the stream is being updated (by another supervisor, say).
    InUse(String),
    /// Any other failure: refused (permissions, limits) or not answered.
    Failed(String),
}

impl ResizeOutcome {
    /// The `outcome` label of `telemetry_shard_supervisor_resize_calls_total`.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            ResizeOutcome::Accepted => "ok",
            ResizeOutcome::InUse(_) => "in_use",
            ResizeOutcome::Failed(_) => "failed",
        }
    }
}

/// UpdateShardCount with uniform scaling.
pub(crate) async fn update_shard_count(client: &Client, stream: &str, target: u32) -> ResizeOutcome {
    let answer = client
        .update_shard_count()
        .stream_name(stream)
        .target_shard_count(target.min(i32::MAX as u32) as i32)
        .scaling_type(ScalingType::UniformScaling)
        .send()
        .await;
    match answer {
        Ok(_) => ResizeOutcome::Accepted,
        Err(e) if e.code() == Some("ResourceInUseException") => {
            ResizeOutcome::InUse(DisplayErrorContext(e).to_string())
        }
        Err(e) => ResizeOutcome::Failed(DisplayErrorContext(e).to_string()),
    }
}
