//! `clockbridge man`: the manual page, in roff, made from the two places that already describe
//! clockbridge, so that it cannot drift from them:
//!
//! - the commands, their arguments and options, from the CLI's own definition (clap), every
//!   subcommand at every depth (`dlq list`, `submit approvals`...);
//! - the configuration reference, from the README's "Configuration" section and its
//!   "Monitoring: `[http]`" section, handed in as text (the binary takes README.md in at build time)
//!   and turned from Markdown into roff: tables of keys become tagged paragraphs, lists become
//!   bullets, code blocks stay verbatim.
//!
//! The `.deb` installs the page as `man clockbridge` (`packaging/build-deb.sh`); by hand,
//! `clockbridge man > /usr/local/share/man/man1/clockbridge.1`. A unit test checks that every key the
//! configuration accepts is in the page.

use clap::Command;

/// The README sections that make the page's CONFIGURATION: a level-2 heading (the whole section,
/// down to the next level-2 heading) or a level-3 one (down to the next heading of level 2 or 3).
const CONFIG_SECTIONS: [&str; 2] = ["## Configuration", "### Monitoring: `[http]` (optional)"];

/// The whole page: `cli` is the command line's definition, `readme` the text of README.md.
pub fn render(cli: &Command, readme: &str) -> String {
    let mut o = String::new();
    let version = cli.get_version().unwrap_or("");
    o.push_str(&format!(
        ".TH CLOCKBRIDGE 1 \"\" \"clockbridge {version}\" \"clockbridge manual\"\n"
    ));
    o.push_str(".SH NAME\nclockbridge \\- ");
    o.push_str(&roff_text(
        &cli.get_about().map(|a| a.to_string()).unwrap_or_default(),
    ));
    o.push_str("\n.SH SYNOPSIS\n\\fBclockbridge\\fR [\\fB\\-\\-config\\fR \\fIFILE\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]\n");
    o.push_str(".SH DESCRIPTION\n");
    o.push_str(
        "clockbridge reads punches from office time clocks (line clocks over TCP or a serial port, \
         ZKTeco terminals over their binary protocol, exported log files), commits each to a \
         durable SQLite queue before anything acknowledges it, and uploads the queue to the \
         Feishu / Lark attendance platform, each punch exactly once. It also carries HR data \
         (approvals, archived reports, leave accruals) to the platform.\n",
    );
    o.push_str(".SH OPTIONS\n");
    options(cli, &mut o);
    o.push_str(".SH COMMANDS\n");
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        command(sub, "clockbridge", &mut o);
    }
    o.push_str(".SH CONFIGURATION\n");
    for heading in CONFIG_SECTIONS {
        match section(readme, heading) {
            Some(text) => o.push_str(&markdown_to_roff(text)),
            None => o.push_str(&format!(
                ".PP\n(The README's section {} is missing from this build.)\n",
                roff_text(heading.trim_start_matches('#').trim())
            )),
        }
    }
    o.push_str(
        ".SH FILES\n\
         .TP\n/etc/clockbridge/clockbridge.toml\nThe configuration (\\fB\\-\\-config\\fR).\n\
         .TP\n/var/lib/clockbridge/queue.db\nThe queue (\\fBqueue.path\\fR), with its \\fB\\-wal\\fR and \\fB\\-shm\\fR files; \
         \\fBqueue.db.lock\\fR holds the running daemon's pid, \\fBqueue.db.status\\fR its last status.\n\
         .TP\n/usr/share/doc/clockbridge/README.md\nThe whole manual: installation, how delivery works, troubleshooting.\n\
         .SH SEE ALSO\n\\fBsystemctl\\fR(1), \\fBjournalctl\\fR(1), \\fBsqlite3\\fR(1)\n",
    );
    o
}

