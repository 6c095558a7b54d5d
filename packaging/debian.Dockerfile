# A Debian image with rinit installed from the .deb (`scripts/dist deb`) as
# PID 1. tests/dist.rs builds this file with a debootstrap'd bookworm base
# (scripts/setup-dist) and a shell worker, and `docker stop`s it.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
COPY rinit_*_amd64.deb /tmp/
RUN dpkg -i /tmp/rinit_*_amd64.deb && rm /tmp/rinit_*_amd64.deb
# Your program; here a shell script.
COPY worker.sh /app/worker.sh
# No --grace: the default is the platform's window minus 2 s (8 s under
# `docker stop`).
ENTRYPOINT ["/usr/bin/rinit", "--"]
CMD ["/bin/sh", "/app/worker.sh"]
