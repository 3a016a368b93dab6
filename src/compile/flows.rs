//! Flows: their steps' references (channel, fallbacks, template,
//! classifier, `hours.calendar`, `hours.off_hours.retry`, `on_dead.notify`)
//! resolved against the compiled definitions, and the step rules checked (at
//! least one step, unique names, `on_dead` reserved, `hours` that change
//! something).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::channels::{compile_breaker, StepBreaker};
use super::context::{Ctx, Site};
use super::expressions;
use super::names::{check_name_value, Ref, Registry};
use crate::model::{
    Calendar, Channel, ChannelKind, Classifier, Flow, MaintenanceRule, Mapping, OffHours, OnDead,
    Outcome, RetryTemplate, RetryWhen, Step, StepHours,
};
use crate::policy::defs::{
    FallbackDef, FallbackEntryDef, FlowDef, OffHoursDef, RetryDef, StepDef, StepHoursDef,
};
use crate::policy::Section;

/// The template a step uses when it names none.
pub const DEFAULT_TEMPLATE: &str = "standard";

/// The range of a job's priority.
pub const PRIORITY_MIN: i64 = -100;
pub const PRIORITY_MAX: i64 = 100;

pub use crate::model::ON_DEAD_STEP;

/// What the compiled flows can refer to.
pub struct Compiled<'m> {
    pub templates: &'m BTreeMap<String, Arc<RetryTemplate>>,
    pub classifiers: &'m BTreeMap<String, Arc<Classifier>>,
    pub calendars: &'m BTreeMap<String, Arc<Calendar>>,
    pub channels: &'m BTreeMap<String, Arc<Channel>>,
}

/// Names referred to by flows, for "unused" warnings.
#[derive(Debug, Default)]
pub struct Used {
    pub templates: BTreeSet<String>,
    pub classifiers: BTreeSet<String>,
    pub calendars: BTreeSet<String>,
    pub channels: BTreeSet<String>,
    /// Steps' `circuit_breaker`s, for their channels.
    pub breakers: Vec<StepBreaker>,
}

pub fn compile_flows(
    ctx: &mut Ctx<'_>,
    registry: &Registry<'_>,
    compiled: &Compiled<'_>,
    used: &mut Used,
) -> BTreeMap<String, Arc<Flow>> {
    let mut flows = BTreeMap::new();
    for entry in registry.flows.values() {
        let mut refs = Refs {
            ctx: &mut *ctx,
            registry,
            used: &mut *used,
        };
        if let Some(flow) = refs.flow(&entry.site, entry.name, entry.def, compiled) {
            flows.insert(flow.name.clone(), Arc::new(flow));
        }
    }
    flows
}

struct Refs<'c, 'x, 'r, 'a> {
    ctx: &'c mut Ctx<'x>,
    registry: &'r Registry<'a>,
    used: &'c mut Used,
}

impl Refs<'_, '_, '_, '_> {
    fn flow(
        &mut self,
        site: &Site,
        name: &str,
        def: &FlowDef,
        compiled: &Compiled<'_>,
    ) -> Option<Flow> {
        let mut ok = true;
        if def.steps.is_empty() {
            self.ctx
                .error_at_key(site, "a flow needs at least one step under `steps`");
            ok = false;
        }
        let steps_site = site.child("steps");
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut steps = Vec::new();
        for (index, step_def) in def.steps.iter().enumerate() {
            let step_site = steps_site.index(index);
            let name_site = step_site.child("name");
            let step_name = step_def.name.as_str();
            if step_name == ON_DEAD_STEP {
                self.ctx.error(
                    &name_site,
                    "`on_dead` is reserved for the dead-job notification; choose another step name",
                );
                ok = false;
            } else if let Some(earlier) = names.insert(step_name, index) {
                let shown = self.ctx.shown(&name_site, step_name).to_string();
                self.ctx.error(
                    &name_site,
                    format_args!("step `{shown}` is already the name of steps[{earlier}]"),
                );
                ok = false;
            } else {
                check_name_value(self.ctx, &name_site, "step", step_name);
            }
            let earlier: Vec<&str> = def.steps[..index].iter().map(|s| s.name.as_str()).collect();
            match self.step(&step_site, step_def, compiled, &earlier) {
                Some(step) => steps.push(step),
                None => ok = false,
            }
        }
        let on_dead = match &def.on_dead {
            None => None,
            Some(on_dead) => {
                let at = site.child("on_dead").child("notify");
                match self.channel(&at, &on_dead.notify, compiled) {
                    Some(()) => Some(OnDead {
                        notify: on_dead.notify.clone(),
                    }),
                    None => {
                        ok = false;
                        None
                    }
                }
            }
        };
        let priority = match def.priority {
            None => 0,
            Some(p) if (PRIORITY_MIN..=PRIORITY_MAX).contains(&p) => p as i32,
            Some(p) => {
                self.ctx.error(
                    &site.child("priority"),
                    format_args!(
                        "priority {p} is out of range: write a whole number from \
                         {PRIORITY_MIN} to {PRIORITY_MAX} (higher starts first)"
                    ),
                );
                ok = false;
                0
            }
        };
        let kept_responses = steps
            .iter()
            .flat_map(|step: &Step| {
                step.when
                    .iter()
                    .chain(step.retry_when.iter().map(|entry| &entry.when))
                    .chain(
                        step.body
                            .iter()
                            .chain(step.fallback_bodies.iter().flatten())
                            .flat_map(|body| body.expressions().into_iter().map(|(_, e)| e)),
                    )
                    .flat_map(|expr| expr.steps_read().map(str::to_string))
                    .collect::<Vec<_>>()
            })
            .collect();
        ok.then(|| Flow {
            name: name.to_string(),
            priority,
            steps,
            on_dead,
            kept_responses,
        })
    }

