//! Starting timely's workers, and connecting the processes of a cluster without waiting.
//!
//! Timely connects the processes of a cluster itself, but sleeps a whole second after a
//! refused connection (the other process was not listening yet) and between two looks at its
//! listener: two processes started together met after 1–2 s, which was most of the cost of a
//! two-process `lambda batch` on the workshop's data (BENCHMARKS.md, scale-out). Here the
//! same handshake — process `i` connects to every process below it and sends its index as a
//! big-endian `u64`; it accepts one connection from every process above it — retries and
//! polls every few milliseconds, and the sockets are handed to timely as they are.
//!
//! ```text
//! process 0: listen ◄──────── connect, send 1 ── process 1
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
use timely::communication::allocator::{AllocatorBuilder, ProcessBuilder};
use timely::communication::{Hooks, WorkerGuards};
use timely::worker::Worker;
use timely::CommunicationConfig;

/// How long to wait between two attempts to connect, or two looks at the listener.
const RETRY: Duration = Duration::from_millis(5);
/// How often a process still waiting for the others says so.
const SAY_EVERY: Duration = Duration::from_secs(5);
/// How long an accepted connection has to say which process it is: something else on the
/// port (a scanner, a stray client) must not hang the start.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(5);

/// Runs `func` on every worker of `config`, like `timely::execute`, with the processes of a
/// cluster connected by [`connect`].
pub fn execute<T, F>(config: timely::Config, func: F) -> Result<WorkerGuards<T>, String>
where
    T: Send + 'static,
    F: Fn(&mut Worker) -> T + Send + Sync + 'static,
{
    match config.communication {
        CommunicationConfig::Cluster { threads, process, addresses, zerocopy: false, .. } => {
            let sockets = connect(&addresses, process)
                .map_err(|e| format!("cannot connect process {process} to the cluster {addresses:?}: {e}"))?;
            let hooks = Hooks::default();
            let allocators = ProcessBuilder::new_typed_vector(threads, hooks.refill.clone(), hooks.spill.clone());
            let (builders, guard) = initialize_networking_from_sockets(allocators, sockets, process, threads, hooks)
                .map_err(|e| format!("failed to initialize networking: {e}"))?;
            let builders = builders.into_iter().map(AllocatorBuilder::Tcp).collect();
            timely::execute::execute_from(builders, Box::new(guard), config.worker, func)
        }
        _ => timely::execute(config, func),
    }
}

/// Connects process `me` to every other process of `addresses`: the socket to process `i` at
/// position `i`, `None` at `me` — what timely expects.
pub fn connect(addresses: &[String], me: usize) -> std::io::Result<Vec<Option<TcpStream>>> {
    let listener = TcpListener::bind(&addresses[me])?;
    listener.set_nonblocking(true)?;
    let mut sockets: Vec<Option<TcpStream>> = (0..addresses.len()).map(|_| None).collect();
    let started = Instant::now();
    let mut said = Instant::now();
    // Every process below `me` first; they accept while they connect to theirs, so no
    // process waits on another that waits on it.
    for (index, address) in addresses.iter().enumerate().take(me) {
        let mut stream = loop {
            match TcpStream::connect(address) {
                Ok(stream) => break stream,
                Err(error) => {
                    if said.elapsed() >= SAY_EVERY {
                        tracing::info!(process = index, %address, %error, "waiting for a process of the cluster");
                        said = Instant::now();
                    }
                    std::thread::sleep(RETRY);
                }
            }
        };
        stream.set_nodelay(true)?;
        stream.write_all(&(me as u64).to_be_bytes())?;
        sockets[index] = Some(stream);
    }
    let mut awaited = addresses.len() - me - 1;
    while awaited > 0 {
        match listener.accept() {
            Ok((mut stream, _)) => {
                stream.set_nonblocking(false)?;
                stream.set_nodelay(true)?;
                let mut index = [0u8; 8];
                stream.set_read_timeout(Some(HANDSHAKE_WAIT))?;
                stream.read_exact(&mut index).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("a connection did not say which process it is: {e}"))
                })?;
                stream.set_read_timeout(None)?;
                let index = u64::from_be_bytes(index) as usize;
                match sockets.get_mut(index) {
                    Some(slot @ None) if index > me => {
                        *slot = Some(stream);
                        awaited -= 1;
                    }
                    _ => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("a connection says it is process {index}, which process {me} does not await"),
                        ))
                    }
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                if said.elapsed() >= SAY_EVERY {
                    tracing::info!(awaited, "waiting for the processes of the cluster above this one");
                    said = Instant::now();
                }
                std::thread::sleep(RETRY);
            }
            Err(error) => return Err(error),
        }
    }
    tracing::debug!(elapsed = ?started.elapsed(), "connected to the cluster");
    Ok(sockets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_address() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.local_addr().expect("an address").to_string()
    }

    #[test]
    fn a_connection_that_never_says_who_it_is_is_an_error_not_a_hang() {
        let addresses: Vec<String> = (0..2).map(|_| free_address()).collect();
        let target = addresses[0].clone();
        let stray = std::thread::spawn(move || loop {
            if let Ok(stream) = TcpStream::connect(&target) {
                std::thread::sleep(HANDSHAKE_WAIT + Duration::from_secs(1));
                drop(stream);
                break;
            }
            std::thread::sleep(RETRY);
        });
        let error = connect(&addresses, 0).expect_err("the silent connection is refused");
        assert!(error.to_string().contains("did not say which process"), "{error}");
        stray.join().expect("no panic");
    }

    #[test]
    fn three_processes_started_in_any_order_connect_at_once() {
        let addresses: Vec<String> = (0..3).map(|_| free_address()).collect();
        // The highest first: it must wait for the others to listen, without a 1 s sleep.
        let handles: Vec<_> = [2usize, 0, 1]
            .into_iter()
            .map(|me| {
                let addresses = addresses.clone();
                std::thread::spawn(move || (me, connect(&addresses, me).expect("connected")))
            })
            .collect();
        let mut connected: Vec<_> = handles.into_iter().map(|h| h.join().expect("no panic")).collect();
        connected.sort_by_key(|(me, _)| *me);
        for (me, sockets) in &connected {
            assert_eq!(sockets.len(), 3);
            for (index, socket) in sockets.iter().enumerate() {
                assert_eq!(socket.is_some(), index != *me, "process {me}, socket {index}");
            }
        }
        // Process 1's socket to 0 and process 0's socket from 1 are the same connection.
        let mut to_0 = connected[1].1[0].as_ref().expect("a socket").try_clone().expect("clone");
        to_0.write_all(b"ping").expect("write");
        let mut from_1 = connected[0].1[1].as_ref().expect("a socket").try_clone().expect("clone");
        let mut got = [0u8; 4];
        from_1.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"ping");
    }
}
