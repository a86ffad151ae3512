//! The vendored actix-server's change (vendor/README.md) that rondo's other tests cannot see:
//! the workers accept connections on the listening socket themselves, each through a
//! descriptor of its own, instead of through the accept thread.
//!
//! - Each worker holds a descriptor of the socket, and the server one more (for a restarted
//!   worker); stopping the server closes them all, so the port refuses connections.
//! - A worker at its connection limit stops accepting and leaves connections to the others;
//!   past every worker's limit a connection waits until one closes.
//! - A worker that wakes to a queue of connections takes several in one turn of its event
//!   loop, not one per turn, so a busy worker does not leave a burst of clients in the backlog.
//! - A worker that dies is started again, and serves the connection that waited meanwhile;
//!   one stopped with the whole system (`System::stop`, as a server stopped by a signal calls)
//!   is not.
//! - (The vendored actix-http's change to graceful shutdown, tested here with the same server.)
//!   A connection idle when a graceful stop begins still gets one request, answered with
//!   `Connection: close`, and a request pipelined behind it stays unanswered; one that sends
//!   nothing is closed after a second.
//!
//! rondo's own tests run everything else through it: `limits.rs` (the limit with one worker),
//! `balancer/tests/binary.rs` (a SIGTERM refuses new connections at once; out of descriptors
//! the workers back off and recover).

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What `/proc/self/fd/<fd>` links to: `socket:[<inode>]` for a socket.
fn link_of(fd: i32) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// How many of this process's descriptors refer to the socket `link` names.
fn descriptors_of(link: &str) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|entry| {
            std::fs::read_link(entry.path()).is_ok_and(|target| target.to_string_lossy() == link)
        })
        .count()
}

/// A server on 127.0.0.1 with `workers` workers of `limit` connections each (and a graceful
/// stop that waits `shutdown_timeout` seconds for its connections at most), answering every
/// request with the name of the worker thread that serves it, but `/slow` with `slow` after
/// 1.5 s, `/empty` with 204, and `/die` with `dying`, after
/// which the worker that next checks its service's readiness panics; its address, its
/// listening socket's `/proc` link, and its handle.
fn server(
    workers: usize,
    limit: usize,
    shutdown_timeout: u64,
) -> (
    SocketAddr,
    String,
    actix_web::dev::ServerHandle,
    actix_web::rt::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let link = link_of(listener.as_raw_fd());
    let die = Arc::new(AtomicBool::new(false));
    let server = HttpServer::new(move || {
        let dying = die.clone();
        App::new()
            .wrap(PanicWhenReady(die.clone()))
            .route(
                "/die",
                web::get().to(move || {
                    dying.store(true, Ordering::SeqCst);
                    async { "dying" }
                }),
            )
            .route("/empty", web::get().to(actix_web::HttpResponse::NoContent))
            .route(
                "/slow",
                web::get().to(|| async {
                    actix_web::rt::time::sleep(Duration::from_millis(1500)).await;
                    "slow"
                }),
            )
            .default_service(web::to(|| async {
                std::thread::current()
                    .name()
                    .unwrap_or("unnamed")
                    .to_owned()
            }))
    })
    .workers(workers)
    .max_connections(limit)
    .disable_signals()
    .shutdown_timeout(shutdown_timeout)
    // Longer than the drain tests wait for a closed connection (actix-web's default is 5 s).
    .keep_alive(Duration::from_secs(30))
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    (addr, link, handle, actix_web::rt::spawn(server))
}

/// Sends a keep-alive GET on `conn` and reads its response: the body, or `None` when nothing
/// arrived within `wait`.
async fn get(conn: &mut TcpStream, wait: Duration) -> Option<String> {
    conn.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    read_response(conn, wait).await
}

