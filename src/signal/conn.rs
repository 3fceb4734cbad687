//! One HTTP connection, plain or HTTPS: the TLS handshake (bounded by the header timeout),
//! HTTP/1.1 with hyper's header-read timeout (which also closes idle keep-alive
//! connections), or HTTP/2 when ALPN chose it; and, for every request, its whole body read
//! within the body timeout and size limit before the router sees it (408 and 413 otherwise).
//!
//! Owns nothing beyond the connection; the router (`signal::app`) answers the requests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, Response, Version};
use axum::response::IntoResponse;
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tower::ServiceExt;

use super::error::ApiError;
use super::listen::{HttpLimits, MAX_BODY};
use super::origin::Scheme;

/// HTTP/2 pings an idle connection this often and closes it when a ping goes unanswered
/// this long.
const H2_KEEPALIVE: Duration = Duration::from_secs(20);
/// Most requests at once on one HTTP/2 connection.
const H2_MAX_STREAMS: u32 = 32;

/// A connection about to be served.
pub(super) struct Connection {
    pub peer: SocketAddr,
    pub app: Router,
    pub limits: HttpLimits,
    /// Turns true when the server stops.
    pub shutdown: watch::Receiver<bool>,
}

impl Connection {
    /// Serves the connection until it closes, times out or the server stops.
    pub async fn run(self, tcp: tokio::net::TcpStream, tls: Option<tokio_rustls::TlsAcceptor>) {
        let Some(acceptor) = tls else {
            return self.http(tcp, false, Scheme::Http).await;
        };
        let peer = self.peer;
        match tokio::time::timeout(self.limits.header_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => {
                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                self.http(stream, h2, Scheme::Https).await
            }
            Ok(Err(e)) => tracing::debug!(client = %peer, "TLS handshake failed: {e}"),
            Err(_) => tracing::debug!(
                client = %peer,
                "TLS handshake not done within {:?}: closed",
                self.limits.header_timeout
            ),
        }
    }

    async fn http<I>(self, io: I, h2: bool, scheme: Scheme)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            peer,
            app,
            limits,
            mut shutdown,
        } = self;
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(request(app, req, peer, scheme, limits).await) }
        });
        let io = TokioIo::new(io);
        let result = if h2 {
            let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            b.timer(TokioTimer::new())
                .keep_alive_interval(Some(H2_KEEPALIVE))
                .keep_alive_timeout(H2_KEEPALIVE)
                .max_concurrent_streams(H2_MAX_STREAMS);
            let conn = b.serve_connection(io, service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => r,
                _ = stopping(&mut shutdown) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        } else {
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(true);
            let conn = b.serve_connection(io, service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => r,
                _ = stopping(&mut shutdown) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        };
        if let Err(e) = result {
            if e.is_timeout() {
                tracing::debug!(
                    client = %peer,
                    "HTTP: no complete request headers within {:?}: closed",
                    limits.header_timeout
                );
            } else {
                tracing::debug!(client = %peer, "HTTP connection: {e}");
            }
        }
    }
}

/// One request: its body read whole within the limits, then the router's answer.
async fn request(
    app: Router,
    req: Request<Incoming>,
    peer: SocketAddr,
    scheme: Scheme,
    limits: HttpLimits,
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(ConnectInfo(peer));
    parts.extensions.insert(scheme);
    // HTTP/1 connections whose body was not read are closed after the answer; HTTP/2
    // resets the one stream by itself (and forbids the header).
    let close = |mut res: Response<Body>| {
        if parts.version <= Version::HTTP_11 {
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        res
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return close(ApiError::PayloadTooLarge(MAX_BODY).into_response());
    }
    let read = Limited::new(body, MAX_BODY).collect();
    let bytes = match tokio::time::timeout(limits.body_timeout, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return close(ApiError::PayloadTooLarge(MAX_BODY).into_response());
        }
        Ok(Err(e)) => {
            tracing::debug!(client = %peer, path = parts.uri.path(), "request body: {e}");
            return close(
                ApiError::BadRequest("the request body could not be read".into()).into_response(),
            );
        }
        Err(_) => {
            tracing::info!(
                client = %peer,
                method = %parts.method,
                "HTTP: request body not complete within {:?}: 408",
                limits.body_timeout
            );
            return close(ApiError::RequestTimeout(limits.body_timeout).into_response());
        }
    };
    let req = Request::from_parts(parts, Body::from(bytes));
    match app.oneshot(req).await {
        Ok(res) => res,
        Err(never) => match never {},
    }
}

/// Resolves when the server stops (or its listener is gone).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}
