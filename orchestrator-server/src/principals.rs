//! Principals mode: the TOML file of hashed tokens, reading it (again on SIGHUP), finding the
//! principal a bearer token belongs to, minting a token (`orchestrator-server principal add`)
//! and removing a principal (`principal remove`).
//!
//! ```toml
//! [[principal]]
//! name = "alice"                 # 1–128 characters, not blank, recorded as the actor
//! kind = "human"                 # human | agent
//! roles = ["reviewer"]           # viewer | agent | reviewer | admin
//! token_sha256 = "9f86d0…"       # hex SHA-256 of the token; tokens are never stored
//! ```

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use orchestrator_core::{Actor, ActorKind, Principal, Role};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Why the principals file could not be used (start-up stops; a reload keeps the old one).
#[derive(Debug, thiserror::Error)]
pub enum PrincipalsError {
    /// The file could not be read or written.
    #[error("principals file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML of the expected shape.
    #[error("principals file {path}: {problem}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// No principal has the name given to `principal remove`.
    #[error("principals file {path}: no principal is named '{name}'")]
    NoSuchName {
        /// The file.
        path: PathBuf,
        /// The name.
        name: String,
    },
    /// `principal remove` took the principal out, but the file as written does not load (an
    /// entry it held before is one no server takes): a running server keeps its previous
    /// principals, the removed one among them, until the file is fixed.
    #[error(
        "principals file {path}: removed '{name}', but the file does not load: {problem}; a \
         running server keeps its previous principals, '{name}' among them, until it is fixed"
    )]
    RemovedButUnloadable {
        /// The file.
        path: PathBuf,
        /// The name removed.
        name: String,
        /// Why the file does not load.
        problem: String,
    },
    /// A name given to `principal add` is taken.
    #[error(
        "principals file {path}: a principal named '{name}' exists already (names are compared \
         without regard to case or Unicode encoding)"
    )]
    NameTaken {
        /// The file.
        path: PathBuf,
        /// The name.
        name: String,
    },
}

/// What `principal remove` leaves in a file whose last principal it took out: a file with
/// nothing in it at all is refused as a mistake.
pub const NO_PRINCIPALS: &str = "# No principals: every token is refused until one is added.";

/// One `[[principal]]` table, as written in the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    kind: String,
    roles: Vec<String>,
    token_sha256: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    principal: Vec<Entry>,
}

/// The principals of one reading of the file, by the SHA-256 of their token.
#[derive(Debug, Default)]
pub struct Principals {
    by_token_hash: HashMap<[u8; 32], Principal>,
}

impl Principals {
    /// Reads and checks the file: every entry well formed, names and token hashes unique.
    pub fn load(path: &Path) -> Result<Self, PrincipalsError> {
        let text = std::fs::read_to_string(path).map_err(|source| PrincipalsError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|problem| PrincipalsError::Malformed {
            path: path.to_owned(),
            problem,
        })
    }

    fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            // A file truncated by a mistake (`> principals.toml`) or caught mid-write would
            // lock every caller out; `principal remove` leaves a comment when it takes the last.
            return Err(format!(
                "the file is empty; a file meant to have no principals says so in a comment ({NO_PRINCIPALS:?})"
            ));
        }
        let file: File = toml::from_str(text).map_err(|e| located(text, &e))?;
        let mut by_token_hash = HashMap::new();
        let mut names = Vec::new();
        for (index, entry) in file.principal.into_iter().enumerate() {
            let at = |problem: String| format!("principal #{}: {problem}", index + 1);
            let principal = principal(&entry).map_err(at)?;
            let hash = token_hash_from_hex(&entry.token_sha256)
                .ok_or_else(|| at("token_sha256 must be 64 hexadecimal digits".to_owned()))?;
            if hash == token_hash("") {
                // `printf %s "$TOKEN" | sha256sum` with TOKEN unset: every request without a
                // token would be this principal's.
                return Err(at(
                    "token_sha256 is the SHA-256 of an empty token (was the token unset when it was hashed?)"
                        .to_owned(),
                ));
            }
            // Names are one person's whatever their case or encoding, as the gate's rules
            // compare them.
            if names
                .iter()
                .any(|name: &Actor| name.same_person(&principal.name))
            {
                return Err(at(format!("the name '{}' is used twice", principal.name)));
            }
            names.push(principal.name.clone());
            if by_token_hash.insert(hash, principal).is_some() {
                return Err(at("the token is another principal's too".to_owned()));
            }
        }
        Ok(Principals { by_token_hash })
    }

    /// What `next`, a new reading of the file, changes, principal by principal (by name).
    pub fn changes_to(&self, next: &Principals) -> Changes {
        let (before, after) = (self.by_name(), next.by_name());
        let mut changes = Changes::default();
        for (name, (principal, hash)) in &after {
            let Some((was, old_hash)) = before.get(name) else {
                changes.added.push(name.clone());
                if principal.roles.contains(&Role::Admin) {
                    changes.admins_added.push(name.clone());
                }
                continue;
            };
            if old_hash != hash {
                changes.token_changed.push(name.clone());
            }
            if (was.kind, &was.roles) != (principal.kind, &principal.roles) {
                changes.rights_changed.push(format!(
                    "{name}: {} → {}",
                    rights(was),
                    rights(principal)
                ));
                if principal.roles.contains(&Role::Admin) && !was.roles.contains(&Role::Admin) {
                    changes.admins_added.push(name.clone());
                }
            }
        }
        changes.removed = before
            .keys()
            .filter(|name| !after.contains_key(*name))
            .cloned()
            .collect();
        changes
    }

    /// Each principal and its token's SHA-256, by name.
    fn by_name(&self) -> std::collections::BTreeMap<String, (&Principal, [u8; 32])> {
        self.by_token_hash
            .iter()
            .map(|(hash, p)| (p.name.to_string(), (p, *hash)))
            .collect()
    }

    /// The principal whose token this is.
    pub fn find(&self, token: &str) -> Option<&Principal> {
        self.by_token_hash.get(&token_hash(token))
    }

    /// The principal named `name`, as the gate compares names ([`Actor::same_person`]).
    pub fn named(&self, name: &Actor) -> Option<&Principal> {
        self.by_token_hash
            .values()
            .find(|principal| principal.name.same_person(name))
    }

    /// The principal whose token has this SHA-256 (hex).
    pub fn with_token_hash(&self, hex: &str) -> Option<&Principal> {
        self.by_token_hash.get(&token_hash_from_hex(hex)?)
    }

    /// How many principals the file names.
    pub fn len(&self) -> usize {
        self.by_token_hash.len()
    }

    /// Whether the file names none (then every request is refused).
    pub fn is_empty(&self) -> bool {
        self.by_token_hash.is_empty()
    }
}

/// What a new reading of the principals file changes, by principal name, for the log: who
/// may do what is decided by the file, so each change of it is on the record.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Names new in the file.
    pub added: Vec<String>,
    /// Names gone from it (their tokens no longer open anything).
    pub removed: Vec<String>,
    /// Names given a new token (the old one no longer opens anything).
    pub token_changed: Vec<String>,
    /// `name: kind [roles] → kind [roles]` for each principal kept whose kind or roles changed.
    pub rights_changed: Vec<String>,
    /// Names that hold the admin role now and did not (new principals included).
    pub admins_added: Vec<String>,
}

/// `human [reviewer, admin]`.
fn rights(principal: &Principal) -> String {
    let roles: Vec<&str> = principal.roles.iter().map(|role| role.as_str()).collect();
    format!("{} [{}]", principal.kind, roles.join(", "))
}

/// A principal's name: a name given now ([`Actor::parse_name`]: not blank, and not the
/// orchestrator's own, `system`, in any letter case).
pub fn principal_name(value: &str) -> Result<Actor, String> {
    Actor::parse_name(value).map_err(|e| format!("name {}", e.rule))
}

