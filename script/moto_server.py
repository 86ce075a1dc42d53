"""moto's server with the two races that matter to the collector's tests closed.

moto serves requests on threads, but its Kinesis shard assigns sequence numbers without a lock
(two concurrent PutRecords calls can get the same number, and one record overwrites the other),
its resharding rewrites a shard's records while others are being written, and its SQS ReceiveMessage checks and marks visibility without a lock (two concurrent receives
can both take the same message). Tests of a collector that calls both concurrently would see
those as lost or duplicated data. Here every such call holds one lock; long polls wait outside
it.

Usage: python moto_server.py -H HOST -p PORT (the arguments of moto_server).
"""

import functools
import sys
import threading
import time

from moto import server
from moto.kinesis.models import Shard, Stream
from moto.sqs.models import SQSBackend

LOCK = threading.RLock()


def locked(method):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with LOCK:
            return method(*args, **kwargs)

    return wrapper


Shard.put_record = locked(Shard.put_record)
# moto's resharding moves a shard's records out and writes them again; a record written by a
# concurrent PutRecords in between would be lost or land ahead of older ones.
Stream.split_shard = locked(Stream.split_shard)
Stream.merge_shards = locked(Stream.merge_shards)
for name in (
    "send_message",
    "send_message_batch",
    "delete_message",
    "delete_message_batch",
    "change_message_visibility",
    "change_message_visibility_batch",
    "purge_queue",
):
    setattr(SQSBackend, name, locked(getattr(SQSBackend, name)))

_receive = SQSBackend.receive_message


@functools.wraps(_receive)
def receive_message(self, queue_name, count, wait_seconds_timeout, visibility_timeout, message_attribute_names=None):
    # Each attempt is an atomic non-waiting receive; the long poll is the loop around it.
    deadline = time.monotonic() + (wait_seconds_timeout or 0)
    while True:
        with LOCK:
            result = _receive(self, queue_name, count, 0, visibility_timeout, message_attribute_names)
        if result or time.monotonic() >= deadline:
            return result
        time.sleep(0.05)


SQSBackend.receive_message = receive_message

if __name__ == "__main__":
    server.main(sys.argv[1:])
