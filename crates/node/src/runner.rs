//! Runs tasks' processes: a user command in its own process group, or the
//! built-in synthetic runner. Output is read in chunks and sent to the
//! event loop with the run's exit.
//!
//! Every started process group is recorded in `DIR/runs/TOKEN`, so a node
//! that restarts after a crash kills what its previous process left
//! running before it hands those tasks back.

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use shoal_model::{ExitClass, FencingToken, OutputChunk, Runner as RunSpec, Stream, TaskId};
use shoal_proto::worker::StopReason;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

const CHUNK_BYTES: usize = 16 << 10;

#[derive(Debug)]
pub enum RunMsg {
    Chunk(OutputChunk),
    Exited {
        token: FencingToken,
        exit_code: i32,
        class: ExitClass,
    },
}

#[derive(Debug)]
pub struct Runs {
    tx: mpsc::Sender<RunMsg>,
    dir: PathBuf,
    allow_exec: bool,
    grace: Duration,
    stops: HashMap<FencingToken, watch::Sender<Option<StopReason>>>,
}

impl Runs {
    pub fn new(tx: mpsc::Sender<RunMsg>, dir: PathBuf, allow_exec: bool, grace: Duration) -> Self {
        Runs {
            tx,
            dir,
            allow_exec,
            grace,
            stops: HashMap::new(),
        }
    }

    /// Kills the process groups an earlier process of this node left.
    pub fn kill_leftovers(dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            if let Some(pgid) = std::fs::read_to_string(e.path())
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                if killpg(Pid::from_raw(pgid), Signal::SIGKILL).is_ok() {
                    info!(
                        pgid,
                        "killed a process group left by an earlier run of this node"
                    );
                }
            }
            let _ = std::fs::remove_file(e.path());
        }
    }

    /// Starts a run. `task` names its output (a task id, or
    /// `deploy:NAME/REPLICA`); `env` is added to the command's.
    pub fn start(
        &mut self,
        task: TaskId,
        token: FencingToken,
        attempt: u32,
        runner: RunSpec,
        env: Vec<(String, String)>,
    ) {
        let (stop_tx, stop_rx) = watch::channel(None);
        self.stops.retain(|_, s| !s.is_closed());
        self.stops.insert(token, stop_tx);
        let run = Run {
            task,
            token,
            attempt,
            tx: self.tx.clone(),
            seq: Arc::new(AtomicU64::new(0)),
        };
        let (dir, grace, allow_exec) = (self.dir.clone(), self.grace, self.allow_exec);
        tokio::spawn(async move {
            let (code, class) = match runner {
                RunSpec::Synthetic {
                    chunks,
                    interval_ms,
                    exit_code,
                } => run.synthetic(chunks, interval_ms, exit_code, stop_rx).await,
                RunSpec::Exec { .. } if !allow_exec => {
                    run.say("this node does not run user commands (start it with --allow-exec)\n")
                        .await;
                    (126, ExitClass::Failed)
                }
                RunSpec::Exec {
                    cmd,
                    args,
                    env: mut vars,
                    cwd,
                } => {
                    vars.extend(env);
                    run.exec(&cmd, &args, &vars, cwd.as_deref(), &dir, grace, stop_rx)
                        .await
                }
            };
            let _ = run
                .tx
                .send(RunMsg::Exited {
                    token: run.token,
                    exit_code: code,
                    class,
                })
                .await;
        });
    }

    pub fn stop(&mut self, token: FencingToken, reason: StopReason) {
        if let Some(s) = self.stops.get(&token) {
            let _ = s.send(Some(reason));
        }
    }
}

/// Resolves once a stop is asked for (never if the run is forgotten).
async fn stop_requested(stop: &mut watch::Receiver<Option<StopReason>>) -> StopReason {
    let asked = stop
        .wait_for(|s| s.is_some())
        .await
        .ok()
        .map(|r| r.unwrap_or(StopReason::Cancelled));
    match asked {
        Some(reason) => reason,
        None => std::future::pending().await,
    }
}

struct Run {
    task: TaskId,
    token: FencingToken,
    attempt: u32,
    tx: mpsc::Sender<RunMsg>,
    seq: Arc<AtomicU64>,
}

