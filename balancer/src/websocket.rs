//! WebSocket proxying: the upgrade handshake with an endpoint, then frames relayed both ways.
//!
//! A request is a WebSocket upgrade when it is a `GET` whose `Connection` names `upgrade` and
//! whose `Upgrade` names `websocket` ([`is_upgrade`]). [`forward`] picks an endpoint as plain
//! requests do (round robin, passive health, connect failures tried again on another endpoint)
//! and opens the upstream WebSocket with the worker's awc client. The end-to-end request
//! headers and `X-Forwarded-*` go along as for plain requests, and so does the client's
//! `Sec-WebSocket-Protocol`; awc makes its own `Sec-WebSocket-Key` and `-Version`, and
//! `Sec-WebSocket-Extensions` is dropped (neither side of the balancer speaks
//! permessage-deflate). Only when the endpoint has answered `101` does the balancer complete
//! the client's handshake, with the subprotocol the endpoint chose. An endpoint that answers
//! anything else has its status, headers and body relayed to the client.
//!
//! Then every frame is relayed as it comes, in both directions: text, binary, continuation,
//! ping, pong, and close with its code and reason. When one side closes, its Close goes to the
//! other side, whose answering Close is awaited for at most [`CLOSE_TIMEOUT`]; when one side
//! breaks off or breaks the protocol, the other gets a Close (`1001`, or `1002`/`1009`) that says
//! why. The endpoint counts one in flight for the whole life of the WebSocket.
//!
//! Time limits: awc's response timeout bounds only the handshake; the client connection's
//! request timeout and keep-alive do not apply while the WebSocket is open, so an idle WebSocket
//! stays open. A graceful shutdown waits for open WebSockets at most the shutdown timeout.

use std::cell::RefCell;
use std::fmt;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_codec::Framed;
use actix_http::h1::{ClientCodec, MessageType};
use actix_http::ws::{self, CloseCode, CloseReason, Frame, Message, ProtocolError};
use actix_web::dev::Service;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use awc::error::{SendRequestError, WsClientError};
use awc::{BoxedSocket, ConnectRequest, ConnectResponse};
use bytestring::ByteString;
use futures_util::future::{select, Either, LocalBoxFuture};
use futures_util::{SinkExt, StreamExt};
use log::debug;
use smallvec::SmallVec;

use crate::access::Exchange;
use crate::endpoint::{Endpoint, InFlight};
use crate::proxy::{self, Forwarding, ProxyError};

/// The largest frame either side may send through the balancer: 16 MiB. awc's WebSocket
/// client and actix-ws both default to 64 KiB, too small for many applications. A larger frame
/// closes the WebSocket with `1009` (message too big).
pub const MAX_FRAME_SIZE: usize = 16 << 20;

/// How long one side's answering Close is awaited after the other side closed or went away.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Request headers that belong to one WebSocket handshake, never passed on: awc makes its own
/// key and version, and the balancer offers no extensions (no permessage-deflate).
const HANDSHAKE_ONLY: [header::HeaderName; 4] = [
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_EXTENSIONS,
    header::SEC_WEBSOCKET_ACCEPT,
];

/// Whether `req` asks for a WebSocket: `GET`, `Connection` naming `upgrade` and `Upgrade`
/// naming `websocket`, both case-insensitive. Any other `Upgrade` (`h2c`, …) is not one: it is
/// served as a plain request, its `Upgrade` and `Connection` dropped as hop-by-hop.
pub fn is_upgrade(req: &HttpRequest) -> bool {
    is_upgrade_head(req.method(), req.headers())
}

pub(crate) fn is_upgrade_head(method: &Method, headers: &HeaderMap) -> bool {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    method == Method::GET && connection_upgrade && upgrade_websocket(headers)
}

/// Whether an `Upgrade` header is `websocket` by actix-http's rule (the whole value, trimmed,
/// any case): the rule under which actix-http stops framing the body by its length and hands
/// the connection's remaining bytes over as a stream.
pub(crate) fn upgrade_websocket(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::UPGRADE)
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