/// Reads a 200 response from `conn` (its rest 5 s at most once it started): its body, or `None`
/// when nothing arrived within `wait`.
async fn read_response(conn: &mut TcpStream, wait: Duration) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let n = tokio::time::timeout(wait, conn.read(&mut chunk))
        .await
        .ok()?
        .unwrap();
    buf.extend_from_slice(&chunk[..n]);
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .expect("a content-length")
                .parse()
                .unwrap();
            if buf.len() >= end + 4 + length {
                assert!(text.starts_with("HTTP/1.1 200"), "{text}");
                return Some(text[end + 4..end + 4 + length].to_owned());
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut chunk))
            .await
            .expect("the rest of the response within 5 s")
            .unwrap();
        assert!(n > 0, "closed before the whole response: {text:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Each of the two workers holds a descriptor of the listening socket and the server one
/// more; once stopped, none is left open and the port refuses connections.
#[actix_web::test]
async fn each_worker_accepts_on_its_own_descriptor_closed_at_stop() {
    let (addr, link, handle, running) = server(2, 100, 1);
    let mut conn = TcpStream::connect(addr).await.unwrap();
    get(&mut conn, Duration::from_secs(5))
        .await
        .expect("served");
    drop(conn);
    // The application's listener was moved into the server: all three are the server's own.
    assert_eq!(descriptors_of(&link), 3, "descriptors of {link}");

    handle.stop(true).await;
    running.await.unwrap().unwrap();
    // An idle worker confirms the stop just before its task ends and drops its descriptor.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while descriptors_of(&link) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(descriptors_of(&link), 0, "descriptors of {link} left open");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "a stopped server's port still accepts connections"
    );
}

