//! baton's distro packages (`packaging/`), built by `packaging/build.sh` from the release build
//! under test and checked the way a distribution and an admin would:
//!
//! * `lintian` on the .deb and `rpmlint` on the .rpm: no error, no unexplained warning;
//! * both packages' contents (path, mode, directory or file, config file or not) equal the
//!   list checked in as `packaging/files.txt`, hence each other's where the list says "both";
//! * metadata, dependencies (`rpm -qp --requires` vs the .deb's `Depends`) and maintainer
//!   scripts (`rpm -qp --scripts` vs the .deb's) say the same;
//! * the whole life of each package under a real systemd 252 (`tests/sdbox/sdbox.sh`): install
//!   (nothing enabled or started), enable the demo instance (serves), `systemctl reload` under
//!   load, upgrade to a newer build under load (0 failed requests, the same baton keeps running,
//!   the admin's config is kept), remove and purge (nothing left behind).
//!
//! Needs root (the systemd harness) and `cargo test --release` (the packages are made of
//! `target/release`). build.sh installs its tools (cargo-deb, rpm, lintian, rpmlint) when they
//! are missing; `tests/setup.sh` already did. Every wait is on a condition with a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[path = "sdbox/harness.rs"]
mod harness;
use harness::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The demo instance's address in the package (packaging/systemd/demo.conf, demo.toml).
const DEMO_PORT: u16 = 8470;

// ------------------------------------------------------------------------------------------
// commands

fn run(prog: &str, args: &[&str]) -> Out {
    run_in(Path::new(ROOT), prog, args)
}

fn run_ok(prog: &str, args: &[&str]) -> String {
    let out = run(prog, args);
    assert!(out.ok(), "{prog} {args:?}: {out}");
    out.stdout
}

// ------------------------------------------------------------------------------------------
// the packages

struct Packages {
    deb: PathBuf,
    rpm: PathBuf,
    /// The same release, package revision 2: the "newer build" of the upgrade tests.
    deb2: PathBuf,
    rpm2: PathBuf,
}

/// Builds both packages (revisions 1 and 2) once per test process with packaging/build.sh.
fn packages() -> &'static Packages {
    static PKGS: OnceLock<Result<Packages, String>> = OnceLock::new();
    let r = PKGS.get_or_init(|| {
        let bin = Path::new(env!("CARGO_BIN_EXE_baton"));
        let release = Path::new(ROOT).join("target/release/baton");
        if bin.canonicalize().ok() != release.canonicalize().ok() {
            return Err(format!(
                "the packages are built from target/release: run `cargo test --release` without CARGO_TARGET_DIR (the packages' assets name target/release) \
                 (this test binary's baton is {})",
                bin.display()
            ));
        }
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let mut built = Vec::new();
        for rev in ["1", "2"] {
            let out_dir = tmp.join(format!("packages-r{rev}"));
            let _ = std::fs::remove_dir_all(&out_dir);
            let t0 = Instant::now();
            let out = run(
                "bash",
                &[
                    "packaging/build.sh",
                    "--no-build",
                    "--no-lint",
                    "--revision",
                    rev,
                    "--out",
                    &out_dir.to_string_lossy(),
                ],
            );
            if !out.ok() {
                return Err(format!("packaging/build.sh --revision {rev}: {out}"));
            }
            let paths: Vec<PathBuf> = out
                .stdout
                .lines()
                .rev()
                .take(2)
                .map(PathBuf::from)
                .collect();
            eprintln!(
                "packaging/build.sh --revision {rev}: {:.1}s: {paths:?}",
                t0.elapsed().as_secs_f64()
            );
            if paths.len() < 2 {
                return Err(format!("build.sh did not print the packages' paths: {out}"));
            }
            let (rpm, deb) = (
                Path::new(ROOT).join(&paths[0]),
                Path::new(ROOT).join(&paths[1]),
            );
            if !(deb.is_file() && rpm.is_file()) {
                return Err(format!("build.sh did not print the packages' paths: {out}"));
            }
            built.push((deb, rpm));
        }
        let (deb2, rpm2) = built.pop().unwrap();
        let (deb, rpm) = built.pop().unwrap();
        Ok(Packages {
            deb,
            rpm,
            deb2,
            rpm2,
        })
    });
    match r {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// `rpm` with a private, empty database (a Debian host has none).
fn rpm_q(args: &[&str]) -> String {
    static DB: OnceLock<PathBuf> = OnceLock::new();
    let db = DB.get_or_init(|| {
        let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rpmdb");
        std::fs::create_dir_all(&d).expect("rpm dbpath");
        d
    });
    let mut a = vec!["--dbpath", db.to_str().unwrap()];
    a.extend_from_slice(args);
    run_ok("rpm", &a)
}

/// One line of packaging/files.txt, or one entry of a package.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    path: String,
    mode: u32,
    dir: bool,
    config: bool,
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:04o} {}{}{}",
            self.mode,
            self.path,
            if self.dir { "/" } else { "" },
            if self.config { " config" } else { "" }
        )
    }
}

