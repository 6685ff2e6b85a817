//! The wire format of a relay: a compact binary envelope, one per Redis message.
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 1 | version, `1` |
//! | 1 | 16 | origin [`InstanceId`], unsigned 128-bit big-endian |
//! | 17 | 1 | flags: bit 0 set for a binary message (clear for text), bit 1 set when a namespace follows; the other bits are 0 |
//! | 18 | 2 + N | only with bit 1: namespace length N (unsigned 16-bit big-endian), then N bytes of UTF-8 |
//! | … | 2 + T | topic length T (unsigned 16-bit big-endian), then T bytes of UTF-8 |
//! | … | rest | the payload; UTF-8 for a text message |
//!
//! Control messages (the core's peer queries) travel in an envelope of their own on the control
//! channels; see [`encode_control`].
//!
//! So a relay costs 20 bytes plus its topic (22 plus its namespace with one) on top of its
//! payload. Namespaces and topics are at most [`MAX_NAME_LEN`] bytes long. [`decode`] checks
//! everything and fails with an [`EnvelopeError`] on any input it cannot read; it never panics.

use anyws_core::{Bytes, Control, InstanceId, Message, Relay};

/// The version this crate writes and reads.
pub const VERSION: u8 = 1;

/// The longest namespace or topic an envelope carries, in bytes.
pub const MAX_NAME_LEN: usize = u16::MAX as usize;

const BINARY: u8 = 0b01;
const NAMESPACE: u8 = 0b10;
const HEADER: usize = 1 + 16 + 1;

