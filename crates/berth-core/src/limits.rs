//! Every limit the model enforces, in one place, so the README and the errors agree.

/// Containers per task definition (ECS allows 10).
pub const MAX_CONTAINERS: usize = 10;
/// Tasks started by one RunTask call (ECS allows 10).
pub const MAX_RUN_COUNT: u32 = 10;
/// Ids accepted by one DescribeTasks call (ECS allows 100), and by one WatchTasks call
/// (the same list of ids, so the same bound).
pub const MAX_DESCRIBE: usize = 100;
/// A task definition's encoded size (ECS's limit is 64 KiB of JSON).
pub const MAX_TASK_DEFINITION_BYTES: usize = 64 * 1024;
/// A RunTask's overrides, encoded as JSON (as a definition is measured). Without a total,
/// the per-field limits allowed 10 containers × 256 variables × 8 KiB = 20 MiB on one task,
/// enough to push any answer listing it past gRPC's default 4 MiB client limit; the same
/// 64 KiB as a whole definition is the natural bound (ECS allows 8 KiB).
pub const MAX_OVERRIDES_BYTES: usize = 64 * 1024;
/// Bytes of items in one answer that returns many objects (List pages, DescribeTasks).
/// Half of gRPC's default 4 MiB client limit, so an answer and its envelope stay well
/// under it whatever is stored: a List page ends early and returns `nextToken`. One object
/// is far smaller (a task is bounded by its overrides, a definition by its 64 KiB).
pub const MAX_ANSWER_BYTES: usize = 2 * 1024 * 1024;
/// Bytes of a user's value an error message quotes (see `quote`). Clients drop error
/// metadata past 8–16 KiB, so a message must never grow with the input it refuses.
pub const MAX_QUOTE_BYTES: usize = 64;
/// Length of a family, container name, group or startedBy.
pub const MAX_NAME_LEN: usize = 255;
/// Length of a clientToken (ECS allows 64 characters).
pub const MAX_CLIENT_TOKEN_LEN: usize = 64;
/// Length of any single string inside a definition (image, command word, env value).
pub const MAX_STRING_LEN: usize = 8 * 1024;
/// Environment variables per container.
pub const MAX_ENV: usize = 256;
/// Port mappings per container.
pub const MAX_PORTS: usize = 100;
/// Stop timeout in seconds: default and maximum (Fargate's numbers).
pub const DEFAULT_STOP_TIMEOUT_S: u32 = 30;
/// A container `healthCheck`'s defaults, ECS's.
pub const DEFAULT_HEALTH_INTERVAL_S: u32 = 30;
pub const DEFAULT_HEALTH_TIMEOUT_S: u32 = 5;
pub const DEFAULT_HEALTH_RETRIES: u32 = 3;
pub const MAX_STOP_TIMEOUT_S: u32 = 120;
/// How long a clientToken remembers its first answer: as long as a STOPPED task stays
/// visible, so a replay inside the window still finds the tasks it started. Past it the
/// token is new again (ECS's rule too), so the records grow with the call rate over one
/// hour, not over a day.
pub const CLIENT_TOKEN_TTL_MS: u64 = 60 * 60 * 1000;
/// Most clientToken records kept, whatever the call rate: past it the oldest is forgotten
/// first (at ~150 bytes each, about 15 MB). 100,000 in an hour is 28 RunTasks a second.
pub const MAX_CLIENT_TOKENS: usize = 100_000;
/// How long an agent stays listed DOWN before it is collected (Nomad's node GC threshold).
/// One that registers again afterwards is a new agent.
pub const DOWN_AGENT_RETENTION_MS: u64 = 24 * 60 * 60 * 1000;
/// How long a deregistered (INACTIVE) task definition revision stays describable before it
/// is collected, as soon as no task or service names it any more. Its number is never
/// given to another revision.
pub const INACTIVE_DEFINITION_RETENTION_MS: u64 = 24 * 60 * 60 * 1000;
/// How long a STOPPED task stays visible before it is collected.
pub const STOPPED_TASK_RETENTION_MS: u64 = 60 * 60 * 1000;
/// Length of a stop reason kept on a task.
pub const MAX_REASON_LEN: usize = 1024;
/// An agent's address (HOST:PORT; a DNS name is at most 253 bytes).
pub const MAX_ADDRESS_LEN: usize = 255;
/// Attributes per agent, and the length of a key or value.
pub const MAX_ATTRIBUTES: usize = 64;
pub const MAX_ATTRIBUTE_LEN: usize = 128;
/// A placement strategy's field: `attribute:` and an attribute name, at most.
pub const MAX_STRATEGY_FIELD_LEN: usize = "attribute:".len() + MAX_ATTRIBUTE_LEN;
/// Placement strategies and constraints per RunTask (ECS's limits).
pub const MAX_STRATEGIES: usize = 5;
pub const MAX_CONSTRAINTS: usize = 10;
/// A service's desired count (ECS allows 5,000 tasks per service; 1,000 keeps one service's
/// scheduler pass and describe answer small).
pub const MAX_DESIRED_COUNT: u32 = 1000;
/// Bounds of a service's deployment configuration (ECS's, with maximumPercent capped).
pub const MAX_MIN_HEALTHY_PERCENT: u32 = 100;
pub const MIN_MAXIMUM_PERCENT: u32 = 100;
pub const MAX_MAXIMUM_PERCENT: u32 = 400;
/// A new service task counts as healthy once it has stayed RUNNING (and HEALTHY, where
/// checked) this long, by default (Swarm's update monitor).
pub const DEFAULT_MIN_HEALTHY_TIME_MS: u32 = 5_000;
/// The longest minimum healthy time a service may ask for (ten minutes).
pub const MAX_MIN_HEALTHY_TIME_MS: u32 = 600_000;
/// How long a stopped task's own usage record is kept before it is folded into per-day
/// totals (by family, service and startedBy): a day of per-task detail.
pub const USAGE_RECORD_RETENTION_MS: u64 = 24 * 60 * 60 * 1000;
/// INACTIVE deployments a service keeps for describe.
pub const MAX_INACTIVE_DEPLOYMENTS: usize = 5;
/// Services that are not INACTIVE.
pub const MAX_SERVICES: usize = 1000;
/// Events kept per service, newest first (ECS shows the last 100).
pub const MAX_SERVICE_EVENTS: usize = 100;
/// Length of one service event's message.
pub const MAX_SERVICE_EVENT_LEN: usize = 1024;
/// How long an INACTIVE (deleted) service stays describable.
pub const INACTIVE_SERVICE_RETENTION_MS: u64 = 60 * 60 * 1000;
/// Services per DescribeServices (ECS's limit).
pub const MAX_DESCRIBE_SERVICES: usize = 10;
/// Schedules in the cluster (EventBridge Scheduler's default quota is 1,000,000 per
/// account; ours bounds the leader's pass over them and the state's size).
pub const MAX_SCHEDULES: usize = 20_000;
/// Finished runs (and SKIPPED records) kept per schedule, newest first; live runs are kept
/// whatever their number.
pub const MAX_SCHEDULE_RUNS: usize = 100;
/// Scheduled times one fire decides on at most (skipped ones, counted singly); a schedule
/// further behind is caught up by the next fires.
pub const MAX_TIMES_PER_FIRE: u64 = 10_000;
/// Catch-up window: the default (as the issue promises users) and the bound.
pub const DEFAULT_CATCH_UP_WINDOW_MS: u64 = 60 * 60 * 1000;
pub const MAX_CATCH_UP_WINDOW_MS: u64 = 7 * 24 * 60 * 60 * 1000;
/// Under catch-up `none`, a time fired no later than this after it is on time.
pub const ON_TIME_MS: u64 = 30_000;
/// Retries of a run after its first attempt.
pub const MAX_RETRIES: u32 = 10;
/// No attempt of a run starts later than this after its scheduled time: default, bound.
pub const DEFAULT_RETRY_MAX_AGE_MS: u64 = 60 * 60 * 1000;
pub const MAX_RETRY_MAX_AGE_MS: u64 = 7 * 24 * 60 * 60 * 1000;
/// Back-off before a run's second attempt; it doubles per attempt up to the cap.
pub const RETRY_BACKOFF_BASE_MS: u64 = 5_000;
pub const RETRY_BACKOFF_MAX_MS: u64 = 5 * 60 * 1000;
/// A schedule's jitter.
pub const MAX_JITTER_MS: u64 = 60 * 60 * 1000;
/// A task's start timeout: the default (10 minutes, as a stuck image pull should not hold
/// capacity for longer) and its bounds; a maximum run time's bounds.
pub const DEFAULT_START_TIMEOUT_S: u32 = 600;
pub const MAX_START_TIMEOUT_S: u32 = 24 * 60 * 60;
pub const MAX_RUNTIME_S: u32 = 30 * 24 * 60 * 60;
/// The control plane stops a task its agent should have timed out this long after the
/// limit (and the stop grace): the agent enforces limits itself, even cut off; this is the
/// backstop for an agent that did not.
pub const TIMEOUT_BACKSTOP_MS: u64 = 30_000;
