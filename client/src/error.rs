//! The client's one error type: what went wrong, with the facts, and whether retrying can help.

use std::time::Duration;

use crate::protocol::frame::FrameError;
use crate::protocol::{ApiKey, DecodeError, ErrorCode, ErrorResponse};

/// Everything a [`Producer`](crate::Producer), [`Consumer`](crate::Consumer) or
/// [`Admin`](crate::Admin) call can fail with. Each variant names what happened and carries the
/// facts; [`Error::is_retryable`] says whether sending the same request again may succeed.
///
/// ```
/// use smq_client::protocol::{ApiKey, ErrorCode};
/// use smq_client::Error;
///
/// let error = Error::broker(ApiKey::Produce, ErrorCode::FlushTimeout, "flush took 5001 ms");
/// assert!(error.is_retryable());
/// assert_eq!(error.code(), Some(ErrorCode::FlushTimeout));
/// let error = Error::MessageTooLarge { bytes: 5 << 20, limit_bytes: 4 << 20 };
/// assert!(!error.is_retryable());
/// ```
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The broker answered a request with an error code (proto-spec.md, "Error codes").
    #[error("{api:?} failed on broker {broker}: {response}")]
    Broker {
        api: ApiKey,
        broker: String,
        response: ErrorResponse,
    },
    /// The TCP connection to the broker could not be opened.
    #[error("cannot connect to broker {broker} (is a broker listening there? check --broker / SMQ_BROKER, or `smq cluster` for the brokers the NameServer knows)")]
    Connect {
        broker: String,
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
    /// The TLS handshake with the broker failed: its certificate is not trusted, it does not
    /// speak TLS, or it wants a client certificate; the message says which.
    #[error("{0}")]
    Tls(smq_tls::TlsError),
    /// The connection failed or the broker closed it; requests sent on it have no answer.
    #[error("connection to broker {broker} lost: {reason}")]
    ConnectionClosed { broker: String, reason: String },
    /// No answer came within the time allowed.
    #[error("{what} on broker {broker} got no answer within {} ms", after.as_millis())]
    Timeout {
        what: String,
        broker: String,
        after: Duration,
    },
    /// The broker sent bytes this client cannot read: a bug on one side, or not an smq broker.
    /// The message ends with `reason` (the codec's [`DecodeError`] or [`FrameError`], or what
    /// did not fit the request), which is therefore no `source` too: each cause is said once.
    #[error("unreadable {what} from broker {broker}: {reason}")]
    Protocol {
        what: String,
        broker: String,
        reason: ProtocolViolation,
    },
    /// The topic does not exist on the broker.
    #[error("topic `{topic}` does not exist on broker {broker}: create it with `smq topic create {topic}`")]
    UnknownTopic { topic: String, broker: String },
    /// No broker to send to or read from for the topic: the NameServer knows no route to it, no
    /// group has a live master, or no NameServer answered before any route was cached.
    #[error("no route to topic `{topic}`: {reason}")]
    NoRoute { topic: String, reason: String },
    /// A batch of keyed messages got no answer from its queue's broker group (the connection
    /// was lost, no answer came in time, or the broker could not store it). The messages were
    /// not moved to another queue, which would break their key's order; they may or may not be
    /// stored. Send them again once the group has a master (retryable). The message says
    /// `cause` (what the group answered, or why it did not), which is therefore no `source` too:
    /// each cause is said once, under `{error}` as under `{error:#}`.
    #[error(
        "broker group {group} did not acknowledge keyed messages for queue {queue_id} of topic \
         `{topic}`: {cause}; a keyed message stays in its key's queue: send it again once the \
         group has a master"
    )]
    GroupUnavailable {
        topic: String,
        group: String,
        queue_id: u32,
        cause: Box<Error>,
    },
    /// A message is larger than the broker accepts; checked before anything is sent.
    #[error(
        "message of {bytes} bytes is above the broker's limit of {limit_bytes} bytes: shrink it"
    )]
    MessageTooLarge { bytes: usize, limit_bytes: usize },
    /// An argument or setting makes no sense; the message names it.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The producer or consumer was closed, or its background task stopped.
    #[error("{0} is closed")]
    Closed(&'static str),
}

impl Error {
    /// A broker's error answer to `api`, for code that builds errors by hand (tests, examples).
    pub fn broker(api: ApiKey, code: ErrorCode, message: impl Into<String>) -> Error {
        Error::Broker {
            api,
            broker: String::new(),
            response: ErrorResponse::new(code, message),
        }
    }

