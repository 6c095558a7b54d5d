# A Celery worker (prefork pool) behind rinit as a user would write it: the
# preset (TERM = warm shutdown at once, QUIT = cold shutdown 3 s before
# rinit's deadline). tests/runners.rs builds it on runners.Dockerfile and
# `docker stop`s it.
ARG BASE
FROM ${BASE}
ENTRYPOINT ["/rinit", "--preset", "celery", "--grace=8s", "--"]
CMD ["/opt/celery/bin/celery", "-A", "celery_tasks", "worker", "--pool=prefork", "--concurrency=2", "--loglevel=INFO"]
