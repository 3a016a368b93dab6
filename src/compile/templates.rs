//! Retry templates: `extends` chains resolved key by key (a child's key
//! wins), then the defaults of the product contract filled in.
//!
//! Defaults: `retries` 3 (for `schedule`: the list's length), `backoff`
//! exponential, `initial` 1s, `multiplier` 2.0, `max_interval` 60s for
//! exponential (for fixed and schedule only when written), `jitter` 20%, no
//! `total_timeout`; `retry_after_cap` is written, else `max_interval`, else
//! 1h. Two choices beyond the contract: a template that writes `schedule`
//! and no `backoff` uses backoff schedule, and writing `schedule` without
//! `retries` makes the retries the list's length even when a parent set
//! `retries` (the list says how many).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use super::context::{Ctx, Site};
use super::duration::{parse_duration, parse_jitter};
use super::names::{Ref, Registry};
use crate::model::{Adapt, Backoff, Jitter, RetryTemplate};
use crate::policy::defs::{AdaptDef, BackoffDef, TemplateDef, Text};
use crate::policy::Section;

/// A template's keys, each as written (or inherited), not yet defaulted.
#[derive(Debug, Clone, Default, PartialEq)]
struct Fields {
    retries: Option<u32>,
    backoff: Option<BackoffDef>,
    initial: Option<Duration>,
    multiplier: Option<f64>,
    max_interval: Option<Duration>,
    total_timeout: Option<Duration>,
    jitter: Option<Jitter>,
    schedule: Option<Vec<Duration>>,
    retry_after_cap: Option<Duration>,
    adapt: Option<Adapt>,
}

impl Fields {
    /// `self` (the parent) overridden by every key `child` writes.
    fn merged(&self, child: &Fields) -> Fields {
        let mut out = Fields {
            retries: child.retries.or(self.retries),
            backoff: child.backoff.or(self.backoff),
            initial: child.initial.or(self.initial),
            multiplier: child.multiplier.or(self.multiplier),
            max_interval: child.max_interval.or(self.max_interval),
            total_timeout: child.total_timeout.or(self.total_timeout),
            jitter: child.jitter.or(self.jitter),
            schedule: child.schedule.clone().or_else(|| self.schedule.clone()),
            retry_after_cap: child.retry_after_cap.or(self.retry_after_cap),
            adapt: child.adapt.or(self.adapt),
        };
        if child.schedule.is_some() && child.retries.is_none() {
            out.retries = None;
        }
        out
    }

    /// The keys that make a built-in template what it is; values that are
    /// only defaults are left out, so that a child changing `backoff` or
    /// `max_interval` gets the defaults that go with its own choice.
    fn of_builtin(t: &RetryTemplate) -> Fields {
        let mut fields = Fields {
            retries: Some(t.retries),
            jitter: Some(t.jitter),
            total_timeout: t.total_timeout,
            max_interval: t.max_interval,
            ..Fields::default()
        };
        match &t.backoff {
            Backoff::Exponential {
                initial,
                multiplier,
            } => {
                fields.backoff = Some(BackoffDef::Exponential);
                fields.initial = Some(*initial);
                fields.multiplier = Some(*multiplier);
                if t.max_interval == Some(RetryTemplate::DEFAULT_MAX_INTERVAL) {
                    fields.max_interval = None;
                }
            }
            Backoff::Fixed { interval } => {
                fields.backoff = Some(BackoffDef::Fixed);
                fields.initial = Some(*interval);
            }
            Backoff::Schedule { delays } => {
                fields.backoff = Some(BackoffDef::Schedule);
                fields.schedule = Some(delays.clone());
            }
        }
        let derived_cap = t
            .max_interval
            .unwrap_or(RetryTemplate::DEFAULT_RETRY_AFTER_CAP);
        if t.retry_after_cap != derived_cap {
            fields.retry_after_cap = Some(t.retry_after_cap);
        }
        fields
    }
}

