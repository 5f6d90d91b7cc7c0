//! What makes an object acceptable to the model, whichever source it came from.
//!
//! Every check a proxy would otherwise have to make (and NACK) is made here once:
//! addresses parse, SPIFFE IDs parse with the same parser the proxies use, ports are
//! in 1..=65535, regular expressions compile, names are Kubernetes names. A failure
//! names the field by its path in the API's own camelCase spelling
//! (`spec.endpoints[0].address`), which is what an operator wrote and what the file
//! source turns into a line number.

use std::collections::HashSet;
use std::net::IpAddr;

use trellis_identity::SpiffeId;
use trellis_proto::discovery::v1 as pb;
use trellis_proto::discovery::v1::{authorization_policy, header_match, path_match, service_port};

use super::{Object, POD_ENDPOINTS_PREFIX};
use crate::error::Invalid;

/// Checks `object`; the first problem found is returned.
pub fn validate(object: &Object) -> Result<(), Invalid> {
    metadata(object)?;
    match object {
        Object::Service(service) => self::service(service),
        Object::Endpoints(endpoints) => self::endpoints(endpoints),
        Object::Route(route) => self::route(route),
        Object::AuthorizationPolicy(policy) => self::policy(policy),
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

fn metadata(object: &Object) -> Result<(), Invalid> {
    check_label(object.namespace(), "metadata.namespace")?;
    match object {
        // A pod's own endpoints: `pod.` and the pod's name, a DNS subdomain.
        Object::Endpoints(_) if object.name().starts_with(POD_ENDPOINTS_PREFIX) => {
            let pod = &object.name()[POD_ENDPOINTS_PREFIX.len()..];
            check_subdomain(pod, "metadata.name")
        }
        // A service's name becomes a DNS label (`web.shop.svc…`), as in Kubernetes.
        Object::Service(_) | Object::Endpoints(_) => check_label(object.name(), "metadata.name"),
        _ => check_subdomain(object.name(), "metadata.name"),
    }
}

fn service(service: &pb::Service) -> Result<(), Invalid> {
    let mut ips = HashSet::new();
    for (i, ip) in service.cluster_ips.iter().enumerate() {
        let field = format!("spec.clusterIPs[{i}]");
        let parsed = check_ip(ip, &field)?;
        if !ips.insert(parsed) {
            return Err(invalid(field, format!("{ip} is listed twice")));
        }
    }
    let (mut names, mut numbers) = (HashSet::new(), HashSet::new());
    for (i, port) in service.ports.iter().enumerate() {
        let at = |field: &str| format!("spec.ports[{i}].{field}");
        if port.name.is_empty() {
            if service.ports.len() > 1 {
                return Err(invalid(
                    at("name"),
                    "a service with several ports must name each of them",
                ));
            }
        } else {
            check_label(&port.name, &at("name"))?;
            if !names.insert(&port.name) {
                return Err(invalid(
                    at("name"),
                    format!("port name {:?} is used twice", port.name),
                ));
            }
        }
        check_port(port.port, &at("port"))?;
        if !numbers.insert(port.port) {
            return Err(invalid(
                at("port"),
                format!("port {} is listed twice", port.port),
            ));
        }
        match &port.target {
            Some(service_port::Target::TargetPort(number)) => {
                check_port(*number, &at("targetPort"))?
            }
            Some(service_port::Target::TargetPortName(name)) => {
                check_port_name(name, &at("targetPort"))?
            }
            None => return Err(invalid(at("targetPort"), "missing")),
        }
        if pb::Protocol::try_from(port.protocol).is_err() {
            return Err(invalid(
                at("protocol"),
                format!("unknown protocol {}", port.protocol),
            ));
        }
    }
    Ok(())
}

fn endpoints(endpoints: &pb::Endpoints) -> Result<(), Invalid> {
    let mut addresses = HashSet::new();
    for (i, endpoint) in endpoints.endpoints.iter().enumerate() {
        let at = |field: &str| format!("spec.endpoints[{i}].{field}");
        let address = check_ip(&endpoint.address, &at("address"))?;
        if !addresses.insert(address) {
            return Err(invalid(
                at("address"),
                format!("{address} is listed twice; give it one entry with every port"),
            ));
        }
        let mut names = HashSet::new();
        for (j, port) in endpoint.ports.iter().enumerate() {
            check_port(port.port, &at(&format!("ports[{j}].port")))?;
            if !port.name.is_empty() {
                check_label(&port.name, &at(&format!("ports[{j}].name")))?;
                if !names.insert(&port.name) {
                    return Err(invalid(
                        at(&format!("ports[{j}].name")),
                        format!("port name {:?} is used twice", port.name),
                    ));
                }
            }
        }
        if !endpoint.identity.is_empty() {
            check_spiffe_id(&endpoint.identity, &at("identity"))?;
        }
        if !endpoint.pod.is_empty() {
            let Some((namespace, name)) = endpoint.pod.split_once('/') else {
                return Err(invalid(at("pod"), "expected namespace/name"));
            };
            check_label(namespace, &at("pod"))?;
            check_subdomain(name, &at("pod"))?;
        }
    }
    Ok(())
}

fn route(route: &pb::Route) -> Result<(), Invalid> {
    if route.parents.is_empty() {
        return Err(invalid(
            "spec.parents",
            "a route must name at least one service it applies to",
        ));
    }
    for (i, parent) in route.parents.iter().enumerate() {
        let at = |field: &str| format!("spec.parents[{i}].{field}");
        check_label(&parent.service, &at("service"))?;
        check_label(&parent.namespace, &at("namespace"))?;
        if parent.port > u32::from(u16::MAX) {
            return Err(invalid(at("port"), "must be 0 (every port) or 1-65535"));
        }
    }
    if route.rules.is_empty() {
        return Err(invalid("spec.rules", "a route needs at least one rule"));
    }
    for (i, rule) in route.rules.iter().enumerate() {
        for (j, matched) in rule.matches.iter().enumerate() {
            route_match(matched, &format!("spec.rules[{i}].matches[{j}]"))?;
        }
        if rule.backends.is_empty() {
            return Err(invalid(
                format!("spec.rules[{i}].backends"),
                "a rule needs at least one backend",
            ));
        }
        for (j, backend) in rule.backends.iter().enumerate() {
            let at = |field: &str| format!("spec.rules[{i}].backends[{j}].{field}");
            check_label(&backend.service, &at("service"))?;
            check_label(&backend.namespace, &at("namespace"))?;
            check_port(backend.port, &at("port"))?;
        }
    }
    Ok(())
}

fn route_match(matched: &pb::RouteMatch, at: &str) -> Result<(), Invalid> {
    if let Some(path) = &matched.path {
        match path_match::Kind::try_from(path.kind) {
            Ok(path_match::Kind::Exact | path_match::Kind::Prefix) => {
                if !path.value.starts_with('/') {
                    return Err(invalid(format!("{at}.path.value"), "a path starts with /"));
                }
            }
            Ok(path_match::Kind::Regex) => check_regex(&path.value, &format!("{at}.path.value"))?,
            Ok(path_match::Kind::Unspecified) | Err(_) => {
                return Err(invalid(
                    format!("{at}.path.type"),
                    "give Exact, Prefix or RegularExpression",
                ));
            }
        }
    }
    for (k, header) in matched.headers.iter().enumerate() {
        let at = format!("{at}.headers[{k}]");
        if header.name.is_empty() || !header.name.bytes().all(is_token_byte) {
            return Err(invalid(format!("{at}.name"), "not an HTTP header name"));
        }
        match &header.value {
            Some(header_match::Value::Exact(_)) => {}
            Some(header_match::Value::Regex(regex)) => check_regex(regex, &format!("{at}.regex"))?,
            None => return Err(invalid(at, "give value or regex")),
        }
    }
    if !matched.method.is_empty() {
        check_method(&matched.method, &format!("{at}.method"))?;
    }
    Ok(())
}

fn policy(policy: &pb::AuthorizationPolicy) -> Result<(), Invalid> {
    if !policy.target_service.is_empty() {
        check_label(&policy.target_service, "spec.targetService")?;
    }
    if authorization_policy::Action::try_from(policy.action).is_err() {
        return Err(invalid(
            "spec.action",
            format!("unknown action {}", policy.action),
        ));
    }
    for (i, rule) in policy.rules.iter().enumerate() {
        let at = |field: &str, j: usize| format!("spec.rules[{i}].{field}[{j}]");
        for (j, principal) in rule.principals.iter().enumerate() {
            if principal != "*" {
                check_spiffe_id(principal, &at("principals", j))?;
            }
        }
        for (j, namespace) in rule.namespaces.iter().enumerate() {
            if namespace != "*" {
                check_label(namespace, &at("namespaces", j))?;
            }
        }
        for (j, method) in rule.methods.iter().enumerate() {
            if method != "*" {
                check_method(method, &at("methods", j))?;
            }
        }
        for (j, path) in rule.paths.iter().enumerate() {
            if path != "*" && !path.starts_with('/') {
                return Err(invalid(at("paths", j), "a path starts with / (or is *)"));
            }
        }
        for (j, port) in rule.ports.iter().enumerate() {
            check_port(*port, &at("ports", j))?;
        }
    }
    Ok(())
}

fn check_ip(value: &str, field: &str) -> Result<IpAddr, Invalid> {
    value
        .parse()
        .map_err(|_| invalid(field, format!("{value:?} is not an IP address")))
}

fn check_port(port: u32, field: &str) -> Result<(), Invalid> {
    if (1..=u32::from(u16::MAX)).contains(&port) {
        Ok(())
    } else {
        Err(invalid(field, format!("{port} is not a port (1-65535)")))
    }
}

fn check_spiffe_id(value: &str, field: &str) -> Result<(), Invalid> {
    value
        .parse::<SpiffeId>()
        .map(drop)
        .map_err(|e| invalid(field, e.to_string()))
}

fn check_regex(value: &str, field: &str) -> Result<(), Invalid> {
    regex::Regex::new(value)
        .map(drop)
        .map_err(|e| invalid(field, format!("not a regular expression: {e}")))
}

fn check_method(value: &str, field: &str) -> Result<(), Invalid> {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{value:?} is not an HTTP method (GET, POST, …)"),
        ))
    }
}

