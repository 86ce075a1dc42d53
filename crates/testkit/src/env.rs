//! A fresh queue and 2-shard stream per test on the emulator that `script/test` started, with
//! clients for both, and readers for what ended up on the stream and in the queue.

use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_kinesis::types::ShardIteratorType;
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use serde_json::Value;

pub const REGION: &str = "eu-west-1";

/// The emulator endpoint. `script/test` starts one and sets `TEST_AWS_ENDPOINT_URL`.
pub fn endpoint() -> String {
    std::env::var("TEST_AWS_ENDPOINT_URL")
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .expect("integration tests need an emulator: run them with script/test (or set TEST_AWS_ENDPOINT_URL)")
}

/// The Kinesis endpoint: `TEST_AWS_KINESIS_ENDPOINT_URL` when Kinesis is served by an emulator
/// of its own (`script/chaos` does that), else `endpoint`.
pub fn kinesis_endpoint(endpoint: &str) -> String {
    std::env::var("TEST_AWS_KINESIS_ENDPOINT_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| endpoint.to_owned())
}

pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .test_credentials()
        .endpoint_url(endpoint)
        .load()
        .await
}

/// One record read back from the stream.
#[derive(Debug, Clone)]
pub struct StreamRecord {
    pub shard_id: String,
    pub partition_key: String,
    pub event: Value,
}

impl StreamRecord {
    pub fn submission_id(&self) -> &str {
        self.event["submission_id"].as_str().unwrap_or_default()
    }
    pub fn event_index(&self) -> u64 {
        self.event["event_index"].as_u64().unwrap_or(u64::MAX)
    }
}

/// A queue and a 2-shard stream of this test's own, with clients for both.
pub struct TestEnv {
    /// SQS's endpoint, and Kinesis's unless `kinesis_endpoint` differs.
    pub endpoint: String,
    pub kinesis_endpoint: String,
    pub sdk: SdkConfig,
    pub sqs: aws_sdk_sqs::Client,
    pub kinesis: aws_sdk_kinesis::Client,
    pub queue_url: String,
    pub stream_name: String,
}

