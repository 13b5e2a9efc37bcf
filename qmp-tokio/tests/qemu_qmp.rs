//! The adapter against real QMP servers started on temporary sockets: qemu-storage-daemon 10 (and 7.2 when
//! installed), qemu-system-x86_64 7.2 `-M none`, with and without `pretty=on`, and QEMU connecting to us.

mod common;

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::options;
use qmp_tests::require;
use qmp_tests::servers::{self, QemuServer, ServerKind};
use qmp_tokio::{ConnectionError, Error, EventItem, Listener, Options, Qmp, UsageError};
use serde_json::{json, Value};

async fn connect(server: &QemuServer) -> Qmp {
    Qmp::connect_unix(server.socket_path(), options()).await.expect("connect")
}

async fn query_version(server: QemuServer) {
    let qmp = connect(&server).await;
    let version: Value = qmp.execute("query-version", ()).await.unwrap();
    assert_eq!(
        version["qemu"]["major"],
        qmp.greeting().version.as_ref().expect("the greeting\'s version").major,
        "{version}"
    );
    assert_eq!(
        version["qemu"]["minor"],
        qmp.greeting().version.as_ref().expect("the greeting\'s version").minor,
        "{version}"
    );
    assert!(qmp.oob_enabled(), "{:?} offers oob", server.kind());
    let err = qmp.execute::<Value>("no-such-command", ()).await.unwrap_err();
    assert!(matches!(&err, Error::Qmp(e) if e.class == "CommandNotFound"), "{err}");
    qmp.close().await;
    assert_eq!(qmp.connection_error(), Some(ConnectionError::Local));
    let after = qmp.execute::<Value>("query-version", ()).await.unwrap_err();
    assert!(matches!(after, Error::Connection(ConnectionError::Local)), "{after}");
    assert!(qmp.take_violations().is_empty());
}

#[tokio::test]
async fn query_version_storage_daemon_10() {
    query_version(require!(QemuServer::storage_daemon())).await;
}

#[tokio::test]
async fn query_version_storage_daemon_10_pretty() {
    query_version(require!(QemuServer::storage_daemon_pretty())).await;
}

#[tokio::test]
async fn query_version_storage_daemon_72() {
    query_version(require!(QemuServer::storage_daemon_72())).await;
}

#[tokio::test]
async fn query_version_system() {
    query_version(require!(QemuServer::system())).await;
}

#[tokio::test]
async fn query_version_system_pretty() {
    query_version(require!(QemuServer::system_pretty())).await;
}

