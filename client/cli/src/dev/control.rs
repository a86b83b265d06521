//! The control port of a running `smq dev`: `smq dev failover` and `smq dev kill-master GROUP`
//! from another shell send one line (`failover`, `kill-master GROUP`) to 127.0.0.1 on it; the
//! running `smq dev` answers with progress lines as they happen and a last line `ok` or
//! `error: ...`.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// The last line of a successful answer.
const OK: &str = "ok";
/// What starts the last line of a failed answer.
const ERROR: &str = "error: ";

/// One request to the running `smq dev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    Failover,
    KillMaster(String),
}

impl Request {
    fn line(&self) -> String {
        match self {
            Request::Failover => "failover".to_owned(),
            Request::KillMaster(group) => format!("kill-master {group}"),
        }
    }

    fn parse(line: &str) -> anyhow::Result<Request> {
        match line.trim().split_once(' ') {
            None if line.trim() == "failover" => Ok(Request::Failover),
            Some(("kill-master", group)) => Ok(Request::KillMaster(group.trim().to_owned())),
            _ => bail!("unknown request {line:?}: expected `failover` or `kill-master GROUP`"),
        }
    }
}

/// Sends `request` to the `smq dev` whose control port is `addr`, printing its progress lines;
/// fails with its error.
pub(crate) async fn send(addr: SocketAddr, request: &Request) -> anyhow::Result<()> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| {
            format!(
                "no smq dev answers on its control port {addr}: start `smq dev` first (with the \
             same --base-port)"
            )
        })?;
    stream
        .write_all(format!("{}\n", request.line()).as_bytes())
        .await?;
    let mut lines = BufReader::new(stream).lines();
    while let Some(line) = lines.next_line().await? {
        if line == OK {
            return Ok(());
        }
        if let Some(error) = line.strip_prefix(ERROR) {
            bail!("{error}");
        }
        println!("{line}");
    }
    bail!("smq dev closed the control connection before finishing (did it stop?)")
}

/// Where a request's progress lines go: the requesting connection, and the terminal of
/// `smq dev` itself.
pub(crate) struct Progress<W> {
    out: W,
}

impl<W: AsyncWrite + Unpin> Progress<W> {
    pub async fn say(&mut self, line: &str) {
        say_here(line);
        // The requester may have gone away; the work goes on.
        let _ = self.out.write_all(format!("{line}\n").as_bytes()).await;
    }
}

/// A line on `smq dev`'s own stderr, over its status line on a terminal.
fn say_here(line: &str) {
    use std::io::IsTerminal;
    let clear = if std::io::stderr().is_terminal() {
        "\r\x1b[K"
    } else {
        ""
    };
    eprintln!("{clear}smq dev: {line}");
}

/// Serves one control connection: reads its request, runs it through `handle`, and answers.
pub(crate) async fn serve<H, Fut>(stream: tokio::net::TcpStream, handle: H)
where
    H: FnOnce(Request, Progress<tokio::net::tcp::OwnedWriteHalf>) -> Fut,
    Fut: std::future::Future<
        Output = (
            Progress<tokio::net::tcp::OwnedWriteHalf>,
            anyhow::Result<()>,
        ),
    >,
{
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    if BufReader::new(read).read_line(&mut line).await.is_err() {
        return;
    }
    let (mut progress, result) = match Request::parse(&line) {
        Ok(request) => handle(request, Progress { out: write }).await,
        Err(error) => {
            let _ = write
                .write_all(format!("{ERROR}{error:#}\n").as_bytes())
                .await;
            return;
        }
    };
    let last = match result {
        Ok(()) => OK.to_owned(),
        Err(error) => {
            say_here(&format!("{error:#}"));
            format!("{ERROR}{error:#}")
        }
    };
    let _ = progress.out.write_all(format!("{last}\n").as_bytes()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_survive_their_line() {
        for request in [Request::Failover, Request::KillMaster("broker-b".into())] {
            assert_eq!(Request::parse(&request.line()).unwrap(), request);
        }
        let error = Request::parse("reboot").unwrap_err().to_string();
        assert!(error.contains("kill-master GROUP"), "{error}");
    }
}
