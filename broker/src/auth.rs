//! Who may do what on this broker: the principals of the configuration (a name, the SHA-256 of
//! a secret, and per action the topics it may act on), the check of a handshake's credential,
//! and the check of every request against the connection's principal. No principals: open.

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use smq_protocol::credential::{constant_time_eq, Credential};
use smq_protocol::Request;

use crate::handlers::HandlerError;

/// A principal as the TOML file gives it (`[[principals]]`).
///
/// ```toml
/// [[principals]]
/// name = "orders-app"
/// secret_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
/// produce = ["orders", "audit.*"]
/// consume = ["orders"]
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalConfig {
    pub name: String,
    /// The secret itself; prefer `secret_sha256`.
    #[serde(default)]
    pub secret: Option<String>,
    /// SHA-256 of the secret, 64 hex digits (`printf %s "$SECRET" | sha256sum`).
    #[serde(default)]
    pub secret_sha256: Option<String>,
    /// Topics it may produce to: names, or prefixes ending in `*` (`"*"`: every topic).
    #[serde(default)]
    pub produce: Vec<String>,
    /// Topics it may fetch from, list offsets of, and commit and fetch consumer offsets of.
    #[serde(default)]
    pub consume: Vec<String>,
    /// Topics it may create and delete.
    #[serde(default)]
    pub admin: Vec<String>,
    /// Whether it may replicate this broker's log (a slave's principal).
    #[serde(default)]
    pub replicate: bool,
}

/// What a request asks to do to a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Produce,
    Consume,
    Admin,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Produce => "produce to",
            Action::Consume => "consume from",
            Action::Admin => "administer (create or delete)",
        })
    }
}

/// A topic name, or a prefix (written with a final `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum TopicPattern {
    Exact(String),
    Prefix(String),
}

impl TopicPattern {
    fn parse(text: &str) -> TopicPattern {
        match text.strip_suffix('*') {
            Some(prefix) => TopicPattern::Prefix(prefix.to_owned()),
            None => TopicPattern::Exact(text.to_owned()),
        }
    }

    fn matches(&self, topic: &str) -> bool {
        match self {
            TopicPattern::Exact(name) => name == topic,
            TopicPattern::Prefix(prefix) => topic.starts_with(prefix.as_str()),
        }
    }
}

/// One principal, checked.
#[derive(Debug)]
pub struct Principal {
    pub name: String,
    secret_sha256: [u8; 32],
    produce: Vec<TopicPattern>,
    consume: Vec<TopicPattern>,
    admin: Vec<TopicPattern>,
    replicate: bool,
}

impl Principal {
    fn from_config(config: &PrincipalConfig) -> Result<Principal, String> {
        Credential::new(config.name.clone(), "x")
            .map_err(|error| format!("principal name {:?}: {error}", config.name))?;
        let secret_sha256 = match (&config.secret, &config.secret_sha256) {
            (Some(secret), None) if !secret.is_empty() => sha256(secret.as_bytes()),
            (None, Some(hex)) => parse_sha256(hex).ok_or_else(|| {
                format!(
                    "principal {}: secret_sha256 must be 64 hex digits (printf %s \"$SECRET\" | sha256sum)",
                    config.name
                )
            })?,
            _ => {
                return Err(format!(
                    "principal {}: give exactly one of secret and secret_sha256 (not empty)",
                    config.name
                ))
            }
        };
        let patterns = |list: &[String]| list.iter().map(|p| TopicPattern::parse(p)).collect();
        Ok(Principal {
            name: config.name.clone(),
            secret_sha256,
            produce: patterns(&config.produce),
            consume: patterns(&config.consume),
            admin: patterns(&config.admin),
            replicate: config.replicate,
        })
    }

    fn may(&self, action: Action, topic: &str) -> bool {
        let patterns = match action {
            Action::Produce => &self.produce,
            Action::Consume => &self.consume,
            Action::Admin => &self.admin,
        };
        patterns.iter().any(|pattern| pattern.matches(topic))
    }
}

/// Who a connection is: anyone (a broker without principals), or an authenticated principal.
#[derive(Debug, Clone)]
pub enum Access {
    Open,
    Principal(Arc<Principal>),
}

impl Access {
    /// Whether this connection may send `request`; the error names principal, action and topic.
    pub fn check(&self, request: &Request) -> Result<(), HandlerError> {
        match required(request) {
            Some((action, topic)) => self.check_topic(action, topic),
            None => Ok(()),
        }
    }