/// The most retries a template may allow.
pub const MAX_RETRIES: u32 = 10_000;
/// The most delays a `schedule` may list.
pub const MAX_SCHEDULE: usize = 1_000;
/// The longest `extends` chain: a template and 16 ancestors.
pub const MAX_EXTENDS_DEPTH: usize = 16;

/// Every template: the built-in ones and those defined in the files.
/// Templates named by `extends` are added to `used`.
pub fn compile_templates(
    ctx: &mut Ctx<'_>,
    registry: &Registry<'_>,
    used: &mut BTreeSet<String>,
) -> BTreeMap<String, Arc<RetryTemplate>> {
    let mut out: BTreeMap<String, Arc<RetryTemplate>> = RetryTemplate::builtins()
        .into_iter()
        .map(|t| (t.name.clone(), Arc::new(t)))
        .collect();
    let mut resolver = Resolver {
        registry,
        done: BTreeMap::new(),
        stack: Vec::new(),
        used,
    };
    for name in registry.templates.keys() {
        if RetryTemplate::builtin(name).is_some() {
            // Reported by the name checks; the built-in one stays.
            continue;
        }
        if let Some((_, template)) = resolver.resolve(ctx, name) {
            out.insert(template.name.clone(), Arc::new(template));
        }
    }
    out
}

struct Resolver<'r, 'a> {
    registry: &'r Registry<'a>,
    /// Resolved templates: their merged keys and the result, or `None` when
    /// broken (reported once, where the problem is).
    done: BTreeMap<String, Option<(Fields, RetryTemplate)>>,
    /// The `extends` chain being followed, to detect cycles.
    stack: Vec<String>,
    used: &'r mut BTreeSet<String>,
}

impl Resolver<'_, '_> {
    fn resolve(&mut self, ctx: &mut Ctx<'_>, name: &str) -> Option<(Fields, RetryTemplate)> {
        if let Some(done) = self.done.get(name) {
            return done.clone();
        }
        let entry = self.registry.templates.get(name)?;
        self.stack.push(name.to_string());
        let own = own_fields(ctx, &entry.site, entry.def);
        let parent = self.parent_fields(ctx, &entry.site, entry.def);
        self.stack.pop();
        let result = match (own, parent) {
            (Some(own), Some(parent)) => {
                let merged = parent.merged(&own);
                finish(ctx, &entry.site, entry.def, name, &merged).map(|t| (merged, t))
            }
            _ => None,
        };
        self.done.insert(name.to_string(), result.clone());
        result
    }

    /// Marks the rest of a chain too deep to follow as broken, walking it
    /// without recursion, so that it is reported once, where it got too
    /// deep, and not again from each template along it.
    fn break_chain_from(&mut self, first: &str) {
        let mut next = Some(first.to_string());
        while let Some(name) = next.take() {
            if self.done.contains_key(&name) {
                break;
            }
            let Some(entry) = self.registry.templates.get(name.as_str()) else {
                break;
            };
            next = entry.def.extends.clone();
            if let Some(parent) = &next {
                self.used.insert(parent.clone());
            }
            self.done.insert(name, None);
        }
    }

