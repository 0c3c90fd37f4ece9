//! The store's data keys: unwrapped from the log's key shares for this node's recipients (its
//! device key, the invitation it joined with) and held in memory only; introduced, rotated and
//! shared by an admin's node as membership changes (`docs/encryption.md`).

use std::sync::Arc;

use crate::error::{AppendError, StoreError};
use crate::model::ids::{KeyId, SpaceId};
use crate::model::membership::{KeyPlan, MembershipOp, Role};
use crate::model::sealing::{unwrap_key, wrap_key, DataKey, KeySet};
use crate::model::signing::DeviceKey;
use crate::projection::missed_keys;
use crate::writer::Writer;

use super::Store;

impl Store {
    /// The data keys this store holds unwrapped.
    pub fn keys(&self) -> Arc<KeySet> {
        self.db.keys()
    }

    /// Adds a secret key data keys may be wrapped to (the invitation key a device joins with),
    /// and unwraps what the log holds for it. Returns the spaces whose views were folded again.
    pub fn add_recipient(&self, key: DeviceKey) -> Result<Vec<SpaceId>, StoreError> {
        let mut writer = self.lock_writer();
        if let Ok(mut recipients) = self.recipients.lock() {
            if !recipients.iter().any(|r| r.author() == key.author()) {
                recipients.push(key);
            }
        }
        self.refresh_keys_locked(&mut writer)
    }

    /// The id of the key this device seals new events of `space` under, if it holds one.
    pub fn sealing_key(&self, space: &SpaceId) -> Option<KeyId> {
        let keys = self.db.keys();
        self.membership(space).sealing_key(|k| keys.holds(k))
    }

    /// What an admin's node should write in `space` to keep its keys right (see
    /// [`crate::model::membership::KeyPlan`]).
    pub fn key_plan(&self, space: &SpaceId, now_ms: u64) -> KeyPlan {
        let keys = self.db.keys();
        self.membership(space).key_plan(|k| keys.holds(k), now_ms)
    }

    /// Carries out [`Store::key_plan`] as `key`'s device: introduces a new data key made from
    /// `fresh` (the caller's 32 random bytes) when there is none or the newest is held by a
    /// revoked device, and wraps every key it holds for every recipient lacking it. Returns the
    /// key shares written (none when `key` is not an admin's: its changes would not count).
    pub fn maintain_keys(
        &self,
        space: &SpaceId,
        key: &DeviceKey,
        now_ms: u64,
        fresh: [u8; 32],
    ) -> Result<usize, AppendError> {
        let _upkeep = self.key_upkeep.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let membership = self.membership(space);
        if !membership.is_founded() {
            return Ok(0);
        }
        let next = self.head(space, &key.author()).map_or(1, |h| h.seq + 1);
        let now_hlc = now_ms.saturating_mul(1 << 16);
        if membership.role_at(&key.author(), next, now_hlc) != Ok(Role::Admin) {
            return Ok(0);
        }
        let held = self.db.keys();
        let plan = membership.key_plan(|k| held.holds(k), now_ms);
        let mut shares = Vec::new();
        if plan.rotate {
            let new_key = DataKey::from_secret(fresh);
            let mut recipients = membership.key_recipients(now_ms);
            if !recipients.contains(&key.author()) {
                recipients.push(key.author());
            }
            shares.push(share(space, &new_key, &recipients)?);
            // Held at once, so the next event is sealed under it.
            self.db.set_keys(Arc::new(held.extended([new_key])));
        }
        for (id, lacking) in &plan.share {
            if let Some(data_key) = held.get(id) {
                for chunk in lacking.chunks(crate::model::limits::KEY_WRAPS_PER_EVENT_MAX) {
                    shares.push(share(space, data_key, chunk)?);
                }
            }
        }
        shares.retain(|op| matches!(op, MembershipOp::ShareKey { wraps, .. } if !wraps.is_empty()));
        for op in &shares {
            self.change_membership(space, key, now_ms, op)?;
        }
        Ok(shares.len())
    }

    /// Unwraps the keys wrapped to this node's recipients that it does not hold yet, then folds
    /// again the views of every space that missed bodies under a key now held.
    pub(super) fn refresh_keys_locked(&self, writer: &mut Writer) -> Result<Vec<SpaceId>, StoreError> {
        let held = self.db.keys();
        let mut new: Vec<DataKey> = Vec::new();
        {
            let recipients = match self.recipients.lock() {
                Ok(r) => r,
                Err(poisoned) => poisoned.into_inner(),
            };
            for (space, membership) in &writer.log.membership {
                for recipient in recipients.iter() {
                    for (id, wrap) in membership.wraps_for(&recipient.author()) {
                        if held.holds(id) || new.iter().any(|k| k.id() == *id) {
                            continue;
                        }
                        match unwrap_key(space, id, wrap, recipient) {
                            Ok(data_key) => new.push(data_key),
                            Err(error) => {
                                tracing::warn!(space = %space.short(), key = %id.short(), %error, "a key share for this device does not open")
                            }
                        }
                    }
                }
            }
        }
        if !new.is_empty() {
            let keys = Arc::new(held.extended(new));
            self.db.set_keys(keys.clone());
            writer.bulk.use_keys(&keys);
        }
        let held = self.db.keys();
        let mut refolded = Vec::new();
        if self.options.projections && !held.is_empty() {
            let spaces: Vec<SpaceId> = writer.log.heads.keys().copied().collect();
            for space in spaces {
                if missed_keys::missed(&self.db, &space)?.iter().any(|k| held.holds(k)) {
                    tracing::info!(space = %space.short(), "a data key arrived for events already held: folding the views again");
                    writer.rebuild(&self.db, &space)?;
                    refolded.push(space);
                }
            }
        }
        Ok(refolded)
    }
}

/// A key share of `data_key` for `recipients`.
fn share(
    space: &SpaceId,
    data_key: &DataKey,
    recipients: &[crate::model::ids::AuthorId],
) -> Result<MembershipOp, AppendError> {
    let wraps = recipients
        .iter()
        .filter_map(|to| match wrap_key(space, data_key, to) {
            Ok(wrap) => Some(wrap),
            Err(error) => {
                tracing::warn!(device = %to.device_id(), %error, "no key share for a key that is not a device key");
                None
            }
        })
        .collect();
    Ok(MembershipOp::ShareKey { key: data_key.id(), wraps })
}
