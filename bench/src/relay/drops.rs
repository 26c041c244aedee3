//! Where a run's datagrams were dropped: the kernel's UDP receive buffers (machine-wide
//! counters from `/proc/net/snmp` and `/proc/net/snmp6`, and per socket from the `drops`
//! column of `/proc/net/udp` and `/proc/net/udp6`: the server's socket apart from this
//! process's, the load generator's), and the quicmatch server's own drops, scraped from
//! its Prometheus metrics (`quicmatch_datagrams_dropped_total{reason=...}`).
//!
//! Each figure is the change between a snapshot at the start of the measurement window
//! and one after the last messages of the window had time to arrive.

use std::{
    collections::{BTreeMap, HashSet},
    io::{Read as _, Write as _},
    net::SocketAddr,
    time::Duration,
};

use serde::Serialize;

/// The machine's UDP counters: `RcvbufErrors` and `InErrors` of the `Udp:` lines of
/// `/proc/net/snmp`, `Udp6RcvbufErrors` and `Udp6InErrors` of `/proc/net/snmp6` (absent
/// without IPv6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct UdpCounters {
    pub(crate) rcvbuf_errors: u64,
    pub(crate) in_errors: u64,
    pub(crate) udp6_rcvbuf_errors: Option<u64>,
    pub(crate) udp6_in_errors: Option<u64>,
}

/// `field` of the `Udp:` table of `/proc/net/snmp` (a header line of names, then a line
/// of values).
pub(crate) fn parse_snmp(text: &str, field: &str) -> Option<u64> {
    let mut rows = text.lines().filter_map(|l| l.strip_prefix("Udp:"));
    let names = rows.next()?;
    let values = rows.next()?;
    let at = names.split_whitespace().position(|n| n == field)?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// `field` of `/proc/net/snmp6` (one `name value` pair a line).
pub(crate) fn parse_snmp6(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut parts = l.split_whitespace();
        (parts.next()? == field).then(|| parts.next()?.parse().ok())?
    })
}

impl UdpCounters {
    /// Now, or `None` where `/proc/net/snmp` cannot be read.
    pub(crate) fn read() -> Option<Self> {
        let v4 = std::fs::read_to_string("/proc/net/snmp").ok()?;
        let v6 = std::fs::read_to_string("/proc/net/snmp6").unwrap_or_default();
        Some(Self {
            rcvbuf_errors: parse_snmp(&v4, "RcvbufErrors")?,
            in_errors: parse_snmp(&v4, "InErrors")?,
            udp6_rcvbuf_errors: parse_snmp6(&v6, "Udp6RcvbufErrors"),
            udp6_in_errors: parse_snmp6(&v6, "Udp6InErrors"),
        })
    }
}

/// One UDP socket of `/proc/net/udp` or `/proc/net/udp6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SocketDrops {
    pub(crate) local_port: u16,
    pub(crate) inode: u64,
    /// Datagrams the kernel dropped for it since it was opened (mostly a full receive
    /// buffer).
    pub(crate) drops: u64,
}

/// The sockets of a `/proc/net/udp` (or `udp6`) table: after the header, each line is
/// `sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout
/// inode ref pointer drops`, addresses as `HEXIP:HEXPORT`.
pub(crate) fn parse_udp_table(text: &str) -> Vec<SocketDrops> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let port = f.get(1)?.rsplit_once(':')?.1;
            Some(SocketDrops {
                local_port: u16::from_str_radix(port, 16).ok()?,
                inode: f.get(9)?.parse().ok()?,
                drops: f.get(12)?.parse().ok()?,
            })
        })
        .collect()
}

/// Every UDP socket on the machine now (IPv4 and IPv6).
fn udp_sockets() -> Vec<SocketDrops> {
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|t| parse_udp_table(&t))
        .collect()
}

/// The inode of a `/proc/<pid>/fd/<n>` link target `socket:[inode]`.
pub(crate) fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The socket inodes this process holds open.
fn own_socket_inodes() -> HashSet<u64> {
    std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| socket_inode(&l.to_string_lossy()))
                .collect()
        })
        .unwrap_or_default()
}

/// The sum of every sample of counter `name` in Prometheus text, by the value of label
/// `label` (`""` for samples without it).
pub(crate) fn parse_counter(text: &str, name: &str, label: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once('}') {
                Some((labels, value)) => (labels, value),
                None => continue,
            },
            None if rest.starts_with(' ') => ("", rest),
            None => continue,
        };
        let Some(value) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        let key = labels
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| k.trim() == label)
            .map(|(_, v)| v.trim().trim_matches('"').to_owned())
            .unwrap_or_default();
        *out.entry(key).or_insert(0) += value as u64;
    }
    out
}

