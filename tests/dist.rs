//! The four ways to install rinit (issue 14), each built by `scripts/dist`,
//! installed the way the README's "Install" section says, and run:
//!
//! 1. the crate: `cargo publish --dry-run` passes; the README's `cargo
//!    install` line, run against the unpacked `.crate` outside the work tree,
//!    gives a statically linked rinit;
//! 2. the pip wheel: vendored and pip-installed into a fresh venv from the
//!    README's `requirements.txt`, the README's Procfile command run under `bash -c`
//!    (as the buildpack launcher runs it) as PID 1 of a PID namespace, a
//!    Python worker drained with SIGTERM;
//! 3. the image: loaded from its archive, holding only /rinit, taken by
//!    packaging/user.Dockerfile's `COPY --from`, `docker stop`ped;
//! 4. the .deb: `dpkg -i` in a Debian image (packaging/debian.Dockerfile on
//!    the debootstrap base of scripts/setup-dist), `docker stop`ped.
//!
//! Plus: `scripts/dist` with no kinds builds all four and a SHA256SUMS that
//! verifies, and the man page documents every option `rinit --help` lists.
//!
//! Setup: scripts/setup-dist (cargo-deb, maturin, debootstrap, the Debian
//! image) and scripts/setup-docker.sh (busybox-static). Under CI=true a
//! missing tool or engine fails; elsewhere the affected test skips with a
//! line.

use rinit_test_support::docker as docker_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use docker_support::{
    assert_static, build_text, docker, docker_ok, engine, locked, version_line, Container,
};
use rinit_test_support::{
    ci, launch_as_pid1, root_dir, run, run_ok, text_phase, wait_for, TempDir,
};

const VERSION: &str = env!("CARGO_PKG_VERSION");

const RINIT: &str = env!("CARGO_BIN_EXE_rinit");
const BUSYBOX: &str = "/bin/busybox";
const DEBIAN_IMAGE: &str = "rinit-test/debian:bookworm-minbase";
/// Building an artifact: a release build at worst (seconds when scripts/test
/// already built it), plus packaging.
const DIST_TIMEOUT: Duration = Duration::from_secs(900);

/// A missing prerequisite: fails under CI=true, else skips with one line.
/// Returns false when the caller should return.
fn require(test: &str, ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    assert!(!ci(), "{test}: CI=true and {what}");
    eprintln!("SKIP {test}: {what}");
    false
}

