//! Every limit the model enforces, in one place, so the README and the errors agree.

/// Containers per task definition (ECS allows 10).
pub const MAX_CONTAINERS: usize = 10;
/// Tasks started by one RunTask call (ECS allows 10).
pub const MAX_RUN_COUNT: u32 = 10;
/// Ids accepted by one DescribeTasks call (ECS allows 100).
pub const MAX_DESCRIBE: usize = 100;
/// A task definition's encoded size (ECS's limit is 64 KiB of JSON).
pub const MAX_TASK_DEFINITION_BYTES: usize = 64 * 1024;
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
pub const MAX_STOP_TIMEOUT_S: u32 = 120;
/// How long a clientToken remembers its first answer.
pub const CLIENT_TOKEN_TTL_MS: u64 = 24 * 60 * 60 * 1000;
/// How long a STOPPED task stays visible before it is collected.
pub const STOPPED_TASK_RETENTION_MS: u64 = 60 * 60 * 1000;
/// Length of a stop reason kept on a task.
pub const MAX_REASON_LEN: usize = 1024;
/// Attributes per agent, and the length of a key or value.
pub const MAX_ATTRIBUTES: usize = 64;
pub const MAX_ATTRIBUTE_LEN: usize = 128;
