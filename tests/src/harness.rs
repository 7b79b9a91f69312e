//! Real processes on loopback: the `weir` node under test, and bounded runs of external tools
//! (the `weir` CLI, kcat, Python clients).
//!
//! Every wait here is bounded in time and in iterations, and every process the harness starts
//! is killed by its owner's `Drop`, so a failing or panicking test leaks nothing.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use tempfile::TempDir;

/// How long a node may take from spawn until its listener accepts connections.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a node may take to exit after SIGTERM.
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Spawns of a node before giving up when its port was taken by another process meanwhile.
const START_ATTEMPTS_MAX: u32 = 4;
/// Pause between readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// Upper bound on readiness probes, in case the clock misbehaves.
const POLLS_MAX: u32 = 4_000;
/// Bytes of a log file quoted in failure messages.
const LOG_TAIL_BYTES: usize = 6_000;

/// The repository root (`tests/..`).
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the tests crate sits inside the repository").to_path_buf()
}

/// The `weir` binary: `$WEIR_BIN`, else `<repo>/target/debug/weir`. Fails the test with the
/// command to build it if it is missing.
pub(crate) fn weir_binary() -> PathBuf {
    let path = std::env::var_os("WEIR_BIN").map(PathBuf::from).unwrap_or_else(|| repo_root().join("target/debug/weir"));
    assert!(
        path.is_file(),
        "the weir binary is missing at {}: build it with `cargo build -p weir-server` \
         (or point WEIR_BIN at a built binary)",
        path.display()
    );
    warn_if_stale(&path);
    path
}

/// Prints a warning (once) if a source file of the server is newer than the binary, since the
/// suite would then test old code.
fn warn_if_stale(binary: &Path) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        let Ok(built) = binary.metadata().and_then(|metadata| metadata.modified()) else {
            return;
        };
        let newest = newest_modification(&repo_root().join("src"), 0);
        if newest.is_some_and(|newest| newest > built) {
            eprintln!(
                "warning: {} is older than the sources under src/; run `cargo build -p weir-server`",
                binary.display()
            );
        }
    });
}

fn newest_modification(directory: &Path, depth: u32) -> Option<SystemTime> {
    if depth > 8 {
        return None;
    }
    let mut newest = None;
    for entry in std::fs::read_dir(directory).ok()?.flatten() {
        let path = entry.path();
        let candidate = if path.is_dir() {
            if path.file_name().is_some_and(|name| name == "target" || name == "fuzz") {
                continue;
            }
            newest_modification(&path, depth + 1)
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            entry.metadata().and_then(|metadata| metadata.modified()).ok()
        } else {
            None
        };
        newest = newest.max(candidate);
    }
    newest
}

/// The Python interpreter with confluent-kafka and kafka-python: `$WEIR_PYTHON`, else
/// `<repo>/.venv/bin/python`.
pub(crate) fn python() -> PathBuf {
    let path =
        std::env::var_os("WEIR_PYTHON").map(PathBuf::from).unwrap_or_else(|| repo_root().join(".venv/bin/python"));
    assert!(
        path.is_file(),
        "python is missing at {}: create the venv with `python3 -m venv .venv && \
         .venv/bin/pip install confluent-kafka kafka-python` in {} (or set WEIR_PYTHON)",
        path.display(),
        repo_root().display()
    );
    path
}

/// An executable on `PATH`; fails the test naming the package to install.
pub(crate) fn require_tool(name: &str, install_hint: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|directory| directory.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not on PATH: install it ({install_hint})"))
}

/// An ephemeral port that was free a moment ago (bound to port 0, then released).
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0 works");
    listener.local_addr().expect("a bound listener has an address").port()
}

/// The last `LOG_TAIL_BYTES` of a file, for failure messages.
pub(crate) fn tail(path: &Path) -> String {
    let text = std::fs::read(path).map(|bytes| String::from_utf8_lossy(&bytes).into_owned()).unwrap_or_default();
    let start = text.len().saturating_sub(LOG_TAIL_BYTES);
    let start = (start..text.len()).find(|index| text.is_char_boundary(*index)).unwrap_or(text.len());
    text[start..].to_owned()
}

/// One `weir server` node on 127.0.0.1. Restartable on the same data directory; killed on drop.
#[derive(Debug)]
pub(crate) struct WeirProcess {
    /// The running server, `None` between a stop and a restart.
    child: Option<Child>,
    /// The listener port; kept across restarts so clients can reconnect to the same address.
    port: u16,
    /// The node's `log.dirs`.
    data_dir: PathBuf,
    /// Extra `--config value` flags of the current run.
    flags: Vec<String>,
    /// Owns the data directory when the harness created it; `None` for a caller's directory.
    _owned_data_dir: Option<TempDir>,
    /// stdout and stderr of every run (`run-N.stdout`, `run-N.stderr`).
    log_dir: TempDir,
    /// Runs started so far; names the current run's log files.
    runs: u32,
}

