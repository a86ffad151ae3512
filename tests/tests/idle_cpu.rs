//! What a connection waiting on its response costs: next to nothing, whatever its client sends
//! meanwhile. One test in its own binary, its cases one after another, so that the process's
//! CPU time is the case's.
#![cfg(target_os = "linux")]

use std::time::Duration;

use balancer::discovery::DnsResolver;
use rondo_tests::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// CPU time this process has used (user and system), from /proc/self/stat.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which is in parentheses and may hold spaces): utime and
    // stime are the 12th and 13th, in clock ticks (USER_HZ, 100 a second on Linux).
    let after = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse().expect("a tick count"))
        .collect();
    Duration::from_millis((fields[0] + fields[1]) * 10)
}

/// Sends `head` and 200 KiB of bytes that are no request behind it (more than the 128 KiB a
/// read buffer holds) in one write, reads until the balancer closes the connection, and
/// returns what came and the CPU time the process used meanwhile.
async fn send_with_junk_behind(lb: &balancer::Running, head: &[u8]) -> (String, Duration) {
    let mut stream = TcpStream::connect(lb.addrs()[0]).await.expect("connect");
    let before = cpu_time();
    let mut sent = head.to_vec();
    sent.resize(sent.len() + (200 << 10), b'x');
    stream.write_all(&sent).await.expect("write");
    let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    (answer, cpu_time().saturating_sub(before))
}

/// The first request of each case waits 2 s for its endpoint, with a full read buffer behind
/// it; the wait costs next to no CPU (under 0.5 s; a spinning dispatcher takes the 2 s whole).
/// 1. A `Connection: close` request: what follows it is never a request. actix-http kept
///    those bytes, and with its buffer full it woke itself at once for as long as the
///    response took.
/// 2. A kept-alive request with 17 requests pipelined behind it, one more than the queue
///    takes: the same spin, until the queue had room. Every request is answered, then the
///    bytes behind them, a head with no end, get a 431.
#[actix_web::test]
async fn a_request_waiting_with_a_full_buffer_behind_it_does_not_spin() {
    let b = start_backend("Server 1", "b1");
    let lb = start_balancer(&config_for(&[b.addr.to_string()]), DnsResolver).await;
    let slow_close = b"GET /delay/2000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (answer, used) = send_with_junk_behind(&lb, slow_close).await;
    eprintln!("closing request: {used:?} of CPU time while its response took 2 s");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.ends_with("\r\n\r\nServer 1"), "{answer:?}");
    assert!(
        used < Duration::from_millis(500),
        "{used:?} of CPU time while a closing request waited 2 s for its endpoint"
    );

    let mut pipelined = b"GET /delay/2000 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    for _ in 0..17 {
        pipelined.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    let (answer, used) = send_with_junk_behind(&lb, &pipelined).await;
    eprintln!("18 pipelined requests: {used:?} of CPU time while the first took 2 s");
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 18, "{answer:?}");
    assert_eq!(answer.matches("HTTP/1.1 431").count(), 1, "{answer:?}");
    assert!(
        used < Duration::from_millis(500),
        "{used:?} of CPU time while 18 pipelined requests waited 2 s for the first"
    );
}
