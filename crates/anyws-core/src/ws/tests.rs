//! Tests of the reader: every error and its close code, and the same events however the bytes
//! are cut.

use super::reader::unmask;
use super::*;
use crate::ws::frames::{BINARY, CLOSE, PING, PONG, TEXT};

/// The reader with its limits, which the connection keeps apart from it.
struct Reader {
    inner: super::Reader,
    limits: ReadLimits,
}

impl Reader {
    fn new(max_message_size: usize, max_frame_size: usize) -> Self {
        Self {
            inner: super::Reader::new(),
            limits: ReadLimits {
                max_message_size,
                max_frame_size,
            },
        }
    }

    fn read(&mut self, input: &mut &[u8]) -> Result<Option<Event>, ReadError> {
        self.inner.read(input, self.limits)
    }

    fn client(mut self) -> Self {
        self.inner = self.inner.client();
        self
    }

    fn with_extension(mut self, extension: Box<dyn Extension>) -> Self {
        self.inner = self.inner.with_extension(extension);
        self
    }

    fn buffered(&self) -> usize {
        self.inner.buffered()
    }

    fn holds_nothing(&self) -> bool {
        self.inner.holds_nothing()
    }
}

const CONTINUATION: u8 = 0x0;
const MASK: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];

/// A client frame: `first` is the first header byte (FIN, RSV and opcode), masked with `mask`.
pub(crate) fn raw_frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n < 65536 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// A masked client frame.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    raw_frame((u8::from(fin) << 7) | opcode, payload, MASK)
}

/// Masked client frames, one after the other: FIN, opcode and payload of each.
fn frames(list: &[(bool, u8, &[u8])]) -> Vec<u8> {
    list.iter()
        .flat_map(|&(fin, opcode, payload)| frame(fin, opcode, payload))
        .collect()
}

fn reader() -> Reader {
    Reader::new(1 << 20, 1 << 20)
}

/// Feeds `input` to `reader` in one piece: the events, then the error if reading failed.
fn feed(reader: &mut Reader, mut input: &[u8]) -> (Vec<Event>, Option<ReadError>) {
    let mut events = Vec::new();
    loop {
        match reader.read(&mut input) {
            Ok(Some(event)) => events.push(event),
            Ok(None) => {
                assert!(input.is_empty(), "Ok(None) with input left");
                return (events, None);
            }
            Err(error) => return (events, Some(error)),
        }
    }
}

/// Feeds `input` in pieces of the sizes `cuts` gives, in turn.
fn feed_cut(input: &[u8], cuts: &mut dyn FnMut() -> usize) -> (Vec<Event>, Option<ReadError>) {
    let mut reader = reader();
    let mut events = Vec::new();
    let mut rest = input;
    loop {
        let n = cuts().min(rest.len());
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        let (mut got, error) = feed(&mut reader, piece);
        events.append(&mut got);
        if error.is_some() || rest.is_empty() {
            return (events, error);
        }
    }
}

fn text(s: &str) -> Event {
    Event::Text(Bytes::copy_from_slice(s.as_bytes()))
}

fn binary(b: &[u8]) -> Event {
    Event::Binary(Bytes::copy_from_slice(b))
}

/// The events in `input`, read in one piece by a new reader, which must not fail.
fn events_of(input: &[u8]) -> Vec<Event> {
    let (events, error) = feed(&mut reader(), input);
    assert_eq!(error, None, "after {events:?}");
    events
}

/// The error reading `input` ends with, after no events.
fn error_of(input: &[u8]) -> ReadError {
    match feed(&mut reader(), input) {
        (events, Some(error)) => {
            assert!(events.is_empty(), "{events:?}");
            error
        }
        (events, None) => panic!("no error, events {events:?}"),
    }
}

#[test]
fn reads_single_frame_messages() {
    let mut input = frame(true, TEXT, "héllo".as_bytes());
    input.extend(frame(true, BINARY, &[0, 1, 2, 255]));
    assert_eq!(events_of(&input), [text("héllo"), binary(&[0, 1, 2, 255])]);
}

