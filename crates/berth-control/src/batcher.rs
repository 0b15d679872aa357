//! Group commit on the leader. Concurrent writes queue here; the batcher takes everything
//! queued (up to a bound), turns each request into a command — placing RunTasks against
//! the applied state plus what the batch already placed — and proposes the lot as one Raft
//! entry. One entry means one fsync per node for the whole batch, so throughput grows with
//! concurrency.
//!
//! One batch is in flight at a time: the next batch is placed against a state that
//! already holds the previous one, so the proposer never oversubscribes knowingly (and
//! `apply` refuses it if it ever did). Placement uses the engine kept between batches
//! (`placement`), brought up to date from the applied changes before each one.

use std::time::Duration;

use berth_core::command::{PlacementConstraint, PlacementStrategy, RunTaskRequest, RunTasks};
use berth_core::limits::{MAX_CONSTRAINTS, MAX_STRATEGIES, MAX_STRATEGY_FIELD_LEN};
use berth_core::schedule::{RetryLaunch, ScheduleFire, ScheduleRetry, TaskRun};
use berth_core::service::{ServiceCreate, ServiceUpdate};
use berth_core::{quote, validate, Batch, ClusterState, Command, CommandResult, Revision};
use berth_raft::store::StateHandle;
use berth_raft::Raft;
use berth_sched as sched;
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot};

use crate::error::{ApiError, ApiResult};
use crate::node::{now_ms, CreateService, UpdateService, WriteRequest};
use crate::shutdown::Shutdown;

/// Requests waiting for the batcher; beyond this, callers wait (back-pressure).
pub const QUEUE: usize = 4096;
/// A batch holds at most this many requests…
const MAX_BATCH_REQUESTS: usize = 1024;
/// …and creates at most this many tasks, which bounds an entry to a few hundred KiB.
const MAX_BATCH_TASKS: usize = 4096;
/// How long a proposal (or a leadership check) may go unanswered before its callers are
/// told UNAVAILABLE. Commits take milliseconds; only a partition or a stuck node gets here.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct Pending {
    pub req: WriteRequest,
    pub reply: oneshot::Sender<ApiResult<(Revision, CommandResult)>>,
}

pub(crate) struct Batcher {
    pub raft: Raft,
    pub state: StateHandle,
    pub rx: mpsc::Receiver<Pending>,
    pub shutdown: Shutdown,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// The placement engine kept between batches; None until the first RunTask, and
    /// again whenever it cannot follow the applied state.
    pub planner: Option<crate::placement::Planner>,
}

/// What a request became before proposing.
enum Prepared {
    /// Ready to propose.
    Command(Command),
    /// A RunTask whose placements are still to be chosen, the accessor of the token it
    /// was made with, and the command it becomes once placed.
    Run(RunTasks, sched::Demand, Option<String>, Then),
    /// Answered from the applied state without a write (a client token replay).
    Answer(Revision, CommandResult),
}

/// What a placed launch is proposed as.
enum Then {
    RunTasks,
    /// The launch of a schedule's run: the fire carrying it, and the time it runs.
    Fire(Box<ScheduleFire>, u64),
    /// The next attempt of a schedule's run.
    Retry {
        name: String,
        run_id: String,
        attempt: u32,
    },
}

impl Then {
    fn command(self, run: RunTasks) -> Command {
        match self {
            Then::RunTasks => Command::RunTasks(run),
            Then::Fire(mut fire, time) => {
                fire.run = Some((time, run));
                Command::FireSchedule(*fire)
            }
            Then::Retry {
                name,
                run_id,
                attempt,
            } => Command::RetryScheduleRun(ScheduleRetry {
                name,
                run_id,
                attempt,
                launch: run,
            }),
        }
    }
}

