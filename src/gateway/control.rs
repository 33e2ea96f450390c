//! The control API across the deployment: a command given to any gateway reaches every
//! gateway's sessions, through the broker.
//!
//! Every gateway is a member of Herald's own group `~control` (a name no client can use), for
//! as long as it runs. A gateway asked to act (`POST /api/disconnect`, say) publishes an *ask*
//! there; each gateway, itself included, applies it to its own sessions and publishes an
//! *answer* addressed to the asker: how many connections it affected, and for a listing, which.
//! The asker sums the answers of every node the directory lists, waiting at most
//! [`ANSWERS_WITHIN`] for them. Like any group message, an ask published while a gateway's
//! subscription is down does not reach that gateway; its missing answer says so.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::Gateway;
use super::live::{Order, Picked, Target, client_id};
use crate::broker::BrokerError;
use crate::group::GroupName;
use crate::outbox::Outbox;

/// How long an asker waits for every node's answer.
const ANSWERS_WITHIN: Duration = Duration::from_secs(2);
/// How long a node waits for its sessions to carry out a subscribe or a listing.
const SESSIONS_WITHIN: Duration = Duration::from_millis(1500);
/// Between attempts to join the control group while the broker is down.
const RETRY: Duration = Duration::from_millis(200);
/// Control messages queued for the control task before it is too slow (and rejoins).
const QUEUE: usize = 4096;

/// What the backend asks of the connections of a user or client, wherever they are.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Command {
    Disconnect { target: Target, code: u16, reason: String },
    Subscribe { target: Target, group: GroupName },
    Unsubscribe { target: Target, group: GroupName },
    Connections { target: Target },
}

/// One connection, as `GET /api/connections` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Connection {
    pub(crate) client: String,
    pub(crate) user: Option<String>,
    pub(crate) node: String,
    pub(crate) groups: Vec<GroupName>,
}

/// One node's part of the outcome.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Answer {
    pub(crate) node: String,
    pub(crate) affected: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) connections: Vec<Connection>,
}

/// What travels in the control group.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Envelope {
    Ask { id: String, from: String, command: Command },
    Answer { id: String, to: String, answer: Answer },
}

/// A delivered control group frame: its `data` is the envelope.
#[derive(Deserialize)]
struct Delivered {
    data: Envelope,
}

/// The deployment's answers to one command.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) answers: Vec<Answer>,
    /// Nodes the directory lists that did not answer in time.
    pub(crate) missing: Vec<String>,
}

/// The asks this gateway waits answers for.
#[derive(Default)]
pub(crate) struct Control {
    waiting: Mutex<HashMap<String, mpsc::UnboundedSender<Answer>>>,
    /// Whether this instance is in the control group: it is not ready until it is.
    joined: AtomicBool,
}

impl Control {
    pub(crate) fn is_joined(&self) -> bool {
        self.joined.load(Ordering::Acquire)
    }
}

fn group() -> GroupName {
    GroupName::reserved("control")
}

impl Gateway {
    /// Carries `command` out on every gateway of the deployment and gathers their answers.
    pub(crate) async fn command(&self, command: Command) -> Result<Outcome, BrokerError> {
        let id = format!("{:016x}", rand::random::<u64>());
        let (answers, mut incoming) = mpsc::unbounded_channel();
        crate::lock(&self.control.waiting).insert(id.clone(), answers);
        let outcome = self.gather(&id, command, &mut incoming).await;
        crate::lock(&self.control.waiting).remove(&id);
        outcome
    }

    async fn gather(
        &self,
        id: &str,
        command: Command,
        incoming: &mut mpsc::UnboundedReceiver<Answer>,
    ) -> Result<Outcome, BrokerError> {
        let mut expected: HashSet<String> =
            self.hub.broker().directory.nodes().await?.into_iter().map(|n| n.node).collect();
        expected.insert(self.node_id().to_string());
        let ask = Envelope::Ask { id: id.to_string(), from: self.node_id().to_string(), command };
        self.send_control(&ask).await?;
        let deadline = Instant::now() + ANSWERS_WITHIN;
        let mut outcome = Outcome::default();
        while !expected.is_empty() {
            let Ok(Some(answer)) = tokio::time::timeout_at(deadline, incoming.recv()).await else { break };
            if expected.remove(&answer.node) || !outcome.answers.iter().any(|a| a.node == answer.node) {
                outcome.answers.push(answer);
            }
        }
        outcome.missing = expected.into_iter().collect();
        outcome.missing.sort_unstable();
        Ok(outcome)
    }

    async fn send_control(&self, envelope: &Envelope) -> Result<(), BrokerError> {
        let data = serde_json::value::to_raw_value(envelope).expect("control messages serialize");
        self.hub.broker().publisher.publish(&group(), &data, None).await
    }

