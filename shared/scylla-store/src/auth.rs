//! [`AuthStore`] on ScyllaDB, implemented by [`ScyllaGraphStore`] so that a sign-up can
//! reuse its handle claim: `apps`, `credentials`, `emails` and `grants`
//! (`migrations/0002_auth.cql`).
//!
//! - **create_account**: [`GraphStore::create_user`] claims the handle and writes the user;
//!   the login is written by user id, then the lower-cased email is claimed with
//!   `INSERT ... IF NOT EXISTS`. That claim is the commit point: if the email is taken, the
//!   login and the user are deleted and the handle released (a release that fails leaves a
//!   claim without a user, which the next sign-up for the handle takes over after a minute).
//!   A crash before the claim leaves a user without a login, holding its handle.
//! - **grants** are written and removed only by LWTs (`IF NOT EXISTS`, `DELETE ... IF
//!   EXISTS`), so a take is decided by Paxos: of concurrent takes, only one delete applies.
//!   Plain writes are not mixed in, whose timestamps could order them wrongly against the
//!   LWTs.

use async_trait::async_trait;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use starling_ids::UserId;
use starling_storage::{
    AccountCreated, AppRecord, AuthStore, CredentialRecord, GrantKind, GrantRecord, GraphStore, SecretHash, StoreError,
    StoreResult, UserRecord,
};

use crate::model::{from_cql, to_cql};
use crate::{ScyllaError, ScyllaGraphStore, backend, prepare_idempotent, prepare_once, prepare_serial_read};

const KIND_TOKEN: i8 = 1;
const KIND_CODE: i8 = 2;

pub(crate) struct Statements {
    insert_app: PreparedStatement,
    get_app: PreparedStatement,
    put_credentials: PreparedStatement,
    get_credentials: PreparedStatement,
    delete_credentials: PreparedStatement,
    claim_email: PreparedStatement,
    read_email: PreparedStatement,
    insert_grant: PreparedStatement,
    get_grant: PreparedStatement,
    get_grant_serial: PreparedStatement,
    take_grant: PreparedStatement,
}

const APP_COLUMNS: &str = "id, secret_hash, name, website, redirect_uris, scopes, created_ms";
const GRANT_COLUMNS: &str = "kind, client_id, user_id, scopes, redirect_uri, created_ms, expires_ms";

