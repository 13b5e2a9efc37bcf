//! [`Client`]: a blocking QMP connection. Each call runs the driver until its answer arrives.

use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use qmp_proto::{ExecuteOptions, Greeting, Mode, ProtocolViolation, RawJson, RequestId, ServerEvent};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::driver::Driver;
use crate::transport::Transport;
use crate::Error;
use crate::{Options, Pipes};

/// A command sent with [`Client::submit`]; [`Client::wait`] collects its reply.
#[derive(Debug)]
#[must_use = "collect the reply with Client::wait, or give it up with Client::cancel"]
pub struct Pending(RequestId);

/// A blocking QMP client over any [`Transport`] (a `UnixStream` or `TcpStream` by default).
///
/// ```no_run
/// use qmp_blocking::{Client, Options};
/// use serde_json::{json, Value};
///
/// let mut qmp = Client::connect_unix("/run/qemu/vm0.qmp", Options::default())?;
/// println!("QEMU {}", qmp.greeting().version_string());
/// let status: Value = qmp.execute("query-status", ())?;
/// qmp.execute::<Value>("stop", ())?;
/// while let Some(event) = qmp.next_event(Some(std::time::Duration::from_secs(1)))? {
///     println!("{} {:?}", event.name, event.data);
/// }
/// match qmp.execute::<Value>("no-such-command", ()) {
///     Err(qmp_blocking::Error::Qmp(e)) => assert_eq!(e.class, "CommandNotFound"),
///     other => panic!("{other:?}"),
/// }
/// # Ok::<(), qmp_blocking::Error>(())
/// ```
#[derive(Debug)]
pub struct Client<S = UnixStream> {
    pub(crate) driver: Driver<S>,
    options: Options,
}

impl Client<UnixStream> {
    /// Connects to a QMP unix socket and completes the handshake within the connect timeout.
    pub fn connect_unix(path: impl AsRef<Path>, options: Options) -> Result<Self, Error> {
        Self::from_stream(UnixStream::connect(path)?, options)
    }
}

impl Client<TcpStream> {
    /// Connects to a QMP TCP socket (`-qmp tcp:host:port,server=on`) and completes the handshake.
    pub fn connect_tcp(addr: impl ToSocketAddrs, options: Options) -> Result<Self, Error> {
        let mut last = std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address");
        for addr in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, options.get_connect_timeout()) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    return Self::from_stream(stream, options);
                }
                Err(e) => last = e,
            }
        }
        Err(Error::Connect(last))
    }
}

impl Client<Pipes> {
    /// Runs QMP over two pipes: `read` carries QEMU's output, `write` its input (`-qmp pipe:NAME`: open
    /// `NAME.out` to read and `NAME.in` to write).
    pub fn from_pipes(read: impl Into<OwnedFd>, write: impl Into<OwnedFd>, options: Options) -> Result<Self, Error> {
        Self::from_stream(Pipes::new(read, write)?, options)
    }

    /// Starts `command` (a QEMU command line with `-qmp stdio`) with its stdin and stdout piped to a new
    /// connection, and completes the handshake. Returns the child too: waiting for it is the caller's.
    ///
    /// ```no_run
    /// let mut qemu = std::process::Command::new("qemu-system-x86_64");
    /// qemu.args(["-M", "none", "-display", "none", "-qmp", "stdio"]);
    /// let (mut child, mut qmp) = qmp_blocking::Client::spawn_stdio(qemu, Default::default())?;
    /// qmp.execute::<serde_json::Value>("quit", ())?;
    /// child.wait()?;
    /// # Ok::<(), qmp_blocking::Error>(())
    /// ```
    pub fn spawn_stdio(mut command: Command, options: Options) -> Result<(Child, Self), Error> {
        let (child, pipes) = Pipes::spawn(&mut command)?;
        Ok((child, Self::from_stream(pipes, options)?))
    }
}

impl<S: Transport> Client<S> {
    /// Runs QMP over an already connected stream: waits for the greeting and negotiates.
    pub fn from_stream(stream: S, options: Options) -> Result<Self, Error> {
        let core = qmp_proto::Client::new(options.to_config(Mode::Qmp), Instant::now());
        let mut driver = Driver::new(stream, core, options.get_event_buffer());
        driver.handshake()?;
        Ok(Client { driver, options })
    }

    /// The server's greeting (QEMU version and offered capabilities).
    pub fn greeting(&self) -> &Greeting {
        // A Client exists only after a successful handshake, which stores the greeting.
        self.driver.core.greeting().expect("greeting present after handshake")
    }

    /// Whether out-of-band execution was negotiated.
    pub fn oob_enabled(&self) -> bool {
        self.driver.core.oob_enabled()
    }

    /// Runs a command and deserializes its `return` value into `T`. Pass `()` for no arguments, or anything
    /// that serializes to a JSON object. Commands that return nothing answer `{}`: use `serde_json::Value` or
    /// `serde::de::IgnoredAny` as `T`.
    pub fn execute<T: DeserializeOwned>(&mut self, command: &str, args: impl Serialize) -> Result<T, Error> {
        let raw = self.run(command, &args, ExecuteOptions::new(), self.options.get_command_timeout())?;
        Ok(raw.deserialize()?)
    }