    fn step(
        &mut self,
        site: &Site,
        def: &StepDef,
        compiled: &Compiled<'_>,
        earlier: &[&str],
    ) -> Option<Step> {
        let mut ok = true;
        let is_pool = |name: &str| {
            matches!(
                compiled.channels.get(name).map(|c| &c.kind),
                Some(ChannelKind::Pool(_))
            )
        };
        let (channel_name, parallel, found) = self.channels_of(site, def, compiled)?;
        ok &= found;
        if def.circuit_breaker.is_some() && (is_pool(&channel_name) || !parallel.is_empty()) {
            self.ctx.error_at_key(
                &site.child("circuit_breaker"),
                format_args!(
                    "{}: each channel has its own breaker; set `circuit_breaker` on the \
                     channels",
                    if parallel.is_empty() {
                        format!("channel `{channel_name}` is a pool")
                    } else {
                        "a parallel step has several channels".to_string()
                    }
                ),
            );
            ok = false;
        } else if let Some(breaker) = &def.circuit_breaker {
            let at = site.child("circuit_breaker");
            match compile_breaker(self.ctx, &at, breaker) {
                Some(config) => self.used.breakers.push(StepBreaker {
                    channel: channel_name.clone(),
                    config,
                    site: at,
                }),
                None => ok = false,
            }
        }
        if !parallel.is_empty() && def.fallback.is_some() {
            self.ctx.error_at_key(
                &site.child("fallback"),
                "a parallel step has no fallback: each of its channels retries on its own, \
                 and the job goes to the dead-letter queue when one runs out",
            );
            ok = false;
        }

        let fallback_defs: &[FallbackDef] = def.fallback.as_ref().map_or(&[], |f| &f.0);
        let fallback: Vec<String> = fallback_defs
            .iter()
            .map(|f| f.channel().to_string())
            .collect();
        let fallback_site = site.child("fallback");
        let sites = self.ctx.item_sites(&fallback_site, fallback.len());
        let mut fallback_bodies = Vec::with_capacity(fallback.len());
        for (i, ((channel, at), fallback_def)) in
            fallback.iter().zip(&sites).zip(fallback_defs).enumerate()
        {
            let at = match fallback_def {
                FallbackDef::Channel(_) => at.clone(),
                FallbackDef::WithBody(_) => at.child("channel"),
            };
            ok &= self.channel(&at, channel, compiled).is_some();
            let shown = self.ctx.shown(&at, channel).to_string();
            if *channel == channel_name {
                self.ctx.warning(
                    &at,
                    format_args!(
                        "fallback `{shown}` is the step's own channel: it runs the \
                         same retries again against the same partner"
                    ),
                );
            } else if fallback[..i].contains(channel) {
                self.ctx
                    .warning(&at, format_args!("fallback `{shown}` is listed twice"));
            }
            fallback_bodies.push(match fallback_def {
                FallbackDef::WithBody(FallbackEntryDef {
                    body: Some(body), ..
                }) => {
                    let body_site = sites[i].child("body");
                    match self.body(
                        &body_site,
                        body,
                        std::slice::from_ref(channel),
                        compiled,
                        earlier,
                    ) {
                        Some(mapping) => Some(mapping),
                        None => {
                            ok = false;
                            None
                        }
                    }
                }
                _ => None,
            });
        }

        let (retry, retry_when) = self.retry(site, def, compiled, earlier);
        let when = match &def.when {
            None => Some(None),
            Some(source) => {
                let at = site.child("when");
                expressions::condition(self.ctx, &at, source, earlier).map(Some)
            }
        };
        let body = match &def.body {
            None => Some(None),
            Some(body) => {
                let channels = if parallel.is_empty() {
                    std::slice::from_ref(&channel_name)
                } else {
                    parallel.as_slice()
                };
                self.body(&site.child("body"), body, channels, compiled, earlier)
                    .map(Some)
            }
        };
        let classifier = match &def.classify {
            None => Some(None),
            Some(name) => {
                self.used.classifiers.insert(name.clone());
                self.lookup(
                    &site.child("classify"),
                    Section::Classifiers,
                    name,
                    compiled.classifiers,
                )
                .map(Some)
            }
        };
        if let Some(Some(classifier)) = &classifier {
            self.refresh_without_refresh_auth(site, def, classifier, &fallback, compiled);
        }
        let hours = match &def.hours {
            None => Some(None),
            Some(hours) => self.hours(&site.child("hours"), hours, compiled).map(Some),
        };
        match (retry, retry_when, classifier, hours, when, body) {
            (
                Some(retry),
                Some(retry_when),
                Some(classifier),
                Some(hours),
                Some(when),
                Some(body),
            ) if ok => Some(Step {
                name: def.name.clone(),
                channel: channel_name,
                parallel,
                fallback,
                retry,
                retry_when,
                when,
                body,
                fallback_bodies,
                classifier,
                hours,
            }),
            _ => None,
        }
    }