impl Statements {
    pub(crate) async fn prepare(s: &Session) -> Result<Statements, ScyllaError> {
        Ok(Statements {
            insert_app: prepare_idempotent(
                s,
                &format!("INSERT INTO apps (client_id, {APP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
            )
            .await?,
            get_app: prepare_idempotent(s, &format!("SELECT {APP_COLUMNS} FROM apps WHERE client_id = ?")).await?,
            put_credentials: prepare_idempotent(
                s,
                "INSERT INTO credentials (user_id, email, password_hash) VALUES (?, ?, ?)",
            )
            .await?,
            get_credentials: prepare_idempotent(s, "SELECT email, password_hash FROM credentials WHERE user_id = ?")
                .await?,
            delete_credentials: prepare_idempotent(s, "DELETE FROM credentials WHERE user_id = ?").await?,
            claim_email: prepare_once(s, "INSERT INTO emails (email_key, user_id) VALUES (?, ?) IF NOT EXISTS").await?,
            read_email: prepare_idempotent(s, "SELECT user_id FROM emails WHERE email_key = ?").await?,
            insert_grant: prepare_once(
                s,
                &format!("INSERT INTO grants (hash, {GRANT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"),
            )
            .await?,
            get_grant: prepare_idempotent(s, &format!("SELECT {GRANT_COLUMNS} FROM grants WHERE hash = ?")).await?,
            get_grant_serial: prepare_serial_read(s, &format!("SELECT {GRANT_COLUMNS} FROM grants WHERE hash = ?"))
                .await?,
            take_grant: prepare_once(s, "DELETE FROM grants WHERE hash = ? IF EXISTS").await?,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Rows (pure)
// ---------------------------------------------------------------------------------------

/// The columns of an app row after the client id ([`APP_COLUMNS`]).
type AppColumns =
    (Option<i64>, Option<Vec<u8>>, Option<String>, Option<String>, Option<Vec<String>>, Option<String>, Option<i64>);

/// The columns of a grant row after the hash ([`GRANT_COLUMNS`]).
type GrantColumns = (Option<i8>, Option<String>, Option<i64>, Option<String>, Option<String>, Option<i64>, Option<i64>);

fn hash_from_blob(blob: &[u8], what: &str) -> StoreResult<SecretHash> {
    blob.try_into().map_err(|_| StoreError::Corrupt(format!("{what}: hash of {} bytes", blob.len())))
}

fn app_from_row(client_id: &str, row: AppColumns) -> StoreResult<AppRecord> {
    let (id, secret_hash, name, website, redirect_uris, scopes, created_ms) = row;
    let corrupt = |column: &str| StoreError::Corrupt(format!("app {client_id}: no {column}"));
    Ok(AppRecord {
        id: from_cql(id.ok_or_else(|| corrupt("id"))?, "app id")?,
        client_id: client_id.to_owned(),
        secret_hash: hash_from_blob(&secret_hash.ok_or_else(|| corrupt("secret_hash"))?, "app secret")?,
        name: name.unwrap_or_default(),
        website,
        // CQL stores an empty list as null.
        redirect_uris: redirect_uris.unwrap_or_default(),
        scopes: scopes.unwrap_or_default(),
        // Milliseconds are stored bit for bit, like record keys.
        created_ms: created_ms.unwrap_or(0) as u64,
    })
}

fn grant_to_row(grant: &GrantRecord) -> StoreResult<GrantColumns> {
    let kind = match grant.kind {
        GrantKind::Token => KIND_TOKEN,
        GrantKind::Code => KIND_CODE,
    };
    Ok((
        Some(kind),
        Some(grant.client_id.clone()),
        grant.user.map(|u| to_cql(u.get())).transpose()?,
        Some(grant.scopes.clone()),
        grant.redirect_uri.clone(),
        Some(grant.created_ms as i64),
        grant.expires_ms.map(|ms| ms as i64),
    ))
}

fn grant_from_row(hash: SecretHash, row: GrantColumns) -> StoreResult<GrantRecord> {
    let (kind, client_id, user, scopes, redirect_uri, created_ms, expires_ms) = row;
    let kind = match kind {
        Some(KIND_TOKEN) => GrantKind::Token,
        Some(KIND_CODE) => GrantKind::Code,
        other => return Err(StoreError::Corrupt(format!("grant: unknown kind {other:?}"))),
    };
    Ok(GrantRecord {
        hash,
        kind,
        client_id: client_id.unwrap_or_default(),
        user: user.map(|u| from_cql(u, "grant user")).transpose()?.map(UserId),
        scopes: scopes.unwrap_or_default(),
        redirect_uri,
        created_ms: created_ms.unwrap_or(0) as u64,
        expires_ms: expires_ms.map(|ms| ms as u64),
    })
}

// ---------------------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------------------

impl ScyllaGraphStore {
    async fn load_credentials(&self, user: i64) -> StoreResult<Option<CredentialRecord>> {
        let row: Option<(Option<String>, Option<String>)> = self.first_row(&self.auth.get_credentials, (user,)).await?;
        row.map(|(email, password_hash)| {
            Ok(CredentialRecord {
                user: UserId(from_cql(user, "credentials user")?),
                email: email.unwrap_or_default(),
                password_hash: password_hash.unwrap_or_default(),
            })
        })
        .transpose()
    }

    async fn read_grant(&self, hash: &SecretHash, serial: bool) -> StoreResult<Option<GrantRecord>> {
        let statement = if serial { &self.auth.get_grant_serial } else { &self.auth.get_grant };
        let row: Option<GrantColumns> = self.first_row(statement, (&hash[..],)).await?;
        row.map(|row| grant_from_row(*hash, row)).transpose()
    }

    /// Undoes a sign-up that lost its email: the reverse of the order it was written in,
    /// so the handle, released last, never points at a user that is still there.
    async fn undo_sign_up(&self, id: i64, handle_key: &str) -> StoreResult<()> {
        self.session.execute_unpaged(&self.auth.delete_credentials, (id,)).await.map_err(backend)?;
        self.session.execute_unpaged(&self.s.delete_user, (id,)).await.map_err(backend)?;
        self.conditional(&self.s.release_handle, (handle_key, id)).await?;
        Ok(())
    }
}

#[async_trait]
impl AuthStore for ScyllaGraphStore {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn create_app(&self, app: &AppRecord) -> StoreResult<()> {
        let values = (
            app.client_id.as_str(),
            to_cql(app.id)?,
            &app.secret_hash[..],
            app.name.as_str(),
            app.website.as_deref(),
            &app.redirect_uris,
            app.scopes.as_str(),
            app.created_ms as i64,
        );
        self.session.execute_unpaged(&self.auth.insert_app, values).await.map_err(backend)?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn app(&self, client_id: &str) -> StoreResult<Option<AppRecord>> {
        // CQL refuses an empty partition key, even in a read.
        if client_id.is_empty() {
            return Ok(None);
        }
        let row: Option<AppColumns> = self.first_row(&self.auth.get_app, (client_id,)).await?;
        row.map(|row| app_from_row(client_id, row)).transpose()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user = user.id.get()))]
    async fn create_account(&self, user: &UserRecord, login: &CredentialRecord) -> StoreResult<AccountCreated> {
        if login.user != user.id {
            return Err(StoreError::Backend(format!("login of user {} given for user {}", login.user, user.id)));
        }
        let email_key = login.email.to_lowercase();
        if email_key.is_empty() {
            // Refused before anything is written: CQL would refuse the claim only after the user.
            return Err(StoreError::Backend("an account needs an email".into()));
        }
        let id = to_cql(user.id.get())?;
        if !self.create_user(user).await? {
            return Ok(AccountCreated::HandleTaken);
        }
        // Written before the claim, so a claimed email always has its login.
        let values = (id, login.email.as_str(), login.password_hash.as_str());
        self.session.execute_unpaged(&self.auth.put_credentials, values).await.map_err(backend)?;
        if !self.conditional(&self.auth.claim_email, (email_key.as_str(), id)).await? {
            self.undo_sign_up(id, &user.handle.to_lowercase()).await?;
            return Ok(AccountCreated::EmailTaken);
        }
        Ok(AccountCreated::Created)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user = user.get()))]
    async fn credentials(&self, user: UserId) -> StoreResult<Option<CredentialRecord>> {
        match i64::try_from(user.get()) {
            Ok(user) => self.load_credentials(user).await,
            Err(_) => Ok(None),
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn credentials_by_email(&self, email: &str) -> StoreResult<Option<CredentialRecord>> {
        let key = email.to_lowercase();
        if key.is_empty() {
            return Ok(None);
        }
        let row: Option<(Option<i64>,)> = self.first_row(&self.auth.read_email, (key.as_str(),)).await?;
        let Some((Some(user),)) = row else { return Ok(None) };
        self.load_credentials(user).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(kind = ?grant.kind))]
    async fn put_grant(&self, grant: &GrantRecord) -> StoreResult<()> {
        let (kind, client_id, user, scopes, redirect_uri, created_ms, expires_ms) = grant_to_row(grant)?;
        let values = (&grant.hash[..], kind, client_id, user, scopes, redirect_uri, created_ms, expires_ms);
        if self.conditional(&self.auth.insert_grant, values).await? {
            return Ok(());
        }
        // Our own row means an earlier attempt of this put landed (the service retried).
        if self.read_grant(&grant.hash, true).await?.as_ref() == Some(grant) {
            return Ok(());
        }
        Err(StoreError::Backend("another grant has this hash".into()))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn grant(&self, hash: &SecretHash) -> StoreResult<Option<GrantRecord>> {
        self.read_grant(hash, false).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn take_grant(&self, hash: &SecretHash) -> StoreResult<Option<GrantRecord>> {
        let Some(grant) = self.read_grant(hash, true).await? else { return Ok(None) };
        // Hashes are never reused, so the row deleted is the one just read.
        if self.conditional(&self.auth.take_grant, (&hash[..],)).await? { Ok(Some(grant)) } else { Ok(None) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn grants_round_trip_through_rows() {
        let token = GrantRecord { kind: GrantKind::Token, user: None, redirect_uri: None, expires_ms: None, ..code() };
        for grant in [code(), token] {
            assert_eq!(grant_from_row(grant.hash, grant_to_row(&grant).unwrap()).unwrap(), grant);
        }
        let mut row = grant_to_row(&code()).unwrap();
        row.0 = Some(3);
        assert!(matches!(grant_from_row([9; 32], row), Err(StoreError::Corrupt(_))));
        assert!(grant_to_row(&GrantRecord { user: Some(UserId(u64::MAX)), ..code() }).is_err(), "id beyond bigint");
    }

    #[test]
    fn apps_come_back_from_rows() {
        let row = (Some(3), Some(vec![7; 32]), Some("App".to_owned()), None, None, Some(String::new()), Some(1));
        let app = app_from_row("client-1", row.clone()).unwrap();
        assert_eq!((app.id, app.secret_hash, app.redirect_uris, app.created_ms), (3, [7; 32], Vec::new(), 1));
        let (_, secret, name, website, uris, scopes, created) = row;
        let no_id = (None, secret, name.clone(), website.clone(), uris.clone(), scopes.clone(), created);
        assert!(matches!(app_from_row("client-1", no_id), Err(StoreError::Corrupt(_))));
        let short = (Some(3), Some(vec![7; 31]), name, website, uris, scopes, created);
        assert!(matches!(app_from_row("client-1", short), Err(StoreError::Corrupt(_))));
    }
}
