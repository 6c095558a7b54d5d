"""`bench/run latency`: the reference worker against the Python tutorial
worker (bench/python_worker.py) where the network has real latency (issue 11
part 2).

Topology. Two network namespaces made here and deleted at the end, each
joined to the root namespace by a point-to-point link with private addresses
assigned here (nothing leaves the machine):

    root 10.200.0.1 <-> 10.200.0.2  rinit-lat-gcs: the storage stand-in
    root 10.200.1.1 <-> 10.200.1.2  rinit-lat-ps:  the Pub/Sub emulator

The workers run in the root namespace. The issue asks for a veth pair with
`tc qdisc ... netem delay`, but this machine's kernel is built without
sch_netem (CONFIG_NET_SCH_NETEM unset, no modules), so each link is
bench/wire.c instead: a TUN device on each side and a program that writes
every packet read from one side to the other D/2 ms later, each way. TCP
sees real packets with a real round trip (handshake included). Each level's
round trip is measured (median TCP connect time) and printed next to it.

Storage stand-in. On 2 CPUs fake-gcs-server spends ~2.35 ms of CPU per
upload (docs/bench.md, figure 8): it, not a worker, would cap any run near
470 msgs/s. So the throughput runs upload to nginx answering every
`/upload/storage/v1/...` with one fixed JSON object resource (name, bucket,
generation, ...; no checksums, so neither client has anything to compare) and
logging `$msec $status` per upload: that log is the count and the clock.
Correctness (nothing lost, no duplicates, what is stored) stays with
fake-gcs-server in figure 8 and the worker's tests.

Per level, one interleaved run: for each round, the Rust worker (`rinit --
pubsub-gcs-worker`, default settings unless --worker-env), then the Python
worker, each on a fresh topic/subscription with the same N messages of 1 KiB
published first. Rate = N / (worker start to the N-th upload); steady rate
between the 10 % and 90 % uploads; CPU per message of the worker tree
(wait4), the Pub/Sub emulator, nginx and the wire (/proc); peak RSS = the
sum of VmHWM over the worker's tree (rinit + worker; the Python process),
read before the stop. Levels: storage at 0, 20 and 50 ms round trip, then
Pub/Sub at 50 ms with storage at 0.
"""

import os
import shutil
import signal
import socket
import statistics
import subprocess
import time

import worker_bench as wb

PAIRS = {
    # name: (namespace, root-side veth, namespace-side veth, root addr, ns addr)
    "gcs": ("rinit-lat-gcs", "rlat-gcs0", "rlat-gcs1", "10.200.0.1", "10.200.0.2"),
    "ps": ("rinit-lat-ps", "rlat-ps0", "rlat-ps1", "10.200.1.1", "10.200.1.2"),
}
LEVELS = [  # (label, storage RTT ms, Pub/Sub RTT ms)
    ("storage 0 ms", 0, 0),
    ("storage 20 ms", 20, 0),
    ("storage 50 ms", 50, 0),
    ("Pub/Sub 50 ms", 0, 50),
]
TARGET_RATIO = 10.0
TARGET_RSS = 1 / 3

# What nginx answers to every upload: enough of an object resource for both
# clients to parse it as a successful write.
OBJECT = ('{"kind":"storage#object","id":"bench/bench-object/1","name":"bench-object","bucket":"bench",'
          '"generation":"1","metageneration":"1","contentType":"text/plain","size":"1024",'
          '"storageClass":"STANDARD","timeCreated":"2026-01-01T00:00:00.000Z",'
          '"updated":"2026-01-01T00:00:00.000Z"}')


