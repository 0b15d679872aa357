//! Input validation. Every message names the field at fault in the same path syntax a user
//! would write in their file (`containerDefinitions[1].image`).

use std::collections::{BTreeMap, BTreeSet};

use crate::error::Error;
use crate::limits::*;
use crate::model::{
    ContainerDefinition, ContainerOverride, KeyValue, NetworkMode, TaskDefinitionSpec, TaskReport,
};
use crate::quote::quote;
use crate::size;

fn invalid(msg: String) -> Error {
    Error::InvalidArgument(msg)
}

/// Names of families, containers, groups: what ECS allows (letters, digits, `-`, `_`).
pub fn name(field: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(invalid(format!("{field} must not be empty")));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(invalid(format!(
            "{field} is {} characters long; the limit is {MAX_NAME_LEN}",
            value.len()
        )));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(invalid(format!(
            "{field} {} contains `{}`; use letters, digits, `-` and `_` only",
            quote(value),
            c.escape_default()
        )));
    }
    Ok(())
}

/// A family's or service's name as the state holds it: a [`name`], qualified by its
/// namespace unless that is `default` (see [`crate::namespace`]).
pub fn qualified_name(field: &str, value: &str) -> Result<(), Error> {
    if let Some((ns, bare)) = value.split_once('/') {
        crate::namespace::check_name("namespace", ns)?;
        if ns == crate::namespace::DEFAULT_NAMESPACE {
            return Err(invalid(format!(
                "{field} {} names namespace default, whose names are bare",
                quote(value)
            )));
        }
        return name(field, bare);
    }
    name(field, value)
}

/// A container's `secrets`: variable names as `environment`'s, none named twice or also
/// given in `environment`, each taken from a secret name.
fn secrets(p: &str, c: &ContainerDefinition) -> Result<(), Error> {
    use crate::secret::MAX_CONTAINER_SECRETS;
    if c.secrets.len() > MAX_CONTAINER_SECRETS {
        return Err(invalid(format!(
            "{p}.secrets has {} entries; the limit is {MAX_CONTAINER_SECRETS}",
            c.secrets.len()
        )));
    }
    let as_env: Vec<KeyValue> = c
        .secrets
        .iter()
        .map(|s| KeyValue {
            name: s.name.clone(),
            value: String::new(),
        })
        .collect();
    env(&format!("{p}.secrets"), &as_env)?;
    for (j, s) in c.secrets.iter().enumerate() {
        name(&format!("{p}.secrets[{j}].valueFrom"), &s.value_from)?;
        if c.environment.iter().any(|kv| kv.name == s.name) {
            return Err(invalid(format!(
                "{p}.secrets[{j}].name {} is also in environment; give it once",
                quote(&s.name)
            )));
        }
    }
    Ok(())
}

fn bounded(field: &str, value: &str) -> Result<(), Error> {
    if value.len() > MAX_STRING_LEN {
        return Err(invalid(format!(
            "{field} is {} bytes long; the limit is {MAX_STRING_LEN}",
            value.len()
        )));
    }
    Ok(())
}

fn env(field: &str, vars: &[KeyValue]) -> Result<(), Error> {
    if vars.len() > MAX_ENV {
        return Err(invalid(format!(
            "{field} has {} variables; the limit is {MAX_ENV}",
            vars.len()
        )));
    }
    let mut seen = BTreeSet::new();
    for (i, kv) in vars.iter().enumerate() {
        let f = format!("{field}[{i}].name");
        if kv.name.len() > MAX_NAME_LEN {
            return Err(invalid(format!(
                "{f} is {} bytes long; the limit is {MAX_NAME_LEN}",
                kv.name.len()
            )));
        }
        let ok_first = kv
            .name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if !ok_first
            || !kv
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(invalid(format!(
                "{f} {} is not a valid variable name (letters, digits, `_`; not starting with a digit)",
                quote(&kv.name)
            )));
        }
        if !seen.insert(kv.name.as_str()) {
            return Err(invalid(format!("{f} {} is set twice", quote(&kv.name))));
        }
        bounded(&format!("{field}[{i}].value"), &kv.value)?;
    }
    Ok(())
}

fn words(field: &str, words: &[String]) -> Result<(), Error> {
    if words.len() > MAX_ENV {
        return Err(invalid(format!(
            "{field} has {} words; the limit is {MAX_ENV}",
            words.len()
        )));
    }
    for (i, w) in words.iter().enumerate() {
        bounded(&format!("{field}[{i}]"), w)?;
    }
    Ok(())
}

