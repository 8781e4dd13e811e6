//! Who may be part of the mesh: the replicated half of admission.
//!
//! A mesh is either open (no secret: anyone who dials in is served, for
//! local development) or guarded by a join secret created with the mesh.
//! Join tokens are records here (expiry, uses); the key a token holder
//! proves possession of is derived from the secret by the node
//! (`coditect_node::admission`), which checks the proof before it proposes
//! [`AdmissionCommand::Admit`]. This file only keeps the records and
//! decides, deterministically, whether an admission still fits its token
//! when the command applies (two joiners racing for a single-use token:
//! the first entry wins, the second is refused).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Join tokens kept at most (expired and used-up ones are dropped first).
pub const MAX_TOKENS: usize = 1_024;
/// Admitted peers at most.
pub const MAX_PEERS: usize = 100_000;
/// Revoked peers remembered (so every node keeps refusing them), at most.
pub const MAX_REVOKED: usize = 10_000;
/// Longest token id, bytes.
pub const MAX_TOKEN_ID_BYTES: usize = 64;
/// Longest peer id accepted, bytes (base58 ed25519 ids are 52).
pub const MAX_PEER_ID_BYTES: usize = 128;

/// The join secret of a guarded mesh.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinSecret {
    /// 32 random bytes.
    pub key: Vec<u8>,
    /// Bumped on each rotation; tokens of older generations are void.
    pub generation: u32,
    /// Leader's clock when it was made.
    pub created_ms: u64,
}

impl std::fmt::Debug for JoinSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("JoinSecret")
            .field("generation", &self.generation)
            .field("created_ms", &self.created_ms)
            .finish_non_exhaustive()
    }
}

/// The mesh's HTTP API token (`Authorization: Bearer <token>`); never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken(pub String);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(..)")
    }
}

/// Shortest and longest API token accepted, bytes.
pub const API_TOKEN_BYTES: std::ops::RangeInclusive<usize> = 32..=128;

/// One join token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Leader's clock at creation.
    pub created_ms: u64,
    /// Void from this time on (leader clock); `None`: never expires.
    pub expires_ms: Option<u64>,
    /// Admissions it allows; `None`: unlimited.
    pub max_uses: Option<u32>,
    /// Admissions made with it so far.
    pub used: u32,
    /// The secret generation it was derived from.
    pub generation: u32,
}

impl TokenRecord {
    /// Whether it may admit one more peer at `now_ms`, or why not.
    pub fn usable(&self, now_ms: u64, generation: u32) -> Result<(), String> {
        if self.generation != generation {
            return Err("the join token predates the current join secret (it was rotated)".into());
        }
        if self.expires_ms.is_some_and(|at| now_ms >= at) {
            return Err("the join token has expired".into());
        }
        if self.max_uses.is_some_and(|max| self.used >= max) {
            return Err("the join token has been used up".into());
        }
        Ok(())
    }
}

/// A peer on the allowlist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmittedPeer {
    /// Leader's clock at admission.
    pub admitted_ms: u64,
    /// The token it came in with (`None`: it founded the mesh).
    pub token: Option<String>,
}

/// The admission part of the replicated state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admission {
    /// `None`: an open mesh.
    pub secret: Option<JoinSecret>,
    /// The HTTP API token every admitted node accepts (guarded meshes).
    pub api_token: Option<ApiToken>,
    /// The allowlist, by peer id.
    pub peers: BTreeMap<String, AdmittedPeer>,
    /// Join tokens by id.
    pub tokens: BTreeMap<String, TokenRecord>,
    /// Peers revoked (they are refused even if they dial in again).
    pub revoked: BTreeSet<String>,
    /// Bumped on every change of the allowlist or the mode, so nodes outside
    /// Raft can tell that their copy is stale.
    pub version: u64,
}

/// A change to [`Admission`]; carried by `Command::Admission`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdmissionCommand {
    /// Guards a new mesh: the secret, and the founding peer on the allowlist.
    /// Refused once the mesh has a secret or any peer.
    Init {
        /// The secret.
        secret: Vec<u8>,
        /// The node that created the mesh.
        founder: String,
        /// The HTTP API token (the founder made it and already uses it).
        api_token: String,
        /// Leader's clock.
        at_ms: u64,
    },
    /// A new join token of the current generation.
    CreateToken {
        /// Its id (the leader picks it at random).
        id: String,
        /// Void from then (leader clock).
        expires_ms: Option<u64>,
        /// Admissions it allows.
        max_uses: Option<u32>,
        /// Leader's clock.
        at_ms: u64,
    },
    /// A token is void from now on.
    RevokeToken {
        /// Its id.
        id: String,
    },
    /// A peer proved it holds `token`: put it on the allowlist (one use of
    /// the token; a peer already on it uses nothing).
    Admit {
        /// The peer.
        peer: String,
        /// The token it proved.
        token: String,
        /// Leader's clock.
        at_ms: u64,
    },
    /// Takes a peer off the allowlist for good.
    RevokePeer {
        /// The peer.
        peer: String,
    },
    /// A new secret: admitted peers stay, every token is void.
    Rotate {
        /// The new secret.
        secret: Vec<u8>,
        /// Leader's clock.
        at_ms: u64,
    },
    /// A new HTTP API token: the old one is refused from now on (every
    /// node writes the new one to its token file as the change reaches it).
    RotateApiToken {
        /// The new token.
        api_token: String,
    },
}

