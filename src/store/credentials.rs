//! Delegated sign-ins: one record per connection with the refresh token (rotated on every use, flushed to
//! disk before the new access token is used) and the sign-in status `groupwatch state` reports.
//!
//! Every write is flushed before it returns. The writers are async (the daemon's token refresh and calendar
//! poller, `groupwatch login`), so they flush with sled's `flush_async` rather than blocking a runtime thread
//! on the fsync.
//!
//! The token is stored as plain text inside the 0700 state directory (sled has no encryption); it is never
//! logged, and [`SignInStatus`]'s `Debug` never contains it.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{Result, Store, decode, encode};
use crate::graph::delegated::RefreshVault;

/// Whether a connection's delegated sign-in works.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SignInStatus {
    /// A refresh token is stored and was accepted last time.
    Active,
    /// Entra refused the refresh token for good: an operator must run `groupwatch login` again.
    NeedsLogin {
        /// OAuth error, e.g. `invalid_grant`.
        error: String,
        /// The AADSTS text.
        detail: String,
        /// When it was refused.
        at: DateTime<Utc>,
    },
}

/// On disk only: never `Debug`, never logged.
#[derive(Serialize, Deserialize)]
struct Record {
    refresh_token: String,
    scopes: Vec<String>,
    login_at: DateTime<Utc>,
    rotated_at: DateTime<Utc>,
    rotations: u64,
    status: SignInStatus,
}

/// What `groupwatch state` shows about a sign-in (no token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInView {
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Last `groupwatch login`.
    pub login_at: DateTime<Utc>,
    /// Last rotation.
    pub rotated_at: DateTime<Utc>,
    /// Rotations since the login.
    pub rotations: u64,
    /// Active or needing a new login.
    pub status: SignInStatus,
}

impl Store {
    fn credential(&self, conn: &str) -> Result<Option<Record>> {
        self.credentials
            .get(conn)?
            .map(|v| decode(conn.as_bytes(), &v))
            .transpose()
    }

    async fn put_credential(&self, conn: &str, rec: &Record) -> Result<()> {
        self.credentials.insert(conn, encode(rec))?;
        // Durable before anyone uses the token it replaced; sled would otherwise flush on a timer.
        self.db.flush_async().await?;
        // Files sled created since the store was opened (snapshots, blobs) got the process umask: the
        // 0700 directory already shuts others out, and this keeps every file holding the token 0600 too.
        // A failure here must not undo the rotation that is already durable: warn, the directory is 0700.
        if let Err(e) = super::harden::restrict(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "Could not tighten the store's file permissions after a credential write.");
        }
        Ok(())
    }

    /// Stores a fresh login (replacing any earlier one, and clearing a "needs login" status), durably.
    pub async fn save_login(
        &self,
        conn: &str,
        refresh: &SecretString,
        scopes: &[String],
    ) -> Result<()> {
        let now = Utc::now();
        let rec = Record {
            refresh_token: refresh.expose_secret().to_owned(),
            scopes: scopes.to_vec(),
            login_at: now,
            rotated_at: now,
            rotations: 0,
            status: SignInStatus::Active,
        };
        self.put_credential(conn, &rec).await
    }

    /// The usable refresh token of `conn`: none before a login or after Entra refused it.
    pub fn refresh_token(&self, conn: &str) -> Result<Option<SecretString>> {
        Ok(self
            .credential(conn)?
            .filter(|r| r.status == SignInStatus::Active)
            .map(|r| SecretString::from(r.refresh_token)))
    }

    /// Replaces the refresh token after a successful refresh (rotation), durably.
    pub async fn rotate_refresh_token(&self, conn: &str, refresh: &SecretString) -> Result<()> {
        let Some(mut rec) = self.credential(conn)? else {
            return Ok(());
        };
        rec.refresh_token = refresh.expose_secret().to_owned();
        rec.rotated_at = Utc::now();
        rec.rotations += 1;
        rec.status = SignInStatus::Active;
        self.put_credential(conn, &rec).await
    }

    /// Records that the sign-in must be renewed; the refresh token is no longer handed out.
    pub async fn mark_needs_login(&self, conn: &str, error: &str, detail: &str) -> Result<()> {
        let Some(mut rec) = self.credential(conn)? else {
            return Ok(());
        };
        rec.status = SignInStatus::NeedsLogin {
            error: error.to_owned(),
            detail: detail.to_owned(),
            at: Utc::now(),
        };
        self.put_credential(conn, &rec).await
    }

    /// The sign-in of `conn` as `groupwatch state` shows it.
    pub fn sign_in(&self, conn: &str) -> Result<Option<SignInView>> {
        Ok(self.credential(conn)?.map(|r| SignInView {
            scopes: r.scopes,
            login_at: r.login_at,
            rotated_at: r.rotated_at,
            rotations: r.rotations,
            status: r.status,
        }))
    }
}

/// The store as the delegated token provider's vault, for one connection.
#[derive(Debug, Clone)]
pub struct StoreVault {
    /// The store.
    pub store: Store,
    /// Connection name.
    pub connection: String,
}

impl RefreshVault for StoreVault {
    fn load(&self) -> std::result::Result<Option<SecretString>, String> {
        self.store
            .refresh_token(&self.connection)
            .map_err(|e| e.to_string())
    }

    fn save<'a>(
        &'a self,
        refresh_token: &'a SecretString,
    ) -> BoxFuture<'a, std::result::Result<(), String>> {
        Box::pin(async move {
            self.store
                .rotate_refresh_token(&self.connection, refresh_token)
                .await
                .map_err(|e| e.to_string())
        })
    }
}
