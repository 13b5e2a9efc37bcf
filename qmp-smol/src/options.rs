//! [`Options`]: connection settings shared by [`Qmp`](crate::Qmp) and [`GuestAgent`](crate::GuestAgent), the
//! same as every adapter's plus the [`Runtime`] to run on.

use std::sync::Arc;

use qmp_proto::adapter::RuntimeSetting;

use crate::runtime::Runtime;

/// Connection settings: [`qmp_proto::adapter::Options`], the same in every adapter, plus the runtime
/// ([`Options::runtime`](qmp_proto::adapter::Options::runtime)). `Options::default()` suits most uses.
///
/// ```
/// use std::time::Duration;
/// let opts = qmp_smol::Options::default()
///     .connect_timeout(Duration::from_secs(2))
///     .command_timeout(Some(Duration::from_secs(60)))
///     .event_buffer(256)
///     .oob(false);
/// ```
pub type Options = qmp_proto::adapter::Options<RuntimeChoice>;

/// The setting only this adapter has: the [`Runtime`] to run on, set with
/// [`Options::runtime`](qmp_proto::adapter::Options::runtime) (any `impl Runtime`).
#[derive(Debug, Clone, Default)]
pub struct RuntimeChoice {
    runtime: Option<Arc<dyn Runtime>>,
}

impl<R: Runtime> RuntimeSetting<R> for RuntimeChoice {
    fn set_runtime(&mut self, runtime: R) {
        self.runtime = Some(Arc::new(runtime));
    }
}

impl RuntimeChoice {
    /// The runtime set with [`Options::runtime`](qmp_proto::adapter::Options::runtime), if any.
    pub fn get(&self) -> Option<&Arc<dyn Runtime>> {
        self.runtime.as_ref()
    }

    /// The configured runtime, else the built-in one.
    #[cfg(any(feature = "smol", feature = "async-std"))]
    pub(crate) fn or_default(&self) -> Arc<dyn Runtime> {
        self.runtime.clone().unwrap_or_else(crate::runtime::builtin)
    }
}
