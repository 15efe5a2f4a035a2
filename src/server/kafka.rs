//! The Kafka listener: accepts connections and moves frames between sockets
//! and `kafka::Broker`. A frame is a 4-byte big-endian size and that many
//! bytes. An oversized, negative or undecodable frame closes that one
//! connection (logged); the server and other connections carry on.
//! With a TLS acceptor the listener speaks TLS only (Kafka's SSL and
//! SASL_SSL listeners); the handshake has 10 s.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::kafka::Broker;

/// Accept until `stop` flips to true.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    max_frame: usize,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let broker = Arc::clone(&broker);
                    let stop = stop.clone();
                    let tls = tls.clone();
                    tasks.spawn(async move {
                        let _open = crate::metrics::connected("kafka");
                        let _ = stream.set_nodelay(true);
                        let Some(tls) = tls else {
                            return connection(stream, peer, broker, max_frame, stop).await;
                        };
                        let handshake = tokio::time::timeout(
                            std::time::Duration::from_secs(10),
                            tls.accept(stream),
                        );
                        match handshake.await {
                            Ok(Ok(stream)) => connection(stream, peer, broker, max_frame, stop).await,
                            Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                            Err(_) => debug!(%peer, "TLS handshake timed out"),
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the
                    // connections we have, retry shortly.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => break,
        }
        // Reap finished connection tasks so the set does not grow forever.
        while tasks.try_join_next().is_some() {}
    }
    drop(listener);
    // Connections see `stop` and end after their current request.
    while tasks.join_next().await.is_some() {}
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    broker: Arc<Broker>,
    max_frame: usize,
    mut stop: watch::Receiver<bool>,
) {
    let host = peer.ip().to_string();
    let mut session = crate::kafka::Session::default();
    loop {
        let mut len = [0u8; 4];
        tokio::select! {
            r = stream.read_exact(&mut len) => {
                if r.is_err() {
                    return; // closed by the client (or reset)
                }
            }
            _ = stop.changed() => return,
        }
        let n = i32::from_be_bytes(len);
        if n < 0 || n as usize > max_frame {
            warn!(%peer, size = n, max = max_frame, "closing connection: invalid frame size");
            return;
        }
        let mut frame = BytesMut::zeroed(n as usize);
        if stream.read_exact(&mut frame).await.is_err() {
            debug!(%peer, "connection closed mid-frame");
            return;
        }
        match broker
            .handle_frame(frame.freeze(), &host, &mut session)
            .await
        {
            Ok(Some(resp)) => {
                // flush: a TLS stream holds what it has not yet sent.
                if stream.write_all(&resp).await.is_err() || stream.flush().await.is_err() {
                    return;
                }
                if session.close {
                    debug!(%peer, "closing connection: SASL authentication failed");
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => {
                warn!(%peer, error = %e, "closing connection: bad request");
                return;
            }
        }
    }
}
