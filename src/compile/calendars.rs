//! Calendars: each `calendars.NAME` turned into the [`CalendarSpec`] that
//! [`Calendar::compile`] checks, and every [`CalendarError`] placed at the
//! entry it is about (`calendars.office.hours.mon-fri`,
//! `calendars.office.maintenance[1].from`, …).
//!
//! Hours keep the order they were written in (the file's, not the
//! mapping's), so that messages and results do not depend on how the
//! parser sorts keys.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::context::{Ctx, Site};
use super::names::Registry;
use crate::calendar::{Calendar, CalendarError, CalendarSpec, MaintenanceSpec};
use crate::policy::defs::{CalendarDef, MaintenanceDef};

pub fn compile_calendars(
    ctx: &mut Ctx<'_>,
    registry: &Registry<'_>,
) -> BTreeMap<String, Arc<Calendar>> {
    registry
        .calendars
        .values()
        .filter_map(|entry| {
            compile_calendar(ctx, &entry.site, entry.name, entry.def)
                .map(|calendar| (entry.name.to_string(), Arc::new(calendar)))
        })
        .collect()
}

fn compile_calendar(
    ctx: &mut Ctx<'_>,
    site: &Site,
    name: &str,
    def: &CalendarDef,
) -> Option<Calendar> {
    let file = ctx.file(site);
    let hours_site = site.child("hours");
    let mut hours: Vec<(&String, Vec<String>)> = def
        .hours
        .iter()
        .map(|(days, ranges)| (days, ranges.0.clone()))
        .collect();
    hours.sort_by_key(|(days, _)| file.key_at(&hours_site.child(days).path));

    let mut ok = true;
    let mut maintenance = Vec::with_capacity(def.maintenance.len());
    // The entry each window of the spec came from: malformed ones are left
    // out of the spec, and the calendar's paths count only the rest.
    let mut written_at = Vec::with_capacity(def.maintenance.len());
    let maintenance_site = site.child("maintenance");
    for (index, window) in def.maintenance.iter().enumerate() {
        match maintenance_spec(window) {
            Some(spec) => {
                maintenance.push(spec);
                written_at.push(index);
            }
            None => {
                ctx.error(
                    &maintenance_site.index(index),
                    "a maintenance window is either `weekly: \"sun 02:00-04:00\"` (local \
                     time, every week) or `{ from: 2026-12-01T00:00:00Z, to: \
                     2026-12-01T06:00:00Z }` (once)",
                );
                ok = false;
            }
        }
    }
    let spec = CalendarSpec {
        timezone: def.timezone.clone(),
        hours: hours
            .into_iter()
            .map(|(days, ranges)| (days.clone(), ranges))
            .collect(),
        holidays: def.holidays.clone(),
        maintenance,
    };
    match Calendar::compile(name, &spec) {
        Ok(calendar) if ok => Some(calendar),
        Ok(_) => None,
        Err(errors) => {
            for error in errors {
                report(ctx, site, &error, &written_at);
            }
            None
        }
    }
}

/// One window as the calendar module takes it; `None` when the entry mixes
/// or lacks the two forms.
fn maintenance_spec(def: &MaintenanceDef) -> Option<MaintenanceSpec> {
    match (&def.weekly, &def.from, &def.to) {
        (Some(weekly), None, None) => Some(MaintenanceSpec::Weekly(weekly.clone())),
        (None, Some(from), Some(to)) => Some(MaintenanceSpec::Absolute {
            from: from.clone(),
            to: to.clone(),
        }),
        _ => None,
    }
}

/// Reports a calendar's error at the entry its path names. The messages
/// quote what was written, so a value from `${VAR}` is shown as written.
fn report(ctx: &mut Ctx<'_>, calendar: &Site, error: &CalendarError, written_at: &[usize]) {
    let path = written_path(error.path(), written_at);
    let site = Site::new(calendar.file, format!("{}.{path}", calendar.path));
    if !ctx.is_resolved(&site) {
        // A placeholder (`validate --no-env`) or a missing variable (already
        // reported): its content cannot be judged.
        return;
    }
    let mut message = error.to_string();
    if let Some(expansion) = ctx.file(&site).expansion(&site.path) {
        if !expansion.value.is_empty() {
            message = message.replace(&expansion.value, &expansion.raw);
        }
    }
    match error {
        // About a day key, not its hours.
        CalendarError::BadDay { .. }
        | CalendarError::BadDayRange { .. }
        | CalendarError::SameDayRange { .. }
            if !site.path.contains(".maintenance[") =>
        {
            ctx.error_at_key(&site, message);
        }
        _ => ctx.error(&site, message),
    }
}

/// `maintenance[i]…` of the spec as the entry's path in the file.
fn written_path(path: &str, written_at: &[usize]) -> String {
    let Some(rest) = path.strip_prefix("maintenance[") else {
        return path.to_string();
    };
    let Some((index, tail)) = rest.split_once(']') else {
        return path.to_string();
    };
    match index.parse::<usize>().ok().and_then(|i| written_at.get(i)) {
        Some(written) => format!("maintenance[{written}]{tail}"),
        None => path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::written_path;

    #[test]
    fn spec_paths_become_written_paths() {
        let written_at = [0, 2, 3];
        assert_eq!(
            written_path("maintenance[1].from", &written_at),
            "maintenance[2].from"
        );
        assert_eq!(
            written_path("maintenance[2]", &written_at),
            "maintenance[3]"
        );
        assert_eq!(written_path("maintenance", &written_at), "maintenance");
        assert_eq!(
            written_path("hours.mon-fri[1]", &written_at),
            "hours.mon-fri[1]"
        );
    }
}
