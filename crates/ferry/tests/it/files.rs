//! Files rows point to: moved device → server → device, verified, resumed, limited, private.

use std::time::{Duration, Instant};

use crate::proxy::{Fault, Proxy};
use crate::*;

/// `n` bytes that do not compress and differ per `seed`.
fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

impl Pair {
    /// Writes a file of `size` bytes, adds it to the phone's replica and references it from a
    /// new jump; returns its hash and content.
    pub(crate) fn phone_adds_video(&self, size: usize, seed: u64) -> (String, Vec<u8>) {
        let content = random_bytes(size, seed);
        let src = self.env.path(&format!("video-{seed}.bin"));
        std::fs::write(&src, &content).unwrap();
        let db = self.env.path("phone.db").display().to_string();
        let hash = self.env.ok(&["file", "add", "--db", &db, &src.display().to_string()]);
        assert_eq!(hash.len(), 64, "file add prints the hash: {hash}");
        let phone = self.env.db("phone.db");
        let id = insert_jump(&phone, &self.user, seed as i64, "with video");
        phone.execute("UPDATE jump_log SET video_sha256 = ?1 WHERE id = ?2", [&hash, &id]).unwrap();
        (hash, content)
    }

    /// `ferry file sync` of a replica through `server` (a URL); returns the JSON report,
    /// or the error output when it fails.
    pub(crate) fn file_sync(
        &self,
        db: &str,
        token: &str,
        server: &str,
        extra: &[&str],
    ) -> Result<serde_json::Value, String> {
        let db = self.env.path(db).display().to_string();
        let mut args = vec!["file", "sync", "--db", &db, "--server", server, "--token", token, "--json"];
        args.extend_from_slice(extra);
        let out = self.env.run(&args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(format!("{}\n{stdout}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap())
    }

    fn file_log(&self, db: &str) -> Vec<serde_json::Value> {
        let db = self.env.path(db).display().to_string();
        serde_json::from_str(&self.env.ok_all(&["file", "log", "--db", &db, "--json"])).unwrap()
    }

    fn laptop_file(&self, hash: &str) -> Option<Vec<u8>> {
        std::fs::read(self.env.path("laptop.db-files").join(hash)).ok()
    }

    /// The server's `/v1/files/check` answer for one hash, as `token` sees it.
    fn server_holds(&self, token: &str, hash: &str) -> serde_json::Value {
        let resp = self
            .server
            .http()
            .post(format!("{}/v1/files/check", self.server.url))
            .bearer_auth(token)
            .json(&serde_json::json!({ "hashes": [hash] }))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json::<serde_json::Value>().unwrap()["files"][0].clone()
    }

    fn admin_status(&self) -> serde_json::Value {
        let admin = self.env.ok(&[
            "token",
            "create",
            "--user",
            "alice",
            "--device",
            "ops",
            "--admin",
            "-c",
            &self.env.config(),
        ]);
        let out = self.env.ok_all(&["server-status", "--server", &self.server.url, "--token", &admin, "--json"]);
        serde_json::from_str(&out).unwrap()
    }
}

#[test]
fn a_file_added_on_one_device_arrives_verified_on_another() {
    let pair = Pair::new();
    let (hash, content) = pair.phone_adds_video(2_500_000, 1);
    let status = pair.sync_phone();
    assert_eq!(status["files"]["uploads"], 1, "{status}");
    assert_eq!(status["files"]["bytes_pending"], 2_500_000);
    let up = pair.file_sync("phone.db", &pair.phone, &pair.server.url, &[]).unwrap();
    assert_eq!((up["uploaded"].as_u64(), up["bytes"].as_u64()), (Some(1), Some(2_500_000)), "{up}");
    let after = pair.sync_phone();
    assert_eq!(after["files"]["queued"], 0, "{after}");

    // The row arrives with row sync; the file is queued for the file worker.
    let status = pair.sync_laptop();
    assert_eq!(status["files"]["downloads"], 1, "{status}");
    assert!(pair.laptop_file(&hash).is_none());
    let down = pair.file_sync("laptop.db", &pair.laptop, &pair.server.url, &[]).unwrap();
    assert_eq!(down["downloaded"], 1, "{down}");
    assert!(pair.laptop_file(&hash) == Some(content.clone()), "the laptop's copy differs");
    assert_eq!(pair.sync_laptop()["files"]["queued"], 0);

    // Opened by hash, checked on the way.
    let out = pair.env.path("opened.bin");
    let db = pair.env.path("laptop.db").display().to_string();
    pair.env.ok(&["file", "open", "--db", &db, &hash, "--out", &out.display().to_string()]);
    assert!(std::fs::read(&out).unwrap() == content);
    let log = pair.file_log("laptop.db");
    assert_eq!((log[0]["direction"].as_str(), log[0]["outcome"].as_str()), (Some("down"), Some("ok")), "{log:?}");
    assert_eq!(log[0]["hash"], hash.as_str());
    let status = pair.admin_status();
    let f = &status["files"];
    assert_eq!((f["stored"].as_u64(), f["stored_bytes"].as_u64()), (Some(1), Some(2_500_000)), "{status}");
    assert_eq!((f["uploads_completed"].as_u64(), f["downloads_completed"].as_u64()), (Some(1), Some(1)));
    assert_eq!((f["referenced"].as_u64(), f["missing"].as_u64()), (Some(1), Some(0)));
}

#[test]
fn files_of_another_user_are_unreachable() {
    let pair = Pair::new();
    let (hash, content) = pair.phone_adds_video(100_000, 2);
    pair.sync_phone();
    pair.file_sync("phone.db", &pair.phone, &pair.server.url, &[]).unwrap();
    pair.env.add_user("bob");
    let bob = pair.env.token("bob", "pc");
    let http = pair.server.http();
    let url = format!("{}/v1/files/{hash}", pair.server.url);
    let get = http.get(&url).bearer_auth(&bob).send().unwrap();
    assert_eq!(get.status(), 404);
    assert!(get.text().unwrap().contains("no file"), "names what is missing");
    assert_eq!(http.head(&url).bearer_auth(&bob).send().unwrap().status(), 404);
    assert_eq!(pair.server_holds(&bob, &hash)["state"], "unreferenced");
    // Not even a new upload under that name gets in.
    let put =
        http.put(&url).bearer_auth(&bob).header("upload-length", content.len()).body(content.clone()).send().unwrap();
    assert_eq!(put.status(), 403);
    // Alice's own other device reads it; without a token nobody does.
    assert_eq!(http.get(&url).bearer_auth(&pair.laptop).send().unwrap().status(), 200);
    assert_eq!(http.get(&url).send().unwrap().status(), 401);
    let bad =
        http.get(format!("{}/v1/files/..%2F..%2Fetc%2Fpasswd", pair.server.url)).bearer_auth(&bob).send().unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().unwrap().contains("64 lowercase hex"));
}

#[test]
fn an_interrupted_upload_and_download_resume_where_they_broke() {
    let pair = Pair::new();
    let size = 3_000_000;
    let (hash, content) = pair.phone_adds_video(size, 3);
    pair.sync_phone();
    let proxy = Proxy::start(&pair.server.url);
    proxy.set(Fault::CutRequest(1_200_000));
    let err = pair.file_sync("phone.db", &pair.phone, &proxy.url, &["--attempts", "1"]).unwrap_err();
    assert!(err.contains("failed"), "{err}");
    let held = pair.server_holds(&pair.phone, &hash);
    assert_eq!(held["state"], "partial", "{held}");
    let offset = held["offset"].as_u64().unwrap();
    assert!(offset > 1_000_000 && offset < 1_200_000, "the server kept what arrived: {offset}");

    proxy.set(Fault::Pass);
    let before = proxy.up_bytes.load(std::sync::atomic::Ordering::SeqCst);
    let up = pair.file_sync("phone.db", &pair.phone, &proxy.url, &[]).unwrap();
    assert_eq!(up["uploaded"], 1, "{up}");
    let sent = proxy.up_bytes.load(std::sync::atomic::Ordering::SeqCst) - before;
    let rest = size as u64 - offset;
    assert!(
        sent >= rest && sent < rest + 5_000,
        "sent {sent} bytes to finish, the rest is {rest}: it did not start over"
    );
    assert_eq!(up["bytes"].as_u64(), Some(rest));

    pair.sync_laptop();
    proxy.set(Fault::CutAnswer { request: "GET /v1/files/", after: 1_500_000 });
    pair.file_sync("laptop.db", &pair.laptop, &proxy.url, &["--attempts", "1"]).unwrap_err();
    assert!(pair.laptop_file(&hash).is_none(), "a partial download is not a file");
    let before = proxy.down_bytes.load(std::sync::atomic::Ordering::SeqCst);
    let down = pair.file_sync("laptop.db", &pair.laptop, &proxy.url, &[]).unwrap();
    assert_eq!(down["downloaded"], 1, "{down}");
    let got = proxy.down_bytes.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(got < size as u64 - 1_400_000, "the download resumed: {got} bytes the second time");
    assert!(pair.laptop_file(&hash) == Some(content), "the resumed download is the file");
}

#[test]
fn a_corrupted_transfer_is_refused_and_tried_again() {
    let pair = Pair::new();
    let (hash, content) = pair.phone_adds_video(1_000_000, 4);
    pair.sync_phone();
    let proxy = Proxy::start(&pair.server.url);
    proxy.set(Fault::CorruptRequest { at: 400_000 });
    let up = pair.file_sync("phone.db", &pair.phone, &proxy.url, &[]).unwrap();
    assert_eq!(up["uploaded"], 1, "{up}");
    let log = pair.file_log("phone.db");
    let outcomes: Vec<&str> = log.iter().rev().map(|t| t["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["mismatch", "ok"], "{log:?}");
    assert!(log[1]["error"].as_str().unwrap().contains("hash to"), "{log:?}");
    assert_eq!(pair.admin_status()["files"]["uploads_refused"], 1);

    pair.sync_laptop();
    proxy.set(Fault::CorruptAnswer { request: "GET /v1/files/", at: 600_000 });
    let down = pair.file_sync("laptop.db", &pair.laptop, &proxy.url, &[]).unwrap();
    assert_eq!(down["downloaded"], 1, "{down}");
    let log = pair.file_log("laptop.db");
    let outcomes: Vec<&str> = log.iter().rev().map(|t| t["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["mismatch", "ok"], "{log:?}");
    assert!(pair.laptop_file(&hash) == Some(content), "only the verified bytes were kept");
}

#[test]
fn the_rate_and_concurrency_limits_hold() {
    let pair = Pair::new();
    for seed in 10..16 {
        pair.phone_adds_video(300_000, seed);
    }
    pair.sync_phone();
    let started = Instant::now();
    let up = pair
        .file_sync("phone.db", &pair.phone, &pair.server.url, &["--files-rate", "500", "--files-concurrency", "2"])
        .unwrap();
    let took = started.elapsed();
    assert_eq!(up["uploaded"], 6, "{up}");
    // 1.8 MB at 500 KB/s, less the bucket's first 64 KiB.
    let floor = Duration::from_secs_f64((1_800_000.0 - 65_536.0) / 512_000.0);
    assert!(took >= floor, "took {took:?}, the limit allows no less than {floor:?}");
    assert!(took < floor * 2, "took {took:?}: far slower than the limit");
    let peak = pair.admin_status()["files"]["peak_in_flight"].as_u64().unwrap();
    assert_eq!(peak, 2, "two files at once, never more");
}

#[test]
fn an_upload_over_the_limit_gets_413_naming_the_limit() {
    let env = Env::new();
    let config = std::fs::read_to_string(env.path("ferry.toml")).unwrap();
    std::fs::write(env.path("ferry.toml"), format!("{config}\n[files]\nmax_upload_bytes = 1000000\n")).unwrap();
    let pair = Pair::in_env(env);
    let (hash, _) = pair.phone_adds_video(1_500_000, 5);
    pair.sync_phone();
    let err = pair.file_sync("phone.db", &pair.phone, &pair.server.url, &["--attempts", "1"]).unwrap_err();
    assert!(err.contains("1 files failed"), "{err}");
    let log = pair.file_log("phone.db");
    let error = log[0]["error"].as_str().unwrap();
    assert!(error.contains("413") && error.contains("1000000") && error.contains("max_upload_bytes"), "{error}");
    assert_eq!(log[0]["bytes"], 0, "the device knew the limit and sent nothing");
    assert_eq!(pair.server_holds(&pair.phone, &hash)["state"], "missing");
    // The server's own answer, to a client that sends anyway.
    let put = pair
        .server
        .http()
        .put(format!("{}/v1/files/{hash}", pair.server.url))
        .bearer_auth(&pair.phone)
        .header("upload-length", 1_500_000)
        .body(vec![0u8; 1_500_000])
        .send()
        .unwrap();
    assert_eq!(put.status(), 413);
    let body = put.text().unwrap();
    assert!(body.contains("limit of 1000000 bytes") && body.contains("max_upload_bytes"), "{body}");
    assert_eq!(pair.server_holds(&pair.phone, &hash)["state"], "missing", "nothing kept");
}

#[test]
fn the_watch_moves_files_and_obeys_pause_resume_and_trigger() {
    let pair = Pair::new();
    let laptop = pair.env.path("laptop.db").display().to_string();
    // Long intervals: only the stream's news, pause/resume and trigger make it look.
    let watch = |extra: &[&str]| {
        std::process::Command::new(FERRY)
            .args(["sync", "--watch", "--db", &laptop, "--server", &pair.server.url, "--token", &pair.laptop])
            .args(["--interval", "1h", "--files-interval", "1h", "--json"])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    // The watch's JSON lines, as they come.
    let events = |child: &mut std::process::Child| {
        use std::io::BufRead;
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        rx
    };
    let wait_for = |what: &str, within: Duration, f: &dyn Fn() -> bool| {
        let deadline = Instant::now() + within;
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // Reads the watch's lines until one matches.
    let next =
        |events: &std::sync::mpsc::Receiver<serde_json::Value>, what: &str, f: &dyn Fn(&serde_json::Value) -> bool| {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(v) if f(&v) => return v,
                    Ok(_) => {}
                    Err(_) => panic!("the watch never reported {what}"),
                }
            }
        };
    let waiting_for = |hash: &str| {
        let hash = hash.to_owned();
        move |v: &serde_json::Value| {
            v["event"] == "file_waiting" && v["hash"] == hash.as_str() && v["direction"] == "down"
        }
    };
    let status = || -> serde_json::Value {
        serde_json::from_str(&pair.env.ok_all(&["status", "--db", &laptop, "--json"])).unwrap()
    };
    let mut streaming = watch(&[]);
    let streamed = events(&mut streaming);
    next(&streamed, "the stream up", &|v| v["event"] == "stream" && v["up"] == true);

    // The row arrives by the stream, then its file: the stream's news of the upload wakes the
    // laptop's file worker.
    let (first, content) = pair.phone_adds_video(500_000, 20);
    pair.sync_phone();
    next(&streamed, "the first file waiting for its upload", &waiting_for(&first));
    assert!(pair.laptop_file(&first).is_none(), "not uploaded yet");
    pair.file_sync("phone.db", &pair.phone, &pair.server.url, &[]).unwrap();
    wait_for("the first file, told by the stream", Duration::from_secs(5), &|| pair.laptop_file(&first).is_some());
    assert!(pair.laptop_file(&first) == Some(content), "the laptop's copy differs");

    pair.env.ok(&["file", "pause", "--db", &laptop]);
    let (second, _) = pair.phone_adds_video(500_000, 21);
    pair.sync_phone();
    pair.file_sync("phone.db", &pair.phone, &pair.server.url, &[]).unwrap();
    wait_for("the row of the second file", Duration::from_secs(10), &|| status()["files"]["downloads"] == 1);
    // The worker hears of the upload (the stream's news) and holds, as it is paused.
    next(&streamed, "the paused worker hearing of the second file's upload", &|v| {
        v["event"] == "file_held" && v["why"] == "the stream's news"
    });
    assert!(pair.laptop_file(&second).is_none(), "paused: nothing moves");
    assert_eq!(status()["files"]["paused"], true);
    pair.env.ok(&["file", "resume", "--db", &laptop]);
    wait_for("the second file after resume", Duration::from_secs(5), &|| pair.laptop_file(&second).is_some());
    let _ = streaming.kill();
    let _ = streaming.wait();

    // Without the stream, nothing makes the worker look again for an hour but a trigger.
    let mut polling = watch(&["--no-stream"]);
    let polled = events(&mut polling);
    next(&polled, "the first sync", &|v| v["event"] == "completed");
    let (third, _) = pair.phone_adds_video(200_000, 22);
    pair.sync_phone();
    // Another process brings the row: the watch syncs after that write, and its worker looks
    // (the file is not on the server yet) after the sync's own writes.
    pair.sync_laptop();
    next(&polled, "a sync after the other process's write", &|v| v["event"] == "completed");
    next(&polled, "the third file waiting for its upload", &waiting_for(&third));
    pair.file_sync("phone.db", &pair.phone, &pair.server.url, &[]).unwrap();
    // Nothing tells the worker of the upload: over six of its looks (every 250 ms), no download.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(pair.laptop_file(&third).is_none(), "no look without a reason");
    pair.env.ok(&["file", "trigger", "--db", &laptop]);
    wait_for("the third file after trigger", Duration::from_secs(5), &|| pair.laptop_file(&third).is_some());
    let _ = polling.kill();
    let _ = polling.wait();
}

#[test]
fn files_travel_through_an_s3_compatible_store() {
    // `cargo xtask test` starts an S3-compatible server (moto) and names it here.
    let endpoint = std::env::var("FERRY_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
        panic!("FERRY_TEST_S3_ENDPOINT is not set: run the tests with `cargo xtask test`, which starts an S3-compatible server")
    });
    let bucket = format!("ferry-e2e-{}", std::process::id());
    let made = reqwest::blocking::Client::new().put(format!("{endpoint}/{bucket}")).send().unwrap();
    assert!(made.status().is_success(), "cannot create bucket {bucket}: {}", made.status());
    let env = Env::new();
    let config = std::fs::read_to_string(env.path("ferry.toml")).unwrap();
    let files = format!(
        "[files]\nstore = \"s3\"\ns3_bucket = \"{bucket}\"\ns3_endpoint = \"{endpoint}\"\ns3_allow_http = true\ns3_prefix = \"files/\"\ns3_access_key_id = \"test\"\ns3_secret_access_key = \"test\"\n"
    );
    std::fs::write(env.path("ferry.toml"), format!("{config}\n{files}")).unwrap();
    let pair = Pair::in_env(env);
    let (hash, content) = pair.phone_adds_video(3_000_000, 30);
    pair.sync_phone();
    let up = pair.file_sync("phone.db", &pair.phone, &pair.server.url, &[]).unwrap();
    assert_eq!(up["uploaded"], 1, "{up}");
    pair.sync_laptop();
    let down = pair.file_sync("laptop.db", &pair.laptop, &pair.server.url, &[]).unwrap();
    assert_eq!(down["downloaded"], 1, "{down}");
    assert!(pair.laptop_file(&hash) == Some(content), "the laptop's copy differs");
    let status = pair.admin_status();
    assert!(status["files"]["store"].as_str().unwrap().contains(&bucket), "{status}");
    assert_eq!(status["files"]["stored"], 1, "{status}");
    // The object is in the bucket, under the prefix.
    let key = format!("{endpoint}/{bucket}/files/{}/{hash}", &hash[..2]);
    let listed = reqwest::blocking::Client::new()
        .get(format!("{endpoint}/{bucket}?list-type=2"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(listed.contains(&hash), "{key} not listed: {listed}");
}