    /// Whether sending the same request again may succeed (after a pause, a reconnect or a route
    /// refresh). Broker errors follow their code's table; lost connections and timeouts are
    /// retryable (a retried Produce may then store its batch twice); bad input is not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Broker { response, .. } => response.is_retryable(),
            Error::Tls(error) => error.is_transient(),
            Error::Connect { .. }
            | Error::ConnectionClosed { .. }
            | Error::Timeout { .. }
            | Error::UnknownTopic { .. }
            | Error::NoRoute { .. }
            | Error::GroupUnavailable { .. } => true,
            Error::Protocol { .. }
            | Error::MessageTooLarge { .. }
            | Error::InvalidArgument(_)
            | Error::Closed(_) => false,
        }
    }

    /// The broker's error code, when the broker answered with one this build knows.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Broker { response, .. } => response.error_code(),
            Error::GroupUnavailable { cause, .. } => cause.code(),
            _ => None,
        }
    }

    pub(crate) fn from_response(api: ApiKey, broker: &str, response: ErrorResponse) -> Error {
        Error::Broker {
            api,
            broker: broker.to_owned(),
            response,
        }
    }

    pub(crate) fn decode(what: impl Into<String>, broker: &str, error: DecodeError) -> Error {
        Error::Protocol {
            what: what.into(),
            broker: broker.to_owned(),
            reason: error.into(),
        }
    }

    /// An answer of another api than `api`'s request (a broker bug).
    pub(crate) fn wrong_api(api: ApiKey, broker: &str) -> Error {
        Error::Protocol {
            what: format!("{api:?} response"),
            broker: broker.to_owned(),
            reason: ProtocolViolation::WrongApi,
        }
    }

    pub(crate) fn frame(broker: &str, error: FrameError) -> Error {
        Error::Protocol {
            what: "response frame".to_owned(),
            broker: broker.to_owned(),
            reason: error.into(),
        }
    }
}

/// What was wrong with the bytes of an [`Error::Protocol`]: the codec's own error where the codec
/// refused them, else what did not fit the request.
///
/// ```
/// use smq_client::error::ProtocolViolation;
/// use smq_client::protocol::DecodeError;
///
/// let violation = ProtocolViolation::from(DecodeError::TrailingBytes { count: 3 });
/// assert!(matches!(violation, ProtocolViolation::Decode(DecodeError::TrailingBytes { count: 3 })));
/// assert_eq!(violation.to_string(), DecodeError::TrailingBytes { count: 3 }.to_string());
/// ```
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProtocolViolation {
    /// A response body the codec could not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A response frame the codec refused (too large, too small).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A well-formed answer of another api than the request's.
    #[error("the response does not match the request's api")]
    WrongApi,
    /// A fetched batch that is damaged, cut or of another queue.
    #[error(transparent)]
    Batch(#[from] crate::consumer::FetchedBatchError),
    /// Well-formed bytes that do not fit the request: a version or a count that contradicts
    /// what was asked.
    #[error("{0}")]
    Mismatch(String),
}

/// What every fallible call of this crate returns.
///
/// ```
/// use smq_client::{Error, Result};
///
/// fn queue_count(text: &str) -> Result<u32> {
///     text.parse()
///         .map_err(|_| Error::InvalidArgument(format!("{text:?} is not a queue count")))
/// }
/// assert_eq!(queue_count("8").unwrap(), 8);
/// assert!(!queue_count("many").unwrap_err().is_retryable());
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_unavailable_error_says_its_cause_once_in_the_chain() {
        let error = Error::GroupUnavailable {
            topic: "t".to_owned(),
            group: "g1".to_owned(),
            queue_id: 3,
            cause: Box::new(Error::Closed("the lane")),
        };
        // What `{error:#}` prints through anyhow: each error of the chain, joined by ": ".
        let chain: Vec<String> =
            std::iter::successors(Some(&error as &dyn std::error::Error), |e| e.source())
                .map(ToString::to_string)
                .collect();
        let chain = chain.join(": ");
        assert_eq!(chain.matches("the lane is closed").count(), 1, "{chain}");
        // Said in the message itself, for callers that print `{error}`.
        assert_eq!(chain, error.to_string());
        assert!(
            chain.contains("broker group g1 did not acknowledge"),
            "{chain}"
        );
    }

    #[test]
    fn broker_errors_are_retryable_exactly_when_their_code_is() {
        for code in ErrorCode::ALL.into_iter().skip(1) {
            let error = Error::broker(ApiKey::Produce, code, "x");
            assert_eq!(error.is_retryable(), code.is_retryable(), "{code}");
            assert_eq!(error.code(), Some(code));
        }
    }

    #[test]
    fn unknown_broker_code_is_not_retryable_and_shows_its_number() {
        let error = Error::Broker {
            api: ApiKey::Fetch,
            broker: "127.0.0.1:10911".to_owned(),
            response: ErrorResponse {
                code: 999,
                message: "from the future".to_owned(),
            },
        };
        assert!(!error.is_retryable());
        assert_eq!(error.code(), None);
        let text = error.to_string();
        assert!(
            text.contains("999") && text.contains("from the future"),
            "{text}"
        );
    }

    #[test]
    fn lost_connections_and_timeouts_are_retryable_but_bad_input_is_not() {
        let lost = Error::ConnectionClosed {
            broker: "b".into(),
            reason: "closed by the broker".into(),
        };
        let timeout = Error::Timeout {
            what: "Produce".into(),
            broker: "b".into(),
            after: Duration::from_secs(1),
        };
        assert!(lost.is_retryable() && timeout.is_retryable());
        let too_large = Error::MessageTooLarge {
            bytes: 5,
            limit_bytes: 4,
        };
        assert!(!too_large.is_retryable());
        assert!(!Error::InvalidArgument("queues must be at least 1".into()).is_retryable());
        assert!(too_large
            .to_string()
            .contains("above the broker's limit of 4 bytes"));
    }

    #[test]
    fn unknown_topic_says_how_to_create_it() {
        let error = Error::UnknownTopic {
            topic: "orders".into(),
            broker: "127.0.0.1:10911".into(),
        };
        assert!(error.to_string().contains("smq topic create orders"));
    }
}
