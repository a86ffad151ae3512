//! The vendored actix-http's changes (vendor/README.md) that rondo's other tests cannot see.
//!
//! - As awc uses it: every request awc sends makes a `ClientCodec::default()`, which now shares
//!   one configuration per thread, with no date-updating task (it started one per request),
//!   and writes no `Date` into requests; it needs no runtime at all.
//! - A decoded request head no longer shares the read buffer, and its header map keeps one
//!   value per name inline: every value must still be there, in order.
//! - A connection starts each request with a 1,000-byte read buffer, grown when a read fills
//!   it: heads and bodies larger than that, whole or in pieces, must arrive whole.
//! - The client codec gives a sent head's header table back for the thread's next request
//!   head: that head must start empty, whatever the one before carried.
//! - The client codec writes the request line without `core::fmt`, and leaves room in a
//!   decoded response head's header map for the two headers a proxy adds.

use std::time::Duration;

use actix_codec::Encoder;
use actix_http::body::BodySize;
use actix_http::h1::{ClientCodec, Message};
use actix_http::{HttpMessage as _, RequestHead, RequestHeadType};
use bytes::BytesMut;

/// A request head encoded by a new default client codec, with `headers` set.
fn encode_request(headers: &[(&'static str, &'static str)]) -> String {
    let mut head = RequestHead::default();
    for (name, value) in headers {
        head.headers.insert(
            actix_http::header::HeaderName::from_static(name),
            actix_http::header::HeaderValue::from_static(value),
        );
    }
    let mut buf = BytesMut::new();
    ClientCodec::default()
        .encode(
            Message::Item((RequestHeadType::Owned(head), BodySize::None)),
            &mut buf,
        )
        .expect("a request head encodes");
    String::from_utf8_lossy(&buf).into_owned()
}

/// A request gets no `Date` of the codec's making (responses do); one the caller set is kept.
/// The client codec needs no runtime: its configuration runs no date task (one per thread, or
/// one per request before, woke the runtime twice a second for a date no request carries), so
/// this runs outside any; a codec that started one would panic here.
#[test]
fn client_codec_writes_no_date_on_requests_and_needs_no_runtime() {
    let plain = encode_request(&[]);
    assert!(
        !plain.to_ascii_lowercase().contains("\r\ndate:"),
        "{plain:?}"
    );
    let dated = encode_request(&[("date", "Tue, 01 Dec 2026 06:00:00 GMT")]);
    assert!(
        dated.contains("date: Tue, 01 Dec 2026 06:00:00 GMT\r\n"),
        "{dated:?}"
    );
    // And inside a runtime, also a second one on the same thread after the first was dropped
    // (as between tests), the thread's one configuration still serves.
    for _ in 0..2 {
        let plain = actix_rt::System::new().block_on(async { encode_request(&[]) });
        assert!(plain.starts_with("GET / HTTP/1.1\r\n"), "{plain:?}");
    }
}

/// Decodes one request head from `buf` with actix-http's server codec (its configuration
/// starts a date task, hence the runtime).
fn decode_request(buf: &mut BytesMut) -> actix_http::Request {
    use actix_codec::Decoder;
    actix_rt::System::new().block_on(async {
        let mut codec = actix_http::h1::Codec::new(actix_http::ServiceConfig::default());
        match codec.decode(buf).expect("the head parses") {
            Some(Message::Item(req)) => req,
            other => panic!("expected a request head, got {other:?}"),
        }
    })
}

/// A decoded request head does not share the connection's read buffer: actix-web keeps up to
/// 128 finished requests per thread for reuse, and a shared head kept that many 8 KiB buffers
/// alive. The buffer can take the next request in place while the head lives on.
#[test]
fn a_decoded_head_leaves_the_read_buffer_to_itself() {
    let mut buf = BytesMut::with_capacity(8192);
    buf.extend_from_slice(b"GET /a/path?q=1 HTTP/1.1\r\nHost: example\r\nX-Long: ");
    buf.extend_from_slice(&[b'v'; 200]);
    buf.extend_from_slice(b"\r\n\r\n");
    let req = decode_request(&mut buf);
    assert!(buf.is_empty(), "the decoder left {} bytes", buf.len());
    assert!(
        buf.try_reclaim(8000),
        "the read buffer is still shared with the decoded head"
    );
    assert_eq!(req.uri().path(), "/a/path");
    assert_eq!(req.headers().get("host").unwrap(), "example");
    assert_eq!(req.headers().get("x-long").unwrap().len(), 200);
}

