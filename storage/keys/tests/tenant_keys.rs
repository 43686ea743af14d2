//! Names, blind indexes, data keys and fields sealed with a tenant's derived subkeys.

use coffer_format::{ContentId, DataKey};
use coffer_keys::{KeyError, TenantKey, TenantKeys};

const TENANT_A: i64 = 41;
const TENANT_B: i64 = 42;

fn keys_for(tenant_id: i64) -> TenantKeys {
    TenantKeys::derive(&TenantKey::generate().unwrap(), tenant_id, 1)
}

fn awkward_names() -> Vec<String> {
    vec![
        String::new(),
        "&+-é\" .txt".to_owned(),
        "report 📁🔐.pdf".to_owned(),
        "é".repeat(127) + "x", // 255 bytes
        "a".repeat(255),
    ]
}

#[test]
fn names_round_trip_including_awkward_ones() {
    let keys = keys_for(TENANT_A);
    for name in awkward_names() {
        let blob = keys.encrypt_name(9, &name).unwrap();
        assert_eq!(keys.decrypt_name(9, &blob).unwrap(), name);
        assert_eq!(blob.len(), name.len() + 1 + 12 + 16);
        assert_eq!(blob[0], coffer_keys::BLOB_VERSION_1);
    }
    assert_eq!(awkward_names()[3].len(), 255);
}

#[test]
fn same_name_encrypts_differently_and_never_in_the_clear() {
    let keys = keys_for(TENANT_A);
    let name = "quarterly-payroll.xlsx";
    let first = keys.encrypt_name(9, name).unwrap();
    let second = keys.encrypt_name(9, name).unwrap();
    assert_ne!(first, second);
    for blob in [&first, &second] {
        assert!(
            !blob
                .windows(8)
                .any(|window| name.as_bytes().windows(8).any(|w| w == window))
        );
    }
}

#[test]
fn fail_name_decrypted_for_another_node_or_tenant_or_tampered() {
    let tenant_key = TenantKey::generate().unwrap();
    let keys = TenantKeys::derive(&tenant_key, TENANT_A, 1);
    let blob = keys.encrypt_name(9, "secret.txt").unwrap();

    assert_eq!(keys.decrypt_name(10, &blob), Err(KeyError::DecryptFailed));
    let same_key_other_tenant = TenantKeys::derive(&tenant_key, TENANT_B, 1);
    assert_eq!(
        same_key_other_tenant.decrypt_name(9, &blob),
        Err(KeyError::DecryptFailed)
    );
    assert_eq!(
        keys_for(TENANT_B).decrypt_name(9, &blob),
        Err(KeyError::DecryptFailed)
    );
    for position in 1..blob.len() {
        let mut tampered = blob.clone();
        tampered[position] ^= 0x80;
        assert_eq!(
            keys.decrypt_name(9, &tampered),
            Err(KeyError::DecryptFailed),
            "byte {position}"
        );
    }
}

#[test]
fn fail_name_blob_short_or_of_unknown_version() {
    let keys = keys_for(TENANT_A);
    let blob = keys.encrypt_name(9, "x").unwrap();
    let mut future = blob.clone();
    future[0] = 2;
    assert_eq!(keys.decrypt_name(9, &future), Err(KeyError::BadBlob));
    assert_eq!(keys.decrypt_name(9, &blob[..28]), Err(KeyError::BadBlob));
    assert_eq!(keys.decrypt_name(9, &[]), Err(KeyError::BadBlob));
}

#[test]
fn blind_index_is_deterministic_and_separates_parent_name_key_and_tenant() {
    let tenant_key = TenantKey::generate().unwrap();
    let keys = TenantKeys::derive(&tenant_key, TENANT_A, 1);
    let index = keys.blind_index(5, "invoice.pdf");

    let rederived = TenantKeys::derive(&TenantKey::from_bytes(*tenant_key.as_bytes()), TENANT_A, 1);
    assert_eq!(rederived.blind_index(5, "invoice.pdf"), index);
    assert_ne!(keys.blind_index(6, "invoice.pdf"), index);
    assert_ne!(keys.blind_index(5, "invoice.PDF"), index);
    assert_ne!(keys_for(TENANT_A).blind_index(5, "invoice.pdf"), index);
    assert_ne!(
        TenantKeys::derive(&tenant_key, TENANT_B, 1).blind_index(5, "invoice.pdf"),
        index
    );
}

