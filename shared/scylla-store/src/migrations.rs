//! CQL schema migrations: numbered `.cql` files in `migrations/`, compiled into the binary,
//! applied in order at start-up and recorded in `schema_migrations`.
//!
//! DDL in ScyllaDB is not transactional, so a migration that stops half-way leaves some of
//! its statements applied. Every statement must therefore be idempotent (`IF NOT EXISTS`,
//! `IF EXISTS`): the runner records a migration only after all its statements succeeded,
//! and an unrecorded migration is run again from the top. A recorded migration whose file
//! has changed since is refused (checksum), because its changes would never be applied.
//!
//! ScyllaDB's `ALTER TABLE` has no `ADD IF NOT EXISTS`, so the runner makes a single-column
//! `ALTER TABLE t ADD c type` idempotent itself: it skips the statement when
//! `system_schema.columns` already has the column with that type, and also accepts a
//! failure once the column turns out to exist (another process added it meanwhile).

use scylla::client::session::Session;

use crate::ScyllaError;

/// Every migration file, in the repository and in the binary. A unit test checks that
/// this list and the `migrations/` directory agree, so a new file cannot be forgotten.
const FILES: &[(&str, &str)] = &[
    ("0001_init.cql", include_str!("../migrations/0001_init.cql")),
    ("0002_auth.cql", include_str!("../migrations/0002_auth.cql")),
    ("0003_interactions.cql", include_str!("../migrations/0003_interactions.cql")),
    ("0004_notifications.cql", include_str!("../migrations/0004_notifications.cql")),
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migration {
    pub version: i32,
    pub name: String,
    pub statements: Vec<String>,
    /// Of the statements, not the raw text: editing a comment does not count as a change.
    pub checksum: i64,
}

/// The migrations compiled into this build, in the order they apply.
pub fn all() -> Result<Vec<Migration>, ScyllaError> {
    parse_all(FILES)
}

fn parse_all(files: &[(&str, &str)]) -> Result<Vec<Migration>, ScyllaError> {
    let mut migrations = files
        .iter()
        .map(|(file, text)| {
            let (version, name) = parse_file_name(file)?;
            let statements = split_statements(text)?;
            if statements.is_empty() {
                return Err(ScyllaError::Migration(format!("{file}: no statements")));
            }
            Ok(Migration { version, name: name.to_owned(), checksum: checksum(&statements), statements })
        })
        .collect::<Result<Vec<_>, _>>()?;
    migrations.sort_by_key(|m| m.version);
    if let Some(pair) = migrations.windows(2).find(|w| w[0].version == w[1].version) {
        return Err(ScyllaError::Migration(format!("two migrations numbered {}", pair[0].version)));
    }
    Ok(migrations)
}

/// `0001_init.cql` → `(1, "init")`.
fn parse_file_name(file: &str) -> Result<(i32, &str), ScyllaError> {
    let bad = || ScyllaError::Migration(format!("{file}: migration files are named NNNN_name.cql"));
    let stem = file.strip_suffix(".cql").ok_or_else(bad)?;
    let (number, name) = stem.split_once('_').ok_or_else(bad)?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) || name.is_empty() {
        return Err(bad());
    }
    let version: i32 = number.parse().map_err(|_| bad())?;
    if version <= 0 {
        return Err(bad());
    }
    Ok((version, name))
}

/// Splits a CQL script into statements at `;`, dropping comments (`--`, `//`, `/* */`)
/// and keeping `;` that sits inside a string literal (`'...'` with `''` escapes, `$$...$$`)
/// or a quoted identifier.
pub fn split_statements(text: &str) -> Result<Vec<String>, ScyllaError> {
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '-' if chars.peek() == Some(&'-') => skip_line(&mut chars),
            '/' if chars.peek() == Some(&'/') => skip_line(&mut chars),
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                loop {
                    match chars.next() {
                        Some('/') if prev == '*' => break,
                        Some(c) => prev = c,
                        None => return Err(ScyllaError::Migration("unterminated /* comment".into())),
                    }
                }
                current.push(' ');
            }
            '\'' | '"' => {
                current.push(c);
                loop {
                    match chars.next() {
                        // A doubled quote is an escaped quote, still inside the literal.
                        Some(q) if q == c && chars.peek() == Some(&c) => {
                            current.push(q);
                            current.push(chars.next().unwrap_or(c));
                        }
                        Some(q) if q == c => {
                            current.push(q);
                            break;
                        }
                        Some(other) => current.push(other),
                        None => return Err(ScyllaError::Migration("unterminated quoted string".into())),
                    }
                }
            }
            '$' if chars.peek() == Some(&'$') => {
                chars.next();
                current.push_str("$$");
                let mut prev = ' ';
                loop {
                    match chars.next() {
                        Some('$') if prev == '$' => {
                            current.push('$');
                            break;
                        }
                        Some(c) => {
                            current.push(c);
                            prev = c;
                        }
                        None => return Err(ScyllaError::Migration("unterminated $$ string".into())),
                    }
                }
            }
            ';' => push_statement(&mut statements, &mut current),
            c => current.push(c),
        }
    }
    push_statement(&mut statements, &mut current);
    Ok(statements)
}