impl Admission {
    /// Whether the mesh is open (no admission).
    pub fn is_open(&self) -> bool {
        self.secret.is_none()
    }

    /// Whether `peer` may take part: always in an open mesh unless revoked.
    pub fn allows(&self, peer: &str) -> bool {
        if self.revoked.contains(peer) {
            return false;
        }
        self.is_open() || self.peers.contains_key(peer)
    }

    /// Applies one command; `Err` is the refusal, and then nothing changed.
    pub fn apply(&mut self, command: &AdmissionCommand) -> Result<(), String> {
        match command {
            AdmissionCommand::Init {
                secret,
                founder,
                api_token,
                at_ms,
            } => {
                if self.secret.is_some() || !self.peers.is_empty() {
                    return Err("the mesh already has a join secret".into());
                }
                check_secret(secret)?;
                check_peer(founder)?;
                check_api_token(api_token)?;
                self.api_token = Some(ApiToken(api_token.clone()));
                self.secret = Some(JoinSecret {
                    key: secret.clone(),
                    generation: 1,
                    created_ms: *at_ms,
                });
                self.peers.insert(
                    founder.clone(),
                    AdmittedPeer {
                        admitted_ms: *at_ms,
                        token: None,
                    },
                );
                self.version += 1;
                Ok(())
            }
            AdmissionCommand::CreateToken {
                id,
                expires_ms,
                max_uses,
                at_ms,
            } => {
                let Some(secret) = &self.secret else {
                    return Err(
                        "the mesh is open (started with --open): it has no join tokens".into(),
                    );
                };
                if id.is_empty()
                    || id.len() > MAX_TOKEN_ID_BYTES
                    || !id.bytes().all(|b| b.is_ascii_alphanumeric())
                {
                    return Err(format!(
                        "token id {id:?} is not 1..{MAX_TOKEN_ID_BYTES} letters and digits"
                    ));
                }
                if self.tokens.contains_key(id) {
                    return Err(format!("token {id} exists already"));
                }
                if max_uses == &Some(0) {
                    return Err("a token must allow at least one use".into());
                }
                let generation = secret.generation;
                if self.tokens.len() >= MAX_TOKENS {
                    // Make room: drop what can never admit anyone again.
                    self.tokens
                        .retain(|_, token| token.usable(*at_ms, generation).is_ok());
                }
                if self.tokens.len() >= MAX_TOKENS {
                    return Err(format!(
                        "{MAX_TOKENS} usable join tokens exist already; revoke some first"
                    ));
                }
                self.tokens.insert(
                    id.clone(),
                    TokenRecord {
                        created_ms: *at_ms,
                        expires_ms: *expires_ms,
                        max_uses: *max_uses,
                        used: 0,
                        generation,
                    },
                );
                Ok(())
            }
            AdmissionCommand::RevokeToken { id } => match self.tokens.remove(id) {
                Some(_) => Ok(()),
                None => Err(format!("no join token {id}")),
            },
            AdmissionCommand::Admit { peer, token, at_ms } => {
                let Some(secret) = &self.secret else {
                    return Err("the mesh is open: nobody needs admitting".into());
                };
                check_peer(peer)?;
                if self.revoked.contains(peer) {
                    return Err(format!("peer {peer} was revoked"));
                }
                if self.peers.contains_key(peer) {
                    return Ok(());
                }
                let generation = secret.generation;
                let record = self
                    .tokens
                    .get_mut(token)
                    .ok_or_else(|| "unknown or revoked join token".to_string())?;
                record.usable(*at_ms, generation)?;
                if self.peers.len() >= MAX_PEERS {
                    return Err(format!("the mesh has {MAX_PEERS} admitted peers already"));
                }
                record.used += 1;
                self.peers.insert(
                    peer.clone(),
                    AdmittedPeer {
                        admitted_ms: *at_ms,
                        token: Some(token.clone()),
                    },
                );
                self.version += 1;
                Ok(())
            }
            AdmissionCommand::RevokePeer { peer } => {
                check_peer(peer)?;
                if self.secret.is_none() && self.revoked.contains(peer) {
                    return Err(format!("peer {peer} is revoked already"));
                }
                let was_admitted = self.peers.remove(peer).is_some();
                if !was_admitted && self.secret.is_some() {
                    return Err(format!("peer {peer} is not admitted"));
                }
                if self.revoked.len() >= MAX_REVOKED {
                    if let Some(oldest) = self.revoked.iter().next().cloned() {
                        self.revoked.remove(&oldest);
                    }
                }
                self.revoked.insert(peer.clone());
                self.version += 1;
                Ok(())
            }
            AdmissionCommand::Rotate { secret, at_ms } => {
                let Some(current) = &self.secret else {
                    return Err("the mesh is open: it has no join secret to rotate".into());
                };
                check_secret(secret)?;
                if secret == &current.key {
                    return Err("the new join secret equals the current one".into());
                }
                let generation = current.generation + 1;
                self.secret = Some(JoinSecret {
                    key: secret.clone(),
                    generation,
                    created_ms: *at_ms,
                });
                self.tokens.clear();
                self.version += 1;
                Ok(())
            }
            AdmissionCommand::RotateApiToken { api_token } => {
                if self.secret.is_none() {
                    return Err(
                        "the mesh is open (started with --open): its API has no token to rotate"
                            .into(),
                    );
                }
                check_api_token(api_token)?;
                if self
                    .api_token
                    .as_ref()
                    .is_some_and(|current| current.0 == *api_token)
                {
                    return Err("the new API token equals the current one".into());
                }
                self.api_token = Some(ApiToken(api_token.clone()));
                self.version += 1;
                Ok(())
            }
        }
    }
}

