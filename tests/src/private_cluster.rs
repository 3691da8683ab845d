//! A private three-node RabbitMQ cluster for fault tests that kill one node: three
//! [`PrivateBroker`]s on one machine, sharing an Erlang cookie, joined into one cluster. Like a
//! single private node, it never touches the shared broker on 5672, and dropping it kills every
//! node and deletes their data.
//!
//! The nodes are joined with `rabbitmqctl stop_app; join_cluster <first>; start_app` rather
//! than by peer discovery (`cluster_formation.peer_discovery_backend = classic_config`):
//! classic peer discovery acts only on a blank node's first boot, and on 3.10 it takes no lock,
//! so nodes booted together can each find no peer yet and form clusters of their own (the
//! "initial formation race" of the cluster formation guide; 3.13 rewrote peer discovery to
//! close it). Joining by hand after booting the three nodes in parallel is deterministic, and
//! the commands and their order are the same from 3.10 to 4.x.

use crate::private_broker::PrivateBroker;
use crate::wait_until;
use std::collections::BTreeSet;

/// Nodes in the cluster: the smallest cluster where quorum queues survive the loss of a node.
pub const NODES: usize = 3;

/// One private cluster. Dropping it kills its nodes and deletes their data.
pub struct PrivateCluster {
    nodes: Vec<PrivateBroker>,
}

/// A quorum queue's replicas as the cluster reports them.
#[derive(Clone, Debug)]
pub struct QuorumQueue {
    pub name: String,
    /// The node of the leader, or `None` while there is none.
    pub leader: Option<String>,
    /// Every node that holds a replica.
    pub members: BTreeSet<String>,
    /// The members that are running now.
    pub online: BTreeSet<String>,
}

/// A client connection as the cluster reports it.
#[derive(Clone, Debug)]
pub struct ClientConnection {
    /// The client's `connection_name` property (each service names its connection after
    /// itself), or an empty string.
    pub name: String,
    /// The index of the node it is connected to.
    pub node: usize,
}

impl PrivateCluster {
    /// Starts three nodes in parallel, joins the second and third to the first, and waits until
    /// the cluster reports all three running.
    pub async fn start() -> Self {
        let cookie = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
        let (first, second, third) = tokio::join!(
            PrivateBroker::start_with_cookie(&cookie),
            PrivateBroker::start_with_cookie(&cookie),
            PrivateBroker::start_with_cookie(&cookie),
        );
        // One at a time: each join changes the membership the next one joins.
        for joining in [&second, &third] {
            joining.rabbitmqctl(&["stop_app"]).await;
            joining
                .rabbitmqctl(&["join_cluster", first.node_name()])
                .await;
            joining.rabbitmqctl(&["start_app"]).await;
        }
        let cluster = Self {
            nodes: vec![first, second, third],
        };
        let everyone = cluster.node_names();
        wait_until("the three nodes to run as one cluster", || async {
            cluster.running_nodes().await == everyone
        })
        .await;
        cluster
    }

    /// The nodes' AMQP URIs, comma-separated, as services take them
    /// (`runtime::BrokerConfig::amqp_url`): the first node first.
    pub fn addresses(&self) -> String {
        self.addresses_from(0)
    }

