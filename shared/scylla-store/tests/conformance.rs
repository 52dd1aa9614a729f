//! The storage conformance suite against a real ScyllaDB node, read from `SCYLLA_URI`.
//!
//! Each test creates its own keyspace (`starling_test_<unique>`) and drops it afterwards, so
//! runs and parallel tests never see each other's data. No CQL server can be installed on
//! the build machines: without `SCYLLA_URI` at build time (see `build.rs`) every test here
//! is reported as ignored, never as passed; run with `--include-ignored` but no node, they
//! fail.

use std::sync::atomic::{AtomicU64, Ordering};

use starling_scylla_store::{ScyllaOptions, ScyllaStore};
use starling_storage::conformance;

/// The node to test against. A test that cannot reach one must not pass.
fn scylla_uri() -> String {
    match std::env::var("SCYLLA_URI") {
        Ok(uri) if !uri.trim().is_empty() => uri,
        _ => panic!("SCYLLA_URI is not set: this test needs a ScyllaDB node (SCYLLA_URI=host:port cargo test)"),
    }
}

fn unique_keyspace() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("starling_test_{}_{}_{}", std::process::id(), nanos % 1_000_000_000_000, N.fetch_add(1, Ordering::Relaxed))
}

async fn open(uri: String) -> ScyllaStore {
    let options = ScyllaOptions { uri, keyspace: unique_keyspace(), ..ScyllaOptions::default() };
    ScyllaStore::connect(&options).await.expect("connect to ScyllaDB and migrate a fresh keyspace")
}

/// One test per conformance check, each on a fresh keyspace, so a failure names its check.
macro_rules! conformance_tests {
    ($($kind:ident :: $name:ident),* $(,)?) => {$(
        #[tokio::test]
        #[cfg_attr(not(scylla_node), ignore = "needs a ScyllaDB node: set SCYLLA_URI=host:port")]
        async fn $name() {
            let store = open(scylla_uri()).await;
            conformance_tests!(@run $kind, $name, store);
            store.drop_keyspace().await.expect("drop the test keyspace");
        }
    )*};
    (@run posts, $name:ident, $store:ident) => { conformance::$name(&*$store.posts()).await };
    (@run graph, $name:ident, $store:ident) => { conformance::$name(&*$store.graph()).await };
    (@run auth, $name:ident, $store:ident) => { conformance::$name(&*$store.graph()).await };
    // Both stores implement it, over the same tables: each is checked (the check draws
    // fresh ids per call, so the two runs do not see each other's notifications).
    (@run notifications, $name:ident, $store:ident) => {
        conformance::$name(&*$store.posts()).await;
        conformance::$name(&*$store.graph()).await;
    };
}

conformance_tests!(
    posts::create_and_get_posts,
    posts::idempotency_key_replay,
    posts::delete_post,
    posts::posts_by_author_windows,
    posts::post_outbox_order_and_ack,
    posts::reblog_and_unreblog,
    posts::deleting_a_status_takes_its_reblogs,
    posts::favourite_and_unfavourite,
    posts::replies_are_counted_and_listed,
    graph::users_and_handles,
    graph::follow_and_unfollow,
    graph::block_and_unblock,
    graph::followers_and_following_pages,
    graph::author_class,
    graph::graph_outbox_order_and_ack,
    graph::mute_and_unmute,
    auth::apps_round_trip,
    auth::create_account_and_credentials,
    auth::create_account_refuses_a_taken_handle,
    auth::create_account_refuses_a_taken_email,
    auth::grants_round_trip,
    auth::take_grant_once,
    notifications::notifications_add_remove_and_list,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(scylla_node), ignore = "needs a ScyllaDB node: set SCYLLA_URI=host:port")]
async fn concurrent_take_grant() {
    let store = open(scylla_uri()).await;
    conformance::concurrent_take_grant(store.graph()).await;
    store.drop_keyspace().await.expect("drop the test keyspace");
}

/// Concurrent adds of one key, half through each store (they share the tables), store one
/// notification; concurrent removes of it remove it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(scylla_node), ignore = "needs a ScyllaDB node: set SCYLLA_URI=host:port")]
async fn concurrent_notification_adds_store_one() {
    use std::sync::Arc;

    use starling_ids::{PostId, UserId};
    use starling_storage::{NotificationKind, NotificationRecord, NotificationStore, Window};

    // Enough to race; few enough that Paxos contention on one row stays within its timeout.
    const RACERS: usize = 8;
    let store = open(scylla_uri()).await;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let mut next = (1u64 << 62) | ((nanos as u64 & ((1 << 40) - 1)) << 12);
    let mut fresh = || {
        next += 1;
        next
    };
    let (recipient, account) = (UserId(fresh()), UserId(fresh()));
    let stores: [Arc<dyn NotificationStore>; 2] = [store.posts(), store.graph()];
    for round in 0..5 {
        let status = Some(PostId(fresh()));
        let kind = NotificationKind::Favourite;
        let start = Arc::new(tokio::sync::Barrier::new(RACERS));
        let adds: Vec<_> = (0..RACERS)
            .map(|i| {
                let (s, start) = (Arc::clone(&stores[i % 2]), Arc::clone(&start));
                let n = NotificationRecord { id: fresh(), recipient, kind, account, status };
                tokio::spawn(async move {
                    start.wait().await;
                    (n, s.add_notification(&n).await.expect("add"))
                })
            })
            .collect();
        let mut stored = Vec::new();
        for add in adds {
            let (n, added) = add.await.expect("adder task");
            if added {
                stored.push(n);
            }
        }
        assert_eq!(stored.len(), 1, "round {round}: exactly one add of the key stores");
        let listed = store.posts().notifications(recipient, Window::newest(100)).await.expect("list");
        assert_eq!(listed, stored, "round {round}: the winner's notification, once");

        let start = Arc::new(tokio::sync::Barrier::new(RACERS));
        let removes: Vec<_> = (0..RACERS)
            .map(|i| {
                let (s, start) = (Arc::clone(&stores[i % 2]), Arc::clone(&start));
                tokio::spawn(async move {
                    start.wait().await;
                    s.remove_notification(recipient, kind, account, status).await.expect("remove")
                })
            })
            .collect();
        let mut removed = 0;
        for remove in removes {
            removed += usize::from(remove.await.expect("remover task"));
        }
        assert_eq!(removed, 1, "round {round}: exactly one remove of the key removes");
        let listed = store.graph().notifications(recipient, Window::newest(100)).await.expect("list");
        assert!(listed.is_empty(), "round {round}: removed");
    }
    store.drop_keyspace().await.expect("drop the test keyspace");
}