fn skip_line(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    for c in chars.by_ref() {
        if c == '\n' {
            break;
        }
    }
}

/// Adds the statement with its whitespace normalised (runs collapsed to one space).
fn push_statement(statements: &mut Vec<String>, current: &mut String) {
    let normalised = current.split_whitespace().collect::<Vec<_>>().join(" ");
    if !normalised.is_empty() {
        statements.push(normalised);
    }
    current.clear();
}

/// FNV-1a over the statements: stable across builds and platforms, unlike `DefaultHasher`.
fn checksum(statements: &[String]) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for statement in statements {
        for byte in statement.bytes().chain([b';']) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash as i64
}

/// Applies every migration not yet recorded in `schema_migrations` of the session's
/// current keyspace. Returns how many were applied.
pub async fn apply(session: &Session) -> Result<usize, ScyllaError> {
    let migrations = all()?;
    session
        .query_unpaged(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, name text, checksum bigint, \
             applied_at timestamp)",
            &[],
        )
        .await?;
    let read = session.prepare("SELECT version, name, checksum FROM schema_migrations").await?;
    let mut applied = std::collections::BTreeMap::new();
    let mut rows = session.execute_iter(read, &[]).await?.rows_stream::<(i32, Option<String>, Option<i64>)>()?;
    while let Some(row) = futures::TryStreamExt::try_next(&mut rows).await? {
        applied.insert(row.0, (row.1.unwrap_or_default(), row.2));
    }
    check_applied(&migrations, &applied)?;

    let record = session
        .prepare(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, toTimestamp(now()))",
        )
        .await?;
    let keyspace = session.get_keyspace().ok_or_else(|| ScyllaError::Migration("no keyspace in use".into()))?;
    let mut count = 0;
    for m in migrations.iter().filter(|m| !applied.contains_key(&m.version)) {
        tracing::info!(version = m.version, name = %m.name, "applying CQL migration");
        for statement in &m.statements {
            let fail = |e: &dyn std::fmt::Display| {
                ScyllaError::Migration(format!("{:04}_{}: {statement}: {e}", m.version, m.name))
            };
            let added = added_column(statement);
            if let Some(column) = &added
                && column_exists(session, &keyspace, column).await.map_err(|e| fail(&e))?
            {
                continue;
            }
            // Schema statements: the driver waits for schema agreement after each one, so
            // the next statement sees the table the previous one created.
            if let Err(e) = session.query_unpaged(statement.as_str(), &[]).await {
                // A column added by another process starting at the same time is no failure.
                let added_meanwhile = match &added {
                    Some(column) => column_exists(session, &keyspace, column).await.map_err(|e| fail(&e))?,
                    None => false,
                };
                if !added_meanwhile {
                    return Err(fail(&e));
                }
            }
        }
        session.execute_unpaged(&record, (m.version, m.name.as_str(), m.checksum)).await?;
        count += 1;
    }
    Ok(count)
}

/// The column a single-column `ALTER TABLE t ADD c type` adds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddedColumn {
    pub table: String,
    pub column: String,
    /// As `system_schema.columns` spells it: lower case, no spaces.
    pub cql_type: String,
}

