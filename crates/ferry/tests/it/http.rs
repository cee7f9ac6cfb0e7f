//! HTTP at the edge, as raw bytes on a socket: every error answer is JSON with a code and a
//! message (hyper's own ones included), carries a request id, and a body announced over the
//! limit is refused before it is sent.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};

use crate::*;

/// Sends `request` (raw bytes) and reads the answer until the server closes the connection
/// or has sent a whole JSON body; returns the head (lowercased) and the body.
fn raw(server: &Server, request: &[u8]) -> (String, Vec<u8>) {
    let addr = server.url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // A server that stops reading may reset the connection while the request is still being
    // written; its answer is read all the same.
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                panic!("no whole answer within 10 s; got {:?}", String::from_utf8_lossy(&out))
            }
            Err(_) => break,
        }
        if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..end]).to_lowercase();
            let length = head.lines().find_map(|l| l.strip_prefix("content-length: ")).and_then(|v| v.parse().ok());
            if length.is_some_and(|n: usize| out.len() >= end + 4 + n) {
                break;
            }
        }
    }
    let end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("no head: {out:?}"));
    (String::from_utf8_lossy(&out[..end]).to_lowercase(), out[end + 4..].to_vec())
}

/// Like [`raw`], but the whole request must be written and the answer read without a
/// connection reset.
fn raw_strict(server: &Server, request: &[u8]) -> (String, Vec<u8>) {
    let addr = server.url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap_or_else(|e| panic!("writing the request: {e}"));
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("reading the answer: {e}; got {:?}", String::from_utf8_lossy(&out)));
    let end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("no head: {out:?}"));
    (String::from_utf8_lossy(&out[..end]).to_lowercase(), out[end + 4..].to_vec())
}

/// The answer's status, asserting its body is a JSON error with a code and a message.
fn json_error(head: &str, body: &[u8]) -> (u16, Value) {
    let status: u16 = head[9..12].parse().unwrap();
    assert!(head.contains("content-type: application/json"), "{head}");
    let v: Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)));
    assert!(v["error"]["code"].is_string() && v["error"]["message"].is_string(), "{v}");
    (status, v)
}

