//! [`AuditLog`]: one JSON line per client command: who (the client's identity and rule), what (the command, its
//! arguments if asked for), how it ended (`ok`, QEMU's error class, or `denied` by the policy) and how long it
//! took, from the moment the proxy handed it on to QEMU's reply.
//!
//! ```json
//! {"time":1764465297.959,"client":3,"identity":{"listener":"/run/vm-shared.qmp","uid":1000,"gid":1001,"pid":4242},"rule":"metrics","command":"stop","oob":false,"result":"denied","duration_us":0}
//! ```
//!
//! Lines are written (and flushed) as commands end, one whole line per write under a lock: a file opened for
//! appending stays readable while the proxy runs. A failed write is logged once through `tracing` and the
//! proxy goes on.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use qmp_proto::server::Arguments;
use serde::Serialize;
use serde_json::{Map, Value};

use super::policy::Identity;

/// Where the proxy writes its audit records. See the [module docs](self).
pub struct AuditLog {
    out: Mutex<Box<dyn Write + Send>>,
    arguments: bool,
    failed: AtomicBool,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("arguments", &self.arguments).finish()
    }
}

#[derive(Serialize)]
struct IdentityRecord<'a> {
    listener: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
}

#[derive(Serialize)]
struct Record<'a> {
    time: f64,
    client: u64,
    identity: IdentityRecord<'a>,
    rule: &'a str,
    command: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a Map<String, Value>>,
    oob: bool,
    result: &'a str,
    duration_us: u64,
}

/// One finished command, for [`AuditLog::record`].
pub(crate) struct Entry<'a> {
    pub(crate) client: u64,
    pub(crate) identity: &'a Identity,
    pub(crate) rule: &'a str,
    pub(crate) command: &'a str,
    /// Read (as a map, one line) only when the log records arguments.
    pub(crate) arguments: &'a Arguments,
    pub(crate) oob: bool,
    /// `ok`, QEMU's error class, or `denied`.
    pub(crate) result: &'a str,
    pub(crate) duration: Duration,
}

impl AuditLog {
    /// Records to `out` (a file opened for appending, stderr, a pipe), without the commands' arguments.
    pub fn new(out: impl Write + Send + 'static) -> Self {
        AuditLog { out: Mutex::new(Box::new(out)), arguments: false, failed: AtomicBool::new(false) }
    }

    /// Also records each command's arguments (they may hold secrets: passwords of `object-add secret`, ...).
    pub fn with_arguments(mut self, arguments: bool) -> Self {
        self.arguments = arguments;
        self
    }

    pub(crate) fn record(&self, entry: &Entry<'_>) {
        let time = SystemTime::now().duration_since(UNIX_EPOCH).map_or(-1.0, |d| d.as_secs_f64());
        let identity = IdentityRecord {
            listener: &entry.identity.listener,
            uid: entry.identity.uid,
            gid: entry.identity.gid,
            pid: entry.identity.pid,
            subject: entry.identity.subject.as_deref(),
        };
        let record = Record {
            time,
            client: entry.client,
            identity,
            rule: entry.rule,
            command: entry.command,
            arguments: self.arguments.then(|| entry.arguments.map()),
            oob: entry.oob,
            result: entry.result,
            duration_us: u64::try_from(entry.duration.as_micros()).unwrap_or(u64::MAX),
        };
        // Serializing a struct of strings, numbers and JSON values cannot fail.
        let Ok(mut line) = serde_json::to_vec(&record) else { return };
        line.push(b'\n');
        let mut out = self.out.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Err(e) = out.write_all(&line).and_then(|()| out.flush()) {
            if !self.failed.swap(true, Ordering::SeqCst) {
                tracing::error!(%e, "the audit log cannot be written");
            }
        }
    }
}