/// packaging/files.txt for one package ("deb" or "rpm").
fn expected(kind: &str) -> BTreeSet<Entry> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("packaging/files.txt")).unwrap();
    let mut set = BTreeSet::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        assert!(
            (3..=4).contains(&f.len()) && ["both", "deb", "rpm"].contains(&f[1]),
            "packaging/files.txt: bad line {line:?}"
        );
        if f[1] != "both" && f[1] != kind {
            continue;
        }
        assert!(
            f.len() == 3 || f[3] == "config",
            "packaging/files.txt: bad flag in {line:?}"
        );
        set.insert(Entry {
            path: f[2].trim_end_matches('/').to_string(),
            mode: u32::from_str_radix(f[0], 8).expect("octal mode"),
            dir: f[2].ends_with('/'),
            config: f.len() == 4,
        });
    }
    set
}

/// "-rwxr-xr-x" → 0o755
fn mode_of(perms: &str) -> u32 {
    perms[1..]
        .chars()
        .enumerate()
        .map(|(i, c)| if c == '-' { 0 } else { 1 << (8 - i) })
        .sum()
}

/// The .deb's entries; directories only where they belong to baton (a `*baton*` path below
/// them or themselves), the shared parents (/usr, /usr/share, …) are left out.
fn deb_entries(deb: &Path) -> BTreeSet<Entry> {
    let deb = deb.to_str().unwrap();
    let conffiles: BTreeSet<String> = run_ok("dpkg-deb", &["-I", deb, "conffiles"])
        .lines()
        .map(|l| l.trim().to_string())
        .collect();
    let mut set = BTreeSet::new();
    for line in run_ok("dpkg-deb", &["-c", deb]).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (perms, owner, name) = (f[0], f[1], f[5]);
        assert!(
            owner == "0/0" || owner == "root/root",
            "{name} is owned by root: {line}"
        );
        let path = name
            .trim_start_matches('.')
            .trim_end_matches('/')
            .to_string();
        let dir = perms.starts_with('d');
        assert!(
            dir || perms.starts_with('-'),
            "only files and directories: {line}"
        );
        if path.is_empty() || (dir && !path.contains("baton")) {
            continue;
        }
        set.insert(Entry {
            config: conffiles.contains(&path),
            mode: mode_of(perms),
            dir,
            path,
        });
    }
    set
}

fn rpm_entries(rpm: &Path) -> BTreeSet<Entry> {
    let q =
        "[%{FILEMODES:octal} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILEFLAGS:fflags}. %{FILENAMES}\n]";
    let listed: BTreeSet<String> = rpm_q(&["-qp", "--list", rpm.to_str().unwrap()])
        .lines()
        .map(str::to_string)
        .collect();
    let mut set = BTreeSet::new();
    for line in rpm_q(&["-qp", "--qf", q, rpm.to_str().unwrap()]).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (mode, owner, flags, path) = (f[0], f[1], f[2], f[3]);
        assert_eq!(owner, "root:root", "{line}");
        let mode = u32::from_str_radix(mode, 8).unwrap();
        let dir = mode & 0o170000 == 0o040000;
        assert!(
            dir || mode & 0o170000 == 0o100000,
            "only files and directories: {line}"
        );
        assert!(listed.contains(path), "rpm --list shows {path}");
        let config = flags.contains('c');
        assert!(
            !config || flags.contains('n'),
            "{path} is %config(noreplace), not %config: {line}"
        );
        set.insert(Entry {
            path: path.to_string(),
            mode: mode & 0o7777,
            dir,
            config,
        });
    }
    assert_eq!(set.len(), listed.len(), "rpm --list and --qf agree");
    set
}

fn diff(what: &str, got: &BTreeSet<Entry>, want: &BTreeSet<Entry>) -> Vec<String> {
    let mut d = Vec::new();
    for e in got.difference(want) {
        d.push(format!("{what} has unexpected {e}"));
    }
    for e in want.difference(got) {
        d.push(format!("{what} lacks {e}"));
    }
    d
}

// ------------------------------------------------------------------------------------------
// static checks