impl Batcher {
    pub async fn run(mut self) {
        // The term in which this node last confirmed it had applied everything committed
        // before its leadership; placing against an older state would only produce
        // placements that apply then refuses.
        let mut ready_term = None;
        loop {
            let first = tokio::select! {
                p = self.rx.recv() => match p { Some(p) => p, None => return },
                _ = self.shutdown.wait() => return,
            };
            let mut batch = vec![first];
            let mut weight = 1;
            while batch.len() < MAX_BATCH_REQUESTS && weight < MAX_BATCH_TASKS {
                match self.rx.try_recv() {
                    Ok(p) => {
                        weight += request_weight(&p.req);
                        batch.push(p);
                    }
                    Err(_) => break,
                }
            }
            let term = self.raft.metrics().borrow().current_term;
            if ready_term != Some(term) {
                let confirmed =
                    tokio::time::timeout(COMMIT_TIMEOUT, self.raft.ensure_linearizable()).await;
                let err = match confirmed {
                    Ok(Ok(_)) => None,
                    Ok(Err(RaftError::APIError(
                        openraft::error::CheckIsLeaderError::ForwardToLeader(f),
                    ))) => Some(ApiError::NotLeader {
                        leader: f.leader_id,
                    }),
                    Ok(Err(e)) => Some(ApiError::NotLeader { leader: None }).inspect(|_| {
                        tracing::debug!(error = %e, "leadership not confirmed");
                    }),
                    Err(_) => Some(ApiError::unavailable(format!(
                        "this leader could not confirm its leadership within {COMMIT_TIMEOUT:?} \
                         (is it cut off from the others?)"
                    ))),
                };
                match err {
                    None => ready_term = Some(term),
                    Some(err) => {
                        for p in batch {
                            let _ = p.reply.send(Err(err.clone()));
                        }
                        continue;
                    }
                }
            }
            if !self.commit(batch).await {
                ready_term = None;
            }
        }
    }

    /// Commits one batch; false when leadership may be in doubt (the next batch must
    /// confirm it first).
    async fn commit(&mut self, batch: Vec<Pending>) -> bool {
        let now = now_ms();
        let mut commands = Vec::with_capacity(batch.len());
        let mut waiting = Vec::with_capacity(batch.len());
        {
            let applied = self.state.read();
            let state = &applied.state;
            if self.planner.as_mut().is_some_and(|p| !p.follow()) {
                self.planner = None;
            }
            let mut runs = false;
            let mut prepared = Vec::with_capacity(batch.len());
            for p in batch {
                match prepare(p.req, state) {
                    Err(e) => {
                        let _ = p.reply.send(Err(e));
                    }
                    Ok(Prepared::Answer(rev, result)) => {
                        let _ = p.reply.send(Ok((rev, result)));
                    }
                    Ok(Prepared::Run(run, demand, actor, then)) => {
                        runs = true;
                        prepared.push((Prepared::Run(run, demand, actor, then), p.reply));
                    }
                    Ok(other) => prepared.push((other, p.reply)),
                }
            }
            // One engine for the whole batch: later requests see what earlier ones placed.
            if runs {
                match self.planner.as_mut() {
                    Some(p) => {
                        p.refresh(state);
                    }
                    // Subscribing under the read lock misses nothing: an entry applied
                    // after the lock is released is sent after this subscription.
                    None => {
                        self.planner = Some(crate::placement::Planner::from_state(
                            self.state.subscribe(),
                            state,
                        ));
                    }
                }
            }
            let mut planner = if runs { self.planner.as_mut() } else { None };
            for (prep, reply) in prepared {
                match (prep, planner.as_deref_mut()) {
                    (Prepared::Command(c), _) => {
                        commands.push(c);
                        waiting.push(reply);
                    }
                    (Prepared::Run(mut run, demand, actor, then), Some(planner)) => {
                        let placing = std::time::Instant::now();
                        let placed = planner.place(&demand, &mut run);
                        self.metrics.observe_placement(placing.elapsed());
                        match placed {
                            Ok(()) => {
                                commands.push(made_by(actor, then.command(run)));
                                waiting.push(reply);
                            }
                            Err(e) => {
                                let _ = reply.send(Err(e));
                            }
                        }
                    }
                    _ => {
                        let _ = reply.send(Err(ApiError::Internal(
                            "request lost its placement plan".into(),
                        )));
                    }
                }
            }
        }
        if commands.is_empty() {
            return true;
        }
        let n = commands.len();
        // Bounded: openraft may leave a proposal unanswered (seen when this node's log was
        // replaced by a snapshot while it was cut off). Without a bound the batcher — and
        // every write through this node — would wait forever.
        let proposed = std::time::Instant::now();
        let proposal = tokio::time::timeout(
            COMMIT_TIMEOUT,
            self.raft.client_write(Batch { now, commands }),
        )
        .await;
        let Ok(proposal) = proposal else {
            tracing::warn!(
                commands = n,
                "a proposal was not answered within {COMMIT_TIMEOUT:?}"
            );
            let err = ApiError::unavailable(format!(
                "the write was proposed but not confirmed within {COMMIT_TIMEOUT:?} (is the cluster \
                 partitioned?); it may still be applied — retry with the same clientToken"
            ));
            for reply in waiting {
                let _ = reply.send(Err(err.clone()));
            }
            return false;
        };
        match proposal {
            Ok(resp) => {
                self.metrics.observe_proposal(proposed.elapsed(), n);
                let revision = resp.log_id.index;
                debug_assert_eq!(resp.data.len(), n, "one result per command");
                let mut results = resp.data.into_iter();
                for reply in waiting {
                    let r = results
                        .next()
                        .ok_or_else(|| {
                            ApiError::Internal(
                                "the state machine gave fewer answers than commands".into(),
                            )
                        })
                        .map(|res| (revision, res));
                    let _ = reply.send(r);
                }
                true
            }
            Err(e) => {
                let err = match e {
                    RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                        ApiError::NotLeader {
                            leader: f.leader_id,
                        }
                    }
                    other => {
                        ApiError::unavailable(format!("the write could not be committed: {other}"))
                    }
                };
                for reply in waiting {
                    let _ = reply.send(Err(err.clone()));
                }
                false
            }
        }
    }
}

