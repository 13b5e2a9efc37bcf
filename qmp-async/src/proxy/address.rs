//! [`Upstream`]: where QEMU's monitor listens, a unix socket or a TCP address, as the proxy connects (and
//! reconnects) to it, and how the `qmp` command line writes it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use qmp_proto::adapter::Options;

use crate::runtime::Net;
use crate::{Error, Qmp};

/// Where QEMU's QMP monitor listens.
///
/// Parsed from text the way the `qmp` command line takes it: `unix:PATH` and `tcp:HOST:PORT` (QEMU's own
/// spelling, as in `-qmp tcp:127.0.0.1:4444,server=on`), or without a prefix, `HOST:PORT` (a port number after
/// the last colon, no `/`) for TCP and anything else for a unix socket path.
///
/// ```
/// use qmp_async::proxy::Upstream;
///
/// assert_eq!("/run/vm0/qmp.sock".parse(), Ok(Upstream::Unix("/run/vm0/qmp.sock".into())));
/// assert_eq!("127.0.0.1:4444".parse(), Ok(Upstream::Tcp("127.0.0.1:4444".into())));
/// assert_eq!("[::1]:4444".parse(), Ok(Upstream::Tcp("[::1]:4444".into())));
/// assert_eq!("unix:qmp:4444".parse(), Ok(Upstream::Unix("qmp:4444".into())));
/// assert_eq!("tcp:vmhost:4444".parse::<Upstream>().map(|u| u.to_string()), Ok("tcp:vmhost:4444".to_string()));
/// assert!("tcp:vmhost".parse::<Upstream>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Upstream {
    /// A unix socket (`-qmp unix:PATH,server=on,wait=off`): file descriptors can be passed over it.
    Unix(PathBuf),
    /// A TCP address, `HOST:PORT` (`-qmp tcp:HOST:PORT,server=on,wait=off`), resolved at each connection.
    Tcp(String),
}

impl Upstream {
    /// Connects to the monitor and negotiates (with OOB when QEMU offers it and `options` ask for it).
    ///
    /// # Cancel safety
    /// Cancel safe: dropped before it returns, the half-made connection is closed.
    pub async fn connect<R: Net>(&self, options: Options) -> Result<Qmp<R>, Error> {
        match self {
            Upstream::Unix(path) => Qmp::connect_unix(path, options).await,
            Upstream::Tcp(addr) => Qmp::connect_tcp(addr.clone(), options).await,
        }
    }
}

/// Why a text is not an [`Upstream`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UpstreamParseError(String);

impl FromStr for Upstream {
    type Err = UpstreamParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(UpstreamParseError("unix: needs a socket path".into()));
            }
            return Ok(Upstream::Unix(path.into()));
        }
        if let Some(addr) = text.strip_prefix("tcp:") {
            return if is_host_port(addr) {
                Ok(Upstream::Tcp(addr.into()))
            } else {
                Err(UpstreamParseError(format!("tcp:{addr}: expected tcp:HOST:PORT")))
            };
        }
        if text.is_empty() {
            return Err(UpstreamParseError("an empty upstream address".into()));
        }
        if is_host_port(text) && !text.contains('/') {
            Ok(Upstream::Tcp(text.into()))
        } else {
            Ok(Upstream::Unix(text.into()))
        }
    }
}

/// `HOST:PORT`: a host before the last colon, a port number after it.
fn is_host_port(text: &str) -> bool {
    match text.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Upstream::Unix(path) => write!(f, "unix:{}", path.display()),
            Upstream::Tcp(addr) => write!(f, "tcp:{addr}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_addresses_are_told_apart() {
        let unix = |p: &str| Ok(Upstream::Unix(p.into()));
        let tcp = |a: &str| Ok(Upstream::Tcp(a.into()));
        assert_eq!("qmp.sock".parse(), unix("qmp.sock"));
        assert_eq!("./host:4444".parse(), unix("./host:4444"), "a path with a slash is a path");
        assert_eq!("dir/host:4444".parse(), unix("dir/host:4444"));
        assert_eq!("host:port".parse(), unix("host:port"), "no port number: a path");
        assert_eq!(":4444".parse(), unix(":4444"), "no host: a path");
        assert_eq!("localhost:4444".parse(), tcp("localhost:4444"));
        assert_eq!("tcp:[::1]:4444".parse(), tcp("[::1]:4444"));
        assert_eq!("unix:/a/b".parse(), unix("/a/b"));
        for bad in ["", "unix:", "tcp:", "tcp:host", "tcp:host:99999"] {
            assert!(bad.parse::<Upstream>().is_err(), "{bad:?}");
        }
        for text in ["unix:/a/b", "tcp:h:1"] {
            assert_eq!(text.parse::<Upstream>().expect("valid").to_string(), text, "Display reads back");
        }
    }
}