/// The headers of the upstream handshake: the client's end-to-end headers (its
/// `Sec-WebSocket-Protocol` included) without the handshake's own, plus the forwarding headers
/// and the request id as on every forwarded request.
fn upstream_headers(req: &HttpRequest, forwarding: &Forwarding, id: &HeaderValue) -> HeaderMap {
    let mut headers = HeaderMap::new();
    proxy::copy_end_to_end(req.headers(), &mut headers);
    for name in &HANDSHAKE_ONLY {
        headers.remove(name);
    }
    proxy::upstream_headers(req, forwarding, id, &mut headers);
    headers
}

/// The headers of the endpoint's `101` that go to the client: end-to-end ones except those the
/// balancer's own handshake sets (`Sec-WebSocket-Accept`, `-Protocol`, `-Extensions`).
fn switching_headers(from: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    proxy::copy_end_to_end(from, &mut headers);
    for name in [
        header::SEC_WEBSOCKET_ACCEPT,
        header::SEC_WEBSOCKET_PROTOCOL,
        header::SEC_WEBSOCKET_EXTENSIONS,
    ] {
        headers.remove(name);
    }
    headers
}

/// Proxies one WebSocket upgrade request (see the module doc). Answers 400 to a request that
/// is not a valid handshake (no key, another version), and 502/503/504 as plain requests when
/// no endpoint answers.
pub async fn forward(
    req: &HttpRequest,
    payload: web::Payload,
    forwarding: &Forwarding,
    client: &awc::Client,
    id: &HeaderValue,
    exchange: &mut Option<Exchange>,
    arrived: Instant,
) -> Result<HttpResponse, ProxyError> {
    if let Err(err) = ws::verify_handshake(req.head()) {
        return Err(ProxyError::Unforwardable(format!(
            "not a valid WebSocket handshake: {err}"
        )));
    }
    let headers = upstream_headers(req, forwarding, id);
    let mut tried: SmallVec<[Arc<Endpoint>; 4]> = SmallVec::new();
    let mut last_error = None;
    loop {
        let Some(pick) = forwarding.selector.select(&tried) else {
            return Err(proxy::nothing_left(forwarding, last_error));
        };
        if let Some(failed) = tried.last() {
            proxy::retrying(forwarding, failed);
        }
        let endpoint = pick.endpoint;
        tried.push(endpoint.clone());
        let in_flight = endpoint.start_request();
        let sent_at = Instant::now();
        let mut waiting = Some(endpoint.watch().wait(sent_at));
        let connected = connect(client, req, &endpoint, &headers).await;
        // The endpoint's answer to the handshake, for the access log, its counters and its
        // stall watch.
        let mut answered = |status: StatusCode| {
            proxy::answered(
                &endpoint,
                waiting.take(),
                sent_at,
                status,
                exchange.as_mut(),
            );
        };
        let err = match connected {
            Ok((res, upstream)) => {
                answered(res.status());
                return accept(req, payload, res.headers(), upstream, in_flight, &endpoint);
            }
            Err(WsClientError::SendRequest(SendRequestError::Custom(err, _)))
                if err.is::<Refused>() =>
            {
                let refused = err.downcast::<Refused>().expect("checked with is()");
                answered(refused.head.status);
                return Ok(refused.relay(in_flight));
            }
            Err(WsClientError::SendRequest(err)) => {
                if let Some(exchange) = exchange.as_mut() {
                    exchange.tried(endpoint.addr(), None);
                }
                err
            }
            Err(err) => {
                return Err(ProxyError::BadUpgrade {
                    endpoint: endpoint.addr(),
                    upstream: endpoint.upstream().to_string(),
                    reason: err.to_string(),
                });
            }
        };
        let tries = tried.len() as u32;
        last_error = Some(proxy::failed_try(
            forwarding, req, id, &endpoint, tries, arrived, true, err,
        )?);
    }
}

type Upstream = Framed<BoxedSocket, ws::Codec>;

/// Opens the WebSocket to `endpoint`.
async fn connect(
    client: &awc::Client,
    req: &HttpRequest,
    endpoint: &Endpoint,
    headers: &HeaderMap,
) -> Result<(awc::ClientResponse, Upstream), WsClientError> {
    let mut upstream_req = client
        .ws(endpoint.uri(req.uri().path_and_query()))
        .max_frame_size(MAX_FRAME_SIZE);
    for (name, value) in headers {
        upstream_req = upstream_req.header(name.clone(), value.clone());
    }
    upstream_req.connect().await
}

