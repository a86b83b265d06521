//! smq's client library: a [`Producer`], a [`Consumer`] and an [`Admin`] that talk to brokers
//! over their binary TCP protocol, and the wire codec the broker shares ([`protocol`]). Producer
//! and consumer find a topic's brokers through the NameServer ([`ClientConfig::nameserver`],
//! [`routing`]) or talk to one broker ([`ClientConfig::broker`]).
//!
//! Every call returns [`Error`], which says what happened and whether retrying can help.
//!
//! ```no_run
//! # async fn example() -> smq_client::Result<()> {
//! use smq_client::{Admin, ClientConfig, Consumer, Message, Producer, StartFrom};
//!
//! let config = ClientConfig::new("127.0.0.1:10911");
//! Admin::connect(config.clone()).await?.create_topic("orders", 4).await?;
//!
//! let producer = Producer::connect(config.clone()).await?;
//! let delivery = producer.send("orders", Message::from_body("order 17 paid")).await?;
//! println!("queue {} offset {}", delivery.queue_id, delivery.offset);
//!
//! let mut consumer = Consumer::connect(config, "orders", Some("billing"), StartFrom::Earliest).await?;
//! for message in consumer.poll(100).await? {
//!     println!("{}", String::from_utf8_lossy(&message.body));
//! }
//! consumer.commit().await?;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod connection;
pub mod consumer;
pub mod credential;
pub mod discovery;
pub mod error;
pub mod membership;
pub mod nameserver_client;
pub mod peer_log;
pub mod producer;
pub mod promote;
pub mod routing;

#[cfg(test)]
mod dead_peer_tests;

/// The wire codec, shared with the broker: the `smq-protocol` crate.
pub use smq_protocol as protocol;
/// The serde types of the NameServer's JSON, shared with the NameServer.
pub use smq_protocol::nameserver_api;

use std::sync::Arc;
use std::time::Duration;

pub use admin::{Admin, ClusterError};
pub use consumer::{ConsumedMessage, Consumer, OffsetReset, QueueKey, ResetReason, StartFrom};
pub use credential::Credential;
pub use error::{Error, Result};
pub use producer::{Delivery, PendingDelivery, Producer, ProducerMetrics};
pub use protocol::record_batch::Message;
pub use protocol::request::Acks;
/// TLS settings from PEM files: the `smq-tls` crate.
pub use smq_tls as tls;
pub use smq_tls::ClientTls;

use connection::ConnectionOptions;
use nameserver_client::NameServerClient;
use protocol::limits::{MAX_BATCH_BYTES_DEFAULT, MAX_FETCH_BYTES_DEFAULT};
use routing::{RouteCache, RouteSource};

