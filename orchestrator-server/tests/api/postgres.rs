//! A throw-away PostgreSQL database per test, when `TEST_DATABASE_URL` names a server.

use std::sync::Once;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

/// The variable that enables the PostgreSQL tests.
pub const VARIABLE: &str = "TEST_DATABASE_URL";

/// A server on a fresh database of its own (see [`TestDatabase::create`]), and the database,
/// dropped with it.
pub async fn app() -> Option<(TestDatabase, crate::helpers::TestApp)> {
    let db = TestDatabase::create().await?;
    let url = orchestrator_server::storage::DatabaseUrl::Postgres(db.url.clone());
    let app = crate::helpers::spawn_app_with(|c| c.database_url = url).await;
    Some((db, app))
}

/// A database created for one test and dropped after it.
pub struct TestDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

impl TestDatabase {
    /// A fresh database on the server `TEST_DATABASE_URL` names, or `None` (with a notice)
    /// when the variable is unset — but under `CI`, where that fails the test. A set variable
    /// naming an unreachable server fails the test.
    pub async fn create() -> Option<TestDatabase> {
        let Ok(admin_url) = std::env::var(VARIABLE) else {
            // CI must run them: a run there that skipped them would pass having tested less.
            assert!(
                std::env::var_os("CI").is_none(),
                "{VARIABLE} is unset under CI: the PostgreSQL tests must run there"
            );
            static NOTICE: Once = Once::new();
            NOTICE.call_once(|| {
                // Straight to stderr: the test harness captures `eprintln!` of passing tests.
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "note: PostgreSQL tests skipped: set {VARIABLE}=postgres://user@host:port/database to run them"
                );
            });
            return None;
        };
        let name = format!("orchestrator_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = AsyncPgConnection::establish(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("{VARIABLE} is set but PostgreSQL is unreachable: {e}"));
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let url = match admin_url.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => panic!("{VARIABLE} must end with /database"),
        };
        Some(TestDatabase {
            admin_url,
            name,
            url,
        })
    }
}

/// A session on `url` inside a transaction that has run `statement` (a `SELECT … FOR UPDATE`,
/// an `UPDATE`) and stays open: its locks are held until it commits or rolls back.
pub async fn in_open_transaction(url: &str, statement: &str) -> AsyncPgConnection {
    let mut session = AsyncPgConnection::establish(url).await.unwrap();
    for statement in ["BEGIN", statement] {
        diesel::sql_query(statement)
            .execute(&mut session)
            .await
            .unwrap();
    }
    session
}

/// A session on `url` holding the migration lock, as a replica that is migrating does: other
/// replicas wait at start-up until it lets go (`SELECT pg_advisory_unlock(…)`) or closes.
pub async fn migrating(url: &str) -> AsyncPgConnection {
    let mut session = AsyncPgConnection::establish(url).await.unwrap();
    diesel::sql_query(format!(
        "SELECT pg_advisory_lock({})",
        orchestrator_server::storage::postgres::MIGRATION_LOCK
    ))
    .execute(&mut session)
    .await
    .unwrap();
    session
}

/// Makes the database at `url` as a copy restored from when its event log ended at `last_id`
/// and `kept` was its only workflow: later events, history and workflows gone, the log's
/// newest id back at `last_id` (under a running server, as a restore would leave it).
pub async fn restore_older_copy(url: &str, last_id: u64, kept: &str) {
    let mut restore = AsyncPgConnection::establish(url).await.unwrap();
    diesel_async::SimpleAsyncConnection::batch_execute(
        &mut restore,
        &format!(
            "DELETE FROM transitions WHERE event_id > {last_id}; \
             DELETE FROM events WHERE id > {last_id}; \
             DELETE FROM workflows WHERE feature_id <> '{kept}'; \
             UPDATE event_log SET last_id = {last_id}"
        ),
    )
    .await
    .unwrap();
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime; a helper thread with its own runtime may block.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(mut admin) = AsyncPgConnection::establish(&admin_url).await {
                    let _ =
                        diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .execute(&mut admin)
                            .await;
                }
            });
        })
        .join();
    }
}
