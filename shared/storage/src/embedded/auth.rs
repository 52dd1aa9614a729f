//! [`AuthStore`] for the embedded graph store: sign-ups (with or without a login), apps and
//! grants. Both sign-up paths live here so they write the same user records under the same
//! lock (`handle_lock`), which also makes email uniqueness a plain check-then-write.

use async_trait::async_trait;
use starling_ids::UserId;

use super::{Decoder, EmbeddedGraphStore, Encoder, check_key_len, decode_u64};
use crate::{
    AccountCreated, AppRecord, AuthStore, CredentialRecord, GrantKind, GrantRecord, SecretHash, StoreError,
    StoreResult, UserRecord,
};

impl EmbeddedGraphStore {
    pub(super) fn create_user_sync(&self, user: &UserRecord) -> StoreResult<bool> {
        let handle_key = user.handle.to_lowercase();
        check_key_len(handle_key.len())?;
        let _guard = self.handle_lock.lock();
        if self.user_taken(user, &handle_key)? {
            return Ok(false);
        }
        let mut batch = self.shared.batch();
        self.stage_user(&mut batch, user, handle_key);
        batch.commit()?;
        Ok(true)
    }

    fn create_account_sync(&self, user: &UserRecord, login: &CredentialRecord) -> StoreResult<AccountCreated> {
        if login.user != user.id {
            return Err(StoreError::Backend(format!("login of user {} given for user {}", login.user, user.id)));
        }
        let handle_key = user.handle.to_lowercase();
        let email_key = login.email.to_lowercase();
        if email_key.is_empty() {
            // As on ScyllaDB, which cannot key a row by an empty string.
            return Err(StoreError::Backend("an account needs an email".into()));
        }
        check_key_len(handle_key.len())?;
        check_key_len(email_key.len())?;
        let _guard = self.handle_lock.lock();
        if self.user_taken(user, &handle_key)? {
            return Ok(AccountCreated::HandleTaken);
        }
        if self.emails.contains_key(&email_key)? {
            return Ok(AccountCreated::EmailTaken);
        }
        let mut batch = self.shared.batch();
        self.stage_user(&mut batch, user, handle_key);
        batch.insert(&self.credentials, user.id.to_be_bytes(), encode_credentials(login));
        batch.insert(&self.emails, email_key, user.id.to_be_bytes());
        batch.commit()?;
        Ok(AccountCreated::Created)
    }

    /// Under `handle_lock`. An existing id counts as taken too: overwriting it would orphan
    /// its old handle.
    fn user_taken(&self, user: &UserRecord, handle_key: &str) -> StoreResult<bool> {
        Ok(self.handles.contains_key(handle_key)? || self.users.contains_key(user.id.to_be_bytes())?)
    }

    /// The user and its handle entry: what every sign-up writes.
    fn stage_user(&self, batch: &mut fjall::OwnedWriteBatch, user: &UserRecord, handle_key: String) {
        let mut value = Encoder::new();
        value.bytes(user.handle.as_bytes());
        batch.insert(&self.users, user.id.to_be_bytes(), value.finish());
        batch.insert(&self.handles, handle_key, user.id.to_be_bytes());
    }

    fn load_credentials(&self, user: UserId) -> StoreResult<Option<CredentialRecord>> {
        self.credentials.get(user.to_be_bytes())?.map(|v| decode_credentials(user, &v)).transpose()
    }

    fn take_grant_sync(&self, hash: &SecretHash) -> StoreResult<Option<GrantRecord>> {
        let _guard = self.grant_locks.one(grant_stripe(hash));
        let Some(value) = self.grants.get(hash)? else {
            return Ok(None);
        };
        let grant = decode_grant(*hash, &value)?;
        let mut batch = self.shared.batch();
        batch.remove(&self.grants, *hash);
        batch.commit()?;
        Ok(Some(grant))
    }
}

/// Hashes are uniformly random, so any 8 of their bytes pick a stripe.
fn grant_stripe(hash: &SecretHash) -> u64 {
    u64::from_be_bytes([hash[0], hash[1], hash[2], hash[3], hash[4], hash[5], hash[6], hash[7]])
}

