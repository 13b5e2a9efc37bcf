//! Real QEMU processes for tests: finding the binaries, starting them on a private temporary unix socket,
//! and killing them when the test is done.
//!
//! This module owns everything about real servers: which binary each [`ServerKind`] uses (and the environment
//! variable that overrides it), the command line, waiting until the socket accepts connections, capturing the
//! child's stderr, the skip-or-fail policy for binaries that are not installed ([`available`] and the
//! [`require!`](crate::require) macro), and kill + wait on drop.
//!
//! Facts worth knowing when writing tests against these servers:
//!
//! - A QMP server serves **one client at a time**. A second connection is accepted by the kernel but gets no
//!   greeting until the first one closes. The startup probe (see below) is closed before a constructor
//!   returns, so the first connection a test makes gets the greeting.
//! - **Connecting too early in QEMU's startup is unsafe**: a client that connected and left right after the
//!   socket appeared crashed qemu-system 7.2 and qemu-storage-daemon 10.0.2 with SIGSEGV about once in 300
//!   starts, and both storage daemons dropped the next connection without a greeting 1-2% of the time. So a
//!   storage daemon is only probed once its `--pidfile` (written after all options are processed) exists,
//!   and the QMP probe reads the greeting and completes `qmp_capabilities` before closing. With both, 3,000
//!   consecutive starts were clean. qemu-ga is probed with a bare connect.
//! - qemu-ga has no greeting; its replies end in `\n` only, QMP's in `\r\n`. Pretty monitors spread each
//!   message over many lines.
//! - qemu-ga is started with `-t DIR` (its state directory) inside the server's temporary directory. Without
//!   it, qemu-ga keeps its state in `/var/run/qga.state`: unprivileged, `guest-file-open` then fails with
//!   "failed to commit persistent state to disk", and as root parallel agents would share one state file.
//! - **qemu-ga 7.2 exits** (status 0, nothing on stderr) when a client closes its connection with a reply
//!   still unread: the kernel reports ECONNRESET to qemu-ga's next read, which it treats as fatal. Every later
//!   connect is refused. Read every reply before closing a qemu-ga connection (`-r` does not help: the agent
//!   then waits for the socket path to reappear and still refuses connections). QMP servers survive the same.
//! - The socket accepts connections before QEMU has finished starting: with a bare-connect probe, a SIGTERM
//!   sent at once killed qemu-system before its handlers were installed (silently, nothing on stderr). The
//!   negotiating probe means a constructor returns only after the monitor has served a client.
//! - Children are killed on drop, but not when the test process itself is killed (no `PR_SET_PDEATHSIG`
//!   without unsafe code): a hard-killed test run can leave QEMU processes behind.
//!
//! **Versions.** [`ServerKind::StorageDaemon`] is the newest storage daemon found: QEMU 10 where it is installed
//! (CI keeps a copy at [`QSD10_DEFAULT`]), else whatever `qemu-storage-daemon` is on `PATH` (QEMU 7.2 on Debian
//! bookworm, whose `qemu-utils` the README's set-up names). Tests assert what holds for the version they meet:
//! [`QemuServer::version`] is what the server itself announced in its greeting. A test that truly needs a newer
//! QEMU says so with [`QemuServer::needs_major`], which turns an older server into [`Unavailable`]: a loud
//! `SKIPPED:` line, or a failure under `QMP_TEST_REQUIRE_ALL=1` (which means "nothing may be skipped").

