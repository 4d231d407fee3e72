//! The fan-out regression guard CI runs: instructions per delivery, counted
//! by `valgrind --tool=callgrind`, against the budget in
//! `bench/fanout_budget.txt`. Instruction counts do not care how busy the
//! machine is, so a change that makes fan-out slower fails CI instead of
//! surfacing in the next benchmark table.
//!
//! The run: one room of 1000 members (100 names, 10 connections each), and
//! 50 rounds of 4 posted messages followed by every member's writer taking
//! its queue the way a session's writer does (copy the queued frames into
//! one buffer, then `consume` what was "written"). Only that part is
//! counted (`--toggle-collect` on [`measured`]): joining and warming up are
//! not. It uses only the hub's public API, so it survives refactors behind it.
//!
//! ```text
//! cargo run --release --example fanout_guard -- check            # CI
//! cargo run --release --example fanout_guard -- check --update   # after a change that moves the cost on purpose
//! cargo run --release --example fanout_guard -- run              # the run alone, uncounted
//! ```

use std::process::{Command, ExitCode};
use std::task::{Context, Poll, Waker};

use futures_util::FutureExt;
use roomcast::hub::{Hub, HubConfig, Member, RoomName, UserName};

const MEMBERS: usize = 1000;
const ROUNDS: usize = 50;
const PER_ROUND: usize = 4;
const DELIVERIES: usize = MEMBERS * ROUNDS * PER_ROUND;
/// A count this much over the budget fails; this much under it asks for a
/// lower budget (without failing).
const TOLERANCE: f64 = 0.02;
const BUDGET_FILE: &str = "bench/fanout_budget.txt";
const CONTENT: &str = "LG 123456789012 xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

/// Takes everything queued for `member` as its session's writer would:
/// copy into one buffer, "write" it, consume it, then wait (register).
fn drain(member: &Member, buf: &mut Vec<u8>) {
    let cx = Context::from_waker(Waker::noop());
    loop {
        buf.clear();
        match member.outbox().poll_peek(&cx, buf, 64 << 10) {
            Poll::Ready(None) => {
                std::hint::black_box(&buf[..]);
                member.outbox().consume(buf.len());
            }
            Poll::Ready(Some(_)) | Poll::Pending => return,
        }
    }
}

fn post(member: &Member) {
    member
        .post(CONTENT.to_owned(), None, None)
        .now_or_never()
        .expect("a hub without a backbone posts at once")
        .expect("the post is accepted");
}

/// The counted part.
#[inline(never)]
fn measured(members: &[Member], buf: &mut Vec<u8>) {
    for _ in 0..ROUNDS {
        for _ in 0..PER_ROUND {
            post(&members[0]);
        }
        for m in members {
            drain(m, buf);
        }
    }
}

fn run() {
    let hub = Hub::new(HubConfig {
        history: 64,
        ..HubConfig::default()
    });
    let room = RoomName::parse("guard").expect("valid room");
    let mut buf = Vec::with_capacity(64 << 10);
    let mut members = Vec::with_capacity(MEMBERS);
    for i in 0..MEMBERS {
        let user = UserName::parse(&format!("u{}", i % 100)).expect("valid user");
        members.push(hub.join(room.clone(), user, None).expect("room available"));
        if i % 100 == 99 {
            members.iter().for_each(|m| drain(m, &mut buf));
        }
    }
    // Warm up: every queue and the history ring at their working size.
    for _ in 0..4 {
        post(&members[0]);
        members.iter().for_each(|m| drain(m, &mut buf));
    }
    measured(&members, &mut buf);
}

/// Runs this program's `run` under callgrind; returns instructions per delivery.
fn count() -> Result<f64, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = std::env::temp_dir().join(format!("fanout_guard.{}.callgrind", std::process::id()));
    let status = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg("--collect-atstart=no")
        .arg("--toggle-collect=fanout_guard::measured")
        .arg(&exe)
        .arg("run")
        .status()
        .map_err(|e| format!("cannot run valgrind ({e}); install it (apt-get install valgrind)"))?;
    if !status.success() {
        return Err(format!("valgrind exited with {status}"));
    }
    let text = std::fs::read_to_string(&out).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&out);
    let total: u64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("totals: ")
                .or_else(|| l.strip_prefix("summary: "))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or("no totals in callgrind's output")?;
    if total == 0 {
        return Err("callgrind counted nothing: was `measured` inlined or renamed?".into());
    }
    Ok(total as f64 / DELIVERIES as f64)
}

fn read_budget() -> Result<f64, String> {
    let text = std::fs::read_to_string(BUDGET_FILE).map_err(|e| format!("{BUDGET_FILE}: {e}"))?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .and_then(|l| l.parse().ok())
        .ok_or_else(|| format!("{BUDGET_FILE}: no number in it"))
}

fn write_budget(per_delivery: f64) -> Result<(), String> {
    let text = format!(
        "# Instructions per delivery of examples/fanout_guard.rs (release build), counted by\n\
         # callgrind; CI fails above this plus {:.0} %. After a change that moves the cost on\n\
         # purpose: cargo run --release --example fanout_guard -- check --update, and say why\n\
         # in the commit.\n{per_delivery:.1}\n",
        TOLERANCE * 100.0
    );
    std::fs::write(BUDGET_FILE, text).map_err(|e| format!("{BUDGET_FILE}: {e}"))
}

fn check(update: bool) -> Result<bool, String> {
    let measured = count()?;
    if update {
        write_budget(measured)?;
        println!("fanout guard: {measured:.1} instructions per delivery; budget updated");
        return Ok(true);
    }
    let budget = read_budget()?;
    let ratio = measured / budget;
    println!(
        "fanout guard: {measured:.1} instructions per delivery, budget {budget:.1} ({:+.1} %)",
        (ratio - 1.0) * 100.0
    );
    if ratio > 1.0 + TOLERANCE {
        println!(
            "fan-out got slower than its budget allows. If that is on purpose, run\n  \
             cargo run --release --example fanout_guard -- check --update\nand say why in the commit."
        );
        return Ok(false);
    }
    if ratio < 1.0 - TOLERANCE {
        println!(
            "faster than the budget: lower it with `-- check --update` to keep the guard tight"
        );
    }
    Ok(true)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["run"] => {
            run();
            ExitCode::SUCCESS
        }
        ["check"] | ["check", "--update"] => match check(args.len() == 2) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("fanout guard: {e}");
                ExitCode::from(2)
            }
        },
        _ => {
            eprintln!("usage: fanout_guard run | check [--update]");
            ExitCode::from(2)
        }
    }
}
