//! Executes statements the way Flink's SQL client does: DDL changes the catalog, SET/RESET the
//! session configuration, each INSERT or STATEMENT SET becomes a job that runs in this process,
//! SELECT runs a job whose result is printed, EXPLAIN prints the streaming plan. In validate mode
//! everything is planned and nothing is started.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rsql_common::options::parse_duration;
use rsql_common::{ChangeBatch, Location, Result, RsqlError};
use rsql_planner::{CatalogEntry, InsertPlan, Session};
use rsql_runtime::graph::{JobGraph, SinkFactoryFn};
use rsql_runtime::checkpoint::{self, CheckpointStore, LocalDirStore};
use rsql_runtime::{start_job, CheckpointOptions, JobOptions, Sink};
use rsql_sql::{ExplainDetail, Located, ShowKind, Statement};

use crate::output::{boxed, ResultMode, ResultPrinter};

pub const INFO_OK: &str = "[INFO] Execute statement succeeded.";

use crate::supervisor::{RestartStrategy, SupervisedJob};

pub struct Client {
    pub session: Session,
    pub validate_only: bool,
    pub interactive: bool,
    statement_set: Option<(Location, Vec<InsertPlan>)>,
    pub jobs: Vec<SupervisedJob>,
    job_counter: usize,
    metrics: crate::metrics::Registry,
    metrics_started: bool,
    /// The script's file stem, which names its jobs' checkpoints when 'pipeline.name' is unset.
    pub script: Option<String>,
    /// Start jobs without their saved state (moving old checkpoints aside).
    pub fresh: bool,
}

/// What the caller should do after a statement.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Quit,
}

struct CollectSink {
    printer: Arc<Mutex<ResultPrinter>>,
}

#[async_trait]
impl Sink for CollectSink {
    async fn write(&mut self, batch: ChangeBatch) -> Result<()> {
        let mut out = std::io::stdout().lock();
        if let Ok(mut p) = self.printer.lock() {
            p.write(&batch, &mut out);
        }
        Ok(())
    }
    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

impl Client {
    pub fn new(session: Session, validate_only: bool, interactive: bool) -> Self {
        Client {
            session,
            validate_only,
            interactive,
            statement_set: None,
            jobs: Vec::new(),
            job_counter: 0,
            metrics: crate::metrics::Registry::default(),
            metrics_started: false,
            script: None,
            fresh: false,
        }
    }

    fn config_duration(&self, key: &str) -> Result<Option<Duration>> {
        match self.session.config.get(key) {
            None => Ok(None),
            Some(v) => parse_duration(v).map(Some).ok_or_else(|| {
                RsqlError::validation(format!("'{key}' = '{v}' is not a duration; write it like '10s', '500 ms' or '1 min'"), None)
            }),
        }
    }

