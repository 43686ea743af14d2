//! The behaviour every `MetadataStore` implementation must show, as checks any backend runs.
//!
//! Each check panics on the first deviation. Ids, names and object keys are random and every
//! check works in its own fresh tenant, so the suite can run again and again against one
//! persistent database (a reused MySQL server, say) and in parallel with itself.
//!
//! Documented choice for concurrent commits of one new name with `expect_node = None`
//! ("create or replace"): they behave as if run one after another — one creates the node,
//! the others replace its content, and none fails. See [`concurrent_commits_same_name`].

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{
    ApiToken, AuditRecord, CommitFile, CommitOutcome, FileContent, GarbageCut, MetaError,
    MetadataStore, NewDir, NewSshKey, NewTenant, NewUpload, NewUser, Node, NodeKind,
    RekeyedContent, RekeyedNode, RenameNode, ReplicationJob, ReplicationOp, RotationCursor, Tenant,
    TenantMasterKey, Usage, UsageCheck, WrappedTenantKey,
};

/// Large enough to see every queued row a check made, whatever earlier runs left behind.
const SCAN_ALL: u32 = 1_000_000;
/// Children created by [`rename_folder_with_many_children_is_one_update`].
const MANY_CHILDREN: usize = 2_000;
/// Concurrent commits in [`concurrent_commits_same_name`].
const CONCURRENT_COMMITS: usize = 20;
/// Concurrent renames in [`concurrent_rename_same_folder`].
const CONCURRENT_RENAMES: usize = 10;

/// Asserts that an expression fails with the given `MetaError` pattern.
macro_rules! assert_fails {
    ($result:expr, $pattern:pat) => {
        match $result {
            Err($pattern) => {}
            other => panic!(
                "expected Err({}), got {:?}",
                stringify!($pattern),
                other.map(|_| ())
            ),
        }
    };
}

/// Calls `$callback!` with the name of every check, in the order [`run_all`] runs them, so a
/// test file can make each one a test of its own without keeping a copy of the list.
#[macro_export]
macro_rules! for_each_check {
    ($callback:ident) => {
        $callback!(
            tenants_and_keys,
            users_and_lockout,
            ssh_keys,
            api_tokens,
            dirs_and_children,
            commit_new_and_replace,
            commit_conflicts,
            remove_semantics,
            rename_move_replace_cycle,
            rename_folder_with_many_children_is_one_update,
            uploads,
            replication_and_garbage,
            garbage_held_by_open_readers,
            audit,
            quota,
            concurrent_commits_same_name,
            concurrent_rename_same_folder,
            concurrent_cross_moves_never_make_a_cycle,
            commit_expecting_absent_loses_to_a_racing_file,
            tenant_master_keys_and_shredding,
            tenant_key_rotation,
            inline_objects,
            commits_as_uploads_make_them,
            usage_count_follows_every_change,
        );
    };
}

/// Runs every check in turn.
pub async fn run_all(store: &dyn MetadataStore) {
    tenants_and_keys(store).await;
    users_and_lockout(store).await;
    ssh_keys(store).await;
    api_tokens(store).await;
    dirs_and_children(store).await;
    commit_new_and_replace(store).await;
    commit_conflicts(store).await;
    remove_semantics(store).await;
    rename_move_replace_cycle(store).await;
    rename_folder_with_many_children_is_one_update(store).await;
    uploads(store).await;
    replication_and_garbage(store).await;
    garbage_held_by_open_readers(store).await;
    audit(store).await;
    quota(store).await;
    concurrent_commits_same_name(store).await;
    concurrent_rename_same_folder(store).await;
    concurrent_cross_moves_never_make_a_cycle(store).await;
    commit_expecting_absent_loses_to_a_racing_file(store).await;
    tenant_master_keys_and_shredding(store).await;
    tenant_key_rotation(store).await;
    inline_objects(store).await;
    commits_as_uploads_make_them(store).await;
    usage_count_follows_every_change(store).await;
}

// ---- helpers ----

fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    hasher.finish()
}

