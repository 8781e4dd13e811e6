//! Admission, the node's half: join tokens and their proofs, the leader's
//! challenges, and the one check every request and gossip message passes
//! ([`check`]). All of it is plain synchronous code over plain data.
//!
//! A join token is `cdt1.<id>.<key>`: `key` is HMAC-SHA256 of the mesh's
//! join secret over the token id and the secret's generation, so only the
//! secret's holders can mint one, and rotating the secret voids every
//! token. A joiner never sends its token: it asks the leader for a fresh
//! challenge and answers HMAC(key, challenge || its own peer id). The
//! network layer authenticates the peer id (noise / TLS), so a proof
//! cannot be replayed by anyone else, nor reused after its challenge is
//! spent.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use coditect_consensus::NodeId;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::datadir::node_id_for;

type HmacSha256 = Hmac<Sha256>;

/// The prefix of every join token's text.
pub const TOKEN_PREFIX: &str = "cdt1";
/// How long a challenge may be answered, ms.
pub const CHALLENGE_TTL_MS: u64 = 30_000;
/// Challenges outstanding at most (the oldest are dropped first).
pub const MAX_CHALLENGES: usize = 4_096;

/// A join token as a joiner holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Its id (the replicated record's key).
    pub id: String,
    /// The key derived from the join secret.
    pub key: [u8; 32],
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl JoinToken {
    /// The token of `id` under `secret` at `generation`.
    pub fn derive(secret: &[u8], generation: u32, id: &str) -> JoinToken {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(b"coditect-join-token/1\0");
        mac.update(&generation.to_be_bytes());
        mac.update(id.as_bytes());
        JoinToken {
            id: id.to_string(),
            key: mac.finalize().into_bytes().into(),
        }
    }

    /// Its text, `cdt1.<id>.<hex key>`.
    pub fn to_text(&self) -> String {
        format!("{TOKEN_PREFIX}.{}.{}", self.id, hex::encode(self.key))
    }

    /// Parses the text form, with an error that says what is wrong (never
    /// echoing the key).
    pub fn parse(text: &str) -> Result<JoinToken, String> {
        let text = text.trim();
        let mut parts = text.split('.');
        let (Some(prefix), Some(id), Some(key), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!(
                "a join token has the form {TOKEN_PREFIX}.<id>.<key> (get one with `coditect token create`)"
            ));
        };
        if prefix != TOKEN_PREFIX {
            return Err(format!(
                "a join token starts with {TOKEN_PREFIX}. (this one starts with {:?})",
                prefix.chars().take(8).collect::<String>()
            ));
        }
        if id.is_empty()
            || id.len() > coditect_consensus::admission::MAX_TOKEN_ID_BYTES
            || !id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err("the join token's id is not letters and digits".into());
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(key, &mut bytes)
            .map_err(|_| "the join token's key is not 64 hex digits".to_string())?;
        Ok(JoinToken {
            id: id.to_string(),
            key: bytes,
        })
    }

    /// The proof that the holder of this token is `peer`, for `challenge`.
    pub fn prove(&self, challenge: &[u8], peer: &str) -> Vec<u8> {
        proof_mac(&self.key, challenge, peer)
            .finalize()
            .into_bytes()
            .to_vec()
    }
}

fn proof_mac(key: &[u8; 32], challenge: &[u8], peer: &str) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"coditect-join-proof/1\0");
    mac.update(&(challenge.len() as u32).to_be_bytes());
    mac.update(challenge);
    mac.update(peer.as_bytes());
    mac
}

/// Whether `proof` shows that `peer` holds token `id` of `secret` at
/// `generation`, for `challenge`. Compared in constant time.
pub fn verify_proof(
    secret: &[u8],
    generation: u32,
    id: &str,
    challenge: &[u8],
    peer: &str,
    proof: &[u8],
) -> bool {
    let token = JoinToken::derive(secret, generation, id);
    proof_mac(&token.key, challenge, peer)
        .verify_slice(proof)
        .is_ok()
}

/// Constant-time equality of two secrets (API tokens): their SHA-256
/// digests are compared, so neither length nor content leaks through timing.
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    use sha2::Digest;
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The leader's outstanding challenges: each is good once, for one peer,
/// for [`CHALLENGE_TTL_MS`].
#[derive(Debug, Default)]
pub struct Challenges {
    issued: BTreeMap<Vec<u8>, (String, u64)>,
}

