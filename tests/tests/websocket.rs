//! WebSockets through the balancer, with a real client library (tokio-tungstenite) against real
//! backends on 127.0.0.1: echo, ping, closes from either side, balancing, refusals, failures.

use std::net::SocketAddr;
use std::time::Duration;

use balancer::discovery::DnsResolver;
use balancer::{Config, Running};
use futures_util::{SinkExt, StreamExt};
use rondo_tests::faulty::refusing_addr;
use rondo_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long any one step may take before the test fails instead of hanging.
const STEP: Duration = Duration::from_secs(10);

/// A balancer over `upstreams` with active checks off (refusing endpoints have no health path).
fn passive_only(upstreams: &[SocketAddr]) -> Config {
    let mut config = config_for(&upstreams.iter().map(|a| a.to_string()).collect::<Vec<_>>());
    config.health_checks = false;
    config
}

fn ws_url(lb: &Running, path: &str) -> String {
    format!("ws://{}{path}", lb.addrs()[0])
}

/// Opens a WebSocket to `url`; returns it and the `X-Served-By` of the 101 response.
async fn open(url: &str) -> (Ws, String) {
    let (ws, res) = tokio::time::timeout(STEP, connect_async(url))
        .await
        .expect("the handshake in time")
        .expect("a WebSocket through the balancer");
    let served_by = res
        .headers()
        .get("x-served-by")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (ws, served_by)
}

/// The next message, `None` when the stream ended (or failed after a Close).
async fn next(ws: &mut Ws) -> Option<Message> {
    match tokio::time::timeout(STEP, ws.next())
        .await
        .expect("a message in time")
    {
        Some(Ok(message)) => Some(message),
        Some(Err(Error::ConnectionClosed | Error::AlreadyClosed)) | None => None,
        Some(Err(e)) => panic!("the WebSocket failed: {e}"),
    }
}

fn close_frame(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }))
}

/// Sends a raw HTTP/1.1 request to `addr` and reads the answer: (status, head, body). The body
/// is read to its Content-Length, or to the end of the connection.
async fn raw(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head.lines().find_map(|l| {
                    let l = l.to_ascii_lowercase();
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                });
                if length.is_some_and(|n| body.len() >= n) {
                    return (head.to_string(), body.to_string());
                }
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
                    return (head.to_string(), body.to_string());
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let (head, body) = tokio::time::timeout(STEP, exchange)
        .await
        .expect("an answer in time");
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head, body)
}

/// A WebSocket handshake request for `path`, as a browser would send it.
fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Text and binary messages, a 1 MiB one included, come back unchanged through the balancer.
#[actix_web::test]
async fn text_and_binary_messages_are_echoed() {
    let b = start_backend("Server 1", "b1");
    let lb = start_balancer(&passive_only(&[b.addr]), DnsResolver).await;
    let (mut ws, _) = open(&ws_url(&lb, "/ws")).await;

    ws.send(Message::text("hello, rondo")).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::text("hello, rondo")));

    let big: Vec<u8> = (0..(1u64 << 20)).map(backend::pattern_byte).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::binary(big)));

    ws.send(Message::binary(vec![0u8, 255, 7])).await.unwrap();
    assert_eq!(
        next(&mut ws).await,
        Some(Message::binary(vec![0u8, 255, 7]))
    );
}

/// A message sent in fragments (continuation frames) comes back whole, relayed frame by frame
/// in both directions.
#[actix_web::test]
async fn fragmented_messages_are_relayed() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    let b = start_backend("Server 1", "b1");
    let lb = start_balancer(&passive_only(&[b.addr]), DnsResolver).await;
    let (mut ws, _) = open(&ws_url(&lb, "/ws")).await;
    let parts = [
        ("hel", Data::Text, false),
        ("lo, ", Data::Continue, false),
        ("fragments", Data::Continue, true),
    ];
    for (part, data, last) in parts {
        let frame = Frame::message(part.as_bytes().to_vec(), OpCode::Data(data), last);
        ws.send(Message::Frame(frame)).await.unwrap();
    }
    assert_eq!(next(&mut ws).await, Some(Message::text("hello, fragments")));
}

/// A Ping from the client gets the endpoint's Pong with the same payload.
#[actix_web::test]
async fn ping_gets_the_endpoints_pong() {
    let b = start_backend("Server 1", "b1");
    let lb = start_balancer(&passive_only(&[b.addr]), DnsResolver).await;
    let (mut ws, _) = open(&ws_url(&lb, "/ws")).await;
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    assert_eq!(
        next(&mut ws).await,
        Some(Message::Pong(b"are you there".to_vec().into()))
    );
}

