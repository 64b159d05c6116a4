//! The delivery ledger: an attempt is filed in the month it began and looked up in that month
//! and the one before; its outcome is written onto the same row, and the first one recorded
//! wins.

use herald_schemas::DeliveryState;
use herald_store::{LedgerBegin, LedgerEntry, Month};
use rusqlite::{Connection, OptionalExtension, params};

use crate::codec::text_enum;
use crate::error::Result;
use crate::files::lock;
use crate::store::Inner;

impl Inner {
    pub(crate) fn ledger_begin(&self, id: &str, at_ms: i64) -> Result<LedgerBegin> {
        // Where an earlier attempt was recorded, if anywhere.
        let earlier = self.recent_two(at_ms, |c| Ok(ledger_lookup(c, id)?))?;
        let Some((month, state)) = earlier else {
            return self.in_month(at_ms, |c| {
                c.prepare_cached(
                    "INSERT INTO delivery_ledger (delivery_id, begun_at_ms) VALUES (?1, ?2)
                     ON CONFLICT (delivery_id) DO NOTHING",
                )?
                .execute(params![id, at_ms])?;
                Ok(LedgerBegin::Fresh)
            });
        };
        if let Some(entry) = state {
            return Ok(LedgerBegin::Done(entry));
        }
        let conn = self.existing_month(month)?;
        let c = lock(&conn)?;
        // Unfinished. An abandoned attempt (provider said "retry later") starts afresh; any
        // other crashed inside the provider window.
        let fresh = c
            .prepare_cached(
                "UPDATE delivery_ledger SET abandoned = 0
                 WHERE delivery_id = ?1 AND abandoned = 1",
            )?
            .execute(params![id])?;
        if fresh == 1 {
            return Ok(LedgerBegin::Fresh);
        }
        c.prepare_cached(
            "UPDATE delivery_ledger SET resends = resends + 1 WHERE delivery_id = ?1",
        )?
        .execute(params![id])?;
        Ok(LedgerBegin::Unfinished)
    }

    pub(crate) fn ledger_abandon(&self, id: &str) -> Result<()> {
        let m = Month::of_ms(self.now());
        for m in [m.next(), m, m.prev()] {
            if let Some(conn) = self.month(m, false)? {
                lock(&conn)?
                    .prepare_cached(
                        "UPDATE delivery_ledger SET abandoned = 1
                         WHERE delivery_id = ?1 AND state IS NULL",
                    )?
                    .execute(params![id])?;
            }
        }
        Ok(())
    }

    pub(crate) fn ledger_finish(&self, e: &LedgerEntry) -> Result<()> {
        let outcome = params![
            e.delivery_id,
            e.state.as_str(),
            e.reason,
            e.provider_message_id,
            e.at_ms
        ];
        let finish = |c: &Connection| -> rusqlite::Result<usize> {
            c.prepare_cached(
                "UPDATE delivery_ledger SET state = ?2, reason = ?3, provider_message_id = ?4,
                     at_ms = ?5 WHERE delivery_id = ?1 AND state IS NULL",
            )?
            .execute(outcome)
        };
        let known = self.recent_two(e.at_ms, |c| {
            Ok(ledger_lookup(c, &e.delivery_id)?
                .map(|_| finish(c))
                .transpose()?)
        })?;
        if known.is_some() {
            return Ok(());
        }
        // Finishing without beginning (a connector that records directly).
        self.in_month(e.at_ms, |c| {
            c.prepare_cached(
                "INSERT INTO delivery_ledger (delivery_id, state, reason, provider_message_id,
                     begun_at_ms, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                 ON CONFLICT (delivery_id) DO NOTHING",
            )?
            .execute(outcome)?;
            Ok(())
        })
    }

    pub(crate) fn ledger_resends(&self) -> Result<u64> {
        let mut total = 0_u64;
        for (_, conn) in self.kept_months()? {
            let n: i64 = lock(&conn)?
                .prepare_cached("SELECT COALESCE(SUM(resends), 0) FROM delivery_ledger")?
                .query_row([], |r| r.get(0))?;
            total += n.max(0) as u64;
        }
        Ok(total)
    }
}

/// The ledger row of `id` in one month file: `None` if absent, `Some(None)` if begun and not
/// finished, `Some(Some(entry))` once finished.
fn ledger_lookup(c: &Connection, id: &str) -> rusqlite::Result<Option<Option<LedgerEntry>>> {
    c.prepare_cached(
        "SELECT delivery_id, state, reason, provider_message_id, at_ms
         FROM delivery_ledger WHERE delivery_id = ?1",
    )?
    .query_row(params![id], |r| {
        let state: Option<String> = r.get(1)?;
        let Some(state) = state else { return Ok(None) };
        Ok(Some(LedgerEntry {
            delivery_id: r.get(0)?,
            state: text_enum(1, state, DeliveryState::parse)?,
            reason: r.get(2)?,
            provider_message_id: r.get(3)?,
            at_ms: r.get::<_, Option<i64>>(4)?.unwrap_or_default(),
        }))
    })
    .optional()
}