/// `GET /metrics` from `addr`, or `None` when it does not answer within 2 s.
/// A server's `/metrics` text, when it answers.
pub(crate) fn scrape(addr: SocketAddr) -> Option<String> {
    let timeout = Duration::from_secs(2);
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let (head, body) = body.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1) == Some("200")).then(|| body.to_owned())
}

/// The counters of one moment.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    udp: Option<UdpCounters>,
    /// Drops of the server's socket(s), and of this process's.
    server_socket: u64,
    client_sockets: u64,
    /// The server's datagram counters: drops by reason, in, out, and packets shed
    /// unread.
    server: Option<(BTreeMap<String, u64>, u64, u64, u64)>,
}

impl Snapshot {
    /// Now: the server listens on `server_port` (the sockets of this process on that
    /// port are not its own) and serves metrics at `metrics`, if any.
    pub(crate) async fn take(server_port: u16, metrics: Option<SocketAddr>) -> Self {
        let task = tokio::task::spawn_blocking(move || {
            let own = own_socket_inodes();
            let (mut server_socket, mut client_sockets) = (0, 0);
            for s in udp_sockets() {
                if own.contains(&s.inode) {
                    client_sockets += s.drops;
                } else if s.local_port == server_port {
                    server_socket += s.drops;
                }
            }
            let server = metrics.and_then(scrape).map(|text| {
                let total = |n: &str| parse_counter(&text, n, "").values().sum::<u64>();
                (
                    parse_counter(&text, "quicmatch_datagrams_dropped_total", "reason"),
                    total("quicmatch_datagrams_in_total"),
                    total("quicmatch_datagrams_out_total"),
                    total("quicmatch_io_stale_packets_total"),
                )
            });
            Self {
                udp: UdpCounters::read(),
                server_socket,
                client_sockets,
                server,
            }
        });
        task.await.unwrap_or_default()
    }
}

/// Where a run's datagrams were dropped, between two snapshots.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Drops {
    /// `/proc/net/snmp` `Udp: RcvbufErrors` and `InErrors`: every UDP socket on the
    /// machine (on loopback, the server's and the clients' alike), packets.
    pub(crate) kernel_rcvbuf_errors: u64,
    pub(crate) kernel_in_errors: u64,
    /// `/proc/net/snmp6` `Udp6RcvbufErrors` (absent without IPv6).
    pub(crate) kernel_udp6_rcvbuf_errors: Option<u64>,
    /// Of those, drops of the server's socket(s) (the `drops` column of
    /// `/proc/net/udp{,6}`): packets from the clients, each usually one message for
    /// `players - 1` receivers.
    pub(crate) kernel_server_socket_drops: u64,
    /// Drops of this process's sockets (the clients' endpoints and any proxy): packets
    /// from the server.
    pub(crate) kernel_client_socket_drops: u64,
    /// The quicmatch server's own datagram drops by `reason` (one per recipient; `stale`
    /// one per message received), when its metrics were scraped.
    pub(crate) server_dropped: Option<BTreeMap<String, u64>>,
    /// Deliveries those drops cost (a `stale` message counts `players - 1`).
    pub(crate) server_dropped_total: Option<u64>,
    /// Datagrams the server received and sent (`quicmatch_datagrams_in_total`, `_out`).
    pub(crate) server_datagrams_in: Option<u64>,
    pub(crate) server_datagrams_out: Option<u64>,
    /// Packets the server shed unread, stale (`quicmatch_io_stale_packets_total`,
    /// `proto`): data, acknowledgements and retransmissions alike, so not subtracted
    /// from `remaining_lost`.
    pub(crate) server_stale_packets: Option<u64>,
    /// Messages the receivers' SDK dropped itself, stale (waited past its
    /// `max_datagram_age` before the load generator read them), when the players use
    /// the SDK.
    pub(crate) client_stale: Option<u64>,
    /// Deliveries lost that the server did not count as its drops (the run's loss less
    /// `server_dropped_total`): lost in a kernel buffer on either side, in quinn's
    /// receive buffers (server or client), or still queued when the run ended.
    pub(crate) remaining_lost: u64,
    pub(crate) remaining_loss_pct: f64,
}