#[test]
fn deb_passes_lintian() {
    let p = packages();
    let out = run(
        "lintian",
        &[
            // judged below from the output: with --show-overrides, lintian 2.116 fails on
            // overridden tags too
            "--fail-on",
            "none",
            "--display-info",
            "--pedantic",
            "--show-overrides",
            p.deb.to_str().unwrap(),
        ],
    );
    eprintln!("lintian:\n{}{}", out.stdout, out.stderr);
    let tags: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| {
            ["E:", "W:", "I:", "P:", "X:"]
                .iter()
                .any(|t| l.starts_with(t))
        })
        .collect();
    assert!(
        out.ok() && tags.is_empty(),
        "lintian reports {tags:?} (overridden ones show as O:, with their reason): {out}"
    );
    // every override is used (an unused one is itself a lintian tag) and has a reason
    let overrides =
        std::fs::read_to_string(Path::new(ROOT).join("packaging/debian/lintian-overrides"))
            .unwrap();
    let used = out.stdout.lines().filter(|l| l.starts_with("O:")).count();
    let lines: Vec<&str> = overrides.lines().collect();
    let declared = lines.iter().filter(|l| l.starts_with("baton:")).count();
    assert_eq!(
        used, declared,
        "every override in packaging/debian/lintian-overrides is used"
    );
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with("baton:") {
            let above = lines[..i].iter().rev().find(|a| !a.starts_with("baton:"));
            assert!(
                above.is_some_and(|a| a.starts_with('#')),
                "override {l:?} has a comment with its reason above it"
            );
        }
    }
}

#[test]
fn rpm_passes_rpmlint() {
    let p = packages();
    let out = run(
        "rpmlint",
        &["-c", "packaging/rpmlint.toml", p.rpm.to_str().unwrap()],
    );
    eprintln!("rpmlint:\n{}{}", out.stdout, out.stderr);
    let summary = out
        .stdout
        .lines()
        .find(|l| l.contains("packages and"))
        .unwrap_or("");
    assert!(
        out.ok() && summary.contains(" 0 errors"),
        "rpmlint reports errors: {out}"
    );
    // the warnings left are the documented ones (packaging/README.md)
    let warnings: BTreeSet<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.split_once(": W: ").map(|(_, w)| w.trim()))
        .collect();
    let documented: BTreeSet<&str> = ["no-url-tag"].into();
    assert!(
        warnings.is_subset(&documented),
        "undocumented rpmlint warnings: {:?}",
        warnings.difference(&documented).collect::<Vec<_>>()
    );
}

#[test]
fn contents_match_the_expected_list() {
    let p = packages();
    let deb = deb_entries(&p.deb);
    let rpm = rpm_entries(&p.rpm);
    let (want_deb, want_rpm) = (expected("deb"), expected("rpm"));
    let mut problems = diff(".deb", &deb, &want_deb);
    problems.extend(diff(".rpm", &rpm, &want_rpm));
    // and with each other, where the list says "both"
    let common_deb: BTreeSet<Entry> = deb.intersection(&want_rpm).cloned().collect();
    let common_rpm: BTreeSet<Entry> = rpm.intersection(&want_deb).cloned().collect();
    problems.extend(diff(".deb vs .rpm", &common_deb, &common_rpm));
    for e in &deb {
        eprintln!("  deb {e}");
    }
    for e in &rpm {
        eprintln!("  rpm {e}");
    }
    assert!(
        problems.is_empty(),
        "package contents differ from packaging/files.txt:\n  {}",
        problems.join("\n  ")
    );
    // the generated files are what the binary generates, not stale copies
    let man = run_ok(
        "sh",
        &[
            "-c",
            "dpkg-deb --fsys-tarfile \"$1\" | tar -xO ./usr/share/man/man1/baton.1.gz | gzip -dc",
            "sh",
            p.deb.to_str().unwrap(),
        ],
    );
    assert!(
        man.contains(".TH baton 1") && man.contains("baton\\-reload(1)"),
        "baton.1 is clap_mangen's page listing the subcommands: {man}"
    );
    assert!(
        !man.contains("generate"),
        "the hidden `generate` subcommand is not documented"
    );
    for section in ["EXIT STATUS", "SIGNALS", "FILES", "EXAMPLES", "SEE ALSO"] {
        assert!(
            man.contains(&format!(".SH \"{section}\""))
                || man.contains(&format!(".SH {section}\n")),
            "baton.1 has {section}"
        );
    }
    let man5 = run_ok(
        "sh",
        &[
            "-c",
            "dpkg-deb --fsys-tarfile \"$1\" | tar -xO ./usr/share/man/man5/baton.toml.5.gz | gzip -dc",
            "sh",
            p.deb.to_str().unwrap(),
        ],
    );
    assert!(
        man5.starts_with(".TH baton.toml 5") && man5.contains("backoff_initial"),
        "baton.toml.5 is the config reference: {man5}"
    );
}