#[test]
fn an_idle_reader_holds_no_memory() {
    let mut reader = reader();
    assert!(reader.holds_nothing());
    let burst = frames(&[
        (true, TEXT, b"one"),
        (true, PING, b"p"),
        (true, BINARY, b"two"),
    ]);
    // Within a burst the reader keeps what it made for the first message...
    let mut input = &burst[..];
    assert_eq!(reader.read(&mut input), Ok(Some(text("one"))));
    assert!(!reader.holds_nothing());
    // ...and once the input is used up, with no message in progress, it has nothing left.
    assert_eq!(feed(&mut reader, input).0.len(), 2);
    assert!(reader.holds_nothing());
    // A message cut between reads is held until it is complete.
    let message = frame(true, TEXT, b"split in two");
    assert_eq!(feed(&mut reader, &message[..9]), (vec![], None));
    assert!(!reader.holds_nothing());
    assert_eq!(
        feed(&mut reader, &message[9..]),
        (vec![text("split in two")], None)
    );
    assert!(reader.holds_nothing());
}

#[test]
fn every_protocol_error_has_its_close_code() {
    let long_ping = {
        let mut f = frame(true, PING, &[0; 126]);
        f.truncate(4);
        f
    };
    let mut high_bit = vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1];
    high_bit.extend_from_slice(&MASK);
    let mut new_data_in_fragmented = frame(false, TEXT, b"a");
    new_data_in_fragmented.extend(frame(true, TEXT, b"b"));
    let cases: Vec<(&str, Vec<u8>, ReadError, u16)> = vec![
        (
            "unmasked",
            vec![0x81, 0x02, b'h', b'i'],
            ReadError::Unmasked,
            1002,
        ),
        (
            "RSV1",
            raw_frame(0xC1, b"x", MASK),
            ReadError::ReservedBits,
            1002,
        ),
        (
            "RSV2",
            raw_frame(0xA1, b"x", MASK),
            ReadError::ReservedBits,
            1002,
        ),
        (
            "RSV3",
            raw_frame(0x91, b"x", MASK),
            ReadError::ReservedBits,
            1002,
        ),
        (
            "control over 125",
            long_ping,
            ReadError::ControlTooLong,
            1002,
        ),
        (
            "fragmented ping",
            frame(false, PING, b""),
            ReadError::FragmentedControl,
            1002,
        ),
        (
            "fragmented close",
            frame(false, CLOSE, b""),
            ReadError::FragmentedControl,
            1002,
        ),
        (
            "continuation first",
            frame(true, CONTINUATION, b"x"),
            ReadError::UnexpectedContinuation,
            1002,
        ),
        (
            "close of one byte",
            frame(true, CLOSE, &[3]),
            ReadError::CloseTooShort,
            1002,
        ),
        ("length high bit", high_bit, ReadError::LengthOverflow, 1002),
        (
            "invalid text",
            frame(true, TEXT, &[b'a', 0xFF]),
            ReadError::InvalidUtf8,
            1007,
        ),
        (
            "invalid close reason",
            frame(true, CLOSE, &[0x03, 0xE8, 0xC3, 0x28]),
            ReadError::InvalidUtf8,
            1007,
        ),
    ];
    for (name, input, expected, code) in cases {
        assert_eq!(error_of(&input), expected, "{name}");
        assert_eq!(expected.close_code(), code, "{name}");
    }
    let (events, error) = feed(&mut reader(), &new_data_in_fragmented);
    assert!(events.is_empty());
    assert_eq!(error, Some(ReadError::ExpectedContinuation));
    for opcode in [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        let error = error_of(&frame(true, opcode, b""));
        assert_eq!(error, ReadError::ReservedOpcode(opcode));
        assert_eq!(error.close_code(), 1002);
    }
    // Also reported through the crate's error type, with a message.
    let error: crate::Error = ReadError::ReservedOpcode(3).into();
    assert!(matches!(error, crate::Error::Protocol(ref m) if m.contains("0x3")));
}

#[test]
fn header_errors_need_only_the_first_two_bytes() {
    for (input, expected) in [
        (&[0x81, 0x05][..], ReadError::Unmasked),
        (&[0xE1, 0x85], ReadError::ReservedBits),
        (&[0x83, 0x85], ReadError::ReservedOpcode(3)),
        (&[0x09, 0x80], ReadError::FragmentedControl),
        (&[0x89, 0xFE], ReadError::ControlTooLong),
        (&[0x80, 0x85], ReadError::UnexpectedContinuation),
        // A 64-bit length with its high bit is rejected at the first length byte.
        (&[0x82, 0xFF, 0x80], ReadError::LengthOverflow),
    ] {
        assert_eq!(error_of(input), expected, "{input:x?}");
    }
}

