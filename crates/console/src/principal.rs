//! Who is acting, and what their role lets them do. Every `Platform` operation takes a
//! `Principal` and checks it first.

use portico_core::Error;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Console roles. The first three are platform operators, the last two merchant members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    SuperAdmin,
    /// Reviews, suspends and reactivates merchants; sees their unmasked documents.
    BusinessManager,
    /// Manages the API catalog (later issues).
    ProductManager,
    /// A merchant's owner: its documents, members and apps.
    Owner,
    /// A merchant's developer: its apps.
    Developer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::SuperAdmin => "super_admin",
            Role::BusinessManager => "business_manager",
            Role::ProductManager => "product_manager",
            Role::Owner => "owner",
            Role::Developer => "developer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "super_admin" => Role::SuperAdmin,
            "business_manager" => Role::BusinessManager,
            "product_manager" => Role::ProductManager,
            "owner" => Role::Owner,
            "developer" => Role::Developer,
            _ => return None,
        })
    }

    pub fn is_operator(self) -> bool {
        matches!(self, Role::SuperAdmin | Role::BusinessManager | Role::ProductManager)
    }
}

/// The acting party.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A signed-in console account.
    Account { id: String, email: String, role: Role, merchant_id: Option<String> },
    /// The `portico` command line on the server itself: it holds the database and the
    /// master key already, so it acts as a super admin and is audited as `cli`.
    System,
}

impl Principal {
    pub fn role(&self) -> Role {
        match self {
            Principal::Account { role, .. } => *role,
            Principal::System => Role::SuperAdmin,
        }
    }

    pub fn is_operator(&self) -> bool {
        self.role().is_operator()
    }

    pub fn merchant_id(&self) -> Option<&str> {
        match self {
            Principal::Account { merchant_id, .. } => merchant_id.as_deref(),
            Principal::System => None,
        }
    }

    /// Requires one of `roles`; a super admin always passes.
    pub fn require(&self, roles: &[Role], what: &str) -> Result<(), Error> {
        let role = self.role();
        if role == Role::SuperAdmin || roles.contains(&role) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!("the {} role may not {what}", role.as_str())))
        }
    }

    /// Requires that the principal may see `merchant_id`'s objects: any operator, or a
    /// member of that merchant. To everyone else the merchant does not exist (404, not
    /// 403), so ids of other tenants cannot be probed.
    pub fn can_see(&self, merchant_id: &str) -> Result<(), Error> {
        if self.is_operator() || self.merchant_id() == Some(merchant_id) {
            Ok(())
        } else {
            Err(Error::NotFound("merchant"))
        }
    }

    /// Requires that the principal may change `merchant_id`'s apps: its own members, or
    /// a super admin.
    pub fn can_manage_apps(&self, merchant_id: &str) -> Result<(), Error> {
        self.can_see(merchant_id)?;
        if self.merchant_id() == Some(merchant_id) || self.role() == Role::SuperAdmin {
            Ok(())
        } else {
            Err(Error::Forbidden(format!("the {} role may not change a merchant's apps", self.role().as_str())))
        }
    }

    /// Requires the merchant's owner (or a super admin): documents and members.
    pub fn can_administer(&self, merchant_id: &str) -> Result<(), Error> {
        self.can_see(merchant_id)?;
        let own_owner = self.merchant_id() == Some(merchant_id) && self.role() == Role::Owner;
        if own_owner || self.role() == Role::SuperAdmin {
            Ok(())
        } else {
            Err(Error::Forbidden(format!("the {} role may not administer this merchant", self.role().as_str())))
        }
    }

    /// Whether sensitive fields of `merchant_id` are shown unmasked to this principal.
    pub fn sees_sensitive(&self, merchant_id: &str) -> bool {
        matches!(self.role(), Role::SuperAdmin | Role::BusinessManager) || self.merchant_id() == Some(merchant_id)
    }

    /// (kind, id, email) for the audit log.
    pub fn audit_actor(&self) -> (&'static str, Option<String>, Option<String>) {
        match self {
            Principal::Account { id, email, role, .. } => {
                (if role.is_operator() { "operator" } else { "member" }, Some(id.clone()), Some(email.clone()))
            }
            Principal::System => ("cli", None, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(role: Role, m: &str) -> Principal {
        Principal::Account { id: "acc".into(), email: "a@b.co".into(), role, merchant_id: Some(m.into()) }
    }
    fn operator(role: Role) -> Principal {
        Principal::Account { id: "op".into(), email: "o@b.co".into(), role, merchant_id: None }
    }

    #[test]
    fn tenancy_and_roles() {
        let dev = member(Role::Developer, "m1");
        assert!(dev.can_see("m1").is_ok());
        assert!(matches!(dev.can_see("m2"), Err(Error::NotFound(_))));
        assert!(dev.can_manage_apps("m1").is_ok());
        assert!(dev.can_administer("m1").is_err());
        assert!(member(Role::Owner, "m1").can_administer("m1").is_ok());
        assert!(member(Role::Owner, "m1").can_administer("m2").is_err());
        let pm = operator(Role::ProductManager);
        assert!(pm.can_see("m2").is_ok());
        assert!(pm.can_manage_apps("m2").is_err());
        assert!(!pm.sees_sensitive("m2"));
        assert!(operator(Role::BusinessManager).sees_sensitive("m2"));
        assert!(pm.require(&[Role::BusinessManager], "review merchants").is_err());
        assert!(Principal::System.require(&[Role::BusinessManager], "review").is_ok());
    }
}
