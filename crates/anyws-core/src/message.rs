//! Messages: what a peer sends and receives.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use tungstenite::Utf8Bytes;

/// A WebSocket data message, text or binary.
///
/// Cloning is cheap: the payload is reference-counted, so one message published to many peers is
/// encoded once and its bytes are shared.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    repr: Repr,
}

/// The payload, and whether it may be compressed (see [`Message::without_compression`]); the
/// flag fits beside the variant's tag, so it costs no space.
#[derive(Clone, PartialEq, Eq)]
enum Repr {
    Text(Utf8Bytes, Compress),
    Binary(Bytes, Compress),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Compress {
    Allowed,
    Never,
}

/// The payload of a message is not what the caller asked for.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The payload is not valid UTF-8.
    #[error("message is not valid UTF-8: {0}")]
    Utf8(#[from] std::str::Utf8Error),
    /// The payload is not the expected JSON.
    #[error("message is not the expected JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl Message {
    /// A text message.
    pub fn from_text(text: impl Into<String>) -> Self {
        Self {
            repr: Repr::Text(Utf8Bytes::from(text.into()), Compress::Allowed),
        }
    }

    /// A text message from a `'static` string, without copying it.
    pub const fn from_static(text: &'static str) -> Self {
        Self {
            repr: Repr::Text(Utf8Bytes::from_static(text), Compress::Allowed),
        }
    }

    /// A text message from bytes that must be UTF-8, without copying them; fails with
    /// [`MessageError::Utf8`] when they are not.
    pub fn from_utf8(bytes: impl Into<Bytes>) -> Result<Self, MessageError> {
        let text = Utf8Bytes::try_from(bytes.into())?;
        Ok(Self {
            repr: Repr::Text(text, Compress::Allowed),
        })
    }

    /// A binary message.
    pub fn from_binary(bytes: impl Into<Bytes>) -> Self {
        Self {
            repr: Repr::Binary(bytes.into(), Compress::Allowed),
        }
    }

    /// A text message holding `value` serialized as JSON.
    pub fn from_json<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        Ok(Self::from_text(serde_json::to_string(value)?))
    }

    /// Whether this is a text message.
    pub fn is_text(&self) -> bool {
        matches!(self.repr, Repr::Text(..))
    }

    /// Whether this is a binary message.
    pub fn is_binary(&self) -> bool {
        matches!(self.repr, Repr::Binary(..))
    }

    /// The payload as text.
    ///
    /// A text message was checked on arrival and never fails here; a binary message is checked
    /// now and fails with [`MessageError::Utf8`] when it is not UTF-8.
    pub fn text(&self) -> Result<&str, MessageError> {
        match &self.repr {
            Repr::Text(text, _) => Ok(text.as_str()),
            Repr::Binary(bytes, _) => Ok(std::str::from_utf8(bytes)?),
        }
    }

    /// The payload bytes, whatever the kind of message.
    pub fn bytes(&self) -> &Bytes {
        match &self.repr {
            Repr::Text(text, _) => AsRef::<Bytes>::as_ref(text),
            Repr::Binary(bytes, _) => bytes,
        }
    }

    /// Takes the payload bytes out of the message without copying them.
    pub fn into_bytes(self) -> Bytes {
        match self.repr {
            Repr::Text(text, _) => text.into(),
            Repr::Binary(bytes, _) => bytes,
        }
    }

    /// Parses the payload (text or binary) as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, MessageError> {
        Ok(serde_json::from_slice(self.bytes())?)
    }

    /// The payload length in bytes.
    pub fn len(&self) -> usize {
        self.bytes().len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same message, never compressed: it goes out as a plain frame even to peers that
    /// negotiated permessage-deflate (see [`Deflate`](crate::Deflate)), as CrossWS's
    /// `{ compress: false }`. For data that does not shrink, such as images or data already
    /// compressed; the bytes are not copied.
    pub fn without_compression(self) -> Self {
        let repr = match self.repr {
            Repr::Text(text, _) => Repr::Text(text, Compress::Never),
            Repr::Binary(bytes, _) => Repr::Binary(bytes, Compress::Never),
        };
        Self { repr }
    }

    /// Whether the message may be compressed: false after
    /// [`without_compression`](Message::without_compression).
    pub(crate) fn compressible(&self) -> bool {
        matches!(
            self.repr,
            Repr::Text(_, Compress::Allowed) | Repr::Binary(_, Compress::Allowed)
        )
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Text(text, _) => f.debug_tuple("Text").field(&text.as_str()).finish(),
            Repr::Binary(bytes, _) => f.debug_tuple("Binary").field(bytes).finish(),
        }
    }
}

impl From<String> for Message {
    fn from(text: String) -> Self {
        Self::from_text(text)
    }
}

impl From<&str> for Message {
    fn from(text: &str) -> Self {
        Self::from_text(text)
    }
}

impl From<Bytes> for Message {
    fn from(bytes: Bytes) -> Self {
        Self::from_binary(bytes)
    }
}

impl From<Vec<u8>> for Message {
    fn from(bytes: Vec<u8>) -> Self {
        Self::from_binary(bytes)
    }
}

impl From<&[u8]> for Message {
    fn from(bytes: &[u8]) -> Self {
        Self::from_binary(Bytes::copy_from_slice(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_binary() {
        let text = Message::from_text("héllo");
        assert!(text.is_text() && !text.is_binary());
        assert_eq!(text.text().unwrap(), "héllo");
        assert_eq!(text.len(), 6);
        let bin = Message::from_binary(vec![0xff, 0xfe]);
        assert!(bin.is_binary());
        assert!(matches!(bin.text(), Err(MessageError::Utf8(_))));
        assert_eq!(Message::from_binary(&b"ok"[..]).text().unwrap(), "ok");
    }

    #[test]
    fn from_utf8_checks_without_copying() {
        let bytes = Bytes::from_static("héllo".as_bytes());
        let m = Message::from_utf8(bytes.clone()).unwrap();
        assert!(m.is_text());
        assert_eq!(m.bytes().as_ptr(), bytes.as_ptr());
        assert!(matches!(
            Message::from_utf8(vec![0xff]),
            Err(MessageError::Utf8(_))
        ));
    }

    #[test]
    fn json_round_trip() {
        let m = Message::from_json(&serde_json::json!({"a": [1, 2]})).unwrap();
        assert!(m.is_text());
        let v: serde_json::Value = m.json().unwrap();
        assert_eq!(v["a"][1], 2);
        assert!(Message::from_text("{").json::<serde_json::Value>().is_err());
    }

    #[test]
    fn without_compression_keeps_the_message() {
        let m = Message::from_text("abc");
        assert!(m.compressible());
        let plain = m.clone().without_compression();
        assert!(!plain.compressible() && plain.is_text());
        assert_eq!(plain.bytes().as_ptr(), m.bytes().as_ptr());
        assert_eq!(
            std::mem::size_of::<Message>(),
            std::mem::size_of::<Bytes>() + 8
        );
    }

    #[test]
    fn clone_shares_bytes() {
        let m = Message::from_text("x".repeat(1000));
        let c = m.clone();
        assert_eq!(m.bytes().as_ptr(), c.bytes().as_ptr());
    }
}
