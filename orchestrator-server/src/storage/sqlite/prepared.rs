//! Statements the writer runs for every batch or every advance, in forms SQLite prepares once
//! per connection instead of at every run.
//!
//! Diesel prepares again at every run any statement it cannot prove is the same text each
//! time: all of its `UPDATE`s (a changeset may leave out its `None` fields) and anything run
//! through `batch_execute`. A profile of the writer thread at full load showed a fifth of its
//! time parsing and planning the same few statements. [`update`] builds the same `UPDATE` as
//! `diesel::update(target).set(values)`, and [`Sql`] runs a fixed statement such as `COMMIT`;
//! both are cached by their text, so a changeset whose text varies is still never confused
//! with another. A changeset whose text never varies ([`SameText`]) goes further: its
//! statement is found by its type ([`update_same_text`]), as diesel finds its own `INSERT`s and
//! `SELECT`s, without writing out the text at every run.

use std::marker::PhantomData;

use diesel::query_builder::{
    AsChangeset, AstPass, IntoUpdateTarget, QueryFragment, QueryId, UpdateTarget,
};
use diesel::result::{EmptyChangeset, Error, QueryResult};
use diesel::sqlite::Sqlite;
use diesel::{QuerySource, RunQueryDsl, Table};

use crate::storage::models::WorkflowChanges;

/// `UPDATE <table> SET <values> <where>`, prepared once per connection, found in diesel's
/// cache by its text ([`ByText`]) or by its type ([`ByType`]).
pub struct Update<T: QuerySource, W, V, K = ByText> {
    from_clause: T::FromClause,
    where_clause: W,
    values: V,
    key: PhantomData<K>,
}

/// An [`Update`] found by its text, written out at every run.
pub struct ByText;

/// An [`Update`] found by its type: its target's and its changeset's ([`SameText::Key`]).
pub struct ByType<K>(PhantomData<K>);

/// A changeset whose `UPDATE` has the same text whatever its values: every field is set, `None`
/// as `NULL` (`#[diesel(treat_none_as_null = true)]`), so its statement can be found by type.
///
/// Diesel cannot tell this from the changeset's type (its `Option` fields leave their column
/// out unless the struct says otherwise), so each implementor says it, and a test renders it
/// with every optional field `None` and `Some` to check (`tests::same_text`).
pub trait SameText {
    /// The type the statement is found by: the changeset's own, without its lifetime.
    type Key: 'static;
}

/// Every field set (`treat_none_as_null`): the compare-and-set of every advance.
impl SameText for &WorkflowChanges {
    type Key = WorkflowChanges;
}

/// `diesel::update(target).set(values)`, as a statement SQLite prepares once.
pub fn update<S, V>(target: S, values: V) -> Update<S::Table, S::WhereClause, V::Changeset>
where
    S: IntoUpdateTarget,
    V: AsChangeset<Target = S::Table>,
{
    build(target, values)
}

/// [`update`] for a changeset whose text never varies, found in diesel's cache by its type: at
/// every advance this saves writing out the statement's text and hashing it to find it.
pub fn update_same_text<S, V>(
    target: S,
    values: V,
) -> Update<S::Table, S::WhereClause, V::Changeset, ByType<V::Key>>
where
    S: IntoUpdateTarget,
    V: AsChangeset<Target = S::Table> + SameText,
{
    build(target, values)
}

/// The statement of [`update`] and [`update_same_text`], found by `K`.
fn build<S, V, K>(target: S, values: V) -> Update<S::Table, S::WhereClause, V::Changeset, K>
where
    S: IntoUpdateTarget,
    V: AsChangeset<Target = S::Table>,
{
    let UpdateTarget {
        table,
        where_clause,
    } = target.into_update_target();
    Update {
        from_clause: table.from_clause(),
        where_clause,
        values: values.as_changeset(),
        key: PhantomData,
    }
}

/// How an [`Update`] is found in diesel's cache, and what that says of its changeset.
pub trait Key {
    /// Whether the changeset may set no column at all (each of its fields `None`, left out).
    const MAY_SET_NOTHING: bool;
}

impl Key for ByText {
    const MAY_SET_NOTHING: bool = true;
}

/// A [`SameText`] changeset sets every field.
impl<K> Key for ByType<K> {
    const MAY_SET_NOTHING: bool = false;
}