fn principal(entry: &Entry) -> Result<Principal, String> {
    let name = principal_name(entry.name.as_str())?;
    let kind = match entry.kind.parse::<ActorKind>() {
        Ok(kind @ (ActorKind::Human | ActorKind::Agent)) => kind,
        _ => return Err("kind must be human or agent".to_owned()),
    };
    let roles = entry
        .roles
        .iter()
        .map(|role| {
            role.parse::<Role>()
                .map_err(|e| format!("{}: {}", e.field, e.rule))
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    if roles.is_empty() {
        return Err("roles must name at least one role".to_owned());
    }
    Ok(Principal { name, kind, roles })
}

/// The SHA-256 of a token (or of any secret kept only as its hash).
pub(crate) fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// 64 hexadecimal digits as 32 bytes; nothing else (not a sign, which `from_str_radix`
/// would take).
fn token_hash_from_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut hash = [0u8; 32];
    for (byte, pair) in hash.iter_mut().zip(hex.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(hash)
}

/// Bytes as lowercase hexadecimal.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    })
}

/// Mints a token for a new principal and adds its hashed entry at the end of the file (created
/// if missing; an existing one replaced whole, as `remove` replaces it); returns the token,
/// which is stored nowhere. The file must stay valid: a taken name or a malformed file
/// refuses.
pub fn add(
    path: &Path,
    name: &Actor,
    kind: ActorKind,
    roles: &BTreeSet<Role>,
) -> Result<String, PrincipalsError> {
    let io = |source| PrincipalsError::Io {
        path: path.to_owned(),
        source,
    };
    let _held = exclusive(path).map_err(io)?;
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(e)),
    };
    // The file as a server would read it: one that would not load (an entry already there
    // that no server takes) is left as it is, and no token is minted.
    // (A new or empty file has no principals yet: this one makes it a file that loads.)
    let loaded = if existing.trim().is_empty() {
        Principals::default()
    } else {
        Principals::parse(&existing).map_err(|problem| PrincipalsError::Malformed {
            path: path.to_owned(),
            problem: format!("as it is, the file does not load: {problem}"),
        })?
    };
    // Names compare as they load: white space around one, or its case, does not make another.
    if let Some(taken) = loaded.named(name) {
        // The name as the file spells it (`ALICE` is refused for `alice`).
        return Err(PrincipalsError::NameTaken {
            path: path.to_owned(),
            name: taken.name.to_string(),
        });
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| io(std::io::Error::other(e.to_string())))?;
    let token = format!("orc_{}", to_hex(&secret));
    let entry = File {
        principal: vec![Entry {
            name: name.to_string(),
            kind: kind.as_str().to_owned(),
            roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
            token_sha256: to_hex(&token_hash(&token)),
        }],
    };
    let text = toml::to_string(&entry).map_err(|e| PrincipalsError::Malformed {
        path: path.to_owned(),
        problem: e.to_string(),
    })?;
    let separator = if existing.is_empty() || existing.ends_with("\n\n") {
        ""
    } else if existing.ends_with('\n') {
        "\n"
    } else {
        "\n\n"
    };
    let added = format!("{separator}{text}");
    // And after the append: principals written as an inline array take no `[[principal]]`
    // table after them.
    Principals::parse(&format!("{existing}{added}")).map_err(|problem| {
        PrincipalsError::Malformed {
            path: path.to_owned(),
            problem: format!(
                "with the new principal appended as a [[principal]] table, {problem} (a file \
                 that lists its principals as `principal = [...]` takes none appended: edit it)"
            ),
        }
    })?;
    // A file there is replaced whole (a full disk mid-write leaves the old one, not half an
    // entry no server loads), unless this user may not write beside it: then appended to.
    let replaced = if existing.is_empty() {
        Err(std::io::ErrorKind::NotFound.into())
    } else {
        let target = std::fs::canonicalize(path).map_err(io)?;
        replace(&target, format!("{existing}{added}").as_bytes())
    };
    match replaced {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ) =>
        {
            let mut out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(io)?;
            out.write_all(added.as_bytes())
                .and_then(|()| out.sync_all())
                .map_err(io)?;
        }
        Err(e) => return Err(io(e)),
    }
    Ok(token)
}

/// A TOML error in `text` as one line that says where: `line 3: missing field `kind``.
fn located(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line = before.iter().filter(|b| **b == b'\n').count() + 1;
            format!("line {line}: {}", e.message())
        }
        None => e.message().to_owned(),
    }
}

