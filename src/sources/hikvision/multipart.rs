//! The alert stream's framing: a never-ending `multipart/mixed` body, read part by part as bytes
//! arrive. A part whose headers give its `Content-Length` is handed over as soon as its last byte is
//! in (an event is not held back until the next part starts); a part without one ends at the next
//! boundary.
//!
//! Guarantees: memory is bounded ([`MAX_PART`] for a part's body, [`MAX_HEADERS`] for its headers,
//! and what is buffered before a boundary is found); input that is not multipart is an error value,
//! never a panic or an endless buffer.

/// The largest part kept (face terminals may send a picture as a part).
pub const MAX_PART: usize = 4 << 20;
/// The largest header block of a part.
pub const MAX_HEADERS: usize = 8 << 10;

/// One part of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// `Content-Type` (lowercase, without parameters), when given.
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// The stream is not a multipart stream (or a part is too large).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    #[error("the alert stream is not multipart: {0}")]
    Framing(&'static str),
    #[error("a part of the alert stream is larger than {MAX_PART} bytes")]
    TooLarge,
}

/// The boundary named by a `Content-Type: multipart/...; boundary=...` header.
pub fn boundary_of(content_type: &str) -> Option<String> {
    let (mime, params) = content_type.split_once(';')?;
    if !mime.trim().to_ascii_lowercase().starts_with("multipart/") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let v = v.trim().trim_matches('"');
        (!v.is_empty() && v.len() <= 200).then(|| v.to_string())
    })
}

/// An incremental reader of a multipart body.
#[derive(Debug)]
pub struct MultipartReader {
    /// `--BOUNDARY`.
    delimiter: Vec<u8>,
    buf: Vec<u8>,
    ended: bool,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

impl MultipartReader {
    pub fn new(boundary: &str) -> MultipartReader {
        // some firmware writes the boundary parameter with its leading dashes already
        let b = boundary.trim_start_matches("--");
        MultipartReader {
            delimiter: format!("--{b}").into_bytes(),
            buf: Vec::new(),
            ended: false,
        }
    }

    /// Adds bytes that arrived.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Whether the closing delimiter (`--BOUNDARY--`) was read.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The next complete part, `None` until more bytes arrive (or after the end).
    pub fn next_part(&mut self) -> Result<Option<Part>, MultipartError> {
        if self.ended {
            return Ok(None);
        }
        let Some(at) = find(&self.buf, &self.delimiter) else {
            // keep only what could be the start of a delimiter
            if self.buf.len() > MAX_PART + MAX_HEADERS {
                return Err(MultipartError::Framing("no boundary in the data"));
            }
            return Ok(None);
        };
        let after = at + self.delimiter.len();
        if self.buf.len() < after + 2 {
            return Ok(None);
        }
        if &self.buf[after..after + 2] == b"--" {
            self.ended = true;
            self.buf.clear();
            return Ok(None);
        }
        // the rest of the delimiter line
        let Some(eol) = self.buf[after..].iter().position(|b| *b == b'\n') else {
            if self.buf.len() - after > 200 {
                return Err(MultipartError::Framing("a boundary line that does not end"));
            }
            return Ok(None);
        };
        let head_start = after + eol + 1;
        let rest = &self.buf[head_start..];
        let (head_len, sep) = match (find(rest, b"\r\n\r\n"), find(rest, b"\n\n")) {
            (Some(a), Some(b)) if b < a => (b, 2),
            (Some(a), _) => (a, 4),
            (None, Some(b)) => (b, 2),
            (None, None) => {
                if rest.len() > MAX_HEADERS {
                    return Err(MultipartError::Framing("headers that do not end"));
                }
                return Ok(None);
            }
        };
        // a part with no headers at all: the blank line comes right after the delimiter line
        let (head_len, sep) = if rest.starts_with(b"\r\n") {
            (0, 2)
        } else if rest.starts_with(b"\n") {
            (0, 1)
        } else {
            (head_len, sep)
        };
        if head_len > MAX_HEADERS {
            return Err(MultipartError::Framing("headers that do not end"));
        }
        let headers = String::from_utf8_lossy(&rest[..head_len]).into_owned();
        let mut content_type = None;
        let mut length = None;
        for line in headers.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let k = k.trim();
            if k.eq_ignore_ascii_case("content-type") {
                let t = v
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                content_type = Some(t);
            } else if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse::<usize>().ok();
            }
        }
        let body_start = head_start + head_len + sep;
        let body_end = match length {
            Some(n) if n > MAX_PART => return Err(MultipartError::TooLarge),
            Some(n) => {
                if self.buf.len() < body_start + n {
                    return Ok(None);
                }
                body_start + n
            }
            None => match find(&self.buf[body_start..], &self.delimiter) {
                Some(k) => {
                    // the line break before the delimiter belongs to the delimiter
                    let mut end = body_start + k;
                    if end > body_start && self.buf[end - 1] == b'\n' {
                        end -= 1;
                        if end > body_start && self.buf[end - 1] == b'\r' {
                            end -= 1;
                        }
                    }
                    end
                }
                None => {
                    if self.buf.len() - body_start > MAX_PART {
                        return Err(MultipartError::TooLarge);
                    }
                    return Ok(None);
                }
            },
        };
        let body = self.buf[body_start..body_end].to_vec();
        self.buf.drain(..body_end);
        Ok(Some(Part { content_type, body }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(r: &mut MultipartReader) -> Vec<Part> {
        let mut v = Vec::new();
        while let Some(p) = r.next_part().unwrap() {
            v.push(p);
        }
        v
    }

    #[test]
    fn parts_with_a_length_come_out_at_once_and_those_without_at_the_next_boundary() {
        assert_eq!(
            boundary_of("multipart/mixed; boundary=\"MIME_boundary\"").as_deref(),
            Some("MIME_boundary")
        );
        assert_eq!(boundary_of("application/json"), None);
        let mut r = MultipartReader::new("boundary");
        let a = b"{\"eventType\":\"heartBeat\"}";
        r.push(
            format!(
                "--boundary\r\nContent-Type: application/json; charset=\"UTF-8\"\r\nContent-Length: {}\r\n\r\n",
                a.len()
            )
            .as_bytes(),
        );
        assert_eq!(r.next_part().unwrap(), None);
        r.push(&a[..5]);
        assert_eq!(r.next_part().unwrap(), None);
        r.push(&a[5..]);
        let p = r.next_part().unwrap().unwrap();
        assert_eq!(p.body, a);
        assert_eq!(p.content_type.as_deref(), Some("application/json"));
        // without Content-Length, LF line ends: complete at the next delimiter
        r.push(b"\r\n--boundary\nContent-Type: application/xml\n\n<a>1</a>\n");
        assert_eq!(r.next_part().unwrap(), None);
        r.push(b"--boundary--\r\n");
        let ps = all(&mut r);
        assert_eq!(ps.len(), 1);
        assert_eq!(ps[0].body, b"<a>1</a>");
        assert!(r.ended());
    }

    #[test]
    fn garbage_is_an_error_not_an_endless_buffer() {
        let mut r = MultipartReader::new("b");
        r.push(&vec![b'x'; MAX_PART + MAX_HEADERS + 1]);
        assert!(r.next_part().is_err());
        let mut r = MultipartReader::new("b");
        r.push(b"--b\r\nContent-Length: 999999999\r\n\r\n");
        assert_eq!(r.next_part(), Err(MultipartError::TooLarge));
    }
}