/// Completes the client's handshake with what the endpoint's `101` said, and relays frames
/// until the WebSocket ends, on the worker's executor.
fn accept(
    req: &HttpRequest,
    payload: web::Payload,
    switched: &HeaderMap,
    upstream: Upstream,
    in_flight: InFlight,
    endpoint: &Endpoint,
) -> Result<HttpResponse, ProxyError> {
    let chosen = switched
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok());
    let (mut response, session, messages) =
        actix_ws::handle_with_protocols(req, payload, chosen.as_slice())
            .map_err(|e| ProxyError::Unforwardable(e.to_string()))?;
    for (name, value) in &switching_headers(switched) {
        response.headers_mut().append(name.clone(), value.clone());
    }
    let label = format!("WebSocket {} via {}", req.uri(), endpoint.addr());
    debug!("{label}: open");
    actix_web::rt::spawn(async move {
        relay(session, messages.max_frame_size(MAX_FRAME_SIZE), upstream).await;
        drop(in_flight);
        debug!("{label}: closed");
    });
    Ok(response)
}

/// Relays frames both ways until both sides have closed, or one has and the other has not
/// answered within [`CLOSE_TIMEOUT`].
async fn relay(session: actix_ws::Session, messages: actix_ws::MessageStream, upstream: Upstream) {
    let (sink, stream) = upstream.split();
    // The endpoint's Close, once it sent one: echoed to it if the client goes without answering.
    let endpoint_close = Rc::new(RefCell::new(None));
    let to_endpoint = pin!(client_to_endpoint(
        messages,
        sink,
        session.clone(),
        endpoint_close.clone()
    ));
    let to_client = pin!(endpoint_to_client(stream, session, endpoint_close));
    match select(to_endpoint, to_client).await {
        Either::Left(((), rest)) => {
            let _ = actix_web::rt::time::timeout(CLOSE_TIMEOUT, rest).await;
        }
        Either::Right(((), rest)) => {
            let _ = actix_web::rt::time::timeout(CLOSE_TIMEOUT, rest).await;
        }
    }
}

/// A Close frame with `code` and the balancer's `reason`.
fn close(code: CloseCode, reason: &str) -> Option<CloseReason> {
    Some(CloseReason {
        code,
        description: Some(format!("rondo: {reason}")),
    })
}

/// The close code for a side that broke the protocol.
fn code_for(err: &ProtocolError) -> CloseCode {
    match err {
        ProtocolError::Overflow => CloseCode::Size,
        _ => CloseCode::Protocol,
    }
}

/// Client to endpoint, until the client's Close is passed on or the client is gone.
async fn client_to_endpoint(
    mut messages: actix_ws::MessageStream,
    mut sink: futures_util::stream::SplitSink<Upstream, Message>,
    session: actix_ws::Session,
    endpoint_close: Rc<RefCell<Option<Option<CloseReason>>>>,
) {
    loop {
        let message = match messages.next().await {
            Some(Ok(Message::Nop)) => continue,
            Some(Ok(message)) => message,
            Some(Err(err)) => {
                let _ = session.close(close(code_for(&err), &err.to_string())).await;
                let reason = close(CloseCode::Away, "the client broke the WebSocket protocol");
                let _ = sink.send(Message::Close(reason)).await;
                return;
            }
            None => {
                // The client went away; when the endpoint had closed, its Close is answered.
                let reason = endpoint_close
                    .borrow_mut()
                    .take()
                    .unwrap_or_else(|| close(CloseCode::Away, "the client went away"));
                let _ = sink.send(Message::Close(reason)).await;
                return;
            }
        };
        let closing = matches!(message, Message::Close(_));
        if sink.send(message).await.is_err() || closing {
            return;
        }
    }
}