fn request_weight(req: &WriteRequest) -> usize {
    match req {
        WriteRequest::As { request, .. } => request_weight(request),
        WriteRequest::RunTask(r) => r.count.clamp(1, berth_core::limits::MAX_RUN_COUNT) as usize,
        WriteRequest::ReportTasks { reports, .. } => reports.len().max(1),
        _ => 1,
    }
}

/// `command` as made by the holder of token `actor`, when there is one.
fn made_by(actor: Option<String>, command: Command) -> Command {
    match actor {
        None => command,
        Some(accessor) => Command::As {
            accessor,
            command: Box::new(command),
        },
    }
}

/// A request made with a token: prepared as any other, refused unless the token is live
/// and its role allows what the request became, and marked with the token's accessor so
/// that apply checks it again at its place in the log.
fn prepare_as(accessor: String, req: WriteRequest, state: &ClusterState) -> ApiResult<Prepared> {
    let prepared = prepare(req, state)?;
    let need = match &prepared {
        Prepared::Command(c) => berth_core::state::need_of(c)
            .ok_or_else(|| ApiError::invalid("this request is not one a token can make"))?,
        Prepared::Run(_, _, _, Then::RunTasks) | Prepared::Answer(..) => {
            berth_core::access::Need::Write
        }
        // A schedule's launch is the leader's own.
        Prepared::Run(..) => {
            return Err(ApiError::invalid(
                "this request is not one a token can make",
            ))
        }
    };
    state.authorize(&accessor, need)?;
    Ok(match prepared {
        Prepared::Command(c) => Prepared::Command(made_by(Some(accessor), c)),
        Prepared::Run(run, demand, None, then) => Prepared::Run(run, demand, Some(accessor), then),
        Prepared::Run(_, _, Some(_), _) => {
            return Err(ApiError::invalid("a request is made with one token"))
        }
        answer @ Prepared::Answer(..) => answer,
    })
}