    /// The keys the template starts from: its parent's, or none.
    fn parent_fields(
        &mut self,
        ctx: &mut Ctx<'_>,
        site: &Site,
        def: &TemplateDef,
    ) -> Option<Fields> {
        let Some(parent) = &def.extends else {
            return Some(Fields::default());
        };
        let extends = site.child("extends");
        self.used.insert(parent.clone());
        // The chain is followed by recursion: bounded here, so that no
        // policy can exhaust a thread's stack.
        if self.stack.len() > MAX_EXTENDS_DEPTH {
            ctx.error(
                &extends,
                format_args!(
                    "the `extends` chain from `{}` is deeper than {MAX_EXTENDS_DEPTH}; \
                     extend a template nearer the root",
                    self.stack[0]
                ),
            );
            self.break_chain_from(parent);
            return None;
        }
        if let Some(start) = self.stack.iter().position(|n| n == parent) {
            let mut cycle: Vec<&str> = self.stack[start..].iter().map(String::as_str).collect();
            cycle.push(parent);
            ctx.error(
                &extends,
                format_args!("`extends` makes a cycle: {}", cycle.join(" → ")),
            );
            return None;
        }
        // A built-in name always means the built-in template (redefining it
        // is an error reported with the names).
        if let Some(builtin) = RetryTemplate::builtin(parent) {
            return Some(Fields::of_builtin(&builtin));
        }
        if self.registry.templates.contains_key(parent.as_str()) {
            // A broken parent was reported where it is broken.
            return self.resolve(ctx, parent).map(|(fields, _)| fields);
        }
        // Neither defined nor built in: reported unless that is because a
        // file could not be parsed.
        let _: Ref = self
            .registry
            .reference(ctx, &extends, Section::Templates, parent);
        None
    }
}

/// Reads the keys a template writes itself. `None` when one is bad (each
/// bad key is reported).
fn own_fields(ctx: &mut Ctx<'_>, site: &Site, def: &TemplateDef) -> Option<Fields> {
    let mut ok = true;
    let mut duration = |ctx: &mut Ctx<'_>, key: &str, text: &Option<Text>| -> Option<Duration> {
        let text = text.as_ref()?;
        let at = site.child(key);
        match parse_duration(text.as_str()) {
            Ok(d) => Some(d),
            Err(err) => {
                let shown = ctx.shown(&at, text.as_str()).to_string();
                ctx.error(&at, format_args!("bad duration `{shown}`: {err}"));
                ok = false;
                None
            }
        }
    };
    let initial = duration(ctx, "initial", &def.initial);
    let max_interval = duration(ctx, "max_interval", &def.max_interval);
    let total_timeout = duration(ctx, "total_timeout", &def.total_timeout);
    let retry_after_cap = duration(ctx, "retry_after_cap", &def.retry_after_cap);
    if let Some(retries) = def.retries.filter(|&r| r > MAX_RETRIES) {
        ctx.error(
            &site.child("retries"),
            format_args!(
                "retries {retries} is more than {MAX_RETRIES}, the most a template may allow; \
                 bound the series with `total_timeout` instead"
            ),
        );
        ok = false;
    }
    let mut schedule = None;
    if let Some(list) = def.schedule.as_ref().filter(|l| l.len() > MAX_SCHEDULE) {
        ctx.error(
            &site.child("schedule"),
            format_args!(
                "`schedule` has {} delays, more than {MAX_SCHEDULE}; shorten the list",
                list.len()
            ),
        );
        return None;
    }
    if let Some(list) = &def.schedule {
        let list_site = site.child("schedule");
        let mut delays = Vec::new();
        for (i, text) in list.iter().enumerate() {
            let at = list_site.index(i);
            match parse_duration(text.as_str()) {
                Ok(d) => delays.push(d),
                Err(err) => {
                    let shown = ctx.shown(&at, text.as_str()).to_string();
                    ctx.error(&at, format_args!("bad duration `{shown}`: {err}"));
                    ok = false;
                }
            }
        }
        schedule = Some(delays);
    }
    let jitter = def.jitter.as_ref().and_then(|text| {
        let at = site.child("jitter");
        match parse_jitter(text.as_str()) {
            Ok(j) => Some(j),
            Err(err) => {
                let shown = ctx.shown(&at, text.as_str()).to_string();
                ctx.error(&at, format_args!("bad jitter `{shown}`: {err}"));
                ok = false;
                None
            }
        }
    });
    if let Some(m) = def.multiplier {
        if !(m.is_finite() && m >= 1.0) {
            ctx.error(
                &site.child("multiplier"),
                format_args!("multiplier {m} must be at least 1.0"),
            );
            ok = false;
        }
    }
    if total_timeout == Some(Duration::ZERO) {
        ctx.error(
            &site.child("total_timeout"),
            "total_timeout must be longer than 0s (leave it out for no limit)",
        );
        ok = false;
    }
    let adapt = match &def.adapt {
        None => None,
        Some(adapt) => {
            let compiled = compile_adapt(ctx, &site.child("adapt"), adapt);
            ok &= compiled.is_some();
            compiled
        }
    };
    if !ok {
        return None;
    }
    let backoff = match (def.backoff, &def.schedule) {
        (None, Some(_)) => Some(BackoffDef::Schedule),
        (backoff, _) => backoff,
    };
    Some(Fields {
        retries: def.retries,
        backoff,
        initial,
        multiplier: def.multiplier,
        max_interval,
        total_timeout,
        jitter,
        schedule,
        retry_after_cap,
        adapt,
    })
}

