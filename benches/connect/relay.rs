//! A TCP relay that adds [`ONE_WAY`] of delay in each direction and counts round trips on the
//! wire, per connection.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One-way delay of the relay: 5 ms each way, 10 ms round trip.
pub(crate) const ONE_WAY: Duration = Duration::from_millis(5);

/// A relay on 127.0.0.1 in front of a local server.
pub(crate) struct Relay {
    pub(crate) port: u16,
    task: tokio::task::JoinHandle<()>,
    /// Round trips of each finished connection, in the order they closed.
    counts: Arc<Mutex<Vec<u32>>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Which way the last chunk went on one relayed connection, and the round trips so far.
#[derive(Default)]
struct Wire {
    client_spoke_last: bool,
    /// The client has closed its side (after `Terminate`): it waits for nothing more, so the
    /// server's goodbye (TLS close_notify) is not a round trip.
    client_closed: bool,
    /// The server's last chunk so far started a round trip.
    last_server_chunk_flipped: bool,
    round_trips: u32,
}

impl Relay {
    pub(crate) async fn start(upstream: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay bind");
        let port = listener.local_addr().expect("addr").port();
        let counts = Arc::new(Mutex::new(Vec::new()));
        let all = counts.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let all = all.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let wire = Mutex::new(Wire::default());
                    tokio::join!(delayed(cr, sw, &wire, true), delayed(sr, cw, &wire, false));
                    let n = wire.lock().unwrap().round_trips;
                    all.lock().unwrap().push(n);
                });
            }
        });
        Relay { port, task, counts }
    }

    /// The round trips counted on each connection that closed since the last call.
    pub(crate) fn take_counts(&self) -> Vec<u32> {
        std::mem::take(&mut *self.counts.lock().unwrap())
    }
}

/// Copies `from` to `to`, each chunk written [`ONE_WAY`] after it was read, in order. A round
/// trip is counted when the server speaks after the client did while the client's side is
/// open: the client sent, then had to wait for the answer (chunks are seen as they arrive at
/// the relay, so the order is exact). TCP's own handshake is not data, so it is not counted;
/// neither is the server's goodbye (its last chunk, then its FIN) to the client's `Terminate`.
/// What is left, for a connection that runs one query and closes, is every round trip after
/// TCP up to the first query's answer.
async fn delayed(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    wire: &Mutex<Wire>,
    from_client: bool,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let mut w = wire.lock().unwrap();
                    if from_client {
                        w.client_closed = true;
                    } else if w.last_server_chunk_flipped {
                        // The server's goodbye (PostgreSQL sends a TLS close_notify, then its
                        // FIN) to a client that waits for it before closing (sqlx does): it
                        // answers `Terminate`, after the first query's answer.
                        w.round_trips -= 1;
                    }
                    break;
                }
                Ok(n) => {
                    {
                        let mut w = wire.lock().unwrap();
                        if !from_client {
                            w.last_server_chunk_flipped = w.client_spoke_last && !w.client_closed;
                            if w.last_server_chunk_flipped {
                                w.round_trips += 1;
                            }
                        }
                        w.client_spoke_last = from_client;
                    }
                    if tx
                        .send((Instant::now() + ONE_WAY, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((at, data)) = rx.recv().await {
            tokio::time::sleep_until(at.into()).await;
            if to.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
