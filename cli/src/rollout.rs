//! `candela rollout`: a segment's release as the server sees it (the
//! rollout policy in force, each version's requests, errors and latency in
//! the guard's last window, the shadow's agreement, rollback state, the most
//! drifted features) and rolling a canary back by hand. Both need an admin key.

use candela_client::{Client, proto};
use clap::Subcommand;

/// How many of the most drifted features `status` lists per version.
const SHOWN_FEATURES: usize = 5;

#[derive(Subcommand)]
pub enum RolloutAction {
    /// The rollout of every segment (or one): policy, versions, guard, shadow, drift.
    Status {
        #[arg(long, default_value = "")]
        segment: String,
    },
    /// Set a segment's canary share to 0 now, on this server, until its rollout.json changes.
    Rollback {
        #[arg(long)]
        segment: String,
    },
}

/// Runs a `candela rollout` action.
pub async fn run(client: &Client, action: RolloutAction) -> Result<(), tonic::Status> {
    let mut rollouts = client.rollouts();
    match action {
        RolloutAction::Status { segment } => {
            let answer = rollouts.status(proto::RolloutStatusRequest { segment }).await?.into_inner();
            for segment in &answer.segments {
                print!("{}", render(segment));
            }
        }
        RolloutAction::Rollback { segment } => {
            rollouts.rollback(proto::RollbackRequest { segment: segment.clone() }).await?;
            println!("{segment}: canary rolled back on this server (share 0 until rollout.json changes)");
        }
    }
    Ok(())
}

/// One segment's status as text.
fn render(segment: &proto::SegmentRollout) -> String {
    let mut out = format!("segment {}\n", segment.segment);
    if segment.policy.is_empty() {
        out += "  policy: none (the newest version serves requests that pin none)\n";
    } else {
        out += &format!("  policy: stable v{}", segment.stable_version);
        if segment.canary_version > 0 {
            out += &format!(
                ", canary v{} at {}% (configured {}%)",
                segment.canary_version, segment.canary_percent, segment.canary_percent_configured
            );
        }
        if segment.shadow_version > 0 {
            out += &format!(", shadow v{} on {}%", segment.shadow_version, segment.shadow_percent);
        }
        out += &format!("; guard window {} s, {} breached in a row\n", segment.window_seconds, segment.breaches);
    }
    if !segment.rollback_reason.is_empty() {
        out += &format!("  ROLLED BACK: {}\n", segment.rollback_reason);
    }
    if !segment.refused.is_empty() {
        out += &format!("  rollout.json {}\n", segment.refused);
    }
    for version in &segment.versions {
        out += &format!(
            "  v{} {:<11} requests {} errors {}; last window: {} requests, {} errors, p50 {:.2} ms, p95 {:.2} ms\n",
            version.version,
            version.role,
            version.requests,
            version.errors,
            version.window_requests,
            version.window_errors,
            version.window_p50_ms,
            version.window_p95_ms
        );
        if version.outcomes > 0 {
            let shown = |value: f64, digits: usize| {
                if value < 0.0 { "—".to_string() } else { format!("{value:.digits$}") }
            };
            out += &format!(
                "     quality over {} outcomes: AUC {}, log loss {}, precision {}, recall {}\n",
                version.outcomes,
                shown(version.auc, 4),
                shown(version.log_loss, 4),
                shown(version.precision, 3),
                shown(version.recall, 3)
            );
        }
        if version.drift_rows > 0 {
            let mut drifted: Vec<&proto::FeatureDrift> = version.drift.iter().collect();
            drifted.sort_by(|a, b| b.psi.total_cmp(&a.psi));
            let shown: Vec<String> = drifted
                .iter()
                .take(SHOWN_FEATURES)
                .map(|d| format!("{} {:.3} ({})", d.feature, d.psi, reading(d.psi)))
                .collect();
            out += &format!("     drift over {} rows: {}", version.drift_rows, shown.join(", "));
            if version.score_psi >= 0.0 {
                out += &format!("; score {:.3} ({})", version.score_psi, reading(version.score_psi));
            }
            out += "\n";
        }
    }
    if let Some(shadow) = &segment.shadow
        && segment.shadow_version > 0
    {
        let agreement = if shadow.rows == 0 { 0.0 } else { shadow.agreed as f64 / shadow.rows as f64 * 100.0 };
        out += &format!(
            "  shadow v{}: {} rows, agreement {agreement:.2}%, mean |Δp| {:.4}, dropped {}, errors {}\n",
            segment.shadow_version, shadow.rows, shadow.mean_abs_delta, shadow.dropped, shadow.errors
        );
    }
    out
}

/// The usual reading of a PSI.
fn reading(psi: f64) -> &'static str {
    if psi < 0.1 {
        "stable"
    } else if psi <= 0.25 {
        "moderate"
    } else {
        "significant"
    }
}
