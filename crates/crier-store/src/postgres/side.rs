//! What every PostgreSQL side store (API keys, subscriptions, saved filters) is built on: a
//! connection pool in a checked schema, its tables created under an advisory lock, and the
//! statements run with the tables' qualified names filled in.

use std::sync::Arc;

use crier_core::LogError;
use deadpool_postgres::{Client, GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::backend;
use crate::rows::{self, Columns};

/// Statement parameters, as `tokio_postgres` takes them.
pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// The column lists a side store's statements may name, by placeholder.
const COLUMN_LISTS: [(&str, &str); 4] = [
    ("{sub_columns}", rows::SUB_COLUMNS),
    ("{delivery_columns}", rows::DELIVERY_COLUMNS),
    ("{filter_columns}", rows::FILTER_COLUMNS),
    ("{key_columns}", rows::KEY_COLUMNS),
];

/// Runs statement `sql` on `c`; the number of rows it touched.
pub(crate) async fn exec(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<u64, LogError> {
    c.execute(sql, params).await.map_err(backend)
}

/// A pool of `max` connections to `url`, recycled without a check query.
pub(crate) fn pool(url: &str, max: usize) -> Result<Pool, LogError> {
    let pg: tokio_postgres::Config = url.parse().map_err(backend)?;
    let mgr = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr).max_size(max).build().map_err(backend)
}

/// `schema` (default `public`) once checked to be letters, digits and underscores.
fn checked_schema(schema: Option<&str>) -> Result<&str, LogError> {
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
    Ok(schema)
}

/// Runs `ddl` in one transaction under advisory lock `lock`, so that nodes starting together
/// create their tables one at a time.
async fn migrate(pool: &Pool, lock: i64, ddl: &str) -> Result<(), LogError> {
    let mut client = pool.get().await.map_err(backend)?;
    let tx = client.transaction().await.map_err(backend)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock])
        .await
        .map_err(backend)?;
    tx.batch_execute(ddl).await.map_err(backend)?;
    tx.commit().await.map_err(backend)
}

/// What a side store keeps in PostgreSQL: its `tables` (placeholder, table name) and the
/// `ddl` that creates them, where each `{placeholder}` stands for its table; the `ddl` runs
/// under advisory `lock` after the schema is created. Its pool holds `max` connections.
pub(crate) struct Tables {
    pub(crate) max: usize,
    pub(crate) lock: i32,
    pub(crate) tables: &'static [(&'static str, &'static str)],
    pub(crate) ddl: &'static str,
}

/// A side store's pool and the names its statements use: `{name}` in a statement stands
/// for the schema-qualified table registered as `name`, `{sub_columns}` and the like for
/// the column lists of [`crate::rows`].
#[derive(Clone)]
pub(crate) struct Side {
    pool: Pool,
    lock: i32,
    names: Arc<Vec<(String, String)>>,
}

impl Side {
    /// Connects with `spec.max` connections and creates `spec`'s tables in `schema`
    /// (default `public`) if needed.
    pub(crate) async fn open(
        url: &str,
        schema: Option<&str>,
        spec: &Tables,
    ) -> Result<Side, LogError> {
        let Tables {
            max,
            lock,
            tables,
            ddl,
        } = *spec;
        let pool = pool(url, max)?;
        let schema = checked_schema(schema)?;
        let names = tables
            .iter()
            .map(|(name, table)| (format!("{{{name}}}"), format!("\"{schema}\".{table}")))
            .chain(COLUMN_LISTS.map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        let side = Side {
            pool,
            lock,
            names: Arc::new(names),
        };
        let ddl = format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\";\n{}",
            side.stmt(ddl, &[]).sql
        );
        migrate(&side.pool, i64::from(lock), &ddl).await?;
        Ok(side)
    }

    /// Statement `sql` with its placeholders filled in, and its `params`.
    pub(crate) fn stmt<'a>(&self, sql: &str, params: Params<'a>) -> Stmt<'a> {
        let sql = self
            .names
            .iter()
            .fold(sql.to_string(), |s, (k, v)| s.replace(k, v));
        Stmt { sql, params }
    }

    /// A connection from the pool, for a transaction or several statements.
    pub(crate) async fn client(&self) -> Result<Client, LogError> {
        self.pool.get().await.map_err(backend)
    }

    /// Runs statement `sql` on a connection of its own; the number of rows it touched.
    pub(crate) async fn run(&self, sql: &str, params: Params<'_>) -> Result<u64, LogError> {
        self.stmt(sql, params).exec(&self.client().await?).await
    }

    /// What `conv` makes of each row query `sql` returns, on a connection of its own.
    pub(crate) async fn select<T>(
        &self,
        sql: &str,
        params: Params<'_>,
        conv: fn(&Row) -> Result<T, LogError>,
    ) -> Result<Vec<T>, LogError> {
        let rows = self.stmt(sql, params).rows(&self.client().await?).await?;
        rows.iter().map(conv).collect()
    }

    /// How many rows of `table` (a placeholder) `tenant` holds, counted in `c` after taking
    /// the tenant's advisory lock (the store's lock and the tenant) for the rest of the
    /// transaction: one creator per tenant at a time, on every node, so the count and an
    /// insert after it see the same rows.
    pub(crate) async fn count_locked(
        &self,
        c: &impl GenericClient,
        table: &str,
        tenant: &str,
    ) -> Result<usize, LogError> {
        let sql = "SELECT pg_advisory_xact_lock($1, hashtext($2))";
        self.stmt(sql, &[&self.lock, &tenant]).exec(c).await?;
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE tenant = $1");
        let n = self.stmt(&sql, &[&tenant]).rows(c).await?;
        let n = n.first().map(|r| r.int(0)).transpose()?;
        Ok(usize::try_from(n.unwrap_or(0)).unwrap_or(usize::MAX))
    }
}

/// A side store's statement, ready to run.
pub(crate) struct Stmt<'a> {
    sql: String,
    params: Params<'a>,
}

impl Stmt<'_> {
    /// Runs it on `c`; the number of rows it touched.
    pub(crate) async fn exec(&self, c: &impl GenericClient) -> Result<u64, LogError> {
        exec(c, &self.sql, self.params).await
    }

    /// The rows it returns on `c`.
    pub(crate) async fn rows(&self, c: &impl GenericClient) -> Result<Vec<Row>, LogError> {
        c.query(&self.sql, self.params).await.map_err(backend)
    }
}
