//! Mutation fuzzing on stable Rust (arbtest): the SIP message parser with request validation,
//! the stream framer, and the digest parsers never panic, whatever bytes arrive.
//!
//! Inputs are the committed seed corpus (`tests/corpus/sip`: RFC 4475 torture messages as far
//! as they can be reconstructed, plus the relay's own traffic; `tests/corpus/digest`: RFC 2617
//! and RFC 7616 credentials and challenges) mutated by bytes arbtest draws: flips, inserts,
//! deletions, duplicated ranges and SIP-shaped tokens spliced in, or raw random bytes.
//!
//! Each property runs for `TOLLGATE_FUZZ_MS` milliseconds (default 1500: the short run of the
//! test suite) and prints how many cases it ran; `scripts/fuzz-long.sh` runs them for minutes.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use arbtest::arbitrary::{Result, Unstructured};
use bytes::BytesMut;
use rsipstack::sip::SipMessage;
use tollgate::sip::digest::{self, NonceKeys};
use tollgate::sip::framing::{Frame, StreamFramer};
use tollgate::sip::message as msg;
use tollgate::sip::validate::validate_request;

/// Tokens that make mutations SIP-shaped.
const DICTIONARY: &[&[u8]] = &[
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"\"",
    b"\\",
    b"<",
    b">",
    b"=",
    b"%00",
    b"SIP/2.0",
    b"Content-Length: ",
    b"Content-Length: 99999999999\r\n",
    b"l: 0\r\n",
    b"CSeq: 1 INVITE\r\n",
    b"Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\n",
    b"Call-ID: x\r\n",
    b"Max-Forwards: 70\r\n",
    b"\xff\xfe",
    b"\0",
    b"Digest ",
    b"username=",
    b"nonce=",
    b"nc=",
    b"qop=auth",
    b"algorithm=SHA-256",
    b"realm=\"",
    b"4294967296",
    b"-1",
];

fn corpus(kind: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(kind);
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 5, "the {kind} corpus is missing");
    seeds
}

/// A seed mutated by what `u` draws, or (one time in eight) raw bytes.
fn mutated(u: &mut Unstructured<'_>, seeds: &[Vec<u8>]) -> Result<Vec<u8>> {
    if u.ratio(1, 8)? {
        return u.arbitrary::<Vec<u8>>();
    }
    let mut data = u.choose(seeds)?.clone();
    for _ in 0..u.int_in_range(0..=8)? {
        let at = u.int_in_range(0..=data.len())?;
        match u.int_in_range(0..=4)? {
            0 if at < data.len() => data[at] ^= 1 << u.int_in_range(0..=7)?,
            1 => data
                .splice(at..at, u.arbitrary::<Vec<u8>>()?.into_iter().take(16))
                .for_each(drop),
            2 => {
                let end = u.int_in_range(at..=data.len())?;
                data.drain(at..end);
            }
            3 => {
                let end = u.int_in_range(at..=data.len().min(at + 256))?;
                let copy = data[at..end].to_vec();
                data.splice(at..at, copy).for_each(drop);
            }
            _ => {
                let token = u.choose(DICTIONARY)?;
                data.splice(at..at, token.iter().copied()).for_each(drop);
            }
        }
    }
    Ok(data)
}

fn budget_ms() -> u64 {
    std::env::var("TOLLGATE_FUZZ_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_500)
}

fn report(what: &str, cases: &AtomicU64) {
    println!(
        "fuzz {what}: {} cases, 0 panics",
        cases.load(Ordering::Relaxed)
    );
}

#[test]
fn the_message_parser_and_validation_never_panic() {
    let seeds = corpus("sip");
    let cases = AtomicU64::new(0);
    arbtest::arbtest(|u| {
        let data = mutated(u, &seeds)?;
        cases.fetch_add(1, Ordering::Relaxed);
        match msg::parse(&data) {
            Ok(SipMessage::Request(req)) => {
                let _ = validate_request(&req);
                let _ = msg::top_via(&req.headers).map(msg::via_info);
                let _ = msg::cseq(&req.headers);
                let _ = msg::from_tag(&req.headers);
            }
            Ok(SipMessage::Response(resp)) => {
                let _ = msg::top_via(&resp.headers).map(msg::via_info);
            }
            Err(failure) => {
                if let Some(SipMessage::Request(req)) = failure.parsed.map(|m| *m) {
                    let _ = validate_request(&req);
                }
            }
        }
        Ok(())
    })
    .budget_ms(budget_ms());
    report("message parser", &cases);
}

#[test]
fn the_stream_framer_never_panics_and_respects_its_limit() {
    let seeds = corpus("sip");
    let cases = AtomicU64::new(0);
    arbtest::arbtest(|u| {
        let stream = mutated(u, &seeds)?;
        cases.fetch_add(1, Ordering::Relaxed);
        let limit = u.int_in_range(64..=4096)?;
        let mut framer = StreamFramer::new(limit);
        let mut buf = BytesMut::new();
        let mut rest = stream.as_slice();
        // Feed the stream in arbitrary pieces, as reads deliver it.
        while !rest.is_empty() {
            let n = u.int_in_range(1..=rest.len())?;
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            loop {
                match framer.decode(&mut buf) {
                    Ok(Some(Frame::Message(m))) => {
                        assert!(m.len() <= limit, "a frame over the limit");
                        let _ = msg::parse(&m);
                    }
                    Ok(Some(Frame::Ping)) => {}
                    Ok(None) => break,
                    Err(_) => return Ok(()), // the connection would be closed
                }
            }
        }
        Ok(())
    })
    .budget_ms(budget_ms());
    report("stream framer", &cases);
}

#[test]
fn the_digest_parsers_never_panic() {
    let seeds = corpus("digest");
    let keys = NonceKeys::new(b"fuzz", &[b"previous"]);
    let source = std::net::IpAddr::from([127, 0, 0, 1]);
    let cases = AtomicU64::new(0);
    arbtest::arbtest(|u| {
        let bytes = mutated(u, &seeds)?;
        cases.fetch_add(1, Ordering::Relaxed);
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(c) = digest::parse_credentials(&text) {
            let _ = digest::verify(&c, "INVITE", "00");
            let _ = keys.check(&c.nonce, source, 0, 300_000);
        }
        let _ = digest::parse_challenge(&text);
        let _ = digest::parse_challenges(&text);
        let _ = digest::choose_challenge([text.as_ref()]);
        let _ = keys.check(&text, source, 0, 300_000);
        Ok(())
    })
    .budget_ms(budget_ms());
    report("digest parsers", &cases);
}
