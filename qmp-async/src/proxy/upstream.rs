//! The upstream side of the proxy: what QEMU's greeting tells the clients, and one client command run on QEMU's
//! connection (a [`Qmp`] on the shared driver, which gives it a small integer id of its own, keeps QEMU's
//! in-band limit and routes the reply back).

use std::os::fd::OwnedFd;

use qmp_proto::server::{Failure, ServerConfig, QMP_REQ_QUEUE_LEN_MAX};
use qmp_proto::{ExecuteOptions, RawJson};

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

/// What a client's command came to: QEMU's `return` value (as QEMU wrote it) or its error.
pub(crate) type Outcome = Result<RawJson, Failure>;

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

/// Runs `command` on QEMU (no deadline: the client decides how long it waits) and maps the result to what the
/// client is answered: QEMU's error as QEMU sent it, or a `GenericError` when QEMU went away.
pub(crate) async fn run<R: Runtime>(upstream: &Qmp<R>, command: Forward) -> Outcome {
    let mut opts = if command.oob { ExecuteOptions::new().oob() } else { ExecuteOptions::new() };
    if command.fd.is_some() {
        opts = opts.pass_fd();
    }
    let call = Command::raw(&command.name, command.args.as_ref(), opts);
    match upstream.handle().call_with_fd(call, command.fd).await {
        Ok(value) => Ok(value),
        Err(Error::Qmp(e)) => Err(Failure::new(e.class, e.desc)),
        Err(Error::Connection(e)) => Err(Failure::generic(format!("QEMU is gone: {e}"))),
        Err(e) => Err(Failure::generic(format!("the proxy could not pass the command on: {e}"))),
    }
}
