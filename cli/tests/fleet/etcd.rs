//! Real etcd for tests: one or three members on free loopback ports with temporary data directories,
//! killed when dropped. (Also used by the coordinator's registry tests and the failover benchmark.)

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound and released; etcd binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

pub struct Member {
    pub name: String,
    pub client_url: String,
    /// Plain-HTTP URL of the member's `/health` (its metrics listener).
    health_url: String,
    child: Option<Child>,
}

impl Member {
    /// SIGKILLs this member.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Etcd {
    pub members: Vec<Member>,
    /// Whether clients need TLS and a client certificate (`--client-cert-auth`).
    pub secure: bool,
    _data: tempfile::TempDir,
}

/// The CA, certificate and key an etcd member serves with (and checks client certificates against).
#[derive(Clone)]
pub struct EtcdTls {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

fn etcd_binary() -> &'static str {
    if Command::new("etcd").arg("--version").stdout(Stdio::null()).status().is_err() {
        panic!("etcd is not installed: run scripts/setup (apt-get install -y etcd-server)");
    }
    "etcd"
}

impl Etcd {
    /// Starts an etcd cluster of `n` members and waits until every member is healthy. Ports are
    /// picked free and bound by etcd a moment later, so another process may take one first (the
    /// member then exits): the cluster is then started again on fresh ports, up to 3 times.
    pub fn start(n: usize) -> Etcd {
        Self::start_with(n, None)
    }

    /// Like [`Etcd::start`], serving clients over TLS only and requiring client certificates of
    /// `tls.ca` (`--client-cert-auth`).
    pub fn start_with(n: usize, tls: Option<EtcdTls>) -> Etcd {
        Self::start_args(n, tls, &[])
    }

    /// Like [`Etcd::start_with`], every member given `args` too.
    pub fn start_args(n: usize, tls: Option<EtcdTls>, args: &[&str]) -> Etcd {
        let mut why = String::new();
        for _ in 0..3 {
            match Self::try_start(n, tls.clone(), args) {
                Ok(etcd) => return etcd,
                Err(e) => why = e,
            }
        }
        panic!("{why}");
    }

    fn try_start(n: usize, tls: Option<EtcdTls>, args: &[&str]) -> Result<Etcd, String> {
        let bin = etcd_binary();
        let data = tempfile::tempdir().expect("temp dir");
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let cluster: Vec<String> =
            ports.iter().enumerate().map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}")).collect();
        let token = format!("skiff-test-{}", free_port());
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let name = format!("m{i}");
            let client_url = format!("{scheme}://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let health_url = format!("http://127.0.0.1:{}", free_port());
            let mut cmd = Command::new(bin);
            if let Some(tls) = &tls {
                cmd.arg("--client-cert-auth").arg("--trusted-ca-file").arg(&tls.ca);
                cmd.arg("--cert-file").arg(&tls.cert).arg("--key-file").arg(&tls.key);
            }
            let child = cmd
                .args(["--listen-metrics-urls", &health_url])
                .args(["--name", &name, "--data-dir"])
                .arg(data.path().join(&name))
                .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &cluster.join(","), "--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &token, "--logger", "zap", "--log-level", "error"])
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn etcd");
            members.push(Member { name, client_url, health_url, child: Some(child) });
        }
        let mut etcd = Etcd { members, secure: tls.is_some(), _data: data };
        let deadline = Instant::now() + Duration::from_secs(20);
        for m in &mut etcd.members {
            while !healthy(&m.health_url) {
                if let Some(Ok(Some(status))) = m.child.as_mut().map(|c| c.try_wait()) {
                    return Err(format!("etcd member {} exited at start ({status}); a port was taken?", m.name));
                }
                if Instant::now() >= deadline {
                    return Err(format!("etcd member {} did not become healthy within 20 s", m.name));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(etcd)
    }

    /// All client URLs, comma-separated (for `--etcd`).
    pub fn urls(&self) -> String {
        self.members.iter().map(|m| m.client_url.clone()).collect::<Vec<_>>().join(",")
    }
}

/// etcd's `/health` endpoint (on a plain-HTTP URL) says `"health":"true"`.
pub fn healthy(url: &str) -> bool {
    let addr = url.trim_start_matches("http://");
    let Ok(mut stream) = TcpStream::connect(addr) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let request = format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}
