//! Statements the writer runs for every batch or every advance, in forms SQLite prepares once
//! per connection instead of at every run.
//!
//! Diesel prepares again at every run any statement it cannot prove is the same text each
//! time: all of its `UPDATE`s (a changeset may leave out its `None` fields) and anything run
//! through `batch_execute`. A profile of the writer thread at full load showed a fifth of its
//! time parsing and planning the same few statements. [`update`] builds the same `UPDATE` as
//! `diesel::update(target).set(values)`, and [`Sql`] runs a fixed statement such as `COMMIT`;
//! both are cached by their text, so a changeset whose text varies is still never confused
//! with another.

use diesel::query_builder::{
    AsChangeset, AstPass, IntoUpdateTarget, QueryFragment, QueryId, UpdateTarget,
};
use diesel::result::{EmptyChangeset, Error, QueryResult};
use diesel::sqlite::Sqlite;
use diesel::{QuerySource, RunQueryDsl, Table};

/// `UPDATE <table> SET <values> <where>`, prepared once per connection.
pub struct Update<T: QuerySource, W, V> {
    from_clause: T::FromClause,
    where_clause: W,
    values: V,
}

/// `diesel::update(target).set(values)`, as a statement SQLite prepares once.
pub fn update<S, V>(target: S, values: V) -> Update<S::Table, S::WhereClause, V::Changeset>
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
    }
}

impl<T, W, V> QueryFragment<Sqlite> for Update<T, W, V>
where
    T: Table,
    T::FromClause: QueryFragment<Sqlite>,
    W: QueryFragment<Sqlite>,
    V: QueryFragment<Sqlite>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        // As diesel does: a changeset that sets nothing is an error, not `SET WHERE …`.
        if self.values.is_noop(out.backend())? {
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
impl<T: QuerySource, W, V> QueryId for Update<T, W, V> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<T: QuerySource, W, V, Conn> RunQueryDsl<Conn> for Update<T, W, V> {}

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
            let stored: Option<String> = things::table
                .find(1)
                .select(things::note)
                .get_result(&mut conn)
                .unwrap();
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
}
