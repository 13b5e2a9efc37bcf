//! Typed commands (feature `qapi`): any [`qmp_qapi::Command`] in (the generated types of
//! [`qmp_qapi::qmp::commands`] and [`qmp_qapi::qga::commands`], which hold for every QEMU from 7.2 to 10.0), its
//! typed result out; the server's schema ([`Qmp::server_schema`]); typed events ([`EventItem::to_qapi`]). The
//! conversions live in the adapter-neutral [`qmp_qapi`] crate; this file only routes them through the connection.

use qmp_qapi::{Command, ServerSchema};

use crate::command;
use crate::events::EventItem;
use crate::guest_agent::GuestAgent;
use crate::handle::Handle;
use crate::qmp::Qmp;
use crate::runtime::Runtime;
use crate::Error;

impl<R: Runtime> Qmp<R> {
    /// Runs a typed command and returns its typed result (`C::Ok`; [`qmp_qapi::Empty`] for commands that
    /// return nothing).
    ///
    /// ```no_run
    /// # async fn example<R: qmp_async::Runtime>(qmp: qmp_async::Qmp<R>) -> Result<(), qmp_async::Error> {
    /// use qmp_async::qapi::qmp::commands::{QueryStatus, QueryVersion};
    /// let version = qmp.execute_typed(QueryVersion::default()).await?;
    /// let status = qmp.execute_typed(QueryStatus::default()).await?;
    /// println!("QEMU {}.{}: {}", version.qemu.major, version.qemu.minor, status.status);
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel safe, like [`execute`](Self::execute).
    pub async fn execute_typed<C: Command>(&self, command: C) -> Result<C::Ok, Error> {
        typed(self.handle(), command, false).await
    }

    /// Runs a typed command out of band (`C::ALLOW_OOB` must hold, and OOB must be negotiated).
    ///
    /// # Cancel safety
    /// Cancel safe, like [`execute`](Self::execute).
    pub async fn execute_typed_oob<C: Command>(&self, command: C) -> Result<C::Ok, Error> {
        typed(self.handle(), command, true).await
    }

    /// Asks the server for its schema (`query-qmp-schema`, once), to ask it later which commands, members
    /// and enum values this server has.
    ///
    /// # Cancel safety
    /// Cancel safe, like [`execute`](Self::execute).
    pub async fn server_schema(&self) -> Result<ServerSchema, Error> {
        let raw = self.execute_raw("query-qmp-schema", None).await?;
        Ok(ServerSchema::from_raw(&raw)?)
    }
}

impl<R: Runtime> GuestAgent<R> {
    /// Runs a typed guest-agent command and returns its typed result.
    ///
    /// ```no_run
    /// # async fn example<R: qmp_async::Runtime>(ga: qmp_async::GuestAgent<R>) -> Result<(), qmp_async::Error> {
    /// let info = ga.execute_typed(qmp_async::qapi::qga::commands::GuestInfo::default()).await?;
    /// println!("qemu-ga {}", info.version);
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel safe, like [`execute`](Self::execute).
    pub async fn execute_typed<C: Command>(&self, command: C) -> Result<C::Ok, Error> {
        typed(self.handle(), command, false).await
    }
}

async fn typed<C: Command, R: Runtime>(handle: &Handle<R>, command: C, oob: bool) -> Result<C::Ok, Error> {
    let mut opts = handle.opts_for(C::NAME);
    if oob {
        opts = opts.oob();
    }
    let raw = handle.call(command::Command::new(C::NAME, &command, opts)?).await?;
    Ok(qmp_qapi::decode::<C>(&raw)?)
}

impl EventItem {
    /// The event as the typed [`qmp_qapi::qmp::Event`] (see [`qmp_qapi::qmp_event`]), unless this is a lag
    /// marker. An unknown event is `Event::Other`; the timestamp (in [`event`](Self::event)) is not looked at.
    pub fn to_qapi(&self) -> Option<Result<qmp_qapi::qmp::Event, serde_json::Error>> {
        self.event().map(qmp_qapi::qmp_event)
    }
}