/// Header values are kept one inline per name in the vendored header map; a name with several
/// values keeps them all, in order, next to single-valued names.
#[test]
fn repeated_request_headers_keep_every_value_in_order() {
    let mut buf = BytesMut::from(
        &b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nAccept: */*\r\nX-A: 2\r\nX-A: 3\r\n\
           Cookie: c=1\r\nX-A: 4\r\nX-A: 5\r\n\r\n"[..],
    );
    let req = decode_request(&mut buf);
    let values: Vec<&str> = req
        .headers()
        .get_all("x-a")
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(values, ["1", "2", "3", "4", "5"]);
    assert_eq!(req.headers().get("accept").unwrap(), "*/*");
    assert_eq!(req.headers().get("cookie").unwrap(), "c=1");
    assert_eq!(req.headers().len(), 8, "{:?}", req.headers());
}

/// The names most heads carry are recognised in any case, in requests and responses alike, as
/// the standard names they are; names of the same length that differ are other names.
#[test]
fn common_header_names_are_known_in_any_case() {
    use actix_codec::Decoder;
    use actix_http::header;
    let mut buf = BytesMut::from(
        &b"POST / HTTP/1.1\r\nhOST: h\r\nCONTENT-length: 2\r\nuser-AGENT: u\r\nAccept: a\r\n\
           Connection: keep-alive\r\nContent-Type: t\r\nHist: 1\r\nDost: 2\r\nAccepts: 3\r\n\
           user_agent: 4\r\nContent-Lengtx: 5\r\nconnectioN: keep-alive\r\n\r\nok"[..],
    );
    let req = decode_request(&mut buf);
    let h = req.headers();
    assert_eq!(h.get(header::HOST).unwrap(), "h");
    assert_eq!(h.get(header::CONTENT_LENGTH).unwrap(), "2");
    assert_eq!(h.get(header::USER_AGENT).unwrap(), "u");
    assert_eq!(h.get(header::ACCEPT).unwrap(), "a");
    assert_eq!(h.get(header::CONTENT_TYPE).unwrap(), "t");
    assert_eq!(h.get_all(header::CONNECTION).count(), 2);
    for (name, value) in [
        ("hist", "1"),
        ("dost", "2"),
        ("accepts", "3"),
        ("user_agent", "4"),
        ("content-lengtx", "5"),
    ] {
        assert_eq!(h.get(name).unwrap(), value, "{name}");
    }
    assert_eq!(h.len(), 12, "{h:?}");

    actix_rt::System::new().block_on(async {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nSERVER: s\r\nDate: d\r\ntransfer-ENCODING: chunked\r\n\
               Serves: 1\r\n\r\n"[..],
        );
        let head = ClientCodec::default()
            .decode(&mut buf)
            .expect("a response head")
            .expect("a whole head");
        assert_eq!(head.headers.get(header::SERVER).unwrap(), "s");
        assert_eq!(head.headers.get(header::DATE).unwrap(), "d");
        assert_eq!(
            head.headers.get(header::TRANSFER_ENCODING).unwrap(),
            "chunked"
        );
        assert_eq!(head.headers.get("serves").unwrap(), "1");
    });
}

/// Reads one response with a `Content-Length` from `stream`, leaving what follows it unread in
/// `pending`; returns the status and the body.
async fn read_sized_response(
    stream: &mut tokio::net::TcpStream,
    pending: &mut Vec<u8>,
) -> (u16, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
            let status = head[9..12].parse().expect("a status code");
            let length: usize =
                rondo_tests::raw_header(&format!("{head}\r\n\r\n"), "content-length")
                    .expect("a content-length")
                    .parse()
                    .unwrap();
            while pending.len() < end + 4 + length {
                let n = stream.read(&mut chunk).await.expect("read the body");
                assert!(n > 0, "the connection closed inside a body");
                pending.extend_from_slice(&chunk[..n]);
            }
            let body = pending[end + 4..end + 4 + length].to_vec();
            pending.drain(..end + 4 + length);
            return (status, body);
        }
        let n = stream.read(&mut chunk).await.expect("read a head");
        assert!(
            n > 0,
            "the connection closed before a response: {pending:?}"
        );
        pending.extend_from_slice(&chunk[..n]);
    }
}

