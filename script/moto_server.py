"""moto's server with the two races that matter to the collector's tests closed, Kinesis
resizing that takes time as on AWS, and CloudWatch spoken in the protocol today's SDKs use.

moto serves requests on threads, but its Kinesis shard assigns sequence numbers without a lock
(two concurrent PutRecords calls can get the same number, and one record overwrites the other),
its resharding rewrites a shard's records while others are being written, and its SQS ReceiveMessage checks and marks visibility without a lock (two concurrent receives
can both take the same message). Tests of a collector that calls both concurrently would see
those as lost or duplicated data. Here every such call holds the lock of its stream or queue;
long polls wait outside it.

UpdateShardCount: on AWS a stream is UPDATING for a while after the call, and a second call
meanwhile fails with ResourceInUseException; moto resizes at once and stays ACTIVE. Here the
stream reports UPDATING for RESIZE_SECONDS after the call, and refuses a second one until then,
so that the shard supervisor's tests see what it must wait for.

CloudWatch: aws-sdk-cloudwatch (Rust, 1.1xx) speaks only Smithy RPC v2 CBOR
(`POST /service/GraniteServiceVersion20100801/operation/<Op>`, `smithy-protocol: rpc-v2-cbor`),
which moto does not parse; moto speaks the service's JSON 1.0 protocol. `CborToJson` turns such
a request into the JSON one, and the answer back into CBOR, using botocore's model of the
service for the shapes CBOR types apart from JSON (timestamps: tag 1; blobs: byte strings).

Usage: python moto_server.py -H HOST -p PORT (the arguments of moto_server).
"""

import base64
import datetime
import functools
import gzip
import inspect
import io
import json
import sys
import threading
import time

import cbor2
from botocore.loaders import create_loader
from botocore.model import ServiceModel
from moto import server
from moto.kinesis.exceptions import ResourceInUseError
from moto.kinesis.models import KinesisBackend
from moto.sqs.models import SQSBackend

# One lock per queue and one per stream, not one for the whole server: moto's receive scans every
# message of its queue (and a delete or visibility change scans for its receipt), so on a queue
# with a backlog these calls take long, and with a single lock every other queue's and stream's
# calls would queue behind them. Calls given up by their clients meanwhile still wait for the
# lock on moto's threads, which slows the rest further: under load the server could collapse
# with thousands of threads waiting, each call timing out.
_LOCKS = {}
_LOCKS_GUARD = threading.Lock()


def lock_for(*key):
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.RLock())


def locked_by(resource, *names):
    """Wraps a backend method so that it holds the lock of the queue or stream it is called on:
    the argument named `names[0]` (or the next name, when that is None; an ARN's last part)."""

    def wrap(method):
        signature = inspect.signature(method)

        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            bound = signature.bind(self, *args, **kwargs).arguments
            value = next((bound[n] for n in names if bound.get(n)), "")
            key = str(value).rsplit("/", 1)[-1]
            with lock_for(resource, self.account_id, self.region_name, key):
                return method(self, *args, **kwargs)

        return wrapper

    return wrap


stream_locked = locked_by("kinesis", "stream_name", "stream_arn")
queue_locked = locked_by("sqs", "queue_name")

# A stream's sequence numbers and its resharding (which moves a shard's records out and writes
# them again: a record written in between would be lost or land ahead of older ones).
for name in ("put_record", "put_records", "split_shard", "merge_shards"):
    setattr(KinesisBackend, name, stream_locked(getattr(KinesisBackend, name)))
for name in (
    "send_message",
    "send_message_batch",
    "delete_message",
    "delete_message_batch",
    "change_message_visibility",
    "change_message_visibility_batch",
    "purge_queue",
):
    setattr(SQSBackend, name, queue_locked(getattr(SQSBackend, name)))

_receive = queue_locked(SQSBackend.receive_message)


@functools.wraps(_receive)
def receive_message(self, queue_name, count, wait_seconds_timeout, visibility_timeout, message_attribute_names=None):
    # Each attempt is an atomic non-waiting receive; the long poll is the loop around it.
    deadline = time.monotonic() + (wait_seconds_timeout or 0)
    while True:
        result = _receive(self, queue_name, count, 0, visibility_timeout, message_attribute_names)
        if result or time.monotonic() >= deadline:
            return result
        time.sleep(0.05)


SQSBackend.receive_message = receive_message

RESIZE_SECONDS = 5.0
_describe_stream = KinesisBackend.describe_stream
_update_shard_count = KinesisBackend.update_shard_count


