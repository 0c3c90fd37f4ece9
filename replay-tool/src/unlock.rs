//! The practice PIN for this tool: from `CASESYNC_PIN`, or the file `CASESYNC_PIN_FILE` names.
//! With it, the data dir's device key opens and, through the key shares in the log, the space's
//! data keys: folds (rebuild, at, audit, verify's replay) read sealed bodies. Without it, the
//! tool still verifies chains and signatures, exports and imports events, but reads no body.

use std::path::Path;

use anyhow::Context;
use casesync_engine::identity::{DeviceIdentity, Pin};
use casesync_engine::model::signing::DeviceKey;
use rand::RngCore;
use zeroize::Zeroizing;

/// The PIN, if the environment gives one.
pub fn pin() -> anyhow::Result<Option<Pin>> {
    let text = match (std::env::var("CASESYNC_PIN"), std::env::var_os("CASESYNC_PIN_FILE")) {
        (Ok(text), _) => Zeroizing::new(text),
        (Err(_), Some(path)) => Zeroizing::new(
            std::fs::read_to_string(&path)
                .with_context(|| format!("reading the PIN from {} (CASESYNC_PIN_FILE)", Path::new(&path).display()))?,
        ),
        (Err(_), None) => return Ok(None),
    };
    let mut fresh = [0u8; 40];
    rand::rngs::OsRng.fill_bytes(&mut fresh);
    Ok(Some(Pin::new(&text, fresh)?))
}

/// The keys of `data`'s device that data keys are wrapped to, when a PIN is given and the data
/// dir holds a device key; none otherwise. A wrong PIN is an error.
pub fn recipients(data: &Path) -> anyhow::Result<Vec<DeviceKey>> {
    let Some(pin) = pin()? else { return Ok(Vec::new()) };
    let read = DeviceIdentity::read(data, &pin);
    // The key derivation filled 128 MiB and freed it: mimalloc (`main.rs`) would keep it for
    // later allocations and count it in the tool's memory for the rest of the run; it goes back.
    give_back_freed_memory();
    match read {
        Ok(Some((identity, _))) => Ok(identity.recipients()),
        Ok(None) => Ok(Vec::new()),
        Err(error) => Err(anyhow::Error::new(error).context(format!("the device key of {}", data.display()))),
    }
}

/// Returns the pages the allocator holds free to the system.
#[allow(unsafe_code)]
fn give_back_freed_memory() {
    // SAFETY: `mi_collect` takes no pointers and may be called from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
