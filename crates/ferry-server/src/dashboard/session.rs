//! Signing in to the dashboard: an admin token, checked by the store, opens a session named
//! by an HttpOnly, SameSite=Strict cookie; every form carries the session's CSRF token.
//!
//! Sessions live in this process's memory, with the token that opened them (never sent back
//! to the browser): each request checks the token again, so a revoked admin is signed out at
//! once. Behind a load balancer, a session belongs to the process that opened it (sticky
//! sessions, or sign in again).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use ferry_store::{Principal, Store};

use crate::AppState;

/// The session cookie's name.
pub const COOKIE: &str = "ferry_admin";

/// How long a session lasts without being used.
pub const IDLE: Duration = Duration::from_secs(12 * 3600);

/// The dashboard's sessions in this process.
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, Session>>);

#[derive(Clone)]
struct Session {
    token: String,
    csrf: String,
    used: Instant,
}

/// A signed-in operator.
pub struct SignedIn {
    pub who: Principal,
    /// The token every form of this session carries.
    pub csrf: String,
}

/// Why a request is not signed in.
pub enum NotSignedIn {
    /// No session, an expired one, or its token no longer admits an admin.
    Out,
    /// The store could not be asked.
    Store(crate::ApiError),
}

impl Sessions {
    /// Opens a session for `token`: the cookie's value and the session's CSRF token.
    pub fn open(&self, token: &str) -> String {
        let id = random_hex();
        let session = Session { token: token.to_owned(), csrf: random_hex(), used: Instant::now() };
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|_, s| s.used.elapsed() < IDLE);
        all.insert(id.clone(), session);
        id
    }

    pub fn close(&self, id: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    fn touch(&self, id: &str) -> Option<Session> {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let s = all.get_mut(id)?;
        if s.used.elapsed() >= IDLE {
            all.remove(id);
            return None;
        }
        s.used = Instant::now();
        Some(s.clone())
    }
}

/// The session named by the request's cookie, its token still an admin's.
pub async fn signed_in<S: Store>(state: &AppState<S>, headers: &HeaderMap) -> Result<SignedIn, NotSignedIn> {
    let id = cookie(headers).ok_or(NotSignedIn::Out)?;
    let session = state.dashboard.touch(&id).ok_or(NotSignedIn::Out)?;
    match state.store.authenticate(&session.token).await {
        Ok(Some(who)) if who.admin => Ok(SignedIn { who, csrf: session.csrf }),
        Ok(_) => {
            state.dashboard.close(&id);
            Err(NotSignedIn::Out)
        }
        Err(e) => Err(NotSignedIn::Store(e.into())),
    }
}

/// The session id the request's cookie names.
pub fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// The `Set-Cookie` that names session `id` (or, with `None`, ends it).
pub fn set_cookie(id: Option<&str>) -> String {
    match id {
        Some(id) => {
            format!("{COOKIE}={id}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={}", IDLE.as_secs())
        }
        None => format!("{COOKIE}=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0"),
    }
}

/// Whether a form's `csrf` field is the session's, compared in constant time.
pub fn csrf_ok(signed: &SignedIn, sent: Option<&str>) -> bool {
    let Some(sent) = sent else { return false };
    let (a, b) = (signed.csrf.as_bytes(), sent.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the system's random source");
    ferry_core::to_hex(&bytes)
}