fn check_api_token(token: &str) -> Result<(), String> {
    if !API_TOKEN_BYTES.contains(&token.len()) || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the API token is not 32..=128 visible characters".into());
    }
    Ok(())
}

fn check_secret(secret: &[u8]) -> Result<(), String> {
    if secret.len() != 32 {
        return Err(format!("a join secret is 32 bytes, not {}", secret.len()));
    }
    Ok(())
}

fn check_peer(peer: &str) -> Result<(), String> {
    if peer.is_empty() || peer.len() > MAX_PEER_ID_BYTES {
        return Err(format!("{peer:?} is not a peer id"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn guarded() -> Admission {
        let mut admission = Admission::default();
        admission
            .apply(&AdmissionCommand::Init {
                secret: vec![7; 32],
                founder: "founder".into(),
                api_token: "a".repeat(40),
                at_ms: 0,
            })
            .unwrap();
        admission
    }

    fn token(admission: &mut Admission, id: &str, expires_ms: Option<u64>, uses: Option<u32>) {
        admission
            .apply(&AdmissionCommand::CreateToken {
                id: id.into(),
                expires_ms,
                max_uses: uses,
                at_ms: 1,
            })
            .unwrap();
    }

    fn admit(admission: &mut Admission, peer: &str, token: &str, at_ms: u64) -> Result<(), String> {
        admission.apply(&AdmissionCommand::Admit {
            peer: peer.into(),
            token: token.into(),
            at_ms,
        })
    }

    #[test]
    fn an_open_mesh_allows_everyone_but_the_revoked() {
        let mut admission = Admission::default();
        assert!(admission.is_open());
        assert!(admission.allows("anyone"));
        admission
            .apply(&AdmissionCommand::RevokePeer { peer: "bad".into() })
            .unwrap();
        assert!(!admission.allows("bad"));
        assert!(admission.allows("anyone"));
        let error = admission
            .apply(&AdmissionCommand::CreateToken {
                id: "t".into(),
                expires_ms: None,
                max_uses: None,
                at_ms: 0,
            })
            .unwrap_err();
        assert!(error.contains("open"), "{error}");
    }

    #[test]
    fn a_guarded_mesh_allows_only_its_allowlist() {
        let mut admission = guarded();
        assert!(admission.allows("founder"));
        assert!(!admission.allows("stranger"));
        assert!(admission
            .apply(&AdmissionCommand::Init {
                secret: vec![8; 32],
                founder: "other".into(),
                api_token: "b".repeat(40),
                at_ms: 0,
            })
            .is_err());
        token(&mut admission, "t1", None, None);
        admit(&mut admission, "stranger", "t1", 5).unwrap();
        assert!(admission.allows("stranger"));
        assert_eq!(admission.peers["stranger"].token.as_deref(), Some("t1"));
    }

    #[test]
    fn single_use_tokens_admit_once_and_expired_tokens_never() {
        let mut admission = guarded();
        token(&mut admission, "once", None, Some(1));
        token(&mut admission, "soon", Some(100), None);
        admit(&mut admission, "a", "once", 5).unwrap();
        // The same peer again uses nothing and is fine.
        admit(&mut admission, "a", "once", 6).unwrap();
        let error = admit(&mut admission, "b", "once", 7).unwrap_err();
        assert!(error.contains("used up"), "{error}");
        assert!(!admission.allows("b"));
        admit(&mut admission, "c", "soon", 99).unwrap();
        let error = admit(&mut admission, "d", "soon", 100).unwrap_err();
        assert!(error.contains("expired"), "{error}");
        let error = admit(&mut admission, "e", "nope", 1).unwrap_err();
        assert!(error.contains("unknown"), "{error}");
    }

    #[test]
    fn revoking_a_peer_keeps_it_out_and_revoking_a_token_voids_it() {
        let mut admission = guarded();
        token(&mut admission, "t", None, None);
        admit(&mut admission, "p", "t", 2).unwrap();
        let version = admission.version;
        admission
            .apply(&AdmissionCommand::RevokePeer { peer: "p".into() })
            .unwrap();
        assert!(admission.version > version);
        assert!(!admission.allows("p"));
        let error = admit(&mut admission, "p", "t", 3).unwrap_err();
        assert!(error.contains("revoked"), "{error}");
        admission
            .apply(&AdmissionCommand::RevokeToken { id: "t".into() })
            .unwrap();
        assert!(admit(&mut admission, "q", "t", 4).is_err());
    }

    #[test]
    fn rotation_keeps_peers_and_voids_tokens() {
        let mut admission = guarded();
        token(&mut admission, "t", None, None);
        admit(&mut admission, "p", "t", 2).unwrap();
        admission
            .apply(&AdmissionCommand::Rotate {
                secret: vec![9; 32],
                at_ms: 3,
            })
            .unwrap();
        assert!(admission.allows("p"));
        assert_eq!(admission.secret.as_ref().unwrap().generation, 2);
        assert!(admit(&mut admission, "q", "t", 4).is_err());
        token(&mut admission, "t2", None, None);
        admit(&mut admission, "q", "t2", 5).unwrap();
    }

    #[test]
    fn the_api_token_rotates_on_a_guarded_mesh_only_and_only_to_a_new_valid_one() {
        let mut admission = guarded();
        let before = admission.api_token.clone().unwrap();
        let version = admission.version;
        let rotate = |token: &str| AdmissionCommand::RotateApiToken {
            api_token: token.into(),
        };
        let error = admission.apply(&rotate(&before.0)).unwrap_err();
        assert!(error.contains("equals"), "{error}");
        assert!(admission.apply(&rotate("short")).is_err());
        assert!(admission.apply(&rotate(&"b c".repeat(20))).is_err());
        assert_eq!(admission.version, version, "a refusal changes nothing");
        admission.apply(&rotate(&"c".repeat(64))).unwrap();
        assert_eq!(admission.api_token.as_ref().unwrap().0, "c".repeat(64));
        assert_eq!(admission.version, version + 1, "the view moves on");
        assert!(admission.allows("founder"));
        let error = Admission::default()
            .apply(&rotate(&"d".repeat(64)))
            .unwrap_err();
        assert!(error.contains("open"), "{error}");
    }

    #[test]
    fn the_secret_is_never_printed() {
        let admission = guarded();
        let text = format!("{admission:?}");
        assert!(!text.contains("7, 7"), "{text}");
        assert!(!text.contains("aaaa"), "{text}");
    }

    proptest! {
        /// However admissions interleave, a token never admits more peers
        /// than its uses, and no one is admitted after its expiry.
        #[test]
        fn tokens_never_admit_beyond_their_uses_or_expiry(
            uses in 1u32..4,
            expiry in 10u64..50,
            attempts in proptest::collection::vec((0u8..8, 0u64..60), 0..40),
        ) {
            let mut admission = guarded();
            token(&mut admission, "t", Some(expiry), Some(uses));
            let mut admitted = BTreeSet::new();
            for (peer, at) in attempts {
                let peer = format!("p{peer}");
                let before = admission.peers.contains_key(&peer);
                let result = admit(&mut admission, &peer, "t", at);
                if result.is_err() {
                    prop_assert_eq!(admission.peers.contains_key(&peer), before);
                }
                if result.is_ok() && !before {
                    prop_assert!(at < expiry);
                    admitted.insert(peer);
                }
            }
            prop_assert!(admitted.len() <= uses as usize);
            prop_assert_eq!(admission.tokens["t"].used as usize, admitted.len());
        }
    }
}
