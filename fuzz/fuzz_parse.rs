//! A bounded mutation fuzzer for `ConnectionString::parse` (URL and key=value input) that runs
//! on stable Rust (cargo-fuzz needs nightly). Every input is parsed under `catch_unwind`; a
//! panic prints the input and exits with status 1.
//!
//! Run: `cargo run --release --example fuzz_parse -- [seconds] [seed]` (default 30 s).

use neon_connect::ConnectionString;
use std::time::{Duration, Instant};

const SEEDS: &[&str] = &[
    "postgresql://neon:npg_secret@ep-cool-1234.us-east-2.aws.neon.tech/neondb?sslmode=require",
    "postgres://u:p%40ss@[::1]:5432,h2:6543/db?sslmode=verify-full&sslrootcert=system&options=-c%20x%3Dy",
    "postgresql:///db?host=/var/run/postgresql&port=5432&channel_binding=require",
    "postgresql://%2Ftmp%2Fsock/db?target_session_attrs=read-write&connect_timeout=10",
    "host=localhost port=5432 user=neon password='a \\' b' dbname=neondb sslmode=verify-ca",
    "host=a,b,c hostaddr=127.0.0.1,,::1 port=1,2,3 sslnegotiation=direct sslmode=require",
    "application_name='x y' ssl_min_protocol_version=TLSv1.2 ssl_max_protocol_version=TLSv1.3",
    "sslcert=/c.crt sslkey=/c.key sslsni=0 keepalives=1 keepalives_idle=30",
];

const TOKENS: &[&str] = &[
    "=",
    "'",
    "\\",
    " ",
    "%",
    "%2",
    "%zz",
    "%00",
    "@",
    ":",
    "/",
    "?",
    "&",
    ",",
    "[",
    "]",
    "::",
    "host=",
    "port=",
    "sslmode=",
    "password=",
    "postgresql://",
    "\u{0}",
    "\u{feff}",
    "é",
    "99999999999",
    "-1",
    "[::1",
    "%5B",
    "''",
    "=\"",
    "\t",
    "\n",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(input.len() + 1);
        match rng.below(6) {
            0 if !input.is_empty() => {
                let end = (at + 1 + rng.below(8)).min(input.len());
                input.drain(at.min(end)..end);
            }
            1 => input.insert(at, rng.next() as u8),
            2 => {
                let t = TOKENS[rng.below(TOKENS.len())].as_bytes();
                input.splice(at..at, t.iter().copied());
            }
            3 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] = rng.next() as u8;
            }
            4 => {
                let other = SEEDS[rng.below(SEEDS.len())].as_bytes();
                let from = rng.below(other.len());
                let to = (from + rng.below(32)).min(other.len());
                input.splice(at..at, other[from..to].iter().copied());
            }
            _ if input.len() < 4096 => {
                let from = rng.below(input.len());
                let to = (from + rng.below(16)).min(input.len());
                let chunk = input[from..to].to_vec();
                input.splice(at..at, chunk);
            }
            _ => {}
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(30);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0x5eed);
    let mut rng = Rng(seed | 1);
    std::panic::set_hook(Box::new(|_| {}));
    let started = Instant::now();
    let (mut runs, mut ok) = (0u64, 0u64);
    let mut corpus: Vec<Vec<u8>> = SEEDS.iter().map(|s| s.as_bytes().to_vec()).collect();
    while started.elapsed() < Duration::from_secs(seconds) {
        let mut input = corpus[rng.below(corpus.len())].clone();
        mutate(&mut rng, &mut input);
        let text = String::from_utf8_lossy(&input).into_owned();
        let result = std::panic::catch_unwind(|| {
            let parsed = ConnectionString::parse(&text);
            if let Ok(cs) = &parsed {
                // Display must not panic and must parse again.
                let again = ConnectionString::parse(&cs.redacted());
                assert!(again.is_ok(), "redacted form does not parse");
            }
            parsed.is_ok()
        });
        runs += 1;
        match result {
            Ok(true) => {
                ok += 1;
                if corpus.len() < 10_000 && rng.below(8) == 0 {
                    corpus.push(input);
                }
            }
            Ok(false) => {}
            Err(_) => {
                println!("PANIC on input {text:?}");
                std::process::exit(1);
            }
        }
    }
    println!(
        "{runs} inputs in {:.1}s ({ok} parsed), no panic",
        started.elapsed().as_secs_f64()
    );
}