/// `adapt`; every problem is reported, `None` if there was one.
fn compile_adapt(ctx: &mut Ctx<'_>, site: &Site, def: &AdaptDef) -> Option<Adapt> {
    let mut ok = true;
    let window = match &def.window {
        None => Adapt::DEFAULT_WINDOW,
        Some(text) => match parse_duration(text.as_str()) {
            Ok(window) if window >= Duration::from_secs(3600) && window <= Adapt::MAX_WINDOW => {
                window
            }
            Ok(_) => {
                ctx.error(
                    &site.child("window"),
                    "window must be 1h to 30d (history is counted by the hour and kept 35 days)",
                );
                ok = false;
                Duration::ZERO
            }
            Err(err) => {
                let shown = ctx.shown(&site.child("window"), text.as_str()).to_string();
                ctx.error(
                    &site.child("window"),
                    format_args!("bad duration `{shown}`: {err}"),
                );
                ok = false;
                Duration::ZERO
            }
        },
    };
    let min_samples = def.min_samples.unwrap_or(Adapt::DEFAULT_MIN_SAMPLES);
    if min_samples < 10 {
        ctx.error(
            &site.child("min_samples"),
            "min_samples must be at least 10: fewer attempts say little about a partner",
        );
        ok = false;
    }
    let stop_below = match parse_share(def.stop_below.as_str()) {
        Some(share) if share > 0.0 && share < 1.0 => share,
        _ => {
            let shown = ctx
                .shown(&site.child("stop_below"), def.stop_below.as_str())
                .to_string();
            ctx.error(
                &site.child("stop_below"),
                format_args!(
                    "bad stop_below `{shown}`: write a success rate between 0 and 100%, e.g. \
                     `1%` or `0.01`"
                ),
            );
            ok = false;
            0.0
        }
    };
    ok.then_some(Adapt {
        window,
        min_samples,
        stop_below,
    })
}

/// `1%`, `0.5 %` or `0.01`.
fn parse_share(text: &str) -> Option<f64> {
    let text = text.trim();
    let share = match text.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().ok()? / 100.0,
        None => text.parse::<f64>().ok()?,
    };
    share.is_finite().then_some(share)
}

