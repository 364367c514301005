//! `lambda broker`: a Kafka-protocol broker in this process, for working without Docker.
//!
//! It is librdkafka's mock cluster (one broker), which speaks the real Kafka protocol over
//! TCP: our own clients, `kcat` and other librdkafka-based tools can produce to it and
//! consume from it. Everything in it lives in memory and is lost when the process exits,
//! and each partition keeps only its newest 5 MiB (about 40,000 workshop-sized messages):
//! older messages are dropped, as a small retention limit would on a real broker.
//!
//! The mock listens on a random port of 127.0.0.1. To offer a chosen port, and to let tests
//! cut the network and restore it, clients reach the broker through a small TCP forwarder,
//! the [`Gate`], and the broker *advertises* the gate's address in its metadata (otherwise
//! clients would bypass the gate after their first request).
//!
//! ```text
//! client ──► 127.0.0.1:PORT (gate) ──► 127.0.0.1:random (mock broker)
//! ```

use std::ffi::CString;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, Producer};

/// The in-process broker and its gate.
pub struct Broker {
    /// Owns the mock cluster (it was created through this client's configuration).
    producer: BaseProducer,
    gate: Gate,
}

impl Broker {
    /// Starts a broker with `topic` created with `partitions` partitions, reachable at
    /// 127.0.0.1:`port` (0 for any free port).
    pub fn start(port: u16, topic: &str, partitions: i32) -> anyhow::Result<Broker> {
        anyhow::ensure!(partitions >= 1, "a topic needs at least one partition, not {partitions}");
        let producer: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", "1")
            .set("log_level", "3")
            .create()
            .context("cannot create the in-process Kafka broker")?;
        let target: SocketAddr = {
            let mock = producer.client().mock_cluster().context("the mock cluster exists")?;
            mock.create_topic(topic, partitions, 1).with_context(|| format!("cannot create topic {topic}"))?;
            mock.bootstrap_servers()
                .split(',')
                .next()
                .and_then(|a| a.parse().ok())
                .context("the mock broker has a local address")?
        };
        let gate = Gate::open(port, target)?;
        let host = CString::new("127.0.0.1").expect("no NUL in a literal");
        // SAFETY: the mock cluster handle belongs to `producer`, which outlives this call;
        // the host string is valid for the duration of the call (librdkafka copies it).
        unsafe {
            let cluster = rdkafka_sys::rd_kafka_handle_mock_cluster(producer.client().native_ptr());
            anyhow::ensure!(!cluster.is_null(), "the client has no mock cluster");
            rdkafka_sys::rd_kafka_mock_broker_set_host_port(cluster, 1, host.as_ptr(), i32::from(gate.port()));
        }
        Ok(Broker { producer, gate })
    }

    /// The bootstrap address clients use.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.gate.port())
    }

    /// Creates another topic.
    pub fn create_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        anyhow::ensure!(partitions >= 1, "a topic needs at least one partition, not {partitions}");
        let mock = self.producer.client().mock_cluster().context("the mock cluster exists")?;
        mock.create_topic(topic, partitions, 1).with_context(|| format!("cannot create topic {topic}"))
    }

    /// Cuts (`false`) or restores (`true`) the network between clients and the broker.
    pub fn set_reachable(&self, reachable: bool) {
        self.gate.set_open(reachable);
    }
}

/// A TCP forwarder that can be closed (dropping every connection) and opened again.
pub struct Gate {
    port: u16,
    state: Arc<GateState>,
}

#[derive(Default)]
struct GateState {
    open: AtomicBool,
    connections: Mutex<Vec<TcpStream>>,
}

impl Gate {
    /// Listens on 127.0.0.1:`port` (0: any) and forwards every connection to `target`.
    pub fn open(port: u16, target: SocketAddr) -> anyhow::Result<Gate> {
        let listener =
            TcpListener::bind(("127.0.0.1", port)).with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(GateState { open: AtomicBool::new(true), ..Default::default() });
        let accepting = Arc::clone(&state);
        std::thread::Builder::new().name("broker-gate".into()).spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !accepting.open.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
                    let mut connections = accepting.connections.lock().unwrap_or_else(|p| p.into_inner());
                    // Forget connections that have closed since, so the list stays small.
                    connections.retain(|stream| stream.peer_addr().is_ok());
                    connections.extend([c, s]);
                }
                pipe(&client, &server);
                pipe(&server, &client);
            }
        })?;
        Ok(Gate { port, state })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Opens or closes the gate; closing drops every open connection.
    pub fn set_open(&self, open: bool) {
        self.state.open.store(open, Ordering::SeqCst);
        if !open {
            for stream in self.state.connections.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Copies bytes from `from` to `to` on a thread until either side closes.
fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else { return };
    let _ = std::thread::Builder::new().name("broker-pipe".into()).spawn(move || {
        let mut buffer = vec![0u8; 64 << 10];
        loop {
            match from.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => {
                    if to.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.gate.set_open(false);
        let _ = self.producer.flush(Duration::from_millis(100));
    }
}