#[async_trait]
impl AuthStore for EmbeddedGraphStore {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn create_app(&self, app: &AppRecord) -> StoreResult<()> {
        check_key_len(app.client_id.len())?;
        let mut batch = self.shared.batch();
        batch.insert(&self.apps, app.client_id.as_str(), encode_app(app));
        batch.commit()?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn app(&self, client_id: &str) -> StoreResult<Option<AppRecord>> {
        if check_key_len(client_id.len()).is_err() {
            return Ok(None);
        }
        self.apps.get(client_id)?.map(|v| decode_app(client_id, &v)).transpose()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user = user.id.get()))]
    async fn create_account(&self, user: &UserRecord, login: &CredentialRecord) -> StoreResult<AccountCreated> {
        self.create_account_sync(user, login)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user = user.get()))]
    async fn credentials(&self, user: UserId) -> StoreResult<Option<CredentialRecord>> {
        self.load_credentials(user)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn credentials_by_email(&self, email: &str) -> StoreResult<Option<CredentialRecord>> {
        let email_key = email.to_lowercase();
        if check_key_len(email_key.len()).is_err() {
            return Ok(None);
        }
        match self.emails.get(email_key)? {
            Some(id) => self.load_credentials(UserId(decode_u64(&id, "email entry")?)),
            None => Ok(None),
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(kind = ?grant.kind))]
    async fn put_grant(&self, grant: &GrantRecord) -> StoreResult<()> {
        let mut batch = self.shared.batch();
        batch.insert(&self.grants, grant.hash, encode_grant(grant));
        batch.commit()?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn grant(&self, hash: &SecretHash) -> StoreResult<Option<GrantRecord>> {
        self.grants.get(hash)?.map(|v| decode_grant(*hash, &v)).transpose()
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn take_grant(&self, hash: &SecretHash) -> StoreResult<Option<GrantRecord>> {
        self.take_grant_sync(hash)
    }
}

// ---------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------

fn put_opt_str(e: &mut Encoder, v: Option<&str>) {
    match v {
        Some(s) => {
            e.u8(1);
            e.bytes(s.as_bytes());
        }
        None => e.u8(0),
    }
}

fn put_opt_u64(e: &mut Encoder, v: Option<u64>) {
    match v {
        Some(n) => {
            e.u8(1);
            e.u64(n);
        }
        None => e.u8(0),
    }
}

/// Reads the presence tag of an optional value.
fn present(d: &mut Decoder<'_>) -> StoreResult<bool> {
    match d.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(StoreError::Corrupt(format!("{}: bad option tag {other}", d.what))),
    }
}

fn opt_string(d: &mut Decoder<'_>) -> StoreResult<Option<String>> {
    if present(d)? { d.string().map(Some) } else { Ok(None) }
}

fn opt_u64(d: &mut Decoder<'_>) -> StoreResult<Option<u64>> {
    if present(d)? { d.u64().map(Some) } else { Ok(None) }
}

fn secret_hash(d: &mut Decoder<'_>) -> StoreResult<SecretHash> {
    let what = d.what;
    let bytes = d.bytes()?;
    bytes.try_into().map_err(|_| StoreError::Corrupt(format!("{what}: hash of {} bytes", bytes.len())))
}

fn encode_app(app: &AppRecord) -> Vec<u8> {
    let mut e = Encoder::new();
    e.u64(app.id);
    e.bytes(&app.secret_hash);
    e.bytes(app.name.as_bytes());
    put_opt_str(&mut e, app.website.as_deref());
    e.0.extend_from_slice(&(app.redirect_uris.len() as u32).to_be_bytes());
    for uri in &app.redirect_uris {
        e.bytes(uri.as_bytes());
    }
    e.bytes(app.scopes.as_bytes());
    e.u64(app.created_ms);
    e.finish()
}

fn decode_app(client_id: &str, value: &[u8]) -> StoreResult<AppRecord> {
    let mut d = Decoder::new(value, "app")?;
    let id = d.u64()?;
    let secret_hash = secret_hash(&mut d)?;
    let name = d.string()?;
    let website = opt_string(&mut d)?;
    let count = u32::from_be_bytes(d.take(4)?.try_into().unwrap_or_default());
    let mut redirect_uris = Vec::with_capacity((count as usize).min(64));
    for _ in 0..count {
        redirect_uris.push(d.string()?);
    }
    let scopes = d.string()?;
    let created_ms = d.u64()?;
    d.finish()?;
    Ok(AppRecord { id, client_id: client_id.to_owned(), secret_hash, name, website, redirect_uris, scopes, created_ms })
}

fn encode_credentials(login: &CredentialRecord) -> Vec<u8> {
    let mut e = Encoder::new();
    e.bytes(login.email.as_bytes());
    e.bytes(login.password_hash.as_bytes());
    e.finish()
}

fn decode_credentials(user: UserId, value: &[u8]) -> StoreResult<CredentialRecord> {
    let mut d = Decoder::new(value, "credentials")?;
    let email = d.string()?;
    let password_hash = d.string()?;
    d.finish()?;
    Ok(CredentialRecord { user, email, password_hash })
}

fn encode_grant(grant: &GrantRecord) -> Vec<u8> {
    let mut e = Encoder::new();
    e.u8(match grant.kind {
        GrantKind::Token => 1,
        GrantKind::Code => 2,
    });
    e.bytes(grant.client_id.as_bytes());
    put_opt_u64(&mut e, grant.user.map(UserId::get));
    e.bytes(grant.scopes.as_bytes());
    put_opt_str(&mut e, grant.redirect_uri.as_deref());
    e.u64(grant.created_ms);
    put_opt_u64(&mut e, grant.expires_ms);
    e.finish()
}

fn decode_grant(hash: SecretHash, value: &[u8]) -> StoreResult<GrantRecord> {
    let mut d = Decoder::new(value, "grant")?;
    let kind = match d.u8()? {
        1 => GrantKind::Token,
        2 => GrantKind::Code,
        other => return Err(StoreError::Corrupt(format!("grant: unknown kind {other}"))),
    };
    let client_id = d.string()?;
    let user = opt_u64(&mut d)?.map(UserId);
    let scopes = d.string()?;
    let redirect_uri = opt_string(&mut d)?;
    let created_ms = d.u64()?;
    let expires_ms = opt_u64(&mut d)?;
    d.finish()?;
    Ok(GrantRecord { hash, kind, client_id, user, scopes, redirect_uri, created_ms, expires_ms })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::GraphStore;
    use crate::conformance;
    use crate::embedded::{Durability, EmbeddedStore};

    fn open(dir: &Path) -> EmbeddedStore {
        EmbeddedStore::open(dir, Durability::Buffer).expect("open embedded store")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_take_grant() {
        let dir = tempfile::tempdir().unwrap();
        conformance::concurrent_take_grant(open(dir.path()).graph()).await;
    }

    fn app() -> AppRecord {
        AppRecord {
            id: 3,
            client_id: "client-1".to_owned(),
            secret_hash: [7; 32],
            name: "Élan".to_owned(),
            website: Some("https://example.com".to_owned()),
            redirect_uris: vec!["https://example.com/cb".to_owned(), "urn:ietf:wg:oauth:2.0:oob".to_owned()],
            scopes: "read write".to_owned(),
            created_ms: 1_700_000_000_000,
        }
    }

    fn code() -> GrantRecord {
        GrantRecord {
            hash: [9; 32],
            kind: GrantKind::Code,
            client_id: "client-1".to_owned(),
            user: Some(UserId(7)),
            scopes: "read".to_owned(),
            redirect_uri: Some("https://example.com/cb".to_owned()),
            created_ms: 5,
            expires_ms: Some(u64::MAX),
        }
    }

    #[tokio::test]
    async fn auth_data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let user = UserRecord { id: UserId(7), handle: "Alice".to_owned() };
        let login =
            CredentialRecord { user: UserId(7), email: "Alice@Example.com".to_owned(), password_hash: "$x".into() };
        let token = GrantRecord { hash: [1; 32], kind: GrantKind::Token, user: None, redirect_uri: None, ..code() };
        {
            let store = open(dir.path());
            let graph = store.graph();
            graph.create_app(&app()).await.unwrap();
            assert_eq!(graph.create_account(&user, &login).await.unwrap(), AccountCreated::Created);
            graph.put_grant(&code()).await.unwrap();
            graph.put_grant(&token).await.unwrap();
            assert!(graph.take_grant(&token.hash).await.unwrap().is_some());
            store.persist().unwrap();
        }
        let store = open(dir.path());
        let graph = store.graph();
        assert_eq!(graph.app("client-1").await.unwrap(), Some(app()));
        assert_eq!(graph.user_by_handle("alice").await.unwrap(), Some(user.clone()));
        assert_eq!(graph.credentials_by_email("alice@example.com").await.unwrap(), Some(login.clone()));
        assert_eq!(graph.credentials(UserId(7)).await.unwrap(), Some(login));
        assert_eq!(graph.grant(&code().hash).await.unwrap(), Some(code()));
        assert_eq!(graph.grant(&token.hash).await.unwrap(), None, "a taken grant stays taken");
        let again = CredentialRecord { user: UserId(8), email: "ALICE@example.com".into(), password_hash: "$y".into() };
        let bob = UserRecord { id: UserId(8), handle: "Bob".to_owned() };
        assert_eq!(graph.create_account(&bob, &again).await.unwrap(), AccountCreated::EmailTaken);
    }

    #[test]
    fn values_round_trip_through_the_encoding() {
        assert_eq!(decode_app("client-1", &encode_app(&app())).unwrap(), app());
        let bare = AppRecord { website: None, redirect_uris: Vec::new(), ..app() };
        assert_eq!(decode_app("client-1", &encode_app(&bare)).unwrap(), bare);
        let token = GrantRecord { kind: GrantKind::Token, user: None, redirect_uri: None, expires_ms: None, ..code() };
        for grant in [code(), token] {
            assert_eq!(decode_grant(grant.hash, &encode_grant(&grant)).unwrap(), grant);
        }
        let login = CredentialRecord { user: UserId(1), email: "a@b".into(), password_hash: "$argon2id$v=19$x".into() };
        assert_eq!(decode_credentials(UserId(1), &encode_credentials(&login)).unwrap(), login);

        let mut bad_tag = encode_grant(&code());
        bad_tag[1] = 3;
        assert!(matches!(decode_grant([9; 32], &bad_tag), Err(StoreError::Corrupt(_))));
        let mut truncated = encode_app(&app());
        truncated.pop();
        assert!(matches!(decode_app("client-1", &truncated), Err(StoreError::Corrupt(_))));
    }
}
