//! Endpoints that misbehave on purpose, for the fault tests on 127.0.0.1.
//!
//! Each runs on its own thread with plain sockets, so it fails exactly as told: refuse, reset
//! after reading the request, hang, or die halfway through a response. [`Switchable`] is a real
//! actix-web backend whose health answer a test turns on and off.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};

/// How a [`Faulty`] endpoint treats each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Reads the request head, then closes the connection without answering.
    ResetAfterRequest,
    /// Accepts and reads, never answers, keeps the connection open.
    Hang,
    /// Answers a 1,000-byte `Content-Length` response, sends 10 bytes of it, then closes.
    DieMidResponse,
    /// Answers these exact bytes, then closes (to send what actix-web would not).
    Answer(&'static str),
}

/// A misbehaving endpoint; counts the connections it accepted.
pub struct Faulty {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
}

/// An address on 127.0.0.1 where nothing listens (connections are refused).
///
/// The port stays bound, without listening, for the rest of the process: a port that was only
/// found free and let go can be handed to the next `bind` to port 0, and tests run in parallel,
/// so another test's server once answered at the "refusing" address.
pub fn refusing_addr() -> SocketAddr {
    let held = HeldPort::new();
    let addr = held.addr;
    // Kept open (bound, never listening) until the test process exits.
    std::mem::forget(held);
    addr
}

/// A port on 127.0.0.1, bound and not listening (connections are refused), held until this is
/// dropped: for a test that starts a server there later, dropping it just before.
pub struct HeldPort {
    pub addr: SocketAddr,
    _socket: tokio::net::TcpSocket,
}

impl HeldPort {
    pub fn new() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind 127.0.0.1:0");
        HeldPort {
            addr: socket.local_addr().expect("the bound address"),
            _socket: socket,
        }
    }
}

impl Default for HeldPort {
    fn default() -> Self {
        Self::new()
    }
}

/// Starts an endpoint on 127.0.0.1 that misbehaves as `fault` says, on every connection.
pub fn start_faulty(fault: Fault) -> Faulty {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || misbehave(stream, fault));
        }
    });
    Faulty { addr, connections }
}

fn misbehave(mut stream: TcpStream, fault: Fault) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    match fault {
        Fault::ResetAfterRequest => drop(stream),
        Fault::Hang => {
            std::thread::sleep(Duration::from_secs(30));
        }
        Fault::DieMidResponse => {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789");
            let _ = stream.flush();
            std::thread::sleep(Duration::from_millis(50));
        }
        Fault::Answer(raw) => {
            let _ = stream.write_all(raw.as_bytes());
            let _ = stream.flush();
        }
    }
}

/// A backend whose `/health` answers 200 or 503 as the test says, and `/` its name, or
/// nothing at all while `hung` is set (a paused container: connections open, no answers).
pub struct Switchable {
    pub addr: SocketAddr,
    pub healthy: Arc<AtomicBool>,
    pub hung: Arc<AtomicBool>,
    pub handle: ServerHandle,
}

/// Starts a [`Switchable`] backend named `name`, healthy or not at first.
pub fn start_switchable(name: &'static str, healthy: bool) -> Switchable {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let flag = Arc::new(AtomicBool::new(healthy));
    let state = web::Data::new(flag.clone());
    let hung = Arc::new(AtomicBool::new(false));
    let hang = web::Data::new(Hung(hung.clone()));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(hang.clone())
            .route(
                "/health",
                web::get().to(|healthy: web::Data<Arc<AtomicBool>>| async move {
                    if healthy.load(Ordering::SeqCst) {
                        HttpResponse::Ok().body("ok")
                    } else {
                        HttpResponse::ServiceUnavailable().body("sick")
                    }
                }),
            )
            .default_service(web::to(move |hung: web::Data<Hung>| async move {
                if hung.0.load(Ordering::SeqCst) {
                    actix_web::rt::time::sleep(Duration::from_secs(60)).await;
                }
                HttpResponse::Ok()
                    .insert_header(("x-served-by", name))
                    .body(name)
            }))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Switchable {
        addr,
        healthy: flag,
        hung,
        handle,
    }
}

/// The flag that makes a [`Switchable`] stop answering.
struct Hung(Arc<AtomicBool>);
