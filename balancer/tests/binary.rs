//! The `rondo` binary as users start it: bad configuration stops it with exit code 2 and a
//! message naming the setting; the healthcheck subcommand tells a listener from none.

use std::net::TcpListener;
use std::process::{Command, Output};

fn rondo(envs: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rondo"));
    for var in [
        "RONDO_LISTEN",
        "RONDO_UPSTREAMS",
        "RONDO_DISCOVERY_INTERVAL",
        "RONDO_WORKERS",
        "RONDO_CONNECT_TIMEOUT",
        "RONDO_RESPONSE_TIMEOUT",
        "RONDO_UPSTREAM_IDLE_TIMEOUT",
        "RONDO_SHUTDOWN_TIMEOUT",
        "RONDO_HEALTHCHECK_PORT",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(envs.iter().copied()).args(args).output().unwrap()
}

/// Each bad setting exits 2 with the variable, the value and what is expected on stderr.
#[test]
fn bad_configuration_exits_2_naming_the_setting() {
    for (envs, expect) in [
        (vec![], "RONDO_UPSTREAMS (--upstreams) is not set"),
        (
            vec![("RONDO_UPSTREAMS", "server1")],
            "bad value 'server1' for RONDO_UPSTREAMS (--upstreams): 'server1' has no port",
        ),
        (
            vec![("RONDO_UPSTREAMS", "a:1"), ("RONDO_DISCOVERY_INTERVAL", "fast")],
            "bad value 'fast' for RONDO_DISCOVERY_INTERVAL (--discovery-interval): expected a duration",
        ),
        (
            vec![("RONDO_UPSTREAMS", "a:1"), ("RONDO_WORKERS", "-1")],
            "RONDO_WORKERS (--workers)",
        ),
    ] {
        let out = rondo(&envs, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{envs:?}: {stderr}");
        assert!(stderr.contains(expect), "{envs:?}: {stderr}");
    }
}

/// A listen address that is taken exits 2 and says which setting to change.
#[test]
fn taken_listen_address_exits_2() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = rondo(&[("RONDO_UPSTREAMS", "a:1"), ("RONDO_LISTEN", &addr)], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr} (RONDO_LISTEN)")),
        "{stderr}"
    );
}

/// `rondo healthcheck` exits 0 when something listens on the port and 1 when nothing does.
#[test]
fn healthcheck_tells_a_listener_from_none() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let up = rondo(&[], &["healthcheck", "--port", &port]);
    assert_eq!(up.status.code(), Some(0));
    drop(listener);
    let down = rondo(&[], &["healthcheck", "--port", &port]);
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("nothing accepts connections"));
}
