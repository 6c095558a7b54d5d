//! Temporary directories and the repository's top directory.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty directory whose name holds `label` and this process's
    /// pid. World-writable, so that a container user other than root can
    /// write to it when it is bind-mounted.
    pub fn new(label: &str) -> TempDir {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("rinit-test-{}-{n}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
            .expect("chmod temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `path/name`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// `path/name` as a string, for command lines.
    pub fn file(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }

    /// Copies `src` in as `name` (mode kept).
    pub fn copy_in(&self, src: &Path, name: &str) -> &Self {
        let dst = self.0.join(name);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).expect("create dir in temp dir");
        }
        std::fs::copy(src, &dst)
            .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", src.display(), dst.display()));
        self
    }

    /// Writes `body` as `name`, executable (mode 0755): a script or program
    /// for the test to run. Its path, for command lines.
    pub fn executable(&self, name: &str, body: impl AsRef<[u8]>) -> String {
        use std::os::unix::fs::PermissionsExt;
        let dst = self.0.join(name);
        std::fs::write(&dst, body).unwrap_or_else(|e| panic!("write {}: {e}", dst.display()));
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", dst.display()));
        self.file(name)
    }

    /// Writes `text` as `name`.
    pub fn write(&self, name: &str, text: &str) -> &Self {
        let dst = self.0.join(name);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).expect("create dir in temp dir");
        }
        std::fs::write(&dst, text).unwrap_or_else(|e| panic!("write {}: {e}", dst.display()));
        self
    }

    /// The text of `name`, or "" if it does not exist (yet).
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.0.join(name)).unwrap_or_default()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The repository's top directory (the workspace root, which holds Cargo.lock).
pub fn root_dir() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !dir.join("Cargo.lock").exists() {
        assert!(
            dir.pop(),
            "no Cargo.lock above {}",
            env!("CARGO_MANIFEST_DIR")
        );
    }
    dir
}

/// An exclusive `flock` on `name` in the system temp dir, shared by every
/// test process (and by scripts that `flock` the same file), held until
/// the returned file is dropped. Waits up to `timeout` for it.
pub fn lock_file(name: &str, timeout: std::time::Duration) -> std::fs::File {
    use std::os::unix::io::AsRawFd;
    let path = std::env::temp_dir().join(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let t0 = std::time::Instant::now();
    // SAFETY: flock on a file descriptor we own.
    while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        assert!(
            t0.elapsed() < timeout,
            "waited {timeout:?} for {} (held by another test)",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    file
}
