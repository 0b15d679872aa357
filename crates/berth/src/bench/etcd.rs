//! `berth bench etcd`: puts per second against an etcd v3 cluster, driven the way
//! `bench throughput` drives Berth (closed loop, many callers over many connections), so
//! `scripts/bench-etcd.sh` can set the two side by side on the same machine.
//!
//! Only etcd's `KV/Put` and `Maintenance/Status` are called. Their messages are declared
//! here with the fields the benchmark reads: protobuf skips the rest, so no copy of etcd's
//! `.proto` files (and their gogoproto imports) is needed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rand::{Rng, SeedableRng};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

use super::Errors;

#[derive(Clone, PartialEq, prost::Message)]
struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    cluster_id: u64,
    #[prost(uint64, tag = "2")]
    member_id: u64,
    #[prost(int64, tag = "3")]
    revision: i64,
    #[prost(uint64, tag = "4")]
    raft_term: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PutResponse {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StatusRequest {}

#[derive(Clone, PartialEq, prost::Message)]
struct StatusResponse {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
    #[prost(string, tag = "2")]
    version: String,
    #[prost(uint64, tag = "4")]
    leader: u64,
}

#[derive(clap::Args)]
pub struct EtcdArgs {
    /// The members' client URLs, comma-separated (`http://127.0.0.1:2379,...`).
    #[arg(long, value_delimiter = ',', required = true)]
    pub endpoints: Vec<String>,
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    #[arg(long, default_value_t = 64)]
    pub conns: usize,
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Distinct keys the puts are drawn from.
    #[arg(long, default_value_t = 100_000)]
    pub key_space: u64,
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Send puts to the leader, or spread them over every member.
    #[arg(long, default_value = "leader")]
    pub via: String,
}

async fn call<Q, R>(ch: Channel, path: &'static str, req: Q) -> Result<R, tonic::Status>
where
    Q: prost::Message + Send + Sync + 'static,
    R: prost::Message + Default + Send + Sync + 'static,
{
    let mut g = tonic::client::Grpc::new(ch);
    g.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connection not ready: {e}")))?;
    let r = g
        .unary(
            tonic::Request::new(req),
            PathAndQuery::from_static(path),
            tonic_prost::ProstCodec::default(),
        )
        .await?;
    Ok(r.into_inner())
}

fn endpoint(url: &str) -> Result<Endpoint> {
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    Ok(Endpoint::from_shared(url.clone())
        .with_context(|| format!("endpoint {url}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .tcp_nodelay(true))
}

/// The endpoint whose member is the leader, waiting up to `within` for the cluster to
/// elect one; with it, the etcd version the members report.
async fn leader(endpoints: &[String], within: Duration) -> Result<(String, String)> {
    let deadline = Instant::now() + within;
    loop {
        for url in endpoints {
            let ch = endpoint(url)?.connect_lazy();
            if let Ok(s) =
                call::<_, StatusResponse>(ch, "/etcdserverpb.Maintenance/Status", StatusRequest {})
                    .await
            {
                let me = s.header.map(|h| h.member_id).unwrap_or(0);
                if s.leader != 0 && s.leader == me {
                    return Ok((url.clone(), s.version));
                }
            }
        }
        if Instant::now() > deadline {
            bail!(
                "no etcd member at {} says it leads after {within:?}",
                endpoints.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn etcd(a: EtcdArgs) -> Result<()> {
    if a.endpoints.is_empty() || a.clients == 0 || a.conns == 0 || a.key_space == 0 {
        bail!("--endpoints, --clients, --conns and --key-space must not be empty or 0");
    }
    let (lead, version) = leader(&a.endpoints, Duration::from_secs(30)).await?;
    let targets: Vec<String> = match a.via.as_str() {
        "leader" => vec![lead.clone()],
        "all" => a.endpoints.clone(),
        other => bail!("--via {other}: use leader or all"),
    };
    // One HTTP/2 connection per channel: a channel built from an endpoint opens its own.
    let chans: Vec<Channel> = (0..a.conns)
        .map(|i| Ok(endpoint(&targets[i % targets.len()])?.connect_lazy()))
        .collect::<Result<_>>()?;
    let puts = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Errors::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut handles = Vec::new();
    for w in 0..a.clients {
        let ch = chans[w % chans.len()].clone();
        let (puts, errors, stop) = (puts.clone(), errors.clone(), stop.clone());
        let (key_space, value) = (a.key_space, vec![b'v'; a.value_size]);
        handles.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(w as u64);
            while !stop.load(Ordering::Relaxed) {
                // 8-byte keys drawn from the key space, as etcd's own benchmark makes them.
                let key = rng.gen_range(0..key_space).to_be_bytes().to_vec();
                let req = PutRequest {
                    key,
                    value: value.clone(),
                };
                match call::<_, PutResponse>(ch.clone(), "/etcdserverpb.KV/Put", req).await {
                    Ok(_) => {
                        puts.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => errors.record(&e),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    for h in handles {
        let _ = h.await;
    }
    let (lead_after, _) = leader(&a.endpoints, Duration::from_secs(5))
        .await
        .map_err(|e| anyhow!("after the run: {e}"))?;
    println!(
        "etcd {version}: {} members, {} concurrent callers over {} connections via {} ({lead}), {}-byte keys from {} keys, {}-byte values, {secs:.1} s",
        a.endpoints.len(),
        a.clients,
        a.conns,
        a.via,
        8,
        a.key_space,
        a.value_size
    );
    println!(
        "  puts: {} ({:.0} puts/s), errors: {}, leader changed during run: {}",
        puts.load(Ordering::Relaxed),
        puts.load(Ordering::Relaxed) as f64 / secs,
        errors.count(),
        if lead_after == lead { "no" } else { "yes" }
    );
    if let Some(e) = errors.first() {
        println!("  first error: {e}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// The declared fields sit at etcd's tags: a put encodes as etcd's `PutRequest` does,
    /// and a status answer with fields this file does not declare still decodes.
    #[test]
    fn messages_use_etcds_field_numbers() {
        let put = PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        };
        assert_eq!(put.encode_to_vec(), vec![0x0a, 1, b'k', 0x12, 1, b'v']);
        // header{member_id: 7}, version "3.4.23", dbSize 4096 (undeclared), leader 7.
        let mut wire = vec![0x0a, 2, 0x10, 7, 0x12, 6];
        wire.extend_from_slice(b"3.4.23");
        wire.extend_from_slice(&[0x18, 0x80, 0x20, 0x20, 7]);
        let s = StatusResponse::decode(wire.as_slice()).expect("decodes");
        assert_eq!(s.header.map(|h| h.member_id), Some(7));
        assert_eq!(s.version, "3.4.23");
        assert_eq!(s.leader, 7);
    }
}
