//! A SIP peer on a plain UDP socket or TCP connection, for what sipp cannot do: send garbage,
//! truncated or byte-identical retransmitted messages, forge answers, or play an application
//! server that records exactly what reaches it.
//!
//! Messages are handled as text; the helpers read the few header fields the tests check.

use bytes::BytesMut;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Mutex;
use tollgate::sip::digest;
use tollgate::sip::framing::{Frame, StreamFramer};

/// The demo user's address-of-record.
pub const ALICE: &str = "sip:alice@portal.com";

/// How long a test waits for a datagram it expects before failing (a bound, never a pause).
pub const WAIT: Duration = Duration::from_secs(10);

/// A UDP socket on 127.0.0.1.
pub struct RawUdp {
    pub socket: UdpSocket,
    pub addr: SocketAddr,
}

impl RawUdp {
    /// Binds a fresh port on 127.0.0.1.
    pub async fn bind() -> RawUdp {
        Self::bind_port(0).await
    }

    /// Binds `port` on 127.0.0.1 (0 for any).
    pub async fn bind_port(port: u16) -> RawUdp {
        Self::bind_on(SocketAddr::from(([127, 0, 0, 1], port))).await
    }

    /// Binds `addr` (another loopback address such as 127.0.0.2, say).
    pub async fn bind_on(addr: SocketAddr) -> RawUdp {
        let socket = UdpSocket::bind(addr).await.expect("bind UDP");
        let addr = socket.local_addr().expect("local address");
        RawUdp { socket, addr }
    }

    pub async fn send_to(&self, bytes: impl AsRef<[u8]>, dest: SocketAddr) {
        self.socket
            .send_to(bytes.as_ref(), dest)
            .await
            .expect("UDP send");
    }

    /// The next datagram and its sender; panics when none arrives within [`WAIT`].
    pub async fn recv(&self) -> (String, SocketAddr) {
        self.recv_within(WAIT).await
    }

    /// The next datagram and its sender; panics when none arrives within `limit`.
    pub async fn recv_within(&self, limit: Duration) -> (String, SocketAddr) {
        let mut buf = vec![0u8; 65536];
        let (len, from) = tokio::time::timeout(limit, self.socket.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("nothing reached {} within {limit:?}", self.addr))
            .expect("UDP receive");
        (String::from_utf8_lossy(&buf[..len]).into_owned(), from)
    }

    /// The next datagram's text.
    pub async fn recv_text(&self) -> String {
        self.recv().await.0
    }

    /// Whether a datagram is waiting right now (never waits).
    pub fn has_pending(&self) -> bool {
        let mut buf = [0u8; 1];
        self.socket.try_peek_from(&mut buf).is_ok()
    }
}

/// A SIP peer the helpers below can speak through: a UDP socket or a TCP connection.
pub trait Peer {
    /// Our address as written into Via and Contact.
    fn local(&self) -> SocketAddr;
    /// `UDP` or `TCP`.
    fn transport(&self) -> &'static str;
    async fn send_to(&self, bytes: impl AsRef<[u8]>, dest: SocketAddr);
    /// The next message and who sent it; panics when none arrives within `limit`.
    async fn recv_within(&self, limit: Duration) -> (String, SocketAddr);

    /// The host of our Contact.
    fn contact_host(&self) -> String {
        self.local().to_string()
    }

    /// The `Via` header a request sent from this peer carries.
    fn via(&self, branch: &str) -> String {
        format!(
            "Via: SIP/2.0/{} {};branch={branch};rport",
            self.transport(),
            self.local()
        )
    }
}

impl Peer for RawUdp {
    fn local(&self) -> SocketAddr {
        self.addr
    }
    fn transport(&self) -> &'static str {
        "UDP"
    }
    async fn send_to(&self, bytes: impl AsRef<[u8]>, dest: SocketAddr) {
        RawUdp::send_to(self, bytes, dest).await
    }
    async fn recv_within(&self, limit: Duration) -> (String, SocketAddr) {
        RawUdp::recv_within(self, limit).await
    }
}

/// One TCP connection, opened to the relay ([`RawTcp::connect`]) or accepted from it
/// ([`RawTcp::listen`], for an application server the relay connects to).
pub struct RawTcp {
    listener: Option<TcpListener>,
    local: SocketAddr,
    conn: Mutex<Option<(TcpStream, SocketAddr, BytesMut, StreamFramer)>>,
}

impl RawTcp {
    pub async fn connect(relay: SocketAddr) -> RawTcp {
        Self::connect_from(std::net::IpAddr::from([127, 0, 0, 1]), relay).await
    }

