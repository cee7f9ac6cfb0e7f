//! Signing in to the dashboard: an admin token, checked by the store, or the admin password
//! (`ferry admin passwd`, kept in the store as an Argon2id hash) opens a session named by an
//! HttpOnly, SameSite=Strict cookie; every form carries the session's CSRF token.
//!
//! Sessions live in this process's memory, with what opened them (never sent back to the
//! browser): each request checks it again, so a revoked admin token, or a password changed or
//! removed, signs its sessions out at once. Behind a load balancer, a session belongs to the
//! process that opened it (sticky sessions, or sign in again).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::http::HeaderMap;
use ferry_store::Store;

use crate::AppState;

/// The session cookie's name.
pub const COOKIE: &str = "ferry_admin";

/// How long a session lasts without being used.
pub const IDLE: Duration = Duration::from_secs(12 * 3600);

/// The dashboard's sessions in this process, and the recent wrong passwords.
#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
    wrong_passwords: Mutex<VecDeque<Instant>>,
}

/// Wrong passwords allowed within [`WRONG_WINDOW`] before sign-in by password pauses (each
/// costs a guesser, and this server, an Argon2 hash).
pub const WRONG_PASSWORDS: usize = 10;
pub const WRONG_WINDOW: Duration = Duration::from_secs(60);

/// The shortest admin password `ferry admin passwd` accepts.
pub const MIN_PASSWORD: usize = 12;

#[derive(Clone)]
struct Session {
    by: Credential,
    csrf: String,
    used: Instant,
}

/// What opened a session, checked again on every request.
#[derive(Clone)]
pub enum Credential {
    /// An admin token.
    Token(String),
    /// The admin password, by the hash it matched (a new password ends the session).
    Password(String),
}

/// A signed-in operator.
pub struct SignedIn {
    /// Who, for the log: the admin token's device, or the password.
    pub by: String,
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
    /// Opens a session for `by`: the cookie's value.
    pub fn open(&self, by: Credential) -> String {
        let id = crate::random_hex(32);
        let session = Session { by, csrf: crate::random_hex(32), used: Instant::now() };
        let mut all = self.open.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|_, s| s.used.elapsed() < IDLE);
        all.insert(id.clone(), session);
        id
    }

    pub fn close(&self, id: &str) {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// `Err(wait)` while [`WRONG_PASSWORDS`] wrong passwords lie within the last
    /// [`WRONG_WINDOW`]: how long until the oldest leaves it.
    pub fn password_allowed(&self) -> Result<(), Duration> {
        let mut wrong = self.wrong_passwords.lock().unwrap_or_else(|p| p.into_inner());
        while wrong.front().is_some_and(|at| at.elapsed() >= WRONG_WINDOW) {
            wrong.pop_front();
        }
        match wrong.front() {
            Some(oldest) if wrong.len() >= WRONG_PASSWORDS => Err(WRONG_WINDOW.saturating_sub(oldest.elapsed())),
            _ => Ok(()),
        }
    }

    pub fn password_was_wrong(&self) {
        self.wrong_passwords.lock().unwrap_or_else(|p| p.into_inner()).push_back(Instant::now());
    }

    fn touch(&self, id: &str) -> Option<Session> {
        let mut all = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let s = all.get_mut(id)?;
        if s.used.elapsed() >= IDLE {
            all.remove(id);
            return None;
        }
        s.used = Instant::now();
        Some(s.clone())
    }
}

/// The session named by the request's cookie, what opened it still good: its token still an
/// admin's, or the admin password still the one it matched.
pub async fn signed_in<S: Store>(state: &AppState<S>, headers: &HeaderMap) -> Result<SignedIn, NotSignedIn> {
    let id = cookie(headers).ok_or(NotSignedIn::Out)?;
    let session = state.dashboard.touch(&id).ok_or(NotSignedIn::Out)?;
    let by = match &session.by {
        Credential::Token(token) => match state.store.authenticate(token).await {
            Ok(Some(who)) if who.admin => Some(format!("device {}", who.device_id)),
            Ok(_) => None,
            Err(e) => return Err(NotSignedIn::Store(e.into())),
        },
        Credential::Password(hash) => match state.store.admin_password().await {
            Ok(now) => (now.as_ref() == Some(hash)).then(|| "the admin password".to_owned()),
            Err(e) => return Err(NotSignedIn::Store(e.into())),
        },
    };
    match by {
        Some(by) => Ok(SignedIn { by, csrf: session.csrf }),
        None => {
            state.dashboard.close(&id);
            Err(NotSignedIn::Out)
        }
    }
}

/// The Argon2id hash of `password` (a PHC string, salted) that the store keeps.
///
/// # Errors
/// A password shorter than [`MIN_PASSWORD`] characters, named with the fix.
pub fn hash_password(password: &str) -> Result<String, String> {
    let n = password.chars().count();
    if n < MIN_PASSWORD {
        return Err(format!(
            "the password has {n} characters; use at least {MIN_PASSWORD} (a few words make a good one)"
        ));
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the system's random source");
    let salt = SaltString::encode_b64(&salt).map_err(|e| format!("cannot encode a salt: {e}"))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Whether `password` matches `hash` (as [`hash_password`] made it).
pub fn password_matches(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// [`password_matches`] off the async workers (an Argon2 hash takes tens of milliseconds).
pub async fn password_matches_async(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || password_matches(&password, &hash)).await.unwrap_or(false)
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_password_is_hashed_salted_and_checked() {
        let err = super::hash_password("short").unwrap_err();
        assert!(err.contains("5 characters") && err.contains("at least 12"), "{err}");
        let a = super::hash_password("correct horse battery").unwrap();
        let b = super::hash_password("correct horse battery").unwrap();
        assert!(a.starts_with("$argon2id$") && a != b, "salted: {a} {b}");
        assert!(super::password_matches("correct horse battery", &a));
        assert!(!super::password_matches("correct horse battery!", &a));
        assert!(!super::password_matches("correct horse battery", "not a hash"));
    }
}
