//! Wire messages: any bytes decoded as a participant's or the
//! coordinator's message, then converted to protocol types as the
//! coordinator and the participants do. Errors are fine; panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tessera_proto::convert;
use tessera_proto::v1::{
    CoordinatorMessage, ParticipantMessage, coordinator_message::Body as Out,
    participant_message::Body as In,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = ParticipantMessage::decode(data) {
        match &m.body {
            Some(In::Keys(k)) => {
                let _ = convert::keys_from_wire(1, k);
            }
            Some(In::ShareKeys(s)) => {
                let _ = convert::share_keys_from_wire(s);
            }
            Some(In::Unmask(u)) => {
                let _ = convert::unmask_response_from_wire(u);
            }
            _ => {}
        }
    }
    if let Ok(m) = CoordinatorMessage::decode(data) {
        match &m.body {
            Some(Out::PeerKeys(p)) => {
                let _ = convert::peer_keys_from_wire(p);
            }
            Some(Out::RoutedShares(s)) => {
                let _ = convert::routed_shares_from_wire(s);
            }
            Some(Out::UnmaskRequest(u)) => {
                let _ = convert::unmask_request_from_wire(u);
            }
            Some(Out::Announce(a)) => {
                let _ = tessera_proto::round::announcement_from_wire(a);
            }
            Some(Out::Welcome(w)) => {
                if let Some(t) = &w.task {
                    let _ = tessera_proto::round::task_from_wire(t);
                }
            }
            _ => {}
        }
    }
});
