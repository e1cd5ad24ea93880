//! Answers to peers' consensus messages. Every message is decoded, checked
//! ([`super::guard`]) and only then handed to openraft; a snapshot is
//! assembled here, chunk by consecutive chunk up to
//! [`MAX_SNAPSHOT_BYTES`], and validated whole before openraft installs it
//! — a state-machine error would stop openraft's core for good, so a bad
//! snapshot must be refused before it gets there.

use super::command::MetaCommand;
use super::guard::{check_append, check_snapshot, check_vote_request, Refused};
use super::service::{MetaForwardError, MetaService};
use super::{raft_id, MetaTypes, MAX_SNAPSHOT_BYTES};
use crate::wire::{decode_value, encode_value, printable, ErrorCode, MetaRpc, Response};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse};
use openraft::{Snapshot, Vote};
use std::io::Cursor;
use std::time::Instant;

/// A snapshot being received: its id, sender and the bytes so far.
#[derive(Default)]
pub(super) struct Assembly {
    id: String,
    from: u64,
    data: Vec<u8>,
}

type SnapshotAnswer = Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>;

impl MetaService {
    /// Answers one consensus message from member `from`, sent with the
    /// sender's `cluster` fingerprint.
    pub async fn handle(&self, from: &str, rpc: MetaRpc, cluster: u64, payload: &[u8]) -> Response {
        let inner = &self.inner;
        if cluster != inner.cluster {
            return Response::error(
                ErrorCode::Invalid,
                format!(
                    "a consensus message from a node configured for another cluster \
                     (members or first layout differ: {cluster:016x}, here {:016x})",
                    inner.cluster
                ),
            );
        }
        let sender = raft_id(from);
        let raft = &inner.raft;
        let encoded = match rpc {
            MetaRpc::AppendEntries => {
                let req = match decode_value(payload) {
                    Ok(req) => req,
                    Err(e) => return invalid(e),
                };
                if let Err(Refused(why)) = check_append(&req, sender, &inner.member_ids) {
                    return refused(from, why);
                }
                let answer = raft.append_entries(req).await;
                if matches!(&answer, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
                    *inner
                        .leader_contact
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                }
                encode_value(&answer)
            }
            MetaRpc::Vote => {
                let req = match decode_value(payload) {
                    Ok(req) => req,
                    Err(e) => return invalid(e),
                };
                if let Err(Refused(why)) = check_vote_request(&req, sender) {
                    return refused(from, why);
                }
                encode_value(&raft.vote(req).await)
            }
            MetaRpc::InstallSnapshot => {
                let req = match decode_value(payload) {
                    Ok(req) => req,
                    Err(e) => return invalid(e),
                };
                match self.snapshot_chunk(req, sender).await {
                    Ok(answer) => encode_value(&answer),
                    Err(Refused(why)) => return refused(from, why),
                }
            }
            MetaRpc::Propose => match decode_value::<MetaCommand>(payload) {
                // A peer reports its own progress only: a forged report
                // for another node would bypass the fence or the sync.
                Ok(MetaCommand::Report { node, .. }) if node != from => {
                    return refused(
                        from,
                        format!(
                            "a progress report for {} sent by another node",
                            printable(&node)
                        ),
                    )
                }
                Ok(command) => {
                    log::info!("metadata: a proposal sent on by {from}");
                    // Proposed here only: a node that is asked does not
                    // send it on again (no forwarding loops).
                    let answer = self.propose_local(command).await;
                    encode_value(&Ok::<_, RaftError<u64, MetaForwardError>>(answer))
                }
                Err(e) => return invalid(e),
            },
        };
        match encoded {
            Ok(payload) => Response::Meta { payload },
            Err(e) => Response::error(ErrorCode::Internal, e.to_string()),
        }
    }

    /// One chunk of a snapshot from `sender`.
    async fn snapshot_chunk(
        &self,
        req: InstallSnapshotRequest<MetaTypes>,
        sender: u64,
    ) -> Result<SnapshotAnswer, Refused> {
        let inner = &self.inner;
        check_snapshot(&req.vote, &req.meta, sender, &inner.member_ids)?;
        let mine: Vote<u64> = match inner.raft.with_raft_state(|s| *s.vote_ref()).await {
            Ok(v) => v,
            Err(f) => return Ok(Err(RaftError::Fatal(f))),
        };
        // A stale leader learns our vote and steps down; nothing is kept.
        if req.vote < mine {
            return Ok(Ok(InstallSnapshotResponse { vote: mine }));
        }
        let data = {
            let mut a = inner.assembly.lock().unwrap_or_else(|e| e.into_inner());
            if req.offset == 0 {
                *a = Assembly {
                    id: req.meta.snapshot_id.clone(),
                    from: sender,
                    data: Vec::new(),
                };
            } else if a.id != req.meta.snapshot_id
                || a.from != sender
                || a.data.len() as u64 != req.offset
            {
                return Err(Refused(format!(
                    "a snapshot chunk at offset {} that does not follow the {} bytes received",
                    req.offset,
                    a.data.len()
                )));
            }
            if a.data.len() + req.data.len() > MAX_SNAPSHOT_BYTES {
                *a = Assembly::default();
                return Err(Refused(format!(
                    "a snapshot beyond the {MAX_SNAPSHOT_BYTES}-byte limit"
                )));
            }
            a.data.extend_from_slice(&req.data);
            if !req.done {
                return Ok(Ok(InstallSnapshotResponse { vote: mine }));
            }
            std::mem::take(&mut *a).data
        };
        super::state_machine::check_snapshot_data(&data, &req.meta).map_err(Refused)?;
        let snapshot = Snapshot {
            meta: req.meta,
            snapshot: Box::new(Cursor::new(data)),
        };
        Ok(
            match inner.raft.install_full_snapshot(req.vote, snapshot).await {
                Ok(r) => Ok(InstallSnapshotResponse { vote: r.vote }),
                Err(f) => Err(RaftError::Fatal(f)),
            },
        )
    }
}

fn invalid(e: impl std::fmt::Display) -> Response {
    Response::error(
        ErrorCode::Invalid,
        format!("malformed consensus message: {e}"),
    )
}

fn refused(from: &str, why: String) -> Response {
    log::warn!("metadata: refused a consensus message from {from}: {why}");
    Response::error(
        ErrorCode::Invalid,
        format!("refused consensus message: {why}"),
    )
}
