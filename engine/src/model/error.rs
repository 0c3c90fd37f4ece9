//! Why a piece of the model is not acceptable: an id that does not parse, an event that is not
//! well formed, an operation that breaks a rule. The layers above wrap these in their own errors
//! (the top-level `error` module).

/// An identifier that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseIdError {
    /// The text is not hexadecimal.
    #[error("{kind} is not hex")]
    NotHex {
        /// Which kind of id.
        kind: &'static str,
    },
    /// The id has the wrong length.
    #[error("{kind} must be {expected} bytes, got {got}")]
    Length {
        /// Which kind of id.
        kind: &'static str,
        /// Expected length in bytes.
        expected: usize,
        /// Actual length in bytes.
        got: usize,
    },
}

/// Why a single event is not well formed (independent of any stored state).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The encoded event is larger than [`crate::limits::EVENT_BYTES_MAX`].
    #[error("event is {bytes} bytes, more than the limit of {max}")]
    TooLarge {
        /// Size of the encoded event.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes do not decode, or a header field has the wrong shape.
    #[error("malformed event: {0}")]
    Malformed(&'static str),
    /// The signature does not verify against the author's key.
    #[error("bad signature")]
    BadSignature,
}

/// Why an operation (the body of an event) is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OperationError {
    /// The body does not decode or names no operation.
    #[error("malformed operation: {0}")]
    Malformed(&'static str),
    /// A field name is empty, too long or has control characters.
    #[error("invalid field name {0:?}")]
    FieldName(String),
    /// A value does not fit its type (for example a date that is not YYYY-MM-DD).
    #[error("invalid {kind} value {text:?}")]
    Value {
        /// The value's type.
        kind: &'static str,
        /// The offending text.
        text: String,
    },
    /// Too many fields or dots in one operation.
    #[error("operation too large: {0}")]
    TooLarge(&'static str),
}