/// On one keep-alive connection through rondo: a small request, a head of 6,000 bytes (in one
/// write, then in pieces across the first buffer's end), a 100 KiB body, and two pipelined
/// requests. Each reaches the backend whole.
#[actix_web::test]
async fn requests_larger_than_the_first_read_buffer_arrive_whole() {
    use sha2::{Digest, Sha256};
    use tokio::io::AsyncWriteExt;

    let backend = rondo_tests::start_backend("Server 1", "server1");
    let lb = rondo_tests::start_balancer(
        &rondo_tests::config_for(&[backend.addr.to_string()]),
        balancer::discovery::DnsResolver,
    )
    .await;
    let mut stream = tokio::net::TcpStream::connect(lb.addrs()[0]).await.unwrap();
    let mut pending = Vec::new();
    let echo =
        |body: &[u8]| -> serde_json::Value { serde_json::from_slice(body).expect("echo JSON") };
    let header = |v: &serde_json::Value, name: &str| -> Option<String> {
        v["headers"].as_array().unwrap().iter().find_map(|h| {
            (h[0].as_str().unwrap() == name).then(|| h[1].as_str().unwrap().to_owned())
        })
    };

    stream
        .write_all(b"GET /echo HTTP/1.1\r\nHost: rondo\r\n\r\n")
        .await
        .unwrap();
    let (status, body) = read_sized_response(&mut stream, &mut pending).await;
    assert_eq!(status, 200);
    assert_eq!(echo(&body)["path"], "/echo");

    let big = "b".repeat(6000);
    let request = format!("GET /echo?big HTTP/1.1\r\nHost: rondo\r\nX-Big: {big}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let (status, body) = read_sized_response(&mut stream, &mut pending).await;
    assert_eq!(status, 200);
    assert_eq!(header(&echo(&body), "x-big").as_deref(), Some(big.as_str()));

    for piece in request.as_bytes().chunks(700) {
        stream.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = read_sized_response(&mut stream, &mut pending).await;
    assert_eq!(status, 200);
    assert_eq!(header(&echo(&body), "x-big").map(|v| v.len()), Some(6000));

    let upload: Vec<u8> = (0..100 * 1024).map(|i| (i % 251) as u8).collect();
    let head = format!(
        "POST /echo HTTP/1.1\r\nHost: rondo\r\nContent-Length: {}\r\n\r\n",
        upload.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&upload).await.unwrap();
    let (status, body) = read_sized_response(&mut stream, &mut pending).await;
    assert_eq!(status, 200);
    let v = echo(&body);
    assert_eq!(v["body_length"], upload.len());
    assert_eq!(v["body_sha256"], hex::encode(Sha256::digest(&upload)));

    stream
        .write_all(b"GET /echo?one HTTP/1.1\r\nHost: rondo\r\n\r\nGET /echo?two HTTP/1.1\r\nHost: rondo\r\n\r\n")
        .await
        .unwrap();
    for query in ["one", "two"] {
        let (status, body) = read_sized_response(&mut stream, &mut pending).await;
        assert_eq!(status, 200);
        assert_eq!(echo(&body)["query"], query);
    }
}

/// Encodes `head` as awc sends it, with the thread's default client codec.
fn encode_head(head: RequestHead) -> String {
    let mut buf = BytesMut::new();
    ClientCodec::default()
        .encode(
            Message::Item((RequestHeadType::Owned(head), BodySize::None)),
            &mut buf,
        )
        .expect("a request head encodes");
    String::from_utf8_lossy(&buf).into_owned()
}

/// A new request head (which must start empty, whichever table it took) with a `Host` and
/// `names` headers `{prefix}-{i}: {i}`.
fn head_with(prefix: &str, names: usize) -> RequestHead {
    use actix_http::header::{HeaderName, HeaderValue, HOST};
    let mut head = RequestHead::default();
    assert!(
        head.headers.is_empty(),
        "a new head has headers: {:?}",
        head.headers
    );
    for i in 0..names {
        let name = HeaderName::from_bytes(format!("{prefix}-{i}").as_bytes()).unwrap();
        head.headers.insert(name, HeaderValue::from(i));
    }
    head.headers
        .insert(HOST, HeaderValue::from_static("example.com"));
    head
}

/// A decoded response head has room for two headers more than it came with (a proxy adds
/// `Via` and `X-Request-Id` to the map it hands on), so adding them does not grow it.
#[test]
fn response_heads_have_room_for_two_more_headers() {
    use actix_codec::Decoder;
    use actix_http::header::{HeaderName, HeaderValue};
    // The default codec's configuration has a date service, which runs on an actix runtime.
    actix_rt::System::new().block_on(async {
        for n in [0, 3, 7, 14] {
            let headers: String = (0..n).map(|i| format!("X-H{i}: {i}\r\n")).collect();
            let text = format!("HTTP/1.1 204 No Content\r\n{headers}\r\n");
            let mut buf = BytesMut::from(text.as_str());
            let mut head = ClientCodec::default()
                .decode(&mut buf)
                .expect("a response head")
                .expect("a whole head");
            assert_eq!(head.headers.len(), n);
            let room = head.headers.capacity();
            assert!(room >= n + 2, "{n} headers, room for {room}");
            for name in ["via", "x-request-id"] {
                head.headers
                    .insert(HeaderName::from_static(name), HeaderValue::from_static("v"));
            }
            assert_eq!(head.headers.capacity(), room, "{n} headers: the map grew");
        }
    });
}

/// The request line is the method, the target (path and query, `/` when the URI has none) and
/// the version, written without `core::fmt`; an extension method is written as it came.
#[test]
fn request_lines_name_method_target_and_version() {
    use actix_http::{Method, Version};
    actix_rt::System::new().block_on(async {
        let cases = [
            (
                Method::GET,
                "http://e.test/",
                Version::HTTP_11,
                "GET / HTTP/1.1\r\n",
            ),
            (
                Method::from_bytes(b"PURGE").unwrap(),
                "http://e.test/a/b?c=d&e",
                Version::HTTP_10,
                "PURGE /a/b?c=d&e HTTP/1.0\r\n",
            ),
            (
                Method::OPTIONS,
                "*",
                Version::HTTP_11,
                "OPTIONS * HTTP/1.1\r\n",
            ),
            (
                Method::DELETE,
                "http://e.test",
                Version::HTTP_11,
                "DELETE / HTTP/1.1\r\n",
            ),
            // An authority alone has no path and query at all.
            (
                Method::GET,
                "e.test:80",
                Version::HTTP_11,
                "GET / HTTP/1.1\r\n",
            ),
        ];
        for (method, uri, version, line) in cases {
            let mut head = RequestHead::default();
            head.method = method;
            head.uri = uri.parse().unwrap();
            head.version = version;
            let text = encode_head(head);
            assert!(text.starts_with(line), "{uri}: {text:?}");
        }
    });
}

/// A request head made after another was sent starts with no headers (its table may be the
/// sent head's, emptied), and the next request is written with its own headers only.
#[test]
fn a_new_request_head_has_none_of_the_last_ones_headers() {
    actix_rt::System::new().block_on(async {
        for round in 0..40 {
            let prefix = format!("x-round-{round}");
            let text = encode_head(head_with(&prefix, round % 20));
            assert_eq!(
                text.matches("x-round-").count(),
                round % 20,
                "round {round}: {text:?}"
            );
            for i in 0..round % 20 {
                assert_eq!(
                    text.matches(&format!("{prefix}-{i}: {i}\r\n")).count(),
                    1,
                    "round {round}: {text:?}"
                );
            }
        }
    });
}

/// The table of a sent head serves the thread's next head (which starts with the room it
/// grew to), unless it grew for a request with many headers: then it is freed.
#[test]
fn a_sent_heads_table_is_used_again_unless_it_grew_large() {
    actix_rt::System::new().block_on(async {
        let new_room = RequestHead::default().headers.capacity();
        encode_head(head_with("x-forty", 40));
        let next = RequestHead::default();
        assert!(
            next.headers.is_empty() && next.headers.capacity() >= 40,
            "the sent head's table (room for 40 or more) was not used again: room for {} \
             (a new table has room for {new_room})",
            next.headers.capacity()
        );
        drop(next);
        encode_head(head_with("x-hundred", 100));
        let after = RequestHead::default().headers.capacity();
        assert_eq!(
            after, new_room,
            "a table grown for 100 headers was kept (room for {after})"
        );
    });
}
