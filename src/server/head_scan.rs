//! The request-head scanner the connection guard runs over the bytes of
//! each HTTP/1 request head: where the head ends (however the bytes are
//! split across reads), whether it is too large, whether its framing headers
//! contradict each other (both `Content-Length` and `Transfer-Encoding`, or
//! differing `Content-Length` values), whether it announced a body, and
//! whether the connection's first bytes are the HTTP/2 preface.
//!
//! Pure: bytes in, a [`Scan`] out; no I/O, no clock.

use http::StatusCode;

/// What one chunk of head bytes revealed.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    More,
    /// The head ended after this many bytes of the chunk.
    Complete(usize),
    Http2,
    Reject(StatusCode, &'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineState {
    /// In the request line (leading empty lines are skipped).
    RequestLine { empty: bool },
    /// At the start of a header line.
    LineStart,
    /// After a `\r` at the start of a line: the head ends at `\n`.
    LineStartCr,
    /// Reading a header name.
    Name,
    /// Reading a Content-Length value.
    LengthValue,
    /// Skipping the rest of a line.
    Skip,
}

const CONTENT_LENGTH: &[u8] = b"content-length";
const TRANSFER_ENCODING: &[u8] = b"transfer-encoding";
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// An incremental scanner over one request head: finds its end, its size and
/// the framing headers, whatever way the bytes are split across reads.
#[derive(Debug)]
pub struct HeadScan {
    state: LineState,
    bytes: usize,
    /// On the connection's first head: how much of the h2 preface matched.
    preface: Option<usize>,
    name: [u8; 17],
    name_len: usize,
    name_overflow: bool,
    lengths: u32,
    encodings: u32,
    value: Option<u64>,
    value_invalid: bool,
    first_length: Option<u64>,
    conflict: bool,
}

impl HeadScan {
    pub fn new(first: bool) -> Self {
        HeadScan {
            state: LineState::RequestLine { empty: true },
            bytes: 0,
            preface: first.then_some(0),
            name: [0; 17],
            name_len: 0,
            name_overflow: false,
            lengths: 0,
            encodings: 0,
            value: None,
            value_invalid: false,
            first_length: None,
            conflict: false,
        }
    }

    pub fn reset(&mut self, first: bool) {
        *self = HeadScan::new(first);
    }

    pub fn feed(&mut self, chunk: &[u8], max: usize) -> Scan {
        let mut i = 0;
        while i < chunk.len() {
            let b = chunk[i];
            i += 1;
            match self.state {
                LineState::RequestLine { empty } => {
                    if self.request_line(b, empty, chunk, &mut i) {
                        return Scan::Http2;
                    }
                }
                LineState::LineStart => match b {
                    b'\r' => self.state = LineState::LineStartCr,
                    b'\n' => return self.complete(max, i),
                    _ => {
                        self.name_len = 0;
                        self.name_overflow = false;
                        self.state = LineState::Name;
                        self.push_name(b);
                    }
                },
                LineState::LineStartCr => {
                    if b == b'\n' {
                        return self.complete(max, i);
                    }
                    // A bare CR: hyper's parser rejects the head itself.
                    self.state = LineState::Skip;
                }
                LineState::Name => match b {
                    b':' => self.end_name(),
                    b'\n' => self.state = LineState::LineStart,
                    _ => self.push_name(b),
                },
                LineState::LengthValue => self.length_value(b),
                LineState::Skip => match chunk[i - 1..].iter().position(|&c| c == b'\n') {
                    Some(at) => {
                        i += at;
                        self.state = LineState::LineStart;
                    }
                    None => i = chunk.len(),
                },
            }
        }
        self.bytes += chunk.len();
        if self.bytes > max {
            return Scan::Reject(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request head too large",
            );
        }
        Scan::More
    }

    /// Byte `b` of the request line (at `chunk[*i - 1]`); true when the
    /// HTTP/2 preface is complete. Once the line cannot be the preface,
    /// nothing more is learnt from it: `*i` jumps to its end.
    #[inline]
    fn request_line(&mut self, b: u8, empty: bool, chunk: &[u8], i: &mut usize) -> bool {
        if let Some(matched) = self.preface {
            if matched < H2_PREFACE.len() && b == H2_PREFACE[matched] {
                self.preface = Some(matched + 1);
                if matched + 1 == H2_PREFACE.len() {
                    return true;
                }
            } else {
                self.preface = None;
            }
        }
        match b {
            b'\n' if empty => {}
            b'\n' => self.state = LineState::LineStart,
            b'\r' => {}
            _ if self.preface.is_none() => match chunk[*i..].iter().position(|&c| c == b'\n') {
                Some(at) => {
                    *i += at + 1;
                    self.state = LineState::LineStart;
                }
                None => {
                    *i = chunk.len();
                    self.state = LineState::RequestLine { empty: false };
                }
            },
            _ => self.state = LineState::RequestLine { empty: false },
        }
        false
    }

