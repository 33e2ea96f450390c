//! What a client may do. The identity's grants (a token's claims) and the namespace rules
//! decide; the connection's route and a `refresh` may only narrow that, never widen it:
//!
//! - **subscribe** (and presence): anonymous clients are refused in namespaces with
//!   `require_auth`; in a `personal` namespace a client may be in `<namespace>.<its user id>`
//!   alone, with no claim needed and none able to widen it; elsewhere a token with a `groups`
//!   claim allows only groups matching its patterns.
//! - **publish**: the same `require_auth` rule; then a token's `publish` claim decides where it
//!   has one, the namespace's `client_publish` where it does not; and a route that lists
//!   `publish` groups allows only those on top of that.
//!
//! Every refusal is a `forbidden` error; the connection stays open.

use super::Session;
use crate::group::GroupName;
use crate::protocol::{ErrorCode, RequestError};

fn forbidden(message: String) -> RequestError {
    RequestError::new(None, ErrorCode::Forbidden, message)
}

impl Session {
    pub(super) fn check_subscribe(&self, group: &GroupName) -> Result<(), RequestError> {
        self.check_identified(group)?;
        if self.gateway.config.namespace(group.namespace()).personal {
            let user = self.identity.as_ref().and_then(|i| i.user.as_deref());
            let own =
                user.is_some_and(|user| group.as_str().split_once('.').is_some_and(|(_, id)| id == user));
            if !own {
                return Err(forbidden(format!("{group} is another user's personal group")));
            }
            return Ok(());
        }
        match self.identity.as_ref().and_then(|i| i.may_subscribe(group)) {
            Some(false) => Err(forbidden(format!("this client may not subscribe to {group}"))),
            _ => Ok(()),
        }
    }

    pub(super) fn check_publish(&self, group: &GroupName) -> Result<(), RequestError> {
        self.check_identified(group)?;
        let granted = match self.identity.as_ref().and_then(|i| i.may_publish(group)) {
            Some(allowed) => allowed,
            None => self.gateway.config.namespace(group.namespace()).client_publish,
        };
        let on_route = self.grants.publish.as_ref().is_none_or(|groups| groups.contains(group));
        if granted && on_route {
            Ok(())
        } else {
            Err(forbidden(format!("this client may not publish to {group}")))
        }
    }

    pub(super) fn check_presence(&self, group: &GroupName) -> Result<(), RequestError> {
        if !self.gateway.config.namespace(group.namespace()).presence {
            return Err(forbidden(format!("presence is off for namespace {:?}", group.namespace())));
        }
        self.check_subscribe(group).map_err(|_| forbidden(format!("this client may not see {group}")))
    }

    /// Namespaces with `require_auth` refuse anonymous clients.
    fn check_identified(&self, group: &GroupName) -> Result<(), RequestError> {
        let namespace = self.gateway.config.namespace(group.namespace());
        if namespace.require_auth && self.identity.is_none() {
            let message = format!("namespace {:?} requires an authenticated client", group.namespace());
            return Err(forbidden(message));
        }
        Ok(())
    }
}
