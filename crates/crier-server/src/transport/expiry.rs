//! When a credential ends, as a timer instant: open streams, sockets and webhook deliveries
//! all turn a token's `exp` into the same deadline.

use std::time::Duration;

use tokio::time::Instant;

/// Seconds since the Unix epoch, with a fraction.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The instant a credential with `exp` (unix seconds) expires; far in the future if never.
pub fn expiry_instant(exp: Option<u64>) -> Instant {
    const YEAR: f64 = 365.0 * 24.0 * 3600.0;
    let Some(exp) = exp else {
        return Instant::now() + Duration::from_secs_f64(YEAR);
    };
    let left = (exp as f64 - unix_now()).max(0.0);
    Instant::now() + Duration::from_secs_f64(left.min(YEAR))
}
