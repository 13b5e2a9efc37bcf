//! [`Options`]: connection settings shared by [`Client`](crate::Client) and [`GuestAgent`](crate::GuestAgent).

/// Connection settings: [`qmp_proto::adapter::Options`], the same in every adapter. `Options::default()` suits
/// most uses.
///
/// ```
/// use std::time::Duration;
/// let opts = qmp_blocking::Options::default()
///     .connect_timeout(Duration::from_secs(2))
///     .command_timeout(Some(Duration::from_secs(60)))
///     .oob(false);
/// ```
pub type Options = qmp_proto::adapter::Options<()>;
