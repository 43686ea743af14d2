//! The tenant the metadata tests create: fixed names and keys, only its ids chosen.

use coffer_meta::NewTenant;

/// A tenant `id` named `name`, its root folder `id + 1`, no quota and no keys.
pub fn tenant_spec(id: i64, name: &str) -> NewTenant {
    NewTenant {
        id,
        name: name.into(),
        root_node_id: id + 1,
        root_name_enc: vec![1, 2, 3],
        root_name_index: vec![7; 32],
        quota_bytes: None,
        keys: Vec::new(),
        master_keys: Vec::new(),
        now_ms: 1_700_000_000_000,
    }
}
