//! Fuzz entry points. They live in the library, not in `fuzz/`, so that an input `cargo fuzz`
//! found crashing replays as an ordinary `cargo test` (`balancer/tests/fuzz_regressions.rs`
//! replays every file in `fuzz/regressions/<target>/` and `fuzz/seeds/<target>/`).
//!
//! Each entry takes any bytes and asserts the invariants of the balancer code it drives; a
//! panic is a bug found (in rondo, or in the actix-http parser it relies on):
//! - [`request_head`]: what a client sends, decoded as pipelined HTTP/1 requests by
//!   actix-http's server codec (the one actix-web serves with); every request goes through
//!   [`request_steps`].
//! - [`response_head`]: what an endpoint answers, decoded as HTTP/1 responses by actix-http's
//!   client codec (the one awc reads with); every response goes through [`response_steps`].
//! - [`config_values`]: one string given to every setting, through clap as `rondo` parses it,
//!   and to the upstream parsers directly: bad values are errors, never panics.
//!
//! A new header function joins the fuzzing with one line in [`request_steps`] or
//! [`response_steps`].

use std::net::{Ipv4Addr, SocketAddr};

use actix_codec::Decoder;
use actix_http::h1::{ClientCodec, Codec, Message, MessageType};
use actix_http::{Request, ServiceConfig};
use actix_web::http::header::{self, HeaderMap, HeaderName};
use actix_web::test::TestRequest;
use actix_web::HttpRequest;
use bytes::BytesMut;
use clap::{CommandFactory, FromArgMatches, Parser};

use crate::config::{self, Config, Healthcheck, Networks, Upstream, UpstreamList};
use crate::headers::{self, ClientSide, ForwardingPolicy};
use crate::proxy;

/// The address every fuzzed request comes from (TEST-NET-3, RFC 5737).
pub const PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)), 40000);

/// Decodes `data` as a client's connection: request after request, bodies included, until the
/// bytes run out or actix-http rejects them (the server would then close the connection).
/// Every request goes through [`request_steps`]; a body framed by `Content-Length` must be as
/// long as the balancer thinks it is.
pub fn request_head(data: &[u8]) {
    let mut codec = Codec::new(service_config());
    let mut buf = BytesMut::from(data);
    // The length the balancer gives the request whose body is being read, and the bytes read.
    let mut body: Option<(Option<u64>, u64)> = None;
    while let Ok(Some(message)) = codec.decode(&mut buf) {
        match message {
            Message::Item(req) => {
                let req = http_request(req);
                request_steps(&req);
                body = Some((headers::content_length(req.headers()), 0));
            }
            Message::Chunk(Some(chunk)) => {
                if let Some((_, read)) = &mut body {
                    *read += chunk.len() as u64;
                }
            }
            Message::Chunk(None) => {
                if let Some((Some(length), read)) = body.take() {
                    assert_eq!(read, length, "the body read differs from Content-Length");
                }
            }
        }
    }
}

/// Every step the balancer takes on a client's request head, each with its invariants.
pub fn request_steps(req: &HttpRequest) {
    let mut upstream = checked_copy(req.headers());
    checked_length(req.headers(), headers::content_length(req.headers()));
    checked_forwarded(req, &mut upstream);
    checked_request_id(req);
    // Screening and the head limits decide without panicking, whatever the head holds.
    let _ = crate::screen::check(req.head());
    let _ = crate::limits::check_head(req, &LIMITS);
}

/// Decodes `data` as what an endpoint sends on one connection: response after response,
/// bodies included, until the bytes run out or actix-http rejects them. Every response head
/// goes through [`response_steps`].
pub fn response_head(data: &[u8]) {
    let mut codec = ClientCodec::new(service_config());
    let mut buf = BytesMut::from(data);
    while let Ok(Some(head)) = codec.decode(&mut buf) {
        let length = response_steps(head.headers());
        if codec.message_type() == MessageType::None {
            continue;
        }
        let mut payload = codec.into_payload_codec();
        let mut read = 0u64;
        loop {
            match payload.decode(&mut buf) {
                Ok(Some(Some(chunk))) => read += chunk.len() as u64,
                Ok(Some(None)) => break,
                Ok(None) | Err(_) => return,
            }
        }
        if let Some(length) = length {
            assert_eq!(read, length, "the body read differs from Content-Length");
        }
        codec = payload.into_message_codec();
    }
}

