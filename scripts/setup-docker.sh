#!/usr/bin/env bash
# Prepares a machine for the Docker end-to-end tests (tests/docker.rs and
# examples/pubsub-gcs-worker/tests/docker.rs). Idempotent; CI runs it before
# the test suite.
#
# What the tests cannot do themselves, because it needs the package manager:
# a *static* busybox at /bin/busybox (Debian's busybox-static), copied into
# the FROM scratch test images as /bin/sh for the shell-form ENTRYPOINT case
# and for `docker exec`. Everything else (the local stand-in for the
# distroless base, every test image) the tests build themselves, once per run
# and cached by content, since no registry can be reached here.
#
# It also checks that a Docker engine answers: under CI=true a missing engine
# is an error here as in the tests; elsewhere a warning (the tests then skip).
set -euo pipefail

is_static() {
    # A static ELF has no program interpreter.
    [ -x "$1" ] && ! LC_ALL=C readelf -l "$1" 2>/dev/null | grep -q 'Requesting program interpreter'
}

if ! is_static /bin/busybox; then
    echo "setup-docker: installing busybox-static"
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    if ! $sudo_cmd apt-get -o DPkg::Lock::Timeout=300 install -y -qq busybox-static >/dev/null; then
        $sudo_cmd apt-get -o DPkg::Lock::Timeout=300 update -qq
        $sudo_cmd apt-get -o DPkg::Lock::Timeout=300 install -y -qq busybox-static >/dev/null
    fi
    is_static /bin/busybox || { echo "setup-docker: /bin/busybox is still not a static binary" >&2; exit 1; }
fi

if docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
    echo "setup-docker: Docker engine $(docker version --format '{{.Server.Version}}'), static busybox ok"
    # Stopped containers a killed test run could not remove (each test removes
    # its own); running ones may belong to a test run going on right now.
    stale=$(docker ps -aq --filter label=rinit-test=1 --filter status=exited --filter status=created)
    [ -z "$stale" ] || docker rm -f $stale >/dev/null
    # A swarm a killed run of tests/swarm.rs left behind (its node carries the
    # label rinit-test=1; a swarm without it is not ours and stays), unless a
    # swarm test holds its lock right now. Leaving removes its services.
    (
        flock -n 8 || exit 0
        [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" = active ] || exit 0
        node="$(docker info --format '{{.Swarm.NodeID}}')"
        [ "$(docker node inspect --format '{{index .Spec.Labels "rinit-test"}}' "$node")" = 1 ] || exit 0
        echo "setup-docker: leaving a swarm left behind by a killed test run"
        docker swarm leave --force >/dev/null
        docker network rm docker_gwbridge >/dev/null 2>&1 || true
    ) 8>"${TMPDIR:-/tmp}/rinit-swarm.lock"
    # Test images are tagged by the hash of their inputs, so every new build
    # of the binaries adds some; drop those not used for a day.
    docker image prune -a -f --filter label=rinit-test=1 --filter until=24h >/dev/null
elif [ "${CI:-}" = "true" ] || [ "${CI:-}" = "1" ]; then
    echo "setup-docker: CI=true and no Docker engine answers" >&2
    exit 1
else
    echo "setup-docker: warning: no Docker engine answers; the Docker tests will skip" >&2
fi
