//! The server's connections: the one place that touches socket bytes.
//!
//! hyper answers a request it cannot parse by itself (400 for a bad request line or header,
//! 414 for a URI too long, 431 for headers too large) with an empty body, and offers no hook
//! to change that answer. [`Conn`] wraps each accepted socket and, when hyper writes such an
//! answer, writes Ferry's JSON error body in its place. hyper's own answers are told from the
//! application's by the `x-request-id` header, which every answer the router gives carries
//! ([`crate::guard`]); the replacement gets an id of its own. hyper writes a response head
//! in one call (one slice of a vectored write); an error answer of its own is a head alone.
//!
//! A connection closes with a lingering close: hyper closes a connection whose request body
//! it did not read (an early 413, a 401 or 403 to an upload), and closing a socket with
//! unread bytes makes the kernel send a reset, which can reach the client before it has read
//! the answer. [`Conn`] instead sends its FIN (the answer is complete) and reads and discards
//! what the client still sends, up to [`LINGER_BYTES`] or for [`LINGER_TIME`], before the
//! socket is dropped, as web servers do.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use ferry_protocol::{ErrorBody, ErrorCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A TCP listener whose connections are [`Conn`]s.
pub struct Listener(pub TcpListener);

impl axum::serve::Listener for Listener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        let (io, addr) = axum::serve::Listener::accept(&mut self.0).await;
        (Conn { io, replacing: None, linger: None }, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// An accepted connection (see the module's doc).
pub struct Conn {
    io: TcpStream,
    /// Ferry's answer being written in place of one of hyper's: its bytes, how many are
    /// written, and the length of hyper's answer (reported as written once ours is).
    replacing: Option<(Vec<u8>, usize, usize)>,
    /// The lingering close under way: until when, and how many bytes were discarded.
    linger: Option<(Pin<Box<tokio::time::Sleep>>, u64)>,
}

/// The longest a closing connection reads what its client still sends.
pub const LINGER_TIME: Duration = Duration::from_secs(2);

/// The most bytes a closing connection reads (and discards) before it drops the socket.
pub const LINGER_BYTES: u64 = 8 << 20;

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacing.is_none()
            && let Some(answer) = replacement(buf)
        {
            this.replacing = Some((answer, 0, buf.len()));
        }
        let Some((answer, written, original)) = &mut this.replacing else {
            return Pin::new(&mut this.io).poll_write(cx, buf);
        };
        while *written < answer.len() {
            match ready!(Pin::new(&mut this.io).poll_write(cx, &answer[*written..])) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => *written += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        let n = *original;
        this.replacing = None;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Sends FIN, then reads what the client still sends (see the module's doc).
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.linger.is_none() {
            ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
        }
        let (until, discarded) = this.linger.get_or_insert_with(|| (Box::pin(tokio::time::sleep(LINGER_TIME)), 0));
        let mut buf = [0u8; 16 * 1024];
        while *discarded < LINGER_BYTES {
            let mut read = ReadBuf::new(&mut buf);
            match Pin::new(&mut this.io).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => *discarded += read.filled().len() as u64,
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => return until.as_mut().poll(cx).map(Ok),
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // hyper's own error answer is a head alone: one slice. Anything else (a head with its
        // body, body chunks) goes straight to the socket, without a copy.
        let mut slices = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (slices.next(), slices.next()) {
            if self.replacing.is_none()
                && let Some(answer) = replacement(only)
            {
                self.replacing = Some((answer, 0, only.len()));
            }
            if self.replacing.is_some() {
                return self.poll_write(cx, only);
            }
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Ferry's answer for `buf` when it is an error answer hyper made itself: a whole response
/// head with an error status, no body and no `x-request-id`.
fn replacement(buf: &[u8]) -> Option<Vec<u8>> {
    let rest = buf.strip_prefix(b"HTTP/1.1 ")?;
    let status: u16 = std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()?;
    if status < 400 || !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    let head = std::str::from_utf8(buf).ok()?.to_ascii_lowercase();
    if head.contains("\r\nx-request-id:") || !head.contains("\r\ncontent-length: 0\r\n") {
        return None;
    }
    let (code, message) = match status {
        414 => (ErrorCode::UriTooLong, "the request's URI is too long; send long data in a request body"),
        431 => (ErrorCode::HeadersTooLarge, "the request's headers are too large or too many; send less in headers"),
        400 => (ErrorCode::BadRequest, "malformed HTTP request: the request line or a header could not be parsed"),
        505 => (ErrorCode::HttpVersionNotSupported, "the HTTP version is not supported; use HTTP/1.1"),
        _ => (ErrorCode::BadRequest, "the HTTP request could not be served as sent"),
    };
    let body = ErrorBody::new(code, message);
    let body = serde_json::to_vec(&body).ok()?;
    let id = crate::guard::request_id();
    tracing::info!(request_id = %id, status, "refused a request that could not be parsed");
    let reason = std::str::from_utf8(&rest[3..]).ok()?.split("\r\n").next().unwrap_or("").trim();
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-request-id: {id}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::replacement;

    #[test]
    fn only_hypers_own_empty_error_answers_are_replaced() {
        let hyper = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let out = String::from_utf8(replacement(hyper).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{out}");
        assert!(out.contains("content-type: application/json") && out.contains("\"headers_too_large\""), "{out}");
        assert!(out.contains("\r\nx-request-id: "), "{out}");
        let body = out.split("\r\n\r\n").nth(1).unwrap();
        assert!(out.contains(&format!("content-length: {}\r\n", body.len())), "{out}");
        // Ferry's own answers carry a request id; successful ones and bodies are left alone.
        assert!(replacement(b"HTTP/1.1 404 Not Found\r\nx-request-id: 1\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(replacement(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(replacement(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}").is_none());
        assert!(replacement(b"\x81\x05hello").is_none());
    }
}