impl Drops {
    /// From `a` to `b`, for a run that expected `expected` deliveries and saw
    /// `delivered`, where one message is `fanout` deliveries.
    pub(crate) fn between(
        a: &Snapshot,
        b: &Snapshot,
        expected: u64,
        delivered: u64,
        fanout: u64,
    ) -> Self {
        let (ua, ub) = (a.udp.unwrap_or_default(), b.udp.unwrap_or_default());
        let udp6 = ua
            .udp6_rcvbuf_errors
            .zip(ub.udp6_rcvbuf_errors)
            .map(|(x, y)| y.saturating_sub(x));
        let server = a.server.as_ref().zip(b.server.as_ref()).map(|(x, y)| {
            let dropped: BTreeMap<String, u64> =
                y.0.iter()
                    .map(|(k, v)| (k.clone(), v.saturating_sub(*x.0.get(k).unwrap_or(&0))))
                    .filter(|(_, v)| *v > 0)
                    .collect();
            (
                dropped,
                y.1.saturating_sub(x.1),
                y.2.saturating_sub(x.2),
                y.3.saturating_sub(x.3),
            )
        });
        // Drops for age are per message received (`fanout` deliveries each); the
        // others are per recipient.
        let server_dropped_total = server.as_ref().map(|s| {
            s.0.iter()
                .map(|(reason, n)| if reason == "stale" { n * fanout } else { *n })
                .sum::<u64>()
        });
        let lost = expected.saturating_sub(delivered);
        // Packets shed unread are reported, not subtracted: among them are acknowledgements
        // and retransmissions as well as data, so they are no count of deliveries.
        let stale_packets = server.as_ref().map(|s| s.3);
        let remaining_lost = lost.saturating_sub(server_dropped_total.unwrap_or(0));
        Self {
            kernel_rcvbuf_errors: ub.rcvbuf_errors.saturating_sub(ua.rcvbuf_errors),
            kernel_in_errors: ub.in_errors.saturating_sub(ua.in_errors),
            kernel_udp6_rcvbuf_errors: udp6,
            kernel_server_socket_drops: b.server_socket.saturating_sub(a.server_socket),
            kernel_client_socket_drops: b.client_sockets.saturating_sub(a.client_sockets),
            server_datagrams_in: server.as_ref().map(|s| s.1),
            server_datagrams_out: server.as_ref().map(|s| s.2),
            server_stale_packets: stale_packets,
            server_dropped: server.map(|s| s.0),
            server_dropped_total,
            client_stale: None,
            remaining_lost,
            remaining_loss_pct: if expected == 0 {
                0.0
            } else {
                remaining_lost as f64 * 100.0 / expected as f64
            },
        }
    }

    /// With the receivers' own drops, which no longer count as lost elsewhere.
    pub(crate) fn with_client(mut self, stale: Option<u64>, expected: u64) -> Self {
        self.client_stale = stale;
        self.remaining_lost = self.remaining_lost.saturating_sub(stale.unwrap_or(0));
        self.remaining_loss_pct = if expected == 0 {
            0.0
        } else {
            self.remaining_lost as f64 * 100.0 / expected as f64
        };
        self
    }