/// A random positive id.
fn random_id() -> i64 {
    i64::try_from(random_u64() >> 1).unwrap().max(1)
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        bytes.extend_from_slice(&random_u64().to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// Stands in for an encrypted name: a version byte and opaque bytes, NULs included.
fn name_enc() -> Vec<u8> {
    let mut name = vec![1, 0];
    name.extend(random_bytes(40));
    name
}

/// Stands in for a blind index: 32 opaque bytes.
fn name_index() -> Vec<u8> {
    random_bytes(32)
}

fn object_key() -> String {
    format!("{:016x}{:016x}", random_u64(), random_u64())
}

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn wrapped_key(tenant_id: i64, version: u32, region: &str) -> WrappedTenantKey {
    WrappedTenantKey {
        tenant_id,
        version,
        region: region.to_owned(),
        master_key_id: format!("local:{region}"),
        wrapped: random_bytes(60),
        created_ms: now_ms(),
    }
}

fn new_tenant(quota_bytes: Option<i64>) -> NewTenant {
    let id = random_id();
    NewTenant {
        id,
        name: format!("conformance-{:016x}", random_u64()),
        root_node_id: random_id(),
        root_name_enc: name_enc(),
        root_name_index: name_index(),
        quota_bytes,
        keys: vec![wrapped_key(id, 1, "primary"), wrapped_key(id, 1, "replica")],
        master_keys: Vec::new(),
        now_ms: now_ms(),
    }
}

/// A fresh tenant of its own for one check.
async fn tenant(store: &dyn MetadataStore, quota_bytes: Option<i64>) -> Tenant {
    store.create_tenant(&new_tenant(quota_bytes)).await.unwrap()
}

fn new_dir(tenant: &Tenant, parent_id: i64) -> NewDir {
    NewDir {
        id: random_id(),
        tenant_id: tenant.id,
        parent_id,
        name_enc: name_enc(),
        name_index: name_index(),
        name_key_version: 1,
        now_ms: now_ms(),
    }
}

async fn mkdir(store: &dyn MetadataStore, tenant: &Tenant, parent_id: i64) -> Node {
    store.create_dir(&new_dir(tenant, parent_id)).await.unwrap()
}

fn content(size: i64) -> FileContent {
    FileContent {
        size,
        object_key: object_key(),
        content_id: random_bytes(16),
        wrapped_dek: random_bytes(72),
        key_version: 1,
        chunk_size: 65_536,
        content_hash_enc: random_bytes(60),
        inline: false,
    }
}

/// A commit of a new file named `name_index` in `parent_id`, "create or replace".
fn new_file(tenant: &Tenant, parent_id: i64, name_index: &[u8], size: i64) -> CommitFile {
    let now = now_ms();
    CommitFile {
        new_id: random_id(),
        tenant_id: tenant.id,
        parent_id,
        name_enc: name_enc(),
        name_index: name_index.to_vec(),
        content: content(size),
        inline_object: None,
        mtime_ms: now - 1_000,
        now_ms: now,
        expect_node: None,
        upload_id: None,
        expect_absent: false,
        enforce_quota: false,
    }
}

async fn put_file(store: &dyn MetadataStore, tenant: &Tenant, parent_id: i64, size: i64) -> Node {
    let outcome = store
        .commit_file(&new_file(tenant, parent_id, &name_index(), size))
        .await
        .unwrap();
    assert!(outcome.created);
    outcome.node
}

fn object_of(node: &Node) -> &str {
    &node
        .content
        .as_ref()
        .expect("a file has content")
        .object_key
}

async fn jobs_for(store: &dyn MetadataStore, key: &str) -> Vec<ReplicationJob> {
    let jobs = store.pending_replication(SCAN_ALL).await.unwrap();
    jobs.into_iter().filter(|j| j.object_key == key).collect()
}

async fn has_job(store: &dyn MetadataStore, key: &str, op: ReplicationOp) -> bool {
    jobs_for(store, key).await.iter().any(|j| j.op == op)
}

async fn is_garbage(store: &dyn MetadataStore, key: &str) -> bool {
    let garbage = store.garbage(SCAN_ALL).await.unwrap();
    garbage.iter().any(|g| g.object_key == key)
}

async fn child_ids(store: &dyn MetadataStore, tenant: &Tenant, parent_id: i64) -> Vec<i64> {
    let mut ids: Vec<i64> = store
        .children(tenant.id, parent_id)
        .await
        .unwrap()
        .iter()
        .map(|n| n.id)
        .collect();
    ids.sort_unstable();
    ids
}

fn rename_to(tenant: &Tenant, node: &Node, new_parent_id: i64, replace: bool) -> RenameNode {
    RenameNode {
        tenant_id: tenant.id,
        id: node.id,
        new_parent_id,
        new_name_enc: name_enc(),
        new_name_index: name_index(),
        name_key_version: 1,
        other_name_index: None,
        replace,
        now_ms: now_ms(),
    }
}

/// A future being joined, and its output once it has one.
type Slot<F> = (Pin<Box<F>>, Option<<F as Future>::Output>);

/// Polls every future on the current task until all are done: concurrent requests without
/// needing `'static` futures, so the checks can borrow the store.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut slots: Vec<Slot<F>> = futures.into_iter().map(|f| (Box::pin(f), None)).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in &mut slots {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    slots.into_iter().map(|(_, out)| out.unwrap()).collect()
}

// ---- checks ----

/// A tenant comes with its root folder and keys, atomically; keys can be added and replaced.
pub async fn tenants_and_keys(store: &dyn MetadataStore) {
    let new = new_tenant(Some(1 << 30));
    let created = store.create_tenant(&new).await.unwrap();
    assert_eq!(created.id, new.id);
    assert_eq!(created.name, new.name);
    assert_eq!(created.root_node_id, new.root_node_id);
    assert_eq!(created.key_version, 1);
    assert_eq!(created.quota_bytes, Some(1 << 30));
    assert_eq!(created.created_ms, new.now_ms);
    assert_eq!(store.tenant(new.id).await.unwrap(), created);
    assert_eq!(store.tenant_by_name(&new.name).await.unwrap(), created);
    let all = store.list_tenants().await.unwrap();
    assert!(all.contains(&created));
    assert!(
        all.windows(2).all(|w| w[0].name <= w[1].name),
        "ordered by name"
    );

    let root = store.node(new.id, new.root_node_id).await.unwrap();
    assert_eq!(root.kind, NodeKind::Dir);
    assert_eq!(root.parent_id, None);
    assert_eq!(root.version, 1);
    assert_eq!(root.name_enc, new.root_name_enc);
    assert_eq!(root.name_index, new.root_name_index);
    assert_eq!(root.content, None);

    let mut expected = new.keys.clone();
    assert_eq!(store.tenant_keys(new.id).await.unwrap(), expected);
    let v2 = wrapped_key(new.id, 2, "primary");
    store.put_tenant_key(&v2).await.unwrap();
    expected.push(v2.clone());
    assert_eq!(store.tenant_keys(new.id).await.unwrap(), expected);
    let rewrapped = WrappedTenantKey {
        master_key_id: "kms:rotated".into(),
        wrapped: random_bytes(61),
        created_ms: 1,
        ..v2.clone()
    };
    store.put_tenant_key(&rewrapped).await.unwrap();
    // A rewrap keeps the version's age.
    expected[2] = WrappedTenantKey {
        created_ms: v2.created_ms,
        ..rewrapped
    };
    assert_eq!(store.tenant_keys(new.id).await.unwrap(), expected);

    let same_name = NewTenant {
        name: new.name.clone(),
        ..new_tenant(None)
    };
    assert_fails!(
        store.create_tenant(&same_name).await,
        MetaError::AlreadyExists
    );
    assert_fails!(
        store.node(same_name.id, same_name.root_node_id).await,
        MetaError::NotFound
    );
    assert!(store.tenant_keys(same_name.id).await.unwrap().is_empty());
    assert_fails!(store.tenant(random_id()).await, MetaError::NotFound);
    assert_fails!(
        store
            .tenant_by_name(&format!("missing-{}", random_u64()))
            .await,
        MetaError::NotFound
    );
    assert_fails!(
        store
            .put_tenant_key(&wrapped_key(random_id(), 1, "primary"))
            .await,
        MetaError::NotFound
    );
}

fn new_user(tenant: &Tenant, now: i64) -> NewUser {
    NewUser {
        id: random_id(),
        tenant_id: tenant.id,
        name: format!("user-{:016x}", random_u64()),
        password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
        home_node_id: tenant.root_node_id,
        perms: 0b1011,
        now_ms: now,
    }
}

/// Users are unique by name across tenants, can be changed and deleted, and lock out after
/// `threshold` failures inside the window.
pub async fn users_and_lockout(store: &dyn MetadataStore) {
    let t = tenant(store, None).await;
    let now = now_ms();
    let new = new_user(&t, now);
    let user = store.create_user(&new).await.unwrap();
    assert_eq!(
        (user.id, user.tenant_id, &user.name, user.perms),
        (new.id, t.id, &new.name, new.perms)
    );
    assert_eq!(user.password_hash, new.password_hash);
    assert!(!user.disabled);
    assert_eq!(user.locked_until_ms, None);
    assert_eq!(store.user_by_name(&new.name).await.unwrap(), user);
    // A request's one query: the user and its tenant, each as read alone.
    assert_eq!(
        store.user_with_tenant(user.id).await.unwrap(),
        (user.clone(), store.tenant(t.id).await.unwrap())
    );
    let second = store.create_user(&new_user(&t, now)).await.unwrap();
    let mine = store.list_users(Some(t.id)).await.unwrap();
    let mut expected = vec![user.clone(), second.clone()];
    expected.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(mine, expected);
    assert!(store.list_users(None).await.unwrap().contains(&second));

    let other = tenant(store, None).await;
    let taken = NewUser {
        name: new.name.clone(),
        ..new_user(&other, now)
    };
    assert_fails!(store.create_user(&taken).await, MetaError::AlreadyExists);
    let homeless = NewUser {
        home_node_id: random_id(),
        ..new_user(&t, now)
    };
    assert_fails!(store.create_user(&homeless).await, MetaError::NotFound);
    let foreign_home = NewUser {
        home_node_id: other.root_node_id,
        ..new_user(&t, now)
    };
    assert_fails!(store.create_user(&foreign_home).await, MetaError::NotFound);

    store.set_password(user.id, None).await.unwrap();
    store.set_disabled(user.id, true).await.unwrap();
    let changed = store.user_by_name(&new.name).await.unwrap();
    assert_eq!(changed.password_hash, None);
    assert!(changed.disabled);
    store.set_disabled(user.id, false).await.unwrap();
    assert!(!store.user_by_name(&new.name).await.unwrap().disabled);
    assert_fails!(
        store.set_password(random_id(), Some("x")).await,
        MetaError::NotFound
    );
    assert_fails!(
        store.set_disabled(random_id(), true).await,
        MetaError::NotFound
    );

    lockout(store, user.id, &new.name).await;

    store.delete_user(user.id).await.unwrap();
    assert_fails!(store.user_by_name(&new.name).await, MetaError::NotFound);
    assert_fails!(store.user_with_tenant(user.id).await, MetaError::NotFound);
    assert_fails!(store.delete_user(user.id).await, MetaError::NotFound);
    assert_eq!(store.list_users(Some(t.id)).await.unwrap(), vec![second]);
}

async fn lockout(store: &dyn MetadataStore, user_id: i64, name: &str) {
    const THRESHOLD: u32 = 3;
    const WINDOW: i64 = 60_000;
    const LOCK: i64 = 300_000;
    let t0 = now_ms();
    let fail = |at: i64| store.record_login_failure(user_id, at, THRESHOLD, WINDOW, LOCK);
    assert_eq!(fail(t0).await.unwrap(), None);
    assert_eq!(fail(t0 + 1).await.unwrap(), None);
    assert_eq!(fail(t0 + 2).await.unwrap(), Some(t0 + 2 + LOCK));
    assert_eq!(
        store.user_by_name(name).await.unwrap().locked_until_ms,
        Some(t0 + 2 + LOCK)
    );
    // A failure while locked keeps the lock.
    assert_eq!(fail(t0 + 3).await.unwrap(), Some(t0 + 2 + LOCK));
    store.clear_login_failures(user_id).await.unwrap();
    assert_eq!(
        store.user_by_name(name).await.unwrap().locked_until_ms,
        None
    );

    // Failures spread wider than the window never lock.
    let t1 = t0 + 10 * WINDOW;
    assert_eq!(fail(t1).await.unwrap(), None);
    assert_eq!(fail(t1 + 1).await.unwrap(), None);
    assert_eq!(fail(t1 + WINDOW + 10).await.unwrap(), None);
    assert_eq!(fail(t1 + WINDOW + 11).await.unwrap(), None);
    assert_eq!(
        fail(t1 + WINDOW + 12).await.unwrap(),
        Some(t1 + WINDOW + 12 + LOCK)
    );
    // An expired lock is reported as no lock.
    let later = t1 + WINDOW + 12 + LOCK + 1;
    assert_eq!(fail(later).await.unwrap(), None);
    store.clear_login_failures(user_id).await.unwrap();
    assert_fails!(
        store
            .record_login_failure(random_id(), t0, THRESHOLD, WINDOW, LOCK)
            .await,
        MetaError::NotFound
    );
}

fn ssh_key(fingerprint: &str) -> NewSshKey {
    NewSshKey {
        algorithm: "ssh-ed25519".into(),
        key_base64: "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl".into(),
        fingerprint: fingerprint.into(),
        comment: "alice@laptop &+-é\" .txt".into(),
    }
}

/// SSH keys belong to one user, are unique per user by fingerprint, and go with the user.
pub async fn ssh_keys(store: &dyn MetadataStore) {
    let t = tenant(store, None).await;
    let alice = store.create_user(&new_user(&t, now_ms())).await.unwrap();
    let bob = store.create_user(&new_user(&t, now_ms())).await.unwrap();
    let first = ssh_key("SHA256:first");
    let second = ssh_key("SHA256:second");
    store.add_ssh_key(alice.id, &first).await.unwrap();
    store.add_ssh_key(alice.id, &second).await.unwrap();
    let keys = store.ssh_keys(alice.id).await.unwrap();
    assert_eq!(keys.len(), 2);
    for (stored, given) in keys.iter().zip([&first, &second]) {
        assert_eq!(stored.user_id, alice.id);
        assert_eq!(stored.algorithm, given.algorithm);
        assert_eq!(stored.key_base64, given.key_base64);
        assert_eq!(stored.fingerprint, given.fingerprint);
        assert_eq!(stored.comment, given.comment);
    }
    assert_fails!(
        store.add_ssh_key(alice.id, &first).await,
        MetaError::AlreadyExists
    );
    store.add_ssh_key(bob.id, &first).await.unwrap();
    assert_fails!(
        store.add_ssh_key(random_id(), &first).await,
        MetaError::NotFound
    );
    store.delete_user(alice.id).await.unwrap();
    assert!(store.ssh_keys(alice.id).await.unwrap().is_empty());
    assert_eq!(store.ssh_keys(bob.id).await.unwrap().len(), 1);
}

/// API tokens are found by their public id, listed per user, unique, deleted only by their
/// owner, and go with the user.
pub async fn api_tokens(store: &dyn MetadataStore) {
    let t = tenant(store, None).await;
    let alice = store.create_user(&new_user(&t, now_ms())).await.unwrap();
    let bob = store.create_user(&new_user(&t, now_ms())).await.unwrap();
    let token = |user_id: i64, expires_ms: Option<i64>| ApiToken {
        id: 0,
        user_id,
        token_id: format!("t{:016x}", random_u64()),
        secret_hash: random_u64().to_be_bytes().repeat(4),
        created_ms: now_ms(),
        expires_ms,
    };
    let first = token(alice.id, None);
    let second = token(alice.id, Some(now_ms() + 86_400_000));
    let stored = store.add_api_token(&first).await.unwrap();
    assert!(stored.id > 0);
    store.add_api_token(&second).await.unwrap();
    let found = store.api_token(&second.token_id).await.unwrap();
    assert_eq!(
        (found.user_id, &found.secret_hash, found.expires_ms),
        (alice.id, &second.secret_hash, second.expires_ms)
    );
    let listed: Vec<String> = store
        .api_tokens(alice.id)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.token_id)
        .collect();
    assert_eq!(listed, [first.token_id.clone(), second.token_id.clone()]);
    let stolen_id = ApiToken {
        user_id: bob.id,
        ..first.clone()
    };
    assert_fails!(
        store.add_api_token(&stolen_id).await,
        MetaError::AlreadyExists
    );
    assert_fails!(
        store.delete_api_token(bob.id, &first.token_id).await,
        MetaError::NotFound
    );
    store
        .delete_api_token(alice.id, &first.token_id)
        .await
        .unwrap();
    assert_fails!(store.api_token(&first.token_id).await, MetaError::NotFound);
    store.delete_user(alice.id).await.unwrap();
    assert_fails!(store.api_token(&second.token_id).await, MetaError::NotFound);
}