impl TestEnv {
    pub async fn new(label: &str) -> TestEnv {
        // The collector's logs, shown by the test runner when a test fails.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::new("telemetry_collector=debug"))
            .try_init();
        let endpoint = endpoint();
        let kinesis_endpoint = kinesis_endpoint(&endpoint);
        let sdk = sdk_config(&endpoint).await;
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let kinesis = aws_sdk_kinesis::Client::from_conf(
            aws_sdk_kinesis::config::Builder::from(&sdk)
                .endpoint_url(&kinesis_endpoint)
                .build(),
        );
        let unique = format!("{label}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let queue_url = sqs
            .create_queue()
            .queue_name(format!("submissions-{unique}"))
            .send()
            .await
            .expect("CreateQueue")
            .queue_url
            .expect("queue url");
        let stream_name = format!("events-{unique}");
        create_stream(&kinesis, &stream_name).await;
        TestEnv {
            endpoint,
            kinesis_endpoint,
            sdk,
            sqs,
            kinesis,
            queue_url,
            stream_name,
        }
    }

    /// The same emulator and clients with another queue and stream (made by the test itself).
    pub fn retarget(&self, queue_url: &str, stream_name: &str) -> TestEnv {
        TestEnv {
            endpoint: self.endpoint.clone(),
            kinesis_endpoint: self.kinesis_endpoint.clone(),
            sdk: self.sdk.clone(),
            sqs: self.sqs.clone(),
            kinesis: self.kinesis.clone(),
            queue_url: queue_url.to_owned(),
            stream_name: stream_name.to_owned(),
        }
    }

    /// Sends bodies in SendMessageBatch calls of 10, in order.
    pub async fn send(&self, bodies: &[String]) {
        send_to(&self.sqs, &self.queue_url, bodies).await;
    }

    /// (visible, in flight) message counts of the queue.
    pub async fn queue_counts(&self) -> (u64, u64) {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("GetQueueAttributes");
        let attrs = out.attributes.unwrap_or_default();
        let get = |name: QueueAttributeName| attrs.get(&name).and_then(|v| v.parse().ok()).unwrap_or(0);
        (
            get(QueueAttributeName::ApproximateNumberOfMessages),
            get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        )
    }

    pub async fn queue_total(&self) -> u64 {
        let (visible, in_flight) = self.queue_counts().await;
        visible + in_flight
    }

    /// Every shard of the stream, open and closed, in ListShards order (parents first).
    pub async fn shards(&self) -> Vec<aws_sdk_kinesis::types::Shard> {
        self.kinesis
            .list_shards()
            .stream_name(&self.stream_name)
            .send()
            .await
            .expect("ListShards")
            .shards
            .unwrap_or_default()
    }

    /// Every record on the stream, shard by shard, each shard in sequence order.
    pub async fn read_stream(&self) -> Vec<StreamRecord> {
        let shards = self.shards().await;
        let mut records = Vec::new();
        for shard in shards {
            let mut iterator = self
                .kinesis
                .get_shard_iterator()
                .stream_name(&self.stream_name)
                .shard_id(&shard.shard_id)
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .expect("GetShardIterator")
                .shard_iterator;
            while let Some(it) = iterator {
                let out = self
                    .kinesis
                    .get_records()
                    .shard_iterator(it)
                    .limit(10_000)
                    .send()
                    .await
                    .expect("GetRecords");
                if out.records.is_empty() {
                    break;
                }
                for r in out.records {
                    records.push(StreamRecord {
                        shard_id: shard.shard_id.clone(),
                        partition_key: r.partition_key.unwrap_or_default(),
                        event: serde_json::from_slice(r.data.as_ref()).expect("record data is JSON"),
                    });
                }
                iterator = out.next_shard_iterator;
            }
        }
        records
    }
}

/// A plain HTTP/1.0 GET: (status code, body); status 0 when nothing listens yet.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: collector\r\n\r\n").as_bytes())
        .await
        .expect("send HTTP request");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read HTTP response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("HTTP status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Creates a 2-shard stream and waits until it is active.
pub async fn create_stream(kinesis: &aws_sdk_kinesis::Client, name: &str) {
    create_stream_with(kinesis, name, Some(2)).await;
}

/// Creates stream `name` with `shards` shards, or on-demand with `None`, and waits until it is
/// ACTIVE.
pub async fn create_stream_with(kinesis: &aws_sdk_kinesis::Client, name: &str, shards: Option<u32>) {
    use aws_sdk_kinesis::types::{StreamMode, StreamModeDetails};
    let request = kinesis.create_stream().stream_name(name);
    let request = match shards {
        Some(shards) => request.shard_count(shards as i32),
        None => request.stream_mode_details(
            StreamModeDetails::builder()
                .stream_mode(StreamMode::OnDemand)
                .build()
                .expect("the stream mode is set"),
        ),
    };
    request.send().await.expect("CreateStream");
    wait_until("stream active", Duration::from_secs(60), || async {
        stream_summary(kinesis, name).await.0 == "ACTIVE"
    })
    .await;
}

/// (status, open shards) of stream `name`; empty when it cannot be described.
pub async fn stream_summary(kinesis: &aws_sdk_kinesis::Client, name: &str) -> (String, i32) {
    kinesis
        .describe_stream_summary()
        .stream_name(name)
        .send()
        .await
        .ok()
        .and_then(|o| o.stream_description_summary)
        .map(|s| (s.stream_status.as_str().to_owned(), s.open_shard_count))
        .unwrap_or_default()
}

/// Sends bodies to a queue in SendMessageBatch calls of 10, in order.
pub async fn send_to(sqs: &aws_sdk_sqs::Client, queue_url: &str, bodies: &[String]) {
    for chunk in bodies.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, body)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .build()
                    .unwrap()
            })
            .collect();
        let out = sqs
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .expect("SendMessageBatch");
        assert!(out.failed.is_empty(), "SendMessageBatch failures: {:?}", out.failed);
    }
}

/// A loopback port free at the time of asking, for a collector binary's HTTP endpoints.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Sends SIGTERM to a child process, as Kubernetes and ECS do on a rolling deploy.
pub fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("the child is running");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM {pid}");
}

/// Polls `condition` until it holds; panics naming `what` after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A sample's value in a Prometheus text exposition (`name{labels}` exactly as exposed).
pub fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(name_and_labels)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
    })
}

/// The JSON summary `sensor-fleet` and `stream-reader` write as their last stdout line; `what`
/// names the tool in the panic when there is none.
pub fn tool_summary(what: &str, output: &std::process::Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "{what}: no JSON summary ({e}) in:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}
