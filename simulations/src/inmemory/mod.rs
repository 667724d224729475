//! A federation in memory: the coordinator's federation machine and N site
//! machines in one thread, messages handed over by value, time virtual. No
//! socket, TLS, file or wall clock is involved, and every random draw comes
//! from seeded generators, so a run is deterministic: the same seed gives
//! the same model, bit for bit. It runs the very machines production runs
//! (secure aggregation, noise, ledgers, the sites' checks and training);
//! only the transport and the clock are replaced. Dropouts can be planned
//! at any secure-aggregation stage.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use tessera_coordinator::round::{Commit, FederationMachine, Input, Output, Resume, RoundSummary};
use tessera_coordinator::settings::Settings;
use tessera_participant::data::LocalData;
use tessera_participant::ledger::{Contribution, MemoryLedger};
use tessera_participant::site::{Action, Clock, Site, SiteParts, SitePolicy};
use tessera_participant::trainer::BuiltinTrainer;
use tessera_proto::v1::{
    ChunkPurpose, CoordinatorMessage, ParticipantMessage, participant_message::Body,
};

/// A secure-aggregation stage at which a site can vanish: it drops instead
/// of sending what the stage asks of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DropStage {
    /// Instead of advertising its keys.
    Keys,
    /// Instead of sending its encrypted shares.
    Shares,
    /// Instead of sending its masked input.
    MaskedInput,
    /// Instead of answering the unmasking request.
    Unmask,
}

impl DropStage {
    /// Whether `m` is what a site sends at this stage.
    fn matches(self, m: &ParticipantMessage) -> bool {
        match (self, &m.body) {
            (DropStage::Keys, Some(Body::Keys(_))) => true,
            (DropStage::Shares, Some(Body::ShareKeys(_))) => true,
            (DropStage::MaskedInput, Some(Body::Chunk(c))) => {
                c.purpose == ChunkPurpose::MaskedInput as i32
                    || c.purpose == ChunkPurpose::PlainInput as i32
            }
            (DropStage::Unmask, Some(Body::Unmask(_))) => true,
            _ => false,
        }
    }
}

/// A fixed clock for the sites' ledger rows.
#[derive(Debug, Clone, Copy)]
struct FixedClock(i64);

impl Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        self.0
    }
}

/// Rewrites what a site sends: each message it sends becomes the messages
/// returned (none, itself, altered, repeated, others added).
pub type Tamper = Box<dyn FnMut(ParticipantMessage) -> Vec<ParticipantMessage>>;

struct Member {
    site: Site,
    session: u64,
    inbox: VecDeque<CoordinatorMessage>,
    alive: bool,
    /// Drop at this stage of this aggregation.
    drop: Option<(u64, DropStage)>,
    /// A hostile site's rewriting of its own messages.
    tamper: Option<Tamper>,
}

/// What a run showed.
#[derive(Debug, Default)]
pub struct Outcome {
    /// How the federation ended, and whether as planned.
    pub finished: Option<(String, bool)>,
    /// Every commit (released round), in order.
    pub released: Vec<Commit>,
    /// Every round that failed.
    pub aborted: Vec<RoundSummary>,
    /// Each site's own ledger at the end.
    pub site_ledgers: BTreeMap<String, Vec<Contribution>>,
    /// Virtual seconds the run took.
    pub virtual_seconds: f64,
    /// Messages handed over, both ways.
    pub messages: u64,
}

impl Outcome {
    /// The last released model's parameters.
    pub fn model(&self) -> Option<&[f32]> {
        self.released
            .iter()
            .rev()
            .find_map(|c| c.checkpoint.as_ref().map(|m| m.params.as_slice()))
    }
}

/// A federation of one coordinator machine and N site machines in memory.
pub struct InMemoryFederation {
    machine: FederationMachine,
    members: BTreeMap<String, Member>,
    start: Instant,
    now: Instant,
}

impl InMemoryFederation {
    /// The federation `settings` describe, resumed from `resume`, with one
    /// site per `(name, data)`, each with `policy` and a memory ledger. All
    /// randomness derives from `seed` (noise included: not private, for
    /// tests and simulations only).
    pub fn new(
        settings: &Settings,
        resume: Resume,
        sites: Vec<(String, LocalData)>,
        policy: &SitePolicy,
        seed: u64,
    ) -> anyhow::Result<Self> {
        let machine = settings
            .machine(
                resume,
                None,
                Box::new(ChaCha20Rng::seed_from_u64(seed)),
                Box::new(ChaCha20Rng::seed_from_u64(seed ^ 0x6e_6f69_7365)),
            )
            .map_err(anyhow::Error::msg)?;
        let members = sites
            .into_iter()
            .enumerate()
            .map(|(i, (name, data))| {
                let site = Site::new(SiteParts {
                    policy: policy.clone(),
                    data,
                    ledger: Box::new(MemoryLedger::new(format!("memory:{name}"))),
                    trainer: Box::new(BuiltinTrainer),
                    rng: Box::new(ChaCha20Rng::seed_from_u64(
                        seed.wrapping_mul(31).wrapping_add(i as u64 + 1),
                    )),
                    clock: Box::new(FixedClock(1_800_000_000_000)),
                    key_signing: None,
                });
                let member = Member {
                    site,
                    session: i as u64 + 1,
                    inbox: VecDeque::new(),
                    alive: true,
                    drop: None,
                    tamper: None,
                };
                (name, member)
            })
            .collect();
        let start = Instant::now();
        Ok(Self {
            machine,
            members,
            start,
            now: start,
        })
    }

