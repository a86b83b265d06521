//! The HTTP handlers, kept thin: parse, ask the registry, reply JSON. Every error is an
//! [`ApiError`] with a 4xx/5xx status (proto-spec.md §8).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use std::net::SocketAddr;

use axum::extract::{Path, State};
use axum::http::{header, Extensions, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;
use smq_protocol::nameserver_api::{
    check_consumer_group_name, check_topic_name, ApiError, ApiErrorCode, ConsumerGroupView, Health,
    Heartbeat, HeartbeatReply, MemberHeartbeat, MemberHeartbeatReply,
};

use crate::consumer_groups::{MemberEvent, WarmUp};
use crate::group_views;

use crate::metrics::{ConsumerGroupLabels, Gauges, QueueLag};
use crate::registry::RegistryError;
use crate::AppState;

/// An error reply: a status, the JSON body, and for a retryable 503 the `Retry-After` seconds.
pub struct Failure(StatusCode, ApiError, Option<u64>);

impl Failure {
    fn new(status: StatusCode, code: ApiErrorCode, error: impl Into<String>) -> Failure {
        Failure(
            status,
            ApiError {
                error: error.into(),
                code,
                field: None,
                group_epoch: None,
                master_addr: None,
            },
            None,
        )
    }

    fn bad_field(field: Option<String>, error: impl Into<String>) -> Failure {
        let mut failure = Failure::new(StatusCode::BAD_REQUEST, ApiErrorCode::BadRequest, error);
        failure.1.field = field;
        failure
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut response = (self.0, Json(self.1)).into_response();
        if let Some(seconds) = self.2 {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        response
    }
}

fn ok<T: Serialize>(value: T) -> Response {
    Json(value).into_response()
}

/// Parses a JSON request body, naming the field at fault: `missing field` errors name the missing
/// field, type errors the field whose value has the wrong type. `what` names the request.
fn parse_json<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, Failure> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.inner();
        let missing = inner
            .to_string()
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned);
        let field = match (missing, path.as_str()) {
            (Some(name), ".") => Some(name),
            (Some(name), parent) => Some(format!("{parent}.{name}")),
            (None, ".") => None,
            (None, _) if inner.is_data() => Some(path.clone()),
            (None, _) => None,
        };
        let text = match &field {
            Some(field) => format!("malformed {what}: field `{field}`: {inner}"),
            None => {
                format!("malformed {what}: {inner} (expected a JSON object, see proto-spec.md §8)")
            }
        };
        Failure::bad_field(field, text)
    })?;
    deserializer
        .end()
        .map_err(|error| Failure::bad_field(None, format!("malformed {what}: {error}")))?;
    Ok(value)
}

/// Parses and validates a broker heartbeat.
pub fn parse_heartbeat(body: &[u8]) -> Result<Heartbeat, Failure> {
    let heartbeat: Heartbeat = parse_json(body, "heartbeat")?;
    heartbeat.validate().map_err(|error| {
        Failure::bad_field(
            Some(error.field.clone()),
            format!("invalid heartbeat: {error}"),
        )
    })?;
    Ok(heartbeat)
}

/// `POST /v1/brokers/heartbeat` (behind the cluster secret, [`crate::auth`]).
pub async fn heartbeat(
    State(state): State<AppState>,
    extensions: Extensions,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<HeartbeatReply>, Failure> {
    let peer = smq_tls::listener::peer_addr(&extensions);
    let result = accept_heartbeat(&state, peer, body);
    match &result {
        Ok(_) => state.metrics.heartbeat_received(),
        Err(_) => state.metrics.heartbeat_rejected(),
    }
    result.map(Json)
}

/// The body of a request, or the failure to read it (413 when too large).
fn read_body(body: Result<Bytes, BytesRejection>, what: &str) -> Result<Bytes, Failure> {
    body.map_err(|rejection| {
        let status = rejection.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiErrorCode::PayloadTooLarge
        } else {
            ApiErrorCode::BadRequest
        };
        Failure::new(
            status,
            code,
            format!("cannot read the {what}: {}", rejection.body_text()),
        )
    })
}

