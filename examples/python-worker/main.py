"""The Cloud Run worker-pool tutorial's Pub/Sub -> Cloud Storage worker
(bench/python_worker.py), changed as little as needed to lose and duplicate
nothing when it is stopped; README.md beside this file gives the diff and
the reason for each change. Run it behind rinit (see the Procfile).
"""

import os
import signal
from concurrent import futures

from google.api_core import exceptions
from google.cloud import pubsub_v1, storage

project_id = os.environ["PROJECT_ID"]
subscription_id = os.environ["SUBSCRIPTION_ID"]
bucket_name = os.environ["BUCKET_NAME"]
# How long a stop may wait for the callbacks in flight: rinit's time from
# the SIGTERM it forwards to its own deadline, less a margin. Without rinit
# (or with --grace=none), 7 s: what rinit gives under Cloud Run's 10 s.
drain_seconds = int(os.environ.get("RINIT_DRAIN_MS", "7000")) / 1000

subscriber = pubsub_v1.SubscriberClient()
subscription_path = subscriber.subscription_path(project_id, subscription_id)


def callback(message):
    data = message.data.decode("utf-8")
    storage_client = storage.Client()
    bucket = storage_client.bucket(bucket_name)
    # Named by the message, not the clock: a redelivery writes the same name,
    # and if_generation_match=0 creates it only if it does not exist yet.
    name = f"message-{message.message_id}.txt"
    try:
        bucket.blob(name).upload_from_string(data, if_generation_match=0)
    except exceptions.PreconditionFailed:
        # 412: an earlier delivery stored it (and its ack was lost): ack now.
        print(f"{name} was stored by an earlier delivery", flush=True)
    message.ack()


class Stop(Exception):
    """SIGTERM arrived (rinit forwards the platform's)."""


def on_sigterm(signum, frame):
    # The main thread waits in streaming_pull_future.result() below: this
    # takes it to the tutorial's own shutdown path, once.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Stop()


# await_callbacks_on_shutdown: after cancel(), result() returns only when
# the callbacks in flight are done and their acks are sent; messages the
# client held but had not started are nacked (redelivered at once).
streaming_pull_future = subscriber.subscribe(
    subscription_path, callback=callback, await_callbacks_on_shutdown=True
)
signal.signal(signal.SIGTERM, on_sigterm)
print(f"Listening for messages on {subscription_path} (drain budget {drain_seconds} s)", flush=True)
with subscriber:
    try:
        streaming_pull_future.result()
    except Exception:
        streaming_pull_future.cancel()  # stop pulling
        try:
            streaming_pull_future.result(timeout=drain_seconds)
        except futures.TimeoutError:
            # Callbacks still running: leave now (the interpreter would wait
            # for their threads). Their messages were not acked, so Pub/Sub
            # redelivers them, and a write that did finish meets the 412.
            print("drain budget spent; unfinished messages will be redelivered", flush=True)
            os._exit(1)
