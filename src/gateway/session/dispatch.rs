//! What a session does with each decoded client request.

use serde_json::json;
use serde_json::value::RawValue;

use super::Session;
use super::membership::{Asked, refusal, unavailable};
use crate::group::GroupName;
use crate::hooks::PublishRequest;
use crate::protocol::{self, ErrorCode, Incoming, Request, RequestError, close};

impl Session {
    /// Decodes one text frame, carries out the request and queues the answer.
    pub(super) async fn dispatch(&mut self, text: &str) {
        let decoded = protocol::decode(text);
        if !self.within_rate_limit() {
            let id = decoded.as_ref().map_or_else(|e| e.id, |i| i.id);
            return self.send_error(&rate_limited(id)).await;
        }
        let Incoming { id, request } = match decoded {
            Ok(incoming) => incoming,
            Err(e) => return self.send_error(&e).await,
        };
        let answer = match request {
            // Subscribing answers by itself: recovered messages must follow the reply.
            Request::Subscribe { group, since } => {
                match self.subscribe(Asked::Client(id), group, since).await {
                    Ok(()) => return,
                    Err(e) => Err(e),
                }
            }
            Request::Unsubscribe { group } => {
                self.unsubscribe(&group).await;
                Ok(None)
            }
            Request::Publish { group, data } => self.publish(&group, &data).await.map(|()| None),
            Request::Presence { group } => self.presence(&group).await.map(Some),
            Request::Auth { token } => self.late_auth(&token).await.map(|()| None),
            Request::Refresh { token } => self.refresh(&token).await.map(|()| None),
            Request::Ping => Ok(None),
        };
        match answer {
            Ok(result) => self.send(protocol::reply(id, result.as_ref())).await,
            Err(e) => self.send_error(&RequestError { id, ..e }).await,
        }
    }

    /// Takes a token from the client's bucket; a client refused `rate_limit_strikes` times in
    /// a row is closed with 4029.
    fn within_rate_limit(&mut self) -> bool {
        if self.limiter.check().is_ok() {
            self.strikes = 0;
            return true;
        }
        self.strikes += 1;
        self.gateway.metrics.dropped("rate_limited");
        if self.strikes >= self.gateway.config.rate_limit_strikes {
            tracing::debug!(strikes = self.strikes, "rate limit exceeded; closing");
            self.outbox.close(close::RATE_LIMITED);
        }
        false
    }

    pub(super) async fn send_error(&self, e: &RequestError) {
        self.send(protocol::error(e)).await;
    }

    /// Publishes for the client; in a namespace with `publish_proxy`, only once the backend's
    /// publish hook said yes (publishing the data it answered with, when it did).
    async fn publish(&mut self, group: &GroupName, data: &RawValue) -> Result<(), RequestError> {
        self.check_publish(group)?;
        let replaced = match self.gateway.config.namespace(group.namespace()).publish_proxy {
            // Boxed: the hook's request would make every request's future kilobytes larger.
            true => Box::pin(self.ask_publish_hook(group, data)).await?,
            false => None,
        };
        let data = replaced.as_deref().unwrap_or(data);
        self.gateway.publish(group, data, Some(&self.info)).await.map_err(unavailable)
    }

    async fn ask_publish_hook(
        &self,
        group: &GroupName,
        data: &RawValue,
    ) -> Result<Option<Box<RawValue>>, RequestError> {
        let hooks = self.gateway.hooks.as_ref().expect("publish_proxy is validated to have a publish_url");
        let request = PublishRequest {
            client: &self.info.client,
            user: self.info.user.as_deref(),
            info: self.info.info.as_ref(),
            group: group.as_str(),
            data,
        };
        hooks.publish(&request).await.map_err(refusal)
    }

    async fn presence(&self, group: &GroupName) -> Result<serde_json::Value, RequestError> {
        self.check_presence(group)?;
        let clients = self.gateway.hub.broker().presence.list(group).await.map_err(unavailable)?;
        Ok(json!({ "clients": clients }))
    }

    /// Subscribes to the groups the connection's route (or SSE stream) names, recovering those
    /// the URL gives a `since` for; each join is announced (`subscribed` or `recovered`),
    /// failures are reported as `error` frames without an id and the connection stays open.
    pub(super) async fn join_granted(&mut self) {
        let mut since = std::mem::take(&mut self.grants.since);
        for group in std::mem::take(&mut self.grants.subscribe) {
            let since = since.remove(&group);
            if let Err(e) = self.subscribe(Asked::Route, group, since).await {
                self.send_error(&e).await;
            }
        }
    }

    /// Binary frames count against the rate limit like any request, and are refused.
    pub(super) async fn refuse_binary(&mut self) {
        let e = match self.within_rate_limit() {
            true => RequestError::new(
                None,
                ErrorCode::BadRequest,
                "binary frames are not supported: send JSON text",
            ),
            false => rate_limited(None),
        };
        self.send_error(&e).await;
    }
}

fn rate_limited(id: Option<u64>) -> RequestError {
    RequestError::new(id, ErrorCode::RateLimited, "too many requests: slow down")
}
