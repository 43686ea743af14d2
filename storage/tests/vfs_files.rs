//! The Vfs over real SQLite and local directories: content, names, folders, writes in any order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use coffer_storage::{ErrorKind, GarbageAges, Permissions, WriteOptions};
use common::{CHUNK, bytes, get, put, vault, vault_inlining};

const OVERLAY: WriteOptions = WriteOptions {
    truncate: false,
    exclusive: false,
};

#[tokio::test]
async fn round_trips_at_chunk_boundaries() {
    let tv = vault().await;
    let vfs = tv.user("acme", "alice").await;
    let c = CHUNK as usize;
    for (i, n) in [0, 1, c - 1, c, c + 1, 2 * c, 5 * c + c / 2]
        .into_iter()
        .enumerate()
    {
        let data = bytes(n, i as u64);
        let info = put(&vfs, &format!("/f{n}"), &data).await;
        assert_eq!(info.size, n as u64);
        assert_eq!(
            get(&vfs, &format!("/f{n}")).await.unwrap(),
            data,
            "size {n}"
        );
        assert_eq!(vfs.stat(&format!("/f{n}")).await.unwrap().size, n as u64);
    }
}

#[tokio::test]
async fn reads_at_any_offset_return_exact_bytes() {
    let tv = vault().await;
    let vfs = tv.user("acme", "alice").await;
    let data = bytes(10 * CHUNK as usize + 17, 7);
    put(&vfs, "/r", &data).await;
    let r = vfs.open_read("/r").await.unwrap();
    for (off, len) in [
        (0, 1),
        (4095, 2),
        (4096, 4096),
        (12345, 30000),
        (data.len() - 1, 10),
        (data.len(), 5),
    ] {
        let got = r.read_at(off as u64, len).await.unwrap();
        let end = (off + len).min(data.len());
        assert_eq!(&got[..], &data[off..end], "offset {off} len {len}");
    }
}

#[tokio::test]
async fn out_of_order_and_overlapping_writes_assemble_correctly() {
    let tv = vault().await;
    let vfs = tv.user("acme", "alice").await;
    let data = bytes(40_000, 3);
    let mut w = vfs.create("/ooo", OVERLAY).await.unwrap();
    // Stale bytes written ahead first; the later real writes over them must win.
    w.write_at(5_000, &[0xAA; 3_000]).await.unwrap();
    w.write_at(20_500, &[0xBB; 1_000]).await.unwrap();
    // Pipelined writes arriving shuffled inside a window of eight requests, as SFTP allows.
    let pieces: Vec<(usize, usize)> = (0..data.len())
        .step_by(1000)
        .map(|o| (o, (o + 1000).min(data.len())))
        .collect();
    for window in pieces.chunks(8) {
        let mut window = window.to_vec();
        window.reverse();
        let mid = window.len() / 2;
        window.swap(0, mid);
        for (a, b) in window {
            w.write_at(a as u64, &data[a..b]).await.unwrap();
        }
    }
    // Rewriting bytes already sealed is refused, not silently lost.
    let e = w.write_at(0, b"late").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    let info = w.commit().await.unwrap();
    assert_eq!(info.size, data.len() as u64);
    assert_eq!(get(&vfs, "/ooo").await.unwrap(), data);
}

#[tokio::test]
async fn a_hole_left_by_the_client_reads_as_zeros() {
    let tv = vault().await;
    let vfs = tv.user("acme", "alice").await;
    let mut w = vfs.create("/sparse", OVERLAY).await.unwrap();
    w.write_at(10_000, b"tail").await.unwrap();
    w.commit().await.unwrap();
    let got = get(&vfs, "/sparse").await.unwrap();
    assert_eq!(got.len(), 10_004);
    assert!(got[..10_000].iter().all(|b| *b == 0));
    assert_eq!(&got[10_000..], b"tail");
}