/// Removes the principal named `name` from the file, leaving the rest of it as written: the
/// other principals, the layout and every comment (those above the removed principal's table
/// move to the table after it, or to the end). The file (a link's target, if it is a link) is
/// replaced whole, with its permissions and, where the caller may give it, its owner: a reader
/// sees the old file or the new one, never a part. Its token stops working once a running
/// server reads the file again (SIGHUP). A name no principal has, or a file not of the
/// principals' shape, refuses; a file that held an entry no server takes is written all the
/// same (the removal is wanted) and answered `RemovedButUnloadable`.
pub fn remove(path: &Path, name: &Actor) -> Result<(), PrincipalsError> {
    let target = std::fs::canonicalize(path).map_err(|source| PrincipalsError::Io {
        path: path.to_owned(),
        source,
    })?;
    let path = target.as_path();
    let io = |source| PrincipalsError::Io {
        path: path.to_owned(),
        source,
    };
    let _held = exclusive(path).map_err(io)?;
    let malformed = |problem: &str| PrincipalsError::Malformed {
        path: path.to_owned(),
        problem: problem.to_owned(),
    };
    let text = std::fs::read_to_string(path).map_err(io)?;
    // The shape as a server reads it, then the same text as an editable document.
    let _: File = toml::from_str(&text).map_err(|e| malformed(&located(&text, &e)))?;
    let mut document: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| malformed(e.message()))?;
    let named = |n: &str| Actor::parse_name(n).is_ok_and(|n| n.same_person(name));
    if !take_out(&mut document, named) {
        return Err(PrincipalsError::NoSuchName {
            path: path.to_owned(),
            name: name.to_string(),
        });
    }
    let mut text = document.to_string();
    if text.trim().is_empty() {
        text = format!("{NO_PRINCIPALS}\n");
    }
    replace(path, text.as_bytes()).map_err(io)?;
    match Principals::parse(&text) {
        Ok(_) => Ok(()),
        Err(problem) => Err(PrincipalsError::RemovedButUnloadable {
            path: path.to_owned(),
            name: name.to_string(),
            problem,
        }),
    }
}

/// An exclusive lock for one `principal` command on the file `path`, held until the returned
/// handle is dropped: two run at once (an offboarding script removing two names in parallel)
/// would each write the file as they read it, the later undoing the other — a removed token
/// back. The lock is the directory's (`flock` on it), as `remove` replaces the file itself; it
/// leaves nothing behind and needs no right to write there (in a directory this user may not
/// read, the command runs without it).
fn exclusive(path: &Path) -> std::io::Result<Option<std::fs::File>> {
    if !cfg!(unix) {
        return Ok(None);
    }
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let dir = target
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let lock = match std::fs::File::open(dir) {
        Ok(lock) => lock,
        // A directory this user may pass through but not read: no lock to take there.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Ok(None),
        Err(e) => return Err(e),
    };
    lock.lock()?;
    Ok(Some(lock))
}

