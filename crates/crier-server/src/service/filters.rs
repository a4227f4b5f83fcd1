//! Saved filters where readers use them (§2): `filter=NAME` in a query string, or a string
//! instead of a filter object in a JSON body or WebSocket op, resolved once when the reader
//! opens. SSE, history, WebSocket ops and replays all resolve names here; `/v1/filters`
//! (`crate::filters`) stores them under the name rules of [`check_name`].

use crier_core::{Filter, Principal, Scope};
use serde_json::Value;

use super::Error;
use crate::query::Query;
use crate::state::AppState;

/// The longest name of a saved filter.
pub const MAX_NAME: usize = 64;

/// Refuses a name that is not a short slug: 1 to 64 of lowercase letters, digits, `.`, `_`
/// and `-`, starting with a letter or digit.
pub fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        let shown: String = name.chars().take(80).collect();
        Err(Error::invalid(
            "invalid_filter_name",
            format!(
                "a filter name is 1 to {MAX_NAME} lowercase letters, digits, dots, hyphens or \
                 underscores, starting with a letter or digit (like prod-errors); {shown:?} is \
                 not one"
            ),
        ))
    }
}

/// `unknown_filter`: the tenant has no saved filter `name`.
pub fn not_found(name: &str) -> Error {
    Error::NotFound {
        code: "unknown_filter",
        message: format!("this tenant has no saved filter {name:?}"),
    }
}

/// The saved filter `name` of `tenant`, parsed; `404 unknown_filter` when there is none.
pub async fn resolve(state: &AppState, tenant: &str, name: &str) -> Result<Filter, Error> {
    check_name(name)?;
    let saved = state
        .filters
        .get(tenant.to_string(), name.to_string())
        .await?
        .ok_or_else(|| not_found(name))?;
    let v: Value = serde_json::from_str(&saved.filter).map_err(|e| {
        tracing::error!(error = %e, filter = %name, "a stored filter is not JSON");
        Error::Internal {
            code: "internal",
            message: format!("the saved filter {name:?} cannot be read; save it again"),
        }
    })?;
    Ok(Filter::from_json(&v)?)
}

/// The tenant whose saved filters a read resolves names in: the one it reads, or for an
/// admin reading every tenant, the admin's own.
pub fn tenant_of<'a>(p: &'a Principal, scope: &'a Scope) -> &'a str {
    match scope {
        Scope::Tenant(t) => t,
        Scope::All => &p.tenant,
    }
}

/// The scope (`tenant=`) and the filter of a read's query string: its filter parameters, or
/// the saved filter named by `filter=` (never both), a name resolved in [`tenant_of`] the scope.
pub async fn from_query(
    state: &AppState,
    p: &Principal,
    q: &Query,
) -> Result<(Scope, Filter), Error> {
    let scope = crate::auth::read_scope(p, q.get("tenant"))?;
    let Some(name) = q.get("filter") else {
        return Ok((scope, q.filter()?));
    };
    if let Some(k) = q.filter_key() {
        return Err(Error::invalid(
            "conflicting_filter",
            format!(
                "`filter={name}` names a saved filter; it cannot be combined with the filter \
                 parameter `{k}` (save a filter with both, or give the parameters alone)"
            ),
        ));
    }
    let filter = resolve(state, tenant_of(p, &scope), name).await?;
    Ok((scope, filter))
}

/// The filter of a JSON body or WebSocket op: an object is a filter, a string names a saved
/// filter, absent or `null` matches everything.
pub async fn from_json(state: &AppState, tenant: &str, v: Option<&Value>) -> Result<Filter, Error> {
    match v {
        Some(Value::String(name)) => resolve(state, tenant, name).await,
        other => Ok(Filter::from_json(other.unwrap_or(&Value::Null))?),
    }
}

/// The scope (`tenant`) and the filter (`filter`, as in [`from_json`]) of a WebSocket op
/// that reads the log, a saved name resolved in [`tenant_of`] the scope.
pub async fn from_op(
    state: &AppState,
    p: &Principal,
    tenant: Option<&str>,
    filter: Option<&Value>,
) -> Result<(Scope, Filter), Error> {
    let scope = crate::auth::read_scope(p, tenant)?;
    let filter = from_json(state, tenant_of(p, &scope), filter).await?;
    Ok((scope, filter))
}
