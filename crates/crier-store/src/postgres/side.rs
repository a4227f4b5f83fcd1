//! What every PostgreSQL side store (API keys, subscriptions, saved filters) opens with: a
//! connection pool in a checked schema, and its tables created under an advisory lock.

use crier_core::LogError;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use super::backend;

/// A pool of `max` connections to `url` and the checked `schema` (default `public`): what
/// every PostgreSQL side store (keys, subscriptions, saved filters) opens with.
pub(crate) fn side_pool(
    url: &str,
    schema: Option<&str>,
    max: usize,
) -> Result<(Pool, String), LogError> {
    let pg: tokio_postgres::Config = url.parse().map_err(backend)?;
    let mgr = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(mgr).max_size(max).build().map_err(backend)?;
    let schema = schema.unwrap_or("public");
    if schema.is_empty()
        || !schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(backend(std::io::Error::other(
            "a schema name is letters, digits and underscores",
        )));
    }
    Ok((pool, schema.to_string()))
}

/// Runs `ddl` in one transaction under advisory lock `lock`, so that nodes starting together
/// create their tables one at a time.
pub(crate) async fn migrate(pool: &Pool, lock: i64, ddl: &str) -> Result<(), LogError> {
    let mut client = pool.get().await.map_err(backend)?;
    let tx = client.transaction().await.map_err(backend)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock])
        .await
        .map_err(backend)?;
    tx.batch_execute(ddl).await.map_err(backend)?;
    tx.commit().await.map_err(backend)
}
