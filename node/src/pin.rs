//! The practice PIN: from `CASESYNC_PIN`, from the file `CASESYNC_PIN_FILE` names (for services
//! and scripts), or asked on the terminal without echo; and unlocking a data dir's device key with
//! it. Wrong PINs slow down: after three in a row each further try on that data dir waits
//! longer (2 s, 4 s, ... up to a minute), counted in `pin.failures`.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context};
use casesync_engine::identity::{DeviceIdentity, IdentityError, KdfCost, Pin};
use rand::RngCore;
use zeroize::Zeroizing;

/// The environment variable holding the PIN.
pub const PIN_ENV: &str = "CASESYNC_PIN";
/// The environment variable naming a file that holds the PIN.
pub const PIN_FILE_ENV: &str = "CASESYNC_PIN_FILE";
/// Counts wrong PINs in a row, in the data dir.
const FAILURES_FILE: &str = "pin.failures";
/// Wrong PINs in a row before tries are slowed down.
const FREE_TRIES: u32 = 3;
/// The longest wait before a try.
const WAIT_MAX: Duration = Duration::from_secs(60);

/// The PIN this process uses, once known (set by the demo and tests, or asked once on a
/// terminal), with the cost new key files get.
static PROCESS_PIN: Mutex<Option<(Zeroizing<String>, KdfCost)>> = Mutex::new(None);

/// Uses `text` as the PIN for everything this process opens (the demo, tests), sealing new key
/// files at `cost`.
pub fn use_for_process(text: &str, cost: KdfCost) {
    if let Ok(mut pin) = PROCESS_PIN.lock() {
        *pin = Some((Zeroizing::new(text.to_string()), cost));
    }
}

fn fresh() -> [u8; 40] {
    let mut bytes = [0u8; 40];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

/// A PIN from `text`, with fresh randomness.
pub fn from_text(text: &str) -> anyhow::Result<Pin> {
    Ok(Pin::new(text, fresh())?)
}

/// The PIN: set for the process, else `CASESYNC_PIN`, else the file `CASESYNC_PIN_FILE` names,
/// else asked on the terminal (`prompt`), once per process.
pub fn current(prompt: &str) -> anyhow::Result<Pin> {
    if let Some((text, cost)) = PROCESS_PIN.lock().ok().and_then(|p| p.clone()) {
        return Ok(Pin::new(&text, fresh())?.with_cost(cost));
    }
    if let Ok(text) = std::env::var(PIN_ENV) {
        let text = Zeroizing::new(text);
        return Ok(Pin::new(&text, fresh())?);
    }
    if let Some(path) = std::env::var_os(PIN_FILE_ENV) {
        let text = Zeroizing::new(
            std::fs::read_to_string(&path)
                .with_context(|| format!("reading the PIN from {} ({PIN_FILE_ENV})", Path::new(&path).display()))?,
        );
        return Ok(Pin::new(&text, fresh())?);
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        bail!("the device key is protected by the practice PIN: set {PIN_ENV}, or {PIN_FILE_ENV} to a file holding it, or run on a terminal");
    }
    let text = Zeroizing::new(rpassword::prompt_password(prompt).context("reading the PIN from the terminal")?);
    let pin = Pin::new(&text, fresh())?;
    use_for_process(&text, KdfCost::STANDARD);
    Ok(pin)
}

/// Asks for a new PIN twice on the terminal, or takes it from `CASESYNC_NEW_PIN` (scripts).
pub fn new_pin() -> anyhow::Result<Pin> {
    if let Ok(text) = std::env::var("CASESYNC_NEW_PIN") {
        return Ok(Pin::new(&Zeroizing::new(text), fresh())?);
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        bail!("no new PIN: set CASESYNC_NEW_PIN, or run on a terminal");
    }
    let first = Zeroizing::new(rpassword::prompt_password("new PIN: ")?);
    let second = Zeroizing::new(rpassword::prompt_password("new PIN again: ")?);
    if *first != *second {
        bail!("the two PINs differ: nothing changed");
    }
    Ok(Pin::new(&first, fresh())?)
}

/// Waits as long as the wrong PINs in a row on `data` ask for.
fn wait_for_turn(data: &Path) {
    let failures: u32 =
        std::fs::read_to_string(data.join(FAILURES_FILE)).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0);
    if failures >= FREE_TRIES {
        let wait = Duration::from_secs(1u64 << (failures - FREE_TRIES + 1).min(6)).min(WAIT_MAX);
        tracing::warn!(failures, wait_s = wait.as_secs(), "wrong PINs in a row: waiting before this try");
        std::thread::sleep(wait);
    }
}

/// Records the outcome of a try on `data`.
fn record(data: &Path, wrong: bool) {
    let path = data.join(FAILURES_FILE);
    if wrong {
        let failures: u32 = std::fs::read_to_string(&path).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0);
        let _ = std::fs::write(&path, format!("{}\n", failures.saturating_add(1)));
    } else if path.exists() {
        let _ = std::fs::remove_file(&path);
    }
}

/// Runs `attempt` (which opens the key file of `data` with a PIN) at the pace wrong PINs allow,
/// and counts a wrong PIN.
pub fn guarded<T>(data: &Path, attempt: impl FnOnce() -> Result<T, IdentityError>) -> anyhow::Result<T> {
    wait_for_turn(data);
    let attempt = attempt();
    // The key derivation's 128 MiB is free now: the allocator returns it rather than keep it.
    crate::freed_memory::give_back();
    match attempt {
        Err(IdentityError::WrongPin) => {
            record(data, true);
            bail!("wrong PIN for {}: nothing was opened (each wrong PIN in a row after {FREE_TRIES} makes the next try wait longer)", data.display())
        }
        Err(other) => Err(other.into()),
        Ok(value) => {
            record(data, false);
            Ok(value)
        }
    }
}

/// Loads the identity of `data` with the current PIN, if it has one.
pub fn unlock(data: &Path) -> anyhow::Result<Option<DeviceIdentity>> {
    if !DeviceIdentity::exists(data) {
        return Ok(None);
    }
    let pin = current(&format!("PIN for {}: ", data.display()))?;
    guarded(data, || DeviceIdentity::load(data, &pin))
}
