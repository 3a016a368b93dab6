//! Names are global across files: one table per kind of definition, with
//! every name defined twice reported (naming both places), names checked
//! for the characters that URLs and idempotency keys can carry, and
//! references resolved against it.

use std::collections::{BTreeMap, BTreeSet};

use super::context::{Ctx, Site};
use crate::model::RetryTemplate;
use crate::policy::defs::{CalendarDef, ChannelDef, ClassifierDef, FlowDef, TemplateDef};
use crate::policy::{Named, Section};

/// One definition and where it was written.
#[derive(Debug)]
pub struct Entry<'a, T> {
    pub site: Site,
    pub name: &'a str,
    pub def: &'a T,
}

/// What a reference resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ref {
    /// Defined and decoded.
    Found,
    /// Defined, but its definition is broken (already reported).
    Broken,
    /// Not defined (reported, unless some file could not be parsed).
    Unknown,
}

/// Every definition of every file, first definition of a name winning.
pub struct Registry<'a> {
    pub templates: BTreeMap<&'a str, Entry<'a, TemplateDef>>,
    pub classifiers: BTreeMap<&'a str, Entry<'a, ClassifierDef>>,
    pub calendars: BTreeMap<&'a str, Entry<'a, CalendarDef>>,
    pub channels: BTreeMap<&'a str, Entry<'a, ChannelDef>>,
    pub flows: BTreeMap<&'a str, Entry<'a, FlowDef>>,
    broken: BTreeSet<(Section, &'a str)>,
    /// False when some file could not be parsed: its names are unknown, so
    /// "unknown name" and "unused" reports would mislead.
    pub complete: bool,
}

