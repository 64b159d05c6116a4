//! Running prepared statements: point reads, bounded paged scans, lightweight transactions.

use std::collections::HashMap;
use std::ops::ControlFlow;

use scylla::client::session::Session;
use scylla::deserialize::row::DeserializeRow;
use scylla::response::{PagingState, PagingStateResponse};
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row};

use crate::Result;
use crate::error::corrupt;

/// Runs a write (or any statement whose result is not read).
pub(crate) async fn exec(
    session: &Session,
    statement: &PreparedStatement,
    values: impl SerializeRow,
) -> Result<()> {
    session.execute_unpaged(statement, values).await?;
    Ok(())
}

/// The first row of a point read, if any.
pub(crate) async fn first<R>(
    session: &Session,
    statement: &PreparedStatement,
    values: impl SerializeRow,
) -> Result<Option<R>>
where
    R: for<'f, 'm> DeserializeRow<'f, 'm>,
{
    let rows = session
        .execute_unpaged(statement, values)
        .await?
        .into_rows_result()?;
    Ok(rows.maybe_first_row::<R>()?)
}

/// Reads rows page by page (`page_size` per request), handing each to `visit` until it breaks
/// or the rows run out. The caller bounds the work by breaking.
pub(crate) async fn scan<R, V, F>(
    session: &Session,
    statement: &PreparedStatement,
    values: V,
    page_size: usize,
    mut visit: F,
) -> Result<()>
where
    R: for<'f, 'm> DeserializeRow<'f, 'm>,
    V: SerializeRow,
    F: FnMut(R) -> Result<ControlFlow<()>>,
{
    let mut statement = statement.clone();
    statement.set_page_size(i32::try_from(page_size.clamp(1, 5_000)).unwrap_or(5_000));
    let mut paging = PagingState::start();
    loop {
        let (result, next) = session
            .execute_single_page(&statement, &values, paging)
            .await?;
        let rows = result.into_rows_result()?;
        for row in rows.rows::<R>()? {
            if visit(row?)?.is_break() {
                return Ok(());
            }
        }
        match next {
            PagingStateResponse::HasMorePages { state } => paging = state,
            PagingStateResponse::NoMorePages => return Ok(()),
        }
    }
}

/// Every row of a (small) partition read.
pub(crate) async fn all<R>(
    session: &Session,
    statement: &PreparedStatement,
    values: impl SerializeRow,
) -> Result<Vec<R>>
where
    R: for<'f, 'm> DeserializeRow<'f, 'm>,
{
    let mut out = Vec::new();
    scan(session, statement, values, 1_000, |row| {
        out.push(row);
        Ok(ControlFlow::Continue(()))
    })
    .await?;
    Ok(out)
}

/// What a lightweight transaction answered: whether it applied, and the columns of the row as
/// it was (ScyllaDB returns them whether or not the condition held; Cassandra only when not).
pub(crate) struct Lwt {
    pub applied: bool,
    pub row: HashMap<String, CqlValue>,
}

impl Lwt {
    pub fn text(&self, column: &str) -> Option<String> {
        match self.row.get(column) {
            Some(CqlValue::Text(s) | CqlValue::Ascii(s)) => Some(s.clone()),
            _ => None,
        }
    }

    pub fn bigint(&self, column: &str) -> Option<i64> {
        match self.row.get(column) {
            Some(CqlValue::BigInt(n)) => Some(*n),
            _ => None,
        }
    }

    pub fn boolean(&self, column: &str) -> Option<bool> {
        match self.row.get(column) {
            Some(CqlValue::Boolean(b)) => Some(*b),
            _ => None,
        }
    }
}

/// Runs a conditional statement. A result without `[applied]` means the server did not run a
/// transaction at all (kassandra ignores `IF`): an error, never a guess.
pub(crate) async fn lwt(
    session: &Session,
    statement: &PreparedStatement,
    values: impl SerializeRow,
) -> Result<Lwt> {
    let result = session.execute_unpaged(statement, values).await?;
    if !result.is_rows() {
        return Err(corrupt(
            "a conditional statement returned no [applied] row: the server does not run \
             lightweight transactions",
        ));
    }
    let rows = result.into_rows_result()?;
    let names: Vec<String> = rows
        .column_specs()
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    let row = rows
        .maybe_first_row::<Row>()?
        .ok_or_else(|| corrupt("a conditional statement returned an empty result"))?;
    let mut columns: HashMap<String, CqlValue> = names
        .into_iter()
        .zip(row.columns)
        .filter_map(|(name, value)| value.map(|v| (name, v)))
        .collect();
    let applied = match columns.remove("[applied]") {
        Some(CqlValue::Boolean(b)) => b,
        _ => {
            return Err(corrupt(
                "a conditional statement's result has no [applied] column",
            ));
        }
    };
    Ok(Lwt {
        applied,
        row: columns,
    })
}
