//! The vendored actix-http (vendor/README.md) as awc uses it: every request awc sends makes a
//! `ClientCodec::default()`, which now shares one configuration per thread instead of starting
//! a date-updating task per request. The date it writes must stay current, also when the
//! thread runs a second runtime after the first was dropped (as between tests).

use std::time::Duration;

use actix_codec::Encoder;
use actix_http::body::BodySize;
use actix_http::h1::{ClientCodec, Message};
use actix_http::{RequestHead, RequestHeadType};
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
