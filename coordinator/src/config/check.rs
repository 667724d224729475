//! Checks of the coordinator's configuration values: every error names
//! the key at fault. Nothing here decides the noise.

use tessera_model::{ModelKind, TaskError};

use super::{ConfigError, CoordinatorConfig, invalid};

impl CoordinatorConfig {
    /// Checks every value; names the key at fault. Deciding the noise
    /// (calibrating σ from a target ε) is the planning step's job
    /// ([`crate::settings::Settings::plan`]), not this one's.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.check_web()?;
        let f = &self.federation;
        if f.name.trim().is_empty() {
            return Err(invalid("federation.name", "must not be empty"));
        }
        if f.min_participants == 0 {
            return Err(invalid("federation.min_participants", "must be at least 1"));
        }
        self.check_analytics()?;
        if let Some(allow) = &f.allow
            && allow.is_empty()
        {
            return Err(invalid(
                "federation.allow",
                "an empty allow-list admits nobody; remove the key to admit every certificate of the CA",
            ));
        }
        if self.task.features.is_empty() {
            return Err(invalid("task.features", "list at least one feature column"));
        }
        if self.task.features.contains(&self.task.label) {
            return Err(invalid("task.label", "the label cannot also be a feature"));
        }
        let mut task = self.task.to_task()?;
        if task.model == ModelKind::External {
            if self.training.initial_model.is_none() {
                return Err(invalid(
                    "task.model",
                    "an external model needs `training.initial_model`, whose tensors are its layout",
                ));
            }
            // Its tensors are read when the settings are planned.
            task.tensors = vec![tessera_model::TensorSpec::new("w", &[1])];
        }
        task.validate().map_err(|e| {
            let key = match e {
                TaskError::ModelDoesNotFit { .. } | TaskError::UnknownModel(_) => "task.model",
                TaskError::Classes(_) => "task.classes",
                _ => "task",
            };
            invalid(key, e.to_string())
        })?;
        let t = &self.training;
        if t.local_epochs == 0 {
            return Err(invalid("training.local_epochs", "must be at least 1"));
        }
        if !(t.learning_rate.is_finite() && t.learning_rate > 0.0) {
            return Err(invalid(
                "training.learning_rate",
                "must be a positive number",
            ));
        }
        if t.batch_size == 0 {
            return Err(invalid("training.batch_size", "must be at least 1"));
        }
        if !(t.clip_norm.is_finite() && t.clip_norm > 0.0) {
            return Err(invalid("training.clip_norm", "must be a positive number"));
        }
        if !(t.server_learning_rate.is_finite() && t.server_learning_rate > 0.0) {
            return Err(invalid(
                "training.server_learning_rate",
                "must be a positive number",
            ));
        }
        if !crate::round::optimizer::NAMES.contains(&t.server_optimizer.as_str()) {
            return Err(invalid(
                "training.server_optimizer",
                format!(
                    "unknown server optimizer `{}` (known: {})",
                    t.server_optimizer,
                    crate::round::optimizer::NAMES.join(", ")
                ),
            ));
        }
        if !(0.0..1.0).contains(&t.server_momentum) {
            return Err(invalid("training.server_momentum", "must be in [0, 1)"));
        }
        for (key, v) in [
            ("training.server_beta1", t.server_beta1),
            ("training.server_beta2", t.server_beta2),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Err(invalid(key, "must be in [0, 1)"));
            }
        }
        if !(t.server_tau.is_finite() && t.server_tau > 0.0) {
            return Err(invalid("training.server_tau", "must be a positive number"));
        }
        if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0) {
            return Err(invalid(
                "training.weight_decay",
                "must be a non-negative number",
            ));
        }
        let e = &self.evaluation;
        if e.every > 0 {
            if !tessera_model::evaluation::BINS_RANGE.contains(&e.bins) {
                return Err(invalid("evaluation.bins", "must be from 10 to 10000"));
            }
            if let Some(m) = e.max_rows
                && !(m.is_finite() && m >= 1.0)
            {
                return Err(invalid("evaluation.max_rows", "must be at least 1"));
            }
            if self.privacy.enabled && !(e.noise_multiplier.is_finite() && e.noise_multiplier > 0.0)
            {
                return Err(invalid(
                    "evaluation.noise_multiplier",
                    "must be a positive number",
                ));
            }
        }
        if let Some(g) = t.target_quantile {
            if !t.adaptive_clipping {
                return Err(invalid(
                    "training.target_quantile",
                    "only used with adaptive clipping; set adaptive_clipping = true",
                ));
            }
            if !(g > 0.0 && g < 1.0) {
                return Err(invalid("training.target_quantile", "must be in (0, 1)"));
            }
        }
        if let Some(eta) = t.clip_learning_rate {
            if !t.adaptive_clipping {
                return Err(invalid(
                    "training.clip_learning_rate",
                    "only used with adaptive clipping; set adaptive_clipping = true",
                ));
            }
            if !(eta.is_finite() && eta > 0.0) {
                return Err(invalid(
                    "training.clip_learning_rate",
                    "must be a positive number",
                ));
            }
        }
        let s = &self.secagg;
        if !(0.0..1.0).contains(&s.dropout_tolerance) {
            return Err(invalid("secagg.dropout_tolerance", "must be in [0, 1)"));
        }
        let d = &self.deadlines;
        for (key, v) in [
            ("deadlines.stage_seconds", d.stage_seconds),
            ("deadlines.training_seconds", d.training_seconds),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(invalid(key, "must be a positive number of seconds"));
            }
        }
        let st = &self.statistics;
        if !(st.value_bound.is_finite() && st.value_bound > 0.0) {
            return Err(invalid("statistics.value_bound", "must be positive"));
        }
        if !(st.max_rows.is_finite() && st.max_rows >= 1.0) {
            return Err(invalid("statistics.max_rows", "must be at least 1"));
        }
        let p = &self.privacy;
        if p.enabled {
            if !(p.delta > 0.0 && p.delta < 1.0) {
                return Err(invalid("privacy.delta", "must be in (0, 1)"));
            }
            if !(p.sampling_rate > 0.0 && p.sampling_rate <= 1.0) {
                return Err(invalid("privacy.sampling_rate", "must be in (0, 1]"));
            }
            if !(p.statistics_noise_multiplier.is_finite() && p.statistics_noise_multiplier > 0.0) {
                return Err(invalid(
                    "privacy.statistics_noise_multiplier",
                    "must be a positive number",
                ));
            }
            match (p.noise_multiplier, p.target_epsilon) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "privacy.noise_multiplier",
                        "set either noise_multiplier or target_epsilon, not both",
                    ));
                }
                (None, None) => {
                    return Err(invalid(
                        "privacy.noise_multiplier",
                        "privacy is enabled: set noise_multiplier or target_epsilon",
                    ));
                }
                (Some(sigma), None) => {
                    if !(sigma.is_finite() && sigma > 0.0) {
                        return Err(invalid("privacy.noise_multiplier", "must be positive"));
                    }
                }
                (None, Some(eps)) => {
                    if !(eps.is_finite() && eps > 0.0) {
                        return Err(invalid("privacy.target_epsilon", "must be positive"));
                    }
                }
            }
            if let Some(m) = p.max_epsilon.or(p.target_epsilon)
                && !(m.is_finite() && m > 0.0)
            {
                return Err(invalid("privacy.max_epsilon", "must be positive"));
            }
            match p.clip_count_noise_multiplier {
                Some(_) if !self.training.adaptive_clipping => {
                    return Err(invalid(
                        "privacy.clip_count_noise_multiplier",
                        "only used with adaptive clipping; set training.adaptive_clipping = true",
                    ));
                }
                Some(b) if !(b.is_finite() && b > 0.0) => {
                    return Err(invalid(
                        "privacy.clip_count_noise_multiplier",
                        "must be a positive number",
                    ));
                }
                _ => {}
            }
            if p.placement.by_sites() {
                // Adaptive clipping stays central. Its clipping bit (sensitivity
                // 1/2, encoded exactly) is released jointly with the update at
                // another noise scale, σ_b against σ_Δ·C (Andrew et al. 2021,
                // §3). The distributed discrete Gaussian the sites add is one
                // scale `s` over the whole vector with one L2 sensitivity
                // (Kairouz, Liu & Steinke 2021, Thm. 2), and so is the ledger
                // event, the announcement (`site_noise_units`) and each site's
                // check. Scaling the bit up to the update's scale would need it
                // encoded inexactly (its sensitivity would then exceed 1/2).
                // Sites' noise for it needs a second share per site, announced,
                // checked and accounted as a second event: refused until then,
                // rather than accounted with a bound that does not hold.
                if self.training.adaptive_clipping {
                    return Err(invalid(
                        "privacy.placement",
                        "noise added by the sites does not support adaptive clipping: its \
                         clipping bit needs a noise scale of its own, which the sites' shares \
                         (one scale for the whole vector) do not have; use placement = \
                         \"central\" or turn adaptive clipping off",
                    ));
                }
                if p.placement == tessera_model::Placement::Distributed && !self.secagg.enabled {
                    return Err(invalid(
                        "privacy.placement",
                        "distributed noise needs secure aggregation (each update carries only \
                         a share of the noise): set secagg.enabled = true",
                    ));
                }
            }
        } else {
            if p.placement.by_sites() || p.colluding_sites > 0 {
                return Err(invalid(
                    "privacy.placement",
                    "a noise placement is given but privacy is not enabled; set enabled = true",
                ));
            }
            if p.noise_multiplier.is_some() || p.target_epsilon.is_some() {
                return Err(invalid(
                    "privacy.enabled",
                    "noise settings are given but privacy is not enabled; set enabled = true",
                ));
            }
            if p.sampling_rate != 1.0 && !(p.sampling_rate > 0.0 && p.sampling_rate <= 1.0) {
                return Err(invalid("privacy.sampling_rate", "must be in (0, 1]"));
            }
            if p.clip_count_noise_multiplier.is_some() {
                return Err(invalid(
                    "privacy.enabled",
                    "noise settings are given but privacy is not enabled; set enabled = true",
                ));
            }
        }
        match (p.insecure_noise_seed, p.acknowledge_not_private) {
            (Some(_), false) => {
                return Err(invalid(
                    "privacy.insecure_noise_seed",
                    "a seeded noise makes every release NOT private; it is for simulations only \
                     and needs `acknowledge_not_private = true` in [privacy]",
                ));
            }
            (None, true) => {
                return Err(invalid(
                    "privacy.acknowledge_not_private",
                    "only meaningful with insecure_noise_seed; remove it",
                ));
            }
            _ => {}
        }
        if p.enabled {
            for f in &self.task.features {
                if !self.statistics.ranges.contains_key(f) {
                    return Err(invalid(
                        "statistics.ranges",
                        format!("no range for feature `{f}`"),
                    ));
                }
            }
            // A private regression standardises or evaluates its target over a
            // public range: its contribution must be bounded.
            let evaluates = self.evaluation.every > 0;
            if (task.standardizes_target()
                || (evaluates && matches!(task.kind, tessera_model::TaskKind::Regression { .. })))
                && !self.statistics.ranges.contains_key(&task.label)
            {
                return Err(invalid(
                    "statistics.ranges",
                    format!(
                        "no range for the label `{}`: a private regression needs one to bound what a site contributes",
                        task.label
                    ),
                ));
            }
        }
        if self.secagg.enabled && self.federation.min_participants < 3 {
            return Err(invalid(
                "federation.min_participants",
                "secure aggregation needs at least 3 participants per round",
            ));
        }
        Ok(())
    }
}

impl CoordinatorConfig {
    /// Checks what `[[analytics]]` needs of the rest of the file (each
    /// entry's own plan is checked as it is read, see
    /// [`super::analytics`]): central noise, which the query's mechanisms
    /// are (the sites cannot add a share of a discrete Laplace or of the
    /// exponential mechanism's choice the way they add Gaussian shares).
    fn check_analytics(&self) -> Result<(), ConfigError> {
        let p = &self.privacy;
        if p.enabled
            && p.placement != tessera_model::Placement::Central
            && !self.analytics.is_empty()
        {
            return Err(invalid(
                "analytics",
                format!(
                    "analytics queries are noised by the coordinator (central placement); with \
                     privacy.placement = \"{}\" the sites would expect to add the noise themselves, \
                     which the discrete Laplace and exponential mechanisms of a query cannot do: \
                     run the queries in a federation with central placement",
                    p.placement
                ),
            ));
        }
        Ok(())
    }
}
