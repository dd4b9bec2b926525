//! The device lifecycle over real sockets and the real CLI: a terminal whose certificate was
//! made outside the collector (so `device decommission` has nothing recorded to revoke) is
//! decommissioned; it can no longer renew (403 `device_decommissioned`), and a new enrollment
//! of the id with a new key starts generation 2, whose chain is accepted from seq 1 while the
//! old one stays under `<id>@gen1`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::enroll::*;
use common::*;
use posguard_proto::record::Record;
use posguard_proto::uplink::UplinkAck;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decommissioned_device_cannot_renew_and_its_id_starts_a_new_generation() {
    let f = fleet("");
    let srv = f.start().await;
    let mut old = device(&f.pki, "till-3");
    let records: Vec<Record> = (0..3).map(|_| old.logout()).collect();
    let (status, _, _) = post(
        srv.addr,
        client_config(&f.pki, Some(&old)),
        batch(vec![old.journal_cert(1)], &records),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);

    let out = f.cli(&[
        "device",
        "decommission",
        "--device",
        "till-3",
        "--reason",
        "stolen",
    ]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(
        (v["state"].as_str(), v["revoked"].as_array().map(Vec::len)),
        (Some("decommissioned"), Some(0))
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ca revoke --serial"),
        "{out:?}"
    );

    // Its (unrevoked) certificate cannot buy it a new one.
    let got = renew(&srv, &f.pki, Some(&old), &device_csr(&old.key, "till-3"))
        .await
        .unwrap();
    assert_eq!(got, (403, "device_decommissioned".into()));

    // Re-provisioned with a token: a new key, a new chain from seq 1.
    let key = p256();
    let (status, v) = enroll(
        &srv,
        &f.pki,
        enroll_body(&f.token("till-3"), &device_csr(&key, "till-3")),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let mut new = enrolled("till-3", key, v["chain_pem"].as_str().unwrap());
    let records: Vec<Record> = (0..2).map(|_| new.logout()).collect();
    let (status, _, bytes) = post(
        srv.addr,
        client_config(&f.pki, Some(&new)),
        batch(vec![new.journal_cert(1)], &records),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{bytes:?}");
    assert_eq!(UplinkAck::from_bytes(&bytes).unwrap().highest_stored, 2);
    let devices = stdout(&f.cli(&["devices"]));
    let rows: Vec<(String, String, u64, u64)> = devices
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["device_id"].as_str().unwrap().to_owned(),
                v["lifecycle"].as_str().unwrap().to_owned(),
                v["generation"].as_u64().unwrap(),
                v["highest_stored"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("till-3".into(), "active".into(), 2, 2),
            ("till-3@gen1".into(), "decommissioned".into(), 1, 3)
        ]
    );
    // A renewal of the new generation works.
    let got = renew(&srv, &f.pki, Some(&new), &device_csr(&new.key, "till-3"))
        .await
        .unwrap();
    assert_eq!(got.0, 200, "{got:?}");
    srv.stop().await;
}