/// Turns a request into a command against the applied state. Everything that can be
/// refused is refused here, before it costs a Raft round.
fn prepare(req: WriteRequest, state: &ClusterState) -> ApiResult<Prepared> {
    Ok(match req {
        WriteRequest::As { accessor, request } => prepare_as(accessor, *request, state)?,
        WriteRequest::BootstrapAccessToken(t) => {
            Prepared::Command(Command::BootstrapAccessToken(t))
        }
        WriteRequest::CreateAccessToken(t) => Prepared::Command(Command::CreateAccessToken(t)),
        WriteRequest::CreateNamespace { name, quota } => {
            berth_core::namespace::check_name("name", &name)?;
            Prepared::Command(Command::CreateNamespace { name, quota })
        }
        WriteRequest::SetNamespaceQuota { name, quota } => {
            Prepared::Command(Command::SetNamespaceQuota { name, quota })
        }
        WriteRequest::DeleteNamespace { name } => {
            Prepared::Command(Command::DeleteNamespace { name })
        }
        WriteRequest::PutSecret { name, sealed } => {
            berth_core::secret::check_put(&name, &sealed)?;
            Prepared::Command(Command::PutSecret { name, sealed })
        }
        WriteRequest::DeleteSecret { name } => {
            if state.secret(&name).is_none() {
                return Err(ApiError::NotFound(format!(
                    "secret {} does not exist",
                    quote(&name)
                )));
            }
            Prepared::Command(Command::DeleteSecret { name })
        }
        WriteRequest::RevokeAccessToken { accessor } => {
            Prepared::Command(Command::RevokeAccessToken { accessor })
        }
        WriteRequest::RegisterTaskDefinition(spec) => {
            validate::task_definition(&spec, state.settings().free_sizing)?;
            Prepared::Command(Command::RegisterTaskDefinition { spec })
        }
        WriteRequest::DeregisterTaskDefinition { family, revision } => {
            state.task_definition(&family, Some(revision))?;
            Prepared::Command(Command::DeregisterTaskDefinition { family, revision })
        }
        WriteRequest::StopTask {
            task_id,
            reason,
            namespace,
        } => {
            validate::reason(&reason)?;
            // Another namespace's task is answered as a missing one, word for word.
            let mine = state
                .task(&task_id)
                .is_some_and(|t| berth_core::namespace::of(&t.family) == namespace);
            if !mine {
                return Err(ApiError::NotFound(format!("task {task_id} does not exist")));
            }
            Prepared::Command(Command::StopTask {
                task_id,
                reason,
                code: berth_core::StopCode::UserInitiated,
                namespace: Some(namespace),
            })
        }
        WriteRequest::StopOverdueTask {
            task_id,
            code,
            reason,
        } => Prepared::Command(Command::StopTask {
            task_id,
            reason,
            code,
            namespace: None,
        }),
        WriteRequest::RegisterAgent(reg) => {
            validate::agent(&reg.id, reg.cpu, reg.memory, &reg.attributes)?;
            validate::agent_address(&reg.address)?;
            Prepared::Command(Command::RegisterAgent(reg))
        }
        WriteRequest::UpdateSettings(u) => {
            let mut s = state.settings().clone();
            if let Some(f) = u.free_sizing {
                s.free_sizing = f;
            }
            if let Some(p) = u.vcpu_hour_nanos {
                s.prices.vcpu_hour_nanos = p;
            }
            if let Some(p) = u.gib_hour_nanos {
                s.prices.gib_hour_nanos = p;
            }
            Prepared::Command(Command::UpdateSettings(s))
        }
        WriteRequest::SetAgentStatus {
            agent_id,
            status,
            reason,
        } => {
            if state.agent(&agent_id).is_none() {
                return Err(ApiError::NotFound(format!(
                    "agent {} is not registered",
                    quote(&agent_id)
                )));
            }
            Prepared::Command(Command::SetAgentStatus {
                agent_id,
                status,
                reason,
            })
        }
        WriteRequest::SetAgentEngine {
            agent_id,
            epoch,
            error,
        } => Prepared::Command(Command::SetAgentEngine {
            agent_id,
            epoch,
            error,
        }),
        WriteRequest::ReportTasks {
            agent_id,
            epoch,
            reports,
        } => {
            state.check_reports(&agent_id, epoch, &reports)?;
            Prepared::Command(Command::ReportTasks {
                agent_id,
                epoch,
                reports,
            })
        }
        WriteRequest::RunTask(r) => prepare_run(r, state)?,
        WriteRequest::CreateSchedule(spec) => Prepared::Command(Command::CreateSchedule(*spec)),
        WriteRequest::UpdateSchedule(spec) => Prepared::Command(Command::UpdateSchedule(*spec)),
        WriteRequest::SetSchedulePaused { name, paused } => {
            Prepared::Command(Command::SetSchedulePaused { name, paused })
        }
        WriteRequest::DeleteSchedule { name } => {
            Prepared::Command(Command::DeleteSchedule { name })
        }
        WriteRequest::FireSchedule { fire, run: None } => {
            Prepared::Command(Command::FireSchedule(*fire))
        }
        WriteRequest::FireSchedule {
            fire,
            run: Some(run),
        } => {
            let (time, request, task_run) = *run;
            prepare_launch(request, task_run, Then::Fire(fire, time), state)
        }
        WriteRequest::RetryScheduleRun(retry) => {
            let (task_run, request) = *retry;
            let then = Then::Retry {
                name: task_run.schedule.clone(),
                run_id: task_run.run_id.clone(),
                attempt: task_run.attempt,
            };
            prepare_launch(request, task_run, then, state)
        }
        WriteRequest::CreateService(c) => prepare_create_service(c, state)?,
        WriteRequest::UpdateService(u) => prepare_update_service(u, state)?,
        WriteRequest::DeleteService { name, force } => {
            Prepared::Command(Command::DeleteService { name, force })
        }
        WriteRequest::Tick => Prepared::Command(Command::Tick),
        WriteRequest::PutScalingPolicy { name, policy } => {
            Prepared::Command(Command::PutScalingPolicy { name, policy })
        }
        WriteRequest::AutoscaleService {
            name,
            from,
            to,
            reason,
        } => Prepared::Command(Command::AutoscaleService {
            name,
            from,
            to,
            reason,
        }),
        WriteRequest::RecordUtilization {
            agent_id,
            epoch,
            windows,
        } => Prepared::Command(Command::RecordUtilization {
            agent_id,
            epoch,
            windows,
        }),
        WriteRequest::NoteServiceEvent { name, message } => {
            Prepared::Command(Command::NoteServiceEvent { name, message })
        }
        WriteRequest::StopServiceTasks {
            service,
            task_ids,
            unhealthy,
        } => Prepared::Command(Command::StopServiceTasks {
            service,
            task_ids,
            unhealthy,
        }),
    })
}

