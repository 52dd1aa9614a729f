//! The API against its own OpenAPI document, fuzzed by schemathesis (installed and pinned
//! by `scripts/test.sh`, which sets `SCHEMATHESIS`), in all its phases (examples, coverage,
//! fuzzing, stateful) against the standalone binary with a token of every scope.
//!
//! What must hold: no 5xx; every response's status, content type, headers and body as the
//! document declares them; 405 (with `Allow`) for a method a path does not take; and no
//! request the document calls valid refused for its content (400 or 422: the document
//! states every rule a request must keep). Not checked, and known to fail: "schema-violating
//! request accepted", where Starling is more lenient than its document, as Mastodon is
//! (`pinned=null` reads as false; a too-large body is 413, which schemathesis does not
//! count as a refusal).

mod common;

use common::{Api, Server};

/// The schemathesis checks that must pass.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance,response_headers_conformance,unsupported_method,\
                      positive_data_acceptance";

#[cfg_attr(not(test_servers), ignore = "needs the servers scripts/test.sh starts (it sets STARLING_TEST_SERVERS)")]
#[tokio::test]
async fn the_api_keeps_its_openapi_document() {
    let schemathesis = common::server_env("SCHEMATHESIS", "the schemathesis command");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let (_, token) = Api::new(&server.base).register("schemathesis").await;
    let out = tokio::process::Command::new(&schemathesis)
        .args(["run", &format!("{}/openapi.json", server.base)])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", CHECKS, "--max-examples", "10", "--no-color", "--seed", "1"])
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {schemathesis}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "schemathesis found failures:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    // It ran: a summary of the operations it tested.
    assert!(stdout.contains("Tested"), "{stdout}");
}
