//! The headers the balancer changes on the way through, and why.
//!
//! - Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection, so they stay behind in both
//!   directions, with every header the message's own `Connection` header names.
//! - Forwarding headers tell the endpoint who the client was. A client can write anything in
//!   them, so they are believed only from the proxies configured as trusted
//!   (`RONDO_TRUSTED_PROXIES`, CIDR blocks): from those, `X-Forwarded-For` and `Forwarded` are
//!   appended to and the other `X-Forwarded-*` and `X-Real-IP` kept; from everyone else they
//!   are replaced (as Traefik does with its `trustedIPs`), and `X-Forwarded-Ssl`, `-Scheme` and
//!   `-Prefix` dropped.
//! - `Via` (RFC 9110 §7.6.3) is appended to in both directions, as a proxy must.
//! - `X-Request-Id` follows a request through every log: a client's own id is kept when it is
//!   a sane token, otherwise the balancer makes one (32 hex digits, like nginx's
//!   `$request_id`); the endpoint and the client both see it.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::net::IpAddr;

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::Version;
use bytes::Bytes;
use smallvec::SmallVec;

use crate::config::Networks;

/// Whether `name` describes one connection, never the message: RFC 9110 §7.6.1, plus the
/// non-standard `Keep-Alive` and `Proxy-Connection`. (A match on the name's text: one length
/// switch and a comparison, where a list of `HeaderName`s took seven comparisons a header.)
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Other headers that claim something about the client or its scheme, read by some frameworks
/// (Rack reads `X-Forwarded-Ssl` before `X-Forwarded-Proto`): dropped from untrusted clients.
const CLIENT_CLAIMS: [HeaderName; 3] = [
    HeaderName::from_static("x-forwarded-ssl"),
    HeaderName::from_static("x-forwarded-scheme"),
    HeaderName::from_static("x-forwarded-prefix"),
];

/// Longest client-sent request id kept; a longer one is replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Copies every end-to-end header of `from` into `to`, in order: hop-by-hop headers (the
/// fixed list and every header the message's `Connection` header names) and the framing
/// (`Content-Length`, set again from the body) stay behind.
pub fn copy_end_to_end(from: &HeaderMap, to: &mut HeaderMap) {
    let named = connection_named(from);
    for (name, value) in from.iter() {
        if !stays_behind(name, &named) {
            to.append(name.clone(), value.clone());
        }
    }
}

/// Takes out of `headers` what [`copy_end_to_end`] leaves behind, so that the map itself can be
/// forwarded: a response's headers move to the client's response instead of being copied
/// (one hashed removal for its `Content-Length`, where a copy took a hashed insert and two
/// reference counts for every header).
pub fn keep_end_to_end(headers: &mut HeaderMap) {
    let named = connection_named(headers);
    let leaving: SmallVec<[HeaderName; 4]> = headers
        .keys()
        .filter(|name| stays_behind(name, &named))
        .cloned()
        .collect();
    drop(named);
    for name in leaving {
        headers.remove(name);
    }
}

/// The names a message's `Connection` header lists. Read once per message, not once per
/// header; as bytes, so a value with a non-ASCII byte still names its other tokens.
fn connection_named(headers: &HeaderMap) -> SmallVec<[&[u8]; 4]> {
    headers
        .get_all(header::CONNECTION)
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
        .collect()
}

/// Whether the header `name` stays behind: hop-by-hop, named by `Connection` (`named`), or
/// `Content-Length`.
fn stays_behind(name: &HeaderName, named: &[&[u8]]) -> bool {
    is_hop_by_hop(name)
        || *name == header::CONTENT_LENGTH
        || named
            .iter()
            .any(|t| name.as_str().as_bytes().eq_ignore_ascii_case(t))
}

/// The message's `Content-Length`, when it has exactly one valid one.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(header::CONTENT_LENGTH);
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()?.trim().parse().ok()
}

/// A header map of `pairs`, in order (for tests).
#[cfg(test)]
pub(crate) fn test_map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in pairs {
        m.append(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    m
}

/// The request's id: the client's `X-Request-Id` when it is 1 to [`MAX_REQUEST_ID_LEN`]
/// visible ASCII characters, otherwise a new one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    match headers.get(X_REQUEST_ID) {
        Some(id) if is_sane_id(id.as_bytes()) => id.clone(),
        _ => new_request_id(),
    }
}

