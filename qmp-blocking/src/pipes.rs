//! [`Pipes`]: a pipe to read from and a pipe to write to as one [`Transport`], for a QEMU whose monitor is on
//! its stdio (`-qmp stdio`, see [`Client::spawn_stdio`](crate::Client::spawn_stdio)) or on the two FIFOs of
//! `-qmp pipe:NAME`. Pipes have no read timeout of their own: a read first waits with `poll(2)` for as long as
//! the timeout allows.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};

use crate::transport::Transport;

/// A read pipe and a write pipe, in blocking mode.
#[derive(Debug)]
pub struct Pipes {
    read: File,
    write: File,
    timeout: Option<Duration>,
}

impl Pipes {
    /// Joins `read` (QEMU's output) and `write` (its input); both are put in blocking mode.
    pub fn new(read: impl Into<OwnedFd>, write: impl Into<OwnedFd>) -> io::Result<Pipes> {
        let (read, write) = (File::from(read.into()), File::from(write.into()));
        for file in [&read, &write] {
            let flags = fcntl_getfl(file)?;
            fcntl_setfl(file, flags - OFlags::NONBLOCK)?;
        }
        Ok(Pipes { read, write, timeout: None })
    }

    /// Starts `command` with piped stdin and stdout: the child, and its stdio as pipes. Its stderr is left as set
    /// on `command`.
    pub fn spawn(command: &mut Command) -> io::Result<(Child, Pipes)> {
        let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
        match (child.stdout.take(), child.stdin.take()) {
            (Some(out), Some(input)) => Ok((child, Pipes::new(out, input)?)),
            _ => Err(io::Error::other("the child's stdio was not piped")),
        }
    }
}

impl Read for Pipes {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(timeout) = self.timeout {
            let wait = Timespec { tv_sec: timeout.as_secs() as i64, tv_nsec: timeout.subsec_nanos().into() };
            let mut fds = [PollFd::new(&self.read, PollFlags::IN)];
            if poll(&mut fds, Some(&wait))? == 0 {
                return Err(io::ErrorKind::TimedOut.into());
            }
        }
        self.read.read(buf)
    }
}

impl Write for Pipes {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write.flush()
    }
}

impl Transport for Pipes {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.timeout = timeout;
        Ok(())
    }
}

impl AsFd for Pipes {
    /// The read pipe.
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.read.as_fd()
    }
}
