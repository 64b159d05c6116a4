//! `herald top`: a live terminal view of the running platform, redrawn every interval from
//! every component's metrics endpoint (`[telemetry.metrics]`): each stage's lag, rate, dead
//! letters and batch time, each channel's deliveries and end-to-end delay, the ingress's rate
//! and errors. Fits 80 columns; `q` or Ctrl-C quits.

mod model;

use std::time::{Duration, Instant};

use herald_telemetry::scrape::scrape;
use ratatui::Frame;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Row, Table};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use model::{Snapshot, View, view};

/// Scrapes every configured component once (those that do not answer are left out).
async fn snapshot(components: &[(&'static str, String)]) -> Snapshot {
    let scrapes = components.iter().map(|(name, addr)| async move {
        let page = scrape(addr, Duration::from_millis(800)).await.ok()?;
        Some(((*name).to_owned(), page))
    });
    Snapshot {
        pages: futures::future::join_all(scrapes)
            .await
            .into_iter()
            .flatten()
            .collect(),
    }
}

/// Runs the view until `q`, Ctrl-C or `shutdown`.
pub async fn run(
    config: &Config,
    every: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let components: Vec<(&'static str, String)> = config
        .telemetry
        .metrics
        .all()
        .iter()
        .filter(|(_, addr)| !addr.is_empty())
        .map(|(name, addr)| (*name, (*addr).to_owned()))
        .collect();
    let expected: Vec<&str> = components.iter().map(|(n, _)| *n).collect();
    let quit = shutdown.child_token();
    keys(quit.clone());
    let mut terminal =
        ratatui::try_init().map_err(|e| anyhow::anyhow!("herald top needs a terminal: {e}"))?;
    let mut before = snapshot(&components).await;
    let mut at = Instant::now();
    let mut shown = View::default();
    let result = loop {
        if let Err(e) = terminal.draw(|f| draw(f, &shown, every)) {
            break Err(e.into());
        }
        tokio::select! {
            () = quit.cancelled() => break Ok(()),
            () = tokio::time::sleep(every) => {}
        }
        let now = snapshot(&components).await;
        let seconds = at.elapsed().as_secs_f64();
        shown = view(&before, &now, seconds, &expected);
        (before, at) = (now, Instant::now());
    };
    ratatui::restore();
    result
}

/// Watches the keyboard on its own thread: `q`, Esc or Ctrl-C cancel `quit`.
fn keys(quit: CancellationToken) {
    std::thread::spawn(move || {
        while !quit.is_cancelled() {
            if !event::poll(Duration::from_millis(100)).unwrap_or(false) {
                continue;
            }
            if let Ok(Event::Key(key)) = event::read() {
                let ctrl_c =
                    key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
                if ctrl_c || matches!(key.code, KeyCode::Char('q') | KeyCode::Esc) {
                    quit.cancel();
                }
            }
        }
    });
}

fn rate(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn secs(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(s) if s < 1.0 => format!("{:.0} ms", s * 1_000.0),
        Some(s) => format!("{s:.1} s"),
    }
}

fn draw(frame: &mut Frame<'_>, v: &View, every: Duration) {
    let [head, stages, channels, foot] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(6),
        Constraint::Length(
            u16::try_from(v.channels.len())
                .unwrap_or(8)
                .saturating_add(3),
        ),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let bold = Style::default().add_modifier(Modifier::BOLD);
    frame.render_widget(
        Line::from(format!(
            "herald top · ingress {} req/s, {} errors/s · every {} s · q quits",
            rate(v.ingress_per_s),
            rate(v.ingress_errors_per_s),
            every.as_secs_f64()
        ))
        .style(bold),
        head,
    );
    let rows = v.stages.iter().map(|s| {
        Row::new(vec![
            s.stage.clone(),
            s.lag.map_or("-".into(), |l| format!("{l:.0}")),
            s.bulk_lag.map_or("-".into(), |l| format!("{l:.0}")),
            rate(s.in_per_s),
            rate(s.out_per_s),
            format!("{:.0}", s.dead_letters),
            secs(s.batch_p99_s),
        ])
    });
    let stage_table = Table::new(
        rows,
        [
            Constraint::Length(20),
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(6),
            Constraint::Length(10),
        ],
    )
    .header(
        Row::new([
            "STAGE",
            "LAG",
            "BULK LAG",
            "IN/s",
            "OUT/s",
            "DEAD",
            "BATCH p99",
        ])
        .style(bold),
    )
    .block(Block::bordered().title(" stages "));
    frame.render_widget(stage_table, stages);
    let rows = v.channels.iter().map(|c| {
        Row::new(vec![
            c.channel.clone(),
            rate(c.done_per_s),
            secs(c.p50_s),
            secs(c.p99_s),
        ])
    });
    let channel_table = Table::new(
        rows,
        [
            Constraint::Length(20),
            Constraint::Length(12),
            Constraint::Length(12),
            Constraint::Length(12),
        ],
    )
    .header(Row::new(["CHANNEL", "DONE/s", "E2E p50", "E2E p99"]).style(bold))
    .block(Block::bordered().title(" deliveries (acceptance to outcome) "));
    frame.render_widget(channel_table, channels);
    let status = if v.down.is_empty() {
        "every component answers".to_owned()
    } else {
        format!("not answering: {}", v.down.join(", "))
    };
    frame.render_widget(Line::from(status), foot);
}