fn is_sane_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN && id.iter().all(|b| b.is_ascii_graphic())
}

/// 128 random bits as 32 lowercase hex digits.
///
/// The digits are kept in one shared allocation (`Bytes::from_owner`): the id is cloned into
/// the request to the endpoint and the client's response, and a value copied into a `Vec`
/// would allocate again on its first clone.
pub fn new_request_id() -> HeaderValue {
    HeaderValue::from_maybe_shared(Bytes::from_owner(hex32(fastrand::u128(..))))
        .expect("hex digits are a valid header value")
}

/// `bits` as 32 lowercase hex digits, as `format!("{bits:032x}")` without the formatter.
fn hex32(bits: u128) -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    for (i, digit) in id.iter_mut().enumerate() {
        *digit = HEX[((bits >> (124 - 4 * i)) & 0xf) as usize];
    }
    id
}

/// What the balancer knows of the client connection a request came in on.
#[derive(Debug, Clone)]
pub struct ClientSide<'a> {
    /// The peer's address; `None` only for connections without one (never over TCP).
    pub peer: Option<IpAddr>,
    /// The peer's address as forwarding headers write it ([`peer_value`]).
    pub peer_value: Option<HeaderValue>,
    /// The request's `Host` header.
    pub host: Option<&'a HeaderValue>,
    /// The HTTP version the client spoke.
    pub version: Version,
}

impl<'a> ClientSide<'a> {
    /// A client at `peer`, its address formatted here.
    pub fn new(peer: Option<IpAddr>, host: Option<&'a HeaderValue>, version: Version) -> Self {
        ClientSide {
            peer,
            peer_value: peer.and_then(peer_value),
            host,
            version,
        }
    }
}

/// A client's address as forwarding headers write it: IPv4 clients of a dual-stack listener
/// (`::ffff:a.b.c.d`) as IPv4.
///
/// Each thread keeps the values it made last in a small table, one per slot, the slot chosen
/// by the address: requests from a client it has just seen (a keep-alive client, or any of the
/// connections Docker's proxy opens from one address) cost a comparison and a reference count,
/// not formatting and an allocation, and no connection keeps a value of its own.
pub fn peer_value(peer: IpAddr) -> Option<HeaderValue> {
    const SLOTS: usize = 64;
    thread_local! {
        static RECENT: RefCell<[Option<(IpAddr, HeaderValue)>; SLOTS]> =
            const { RefCell::new([const { None }; SLOTS]) };
    }
    let folded = match peer {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            (bits as u64) ^ ((bits >> 64) as u64)
        }
    };
    // Fibonacci hashing: the top 6 bits of the product pick one of the 64 slots.
    let slot = (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize;
    RECENT.with_borrow_mut(|recent| match &recent[slot] {
        Some((ip, value)) if *ip == peer => Some(value.clone()),
        _ => {
            let value = HeaderValue::from_str(&peer.to_canonical().to_string()).ok()?;
            recent[slot] = Some((peer, value.clone()));
            Some(value)
        }
    })
}

/// How forwarding headers are written: whom to believe, and whether to add `Forwarded`.
#[derive(Debug, Clone, Default)]
pub struct ForwardingPolicy {
    /// Proxies whose forwarding headers are kept and appended to.
    pub trusted: Networks,
    /// Whether to send an RFC 7239 `Forwarded` header too.
    pub forwarded: bool,
}

/// `X-Forwarded-Port` when `Host` names no port.
const PORT_80: HeaderValue = HeaderValue::from_static("80");
const PROTO_HTTP: HeaderValue = HeaderValue::from_static("http");