/// Folders nest, names are unique per folder, and one tenant never sees another's nodes.
pub async fn dirs_and_children(store: &dyn MetadataStore) {
    let t = tenant(store, None).await;
    let root = t.root_node_id;
    let spec = NewDir {
        name_enc: [vec![0_u8; 3], vec![0xff; 252]].concat(),
        ..new_dir(&t, root)
    };
    let a = store.create_dir(&spec).await.unwrap();
    assert_eq!(a.parent_id, Some(root));
    assert_eq!(
        (a.kind, a.version, a.content.clone()),
        (NodeKind::Dir, 1, None)
    );
    assert_eq!(store.node(t.id, a.id).await.unwrap(), a);
    assert_eq!(store.child(t.id, root, &spec.name_index).await.unwrap(), a);
    let b = mkdir(store, &t, a.id).await;
    assert_eq!(store.children(t.id, root).await.unwrap(), vec![a.clone()]);
    assert_eq!(store.children(t.id, a.id).await.unwrap(), vec![b.clone()]);
    assert!(store.children(t.id, b.id).await.unwrap().is_empty());

    let clash = NewDir {
        name_index: spec.name_index.clone(),
        ..new_dir(&t, root)
    };
    assert_fails!(store.create_dir(&clash).await, MetaError::AlreadyExists);
    let elsewhere = NewDir {
        parent_id: b.id,
        ..clash
    };
    store.create_dir(&elsewhere).await.unwrap();
    assert_fails!(
        store.create_dir(&new_dir(&t, random_id())).await,
        MetaError::NotFound
    );
    let file = put_file(store, &t, root, 10).await;
    assert_fails!(
        store.create_dir(&new_dir(&t, file.id)).await,
        MetaError::WrongKind(_)
    );
    assert_fails!(
        store.child(t.id, root, &name_index()).await,
        MetaError::NotFound
    );

    let other = tenant(store, None).await;
    assert_fails!(store.node(other.id, a.id).await, MetaError::NotFound);
    assert_fails!(
        store.child(other.id, root, &spec.name_index).await,
        MetaError::NotFound
    );
    assert!(store.children(other.id, root).await.unwrap().is_empty());
    assert_fails!(
        store.create_dir(&new_dir(&other, a.id)).await,
        MetaError::NotFound
    );

    store.set_mtime(t.id, a.id, 1_234).await.unwrap();
    let touched = store.node(t.id, a.id).await.unwrap();
    assert_eq!(touched.mtime_ms, 1_234);
    assert_eq!(
        touched.version, a.version,
        "mtime is not content, name or place"
    );
    assert_fails!(
        store.set_mtime(other.id, a.id, 1).await,
        MetaError::NotFound
    );
}

/// A commit creates a node, or gives the existing file new content under the same id.
pub async fn commit_new_and_replace(store: &dyn MetadataStore) {
    let t = tenant(store, None).await;
    let dir = mkdir(store, &t, t.root_node_id).await;
    let index = name_index();
    let upload_id = store
        .begin_upload(&NewUpload {
            tenant_id: t.id,
            spool_name: object_key(),
            object_key: object_key(),
            node_name: "node-a".into(),
            now_ms: now_ms(),
        })
        .await
        .unwrap();
    let first = CommitFile {
        upload_id: Some(upload_id),
        ..new_file(&t, dir.id, &index, 1_000)
    };
    let CommitOutcome { node, created } = store.commit_file(&first).await.unwrap();
    assert!(created);
    assert_eq!(
        (node.id, node.version, node.kind),
        (first.new_id, 1, NodeKind::File)
    );
    assert_eq!(node.parent_id, Some(dir.id));
    assert_eq!(node.name_enc, first.name_enc);
    assert_eq!(node.content.as_ref(), Some(&first.content));
    assert_eq!(
        (node.mtime_ms, node.ctime_ms),
        (first.mtime_ms, first.now_ms)
    );
    assert_eq!(store.node(t.id, node.id).await.unwrap(), node);
    assert_eq!(store.child(t.id, dir.id, &index).await.unwrap(), node);
    assert!(has_job(store, &first.content.object_key, ReplicationOp::Copy).await);
    assert!(
        !store
            .uploads()
            .await
            .unwrap()
            .iter()
            .any(|u| u.id == upload_id)
    );
    assert_eq!(
        store.usage(t.id).await.unwrap(),
        Usage {
            bytes: 1_000,
            files: 1
        }
    );

    let second = new_file(&t, dir.id, &index, 300);
    let replaced = store.commit_file(&second).await.unwrap();
    assert!(!replaced.created);
    let node2 = replaced.node;
    assert_eq!(
        (node2.id, node2.version),
        (node.id, 2),
        "id kept, version bumped"
    );
    assert_eq!(
        node2.name_enc, first.name_enc,
        "the name stays bound to the node"
    );
    assert_eq!(node2.content.as_ref(), Some(&second.content));
    assert_eq!(node2.mtime_ms, second.mtime_ms);
    assert_eq!(node2.ctime_ms, node.ctime_ms);
    assert_eq!(store.node(t.id, node.id).await.unwrap(), node2);
    assert!(is_garbage(store, &first.content.object_key).await);
    assert!(has_job(store, &first.content.object_key, ReplicationOp::Delete).await);
    assert!(has_job(store, &second.content.object_key, ReplicationOp::Copy).await);
    assert!(!is_garbage(store, &second.content.object_key).await);

    let third = CommitFile {
        expect_node: Some((node.id, 2)),
        ..new_file(&t, dir.id, &index, 50)
    };
    let node3 = store.commit_file(&third).await.unwrap().node;
    assert_eq!((node3.id, node3.version), (node.id, 3));
    assert_eq!(store.children(t.id, dir.id).await.unwrap(), vec![node3]);
    assert_eq!(
        store.usage(t.id).await.unwrap(),
        Usage {
            bytes: 50,
            files: 1
        }
    );
}

/// A commit that loses a race or hits the wrong kind changes nothing at all.
pub async fn commit_conflicts(store: &dyn MetadataStore) {
    let t = tenant(store, None).await;
    let root = t.root_node_id;
    let index = name_index();
    let original = store
        .commit_file(&new_file(&t, root, &index, 10))
        .await
        .unwrap()
        .node;
    let upload_id = store
        .begin_upload(&NewUpload {
            tenant_id: t.id,
            spool_name: object_key(),
            object_key: object_key(),
            node_name: "node-a".into(),
            now_ms: now_ms(),
        })
        .await
        .unwrap();
    let losers = [
        Some((original.id, original.version + 1)),
        Some((original.id, original.version - 1)),
        Some((random_id(), original.version)),
    ];
    for expect in losers {
        let stale = CommitFile {
            expect_node: expect,
            upload_id: Some(upload_id),
            ..new_file(&t, root, &index, 99)
        };
        assert_fails!(store.commit_file(&stale).await, MetaError::Conflict);
        assert!(!has_job(store, &stale.content.object_key, ReplicationOp::Copy).await);
    }
    assert_eq!(store.node(t.id, original.id).await.unwrap(), original);
    assert!(!is_garbage(store, object_of(&original)).await);
    assert!(
        store
            .uploads()
            .await
            .unwrap()
            .iter()
            .any(|u| u.id == upload_id),
        "a failed commit keeps its upload row"
    );

    let vanished = CommitFile {
        expect_node: Some((random_id(), 1)),
        ..new_file(&t, root, &name_index(), 5)
    };
    assert_fails!(store.commit_file(&vanished).await, MetaError::Conflict);
    assert_fails!(
        store.child(t.id, root, &vanished.name_index).await,
        MetaError::NotFound
    );

    let dir = mkdir(store, &t, root).await;
    assert_fails!(
        store
            .commit_file(&new_file(&t, root, &dir.name_index, 5))
            .await,
        MetaError::WrongKind(_)
    );
    assert_fails!(
        store
            .commit_file(&new_file(&t, random_id(), &name_index(), 5))
            .await,
        MetaError::NotFound
    );
    assert_fails!(
        store
            .commit_file(&new_file(&t, original.id, &name_index(), 5))
            .await,
        MetaError::WrongKind(_)
    );
    assert_eq!(
        store.usage(t.id).await.unwrap(),
        Usage {
            bytes: 10,
            files: 1
        }
    );
    store.end_upload(upload_id).await.unwrap();
}

/// Files go with their object queued for deletion; folders only when empty; roots never.
pub async fn remove_semantics(store: &dyn MetadataStore) {
    let t = tenant(store, None).await;
    let root = t.root_node_id;
    let dir = mkdir(store, &t, root).await;
    let file = put_file(store, &t, dir.id, 42).await;
    assert_fails!(store.remove(t.id, dir.id).await, MetaError::NotEmpty);
    assert_fails!(store.remove(t.id, root).await, MetaError::WrongKind(_));
    assert_fails!(store.remove(t.id, random_id()).await, MetaError::NotFound);
    let other = tenant(store, None).await;
    assert_fails!(store.remove(other.id, file.id).await, MetaError::NotFound);

    store.remove(t.id, file.id).await.unwrap();
    assert_fails!(store.node(t.id, file.id).await, MetaError::NotFound);
    assert!(is_garbage(store, object_of(&file)).await);
    assert!(has_job(store, object_of(&file), ReplicationOp::Delete).await);
    assert_eq!(store.usage(t.id).await.unwrap(), Usage::default());

    store.remove(t.id, dir.id).await.unwrap();
    assert!(store.children(t.id, root).await.unwrap().is_empty());
    assert_fails!(store.remove(t.id, dir.id).await, MetaError::NotFound);
    assert_eq!(store.node(t.id, root).await.unwrap().kind, NodeKind::Dir);
}

