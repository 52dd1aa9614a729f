//! The operator's API under `/admin/v1`: off unless `admin.token` is set, and then only
//! for requests bearing that token. It is not part of the Mastodon API and not routed by
//! the ingress.

use actix_web::HttpRequest;

use crate::{ApiError, ErrorCode};

/// Lets `req` through if it bears `token` (a non-empty configured admin token).
pub fn require(req: &HttpRequest, token: &str) -> Result<(), ApiError> {
    if token.is_empty() {
        return Err(ApiError::new(ErrorCode::NotFound, "the admin API is disabled"));
    }
    let given = req.headers().get("Authorization").and_then(|v| v.to_str().ok());
    let given = given.and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
    if !same(given.as_bytes(), token.as_bytes()) {
        return Err(ApiError::new(ErrorCode::Unauthorized, "admin token required"));
    }
    Ok(())
}

/// Compares in time independent of where the two differ, so the token cannot be guessed
/// byte by byte from response times.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn only_the_configured_token_passes() {
        let with = |v: &str| TestRequest::default().insert_header(("Authorization", v)).to_http_request();
        assert!(require(&with("Bearer s3cret"), "s3cret").is_ok());
        assert_eq!(require(&with("Bearer s3cre"), "s3cret").unwrap_err().code, ErrorCode::Unauthorized);
        assert_eq!(require(&with("s3cret"), "s3cret").unwrap_err().code, ErrorCode::Unauthorized);
        assert_eq!(require(&TestRequest::default().to_http_request(), "s").unwrap_err().code, ErrorCode::Unauthorized);
        assert_eq!(require(&with("Bearer "), "").unwrap_err().code, ErrorCode::NotFound);
    }
}