/// An envelope that cannot be written or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// A namespace or topic is longer than [`MAX_NAME_LEN`] bytes.
    #[error("the {field} is {len} bytes long; an envelope carries at most {MAX_NAME_LEN}")]
    TooLong {
        /// `namespace` or `topic`.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// The envelope ends before a field it announces.
    #[error("the envelope ends inside its {0}")]
    Truncated(&'static str),
    /// The envelope was written by a version this crate does not read.
    #[error("unknown envelope version {0}")]
    Version(u8),
    /// The flags byte has bits this version does not define.
    #[error("unknown envelope flags {0:#04x}")]
    Flags(u8),
    /// The namespace, the topic or a text payload is not UTF-8.
    #[error("the {0} is not valid UTF-8")]
    Utf8(&'static str),
}

/// Appends the envelope of `relay` to `out`.
pub fn encode(relay: &Relay, out: &mut Vec<u8>) -> Result<(), EnvelopeError> {
    let check = |field, len: usize| {
        if len > MAX_NAME_LEN {
            Err(EnvelopeError::TooLong { field, len })
        } else {
            Ok(())
        }
    };
    check("topic", relay.topic.len())?;
    if let Some(namespace) = &relay.namespace {
        check("namespace", namespace.len())?;
    }
    let payload = relay.message.bytes();
    out.reserve(
        HEADER
            + 2
            + relay.topic.len()
            + relay.namespace.as_ref().map_or(0, |ns| 2 + ns.len())
            + payload.len(),
    );
    out.push(VERSION);
    out.extend_from_slice(&relay.origin.as_u128().to_be_bytes());
    let mut flags = 0;
    if relay.message.is_binary() {
        flags |= BINARY;
    }
    if relay.namespace.is_some() {
        flags |= NAMESPACE;
    }
    out.push(flags);
    if let Some(namespace) = &relay.namespace {
        put_name(out, namespace);
    }
    put_name(out, &relay.topic);
    out.extend_from_slice(payload);
    Ok(())
}

fn put_name(out: &mut Vec<u8>, name: &str) {
    // The length was checked against MAX_NAME_LEN.
    out.extend_from_slice(&(name.len() as u16).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
}

/// Reads an envelope back into a relay.
pub fn decode(bytes: &[u8]) -> Result<Relay, EnvelopeError> {
    let mut rest = bytes;
    let version = *take(&mut rest, 1, "version")?
        .first()
        .ok_or(EnvelopeError::Truncated("version"))?;
    if version != VERSION {
        return Err(EnvelopeError::Version(version));
    }
    let origin = take_instance(&mut rest)?;
    let flags = take(&mut rest, 1, "flags")?[0];
    if flags & !(BINARY | NAMESPACE) != 0 {
        return Err(EnvelopeError::Flags(flags));
    }
    let namespace = if flags & NAMESPACE != 0 {
        Some(take_name(&mut rest, "namespace")?.into())
    } else {
        None
    };
    let topic = take_name(&mut rest, "topic")?.into();
    let payload = Bytes::copy_from_slice(rest);
    let message = if flags & BINARY != 0 {
        Message::from_binary(payload)
    } else {
        Message::from_utf8(payload).map_err(|_| EnvelopeError::Utf8("text payload"))?
    };
    Ok(Relay::new(origin, namespace, topic, message))
}

fn take<'a>(
    rest: &mut &'a [u8],
    len: usize,
    field: &'static str,
) -> Result<&'a [u8], EnvelopeError> {
    if rest.len() < len {
        return Err(EnvelopeError::Truncated(field));
    }
    let (head, tail) = rest.split_at(len);
    *rest = tail;
    Ok(head)
}

fn take_name<'a>(rest: &mut &'a [u8], field: &'static str) -> Result<&'a str, EnvelopeError> {
    let len = take(rest, 2, field)?;
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    std::str::from_utf8(take(rest, len, field)?).map_err(|_| EnvelopeError::Utf8(field))
}

/// Flag of a control envelope: the addressee follows the origin.
const ADDRESSED: u8 = 0b01;

/// Appends the envelope of a control message (the core's own traffic between instances, on
/// the control channels, never on a topic's): version `1`, the origin (16 bytes), flags (bit 0:
/// an addressee follows), the addressee (16 bytes) with bit 0, then the payload.
pub fn encode_control(control: &Control, out: &mut Vec<u8>) {
    out.reserve(HEADER + 16 + control.payload.len());
    out.push(VERSION);
    out.extend_from_slice(&control.origin.as_u128().to_be_bytes());
    match control.to {
        Some(to) => {
            out.push(ADDRESSED);
            out.extend_from_slice(&to.as_u128().to_be_bytes());
        }
        None => out.push(0),
    }
    out.extend_from_slice(&control.payload);
}

/// Reads a control envelope back.
pub fn decode_control(bytes: &[u8]) -> Result<Control, EnvelopeError> {
    let mut rest = bytes;
    let version = take(&mut rest, 1, "version")?[0];
    if version != VERSION {
        return Err(EnvelopeError::Version(version));
    }
    let origin = take_instance(&mut rest)?;
    let flags = take(&mut rest, 1, "flags")?[0];
    if flags & !ADDRESSED != 0 {
        return Err(EnvelopeError::Flags(flags));
    }
    let to = if flags & ADDRESSED != 0 {
        Some(take_instance(&mut rest)?)
    } else {
        None
    };
    Ok(Control::new(origin, to, Bytes::copy_from_slice(rest)))
}

fn take_instance(rest: &mut &[u8]) -> Result<InstanceId, EnvelopeError> {
    let mut id = [0; 16];
    id.copy_from_slice(take(rest, 16, "instance id")?);
    Ok(InstanceId::from_u128(u128::from_be_bytes(id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn relay(namespace: Option<&str>, topic: &str, message: Message) -> Relay {
        Relay::new(
            InstanceId::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
            namespace.map(Arc::from),
            topic.into(),
            message,
        )
    }

    fn round_trip(relay: &Relay) -> Vec<u8> {
        let mut out = Vec::new();
        encode(relay, &mut out).unwrap();
        assert_eq!(&decode(&out).unwrap(), relay);
        out
    }

    #[test]
    fn round_trips_every_shape() {
        let text = round_trip(&relay(Some("/room"), "chat", Message::from_text("héllo")));
        assert_eq!(text.len(), 18 + 2 + 5 + 2 + 4 + 6);
        assert_eq!(text[0], VERSION);
        assert_eq!(text[17], NAMESPACE);
        let all = round_trip(&relay(None, "chat", Message::from_binary(vec![0, 0xff, 7])));
        assert_eq!(all.len(), 18 + 2 + 4 + 3);
        assert_eq!(all[17], BINARY);
        round_trip(&relay(Some(""), "", Message::from_text("")));
        round_trip(&relay(None, "t", Message::from_binary(Vec::new())));
        let long = "n".repeat(MAX_NAME_LEN);
        round_trip(&relay(Some(&long), &long, Message::from_text("x")));
    }

    #[test]
    fn control_envelopes_round_trip_and_refuse_garbage() {
        let origin = InstanceId::from_u128(7);
        for to in [None, Some(InstanceId::from_u128(u128::MAX))] {
            let control = Control::new(origin, to, Bytes::from_static(b"{\"q\":1}"));
            let mut out = Vec::new();
            encode_control(&control, &mut out);
            assert_eq!(decode_control(&out), Ok(control));
            for cut in 0..18 {
                assert!(
                    decode_control(&out[..cut]).is_err(),
                    "prefix of {cut} bytes"
                );
            }
        }
        assert_eq!(
            decode_control(&[VERSION, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80]),
            Err(EnvelopeError::Flags(0x80))
        );
        assert_eq!(decode_control(&[9]), Err(EnvelopeError::Version(9)));
    }

    #[test]
    fn names_longer_than_the_limit_are_refused() {
        let long = "t".repeat(MAX_NAME_LEN + 1);
        let mut out = Vec::new();
        let error = encode(&relay(None, &long, Message::from_text("x")), &mut out);
        assert_eq!(
            error,
            Err(EnvelopeError::TooLong {
                field: "topic",
                len: MAX_NAME_LEN + 1
            })
        );
        let error = encode(&relay(Some(&long), "t", Message::from_text("x")), &mut out);
        assert!(matches!(
            error,
            Err(EnvelopeError::TooLong {
                field: "namespace",
                ..
            })
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn malformed_input_is_an_error_never_a_panic() {
        let good = round_trip(&relay(Some("/ns"), "topic", Message::from_text("payload")));
        // Every strict prefix that cuts a header field is refused.
        for cut in 0..(18 + 2 + 3 + 2 + 5) {
            assert!(
                matches!(decode(&good[..cut]), Err(EnvelopeError::Truncated(_))),
                "prefix of {cut} bytes"
            );
        }
        let mut bad = good.clone();
        bad[0] = 2;
        assert_eq!(decode(&bad), Err(EnvelopeError::Version(2)));
        let mut bad = good.clone();
        bad[17] |= 0x80;
        assert_eq!(decode(&bad), Err(EnvelopeError::Flags(0x82)));
        // A namespace length that runs past the end.
        let mut bad = good.clone();
        bad[18..20].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(decode(&bad), Err(EnvelopeError::Truncated("namespace")));
        // Invalid UTF-8 in the topic and in a text payload.
        let mut bad = good.clone();
        bad[18 + 2 + 3 + 2] = 0xff;
        assert_eq!(decode(&bad), Err(EnvelopeError::Utf8("topic")));
        let mut bad = good.clone();
        *bad.last_mut().unwrap() = 0xff;
        assert_eq!(decode(&bad), Err(EnvelopeError::Utf8("text payload")));
        // The same bytes flagged binary are fine.
        bad[17] |= BINARY;
        assert!(decode(&bad).unwrap().message.is_binary());
        // Arbitrary bytes: an answer either way, no panic.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for len in 0..512 {
            let noise: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let _ = decode(&noise);
            let mut framed = vec![VERSION];
            framed.extend_from_slice(&noise);
            let _ = decode(&framed);
        }
    }
}