/// Renames and moves change one row; replacing needs two files; folders cannot enter
/// their own subtree.
pub async fn rename_move_replace_cycle(store: &dyn MetadataStore) {
    let t = tenant(store, None).await;
    let root = t.root_node_id;
    let a = mkdir(store, &t, root).await;
    let b = mkdir(store, &t, a.id).await;
    let file = put_file(store, &t, root, 7).await;

    let step = rename_to(&t, &file, root, false);
    store.rename(&step).await.unwrap();
    let renamed = store.child(t.id, root, &step.new_name_index).await.unwrap();
    assert_eq!((renamed.id, renamed.version), (file.id, file.version + 1));
    assert_eq!(renamed.name_enc, step.new_name_enc);
    assert_eq!(renamed.content, file.content);
    assert_fails!(
        store.child(t.id, root, &file.name_index).await,
        MetaError::NotFound
    );

    let into_b = rename_to(&t, &renamed, b.id, false);
    store.rename(&into_b).await.unwrap();
    let moved = store.node(t.id, file.id).await.unwrap();
    assert_eq!(moved.parent_id, Some(b.id));
    assert_eq!(child_ids(store, &t, b.id).await, vec![file.id]);

    // Same place, same name: allowed, only the encrypted name is rewritten.
    let same = RenameNode {
        new_name_index: moved.name_index.clone(),
        ..rename_to(&t, &moved, b.id, false)
    };
    store.rename(&same).await.unwrap();
    assert_eq!(
        store.node(t.id, file.id).await.unwrap().name_enc,
        same.new_name_enc
    );

    let rival = put_file(store, &t, b.id, 9).await;
    let onto_rival = RenameNode {
        new_name_index: rival.name_index.clone(),
        ..rename_to(&t, &moved, b.id, false)
    };
    assert_fails!(store.rename(&onto_rival).await, MetaError::AlreadyExists);
    let replacing = RenameNode {
        replace: true,
        ..onto_rival
    };
    store.rename(&replacing).await.unwrap();
    assert_fails!(store.node(t.id, rival.id).await, MetaError::NotFound);
    assert_eq!(
        store.child(t.id, b.id, &rival.name_index).await.unwrap().id,
        file.id
    );
    assert!(is_garbage(store, object_of(&rival)).await);
    assert!(has_job(store, object_of(&rival), ReplicationOp::Delete).await);
    assert!(!is_garbage(store, object_of(&file)).await);

    // `replace` never replaces a folder.
    let onto_folder = RenameNode {
        new_name_index: a.name_index.clone(),
        ..rename_to(&t, &moved, root, true)
    };
    assert_fails!(store.rename(&onto_folder).await, MetaError::AlreadyExists);

    assert_fails!(
        store.rename(&rename_to(&t, &a, a.id, false)).await,
        MetaError::Cycle
    );
    assert_fails!(
        store.rename(&rename_to(&t, &a, b.id, false)).await,
        MetaError::Cycle
    );
    let root_node = store.node(t.id, root).await.unwrap();
    assert_fails!(
        store.rename(&rename_to(&t, &root_node, a.id, false)).await,
        MetaError::WrongKind(_)
    );
    assert_fails!(
        store.rename(&rename_to(&t, &a, file.id, false)).await,
        MetaError::WrongKind(_)
    );
    let other = tenant(store, None).await;
    assert_fails!(
        store
            .rename(&rename_to(&t, &a, other.root_node_id, false))
            .await,
        MetaError::NotFound
    );
    assert_eq!(
        store.node(t.id, a.id).await.unwrap(),
        a,
        "failed renames change nothing"
    );

    // Moving a folder up out of its parent is fine.
    store.rename(&rename_to(&t, &b, root, false)).await.unwrap();
    assert_eq!(child_ids(store, &t, a.id).await, Vec::<i64>::new());
    assert_eq!(
        store.node(t.id, file.id).await.unwrap().parent_id,
        Some(b.id)
    );
}

/// Moving a folder rewrites its own row only: every child keeps its parent and version.
pub async fn rename_folder_with_many_children_is_one_update(store: &dyn MetadataStore) {
    let t = tenant(store, None).await;
    let root = t.root_node_id;
    let folder = mkdir(store, &t, root).await;
    let destination = mkdir(store, &t, root).await;
    let mut expected = Vec::with_capacity(MANY_CHILDREN);
    for i in 0..MANY_CHILDREN {
        let child = if i % 100 == 0 {
            put_file(store, &t, folder.id, 1).await
        } else {
            mkdir(store, &t, folder.id).await
        };
        expected.push(child);
    }
    expected.sort_by_key(|n| n.id);

    let step = rename_to(&t, &folder, destination.id, false);
    store.rename(&step).await.unwrap();

    let moved = store.node(t.id, folder.id).await.unwrap();
    assert_eq!(moved.parent_id, Some(destination.id));
    assert_eq!(moved.version, folder.version + 1);
    let mut children = store.children(t.id, folder.id).await.unwrap();
    children.sort_by_key(|n| n.id);
    assert_eq!(children.len(), MANY_CHILDREN);
    assert_eq!(
        children, expected,
        "children untouched: same parent, same version"
    );
    assert_eq!(child_ids(store, &t, destination.id).await, vec![folder.id]);
    assert_eq!(child_ids(store, &t, root).await, vec![destination.id]);
}

/// Uploads in flight are listed oldest first until ended; ending twice is fine.
pub async fn uploads(store: &dyn MetadataStore) {
    let t = tenant(store, None).await;
    let now = now_ms();
    let specs: Vec<NewUpload> = (0..2)
        .map(|i| NewUpload {
            tenant_id: t.id,
            spool_name: format!("{}.spool", object_key()),
            object_key: object_key(),
            node_name: format!("node-{i}"),
            now_ms: now + i,
        })
        .collect();
    let mut ids = Vec::new();
    for spec in &specs {
        ids.push(store.begin_upload(spec).await.unwrap());
    }
    let listed: Vec<_> = store
        .uploads()
        .await
        .unwrap()
        .into_iter()
        .filter(|u| u.tenant_id == t.id)
        .collect();
    assert_eq!(listed.len(), 2);
    for ((upload, spec), id) in listed.iter().zip(&specs).zip(&ids) {
        assert_eq!(upload.id, *id);
        assert_eq!(upload.spool_name, spec.spool_name);
        assert_eq!(upload.object_key, spec.object_key);
        assert_eq!(upload.node_name, spec.node_name);
        assert_eq!(upload.started_ms, spec.now_ms);
    }
    store.end_upload(ids[0]).await.unwrap();
    store.end_upload(ids[0]).await.unwrap();
    let left: Vec<i64> = store
        .uploads()
        .await
        .unwrap()
        .iter()
        .map(|u| u.id)
        .collect();
    assert!(!left.contains(&ids[0]));
    assert!(left.contains(&ids[1]));
    store.end_upload(ids[1]).await.unwrap();
    assert_fails!(
        store
            .begin_upload(&NewUpload {
                tenant_id: random_id(),
                ..specs[0].clone()
            })
            .await,
        MetaError::NotFound
    );
}

/// Jobs retry with backoff and vanish when done; garbage is listed until collected.
pub async fn replication_and_garbage(store: &dyn MetadataStore) {
    let t = tenant(store, None).await;
    let now = now_ms();
    let index = name_index();
    let first = new_file(&t, t.root_node_id, &index, 5);
    store.commit_file(&first).await.unwrap();
    let key = &first.content.object_key;
    let job = jobs_for(store, key).await.pop().expect("a copy job");
    assert_eq!(
        (job.op, job.attempts, job.last_error.clone()),
        (ReplicationOp::Copy, 0, None)
    );
    assert_eq!(job.created_ms, first.now_ms);

    let long_error = format!("replica unreachable: {}", "x".repeat(10_000));
    store
        .replication_failed(job.id, &long_error, now)
        .await
        .unwrap();
    store
        .replication_failed(job.id, "timeout", now)
        .await
        .unwrap();
    let retried = jobs_for(store, key).await.pop().unwrap();
    assert_eq!(retried.attempts, 2);
    assert_eq!(retried.last_error.as_deref(), Some("timeout"));
    assert_eq!(retried.created_ms, job.created_ms);

    // A newer job that has never failed is due before the one backing off.
    let second = CommitFile {
        now_ms: now + 1,
        ..new_file(&t, t.root_node_id, &name_index(), 5)
    };
    store.commit_file(&second).await.unwrap();
    let order: Vec<i64> = store
        .pending_replication(SCAN_ALL)
        .await
        .unwrap()
        .iter()
        .filter(|j| j.object_key == *key || j.object_key == second.content.object_key)
        .map(|j| j.id)
        .collect();
    let fresh = jobs_for(store, &second.content.object_key)
        .await
        .pop()
        .unwrap();
    assert_eq!(order, vec![fresh.id, job.id]);

    assert_fails!(
        store.replication_failed(i64::MAX - 1, "x", now).await,
        MetaError::NotFound
    );
    store.replication_done(&[job.id]).await.unwrap();
    store.replication_done(&[job.id]).await.unwrap();
    assert!(jobs_for(store, key).await.is_empty());
    store.replication_done(&[fresh.id]).await.unwrap();

    let replace = new_file(&t, t.root_node_id, &index, 6);
    store.commit_file(&replace).await.unwrap();
    let garbage = store.garbage(SCAN_ALL).await.unwrap();
    let entry = garbage
        .iter()
        .find(|g| g.object_key == *key)
        .expect("old object is garbage");
    assert_eq!(entry.created_ms, replace.now_ms);
    store.garbage_done(entry.id).await.unwrap();
    store.garbage_done(entry.id).await.unwrap();
    assert!(!is_garbage(store, key).await);
    // Several jobs marked done at once (a replication pass does), an unknown id among them.
    let mut ids: Vec<i64> = jobs_for(store, key).await.iter().map(|j| j.id).collect();
    ids.extend(
        jobs_for(store, &replace.content.object_key)
            .await
            .iter()
            .map(|j| j.id),
    );
    assert!(ids.len() >= 2, "the replace queued a copy and a delete");
    ids.push(i64::MAX - 1);
    store.replication_done(&ids).await.unwrap();
    assert!(jobs_for(store, key).await.is_empty());
    assert!(
        jobs_for(store, &replace.content.object_key)
            .await
            .is_empty()
    );
    store.replication_done(&[]).await.unwrap();
}

fn audit_record(at_ms: i64, action: &str) -> AuditRecord {
    AuditRecord {
        at_ms,
        tenant_id: Some(random_id()),
        user_id: Some(random_id()),
        user_name: Some("mallory &+-é\"".into()),
        protocol: "sftp".into(),
        remote_addr: Some("[2001:db8::1]:50022".into()),
        action: action.into(),
        node_id: Some(random_id()),
        outcome: "ok".into(),
        bytes: Some(1 << 40),
    }
}