/// The command-line options of `cmd` (not its positional arguments), as tagged paragraphs.
fn options(cmd: &Command, o: &mut String) {
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        let mut tag = Vec::new();
        if let Some(s) = arg.get_short() {
            tag.push(format!("\\fB\\-{s}\\fR"));
        }
        if let Some(l) = arg.get_long() {
            tag.push(format!("\\fB\\-\\-{}\\fR", roff_text(l)));
        }
        if tag.is_empty() {
            // positional
            let name = arg
                .get_value_names()
                .and_then(|v| v.first())
                .map(|v| v.to_string())
                .unwrap_or_else(|| arg.get_id().to_string().to_uppercase());
            tag.push(format!("\\fI{}\\fR", roff_text(&name)));
        } else if arg.get_action().takes_values() {
            if let Some(v) = arg.get_value_names().and_then(|v| v.first()) {
                tag.push(format!("\\fI{}\\fR", roff_text(v)));
            }
        }
        let mut help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        if !defaults.is_empty() {
            help.push_str(&format!(" (default: {})", defaults.join(", ")));
        }
        o.push_str(&format!(".TP\n{}\n{}\n", tag.join(" "), roff_text(&help)));
    }
}

/// One command and, below it, its subcommands.
fn command(cmd: &Command, parent: &str, o: &mut String) {
    let name = format!("{parent} {}", cmd.get_name());
    o.push_str(&format!(".SS \"{}\"\n", roff_text(&name)));
    let about = cmd
        .get_long_about()
        .or_else(|| cmd.get_about())
        .map(|a| a.to_string())
        .unwrap_or_default();
    if !about.is_empty() {
        o.push_str(&format!("{}\n", roff_text(&about)));
    }
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        o.push_str(".RS\n");
        options(cmd, o);
        o.push_str(".RE\n");
    }
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        command(sub, &name, o);
    }
}

/// The text of the README section that starts at the line `heading`, without the heading.
fn section<'a>(readme: &'a str, heading: &str) -> Option<&'a str> {
    let level = heading.chars().take_while(|c| *c == '#').count();
    let start = readme.find(&format!("\n{heading}\n"))? + heading.len() + 2;
    let rest = &readme[start..];
    let mut at = 0;
    let mut in_code = false;
    for line in rest.split_inclusive('\n') {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if !in_code && hashes > 0 && hashes <= level && line[hashes..].starts_with(' ') {
            break;
        }
        at += line.len();
    }
    Some(&rest[..at])
}

/// Markdown (as the README writes it: headings, paragraphs, lists, tables, fenced code) as roff.
pub fn markdown_to_roff(md: &str) -> String {
    let mut o = String::new();
    let mut lines = md.lines().peekable();
    let mut paragraph = false;
    while let Some(line) = lines.next() {
        let t = line.trim_end();
        if t.starts_with("```") {
            o.push_str(".PP\n.nf\n");
            for code in lines.by_ref() {
                if code.trim_end().starts_with("```") {
                    break;
                }
                o.push_str(&verbatim(code));
                o.push('\n');
            }
            o.push_str(".fi\n");
            paragraph = false;
        } else if t.is_empty() {
            paragraph = false;
        } else if let Some(h) = t.strip_prefix("### ").or_else(|| t.strip_prefix("## ")) {
            o.push_str(&format!(".SS \"{}\"\n", inline(h).replace('"', "\\(dq")));
            paragraph = false;
        } else if t.starts_with('|') {
            // a table: its header and separator rows are the key / default / meaning titles
            if t.starts_with("| key") || t.starts_with("| ---") || t.starts_with("| column") {
                continue;
            }
            let cells: Vec<&str> = t.trim_matches('|').split(" | ").map(str::trim).collect();
            let (key, rest) = cells.split_first().unwrap_or((&"", &[]));
            let tag = match rest {
                [default, meaning] => (inline(key), default_text(default), inline(meaning)),
                _ => (inline(key), String::new(), inline(&rest.join(" "))),
            };
            o.push_str(&format!(".TP\n{}{}\n{}\n", tag.0, tag.1, tag.2));
            paragraph = false;
        } else if let Some(item) = t.strip_prefix("- ") {
            // a bullet, with its continuation lines (indented)
            let mut text = item.to_string();
            while let Some(next) = lines.peek() {
                if next.starts_with("  ") && !next.trim().is_empty() {
                    text.push(' ');
                    text.push_str(next.trim());
                    lines.next();
                } else {
                    break;
                }
            }
            o.push_str(&format!(".IP \\(bu 2\n{}\n", inline(&text)));
            paragraph = false;
        } else {
            if !paragraph {
                o.push_str(".PP\n");
                paragraph = true;
            }
            o.push_str(&inline(t.trim_start()));
            o.push('\n');
        }
    }
    o
}

