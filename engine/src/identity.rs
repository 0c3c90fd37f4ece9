//! The device identity kept in a node's data dir: its signing key (`device.key`, sealed under the
//! practice PIN: `identity/key_file.rs`; mode 0600, never logged) and its human name
//! (`device.name`); and the data dir itself, created 0700 and checked at every open
//! (`secure_data_dir`): only the user who owns it may read it.

mod key_file;

pub use key_file::{KdfCost, Pin, PIN_CHARS_MIN};

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::model::ids::AuthorId;
use crate::model::limits::DEVICE_NAME_BYTES_MAX;
use crate::model::signing::DeviceKey;

/// File holding the 32 secret key bytes.
pub const KEY_FILE: &str = "device.key";
/// File holding the device's human name.
pub const NAME_FILE: &str = "device.name";

/// A problem with the identity files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Reading or writing a file failed.
    #[error("identity file {file}: {source}")]
    Io {
        /// Which file.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file is damaged or not a key file.
    #[error("the device key file is damaged: {0}")]
    BadKeyFile(String),
    /// The PIN does not open the key file.
    #[error("wrong PIN: the device key file does not open with it")]
    WrongPin,
    /// A PIN shorter than [`PIN_CHARS_MIN`].
    #[error("a PIN has at least {PIN_CHARS_MIN} characters")]
    PinTooShort,
    /// The device name is empty, too long or has control characters.
    #[error("device name must be 1 to {DEVICE_NAME_BYTES_MAX} bytes without control characters")]
    BadName,
    /// The data dir or its key file belongs to another user than the one running casesync.
    #[error("{0} belongs to another user: run casesync as the user who owns the data dir")]
    NotOwner(String),
}

/// Creates the data dir `dir` (mode 0700) when missing; for one that exists, checks that the
/// user running this process owns it and its key file, and takes group and other permissions
/// off both (0700, 0600) where an older release or a copy left them looser. Called at every
/// open: the key and the cases are readable by their owner only.
pub fn secure_data_dir(dir: &Path) -> Result<(), IdentityError> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io(dir))?;
        let me = rustix::process::geteuid().as_raw();
        for (path, private) in [(dir.to_path_buf(), 0o700), (dir.join(KEY_FILE), 0o600)] {
            let metadata = match fs::metadata(&path) {
                Ok(metadata) => metadata,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&path)(e)),
            };
            if metadata.uid() != me {
                return Err(IdentityError::NotOwner(path.display().to_string()));
            }
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "readable by others: made private");
                fs::set_permissions(&path, fs::Permissions::from_mode(private)).map_err(io(&path))?;
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    fs::create_dir_all(dir).map_err(io(dir))?;
    Ok(())
}

/// This device: its key and its name.
#[derive(Debug, Clone)]
pub struct DeviceIdentity {
    /// The signing key.
    pub key: DeviceKey,
    /// The human name ("office", "laptop").
    pub name: String,
    /// The keys of the invitations this device joined with: data keys wrapped to them are its.
    pub invites: Vec<DeviceKey>,
}

fn io(file: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io { file: file.display().to_string(), source }
}

/// Checks a device name.
pub fn validate_name(name: &str) -> Result<(), IdentityError> {
    if name.is_empty() || name.len() > DEVICE_NAME_BYTES_MAX || name.chars().any(char::is_control) {
        return Err(IdentityError::BadName);
    }
    Ok(())
}

impl DeviceIdentity {
    /// The author id (public key).
    pub fn author(&self) -> AuthorId {
        self.key.author()
    }

    /// Every secret key data keys may be wrapped to for this device: its own, and its
    /// invitations'.
    pub fn recipients(&self) -> Vec<DeviceKey> {
        std::iter::once(self.key.clone()).chain(self.invites.iter().cloned()).collect()
    }