fn prepare_create_service(c: CreateService, state: &ClusterState) -> ApiResult<Prepared> {
    validate::qualified_name("serviceName", &c.name)?;
    if let Some(token) = &c.client_token {
        validate::client_token(token)?;
    }
    berth_core::service::desired_count(i64::from(c.desired_count))?;
    // Parsed only to refuse what RunTask would refuse; the service keeps them as given.
    strategies(&c.placement_strategy)?;
    constraints(&c.placement_constraints)?;
    let (family, revision) = validate::task_definition_ref(&c.task_definition)?;
    let def = state.task_definition(&family, revision)?;
    if def.status != berth_core::TaskDefinitionStatus::Active {
        return Err(ApiError::FailedPrecondition(format!(
            "task definition {} is INACTIVE; a service runs an ACTIVE revision",
            def.name()
        )));
    }
    Ok(Prepared::Command(Command::CreateService(ServiceCreate {
        fingerprint: c.fingerprint(),
        name: c.name,
        family,
        revision: def.revision,
        desired_count: c.desired_count,
        placement_strategy: c.placement_strategy,
        placement_constraints: c.placement_constraints,
        deployment_configuration: c.deployment_configuration,
        client_token: c.client_token,
    })))
}

fn prepare_update_service(u: UpdateService, state: &ClusterState) -> ApiResult<Prepared> {
    validate::qualified_name("service", &u.name)?;
    let task_definition = match &u.task_definition {
        None => None,
        Some(r) => {
            let (family, revision) = validate::task_definition_ref(r)?;
            let def = state.task_definition(&family, revision)?;
            Some((family, def.revision))
        }
    };
    Ok(Prepared::Command(Command::UpdateService(ServiceUpdate {
        name: u.name,
        desired_count: u.desired_count,
        task_definition,
        force_new_deployment: u.force_new_deployment,
        deployment_configuration: u.deployment_configuration,
    })))
}

/// A schedule's launch: placed like a RunTask; one that RunTask would refuse (its task
/// definition gone, a secret missing) is proposed unplaced, so its run records why.
fn prepare_launch(
    request: RunTaskRequest,
    task_run: TaskRun,
    then: Then,
    state: &ClusterState,
) -> Prepared {
    let family = request.task_definition.clone();
    match prepare_run(request, state) {
        Ok(Prepared::Run(mut run, demand, actor, _)) => {
            run.run = Some(task_run);
            Prepared::Run(run, demand, actor, then)
        }
        Ok(_) => Prepared::Command(then.command(unplaced(
            family,
            task_run,
            "INTERNAL",
            "the launch was answered without placing",
        ))),
        Err(e) => {
            Prepared::Command(then.command(unplaced(family, task_run, "REFUSED", &e.to_string())))
        }
    }
}

/// A launch that places nothing, for why.
fn unplaced(family: String, task_run: TaskRun, reason: &str, detail: &str) -> RunTasks {
    RunTasks {
        family,
        revision: 0,
        client_token: None,
        fingerprint: 0,
        started_by: String::new(),
        group: String::new(),
        overrides: Vec::new(),
        placements: Vec::new(),
        failures: vec![berth_core::model::Failure {
            reason: reason.into(),
            detail: detail.into(),
        }],
        service: None,
        run: Some(task_run),
        timeouts: Default::default(),
        retry: None,
    }
}

