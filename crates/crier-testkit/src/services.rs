//! The external services of the tests (PostgreSQL, NATS, Redis, tools) and their one rule:
//! when one is unreachable the test skips with a printed NOTICE, except under `CI=true`,
//! where unreachable is a failure.

use std::time::Duration;

use tokio::net::TcpStream;

/// Whether this is CI (`CI=true`), where a missing service fails instead of skipping.
pub fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Skips with a notice that `what` (a missing service or tool), or fails under CI.
pub fn skip(what: &str) {
    if ci() {
        panic!("{what} and CI=true");
    }
    eprintln!("NOTICE: {what}; skipping");
}

/// The PostgreSQL of the tests (`CRIER_TEST_POSTGRES`, else the local `test` database).
pub fn pg_url() -> String {
    std::env::var("CRIER_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Whether `name` answers on 127.0.0.1:`port`; if not, a notice that `skipping` is
/// skipped, or a failure under CI.
pub async fn reachable(port: u16, name: &str, skipping: &str) -> bool {
    let ok = tokio::time::timeout(
        Duration::from_secs(2),
        TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    if !ok {
        if ci() {
            panic!("{name} on 127.0.0.1:{port} is unreachable and CI=true");
        }
        eprintln!("NOTICE: {name} on 127.0.0.1:{port} is unreachable; skipping {skipping}");
    }
    ok
}

/// Whether PostgreSQL answers on its port (see [`reachable`]).
pub async fn pg_reachable(skipping: &str) -> bool {
    reachable(5432, "PostgreSQL", skipping).await
}

/// A connection to the tests' PostgreSQL, or None after a notice that `skipping` is
/// skipped (a failure under CI).
pub async fn pg_client(skipping: &str) -> Option<tokio_postgres::Client> {
    match tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls).await {
        Ok((client, conn)) => {
            tokio::spawn(conn);
            Some(client)
        }
        Err(e) => {
            if ci() {
                panic!("PostgreSQL at {} is unreachable and CI=true: {e}", pg_url());
            }
            eprintln!("NOTICE: PostgreSQL is unreachable ({e}); skipping {skipping}");
            None
        }
    }
}

/// Drops a PostgreSQL schema a test used, if PostgreSQL answers.
pub async fn drop_schema(schema: &str) {
    if let Ok((client, conn)) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls).await {
        tokio::spawn(conn);
        let _ = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await;
    }
}