/// Every step the balancer takes on an endpoint's response head, each with its invariants;
/// returns the length the body is relayed with.
pub fn response_steps(headers: &HeaderMap) -> Option<u64> {
    checked_copy(headers);
    let length = proxy::response_body_length(headers);
    checked_length(headers, length);
    if length.is_some() {
        assert!(!headers.contains_key(header::TRANSFER_ENCODING));
    }
    length
}

/// Gives `data` (as UTF-8, invalid sequences replaced) to every setting of `rondo` through
/// clap, as `rondo --SETTING=data` parses it, to `rondo healthcheck`'s, and to the upstream
/// parsers. Bad values are errors, never panics; the first error goes through
/// [`config::explain`], which must name the setting.
pub fn config_values(data: &[u8]) {
    thread_local! {
        // Building clap's command runs its consistency checks: once per thread, not per input.
        static COMMAND: clap::Command = {
            let mut command = Config::command();
            command.build();
            command
        };
    }
    let value = String::from_utf8_lossy(data);
    let mut explained = false;
    COMMAND.with(|command| {
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if matches!(long, "help" | "version") {
                continue;
            }
            let mut argv = vec!["rondo".to_string(), format!("--{long}={value}")];
            if long != "upstreams" {
                argv.push("--upstreams=a:1".into());
            }
            let parsed = command
                .clone()
                .try_get_matches_from(argv)
                .and_then(|matches| Config::from_arg_matches(&matches));
            if let (Err(err), false) = (parsed, explained) {
                let message = config::explain(&err);
                assert!(message.contains(long), "'{message}' does not name --{long}");
                explained = true;
            }
        }
    });
    for long in ["port", "listen"] {
        let argv = ["rondo healthcheck".to_string(), format!("--{long}={value}")];
        let _ = Healthcheck::try_parse_from(argv);
    }
    // What parses prints as something that parses back to the same.
    if let Ok(upstream) = value.parse::<Upstream>() {
        assert_eq!(upstream.to_string().parse(), Ok(upstream));
    }
    if let Ok(list) = value.parse::<UpstreamList>() {
        let printed: Vec<String> = list.0.iter().map(Upstream::to_string).collect();
        assert_eq!(printed.join(",").parse(), Ok(list));
    }
}

/// actix-http's default configuration, as the server and awc decode with.
///
/// Making one starts a clock task with `spawn_local`, which panics outside a `LocalSet`: it
/// is made once per thread inside one that is never run (decoding does not read the clock).
fn service_config() -> ServiceConfig {
    thread_local! {
        static CONFIG: (ServiceConfig, tokio::task::LocalSet) = {
            let local = tokio::task::LocalSet::new();
            let config = {
                let _inside = local.enter();
                ServiceConfig::default()
            };
            (config, local)
        };
    }
    CONFIG.with(|(config, _)| config.clone())
}

/// The `HttpRequest` actix-web would hand the balancer for `req`, from [`PEER`].
fn http_request(req: Request) -> HttpRequest {
    let (head, _payload) = req.into_parts();
    let mut service = TestRequest::default().to_srv_request();
    *service.head_mut() = head.clone();
    service.head_mut().peer_addr = Some(PEER);
    service.into_parts().0
}

/// Copies `from` the way the balancer does and checks the copy: no hop-by-hop header, none
/// that `Connection` names, no `Content-Length`; every other header kept with its values in
/// order, and nothing added.
fn checked_copy(from: &HeaderMap) -> HeaderMap {
    let mut to = HeaderMap::new();
    proxy::copy_end_to_end(from, &mut to);
    let mut kept = from.clone();
    proxy::keep_end_to_end(&mut kept);
    for name in from.keys() {
        assert!(
            kept.get_all(name).eq(to.get_all(name)),
            "{name}: taken out in place {:?}, copied {:?}",
            kept.get_all(name).collect::<Vec<_>>(),
            to.get_all(name).collect::<Vec<_>>()
        );
    }
    let named = connection_options(from);
    let stays_behind = |name: &HeaderName| {
        HOP_BY_HOP.contains(&name.as_str())
            || *name == header::CONTENT_LENGTH
            || named.iter().any(|n| n == name.as_str())
    };
    let mut kept = 0;
    for name in from.keys() {
        let copied: Vec<_> = to.get_all(name).collect();
        if stays_behind(name) {
            assert!(copied.is_empty(), "{name} was copied: {copied:?}");
        } else {
            let values: Vec<_> = from.get_all(name).collect();
            assert_eq!(copied, values, "{name} was not copied as it came");
            kept += values.len();
        }
    }
    assert_eq!(to.len(), kept, "the copy has headers the message did not");
    to
}

