//! What a connection waiting on its response costs: nothing, whatever its client sends
//! meanwhile. Alone in its test binary, so that the process's CPU time is this test's.

use std::time::Duration;

use balancer::discovery::DnsResolver;
use rondo_tests::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// CPU time this process has used (user and system), from /proc/self/stat.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which is in parentheses and may hold spaces): utime and
    // stime are the 12th and 13th, in clock ticks of 1/100 s on Linux.
    let after = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse().expect("a tick count"))
        .collect();
    Duration::from_millis((fields[0] + fields[1]) * 10)
}

/// A `Connection: close` request to an endpoint that takes 2 s, with 200 KiB sent behind it
/// (more than the 128 KiB a read buffer holds): the request is answered and the connection
/// closed, and the wait costs next to no CPU. actix-http, with the bytes behind the request
/// filling its buffer, woke itself again at once for as long as the response took: a core at
/// 100 %.
#[actix_web::test]
async fn a_closing_request_with_bytes_behind_it_waits_without_spinning() {
    let b = start_backend("Server 1", "b1");
    let lb = start_balancer(&config_for(&[b.addr.to_string()]), DnsResolver).await;
    let mut stream = TcpStream::connect(lb.addrs()[0]).await.expect("connect");
    let before = cpu_time();
    let mut sent = b"GET /delay/2000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec();
    sent.resize(sent.len() + (200 << 10), b'x');
    stream.write_all(&sent).await.expect("write");
    let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    let used = cpu_time().saturating_sub(before);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.ends_with("\r\n\r\nServer 1"), "{answer:?}");
    eprintln!("CPU time while the response took 2 s: {used:?}");
    assert!(
        used < Duration::from_millis(500),
        "{used:?} of CPU time while one request waited 2 s for its endpoint"
    );
}