/// Endpoint to client, until the endpoint's Close is passed on or the endpoint is gone.
async fn endpoint_to_client(
    mut stream: futures_util::stream::SplitStream<Upstream>,
    mut session: actix_ws::Session,
    endpoint_close: Rc<RefCell<Option<Option<CloseReason>>>>,
) {
    loop {
        let sent = match stream.next().await {
            Some(Ok(Frame::Text(bytes))) => match ByteString::try_from(bytes) {
                Ok(text) => session.text(text).await,
                Err(_) => {
                    let reason = close(
                        CloseCode::Invalid,
                        "the endpoint sent text that is not UTF-8",
                    );
                    let _ = session.close(reason).await;
                    return;
                }
            },
            Some(Ok(Frame::Binary(bytes))) => session.binary(bytes).await,
            Some(Ok(Frame::Continuation(item))) => session.continuation(item).await,
            Some(Ok(Frame::Ping(bytes))) => session.ping(&bytes).await,
            Some(Ok(Frame::Pong(bytes))) => session.pong(&bytes).await,
            Some(Ok(Frame::Close(reason))) => {
                *endpoint_close.borrow_mut() = Some(reason.clone());
                let _ = session.close(reason).await;
                return;
            }
            Some(Err(err)) => {
                let reason = format!("the endpoint broke the WebSocket protocol: {err}");
                let _ = session.close(close(CloseCode::Away, &reason)).await;
                return;
            }
            None => {
                let reason = "the endpoint closed the connection without a Close";
                let _ = session.close(close(CloseCode::Away, reason)).await;
                return;
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

/// An endpoint's answer to an upgrade that was not `101`: its head, and the connection to
/// read the body from. Carried out of awc's connect as a [`SendRequestError::Custom`], since
/// awc's WebSocket client would report only the status.
struct Refused {
    head: actix_http::ResponseHead,
    framed: Framed<BoxedSocket, ClientCodec>,
}

impl fmt::Debug for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refused")
            .field("status", &self.head.status)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the endpoint answered the upgrade with {}",
            self.head.status
        )
    }
}

impl std::error::Error for Refused {}

impl Refused {
    /// The client's response: the endpoint's status, end-to-end headers and body (streamed,
    /// with the endpoint counted in flight until it ends).
    fn relay(self: Box<Self>, in_flight: InFlight) -> HttpResponse {
        let Refused { head, framed } = *self;
        let mut response = HttpResponse::build(head.status);
        for (name, value) in &switching_headers(&head.headers) {
            response.append_header((name.clone(), value.clone()));
        }
        if framed.codec_ref().message_type() == MessageType::None {
            return response.finish();
        }
        if !head.headers.contains_key(header::TRANSFER_ENCODING) {
            if let Some(length) = head.headers.get(header::CONTENT_LENGTH) {
                // `streaming` keeps a Content-Length it is given.
                response.insert_header((header::CONTENT_LENGTH, length.clone()));
            }
        }
        let body = framed
            .into_map_codec(ClientCodec::into_payload_codec)
            .take_while(|chunk| std::future::ready(!matches!(chunk, Ok(None))))
            .map(move |chunk| {
                let _counted = &in_flight;
                chunk.map(Option::unwrap_or_default)
            });
        response.streaming(body)
    }
}

/// awc middleware that keeps an endpoint's non-`101` answer to a WebSocket handshake whole, as
/// a [`Refused`], so the client gets its status, headers and body (awc would keep only the
/// status). Plain requests pass through untouched.
pub struct KeepRefusedUpgrades;

impl<S> awc::middleware::Transform<S, ConnectRequest> for KeepRefusedUpgrades
where
    S: Service<ConnectRequest, Response = ConnectResponse, Error = SendRequestError> + 'static,
{
    type Transform = KeepRefused<S>;

    fn new_transform(self, service: S) -> Self::Transform {
        KeepRefused {
            service: Rc::new(service),
        }
    }
}

/// The service [`KeepRefusedUpgrades`] makes.
pub struct KeepRefused<S> {
    service: Rc<S>,
}

impl<S> Service<ConnectRequest> for KeepRefused<S>
where
    S: Service<ConnectRequest, Response = ConnectResponse, Error = SendRequestError> + 'static,
{
    type Response = ConnectResponse;
    type Error = SendRequestError;
    type Future = LocalBoxFuture<'static, Result<ConnectResponse, SendRequestError>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ConnectRequest) -> Self::Future {
        let service = self.service.clone();
        Box::pin(async move {
            match service.call(req).await? {
                ConnectResponse::Tunnel(head, framed)
                    if head.status != StatusCode::SWITCHING_PROTOCOLS =>
                {
                    let refused = Refused { head, framed };
                    let note = refused.to_string();
                    Err(SendRequestError::Custom(Box::new(refused), Box::new(note)))
                }
                other => Ok(other),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;
    use actix_web::test::TestRequest;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                header::HeaderName::from_static(k),
                HeaderValue::from_static(v),
            );
        }
        m
    }

    /// Upgrades are GET with `Connection: upgrade` (among other tokens) and an `Upgrade` of
    /// exactly `websocket`, in any case, as actix-http frames them; other methods, other or
    /// several protocols and a missing token are not.
    #[test]
    fn upgrade_detection_needs_get_both_tokens_and_websocket() {
        let yes = [
            headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]),
            headers(&[
                ("connection", "keep-alive, UPGRADE"),
                ("upgrade", "WebSocket"),
            ]),
            headers(&[
                ("connection", "keep-alive"),
                ("connection", "upgrade"),
                ("upgrade", " websocket "),
            ]),
        ];
        for h in &yes {
            assert!(is_upgrade_head(&Method::GET, h), "{h:?}");
            assert!(!is_upgrade_head(&Method::POST, h), "{h:?}");
        }
        let no = [
            headers(&[("connection", "upgrade"), ("upgrade", "h2c")]),
            headers(&[("connection", "upgrade"), ("upgrade", "h2c, websocket")]),
            headers(&[("connection", "keep-alive"), ("upgrade", "websocket")]),
            headers(&[("connection", "upgrade")]),
            headers(&[("connection", "upgrades"), ("upgrade", "websockets")]),
            headers(&[]),
        ];
        for h in &no {
            assert!(!is_upgrade_head(&Method::GET, h), "{h:?}");
        }
    }

    /// The upstream handshake carries the client's end-to-end headers and subprotocols, not its
    /// key, version, extensions or hop-by-hop headers, and adds the forwarding headers and id.
    #[test]
    fn upstream_handshake_keeps_end_to_end_headers_and_protocols_only() {
        let req = TestRequest::get()
            .uri("/ws")
            .insert_header(("host", "example.test"))
            .insert_header(("connection", "Upgrade, x-hop"))
            .insert_header(("x-hop", "1"))
            .insert_header(("upgrade", "websocket"))
            .insert_header(("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="))
            .insert_header(("sec-websocket-version", "13"))
            .insert_header(("sec-websocket-extensions", "permessage-deflate"))
            .insert_header(("sec-websocket-protocol", "chat, echo"))
            .insert_header(("origin", "http://example.test"))
            .insert_header(("cookie", "a=1"))
            .peer_addr("192.0.2.7:5000".parse().unwrap())
            .to_http_request();
        let config = crate::Config::with_upstreams(vec![]);
        let selector = Arc::new(crate::selection::RoundRobin::new(config.passive_policy()));
        let forwarding = Forwarding::new(&config, selector, Default::default());
        let id = HeaderValue::from_static("req-1");
        let out = upstream_headers(&req, &forwarding, &id);
        let mut names: Vec<_> = out.keys().map(|k| k.as_str().to_string()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "cookie",
                "host",
                "origin",
                "sec-websocket-protocol",
                "via",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-port",
                "x-forwarded-proto",
                "x-real-ip",
                "x-request-id"
            ]
        );
        assert_eq!(out.get("sec-websocket-protocol").unwrap(), "chat, echo");
        assert_eq!(out.get("x-forwarded-for").unwrap(), "192.0.2.7");
    }

    /// The endpoint's 101 gives the client its end-to-end headers, but not the handshake
    /// headers the balancer's own 101 sets.
    #[test]
    fn switching_headers_leave_the_handshake_to_the_balancer() {
        let out = switching_headers(&headers(&[
            ("upgrade", "websocket"),
            ("connection", "upgrade"),
            ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            ("sec-websocket-protocol", "echo"),
            ("x-served-by", "b1"),
            ("set-cookie", "s=1"),
        ]));
        let mut names: Vec<_> = out.keys().map(|k| k.as_str().to_string()).collect();
        names.sort();
        assert_eq!(names, ["set-cookie", "x-served-by"]);
    }
}