/// A published reader keeps its object out of the collectable garbage while its row is fresh;
/// a stale row, or garbage past the hard bound, does not; a node's set is replaced whole.
pub async fn garbage_held_by_open_readers(store: &dyn MetadataStore) {
    let t = tenant(store, None).await;
    let (held_index, free_index) = (name_index(), name_index());
    let held = new_file(&t, t.root_node_id, &held_index, 5);
    let free = new_file(&t, t.root_node_id, &free_index, 5);
    store.commit_file(&held).await.unwrap();
    store.commit_file(&free).await.unwrap();
    let replace_held = new_file(&t, t.root_node_id, &held_index, 6);
    let replace_free = new_file(&t, t.root_node_id, &free_index, 6);
    store.commit_file(&replace_held).await.unwrap();
    store.commit_file(&replace_free).await.unwrap();
    let (held_key, free_key) = (&held.content.object_key, &free.content.object_key);
    let became = replace_held.now_ms.max(replace_free.now_ms);
    let node = format!("conformance-{:016x}", random_u64());
    store
        .publish_open_readers(&node, &[held_key.clone(), held_key.clone()], became)
        .await
        .unwrap();
    assert_eq!(
        store.open_readers(&node).await.unwrap(),
        vec![held_key.clone()]
    );

    let ours = |found: Vec<crate::Garbage>| -> Vec<String> {
        let mut keys: Vec<String> = found
            .into_iter()
            .map(|g| g.object_key)
            .filter(|k| k == held_key || k == free_key)
            .collect();
        keys.sort();
        keys
    };
    let both = {
        let mut keys = vec![held_key.clone(), free_key.clone()];
        keys.sort();
        keys
    };
    let fresh = GarbageCut {
        settled_ms: became,
        readers_seen_ms: became - 30_000,
        abandoned_ms: became - 3_600_000,
    };
    let collectable = |cut| async move { store.collectable_garbage(0, SCAN_ALL, cut).await };
    assert_eq!(
        ours(collectable(fresh).await.unwrap()),
        vec![free_key.clone()]
    );
    // Too young: nothing of ours, held or not.
    let young = GarbageCut {
        settled_ms: became - 60_000,
        ..fresh
    };
    assert!(ours(collectable(young).await.unwrap()).is_empty());
    // The reader's row is stale: its node stopped refreshing it.
    let stale = GarbageCut {
        readers_seen_ms: became + 1,
        ..fresh
    };
    assert_eq!(ours(collectable(stale).await.unwrap()), both);
    // Past the hard bound, a fresh reader row does not hold it.
    let abandoned = GarbageCut {
        abandoned_ms: became,
        ..fresh
    };
    assert_eq!(ours(collectable(abandoned).await.unwrap()), both);
    // Paging: nothing at or below the last id is listed again.
    let last = store
        .collectable_garbage(0, SCAN_ALL, stale)
        .await
        .unwrap()
        .iter()
        .map(|g| g.id)
        .max()
        .unwrap();
    assert!(
        ours(
            store
                .collectable_garbage(last, SCAN_ALL, stale)
                .await
                .unwrap()
        )
        .is_empty()
    );

    // A node's set is replaced whole; more keys than one statement holds; empty clears it.
    let many: Vec<String> = (0..300).map(|_| object_key()).collect();
    store
        .publish_open_readers(&node, &many, became + 1)
        .await
        .unwrap();
    let mut sorted = many.clone();
    sorted.sort();
    assert_eq!(store.open_readers(&node).await.unwrap(), sorted);
    assert_eq!(ours(collectable(fresh).await.unwrap()), both);
    store
        .publish_open_readers(&node, &[], became + 2)
        .await
        .unwrap();
    assert!(store.open_readers(&node).await.unwrap().is_empty());

    // Rows of a node that stopped are expired by age, whichever node asks.
    let gone = format!("conformance-{:016x}", random_u64());
    store
        .publish_open_readers(&gone, std::slice::from_ref(held_key), 1)
        .await
        .unwrap();
    assert!(store.expire_open_readers(2).await.unwrap() >= 1);
    assert!(store.open_readers(&gone).await.unwrap().is_empty());

    for g in store.garbage(SCAN_ALL).await.unwrap() {
        if g.object_key == *held_key || g.object_key == *free_key {
            store.garbage_done(g.id).await.unwrap();
        }
    }
    for key in [
        held_key,
        free_key,
        &replace_held.content.object_key,
        &replace_free.content.object_key,
    ] {
        for job in jobs_for(store, key).await {
            store.replication_done(&[job.id]).await.unwrap();
        }
    }
}

/// Audit records come back newest first, exactly as written.
pub async fn audit(store: &dyn MetadataStore) {
    // Start after anything already in the log, so earlier runs cannot interleave.
    let latest = store
        .recent_audit(1)
        .await
        .unwrap()
        .first()
        .map(|r| r.at_ms);
    let base = latest.unwrap_or(0).max(now_ms()) + 1;
    let records = vec![
        audit_record(base, "login"),
        audit_record(base + 1, "upload"),
        AuditRecord {
            tenant_id: None,
            user_id: None,
            user_name: None,
            remote_addr: None,
            node_id: None,
            bytes: None,
            outcome: "denied".into(),
            ..audit_record(base + 2, "login_failed")
        },
    ];
    store.audit(&records[..1]).await.unwrap();
    store.audit(&records[1..]).await.unwrap();
    store.audit(&[]).await.unwrap();
    let recent = store.recent_audit(3).await.unwrap();
    let newest_first: Vec<AuditRecord> = records.into_iter().rev().collect();
    assert_eq!(recent, newest_first);
    assert_eq!(store.recent_audit(1).await.unwrap(), newest_first[..1]);
}

/// With `enforce_quota`, a commit that would exceed the tenant's quota fails and changes
/// nothing; shrinking a file is always allowed.
pub async fn quota(store: &dyn MetadataStore) {
    let t = tenant(store, Some(1_000)).await;
    let root = t.root_node_id;
    let enforced = |size: i64, index: &[u8]| CommitFile {
        enforce_quota: true,
        ..new_file(&t, root, index, size)
    };
    let big_index = name_index();
    store.commit_file(&enforced(600, &big_index)).await.unwrap();
    let exact = enforced(400, &name_index());
    store.commit_file(&exact).await.unwrap();
    assert_eq!(
        store.usage(t.id).await.unwrap(),
        Usage {
            bytes: 1_000,
            files: 2
        }
    );

    let over = enforced(1, &name_index());
    assert_fails!(store.commit_file(&over).await, MetaError::QuotaExceeded);
    assert_fails!(
        store.child(t.id, root, &over.name_index).await,
        MetaError::NotFound
    );
    assert!(!has_job(store, &over.content.object_key, ReplicationOp::Copy).await);
    assert_fails!(
        store.commit_file(&enforced(601, &big_index)).await,
        MetaError::QuotaExceeded
    );
    assert_eq!(
        store.usage(t.id).await.unwrap(),
        Usage {
            bytes: 1_000,
            files: 2
        }
    );

    // Unenforced commits (e.g. an administrator's) may go over.
    store
        .commit_file(&new_file(&t, root, &name_index(), 500))
        .await
        .unwrap();
    assert_eq!(
        store.usage(t.id).await.unwrap(),
        Usage {
            bytes: 1_500,
            files: 3
        }
    );
    let shrink = enforced(100, &big_index);
    let shrunk = store.commit_file(&shrink).await.unwrap();
    assert!(!shrunk.created, "shrinking while over quota is allowed");
    assert_eq!(
        store.usage(t.id).await.unwrap(),
        Usage {
            bytes: 1_000,
            files: 3
        }
    );

    let unlimited = tenant(store, None).await;
    let huge = CommitFile {
        enforce_quota: true,
        ..new_file(
            &unlimited,
            unlimited.root_node_id,
            &name_index(),
            i64::MAX / 2,
        )
    };
    store.commit_file(&huge).await.unwrap();
}

/// Concurrent "create or replace" commits of one new name: exactly one node results; one
/// commit created it and every other replaced it in turn, none failed, and every superseded
/// object is garbage.
pub async fn concurrent_commits_same_name(store: &dyn MetadataStore) {
    let t = tenant(store, None).await;
    let dir = mkdir(store, &t, t.root_node_id).await;
    let index = name_index();
    let commits: Vec<CommitFile> = (0..CONCURRENT_COMMITS)
        .map(|i| new_file(&t, dir.id, &index, i64::try_from(i).unwrap() + 1))
        .collect();
    let results = join_all(commits.iter().map(|c| store.commit_file(c)).collect()).await;
    let outcomes: Vec<CommitOutcome> = results
        .into_iter()
        .map(|r| r.expect("create-or-replace commits never fail on a race"))
        .collect();
    assert_eq!(outcomes.iter().filter(|o| o.created).count(), 1);

    let nodes = store.children(t.id, dir.id).await.unwrap();
    assert_eq!(nodes.len(), 1, "one name, one node");
    let survivor = &nodes[0];
    assert_eq!(survivor.version, i64::try_from(CONCURRENT_COMMITS).unwrap());
    assert!(outcomes.iter().all(|o| o.node.id == survivor.id));
    let live = object_of(survivor);
    assert!(commits.iter().any(|c| c.content.object_key == live));
    for commit in &commits {
        let key = &commit.content.object_key;
        assert_eq!(is_garbage(store, key).await, key != live, "object {key}");
    }
    let usage = store.usage(t.id).await.unwrap();
    assert_eq!(usage.files, 1);
    assert_eq!(usage.bytes, survivor.content.as_ref().unwrap().size);
}

/// Concurrent renames of one folder: each succeeds or reports `Conflict`, and afterwards the
/// folder sits in exactly one place with its children intact.
pub async fn concurrent_rename_same_folder(store: &dyn MetadataStore) {
    let t = tenant(store, None).await;
    let root = t.root_node_id;
    let folder = mkdir(store, &t, root).await;
    let mut kids = Vec::new();
    for _ in 0..5 {
        kids.push(mkdir(store, &t, folder.id).await.id);
    }
    kids.sort_unstable();
    let mut destinations = vec![root];
    for _ in 0..3 {
        destinations.push(mkdir(store, &t, root).await.id);
    }
    let renames: Vec<RenameNode> = (0..CONCURRENT_RENAMES)
        .map(|i| rename_to(&t, &folder, destinations[i % destinations.len()], false))
        .collect();
    let results = join_all(renames.iter().map(|r| store.rename(r)).collect()).await;
    let mut succeeded = 0;
    for result in results {
        match result {
            Ok(()) => succeeded += 1,
            Err(MetaError::Conflict) => {}
            Err(other) => panic!("unexpected rename error: {other:?}"),
        }
    }
    assert!(succeeded >= 1);

    let moved = store.node(t.id, folder.id).await.unwrap();
    assert_eq!(moved.version, folder.version + succeeded);
    let holding: Vec<&RenameNode> = renames
        .iter()
        .filter(|r| r.new_name_index == moved.name_index)
        .collect();
    assert_eq!(holding.len(), 1);
    assert_eq!(moved.parent_id, Some(holding[0].new_parent_id));
    assert_eq!(moved.name_enc, holding[0].new_name_enc);
    let mut places = 0;
    for destination in &destinations {
        places += child_ids(store, &t, *destination)
            .await
            .iter()
            .filter(|&&id| id == folder.id)
            .count();
    }
    assert_eq!(places, 1, "the folder is listed in exactly one place");
    assert_eq!(child_ids(store, &t, folder.id).await, kids);
}

/// Moving A into B while B moves into A: one move wins, the other is refused, and the tree
/// stays a tree.
pub async fn concurrent_cross_moves_never_make_a_cycle(store: &dyn MetadataStore) {
    let t = tenant(store, None).await;
    let a = mkdir(store, &t, t.root_node_id).await;
    let b = mkdir(store, &t, t.root_node_id).await;
    let moves = [
        rename_to(&t, &a, b.id, false),
        rename_to(&t, &b, a.id, false),
    ];
    let results = join_all(moves.iter().map(|m| store.rename(m)).collect()).await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    for result in &results {
        if let Err(error) = result {
            assert!(
                matches!(error, MetaError::Cycle | MetaError::Conflict),
                "loser must get Cycle or Conflict, got {error:?}"
            );
        }
    }
    for start in [a.id, b.id] {
        let mut current = store.node(t.id, start).await.unwrap();
        for _ in 0..3 {
            match current.parent_id {
                Some(parent) => current = store.node(t.id, parent).await.unwrap(),
                None => break,
            }
        }
        assert_eq!(current.id, t.root_node_id, "every folder reaches the root");
    }
}

