//! End-to-end tests of [`super::call`] against a scripted relay on real localhost sockets,
//! with tokio's paused clock driving the SIP timers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use rsipstack::sip::{Request, SipMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::time::Instant;

use super::message::{cseq_of, header_param, header_value, header_values, top_via_branch};
use super::*;
use crate::sip::digest::{self, Algorithm, NonceKey, NonceStatus};
use crate::sip::framing::{Frame, StreamFramer};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A scripted relay: receives requests, sends text.
enum Peer {
    Udp {
        sock: UdpSocket,
        client: Option<SocketAddr>,
        last: Vec<u8>,
    },
    Tcp {
        listener: TcpListener,
        stream: Option<TcpStream>,
        buf: BytesMut,
    },
}

impl Peer {
    async fn udp() -> Peer {
        Peer::Udp {
            sock: UdpSocket::bind((LOCALHOST, 0)).await.unwrap(),
            client: None,
            last: Vec::new(),
        }
    }

    async fn tcp() -> Peer {
        Peer::Tcp {
            listener: TcpListener::bind((LOCALHOST, 0)).await.unwrap(),
            stream: None,
            buf: BytesMut::new(),
        }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Peer::Udp { sock, .. } => sock.local_addr().unwrap(),
            Peer::Tcp { listener, .. } => listener.local_addr().unwrap(),
        }
    }

    /// The next message; UDP retransmissions of the previous datagram are skipped.
    async fn recv(&mut self) -> SipMessage {
        match self {
            Peer::Udp { sock, client, last } => {
                let mut buf = vec![0; 65_536];
                loop {
                    let (n, src) = sock.recv_from(&mut buf).await.unwrap();
                    *client = Some(src);
                    if buf[..n] == last[..] {
                        continue;
                    }
                    *last = buf[..n].to_vec();
                    return SipMessage::try_from(&buf[..n]).unwrap();
                }
            }
            Peer::Tcp {
                listener,
                stream,
                buf,
            } => {
                if stream.is_none() {
                    *stream = Some(listener.accept().await.unwrap().0);
                }
                let s = stream.as_mut().unwrap();
                loop {
                    if let Some(Frame::Message(m)) = StreamFramer::new(1 << 20).decode(buf).unwrap()
                    {
                        return SipMessage::try_from(&m[..]).unwrap();
                    }
                    assert_ne!(s.read_buf(buf).await.unwrap(), 0, "client closed");
                }
            }
        }
    }

    /// Every datagram, retransmissions included (UDP only).
    async fn recv_raw(&mut self) -> (Vec<u8>, Instant) {
        let Peer::Udp { sock, client, .. } = self else {
            panic!("udp only")
        };
        let mut buf = vec![0; 65_536];
        let (n, src) = sock.recv_from(&mut buf).await.unwrap();
        *client = Some(src);
        (buf[..n].to_vec(), Instant::now())
    }

    async fn recv_request(&mut self) -> Request {
        match self.recv().await {
            SipMessage::Request(r) => r,
            SipMessage::Response(r) => panic!("expected a request, got {r}"),
        }
    }

    async fn send(&mut self, text: &str) {
        match self {
            Peer::Udp { sock, client, .. } => {
                sock.send_to(text.as_bytes(), client.unwrap())
                    .await
                    .unwrap();
            }
            Peer::Tcp { stream, .. } => {
                stream
                    .as_mut()
                    .unwrap()
                    .write_all(text.as_bytes())
                    .await
                    .unwrap();
            }
        }
    }
}