    /// The step's channel, its `parallel` channels (empty unless written;
    /// the first of those stands as its channel), and whether they all
    /// exist. `None` when the step names no channel at all.
    fn channels_of(
        &mut self,
        site: &Site,
        def: &StepDef,
        compiled: &Compiled<'_>,
    ) -> Option<(String, Vec<String>, bool)> {
        match (&def.parallel, def.channel.is_empty()) {
            (None, false) => {
                let found = self
                    .channel(&site.child("channel"), &def.channel, compiled)
                    .is_some();
                Some((def.channel.clone(), Vec::new(), found))
            }
            (None, true) => {
                self.ctx.error_at_key(
                    site,
                    "a step needs `channel: NAME` (or `parallel: [A, B]` to deliver to \
                     several channels at once)",
                );
                None
            }
            (Some(_), false) => {
                self.ctx.error_at_key(
                    &site.child("parallel"),
                    "a step has `channel` or `parallel`, not both: list every channel \
                     under `parallel`",
                );
                None
            }
            (Some(list), true) => {
                let at = site.child("parallel");
                if list.is_empty() {
                    self.ctx
                        .error(&at, "`parallel` needs at least one channel: `[A, B]`");
                    return None;
                }
                let mut ok = true;
                for (index, name) in list.iter().enumerate() {
                    let item = at.index(index);
                    if self.channel(&item, name, compiled).is_none() {
                        ok = false;
                    } else if list[..index].contains(name) {
                        self.ctx
                            .error(&item, format_args!("`{name}` is listed twice"));
                        ok = false;
                    }
                }
                Some((list[0].clone(), list.clone(), ok))
            }
        }
    }

