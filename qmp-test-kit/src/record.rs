//! [`RecordingProxy`]: records a real session as a [`Transcript`]. It listens on a socket of its own, and for
//! the one client that connects, connects to the real server and passes bytes both ways, writing down each
//! direction as it goes (what the client wrote as `send` steps, what the server sent as `recv` steps). Any
//! client can be recorded this way, whatever its runtime or language.

use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};

use crate::carrier::{poll_retrying, TempDir};
use crate::transcript::{Step, Transcript};

/// How long the proxy waits for the server's last bytes once the client has hung up.
const DRAIN: Duration = Duration::from_millis(500);

/// A proxy that records one client's session with a real server.
///
/// ```no_run
/// use qmp_test_kit::RecordingProxy;
/// use serde_json::Value;
///
/// let proxy = RecordingProxy::start("/run/qsd.qmp", "qemu-storage-daemon 10.0.2")?;
/// let mut qmp = qmp_blocking::Client::connect_unix(proxy.path(), Default::default())?;
/// let _: Value = qmp.execute("query-status", ())?;
/// drop(qmp);
/// let transcript = proxy.finish()?; // once the client has hung up
/// transcript.save("query-status.json")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct RecordingProxy {
    path: PathBuf,
    _dir: TempDir,
    thread: JoinHandle<io::Result<Transcript>>,
}

impl RecordingProxy {
    /// Listens on a fresh socket (see [`path`](Self::path)) and, when a client connects, connects it to the
    /// server at `upstream`. `server` names the server in the transcript.
    pub fn start(upstream: impl AsRef<Path>, server: &str) -> io::Result<RecordingProxy> {
        let dir = TempDir::new()?;
        let path = dir.0.join("proxy.sock");
        let listener = UnixListener::bind(&path)?;
        let upstream = upstream.as_ref().to_owned();
        let mut transcript = Transcript { server: server.to_owned(), ..Transcript::default() };
        transcript.how = format!("recorded by qmp-test-kit's RecordingProxy from {}", upstream.display());
        let thread = std::thread::Builder::new().name("qmp-recording-proxy".into()).spawn(move || {
            let (client, _) = listener.accept()?;
            let server = UnixStream::connect(&upstream)?;
            relay(client, server, transcript)
        })?;
        Ok(RecordingProxy { path, _dir: dir, thread })
    }

    /// The socket for the client to connect to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits until the client has hung up (and the server's last bytes are in), and returns the transcript.
    pub fn finish(self) -> io::Result<Transcript> {
        self.thread.join().map_err(|_| io::Error::other("the recording proxy's thread panicked"))?
    }
}

/// Passes bytes both ways until the client hangs up, writing them down.
fn relay(mut client: UnixStream, mut server: UnixStream, mut transcript: Transcript) -> io::Result<Transcript> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut client_open = true;
    loop {
        let (client_ready, server_ready) = {
            let mut fds = [PollFd::new(&server, PollFlags::IN), PollFd::new(&client, PollFlags::IN)];
            let watched = if client_open { 2 } else { 1 };
            // Once the client has gone, the server gets a moment to send what it still had.
            let drain = Timespec::try_from(DRAIN).unwrap_or(Timespec { tv_sec: 1, tv_nsec: 0 });
            let timeout = if client_open { None } else { Some(&drain) };
            if poll_retrying(&mut fds[..watched], timeout)? == 0 {
                break;
            }
            (watched == 2 && !fds[1].revents().is_empty(), !fds[0].revents().is_empty())
        };
        if server_ready {
            match server.read(&mut buf) {
                Ok(0) | Err(_) => {
                    if client_open {
                        transcript.notes.push_str("The server closed the connection after the last step.");
                    }
                    break;
                }
                Ok(n) => {
                    transcript.push(Step::Recv(buf[..n].to_vec()));
                    // The client may have gone already: what it missed is still the server's.
                    let _ = client.write_all(&buf[..n]);
                }
            }
        }
        if client_ready {
            match client.read(&mut buf) {
                Ok(0) | Err(_) => {
                    client_open = false;
                    let _ = server.shutdown(std::net::Shutdown::Write);
                }
                Ok(n) => {
                    transcript.push(Step::Send(buf[..n].to_vec()));
                    server.write_all(&buf[..n])?;
                }
            }
        }
    }
    Ok(transcript)
}
