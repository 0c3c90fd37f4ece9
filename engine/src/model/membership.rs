//! Who may do what in a space, decided from the log alone: the same verdict on every node, a
//! relay included, whatever order the events arrived in (`docs/membership.md`).
//!
//! - The **founder** is the device whose key, with the nonce of its `Found` event (its seq 1),
//!   hashes to the space id. It is an admin without a grant.
//! - An admin **grants** a device a role for its events above `after` (the admin's head of that
//!   device when it signed), optionally until a date (a lease, compared with each event's hybrid
//!   clock). Admins write membership and cases; writers write cases; readers and relays author
//!   nothing.
//! - An admin **revokes** a device with a cut: the device's events above `cut` (the admin's head
//!   of it when it signed) never count. A device's chain is one signed sequence, so "above the
//!   cut" means exactly "not seen by the revoking admin": a laptop that wrote offline for a day
//!   and is revoked meanwhile loses that day on every node, the same way. A revoked key is never
//!   granted again (a new key is).
//! - An admin **invites**: the invitation's key may enrol one device, once, before it expires; the
//!   device's own first event (`Admit`, signed by the invitation key over the device's key) is
//!   its grant.
//!
//! Membership events are judged in one order every node shares: (hybrid clock, author, seq).
//! An event counts if its author held the needed role at that seq and time, given the cuts of the
//! revocations that count. A revocation also removes what its target wrote above the cut earlier
//! in that order (a revoked admin's backdated grants among them): judging restarts with the cut
//! pinned, until no new cut appears. When two admins revoke each other concurrently, the one
//! first in the order stands and the other falls (its author is cut below it).

mod change;
mod keys;

use std::collections::{BTreeMap, BTreeSet, HashMap};

pub use change::{admit_digest, founded_space, MembershipOp, NewGrant, Role};
pub use keys::KeyPlan;

use crate::model::hlc;
use crate::model::ids::{AuthorId, KeyId, SpaceId};
use crate::model::sealing::KeyWrap;
use crate::model::signing::VerifyingKey;

/// Why an event does not count.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The author holds no role in the space (never granted, or not yet known here).
    #[error("author {0} is not a member of this space")]
    NotMember(String),
    /// The author was revoked before this event.
    #[error("author {author} was revoked: its events above seq {cut} do not count")]
    Revoked {
        /// Short device id.
        author: String,
        /// Its last counted seq.
        cut: u64,
    },
    /// The author's grant had expired at the event's time.
    #[error("author {0}'s grant had expired when it wrote this event")]
    Expired(String),
    /// The author's role does not allow the event.
    #[error("author {author} is a {role}: {what} is not allowed")]
    NotAllowed {
        /// Short device id.
        author: String,
        /// Its role.
        role: Role,
        /// What it tried.
        what: &'static str,
    },
    /// A membership event that cannot be what it claims (a `Found` that does not make the space
    /// id, an admission without a valid invitation).
    #[error("invalid membership event: {0}")]
    Invalid(&'static str),
}

/// A membership event as judged: where it sits and what it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipRecord {
    /// Its author.
    pub author: AuthorId,
    /// Its seq.
    pub seq: u64,
    /// Its hybrid clock.
    pub hlc: u64,
    /// What it says.
    pub op: MembershipOp,
}

/// One grant that counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantRecord {
    /// The role.
    pub role: Role,
    /// Covers events above this seq.
    pub after: u64,
    /// Until (ms since the epoch).
    pub until_ms: Option<u64>,
    /// Who granted it (the device itself for an admission).
    pub by: AuthorId,
    /// When (hybrid clock of the grant).
    pub at_hlc: u64,
    /// The device's name.
    pub name: String,
}

/// One revocation that counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CutRecord {
    /// The device's last counted seq.
    pub cut: u64,
    /// Who revoked it.
    pub by: AuthorId,
    /// When (hybrid clock of the revocation).
    pub at_hlc: u64,
}

