//! In-process broker for standalone mode and tests: one instance, no network.
//!
//! Publishing hands the frame straight to the local sink, so the [`Broker`] contract holds
//! trivially: every subscription is in effect at once and order is the publisher's call order.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use futures_util::future::BoxFuture;

use super::{Broker, BrokerError, Publisher, Sink, Subscription};
use crate::group::GroupName;

pub struct MemoryBroker {
    sink: Arc<dyn Sink>,
}

impl MemoryBroker {
    pub fn new(sink: Arc<dyn Sink>) -> Self {
        Self { sink }
    }
}

impl Publisher for MemoryBroker {
    fn publish<'a>(
        &'a self,
        group: &'a GroupName,
        frame: Utf8Bytes,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        // Groups without local members are dropped by the sink, as Redis drops them.
        self.sink.deliver(group.as_str(), frame);
        Box::pin(std::future::ready(Ok(())))
    }
}

impl Broker for MemoryBroker {
    fn subscribe(&self, _group: &GroupName) -> Subscription {
        Subscription::confirmed()
    }

    fn unsubscribe(&self, _group: &GroupName) {}

    fn is_ready(&self) -> bool {
        true
    }
}