impl ForwardingPolicy {
    /// Whether a request from `peer` comes from a trusted proxy.
    pub fn trusts(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|ip| self.trusted.contains(ip))
    }

    /// Sets the forwarding headers and `Via` in `headers`, the request about to go to an
    /// endpoint, which already holds the client's end-to-end headers.
    ///
    /// Runs on every request: headers the client did not send are not looked up or removed
    /// one by one (each lookup hashes the name), and the peer's address comes formatted.
    pub fn apply(&self, client: ClientSide<'_>, headers: &mut HeaderMap) {
        let trusted = self.trusts(client.peer);
        // Which of the headers a client may claim things in it sent: usually none.
        let mut sent = Claims::default();
        for name in headers.keys() {
            sent.note(name);
        }
        if !trusted && sent.other {
            for name in &CLIENT_CLAIMS {
                headers.remove(name);
            }
        }
        let peer = client.peer_value.clone();
        // X-Real-IP: the client's address, as nginx's `proxy_set_header X-Real-IP $remote_addr`.
        if !(trusted && sent.real_ip) {
            set_value(headers, X_REAL_IP, peer.clone(), sent.real_ip);
        }

        // X-Forwarded-For: one comma-separated list, as nginx's $proxy_add_x_forwarded_for.
        if trusted && sent.forwarded_for {
            let mut chain = String::new();
            for v in headers.get_all(X_FORWARDED_FOR) {
                if let Ok(v) = v.to_str() {
                    push_list(&mut chain, v);
                }
            }
            if let Some(peer) = peer.as_ref().and_then(|p| p.to_str().ok()) {
                push_list(&mut chain, peer);
            }
            set_or_remove(headers, X_FORWARDED_FOR, &chain);
        } else {
            set_value(headers, X_FORWARDED_FOR, peer, sent.forwarded_for);
        }

        if !(trusted && sent.proto) {
            headers.insert(X_FORWARDED_PROTO, PROTO_HTTP);
        }
        if !(trusted && sent.host) {
            set_value(headers, X_FORWARDED_HOST, client.host.cloned(), sent.host);
        }
        if !(trusted && sent.port) {
            let port = match client.host.and_then(host_port) {
                None | Some(80) => PORT_80,
                Some(port) => port_value(port),
            };
            headers.insert(X_FORWARDED_PORT, port);
        }

        if (trusted && sent.forwarded) || self.forwarded {
            let mut forwarded = String::new();
            if trusted {
                for v in headers.get_all(header::FORWARDED) {
                    if let Ok(v) = v.to_str() {
                        push_list(&mut forwarded, v);
                    }
                }
            }
            if self.forwarded {
                let peer = client.peer_value.as_ref().and_then(|p| p.to_str().ok());
                push_list(&mut forwarded, &forwarded_element(&client, peer));
            }
            set_or_remove(headers, header::FORWARDED, &forwarded);
        } else if sent.forwarded {
            headers.remove(header::FORWARDED);
        }

        add_via(headers, client.version);
    }
}

/// Which forwarding headers a request carries, found in one pass over its names.
#[derive(Debug, Default)]
struct Claims {
    real_ip: bool,
    forwarded_for: bool,
    proto: bool,
    host: bool,
    port: bool,
    forwarded: bool,
    /// One of [`CLIENT_CLAIMS`].
    other: bool,
}

impl Claims {
    fn note(&mut self, name: &HeaderName) {
        let name = name.as_str();
        // Every name here starts with `x-` or `f`: most headers are passed over at once.
        if !(name.starts_with("x-") || name.starts_with('f')) {
            return;
        }
        match name {
            "x-real-ip" => self.real_ip = true,
            "x-forwarded-for" => self.forwarded_for = true,
            "x-forwarded-proto" => self.proto = true,
            "x-forwarded-host" => self.host = true,
            "x-forwarded-port" => self.port = true,
            "forwarded" => self.forwarded = true,
            _ => self.other |= CLIENT_CLAIMS.iter().any(|c| c.as_str() == name),
        }
    }
}

/// Sets `name` to `value`, or removes it (when `present`) for no value.
fn set_value(headers: &mut HeaderMap, name: HeaderName, value: Option<HeaderValue>, present: bool) {
    match value {
        Some(value) => {
            headers.insert(name, value);
        }
        None if present => {
            headers.remove(name);
        }
        None => {}
    }
}

