//! SIP transports: UDP datagrams and TCP streams framed by Content-Length (RFC 3261 §18).
//!
//! Every received message is handed to the relay core as an [`Inbound`] on one channel; the
//! core answers through [`Transports::send`], which never waits: a UDP send that would block is
//! dropped (the transaction layer retransmits), a TCP send is queued on the connection's writer.
//! TCP connections are reused in both directions and opened on demand toward a destination.

use crate::config::{Listen, Protocol};
use bytes::{Buf, Bytes, BytesMut};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

/// Largest message accepted on a stream; a peer that sends more without a complete header
/// section is cut off.
const MAX_STREAM_MESSAGE: usize = 64 * 1024;
const UDP_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// A message as it came off the wire.
#[derive(Debug)]
pub struct Inbound {
    pub bytes: Bytes,
    pub source: SocketAddr,
    pub protocol: Protocol,
}

type Writers = Arc<Mutex<HashMap<SocketAddr, mpsc::UnboundedSender<Bytes>>>>;

/// The bound transports; cheap to clone.
#[derive(Clone)]
pub struct Transports {
    udp: Option<Arc<UdpSocket>>,
    tcp_writers: Writers,
    inbound: mpsc::Sender<Inbound>,
    bound: Vec<Listen>,
}

impl Transports {
    /// Binds every listener and starts its receive loop. Returns the bound addresses in the
    /// order they were configured (port 0 resolved).
    pub async fn bind(
        listens: &[Listen],
        inbound: mpsc::Sender<Inbound>,
    ) -> io::Result<Transports> {
        let mut transports = Transports {
            udp: None,
            tcp_writers: Arc::default(),
            inbound,
            bound: Vec::new(),
        };
        for listen in listens {
            let addr = match listen.protocol {
                Protocol::Udp => {
                    let socket = Arc::new(bind_udp(listen.addr)?);
                    let addr = socket.local_addr()?;
                    if transports.udp.is_none() {
                        transports.udp = Some(socket.clone());
                    }
                    tokio::spawn(udp_receive_loop(socket, transports.inbound.clone()));
                    addr
                }
                Protocol::Tcp => {
                    let listener = TcpListener::bind(listen.addr).await?;
                    let addr = listener.local_addr()?;
                    tokio::spawn(tcp_accept_loop(listener, transports.clone()));
                    addr
                }
            };
            transports.bound.push(Listen {
                protocol: listen.protocol,
                addr,
            });
        }
        Ok(transports)
    }

    /// The bound listeners.
    pub fn bound(&self) -> &[Listen] {
        &self.bound
    }

    /// The bound address of the first listener of `protocol`.
    pub fn local_addr(&self, protocol: Protocol) -> Option<SocketAddr> {
        self.bound
            .iter()
            .find(|l| l.protocol == protocol)
            .map(|l| l.addr)
    }

    /// Sends without waiting. Errors are logged: SIP recovers from a lost message by
    /// retransmission or by the transaction timing out.
    pub fn send(&self, protocol: Protocol, dest: SocketAddr, bytes: Bytes) {
        match protocol {
            Protocol::Udp => match &self.udp {
                Some(socket) => {
                    if let Err(e) = socket.try_send_to(&bytes, dest) {
                        tracing::debug!(%dest, error = %e, "UDP send failed");
                    }
                }
                None => tracing::warn!(%dest, "no UDP listener to send from"),
            },
            Protocol::Tcp => self.send_tcp(dest, bytes),
        }
    }

