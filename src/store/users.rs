//! Users: SIP digest credentials, kept as HA1 hashes (RFC 7616 §3.4.2), never as passwords.
//!
//! Both `MD5(name:realm:password)` and `SHA-256(name:realm:password)` are stored so the relay
//! can challenge with either algorithm without ever holding the password.

use md5::Md5;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::entities::users;
use super::{new_id, now_ms, Store, StoreError};

/// A user as the operator sees it; the HA1 hashes are only in the relay's
/// [`Directory`](super::Directory).
#[derive(Debug, Clone, Serialize)]
pub struct UserRecord {
    pub id: String,
    pub name: String,
    pub realm: String,
    pub created_at: i64,
}

impl From<users::Model> for UserRecord {
    fn from(m: users::Model) -> Self {
        UserRecord {
            id: m.id,
            name: m.name,
            realm: m.realm,
            created_at: m.created_at,
        }
    }
}

/// `(MD5, SHA-256)` of `name:realm:password`, lowercase hex.
fn ha1_hashes(name: &str, realm: &str, password: &str) -> (String, String) {
    let input = format!("{name}:{realm}:{password}");
    (
        hex::encode(Md5::digest(input.as_bytes())),
        hex::encode(Sha256::digest(input.as_bytes())),
    )
}

fn validate_user_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty() {
        return Err(StoreError::Invalid("user name must not be empty".into()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == ':' || *c == '@' || c.is_whitespace() || c.is_control())
    {
        return Err(StoreError::Invalid(format!(
            "user name {name:?} must not contain {c:?}"
        )));
    }
    Ok(())
}

fn validate_credentials(realm: &str, password: &str) -> Result<(), StoreError> {
    if realm.trim().is_empty() {
        return Err(StoreError::Invalid("realm must not be empty".into()));
    }
    if realm.contains('"') || realm.chars().any(char::is_control) {
        return Err(StoreError::Invalid(format!(
            "realm {realm:?} must not contain quotes or control characters"
        )));
    }
    if password.is_empty() {
        return Err(StoreError::Invalid("password must not be empty".into()));
    }
    Ok(())
}

impl Store {
    /// Adds a user who authenticates with `password` in `realm`. Only the HA1 hashes are stored.
    pub async fn add_user(
        &self,
        name: &str,
        realm: &str,
        password: &str,
    ) -> Result<UserRecord, StoreError> {
        validate_user_name(name)?;
        validate_credentials(realm, password)?;
        let (ha1_md5, ha1_sha256) = ha1_hashes(name, realm, password);
        let model = users::ActiveModel {
            id: Set(new_id()),
            name: Set(name.to_owned()),
            realm: Set(realm.to_owned()),
            ha1_md5: Set(ha1_md5),
            ha1_sha256: Set(ha1_sha256),
            created_at: Set(now_ms()),
        };
        let inserted = model.insert(&self.db).await.map_err(|e| {
            StoreError::conflict_on_unique(e, || format!("user {name} already exists"))
        })?;
        Ok(inserted.into())
    }

    /// Replaces a user's credentials (the realm may change with the password).
    pub async fn set_password(
        &self,
        name: &str,
        realm: &str,
        password: &str,
    ) -> Result<(), StoreError> {
        validate_credentials(realm, password)?;
        let (ha1_md5, ha1_sha256) = ha1_hashes(name, realm, password);
        let updated = users::Entity::update_many()
            .set(users::ActiveModel {
                realm: Set(realm.to_owned()),
                ha1_md5: Set(ha1_md5),
                ha1_sha256: Set(ha1_sha256),
                ..Default::default()
            })
            .filter(users::Column::Name.eq(name))
            .exec(&self.db)
            .await?;
        if updated.rows_affected == 0 {
            return Err(no_user(name));
        }
        Ok(())
    }

    /// Removes a user.
    pub async fn remove_user(&self, name: &str) -> Result<(), StoreError> {
        let deleted = users::Entity::delete_many()
            .filter(users::Column::Name.eq(name))
            .exec(&self.db)
            .await?;
        if deleted.rows_affected == 0 {
            return Err(no_user(name));
        }
        Ok(())
    }

    /// Every user, by name.
    pub async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let rows = users::Entity::find()
            .order_by_asc(users::Column::Name)
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(UserRecord::from).collect())
    }
}

fn no_user(name: &str) -> StoreError {
    StoreError::NotFound(format!("no user named {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ha1_is_md5_and_sha256_of_name_realm_password() {
        let (md5, sha256) = ha1_hashes("alice", "portal.com", "secret");
        assert_eq!(md5.len(), 32);
        assert_eq!(sha256.len(), 64);
        // RFC 2617 §3.5's worked example: HA1 for Mufasa / testrealm@host.com / Circle Of Life.
        let (md5, _) = ha1_hashes("Mufasa", "testrealm@host.com", "Circle Of Life");
        assert_eq!(md5, "939e7578ed9e3c518a452acee763bce9");
    }

    #[test]
    fn user_names_reject_separators() {
        for bad in ["", "a:b", "a b", "a@b", "a\tb"] {
            assert!(matches!(
                validate_user_name(bad),
                Err(StoreError::Invalid(_))
            ));
        }
        assert!(validate_user_name("alice").is_ok());
    }
}
