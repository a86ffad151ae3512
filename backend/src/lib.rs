//! The demo backend behind rondo: answers `$MESSAGE` and says which replica served it.
//!
//! Three compose services run this one image with different `MESSAGE`s, as the three Python
//! servers of the original tutorial did. Every response carries `X-Served-By: <hostname>`, so a
//! client can tell replicas of one service apart.
//!
//! # Routes
//! - `GET /` (and `HEAD`): `$MESSAGE` as `text/plain`.
//! - `GET /health` (and `HEAD`): 200 `ok` (for health checks).
//! - `/echo` (any method): JSON with the method, path, query, every header as received, and the
//!   body's length and SHA-256. A test aid.
//! - `GET /bytes/{n}`: `n` bytes of a fixed pattern ([`pattern_byte`]), streamed. A test aid.
//! - Every request is logged with its `X-Test-Id` header (`test_id=-` when absent), so a fault
//!   test can count which backend received which request.
//! - `/status/{code}` (any method): answers that status with no body. A test aid.
//! - `GET /delay/{ms}`: waits `ms` milliseconds (at most a minute), then answers `$MESSAGE`.
//!   A test aid.
//! - `GET /ws`: a WebSocket echo (subprotocol `echo` when offered). Text, binary and continuation
//!   frames come back unchanged, a Ping gets a Pong with its payload, and a Close gets a Close
//!   with the same code and reason. The text message `close:CODE:REASON` makes the server close
//!   first, with that code and reason. Frames up to [`MAX_WS_FRAME`] bytes. A test aid.

use std::io;
use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{DefaultHeaders, Logger};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;
use futures_util::{stream, StreamExt};
use sha2::{Digest, Sha256};

/// The header naming the replica (container hostname) that answered.
pub const SERVED_BY: HeaderName = HeaderName::from_static("x-served-by");

/// Largest `n` that `/bytes/{n}` serves: 4 GiB.
pub const MAX_BYTES: u64 = 4 << 30;

/// The largest WebSocket frame `/ws` accepts: 16 MiB (actix-ws's default is 64 KiB).
pub const MAX_WS_FRAME: usize = 16 << 20;

/// What one backend instance says and who it says it is.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The body of `GET /`.
    pub message: String,
    /// The value of `X-Served-By`; the machine's hostname in a container.
    pub served_by: String,
    /// Worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_timeout: Duration,
}

/// Byte `i` of every `/bytes/{n}` body: a 251-byte cycle, so a shifted or dropped chunk
/// changes the digest.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// Starts serving on `listener`. The server stops gracefully on SIGTERM or SIGINT: it stops
/// accepting, finishes in-flight requests within `shutdown_timeout`, and resolves `Ok`.
pub fn start(listener: TcpListener, settings: Settings) -> io::Result<Server> {
    let served_by = HeaderValue::from_str(&settings.served_by)
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    let message = web::Data::new(settings.message);
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(DefaultHeaders::new().add((SERVED_BY, served_by.clone())))
            // `test_id` lets fault tests see which backend received which request, and how often.
            .wrap(Logger::new("%a \"%r\" %s %b %Dms test_id=%{x-test-id}i"))
            .app_data(message.clone())
            .route("/", web::get().to(index))
            .route("/", web::head().to(index))
            .route("/health", web::get().to(health))
            .route("/health", web::head().to(health))
            .route("/echo", web::to(echo))
            .route("/bytes/{n}", web::get().to(bytes))
            .route("/delay/{ms}", web::get().to(delay))
            .route("/status/{code}", web::to(status))
            .route("/ws", web::get().to(ws))
    })
    // Longer than any sane proxy's idle timeout, so the proxy closes idle connections first.
    .keep_alive(Duration::from_secs(75))
    // Without TCP_NODELAY the short last write of a body (`/bytes/65536` is one 64,256-byte
    // chunk and a 1,280-byte one) waits for the client's delayed ACK: about 40 ms per response.
    .tcp_nodelay(true)
    .shutdown_timeout(settings.shutdown_timeout.as_secs().max(1));
    if settings.workers > 0 {
        server = server.workers(settings.workers);
    }
    Ok(server.listen(listener)?.run())
}