#[test]
fn close_codes_follow_rfc_6455_section_7_4() {
    let valid: [u16; 16] = [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000,
        4999,
    ];
    let invalid: [u16; 13] = [
        0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ];
    for code in valid {
        let (events, error) = feed(&mut reader(), &frame(true, CLOSE, &code.to_be_bytes()));
        assert_eq!(error, None, "{code}");
        assert_eq!(events, [Event::Close(Some((code, String::new())))]);
    }
    for code in invalid {
        let error = error_of(&frame(true, CLOSE, &code.to_be_bytes()));
        assert_eq!(error, ReadError::InvalidCloseCode(code));
        assert_eq!(error.close_code(), 1002);
    }
}

#[test]
fn close_frames_with_and_without_code_and_reason() {
    type Case<'a> = (&'a [u8], Option<(u16, &'a str)>);
    let cases: [Case; 3] = [
        (b"", None),
        (&[0x03, 0xE8], Some((1000, ""))),
        (b"\x0F\xA0bye \xC3\xA9", Some((4000, "bye é"))),
    ];
    // A close inside a fragmented message ends it; the message is let go.
    let mut cut_short = reader();
    let mut input = frame(false, TEXT, b"never finished");
    input.extend(frame(true, CLOSE, b""));
    assert_eq!(
        feed(&mut cut_short, &input),
        (vec![Event::Close(None)], None)
    );
    assert_eq!(cut_short.buffered(), 0);
    for (payload, expected) in cases {
        let mut input = frame(true, CLOSE, payload);
        // Whatever follows the close frame is not read.
        input.extend(frame(true, TEXT, b"after"));
        input.extend([0xFF; 10]);
        let mut reader = reader();
        let (events, error) = feed(&mut reader, &input);
        assert_eq!(error, None);
        let expected = expected.map(|(code, reason)| (code, reason.to_owned()));
        assert_eq!(events, [Event::Close(expected)]);
        let (events, error) = feed(&mut reader, &frame(true, TEXT, b"later"));
        assert!(events.is_empty() && error.is_none());
    }
}

#[test]
fn fragments_and_control_frames_between_them() {
    let input = frames(&[
        (false, TEXT, b"Hel"),
        (true, PING, b"p1"),
        (false, CONTINUATION, b""),
        (true, PONG, b""),
        (false, CONTINUATION, b"lo, "),
        (true, PING, b""),
        (true, CONTINUATION, b"world"),
        (false, BINARY, &[1, 2]),
        (true, CONTINUATION, &[3]),
        (true, CLOSE, &[0x03, 0xE9]),
    ]);
    assert_eq!(
        events_of(&input),
        [
            Event::Ping(Bytes::from_static(b"p1")),
            Event::Pong(Bytes::new()),
            Event::Ping(Bytes::new()),
            text("Hello, world"),
            binary(&[1, 2, 3]),
            Event::Close(Some((1001, String::new()))),
        ]
    );
}

#[test]
fn zero_length_frames() {
    let input = frames(&[
        (true, TEXT, b""),
        (true, BINARY, b""),
        (false, TEXT, b""),
        (false, CONTINUATION, b""),
        (true, CONTINUATION, b""),
        (true, PING, b""),
        (true, CLOSE, b""),
    ]);
    assert_eq!(
        events_of(&input),
        [
            text(""),
            binary(b""),
            text(""),
            Event::Ping(Bytes::new()),
            Event::Close(None)
        ]
    );
}

#[test]
fn sixteen_and_sixty_four_bit_lengths() {
    for len in [125, 126, 127, 1000, 65_535, 65_536, 70_000] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let input = frame(true, BINARY, &payload);
        let header = match len {
            0..=125 => 6,
            126..=65_535 => 8,
            _ => 14,
        };
        assert_eq!(input.len(), header + len);
        assert_eq!(events_of(&input), [binary(&payload)], "{len}");
    }
    // A longer length encoding than needed is accepted.
    let mut input = vec![0x81, 0xFF, 0, 0, 0, 0, 0, 0, 0, 2];
    input.extend_from_slice(&MASK);
    input.extend(b"ok".iter().zip(MASK).map(|(b, m)| b ^ m));
    assert_eq!(events_of(&input), [text("ok")]);
}

