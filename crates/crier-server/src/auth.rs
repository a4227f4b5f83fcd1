//! Who is asking. Every handler takes an [`Auth`] extractor, so every path gets a
//! [`Principal`] the same way, and reads are scoped by [`read_scope`].
//!
//! This build runs without credentials: configuration refuses `[auth]` settings and any
//! listen address beyond loopback, and every request is `admin` of tenant `default` with actor
//! `anonymous` (§6).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use crier_core::{Principal, Role, Scope};

use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated principal of a request.
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(_parts: &mut Parts, _state: &AppState) -> Result<Self, ApiError> {
        Ok(Auth(Principal::anonymous_admin()))
    }
}

/// Requires at least `role`.
pub fn require(p: &Principal, role: Role) -> Result<(), ApiError> {
    if p.has(role) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "this needs the {} role",
            role.as_str()
        )))
    }
}

/// The tenants a read covers: the principal's own, or for an admin the one named by a
/// `tenant` parameter (`*` for all).
pub fn read_scope(p: &Principal, tenant: Option<&str>) -> Result<Scope, ApiError> {
    match tenant {
        None => Ok(Scope::Tenant(p.tenant.clone())),
        Some(t) if t == p.tenant => Ok(Scope::Tenant(p.tenant.clone())),
        Some(_) if p.role != Role::Admin => {
            Err(ApiError::forbidden("only an admin may read another tenant"))
        }
        Some("*") => Ok(Scope::All),
        Some(t) => {
            crier_core::event::check_tenant(t)?;
            Ok(Scope::Tenant(t.to_string()))
        }
    }
}

/// The filter a principal may use: its own, narrowed by the credential's `subscribe` patterns.
pub fn narrow(p: &Principal, mut f: crier_core::Filter) -> crier_core::Filter {
    f.allowed_types = p.subscribe.clone();
    f
}