    /// A step's `retry`: the template when no entry's `when` holds, and the
    /// entries with a `when` before it. `None`s where something is broken
    /// (reported).
    #[allow(clippy::type_complexity)]
    fn retry(
        &mut self,
        site: &Site,
        def: &StepDef,
        compiled: &Compiled<'_>,
        earlier: &[&str],
    ) -> (Option<Arc<RetryTemplate>>, Option<Vec<RetryWhen>>) {
        let retry_site = site.child("retry");
        let entries = match &def.retry {
            None => {
                let default = self.lookup(
                    &retry_site,
                    Section::Templates,
                    DEFAULT_TEMPLATE,
                    compiled.templates,
                );
                return (default, Some(Vec::new()));
            }
            Some(RetryDef::Template(name)) => {
                self.used.templates.insert(name.clone());
                let template =
                    self.lookup(&retry_site, Section::Templates, name, compiled.templates);
                return (template, Some(Vec::new()));
            }
            Some(RetryDef::Entries(entries)) => entries,
        };
        if entries.is_empty() {
            self.ctx.error(
                &retry_site,
                "an empty `retry` list: write a template name, or entries \
                 `{ when: CONDITION, use: TEMPLATE }` ending with `{ use: TEMPLATE }`",
            );
            return (None, None);
        }
        let mut ok = true;
        let mut retry_when = Vec::new();
        let mut otherwise = None;
        for (index, entry) in entries.iter().enumerate() {
            let at = retry_site.index(index);
            if otherwise.is_some() {
                self.ctx.warning(
                    &at,
                    "this entry is never used: an entry before it has no `when` and \
                     always applies",
                );
                continue;
            }
            self.used.templates.insert(entry.template.clone());
            let template = self.lookup(
                &at.child("use"),
                Section::Templates,
                &entry.template,
                compiled.templates,
            );
            let when = match &entry.when {
                None => None,
                Some(source) => {
                    match expressions::condition(self.ctx, &at.child("when"), source, earlier) {
                        Some(expr) => Some(expr),
                        None => {
                            ok = false;
                            continue;
                        }
                    }
                }
            };
            let Some(template) = template else {
                ok = false;
                continue;
            };
            match when {
                Some(when) => retry_when.push(RetryWhen {
                    when,
                    template_name: entry.template.clone(),
                    template,
                }),
                None => otherwise = Some(template),
            }
        }
        let otherwise = match otherwise {
            Some(template) => Some(template),
            None => compiled.templates.get(DEFAULT_TEMPLATE).cloned(),
        };
        if ok {
            (otherwise, Some(retry_when))
        } else {
            (None, None)
        }
    }

    /// A `body` for `channels` (a step's channel, or a parallel step's
    /// channels): compiled, and refused where one of them, or a member of
    /// one that is a pool, sends no body.
    fn body(
        &mut self,
        site: &Site,
        shape: &serde_json::Value,
        channels: &[String],
        compiled: &Compiled<'_>,
        earlier: &[&str],
    ) -> Option<Mapping> {
        let found = |name: &str| compiled.channels.get(name).map(|c| c.as_ref());
        // Each channel that would send the body, with the pool it is in.
        let targets = channels
            .iter()
            .filter_map(|name| found(name))
            .flat_map(|channel| match &channel.kind {
                ChannelKind::Pool(pool) => pool
                    .members
                    .iter()
                    .filter_map(|m| found(&m.name))
                    .map(|member| (member, Some(channel.name.as_str())))
                    .collect::<Vec<_>>(),
                _ => vec![(channel, None)],
            });
        for (target, pool) in targets {
            let Channel {
                kind: ChannelKind::Http(http),
                ..
            } = target
            else {
                continue;
            };
            if matches!(http.method.as_str(), "GET" | "HEAD") {
                let shown = self.ctx.shown(site, &target.name).to_string();
                let within = pool.map_or_else(String::new, |pool| {
                    format!(" (a member of pool `{}`)", self.ctx.shown(site, pool))
                });
                self.ctx.error_at_key(
                    site,
                    format_args!(
                        "channel `{shown}`{within} sends {} requests, which carry no body: \
                         remove `body`, or give the channel `method: POST` (or PUT, PATCH)",
                        http.method
                    ),
                );
                return None;
            }
        }
        expressions::mapping(self.ctx, site, shape, earlier)
    }

