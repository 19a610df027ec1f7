//! SIP transports: UDP datagrams, TCP streams (RFC 3261 §18), WebSocket and secure WebSocket
//! for browsers (RFC 7118), plus an in-memory transport for the relay's unit tests.
//!
//! Every received message is handed to the relay core as an [`Inbound`] on one bounded
//! channel, tagged with its [`Flow`]: the transport, the peer's address, and which of our
//! sockets it arrived on. The core answers through [`Transports::send`], which never waits:
//!
//! - UDP leaves from the socket named by the flow, so a reply leaves from the socket its
//!   request arrived on (a node may listen on several addresses). A send that would block is
//!   dropped; the transaction layer retransmits ([`udp`]).
//! - Connections (TCP, WS, WSS) are kept by peer address. A message goes down the live
//!   connection to the flow's peer, so responses and in-dialog requests toward a client reuse
//!   the client's own connection; only TCP opens a new connection when there is none
//!   (browsers cannot be connected to). Each connection has a bounded send queue; a peer that
//!   does not read and lets it fill is disconnected rather than allowed to grow the relay's
//!   memory ([`stream`], [`websocket`]).
//!
//! The number of connections is bounded (new ones beyond the bound are refused) and a
//! connection idle for [`StreamLimits::idle`] is closed.

mod stream;
mod udp;
mod websocket;

use crate::config::{Listen, Protocol};
use bytes::Bytes;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

pub use tokio_rustls::TlsAcceptor;

/// Largest message accepted on a connection.
const MAX_STREAM_MESSAGE: usize = 64 * 1024;
/// Messages queued toward one connection before its peer counts as not reading.
const SEND_QUEUE: usize = 1024;

/// One direction of a transport association: how to reach a peer, and from which of our
/// sockets (RFC 5626 calls this a flow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Flow {
    pub protocol: Protocol,
    pub remote: SocketAddr,
    /// Index of our UDP socket among the UDP listeners, in configuration order (0 for
    /// connections, where the connection to `remote` is the socket).
    pub local: u16,
}

/// A message as it came off the wire.
#[derive(Debug)]
pub struct Inbound {
    pub bytes: Bytes,
    pub flow: Flow,
}

/// Limits of the connection-oriented transports.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// Most simultaneous connections, accepted and opened together.
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

/// The send queue of one live connection.
type Writers = Mutex<HashMap<SocketAddr, mpsc::Sender<Bytes>>>;

/// What the network transports share.
struct Net {
    udp: Vec<Arc<UdpSocket>>,
    connections: Writers,
    inbound: mpsc::Sender<Inbound>,
    limits: StreamLimits,
}

/// Where sent messages go.
#[derive(Clone)]
enum Sink {
    Net(Arc<Net>),
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
    /// order they were configured (port 0 resolved). `tls` is required for `wss:` listeners.
    pub async fn bind(
        listens: &[Listen],
        limits: StreamLimits,
        tls: Option<TlsAcceptor>,
        inbound: mpsc::Sender<Inbound>,
    ) -> io::Result<Transports> {
        let mut udp = Vec::new();
        let mut bound = Vec::new();
        let mut listeners = Vec::new();
        for listen in listens {
            let addr = match listen.protocol {
                Protocol::Udp => {
                    let socket = Arc::new(udp::bind(listen.addr)?);
                    udp.push(socket.clone());
                    socket.local_addr()?
                }
                protocol => {
                    if protocol == Protocol::Wss && tls.is_none() {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "a wss: listener needs [sip] tls_cert and tls_key",
                        ));
                    }
                    let listener = TcpListener::bind(listen.addr).await?;
                    let addr = listener.local_addr()?;
                    listeners.push((listener, protocol));
                    addr
                }
            };
            bound.push(Listen {
                protocol: listen.protocol,
                addr,
            });
        }
        let net = Arc::new(Net {
            udp: udp.clone(),
            connections: Writers::default(),
            inbound: inbound.clone(),
            limits,
        });
        let transports = Transports {
            sink: Sink::Net(net),
            bound,
        };
        for (index, socket) in udp.into_iter().enumerate() {
            tokio::spawn(udp::receive_loop(socket, index as u16, inbound.clone()));
        }
        for (listener, protocol) in listeners {
            tokio::spawn(stream::accept_loop(
                listener,
                protocol,
                tls.clone(),
                transports.clone(),
            ));
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
            _ => 0,
        };
        Flow {
            protocol,
            remote,
            local,
        }
    }

    /// Whether a connection to the flow's peer is open (always true for UDP).
    pub fn is_open(&self, flow: Flow) -> bool {
        match &self.sink {
            Sink::Net(net) if flow.protocol.is_reliable() => net
                .connections
                .lock()
                .expect("connections lock")
                .contains_key(&flow.remote),
            _ => true,
        }
    }

    /// Sends without waiting. Errors are logged: SIP recovers from a lost message by
    /// retransmission or by the transaction timing out.
    pub fn send(&self, flow: Flow, bytes: Bytes) {
        match &self.sink {
            Sink::Memory(tx) => {
                let _ = tx.send((flow, bytes));
            }
            Sink::Net(net) => match flow.protocol {
                Protocol::Udp => udp::send(&net.udp, flow, &bytes),
                Protocol::Tcp => stream::send(net, flow.remote, bytes),
                Protocol::Ws | Protocol::Wss => {
                    if !queue(net, flow.remote, bytes) {
                        tracing::debug!(dest = %flow.remote, "no WebSocket connection to that peer");
                    }
                }
            },
        }
    }
}

/// Queues `bytes` on the live connection to `peer`; false when there is none. A connection
/// whose queue is full is dropped (its peer is not reading).
fn queue(net: &Net, peer: SocketAddr, bytes: Bytes) -> bool {
    let mut connections = net.connections.lock().expect("connections lock");
    let Some(tx) = connections.get(&peer) else {
        return false;
    };
    match tx.try_send(bytes) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::warn!(%peer, "peer is not reading; closing its connection");
            connections.remove(&peer);
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            connections.remove(&peer);
            false
        }
    }
}

/// Registers a new connection's send queue, unless the connection bound is reached.
fn register(net: &Net, peer: SocketAddr) -> Option<(mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>)> {
    let mut connections = net.connections.lock().expect("connections lock");
    if connections.len() >= net.limits.max_connections {
        tracing::warn!(%peer, "connection limit reached; refusing a connection");
        return None;
    }
    let (tx, rx) = mpsc::channel(SEND_QUEUE);
    connections.insert(peer, tx.clone());
    Some((tx, rx))
}

/// Removes `peer`'s send queue, unless a newer connection replaced it meanwhile.
fn forget(net: &Net, peer: SocketAddr, mine: &mpsc::Sender<Bytes>) {
    let mut connections = net.connections.lock().expect("connections lock");
    if connections.get(&peer).is_some_and(|w| w.same_channel(mine)) {
        connections.remove(&peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn tcp_relay(limits: StreamLimits) -> (Transports, mpsc::Receiver<Inbound>, SocketAddr) {
        let (tx, rx) = mpsc::channel(16);
        let listen = [Listen {
            protocol: Protocol::Tcp,
            addr: "127.0.0.1:0".parse().unwrap(),
        }];
        let t = Transports::bind(&listen, limits, None, tx).await.unwrap();
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
        let t = Transports::bind(&listen, StreamLimits::default(), None, tx)
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