fn prepare_run(r: RunTaskRequest, state: &ClusterState) -> ApiResult<Prepared> {
    validate::run_count(r.count)?;
    validate::timeouts("timeouts", &r.timeouts)?;
    if let Some(p) = &r.retry {
        validate::retry_policy(p)?;
    }
    validate::label("startedBy", &r.started_by)?;
    validate::label("group", &r.group)?;
    if r.service.is_none() && berth_core::service::service_of_group(&r.group).is_some() {
        return Err(ApiError::invalid(format!(
            "group {} is reserved for services (groups starting `service:`)",
            quote(&r.group)
        )));
    }
    let fingerprint = r.fingerprint();
    if let Some(token) = &r.client_token {
        validate::client_token(berth_core::namespace::bare_token(token))?;
        if let Some(answer) = state.replay_token(token, fingerprint) {
            return match answer {
                Ok(outcome) => Ok(Prepared::Answer(state.revision(), Ok(outcome))),
                Err(e) => Err(e.into()),
            };
        }
    }
    let (family, revision) = validate::task_definition_ref(&r.task_definition)?;
    let def = state.task_definition(&family, revision)?;
    if def.status != berth_core::TaskDefinitionStatus::Active {
        return Err(ApiError::FailedPrecondition(format!(
            "task definition {} is INACTIVE; run an ACTIVE revision",
            def.name()
        )));
    }
    validate::overrides(&r.overrides, &def.container_definitions)?;
    // Every secret the task names must be there to start it (checked again when it is
    // sent to its agent).
    let ns = berth_core::namespace::of(&family);
    for c in &def.container_definitions {
        for s in &c.secrets {
            let name = berth_core::namespace::qualified(ns, &s.value_from);
            if state.secret(&name).is_none() {
                return Err(ApiError::FailedPrecondition(format!(
                    "container {}'s {} takes secret {}, which namespace {ns} does not have \
                     (`berth secret put {}`)",
                    c.name,
                    s.name,
                    quote(&s.value_from),
                    s.value_from
                )));
            }
        }
    }
    let group = if r.group.is_empty() {
        format!("family:{family}")
    } else {
        r.group.clone()
    };
    // Each retry launches one task of the same revision with the call's parameters.
    let retry = r.retry.map(|policy| {
        Box::new(RetryLaunch {
            policy,
            launch: RunTaskRequest {
                task_definition: def.name(),
                count: 1,
                client_token: None,
                retry: None,
                ..r.clone()
            },
        })
    });
    let demand = sched::Demand {
        cpu: def.cpu,
        memory: def.memory,
        count: r.count,
        group: group.clone(),
        strategies: strategies(&r.placement_strategy)?,
        constraints: constraints(&r.placement_constraints)?,
    };
    let run = RunTasks {
        family,
        revision: def.revision,
        client_token: r.client_token,
        fingerprint,
        started_by: r.started_by,
        group,
        overrides: r.overrides,
        placements: Vec::new(),
        failures: Vec::new(),
        service: r.service,
        run: None,
        timeouts: r.timeouts,
        retry,
    };
    Ok(Prepared::Run(run, demand, None, Then::RunTasks))
}