/// ECS's `user`: a user, and optionally `:` and a group, each a name or a number.
fn user(field: &str, value: &str) -> Result<(), Error> {
    const MAX_PART: usize = 32;
    let help = "use `user`, `uid`, `user:group` or `uid:gid`";
    let mut parts = value.split(':');
    let (who, group) = (parts.next().unwrap_or_default(), parts.next());
    if parts.next().is_some() {
        return Err(invalid(format!(
            "{field} {} has more than one `:`; {help}",
            quote(value)
        )));
    }
    for (what, part) in [("user", Some(who)), ("group", group)] {
        let Some(part) = part else { continue };
        if part.is_empty() {
            return Err(invalid(format!(
                "{field} {} has an empty {what}; {help}",
                quote(value)
            )));
        }
        if part.len() > MAX_PART {
            return Err(invalid(format!(
                "{field}'s {what} is {} characters long; the limit is {MAX_PART}",
                part.len()
            )));
        }
        if part.bytes().all(|b| b.is_ascii_digit()) {
            if part.parse::<u32>().is_err() {
                return Err(invalid(format!(
                    "{field}'s {what} id {part} is larger than {}",
                    u32::MAX
                )));
            }
        } else if part.starts_with('-')
            || part
                .chars()
                .any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        {
            return Err(invalid(format!(
                "{field} {} is not a {what} name (letters, digits, `_`, `-` and `.`, not \
                 starting with `-`) or a number",
                quote(part)
            )));
        }
    }
    Ok(())
}

fn container(i: usize, c: &ContainerDefinition) -> Result<(), Error> {
    let p = format!("containerDefinitions[{i}]");
    name(&format!("{p}.name"), &c.name)?;
    if c.image.trim().is_empty() {
        return Err(invalid(format!("{p}.image must not be empty")));
    }
    bounded(&format!("{p}.image"), &c.image)?;
    if c.image.chars().any(char::is_whitespace) {
        return Err(invalid(format!(
            "{p}.image {} contains whitespace",
            quote(&c.image)
        )));
    }
    words(&format!("{p}.command"), &c.command)?;
    words(&format!("{p}.entryPoint"), &c.entry_point)?;
    env(&format!("{p}.environment"), &c.environment)?;
    secrets(&p, c)?;
    if c.port_mappings.len() > MAX_PORTS {
        return Err(invalid(format!(
            "{p}.portMappings has {} entries; the limit is {MAX_PORTS}",
            c.port_mappings.len()
        )));
    }
    for (j, pm) in c.port_mappings.iter().enumerate() {
        let f = format!("{p}.portMappings[{j}]");
        if !(1..=65535).contains(&pm.container_port) {
            return Err(invalid(format!(
                "{f}.containerPort {} is outside 1..=65535",
                pm.container_port
            )));
        }
        if pm.host_port > 65535 {
            return Err(invalid(format!(
                "{f}.hostPort {} is outside 0..=65535",
                pm.host_port
            )));
        }
        if pm.protocol != "tcp" && pm.protocol != "udp" {
            return Err(invalid(format!(
                "{f}.protocol {} must be `tcp` or `udp`",
                quote(&pm.protocol)
            )));
        }
    }
    if let Some(t) = c.stop_timeout {
        if !(1..=MAX_STOP_TIMEOUT_S).contains(&t) {
            return Err(invalid(format!(
                "{p}.stopTimeout {t} s is outside 1..={MAX_STOP_TIMEOUT_S}"
            )));
        }
    }
    if let Some(u) = &c.user {
        user(&format!("{p}.user"), u)?;
    }
    if let Some(hc) = &c.health_check {
        let f = format!("{p}.healthCheck");
        match hc.command.first().map(String::as_str) {
            Some("CMD") | Some("CMD-SHELL") if hc.command.len() >= 2 => {}
            _ => {
                return Err(invalid(format!(
                "{f}.command must be [\"CMD\", prog, args…] or [\"CMD-SHELL\", \"shell command\"]"
            )))
            }
        }
        words(&format!("{f}.command"), &hc.command)?;
        let checks = [
            ("interval", hc.interval, 5, 300),
            ("timeout", hc.timeout, 2, 60),
            ("retries", hc.retries, 1, 10),
            ("startPeriod", hc.start_period, 0, 300),
        ];
        for (n, v, lo, hi) in checks {
            if let Some(v) = v {
                if !(lo..=hi).contains(&v) {
                    return Err(invalid(format!("{f}.{n} {v} is outside {lo}..={hi}")));
                }
            }
        }
    }
    Ok(())
}

