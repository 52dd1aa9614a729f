//! [`FormOrJson`]: a request body as the Mastodon API takes it, form-encoded or JSON.
//!
//! Mastodon's endpoints accept both, and clients differ (Mastodon.py posts url-encoded
//! forms, masto.js JSON, and multipart forms for OAuth and sign-up), so the body is parsed
//! by its `Content-Type`: JSON for `application/json`, the text fields of a
//! `multipart/form-data` body, and an url-encoded form otherwise (an OAuth client may send
//! no type at all). Files in a multipart body are refused: nothing takes uploads yet.

use std::future::Future;
use std::pin::Pin;

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use serde::de::DeserializeOwned;

use crate::{ApiError, ErrorCode, JsonObject, MAX_BODY_BYTES};

#[derive(Debug)]
pub struct FormOrJson<T>(pub T);

impl<T> std::ops::Deref for FormOrJson<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for FormOrJson<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let content_type = req
            .headers()
            .get(actix_web::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let lower = content_type.trim_start().to_ascii_lowercase();
        let json = lower.starts_with("application/json");
        let multipart = lower.starts_with("multipart/form-data");
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            let bytes = body.await.map_err(|e| {
                if e.as_response_error().status_code() == actix_web::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(ErrorCode::PayloadTooLarge, format!("request body exceeds {MAX_BODY_BYTES} bytes"))
                } else {
                    ApiError::new(ErrorCode::InvalidJson, format!("unreadable body: {e}"))
                }
            })?;
            if json {
                let value: JsonObject<T> = serde_json::from_slice(&bytes)
                    .map_err(|e| ApiError::from_json_error(actix_web::error::JsonPayloadError::Deserialize(e)))?;
                return Ok(FormOrJson(value.0));
            }
            let invalid = |e: String| ApiError::new(ErrorCode::InvalidParameter, format!("invalid form body: {e}"));
            if multipart {
                // Re-encoded as an url-encoded form: one deserializer for both kinds.
                let fields = multipart_fields(&content_type, &bytes).map_err(|e| invalid(e.to_owned()))?;
                let encoded = serde_urlencoded::to_string(&fields).map_err(|e| invalid(e.to_string()))?;
                return serde_urlencoded::from_str(&encoded).map(FormOrJson).map_err(|e| invalid(e.to_string()));
            }
            serde_urlencoded::from_bytes(&bytes).map(FormOrJson).map_err(|e| invalid(e.to_string()))
        })
    }
}

/// The text fields of a `multipart/form-data` body (RFC 7578), in order.
fn multipart_fields(content_type: &str, body: &[u8]) -> Result<Vec<(String, String)>, &'static str> {
    let boundary = content_type
        .split(';')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim_matches('"'))
        .filter(|b| !b.is_empty())
        .ok_or("multipart body without a boundary")?;
    let delimiter = format!("--{boundary}");
    let text = std::str::from_utf8(body).map_err(|_| "multipart body is not UTF-8 (file uploads are not supported)")?;
    let mut parts = text.split(delimiter.as_str());
    // Before the first delimiter: the preamble, ignored.
    parts.next();
    let mut fields = Vec::new();
    for part in parts {
        if part.starts_with("--") {
            return Ok(fields);
        }
        let part = part.strip_prefix("\r\n").ok_or("malformed multipart delimiter")?;
        let (headers, value) = part.split_once("\r\n\r\n").ok_or("multipart part without headers")?;
        let value = value.strip_suffix("\r\n").ok_or("multipart part not ended by CRLF")?;
        let disposition = headers
            .split("\r\n")
            .filter_map(|h| h.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-disposition"))
            .map(|(_, v)| v)
            .ok_or("multipart part without Content-Disposition")?;
        let mut name = None;
        for param in disposition.split(';').skip(1).filter_map(|p| p.trim().split_once('=')) {
            match param.0.to_ascii_lowercase().as_str() {
                "name" => name = Some(param.1.trim_matches('"').to_owned()),
                "filename" => return Err("file uploads are not supported"),
                _ => {}
            }
        }
        fields.push((name.ok_or("multipart part without a name")?, value.to_owned()));
    }
    Err("multipart body not closed by its final delimiter")
}

#[cfg(test)]
mod tests {
    use super::multipart_fields;

    #[test]
    fn multipart_text_fields_are_read_in_order() {
        let body = "preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nada\r\n\
                    --XyZ\r\ncontent-disposition: form-data; name=\"note\"\r\n\r\ntwo\r\nlines\r\n--XyZ--\r\n";
        let fields = multipart_fields("multipart/form-data; boundary=XyZ", body.as_bytes()).unwrap();
        assert_eq!(fields, vec![("username".into(), "ada".into()), ("note".into(), "two\r\nlines".into())]);
    }

    #[test]
    fn malformed_multipart_and_files_are_refused() {
        let file = "--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.png\"\r\n\r\nx\r\n--b--";
        assert_eq!(
            multipart_fields("multipart/form-data; boundary=b", file.as_bytes()),
            Err("file uploads are not supported")
        );
        assert!(multipart_fields("multipart/form-data", b"--b--").is_err(), "no boundary");
        assert!(multipart_fields("multipart/form-data; boundary=b", b"--b\r\nnoheaders").is_err());
        assert!(
            multipart_fields(
                "multipart/form-data; boundary=b",
                b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv\r\n"
            )
            .is_err(),
            "not closed"
        );
    }
}
