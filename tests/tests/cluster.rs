//! Three real server processes on 127.0.0.1 form a cluster: tokio only, smol only, and a mix.
//! Each test checks: one leader agreed, the highest id after a clean start; queues declared
//! through one node are listed by all and spread over the nodes; a publish through a node that
//! does not serve the queue reaches the one that does (the client follows `NOT_LEADER`); kill -9
//! of the leader gives a new leader with a higher term, and the restarted node rejoins as a
//! follower of it.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use krest_tests::{cli_binary, Server, ServerKind};
use serde_json::Value;

/// How long a cluster may take to agree on a leader (elections take about a second here).
const AGREE_WITHIN: Duration = Duration::from_secs(20);

/// Three free ports per node: client, admin, peer. Bound to port 0 and released, so another
/// process could take one in between; the nodes must know each other's before they start.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().expect("bound").port())
        .collect()
}

struct Cluster {
    nodes: Vec<Server>,
}

impl Cluster {
    fn start(kinds: [ServerKind; 3]) -> Cluster {
        let ports = free_ports(9);
        let address = |node: usize, which: usize| format!("127.0.0.1:{}", ports[node * 3 + which]);
        let list: Vec<String> = (0..3)
            .map(|node| {
                format!(
                    "{{ id = {}, client = \"{}\", peer = \"{}\" }}",
                    node + 1,
                    address(node, 0),
                    address(node, 2)
                )
            })
            .collect();
        let nodes = kinds
            .iter()
            .enumerate()
            .map(|(node, kind)| {
                let config = format!(
                    "[server]\nnode_id = {}\nlisten = \"{}\"\nadmin_listen = \"{}\"\n\
                     [cluster]\npeer_listen = \"{}\"\nelection_timeout_ms = 500\n\
                     heartbeat_interval_ms = 50\nnodes = [ {} ]\n",
                    node + 1,
                    address(node, 0),
                    address(node, 1),
                    address(node, 2),
                    list.join(", ")
                );
                Server::start_configured(*kind, &config)
            })
            .collect();
        Cluster { nodes }
    }

    /// `GET /v1/cluster` of node `index` (1-based), if it answers.
    fn view(&self, index: usize) -> Option<Value> {
        let node = &self.nodes[index - 1];
        let (status, body) = node.admin_request("GET", "/v1/cluster", "");
        (status == 200).then(|| serde_json::from_str(&body).expect("JSON"))
    }

    /// Waits until every node of `among` names the same leader in the same term; returns them.
    fn agreed(&self, among: &[usize]) -> (u64, u64) {
        self.agreed_after(among, 0)
    }

