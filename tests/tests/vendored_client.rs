//! The vendored awc's connection pool changes (vendor/README.md) that rondo's other tests
//! cannot see. Both held before the change too (awc's own key was `Authority`, which ignores
//! case, and `limit(0)` meant `u32::MAX` permits); they guard the new code, and fail with a key
//! hashed without lowercasing and with a limit of 100 respectively:
//!
//! - A pool key carries its hash, computed once from the lowercased authority: authorities
//!   that differ only in case share pooled connections (as `Authority`'s `Eq` makes them
//!   equal), and different authorities do not. (The authorities are IPv4-mapped IPv6
//!   addresses, the one way to write 127.0.0.1 with letters: the test needs IPv6 sockets.)
//! - A pool without a limit (`Connector::limit(0)`, as rondo builds its clients) takes no
//!   permits: it opens as many connections as requests wait, past awc's default limit of 100.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use awc::{Client, Connector};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// A keep-alive HTTP/1.1 server on 127.0.0.1 that counts the connections it accepts and
/// answers every request `ok`, each only once `hold` requests have arrived in all (all of them
/// waiting together), or at once when `hold` is 0.
async fn counting_server(hold: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let arrived = Arc::new(AtomicUsize::new(0));
    // Released, all at once, when the `hold`-th request arrives.
    let gate = Arc::new(Semaphore::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream, hold, arrived.clone(), gate.clone()));
        }
    });
    (addr, accepted)
}

async fn serve(
    mut stream: TcpStream,
    hold: usize,
    arrived: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        buf.drain(..end);
        if hold > 0 {
            if arrived.fetch_add(1, Ordering::SeqCst) + 1 == hold {
                gate.add_permits(hold);
            }
            gate.acquire().await.unwrap().forget();
        }
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        if stream.write_all(answer).await.is_err() {
            return;
        }
    }
}

async fn get_ok(client: &Client, url: &str) {
    let mut res = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(res.status(), 200, "GET {url}");
    assert_eq!(res.body().await.unwrap().as_ref(), b"ok", "GET {url}");
}

#[actix_web::test]
async fn authorities_differing_in_case_share_pooled_connections() {
    let (addr, accepted) = counting_server(0).await;
    let port = addr.port();
    let client = Client::builder()
        .connector(Connector::new().limit(0))
        .finish();
    // The same address as 127.0.0.1, written as an IPv4-mapped IPv6 address in two cases.
    let lower = format!("http://[::ffff:7f00:1]:{port}/");
    let upper = format!("http://[::FFFF:7F00:1]:{port}/");
    let plain = format!("http://127.0.0.1:{port}/");

    get_ok(&client, &lower).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    get_ok(&client, &upper).await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "{upper} did not reuse the connection pooled for {lower}"
    );
    get_ok(&client, &plain).await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "{plain} reused a connection pooled for another authority"
    );
    get_ok(&client, &lower).await;
    get_ok(&client, &plain).await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "a pooled connection was not reused"
    );
}

#[actix_web::test]
async fn a_pool_without_a_limit_opens_past_awcs_default_of_100() {
    const REQUESTS: usize = 150;
    // Every request is answered only when all 150 wait at the server together: with a limit of
    // 100 connections the last 50 would wait for a permit, and none would be answered.
    let (addr, accepted) = counting_server(REQUESTS).await;
    let client = Rc::new(
        Client::builder()
            .connector(Connector::new().limit(0))
            .timeout(Duration::from_secs(20))
            .finish(),
    );
    let url = format!("http://{addr}/");
    let requests = (0..REQUESTS).map(|_| {
        let client = client.clone();
        let url = url.clone();
        async move { get_ok(&client, &url).await }
    });
    tokio::time::timeout(
        Duration::from_secs(20),
        futures_util::future::join_all(requests),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "{REQUESTS} concurrent requests were not all answered within 20 s: the server \
             accepted {} connections",
            accepted.load(Ordering::SeqCst)
        )
    });
    assert_eq!(accepted.load(Ordering::SeqCst), REQUESTS);
}