    /// Whether this connection may `action` on `topic` (each entry of a Produce v2, whose
    /// entries are answered apart).
    pub fn check_topic(&self, action: Action, topic: &str) -> Result<(), HandlerError> {
        let Access::Principal(principal) = self else {
            return Ok(());
        };
        if principal.may(action, topic) {
            Ok(())
        } else {
            Err(HandlerError::NotAuthorized {
                principal: principal.name.clone(),
                what: format!("{action} topic {topic}"),
            })
        }
    }

    /// Whether this connection may act on every topic as an administrator (`admin = ["*"]`):
    /// what changing the broker's role (HandOver, Promote) needs.
    pub fn check_admin_all(&self, what: &str) -> Result<(), HandlerError> {
        match self {
            Access::Open => Ok(()),
            // Only the pattern `*` (an empty prefix) matches the empty name.
            Access::Principal(principal) if principal.may(Action::Admin, "") => Ok(()),
            Access::Principal(principal) => Err(HandlerError::NotAuthorized {
                principal: principal.name.clone(),
                what: format!("{what} (it needs `admin = [\"*\"]`)"),
            }),
        }
    }

    /// Whether this connection may replicate the broker's log (ReplicaHello).
    pub fn check_replicate(&self) -> Result<(), HandlerError> {
        match self {
            Access::Open => Ok(()),
            Access::Principal(principal) if principal.replicate => Ok(()),
            Access::Principal(principal) => Err(HandlerError::NotAuthorized {
                principal: principal.name.clone(),
                what: "replicate this broker's log (it needs `replicate = true`)".into(),
            }),
        }
    }
}

/// The action and topic a request needs permission for; `None`: any authenticated principal
/// may send it (Metadata, Handshake).
fn required(request: &Request) -> Option<(Action, &str)> {
    match request {
        Request::Produce(r) => Some((Action::Produce, &r.topic)),
        // Each entry's topic is checked by the produce handler, which answers entries apart.
        Request::ProduceMany(_) => None,
        Request::Fetch(r) => Some((Action::Consume, &r.topic)),
        Request::ListOffsets(r) => Some((Action::Consume, &r.topic)),
        Request::CommitOffset(r) => Some((Action::Consume, &r.topic)),
        Request::FetchOffset(r) => Some((Action::Consume, &r.topic)),
        Request::CreateTopic(r) => Some((Action::Admin, &r.topic)),
        Request::DeleteTopic(r) => Some((Action::Admin, &r.topic)),
        Request::Metadata(_) | Request::Handshake(_) => None,
    }
}

/// The broker's principals; empty: every connection may do everything.
#[derive(Debug, Default)]
pub struct Principals {
    principals: Vec<Arc<Principal>>,
}

impl Principals {
    /// Checks every principal of the configuration; names must be unique.
    pub fn from_config(configs: &[PrincipalConfig]) -> Result<Principals, String> {
        let mut principals: Vec<Arc<Principal>> = Vec::with_capacity(configs.len());
        for config in configs {
            let principal = Principal::from_config(config)?;
            if principals.iter().any(|p| p.name == principal.name) {
                return Err(format!("principal {} is listed twice", principal.name));
            }
            principals.push(Arc::new(principal));
        }
        Ok(Principals { principals })
    }

    /// Whether any principal is configured (else the broker is open).
    pub fn is_enabled(&self) -> bool {
        !self.principals.is_empty()
    }

