//! One connection, QMP or guest agent, over a unix socket or TCP: the few calls the subcommands need.
//!
//! Connecting explains its failures in the user's terms, within the connect timeout: a path that is a directory
//! or a regular file rather than a socket, a socket nobody listens on, a monitor that stays silent because
//! another client holds it, a peer that is not a QMP server, or `--ga` pointed at a QMP monitor.

use std::net::TcpStream;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use qmp_blocking::{Client, ConnectionError, Error, GuestAgent, Options, ServerEvent, Transport};
use serde_json::Value;

use crate::output::Failure;

/// How long `--ga` waits for a peer that speaks first: an agent never does, a QMP monitor greets at once.
const SPEAKS_FIRST_WAIT: Duration = Duration::from_millis(150);

/// Where to connect.
#[derive(Debug, Clone)]
pub enum Target {
    Unix(PathBuf),
    Tcp(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Unix(path) => write!(f, "{}", path.display()),
            Target::Tcp(addr) => f.write_str(addr),
        }
    }
}

/// A connected session.
pub enum Session {
    Qmp(Client<Box<dyn Transport>>),
    Agent(GuestAgent<Box<dyn Transport>>),
}

impl Session {
    pub fn connect(target: &Target, guest_agent: bool, timeout: Duration) -> Result<Self, Failure> {
        Self::connect_with(target, guest_agent, timeout, |stream| stream)
    }

    /// Connects, letting `wrap` put a layer around the stream first (the shell's wire trace).
    pub fn connect_with(
        target: &Target,
        guest_agent: bool,
        timeout: Duration,
        wrap: impl FnOnce(Box<dyn Transport>) -> Box<dyn Transport>,
    ) -> Result<Self, Failure> {
        let stream: Box<dyn Transport> = match target {
            Target::Unix(path) => {
                let stream = UnixStream::connect(path).map_err(|e| Failure::Connection(explain_unix(path, &e)))?;
                if guest_agent {
                    refuse_qmp_monitor(&stream, target)?;
                }
                Box::new(stream)
            }
            Target::Tcp(addr) => {
                let stream = TcpStream::connect(addr).map_err(|e| Failure::Connection(format!("{addr}: {e}")))?;
                let _ = stream.set_nodelay(true);
                if guest_agent {
                    refuse_qmp_monitor(&stream, target)?;
                }
                Box::new(stream)
            }
        };
        let stream = wrap(stream);
        let options = Options::default().connect_timeout(timeout).command_timeout(Some(timeout));
        let explain = |e| explain_handshake(e, target, guest_agent, timeout);
        Ok(if guest_agent {
            Session::Agent(GuestAgent::from_stream(stream, options).map_err(explain)?)
        } else {
            Session::Qmp(Client::from_stream(stream, options).map_err(explain)?)
        })
    }

    /// A one-line description of the peer.
    pub fn describe(&self) -> String {
        match self {
            Session::Qmp(c) => format!("QEMU {}", c.greeting().version_string()),
            Session::Agent(_) => "guest agent".into(),
        }
    }

    pub fn execute(&mut self, name: &str, args: Option<&Value>, oob: bool) -> Result<Value, Failure> {
        Ok(match self {
            Session::Qmp(c) if oob => c.execute_oob(name, args)?,
            Session::Qmp(c) => c.execute(name, args)?,
            Session::Agent(_) if oob => {
                return Err(Failure::Usage("the guest agent has no out-of-band commands".into()))
            }
            Session::Agent(a) => a.execute(name, args)?,
        })
    }

    /// The QMP client (jobs are QMP only).
    pub fn qmp(&mut self) -> Result<&mut Client<Box<dyn Transport>>, Failure> {
        match self {
            Session::Qmp(c) => Ok(c),
            Session::Agent(_) => Err(Failure::Usage("the guest agent runs no jobs".into())),
        }
    }

    pub fn next_event(&mut self, timeout: Option<Duration>) -> Result<Option<ServerEvent>, Failure> {
        match self {
            Session::Qmp(c) => Ok(c.next_event(timeout)?),
            Session::Agent(_) => {
                // The agent sends no events: just wait.
                std::thread::sleep(timeout.unwrap_or(Duration::from_secs(3600)));
                Ok(None)
            }
        }
    }

    /// Whether the server ended the connection cleanly, between messages (QEMU quit).
    pub fn closed_normally(&self) -> bool {
        let cause = match self {
            Session::Qmp(c) => c.connection_error(),
            Session::Agent(a) => a.connection_error(),
        };
        matches!(cause, Some(ConnectionError::Eof))
    }
}

/// Why connecting to a unix socket failed, in terms of what is at the path.
fn explain_unix(path: &Path, error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let shown = path.display();
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => format!("{shown} is a directory, not a socket"),
        Ok(meta) if meta.is_file() => format!("{shown} is a regular file, not a socket"),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            format!("{shown}: no such socket (is QEMU running with -qmp unix:{shown},server=on,wait=off?)")
        }
        _ if error.kind() == ErrorKind::ConnectionRefused => {
            format!("{shown}: nobody is listening on this socket (QEMU has exited and left it behind?)")
        }
        _ => format!("{shown}: {error}"),
    }
}

/// For `--ga`: a guest agent never speaks first, a QMP monitor greets at once. Peeks (reads nothing away) for a
/// short while and refuses a peer that greets like QMP.
fn refuse_qmp_monitor(stream: &impl AsFd, target: &Target) -> Result<(), Failure> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    use rustix::net::{recv, RecvFlags};
    let wait = Timespec { tv_sec: 0, tv_nsec: SPEAKS_FIRST_WAIT.as_nanos() as i64 };
    let mut fds = [PollFd::new(stream, PollFlags::IN)];
    if !matches!(poll(&mut fds, Some(&wait)), Ok(n) if n > 0) {
        return Ok(());
    }
    let mut head = [0u8; 64];
    let Ok((n, _)) = recv(stream, &mut head, RecvFlags::PEEK | RecvFlags::DONTWAIT) else { return Ok(()) };
    let head = String::from_utf8_lossy(&head[..n]);
    if head.contains("\"QMP\"") {
        return Err(Failure::Connection(format!(
            "{target} is a QMP monitor, not a guest agent (it greeted like QMP): drop --ga"
        )));
    }
    Ok(())
}

/// What a failed handshake most likely means.
fn explain_handshake(error: Error, target: &Target, guest_agent: bool, timeout: Duration) -> Failure {
    let secs = timeout.as_secs_f64();
    let message = match &error {
        Error::Connection(ConnectionError::GreetingTimeout) => format!(
            "{target}: no QMP greeting within {secs}s: another client probably holds this monitor (QEMU serves \
             one client at a time on a monitor socket); or this is not a QMP socket (a guest agent's? add --ga)"
        ),
        Error::Connection(ConnectionError::BadGreeting(what)) => {
            format!("{target} is not a QMP server: its first message was not a QMP greeting: {what}")
        }
        Error::Connection(ConnectionError::SyncTimeout) | Error::TimedOut if guest_agent => format!(
            "{target}: the guest agent did not answer guest-sync-delimited within {secs}s: is qemu-ga running \
             in the guest, is this its socket, and is no other client connected to it?"
        ),
        Error::Connection(ConnectionError::Eof) => {
            format!("{target}: the server closed the connection during the handshake")
        }
        _ => return Failure::from(error),
    };
    Failure::Connection(message)
}
