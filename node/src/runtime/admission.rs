//! The runtime's side of admission: the view of who may take part (from
//! the replica on Raft members, from the leader's heartbeat answers
//! elsewhere), the sender check every request passes, the leader's half of
//! the join exchange and token management, and the joiner's half.
//! The decisions are in [`crate::admission`]; this only gathers and acts.

use std::sync::Arc;

use coditect_consensus::admission::AdmissionCommand;
use coditect_consensus::{Command, CommandResponse, NodeId};
use futures::FutureExt;

use super::Node;
use crate::admission::{
    check, verify_proof, AdmissionView, ApiAccess, JoinToken, Knowledge, RequestKind, Sender,
    REFUSAL_LOG_EVERY,
};
use crate::datadir::node_id_for;
use crate::messages::{AdmissionAction, LeaderHint, NodeRequest, NodeResponse, SubmitError};

fn kind_of(request: &NodeRequest) -> (RequestKind, Option<NodeId>) {
    match request {
        NodeRequest::Raft(_) => (RequestKind::Raft, None),
        NodeRequest::Join(record) => (RequestKind::Join, Some(record.node_id)),
        NodeRequest::Heartbeat { node_id, .. } => (RequestKind::Heartbeat, Some(*node_id)),
        NodeRequest::Reports { node_id, .. } => (RequestKind::Reports, Some(*node_id)),
        NodeRequest::CommitSteal { from, .. } => (RequestKind::CommitSteal, Some(*from)),
        NodeRequest::StealAsk { request, .. } => (RequestKind::StealAsk, Some(request.thief)),
        NodeRequest::Leave { node_id } => (RequestKind::Leave, Some(*node_id)),
        NodeRequest::Assign(_) => (RequestKind::Assign, None),
        NodeRequest::Revoke(_) => (RequestKind::Revoke, None),
        NodeRequest::GetBlob { .. } => (RequestKind::Blob, None),
        NodeRequest::GetTaskResult { .. }
        | NodeRequest::ListMissions { .. }
        | NodeRequest::GetMissionView { .. } => (RequestKind::Read, None),
        NodeRequest::Submit { .. } | NodeRequest::Control { .. } | NodeRequest::Admission(_) => {
            (RequestKind::Write, None)
        }
        NodeRequest::AdmitChallenge | NodeRequest::AdmitProve { .. } => (RequestKind::Admit, None),
    }
}

impl Node {
    /// The admission view this node holds.
    pub(super) fn admission_view(&self) -> Option<Arc<AdmissionView>> {
        self.inner
            .admission
            .lock()
            .expect("admission lock")
            .view
            .clone()
    }

    /// The stamp of the view held: (admission version, membership index).
    pub(super) fn admission_stamp(&self) -> (u64, u64) {
        self.admission_view()
            .map(|view| (view.version, view.membership))
            .unwrap_or((0, 0))
    }

    /// Why the leader refused this node's join token, if it did.
    pub fn admission_refusal(&self) -> Option<String> {
        self.inner
            .admission
            .lock()
            .expect("admission lock")
            .refusal
            .clone()
    }

    /// On a Raft member: rebuilds the view from the replica when the
    /// admission record or the membership changed. Cheap when neither did.
    pub(super) fn refresh_admission(&self) {
        let metrics = self.raft_metrics();
        let config = metrics.membership_config.clone();
        let membership = config.membership();
        if membership.get_node(&self.inner.node_id).is_none() {
            return; // not a member: the leader's heartbeat answers carry the view
        }
        let membership_index = config.log_id().map(|id| id.index).unwrap_or(0);
        let version = self.state(|state| state.admission.version);
        if self.admission_stamp() == (version, membership_index) && self.admission_view().is_some()
        {
            return;
        }
        let mut view = self.state(|state| AdmissionView {
            api_token: state.admission.api_token.clone(),
            version: state.admission.version,
            membership: membership_index,
            open: state.admission.is_open(),
            admitted: state.admission.peers.keys().cloned().collect(),
            revoked: state.admission.revoked.clone(),
            members: Default::default(),
            voters: Default::default(),
        });
        for (id, node) in membership.nodes() {
            view.members.insert(node.peer_id.clone());
            if membership.voter_ids().any(|voter| voter == *id) {
                view.voters.insert(node.peer_id.clone());
            }
        }
        self.install_view(view);
    }

