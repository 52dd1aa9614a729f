//! The [`AuthStore`] checks of the conformance suite (see the parent module).

use std::sync::Arc;

use super::Ids;
use crate::{
    AccountCreated, AppRecord, AuthStore, CredentialRecord, GrantKind, GrantRecord, GraphStore, SecretHash, UserRecord,
};

/// Runs every auth-store check on `store` but [`concurrent_take_grant`].
pub async fn run_auth_store<S: AuthStore + GraphStore>(store: &S) {
    apps_round_trip(store).await;
    create_account_and_credentials(store).await;
    create_account_refuses_a_taken_handle(store).await;
    create_account_refuses_a_taken_email(store).await;
    grants_round_trip(store).await;
    take_grant_once(store).await;
}

/// A hash no other run uses.
fn secret(ids: &mut Ids) -> SecretHash {
    let mut hash = [0u8; 32];
    for chunk in hash.chunks_mut(8) {
        chunk.copy_from_slice(&ids.next().to_be_bytes());
    }
    hash
}

/// A fresh user and its login, handle and email in mixed case.
fn account(ids: &mut Ids, what: &str) -> (UserRecord, CredentialRecord) {
    let id = ids.user();
    let user = UserRecord { id, handle: format!("Conf_{what}{:x}", id.get()) };
    let login = CredentialRecord {
        user: id,
        email: format!("Conf.{what}{:x}@Example.COM", id.get()),
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1${:x}", id.get()),
    };
    (user, login)
}

fn code(ids: &mut Ids) -> GrantRecord {
    GrantRecord {
        hash: secret(ids),
        kind: GrantKind::Code,
        client_id: format!("conf-app-{:x}", ids.next()),
        user: Some(ids.user()),
        scopes: "read write".to_owned(),
        redirect_uri: Some("https://example.com/callback?x=1".to_owned()),
        created_ms: 1_700_000_000_000,
        expires_ms: Some(1_700_000_060_000),
    }
}

async fn create_account<S: AuthStore>(store: &S, user: &UserRecord, login: &CredentialRecord) {
    let created = store.create_account(user, login).await.expect("create_account");
    assert_eq!(created, AccountCreated::Created, "a fresh handle and email");
}

/// Apps keep every field; client ids are exact; unknown ones are `None`.
pub async fn apps_round_trip<S: AuthStore>(store: &S) {
    let mut ids = Ids::new();
    let full = AppRecord {
        id: ids.next(),
        client_id: format!("conf-app-{:x}", ids.next()),
        secret_hash: secret(&mut ids),
        name: "Conformance ✓ \"app\"".to_owned(),
        website: Some("https://example.com/app".to_owned()),
        redirect_uris: vec!["https://example.com/callback".to_owned(), "urn:ietf:wg:oauth:2.0:oob".to_owned()],
        scopes: "read write follow".to_owned(),
        created_ms: 1_700_000_000_123,
    };
    let bare = AppRecord {
        id: ids.next(),
        client_id: format!("conf-app-{:x}", ids.next()),
        secret_hash: secret(&mut ids),
        website: None,
        redirect_uris: Vec::new(),
        scopes: String::new(),
        ..full.clone()
    };
    store.create_app(&full).await.expect("create_app");
    store.create_app(&bare).await.expect("create_app");
    assert_eq!(store.app(&full.client_id).await.expect("app"), Some(full.clone()), "every field kept");
    assert_eq!(store.app(&bare.client_id).await.expect("app"), Some(bare), "no website, no redirect URIs");
    assert_eq!(store.app(&full.client_id.to_uppercase()).await.expect("app"), None, "client ids are exact");
    assert_eq!(store.app(&format!("conf-app-{:x}", ids.next())).await.expect("app"), None, "unknown app");
    assert_eq!(store.app("").await.expect("app"), None, "empty client id");
}

