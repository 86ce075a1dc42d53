#!/bin/bash
# LocalStack ready hook: creates what the collector and the sensor fleet expect, then leaves a
# marker that the compose healthcheck looks for. LocalStack runs every executable *.sh under
# /etc/localstack/init/ready.d once its services answer. Safe to run again (create calls on
# existing resources are tolerated), so a restarted container ends in the same state.
set -euo pipefail

marker=/tmp/telemetry-init-done
rm -f "$marker"

queue=${SUBMISSIONS_QUEUE_NAME:-submissions}
dlq=${DEAD_LETTER_QUEUE_NAME:-submissions-dlq}
stream=${EVENTS_DATA_STREAM_NAME:-events}
shards=${EVENTS_DATA_STREAM_SHARDS:-2}

# CreateQueue is idempotent when the attributes match.
awslocal sqs create-queue --queue-name "$dlq" >/dev/null
awslocal sqs create-queue --queue-name "$queue" >/dev/null
echo "init: queues $queue and $dlq exist"

if ! awslocal kinesis describe-stream-summary --stream-name "$stream" >/dev/null 2>&1; then
  awslocal kinesis create-stream --stream-name "$stream" --shard-count "$shards"
fi
# The collector resolves the stream at start and is only ready once it is ACTIVE.
awslocal kinesis wait stream-exists --stream-name "$stream"
read -r status open_shards < <(awslocal kinesis describe-stream-summary --stream-name "$stream" \
  --query 'StreamDescriptionSummary.[StreamStatus,OpenShardCount]' --output text)
if [ "$status" != "ACTIVE" ]; then
  echo "init: stream $stream is $status, expected ACTIVE" >&2
  exit 1
fi
echo "init: stream $stream is ACTIVE with $open_shards open shards"

touch "$marker"
