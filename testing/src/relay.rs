//! A TCP relay on 127.0.0.1 that can freeze: the middlebox that goes wrong in production (a
//! stuck NAT entry, an L4 proxy that stops forwarding) while its sockets stay open.
//!
//! [`Relay::freeze`] stops forwarding on every connection open at that moment, in both
//! directions, without closing anything; connections opened afterwards are forwarded as usual,
//! as a real stuck middlebox that only lost its existing flows behaves. Plain threads, so it
//! works under any runtime and with none.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// One relayed connection's switch.
struct Flow {
    frozen: AtomicBool,
    sockets: Mutex<Vec<TcpStream>>,
}

/// A relay from a free port on 127.0.0.1 to `127.0.0.1:upstream`. Dropping it closes every
/// relayed connection.
pub struct Relay {
    port: u16,
    flows: Arc<Mutex<Vec<Arc<Flow>>>>,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("port", &self.port)
            .field("connections", &self.connections())
            .finish()
    }
}

impl Relay {
    /// Starts relaying to `127.0.0.1:upstream`.
    ///
    /// # Errors
    /// When no port can be bound.
    pub fn start(upstream: u16) -> io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let flows: Arc<Mutex<Vec<Arc<Flow>>>> = Arc::default();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, a, s) = (flows.clone(), accepted.clone(), stop.clone());
        thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(_) => break,
                };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                a.fetch_add(1, Ordering::SeqCst);
                let _ = client.set_nonblocking(false);
                let flow = Arc::new(Flow {
                    frozen: AtomicBool::new(false),
                    sockets: Mutex::new(Vec::new()),
                });
                if let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) {
                    flow.sockets.lock().unwrap().extend([c2, s2]);
                }
                f.lock().unwrap().push(flow.clone());
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    let flow = flow.clone();
                    thread::spawn(move || pump(from, to, &flow));
                }
            }
        });
        Ok(Relay {
            port,
            flows,
            accepted,
            stop,
        })
    }

    /// The relay's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many connections it has relayed so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Stops forwarding on every connection open now (both directions; nothing is closed).
    /// Connections opened later are forwarded.
    pub fn freeze(&self) {
        for flow in self.flows.lock().unwrap().iter() {
            flow.frozen.store(true, Ordering::SeqCst);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for flow in self.flows.lock().unwrap().iter() {
            for s in flow.sockets.lock().unwrap().iter() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Copies `from` to `to` until either side closes; once frozen, reads nothing more and holds
/// what it already read.
fn pump(mut from: TcpStream, mut to: TcpStream, flow: &Flow) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        while flow.frozen.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(20));
            // A frozen flow stays open until the relay is dropped or a side closes.
            if matches!(from.peek(&mut [0u8; 1]), Ok(0) | Err(_)) {
                return;
            }
        }
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if flow.frozen.load(Ordering::SeqCst) {
            // Frozen while this read was in flight: drop it, as a stuck middlebox would.
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
