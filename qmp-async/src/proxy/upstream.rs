//! The upstream side of the proxy: what QEMU's greeting tells the clients, and one client command run on QEMU's
//! connection (a [`Qmp`] on the shared driver, which gives it a small integer id of its own, keeps QEMU's
//! in-band limit and routes the reply back).

use std::os::fd::OwnedFd;

use qmp_proto::server::{Failure, ServerConfig, QMP_REQ_QUEUE_LEN_MAX};
use qmp_proto::{ExecuteOptions, QmpError, RawJson};

use crate::command::Command;
use crate::runtime::Runtime;
use crate::{Error, Qmp};

/// A client's command on its way to QEMU.
#[derive(Debug)]
pub(crate) struct Forward {
    pub(crate) name: String,
    /// The arguments, `None` when there were none (QEMU reads fewer bytes).
    pub(crate) args: Option<RawJson>,
    pub(crate) oob: bool,
    /// A descriptor the client passed with it (`getfd`, `add-fd`): passed to QEMU with this command only.
    pub(crate) fd: Option<OwnedFd>,
}

/// What a client's command came to.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// QEMU's `return` value, as QEMU wrote it.
    Return(RawJson),
    /// QEMU's error: the `error` object as QEMU wrote it ([`QmpError::raw`]), its class for the audit log.
    Error(QmpError),
    /// The proxy's own failure (QEMU gone, say), written as QEMU writes its errors.
    Failed(Failure),
}

impl Outcome {
    /// The class of the result, for the audit log: `ok`, or the error's class.
    pub(crate) fn class(&self) -> &str {
        match self {
            Outcome::Return(_) => "ok",
            Outcome::Error(e) => &e.class,
            Outcome::Failed(f) => &f.class,
        }
    }
}

/// The server settings every client of the proxy gets: QEMU's own version in the greeting, `oob` offered only
/// when the proxy negotiated it with QEMU (so it can honour it), every command passed on (QEMU decides what
/// exists), QEMU's queue length.
pub(crate) fn client_config<R: Runtime>(upstream: &Qmp<R>) -> ServerConfig {
    let greeting = upstream.greeting();
    let (major, minor, micro, package) = match &greeting.version {
        Some(v) => (v.major, v.minor, v.micro, v.package.clone()),
        None => (0, 0, 0, String::new()),
    };
    let capabilities: &[&str] = if upstream.oob_enabled() { &["oob"] } else { &[] };
    ServerConfig::qmp()
        .version(major, minor, micro, package)
        .capabilities(capabilities.iter().copied())
        .reject_unlisted(false)
        .max_queued_commands(QMP_REQ_QUEUE_LEN_MAX)
}

/// Sends `command` to QEMU (no deadline: the client decides how long it waits) and calls `done` with what the
/// client is answered: QEMU's reply as QEMU wrote it, or a `GenericError` when QEMU went away. `done` runs in the
/// upstream connection's driver task (or here, when the connection is over already): no task and no one-shot
/// per command, which is most of what the proxy adds to a round trip.
pub(crate) fn send<R: Runtime>(upstream: &Qmp<R>, command: Forward, done: impl FnOnce(Outcome) + Send + 'static) {
    let mut opts = if command.oob { ExecuteOptions::new().oob() } else { ExecuteOptions::new() };
    if command.fd.is_some() {
        opts = opts.pass_fd();
    }
    let Forward { name, args, fd, .. } = command;
    let call = Command::raw_owned(name, args, opts);
    let sink = Box::new(move |result: Result<RawJson, Error>| done(outcome(result)));
    upstream.handle().submit_with_sink(call, fd, sink);
}

fn outcome(result: Result<RawJson, Error>) -> Outcome {
    match result {
        Ok(value) => Outcome::Return(value),
        Err(Error::Qmp(e)) => Outcome::Error(e),
        Err(Error::Connection(e)) => Outcome::Failed(Failure::generic(format!("QEMU is gone: {e}"))),
        Err(e) => Outcome::Failed(Failure::generic(format!("the proxy could not pass the command on: {e}"))),
    }
}