use std::{
    env,
    ffi::{OsStr, OsString},
    fmt, fs,
    io::{self, BufRead, Read, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use tempfile::TempDir;

/// How long [`QemuServer`]'s constructors wait for the socket to accept a connection.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Read and write timeout of one readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Read and write timeout set on the streams returned by [`QemuServer::connect`].
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Environment variable that turns a skip (a binary that is missing, or older than a test needs) into a test
/// failure (CI sets it to `1`).
pub const REQUIRE_ALL_ENV: &str = "QMP_TEST_REQUIRE_ALL";

/// Where the QEMU 10 storage daemon is looked for first (CI copies it there before installing QEMU 7.2,
/// whose packages replace `/usr/bin/qemu-storage-daemon`).
pub const QSD10_DEFAULT: &str = "/usr/local/bin/qemu-storage-daemon-10";

/// Where the QEMU 7.x storage daemon is looked for (Debian bookworm's qemu-system-x86 installs it).
pub const QSD72_DEFAULT: &str = "/usr/bin/qemu-storage-daemon";

/// The guest agent's commands that shut down or suspend the machine it runs on (answered only on failure).
/// [`ServerKind::GuestAgentPowerDisabled`] disables all of them: tests must never run one that could succeed.
pub const POWER_COMMANDS: [&str; 4] =
    ["guest-shutdown", "guest-suspend-disk", "guest-suspend-ram", "guest-suspend-hybrid"];

/// Which server a [`QemuServer`] runs, and how it was configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServerKind {
    /// The newest qemu-storage-daemon found (10.x where installed, else the one on `PATH`, e.g. 7.2), QMP
    /// monitor on a socket chardev.
    StorageDaemon,
    /// [`StorageDaemon`](Self::StorageDaemon) with `pretty=on`: every message spans many lines.
    StorageDaemonPretty,
    /// qemu-storage-daemon 7.x, QMP monitor on a socket chardev.
    StorageDaemon72,
    /// `qemu-system-x86_64 -M none` with `-qmp unix:...`.
    System,
    /// `qemu-system-x86_64 -M none` with `-chardev socket` + `-mon mode=control,pretty=on`.
    SystemPretty,
    /// qemu-ga listening on a unix socket (no greeting, no negotiation, `\n` line endings).
    GuestAgent,
    /// qemu-ga with every power command disabled (`-b guest-shutdown,guest-suspend-*`): each of them is refused
    /// with an error, so the rule "replies only on failure" can be tested without risking the host.
    GuestAgentPowerDisabled,
}

impl ServerKind {
    /// Every kind, in a fixed order.
    pub const ALL: [ServerKind; 7] = [
        ServerKind::StorageDaemon,
        ServerKind::StorageDaemonPretty,
        ServerKind::StorageDaemon72,
        ServerKind::System,
        ServerKind::SystemPretty,
        ServerKind::GuestAgent,
        ServerKind::GuestAgentPowerDisabled,
    ];

    /// Human-readable name of the program, as used in skip messages (`"qemu-ga"`, ...).
    pub fn program(self) -> &'static str {
        match self {
            ServerKind::StorageDaemon | ServerKind::StorageDaemonPretty => "qemu-storage-daemon",
            ServerKind::StorageDaemon72 => "qemu-storage-daemon 7.x",
            ServerKind::System | ServerKind::SystemPretty => "qemu-system-x86_64",
            ServerKind::GuestAgent | ServerKind::GuestAgentPowerDisabled => "qemu-ga",
        }
    }

    /// The environment variable that names this kind's binary.
    pub fn env_var(self) -> &'static str {
        match self {
            ServerKind::StorageDaemon | ServerKind::StorageDaemonPretty => "QMP_TEST_QSD",
            ServerKind::StorageDaemon72 => "QMP_TEST_QSD72",
            ServerKind::System | ServerKind::SystemPretty => "QMP_TEST_QEMU_SYSTEM",
            ServerKind::GuestAgent | ServerKind::GuestAgentPowerDisabled => "QMP_TEST_QGA",
        }
    }

    /// True for qemu-ga: no greeting, no `qmp_capabilities`.
    pub fn is_guest_agent(self) -> bool {
        matches!(self, ServerKind::GuestAgent | ServerKind::GuestAgentPowerDisabled)
    }

    /// True when the server pretty-prints (multi-line messages).
    pub fn is_pretty(self) -> bool {
        matches!(self, ServerKind::StorageDaemonPretty | ServerKind::SystemPretty)
    }

    /// The bytes that end every message from this server: `\r\n` for QMP, `\n` for qemu-ga.
    pub fn line_ending(self) -> &'static [u8] {
        if self.is_guest_agent() {
            b"\n"
        } else {
            b"\r\n"
        }
    }

    /// The QEMU major version this kind is expected to report, where the kind pins one (only
    /// [`StorageDaemon72`](Self::StorageDaemon72) does: the other kinds run whatever version is installed).
    pub fn expected_major(self) -> Option<u64> {
        match self {
            ServerKind::StorageDaemon72 => Some(7),
            _ => None,
        }
    }

    /// A file the server writes once it has finished starting, where waiting for the socket is not enough.
    fn ready_marker(self, dir: &Path) -> Option<PathBuf> {
        match self {
            ServerKind::StorageDaemon | ServerKind::StorageDaemon72 | ServerKind::StorageDaemonPretty => {
                Some(dir.join("qsd.pid"))
            }
            _ => None,
        }
    }

    fn socket_name(self) -> &'static str {
        if self.is_guest_agent() {
            "qga.sock"
        } else {
            "qmp.sock"
        }
    }

    /// The command-line arguments for a server listening on `socket`, with `dir` as its private directory.
    fn args(self, socket: &Path, dir: &Path) -> Vec<OsString> {
        let sock = qemu_opt_escape(socket);
        let strs: Vec<String> = match self {
            ServerKind::StorageDaemon | ServerKind::StorageDaemon72 | ServerKind::StorageDaemonPretty => {
                let monitor = if self.is_pretty() { "chardev=c0,pretty=on" } else { "chardev=c0" };
                vec![
                    "--chardev".into(),
                    format!("socket,path={sock},server=on,wait=off,id=c0"),
                    "--monitor".into(),
                    monitor.into(),
                    // Written once every option has been processed: see `probe`.
                    "--pidfile".into(),
                    self.ready_marker(dir).expect("storage daemons have a pidfile").to_string_lossy().into_owned(),
                ]
            }
            ServerKind::System => vec![
                "-M".into(),
                "none".into(),
                "-display".into(),
                "none".into(),
                "-nodefaults".into(),
                "-qmp".into(),
                format!("unix:{sock},server=on,wait=off"),
            ],
            ServerKind::SystemPretty => vec![
                "-M".into(),
                "none".into(),
                "-display".into(),
                "none".into(),
                "-nodefaults".into(),
                "-chardev".into(),
                format!("socket,id=m,path={sock},server=on,wait=off"),
                "-mon".into(),
                "chardev=m,mode=control,pretty=on".into(),
            ],
            ServerKind::GuestAgent | ServerKind::GuestAgentPowerDisabled => {
                // qemu-ga options are plain getopt: no comma escaping.
                let mut args: Vec<OsString> = vec![
                    "-m".into(),
                    "unix-listen".into(),
                    "-p".into(),
                    socket.as_os_str().to_owned(),
                    "-t".into(),
                    dir.as_os_str().to_owned(),
                    "-f".into(),
                    dir.join("qemu-ga.pid").into_os_string(),
                ];
                if self == ServerKind::GuestAgentPowerDisabled {
                    args.push("-b".into());
                    args.push(POWER_COMMANDS.join(",").into());
                }
                return args;
            }
        };
        strs.into_iter().map(OsString::from).collect()
    }
}