#[test]
fn limits_are_judged_from_the_declared_length() {
    let mut small = Reader::new(100, 60);
    // Only the header of a 61-byte frame: rejected before any payload arrives.
    let header = &frame(true, BINARY, &[0; 61])[..6];
    let (_, error) = feed(&mut small, header);
    assert_eq!(
        error,
        Some(ReadError::FrameTooBig {
            size: 61,
            limit: 60
        })
    );
    assert_eq!(error.map(ReadError::close_code), Some(1009));
    // A 64-bit length far past anything: rejected from the header, nothing reserved.
    let mut input = vec![0x82, 0xFF];
    input.extend_from_slice(&(u64::MAX >> 1).to_be_bytes());
    input.extend_from_slice(&MASK);
    let mut big = reader();
    assert!(matches!(
        feed(&mut big, &input).1,
        Some(ReadError::FrameTooBig { .. })
    ));
    assert_eq!(big.buffered(), 0);

    // Fragments of 60 bytes: the second is accepted (100 bytes would not be passed yet)...
    let mut small = Reader::new(100, 60);
    let mut input = frame(false, TEXT, &[b'a'; 50]);
    input.extend(frame(false, CONTINUATION, &[b'b'; 50]));
    assert_eq!(feed(&mut small, &input), (vec![], None));
    // ...a third passes the message limit from its header alone.
    let (_, error) = feed(&mut small, &frame(true, CONTINUATION, &[b'c'; 1])[..6]);
    assert_eq!(
        error,
        Some(ReadError::MessageTooBig {
            size: 101,
            limit: 100
        })
    );
    assert_eq!(
        small.buffered(),
        0,
        "a failed reader lets go of its message"
    );
    // The first frame of a message is held to the message limit too.
    let mut small = Reader::new(10, 60);
    let (_, error) = feed(&mut small, &frame(true, TEXT, &[b'a'; 11])[..6]);
    assert!(matches!(
        error,
        Some(ReadError::MessageTooBig { size: 11, .. })
    ));
    // A message of exactly the limit is fine.
    let mut small = Reader::new(10, 10);
    assert_eq!(
        feed(&mut small, &frame(true, BINARY, &[7; 10])),
        (vec![binary(&[7; 10])], None)
    );
}

/// Frames of every length encoding, control frames and fragments, in one stream.
fn mixed_stream() -> (Vec<u8>, Vec<Event>) {
    let long: Vec<u8> = (0..300).map(|i| (i % 256) as u8).collect();
    let mut input = frame(true, TEXT, "añb€c😀".as_bytes());
    input.extend(frame(false, BINARY, &long));
    input.extend(frame(true, PING, b"ping!"));
    input.extend(frame(true, CONTINUATION, b""));
    input.extend(frame(true, TEXT, b""));
    input.extend(frame(true, CLOSE, b"\x03\xE8done"));
    let events = vec![
        text("añb€c😀"),
        Event::Ping(Bytes::from_static(b"ping!")),
        binary(&long),
        text(""),
        Event::Close(Some((1000, "done".to_owned()))),
    ];
    (input, events)
}

#[test]
fn a_split_at_every_position_changes_nothing() {
    let (input, expected) = mixed_stream();
    for at in 0..=input.len() {
        let mut reader = reader();
        let (mut events, error) = feed(&mut reader, &input[..at]);
        assert_eq!(error, None);
        let (rest, error) = feed(&mut reader, &input[at..]);
        assert_eq!(error, None);
        events.extend(rest);
        assert_eq!(events, expected, "split at {at}");
    }
}

#[test]
fn one_byte_at_a_time() {
    let (input, expected) = mixed_stream();
    assert_eq!(feed_cut(&input, &mut || 1), (expected, None));
}

