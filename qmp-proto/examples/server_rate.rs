//! Measures how fast `Server` reads commands: 100,000 `{"execute":"query-status","id":N}` fed whole, then one
//! byte at a time, each answered at once. Prints commands per second and MB/s.
use std::time::Instant;

use qmp_proto::server::{Event, Server, ServerConfig};

fn main() {
    let mut input = Vec::new();
    for i in 0..100_000u32 {
        input.extend_from_slice(format!(r#"{{"execute":"query-status","id":{i}}}"#).as_bytes());
    }
    for (label, piece) in [("whole", input.len()), ("1 byte", 1), ("4 KiB", 4096)] {
        let mut server = Server::new(ServerConfig::qmp());
        server.handle_input(br#"{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}"#);
        let mut out = Vec::new();
        let start = Instant::now();
        let mut answered = 0;
        for chunk in input.chunks(piece) {
            server.handle_input(chunk);
            while let Some(ev) = server.poll_event() {
                if let Event::Command(c) = ev {
                    server.reply(c.token, Ok(serde_json::json!({"status": "running", "running": true}))).unwrap();
                    answered += 1;
                }
            }
            out.clear();
            server.poll_transmit(&mut out);
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{label}: {answered} commands in {secs:.3} s: {:.0} commands/s, {:.1} MB/s of input",
            f64::from(answered) / secs,
            input.len() as f64 / secs / 1e6
        );
    }
}
