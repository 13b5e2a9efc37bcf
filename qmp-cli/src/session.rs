//! One connection, QMP or guest agent, over a unix socket or TCP: the few calls the subcommands need.

use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use qmp_blocking::{Client, GuestAgent, Options, ServerEvent, Transport};
use serde_json::Value;

use crate::output::Failure;

/// Where to connect.
#[derive(Debug, Clone)]
pub enum Target {
    Unix(PathBuf),
    Tcp(String),
}

/// A connected session.
pub enum Session {
    Qmp(Client<Box<dyn Transport>>),
    Agent(GuestAgent<Box<dyn Transport>>),
}

impl Session {
    pub fn connect(target: &Target, guest_agent: bool, timeout: Duration) -> Result<Self, Failure> {
        let stream: Box<dyn Transport> = match target {
            Target::Unix(path) => Box::new(
                UnixStream::connect(path).map_err(|e| Failure::Connection(format!("{}: {e}", path.display())))?,
            ),
            Target::Tcp(addr) => {
                Box::new(TcpStream::connect(addr).map_err(|e| Failure::Connection(format!("{addr}: {e}")))?)
            }
        };
        let options = Options::default().connect_timeout(timeout).command_timeout(Some(timeout));
        Ok(if guest_agent {
            Session::Agent(GuestAgent::from_stream(stream, options)?)
        } else {
            Session::Qmp(Client::from_stream(stream, options)?)
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
}