impl fmt::Display for ServerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ServerKind::StorageDaemon => "qemu-storage-daemon",
            ServerKind::StorageDaemonPretty => "qemu-storage-daemon (pretty)",
            ServerKind::StorageDaemon72 => "qemu-storage-daemon 7.x",
            ServerKind::System => "qemu-system-x86_64",
            ServerKind::SystemPretty => "qemu-system-x86_64 (pretty)",
            ServerKind::GuestAgent => "qemu-ga",
            ServerKind::GuestAgentPowerDisabled => "qemu-ga (power commands disabled)",
        };
        f.write_str(s)
    }
}

/// The binary for a [`ServerKind`] is not installed, or is older than the test needs: the test should be skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    /// The server that could not be found.
    pub kind: ServerKind,
    /// What was looked for and why it did not qualify.
    pub reason: String,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} unavailable: {} (set {})", self.kind.program(), self.reason, self.kind.env_var())
    }
}

impl std::error::Error for Unavailable {}

/// The binary exists but the server did not come up: always a test failure.
#[derive(Debug, Clone)]
pub struct StartFailure {
    /// The server that failed.
    pub kind: ServerKind,
    /// The full command line that was run.
    pub command: String,
    /// What went wrong (spawn error, early exit status, timeout).
    pub reason: String,
    /// Everything the child wrote to stderr.
    pub stderr: String,
}

impl fmt::Display for StartFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed to start: {}\n  command: {}\n  stderr:\n{}",
            self.kind,
            self.reason,
            self.command,
            if self.stderr.trim().is_empty() { "    (empty)".to_owned() } else { indent(&self.stderr) }
        )
    }
}

impl std::error::Error for StartFailure {}

/// Why a [`QemuServer`] constructor returned no server.
#[derive(Debug, Clone)]
pub enum StartError {
    /// The binary is missing or too old: skip the test (or fail it under `QMP_TEST_REQUIRE_ALL=1`).
    Unavailable(Unavailable),
    /// The binary exists but the server did not start: fail the test.
    Failed(StartFailure),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Unavailable(u) => u.fmt(f),
            StartError::Failed(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for StartError {}

impl From<Unavailable> for StartError {
    fn from(u: Unavailable) -> Self {
        StartError::Unavailable(u)
    }
}

/// A QEMU version: what a server announced in its greeting, or what its binary's `--version` printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QemuVersion {
    /// `10` in 10.0.2.
    pub major: u64,
    /// `0` in 10.0.2.
    pub minor: u64,
    /// `2` in 10.0.2.
    pub micro: u64,
}

impl fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

/// A running QEMU process listening on a unix socket in its own temporary directory.
///
/// Dropping it kills the process, waits for it, and removes the directory.
#[derive(Debug)]
pub struct QemuServer {
    kind: ServerKind,
    binary: PathBuf,
    /// The version in the greeting the startup probe read (`None` for qemu-ga, which has no greeting).
    greeted_as: Option<QemuVersion>,
    child: Child,
    socket: PathBuf,
    stderr_path: PathBuf,
    // Declared last so the directory is removed after the child is gone (see Drop).
    dir: TempDir,
}

impl QemuServer {
    /// Starts the newest qemu-storage-daemon found (`QMP_TEST_QSD`, else [`QSD10_DEFAULT`], else
    /// `qemu-storage-daemon` on `PATH`, which may be 7.2: see [`version`](Self::version) and
    /// [`needs_major`](Self::needs_major)): `--chardev socket,path=S,server=on,wait=off,id=c0 --monitor chardev=c0`.
    pub fn storage_daemon() -> Result<QemuServer, StartError> {
        QemuServer::start(ServerKind::StorageDaemon)
    }

    /// Like [`storage_daemon`](Self::storage_daemon) with a second QMP monitor on its own socket,
    /// [`second_monitor_path`](Self::second_monitor_path) (`--chardev socket,...,id=c1 --monitor chardev=c1`):
    /// two clients at once, each with its own session (both get every event).
    pub fn storage_daemon_two_monitors() -> Result<QemuServer, StartError> {
        let kind = ServerKind::StorageDaemon;
        let binary = locate(kind)?;
        launch(kind, &binary, START_TIMEOUT, |socket, dir| {
            let mut args = kind.args(socket, dir);
            let second = qemu_opt_escape(&dir.join(SECOND_MONITOR));
            args.extend(
                ["--chardev".into(), format!("socket,path={second},server=on,wait=off,id=c1")]
                    .into_iter()
                    .chain(["--monitor".into(), "chardev=c1".into()])
                    .map(OsString::from),
            );
            args
        })
    }

    /// The second monitor's socket of [`storage_daemon_two_monitors`](Self::storage_daemon_two_monitors).
    pub fn second_monitor_path(&self) -> PathBuf {
        self.dir().join(SECOND_MONITOR)
    }

