//! The forwarding path: one request in, one endpoint chosen, the response streamed back.
//!
//! Request and response bodies stream through without being buffered whole (bodies up to
//! `RONDO_RETRY_BODY_LIMIT` are held so a retry can send them again). Method, path, query,
//! headers and body reach the endpoint unchanged except for the headers [`crate::headers`]
//! names: hop-by-hop ones removed, forwarding ones and `Via` set, `X-Request-Id` kept or made.
//! The client's `Host` is kept, redirects are not followed and content encodings are passed
//! through untouched (the awc client is built that way in [`crate::server`]).
//!
//! Every answer the balancer makes itself ([`ProxyError`]) is a short text naming the reason
//! and the request id, and is logged with both.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BodySize, BodyStream, MessageBody, SizedStream};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use awc::error::{ConnectError, SendRequestError};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use log::warn;
use smallvec::SmallVec;

use crate::access::Exchange;
use crate::config::AccessLog;
use crate::endpoint::{Endpoint, InFlight};
use crate::headers::{self as hdr, ClientSide, ForwardingPolicy, X_REQUEST_ID};
pub use crate::headers::{copy_end_to_end, keep_end_to_end};
use crate::health;
use crate::limits::{self, Exceeded, Fault, GuardedBody, Limits};
use crate::retry::{self, Failure};
use crate::screen;
use crate::selection::RoundRobin;
use crate::stall::Waiting;
use crate::stats::{class_of, Totals};
use crate::websocket;

/// Set on responses that took more than one try, to the number of tries.
pub const X_RONDO_TRIES: HeaderName = HeaderName::from_static("x-rondo-tries");

/// Why the balancer answered a request itself instead of relaying an endpoint's response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Discovery has no endpoint for any upstream.
    #[error("no endpoint available: {} {} no endpoint (the name does not resolve yet, or to no address)", .upstreams.join(", "), if .upstreams.len() == 1 { "has" } else { "have" })]
    NoEndpoints { upstreams: Vec<Arc<str>> },
    /// Every endpoint there is was drained by hand.
    #[error("no endpoint available: every endpoint is drained (POST /endpoints/{{address}}/enable on the admin listener puts one back)")]
    AllDrained,
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
    /// The endpoint's answer to a WebSocket upgrade was no valid handshake.
    #[error("{endpoint} ({upstream}) answered the WebSocket upgrade wrongly: {reason}")]
    BadUpgrade {
        endpoint: SocketAddr,
        upstream: String,
        reason: String,
    },
    /// The client's request body could not be read.
    #[error("could not read the request body: {0}")]
    ClientBody(String),
    /// The request cannot be forwarded in the form it came in.
    #[error("cannot forward this request: {0}")]
    Unforwardable(String),
    /// The request went past one of the client limits.
    #[error(transparent)]
    Limit(#[from] Exceeded),
    /// [`crate::screen`] refused the request; the connection is closed after the answer.
    #[error("request refused: {reason}")]
    Rejected { status: StatusCode, reason: String },
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
            ProxyError::NoEndpoints { .. } | ProxyError::AllDrained => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Connect { .. }
            | ProxyError::Upstream { .. }
            | ProxyError::BadUpgrade { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::ClientBody(_) | ProxyError::Unforwardable(_) => StatusCode::BAD_REQUEST,
            ProxyError::Limit(exceeded) => exceeded.status(),
            ProxyError::Rejected { status, .. } => *status,
        }
    }
}