/// Appends this hop, `1.1 rondo` (or the version spoken), to the message's `Via`.
pub fn add_via(headers: &mut HeaderMap, version: Version) {
    // Constants, so that the values are checked when compiling: `from_static` called at run
    // time checks every byte of its text, every time.
    const VIA_09: HeaderValue = HeaderValue::from_static("0.9 rondo");
    const VIA_10: HeaderValue = HeaderValue::from_static("1.0 rondo");
    const VIA_11: HeaderValue = HeaderValue::from_static("1.1 rondo");
    const VIA_2: HeaderValue = HeaderValue::from_static("2 rondo");
    const VIA_3: HeaderValue = HeaderValue::from_static("3 rondo");
    let hop = match version {
        Version::HTTP_09 => VIA_09,
        Version::HTTP_10 => VIA_10,
        Version::HTTP_2 => VIA_2,
        Version::HTTP_3 => VIA_3,
        _ => VIA_11,
    };
    // One hashed insert when the message has no `Via` yet (the usual case); the values it
    // replaced, when there were some, are put back in front of this hop.
    let mut earlier = headers.insert(header::VIA, hop.clone()).peekable();
    if earlier.peek().is_none() {
        return;
    }
    let mut via = String::new();
    for v in earlier {
        if let Ok(v) = v.to_str() {
            push_list(&mut via, v);
        }
    }
    push_list(&mut via, hop.to_str().expect("an ASCII constant"));
    set_or_remove(headers, header::VIA, &via);
}

/// One `Forwarded` element: `for=…;host=…;proto=http`, values quoted where RFC 7239 needs it.
fn forwarded_element(client: &ClientSide<'_>, peer: Option<&str>) -> String {
    let mut element = String::new();
    match (client.peer.map(|ip| ip.to_canonical()), peer) {
        (Some(IpAddr::V6(_)), Some(p)) => {
            let _ = write!(element, "for=\"[{p}]\"");
        }
        (_, Some(p)) => {
            let _ = write!(element, "for={p}");
        }
        _ => element.push_str("for=unknown"),
    }
    if let Some(host) = client.host.and_then(|h| h.to_str().ok()) {
        element.push_str(";host=");
        push_token_or_quoted(&mut element, host);
    }
    element.push_str(";proto=http");
    element
}

/// RFC 9110 `token` characters.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn push_token_or_quoted(out: &mut String, value: &str) {
    if !value.is_empty() && value.chars().all(is_tchar) {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// The port of a `Host` value (`example.com:8080`, `[::1]:8080`), when it names one: the
/// digits after the last `:` (leading zeros allowed), at most 65535.
fn host_port(host: &HeaderValue) -> Option<u16> {
    let host = host.as_bytes();
    let colon = host.iter().rposition(|b| *b == b':')?;
    let (before, digits) = (&host[..colon], &host[colon + 1..]);
    if before.contains(&b':') && !before.ends_with(b"]") {
        // An IPv6 literal without brackets and without a port.
        return None;
    }
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u16, |port, d| {
        let digit = d.checked_sub(b'0').filter(|d| *d <= 9)?;
        port.checked_mul(10)?.checked_add(u16::from(digit))
    })
}

/// `port` as a header value. Each thread keeps the last one it made: the clients of one
/// listener name the same port, so a request costs a comparison and a reference count, not
/// formatting and an allocation.
fn port_value(port: u16) -> HeaderValue {
    thread_local! {
        static LAST: RefCell<Option<(u16, HeaderValue)>> = const { RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((p, value)) if *p == port => value.clone(),
        _ => {
            let value = HeaderValue::from_maybe_shared(Bytes::from_owner(port.to_string()))
                .expect("digits are a valid header value");
            *last = Some((port, value.clone()));
            value
        }
    })
}

fn push_list(list: &mut String, item: &str) {
    let item = item.trim();
    if item.is_empty() {
        return;
    }
    if !list.is_empty() {
        list.push_str(", ");
    }
    list.push_str(item);
}