/// A commit that expects its name to be free loses, with `Conflict`, to a file committed
/// meanwhile; the winner's content stays.
pub async fn commit_expecting_absent_loses_to_a_racing_file(store: &dyn MetadataStore) {
    let t = tenant(store, None).await;
    let root = t.root_node_id;
    let index = name_index();
    let winner = store
        .commit_file(&new_file(&t, root, &index, 10))
        .await
        .unwrap()
        .node;
    let loser = CommitFile {
        expect_absent: true,
        ..new_file(&t, root, &index, 20)
    };
    assert_fails!(store.commit_file(&loser).await, MetaError::Conflict);
    assert_eq!(store.child(t.id, root, &index).await.unwrap(), winner);
    let fresh = CommitFile {
        expect_absent: true,
        ..new_file(&t, root, &name_index(), 30)
    };
    assert!(store.commit_file(&fresh).await.unwrap().created);
}

/// A tenant's own master keys are stored with it and replaced with its rewrapped copies in one
/// transaction; a shred destroys the key rows first, then the tenant goes with everything it
/// owns, its objects queued as garbage; other tenants are untouched.
pub async fn tenant_master_keys_and_shredding(store: &dyn MetadataStore) {
    let mut new = new_tenant(None);
    new.master_keys = vec![TenantMasterKey {
        tenant_id: new.id,
        region: "primary".into(),
        key_id: "arn:aws:kms:eu-west-1:111122223333:key/one".into(),
    }];
    let t = store.create_tenant(&new).await.unwrap();
    assert_eq!(
        store.tenant_master_keys(t.id).await.unwrap(),
        new.master_keys
    );

    let keys = vec![
        TenantMasterKey {
            tenant_id: t.id,
            region: "primary".into(),
            key_id: "alias/customer-eu".into(),
        },
        TenantMasterKey {
            tenant_id: t.id,
            region: "replica".into(),
            key_id: "alias/customer-de".into(),
        },
    ];
    let copies = vec![
        WrappedTenantKey {
            master_key_id: "aws-kms:alias/customer-eu".into(),
            ..wrapped_key(t.id, 1, "primary")
        },
        WrappedTenantKey {
            master_key_id: "aws-kms:alias/customer-de".into(),
            ..wrapped_key(t.id, 1, "replica")
        },
    ];
    store
        .set_tenant_master_keys(t.id, &keys, &copies)
        .await
        .unwrap();
    assert_eq!(store.tenant_master_keys(t.id).await.unwrap(), keys);
    let stored: Vec<String> = store
        .tenant_keys(t.id)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.master_key_id)
        .collect();
    assert_eq!(
        stored,
        ["aws-kms:alias/customer-eu", "aws-kms:alias/customer-de"]
    );
    assert_fails!(
        store.set_tenant_master_keys(random_id(), &[], &[]).await,
        MetaError::NotFound
    );

    let other = tenant(store, None).await;
    let other_file = put_file(store, &other, other.root_node_id, 3).await;
    let dir = mkdir(store, &t, t.root_node_id).await;
    let deep = mkdir(store, &t, dir.id).await;
    let file = put_file(store, &t, deep.id, 7).await;
    let user = store.create_user(&new_user(&t, now_ms())).await.unwrap();
    store
        .add_ssh_key(user.id, &ssh_key("SHA256:shred"))
        .await
        .unwrap();

    assert_eq!(store.destroy_tenant_keys(t.id).await.unwrap(), 2);
    assert!(store.tenant_keys(t.id).await.unwrap().is_empty());
    assert_eq!(store.delete_tenant(t.id, now_ms()).await.unwrap(), 1);
    assert!(is_garbage(store, object_of(&file)).await);
    assert!(!has_job(store, object_of(&file), ReplicationOp::Copy).await);
    assert!(has_job(store, object_of(&file), ReplicationOp::Delete).await);
    assert_fails!(store.tenant(t.id).await, MetaError::NotFound);
    assert_fails!(store.node(t.id, dir.id).await, MetaError::NotFound);
    assert_fails!(store.user(user.id).await, MetaError::NotFound);
    assert!(store.tenant_master_keys(t.id).await.unwrap().is_empty());
    assert_fails!(
        store.delete_tenant(t.id, now_ms()).await,
        MetaError::NotFound
    );
    // The other tenant is untouched.
    assert_eq!(store.tenant_keys(other.id).await.unwrap().len(), 2);
    assert_eq!(
        store.node(other.id, other_file.id).await.unwrap(),
        other_file
    );
    assert!(!is_garbage(store, object_of(&other_file)).await);
}

/// A tenant key rotation: the new version is current at once, rows move batch by batch under
/// a cursor (only rows unchanged since read), a rename during the rotation finds a target not
/// yet rotated by its old index, and the old version's copies go only when no row is under it.
pub async fn tenant_key_rotation(store: &dyn MetadataStore) {
    let t = tenant(store, None).await;
    let root = t.root_node_id;
    let dir = mkdir(store, &t, root).await;
    let files = [
        put_file(store, &t, dir.id, 5).await,
        put_file(store, &t, dir.id, 6).await,
        put_file(store, &t, root, 7).await,
    ];
    assert_eq!(store.count_under_key_version(t.id, 1).await.unwrap(), 5);
    assert_eq!(store.key_rotation(t.id).await.unwrap(), None);
    assert_fails!(store.finish_key_rotation(t.id).await, MetaError::NotFound);

    let copies = [
        wrapped_key(t.id, 2, "primary"),
        wrapped_key(t.id, 2, "replica"),
    ];
    assert_fails!(
        store
            .start_key_rotation(t.id, 2, 3, &copies, now_ms())
            .await,
        MetaError::Conflict
    );
    let started = store
        .start_key_rotation(t.id, 1, 2, &copies, now_ms())
        .await
        .unwrap();
    assert_eq!(
        (
            started.from_version,
            started.to_version,
            started.total,
            started.pass
        ),
        (1, 2, 5, 1)
    );
    assert_eq!(store.tenant(t.id).await.unwrap().key_version, 2);
    assert_eq!(store.tenant_keys(t.id).await.unwrap().len(), 4);
    assert!(
        store
            .key_rotations()
            .await
            .unwrap()
            .iter()
            .any(|r| r.tenant_id == t.id)
    );
    assert_fails!(
        store
            .start_key_rotation(t.id, 2, 3, &copies, now_ms())
            .await,
        MetaError::Conflict
    );

    // A rename during the rotation onto a name still under the old index is refused, or
    // replaces the old-index file when asked to.
    let [a, b, c] = files.clone();
    let onto_b = RenameNode {
        new_name_index: name_index(),
        other_name_index: Some(b.name_index.clone()),
        name_key_version: 2,
        ..rename_to(&t, &a, dir.id, false)
    };
    assert_fails!(store.rename(&onto_b).await, MetaError::AlreadyExists);
    store
        .rename(&RenameNode {
            replace: true,
            ..onto_b.clone()
        })
        .await
        .unwrap();
    assert_fails!(store.node(t.id, b.id).await, MetaError::NotFound);
    let a = store.node(t.id, a.id).await.unwrap();
    assert_eq!(a.name_key_version, 2);
    assert_eq!(a.content.as_ref().unwrap().key_version, 1);

    // First batch: two rows, in id order; the cursor moves past them.
    let batch = store.nodes_under_key_version(t.id, 1, 0, 2).await.unwrap();
    assert_eq!(batch.len(), 2);
    assert!(batch[0].id < batch[1].id);
    let first: Vec<RekeyedNode> = batch.iter().map(|n| rekeyed(n, 2)).collect();
    let cursor = RotationCursor {
        after_id: batch[1].id,
        pass: 1,
    };
    let done = store
        .rekey_nodes(t.id, &first, cursor, now_ms())
        .await
        .unwrap();
    assert_eq!((done.rewritten, done.missed), (2, 0));
    let rotation = store.key_rotation(t.id).await.unwrap().unwrap();
    assert_eq!((rotation.after_id, rotation.rewritten), (batch[1].id, 2));
    assert_eq!(store.finish_key_rotation(t.id).await.unwrap(), None);
    assert_eq!(store.tenant_keys(t.id).await.unwrap().len(), 4);

    // A row changed after it was read is left for the next pass.
    let rest = store
        .nodes_under_key_version(t.id, 1, 0, SCAN_ALL)
        .await
        .unwrap();
    assert!(rest.iter().all(|n| batch.iter().all(|b| b.id != n.id)));
    let stale: Vec<RekeyedNode> = rest.iter().map(|n| rekeyed(n, 2)).collect();
    if let Some(file) = rest.iter().find(|n| n.content.is_some()) {
        store
            .commit_file(&CommitFile {
                expect_node: Some((file.id, file.version)),
                name_index: file.name_index.clone(),
                ..new_file(&t, file.parent_id.unwrap(), &file.name_index, 9)
            })
            .await
            .unwrap();
    }
    let cursor = RotationCursor {
        after_id: i64::MAX,
        pass: 1,
    };
    let done = store
        .rekey_nodes(t.id, &stale, cursor, now_ms())
        .await
        .unwrap();
    assert_eq!(done.rewritten + done.missed, stale.len() as u64);
    // Second pass: whatever is left, read afresh.
    let left = store
        .nodes_under_key_version(t.id, 1, 0, SCAN_ALL)
        .await
        .unwrap();
    let fresh: Vec<RekeyedNode> = left.iter().map(|n| rekeyed(n, 2)).collect();
    let cursor = RotationCursor {
        after_id: i64::MAX,
        pass: 2,
    };
    store
        .rekey_nodes(t.id, &fresh, cursor, now_ms())
        .await
        .unwrap();
    assert_eq!(store.count_under_key_version(t.id, 1).await.unwrap(), 0);
    assert!(
        store
            .nodes_under_key_version(t.id, 1, 0, SCAN_ALL)
            .await
            .unwrap()
            .is_empty()
    );
    // Rewritten rows keep their row version (no plaintext changed) and are found by their new
    // index.
    let dir_now = store.node(t.id, dir.id).await.unwrap();
    assert_eq!(dir_now.version, dir.version);
    assert_eq!(dir_now.name_key_version, 2);
    assert_ne!(dir_now.name_index, dir.name_index);
    assert_eq!(
        store
            .child(t.id, root, &dir_now.name_index)
            .await
            .unwrap()
            .id,
        dir.id
    );
    let c_now = store.node(t.id, c.id).await.unwrap();
    assert_eq!(c_now.content.unwrap().key_version, 2);

    assert_eq!(store.finish_key_rotation(t.id).await.unwrap(), Some(2));
    let versions: Vec<u32> = store
        .tenant_keys(t.id)
        .await
        .unwrap()
        .iter()
        .map(|k| k.version)
        .collect();
    assert_eq!(versions, [2, 2]);
    assert_eq!(store.key_rotation(t.id).await.unwrap(), None);
    assert_fails!(
        store.rekey_nodes(t.id, &[], cursor, now_ms()).await,
        MetaError::NotFound
    );
}

