//! The vendored actix-http's changes (vendor/README.md) that rondo's other tests cannot see.
//!
//! - As awc uses it: every request awc sends makes a `ClientCodec::default()`, which now shares
//!   one configuration per thread instead of starting a date-updating task per request. The
//!   date it writes must stay current, also when the thread runs a second runtime after the
//!   first was dropped (as between tests).
//! - A decoded request head no longer shares the read buffer, and its header map keeps one
//!   value per name inline: every value must still be there, in order.

use std::time::Duration;

use actix_codec::Encoder;
use actix_http::body::BodySize;
use actix_http::h1::{ClientCodec, Message};
use actix_http::{HttpMessage as _, RequestHead, RequestHeadType};
use bytes::BytesMut;

/// The `date` header of a request encoded by a new default client codec.
fn date_of_a_request() -> String {
    let mut codec = ClientCodec::default();
    let mut buf = BytesMut::new();
    codec
        .encode(
            Message::Item((
                RequestHeadType::Owned(RequestHead::default()),
                BodySize::None,
            )),
            &mut buf,
        )
        .expect("a request head encodes");
    let text = String::from_utf8_lossy(&buf);
    text.lines()
        .find_map(|line| line.strip_prefix("date: "))
        .unwrap_or_else(|| panic!("no date header in {text:?}"))
        .to_owned()
}

#[test]
fn client_codec_date_stays_current_within_and_across_runtimes() {
    let first = actix_rt::System::new().block_on(async { date_of_a_request() });
    std::thread::sleep(Duration::from_millis(1100));
    // A new runtime on the same thread: the first one's date task is gone with it.
    let (second, third) = actix_rt::System::new().block_on(async {
        let second = date_of_a_request();
        actix_rt::time::sleep(Duration::from_millis(1100)).await;
        (second, date_of_a_request())
    });
    assert_ne!(
        first, second,
        "the second runtime's codec wrote the first's date"
    );
    assert_ne!(second, third, "the date did not advance within one runtime");
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