fn accept_heartbeat(
    state: &AppState,
    peer: Option<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> Result<HeartbeatReply, Failure> {
    let body = read_body(body, "heartbeat")?;
    let heartbeat = parse_heartbeat(&body)?;
    let addr = heartbeat.addr.clone();
    let (group, role) = (heartbeat.group.clone(), heartbeat.role);
    let now_ms = state.now_ms();
    let warming_up_ms = state.warming_up_ms();
    let mut registry = state.registry();
    registry.warm_up_until(now_ms + warming_up_ms);
    let (reply, is_new) = registry.heartbeat(heartbeat, now_ms).map_err(|error| {
        if let RegistryError::WarmingUp { retry_after_ms, .. } = error {
            // Not a conflict: the claimant waits and asks again.
            let mut failure = Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ApiErrorCode::WarmingUp,
                error.to_string(),
            );
            failure.2 = Some(retry_after_ms.div_ceil(1000));
            return failure;
        }
        // Every refusal is a conflict with another live broker: logged, one line per
        // peer a minute.
        let admitted = peer.map(|peer| (peer, state.auth.refusals.admit(peer.ip())));
        if let Some((peer, Some(suppressed))) = admitted {
            tracing::warn!(%peer, suppressed, "refused a heartbeat (409): {error}");
        }
        let mut failure = Failure::new(
            StatusCode::CONFLICT,
            ApiErrorCode::Conflict,
            error.to_string(),
        );
        if let RegistryError::StaleEpoch {
            group_epoch,
            master_addr,
            ..
        } = error
        {
            failure.1.code = ApiErrorCode::StaleEpoch;
            failure.1.group_epoch = Some(group_epoch);
            failure.1.master_addr = master_addr;
        }
        failure
    })?;
    drop(registry);
    if is_new {
        tracing::info!(%addr, %group, ?role, "broker registered");
    }
    Ok(reply)
}

/// The 503 of a fenced NameServer: DNS names another one, which members and tools must ask.
fn fenced(state: &AppState) -> Failure {
    Failure::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ApiErrorCode::Fenced,
        state.fence.message(),
    )
}

/// The consumer group of a path, checked.
fn consumer_group_of(group: Result<Path<String>, PathRejection>) -> Result<String, Failure> {
    let Path(group) =
        group.map_err(|r| Failure::bad_field(Some("consumer_group".into()), r.body_text()))?;
    check_consumer_group_name(&group).map_err(|error| {
        Failure::bad_field(
            Some("consumer_group".into()),
            format!("invalid consumer group name: {error}"),
        )
    })?;
    Ok(group)
}

