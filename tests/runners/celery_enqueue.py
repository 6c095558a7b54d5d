"""Sends tasks to $BROKER_URL: python celery_enqueue.py TASK:NAME:SECONDS ..."""

import sys

import celery_tasks

for spec in sys.argv[1:]:
    task, name, seconds = spec.split(":")
    getattr(celery_tasks, task).delay(name, float(seconds))
