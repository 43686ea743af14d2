//! Command-line definitions of the `coffer` binary.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Coffer: an encrypted file-transfer server (SFTP, FTPES, HTTPS).
#[derive(Parser, Debug)]
#[command(name = "coffer", version, about, propagate_version = true)]
pub struct Cli {
    /// Configuration file (TOML). Also COFFER_CONFIG.
    #[arg(long, global = true, env = "COFFER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory; overrides `data_dir` from the file and COFFER_DATA_DIR.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server: every enabled front end plus the admin listener.
    Serve,
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// Master keys and tenant keys: status and rotation.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Manage users.
    #[command(subcommand)]
    User(UserCmd),
    /// API tokens for the HTTPS API (`Authorization: Bearer <token>`).
    #[command(subcommand)]
    Token(TokenCmd),
    /// Operator access to files through the same Vfs the protocols use.
    #[command(subcommand)]
    Files(FilesCmd),
    /// Delete objects of deleted files and abort stale S3 uploads (privileged credentials).
    Gc(crate::ops::GcArgs),
    /// Replication to the replica store.
    #[command(subcommand)]
    Replication(crate::ops::ReplicationCmd),
    /// Check every committed file's object in both stores.
    Fsck(crate::ops::FsckArgs),
    /// Apply pending metadata schema migrations and print the schema version.
    Migrate,
}

/// `coffer config ...`
#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Validate a configuration and print the effective config, secrets redacted.
    Check {
        /// The file to check (default: --config, or built-in defaults).
        file: Option<PathBuf>,
    },
}

/// `coffer tenant ...`
#[derive(Subcommand, Debug)]
pub enum TenantCmd {
    /// Create a tenant with a fresh key.
    Add {
        /// Tenant name.
        name: String,
        /// Byte quota for the whole tenant.
        #[arg(long)]
        quota: Option<u64>,
        /// The tenant's own KMS key for a region, `REGION=KEY` (REGION is `primary` or
        /// `replica`; KEY a KMS key id, ARN or alias). Repeat for both regions. Its key is
        /// then wrapped only under these keys there: the customer decides who can decrypt.
        #[arg(long = "kms-key", value_name = "REGION=KEY", value_parser = region_key)]
        kms_keys: Vec<(String, String)>,
    },
    /// List tenants.
    List,
    /// Give a tenant its own KMS keys, change them, or (with none) return it to the
    /// deployment's master keys. Its key is rewrapped; files and names are not touched.
    SetKmsKey {
        /// Tenant name.
        name: String,
        /// `REGION=KEY`, as for `tenant add`. None: back to the deployment's keys.
        #[arg(long = "kms-key", value_name = "REGION=KEY", value_parser = region_key)]
        kms_keys: Vec<(String, String)>,
    },
    /// Delete a tenant for good: its keys are destroyed first (crypto-shredding), then its
    /// users, folders and files; its objects are queued for deletion from both stores.
    Delete {
        /// Tenant name.
        name: String,
        /// Destroy the tenant's keys: required (nothing of it can be read afterwards).
        #[arg(long)]
        shred: bool,
        /// The tenant's name again, to confirm.
        #[arg(long, value_name = "NAME")]
        confirm: Option<String>,
    },
}

/// `REGION=KEY` of `--kms-key`.
fn region_key(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((region @ ("primary" | "replica"), key)) if !key.is_empty() => {
            Ok((region.to_owned(), key.to_owned()))
        }
        _ => Err(format!(
            "expected REGION=KEY with REGION primary or replica, e.g. \
             primary=arn:aws:kms:eu-west-1:111122223333:key/…; got {arg:?}"
        )),
    }
}