    /// Like [`storage_daemon`](Self::storage_daemon) with a second QMP monitor on TCP, on a port of the
    /// loopback address the kernel picks (`--chardev socket,host=127.0.0.1,port=0,server=on,wait=off,id=c1
    /// --monitor chardev=c1`): [`tcp_monitor_address`](Self::tcp_monitor_address) reads which.
    pub fn storage_daemon_tcp() -> Result<QemuServer, StartError> {
        let kind = ServerKind::StorageDaemon;
        let binary = locate(kind)?;
        launch(kind, &binary, START_TIMEOUT, |socket, dir| {
            let mut args = kind.args(socket, dir);
            args.extend(
                ["--chardev", "socket,host=127.0.0.1,port=0,server=on,wait=off,id=c1", "--monitor", "chardev=c1"]
                    .map(OsString::from),
            );
            args
        })
    }

    /// The `HOST:PORT` of the TCP monitor of [`storage_daemon_tcp`](Self::storage_daemon_tcp), as QEMU reports
    /// it (`query-chardev` on the unix monitor, which must be free: call it before connecting there).
    pub fn tcp_monitor_address(&self) -> io::Result<String> {
        let stream = self.connect()?;
        let mut reader = io::BufReader::new(stream.try_clone()?);
        let mut writer = stream;
        let mut line = String::new();
        reader.read_line(&mut line)?;
        writer.write_all(br#"{"execute":"qmp_capabilities"}{"execute":"query-chardev","id":1}"#)?;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "no query-chardev reply"));
            }
            let reply: serde_json::Value = serde_json::from_str(&line).map_err(io::Error::other)?;
            if reply["id"] != 1 {
                continue;
            }
            let chardevs = reply["return"].as_array().cloned().unwrap_or_default();
            // "disconnected:tcp:127.0.0.1:45933,server=on"
            let filename = chardevs.iter().find(|c| c["label"] == "c1").and_then(|c| c["filename"].as_str());
            let address = filename
                .and_then(|f| f.split("tcp:").nth(1))
                .and_then(|rest| rest.split(',').next())
                .ok_or_else(|| io::Error::other(format!("no TCP monitor in {line}")))?;
            return Ok(address.to_owned());
        }
    }

    /// Like [`storage_daemon`](Self::storage_daemon) with `--monitor chardev=c0,pretty=on`.
    pub fn storage_daemon_pretty() -> Result<QemuServer, StartError> {
        QemuServer::start(ServerKind::StorageDaemonPretty)
    }

    /// Starts qemu-storage-daemon 7.x (`QMP_TEST_QSD72`, else [`QSD72_DEFAULT`] when its `--version` says 7.x).
    pub fn storage_daemon_72() -> Result<QemuServer, StartError> {
        QemuServer::start(ServerKind::StorageDaemon72)
    }

    /// Starts `qemu-system-x86_64` (`QMP_TEST_QEMU_SYSTEM`):
    /// `-M none -display none -nodefaults -qmp unix:S,server=on,wait=off`.
    pub fn system() -> Result<QemuServer, StartError> {
        QemuServer::start(ServerKind::System)
    }

    /// Starts `qemu-system-x86_64` with a pretty-printing monitor:
    /// `-chardev socket,id=m,path=S,server=on,wait=off -mon chardev=m,mode=control,pretty=on`.
    pub fn system_pretty() -> Result<QemuServer, StartError> {
        QemuServer::start(ServerKind::SystemPretty)
    }

    /// Starts qemu-ga (`QMP_TEST_QGA`, default `qemu-ga`): `-m unix-listen -p S -t DIR -f DIR/qemu-ga.pid`,
    /// where DIR is the server's temporary directory.
    pub fn guest_agent() -> Result<QemuServer, StartError> {
        QemuServer::start(ServerKind::GuestAgent)
    }

    /// qemu-ga with every power command disabled ([`ServerKind::GuestAgentPowerDisabled`]).
    pub fn guest_agent_power_disabled() -> Result<QemuServer, StartError> {
        QemuServer::start(ServerKind::GuestAgentPowerDisabled)
    }

    /// Finds the binary for `kind` and starts it; returns once a probe connection has been served (greeting and
    /// negotiation for QMP, a bare connect for qemu-ga) and closed again.
    pub fn start(kind: ServerKind) -> Result<QemuServer, StartError> {
        let binary = locate(kind)?;
        QemuServer::start_binary(kind, &binary)
    }

    /// Starts the binary for `kind` with `extra(dir)` appended to its usual arguments (a later `-M` overrides
    /// `-M none`); `dir` is the server's private directory, for files the arguments name.
    pub fn start_with_extra_args(
        kind: ServerKind,
        extra: impl FnOnce(&Path) -> Vec<OsString>,
    ) -> Result<QemuServer, StartError> {
        let binary = locate(kind)?;
        launch(kind, &binary, START_TIMEOUT, |socket, dir| {
            let mut args = kind.args(socket, dir);
            args.extend(extra(dir));
            args
        })
    }

    /// Starts `binary` as a server of `kind`, bypassing the lookup (the binary must exist).
    pub fn start_binary(kind: ServerKind, binary: &Path) -> Result<QemuServer, StartError> {
        launch(kind, binary, START_TIMEOUT, |socket, dir| kind.args(socket, dir))
    }

    /// The unix socket the server listens on.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// Which server this is.
    pub fn kind(&self) -> ServerKind {
        self.kind
    }