impl<'a> Registry<'a> {
    pub fn build(ctx: &mut Ctx<'a>) -> Self {
        let mut registry = Registry {
            templates: BTreeMap::new(),
            classifiers: BTreeMap::new(),
            calendars: BTreeMap::new(),
            channels: BTreeMap::new(),
            flows: BTreeMap::new(),
            broken: BTreeSet::new(),
            complete: ctx.files.iter().all(|f| f.parsed),
        };
        // Where each name was first defined, broken definitions included.
        let mut first: BTreeMap<(Section, &'a str), Site> = BTreeMap::new();
        for (index, file) in ctx.files.iter().enumerate() {
            let defs = &file.defs;
            let mut names: Vec<(Section, &'a str)> = Vec::new();
            names.extend(
                defs.templates
                    .iter()
                    .map(|n| (Section::Templates, n.name.as_str())),
            );
            names.extend(
                defs.classifiers
                    .iter()
                    .map(|n| (Section::Classifiers, n.name.as_str())),
            );
            names.extend(
                defs.calendars
                    .iter()
                    .map(|n| (Section::Calendars, n.name.as_str())),
            );
            names.extend(
                defs.channels
                    .iter()
                    .map(|n| (Section::Channels, n.name.as_str())),
            );
            names.extend(defs.flows.iter().map(|n| (Section::Flows, n.name.as_str())));
            names.extend(defs.broken.iter().map(|(s, n)| (*s, n.as_str())));
            names.sort_by_key(|(section, name)| file.key_at(&format!("{}.{name}", section.key())));

            let mut unique: BTreeSet<(Section, &'a str)> = BTreeSet::new();
            for (section, name) in names {
                let site = Site::new(index, format!("{}.{name}", section.key()));
                check_name(ctx, &site, section.singular(), name);
                if section == Section::Templates && RetryTemplate::builtin(name).is_some() {
                    ctx.error_at_key(
                        &site,
                        format_args!(
                            "template `{name}` is built in; choose another name \
                             (`extends: {name}` starts from the built-in one)"
                        ),
                    );
                }
                match first.get(&(section, name)) {
                    Some(earlier) => ctx.error_at_key(
                        &site,
                        format_args!(
                            "{} `{name}` is defined twice: at {} and at {}",
                            section.singular(),
                            ctx.describe_key(earlier),
                            ctx.describe_key(&site),
                        ),
                    ),
                    None => {
                        first.insert((section, name), site);
                        unique.insert((section, name));
                    }
                }
            }

            let keep = |section: Section, name: &str| unique.contains(&(section, name));
            insert(
                &mut registry.templates,
                index,
                Section::Templates,
                &defs.templates,
                keep,
            );
            insert(
                &mut registry.classifiers,
                index,
                Section::Classifiers,
                &defs.classifiers,
                keep,
            );
            insert(
                &mut registry.calendars,
                index,
                Section::Calendars,
                &defs.calendars,
                keep,
            );
            insert(
                &mut registry.channels,
                index,
                Section::Channels,
                &defs.channels,
                keep,
            );
            insert(
                &mut registry.flows,
                index,
                Section::Flows,
                &defs.flows,
                keep,
            );
            for (section, name) in &defs.broken {
                if keep(*section, name) {
                    registry.broken.insert((*section, name.as_str()));
                }
            }
        }
        registry
    }

    /// Whether some definition of `section` is broken.
    pub fn has_broken(&self, section: Section) -> bool {
        self.broken.iter().any(|(s, _)| *s == section)
    }

    /// Whether `name` names a definition of `section` that is broken.
    pub fn is_broken(&self, section: Section, name: &str) -> bool {
        self.broken.contains(&(section, name))
    }

    /// The names defined for `section` (built-in templates included), for
    /// "defined …:" lists.
    pub fn names(&self, section: Section) -> Vec<String> {
        let mut names: Vec<String> = match section {
            Section::Templates => self
                .templates
                .keys()
                .map(|n| n.to_string())
                .chain(RetryTemplate::builtins().into_iter().map(|t| t.name))
                .collect(),
            Section::Classifiers => self.classifiers.keys().map(|n| n.to_string()).collect(),
            Section::Calendars => self.calendars.keys().map(|n| n.to_string()).collect(),
            Section::Channels => self.channels.keys().map(|n| n.to_string()).collect(),
            Section::Flows => self.flows.keys().map(|n| n.to_string()).collect(),
        };
        names.extend(
            self.broken
                .iter()
                .filter(|(s, _)| *s == section)
                .map(|(_, n)| n.to_string()),
        );
        names.sort();
        names.dedup();
        names
    }

    fn is_defined(&self, section: Section, name: &str) -> bool {
        match section {
            Section::Templates => {
                self.templates.contains_key(name) || RetryTemplate::builtin(name).is_some()
            }
            Section::Classifiers => self.classifiers.contains_key(name),
            Section::Calendars => self.calendars.contains_key(name),
            Section::Channels => self.channels.contains_key(name),
            Section::Flows => self.flows.contains_key(name),
        }
    }

    /// Resolves a reference written at `site`, reporting an unknown name
    /// with the list of what exists.
    pub fn reference(&self, ctx: &mut Ctx<'_>, site: &Site, section: Section, name: &str) -> Ref {
        if self.is_defined(section, name) {
            return Ref::Found;
        }
        if self.is_broken(section, name) {
            return Ref::Broken;
        }
        if self.complete {
            let names = self.names(section);
            let shown = ctx.shown(site, name).to_string();
            let defined = if names.is_empty() {
                format!("no {} are defined", section.key())
            } else {
                format!("defined {}: {}", section.key(), names.join(", "))
            };
            ctx.error(
                site,
                format_args!("unknown {} `{shown}`; {defined}", section.singular()),
            );
        }
        Ref::Unknown
    }
}

fn insert<'a, T>(
    map: &mut BTreeMap<&'a str, Entry<'a, T>>,
    file: usize,
    section: Section,
    defs: &'a [Named<T>],
    keep: impl Fn(Section, &str) -> bool,
) {
    for named in defs {
        if keep(section, &named.name) {
            map.insert(
                &named.name,
                Entry {
                    site: Site::new(file, format!("{}.{}", section.key(), named.name)),
                    name: &named.name,
                    def: &named.def,
                },
            );
        }
    }
}

/// Names go into URLs (`/v1/flows/{flow}/jobs`), metrics labels and
/// idempotency keys (`{key}:{step}`), so they keep to a safe alphabet.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Reports `name`, written as a key at `site`, if it is not a valid name.
pub fn check_name(ctx: &mut Ctx<'_>, site: &Site, what: &str, name: &str) {
    if !is_valid_name(name) {
        ctx.error_at_key(site, bad_name(what, name));
    }
}

/// Reports `name`, written as the value at `site` (`name: …`), if it is not
/// a valid name.
pub fn check_name_value(ctx: &mut Ctx<'_>, site: &Site, what: &str, name: &str) {
    if !is_valid_name(name) {
        let shown = ctx.shown(site, name).to_string();
        ctx.error(site, bad_name(what, &shown));
    }
}

fn bad_name(what: &str, name: &str) -> String {
    format!(
        "bad {what} name `{name}`: use letters, digits, `-`, `_` and `.`, \
         starting with a letter or digit"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        for good in ["acme", "acme-leads", "a_b.c", "2fa", "X"] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in ["", "-a", "a b", "a/b", "a:b", "é"] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }
}