    /// Takes `view` as this node's, tells the network whom to hear, and
    /// keeps a new API token in `DATA_DIR/api-token` (written before the
    /// view takes effect, so the file never lags the token asked for).
    pub(super) fn install_view(&self, view: AdmissionView) {
        let allowed = (!view.open).then(|| view.admitted.clone());
        let banned = view.revoked.clone();
        {
            let mut shell = self.inner.admission.lock().expect("admission lock");
            if shell.view.as_deref() == Some(&view) {
                return;
            }
            let before = shell.view.as_ref().and_then(|v| v.api_token.clone());
            if let (Some(token), Some(file)) = (
                view.api_token
                    .as_ref()
                    .filter(|token| before.as_ref() != Some(*token)),
                self.inner.admission_settings.api_token_file.as_ref(),
            ) {
                if let Err(error) = crate::datadir::write_secret(file, token.0.as_bytes()) {
                    tracing::warn!("cannot keep the API token in {}: {error}", file.display());
                }
            }
            shell.view = Some(Arc::new(view));
        }
        self.inner.network.admit_only(allowed, banned);
        // Adverts sent before (a joiner's, refused until now) count from here.
        self.inner.view.lock().expect("view lock").advert_due = true;
    }

    /// Who may use this node's HTTP API: holders of the mesh's token (or
    /// of the founder's own before its mesh is guarded), anyone in an open
    /// mesh, nobody but for its status while it knows neither.
    pub fn api_access(&self) -> ApiAccess {
        let view = self.admission_view();
        let token = match view.as_deref() {
            Some(view) if view.api_token.is_some() => view.api_token.clone().map(|t| t.0),
            _ => self.inner.admission_settings.api_token.clone(),
        };
        match (token, view.as_deref()) {
            (Some(token), _) => ApiAccess::Token(token),
            (None, Some(view)) if view.open => ApiAccess::Open,
            (None, None) if self.inner.admission_settings.open => ApiAccess::Open,
            (None, _) => ApiAccess::Pending,
        }
    }

    /// Counts one HTTP request refused by the API guard.
    pub fn count_http_refusal(&self, reason: &str) {
        self.inner
            .metrics
            .http_refused
            .with_label_values(&[reason])
            .inc();
    }

    /// The sender check for one request: `None` to serve it, else the
    /// answer refusing it (counted and logged).
    pub(super) fn refuse_request(&self, from: &str, request: &NodeRequest) -> Option<NodeResponse> {
        let (kind, claims) = kind_of(request);
        self.refuse(from, kind, claims)
            .map(|reason| NodeResponse::Forbidden(reason.to_string()))
    }

