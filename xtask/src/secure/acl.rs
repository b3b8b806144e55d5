//! Kafka ACLs, created through librdkafka's `CreateAcls` (rust-rdkafka has no ACL API, and
//! Kafka's `kafka-acls` tool would cost a JVM start per resource type).

use std::ffi::{CStr, CString, c_char};

use anyhow::{Context as _, bail};
use rdkafka::{admin::AdminClient, bindings as rd, client::DefaultClientContext};

/// A resource an ACL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Topic,
    Group,
    TransactionalId,
}

/// How the resource name matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    Literal,
    Prefixed,
}

/// An operation an ACL allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Read,
    Write,
    Describe,
    DescribeConfigs,
}

/// One `ALLOW` ACL for a principal `User:<user>` from any host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    pub user: String,
    pub resource: Resource,
    pub pattern: Pattern,
    pub name: String,
    pub operation: Operation,
}

impl Acl {
    /// The ACLs allowing `user` each of `operations` on each of `names`.
    pub fn allow(
        user: &str,
        resource: Resource,
        pattern: Pattern,
        names: &[&str],
        operations: &[Operation],
    ) -> Vec<Acl> {
        names
            .iter()
            .flat_map(|name| {
                operations.iter().map(move |&operation| Acl {
                    user: user.to_owned(),
                    resource,
                    pattern,
                    name: (*name).to_owned(),
                    operation,
                })
            })
            .collect()
    }
}

/// A librdkafka ACL binding, destroyed on drop.
struct Binding(*mut rd::rd_kafka_AclBinding_t);

impl Drop for Binding {
    fn drop(&mut self) {
        #[allow(unsafe_code)] // reason: frees the binding rd_kafka_AclBinding_new returned
        unsafe {
            rd::rd_kafka_AclBinding_destroy(self.0)
        }
    }
}

fn c(s: &str) -> anyhow::Result<CString> {
    CString::new(s).with_context(|| format!("{s:?} holds a NUL byte"))
}

fn text(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    #[allow(unsafe_code)] // reason: librdkafka returns NUL-terminated strings it owns
    unsafe {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// Creates `acls` (creating an existing ACL again is a no-op for Kafka). Blocks up to 60 s.
pub fn create(admin: &AdminClient<DefaultClientContext>, acls: &[Acl]) -> anyhow::Result<()> {
    if acls.is_empty() {
        return Ok(());
    }
    let mut errstr = [0 as c_char; 512];
    let host = c("*")?;
    let mut bindings = Vec::with_capacity(acls.len());
    for acl in acls {
        let name = c(&acl.name)?;
        let principal = c(&format!("User:{}", acl.user))?;
        let restype = match acl.resource {
            Resource::Topic => rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TOPIC,
            Resource::Group => rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_GROUP,
            Resource::TransactionalId => {
                rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TRANSACTIONAL_ID
            }
        };
        let pattern = match acl.pattern {
            Pattern::Literal => {
                rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_LITERAL
            }
            Pattern::Prefixed => {
                rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_PREFIXED
            }
        };
        let op = match acl.operation {
            Operation::Read => rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_READ,
            Operation::Write => rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_WRITE,
            Operation::Describe => rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_DESCRIBE,
            Operation::DescribeConfigs => {
                rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_DESCRIBE_CONFIGS
            }
        };
        #[allow(unsafe_code)] // reason: every pointer is a live CString or our error buffer
        let b = unsafe {
            rd::rd_kafka_AclBinding_new(
                restype,
                name.as_ptr(),
                pattern,
                principal.as_ptr(),
                host.as_ptr(),
                op,
                rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW,
                errstr.as_mut_ptr(),
                errstr.len(),
            )
        };
        if b.is_null() {
            bail!("invalid ACL {acl:?}: {}", text(errstr.as_ptr()));
        }
        bindings.push(Binding(b));
    }
    let rk = admin.inner().native_ptr();
    let mut ptrs: Vec<*mut rd::rd_kafka_AclBinding_t> = bindings.iter().map(|b| b.0).collect();
    #[allow(unsafe_code)]
    // reason: librdkafka's admin API; the queue, options and event are destroyed before return
    // and the bindings outlive the call
    unsafe {
        let queue = rd::rd_kafka_queue_new(rk);
        let options = rd::rd_kafka_AdminOptions_new(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_CREATEACLS,
        );
        rd::rd_kafka_AdminOptions_set_request_timeout(
            options,
            30_000,
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        rd::rd_kafka_CreateAcls(rk, ptrs.as_mut_ptr(), ptrs.len(), options, queue);
        let event = rd::rd_kafka_queue_poll(queue, 60_000);
        let outcome = if event.is_null() {
            Err(anyhow::anyhow!("CreateAcls got no answer within 60 s"))
        } else if rd::rd_kafka_event_error(event) as i32 != 0 {
            Err(anyhow::anyhow!(
                "CreateAcls failed: {}",
                text(rd::rd_kafka_event_error_string(event))
            ))
        } else {
            let result = rd::rd_kafka_event_CreateAcls_result(event);
            let mut count = 0usize;
            let results = rd::rd_kafka_CreateAcls_result_acls(result, &mut count);
            let failures: Vec<String> = (0..count)
                .filter_map(|i| {
                    let e = rd::rd_kafka_acl_result_error(*results.add(i));
                    (!e.is_null() && rd::rd_kafka_error_code(e) as i32 != 0)
                        .then(|| format!("{:?}: {}", acls[i], text(rd::rd_kafka_error_string(e))))
                })
                .collect();
            if failures.is_empty() {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "Kafka refused ACLs: {}",
                    failures.join("; ")
                ))
            }
        };
        if !event.is_null() {
            rd::rd_kafka_event_destroy(event);
        }
        rd::rd_kafka_AdminOptions_destroy(options);
        rd::rd_kafka_queue_destroy(queue);
        outcome
    }
}