/// What the membership events of a space decide.
#[derive(Clone, Debug, Default)]
struct Decided {
    founder: Option<(AuthorId, String)>,
    grants: HashMap<AuthorId, Vec<GrantRecord>>,
    cuts: HashMap<AuthorId, CutRecord>,
    /// Invitations that count, by key: (role, expires_ms, until_ms, by, used).
    invites: HashMap<AuthorId, (Role, u64, Option<u64>, AuthorId, bool)>,
    /// Membership events that count, by (author, seq).
    counted: std::collections::HashSet<(AuthorId, u64)>,
    /// Data keys in the order they were introduced (the last seals new events).
    keys: Vec<KeyId>,
    /// Data key wraps that count, by recipient.
    wraps: HashMap<AuthorId, Vec<(KeyId, KeyWrap)>>,
    /// The device each used invitation enrolled, by invitation key.
    admitted: HashMap<AuthorId, AuthorId>,
}

/// What became of an invitation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InviteState {
    /// No invitation by an admin with that key is held.
    Unknown,
    /// A device enrolled with it already.
    Used,
    /// Its time ran out.
    Expired,
    /// It may enrol one device with this role.
    Open(Role),
}

/// A device as the membership of a space sees it (for `casesync device list`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceEntry {
    /// The device.
    pub device: AuthorId,
    /// Its name.
    pub name: String,
    /// Its role now (`None` once revoked or expired).
    pub role: Option<Role>,
    /// Its latest grant that counts (`None` for the founder).
    pub grant: Option<GrantRecord>,
    /// Its revocation, if any.
    pub revoked: Option<CutRecord>,
    /// Whether it founded the space.
    pub founder: bool,
}

/// The membership of one space: its membership events and what they decide.
#[derive(Clone, Debug)]
pub struct Membership {
    space: SpaceId,
    records: BTreeMap<(u64, AuthorId, u64), MembershipOp>,
    decided: Decided,
}

/// Upper bound on judging rounds (each adds a cut; there are never more cuts than records).
const ROUNDS_MAX: usize = 64;

impl Membership {
    /// No membership yet.
    pub fn new(space: SpaceId) -> Membership {
        Membership { space, records: BTreeMap::new(), decided: Decided::default() }
    }

    /// The space.
    pub fn space(&self) -> &SpaceId {
        &self.space
    }

    /// Whether the space's founding event is held.
    pub fn is_founded(&self) -> bool {
        self.decided.founder.is_some()
    }

    /// The founder.
    pub fn founder(&self) -> Option<AuthorId> {
        self.decided.founder.as_ref().map(|(a, _)| *a)
    }