impl<T, W, V, K> QueryFragment<Sqlite> for Update<T, W, V, K>
where
    T: Table,
    T::FromClause: QueryFragment<Sqlite>,
    W: QueryFragment<Sqlite>,
    V: QueryFragment<Sqlite>,
    K: Key,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        // As diesel does: a changeset that sets nothing is an error, not `SET WHERE …`. Asking
        // walks the whole changeset, at each of diesel's three walks of a run: a changeset
        // that sets every field is not asked.
        if K::MAY_SET_NOTHING && self.values.is_noop(out.backend())? {
            return Err(Error::QueryBuilderError(Box::new(EmptyChangeset)));
        }
        out.push_sql("UPDATE ");
        self.from_clause.walk_ast(out.reborrow())?;
        out.push_sql(" SET ");
        self.values.walk_ast(out.reborrow())?;
        self.where_clause.walk_ast(out.reborrow())
    }
}

/// Keyed by its text (no static id): two changesets of one type may differ in text.
impl<T: QuerySource, W, V> QueryId for Update<T, W, V, ByText> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

/// Keyed by its table, its filter's id and its changeset's type; by its text when the filter
/// has no static id.
impl<T, W, V, K> QueryId for Update<T, W, V, ByType<K>>
where
    T: QuerySource + 'static,
    W: QueryId,
    K: 'static,
{
    type QueryId = (T, W::QueryId, K);
    const HAS_STATIC_QUERY_ID: bool = W::HAS_STATIC_QUERY_ID;
}

impl<T: QuerySource, W, V, K, Conn> RunQueryDsl<Conn> for Update<T, W, V, K> {}

/// A fixed statement without parameters (`BEGIN IMMEDIATE`, `COMMIT`), prepared once.
#[derive(Debug, Clone, Copy)]
pub struct Sql(pub &'static str);

impl QueryFragment<Sqlite> for Sql {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql(self.0);
        Ok(())
    }
}

/// Keyed by its text.
impl QueryId for Sql {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Conn> RunQueryDsl<Conn> for Sql {}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::prelude::*;
    use diesel::{Connection, SqliteConnection, debug_query};

    diesel::table! {
        things (id) {
            id -> Integer,
            name -> Text,
            note -> Nullable<Text>,
        }
    }

