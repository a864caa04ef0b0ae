//! Where the guardrail store's Redis is: one server, a Redis Cluster, or a Sentinel-managed
//! primary, chosen by the scheme of `redis.url`.
//!
//! ```text
//! redis://[user:password@]host:port[/db]                         one server (or a proxy)
//! redis+cluster://[user:password@]host:port[,host:port...]       Redis Cluster, seed nodes
//! redis+sentinel://[user:password@]host:port[,host:port...]/name[/db]
//!                                                                the primary Sentinel names `name`
//! ```
//!
//! Credentials are those of the data nodes (the cluster's nodes, the Sentinel-managed primary);
//! the Sentinels themselves are asked without authentication.
//!
//! Every variant hands out a [`Conn`] that the store uses like any async Redis connection:
//!
//! * **single**: the redis crate's [`ConnectionManager`] (one multiplexed connection,
//!   reconnected in the background).
//! * **cluster**: the crate's cluster connection, made on first use (so a worker starts while
//!   the cluster is down); it follows `MOVED` after a failover or resharding. Every key of the
//!   store shares one hash tag, so every script runs on one shard.
//! * **sentinel**: a [`ConnectionManager`] to the address the Sentinels name as primary (the
//!   crate checks that the node calls itself master). Any call that fails for lack of a usable
//!   primary — refused, timed out, `READONLY` from a demoted primary — drops that connection,
//!   and the next call asks the Sentinels again, so the store follows a failover as soon as the
//!   Sentinels have promoted a replica. Meanwhile calls fail closed like any outage.
//!
//! Writes the old primary acknowledged but had not replicated are lost in a failover; the store
//! notices the promotion (`decide.lua`: the primary's replication id changed) and runs
//! conservatively, see [`super::redis`].

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use std::sync::Mutex;
use std::time::Duration;

/// The parsed `redis.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// One server: the URL as given.
    Single(String),
    /// Redis Cluster seed nodes, each as a `redis://` URL carrying the credentials.
    Cluster(Vec<String>),
    /// Sentinel addresses (`redis://host:port`), the primary's name, and a `redis://` URL with the
    /// data nodes' credentials and database (its host is a placeholder).
    Sentinel {
        sentinels: Vec<String>,
        master: String,
        node: String,
    },
}

impl Topology {
    /// Parse `redis.url`. The error names the problem, never the URL (it may hold a password).
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| "missing scheme (expected redis://, redis+cluster:// or redis+sentinel://)".to_string())?;
        let cluster = match scheme {
            "redis" | "rediss" | "redis+unix" | "unix" => return Ok(Self::Single(url.to_string())),
            "redis+cluster" => true,
            "redis+sentinel" => false,
            other => {
                return Err(format!(
                    "unknown scheme {other:?} (expected redis://, redis+cluster:// or redis+sentinel://)"
                ))
            }
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (format!("{u}@"), h),
            None => (String::new(), authority),
        };
        let hosts: Vec<&str> = hosts.split(',').map(str::trim).collect();
        if hosts.iter().any(|h| h.is_empty()) {
            return Err("empty host in the node list".into());
        }
        for h in &hosts {
            let port = h.rsplit_once(':').map(|(_, p)| p);
            if port.and_then(|p| p.parse::<u16>().ok()).is_none() {
                return Err(format!("node {h:?} is not host:port"));
            }
        }
        if cluster {
            if !path.is_empty() {
                return Err("redis+cluster:// takes no path (Cluster has database 0 only)".into());
            }
            return Ok(Self::Cluster(
                hosts.iter().map(|h| format!("redis://{userinfo}{h}")).collect(),
            ));
        }
        let (master, db) = path.split_once('/').unwrap_or((path, ""));
        if master.is_empty() {
            return Err(
                "redis+sentinel:// needs the primary's name as its path: redis+sentinel://host:port/NAME".into(),
            );
        }
        if !db.is_empty() && db.parse::<u32>().is_err() {
            return Err(format!("database {db:?} is not a number"));
        }
        let db = if db.is_empty() { "0" } else { db };
        Ok(Self::Sentinel {
            sentinels: hosts.iter().map(|h| format!("redis://{h}")).collect(),
            master: master.to_string(),
            node: format!("redis://{userinfo}primary:0/{db}"),
        })
    }

    /// `single`, `cluster` or `sentinel`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Single(_) => "single",
            Self::Cluster(_) => "cluster",
            Self::Sentinel { .. } => "sentinel",
        }
    }
}

