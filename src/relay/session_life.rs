//! How long a session may live, and how it outlives the relay (issue "lose nothing"):
//!
//! - **Admission.** A new INVITE is refused with `503` and `Retry-After` while the node drains
//!   for a stop, or while the session store is down or behind ([`crate::store::WriterTrouble`]):
//!   a call the relay could not bill is never relayed. In-dialog requests keep flowing.
//! - **Session timers** (RFC 4028). An INVITE whose `Session-Expires` is below `[sip] min_se`
//!   gets `422` with `Min-SE`; one without gets `Session-Expires: [sip] session_expires`. When
//!   the application server's 2xx carries `Session-Expires`, the session runs on that interval:
//!   every 2xx to a re-INVITE or UPDATE refreshes it; one that is not refreshed in time is
//!   ended — BYE to both sides, billed to its last proof of life, `end_reason = session_timer`.
//! - **Maximum duration.** `[sessions] max_duration_secs` after its confirmation, any session
//!   is ended the same way (`end_reason = max_duration`).
//! - **Checkpoints.** Every `[sessions] checkpoint_secs` the node records, in one statement,
//!   that all its confirmed sessions are alive ([`SessionEvent::Checkpoint`]): a crash costs at
//!   most that much billed time per session.
//! - **Resuming.** The dialog state is stored with each confirmation. A restarted node carries
//!   on with the sessions it left ([`Core::resume`]); those silent for longer than their session
//!   interval were closed at their last checkpoint by the store, and their parties get a BYE.

use crate::relay::core::{Core, CoreTimer, Role};
use crate::relay::dialog::{Dialog, DialogInfo, DialogState};
use crate::relay::transaction::ServerKey;
use crate::sip::message as msg;
use crate::store::{EndReason, Party, Resumed, SessionEvent};
use rsipstack::sip::{Header, Headers, Method, Request, Response};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `Retry-After` (seconds) of a 503 for a node that cannot take a session now.
const RETRY_AFTER_SECS: u32 = 5;

/// Settings of session life.
#[derive(Debug, Clone)]
pub struct LifeSettings {
    /// The interval inserted into an INVITE without `Session-Expires`, in seconds.
    pub session_expires: u32,
    /// The smallest interval accepted, in seconds.
    pub min_se: u32,
    /// Any session ends at this age.
    pub max_duration: Option<Duration>,
    /// How often the node's confirmed sessions are checkpointed.
    pub checkpoint: Duration,
}

/// Whether the node takes new sessions; flipped by [`crate::app::Relay::drain`].
#[derive(Debug, Clone, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    pub fn start(&self) {
        self.0.store(true, Ordering::Release);
    }
    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// `Session-Expires` (or its compact form `x`) of a message: the interval in seconds.
pub fn session_expires(headers: &Headers) -> Option<u32> {
    headers.iter().find_map(|h| match h {
        Header::SessionExpires(v) => v.value().split(';').next()?.trim().parse().ok(),
        _ => None,
    })
}

impl Core {
    /// Admission and RFC 4028 for an initial INVITE in server transaction `key`: `false` when
    /// it was answered here (503 or 422). Otherwise a missing `Session-Expires` is added.
    pub(crate) fn admit_invite(&mut self, key: &ServerKey) -> bool {
        let refusal = if self.draining.is_on() {
            Some("The relay is shutting down".to_string())
        } else {
            self.parts.sessions.trouble().map(|t| t.to_string())
        };
        if let Some(why) = refusal {
            let retry = Header::RetryAfter(rsipstack::sip::RetryAfter::new(
                RETRY_AFTER_SECS.to_string(),
            ));
            self.engine
                .respond_status(key, 503, Some(&why), vec![retry]);
            return false;
        }
        let life = &self.settings.life;
        let (min_se, default) = (life.min_se, life.session_expires);
        let Some(req) = self.engine.request_mut(key) else {
            return false;
        };
        match session_expires(&req.headers) {
            Some(asked) if asked < min_se => {
                let min = Header::MinSE(rsipstack::sip::MinSE::new(min_se.to_string()));
                self.engine
                    .respond_status(key, 422, Some("Session Interval Too Small"), vec![min]);
                false
            }
            Some(_) => true,
            None => {
                add_session_expires(req, default.max(min_se));
                true
            }
        }
    }

