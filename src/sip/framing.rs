//! Message framing for SIP over a byte stream (TCP, TLS): RFC 3261 §18.3.
//!
//! A message is its header section up to the first empty line (`CRLF CRLF`), then exactly
//! `Content-Length` bytes of body (a missing `Content-Length` counts as 0). Between
//! messages a peer may send RFC 5626 §4.4.1 keep-alives: a double CRLF "ping" (answer with
//! a single CRLF "pong") and single CRLF "pongs" (ignored).
//!
//! [`StreamFramer`] is free of I/O: feed it the bytes read so far; it takes one frame off the
//! front of the buffer when a whole one is there, and remembers how far it has already looked
//! for the end of the header section, so a message arriving in many small reads is scanned
//! once, not once per read. The relay's TCP transport and `tollgate call` share it.

use bytes::{Buf, Bytes, BytesMut};

/// The default upper bound on one message (header section plus body).
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 1 << 20;

/// One unit taken off a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A whole SIP message, header section and body.
    Message(Bytes),
    /// An RFC 5626 keep-alive ping (`CRLF CRLF`): answer with a single `CRLF`.
    Ping,
}

/// The stream cannot be framed; the connection should be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The header section or the whole message exceeds the limit.
    #[error("SIP message longer than {0} bytes")]
    TooLong(usize),
    /// `Content-Length` is not a decimal number.
    #[error("invalid Content-Length `{0}`")]
    BadContentLength(String),
    /// Two `Content-Length` headers disagree.
    #[error("conflicting Content-Length headers")]
    ConflictingContentLength,
}

/// Frames one stream. Keep one per connection, beside its read buffer.
#[derive(Debug, Clone)]
pub struct StreamFramer {
    max_len: usize,
    /// Bytes at the front of the buffer already searched for `CRLF CRLF` without success.
    scanned: usize,
}

impl StreamFramer {
    /// A framer that refuses messages longer than `max_len` bytes.
    pub fn new(max_len: usize) -> StreamFramer {
        StreamFramer {
            max_len,
            scanned: 0,
        }
    }

    /// Takes the next frame off the front of `buf`, or `Ok(None)` if more bytes are needed.
    /// `buf` must only grow at its end between calls (as `read_buf` does).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FramingError> {
        let frame = decode_from(buf, self.max_len, &mut self.scanned)?;
        if frame.is_some() {
            self.scanned = 0;
        }
        Ok(frame)
    }
}

fn decode_from(
    buf: &mut BytesMut,
    max_len: usize,
    scanned: &mut usize,
) -> Result<Option<Frame>, FramingError> {
    loop {
        if buf.starts_with(b"\r\n\r\n") {
            buf.advance(4);
            return Ok(Some(Frame::Ping));
        }
        if buf.starts_with(b"\r\n") || buf[..] == b"\r"[..] {
            if b"\r\n\r\n".starts_with(&buf[..]) {
                // Could still become a ping.
                return Ok(None);
            }
            // A pong (or stray CRLF) before a message.
            buf.advance(2);
            *scanned = scanned.saturating_sub(2);
            continue;
        }
        break;
    }
    // Resume three bytes early: a CRLF CRLF may straddle the previous read's end.
    let from = scanned.saturating_sub(3);
    let Some(head_len) = find_double_crlf(&buf[from..]).map(|i| i + from) else {
        if buf.len() > max_len {
            return Err(FramingError::TooLong(max_len));
        }
        *scanned = buf.len();
        return Ok(None);
    };
    *scanned = head_len;
    let header_end = head_len + 4;
    let body_len = content_length(&buf[..head_len])?;
    let total = header_end
        .checked_add(body_len)
        .ok_or(FramingError::TooLong(max_len))?;
    if total > max_len {
        return Err(FramingError::TooLong(max_len));
    }
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some(Frame::Message(buf.split_to(total).freeze())))
}