    /// One line for the printed summary.
    pub(crate) fn line(&self) -> String {
        let server = match &self.server_dropped {
            Some(d) if d.is_empty() => "server dropped 0".to_owned(),
            Some(d) => format!(
                "server dropped {} ({})",
                self.server_dropped_total.unwrap_or(0),
                d.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => "server drops not scraped".to_owned(),
        };
        let server = match self.server_stale_packets {
            Some(n) if n > 0 => format!("{server}, shed {n} stale packets unread"),
            _ => server,
        };
        format!(
            "drops: kernel RcvbufErrors {} InErrors {}{} (server socket {}, client sockets {}) | {server} |{} lost elsewhere {} ({:.2}%)",
            self.kernel_rcvbuf_errors,
            self.kernel_in_errors,
            self.kernel_udp6_rcvbuf_errors
                .map_or(String::new(), |n| format!(" Udp6RcvbufErrors {n}")),
            self.kernel_server_socket_drops,
            self.kernel_client_socket_drops,
            self.client_stale
                .map_or(String::new(), |n| format!(" client SDK stale {n} |")),
            self.remaining_lost,
            self.remaining_loss_pct,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNMP: &str = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n\
Udp: 177293245 89619 8351250 186052740 8351249 0 0 0 0\n\
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n\
UdpLite: 0 0 7 0 7 0 0 0 0\n";

    #[test]
    fn snmp_fields_come_from_the_udp_table_not_udplite() {
        assert_eq!(parse_snmp(SNMP, "RcvbufErrors"), Some(8_351_249));
        assert_eq!(parse_snmp(SNMP, "InErrors"), Some(8_351_250));
        assert_eq!(parse_snmp(SNMP, "Forwarding"), None);
        assert_eq!(parse_snmp("Ip: A\nIp: 1\n", "RcvbufErrors"), None);
    }

    #[test]
    fn snmp6_fields_are_name_value_lines() {
        let text = "Udp6InDatagrams                 \t600\nUdp6InErrors                    \t3\nUdp6RcvbufErrors                \t2\nUdpLite6RcvbufErrors 9\n";
        assert_eq!(parse_snmp6(text, "Udp6RcvbufErrors"), Some(2));
        assert_eq!(parse_snmp6(text, "Udp6InErrors"), Some(3));
        assert_eq!(parse_snmp6(text, "Udp6MemErrors"), None);
    }

    #[test]
    fn udp_table_gives_port_inode_and_drops() {
        let text = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops            \n\
 9871: 0100007F:43C7 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 945175 2 0000000015f44a03 17        \n\
  103: 00000000000000000000000001000000:1CB6 00000000000000000000000000000000:0000 07 00000000:00001200 00:00000000 00000000  1000        0 42 2 0000000000000000 0\n";
        assert_eq!(
            parse_udp_table(text),
            [
                SocketDrops {
                    local_port: 0x43C7,
                    inode: 945_175,
                    drops: 17
                },
                SocketDrops {
                    local_port: 7350,
                    inode: 42,
                    drops: 0
                }
            ]
        );
        assert!(parse_udp_table("header only\n").is_empty());
    }

    #[test]
    fn socket_links_name_their_inode() {
        assert_eq!(socket_inode("socket:[945175]"), Some(945_175));
        assert_eq!(socket_inode("pipe:[12]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    #[test]
    fn prometheus_counters_sum_by_label() {
        let text = "# HELP quicmatch_datagrams_dropped_total Datagrams dropped\n\
# TYPE quicmatch_datagrams_dropped_total counter\n\
quicmatch_datagrams_dropped_total{reason=\"reader_behind\"} 12\n\
quicmatch_datagrams_dropped_total{reason=\"stale\",x=\"1\"} 3\n\
quicmatch_datagrams_dropped_total{x=\"2\",reason=\"stale\"} 4\n\
quicmatch_datagrams_dropped_total_extra 99\n\
quicmatch_datagrams_in_total 1000\n";
        let by = parse_counter(text, "quicmatch_datagrams_dropped_total", "reason");
        assert_eq!(by.get("reader_behind"), Some(&12));
        assert_eq!(by.get("stale"), Some(&7));
        assert_eq!(by.len(), 2);
        assert_eq!(
            parse_counter(text, "quicmatch_datagrams_in_total", "").get(""),
            Some(&1000)
        );
    }

    #[test]
    fn remaining_loss_is_what_the_server_did_not_count() {
        let at = |rcvbuf, server: u64, client, dropped: &[(&str, u64)], shed| Snapshot {
            udp: Some(UdpCounters {
                rcvbuf_errors: rcvbuf,
                in_errors: rcvbuf,
                udp6_rcvbuf_errors: Some(0),
                udp6_in_errors: Some(0),
            }),
            server_socket: server,
            client_sockets: client,
            server: Some((
                dropped.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
                10,
                20,
                shed,
            )),
        };
        let a = at(100, 5, 1, &[("reader_behind", 2)], 0);
        let b = at(160, 45, 21, &[("reader_behind", 12), ("stale", 30)], 0);
        let d = Drops::between(&a, &b, 1000, 900, 1);
        assert_eq!(d.kernel_rcvbuf_errors, 60);
        assert_eq!(d.kernel_server_socket_drops, 40);
        assert_eq!(d.kernel_client_socket_drops, 20);
        assert_eq!(d.server_dropped_total, Some(40));
        assert_eq!(
            d.server_dropped.as_ref().and_then(|m| m.get("stale")),
            Some(&30)
        );
        assert_eq!(d.remaining_lost, 60);
        assert!((d.remaining_loss_pct - 6.0).abs() < 1e-9);
        // A message dropped for age was one for each of `fanout` receivers.
        let b3 = at(160, 45, 21, &[("reader_behind", 12), ("stale", 20)], 0);
        let d = Drops::between(&a, &b3, 1000, 900, 3);
        assert_eq!((d.server_dropped_total, d.remaining_lost), (Some(70), 30));
        // Not scraped: all of the loss remains.
        let bare = Snapshot {
            server: None,
            ..b.clone()
        };
        let d = Drops::between(&a, &bare, 1000, 900, 3);
        assert_eq!((d.server_dropped_total, d.remaining_lost), (None, 100));
        // Packets shed unread are reported beside, not subtracted.
        let shed = at(160, 45, 21, &[("reader_behind", 12), ("stale", 30)], 10);
        let d = Drops::between(&a, &shed, 1000, 900, 1);
        assert_eq!((d.server_stale_packets, d.remaining_lost), (Some(10), 60));
    }
}
