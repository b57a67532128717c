//! The raw side of a run: the like-for-like raw loop and, when asked for,
//! the best raw loop and the ablation variants (one ingredient of the
//! like-for-like loop changed at a time), measured in the same run.

use anyhow::Result;

use crate::machine::Servers;
use crate::raw::{raw_phase, Acks, Body, Headers, QueueArgs, RawConfig, RawResult, Writes};
use crate::Args;

const LIKE: RawConfig = RawConfig::LIKE_FOR_LIKE;

/// Each ingredient's other settings: (ingredient, setting, loop).
pub const VARIANTS: &[(&str, &str, RawConfig)] = &[
    (
        "queue arguments",
        "delivery limit only",
        RawConfig {
            queue: QueueArgs::DeliveryLimit,
            ..LIKE
        },
    ),
    (
        "queue arguments",
        "dead-lettering and reject-publish only",
        RawConfig {
            queue: QueueArgs::DeadLettering,
            ..LIKE
        },
    ),
    (
        "queue arguments",
        "none",
        RawConfig {
            queue: QueueArgs::Plain,
            ..LIKE
        },
    ),
    (
        "mandatory",
        "off",
        RawConfig {
            mandatory: false,
            ..LIKE
        },
    ),
    (
        "headers",
        "none",
        RawConfig {
            headers: Headers::None,
            ..LIKE
        },
    ),
    (
        "body",
        "zeros, same length",
        RawConfig {
            body: Body::Zeros,
            ..LIKE
        },
    ),
    (
        "body",
        "tiny (16 bytes)",
        RawConfig {
            body: Body::Tiny,
            ..LIKE
        },
    ),
    (
        "confirm window",
        "256",
        RawConfig {
            window: 256,
            ..LIKE
        },
    ),
    (
        "confirm window",
        "8192",
        RawConfig {
            window: 8192,
            ..LIKE
        },
    ),
    (
        "acks",
        "one per message",
        RawConfig {
            acks: Acks::PerMessage,
            ..LIKE
        },
    ),
    (
        "publish writes",
        "each awaited",
        RawConfig {
            writes: Writes::Awaited,
            ..LIKE
        },
    ),
];

/// What a run measured of raw lapin.
pub struct RawSide {
    pub like: RawResult,
    pub best: Option<RawResult>,
    pub ablation: Vec<(&'static str, &'static str, RawResult)>,
}

/// Measures the raw loops of one run. The like-for-like loop comes first,
/// or last with `like_last` (the variants then in reverse order), so that
/// it always sits next to celeriac.
pub async fn raw_side(args: &Args, servers: Servers, run: u64, like_last: bool) -> Result<RawSide> {
    let with_best = args.best || args.ablation;
    let variants: &[_] = if args.ablation { VARIANTS } else { &[] };
    let mut ablation = Vec::new();
    if like_last {
        for (ingredient, setting, config) in variants.iter().rev() {
            let label = format!("raw lapin, {ingredient}: {setting}");
            let result = raw_phase(args, servers, run, config, &label).await?;
            ablation.push((*ingredient, *setting, result));
        }
        ablation.reverse();
    }
    let mut best = None;
    if with_best && like_last {
        best = Some(raw_phase(args, servers, run, &RawConfig::BEST, "raw lapin, best").await?);
    }
    let like = raw_phase(args, servers, run, &LIKE, "raw lapin").await?;
    if with_best && !like_last {
        best = Some(raw_phase(args, servers, run, &RawConfig::BEST, "raw lapin, best").await?);
    }
    if !like_last {
        for (ingredient, setting, config) in variants {
            let label = format!("raw lapin, {ingredient}: {setting}");
            let result = raw_phase(args, servers, run, config, &label).await?;
            ablation.push((*ingredient, *setting, result));
        }
    }
    Ok(RawSide {
        like,
        best,
        ablation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_variant_changes_one_ingredient() {
        for (ingredient, setting, config) in VARIANTS {
            let changed = [
                config.queue != LIKE.queue,
                config.mandatory != LIKE.mandatory,
                config.headers != LIKE.headers,
                config.body != LIKE.body,
                config.window != LIKE.window,
                config.acks != LIKE.acks,
                config.writes != LIKE.writes,
            ];
            assert_eq!(
                changed.iter().filter(|c| **c).count(),
                1,
                "{ingredient}: {setting}"
            );
        }
    }

    #[test]
    fn the_best_loop_keeps_the_body() {
        assert_eq!(RawConfig::BEST.body, LIKE.body);
        assert_ne!(RawConfig::BEST, LIKE);
    }
}