/// Sets `name` to `value`, or removes it when `value` is empty or not a valid header value.
fn set_or_remove(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(v) if !value.is_empty() => {
            headers.insert(name, v);
        }
        _ => {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::test_map as map;

    fn get<'a>(m: &'a HeaderMap, name: &str) -> Option<&'a str> {
        m.get(name).map(|v| v.to_str().unwrap())
    }

    /// Every (name, value) of `m`, sorted by name, each name's values in the map's order.
    fn pairs(m: &HeaderMap) -> Vec<(String, Vec<u8>)> {
        let mut names: Vec<_> = m.keys().collect();
        names.sort_by_key(|n| n.as_str());
        names
            .into_iter()
            .flat_map(|n| m.get_all(n).map(|v| (n.to_string(), v.as_bytes().to_vec())))
            .collect()
    }

    fn policy(trusted: &str, forwarded: bool) -> ForwardingPolicy {
        ForwardingPolicy {
            trusted: Networks(
                trusted
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().unwrap())
                    .collect(),
            ),
            forwarded,
        }
    }

    fn client<'a>(peer: &str, host: Option<&'a HeaderValue>) -> ClientSide<'a> {
        ClientSide::new(Some(peer.parse().unwrap()), host, Version::HTTP_11)
    }

    /// Hop-by-hop headers, and the ones `Connection` names, are dropped; others are kept in order.
    /// Taking them out of the map in place leaves the same headers as copying.
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
        let mut kept = from.clone();
        keep_end_to_end(&mut kept);
        assert_eq!(pairs(&kept), pairs(&to), "taken out in place as copied");
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

    /// A `Connection` value with a non-ASCII byte still takes the headers it names along.
    #[test]
    fn connection_with_non_ascii_bytes_still_names_headers() {
        let mut from = map(&[("x-secret", "1"), ("x-kept", "2")]);
        from.insert(
            header::CONNECTION,
            HeaderValue::from_bytes(b"x-secret, \xe9t\xe9").unwrap(),
        );
        let mut to = HeaderMap::new();
        copy_end_to_end(&from, &mut to);
        assert!(to.get("x-secret").is_none());
        assert_eq!(get(&to, "x-kept"), Some("2"));
        keep_end_to_end(&mut from);
        assert_eq!(pairs(&from), pairs(&to));
    }

    /// From an untrusted client every forwarding header it sent is replaced by the balancer's.
    #[test]
    fn untrusted_clients_forwarding_headers_are_replaced() {
        let host = HeaderValue::from_static("shop.example:8443");
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-port", "1"),
            ("forwarded", "for=6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("x-forwarded-ssl", "on"),
        ]);
        policy("", false).apply(client("192.0.2.7", Some(&host)), &mut h);
        assert_eq!(get(&h, "x-real-ip"), Some("192.0.2.7"));
        assert_eq!(get(&h, "x-forwarded-ssl"), None);
        assert_eq!(get(&h, "x-forwarded-for"), Some("192.0.2.7"));
        assert_eq!(get(&h, "x-forwarded-proto"), Some("http"));
        assert_eq!(get(&h, "x-forwarded-host"), Some("shop.example:8443"));
        assert_eq!(get(&h, "x-forwarded-port"), Some("8443"));
        assert_eq!(get(&h, "forwarded"), None);
        assert_eq!(get(&h, "via"), Some("1.1 rondo"));
    }

    /// From a trusted proxy the chain is appended to and its other forwarding headers kept.
    /// A trusted proxy that sent only some forwarding headers: those are kept, the others
    /// made; its `Forwarded` is kept with RONDO_FORWARDED off, and an untrusted client's is
    /// replaced by rondo's own element with it on.
    #[test]
    fn trusted_proxies_partial_headers_and_forwarded_either_way() {
        let host = HeaderValue::from_static("shop.example");
        let mut h = map(&[
            ("x-real-ip", "203.0.113.9"),
            ("x-forwarded-host", "edge.example"),
            ("x-forwarded-ssl", "on"),
            ("forwarded", "for=203.0.113.9"),
        ]);
        policy("10.0.0.0/8", false).apply(client("10.9.8.7", Some(&host)), &mut h);
        assert_eq!(get(&h, "x-real-ip"), Some("203.0.113.9"));
        assert_eq!(get(&h, "x-forwarded-host"), Some("edge.example"));
        assert_eq!(get(&h, "x-forwarded-ssl"), Some("on"));
        assert_eq!(get(&h, "x-forwarded-for"), Some("10.9.8.7"));
        assert_eq!(get(&h, "x-forwarded-proto"), Some("http"));
        assert_eq!(get(&h, "x-forwarded-port"), Some("80"));
        assert_eq!(get(&h, "forwarded"), Some("for=203.0.113.9"));

        let mut h = map(&[("forwarded", "for=6.6.6.6")]);
        policy("", true).apply(client("192.0.2.7", Some(&host)), &mut h);
        assert_eq!(
            get(&h, "forwarded"),
            Some("for=192.0.2.7;host=shop.example;proto=http")
        );
    }

    /// Without a peer address (never over TCP) no client address is claimed.
    #[test]
    fn no_peer_sets_no_address() {
        let mut h = map(&[("x-real-ip", "6.6.6.6"), ("x-forwarded-for", "6.6.6.6")]);
        policy("", false).apply(ClientSide::new(None, None, Version::HTTP_11), &mut h);
        assert_eq!(get(&h, "x-real-ip"), None);
        assert_eq!(get(&h, "x-forwarded-for"), None);
        assert_eq!(get(&h, "x-forwarded-port"), Some("80"));
    }

    #[test]
    fn trusted_proxies_headers_are_appended_to() {
        let host = HeaderValue::from_static("shop.example");
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.9, 10.1.2.3"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-port", "443"),
            ("forwarded", "for=203.0.113.9;proto=https"),
            ("via", "1.1 edge"),
        ]);
        policy("10.0.0.0/8", true).apply(client("10.9.8.7", Some(&host)), &mut h);
        assert_eq!(
            get(&h, "x-forwarded-for"),
            Some("203.0.113.9, 10.1.2.3, 10.9.8.7")
        );
        assert_eq!(get(&h, "x-forwarded-proto"), Some("https"));
        assert_eq!(get(&h, "x-forwarded-port"), Some("443"));
        assert_eq!(get(&h, "x-forwarded-host"), Some("shop.example"));
        assert_eq!(
            get(&h, "forwarded"),
            Some("for=203.0.113.9;proto=https, for=10.9.8.7;host=shop.example;proto=http")
        );
        assert_eq!(get(&h, "via"), Some("1.1 edge, 1.1 rondo"));
    }

    /// The per-thread table of formatted addresses gives each address its own value, also
    /// when many addresses share a slot, and the same value again for a repeated address.
    #[test]
    fn peer_values_stay_right_for_many_addresses() {
        let addresses: Vec<IpAddr> = (0..300u32)
            .map(|i| IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]))
            .chain((0..300u16).map(|i| IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, i])))
            .collect();
        for _ in 0..2 {
            for ip in &addresses {
                assert_eq!(
                    peer_value(*ip).unwrap().to_str().unwrap(),
                    ip.to_string(),
                    "{ip}"
                );
                assert_eq!(peer_value(*ip).unwrap(), ip.to_string().as_str());
            }
        }
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(peer_value(mapped).unwrap(), "192.0.2.1");
    }

    /// Without a `Host`, an untrusted client's `X-Forwarded-Host` is dropped, not kept.
    #[test]
    fn no_host_drops_the_clients_forwarded_host() {
        let mut h = map(&[("x-forwarded-host", "evil.example")]);
        policy("", false).apply(client("192.0.2.7", None), &mut h);
        assert_eq!(get(&h, "x-forwarded-host"), None);
        assert_eq!(get(&h, "x-forwarded-port"), Some("80"));
    }

    /// `Forwarded` quotes IPv6 addresses and hosts with a port, as RFC 7239 §6 requires.
    #[test]
    fn forwarded_quotes_ipv6_and_ports() {
        let host = HeaderValue::from_static("[::1]:8080");
        let mut h = HeaderMap::new();
        policy("", true).apply(client("2001:db8::5", Some(&host)), &mut h);
        assert_eq!(
            get(&h, "forwarded"),
            Some("for=\"[2001:db8::5]\";host=\"[::1]:8080\";proto=http")
        );
        assert_eq!(get(&h, "x-forwarded-port"), Some("8080"));
        assert_eq!(get(&h, "x-forwarded-for"), Some("2001:db8::5"));
    }

    /// An IPv4 client seen as an IPv4-mapped IPv6 address is written as IPv4.
    #[test]
    fn mapped_ipv4_peers_are_written_as_ipv4() {
        let mut h = HeaderMap::new();
        policy("", true).apply(client("::ffff:172.18.0.5", None), &mut h);
        assert_eq!(get(&h, "x-forwarded-for"), Some("172.18.0.5"));
        assert_eq!(get(&h, "forwarded"), Some("for=172.18.0.5;proto=http"));
    }

    /// An IPv4 client seen as an IPv4-mapped IPv6 address matches an IPv4 network.
    #[test]
    fn mapped_ipv4_peers_match_ipv4_networks() {
        let p = policy("172.16.0.0/12", false);
        assert!(p.trusts(Some("::ffff:172.18.0.5".parse().unwrap())));
        assert!(!p.trusts(Some("172.32.0.1".parse().unwrap())));
        assert!(!p.trusts(None));
    }

    /// `Via` gets this hop at the end: alone on a message without one, after every earlier
    /// value, in order, on one that has several.
    #[test]
    fn via_gets_this_hop_after_the_earlier_ones() {
        let mut none = HeaderMap::new();
        add_via(&mut none, Version::HTTP_11);
        assert_eq!(pairs(&none), [("via".into(), b"1.1 rondo".to_vec())]);

        let mut two = map(&[("via", "1.0 a"), ("via", "1.1 b, 2 c"), ("x-other", "1")]);
        add_via(&mut two, Version::HTTP_10);
        let vias: Vec<_> = two.get_all(header::VIA).collect();
        assert_eq!(vias, ["1.0 a, 1.1 b, 2 c, 1.0 rondo"]);
        assert_eq!(get(&two, "x-other"), Some("1"));
    }

    /// A Host without a port gives port 80; HTTP/1.0 requests get a `1.0` Via entry.
    #[test]
    fn defaults_without_port_and_version() {
        let host = HeaderValue::from_static("example.com");
        let mut h = HeaderMap::new();
        let mut c = client("127.0.0.1", Some(&host));
        c.version = Version::HTTP_10;
        policy("", false).apply(c, &mut h);
        assert_eq!(get(&h, "x-forwarded-port"), Some("80"));
        assert_eq!(get(&h, "via"), Some("1.0 rondo"));
        assert_eq!(host_port(&HeaderValue::from_static("::1")), None);
    }

    /// A Host's port is the digits after the last colon, at most 65535; anything else names
    /// no port.
    #[test]
    fn host_ports_are_read_strictly() {
        for (host, port) in [
            ("example.com:8080", Some(8080)),
            ("[::1]:8080", Some(8080)),
            ("127.0.0.1:65535", Some(65535)),
            ("example.com:00080", Some(80)),
            ("example.com:000443", Some(443)),
            ("example.com", None),
            ("::1", None),
            ("[::1]", None),
            ("example.com:", None),
            ("example.com:65536", None),
            ("example.com:123456", None),
            ("example.com:+80", None),
            ("example.com:8o", None),
        ] {
            assert_eq!(host_port(&HeaderValue::from_static(host)), port, "{host}");
        }
    }

    /// `X-Forwarded-Port` names the client's port, whichever ports a thread saw before.
    #[test]
    fn forwarded_port_follows_the_host() {
        for host in ["a:8080", "a:8080", "a:9090", "a:8080", "a"] {
            let host = HeaderValue::from_static(host);
            let mut h = HeaderMap::new();
            policy("", false).apply(client("127.0.0.1", Some(&host)), &mut h);
            let want = host_port(&host).unwrap_or(80).to_string();
            assert_eq!(get(&h, "x-forwarded-port"), Some(want.as_str()));
        }
    }

    /// A sane client id is kept; a missing, empty, long or spaced one is replaced by 32 hex digits.
    #[test]
    fn request_ids_are_kept_or_made() {
        let kept = request_id(&map(&[("x-request-id", "abc-123")]));
        assert_eq!(kept, "abc-123");
        let long: &'static str = Box::leak("a".repeat(MAX_REQUEST_ID_LEN + 1).into_boxed_str());
        for bad in [
            vec![],
            vec![("x-request-id", "")],
            vec![("x-request-id", "a b")],
            vec![("x-request-id", long)],
        ] {
            let id = request_id(&map(&bad));
            let id = id.to_str().unwrap();
            assert_eq!(id.len(), 32, "{bad:?}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        }
        assert_ne!(new_request_id(), new_request_id());
        for bits in [0, 1, 0xfedc_ba98_7654_3210, u128::MAX, fastrand::u128(..)] {
            assert_eq!(hex32(bits), format!("{bits:032x}").as_bytes());
        }
    }
}
