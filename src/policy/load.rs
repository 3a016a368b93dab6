//! Reading policy files from disk: the only I/O of policy loading.
//!
//! A directory means its `*.yaml`, `*.yml` and `*.toml` files, not those of
//! its subdirectories (predictable: what `ls` shows is what is loaded), in
//! path order so that the same files always load the same way. Policy test
//! cases (`*.test.yaml`, `*.test.yml`, `*.test.toml`) and hidden files (an
//! editor's `.#x.yaml`, a Kubernetes `..data` link) are skipped. An explicit
//! file is taken as given. Symlinks within the directory are followed, so a
//! git-sync or ConfigMap symlink swap loads the new target; a symlink out of
//! it is refused unread.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::diagnostic::Diagnostic;
use super::node::Pos;
use super::source::{Format, SourceFile};

/// Reads every policy file under `paths`. A path that is missing or
/// unreadable is a diagnostic; the files that could be read are returned
/// all the same, so that every problem is reported at once.
pub fn load_paths(paths: &[PathBuf]) -> (Vec<SourceFile>, Vec<Diagnostic>) {
    let mut sources = Vec::new();
    let mut diags = Vec::new();
    for path in paths {
        let metadata = match fs::metadata(path) {
            Ok(metadata) => metadata,
            Err(err) => {
                diags.push(io_error(path, &err));
                continue;
            }
        };
        if metadata.is_dir() {
            match policy_files_in(path, &mut diags) {
                // Most likely the wrong directory, or one caught half-way
                // through a deploy; an empty set in force would suspend
                // every job.
                Ok(files) if files.is_empty() => diags.push(Diagnostic::error(
                    path,
                    Pos::UNKNOWN,
                    "",
                    "no policy files (*.yaml, *.yml, *.toml) in this directory: name the \
                     directory that holds them",
                )),
                Ok(files) => {
                    for file in files {
                        read_into(&file, &mut sources, &mut diags);
                    }
                }
                Err(err) => diags.push(io_error(path, &err)),
            }
        } else {
            read_into(path, &mut sources, &mut diags);
        }
    }
    (sources, diags)
}

/// The policy files directly in `dir`, sorted by path. A symlink whose
/// target lies outside `dir` is refused by its name (a diagnostic), never
/// read: a link to a system file must not have its content quoted back.
fn policy_files_in(dir: &Path, diags: &mut Vec<Diagnostic>) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let root = fs::canonicalize(dir)?;
    let mut entries = fs::read_dir(dir)?.collect::<io::Result<Vec<_>>>()?;
    // In path order, so that the same files always load (and are
    // reported) the same way.
    entries.sort_by_key(|entry| entry.path());
    for entry in entries {
        let path = entry.path();
        if !is_policy_file_name(&path) {
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_symlink()) {
            match fs::canonicalize(&path) {
                Ok(target) if !target.starts_with(&root) => {
                    diags.push(Diagnostic::error(
                        &path,
                        Pos::UNKNOWN,
                        "",
                        "a symlink to a file outside the policy directory; refused, and \
                         not read: copy the file into the directory, or link only inside it",
                    ));
                    continue;
                }
                // Dangling: skipped below, like an editor's lock file.
                _ => {}
            }
        }
        // `metadata` follows symlinks; a dangling one (an editor's lock
        // file) is not a policy file.
        if fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            files.push(path);
        }
    }
    Ok(files)
}

/// Whether a file found in a directory is a policy file.
pub fn is_policy_file_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if name.starts_with('.') || Format::from_path(path).is_none() {
        return false;
    }
    !is_test_file_name(path)
}

/// Whether a file holds policy test cases (`*.test.yaml`, `*.test.yml`,
/// `*.test.toml`), which the loader skips and `steadfast test` reads.
pub fn is_test_file_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let lower = name.to_ascii_lowercase();
    !name.starts_with('.')
        && [".test.yaml", ".test.yml", ".test.toml"]
            .iter()
            .any(|suffix| lower.ends_with(suffix))
}

fn read_into(path: &Path, sources: &mut Vec<SourceFile>, diags: &mut Vec<Diagnostic>) {
    let Some(format) = Format::from_path(path) else {
        diags.push(Diagnostic::error(
            path,
            Pos::UNKNOWN,
            "",
            "not a policy file: the name must end in .yaml, .yml or .toml",
        ));
        return;
    };
    match fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => sources.push(SourceFile::new(path, text, format)),
            Err(_) => diags.push(Diagnostic::error(path, Pos::UNKNOWN, "", "not UTF-8 text")),
        },
        Err(err) => diags.push(io_error(path, &err)),
    }
}

