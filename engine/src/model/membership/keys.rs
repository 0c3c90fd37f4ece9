//! The space's data keys as membership decides them: which keys exist (in the order they were
//! introduced), who holds a wrap of each, and what an admin's node must do so that every member
//! can read and no revoked device can read what is written next (`docs/encryption.md`).

use super::{Membership, Role};
use crate::model::ids::{AuthorId, KeyId};
use crate::model::sealing::KeyWrap;

/// What an admin's node should write to keep the space's keys right.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPlan {
    /// Introduce a new data key, wrapped for every recipient: there is none yet, or the newest
    /// one was wrapped for a device that has since been revoked.
    pub rotate: bool,
    /// Keys this node holds, each with the recipients that lack a wrap of it.
    pub share: Vec<(KeyId, Vec<AuthorId>)>,
}

impl KeyPlan {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        !self.rotate && self.share.is_empty()
    }
}

impl Membership {
    /// The data keys, in the order they were introduced.
    pub fn keys(&self) -> &[KeyId] {
        &self.decided.keys
    }

    /// The wraps (that count) addressed to `to`.
    pub fn wraps_for(&self, to: &AuthorId) -> &[(KeyId, KeyWrap)] {
        self.decided.wraps.get(to).map_or(&[], Vec::as_slice)
    }

    /// The key new events are sealed under: the newest key introduced that `holds` says is held.
    pub fn sealing_key(&self, holds: impl Fn(&KeyId) -> bool) -> Option<KeyId> {
        self.decided.keys.iter().rev().find(|k| holds(k)).copied()
    }

    /// Whether `to` is out: a revoked device, or an invitation that enrolled one.
    fn is_out(&self, to: &AuthorId) -> bool {
        let device = self.decided.admitted.get(to).unwrap_or(to);
        self.decided.cuts.contains_key(device)
    }

    /// Who should hold the space's keys now: the founder and every device whose latest grant is
    /// to read or write, unless revoked; and every open invitation (its code's holder joins with
    /// it). Relays never do.
    pub fn key_recipients(&self, now_ms: u64) -> Vec<AuthorId> {
        let mut out = Vec::new();
        if let Some((founder, _)) = &self.decided.founder {
            if !self.decided.cuts.contains_key(founder) {
                out.push(*founder);
            }
        }
        for (device, grants) in &self.decided.grants {
            let latest = grants.iter().max_by(|a, b| a.after.cmp(&b.after).then(b.role.cmp(&a.role)));
            let reads = latest.is_some_and(|g| g.role != Role::Relay);
            if reads && !self.decided.cuts.contains_key(device) && Some(*device) != self.founder() {
                out.push(*device);
            }
        }
        for key in self.decided.invites.keys() {
            if self.open_invite(key, now_ms).is_some() {
                out.push(*key);
            }
        }
        out.sort();
        out
    }

    /// What to write so that every recipient holds every key this node holds, and the newest key
    /// is not held by anyone revoked.
    pub fn key_plan(&self, holds: impl Fn(&KeyId) -> bool, now_ms: u64) -> KeyPlan {
        let rotate = match self.decided.keys.last() {
            None => true,
            Some(newest) => {
                self.decided.wraps.iter().any(|(to, wraps)| wraps.iter().any(|(k, _)| k == newest) && self.is_out(to))
            }
        };
        let recipients = self.key_recipients(now_ms);
        let mut share = Vec::new();
        for key in self.decided.keys.iter().filter(|k| holds(k)) {
            let lacking: Vec<AuthorId> =
                recipients.iter().filter(|to| !self.wraps_for(to).iter().any(|(k, _)| k == key)).copied().collect();
            if !lacking.is_empty() {
                share.push((*key, lacking));
            }
        }
        KeyPlan { rotate, share }
    }
}
