# Sidekiq behind rinit as a user would write it: the preset (TSTP = quiet at
# once, TERM 2 s later) and Sidekiq's -t from the drain budget rinit hands
# down (RINIT_DRAIN_SECONDS: 8 s - 2 s - 1 s = 5). tests/runners.rs builds it
# on runners.Dockerfile and `docker stop`s it.
ARG BASE
FROM ${BASE}
ENTRYPOINT ["/rinit", "--preset", "sidekiq", "--grace=8s", "--"]
CMD ["sh", "-c", "exec sidekiq -r /app/sidekiq_jobs.rb -t \"$RINIT_DRAIN_SECONDS\""]
