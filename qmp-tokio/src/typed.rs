//! Typed commands (feature `qapi`): any [`qapi_spec::Command`](qmp_qapi::Command) of the `qapi-qmp` / `qapi-qga`
//! crates in, its typed result out. The conversions live in the adapter-neutral [`qmp_qapi`] crate; this file only
//! routes them through the connection.

use qmp_qapi::Command;

use crate::guest_agent::GuestAgent;
use crate::qmp::Qmp;
use crate::Error;

impl Qmp {
    /// Runs a typed command from `qapi-qmp` and returns its typed result (`C::Ok`; `Empty` for commands that
    /// return nothing).
    ///
    /// ```no_run
    /// # async fn example(qmp: qmp_tokio::Qmp) -> Result<(), qmp_tokio::Error> {
    /// use qmp_tokio::qapi::qapi_qmp::{query_status, query_version};
    /// let version = qmp.execute_typed(query_version {}).await?;
    /// let status = qmp.execute_typed(query_status {}).await?;
    /// println!("QEMU {}.{}: running {}", version.qemu.major, version.qemu.minor, status.running);
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel-safe, like [`execute`](Self::execute).
    pub async fn execute_typed<C: Command>(&self, command: C) -> Result<C::Ok, Error> {
        let raw = self.execute_raw_value(qmp_qapi::name(&command), &command, false).await?;
        Ok(qmp_qapi::decode::<C>(&raw)?)
    }

    /// Runs a typed command out of band (`C::ALLOW_OOB` must hold, and OOB must be negotiated).
    ///
    /// # Cancel safety
    /// Cancel-safe, like [`execute`](Self::execute).
    pub async fn execute_typed_oob<C: Command>(&self, command: C) -> Result<C::Ok, Error> {
        let raw = self.execute_raw_value(qmp_qapi::name(&command), &command, true).await?;
        Ok(qmp_qapi::decode::<C>(&raw)?)
    }

    async fn execute_raw_value<A: serde::Serialize>(
        &self,
        name: &str,
        args: &A,
        oob: bool,
    ) -> Result<qmp_proto::RawJson, Error> {
        let handle = self.handle_for_typed();
        let mut opts = handle.opts(handle.options.get_command_timeout());
        if oob {
            opts = opts.oob();
        }
        handle.call(qmp_proto::adapter::Command::new(name, args, opts)?).await
    }
}

impl GuestAgent {
    /// Runs a typed command from `qapi-qga` and returns its typed result.
    ///
    /// ```no_run
    /// # async fn example(ga: qmp_tokio::GuestAgent) -> Result<(), qmp_tokio::Error> {
    /// let info = ga.execute_typed(qmp_tokio::qapi::qapi_qga::guest_info {}).await?;
    /// println!("qemu-ga {}", info.version);
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel-safe, like [`execute`](Self::execute).
    pub async fn execute_typed<C: Command>(&self, command: C) -> Result<C::Ok, Error> {
        let handle = self.handle_for_typed();
        let opts = handle.opts(handle.options.get_command_timeout());
        let raw = handle.call(qmp_proto::adapter::Command::new(qmp_qapi::name(&command), &command, opts)?).await?;
        Ok(qmp_qapi::decode::<C>(&raw)?)
    }
}
