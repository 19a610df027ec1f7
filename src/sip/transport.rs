//! SIP transports: UDP datagrams and TCP streams (RFC 3261 §18), plus an in-memory transport
//! for the relay's unit tests.
//!
//! Every received message is handed to the relay core as an [`Inbound`] on one bounded
//! channel, tagged with its [`Flow`]: the transport, the peer's address, and which of our
//! sockets it arrived on. The core answers through [`Transports::send`], which never waits:
//!
//! - UDP leaves from the socket named by the flow, so a reply leaves from the socket its
//!   request arrived on (a node may listen on several addresses). A send that would block is
//!   dropped; the transaction layer retransmits.
//! - TCP goes down the live connection to the flow's peer when there is one (responses and
//!   in-dialog requests toward a client reuse the client's own connection), else a new
//!   connection is opened. Each connection has a bounded send queue; a peer that does not read
//!   and lets it fill is disconnected rather than allowed to grow the relay's memory.
//!
//! Streams are framed by [`super::framing::StreamFramer`]; an RFC 5626 CRLF CRLF ping is
//! answered with a CRLF pong. The number of connections is bounded (new ones beyond the bound
//! are refused) and a connection idle for `idle` is closed.

use crate::config::{Listen, Protocol};
use crate::sip::framing::{Frame, StreamFramer};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

/// Largest message accepted on a stream.
const MAX_STREAM_MESSAGE: usize = 64 * 1024;
const UDP_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Messages queued toward one TCP peer before it counts as not reading.
const TCP_SEND_QUEUE: usize = 1024;
/// The RFC 5626 pong.
const PONG: &[u8] = b"\r\n";

/// One direction of a transport association: how to reach a peer, and from which of our
/// sockets (RFC 5626 calls this a flow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub protocol: Protocol,
    pub remote: SocketAddr,
    /// Index of our UDP socket in [`Transports::bound`] order among the UDP listeners (0 for
    /// TCP, where the connection to `remote` is the socket).
    pub local: u16,
}

/// A message as it came off the wire.
#[derive(Debug)]
pub struct Inbound {
    pub bytes: Bytes,
    pub flow: Flow,
}

/// Limits of the stream transports.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// Most simultaneous TCP connections, accepted and opened together.
    pub max_connections: usize,
    /// A connection with no traffic in either direction for this long is closed.
    pub idle: Duration,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            max_connections: 10_000,
            idle: Duration::from_secs(3600),
        }
    }
}

type Writers = Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Bytes>>>>;

/// Where sent messages go.
#[derive(Clone)]
enum Sink {
    Net {
        udp: Vec<Arc<UdpSocket>>,
        tcp_writers: Writers,
        inbound: mpsc::Sender<Inbound>,
        limits: StreamLimits,
    },
    /// Unit tests read what the relay sends from the other end of this channel.
    Memory(mpsc::UnboundedSender<(Flow, Bytes)>),
}

/// The bound transports; cheap to clone.
#[derive(Clone)]
pub struct Transports {
    sink: Sink,
    bound: Vec<Listen>,
}

impl Transports {
    /// Binds every listener and starts its receive loop. Returns the bound addresses in the
    /// order they were configured (port 0 resolved).
    pub async fn bind(
        listens: &[Listen],
        limits: StreamLimits,
        inbound: mpsc::Sender<Inbound>,
    ) -> io::Result<Transports> {
        let tcp_writers = Writers::default();
        let mut udp = Vec::new();
        let mut bound = Vec::new();
        let mut listeners = Vec::new();
        for listen in listens {
            let addr = match listen.protocol {
                Protocol::Udp => {
                    let socket = Arc::new(bind_udp(listen.addr)?);
                    udp.push(socket.clone());
                    socket.local_addr()?
                }
                Protocol::Tcp => {
                    let listener = TcpListener::bind(listen.addr).await?;
                    let addr = listener.local_addr()?;
                    listeners.push(listener);
                    addr
                }
            };
            bound.push(Listen {
                protocol: listen.protocol,
                addr,
            });
        }
        let transports = Transports {
            sink: Sink::Net {
                udp: udp.clone(),
                tcp_writers,
                inbound: inbound.clone(),
                limits,
            },
            bound,
        };
        for (index, socket) in udp.into_iter().enumerate() {
            tokio::spawn(udp_receive_loop(socket, index as u16, inbound.clone()));
        }
        for listener in listeners {
            tokio::spawn(tcp_accept_loop(listener, transports.clone()));
        }
        Ok(transports)
    }

