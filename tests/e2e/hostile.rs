//! Hostile clients against a real `tidepool serve` over loopback TCP (issue 10): a thousand
//! connections that send half a request and then nothing, a chunked body that would go on for
//! gigabytes, and guests that never stop, each while an ordinary client is served.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use alloy_signer_local::PrivateKeySigner;
use tidepool_provider::protocol::api::ServiceLimits;
use tidepool_provider::protocol::signing::{Envelope, unix_now};
use tidepool_runtime::Outcome;

use crate::daemon::{Daemon, publish, request};
use crate::provider_flow::{initialize_and_exec, wait_for_end};
use crate::util::dataset;

fn host(d: &Daemon) -> String {
    d.url.strip_prefix("http://").unwrap().to_string()
}

/// Whether the server closed `socket` (end of stream or reset), waiting up to the socket's
/// read timeout.
fn closed(socket: &mut TcpStream) -> bool {
    let mut byte = [0u8; 512];
    loop {
        match socket.read(&mut byte) {
            Ok(0) => return true,
            // An answer (408, say) before the close: read on.
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// A thousand connections that send half a request line and then nothing are all closed (by
/// the header-read timeout, or at accept beyond the connection cap), and meanwhile an ordinary
/// client gets its answers.
#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_slow_connections_are_closed_while_a_normal_client_is_served() {
    let d = Daemon::start(&["--header-read-timeout", "2s", "--max-connections", "600"]);
    let operator = d.operator().await;
    let host = host(&d);
    let opening = tokio::task::spawn_blocking(move || {
        (0..1000)
            .map(|_| {
                let mut s = TcpStream::connect(&host).expect("connecting");
                let _ = s.write_all(b"GET /api/v1/health HT");
                s
            })
            .collect::<Vec<_>>()
    });
    // Served meanwhile: the held connections take no request slot. The client asks without
    // pause, so that its keep-alive connection (opened before the cap filled) is never idle
    // for the header-read timeout, after which the server would close it and a new one would
    // meet the full cap.
    let ask = || async { operator.balance(operator.address()).await.unwrap_or_else(|e| panic!("{e}\n{}", d.log())) };
    while !opening.is_finished() {
        ask().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sockets = opening.await.unwrap();
    for _ in 0..20 {
        ask().await;
    }
    let open = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut open = sockets;
        while !open.is_empty() && Instant::now() < deadline {
            open.retain_mut(|s| {
                s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
                !closed(s)
            });
        }
        open.len()
    })
    .await
    .unwrap();
    assert_eq!(open, 0, "slow connections the server never closed");
    operator.balance(operator.address()).await.unwrap();
}

/// A chunked body that would go on for gigabytes is answered 413 once it passes the JSON
/// limit (1 MiB): the server reads a bounded prefix, never the whole (the limit, then at most
/// 256 MiB more that it reads and drops so that the client gets its answer, not a reset).
#[tokio::test(flavor = "multi_thread")]
async fn an_endless_chunked_body_is_refused_at_the_limit() {
    let d = Daemon::start(&[]);
    let key = PrivateKeySigner::random();
    let operator = d.operator().await;
    let path = "/api/v1/uploads";
    let envelope = Envelope::sign(&key, operator.domain(), "POST", path, b"{}", unix_now() * 1000, unix_now() + 60);
    let host = host(&d);
    let (answer, sent) = tokio::task::spawn_blocking(move || {
        let mut socket = TcpStream::connect(&host).unwrap();
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        );
        for (name, value) in envelope.headers() {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        socket.write_all(head.as_bytes()).unwrap();
        let mut reader = socket.try_clone().unwrap();
        let answer = std::thread::spawn(move || {
            let mut answer = Vec::new();
            let _ = reader.read_to_end(&mut answer);
            String::from_utf8_lossy(&answer).into_owned()
        });
        // Up to 4 GiB, in 64 KiB chunks, until the server stops taking them.
        let chunk = [b' '; 64 << 10];
        let mut sent = 0u64;
        while sent < 4 << 30 {
            let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
            if socket.write_all(&framed).is_err() {
                break;
            }
            sent += chunk.len() as u64;
            if answer.is_finished() {
                break;
            }
        }
        (answer.join().unwrap(), sent)
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"too_large\""), "{answer}");
    assert!(sent < (1 << 20) + (256 << 20) + (64 << 20), "the server took {sent} bytes before closing");
    // And keeps serving.
    operator.balance(operator.address()).await.unwrap();
}

/// A refusal sent before the body is read (here a 401 to an unsigned upload) says
/// `Connection: close`: hyper closes that connection after the answer, and a pooling client
/// told nothing would send its next request on it and get a closed connection instead of an
/// answer.
#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_before_the_body_is_read_loses_no_next_request() {
    let d = Daemon::start(&[]);
    let client = reqwest::Client::new();
    let body = vec![b' '; 256 << 10];
    for i in 0..30 {
        let refused = client.post(format!("{}/api/v1/uploads", d.url)).body(body.clone()).send().await.unwrap();
        assert_eq!(refused.status().as_u16(), 401);
        let connection = refused.headers().get("connection").map(|v| v.to_str().unwrap().to_string());
        assert_eq!(connection.as_deref(), Some("close"), "round {i}");
        let next = client.get(format!("{}/api/v1/health", d.url)).send().await;
        assert!(next.is_ok_and(|r| r.status().is_success()), "round {i}: the next request was lost");
    }
    // A request whose body was read keeps its connection.
    let operator = d.operator().await;
    let key = PrivateKeySigner::random();
    let envelope = Envelope::sign(&key, operator.domain(), "POST", "/api/v1/uploads", b"{}", 1, unix_now() + 60);
    let mut read = client.post(format!("{}/api/v1/uploads", d.url)).body("{}");
    for (name, value) in envelope.headers() {
        read = read.header(name, value);
    }
    let read = read.send().await.unwrap();
    assert_eq!(read.status().as_u16(), 201);
    assert!(read.headers().get("connection").is_none(), "{:?}", read.headers());
}