impl Challenges {
    /// Records `nonce` as issued to `peer` at `now_ms`.
    pub fn issue(&mut self, nonce: Vec<u8>, peer: &str, now_ms: u64) {
        self.issued
            .retain(|_, (_, at)| now_ms.saturating_sub(*at) < CHALLENGE_TTL_MS);
        while self.issued.len() >= MAX_CHALLENGES {
            let oldest = self
                .issued
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(nonce, _)| nonce.clone());
            match oldest {
                Some(nonce) => self.issued.remove(&nonce),
                None => break,
            };
        }
        self.issued.insert(nonce, (peer.to_string(), now_ms));
    }

    /// Spends `nonce` for `peer`: true once, if it was issued to that peer
    /// within the time to live.
    pub fn take(&mut self, nonce: &[u8], peer: &str, now_ms: u64) -> bool {
        match self.issued.remove(nonce) {
            Some((owner, at)) => owner == peer && now_ms.saturating_sub(at) < CHALLENGE_TTL_MS,
            None => false,
        }
    }

    /// Challenges outstanding.
    pub fn len(&self) -> usize {
        self.issued.len()
    }

    /// Whether none is outstanding.
    pub fn is_empty(&self) -> bool {
        self.issued.is_empty()
    }
}

/// What a node knows about who may take part: from its replica when it is
/// a Raft member, else the leader's copy from the last heartbeat answer.
/// Its `Debug` never shows the API token.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AdmissionView {
    /// The HTTP API token of a guarded mesh.
    pub api_token: Option<coditect_consensus::admission::ApiToken>,
    /// The version of the replicated admission record it was made from.
    pub version: u64,
    /// The log index of the Raft membership it was made from.
    pub membership: u64,
    /// The mesh is open: anyone but `revoked` may take part.
    pub open: bool,
    /// The allowlist (empty when open).
    pub admitted: BTreeSet<String>,
    /// Peers revoked.
    pub revoked: BTreeSet<String>,
    /// Raft members (voters and learners), by peer id.
    pub members: BTreeSet<String>,
    /// Voters, by peer id.
    pub voters: BTreeSet<String>,
}

impl AdmissionView {
    /// Whether `peer` may take part.
    pub fn allows(&self, peer: &str) -> bool {
        !self.revoked.contains(peer) && (self.open || self.admitted.contains(peer))
    }
}

/// The kind of a request, as the sender check and its counter name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RequestKind {
    /// The join exchange (the only thing a stranger may send).
    Admit,
    /// A Raft RPC.
    Raft,
    /// Registration in the registry.
    Join,
    /// Liveness and holdings.
    Heartbeat,
    /// Run reports.
    Reports,
    /// A steal commit by the victim.
    CommitSteal,
    /// A steal ask by the thief.
    StealAsk,
    /// Leaving the mesh.
    Leave,
    /// Assignments, from the leader.
    Assign,
    /// Revocations, from the leader.
    Revoke,
    /// A blob slice.
    Blob,
    /// Mission reads (views, lists, results).
    Read,
    /// Submissions, mission control and token management.
    Write,
    /// A gossip advert.
    Advert,
    /// A gossip leader advert.
    LeaderAdvert,
}

impl RequestKind {
    /// Its label on `coditect_requests_refused_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Admit => "admit",
            RequestKind::Raft => "raft",
            RequestKind::Join => "join",
            RequestKind::Heartbeat => "heartbeat",
            RequestKind::Reports => "reports",
            RequestKind::CommitSteal => "commit_steal",
            RequestKind::StealAsk => "steal_ask",
            RequestKind::Leave => "leave",
            RequestKind::Assign => "assign",
            RequestKind::Revoke => "revoke",
            RequestKind::Blob => "blob",
            RequestKind::Read => "read",
            RequestKind::Write => "write",
            RequestKind::Advert => "advert",
            RequestKind::LeaderAdvert => "leader_advert",
        }
    }
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The sender is not on the allowlist (or was revoked).
    NotAdmitted,
    /// It speaks for a node id other than its own.
    WrongNode,
    /// Only the current leader may send it.
    NotLeader,
    /// Only a Raft member may send it.
    NotMember,
}

impl Refusal {
    /// Its label on `coditect_requests_refused_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotAdmitted => "not_admitted",
            Refusal::WrongNode => "wrong_node",
            Refusal::NotLeader => "not_leader",
            Refusal::NotMember => "not_member",
        }
    }
}

