//! Typed commands (the `qapi` feature): any [`qmp_qapi::Command`] from `qapi-qmp` / `qapi-qga` in, its typed
//! result out. The conversions live in the adapter-neutral `qmp-qapi` crate; see its docs for the QEMU versions
//! whose replies were checked. Typed events: [`EventItem::to_qapi`](crate::EventItem::to_qapi).

use qmp_qapi::Command;

use crate::error::Error;
use crate::guest_agent::GuestAgent;
use crate::qmp::Qmp;

impl Qmp {
    /// Runs a typed command (for example `qmp_qapi::qapi_qmp::query_status {}`, or a reference to one) and
    /// returns its typed result, with the default command timeout. It runs in-band; use
    /// [`execute_oob`](Self::execute_oob) with the command as arguments to run one out of band.
    ///
    /// # Cancel safety
    /// Cancel safe, like [`execute`](Self::execute).
    pub async fn execute_typed<C: Command>(&self, command: C) -> Result<C::Ok, Error> {
        let ret = self.execute_raw(C::NAME, qmp_qapi::arguments(&command)?.as_ref()).await?;
        Ok(qmp_qapi::decode::<C>(&ret)?)
    }
}

impl GuestAgent {
    /// Runs a typed guest-agent command (for example `qmp_qapi::qapi_qga::guest_info {}`) and returns its typed
    /// result.
    ///
    /// # Cancel safety
    /// Cancel safe, like [`execute`](Self::execute).
    pub async fn execute_typed<C: Command>(&self, command: C) -> Result<C::Ok, Error> {
        let ret = self.execute_raw(C::NAME, qmp_qapi::arguments(&command)?.as_ref()).await?;
        Ok(qmp_qapi::decode::<C>(&ret)?)
    }
}