/// `scripts/dist --out DIR KINDS...`; returns DIR's files by name.
fn dist(out: &Path, kinds: &[&str]) -> Vec<String> {
    let t0 = Instant::now();
    let res = run_ok(
        Command::new(root_dir().join("scripts/dist"))
            .arg("--out")
            .arg(out)
            .args(kinds)
            // Others may be editing the tree; what is tested is the packaging.
            .env("RINIT_DIST_ALLOW_DIRTY", "1"),
        DIST_TIMEOUT,
    );
    eprintln!(
        "scripts/dist {kinds:?}: {} ms\n{}",
        t0.elapsed().as_millis(),
        res.stdout
    );
    let mut names: Vec<String> = std::fs::read_dir(out)
        .expect("read dist output dir")
        .map(|e| {
            e.expect("dist output entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// The one file in `names` matching `pred`.
fn one(names: &[String], what: &str, pred: impl Fn(&str) -> bool) -> String {
    let found: Vec<&String> = names.iter().filter(|n| pred(n)).collect();
    assert_eq!(found.len(), 1, "expected one {what} in {names:?}");
    found[0].clone()
}

fn file_says(path: &Path) -> String {
    let out = run_ok(
        Command::new("file").arg("-b").arg(path),
        Duration::from_secs(30),
    );
    out.stdout.trim().to_string()
}

fn assert_statically_linked(path: &Path) {
    let says = file_says(path);
    assert!(
        says.contains("statically linked"),
        "{} is not statically linked: {says}",
        path.display()
    );
}

fn readme() -> String {
    std::fs::read_to_string(root_dir().join("README.md")).expect("read README.md")
}

/// The README's "## Install" section.
fn install_section() -> String {
    let text = readme();
    let start = text
        .find("\n## Install\n")
        .expect("README.md has an '## Install' section");
    let rest = &text[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    rest[..end].to_string()
}

/// Every `inline code` span of `text` that contains `needle`.
fn code_spans(text: &str, needle: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Waits for `child` to exit, at most `timeout` (then kills it and panics);
/// returns its exit code (None if killed by a signal) and the time waited.
fn wait_child(child: &mut std::process::Child, timeout: Duration) -> (Option<i32>, Duration) {
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return (status.code(), t0.elapsed());
        }
        if t0.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------- the crate

#[test]
fn crate_publish_dry_run_and_static_cargo_install() {
    let tmp = TempDir::new("crate");
    // scripts/dist runs `cargo publish --dry-run` (packaging checks and a
    // build of the packaged sources), then `cargo package`.
    let names = dist(&tmp.join("out"), &["crate"]);
    let krate = format!("rinit-init-{VERSION}.crate");
    assert!(names.contains(&krate), "no {krate} in {names:?}");

    // What the crate ships: the init's sources, the lock file, the README
    // and both licences; no tests, benches, examples or packaging.
    let list = run_ok(
        Command::new("tar")
            .arg("-tzf")
            .arg(tmp.join("out").join(&krate)),
        Duration::from_secs(30),
    );
    let prefix = format!("rinit-init-{VERSION}/");
    let files: Vec<&str> = list
        .stdout
        .lines()
        .map(|l| {
            l.strip_prefix(&prefix)
                .expect("crate files under NAME-VERSION/")
        })
        .collect();
    for want in [
        "Cargo.toml",
        "Cargo.lock",
        "README.md",
        "LICENSE-MIT",
        "LICENSE-APACHE",
        "src/main.rs",
    ] {
        assert!(files.contains(&want), "{krate} lacks {want}: {files:?}");
    }
    for f in &files {
        assert!(
            f.starts_with("src/")
                || [
                    "Cargo.toml",
                    "Cargo.toml.orig",
                    "Cargo.lock",
                    "README.md",
                    "LICENSE-MIT",
                    "LICENSE-APACHE",
                    ".cargo_vcs_info.json"
                ]
                .contains(f),
            "{krate} ships {f}, which is not part of the init"
        );
    }

    // Unpack it where no .cargo/config.toml can apply (cargo reads config
    // from the current directory's ancestors): this is what `cargo install
    // rinit-init` builds from crates.io.
    let work = tmp.join("user");
    std::fs::create_dir_all(&work).expect("mkdir");
    run_ok(
        Command::new("tar")
            .arg("-xzf")
            .arg(tmp.join("out").join(&krate))
            .arg("-C")
            .arg(&work),
        Duration::from_secs(30),
    );
    for dir in work.ancestors() {
        assert!(
            !dir.join(".cargo/config.toml").exists() && !dir.join(".cargo/config").exists(),
            "{} has a cargo config that would apply to the install",
            dir.display()
        );
    }

    // The README's command, verbatim but for where the crate was unpacked,
    // and a scratch install root.
    let lines = code_spans(&install_section(), "cargo install ");
    assert_eq!(
        lines.len(),
        1,
        "one `cargo install` command in README's Install section: {lines:?}"
    );
    let line = lines[0].trim();
    let unpacked = format!(" --path /tmp/rinit-init-{VERSION}");
    let base = line.strip_suffix(&unpacked).unwrap_or_else(|| {
        panic!("README's cargo install line ends with the unpacked crate, `{unpacked}`: {line}")
    });
    let root = tmp.join("root");
    let cmd = format!(
        "{base} --root '{}' --path '{}'",
        root.display(),
        work.join(format!("rinit-init-{VERSION}")).display()
    );
    // A user's shell: PATH and HOME (for rustup and cargo), nothing that
    // cargo or this test run put in the environment.
    let mut sh = Command::new("sh");
    sh.arg("-c").arg(&cmd).current_dir(&work).env_clear();
    for var in [
        "PATH",
        "HOME",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
    ] {
        if let Some(v) = std::env::var_os(var) {
            sh.env(var, v);
        }
    }
    let t0 = Instant::now();
    run_ok(&mut sh, DIST_TIMEOUT);
    eprintln!("{cmd}: {} ms", t0.elapsed().as_millis());

    let bin = root.join("bin/rinit");
    assert_statically_linked(&bin);
    assert_static(
        &bin,
        "the README's cargo install line must give a static binary",
    );
    // It runs as an init: the command's exit status comes back.
    let ran = run(
        Command::new(&bin).args(["--platform=none", "--", "/bin/sh", "-c", "exit 7"]),
        Duration::from_secs(30),
    );
    assert_eq!(ran.code, Some(7), "rinit -- sh -c 'exit 7': {}", ran.stderr);
    let v = run(Command::new(&bin).arg("--version"), Duration::from_secs(30));
    assert_eq!(v.stdout.trim(), version_line(VERSION));
}

// ---------------------------------------------------------------- the wheel

/// The Python worker of the wheel test: records where it runs, then works
/// until SIGTERM, when it takes 1 s to finish its job and exits 0.
const PY_WORKER: &str = r#"
import os, signal, sys, time

state = os.environ["WORKER_STATE"]

def record(line):
    with open(state, "a") as f:
        f.write(line + "\n")

def on_term(signum, frame):
    record("signal %s" % signal.Signals(signum).name)
    time.sleep(1.0)  # finishing the job in hand
    record("drained")
    sys.exit(0)

signal.signal(signal.SIGTERM, on_term)
with open("/proc/1/comm") as f:
    pid1 = f.read().strip()
record("ready pid=%d ppid=%d pid1=%s" % (os.getpid(), os.getppid(), pid1))
while True:
    time.sleep(0.05)
"#;

#[test]
fn wheel_pip_install_procfile_drain_as_pid1() {
    let tmp = TempDir::new("wheel");
    let names = dist(&tmp.join("wheels"), &["wheel"]);
    let wheel = one(&names, "wheel", |n| n.ends_with(".whl"));
    // A static binary needs no particular glibc: the manylinux tag lets pip
    // take it on any x86_64 Linux, and it carries no Python ABI.
    assert!(
        wheel.starts_with(&format!("rinit-{VERSION}-py3-none-manylinux"))
            && wheel.ends_with("_x86_64.whl"),
        "wheel name: {wheel}"
    );

    // The app as a Buildpacks user lays it out, from the README.
    let section = install_section();
    let app = tmp.join("app");
    std::fs::create_dir_all(&app).expect("mkdir app");
    let procfile = section
        .lines()
        .find(|l| l.starts_with("web: rinit ") || l.starts_with("worker: rinit "))
        .expect("README's Install section has a Procfile line 'web: rinit ...'")
        .to_string();
    let command = procfile
        .split_once(": ")
        .map(|(_, c)| c.trim().to_string())
        .expect("Procfile line");
    assert!(
        command.ends_with("-- python main.py"),
        "the Procfile runs main.py: {command}"
    );
    // requirements.txt names the vendored wheel by its path (rinit is not
    // on PyPI yet): the wheel just built, copied where the line says.
    let requirement = section
        .lines()
        .find(|l| l.starts_with("./wheels/rinit-"))
        .expect("README's Install section has the requirements.txt line './wheels/rinit-...'");
    assert_eq!(
        requirement,
        format!("./wheels/{wheel}"),
        "README's requirements.txt names the wheel scripts/dist builds"
    );
    tmp.write("app/requirements.txt", &format!("{requirement}\n"))
        .write("app/Procfile", &format!("{procfile}\n"))
        .write("app/main.py", PY_WORKER)
        .copy_in(
            &tmp.join("wheels").join(&wheel),
            &format!("app/wheels/{wheel}"),
        );

    // A fresh venv; pip installs the wheel the requirement names, from the
    // app's directory (where the buildpack runs it), with no index.
    let venv = tmp.join("venv");
    run_ok(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        Duration::from_secs(120),
    );
    let pip = run_ok(
        Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--disable-pip-version-check",
                "--no-index",
                "-r",
                "requirements.txt",
            ])
            .current_dir(&app),
        Duration::from_secs(120),
    );
    assert!(
        pip.stdout
            .contains(&format!("Successfully installed rinit-{VERSION}")),
        "pip: {}",
        pip.stdout
    );
    let rinit = venv.join("bin/rinit");
    assert_statically_linked(&rinit);

    // The launcher execs `bash -c COMMAND` with the venv first on PATH; bash
    // execs the single command, so rinit is PID 1. Nothing else of this
    // test's environment is passed on (no platform detection by accident).
    let state = tmp.join("worker.state");
    let mut child = launch_as_pid1(&command, &app, &venv.join("bin"))
        .env("WORKER_STATE", &state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare (util-linux) runs; the test needs root");
    let unshare = child.id();
    let ready = wait_for(
        "the Python worker to start",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(&state)
                .ok()
                .filter(|s| s.starts_with("ready ") && s.ends_with('\n'))
        },
    );
    // The worker's parent is PID 1, and PID 1 is rinit (bash exec'd it).
    assert!(
        ready.contains(" ppid=1 pid1=rinit"),
        "worker state: {ready}"
    );
    // PID 1 of the namespace, seen from here: unshare's only child.
    let children = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
        .expect("read unshare's children");
    let pid1: i32 = children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unshare has no child: {children:?}"));
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid1}/exe")).expect("PID 1's exe"),
        rinit,
        "PID 1 runs the venv's rinit"
    );

    // Stop, as the platform does: SIGTERM to PID 1.
    let t0 = Instant::now();
    // SAFETY: kill has no memory effects; pid1 is unshare's live child.
    assert_eq!(unsafe { libc::kill(pid1, libc::SIGTERM) }, 0, "kill PID 1");
    let (code, _) = wait_child(&mut child, Duration::from_secs(20));
    let took = t0.elapsed();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    let log = std::fs::read_to_string(&state).unwrap_or_default();
    // The worker got SIGTERM once, finished its 1 s job, and rinit exited
    // with its status as soon as it was gone, far inside the 8 s grace.
    assert_eq!(code, Some(0), "exit status; rinit said:\n{stderr}");
    assert_eq!(
        log.lines()
            .filter(|l| l.starts_with("signal "))
            .collect::<Vec<_>>(),
        ["signal SIGTERM"],
        "signals the worker got:\n{log}"
    );
    assert!(log.contains("drained"), "worker did not finish:\n{log}");
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_secs(3),
        "SIGTERM to exit took {took:?} (the job takes 1 s); rinit said:\n{stderr}"
    );
    assert_eq!(text_phase(&stderr, "deadline"), Vec::<&str>::new());
}

// ---------------------------------------------------------------- docker

/// Shell worker of the image tests: works until SIGTERM, then takes 1 s to
/// finish its job and exits 0. POSIX sh (busybox ash and dash).
const SH_WORKER: &str = "\
trap 'echo \"worker: got SIGTERM, finishing the job\"; sleep 1; echo \"worker: drained\"; exit 0' TERM
echo \"worker: ready\"
while :; do sleep 0.1; done
";

/// Runs `image`, waits for the worker, `docker stop -t 10`s it, and checks
/// what a user sees: exit 0 about 1 s after the stop (the job's time, not
/// Docker's 10 s), no SIGKILL from Docker, the worker's drain and rinit's
/// PID 1 start and clean exit in the logs.
fn stop_and_check(label: &str, image: &str) {
    let c = Container::run(label, &[image]);
    wait_for("the worker to start", Duration::from_secs(30), || {
        c.logs().contains("worker: ready").then_some(())
    });
    let took = c.stop(10);
    let state = c.state();
    let logs = c.logs();
    assert!(!state.running);
    assert_eq!(state.exit_code, 0, "exit code; logs:\n{logs}");
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_secs(5),
        "docker stop took {took:?} (the job takes 1 s); logs:\n{logs}"
    );
    assert_eq!(c.signals_sent(), ["15"], "Docker needed no SIGKILL");
    assert!(
        logs.contains("worker: got SIGTERM") && logs.contains("worker: drained"),
        "worker did not drain; logs:\n{logs}"
    );
    let start = text_phase(&logs, "start");
    assert!(
        start.len() == 1 && start[0].contains("mode=pid1"),
        "rinit started as PID 1; logs:\n{logs}"
    );
    let exit = text_phase(&logs, "exit");
    assert!(
        exit.len() == 1 && exit[0].contains("status=0") && exit[0].contains("escalated=false"),
        "rinit exited 0 without killing; logs:\n{logs}"
    );
}

