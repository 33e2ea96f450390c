//! What a session does with each decoded client request.

use serde_json::value::RawValue;

use super::Session;
use crate::broker::BrokerError;
use crate::group::GroupName;
use crate::protocol::{self, ErrorCode, Incoming, Request, RequestError};

impl Session {
    /// Decodes one text frame, carries out the request and queues the answer.
    pub(super) async fn dispatch(&mut self, text: &str) {
        let answer = match protocol::decode(text) {
            Ok(Incoming { id, request }) => match self.handle(id, request).await {
                Ok(()) => protocol::reply(id, None),
                Err(e) => protocol::error(&e),
            },
            Err(e) => protocol::error(&e),
        };
        self.outbox.send(answer).await;
    }

    async fn handle(&mut self, id: Option<u64>, request: Request) -> Result<(), RequestError> {
        match request {
            Request::Subscribe { group } => self.subscribe(group).await,
            Request::Unsubscribe { group } => {
                self.unsubscribe(&group);
                Ok(())
            }
            Request::Publish { group, data } => self.publish(&group, &data).await,
            Request::Ping => Ok(()),
        }
        .map_err(|mut e| {
            e.id = id;
            e
        })
    }

    async fn subscribe(&mut self, group: GroupName) -> Result<(), RequestError> {
        if self.groups.contains(&group) {
            return Ok(());
        }
        self.gateway.hub.join(&group, self.id, &self.outbox).await.map_err(unavailable)?;
        self.groups.insert(group);
        Ok(())
    }

    fn unsubscribe(&mut self, group: &GroupName) {
        if self.groups.remove(group) {
            self.gateway.hub.leave(group, self.id);
        }
    }

    async fn publish(&mut self, group: &GroupName, data: &RawValue) -> Result<(), RequestError> {
        let granted = self.grants.publish.contains(group);
        if !granted && !self.gateway.config.namespace(group.namespace()).client_publish {
            let message = format!("clients may not publish to {group}");
            return Err(RequestError::new(None, ErrorCode::Forbidden, message));
        }
        self.gateway.publish(group, data).await.map_err(unavailable)
    }

    /// Subscribes to the groups the connection's route names; failures are reported as
    /// `error` frames without an id and the connection stays open.
    pub(super) async fn join_route_groups(&mut self) {
        for group in std::mem::take(&mut self.grants.subscribe) {
            if let Err(e) = self.subscribe(group).await {
                self.outbox.send(protocol::error(&e)).await;
            }
        }
    }

    pub(super) async fn refuse_binary(&self) {
        let e =
            RequestError::new(None, ErrorCode::BadRequest, "binary frames are not supported: send JSON text");
        self.outbox.send(protocol::error(&e)).await;
    }
}

fn unavailable(e: BrokerError) -> RequestError {
    RequestError::new(None, ErrorCode::Unavailable, e.to_string())
}