    /// Loads the identity from `dir` with the PIN, if there is one. A key file of the releases
    /// before the PIN (the plain key) is sealed under `pin` on the way.
    pub fn load(dir: &Path, pin: &Pin) -> Result<Option<DeviceIdentity>, IdentityError> {
        let Some((identity, plain)) = DeviceIdentity::read(dir, pin)? else { return Ok(None) };
        if plain {
            tracing::warn!(path = %dir.join(KEY_FILE).display(), "the device key was stored without a PIN: sealing it under the PIN");
            identity.save(dir, pin)?;
        }
        Ok(Some(identity))
    }

    /// [`DeviceIdentity::load`] that never writes: also returns whether the key file is the plain
    /// key of the releases before the PIN (left as it is). For operators' tools.
    pub fn read(dir: &Path, pin: &Pin) -> Result<Option<(DeviceIdentity, bool)>, IdentityError> {
        let key_path = dir.join(KEY_FILE);
        if !key_path.exists() {
            return Ok(None);
        }
        let bytes = zeroize::Zeroizing::new(fs::read(&key_path).map_err(io(&key_path))?);
        let (secrets, plain) = if key_file::is_plain(&bytes) {
            let mut device = [0u8; 32];
            device.copy_from_slice(&bytes);
            (key_file::Secrets { device, invites: Vec::new() }, true)
        } else {
            (key_file::open(&bytes, pin)?, false)
        };
        let name = Self::read_name(dir)?;
        let key = DeviceKey::from_secret(secrets.device);
        let name = if name.is_empty() { key.author().device_id() } else { name };
        let invites = secrets.invites.iter().map(|s| DeviceKey::from_secret(*s)).collect();
        Ok(Some((DeviceIdentity { key, name, invites }, plain)))
    }

    /// Whether `dir` holds a device key file.
    pub fn exists(dir: &Path) -> bool {
        dir.join(KEY_FILE).exists()
    }

    /// Writes the key file sealed under `pin` (atomically: a crash leaves the old or the new).
    pub fn save(&self, dir: &Path, pin: &Pin) -> Result<(), IdentityError> {
        let secrets = key_file::Secrets {
            device: self.key.secret(),
            invites: self.invites.iter().map(DeviceKey::secret).collect(),
        };
        let sealed = key_file::seal(&secrets, pin)?;
        write_private(dir, KEY_FILE, &sealed)
    }

    /// Seals the key file under `new` instead of `old`.
    pub fn change_pin(dir: &Path, old: &Pin, new: &Pin) -> Result<DeviceIdentity, IdentityError> {
        let identity = DeviceIdentity::load(dir, old)?
            .ok_or_else(|| IdentityError::BadKeyFile(format!("{} holds no device key", dir.display())))?;
        identity.save(dir, new)?;
        Ok(identity)
    }

