//! The privacy report in words: one document, rendered as Markdown or as an
//! HTML fragment (every text escaped).

use std::fmt::Write as _;

use super::PrivacyReport;

/// A piece of the document.
enum Block {
    Heading(String),
    Banner(String),
    Para(String),
    List(Vec<String>),
    Table(Vec<String>, Vec<Vec<String>>),
}

/// ε or another figure, to four decimals.
fn num(v: f64) -> String {
    format!("{v:.4}")
}

/// A probability as a percentage.
fn pct(p: f64) -> String {
    if p >= 0.9995 {
        format!("{:.2}%", 100.0 * p)
    } else {
        format!("{:.1}%", 100.0 * p)
    }
}

fn accountant_words(name: &str) -> &'static str {
    match name {
        "exact" => {
            "exact composition of Gaussian mechanisms (the true ε of this noise, not merely a bound)"
        }
        "pld" => "privacy loss distributions (a numerically tight upper bound)",
        "rdp" => {
            "Rényi differential privacy (the usual \"moments\" accountant: always valid, often loose)"
        }
        _ => "no accountant (nothing was released)",
    }
}

fn list_rounds(rounds: &[u64]) -> String {
    let shown: Vec<String> = rounds.iter().take(20).map(u64::to_string).collect();
    let more = if rounds.len() > 20 { ", …" } else { "" };
    format!("{}{more}", shown.join(", "))
}

