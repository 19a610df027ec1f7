//! Connections: accepting them for every connection-oriented listener (TCP, WS, WSS),
//! opening TCP connections toward peers that have none, and serving a TCP byte stream framed
//! by [`crate::sip::framing::StreamFramer`] (an RFC 5626 CRLF CRLF ping gets a CRLF pong).

use super::{
    forget, queue, register, websocket, Flow, Inbound, Net, Sink, Transports, MAX_STREAM_MESSAGE,
};
use crate::config::Protocol;
use crate::sip::framing::{Frame, StreamFramer};
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

/// The RFC 5626 pong.
const PONG: &[u8] = b"\r\n";

pub(super) async fn accept_loop(
    listener: TcpListener,
    protocol: Protocol,
    tls: Option<TlsAcceptor>,
    transports: Transports,
) {
    let Sink::Net(net) = &transports.sink else {
        return;
    };
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some((tx, rx)) = register(net, peer) else {
            continue; // dropping the stream closes it
        };
        let net = net.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match protocol {
                Protocol::Tcp => serve(stream, peer, &net, rx).await,
                Protocol::Ws => websocket::serve(stream, peer, protocol, &net, rx).await,
                Protocol::Wss => match tls.expect("checked at bind").accept(stream).await {
                    Ok(stream) => websocket::serve(stream, peer, protocol, &net, rx).await,
                    Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                },
                Protocol::Udp => unreachable!("UDP has no listener to accept on"),
            }
            forget(&net, peer, &tx);
        });
    }
}

/// Sends over TCP to `dest`: down its live connection, else a new one.
pub(super) fn send(net: &Arc<Net>, dest: SocketAddr, bytes: Bytes) {
    if queue(net, dest, bytes.clone()) {
        return;
    }
    let Some((tx, rx)) = register(net, dest) else {
        return;
    };
    let _ = tx.try_send(bytes);
    let net = net.clone();
    tokio::spawn(async move {
        match TcpStream::connect(dest).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                serve(stream, dest, &net, rx).await
            }
            Err(e) => tracing::info!(%dest, error = %e, "TCP connect failed"),
        }
        forget(&net, dest, &tx);
    });
}

/// Reads framed messages from a byte stream and writes what is queued for it, until either
/// side closes, the stream cannot be framed, or it stays idle too long.
async fn serve<S>(stream: S, peer: SocketAddr, net: &Net, mut outgoing: mpsc::Receiver<Bytes>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut buf = BytesMut::with_capacity(8192);
    let mut framer = StreamFramer::new(MAX_STREAM_MESSAGE);
    let idle = tokio::time::sleep(net.limits.idle);
    tokio::pin!(idle);
    'conn: loop {
        tokio::select! {
            _ = &mut idle => {
                tracing::debug!(%peer, "closing idle connection");
                break;
            }
            out = outgoing.recv() => {
                let Some(bytes) = out else { break };
                if writer.write_all(&bytes).await.is_err() {
                    break;
                }
            }
            read = reader.read_buf(&mut buf) => {
                if !matches!(read, Ok(n) if n > 0) {
                    break;
                }
                loop {
                    match framer.decode(&mut buf) {
                        Ok(Some(Frame::Message(bytes))) => {
                            let flow = Flow { protocol: Protocol::Tcp, remote: peer, local: 0 };
                            if net.inbound.send(Inbound { bytes, flow }).await.is_err() {
                                break 'conn;
                            }
                        }
                        Ok(Some(Frame::Ping)) => {
                            if writer.write_all(PONG).await.is_err() {
                                break 'conn;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::info!(%peer, error = %e, "closing connection");
                            break 'conn;
                        }
                    }
                }
            }
        }
        idle.as_mut()
            .reset(tokio::time::Instant::now() + net.limits.idle);
    }
}