def sh(*argv, check=True):
    return subprocess.run(list(argv), check=check, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def ensure_tools(log):
    need = [p for p, b in (("iproute2", "ip"), ("nginx-light", "nginx")) if not shutil.which(b)]
    if need:
        log(f"latency: apt-get install {' '.join(need)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        apt = ["apt-get", "install", "-y", "-qq", *need]
        if subprocess.run(apt, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
            subprocess.run(apt, env=env, stdout=subprocess.DEVNULL, check=True)


class Net:
    """The two namespaces, each joined to the root namespace by bench/wire
    (two TUN devices with the delay in between)."""

    def __init__(self, out, log):
        self.out, self.log = out, log
        self.wires = {}

    def up(self):
        self.down()  # leftovers of an interrupted run
        used = subprocess.run(["ip", "-o", "addr"], stdout=subprocess.PIPE, text=True, check=True).stdout
        if " 10.200.0." in used or " 10.200.1." in used:
            raise wb.NotMeasured("10.200.0.0/23 is already in use on this machine")
        wire = os.path.join(self.out, "bin", "wire")
        os.makedirs(os.path.dirname(wire), exist_ok=True)
        subprocess.run(["cc", "-O2", "-Wall", "-o", wire, os.path.join(os.path.dirname(__file__), "wire.c")],
                       check=True)
        for pair, (ns, a, b, ip_a, ip_b) in PAIRS.items():
            sh("ip", "netns", "add", ns)
            delay_file = os.path.join(self.out, f"wire-{pair}.delay")
            with open(delay_file, "w") as f:
                f.write("0\n")
            p = subprocess.Popen([wire, f"/var/run/netns/{ns}", a, b, delay_file], stdout=subprocess.PIPE,
                                 stderr=open(os.path.join(self.out, f"wire-{pair}.log"), "w"), text=True)
            self.wires[pair] = (p, delay_file)
            if p.stdout.readline().strip() != "ready":
                raise wb.NotMeasured(f"bench/wire did not start (bench/out/wire-{pair}.log)")
            sh("ip", "addr", "add", ip_a, "peer", ip_b, "dev", a)
            sh("ip", "link", "set", a, "mtu", "1500", "txqueuelen", "10000", "up")
            sh("ip", "-n", ns, "addr", "add", ip_b, "peer", ip_a, "dev", b)
            sh("ip", "-n", ns, "link", "set", b, "mtu", "1500", "txqueuelen", "10000", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")

    def delay(self, pair, rtt_ms):
        """Half the round trip each way."""
        p, delay_file = self.wires[pair]
        with open(delay_file, "w") as f:
            f.write(f"{int(rtt_ms * 1000 / 2)}\n")
        p.send_signal(signal.SIGHUP)
        time.sleep(0.1)

    def cpu(self):
        return sum(proc_cpu(p.pid) for p, _ in self.wires.values())

    def down(self):
        for p, _ in self.wires.values():
            wb.stop_process(p)
        self.wires = {}
        for ns, *_ in PAIRS.values():
            sh("ip", "netns", "del", ns, check=False)


def rtt_ms(host, port, n=7):
    """Median TCP connect time: one round trip (SYN, SYN-ACK)."""
    xs = []
    for _ in range(n):
        t0 = time.perf_counter()
        with socket.create_connection((host, port), timeout=5):
            xs.append((time.perf_counter() - t0) * 1000)
    return statistics.median(xs)


def proc_cpu(pid):
    """utime+stime, seconds, of pid and its direct children (nginx's workers)."""
    total = wb.cpu_seconds(pid)
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(x) for x in f.read().split()]
    except OSError:
        kids = []
    for k in kids:
        try:
            total += wb.cpu_seconds(k)
        except OSError:
            pass
    return total


class LatEnv(wb.Env):
    """The emulator and nginx inside their namespaces; workers outside."""

    def start_services(self):
        cp = self.pubsub_classpath()
        ps_ns, _, _, _, ps_ip = PAIRS["ps"]
        gcs_ns, _, _, _, gcs_ip = PAIRS["gcs"]
        self.ps_port, self.gcs_port = 8085, 8080
        self.ps = subprocess.Popen(["ip", "netns", "exec", ps_ns, "java", "-cp", cp,
                                    "com.google.cloud.pubsub.testing.v1.Main", f"--host={ps_ip}",
                                    f"--port={self.ps_port}"],
                                   stdout=open(os.path.join(self.out, "lat-pubsub.log"), "w"),
                                   stderr=subprocess.STDOUT)
        self.procs.append(self.ps)
        d = os.path.join(self.out, "lat-nginx")
        os.makedirs(d, exist_ok=True)
        self.upload_log = os.path.join(d, "uploads.log")
        open(self.upload_log, "w").close()
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    client_max_body_size 64m;
    client_body_buffer_size 1m;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    log_format upload '$msec $status';
    server {{
        listen {gcs_ip}:{self.gcs_port} backlog=4096;
        location /upload/storage/v1/ {{
            access_log {self.upload_log} upload;
            default_type application/json;
            return 200 '{OBJECT}';
        }}
        location / {{ return 404; }}
    }}
}}
""")
        self.nginx = subprocess.Popen(["ip", "netns", "exec", gcs_ns, "nginx", "-c", conf],
                                      stdout=open(os.path.join(d, "stdout.log"), "w"), stderr=subprocess.STDOUT)
        self.procs.append(self.nginx)
        for host, port, proc, what in ((gcs_ip, self.gcs_port, self.nginx, "nginx"),
                                       (ps_ip, self.ps_port, self.ps, "the Pub/Sub emulator")):
            if not wait_port(host, port, 60, proc):
                raise wb.NotMeasured(f"{what} did not start (bench/out/lat-*)")
        self.gcs = f"http://{gcs_ip}:{self.gcs_port}"
        self.env = dict(os.environ, PUBSUB_EMULATOR_HOST=f"{ps_ip}:{self.ps_port}",
                        STORAGE_EMULATOR_HOST=self.gcs, PROJECT_ID=wb.PROJECT,
                        GOOGLE_CLOUD_PROJECT=wb.PROJECT)

    def fresh(self, name, n):
        self.client("setup", wb.PROJECT, f"{name}-topic", f"{name}-sub")
        self.client("publish", wb.PROJECT, f"{name}-topic", str(n), str(wb.PAYLOAD))
        return f"{name}-sub", "bench-bucket"

    def uploads_since(self, offset):
        """(times of the 200 uploads logged after byte `offset`, other statuses)."""
        with open(self.upload_log) as f:
            f.seek(offset)
            text = f.read()
        ok, other = [], 0
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1] == "200":
                ok.append(float(parts[0]))
            elif parts:
                other += 1
        return ok, other


def wait_port(host, port, timeout, proc):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def tree_hwm_kib(pid):
    """VmHWM (peak RSS) of pid plus its descendants, KiB. Not wait4's
    ru_maxrss: a child started by vfork (as subprocess does) inherits the
    spawning Python's RSS into its ru_maxrss."""
    total = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(x) for x in f.read().split()]
    except OSError:
        return total
    return total + sum(tree_hwm_kib(k) for k in kids)