/// A provider that accepts the connection and then says nothing is an error for the client
/// after its timeout, not a wait without end.
#[tokio::test(flavor = "multi_thread")]
async fn a_silent_provider_is_an_error_not_a_hang() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let held = std::thread::spawn(move || listener.accept().map(|(socket, _)| socket));
    let started = Instant::now();
    let connecting = tidepool_provider::client::Client::connect_with_timeout(
        &url,
        PrivateKeySigner::random(),
        Duration::from_millis(300),
    );
    let result = tokio::time::timeout(Duration::from_secs(20), connecting).await;
    let err = result.expect("the client waited on a silent provider").map(|_| ()).expect_err("an answer from nobody");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert!(matches!(err, tidepool_provider::client::ClientError::Connect { .. }), "{err}");
    drop(held.join());
}

/// One peer's long polls hold its requests in progress, not every request slot: past its
/// bound it is answered 429 at once, while the health check still answers, and it is served
/// again once its polls end.
#[tokio::test(flavor = "multi_thread")]
async fn one_peers_long_polls_are_bounded_not_everyones_slots() {
    let d = Daemon::start(&["--max-requests-per-peer", "2"]);
    let client = reqwest::Client::new();
    let poll = format!("{}/api/v1/keeper/events?after=18446744073709551615&waitMs=3000", d.url);
    let polls: Vec<_> = (0..2).map(|_| tokio::spawn(client.get(&poll).send())).collect();
    // Both polls are in progress once a third request is refused.
    let started = Instant::now();
    let third = loop {
        let r = client.get(format!("{}/api/v1/provider", d.url)).send().await.unwrap();
        if r.status().as_u16() == 429 || started.elapsed() > Duration::from_secs(2) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(third.status().as_u16(), 429, "a third request while two polls wait");
    let body: serde_json::Value = third.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("2 requests in progress"), "{body}");
    let health = client.get(format!("{}/api/v1/health", d.url)).send().await.unwrap();
    assert!(health.status().is_success(), "the health check is never bounded");
    for p in polls {
        assert_eq!(p.await.unwrap().unwrap().status().as_u16(), 200);
    }
    let after = client.get(format!("{}/api/v1/provider", d.url)).send().await.unwrap();
    assert_eq!(after.status().as_u16(), 200, "served again once the polls ended");
}

/// Reads one HTTP/1.1 message (head, then a `Content-Length` body) from `from`; `None` at the
/// end of the stream.
fn read_message(from: &mut impl Read) -> Option<Vec<u8>> {
    let mut message = Vec::new();
    let mut byte = [0u8; 1];
    while !message.ends_with(b"\r\n\r\n") {
        if from.read(&mut byte).ok()? == 0 {
            return None;
        }
        message.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&message).to_ascii_lowercase();
    let length =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |n| n.trim().parse::<usize>().unwrap());
    let mut body = vec![0u8; length];
    from.read_exact(&mut body).ok()?;
    message.extend_from_slice(&body);
    Some(message)
}