/// A future that counts its polls and wakes itself each time, as the worker does when it has
/// accepted its batch: each of its polls is one turn of the worker's task queue. It ends when
/// `stop` is set.
struct Turns {
    count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl std::future::Future for Turns {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.stop.load(Ordering::SeqCst) {
            return std::task::Poll::Ready(());
        }
        self.count.fetch_add(1, Ordering::SeqCst);
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// 48 connections waiting in the backlog when a worker starts, beside a task of its own that
/// is always ready (as a loaded worker's connections are): the worker takes them in a few
/// turns of its event loop. It took one per turn, so the last client of a burst waited a
/// whole queue of other tasks per client ahead of it (1 to 2 s with 1,000 clients under load,
/// vendor/README.md). Bounded: 48 connections, 10 s.
#[actix_web::test]
async fn a_worker_takes_a_queue_of_connections_in_a_few_turns() {
    const CLIENTS: usize = 48;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Complete in the kernel's backlog before the worker starts.
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();

    let turns = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // The turn in which each connection's task first ran. Tasks run in the order they were
    // queued, so the connections accepted in one turn of the worker run in the next, together.
    let accepted_in = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (factory_turns, factory_stop) = (turns.clone(), stop.clone());
    let (connect_turns, connect_log) = (turns.clone(), accepted_in.clone());
    let server = HttpServer::new(move || {
        // The one worker's services are made on its thread, before it accepts.
        actix_web::rt::spawn(Turns {
            count: factory_turns.clone(),
            stop: factory_stop.clone(),
        });
        App::new().default_service(web::to(|| async { "ok" }))
    })
    .on_connect(move |_, _| {
        let turn = connect_turns.load(Ordering::SeqCst);
        connect_log.lock().unwrap().push(turn);
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    let running = actix_web::rt::spawn(server);

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while accepted_in.lock().unwrap().len() < CLIENTS && std::time::Instant::now() < deadline {
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let accepted_in = accepted_in.lock().unwrap().clone();
    let mut distinct = accepted_in.clone();
    distinct.dedup();
    println!(
        "{CLIENTS} connections in the backlog; {} accepted, in {} turns of the worker: {distinct:?}",
        accepted_in.len(),
        distinct.len(),
    );
    assert_eq!(
        accepted_in.len(),
        CLIENTS,
        "not every connection was accepted in 10 s"
    );
    assert!(
        distinct.len() <= CLIENTS / 8,
        "{CLIENTS} connections took {} turns of a busy worker to accept",
        distinct.len()
    );
    // And the worker let its other tasks run between batches (16 per turn: 3 turns here).
    assert!(
        distinct.len() >= 2,
        "{CLIENTS} connections were taken in one turn: a worker that takes a whole queue \
         leaves none to the others"
    );

    drop(clients);
    handle.stop(false).await;
    running.await.unwrap().unwrap();
}

/// With one connection per worker, two kept-alive connections are served by the two workers
/// (the one at its limit leaves the second to the other), a third waits while both are held,
/// and is served once one of them closes.
#[actix_web::test]
async fn a_worker_at_its_limit_leaves_connections_to_the_others() {
    let (addr, _, handle, running) = server(2, 1, 1);
    let mut first = TcpStream::connect(addr).await.unwrap();
    let first_worker = get(&mut first, Duration::from_secs(5))
        .await
        .expect("served");
    let mut second = TcpStream::connect(addr).await.unwrap();
    let second_worker = get(&mut second, Duration::from_secs(5))
        .await
        .expect("the second connection is served while the first is held");
    assert_ne!(first_worker, second_worker, "both served by one worker");

    let mut third = TcpStream::connect(addr).await.unwrap();
    let early = get(&mut third, Duration::from_millis(500)).await;
    assert_eq!(
        early, None,
        "a third connection was served while both workers were at their limit"
    );
    drop(first);
    let third_worker = read_response(&mut third, Duration::from_secs(5))
        .await
        .expect("the third connection is served once the first closes");
    assert_eq!(
        third_worker, first_worker,
        "served by the worker still full"
    );

    handle.stop(false).await;
    running.await.unwrap().unwrap();
}

/// A middleware whose readiness check panics, once, when its flag is set (by `/die`).
/// actix-server checks its services' readiness in the worker's own task, so the panic kills
/// the worker.
struct PanicWhenReady(Arc<AtomicBool>);

impl<S, B> actix_web::dev::Transform<S, actix_web::dev::ServiceRequest> for PanicWhenReady
where
    S: actix_web::dev::Service<
        actix_web::dev::ServiceRequest,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
{
    type Response = actix_web::dev::ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = PanicWhenReadyService<S>;
    type InitError = ();
    type Future = std::future::Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        std::future::ready(Ok(PanicWhenReadyService(service, self.0.clone())))
    }
}

struct PanicWhenReadyService<S>(S, Arc<AtomicBool>);

impl<S, B> actix_web::dev::Service<actix_web::dev::ServiceRequest> for PanicWhenReadyService<S>
where
    S: actix_web::dev::Service<
        actix_web::dev::ServiceRequest,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        if self.1.swap(false, Ordering::SeqCst) {
            panic!("the test kills this worker");
        }
        self.0.poll_ready(cx)
    }

    fn call(&self, req: actix_web::dev::ServiceRequest) -> Self::Future {
        self.0.call(req)
    }
}

/// A worker whose task panics is started again, and the connection that came meanwhile is
/// served by the new one. Bounded: two connections, 15 s.
#[actix_web::test]
async fn a_worker_that_dies_is_started_again() {
    let (addr, _, handle, running) = server(1, 100, 1);
    let mut first = TcpStream::connect(addr).await.unwrap();
    let first_worker = get(&mut first, Duration::from_secs(5))
        .await
        .expect("served");
    first
        .write_all(b"GET /die HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_response(&mut first, Duration::from_secs(5)).await,
        Some("dying".to_owned())
    );
    // The worker checks its service's readiness when it next accepts: this connection kills
    // it, and waits in the backlog for the worker started after it.
    let mut second = TcpStream::connect(addr).await.unwrap();
    let served = get(&mut second, Duration::from_secs(10)).await;
    println!(
        "2 connections; the worker {first_worker} died, and the connection that came then was \
         served by {served:?}"
    );
    let served = served.expect("no worker serves any more");
    assert_ne!(served, first_worker, "served by the worker that was to die");

    handle.stop(false).await;
    running.await.unwrap().unwrap();
}

/// `System::stop`, which a server stopped by SIGTERM calls, stops the arbiters of every
/// server's workers, also of a server not asked to stop (rondo's admin listener): such a
/// worker is shut down with its system, not taken for one that died and started again.
#[test]
fn workers_stopped_with_their_system_are_not_started_again() {
    let starts = Arc::new(AtomicUsize::new(0));
    let counted = starts.clone();
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            App::new().default_service(web::to(|| async { "up" }))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        let running = actix_web::rt::spawn(server);
        let mut conn = TcpStream::connect(addr).await.unwrap();
        assert_eq!(
            get(&mut conn, Duration::from_secs(5)).await.as_deref(),
            Some("up")
        );
        actix_web::rt::System::current().stop();
        // Time for the worker's arbiter to stop, and for a restart had one been asked for.
        actix_web::rt::time::sleep(Duration::from_millis(500)).await;
        // The worker went with its arbiter, and the connection it served with it.
        let mut rest = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(2), conn.read(&mut rest)).await;
        assert!(
            matches!(closed, Ok(Ok(0) | Err(_))),
            "the worker's connection is still open after System::stop: {closed:?}"
        );
        handle.stop(false).await;
        let _ = running.await;
    });
    assert_eq!(
        starts.load(Ordering::SeqCst),
        1,
        "the worker stopped with its system was started again"
    );
}

