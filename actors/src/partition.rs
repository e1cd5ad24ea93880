//! Partition actor: the coordinator of client requests on one HTTP worker.
//!
//! The node that receives a request coordinates it (see [`crate::coordinator`]
//! for the algorithms). One partition actor runs per HTTP worker thread, so no
//! single mailbox sits on every request's path; each request runs as its own
//! future and the actor keeps no per-request state.
//!
//! Messages: [`Get`], [`Put`] (a value, or a tombstone for a delete).

use crate::coordinator::{NodeCore, WriteResult};
use crate::error::Result;
use crate::quorum::Consistency;
use crate::record::Record;
use crate::storage::Precondition;
use actix::prelude::*;
use bytes::Bytes;
use std::sync::Arc;

/// Read a key.
#[derive(Message)]
#[rtype(result = "Result<Option<Record>>")]
pub struct Get {
    pub key: Bytes,
    pub consistency: Consistency,
}

/// Write a value, or a tombstone when `value` is `None`.
#[derive(Message)]
#[rtype(result = "Result<WriteResult>")]
pub struct Put {
    pub key: Bytes,
    pub value: Option<Bytes>,
    pub precondition: Precondition,
    pub consistency: Consistency,
}

pub struct PartitionActor {
    core: Arc<NodeCore>,
}

impl PartitionActor {
    pub fn new(core: Arc<NodeCore>) -> Self {
        PartitionActor { core }
    }
}

impl Actor for PartitionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(crate::MAILBOX_CAPACITY);
    }
}

impl Handler<Get> for PartitionActor {
    type Result = ResponseFuture<Result<Option<Record>>>;

    fn handle(&mut self, msg: Get, _: &mut Context<Self>) -> Self::Result {
        let core = self.core.clone();
        Box::pin(async move { core.read(&msg.key, msg.consistency).await })
    }
}

impl Handler<Put> for PartitionActor {
    type Result = ResponseFuture<Result<WriteResult>>;

    fn handle(&mut self, msg: Put, _: &mut Context<Self>) -> Self::Result {
        let core = self.core.clone();
        Box::pin(async move {
            core.write(msg.key, msg.value, msg.precondition, msg.consistency)
                .await
        })
    }
}
