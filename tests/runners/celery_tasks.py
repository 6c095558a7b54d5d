"""The Celery tasks of tests/runners.rs and bench/runners.

Each task appends "NAME start|done PID MONOTONIC_NS" lines to
$JOBS_DIR/events, so a test sees what ran, what finished, and what ran twice
(a task requeued at a stop and run again by a fresh worker starts twice and
finishes once). The broker is $BROKER_URL (a Redis on loopback).
"""

import os
import time

from celery import Celery

app = Celery("celery_tasks", broker=os.environ["BROKER_URL"])
app.conf.update(
    # One task per pool process at a time: a stopped worker holds only the
    # tasks it runs, so what a stop loses is what was running.
    worker_prefetch_multiplier=1,
    # The runner's own shutdown timeout (0, Celery's default: no soft
    # shutdown) unless a test sets it.
    worker_soft_shutdown_timeout=float(os.environ.get("SOFT_SHUTDOWN_TIMEOUT", "0")),
    broker_connection_retry_on_startup=True,
)


def event(name, what):
    line = f"{name} {what} {os.getpid()} {time.monotonic_ns()}\n"
    with open(os.path.join(os.environ["JOBS_DIR"], "events"), "a") as f:
        f.write(line)


def wait_release(seconds):
    """Runs until $JOBS_DIR/release exists, at most SECONDS."""
    release = os.path.join(os.environ["JOBS_DIR"], "release")
    deadline = time.monotonic() + seconds
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.05)


@app.task
def short(name, seconds):
    """A short task with Celery's default acks (on receipt): a drain must
    let it finish, since nothing brings it back once it is cut off."""
    event(name, "start")
    time.sleep(seconds)
    event(name, "done")


@app.task(acks_late=True, reject_on_worker_lost=True)
def long(name, seconds):
    """A long task acked after it ran: the cold shutdown requeues it."""
    event(name, "start")
    wait_release(seconds)
    event(name, "done")


@app.task
def long_early(name, seconds):
    """The same long task with Celery's default acks (on receipt)."""
    event(name, "start")
    wait_release(seconds)
    event(name, "done")
