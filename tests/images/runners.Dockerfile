# Ruby with Sidekiq 6 (Debian's ruby-sidekiq) and Python with Celery 5 (PyPI),
# rinit as /rinit, and the jobs of tests/runners/. tests/runners.rs builds it
# on the debootstrap'd base (scripts/setup-dist) from what
# scripts/setup-runners downloaded (debs/: the .debs the base lacks; wheels/:
# tests/runners/requirements.txt), so the build needs no network.
# sidekiq.Dockerfile and celery.Dockerfile add the entrypoints.
ARG BASE
FROM ${BASE}
COPY debs/ /tmp/debs/
# --force-unsafe-io: no fsync per file (a test image; the build is a third faster).
RUN apt-get install -y -qq -o Dpkg::Options::=--force-unsafe-io --no-install-recommends \
       /tmp/debs/*.deb >/dev/null \
    && rm -rf /tmp/debs
COPY wheels/ /tmp/wheels/
COPY requirements.txt /tmp/requirements.txt
RUN python3 -m venv /opt/celery \
    && /opt/celery/bin/pip install -q --disable-pip-version-check --no-index \
       --find-links /tmp/wheels -r /tmp/requirements.txt \
    && rm -rf /tmp/wheels /tmp/requirements.txt
COPY app/ /app/
COPY rinit /rinit
WORKDIR /app