#[test]
fn text_split_across_fragments_and_reads() {
    // "€" (E2 82 AC) and "😀" (F0 9F 98 80) cut at every byte, across fragments.
    let message = "a€😀b".as_bytes();
    for cut in 0..=message.len() {
        let mut input = frame(false, TEXT, &message[..cut]);
        input.extend(frame(true, CONTINUATION, &message[cut..]));
        for step in [1, 2, 3, 5, input.len()] {
            let got = feed_cut(&input, &mut || step);
            assert_eq!(
                got,
                (vec![text("a€😀b")], None),
                "cut {cut}, reads of {step}"
            );
        }
    }
}

#[test]
fn invalid_text_fails_at_the_first_invalid_byte() {
    // A fragmented text message whose second fragment turns invalid at its second byte (ED A0:
    // a UTF-16 surrogate). Fed one byte at a time, the error comes at that very byte: before
    // the second fragment is complete, and before the final fragment.
    let mut input = frame(false, TEXT, "κόσμε".as_bytes());
    let second = input.len();
    input.extend(frame(false, CONTINUATION, &[b'o', 0xED, 0xA0, 0x80, b'k']));
    input.extend(frame(true, CONTINUATION, b"never"));
    let bad = second + 6 + 2;
    let mut reader = reader();
    for (i, byte) in input.iter().enumerate() {
        let (events, error) = feed(&mut reader, std::slice::from_ref(byte));
        assert!(events.is_empty());
        if i < bad {
            assert_eq!(error, None, "byte {i}");
        } else {
            assert_eq!(error, Some(ReadError::InvalidUtf8), "byte {i}");
            break;
        }
    }
    assert_eq!(reader.buffered(), 0);
    // In one frame still arriving: the frame's header and the bad byte are enough.
    let input = frame(true, TEXT, &[b'a', b'b', 0xC0, b'c', b'd']);
    assert_eq!(
        feed(&mut self::reader(), &input[..6 + 3]).1,
        Some(ReadError::InvalidUtf8)
    );
    assert_eq!(feed(&mut self::reader(), &input[..6 + 2]).1, None);
    // A character cut short by the end of the message.
    let mut input = frame(false, TEXT, b"ok");
    input.extend(frame(true, CONTINUATION, &[0xE2, 0x82]));
    assert_eq!(error_of(&input), ReadError::InvalidUtf8);
    // Binary payloads are never judged.
    assert_eq!(
        feed(&mut self::reader(), &frame(true, BINARY, &[0xFF, 0xC0])),
        (vec![binary(&[0xFF, 0xC0])], None)
    );
}

#[test]
fn an_idle_reader_holds_no_heap_memory() {
    let mut reader = reader();
    assert_eq!(reader.buffered(), 0);
    // Between messages, and with half a header kept (in a fixed array).
    let (events, error) = feed(&mut reader, &frame(true, TEXT, &[b'x'; 200]));
    assert_eq!((events.len(), error), (1, None));
    assert_eq!(reader.buffered(), 0);
    let header = frame(true, BINARY, &[0; 70_000]);
    assert_eq!(feed(&mut reader, &header[..7]), (vec![], None));
    assert_eq!(reader.buffered(), 0);
    // A message in progress holds what has arrived of it, not what its header announced.
    assert_eq!(feed(&mut reader, &header[7..14 + 1000]), (vec![], None));
    assert_eq!(reader.buffered(), 1000);
    let (events, error) = feed(&mut reader, &header[14 + 1000..]);
    assert_eq!((events.len(), error), (1, None));
    assert_eq!(reader.buffered(), 0);
    // A control frame split across reads holds its payload only until it is complete.
    let ping = frame(true, PING, b"12345");
    assert_eq!(feed(&mut reader, &ping[..8]), (vec![], None));
    assert_eq!(reader.buffered(), 5);
    let (events, _) = feed(&mut reader, &ping[8..]);
    assert_eq!(events, [Event::Ping(Bytes::from_static(b"12345"))]);
    assert_eq!(reader.buffered(), 0);
}