/// Lines of a shell script that call the service manager, normalized to
/// "systemctl ACTION ARGS" (deb-systemd-invoke is Debian's policy-aware systemctl).
fn service_calls(script: &str) -> Vec<String> {
    script
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let i = l
                .find("systemctl ")
                .or_else(|| l.find("deb-systemd-invoke "))?;
            let words: Vec<&str> = l[i..]
                .split_whitespace()
                .skip(1)
                .take_while(|w| !w.starts_with('>') && !w.starts_with("||"))
                .filter(|w| !w.starts_with("--"))
                .collect();
            Some(format!("systemctl {}", words.join(" ")))
        })
        .collect()
}

#[test]
fn metadata_dependencies_and_scripts_agree() {
    let p = packages();
    let deb = p.deb.to_str().unwrap();
    let rpm = p.rpm.to_str().unwrap();
    let field = |f: &str| run_ok("dpkg-deb", &["-f", deb, f]).trim().to_string();

    // versions
    let rpm_version = rpm_q(&["-qp", "--qf", "%{VERSION}-%{RELEASE}", rpm]);
    assert_eq!(field("Version"), rpm_version, "same version in both");
    let baton_version = run_ok(env!("CARGO_BIN_EXE_baton"), &["--version"]);
    assert_eq!(
        format!("baton {}", field("Version").split('-').next().unwrap()),
        baton_version.trim(),
        "the package version is the binary's"
    );
    assert_eq!(field("Architecture"), "amd64");
    assert_eq!(
        rpm_q(&["-qp", "--qf", "%{ARCH} %{LICENSE}", rpm]),
        "x86_64 MIT OR Apache-2.0"
    );

    // dependencies: libc only (the .deb through dpkg-shlibdeps, the .rpm through rpm's ELF
    // dependency generator); systemd recommended
    let depends = field("Depends");
    let libc_min = depends
        .strip_prefix("libc6 (>= ")
        .and_then(|v| v.strip_suffix(')'))
        .unwrap_or_else(|| panic!("Depends is libc6 (>= V) only: {depends:?}"));
    assert_eq!(field("Recommends"), "systemd");
    assert_eq!(field("Pre-Depends"), "");
    let requires = rpm_q(&["-qp", "--requires", rpm]);
    let mut glibc: Vec<Vec<u32>> = Vec::new();
    for r in requires.lines().map(str::trim) {
        let allowed = r == "/bin/sh"
            || r == "rtld(GNU_HASH)"
            || r == format!("config(baton) = {rpm_version}")
            || r.starts_with("rpmlib(")
            || r.starts_with("libc.so.6")
            || r.starts_with("ld-linux-x86-64.so.2")
            || r.starts_with("libgcc_s.so.1");
        assert!(allowed, "unexpected rpm requirement {r:?}:\n{requires}");
        if let Some(v) = r
            .strip_prefix("libc.so.6(GLIBC_")
            .and_then(|v| v.strip_suffix(")(64bit)"))
        {
            glibc.push(v.split('.').map(|n| n.parse().unwrap()).collect());
        }
    }
    assert!(
        requires.lines().any(|r| r.trim() == "libc.so.6()(64bit)"),
        "{requires}"
    );
    let max = glibc.iter().max().expect("versioned libc symbols");
    let max = max.iter().map(u32::to_string).collect::<Vec<_>>().join(".");
    assert_eq!(
        max, libc_min,
        "the .rpm's newest GLIBC symbol version is the .deb's libc6 minimum"
    );
    assert_eq!(rpm_q(&["-qp", "--recommends", rpm]).trim(), "systemd");

    // maintainer scripts
    let deb_script = |name: &str| run_ok("dpkg-deb", &["-I", deb, name]);
    let (postinst, prerm, postrm) = (
        deb_script("postinst"),
        deb_script("prerm"),
        deb_script("postrm"),
    );
    assert!(
        run("dpkg-deb", &["-I", deb, "preinst"]).code != Some(0),
        "no preinst"
    );
    let scripts = rpm_q(&["-qp", "--scripts", rpm]);
    let mut rpm_scripts: BTreeMap<String, String> = BTreeMap::new();
    let mut current = None;
    for line in scripts.lines() {
        if let Some((name, _)) = line.split_once(" scriptlet (using /bin/sh):") {
            current = Some(name.to_string());
            rpm_scripts.insert(name.to_string(), String::new());
        } else if let Some(c) = &current {
            let s = rpm_scripts.get_mut(c).unwrap();
            s.push_str(line);
            s.push('\n');
        }
    }
    assert_eq!(
        rpm_scripts.keys().map(String::as_str).collect::<Vec<_>>(),
        ["postinstall", "postuninstall", "preuninstall"],
        "{scripts}"
    );
    let reload = "systemctl daemon-reload".to_string();
    let stop = "systemctl stop 'baton@*.socket' 'baton@*.service'".to_string();
    // phase by phase: the .rpm's scriptlet does what the .deb's script does
    for (phase, deb_s, rpm_s, want) in [
        (
            "after install/upgrade",
            &postinst,
            "postinstall",
            vec![reload.clone()],
        ),
        ("before removal", &prerm, "preuninstall", vec![stop.clone()]),
        (
            "after removal",
            &postrm,
            "postuninstall",
            vec![reload.clone()],
        ),
    ] {
        let d = service_calls(deb_s);
        let r = service_calls(&rpm_scripts[rpm_s]);
        assert_eq!(d, want, "{phase}: the .deb calls {d:?}:\n{deb_s}");
        assert_eq!(
            r, want,
            "{phase}: the .rpm calls {r:?}:\n{}",
            rpm_scripts[rpm_s]
        );
    }
    // stopping happens on removal only, never on upgrade
    assert!(
        prerm.lines().any(|l| l.trim() == "remove)")
            && !prerm
                .lines()
                .any(|l| !l.trim_start().starts_with('#') && l.contains("upgrade")),
        "the .deb's prerm stops only for `remove`:\n{prerm}"
    );
    assert!(
        rpm_scripts["preuninstall"].contains("if [ \"$1\" -eq 0 ]"),
        "the .rpm's %preun stops only on erase ($1 = 0):\n{}",
        rpm_scripts["preuninstall"]
    );
    // purge (.deb) and erase (.rpm) remove the instances' enablement links
    for s in [&postrm, &rpm_scripts["postuninstall"]] {
        assert!(
            s.contains("/etc/systemd/system/*.wants/baton@*"),
            "enablement links are removed:\n{s}"
        );
    }
    let conffiles = run_ok("dpkg-deb", &["-I", deb, "conffiles"]);
    assert_eq!(conffiles.trim(), "/etc/baton/demo.toml");
    assert_eq!(
        rpm_q(&["-qp", "--configfiles", rpm]).trim(),
        "/etc/baton/demo.toml"
    );
}

