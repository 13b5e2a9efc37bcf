//! [`Transport`]: what the blocking client needs from a stream: `Read + Write` and a read timeout.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// A byte stream with a settable read timeout. Implemented for [`UnixStream`] and [`TcpStream`]; implement it
/// for your own stream (a TLS session, a serial port, a vsock) to use [`Client::from_stream`](crate::Client::from_stream).
pub trait Transport: Read + Write {
    /// Sets how long a `read` may block (`None`: forever). Like [`UnixStream::set_read_timeout`], a timed-out read
    /// returns `WouldBlock` or `TimedOut`.
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()>;
}

impl Transport for UnixStream {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        UnixStream::set_read_timeout(self, timeout)
    }
}

impl Transport for TcpStream {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        (**self).set_read_timeout(timeout)
    }
}