    /// Connects from a port of `ip` (another loopback address such as 127.0.0.2, say).
    pub async fn connect_from(ip: std::net::IpAddr, relay: SocketAddr) -> RawTcp {
        let socket = tokio::net::TcpSocket::new_v4().expect("TCP socket");
        socket.bind(SocketAddr::new(ip, 0)).expect("bind TCP");
        let stream = socket.connect(relay).await.expect("connect");
        let local = stream.local_addr().unwrap();
        RawTcp {
            listener: None,
            local,
            conn: Mutex::new(Some((
                stream,
                relay,
                BytesMut::new(),
                StreamFramer::new(1 << 16),
            ))),
        }
    }

    /// Listens on 127.0.0.1; the first connection made to it is the one used.
    pub async fn listen() -> RawTcp {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
        let local = listener.local_addr().unwrap();
        RawTcp {
            listener: Some(listener),
            local,
            conn: Mutex::new(None),
        }
    }

    async fn ensure(&self, limit: Duration) {
        let mut conn = self.conn.lock().await;
        if conn.is_none() {
            let listener = self.listener.as_ref().expect("a listening peer");
            let (stream, peer) = tokio::time::timeout(limit, listener.accept())
                .await
                .expect("no connection within the limit")
                .expect("accept");
            *conn = Some((stream, peer, BytesMut::new(), StreamFramer::new(1 << 16)));
        }
    }

    /// Sends raw bytes down the connection (a CRLF keep-alive, say).
    pub async fn send_raw(&self, bytes: &[u8]) {
        self.ensure(WAIT).await;
        let mut conn = self.conn.lock().await;
        let (stream, ..) = conn.as_mut().unwrap();
        stream.write_all(bytes).await.expect("TCP send");
    }

    /// Reads exactly `n` raw bytes (a CRLF pong, say).
    pub async fn recv_raw(&self, n: usize) -> Vec<u8> {
        let mut conn = self.conn.lock().await;
        let (stream, _, buf, _) = conn.as_mut().expect("connected");
        while buf.len() < n {
            let read = tokio::time::timeout(WAIT, stream.read_buf(buf))
                .await
                .expect("bytes within the limit")
                .expect("TCP read");
            assert_ne!(read, 0, "connection closed");
        }
        buf.split_to(n).to_vec()
    }
}

impl Peer for RawTcp {
    fn local(&self) -> SocketAddr {
        self.local
    }
    fn transport(&self) -> &'static str {
        "TCP"
    }
    async fn send_to(&self, bytes: impl AsRef<[u8]>, _dest: SocketAddr) {
        self.send_raw(bytes.as_ref()).await
    }
    async fn recv_within(&self, limit: Duration) -> (String, SocketAddr) {
        self.ensure(limit).await;
        let mut conn = self.conn.lock().await;
        let (stream, peer, buf, framer) = conn.as_mut().unwrap();
        loop {
            if let Some(Frame::Message(m)) = framer.decode(buf).expect("framable") {
                return (String::from_utf8_lossy(&m).into_owned(), *peer);
            }
            let read = tokio::time::timeout(limit, stream.read_buf(buf))
                .await
                .unwrap_or_else(|_| panic!("nothing reached {} within {limit:?}", self.local))
                .expect("TCP read");
            assert_ne!(read, 0, "connection closed");
        }
    }
}

/// A fresh RFC 3261 branch.
pub fn branch() -> String {
    format!("z9hG4bK{}", uuid::Uuid::new_v4().simple())
}

/// A fresh tag or Call-ID.
pub fn token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A SIP-over-WebSocket client (RFC 7118), as a browser is: it writes a random `.invalid`
/// host into Via and Contact, because it cannot be reached except down its connection.
pub struct RawWs {
    local: SocketAddr,
    relay: SocketAddr,
    ws: Mutex<tokio_tungstenite::WebSocketStream<TcpStream>>,
}

impl RawWs {
    /// Connects and performs the handshake offering the `sip` subprotocol.
    pub async fn connect(relay: SocketAddr) -> RawWs {
        Self::try_connect(relay, Some("sip"))
            .await
            .expect("WebSocket handshake")
    }

    /// Connects offering `subprotocol` (none when `None`).
    pub async fn try_connect(
        relay: SocketAddr,
        subprotocol: Option<&str>,
    ) -> Result<RawWs, tokio_tungstenite::tungstenite::Error> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let stream = TcpStream::connect(relay).await.expect("connect");
        let local = stream.local_addr().unwrap();
        let mut request = format!("ws://{relay}/").into_client_request()?;
        if let Some(p) = subprotocol {
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", p.parse().unwrap());
        }
        let (ws, _) = tokio_tungstenite::client_async(request, stream).await?;
        Ok(RawWs {
            local,
            relay,
            ws: Mutex::new(ws),
        })
    }
}