/// Stands in for a node's names and keys rewritten under `version`.
fn rekeyed(node: &Node, version: u32) -> RekeyedNode {
    RekeyedNode {
        id: node.id,
        expect_version: node.version,
        expect_name_key_version: node.name_key_version,
        expect_key_version: node.content.as_ref().map(|c| c.key_version),
        name_enc: name_enc(),
        name_index: name_index(),
        name_key_version: version,
        content: node.content.as_ref().map(|_| RekeyedContent {
            wrapped_dek: random_bytes(72),
            content_hash_enc: random_bytes(60),
            key_version: version,
        }),
    }
}

/// Small objects stored in their row (`inline_object`): the bytes round-trip through a
/// commit; lookups and listings say `inline` without carrying the bytes; a replace, a
/// removal and a tenant deletion take them along and queue the object key for the garbage
/// collector and the replica's delete exactly like an object in the store.
pub async fn inline_objects(store: &dyn MetadataStore) {
    let t = tenant(store, None).await;
    let root = t.root_node_id;
    let index = name_index();
    let inline = |size: i64, sealed: &[u8], index: &[u8]| CommitFile {
        inline_object: Some(sealed.to_vec()),
        ..new_file(&t, root, index, size)
    };
    let sealed = random_bytes(4_133);
    let first = inline(4_096, &sealed, &index);
    let outcome = store.commit_file(&first).await.unwrap();
    assert!(outcome.created);
    let key = first.content.object_key.clone();
    assert!(outcome.node.content.as_ref().unwrap().inline);
    let looked_up = store.node(t.id, outcome.node.id).await.unwrap();
    assert_eq!(
        looked_up, outcome.node,
        "a lookup says inline, like the commit"
    );
    assert_eq!(store.child(t.id, root, &index).await.unwrap(), outcome.node);
    assert_eq!(
        store.children(t.id, root).await.unwrap(),
        vec![outcome.node.clone()]
    );
    assert_eq!(
        store.inline_object(&key).await.unwrap(),
        Some(sealed.clone())
    );
    assert_eq!(
        store.child_with_object(t.id, root, &index).await.unwrap(),
        (outcome.node.clone(), Some(sealed.clone())),
        "a download's lookup brings the row's bytes"
    );
    assert_fails!(
        store.child_with_object(t.id, root, &name_index()).await,
        MetaError::NotFound
    );
    assert!(
        has_job(store, &key, ReplicationOp::Copy).await,
        "an inline object is still copied to the replica"
    );
    assert_eq!(store.usage(t.id).await.unwrap().bytes, 4_096);

    // fsck's repair rewrites the bytes of a row that holds its object, and nothing else.
    let repaired = random_bytes(4_133);
    assert!(store.restore_inline_object(&key, &repaired).await.unwrap());
    assert_eq!(store.inline_object(&key).await.unwrap(), Some(repaired));
    assert!(
        !store
            .restore_inline_object(&object_key(), &sealed)
            .await
            .unwrap()
    );
    assert!(store.restore_inline_object(&key, &sealed).await.unwrap());

    // An object in the store has no bytes in its row; an unknown key has none either.
    let stored = put_file(store, &t, root, 10).await;
    assert!(!stored.content.as_ref().unwrap().inline);
    assert_eq!(store.inline_object(object_of(&stored)).await.unwrap(), None);
    assert_eq!(
        store
            .child_with_object(t.id, root, &stored.name_index)
            .await
            .unwrap(),
        (stored.clone(), None)
    );
    assert!(
        !store
            .restore_inline_object(object_of(&stored), &sealed)
            .await
            .unwrap(),
        "a row whose object is in the store is never given bytes"
    );
    assert_eq!(store.inline_object(&object_key()).await.unwrap(), None);

    // The largest object `uploads.inline_max_bytes` allows (1 MiB) fits a row on every engine.
    let big = random_bytes(1 << 20);
    let biggest = inline(1_000_000, &big, &name_index());
    store.commit_file(&biggest).await.unwrap();
    assert_eq!(
        store
            .inline_object(&biggest.content.object_key)
            .await
            .unwrap(),
        Some(big)
    );

    // Replaced by another inline object: the new bytes. The old object was never in the
    // primary store, so it is no garbage there; its replica copy is queued for deletion.
    let sealed2 = random_bytes(100);
    let second = inline(50, &sealed2, &index);
    let replaced = store.commit_file(&second).await.unwrap();
    assert!(!replaced.created);
    assert!(replaced.node.content.as_ref().unwrap().inline);
    assert_eq!(store.inline_object(&key).await.unwrap(), None);
    assert!(!is_garbage(store, &key).await);
    assert!(has_job(store, &key, ReplicationOp::Delete).await);
    let key2 = second.content.object_key.clone();
    assert_eq!(
        store.inline_object(&key2).await.unwrap(),
        Some(sealed2.clone())
    );

    // A copy job comes with the bytes of the row holding its object; a job for an object in
    // the store, or a delete, with none.
    let jobs = store.pending_replication(SCAN_ALL).await.unwrap();
    let copy_of = |k: &str| {
        jobs.iter()
            .find(|j| j.object_key == k && j.op == ReplicationOp::Copy)
            .cloned()
            .unwrap()
    };
    assert_eq!(copy_of(&key2).inline_object, Some(sealed2));
    assert_eq!(copy_of(object_of(&stored)).inline_object, None);
    assert!(
        jobs.iter()
            .filter(|j| j.op == ReplicationOp::Delete)
            .all(|j| j.inline_object.is_none())
    );

    // Replaced by an object in the store: the row holds no bytes any more.
    let third = new_file(&t, root, &index, 5_000_000);
    let replaced = store.commit_file(&third).await.unwrap();
    assert!(!replaced.node.content.as_ref().unwrap().inline);
    assert!(
        !store
            .node(t.id, replaced.node.id)
            .await
            .unwrap()
            .content
            .unwrap()
            .inline
    );
    assert_eq!(store.inline_object(&key2).await.unwrap(), None);
    assert!(!is_garbage(store, &key2).await);
    assert!(has_job(store, &key2, ReplicationOp::Delete).await);

    // Inline again, then removed: the bytes go with the row.
    let fourth = inline(4_096, &sealed, &index);
    let kept = store.commit_file(&fourth).await.unwrap();
    store.remove(t.id, kept.node.id).await.unwrap();
    let key4 = fourth.content.object_key.clone();
    assert_eq!(store.inline_object(&key4).await.unwrap(), None);
    assert!(!is_garbage(store, &key4).await);
    assert!(has_job(store, &key4, ReplicationOp::Delete).await);

    // A deleted tenant's inline objects go with its rows.
    let fifth = inline(4_096, &sealed, &name_index());
    store.commit_file(&fifth).await.unwrap();
    store.delete_tenant(t.id, now_ms()).await.unwrap();
    let key5 = fifth.content.object_key.clone();
    assert_eq!(store.inline_object(&key5).await.unwrap(), None);
    assert!(is_garbage(store, &key5).await);
}