/// Checks a task definition and returns its resolved (cpu, memory).
pub fn task_definition(spec: &TaskDefinitionSpec, free_sizing: bool) -> Result<(u32, u32), Error> {
    qualified_name("family", &spec.family)?;
    let n = spec.container_definitions.len();
    if n == 0 {
        return Err(invalid(
            "containerDefinitions must hold at least one container".into(),
        ));
    }
    if n > MAX_CONTAINERS {
        return Err(invalid(format!(
            "containerDefinitions has {n} containers; the limit is {MAX_CONTAINERS}"
        )));
    }
    let mut names = BTreeMap::new();
    for (i, c) in spec.container_definitions.iter().enumerate() {
        container(i, c)?;
        if let Some(first) = names.insert(c.name.as_str(), i) {
            return Err(invalid(format!(
                "containerDefinitions[{i}].name {} is already used by containerDefinitions[{first}]",
                quote(&c.name)
            )));
        }
    }
    network_mode(spec)?;
    timeouts("timeouts", &spec.timeouts)?;
    if !spec.container_definitions.iter().any(|c| c.is_essential()) {
        return Err(invalid(
            "containerDefinitions: at least one container must be essential".into(),
        ));
    }
    let (cpu, memory) = size::resolve(spec.cpu, spec.memory, free_sizing)?;
    let cpu_sum: u64 = spec
        .container_definitions
        .iter()
        .filter_map(|c| c.cpu)
        .map(u64::from)
        .sum();
    if cpu_sum > u64::from(cpu) {
        return Err(invalid(format!(
            "containerDefinitions[*].cpu add up to {cpu_sum} units, more than the task's {cpu}"
        )));
    }
    let mut mem_sum: u64 = 0;
    for (i, c) in spec.container_definitions.iter().enumerate() {
        if let Some(m) = c.memory {
            if m < 6 || m > memory {
                return Err(invalid(format!(
                    "containerDefinitions[{i}].memory {m} MiB must be within 6..={memory} (the task's memory)"
                )));
            }
            mem_sum += u64::from(m);
        }
    }
    if mem_sum > u64::from(memory) {
        return Err(invalid(format!(
            "containerDefinitions[*].memory add up to {mem_sum} MiB, more than the task's {memory}"
        )));
    }
    let encoded = serde_json::to_vec(spec)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if encoded > MAX_TASK_DEFINITION_BYTES {
        return Err(invalid(format!(
            "the task definition is {encoded} bytes encoded; the limit is {MAX_TASK_DEFINITION_BYTES}"
        )));
    }
    Ok((cpu, memory))
}

/// The definition's network mode; `none` leaves nothing to map a port from.
pub fn network_mode(spec: &TaskDefinitionSpec) -> Result<NetworkMode, Error> {
    let Some(s) = spec.network_mode.as_deref() else {
        return Ok(NetworkMode::Bridge);
    };
    let mode = NetworkMode::parse(s).ok_or_else(|| {
        invalid(format!(
            "networkMode {} must be `bridge` or `none` (host networking is not offered: a task gets a network namespace of its own)",
            quote(s)
        ))
    })?;
    if mode == NetworkMode::None {
        if let Some((i, _)) = spec
            .container_definitions
            .iter()
            .enumerate()
            .find(|(_, c)| !c.port_mappings.is_empty())
        {
            return Err(invalid(format!(
                "containerDefinitions[{i}].portMappings: a task with networkMode `none` has no network to publish ports on"
            )));
        }
    }
    Ok(mode)
}

pub fn run_count(count: u32) -> Result<(), Error> {
    if !(1..=MAX_RUN_COUNT).contains(&count) {
        return Err(invalid(format!(
            "count {count} is outside 1..={MAX_RUN_COUNT}"
        )));
    }
    Ok(())
}

