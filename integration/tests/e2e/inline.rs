//! Small objects inline in their metadata row (`uploads.inline_max_bytes`), end to end: the
//! real `coffer serve` with its default local stores, OpenSSH `sftp` uploading small files and
//! one large one; the small ones read back identical, leave no object file in the primary
//! store, and reach the replica store; fsck --deep checks them.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::{self, assert_no_canary, bytes, marker, sha256};
use crate::sftp::Site;

/// Object files under a local store directory (its temp dir aside).
fn objects(dir: &Path) -> Vec<String> {
    harness::walk(dir)
        .into_iter()
        .filter(|p| {
            !p.strip_prefix(dir)
                .is_ok_and(|rel| rel.to_string_lossy().starts_with(".tmp"))
        })
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| n.len() == 32 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect()
}

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn small_sftp_uploads_live_in_their_rows_read_back_identical_and_reach_the_replica() {
    let site = Site::with_config("", "[uploads]\ninline_max_bytes = 16384\n");
    let m = marker();
    let primary = site.env.data_dir().join("store/primary");
    let replica = site.env.data_dir().join("store/replica");
    let mut script = format!("mkdir dir-{m}\n");
    let mut small = Vec::new();
    for i in 0..20u64 {
        let name = format!("small-{m}-{i}.txt");
        let mut data = bytes(4_096 + i as usize * 500, i + 1);
        data[..m.len()].copy_from_slice(m.as_bytes());
        site.write_local(&name, &data);
        script.push_str(&format!("put {name} dir-{m}/{name}\n"));
        small.push((name, data));
    }
    let large = bytes(3 * 1024 * 1024 + 17, 99);
    site.write_local("large.bin", &large);
    script.push_str("put large.bin\n");
    site.sftp_ok(&script);

    // Only the large file has an object file in the primary store.
    assert_eq!(objects(&primary).len(), 1, "{:?}", harness::walk(&primary));

    let mut back = String::new();
    for (name, _) in &small {
        back.push_str(&format!("get dir-{m}/{name} back-{name}\n"));
    }
    back.push_str("get large.bin large.back\n");
    site.sftp_ok(&back);
    for (name, data) in &small {
        let got = std::fs::read(site.path(&format!("back-{name}"))).unwrap();
        assert_eq!(sha256(&got), sha256(data), "{name}");
    }
    assert_eq!(
        sha256(&std::fs::read(site.path("large.back")).unwrap()),
        sha256(&large)
    );

    // The replicator copies every object, inline or not, to the replica store.
    wait_for(
        "the replica to hold 21 objects",
        Duration::from_secs(60),
        || objects(&replica).len() == 21,
    );
    let fsck = site.env.ok(&["fsck", "--deep"], "");
    assert!(fsck.contains("21 files, 0 problems"), "{fsck}");

    // A removed small file's replica copy is collected through the outbox.
    site.sftp_ok(&format!("rm dir-{m}/{}\n", small[0].0));
    wait_for("the replica copy to go", Duration::from_secs(60), || {
        objects(&replica).len() == 20
    });
    assert_eq!(objects(&primary).len(), 1);

    // Nothing of the names or the contents is in the clear anywhere: the database holds the
    // small files' sealed bytes only.
    let log = site.server().logs();
    assert_no_canary(&site.env.data_dir(), &[("server log", log.as_bytes())], &m);
}