/// An account is a user (seen by the graph store) and a login, found by user and by
/// email in any case.
pub async fn create_account_and_credentials<S: AuthStore + GraphStore>(store: &S) {
    let mut ids = Ids::new();
    let (user, login) = account(&mut ids, "Acct");
    assert_eq!(store.credentials_by_email(&login.email).await.expect("by email"), None, "before the sign-up");
    create_account(store, &user, &login).await;

    assert_eq!(store.user(user.id).await.expect("user"), Some(user.clone()), "the user is created");
    assert_eq!(store.user_by_handle(&user.handle.to_uppercase()).await.expect("by handle"), Some(user.clone()));
    assert_eq!(store.credentials(user.id).await.expect("credentials"), Some(login.clone()), "stored as given");
    for email in [login.email.clone(), login.email.to_lowercase(), login.email.to_uppercase()] {
        assert_eq!(store.credentials_by_email(&email).await.expect("by email"), Some(login.clone()), "{email}");
    }

    let plain = UserRecord { id: ids.user(), handle: format!("Conf_Plain{:x}", ids.next()) };
    assert!(store.create_user(&plain).await.expect("create_user"));
    assert_eq!(store.credentials(plain.id).await.expect("credentials"), None, "a user without a login");
    assert_eq!(store.credentials(ids.user()).await.expect("credentials"), None, "unknown user");
    let nobody = format!("nobody{:x}@example.com", ids.next());
    assert_eq!(store.credentials_by_email(&nobody).await.expect("by email"), None, "unknown email");
    assert_eq!(store.credentials_by_email("").await.expect("by email"), None, "empty email");

    // A login of another user is the caller's mistake: refused, nothing stored.
    let (other, other_login) = account(&mut ids, "Mismatch");
    let wrong = CredentialRecord { user: ids.user(), ..other_login.clone() };
    assert!(store.create_account(&other, &wrong).await.is_err(), "the login must be the user's");
    assert_eq!(store.user(other.id).await.expect("user"), None);
    assert_eq!(store.credentials_by_email(&other_login.email).await.expect("by email"), None);
    let no_email = CredentialRecord { email: String::new(), ..other_login };
    assert!(store.create_account(&other, &no_email).await.is_err(), "an account needs an email");
    assert_eq!(store.user(other.id).await.expect("user"), None);
}

/// A handle taken in any case, or a taken user id, refuses the account and stores nothing.
pub async fn create_account_refuses_a_taken_handle<S: AuthStore + GraphStore>(store: &S) {
    let mut ids = Ids::new();
    let (user, login) = account(&mut ids, "Owner");
    create_account(store, &user, &login).await;

    let (imposter, imposter_login) = account(&mut ids, "Imposter");
    let imposter = UserRecord { handle: user.handle.to_uppercase(), ..imposter };
    let refused = store.create_account(&imposter, &imposter_login).await.expect("create_account");
    assert_eq!(refused, AccountCreated::HandleTaken, "the handle is taken, ignoring case");
    assert_eq!(store.user(imposter.id).await.expect("user"), None, "no user stored");
    assert_eq!(store.credentials(imposter.id).await.expect("credentials"), None, "no login stored");
    let by_email = store.credentials_by_email(&imposter_login.email).await.expect("by email");
    assert_eq!(by_email, None, "the second email is not claimed");
    assert_eq!(store.user_by_handle(&user.handle).await.expect("by handle"), Some(user.clone()), "owner keeps it");

    let (renamed, renamed_login) = account(&mut ids, "Renamed");
    let same_id = UserRecord { id: user.id, ..renamed };
    let same_id_login = CredentialRecord { user: user.id, ..renamed_login };
    let refused = store.create_account(&same_id, &same_id_login).await.expect("create_account");
    assert_eq!(refused, AccountCreated::HandleTaken, "the user id is taken");
    assert_eq!(store.user_by_handle(&same_id.handle).await.expect("by handle"), None, "no handle stored");
    assert_eq!(store.credentials_by_email(&same_id_login.email).await.expect("by email"), None);
    assert_eq!(store.credentials(user.id).await.expect("credentials"), Some(login), "owner keeps the login");

    let plain = UserRecord { id: ids.user(), handle: format!("Conf_Plain{:x}", ids.next()) };
    assert!(store.create_user(&plain).await.expect("create_user"));
    let (late, late_login) = account(&mut ids, "Late");
    let late = UserRecord { handle: plain.handle.to_lowercase(), ..late };
    let refused = store.create_account(&late, &late_login).await.expect("create_account");
    assert_eq!(refused, AccountCreated::HandleTaken, "taken by a user without a login");

    // The refused email is free for the next sign-up.
    let (fresh, _) = account(&mut ids, "Fresh");
    create_account(store, &fresh, &CredentialRecord { user: fresh.id, ..imposter_login.clone() }).await;
    let by_email = store.credentials_by_email(&imposter_login.email).await.expect("by email");
    assert_eq!(by_email.map(|c| c.user), Some(fresh.id));
}