pub fn client_token(token: &str) -> Result<(), Error> {
    if token.is_empty() || token.len() > MAX_CLIENT_TOKEN_LEN {
        return Err(invalid(format!(
            "clientToken must be 1..={MAX_CLIENT_TOKEN_LEN} characters, got {}",
            token.len()
        )));
    }
    if !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err(invalid(
            "clientToken must be printable ASCII without spaces".into(),
        ));
    }
    Ok(())
}

/// `startedBy` and `group` are optional free-form labels, bounded.
pub fn label(field: &str, value: &str) -> Result<(), Error> {
    if value.len() > MAX_NAME_LEN {
        return Err(invalid(format!(
            "{field} is {} characters long; the limit is {MAX_NAME_LEN}",
            value.len()
        )));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(invalid(format!("{field} contains a control character")));
    }
    Ok(())
}

pub fn overrides(
    overrides: &[ContainerOverride],
    def: &[ContainerDefinition],
) -> Result<(), Error> {
    let mut seen = BTreeSet::new();
    for (i, o) in overrides.iter().enumerate() {
        let p = format!("overrides.containerOverrides[{i}]");
        if !def.iter().any(|c| c.name == o.name) {
            return Err(invalid(format!(
                "{p}.name {} is not a container of the task definition",
                quote(&o.name)
            )));
        }
        if !seen.insert(o.name.as_str()) {
            return Err(invalid(format!(
                "{p}.name {} is overridden twice",
                quote(&o.name)
            )));
        }
        if let Some(cmd) = &o.command {
            words(&format!("{p}.command"), cmd)?;
        }
        env(&format!("{p}.environment"), &o.environment)?;
    }
    overrides_size(overrides)
}

/// The total of a RunTask's overrides; checked apart so that a node can refuse an
/// oversized request before forwarding it to the leader.
pub fn overrides_size(overrides: &[ContainerOverride]) -> Result<(), Error> {
    let encoded = serde_json::to_vec(overrides)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if encoded > MAX_OVERRIDES_BYTES {
        return Err(invalid(format!(
            "overrides are {encoded} bytes encoded; the limit is {MAX_OVERRIDES_BYTES} for all containers together"
        )));
    }
    Ok(())
}

pub fn reason(reason: &str) -> Result<(), Error> {
    if reason.len() > MAX_REASON_LEN {
        return Err(invalid(format!(
            "reason is {} bytes long; the limit is {MAX_REASON_LEN}",
            reason.len()
        )));
    }
    Ok(())
}

/// What an agent reports about a task is stored on it and listed with it, so it is bounded
/// like anything a user sends: a stop reason and each container's reason, the containers.
pub fn report(r: &TaskReport) -> Result<(), Error> {
    reason(r.stopped_reason.as_deref().unwrap_or_default())?;
    if r.containers.len() > MAX_CONTAINERS {
        return Err(invalid(format!(
            "task {}: {} containers reported; a task has at most {MAX_CONTAINERS}",
            quote(&r.task_id),
            r.containers.len()
        )));
    }
    for (i, c) in r.containers.iter().enumerate() {
        if c.name.len() > MAX_NAME_LEN
            || c.reason.as_ref().is_some_and(|x| x.len() > MAX_REASON_LEN)
        {
            return Err(invalid(format!(
                "task {}: containers[{i}] has a name over {MAX_NAME_LEN} bytes or a reason over {MAX_REASON_LEN}",
                quote(&r.task_id)
            )));
        }
        // Each published port may be bound on IPv4 and IPv6.
        let too_long = c
            .network_bindings
            .iter()
            .any(|b| b.bind_ip.len() > MAX_ADDRESS_LEN || b.protocol.len() > 8);
        if c.network_bindings.len() > 2 * MAX_PORTS || too_long {
            return Err(invalid(format!(
                "task {}: containers[{i}] reports {} network bindings (at most {}) or one \
                 with an over-long address",
                quote(&r.task_id),
                c.network_bindings.len(),
                2 * MAX_PORTS
            )));
        }
    }
    Ok(())
}

/// Where an agent serves logs: stored with the agent and listed with it, so bounded.
pub fn agent_address(address: &str) -> Result<(), Error> {
    if address.len() > MAX_ADDRESS_LEN {
        return Err(invalid(format!(
            "address is {} bytes long; the limit is {MAX_ADDRESS_LEN} (HOST:PORT)",
            address.len()
        )));
    }
    Ok(())
}