/// A table's default cell after the key: " (default: X)", nothing for none or an empty cell.
fn default_text(cell: &str) -> String {
    match cell.trim() {
        "" | "none" => String::new(),
        // "required", "required for `tcp`"
        d if d.starts_with("required") => format!(" ({})", inline(d)),
        d => format!(" (default: {})", inline(d)),
    }
}

/// Inline Markdown as roff: `code` and **bold** in bold, [text](link) as its text, the rest
/// escaped.
fn inline(s: &str) -> String {
    let mut o = String::new();
    let mut rest = s;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('`') {
            if let Some(end) = r.find('`') {
                o.push_str(&format!("\\fB{}\\fR", escape(&r[..end])));
                rest = &r[end + 1..];
                continue;
            }
        }
        if let Some(r) = rest.strip_prefix("**") {
            if let Some(end) = r.find("**") {
                o.push_str(&format!("\\fB{}\\fR", inline(&r[..end])));
                rest = &r[end + 2..];
                continue;
            }
        }
        if let Some(r) = rest.strip_prefix('[') {
            if let Some(close) = r.find("](") {
                if let Some(end) = r[close + 2..].find(')') {
                    o.push_str(&inline(&r[..close]));
                    rest = &r[close + 2 + end + 1..];
                    continue;
                }
            }
        }
        let c = rest.chars().next().unwrap_or_default();
        o.push_str(&escape(&c.to_string()));
        rest = &rest[c.len_utf8()..];
    }
    protect_line_start(o)
}

/// Plain text (no Markdown) as roff.
fn roff_text(s: &str) -> String {
    protect_line_start(escape(s))
}

/// A code line, kept as it is.
fn verbatim(s: &str) -> String {
    protect_line_start(escape(s))
}

/// Backslashes and hyphens escaped (a `-` in roff may become a hyphen, not the ASCII minus of an
/// option or a key); characters beyond ASCII (`–`, `≥`, `上班`) as `\[uXXXX]`, which groff reads
/// whatever the page's encoding.
fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\e"),
            '-' => o.push_str("\\-"),
            c if c.is_ascii() => o.push(c),
            c => o.push_str(&format!("\\[u{:04X}]", c as u32)),
        }
    }
    o
}

