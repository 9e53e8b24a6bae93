//! `--metrics ADDR` against the real binary: Prometheus text scraped with a real HTTP client
//! (ureq) during a call, whose counters move with the control requests and the voice
//! traffic; the responder's bounds (connection cap, head size, wrong paths and methods).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use kv_proto::{ControlRequest as Req, ErrorCode as E, PACKET_SIZE};
use kv_tests::{ServerProcess, UdpPeer};

/// One scrape: series (`name{labels}`) to value.
type Scrape = HashMap<String, f64>;

fn scrape(addr: SocketAddr) -> Scrape {
    let mut resp = ureq::get(format!("http://{addr}/metrics"))
        .call()
        .expect("GET /metrics");
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    let text = resp.body_mut().read_to_string().expect("body");
    assert!(
        text.ends_with("# EOF\n"),
        "an OpenMetrics exposition ends with # EOF"
    );
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("series and value");
            let v: f64 = value.parse().unwrap_or_else(|_| panic!("value of {l}"));
            (series.to_owned(), v)
        })
        .collect()
}

fn get(s: &Scrape, series: &str) -> f64 {
    s.get(series).copied().unwrap_or(0.0)
}

/// The sum of every series of metric `name` (over its labels).
fn total(s: &Scrape, name: &str) -> f64 {
    s.iter()
        .filter(|(k, _)| k.as_str() == name || k.starts_with(&format!("{name}{{")))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn counters_move_with_a_call() {
    let s = ServerProcess::start_with(&["--metrics", "127.0.0.1:0"]);
    let maddr = s
        .metrics_addr
        .expect("the server printed its metrics address");
    assert!(maddr.ip().is_loopback());
    let before = scrape(maddr);
    assert_eq!(get(&before, "kv_channels"), 0.0);
    assert!(
        get(&before, "kv_signatures_total") >= 1.0,
        "the session key is signed"
    );

    // A call: two bound members, one talking.
    let key = s.public_key();
    let ch = s.ok(&Req::Create { uid: s.admin_uid });
    let peers = s.joined_peers(ch, 2);
    for p in &peers {
        p.bind(&key);
    }
    for p in &peers {
        p.drain(Duration::from_millis(100));
    }
    let (a, b) = (&peers[0], &peers[1]);
    const VOICE: usize = 50;
    for i in 0..VOICE {
        let sent = a.voice(format!("frame {i}").as_bytes());
        assert_eq!(b.expect_packet(), sent.to_vec());
    }
    // Drops: wrong sizes from a member, voice from a uid that never joined.
    for len in [1, 100, PACKET_SIZE - 1] {
        a.send_raw(&vec![0u8; len]);
    }
    UdpPeer::new(a.server, 0x4242).voice(b"who?");
    // A refused control request.
    assert_eq!(
        s.err(&Req::Join {
            uid: a.uid,
            juid: a.uid,
            chid: 12345
        }),
        E::Param
    );
    std::thread::sleep(Duration::from_millis(200));

    let during = scrape(maddr);
    let moved = |name: &str| total(&during, name) - total(&before, name);
    assert_eq!(get(&during, "kv_channels"), 1.0);
    assert_eq!(get(&during, "kv_members"), 2.0);
    assert_eq!(get(&during, "kv_bound_members"), 2.0);
    assert!(moved("kv_relay_packets_received_total") >= (VOICE + 4) as f64);
    assert!(moved("kv_relay_received_bytes_total") >= (VOICE * PACKET_SIZE) as f64);
    assert!(moved("kv_relay_packets_sent_total") >= VOICE as f64);
    assert!(moved("kv_relay_sent_bytes_total") >= (VOICE * PACKET_SIZE) as f64);
    assert_eq!(get(&during, "kv_relay_dropped_total{reason=\"size\"}"), 3.0);
    assert!(get(&during, "kv_relay_dropped_total{reason=\"unknown_uid\"}") >= 1.0);
    assert!(moved("kv_relay_busy_seconds_total") > 0.0);
    let req = |cmd: &str, res: &str| {
        get(
            &during,
            &format!("kv_control_requests_total{{command=\"{cmd}\",result=\"{res}\"}}"),
        )
    };
    assert_eq!(req("create", "ok"), 1.0);
    assert_eq!(req("join", "ok"), 2.0);
    assert_eq!(req("join", "PARAM"), 1.0);
    assert!(req("register", "ok") >= 2.0);
    assert_eq!(
        get(
            &during,
            "kv_control_request_duration_seconds_count{command=\"join\"}"
        ),
        3.0
    );
    assert!(
        get(
            &during,
            "kv_control_request_duration_seconds_sum{command=\"join\"}"
        ) > 0.0
    );

    // One leaves: the gauges follow.
    s.ok(&Req::Leave {
        uid: b.uid,
        luid: b.uid,
        chid: ch,
    });
    let after = scrape(maddr);
    assert_eq!(get(&after, "kv_members"), 1.0);
    assert_eq!(get(&after, "kv_bound_members"), 1.0);
}

#[test]
fn the_http_responder_is_bounded() {
    let s = ServerProcess::start_with(&["--metrics", "127.0.0.1:0"]);
    let maddr = s.metrics_addr.expect("metrics address");
    // Another path: 404; another method: 405 (ureq reports statuses >= 400 as errors).
    match ureq::get(format!("http://{maddr}/")).call() {
        Err(ureq::Error::StatusCode(404)) => {}
        other => panic!("GET / -> {other:?}"),
    }
    match ureq::post(format!("http://{maddr}/metrics")).send("x") {
        Err(ureq::Error::StatusCode(405)) => {}
        other => panic!("POST /metrics -> {other:?}"),
    }
    // A head that never ends within the size bound: 400, not an endless read.
    let mut c = TcpStream::connect(maddr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let junk = vec![b'a'; 9000];
    let _ = c.write_all(&junk);
    let mut reply = Vec::new();
    let _ = c.read_to_end(&mut reply);
    assert!(
        reply.starts_with(b"HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );

    // Idle connections take at most the cap; the rest are closed at once.
    let idle: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(maddr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut closed = 0;
    for mut c in idle.iter() {
        c.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut b = [0u8; 1];
        if matches!(c.read(&mut b), Ok(0)) {
            closed += 1;
        }
    }
    assert!(
        closed >= 20 - 8,
        "only {closed} of 20 idle connections were refused"
    );
    drop(idle);
    // Once they are gone (the server notices the close), scraping works again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match ureq::get(format!("http://{maddr}/metrics")).call() {
            Ok(_) => break,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "no scrape after: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    // The control plane never noticed.
    s.signup();
}