    /// A step's `hours`: its calendar and templates resolved, its modes
    /// checked. Every problem is reported before giving up.
    fn hours(
        &mut self,
        site: &Site,
        def: &StepHoursDef,
        compiled: &Compiled<'_>,
    ) -> Option<StepHours> {
        self.used.calendars.insert(def.calendar.clone());
        let calendar = self.lookup(
            &site.child("calendar"),
            Section::Calendars,
            &def.calendar,
            compiled.calendars,
        );

        let in_hours_site = site.child("in_hours");
        let in_hours = match &def.in_hours {
            None => Some(None),
            Some(OffHoursDef::Mode(mode)) => {
                let shown = self.ctx.shown(&in_hours_site, mode).to_string();
                let hint = if mode == "hold" {
                    "`hold` waits for the calendar to open, and in hours it is open"
                } else {
                    "unknown mode"
                };
                self.ctx.error(
                    &in_hours_site,
                    format_args!(
                        "`in_hours: {shown}`: {hint}; write `{{ retry: TEMPLATE }}` to \
                         retry with another template while the calendar is open"
                    ),
                );
                None
            }
            Some(OffHoursDef::Retry(retry)) => {
                self.used.templates.insert(retry.retry.clone());
                self.lookup(
                    &in_hours_site.child("retry"),
                    Section::Templates,
                    &retry.retry,
                    compiled.templates,
                )
                .map(Some)
            }
        };

        let off_hours_site = site.child("off_hours");
        let off_hours = match &def.off_hours {
            None => Some(OffHours::Attempt),
            Some(OffHoursDef::Mode(mode)) if mode == "hold" => Some(OffHours::Hold),
            Some(OffHoursDef::Mode(mode)) => {
                let shown = self.ctx.shown(&off_hours_site, mode).to_string();
                self.ctx.error(
                    &off_hours_site,
                    format_args!(
                        "unknown `off_hours` mode `{shown}`: write `hold` (no attempt \
                         until the calendar opens) or `{{ retry: TEMPLATE }}` (retry \
                         with another template while it is closed)"
                    ),
                );
                None
            }
            Some(OffHoursDef::Retry(retry)) => {
                self.used.templates.insert(retry.retry.clone());
                self.lookup(
                    &off_hours_site.child("retry"),
                    Section::Templates,
                    &retry.retry,
                    compiled.templates,
                )
                .map(OffHours::Retry)
            }
        };

        let maintenance_site = site.child("maintenance");
        let maintenance = match def.maintenance.as_deref() {
            None => Some(MaintenanceRule::AsOffHours),
            Some("suspend") => Some(MaintenanceRule::Suspend),
            Some(other) => {
                let shown = self.ctx.shown(&maintenance_site, other).to_string();
                self.ctx.error(
                    &maintenance_site,
                    format_args!(
                        "unknown `maintenance` mode `{shown}`: write `suspend` (no attempt \
                         inside a maintenance window), or leave it out to treat windows \
                         as off hours"
                    ),
                );
                None
            }
        };

        if def.in_hours.is_none() && def.off_hours.is_none() && def.maintenance.is_none() {
            self.ctx.warning_at_key(
                site,
                "`hours` sets none of `in_hours`, `off_hours` and `maintenance`, so the \
                 calendar changes nothing: add `off_hours: hold`, `off_hours: { retry: \
                 TEMPLATE }` or `maintenance: suspend`",
            );
        }
        Some(StepHours {
            calendar: calendar?,
            in_hours: in_hours?,
            off_hours: off_hours?,
            maintenance: maintenance?,
        })
    }

    /// Warns when the step's classifier may answer `refresh_auth` on a
    /// channel that has no `refresh_auth` to run: there, such an answer is a
    /// permanent failure.
    fn refresh_without_refresh_auth(
        &mut self,
        site: &Site,
        def: &StepDef,
        classifier: &Classifier,
        fallback: &[String],
        compiled: &Compiled<'_>,
    ) {
        let Some(rule) = classifier
            .rules
            .iter()
            .find(|r| r.outcome == Outcome::RefreshAuth)
        else {
            return;
        };
        let without: Vec<&str> = std::iter::once(&def.channel)
            .chain(def.parallel.iter().flatten())
            .chain(fallback)
            .filter(|name| {
                compiled.channels.get(name.as_str()).is_some_and(
                    |c| !matches!(&c.kind, ChannelKind::Http(http) if http.refresh_auth.is_some()),
                )
            })
            .map(String::as_str)
            .collect();
        if let Some(first) = without.first() {
            self.ctx.warning(
                &site.child("classify"),
                format_args!(
                    "rule `{}` of classifier `{}` answers `refresh_auth`, but channel `{first}` \
                     has no `refresh_auth` to run: there that answer fails the job; add \
                     `refresh_auth` to the channel",
                    rule.label, classifier.name
                ),
            );
        }
    }

    /// Checks a channel reference and records its use.
    fn channel(&mut self, site: &Site, name: &str, compiled: &Compiled<'_>) -> Option<()> {
        self.used.channels.insert(name.to_string());
        let channel = self.lookup(site, Section::Channels, name, compiled.channels)?;
        if let ChannelKind::Pool(pool) = &channel.kind {
            for member in &pool.members {
                self.used.channels.insert(member.name.clone());
            }
        }
        Some(())
    }

    /// The compiled definition `name` refers to; `None` (reported where the
    /// problem is) when it is unknown or broken.
    fn lookup<T>(
        &mut self,
        site: &Site,
        section: Section,
        name: &str,
        compiled: &BTreeMap<String, Arc<T>>,
    ) -> Option<Arc<T>> {
        match self.registry.reference(self.ctx, site, section, name) {
            Ref::Found => compiled.get(name).cloned(),
            Ref::Broken | Ref::Unknown => None,
        }
    }
}