fn io_error(path: &Path, err: &io::Error) -> Diagnostic {
    let message = match err.kind() {
        io::ErrorKind::NotFound => "no such file or directory".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => format!("cannot read: {err}"),
    };
    Diagnostic::error(path, Pos::UNKNOWN, "", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(sources: &[SourceFile]) -> Vec<String> {
        sources
            .iter()
            .map(|s| s.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_directory_means_its_policy_files_in_path_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for name in [
            "b.yaml",
            "a.toml",
            "c.yml",
            "notes.md",
            "a.test.yaml",
            "b.test.toml",
            ".hidden.yaml",
        ] {
            fs::write(d.join(name), "{}").unwrap();
        }
        fs::create_dir(d.join("sub")).unwrap();
        fs::write(d.join("sub/deeper.yaml"), "{}").unwrap();
        let (sources, diags) = load_paths(&[d.to_path_buf()]);
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(names(&sources), vec!["a.toml", "b.yaml", "c.yml"]);
        assert_eq!(sources[0].format, Format::Toml);
        assert_eq!(sources[1].text, "{}");
    }

    #[test]
    fn explicit_files_are_taken_as_given_and_missing_paths_reported() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("x.test.yaml"), "a: 1").unwrap();
        fs::write(d.join("x.json"), "{}").unwrap();
        let (sources, diags) = load_paths(&[
            d.join("x.test.yaml"),
            d.join("missing.yaml"),
            d.join("x.json"),
        ]);
        assert_eq!(names(&sources), vec!["x.test.yaml"]);
        let shown: Vec<String> = diags.iter().map(|d| d.message.clone()).collect();
        assert_eq!(
            shown,
            vec![
                "no such file or directory",
                "not a policy file: the name must end in .yaml, .yml or .toml",
            ]
        );
        assert_eq!(diags[0].file, d.join("missing.yaml"));
        assert_eq!(diags[0].to_string().split(": ").nth(1), Some("error"));
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_inside_are_followed_and_dangling_ones_skipped() {
        // The git-sync layout: files link into a `..data` directory beside
        // them, and the directory given is itself a link.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("policies/..2026_12_05")).unwrap();
        fs::write(d.join("policies/..2026_12_05/a.yaml"), "flows: {}").unwrap();
        std::os::unix::fs::symlink("..2026_12_05", d.join("policies/..data")).unwrap();
        std::os::unix::fs::symlink("..data/a.yaml", d.join("policies/a.yaml")).unwrap();
        std::os::unix::fs::symlink(d.join("nowhere.yaml"), d.join("policies/b.yaml")).unwrap();
        std::os::unix::fs::symlink(d.join("policies"), d.join("current")).unwrap();
        let (sources, diags) = load_paths(&[d.join("current")]);
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(names(&sources), vec!["a.yaml"]);
        assert_eq!(sources[0].text, "flows: {}");
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_out_of_the_directory_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("secret.yaml"), "root:$6$hash: x").unwrap();
        fs::create_dir(d.join("policies")).unwrap();
        fs::write(d.join("policies/ok.yaml"), "flows: {}").unwrap();
        std::os::unix::fs::symlink(d.join("secret.yaml"), d.join("policies/s.yaml")).unwrap();
        std::os::unix::fs::symlink("../secret.yaml", d.join("policies/t.yaml")).unwrap();
        let (sources, diags) = load_paths(&[d.join("policies")]);
        assert_eq!(names(&sources), vec!["ok.yaml"]);
        assert_eq!(diags.len(), 2, "{diags:?}");
        for diag in &diags {
            let shown = diag.to_string();
            assert!(shown.contains("outside the policy directory"), "{shown}");
            assert!(!shown.contains("root"), "{shown}");
        }
        assert_eq!(diags[0].file, d.join("policies/s.yaml"));
    }

    #[test]
    fn non_utf8_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.yaml");
        fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
        let (sources, diags) = load_paths(&[path]);
        assert!(sources.is_empty());
        assert_eq!(diags[0].message, "not UTF-8 text");
    }
}