    #[derive(AsChangeset)]
    #[diesel(table_name = things)]
    struct Change<'a> {
        name: &'a str,
        note: Option<&'a str>,
    }

    #[derive(AsChangeset)]
    #[diesel(table_name = things)]
    struct ChangeNote<'a> {
        note: Option<&'a str>,
    }

    #[derive(AsChangeset)]
    #[diesel(table_name = things)]
    #[diesel(treat_none_as_null = true)]
    struct AllSet {
        name: String,
        note: Option<String>,
    }

    impl SameText for &AllSet {
        type Key = AllSet;
    }

    fn query_id<Q: QueryId>(_: &Q) -> Option<std::any::TypeId> {
        Q::query_id()
    }

    /// The statement's text, without its binds.
    fn text<Q: QueryFragment<Sqlite>>(query: &Q) -> String {
        let shown = debug_query::<Sqlite, _>(query).to_string();
        shown
            .split(" -- binds:")
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    /// Row `id`'s `note` as stored.
    fn note_of(conn: &mut SqliteConnection, id: i32) -> Option<String> {
        things::table
            .find(id)
            .select(things::note)
            .get_result(conn)
            .unwrap()
    }

    fn connection() -> SqliteConnection {
        let mut conn = SqliteConnection::establish(":memory:").unwrap();
        diesel::sql_query(
            "CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT NOT NULL, note TEXT)",
        )
        .execute(&mut conn)
        .unwrap();
        diesel::sql_query("INSERT INTO things VALUES (1, 'a', 'x'), (2, 'b', NULL)")
            .execute(&mut conn)
            .unwrap();
        conn
    }

    #[test]
    fn writes_the_same_statement_as_diesel() {
        let change = Change {
            name: "c",
            note: None,
        };
        let ours = update(things::table.filter(things::id.eq(1)), &change);
        let theirs = diesel::update(things::table.filter(things::id.eq(1))).set(&change);
        assert_eq!(
            debug_query::<Sqlite, _>(&ours).to_string(),
            debug_query::<Sqlite, _>(&theirs).to_string()
        );
    }

    #[test]
    fn a_changeset_whose_text_varies_runs_as_written_each_time() {
        // `note: None` leaves the column out; `Some` sets it. One type, two texts: each run
        // must use its own statement, not the one cached for the other.
        let mut conn = connection();
        for (note, expected) in [
            (Some("y"), Some("y")),
            (None, Some("y")),
            (Some("z"), Some("z")),
        ] {
            let change = Change { name: "n", note };
            let n = update(things::table.filter(things::id.eq(1)), &change)
                .execute(&mut conn)
                .unwrap();
            assert_eq!(n, 1);
            let stored = note_of(&mut conn, 1);
            assert_eq!(stored.as_deref(), expected);
        }
        let untouched: (String, Option<String>) = things::table
            .find(2)
            .select((things::name, things::note))
            .get_result(&mut conn)
            .unwrap();
        assert_eq!(untouched, ("b".to_owned(), None));
    }

    #[test]
    fn a_changeset_that_sets_nothing_is_refused_as_diesel_refuses_it() {
        let mut conn = connection();
        let nothing = ChangeNote { note: None };
        let ours = update(things::table.filter(things::id.eq(1)), &nothing).execute(&mut conn);
        let theirs = diesel::update(things::table.filter(things::id.eq(1)))
            .set(&nothing)
            .execute(&mut conn);
        assert!(ours.is_err());
        assert_eq!(
            ours.map_err(|e| e.to_string()),
            theirs.map_err(|e| e.to_string())
        );
    }

    #[test]
    fn fixed_statements_run_again_and_again() {
        let mut conn = connection();
        for _ in 0..3 {
            Sql("BEGIN IMMEDIATE").execute(&mut conn).unwrap();
            update(things::table.filter(things::id.eq(2)), things::name.eq("d"))
                .execute(&mut conn)
                .unwrap();
            Sql("COMMIT").execute(&mut conn).unwrap();
        }
        Sql("BEGIN IMMEDIATE").execute(&mut conn).unwrap();
        update(things::table.filter(things::id.eq(2)), things::name.eq("e"))
            .execute(&mut conn)
            .unwrap();
        Sql("ROLLBACK").execute(&mut conn).unwrap();
        let name: String = things::table
            .find(2)
            .select(things::name)
            .get_result(&mut conn)
            .unwrap();
        assert_eq!(name, "d");
    }

    #[test]
    fn a_same_text_update_is_found_by_type_and_any_other_by_text() {
        let target = || things::table.filter(things::id.eq(1));
        let all = AllSet {
            name: "n".to_owned(),
            note: None,
        };
        let by_type = update_same_text(target(), &all);
        assert!(query_id(&by_type).is_some());
        assert_eq!(
            text(&by_type),
            text(&diesel::update(target()).set(&all)),
            "the same statement as diesel's"
        );
        let change = Change {
            name: "n",
            note: None,
        };
        assert!(query_id(&update(target(), &change)).is_none());
        // A filter diesel keys by text (an `IN` list) keeps the whole statement keyed by text.
        let listed = update_same_text(things::table.filter(things::id.eq_any([1, 2])), &all);
        assert!(query_id(&listed).is_none());
    }

    #[test]
    fn a_same_text_update_sets_none_as_null_run_after_run() {
        let mut conn = connection();
        for note in [None, Some("y"), None, Some("z")] {
            let all = AllSet {
                name: "m".to_owned(),
                note: note.map(str::to_owned),
            };
            let n = update_same_text(things::table.filter(things::id.eq(1)), &all)
                .execute(&mut conn)
                .unwrap();
            assert_eq!(n, 1);
            let stored = note_of(&mut conn, 1);
            assert_eq!(stored.as_deref(), note);
        }
    }

    /// Each [`SameText`] changeset renders one text with its optional fields `None` or `Some`.
    #[test]
    fn same_text() {
        use crate::storage::schema::workflows;
        let some = WorkflowChanges {
            state: "PHASE_1".to_owned(),
            version: 2,
            rework_count: 1,
            time_in_state: "{}".to_owned(),
            updated_at: 3,
            completed_at: Some(4),
            gate_stay: Some("{}".to_owned()),
            gate_due_at: Some(5),
        };
        let none = WorkflowChanges {
            completed_at: None,
            gate_stay: None,
            gate_due_at: None,
            ..some.clone()
        };
        let target = || workflows::table.filter(workflows::feature_id.eq("f"));
        assert_eq!(
            text(&update_same_text(target(), &some)),
            text(&update_same_text(target(), &none))
        );
        assert!(text(&update_same_text(target(), &none)).contains("gate_due_at"));
    }
}
