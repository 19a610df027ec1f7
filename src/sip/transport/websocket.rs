//! SIP over WebSocket (RFC 7118): the handshake must offer the `sip` subprotocol, and each
//! WebSocket message (text or binary) carries exactly one SIP message. Pings are answered by
//! the WebSocket layer. Messages over 64 KiB close the connection.

use super::{Flow, Inbound, Net, MAX_STREAM_MESSAGE};
use crate::config::Protocol;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// The subprotocol RFC 7118 registers.
const SUBPROTOCOL: &str = "sip";

/// Accepts the handshake when the client offers the `sip` subprotocol, and answers with it.
#[allow(clippy::result_large_err)] // the signature tungstenite's callback requires
fn negotiate(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    let offers_sip = req
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case(SUBPROTOCOL));
    if !offers_sip {
        let mut refusal = ErrorResponse::new(Some(
            "SIP over WebSocket needs the `sip` subprotocol (RFC 7118)".into(),
        ));
        *refusal.status_mut() = StatusCode::BAD_REQUEST;
        return Err(refusal);
    }
    resp.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    Ok(resp)
}

pub(super) async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    protocol: Protocol,
    net: &Net,
    mut outgoing: mpsc::Receiver<Bytes>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_STREAM_MESSAGE))
        .max_frame_size(Some(MAX_STREAM_MESSAGE));
    let ws = match tokio_tungstenite::accept_hdr_async_with_config(stream, negotiate, Some(config))
        .await
    {
        Ok(ws) => ws,
        Err(e) => return tracing::debug!(%peer, error = %e, "WebSocket handshake failed"),
    };
    let (mut sink, mut source) = ws.split();
    let idle = tokio::time::sleep(net.limits.idle);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            _ = &mut idle => {
                tracing::debug!(%peer, "closing idle WebSocket");
                let _ = sink.close().await;
                break;
            }
            out = outgoing.recv() => {
                let Some(bytes) = out else { break };
                let message = match String::from_utf8(bytes.to_vec()) {
                    Ok(text) => Message::text(text),
                    Err(e) => Message::binary(e.into_bytes()),
                };
                if sink.send(message).await.is_err() {
                    break;
                }
            }
            received = source.next() => {
                let bytes = match received {
                    Some(Ok(Message::Text(text))) => Bytes::from(text),
                    Some(Ok(Message::Binary(bytes))) => bytes,
                    // Answer pings (the pong is queued by the WebSocket layer; flush sends it).
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                        if sink.flush().await.is_err() {
                            break;
                        }
                        continue;
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                };
                let flow = Flow { protocol, remote: peer, local: 0 };
                if net.inbound.send(Inbound { bytes, flow }).await.is_err() {
                    break;
                }
            }
        }
        idle.as_mut()
            .reset(tokio::time::Instant::now() + net.limits.idle);
    }
}