fn find_double_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// The `Content-Length` (or compact `l`) of a header section; 0 when absent.
fn content_length(head: &[u8]) -> Result<usize, FramingError> {
    let mut found: Option<usize> = None;
    // Skip the start line.
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            continue; // folded continuation of the previous header
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if !(name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")) {
            continue;
        }
        let value = line[colon + 1..].trim_ascii();
        let bad = || FramingError::BadContentLength(String::from_utf8_lossy(value).into_owned());
        if value.is_empty() || value.len() > 10 || !value.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        let n: usize = std::str::from_utf8(value)
            .map_err(|_| bad())?
            .parse()
            .map_err(|_| bad())?;
        match found {
            Some(prev) if prev != n => return Err(FramingError::ConflictingContentLength),
            _ => found = Some(n),
        }
    }
    Ok(found.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One frame with a fresh framer: no memory of earlier calls.
    fn decode(buf: &mut BytesMut, max_len: usize) -> Result<Option<Frame>, FramingError> {
        StreamFramer::new(max_len).decode(buf)
    }

    const MSG: &[u8] = b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP x;branch=z9hG4bK1\r\nContent-Length: 5\r\n\r\nhello";

    #[test]
    fn byte_by_byte_then_two_at_once() {
        let mut buf = BytesMut::new();
        for (i, b) in MSG.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let got = decode(&mut buf, 1024).unwrap();
            if i + 1 < MSG.len() {
                assert_eq!(got, None, "at {i}");
            } else {
                assert_eq!(got, Some(Frame::Message(Bytes::from_static(MSG))));
            }
        }
        assert!(buf.is_empty());

        let mut buf = BytesMut::from(&[MSG, MSG, b"SIP/2.0 200 OK\r\nl: 0\r\n\r\n"].concat()[..]);
        assert_eq!(
            decode(&mut buf, 1024).unwrap(),
            Some(Frame::Message(Bytes::from_static(MSG)))
        );
        assert_eq!(
            decode(&mut buf, 1024).unwrap(),
            Some(Frame::Message(Bytes::from_static(MSG)))
        );
        assert_eq!(
            decode(&mut buf, 1024).unwrap(),
            Some(Frame::Message(Bytes::from_static(
                b"SIP/2.0 200 OK\r\nl: 0\r\n\r\n"
            )))
        );
        assert_eq!(decode(&mut buf, 1024).unwrap(), None);
    }

    #[test]
    fn body_with_blank_lines_and_missing_length() {
        let m = b"SIP/2.0 200 OK\r\ncontent-LENGTH :  8\r\n\r\n\r\n\r\nab\r\n";
        let mut buf = BytesMut::from(&[&m[..], b"\r\n"].concat()[..]);
        assert_eq!(
            decode(&mut buf, 1024).unwrap(),
            Some(Frame::Message(Bytes::from_static(m)))
        );
        assert_eq!(&buf[..], b"\r\n");
        assert_eq!(decode(&mut buf, 1024).unwrap(), None);
        let m = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\n";
        let mut buf = BytesMut::from(&m[..]);
        assert_eq!(
            decode(&mut buf, 1024).unwrap(),
            Some(Frame::Message(Bytes::from_static(m)))
        );
    }

    #[test]
    fn a_framer_resumes_its_scan_across_reads() {
        let mut framer = StreamFramer::new(1024);
        let mut buf = BytesMut::new();
        for chunk in MSG.chunks(7) {
            assert_eq!(framer.decode(&mut buf).unwrap(), None);
            buf.extend_from_slice(chunk);
        }
        assert_eq!(
            framer.decode(&mut buf).unwrap(),
            Some(Frame::Message(Bytes::from_static(MSG)))
        );
        // The CRLF CRLF split across two reads is still found.
        let (head, tail) = MSG.split_at(MSG.len() - 6);
        buf.extend_from_slice(head);
        assert_eq!(framer.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(tail);
        assert_eq!(
            framer.decode(&mut buf).unwrap(),
            Some(Frame::Message(Bytes::from_static(MSG)))
        );
    }

    #[test]
    fn keepalives() {
        let mut buf = BytesMut::from(&b"\r\n"[..]);
        assert_eq!(decode(&mut buf, 1024).unwrap(), None);
        buf.extend_from_slice(b"\r\n");
        assert_eq!(decode(&mut buf, 1024).unwrap(), Some(Frame::Ping));
        assert!(buf.is_empty());
        // A pong before a message is skipped.
        let mut buf = BytesMut::from(&[b"\r\n", MSG].concat()[..]);
        assert_eq!(
            decode(&mut buf, 1024).unwrap(),
            Some(Frame::Message(Bytes::from_static(MSG)))
        );
    }

    #[test]
    fn errors() {
        let mut buf = BytesMut::from(&b"SIP/2.0 200 OK\r\nContent-Length: abc\r\n\r\n"[..]);
        assert!(matches!(
            decode(&mut buf, 1024),
            Err(FramingError::BadContentLength(_))
        ));
        let mut buf = BytesMut::from(&b"SIP/2.0 200 OK\r\nContent-Length: -1\r\n\r\n"[..]);
        assert!(decode(&mut buf, 1024).is_err());
        let mut buf = BytesMut::from(&b"SIP/2.0 200 OK\r\nContent-Length: 1\r\nl: 2\r\n\r\nab"[..]);
        assert_eq!(
            decode(&mut buf, 1024),
            Err(FramingError::ConflictingContentLength)
        );
        let mut buf = BytesMut::from(&b"SIP/2.0 200 OK\r\nContent-Length: 99999999999\r\n\r\n"[..]);
        assert!(decode(&mut buf, 1024).is_err());
        let mut buf = BytesMut::from(&b"SIP/2.0 200 OK\r\nContent-Length: 2000\r\n\r\n"[..]);
        assert_eq!(decode(&mut buf, 1024), Err(FramingError::TooLong(1024)));
        let mut buf = BytesMut::from(&vec![b'a'; 2000][..]);
        assert_eq!(decode(&mut buf, 1024), Err(FramingError::TooLong(1024)));
    }
}