/// What the check needs to know about one request.
#[derive(Clone, Copy, Debug)]
pub struct Sender<'a> {
    /// The authenticated peer id it came from.
    pub peer: &'a str,
    /// What it asks.
    pub kind: RequestKind,
    /// The node id it speaks for, if it names one.
    pub claims: Option<NodeId>,
}

/// What the receiving node knows.
#[derive(Clone, Copy, Debug)]
pub struct Knowledge<'a> {
    /// Who may take part; `None` while the node knows nothing yet (a joiner
    /// before its first heartbeat answer), when only identity rules apply.
    pub view: Option<&'a AdmissionView>,
    /// The current leader's peer id, as Raft or the trusted leader advert says.
    pub leader: Option<&'a str>,
}

/// The one sender check: `Ok` to serve, else why not.
pub fn check(sender: Sender<'_>, knows: Knowledge<'_>) -> Result<(), Refusal> {
    if sender.kind == RequestKind::Admit {
        return Ok(());
    }
    if let Some(view) = knows.view {
        if !view.allows(sender.peer) {
            return Err(Refusal::NotAdmitted);
        }
    }
    if let Some(claimed) = sender.claims {
        if claimed != node_id_for(sender.peer) {
            return Err(Refusal::WrongNode);
        }
    }
    match sender.kind {
        RequestKind::Assign | RequestKind::Revoke if knows.leader != Some(sender.peer) => {
            return Err(Refusal::NotLeader);
        }
        RequestKind::Raft => {
            // A node that knows no members yet (a fresh standby) takes the
            // leader's RPCs; everyone else takes them from members only.
            let member = knows
                .view
                .is_some_and(|view| view.members.contains(sender.peer))
                || knows.leader == Some(sender.peer);
            let knows_members = knows.view.is_some_and(|view| !view.members.is_empty());
            if !member && (knows_members || knows.view.is_some_and(|view| !view.open)) {
                return Err(Refusal::NotMember);
            }
        }
        RequestKind::LeaderAdvert
            if knows.view.is_some_and(|view| {
                !view.voters.is_empty() && !view.voters.contains(sender.peer)
            }) =>
        {
            return Err(Refusal::NotMember);
        }
        _ => {}
    }
    Ok(())
}

/// How often a node that is refused logs why, at most.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// What admission needs to remember between calls.
#[derive(Default)]
pub(crate) struct AdmissionShell {
    /// Who may take part, as this node knows it (`None`: nothing known yet).
    pub(crate) view: Option<Arc<AdmissionView>>,
    /// Leader: the join challenges outstanding.
    pub(crate) challenges: Challenges,
    /// A join exchange is under way.
    pub(crate) exchanging: bool,
    /// When we last logged that the mesh refuses us.
    pub(crate) refused_logged: Option<Duration>,
    /// Why the leader refused our join token, if it did.
    pub(crate) refusal: Option<String>,
    /// The guarding of a new mesh is being committed.
    pub(crate) guarding: bool,
}

/// How this node takes part in admission (from the command line).
#[derive(Clone, Debug, Default)]
pub struct AdmissionSettings {
    /// The token to join with, if given.
    pub join_token: Option<JoinToken>,
    /// This node founded the mesh without `--open`: it gives the mesh its
    /// join secret (and retries until that is committed).
    pub guard_new_mesh: bool,
    /// The founder's API token, used from its first request and committed
    /// with the join secret.
    pub api_token: Option<String>,
    /// Where to keep the mesh's API token once known (`DATA_DIR/api-token`).
    pub api_token_file: Option<std::path::PathBuf>,
    /// Started with `--open` (local development): the HTTP API needs no
    /// token until the mesh has one.
    pub open: bool,
}

/// Who may use a node's HTTP API now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiAccess {
    /// Anyone who can reach it (an open mesh).
    Open,
    /// Holders of this token.
    Token(String),
    /// Nobody yet: the node knows neither the mesh's token nor that the
    /// mesh is open (a joiner before its admission); only its own status
    /// is served.
    Pending,
}

