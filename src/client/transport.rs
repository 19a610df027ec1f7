//! The client's one connection to the relay: a UDP socket, or a TCP stream framed by
//! [`crate::sip::framing`].
//!
//! [`Conn::recv`] is cancel-safe (it may lose the race in a `select!` without losing bytes):
//! UDP receives whole datagrams, and TCP bytes stay in the connection's buffer until a whole
//! message is there.

use std::io;
use std::net::{IpAddr, SocketAddr};

use bytes::BytesMut;
use rsipstack::sip::SipMessage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

use super::{ClientError, Transport};
use crate::sip::framing::{Frame, StreamFramer, DEFAULT_MAX_MESSAGE_LEN};

/// A message from the relay and where it came from.
pub(crate) struct Incoming {
    pub msg: SipMessage,
    pub src: SocketAddr,
}

pub(crate) enum Conn {
    Udp {
        sock: UdpSocket,
        peer: SocketAddr,
        buf: Vec<u8>,
    },
    Tcp {
        stream: TcpStream,
        peer: SocketAddr,
        buf: BytesMut,
        framer: StreamFramer,
    },
}

impl Conn {
    /// Binds (UDP) or connects (TCP) from `local_ip` to the relay at `proxy`.
    pub async fn open(
        transport: Transport,
        local_ip: IpAddr,
        proxy: SocketAddr,
    ) -> io::Result<Conn> {
        match transport {
            Transport::Udp => {
                let sock = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await?;
                Ok(Conn::Udp {
                    sock,
                    peer: proxy,
                    buf: vec![0; 65_536],
                })
            }
            Transport::Tcp => {
                let socket = if proxy.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                socket.bind(SocketAddr::new(local_ip, 0))?;
                let stream = socket.connect(proxy).await?;
                stream.set_nodelay(true)?;
                Ok(Conn::Tcp {
                    stream,
                    peer: proxy,
                    buf: BytesMut::with_capacity(8192),
                    framer: StreamFramer::new(DEFAULT_MAX_MESSAGE_LEN),
                })
            }
        }
    }

    /// The address to write in Via and Contact. An unspecified bind address is replaced by
    /// the address the OS routes to the relay from.
    pub async fn advertised_addr(&self) -> io::Result<SocketAddr> {
        let local = match self {
            Conn::Udp { sock, .. } => sock.local_addr()?,
            Conn::Tcp { stream, .. } => stream.local_addr()?,
        };
        if !local.ip().is_unspecified() {
            return Ok(local);
        }
        let peer = self.peer();
        let probe = UdpSocket::bind(SocketAddr::new(local.ip(), 0)).await?;
        probe.connect(peer).await?;
        Ok(SocketAddr::new(probe.local_addr()?.ip(), local.port()))
    }

    pub fn peer(&self) -> SocketAddr {
        match self {
            Conn::Udp { peer, .. } | Conn::Tcp { peer, .. } => *peer,
        }
    }

    pub fn reliable(&self) -> bool {
        matches!(self, Conn::Tcp { .. })
    }

    /// Sends a request to the relay.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let peer = self.peer();
        self.send_to(bytes, peer).await
    }

    /// Sends to `dest` over UDP (responses go back where the request came from), or down
    /// the one TCP stream.
    pub async fn send_to(&mut self, bytes: &[u8], dest: SocketAddr) -> io::Result<()> {
        match self {
            Conn::Udp { sock, .. } => sock.send_to(bytes, dest).await.map(|_| ()),
            Conn::Tcp { stream, .. } => stream.write_all(bytes).await,
        }
    }

    /// The next parseable SIP message. Unparseable datagrams and frames are skipped.
    pub async fn recv(&mut self) -> Result<Incoming, ClientError> {
        match self {
            Conn::Udp { sock, buf, .. } => loop {
                let (n, src) = match sock.recv_from(buf).await {
                    Ok(r) => r,
                    // An ICMP error for an earlier datagram, reported on some platforms.
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
                        ) =>
                    {
                        continue
                    }
                    Err(e) => return Err(e.into()),
                };
                let data = &buf[..n];
                if data.iter().all(u8::is_ascii_whitespace) {
                    continue; // keep-alive
                }
                match SipMessage::try_from(data) {
                    Ok(msg) => return Ok(Incoming { msg, src }),
                    Err(e) => tracing::debug!(%src, error = %e, "dropping unparseable datagram"),
                }
            },
            Conn::Tcp {
                stream,
                buf,
                peer,
                framer,
            } => loop {
                match framer.decode(buf)? {
                    Some(Frame::Message(bytes)) => match SipMessage::try_from(&bytes[..]) {
                        Ok(msg) => return Ok(Incoming { msg, src: *peer }),
                        Err(e) => tracing::debug!(error = %e, "dropping unparseable message"),
                    },
                    Some(Frame::Ping) => stream.write_all(b"\r\n").await?,
                    None => {
                        if stream.read_buf(buf).await? == 0 {
                            return Err(ClientError::ConnectionClosed);
                        }
                    }
                }
            },
        }
    }
}