/// A node that applies every request and answers faucet requests with a closed connection
/// (as a node killed between its commit and its answer): the client sends the same signed
/// request to the next node, which refuses it as a replay, so no request is applied twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_a_node_applied_but_never_answered_is_not_applied_again() {
    let d = Daemon::start(&[]);
    let upstream = host(&d);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = format!("http://{}", listener.local_addr().unwrap());
    let dropped = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = dropped.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let (mut client, upstream, dropped) = (client.unwrap(), upstream.clone(), counted.clone());
            std::thread::spawn(move || {
                let mut node = TcpStream::connect(&upstream).unwrap();
                while let Some(request) = read_message(&mut client) {
                    node.write_all(&request).unwrap();
                    let Some(answer) = read_message(&mut node) else { return };
                    if request.starts_with(b"POST /api/v1/keeper/faucet ") {
                        dropped.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        return; // applied, never answered
                    }
                    client.write_all(&answer).unwrap();
                }
            });
        }
    });
    let key = PrivateKeySigner::random();
    let c = tidepool_provider::client::Client::connect_many(&[&proxy, &d.url], key.clone()).await.unwrap();
    let calls = 6;
    for _ in 0..calls {
        // Through the proxy first or not, each call is applied once; one the proxy dropped
        // is refused at the other node as a replay.
        if let Err(e) = c.faucet().await {
            assert_eq!(e.status(), Some(409), "{e}");
        }
    }
    assert!(dropped.load(std::sync::atomic::Ordering::SeqCst) > 0, "no request went through the dropping node");
    let balance = d.operator().await.balance(key.address()).await.unwrap();
    assert_eq!(balance, crate::daemon::faucet_amount() * alloy_primitives::U256::from(calls), "applied once each");
}

/// Upload quotas hold per peer too: a stranger who signs each upload with a new key (keys
/// cost nothing) still meets its peer's hourly bytes.
#[tokio::test(flavor = "multi_thread")]
async fn new_keys_do_not_escape_the_peers_upload_quota() {
    let d = Daemon::start(&["--upload-quota-per-peer", "1000"]);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), vec![b'x'; 600]).unwrap();
    let first = d.consumer().await;
    let session = first.create_session().await.unwrap();
    first.upload_file(&session, "a", "x.txt", file.path()).await.unwrap();
    let second = d.consumer().await;
    let session = second.create_session().await.unwrap();
    match second.upload_file(&session, "a", "x.txt", file.path()).await {
        Err(tidepool_provider::client::ClientError::Api { status: 429, message, .. }) => {
            assert!(message.contains("for this peer"), "{message}")
        }
        other => panic!("expected a 429 for the peer, got {other:?}"),
    }
}

/// Guests that never stop (`loop {}`) hold every job slot; the API still answers every request
/// meanwhile, and the guests end at their wall-clock or fuel limit.
#[tokio::test(flavor = "multi_thread")]
async fn endless_guests_do_not_stop_the_api() {
    let d = Daemon::start(&["--max-concurrent-jobs", "2"]);
    let data = dataset(&[("x.txt", b"x")]);
    let mut spin = request("spinning service");
    // (The provider's fuel cap, 5·10^10, takes far longer than 6 s to burn.)
    spin.limits = ServiceLimits { timeout_ms: Some(6_000), ..ServiceLimits::default() };
    let did = publish(&d, &[("x", data.path())], spin).await;
    let consumer = d.consumer().await;
    let mut jobs = Vec::new();
    for _ in 0..2 {
        jobs.push(initialize_and_exec(&consumer, did, "misbehave", &["spin"], None).await.1);
    }
    let other = d.consumer().await;
    let mut answered = 0;
    while consumer.job(&jobs[0]).await.unwrap().status.code() <= 40 {
        other.balance(other.address()).await.unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
        other.ddo(did).await.unwrap();
        answered += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answered > 0);
    for job in &jobs {
        let view = wait_for_end(&consumer, job).await;
        assert_eq!(view.status.code(), 71, "{view:?}");
        // By its wall-clock limit or its fuel, whichever comes first on this machine.
        let ended = matches!(view.outcome, Some(Outcome::Timeout | Outcome::OutOfFuel))
            || view.error.as_deref().is_some_and(|e| e.contains("timeout"));
        assert!(ended, "ended by its wall-clock limit or its fuel: {view:?}");
    }
}