impl ProxyError {
    /// Whether the client connection closes after this answer: its request body was not read
    /// to the end, or (a refused request) bytes after its head must never be read as a request,
    /// as nginx does after a 400.
    fn closes_connection(&self) -> bool {
        match self {
            // As nginx closes after 400, 408, 413, 414 and a head too large: the request's
            // body may not have been read, or not to its end, so the next bytes on the
            // connection may not be a request.
            ProxyError::Limit(_)
            | ProxyError::ClientBody(_)
            | ProxyError::Rejected { .. }
            | ProxyError::Unforwardable(_) => true,
            _ => false,
        }
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
    /// What a client may send.
    pub limits: Limits,
    /// Whose forwarding headers to believe, and whether to add `Forwarded`.
    pub forwarding_headers: ForwardingPolicy,
    /// The balancer's counters, shared with the admin listener.
    pub totals: Arc<Totals>,
    /// The access log's format.
    pub access_log: AccessLog,
}

impl Forwarding {
    /// The forwarding settings of `config`, selecting through `selector`.
    pub fn new(
        config: &crate::Config,
        selector: Arc<RoundRobin>,
        totals: Arc<Totals>,
    ) -> Forwarding {
        Forwarding {
            selector,
            tries: config.tries,
            retry_timeout: config.retry_timeout,
            retry_body_limit: config.retry_body_limit,
            limits: config.limits(),
            forwarding_headers: ForwardingPolicy {
                trusted: config.trusted_proxies.clone(),
                forwarded: config.forwarded,
            },
            totals,
            access_log: config.access_log,
        }
    }
}

/// One worker's awc clients, sharing nothing with other workers' (awc's pool is per client).
pub struct Clients {
    /// For plain requests.
    pub plain: awc::Client,
    /// For WebSocket handshakes, with [`websocket::KeepRefusedUpgrades`]; kept apart so plain
    /// requests do not go through that middleware (a boxed future each).
    pub upgrades: awc::Client,
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
/// trying other endpoints after failures where that is safe (see [`crate::retry`]). Every
/// response, the endpoint's or the balancer's own, carries the request's `X-Request-Id`.
pub async fn forward(
    req: HttpRequest,
    payload: web::Payload,
    forwarding: web::Data<Forwarding>,
    clients: web::Data<Clients>,
) -> HttpResponse {
    let arrived = Instant::now();
    let id = hdr::request_id(req.headers());
    let mut exchange = Some(Exchange::new(
        &req,
        &id,
        &forwarding.totals,
        forwarding.access_log,
        arrived,
    ));
    let forwarded = try_forward(
        &req,
        payload,
        &forwarding,
        &clients,
        &id,
        &mut exchange,
        arrived,
    );
    let res = match forwarded.await {
        Ok(mut res) => {
            res.headers_mut().insert(X_REQUEST_ID, id);
            res
        }
        Err(err) => answer(&req, &id, err),
    };
    // Still here when the response has no body to stream (the balancer's own answers, bodiless
    // statuses, WebSocket handshakes): counted and logged now.
    if let Some(exchange) = exchange.as_mut() {
        exchange.respond(res.status());
        if let BodySize::Sized(n) = res.body().size() {
            exchange.sent(n as usize);
        }
    }
    res
}

async fn try_forward(
    req: &HttpRequest,
    payload: web::Payload,
    forwarding: &Forwarding,
    clients: &Clients,
    id: &HeaderValue,
    exchange: &mut Option<Exchange>,
    arrived: Instant,
) -> Result<HttpResponse, ProxyError> {
    screen::screen(req)?;
    if !req.uri().path().starts_with('/') {
        // `OPTIONS *` (asterisk form) and the like: there is no path to send to an endpoint.
        return Err(ProxyError::Unforwardable(format!(
            "the request target '{}' is not a path",
            req.uri()
        )));
    }
    limits::check_head(req, &forwarding.limits)?;
    if websocket::is_upgrade(req) {
        // Boxed: inline, its state would make every plain request's future 650 bytes larger.
        return Box::pin(websocket::forward(
            req,
            payload,
            forwarding,
            &clients.upgrades,
            id,
            exchange,
            arrived,
        ))
        .await;
    }
    let (mut body, fault) = read_body(payload, req.headers(), forwarding).await?;
    let mut tried: SmallVec<[Arc<Endpoint>; 4]> = SmallVec::new();
    let mut last_error = None;
    loop {
        // One reading of the clock for the pick's stall check and the try's timing.
        let sent_at = Instant::now();
        let Some(pick) = forwarding.selector.select_at(&tried, sent_at) else {
            return Err(nothing_left(forwarding, last_error));
        };
        if let Some(failed) = tried.last() {
            retrying(forwarding, failed);
        }
        let endpoint = pick.endpoint;
        tried.push(endpoint.clone());
        let in_flight = endpoint.start_request();

        // A streamed body may take minutes to upload, and the endpoint owes no answer until
        // it has it all: such a try is not watched for stalls.
        let waiting = body.replayable().then(|| endpoint.watch().wait(sent_at));
        let sent = send(&clients.plain, req, forwarding, id, &endpoint, &mut body).await;
        let res = match sent {
            Ok(res) => {
                answered(&endpoint, waiting, sent_at, res.status(), exchange.as_mut());
                res
            }
            Err(err) => {
                drop(waiting);
                if let Some(exchange) = exchange.as_mut() {
                    exchange.tried(endpoint.addr(), None);
                }
                if let Some(exceeded) = fault.as_ref().and_then(Fault::get) {
                    // The client's body went past a limit while it streamed to the endpoint.
                    return Err(exceeded.into());
                }
                let tries = tried.len() as u32;
                let again = failed_try(
                    forwarding,
                    req,
                    id,
                    &endpoint,
                    tries,
                    arrived,
                    body.replayable(),
                    err,
                )?;
                last_error = Some(again);
                continue;
            }
        };
        return Ok(relay(res, in_flight, tried.len(), exchange.take()));
    }
}

/// The headers of the request to the endpoint, on top of the client's end-to-end ones: the
/// forwarding headers and `Via` ([`ForwardingPolicy::apply`]) and the request id.
pub(crate) fn upstream_headers(
    req: &HttpRequest,
    forwarding: &Forwarding,
    id: &HeaderValue,
    headers: &mut HeaderMap,
) {
    let peer = req.peer_addr().map(|a| a.ip());
    let host = req.headers().get(header::HOST);
    let client = ClientSide::new(peer, host, req.version());
    forwarding.forwarding_headers.apply(client, headers);
    headers.insert(X_REQUEST_ID, id.clone());
}

/// The answer when selection has nothing left to try: the last failure, or 503 when there was
/// no endpoint at all.
pub(crate) fn nothing_left(forwarding: &Forwarding, last_error: Option<ProxyError>) -> ProxyError {
    last_error.unwrap_or_else(|| {
        let rotation = forwarding.selector.load();
        let set = rotation.set();
        if set.without_endpoints().is_empty() && !set.is_empty() {
            ProxyError::AllDrained
        } else {
            ProxyError::NoEndpoints {
                upstreams: set.without_endpoints().to_vec(),
            }
        }
    })
}

/// After try number `tries` of `req` failed on `endpoint` with `err`: counts the failure
/// against the endpoint where it says something about it (passive health), then decides.
/// `Ok(err)`: another endpoint may be tried (`err` is kept as the last failure, and logged);
/// `Err(err)`: answer the client with it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn failed_try(
    forwarding: &Forwarding,
    req: &HttpRequest,
    id: &HeaderValue,
    endpoint: &Endpoint,
    tries: u32,
    arrived: Instant,
    replayable: bool,
    err: SendRequestError,
) -> Result<ProxyError, ProxyError> {
    let failure = Failure::of(&err);
    if failure.counts_against_endpoint() {
        let reason = err.to_string();
        if let Some(flip) = endpoint.report_failure(forwarding.selector.passive_policy(), &reason) {
            health::log_flip(endpoint, "passive", &flip);
        }
        endpoint.stats().record_error(reason);
    }
    let again = tries < forwarding.tries
        && (forwarding.retry_timeout.is_zero() || arrived.elapsed() < forwarding.retry_timeout)
        && retry::may_retry(req.method(), failure, replayable);
    let err = ProxyError::from_send(endpoint, tries, err);
    if !again {
        return Err(err);
    }
    warn!(
        "{} {} (request {}): try {tries} failed, trying another endpoint: {err}",
        req.method(),
        req.uri(),
        id.to_str().unwrap_or("-"),
    );
    Ok(err)
}

/// Counts a retry of a try that failed on `failed`: called when the next try starts (not
/// when it was decided, since no endpoint may be left to try).
pub(crate) fn retrying(forwarding: &Forwarding, failed: &Endpoint) {
    failed.stats().retries.fetch_add(1, Ordering::Relaxed);
    forwarding.totals.retries.fetch_add(1, Ordering::Relaxed);
}

/// Records that `endpoint` answered a try sent at `sent_at` with `status`, now: its stall
/// watch (when the try was `waiting`), its counters, its passive health, and the request's
/// exchange.
pub(crate) fn answered(
    endpoint: &Endpoint,
    waiting: Option<Waiting<'_>>,
    sent_at: Instant,
    status: StatusCode,
    exchange: Option<&mut Exchange>,
) {
    let now = Instant::now();
    let took = now - sent_at;
    if let Some(waiting) = waiting {
        endpoint.answered(waiting, now, took);
    }
    let stats = endpoint.stats();
    stats.tries.add(class_of(status.as_u16()));
    stats.upstream_latency.observe(took);
    succeeded(endpoint);
    if let Some(exchange) = exchange {
        exchange.tried(endpoint.addr(), Some(took));
    }
}

/// Reports a good answer from `endpoint` to its passive health, logging a flip.
pub(crate) fn succeeded(endpoint: &Endpoint) {
    if let Some(flip) = endpoint.report_success() {
        health::log_flip(endpoint, "passive", &flip);
    }
}

/// The balancer's own answer to a request it could not forward: the status, a short text
/// with the reason and the request id, logged with both.
fn answer(req: &HttpRequest, id: &HeaderValue, err: ProxyError) -> HttpResponse {
    let status = err.status_code();
    let id_text = id.to_str().unwrap_or("-");
    warn!(
        "{} {} (request {id_text}): {} {err}",
        req.method(),
        req.uri(),
        status.as_u16()
    );
    let mut res = HttpResponse::build(status);
    res.content_type("text/plain; charset=utf-8")
        .insert_header((X_REQUEST_ID, id.clone()));
    if err.closes_connection() {
        res.force_close();
    }
    res.body(format!("rondo: {err}\nrequest id: {id_text}\n"))
}

/// Reads the request body into memory when it is known to fit in the retry body limit (so a
/// retry can send it again); otherwise streams it, chunked bodies after a first part held in
/// memory. Bodies are guarded by the size limit and the body timeout; the [`Fault`] says which
/// one stopped a body that failed (`None` for requests without a body).
async fn read_body(
    payload: web::Payload,
    headers: &HeaderMap,
    forwarding: &Forwarding,
) -> Result<(RequestBody, Option<Fault>), ProxyError> {
    let limit = forwarding.retry_body_limit;
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    let length = hdr::content_length(headers);
    if length.is_none() && !chunked {
        return Ok((RequestBody::None, None));
    }
    let (mut payload, fault) = GuardedBody::new(payload.into_inner(), &forwarding.limits);
    if let Some(n) = length.filter(|n| *n > limit) {
        return Ok((
            RequestBody::Stream(Some(Box::new(payload)), Some(n)),
            Some(fault),
        ));
    }
    let mut held = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| match fault.get() {
            Some(exceeded) => ProxyError::Limit(exceeded),
            None => ProxyError::ClientBody(e.to_string()),
        })?;
        held.extend_from_slice(&chunk);
        if held.len() as u64 > limit {
            // A chunked body longer than the limit: send what was read, then the rest.
            let first = futures_util::stream::iter([Ok(held.freeze())]);
            let body = RequestBody::Stream(Some(Box::new(first.chain(payload))), None);
            return Ok((body, Some(fault)));
        }
    }
    Ok((RequestBody::Held(held.freeze()), Some(fault)))
}