/// Takes the principals whose name `named` accepts out of `document` (`[[principal]]` tables,
/// or the entries of an inline `principal = [...]`); whether there was one. The comments and
/// blank lines above a removed table are kept: they go to the table after it, or to the end of
/// the document.
fn take_out(document: &mut toml_edit::DocumentMut, named: impl Fn(&str) -> bool) -> bool {
    use toml_edit::{Item, RawString};
    let prefix = |decor: &toml_edit::Decor| {
        decor
            .prefix()
            .and_then(RawString::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let entry_named = |name: Option<&str>| name.is_some_and(&named);
    if let Some(array) = document.get_mut("principal").and_then(Item::as_array_mut) {
        let before = array.len();
        array.retain(|entry| {
            let name = entry.as_inline_table().and_then(|t| t.get("name"));
            !entry_named(name.and_then(toml_edit::Value::as_str))
        });
        return array.len() < before;
    }
    let Some(tables) = document
        .get_mut("principal")
        .and_then(Item::as_array_of_tables_mut)
    else {
        return false;
    };
    let (mut removed, mut orphans) = (false, String::new());
    let mut at = 0;
    while let Some(table) = tables.get_mut(at) {
        if entry_named(table.get("name").and_then(Item::as_str)) {
            orphans.push_str(&prefix(tables.remove(at).decor()));
            removed = true;
            continue;
        }
        if !orphans.is_empty() {
            let own = prefix(table.decor());
            table
                .decor_mut()
                .set_prefix(std::mem::take(&mut orphans) + &own);
        }
        at += 1;
    }
    if !orphans.is_empty() {
        let trailing = document.trailing().as_str().unwrap_or_default().to_owned();
        document.set_trailing(orphans + &trailing);
    }
    removed
}

/// Writes `contents` to a new file beside `path` (private until it is complete), gives it
/// `path`'s permissions and, where the caller may, its owner (the server may run as another
/// user than the one editing), syncs it, renames it over `path` and syncs the directory, so
/// the change survives a crash.
fn replace(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let old = std::fs::metadata(path)?;
    let mut new = tempfile::NamedTempFile::new_in(dir)?;
    new.write_all(contents)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // Only root may give a file away; anyone else's new file is theirs, as any they write,
        // though it keeps the old file's group where they belong to it (a file of the group
        // the server reads it as).
        let file = new.as_file();
        if std::os::unix::fs::fchown(file, Some(old.uid()), Some(old.gid())).is_err() {
            let _ = std::os::unix::fs::fchown(file, None, Some(old.gid()));
        }
    }
    new.as_file().set_permissions(old.permissions())?;
    new.as_file().sync_all()?;
    new.persist(path).map_err(|e| e.error)?;
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(names: &[Role]) -> BTreeSet<Role> {
        names.iter().copied().collect()
    }

    #[test]
    fn a_new_reading_names_every_change_of_who_may_do_what() {
        let entry = |name: &str, kind: &str, roles: &str, token: u8| {
            format!(
                "[[principal]]\nname = '{name}'\nkind = '{kind}'\nroles = [{roles}]\ntoken_sha256 = '{}'\n",
                format!("{token:02x}").repeat(32)
            )
        };
        let before = Principals::parse(
            &[
                entry("alice", "human", "'reviewer'", 1),
                entry("bob", "human", "'reviewer'", 2),
                entry("carol", "human", "'reviewer'", 3),
                entry("dave", "human", "'viewer'", 4),
                entry("erin", "human", "'admin'", 5),
            ]
            .concat(),
        )
        .unwrap();
        let after = Principals::parse(
            &[
                entry("alice", "human", "'reviewer'", 1),
                entry("bob", "human", "'reviewer'", 9),
                entry("carol", "agent", "'viewer'", 3),
                entry("dave", "human", "'viewer', 'admin'", 4),
                entry("erin", "human", "'reviewer'", 5),
                entry("frank", "human", "'admin'", 6),
            ]
            .concat(),
        )
        .unwrap();
        assert_eq!(
            before.changes_to(&after),
            Changes {
                added: vec!["frank".to_owned()],
                removed: vec![],
                token_changed: vec!["bob".to_owned()],
                rights_changed: vec![
                    "carol: human [reviewer] → agent [viewer]".to_owned(),
                    "dave: human [viewer] → human [viewer, admin]".to_owned(),
                    "erin: human [admin] → human [reviewer]".to_owned(),
                ],
                admins_added: vec!["dave".to_owned(), "frank".to_owned()],
            }
        );
        assert_eq!(
            after.changes_to(&before).removed,
            ["frank"],
            "a principal taken out is named"
        );
        assert_eq!(before.changes_to(&before), Changes::default());
    }

    #[test]
    fn a_token_hash_is_64_hexadecimal_digits_and_nothing_else() {
        let digits = "0123456789abcdefABCDEF0123456789abcdef0123456789abcdef0123456789";
        assert_eq!(token_hash_from_hex(digits).unwrap()[..2], [0x01, 0x23]);
        for broken in [
            "+a".repeat(32),
            "0".repeat(63),
            "0".repeat(65),
            "g".repeat(64),
        ] {
            assert_eq!(token_hash_from_hex(&broken), None, "{broken}");
        }
    }

    #[test]
    fn the_orchestrator_s_own_name_is_no_principal_s() {
        for taken in ["system", "System", " SYSTEM "] {
            assert!(principal_name(taken).is_err(), "{taken}");
        }
        assert_eq!(principal_name("systems").unwrap().as_str(), "systems");
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("principals.toml");
        std::fs::write(
            &path,
            "[[principal]]\nname = 'System'\nkind = 'human'\nroles = ['reviewer']\ntoken_sha256 = '0000000000000000000000000000000000000000000000000000000000000001'\n",
        )
        .unwrap();
        let refused = Principals::load(&path).unwrap_err().to_string();
        assert!(refused.contains("must not be system"), "{refused}");
    }

    #[test]
    fn a_removed_principal_is_gone_and_the_rest_of_the_file_stays() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("principals.toml");
        std::fs::write(&path, "# the team's principals\n").unwrap();
        let name = |n: &str| Actor::parse(n).unwrap();
        let mint = |n: &str, kind, role| add(&path, &name(n), kind, &roles(&[role])).unwrap();
        let alice = mint("alice", ActorKind::Human, Role::Reviewer);
        let bot = mint("build-bot", ActorKind::Agent, Role::Agent);
        let ops = mint("ops", ActorKind::Human, Role::Admin);

        remove(&path, &name("build-bot")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# the team's principals\n"), "{text}");
        assert!(!text.contains("build-bot"), "{text}");
        let principals = Principals::load(&path).unwrap();
        assert_eq!(principals.len(), 2);
        assert!(principals.find(&bot).is_none());
        assert!(principals.find(&alice).is_some() && principals.find(&ops).is_some());

        assert!(matches!(
            remove(&path, &name("build-bot")),
            Err(PrincipalsError::NoSuchName { .. })
        ));
        // A name with white space around it in the file is the same name.
        std::fs::write(&path, text.replace("name = \"ops\"", "name = \" ops \"")).unwrap();
        remove(&path, &name("ops")).unwrap();
        remove(&path, &name("alice")).unwrap();
        assert!(Principals::load(&path).unwrap().is_empty());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(left, ["principals.toml"], "no temporary file is left");
        let missing = remove(&dir.path().join("none.toml"), &name("alice"));
        assert!(matches!(missing, Err(PrincipalsError::Io { .. })));
    }

    /// `principal` commands run at once on one file each see the other's write: none undoes
    /// another (a removed name back, an added one lost).
    #[test]
    fn commands_run_at_once_keep_each_others_changes() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("principals.toml");
        let name = |n: String| Actor::parse(n).unwrap();
        let reviewer = roles(&[Role::Reviewer]);
        for n in 0..8 {
            add(
                &path,
                &name(format!("leaving-{n}")),
                ActorKind::Human,
                &reviewer,
            )
            .unwrap();
        }
        std::thread::scope(|scope| {
            for n in 0..8 {
                let (path, reviewer) = (&path, &reviewer);
                scope.spawn(move || {
                    add(
                        path,
                        &name(format!("joining-{n}")),
                        ActorKind::Human,
                        reviewer,
                    )
                    .unwrap()
                });
                scope.spawn(move || remove(path, &name(format!("leaving-{n}"))).unwrap());
            }
        });
        let loaded = Principals::load(&path).unwrap();
        let mut names: Vec<String> = loaded
            .by_token_hash
            .values()
            .map(|p| p.name.to_string())
            .collect();
        names.sort();
        let joined: Vec<String> = (0..8).map(|n| format!("joining-{n}")).collect();
        assert_eq!(names, joined);
    }

    /// A removal from a file holding an entry no server takes is written (it is wanted), and
    /// says that a running server keeps its previous principals until the file is fixed.
    #[test]
    fn a_removal_from_a_file_that_does_not_load_says_so() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("principals.toml");
        let mallory = Actor::parse("mallory").unwrap();
        add(&path, &mallory, ActorKind::Human, &roles(&[Role::Reviewer])).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let broken = format!(
            "{text}\n[[principal]]\nname = \"robot\"\nkind = \"robot\"\nroles = []\n\
             token_sha256 = \"{}\"\n",
            "0".repeat(64)
        );
        std::fs::write(&path, broken).unwrap();
        let said = remove(&path, &mallory).unwrap_err();
        assert!(
            matches!(&said, PrincipalsError::RemovedButUnloadable { name, .. } if name == "mallory"),
            "{said}"
        );
        assert!(
            said.to_string().contains("keeps its previous principals"),
            "{said}"
        );
        assert!(!std::fs::read_to_string(&path).unwrap().contains("mallory"));
    }

    #[test]
    fn removing_a_principal_keeps_every_comment() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("principals.toml");
        let entry = |name: &str, digit: char| {
            format!(
                "[[principal]]\nname = \"{name}\"\nkind = \"human\"\nroles = [\"viewer\"]\ntoken_sha256 = \"{}\"\n",
                digit.to_string().repeat(64)
            )
        };
        let file = format!(
            "# the team\n\n{}# alice's note\n\n{}\n# carol: ops\n{}# end\n",
            entry("alice", '1'),
            entry("bob", '2'),
            entry("carol", '3')
        );
        let name = |n: &str| Actor::parse(n).unwrap();
        for (gone, kept) in [("alice", "bob"), ("bob", "alice"), ("carol", "bob")] {
            std::fs::write(&path, &file).unwrap();
            remove(&path, &name(gone)).unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            for comment in ["# the team", "# alice's note", "# carol: ops", "# end"] {
                assert!(text.contains(comment), "{gone} removed: {text}");
            }
            assert!(!text.contains(&format!("\"{gone}\"")), "{text}");
            assert!(text.contains(&format!("\"{kept}\"")), "{text}");
            assert_eq!(Principals::load(&path).unwrap().len(), 2, "{text}");
        }
        // Through a link, the link's target changes and the link stays.
        #[cfg(unix)]
        {
            let link = dir.path().join("link.toml");
            std::os::unix::fs::symlink(&path, &link).unwrap();
            std::fs::write(&path, &file).unwrap();
            remove(&link, &name("bob")).unwrap();
            let kind = std::fs::symlink_metadata(&link).unwrap().file_type();
            assert!(kind.is_symlink());
            assert_eq!(Principals::load(&path).unwrap().len(), 2);
        }
        // An inline list of principals, as a server reads it too.
        let inline = format!(
            "principal = [{{ name = \"dave\", kind = \"agent\", roles = [\"agent\"], token_sha256 = \"{}\" }}]\n",
            "4".repeat(64)
        );
        std::fs::write(&path, inline).unwrap();
        remove(&path, &name("dave")).unwrap();
        assert!(Principals::load(&path).unwrap().is_empty());
    }

    #[test]
    fn an_empty_file_is_refused_and_removing_the_last_principal_leaves_a_comment() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("principals.toml");
        for empty in ["", "\n", "  \n\t\n"] {
            std::fs::write(&path, empty).unwrap();
            let refused = Principals::load(&path);
            assert!(
                matches!(&refused, Err(PrincipalsError::Malformed { problem, .. }) if problem.contains("empty")),
                "{empty:?}: {refused:?}"
            );
        }
        // A comment says the file is meant to have none.
        std::fs::write(&path, "# nobody yet\n").unwrap();
        assert!(Principals::load(&path).unwrap().is_empty());

        std::fs::write(&path, "").unwrap();
        let reviewer = BTreeSet::from([Role::Reviewer]);
        add(
            &path,
            &Actor::parse("alice").unwrap(),
            ActorKind::Human,
            &reviewer,
        )
        .unwrap();
        remove(&path, &Actor::parse("alice").unwrap()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim(), NO_PRINCIPALS);
        assert!(Principals::load(&path).unwrap().is_empty());
        // And the next `principal add` appends to it as to any file.
        add(
            &path,
            &Actor::parse("bob").unwrap(),
            ActorKind::Human,
            &reviewer,
        )
        .unwrap();
        let names: Vec<String> = Principals::load(&path)
            .unwrap()
            .by_name()
            .into_keys()
            .collect();
        assert_eq!(names, ["bob"]);
    }

    #[test]
    fn a_minted_token_finds_its_principal_and_nothing_else_does() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("principals.toml");
        let alice = Actor::parse("alice").unwrap();
        let token = add(&path, &alice, ActorKind::Human, &roles(&[Role::Reviewer])).unwrap();
        let bot = Actor::parse("build-bot").unwrap();
        let bot_token = add(&path, &bot, ActorKind::Agent, &roles(&[Role::Agent])).unwrap();
        assert!(token.len() >= 64, "at least 32 bytes of entropy");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&token), "the token itself is stored");

        let principals = Principals::load(&path).unwrap();
        assert_eq!(principals.len(), 2);
        let found = principals.find(&token).unwrap();
        assert_eq!(
            (found.name.as_str(), found.kind),
            ("alice", ActorKind::Human)
        );
        assert_eq!(principals.find(&bot_token).unwrap().kind, ActorKind::Agent);
        assert!(principals.find("orc_guess").is_none());

        assert!(matches!(
            add(&path, &alice, ActorKind::Human, &roles(&[Role::Viewer])),
            Err(PrincipalsError::NameTaken { .. })
        ));
        // Another case is the same name, and the refusal says it as the file has it.
        let shouted = Actor::parse("ALICE").unwrap();
        let taken = add(&path, &shouted, ActorKind::Human, &roles(&[Role::Viewer])).unwrap_err();
        assert!(
            taken.to_string().contains("'alice' exists already"),
            "{taken}"
        );

        // A file no server would load after the append is left as it is, and nothing minted:
        // principals as an inline list (a `[[principal]]` after it is not TOML), or an entry
        // already there that does not load.
        let carol = Actor::parse("carol").unwrap();
        for unloadable in [
            format!(
                "principal = [{{ name = \"dave\", kind = \"agent\", roles = [\"agent\"], token_sha256 = \"{}\" }}]\n",
                "4".repeat(64)
            ),
            format!(
                "[[principal]]\nname = \"eve\"\nkind = \"robot\"\nroles = [\"viewer\"]\ntoken_sha256 = \"{}\"\n",
                "5".repeat(64)
            ),
        ] {
            std::fs::write(&path, &unloadable).unwrap();
            assert!(matches!(
                add(&path, &carol, ActorKind::Human, &roles(&[Role::Viewer])),
                Err(PrincipalsError::Malformed { .. })
            ));
            assert_eq!(std::fs::read_to_string(&path).unwrap(), unloadable);
        }
    }

    #[test]
    fn a_bad_file_says_which_entry_and_why() {
        let hash = "a".repeat(64);
        for (text, expected) in [
            ("[[principal]]\nname = \"a\"", "missing"),
            // Where, when the file does not parse: the line.
            (
                "[[principal]]\nname = \"a\"\nkind = 7",
                "line 3: invalid type",
            ),
            (
                &*format!(
                    "[[principal]]\nname = \"a\"\nkind = \"robot\"\nroles = [\"viewer\"]\ntoken_sha256 = \"{hash}\""
                ),
                "principal #1: kind",
            ),
            (
                &*format!(
                    "[[principal]]\nname = \" \"\nkind = \"human\"\nroles = [\"viewer\"]\ntoken_sha256 = \"{hash}\""
                ),
                "principal #1: name must not be blank",
            ),
            (
                &*format!(
                    "[[principal]]\nname = \"a\"\nkind = \"human\"\nroles = []\ntoken_sha256 = \"{hash}\""
                ),
                "at least one role",
            ),
            (
                &*format!(
                    "[[principal]]\nname = \"a\"\nkind = \"human\"\nroles = [\"boss\"]\ntoken_sha256 = \"{hash}\""
                ),
                "principal #1: roles: each must be one of",
            ),
            (
                "[[principal]]\nname = \"a\"\nkind = \"human\"\nroles = [\"viewer\"]\ntoken_sha256 = \"xyz\"",
                "64 hexadecimal",
            ),
            (
                &*format!(
                    "[[principal]]\nname = \"a\"\nkind = \"human\"\nroles = [\"viewer\"]\ntoken_sha256 = \"{hash}\"\n\
                     [[principal]]\nname = \"b\"\nkind = \"human\"\nroles = [\"viewer\"]\ntoken_sha256 = \"{hash}\""
                ),
                "principal #2: the token",
            ),
            (
                &*format!(
                    "[[principal]]\nname = \"alice\"\nkind = \"human\"\nroles = [\"viewer\"]\ntoken_sha256 = \"{hash}\"\n\
                     [[principal]]\nname = \"Alice\"\nkind = \"human\"\nroles = [\"viewer\"]\ntoken_sha256 = \"{}\"",
                    "b".repeat(64)
                ),
                "principal #2: the name 'Alice' is used twice",
            ),
            (
                &*format!(
                    "[[principal]]\nname = \"a\"\nkind = \"human\"\nroles = [\"viewer\"]\ntoken_sha256 = \"{}\"",
                    to_hex(&token_hash(""))
                ),
                "principal #1: token_sha256 is the SHA-256 of an empty token",
            ),
        ] {
            let problem = Principals::parse(text).unwrap_err();
            assert!(problem.contains(expected), "{problem}");
        }
        assert!(Principals::parse("# nobody yet\n").unwrap().is_empty());
    }
}