/// An email taken in any case refuses the account: neither user nor handle is created.
pub async fn create_account_refuses_a_taken_email<S: AuthStore + GraphStore>(store: &S) {
    let mut ids = Ids::new();
    let (user, login) = account(&mut ids, "Mail");
    create_account(store, &user, &login).await;

    let (second, second_login) = account(&mut ids, "Second");
    let dup = CredentialRecord { email: login.email.to_uppercase(), ..second_login };
    let refused = store.create_account(&second, &dup).await.expect("create_account");
    assert_eq!(refused, AccountCreated::EmailTaken, "the email is taken, ignoring case");
    assert_eq!(store.user(second.id).await.expect("user"), None, "no user stored");
    assert_eq!(store.user_by_handle(&second.handle).await.expect("by handle"), None, "no handle stored");
    assert_eq!(store.credentials(second.id).await.expect("credentials"), None, "no login stored");
    let owner = store.credentials_by_email(&login.email.to_lowercase()).await.expect("by email");
    assert_eq!(owner, Some(login), "the owner keeps the email");

    // The refused handle is free for the next sign-up.
    let (fresh, fresh_login) = account(&mut ids, "Retry");
    let retry = UserRecord { id: fresh.id, handle: second.handle.clone() };
    create_account(store, &retry, &fresh_login).await;
    assert_eq!(store.user_by_handle(&second.handle).await.expect("by handle"), Some(retry));
}

/// Grants keep every field, whatever is absent; expired ones are returned (the service
/// checks `expires_ms`).
pub async fn grants_round_trip<S: AuthStore>(store: &S) {
    let mut ids = Ids::new();
    let code = code(&mut ids);
    let app_token = GrantRecord {
        hash: secret(&mut ids),
        kind: GrantKind::Token,
        user: None,
        scopes: String::new(),
        redirect_uri: None,
        expires_ms: None,
        ..code.clone()
    };
    let user_token = GrantRecord { hash: secret(&mut ids), kind: GrantKind::Token, redirect_uri: None, ..code.clone() };
    let expired = GrantRecord { hash: secret(&mut ids), expires_ms: Some(1), ..code.clone() };
    let grants = [code, app_token, user_token, expired];
    for grant in &grants {
        store.put_grant(grant).await.expect("put_grant");
    }
    for grant in &grants {
        assert_eq!(store.grant(&grant.hash).await.expect("grant"), Some(grant.clone()), "{grant:?}");
    }
    assert_eq!(store.grant(&secret(&mut ids)).await.expect("grant"), None, "unknown hash");
    for grant in &grants {
        store.take_grant(&grant.hash).await.expect("take_grant");
    }
}

/// A take returns the grant once and removes it; other grants stay.
pub async fn take_grant_once<S: AuthStore>(store: &S) {
    let mut ids = Ids::new();
    let (first, other) = (code(&mut ids), code(&mut ids));
    store.put_grant(&first).await.expect("put_grant");
    store.put_grant(&other).await.expect("put_grant");

    assert_eq!(store.take_grant(&first.hash).await.expect("take_grant"), Some(first.clone()), "the first take");
    assert_eq!(store.take_grant(&first.hash).await.expect("take_grant"), None, "taken only once");
    assert_eq!(store.grant(&first.hash).await.expect("grant"), None, "gone after the take");
    assert_eq!(store.grant(&other.hash).await.expect("grant"), Some(other.clone()), "other grants stay");
    assert_eq!(store.take_grant(&secret(&mut ids)).await.expect("take_grant"), None, "unknown hash");
    assert_eq!(store.take_grant(&other.hash).await.expect("take_grant"), Some(other));
}

/// Of many tasks taking one grant at once, exactly one gets it.
pub async fn concurrent_take_grant<S: AuthStore + 'static>(store: Arc<S>) {
    // Enough to race; few enough that Paxos contention on one row stays within its timeout.
    const TAKERS: usize = 8;
    let mut ids = Ids::new();
    for round in 0..5 {
        let grant = code(&mut ids);
        store.put_grant(&grant).await.expect("put_grant");
        // Released together, so the takes overlap instead of running in spawn order.
        let start = Arc::new(tokio::sync::Barrier::new(TAKERS));
        let takers: Vec<_> = (0..TAKERS)
            .map(|_| {
                let (store, start, hash) = (Arc::clone(&store), Arc::clone(&start), grant.hash);
                tokio::spawn(async move {
                    start.wait().await;
                    store.take_grant(&hash).await.expect("take_grant")
                })
            })
            .collect();
        let mut winners = 0;
        for taker in takers {
            if let Some(taken) = taker.await.expect("taker task") {
                assert_eq!(taken, grant, "round {round}: the grant as stored");
                winners += 1;
            }
        }
        assert_eq!(winners, 1, "round {round}: exactly one take gets the grant");
        assert_eq!(store.grant(&grant.hash).await.expect("grant"), None, "round {round}: gone");
    }
}
