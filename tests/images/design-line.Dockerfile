# The line every rinit user copies, verbatim (README, "Use it in your
# Dockerfile"): Sidekiq's 25 s drain under ECS's 30 s stopTimeout. The Docker
# tests build this file with the probe as /worker and stop it three ways:
# `docker stop -t 30`, Compose with `stop_grace_period: 30s`, and plain
# `docker stop` (10 s, where the start-up warning is the point).
ARG BASE
FROM ${BASE}
COPY worker /worker
ENTRYPOINT ["/rinit","--grace=25s","--"]
CMD ["/worker"]
