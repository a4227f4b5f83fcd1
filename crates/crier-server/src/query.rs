//! Query-string parsing shared by the read paths: every path names the parameters it takes
//! and anything else is a 400, so a typo never silently widens or empties a result.

use crier_core::Filter;

use crate::error::ApiError;

fn decode(raw: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(raw.unwrap_or("")).map_err(|e| {
        ApiError::bad(
            "invalid_query",
            format!("cannot decode the query string: {e}"),
        )
    })
}

/// Decoded query pairs.
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses a raw query string, refusing parameters outside the filter keys and `extra`.
    pub fn parse(raw: Option<&str>, extra: &[&str]) -> Result<Query, ApiError> {
        let pairs = decode(raw)?;
        for (k, _) in &pairs {
            let known = crier_core::filter::QUERY_KEYS.contains(&k.as_str())
                || k == "tags"
                || k == "token"
                || extra.contains(&k.as_str());
            if !known {
                return Err(ApiError::bad(
                    "invalid_query",
                    format!("unknown query parameter `{k}`"),
                ));
            }
        }
        Ok(Query { pairs })
    }

    /// Parses a raw query string that takes only `keys` (and `token`), no filter keys.
    pub fn parse_only(raw: Option<&str>, keys: &[&str]) -> Result<Query, ApiError> {
        let pairs = decode(raw)?;
        if let Some((k, _)) = pairs
            .iter()
            .find(|(k, _)| k != "token" && !keys.contains(&k.as_str()))
        {
            return Err(ApiError::bad(
                "invalid_query",
                format!(
                    "unknown query parameter `{k}`; this path takes {}",
                    keys.join(", ")
                ),
            ));
        }
        Ok(Query { pairs })
    }

    /// The filter given by the filter keys.
    pub fn filter(&self) -> Result<Filter, crate::service::Error> {
        Ok(Filter::from_query(
            self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )?)
    }

    /// The first filter parameter given (`type`, `severity`, …), if any.
    pub fn filter_key(&self) -> Option<&str> {
        self.pairs
            .iter()
            .map(|(k, _)| k.as_str())
            .find(|k| crier_core::filter::QUERY_KEYS.contains(k) || *k == "tags")
    }

    /// The last value of a parameter.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A non-negative integer parameter.
    pub fn u64(&self, key: &str) -> Result<Option<u64>, ApiError> {
        self.get(key)
            .map(|v| {
                v.trim().parse::<u64>().map_err(|_| {
                    ApiError::bad(
                        "invalid_query",
                        format!("`{key}` must be a non-negative integer, not {v:?}"),
                    )
                })
            })
            .transpose()
    }

    /// A time parameter (RFC 3339, or a duration before now like `15m`), as microseconds.
    pub fn time(&self, key: &str) -> Result<Option<i64>, ApiError> {
        let now = crier_core::event::now_us();
        self.get(key)
            .map(|v| {
                crier_core::event::parse_time_or_ago_us(v, now).ok_or_else(|| {
                    ApiError::bad(
                        "invalid_query",
                        format!(
                            "`{key}` must be an RFC 3339 time or a duration before now \
                             like 15m, 2h or 7d, not {v:?}"
                        ),
                    )
                })
            })
            .transpose()
    }
}