    /// The session of dialog `dk` is confirmed (on disk): its timers start.
    pub(crate) fn start_session_clocks(&mut self, dk: &str) {
        let Some(d) = self.dialogs.get(dk) else {
            return;
        };
        let confirmed_at = d.confirmed_at.unwrap_or_else(|| self.now());
        let started = d.clocks.max_duration.is_some();
        if let Some(max) = self.settings.life.max_duration.filter(|_| !started) {
            let age = Duration::from_millis((self.now() - confirmed_at).max(0) as u64);
            let key = self.timers.insert(
                CoreTimer::MaxDuration {
                    dialog: dk.to_string(),
                },
                max.saturating_sub(age),
            );
            if let Some(d) = self.dialogs.get_mut(dk) {
                d.clocks.max_duration = Some(key);
            }
        }
        self.arm_session_timer(dk);
    }

    /// (Re)arms the session timer of dialog `dk` from its last refresh (one queue entry per
    /// dialog, moved by each refresh).
    fn arm_session_timer(&mut self, dk: &str) {
        let now = self.now();
        let Some(d) = self.dialogs.get_mut(dk) else {
            return;
        };
        let Some(interval) = d.info.session_interval_secs else {
            return;
        };
        let elapsed = (now - d.refreshed_at).max(0) as u64;
        let left = Duration::from_millis((u64::from(interval) * 1000).saturating_sub(elapsed));
        match &d.clocks.session_timer {
            Some(key) => self.timers.reset(key, left),
            None => {
                let timer = CoreTimer::SessionTimer {
                    dialog: dk.to_string(),
                };
                d.clocks.session_timer = Some(self.timers.insert(timer, left));
            }
        }
    }

    /// Takes dialog `dk` out of the core, with its entries in the timer queue.
    pub(crate) fn forget_dialog(&mut self, dk: &str) -> Option<Dialog> {
        let dialog = self.dialogs.remove(dk)?;
        for key in [&dialog.clocks.session_timer, &dialog.clocks.max_duration]
            .into_iter()
            .flatten()
        {
            self.timers.remove(key);
        }
        Some(dialog)
    }

    /// A re-INVITE or UPDATE of dialog `dk` was answered 2xx: the session is refreshed, on the
    /// interval the answer names if it names one.
    pub(crate) fn session_refreshed(&mut self, dk: &str, answer: &Response) {
        let now = self.now();
        let Some(d) = self.dialogs.get_mut(dk) else {
            return;
        };
        d.refreshed_at = now;
        if let Some(interval) = session_expires(&answer.headers) {
            d.info.session_interval_secs = Some(interval);
        }
        if d.state == DialogState::Confirmed {
            self.arm_session_timer(dk);
        }
    }

    pub(crate) fn on_session_timer(&mut self, dk: &str) {
        let Some(d) = self.dialogs.get_mut(dk) else {
            return;
        };
        d.clocks.session_timer = None; // fired: its key is no longer in the queue
        if matches!(d.state, DialogState::Ending(_)) {
            return;
        }
        tracing::info!(dialog = %dk, "session timer expired without a refresh");
        let last_seen = d.last_seen;
        self.end_by_relay(dk, EndReason::SessionTimer, last_seen);
    }

    pub(crate) fn on_max_duration(&mut self, dk: &str) {
        let Some(d) = self.dialogs.get_mut(dk) else {
            return;
        };
        d.clocks.max_duration = None; // fired: its key is no longer in the queue
        if !matches!(d.state, DialogState::Ending(_)) {
            tracing::info!(dialog = %dk, "session reached its maximum duration");
            let now = self.now();
            self.end_by_relay(dk, EndReason::MaxDuration, now);
        }
    }