/// The file names of every layer of `image` (from `docker save`).
fn image_files(image: &str, tmp: &TempDir) -> Vec<String> {
    let tar = tmp.join("saved.tar");
    docker_ok(&["save", "-o", &tar.to_string_lossy(), image]);
    let dir = tmp.join("saved");
    std::fs::create_dir_all(&dir).expect("mkdir");
    run_ok(
        Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(&dir),
        Duration::from_secs(60),
    );
    let mut files = Vec::new();
    let layers = find_layers(&dir);
    assert!(!layers.is_empty(), "no layer in docker save of {image}");
    for layer in layers {
        let t = run_ok(
            Command::new("tar").arg("-tf").arg(&layer),
            Duration::from_secs(60),
        );
        files.extend(t.stdout.lines().map(str::to_string));
    }
    files
}

/// Layer tarballs of an unpacked `docker save`: `*/layer.tar` (Docker's own
/// format) or the blobs its manifest.json names (OCI layout).
fn find_layers(dir: &Path) -> Vec<PathBuf> {
    let manifest = std::fs::read_to_string(dir.join("manifest.json")).expect("manifest.json");
    let v: serde_json::Value = serde_json::from_str(&manifest).expect("manifest.json is JSON");
    v[0]["Layers"]
        .as_array()
        .expect("manifest.json lists Layers")
        .iter()
        .map(|l| dir.join(l.as_str().expect("layer path")))
        .collect()
}