    /// The nodes' AMQP URIs, comma-separated, starting with node `first`: a client that
    /// connects to the first node that answers then starts on that one.
    pub fn addresses_from(&self, first: usize) -> String {
        (0..NODES)
            .map(|offset| self.nodes[(first + offset) % NODES].url())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn node(&self, index: usize) -> &PrivateBroker {
        &self.nodes[index]
    }

    pub fn node_mut(&mut self, index: usize) -> &mut PrivateBroker {
        &mut self.nodes[index]
    }

    /// The index of the node with this Erlang name.
    pub fn index_of(&self, node_name: &str) -> usize {
        self.nodes
            .iter()
            .position(|node| node.node_name() == node_name)
            .unwrap_or_else(|| panic!("{node_name} is not a node of this cluster"))
    }

    /// Every node's Erlang name.
    pub fn node_names(&self) -> BTreeSet<String> {
        self.nodes
            .iter()
            .map(|node| node.node_name().to_owned())
            .collect()
    }

    /// The nodes the cluster reports running, asked of a node that runs.
    pub async fn running_nodes(&self) -> BTreeSet<String> {
        let status = self.ctl_json(&["cluster_status"]).await;
        strings(&status["running_nodes"])
    }

    /// Every quorum queue of the default virtual host with its leader and replicas.
    pub async fn quorum_queues(&self) -> Vec<QuorumQueue> {
        let listed = self
            .ctl_json(&["list_queues", "name", "type", "leader", "members", "online"])
            .await;
        listed
            .as_array()
            .expect("list_queues prints a JSON array")
            .iter()
            .filter(|queue| queue["type"] == "quorum")
            .map(|queue| QuorumQueue {
                name: queue["name"].as_str().unwrap_or_default().to_owned(),
                // An empty string (or none at all) while the queue has no leader.
                leader: queue["leader"]
                    .as_str()
                    .filter(|leader| !leader.is_empty())
                    .map(str::to_owned),
                members: strings(&queue["members"]),
                online: strings(&queue["online"]),
            })
            .collect()
    }

    /// The cluster's own account of its queues and connections, as `rabbitmqctl` prints it, for
    /// a failure message.
    pub async fn report(&self) -> String {
        let Some(node) = self.nodes.iter().find(|node| node.is_running()) else {
            return "no node runs".into();
        };
        let queues = node
            .rabbitmqctl(&[
                "list_queues",
                "name",
                "leader",
                "online",
                "messages_ready",
                "messages_unacknowledged",
                "consumers",
            ])
            .await;
        let connections = node
            .rabbitmqctl(&["list_connections", "name", "state", "channels"])
            .await;
        format!("{queues}\n{connections}")
    }

    /// Every client connection to any node, with the node it is connected to. A connection is
    /// placed by its server port, which is the AMQP port of its node.
    pub async fn connections(&self) -> Vec<ClientConnection> {
        let listed = self
            .ctl_json(&["list_connections", "port", "client_properties"])
            .await;
        listed
            .as_array()
            .expect("list_connections prints a JSON array")
            .iter()
            .map(|connection| {
                let port = connection["port"].as_u64().expect("a connection's port");
                let node = self
                    .nodes
                    .iter()
                    .position(|node| u64::from(node.amqp_port()) == port)
                    .unwrap_or_else(|| panic!("no node of this cluster listens on {port}"));
                ClientConnection {
                    name: connection_name(&connection["client_properties"]),
                    node,
                }
            })
            .collect()
    }

    /// Runs a listing `rabbitmqctl` command on the first node that runs, with JSON output.
    async fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let node = self
            .nodes
            .iter()
            .find(|node| node.is_running())
            .expect("a node of the cluster runs");
        let mut args = args.to_vec();
        args.extend(["--formatter", "json"]);
        let printed = node.rabbitmqctl(&args).await;
        serde_json::from_str(&printed).unwrap_or_else(|error| {
            panic!("rabbitmqctl {args:?} printed no JSON ({error}):\n{printed}")
        })
    }
}

/// A JSON array of strings as a set.
fn strings(value: &serde_json::Value) -> BTreeSet<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item.as_str().map(str::to_owned))
        .collect()
}

/// The `connection_name` client property, from `list_connections client_properties` in JSON:
/// a list of `[name, type, value]` triples.
fn connection_name(properties: &serde_json::Value) -> String {
    properties
        .as_array()
        .into_iter()
        .flatten()
        .find(|property| property[0] == "connection_name")
        .and_then(|property| property[2].as_str())
        .unwrap_or_default()
        .to_owned()
}
