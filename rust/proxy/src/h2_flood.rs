//! A budget for the HTTP/2 frames a client can send without asking for
//! anything: PING, SETTINGS, PRIORITY and WINDOW_UPDATE. Each costs the
//! proxy work (an answer, a state change) and none is a request. hyper's h2
//! bounds what it queues in answer, but not how many it takes: past this
//! budget the connection is closed (Envoy closes at 1,000 queued control
//! frames; RELIABILITY.md §3 case 23).
//!
//! Sans-IO: fed the bytes the client sent (after the preface) and the bytes
//! written to it; it walks the frame headers only.

use tokio::time::Instant;

/// Frames allowed at once, and how the allowance comes back: by time, and
/// with the data the proxy sends (a client downloading answers each DATA
/// frame with WINDOW_UPDATEs).
const BURST: u32 = 1_000;
const PER_SECOND: u32 = 100;
const WRITTEN_PER_FRAME: usize = 4 << 10;

const DATA: u8 = 0;
const PRIORITY: u8 = 2;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const WINDOW_UPDATE: u8 = 8;
const ACK: u8 = 0x1;

#[derive(Debug)]
pub struct Flooded;

#[derive(Debug)]
pub struct FrameBudget {
    /// The frame header being read, and how much of it is in.
    head: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to pass.
    skip: usize,
    tokens: u32,
    since: Instant,
    written: usize,
    /// Overdrawn: the connection is being closed, and the frame walk is
    /// no longer aligned.
    flooded: bool,
}

impl FrameBudget {
    pub fn new(now: Instant) -> Self {
        Self {
            head: [0; 9],
            have: 0,
            skip: 0,
            tokens: BURST,
            since: now,
            written: 0,
            flooded: false,
        }
    }

    /// Bytes the proxy wrote to the client: each `WRITTEN_PER_FRAME` buys one frame.
    pub fn wrote(&mut self, n: usize) {
        self.written += n;
        if self.written >= WRITTEN_PER_FRAME {
            let earned = (self.written / WRITTEN_PER_FRAME).min(BURST as usize) as u32;
            self.written %= WRITTEN_PER_FRAME;
            self.tokens = (self.tokens + earned).min(BURST);
        }
    }

    /// Bytes the client sent; `Err` once its frames overdraw the budget.
    pub fn read(&mut self, mut bytes: &[u8], now: impl Fn() -> Instant) -> Result<(), Flooded> {
        if self.flooded && !bytes.is_empty() {
            return Err(Flooded);
        }
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            // A whole frame header in this read (the usual case) is read in
            // place; one split across reads is gathered in `self.head`.
            let head = match (self.have, bytes.split_first_chunk::<9>()) {
                (0, Some((head, rest))) => {
                    bytes = rest;
                    *head
                }
                _ => {
                    let n = (9 - self.have).min(bytes.len());
                    self.head[self.have..self.have + n].copy_from_slice(&bytes[..n]);
                    self.have += n;
                    bytes = &bytes[n..];
                    if self.have < 9 {
                        break;
                    }
                    self.have = 0;
                    self.head
                }
            };
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]);
            self.skip = len as usize;
            if costs(head[3], head[4], len) && self.spend(&now).is_err() {
                self.flooded = true;
                return Err(Flooded);
            }
        }
        Ok(())
    }

    fn spend(&mut self, now: &impl Fn() -> Instant) -> Result<(), Flooded> {
        if self.tokens == 0 {
            // The clock is read only when the budget runs dry.
            let now = now();
            let elapsed = now.saturating_duration_since(self.since);
            let earned = (elapsed.as_millis() * u128::from(PER_SECOND) / 1000).min(BURST.into());
            if earned == 0 {
                return Err(Flooded);
            }
            self.tokens = earned as u32;
            self.since = now;
        }
        self.tokens -= 1;
        Ok(())
    }

    #[cfg(test)]
    fn tokens(&self) -> u32 {
        self.tokens
    }
}

/// Whether a frame asks nothing of the upstream yet costs the proxy work:
/// control frames other than acknowledgements, and empty DATA frames that
/// do not end their stream.
fn costs(kind: u8, flags: u8, len: u32) -> bool {
    match kind {
        PING | SETTINGS => flags & ACK == 0,
        PRIORITY | WINDOW_UPDATE => true,
        DATA => len == 0 && flags & ACK == 0, // 0x1 is END_STREAM on DATA
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = len.to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags, 0, 0, 0, 0]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn pings_past_the_burst_are_a_flood_and_acks_are_free() {
        let t0 = Instant::now();
        let mut b = FrameBudget::new(t0);
        let ping = frame(PING, 0, &[7; 8]);
        let ack = frame(PING, ACK, &[7; 8]);
        for _ in 0..BURST {
            b.read(&ping, || t0).expect("within the burst");
            b.read(&ack, || t0).expect("acks cost nothing");
        }
        assert!(b.read(&ping, || t0).is_err());
    }

    #[test]
    fn frames_split_anywhere_are_counted_once_and_payloads_skipped() {
        let t0 = Instant::now();
        let mut b = FrameBudget::new(t0);
        let mut bytes = frame(SETTINGS, 0, &[0; 12]);
        // A HEADERS frame whose payload happens to look like PING headers.
        bytes.extend(frame(1, 0x4, &frame(PING, 0, &[0; 8])));
        bytes.extend(frame(WINDOW_UPDATE, 0, &[0, 0, 0, 1]));
        for chunk in bytes.chunks(1) {
            b.read(chunk, || t0).expect("within the budget");
        }
        assert_eq!(b.tokens(), BURST - 2);
    }

    #[test]
    fn the_budget_comes_back_with_time_and_with_data_sent() {
        let t0 = Instant::now();
        let mut b = FrameBudget::new(t0);
        let prio = frame(PRIORITY, 0, &[0, 0, 0, 0, 15]);
        for _ in 0..BURST {
            b.read(&prio, || t0).expect("within the burst");
        }
        // A second later, a second's worth.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..PER_SECOND {
            b.read(&prio, || t1).expect("refilled by time");
        }
        // Data sent to the client buys WINDOW_UPDATEs.
        b.wrote(10 * WRITTEN_PER_FRAME);
        let wu = frame(WINDOW_UPDATE, 0, &[0, 0, 64, 0]);
        for _ in 0..10 {
            b.read(&wu, || t1).expect("bought by data");
        }
        assert!(b.read(&wu, || t1).is_err());
        // Once flooded, always (the connection is being closed), however much time passes.
        assert!(b.read(&wu, || t1 + Duration::from_secs(60)).is_err());
    }

    #[test]
    fn empty_data_costs_unless_it_ends_the_stream() {
        assert!(costs(DATA, 0, 0));
        assert!(!costs(DATA, 0x1, 0));
        assert!(!costs(DATA, 0, 10));
        assert!(!costs(1, 0, 0));
        assert!(!costs(SETTINGS, ACK, 0));
    }
}