def one_run(env, net, kind, n, tag, worker_env, log):
    sub, bucket = env.fresh(f"{kind}-{tag}", n)
    offset = os.path.getsize(env.upload_log)
    ps0, ng0, w0 = proc_cpu(env.ps.pid), proc_cpu(env.nginx.pid), net.cpu()
    t_start = time.time()
    p = env.start(kind, sub, bucket, tag, extra=worker_env if kind == "rust" else None, short_lease=False)
    deadline = time.monotonic() + 600
    hwm = 0
    while time.monotonic() < deadline:
        hwm = max(hwm, tree_hwm_kib(p.pid))
        if len(env.uploads_since(offset)[0]) >= n or p.poll() is not None:
            break
        time.sleep(0.2)
    ps1, ng1, w1 = proc_cpu(env.ps.pid), proc_cpu(env.nginx.pid), net.cpu()
    hwm = max(hwm, tree_hwm_kib(p.pid))
    _, status, ru = wb.finish(p)
    t, other = env.uploads_since(offset)
    if len(t) < n:
        raise wb.NotMeasured(f"the {kind} worker uploaded only {len(t)} of {n} messages ({tag}, "
                             f"exit {status}; bench/out/worker-{kind}-{tag}.log)")
    t.sort()
    a, b = t[int(0.1 * n)], t[int(0.9 * n) - 1]
    r = {
        "rate": n / (t[n - 1] - t_start),
        "steady": (int(0.9 * n) - 1 - int(0.1 * n)) / (b - a) if b > a else None,
        "cpu": (ru.ru_utime + ru.ru_stime) * 1000 / n,
        "ps_cpu": (ps1 - ps0) * 1000 / n,
        "nginx_cpu": (ng1 - ng0) * 1000 / n,
        "wire_cpu": (w1 - w0) * 1000 / n,
        "rss": hwm / 1024,
        "extra_uploads": len(t) - n,
        "errors": other,
    }
    log(f"latency: {tag} {kind}: {r['rate']:.0f} msgs/s (steady {r['steady'] or 0:.0f}), "
        f"{r['cpu']:.2f} ms CPU/msg, RSS {r['rss']:.1f} MiB")
    return r


def mean(rs, key):
    xs = [r[key] for r in rs if r[key] is not None]
    return sum(xs) / len(xs) if xs else None


