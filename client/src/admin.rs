//! Topic administration: on one broker, create, delete, list and describe topics and read a
//! queue's earliest and latest offsets; over the cluster, through the NameServer, create and
//! delete topics on every master, wait until they are routed and count what each queue stores
//! (failing with a [`ClusterError`]).

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::protocol::request::{
    CreateTopicRequest, DeleteTopicRequest, ListOffsetsRequest, MetadataRequest,
};
use crate::protocol::response::{ListOffsetsResponse, MetadataResponse, TopicMetadata};
use crate::protocol::{ApiKey, Request, Response, Role};
use crate::ClientConfig;

mod cluster;

pub use cluster::{ClusterError, GroupFailure, QueueStored};

/// Creates, deletes, lists and describes topics on the one broker it is connected to; its
/// associated functions [`Admin::create_topic_on_masters`], [`Admin::delete_topic_on_masters`],
/// [`Admin::wait_until_routed`] and [`Admin::stored_messages`] do the same over every broker
/// group the NameServer knows.
///
/// ```no_run
/// # async fn example() -> smq_client::Result<()> {
/// use smq_client::{Admin, ClientConfig};
///
/// let admin = Admin::connect(ClientConfig::new("127.0.0.1:10911")).await?;
/// admin.create_topic("orders", 8).await?;
/// let topic = admin.describe_topic("orders").await?;
/// for queue in &topic.queues {
///     println!("queue {}: {} to {}", queue.queue_id, queue.log_start_offset, queue.high_watermark);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Admin {
    connection: Connection,
}

/// One topic as `connection`'s broker holds it; [`Error::UnknownTopic`] when it holds none.
pub(crate) async fn describe_topic(connection: &Connection, topic: &str) -> Result<TopicMetadata> {
    Ok(describe_topic_in_group(connection, topic).await?.1)
}

/// One topic as `connection`'s broker holds it, with the broker's group; [`Error::UnknownTopic`]
/// when it holds none.
pub(crate) async fn describe_topic_in_group(
    connection: &Connection,
    topic: &str,
) -> Result<(String, TopicMetadata)> {
    let request = Request::Metadata(MetadataRequest {
        topics: vec![topic.to_owned()],
    });
    let Response::Metadata(metadata) = connection.request(request).await? else {
        return Err(connection.unexpected(ApiKey::Metadata));
    };
    let held = metadata
        .topics
        .into_iter()
        .find(|held| held.name == topic)
        .ok_or_else(|| Error::UnknownTopic {
            topic: topic.to_owned(),
            broker: connection.broker().to_owned(),
        })?;
    Ok((metadata.group, held))
}

/// Who a broker is: what its Metadata answer says besides topics.
///
/// ```
/// use smq_client::admin::BrokerInfo;
/// use smq_client::protocol::Role;
///
/// let info = BrokerInfo { cluster: "c".into(), group: "g".into(), role: Role::Master };
/// assert_eq!(info.role, Role::Master);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub cluster: String,
    pub group: String,
    pub role: Role,
}

impl Admin {
    /// Connects to `config.broker`.
    pub async fn connect(config: ClientConfig) -> Result<Admin> {
        config.validate()?;
        Ok(Admin {
            connection: Connection::connect(config.connection_options()).await?,
        })
    }

    /// Creates `topic` with queues `0` to `queue_count - 1` on the broker.
    pub async fn create_topic(&self, topic: &str, queue_count: u32) -> Result<()> {
        let request = Request::CreateTopic(CreateTopicRequest {
            topic: topic.to_owned(),
            queue_count,
        });
        match self.connection.request(request).await? {
            Response::CreateTopic => Ok(()),
            _ => Err(self.connection.unexpected(ApiKey::CreateTopic)),
        }
    }

    /// Deletes `topic`, its queues and its consumer offsets from the broker.
    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        let request = Request::DeleteTopic(DeleteTopicRequest {
            topic: topic.to_owned(),
        });
        match self.connection.request(request).await? {
            Response::DeleteTopic => Ok(()),
            _ => Err(self.connection.unexpected(ApiKey::DeleteTopic)),
        }
    }

    async fn metadata(&self, topics: Vec<String>) -> Result<MetadataResponse> {
        match self
            .connection
            .request(Request::Metadata(MetadataRequest { topics }))
            .await?
        {
            Response::Metadata(metadata) => Ok(metadata),
            _ => Err(self.connection.unexpected(ApiKey::Metadata)),
        }
    }

    /// Every topic on the broker with its queues, in name order.
    pub async fn list_topics(&self) -> Result<Vec<TopicMetadata>> {
        Ok(self.metadata(Vec::new()).await?.topics)
    }

    /// One topic's queues with their earliest and latest offsets.
    pub async fn describe_topic(&self, topic: &str) -> Result<TopicMetadata> {
        describe_topic(&self.connection, topic).await
    }

    /// The broker's cluster, group and role.
    pub async fn broker_info(&self) -> Result<BrokerInfo> {
        let metadata = self.metadata(vec![]).await?;
        Ok(BrokerInfo {
            cluster: metadata.cluster,
            group: metadata.group,
            role: metadata.role,
        })
    }

    /// The earliest and latest offsets of one queue.
    pub async fn list_offsets(&self, topic: &str, queue_id: u32) -> Result<ListOffsetsResponse> {
        let request = Request::ListOffsets(ListOffsetsRequest {
            topic: topic.to_owned(),
            queue_id,
        });
        match self.connection.request(request).await? {
            Response::ListOffsets(offsets) => Ok(offsets),
            _ => Err(self.connection.unexpected(ApiKey::ListOffsets)),
        }
    }
}
