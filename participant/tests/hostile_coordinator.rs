//! Acceptance: a coordinator that announces hostile terms learns nothing
//! derived from a site's data.
//!
//! One site, next to a CSV with planted values (unusual decimals, unique
//! label strings, a known row count, a distinctive file path), is sent
//! hostile announcements — a tiny fixed-point scale, DP with no statistics
//! bounds, a wrong σ_eff, secure aggregation off, a huge dimension,
//! mismatched preprocessing, a wrong sensitivity — and tasks that name a
//! probing column. Every message it sends is encoded with prost and
//! decoded back, and neither the bytes nor any string field may hold a
//! planted value; every reason is a fixed text, and no declined round gets
//! an input. Sane rounds in between still get the site's (masked) input.

mod common;

use common::*;
use prost::Message;
use tessera_participant::ledger::LedgerStore;
use tessera_proto::reasons::{decline_text, reject_text};
use tessera_proto::v1::{
    self, DeclineCode, ParticipantMessage, RejectCode, coordinator_message::Body as In,
    participant_message::Body as Out,
};

/// The planted values and what is derived from them, as the text a leak
/// would carry.
fn needles(dir: &SiteDir) -> Vec<String> {
    let mut n: Vec<String> = Vec::new();
    for v in [PLANTED_X1, PLANTED_X2] {
        n.push(format!("{v}"));
        n.push(format!("{v:e}"));
        n.push(format!("{v:?}"));
        n.push(format!("{}", v as f32));
    }
    n.extend(["7351.8", "73194"].map(String::from));
    n.push(ROWS.to_string());
    n.push((PROBE_ROW + 2).to_string());
    n.push(PROBE_VALUE.into());
    n.extend(DIAGNOSES.map(String::from));
    n.push(dir.csv.to_string_lossy().into_owned());
    n.push(CSV_NAME.into());
    n.push("hospital-data-zq4471".into());
    // Column means: what exact statistics would reveal.
    let task = tessera_proto::round::task_from_wire(&task(&FEATURES, "y", "> 0")).unwrap();
    let data = tessera_model::load_csv(&dir.csv, &task).unwrap();
    for column in data.x.columns() {
        let mean = column.mean().unwrap();
        n.push(format!("{mean}"));
        n.push(format!("{mean:.4}"));
    }
    let text = csv_text();
    assert!(text.contains("7351.8264") && text.contains("0.00073194"));
    assert!(text.contains(PROBE_VALUE));
    n
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every string field of a participant message.
fn strings(m: &ParticipantMessage) -> Vec<&str> {
    match m.body.as_ref().expect("a body") {
        Out::Hello(h) => vec![&h.software],
        Out::RoundReply(r) => vec![&r.reason],
        Out::TaskRejected(r) => vec![&r.reason],
        Out::Keys(_)
        | Out::ShareKeys(_)
        | Out::Chunk(_)
        | Out::Unmask(_)
        | Out::SurvivorSignature(_)
        | Out::UploadRequest(_)
        | Out::UploadWithdrawn(_) => vec![],
    }
}

/// Checks everything `out` holds: prost round trip, no planted value in the
/// bytes or strings, fixed reasons only.
fn check_sent(out: &Outbox, needles: &[String]) {
    assert!(!out.sent.is_empty());
    for m in &out.sent {
        let bytes = m.encode_to_vec();
        let back = ParticipantMessage::decode(bytes.as_slice()).unwrap();
        assert_eq!(&back, m);
        for n in needles {
            assert!(
                !contains(&bytes, n.as_bytes()),
                "{n:?} in the encoding of {back:?}"
            );
            for s in strings(&back) {
                assert!(!s.contains(n.as_str()), "{n:?} in {s:?}");
            }
        }
        match back.body.unwrap() {
            Out::RoundReply(r) if r.accept => assert!(r.reason.is_empty(), "{r:?}"),
            Out::RoundReply(r) => {
                let code = DeclineCode::try_from(r.code).unwrap();
                assert_ne!(code, DeclineCode::Unspecified);
                assert_eq!(r.reason, decline_text(code));
            }
            Out::TaskRejected(r) => {
                let code = RejectCode::try_from(r.code).unwrap();
                assert_ne!(code, RejectCode::Unspecified);
                assert_eq!(r.reason, reject_text(code));
            }
            _ => {}
        }
    }
}

#[test]
fn a_hostile_coordinator_learns_nothing_derived_from_the_data() {
    let dir = SiteDir::new();
    let needles = needles(&dir);
    let mut site = dir.site("", "");
    let mut out = Outbox::default();
    assert!(
        out.handle(&mut site, welcome(task(&FEATURES, "y", "> 0")))
            .is_empty()
    );

    let mut hostile: Vec<(v1::RoundAnnounce, DeclineCode)> = Vec::new();
    // A tiny fixed-point scale: the noise is a few integer units.
    let mut a = private_statistics(1);
    a.encoding = Some(v1::Encoding {
        scale_bits: 0,
        modulus_bits: 64,
    });
    hostile.push((a, DeclineCode::InvalidEncoding));
    let mut a = private_training(2);
    a.encoding = Some(v1::Encoding {
        scale_bits: 1,
        modulus_bits: 32,
    });
    hostile.push((a, DeclineCode::InvalidEncoding));
    // DP on, no statistics bounds: exact statistics would leave the site.
    let mut a = private_statistics(3);
    a.statistics_bounds = None;
    hostile.push((a, DeclineCode::InvalidTerms));
    // σ_eff that its parts do not give.
    let mut a = private_training(4);
    a.privacy.as_mut().unwrap().noise_multiplier = 5.0;
    hostile.push((a, DeclineCode::InvalidTerms));
    // Secure aggregation off in a private round.
    let mut a = private_training(5);
    a.secagg = None;
    hostile.push((a, DeclineCode::SecureAggregationRequired));
    // Huge dimensions.
    let mut a = private_training(6);
    a.dimension = 1 << 40;
    hostile.push((a, DeclineCode::LimitsExceeded));
    let mut a = private_statistics(7);
    a.dimension = u64::MAX;
    hostile.push((a, DeclineCode::LimitsExceeded));
    // Preprocessing of the wrong length.
    let mut a = private_training(8);
    a.preprocessing.as_mut().unwrap().std.pop();
    hostile.push((a, DeclineCode::LimitsExceeded));
    // A sensitivity the bounds do not give (less noise than needed).
    let mut a = private_statistics(9);
    a.privacy.as_mut().unwrap().clip_norm /= 10.0;
    hostile.push((a, DeclineCode::InvalidTerms));
    // An encoding too narrow for the bounded statistics.
    let mut a = private_statistics(10);
    a.encoding = Some(v1::Encoding {
        scale_bits: 20,
        modulus_bits: 16,
    });
    hostile.push((a, DeclineCode::InvalidEncoding));

    for (a, expected) in &hostile {
        let round = a.round;
        let is_training = a.kind == v1::AggregationKind::Training as i32;
        out.handle(&mut site, common::message(In::Announce(a.clone())));
        let reply = out.reply(round).expect("a reply").clone();
        assert_eq!(declined(&reply), *expected, "round {round}");
        if is_training {
            // The coordinator sends its model anyway, of any length.
            for m in model(round, &[0.25; 4]) {
                assert!(out.handle(&mut site, m).is_empty());
            }
            // Including one as long as the announced dimension implies.
            let mut huge = tessera_proto::chunk::split(round, v1::ChunkPurpose::Model, &[1.0f32]);
            huge[0].total = a.dimension.saturating_sub(1);
            assert!(
                out.handle(&mut site, common::message(In::Chunk(huge.remove(0))))
                    .is_empty()
            );
        }
    }

    // Sane rounds still get the site's masked input.
    let stats = private_statistics(20);
    out.handle(&mut site, common::message(In::Announce(stats.clone())));
    assert!(out.reply(20).unwrap().accept);
    Peers::new(&stats).run(&mut site, &mut out);
    assert!(!out.input_chunks(20).is_empty());
    let training = private_training(21);
    out.handle(&mut site, common::message(In::Announce(training.clone())));
    assert!(out.reply(21).unwrap().accept);
    for m in model(21, &[0.1, -0.2, 0.05, 0.0]) {
        out.handle(&mut site, m);
    }
    Peers::new(&training).run(&mut site, &mut out);
    let chunks = out.input_chunks(21);
    assert!(!chunks.is_empty());
    assert!(
        chunks
            .iter()
            .all(|c| c.purpose == v1::ChunkPurpose::MaskedInput as i32)
    );

    // A task that names a probing column, as a feature and as the label.
    for probe in [
        task(&["x1", "probe"], "y", "> 0"),
        task(&["x1"], "diagnosis", "> 0"),
    ] {
        let mut probed = dir.site("", "");
        let mut probe_out = Outbox::default();
        let sent = probe_out.handle(&mut probed, welcome(probe));
        assert!(
            matches!(&sent[..], [m] if matches!(&m.body, Some(Out::TaskRejected(r))
                if r.code == RejectCode::DataDoesNotFit as i32)),
            "{sent:?}"
        );
        // The detail (value, line, file) stays local: the exit reason.
        let (code, reason) = &probe_out.exits[0];
        assert_eq!(*code, tessera_participant::site::EXIT_TASK_REJECTED);
        assert!(reason.contains(CSV_NAME), "{reason}");
        check_sent(&probe_out, &needles);
    }
    let mut listed = dir.site(r#"allowed_columns = ["x1", "x2", "x3", "y"]"#, "");
    let mut listed_out = Outbox::default();
    listed_out.handle(&mut listed, welcome(task(&["x1", "probe"], "y", "> 0")));
    assert!(matches!(
        &listed_out.sent[0].body,
        Some(Out::TaskRejected(r)) if r.code == RejectCode::ColumnNotAllowed as i32
    ));
    check_sent(&listed_out, &needles);

    check_sent(&out, &needles);
    for (a, _) in &hostile {
        assert!(
            out.input_chunks(a.round).is_empty(),
            "input sent for declined round {}",
            a.round
        );
    }
    // What the site did send for the sane rounds is in its ledger.
    let rounds: Vec<u64> = dir
        .ledger()
        .contributions()
        .unwrap()
        .iter()
        .map(|c| c.round)
        .collect();
    assert_eq!(rounds, [20, 21]);
}