/// A response to `req` with extra headers and a body; To gets `to_tag` if it has no tag.
fn reply(req: &Request, status: &str, to_tag: &str, extra: &[(&str, &str)], body: &str) -> String {
    let mut s = format!("SIP/2.0 {status}\r\n");
    for v in header_values(req, "Via") {
        s.push_str(&format!("Via: {v}\r\n"));
    }
    let to = header_value(req, "To").unwrap();
    let to = if header_param(to, "tag").is_some() || to_tag.is_empty() {
        to.to_string()
    } else {
        format!("{to};tag={to_tag}")
    };
    s.push_str(&format!(
        "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n",
        header_value(req, "From").unwrap(),
        header_value(req, "Call-ID").unwrap(),
        header_value(req, "CSeq").unwrap()
    ));
    for (k, v) in extra {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s
}

fn options(proxy: SocketAddr, transport: Transport, hold: Duration) -> CallOptions {
    CallOptions {
        target: "sip:service1@portal.com".into(),
        proxy,
        transport,
        user: "alice".into(),
        password: "wonderland".into(),
        body: Some(("application/json".into(), br#"{"item":"wine"}"#.to_vec())),
        hold,
        local_ip: LOCALHOST,
    }
}

fn spawn_call(
    opts: CallOptions,
) -> tokio::task::JoinHandle<(Result<CallOutcome, ClientError>, String)> {
    tokio::spawn(async move {
        let mut out = Vec::new();
        let r = call(opts, &mut out).await;
        (r, String::from_utf8(out).unwrap())
    })
}

const SHOP_BODY: &str = r#"{"url":"https://shop.example/s/1","token":"eyJ..."}"#;

#[tokio::test(start_paused = true)]
async fn udp_call_with_digest_challenge_hold_and_bye() {
    let mut relay = Peer::udp().await;
    let relay_addr = relay.addr();
    let rr = format!("<sip:{relay_addr};lr>");
    let task = spawn_call(options(relay_addr, Transport::Udp, Duration::from_secs(30)));

    // 1. INVITE without credentials.
    let invite1 = relay.recv_request().await;
    assert_eq!(invite1.method.to_string(), "INVITE");
    assert_eq!(invite1.uri.to_string(), "sip:service1@portal.com");
    let via = header_value(&invite1, "Via").unwrap();
    assert!(via.starts_with("SIP/2.0/UDP 127.0.0.1:"), "{via}");
    assert!(via.contains(";rport;"), "{via}");
    let branch1 = top_via_branch(&invite1).unwrap();
    assert!(branch1.starts_with("z9hG4bK"));
    let from = header_value(&invite1, "From").unwrap().to_string();
    assert!(from.starts_with("<sip:alice@portal.com>;tag="), "{from}");
    assert_eq!(
        header_value(&invite1, "To"),
        Some("<sip:service1@portal.com>")
    );
    assert_eq!(header_value(&invite1, "Max-Forwards"), Some("70"));
    assert_eq!(cseq_of(&invite1), Some((1, "INVITE".into())));
    assert!(header_value(&invite1, "Contact")
        .unwrap()
        .starts_with("<sip:alice@127.0.0.1:"));
    assert_eq!(
        header_value(&invite1, "Content-Type"),
        Some("application/json")
    );
    assert_eq!(invite1.body, br#"{"item":"wine"}"#);
    assert!(header_value(&invite1, "Authorization").is_none());
    let call_id = header_value(&invite1, "Call-ID").unwrap().to_string();

    // 2. 100 Trying, then a challenge for both algorithms (MD5 listed first here).
    relay
        .send(&reply(&invite1, "100 Trying", "", &[], ""))
        .await;
    let key = NonceKey::new(b"cluster secret");
    let nonce = key.issue(1_000, relay.addr().ip());
    let mut chals = digest::challenge_headers(
        "portal.com",
        &nonce,
        false,
        &[Algorithm::Sha256, Algorithm::Md5],
    );
    chals.reverse();
    relay
        .send(&reply(
            &invite1,
            "401 Unauthorized",
            "relay401",
            &[
                ("WWW-Authenticate", &chals[0]),
                ("WWW-Authenticate", &chals[1]),
            ],
            "",
        ))
        .await;

    // 3. Hop-by-hop ACK with the INVITE's branch.
    let ack1 = relay.recv_request().await;
    assert_eq!(ack1.method.to_string(), "ACK");
    assert_eq!(ack1.uri.to_string(), "sip:service1@portal.com");
    assert_eq!(top_via_branch(&ack1).unwrap(), branch1);
    assert_eq!(cseq_of(&ack1), Some((1, "ACK".into())));
    assert_eq!(
        header_value(&ack1, "To")
            .and_then(|t| header_param(t, "tag"))
            .as_deref(),
        Some("relay401")
    );

    // 4. INVITE with SHA-256 credentials.
    let invite2 = relay.recv_request().await;
    assert_eq!(cseq_of(&invite2), Some((2, "INVITE".into())));
    assert_ne!(top_via_branch(&invite2).unwrap(), branch1);
    assert_eq!(header_value(&invite2, "Call-ID"), Some(call_id.as_str()));
    assert_eq!(header_value(&invite2, "From"), Some(from.as_str()));
    assert_eq!(
        header_value(&invite2, "To"),
        Some("<sip:service1@portal.com>")
    );
    let creds =
        digest::parse_credentials(header_value(&invite2, "Authorization").unwrap()).unwrap();
    assert_eq!(creds.algorithm, Algorithm::Sha256);
    assert_eq!(creds.qop.as_deref(), Some("auth"));
    assert_eq!(creds.nc, Some(1));
    assert_eq!(creds.uri, "sip:service1@portal.com");
    assert!(matches!(
        key.check(&creds.nonce, relay.addr().ip(), 2_000, 30_000),
        NonceStatus::Valid(_)
    ));
    let h1 = digest::ha1(Algorithm::Sha256, "alice", "portal.com", "wonderland");
    assert!(digest::verify(&creds, "INVITE", &h1));

    // 5. 180, then 200 with Contact, Record-Route and the service URL.
    relay
        .send(&reply(&invite2, "180 Ringing", "shop", &[], ""))
        .await;
    let ok = reply(
        &invite2,
        "200 OK",
        "shop",
        &[
            ("Record-Route", rr.as_str()),
            ("Contact", "<sip:shop@127.0.0.1:5999>"),
            ("Content-Type", "application/json"),
        ],
        SHOP_BODY,
    );
    relay.send(&ok).await;

    // 6. ACK for the 2xx: new branch, remote target, route set.
    let ack2 = relay.recv_request().await;
    let acked_at = Instant::now();
    assert_eq!(ack2.method.to_string(), "ACK");
    assert_eq!(ack2.uri.to_string(), "sip:shop@127.0.0.1:5999");
    assert_eq!(header_value(&ack2, "Route"), Some(rr.as_str()));
    assert_eq!(cseq_of(&ack2), Some((2, "ACK".into())));
    assert_ne!(
        top_via_branch(&ack2).unwrap(),
        top_via_branch(&invite2).unwrap()
    );
    let to2 = header_value(&ack2, "To").unwrap().to_string();
    assert_eq!(header_param(&to2, "tag").as_deref(), Some("shop"));

    // A retransmitted 200 (our ACK "was lost") is ACKed again.
    relay.send(&ok).await;
    let Peer::Udp { last, .. } = &mut relay else {
        unreachable!()
    };
    last.clear();
    let ack3 = relay.recv_request().await;
    assert_eq!(ack3.method.to_string(), "ACK");
    assert_eq!(top_via_branch(&ack3), top_via_branch(&ack2));

    // 7. BYE after the hold, on the route set.
    let bye = relay.recv_request().await;
    assert_eq!(bye.method.to_string(), "BYE");
    assert!(acked_at.elapsed() >= Duration::from_secs(30));
    assert_eq!(bye.uri.to_string(), "sip:shop@127.0.0.1:5999");
    assert_eq!(header_value(&bye, "Route"), Some(rr.as_str()));
    assert_eq!(cseq_of(&bye), Some((3, "BYE".into())));
    assert_eq!(header_value(&bye, "To"), Some(to2.as_str()));
    assert!(header_value(&bye, "Authorization").is_none());
    relay.send(&reply(&bye, "200 OK", "shop", &[], "")).await;

    let (result, out) = task.await.unwrap();
    let outcome = result.unwrap();
    assert_eq!(outcome.status, 200);
    assert_eq!(outcome.body, SHOP_BODY);
    assert!(outcome.duration >= Duration::from_secs(30));
    assert!(outcome.duration < Duration::from_secs(31));
    for line in [
        "SIP/2.0 100 Trying",
        "SIP/2.0 401 Unauthorized",
        "SIP/2.0 180 Ringing",
        "SIP/2.0 200 OK",
        SHOP_BODY,
        "BYE: SIP/2.0 200 OK",
    ] {
        assert!(out.contains(line), "{line:?} missing in:\n{out}");
    }
}

#[tokio::test(start_paused = true)]
async fn udp_retransmits_with_timer_a_until_provisional_then_rejected() {
    let mut relay = Peer::udp().await;
    let task = spawn_call(options(relay.addr(), Transport::Udp, Duration::ZERO));

    let (first, t0) = relay.recv_raw().await;
    let (second, t1) = relay.recv_raw().await;
    let (third, t2) = relay.recv_raw().await;
    assert_eq!(first, second);
    assert_eq!(first, third);
    assert_eq!(t1 - t0, Duration::from_millis(500));
    assert_eq!(t2 - t1, Duration::from_millis(1000));

    let SipMessage::Request(invite) = SipMessage::try_from(&first[..]).unwrap() else {
        panic!()
    };
    relay.send(&reply(&invite, "100 Trying", "", &[], "")).await;
    // No retransmission after the provisional response.
    let quiet = tokio::time::timeout(Duration::from_secs(10), relay.recv_raw()).await;
    assert!(quiet.is_err(), "retransmitted after 100 Trying");

    relay
        .send(&reply(
            &invite,
            "503 Service Unavailable",
            "relay",
            &[("Retry-After", "5")],
            "all shops busy",
        ))
        .await;
    let (ack, _) = relay.recv_raw().await;
    let SipMessage::Request(ack) = SipMessage::try_from(&ack[..]).unwrap() else {
        panic!()
    };
    assert_eq!(ack.method.to_string(), "ACK");
    assert_eq!(top_via_branch(&ack), top_via_branch(&invite));

    let (result, out) = task.await.unwrap();
    let err = result.unwrap_err();
    assert!(
        matches!(&err, ClientError::Rejected { status: 503, reason } if reason == "Service Unavailable")
    );
    assert_eq!(err.to_string(), "call failed: 503 Service Unavailable");
    assert!(
        out.contains("SIP/2.0 503 Service Unavailable\nall shops busy\n"),
        "{out}"
    );
}

#[tokio::test(start_paused = true)]
async fn udp_timer_b_gives_up_after_64_t1() {
    let mut relay = Peer::udp().await;
    let started = Instant::now();
    let task = spawn_call(options(relay.addr(), Transport::Udp, Duration::ZERO));
    let mut offsets = Vec::new();
    while let Ok((_, at)) = tokio::time::timeout(Duration::from_secs(40), relay.recv_raw()).await {
        offsets.push((at - started).as_millis());
    }
    assert_eq!(offsets, vec![0, 500, 1_500, 3_500, 7_500, 15_500, 31_500]);
    let (result, _) = task.await.unwrap();
    let err = result.unwrap_err();
    assert!(matches!(err, ClientError::Timeout { ref method, .. } if method == "INVITE"));
    assert_eq!(err.to_string(), "no final response to INVITE within 32 s");
}

#[tokio::test(start_paused = true)]
async fn a_second_challenge_is_a_rejection() {
    let mut relay = Peer::udp().await;
    let task = spawn_call(options(relay.addr(), Transport::Udp, Duration::ZERO));
    let key = NonceKey::new(b"k");
    for cseq in 1..=2 {
        let invite = relay.recv_request().await;
        assert_eq!(cseq_of(&invite), Some((cseq, "INVITE".into())));
        let chal = digest::challenge_headers(
            "portal.com",
            &key.issue(0, relay.addr().ip()),
            false,
            &[Algorithm::Sha256, Algorithm::Md5],
        );
        relay
            .send(&reply(
                &invite,
                "407 Proxy Authentication Required",
                "r",
                &[("Proxy-Authenticate", &chal[1])],
                "",
            ))
            .await;
        let ack = relay.recv_request().await;
        assert_eq!(ack.method.to_string(), "ACK");
        if cseq == 2 {
            let creds =
                digest::parse_credentials(header_value(&invite, "Proxy-Authorization").unwrap())
                    .unwrap();
            assert_eq!(creds.algorithm, Algorithm::Md5);
        }
    }
    let (result, _) = task.await.unwrap();
    assert_eq!(
        result.unwrap_err().to_string(),
        "call failed: 407 Proxy Authentication Required"
    );
}

#[tokio::test(start_paused = true)]
async fn tcp_call_ended_by_the_far_side() {
    let mut relay = Peer::tcp().await;
    let task = spawn_call(options(
        relay.addr(),
        Transport::Tcp,
        Duration::from_secs(600),
    ));

    let invite = relay.recv_request().await;
    let via = header_value(&invite, "Via").unwrap();
    assert!(via.starts_with("SIP/2.0/TCP 127.0.0.1:"), "{via}");
    assert!(header_value(&invite, "Contact")
        .unwrap()
        .ends_with(";transport=tcp>"));
    // Two messages in one write are framed apart.
    let both = format!(
        "{}{}",
        reply(&invite, "100 Trying", "", &[], ""),
        reply(
            &invite,
            "200 OK",
            "shop",
            &[("Contact", "<sip:shop@127.0.0.1:5999;transport=tcp>")],
            SHOP_BODY
        )
    );
    relay.send(&both).await;
    let ack = relay.recv_request().await;
    assert_eq!(ack.method.to_string(), "ACK");
    assert!(ack
        .uri
        .to_string()
        .eq_ignore_ascii_case("sip:shop@127.0.0.1:5999;transport=tcp"));
    assert!(header_value(&ack, "Route").is_none());

    tokio::time::sleep(Duration::from_secs(5)).await;
    let from = header_value(&invite, "From").unwrap();
    let local_tag = header_param(from, "tag").unwrap();
    let bye = format!(
        "BYE sip:alice@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKfar1\r\n\
         From: <sip:service1@portal.com>;tag=shop\r\n\
         To: <sip:alice@portal.com>;tag={local_tag}\r\n\
         Call-ID: {}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
        header_value(&invite, "Call-ID").unwrap()
    );
    relay.send(&bye).await;
    let SipMessage::Response(ok) = relay.recv().await else {
        panic!("expected the 200 to BYE")
    };
    assert_eq!(ok.status_code.code(), 200);
    assert_eq!(top_via_branch(&ok).as_deref(), Some("z9hG4bKfar1"));
    assert_eq!(cseq_of(&ok), Some((1, "BYE".into())));

    let (result, out) = task.await.unwrap();
    let outcome = result.unwrap();
    assert_eq!(outcome.body, SHOP_BODY);
    assert!(outcome.duration >= Duration::from_secs(5));
    assert!(outcome.duration < Duration::from_secs(6));
    assert!(out.contains("the far side hung up"), "{out}");
}

#[tokio::test(start_paused = true)]
async fn a_forked_second_answer_is_acked_and_released() {
    let mut relay = Peer::udp().await;
    let task = spawn_call(options(
        relay.addr(),
        Transport::Udp,
        Duration::from_secs(1),
    ));
    let invite = relay.recv_request().await;
    relay
        .send(&reply(
            &invite,
            "200 OK",
            "shop1",
            &[("Contact", "<sip:s1@127.0.0.1:5001>")],
            "one",
        ))
        .await;
    let ack1 = relay.recv_request().await;
    assert_eq!(ack1.uri.to_string(), "sip:s1@127.0.0.1:5001");
    relay
        .send(&reply(
            &invite,
            "200 OK",
            "shop2",
            &[("Contact", "<sip:s2@127.0.0.1:5002>")],
            "two",
        ))
        .await;
    let ack2 = relay.recv_request().await;
    assert_eq!(ack2.method.to_string(), "ACK");
    assert_eq!(ack2.uri.to_string(), "sip:s2@127.0.0.1:5002");
    let bye2 = relay.recv_request().await;
    assert_eq!(bye2.method.to_string(), "BYE");
    assert_eq!(bye2.uri.to_string(), "sip:s2@127.0.0.1:5002");
    assert_eq!(
        header_value(&bye2, "To")
            .and_then(|t| header_param(t, "tag"))
            .as_deref(),
        Some("shop2")
    );
    relay.send(&reply(&bye2, "200 OK", "shop2", &[], "")).await;
    let bye1 = relay.recv_request().await;
    assert_eq!(bye1.uri.to_string(), "sip:s1@127.0.0.1:5001");
    relay.send(&reply(&bye1, "200 OK", "shop1", &[], "")).await;
    let (result, out) = task.await.unwrap();
    assert_eq!(result.unwrap().body, "one");
    assert!(
        out.contains("another answer (forked): SIP/2.0 200 OK\ntwo\n"),
        "{out}"
    );
}

#[tokio::test]
async fn bad_target_is_refused_before_any_io() {
    let mut opts = options(
        "127.0.0.1:9".parse().unwrap(),
        Transport::Udp,
        Duration::ZERO,
    );
    for bad in ["service1@portal.com", "http://portal.com", "sip:", ""] {
        opts.target = bad.into();
        let mut out = Vec::new();
        let err = call(opts.clone(), &mut out).await.unwrap_err();
        assert!(matches!(err, ClientError::BadTarget(_)), "{bad}: {err}");
    }
    assert_eq!(
        uac::target_domain_for_test("sip:service1@portal.com:5070;transport=tcp").unwrap(),
        "portal.com"
    );
}

#[test]
fn content_types_and_transports() {
    assert_eq!(
        content_type_for(Path::new("order.json")),
        "application/json"
    );
    assert_eq!(
        content_type_for(Path::new("/tmp/ORDER.XML")),
        "application/xml"
    );
    assert_eq!(content_type_for(Path::new("notes.txt")), "text/plain");
    assert_eq!(content_type_for(Path::new("noext")), "text/plain");
    assert_eq!("TCP".parse::<Transport>().unwrap(), Transport::Tcp);
    assert!("sctp".parse::<Transport>().is_err());
}

#[test]
fn the_call_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let mut out: Vec<u8> = Vec::new();
    let opts = options(
        "127.0.0.1:9".parse().unwrap(),
        Transport::Udp,
        Duration::ZERO,
    );
    let fut = call(opts, &mut out);
    assert_send(&fut);
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_call_is_cancelled_after_ringing_too_long() {
    let mut relay = Peer::udp().await;
    let task = spawn_call(options(relay.addr(), Transport::Udp, Duration::ZERO));
    let invite = relay.recv_request().await;
    relay
        .send(&reply(&invite, "180 Ringing", "shop", &[], ""))
        .await;
    let rang = Instant::now();
    let cancel = relay.recv_request().await;
    assert_eq!(rang.elapsed(), uac::RING_TIMEOUT);
    assert_eq!(cancel.method.to_string(), "CANCEL");
    assert_eq!(cancel.uri, invite.uri);
    assert_eq!(top_via_branch(&cancel), top_via_branch(&invite));
    assert_eq!(cseq_of(&cancel), Some((1, "CANCEL".into())));
    assert_eq!(header_value(&cancel, "To"), header_value(&invite, "To"));
    relay.send(&reply(&cancel, "200 OK", "shop", &[], "")).await;
    relay
        .send(&reply(&invite, "487 Request Terminated", "shop", &[], ""))
        .await;
    let ack = relay.recv_request().await;
    assert_eq!(ack.method.to_string(), "ACK");
    assert_eq!(top_via_branch(&ack), top_via_branch(&invite));
    let (result, out) = task.await.unwrap();
    assert_eq!(
        result.unwrap_err().to_string(),
        "call failed: 487 Request Terminated"
    );
    assert!(out.contains("cancelling"), "{out}");
}