    /// Plans that site `name` vanishes at `stage` of aggregation `round`.
    pub fn drop_at(&mut self, name: &str, round: u64, stage: DropStage) {
        if let Some(m) = self.members.get_mut(name) {
            m.drop = Some((round, stage));
        }
    }

    /// Makes site `name` hostile: everything it sends passes through `f`
    /// (it still authenticates as itself: the transport is not forged).
    pub fn tamper(&mut self, name: &str, f: Tamper) {
        if let Some(m) = self.members.get_mut(name) {
            m.tamper = Some(f);
        }
    }

    /// Runs until the federation ends, or `max_steps` deliveries pass.
    pub fn run(mut self, max_steps: usize) -> anyhow::Result<Outcome> {
        let mut out = Outcome::default();
        for (name, m) in &self.members {
            self.machine.handle(
                self.now,
                Input::Connected {
                    name: name.clone(),
                    session: m.session,
                    certificate: Vec::new(),
                },
            );
            // As the participant's shell does: its hello, with its own terms.
            self.machine.handle(
                self.now,
                Input::Message {
                    name: name.clone(),
                    session: m.session,
                    message: m.site.hello_with_budget(),
                },
            );
        }
        self.machine.start(self.now);
        for _ in 0..max_steps {
            self.drain_machine(&mut out);
            if out.finished.is_some() {
                break;
            }
            if !self.deliver_one(&mut out) {
                // Nothing in flight: let virtual time pass to the next deadline.
                match self.machine.poll_timeout() {
                    Some(t) => {
                        self.now = self.now.max(t);
                        self.machine.handle_timeout(self.now);
                    }
                    None => anyhow::bail!("the federation stalled: {:?}", self.machine),
                }
            }
        }
        self.drain_machine(&mut out);
        anyhow::ensure!(out.finished.is_some(), "no end after {max_steps} steps");
        for (name, m) in &self.members {
            out.site_ledgers
                .insert(name.clone(), m.site.ledger().contributions()?);
        }
        out.virtual_seconds = self.now.duration_since(self.start).as_secs_f64();
        Ok(out)
    }

    fn drain_machine(&mut self, out: &mut Outcome) {
        while let Some(o) = self.machine.poll_output() {
            match o {
                Output::Send { to, message } => {
                    if let Some(m) = self.members.get_mut(&to).filter(|m| m.alive) {
                        m.inbox.push_back(*message);
                    }
                }
                Output::Commit(c) => {
                    let round = c.summary.round;
                    out.released.push(*c);
                    // The "store" is memory: durable at once.
                    self.machine.handle(self.now, Input::Committed { round });
                }
                Output::RoundAborted(s) => out.aborted.push(s),
                Output::RoundStarted(_) => {}
                // The in-memory federation asks no analytics queries.
                Output::QueryReleased(_) | Output::QueryFailed(_) => {}
                Output::Finished { reason, success } => out.finished = Some((reason, success)),
            }
        }
    }

    /// Delivers one coordinator message to its site (the first site in name
    /// order with mail) and hands the site's answers to the machine.
    fn deliver_one(&mut self, out: &mut Outcome) -> bool {
        let Some(name) = self
            .members
            .iter()
            .find(|(_, m)| m.alive && !m.inbox.is_empty())
            .map(|(n, _)| n.clone())
        else {
            return false;
        };
        let Some(m) = self.members.get_mut(&name) else {
            return false;
        };
        let Some(message) = m.inbox.pop_front() else {
            return false;
        };
        out.messages += 1;
        m.site.handle(message);
        let mut answers = Vec::new();
        let mut vanish = false;
        while let Some(action) = m.site.poll_action() {
            match action {
                Action::Send(msg) => {
                    let round = round_of(&msg);
                    if let Some((r, stage)) = m.drop
                        && Some(r) == round
                        && stage.matches(&msg)
                    {
                        vanish = true;
                        break;
                    }
                    answers.push(msg);
                }
                Action::Exit { .. } => vanish = true,
            }
        }
        if let Some(f) = m.tamper.as_mut() {
            answers = answers.into_iter().flat_map(f).collect();
        }
        let session = m.session;
        for msg in answers {
            out.messages += 1;
            self.machine.handle(
                self.now,
                Input::Message {
                    name: name.clone(),
                    session,
                    message: msg,
                },
            );
        }
        if vanish {
            if let Some(m) = self.members.get_mut(&name) {
                m.alive = false;
                m.inbox.clear();
                m.site.connection_lost();
            }
            self.machine
                .handle(self.now, Input::Disconnected { name, session });
        }
        // A little virtual time per delivery, so stage timings are not all zero.
        self.now += Duration::from_micros(10);
        true
    }
}

fn round_of(m: &ParticipantMessage) -> Option<u64> {
    match &m.body {
        Some(Body::Keys(k)) => Some(k.round),
        Some(Body::ShareKeys(s)) => Some(s.round),
        Some(Body::Chunk(c)) => Some(c.round),
        Some(Body::Unmask(u)) => Some(u.round),
        Some(Body::RoundReply(r)) => Some(r.round),
        _ => None,
    }
}

pub mod scenario;

#[cfg(test)]
mod budget_tests;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;
