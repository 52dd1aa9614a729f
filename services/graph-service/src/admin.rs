//! `POST /admin/v1/accounts`: the operator creates accounts in bulk, each with an access
//! token of every scope, for replaying traces and for load tests. Such accounts have no
//! email and no password (nobody can sign in as them); their tokens are OAuth tokens like
//! any other, revocable and looked up on every request. People sign up through
//! Mastodon's `POST /api/v1/accounts`, which hashes a password per account: too slow to
//! create thousands of accounts at once.

use std::collections::HashSet;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use starling_api::scopes::Scopes;
use starling_api::{ApiError, ErrorCode, JsonObject};
use starling_ids::UserId;
use starling_storage::UserRecord;

use crate::edges::Handle;
use crate::{GraphService, oauth};

/// Accounts one call may create.
pub const MAX_ACCOUNTS: usize = 1000;
/// The client the tokens are issued to: no app record, so no app can revoke them.
const CLIENT_ID: &str = "starling-admin";

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    // A resource of its own for its larger body limit; other methods answer as elsewhere.
    cfg.service(
        web::resource("/admin/v1/accounts")
            .app_data(starling_api::admin_json())
            .post(create)
            .default_service(web::to(starling_api::not_found)),
    );
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    accounts: Vec<NewAccount>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAccount {
    username: String,
}

#[derive(Serialize)]
struct Created {
    id: UserId,
    username: String,
    access_token: String,
}

async fn create(
    svc: web::Data<GraphService>,
    req: HttpRequest,
    body: web::Json<JsonObject<Create>>,
) -> Result<HttpResponse, ApiError> {
    starling_api::admin::require(&req, &svc.admin_token)?;
    let wanted = body.into_inner().into_inner().accounts;
    if wanted.is_empty() || wanted.len() > MAX_ACCOUNTS {
        return Err(ApiError::validation(format!("accounts must hold 1 to {MAX_ACCOUNTS} accounts")));
    }
    // Everything is checked before anything is created, so a bad batch changes nothing.
    let mut seen = HashSet::new();
    let mut handles = Vec::with_capacity(wanted.len());
    for a in wanted {
        let handle = Handle::parse(&a.username)?.into_inner();
        if !seen.insert(handle.to_ascii_lowercase()) {
            return Err(ApiError::validation(format!("username {handle} is in the batch twice")));
        }
        if svc.store.user_by_handle(&handle).await.map_err(ApiError::unavailable)?.is_some() {
            return Err(ApiError::new(ErrorCode::Conflict, format!("username {handle} is already taken")));
        }
        handles.push(handle);
    }
    let scopes = Scopes::all();
    let mut created = Vec::with_capacity(handles.len());
    for handle in handles {
        let user = UserRecord { id: svc.ids.next_user(), handle };
        if !svc.store.create_user(&user).await.map_err(ApiError::unavailable)? {
            // Someone else took it since the check above.
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("username {} was taken meanwhile; the {} before it were created", user.handle, created.len()),
            ));
        }
        let token = oauth::issue(&svc, CLIENT_ID, Some(user.id), &scopes).await?;
        created.push(Created { id: user.id, username: user.handle, access_token: token.access_token });
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "accounts": created })))
}