/// Recognises `ALTER TABLE t ADD c type` with unquoted names (folded to lower case, as
/// CQL does). Anything else, including the parenthesised multi-column form, is `None`
/// and so must be idempotent by itself.
pub fn added_column(statement: &str) -> Option<AddedColumn> {
    let words: Vec<&str> = statement.split_whitespace().collect();
    let [alter, table_kw, table, add, column, cql_type @ ..] = words.as_slice() else {
        return None;
    };
    let keyword = |word: &str, expected: &str| word.eq_ignore_ascii_case(expected);
    let plain = |name: &str| {
        name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let is_add = keyword(alter, "ALTER") && keyword(table_kw, "TABLE") && keyword(add, "ADD");
    if !is_add || !plain(table) || !plain(column) || cql_type.is_empty() {
        return None;
    }
    Some(AddedColumn {
        table: table.to_ascii_lowercase(),
        column: column.to_ascii_lowercase(),
        cql_type: cql_type.concat().to_ascii_lowercase(),
    })
}

/// Does `keyspace` already have the column? An existing column of another type is an
/// error: the migration could never be applied as written.
async fn column_exists(session: &Session, keyspace: &str, added: &AddedColumn) -> Result<bool, ScyllaError> {
    let found = session
        .query_unpaged(
            "SELECT type FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ? AND column_name = ?",
            (keyspace, added.table.as_str(), added.column.as_str()),
        )
        .await?
        .into_rows_result()?
        .maybe_first_row::<(Option<String>,)>()?;
    match found {
        None => Ok(false),
        Some((Some(existing),)) if existing.replace(' ', "").eq_ignore_ascii_case(&added.cql_type) => Ok(true),
        Some((existing,)) => Err(ScyllaError::Migration(format!(
            "{}.{} exists with type {}, not {}",
            added.table,
            added.column,
            existing.unwrap_or_default(),
            added.cql_type
        ))),
    }
}

/// Refuses to run against a keyspace migrated by a different schema history.
fn check_applied(
    migrations: &[Migration],
    applied: &std::collections::BTreeMap<i32, (String, Option<i64>)>,
) -> Result<(), ScyllaError> {
    for (version, (name, sum)) in applied {
        match migrations.iter().find(|m| m.version == *version) {
            None => {
                return Err(ScyllaError::Migration(format!(
                    "the keyspace has migration {version:04}_{name}, which this build does not know (a newer build \
                     migrated it?)"
                )));
            }
            Some(m) if *sum != Some(m.checksum) => {
                return Err(ScyllaError::Migration(format!(
                    "migration {version:04}_{name} changed after it was applied; add a new migration instead"
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn file_names_give_version_and_name() {
        assert_eq!(parse_file_name("0001_init.cql").unwrap(), (1, "init"));
        assert_eq!(parse_file_name("0042_add_likes_table.cql").unwrap(), (42, "add_likes_table"));
        for bad in ["init.cql", "0001_init.sql", "0001.cql", "00a1_x.cql", "0000_zero.cql", "_x.cql", "0001_.cql"] {
            assert!(parse_file_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn statements_are_split_outside_strings_and_comments() {
        let script = "-- a comment; with a semicolon\n\
                      CREATE TABLE a (x int PRIMARY KEY);\n\
                      /* block; comment */ INSERT INTO a (x, s) VALUES (1, 'it''s; fine');\n\
                      // another; comment\n\
                      CREATE FUNCTION f() RETURNS NULL ON NULL INPUT RETURNS int LANGUAGE lua AS $$ return 1; $$ ;\n\
                      SELECT \"odd;name\" FROM a\n";
        assert_eq!(
            split_statements(script).unwrap(),
            vec![
                "CREATE TABLE a (x int PRIMARY KEY)",
                "INSERT INTO a (x, s) VALUES (1, 'it''s; fine')",
                "CREATE FUNCTION f() RETURNS NULL ON NULL INPUT RETURNS int LANGUAGE lua AS $$ return 1; $$",
                "SELECT \"odd;name\" FROM a",
            ]
        );
        assert!(split_statements("SELECT 'open").is_err());
        assert!(split_statements("/* open").is_err());
        assert!(split_statements("-- only a comment\n ;; \n").unwrap().is_empty());
    }

    #[test]
    fn migrations_are_ordered_and_unique() {
        let parsed =
            parse_all(&[("0002_b.cql", "CREATE TABLE b (x int PRIMARY KEY);"), ("0001_a.cql", "SELECT 1")]).unwrap();
        assert_eq!(parsed.iter().map(|m| m.version).collect::<Vec<_>>(), vec![1, 2]);
        assert!(parse_all(&[("0001_a.cql", "SELECT 1"), ("001_b.cql", "SELECT 2")]).is_err(), "same number");
        assert!(parse_all(&[("0001_a.cql", "-- nothing")]).is_err(), "empty migration");
    }

    #[test]
    fn checksums_ignore_comments_and_layout_but_not_statements() {
        let a = split_statements("CREATE TABLE t (x int PRIMARY KEY);").unwrap();
        let b = split_statements("-- note\nCREATE TABLE t (x int\n    PRIMARY KEY) ;").unwrap();
        let c = split_statements("CREATE TABLE t (y int PRIMARY KEY);").unwrap();
        assert_eq!(checksum(&a), checksum(&b));
        assert_ne!(checksum(&a), checksum(&c));
    }

    #[test]
    fn applied_history_must_match_this_build() {
        let ms = all().unwrap();
        let mut applied = BTreeMap::new();
        check_applied(&ms, &applied).unwrap();
        applied.insert(1, ("init".to_owned(), Some(ms[0].checksum)));
        check_applied(&ms, &applied).unwrap();
        applied.insert(1, ("init".to_owned(), Some(ms[0].checksum ^ 1)));
        assert!(check_applied(&ms, &applied).is_err(), "edited after applying");
        applied.insert(1, ("init".to_owned(), Some(ms[0].checksum)));
        applied.insert(9999, ("future".to_owned(), Some(0)));
        assert!(check_applied(&ms, &applied).is_err(), "unknown migration");
    }

    #[test]
    fn the_compiled_list_matches_the_directory() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".cql"))
            .collect();
        on_disk.sort();
        let compiled: Vec<String> = FILES.iter().map(|(n, _)| (*n).to_owned()).collect();
        assert_eq!(on_disk, compiled, "every file in migrations/ must be listed in FILES, in order");
        for (name, text) in FILES {
            assert_eq!(std::fs::read_to_string(dir.join(name)).unwrap(), *text);
        }
    }

    #[test]
    fn the_shipped_schema_parses_and_is_idempotent() {
        let ms = all().unwrap();
        assert_eq!(ms[0].version, 1);
        for statement in ms.iter().flat_map(|m| &m.statements) {
            let idempotent = statement.contains("IF NOT EXISTS") || statement.contains("IF EXISTS");
            assert!(idempotent || added_column(statement).is_some(), "{statement}");
            assert!(!statement.contains('.'), "no keyspace-qualified names: {statement}");
        }
        let tables: Vec<&str> = ms
            .iter()
            .flat_map(|m| &m.statements)
            .filter_map(|s| s.strip_prefix("CREATE TABLE IF NOT EXISTS "))
            .filter_map(|s| s.split_whitespace().next())
            .collect();
        let expected = ["posts", "posts_by_author", "pairs", "following", "followers", "outbox", "outbox_floor"];
        let interactions = ["reblogs", "reblogs_by_user", "favourites", "replies", "post_stats", "mutes", "muted_by"];
        let notifications = ["notification_keys", "notifications", "notification_buckets"];
        for t in expected
            .into_iter()
            .chain(["apps", "credentials", "emails", "grants"])
            .chain(interactions)
            .chain(notifications)
        {
            assert!(tables.contains(&t), "{t} missing from {tables:?}");
        }
        let added: Vec<(String, String)> = ms
            .iter()
            .flat_map(|m| &m.statements)
            .filter_map(|s| added_column(s))
            .map(|a| (a.table, a.column))
            .collect();
        for (table, column) in [("posts", "reblog_of"), ("posts_by_author", "reblog_of"), ("pairs", "lo_mutes")] {
            assert!(added.contains(&(table.to_owned(), column.to_owned())), "{table}.{column} missing from {added:?}");
        }
    }

    #[test]
    fn only_single_column_adds_are_made_idempotent_by_the_runner() {
        let a = added_column("ALTER TABLE Posts ADD reblog_of bigint").unwrap();
        assert_eq!(a, AddedColumn { table: "posts".into(), column: "reblog_of".into(), cql_type: "bigint".into() });
        let frozen = added_column("alter table t add c frozen<list<text>>").unwrap();
        assert_eq!(frozen.cql_type, "frozen<list<text>>");
        for other in [
            "ALTER TABLE t ADD (a int, b int)",
            "ALTER TABLE t ADD c",
            "ALTER TABLE t DROP c",
            "ALTER TABLE \"T\" ADD c int",
            "ALTER TABLE t WITH gc_grace_seconds = 1",
            "CREATE TABLE IF NOT EXISTS t (x int PRIMARY KEY)",
        ] {
            assert_eq!(added_column(other), None, "{other}");
        }
    }
}
