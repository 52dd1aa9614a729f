//! Accounts' logins and OAuth 2 state (graph-service): registered apps, email and password
//! hash per account, and grants (access tokens and authorization codes).
//!
//! Secrets are never stored: an app's client secret, a token and a code are kept as the
//! SHA-256 of their value ([`SecretHash`]), so a copy of the store yields nothing a client
//! could present. Password hashes are whatever the service hands in (argon2 PHC strings).

use async_trait::async_trait;
use starling_ids::UserId;

use crate::{StoreResult, UserRecord};

/// The SHA-256 of a secret (client secret, access token, authorization code).
pub type SecretHash = [u8; 32];

/// A client registered with `POST /api/v1/apps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppRecord {
    /// The app's id in the API (Mastodon's `Application.id`), from the id generator.
    pub id: u64,
    /// Public, random, unique.
    pub client_id: String,
    pub secret_hash: SecretHash,
    pub name: String,
    pub website: Option<String>,
    pub redirect_uris: Vec<String>,
    /// Space-separated, as registered.
    pub scopes: String,
    pub created_ms: u64,
}

/// How an account logs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialRecord {
    pub user: UserId,
    /// Unique, compared case-insensitively (stored as given, indexed lower-cased).
    pub email: String,
    /// A PHC string (e.g. `$argon2id$...`).
    pub password_hash: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantKind {
    /// A bearer access token.
    Token,
    /// An authorization code, exchanged once for a token.
    Code,
}

/// An access token or an authorization code, stored under the hash of its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantRecord {
    pub hash: SecretHash,
    pub kind: GrantKind,
    pub client_id: String,
    /// `None` for an app's own token (client_credentials): it acts for no account.
    pub user: Option<UserId>,
    /// Space-separated.
    pub scopes: String,
    /// A code remembers the redirect URI it was issued for (it must match on exchange).
    pub redirect_uri: Option<String>,
    pub created_ms: u64,
    /// Unix ms after which the grant is void; `None`: until revoked.
    pub expires_ms: Option<u64>,
}

/// What [`AuthStore::create_account`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountCreated {
    Created,
    /// The handle (ignoring case) or the user id is taken. Nothing stored.
    HandleTaken,
    /// The email (ignoring case) is taken. Nothing stored.
    EmailTaken,
}

#[async_trait]
pub trait AuthStore: Send + Sync {
    async fn create_app(&self, app: &AppRecord) -> StoreResult<()>;
    async fn app(&self, client_id: &str) -> StoreResult<Option<AppRecord>>;

    /// Creates the user and its login together: both or neither.
    async fn create_account(&self, user: &UserRecord, login: &CredentialRecord) -> StoreResult<AccountCreated>;
    async fn credentials(&self, user: UserId) -> StoreResult<Option<CredentialRecord>>;
    async fn credentials_by_email(&self, email: &str) -> StoreResult<Option<CredentialRecord>>;

    /// Stores a grant (a new hash: tokens and codes are random).
    async fn put_grant(&self, grant: &GrantRecord) -> StoreResult<()>;
    async fn grant(&self, hash: &SecretHash) -> StoreResult<Option<GrantRecord>>;
    /// Removes the grant and returns it, atomically: of two concurrent takes of one code,
    /// one gets it and the other `None`. Revocation and code exchange both use it.
    async fn take_grant(&self, hash: &SecretHash) -> StoreResult<Option<GrantRecord>>;
}
