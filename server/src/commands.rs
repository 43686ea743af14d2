//! Operator commands: tenants, users and files, through the same Vault and Vfs as the server.

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use coffer_meta::NewSshKey;
use coffer_storage::{NewUserRequest, Password, Permissions, VPath, Vault, WriteOptions};

use crate::cli::{FilesCmd, KeysCmd, TenantCmd, TokenCmd, UserAdd, UserCmd};

/// Step for streaming files in and out.
const IO_STEP: usize = 1024 * 1024;

pub async fn tenant(vault: &Vault, cmd: TenantCmd) -> anyhow::Result<()> {
    match cmd {
        TenantCmd::Add {
            name,
            quota,
            kms_keys,
        } => {
            let quota = quota.map(|q| i64::try_from(q).unwrap_or(i64::MAX));
            let t = vault
                .admin()
                .create_tenant_with_keys(&name, quota, &kms_keys)
                .await?;
            println!("created tenant {} (id {})", t.name, t.id);
            for (region, key) in &kms_keys {
                println!("  {region}: its key is wrapped under the tenant's own KMS key {key}");
            }
        }
        TenantCmd::SetKmsKey { name, kms_keys } => {
            vault
                .admin()
                .set_tenant_master_keys(&name, &kms_keys)
                .await?;
            if kms_keys.is_empty() {
                println!("tenant {name}: its key is wrapped under the deployment's master keys");
            }
            for (region, key) in &kms_keys {
                println!("tenant {name}: {region} copy now wrapped under {key}");
            }
        }
        TenantCmd::Delete {
            name,
            shred,
            confirm,
        } => {
            if !shred {
                bail!(
                    "deleting a tenant destroys its keys and everything it holds: \
                     pass --shred --confirm {name}"
                );
            }
            if confirm.as_deref() != Some(name.as_str()) {
                bail!("to delete tenant {name}, confirm with --confirm {name}");
            }
            let queued = vault.admin().shred_tenant(&name).await?;
            println!(
                "tenant {name} shredded: its keys are destroyed, its rows deleted; \
                 {queued} objects queued for deletion from both stores (`coffer gc`)"
            );
        }
        TenantCmd::List => {
            for t in vault.admin().tenants().await? {
                let quota = t
                    .quota_bytes
                    .map(|q| q.to_string())
                    .unwrap_or_else(|| "unlimited".into());
                let used = vault.admin().usage(t.id).await?;
                println!(
                    "{}\tid={}\tquota={}\tused={}\tfiles={}",
                    t.name, t.id, quota, used.bytes, used.files
                );
            }
        }
    }
    Ok(())
}

/// Days after which a tenant key version is reported overdue for rotation.
pub fn rotation_max_age_days(cfg: &coffer_config::Config) -> u32 {
    cfg.keys.rotation.max_age_days
}

pub async fn keys(vault: &Vault, cfg: &coffer_config::Config, cmd: KeysCmd) -> anyhow::Result<()> {
    match cmd {
        KeysCmd::Status { json } => {
            let status = vault.admin().key_status(rotation_max_age_days(cfg)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status_json(&status))?);
            } else {
                print_key_status(&status);
            }
            if status.tenants.iter().any(|t| t.error.is_some()) {
                bail!("some tenant keys are unavailable (see above)");
            }
        }
        KeysCmd::RotateMaster { region, to } => {
            let r = vault
                .admin()
                .rotate_master_key(&region, to.as_deref())
                .await?;
            println!(
                "{region}: {} copies rewrapped under {}, {} already under it, {} under tenants' own keys",
                r.rewrapped, r.target_key_id, r.already, r.tenant_owned
            );
            if !r.failed.is_empty() {
                for (tenant, why) in &r.failed {
                    eprintln!("coffer: tenant {tenant}: not rewrapped: {why}");
                }
                bail!(
                    "{} copies could not be rewrapped; fix the cause and run the command again \
                     (it resumes)",
                    r.failed.len()
                );
            }
        }
        KeysCmd::RotateTenant { tenant, batch } => rotate_tenant(vault, &tenant, batch).await?,
    }
    Ok(())
}