impl Run {
    fn chunk(&self, stream: Stream, data: Vec<u8>) -> OutputChunk {
        OutputChunk {
            task: self.task.clone(),
            attempt: self.attempt,
            stream,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            data,
        }
    }

    async fn say(&self, text: &str) {
        let c = self.chunk(Stream::Stderr, text.as_bytes().to_vec());
        let _ = self.tx.send(RunMsg::Chunk(c)).await;
    }

    async fn synthetic(
        &self,
        chunks: u32,
        interval_ms: u64,
        exit_code: i32,
        mut stop: watch::Receiver<Option<StopReason>>,
    ) -> (i32, ExitClass) {
        for i in 1..=chunks {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(interval_ms)) => {}
                reason = stop_requested(&mut stop) => return (143, reason.class()),
            }
            let line = format!(
                "chunk {i}/{chunks} of task {} (attempt {})\n",
                self.task, self.attempt
            );
            let c = self.chunk(Stream::Stdout, line.into_bytes());
            let _ = self.tx.send(RunMsg::Chunk(c)).await;
        }
        (exit_code, ExitClass::of_exit_code(exit_code))
    }

    #[allow(clippy::too_many_arguments)]
    async fn exec(
        &self,
        cmd: &str,
        args: &[String],
        env: &std::collections::BTreeMap<String, String>,
        cwd: Option<&str>,
        dir: &Path,
        grace: Duration,
        mut stop: watch::Receiver<Option<StopReason>>,
    ) -> (i32, ExitClass) {
        let mut c = tokio::process::Command::new(cmd);
        c.args(args)
            .envs(env)
            .env("SHOAL_TASK", self.task.as_str())
            .env("SHOAL_FENCING_TOKEN", self.token.0.to_string())
            .env("SHOAL_ATTEMPT", self.attempt.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(d) = cwd {
            c.current_dir(d);
        }
        let mut child = match c.spawn() {
            Ok(c) => c,
            Err(e) => {
                self.say(&format!("cannot start {cmd:?}: {e}\n")).await;
                return (127, ExitClass::Failed);
            }
        };
        let pgid = child.id().map(|p| p as i32);
        let record = dir.join(self.token.0.to_string());
        if let Some(p) = pgid {
            if let Err(e) =
                std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&record, p.to_string()))
            {
                warn!(error = %e, "could not record a run's process group");
            }
        }
        let readers = [
            child.stdout.take().map(|o| self.reader(Stream::Stdout, o)),
            child.stderr.take().map(|e| self.reader(Stream::Stderr, e)),
        ];
        let status = tokio::select! {
            s = child.wait() => s,
            _ = stop_requested(&mut stop) => {
                if let Some(p) = pgid {
                    let _ = killpg(Pid::from_raw(p), Signal::SIGTERM);
                }
                match tokio::time::timeout(grace, child.wait()).await {
                    Ok(s) => s,
                    Err(_) => {
                        if let Some(p) = pgid {
                            let _ = killpg(Pid::from_raw(p), Signal::SIGKILL);
                        }
                        child.wait().await
                    }
                }
            }
        };
        // What the group still writes after its leader exited is read for
        // a moment, not forever.
        for r in readers.into_iter().flatten() {
            let _ = tokio::time::timeout(Duration::from_secs(1), r).await;
        }
        let _ = std::fs::remove_file(&record);
        let stopped = *stop.borrow();
        match status {
            Ok(s) => {
                use std::os::unix::process::ExitStatusExt;
                let code = s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0));
                let class = stopped.map_or(ExitClass::of_exit_code(code), StopReason::class);
                debug!(task = %self.task, code, ?class, "run ended");
                (code, class)
            }
            Err(e) => {
                self.say(&format!("lost track of the process: {e}\n")).await;
                (-1, ExitClass::Transient)
            }
        }
    }

    fn reader(
        &self,
        stream: Stream,
        mut from: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let run = Run {
            task: self.task.clone(),
            token: self.token,
            attempt: self.attempt,
            tx: self.tx.clone(),
            seq: self.seq.clone(),
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; CHUNK_BYTES];
            loop {
                match from.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        let c = run.chunk(stream, buf[..n].to_vec());
                        if run.tx.send(RunMsg::Chunk(c)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        })
    }
}