    /// The QEMU version of this server: what its greeting announced (QMP), or what `--version` prints (qemu-ga,
    /// which has no greeting). Tests compare what they get against this rather than a fixed number, so they hold
    /// on whatever QEMU is installed.
    ///
    /// # Panics
    ///
    /// For a qemu-ga binary whose `--version` prints no version.
    pub fn version(&self) -> QemuVersion {
        self.greeted_as
            .or_else(|| binary_version(&self.binary))
            .unwrap_or_else(|| panic!("{}: `{} --version` printed no version", self.kind, self.binary.display()))
    }

    /// This server if it is QEMU `major` or later; otherwise it is stopped and the result is
    /// [`StartError::Unavailable`], saying what was found and `why` the test needs more. With
    /// [`require!`](crate::require) the test is then skipped with a loud `SKIPPED:` line, or fails under
    /// `QMP_TEST_REQUIRE_ALL=1` (where CI runs, with QEMU 10 installed, nothing may be skipped):
    ///
    /// ```no_run
    /// # use qmp_tests::{require, servers::QemuServer};
    /// # fn test() {
    /// let qsd = require!(QemuServer::storage_daemon()
    ///     .and_then(|s| s.needs_major(10, "compares its error texts with QEMU 10's")));
    /// # drop(qsd);
    /// # }
    /// ```
    ///
    /// Use it only where no version-neutral assertion exists: most tests can compare against
    /// [`version`](Self::version) instead.
    pub fn needs_major(self, major: u64, why: &str) -> Result<QemuServer, StartError> {
        let found = self.version();
        if found.major >= major {
            return Ok(self);
        }
        Err(StartError::Unavailable(Unavailable {
            kind: self.kind,
            reason: format!(
                "{} is QEMU {found}, and this test needs QEMU {major} or later: {why}",
                self.binary.display()
            ),
        }))
    }

    /// The binary that was started.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The server's private temporary directory (holds the socket, the stderr log, qemu-ga's state; tests may
    /// put their own files here, e.g. images for the storage daemon or files for `guest-file-*`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Connects a plain std stream to the server, with [`IO_TIMEOUT`] read and write timeouts.
    ///
    /// QEMU serves one client at a time: while another connection is open, this one gets nothing.
    pub fn connect(&self) -> io::Result<UnixStream> {
        let stream = UnixStream::connect(&self.socket)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(stream)
    }

    /// Everything the child has written to stderr so far.
    pub fn stderr_output(&self) -> String {
        read_lossy(&self.stderr_path)
    }

    /// Whether the process has exited, without blocking (e.g. after sending `quit`).
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Waits up to `timeout` for the process to exit on its own; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the process (if still running) and reaps it. Dropping the server does the same.
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        // kill fails only when the child has already been reaped, which try_wait rules out.
        self.child.kill()?;
        self.child.wait()
    }
}

impl Drop for QemuServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Decides what a test does with a constructor's result: the server if it started; `None` after printing a
/// loud `SKIPPED:` line when the binary is missing; a panic when the binary failed to start, or when it is
/// missing and `QMP_TEST_REQUIRE_ALL=1` is set.
///
/// The skip line is written straight to the process's stderr, so `cargo test` shows it without
/// `--nocapture`.
pub fn available(result: Result<QemuServer, StartError>) -> Option<QemuServer> {
    decide(result, require_all(), |line| {
        // Straight to the process's stderr: libtest captures only the print macros.
        let _ = writeln!(io::stderr().lock(), "{line}");
    })
}

fn decide(
    result: Result<QemuServer, StartError>,
    require_all: bool,
    report_skip: impl FnOnce(&str),
) -> Option<QemuServer> {
    match result {
        Ok(server) => Some(server),
        Err(StartError::Failed(failure)) => panic!("{failure}"),
        Err(StartError::Unavailable(missing)) => {
            if require_all {
                panic!("{missing}, and {REQUIRE_ALL_ENV}=1 makes an unavailable server a failure");
            }
            let test = thread::current().name().unwrap_or("<unnamed>").to_owned();
            report_skip(&format!("SKIPPED: {test}: {missing}"));
            None
        }
    }
}

/// Whether `QMP_TEST_REQUIRE_ALL` asks for every server to be present (any value but empty, `0`, `false`).
pub fn require_all() -> bool {
    env::var_os(REQUIRE_ALL_ENV).is_some_and(|v| parse_flag(&v))
}

fn parse_flag(value: &OsStr) -> bool {
    let v = value.to_string_lossy();
    let v = v.trim();
    !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false") || v.eq_ignore_ascii_case("no"))
}

/// Starts a real server for a test, or skips the test when its binary is not installed.
///
/// `require!(QemuServer::system())` evaluates to the [`QemuServer`]; when the
/// binary is missing it prints `SKIPPED: ...` to stderr and `return`s from the enclosing function (use
/// `require!(expr, value)` to return `value` instead, e.g. `Ok(())`). A binary that exists but fails to start
/// panics with the child's stderr, and so does a missing one under `QMP_TEST_REQUIRE_ALL=1`.
#[macro_export]
macro_rules! require {
    ($start:expr) => {
        match $crate::servers::available($start) {
            ::std::option::Option::Some(server) => server,
            ::std::option::Option::None => return,
        }
    };
    ($start:expr, $skipped:expr) => {
        match $crate::servers::available($start) {
            ::std::option::Option::Some(server) => server,
            ::std::option::Option::None => return $skipped,
        }
    };
}

