//! curl, run as a pod's app (its traffic goes through the pod's sidecar) or from the
//! host (a caller outside the mesh), and what it saw of each transfer.
//!
//! curl is the HTTP client the stories trust not to be shaped by our own code: it
//! speaks HTTP/1.1 with keep-alive, chunked uploads and `Expect: 100-continue`, and
//! HTTP/2 with prior knowledge. Its `--write-out` JSON says, per transfer, the status,
//! the HTTP version, whether a new connection was made, and the response headers.

use std::process::{Command, Output};

use anyhow::Context as _;
use serde_json::Value;
use trellis_netns::exec_in;

/// Written to stderr after each transfer: its `%{json}` and `%{header_json}`.
const WRITE_OUT: &str = "%{stderr}\n@@transfer %{json}\n@@headers %{header_json}\n@@end\n";

/// One curl run: its transfers in URL order, the bodies and the rest of stderr.
#[derive(Debug)]
pub struct CurlRun {
    pub transfers: Vec<Transfer>,
    /// Every response body, in the order curl wrote them.
    pub stdout: Vec<u8>,
    /// What curl said besides the transfers (errors, `-v` output).
    pub stderr: String,
    pub exit_code: Option<i32>,
}

/// What curl saw of one URL.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// The status, or 0 when no response came.
    pub status: u16,
    /// `1.1`, `2`, …: the version of the response.
    pub http_version: String,
    /// 1 if curl opened a new connection for this transfer, 0 if it reused one.
    pub num_connects: u64,
    /// curl's own error for this transfer, if it failed.
    pub error: Option<String>,
    /// The response headers, names in lower case, each with every value it had.
    pub headers: serde_json::Map<String, Value>,
}

impl Transfer {
    /// The first value of response header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.as_array()?.first()?.as_str()
    }
}

impl CurlRun {
    /// The only transfer of a one-URL run.
    pub fn transfer(&self) -> anyhow::Result<&Transfer> {
        anyhow::ensure!(
            self.transfers.len() == 1,
            "curl made {} transfers, not one:\n{}",
            self.transfers.len(),
            self.stderr
        );
        Ok(&self.transfers[0])
    }

    /// The bodies as text.
    pub fn body(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `curl ARGS` inside `netns`, as that pod's app.
pub fn curl_in(netns: &str, args: &[&str]) -> anyhow::Result<CurlRun> {
    run(exec_in(netns, "curl"), args)
}

/// Runs `curl ARGS` on the host: a caller outside the mesh, without a sidecar.
pub fn curl_on_host(args: &[&str]) -> anyhow::Result<CurlRun> {
    run(Command::new("curl"), args)
}

fn run(mut command: Command, args: &[&str]) -> anyhow::Result<CurlRun> {
    command
        // No proxy from the environment may stand between curl and the mesh, and a
        // stuck transfer ends the run rather than the test's patience.
        .args([
            "--silent",
            "--show-error",
            "--noproxy",
            "*",
            "--max-time",
            "120",
        ])
        .args(["--write-out", WRITE_OUT])
        .args(args);
    let line = trellis_netns::command_line(&command);
    let output = command
        .output()
        .with_context(|| format!("running {line}"))?;
    parse(output).with_context(|| format!("reading what {line} printed"))
}

fn parse(output: Output) -> anyhow::Result<CurlRun> {
    let text = String::from_utf8_lossy(&output.stderr);
    let mut stderr = String::new();
    let mut transfers = Vec::new();
    let mut rest = text.as_ref();
    while let Some(start) = rest.find("\n@@transfer ") {
        stderr.push_str(&rest[..start]);
        let after = &rest[start + "\n@@transfer ".len()..];
        let (transfer, after) = after
            .split_once("\n@@headers ")
            .context("a transfer without its headers")?;
        let (headers, after) = after
            .split_once("\n@@end\n")
            .context("a transfer without its end")?;
        transfers.push(transfer_of(transfer, headers)?);
        rest = after;
    }
    stderr.push_str(rest);
    // Parallel transfers finish in any order; `urlnum` is each one's place.
    transfers.sort_by_key(|(urlnum, _)| *urlnum);
    Ok(CurlRun {
        transfers: transfers.into_iter().map(|(_, t)| t).collect(),
        stdout: output.stdout,
        stderr,
        exit_code: output.status.code(),
    })
}

fn transfer_of(json: &str, headers: &str) -> anyhow::Result<(u64, Transfer)> {
    let json: Value = serde_json::from_str(json).with_context(|| format!("not JSON: {json}"))?;
    let headers: Value =
        serde_json::from_str(headers).with_context(|| format!("not JSON: {headers}"))?;
    let transfer = Transfer {
        status: json["http_code"]
            .as_u64()
            .and_then(|code| u16::try_from(code).ok())
            .unwrap_or(0),
        http_version: json["http_version"].as_str().unwrap_or("").to_string(),
        num_connects: json["num_connects"].as_u64().unwrap_or(0),
        error: json["errormsg"].as_str().map(str::to_string),
        headers: headers.as_object().cloned().unwrap_or_default(),
    };
    Ok((json["urlnum"].as_u64().unwrap_or(0), transfer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt as _;
    use std::process::ExitStatus;

    #[test]
    fn transfers_come_back_in_url_order_with_their_headers() {
        // What curl 7.88 writes for two parallel transfers, the second finished first.
        let stderr = concat!(
            "* some verbose line\n",
            "\n@@transfer {\"http_code\":503,\"http_version\":\"1.1\",\"num_connects\":0,\"errormsg\":null,\"urlnum\":1}\n",
            "@@headers {\"trellis-proxy-error\":[\"no endpoints\"],\n\"content-type\":[\"text/plain\"]\n}\n@@end\n",
            "\n@@transfer {\"http_code\":0,\"http_version\":\"0\",\"num_connects\":1,\"errormsg\":\"Empty reply from server\",\"urlnum\":0}\n",
            "@@headers {}\n@@end\n",
            "curl: (52) Empty reply from server\n",
        );
        let run = parse(Output {
            status: ExitStatus::from_raw(52 << 8),
            stdout: b"body".to_vec(),
            stderr: stderr.as_bytes().to_vec(),
        })
        .unwrap();
        assert_eq!(run.transfers.len(), 2);
        assert_eq!(run.transfers[0].status, 0);
        assert_eq!(
            run.transfers[0].error.as_deref(),
            Some("Empty reply from server")
        );
        assert_eq!(run.transfers[1].status, 503);
        assert_eq!(
            run.transfers[1].header("trellis-proxy-error"),
            Some("no endpoints")
        );
        assert_eq!(run.exit_code, Some(52));
        assert!(run.stderr.contains("* some verbose line"));
        assert!(run.stderr.contains("curl: (52)"));
        assert!(!run.stderr.contains("@@"));
    }
}