/// Whether a leader advert of `term` replaces the one held, if any: `held`
/// is its term and age. A newer or equal term replaces it; so does any
/// advert once the held one is older than `fresh` (a node that heard a
/// bogus high term from a voter, or a leader that restarted its term
/// count, is not deaf to the real leader for good).
pub fn replaces_leader_advert(held: Option<(u64, Duration)>, term: u64, fresh: Duration) -> bool {
    match held {
        None => true,
        Some((held_term, age)) => term >= held_term || age > fresh,
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_stale_leader_advert_gives_way_even_to_a_lower_term() {
        let fresh = Duration::from_millis(500);
        assert!(replaces_leader_advert(None, 1, fresh));
        assert!(replaces_leader_advert(Some((3, Duration::ZERO)), 3, fresh));
        assert!(!replaces_leader_advert(
            Some((u64::MAX, Duration::from_millis(100))),
            4,
            fresh
        ));
        assert!(replaces_leader_advert(
            Some((u64::MAX, Duration::from_millis(501))),
            4,
            fresh
        ));
    }
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tokens_round_trip_through_their_text_and_hide_their_key() {
        let token = JoinToken::derive(&[1; 32], 1, "abc123");
        let text = token.to_text();
        assert!(text.starts_with("cdt1.abc123."), "{text}");
        assert_eq!(JoinToken::parse(&text).unwrap(), token);
        assert_eq!(JoinToken::parse(&format!("  {text}\n")).unwrap(), token);
        assert!(!format!("{token:?}").contains(&hex::encode(token.key)));
        for bad in [
            "",
            "cdt1.abc",
            "cdt2.abc.00",
            "cdt1.a-b.00",
            "cdt1.abc.zz",
            "cdt1.abc.00.x",
        ] {
            let error = JoinToken::parse(bad).unwrap_err();
            assert!(!error.is_empty());
        }
    }

    #[test]
    fn a_proof_holds_only_for_its_peer_challenge_token_and_generation() {
        let secret = [3u8; 32];
        let token = JoinToken::derive(&secret, 2, "t1");
        let proof = token.prove(b"nonce", "peerA");
        assert!(verify_proof(&secret, 2, "t1", b"nonce", "peerA", &proof));
        assert!(!verify_proof(&secret, 2, "t1", b"nonce", "peerB", &proof));
        assert!(!verify_proof(&secret, 2, "t1", b"other", "peerA", &proof));
        assert!(!verify_proof(&secret, 3, "t1", b"nonce", "peerA", &proof));
        assert!(!verify_proof(&secret, 2, "t2", b"nonce", "peerA", &proof));
        assert!(!verify_proof(
            &[4u8; 32], 2, "t1", b"nonce", "peerA", &proof
        ));
        assert!(!verify_proof(
            &secret,
            2,
            "t1",
            b"nonce",
            "peerA",
            &proof[..16]
        ));
    }

    #[test]
    fn a_challenge_is_good_once_for_its_peer_within_its_ttl() {
        let mut challenges = Challenges::default();
        challenges.issue(vec![1], "a", 0);
        assert!(!challenges.take(&[1], "b", 1), "another peer");
        challenges.issue(vec![1], "a", 0);
        assert!(challenges.take(&[1], "a", 1));
        assert!(!challenges.take(&[1], "a", 2), "spent");
        challenges.issue(vec![2], "a", 0);
        assert!(!challenges.take(&[2], "a", CHALLENGE_TTL_MS), "expired");
        for i in 0..(MAX_CHALLENGES as u32 + 10) {
            challenges.issue(i.to_be_bytes().to_vec(), "x", 5);
        }
        assert!(challenges.len() <= MAX_CHALLENGES);
    }

    #[test]
    fn secrets_compare_by_content() {
        assert!(secrets_equal(b"abc", b"abc"));
        assert!(!secrets_equal(b"abc", b"abd"));
        assert!(!secrets_equal(b"abc", b"abcd"));
    }

    fn guarded(admitted: &[&str], members: &[&str]) -> AdmissionView {
        AdmissionView {
            api_token: None,
            version: 1,
            membership: 0,
            open: false,
            admitted: admitted.iter().map(|s| s.to_string()).collect(),
            revoked: BTreeSet::new(),
            members: members.iter().map(|s| s.to_string()).collect(),
            voters: members.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn ask(peer: &str, kind: RequestKind, claims: Option<NodeId>) -> Sender<'_> {
        Sender { peer, kind, claims }
    }

    #[test]
    fn strangers_may_only_ask_to_be_admitted() {
        let view = guarded(&["a", "l"], &["l"]);
        let knows = Knowledge {
            view: Some(&view),
            leader: Some("l"),
        };
        assert_eq!(check(ask("s", RequestKind::Admit, None), knows), Ok(()));
        for kind in [
            RequestKind::Raft,
            RequestKind::Join,
            RequestKind::Heartbeat,
            RequestKind::Blob,
            RequestKind::Read,
            RequestKind::Write,
            RequestKind::Advert,
            RequestKind::StealAsk,
        ] {
            assert_eq!(
                check(ask("s", kind, None), knows),
                Err(Refusal::NotAdmitted),
                "{kind:?}"
            );
        }
        assert_eq!(check(ask("a", RequestKind::Blob, None), knows), Ok(()));
    }

    #[test]
    fn node_ids_come_from_peer_ids_and_leader_messages_from_the_leader() {
        let view = guarded(&["a", "b", "l"], &["l", "a"]);
        let knows = Knowledge {
            view: Some(&view),
            leader: Some("l"),
        };
        let a = node_id_for("a");
        assert_eq!(
            check(ask("a", RequestKind::Heartbeat, Some(a)), knows),
            Ok(())
        );
        assert_eq!(
            check(ask("b", RequestKind::Leave, Some(a)), knows),
            Err(Refusal::WrongNode)
        );
        assert_eq!(check(ask("l", RequestKind::Assign, None), knows), Ok(()));
        assert_eq!(
            check(ask("a", RequestKind::Assign, None), knows),
            Err(Refusal::NotLeader)
        );
        assert_eq!(
            check(ask("a", RequestKind::Revoke, None), knows),
            Err(Refusal::NotLeader)
        );
        assert_eq!(check(ask("a", RequestKind::Raft, None), knows), Ok(()));
        assert_eq!(
            check(ask("b", RequestKind::Raft, None), knows),
            Err(Refusal::NotMember)
        );
        assert_eq!(
            check(ask("b", RequestKind::LeaderAdvert, None), knows),
            Err(Refusal::NotMember)
        );
    }

    #[test]
    fn an_open_mesh_still_checks_identities_and_revocations() {
        let mut view = AdmissionView {
            open: true,
            ..AdmissionView::default()
        };
        view.revoked.insert("r".into());
        let knows = Knowledge {
            view: Some(&view),
            leader: Some("l"),
        };
        assert_eq!(check(ask("x", RequestKind::Read, None), knows), Ok(()));
        assert_eq!(check(ask("x", RequestKind::Raft, None), knows), Ok(()));
        assert_eq!(
            check(ask("r", RequestKind::Read, None), knows),
            Err(Refusal::NotAdmitted)
        );
        assert_eq!(
            check(
                ask("x", RequestKind::Heartbeat, Some(node_id_for("y"))),
                knows
            ),
            Err(Refusal::WrongNode)
        );
    }

    proptest! {
        /// Nothing but the join exchange passes for a peer off the
        /// allowlist of a guarded mesh, whatever it claims; and no one
        /// passes while speaking for another node.
        #[test]
        fn the_check_never_serves_a_stranger_or_an_impostor(
            peer in "[a-e]",
            admitted in proptest::collection::btree_set("[a-e]", 0..5),
            members in proptest::collection::btree_set("[a-e]", 0..3),
            leader in proptest::option::of("[a-e]"),
            kind in 0usize..15,
            claims in proptest::option::of("[a-e]"),
        ) {
            let kinds = [
                RequestKind::Admit, RequestKind::Raft, RequestKind::Join, RequestKind::Heartbeat,
                RequestKind::Reports, RequestKind::CommitSteal, RequestKind::StealAsk,
                RequestKind::Leave, RequestKind::Assign, RequestKind::Revoke, RequestKind::Blob,
                RequestKind::Read, RequestKind::Write, RequestKind::Advert, RequestKind::LeaderAdvert,
            ];
            let kind = kinds[kind];
            let view = AdmissionView {
                api_token: None,
                version: 1,
                membership: 0,
                open: false,
                admitted: admitted.clone(),
                revoked: BTreeSet::new(),
                members: members.clone(),
                voters: members,
            };
            let knows = Knowledge { view: Some(&view), leader: leader.as_deref() };
            let claimed = claims.as_deref().map(node_id_for);
            let verdict = check(Sender { peer: &peer, kind, claims: claimed }, knows);
            if kind != RequestKind::Admit {
                if !admitted.contains(&peer) {
                    prop_assert_eq!(verdict, Err(Refusal::NotAdmitted));
                }
                if claims.as_deref().is_some_and(|c| c != peer) {
                    prop_assert!(verdict.is_err());
                }
                if matches!(kind, RequestKind::Assign | RequestKind::Revoke) && leader.as_deref() != Some(peer.as_str()) {
                    prop_assert!(verdict.is_err());
                }
            }
        }
    }
}
