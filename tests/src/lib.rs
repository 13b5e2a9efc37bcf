//! Integration tests for the qmp-rs workspace, and the support code they share.
//!
//! The test files in `tests/tests/` drive the workspace's client crates against two kinds of peer:
//!
//! - **Real QEMU processes**, started on a private temporary unix socket and killed when the test ends:
//!   qemu-storage-daemon (10.x, and 7.2 where installed), `qemu-system-x86_64 -M none`, and qemu-ga. See
//!   [`servers`]. A test that needs a binary which is not installed (or a newer QEMU than the one installed)
//!   prints a loud `SKIPPED:` line and returns, unless `QMP_TEST_REQUIRE_ALL=1` is set (CI sets it), in which
//!   case it fails. A binary that is installed but fails to start always fails the test. Tests assert what holds
//!   for the version they find ([`servers::QemuServer::version`]), so the suite passes with QEMU 7.2 alone.
//! - **A scripted fake server** ([`fake_server`]) that plays a fixed list of steps — greet, answer, flood,
//!   go silent, hang up mid-message — and records what the client sent, for behaviour no real QEMU shows on
//!   demand.
//! - **TLS clients** ([`tls`]) with the test certificates of `data/tls/`, for the proxy's TCP listener.
//!
//! This library depends on nothing from the workspace itself, so the support code builds and its own tests run
//! even while the protocol crates change.
//!
//! ```no_run
//! use qmp_tests::{require, servers::QemuServer};
//!
//! # fn test() {
//! let server = require!(QemuServer::storage_daemon());
//! let stream = server.connect().expect("connect");
//! // ... read the greeting, negotiate, run commands ...
//! # drop(stream);
//! # }
//! ```
//!
//! Environment variables read by this crate:
//!
//! | variable | meaning |
//! | --- | --- |
//! | `QMP_TEST_QSD` | qemu-storage-daemon, preferably 10.x (default `/usr/local/bin/qemu-storage-daemon-10`, else `qemu-storage-daemon` on `PATH`; `/usr/bin/qemu-storage-daemon` runs the suite as on a machine with QEMU 7.2 only) |
//! | `QMP_TEST_QSD72` | qemu-storage-daemon 7.x (default `/usr/bin/qemu-storage-daemon` when its `--version` says 7.x) |
//! | `QMP_TEST_QEMU_SYSTEM` | qemu-system binary (default `qemu-system-x86_64`) |
//! | `QMP_TEST_QGA` | qemu-ga binary (default `qemu-ga`) |
//! | `QMP_TEST_REQUIRE_ALL` | `1`: nothing may be skipped: a missing binary, or one older than a test needs (see [`servers::QemuServer::needs_major`]), fails the test |

#![warn(missing_docs)]

pub mod fake_server;
pub mod listening;
pub mod servers;
pub mod tls;

/// The README's examples, compiled as doc tests of this crate so that they cannot rot (they are `no_run`: they
/// need a QEMU listening on the paths they name).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeExamples;
