//! [`Session`]: what [`Qmp`](crate::Qmp) and [`GuestAgent`](crate::GuestAgent) have in common on the way in. A
//! connection over any transport starts the same for both (the driver, then the wait for the core's `Ready`);
//! they differ only in the core's settings and in what a finished handshake must show. Their constructors, and
//! the connect helpers of [`connect`](crate::connect), are written once here.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use qmp_proto::adapter::Options;
use qmp_proto::Config;

use crate::connecting::Connecting;
use crate::driver::Driver;
use crate::handle::{self, Handle};
use crate::runtime::{Net, Runtime};
use crate::shared::Shared;
use crate::transport::Transport;
use crate::Error;

/// A kind of session: QMP or the guest agent.
pub(crate) trait Session<R: Runtime>: Sized + Send + 'static {
    /// The core's settings for a new session.
    fn config(options: &Options) -> Config;

    /// Whether the handshake ended well (called once the core is ready or closed).
    fn established(shared: &Shared) -> bool;

    /// The handle, once established.
    fn from_handle(handle: Arc<Handle<R>>) -> Self;
}

/// The session over `transport`, not spawned: the handshake to await, and the driver to spawn.
pub(crate) fn with_driver<S: Session<R>, R: Runtime, T: Transport>(
    transport: T,
    options: Options,
    runtime: R,
) -> (Connecting<S>, Driver) {
    let config = S::config(&options);
    let (handle, driver) = handle::start(transport, options, config, runtime);
    let connecting = Connecting::new(async move {
        handle.shared.wait_until(|s| s.is_ready() || s.closed().is_some()).await;
        if S::established(&handle.shared) {
            Ok(S::from_handle(Arc::new(handle)))
        } else {
            Err(handle.shared.gone())
        }
    });
    (connecting, driver)
}

/// The session over `transport`, its driver spawned on `runtime`, once the handshake is done.
pub(crate) async fn spawn<S: Session<R>, R: Runtime, T: Transport>(
    transport: T,
    options: Options,
    runtime: R,
) -> Result<S, Error> {
    let (connecting, driver) = with_driver(transport, options, runtime.clone());
    runtime.spawn(driver);
    connecting.await
}

/// The session over a connected std unix stream, registered with the runtime.
pub(crate) async fn over_unix_stream<S: Session<R>, R: Net>(
    stream: std::os::unix::net::UnixStream,
    options: Options,
) -> Result<S, Error> {
    let runtime = R::default();
    let stream = runtime.unix_from_std(stream).map_err(Error::Connect)?;
    spawn(stream, options, runtime).await
}

/// The session over two pipes (`read` carries the server's output).
pub(crate) async fn over_pipes<S: Session<R>, R: Net>(
    read: OwnedFd,
    write: OwnedFd,
    options: Options,
) -> Result<S, Error> {
    let runtime = R::default();
    let pipes = runtime.pipes(read, write).map_err(Error::Connect)?;
    spawn(pipes, options, runtime).await
}
