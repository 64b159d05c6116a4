//! The delivery ledger: lightweight transactions on one row per delivery, because two
//! attempts racing on a redelivered dispatch must agree on who calls the provider.

use std::ops::ControlFlow;

use herald_store::retention::DAY_MS;
use herald_store::{LedgerBegin, LedgerEntry, Month};

use crate::codec;
use crate::cql::{Lwt, exec, first, lwt, scan};
use crate::store::Inner;
use crate::tiers::WithTtl;
use crate::{Error, Result};

/// `delivery_id, state, reason, provider_message_id, at_ms, abandoned`.
type LedgerRow = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<bool>,
);

/// What the ledger knows of a delivery.
#[derive(Default)]
struct Known {
    outcome: Option<LedgerEntry>,
    abandoned: bool,
}

/// How often `ledger_finish` retries when a concurrent begin keeps changing the row.
const FINISH_ATTEMPTS: usize = 3;

impl Inner {
    pub(crate) async fn ledger_begin(&self, delivery_id: &str, at_ms: i64) -> Result<LedgerBegin> {
        let st = &self.st.shared;
        let answer = lwt(&self.session, &st.ledger_begin, (delivery_id, at_ms, false)).await?;
        if answer.applied {
            return Ok(LedgerBegin::Fresh);
        }
        let mut known = match from_answer(&answer, delivery_id)? {
            Some(known) => known,
            None => self.read_ledger(delivery_id).await?.unwrap_or_default(),
        };
        if let Some(entry) = known.outcome {
            return Ok(LedgerBegin::Done(entry));
        }
        if known.abandoned {
            // The provider said "retry later": this attempt starts afresh, unless a concurrent
            // attempt restarted (or finished) it first.
            let restart = (false, at_ms, delivery_id);
            if lwt(&self.session, &st.ledger_restart, restart)
                .await?
                .applied
            {
                return Ok(LedgerBegin::Fresh);
            }
            known = self.read_ledger(delivery_id).await?.unwrap_or_default();
            if let Some(entry) = known.outcome {
                return Ok(LedgerBegin::Done(entry));
            }
        }
        // An attempt began and never finished: a crash inside the provider window.
        if let Some(ttl) = self.time.hot_ttl(at_ms) {
            let row = (Month::of_ms(at_ms).bucket(), delivery_id, at_ms);
            exec(&self.session, &st.insert_resend, WithTtl { row, ttl }).await?;
        }
        Ok(LedgerBegin::Unfinished)
    }

    pub(crate) async fn ledger_abandon(&self, delivery_id: &str) -> Result<()> {
        lwt(
            &self.session,
            &self.st.shared.ledger_abandon,
            (true, delivery_id),
        )
        .await?;
        Ok(())
    }

    /// `UPDATE ... IF state = null`; where no row exists, `INSERT ... IF NOT EXISTS`. The first
    /// recorded outcome wins.
    pub(crate) async fn ledger_finish(&self, e: &LedgerEntry) -> Result<()> {
        let st = &self.st.shared;
        let outcome = (
            e.state.as_str(),
            e.reason.as_deref(),
            e.provider_message_id.as_deref(),
            e.at_ms,
        );
        for _ in 0..FINISH_ATTEMPTS {
            let update = (
                outcome.0,
                outcome.1,
                outcome.2,
                outcome.3,
                e.delivery_id.as_str(),
            );
            if lwt(&self.session, &st.ledger_finish, update).await?.applied {
                return Ok(());
            }
            if self
                .read_ledger(&e.delivery_id)
                .await?
                .is_some_and(|k| k.outcome.is_some())
            {
                return Ok(());
            }
            let insert = (
                e.delivery_id.as_str(),
                outcome.0,
                outcome.1,
                outcome.2,
                e.at_ms,
                e.at_ms,
                false,
            );
            if lwt(&self.session, &st.ledger_insert_finished, insert)
                .await?
                .applied
            {
                return Ok(());
            }
        }
        Err(Error::Contention(format!(
            "the ledger row of {} kept changing while recording its outcome",
            e.delivery_id
        )))
    }

    /// Resend rows of the months the hot tier spans.
    pub(crate) async fn ledger_resends(&self) -> Result<u64> {
        let now = self.time.now();
        let from = self.time.retention.oldest_hot_ms(now);
        let mut total = 0_u64;
        for month in Month::newest_first(from, now.saturating_add(DAY_MS)) {
            scan(
                &self.session,
                &self.st.shared.select_resends,
                (month.bucket(),),
                1_000,
                |_: (String,)| {
                    total += 1;
                    Ok(ControlFlow::Continue(()))
                },
            )
            .await?;
        }
        Ok(total)
    }

    /// A serial read of the delivery's row.
    async fn read_ledger(&self, delivery_id: &str) -> Result<Option<Known>> {
        let row: Option<LedgerRow> =
            first(&self.session, &self.st.shared.select_ledger, (delivery_id,)).await?;
        row.map(
            |(id, state, reason, provider_message_id, at_ms, abandoned)| {
                known(id, state, reason, provider_message_id, at_ms, abandoned)
            },
        )
        .transpose()
    }
}

/// The row as a lost `IF NOT EXISTS` reported it, if the server sent it (ScyllaDB does).
fn from_answer(answer: &Lwt, delivery_id: &str) -> Result<Option<Known>> {
    if answer.text("delivery_id").is_none() {
        return Ok(None);
    }
    known(
        delivery_id.to_owned(),
        answer.text("state"),
        answer.text("reason"),
        answer.text("provider_message_id"),
        answer.bigint("at_ms"),
        answer.boolean("abandoned"),
    )
    .map(Some)
}

fn known(
    delivery_id: String,
    state: Option<String>,
    reason: Option<String>,
    provider_message_id: Option<String>,
    at_ms: Option<i64>,
    abandoned: Option<bool>,
) -> Result<Known> {
    let outcome = state
        .map(|s| {
            Ok::<_, Error>(LedgerEntry {
                delivery_id,
                state: codec::ledger_state(&s)?,
                reason,
                provider_message_id,
                at_ms: at_ms.unwrap_or_default(),
            })
        })
        .transpose()?;
    Ok(Known {
        outcome,
        abandoned: abandoned.unwrap_or(false),
    })
}