impl Peer for RawWs {
    fn local(&self) -> SocketAddr {
        self.local
    }
    fn transport(&self) -> &'static str {
        "WS"
    }
    fn via(&self, branch: &str) -> String {
        format!("Via: SIP/2.0/WS df7jal23ls0d.invalid;branch={branch};rport")
    }
    fn contact_host(&self) -> String {
        "df7jal23ls0d.invalid".into()
    }
    async fn send_to(&self, bytes: impl AsRef<[u8]>, _dest: SocketAddr) {
        use futures_util::SinkExt;
        let text = String::from_utf8(bytes.as_ref().to_vec()).expect("text");
        self.ws
            .lock()
            .await
            .send(tokio_tungstenite::tungstenite::Message::text(text))
            .await
            .expect("WebSocket send");
    }
    async fn recv_within(&self, limit: Duration) -> (String, SocketAddr) {
        use futures_util::StreamExt;
        let mut ws = self.ws.lock().await;
        loop {
            let msg = tokio::time::timeout(limit, ws.next())
                .await
                .unwrap_or_else(|_| panic!("nothing reached the WebSocket within {limit:?}"))
                .expect("connection open")
                .expect("WebSocket receive");
            if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
                return (t.to_string(), self.relay);
            }
        }
    }
}

/// A client over whichever transport a test runs on.
pub enum Client {
    Udp(RawUdp),
    Tcp(RawTcp),
}

impl Peer for Client {
    fn local(&self) -> SocketAddr {
        match self {
            Client::Udp(p) => p.local(),
            Client::Tcp(p) => p.local(),
        }
    }
    fn transport(&self) -> &'static str {
        match self {
            Client::Udp(p) => p.transport(),
            Client::Tcp(p) => p.transport(),
        }
    }
    async fn send_to(&self, bytes: impl AsRef<[u8]>, dest: SocketAddr) {
        match self {
            Client::Udp(p) => p.send_to(bytes, dest).await,
            Client::Tcp(p) => Peer::send_to(p, bytes, dest).await,
        }
    }
    async fn recv_within(&self, limit: Duration) -> (String, SocketAddr) {
        match self {
            Client::Udp(p) => p.recv_within(limit).await,
            Client::Tcp(p) => Peer::recv_within(p, limit).await,
        }
    }
}

/// Builds a message from a start line, header lines and a body, adding Content-Length.
pub fn message(start: &str, headers: &[String], body: &str) -> String {
    let mut text = format!("{start}\r\n");
    for h in headers {
        text.push_str(h);
        text.push_str("\r\n");
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    text
}

/// The status code of a response, `None` for a request.
pub fn status(msg: &str) -> Option<u16> {
    let rest = msg.strip_prefix("SIP/2.0 ")?;
    rest.get(..3)?.parse().ok()
}

/// The method of a request, `None` for a response.
pub fn method(msg: &str) -> Option<&str> {
    let first = msg.split("\r\n").next()?;
    if first.starts_with("SIP/") {
        None
    } else {
        first.split(' ').next()
    }
}

/// Every value of header `name` (case-insensitive, long form), in order; a comma-separated
/// list stays one value.
pub fn headers<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    let head = msg.split("\r\n\r\n").next().unwrap_or("");
    head.split("\r\n")
        .skip(1)
        .filter_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .collect()
}

/// The first value of header `name`.
pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    headers(msg, name).into_iter().next()
}

/// The `branch` parameter of the top Via.
pub fn top_branch(msg: &str) -> Option<&str> {
    let via = header(msg, "Via")?;
    let via = via.split(',').next()?;
    via.split(';')
        .find_map(|p| p.trim().strip_prefix("branch="))
}

/// A response to `req` as a user agent writes it: every Via, From, To (with `to_tag` added
/// unless it has one), Call-ID and CSeq copied; `extra` header lines; no body.
pub fn response(req: &str, status_line: &str, to_tag: &str, extra: &[String]) -> String {
    let mut lines: Vec<String> = headers(req, "Via")
        .into_iter()
        .map(|v| format!("Via: {v}"))
        .collect();
    lines.push(format!("From: {}", header(req, "From").expect("From")));
    let to = header(req, "To").expect("To");
    if to.contains(";tag=") {
        lines.push(format!("To: {to}"));
    } else {
        lines.push(format!("To: {to};tag={to_tag}"));
    }
    lines.push(format!(
        "Call-ID: {}",
        header(req, "Call-ID").expect("Call-ID")
    ));
    lines.push(format!("CSeq: {}", header(req, "CSeq").expect("CSeq")));
    lines.extend(extra.iter().cloned());
    message(&format!("SIP/2.0 {status_line}"), &lines, "")
}