@functools.wraps(_describe_stream)
def describe_stream(self, stream_arn, stream_name):
    stream = _describe_stream(self, stream_arn, stream_name)
    if getattr(stream, "updating_until", None) is not None and time.monotonic() >= stream.updating_until:
        stream.updating_until = None
        stream.status = "ACTIVE"
    return stream


@stream_locked
def update_shard_count(self, stream_arn, stream_name, target_shard_count):
    stream = describe_stream(self, stream_arn, stream_name)
    if stream.status != "ACTIVE":
        raise ResourceInUseError(f"Stream {stream.stream_name} is in {stream.status} state")
    current = _update_shard_count(self, stream_arn, stream_name, target_shard_count)
    stream.status = "UPDATING"
    stream.updating_until = time.monotonic() + RESIZE_SECONDS
    return current


KinesisBackend.describe_stream = describe_stream
KinesisBackend.update_shard_count = update_shard_count

CLOUDWATCH = ServiceModel(create_loader().load_service_model("cloudwatch", "service-2"))
CBOR_PREFIX = "/service/GraniteServiceVersion20100801/operation/"


def cbor_to_json(value, shape):
    """A decoded CBOR value as the JSON protocol writes it."""
    if shape is None:
        return value
    if shape.type_name == "structure":
        return {k: cbor_to_json(v, shape.members.get(k)) for k, v in value.items()}
    if shape.type_name == "list":
        return [cbor_to_json(v, shape.member) for v in value]
    if shape.type_name == "map":
        return {k: cbor_to_json(v, shape.value) for k, v in value.items()}
    if shape.type_name == "timestamp":
        return value.timestamp() if isinstance(value, datetime.datetime) else value
    if shape.type_name == "blob":
        return base64.b64encode(value).decode()
    return value


def json_to_cbor(value, shape):
    """A JSON protocol value as CBOR encodes it."""
    if shape is None:
        return value
    if shape.type_name == "structure":
        return {k: json_to_cbor(v, shape.members.get(k)) for k, v in value.items()}
    if shape.type_name == "list":
        return [json_to_cbor(v, shape.member) for v in value]
    if shape.type_name == "map":
        return {k: json_to_cbor(v, shape.value) for k, v in value.items()}
    if shape.type_name == "timestamp":
        return cbor2.CBORTag(1, float(value))
    if shape.type_name == "blob":
        return base64.b64decode(value)
    return value


class CborToJson:
    """WSGI middleware: RPC v2 CBOR CloudWatch requests to moto's JSON 1.0, answers back."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if not path.startswith(CBOR_PREFIX):
            return self.app(environ, start_response)
        operation = CLOUDWATCH.operation_model(path[len(CBOR_PREFIX) :])
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        if environ.get("HTTP_CONTENT_ENCODING") == "gzip":
            body = gzip.decompress(body)
            environ.pop("HTTP_CONTENT_ENCODING")
        request = cbor_to_json(cbor2.loads(body) if body else {}, operation.input_shape)
        body = json.dumps(request).encode()
        environ.update(
            {
                "PATH_INFO": "/",
                "CONTENT_TYPE": "application/x-amz-json-1.0",
                "HTTP_X_AMZ_TARGET": f"GraniteServiceVersion20100801.{operation.name}",
                "CONTENT_LENGTH": str(len(body)),
                "wsgi.input": io.BytesIO(body),
            }
        )
        answer = {}

        def capture(status, headers, exc_info=None):
            answer["status"] = status
            return lambda _: None

        raw = b"".join(self.app(environ, capture))
        parsed = json.loads(raw) if raw.strip() else {}
        ok = answer["status"].startswith("2")
        if not ok and "__type" in parsed:
            # JSON 1.0 errors may carry the shape's namespace: `ns#Name`; CBOR clients take either.
            parsed["__type"] = parsed["__type"].split("#")[-1]
        out = cbor2.dumps(json_to_cbor(parsed, operation.output_shape) if ok else parsed)
        start_response(
            answer["status"],
            [
                ("Content-Type", "application/cbor"),
                ("smithy-protocol", "rpc-v2-cbor"),
                ("Content-Length", str(len(out))),
            ],
        )
        return [out]


_dispatcher = server.DomainDispatcherApplication


def dispatcher(*args, **kwargs):
    return CborToJson(_dispatcher(*args, **kwargs))


server.DomainDispatcherApplication = dispatcher

if __name__ == "__main__":
    server.main(sys.argv[1:])
