//! A read-only view of the presence channels for `GET /v1/connections`.

use serde_json::{json, Value};

use super::{protocol, Pusher};

impl Pusher {
    /// The presence channels of a tenant (`None`: every tenant) with their members, ordered by
    /// tenant and channel, at most `max` of them; and whether more were left out.
    pub fn presence(&self, tenant: Option<&str>, max: usize) -> (Vec<Value>, bool) {
        let reg = self.lock();
        let mut found: Vec<(&str, &str, &super::Channel)> = reg
            .by_tenant
            .iter()
            .filter(|(t, _)| tenant.is_none_or(|x| x == t.as_str()))
            .flat_map(|(t, chans)| {
                chans
                    .iter()
                    .filter(|(name, _)| protocol::Kind::of(name) == protocol::Kind::Presence)
                    .map(move |(name, ch)| (t.as_str(), name.as_str(), ch))
            })
            .collect();
        found.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let truncated = found.len() > max;
        let out = found
            .into_iter()
            .take(max)
            .map(|(t, name, ch)| {
                let members: Vec<Value> = ch
                    .members
                    .iter()
                    .map(|(id, m)| json!({"user_id": &**id, "user_info": m.info}))
                    .collect();
                json!({
                    "tenant": t,
                    "channel": name,
                    "subscription_count": ch.subs.len(),
                    "members": members,
                })
            })
            .collect();
        (out, truncated)
    }
}