    /// Who the handshake's `auth_token` says the peer is. An open broker ignores it.
    pub fn authenticate(&self, auth_token: &[u8]) -> Result<Access, HandlerError> {
        if !self.is_enabled() {
            return Ok(Access::Open);
        }
        if auth_token.is_empty() {
            return Err(HandlerError::AuthenticationFailed(
                "this broker requires a credential: give the client --credential NAME:SECRET \
                 (or SMQ_CREDENTIAL, or --credential-file)"
                    .into(),
            ));
        }
        let credential = Credential::from_auth_token(auth_token).map_err(|error| {
            HandlerError::AuthenticationFailed(format!(
                "the credential is not NAME:SECRET: {error}"
            ))
        })?;
        let presented = sha256(credential.secret().as_bytes());
        // Every principal's hash is compared, so the time taken says nothing about which matched.
        let found = self.principals.iter().fold(None, |found, principal| {
            let matches = principal.name == credential.name()
                && constant_time_eq(&principal.secret_sha256, &presented);
            found.or(matches.then(|| principal.clone()))
        });
        found.map(Access::Principal).ok_or_else(|| {
            HandlerError::AuthenticationFailed(format!(
                "principal {} is unknown or its secret is wrong",
                credential.name()
            ))
        })
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use smq_protocol::request::{CreateTopicRequest, DeleteTopicRequest, MetadataRequest};

    fn principals() -> Principals {
        let config = |name: &str, produce: &[&str], admin: &[&str]| PrincipalConfig {
            name: name.into(),
            secret: Some(format!("{name}-secret")),
            secret_sha256: None,
            produce: produce.iter().map(|s| s.to_string()).collect(),
            consume: vec![],
            admin: admin.iter().map(|s| s.to_string()).collect(),
            replicate: false,
        };
        let mut hashed = config("ops", &[], &["*"]);
        hashed.secret = None;
        // sha256("ops-secret")
        hashed.secret_sha256 = Some(format!("{:x}", Sha256::digest(b"ops-secret")));
        Principals::from_config(&[config("app", &["orders", "audit.*"], &[]), hashed]).unwrap()
    }

    fn token(text: &str) -> Vec<u8> {
        text.as_bytes().to_vec()
    }

    #[test]
    fn only_a_known_name_with_its_secret_authenticates() {
        let principals = principals();
        assert!(principals.authenticate(&token("app:app-secret")).is_ok());
        assert!(principals.authenticate(&token("ops:ops-secret")).is_ok());
        for bad in [
            "",
            "app:b4d-s3cret",
            "nobody:app-secret",
            "app:ops-secret",
            "garbage",
        ] {
            let error = principals.authenticate(&token(bad)).unwrap_err();
            assert_eq!(
                error.code(),
                smq_protocol::ErrorCode::AuthenticationFailed,
                "{bad}"
            );
            if let Some((_, secret)) = bad.split_once(':') {
                assert!(!error.to_string().contains(secret), "{error}");
            }
        }
        assert!(matches!(
            Principals::default().authenticate(b""),
            Ok(Access::Open)
        ));
    }

    #[test]
    fn permissions_cover_names_and_prefixes_and_refusals_name_principal_action_and_topic() {
        let app = principals().authenticate(&token("app:app-secret")).unwrap();
        let produce = |topic: &str| {
            Request::Produce(smq_protocol::request::ProduceRequest {
                topic: topic.into(),
                queue_id: 0,
                acks: smq_protocol::request::Acks::Written,
                timeout_ms: 0,
                batch: bytes::Bytes::new(),
            })
        };
        assert!(app.check(&produce("orders")).is_ok());
        assert!(app.check(&produce("audit.eu")).is_ok());
        let error = app.check(&produce("ordersx")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "principal app may not produce to topic ordersx"
        );
        let create = Request::CreateTopic(CreateTopicRequest {
            topic: "orders".into(),
            queue_count: 1,
        });
        assert_eq!(
            app.check(&create).unwrap_err().code(),
            smq_protocol::ErrorCode::NotAuthorized
        );
        assert!(app
            .check(&Request::Metadata(MetadataRequest::default()))
            .is_ok());
        assert!(app.check_replicate().is_err());
        let ops = principals().authenticate(&token("ops:ops-secret")).unwrap();
        let delete = Request::DeleteTopic(DeleteTopicRequest {
            topic: "anything".into(),
        });
        assert!(ops.check(&delete).is_ok());
        assert!(ops.check(&produce("orders")).is_err());
    }

    #[test]
    fn a_principal_needs_exactly_one_valid_secret_and_a_unique_name() {
        let mut config = PrincipalConfig {
            name: "a".into(),
            secret: None,
            secret_sha256: None,
            produce: vec![],
            consume: vec![],
            admin: vec![],
            replicate: false,
        };
        assert!(Principals::from_config(&[config.clone()]).is_err());
        config.secret_sha256 = Some("abc".into());
        assert!(Principals::from_config(&[config.clone()])
            .unwrap_err()
            .contains("64 hex digits"));
        config.secret_sha256 = None;
        config.secret = Some("s".into());
        let twice = Principals::from_config(&[config.clone(), config]).unwrap_err();
        assert!(twice.contains("listed twice"), "{twice}");
    }
}
