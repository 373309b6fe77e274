//! The `users` table: portal accounts. Passwords are hashed by the caller (`portal::users`);
//! the store only keeps the PHC string.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError};

/// One portal account.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRow {
    pub name: String,
    /// `supervisor`, `investigator`, `dpo` or `admin` (checked by the caller).
    pub role: String,
    /// argon2id PHC string.
    pub password_hash: String,
    pub created_at_ms: i64,
    pub created_by: String,
    pub password_set_at_ms: i64,
    pub disabled_at_ms: Option<i64>,
}

impl std::fmt::Debug for UserRow {
    // Not derived: the hash stays out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRow")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("disabled_at_ms", &self.disabled_at_ms)
            .finish_non_exhaustive()
    }
}

macro_rules! select_user {
    ($rest:literal) => {
        concat!(
            "SELECT name, role, password_hash, created_at_ms, created_by, password_set_at_ms, \
             disabled_at_ms FROM users",
            $rest
        )
    };
}

fn user_from_row(r: &AnyRow) -> Result<UserRow, sqlx::Error> {
    Ok(UserRow {
        name: r.try_get("name")?,
        role: r.try_get("role")?,
        password_hash: r.try_get("password_hash")?,
        created_at_ms: r.try_get("created_at_ms")?,
        created_by: r.try_get("created_by")?,
        password_set_at_ms: r.try_get("password_set_at_ms")?,
        disabled_at_ms: r.try_get("disabled_at_ms")?,
    })
}

impl Store {
    /// The account named `name`, disabled or not.
    pub async fn get_user(&self, name: &str) -> Result<Option<UserRow>, StoreError> {
        let row = sqlx::query(select_user!(" WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::query("get_user"))?;
        row.as_ref()
            .map(user_from_row)
            .transpose()
            .map_err(StoreError::query("get_user"))
    }

    /// Every account, by name.
    pub async fn list_users(&self) -> Result<Vec<UserRow>, StoreError> {
        let rows = sqlx::query(select_user!(" ORDER BY name"))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("list_users"))?;
        rows.iter()
            .map(user_from_row)
            .collect::<Result<_, _>>()
            .map_err(StoreError::query("list_users"))
    }
}

impl super::AuditTx {
    /// Inserts a new account; `false` if the name is taken (disabled accounts included).
    pub async fn insert_user(&mut self, u: &UserRow) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO users (name, role, password_hash, created_at_ms, created_by, \
             password_set_at_ms, disabled_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(u.name.as_str())
        .bind(u.role.as_str())
        .bind(u.password_hash.as_str())
        .bind(u.created_at_ms)
        .bind(u.created_by.as_str())
        .bind(u.password_set_at_ms)
        .bind(u.disabled_at_ms)
        .execute(self.conn())
        .await
        .map_err(StoreError::query("insert_user"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Replaces the password hash of an enabled account; `false` if there is none.
    pub async fn set_user_password(
        &mut self,
        name: &str,
        hash: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE users SET password_hash = $2, password_set_at_ms = $3 \
             WHERE name = $1 AND disabled_at_ms IS NULL",
        )
        .bind(name)
        .bind(hash)
        .bind(now_ms)
        .execute(self.conn())
        .await
        .map_err(StoreError::query("set_user_password"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Disables an enabled account; `false` if there is none.
    pub async fn disable_user(&mut self, name: &str, now_ms: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE users SET disabled_at_ms = $2 WHERE name = $1 AND disabled_at_ms IS NULL",
        )
        .bind(name)
        .bind(now_ms)
        .execute(self.conn())
        .await
        .map_err(StoreError::query("disable_user"))?;
        Ok(done.rows_affected() == 1)
    }
}
