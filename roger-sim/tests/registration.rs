//! Scenario: a printer registers (PROTOCOL.md §5, RFC 8628): code, admin approval, poll, device tokens, and the
//! device can then use its token (R-SEC-1 headers on the way).

mod common;

use common::{TestServer, MFP};
use roger_proto::api::DeviceConfig;

#[tokio::test]
async fn printer_registers_and_uses_its_token() {
    let s = TestServer::start().await;
    let tokens = s.register_printer().await;
    assert_eq!(tokens.scope.as_deref(), Some("roger.device"));
    assert_eq!(tokens.tenant_id.as_deref(), Some("acme"));
    let device_id = tokens.device_id.clone().expect("device_id");
    assert!(tokens.refresh_token.is_some());
    let a = s.send(roger_proto::api::get_device(&s.api, &tokens.access_token).unwrap()).await;
    assert_eq!(a.status, 200);
    let cfg: DeviceConfig = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(cfg.device_id, device_id);
    assert_eq!(a.header("cache-control").as_deref(), Some("no-store"));
    let store = s.store().await;
    let dump = store.to_string();
    assert!(!dump.contains(tokens.access_token.secret()), "tokens are stored only as hashes");
    assert!(!dump.contains(tokens.refresh_token.unwrap().secret()));
    assert!(store["devices"][&device_id]["client_id"] == MFP);
}
