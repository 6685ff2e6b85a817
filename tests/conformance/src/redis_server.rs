//! A real `redis-server` for the scale-out tests: started on a free loopback port in a
//! temporary directory, with persistence off, so no system service is needed. It can be stopped
//! and started again on the same port to test recovery.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` process this test started. Dropping it kills the process and removes its
/// directory.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// More `redis-server` arguments, such as the cluster mode's.
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port; returns once it answers `PING`. Panics
    /// with instructions when `redis-server` is not installed (`scripts/test.sh` installs it).
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// As [`start`](Self::start), with more `redis-server` arguments (kept across restarts).
    pub fn start_with(extra: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("anyws-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the redis-server directory");
        let mut server = Self {
            port,
            dir,
            child: None,
            extra: extra.iter().map(|arg| arg.to_string()).collect(),
        };
        server.restart();
        server
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on, the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (as a crash would) and waits for the process to end; its clients see
    /// their connections drop.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (after [`stop`](Self::stop)); returns once it
    /// answers `PING`.
    pub fn restart(&mut self) {
        self.stop();
        let log = std::fs::File::create(self.dir.join("redis.log")).expect("create the log");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start redis-server ({error}): install it with \
                     `apt-get install -y redis-server` (bash scripts/test.sh does)"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers_ping() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("redis-server exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer within 10 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the server answers `PING` with `PONG` right now.
    pub fn answers_ping(&self) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    /// Runs `redis-cli -p PORT ARGS...` against this server; returns its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|error| panic!("cannot run redis-cli ({error})"));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Whether it runs now (not [`stop`](Self::stop)ped).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }
}

/// A real Redis Cluster of `redis-server` nodes, masters only, each on a free loopback port in
/// a temporary directory; made with `redis-cli --cluster create`. It runs with
/// `cluster-require-full-coverage no`, so the other nodes go on serving while one is down, and
/// a node timeout of 1 s. Dropping it kills every node.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `count` nodes (at least 3) and makes a cluster of them; returns once every node
    /// reports `cluster_state:ok`.
    pub fn start(count: usize) -> Self {
        let cluster_args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "1000",
            "--cluster-require-full-coverage",
            "no",
        ];
        let nodes: Vec<RedisServer> = (0..count)
            .map(|_| RedisServer::start_with(&cluster_args))
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port()))
            .collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|error| panic!("cannot run redis-cli ({error})"));
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = Self { nodes };
        cluster.wait_ok();
        cluster
    }

    /// `redis://127.0.0.1:PORT` of each node, comma-separated (the fixture's
    /// `--redis-cluster`).
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(RedisServer::url).collect();
        urls.join(",")
    }

    /// The nodes, in the order they were created.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Kills node `index`, as a crash would; its slots are down until it is back.
    pub fn stop(&mut self, index: usize) {
        self.nodes[index].stop();
    }

    /// Starts node `index` again on its port, with its cluster state, and waits until every
    /// node reports `cluster_state:ok` and knows it is up again.
    pub fn restart(&mut self, index: usize) {
        self.nodes[index].restart();
        self.wait_ok();
    }

    /// The node that serves the slot of `key`: its index in [`nodes`](Self::nodes).
    pub fn node_of(&self, key: &str) -> usize {
        let running = self
            .nodes
            .iter()
            .find(|node| node.is_running())
            .expect("a running node");
        let slot: u16 = running
            .cli(&["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("CLUSTER KEYSLOT answers a number");
        // `<id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <link> <slot ranges>...`
        for line in running.cli(&["CLUSTER", "NODES"]).lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some(port) = fields
                .get(1)
                .and_then(|addr| addr.split(['@', ':']).nth(1))
                .and_then(|port| port.parse::<u16>().ok())
            else {
                continue;
            };
            let serves = fields.iter().skip(8).any(|range| {
                let (first, last) = range.split_once('-').unwrap_or((range, range));
                match (first.parse::<u16>(), last.parse::<u16>()) {
                    (Ok(first), Ok(last)) => (first..=last).contains(&slot),
                    _ => false,
                }
            });
            if serves {
                if let Some(index) = self.nodes.iter().position(|n| n.port() == port) {
                    return index;
                }
            }
        }
        panic!("no node serves slot {slot} of `{key}`")
    }

    /// Waits until every running node reports `cluster_state:ok` and sees no node failing.
    fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = self.nodes.iter().filter(|n| n.is_running()).all(|node| {
                node.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok")
                    && !node.cli(&["CLUSTER", "NODES"]).contains("fail")
            });
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the Redis Cluster was not ok within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
