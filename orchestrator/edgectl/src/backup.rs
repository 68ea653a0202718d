//! `edgectl backup`: a key that seals backups, a backup of the control plane taken from any
//! member, and a look inside one (docs/operations.md).

use std::path::Path;
use std::time::Instant;

use edgeplane_api::backup::BackupInfo;
use edgeplane_client::Request;
use edgeplane_tls::sealing::SealingKey;

use crate::{unreachable, Client, Failure};

/// Makes a new backup key at `path` (owner-only), never replacing one.
pub fn key(path: &Path) -> Result<(), Failure> {
    if path.exists() {
        return Err(Failure::Usage(format!("{} exists; keys are never overwritten", path.display())));
    }
    SealingKey::load(path, true).map_err(Failure::Usage)?;
    eprintln!(
        "wrote {} (owner-only): without it no backup sealed with it can be restored; keep a copy apart from the backups",
        path.display()
    );
    Ok(())
}

/// Takes a backup from whichever member answers and writes it sealed to `out`.
pub async fn create(client: &Client, out: &Path, key_file: &Path) -> Result<(), Failure> {
    let key = SealingKey::load(key_file, false).map_err(Failure::Usage)?;
    if out.exists() {
        return Err(Failure::Usage(format!("{} exists; choose a new file for each backup", out.display())));
    }
    let started = Instant::now();
    let answer = client.inner.send(Request::get(edgeplane_api::paths::BACKUP)).await.map_err(unreachable)?;
    if !answer.is_success() {
        return Err(Failure::Refused(Box::new(answer.status_error())));
    }
    let (info, state) =
        BackupInfo::split(&answer.body).map_err(|e| Failure::Unreachable(format!("{} sent a damaged backup: {e}", answer.server)))?;
    let header = serde_json::to_vec(&info).expect("a header serializes");
    let file = edgeplane_tls::backup::seal(&key, &header, state);
    write_new(out, &file)?;
    println!(
        "backup of index {} ({} objects, state {} bytes, sha256 {}) from member {} written to {} ({} bytes, sealed) in {} ms",
        info.index,
        info.objects,
        info.state_bytes,
        &info.state_sha256[..16],
        info.member,
        out.display(),
        file.len(),
        started.elapsed().as_millis()
    );
    Ok(())
}

/// Prints a backup's header; with the key, also opens it and checks every byte.
pub fn inspect(file: &Path, key_file: Option<&Path>, json: bool) -> Result<(), Failure> {
    let bytes = std::fs::read(file).map_err(|e| Failure::Usage(format!("cannot read {}: {e}", file.display())))?;
    let header = edgeplane_tls::backup::header(&bytes).map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))?;
    let info: BackupInfo =
        serde_json::from_slice(header).map_err(|e| Failure::Usage(format!("{}: the header is not a backup's: {e}", file.display())))?;
    let verified = match key_file {
        None => None,
        Some(key_file) => {
            let key = SealingKey::load(key_file, false).map_err(Failure::Usage)?;
            let (_, state) = edgeplane_tls::backup::open(&key, &bytes).map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))?;
            info.check(&state).map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))?;
            Some(true)
        }
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&info).expect("serializable"));
        return Ok(());
    }
    outln!("file:     {} ({} bytes)", file.display(), bytes.len());
    outln!("taken:    {} by member {} (term {})", utc(info.created_at_ms), info.member, info.term);
    outln!("index:    {}", info.index);
    outln!("objects:  {}", info.objects);
    outln!("state:    {} bytes, sha256 {}", info.state_bytes, info.state_sha256);
    outln!(
        "verified: {}",
        if verified.is_some() { "yes: every chunk opens and the state matches its checksum" } else { "no (give --key to check)" }
    );
    Ok(())
}

/// Writes `bytes` to the new file `path`, owner-only, whole or not at all.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    edgeplane_tls::durable::write_atomically(path, bytes, edgeplane_tls::durable::Access::Owner)
        .map_err(|e| Failure::Usage(format!("cannot write the backup: {e}")))
}

/// A time in ms since the Unix epoch as UTC RFC 3339, to the second.
pub fn utc(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(ms as i64).map_or_else(|_| ms.to_string(), |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}