    /// Runs a command with raw JSON arguments and returns the raw `return` value.
    pub fn execute_raw(&mut self, command: &str, args: Option<&RawJson>) -> Result<RawJson, Error> {
        let (opts, now) = self.deadline(ExecuteOptions::new(), self.options.get_command_timeout());
        let id = self.driver.core.execute_raw(command, args, opts)?;
        self.driver.wait_from(id, now)
    }

    /// Runs a command out of band (`exec-oob`); needs OOB negotiated and a command that allows it.
    pub fn execute_oob<T: DeserializeOwned>(&mut self, command: &str, args: impl Serialize) -> Result<T, Error> {
        let raw = self.run(command, &args, ExecuteOptions::new().oob(), self.options.get_command_timeout())?;
        Ok(raw.deserialize()?)
    }

    /// Runs a command with its own timeout (`None`: wait forever), overriding the default.
    pub fn execute_with_timeout<T: DeserializeOwned>(
        &mut self,
        command: &str,
        args: impl Serialize,
        timeout: Option<Duration>,
    ) -> Result<T, Error> {
        Ok(self.run(command, &args, ExecuteOptions::new(), timeout)?.deserialize()?)
    }

    /// Sends a command without waiting for its reply, so that several can be on the wire at once (QEMU works
    /// on up to 8 when OOB is negotiated; more wait here, in order). Collect each reply with
    /// [`wait`](Self::wait), in any order, or give it up with [`cancel`](Self::cancel); a reply never collected
    /// is kept until the client is dropped.
    ///
    /// ```no_run
    /// # let mut qmp = qmp_blocking::Client::connect_unix("/tmp/qmp.sock", Default::default())?;
    /// let pending: Vec<_> = ["query-status", "query-version", "query-block"]
    ///     .into_iter()
    ///     .map(|cmd| qmp.submit(cmd, ()))
    ///     .collect::<Result<_, _>>()?;
    /// for p in pending {
    ///     println!("{}", qmp.wait(p)?);
    /// }
    /// # Ok::<(), qmp_blocking::Error>(())
    /// ```
    pub fn submit(&mut self, command: &str, args: impl Serialize) -> Result<Pending, Error> {
        let (opts, _) = self.deadline(ExecuteOptions::new(), self.options.get_command_timeout());
        let id = self.driver.core.execute(command, Some(&args), opts)?;
        self.driver.flush();
        Ok(Pending(id))
    }

    /// Waits for the reply of a command sent with [`submit`](Self::submit).
    pub fn wait(&mut self, pending: Pending) -> Result<RawJson, Error> {
        self.driver.wait(pending.0)
    }

    /// Gives up on a command sent with [`submit`](Self::submit): its reply, whenever it comes, is dropped.
    pub fn cancel(&mut self, pending: Pending) {
        if !self.driver.core.cancel(pending.0) {
            self.driver.outcomes.remove(&pending.0);
        }
        self.driver.flush();
    }

    fn run(
        &mut self,
        command: &str,
        args: &impl Serialize,
        opts: ExecuteOptions,
        timeout: Option<Duration>,
    ) -> Result<RawJson, Error> {
        let (opts, now) = self.deadline(opts, timeout);
        let id = self.driver.core.execute(command, Some(args), opts)?;
        self.driver.wait_from(id, now)
    }

    /// `opts` with the deadline `timeout` from now, and the clock reading it took (none without a timeout).
    fn deadline(&self, opts: ExecuteOptions, timeout: Option<Duration>) -> (ExecuteOptions, Option<Instant>) {
        let Some(timeout) = timeout else {
            return (opts.deadline_opt(None), None);
        };
        let now = Instant::now();
        (opts.deadline(now + timeout), Some(now))
    }

    /// The next event: a buffered one at once, else waits up to `timeout` (`None`: forever) for one.
    /// `Ok(None)` on timeout; after the connection ends, buffered events still come out, then the cause.
    pub fn next_event(&mut self, timeout: Option<Duration>) -> Result<Option<ServerEvent>, Error> {
        self.driver.next_event(timeout)
    }

    /// Events dropped so far because the buffer was full (see [`Options::event_buffer`]).
    pub fn dropped_events(&self) -> u64 {
        self.driver.dropped_events
    }

    /// Takes the protocol violations seen so far (the most recent 64): malformed messages, unknown ids, id-less
    /// errors. The session survived each of them.
    pub fn take_violations(&mut self) -> Vec<ProtocolViolation> {
        self.driver.violations.take()
    }

    /// Why the connection ended, if it has.
    pub fn connection_error(&self) -> Option<&qmp_proto::ConnectionError> {
        self.driver.closed.as_ref()
    }

    /// The underlying stream (for example to pass file descriptors over a unix socket).
    pub fn stream(&self) -> &S {
        &self.driver.stream
    }

    /// Closes the session and returns the stream.
    pub fn close(mut self) -> S {
        self.driver.close();
        self.driver.stream
    }
}
