//! The proxy's routing table (`qmp_async::proxy::Router`) between clients served by our `Server`, driven by
//! arbitrary operations: clients connect and leave, send arbitrary bytes (commands with ids of any type,
//! garbage, OOB), the router releases commands, QEMU answers them in any order. Invariants after every step:
//! - no panic; in-band commands on QEMU's wire never exceed the window;
//! - a reply goes to the client and token its command came from, never to another client, and that client's
//!   server knows the token (it is waiting for exactly this reply); a reply for a client that left is swallowed;
//! - every ticket completes once; the router's counts agree with the model.
#![no_main]

use std::collections::HashMap;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use qmp_async::proxy::{ClientId, Router, Ticket};
use qmp_proto::server::{Event, Server, ServerConfig, Token};

#[derive(Arbitrary, Debug)]
enum Op {
    Connect,
    Leave(u8),
    /// The next `len` bytes as input from client `client`.
    Input {
        client: u8,
        len: u8,
    },
    Release,
    /// QEMU answers the `n`-th command on the wire.
    Answer(u8),
}

struct Client {
    id: ClientId,
    server: Server,
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let window = u.int_in_range(1..=8).unwrap_or(8);
    let mut router: Router<Token, (ClientId, Token)> = Router::new(window);
    let mut clients: Vec<Client> = Vec::new();
    let mut wire: Vec<(Ticket, ClientId, Token)> = Vec::new();
    let mut gone: Vec<ClientId> = Vec::new();
    let mut waiting: HashMap<ClientId, usize> = HashMap::new();
    // `arbitrary` gives default values once the input is used up: stop there.
    while !u.is_empty() {
        let Ok(op) = Op::arbitrary(&mut u) else { break };
        match op {
            Op::Connect if clients.len() < 8 => {
                let id = router.add_client();
                let server = Server::new(ServerConfig::qmp().capabilities(["oob"]).reject_unlisted(false));
                clients.push(Client { id, server });
            }
            Op::Connect => {}
            Op::Leave(n) if !clients.is_empty() => {
                let client = clients.remove(usize::from(n) % clients.len());
                let dropped = router.remove_client(client.id);
                assert_eq!(dropped.len(), waiting.remove(&client.id).unwrap_or(0));
                assert!(dropped.iter().all(|(c, _)| *c == client.id));
                gone.push(client.id);
            }
            Op::Leave(_) => {}
            Op::Input { client, len } => {
                let bytes = u.bytes(usize::from(len)).unwrap_or_default();
                if clients.is_empty() {
                    continue;
                }
                let n = usize::from(client) % clients.len();
                let c = &mut clients[n];
                c.server.handle_input(bytes);
                while let Some(event) = c.server.poll_event() {
                    if let Event::Command(cmd) = event {
                        assert!(router.submit(c.id, cmd.token, cmd.oob, (c.id, cmd.token)));
                        *waiting.entry(c.id).or_default() += 1;
                    }
                }
                let mut sink = Vec::new();
                c.server.poll_transmit(&mut sink);
            }
            Op::Release => {
                while let Some(d) = router.poll_dispatch() {
                    assert_eq!(d.client, d.payload.0, "released for the client that submitted it");
                    *waiting.get_mut(&d.client).expect("a registered client's command") -= 1;
                    wire.push((d.ticket, d.client, d.payload.1));
                }
                assert!(router.in_band_on_the_wire() <= window);
            }
            Op::Answer(n) if !wire.is_empty() => {
                let (ticket, client, token) = wire.remove(usize::from(n) % wire.len());
                match router.complete(ticket) {
                    Some((to, t)) => {
                        assert_eq!((to, t), (client, token), "the reply goes to its sender");
                        let c = clients.iter_mut().find(|c| c.id == to).expect("a reply only to a connected client");
                        c.server.reply(t, Ok(serde_json::json!({}))).expect("its server waits for this reply");
                        while let Some(event) = c.server.poll_event() {
                            if let Event::Command(cmd) = event {
                                assert!(router.submit(c.id, cmd.token, cmd.oob, (c.id, cmd.token)));
                                *waiting.entry(c.id).or_default() += 1;
                            }
                        }
                    }
                    None => assert!(gone.contains(&client), "only a gone client's reply is swallowed"),
                }
                assert_eq!(router.complete(ticket), None, "a ticket completes once");
            }
            Op::Answer(_) => {}
        }
        assert_eq!(router.on_the_wire(), wire.len());
        assert_eq!(router.waiting(), waiting.values().sum::<usize>());
        assert_eq!(router.clients(), clients.len());
    }
});