pub(crate) fn strategies(s: &[PlacementStrategy]) -> ApiResult<Vec<sched::Strategy>> {
    if s.len() > MAX_STRATEGIES {
        return Err(ApiError::invalid(format!(
            "placementStrategy has {} entries; the limit is {MAX_STRATEGIES}",
            s.len()
        )));
    }
    let parsed = s
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let f = format!("placementStrategy[{i}]");
            if s.field.len() > MAX_STRATEGY_FIELD_LEN {
                return Err(ApiError::invalid(format!(
                    "{f}.field is {} bytes long; the limit is {MAX_STRATEGY_FIELD_LEN} \
                     (`attribute:` and an attribute name)",
                    s.field.len()
                )));
            }
            match s.kind.as_str() {
                "binpack" => match s.field.as_str() {
                    "" => Ok(sched::Strategy::Binpack(sched::BinpackField::Both)),
                    "cpu" | "CPU" => Ok(sched::Strategy::Binpack(sched::BinpackField::Cpu)),
                    "memory" | "MEMORY" => {
                        Ok(sched::Strategy::Binpack(sched::BinpackField::Memory))
                    }
                    other => Err(ApiError::invalid(format!(
                        "{f}.field {}: binpack packs on `cpu` or `memory`",
                        quote(other)
                    ))),
                },
                "spread" => match s.field.as_str() {
                    "instanceId" | "host" => Ok(sched::Strategy::Spread(None)),
                    other => match other.strip_prefix("attribute:") {
                        Some(attr) if validate::is_attribute_name(attr) => {
                            Ok(sched::Strategy::Spread(Some(attr.to_string())))
                        }
                        _ => Err(ApiError::invalid(format!(
                            "{f}.field {}: spread takes `instanceId` or `attribute:NAME` \
                             (a name of letters, digits and `-_.:/`)",
                            quote(other)
                        ))),
                    },
                },
                "random" if s.field.is_empty() => Ok(sched::Strategy::Random),
                "random" => Err(ApiError::invalid(format!(
                    "{f}.field {}: random takes no field",
                    quote(&s.field)
                ))),
                other => Err(ApiError::invalid(format!(
                    "{f}.type {} is not a strategy; use binpack, spread or random",
                    quote(other)
                ))),
            }
        })
        .collect::<ApiResult<Vec<_>>>()?;
    if let Some(k) = sched::unsupported_strategy(&parsed) {
        return Err(ApiError::invalid(format!(
            "placementStrategy[{k}] follows placementStrategy[{}] ({}), which picks the agent; \
             strategies after a binpack or random are not supported (they could only break \
             its ties). Put spreads first, e.g. spread:attribute:zone then binpack:memory",
            k - 1,
            s[k - 1].kind
        )));
    }
    Ok(parsed)
}

pub(crate) fn constraints(c: &[PlacementConstraint]) -> ApiResult<Vec<sched::Constraint>> {
    if c.len() > MAX_CONSTRAINTS {
        return Err(ApiError::invalid(format!(
            "placementConstraints has {} entries; the limit is {MAX_CONSTRAINTS}",
            c.len()
        )));
    }
    c.iter()
        .enumerate()
        .map(|(i, c)| {
            let f = format!("placementConstraints[{i}]");
            match c.kind.as_str() {
                "distinctInstance" => Ok(sched::Constraint::DistinctInstance),
                "memberOf" if !c.expression.trim().is_empty() => {
                    match sched::parse_expression(&c.expression) {
                        Ok(_) => Ok(sched::Constraint::MemberOf(c.expression.clone())),
                        Err(e) => Err(ApiError::invalid(format!(
                            "{f}.expression {}: at byte {}: {}",
                            quote(&c.expression),
                            e.position,
                            e.message
                        ))),
                    }
                }
                "memberOf" => Err(ApiError::invalid(format!(
                    "{f}.expression must not be empty for memberOf"
                ))),
                other => Err(ApiError::invalid(format!(
                    "{f}.type {} is not a constraint; use distinctInstance or memberOf",
                    quote(other)
                ))),
            }
        })
        .collect()
}