    /// Transports that bind nothing: whatever is sent comes out of the returned receiver.
    /// `bound` is what they claim to listen on.
    pub fn memory(bound: Vec<Listen>) -> (Transports, mpsc::UnboundedReceiver<(Flow, Bytes)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Transports {
                sink: Sink::Memory(tx),
                bound,
            },
            rx,
        )
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

    /// The flow for a new request to `remote`: over UDP, from the first socket of the
    /// destination's address family.
    pub fn flow_to(&self, protocol: Protocol, remote: SocketAddr) -> Flow {
        let local = match protocol {
            Protocol::Udp => self
                .bound
                .iter()
                .filter(|l| l.protocol == Protocol::Udp)
                .position(|l| l.addr.is_ipv4() == remote.is_ipv4())
                .unwrap_or(0) as u16,
            Protocol::Tcp => 0,
        };
        Flow {
            protocol,
            remote,
            local,
        }
    }

    /// Whether a TCP connection to the flow's peer is open (always true for UDP).
    pub fn is_open(&self, flow: Flow) -> bool {
        match (&self.sink, flow.protocol) {
            (_, Protocol::Udp) | (Sink::Memory(_), _) => true,
            (Sink::Net { tcp_writers, .. }, Protocol::Tcp) => tcp_writers
                .lock()
                .expect("writers lock")
                .contains_key(&flow.remote),
        }
    }

    /// Sends without waiting. Errors are logged: SIP recovers from a lost message by
    /// retransmission or by the transaction timing out.
    pub fn send(&self, flow: Flow, bytes: Bytes) {
        match &self.sink {
            Sink::Memory(tx) => {
                let _ = tx.send((flow, bytes));
            }
            Sink::Net { udp, .. } if flow.protocol == Protocol::Udp => {
                let Some(socket) = udp.get(flow.local as usize).or(udp.first()) else {
                    return tracing::warn!(dest = %flow.remote, "no UDP listener to send from");
                };
                if let Err(e) = socket.try_send_to(&bytes, flow.remote) {
                    tracing::debug!(dest = %flow.remote, error = %e, "UDP send failed");
                }
            }
            Sink::Net { .. } => self.send_tcp(flow.remote, bytes),
        }
    }

    fn send_tcp(&self, dest: SocketAddr, bytes: Bytes) {
        let Sink::Net {
            tcp_writers,
            limits,
            ..
        } = &self.sink
        else {
            return;
        };
        let mut writers = tcp_writers.lock().expect("writers lock");
        if let Some(tx) = writers.get(&dest) {
            match tx.try_send(bytes) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(%dest, "TCP peer is not reading; closing its connection");
                    writers.remove(&dest);
                    return;
                }
                // The connection is closing: open a new one below.
                Err(mpsc::error::TrySendError::Closed(b)) => {
                    return self.reconnect(writers, dest, b)
                }
            }
        }
        if writers.len() >= limits.max_connections {
            return tracing::warn!(%dest, "TCP connection limit reached; message dropped");
        }
        self.reconnect(writers, dest, bytes)
    }

    fn reconnect(
        &self,
        mut writers: std::sync::MutexGuard<'_, HashMap<SocketAddr, mpsc::Sender<Bytes>>>,
        dest: SocketAddr,
        bytes: Bytes,
    ) {
        let (tx, rx) = mpsc::channel(TCP_SEND_QUEUE);
        let _ = tx.try_send(bytes);
        writers.insert(dest, tx.clone());
        drop(writers);
        let this = self.clone();
        tokio::spawn(async move {
            match TcpStream::connect(dest).await {
                Ok(stream) => this.serve_connection(stream, dest, tx, rx).await,
                Err(e) => {
                    tracing::info!(%dest, error = %e, "TCP connect failed");
                    this.forget(dest, &tx);
                }
            }
        });
    }

    /// Removes `peer`'s writer, unless a newer connection replaced it meanwhile.
    fn forget(&self, peer: SocketAddr, mine: &mpsc::Sender<Bytes>) {
        if let Sink::Net { tcp_writers, .. } = &self.sink {
            let mut writers = tcp_writers.lock().expect("writers lock");
            if writers.get(&peer).is_some_and(|w| w.same_channel(mine)) {
                writers.remove(&peer);
            }
        }
    }

    async fn serve_connection(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        me: mpsc::Sender<Bytes>,
        mut outgoing: mpsc::Receiver<Bytes>,
    ) {
        let Sink::Net {
            inbound, limits, ..
        } = &self.sink
        else {
            return;
        };
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = stream.into_split();
        let mut buf = BytesMut::with_capacity(8192);
        let mut framer = StreamFramer::new(MAX_STREAM_MESSAGE);
        let idle = tokio::time::sleep(limits.idle);
        tokio::pin!(idle);
        'conn: loop {
            tokio::select! {
                _ = &mut idle => {
                    tracing::debug!(%peer, "closing idle TCP connection");
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
                                if inbound.send(Inbound { bytes, flow }).await.is_err() {
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
                                tracing::info!(%peer, error = %e, "closing TCP connection");
                                break 'conn;
                            }
                        }
                    }
                }
            }
            idle.as_mut()
                .reset(tokio::time::Instant::now() + limits.idle);
        }
        self.forget(peer, &me);
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