/// `POST /v1/groups/{group}/heartbeat`: a member of a consumer group joins, heartbeats or leaves;
/// the reply gives the queues it may read (proto-spec.md §8.7).
pub async fn member_heartbeat(
    State(state): State<AppState>,
    group: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<MemberHeartbeatReply>, Failure> {
    if state.fence.is_fenced() {
        state.fence.recheck().await;
        if state.fence.is_fenced() {
            return Err(fenced(&state));
        }
    }
    let consumer_group = consumer_group_of(group)?;
    let body = read_body(body, "member heartbeat")?;
    let heartbeat: MemberHeartbeat = parse_json(&body, "member heartbeat")?;
    heartbeat.validate().map_err(|error| {
        Failure::bad_field(
            Some(error.field.clone()),
            format!("invalid member heartbeat: {error}"),
        )
    })?;
    let (member, topic) = (heartbeat.member_id.clone(), heartbeat.topic.clone());
    let now_ms = state.now_ms();
    let warm_up = match state.consumer_groups_warming_up_ms() {
        0 => WarmUp::Over,
        _ => WarmUp::Running {
            wall_ms: smq_protocol::record_batch::now_ms(),
        },
    };
    let (queues, stored_epochs) = {
        let registry = state.registry();
        (
            group_views::topic_queues(&registry, &topic, now_ms),
            group_views::stored_epochs(&registry, &consumer_group, &topic, now_ms),
        )
    };
    let (reply, event) = state.consumer_groups().heartbeat(
        &consumer_group,
        heartbeat,
        &queues,
        &stored_epochs,
        now_ms,
        warm_up,
    );
    match event {
        Some(MemberEvent::Joined) => {
            tracing::info!(%consumer_group, %topic, %member, "consumer group member joined")
        }
        Some(MemberEvent::Left) => {
            tracing::info!(%consumer_group, %topic, %member, "consumer group member left")
        }
        None => {}
    }
    Ok(Json(reply))
}

/// `GET /v1/groups`: every consumer group and topic with members, queues and lag.
pub async fn consumer_groups(State(state): State<AppState>) -> Response {
    ok(group_views::list(&all_group_topics(&state)))
}

/// `GET /v1/groups/{group}`: members, owners and lag per queue of each topic the group reads.
pub async fn consumer_group(
    State(state): State<AppState>,
    group: Result<Path<String>, PathRejection>,
) -> Response {
    let consumer_group = match consumer_group_of(group) {
        Ok(group) => group,
        Err(failure) => return failure.into_response(),
    };
    let topics: Vec<_> = all_group_topics(&state)
        .into_iter()
        .filter(|(group, _)| *group == consumer_group)
        .map(|(_, topic)| topic)
        .collect();
    let warming_up_ms = state.consumer_groups_warming_up_ms();
    if topics.is_empty() && warming_up_ms == 0 {
        return Failure::new(
            StatusCode::NOT_FOUND,
            ApiErrorCode::NotFound,
            format!(
                "consumer group {consumer_group:?} has no live member and no offset on a live \
                 broker: start a consumer with `smq consume TOPIC --group {consumer_group}`"
            ),
        )
        .into_response();
    }
    ok(ConsumerGroupView {
        consumer_group,
        topics,
        warming_up_ms,
    })
}

/// Every (consumer group, topic) with its view, now.
pub fn all_group_topics(
    state: &AppState,
) -> Vec<(String, smq_protocol::nameserver_api::ConsumerGroupTopic)> {
    let now_ms = state.now_ms();
    let wall_ms = smq_protocol::record_batch::now_ms();
    let registry = state.registry();
    let groups = state.consumer_groups();
    group_views::all_topics(&registry, &groups, now_ms, wall_ms)
}

/// `GET /v1/routes/{topic}`. A fenced NameServer first checks the record again (at most every
/// 100 ms, one lookup shared by concurrent requests): it serves at once if the record names it now.
pub async fn route(
    State(state): State<AppState>,
    topic: Result<Path<String>, PathRejection>,
) -> Response {
    if state.fence.is_fenced() {
        state.fence.recheck().await;
    }
    let response = route_response(&state, topic);
    state.metrics.route_request(response.status().as_u16());
    response
}

fn route_response(state: &AppState, topic: Result<Path<String>, PathRejection>) -> Response {
    if state.fence.is_fenced() {
        return fenced(state).into_response();
    }
    let topic = match topic {
        Ok(Path(topic)) => topic,
        Err(rejection) => {
            return Failure::bad_field(Some("topic".into()), rejection.body_text()).into_response()
        }
    };
    if let Err(reason) = check_topic_name(&topic) {
        return Failure::bad_field(
            Some("topic".into()),
            format!("invalid topic name: {reason}"),
        )
        .into_response();
    }
    let warming_up_ms = state.warming_up_ms();
    let now_ms = state.now_ms();
    let registry = state.registry();
    let route = registry.route(&topic, now_ms).map(|mut route| {
        if warming_up_ms > 0 {
            route.warming_up = true;
            route.missing_groups = registry.missing_groups(now_ms);
        }
        route
    });
    drop(registry);
    match route {
        Some(route) => ok(route),
        None if warming_up_ms > 0 => warming_up(state, warming_up_ms, &topic).into_response(),
        None => Failure::new(
            StatusCode::NOT_FOUND,
            ApiErrorCode::TopicNotFound,
            format!(
                "no live broker serves topic {topic:?}: create it with `smq topic create {topic}`, \
                 or check that its brokers heartbeat to this NameServer (GET /v1/cluster)"
            ),
        )
        .into_response(),
    }
}

/// The 503 for a topic this NameServer does not know while it is warming up.
fn warming_up(state: &AppState, warming_up_ms: u64, topic: &str) -> Failure {
    let since = match state.fence.srv() {
        Some(srv) => format!("started or became the one {srv} names"),
        None => "started".to_owned(),
    };
    let mut failure = Failure::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ApiErrorCode::WarmingUp,
        format!(
            "this NameServer is warming up: it {since} less than one heartbeat timeout ago \
             ({} ms), so brokers may not have registered with it yet and it cannot tell whether \
             topic {topic:?} exists; retry in {warming_up_ms} ms (smq clients wait by themselves, \
             up to --route-wait-ms)",
            state.registry().heartbeat_timeout_ms()
        ),
    );
    failure.2 = Some(warming_up_ms.div_ceil(1000));
    failure
}

