//! End-to-end figures of the seed pipeline: from a MariaDB commit to the DWS topic updated.
//! Run through `bench/seed_e2e.sh`, which starts the services and rsql-client with sql/demo.sql;
//! this program writes to MariaDB and reads the DWS topic.
//!
//! Phase 1 (latency): one order per statement at a fixed rate (default 1,000 changes/s), each in a
//! region of its own, so every commit produces exactly one new DWS key; the time from the commit
//! returning to that key arriving on the topic is the latency (p50, p99, max).
//! Phase 2 (throughput): orders in 1,000-row transactions as fast as MariaDB takes them; the rate is
//! rows divided by the time until DWS counts all of them.
//!
//! Environment: RSQL_MYSQL_URL (mysql://rsql:rsql@127.0.0.1:13306/test_bench_e2e), KAFKA_BOOTSTRAP,
//! RATE, SECONDS, ROWS.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

fn env_or(k: &str, d: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| d.to_string())
}

/// Reads DWS messages: key region -> (order_cnt, arrival time).
fn drain(consumer: &BaseConsumer, seen: &mut HashMap<String, (i64, Instant)>, wait: Duration) {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(20)) {
            Some(Ok(m)) => {
                let now = Instant::now();
                let Some(key) = m.key().and_then(|k| serde_json::from_slice::<serde_json::Value>(k).ok()) else { continue };
                let region = key["order_region"].as_str().unwrap_or_default().to_string();
                let cnt = m
                    .payload()
                    .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
                    .and_then(|v| v["order_cnt"].as_i64())
                    .unwrap_or(0);
                seen.insert(region, (cnt, now));
            }
            Some(Err(e)) => eprintln!("consumer: {e}"),
            None => {}
        }
    }
}

fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = env_or("RSQL_MYSQL_URL", "mysql://rsql:rsql@127.0.0.1:13306/test_bench_e2e");
    let bootstrap = env_or("KAFKA_BOOTSTRAP", "127.0.0.1:19096");
    let rate: u64 = env_or("RATE", "1000").parse()?;
    let seconds: u64 = env_or("SECONDS", "10").parse()?;
    let rows: u64 = env_or("ROWS", "200000").parse()?;
    let db = url.rsplit('/').next().unwrap_or("test_bench_e2e").to_string();

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "rsql-seed-latency")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("dws_agg_by_region", 0, Offset::End)?;
    consumer.assign(&tpl)?;
    let mut seen: HashMap<String, (i64, Instant)> = HashMap::new();
    drain(&consumer, &mut seen, Duration::from_millis(500));

    let pool = mysql_async::Pool::new(url.as_str());
    let mut conn = pool.get_conn().await?;
    conn.query_drop(format!("INSERT INTO {db}.customers VALUES (1, 30, 'bench') ON DUPLICATE KEY UPDATE customer_age = 30")).await?;
    let base: u64 = conn.query_first(format!("SELECT COALESCE(MAX(order_id), 0) FROM {db}.orders")).await?.unwrap_or(0);

    // Phase 1: latency at a fixed rate.
    let total = rate * seconds;
    let mut commits: Vec<(String, Instant)> = Vec::with_capacity(total as usize);
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    for i in 0..total {
        let due = started + interval * i as u32;
        let now = Instant::now();
        if due > now {
            // Read the topic while waiting for the next commit slot.
            drain(&consumer, &mut seen, due - now);
        }
        let region = format!("lat{}_{i}", base);
        conn.query_drop(format!("INSERT INTO {db}.orders VALUES ({}, 1, '{region}', 1)", base + 1 + i)).await?;
        commits.push((region, Instant::now()));
    }
    let offered = total as f64 / started.elapsed().as_secs_f64();
    let wait_until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < wait_until && commits.iter().any(|(r, _)| !seen.contains_key(r)) {
        drain(&consumer, &mut seen, Duration::from_millis(100));
    }
    let mut lat: Vec<f64> = commits
        .iter()
        .filter_map(|(r, t)| seen.get(r).map(|(_, at)| at.saturating_duration_since(*t).as_secs_f64() * 1000.0))
        .collect();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let missing = commits.len() - lat.len();
    println!(
        "latency: {} commits at {:.0} changes/s offered; commit -> DWS p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {} not seen",
        commits.len(),
        offered,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN),
        missing
    );

    // Phase 2: sustained rate.
    let regions = 50u64;
    let first = base + 1 + total;
    let t0 = Instant::now();
    let mut id = first;
    while id < first + rows {
        let n = (first + rows - id).min(1000);
        let values: Vec<String> = (0..n).map(|k| format!("({}, 1, 'thr{}_{}', 1)", id + k, base, (id + k) % regions)).collect();
        conn.query_drop(format!("INSERT INTO {db}.orders VALUES {}", values.join(","))).await?;
        id += n;
    }
    let written = t0.elapsed().as_secs_f64();
    let want = rows as i64;
    let deadline = Instant::now() + Duration::from_secs(300);
    let done = loop {
        drain(&consumer, &mut seen, Duration::from_millis(100));
        let got: i64 = seen.iter().filter(|(k, _)| k.starts_with(&format!("thr{base}_"))).map(|(_, (c, _))| *c).sum();
        if got >= want {
            break Some(Instant::now());
        }
        if Instant::now() > deadline {
            println!("throughput: only {got} of {want} rows reached DWS within 300 s");
            break None;
        }
    };
    if let Some(end) = done {
        let secs = end.duration_since(t0).as_secs_f64();
        println!(
            "throughput: {rows} changes in {secs:.2} s = {:.0} changes/s end to end (MariaDB took them in {written:.2} s = {:.0} rows/s)",
            rows as f64 / secs,
            rows as f64 / written
        );
    }
    drop(conn);
    pool.disconnect().await?;
    Ok(())
}
