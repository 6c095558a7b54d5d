# A user's image taking rinit from the rinit image (packaging/Dockerfile):
# the COPY --from line is all it takes. tests/dist.rs builds this file with
# a FROM scratch busybox base and a shell worker, and `docker stop`s it.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
COPY --from=rinit:0.1.0 /rinit /rinit
# Your program; here a shell script (the base must have /bin/sh).
COPY worker.sh /app/worker.sh
ENTRYPOINT ["/rinit", "--grace=8s", "--"]
CMD ["/bin/sh", "/app/worker.sh"]
