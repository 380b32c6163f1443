//! The TLS side of the node's gRPC listener: accepts TCP connections, runs each
//! handshake on a task of its own (a slow or silent dialer holds up no one, and is
//! dropped after `HANDSHAKE_TIMEOUT`), and hands tonic the connections that
//! presented a certificate the CA signed, each with its [`PeerInfo`].
//!
//! The server config comes from a [`Reloading`] one, looked at (for rotated files)
//! before each handshake at most every `RELOAD_CHECK_INTERVAL`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use shoal_client::tls::{Reloading, HANDSHAKE_TIMEOUT};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::identity::{Identity, PeerInfo};
use super::SecurityMetrics;

/// Connections whose handshake is done but tonic has not taken yet.
const READY_QUEUE: usize = 64;

/// Handshakes in flight at most; a connection beyond them is closed at once and
/// counted as a failed handshake (a flood of silent connections would otherwise
/// hold a file descriptor each for `HANDSHAKE_TIMEOUT`).
pub const MAX_HANDSHAKES: usize = 1024;

/// Refused handshakes are logged at most once per this long (each is counted).
const REFUSAL_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// One accepted TLS connection and who is on the other end.
pub struct TlsConn {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerInfo,
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The TLS connections accepted on `listener`, for `serve_with_incoming`. The
/// accept loop ends when the stream is dropped (the server stopped).
pub fn incoming(
    listener: TcpListener,
    config: Arc<Reloading<rustls::ServerConfig>>,
    metrics: SecurityMetrics,
) -> impl Stream<Item = io::Result<TlsConn>> + Send + 'static {
    let (tx, mut rx) = mpsc::channel::<io::Result<TlsConn>>(READY_QUEUE);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    let logged = Arc::new(parking_lot::Mutex::new(None::<std::time::Instant>));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                metrics.handshake_failures.inc();
                log_refusal(&logged, remote, "too many TLS handshakes in flight; closed");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (tx, config, metrics) = (tx.clone(), config.clone(), metrics.clone());
            let logged = logged.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let acceptor = tokio_rustls::TlsAcceptor::from(config.fresh().await);
                let stream =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            metrics.handshake_failures.inc();
                            let hint = match e.to_string().contains("InvalidContentType") {
                                true => " (a plaintext client? this node takes TLS only)",
                                false => "",
                            };
                            log_refusal(
                                &logged,
                                remote,
                                &format!("TLS handshake refused: {e}{hint}"),
                            );
                            return;
                        }
                        Err(_) => {
                            metrics.handshake_failures.inc();
                            log_refusal(&logged, remote, "TLS handshake timed out");
                            return;
                        }
                    };
                // The verifier required a certificate, so there is one.
                let identity = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .map(|cert| Identity::of(cert));
                let info = PeerInfo {
                    remote: Some(remote),
                    identity,
                };
                let _ = tx.send(Ok(TlsConn { stream, info })).await;
            });
        }
    });
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Logs a refused connection, at most once per [`REFUSAL_LOG_INTERVAL`] (the
/// counter has them all).
fn log_refusal(
    logged: &parking_lot::Mutex<Option<std::time::Instant>>,
    remote: std::net::SocketAddr,
    what: &str,
) {
    let mut last = logged.lock();
    if last.is_some_and(|t| t.elapsed() < REFUSAL_LOG_INTERVAL) {
        return;
    }
    *last = Some(std::time::Instant::now());
    drop(last);
    tracing::info!(%remote, "{what} (refusals are logged at most once a second; shoal_tls_handshake_failures_total counts them all)");
}
