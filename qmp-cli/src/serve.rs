//! `qmp -s PATH serve [--script FILE]` (or `qmp --tcp HOST:PORT serve`): a fake qemu-storage-daemon 10 on a unix
//! or TCP socket, until killed.
//!
//! It is qmp-rs's own server (`qmp_proto::Server`, byte for byte as qsd 10 speaks the protocol) with
//! [`FakeQemu`] answering: `query-version`, `query-status`, `stop`/`cont`, `query-commands`,
//! `query-qmp-schema` (qsd 10.0.2's recorded schema), `quit`, and what the script says. Arguments of every
//! command in the schema are checked with QEMU's error texts. The script is JSON:
//! `{"NAME": {"return": VALUE} | {"error": {"class": C, "desc": D}}, "events": [{"event": E, "data": D}]}`.

use std::path::Path;

use qmp_blocking::fake_qemu::{FakeQemu, Script};

use crate::output::Failure;

/// The fake QEMU, with the script at `script` if given.
pub fn fake_qemu(script: Option<&Path>) -> Result<FakeQemu, Failure> {
    let mut fake = FakeQemu::new();
    if let Some(path) = script {
        let text = std::fs::read_to_string(path).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
        let script = Script::from_json(&text).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
        fake = fake.with_script(script);
    }
    Ok(fake)
}

/// Where to serve.
#[derive(Debug, Clone, Copy)]
pub enum On<'a> {
    /// A unix socket at this path.
    Unix(&'a Path),
    /// A TCP address, `HOST:PORT`.
    Tcp(&'a str),
}

/// Serves clients on `on` one at a time until killed.
pub fn run(on: On<'_>, script: Option<&Path>) -> Result<(), Failure> {
    let mut fake = fake_qemu(script)?;
    let cannot = |what: &dyn std::fmt::Display, e| Failure::Connection(format!("cannot listen on {what}: {e}"));
    let accepting = |what: &dyn std::fmt::Display, e| Failure::Connection(format!("accepting on {what}: {e}"));
    match on {
        On::Unix(socket) => {
            let listener = std::os::unix::net::UnixListener::bind(socket).map_err(|e| cannot(&socket.display(), e))?;
            eprintln!("qmp serve: fake qemu-storage-daemon 10 on {}", socket.display());
            qmp_blocking::serve::serve_listener(&listener, &mut fake).map_err(|e| accepting(&socket.display(), e))
        }
        On::Tcp(addr) => {
            let listener = std::net::TcpListener::bind(addr).map_err(|e| cannot(&addr, e))?;
            // The bound address, so that port 0 is useful: the port picked is on stderr.
            let bound = listener.local_addr().map_err(|e| cannot(&addr, e))?;
            eprintln!("qmp serve: fake qemu-storage-daemon 10 on tcp:{bound}");
            qmp_blocking::serve::serve_tcp_listener(&listener, &mut fake).map_err(|e| accepting(&bound, e))
        }
    }
}