#[test]
fn a_message_never_reserves_past_its_end_or_the_limit() {
    // The final frame, in two reads: the second read reserves up to the frame's end, no more.
    let mut reader = Reader::new(1 << 20, 1 << 20);
    let input = frame(true, BINARY, &[1; 1000]);
    feed(&mut reader, &input[..8 + 600]);
    assert_eq!(reader.buffered(), 600);
    feed(&mut reader, &input[8 + 600..input.len() - 1]);
    assert_eq!(reader.buffered(), 1000);
    // Many small fragments: doubling, capped at the message limit.
    let mut input = Vec::new();
    input.extend(frame(false, BINARY, &[2; 10]));
    for _ in 0..98 {
        input.extend(frame(false, CONTINUATION, &[2; 10]));
    }
    let mut reader = Reader::new(1000, 1000);
    assert_eq!(feed(&mut reader, &input), (vec![], None));
    assert!((990..=1000).contains(&reader.buffered()));
    let (events, error) = feed(&mut reader, &frame(true, CONTINUATION, &[2; 10]));
    assert_eq!((events, error), (vec![binary(&[2; 1000])], None));
}

/// The capacity behind a message's bytes.
fn capacity(event: Event) -> usize {
    let (Event::Text(bytes) | Event::Binary(bytes)) = event else {
        panic!("not a message: {event:?}");
    };
    bytes.try_into_mut().expect("the only handle").capacity()
}

#[test]
fn a_frame_in_one_read_is_one_allocation_of_its_size() {
    for len in [1, 125, 126, 1000, 70_000] {
        let payload = vec![b'z'; len];
        let mut events = events_of(&frame(true, TEXT, &payload));
        assert_eq!(capacity(events.remove(0)), len);
    }
    // Read in pieces, the final frame still ends at its size.
    let input = frame(true, BINARY, &[3; 1000]);
    let (events, _) = feed_cut(&input, &mut || 100);
    assert_eq!(
        capacity(events.into_iter().next().expect("the message")),
        1000
    );
}

#[test]
fn errors_are_final() {
    let mut reader = reader();
    let (_, error) = feed(&mut reader, &[0x81, 0x01, b'x']);
    assert_eq!(error, Some(ReadError::Unmasked));
    let mut valid: &[u8] = &frame(true, TEXT, b"ok");
    assert_eq!(reader.read(&mut valid), Err(ReadError::Unmasked));
}

/// A toy extension: the "compressed" payload is the data reversed.
#[derive(Debug)]
struct Reverse;

impl Extension for Reverse {
    fn decode(&mut self, mut payload: Vec<u8>, _max_size: usize) -> Result<Vec<u8>, ReadError> {
        payload.reverse();
        Ok(payload)
    }
}

#[test]
fn an_extension_gives_rsv1_its_meaning() {
    let with = || Reader::new(1 << 20, 1 << 20).with_extension(Box::new(Reverse));
    // RSV1 on a single frame, and on the first of two fragments.
    let mut input = raw_frame(0xC1, b"cba", MASK);
    input.extend(raw_frame(0x42, b"fe", MASK));
    input.extend(frame(true, CONTINUATION, b"d"));
    input.extend(frame(true, TEXT, b"plain"));
    let (events, error) = feed(&mut with(), &input);
    assert_eq!(error, None);
    assert_eq!(events, [text("abc"), binary(b"def"), text("plain")]);
    // Never on a continuation or a control frame.
    let mut input = frame(false, TEXT, b"a");
    input.extend(raw_frame(0xC0, b"b", MASK));
    assert_eq!(feed(&mut with(), &input).1, Some(ReadError::ReservedBits));
    assert_eq!(
        feed(&mut with(), &raw_frame(0xC9, b"", MASK)).1,
        Some(ReadError::ReservedBits)
    );
    // Transformed text is checked once decoded: "\xC3(" reversed is invalid.
    assert_eq!(
        feed(&mut with(), &raw_frame(0xC1, b"(\xC3", MASK)).1,
        Some(ReadError::InvalidUtf8)
    );
}

#[test]
fn unmask_matches_the_byte_by_byte_definition() {
    for len in 0..40 {
        let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
        let mut fast = data.clone();
        unmask(&mut fast, MASK);
        let slow: Vec<u8> = data
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ MASK[i % 4])
            .collect();
        assert_eq!(fast, slow, "{len}");
    }
}

/// xorshift64*: a small deterministic generator for the property test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn mask(&mut self) -> [u8; 4] {
        (self.next() as u32).to_ne_bytes()
    }
}

