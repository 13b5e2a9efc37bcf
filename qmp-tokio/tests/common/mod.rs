//! Helpers shared by the test files: short-timeout options, and a scripted in-memory QMP peer over
//! `tokio::io::duplex` (the server end: read the client's commands, write whatever the test wants).

#![allow(dead_code)]

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// Options for tests against real servers: generous command timeout, short connect timeout.
pub fn options() -> qmp_tokio::Options {
    qmp_tokio::Options::default()
        .connect_timeout(Duration::from_secs(10))
        .command_timeout(Some(Duration::from_secs(30)))
}

/// A QEMU 10 greeting offering `oob`.
pub const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": "test"}, "capabilities": ["oob"]}}"#;

/// The server end of a duplex pipe, reading the client's commands one JSON value at a time.
pub struct Peer {
    pub io: DuplexStream,
    buf: Vec<u8>,
    /// 0xFF bytes seen between the client's values (guest-agent resynchronisation).
    pub sync_bytes: usize,
}

impl Peer {
    /// A connected pair: the client's end and the server's.
    pub fn pair() -> (DuplexStream, Peer) {
        let (client, server) = tokio::io::duplex(1 << 20);
        (client, Peer { io: server, buf: Vec::new(), sync_bytes: 0 })
    }

    /// Writes raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.expect("peer write");
    }

    /// Writes `text` and CRLF.
    pub async fn send(&mut self, text: &str) {
        self.io.write_all(text.as_bytes()).await.expect("peer write");
        self.io.write_all(b"\r\n").await.expect("peer write");
    }

    /// The next command the client sent; `None` at EOF.
    pub async fn recv(&mut self) -> Option<Value> {
        loop {
            let start = self.buf.iter().position(|b| !b.is_ascii_whitespace() && *b != 0xFF).unwrap_or(self.buf.len());
            self.sync_bytes += self.buf[..start].iter().filter(|b| **b == 0xFF).count();
            self.buf.drain(..start);
            let mut values = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
            match values.next() {
                Some(Ok(v)) => {
                    let end = values.byte_offset();
                    self.buf.drain(..end);
                    return Some(v);
                }
                Some(Err(e)) if !e.is_eof() => panic!("client sent invalid JSON: {e}"),
                _ => {}
            }
            let mut chunk = [0u8; 4096];
            let n = self.io.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Greets and answers `qmp_capabilities`.
    pub async fn handshake(&mut self) {
        self.send(GREETING).await;
        let cmd = self.recv().await.expect("qmp_capabilities");
        assert_eq!(cmd["execute"], "qmp_capabilities");
        self.reply(&cmd, "{}").await;
    }

    /// Replies `{"return": RET, "id": ID}` to `cmd`.
    pub async fn reply(&mut self, cmd: &Value, ret: &str) {
        self.send(&format!(r#"{{"return": {ret}, "id": {}}}"#, cmd["id"])).await;
    }
}