    /// Every membership event held, in judging order.
    pub fn records(&self) -> impl Iterator<Item = MembershipRecord> + '_ {
        self.records.iter().map(|((hlc, author, seq), op)| MembershipRecord {
            author: *author,
            seq: *seq,
            hlc: *hlc,
            op: op.clone(),
        })
    }

    /// The authors of the membership events held, each once.
    pub fn authors(&self) -> BTreeSet<AuthorId> {
        self.records.keys().map(|(_, author, _)| *author).collect()
    }

    /// Whether a held membership event counts.
    pub fn counts(&self, author: &AuthorId, seq: u64) -> bool {
        self.decided.counted.contains(&(*author, seq))
    }

    /// Adds membership events (already stored or about to be) and judges them all again.
    pub fn add(&mut self, records: impl IntoIterator<Item = MembershipRecord>) {
        let mut added = false;
        for record in records {
            added |= self.records.insert((record.hlc, record.author, record.seq), record.op).is_none();
        }
        if added {
            self.decide();
        }
    }

    /// The role `author` holds for its event at `seq` written at `hlc`.
    pub fn role_at(&self, author: &AuthorId, seq: u64, hlc_value: u64) -> Result<Role, Refusal> {
        role_in(&self.decided, &HashMap::new(), author, seq, hlc_value)
    }

    /// Whether an event counts: a case event (`op` = `None`) needs a writer or admin; a membership
    /// event an admin (a `Found` or `Admit` brings its own proof). Judged against the membership
    /// held: a refusal for lack of a role may turn into a yes once more membership arrives.
    pub fn judge(&self, author: &AuthorId, seq: u64, hlc_value: u64, op: Option<&MembershipOp>) -> Result<(), Refusal> {
        match op {
            Some(MembershipOp::Found { nonce, .. }) => {
                if seq == 1 && founded_space(author, nonce) == self.space {
                    Ok(())
                } else {
                    Err(Refusal::Invalid("a founding event that does not make this space's id"))
                }
            }
            Some(MembershipOp::Admit { invite, proof, .. }) => {
                let mut trial = self.clone();
                trial.add([MembershipRecord {
                    author: *author,
                    seq,
                    hlc: hlc_value,
                    op: MembershipOp::Admit { invite: *invite, proof: *proof, name: String::new() },
                }]);
                if trial.counts(author, seq) {
                    Ok(())
                } else {
                    Err(Refusal::Invalid("an admission without a valid, unused, unexpired invitation"))
                }
            }
            Some(_) => {
                let role = self.role_at(author, seq, hlc_value)?;
                if role == Role::Admin {
                    Ok(())
                } else {
                    Err(Refusal::NotAllowed { author: author.device_id(), role, what: "changing membership" })
                }
            }
            None => {
                let role = self.role_at(author, seq, hlc_value)?;
                if role.writes_cases() {
                    Ok(())
                } else {
                    Err(Refusal::NotAllowed { author: author.device_id(), role, what: "writing cases" })
                }
            }
        }
    }

    /// How far the verdict on `author`'s case events, as judged at `seq`, holds without judging
    /// again: through the returned seq, for events whose hybrid clock is below the returned
    /// bound (the next grant that changes its role, its cut, the end of its grant). Lets a run
    /// of one author's events be judged once (ingest, folds), not once per event.
    pub fn case_verdict_span(&self, author: &AuthorId, seq: u64) -> (u64, u64) {
        let cut = [self.decided.cuts.get(author).map(|c| c.cut)].into_iter().flatten().min().unwrap_or(u64::MAX);
        if self.decided.founder.as_ref().is_some_and(|(f, _)| f == author) {
            return (if seq <= cut { cut } else { u64::MAX }, u64::MAX);
        }
        let Some(grants) = self.decided.grants.get(author) else { return (seq, 0) };
        let next_change = grants.iter().filter(|g| g.after >= seq).map(|g| g.after).min().unwrap_or(u64::MAX);
        let covering =
            grants.iter().filter(|g| g.after < seq).max_by(|a, b| a.after.cmp(&b.after).then(b.role.cmp(&a.role)));
        let until = covering.and_then(|g| g.until_ms).map_or(u64::MAX, |ms| ms.saturating_mul(1 << 16));
        let last = if seq <= cut { next_change.min(cut) } else { next_change };
        (last.max(seq), until)
    }

    /// Whether an admin granted `device` a role by an event whose clock is above `hlc_value`: a
    /// decision taken after what happened then (a fork of its chain).
    pub fn granted_after(&self, device: &AuthorId, hlc_value: u64) -> bool {
        self.decided.grants.get(device).is_some_and(|grants| grants.iter().any(|g| g.at_hlc > hlc_value))
    }

    /// The last seq of `author` that can count, when a revocation cut it.
    pub fn cut(&self, author: &AuthorId) -> Option<u64> {
        self.decided.cuts.get(author).map(|c| c.cut)
    }

    /// Every cut: author -> last seq that can count.
    pub fn cuts(&self) -> HashMap<AuthorId, u64> {
        self.decided.cuts.iter().map(|(a, c)| (*a, c.cut)).collect()
    }

    /// Whether `device` may hold a connection now: a member whose role holds at its next seq and
    /// at `now_ms` (a device that was never granted, is revoked or expired may not).
    pub fn may_connect(&self, device: &AuthorId, next_seq: u64, now_ms: u64) -> Result<Role, Refusal> {
        self.role_at(device, next_seq, now_ms.saturating_mul(1 << 16))
    }

    /// What became of an invitation, by its key.
    pub fn invite_state(&self, key: &AuthorId, now_ms: u64) -> InviteState {
        match self.decided.invites.get(key) {
            None => InviteState::Unknown,
            Some((_, _, _, _, true)) => InviteState::Used,
            Some((_, expires, ..)) if now_ms >= *expires => InviteState::Expired,
            Some((role, ..)) => InviteState::Open(*role),
        }
    }

    /// An unused, unexpired invitation that counts, by its key.
    pub fn open_invite(&self, key: &AuthorId, now_ms: u64) -> Option<Role> {
        self.decided
            .invites
            .get(key)
            .filter(|(_, expires, _, _, used)| !*used && now_ms < *expires)
            .map(|(role, ..)| *role)
    }

    /// Every device the membership names, founder first, then by name.
    pub fn devices(&self, now_ms: u64, heads: &HashMap<AuthorId, u64>) -> Vec<DeviceEntry> {
        let mut out = Vec::new();
        if let Some((founder, name)) = &self.decided.founder {
            let next = heads.get(founder).copied().unwrap_or(0) + 1;
            out.push(DeviceEntry {
                device: *founder,
                name: name.clone(),
                role: self.role_at(founder, next, now_ms.saturating_mul(1 << 16)).ok(),
                grant: None,
                revoked: self.decided.cuts.get(founder).copied(),
                founder: true,
            });
        }
        let mut others: Vec<_> = self.decided.grants.iter().filter(|(d, _)| Some(**d) != self.founder()).collect();
        others.sort_by(|a, b| a.1.last().map(|g| &g.name).cmp(&b.1.last().map(|g| &g.name)).then(a.0.cmp(b.0)));
        for (device, grants) in others {
            let next = heads.get(device).copied().unwrap_or(0) + 1;
            let grant = grants.iter().max_by_key(|g| (g.after, g.at_hlc)).cloned();
            out.push(DeviceEntry {
                device: *device,
                name: grant.as_ref().map(|g| g.name.clone()).unwrap_or_default(),
                role: self.role_at(device, next, now_ms.saturating_mul(1 << 16)).ok(),
                grant,
                revoked: self.decided.cuts.get(device).copied(),
                founder: false,
            });
        }
        out
    }

    /// The name a device was given (founder or grant), if any.
    pub fn name_of(&self, device: &AuthorId) -> Option<String> {
        if let Some((founder, name)) = &self.decided.founder {
            if founder == device {
                return Some(name.clone());
            }
        }
        self.decided
            .grants
            .get(device)
            .and_then(|g| g.iter().max_by_key(|g| (g.after, g.at_hlc)))
            .map(|g| g.name.clone())
    }

    /// Judges every record again, pinning the cuts of revocations until no new one appears.
    fn decide(&mut self) {
        let mut pins: HashMap<AuthorId, CutRecord> = HashMap::new();
        for _ in 0..ROUNDS_MAX {
            let decided = self.judge_all(&pins);
            let stable = decided.cuts.iter().all(|(a, c)| pins.get(a).is_some_and(|p| p.cut <= c.cut));
            if stable {
                self.decided = decided;
                return;
            }
            for (author, cut) in decided.cuts {
                pins.entry(author).and_modify(|p| *p = if cut.cut < p.cut { cut } else { *p }).or_insert(cut);
            }
        }
        // Unreachable in practice (every round pins a new cut); keep the last judgement.
        self.decided = self.judge_all(&pins);
    }

    fn judge_all(&self, pins: &HashMap<AuthorId, CutRecord>) -> Decided {
        let mut decided = Decided::default();
        // The founder first: its `Found` is its seq 1, before anything it could have granted.
        for ((_, author, seq), op) in &self.records {
            if let MembershipOp::Found { nonce, name } = op {
                if *seq == 1 && founded_space(author, nonce) == self.space && decided.founder.is_none() {
                    decided.founder = Some((*author, name.clone()));
                    decided.counted.insert((*author, *seq));
                }
            }
        }
        for (&(at_hlc, author, seq), op) in &self.records {
            match op {
                MembershipOp::Found { .. } => {}
                MembershipOp::Admit { invite, proof, name } => {
                    let Some(&(role, expires, until_ms, by, used)) = decided.invites.get(invite) else { continue };
                    let proof_ok = VerifyingKey::new(invite)
                        .and_then(|key| key.verify(&admit_digest(&self.space, &author), proof))
                        .is_ok();
                    let fresh = !decided.grants.contains_key(&author) && !decided.cuts.contains_key(&author);
                    if used || !proof_ok || !fresh || seq != 1 || hlc::millis(at_hlc) >= expires {
                        continue;
                    }
                    if let Some(entry) = decided.invites.get_mut(invite) {
                        entry.4 = true;
                    }
                    decided.admitted.insert(*invite, author);
                    decided.grants.entry(author).or_default().push(GrantRecord {
                        role,
                        after: 0,
                        until_ms,
                        by,
                        at_hlc,
                        name: name.clone(),
                    });
                    decided.counted.insert((author, seq));
                }
                _ => {
                    if role_in(&decided, pins, &author, seq, at_hlc) != Ok(Role::Admin) {
                        continue;
                    }
                    decided.counted.insert((author, seq));
                    match op {
                        MembershipOp::Grant { device, role, name, after, until_ms } => {
                            // A key revoked earlier in the order is never granted again; the
                            // founder needs no grant.
                            if decided.cuts.contains_key(device)
                                || decided.founder.as_ref().is_some_and(|(f, _)| f == device)
                            {
                                decided.counted.remove(&(author, seq));
                                continue;
                            }
                            decided.grants.entry(*device).or_default().push(GrantRecord {
                                role: *role,
                                after: *after,
                                until_ms: *until_ms,
                                by: author,
                                at_hlc,
                                name: name.clone(),
                            });
                        }
                        MembershipOp::Revoke { device, cut } => {
                            let record = CutRecord { cut: *cut, by: author, at_hlc };
                            decided
                                .cuts
                                .entry(*device)
                                .and_modify(|c| *c = if record.cut < c.cut { record } else { *c })
                                .or_insert(record);
                        }
                        MembershipOp::Invite { key, role, expires_ms, until_ms } => {
                            decided.invites.entry(*key).or_insert((*role, *expires_ms, *until_ms, author, false));
                        }
                        MembershipOp::ShareKey { key, wraps } => {
                            if !decided.keys.contains(key) {
                                decided.keys.push(*key);
                            }
                            for wrap in wraps {
                                decided.wraps.entry(wrap.to).or_default().push((*key, wrap.clone()));
                            }
                        }
                        MembershipOp::Found { .. } | MembershipOp::Admit { .. } => {}
                    }
                }
            }
        }
        decided
    }
}