/// Random messages, as randomly fragmented frames with random masks and pings between them,
/// read in random pieces, come out as they went in.
#[test]
fn random_messages_in_random_pieces_come_out_intact() {
    let chars = ['a', 'z', ' ', 'é', 'ß', '€', '中', '😀', '\u{10FFFF}', '\0'];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..300 {
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for _ in 0..1 + rng.below(6) {
            let len = match rng.below(10) {
                0 => 0,
                1 => 126 + rng.below(70_000),
                _ => rng.below(200),
            };
            let is_text = rng.below(2) == 0;
            let payload: Vec<u8> = if is_text {
                let mut s = String::new();
                while s.len() < len {
                    s.push(chars[rng.below(chars.len())]);
                }
                s.into_bytes()
            } else {
                (0..len).map(|_| rng.next() as u8).collect()
            };
            // Cut into fragments at random places, empty ones included.
            let fragments = 1 + rng.below(5);
            let len = payload.len();
            let mut cuts: Vec<usize> = (1..fragments).map(|_| rng.below(len + 1)).collect();
            cuts.sort_unstable();
            cuts.push(len);
            let mut start = 0;
            for (i, &end) in cuts.iter().enumerate() {
                let opcode = match (i, is_text) {
                    (0, true) => TEXT,
                    (0, false) => BINARY,
                    _ => CONTINUATION,
                };
                let fin = i + 1 == cuts.len();
                let first = (u8::from(fin) << 7) | opcode;
                input.extend(raw_frame(first, &payload[start..end], rng.mask()));
                start = end;
                if fin {
                    let payload = Bytes::copy_from_slice(&payload);
                    expected.push(if is_text {
                        Event::Text(payload)
                    } else {
                        Event::Binary(payload)
                    });
                }
                if rng.below(4) == 0 {
                    let ping: Vec<u8> = (0..rng.below(126)).map(|_| rng.next() as u8).collect();
                    input.extend(raw_frame(0x80 | PING, &ping, rng.mask()));
                    expected.push(Event::Ping(Bytes::from(ping)));
                }
            }
        }
        let largest = if rng.below(2) == 0 { 20 } else { 5000 };
        let max = 1 + rng.below(largest);
        let mut seed = Rng(rng.next() | 1);
        let whole = feed_cut(&input, &mut || usize::MAX);
        assert_eq!(whole, (expected.clone(), None), "round {round}, whole");
        let got = feed_cut(&input, &mut || 1 + seed.below(max));
        assert_eq!(got, (expected, None), "round {round}");
    }
}

/// The client side: what the writer of a client encodes (masked, a fresh key per frame) the
/// reader of a server reads back; a server's unmasked frames read on a client reader, and a
/// masked one from the server is a protocol error (1002).
#[test]
fn client_frames_are_masked_and_server_frames_are_not() {
    let mut out = crate::ws::frames::Frames::masked();
    out.encode(TEXT, b"hello");
    out.encode(BINARY, &[7; 300]);
    out.encode_close(1000, "bye");
    let wire = out.take_for_test();
    // Mask bit set on every frame, and two frames never share their key.
    assert_eq!(wire[1] & 0x80, 0x80);
    assert_ne!(
        &wire[2..6],
        &wire[13..17],
        "keys differ per frame (1 in 2^32 to fail)"
    );
    assert_ne!(&wire[6..11], b"hello", "the payload is masked on the wire");
    assert_eq!(
        events_of(&wire),
        vec![
            text("hello"),
            binary(&[7; 300]),
            Event::Close(Some((1000, "bye".to_owned())))
        ]
    );

    let mut server = crate::ws::frames::Frames::default();
    server.encode(TEXT, b"hi");
    server.encode(PING, b"p");
    let wire = server.take_for_test();
    let (events, error) = feed(&mut reader().client(), &wire);
    assert_eq!(
        events,
        vec![text("hi"), Event::Ping(Bytes::from_static(b"p"))]
    );
    assert_eq!(error, None);

    let masked = frame(true, TEXT, b"masked");
    let (events, error) = feed(&mut reader().client(), &masked);
    assert!(events.is_empty());
    assert_eq!(error, Some(ReadError::Masked));
    assert_eq!(ReadError::Masked.close_code(), 1002);
}
