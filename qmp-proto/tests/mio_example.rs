//! Runs the mio example's loop (`examples/mio_many.rs`) against real qemu-storage-daemon monitors: several
//! connections from one thread, sequential and pipelined, each closed gracefully after its last reply.

#[allow(dead_code)] // its `main`
#[path = "../examples/mio_many.rs"]
mod mio_many;

use qmp_tests::servers::{available, QemuServer};

#[test]
fn one_thread_drives_many_storage_daemons() {
    let servers: Vec<QemuServer> = match (0..3).map(|_| available(QemuServer::storage_daemon())).collect() {
        Some(servers) => servers,
        None => return, // skipped (reported by `available`), unless QMP_TEST_REQUIRE_ALL makes it fail
    };
    let paths: Vec<_> = servers.iter().map(|s| s.socket_path().to_owned()).collect();
    for in_flight in [1, 8] {
        let report = mio_many::run(&paths, 200, in_flight).expect("every connection closed gracefully");
        assert_eq!(report.replies, [200, 200, 200], "in flight {in_flight}");
        for (majors, server) in report.majors.iter().zip(&servers) {
            let major = server.version().major;
            assert!(majors.iter().all(|m| *m == major), "every reply is its own server's version, {major}: {majors:?}");
        }
    }
    // The daemons are still fine: a graceful close is a clean disconnect.
    let report = mio_many::run(&paths, 1, 1).expect("reconnect");
    assert_eq!(report.replies, [1, 1, 1]);
}