    fn read_name(dir: &Path) -> Result<String, IdentityError> {
        let name_path = dir.join(NAME_FILE);
        match fs::read_to_string(&name_path) {
            Ok(text) => Ok(text.trim().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(io(&name_path)(e)),
        }
    }

    /// Creates a new identity in `dir` from fresh secret bytes, replacing any existing one (an
    /// existing key file is kept as `device.key.retired-<device id>`).
    /// The existing key file, if any, is kept as `device.key.retired-<time>` (still sealed).
    pub fn create(dir: &Path, name: &str, secret: [u8; 32], pin: &Pin) -> Result<DeviceIdentity, IdentityError> {
        validate_name(name)?;
        secure_data_dir(dir)?;
        let key_path = dir.join(KEY_FILE);
        if key_path.exists() {
            let mut n = 1;
            let mut retired = dir.join(format!("{KEY_FILE}.retired-{n}"));
            while retired.exists() && n < 10_000 {
                n += 1;
                retired = dir.join(format!("{KEY_FILE}.retired-{n}"));
            }
            fs::rename(&key_path, &retired).map_err(io(&retired))?;
        }
        let identity =
            DeviceIdentity { key: DeviceKey::from_secret(secret), name: name.to_string(), invites: Vec::new() };
        identity.save(dir, pin)?;
        let name_path = dir.join(NAME_FILE);
        fs::write(&name_path, format!("{name}\n")).map_err(io(&name_path))?;
        Ok(identity)
    }

    /// Loads the identity, creating one with `name` and `secret()` when there is none.
    pub fn load_or_create(
        dir: &Path,
        name: &str,
        secret: impl FnOnce() -> [u8; 32],
        pin: &Pin,
    ) -> Result<(DeviceIdentity, bool), IdentityError> {
        match DeviceIdentity::load(dir, pin)? {
            Some(identity) => Ok((identity, false)),
            None => Ok((DeviceIdentity::create(dir, name, secret(), pin)?, true)),
        }
    }
}

/// Writes `bytes` to `dir/file` with mode 0600, synced, through a temporary file renamed over it.
fn write_private(dir: &Path, file: &str, bytes: &[u8]) -> Result<(), IdentityError> {
    let path = dir.join(file);
    let tmp = dir.join(format!("{file}.tmp"));
    {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp).map_err(io(&tmp))?;
        file.write_all(bytes).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
    }
    fs::rename(&tmp, &path).map_err(io(&path))?;
    if let Ok(parent) = fs::File::open(dir) {
        let _ = parent.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(text: &str) -> Pin {
        Pin::new(text, [3; 40]).unwrap().with_cost(KdfCost::FAST_FOR_TESTS)
    }

    #[test]
    fn created_once_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let (a, created) = DeviceIdentity::load_or_create(dir.path(), "office", || [5; 32], &pin("1234")).unwrap();
        assert!(created);
        let (b, created) = DeviceIdentity::load_or_create(dir.path(), "other", || [6; 32], &pin("1234")).unwrap();
        assert!(!created);
        assert_eq!(a.author(), b.author());
        assert_eq!(b.name, "office");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(DeviceIdentity::load(dir.path(), &pin("4321")), Err(IdentityError::WrongPin)));
        fs::write(dir.path().join(KEY_FILE), b"short").unwrap();
        assert!(matches!(DeviceIdentity::load(dir.path(), &pin("1234")), Err(IdentityError::BadKeyFile(_))));
    }

    #[test]
    fn a_plain_key_file_is_sealed_at_its_first_load_and_a_pin_change_keeps_the_key() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(KEY_FILE), [5; 32]).unwrap();
        let loaded = DeviceIdentity::load(dir.path(), &pin("1234")).unwrap().unwrap();
        assert_eq!(loaded.key.secret(), [5; 32]);
        let file = fs::read(dir.path().join(KEY_FILE)).unwrap();
        assert!(file.len() > 32 && !file.windows(32).any(|w| w == [5; 32]), "sealed, no plain key left");
        let changed = DeviceIdentity::change_pin(dir.path(), &pin("1234"), &pin("98765")).unwrap();
        assert_eq!(changed.author(), loaded.author());
        assert!(matches!(DeviceIdentity::load(dir.path(), &pin("1234")), Err(IdentityError::WrongPin)));
        assert!(matches!(
            DeviceIdentity::change_pin(dir.path(), &pin("1234"), &pin("5555")),
            Err(IdentityError::WrongPin)
        ));
        assert_eq!(DeviceIdentity::load(dir.path(), &pin("98765")).unwrap().unwrap().author(), loaded.author());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_data_dir_is_made_private_and_one_of_another_user_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("cases");
        DeviceIdentity::create(&dir, "office", [5; 32], &pin("1234")).unwrap();
        assert_eq!(mode(&dir), 0o700, "created private");
        assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
        // Loosened (an older release, a copy): made private again at the next open.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(dir.join(KEY_FILE), fs::Permissions::from_mode(0o644)).unwrap();
        secure_data_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
        // A key file of another user: refused, nothing changed (only root can make one here).
        if rustix::process::geteuid().is_root() {
            let other = rustix::process::Uid::from_raw(1);
            rustix::fs::chown(dir.join(KEY_FILE), Some(other), None).unwrap();
            assert!(matches!(secure_data_dir(&dir), Err(IdentityError::NotOwner(_))));
            assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
        } else {
            eprintln!("not root: the other-owner case needs a file of another user, skipped");
        }
    }
}
