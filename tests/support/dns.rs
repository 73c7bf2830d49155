//! A real DNS server for discovery tests: dnsmasq on 127.0.0.1 (an
//! ephemeral UDP/TCP port), answering from a hosts file the test rewrites.
//!
//! dnsmasq is authoritative here for `*.fleet.test` only (`--local`), so a
//! name missing from the file is NXDOMAIN; every other name is refused. A
//! rewrite is applied with `SIGHUP` (dnsmasq re-reads the file at once);
//! [`Dns::pause`] stops the process (`SIGSTOP`) so that queries go
//! unanswered, as with a hung or unreachable server.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::backend::Backend;
use super::tools::require;

pub struct Dns {
    child: Child,
    addr: SocketAddr,
    hosts: PathBuf,
    names: Mutex<BTreeMap<String, Vec<IpAddr>>>,
    _dir: tempfile::TempDir,
}

impl Dns {
    /// Starts dnsmasq and waits until it answers.
    pub fn start() -> Dns {
        let dnsmasq = require("dnsmasq", "dnsmasq-base");
        let dir = tempfile::tempdir().expect("dns dir");
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, "").expect("hosts file");
        // A free port: dnsmasq binds UDP and TCP on it. Retried if taken
        // between the probe and dnsmasq's bind.
        for _ in 0..10 {
            let port = UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .expect("free udp port")
                .port();
            let mut child = Command::new(&dnsmasq)
                .args([
                    "--keep-in-foreground",
                    "--conf-file=/dev/null",
                    "--no-resolv",
                    "--no-hosts",
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    "--local=/fleet.test/",
                    "--pid-file=",
                    "--user=root",
                    "--log-facility=-",
                ])
                .arg(format!("--port={port}"))
                .arg(format!("--addn-hosts={}", hosts.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start dnsmasq");
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if query(addr, "probe.fleet.test").is_some() {
                    return Dns {
                        child,
                        addr,
                        hosts,
                        names: Mutex::new(BTreeMap::new()),
                        _dir: dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("dnsmasq did not start on a free port in 10 tries");
    }

    /// The server's address, for `discover.resolver`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Makes `name` resolve to `ips` (none: the name is gone, NXDOMAIN).
    pub fn set(&self, name: &str, ips: &[IpAddr]) {
        let mut names = self.names.lock().expect("names");
        names.insert(name.to_string(), ips.to_vec());
        let mut text = String::new();
        for (name, ips) in names.iter() {
            for ip in ips {
                let _ = writeln!(text, "{ip} {name}");
            }
        }
        // Written whole, then renamed: dnsmasq never reads half a file.
        let next = self.hosts.with_extension("next");
        std::fs::write(&next, text).expect("write hosts");
        std::fs::rename(&next, &self.hosts).expect("replace hosts");
        self.signal("HUP");
    }

    /// Stops answering (the process is stopped, queries time out).
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Answers again.
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -s {signal} dnsmasq");
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        // A stopped process must be continued to die of SIGKILL promptly
        // on every kernel; harmless otherwise.
        let _ = Command::new("kill")
            .args(["-s", "CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One A query over UDP; the response code when an answer came within
/// 200 ms.
fn query(server: SocketAddr, name: &str) -> Option<u8> {
    let socket = UdpSocket::bind("127.0.0.1:0").ok()?;
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .ok()?;
    let mut packet = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.extend_from_slice(&[0, 0, 1, 0, 1]);
    socket.send_to(&packet, server).ok()?;
    let mut buf = [0u8; 512];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    (n >= 4 && buf[0] == 0x12 && buf[1] == 0x34).then_some(buf[3] & 0x0f)
}

/// `n` backends (the pods of a headless Service): `b2`, `b3`... on 127.0.0.2, 127.0.0.3... sharing one port.
pub async fn pods(n: u8) -> (u16, Vec<Backend>) {
    'port: for _ in 0..20 {
        let first = Backend::start_at("b2", "127.0.0.2:0".parse().expect("addr")).await;
        let port = first.addr().port();
        let mut all = vec![first];
        for i in 3..2 + n {
            let addr = SocketAddr::from(([127, 0, 0, i], port));
            match tokio::net::TcpListener::bind(addr).await {
                Ok(probe) => drop(probe),
                Err(_) => continue 'port,
            }
            all.push(Backend::start_at(&format!("b{i}"), addr).await);
        }
        return (port, all);
    }
    panic!("no port free on every loopback address");
}
