use super::ErrorKind;

/// A partner's answer to one delivery.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    pub status: u16,
    /// The raw `Retry-After` header, when present.
    pub retry_after: Option<String>,
    /// The body, cut to [`MAX_BODY`] bytes (enough for classifier regexes).
    pub body: String,
    /// The headers, lower-case names, only when a later step's expressions
    /// read this step's response ([`crate::channels::Delivery`]'s
    /// `keep_headers`): empty otherwise.
    pub headers: Vec<(String, String)>,
}

/// The most of a response body kept for classification.
pub const MAX_BODY: usize = 64 * 1024;

/// A delivery that got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportError {
    pub kind: ErrorKind,
    /// Safe to show: never contains the URL or headers.
    pub message: String,
}

/// What one attempt produced.
pub type DeliveryResult = Result<Response, TransportError>;