/// 32 tasks, 64 commands each, all at once on one connection. Unknown commands make QEMU echo the name in the
/// error, so each caller can tell its own reply from anyone else's.
async fn many_in_flight(server: QemuServer) {
    let qmp = connect(&server).await;
    let major = qmp.greeting().version.as_ref().expect("the greeting\'s version").major;
    let mut tasks = Vec::new();
    for task in 0..32 {
        let qmp = qmp.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..64 {
                if (task + i) % 3 == 0 {
                    let v: Value = qmp.execute("query-version", ()).await.unwrap();
                    assert_eq!(v["qemu"]["major"], major);
                } else {
                    let name = format!("x-task{task}-cmd{i}");
                    match qmp.execute::<Value>(&name, ()).await {
                        Err(Error::Qmp(e)) => {
                            assert_eq!(e.class, "CommandNotFound");
                            assert!(
                                e.desc.contains(&format!("'{name}'")) || e.desc.contains(&format!(" {name} ")),
                                "{e}"
                            );
                        }
                        other => panic!("{name}: {other:?}"),
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(qmp.take_violations().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_commands_in_flight_from_many_tasks_storage_daemon_10() {
    many_in_flight(require!(QemuServer::storage_daemon())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_commands_in_flight_from_many_tasks_system() {
    many_in_flight(require!(QemuServer::system())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_commands_without_oob() {
    let server = require!(QemuServer::storage_daemon());
    let qmp = Qmp::connect_unix(server.socket_path(), options().oob(false)).await.unwrap();
    assert!(!qmp.oob_enabled());
    let mut tasks = Vec::new();
    for task in 0..8 {
        let qmp = qmp.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..32 {
                let name = format!("x-{task}-{i}");
                let err = qmp.execute::<Value>(&name, ()).await.unwrap_err();
                assert!(matches!(&err, Error::Qmp(e) if e.desc.contains(&name)), "{err}");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// `stop` and `cont` emit STOP and RESUME before their replies; commands from other tasks run in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_interleaved_with_replies() {
    let server = require!(QemuServer::system());
    let qmp = connect(&server).await;
    let mut all = qmp.events();
    let mut stops = qmp.events_named(&["STOP"]);
    let busy = {
        let qmp = qmp.clone();
        tokio::spawn(async move {
            for _ in 0..100 {
                let s: Value = qmp.execute("query-status", ()).await.unwrap();
                assert!(s["status"].is_string());
            }
        })
    };
    for _ in 0..10 {
        qmp.execute::<Value>("stop", ()).await.unwrap();
        // The event came before the reply, so it is already there when `stop` returns.
        let item = tokio::time::timeout(Duration::ZERO, stops.recv()).await.expect("STOP before the reply of stop");
        assert_eq!(item.unwrap().event().unwrap().name, "STOP");
        qmp.execute::<Value>("cont", ()).await.unwrap();
    }
    busy.await.unwrap();
    let mut names = Vec::new();
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_millis(100), all.recv()).await {
        names.push(item.event().expect("no lag").name.clone());
    }
    let expected: Vec<String> = (0..10).flat_map(|_| ["STOP".to_string(), "RESUME".to_string()]).collect();
    assert_eq!(names, expected);
}

/// `query-qmp-schema` is slow and in-band; `query-yank` out of band overtakes it (qemu-system 7.2 with OOB).
#[tokio::test]
async fn oob_overtakes_in_band() {
    let server = require!(QemuServer::system());
    let qmp = connect(&server).await;
    assert!(qmp.oob_enabled());
    let mut overtook = 0;
    for _ in 0..5 {
        let order = Arc::new(Mutex::new(Vec::new()));
        let slow = async {
            let schema: Vec<Value> = qmp.execute("query-qmp-schema", ()).await.unwrap();
            assert!(schema.len() > 100);
            order.lock().unwrap().push("in-band");
        };
        let fast = async {
            let yank: Value = qmp.execute_oob("query-yank", ()).await.unwrap();
            assert!(yank.is_array());
            order.lock().unwrap().push("oob");
        };
        tokio::join!(slow, fast);
        if order.lock().unwrap()[0] == "oob" {
            overtook += 1;
        }
    }
    assert!(overtook >= 4, "query-yank overtook query-qmp-schema in {overtook} of 5 rounds");
    // In-band-only commands are refused out of band by QEMU, with their id: a server error, session fine.
    let err = qmp.execute_oob::<Value>("query-version", ()).await.unwrap_err();
    assert!(matches!(&err, Error::Qmp(e) if e.desc.contains("does not support OOB")), "{err}");
    qmp.execute::<Value>("query-version", ()).await.unwrap();
}

#[tokio::test]
async fn oob_refused_when_not_negotiated() {
    let server = require!(QemuServer::system());
    let qmp = Qmp::connect_unix(server.socket_path(), options().oob(false)).await.unwrap();
    let err = qmp.execute_oob::<Value>("query-yank", ()).await.unwrap_err();
    assert!(matches!(err, Error::Usage(UsageError::OobNotNegotiated)), "{err}");
}

/// QEMU greets a second client only when the first leaves: the connect timeout is what ends the wait.
#[tokio::test]
async fn greeting_timeout_on_a_second_client() {
    let server = require!(QemuServer::storage_daemon());
    let first = connect(&server).await;
    let started = std::time::Instant::now();
    let second = Qmp::connect_unix(server.socket_path(), options().connect_timeout(Duration::from_millis(300))).await;
    assert!(matches!(second, Err(Error::Connection(ConnectionError::GreetingTimeout))), "{second:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    first.execute::<Value>("query-version", ()).await.unwrap();
    first.close().await;
    let third = connect(&server).await;
    third.execute::<Value>("query-version", ()).await.unwrap();
}

#[tokio::test]
async fn quit_ends_with_eof() {
    let mut server = require!(QemuServer::storage_daemon());
    let qmp = connect(&server).await;
    qmp.execute::<Value>("quit", ()).await.unwrap();
    assert_eq!(qmp.closed().await, ConnectionError::Eof);
    let status = server.wait_timeout(Duration::from_secs(10)).unwrap().expect("exited");
    assert!(status.success());
}

fn fd_target(pid: u32, fd: i64) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).expect("QEMU holds the descriptor")
}

/// `getfd` and `closefd`, and `add-fd` from several tasks at once: every fd set gets its own file. (Pipelined
/// by hand with OOB on, QEMU 7.2 hands all of them the last descriptor; the adapter keeps one in flight.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn send_fd_and_add_fd() {
    let server = require!(QemuServer::system());
    let qmp = connect(&server).await;
    assert!(qmp.oob_enabled());
    let dir = tempfile::tempdir().unwrap();

    let file = std::fs::File::create(dir.path().join("named")).unwrap();
    qmp.send_fd("named0", &file).await.unwrap();
    qmp.execute::<Value>("closefd", json!({"fdname": "named0"})).await.unwrap();
    let again = qmp.execute::<Value>("closefd", json!({"fdname": "named0"})).await.unwrap_err();
    assert!(matches!(&again, Error::Qmp(e) if e.desc.contains("not found")), "{again}");

    // Slow in-band commands alongside: QEMU's monitor thread reads ahead while its main loop is busy.
    let mut slow = Vec::new();
    for _ in 0..3 {
        let qmp = qmp.clone();
        slow.push(tokio::spawn(async move { qmp.execute::<Vec<Value>>("query-qmp-schema", ()).await.unwrap().len() }));
    }
    let mut tasks = Vec::new();
    for i in 0..6u64 {
        let qmp = qmp.clone();
        let path = dir.path().join(format!("file{i}"));
        tasks.push(tokio::spawn(async move {
            let file = std::fs::File::create(&path).unwrap();
            let info = qmp.add_fd(&file, Some(100 + i), Some(&format!("file{i}"))).await.unwrap();
            assert_eq!(info.fdset_id, 100 + i);
            (info, path)
        }));
    }
    let pid = server.pid();
    for task in tasks {
        let (info, path) = task.await.unwrap();
        assert_eq!(fd_target(pid, info.fd), path, "fd set {} holds the file its caller passed", info.fdset_id);
    }
    for task in slow {
        assert!(task.await.unwrap() > 100);
    }
    let sets: Vec<Value> = qmp.execute("query-fdsets", ()).await.unwrap();
    assert_eq!(sets.len(), 6, "{sets:?}");
    // The descriptor travels on its own byte: nothing else on the wire was disturbed.
    assert!(qmp.take_violations().is_empty());
    let no_fd = qmp.execute::<Value>("getfd", json!({"fdname": "none"})).await.unwrap_err();
    assert!(matches!(&no_fd, Error::Qmp(e) if e.desc.contains("No file descriptor")), "{no_fd}");
    // The caller's own descriptor stays open: a duplicate was passed.
    assert!(std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).is_ok());
}

/// A QEMU process of our own, for command lines the shared support does not build; killed on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `-chardev socket,server=off`: QEMU connects to our `Listener`.
#[tokio::test]
async fn qemu_connects_to_our_listener() {
    let Some(binary) = servers::locate_or_skip(ServerKind::System) else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("listen.sock");
    let listener = Listener::bind(&path).unwrap();
    assert_eq!(listener.path(), path);
    let chardev = format!("socket,id=m,path={},server=off", path.display().to_string().replace(',', ",,"));
    let _qemu = Child(
        std::process::Command::new(binary)
            .args([
                "-M",
                "none",
                "-display",
                "none",
                "-nodefaults",
                "-chardev",
                &chardev,
                "-mon",
                "chardev=m,mode=control",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let qmp = tokio::time::timeout(Duration::from_secs(20), listener.accept(options())).await.unwrap().unwrap();
    assert_eq!(qmp.greeting().version.as_ref().expect("the greeting\'s version").major, 7);
    let status: Value = qmp.execute("query-status", ()).await.unwrap();
    assert!(status["status"].is_string(), "{status}");
    let file = std::fs::File::open("/dev/null").unwrap();
    qmp.send_fd("null", &file).await.unwrap();
    qmp.execute::<Value>("closefd", json!({"fdname": "null"})).await.unwrap();
    let mut events = qmp.events();
    qmp.execute::<Value>("quit", ()).await.unwrap();
    assert_eq!(qmp.closed().await, ConnectionError::Eof);
    // SHUTDOWN came before the reply to quit.
    let ev = events.recv().await.unwrap();
    assert!(matches!(ev, EventItem::Event(ref e) if e.name == "SHUTDOWN"), "{ev:?}");
}

#[tokio::test]
async fn options_are_applied() {
    let server = require!(QemuServer::storage_daemon());
    let qmp = Qmp::connect_unix(server.socket_path(), Options::default().max_message_size(1024)).await.unwrap();
    // query-qmp-schema is ~117 KB on qemu-storage-daemon 10: skipped unread, and the command ends at once.
    let started = std::time::Instant::now();
    let result = qmp.execute::<Value>("query-qmp-schema", ()).await;
    assert!(matches!(result, Err(Error::Request(qmp_tokio::RequestError::ReplyTooLarge { .. }))), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    qmp.execute::<Value>("query-version", ()).await.unwrap();
}

/// The QEMU behaviour behind the one-descriptor-at-a-time rule, shown without the adapter: with OOB negotiated,
/// three `add-fd`s pipelined by hand, each behind its own descriptor, do not each get their own descriptor
/// (qemu-system 7.2: the first got the last file, the others got none: the monitor thread reads ahead of the
/// main loop that runs the commands, and each descriptor received replaces the one before). The same sequence
/// through the adapter,
/// in `send_fd_and_add_fd`, files every descriptor where its caller asked.
#[test]
fn qemu_keeps_only_the_latest_descriptor_when_commands_are_pipelined() {
    use std::io::{BufRead, BufReader, IoSlice, Write};
    use std::mem::MaybeUninit;
    use std::os::fd::AsFd;

    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

    let server = require!(QemuServer::system());
    let stream = server.connect().unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut read = || {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        serde_json::from_str::<Value>(&line).unwrap()
    };
    read();
    writer.write_all(br#"{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}"#).unwrap();
    assert_eq!(read(), json!({"return": {}}));
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<_> = (0..3).map(|i| std::fs::File::create(dir.path().join(format!("f{i}"))).unwrap()).collect();
    // A slow command first keeps QEMU's main loop busy while its monitor thread reads ahead.
    writer.write_all(br#"{"execute":"query-qmp-schema","id":"slow"}"#).unwrap();
    for (i, file) in files.iter().enumerate() {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        let fds = [file.as_fd()];
        assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
        rustix::net::sendmsg(&writer, &[IoSlice::new(b" ")], &mut control, SendFlags::empty()).unwrap();
        writer
            .write_all(format!(r#"{{"execute":"add-fd","arguments":{{"fdset-id":{}}},"id":{i}}}"#, 200 + i).as_bytes())
            .unwrap();
    }
    assert_eq!(read()["id"], "slow");
    let replies: Vec<Value> = (0..3).map(|_| read()).collect();
    let filed: Vec<(u64, PathBuf)> = replies
        .iter()
        .filter_map(|r| Some((r["return"]["fdset-id"].as_u64()?, fd_target(server.pid(), r["return"]["fd"].as_i64()?))))
        .collect();
    let own = filed.iter().filter(|(set, path)| *path == dir.path().join(format!("f{}", set - 200))).count();
    assert!(own < 3, "every pipelined add-fd got its own descriptor after all: {replies:?} {filed:?}");
}