// ------------------------------------------------------------------------------------------
// under a real systemd

/// How `baton status` finds the demo instance's baton.
const DEMO: &[&str] = &["--config", "/etc/baton/demo.toml"];

/// Paths named like baton anywhere the packages write, for before/after comparisons.
fn baton_paths(bx: &SdBox) -> BTreeSet<String> {
    bx.sh_ok("find /etc /usr /var /run -xdev -name '*baton*' 2>/dev/null | sort || true")
        .lines()
        .map(str::to_string)
        .collect()
}

fn refused(port: u16) -> bool {
    let r = TcpStream::connect(("127.0.0.1", port));
    matches!(r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Deb,
    Rpm,
}

/// The life of a package on a systemd host: install, enable the demo instance, reload under
/// load, edit the config, upgrade under load, reload, remove (and purge).
fn lifecycle(kind: Kind) {
    let p = packages();
    let (tag, pkg1, pkg2) = match kind {
        Kind::Deb => ("deb", &p.deb, &p.deb2),
        Kind::Rpm => ("rpm", &p.rpm, &p.rpm2),
    };
    let bx = SdBox::up(&format!("pkg{tag}"));
    let mut c = Checks::new();
    // Docker images ship a policy-rc.d that forbids every service action in maintainer
    // scripts (the container's root is a copy of the host's); a systemd host has none.
    bx.sh_ok("rm -f /usr/sbin/policy-rc.d");
    // A fresh host: the container's root is an overlay of this machine's, where a baton run
    // by hand may have left a history (/var/lib/baton/demo numbered the first generation 2).
    // Removed inside the container only.
    bx.sh_ok("rm -rf /var/lib/baton");
    let before = baton_paths(&bx);
    assert!(
        !bx.sh("test -e /usr/bin/baton || test -e /etc/baton || dpkg -s baton >/dev/null 2>&1")
            .ok(),
        "baton is not installed in the container (nor on the host it copies) before the test"
    );
    let (in1, in2) = (format!("/root/{tag}-r1"), format!("/root/{tag}-r2"));
    bx.cp(pkg1, &in1);
    bx.cp(pkg2, &in2);
    let pm = |args: &str| -> Out {
        match kind {
            Kind::Deb => bx.sh(&format!("dpkg {args}")),
            // --force-debian: Debian's rpm otherwise warns that dpkg owns this system
            Kind::Rpm => bx.sh(&format!("rpm --nodeps --force-debian {args}")),
        }
    };
    let reloads = || {
        bx.sh_ok("journalctl --no-pager -o cat _PID=1 | grep -c '^Reloading' || true")
            .trim()
            .parse::<u32>()
            .unwrap_or(0)
    };

    // ---- install: units present, nothing enabled or started
    let r0 = reloads();
    let out = pm(&format!("-i {in1}"));
    assert!(out.ok(), "installing {}: {out}", pkg1.display());
    c.check(
        within(Duration::from_secs(5), || reloads() > r0),
        "the install made systemd reload its units (daemon-reload; PID 1 logged `Reloading`)",
    );
    let files = bx.sh_ok("systemctl list-unit-files --no-legend 'baton*'");
    c.check(
        files.contains("baton@.service") && files.contains("baton@.socket"),
        format!("baton@.service and baton@.socket are installed: {files:?}"),
    );
    let cat = bx.sh("systemctl cat baton@demo.socket");
    c.check(
        cat.ok() && cat.stdout.contains("ListenStream=127.0.0.1:8470"),
        format!("baton@demo.socket listens on 127.0.0.1:{DEMO_PORT} (vendor drop-in): {cat}"),
    );
    let active = bx.sh_ok("systemctl list-units --all --no-legend --plain 'baton*'");
    c.check(
        active.trim().is_empty(),
        format!("no baton unit is loaded or running after the install: {active:?}"),
    );
    let enabled = bx.sh("systemctl is-enabled baton@demo.socket");
    c.check(
        enabled.stdout.trim() == "disabled",
        format!("baton@demo.socket is not enabled: {enabled}"),
    );
    c.check(
        !bx.sh("pgrep -x baton || pgrep -x hello-worker").ok(),
        "no baton or worker process runs",
    );
    let man = bx.sh("man -w baton && man -w baton-reload && man -w 5 baton.toml");
    c.check(
        man.ok(),
        format!("man finds baton(1), baton-reload(1) and baton.toml(5): {man}"),
    );
    let compl = bx.exec(&[
        "bash",
        "-c",
        ". /usr/share/bash-completion/completions/baton && complete -p baton",
    ]);
    c.check(compl.ok(), format!("the bash completion loads: {compl}"));

    // ---- the admin enables the demo instance
    let port = match kind {
        Kind::Deb => {
            assert!(
                TcpListener::bind(("127.0.0.1", DEMO_PORT)).is_ok(),
                "port {DEMO_PORT} (the packaged demo's) is free on this machine"
            );
            DEMO_PORT
        }
        Kind::Rpm => {
            // the .deb's test uses the packaged port at the same time: move this one
            let port = free_port();
            let dir = "/etc/systemd/system/baton@demo.socket.d";
            bx.sh_ok(&format!(
                "mkdir -p {dir} && printf '[Socket]\\nListenStream=\\nListenStream=127.0.0.1:{port}\\n' \
                 > {dir}/port.conf && systemctl daemon-reload"
            ));
            port
        }
    };
    let out = bx.sh("systemctl enable --now baton@demo.socket");
    assert!(out.ok(), "systemctl enable --now baton@demo.socket: {out}");
    let first = http_get(port, "/", Duration::from_secs(20));
    c.check(
        matches!(&first, Ok((200, b))
            if b.starts_with("hello from pid") && b.trim().ends_with("generation 1")),
        format!("the demo answers on 127.0.0.1:{port} (socket activation): {first:?}"),
    );
    wait_until("baton@demo.service active", Duration::from_secs(20), || {
        (bx.show("baton@demo.service", "ActiveState") == "active").then_some(())
    });
    let main_pid = bx.show("baton@demo.service", "MainPID");
    let st = wait_until(
        "baton status --config /etc/baton/demo.toml",
        Duration::from_secs(10),
        || bx.baton_status(DEMO),
    );
    c.check(
        st["serving_generation"] == 1 && serving_workers(&st).len() == 2,
        format!("generation 1 serves with the packaged config's 2 workers: {st}"),
    );

    // ---- systemctl reload under load
    let load = Load::start(port, "keepalive", 4, LOAD_RATE);
    let out = bx.sh("systemctl reload baton@demo");
    let gen1 = serving_workers(&st);
    let st = bx.baton_status(DEMO).unwrap_or_default();
    let report = load.stop();
    c.check(out.ok(), format!("systemctl reload baton@demo: {out}"));
    c.check(
        st["serving_generation"] == 2,
        format!("generation 2 serves: {}", st["serving_generation"]),
    );
    c.check(
        report["failed"] == 0 && report["ok"].as_u64().unwrap_or(0) > 0,
        format!(
            "reload under load: 0 failed requests ({} ok, {} failed)",
            report["ok"], report["failed"]
        ),
    );
    let gen2 = serving_workers(&st);
    let seen = answered_by(&report);
    c.check(
        !seen.is_disjoint(&gen1) && !seen.is_disjoint(&gen2),
        format!("the load was answered by both generations ({gen1:?} then {gen2:?}): {seen:?}"),
    );

    // ---- the admin edits the config
    bx.sh_ok(
        "sed -i 's/^instances = 2$/instances = 3/' /etc/baton/demo.toml && \
         echo '# edited by the admin' >> /etc/baton/demo.toml",
    );
    let edited = bx.sh_ok("cat /etc/baton/demo.toml");
    assert!(edited.contains("instances = 3"), "{edited}");
    let verify = match kind {
        Kind::Deb => bx.sh("dpkg --verify baton"),
        Kind::Rpm => bx.sh("rpm -V --nodeps baton"),
    };
    let changed: Vec<&str> = verify.stdout.lines().collect();
    c.check(
        changed.len() == 1
            && changed[0].ends_with(" c /etc/baton/demo.toml")
            && changed[0].contains('5'),
        format!("the package manager sees exactly the edited config file as changed: {verify}"),
    );

    // ---- upgrade to the newer build while the demo serves, then reload
    let load = Load::start(port, "keepalive", 4, LOAD_RATE);
    let r0 = reloads();
    let t0 = Instant::now();
    let out = match kind {
        Kind::Deb => pm(&format!("-i {in2}")),
        Kind::Rpm => pm(&format!("-U {in2}")),
    };
    eprintln!("  upgrade took {:.2}s", t0.elapsed().as_secs_f64());
    c.check(out.ok(), format!("upgrading to {}: {out}", pkg2.display()));
    c.check(
        within(Duration::from_secs(5), || reloads() > r0),
        "the upgrade made systemd reload its units (daemon-reload; PID 1 logged `Reloading`)",
    );
    let st_after = bx.baton_status(DEMO).unwrap_or_default();
    c.check(
        serving_workers(&st_after) == gen2 && st_after["serving_generation"] == 2,
        format!("the upgrade left the serving workers alone ({gen2:?}): {st_after}"),
    );
    c.check(
        bx.show("baton@demo.service", "MainPID") == main_pid
            && bx.show("baton@demo.service", "ActiveState") == "active"
            && bx.show("baton@demo.service", "NRestarts") == "0",
        format!("baton@demo.service still active with MainPID {main_pid}, never restarted"),
    );
    let exe = bx.sh_ok(&format!("readlink /proc/{main_pid}/exe"));
    c.check(
        exe.trim() == "/usr/bin/baton (deleted)",
        format!("the running baton is still the old binary until its next restart: {exe:?}"),
    );
    let out = bx.sh("systemctl reload baton@demo");
    c.check(
        out.ok(),
        format!(
            "systemctl reload baton@demo after the upgrade (the new client, the running baton): \
             {out}"
        ),
    );
    let st = bx.baton_status(DEMO).unwrap_or_default();
    let report = load.stop();
    c.check(
        report["failed"] == 0 && report["ok"].as_u64().unwrap_or(0) > 0,
        format!(
            "upgrade + reload under load: 0 failed requests ({} ok, {} failed)",
            report["ok"], report["failed"]
        ),
    );
    c.check(
        st["serving_generation"] == 3
            && serving_workers(&st).len() == 3
            && st["pid"].as_i64().map(|p| p.to_string()) == Some(main_pid.clone()),
        format!(
            "the same baton ({main_pid}) serves generation 3 with the edited config's 3 workers: \
             {st}"
        ),
    );
    let version = match kind {
        Kind::Deb => bx.sh_ok("dpkg-query -W -f '${Version}' baton"),
        Kind::Rpm => bx.sh_ok("rpm -q --qf '%{VERSION}-%{RELEASE}' baton"),
    };
    let want = format!("{}-2", env!("CARGO_PKG_VERSION"));
    c.check(
        version.trim() == want,
        format!("{want} is installed: {version}"),
    );
    let kept = bx.sh_ok("cat /etc/baton/demo.toml");
    c.check(
        kept == edited,
        "the admin's /etc/baton/demo.toml is kept byte for byte",
    );
    let leftovers = bx.sh_ok("ls /etc/baton");
    c.check(
        leftovers.split_whitespace().collect::<Vec<_>>() == ["demo.toml"],
        format!("no .dpkg-dist/.rpmnew copy (the packaged config did not change): {leftovers:?}"),
    );

    // ---- the new binary takes effect at the next restart
    let out = bx.sh("systemctl restart baton@demo");
    c.check(out.ok(), format!("systemctl restart baton@demo: {out}"));
    let new_pid = bx.show("baton@demo.service", "MainPID");
    let exe = bx.sh_ok(&format!("readlink /proc/{new_pid}/exe"));
    c.check(
        new_pid != main_pid && exe.trim() == "/usr/bin/baton",
        format!("after a restart baton (MainPID {new_pid}) runs the new /usr/bin/baton: {exe:?}"),
    );
    let r = http_get(port, "/", Duration::from_secs(20));
    c.check(
        // generation numbers go on across runs (the history in StateDirectory= survived the
        // upgrade): the restarted baton's first generation follows generation 3
        matches!(&r, Ok((200, b)) if b.trim().ends_with("generation 4")),
        format!("the restarted baton serves generation 4: {r:?}"),
    );

    // ---- remove
    let out = match kind {
        Kind::Deb => pm("-r baton"),
        Kind::Rpm => pm("-e baton"),
    };
    c.check(out.ok(), format!("removing the package: {out}"));
    for unit in ["baton@demo.socket", "baton@demo.service"] {
        let s = bx.show(unit, "ActiveState");
        c.check(
            s == "inactive",
            format!("{unit} was stopped by the removal ({s})"),
        );
    }
    c.check(
        !bx.sh("pgrep -x baton || pgrep -x hello-worker").ok(),
        "no baton or worker process is left",
    );
    c.check(refused(port), format!("nothing listens on {port} any more"));
    let present = |path: &str| bx.sh(&format!("test -e '{path}'")).ok();
    c.check(!present("/usr/bin/baton"), "/usr/bin/baton is gone");
    match kind {
        Kind::Deb => {
            c.check(
                bx.sh_ok("cat /etc/baton/demo.toml") == edited,
                "`dpkg -r` keeps the admin's config (conffiles go on purge only)",
            );
            let out = pm("--purge baton");
            c.check(out.ok(), format!("dpkg --purge baton: {out}"));
            c.check(!present("/etc/baton"), "the purge removed /etc/baton");
        }
        Kind::Rpm => {
            // RPM has no purge: an edited %config file is saved as .rpmsave on erase
            let left = bx.sh_ok("ls /etc/baton 2>/dev/null || true");
            c.check(
                left.split_whitespace().collect::<Vec<_>>() == ["demo.toml.rpmsave"],
                format!("rpm -e saved the admin's edited config as demo.toml.rpmsave: {left:?}"),
            );
            c.check(
                bx.sh_ok("cat /etc/baton/demo.toml.rpmsave 2>/dev/null || true") == edited,
                "demo.toml.rpmsave is the admin's version",
            );
        }
    }
    let loaded = bx.sh_ok(
        "systemctl daemon-reload && systemctl list-units --all --no-legend --plain 'baton*'",
    );
    c.check(
        loaded.trim().is_empty(),
        format!("no baton unit is left loaded (not even one not-found): {loaded:?}"),
    );
    let files = bx.sh_ok("systemctl list-unit-files --no-legend 'baton*' || true");
    c.check(
        files.trim().is_empty(),
        format!("no baton unit file is left: {files:?}"),
    );
    let for_kind = expected(tag);
    let still: Vec<String> = for_kind
        .iter()
        // /etc/baton holds the .rpmsave after an rpm -e (checked above)
        .filter(|e| !(kind == Kind::Rpm && e.path == "/etc/baton") && present(&e.path))
        .map(|e| e.path.clone())
        .collect();
    c.check(
        still.is_empty(),
        format!("every installed path is gone: {still:?} left"),
    );
    let after = baton_paths(&bx);
    let new: Vec<&String> = after.difference(&before).collect();
    let allowed: BTreeSet<&str> = match kind {
        Kind::Deb => BTreeSet::new(),
        // the admin's own drop-in, the .rpmsave of the admin's config, and the instances'
        // history (StateDirectory=baton/NAME: RPM has no purge, and data stays on erase)
        Kind::Rpm => [
            "/var/lib/baton",
            "/etc/baton",
            "/etc/baton/demo.toml.rpmsave",
            "/etc/systemd/system/baton@demo.socket.d",
            "/etc/systemd/system/baton@demo.socket.d/port.conf",
        ]
        .into(),
    };
    c.check(
        new.iter().all(|p| allowed.contains(p.as_str())),
        format!("nothing named *baton* is left behind under /etc /usr /var /run: {new:?}"),
    );
    c.finish(&bx, &["baton@*"]);
}

#[test]
fn deb_install_reload_upgrade_purge_under_systemd() {
    lifecycle(Kind::Deb);
}

#[test]
fn rpm_install_reload_upgrade_erase_under_systemd() {
    lifecycle(Kind::Rpm);
}