/// `GET /v1/cluster`; while warming up, `warming_up_ms` says for how much longer brokers may be
/// missing.
pub async fn cluster(State(state): State<AppState>) -> Response {
    let mut view = state.registry().cluster(state.now_ms());
    view.warming_up_ms = state.warming_up_ms();
    ok(view)
}

/// `GET /v1/topics`.
pub async fn topics(State(state): State<AppState>) -> Response {
    ok(state.registry().topics(state.now_ms()))
}

/// `GET /healthz`: 200 while the process serves, fenced or not.
pub async fn healthz(State(state): State<AppState>) -> Response {
    ok(Health {
        status: "ok".into(),
        fenced: state.fence.is_fenced(),
        brokers_live: state.registry().live_count(state.now_ms()) as u32,
    })
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let topics = all_group_topics(&state);
    let labels = |consumer_group: &str, topic: &str| ConsumerGroupLabels {
        consumer_group: consumer_group.to_owned(),
        topic: topic.to_owned(),
    };
    let gauges = Gauges {
        brokers_live: state.registry().live_count(state.now_ms()),
        fenced: state.fence.is_fenced(),
        consumer_group_members: topics
            .iter()
            .map(|(group, topic)| (labels(group, &topic.topic), topic.members.len() as u64))
            .collect(),
        consumer_group_lag: topics
            .iter()
            .flat_map(|(group, topic)| {
                topic.queues.iter().filter_map(move |queue| {
                    Some(QueueLag {
                        group: labels(group, &topic.topic),
                        broker_group: queue.broker_group.clone(),
                        queue_id: queue.queue_id,
                        messages: queue.lag_messages?,
                        seconds: queue.lag_seconds?,
                    })
                })
            })
            .collect(),
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&gauges),
    )
        .into_response()
}

/// Any other path.
pub async fn not_found(method: Method, uri: Uri) -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        ApiErrorCode::NotFound,
        format!(
            "no route {method} {}: the API is GET /v1/routes/{{topic}}, GET /v1/cluster, GET /v1/topics, \
             POST /v1/brokers/heartbeat, GET /v1/groups, GET /v1/groups/{{group}}, \
             POST /v1/groups/{{group}}/heartbeat, GET /healthz, GET /metrics",
            uri.path()
        ),
    )
}

/// A known path with another method.
pub async fn method_not_allowed(method: Method, uri: Uri) -> Failure {
    let path = uri.path();
    let allowed = if path == smq_protocol::nameserver_api::HEARTBEAT_PATH
        || (path.starts_with("/v1/groups/") && path.ends_with("/heartbeat"))
    {
        "POST"
    } else {
        "GET"
    };
    Failure::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ApiErrorCode::MethodNotAllowed,
        format!("{method} is not allowed on {}: use {allowed}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(body: &str) -> Option<String> {
        match parse_heartbeat(body.as_bytes()) {
            Ok(_) => panic!("{body} parsed"),
            Err(Failure(status, error, _)) => {
                assert_eq!(status, StatusCode::BAD_REQUEST);
                assert_eq!(error.code, ApiErrorCode::BadRequest);
                if let Some(field) = &error.field {
                    assert!(error.error.contains(field.as_str()), "{}", error.error);
                }
                error.field
            }
        }
    }

    const GOOD: &str = r#"{"cluster":"c1","group":"g1","role":"master","addr":"127.0.0.1:10911",
        "data_version":1,"log_end_offset":0,"topics":[{"name":"orders","queues":4}]}"#;

    #[test]
    fn malformed_heartbeats_name_the_field() {
        assert!(parse_heartbeat(GOOD.as_bytes()).is_ok());
        assert_eq!(
            field_of(&GOOD.replace(r#""group":"g1","#, "")).as_deref(),
            Some("group")
        );
        assert_eq!(
            field_of(&GOOD.replace(r#""queues":4"#, r#""queues":"four""#)).as_deref(),
            Some("topics[0].queues")
        );
        assert_eq!(
            field_of(&GOOD.replace(r#","queues":4"#, "")).as_deref(),
            Some("topics[0].queues")
        );
        assert_eq!(
            field_of(&GOOD.replace("master", "boss")).as_deref(),
            Some("role")
        );
        assert_eq!(
            field_of(&GOOD.replace("10911", "0")).as_deref(),
            Some("addr")
        );
        assert_eq!(field_of("not json"), None);
        assert_eq!(field_of(&format!("{GOOD} trailing")), None);
    }
}