    /// Byte `b` of a Content-Length value.
    #[inline]
    fn length_value(&mut self, b: u8) {
        match b {
            b'0'..=b'9' => {
                let digit = u64::from(b - b'0');
                let next = self
                    .value
                    .unwrap_or(0)
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(digit));
                self.value_invalid |= next.is_none();
                self.value = next;
            }
            b' ' | b'\t' | b'\r' => {}
            b'\n' => {
                self.end_length();
                self.state = LineState::LineStart;
            }
            _ => self.value_invalid = true,
        }
    }

    fn push_name(&mut self, b: u8) {
        if self.name_len < self.name.len() {
            self.name[self.name_len] = b.to_ascii_lowercase();
            self.name_len += 1;
        } else {
            self.name_overflow = true;
        }
    }

    fn end_name(&mut self) {
        let name = &self.name[..self.name_len];
        self.state = LineState::Skip;
        if self.name_overflow {
            return;
        }
        if name == CONTENT_LENGTH {
            self.lengths += 1;
            self.value = None;
            self.value_invalid = false;
            self.state = LineState::LengthValue;
        } else if name == TRANSFER_ENCODING {
            self.encodings += 1;
        }
    }

    fn end_length(&mut self) {
        // Lists ("5, 5") and junk are left to hyper's own parser.
        let (Some(value), false) = (self.value, self.value_invalid) else {
            return;
        };
        match self.first_length {
            None => self.first_length = Some(value),
            Some(first) if first != value => self.conflict = true,
            Some(_) => {}
        }
    }

    /// Whether the head announced no body (no Transfer-Encoding, no or a
    /// zero Content-Length): the next bytes are the next request's head.
    pub fn bodiless(&self) -> bool {
        self.encodings == 0
            && (self.lengths == 0 || (self.first_length == Some(0) && !self.conflict))
    }

    /// The head ended after `consumed` bytes of this chunk.
    fn complete(&mut self, max: usize, consumed: usize) -> Scan {
        self.bytes += consumed;
        if self.bytes > max {
            Scan::Reject(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request head too large",
            )
        } else if self.lengths > 0 && self.encodings > 0 {
            Scan::Reject(
                StatusCode::BAD_REQUEST,
                "both Content-Length and Transfer-Encoding",
            )
        } else if self.conflict {
            Scan::Reject(StatusCode::BAD_REQUEST, "conflicting Content-Length values")
        } else {
            Scan::Complete(consumed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_whole(head: &[u8]) -> Scan {
        HeadScan::new(true).feed(head, 65536)
    }

    /// Feeds the head one byte at a time, as a slow client would send it.
    fn scan_bytewise(head: &[u8]) -> Scan {
        let mut scan = HeadScan::new(true);
        for b in head {
            match scan.feed(std::slice::from_ref(b), 65536) {
                Scan::More => {}
                other => return other,
            }
        }
        Scan::More
    }

    #[test]
    fn a_plain_head_completes_at_the_empty_line() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(scan_whole(head), Scan::Complete(head.len()));
        assert_eq!(scan_bytewise(head), Scan::Complete(1));
        assert_eq!(
            scan_whole(b"GET / HTTP/1.1\nHost: a\n\n"),
            Scan::Complete(24)
        );
    }

    #[test]
    fn a_head_split_anywhere_in_two_completes_at_the_same_byte() {
        let heads: [&[u8]; 3] = [
            b"GET /a/long/path?q=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            b"\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            b"PRI /not-a-preface HTTP/1.1\r\nHost: a\r\n\r\n",
        ];
        for head in heads {
            for first in [true, false] {
                for at in 0..=head.len() {
                    let (a, b) = head.split_at(at);
                    let mut scan = HeadScan::new(first);
                    let got = match scan.feed(a, 65536) {
                        Scan::More => match scan.feed(b, 65536) {
                            Scan::Complete(n) => Scan::Complete(a.len() + n),
                            other => other,
                        },
                        other => other,
                    };
                    assert_eq!(
                        got,
                        Scan::Complete(head.len()),
                        "split at {at}, first={first}"
                    );
                    assert!(scan.bodiless());
                }
            }
        }
    }

    #[test]
    fn an_unfinished_head_asks_for_more() {
        assert_eq!(scan_whole(b"GET / HTTP/1.1\r\nHost: a\r\n"), Scan::More);
    }

    #[test]
    fn both_length_and_chunked_are_rejected_in_any_case_and_split() {
        let head = b"POST / HTTP/1.1\r\nHost: a\r\ncOnTeNt-LeNgTh: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        let want = Scan::Reject(
            StatusCode::BAD_REQUEST,
            "both Content-Length and Transfer-Encoding",
        );
        assert_eq!(scan_whole(head), want);
        assert_eq!(scan_bytewise(head), want);
    }

    #[test]
    fn differing_lengths_are_rejected_and_equal_ones_pass() {
        let bad = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        assert_eq!(
            scan_bytewise(bad),
            Scan::Reject(StatusCode::BAD_REQUEST, "conflicting Content-Length values")
        );
        let same = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(scan_whole(same), Scan::Complete(same.len()));
    }

    #[test]
    fn a_head_over_the_limit_is_rejected() {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        head.extend(std::iter::repeat_n(b"x-pad: 0123456789\r\n".as_slice(), 100).flatten());
        assert_eq!(
            HeadScan::new(false).feed(&head, 1024),
            Scan::Reject(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request head too large"
            )
        );
    }

    #[test]
    fn the_h2_preface_switches_to_passthrough_on_the_first_head_only() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        assert_eq!(scan_bytewise(preface), Scan::Http2);
        assert_eq!(
            HeadScan::new(false).feed(preface, 65536),
            Scan::Complete(18)
        );
    }

    #[test]
    fn only_bodiless_heads_let_the_next_head_be_scanned() {
        let mut scan = HeadScan::new(true);
        assert!(matches!(
            scan.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 65536),
            Scan::Complete(_)
        ));
        assert!(scan.bodiless());
        let mut scan = HeadScan::new(true);
        scan.feed(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 65536);
        assert!(scan.bodiless());
        let mut scan = HeadScan::new(true);
        scan.feed(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n", 65536);
        assert!(!scan.bodiless());
        let mut scan = HeadScan::new(true);
        scan.feed(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            65536,
        );
        assert!(!scan.bodiless());
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        assert_eq!(
            scan_whole(b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Scan::Complete(31)
        );
    }
}
