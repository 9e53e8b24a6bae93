//! `GET /metrics` over HTTP/1.1, for Prometheus. Hand-written because it is this small:
//! one request per connection, then close.
//!
//! Bounded in every way a scraper (or anyone who can reach the port) could push: at most
//! [`MAX_CONNECTIONS`] served at once (more are closed at once), a request head of at
//! most [`MAX_HEAD`] bytes, [`TIMEOUT`] for the whole exchange. Only `GET` and `HEAD`
//! are served; `/metrics` is the only path (404 elsewhere, 405 for other methods, 400 for
//! what is not HTTP). Bind it to a private address: the metrics say how busy the server
//! is, though nothing secret.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::Metrics;
use crate::shutdown::Shutdown;

/// Scrapes served at once.
pub const MAX_CONNECTIONS: usize = 8;
/// Longest request head read (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;
/// Time for one whole exchange.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The OpenMetrics text content type prometheus-client writes.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `listener` until the stop signal.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, mut shutdown: Shutdown) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.recv() => return,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many metrics connections; closing");
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if tokio::time::timeout(TIMEOUT, exchange(stream, &metrics))
                .await
                .is_err()
            {
                tracing::debug!(%peer, "metrics request timed out");
            }
            drop(permit);
        });
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Asked {
    /// `GET /metrics` (`head`: `HEAD`, no body).
    Metrics { head: bool },
    /// Another path.
    NotFound,
    /// Another method.
    Method,
    /// Not an HTTP request line.
    Bad,
}

/// Parses the request line of a head (`METHOD PATH HTTP/x.y`). Sans-IO.
fn parse(head: &[u8]) -> Asked {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let Ok(line) = std::str::from_utf8(line) else {
        return Asked::Bad;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Asked::Bad;
    };
    if !version.starts_with("HTTP/1.") {
        return Asked::Bad;
    }
    let head = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Asked::Method,
    };
    let path = target.split('?').next().unwrap_or_default();
    if path == "/metrics" {
        Asked::Metrics { head }
    } else {
        Asked::NotFound
    }
}

/// Reads one request head (bounded) and answers it.
async fn exchange(mut stream: TcpStream, metrics: &Metrics) {
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0;
    let complete = loop {
        if len == buf.len() {
            break false;
        }
        match stream.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                // Only the new bytes (and the three before them) can complete the head:
                // trickled bytes cost no rescans.
                let from = len.saturating_sub(3);
                len += n;
                if buf[from..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break true;
                }
            }
        }
    };
    let asked = if complete {
        parse(&buf[..len])
    } else {
        Asked::Bad
    };
    let (status, body, head) = match asked {
        Asked::Metrics { head } => match metrics.encode() {
            Ok(text) => ("200 OK", text, head),
            Err(_) => ("500 Internal Server Error", String::new(), false),
        },
        Asked::NotFound => ("404 Not Found", "try /metrics\n".to_owned(), false),
        Asked::Method => ("405 Method Not Allowed", String::new(), false),
        Asked::Bad => ("400 Bad Request", String::new(), false),
    };
    let content_type = if status.starts_with("200") {
        CONTENT_TYPE
    } else {
        "text/plain; charset=utf-8"
    };
    let mut reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head {
        reply.extend_from_slice(body.as_bytes());
    }
    if stream.write_all(&reply).await.is_ok() {
        let _ = stream.shutdown().await;
        // Read what the client still sends (a head past the bound), briefly: closing with
        // unread bytes would reset the connection and could destroy the reply.
        let mut sink = [0u8; 1024];
        let mut drained = 0;
        let until = tokio::time::Instant::now() + DRAIN_FOR;
        while drained < MAX_HEAD {
            match tokio::time::timeout_at(until, stream.read(&mut sink)).await {
                Ok(Ok(n)) if n > 0 => drained += n,
                _ => break,
            }
        }
    }
}

/// Longest wait for the client's leftovers after the reply.
const DRAIN_FOR: Duration = Duration::from_millis(250);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        let p = |s: &str| parse(s.as_bytes());
        assert_eq!(
            p("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Asked::Metrics { head: false }
        );
        assert_eq!(
            p("HEAD /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Asked::Metrics { head: true }
        );
        assert_eq!(p("GET / HTTP/1.1\r\n\r\n"), Asked::NotFound);
        assert_eq!(p("POST /metrics HTTP/1.1\r\n\r\n"), Asked::Method);
        assert_eq!(p("GET /metrics\r\n\r\n"), Asked::Bad);
        assert_eq!(p("\u{0}\u{1} garbage"), Asked::Bad);
        assert_eq!(p(""), Asked::Bad);
    }
}
