//! Participants' sessions and what they send: who is connected, who may
//! take part, and each message routed to the round in progress (or refused,
//! with the reason in the log).

use std::time::Instant;

use tessera_proto::v1::{
    self, CoordinatorMessage, coordinator_message::Body as Out, participant_message::Body as In,
};
use tracing::{debug, info, warn};

use super::{FederationMachine, Input, Output, SessionInfo, State, aggregation};

impl FederationMachine {
    /// Something happened.
    pub fn handle(&mut self, now: Instant, input: Input) {
        match input {
            Input::Connected {
                name,
                session,
                certificate,
            } => {
                if self
                    .sessions
                    .insert(
                        name.clone(),
                        SessionInfo {
                            id: session,
                            certificate,
                            budget: None,
                        },
                    )
                    .is_some()
                {
                    info!(participant = %name, "participant reconnected; its earlier session is replaced");
                    self.participant_lost(now, &name, "reconnected with a new session");
                } else {
                    info!(participant = %name, connected = self.sessions.len(), "participant joined");
                }
                self.rejected.remove(&name);
                self.outputs.push_back(Output::Send {
                    to: name.clone(),
                    message: Box::new(CoordinatorMessage {
                        body: Some(Out::Welcome(v1::Welcome {
                            protocol_version: tessera_proto::PROTOCOL_VERSION,
                            participant_name: name,
                            federation: self.policy.federation.clone(),
                            task: Some(tessera_proto::round::task_to_wire(&self.policy.task)),
                        })),
                    }),
                });
                if matches!(self.state, State::Waiting { .. }) {
                    self.maybe_start_round(now);
                }
            }
            Input::Disconnected { name, session } => {
                if self.sessions.get(&name).map(|s| s.id) == Some(session) {
                    self.sessions.remove(&name);
                    info!(participant = %name, connected = self.sessions.len(), "participant left");
                    self.participant_lost(now, &name, "disconnected");
                }
            }
            Input::Message {
                name,
                session,
                message,
            } => {
                if self.sessions.get(&name).map(|s| s.id) != Some(session) {
                    debug!(participant = %name, "message from a replaced session ignored");
                    return;
                }
                let Some(body) = message.body else {
                    warn!(participant = %name, "empty message ignored");
                    return;
                };
                self.handle_message(now, &name, body);
            }
            Input::Committed { round } => self.committed(now, round),
        }
    }

    fn handle_message(&mut self, now: Instant, name: &str, body: In) {
        match &body {
            In::Hello(h) => {
                // Another protocol version never gets here: the service
                // refuses that session (see `service::version_refusal`).
                let budget = h
                    .budget
                    .as_ref()
                    .and_then(tessera_proto::round::budget_from_wire);
                if let Some(b) = &budget {
                    info!(participant = %name, max_epsilon = ?b.max_epsilon, delta = b.delta, min_noise_multiplier = ?b.min_noise_multiplier, epsilon_spent = b.epsilon_spent, "site declared its own privacy terms");
                }
                if let Some(session) = self.sessions.get_mut(name) {
                    session.budget = budget;
                }
                return;
            }
            In::TaskRejected(r) => {
                let (code, reason) = tessera_proto::reasons::reject_of(r);
                warn!(participant = %name, code = code.as_str_name(), %reason, "participant cannot serve the task; carrying on without it");
                self.rejected.insert(name.to_owned());
                self.participant_lost(now, name, "rejected the task");
                return;
            }
            _ => {}
        }
        let State::Running(agg) = &mut self.state else {
            debug!(participant = %name, message = aggregation::body_name(&body), "message outside a round ignored");
            return;
        };
        let Some(index) = agg.index_of(name) else {
            warn!(participant = %name, round = agg.round, message = aggregation::body_name(&body), "message from a participant not in this round's cohort refused");
            return;
        };
        if let In::RoundReply(reply) = &body {
            if reply.round != agg.round {
                warn!(participant = %name, got = reply.round, expected = agg.round, "reply for another round refused");
                return;
            }
            if reply.accept {
                agg.accept(index);
            } else {
                let (code, reason) = tessera_proto::reasons::decline_of(reply);
                info!(participant = %name, round = agg.round, code = code.as_str_name(), %reason, "participant declined the round");
                if agg.kind == tessera_model::RoundKind::Analytics {
                    // A site's analytics policy declines one query, not the
                    // federation: it stays eligible for every other round.
                    if let Some(q) = self.running_query.as_mut() {
                        q.declined += 1;
                    }
                } else if code == v1::DeclineCode::BudgetExceeded {
                    self.exhausted.insert(name.to_owned());
                }
                agg.drop_participant(index);
            }
        } else if let Err(refusal) = agg.handle(index, &body) {
            warn!(participant = %name, round = agg.round, fatal = refusal.is_fatal(), reason = %refusal, "message refused");
            if refusal.is_fatal() {
                agg.drop_participant(index);
            }
        }
        if let State::Running(agg) = &self.state
            && agg.stage_complete()
        {
            self.close_stage(now);
        }
    }

    pub(super) fn participant_lost(&mut self, now: Instant, name: &str, why: &str) {
        if let State::Running(agg) = &mut self.state
            && let Some(index) = agg.index_of(name)
        {
            info!(participant = %name, round = agg.round, stage = agg.stage().name(), "participant dropped from the round: {why}");
            agg.drop_participant(index);
            if agg.stage_complete() {
                self.close_stage(now);
            }
        }
    }

    pub(super) fn eligible(&self) -> Vec<String> {
        self.sessions
            .keys()
            .filter(|n| !self.rejected.contains(*n) && !self.exhausted.contains(*n))
            .cloned()
            .collect()
    }
}
