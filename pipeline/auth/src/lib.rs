//! Who is calling Herald, and what they may do.
//!
//! - [`keys`]: API keys for calling backends — `hk_<id>_<secret>`, high-entropy, stored only as
//!   a SHA-256 of the secret, compared in constant time, each scoped to one tenant and to
//!   operations ([`Scope`]), with an expiry (a rotated key's overlap) and a revocation.
//! - [`users`]: user tokens for apps — a short-lived JWT that the tenant's backend signs for one
//!   user (HS256 with a per-tenant secret, or ES256/RS256 with a per-tenant public key), with
//!   expiry and audience. A user token reaches only its own user's inbox and cannot send.
//! - [`authenticator`]: reads `authorization: Bearer …` from a call, checks it (keys from the
//!   store, cached for a few seconds so a revocation applies within seconds) and answers a
//!   [`Principal`]; [`Principal`]'s methods decide each RPC's tenant and user.
//!
//! Every refusal is an [`AuthError`], mapped to a gRPC status once: no or a bad credential →
//! UNAUTHENTICATED; a good credential asking for what it may not → PERMISSION_DENIED.

pub mod authenticator;
pub mod keys;
pub mod links;
pub mod users;

use serde::Deserialize;

pub use authenticator::{AuthConfig, Authenticator};

/// An operation a key may be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// `SendNotification`.
    Send,
    /// The query service: status, inbox, failures, read state.
    Read,
    /// Managing the tenant (keys, recipients, templates).
    Manage,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 3] = [Scope::Send, Scope::Read, Scope::Manage];

    /// The scope's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Send => "send",
            Scope::Read => "read",
            Scope::Manage => "manage",
        }
    }

    /// The scope named `name`.
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// Why a call is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credential, or one that is malformed, unknown, revoked or expired.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid credential asking for another tenant, another user, or an operation outside
    /// its scopes.
    #[error("{0}")]
    PermissionDenied(String),
    /// The key could not be looked up (the store is unavailable): try again.
    #[error("{0}")]
    Unavailable(String),
}

impl From<AuthError> for tonic::Status {
    fn from(e: AuthError) -> tonic::Status {
        match e {
            AuthError::Unauthenticated(m) => tonic::Status::unauthenticated(m),
            AuthError::PermissionDenied(m) => tonic::Status::permission_denied(m),
            AuthError::Unavailable(m) => tonic::Status::unavailable(m),
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A backend, with an API key.
    Service {
        /// The key's tenant.
        tenant: String,
        /// The key's id (for logs; never the secret).
        key_id: String,
        /// What the key may do.
        scopes: Vec<Scope>,
    },
    /// An app, with a user token.
    User {
        /// The token's tenant.
        tenant: String,
        /// The token's user.
        user_id: String,
    },
}

impl Principal {
    /// The caller's tenant.
    pub fn tenant(&self) -> &str {
        match self {
            Principal::Service { tenant, .. } | Principal::User { tenant, .. } => tenant,
        }
    }

    /// A backend allowed `scope`; a user token or a key without it is refused.
    pub fn service(&self, scope: Scope) -> Result<&Self, AuthError> {
        match self {
            Principal::Service { scopes, .. } if scopes.contains(&scope) => Ok(self),
            Principal::Service { key_id, .. } => Err(AuthError::PermissionDenied(format!(
                "API key {key_id} lacks the {} scope",
                scope.as_str()
            ))),
            Principal::User { .. } => Err(AuthError::PermissionDenied(format!(
                "a user token cannot call this; it needs an API key with the {} scope",
                scope.as_str()
            ))),
        }
    }

    /// The tenant a request acts on: the caller's. A request may name it (or leave it
    /// empty); naming another tenant is refused.
    pub fn tenant_for(&self, requested: &str) -> Result<String, AuthError> {
        if requested.is_empty() || requested == self.tenant() {
            Ok(self.tenant().to_owned())
        } else {
            Err(AuthError::PermissionDenied(format!(
                "the credential is for tenant {:?}, not {requested:?}",
                self.tenant()
            )))
        }
    }

    /// The (tenant, user) of an inbox request: a backend with `read` reaches any user of its
    /// tenant; a user token only its own user (an empty user means the token's).
    pub fn inbox_of(&self, tenant: &str, user_id: &str) -> Result<(String, String), AuthError> {
        let tenant = self.tenant_for(tenant)?;
        match self {
            Principal::Service { .. } => {
                self.service(Scope::Read)?;
                Ok((tenant, user_id.to_owned()))
            }
            Principal::User { user_id: own, .. } if user_id.is_empty() || user_id == own => {
                Ok((tenant, own.clone()))
            }
            Principal::User { .. } => Err(AuthError::PermissionDenied(
                "a user token reaches only its own user's inbox".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(scopes: &[Scope]) -> Principal {
        Principal::Service {
            tenant: "acme".into(),
            key_id: "k1".into(),
            scopes: scopes.to_vec(),
        }
    }

    fn user() -> Principal {
        Principal::User {
            tenant: "acme".into(),
            user_id: "ana".into(),
        }
    }

    #[test]
    fn the_tenant_comes_from_the_credential_and_another_is_refused() {
        let p = service(&[Scope::Send]);
        assert_eq!(p.tenant_for(""), Ok("acme".to_owned()));
        assert_eq!(p.tenant_for("acme"), Ok("acme".to_owned()));
        assert!(matches!(
            p.tenant_for("other"),
            Err(AuthError::PermissionDenied(_))
        ));
        assert!(matches!(
            user().tenant_for("other"),
            Err(AuthError::PermissionDenied(_))
        ));
    }

    #[test]
    fn scopes_are_checked_and_users_are_never_services() {
        assert!(service(&[Scope::Send]).service(Scope::Send).is_ok());
        assert!(matches!(
            service(&[Scope::Read]).service(Scope::Send),
            Err(AuthError::PermissionDenied(_))
        ));
        assert!(matches!(
            user().service(Scope::Read),
            Err(AuthError::PermissionDenied(_))
        ));
    }

    #[test]
    fn a_user_reaches_only_its_own_inbox_and_a_reader_any_of_its_tenant() {
        assert_eq!(user().inbox_of("", ""), Ok(("acme".into(), "ana".into())));
        assert_eq!(
            user().inbox_of("acme", "ana"),
            Ok(("acme".into(), "ana".into()))
        );
        assert!(matches!(
            user().inbox_of("acme", "bob"),
            Err(AuthError::PermissionDenied(_))
        ));
        let reader = service(&[Scope::Read]);
        assert_eq!(
            reader.inbox_of("acme", "bob"),
            Ok(("acme".into(), "bob".into()))
        );
        assert!(matches!(
            service(&[Scope::Send]).inbox_of("acme", "bob"),
            Err(AuthError::PermissionDenied(_))
        ));
        assert!(matches!(
            reader.inbox_of("other", "bob"),
            Err(AuthError::PermissionDenied(_))
        ));
    }

    #[test]
    fn statuses() {
        let status = |e| tonic::Status::from(e).code();
        assert_eq!(
            status(AuthError::Unauthenticated("x".into())),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            status(AuthError::PermissionDenied("x".into())),
            tonic::Code::PermissionDenied
        );
        assert_eq!(
            status(AuthError::Unavailable("x".into())),
            tonic::Code::Unavailable
        );
    }
}
