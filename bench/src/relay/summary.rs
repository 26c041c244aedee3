//! What `relay` prints: one line (or JSON object) per run, the median ratios of
//! `--compare`, and the sustained points of `--sweep`. A ratio or a sustained point
//! read off a run whose load generator saturated first (`client_bound`) says so.

use super::{run_once, Args, RunResult, Transport};

pub(super) fn print(result: &RunResult, json: bool) {
    if json {
        println!("{}", serde_json::to_string(result).unwrap_or_default());
        return;
    }
    let link = if result.link_loss_pct > 0.0
        || result.link_delay_ms > 0.0
        || result.link_jitter_ms > 0.0
    {
        format!(
            " | link loss {}%{} delay {} ms jitter {} ms (dropped {:.2}%)",
            result.link_loss_pct,
            if result.loss_downlink_receivers > 0 {
                format!(
                    " (downlink of {} receiver(s) per match only)",
                    result.loss_downlink_receivers
                )
            } else {
                String::new()
            },
            result.link_delay_ms,
            result.link_jitter_ms,
            result.link_dropped_pct
        )
    } else {
        String::new()
    };
    let cores = match result.client_bound {
        Some(bound) => format!(
            " | cores server {:?} {:.0}% busy, clients {:?} {:.0}% busy{}",
            result.server_cpus,
            result.server_cores_busy_pct,
            result.client_cpus,
            result.client_cores_busy_pct,
            if bound { " CLIENT-BOUND" } else { "" }
        ),
        None => " | cores shared".to_owned(),
    };
    println!(
        "{:<13} M={:<4} P={} B={} R={}{} | offered {:>8.0}/s delivered {:>8.0}/s loss {:>5.2}% | p50 {:>6} us p99 {:>7} us p99.9 {:>7} us max {:>7} us | stale p50 {:>6} us p99 {:>7} us p99.9 {:>7} us | server {:>5.1}% CPU {:>6.2} us/delivery | client {:>5.1}%{} | busy before {:>4.1}% during {:>4.1}%{}",
        format!("{:?}", result.transport),
        result.matches,
        result.players,
        result.payload,
        result.rate,
        if result.reliable {
            " reliable".to_owned()
        } else {
            let mut s = String::new();
            if result.redundancy > 0 {
                s += &format!(" redundancy {}", result.redundancy);
            }
            if let Some(ms) = result.repeat_after_ms {
                s += &format!(" repeat {ms}ms x{}", result.repeats);
            }
            s
        },
        result.offered_per_s,
        result.delivered_per_s,
        result.loss_pct,
        result.p50_us,
        result.p99_us,
        result.p999_us,
        result.max_us,
        result.staleness_p50_us,
        result.staleness_p99_us,
        result.staleness_p999_us,
        result.server_cpu_pct,
        result.server_us_per_delivery,
        result.client_cpu_pct,
        cores,
        result.busy_before_pct,
        result.busy_during_pct,
        link,
    );
    println!(
        "  {}{}{}{}",
        result
            .server_cpu_quota_pct
            .map_or(String::new(), |q| format!(
                "server CPU quota {q}% of a core | "
            )),
        result
            .server_socket_buffer
            .map_or(String::new(), |b| format!("server socket buffer {b} B | ")),
        result
            .client_socket_buffer
            .map_or(String::new(), |b| format!("client socket buffers {b} B | ")),
        result.drops.line()
    );
    if let (Some(imp), Some(other)) = (&result.impaired_receivers, &result.other_receivers) {
        let group = |g: &super::GroupLatency| {
            format!(
                "p50 {:>6} us p90 {:>7} us p99 {:>7} us p99.9 {:>7} us, late {:>5.2}%",
                g.p50_us, g.p90_us, g.p99_us, g.p999_us, g.late_pct
            )
        };
        println!(
            "  loss on the downlink of {} receiver(s) per match: to them {} | to the other {} {} | late = over {} us (1.2x the others' p99)",
            imp.receivers,
            group(imp),
            other.receivers,
            group(other),
            result.late_us,
        );
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// A sustained operating point: no more than 1% loss and p99 under 20 ms.
fn sustained(r: &RunResult) -> bool {
    r.loss_pct <= 1.0 && r.p99_us <= 20_000
}

/// The transports a comparison or sweep runs, quicmatch first, then the raw-UDP
/// baseline (unless `--reliable`: it has no reliable path), then the extra baselines.
fn transports(args: &Args) -> anyhow::Result<Vec<Transport>> {
    anyhow::ensure!(
        !(args.reliable && args.with_proto),
        "--reliable: the quinn-proto relay has no reliable path"
    );
    let mut t = vec![Transport::Quicmatch];
    if args.server_transport == super::ServerTransport::Both {
        t.push(Transport::QuicmatchProto);
    }
    if !args.reliable {
        t.push(Transport::UdpBaseline);
    }
    if args.with_quinn {
        t.push(Transport::QuinnBaseline);
    }
    if args.with_quinn_default_acks {
        t.push(Transport::QuinnDefaultAcks);
    }
    if args.with_proto {
        t.push(Transport::ProtoBaseline);
    }
    anyhow::ensure!(
        t.len() >= 2,
        "--reliable needs a baseline with a reliable path: --with-quinn or --with-quinn-default-acks"
    );
    Ok(t)
}

/// The JSON key part and the printed name of a transport.
fn names(t: Transport) -> (&'static str, &'static str) {
    match t {
        Transport::Quicmatch => ("quicmatch", "quicmatch"),
        Transport::QuicmatchProto => ("quicmatch_proto", "quicmatch (proto)"),
        Transport::UdpBaseline => ("udp", "baseline"),
        Transport::QuinnBaseline => ("quinn", "plain quinn"),
        Transport::ProtoBaseline => ("proto", "quinn-proto"),
        Transport::QuinnDefaultAcks => ("quinn_default_acks", "plain quinn, default ACKs"),
    }
}

/// Median ratios of `a`'s figures over `b`'s, and whether any of those runs measured
/// its load generator.
fn ratios(a: &[RunResult], b: &[RunResult]) -> serde_json::Value {
    let m = |v: &[RunResult], f: fn(&RunResult) -> f64| median(v.iter().map(f).collect());
    let ratio = |f: fn(&RunResult) -> f64| {
        let base = m(b, f);
        if base == 0.0 {
            0.0
        } else {
            m(a, f) / base
        }
    };
    serde_json::json!({
        "p50_ratio": ratio(|r| r.p50_us as f64),
        "p99_ratio": ratio(|r| r.p99_us as f64),
        "p999_ratio": ratio(|r| r.p999_us as f64),
        "staleness_p99_ratio": ratio(|r| r.staleness_p99_us as f64),
        "delivered_ratio": ratio(|r| r.delivered_per_s),
        "server_us_per_delivery_ratio": ratio(|r| r.server_us_per_delivery),
        "client_bound": a.iter().chain(b).any(|r| r.client_bound == Some(true)),
    })
}

fn print_ratios(label: &str, rounds: usize, r: &serde_json::Value) {
    let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
    println!(
        "ratios ({label}, medians of {rounds}): p50 {:.2}x, p99 {:.2}x, p99.9 {:.2}x, staleness p99 {:.2}x, delivered {:.2}x, server CPU per delivery {:.2}x{}",
        f("p50_ratio"),
        f("p99_ratio"),
        f("p999_ratio"),
        f("staleness_p99_ratio"),
        f("delivered_ratio"),
        f("server_us_per_delivery_ratio"),
        if r["client_bound"].as_bool() == Some(true) {
            " (CLIENT-BOUND runs: these measure the load generator)"
        } else {
            ""
        },
    );
}

pub(super) async fn compare(args: &Args) -> anyhow::Result<()> {
    let kinds = transports(args)?;
    let mut results: Vec<Vec<RunResult>> = vec![Vec::new(); kinds.len()];
    for _ in 0..args.rounds.max(1) {
        for (i, t) in kinds.iter().enumerate() {
            let r = run_once(args, *t).await?;
            print(&r, args.json);
            results[i].push(r);
        }
    }
    let udp = kinds.iter().position(|t| *t == Transport::UdpBaseline);
    let mut out = ratios(&results[0], &results[udp.unwrap_or(1)]);
    out["compare"] = if udp.is_some() {
        "quicmatch / udp-baseline (medians)".into()
    } else {
        format!("quicmatch / {} (medians)", names(kinds[1]).1).into()
    };
    out["rounds"] = args.rounds.into();
    let extra: Vec<_> = kinds
        .iter()
        .zip(&results)
        .skip(1)
        .filter(|(t, _)| **t != Transport::UdpBaseline)
        .collect();
    for (t, r) in &extra {
        let (short, _) = names(**t);
        out[format!("quicmatch_vs_{short}")] = ratios(&results[0], r);
        if let Some(u) = udp {
            out[format!("{short}_vs_udp")] = ratios(r, &results[u]);
        }
    }
    // With --server-transport both, the proto transport against every QUIC baseline too.
    let proto = kinds.iter().position(|t| *t == Transport::QuicmatchProto);
    let proto_extra: Vec<_> = extra
        .iter()
        .filter(|(t, _)| proto.is_some() && !t.is_quicmatch())
        .collect();
    if let Some(p) = proto {
        for (t, r) in &proto_extra {
            let (short, _) = names(**t);
            out[format!("quicmatch_proto_vs_{short}")] = ratios(&results[p], r);
        }
    }
    if args.json {
        println!("{out}");
        return Ok(());
    }
    if udp.is_some() {
        print_ratios("quicmatch / baseline", args.rounds, &out);
    }
    for (t, _) in &extra {
        let (short, long) = names(**t);
        print_ratios(
            &format!("quicmatch / {long}"),
            args.rounds,
            &out[format!("quicmatch_vs_{short}")],
        );
        if udp.is_some() {
            print_ratios(
                &format!("{long} / baseline"),
                args.rounds,
                &out[format!("{short}_vs_udp")],
            );
        }
    }
    for (t, _) in &proto_extra {
        let (short, long) = names(**t);
        print_ratios(
            &format!("quicmatch (proto) / {long}"),
            args.rounds,
            &out[format!("quicmatch_proto_vs_{short}")],
        );
    }
    Ok(())
}

/// One transport's sweep: every run, the best sustained run that measured the server,
/// and the first M whose load generator saturated first.
struct Swept {
    transport: Transport,
    top: Option<RunResult>,
    client_bound_from: Option<usize>,
}

pub(super) async fn sweep(args: &Args) -> anyhow::Result<()> {
    let mut swept = Vec::new();
    let mut all: Vec<RunResult> = Vec::new();
    for t in transports(args)? {
        let mut m = args.matches.max(1);
        let mut s = Swept {
            transport: t,
            top: None,
            client_bound_from: None,
        };
        // Runs past the first point that was not sustained (see `--beyond`).
        let mut past = 0;
        while m <= args.sweep_max {
            let mut a = args.clone();
            a.matches = m;
            let r = run_once(&a, t).await?;
            print(&r, args.json);
            all.push(r.clone());
            let client_bound = r.client_bound == Some(true);
            if client_bound && s.client_bound_from.is_none() {
                s.client_bound_from = Some(m);
            }
            if !sustained(&r) {
                past += 1;
                if past > args.beyond {
                    break;
                }
            } else if past == 0
                && !client_bound
                && s.top
                    .as_ref()
                    .is_none_or(|b| r.delivered_per_s > b.delivered_per_s)
            {
                s.top = Some(r);
            }
            m = (m * 3).div_ceil(2);
        }
        swept.push(s);
    }
    let mut summary = Vec::new();
    for s in &swept {
        let top = s.top.as_ref();
        let obj = serde_json::json!({
            "transport": s.transport,
            "sustained_delivered_per_s": top.map_or(0.0, |r| r.delivered_per_s),
            "at_matches": top.map_or(0, |r| r.matches),
            "server_us_per_delivery": top.map_or(0.0, |r| r.server_us_per_delivery),
            "client_bound_from_matches": s.client_bound_from,
        });
        if args.json {
            println!("{obj}");
        } else {
            println!(
                "{:?}: sustained {:.0} deliveries/s at M={} ({:.2} us server CPU per delivery){}",
                s.transport,
                obj["sustained_delivered_per_s"].as_f64().unwrap_or(0.0),
                obj["at_matches"],
                obj["server_us_per_delivery"].as_f64().unwrap_or(0.0),
                s.client_bound_from.map_or(String::new(), |m| format!(
                    "; the load generator saturated first from M={m} (not counted)"
                )),
            );
        }
        summary.push(obj);
    }
    let rate = |i: usize| {
        summary
            .get(i)
            .and_then(|o| o["sustained_delivered_per_s"].as_f64())
            .unwrap_or(0.0)
    };
    if !args.json {
        let udp = swept
            .iter()
            .position(|s| s.transport == Transport::UdpBaseline);
        if let Some(u) = udp.filter(|&u| rate(u) > 0.0) {
            println!(
                "sustained ratio quicmatch / baseline: {:.2}x",
                rate(0) / rate(u)
            );
        }
        for (i, s) in swept.iter().enumerate().skip(1) {
            if s.transport == Transport::UdpBaseline || rate(i) <= 0.0 {
                continue;
            }
            let (_, long) = names(s.transport);
            println!(
                "sustained ratio quicmatch / {long}: {:.2}x",
                rate(0) / rate(i)
            );
            if let Some(u) = udp.filter(|&u| rate(u) > 0.0) {
                println!(
                    "sustained ratio {long} / baseline: {:.2}x",
                    rate(i) / rate(u)
                );
            }
        }
    }
    if let Some(path) = &args.chart {
        crate::chart::draw(path, &all)?;
        if !args.json {
            println!("chart written to {}", path.display());
        }
    }
    Ok(())
}