/// Finds the binary for `kind`, honouring its environment variable.
pub fn locate(kind: ServerKind) -> Result<PathBuf, Unavailable> {
    locate_with(kind, env::var_os(kind.env_var()).filter(|v| !v.is_empty()))
}

fn locate_with(kind: ServerKind, configured: Option<OsString>) -> Result<PathBuf, Unavailable> {
    let missing = |reason: String| Unavailable { kind, reason };
    if let Some(name) = configured {
        return find_program(Path::new(&name)).ok_or_else(|| {
            missing(format!("{}={} does not name an executable", kind.env_var(), Path::new(&name).display()))
        });
    }
    match kind {
        ServerKind::StorageDaemon | ServerKind::StorageDaemonPretty => find_program(Path::new(QSD10_DEFAULT))
            .or_else(|| find_program(Path::new("qemu-storage-daemon")))
            .ok_or_else(|| missing(format!("neither {QSD10_DEFAULT} nor qemu-storage-daemon on PATH"))),
        ServerKind::StorageDaemon72 => {
            let path = find_program(Path::new(QSD72_DEFAULT)).ok_or_else(|| missing(format!("no {QSD72_DEFAULT}")))?;
            match binary_version(&path) {
                Some(v) if v.major == 7 => Ok(path),
                Some(v) => Err(missing(format!("{} is version {v}, not 7.x", path.display()))),
                None => Err(missing(format!("`{} --version` did not report a version", path.display()))),
            }
        }
        ServerKind::System | ServerKind::SystemPretty => find_program(Path::new("qemu-system-x86_64"))
            .ok_or_else(|| missing("no qemu-system-x86_64 on PATH".to_owned())),
        ServerKind::GuestAgent | ServerKind::GuestAgentPowerDisabled => {
            find_program(Path::new("qemu-ga")).ok_or_else(|| missing("no qemu-ga on PATH".to_owned()))
        }
    }
}

/// The binary for `kind`, or `None` after a loud `SKIPPED:` line when it is not installed and not required
/// ([`require_all`]); under `QMP_TEST_REQUIRE_ALL=1` a missing binary panics. For tests that start a server
/// themselves with arguments of their own.
pub fn locate_or_skip(kind: ServerKind) -> Option<PathBuf> {
    match locate(kind) {
        Ok(path) => Some(path),
        Err(missing) if !require_all() => {
            eprintln!("SKIPPED: {missing}");
            None
        }
        Err(missing) => panic!("{missing}"),
    }
}

/// Resolves a program name like a shell would: a name containing `/` is taken as a path; a bare name is
/// searched on `PATH`, then in the sbin directories (qemu-ga lives in `/usr/sbin`, which a non-root `PATH`
/// often lacks). Only executable regular files qualify.
pub fn find_program(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 || name.is_absolute() {
        return is_executable(name).then(|| name.to_owned());
    }
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs `binary --version` and returns the first `major.minor[.micro]` found on its first line, e.g.
/// 10.0.2 for "qemu-storage-daemon version 10.0.2 (Debian ...)" or 7.2.22 for "QEMU Guest Agent 7.2.22".
pub fn binary_version(binary: &Path) -> Option<QemuVersion> {
    let out = Command::new(binary).arg("--version").stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    parse_version(String::from_utf8_lossy(&out.stdout).lines().next()?)
}

fn parse_version(line: &str) -> Option<QemuVersion> {
    line.split_whitespace().find_map(|word| {
        let mut parts = word.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let micro = match parts.next() {
            Some(p) => p.parse().ok()?,
            None => 0,
        };
        parts.next().is_none().then_some(QemuVersion { major, minor, micro })
    })
}

/// Spawns `binary` with the arguments `args(socket, dir)` builds, and waits up to `timeout` until the socket
/// serves a [`probe`]. The probe connection is closed before returning.
fn launch(
    kind: ServerKind,
    binary: &Path,
    timeout: Duration,
    args: impl FnOnce(&Path, &Path) -> Vec<OsString>,
) -> Result<QemuServer, StartError> {
    let dir = make_temp_dir().map_err(|e| early_failure(kind, binary, format!("temp dir: {e}")))?;
    let socket = dir.path().join(kind.socket_name());
    let stderr_path = dir.path().join("stderr.log");
    let stdout_path = dir.path().join("stdout.log");
    let args = args(&socket, dir.path());
    let command = shell_words(binary, &args);
    let fail = |reason: String, stderr: String| {
        StartError::Failed(StartFailure { kind, command: command.clone(), reason, stderr })
    };
    let files = fs::File::create(&stderr_path).and_then(|e| Ok((e, fs::File::create(&stdout_path)?)));
    let (stderr_file, stdout_file) = files.map_err(|e| fail(format!("log files: {e}"), String::new()))?;

    let mut child = Command::new(binary)
        .args(&args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(stdout_file)
        .stderr(stderr_file)
        .spawn()
        .map_err(|e| fail(format!("spawn: {e}"), String::new()))?;

    let started = Instant::now();
    let marker = kind.ready_marker(dir.path());
    let mut last_error = String::from("socket file never appeared");
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return Err(fail(
                    format!("exited with {status} before it was ready (last probe: {last_error})"),
                    read_lossy(&stderr_path),
                ));
            }
            Ok(None) => {}
            Err(e) => last_error = format!("try_wait: {e}"),
        }
        let marked = match marker.as_deref() {
            None => true,
            Some(m) => fs::metadata(m).is_ok_and(|md| md.len() > 0),
        };
        if socket.exists() && marked {
            match probe(kind, &socket) {
                Ok(greeted_as) => {
                    let binary = binary.to_owned();
                    return Ok(QemuServer { kind, binary, greeted_as, child, socket, stderr_path, dir });
                }
                Err(e) => last_error = format!("probe: {e}"),
            }
        } else if socket.exists() {
            last_error = "waiting for the pidfile".to_owned();
        }
        if started.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!("not ready after {timeout:?} (last: {last_error})"), read_lossy(&stderr_path)));
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// One readiness probe; the connection is closed before it returns, since QEMU serves one client at a time.
/// Returns the version the greeting announced (`None` for qemu-ga).
///
/// qemu-ga: a bare connect. QMP: read the greeting, negotiate, read the reply (see the module docs for why:
/// early connect-and-leave crashed QEMU now and then; the pidfile wait for storage daemons plus this full
/// negotiation for qemu-system took both to 0 failures in 3,000 starts).
fn probe(kind: ServerKind, socket: &Path) -> io::Result<Option<QemuVersion>> {
    let mut stream = UnixStream::connect(socket)?;
    if kind.is_guest_agent() {
        return Ok(None);
    }
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
    let greeting = read_json(&mut stream)?;
    let qemu = &greeting["QMP"]["version"]["qemu"];
    let number = |key: &str| qemu[key].as_u64();
    let (Some(major), Some(minor), Some(micro)) = (number("major"), number("minor"), number("micro")) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a QMP greeting with a version: {greeting}"),
        ));
    };
    stream.write_all(br#"{"execute":"qmp_capabilities"}"#)?;
    let reply = read_json(&mut stream)?;
    if reply.get("return").is_none() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("negotiation failed: {reply}")));
    }
    Ok(Some(QemuVersion { major, minor, micro }))
}

