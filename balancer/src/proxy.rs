//! The forwarding path: one request in, one endpoint chosen, the response streamed back.
//!
//! Request and response bodies stream through without being buffered whole. Method, path,
//! query, headers and body reach the endpoint unchanged, except that hop-by-hop headers are
//! removed in both directions, `X-Forwarded-For` is appended to, and `X-Forwarded-Proto` and
//! `X-Forwarded-Host` are set. The client's `Host` is kept, redirects are not followed and
//! content encodings are passed through untouched (the awc client is built that way in
//! [`crate::server`]).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BodyStream, SizedStream};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use awc::error::{ConnectError, SendRequestError};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use log::warn;
use smallvec::SmallVec;

use crate::endpoint::{Endpoint, InFlight};
use crate::health;
use crate::retry::{self, Failure};
use crate::selection::RoundRobin;

/// Headers that describe one connection, never the message: RFC 9110 §7.6.1, plus the
/// non-standard `Keep-Alive` and `Proxy-Connection`.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// Set on responses that took more than one try, to the number of tries.
pub const X_RONDO_TRIES: HeaderName = HeaderName::from_static("x-rondo-tries");

/// Why the balancer answered a request itself instead of relaying an endpoint's response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Discovery has no endpoint for any upstream.
    #[error("no endpoint available: {} {} no endpoint (the name does not resolve yet, or to no address)", .upstreams.join(", "), if .upstreams.len() == 1 { "has" } else { "have" })]
    NoEndpoints { upstreams: Vec<Arc<str>> },
    /// The endpoint refused the connection, or it failed before the request was sent.
    #[error("cannot connect to {endpoint} ({upstream}): {source}{}", tries_note(*.tries))]
    Connect {
        endpoint: SocketAddr,
        upstream: String,
        tries: u32,
        source: SendRequestError,
    },
    /// The endpoint did not accept the connection, or did not answer, in time.
    #[error("{endpoint} ({upstream}) did not answer in time: {source}{}", tries_note(*.tries))]
    Timeout {
        endpoint: SocketAddr,
        upstream: String,
        tries: u32,
        source: SendRequestError,
    },
    /// The exchange with the endpoint failed after the connection was made.
    #[error("request to {endpoint} ({upstream}) failed: {}{}", describe(.source), tries_note(*.tries))]
    Upstream {
        endpoint: SocketAddr,
        upstream: String,
        tries: u32,
        source: SendRequestError,
    },
    /// The client's request body could not be read.
    #[error("could not read the request body: {0}")]
    ClientBody(String),
    /// The request cannot be forwarded in the form it came in.
    #[error("cannot forward this request: {0}")]
    Unforwardable(String),
}

/// awc's own words, except where they mislead: it reports a connection that closed before the
/// response head as a failure "to connect".
fn describe(err: &SendRequestError) -> String {
    match err {
        SendRequestError::Connect(ConnectError::Disconnected) => {
            "the connection closed before a response came back".into()
        }
        other => other.to_string(),
    }
}

fn tries_note(tries: u32) -> String {
    if tries > 1 {
        format!(" (after {tries} tries)")
    } else {
        String::new()
    }
}

impl ProxyError {
    /// Classifies an awc failure on `endpoint`, the last of `tries` tries.
    pub fn from_send(endpoint: &Endpoint, tries: u32, err: SendRequestError) -> ProxyError {
        let endpoint_addr = endpoint.addr();
        let upstream = endpoint.upstream().to_string();
        match (Failure::of(&err), &err) {
            (Failure::ClientBody, _) => ProxyError::ClientBody(err.to_string()),
            (Failure::Local, _) => ProxyError::Unforwardable(err.to_string()),
            (_, SendRequestError::Timeout | SendRequestError::Connect(ConnectError::Timeout)) => {
                ProxyError::Timeout {
                    endpoint: endpoint_addr,
                    upstream,
                    tries,
                    source: err,
                }
            }
            (Failure::Connect, _) => ProxyError::Connect {
                endpoint: endpoint_addr,
                upstream,
                tries,
                source: err,
            },
            _ => ProxyError::Upstream {
                endpoint: endpoint_addr,
                upstream,
                tries,
                source: err,
            },
        }
    }
}

