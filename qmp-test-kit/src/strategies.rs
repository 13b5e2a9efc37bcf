//! proptest strategies of QMP messages, valid and malformed (feature `proptest`).
//!
//! Each strategy draws bytes and runs the matching [`generate`] function on them: proptest shrinks the bytes,
//! so a failing case shrinks towards fewer, simpler messages. In a test file, `proptest! { #[test] fn
//! my_reader_never_panics(bytes in strategies::server_stream(2048)) { ... } }`; or with a runner:
//!
//! ```
//! use proptest::test_runner::TestRunner;
//! use qmp_test_kit::strategies;
//!
//! let mut runner = TestRunner::default();
//! runner
//!     .run(&strategies::chunked(strategies::server_stream(2048)), |(bytes, cuts)| {
//!         // Feed your reader `bytes` whole and cut at `cuts`: it must read the same messages.
//!         let pieces = qmp_test_kit::generate::chunks(&bytes, &cuts);
//!         assert_eq!(pieces.concat(), bytes);
//!         Ok(())
//!     })
//!     .unwrap();
//! ```

use arbitrary::Unstructured;
use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::Value;

use crate::generate;

/// Bytes of choices: enough for a few messages.
const SEED: usize = 1024;

fn from_seed<T: std::fmt::Debug>(
    seed_len: usize,
    generator: impl Fn(&mut Unstructured) -> arbitrary::Result<T> + Clone,
    fallback: impl Fn() -> T + Clone,
) -> impl Strategy<Value = T> {
    vec(any::<u8>(), 0..seed_len)
        .prop_map(move |seed| generator(&mut Unstructured::new(&seed)).unwrap_or_else(|_| fallback()))
}

/// A valid command ([`generate::command`]).
pub fn command() -> impl Strategy<Value = Value> {
    from_seed(256, generate::command, || serde_json::json!({"execute": "query-status"}))
}

/// A valid reply ([`generate::reply`]).
pub fn reply() -> impl Strategy<Value = Value> {
    from_seed(256, generate::reply, || serde_json::json!({"return": {}}))
}

/// A valid event ([`generate::event`]).
pub fn event() -> impl Strategy<Value = Value> {
    from_seed(
        256,
        generate::event,
        || serde_json::json!({"event": "STOP", "timestamp": {"seconds": 0, "microseconds": 0}}),
    )
}

/// A valid greeting ([`generate::greeting`]).
pub fn greeting() -> impl Strategy<Value = Value> {
    from_seed(64, generate::greeting, || serde_json::json!({"QMP": {"version": {}, "capabilities": []}}))
}

/// Any JSON value nested at most `depth` levels ([`generate::value`]).
pub fn value(depth: u32) -> impl Strategy<Value = Value> {
    from_seed(256, move |u| generate::value(u, depth), || Value::Null)
}

/// A malformed message around `max_size` bytes at most ([`generate::malformed`]).
pub fn malformed(max_size: usize) -> impl Strategy<Value = Vec<u8>> {
    from_seed(256, move |u| generate::malformed(u, max_size), || b"garbage".to_vec())
}

/// What a server might send, up to about `max_size` bytes ([`generate::server_stream`]).
pub fn server_stream(max_size: usize) -> impl Strategy<Value = Vec<u8>> {
    from_seed(SEED, move |u| generate::server_stream(u, max_size), Vec::new)
}

/// What a client might send, up to about `max_size` bytes ([`generate::client_stream`]).
pub fn client_stream(max_size: usize) -> impl Strategy<Value = Vec<u8>> {
    from_seed(SEED, move |u| generate::client_stream(u, max_size), Vec::new)
}

/// A stream and the points at which to cut it into chunks (see [`generate::chunks`]).
pub fn chunked(stream: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
    stream.prop_flat_map(|bytes| {
        let len = bytes.len();
        (
            Just(bytes),
            vec(any::<u8>(), 0..128)
                .prop_map(move |seed| generate::split_points(&mut Unstructured::new(&seed), len).unwrap_or_default()),
        )
    })
}
