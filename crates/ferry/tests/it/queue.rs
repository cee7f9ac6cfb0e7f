//! The sync queue never wedges: a change the server refuses as invalid is set aside with its
//! answer and everything else syncs.

use crate::*;

#[test]
fn a_change_the_server_refuses_is_set_aside_and_the_rest_syncs() {
    let p = Pair::new();
    let phone = p.env.db("phone.db");
    let db = p.env.path("phone.db").display().to_string();
    // 250 good rows and 2 the server refuses (they name another user as owner), mixed in.
    for i in 0..250 {
        insert_jump(&phone, &p.user, i, "fine");
    }
    let stranger = "01900000-0000-7000-8000-0000000b0b00";
    let bad = [insert_jump(&phone, stranger, 1000, "not mine"), insert_jump(&phone, stranger, 1001, "not mine")];
    let status = p.sync_phone();
    assert_eq!(status["failed"], 2, "{status}");
    assert_eq!(status["pending"], 2, "the set-aside changes are still local changes");
    p.sync_laptop();
    assert_eq!(jumps(&p.env.db("laptop.db")).len(), 250, "everything else arrived");

    // The queue shows them with the server's answer; another sync does not push them again.
    let queue: serde_json::Value =
        serde_json::from_slice(&p.env.run(&["queue", "--db", &db, "--json"]).stdout).unwrap();
    let failed = queue["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 2, "{queue}");
    assert!(failed.iter().all(|f| f["status"] == 403 && f["message"].as_str().unwrap().contains("not your user id")));
    assert_eq!(queue["history"][0]["outcome"], "completed");
    assert_eq!(queue["history"][0]["set_aside"], 2);
    let again = p.sync_phone();
    assert_eq!(again["failed"], 2);
    let queue: serde_json::Value =
        serde_json::from_slice(&p.env.run(&["queue", "--db", &db, "--json"]).stdout).unwrap();
    assert_eq!(queue["history"][0]["set_aside"], 0, "not pushed again: {queue}");

    // Fixing one row gives it another try; giving up the other takes it out of the queue.
    phone.execute("UPDATE jump_log SET user_id = ?1 WHERE id = ?2", [&p.user, &bad[0]]).unwrap();
    let status = p.sync_phone();
    assert_eq!((status["failed"].as_u64(), status["pending"].as_u64()), (Some(1), Some(1)), "{status}");
    p.env.ok(&["queue", "--db", &db, "--clear-failed"]);
    let status = p.sync_phone();
    assert_eq!((status["failed"].as_u64(), status["pending"].as_u64()), (Some(0), Some(0)), "{status}");
    p.sync_laptop();
    assert_eq!(jumps(&p.env.db("laptop.db")).len(), 251);
    // Retry puts set-aside changes back: make one fail again, retry it, it fails again.
    phone.execute("UPDATE jump_log SET notes = 'still not mine' WHERE id = ?1", [&bad[1]]).unwrap();
    assert_eq!(p.sync_phone()["failed"], 1);
    p.env.ok(&["queue", "--db", &db, "--retry-failed"]);
    assert_eq!(p.sync_phone()["failed"], 1, "tried again and set aside again");
    p.env.ok(&["queue", "--db", &db, "--clear-completed-older-than", "0"]);
    let queue: serde_json::Value =
        serde_json::from_slice(&p.env.run(&["queue", "--db", &db, "--json"]).stdout).unwrap();
    assert!(queue["history"].as_array().unwrap().is_empty(), "{queue}");
}
