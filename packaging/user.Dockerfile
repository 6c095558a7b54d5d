# A user's image taking rinit from the rinit image (packaging/Dockerfile):
# the COPY --from line is all it takes. tests/dist.rs builds this file with
# a FROM scratch busybox base and a shell worker, and `docker stop`s it.
#
# The build context must hold worker.sh, the program rinit runs here (your
# own, or to try the file: `printf 'exec sleep 3600\n' >worker.sh`), and the
# rinit:0.1.0 image must be loaded (`docker load -i
# dist/rinit-0.1.0-image.tar.gz`, from scripts/dist):
#
#   docker build -f packaging/user.Dockerfile -t my-worker DIR_WITH_WORKER_SH
ARG BASE=debian:bookworm-slim
FROM ${BASE}
COPY --from=rinit:0.1.0 /rinit /rinit
# Your program; here a shell script (the base must have /bin/sh).
COPY worker.sh /app/worker.sh
ENTRYPOINT ["/rinit", "--grace=8s", "--"]
CMD ["/bin/sh", "/app/worker.sh"]