/// The role of `author` at `seq` and `hlc_value` under `decided`, with `pins` as further cuts.
fn role_in(
    decided: &Decided,
    pins: &HashMap<AuthorId, CutRecord>,
    author: &AuthorId,
    seq: u64,
    hlc_value: u64,
) -> Result<Role, Refusal> {
    let cut = [decided.cuts.get(author), pins.get(author)].into_iter().flatten().map(|c| c.cut).min();
    if let Some(cut) = cut {
        if seq > cut {
            return Err(Refusal::Revoked { author: author.device_id(), cut });
        }
    }
    if decided.founder.as_ref().is_some_and(|(f, _)| f == author) {
        return Ok(Role::Admin);
    }
    let grants = decided.grants.get(author).ok_or_else(|| Refusal::NotMember(author.device_id()))?;
    // The grant covering this seq: the one with the highest `after` below it; of equals, the
    // least role (two admins' concurrent changes: the stricter stands).
    let grant = grants
        .iter()
        .filter(|g| g.after < seq)
        .max_by(|a, b| a.after.cmp(&b.after).then(b.role.cmp(&a.role)))
        .ok_or_else(|| Refusal::NotMember(author.device_id()))?;
    if grant.until_ms.is_some_and(|until| hlc::millis(hlc_value) >= until) {
        return Err(Refusal::Expired(author.device_id()));
    }
    Ok(grant.role)
}

#[cfg(test)]
mod tests;
