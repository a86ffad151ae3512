//! HTTP requests.

mod head;
mod request;

pub use self::{
    head::{RequestHead, RequestHeadType},
    request::Request,
};
// rondo: for the client codec, which gives sent heads' header tables back.
pub(crate) use self::head::keep_headers;