/// The report as a sequence of blocks.
fn document(r: &PrivacyReport) -> Vec<Block> {
    use Block::*;
    let mut d = Vec::new();
    d.push(Heading(format!("Privacy report: {}", r.federation)));
    if !r.private {
        d.push(Banner(format!(
            "NOT PRIVATE. Round(s) {} were released without differential privacy (privacy \
             turned off, or noise drawn from a fixed seed for a simulation). The figures below \
             describe the ledger's rows only; they are no guarantee for this federation.",
            list_rounds(&r.non_private_rounds)
        )));
    }
    let others = r.releases - r.training_rounds;
    if r.releases == 0 {
        d.push(Para(
            "Nothing has been released with differential privacy yet: the ledger is empty and \
             ε = 0."
                .into(),
        ));
    } else {
        d.push(Para(format!(
            "The coordinator has released {} aggregate(s): {} model update(s) and {} other \
             release(s), such as the pooled feature statistics every site standardises its data \
             with. Each one was bounded, noised, and written to the privacy ledger before anyone \
             saw it. Together they satisfy differential \
             privacy with ε = {} and δ = {:e} for each site's contribution.",
            r.releases,
            r.training_rounds,
            others,
            num(r.epsilon),
            r.delta
        )));
    }

    d.push(Heading("What is protected".into()));
    d.push(Para(
        "The unit of privacy is one hospital's whole contribution: all of its records together, \
         over every round. Picture two worlds: in one, a hospital takes part with its real data; \
         in the other, its contribution is replaced by nothing. Whoever sees every released model \
         and statistic can tell these two worlds apart only a little, and ε measures how little. \
         So any fact about one hospital's data (for example, whether its records include a \
         particular patient) is protected at least as well as the hospital as a whole."
            .into(),
    ));
    d.push(Para(
        "What is not hidden is which hospitals take part: every member of a round receives the \
         list of that round's members. In the ledger's own words, the guarantee is this:"
            .into(),
    ));
    d.push(Para(format!("\"{}.\"", r.guarantee)));

    d.push(Heading(format!("What ε = {} means", num(r.epsilon))));
    d.push(Para(format!(
        "Suppose someone (another hospital, a user of the model, a journalist) holds a belief \
         about one hospital's data before anything is released, say a probability that its \
         records include a given patient. After seeing every release, their odds can grow by at \
         most a factor e^ε = {:.3}, except with probability at most δ = {:e}. δ is the chance \
         the guarantee fails outright; it is set far below one in the number of people in the \
         data. The table shows the worst case for a few starting beliefs:",
        r.epsilon.exp(),
        r.delta
    )));
    d.push(Table(
        vec![
            "belief before (prior)".into(),
            "worst-case belief after every release".into(),
        ],
        r.posterior
            .iter()
            .map(|p| vec![pct(p.prior), pct(p.worst_case)])
            .collect(),
    ));

    if !r.groups.is_empty() {
        d.push(Heading("The noise that bought it".into()));
        d.push(Para(
            "Each site's update is clipped: its length is cut to at most C, so no site can move \
             the sum by more than C. The coordinator adds Gaussian noise with standard deviation \
             σ × C to the sum before anything leaves it. With sampling rate q = 1 every \
             available site takes part in every round; with q < 1 each site is drawn at random \
             with probability q."
                .into(),
        ));
        d.push(Table(
            vec![
                "release".into(),
                "how many".into(),
                "noise multiplier σ".into(),
                "clip norm C (most one site moves the sum)".into(),
                "sampling rate q".into(),
                "sites in the sum".into(),
            ],
            r.groups
                .iter()
                .map(|g| {
                    let clip = if g.clip_norm_min == g.clip_norm_max {
                        num(g.clip_norm_min)
                    } else {
                        format!("{} to {}", num(g.clip_norm_min), num(g.clip_norm_max))
                    };
                    let cohort = if g.cohort[0] == g.cohort[1] {
                        g.cohort[0].to_string()
                    } else {
                        format!("{} to {}", g.cohort[0], g.cohort[1])
                    };
                    vec![
                        format!("{} ({})", g.kind, g.mechanism),
                        g.count.to_string(),
                        num(g.noise_multiplier),
                        clip,
                        num(g.sampling_rate),
                        cohort,
                    ]
                })
                .collect(),
        ));
        if r.tv_slack > 0.0 {
            d.push(Para(format!(
                "The noise is drawn exactly on a fixed-point grid, and sampled cohorts have a \
                 minimum size; both differ slightly from the textbook mechanism. The ledger \
                 records that difference ({:.1e} in total) and δ above already includes it.",
                r.tv_slack
            )));
        }
    }

    if !r.analytics.is_empty() {
        d.push(Heading("Analytics releases".into()));
        d.push(Para(
            "Questions answered across the sites (counts, sums, means, histograms, the most \
             common values). Each is a release with its own noise and its own line in the \
             ledger, next to the training releases: ε above covers them all. The ε below is \
             what each costs on its own."
                .into(),
        ));
        d.push(Table(
            vec![
                "query".into(),
                "answer".into(),
                "mechanism".into(),
                "ε".into(),
                "δ".into(),
                "sites answered / declined".into(),
            ],
            r.analytics
                .iter()
                .map(|a| {
                    vec![
                        a.query.clone(),
                        a.answer.clone(),
                        a.mechanism.clone(),
                        num(a.epsilon),
                        num(a.delta),
                        format!("{} / {}", a.answered, a.declined),
                    ]
                })
                .collect(),
        ));
    }

    d.push(Heading("How it was proved".into()));
    d.push(Para(format!(
        "ε was computed by the {} accountant: {}.",
        r.accountant,
        accountant_words(&r.accountant)
    )));
    if let (Some(rdp), Some(ratio)) = (r.rdp_epsilon, r.tighter_than_rdp) {
        d.push(Para(format!(
            "The usual Rényi-DP bound for the same ledger is ε = {}; the figure used is {:.2} \
             times tighter{}.",
            num(rdp),
            ratio,
            if ratio < 1.0005 {
                " (the same bound)"
            } else {
                ""
            }
        )));
    }
    if !r.accountants.is_empty() {
        d.push(Table(
            vec!["accountant".into(), "ε".into(), "note".into()],
            r.accountants
                .iter()
                .map(|a| {
                    vec![
                        a.accountant.clone(),
                        a.epsilon.map_or_else(|| "-".into(), num),
                        a.reason.clone().unwrap_or_default(),
                    ]
                })
                .collect(),
        ));
    }
    if let Some(b) = r.budget {
        d.push(Para(format!(
            "The federation's budget is ε = {}: {} spent, {} left. No round starts that would \
             take ε past the budget.",
            num(b),
            num(r.epsilon),
            num((b - r.epsilon).max(0.0))
        )));
    }

    d.push(Heading("Each site's own ledger".into()));
    let site = match r.site_epsilon {
        Some(e) => format!(
            "A site that contributed to all {} releases counts ε = {} at δ = {:e}.",
            r.releases,
            num(e),
            r.delta
        ),
        None => "No site has contributed to a private release yet.".into(),
    };
    d.push(Para(format!(
        "Each hospital keeps its own ledger of the rounds it contributed to and computes its ε \
         itself, counting every round at q = 1, because it cannot check the coordinator's random \
         draws; it declines any round that would take it past its own budget or that announces \
         less noise than it accepts. {site} `tessera-participant ledger` shows a site's own \
         figure."
    )));

    d.push(Heading(
        "What the coordinator sees, and what it does not".into(),
    ));
    d.push(List(vec![
        "It sees each site's name (from its certificate), its public keys, encrypted key shares \
         it cannot open, and a masked update that looks like random numbers to it."
            .into(),
        match (r.placement.as_str(), r.coordinator_epsilon) {
            ("distributed" | "local", Some(e)) => format!(
                "The sites add the noise themselves ({} placement) to every sum they send — the \
                 model updates, the federated statistics and the evaluation sums — before \
                 masking, so every sum the coordinator unmasks already carries it. Against the \
                 coordinator itself — counting only the noise of sites it does not collude with \
                 (`privacy.colluding_sites`; with local noise, each site's own noise alone) and \
                 not its own top-up for sites that dropped — the whole ledger is (ε = {}, δ = \
                 {:e})-DP.",
                r.placement,
                num(e),
                r.delta
            ),
            ("distributed" | "local", None) => format!(
                "The sites add the noise of the model updates themselves ({} placement), but some \
                 release gave the coordinator a sum without noise it does not know (noised by \
                 the coordinator, or with every contributor assumed to collude with it): \
                 against the coordinator there is no guarantee.",
                r.placement
            ),
            _ => "It sees the sum of the round's updates before it adds the noise. The guarantee \
                  above is therefore against everyone who sees the released models, not against \
                  the coordinator itself; against the coordinator, secure aggregation hides each \
                  single update as long as it does not collude with enough sites (with \
                  `privacy.placement = \"distributed\"` the sites add the noise themselves)."
                .into(),
        },
        "It never sees a hospital's data, nor any single hospital's update or figures.".into(),
    ]));

    d.push(Heading(
        "Why not release \"anonymised\" data instead".into(),
    ));
    d.push(Para(
        "Removing names and record numbers does not protect anyone: the fields that remain can be \
         linked with other data sets. ZIP code, birth date and sex alone single out most \
         residents of the United States, which is how a governor's hospital record was found in \
         \"anonymised\" discharge data (Sweeney, 1997); Netflix subscribers were recognised from \
         \"anonymous\" film ratings by matching them with public reviews (Narayanan and \
         Shmatikov, 2008). Anonymisation is only as good as the guess about what an attacker \
         already knows. Differential privacy holds whatever else the attacker knows, now or \
         later."
            .into(),
    ));

    d.push(Heading("Where the figures come from".into()));
    d.push(Para(format!(
        "Every number above is computed from the privacy ledger (`tessera-coordinator ledger` \
         lists its {} row(s)) at δ = {:e}, by the accountants the coordinator uses to refuse \
         rounds that would pass the budget.",
        r.releases, r.delta
    )));
    d
}