    /// Records the node's heartbeat (and so its confirmed sessions' proof of life), and arms
    /// the next one.
    pub(crate) fn checkpoint(&mut self) {
        self.parts.sessions.record(SessionEvent::Checkpoint {
            node: self.settings.node_id.clone(),
            at: self.now(),
        });
        self.timers
            .insert(CoreTimer::Checkpoint, self.settings.life.checkpoint);
    }

    /// Carries on with the sessions a previous run of this node left: the live ones become
    /// confirmed dialogs again; the parties of the closed ones get a BYE.
    pub(crate) fn resume(&mut self, resumed: Resumed) {
        let (mut carried, mut ended) = (0, 0);
        for session in resumed.live {
            let Some(info) = parse_info(session.dialog.as_deref()) else {
                continue;
            };
            let dk = self.dialogs.restore(Dialog::resumed(
                info,
                session.confirmed_at,
                session.last_proof_at,
            ));
            self.parts.metrics.session_started();
            self.start_session_clocks(&dk);
            carried += 1;
        }
        for session in resumed.closed {
            let Some(info) = parse_info(session.dialog.as_deref()) else {
                continue;
            };
            let dk = self.dialogs.restore(Dialog::resumed(
                info,
                session.confirmed_at,
                session.last_proof_at,
            ));
            self.say_bye_to_both(&dk, EndReason::RelayRestart);
            self.forget_dialog(&dk);
            ended += 1;
        }
        if carried + ended > 0 {
            tracing::warn!(carried, ended, "resumed the sessions of a previous run");
        }
    }

    /// BYE to both parties of dialog `dk` (the caller only when it is a client), with a
    /// `Reason` naming why.
    pub(crate) fn say_bye_to_both(&mut self, dk: &str, reason: EndReason) {
        let Some(caller_is_client) = self.dialogs.get(dk).map(|d| d.caller_is_client()) else {
            return;
        };
        let why = Header::Other(
            "Reason".into(),
            format!("SIP;cause=200;text=\"{}\"", reason.as_str()),
        );
        let own = || Role::Own { closes: None };
        self.send_in_dialog(
            dk,
            Party::Callee,
            Method::Bye,
            vec![why.clone()],
            None,
            own(),
        );
        if caller_is_client {
            self.send_in_dialog(dk, Party::Caller, Method::Bye, vec![why], None, own());
        }
    }
}

/// Adds `Session-Expires` (and `Min-SE`) to an INVITE that asked for none (RFC 4028 §8.1).
fn add_session_expires(req: &mut Request, interval: u32) {
    msg::push_header(
        &mut req.headers,
        Header::SessionExpires(rsipstack::sip::SessionExpires::new(interval.to_string())),
    );
}

fn parse_info(json: Option<&str>) -> Option<DialogInfo> {
    let parsed = serde_json::from_str(json?);
    if let Err(e) = &parsed {
        tracing::error!(error = %e, "a stored dialog cannot be read; its session is not resumed");
    }
    parsed.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(text: &str) -> Headers {
        let wire = format!(
            "INVITE sip:s@portal.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n\
From: <sip:a@portal.com>;tag=1\r\nTo: <sip:s@portal.com>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
{text}Content-Length: 0\r\n\r\n"
        );
        match msg::parse(wire.as_bytes()) {
            Ok(rsipstack::sip::SipMessage::Request(r)) => r.headers,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn session_expires_is_read_in_both_forms_with_parameters() {
        assert_eq!(
            session_expires(&headers("Session-Expires: 1800;refresher=uac\r\n")),
            Some(1800)
        );
        assert_eq!(session_expires(&headers("x: 90\r\n")), Some(90));
        assert_eq!(session_expires(&headers("")), None);
        assert_eq!(session_expires(&headers("Session-Expires: soon\r\n")), None);
    }
}