/// The client's Close reaches the endpoint, whose Close with the same code and reason comes
/// back; then the connection ends, and the endpoint is no longer counted in flight.
#[actix_web::test]
async fn client_close_gets_the_endpoints_close_with_the_same_code() {
    let b = start_backend("Server 1", "b1");
    let lb = start_balancer(&passive_only(&[b.addr]), DnsResolver).await;
    let (mut ws, _) = open(&ws_url(&lb, "/ws")).await;
    let endpoint = lb.selector().load().set().endpoints()[0].clone();
    assert_eq!(
        endpoint.in_flight(),
        1,
        "an open WebSocket counts in flight"
    );

    ws.send(close_frame(4000, "done here")).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(close_frame(4000, "done here")));
    assert_eq!(next(&mut ws).await, None);

    for _ in 0..100 {
        if endpoint.in_flight() == 0 {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        endpoint.in_flight(),
        0,
        "a closed WebSocket is no longer in flight"
    );
}

/// A Close the endpoint starts reaches the client with its code and reason.
#[actix_web::test]
async fn server_close_reaches_the_client_with_code_and_reason() {
    let b = start_backend("Server 1", "b1");
    let lb = start_balancer(&passive_only(&[b.addr]), DnsResolver).await;
    let (mut ws, _) = open(&ws_url(&lb, "/ws")).await;
    ws.send(Message::text("close:4001:bye")).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(close_frame(4001, "bye")));
    assert_eq!(next(&mut ws).await, None);
}

