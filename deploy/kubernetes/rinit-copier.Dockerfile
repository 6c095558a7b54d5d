# The init container's image for unmodified-image.yaml: rinit's static
# binary beside a `cp`. Build it once, push it to your registry, and use it
# for any number of images you cannot rebuild:
#
#   docker build -f deploy/kubernetes/rinit-copier.Dockerfile \
#       -t registry.example.com/rinit-copier:0.1.0 .
#
# The rinit image (scripts/dist image, loaded with `docker load`) holds only
# /rinit, with no shell and no cp, so it cannot copy itself; any small
# image with a cp can carry it.
ARG BASE=busybox:1.37
ARG RINIT_IMAGE=rinit:0.1.0
FROM ${RINIT_IMAGE} AS rinit
FROM ${BASE}
COPY --from=rinit /rinit /rinit