    /// Applies `command` to this instance's sessions.
    async fn apply(&self, command: Command) -> Answer {
        let node = self.node_id();
        let mut answer = Answer { node: node.to_string(), ..Answer::default() };
        match command {
            Command::Disconnect { target, code, reason } => {
                for session in self.live.pick(node, &target) {
                    session.outbox.close_with(code, &reason);
                    answer.affected += 1;
                }
            }
            Command::Subscribe { target, group } => {
                let done = self.order_all(&target, |tx| Order::Subscribe(group.clone(), tx)).await;
                answer.affected = done.iter().filter(|(_, changed)| *changed).count() as u64;
            }
            Command::Unsubscribe { target, group } => {
                let done = self.order_all(&target, |tx| Order::Unsubscribe(group.clone(), tx)).await;
                answer.affected = done.iter().filter(|(_, changed)| *changed).count() as u64;
            }
            Command::Connections { target } => {
                for (session, groups) in self.order_all(&target, Order::Describe).await {
                    let client = client_id(node, session.id);
                    let user = session.user.as_deref().map(str::to_string);
                    answer.connections.push(Connection { client, user, node: node.to_string(), groups });
                }
                answer.affected = answer.connections.len() as u64;
            }
        }
        answer
    }

    /// Gives each session of `target` an order, and returns the answers that came within
    /// [`SESSIONS_WITHIN`], each with its session.
    async fn order_all<T>(
        &self,
        target: &Target,
        order: impl Fn(oneshot::Sender<T>) -> Order,
    ) -> Vec<(Picked, T)> {
        let deadline = Instant::now() + SESSIONS_WITHIN;
        let mut pending = Vec::new();
        for session in self.live.pick(self.node_id(), target) {
            let (tx, rx) = oneshot::channel();
            if self.live.order(session.id, order(tx)) {
                pending.push((session, rx));
            }
        }
        let mut answers = Vec::new();
        for (session, rx) in pending {
            if let Ok(Ok(answer)) = tokio::time::timeout_at(deadline, rx).await {
                answers.push((session, answer));
            }
        }
        answers
    }

    /// What the control task does with one delivered control frame.
    fn received(self: &Arc<Self>, frame: &str) {
        let envelope = match serde_json::from_str::<Delivered>(frame) {
            Ok(delivered) => delivered.data,
            Err(e) => return tracing::warn!(error = %e, "unreadable control message"),
        };
        match envelope {
            Envelope::Ask { id, from, command } => {
                let gateway = self.clone();
                tokio::spawn(async move {
                    let answer = gateway.apply(command).await;
                    if let Err(e) = gateway.send_control(&Envelope::Answer { id, to: from, answer }).await {
                        tracing::warn!(error = %e, "could not answer a control command");
                    }
                });
            }
            Envelope::Answer { id, to, answer } if to == self.node_id() => {
                if let Some(waiting) = crate::lock(&self.control.waiting).get(&id) {
                    let _ = waiting.send(answer);
                }
            }
            Envelope::Answer { .. } => {}
        }
    }
}

/// Keeps this gateway in the control group and handles what arrives there, until it stops.
pub(super) async fn run(gateway: Arc<Gateway>) {
    let member = gateway.next_session.fetch_add(1, Ordering::Relaxed);
    while !gateway.stopped.is_cancelled() {
        let outbox = Arc::new(Outbox::new(QUEUE, usize::MAX));
        if let Err(e) = gateway.hub.join(&group(), member, &outbox, None).await {
            tracing::debug!(error = %e, "control group not joined yet");
            tokio::select! {
                _ = gateway.stopped.cancelled() => return,
                _ = tokio::time::sleep(RETRY) => continue,
            }
        }
        gateway.control.joined.store(true, Ordering::Release);
        let mut frames = std::collections::VecDeque::new();
        loop {
            tokio::select! {
                _ = gateway.stopped.cancelled() => break,
                _ = outbox.closing() => {
                    tracing::warn!("control messages came faster than they were handled; rejoining");
                    break;
                }
                _ = outbox.next_batch(QUEUE, 0, &mut frames) => {
                    for frame in frames.drain(..) {
                        gateway.received(&frame);
                    }
                }
            }
        }
        gateway.control.joined.store(false, Ordering::Release);
        gateway.hub.leave(&group(), member);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_carry_their_command_and_target() {
        let ask = Envelope::Ask {
            id: "1".into(),
            from: "a".into(),
            command: Command::Subscribe {
                target: Target::User("ann".into()),
                group: GroupName::new("chat").unwrap(),
            },
        };
        let text = serde_json::to_string(&ask).unwrap();
        assert_eq!(
            text,
            r#"{"kind":"ask","id":"1","from":"a","command":{"op":"subscribe","target":{"user":"ann"},"group":"chat"}}"#
        );
        let frame = format!(r#"{{"type":"message","group":"~control","data":{text}}}"#);
        assert!(matches!(serde_json::from_str::<Delivered>(&frame).unwrap().data, Envelope::Ask { .. }));
    }
}