impl WeirProcess {
    /// Starts a node on a fresh temporary data directory with extra flags such as
    /// `["--num-partitions", "3"]`, and waits until it serves.
    pub(crate) fn start(extra_flags: &[&str]) -> WeirProcess {
        let data_dir =
            tempfile::Builder::new().prefix("weir-data-").tempdir().expect("creating a temporary directory works");
        let path = data_dir.path().to_path_buf();
        WeirProcess::launch(path, Some(data_dir), extra_flags)
    }

    /// Starts a node on a given data directory (for example one kept from an earlier node).
    pub(crate) fn start_in(data_dir: &Path, extra_flags: &[&str]) -> WeirProcess {
        WeirProcess::launch(data_dir.to_path_buf(), None, extra_flags)
    }

    fn launch(data_dir: PathBuf, owned: Option<TempDir>, extra_flags: &[&str]) -> WeirProcess {
        let mut node = WeirProcess {
            child: None,
            port: 0,
            data_dir,
            flags: extra_flags.iter().map(|flag| (*flag).to_owned()).collect(),
            _owned_data_dir: owned,
            log_dir: tempfile::Builder::new()
                .prefix("weir-logs-")
                .tempdir()
                .expect("creating a temporary directory works"),
            runs: 0,
        };
        node.spawn_and_wait();
        node
    }

    /// `127.0.0.1:PORT`.
    pub(crate) fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The node's data directory.
    pub(crate) fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The current (or last) run's standard error.
    pub(crate) fn stderr(&self) -> String {
        tail(&self.log_path("stderr"))
    }

    /// Panics unless the server process is still running.
    pub(crate) fn assert_running(&mut self) {
        let stderr = self.stderr();
        let child = self.child.as_mut().expect("the node was started");
        if let Some(status) = child.try_wait().expect("try_wait on a child works") {
            panic!("weir exited unexpectedly with {status}; stderr:\n{stderr}");
        }
    }

    /// SIGKILL: a crash, with no chance to flush or clean up.
    pub(crate) fn kill9(&mut self) {
        let mut child = self.child.take().expect("kill9 needs a running node");
        // An error means the process already exited; wait() below reports it either way.
        let _ = child.kill();
        let _ = child.wait().expect("waiting for a killed child works");
    }

    /// SIGTERM and wait (bounded) for a graceful exit; returns the exit status.
    pub(crate) fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("terminate needs a running node");
        let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("a child has a positive pid");
        if let Err(error) = rustix::process::kill_process(pid, rustix::process::Signal::TERM) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cannot send SIGTERM to weir: {error}");
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for _ in 0..POLLS_MAX {
            if let Some(status) = child.try_wait().expect("try_wait on a child works") {
                return status;
            }
            if Instant::now() >= deadline {
                break;
            }
            thread::sleep(POLL_INTERVAL);
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("weir did not exit within {STOP_TIMEOUT:?} of SIGTERM; stderr:\n{}", self.stderr());
    }

    /// Starts the stopped node again on the same data directory, port and flags.
    pub(crate) fn restart(&mut self) {
        assert!(self.child.is_none(), "restart needs a stopped node: call kill9() or terminate() first");
        self.spawn_and_wait();
    }

    /// Starts the stopped node again on the same data directory and port with new flags.
    pub(crate) fn restart_with(&mut self, extra_flags: &[&str]) {
        self.flags = extra_flags.iter().map(|flag| (*flag).to_owned()).collect();
        self.restart();
    }

    fn log_path(&self, stream: &str) -> PathBuf {
        self.log_dir.path().join(format!("run-{}.{stream}", self.runs))
    }

    fn spawn_and_wait(&mut self) {
        let binary = weir_binary();
        for attempt in 0..START_ATTEMPTS_MAX {
            if self.port == 0 || attempt > 0 {
                self.port = free_port();
            }
            self.runs += 1;
            let stdout = File::create(self.log_path("stdout")).expect("creating a log file works");
            let stderr = File::create(self.log_path("stderr")).expect("creating a log file works");
            let mut command = Command::new(&binary);
            command
                .arg("server")
                .arg("--log-dirs")
                .arg(&self.data_dir)
                .arg("--listeners")
                .arg(self.address())
                .args(&self.flags)
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr);
            scrub_weir_environment(&mut command);
            let child = command.spawn().unwrap_or_else(|error| panic!("cannot run {}: {error}", binary.display()));
            self.child = Some(child);
            match self.wait_until_serving() {
                Ok(()) => return,
                Err(StartFailure::PortTaken) => continue,
                Err(StartFailure::Other(reason)) => {
                    if let Some(mut child) = self.child.take() {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                    panic!(
                        "weir did not start ({reason}); flags {:?}; stdout:\n{}\nstderr:\n{}",
                        self.flags,
                        tail(&self.log_path("stdout")),
                        self.stderr()
                    );
                }
            }
        }
        panic!("weir could not get a free port in {START_ATTEMPTS_MAX} attempts; stderr:\n{}", self.stderr());
    }