#[test]
fn blind_index_matches_hmac_sha256_of_parent_and_name() {
    use aws_lc_rs::{hkdf, hmac};
    let tenant_key = TenantKey::from_bytes([3; 32]);
    let keys = TenantKeys::derive(&tenant_key, TENANT_A, 1);

    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &TENANT_A.to_be_bytes()).extract(&[3; 32]);
    let info: [&[u8]; 1] = [b"coffer/v1/tenant/blind-index"];
    let key: hmac::Key = prk.expand(&info, hmac::HMAC_SHA256).unwrap().into();
    let mut message = 5i64.to_be_bytes().to_vec();
    message.extend_from_slice("é.txt".as_bytes());

    assert_eq!(
        &keys.blind_index(5, "é.txt")[..],
        hmac::sign(&key, &message).as_ref()
    );
}

#[test]
fn data_key_round_trips_only_for_its_content_id() {
    let keys = keys_for(TENANT_A);
    let dek = DataKey::generate().unwrap();
    let content = ContentId::generate().unwrap();
    let wrapped = keys.wrap_dek(&dek, &content).unwrap();

    assert_eq!(
        keys.unwrap_dek(&wrapped, &content).unwrap().as_bytes(),
        dek.as_bytes()
    );
    assert_eq!(wrapped.len(), 1 + 12 + 32 + 16);
    let other_content = ContentId::generate().unwrap();
    assert!(matches!(
        keys.unwrap_dek(&wrapped, &other_content),
        Err(KeyError::UnwrapFailed)
    ));
    let mut tampered = wrapped.clone();
    tampered[20] ^= 1;
    assert!(matches!(
        keys.unwrap_dek(&tampered, &content),
        Err(KeyError::UnwrapFailed)
    ));
}

#[test]
fn fail_tenant_b_cannot_read_tenant_a_data_keys_names_or_fields() {
    let tenant_a = keys_for(TENANT_A);
    let tenant_b = keys_for(TENANT_B);
    let content = ContentId::generate().unwrap();
    let wrapped = tenant_a
        .wrap_dek(&DataKey::generate().unwrap(), &content)
        .unwrap();
    let name = tenant_a.encrypt_name(9, "merger-plan.docx").unwrap();
    let field = tenant_a.seal_field("sha256", b"node 9", &[1; 32]).unwrap();

    assert!(matches!(
        tenant_b.unwrap_dek(&wrapped, &content),
        Err(KeyError::UnwrapFailed)
    ));
    assert_eq!(
        tenant_b.decrypt_name(9, &name),
        Err(KeyError::DecryptFailed)
    );
    assert_eq!(
        tenant_b.open_field("sha256", b"node 9", &field).err(),
        Some(KeyError::DecryptFailed)
    );
}

#[test]
fn fail_new_key_version_does_not_open_old_blobs() {
    let old = TenantKeys::derive(&TenantKey::generate().unwrap(), TENANT_A, 1);
    let new = TenantKeys::derive(&TenantKey::generate().unwrap(), TENANT_A, 2);
    let blob = old.encrypt_name(9, "a.txt").unwrap();
    assert_eq!(new.key_version(), 2);
    assert_eq!(new.decrypt_name(9, &blob), Err(KeyError::DecryptFailed));
}

#[test]
fn fields_round_trip_only_for_their_purpose_and_context() {
    let keys = keys_for(TENANT_A);
    let hash = [0xab; 32];
    let blob = keys
        .seal_field("content-sha256", &9i64.to_be_bytes(), &hash)
        .unwrap();

    let opened = keys
        .open_field("content-sha256", &9i64.to_be_bytes(), &blob)
        .unwrap();
    assert_eq!(opened.as_slice(), &hash);
    let wrong_purpose = keys.open_field("size", &9i64.to_be_bytes(), &blob);
    let wrong_context = keys.open_field("content-sha256", &10i64.to_be_bytes(), &blob);
    assert_eq!(wrong_purpose.err(), Some(KeyError::DecryptFailed));
    assert_eq!(wrong_context.err(), Some(KeyError::DecryptFailed));
}

#[test]
fn fail_field_purpose_and_context_cannot_trade_bytes() {
    let keys = keys_for(TENANT_A);
    let blob = keys.seal_field("ab", b"c", b"value").unwrap();
    assert_eq!(
        keys.open_field("a", b"bc", &blob).err(),
        Some(KeyError::DecryptFailed)
    );
}

#[test]
fn debug_of_tenant_keys_shows_ids_only() {
    let tenant_key = TenantKey::from_bytes([0x77; 32]);
    let debug = format!("{:?}", TenantKeys::derive(&tenant_key, TENANT_A, 3));
    assert!(
        debug.contains("tenant_id: 41") && debug.contains("key_version: 3"),
        "{debug}"
    );
    assert!(!debug.contains("119") && !debug.contains("77"), "{debug}");
}