/// Reads exactly one JSON value that arrives on its own (a greeting, a reply): enough for the probe.
fn read_json(stream: &mut UnixStream) -> io::Result<serde_json::Value> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before a complete message"));
        }
        buf.extend_from_slice(&chunk[..n]);
        match serde_json::from_slice(&buf) {
            Ok(value) => return Ok(value),
            Err(e) if e.is_eof() => {}
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }
}

fn early_failure(kind: ServerKind, binary: &Path, reason: String) -> StartError {
    StartError::Failed(StartFailure { kind, command: binary.display().to_string(), reason, stderr: String::new() })
}

/// A temporary directory whose socket path fits in `sun_path` (108 bytes): falls back to `/tmp` when
/// `TMPDIR` is deep.
fn make_temp_dir() -> io::Result<TempDir> {
    let dir = tempfile::Builder::new().prefix("qmp-test-").tempdir()?;
    if dir.path().as_os_str().len() + "/qmp.sock".len() < 100 {
        return Ok(dir);
    }
    tempfile::Builder::new().prefix("qmp-test-").tempdir_in("/tmp")
}

/// Escapes a path for a QEMU option value (`,` is doubled).
/// The socket name of the second monitor of [`QemuServer::storage_daemon_two_monitors`].
const SECOND_MONITOR: &str = "qmp2.sock";

fn qemu_opt_escape(path: &Path) -> String {
    path.to_string_lossy().replace(',', ",,")
}