async fn udp_receive_loop(socket: Arc<UdpSocket>, local: u16, inbound: mpsc::Sender<Inbound>) {
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

async fn tcp_accept_loop(listener: TcpListener, transports: Transports) {
    let Sink::Net {
        tcp_writers,
        limits,
        ..
    } = &transports.sink
    else {
        return;
    };
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "TCP accept failed");
                continue;
            }
        };
        let (tx, rx) = mpsc::channel(TCP_SEND_QUEUE);
        {
            let mut writers = tcp_writers.lock().expect("writers lock");
            if writers.len() >= limits.max_connections {
                tracing::warn!(%peer, "TCP connection limit reached; refusing a connection");
                continue; // dropping the stream closes it
            }
            writers.insert(peer, tx.clone());
        }
        let t = transports.clone();
        tokio::spawn(async move { t.serve_connection(stream, peer, tx, rx).await });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn tcp_relay(limits: StreamLimits) -> (Transports, mpsc::Receiver<Inbound>, SocketAddr) {
        let (tx, rx) = mpsc::channel(16);
        let listen = [Listen {
            protocol: Protocol::Tcp,
            addr: "127.0.0.1:0".parse().unwrap(),
        }];
        let t = Transports::bind(&listen, limits, tx).await.unwrap();
        let addr = t.local_addr(Protocol::Tcp).unwrap();
        (t, rx, addr)
    }

    #[tokio::test]
    async fn a_crlf_ping_gets_a_pong_and_replies_reuse_the_clients_connection() {
        let (t, mut rx, addr) = tcp_relay(StreamLimits::default()).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(b"\r\n\r\n").await.unwrap();
        let mut pong = [0u8; 2];
        client.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"\r\n");

        client
            .write_all(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        let inbound = rx.recv().await.unwrap();
        assert_eq!(inbound.flow.remote, client.local_addr().unwrap());
        assert!(t.is_open(inbound.flow));
        t.send(inbound.flow, Bytes::from_static(b"SIP/2.0 200 OK\r\n\r\n"));
        let mut answer = [0u8; 18];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer[..], b"SIP/2.0 200 OK\r\n\r\n");
    }

    #[tokio::test]
    async fn connections_beyond_the_bound_are_refused() {
        let limits = StreamLimits {
            max_connections: 1,
            ..StreamLimits::default()
        };
        let (_t, mut rx, addr) = tcp_relay(limits).await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        first
            .write_all(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        rx.recv().await.unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(second.read(&mut byte).await.unwrap(), 0, "closed at once");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed() {
        let limits = StreamLimits {
            idle: Duration::from_secs(30),
            ..StreamLimits::default()
        };
        let (t, _rx, addr) = tcp_relay(limits).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(client.read(&mut byte).await.unwrap(), 0, "closed when idle");
        let flow = Flow {
            protocol: Protocol::Tcp,
            remote: client.local_addr().unwrap(),
            local: 0,
        };
        tokio::task::yield_now().await;
        assert!(!t.is_open(flow));
    }

    #[tokio::test]
    async fn replies_leave_from_the_udp_socket_the_request_arrived_on() {
        let (tx, mut rx) = mpsc::channel(16);
        let listen: Vec<Listen> = ["udp:127.0.0.1:0", "udp:127.0.0.1:0"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let t = Transports::bind(&listen, StreamLimits::default(), tx)
            .await
            .unwrap();
        let second = t.bound()[1].addr;
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        peer.send_to(b"OPTIONS sip:a SIP/2.0\r\n\r\n", second)
            .await
            .unwrap();
        let inbound = rx.recv().await.unwrap();
        assert_eq!(inbound.flow.local, 1);
        t.send(inbound.flow, Bytes::from_static(b"SIP/2.0 200 OK\r\n\r\n"));
        let mut buf = [0u8; 64];
        let (_, from) = peer.recv_from(&mut buf).await.unwrap();
        assert_eq!(from, second);
    }
}