#[test]
fn a_body_announced_over_the_limit_is_refused_before_it_is_sent() {
    let env = Env::new();
    env.add_user("alice");
    let token = env.token("alice", "phone");
    let server = env.serve_with(&["--max-body-bytes", "65536"]);
    for expect in ["", "expect: 100-continue\r\n"] {
        let req = format!(
            "POST /v1/push HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: 10000000\r\n{expect}\r\n"
        );
        // No body is sent: the answer comes from the head alone.
        let (head, body) = raw(&server, req.as_bytes());
        let (status, v) = json_error(&head, &body);
        assert_eq!(status, 413, "{head}");
        assert!(v["error"]["message"].as_str().unwrap().contains("limit of 65536 bytes"), "{v}");
        assert!(!head.contains("100 continue"), "{head}");
        // The body stays unread, so the connection cannot carry another request: the answer
        // says so, and a client does not send its next request into a closing connection.
        assert!(head.to_ascii_lowercase().contains("connection: close"), "{head}");
    }
    // Every route with a body, and a compressed body (whose Content-Length is what arrives).
    let routes = [
        "PUT /v1/rows/groups/00000000-0000-4000-8000-000000000000",
        "POST /v1/files/check",
        "POST /v1/admin/conflicts/1/resolve",
        "POST /v1/push",
    ];
    for (route, extra) in routes.iter().flat_map(|r| [(r, ""), (r, "content-encoding: gzip\r\n")]) {
        let req = format!(
            "{route} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: 10000000\r\nexpect: 100-continue\r\n{extra}\r\n"
        );
        let (head, body) = raw(&server, req.as_bytes());
        assert_eq!(json_error(&head, &body).0, 413, "{route} {extra}: {head}");
    }
    // A file upload has its own limit (1 GiB by default), and is refused from its head too.
    let req = format!(
        "PUT /v1/files/{} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/octet-stream\r\nupload-length: 2000000000\r\ncontent-length: 2000000000\r\nexpect: 100-continue\r\n\r\n",
        "ab".repeat(32)
    );
    let (head, body) = raw(&server, req.as_bytes());
    let (status, v) = json_error(&head, &body);
    assert_eq!(status, 413, "{head}");
    assert!(v["error"]["message"].as_str().unwrap().contains("max_upload_bytes"), "{v}");
    // A client that sends its body anyway still reads the answer: the server reads and
    // discards what follows before it closes, so no reset overtakes the 413.
    for _ in 0..20 {
        let mut req = format!(
            "POST /v1/push HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: 1000000\r\n\r\n"
        )
        .into_bytes();
        req.extend(std::iter::repeat_n(b'x', 1_000_000));
        let (head, body) = raw(&server, &req);
        assert_eq!(json_error(&head, &body).0, 413, "{head}");
    }
    // A chunked body over the limit is refused as it arrives.
    let mut req = format!(
        "POST /v1/push HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..3 {
        req.extend_from_slice(format!("{:x}\r\n{}\r\n", 40_000, "x".repeat(40_000)).as_bytes());
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let (head, body) = raw(&server, &req);
    assert_eq!(json_error(&head, &body).0, 413, "{head}");
}

#[test]
fn an_upload_announced_over_the_upload_limit_is_refused_before_it_is_sent() {
    let env = Env::new();
    let config = std::fs::read_to_string(env.path("ferry.toml")).unwrap();
    std::fs::write(env.path("ferry.toml"), format!("{config}\n[files]\nmax_upload_bytes = 1000000\n")).unwrap();
    env.add_user("alice");
    let token = env.token("alice", "phone");
    let server = env.serve();
    let hash = "ab".repeat(32);
    for expect in ["", "expect: 100-continue\r\n"] {
        let req = format!(
            "PUT /v1/files/{hash} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\nupload-length: 500\r\ncontent-type: application/octet-stream\r\ncontent-length: 5000000\r\n{expect}\r\n"
        );
        let (head, body) = raw(&server, req.as_bytes());
        let (status, v) = json_error(&head, &body);
        assert_eq!(status, 413, "{head}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("limit of 1000000 bytes") && message.contains("max_upload_bytes"), "{v}");
        assert!(!head.contains("100 continue"), "{head}");
        // The body stays unread, so the connection cannot carry another request: the answer
        // says so, and a client does not send its next request into a closing connection.
        assert!(head.to_ascii_lowercase().contains("connection: close"), "{head}");
    }
}

/// Regression: a client still sending a body the server had refused early (413 on a 1.5 MB
/// upload) sometimes saw a connection reset instead of the answer, the server having closed
/// the socket with the body unread. The server now lingers, reading and discarding. (6 MB:
/// more than the sockets' buffers hold, so that without lingering the write fails at once.)
#[test]
fn a_client_sending_a_refused_body_anyway_reads_the_answer() {
    let env = Env::new();
    env.add_user("alice");
    let token = env.token("alice", "phone");
    let server = env.serve_with(&["--max-body-bytes", "65536"]);
    let body = vec![b'x'; 6_000_000];
    for _ in 0..10 {
        let mut req = format!(
            "POST /v1/push HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        let (head, body) = raw_strict(&server, &req);
        assert_eq!(json_error(&head, &body).0, 413, "{head}");
    }
}

#[test]
fn every_error_answer_is_json_with_a_request_id_even_hypers_own() {
    let env = Env::new();
    env.add_user("alice");
    let token = env.token("alice", "phone");
    let server = env.serve();
    let cases: Vec<(Vec<u8>, u16)> = vec![
        // A request line hyper cannot parse.
        (b"NOT AN HTTP REQUEST, NOT AT ALL\r\n\r\n".to_vec(), 400),
        (b"GET /v1/me HTTP/1.1\r\nbad header line\r\n\r\n".to_vec(), 400),
        // Too many headers for hyper.
        (format!("GET /v1/me HTTP/1.1\r\nhost: x\r\n{}\r\n", (0..200).map(|i| format!("x-h{i}: v\r\n")).collect::<String>()).into_bytes(), 431),
        // A URI over the server's limit.
        (format!("GET /v1/pull?cursor={} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", "c".repeat(20_000)).into_bytes(), 414),
        // A URI over hyper's own limit (64 KiB), and a header over its buffer (400 KiB).
        (format!("GET /v1/pull?cursor={} HTTP/1.1\r\nhost: x\r\n\r\n", "c".repeat(70_000)).into_bytes(), 414),
        (format!("GET /v1/me HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n", "h".repeat(500_000)).into_bytes(), 431),
        // An encoding the server does not decompress.
        (format!("POST /v1/push HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-encoding: br\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}").into_bytes(), 415),
        // Rejections axum makes: no content type, a body that is not JSON, an unknown route.
        (format!("PUT /v1/rows/groups/00000000-0000-4000-8000-000000000000 HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}").into_bytes(), 400),
        (format!("POST /v1/files/check HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc").into_bytes(), 400),
        (b"GET /nowhere HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec(), 404),
        (b"DELETE /v1/push HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec(), 405),
    ];
    for (req, want) in cases {
        let (head, body) = raw(&server, &req);
        let (status, v) = json_error(&head, &body);
        let shown = String::from_utf8_lossy(&req[..req.len().min(60)]).into_owned();
        assert!(status == want || (want == 400 && status == 415), "{shown}: {head}\n{v}");
        assert!(head.contains("\r\nx-request-id: "), "{shown}: {head}");
    }
    // A long value echoed back is cut.
    let (head, body) = raw(
        &server,
        format!(
            "GET /v1/pull?cursor={} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n",
            "c".repeat(15_000)
        )
        .as_bytes(),
    );
    let (status, _) = json_error(&head, &body);
    assert_eq!(status, 400, "{head}");
    assert!(body.len() < 4000, "{} bytes", body.len());
    assert!(head.contains("x-request-id: "), "{head}");
    // An unknown parameter's name (values in bodies: echoed_input_is_cut_however_long_the_field).
    let (head, body) = raw(
        &server,
        format!(
            "GET /v1/changes?{}=1 HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n",
            "p".repeat(15_000)
        )
        .as_bytes(),
    );
    assert_eq!(json_error(&head, &body).0, 400, "{head}");
    assert!(body.len() < 4000, "{} bytes", body.len());
}

#[test]
fn echoed_input_is_cut_however_long_the_field() {
    let env = Env::new();
    env.add_user("alice");
    let token = env.token("alice", "phone");
    let server = env.serve();
    let long = "x".repeat(1_000_000);
    let clock = format!("{:012x}0000{}", 1_800_000_000_000u64, "ab".repeat(8));
    let row = |table: &str, key: &str, column: &str| {
        json!({"table": table, "key": key, "exists": true, "exists_at": clock, "clock": clock,
               "values": {column: "v"}})
    };
    let group = "00000000-0000-4000-8000-000000000000";
    let pushes = [
        ("batch id", json!({"batch_id": long, "rows": [row("groups", group, "name")]})),
        ("table", json!({"batch_id": "b1", "rows": [row(&long, group, "name")]})),
        ("key", json!({"batch_id": "b2", "rows": [row("groups", &long, "name")]})),
        ("column", json!({"batch_id": "b3", "rows": [row("groups", group, &long)]})),
        (
            "clock",
            json!({"batch_id": "b4", "rows": [{"table": "groups", "key": group, "exists": true,
            "exists_at": long, "clock": clock, "values": {}}]}),
        ),
        ("cursor", json!({"batch_id": "b5", "cursor": long, "rows": []})),
    ];
    for (what, body) in pushes {
        let resp = server
            .http()
            .post(format!("{}/v1/push", server.url))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().unwrap();
        assert!((400..500).contains(&status), "a 1 MB {what}: {status} {}", &text[..text.len().min(300)]);
        assert!(text.len() < 4000, "a 1 MB {what} came back in {} bytes", text.len());
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    // The REST API's body, and a body that is not JSON at all.
    for body in [json!({"values": {long.as_str(): 1}}).to_string(), long.clone()] {
        let resp = server
            .http()
            .put(format!("{}/v1/rows/groups/{group}", server.url))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().unwrap();
        assert!((400..500).contains(&status) && text.len() < 4000, "{status}: {} bytes", text.len());
    }
}

/// `ferry serve` with its log written to `server.log` in the test's directory.
fn serve_logged(env: &Env) -> (Server, std::path::PathBuf) {
    use std::io::BufRead;
    let log = env.path("server.log");
    let mut child = std::process::Command::new(FERRY)
        .args(["serve", "-c", &env.config(), "--listen", "127.0.0.1:0"])
        .current_dir(env.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected: {line}")).to_owned();
    (Server { child, url }, log)
}

#[test]
fn a_500_shows_a_request_id_and_the_log_holds_the_stores_words() {
    for env in [Env::new(), Env::postgres()] {
        env.add_user("alice");
        let admin = env.ok(&["token", "create", "--user", "alice", "--device", "ops", "--admin", "-c", &env.config()]);
        let (server, log) = serve_logged(&env);
        // Broken behind the server's back: its conflict log is gone.
        if env.pg_db.is_some() {
            env.psql("DROP TABLE _ferry_conflicts");
        } else {
            env.db("ferry-data/ferry.db").execute_batch("DROP TABLE _ferry_conflicts").unwrap();
        }
        let resp = server.http().get(format!("{}/v1/admin/conflicts", server.url)).bearer_auth(&admin).send().unwrap();
        assert_eq!(resp.status().as_u16(), 500);
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
        let body: Value = resp.json().unwrap();
        assert_eq!(body["error"]["code"], "internal", "{body}");
        assert_eq!(body["error"]["message"], format!("internal error; the server logged it as request {id}"));
        // The log line with that id names what the store said.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&log).unwrap();
            if let Some(line) = text.lines().find(|l| l.contains(&id)) {
                assert!(line.contains("_ferry_conflicts"), "{line}");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no log line with request id {id}:\n{text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Reads frames until a close frame; returns its code and reason (pings and messages skipped).
fn close_frame(socket: &mut TcpStream) -> (u16, String) {
    let mut read = |n: usize| {
        let mut buf = vec![0; n];
        socket.read_exact(&mut buf).unwrap_or_else(|e| panic!("no close frame in time: {e}"));
        buf
    };
    loop {
        let start = read(2);
        let len = match start[1] & 0x7f {
            126 => read(2).iter().fold(0, |n, b| n << 8 | usize::from(*b)),
            127 => read(8).iter().fold(0, |n, b| n << 8 | usize::from(*b)),
            n => usize::from(n),
        };
        let payload = read(len);
        if start[0] & 0x0f == 0x8 {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            return (code, String::from_utf8_lossy(&payload[2..]).into_owned());
        }
    }
}

#[test]
fn revoking_a_device_closes_its_streams_and_its_token_stops_working() {
    for env in [Env::new(), Env::postgres()] {
        let pair = Pair::in_env(env);
        // Revoked from the command line, another process than the server.
        let (head, mut socket) = crate::openapi::open_stream(&pair.server.url, &pair.phone);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        // Another process's revocation is seen within REAUTH_INTERVAL (2 s); 10 s for a loaded
        // machine.
        socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let out = pair.env.ok_all(&[
            "token",
            "revoke",
            "--user",
            "alice",
            "--device",
            "phone",
            "--json",
            "-c",
            &pair.env.config(),
        ]);
        let revoked: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(revoked["revoked"].as_array().unwrap().len(), 1, "{out}");
        let (code, reason) = close_frame(&mut socket);
        assert_eq!(code, 4401, "{reason}");
        assert!(reason.contains("revoked"), "{reason}");
        let resp = pair
            .server
            .http()
            .post(format!("{}/v1/push", pair.server.url))
            .bearer_auth(&pair.phone)
            .json(&serde_json::json!({"batch_id": "after-revoke", "rows": []}))
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        // Again: nothing left to revoke, said by name.
        let out = pair.env.run(&["token", "revoke", "--user", "alice", "--device", "phone", "-c", &pair.env.config()]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("no live device 'phone' of user 'alice'"));
        // Revoked by an admin through the API, by id.
        let admin = pair.env.ok(&[
            "token",
            "create",
            "--user",
            "alice",
            "--device",
            "ops",
            "--admin",
            "-c",
            &pair.env.config(),
        ]);
        let me: Value = pair
            .server
            .http()
            .get(format!("{}/v1/me", pair.server.url))
            .bearer_auth(&pair.laptop)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let id = me["device_id"].as_str().unwrap_or_else(|| panic!("{me}"));
        let (_, mut socket) = crate::openapi::open_stream(&pair.server.url, &pair.laptop);
        // Revoked through this process: the stream is told at once, not at the next check.
        socket.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
        let resp = pair
            .server
            .http()
            .post(format!("{}/v1/admin/devices/{id}/revoke", pair.server.url))
            .bearer_auth(&admin)
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(close_frame(&mut socket).0, 4401);
        let resp =
            pair.server.http().get(format!("{}/v1/me", pair.server.url)).bearer_auth(&pair.laptop).send().unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        // A device token cannot revoke.
        let resp = pair
            .server
            .http()
            .post(format!("{}/v1/admin/devices/{id}/revoke", pair.server.url))
            .bearer_auth(&pair.phone)
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401);
    }
}