    fn send_tcp(&self, dest: SocketAddr, bytes: Bytes) {
        let mut writers = self.tcp_writers.lock().expect("writers lock");
        if let Some(tx) = writers.get(&dest) {
            if tx.send(bytes.clone()).is_ok() {
                return;
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(bytes);
        writers.insert(dest, tx);
        drop(writers);
        let this = self.clone();
        tokio::spawn(async move {
            match TcpStream::connect(dest).await {
                Ok(stream) => this.serve_connection(stream, dest, rx).await,
                Err(e) => {
                    tracing::info!(%dest, error = %e, "TCP connect failed");
                    this.forget(dest);
                }
            }
        });
    }

    fn forget(&self, peer: SocketAddr) {
        self.tcp_writers.lock().expect("writers lock").remove(&peer);
    }

    async fn serve_connection(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        mut outgoing: mpsc::UnboundedReceiver<Bytes>,
    ) {
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = stream.into_split();
        let write_task = tokio::spawn(async move {
            while let Some(bytes) = outgoing.recv().await {
                if writer.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        });
        let mut buf = BytesMut::with_capacity(8192);
        'read: loop {
            match reader.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            loop {
                match next_stream_message(&mut buf) {
                    Framed::Message(bytes) => {
                        let inbound = Inbound {
                            bytes,
                            source: peer,
                            protocol: Protocol::Tcp,
                        };
                        if self.inbound.send(inbound).await.is_err() {
                            break 'read;
                        }
                    }
                    Framed::Incomplete => break,
                    Framed::Garbage => {
                        tracing::info!(%peer, "closing TCP connection: unframeable data");
                        break 'read;
                    }
                }
            }
        }
        self.forget(peer);
        write_task.abort();
    }
}

fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    // Bigger kernel buffers absorb bursts; the kernel caps them at net.core.rmem_max.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(UDP_BUFFER_BYTES);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

async fn udp_receive_loop(socket: Arc<UdpSocket>, inbound: mpsc::Sender<Inbound>) {
    let mut buf = vec![0u8; 65536];
    loop {
        let (len, source) = match socket.recv_from(&mut buf).await {
            Ok(v) => v,
            Err(e) => {
                // ICMP port unreachable surfaces here on some systems; keep serving.
                tracing::debug!(error = %e, "UDP receive error");
                continue;
            }
        };
        let msg = Inbound {
            bytes: Bytes::copy_from_slice(&buf[..len]),
            source,
            protocol: Protocol::Udp,
        };
        if inbound.send(msg).await.is_err() {
            return;
        }
    }
}

async fn tcp_accept_loop(listener: TcpListener, transports: Transports) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "TCP accept failed");
                continue;
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        transports
            .tcp_writers
            .lock()
            .expect("writers lock")
            .insert(peer, tx);
        let t = transports.clone();
        tokio::spawn(async move { t.serve_connection(stream, peer, rx).await });
    }
}

/// The result of looking for one message at the front of a stream buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed {
    Message(Bytes),
    Incomplete,
    Garbage,
}

/// Takes one complete message (headers plus Content-Length bytes of body) off the front of
/// `buf`, skipping CRLF keep-alives (RFC 5626 §3.5.1).
pub fn next_stream_message(buf: &mut BytesMut) -> Framed {
    while buf.starts_with(b"\r\n") {
        buf.advance(2);
    }
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_STREAM_MESSAGE {
            Framed::Garbage
        } else {
            Framed::Incomplete
        };
    };
    let head = &buf[..end];
    let Some(len) = stream_content_length(head) else {
        return Framed::Garbage;
    };
    let total = end + 4 + len;
    if total > MAX_STREAM_MESSAGE {
        return Framed::Garbage;
    }
    if buf.len() < total {
        return Framed::Incomplete;
    }
    Framed::Message(buf.split_to(total).freeze())
}

/// Content-Length is mandatory on streams (RFC 3261 §18.3); a missing one cannot be framed.
fn stream_content_length(head: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(head).ok()?;
    text.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        let name = name.trim();
        (name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l"))
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_by_content_length_and_skips_keepalives() {
        let mut buf = BytesMut::from(
            &b"\r\n\r\nOPTIONS sip:a SIP/2.0\r\nl: 3\r\n\r\nabcBYE sip:b SIP/2.0\r\nContent-Length: 0\r\n\r\nINV"[..],
        );
        match next_stream_message(&mut buf) {
            Framed::Message(m) => assert!(m.ends_with(b"\r\n\r\nabc")),
            other => panic!("{other:?}"),
        }
        match next_stream_message(&mut buf) {
            Framed::Message(m) => assert!(m.starts_with(b"BYE")),
            other => panic!("{other:?}"),
        }
        assert_eq!(next_stream_message(&mut buf), Framed::Incomplete);
        assert_eq!(&buf[..], b"INV");
    }

    #[test]
    fn missing_content_length_is_garbage() {
        let mut buf = BytesMut::from(&b"BYE sip:b SIP/2.0\r\nCall-ID: x\r\n\r\n"[..]);
        assert_eq!(next_stream_message(&mut buf), Framed::Garbage);
    }
}
