//! The server's own disks: with the free-space floor above what the disk has, uploads are
//! refused on every protocol with the "insufficient storage" answer, nothing of them is left,
//! and the crossing is logged once.

use std::process::Command;

use crate::harness::Env;

const PASSWORD: &str = "correct horse battery";

/// Larger than any disk: every upload meets a disk below the floor.
const FLOOR_ABOVE_ANY_DISK: &str = "[uploads]\nmin_free_bytes = 9223372036854775807\n";

fn spool_and_store_files(env: &Env) -> usize {
    env.all_files()
        .iter()
        .filter(|p| {
            let p = p.to_string_lossy();
            p.contains("/spool/") || p.contains("/store/")
        })
        .count()
}

#[test]
fn uploads_below_the_free_space_floor_are_refused_507_over_https_and_452_over_ftpes() {
    let env = Env::new(FLOOR_ABOVE_ANY_DISK);
    env.add_user("acme", "alice", PASSWORD);
    let server = env.serve();
    let local = env.dir.path().join("upload.bin");
    std::fs::write(&local, vec![7u8; 200_000]).unwrap();
    let before = spool_and_store_files(&env);

    let body = env.dir.path().join("reply.json");
    let out = Command::new("curl")
        .args(["-sS", "-k", "--max-time", "60", "-o"])
        .arg(&body)
        .args(["-w", "%{http_code}", "-u"])
        .arg(format!("alice:{PASSWORD}"))
        .arg("-T")
        .arg(&local)
        .arg(format!(
            "https://127.0.0.1:{}/api/v1/files/report.bin",
            env.ports.https
        ))
        .output()
        .expect("curl is required (apt-get install curl)");
    let status = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let reply: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&body).unwrap()).expect("a JSON error body");
    assert_eq!(status, "507", "{reply}\n{}", server.logs());
    assert_eq!(reply["code"], "insufficient_storage", "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .is_some_and(|m| m.contains("insufficient storage")),
        "{reply}"
    );

    // FTP refuses the upload once the data connection is open (after `150`): a small file is
    // sent whole before the server closes it, so curl reads the final reply.
    let small = env.dir.path().join("small.txt");
    std::fs::write(&small, b"hello").unwrap();
    let out = Command::new("curl")
        .args([
            "-sS",
            "-v",
            "--ssl-reqd",
            "-k",
            "--max-time",
            "60",
            "--user",
        ])
        .arg(format!("alice:{PASSWORD}"))
        .arg("-T")
        .arg(&small)
        .arg(format!("ftp://127.0.0.1:{}/report.bin", env.ports.ftp))
        .output()
        .expect("curl is required (apt-get install curl)");
    let talk = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the upload must fail:\n{talk}");
    assert!(talk.contains("< 452 "), "FTP reply 452 expected:\n{talk}");

    assert_eq!(spool_and_store_files(&env), before, "nothing half-written");
    let logs = server.logs();
    assert_eq!(
        logs.matches("free space is below the floor").count(),
        1,
        "one warning per crossing:\n{logs}"
    );
    let (clean, logs) = server.stop();
    assert!(clean, "{logs}");
}