/// Reads `conn` until the peer closes it (end of file, or a reset), at most `wait`: what came.
async fn read_to_close(conn: &mut TcpStream, wait: Duration) -> String {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(wait, async {
        let mut chunk = [0u8; 1024];
        while let Ok(n @ 1..) = conn.read(&mut chunk).await {
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    assert!(
        read.is_ok(),
        "still open after {wait:?}, having sent {text:?}"
    );
    text
}

/// A graceful stop does not close a kept-alive connection under a request that may be on its
/// way (the vendored actix-http's `DRAIN_IDLE`): a connection idle when the stop begins still
/// gets one request, answered with `Connection: close`, and is then closed; one that sends
/// nothing more is closed by the drain's timer (1 s), not left to the shutdown timeout; new
/// connections are refused from the start. actix-http closed idle connections at once, so a
/// client's pooled connection could close under its next request.
#[actix_web::test]
async fn a_graceful_stop_serves_one_more_request_on_idle_connections() {
    let (addr, _, handle, running) = server(2, 100, 10);
    let mut pooled = TcpStream::connect(addr).await.unwrap();
    let mut quiet = TcpStream::connect(addr).await.unwrap();
    for conn in [&mut pooled, &mut quiet] {
        get(conn, Duration::from_secs(5)).await.expect("served");
    }

    let stopping = actix_web::rt::spawn(handle.stop(true));
    actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "a stopping server still accepts connections"
    );

    pooled
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let response = read_to_close(&mut pooled, Duration::from_secs(5)).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    assert!(
        response.contains("\r\nconnection: close\r\n"),
        "no `connection: close`: {response:?}"
    );

    // Within 4 s: the drain's timer, not the server's shutdown timeout (10 s).
    let rest = read_to_close(&mut quiet, Duration::from_secs(4)).await;
    assert_eq!(rest, "", "an idle connection got something while draining");
    stopping.await.unwrap();
    running.await.unwrap().unwrap();
}

/// A connection opened before a graceful stop whose first request comes after it is served
/// like a kept-alive one, also when the request takes longer than the drain's 1 s to answer;
/// of two requests pipelined on an idle connection only the first is answered (with
/// `Connection: close`), so the client knows the second was not processed. (A 204 has no body
/// to send after the head, so the first request is done before the second is read.)
#[actix_web::test]
async fn a_graceful_stop_answers_a_new_connections_first_request_and_no_pipelined_second() {
    let (addr, _, handle, running) = server(2, 100, 10);
    let mut fresh = TcpStream::connect(addr).await.unwrap();
    let mut pipelining = TcpStream::connect(addr).await.unwrap();
    get(&mut pipelining, Duration::from_secs(5))
        .await
        .expect("served");

    let stopping = actix_web::rt::spawn(handle.stop(true));
    actix_web::rt::time::sleep(Duration::from_millis(200)).await;

    fresh
        .write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    pipelining
        .write_all(b"GET /empty HTTP/1.1\r\nHost: t\r\n\r\nGET /empty HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let (slow, pipelined) = tokio::join!(
        read_to_close(&mut fresh, Duration::from_secs(5)),
        read_to_close(&mut pipelining, Duration::from_secs(5)),
    );
    assert!(slow.starts_with("HTTP/1.1 200"), "{slow:?}");
    assert!(slow.ends_with("\r\n\r\nslow"), "{slow:?}");
    assert!(slow.contains("\r\nconnection: close\r\n"), "{slow:?}");
    assert_eq!(
        pipelined.matches("HTTP/1.1 ").count(),
        1,
        "not one response to two pipelined requests: {pipelined:?}"
    );
    assert!(
        pipelined.contains("\r\nconnection: close\r\n"),
        "{pipelined:?}"
    );
    stopping.await.unwrap();
    running.await.unwrap().unwrap();
}
