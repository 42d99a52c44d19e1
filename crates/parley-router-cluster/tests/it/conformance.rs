//! What every router promises, checked against each implementation by `router_tests!`: the
//! in-process router (three names for one router) and the cluster router (three nodes over
//! NATS and Redis in this process).

use parley_core::ids::{ConversationId, DeviceId, Seq, UserId};
use parley_router::Kick;

use crate::support::*;

macro_rules! router_tests {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test]
                async fn $name() {
                    let nodes = crate::support::Nodes::local().await;
                    super::$name(&nodes).await;
                    nodes.cleanup().await;
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let nodes = crate::support::Nodes::cluster().await;
                    super::$name(&nodes).await;
                    nodes.cleanup().await;
                }
            )*
        }
    };
}

router_tests!(
    delivers_to_local_connections,
    delivers_to_every_node_a_user_is_on,
    one_node_message_per_node_not_per_recipient,
    keeps_order_per_recipient,
    unregistered_connections_get_nothing,
    a_full_queue_kicks_wherever_it_is,
    kicks_only_the_named_device_on_any_node,
    online_anywhere_is_online_everywhere,
    flush_resolves_after_delivery,
    durable_delivery_reaches_everyone,
    counts_only_this_nodes_connections,
);

async fn delivers_to_local_connections(n: &Nodes) {
    let mut x = Conn::on(&n.a, 10, 100).await;
    let mut y = Conn::on(&n.a, 20, 200).await;
    n.a.deliver(&u(&[10]), &frame("hello"));
    assert_eq!(&x.next().await.json[..], b"hello");
    y.nothing().await;
}

async fn delivers_to_every_node_a_user_is_on(n: &Nodes) {
    // User 10 has a device on a and one on b; user 20 one on c; user 30 is offline.
    let mut x1 = Conn::on(&n.a, 10, 100).await;
    let mut x2 = Conn::on(&n.b, 10, 101).await;
    let mut y = Conn::on(&n.c, 20, 200).await;
    let mut z = Conn::on(&n.c, 40, 400).await;
    let f = message(1, 1);
    n.a.deliver(&u(&[10, 20, 30]), &f);
    for c in [&mut x1, &mut x2, &mut y] {
        let got = c.next().await;
        assert_eq!(got.json, f.json);
        assert_eq!(got.position, f.position, "the log position travels with the frame");
    }
    z.nothing().await;
    x1.nothing().await;
}

async fn one_node_message_per_node_not_per_recipient(n: &Nodes) {
    let mut on_b = Vec::new();
    let mut on_c = Vec::new();
    for u in 0..25 {
        on_b.push(Conn::on(&n.b, 1000 + u, 10_000 + u).await);
        on_c.push(Conn::on(&n.c, 2000 + u, 20_000 + u).await);
    }
    let users: Vec<i64> = (0..25).flat_map(|u| [1000 + u, 2000 + u]).collect();
    n.a.flush().await.unwrap();
    let before = n.a.stats();
    let before_b = n.b.stats();
    n.a.deliver(&u(&users), &frame("to fifty people"));
    n.a.flush().await.unwrap();
    for c in on_b.iter_mut().chain(on_c.iter_mut()) {
        assert_eq!(&c.next().await.json[..], b"to fifty people");
    }
    let after = n.a.stats();
    if n.distributed() {
        assert_eq!(after.node_messages_published - before.node_messages_published, 2, "one per destination node");
        assert_eq!(n.b.stats().node_messages_received - before_b.node_messages_received, 1);
        assert_eq!(after.directory_lookups - before.directory_lookups, 1, "one batched lookup");
    } else {
        assert_eq!(after, before, "the in-process router has nothing to publish");
    }
}

async fn keeps_order_per_recipient(n: &Nodes) {
    let mut x = Conn::on(&n.b, 10, 100).await;
    let mut y = Conn::on(&n.a, 20, 200).await;
    for seq in 1..=200 {
        n.a.deliver(&u(&[10, 20]), &message(7, seq));
    }
    for c in [&mut x, &mut y] {
        for seq in 1..=200 {
            assert_eq!(c.next().await.position.unwrap().seq, Seq(seq));
        }
    }
}

async fn unregistered_connections_get_nothing(n: &Nodes) {
    let mut x = Conn::on(&n.b, 10, 100).await;
    let mut keep = Conn::on(&n.b, 10, 101).await;
    n.b.unregister(UserId(10), x.handle.id);
    n.a.deliver(&u(&[10]), &frame("after"));
    assert_eq!(&keep.next().await.json[..], b"after");
    x.nothing().await;
    assert_eq!(n.b.connection_count(), 1);
}

async fn a_full_queue_kicks_wherever_it_is(n: &Nodes) {
    let slow = Conn::new(10, 100, 2);
    n.b.register(slow.handle.clone()).await;
    let mut slow = slow;
    for i in 0..3 {
        n.a.deliver(&u(&[10]), &frame(&format!("f{i}")));
    }
    assert_eq!(slow.kick().await, Kick::TooSlow);
}

async fn kicks_only_the_named_device_on_any_node(n: &Nodes) {
    let mut keep = Conn::on(&n.b, 10, 100).await;
    let mut gone = Conn::on(&n.c, 10, 101).await;
    n.a.kick_device(UserId(10), DeviceId(101), Kick::Revoked);
    assert_eq!(gone.kick().await, Kick::Revoked);
    keep.no_kick().await;
}

async fn online_anywhere_is_online_everywhere(n: &Nodes) {
    assert!(!n.a.is_online(UserId(10)).await);
    let x = Conn::on(&n.b, 10, 100).await;
    assert!(n.a.is_online(UserId(10)).await);
    assert!(n.b.is_online(UserId(10)).await);
    n.b.unregister(UserId(10), x.handle.id);
    // The test nodes have no presence grace period: offline once the directory says so.
    eventually("offline everywhere", || async { !n.a.is_online(UserId(10)).await }).await;
    assert!(!n.b.is_online(UserId(10)).await);
}

async fn flush_resolves_after_delivery(n: &Nodes) {
    let mut x = Conn::on(&n.b, 10, 100).await;
    n.a.deliver(&u(&[10]), &frame("one"));
    n.a.flush().await.expect("flushed");
    assert_eq!(&x.next().await.json[..], b"one");
}

async fn durable_delivery_reaches_everyone(n: &Nodes) {
    let mut conns = Vec::new();
    for u in 0..10 {
        let node = [&n.a, &n.b, &n.c][u as usize % 3];
        conns.push(Conn::on(node, 100 + u, 1000 + u).await);
    }
    let users: Vec<i64> = (100..110).collect();
    let frames: Vec<_> = (1..=5).map(|seq| message(9, seq)).collect();
    for f in &frames {
        match n.a.deliver_durably(ConversationId(9), u(&users), f) {
            Some(ack) => ack.await.expect("job stored"),
            // No durable queue: the caller delivers.
            None => n.a.deliver(&u(&users), f),
        }
    }
    for c in &mut conns {
        for seq in 1..=5 {
            assert_eq!(c.next().await.position.unwrap().seq, Seq(seq), "in order");
        }
    }
}

async fn counts_only_this_nodes_connections(n: &Nodes) {
    let _x = Conn::on(&n.a, 10, 100).await;
    let _y = Conn::on(&n.b, 20, 200).await;
    let _z = Conn::on(&n.b, 20, 201).await;
    if n.distributed() {
        assert_eq!((n.a.connection_count(), n.b.connection_count(), n.c.connection_count()), (1, 2, 0));
    } else {
        assert_eq!(n.a.connection_count(), 3);
    }
}
