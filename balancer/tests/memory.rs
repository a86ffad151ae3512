//! Memory stays flat while large bodies stream through the `rondo` binary: a 1 GiB upload and a
//! 1 GiB download each grow its resident memory by less than 32 MiB. The figures are printed.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

const GIB: u64 = 1 << 30;
/// A multiple of the backend's 251-byte pattern, so chunk after chunk is the pattern of
/// `/bytes/{n}` too.
const CHUNK: usize = 251 << 10;
const LIMIT_KIB: u64 = 32 << 10;

/// Kills the balancer when the test ends, passed or not.
struct Balancer(Child);

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A field of /proc/<pid>/status in KiB (VmRSS: now, VmHWM: the peak so far).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Resets the peak RSS counter so VmHWM measures one transfer (Linux: write 5 to clear_refs).
fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset VmHWM");
}

/// 1 GiB as `chunk` repeated, the last one cut short.
fn gigabyte(chunk: &Bytes) -> impl Iterator<Item = Bytes> {
    let chunk = chunk.clone();
    (0..GIB).step_by(CHUNK).map(move |start| {
        let len = (GIB - start).min(CHUNK as u64) as usize;
        chunk.slice(..len)
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A 1 GiB upload and a 1 GiB download pass intact with the balancer's memory nearly flat.
#[actix_web::test]
async fn gigabyte_bodies_stream_with_flat_memory() {
    let backend_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_addr = backend_listener.local_addr().unwrap();
    let server = backend::start(
        backend_listener,
        backend::Settings {
            message: "big".into(),
            served_by: "b".into(),
            workers: 1,
            shutdown_timeout: Duration::from_secs(1),
        },
    )
    .unwrap();
    actix_web::rt::spawn(server);

    let listen = format!("127.0.0.1:{}", free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_rondo"))
        .env("RONDO_LISTEN", &listen)
        .env("RONDO_UPSTREAMS", backend_addr.to_string())
        .env("RONDO_WORKERS", "2")
        .env("RONDO_MAX_BODY_SIZE", "2GiB")
        .env("RONDO_ADMIN_LISTEN", "off")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start rondo");
    let pid = child.id();
    let _guard = Balancer(child);
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(600))
        .finish();
    let base = format!("http://{listen}");
    let started = Instant::now();
    loop {
        if let Ok(res) = client.get(format!("{base}/")).send().await {
            if res.status() == 200 {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "rondo did not start"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }

    // Upload: 1 GiB streamed to /echo, which answers the length and SHA-256 it received.
    let before = status_kib(pid, "VmRSS:");
    reset_peak(pid);
    let chunk = Bytes::from((0..CHUNK).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let expected = hex::encode(
        gigabyte(&chunk)
            .fold(Sha256::new(), |mut h, part| {
                h.update(&part);
                h
            })
            .finalize(),
    );
    let upload = futures_util::stream::iter(gigabyte(&chunk)).map(Ok::<_, std::io::Error>);
    let t = Instant::now();
    let mut res = client
        .post(format!("{base}/echo"))
        .send_stream(upload)
        .await
        .expect("upload through rondo");
    let echo: serde_json::Value = res.json().await.expect("the echo JSON");
    let up_secs = t.elapsed().as_secs_f64();
    assert_eq!(echo["body_length"], GIB);
    assert_eq!(echo["body_sha256"], expected);
    let up_growth = status_kib(pid, "VmHWM:").saturating_sub(before);

    // Download: 1 GiB from /bytes/{n}.
    let before_down = status_kib(pid, "VmRSS:");
    reset_peak(pid);
    let t = Instant::now();
    let mut res = client
        .get(format!("{base}/bytes/{GIB}"))
        .send()
        .await
        .expect("download through rondo");
    assert_eq!(res.status(), 200);
    let mut got = Sha256::new();
    let mut length = 0u64;
    while let Some(part) = res.next().await {
        let part = part.expect("the download body");
        length += part.len() as u64;
        got.update(&part);
    }
    let down_secs = t.elapsed().as_secs_f64();
    assert_eq!(length, GIB);
    assert_eq!(hex::encode(got.finalize()), expected);
    let down_growth = status_kib(pid, "VmHWM:").saturating_sub(before_down);

    println!(
        "rondo resident memory: {before} KiB before; 1 GiB upload: peak +{up_growth} KiB \
         ({up_secs:.1} s); 1 GiB download: peak +{down_growth} KiB ({down_secs:.1} s)"
    );
    assert!(up_growth < LIMIT_KIB, "upload grew RSS by {up_growth} KiB");
    assert!(
        down_growth < LIMIT_KIB,
        "download grew RSS by {down_growth} KiB"
    );
}