/// An INVITE for service1 from alice, sent from `peer`.
pub fn invite(
    peer: &impl Peer,
    branch: &str,
    from_tag: &str,
    call_id: &str,
    cseq: u32,
    extra: &[String],
) -> String {
    let mut headers = vec![
        peer.via(branch),
        format!("From: alice <{ALICE}>;tag={from_tag}"),
        "To: <sip:service1@portal.com>".to_string(),
        format!("Call-ID: {call_id}"),
        format!("CSeq: {cseq} INVITE"),
        format!(
            "Contact: <sip:alice@{};transport={}>",
            peer.contact_host(),
            peer.transport().to_ascii_lowercase()
        ),
        "Max-Forwards: 70".to_string(),
        "Content-Type: application/json".to_string(),
    ];
    headers.extend(extra.iter().cloned());
    message(
        "INVITE sip:service1@portal.com SIP/2.0",
        &headers,
        "{\"item\":\"wine\"}",
    )
}

/// The hop-by-hop ACK for a non-2xx final response to `invite` (same branch, the response's To).
/// The hop-by-hop ACK for a non-2xx final response `resp` to `invite`.
pub fn ack_for(invite: &str, resp: &str) -> String {
    let seq = header(invite, "CSeq").unwrap().split(' ').next().unwrap();
    message(
        "ACK sip:service1@portal.com SIP/2.0",
        &[
            format!("Via: {}", header(invite, "Via").unwrap()),
            format!("From: {}", header(invite, "From").unwrap()),
            format!("To: {}", header(resp, "To").unwrap()),
            format!("Call-ID: {}", header(invite, "Call-ID").unwrap()),
            format!("CSeq: {seq} ACK"),
            "Max-Forwards: 70".into(),
        ],
        "",
    )
}

/// Bounds waits in paused-time tests, where it only fails a test that would otherwise hang.
pub const LIMIT: Duration = Duration::from_secs(600);

/// The Request-URI of service1, and what the digest `uri=` of its INVITEs says.
pub const SERVICE1: &str = "sip:service1@portal.com";

/// alice's `Proxy-Authorization` value answering the 407 `challenge` for an INVITE with
/// digest `uri`, `password` and nonce count `nc`.
pub fn credentials(challenge: &str, uri: &str, password: &str, nc: u32) -> String {
    let ch = digest::choose_challenge(headers(challenge, "Proxy-Authenticate"))
        .expect("a digest challenge");
    digest::answer(&ch, "INVITE", uri, "alice", password, nc, &token())
}

/// Sends an unauthenticated INVITE and returns the 407 it gets (after ACKing it).
pub async fn challenge(client: &impl Peer, relay: SocketAddr) -> String {
    let first = invite(client, &branch(), &token(), &token(), 1, &[]);
    client.send_to(&first, relay).await;
    let challenge = next_non_trying(client).await;
    assert_eq!(status(&challenge), Some(407), "{challenge}");
    client.send_to(ack_for(&first, &challenge), relay).await;
    challenge
}

/// Sends an INVITE carrying `authorization` as its Proxy-Authorization and returns the first
/// answer that is not 100 Trying (ACKing it when it is final and not a 2xx).
pub async fn invite_with_credentials(
    client: &impl Peer,
    relay: SocketAddr,
    authorization: &str,
) -> String {
    let req = invite(
        client,
        &branch(),
        &token(),
        &token(),
        2,
        &[format!("Proxy-Authorization: {authorization}")],
    );
    client.send_to(&req, relay).await;
    let answer = next_non_trying(client).await;
    if status(&answer).is_some_and(|s| s >= 300) {
        client.send_to(ack_for(&req, &answer), relay).await;
    }
    answer
}

/// Sends an INVITE, answers the 407 and sends the authenticated INVITE; returns it.
pub async fn authenticated_invite(client: &impl Peer, relay: SocketAddr) -> String {
    authenticated_invite_with(client, relay, &token(), &token(), &[]).await
}

