//! Who is asking: every request, stream and connection carries a [`Principal`].
//!
//! Without auth configured the principal is `admin` of tenant `default` with actor
//! `anonymous`; credentials narrow it. Paths decide what they allow from the role, and read
//! only the principal's tenant unless the principal is an admin asking for another.

use crate::filter::Pattern;

/// The roles of the contract, ordered by what they may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads: history, streams, WebSocket subscriptions, replays.
    Subscriber,
    /// Also publishes and manages subscriptions.
    Publisher,
    /// Everything, across tenants.
    Admin,
}

impl Role {
    /// The role's name as written in tokens and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Subscriber => "subscriber",
            Role::Publisher => "publisher",
            Role::Admin => "admin",
        }
    }

    /// Parses a role name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "subscriber" => Some(Role::Subscriber),
            "publisher" => Some(Role::Publisher),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The identity behind a request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The tenant whose events this principal reads and writes.
    pub tenant: String,
    /// What it may do.
    pub role: Role,
    /// The credential's subject; becomes the `actor` of published events.
    pub subject: String,
    /// Type patterns narrowing what it may read (`None`: no narrowing).
    pub subscribe: Option<Vec<Pattern>>,
    /// Type patterns narrowing what it may publish (`None`: no narrowing).
    pub publish: Option<Vec<Pattern>>,
    /// Unix seconds after which the credential is no longer valid.
    pub expires_at: Option<u64>,
    /// The hash of the API key behind this principal, re-checked while streams stay open.
    pub key_hash: Option<String>,
}

impl Principal {
    /// The principal of a hub that runs without auth: admin of `default`.
    pub fn anonymous_admin() -> Self {
        Principal {
            tenant: "default".to_string(),
            role: Role::Admin,
            subject: "anonymous".to_string(),
            subscribe: None,
            publish: None,
            expires_at: None,
            key_hash: None,
        }
    }

    /// Whether the role is at least `role`.
    pub fn has(&self, role: Role) -> bool {
        self.role >= role
    }

    /// Whether this principal may publish an event of type `ty`.
    pub fn may_publish_type(&self, ty: &str) -> bool {
        self.publish
            .as_ref()
            .is_none_or(|pats| pats.iter().any(|p| p.matches(ty)))
    }
}
