//! The control socket: how `vipgate status` (and later `vipgate vrrp ...`,
//! `vipgate route ...`) talk to the running daemon.
//!
//! Protocol: a Unix stream socket, one JSON request per line, one JSON
//! response per line. Requests are `{"cmd": "<name>", ...args}`; responses
//! are `{"ok": true, "data": ...}` or `{"ok": false, "error": "..."}`. The
//! socket is created with mode 0600 in a 0700 directory: only root (the
//! daemon's user) may talk to it.
//!
//! This module owns the socket and the wire format, and [`EventRing`], the
//! bounded event lists commands such as `vipgate vrrp events` read; what a
//! command does is the daemon's [`Handler`].

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

/// The last `capacity` events of one kind, each numbered (`seq`, from 1)
/// and stamped (`unix_ms`), for clients that poll with the last number
/// they saw.
pub struct EventRing {
    capacity: usize,
    inner: Mutex<(u64, VecDeque<Value>)>,
}

impl EventRing {
    pub fn new(capacity: usize) -> EventRing {
        EventRing {
            capacity: capacity.max(1),
            inner: Mutex::new((0, VecDeque::new())),
        }
    }

    /// Adds `event` (a JSON object) with its `seq` and `unix_ms`, dropping
    /// the oldest when full.
    pub fn push(&self, mut event: Value) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.0 += 1;
        event["seq"] = json!(inner.0);
        event["unix_ms"] = json!(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64));
        if inner.1.len() == self.capacity {
            inner.1.pop_front();
        }
        inner.1.push_back(event);
    }

    /// Events numbered above `after`, oldest first.
    pub fn after(&self, after: u64) -> Vec<Value> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .1
            .iter()
            .filter(|e| e["seq"].as_u64().is_some_and(|s| s > after))
            .cloned()
            .collect()
    }
}

/// Answers control requests inside the daemon.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, cmd: &str, request: &Value) -> Result<Value>;
}

/// The listening socket; removes its path when dropped.
pub struct ControlServer {
    path: PathBuf,
    listener: Option<UnixListener>,
}

impl ControlServer {
    /// Binds `path`, refusing to steal a socket a live daemon still answers on.
    pub fn bind(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating control socket directory {}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("setting mode 0700 on {}", dir.display()))?;
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                bail!(
                    "another vipgate daemon is answering on {}; stop it first or set node.control_socket to another path",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale control socket {}", path.display()))?;
        }
        let listener = UnixListener::bind(path)
            .with_context(|| format!("binding control socket {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(ControlServer {
            path: path.to_owned(),
            listener: Some(listener),
        })
    }

    /// Serves connections until the task is dropped.
    pub async fn serve<H: Handler>(mut self, handler: std::sync::Arc<H>) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let (rd, mut wr) = stream.into_split();
                let mut lines = tokio::io::BufReader::new(rd).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let reply = answer(&*handler, &line);
                    let mut out = reply.to_string();
                    out.push('\n');
                    if wr.write_all(out.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn answer<H: Handler + ?Sized>(handler: &H, line: &str) -> Value {
    let request: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return json!({"ok": false, "error": format!("bad request: {e}")}),
    };
    let Some(cmd) = request.get("cmd").and_then(Value::as_str) else {
        return json!({"ok": false, "error": "bad request: missing \"cmd\""});
    };
    match handler.handle(cmd, &request) {
        Ok(data) => json!({"ok": true, "data": data}),
        Err(e) => json!({"ok": false, "error": format!("{e:#}")}),
    }
}

/// Sends one request to the daemon and returns its `data`.
pub fn request(path: &Path, request: &Value) -> Result<Value> {
    let mut stream = UnixStream::connect(path).with_context(|| {
        format!(
            "cannot reach the vipgate daemon at {} (is `vipgate run` running, and are you root?)",
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = request.to_string();
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply)?;
    let reply: Value = serde_json::from_str(&reply).context("daemon sent a malformed reply")?;
    if reply.get("ok").and_then(Value::as_bool) == Some(true) {
        Ok(reply.get("data").cloned().unwrap_or(Value::Null))
    } else {
        let err = reply
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("unknown error");
        bail!("daemon: {err}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;
    impl Handler for Echo {
        fn handle(&self, cmd: &str, request: &Value) -> Result<Value> {
            match cmd {
                "echo" => Ok(request.clone()),
                other => bail!("unknown command {other:?}"),
            }
        }
    }

    #[test]
    fn request_reply_round_trip_and_errors() {
        let dir = std::env::temp_dir().join(format!("vgt-ctl-{}", std::process::id()));
        let path = dir.join("control.sock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let server = rt.block_on(async { ControlServer::bind(&path) }).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A second daemon must not steal the socket.
        std::thread::scope(|s| {
            let path2 = path.clone();
            let rt_handle = rt.handle().clone();
            rt.spawn(server.serve(std::sync::Arc::new(Echo)));
            let t = s.spawn(move || {
                let _g = rt_handle.enter();
                let v = request(&path2, &json!({"cmd": "echo", "x": 1})).unwrap();
                assert_eq!(v["x"], 1);
                let e = request(&path2, &json!({"cmd": "nope"})).unwrap_err();
                assert!(e.to_string().contains("unknown command"), "{e}");
                let again = ControlServer::bind(&path2);
                assert!(again.is_err());
            });
            rt.block_on(async {
                while !t.is_finished() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
            t.join().unwrap();
        });
        drop(rt);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn event_ring_numbers_stamps_and_keeps_the_last() {
        let ring = EventRing::new(2);
        for n in 1..=3 {
            ring.push(json!({ "n": n }));
        }
        let all = ring.after(0);
        let kept: Vec<(u64, u64)> = all
            .iter()
            .map(|e| (e["seq"].as_u64().unwrap(), e["n"].as_u64().unwrap()))
            .collect();
        assert_eq!(kept, [(2, 2), (3, 3)], "the oldest goes when full");
        assert!(all
            .iter()
            .all(|e| e["unix_ms"].as_u64().is_some_and(|t| t > 0)));
        assert_eq!(ring.after(2).len(), 1);
        assert!(ring.after(3).is_empty());
    }
}
