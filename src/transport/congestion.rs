//! A floor under QUIC's congestion window (`relay.min_congestion_window`): quinn's
//! CUBIC controller with its window never below a configured number of bytes.
//!
//! A loss-based controller reads every lost packet as congestion. On a lossy link (a
//! phone on Wi-Fi, 5 % random loss) it keeps shrinking a session's window towards two
//! packets, although a game's traffic is a few kilobytes a second and set by the game,
//! not by the path. Once the datagrams in flight to a player fill that window, the next
//! ones wait for acknowledgements (an RTT and the acknowledgement delay), and the
//! freshest state arrives a send interval late: measured in BENCHMARKS.md ("Through a
//! lossy link"), where the floor took the p99 latency of redundant datagrams at 5 % loss
//! from 75 ms back to 48 ms. A session also starts with at least the floor (CUBIC's own
//! first window is about 12 KB); above it CUBIC grows and shrinks as usual, so a sender
//! with more to send than the floor allows (a burst of large reliable messages) is
//! still paced by CUBIC's window.

use std::{any::Any, sync::Arc, time::Instant};

use quinn_proto::{
    congestion::{Controller, ControllerFactory, ControllerMetrics, CubicConfig},
    RttEstimator,
};

/// Builds [`Floored`] CUBIC controllers.
#[derive(Debug)]
pub(crate) struct FlooredCubic {
    floor: u64,
    cubic: Arc<CubicConfig>,
}

impl FlooredCubic {
    /// CUBIC with quinn's defaults whose window never falls below `floor` bytes.
    pub(crate) fn new(floor: u64) -> Self {
        Self {
            floor,
            cubic: Arc::new(CubicConfig::default()),
        }
    }
}

impl ControllerFactory for FlooredCubic {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(Floored {
            floor: self.floor,
            inner: self.cubic.clone().build(now, current_mtu),
        })
    }
}

/// A controller whose window is the inner one's, but at least `floor` bytes.
struct Floored {
    floor: u64,
    inner: Box<dyn Controller>,
}

impl Controller for Floored {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        self.inner.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        self.inner.on_ack(now, sent, bytes, app_limited, rtt);
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        self.inner
            .on_end_acks(now, in_flight, app_limited, largest_packet_num_acked);
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.inner
            .on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.inner.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        self.inner.window().max(self.floor)
    }

    fn metrics(&self) -> ControllerMetrics {
        let mut metrics = self.inner.metrics();
        metrics.congestion_window = self.window();
        metrics
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(Self {
            floor: self.floor,
            inner: self.inner.clone_box(),
        })
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window().max(self.floor)
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller(floor: u64) -> (Box<dyn Controller>, Box<dyn Controller>) {
        let now = Instant::now();
        let floored = Arc::new(FlooredCubic::new(floor)).build(now, 1200);
        let plain = Arc::new(CubicConfig::default()).build(now, 1200);
        (floored, plain)
    }

    /// One loss per round, as 5 % random loss causes: CUBIC falls to its minimum.
    fn lose_repeatedly(c: &mut dyn Controller) {
        let start = Instant::now();
        for i in 0..50u32 {
            let now = start + std::time::Duration::from_millis(100 * u64::from(i + 1));
            c.on_congestion_event(now, now, false, 1200);
        }
    }

    #[test]
    fn losses_never_take_the_window_below_the_floor() {
        let (mut floored, mut plain) = controller(8 << 10);
        // CUBIC starts above this floor, so at first the window is CUBIC's own.
        assert!(plain.window() > 8 << 10, "{}", plain.window());
        assert_eq!(floored.window(), plain.window());
        lose_repeatedly(floored.as_mut());
        lose_repeatedly(plain.as_mut());
        // CUBIC alone collapses to its minimum, two packets; the floor holds.
        assert_eq!(plain.window(), 2 * 1200);
        assert_eq!(floored.window(), 8 << 10);
        assert_eq!(floored.metrics().congestion_window, 8 << 10);
        // Persistent congestion too.
        let now = Instant::now();
        floored.on_congestion_event(now, now, true, 12_000);
        assert_eq!(floored.window(), 8 << 10);
        assert_eq!(floored.clone_box().window(), 8 << 10);
    }

    #[test]
    fn a_floor_above_cubics_first_window_holds_from_the_start() {
        let (mut floored, plain) = controller(32 << 10);
        assert!(plain.window() < 32 << 10, "{}", plain.window());
        assert_eq!(floored.window(), 32 << 10);
        lose_repeatedly(floored.as_mut());
        assert_eq!(floored.window(), 32 << 10);
        assert_eq!(floored.metrics().congestion_window, 32 << 10);
        // Persistent congestion too.
        let now = Instant::now();
        floored.on_congestion_event(now, now, true, 12_000);
        assert_eq!(floored.window(), 32 << 10);
        assert_eq!(floored.clone_box().window(), 32 << 10);
    }

    #[test]
    fn above_the_floor_the_window_is_cubics() {
        let (floored, plain) = controller(1200);
        assert_eq!(floored.window(), plain.window());
        assert_eq!(floored.initial_window(), plain.initial_window());
        let (floored, plain) = controller(1 << 20);
        assert_eq!(floored.initial_window(), 1 << 20);
        assert!(plain.initial_window() < 1 << 20);
    }
}