/// An agent's registration: id, capacity and attributes.
pub fn agent(
    id: &str,
    cpu: u32,
    memory: u32,
    attributes: &BTreeMap<String, String>,
) -> Result<(), Error> {
    name("agent id", id)?;
    if cpu == 0 || memory == 0 {
        return Err(invalid(format!(
            "agent {}: cpu and memory must both be above zero (got cpu {cpu}, memory {memory})",
            quote(id)
        )));
    }
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(invalid(format!(
            "agent {}: {} attributes; the limit is {MAX_ATTRIBUTES}",
            quote(id),
            attributes.len()
        )));
    }
    for (k, v) in attributes {
        if !is_attribute_name(k) {
            return Err(invalid(format!(
                "agent {}: attribute name {} must be 1..={MAX_ATTRIBUTE_LEN} of letters, digits, `-_.:/`",
                quote(id),
                quote(k)
            )));
        }
        if v.len() > MAX_ATTRIBUTE_LEN || v.chars().any(|c| c.is_control()) {
            return Err(invalid(format!(
                "agent {}: attribute {} value must be at most {MAX_ATTRIBUTE_LEN} printable characters",
                quote(id),
                quote(k)
            )));
        }
    }
    Ok(())
}

/// Whether `k` may name an agent attribute: what an agent may register, and so all a
/// placement rule can usefully name.
pub fn is_attribute_name(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= MAX_ATTRIBUTE_LEN
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c))
}

/// Parses `family` or `family:revision`.
/// A task's time limits, in a definition or as a RunTask's or schedule's overrides: `field`
/// names where they were given.
pub fn timeouts(field: &str, t: &crate::model::Timeouts) -> Result<(), Error> {
    if let Some(s) = t.start_timeout {
        if s == 0 || s > MAX_START_TIMEOUT_S {
            return Err(invalid(format!(
                "{field}.startTimeout is {s} s; it must be 1..{MAX_START_TIMEOUT_S} (a day)"
            )));
        }
    }
    if let Some(s) = t.max_runtime {
        if s == 0 || s > MAX_RUNTIME_S {
            return Err(invalid(format!(
                "{field}.maxRuntime is {s} s; it must be 1..{MAX_RUNTIME_S} (30 days)"
            )));
        }
    }
    Ok(())
}

/// A retry policy: at most [`MAX_RETRIES`] retries, an age in bounds and long enough for
/// the first back-off when there are retries.
pub fn retry_policy(p: &crate::schedule::RetryPolicy) -> Result<(), Error> {
    use crate::limits::{MAX_RETRIES, MAX_RETRY_MAX_AGE_MS, RETRY_BACKOFF_BASE_MS};
    if p.retries > MAX_RETRIES {
        return Err(invalid(format!(
            "retries is {}; the limit is {MAX_RETRIES}",
            p.retries
        )));
    }
    if p.max_age_ms == 0 || p.max_age_ms > MAX_RETRY_MAX_AGE_MS {
        return Err(invalid(format!(
            "retryMaxAgeMs is {} ms; it must be 1..{MAX_RETRY_MAX_AGE_MS} (7 days)",
            p.max_age_ms
        )));
    }
    if p.retries > 0 && p.max_age_ms < RETRY_BACKOFF_BASE_MS {
        return Err(invalid(format!(
            "retryMaxAgeMs ({} ms) is shorter than the first retry's back-off \
             ({RETRY_BACKOFF_BASE_MS} ms): no retry could ever start",
            p.max_age_ms
        )));
    }
    Ok(())
}