impl ResponseError for ProxyError {
    fn status_code(&self) -> StatusCode {
        match self {
            ProxyError::NoEndpoints { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect { .. } | ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::ClientBody(_) | ProxyError::Unforwardable(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code())
            .content_type("text/plain; charset=utf-8")
            .body(format!("rondo: {self}\n"))
    }
}

/// What the forwarding path needs besides the request: shared by all workers.
#[derive(Debug)]
pub struct Forwarding {
    pub selector: Arc<RoundRobin>,
    /// Tries per request, the first included.
    pub tries: u32,
    /// No new try starts later than this after the request arrived; zero means no limit.
    pub retry_timeout: Duration,
    /// Bodies up to this size are held in memory so a retry can send them again.
    pub retry_body_limit: u64,
}

/// A request body as it will be sent: held in memory (and so sendable again) or streamed.
enum RequestBody {
    None,
    Held(Bytes),
    Stream(
        Option<Box<dyn Stream<Item = Result<Bytes, PayloadError>> + Unpin>>,
        Option<u64>,
    ),
}

impl RequestBody {
    fn replayable(&self) -> bool {
        !matches!(self, RequestBody::Stream(..))
    }
}

/// Forwards one request to the next healthy endpoint in turn and streams its response back,
/// trying other endpoints after failures where that is safe (see [`crate::retry`]).
pub async fn forward(
    req: HttpRequest,
    payload: web::Payload,
    forwarding: web::Data<Forwarding>,
    client: web::Data<awc::Client>,
) -> Result<HttpResponse, ProxyError> {
    let arrived = Instant::now();
    if !req.uri().path().starts_with('/') {
        // `OPTIONS *` (asterisk form) and the like: there is no path to send to an endpoint.
        return Err(logged(
            &req,
            ProxyError::Unforwardable(format!("the request target '{}' is not a path", req.uri())),
        ));
    }
    let mut body = read_body(payload, req.headers(), forwarding.retry_body_limit).await?;
    let mut tried: SmallVec<[Arc<Endpoint>; 4]> = SmallVec::new();
    let mut last_error = None;
    loop {
        let Some(pick) = forwarding.selector.select(&tried) else {
            // Every endpoint was tried: answer with the last failure.
            let err = last_error.unwrap_or_else(|| ProxyError::NoEndpoints {
                upstreams: forwarding
                    .selector
                    .load()
                    .set()
                    .without_endpoints()
                    .to_vec(),
            });
            return Err(logged(&req, err));
        };
        let endpoint = pick.endpoint;
        tried.push(endpoint.clone());
        let in_flight = endpoint.start_request();

        let sent = send(&client, &req, &endpoint, &mut body).await;
        let res = match sent {
            Ok(res) => {
                if let Some(flip) = endpoint.report_success() {
                    health::log_flip(&endpoint, "passive", &flip);
                }
                res
            }
            Err(err) => {
                let failure = Failure::of(&err);
                if failure.counts_against_endpoint() {
                    let reason = err.to_string();
                    if let Some(flip) =
                        endpoint.report_failure(forwarding.selector.passive_policy(), &reason)
                    {
                        health::log_flip(&endpoint, "passive", &flip);
                    }
                }
                let tries = tried.len() as u32;
                let again = tries < forwarding.tries
                    && (forwarding.retry_timeout.is_zero()
                        || arrived.elapsed() < forwarding.retry_timeout)
                    && retry::may_retry(req.method(), failure, body.replayable());
                let err = ProxyError::from_send(&endpoint, tries, err);
                if again {
                    warn!(
                        "{} {}: try {tries} failed, trying another endpoint: {err}",
                        req.method(),
                        req.uri()
                    );
                    last_error = Some(err);
                    continue;
                }
                return Err(logged(&req, err));
            }
        };
        return Ok(relay(res, in_flight, tried.len()));
    }
}

/// Logs an answer the balancer makes itself, with the request, status and reason.
fn logged(req: &HttpRequest, err: ProxyError) -> ProxyError {
    warn!(
        "{} {}: {} {err}",
        req.method(),
        req.uri(),
        err.status_code().as_u16()
    );
    err
}

/// Reads the request body into memory when it is known to fit in `limit` (so a retry can
/// send it again); otherwise streams it, chunked bodies after a first part held in memory.
async fn read_body(
    payload: web::Payload,
    headers: &HeaderMap,
    limit: u64,
) -> Result<RequestBody, ProxyError> {
    let mut payload = payload.into_inner();
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    let length = request_body_length(headers);
    match length {
        None if !chunked => return Ok(RequestBody::None),
        Some(n) if n > limit => return Ok(RequestBody::Stream(Some(Box::new(payload)), Some(n))),
        _ => {}
    }
    let mut held = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ProxyError::ClientBody(e.to_string()))?;
        held.extend_from_slice(&chunk);
        if held.len() as u64 > limit {
            // A chunked body longer than the limit: send what was read, then the rest.
            let first = futures_util::stream::iter([Ok(held.freeze())]);
            return Ok(RequestBody::Stream(
                Some(Box::new(first.chain(payload))),
                None,
            ));
        }
    }
    Ok(RequestBody::Held(held.freeze()))
}

/// Sends one try of `req` to `endpoint`.
async fn send(
    client: &awc::Client,
    req: &HttpRequest,
    endpoint: &Endpoint,
    body: &mut RequestBody,
) -> Result<awc::ClientResponse, SendRequestError> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut upstream_req = client
        .request(
            req.method().clone(),
            format!("{}{path}", endpoint.base_url()),
        )
        // Without this awc would add `Accept-Encoding: identity` to requests that had none.
        .no_decompress();
    let headers = upstream_req.headers_mut();
    copy_end_to_end(req.headers(), headers);
    // The balancer answers `Expect: 100-continue` itself (actix-web does when the body is
    // first read), as nginx does; passing it on would cost the endpoint a round trip more.
    headers.remove(header::EXPECT);
    add_forwarded(req, headers);
    match body {
        RequestBody::None => upstream_req.send().await,
        RequestBody::Held(bytes) => upstream_req.send_body(bytes.clone()).await,
        RequestBody::Stream(stream, length) => {
            let stream = stream
                .take()
                .expect("a streamed body is sent once: never retried");
            match *length {
                Some(len) => upstream_req.send_body(SizedStream::new(len, stream)).await,
                None => upstream_req.send_body(BodyStream::new(stream)).await,
            }
        }
    }
}

