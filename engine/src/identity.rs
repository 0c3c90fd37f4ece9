//! The device identity kept in a node's data dir: its signing key (`device.key`, 32 bytes, mode
//! 0600, never logged) and its human name (`device.name`); and the data dir itself, created 0700
//! and checked at every open (`secure_data_dir`): only the user who owns it may read it.

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
    /// The key file does not hold 32 bytes.
    #[error("{0} is damaged: it must hold exactly 32 bytes")]
    BadKeyFile(String),
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

    /// Loads the identity from `dir`, if there is one.
    pub fn load(dir: &Path) -> Result<Option<DeviceIdentity>, IdentityError> {
        let key_path = dir.join(KEY_FILE);
        if !key_path.exists() {
            return Ok(None);
        }
        let bytes = fs::read(&key_path).map_err(io(&key_path))?;
        let secret: [u8; 32] =
            bytes.as_slice().try_into().map_err(|_| IdentityError::BadKeyFile(key_path.display().to_string()))?;
        let name_path = dir.join(NAME_FILE);
        let name = match fs::read_to_string(&name_path) {
            Ok(text) => text.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(&name_path)(e)),
        };
        let key = DeviceKey::from_secret(secret);
        let name = if name.is_empty() { key.author().device_id() } else { name };
        Ok(Some(DeviceIdentity { key, name }))
    }

    /// Creates a new identity in `dir` from fresh secret bytes, replacing any existing one (an
    /// existing key file is kept as `device.key.retired-<device id>`).
    pub fn create(dir: &Path, name: &str, secret: [u8; 32]) -> Result<DeviceIdentity, IdentityError> {
        validate_name(name)?;
        secure_data_dir(dir)?;
        let key_path = dir.join(KEY_FILE);
        if let Some(old) = DeviceIdentity::load(dir)? {
            let retired = dir.join(format!("{KEY_FILE}.retired-{}", old.author().device_id()));
            fs::rename(&key_path, &retired).map_err(io(&retired))?;
        }
        let key = DeviceKey::from_secret(secret);
        let tmp = dir.join(format!("{KEY_FILE}.tmp"));
        {
            let mut options = fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(&tmp).map_err(io(&tmp))?;
            file.write_all(&key.secret()).map_err(io(&tmp))?;
            file.sync_all().map_err(io(&tmp))?;
        }
        fs::rename(&tmp, &key_path).map_err(io(&key_path))?;
        let name_path = dir.join(NAME_FILE);
        fs::write(&name_path, format!("{name}\n")).map_err(io(&name_path))?;
        Ok(DeviceIdentity { key, name: name.to_string() })
    }

    /// Loads the identity, creating one with `name` and `secret()` when there is none.
    pub fn load_or_create(
        dir: &Path,
        name: &str,
        secret: impl FnOnce() -> [u8; 32],
    ) -> Result<(DeviceIdentity, bool), IdentityError> {
        match DeviceIdentity::load(dir)? {
            Some(identity) => Ok((identity, false)),
            None => Ok((DeviceIdentity::create(dir, name, secret())?, true)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let (a, created) = DeviceIdentity::load_or_create(dir.path(), "office", || [5; 32]).unwrap();
        assert!(created);
        let (b, created) = DeviceIdentity::load_or_create(dir.path(), "other", || [6; 32]).unwrap();
        assert!(!created);
        assert_eq!(a.author(), b.author());
        assert_eq!(b.name, "office");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::write(dir.path().join(KEY_FILE), b"short").unwrap();
        assert!(matches!(DeviceIdentity::load(dir.path()), Err(IdentityError::BadKeyFile(_))));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_data_dir_is_made_private_and_one_of_another_user_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("cases");
        DeviceIdentity::create(&dir, "office", [5; 32]).unwrap();
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