#[tokio::test]
#[cfg_attr(not(scylla_node), ignore = "needs a ScyllaDB node: set SCYLLA_URI=host:port")]
async fn whole_suite_on_one_store() {
    let store = open(scylla_uri()).await;
    conformance::run_post_store(&*store.posts()).await;
    conformance::run_graph_store(&*store.graph()).await;
    conformance::run_auth_store(&*store.graph()).await;
    store.drop_keyspace().await.expect("drop the test keyspace");
}

#[tokio::test]
#[cfg_attr(not(scylla_node), ignore = "needs a ScyllaDB node: set SCYLLA_URI=host:port")]
async fn migrations_are_a_no_op_the_second_time() {
    let options = ScyllaOptions { uri: scylla_uri(), keyspace: unique_keyspace(), ..ScyllaOptions::default() };
    let first = ScyllaStore::connect(&options).await.expect("first connect migrates");
    // A second process starting on the same keyspace finds the schema current.
    let second = ScyllaStore::connect(&options).await.expect("second connect");
    drop(second);
    first.drop_keyspace().await.expect("drop the test keyspace");
}

#[tokio::test]
#[cfg_attr(not(scylla_node), ignore = "needs a ScyllaDB node: set SCYLLA_URI=host:port")]
async fn a_second_store_sees_the_first_ones_pending_events() {
    // Replicas share an outbox stream, so one relays what a crashed other left behind.
    let options =
        ScyllaOptions { uri: scylla_uri(), keyspace: unique_keyspace(), worker_id: 1, ..ScyllaOptions::default() };
    let first = ScyllaStore::connect(&options).await.expect("connect");
    let second = ScyllaStore::connect(&ScyllaOptions { worker_id: 2, ..options }).await.expect("connect");
    conformance::follow_and_unfollow(&*first.graph()).await;
    let record = starling_events::Record {
        topic: starling_events::Topic::Graph,
        key: 1,
        payload: bytes::Bytes::from_static(b"left behind"),
        headers: Vec::new(),
    };
    use starling_storage::{EdgeChange, GraphStore, Outbox};
    let EdgeChange::Changed { outbox } = first
        .graph()
        .follow(starling_ids::UserId(1 << 60), starling_ids::UserId((1 << 60) + 1), vec![record.clone()])
        .await
        .expect("follow")
    else {
        panic!("a new follow changes the graph");
    };
    let pending = second.graph().pending(1000).await.expect("pending");
    assert!(pending.iter().any(|e| outbox.contains(&e.seq) && e.record == record));
    second.graph().ack(&outbox).await.expect("ack");
    first.drop_keyspace().await.expect("drop the test keyspace");
}

#[tokio::test]
#[cfg_attr(not(scylla_node), ignore = "needs a ScyllaDB node: set SCYLLA_URI=host:port")]
async fn an_interrupted_migration_runs_again_over_columns_it_added() {
    // ScyllaDB has no ALTER TABLE ... ADD IF NOT EXISTS: a migration that stopped after
    // adding a column must still apply when it is run again from the top.
    let options = ScyllaOptions { uri: scylla_uri(), keyspace: unique_keyspace(), ..ScyllaOptions::default() };
    let store = ScyllaStore::connect(&options).await.expect("connect migrates");
    let nodes = starling_scylla_store::model::parse_uri(&options.uri).expect("uri");
    let session = scylla::client::session_builder::SessionBuilder::new()
        .known_nodes(&nodes)
        .build()
        .await
        .expect("a second session");
    session.use_keyspace(options.keyspace.as_str(), false).await.expect("use the test keyspace");
    use starling_scylla_store::migrations::{added_column, all};
    let newest = all()
        .expect("migrations")
        .into_iter()
        .rev()
        .find(|m| m.statements.iter().any(|s| added_column(s).is_some()))
        .expect("a migration that adds a column")
        .version;
    session
        .query_unpaged("DELETE FROM schema_migrations WHERE version = ?", (newest,))
        .await
        .expect("forget the newest migration that adds columns");
    let applied = starling_scylla_store::migrations::apply(&session).await.expect("re-run that migration");
    assert_eq!(applied, 1);
    store.drop_keyspace().await.expect("drop the test keyspace");
}