/// Commits as the upload writer makes them (a new name expected free, a replace of the version
/// read, the quota enforced, the upload's row dropped, small objects in the row): what each
/// leaves behind, and that each refusal changes nothing. On a SQLite file these are the
/// commits made in place (`sql/commit_in_place.rs`), with every refusal left to the pool.
pub async fn commits_as_uploads_make_them(store: &dyn MetadataStore) {
    let t = tenant(store, Some(10_000)).await;
    let dir = mkdir(store, &t, t.root_node_id).await;
    let upload = |size: i64, index: &[u8], expect: Option<(i64, i64)>| CommitFile {
        expect_node: expect,
        expect_absent: expect.is_none(),
        enforce_quota: true,
        ..new_file(&t, dir.id, index, size)
    };
    let begin_upload = || async {
        let upload = NewUpload {
            tenant_id: t.id,
            spool_name: object_key(),
            object_key: object_key(),
            node_name: "node-a".into(),
            now_ms: now_ms(),
        };
        store.begin_upload(&upload).await.unwrap()
    };
    let upload_rows = || async {
        store
            .uploads()
            .await
            .unwrap()
            .iter()
            .map(|u| u.id)
            .collect::<Vec<_>>()
    };

    // A new name, its object in a store, its upload row dropped.
    let index = name_index();
    let upload_id = begin_upload().await;
    let first = CommitFile {
        upload_id: Some(upload_id),
        ..upload(3_000, &index, None)
    };
    let made = store.commit_file(&first).await.unwrap();
    assert!(made.created);
    assert_eq!(made.node, first.new_node());
    assert_eq!(store.child(t.id, dir.id, &index).await.unwrap(), made.node);
    assert!(has_job(store, &first.content.object_key, ReplicationOp::Copy).await);
    assert!(!upload_rows().await.contains(&upload_id));

    // The same name again, expected free: refused, nothing changes.
    let again = upload(10, &index, None);
    assert_fails!(store.commit_file(&again).await, MetaError::Conflict);
    assert_eq!(store.child(t.id, dir.id, &index).await.unwrap(), made.node);
    assert!(!has_job(store, &again.content.object_key, ReplicationOp::Copy).await);
    // A folder that is not there: refused, nothing made.
    let orphan = CommitFile {
        parent_id: random_id(),
        ..upload(10, &name_index(), None)
    };
    assert!(store.commit_file(&orphan).await.is_err());
    assert_fails!(store.node(t.id, orphan.new_id).await, MetaError::NotFound);

    // A replace of the version read, with a small object in the row: the old object is garbage
    // and the replica's copy goes.
    let sealed = random_bytes(1_024);
    let second = CommitFile {
        inline_object: Some(sealed.clone()),
        ..upload(1_000, &index, Some((made.node.id, 1)))
    };
    let replaced = store.commit_file(&second).await.unwrap();
    assert!(!replaced.created);
    assert_eq!((replaced.node.id, replaced.node.version), (made.node.id, 2));
    assert_eq!(replaced.node.content, Some(second.stored_content()));
    assert_eq!(replaced.node.name_enc, first.name_enc);
    assert_eq!(
        store.child_with_object(t.id, dir.id, &index).await.unwrap(),
        (replaced.node.clone(), Some(sealed))
    );
    assert!(is_garbage(store, &first.content.object_key).await);
    assert!(has_job(store, &first.content.object_key, ReplicationOp::Delete).await);
    assert!(has_job(store, &second.content.object_key, ReplicationOp::Copy).await);

    // Replacing the row's object: it was never in the primary store, so it is no garbage;
    // only the replica's copy goes.
    let third = upload(2_000, &index, Some((made.node.id, 2)));
    let node3 = store.commit_file(&third).await.unwrap().node;
    assert_eq!(node3.version, 3);
    assert!(!is_garbage(store, &second.content.object_key).await);
    assert!(has_job(store, &second.content.object_key, ReplicationOp::Delete).await);

    // Another tenant cannot commit into this tenant's folder, nor replace its file by id.
    let other = tenant(store, None).await;
    let intruder = CommitFile {
        expect_absent: true,
        ..new_file(&other, dir.id, &name_index(), 10)
    };
    assert!(store.commit_file(&intruder).await.is_err());
    assert_fails!(
        store.node(other.id, intruder.new_id).await,
        MetaError::NotFound
    );
    assert_fails!(store.node(t.id, intruder.new_id).await, MetaError::NotFound);
    let hijack = CommitFile {
        expect_node: Some((made.node.id, 3)),
        ..new_file(&other, dir.id, &index, 10)
    };
    assert!(store.commit_file(&hijack).await.is_err());
    assert_eq!(store.node(t.id, made.node.id).await.unwrap(), node3);
    assert!(!has_job(store, &hijack.content.object_key, ReplicationOp::Copy).await);

    // A replace of a version that is gone: refused, nothing changes.
    let stale = upload(5, &index, Some((made.node.id, 2)));
    assert_fails!(store.commit_file(&stale).await, MetaError::Conflict);
    assert_eq!(store.node(t.id, made.node.id).await.unwrap(), node3);
    assert!(!has_job(store, &stale.content.object_key, ReplicationOp::Copy).await);

    // Over the quota (10,000 bytes, 2,000 used), new or replaced: refused, nothing changes,
    // the upload row stays for its owner to clean up.
    let upload_id = begin_upload().await;
    let too_big = CommitFile {
        upload_id: Some(upload_id),
        ..upload(8_001, &name_index(), None)
    };
    assert_fails!(store.commit_file(&too_big).await, MetaError::QuotaExceeded);
    assert_fails!(
        store.child(t.id, dir.id, &too_big.name_index).await,
        MetaError::NotFound
    );
    assert!(!has_job(store, &too_big.content.object_key, ReplicationOp::Copy).await);
    assert!(upload_rows().await.contains(&upload_id));
    let grown = upload(10_001, &index, Some((made.node.id, 3)));
    assert_fails!(store.commit_file(&grown).await, MetaError::QuotaExceeded);
    assert_eq!(store.node(t.id, made.node.id).await.unwrap(), node3);
    assert!(!is_garbage(store, &third.content.object_key).await);
    // Exactly up to the quota is allowed.
    let fits = upload(8_000, &name_index(), None);
    assert!(store.commit_file(&fits).await.unwrap().created);
    assert_eq!(
        store.usage(t.id).await.unwrap(),
        Usage {
            bytes: 10_000,
            files: 2
        }
    );
}

/// Asserts that the tenant's usage count is `bytes` in `files`, and that a recount of its
/// files agrees (so `fsck` finds nothing, and its repair changes nothing).
async fn assert_usage(store: &dyn MetadataStore, tenant: &Tenant, bytes: i64, files: i64) {
    let expected = Usage { bytes, files };
    assert_eq!(
        store.usage(tenant.id).await.unwrap(),
        expected,
        "usage count"
    );
    assert_eq!(
        store.check_usage(tenant.id, true).await.unwrap(),
        UsageCheck {
            recorded: expected,
            counted: expected,
            recounted: false,
        },
        "usage count against a recount"
    );
}

/// The usage count that quotas are checked against follows every change of a file and always
/// equals a recount of the tenant's files:
/// - creates, of many files (their ids spread over every shard of the count) and of an empty
///   one;
/// - replaces to a larger, a smaller and the same size, by id and by name;
/// - removals, a rename that replaces a file, refusals that change nothing, and concurrent
///   commits.
///
/// Another tenant's count is untouched, and a tenant's deletion takes its count along.
pub async fn usage_count_follows_every_change(store: &dyn MetadataStore) {
    let t = tenant(store, None).await;
    let other = tenant(store, None).await;
    put_file(store, &other, other.root_node_id, 77).await;
    let root = t.root_node_id;
    let dir = mkdir(store, &t, root).await;
    assert_usage(store, &t, 0, 0).await;

    let mut files = Vec::new();
    for i in 1..=40_i64 {
        let parent = if i % 2 == 0 { root } else { dir.id };
        files.push(put_file(store, &t, parent, i * 100).await);
    }
    let mut bytes: i64 = (1..=40).map(|i| i * 100).sum();
    let mut count = 40;
    assert_usage(store, &t, bytes, count).await;
    put_file(store, &t, root, 0).await;
    count += 1;
    assert_usage(store, &t, bytes, count).await;

    // files[0] (100 bytes) grows to 5,000, replaced by id.
    let grow = CommitFile {
        expect_node: Some((files[0].id, files[0].version)),
        ..new_file(&t, dir.id, &files[0].name_index, 5_000)
    };
    assert!(!store.commit_file(&grow).await.unwrap().created);
    bytes += 4_900;
    assert_usage(store, &t, bytes, count).await;
    // files[1] (200 bytes) shrinks to 50, replaced by name; files[2] keeps its 300 bytes.
    let shrink = new_file(&t, root, &files[1].name_index, 50);
    assert!(!store.commit_file(&shrink).await.unwrap().created);
    bytes -= 150;
    let same = new_file(&t, dir.id, &files[2].name_index, 300);
    assert!(!store.commit_file(&same).await.unwrap().created);
    assert_usage(store, &t, bytes, count).await;

    // Refusals change nothing: a stale version, a name taken, a folder that is not empty.
    let stale = CommitFile {
        expect_node: Some((files[0].id, files[0].version)),
        ..new_file(&t, dir.id, &files[0].name_index, 9_999)
    };
    assert_fails!(store.commit_file(&stale).await, MetaError::Conflict);
    let taken = CommitFile {
        expect_absent: true,
        ..new_file(&t, root, &files[3].name_index, 9_999)
    };
    assert_fails!(store.commit_file(&taken).await, MetaError::Conflict);
    assert_fails!(store.remove(t.id, dir.id).await, MetaError::NotEmpty);
    assert_usage(store, &t, bytes, count).await;

    // files[3] (400 bytes, in root) removed.
    store.remove(t.id, files[3].id).await.unwrap();
    bytes -= 400;
    count -= 1;
    assert_usage(store, &t, bytes, count).await;
    // files[5] (600 bytes, in root) renamed onto files[7] (800 bytes, in root): files[7] goes.
    let onto = RenameNode {
        new_name_index: files[7].name_index.clone(),
        replace: true,
        ..rename_to(&t, &files[5], root, true)
    };
    store.rename(&onto).await.unwrap();
    bytes -= 800;
    count -= 1;
    assert_usage(store, &t, bytes, count).await;
    // A move between folders changes nothing.
    store
        .rename(&rename_to(&t, &files[9], dir.id, false))
        .await
        .unwrap();
    assert_usage(store, &t, bytes, count).await;

    // Concurrent commits, new names and one name replaced in turn.
    let index = name_index();
    let commits: Vec<CommitFile> = (1..=10_i64)
        .map(|i| new_file(&t, dir.id, &name_index(), i))
        .chain((1..=10_i64).map(|i| new_file(&t, root, &index, 1_000 * i)))
        .collect();
    for result in join_all(commits.iter().map(|c| store.commit_file(c)).collect()).await {
        result.unwrap();
    }
    let survivor = store.child(t.id, root, &index).await.unwrap();
    bytes += 55 + survivor.content.as_ref().unwrap().size;
    count += 11;
    assert_usage(store, &t, bytes, count).await;

    assert_usage(store, &other, 77, 1).await;
    store.delete_tenant(t.id, now_ms()).await.unwrap();
    assert_fails!(store.check_usage(t.id, false).await, MetaError::NotFound);
    assert_eq!(store.usage(t.id).await.unwrap(), Usage::default());
    assert_usage(store, &other, 77, 1).await;
}

/// Bytes `add_usage_drift` adds to a tenant's usage count behind the store's back (with one
/// file).
pub const DRIFT_BYTES: i64 = 12_345;

/// `fsck`'s check of the usage count: a count that drifted from the tenant's files (`drift`
/// adds [`DRIFT_BYTES`] and one file to the count of the tenant it is given, by SQL of its
/// own) is reported with both figures and left alone without `repair`; with it, the count
/// is set to the recount, and quotas are checked against the recount from then on.
pub async fn usage_drift_is_found_and_recounted<F, Fut>(store: &dyn MetadataStore, drift: F)
where
    F: FnOnce(i64) -> Fut,
    Fut: Future<Output = ()>,
{
    let t = tenant(store, Some(10_000)).await;
    let dir = mkdir(store, &t, t.root_node_id).await;
    for i in 1..=20_i64 {
        put_file(
            store,
            &t,
            if i % 2 == 0 { dir.id } else { t.root_node_id },
            i,
        )
        .await;
    }
    let right = Usage {
        bytes: 210,
        files: 20,
    };
    let drifted = Usage {
        bytes: 210 + DRIFT_BYTES,
        files: 21,
    };
    assert_usage(store, &t, right.bytes, right.files).await;
    drift(t.id).await;
    assert_eq!(store.usage(t.id).await.unwrap(), drifted);
    // Over the quota by the drift alone: an upload that fits is refused.
    let fits = CommitFile {
        enforce_quota: true,
        ..new_file(&t, dir.id, &name_index(), 100)
    };
    assert_fails!(store.commit_file(&fits).await, MetaError::QuotaExceeded);
    let found = UsageCheck {
        recorded: drifted,
        counted: right,
        recounted: false,
    };
    assert_eq!(store.check_usage(t.id, false).await.unwrap(), found);
    assert_eq!(
        store.usage(t.id).await.unwrap(),
        drifted,
        "no repair asked for"
    );
    assert_eq!(
        store.check_usage(t.id, true).await.unwrap(),
        UsageCheck {
            recounted: true,
            ..found
        }
    );
    assert_usage(store, &t, right.bytes, right.files).await;
    store.commit_file(&fits).await.unwrap();
    assert_usage(store, &t, right.bytes + 100, right.files + 1).await;
}