/// Sends one try of `req` to `endpoint`. Not an `async fn`: the request is built before the
/// first await, and only awc's small sending future is kept in the caller's state (an `async
/// fn` kept room for the 288-byte request too, which took the boxed handler future past the
/// size glibc's per-thread cache serves).
fn send(
    client: &awc::Client,
    req: &HttpRequest,
    forwarding: &Forwarding,
    id: &HeaderValue,
    endpoint: &Endpoint,
    body: &mut RequestBody,
) -> awc::SendClientRequest {
    let mut upstream_req = client
        .request(
            req.method().clone(),
            endpoint.uri(req.uri().path_and_query()),
        )
        // Without this awc would add `Accept-Encoding: identity` to requests that had none.
        .no_decompress();
    let headers = upstream_req.headers_mut();
    copy_end_to_end(req.headers(), headers);
    // The balancer answers `Expect: 100-continue` itself (actix-http sends 100 Continue as soon
    // as the head is read, before rondo's checks), so the endpoint never sees it; passing it on
    // would cost a round trip more.
    headers.remove(header::EXPECT);
    upstream_headers(req, forwarding, id, headers);
    match body {
        RequestBody::None => upstream_req.send(),
        RequestBody::Held(bytes) => upstream_req.send_body(bytes.clone()),
        RequestBody::Stream(stream, length) => {
            let stream = stream
                .take()
                .expect("a streamed body is sent once: never retried");
            match *length {
                Some(len) => upstream_req.send_body(SizedStream::new(len, stream)),
                None => upstream_req.send_body(BodyStream::new(stream)),
            }
        }
    }
}

