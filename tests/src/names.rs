//! Names and subnets of one test, unique on this host while it runs.
//!
//! Tests in one binary run on parallel threads, and binaries (or two developers' runs)
//! may overlap, so every name carries the process id and a per-process counter, and
//! every subnet is checked against the addresses the host already has.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use trellis_netns::Ipv4Cidr;

static COUNTER: AtomicU32 = AtomicU32::new(0);
/// Serialises subnet choice inside this process; across processes the pid spreads them.
static SUBNETS: Mutex<()> = Mutex::new(());

/// The names of one test's bridge, links and namespaces, and its subnet.
#[derive(Debug, Clone)]
pub struct Names {
    /// Short and unique, e.g. `t12345a`: the root of every other name.
    pub tag: String,
    pub subnet: Ipv4Cidr,
}

impl Names {
    pub fn new() -> Self {
        let pid = std::process::id() % 100_000;
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let letter = char::from(b'a' + u8::try_from(n % 26).unwrap_or(0));
        let tag = format!("t{pid}{letter}");
        Names {
            tag,
            subnet: free_subnet(pid, n),
        }
    }

    /// The bridge: at most 9 bytes, so its veths (`{tag}v{index}`) fit 15.
    pub fn bridge(&self) -> String {
        format!("{}b", self.tag)
    }

    pub fn netns(&self, pod: &str) -> String {
        format!("{}-{pod}", self.tag)
    }

    pub fn veth(&self, host_index: u32) -> String {
        format!("{}v{host_index}", self.tag)
    }
}

impl Default for Names {
    fn default() -> Self {
        Self::new()
    }
}

/// A /24 in 10.240.0.0/12 that no local address is in yet.
fn free_subnet(pid: u32, n: u32) -> Ipv4Cidr {
    let _guard = SUBNETS.lock().unwrap_or_else(|e| e.into_inner());
    let taken = host_addresses();
    let start = pid.wrapping_mul(16) + n;
    (0..4096u32)
        .map(|i| (start + i) % 4096)
        .map(|k| {
            Ipv4Cidr::new(
                Ipv4Addr::new(10, 240 + (k / 256) as u8, (k % 256) as u8, 0),
                24,
            )
            .unwrap()
        })
        .find(|subnet| !taken.iter().any(|addr| subnet.contains(*addr)))
        .expect("some /24 in 10.240.0.0/12 is free")
}

fn host_addresses() -> Vec<Ipv4Addr> {
    let Ok(output) = Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter_map(|word| word.split_once('/').and_then(|(addr, _)| addr.parse().ok()))
        .collect()
}
