//! The shop's visits: one per accepted SIP session, keyed by the relay's session id, shared by
//! the SIP side (opens and ends them) and the web side (cookie sessions, purchases, the tab).
//!
//! Bounded: a visit exists only for a dialog the SIP side accepted (at most `capacity`), plus
//! up to [`MAX_ENDED`] ended ones kept so a late page load says "this visit has ended"; each
//! visit holds at most [`MAX_COOKIES`] cookie sessions and [`MAX_LINES`] purchases.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::billing::NewCharge;
use crate::tokens::Claims;

/// Ended visits remembered.
pub const MAX_ENDED: usize = 256;
/// Cookie sessions per visit (each landing with a valid token makes one).
pub const MAX_COOKIES: usize = 8;
/// Purchases and tab lines per visit.
pub const MAX_LINES: usize = 100;

/// One visit: a session the relay set up for a user.
#[derive(Debug, Clone)]
pub struct Visit {
    pub session_id: String,
    /// The user (the token's `sub`).
    pub user: String,
    /// The service called (`svc`).
    pub service: String,
    /// What the caller asked for: the INVITE body (or a later re-INVITE's / UPDATE's).
    pub asked: String,
    /// Charges posted to the relay: their Idempotency-Key and the line shown to the user.
    pub bought: Vec<(String, String)>,
    /// Charges not posted yet: they go in the 200 to BYE.
    pub tab: Vec<NewCharge>,
    pub ended: bool,
    cookies: Vec<String>,
}

impl Visit {
    /// A visit for the session a verified token describes.
    pub fn new(claims: &Claims, asked: String) -> Visit {
        Visit {
            session_id: claims.sid.clone(),
            user: claims.sub.clone(),
            service: claims.svc.clone(),
            asked,
            bought: Vec::new(),
            tab: Vec::new(),
            ended: false,
            cookies: Vec::new(),
        }
    }
}

/// Every visit of the shop.
#[derive(Default)]
pub struct Visits {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_session: HashMap<String, Visit>,
    ended: VecDeque<String>,
}

impl Visits {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a new visit (the SIP side accepted its INVITE).
    pub fn open(&self, visit: Visit) {
        self.lock()
            .by_session
            .insert(visit.session_id.clone(), visit);
    }

    /// A re-INVITE or UPDATE asked for something else.
    pub fn change_request(&self, session_id: &str, asked: String) {
        if let Some(v) = self.lock().by_session.get_mut(session_id) {
            v.asked = asked;
        }
    }

    /// The session ended (BYE): the visit is closed and its tab handed back, to be billed in
    /// the 200 to BYE.
    pub fn end(&self, session_id: &str) -> Vec<NewCharge> {
        let mut inner = self.lock();
        let Some(v) = inner.by_session.get_mut(session_id) else {
            return Vec::new();
        };
        v.ended = true;
        v.cookies.clear();
        let tab = std::mem::take(&mut v.tab);
        inner.ended.push_back(session_id.to_owned());
        while inner.ended.len() > MAX_ENDED {
            if let Some(old) = inner.ended.pop_front() {
                inner.by_session.remove(&old);
            }
        }
        tab
    }

    /// A new cookie session for a live visit; `None` when the visit is unknown or ended.
    pub fn start_cookie(&self, session_id: &str) -> Option<String> {
        let mut inner = self.lock();
        let v = inner.by_session.get_mut(session_id).filter(|v| !v.ended)?;
        let cookie = format!("{:032x}", rand::random::<u128>());
        if v.cookies.len() >= MAX_COOKIES {
            v.cookies.remove(0);
        }
        v.cookies.push(cookie.clone());
        Some(cookie)
    }

    /// The visit a cookie belongs to (ended visits have none).
    pub fn by_cookie(&self, cookie: &str) -> Option<Visit> {
        self.lock()
            .by_session
            .values()
            .find(|v| v.cookies.iter().any(|c| c == cookie))
            .cloned()
    }

    /// Whether a session's visit has ended.
    pub fn has_ended(&self, session_id: &str) -> bool {
        self.lock()
            .by_session
            .get(session_id)
            .is_some_and(|v| v.ended)
    }

    /// Notes a charge the relay recorded (once per key: a replay adds nothing).
    pub fn bought(&self, session_id: &str, key: &str, line: String) {
        if let Some(v) = self.lock().by_session.get_mut(session_id) {
            if v.bought.len() < MAX_LINES && !v.bought.iter().any(|(k, _)| k == key) {
                v.bought.push((key.to_owned(), line));
            }
        }
    }

    /// Puts a charge on the tab; `false` when the visit is gone or the tab is full.
    pub fn put_on_tab(&self, session_id: &str, charge: NewCharge) -> bool {
        let mut inner = self.lock();
        match inner.by_session.get_mut(session_id) {
            Some(v) if !v.ended && v.tab.len() < MAX_LINES => {
                v.tab.push(charge);
                true
            }
            _ => false,
        }
    }
}
