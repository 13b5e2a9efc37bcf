//! Typed commands (feature `qapi`): any [`qapi_spec::Command`](qmp_qapi::Command) of the `qapi-qmp` / `qapi-qga`
//! crates in, its typed result out. The conversions live in the adapter-neutral [`qmp_qapi`] crate (see its docs
//! for the QEMU versions whose replies were checked); this file only routes them through the connection. Typed
//! events: [`EventItem::to_qapi`].

use qmp_qapi::Command;

use crate::command;
use crate::events::EventItem;
use crate::guest_agent::GuestAgent;
use crate::handle::Handle;
use crate::qmp::Qmp;
use crate::runtime::Runtime;
use crate::Error;

impl<R: Runtime> Qmp<R> {
    /// Runs a typed command from `qapi-qmp` and returns its typed result (`C::Ok`; `Empty` for commands that
    /// return nothing).
    ///
    /// ```no_run
    /// # async fn example<R: qmp_async::Runtime>(qmp: qmp_async::Qmp<R>) -> Result<(), qmp_async::Error> {
    /// use qmp_async::qapi::qapi_qmp::{query_status, query_version};
    /// let version = qmp.execute_typed(query_version {}).await?;
    /// let status = qmp.execute_typed(query_status {}).await?;
    /// println!("QEMU {}.{}: running {}", version.qemu.major, version.qemu.minor, status.running);
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
}

impl<R: Runtime> GuestAgent<R> {
    /// Runs a typed command from `qapi-qga` and returns its typed result.
    ///
    /// ```no_run
    /// # async fn example<R: qmp_async::Runtime>(ga: qmp_async::GuestAgent<R>) -> Result<(), qmp_async::Error> {
    /// let info = ga.execute_typed(qmp_async::qapi::qapi_qga::guest_info {}).await?;
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
    let raw = handle.call(command::Command::new(qmp_qapi::name(&command), &command, opts)?).await?;
    Ok(qmp_qapi::decode::<C>(&raw)?)
}

impl EventItem {
    /// The event as the typed [`qapi_qmp::Event`](qmp_qapi::qapi_qmp::Event) (see [`qmp_qapi::qmp_event`]),
    /// unless this is a lag marker.
    pub fn to_qapi(&self) -> Option<Result<qmp_qapi::qapi_qmp::Event, serde_json::Error>> {
        self.event().map(qmp_qapi::qmp_event)
    }
}
