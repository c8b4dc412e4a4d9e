//! Boot files over HTTP (the in-memory OS's kernel and initramfs, the iPXE
//! binaries, rEFInd), read from the page cache in the connection's task.
//!
//! `tower_http::ServeFile` opened each file and read each 64 KiB on the
//! blocking pool: three thread hand-offs per request, and in a boot storm
//! ~180 blocking threads whose wake-ups took a third of the server's CPU
//! while machines waited seconds for their kernel. Boot files are read by
//! every machine, so they stay in the page cache, where a read takes
//! microseconds: here each chunk is a positioned read (`pread`) in the
//! task. A file not yet cached costs one disk read in the task, once.
//!
//! Served: GET and HEAD (axum answers HEAD through the GET route), one
//! byte range (`Range: bytes=…`; several ranges are answered with the
//! whole file, as RFC 9110 allows), `If-Range` and `If-Modified-Since`
//! against the file's modification time, `Last-Modified` and
//! `Accept-Ranges`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio_stream::Stream;

/// Bytes read per chunk of a response body.
const CHUNK: u64 = 64 * 1024;

/// What a `Range` header asks of a file of a given length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wanted {
    /// The whole file: no range, or one this server answers with the whole
    /// file (several ranges, another unit, bad syntax).
    Whole,
    /// Bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// A range wholly past the end: 416.
    Unsatisfiable,
}

/// Reads a `Range` header value against a file of `len` bytes.
pub(crate) fn wanted(range: Option<&str>, len: u64) -> Wanted {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return Wanted::Whole;
    };
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Wanted::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    match (first.trim().is_empty(), number(first), number(last)) {
        // `-n`: the last n bytes.
        (true, _, Some(n)) => {
            if n == 0 || len == 0 {
                Wanted::Unsatisfiable
            } else {
                Wanted::Part {
                    start: len.saturating_sub(n),
                    end: len - 1,
                }
            }
        }
        // `a-` and `a-b`.
        (false, Some(start), last) if last.is_some() || last_is_open(last_text(spec)) => {
            if start >= len {
                return Wanted::Unsatisfiable;
            }
            match last {
                Some(end) if end < start => Wanted::Whole,
                Some(end) => Wanted::Part {
                    start,
                    end: end.min(len - 1),
                },
                None => Wanted::Part {
                    start,
                    end: len - 1,
                },
            }
        }
        _ => Wanted::Whole,
    }
}

/// The text after the dash of `a-b`.
fn last_text(spec: &str) -> &str {
    spec.split_once('-').map_or("", |(_, l)| l)
}

/// True when the end of a range is left open (`a-`), as opposed to
/// malformed.
fn last_is_open(last: &str) -> bool {
    last.trim().is_empty()
}

/// Serves the regular file at `path` to a request with these headers.
pub(crate) fn serve(path: &Path, headers: &HeaderMap) -> Response {
    let opened = File::open(path).and_then(|f| {
        let meta = f.metadata()?;
        Ok((f, meta))
    });
    let (file, meta) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot read a boot file: {e}");
            return (StatusCode::NOT_FOUND, "not found\n").into_response();
        }
    };
    let len = meta.len();
    // Whole seconds: what an HTTP date can say.
    let modified = meta.modified().ok().map(whole_seconds);
    let last_modified = modified.map(httpdate::fmt_http_date);
    if let (Some(modified), Some(since)) =
        (modified, header_date(headers, header::IF_MODIFIED_SINCE))
        && modified <= since
    {
        return with_validators(
            StatusCode::NOT_MODIFIED,
            Body::empty(),
            last_modified.as_deref(),
        );
    }
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        // A Range is honoured only for the version the client has.
        .filter(|_| if_range_holds(headers, last_modified.as_deref()));
    let (status, start, end) = match wanted(range, len) {
        Wanted::Whole => (StatusCode::OK, 0, len),
        Wanted::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end + 1),
        Wanted::Unsatisfiable => {
            let mut resp = with_validators(StatusCode::RANGE_NOT_SATISFIABLE, Body::empty(), None);
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return resp;
        }
    };
    let body = Body::from_stream(Chunks {
        file,
        next: start,
        end,
    });
    let mut resp = with_validators(status, body, last_modified.as_deref());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&(end - start).to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    resp
}

/// A response with `Accept-Ranges` and, when known, `Last-Modified`.
fn with_validators(status: StatusCode, body: Body, last_modified: Option<&str>) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(v) = last_modified.and_then(|d| HeaderValue::from_str(d).ok()) {
        h.insert(header::LAST_MODIFIED, v);
    }
    resp
}

/// `If-Range` absent, or naming the version served (its date).
fn if_range_holds(headers: &HeaderMap, last_modified: Option<&str>) -> bool {
    match headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(given) => Some(given.trim()) == last_modified,
    }
}

fn header_date(headers: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    let text = headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(text).ok()
}

fn whole_seconds(t: SystemTime) -> SystemTime {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(d.as_secs()),
        Err(_) => t,
    }
}

/// A file's bytes `next..end`, a chunk per poll, each read where the
/// task runs (see the module's comment).
struct Chunks {
    file: File,
    next: u64,
    end: u64,
}

impl Stream for Chunks {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.next >= self.end {
            return Poll::Ready(None);
        }
        let want = (self.end - self.next).min(CHUNK);
        // `want` is at most CHUNK, so it fits a usize.
        let mut buf = vec![0u8; want as usize];
        match self.file.read_at(&mut buf, self.next) {
            // Shorter than its length said: truncated while being served.
            Ok(0) => Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file became shorter while it was served",
            )))),
            Ok(n) => {
                buf.truncate(n);
                self.next += n as u64;
                Poll::Ready(Some(Ok(Bytes::from(buf))))
            }
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        let len = 1000;
        let part = |start, end| Wanted::Part { start, end };
        assert_eq!(wanted(None, len), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=0-99"), len), part(0, 99));
        assert_eq!(wanted(Some("bytes=900-"), len), part(900, 999));
        assert_eq!(wanted(Some("bytes=900-5000"), len), part(900, 999));
        assert_eq!(wanted(Some("bytes=-100"), len), part(900, 999));
        assert_eq!(wanted(Some("bytes=-5000"), len), part(0, 999));
        assert_eq!(wanted(Some("bytes=1000-"), len), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=-0"), len), Wanted::Unsatisfiable);
        // Answered whole: several ranges, other units, nonsense.
        assert_eq!(wanted(Some("bytes=0-1,5-6"), len), Wanted::Whole);
        assert_eq!(wanted(Some("items=0-1"), len), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=5-1"), len), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=a-b"), len), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=1-x"), len), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=+1-2"), len), Wanted::Whole);
        assert_eq!(
            wanted(Some("bytes=99999999999999999999999-"), len),
            Wanted::Whole
        );
        assert_eq!(wanted(Some("bytes="), len), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=0-0"), 0), Wanted::Unsatisfiable);
    }
}
