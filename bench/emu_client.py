"""Pub/Sub emulator chores for bench/worker_bench.py, run with the bench
venv's Python (google-cloud-pubsub installed there):

    emu_client.py setup PROJECT TOPIC SUBSCRIPTION
        creates the topic and a pull subscription (10 s ack deadline)
    emu_client.py publish PROJECT TOPIC COUNT SIZE
        publishes COUNT messages of SIZE bytes: "msg-<index>-" padded with x

PUBSUB_EMULATOR_HOST must point at the emulator.
"""

import sys

from google.cloud import pubsub_v1


def main():
    cmd, project, topic = sys.argv[1:4]
    publisher = pubsub_v1.PublisherClient()
    topic_path = publisher.topic_path(project, topic)
    if cmd == "setup":
        subscriber = pubsub_v1.SubscriberClient()
        publisher.create_topic(name=topic_path)
        subscriber.create_subscription(
            name=subscriber.subscription_path(project, sys.argv[4]), topic=topic_path, ack_deadline_seconds=10
        )
        subscriber.close()
    elif cmd == "publish":
        count, size = int(sys.argv[4]), int(sys.argv[5])
        futures = []
        for i in range(count):
            head = f"msg-{i:08d}-".encode()
            futures.append(publisher.publish(topic_path, head + b"x" * max(0, size - len(head))))
        for f in futures:
            f.result(timeout=60)
    else:
        sys.exit(f"emu_client: unknown command {cmd}")


if __name__ == "__main__":
    main()