/// How to reach the broker and how the producer and consumer behave. Start from
/// [`ClientConfig::new`] and change the fields you need.
///
/// ```
/// use smq_client::{Acks, ClientConfig};
///
/// let mut config = ClientConfig::new("127.0.0.1:10911");
/// config.acks = Acks::Flushed;
/// config.linger_ms = 0;
/// assert_eq!(config.broker, "127.0.0.1:10911");
/// ```
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` of the broker (`--broker` / `SMQ_BROKER`), used when `nameserver` is `None`.
    pub broker: String,
    /// Where producers and consumers learn which brokers hold a topic's queues (`--nameserver`,
    /// `--srv`); `None` talks to `broker` alone. See [`ClientConfig::with_nameserver`].
    pub nameserver: Option<NameServerClient>,
    /// How often a topic's routes are asked again from the NameServer, in the background; they
    /// are also asked again after any routing error.
    pub route_refresh_ms: u64,
    /// How long the first use of a topic waits for a NameServer that can answer its route (one
    /// down, fenced or warming up during a failover is asked again, re-resolving DNS between
    /// tries); 0 asks once. A topic the NameServer says does not exist fails at once.
    pub route_wait_ms: u64,
    /// Sent in the handshake; shows in the broker's logs.
    pub client_id: String,
    /// The principal this client authenticates as in every handshake; `None` is anonymous,
    /// which only brokers without principals accept. [`ClientConfig::new`] and
    /// [`ClientConfig::with_nameserver`] take it from the environment, as the CLI does:
    /// `SMQ_CREDENTIAL` (`NAME:SECRET`), else the file `SMQ_CREDENTIAL_FILE` names
    /// ([`credential::from_env`]); set this field to use another (or `None`: anonymous). A
    /// malformed variable or an unreadable file fails [`ClientConfig::validate`], and so every
    /// connect, unless this field was set.
    pub credential: Option<Credential>,
    /// TLS to the brokers, trusting the CA it was made from (`--tls-ca` / `SMQ_TLS_CA`:
    /// [`smq_tls::ClientTls::from_ca_file`]); `None`: plain TCP. Give the NameServer client its
    /// own with [`NameServerClient::with_tls`].
    pub tls: Option<ClientTls>,
    /// How long a request may wait for its answer (a Fetch gets its long-poll wait on top).
    pub request_timeout_ms: u64,
    /// Most requests sent on a connection and not yet answered.
    pub max_in_flight_requests: usize,
    /// When the broker acknowledges a produced batch: written (in its log), flushed (fsynced),
    /// or replicated. A broker running with `--flush sync` flushes every append anyway.
    pub acks: Acks,
    /// How long the broker may wait for the flush or the slave before it answers with an error.
    pub ack_timeout_ms: u32,
    /// How long one attempt to send a batch (and to connect for it) waits for the broker's
    /// answer; then a batch of messages without a key is sent again to another broker group.
    /// Above `ack_timeout_ms`, so that a broker's own timeout answers first.
    pub attempt_timeout_ms: u64,
    /// How long a produced message may take, every attempt included, from when the producer
    /// accepted it (its batch's first message); then it fails with [`Error::Timeout`].
    pub send_timeout_ms: u64,
    /// How long a message may wait for more to fill its batch; 0 sends a batch as soon as the
    /// producer has nothing more at hand.
    pub linger_ms: u64,
    /// A batch is sent once it holds this many bytes (at most 16 MiB).
    pub batch_bytes: usize,
    /// Messages without a key stick to one queue of their topic until this many bytes went
    /// there, then move on to the next (Kafka's sticky partitioner): fuller batches when a topic
    /// has many queues, the same share for every queue over time. 0: they go to the topic's
    /// queues in turn, one message each.
    pub sticky_queue_bytes: usize,
    /// Most bytes of messages a producer holds unacknowledged; sending waits above it.
    pub buffer_bytes: usize,
    /// Most bytes one fetch asks for (the broker caps it at 16 MiB).
    pub fetch_max_bytes: u32,
    /// How long the broker holds a fetch when no new message is there (long polling).
    pub fetch_max_wait_ms: u32,
    /// How often a consumer commits what the application received, by itself (in
    /// [`Consumer::poll`]).
    pub commit_interval_ms: u64,
    /// A consumer group member's queues go to the other members this long after its last
    /// heartbeat to the NameServer (when it dies without leaving).
    pub session_timeout_ms: u64,
    /// Why the builder could not take the credential from the environment, if it could not.
    credential_env_error: Option<Error>,
}

impl ClientConfig {
    /// Defaults for a broker at `broker`: 30 s request timeout, 32 requests in flight, acks
    /// written, a produce attempt 10 s and a send at most 30 s, linger 1 ms, 256 KiB batches,
    /// messages without a key 16 KiB to a queue before the next, 64 MiB buffer, 4 MiB fetches
    /// held up to 500 ms.
    pub fn new(broker: impl Into<String>) -> ClientConfig {
        let (credential, credential_env_error) = match credential::from_env() {
            Ok(credential) => (credential, None),
            Err(error) => (None, Some(error)),
        };
        ClientConfig {
            credential,
            credential_env_error,
            broker: broker.into(),
            nameserver: None,
            route_refresh_ms: 30_000,
            route_wait_ms: nameserver_client::ROUTE_WAIT_MS_DEFAULT,
            client_id: format!("smq-client-{}", std::process::id()),
            tls: None,
            request_timeout_ms: 30_000,
            max_in_flight_requests: 32,
            acks: Acks::Written,
            ack_timeout_ms: 5_000,
            attempt_timeout_ms: 10_000,
            send_timeout_ms: 30_000,
            linger_ms: 1,
            batch_bytes: 256 * 1024,
            sticky_queue_bytes: producer::STICKY_QUEUE_BYTES_DEFAULT,
            buffer_bytes: 64 * 1024 * 1024,
            fetch_max_bytes: 4 * 1024 * 1024,
            fetch_max_wait_ms: 500,
            commit_interval_ms: 1_000,
            session_timeout_ms: nameserver_api::SESSION_TIMEOUT_MS_DEFAULT,
        }
    }

    /// Defaults for a cluster whose NameServers `nameserver` finds: producers and consumers take
    /// each topic's routes from it, cache them, and keep using them while no NameServer answers.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use smq_client::discovery::{Discovery, DiscoveryMode, DiscoveryOptions};
    /// use smq_client::nameserver_client::NameServerClient;
    /// use smq_client::{ClientConfig, Message, Producer};
    ///
    /// let mode = DiscoveryMode::Srv { name: "_smq-ns._tcp.example.com".into(), dns_server: None };
    /// let discovery = Arc::new(Discovery::new(mode, DiscoveryOptions::default())?);
    /// let config = ClientConfig::with_nameserver(NameServerClient::new(discovery));
    /// let producer = Producer::connect(config).await?;
    /// producer.send("orders", Message::from_body("order 17 paid")).await?;
    /// # Ok(()) }
    /// ```
    pub fn with_nameserver(nameserver: NameServerClient) -> ClientConfig {
        ClientConfig {
            nameserver: Some(nameserver),
            ..ClientConfig::new("")
        }
    }

    /// Checks that every setting is within its bounds.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(Error::InvalidArgument(reason));
        if let (Some(error), None) = (&self.credential_env_error, &self.credential) {
            return Err(error.clone());
        }
        if self.broker.is_empty() && self.nameserver.is_none() {
            return invalid(
                "no broker address and no NameServer: set --broker, --nameserver or --srv".into(),
            );
        }
        if self.route_refresh_ms == 0 {
            return invalid("route refresh interval must be at least 1 ms".into());
        }
        if self.max_in_flight_requests == 0 {
            return invalid("max in-flight requests must be at least 1".into());
        }
        if self.batch_bytes == 0 || self.batch_bytes > MAX_BATCH_BYTES_DEFAULT {
            return invalid(format!(
                "batch bytes {}: must be 1 to {MAX_BATCH_BYTES_DEFAULT}",
                self.batch_bytes
            ));
        }
        if self.buffer_bytes == 0 {
            return invalid("buffer bytes must be at least 1".into());
        }
        if self.fetch_max_bytes == 0 || self.fetch_max_bytes as usize > MAX_FETCH_BYTES_DEFAULT {
            return invalid(format!(
                "fetch max bytes {}: must be 1 to {MAX_FETCH_BYTES_DEFAULT}",
                self.fetch_max_bytes
            ));
        }
        if self.request_timeout_ms == 0 {
            return invalid("request timeout must be at least 1 ms".into());
        }
        if self.attempt_timeout_ms <= u64::from(self.ack_timeout_ms) {
            return invalid(format!(
                "attempt timeout {} ms must be above the ack timeout {} ms, which the broker may \
                 take before it answers",
                self.attempt_timeout_ms, self.ack_timeout_ms
            ));
        }
        if self.send_timeout_ms < self.attempt_timeout_ms {
            return invalid(format!(
                "send timeout {} ms must be at least the attempt timeout {} ms",
                self.send_timeout_ms, self.attempt_timeout_ms
            ));
        }
        if self.commit_interval_ms == 0 {
            return invalid("commit interval must be at least 1 ms".into());
        }
        let sessions =
            nameserver_api::SESSION_TIMEOUT_MS_MIN..=nameserver_api::SESSION_TIMEOUT_MS_MAX;
        if !sessions.contains(&self.session_timeout_ms) {
            return invalid(format!(
                "session timeout {} ms: must be {} to {} ms",
                self.session_timeout_ms,
                sessions.start(),
                sessions.end()
            ));
        }
        Ok(())
    }

    /// A route cache asking the NameServer, or `broker` when there is none.
    fn route_cache(&self) -> Arc<RouteCache> {
        let source = match &self.nameserver {
            Some(client) => RouteSource::NameServer(client.clone()),
            None => RouteSource::Broker(self.broker.clone()),
        };
        RouteCache::new(
            source,
            self.connection_options(),
            Duration::from_millis(self.route_refresh_ms),
            Duration::from_millis(self.route_wait_ms),
        )
    }

    pub(crate) fn connection_options(&self) -> ConnectionOptions {
        ConnectionOptions {
            broker: self.broker.clone(),
            client_id: self.client_id.clone(),
            credential: self.credential.clone(),
            tls: self.tls.clone(),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            max_in_flight_requests: self.max_in_flight_requests,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_settings_are_named() {
        ClientConfig::new("127.0.0.1:10911").validate().unwrap();
        let mut config = ClientConfig::new("127.0.0.1:10911");
        config.batch_bytes = 32 * 1024 * 1024;
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("batch bytes"), "{error}");
        let mut config = ClientConfig::new("");
        config.max_in_flight_requests = 0;
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--nameserver"));
    }
}