    /// Waits until the port accepts connections and the listening socket belongs to our
    /// child (not to another process that grabbed the port). The binary prints its banner
    /// before it binds, so the banner alone does not mean it serves.
    fn wait_until_serving(&mut self) -> Result<(), StartFailure> {
        let deadline = Instant::now() + START_TIMEOUT;
        let address: SocketAddr = self.address().parse().expect("127.0.0.1:PORT parses");
        for _ in 0..POLLS_MAX {
            let child = self.child.as_mut().expect("just spawned");
            if let Some(status) = child.try_wait().expect("try_wait on a child works") {
                self.child = None;
                let stderr = self.stderr();
                if stderr.contains("Address already in use") {
                    return Err(StartFailure::PortTaken);
                }
                return Err(StartFailure::Other(format!("exited with {status}")));
            }
            let pid = child.id();
            if TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_ok()
                && listener_owned_by(pid, self.port).unwrap_or(true)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StartFailure::Other(format!("not serving on {address} after {START_TIMEOUT:?}")));
            }
            thread::sleep(POLL_INTERVAL);
        }
        Err(StartFailure::Other("readiness probes exhausted".to_owned()))
    }
}

impl Drop for WeirProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

enum StartFailure {
    /// Another process bound the port between our probe and the node's bind.
    PortTaken,
    Other(String),
}

/// Removes `WEIR_*` variables from a child's environment: the server reads every `WEIR_X` as
/// config `x`, so the suite's own `WEIR_BIN` or `WEIR_PYTHON` would make it refuse to start.
/// `WEIR_LOG` and `WEIR_PLANTED_BUG` pass through on purpose.
pub(crate) fn scrub_weir_environment(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("WEIR_") && key != "WEIR_LOG" && key != "WEIR_PLANTED_BUG" {
            let _ = command.env_remove(key);
        }
    }
}

/// Whether the LISTEN socket on `port` (IPv4) is one of `pid`'s file descriptors; `None` if
/// `/proc` cannot tell.
fn listener_owned_by(pid: u32, port: u16) -> Option<bool> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let wanted_port = format!("{port:04X}");
    let inode = table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local = fields.get(1)?;
        let state = fields.get(3)?;
        if *state == "0A" && local.rsplit(':').next() == Some(wanted_port.as_str()) {
            fields.get(9).map(|inode| (*inode).to_owned())
        } else {
            None
        }
    })?;
    let target = format!("socket:[{inode}]");
    let descriptors = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(
        descriptors
            .flatten()
            .any(|entry| std::fs::read_link(entry.path()).is_ok_and(|link| link.to_string_lossy() == target)),
    )
}

/// What a bounded command run produced.
#[derive(Debug)]
pub(crate) struct CommandOutput {
    /// How it exited.
    pub(crate) status: ExitStatus,
    /// Standard output, lossily decoded.
    pub(crate) stdout: String,
    /// Standard error, lossily decoded.
    pub(crate) stderr: String,
}

impl CommandOutput {
    /// Panics with both streams unless the command exited with status 0.
    pub(crate) fn assert_success(&self, what: &str) -> &Self {
        assert!(
            self.status.success(),
            "{what} failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs a command with optional standard input, killing it and failing the test if it runs
/// longer than `timeout`.
pub(crate) fn run_bounded(command: &mut Command, stdin: Option<Vec<u8>>, timeout: Duration) -> CommandOutput {
    let description = format!("{command:?}");
    command
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap_or_else(|error| panic!("cannot run {description}: {error}"));
    let writer = child.stdin.take().map(|mut pipe| {
        let input = stdin.unwrap_or_default();
        // A child that exits early closes the pipe; its exit status tells the story.
        thread::spawn(move || {
            let _ = pipe.write_all(&input);
        })
    });
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("stdout is piped")));
    let stderr = read_all(Box::new(child.stderr.take().expect("stderr is piped")));
    let deadline = Instant::now() + timeout;
    let mut status = None;
    for _ in 0..(timeout.as_millis() / 10 + 10) {
        if let Some(exited) = child.try_wait().expect("try_wait on a child works") {
            status = Some(exited);
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let timed_out = status.is_none();
    if timed_out {
        let _ = child.kill();
    }
    let status = child.wait().expect("waiting for a child works");
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    assert!(
        !timed_out,
        "{description} did not finish within {timeout:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
    );
    CommandOutput { status, stdout, stderr }
}

/// Runs a `weir` CLI command (`weir ARGS... -b ADDRESS`), bounded.
pub(crate) fn weir_cli(address: &str, args: &[&str], stdin: Option<&str>) -> CommandOutput {
    let mut command = Command::new(weir_binary());
    let _ = command.args(args).arg("-b").arg(address);
    scrub_weir_environment(&mut command);
    run_bounded(&mut command, stdin.map(|text| text.as_bytes().to_vec()), Duration::from_secs(60))
}

/// Free bytes for unprivileged users on the filesystem holding `path` (what `df` reports as
/// available).
pub(crate) fn available_bytes(path: &Path) -> u64 {
    let stats = rustix::fs::statvfs(path).unwrap_or_else(|error| panic!("statvfs({}) failed: {error}", path.display()));
    stats.f_bavail.saturating_mul(stats.f_frsize)
}