/// `coffer keys rotate-tenant`: runs (or resumes) the rotation, printing progress at most
/// once a second.
async fn rotate_tenant(vault: &Vault, tenant: &str, batch: u32) -> anyhow::Result<()> {
    let opts = coffer_storage::RotateOptions {
        batch,
        max_batches: None,
    };
    let began = std::time::Instant::now();
    let mut last_line = began;
    let mut print = |p: &coffer_storage::RotationProgress| {
        if last_line.elapsed() >= std::time::Duration::from_secs(1) {
            last_line = std::time::Instant::now();
            println!("{}", progress_line(p));
        }
    };
    let r = vault
        .admin()
        .rotate_tenant_key(tenant, opts, &mut print)
        .await
        .with_context(|| {
            format!("rotating the key of tenant {tenant} (run the command again to resume)")
        })?;
    let p = &r.progress;
    let secs = began.elapsed().as_secs_f64();
    println!(
        "{tenant}: key v{} -> v{}: {} rows rewritten now ({} in all, {} passes) in {secs:.1} s \
         ({:.0} rows/s); {}",
        p.from_version,
        p.to_version,
        r.rewritten_now,
        p.rewritten,
        p.pass,
        r.rewritten_now as f64 / secs.max(0.001),
        if r.started { "started now" } else { "resumed" },
    );
    if r.renamed > 0 {
        println!(
            "{tenant}: {} entries renamed \"NAME (key rotation ID)\": their name was taken under \
             the new version",
            r.renamed
        );
    }
    if r.finished {
        println!(
            "{tenant}: no row is under v{} any more; its {} wrapped copies are destroyed",
            p.from_version, r.destroyed_copies
        );
    } else {
        bail!("the rotation stopped before the end; run the command again to resume it");
    }
    Ok(())
}

fn progress_line(p: &coffer_storage::RotationProgress) -> String {
    let pct = if p.total > 0 {
        (p.rewritten as f64 * 100.0 / p.total as f64).min(100.0)
    } else {
        100.0
    };
    format!(
        "{}: key v{} -> v{}: {}/{} rows rewritten ({pct:.0}%), pass {}",
        p.tenant, p.from_version, p.to_version, p.rewritten, p.total, p.pass
    )
}

fn age_days(created_ms: i64) -> i64 {
    (coffer_storage::now_ms() - created_ms).max(0) / 86_400_000
}

fn print_key_status(s: &coffer_storage::KeyStatus) {
    println!("master keys:");
    for r in &s.regions {
        println!(
            "  {}\t{}\t{}{}{}",
            r.region,
            r.kind,
            r.key_id,
            if r.kms { "\tkms" } else { "" },
            if r.copies_under_older_keys > 0 {
                format!(
                    "\t{} copies still under older keys: run `coffer keys rotate-master {}`",
                    r.copies_under_older_keys, r.region
                )
            } else {
                String::new()
            }
        );
        for p in &r.previous {
            println!("    previous: {p}");
        }
    }
    println!(
        "tenants (unwrapped keys are held in memory at most {} s):",
        s.cache_secs
    );
    for t in &s.tenants {
        let state = match &t.error {
            None => "ok".to_owned(),
            Some(e) => format!("UNAVAILABLE: {e}"),
        };
        println!(
            "  {}\tkey v{}\t{}{}",
            t.tenant,
            t.current_version,
            state,
            if t.overdue {
                "\tOVERDUE for rotation"
            } else {
                ""
            }
        );
        for (region, key) in &t.own_keys {
            println!("    own key {region}: {key}");
        }
        if let Some(p) = &t.rotation {
            println!(
                "    ROTATING since {}: {}",
                format_ms(p.started_ms),
                progress_line(p)
            );
        }
        for v in &t.versions {
            let copies: Vec<String> = v.copies.iter().map(|(r, k)| format!("{r}={k}")).collect();
            println!(
                "    v{}\tage {} days\t{}",
                v.version,
                age_days(v.created_ms),
                copies.join(" ")
            );
        }
    }
    let m = &s.metrics;
    println!(
        "key counters: kms_calls={} kms_errors={} kms_latency_ms={} cache_hits={} cache_misses={} failed_decryptions={}",
        m.kms_calls,
        m.kms_errors,
        m.kms_latency_micros / 1000,
        m.cache_hits,
        m.cache_misses,
        m.failed_decryptions
    );
}

