//! A broker's role in its group: one type for the broker's settings, the Metadata response (one
//! byte) and the NameServer's JSON (a lowercase string).

use serde::{Deserialize, Serialize};

use crate::wire::DecodeError;

/// A broker's role in its group.
///
/// ```
/// use smq_protocol::Role;
///
/// // In the NameServer's JSON a role is a lowercase string.
/// assert_eq!(serde_json::to_string(&Role::Master).unwrap(), r#""master""#);
/// let role: Role = serde_json::from_str(r#""slave""#).unwrap();
/// assert_eq!(role, Role::Slave);
/// // In the Metadata response it is one byte.
/// assert_eq!(Role::Master.to_u8(), 0);
/// assert_eq!(Role::from_u8(1).unwrap(), Role::Slave);
/// assert!(Role::from_u8(2).is_err());
/// // In settings (`--role`, `role = "slave"`) it is the same string.
/// assert_eq!("slave".parse::<Role>().unwrap(), Role::Slave);
/// assert!("leader".parse::<Role>().unwrap_err().contains("master, slave"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Role {
    /// Takes writes; one per group.
    Master = 0,
    /// Copies its master's log and serves reads when the master is gone.
    Slave = 1,
}

impl Role {
    /// Every role, in the order of their bytes.
    pub const ALL: [Role; 2] = [Role::Master, Role::Slave];

    /// The role's byte on the wire (proto-spec.md, Metadata).
    pub fn to_u8(self) -> u8 {
        self as u8
    }

    /// The role a wire byte stands for.
    pub fn from_u8(value: u8) -> Result<Role, DecodeError> {
        match value {
            0 => Ok(Role::Master),
            1 => Ok(Role::Slave),
            _ => Err(DecodeError::InvalidValue {
                field: "role",
                value: u64::from(value),
            }),
        }
    }

    /// The role as the NameServer's JSON, the CLI's tables and `--role` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Slave => "slave",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    /// The role [`Role::as_str`] spells `text`; the error names the roles there are.
    fn from_str(text: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| format!("`{text}` is no role: one of master, slave"))
    }
}