#[test]
fn image_copy_from_and_docker_stop() {
    if !engine("image_copy_from_and_docker_stop") {
        return;
    }
    let tmp = TempDir::new("image");
    let tag = format!("rinit:{VERSION}");
    // The build, the untag and the load of rinit:VERSION must not interleave
    // with another test process's.
    let (archive, id) = locked(|| {
        let names = dist(&tmp.join("out"), &["image"]);
        let archive = one(&names, "image archive", |n| n.ends_with("-image.tar.gz"));
        assert_eq!(archive, format!("rinit-{VERSION}-image.tar.gz"));
        // What a user gets from the archive, not what the build left behind.
        docker_ok(&["rmi", &tag]);
        assert!(!docker(&["image", "inspect", &tag]).ok());
        let loaded = docker_ok(&[
            "load",
            "-i",
            &tmp.join("out").join(&archive).to_string_lossy(),
        ]);
        assert!(
            loaded.contains(&format!("Loaded image: {tag}")),
            "docker load: {loaded}"
        );
        let id = docker_ok(&["image", "inspect", "--format", "{{.Id}}", &tag]);
        (archive, id.trim().to_string())
    });
    eprintln!("{archive}: loaded {tag} ({id})");

    // Nothing but /rinit, static, with rinit as the entrypoint.
    assert_eq!(image_files(&tag, &tmp), ["rinit"], "files in {tag}");
    let entrypoint = docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Entrypoint}}",
        &tag,
    ]);
    assert_eq!(entrypoint.trim(), r#"["/rinit"]"#);
    let v = docker_ok(&["run", "--rm", &tag, "--version"]);
    assert_eq!(v.trim(), version_line(VERSION));

    // The user's Dockerfile names this very tag.
    let user_dockerfile = root_dir().join("packaging/user.Dockerfile");
    let text = std::fs::read_to_string(&user_dockerfile).expect("read packaging/user.Dockerfile");
    assert!(
        text.contains(&format!("COPY --from={tag} /rinit /rinit")),
        "packaging/user.Dockerfile copies from {tag}"
    );

    // A base without rinit (no registry: a scratch image with a static
    // busybox shell), then the user's image on it.
    assert_static(
        Path::new(BUSYBOX),
        "run scripts/setup-docker.sh (installs Debian's busybox-static)",
    );
    let base_ctx = TempDir::new("image-base");
    base_ctx.copy_in(Path::new(BUSYBOX), "busybox");
    let base = build_text(
        "rinit-test/busybox-base",
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY busybox /bin/sh\n",
        &base_ctx,
    );
    let ctx = TempDir::new("image-user");
    ctx.write("worker.sh", SH_WORKER);
    let user = UserImage::build(
        &user_dockerfile,
        &ctx,
        &base,
        &format!("copy-from-{}", std::process::id()),
    );
    stop_and_check("copy-from", &user.0);
}