/// Builds the client's response from the endpoint's: status and end-to-end headers, and the
/// body streamed with the endpoint counted in flight until it ends.
fn relay(mut res: awc::ClientResponse, in_flight: InFlight, tries: usize) -> HttpResponse {
    let status = res.status();
    let mut response = if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        // These never have a body (RFC 9112 §6.3); a streamed one would make actix frame one.
        drop(in_flight);
        HttpResponse::new(status)
    } else {
        let body = Counted {
            inner: res.take_payload(),
            _in_flight: in_flight,
        };
        match response_body_length(res.headers()) {
            Some(len) => {
                HttpResponse::with_body(status, SizedStream::new(len, body)).map_into_boxed_body()
            }
            None => HttpResponse::with_body(status, BodyStream::new(body)).map_into_boxed_body(),
        }
    };
    let headers = response.headers_mut();
    copy_end_to_end(res.headers(), headers);
    if tries > 1 {
        headers.insert(X_RONDO_TRIES, HeaderValue::from(tries));
    }
    response
}

/// A response body that keeps its endpoint counted in flight until it is done or dropped.
struct Counted<S> {
    inner: S,
    _in_flight: InFlight,
}

impl<S: Stream + Unpin> Stream for Counted<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

/// The request's `Content-Length`, when it has exactly one valid one.
pub fn request_body_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(header::CONTENT_LENGTH);
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()?.trim().parse().ok()
}

/// The response's `Content-Length`, unless it is also chunked (then the length is ignored).
pub fn response_body_length(headers: &HeaderMap) -> Option<u64> {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return None;
    }
    request_body_length(headers)
}

/// Copies every end-to-end header of `from` into `to`, in order: hop-by-hop headers (the
/// fixed list and every header the message's `Connection` header names) and the framing
/// (`Content-Length`, set again from the body) stay behind.
pub fn copy_end_to_end(from: &HeaderMap, to: &mut HeaderMap) {
    // Read `Connection` once per message, not once per header.
    let named: SmallVec<[&str; 4]> = from
        .get_all(header::CONNECTION)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    for (name, value) in from.iter() {
        let hop_by_hop = HOP_BY_HOP.contains(name)
            || *name == header::CONTENT_LENGTH
            || named.iter().any(|t| name.as_str().eq_ignore_ascii_case(t));
        if !hop_by_hop {
            to.append(name.clone(), value.clone());
        }
    }
}

/// Appends the client's address to `X-Forwarded-For` (one comma-separated header, as nginx's
/// `$proxy_add_x_forwarded_for`), and sets `X-Forwarded-Proto` and `X-Forwarded-Host`.
pub fn add_forwarded(req: &HttpRequest, headers: &mut HeaderMap) {
    let peer = req.peer_addr().map(|a| a.ip().to_string());
    let mut chain: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .filter_map(|v| v.to_str().ok())
        .collect();
    if let Some(peer) = peer.as_deref() {
        chain.push(peer);
    }
    if let Ok(value) = HeaderValue::from_str(&chain.join(", ")) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    if let Some(host) = req.headers().get(header::HOST) {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        m
    }

    /// Hop-by-hop headers, and the ones `Connection` names, are dropped; others are kept in order.
    #[test]
    fn copy_drops_hop_by_hop_and_connection_named_headers() {
        let from = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("content-length", "3"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
            ("host", "example"),
        ]);
        let mut to = HeaderMap::new();
        copy_end_to_end(&from, &mut to);
        // Across names the map has no order; within one name it keeps the order received.
        let mut names: Vec<_> = to
            .iter()
            .map(|(k, v)| format!("{k}={}", v.to_str().unwrap()))
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec!["host=example", "set-cookie=a=1", "set-cookie=b=2"]
        );
        let cookies: Vec<_> = to.get_all(header::SET_COOKIE).collect();
        assert_eq!(cookies, vec!["a=1", "b=2"]);
    }

    /// A request with two Content-Length headers has no length we trust.
    #[test]
    fn two_content_lengths_give_no_length() {
        assert_eq!(
            request_body_length(&map(&[("content-length", "3")])),
            Some(3)
        );
        assert_eq!(
            request_body_length(&map(&[("content-length", "3"), ("content-length", "4")])),
            None
        );
        assert_eq!(
            response_body_length(&map(&[
                ("content-length", "3"),
                ("transfer-encoding", "chunked")
            ])),
            None
        );
    }
}
