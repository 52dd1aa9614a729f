//! Sets `cfg(test_servers)` when `STARLING_TEST_SERVERS` is set at build time (as
//! `scripts/test.sh` sets it, with the servers it starts): the tests that need a real
//! Redis, broker or other server are compiled as ignored without it, and reported as
//! such, never as passed.

fn main() {
    println!("cargo::rerun-if-env-changed=STARLING_TEST_SERVERS");
    println!("cargo::rustc-check-cfg=cfg(test_servers)");
    if std::env::var("STARLING_TEST_SERVERS").is_ok_and(|v| !v.trim().is_empty()) {
        println!("cargo::rustc-cfg=test_servers");
    }
}
