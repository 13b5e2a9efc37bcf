//! Typed commands (feature `qapi`): a [`qmp_qapi::Command`] in, its typed result out, on [`Client`] and
//! [`GuestAgent`]; and the server's schema ([`Client::server_schema`]).

use qmp_qapi::{Command, ServerSchema};

use crate::client::Client;
use crate::guest_agent::GuestAgent;
use crate::transport::Transport;
use crate::Error;

impl<S: Transport> Client<S> {
    /// Runs a typed command (from [`qmp_qapi::qmp::commands`]) and returns its typed result.
    ///
    /// ```no_run
    /// use qmp_blocking::qapi::qmp::commands::{QueryStatus, QueryVersion};
    /// let mut qmp = qmp_blocking::Client::connect_unix("/tmp/qmp.sock", Default::default())?;
    /// let version = qmp.execute_typed(QueryVersion::default())?;
    /// let status = qmp.execute_typed(QueryStatus::default())?;
    /// println!("QEMU {}.{}: {}", version.qemu.major, version.qemu.minor, status.status);
    /// # Ok::<(), qmp_blocking::Error>(())
    /// ```
    pub fn execute_typed<C: Command>(&mut self, command: C) -> Result<C::Ok, Error> {
        self.execute(C::NAME, &command)
    }

    /// Runs a typed command out of band (`C::ALLOW_OOB` must hold, and OOB must be negotiated).
    pub fn execute_typed_oob<C: Command>(&mut self, command: C) -> Result<C::Ok, Error> {
        self.execute_oob(C::NAME, &command)
    }

    /// Asks the server for its schema (`query-qmp-schema`), to ask it later which commands, members and enum
    /// values this server has.
    pub fn server_schema(&mut self) -> Result<ServerSchema, Error> {
        let raw = self.execute_raw("query-qmp-schema", None)?;
        Ok(ServerSchema::from_raw(&raw)?)
    }
}

impl<S: Transport> GuestAgent<S> {
    /// Runs a typed guest-agent command (from [`qmp_qapi::qga::commands`]) and returns its typed result.
    ///
    /// ```no_run
    /// let mut ga = qmp_blocking::GuestAgent::connect_unix("/run/qemu/vm0.qga", Default::default())?;
    /// let info = ga.execute_typed(qmp_blocking::qapi::qga::commands::GuestInfo::default())?;
    /// println!("qemu-ga {}", info.version);
    /// # Ok::<(), qmp_blocking::Error>(())
    /// ```
    pub fn execute_typed<C: Command>(&mut self, command: C) -> Result<C::Ok, Error> {
        self.execute(C::NAME, &command)
    }
}
