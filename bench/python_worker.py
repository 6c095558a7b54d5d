"""The Python worker figure 8 compares against: written the way the common
Cloud Run worker-pool tutorial does it, on purpose (do not "fix" it).

google-cloud-pubsub streaming pull with a callback (the client's default
flow control and thread pool), a new google-cloud-storage client for every
message, a timestamp object name, upload then ack, and no SIGTERM handling.
Both clients honour PUBSUB_EMULATOR_HOST / STORAGE_EMULATOR_HOST.
"""

import datetime
import os

from google.cloud import pubsub_v1, storage

project_id = os.environ["PROJECT_ID"]
subscription_id = os.environ["SUBSCRIPTION_ID"]
bucket_name = os.environ["BUCKET_NAME"]

subscriber = pubsub_v1.SubscriberClient()
subscription_path = subscriber.subscription_path(project_id, subscription_id)


def callback(message):
    data = message.data.decode("utf-8")
    storage_client = storage.Client()
    bucket = storage_client.bucket(bucket_name)
    name = f"message-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S-%f')}.txt"
    bucket.blob(name).upload_from_string(data)
    message.ack()


streaming_pull_future = subscriber.subscribe(subscription_path, callback=callback)
print(f"Listening for messages on {subscription_path}", flush=True)
with subscriber:
    try:
        streaming_pull_future.result()
    except Exception:
        streaming_pull_future.cancel()
        streaming_pull_future.result()
