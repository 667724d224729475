//! # tessera-analytics
//!
//! Federated analytics: questions such as "how many patients over 65 with
//! chest-pain type 4?", "the mean cholesterol?", "the age histogram?",
//! "the most common chest-pain type?" answered across sites through the same
//! secure sum and the same privacy ledger as training.
//!
//! * [`query`] and [`parse`]: the query language (`count where age > 65 and
//!   cp = 4`, `mean chol in [100, 600]`, `histogram age edges [20, 40, 60,
//!   80]`, `most common cp among [1, 2, 3, 4]`) and its parser, whose errors
//!   name the position.
//! * [`plan`]: a query as announced (row cap per site, noise), and what
//!   follows from it: the site vector's layout and sensitivity, the
//!   mechanism, the ledger event, ε.
//! * [`site`]: a site's policy (allowed columns, least noise per kind, own
//!   budget), checked before any row is read, and its bounded contribution.
//! * [`release`]: noise on the secure sum from a CSPRNG, the decoded answer
//!   with its noise scale, sealed until its ledger event is recorded.
//!
//! Like `tessera-privacy` and `tessera-secagg` it is a pure library: no
//! sockets, clock or threads; randomness only from the RNG passed in.
//!
//! ```
//! use tessera_analytics::{QueryNoise, QueryPlan, parse_query, release, site::{Table, contribution}};
//! let plan = QueryPlan {
//!     query: parse_query("count where age > 65").unwrap(),
//!     max_rows: 100,
//!     noise: QueryNoise::Epsilon(1.0),
//! };
//! let table = Table { columns: vec!["age".into()], rows: vec![vec![70.0], vec![40.0]] };
//! let sum = contribution(&plan, &table).unwrap();
//! let mut rng = rand_chacha::ChaCha20Rng::from_seed([7; 32]); // tests only: use OsRng
//! # use rand::SeedableRng;
//! let sealed = release::release(&plan, &sum, 1, 1e-5, &mut rng).unwrap();
//! let mut ledger = Vec::new();
//! let r = sealed.open_after(|e| { ledger.push(e.clone()); Ok::<_, ()>(()) }).unwrap();
//! assert_eq!(ledger.len(), 1);
//! assert_eq!(r.epsilon, 1.0);
//! ```

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod parse;
pub mod plan;
pub mod query;
pub mod release;
pub mod site;

pub use parse::{ParseError, parse_query};
pub use plan::{Mechanism, PlanError, QueryNoise, QueryPlan};
pub use query::{Bounds, CmpOp, Filter, KindName, Query, QueryKind};
pub use release::{Answer, NoiseReport, Release, Sealed};
pub use site::{Refusal, RefusalCode, SitePolicy, Table};