/// 32 hex characters, like an ECS task id.
pub fn new_task_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strategy(kind: &str, field: &str) -> PlacementStrategy {
        PlacementStrategy {
            kind: kind.into(),
            field: field.into(),
        }
    }

    fn refused(r: ApiResult<impl std::fmt::Debug>) -> String {
        match r {
            Err(ApiError::InvalidArgument(m)) => m,
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    #[test]
    fn ecs_chain_spread_then_binpack_is_followed() {
        let s = strategies(&[
            strategy("spread", "attribute:zone"),
            strategy("binpack", "memory"),
        ]);
        assert_eq!(
            s,
            Ok(vec![
                sched::Strategy::Spread(Some("zone".into())),
                sched::Strategy::Binpack(sched::BinpackField::Memory),
            ])
        );
    }

    /// Issue 11: everything after the first binpack or random was accepted and ignored.
    #[test]
    fn a_strategy_after_binpack_or_random_is_refused() {
        let m = refused(strategies(&[
            strategy("binpack", "memory"),
            strategy("spread", "attribute:zone"),
        ]));
        assert!(
            m.contains("placementStrategy[1] follows placementStrategy[0] (binpack)"),
            "{m}"
        );
        let m = refused(strategies(&[
            strategy("spread", "instanceId"),
            strategy("random", ""),
            strategy("binpack", "cpu"),
        ]));
        assert!(m.contains("placementStrategy[2]"), "{m}");
        let m = refused(strategies(&[strategy("random", "cpu")]));
        assert!(m.contains("random takes no field"), "{m}");
    }

    #[test]
    fn strategy_fields_are_bounded_and_never_echoed_whole() {
        let long = "z".repeat(100 * 1024);
        let m = refused(strategies(&[strategy(
            "spread",
            &format!("attribute:{long}"),
        )]));
        assert!(
            m.contains("placementStrategy[0].field is 102410 bytes long"),
            "{m}"
        );
        assert!(m.len() < 300, "{} bytes", m.len());
        let m = refused(strategies(&[strategy("spread", "attribute:zo ne")]));
        assert!(m.contains("attribute:NAME"), "{m}");
        let m = refused(strategies(&[strategy(&long, "")]));
        assert!(m.len() < 300 && m.contains("(102400 bytes)"), "{m}");
    }

    #[test]
    fn a_long_expression_is_quoted_by_a_prefix() {
        let expr = format!("attribute:zone == {}", "a".repeat(100 * 1024));
        let m = refused(constraints(&[PlacementConstraint {
            kind: "memberOf".into(),
            expression: expr.clone(),
        }]));
        assert!(m.contains(&format!("({} bytes)", expr.len())), "{m}");
        assert!(m.len() < 300, "{} bytes", m.len());
    }

    fn with_tokens() -> ClusterState {
        use berth_core::access::{AccessToken, Role};
        let mut st = ClusterState::default();
        let token = |n: u8, role| AccessToken {
            accessor: format!("{n:016x}"),
            name: format!("t{n}"),
            role,
            digest: format!("{n:064x}"),
            created_at: 0,
            created_by: String::new(),
            revoked_at: None,
            namespaces: vec!["default".into()],
        };
        let admin = token(1, Role::Admin);
        let batch = |commands| berth_core::Batch { now: 1, commands };
        st.apply(
            1,
            &batch(vec![Command::BootstrapAccessToken(admin.clone())]),
        );
        for t in [token(2, Role::Operator), token(3, Role::Reader)] {
            st.apply(
                2,
                &batch(vec![Command::As {
                    accessor: admin.accessor.clone(),
                    command: Box::new(Command::CreateAccessToken(t)),
                }]),
            );
        }
        st
    }

    fn spec() -> berth_core::TaskDefinitionSpec {
        berth_core::TaskDefinitionSpec {
            family: "web".into(),
            cpu: Some(256),
            memory: Some(512),
            network_mode: None,
            container_definitions: vec![berth_core::ContainerDefinition {
                name: "app".into(),
                image: "berth/workload".into(),
                ..Default::default()
            }],
            timeouts: Default::default(),
        }
    }

    /// A write made with a token is refused before it costs a Raft round when the token
    /// does not allow it, and goes into the log marked with the token otherwise.
    #[test]
    fn a_request_made_with_a_token_is_checked_and_marked() {
        let st = with_tokens();
        let as_ = |n: u8, req| WriteRequest::As {
            accessor: format!("{n:016x}"),
            request: Box::new(req),
        };
        match prepare(as_(2, WriteRequest::RegisterTaskDefinition(spec())), &st) {
            Ok(Prepared::Command(Command::As { accessor, command })) => {
                assert_eq!(accessor, format!("{:016x}", 2));
                assert!(matches!(*command, Command::RegisterTaskDefinition { .. }));
            }
            Ok(_) => panic!("not marked"),
            Err(e) => panic!("{e:?}"),
        }
        let e = prepare(as_(3, WriteRequest::RegisterTaskDefinition(spec())), &st).err();
        assert!(matches!(e, Some(ApiError::PermissionDenied(_))), "{e:?}");
        let e = prepare(as_(9, WriteRequest::RegisterTaskDefinition(spec())), &st).err();
        assert!(matches!(e, Some(ApiError::Unauthenticated(_))), "{e:?}");
        let e = prepare(as_(1, WriteRequest::Tick), &st).err();
        assert!(matches!(e, Some(ApiError::InvalidArgument(_))), "{e:?}");
        let nested = as_(1, as_(2, WriteRequest::RegisterTaskDefinition(spec())));
        assert!(prepare(nested, &st).is_err());
        // An operator does not change settings.
        let e = prepare(
            as_(
                2,
                WriteRequest::UpdateSettings(crate::node::SettingsUpdate::default()),
            ),
            &st,
        )
        .err();
        assert!(matches!(e, Some(ApiError::PermissionDenied(_))), "{e:?}");
    }
}