/// `coffer keys ...`
#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Per region the master key; per tenant its key versions, ages, own keys and whether
    /// the key opens now; the key counters of this check.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Rewrap every tenant key copy of REGION under a new master key (default: the key the
    /// configuration now names for that region). Resumable: run it again after a crash.
    RotateMaster {
        /// `primary` or `replica`.
        region: String,
        /// The KMS key (id, ARN or alias) to move to; default: the region's configured key.
        #[arg(long, value_name = "KEY")]
        to: Option<String>,
    },
    /// Give TENANT a new key version: new writes use it at once; every file's data key is
    /// rewrapped and every name and content hash re-encrypted under it, online, in batches;
    /// then the old version's wrapped copies are destroyed. File contents are not touched.
    /// Resumable: run it again after a crash (or let `serve` resume it).
    RotateTenant {
        /// The tenant.
        tenant: String,
        /// Rows rewritten per transaction.
        #[arg(long, value_name = "ROWS", default_value_t = coffer_storage::DEFAULT_ROTATION_BATCH,
              value_parser = clap::value_parser!(u32).range(1..=10_000))]
        batch: u32,
    },
}

/// `coffer user ...`
#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Create a user.
    Add(UserAdd),
    /// List users.
    List {
        /// Only this tenant's users.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Set a new password.
    Passwd {
        /// User name.
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable a user (they can no longer log in).
    Disable {
        /// User name.
        name: String,
    },
    /// Enable a disabled user.
    Enable {
        /// User name.
        name: String,
    },
    /// Delete a user (their files stay with the tenant).
    Remove {
        /// User name.
        name: String,
    },
}

/// `coffer token ...`
#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Create a token and print it once (only its hash is stored).
    Create {
        /// The user the token acts as.
        #[arg(long)]
        user: String,
        /// Days until the token stops working (default: never).
        #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=3650))]
        expires_days: Option<u32>,
    },
    /// List a user's tokens (ids and dates, never secrets).
    List {
        /// The user.
        #[arg(long)]
        user: String,
    },
    /// Revoke a token by its id (or the whole token).
    Revoke {
        /// The user.
        #[arg(long)]
        user: String,
        /// The token id shown by `token list`.
        id: String,
    },
}

/// `coffer user add`
#[derive(Args, Debug)]
pub struct UserAdd {
    /// Login name.
    pub name: String,
    /// Tenant; created if it does not exist.
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// An SSH public key file (authorized_keys lines); may be repeated.
    #[arg(long = "ssh-key", value_name = "FILE")]
    pub ssh_keys: Vec<PathBuf>,
    /// Home folder inside the tenant's tree (created if missing).
    #[arg(long, default_value = "/")]
    pub home: String,
    /// Permissions: "all" or a list of list,read,write,delete,rename,mkdir.
    #[arg(long, default_value = "all")]
    pub perms: String,
}

/// `coffer files ...`
#[derive(Subcommand, Debug)]
pub enum FilesCmd {
    /// Upload a local file.
    Put {
        /// Local file.
        local: PathBuf,
        /// Path in the user's tree.
        remote: String,
        /// Act as this user.
        #[arg(long)]
        user: String,
    },
    /// Download a file; the local file appears only if every chunk verified.
    Get {
        /// Path in the user's tree.
        remote: String,
        /// Local file.
        local: PathBuf,
        /// Act as this user.
        #[arg(long)]
        user: String,
    },
    /// List a folder.
    Ls {
        /// Folder (default: the user's home).
        #[arg(default_value = "/")]
        path: String,
        /// Act as this user.
        #[arg(long)]
        user: String,
    },
    /// Delete a file, or an empty folder.
    Rm {
        /// Path in the user's tree.
        path: String,
        /// Act as this user.
        #[arg(long)]
        user: String,
    },
    /// Rename or move.
    Mv {
        /// Current path.
        from: String,
        /// New path.
        to: String,
        /// Act as this user.
        #[arg(long)]
        user: String,
    },
    /// Create a folder (and its parents).
    Mkdir {
        /// Path in the user's tree.
        path: String,
        /// Act as this user.
        #[arg(long)]
        user: String,
    },
}