    /// [`Cluster::agreed`] on a term after `term`.
    fn agreed_after(&self, among: &[usize], term: u64) -> (u64, u64) {
        let started = Instant::now();
        loop {
            let views: Vec<Option<(u64, u64)>> = among
                .iter()
                .map(|index| {
                    let view = self.view(*index)?;
                    Some((view["leader"].as_u64()?, view["term"].as_u64()?))
                })
                .collect();
            if let Some(Some(first)) = views.first() {
                if first.1 > term && views.iter().all(|view| view == &Some(*first)) {
                    return *first;
                }
            }
            assert!(
                started.elapsed() < AGREE_WITHIN,
                "nodes {among:?} did not agree on a leader: {views:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every term's leaders as the nodes of `among` report them: never two in one term.
    fn check_one_leader_per_term(&self, among: &[usize], seen: &mut Vec<(u64, u64)>) {
        for index in among {
            let Some(view) = self.view(*index) else {
                continue;
            };
            if view["role"] == "leader" {
                let term = view["term"].as_u64().expect("a term");
                let me = view["node_id"].as_u64().expect("an id");
                if let Some((_, other)) = seen.iter().find(|(known, _)| *known == term) {
                    assert_eq!(*other, me, "two leaders in term {term}");
                } else {
                    seen.push((term, me));
                }
            }
        }
    }
}

fn krest(node: &Server, arguments: &[&str]) -> Output {
    Command::new(cli_binary())
        .args(["-s", &node.address(), "--admin", &node.admin.to_string()])
        .args(arguments)
        .output()
        .expect("krest runs")
}

fn succeed(node: &Server, arguments: &[&str]) -> String {
    let output = krest(node, arguments);
    assert!(
        output.status.success(),
        "krest {arguments:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn scenario(kinds: [ServerKind; 3]) {
    let began = Instant::now();
    let phase = |name: &str| eprintln!("{kinds:?} {name}: {:.1} s", began.elapsed().as_secs_f64());
    let mut cluster = Cluster::start(kinds);
    let (leader, term) = cluster.agreed(&[1, 2, 3]);
    assert_eq!(leader, 3, "the highest id leads after a clean start");
    let info = succeed(&cluster.nodes[0], &["cluster", "info"]);
    assert!(info.contains("role     follower"), "{info}");

    phase("elected");
    // Queues declared through node 1 are listed by every node, spread over the nodes.
    for name in ["orders", "stock", "billing"] {
        succeed(
            &cluster.nodes[0],
            &["queue", "create", name, "--kind", "persistent"],
        );
    }
    let mut placed = Vec::new();
    for node in &cluster.nodes {
        let listed = succeed(node, &["--json", "queue", "ls"]);
        let listed: Value = serde_json::from_str(&listed).expect("JSON");
        let names: Vec<&str> = listed
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|queue| queue["name"].as_str())
            .collect();
        assert_eq!(names, ["billing", "orders", "stock"], "{listed}");
        placed = listed
            .as_array()
            .expect("a list")
            .iter()
            .map(|queue| queue["leader"].as_u64().expect("a leader"))
            .collect();
    }
    placed.sort_unstable();
    assert_eq!(placed, [1, 2, 3], "one queue per node");

    phase("declared");
    // A publish through node 1 reaches each queue's node; the count is there.
    for name in ["orders", "stock", "billing"] {
        succeed(&cluster.nodes[0], &["pub", name, "hello"]);
        let info = succeed(&cluster.nodes[1], &["--json", "queue", "info", name]);
        let info: Value = serde_json::from_str(&info).expect("JSON");
        assert_eq!(info["messages"], 1, "{info}");
    }

    phase("published");
    // A consumer through node 2 gets a message of a queue served by node 1 and acks it.
    let orders_node = placed_on(&cluster, "orders");
    let through = if orders_node == 2 { 2 } else { 1 };
    let got = succeed(
        &cluster.nodes[through],
        &["sub", "orders", "--group", "audit", "--count", "1"],
    );
    assert_eq!(got, "hello\n");

    phase("consumed");
    // kill -9 of the leader: nodes 1 and 2 elect a new one, in a later term, never two in one.
    let mut seen = Vec::new();
    cluster.nodes[2].kill9();
    let (new_leader, new_term) = cluster.agreed_after(&[1, 2], term);
    cluster.check_one_leader_per_term(&[1, 2], &mut seen);
    assert!(
        new_leader != 3 && new_term > term,
        "{new_leader} in {new_term}"
    );
    phase("re-elected");
    // The restarted node rejoins as a follower of the new leader.
    cluster.nodes[2].restart();
    let (after, _) = cluster.agreed(&[1, 2, 3]);
    cluster.check_one_leader_per_term(&[1, 2, 3], &mut seen);
    assert_eq!(after, new_leader, "the restarted node does not take over");
    let view = cluster.view(3).expect("node 3 answers");
    assert_eq!(view["role"], "follower", "{view}");
    phase("rejoined");
    // Its queue survived with its message.
    let info = succeed(&cluster.nodes[0], &["--json", "queue", "info", "billing"]);
    let info: Value = serde_json::from_str(&info).expect("JSON");
    assert_eq!(info["messages"], 1, "{info}");

    phase("checked");
    // SIGSTOP of the leader: the others elect another; after SIGCONT the paused one follows,
    // and no term ever has two leaders (sampled throughout).
    let paused = after as usize;
    let others: Vec<usize> = (1..=3).filter(|index| *index != paused).collect();
    let pid = cluster.nodes[paused - 1].pid().expect("running");
    signal("-STOP", pid);
    let (during, during_term) = cluster.agreed_after(&others, new_term);
    cluster.check_one_leader_per_term(&others, &mut seen);
    assert_ne!(during as usize, paused);
    phase("stopped-elected");
    signal("-CONT", pid);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        cluster.check_one_leader_per_term(&[1, 2, 3], &mut seen);
        std::thread::sleep(Duration::from_millis(20));
    }
    let (last, last_term) = cluster.agreed(&[1, 2, 3]);
    cluster.check_one_leader_per_term(&[1, 2, 3], &mut seen);
    assert!(last_term >= during_term, "{last} in {last_term}");
    let view = cluster.view(paused).expect("the paused node answers");
    assert_ne!(view["role"], "leader", "{view}");
}

/// The node serving queue `name`, as node 1 lists it.
fn placed_on(cluster: &Cluster, name: &str) -> u64 {
    let listed = succeed(&cluster.nodes[0], &["--json", "queue", "ls"]);
    let listed: Value = serde_json::from_str(&listed).expect("JSON");
    listed
        .as_array()
        .expect("a list")
        .iter()
        .find(|queue| queue["name"] == name)
        .and_then(|queue| queue["leader"].as_u64())
        .expect("listed")
}

fn signal(which: &str, pid: u32) {
    let status = Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {which} {pid}");
}

#[test]
fn a_tokio_cluster_elects_shares_its_catalog_and_survives_its_leader() {
    scenario([ServerKind::Tokio; 3]);
}

#[test]
fn a_smol_cluster_elects_shares_its_catalog_and_survives_its_leader() {
    scenario([ServerKind::Smol; 3]);
}

#[test]
fn a_mixed_cluster_elects_shares_its_catalog_and_survives_its_leader() {
    scenario([ServerKind::Tokio, ServerKind::Smol, ServerKind::Tokio]);
}
