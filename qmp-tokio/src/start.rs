//! Starting a connection: wires a new [`Driver`] to a [`Handle`], spawns it on the current tokio runtime, and waits
//! for the handshake (QMP greeting and negotiation; nothing in guest-agent mode).

use std::sync::{Arc, Mutex};

use qmp_proto::{ConnectionError, Mode};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::debug;

use crate::driver::{Driver, Ready, Wiring};
use crate::handle::{Handle, Shared};
use crate::options::Options;
use crate::transport::Transport;
use crate::Error;

/// Requests that may wait for the driver to take them; beyond this, callers wait for room.
const REQUEST_QUEUE: usize = 256;

/// Spawns the driver over `io` and waits until the session is ready.
///
/// Cancel-safe: dropping the future drops the handle, and the driver then closes the connection.
pub(crate) async fn start<T: Transport>(
    io: T,
    mode: Mode,
    options: Options,
    fd_passing: bool,
) -> Result<(Handle, Ready), Error> {
    let (requests_tx, requests) = mpsc::channel(REQUEST_QUEUE);
    let (control_tx, control) = mpsc::unbounded_channel();
    let (ready_tx, ready) = oneshot::channel();
    let (events, _) = broadcast::channel(options.get_event_buffer());
    let (state_tx, state) = watch::channel(None);
    let shared = Arc::new(Shared { events: Mutex::new(Some(events.clone())), violations: Mutex::default() });
    let core = qmp_proto::Client::new(options.to_config(mode), tokio::time::Instant::now().into_std());
    let wiring = Wiring { requests, control, ready: ready_tx, events, shared: Arc::clone(&shared), state: state_tx };
    debug!(mode = ?core.config().mode(), fd_passing, "starting connection driver");
    tokio::spawn(Driver::new(io, core, wiring));
    let handle = Handle::new(requests_tx, control_tx, state, shared, options, fd_passing);
    match ready.await {
        Ok(Ok(ready)) => Ok((handle, ready)),
        Ok(Err(cause)) => Err(Error::Connection(cause)),
        Err(_) => Err(Error::Connection(
            handle.connection_error().unwrap_or(ConnectionError::Transport("the driver task stopped".into())),
        )),
    }
}

/// Connects to a unix socket within the connect timeout, waiting for room while the listen backlog is full.
///
/// Right after a client leaves, QEMU's and qemu-ga's listen queue can be full for a moment; a non-blocking
/// connect then fails with EAGAIN (`WouldBlock`) and nothing was queued. A blocking connect would wait for
/// room, and so does this: it tries again, backing off from 1 ms to 50 ms, until the deadline.
pub(crate) async fn connect_unix(path: &std::path::Path, options: &Options) -> Result<tokio::net::UnixStream, Error> {
    let attempts = async {
        let mut pause = std::time::Duration::from_millis(1);
        loop {
            match tokio::net::UnixStream::connect(path).await {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    debug!(?pause, "the listen backlog is full; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_millis(50));
                }
                other => return other.map_err(Error::Connect),
            }
        }
    };
    tokio::time::timeout(options.get_connect_timeout(), attempts)
        .await
        .map_err(|_| Error::Connect(std::io::ErrorKind::TimedOut.into()))?
}
