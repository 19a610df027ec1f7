//! UDP: one socket per `udp:` listener; a datagram is one message.

use super::{Flow, Inbound};
use crate::config::Protocol;
use bytes::Bytes;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

const UDP_BUFFER_BYTES: usize = 4 * 1024 * 1024;

pub(super) fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    // Bigger kernel buffers absorb bursts; the kernel caps them at net.core.rmem_max.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(UDP_BUFFER_BYTES);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Sends from the socket the flow names (the first one if it names none we have).
pub(super) fn send(sockets: &[Arc<UdpSocket>], flow: Flow, bytes: &Bytes) {
    let Some(socket) = sockets.get(flow.local as usize).or(sockets.first()) else {
        return tracing::warn!(dest = %flow.remote, "no UDP listener to send from");
    };
    if let Err(e) = socket.try_send_to(bytes, flow.remote) {
        tracing::debug!(dest = %flow.remote, error = %e, "UDP send failed");
    }
}

pub(super) async fn receive_loop(
    socket: Arc<UdpSocket>,
    local: u16,
    inbound: mpsc::Sender<Inbound>,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        let (len, remote) = match socket.recv_from(&mut buf).await {
            Ok(v) => v,
            Err(e) => {
                // ICMP port unreachable surfaces here on some systems; keep serving.
                tracing::debug!(error = %e, "UDP receive error");
                continue;
            }
        };
        // A keep-alive datagram (CRLF) carries no message.
        if buf[..len].iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let msg = Inbound {
            bytes: Bytes::copy_from_slice(&buf[..len]),
            flow: Flow {
                protocol: Protocol::Udp,
                remote,
                local,
            },
        };
        if inbound.send(msg).await.is_err() {
            return;
        }
    }
}