fn shell_words(binary: &Path, args: &[OsString]) -> String {
    let mut s = binary.display().to_string();
    for a in args {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn read_lossy(path: &Path) -> String {
    fs::read(path).map_or_else(
        |e| format!("(could not read {}: {e})", path.display()),
        |b| String::from_utf8_lossy(&b).into_owned(),
    )
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &'static str) -> impl FnOnce(&Path, &Path) -> Vec<OsString> {
        move |_, _| vec!["-c".into(), script.into()]
    }

    #[test]
    fn parses_qemu_version_lines() {
        assert_eq!(
            parse_version("qemu-storage-daemon version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)"),
            Some(QemuVersion { major: 10, minor: 0, micro: 2 })
        );
        let v = |major, minor, micro| Some(QemuVersion { major, minor, micro });
        assert_eq!(parse_version("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)"), v(7, 2, 22));
        assert_eq!(parse_version("QEMU Guest Agent 7.2.22"), v(7, 2, 22));
        assert_eq!(parse_version("something 8.1"), v(8, 1, 0));
        assert_eq!(parse_version("no version here"), None);
        assert_eq!(v(10, 0, 2).map(|v| v.to_string()).as_deref(), Some("10.0.2"));
        assert!(v(7, 2, 22) < v(10, 0, 0));
    }

    #[test]
    fn builds_the_documented_command_lines() {
        let sock = Path::new("/t/a,b/qmp.sock");
        let dir = Path::new("/t/a,b");
        let join = |kind: ServerKind| shell_words(Path::new("bin"), &kind.args(sock, dir));
        assert_eq!(
            join(ServerKind::StorageDaemon),
            "bin --chardev socket,path=/t/a,,b/qmp.sock,server=on,wait=off,id=c0 --monitor chardev=c0 --pidfile /t/a,b/qsd.pid"
        );
        assert_eq!(
            join(ServerKind::StorageDaemonPretty),
            "bin --chardev socket,path=/t/a,,b/qmp.sock,server=on,wait=off,id=c0 --monitor chardev=c0,pretty=on \
             --pidfile /t/a,b/qsd.pid"
        );
        assert_eq!(
            join(ServerKind::System),
            "bin -M none -display none -nodefaults -qmp unix:/t/a,,b/qmp.sock,server=on,wait=off"
        );
        assert_eq!(
            join(ServerKind::SystemPretty),
            "bin -M none -display none -nodefaults -chardev socket,id=m,path=/t/a,,b/qmp.sock,server=on,wait=off \
             -mon chardev=m,mode=control,pretty=on"
        );
        assert_eq!(
            join(ServerKind::GuestAgent),
            "bin -m unix-listen -p /t/a,b/qmp.sock -t /t/a,b -f /t/a,b/qemu-ga.pid"
        );
    }

    #[test]
    fn kinds_describe_themselves() {
        for kind in ServerKind::ALL {
            assert!(kind.env_var().starts_with("QMP_TEST_"));
            assert!(!kind.program().is_empty());
        }
        assert_eq!(ServerKind::GuestAgent.line_ending(), b"\n");
        assert_eq!(ServerKind::SystemPretty.line_ending(), b"\r\n");
        assert!(ServerKind::StorageDaemonPretty.is_pretty());
        assert!(!ServerKind::StorageDaemon72.is_pretty());
        assert_eq!(ServerKind::StorageDaemon72.expected_major(), Some(7));
    }

    #[test]
    fn flag_parsing() {
        assert!(parse_flag(OsStr::new("1")));
        assert!(parse_flag(OsStr::new("yes")));
        assert!(!parse_flag(OsStr::new("0")));
        assert!(!parse_flag(OsStr::new("")));
        assert!(!parse_flag(OsStr::new("false")));
    }

    #[test]
    fn a_configured_missing_binary_is_unavailable_not_failed() {
        let err = locate_with(ServerKind::GuestAgent, Some("/nonexistent/qemu-ga".into())).unwrap_err();
        assert_eq!(err.kind, ServerKind::GuestAgent);
        let text = err.to_string();
        assert!(text.starts_with("qemu-ga unavailable: QMP_TEST_QGA=/nonexistent/qemu-ga does not name"), "{text}");
        assert!(text.contains("(set QMP_TEST_QGA)"), "{text}");
        let err = locate_with(ServerKind::System, Some("no-such-program-qmp-tests".into())).unwrap_err();
        assert!(err.to_string().contains("QMP_TEST_QEMU_SYSTEM"));
    }

    #[test]
    fn finds_programs_on_path_and_by_path() {
        assert_eq!(find_program(Path::new("sh")).map(|p| p.is_absolute()), Some(true));
        assert_eq!(find_program(Path::new("/bin/sh")), Some(PathBuf::from("/bin/sh")));
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        fs::write(&plain, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&plain, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(find_program(&plain), None, "not executable");
        fs::set_permissions(&plain, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_program(&plain), Some(plain.clone()));
        assert_eq!(find_program(Path::new("/bin")), None, "a directory");
    }

    #[test]
    fn skip_when_missing_returns_none() {
        let missing = Unavailable { kind: ServerKind::GuestAgent, reason: "test".into() };
        let mut line = String::new();
        assert!(decide(Err(missing.into()), false, |l| line = l.to_owned()).is_none());
        assert_eq!(
            line,
            "SKIPPED: servers::tests::skip_when_missing_returns_none: qemu-ga unavailable: test (set QMP_TEST_QGA)"
        );
    }

    #[test]
    #[should_panic(expected = "QMP_TEST_REQUIRE_ALL=1 makes an unavailable server a failure")]
    fn require_all_turns_a_skip_into_a_failure() {
        let missing = Unavailable { kind: ServerKind::GuestAgent, reason: "test".into() };
        decide(Err(missing.into()), true, |_| panic!("must not skip"));
    }

    #[test]
    fn early_exit_is_a_failure_with_stderr() {
        let err =
            launch(ServerKind::System, Path::new("/bin/sh"), START_TIMEOUT, sh("echo 'boom: bad option' >&2; exit 3"))
                .unwrap_err();
        let StartError::Failed(failure) = &err else {
            panic!("expected a start failure, got {err:?}");
        };
        assert!(failure.reason.contains("exit status: 3"), "{}", failure.reason);
        assert!(failure.stderr.contains("boom: bad option"), "{}", failure.stderr);
        assert!(err.to_string().contains("boom: bad option"));
        let panic = std::panic::catch_unwind(|| decide(Err(err), false, |_| ())).unwrap_err();
        let message = panic.downcast_ref::<String>().expect("string panic");
        assert!(message.contains("boom: bad option"), "{message}");
    }

    #[test]
    fn a_socket_that_never_appears_times_out_and_kills_the_child() {
        let started = Instant::now();
        let err = launch(
            ServerKind::StorageDaemon,
            Path::new("/bin/sh"),
            Duration::from_millis(300),
            sh("echo waiting >&2; exec sleep 30"),
        )
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        let StartError::Failed(failure) = err else {
            panic!("expected a start failure");
        };
        assert!(failure.reason.contains("not ready"), "{}", failure.reason);
        assert!(failure.stderr.contains("waiting"), "{}", failure.stderr);
    }

    #[test]
    fn a_missing_binary_file_fails_to_spawn() {
        let err = QemuServer::start_binary(ServerKind::System, Path::new("/nonexistent/qemu")).unwrap_err();
        assert!(matches!(err, StartError::Failed(ref f) if f.reason.starts_with("spawn")), "{err}");
    }
}