    /// Checkpointing of a job from Flink's keys; None when 'execution.checkpointing.interval' is
    /// unset or zero. Loads the checkpoint to resume from ('execution.savepoint.path', else the
    /// job's latest) unless the client was started with --fresh.
    fn checkpoint_options(&self, pipeline: &str) -> Result<Option<CheckpointOptions>> {
        let Some(interval) = self.config_duration("execution.checkpointing.interval")?.filter(|d| !d.is_zero()) else {
            return Ok(None);
        };
        let dir = self
            .session
            .config
            .get("execution.checkpointing.dir")
            .or_else(|| self.session.config.get("state.checkpoints.dir"))
            .cloned()
            .unwrap_or_else(|| ".rsql-checkpoints".to_string());
        let dir = match dir.split_once("://") {
            None => dir,
            Some(("file", rest)) => rest.to_string(),
            Some((scheme, _)) => {
                return Err(RsqlError::validation(
                    format!("checkpoint directory '{dir}': the '{scheme}' file system is not supported; give a local directory (a path or 'file:///path')"),
                    None,
                ))
            }
        };
        let job: String = pipeline.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
        let job_dir = std::path::Path::new(&dir).join(&job);
        let retained = ["execution.checkpointing.num-retained", "state.checkpoints.num-retained"]
            .iter()
            .find_map(|k| self.session.config.get(*k).map(|v| (k, v)))
            .map(|(k, v)| {
                v.trim().parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    RsqlError::validation(format!("'{k}' = '{v}' is not a positive number"), None)
                })
            })
            .transpose()?
            .unwrap_or(1);
        let timeout = self.config_duration("execution.checkpointing.timeout")?.unwrap_or(Duration::from_secs(600));
        let tolerable_failures = match self.session.config.get("execution.checkpointing.tolerable-failed-checkpoints") {
            None => 0,
            Some(v) => v.trim().parse::<u32>().map_err(|_| {
                RsqlError::validation(format!("'execution.checkpointing.tolerable-failed-checkpoints' = '{v}' is not a number"), None)
            })?,
        };
        let store = LocalDirStore::new(&job_dir, retained);
        let restore = match self.session.config.get("execution.savepoint.path") {
            Some(p) => Some(checkpoint::load_path(std::path::Path::new(p))?),
            None if self.fresh => {
                set_aside(&job_dir)?;
                None
            }
            None if store.finished() => {
                // A finished bounded job run again starts over, as a resubmitted Flink job does.
                self.info(&format!(
                    "[INFO] Job '{pipeline}' ran to its end last time; this run starts from the beginning (its checkpoints are moved into {}/discarded-<time>).",
                    job_dir.display()
                ));
                set_aside(&job_dir)?;
                None
            }
            None => store.latest()?,
        };
        Ok(Some(CheckpointOptions { job: pipeline.to_string(), interval, timeout, tolerable_failures, store: Arc::new(store), restore }))
    }

    fn info(&self, msg: &str) {
        if !self.validate_only {
            println!("{msg}");
        }
    }

    fn job_options(&self) -> Result<JobOptions> {
        let mut o = JobOptions::default();
        // Processing-time TTL of the state of joins, aggregates, Top-N, deduplication and sink
        // materializers; '0' (the default) keeps state forever.
        if let Some(ttl) = self.config_duration("table.exec.state.ttl")? {
            o.state_ttl = ttl;
        }
        // Flink's default is 200 ms; '0' emits a watermark after every batch that moves it.
        if let Some(d) = self.config_duration("pipeline.auto-watermark-interval")? {
            o.watermark_interval = d;
        }
        // Off ('0') by default: an input without rows holds back the watermark of joins and unions.
        if let Some(d) = self.config_duration("table.exec.source.idle-timeout")? {
            o.idle_timeout = d;
        }
        if let Some(v) = self.session.config.get("table.exec.mini-batch.size").and_then(|v| v.parse::<usize>().ok()) {
            o.batch_size = v.max(1);
        }
        if let Some(d) = self.session.config.get("table.exec.mini-batch.allow-latency").and_then(|v| parse_duration(v)) {
            o.max_batch_delay = d.max(Duration::from_millis(1));
        }
        Ok(o)
    }

    fn result_mode(&self) -> Result<ResultMode> {
        match self.session.config.get("sql-client.execution.result-mode") {
            None => Ok(ResultMode::Tableau),
            Some(v) => ResultMode::parse(v).ok_or_else(|| {
                RsqlError::validation(format!("'sql-client.execution.result-mode' = '{v}' is not one of table, tableau, changelog"), None)
            }),
        }
    }

    fn dml_sync(&self) -> bool {
        self.session.config.get("table.dml-sync").map(|v| v.eq_ignore_ascii_case("true")).unwrap_or(false)
    }

    /// Executes one statement.
    pub async fn execute(&mut self, st: &Located) -> Result<Flow> {
        let loc = st.location;
        let r = self.execute_inner(st).await;
        r.map_err(|e| e.at(loc))
    }

    async fn execute_inner(&mut self, st: &Located) -> Result<Flow> {
        let loc = st.location;
        if let Some((_, set)) = &mut self.statement_set {
            match &st.statement {
                Statement::Insert { table, columns, query, .. } => {
                    let plan = self.session.plan_insert(table, columns, query, loc)?;
                    set.push(plan);
                    if self.interactive {
                        println!("[INFO] Add SQL update statement to the statement set.");
                    }
                    return Ok(Flow::Continue);
                }
                Statement::End => {
                    let (_, plans) = self.statement_set.take().unwrap_or((loc, Vec::new()));
                    if plans.is_empty() {
                        return Err(RsqlError::validation("the statement set is empty; add INSERT statements between BEGIN STATEMENT SET and END", Some(loc)));
                    }
                    let graph = self.session.build_job(&plans, None)?;
                    self.submit(graph, "statement set").await?;
                    return Ok(Flow::Continue);
                }
                _ => {
                    return Err(RsqlError::validation(
                        "only INSERT statements are allowed inside a statement set; close it with END first",
                        Some(loc),
                    ))
                }
            }
        }
        match &st.statement {
            Statement::BeginStatementSet => {
                self.statement_set = Some((loc, Vec::new()));
                if self.interactive {
                    println!("[INFO] Begin a statement set.");
                }
            }
            Statement::End => {
                return Err(RsqlError::validation("END without BEGIN STATEMENT SET", Some(loc)));
            }
            Statement::StatementSet(items) => {
                let mut plans = Vec::new();
                for it in items {
                    let Statement::Insert { table, columns, query, .. } = &it.statement else {
                        return Err(RsqlError::validation("a statement set holds INSERT statements only", Some(it.location)));
                    };
                    plans.push(self.session.plan_insert(table, columns, query, it.location)?);
                }
                let graph = self.session.build_job(&plans, None)?;
                self.submit(graph, "statement set").await?;
            }
            Statement::CreateCatalog { name, if_not_exists, options } => {
                if let Some((k, _, l)) = options.iter().find(|(k, v, _)| k == "type" && v != "generic_in_memory") {
                    let _ = k;
                    return Err(RsqlError::unsupported("only catalogs of 'type' = 'generic_in_memory' are supported").at(*l));
                }
                self.session.catalog.create_catalog(name, *if_not_exists, loc)?;
                self.info(INFO_OK);
            }
            Statement::CreateDatabase { name, if_not_exists, .. } => {
                self.session.catalog.create_database(name, *if_not_exists)?;
                self.info(INFO_OK);
            }
            Statement::CreateTable(ct) => {
                let created = self.session.create_table(ct, loc)?;
                if ct.as_query.is_some() {
                    if let (Some(def), Some(q)) = (created, &ct.as_query) {
                        let name = rsql_sql::Name { parts: vec![def.path.catalog.clone(), def.path.database.clone(), def.path.name.clone()], location: loc };
                        let plan = self.session.plan_insert(&name, &[], q, loc)?;
                        let graph = self.session.build_job(&[plan], None)?;
                        self.submit(graph, &format!("insert-into_{}", def.path)).await?;
                        return Ok(Flow::Continue);
                    }
                }
                self.info(INFO_OK);
            }
            Statement::CreateView { name, columns, query, if_not_exists, .. } => {
                self.session.create_view(name, columns, query, *if_not_exists, &st.text, loc)?;
                self.info(INFO_OK);
            }
            Statement::DropTable { name, if_exists, .. } => {
                self.session.catalog.drop_object(name, *if_exists, false)?;
                self.info(INFO_OK);
            }
            Statement::DropView { name, if_exists, .. } => {
                self.session.catalog.drop_object(name, *if_exists, true)?;
                self.info(INFO_OK);
            }
            Statement::DropDatabase { name, if_exists, cascade } => {
                self.session.catalog.drop_database(name, *if_exists, *cascade)?;
                self.info(INFO_OK);
            }
            Statement::DropCatalog { name, if_exists } => {
                self.session.catalog.drop_catalog(name, *if_exists, loc)?;
                self.info(INFO_OK);
            }
            Statement::UseCatalog(name) => {
                self.session.catalog.use_catalog(name, loc)?;
                self.info(INFO_OK);
            }
            Statement::Use(name) => {
                self.session.catalog.use_database(name)?;
                self.info(INFO_OK);
            }
            Statement::Set(None) => {
                if !self.validate_only {
                    let rows: Vec<Vec<String>> = self.session.config.iter().map(|(k, v)| vec![k.clone(), v.clone()]).collect();
                    print!("{}", boxed(&["key".into(), "value".into()], &rows));
                }
            }
            Statement::Set(Some((k, v))) => {
                if k == "sql-client.execution.result-mode" && ResultMode::parse(v).is_none() {
                    return Err(RsqlError::validation(format!("'{k}' must be one of table, tableau, changelog, not '{v}'"), Some(loc)));
                }
                self.session.config.insert(k.clone(), v.clone());
                self.info("[INFO] Execute statement succeeded.");
            }
            Statement::Reset(None) => {
                self.session.config.clear();
                self.info("[INFO] All session properties have been set to their default values.");
            }
            Statement::Reset(Some(k)) => {
                self.session.config.remove(k);
                self.info(&format!("[INFO] Session property '{k}' has been reset."));
            }
            Statement::Show(kind) => {
                let (header, values) = match kind {
                    ShowKind::Catalogs => ("catalog name", self.session.catalog.catalog_names()),
                    ShowKind::Databases => ("database name", self.session.catalog.database_names()),
                    ShowKind::Tables => ("table name", self.session.catalog.object_names(None)),
                    ShowKind::Views => ("view name", self.session.catalog.object_names(Some(true))),
                    ShowKind::Functions => ("function name", {
                        let mut v: Vec<String> = rsql_sql_functions();
                        v.sort();
                        v
                    }),
                    ShowKind::CurrentCatalog => ("current catalog name", vec![self.session.catalog.current_catalog.clone()]),
                    ShowKind::CurrentDatabase => ("current database name", vec![self.session.catalog.current_database.clone()]),
                    ShowKind::Jobs => {
                        self.show_jobs();
                        return Ok(Flow::Continue);
                    }
                };
                if !self.validate_only {
                    let rows: Vec<Vec<String>> = values.into_iter().map(|v| vec![v]).collect();
                    if rows.is_empty() {
                        println!("Empty set");
                    } else {
                        print!("{}", boxed(&[header.to_string()], &rows));
                        println!("{} row{} in set", rows.len(), if rows.len() == 1 { "" } else { "s" });
                    }
                }
            }
            Statement::ShowCreateTable(name) | Statement::ShowCreateView(name) => {
                let (path, entry) = self.session.catalog.resolve(name)?;
                if !self.validate_only {
                    match entry {
                        CatalogEntry::Table(t) => println!("{}", t.to_ddl()),
                        CatalogEntry::View(v) => println!("CREATE VIEW {path} AS\n{}", v.text),
                    }
                }
            }
            Statement::Describe(name) => {
                let (_, entry) = self.session.catalog.resolve(name)?;
                if !self.validate_only {
                    describe(&entry);
                }
            }
            Statement::Explain { details, statement } => {
                let graph = self.plan_for_explain(statement, loc)?;
                if !self.validate_only {
                    let with_changelog = details.contains(&ExplainDetail::ChangelogMode);
                    println!("== Optimized Execution Plan ==");
                    print!("{}", graph.explain(with_changelog));
                }
            }
            Statement::Insert { table, columns, query, .. } => {
                let plan = self.session.plan_insert(table, columns, query, loc)?;
                let name = format!("insert-into_{}", plan.sink.path);
                let graph = self.session.build_job(&[plan], None)?;
                self.submit(graph, &name).await?;
            }
            Statement::Execute(inner) => {
                let l = Located { statement: (**inner).clone(), location: loc, text: st.text.clone() };
                return Box::pin(self.execute_inner(&l)).await;
            }
            Statement::Query(q) => {
                let plan = self.session.plan_query(q, loc)?;
                let mode = self.result_mode()?;
                let schema = std::sync::Arc::new(plan.schema().as_arrow().clone());
                // Decide the printer's columns after lowering (insert-only or not).
                let printer = Arc::new(Mutex::new(ResultPrinter::new(mode, &schema, true)));
                let p2 = printer.clone();
                let create: SinkFactoryFn = Arc::new(move || Ok(Box::new(CollectSink { printer: p2.clone() }) as Box<dyn Sink>));
                let graph = self.session.build_job(&[], Some((&plan, create)))?;
                if self.validate_only {
                    return Ok(Flow::Continue);
                }
                let insert_only = graph.nodes.last().map(|n| n.mode.is_insert_only()).unwrap_or(true);
                if let Ok(mut p) = printer.lock() {
                    *p = ResultPrinter::new(mode, &schema, insert_only).live(self.interactive && std::io::stdout().is_terminal());
                }
                let running = start_job(&graph, &self.job_options()?)?;
                let result = wait_interruptible(running.stop_handle(), running.wait()).await;
                if let Ok(mut p) = printer.lock() {
                    let mut out = std::io::stdout().lock();
                    p.finish(&mut out);
                }
                result?;
            }
            Statement::Help => {
                if !self.validate_only {
                    print_help();
                }
            }
            Statement::Quit => return Ok(Flow::Quit),
        }
        Ok(Flow::Continue)
    }

    fn plan_for_explain(&mut self, st: &Statement, loc: Location) -> Result<JobGraph> {
        match st {
            Statement::Insert { table, columns, query, .. } => {
                let plan = self.session.plan_insert(table, columns, query, loc)?;
                self.session.build_job(&[plan], None)
            }
            Statement::StatementSet(items) => {
                let mut plans = Vec::new();
                for it in items {
                    if let Statement::Insert { table, columns, query, .. } = &it.statement {
                        plans.push(self.session.plan_insert(table, columns, query, it.location)?);
                    }
                }
                self.session.build_job(&plans, None)
            }
            Statement::Query(q) => {
                let plan = self.session.plan_query(q, loc)?;
                let create: SinkFactoryFn = Arc::new(|| Err(RsqlError::execution("EXPLAIN does not run queries")));
                self.session.build_job(&[], Some((&plan, create)))
            }
            _ => Err(RsqlError::unsupported("EXPLAIN takes a SELECT, an INSERT or a STATEMENT SET").at(loc)),
        }
    }

    async fn submit(&mut self, graph: JobGraph, name: &str) -> Result<()> {
        if self.validate_only {
            return Ok(());
        }
        self.job_counter += 1;
        let pipeline = self.session.config.get("pipeline.name").cloned().unwrap_or_else(|| name.to_string());
        // Checkpoints belong to 'pipeline.name', else to the script and the job's place in it.
        let ckpt_job = match (self.session.config.get("pipeline.name"), &self.script) {
            (Some(p), _) => p.clone(),
            (None, Some(script)) => format!("{script}-{}", self.job_counter),
            (None, None) => name.to_string(),
        };
        let mut opts = self.job_options()?;
        opts.checkpoint = self.checkpoint_options(&ckpt_job)?;
        if let Some(cp) = &opts.checkpoint {
            match &cp.restore {
                Some((from, saved)) => println!("[INFO] Resuming job '{ckpt_job}' from checkpoint {} ({from}).", saved.id),
                None => println!("[INFO] Job '{ckpt_job}' checkpoints every {:?} to {}.", cp.interval, cp.store.describe()),
            }
        }
        let strategy = RestartStrategy::from_config(&self.session.config, opts.checkpoint.is_some())?;
        let job = SupervisedJob::start(pipeline.clone(), graph, opts, strategy)?;
        println!("[INFO] Submitting SQL update statement to the cluster...");
        println!("[INFO] SQL update statement has been successfully submitted to the cluster:");
        println!("Job ID: {:032x}", self.job_counter);
        self.publish(&pipeline, &job.metrics)?;
        if self.dml_sync() {
            wait_interruptible(job.stop_handle(), job.wait()).await?;
            println!("[INFO] Complete execution of the SQL update statement.");
        } else {
            self.jobs.push(job);
        }
        Ok(())
    }

    /// Publishes a job's metrics; the first job starts the status log and, when configured, the
    /// Prometheus endpoint.
    fn publish(&mut self, name: &str, metrics: &Arc<rsql_runtime::executor::JobMetrics>) -> Result<()> {
        self.metrics.add(name, metrics.clone());
        if self.metrics_started {
            return Ok(());
        }
        self.metrics_started = true;
        tokio::spawn(crate::metrics::log_status(self.metrics.clone(), Duration::from_secs(10), !self.interactive));
        if let Some(port) = self.session.config.get("metrics.reporter.prom.port") {
            let port: u16 = port.trim().parse().map_err(|_| {
                RsqlError::validation(format!("'metrics.reporter.prom.port' = '{port}' is not a port number"), None)
            })?;
            let host = self.session.config.get("metrics.reporter.prom.host").cloned().unwrap_or_else(|| "127.0.0.1".to_string());
            let registry = self.metrics.clone();
            tokio::spawn(async move {
                if let Err(e) = crate::metrics::serve(registry, host.clone(), port).await {
                    tracing::error!("metrics endpoint on {host}:{port} failed: {e}");
                }
            });
        }
        Ok(())
    }

    pub fn show_jobs(&self) {
        if self.validate_only {
            return;
        }
        let jobs: Vec<(String, Arc<rsql_runtime::executor::JobMetrics>)> =
            self.jobs.iter().map(|j| (j.name.clone(), j.metrics.clone())).collect();
        let (header, rows) = crate::metrics::jobs_table(&jobs);
        print!("{}", boxed(&header, &rows));
    }

    /// Open statement set at the end of input is an error.
    pub fn check_closed(&self) -> Result<()> {
        if let Some((loc, _)) = &self.statement_set {
            return Err(RsqlError::validation("BEGIN STATEMENT SET is never closed with END", Some(*loc)));
        }
        Ok(())
    }

    /// Waits for every submitted job; Ctrl-C / SIGTERM stops them (sinks are flushed).
    pub async fn wait_all(&mut self) -> Result<()> {
        let jobs = std::mem::take(&mut self.jobs);
        if jobs.is_empty() {
            return Ok(());
        }
        let stops: Vec<_> = jobs.iter().map(|j| j.stop_handle()).collect();
        let savepoints: Vec<_> = jobs.iter().map(|j| (j.name.clone(), j)).filter_map(|(n, j)| j.checkpoint_handle().map(|h| (n, h))).collect();
        let mut waits = Vec::new();
        for j in jobs {
            let name = j.name.clone();
            waits.push(tokio::spawn(async move { j.wait().await.map_err(|e| (name, e)) }));
        }
        let all = futures::future::join_all(waits);
        tokio::pin!(all);
        let results = tokio::select! {
            r = &mut all => r,
            _ = shutdown_signal() => {
                for (name, h) in &savepoints {
                    eprintln!("[INFO] Taking a savepoint of job '{name}'...");
                    let taken = tokio::select! {
                        r = tokio::time::timeout(Duration::from_secs(120), h.checkpoint()) => r,
                        _ = shutdown_signal() => { return Err(RsqlError::execution("interrupted twice; stopped without a savepoint")); }
                    };
                    match taken {
                        Ok(Ok(c)) => eprintln!("[INFO] Savepoint {} of job '{name}' written to {} ({} bytes of state).", c.id, c.path, c.bytes),
                        Ok(Err(e)) => eprintln!("[WARN] No savepoint of job '{name}': {e}; it resumes from its last checkpoint."),
                        Err(_) => eprintln!("[WARN] No savepoint of job '{name}' within 120 s; it resumes from its last checkpoint."),
                    }
                }
                eprintln!("[INFO] Stopping the running jobs (their sinks are flushed)...");
                for s in &stops { let _ = s.send(true); }
                tokio::select! {
                    r = &mut all => r,
                    _ = shutdown_signal() => { return Err(RsqlError::execution("interrupted twice; stopped without waiting for sinks")); }
                }
            }
        };
        let mut first = None;
        for r in results {
            match r {
                Ok(Ok(())) => {}
                Ok(Err((name, e))) => {
                    tracing::error!("job {name} failed: {e}");
                    first.get_or_insert(e);
                }
                Err(e) => {
                    first.get_or_insert(RsqlError::execution(format!("a job panicked: {e}")));
                }
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Moves a job's checkpoints into a `discarded-<millis>` folder beside them (--fresh).
fn set_aside(job_dir: &std::path::Path) -> Result<()> {
    let Ok(rd) = std::fs::read_dir(job_dir) else { return Ok(()) };
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let aside = job_dir.join(format!("discarded-{ms}"));
    for ent in rd.flatten() {
        let name = ent.file_name();
        if name.to_string_lossy().starts_with("chk-") || name == checkpoint::FINISHED_MARKER {
            std::fs::create_dir_all(&aside)
                .and_then(|_| std::fs::rename(ent.path(), aside.join(&name)))
                .map_err(|e| RsqlError::execution(format!("--fresh: cannot move {} aside: {e}", ent.path().display())))?;
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Waits for a job (`w`, its end); the first Ctrl-C / SIGTERM asks it to stop through `stop` and
/// waits for it to drain.
async fn wait_interruptible(stop: tokio::sync::watch::Sender<bool>, w: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    tokio::pin!(w);
    tokio::select! {
        r = &mut w => r,
        _ = shutdown_signal() => {
            let _ = stop.send(true);
            w.await
        }
    }
}

fn describe(entry: &CatalogEntry) {
    let mut rows = Vec::new();
    match entry {
        CatalogEntry::Table(t) => {
            for c in &t.columns {
                let key = t.primary_key.as_ref().filter(|pk| pk.contains(&c.name)).map(|_| format!("PRI({})", t.primary_key.as_ref().map(|p| p.join(", ")).unwrap_or_default()));
                let extras = match &c.kind {
                    rsql_common::catalog::ColumnKind::Physical => String::new(),
                    rsql_common::catalog::ColumnKind::Computed(e) => format!("AS {e}"),
                    rsql_common::catalog::ColumnKind::Metadata { key, is_virtual } => {
                        format!("METADATA{}{}", key.as_ref().map(|k| format!(" FROM '{k}'")).unwrap_or_default(), if *is_virtual { " VIRTUAL" } else { "" })
                    }
                };
                let wm = t.watermark.as_ref().filter(|w| w.column == c.name).map(|w| w.expr.clone()).unwrap_or_default();
                let mut ty = c.ty.clone();
                ty.nullable = true;
                // The event-time attribute shows as Flink shows it: TIMESTAMP(3) *ROWTIME*.
                let ty = if wm.is_empty() { ty.to_string() } else { format!("{ty} *ROWTIME*") };
                rows.push(vec![c.name.clone(), ty, c.ty.nullable.to_string().to_uppercase(), key.unwrap_or_default(), extras, wm]);
            }
        }
        CatalogEntry::View(v) => {
            for f in v.plan.schema().fields() {
                let ty = rsql_common::FlinkType::from_arrow(f.data_type()).map(|t| t.to_string()).unwrap_or_else(|| f.data_type().to_string());
                rows.push(vec![f.name().clone(), ty, f.is_nullable().to_string().to_uppercase(), String::new(), String::new(), String::new()]);
            }
        }
    }
    let headers: Vec<String> = ["name", "type", "null", "key", "extras", "watermark"].iter().map(|s| s.to_string()).collect();
    print!("{}", boxed(&headers, &rows));
    println!("{} row{} in set", rows.len(), if rows.len() == 1 { "" } else { "s" });
}

fn rsql_sql_functions() -> Vec<String> {
    let mut v: Vec<String> = datafusion_functions_list();
    v.dedup();
    v
}

fn datafusion_functions_list() -> Vec<String> {
    // The planner's registry is the source of truth; listing it through a session keeps one list.
    let s = Session::new(rsql_runtime::ConnectorRegistry::new());
    let mut names = s.function_names();
    names.sort();
    names
}

pub fn print_help() {
    let text = "\
The following commands are available:

CREATE TABLE / VIEW / DATABASE / CATALOG   Create an object (Flink syntax, WITH options).
DROP TABLE / VIEW / DATABASE / CATALOG     Drop an object.
USE [CATALOG] name                        Change the current database or catalog.
SHOW CATALOGS / DATABASES / TABLES / VIEWS / FUNCTIONS / JOBS
SHOW CREATE TABLE name, DESCRIBE name     Inspect a table.
SET 'key' = 'value', SET, RESET ['key']   Session configuration.
INSERT INTO t SELECT ...                  Start a streaming job.
BEGIN STATEMENT SET; INSERT ...; END;     Several INSERTs as one job (sources read once).
SELECT ...                                Run a query and show its result.
EXPLAIN [CHANGELOG_MODE] statement        Show the streaming plan.
HELP, QUIT / EXIT                         This text; leave the client.

Result modes: SET 'sql-client.execution.result-mode' = 'table' | 'tableau' | 'changelog'.
";
    let _ = std::io::stdout().write_all(text.as_bytes());
}
