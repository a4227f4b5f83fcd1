//! Where a stream starts (§4): shared by SSE (`Last-Event-ID`, `after`, `last`) and the
//! WebSocket `subscribe` op (`after`, `last`), so both read the same rules.

use crier_core::Start;

use crate::error::ApiError;

/// Most events `last=` may ask for.
pub const MAX_LAST: u64 = 10_000;

/// The start position of §4: `Last-Event-ID` wins, then `after`, then `last`, else live.
pub fn start_position(
    last_event_id: Option<&str>,
    after: Option<u64>,
    last: Option<u64>,
) -> Result<Start, ApiError> {
    if let Some(id) = last_event_id.map(str::trim).filter(|s| !s.is_empty()) {
        let seq = id.parse::<u64>().map_err(|_| {
            ApiError::bad(
                "invalid_cursor",
                format!("Last-Event-ID must be a seq number, not {id:?}"),
            )
        })?;
        return Ok(Start::After(seq));
    }
    if let Some(a) = after {
        return Ok(Start::After(a));
    }
    if let Some(n) = last {
        if n > MAX_LAST {
            return Err(ApiError::bad(
                "invalid_cursor",
                format!("`last` is at most {MAX_LAST}"),
            ));
        }
        return Ok(Start::Last(n as usize));
    }
    Ok(Start::Live)
}
