//! `--dev-ca DIR`: a development CA, generated on first use and re-used afterwards, so
//! that `meshctl local up` and the tests need no set-up.
//!
//! The directory then looks exactly like what an operator would hand the controller
//! with `--trust-anchors`/`--issuer-cert`/`--issuer-key`, and it is loaded through the
//! same path ([`Ca::from_files`]), so the development CA exercises production code.
//! `ca.crt` is the file proxies get as `--trust-anchors`.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use time::OffsetDateTime;

use super::{Ca, random_serial};
use crate::Error;

/// The trust anchor: the root certificate, PEM.
pub const ROOT_CERT: &str = "ca.crt";
/// The root's key, PKCS#8 PEM, mode 0600. Only generation uses it.
pub const ROOT_KEY: &str = "ca.key";
/// The issuer (intermediate) certificate, PEM.
pub const ISSUER_CERT: &str = "issuer.crt";
/// The issuer's key, PKCS#8 PEM, mode 0600.
pub const ISSUER_KEY: &str = "issuer.key";

const ROOT_DAYS: i64 = 3650;
const ISSUER_DAYS: i64 = 365;

/// The files of the development CA in `dir`.
pub struct DevCaFiles {
    pub root_cert: PathBuf,
    pub root_key: PathBuf,
    pub issuer_cert: PathBuf,
    pub issuer_key: PathBuf,
}

impl DevCaFiles {
    pub fn in_dir(dir: &Path) -> Self {
        DevCaFiles {
            root_cert: dir.join(ROOT_CERT),
            root_key: dir.join(ROOT_KEY),
            issuer_cert: dir.join(ISSUER_CERT),
            issuer_key: dir.join(ISSUER_KEY),
        }
    }

    fn all(&self) -> [&Path; 4] {
        [
            &self.root_cert,
            &self.root_key,
            &self.issuer_cert,
            &self.issuer_key,
        ]
    }
}

/// Loads the development CA in `dir`, generating it first if `dir` holds none of its
/// files. A directory holding only some of them is an error rather than a silent new
/// root, which would make every proxy's `--trust-anchors` stale.
pub fn load_or_generate(dir: &Path) -> Result<Ca, Error> {
    let files = DevCaFiles::in_dir(dir);
    let (present, missing): (Vec<&Path>, Vec<&Path>) =
        files.all().into_iter().partition(|path| path.exists());
    match (present.first(), missing.first()) {
        (None, _) => {
            generate(dir, &files)?;
            tracing::info!(dir = %dir.display(), "generated a development CA");
        }
        (Some(present), Some(missing)) => {
            return Err(Error::PartialDevCa {
                dir: dir.to_path_buf(),
                present: file_name(present),
                missing: file_name(missing),
            });
        }
        (Some(_), None) => {
            tracing::info!(dir = %dir.display(), "re-using the development CA");
        }
    }
    Ca::from_files(&files.root_cert, &files.issuer_cert, &files.issuer_key)
}

/// Writes a new root (P-256, unconstrained CA, ~10 years) and an issuer under it
/// (P-256, CA with path length 0, ~1 year) into `dir`.
fn generate(dir: &Path, files: &DevCaFiles) -> Result<(), Error> {
    // 0755: the certificates are public (proxies running as their own UID read
    // `ca.crt`), and each key file is 0600 on its own.
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|error| Error::Write {
            path: dir.to_path_buf(),
            error,
        })?;

    // Backdated by an hour: a CA is made once and used at once, possibly by a proxy
    // whose clock is behind.
    let now = OffsetDateTime::now_utc();
    let not_before = now - time::Duration::hours(1);

    let mut root = CertificateParams::default();
    root.distinguished_name = name("Trellis development root CA");
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    root.serial_number = Some(random_serial()?);
    root.not_before = not_before;
    root.not_after = now + time::Duration::days(ROOT_DAYS);
    let root = CertifiedIssuer::self_signed(root, KeyPair::generate()?)?;

    let mut issuer = CertificateParams::default();
    issuer.distinguished_name = name("Trellis development issuer");
    issuer.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    issuer.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    issuer.use_authority_key_identifier_extension = true;
    issuer.serial_number = Some(random_serial()?);
    issuer.not_before = not_before;
    issuer.not_after = now + time::Duration::days(ISSUER_DAYS);
    let issuer = CertifiedIssuer::signed_by(issuer, KeyPair::generate()?, &root)?;

    // Keys first: if writing stops half-way, the certificates are what is missing, and
    // the next start reports a partial CA instead of trusting a root without its key.
    write_new(&files.root_key, &root.key().serialize_pem(), 0o600)?;
    write_new(&files.issuer_key, &issuer.key().serialize_pem(), 0o600)?;
    write_new(&files.root_cert, &root.pem(), 0o644)?;
    write_new(&files.issuer_cert, &issuer.pem(), 0o644)?;
    Ok(())
}

fn name(common_name: &str) -> rcgen::DistinguishedName {
    let mut name = rcgen::DistinguishedName::new();
    name.push(DnType::OrganizationName, "Trellis");
    name.push(DnType::CommonName, common_name);
    name
}

/// Creates `path` with `mode` from the start (never a window where a key is readable
/// by others) and refuses to overwrite, so two controllers racing on one directory
/// cannot interleave two CAs.
fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), Error> {
    let write = || -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()
    };
    write().map_err(|error| Error::Write {
        path: path.to_path_buf(),
        error,
    })
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}