fn status_json(s: &coffer_storage::KeyStatus) -> serde_json::Value {
    serde_json::json!({
        "cache_secs": s.cache_secs,
        "regions": s.regions.iter().map(|r| serde_json::json!({
            "region": r.region,
            "kind": r.kind,
            "key_id": r.key_id,
            "previous": r.previous,
            "kms": r.kms,
            "copies_under_older_keys": r.copies_under_older_keys,
        })).collect::<Vec<_>>(),
        "tenants": s.tenants.iter().map(|t| serde_json::json!({
            "tenant": t.tenant,
            "current_version": t.current_version,
            "error": t.error,
            "overdue": t.overdue,
            "own_keys": t.own_keys,
            "rotation": t.rotation.as_ref().map(|p| serde_json::json!({
                "from_version": p.from_version,
                "to_version": p.to_version,
                "total": p.total,
                "rewritten": p.rewritten,
                "pass": p.pass,
                "started_ms": p.started_ms,
                "updated_ms": p.updated_ms,
            })),
            "versions": t.versions.iter().map(|v| serde_json::json!({
                "version": v.version,
                "created_ms": v.created_ms,
                "age_days": age_days(v.created_ms),
                "copies": v.copies,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "metrics": s.metrics,
    })
}

/// Reads a password from stdin's first line, or asks on the terminal.
fn read_password(from_stdin: bool) -> anyhow::Result<Password> {
    let pw = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    } else {
        let a = rpassword::prompt_password("Password: ")
            .context("no terminal: use --password-stdin")?;
        let b =
            rpassword::prompt_password("Again: ").context("no terminal: use --password-stdin")?;
        if a != b {
            bail!("the passwords differ");
        }
        a
    };
    if pw.chars().count() < 8 {
        bail!("the password is too short: use at least 8 characters");
    }
    Ok(Password::new(pw))
}

/// `coffer token ...`
pub async fn token(vault: &Vault, cmd: TokenCmd) -> anyhow::Result<()> {
    let day_ms = 86_400_000_i64;
    match cmd {
        TokenCmd::Create { user, expires_days } => {
            let made = vault
                .create_token(&user, expires_days.map(|d| i64::from(d) * day_ms))
                .await
                .with_context(|| format!("creating a token for {user}"))?;
            eprintln!(
                "token {} created for {user}{}; it is shown only now:",
                made.info.id,
                made.info
                    .expires_ms
                    .map(|t| format!(", expires {}", format_ms(t)))
                    .unwrap_or_default()
            );
            println!("{}", made.token.as_str());
        }
        TokenCmd::List { user } => {
            for t in vault
                .list_tokens(&user)
                .await
                .with_context(|| user.clone())?
            {
                println!(
                    "{}\tcreated={}\texpires={}",
                    t.id,
                    format_ms(t.created_ms),
                    t.expires_ms
                        .map(format_ms)
                        .unwrap_or_else(|| "never".into())
                );
            }
        }
        TokenCmd::Revoke { user, id } => {
            vault
                .revoke_token(&user, &id)
                .await
                .with_context(|| format!("revoking token {id} of {user}"))?;
            eprintln!("token {id} of {user} revoked");
        }
    }
    Ok(())
}

pub async fn user(vault: &Vault, cmd: UserCmd) -> anyhow::Result<()> {
    let admin = vault.admin();
    match cmd {
        UserCmd::Add(add) => user_add(vault, add).await?,
        UserCmd::List { tenant } => {
            for s in admin.users(tenant.as_deref()).await? {
                let (u, tname, keys) = (&s.user, &s.tenant, s.ssh_keys);
                let state = if u.disabled { "disabled" } else { "enabled" };
                println!(
                    "{}\ttenant={}\tperms={}\tpassword={}\tssh_keys={}\t{}",
                    u.name,
                    tname,
                    Permissions::from_bits(u.perms),
                    if u.password_hash.is_some() {
                        "yes"
                    } else {
                        "no"
                    },
                    keys,
                    state
                );
            }
        }
        UserCmd::Passwd {
            name,
            password_stdin,
        } => {
            admin.user(&name).await?;
            let pw = read_password(password_stdin)?;
            admin.set_password(&name, &pw).await?;
            println!("password changed for {name}");
        }
        UserCmd::Disable { name } => {
            admin.set_disabled(&name, true).await?;
            println!("disabled {name}");
        }
        UserCmd::Enable { name } => {
            admin.set_disabled(&name, false).await?;
            println!("enabled {name}");
        }
        UserCmd::Remove { name } => {
            admin.remove_user(&name).await?;
            println!("removed {name}");
        }
    }
    Ok(())
}

async fn user_add(vault: &Vault, add: UserAdd) -> anyhow::Result<()> {
    coffer_storage::check_user_name(&add.name)?;
    let perms = Permissions::parse(&add.perms)?;
    let home = VPath::parse(&add.home).map_err(|e| anyhow!("--home: {e}"))?;
    let mut keys = Vec::new();
    for f in &add.ssh_keys {
        keys.extend(read_ssh_keys(f)?);
    }
    if !add.password_stdin
        && keys.is_empty()
        && !std::io::IsTerminal::is_terminal(&std::io::stdin())
    {
        bail!("a user needs a password (--password-stdin) or an SSH key (--ssh-key FILE)");
    }
    let password = if add.password_stdin || keys.is_empty() {
        Some(read_password(add.password_stdin)?)
    } else {
        None
    };
    let (tenant, user) = vault
        .admin()
        .add_user(&NewUserRequest {
            tenant: &add.tenant,
            name: &add.name,
            password: password.as_ref(),
            home: &home,
            perms,
            ssh_keys: &keys,
        })
        .await?;
    println!(
        "created user {} in tenant {} (home {}, perms {}, {} ssh key(s))",
        user.name,
        tenant.name,
        home,
        perms,
        keys.len()
    );
    Ok(())
}

/// Algorithms accepted in authorized_keys files.
const SSH_KEY_ALGORITHMS: [&str; 6] = [
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
];

/// Parses authorized_keys lines: `ALGORITHM BASE64 [COMMENT]`.
pub fn read_ssh_keys(path: &Path) -> anyhow::Result<Vec<NewSshKey>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--ssh-key: cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(
            parse_ssh_key(line)
                .with_context(|| format!("--ssh-key {} line {}", path.display(), n + 1))?,
        );
    }
    if out.is_empty() {
        bail!("--ssh-key {}: no public key found", path.display());
    }
    Ok(out)
}

fn parse_ssh_key(line: &str) -> anyhow::Result<NewSshKey> {
    let mut parts = line.split_whitespace();
    let (Some(alg), Some(b64)) = (parts.next(), parts.next()) else {
        bail!("expected \"ALGORITHM BASE64 [COMMENT]\"");
    };
    if !SSH_KEY_ALGORITHMS.contains(&alg) {
        bail!("unsupported key type {alg:?} (use ed25519, ecdsa or rsa)");
    }
    let blob = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .context("the key is not valid base64")?;
    let name_len = blob
        .first_chunk::<4>()
        .map(|b| u32::from_be_bytes(*b) as usize);
    if name_len.and_then(|l| blob.get(4..4 + l)) != Some(alg.as_bytes()) {
        bail!("the key blob does not match its type {alg}");
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &blob);
    let fingerprint = format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest.as_ref())
    );
    Ok(NewSshKey {
        algorithm: alg.to_owned(),
        key_base64: b64.to_owned(),
        fingerprint,
        comment: parts.collect::<Vec<_>>().join(" "),
    })
}

pub async fn files(vault: &Vault, cmd: FilesCmd) -> anyhow::Result<()> {
    match cmd {
        FilesCmd::Put {
            local,
            remote,
            user,
        } => {
            let vfs = vault.operator_session(&user).await?;
            let mut f = std::fs::File::open(&local)
                .with_context(|| format!("cannot open {}", local.display()))?;
            let opts = WriteOptions {
                truncate: true,
                exclusive: false,
            };
            // Like the HTTPS PUT: missing parent folders are created.
            let mut w = match vfs.create(&remote, opts).await {
                Err(e) if e.kind() == coffer_storage::ErrorKind::NotFound => {
                    let parent = VPath::parse(&remote)
                        .ok()
                        .and_then(|p| p.split_last().map(|(parent, _)| parent));
                    if let Some(parent) = parent {
                        vfs.mkdir_all(&parent).await.with_context(|| {
                            format!("cannot create the folder {}", shown(&parent.to_string()))
                        })?;
                    }
                    vfs.create(&remote, opts).await
                }
                other => other,
            }
            .with_context(|| format!("cannot write {}", shown(&remote)))?;
            let mut buf = vec![0u8; IO_STEP];
            let mut off = 0u64;
            loop {
                let n = std::io::Read::read(&mut f, &mut buf)
                    .with_context(|| format!("reading {}", local.display()))?;
                if n == 0 {
                    break;
                }
                w.write_at(off, buf.get(..n).unwrap_or_default()).await?;
                off += n as u64;
            }
            if let Ok(m) = f.metadata().and_then(|m| m.modified()) {
                w.set_mtime(m);
            }
            let info = w.commit().await?;
            println!("stored {} bytes", info.size);
        }
        FilesCmd::Get {
            remote,
            local,
            user,
        } => {
            let vfs = vault.operator_session(&user).await?;
            let r = vfs
                .open_read(&remote)
                .await
                .with_context(|| format!("cannot read {}", shown(&remote)))?;
            get_to_file(&r, &local).await?;
            println!("wrote {} bytes", r.size());
        }
        FilesCmd::Ls { path, user } => {
            let vfs = vault.operator_session(&user).await?;
            let entries = vfs
                .list(&path)
                .await
                .with_context(|| format!("cannot list {}", shown(&path)))?;
            let mut out = std::io::stdout().lock();
            for e in entries {
                let when = humantime_utc(e.mtime);
                let kind = if e.is_dir() { 'd' } else { '-' };
                writeln!(out, "{kind} {:>12} {when} {}", e.size, e.name)?;
            }
        }
        FilesCmd::Rm { path, user } => {
            let vfs = vault.operator_session(&user).await?;
            let removed = async {
                if vfs.stat(&path).await?.is_dir() {
                    vfs.rmdir(&path).await
                } else {
                    vfs.remove(&path).await
                }
            };
            removed
                .await
                .with_context(|| format!("cannot remove {}", shown(&path)))?;
        }
        FilesCmd::Mv { from, to, user } => {
            let vfs = vault.operator_session(&user).await?;
            vfs.rename(&from, &to, false)
                .await
                .with_context(|| format!("cannot move {} to {}", shown(&from), shown(&to)))?;
        }
        FilesCmd::Mkdir { path, user } => {
            let vfs = vault.operator_session(&user).await?;
            let parsed =
                VPath::parse(&path).with_context(|| format!("cannot create {}", shown(&path)))?;
            vfs.mkdir_all(&parsed)
                .await
                .with_context(|| format!("cannot create {}", shown(&path)))?;
        }
    }
    Ok(())
}

/// A path as an error message may show it: a hostile one (control characters, or longer than
/// a name may be) is not echoed to the operator's terminal.
fn shown(path: &str) -> String {
    if path.len() <= 256 && !path.chars().any(char::is_control) {
        path.to_owned()
    } else {
        "the path given".to_owned()
    }
}

/// Streams a file to `local` through a temporary file that is renamed into place only after
/// every chunk verified; on any error the temporary file is removed and `local` is untouched.
async fn get_to_file(r: &coffer_storage::FileReader, local: &Path) -> anyhow::Result<()> {
    let dir = local
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".coffer-get-{}.part", std::process::id()));
    let result = async {
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut off = 0u64;
        while off < r.size() {
            let chunk = r.read_at(off, IO_STEP).await?;
            if chunk.is_empty() {
                bail!("the stored file ended early");
            }
            f.write_all(&chunk)?;
            off += chunk.len() as u64;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, local)
            .with_context(|| format!("cannot write {}", local.display()))?;
        Ok(())
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, without a date library.
fn humantime_utc(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn format_ms(ms: i64) -> String {
    coffer_protocol::common::time::Utc::from_ms(ms).rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_render_in_utc() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(humantime_utc(t), "2023-11-14 22:13:20");
    }

    #[test]
    fn ssh_key_lines_are_checked() {
        let ok = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@host";
        let k = parse_ssh_key(ok).unwrap();
        assert_eq!(k.algorithm, "ssh-ed25519");
        assert!(k.fingerprint.starts_with("SHA256:"));
        assert_eq!(k.comment, "me@host");
        assert!(parse_ssh_key("ssh-dss AAAA").is_err());
        assert!(
            parse_ssh_key(
                "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
            )
            .is_err()
        );
    }
}