    /// The sender check: `None` to go on, else the refusal's label.
    pub(super) fn refuse(
        &self,
        from: &str,
        kind: RequestKind,
        claims: Option<NodeId>,
    ) -> Option<&'static str> {
        let view = self.admission_view();
        let needs_leader = matches!(
            kind,
            RequestKind::Assign | RequestKind::Revoke | RequestKind::Raft
        );
        let leader = if needs_leader { self.leader() } else { None };
        let verdict = check(
            Sender {
                peer: from,
                kind,
                claims,
            },
            Knowledge {
                view: view.as_deref(),
                leader: leader.as_ref().map(|hint| hint.peer_id.as_str()),
            },
        );
        match verdict {
            Ok(()) => None,
            Err(refusal) => {
                self.inner
                    .metrics
                    .requests_refused
                    .with_label_values(&[kind.as_str(), refusal.as_str()])
                    .inc();
                tracing::debug!(
                    peer = from,
                    kind = kind.as_str(),
                    reason = refusal.as_str(),
                    "refused"
                );
                Some(refusal.as_str())
            }
        }
    }

    /// Leader: the view for a node that holds `stamp`, if that is stale.
    pub(super) fn view_for(&self, stamp: (u64, u64)) -> Option<Box<AdmissionView>> {
        let view = self.admission_view()?;
        ((view.version, view.membership) != stamp).then(|| Box::new((*view).clone()))
    }

    /// Leader, founder of a guarded mesh: commits its join secret once.
    pub(super) fn guard_new_mesh(&self) {
        if !self.inner.admission_settings.guard_new_mesh || !self.is_leader() {
            return;
        }
        let unguarded = self.state(|state| {
            state.admission.secret.is_none()
                && state.admission.peers.is_empty()
                && state.admission.revoked.is_empty()
        });
        if !unguarded {
            return;
        }
        {
            let mut shell = self.inner.admission.lock().expect("admission lock");
            if std::mem::replace(&mut shell.guarding, true) {
                return;
            }
        }
        let node = self.clone();
        self.inner.env.spawn(
            "guard-mesh",
            async move {
                let Some(api_token) = node.inner.admission_settings.api_token.clone() else {
                    tracing::error!("a guarded mesh needs an API token; none was made");
                    return;
                };
                let command = Command::Admission(AdmissionCommand::Init {
                    secret: node.random_secret(),
                    founder: node.inner.peer_id.clone(),
                    api_token,
                    at_ms: node.inner.env.now_ms(),
                });
                match node.write(command).await {
                    Ok(CommandResponse::Ok) => {
                        tracing::info!(
                            "the mesh admits only peers with a join token: get one with `coditect token create`"
                        );
                        node.refresh_admission();
                    }
                    Ok(other) => tracing::debug!("join secret not set: {other:?}"),
                    Err(error) => tracing::warn!("join secret not committed yet: {error}"),
                }
                node.inner.admission.lock().expect("admission lock").guarding = false;
            }
            .boxed(),
        );
    }

    fn random_secret(&self) -> Vec<u8> {
        (0..4)
            .flat_map(|_| self.inner.env.random_u64().to_le_bytes())
            .collect()
    }

    /// Leader: step 1 of the join exchange.
    pub(super) fn admit_challenge(&self, from: &str) -> NodeResponse {
        let nonce = self.random_secret();
        self.inner
            .admission
            .lock()
            .expect("admission lock")
            .challenges
            .issue(nonce.clone(), from, self.inner.env.now_ms());
        NodeResponse::Challenge(nonce)
    }

    /// Leader: step 2 of the join exchange.
    pub(super) async fn admit_prove(
        &self,
        from: &str,
        token: String,
        challenge: Vec<u8>,
        proof: Vec<u8>,
    ) -> NodeResponse {
        let now_ms = self.inner.env.now_ms();
        let (secret, admitted) =
            self.state(|state| (state.admission.secret.clone(), state.admission.allows(from)));
        let Some(secret) = secret else {
            return NodeResponse::Ack; // an open mesh
        };
        if admitted {
            return NodeResponse::Ack;
        }
        let fresh = self
            .inner
            .admission
            .lock()
            .expect("admission lock")
            .challenges
            .take(&challenge, from, now_ms);
        if !fresh {
            return NodeResponse::Forbidden(
                "the join challenge is unknown, spent or expired; ask for a new one".into(),
            );
        }
        if !verify_proof(
            &secret.key,
            secret.generation,
            &token,
            &challenge,
            from,
            &proof,
        ) {
            self.inner
                .metrics
                .requests_refused
                .with_label_values(&["admit", "bad_token"])
                .inc();
            return NodeResponse::Forbidden(
                "the join token is not valid for this mesh (wrong, or made before the secret was rotated)"
                    .into(),
            );
        }
        let command = Command::Admission(AdmissionCommand::Admit {
            peer: from.to_string(),
            token,
            at_ms: now_ms,
        });
        match self.write(command).await {
            Ok(CommandResponse::Ok) => {
                tracing::info!(peer = from, "admitted a peer with a join token");
                self.refresh_admission();
                NodeResponse::Ack
            }
            Ok(CommandResponse::Rejected(reason)) => {
                self.inner
                    .metrics
                    .requests_refused
                    .with_label_values(&["admit", "bad_token"])
                    .inc();
                NodeResponse::Forbidden(reason)
            }
            Ok(other) => NodeResponse::Error(format!("unexpected answer {other:?}")),
            Err(error) => NodeResponse::Error(error.to_string()),
        }
    }

    /// Leader: an operator's admission action.
    pub(super) async fn admission_action(&self, action: AdmissionAction) -> NodeResponse {
        let now_ms = self.inner.env.now_ms();
        let refused = |reason: String| {
            if reason.contains("no join token") || reason.contains("not admitted") {
                NodeResponse::Refused(SubmitError::NotFound(reason))
            } else {
                NodeResponse::Refused(SubmitError::Conflict(reason))
            }
        };
        match action {
            AdmissionAction::CreateToken { ttl_ms, uses } => {
                let id = format!("{:016x}", self.inner.env.random_u64());
                let command = Command::Admission(AdmissionCommand::CreateToken {
                    id: id.clone(),
                    expires_ms: ttl_ms.map(|ttl| now_ms.saturating_add(ttl)),
                    max_uses: uses,
                    at_ms: now_ms,
                });
                match self.write(command).await {
                    Ok(CommandResponse::Ok) => {
                        let secret = self.state(|state| state.admission.secret.clone());
                        match secret {
                            Some(secret) => NodeResponse::TokenCreated(
                                JoinToken::derive(&secret.key, secret.generation, &id).to_text(),
                            ),
                            None => NodeResponse::Error("the join secret vanished".into()),
                        }
                    }
                    Ok(CommandResponse::Rejected(reason)) => refused(reason),
                    Ok(other) => NodeResponse::Error(format!("unexpected answer {other:?}")),
                    Err(error) => NodeResponse::Error(error.to_string()),
                }
            }
            AdmissionAction::RevokeToken(id) => {
                self.admission_write(AdmissionCommand::RevokeToken { id }, refused)
                    .await
            }
            AdmissionAction::Rotate => {
                let secret = self.random_secret();
                self.admission_write(
                    AdmissionCommand::Rotate {
                        secret,
                        at_ms: now_ms,
                    },
                    refused,
                )
                .await
            }
            AdmissionAction::RotateApiToken => {
                let api_token: String = (0..4)
                    .map(|_| format!("{:016x}", self.inner.env.random_u64()))
                    .collect();
                let command = AdmissionCommand::RotateApiToken {
                    api_token: api_token.clone(),
                };
                match self.admission_write(command, refused).await {
                    NodeResponse::Ack => {
                        tracing::info!("the HTTP API token was rotated");
                        NodeResponse::TokenCreated(api_token)
                    }
                    other => other,
                }
            }
            AdmissionAction::RevokePeer(peer) => {
                if peer == self.inner.peer_id {
                    return NodeResponse::Refused(SubmitError::Conflict(
                        "the leader cannot revoke itself; revoke it from another node once it has drained (SIGTERM)".into(),
                    ));
                }
                let answer = self
                    .admission_write(AdmissionCommand::RevokePeer { peer: peer.clone() }, refused)
                    .await;
                if matches!(answer, NodeResponse::Ack) {
                    tracing::info!(peer = %peer, "revoked a peer");
                    let node_id = node_id_for(&peer);
                    let known = self.state(|state| state.nodes.contains_key(&node_id));
                    if known {
                        // Its tasks go back to ready at once (it left), and
                        // it leaves the Raft membership.
                        if let Err(error) = self.remove_member(node_id).await {
                            tracing::warn!(
                                "revoked peer {peer} not yet out of the membership: {error}"
                            );
                        }
                    }
                }
                answer
            }
        }
    }

    /// Any node: an operator's admission action, through the leader.
    /// `Ok(Some(token))` for a created token, `Ok(None)` for the others.
    pub async fn admission(&self, action: AdmissionAction) -> Result<Option<String>, SubmitError> {
        let answer = if self.is_leader() {
            self.admission_action(action).await
        } else {
            let leader = self
                .leader()
                .ok_or_else(|| SubmitError::Unavailable("no leader known yet".into()))?;
            self.ask(&leader, &NodeRequest::Admission(action))
                .await
                .map_err(SubmitError::Unavailable)?
        };
        match answer {
            NodeResponse::TokenCreated(token) => Ok(Some(token)),
            NodeResponse::Ack => Ok(None),
            NodeResponse::Refused(error) => Err(error),
            NodeResponse::Forbidden(reason) => Err(SubmitError::Forbidden(reason)),
            NodeResponse::NotLeader { .. } => Err(SubmitError::Unavailable(
                "the leader changed; try again".into(),
            )),
            NodeResponse::Error(message) => Err(SubmitError::Unavailable(message)),
            other => Err(SubmitError::Unavailable(format!(
                "the leader answered {other:?}"
            ))),
        }
    }

    async fn admission_write(
        &self,
        command: AdmissionCommand,
        refused: impl Fn(String) -> NodeResponse,
    ) -> NodeResponse {
        match self.write(Command::Admission(command)).await {
            Ok(CommandResponse::Ok) => {
                self.refresh_admission();
                NodeResponse::Ack
            }
            Ok(CommandResponse::Rejected(reason)) => refused(reason),
            Ok(other) => NodeResponse::Error(format!("unexpected answer {other:?}")),
            Err(error) => NodeResponse::Error(error.to_string()),
        }
    }

    /// Joiner: the leader refused us as not admitted. With a join token,
    /// run the exchange (once at a time); without, say what to do.
    pub(super) fn on_not_admitted(&self, leader: LeaderHint) {
        let now = self.inner.env.elapsed();
        let Some(token) = self.inner.admission_settings.join_token.clone() else {
            let mut shell = self.inner.admission.lock().expect("admission lock");
            if shell
                .refused_logged
                .is_none_or(|at| now.saturating_sub(at) >= REFUSAL_LOG_EVERY)
            {
                shell.refused_logged = Some(now);
                tracing::warn!(
                    leader = %leader.peer_id,
                    "the mesh does not admit this node: start it with --join-token TOKEN (a member prints one with `coditect token create`)"
                );
            }
            return;
        };
        {
            let mut shell = self.inner.admission.lock().expect("admission lock");
            if shell.exchanging {
                return;
            }
            if shell.refusal.is_some()
                && shell
                    .refused_logged
                    .is_some_and(|at| now.saturating_sub(at) < REFUSAL_LOG_EVERY)
            {
                return; // a refused token is tried again only now and then
            }
            shell.exchanging = true;
        }
        let node = self.clone();
        self.inner.env.spawn(
            "join-exchange",
            async move {
                let outcome = node.exchange(&leader, &token).await;
                let mut shell = node.inner.admission.lock().expect("admission lock");
                shell.exchanging = false;
                match outcome {
                    Ok(()) => {
                        shell.refusal = None;
                        drop(shell);
                        tracing::info!(leader = %leader.peer_id, "admitted to the mesh with the join token");
                        node.inner.view.lock().expect("view lock").registered = false;
                    }
                    Err(Some(reason)) => {
                        shell.refused_logged = Some(node.inner.env.elapsed());
                        shell.refusal = Some(reason.clone());
                        tracing::error!("the mesh refused this node's join token: {reason}");
                    }
                    Err(None) => {}
                }
            }
            .boxed(),
        );
    }

    /// The two steps; `Err(Some)`: refused, `Err(None)`: try again later.
    async fn exchange(&self, leader: &LeaderHint, token: &JoinToken) -> Result<(), Option<String>> {
        let challenge = match self.ask(leader, &NodeRequest::AdmitChallenge).await {
            Ok(NodeResponse::Challenge(nonce)) => nonce,
            Ok(NodeResponse::Forbidden(reason)) => return Err(Some(reason)),
            other => {
                tracing::debug!("join challenge answered {other:?}");
                return Err(None);
            }
        };
        let proof = token.prove(&challenge, &self.inner.peer_id);
        let request = NodeRequest::AdmitProve {
            token: token.id.clone(),
            challenge,
            proof,
        };
        match self.ask(leader, &request).await {
            Ok(NodeResponse::Ack) => Ok(()),
            Ok(NodeResponse::Forbidden(reason)) => Err(Some(reason)),
            other => {
                tracing::debug!("join proof answered {other:?}");
                Err(None)
            }
        }
    }
}