/// A DNS-1123 label: what Kubernetes requires of namespaces and service names.
fn check_label(value: &str, field: &str) -> Result<(), Invalid> {
    if value.is_empty() {
        return Err(invalid(field, "missing"));
    }
    let ok = value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "{value:?} is not a DNS label (lower case letters, digits and '-', at most 63)"
            ),
        ))
    }
}

/// A DNS-1123 subdomain: what Kubernetes requires of most object names.
fn check_subdomain(value: &str, field: &str) -> Result<(), Invalid> {
    if value.is_empty() {
        return Err(invalid(field, "missing"));
    }
    let ok = value.len() <= 253
        && value.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{value:?} is not a DNS name (lower case letters, digits, '-' and '.')"),
        ))
    }
}

/// A named port (IANA service name, as Kubernetes' `targetPort: http`): at most 15
/// characters, at least one letter, so that it can never be read as a number.
fn check_port_name(value: &str, field: &str) -> Result<(), Invalid> {
    let ok = !value.is_empty()
        && value.len() <= 15
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && value.bytes().any(|b| b.is_ascii_lowercase())
        && !value.starts_with('-')
        && !value.ends_with('-')
        && !value.contains("--");
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "{value:?} is neither a port number nor a port name (at most 15 lower case letters, digits and '-')"
            ),
        ))
    }
}

/// RFC 9110 token characters, which header names are made of.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