/// Like [`authenticated_invite`], with the dialog identifiers and extra headers given.
pub async fn authenticated_invite_with(
    client: &impl Peer,
    relay: SocketAddr,
    call_id: &str,
    from_tag: &str,
    extra: &[String],
) -> String {
    let first = invite(client, &branch(), from_tag, call_id, 1, &[]);
    client.send_to(&first, relay).await;
    let challenge = loop {
        let msg = client.recv_within(LIMIT).await.0;
        if status(&msg) == Some(407) {
            break msg;
        }
    };
    client.send_to(ack_for(&first, &challenge), relay).await;
    let credentials = credentials(&challenge, SERVICE1, "secret", 1);
    let mut with_credentials = vec![format!("Proxy-Authorization: {credentials}")];
    with_credentials.extend(extra.iter().cloned());
    let second = invite(client, &branch(), from_tag, call_id, 2, &with_credentials);
    client.send_to(&second, relay).await;
    second
}

/// The next message that is not a 100 Trying.
pub async fn next_non_trying(peer: &impl Peer) -> String {
    loop {
        let msg = peer.recv_within(LIMIT).await.0;
        if status(&msg) != Some(100) {
            return msg;
        }
    }
}

/// Starts a relay on real time (opening the database pool takes real time), then pauses the
/// clock for the rest of the test.
/// Sends an OPTIONS to the relay itself and returns its Call-ID.
pub async fn options_marker(client: &impl Peer, relay: SocketAddr) -> String {
    let marker = token();
    let options = message(
        &format!("OPTIONS sip:{relay} SIP/2.0"),
        &[
            client.via(&branch()),
            format!("From: <{}>;tag={}", ALICE, token()),
            format!("To: <sip:{relay}>"),
            format!("Call-ID: {marker}"),
            "CSeq: 1 OPTIONS".into(),
            "Max-Forwards: 70".into(),
        ],
        "",
    );
    client.send_to(options, relay).await;
    marker
}

/// The JSON body of a shop's 200: where its service lives.
pub const SHOP_BODY: &str = "{\"url\":\"https://shop.example/wine\"}";

/// A 200 from the application server (or a forger) to the INVITE `inv`, with the shop URL.
pub fn ok_200(inv: &str, to_tag: &str, contact: SocketAddr, transport: &str) -> String {
    let mut lines: Vec<String> = headers(inv, "Via")
        .into_iter()
        .map(|v| format!("Via: {v}"))
        .collect();
    for rr in headers(inv, "Record-Route") {
        lines.push(format!("Record-Route: {rr}"));
    }
    lines.push(format!("From: {}", header(inv, "From").unwrap()));
    lines.push(format!("To: {};tag={to_tag}", header(inv, "To").unwrap()));
    lines.push(format!("Call-ID: {}", header(inv, "Call-ID").unwrap()));
    lines.push(format!("CSeq: {}", header(inv, "CSeq").unwrap()));
    lines.push(format!(
        "Contact: <sip:shop@{contact};transport={}>",
        transport.to_ascii_lowercase()
    ));
    lines.push("Content-Type: application/json".into());
    message("SIP/2.0 200 OK", &lines, SHOP_BODY)
}

/// A request the caller sends inside the dialog `answer` (a 1xx or 2xx) set up: to its
/// Contact, along the Record-Route set reversed.
pub fn in_dialog(peer: &impl Peer, method: &str, invite: &str, answer: &str, cseq: u32) -> String {
    let target = header(answer, "Contact")
        .map(|c| {
            c.trim_start_matches('<')
                .split('>')
                .next()
                .unwrap()
                .to_string()
        })
        .unwrap();
    let mut lines = vec![peer.via(&branch())];
    let mut routes: Vec<&str> = headers(answer, "Record-Route");
    routes.reverse();
    for r in routes {
        lines.push(format!("Route: {r}"));
    }
    lines.push(format!("From: {}", header(invite, "From").unwrap()));
    lines.push(format!("To: {}", header(answer, "To").unwrap()));
    lines.push(format!("Call-ID: {}", header(invite, "Call-ID").unwrap()));
    lines.push(format!("CSeq: {cseq} {method}"));
    lines.push("Max-Forwards: 70".into());
    message(&format!("{method} {target} SIP/2.0"), &lines, "")
}

/// The next message at `peer` that `want` accepts.
pub async fn next_where(peer: &impl Peer, want: impl Fn(&str) -> bool) -> String {
    loop {
        let msg = peer.recv_within(LIMIT).await.0;
        if want(&msg) {
            return msg;
        }
    }
}

/// Waits until the relay has handled everything `peer` sent before: the core handles
/// messages in order, so once the answer to an OPTIONS sent now is back, the earlier ones are
/// done.
pub async fn barrier(peer: &impl Peer, relay: SocketAddr) {
    let marker = options_marker(peer, relay).await;
    next_where(peer, |m| header(m, "Call-ID") == Some(marker.as_str())).await;
}