/// Fills in the defaults and checks the keys against each other.
fn finish(
    ctx: &mut Ctx<'_>,
    site: &Site,
    def: &TemplateDef,
    name: &str,
    fields: &Fields,
) -> Option<RetryTemplate> {
    // Point at the key where this template writes it, else at the template.
    let at = |key: &str, written: bool| {
        if written {
            site.child(key)
        } else {
            site.clone()
        }
    };
    let backoff_kind = fields.backoff.unwrap_or(BackoffDef::Exponential);
    let kind_name = match backoff_kind {
        BackoffDef::Exponential => "exponential",
        BackoffDef::Fixed => "fixed",
        BackoffDef::Schedule => "schedule",
    };
    let (backoff, retries) = match backoff_kind {
        BackoffDef::Schedule => {
            let delays = fields.schedule.clone().unwrap_or_default();
            if delays.is_empty() {
                let written = def.schedule.is_some();
                ctx.error(
                    &at(if written { "schedule" } else { "backoff" }, true),
                    "backoff `schedule` needs a non-empty `schedule` list of delays",
                );
                return None;
            }
            let len = u32::try_from(delays.len()).unwrap_or(u32::MAX);
            let retries = fields.retries.unwrap_or(len);
            if retries > len {
                ctx.error(
                    &at("retries", def.retries.is_some()),
                    format_args!(
                        "retries {retries} is more than the {len} delays of `schedule` \
                         (the last delay does not repeat)"
                    ),
                );
                return None;
            }
            (Backoff::Schedule { delays }, retries)
        }
        other => {
            if fields.schedule.is_some() {
                let written = def.schedule.is_some();
                ctx.error(
                    &at(if written { "schedule" } else { "backoff" }, true),
                    format_args!(
                        "`schedule` goes only with backoff schedule, not {kind_name}{}",
                        if written {
                            ""
                        } else {
                            " (the list is inherited)"
                        }
                    ),
                );
                return None;
            }
            let initial = fields.initial.unwrap_or(RetryTemplate::DEFAULT_INITIAL);
            let backoff = if other == BackoffDef::Fixed {
                Backoff::Fixed { interval: initial }
            } else {
                Backoff::Exponential {
                    initial,
                    multiplier: fields
                        .multiplier
                        .unwrap_or(RetryTemplate::DEFAULT_MULTIPLIER),
                }
            };
            (
                backoff,
                fields.retries.unwrap_or(RetryTemplate::DEFAULT_RETRIES),
            )
        }
    };
    if def.multiplier.is_some() && backoff_kind != BackoffDef::Exponential {
        ctx.warning(
            &site.child("multiplier"),
            format_args!("`multiplier` has no effect with backoff {kind_name}"),
        );
    }
    if def.initial.is_some() && backoff_kind == BackoffDef::Schedule {
        ctx.warning(
            &site.child("initial"),
            "`initial` has no effect with backoff schedule: the list gives every delay",
        );
    }
    let max_interval = match backoff_kind {
        BackoffDef::Exponential => Some(
            fields
                .max_interval
                .unwrap_or(RetryTemplate::DEFAULT_MAX_INTERVAL),
        ),
        BackoffDef::Fixed | BackoffDef::Schedule => fields.max_interval,
    };
    Some(RetryTemplate {
        name: name.to_string(),
        retries,
        backoff,
        max_interval,
        total_timeout: fields.total_timeout,
        jitter: fields.jitter.unwrap_or(RetryTemplate::DEFAULT_JITTER),
        retry_after_cap: fields
            .retry_after_cap
            .or(max_interval)
            .unwrap_or(RetryTemplate::DEFAULT_RETRY_AFTER_CAP),
        adapt: fields.adapt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_survive_the_round_trip_through_fields() {
        for builtin in RetryTemplate::builtins() {
            let fields = Fields::of_builtin(&builtin);
            let files = [];
            let mut ctx = Ctx::new(&files);
            let site = Site::new(0, "templates.x");
            let again = finish(
                &mut ctx,
                &site,
                &TemplateDef::default(),
                &builtin.name,
                &fields,
            );
            assert_eq!(again.as_ref(), Some(&builtin));
            assert!(ctx.into_diagnostics().is_empty());
        }
    }

    #[test]
    fn a_child_key_wins_and_schedule_resets_inherited_retries() {
        let parent = Fields {
            retries: Some(7),
            initial: Some(Duration::from_secs(3)),
            ..Fields::default()
        };
        let child = Fields {
            initial: Some(Duration::from_secs(1)),
            ..Fields::default()
        };
        let merged = parent.merged(&child);
        assert_eq!(merged.retries, Some(7));
        assert_eq!(merged.initial, Some(Duration::from_secs(1)));
        let child = Fields {
            schedule: Some(vec![Duration::from_secs(1)]),
            ..Fields::default()
        };
        assert_eq!(parent.merged(&child).retries, None);
    }
}