/// An interrupted new upload keeps its contiguous start for a resume, but not once that
/// start holds zeros the writer filled into a hole the client left: a resume at the kept size
/// would continue over bytes the client never sent.
#[tokio::test]
async fn an_interrupted_upload_keeps_its_start_but_never_zeros_filled_into_a_hole() {
    let tv = vault().await;
    let vfs = tv.user("acme", "alice").await;
    let data = bytes(300_000, 21);

    // In order, then cut off: the bytes received become the file.
    let mut w = vfs.create("/kept", OVERLAY).await.unwrap();
    w.write_at(0, &data[..100_000]).await.unwrap();
    assert!(matches!(
        w.interrupted().await,
        coffer_storage::Interrupted::Kept(_)
    ));
    assert_eq!(get(&vfs, "/kept").await.unwrap(), &data[..100_000]);

    // A 100 KB hole, then more than the writer holds (8 MiB) beyond it: the hole is filled
    // with zeros and sealed. Cut off now, nothing is kept.
    let mut w = vfs.create("/holed", OVERLAY).await.unwrap();
    w.write_at(0, &data[..100_000]).await.unwrap();
    let far = bytes(9 * 1024 * 1024, 22);
    for (i, piece) in far.chunks(1024 * 1024).enumerate() {
        w.write_at(200_000 + (i * 1024 * 1024) as u64, piece)
            .await
            .unwrap();
    }
    assert!(matches!(
        w.interrupted().await,
        coffer_storage::Interrupted::Discarded
    ));
    assert_eq!(
        vfs.stat("/holed").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn resume_continues_a_partial_file_at_its_size() {
    let tv = vault().await;
    let vfs = tv.user("acme", "alice").await;
    let data = bytes(9 * CHUNK as usize + 123, 11);
    let half = 4 * CHUNK as usize + 999; // mid-chunk, like a transfer killed halfway
    put(&vfs, "/big", &data[..half]).await;
    let before = vfs.stat("/big").await.unwrap();
    let mut w = vfs.create("/big", OVERLAY).await.unwrap();
    assert_eq!(
        w.len(),
        half as u64,
        "the writer starts from the stored size"
    );
    w.write_at(half as u64, &data[half..]).await.unwrap();
    let after = w.commit().await.unwrap();
    assert_eq!(after.id, before.id, "same file, new version");
    assert!(after.version > before.version);
    assert_eq!(get(&vfs, "/big").await.unwrap(), data);
}

#[tokio::test]
async fn overlay_without_truncate_keeps_the_rest_of_the_old_content() {
    let tv = vault().await;
    let vfs = tv.user("acme", "alice").await;
    let old = bytes(3 * CHUNK as usize, 1);
    put(&vfs, "/o", &old).await;
    let mut w = vfs.create("/o", OVERLAY).await.unwrap();
    w.write_at(100, b"PATCH").await.unwrap();
    w.commit().await.unwrap();
    let mut want = old.clone();
    want[100..105].copy_from_slice(b"PATCH");
    assert_eq!(get(&vfs, "/o").await.unwrap(), want);
}

#[tokio::test]
async fn an_upload_is_invisible_until_commit_and_the_old_version_stays_readable() {
    let tv = vault().await;
    let vfs = tv.user("acme", "alice").await;
    put(&vfs, "/v", b"version one").await;
    let mut w = vfs
        .create(
            "/v",
            WriteOptions {
                truncate: true,
                exclusive: false,
            },
        )
        .await
        .unwrap();
    w.write_at(0, b"version two, longer").await.unwrap();
    assert_eq!(get(&vfs, "/v").await.unwrap(), b"version one");
    let mut n = vfs.create("/new", WriteOptions::default()).await.unwrap();
    n.write_at(0, b"x").await.unwrap();
    assert_eq!(
        vfs.stat("/new").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    w.commit().await.unwrap();
    n.abort().await;
    assert_eq!(get(&vfs, "/v").await.unwrap(), b"version two, longer");
    assert_eq!(
        vfs.stat("/new").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // Nothing is left in the spool once uploads end.
    let spool: Vec<_> = std::fs::read_dir(tv.root().join("spool"))
        .unwrap()
        .flatten()
        .collect();
    assert!(spool.is_empty(), "spool not empty: {spool:?}");
}

#[tokio::test]
async fn a_dropped_writer_leaves_no_file_and_no_spool() {
    let tv = vault().await;
    let vfs = tv.user("acme", "alice").await;
    {
        let mut w = vfs
            .create("/dropped", WriteOptions::default())
            .await
            .unwrap();
        // Large enough to reach the spool (small uploads stay in memory until commit).
        w.write_at(0, &bytes(3 << 20, 2)).await.unwrap();
        assert_eq!(spool_files(&tv).len(), 1);
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        vfs.stat("/dropped").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        std::fs::read_dir(tv.root().join("spool")).unwrap().count(),
        0
    );
    assert!(tv.meta.uploads().await.unwrap().is_empty());
}

fn spool_files(tv: &common::TestVault) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(tv.root().join("spool"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect()
}

/// An upload that fits one 1 MiB batch never touches the spool: it goes to the store from
/// memory at commit. A larger one is assembled in the spool. Both read back whole.
#[tokio::test]
async fn small_uploads_skip_the_spool_and_large_ones_use_it() {
    let tv = vault().await;
    let vfs = tv.user("acme", "alice").await;
    let small = bytes(300_000, 4);
    let large = bytes(5 << 20, 5);
    let mut s = vfs.create("/small", WriteOptions::default()).await.unwrap();
    s.write_at(0, &small).await.unwrap();
    assert!(spool_files(&tv).is_empty(), "{:?}", spool_files(&tv));
    let mut l = vfs.create("/large", WriteOptions::default()).await.unwrap();
    for (i, part) in large.chunks(256 * 1024).enumerate() {
        l.write_at((i * 256 * 1024) as u64, part).await.unwrap();
    }
    let spooled = spool_files(&tv);
    assert_eq!(spooled.len(), 1);
    // What left memory has its upload row, so a crash now is cleaned up at restart.
    let name = spooled[0].file_stem().unwrap().to_str().unwrap().to_owned();
    let rows = tv.meta.uploads().await.unwrap();
    assert!(
        rows.iter().any(|u| u.spool_name == name),
        "{name}: {rows:?}"
    );
    s.commit().await.unwrap();
    l.commit().await.unwrap();
    assert!(spool_files(&tv).is_empty());
    assert!(tv.meta.uploads().await.unwrap().is_empty());
    assert_eq!(get(&vfs, "/small").await.unwrap(), small);
    assert_eq!(get(&vfs, "/large").await.unwrap(), large);
    assert_eq!(tv.primary_objects().len(), 2);
}

#[tokio::test]
async fn concurrent_replacements_of_one_file_let_exactly_one_win() {
    let tv = vault().await;
    let vfs = tv.user("acme", "alice").await;
    put(&vfs, "/race", b"base").await;
    let mut a = vfs
        .create(
            "/race",
            WriteOptions {
                truncate: true,
                exclusive: false,
            },
        )
        .await
        .unwrap();
    let mut b = vfs
        .create(
            "/race",
            WriteOptions {
                truncate: true,
                exclusive: false,
            },
        )
        .await
        .unwrap();
    a.write_at(0, b"from a").await.unwrap();
    b.write_at(0, b"from b").await.unwrap();
    a.commit().await.unwrap();
    let err = b.commit().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(get(&vfs, "/race").await.unwrap(), b"from a");
}

#[tokio::test]
async fn two_uploads_of_one_new_name_let_exactly_one_win() {
    let tv = vault().await;
    let vfs = tv.user("acme", "alice").await;
    let mut a = vfs
        .create(
            "/fresh",
            WriteOptions {
                truncate: true,
                exclusive: false,
            },
        )
        .await
        .unwrap();
    let mut b = vfs
        .create(
            "/fresh",
            WriteOptions {
                truncate: true,
                exclusive: false,
            },
        )
        .await
        .unwrap();
    b.write_at(0, b"from b").await.unwrap();
    a.write_at(0, b"from a").await.unwrap();
    b.commit().await.unwrap();
    assert_eq!(a.commit().await.unwrap_err().kind(), ErrorKind::Conflict);
    assert_eq!(get(&vfs, "/fresh").await.unwrap(), b"from b");
}

#[tokio::test]
async fn exclusive_create_refuses_an_existing_file() {
    let tv = vault().await;
    let vfs = tv.user("acme", "alice").await;
    put(&vfs, "/x", b"1").await;
    let e = vfs
        .create(
            "/x",
            WriteOptions {
                truncate: false,
                exclusive: true,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
}

#[tokio::test]
async fn a_second_exclusive_create_fails_at_open_while_the_first_is_uploading() {
    let tv = vault().await;
    let alice = tv.user("acme", "alice").await;
    let excl = WriteOptions {
        truncate: false,
        exclusive: true,
    };
    let mut first = alice.create("/race.bin", excl).await.unwrap();
    first.write_at(0, b"first").await.unwrap();
    // Another session of the same tenant, as a second client would have.
    let other = tv.vault.operator_session("alice").await.unwrap();
    let e = other.create("/race.bin", excl).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    first.commit().await.unwrap();
    assert_eq!(get(&alice, "/race.bin").await.unwrap(), b"first");
    // Once the first upload has ended the name is free to claim again (and exists now).
    let e = other.create("/race.bin", excl).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    let aborted = other.create("/second.bin", excl).await.unwrap();
    aborted.abort().await;
    assert!(other.create("/second.bin", excl).await.is_ok());
}

#[tokio::test]
async fn folders_list_sorted_with_decrypted_awkward_names() {
    let tv = vault().await;
    let vfs = tv.user("acme", "alice").await;
    let names = ["&+-é\" .txt", "🦀 crab", "zeta", "Alpha", &"n".repeat(255)];
    vfs.mkdir("/d").await.unwrap();
    for n in names {
        put(&vfs, &format!("/d/{n}"), n.as_bytes()).await;
    }
    vfs.mkdir("/d/sub").await.unwrap();
    let listed: Vec<String> = vfs
        .list("/d")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    let mut want: Vec<String> = names
        .iter()
        .map(|s| s.to_string())
        .chain(["sub".to_string()])
        .collect();
    want.sort();
    assert_eq!(listed, want);
    for n in names {
        assert_eq!(get(&vfs, &format!("/d/{n}")).await.unwrap(), n.as_bytes());
    }
}

#[tokio::test]
async fn rename_moves_a_folder_with_its_whole_subtree() {
    let tv = vault().await;
    let vfs = tv.user("acme", "alice").await;
    vfs.mkdir("/a").await.unwrap();
    vfs.mkdir("/a/b").await.unwrap();
    for i in 0..50 {
        put(&vfs, &format!("/a/b/f{i}"), format!("{i}").as_bytes()).await;
    }
    vfs.mkdir("/z").await.unwrap();
    vfs.rename("/a", "/z/moved", false).await.unwrap();
    assert_eq!(
        vfs.stat("/a").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(vfs.list("/z/moved/b").await.unwrap().len(), 50);
    assert_eq!(get(&vfs, "/z/moved/b/f42").await.unwrap(), b"42");
    // Into itself is refused; onto an existing name without replace is refused.
    assert_eq!(
        vfs.rename("/z", "/z/moved/inside", false)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidPath
    );
    put(&vfs, "/one", b"1").await;
    put(&vfs, "/two", b"2").await;
    assert_eq!(
        vfs.rename("/one", "/two", false).await.unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    vfs.rename("/one", "/two", true).await.unwrap();
    assert_eq!(get(&vfs, "/two").await.unwrap(), b"1");
}

#[tokio::test]
async fn rmdir_and_remove_keep_their_meanings() {
    let tv = vault().await;
    let vfs = tv.user("acme", "alice").await;
    vfs.mkdir("/d").await.unwrap();
    put(&vfs, "/d/f", b"x").await;
    assert_eq!(
        vfs.rmdir("/d").await.unwrap_err().kind(),
        ErrorKind::NotEmpty
    );
    assert_eq!(
        vfs.remove("/d").await.unwrap_err().kind(),
        ErrorKind::IsADirectory
    );
    assert_eq!(
        vfs.rmdir("/d/f").await.unwrap_err().kind(),
        ErrorKind::NotADirectory
    );
    vfs.remove("/d/f").await.unwrap();
    vfs.rmdir("/d").await.unwrap();
    assert!(vfs.list("/").await.unwrap().is_empty());
    assert_eq!(
        vfs.rmdir("/").await.unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );
}

#[tokio::test]
async fn set_times_is_reported_by_stat() {
    let tv = vault().await;
    let vfs = tv.user("acme", "alice").await;
    put(&vfs, "/t", b"x").await;
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_500_000_000);
    vfs.set_times("/t", when).await.unwrap();
    assert_eq!(vfs.stat("/t").await.unwrap().mtime, when);
    let mut w = vfs.create("/t2", WriteOptions::default()).await.unwrap();
    w.set_mtime(when);
    w.commit().await.unwrap();
    assert_eq!(vfs.stat("/t2").await.unwrap().mtime, when);
}

#[tokio::test]
async fn permissions_are_enforced_per_operation() {
    let tv = vault().await;
    let owner = tv.user("acme", "alice").await;
    put(&owner, "/doc", b"x").await;
    let reader = tv
        .user_with(
            "acme",
            "rita",
            Permissions::parse("list,read").unwrap(),
            "/",
        )
        .await;
    assert_eq!(get(&reader, "/doc").await.unwrap(), b"x");
    let denied = [
        reader
            .create("/new", WriteOptions::default())
            .await
            .map(|_| ())
            .unwrap_err()
            .kind(),
        reader.remove("/doc").await.unwrap_err().kind(),
        reader
            .rename("/doc", "/d2", false)
            .await
            .unwrap_err()
            .kind(),
        reader.mkdir("/m").await.map(|_| ()).unwrap_err().kind(),
    ];
    assert!(
        denied.iter().all(|k| *k == ErrorKind::PermissionDenied),
        "{denied:?}"
    );
    let lister = tv.user_with("acme", "lisa", Permissions::LIST, "/").await;
    assert_eq!(
        lister.open_read("/doc").await.unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );
}

#[tokio::test]
async fn quota_refuses_the_upload_that_would_exceed_it() {
    let tv = vault().await;
    let t = tv.vault.create_tenant("small", Some(10_000)).await.unwrap();
    tv.vault
        .create_user(
            &t,
            "sam",
            Some(&coffer_storage::Password::new("pw-sam-secret".into())),
            &coffer_storage::VPath::root(),
            Permissions::ALL,
        )
        .await
        .unwrap();
    let vfs = tv.vault.operator_session("sam").await.unwrap();
    put(&vfs, "/a", &bytes(8_000, 1)).await;
    let mut w = vfs.create("/b", WriteOptions::default()).await.unwrap();
    w.write_at(0, &bytes(5_000, 2)).await.unwrap();
    assert_eq!(
        w.commit().await.unwrap_err().kind(),
        ErrorKind::QuotaExceeded
    );
    let q = vfs.quota().await.unwrap();
    assert_eq!(
        (q.used_bytes, q.files, q.limit_bytes),
        (8_000, 1, Some(10_000))
    );
    assert_eq!(
        vfs.stat("/b").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn replication_copies_committed_objects_and_deletes_removed_ones() {
    let tv = vault().await;
    let vfs = tv.user("acme", "alice").await;
    put(&vfs, "/r1", &bytes(50_000, 1)).await;
    let rep = tv.vault.replicate_once(100).await.unwrap();
    assert_eq!(rep.copied, 1);
    let replica_files = |tv: &common::TestVault| {
        tv.all_files()
            .into_iter()
            .filter(|p| p.starts_with(tv.root().join("store/replica")))
            .count()
    };
    assert_eq!(replica_files(&tv), 1);
    assert_eq!(tv.meta.pending_replication(10).await.unwrap().len(), 0);
    vfs.remove("/r1").await.unwrap();
    let rep = tv.vault.replicate_once(100).await.unwrap();
    assert_eq!(rep.deleted, 1);
    assert_eq!(replica_files(&tv), 0);
    assert_eq!(
        tv.vault
            .collect_garbage(100, coffer_storage::GarbageAges::NOW)
            .await
            .unwrap(),
        1
    );
    assert!(tv.primary_objects().is_empty());
}

#[tokio::test]
async fn files_replaced_before_replication_leave_only_their_current_objects_on_the_replica() {
    // Each first version's copy and delete wait in the same replication pass, which runs jobs
    // side by side: a copy that landed after its delete would stay on the replica for good.
    let tv = vault().await;
    let vfs = tv.user("acme", "alice").await;
    for i in 0..12u64 {
        for version in 0..2u64 {
            put(
                &vfs,
                &format!("/f{i}"),
                &bytes(1_000_000, version * 100 + i),
            )
            .await;
        }
    }
    let rep = tv.vault.replicate_once(1_000).await.unwrap();
    assert_eq!(rep.failed, 0);
    assert!(tv.meta.pending_replication(1_000).await.unwrap().is_empty());
    // The primary holds the replaced versions until the collector runs: collect them.
    tv.vault
        .collect_garbage(1_000, GarbageAges::NOW)
        .await
        .unwrap();
    let names = |paths: Vec<std::path::PathBuf>| {
        let mut names: Vec<String> = paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let on_replica = names(tv.replica_objects());
    let current = names(tv.primary_objects());
    assert_eq!(current.len(), 12);
    assert_eq!(
        on_replica, current,
        "the replica holds exactly the current objects"
    );
}

#[tokio::test]
async fn recovery_removes_uploads_of_a_dead_operator_command_and_keeps_a_live_ones() {
    let tv = vault().await;
    let meta = &tv.meta;
    let spool = tv.root().join("spool");
    let me = std::process::id();
    let dead = 4_000_000_000u32; // above Linux's pid_max: never a running process
    let tenant = tv.vault.create_tenant("acme", None).await.unwrap();
    for pid in [dead, me] {
        std::fs::create_dir_all(spool.join(format!("cli-{pid}"))).unwrap();
        std::fs::write(spool.join(format!("cli-{pid}/abc.spool")), b"sealed").unwrap();
        meta.begin_upload(&coffer_meta::NewUpload {
            tenant_id: tenant.id,
            spool_name: "abc".into(),
            object_key: "0".repeat(32),
            node_name: format!("test-node/cli-{pid}"),
            now_ms: 0,
        })
        .await
        .unwrap();
    }
    tv.vault.recover_uploads().await.unwrap();
    assert!(
        !spool.join(format!("cli-{dead}")).exists(),
        "a dead command's spool is removed"
    );
    assert!(
        spool.join(format!("cli-{me}/abc.spool")).exists(),
        "a running command's upload is kept"
    );
    let left: Vec<String> = meta
        .uploads()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.node_name)
        .collect();
    assert_eq!(left, [format!("test-node/cli-{me}")]);
}

#[tokio::test]
async fn long_sequential_and_interleaved_reads_across_growing_windows_are_exact() {
    let tv = vault().await;
    let vfs = tv.user("acme", "alice").await;
    // 300 chunks: many read windows, so read-ahead and window growth are exercised.
    let data = bytes(300 * CHUNK as usize + 77, 21);
    put(&vfs, "/long", &data).await;
    let r = vfs.open_read("/long").await.unwrap();
    let mut off = 0usize;
    while off < data.len() {
        let got = r.read_at(off as u64, 7000).await.unwrap();
        assert_eq!(
            &got[..],
            &data[off..(off + 7000).min(data.len())],
            "at {off}"
        );
        off += got.len();
    }
    // A jump back and forward again: the read-ahead of a stale position must not leak in.
    for off in [1000usize, 900_000, 5, 1_200_000, 1_228_000] {
        let got = r.read_at(off as u64, 9000).await.unwrap();
        assert_eq!(
            &got[..],
            &data[off..(off + 9000).min(data.len())],
            "at {off}"
        );
    }
}

/// Paths below a user's home are resolved from the home folder's id without reading its row;
/// once an administrator removes that folder, its user finds nothing there, not stale data.
#[tokio::test]
async fn a_removed_home_folder_leaves_its_user_nothing_to_find() {
    let tv = vault().await;
    let admin = tv.user("acme", "alice").await;
    admin.mkdir("/inbox").await.unwrap();
    let bob = tv
        .user_with("acme", "bob", Permissions::ALL, "/inbox")
        .await;
    put(&bob, "/report", b"quarterly").await;
    assert_eq!(get(&bob, "/report").await.unwrap(), b"quarterly");
    admin.remove("/inbox/report").await.unwrap();
    admin.rmdir("/inbox").await.unwrap();
    assert_eq!(
        bob.stat("/report").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(bob.stat("/").await.unwrap_err().kind(), ErrorKind::NotFound);
}

/// Sessions remember lookups briefly (a client walks the same folders file after file): any
/// change made through this process is seen by every session at once; one made by another
/// process (another node, an operator command) within the lookup window.
#[tokio::test]
async fn remembered_lookups_never_hide_a_change_made_here_and_expire_for_others() {
    let tv = vault().await;
    let a = tv.user("acme", "alice").await;
    let b = tv.vault.operator_session("alice").await.unwrap();
    a.mkdir("/d").await.unwrap();
    put(&a, "/d/f", b"one").await;
    assert_eq!(a.stat("/d/f").await.unwrap().size, 3);

    // Its own changes: a replacement, a rename, a removal are seen by the next call.
    put(&a, "/d/f", b"twenty bytes of text").await;
    assert_eq!(a.stat("/d/f").await.unwrap().size, 20);
    assert_eq!(get(&a, "/d/f").await.unwrap(), b"twenty bytes of text");
    a.rename("/d", "/e", false).await.unwrap();
    assert_eq!(
        a.stat("/d/f").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(a.stat("/e/f").await.unwrap().size, 20);
    a.remove("/e/f").await.unwrap();
    assert_gone(&a, "/e/f").await;

    // Another session's changes in this process, at once.
    put(&a, "/e/g", b"abc").await;
    assert_eq!(a.stat("/e/g").await.unwrap().size, 3);
    b.rename("/e", "/moved", false).await.unwrap();
    assert_eq!(
        a.stat("/e/g").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    put(&b, "/moved/g", b"abcdef").await;
    assert_eq!(a.stat("/moved/g").await.unwrap().size, 6);
    assert_eq!(get(&a, "/moved/g").await.unwrap(), b"abcdef");
    b.set_times(
        "/moved/g",
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000),
    )
    .await
    .unwrap();
    assert_eq!(
        a.stat("/moved/g").await.unwrap().mtime,
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000)
    );

    // Another process's change: within the window (0.2 s), never later.
    let other = tv
        .other_process()
        .await
        .operator_session("alice")
        .await
        .unwrap();
    assert_eq!(a.stat("/moved/g").await.unwrap().size, 6);
    other.remove("/moved/g").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    assert_gone(&a, "/moved/g").await;
}

/// Neither stat nor a download finds `path`.
async fn assert_gone(vfs: &coffer_storage::Vfs, path: &str) {
    assert_eq!(
        vfs.stat(path).await.unwrap_err().kind(),
        ErrorKind::NotFound,
        "stat {path}"
    );
    assert_eq!(
        get(vfs, path).await.unwrap_err().kind(),
        ErrorKind::NotFound,
        "get {path}"
    );
}

/// Collection rules for the tests: no grace (so a test need not wait a minute), reader rows
/// and the hard bound as in production.
const NO_GRACE: GarbageAges = GarbageAges {
    grace: Duration::ZERO,
    ..GarbageAges::DEFAULT
};

/// Reads `reader` from start to end in SFTP-sized pieces.
async fn read_all(reader: &coffer_storage::FileReader) -> Vec<u8> {
    let mut got = Vec::new();
    while (got.len() as u64) < reader.size() {
        let part = reader.read_at(got.len() as u64, 64_000).await.unwrap();
        assert!(!part.is_empty());
        got.extend_from_slice(&part);
    }
    got
}

/// A replaced file's old object stays while a download of this process reads it, and goes at
/// the first collection after that download closed — not an hour later.
#[tokio::test]
async fn replaced_object_is_kept_while_read_and_collected_once_its_reader_closed() {
    // Every object in the store: these count the store's objects.
    let tv = vault_inlining(0).await;
    let vfs = tv.user("acme", "alice").await;
    // Larger than one read window, so the reader fetches more of it after the collection.
    let old = bytes(400 * CHUNK as usize + 9, 31);
    put(&vfs, "/report", &old).await;
    let reader = vfs.open_read("/report").await.unwrap();
    put(&vfs, "/report", b"the new version").await;

    assert_eq!(tv.vault.collect_garbage(100, NO_GRACE).await.unwrap(), 0);
    assert_eq!(tv.primary_objects().len(), 2);
    assert_eq!(read_all(&reader).await, old);
    // Within the grace, nothing goes even once the reader has closed.
    drop(reader);
    // Its read-ahead task, aborted by the drop, is dropped (with its hold) the next time the
    // runtime runs its tasks: let it, as any collection pass in `serve` would.
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        tv.vault
            .collect_garbage(100, GarbageAges::DEFAULT)
            .await
            .unwrap(),
        0
    );
    assert_eq!(tv.vault.collect_garbage(100, NO_GRACE).await.unwrap(), 1);
    assert_eq!(tv.primary_objects().len(), 1);
    assert_eq!(get(&vfs, "/report").await.unwrap(), b"the new version");
}

/// A download that never ends (a crashed client whose session lingers) keeps its object only
/// up to the hard bound.
#[tokio::test]
async fn a_reader_past_the_hard_bound_does_not_keep_garbage() {
    // Every object in the store: these count the store's objects.
    let tv = vault_inlining(0).await;
    let vfs = tv.user("acme", "alice").await;
    put(&vfs, "/report", b"old").await;
    let _reader = vfs.open_read("/report").await.unwrap();
    put(&vfs, "/report", b"new").await;
    let bound_passed = GarbageAges {
        max_age: Duration::ZERO,
        ..NO_GRACE
    };
    assert_eq!(
        tv.vault.collect_garbage(100, bound_passed).await.unwrap(),
        1
    );
    assert_eq!(tv.primary_objects().len(), 1);
}

/// Another node on the same database publishes its long download; the collector keeps the
/// object while that row is fresh, and deletes it once the row is stale (the node stopped).
#[tokio::test]
async fn garbage_read_on_another_node_is_kept_until_that_nodes_row_is_stale() {
    // Every object in the store: these count the store's objects.
    let tv = vault_inlining(0).await;
    let vfs = tv.user("acme", "alice").await;
    let old = bytes(400 * CHUNK as usize + 9, 32);
    put(&vfs, "/report", &old).await;
    let other = tv.other_process().await;
    let other_vfs = other.operator_session("alice").await.unwrap();
    let reader = other_vfs.open_read("/report").await.unwrap();
    put(&vfs, "/report", b"the new version").await;
    // Reads shorter than the publication threshold are never written to the database.
    assert_eq!(
        other
            .publish_open_readers(coffer_storage::READER_PUBLISH_AFTER)
            .await
            .unwrap(),
        0
    );
    assert!(tv.meta.open_readers("other-node").await.unwrap().is_empty());
    assert_eq!(other.publish_open_readers(Duration::ZERO).await.unwrap(), 1);

    assert_eq!(tv.vault.collect_garbage(100, NO_GRACE).await.unwrap(), 0);
    assert_eq!(tv.primary_objects().len(), 2);
    assert_eq!(read_all(&reader).await, old);

    // The other node stops refreshing its row: once it is older than the reader lifetime,
    // the object goes.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let row_stale = GarbageAges {
        reader_ttl: Duration::from_millis(20),
        ..NO_GRACE
    };
    assert_eq!(tv.vault.collect_garbage(100, row_stale).await.unwrap(), 1);
    assert_eq!(tv.primary_objects().len(), 1);

    // A node whose readers closed clears its rows at the next publication.
    other.publish_open_readers(Duration::ZERO).await.unwrap();
    drop(reader);
    other.publish_open_readers(Duration::ZERO).await.unwrap();
    assert!(tv.meta.open_readers("other-node").await.unwrap().is_empty());
}

/// With the free-space floor above what the disk has, an upload is refused at open with
/// `InsufficientStorage`, naming the disk; nothing of it is left, the file that was there
/// stays readable, and a download still works.
#[tokio::test]
async fn upload_is_refused_below_the_free_space_floor_and_leaves_nothing() {
    let tv = common::vault_with_free_space_floor(coffer_storage::FreeSpaceFloor {
        min_free_bytes: u64::MAX,
        min_free_percent: 0,
    })
    .await;
    let vfs = tv.user("acme", "alice").await;
    // Another process without a floor (an operator command) wrote the current version.
    let other = tv.other_process().await;
    let other_vfs = other.operator_session("alice").await.unwrap();
    put(&other_vfs, "/report", b"current version").await;
    let before = tv.all_files().len();

    for path in ["/report", "/new-file"] {
        let e = vfs
            .create(
                path,
                WriteOptions {
                    truncate: true,
                    exclusive: false,
                },
            )
            .await
            .expect_err("the upload must be refused");
        assert_eq!(e.kind(), ErrorKind::InsufficientStorage, "{path}");
        assert_eq!(e.kind().code(), "insufficient_storage");
        assert!(e.message().contains("spool"), "{}", e.message());
    }

    assert_eq!(get(&vfs, "/report").await.unwrap(), b"current version");
    assert_eq!(
        vfs.stat("/new-file").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(tv.all_files().len(), before, "no spool file, no object");
    assert!(tv.meta.uploads().await.unwrap().is_empty());
}