/// The report as Markdown.
pub fn markdown(r: &PrivacyReport) -> String {
    let mut out = String::new();
    let mut first = true;
    for block in document(r) {
        match block {
            Block::Heading(h) => {
                let level = if first { "#" } else { "##" };
                first = false;
                let _ = writeln!(out, "{level} {h}\n");
            }
            Block::Banner(b) => {
                let _ = writeln!(out, "> **{b}**\n");
            }
            Block::Para(p) => {
                let _ = writeln!(out, "{p}\n");
            }
            Block::List(items) => {
                for i in items {
                    let _ = writeln!(out, "- {i}");
                }
                out.push('\n');
            }
            Block::Table(head, rows) => {
                let cell = |s: &str| s.replace('|', "\\|");
                let _ = writeln!(
                    out,
                    "| {} |",
                    head.iter().map(|h| cell(h)).collect::<Vec<_>>().join(" | ")
                );
                let _ = writeln!(out, "|{}", " --- |".repeat(head.len()));
                for row in rows {
                    let _ = writeln!(
                        out,
                        "| {} |",
                        row.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")
                    );
                }
                out.push('\n');
            }
        }
    }
    out
}

/// The report as an HTML fragment (a `<section>`), every text escaped.
pub fn html(r: &PrivacyReport) -> String {
    use crate::web::escape;
    let mut out = String::from("<section class=\"report\" id=\"privacy-report\">\n");
    let mut first = true;
    for block in document(r) {
        match block {
            Block::Heading(h) => {
                let tag = if first { "h2" } else { "h3" };
                first = false;
                let _ = writeln!(out, "<{tag}>{}</{tag}>", escape(&h));
            }
            Block::Banner(b) => {
                let _ = writeln!(out, "<p class=\"banner\">{}</p>", escape(&b));
            }
            Block::Para(p) => {
                let _ = writeln!(out, "<p>{}</p>", escape(&p));
            }
            Block::List(items) => {
                out.push_str("<ul>\n");
                for i in items {
                    let _ = writeln!(out, "<li>{}</li>", escape(&i));
                }
                out.push_str("</ul>\n");
            }
            Block::Table(head, rows) => {
                out.push_str("<table>\n<tr>");
                for h in head {
                    let _ = write!(out, "<th>{}</th>", escape(&h));
                }
                out.push_str("</tr>\n");
                for row in rows {
                    out.push_str("<tr>");
                    for c in row {
                        let _ = write!(out, "<td>{}</td>", escape(&c));
                    }
                    out.push_str("</tr>\n");
                }
                out.push_str("</table>\n");
            }
        }
    }
    out.push_str("</section>\n");
    out
}

/// The report as a standalone HTML page (no script, no outside resource).
pub fn html_document(r: &PrivacyReport) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Privacy report: {}</title><style>body{{font-family:system-ui,sans-serif;\
         max-width:860px;margin:0 auto;padding:0 16px}}table{{border-collapse:collapse}}\
         th,td{{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left}}\
         .banner{{background:#c0392b;color:#fff;padding:8px;font-weight:bold}}</style></head>\
         <body>\n{}</body></html>\n",
        crate::web::escape(&r.federation),
        html(r)
    )
}