/// Successive WebSockets go to the endpoints in round-robin order, each handshake counted.
#[actix_web::test]
async fn successive_websockets_are_balanced_round_robin() {
    let backends: Vec<_> = (1..=3)
        .map(|i| start_backend(&format!("Server {i}"), &format!("b{i}")))
        .collect();
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let lb = start_balancer(&passive_only(&addrs), DnsResolver).await;
    let mut served_by = Vec::new();
    let mut open_ones = Vec::new();
    for _ in 0..6 {
        let (mut ws, by) = open(&ws_url(&lb, "/ws")).await;
        ws.send(Message::text(by.clone())).await.unwrap();
        assert_eq!(next(&mut ws).await, Some(Message::text(by.clone())));
        served_by.push(by);
        open_ones.push(ws);
    }
    assert_eq!(served_by, ["b1", "b2", "b3", "b1", "b2", "b3"]);

    // Each endpoint's two handshakes are counted as tries answered 1xx.
    let mut res = client()
        .get(format!("http://{}/metrics", lb.admin_addrs()[0]))
        .send()
        .await
        .unwrap();
    let metrics = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
    for a in &addrs {
        let line =
            format!("rondo_requests_total{{upstream=\"{a}\",endpoint=\"{a}\",class=\"1xx\"}} 2\n");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
}

/// The subprotocol the endpoint chose among those the client offered is the one the client gets.
#[actix_web::test]
async fn the_endpoints_subprotocol_reaches_the_client() {
    let b = start_backend("Server 1", "b1");
    let lb = start_balancer(&passive_only(&[b.addr]), DnsResolver).await;
    let mut request = ws_url(&lb, "/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "chat, echo".parse().unwrap());
    let (_ws, res) = tokio::time::timeout(STEP, connect_async(request))
        .await
        .unwrap()
        .expect("a WebSocket with a subprotocol");
    assert_eq!(res.headers().get("sec-websocket-protocol").unwrap(), "echo");
}

/// An upgrade to a path the endpoint does not serve as a WebSocket gets the endpoint's status,
/// headers and body.
#[actix_web::test]
async fn an_upgrade_the_endpoint_refuses_gets_its_status_and_body() {
    let b = start_backend("Server 1", "b1");
    let lb = start_balancer(&passive_only(&[b.addr]), DnsResolver).await;
    let (status, head, body) = raw(lb.addrs()[0], &upgrade_request("/")).await;
    assert_eq!((status, body.as_str()), (200, "Server 1"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("x-served-by: b1"),
        "{head}"
    );

    let (status, head, _) = raw(lb.addrs()[0], &upgrade_request("/status/403")).await;
    assert_eq!(status, 403, "{head}");

    // tokio-tungstenite sees the same refusal.
    match connect_async(ws_url(&lb, "/nowhere")).await {
        Err(Error::Http(res)) => assert_eq!(res.status().as_u16(), 404),
        other => panic!("expected a 404 refusal, got {:?}", other.map(|r| r.1)),
    }
}

/// An endpoint that refuses connections is skipped: the WebSocket opens on the next one.
#[actix_web::test]
async fn a_refusing_endpoint_is_skipped() {
    let b = start_backend("Server 1", "b1");
    let lb = start_balancer(&passive_only(&[refusing_addr(), b.addr]), DnsResolver).await;
    for _ in 0..2 {
        let (mut ws, served_by) = open(&ws_url(&lb, "/ws")).await;
        assert_eq!(served_by, "b1");
        ws.send(Message::text("still here")).await.unwrap();
        assert_eq!(next(&mut ws).await, Some(Message::text("still here")));
    }
}

/// With no endpoint answering, the upgrade gets a 502 that says why.
#[actix_web::test]
async fn no_answering_endpoint_gives_502_with_a_reason() {
    let lb = start_balancer(&passive_only(&[refusing_addr()]), DnsResolver).await;
    let (status, head, body) = raw(lb.addrs()[0], &upgrade_request("/ws")).await;
    assert_eq!(status, 502, "{head}\n{body}");
    assert!(body.contains("cannot connect to"), "{body}");
}

/// An upgrade request without a WebSocket key is refused with 400 and not passed on.
#[actix_web::test]
async fn an_invalid_handshake_gets_400() {
    let b = start_backend("Server 1", "b1");
    let lb = start_balancer(&passive_only(&[b.addr]), DnsResolver).await;
    let request = "GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n\
                   Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let (status, _, body) = raw(lb.addrs()[0], request).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not a valid WebSocket handshake"), "{body}");
}

/// A request with `Upgrade: h2c` is served as plain HTTP: the endpoint sees neither `Upgrade`
/// nor `Connection`, and the client gets a 200.
#[actix_web::test]
async fn an_h2c_upgrade_is_served_as_plain_http() {
    let b = start_backend("Server 1", "b1");
    let lb = start_balancer(&passive_only(&[b.addr]), DnsResolver).await;
    let request =
        "GET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\n\
                   Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n";
    let (status, head, body) = raw(lb.addrs()[0], request).await;
    assert_eq!(status, 200, "{head}");
    let echo: serde_json::Value = serde_json::from_str(&body).expect("the echo's JSON");
    let names: Vec<&str> = echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| pair[0].as_str().unwrap())
        .collect();
    for hop in ["upgrade", "connection", "http2-settings"] {
        assert!(
            !names.contains(&hop),
            "{hop} reached the endpoint: {names:?}"
        );
    }
}

/// An idle WebSocket outlives the client request timeout, the upstream idle timeout, the
/// response timeout and the client keep-alive timeout, all shorter than its idle time.
#[actix_web::test]
async fn an_idle_websocket_stays_open() {
    let b = start_backend("Server 1", "b1");
    let mut config = passive_only(&[b.addr]);
    config.client_timeout = Duration::from_secs(1);
    config.response_timeout = Duration::from_secs(1);
    config.upstream_idle_timeout = Duration::from_secs(1);
    config.keepalive_timeout = Duration::from_secs(1);
    let lb = start_balancer(&config, DnsResolver).await;
    let (mut ws, _) = open(&ws_url(&lb, "/ws")).await;
    actix_web::rt::time::sleep(Duration::from_secs(4)).await;
    ws.send(Message::text("after a while")).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::text("after a while")));
}

/// A graceful stop does not wait on an open WebSocket past the shutdown timeout: the balancer
/// stops and the client's connection ends.
#[actix_web::test]
async fn graceful_stop_ends_open_websockets() {
    let b = start_backend("Server 1", "b1");
    let lb = start_balancer(&passive_only(&[b.addr]), DnsResolver).await;
    let (mut ws, _) = open(&ws_url(&lb, "/ws")).await;
    let handle = lb.handle();
    let stopped = actix_web::rt::spawn(lb.wait());
    handle.stop(true).await;
    tokio::time::timeout(Duration::from_secs(20), stopped)
        .await
        .expect("the balancer stopped")
        .unwrap()
        .unwrap();
    let end = tokio::time::timeout(STEP, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the client's WebSocket ended");
}
