//! Compiles `proto/` with protox, so building needs no system `protoc`; and sets
//! `cfg(test_servers)` when `STARLING_TEST_SERVERS` is set at build time (as
//! `scripts/test.sh` sets it, with the broker it starts): the tests that need a real
//! broker are compiled as ignored without it, and reported as such, never as passed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo::rerun-if-env-changed=STARLING_TEST_SERVERS");
    println!("cargo::rustc-check-cfg=cfg(test_servers)");
    if std::env::var("STARLING_TEST_SERVERS").is_ok_and(|v| !v.trim().is_empty()) {
        println!("cargo::rustc-cfg=test_servers");
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let file = root.join("starling/events/v1/events.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let descriptors = protox::compile([&file], [&root])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