/// RFC 9110 §7.6.1's connection-specific fields, plus `Keep-Alive` and `Proxy-Connection`:
/// written out again here rather than taken from `proxy`, so the check is independent.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The field names a message's `Connection` headers list, lowercased (RFC 9110 §7.6.1:
/// `#connection-option`, a comma-separated list with optional whitespace).
fn connection_options(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|t| String::from_utf8_lossy(t.trim_ascii()).to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// `length` is what the balancer made of `headers`: a length only from exactly one
/// `Content-Length` holding exactly that number, never from two different ones.
fn checked_length(headers: &HeaderMap, length: Option<u64>) {
    let values: Vec<_> = headers.get_all(header::CONTENT_LENGTH).collect();
    if values.iter().any(|v| *v != values[0]) {
        assert_eq!(length, None, "two different lengths gave one: {values:?}");
    }
    if let Some(length) = length {
        assert_eq!(values.len(), 1, "a length from {values:?}");
        let digits = values[0].as_bytes().trim_ascii();
        assert_eq!(
            std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse().ok()),
            Some(length)
        );
    }
}

/// Adds the forwarding headers to `upstream` (the request's copied headers) as for a client
/// that is not a trusted proxy, and checks them: one `X-Forwarded-For` that ends with the
/// client's address, `X-Forwarded-Proto`, and `X-Forwarded-Host` equal to `Host` (none when
/// there is no `Host`), `Via` ending with rondo's hop.
fn checked_forwarded(req: &HttpRequest, upstream: &mut HeaderMap) {
    ForwardingPolicy {
        trusted: Networks::default(),
        forwarded: true,
    }
    .apply(
        ClientSide::new(
            req.peer_addr().map(|a| a.ip()),
            req.headers().get(header::HOST),
            req.version(),
        ),
        upstream,
    );
    let chain: Vec<_> = upstream.get_all("x-forwarded-for").collect();
    assert_eq!(chain.len(), 1, "X-Forwarded-For is one header: {chain:?}");
    let last = chain[0].to_str().ok().and_then(|c| c.rsplit(", ").next());
    assert_eq!(last, Some(PEER.ip().to_string().as_str()));
    assert!(upstream.contains_key("x-forwarded-proto"));
    assert_eq!(
        upstream.get("x-forwarded-host"),
        req.headers().get(header::HOST)
    );
    let via: Vec<_> = upstream.get_all(header::VIA).collect();
    assert_eq!(via.len(), 1, "Via is one header: {via:?}");
    assert!(via[0].as_bytes().ends_with(b" rondo"), "{via:?}");
    let forwarded: Vec<_> = upstream.get_all(header::FORWARDED).collect();
    assert_eq!(forwarded.len(), 1, "Forwarded is one header: {forwarded:?}");
}

/// The request id is the client's when sane, else 32 hex digits; always a visible token.
fn checked_request_id(req: &HttpRequest) {
    let id = headers::request_id(req.headers());
    let bytes = id.as_bytes();
    assert!(!bytes.is_empty() && bytes.len() <= headers::MAX_REQUEST_ID_LEN);
    assert!(bytes.iter().all(u8::is_ascii_graphic), "{id:?}");
}

/// Limits small enough that fuzzed heads cross them.
const LIMITS: crate::limits::Limits = crate::limits::Limits {
    max_body_size: 1000,
    max_header_size: 512,
    max_uri_length: 256,
    body_timeout: std::time::Duration::from_secs(1),
};