/// A connection of any topology; cheap to clone (a handle to a multiplexed connection).
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// The current connection of a lazily connected topology, tagged with a generation so a failure
/// only drops the connection it happened on.
type Current = Mutex<Option<(u64, Conn)>>;

/// Hands out connections; see the module documentation.
pub enum Backend {
    Single(ConnectionManager),
    Cluster {
        client: ClusterClient,
        current: Current,
        connecting: tokio::sync::Mutex<u64>,
    },
    Sentinel {
        sentinel: tokio::sync::Mutex<(Sentinel, u64)>,
        master: String,
        node: SentinelNodeConnectionInfo,
        config: ConnectionManagerConfig,
        current: Current,
        /// The primary's address last connected to, for the failover log line.
        primary: Mutex<Option<String>>,
    },
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "Backend::Single",
            Self::Cluster { .. } => "Backend::Cluster",
            Self::Sentinel { .. } => "Backend::Sentinel",
        })
    }
}

fn invalid(what: &str, e: &RedisError) -> String {
    // The category only: the error text may quote the URL, and with it a password.
    format!("invalid redis url ({what}): {}", e.category())
}

impl Backend {
    /// Set up (without connecting) the backend for `topology`; `timeout` bounds each connection
    /// attempt and each response.
    pub fn new(topology: &Topology, timeout: Duration) -> Result<Self, String> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // Retries happen inside one call's wait for the connection; the store's outer timeout
            // cuts them short anyway, and the next call starts a fresh reconnect.
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        match topology {
            Topology::Single(url) => {
                let client = redis::Client::open(url.as_str()).map_err(|e| invalid("single", &e))?;
                let conn =
                    ConnectionManager::new_lazy_with_config(client, config).map_err(|e| invalid("single", &e))?;
                Ok(Self::Single(conn))
            }
            Topology::Cluster(nodes) => {
                let client = ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    // Enough to follow MOVED/ASK and a slot refresh after a failover; every
                    // script is idempotent per attempt, so a retry never reserves twice.
                    .retries(3)
                    .min_retry_wait(10)
                    .max_retry_wait(200)
                    .build() // validates the nodes; connects on first use
                    .map_err(|e| invalid("cluster", &e))?;
                Ok(Self::Cluster {
                    client,
                    current: Mutex::new(None),
                    connecting: tokio::sync::Mutex::new(0),
                })
            }
            Topology::Sentinel {
                sentinels,
                master,
                node,
            } => {
                let sentinel = Sentinel::build(sentinels.clone()).map_err(|e| invalid("sentinel", &e))?;
                let info = node
                    .as_str()
                    .into_connection_info()
                    .map_err(|e| invalid("sentinel", &e))?;
                let node =
                    SentinelNodeConnectionInfo::default().set_redis_connection_info(info.redis_settings().clone());
                Ok(Self::Sentinel {
                    sentinel: tokio::sync::Mutex::new((sentinel, 0)),
                    master: master.clone(),
                    node,
                    config,
                    current: Mutex::new(None),
                    primary: Mutex::new(None),
                })
            }
        }
    }

    /// A connection and its generation (pass it to [`Backend::failed`] when a call on it fails).
    pub async fn conn(&self) -> RedisResult<(u64, Conn)> {
        match self {
            Self::Single(c) => Ok((0, Conn::Single(c.clone()))),
            Self::Cluster {
                client,
                current,
                connecting,
            } => {
                if let Some(c) = get(current) {
                    return Ok(c);
                }
                let mut generation = connecting.lock().await;
                if let Some(c) = get(current) {
                    return Ok(c);
                }
                let conn = client.get_async_connection().await?;
                *generation += 1;
                let c = (*generation, Conn::Cluster(conn));
                *lock(current) = Some(c.clone());
                Ok(c)
            }
            Self::Sentinel {
                sentinel,
                master,
                node,
                config,
                current,
                primary,
            } => {
                if let Some(c) = get(current) {
                    return Ok(c);
                }
                let mut guard = sentinel.lock().await;
                if let Some(c) = get(current) {
                    return Ok(c);
                }
                let (sentinel, generation) = &mut *guard;
                let client = sentinel.async_master_for(master, Some(node)).await?;
                let addr = client.get_connection_info().addr().to_string();
                let conn = ConnectionManager::new_lazy_with_config(client, config.clone())?;
                *generation += 1;
                let mut last = lock(primary);
                match last.as_deref() {
                    Some(prev) if prev != addr => tracing::warn!(
                        previous = prev,
                        primary = %addr,
                        master = %master,
                        "Sentinel names a new Redis primary (failover); following it"
                    ),
                    Some(_) => {}
                    None => tracing::info!(primary = %addr, master = %master, "Redis primary named by Sentinel"),
                }
                *last = Some(addr);
                let c = (*generation, Conn::Single(conn));
                *lock(current) = Some(c.clone());
                Ok(c)
            }
        }
    }

    /// A call on the connection of `generation` failed for lack of a usable server: a
    /// Sentinel-managed store forgets that connection, so the next call asks the Sentinels which
    /// node is primary now. The single-server connection reconnects by itself, and the cluster
    /// connection reconnects and refreshes its slot map by itself.
    pub fn failed(&self, generation: u64) {
        let Self::Sentinel { current, .. } = self else {
            return;
        };
        let mut cur = lock(current);
        if cur.as_ref().is_some_and(|(g, _)| *g == generation) {
            *cur = None;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn get(current: &Current) -> Option<(u64, Conn)> {
    lock(current).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_choose_the_topology() {
        assert_eq!(
            Topology::parse("redis://127.0.0.1:6379/2").unwrap(),
            Topology::Single("redis://127.0.0.1:6379/2".into())
        );
        assert_eq!(
            Topology::parse("redis+cluster://:pw@a:7000, b:7001").unwrap(),
            Topology::Cluster(vec!["redis://:pw@a:7000".into(), "redis://:pw@b:7001".into()])
        );
        assert_eq!(
            Topology::parse("redis+sentinel://u:p@s1:26379,s2:26379/mymaster/3").unwrap(),
            Topology::Sentinel {
                sentinels: vec!["redis://s1:26379".into(), "redis://s2:26379".into()],
                master: "mymaster".into(),
                node: "redis://u:p@primary:0/3".into(),
            }
        );
        assert_eq!(
            Topology::parse("redis+sentinel://s1:26379/m").unwrap().kind(),
            "sentinel"
        );
    }

    #[test]
    fn bad_urls_are_named_without_echoing_secrets() {
        for (url, expect) in [
            ("127.0.0.1:6379", "missing scheme"),
            ("http://x:1", "unknown scheme"),
            ("redis+cluster://a:7000,,b:7001", "empty host"),
            ("redis+cluster://a", "not host:port"),
            ("redis+cluster://a:7000/1", "no path"),
            ("redis+sentinel://:secret@s:26379", "primary's name"),
            ("redis+sentinel://s:26379/m/x", "not a number"),
        ] {
            let e = Topology::parse(url).unwrap_err();
            assert!(e.contains(expect), "{url}: {e}");
            assert!(!e.contains("secret"), "{url}: {e}");
        }
    }

    #[tokio::test]
    async fn backends_build_without_connecting() {
        for url in [
            "redis://127.0.0.1:1",
            "redis+cluster://127.0.0.1:1,127.0.0.1:2",
            "redis+sentinel://127.0.0.1:1/m",
        ] {
            let t = Topology::parse(url).unwrap();
            Backend::new(&t, Duration::from_millis(50)).unwrap_or_else(|e| panic!("{url}: {e}"));
        }
    }
}
