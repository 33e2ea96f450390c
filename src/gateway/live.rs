//! This instance's live sessions: what the drain closes, and what the control API finds by user
//! or client id and gives orders to.
//!
//! A session registers its outbox when it opens and its user once it is authenticated. Orders
//! (join or leave a group, say what it is in) wait here until the session's reader takes them:
//! the session's memberships are its reader's own state, so every change to them, the
//! backend's included, is made there, in order with the client's own requests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::group::GroupName;
use crate::hub::MemberId;
use crate::outbox::Outbox;

/// What the backend asks of a session, with where the session answers.
pub(crate) enum Order {
    /// Join the group (trusted: no permission check, but `max_groups_per_client` holds);
    /// answers whether it joined.
    Subscribe(GroupName, oneshot::Sender<bool>),
    /// Leave the group; answers whether it was in it.
    Unsubscribe(GroupName, oneshot::Sender<bool>),
    /// Answers the groups it is in.
    Describe(oneshot::Sender<Vec<GroupName>>),
}

struct Entry {
    outbox: Arc<Outbox>,
    /// Set once the session is authenticated as a user.
    user: Option<Arc<str>>,
    /// Orders not yet taken by the session's reader.
    orders: Vec<Order>,
}

/// A session the control API picked, with what it needs to act on it.
pub(crate) struct Picked {
    pub(crate) id: MemberId,
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) user: Option<Arc<str>>,
}

/// Who an order is for: every connection of a user, or one connection by its client id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Target {
    User(String),
    Client(String),
}

/// The client id of session `id` on `node`, as its welcome frame gives it: `<node>-<id>`.
pub(crate) fn client_id(node: &str, id: MemberId) -> String {
    format!("{node}-{id}")
}

/// The session id in `client`, when the client id is one of `node`'s ([`client_id`]).
fn session_id(node: &str, client: &str) -> Option<MemberId> {
    client.strip_prefix(node)?.strip_prefix('-')?.parse().ok()
}

#[derive(Default)]
pub(crate) struct Live {
    sessions: Mutex<HashMap<MemberId, Entry>>,
}

impl Live {
    fn lock(&self) -> MutexGuard<'_, HashMap<MemberId, Entry>> {
        crate::lock(&self.sessions)
    }

    pub(crate) fn open(&self, id: MemberId, outbox: &Arc<Outbox>) {
        self.lock().insert(id, Entry { outbox: outbox.clone(), user: None, orders: Vec::new() });
    }

    pub(crate) fn close(&self, id: MemberId) {
        self.lock().remove(&id);
    }

    /// Records the user a session authenticated as.
    pub(crate) fn identify(&self, id: MemberId, user: Option<&str>) {
        if let Some(entry) = self.lock().get_mut(&id) {
            entry.user = user.map(Arc::from);
        }
    }

    /// Every live session's outbox.
    pub(crate) fn outboxes(&self) -> Vec<Arc<Outbox>> {
        self.lock().values().map(|entry| entry.outbox.clone()).collect()
    }

    /// The sessions of `target` on this instance, `node`.
    pub(crate) fn pick(&self, node: &str, target: &Target) -> Vec<Picked> {
        let sessions = self.lock();
        let picked = |(id, entry): (&MemberId, &Entry)| Picked {
            id: *id,
            outbox: entry.outbox.clone(),
            user: entry.user.clone(),
        };
        match target {
            Target::User(user) => {
                sessions.iter().filter(|(_, e)| e.user.as_deref() == Some(user)).map(picked).collect()
            }
            Target::Client(client) => {
                let id = session_id(node, client);
                id.and_then(|id| sessions.get_key_value(&id)).map(picked).into_iter().collect()
            }
        }
    }

    /// Leaves `order` for session `id` and wakes its reader; false when it is gone.
    pub(crate) fn order(&self, id: MemberId, order: Order) -> bool {
        let mut sessions = self.lock();
        let Some(entry) = sessions.get_mut(&id) else { return false };
        entry.orders.push(order);
        entry.outbox.order();
        true
    }

    /// The orders waiting for session `id`, oldest first.
    pub(crate) fn orders(&self, id: MemberId) -> Vec<Order> {
        self.lock().get_mut(&id).map(|entry| std::mem::take(&mut entry.orders)).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_by_user_and_by_this_nodes_client_ids() {
        let live = Live::default();
        for id in [1, 2, 3] {
            live.open(id, &Arc::new(Outbox::new(4, 1024)));
        }
        live.identify(1, Some("ann"));
        live.identify(3, Some("ann"));
        let ids = |picked: Vec<Picked>| {
            let mut ids: Vec<MemberId> = picked.iter().map(|p| p.id).collect();
            ids.sort_unstable();
            ids
        };
        assert_eq!(ids(live.pick("n-1", &Target::User("ann".into()))), [1, 3]);
        assert_eq!(ids(live.pick("n-1", &Target::Client("n-1-2".into()))), [2]);
        assert!(live.pick("n-1", &Target::Client("n-2-2".into())).is_empty(), "another node's");
        assert!(live.pick("n-1", &Target::Client("n-1-9".into())).is_empty(), "gone");
        live.close(3);
        assert_eq!(ids(live.pick("n-1", &Target::User("ann".into()))), [1]);
    }
}