async fn index(message: web::Data<String>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(message.get_ref().clone())
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

async fn echo(req: HttpRequest, mut body: web::Payload) -> actix_web::Result<HttpResponse> {
    let mut hasher = Sha256::new();
    let mut length: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        length += chunk.len() as u64;
        hasher.update(&chunk);
    }
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "method": req.method().as_str(),
        "path": req.path(),
        "query": req.query_string(),
        "version": format!("{:?}", req.version()),
        "headers": headers,
        "body_length": length,
        "body_sha256": hex::encode(hasher.finalize()),
    })))
}

async fn bytes(n: web::Path<u64>) -> HttpResponse {
    // A whole number of pattern cycles, so every chunk is a slice of the same buffer.
    const CHUNK: u64 = 251 * 256;
    static PATTERN: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    let n = n.into_inner();
    if n > MAX_BYTES {
        return HttpResponse::BadRequest().body(format!("at most {MAX_BYTES} bytes\n"));
    }
    let pattern = PATTERN
        .get_or_init(|| Bytes::from_iter((0..CHUNK).map(pattern_byte)))
        .clone();
    let chunks = stream::iter((0..n.div_ceil(CHUNK)).map(move |c| {
        let len = (n - c * CHUNK).min(CHUNK) as usize;
        Ok::<_, std::convert::Infallible>(pattern.slice(..len))
    }));
    HttpResponse::Ok()
        .content_type("application/octet-stream")
        .no_chunking(n)
        .streaming(chunks)
}

async fn status(code: web::Path<u16>) -> HttpResponse {
    match actix_web::http::StatusCode::from_u16(code.into_inner()) {
        Ok(code) if code.as_u16() >= 200 => HttpResponse::build(code).finish(),
        _ => HttpResponse::BadRequest().body("expected a status code from 200 to 999\n"),
    }
}

async fn delay(ms: web::Path<u64>, message: web::Data<String>) -> HttpResponse {
    let ms = ms.into_inner().min(60_000);
    actix_web::rt::time::sleep(Duration::from_millis(ms)).await;
    index(message).await
}

async fn ws(req: HttpRequest, body: web::Payload) -> actix_web::Result<HttpResponse> {
    let (response, session, messages) = actix_ws::handle_with_protocols(&req, body, &["echo"])?;
    actix_web::rt::spawn(ws_echo(session, messages.max_frame_size(MAX_WS_FRAME)));
    Ok(response)
}

/// Echoes until either side closes; see the crate doc for what each frame gets back.
async fn ws_echo(mut session: actix_ws::Session, mut messages: actix_ws::MessageStream) {
    use actix_ws::{CloseReason, Message};
    while let Some(Ok(message)) = messages.recv().await {
        let sent = match message {
            Message::Text(text) => match server_close(&text) {
                Some(reason) => return session.close(Some(reason)).await.unwrap_or(()),
                None => session.text(text).await,
            },
            Message::Binary(bytes) => session.binary(bytes).await,
            Message::Continuation(item) => session.continuation(item).await,
            Message::Ping(bytes) => session.pong(&bytes).await,
            Message::Pong(_) | Message::Nop => Ok(()),
            Message::Close(reason) => return session.close(reason).await.unwrap_or(()),
        };
        if sent.is_err() {
            return;
        }
    }
    // The client went away without a Close, or broke the protocol.
    let _ = session.close(None::<CloseReason>).await;
}

/// The close that `close:CODE:REASON` asks the server to start, if `text` is one.
fn server_close(text: &str) -> Option<actix_ws::CloseReason> {
    let (code, reason) = text.strip_prefix("close:")?.split_once(':')?;
    Some(actix_ws::CloseReason {
        code: code.parse::<u16>().ok()?.into(),
        description: Some(reason.to_string()).filter(|r| !r.is_empty()),
    })
}

/// Whether `GET /health` on `127.0.0.1:port` answers 200 within `timeout`.
pub fn check_health(port: u16, timeout: Duration) -> Result<(), String> {
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, SocketAddr, TcpStream};

    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let fail = |e: io::Error| format!("GET http://{addr}/health failed: {e}");
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(fail)?;
    stream.set_read_timeout(Some(timeout)).map_err(fail)?;
    stream.set_write_timeout(Some(timeout)).map_err(fail)?;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(fail)?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).map_err(fail)?;
    match &head {
        b"HTTP/1.1 200" | b"HTTP/1.0 200" => Ok(()),
        other => Err(format!(
            "GET http://{addr}/health answered '{}'",
            String::from_utf8_lossy(other)
        )),
    }
}