/// A line starting with `.` or `'` would be read as a request: guard it.
fn protect_line_start(s: String) -> String {
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const README: &str = include_str!("../README.md");

    fn cli() -> Command {
        Command::new("clockbridge")
            .version("1.2.3")
            .about("Bridges clocks")
            .arg(
                clap::Arg::new("config")
                    .long("config")
                    .default_value("/etc/clockbridge/clockbridge.toml")
                    .help("The configuration file"),
            )
            .subcommand(
                Command::new("dlq").about("Dead letters").subcommand(
                    Command::new("list").about("List them").arg(
                        clap::Arg::new("json")
                            .long("json")
                            .action(clap::ArgAction::SetTrue)
                            .help("JSON"),
                    ),
                ),
            )
            .subcommand(Command::new("standin").hide(true))
    }

    #[test]
    fn every_command_at_every_depth_is_in_the_page_and_hidden_ones_are_not() {
        let page = render(&cli(), README);
        assert!(
            page.starts_with(".TH CLOCKBRIDGE 1 \"\" \"clockbridge 1.2.3\""),
            "{page}"
        );
        assert!(
            page.contains(".SS \"clockbridge dlq\"\nDead letters\n"),
            "{page}"
        );
        assert!(
            page.contains(".SS \"clockbridge dlq list\"\nList them\n"),
            "{page}"
        );
        assert!(page.contains(".TP\n\\fB\\-\\-json\\fR\nJSON\n"), "{page}");
        assert!(
            page.contains("(default: /etc/clockbridge/clockbridge.toml)"),
            "{page}"
        );
        let commands = page.split(".SH COMMANDS").nth(1).unwrap();
        let commands = commands.split(".SH CONFIGURATION").next().unwrap();
        assert!(!commands.contains("standin"), "{commands}");
        // no line a roff reader would take for an unknown request
        for l in page.lines() {
            if let Some(req) = l.strip_prefix('.') {
                let name: String = req
                    .chars()
                    .take_while(|c| c.is_ascii_alphabetic())
                    .collect();
                assert!(
                    ["TH", "SH", "SS", "TP", "PP", "IP", "RS", "RE", "nf", "fi"]
                        .contains(&name.as_str()),
                    "{l}"
                );
            }
        }
    }

    #[test]
    fn markdown_tables_lists_code_and_inline_marks_become_roff() {
        let md = "### `[queue]`\n\n| key | default | meaning |\n| --- | --- | --- |\n| `path` | `\"/var/q.db\"` | The **queue** file, see [Troubleshooting](#t). |\n| `file` | none | A table. |\n\nA paragraph\nthat goes on.\n\n- a bullet\n  continued\n\n```toml\n.dot = \"a\\\\b\"\n```\n";
        let r = markdown_to_roff(md);
        assert_eq!(
            r,
            ".SS \"\\fB[queue]\\fR\"\n\
             .TP\n\\fBpath\\fR (default: \\fB\"/var/q.db\"\\fR)\nThe \\fBqueue\\fR file, see Troubleshooting.\n\
             .TP\n\\fBfile\\fR\nA table.\n\
             .PP\nA paragraph\nthat goes on.\n\
             .IP \\(bu 2\na bullet continued\n\
             .PP\n.nf\n\\&.dot = \"a\\e\\eb\"\n.fi\n"
        );
        // beyond ASCII: named by code point, read by groff whatever the encoding
        assert_eq!(
            markdown_to_roff("(1–50), ≥ 1, 上班\n"),
            ".PP\n(1\\[u2013]50), \\[u2265] 1, \\[u4E0A]\\[u73ED]\n"
        );
    }

    #[test]
    fn every_key_the_configuration_accepts_is_in_the_page() {
        let page = render(&cli(), README);
        let config = page
            .split(".SH CONFIGURATION\n")
            .nth(1)
            .and_then(|c| c.split(".SH FILES").next())
            .expect("a CONFIGURATION section");
        // every section's keys, as the example configuration (which sets every key) shows them
        let example = crate::config::Config::from_toml_with_env(
            include_str!("../config/clockbridge.toml"),
            "config/clockbridge.toml",
            [(
                "CLOCKBRIDGE__FEISHU__APP_SECRET".to_string(),
                "x".to_string(),
            )],
        )
        .expect("the example configuration loads");
        let shown: toml::Table = example.to_masked_toml().parse().unwrap();
        let mut keys: Vec<String> = Vec::new();
        for (section, v) in &shown {
            match v {
                toml::Value::Table(t) => keys.extend(t.keys().cloned()),
                toml::Value::Array(_) => {}
                _ => panic!("{section}"),
            }
        }
        // every device key of every kind
        keys.extend(
            crate::config::device::COMMON_KEYS
                .iter()
                .map(|k| k.to_string()),
        );
        for kind in crate::sources::KINDS {
            keys.extend(kind.keys().iter().map(|k| k.to_string()));
        }
        // every field of the sections that have defaults, set or not (the example leaves some out)
        use crate::config::{
            HttpConfig, InboxConfig, LimitsConfig, LogConfig, QueueConfig, ReconcileConfig,
            SenderConfig,
        };
        for v in [
            serde_json::to_value(HttpConfig::default()),
            serde_json::to_value(InboxConfig::default()),
            serde_json::to_value(LimitsConfig::default()),
            serde_json::to_value(LogConfig::default()),
            serde_json::to_value(QueueConfig::default()),
            serde_json::to_value(ReconcileConfig::default()),
            serde_json::to_value(SenderConfig::default()),
            serde_json::to_value(crate::sources::adms::AdmsConfig::default()),
        ] {
            keys.extend(v.unwrap().as_object().unwrap().keys().cloned());
        }
        // the secret's other key (a file instead of the inline secret the example's environment sets)
        keys.push("app_secret_file".into());
        keys.sort();
        keys.dedup();
        let missing: Vec<&String> = keys
            .iter()
            .filter(|k| !config.contains(&format!("\\fB{}\\fR", escape(k))))
            .collect();
        assert!(
            missing.is_empty(),
            "not in the man page (add them to the README's tables): {missing:?}"
        );
        assert!(keys.len() > 55, "{keys:?}");
        assert!(
            config.contains(".SS \"\\fB[feishu]\\fR (required section)\""),
            "{config}"
        );
    }
}
