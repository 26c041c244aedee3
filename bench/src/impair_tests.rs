//! Tests of the impairment proxy (`impair.rs`), kept out of that file because the
//! end-to-end tests include it: tests there would run again in every test binary.

use std::{net::SocketAddr, time::Duration};

use tokio::{net::UdpSocket, time::Instant};

use crate::impair::{Impairment, Proxy};

/// A UDP echo server on loopback; returns its address.
async fn echo() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = socket.local_addr().expect("echo addr");
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    addr
}

async fn client(proxy: &Proxy) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind client");
    socket.connect(proxy.addr).await.expect("connect");
    socket
}

/// Sends `n` numbered packets, then collects echoes until `quiet` passes without one.
async fn round_trips(socket: &UdpSocket, n: u32, quiet: Duration) -> Vec<u32> {
    for i in 0..n {
        socket.send(&i.to_le_bytes()).await.expect("send");
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 16];
    while let Ok(Ok(len)) = tokio::time::timeout(quiet, socket.recv(&mut buf)).await {
        if let Some(b) = buf.get(..len).and_then(|b| <[u8; 4]>::try_from(b).ok()) {
            got.push(u32::from_le_bytes(b));
        }
    }
    got
}

#[tokio::test]
async fn clean_link_forwards_everything_in_order_until_cut() {
    let proxy = Proxy::start(echo().await, Impairment::CLEAN, 1)
        .await
        .expect("proxy");
    let socket = client(&proxy).await;
    let got = round_trips(&socket, 100, Duration::from_millis(300)).await;
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    proxy.cut();
    assert!(round_trips(&socket, 10, Duration::from_millis(200))
        .await
        .is_empty());
    proxy.restore();
    assert_eq!(
        round_trips(&socket, 3, Duration::from_millis(300)).await,
        [0, 1, 2]
    );
    let (passed, dropped) = proxy.counts();
    assert_eq!((passed, dropped), (206, 10));
}

#[tokio::test]
async fn loss_drops_about_the_share_asked_each_way() {
    let lossy = Impairment {
        loss: 0.2,
        ..Impairment::CLEAN
    };
    let proxy = Proxy::start(echo().await, lossy, 7).await.expect("proxy");
    let socket = client(&proxy).await;
    let mut got = 0;
    // In small bursts, so neither the kernel nor the echo server drops anything.
    for _ in 0..20 {
        got += round_trips(&socket, 100, Duration::from_millis(100))
            .await
            .len();
    }
    // 2 000 sent; 0.8 * 0.8 of them come back.
    assert!((1_100..=1_450).contains(&got), "{got} of 2000 came back");
    let (passed, dropped) = proxy.counts();
    let share = dropped as f64 / (passed + dropped) as f64;
    assert!((0.16..=0.24).contains(&share), "dropped share {share}");
}

#[tokio::test]
async fn delay_and_jitter_hold_packets_back() {
    let slow = Impairment {
        delay: Duration::from_millis(30),
        jitter: Duration::from_millis(20),
        ..Impairment::CLEAN
    };
    let proxy = Proxy::start(echo().await, slow, 3).await.expect("proxy");
    let socket = client(&proxy).await;
    let t0 = Instant::now();
    let got = round_trips(&socket, 50, Duration::from_millis(300)).await;
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..50).collect::<Vec<_>>(), "nothing lost");
    assert_ne!(got, sorted, "jitter reorders");
    // Two crossings of 30..50 ms each, and the 300 ms of quiet after the last one.
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(360), "{took:?}");
    assert!(took < Duration::from_millis(1_000), "{took:?}");
}

#[tokio::test]
async fn duplicates_arrive_twice() {
    let dup = Impairment {
        duplicate: 1.0,
        ..Impairment::CLEAN
    };
    let proxy = Proxy::start(echo().await, dup, 5).await.expect("proxy");
    let socket = client(&proxy).await;
    // Each way doubles: 4 copies of each packet.
    let got = round_trips(&socket, 5, Duration::from_millis(300)).await;
    assert_eq!(got.len(), 20);
}