def measure(root, out, rinit, log, n=3000, rounds=2, worker_env=None, worker_bin=None, levels=None):
    ensure_tools(log)
    env = LatEnv(root, out, rinit, log)
    net = Net(out, log)
    results = []
    try:
        env.setup(build_worker=worker_bin is None, worker_bin=worker_bin)
        # A private copy: another build into the shared target dir cannot
        # swap the binary in the middle of the run.
        copy = os.path.join(out, "bin", "pubsub-gcs-worker")
        os.makedirs(os.path.dirname(copy), exist_ok=True)
        shutil.copy2(env.worker, copy)
        env.worker = copy
        net.up()
        env.start_services()
        for label, gcs_rtt, ps_rtt in (levels or LEVELS):
            net.delay("gcs", gcs_rtt)
            net.delay("ps", ps_rtt)
            measured = (rtt_ms(PAIRS["gcs"][4], env.gcs_port), rtt_ms(PAIRS["ps"][4], env.ps_port))
            log(f"latency: {label}: measured round trip storage {measured[0]:.1f} ms, "
                f"Pub/Sub {measured[1]:.1f} ms")
            runs = {"rust": [], "python": []}
            tag0 = label.replace("/", "").replace(" ", "-").lower()
            for i in range(rounds):
                for kind in ("rust", "python"):
                    runs[kind].append(one_run(env, net, kind, n, f"{tag0}-{i}", worker_env, log))
            results.append((label, gcs_rtt, ps_rtt, measured, runs))
    except wb.NotMeasured as e:
        return {"md": [f"Not measured: {e}. **MISS** (not measured)."], "targets": [], "reason": str(e)}
    finally:
        env.stop()
        net.down()
    return report(results, n, rounds, worker_env, logged_settings(out))


def logged_settings(out):
    """The settings the Rust worker reported in its first "worker started"
    line, so the table says what actually ran."""
    logs = sorted(f for f in os.listdir(out) if f.startswith("worker-rust-") and f.endswith(".log"))
    for name in logs:
        with open(os.path.join(out, name)) as f:
            for line in f:
                if "worker started" in line:
                    keys = ("concurrency", "max_outstanding_messages", "max_outstanding_bytes")
                    return " ".join(w for w in line.split() if w.split("=")[0] in keys)
    return "not logged"


def report(results, n, rounds, worker_env, logged="not logged"):
    settings = ", ".join(f"{k}={v}" for k, v in (worker_env or {}).items()) or "default settings"
    settings += f"; as logged: {logged}"
    md = [f"{n} messages of {wb.PAYLOAD} bytes published before each worker starts; Rust: `rinit -- "
          f"pubsub-gcs-worker` (worker profile, {settings}); Python: `bench/python_worker.py`. Storage: "
          "nginx answering every upload with a fixed object resource (see below); Pub/Sub: Google's "
          "emulator. Each in its own network namespace behind bench/wire (packets delayed by half the "
          "round trip each way); each figure is the mean of "
          f"{rounds} interleaved runs (Rust, Python, Rust, Python, ...).\n",
          "| level | measured RTT storage / Pub/Sub, ms | worker | msgs/s start to last | steady msgs/s "
          "(10–90 %) | worker CPU ms/msg | Pub/Sub emulator CPU ms/msg | nginx CPU ms/msg | wire CPU ms/msg "
          "| peak RSS MiB | Rust/Python msgs/s | Python/Rust RSS |",
          "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    targets = []
    for label, _, _, measured, runs in results:
        rs, py = runs["rust"], runs["python"]
        ratio = mean(rs, "rate") / mean(py, "rate")
        rss_ratio = mean(py, "rss") / mean(rs, "rss")
        for name, r in (("Rust", rs), ("Python", py)):
            steady = mean(r, "steady")
            md.append(f"| {label} | {measured[0]:.1f} / {measured[1]:.1f} | {name} | {mean(r, 'rate'):.0f} | "
                      f"{steady:.0f} | {mean(r, 'cpu'):.2f} | {mean(r, 'ps_cpu'):.2f} | "
                      f"{mean(r, 'nginx_cpu'):.3f} | {mean(r, 'wire_cpu'):.3f} | {mean(r, 'rss'):.1f} | "
                      + (f"**{ratio:.1f}×** | **{rss_ratio:.1f}×** |" if name == "Rust" else " | |"))
        extra = sum(r["extra_uploads"] for r in rs + py)
        errors = sum(r["errors"] for r in rs + py)
        if extra or errors:
            md.append(f"| {label} | | uploads beyond N (redeliveries): {extra}; non-200 answers: {errors} "
                      "| | | | | | | | | |")
        if label == "storage 50 ms":
            ok = ratio >= TARGET_RATIO and mean(rs, "rss") <= TARGET_RSS * mean(py, "rss")
            targets.append(("at 50 ms to storage: worker ≥ 10 × the Python worker's msgs/s at ≤ 1/3 of its "
                            "peak RSS",
                            f"{mean(rs, 'rate'):.0f} vs {mean(py, 'rate'):.0f} msgs/s ({ratio:.1f}×); "
                            f"{mean(rs, 'rss'):.1f} vs {mean(py, 'rss'):.1f} MiB (1/{rss_ratio:.1f})",
                            "PASS" if ok else "MISS"))
    return {"md": md, "targets": targets, "reason": None, "results": results}