pub fn task_definition_ref(s: &str) -> Result<(String, Option<u32>), Error> {
    let (family, rev) = match s.split_once(':') {
        Some((f, r)) => {
            let rev: u32 = r.parse().map_err(|_| {
                invalid(format!(
                    "taskDefinition {}: revision {} is not a positive number",
                    quote(s),
                    quote(r)
                ))
            })?;
            if rev == 0 {
                return Err(invalid(format!(
                    "taskDefinition {}: revisions start at 1",
                    quote(s)
                )));
            }
            (f, Some(rev))
        }
        None => (s, None),
    };
    qualified_name("taskDefinition family", family)?;
    Ok((family.to_string(), rev))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TaskDefinitionSpec {
        TaskDefinitionSpec {
            family: "web".into(),
            cpu: Some(256),
            memory: Some(512),
            network_mode: None,
            container_definitions: vec![ContainerDefinition {
                name: "app".into(),
                image: "berth/workload".into(),
                ..Default::default()
            }],
            timeouts: Default::default(),
        }
    }

    fn err(spec: &TaskDefinitionSpec) -> String {
        task_definition(spec, false).unwrap_err().to_string()
    }

    #[test]
    fn accepts_a_plain_definition() {
        assert_eq!(task_definition(&spec(), false), Ok((256, 512)));
    }

    #[test]
    fn network_modes() {
        assert_eq!(network_mode(&spec()), Ok(NetworkMode::Bridge));
        let mut s = spec();
        s.network_mode = Some("none".into());
        assert_eq!(network_mode(&s), Ok(NetworkMode::None));
        assert!(task_definition(&s, false).is_ok());

        s.network_mode = Some("host".into());
        let e = err(&s);
        assert!(
            e.contains("networkMode `host` must be `bridge` or `none`"),
            "{e}"
        );

        let mut s = spec();
        s.network_mode = Some("none".into());
        s.container_definitions.push(ContainerDefinition {
            name: "web".into(),
            image: "berth/workload".into(),
            port_mappings: vec![crate::model::PortMapping {
                container_port: 80,
                host_port: 0,
                protocol: "tcp".into(),
            }],
            ..Default::default()
        });
        let e = err(&s);
        assert!(
            e.contains("containerDefinitions[1].portMappings: a task with networkMode `none`"),
            "{e}"
        );
        s.network_mode = Some("bridge".into());
        assert!(task_definition(&s, false).is_ok());
    }

    #[test]
    fn users_as_ecs_takes_them() {
        for ok in [
            "nobody",
            "65534",
            "65534:65534",
            "app:staff",
            "1000:staff",
            "www-data.x",
        ] {
            let mut s = spec();
            s.container_definitions[0].user = Some(ok.into());
            assert!(task_definition(&s, false).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("", "empty user"),
            (":100", "empty user"),
            ("app:", "empty group"),
            ("a:b:c", "more than one `:`"),
            ("root user", "not a user name"),
            ("-rf", "not a user name"),
            ("app:st/aff", "not a group name"),
            ("4294967296", "larger than 4294967295"),
            ("abcdefghijklmnopqrstuvwxyz0123456", "33 characters long"),
        ] {
            let mut s = spec();
            s.container_definitions[0].user = Some(bad.into());
            let e = err(&s);
            assert!(e.contains("containerDefinitions[0].user"), "{e}");
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn names_the_field_at_fault() {
        let mut s = spec();
        s.container_definitions[0].image = " ".into();
        assert!(err(&s).contains("containerDefinitions[0].image"));

        let mut s = spec();
        s.container_definitions
            .push(s.container_definitions[0].clone());
        let e = err(&s);
        assert!(
            e.contains("containerDefinitions[1].name `app` is already used"),
            "{e}"
        );

        let mut s = spec();
        s.container_definitions = (0..11)
            .map(|i| ContainerDefinition {
                name: format!("c{i}"),
                image: "x".into(),
                ..Default::default()
            })
            .collect();
        assert!(err(&s).contains("limit is 10"));

        let mut s = spec();
        s.container_definitions.clear();
        assert!(err(&s).contains("at least one container"));

        let mut s = spec();
        s.family = "bad family".into();
        assert!(err(&s).contains("family"));

        let mut s = spec();
        s.memory = Some(600);
        assert!(err(&s).contains("memory: 600"));

        let mut s = spec();
        s.container_definitions[0].stop_timeout = Some(121);
        assert!(err(&s).contains("stopTimeout"));

        let mut s = spec();
        s.container_definitions[0].environment = vec![KeyValue {
            name: "1X".into(),
            value: "v".into(),
        }];
        assert!(err(&s).contains("environment[0].name"));

        let mut s = spec();
        s.container_definitions[0].essential = Some(false);
        assert!(err(&s).contains("essential"));

        let mut s = spec();
        s.container_definitions[0].environment = vec![KeyValue {
            name: "BIG".into(),
            value: "x".repeat(MAX_STRING_LEN + 1),
        }];
        assert!(err(&s).contains("environment[0].value"));
    }

    #[test]
    fn whole_definition_size_is_bounded() {
        let mut s = spec();
        s.container_definitions[0].environment = (0..20)
            .map(|i| KeyValue {
                name: format!("V{i}"),
                value: "x".repeat(MAX_STRING_LEN - 10),
            })
            .collect();
        assert!(err(&s).contains("bytes encoded"));
    }

    /// The fault from issue 11: every override within its per-field limits, 6 MB in all.
    #[test]
    fn overrides_have_a_total_limit() {
        let def: Vec<ContainerDefinition> = (0..3)
            .map(|i| ContainerDefinition {
                name: format!("c{i}"),
                image: "img".into(),
                ..Default::default()
            })
            .collect();
        let big = |name: &str, vars: usize, len: usize| ContainerOverride {
            name: name.into(),
            command: None,
            environment: (0..vars)
                .map(|i| KeyValue {
                    name: format!("V{i}"),
                    value: "x".repeat(len),
                })
                .collect(),
        };
        let huge: Vec<ContainerOverride> = (0..3)
            .map(|i| big(&format!("c{i}"), MAX_ENV, 8000))
            .collect();
        let e = overrides(&huge, &def).unwrap_err().to_string();
        assert!(
            e.contains("overrides are") && e.contains("limit is 65536"),
            "{e}"
        );
        assert!(e.len() < 200, "{e}");
        assert!(overrides_size(&huge).is_err());
        // Just under the limit is accepted.
        let fits = vec![big("c0", 8, 8000)];
        assert!(overrides(&fits, &def).is_ok());
    }

    #[test]
    fn messages_quote_a_prefix_of_long_values() {
        let long = "y".repeat(100 * 1024);
        let mut s = spec();
        s.container_definitions[0].image = format!("{long} x");
        assert!(err(&s).len() < 200, "{}", err(&s));
        let mut s = spec();
        s.container_definitions[0].environment = vec![KeyValue {
            name: long.clone(),
            value: String::new(),
        }];
        let e = err(&s);
        assert!(
            e.contains("environment[0].name is 102400 bytes long"),
            "{e}"
        );
        let mut s = spec();
        s.container_definitions[0].environment = vec![KeyValue {
            name: format!("1{}", "x".repeat(200)),
            value: String::new(),
        }];
        let e = err(&s);
        assert!(e.contains("(201 bytes)") && e.len() < 300, "{e}");
        let e = task_definition_ref(&format!("web:{long}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("(102404 bytes)") && e.len() < 300, "{e}");
        let attrs = BTreeMap::from([(long.clone(), "v".to_string())]);
        let e = agent("a1", 1, 1, &attrs).unwrap_err().to_string();
        assert!(e.contains("(102400 bytes)") && e.len() < 300, "{e}");
    }

    #[test]
    fn what_agents_store_is_bounded() {
        assert!(agent_address("10.0.0.7:7600").is_ok());
        let e = agent_address(&"h".repeat(1 << 20)).unwrap_err().to_string();
        assert!(e.contains("address is 1048576 bytes long"), "{e}");
        let mut r = TaskReport {
            task_id: "t".into(),
            last_status: crate::model::TaskState::Running,
            at: 1,
            containers: vec![],
            stop_code: None,
            stopped_reason: None,
        };
        assert!(report(&r).is_ok());
        r.containers = vec![
            crate::model::ContainerState {
                name: "app".into(),
                last_status: crate::model::TaskState::Running,
                exit_code: None,
                reason: Some("x".repeat(MAX_REASON_LEN + 1)),
                health_status: None,
                network_bindings: vec![],
            };
            1
        ];
        assert!(report(&r)
            .unwrap_err()
            .to_string()
            .contains("containers[0]"));
        r.containers[0].reason = None;
        r.containers = vec![r.containers[0].clone(); MAX_CONTAINERS + 1];
        assert!(report(&r).is_err());
    }

    #[test]
    fn counts_and_tokens() {
        assert!(run_count(0).is_err());
        assert!(run_count(11).is_err());
        assert!(run_count(10).is_ok());
        assert!(client_token("").is_err());
        assert!(client_token(&"a".repeat(65)).is_err());
        assert!(client_token("abc-123").is_ok());
    }

    #[test]
    fn task_definition_refs() {
        assert_eq!(task_definition_ref("web"), Ok(("web".into(), None)));
        assert_eq!(task_definition_ref("web:3"), Ok(("web".into(), Some(3))));
        assert!(task_definition_ref("web:0").is_err());
        assert!(task_definition_ref("web:x").is_err());
        assert!(task_definition_ref(":3").is_err());
    }
}