/// Builds the client's response from the endpoint's: status and end-to-end headers, and the
/// body streamed with the endpoint counted in flight until it ends.
fn relay(
    mut res: awc::ClientResponse,
    in_flight: InFlight,
    tries: usize,
    mut exchange: Option<Exchange>,
) -> HttpResponse {
    let status = res.status();
    if let Some(exchange) = exchange.as_mut() {
        exchange.respond(status);
    }
    let mut response = if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        // These never have a body (RFC 9112 §6.3); a streamed one would make actix frame one.
        drop(in_flight);
        drop(exchange);
        HttpResponse::new(status)
    } else {
        let body = Counted {
            inner: res.take_payload(),
            _in_flight: in_flight,
            exchange,
        };
        match response_body_length(res.headers()) {
            Some(len) => {
                HttpResponse::with_body(status, SizedStream::new(len, body)).map_into_boxed_body()
            }
            None => HttpResponse::with_body(status, BodyStream::new(body)).map_into_boxed_body(),
        }
    };
    // The endpoint's header map becomes the client's response's (which is empty here), its
    // hop-by-hop headers taken out: no header is copied.
    keep_end_to_end(res.headers_mut());
    let headers = response.headers_mut();
    debug_assert!(headers.is_empty(), "{headers:?}");
    std::mem::swap(headers, res.headers_mut());
    hdr::add_via(headers, res.version());
    if tries > 1 {
        headers.insert(X_RONDO_TRIES, HeaderValue::from(tries));
    }
    response
}

/// A response body that keeps its endpoint counted in flight, and its request's [`Exchange`]
/// open, until it is done or dropped.
struct Counted<S> {
    inner: S,
    _in_flight: InFlight,
    exchange: Option<Exchange>,
}

impl<S, E> Stream for Counted<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let (Poll::Ready(Some(Ok(chunk))), Some(exchange)) = (&polled, &mut self.exchange) {
            exchange.sent(chunk.len());
        }
        polled
    }
}

/// The response's `Content-Length`, unless it is also chunked (then the length is ignored).
pub fn response_body_length(headers: &HeaderMap) -> Option<u64> {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return None;
    }
    hdr::content_length(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::headers::test_map as map;

    /// A request with two Content-Length headers has no length we trust.
    #[test]
    fn two_content_lengths_give_no_length() {
        assert_eq!(
            hdr::content_length(&map(&[("content-length", "3")])),
            Some(3)
        );
        assert_eq!(
            hdr::content_length(&map(&[("content-length", "3"), ("content-length", "4")])),
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