/// An image built for one test (its input, rinit:VERSION, is not part of
/// the build context, so it cannot be cached by content), removed on drop.
struct UserImage(String);

impl UserImage {
    fn build(dockerfile: &Path, ctx: &TempDir, base: &str, name: &str) -> UserImage {
        let tag = format!("rinit-test/{name}:latest");
        let t0 = Instant::now();
        run_ok(
            Command::new("docker")
                .args(["build", "--quiet", "--label", "rinit-test=1", "-t", &tag])
                .arg("--build-arg")
                .arg(format!("BASE={base}"))
                .arg("-f")
                .arg(dockerfile)
                .arg(ctx.path()),
            docker_support::BUILD_TIMEOUT,
        );
        eprintln!("built {tag} in {} ms", t0.elapsed().as_millis());
        UserImage(tag)
    }
}

impl Drop for UserImage {
    fn drop(&mut self) {
        let _ = docker(&["rmi", "-f", &self.0]);
    }
}

#[test]
fn deb_dpkg_install_in_debian_and_docker_stop() {
    let test = "deb_dpkg_install_in_debian_and_docker_stop";
    if !engine(test) {
        return;
    }
    if !require(
        test,
        docker(&["image", "inspect", DEBIAN_IMAGE]).ok(),
        &format!("there is no {DEBIAN_IMAGE} image (scripts/setup-dist builds it)"),
    ) {
        return;
    }
    let tmp = TempDir::new("deb");
    let names = dist(&tmp.join("out"), &["deb"]);
    let deb = one(&names, ".deb", |n| n.ends_with(".deb"));
    assert_eq!(deb, format!("rinit_{VERSION}-1_amd64.deb"));

    let ctx = TempDir::new("deb-image");
    ctx.copy_in(&tmp.join("out").join(&deb), &deb)
        .write("worker.sh", SH_WORKER);
    let image = UserImage::build(
        &root_dir().join("packaging/debian.Dockerfile"),
        &ctx,
        DEBIAN_IMAGE,
        &format!("deb-{}", std::process::id()),
    );
    let dockerfile = std::fs::read_to_string(root_dir().join("packaging/debian.Dockerfile"))
        .expect("read packaging/debian.Dockerfile");
    assert!(dockerfile.contains(r#"ENTRYPOINT ["/usr/bin/rinit", "--"]"#));

    // dpkg knows the package, with the binary, the man page and the licence.
    let q = |args: &[&str]| {
        let mut full = vec!["run", "--rm", "--entrypoint", args[0], image.0.as_str()];
        full.extend_from_slice(&args[1..]);
        docker_ok(&full)
    };
    assert_eq!(
        q(&["dpkg-query", "-W", "-f", "${Status} ${Version}", "rinit"]),
        format!("install ok installed {VERSION}-1")
    );
    let files = q(&["dpkg", "-L", "rinit"]);
    for want in [
        "/usr/bin/rinit",
        "/usr/share/man/man1/rinit.1.gz",
        "/usr/share/doc/rinit/copyright",
    ] {
        assert!(
            files.lines().any(|l| l == want),
            "dpkg -L rinit lacks {want}:\n{files}"
        );
    }
    let man = q(&["gzip", "-dc", "/usr/share/man/man1/rinit.1.gz"]);
    assert!(man.contains(".TH RINIT 1"), "man page: {man}");
    let copyright = q(&["cat", "/usr/share/doc/rinit/copyright"]);
    assert!(
        copyright.contains("License: MIT or Apache-2.0")
            && copyright.contains("Permission is hereby granted"),
        "copyright file:\n{copyright}"
    );
    assert_eq!(
        q(&["/usr/bin/rinit", "--version"]).trim(),
        version_line(VERSION)
    );

    stop_and_check("deb", &image.0);
}

// ---------------------------------------------------------------- all four

#[test]
fn dist_builds_all_four_with_checksums() {
    let test = "dist_builds_all_four_with_checksums";
    if !engine(test) {
        return;
    }
    let tmp = TempDir::new("dist-all");
    // Builds rinit:VERSION too; the image test untags and loads it.
    let names = locked(|| dist(&tmp.join("out"), &[]));
    let want = [
        "SHA256SUMS".to_string(),
        format!("rinit-{VERSION}-image.tar.gz"),
        format!("rinit-init-{VERSION}.crate"),
        format!("rinit_{VERSION}-1_amd64.deb"),
    ];
    for w in &want {
        assert!(names.contains(w), "no {w} in {names:?}");
    }
    one(&names, "wheel", |n| n.ends_with(".whl"));
    assert_eq!(names.len(), 5, "{names:?}");
    let sums = tmp.read("out/SHA256SUMS");
    assert_eq!(sums.lines().count(), 4, "SHA256SUMS:\n{sums}");
    run_ok(
        Command::new("sha256sum")
            .args(["--check", "--strict", "SHA256SUMS"])
            .current_dir(tmp.join("out")),
        Duration::from_secs(60),
    );

    // The README's Install lines name these very files and tags.
    let section = install_section();
    for named in [
        format!("docker load -i rinit-{VERSION}-image.tar.gz"),
        format!("COPY --from=rinit:{VERSION} /rinit /rinit"),
        format!("dpkg -i rinit_{VERSION}-1_amd64.deb"),
    ] {
        assert!(
            section.contains(&named),
            "README's Install section lacks `{named}`"
        );
    }
}

// ---------------------------------------------------------------- man page

#[test]
fn man_page_documents_every_option_of_help() {
    let help = run(Command::new(RINIT).arg("--help"), Duration::from_secs(30));
    assert_eq!(help.code, Some(0), "rinit --help: {}", help.stderr);
    let man = std::fs::read_to_string(root_dir().join("packaging/rinit.1"))
        .expect("read packaging/rinit.1");
    // roff writes a hyphen of an option as `\-`.
    let plain = man.replace("\\-", "-");
    let mut options: Vec<String> = Vec::new();
    for word in help
        .stdout
        .split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')' || c == ';')
    {
        let opt = word.trim_end_matches(['.', ':']);
        let long = opt.len() > 2
            && opt.starts_with("--")
            && opt[2..].chars().all(|c| c.is_ascii_lowercase() || c == '-');
        let short =
            opt.len() == 2 && opt.starts_with('-') && opt.as_bytes()[1].is_ascii_alphabetic();
        if (long || short) && !options.contains(&opt.to_string()) {
            options.push(opt.to_string());
        }
    }
    assert!(options.len() >= 19, "options found in --help: {options:?}");
    let missing: Vec<&String> = options.iter().filter(|o| !mentions(&plain, o)).collect();
    assert!(
        missing.is_empty(),
        "packaging/rinit.1 does not document {missing:?}"
    );
    for var in [
        "RINIT_GRACE",
        "RINIT_PLATFORM_KILL_AFTER",
        "RINIT_LOG_FORMAT",
        "RINIT_LOG",
    ] {
        assert!(
            man.contains(var),
            "packaging/rinit.1 does not document {var}"
        );
    }
    assert!(
        man.contains(&format!("\"rinit {VERSION}\"")),
        "packaging/rinit.1's .TH names version {VERSION}"
    );
    // It renders without a warning from groff (man-db's formatter).
    let out = run(
        Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(root_dir().join("packaging/rinit.1")),
        Duration::from_secs(30),
    );
    assert!(out.ok() && out.stderr.is_empty(), "groff: {}", out.stderr);
}

/// True when `text` has `opt` as a whole option: not inside a longer one
/// (`-c` in `--single-child`, `--platform` in `--platform-kill-after`).
fn mentions(text: &str, opt: &str) -> bool {
    let part = |c: char| c.is_ascii_alphanumeric() || c == '-';
    text.match_indices(opt)
        .any(|(at, _)| !text[..at].ends_with(part) && !text[at + opt.len()..].starts_with(part))
}
