//! TCP connections per second through the VIP: kernel-socket clients in
//! the generator namespace, a real TCP backend in the sink namespace.
//!
//! One connection = handshake, a 16-byte request, a 64-byte response,
//! the backend closes, the client closes (FIN both ways; the backend holds
//! TIME_WAIT). Clients bind to 32 client addresses in turn so that source
//! ports are not reused while a gateway may still remember them.
//!
//! Owns its listener, server threads and client threads; all run pinned to
//! the load core, all loops are bounded by a deadline and stop on
//! [`crate::topo::stopped`].

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use socket2::{Domain, Socket, Type};
use vipgate::netns::NetNs;

use crate::topo::{addr, stopped};

const REQUEST: &[u8; 16] = b"GET /bench 16 B\n";
const RESPONSE: [u8; 64] = [b'x'; 64];
const IO_TIMEOUT: Duration = Duration::from_secs(1);

/// The backend: accept, read the request, answer, close.
pub struct Backend {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pub served: Arc<AtomicU64>,
}

impl Backend {
    pub fn start(ns: &NetNs, core: usize, threads: usize) -> Result<Backend> {
        let listener = ns.run(|| -> Result<TcpListener> {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
            s.set_reuse_address(true)?;
            s.bind(&SocketAddr::from((addr::SINK, addr::TCP_PORT)).into())
                .context("binding the cps backend")?;
            s.listen(4096)?;
            s.set_nonblocking(true)?;
            Ok(s.into())
        })??;
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let mut handles = Vec::new();
        for i in 0..threads {
            let l = listener.try_clone()?;
            let (stop, served) = (stop.clone(), served.clone());
            handles.push(
                std::thread::Builder::new()
                    .name(format!("bench-backend{i}"))
                    .spawn(move || {
                        let _ = vipgate_dataplane::io::sys::pin_current_thread(core);
                        serve(&l, &stop, &served);
                    })?,
            );
        }
        Ok(Backend {
            stop,
            threads: handles,
            served,
        })
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve(l: &TcpListener, stop: &AtomicBool, served: &AtomicU64) {
    while !stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((mut s, _)) => {
                if answer(&mut s).is_ok() {
                    served.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

fn answer(s: &mut TcpStream) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut buf = [0u8; 16];
    s.read_exact(&mut buf)?;
    s.write_all(&RESPONSE)
}

/// Outcome of one cps run.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct CpsRun {
    pub completed: u64,
    pub failed: u64,
    pub elapsed_s: f64,
    pub cps: f64,
}

/// Runs `clients` client threads in `ns` for `length` (each connection
/// bounded by 1 s timeouts; at most `max_per_client` connections each).
pub fn run_clients(
    ns: &NetNs,
    core: usize,
    clients: usize,
    length: Duration,
    max_per_client: u64,
) -> Result<CpsRun> {
    let start = Instant::now();
    let deadline = start + length;
    let counts = ns.run(|| {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..clients)
                .map(|i| {
                    s.spawn(move || {
                        let _ = vipgate_dataplane::io::sys::pin_current_thread(core);
                        client_loop(i, deadline, max_per_client)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or((0, 0)))
                .collect::<Vec<_>>()
        })
    })?;
    let elapsed = start.elapsed().as_secs_f64();
    let completed: u64 = counts.iter().map(|c| c.0).sum();
    let failed: u64 = counts.iter().map(|c| c.1).sum();
    Ok(CpsRun {
        completed,
        failed,
        elapsed_s: elapsed,
        cps: completed as f64 / elapsed.max(1e-9),
    })
}

/// (completed, failed) connections of one client thread.
fn client_loop(i: usize, deadline: Instant, max: u64) -> (u64, u64) {
    let vip = SocketAddr::from((addr::VIP, addr::TCP_PORT));
    let (mut ok, mut failed) = (0, 0);
    let mut n = 0usize;
    while Instant::now() < deadline && ok + failed < max && !stopped() {
        let src = addr::cps_client((i + n * 7) as u8);
        n += 1;
        match connect_once(src, vip) {
            Ok(()) => ok += 1,
            Err(_) => failed += 1,
        }
    }
    (ok, failed)
}

fn connect_once(src: std::net::Ipv4Addr, vip: SocketAddr) -> Result<()> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.bind(&SocketAddr::from((src, 0)).into())?;
    s.connect_timeout(&vip.into(), IO_TIMEOUT)?;
    let mut t: TcpStream = s.into();
    t.set_read_timeout(Some(IO_TIMEOUT))?;
    t.write_all(REQUEST)?;
    let mut got = 0;
    let mut buf = [0u8; 128];
    loop {
        match t.read(&mut buf)? {
            0 => break,
            k => got += k,
        }
    }
    if got != RESPONSE.len() {
        return Err(anyhow!("short response: {got} bytes"));
    }
    Ok(())
}
