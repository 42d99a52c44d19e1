//! What only the cluster router has: entries that expire, presence and invalidations across
//! nodes, and recovery when NATS or Redis connections break or Redis loses its data.

use parley_core::ids::{ConversationId, Seq, UserId};
use std::sync::Arc;
use std::time::Duration;

use parley_router::{ClusterBus, ClusterEvent, Kick, PresenceState, Router};
use parley_router_cluster::ClusterRouter;
use tokio::sync::mpsc;

use crate::support::*;

struct Cluster {
    name: String,
    nodes: Vec<Arc<ClusterRouter>>,
}

impl Cluster {
    async fn start(n: usize) -> Cluster {
        let name = cluster_name();
        let mut nodes = Vec::new();
        for i in 0..n {
            nodes.push(Arc::new(ClusterRouter::connect(config(&name, &format!("n{i}"))).await.expect("connect")));
        }
        Cluster { name, nodes }
    }

    fn router(&self, i: usize) -> Arc<dyn Router> {
        self.nodes[i].clone()
    }

    async fn cleanup(self) {
        stop_and_purge(&self.name, &self.nodes, &nats_url(), &redis_url()).await;
    }
}

/// The next presence event about `user`.
async fn presence_of(events: &mut mpsc::Receiver<ClusterEvent>, user: i64) -> PresenceState {
    loop {
        match tokio::time::timeout(WAIT, events.recv()).await.expect("an event in time").expect("open") {
            ClusterEvent::Presence { state, .. } if state.user_id == UserId(user) => return state,
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_of_a_node_that_stops_refreshing_expire() {
    let c = Cluster::start(2).await;
    let (a, b) = (c.router(0), c.router(1));
    let mut events = c.nodes[0].take_events().unwrap();
    let _x = Conn::on(&b, 10, 100).await;
    assert!(presence_of(&mut events, 10).await.online);
    assert!(a.is_online(UserId(10)).await);
    // b dies: nothing refreshes its entries any more.
    c.nodes[1].halt();
    let gone = presence_of(&mut events, 10).await;
    assert!(!gone.online, "a's sweeper marks the user offline once b's entry ran out");
    assert!(gone.last_seen.is_some());
    assert!(!a.is_online(UserId(10)).await);
    // Nothing is routed to the dead node any more.
    let before = a.stats();
    a.deliver(&u(&[10]), &frame("anyone?"));
    a.flush().await.unwrap();
    assert_eq!(a.stats().node_messages_published, before.node_messages_published);
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_spans_nodes_with_versions() {
    let c = Cluster::start(2).await;
    let (a, b) = (c.nodes[0].clone(), c.router(1));
    let mut events = a.take_events().unwrap();
    let mut b_events = c.nodes[1].take_events().unwrap();
    let x = Conn::on(&b, 10, 100).await;
    let online = presence_of(&mut events, 10).await;
    assert!(online.online);
    // A second device elsewhere changes nothing.
    let y = Conn::on(&c.router(0), 10, 101).await;
    b.unregister(UserId(10), x.handle.id);
    assert_eq!(c.nodes[1].went_offline(UserId(10), 1_000).await.unwrap(), None, "still on a");
    let at = parley_core::now_ms();
    a.unregister(UserId(10), y.handle.id);
    // The grace period is zero in tests: a's timer would fire now.
    // Polled (bounded): the unregistration reaches Redis through the directory task.
    let deadline = tokio::time::Instant::now() + WAIT;
    let offline = loop {
        if let Some(s) = a.went_offline(UserId(10), at).await.unwrap() {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "never recorded offline");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!offline.online);
    assert!(offline.last_seen.unwrap() >= at);
    assert!(offline.version > online.version);
    let states = a.presence(&u(&[10, 11])).await.unwrap();
    assert_eq!(states[0], offline);
    assert!(!states[1].online && states[1].last_seen.is_none());
    // b hears about a's changes too, in version order.
    let _z = Conn::on(&c.router(0), 10, 102).await;
    let mut last = 0;
    let back = loop {
        let s = presence_of(&mut b_events, 10).await;
        assert!(s.version > last, "versions only grow");
        last = s.version;
        if s.online && s.version > offline.version {
            break s;
        }
    };
    assert_eq!(presence_of(&mut events, 10).await, back, "a tells itself what it tells b");
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_and_privacy_reach_other_nodes() {
    let c = Cluster::start(2).await;
    let mut events = c.nodes[1].take_events().unwrap();
    c.nodes[0].members_changed(ConversationId(77), Some(UserId(8)));
    c.nodes[0].visibility_changed(UserId(5), false);
    let mut got = Vec::new();
    while got.len() < 2 {
        let e = tokio::time::timeout(WAIT, events.recv()).await.unwrap().unwrap();
        if matches!(e, ClusterEvent::MembersChanged { .. } | ClusterEvent::Visibility { .. }) {
            got.push(e);
        }
    }
    assert!(
        got.contains(&ClusterEvent::MembersChanged { conversation_id: ConversationId(77), removed: Some(UserId(8)) })
    );
    assert!(got.contains(&ClusterEvent::Visibility { user_id: UserId(5), visible: false }));
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_after_its_connections_drop() {
    let c = Cluster::start(2).await;
    let (a, b) = (c.router(0), c.router(1));
    let mut x = Conn::on(&b, 10, 100).await;
    c.nodes[1].drop_connections().await.unwrap();
    c.nodes[0].drop_connections().await.unwrap();
    // b's connection is told to resync: frames sent to b meanwhile may be lost.
    x.kick_of(Kick::Resync).await;
    // Live delivery comes back by itself.
    let mut n = 0;
    loop {
        n += 1;
        a.deliver(&u(&[10]), &message(3, n));
        if let Ok(Some(f)) = tokio::time::timeout(Duration::from_millis(200), x.frames.recv()).await {
            assert!(f.position.is_some());
            break;
        }
        assert!(n < 50, "delivery did not come back");
    }
    // The first flush after a dropped connection cannot promise what it covers; later ones do.
    let _ = a.flush().await;
    a.deliver(&u(&[10]), &frame("after"));
    a.flush().await.expect("flush after recovery");
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reregisters_everyone_when_redis_loses_its_data() {
    let c = Cluster::start(2).await;
    let (a, b) = (c.router(0), c.router(1));
    let mut x = Conn::on(&b, 10, 100).await;
    c.nodes[0].forget_directory().await.unwrap();
    // Until b notices, a finds nobody.
    c.nodes[1].refresh_now().await.unwrap();
    x.kick_of(Kick::Resync).await;
    a.deliver(&u(&[10]), &frame("found you"));
    assert_eq!(&x.next().await.json[..], b"found you");
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_report_round_trips() {
    let c = Cluster::start(1).await;
    let probes = c.router(0).probe().await;
    let names: Vec<_> = probes.iter().map(|p| p.dependency).collect();
    assert_eq!(names, ["nats", "redis"]);
    for p in probes {
        assert!(p.result.is_ok(), "{}: {:?}", p.dependency, p.result);
    }
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_taken_by_a_node_that_dies_is_done_by_another() {
    let name = cluster_name();
    let mut cfg = config(&name, "sender");
    cfg.consume_jobs = false;
    let sender = Arc::new(ClusterRouter::connect(cfg).await.unwrap());
    sender.deliver_durably(ConversationId(5), vec![UserId(10)], &message(5, 1)).unwrap().await.expect("stored");
    // A node takes the job and dies before acknowledging it (played here by a bare consumer).
    let js = async_nats::jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    let stream = js.get_stream(format!("PARLEY_FANOUT_{name}")).await.unwrap();
    let mut taken = false;
    for shard in 0..8 {
        let consumer: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer(&format!("fanout-{shard}")).await.unwrap();
        let mut batch = consumer.fetch().max_messages(1).expires(Duration::from_millis(200)).messages().await.unwrap();
        if let Some(Ok(_unacked)) = futures_util::StreamExt::next(&mut batch).await {
            taken = true;
            break;
        }
    }
    assert!(taken, "the job was in the queue");
    // Another node carries it out once the ack wait (2 s in tests) has passed.
    let survivor = Arc::new(ClusterRouter::connect(config(&name, "survivor")).await.unwrap());
    let mut x = Conn::on(&(survivor.clone() as Arc<dyn Router>), 10, 100).await;
    assert_eq!(x.next().await.position.unwrap().seq, Seq(1), "delivered by the survivor");
    eventually("the survivor acknowledged the job", || async { survivor.stats().jobs_done == 1 }).await;
    stop_and_purge(&name, &[sender, survivor], &nats_url(), &redis_url()).await;
}
